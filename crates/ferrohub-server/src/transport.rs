//! The byte streams protocol drivers run over: plain TCP, TLS over TCP, and WebSockets.
//!
//! Each reads only once data is there, so an idle connection holds no input buffer.

use std::future::Future;
use std::io;

use axum::extract::ws::{Message, WebSocket};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A byte stream a protocol driver (MQTT, AMQP) reads from and writes to.
pub(crate) trait Transport: Send {
    /// Reads more bytes into `buf`; `Ok(0)` means the peer closed. Cancel safe.
    fn read(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>> + Send;
    /// Writes all of `bytes`.
    fn write(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// Closes the transport.
    fn shutdown(&mut self) -> impl Future<Output = ()> + Send;
}

/// A plain TCP stream. Reads wait for readiness before taking buffer space, so an idle
/// connection holds no input buffer, and the space taken per read follows what the reads
/// bring: small for a CONNECT or a lone packet, larger for a busy connection.
pub(crate) struct TcpTransport {
    stream: TcpStream,
    chunk: usize,
}

impl TcpTransport {
    pub(crate) fn new(stream: TcpStream) -> Self {
        TcpTransport {
            stream,
            chunk: MIN_READ_CHUNK,
        }
    }
}

/// Least and most input buffer space taken for one read of a plain TCP connection.
const MIN_READ_CHUNK: usize = 1024;
const MAX_READ_CHUNK: usize = 64 * 1024;

/// The read size after a read that got `got` bytes into `room` bytes of space: doubled when the
/// read filled the space, halved when it used less than a quarter of it.
fn next_chunk(chunk: usize, got: usize, room: usize) -> usize {
    if got >= room {
        (chunk * 2).min(MAX_READ_CHUNK)
    } else if got < room / 4 {
        (chunk / 2).max(MIN_READ_CHUNK)
    } else {
        chunk
    }
}

impl Transport for TcpTransport {
    async fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            self.stream.readable().await?;
            if buf.capacity() - buf.len() < self.chunk {
                buf.reserve(self.chunk);
            }
            let room = buf.capacity() - buf.len();
            match self.stream.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Ok(got) => {
                    self.chunk = next_chunk(self.chunk, got, room);
                    return Ok(got);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}

/// A TLS stream over TCP. Like [`TcpTransport`], a read takes buffer space only once TLS has
/// decrypted data waiting or the socket has bytes.
pub(crate) struct TlsTransport(pub(crate) tokio_rustls::server::TlsStream<TcpStream>);

impl Transport for TlsTransport {
    async fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let (tcp, tls) = self.0.get_mut();
        let waiting = match tls.process_new_packets() {
            Ok(state) => state.plaintext_bytes_to_read() > 0 || state.peer_has_closed(),
            // The read below reports it.
            Err(_) => true,
        };
        if !waiting {
            tcp.readable().await?;
        }
        if buf.capacity() - buf.len() < MIN_READ_CHUNK {
            buf.reserve(4 * MIN_READ_CHUNK);
        }
        self.0.read_buf(buf).await
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes).await?;
        self.0.flush().await
    }

    async fn shutdown(&mut self) {
        let _ = self.0.shutdown().await;
    }
}

/// A WebSocket whose binary messages carry the protocol's byte stream (MQTT or AMQP over
/// WebSockets; message boundaries mean nothing).
pub(crate) struct WsTransport(pub(crate) WebSocket);

impl Transport for WsTransport {
    async fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            match self.0.recv().await {
                None | Some(Ok(Message::Close(_))) => return Ok(0),
                Some(Ok(Message::Binary(data))) => {
                    buf.extend_from_slice(&data);
                    if !data.is_empty() {
                        return Ok(data.len());
                    }
                }
                Some(Ok(Message::Text(_))) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the protocol travels in binary WebSocket messages",
                    ));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(e)) => return Err(io::Error::other(e)),
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0
            .send(Message::Binary(Bytes::copy_from_slice(bytes)))
            .await
            .map_err(io::Error::other)
    }

    async fn shutdown(&mut self) {
        let _ = self.0.send(Message::Close(None)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_size_follows_the_reads() {
        // A full read doubles, up to the most.
        assert_eq!(next_chunk(1024, 1024, 1024), 2048);
        assert_eq!(next_chunk(MAX_READ_CHUNK, 70_000, 70_000), MAX_READ_CHUNK);
        // A read using under a quarter halves, down to the least.
        assert_eq!(next_chunk(8192, 1000, 8192), 4096);
        assert_eq!(next_chunk(MIN_READ_CHUNK, 10, 1024), MIN_READ_CHUNK);
        // Anything between keeps the size.
        assert_eq!(next_chunk(4096, 3000, 4096), 4096);
    }
}
