//! A raw MQTT 3.1.1 test client over TCP, TLS or a WebSocket, built on Ferrohub's own codec, for
//! asserting exactly what the hub sends (CONNACK codes, PUBACKs, disconnects).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferrohub_mqtt::codec::{
    ConnAck, Connect, LastWill, PubAck, Publish, Subscribe, SubscribeReturnCode,
};
use ferrohub_mqtt::{Packet, QoS, TopicFilter, TopicName};
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Any byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A raw MQTT client.
pub struct MqttClient {
    stream: Box<dyn Stream>,
    buf: BytesMut,
    next_pkid: u16,
}

/// How to reach the hub.
pub enum Transport<'a> {
    /// Plain TCP.
    Plain(SocketAddr),
    /// TLS trusting `ca_pem`.
    Tls(SocketAddr, &'a [u8]),
    /// A WebSocket (`wss://…/$iothub/websocket`, subprotocol `mqtt`) trusting `ca_pem`.
    WebSocket(SocketAddr, &'a [u8]),
}

fn tls_connector(ca_pem: &[u8]) -> tokio_rustls::TlsConnector {
    crate::install_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

impl MqttClient {
    /// Opens a TLS connection to `addr` trusting `ca` (no MQTT packet sent yet), or says why
    /// it could not (a hub that is down: fault tests reconnect elsewhere).
    pub async fn try_open_tls(addr: SocketAddr, ca: &[u8]) -> std::io::Result<MqttClient> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
        let tls = tls_connector(ca).connect(name, tcp).await?;
        Ok(MqttClient {
            stream: Box::new(tls),
            buf: BytesMut::new(),
            next_pkid: 1,
        })
    }

    /// [`MqttClient::connect`] over TLS, failing instead of panicking when the hub cannot be
    /// reached; `Ok` carries the CONNACK, `None` when the hub closed without one.
    pub async fn try_connect_tls(
        addr: SocketAddr,
        ca: &[u8],
        client_id: &str,
        username: &str,
        password: &str,
        clean_session: bool,
    ) -> std::io::Result<(MqttClient, Option<ConnAck>)> {
        let mut c = MqttClient::try_open_tls(addr, ca).await?;
        c.send(Packet::Connect(Connect {
            clean_session,
            keep_alive: 60,
            client_id: client_id.to_owned(),
            username: Some(username.to_owned()),
            password: Some(Bytes::copy_from_slice(password.as_bytes())),
            will: None,
        }))
        .await;
        let ack = match c.recv().await {
            Some(Packet::ConnAck(a)) => Some(a),
            _ => None,
        };
        Ok((c, ack))
    }

    /// Opens the transport (no MQTT packet sent yet).
    pub async fn open(transport: Transport<'_>) -> MqttClient {
        let stream: Box<dyn Stream> = match transport {
            Transport::Plain(addr) => Box::new(TcpStream::connect(addr).await.unwrap()),
            Transport::Tls(addr, ca) => {
                let tcp = TcpStream::connect(addr).await.unwrap();
                let name = ServerName::try_from("localhost").unwrap();
                Box::new(tls_connector(ca).connect(name, tcp).await.unwrap())
            }
            Transport::WebSocket(addr, ca) => {
                let tcp = TcpStream::connect(addr).await.unwrap();
                let name = ServerName::try_from("localhost").unwrap();
                let tls = tls_connector(ca).connect(name, tcp).await.unwrap();
                let mut req = format!(
                    "wss://localhost:{}/$iothub/websocket?iothub-no-client-cert=true",
                    addr.port()
                )
                .into_client_request()
                .unwrap();
                req.headers_mut()
                    .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
                let (ws, resp) = tokio_tungstenite::client_async(req, tls).await.unwrap();
                assert_eq!(
                    resp.headers()
                        .get("sec-websocket-protocol")
                        .and_then(|v| v.to_str().ok()),
                    Some("mqtt")
                );
                Box::new(WsStream::new(ws))
            }
        };
        MqttClient {
            stream,
            buf: BytesMut::new(),
            next_pkid: 1,
        }
    }

    /// Opens the transport and sends CONNECT; returns the CONNACK, or `None` when the hub
    /// closed the connection without one.
    #[allow(clippy::too_many_arguments)]
    pub async fn connect(
        transport: Transport<'_>,
        client_id: &str,
        username: &str,
        password: &str,
        clean_session: bool,
        keep_alive: u16,
        will: Option<LastWill>,
    ) -> (MqttClient, Option<ConnAck>) {
        let mut c = MqttClient::open(transport).await;
        c.send(Packet::Connect(Connect {
            clean_session,
            keep_alive,
            client_id: client_id.to_owned(),
            username: Some(username.to_owned()),
            password: Some(Bytes::copy_from_slice(password.as_bytes())),
            will,
        }))
        .await;
        let ack = match c.recv().await {
            Some(Packet::ConnAck(a)) => Some(a),
            _ => None,
        };
        (c, ack)
    }

    /// Sends one packet.
    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        ferrohub_mqtt::encode(&packet, &mut out).unwrap();
        let _ = self.stream.write_all(&out).await;
        let _ = self.stream.flush().await;
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
        let _ = self.stream.flush().await;
    }

    /// The next packet, or `None` when the connection closed (or nothing came for 10 s).
    pub async fn recv(&mut self) -> Option<Packet> {
        self.recv_within(Duration::from_secs(10)).await
    }

    /// The next packet within `limit`, or `None` when the connection closed or time ran out.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Packet> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(Some(p)) = ferrohub_mqtt::decode(&mut self.buf, 1 << 20) {
                return Some(p);
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await;
            match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// Whether the hub closed the connection within `limit` (reading and dropping packets).
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let mut scratch = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut scratch)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    /// Publishes; for QoS 1 returns the PUBACK (or `None` if the connection closed first).
    pub async fn publish(&mut self, topic: &str, qos: QoS, payload: &[u8]) -> Option<PubAck> {
        let pkid = match qos {
            QoS::AtMostOnce => None,
            _ => Some(self.pkid()),
        };
        self.send(Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: TopicName::new(topic).unwrap(),
            pkid,
            payload: Bytes::copy_from_slice(payload),
        }))
        .await;
        if qos == QoS::AtMostOnce {
            return None;
        }
        match self.recv().await {
            Some(Packet::PubAck(a)) => Some(a),
            _ => None,
        }
    }

    /// Subscribes; returns the SUBACK codes.
    pub async fn subscribe(&mut self, filters: &[(&str, QoS)]) -> Vec<SubscribeReturnCode> {
        let pkid = self.pkid();
        self.send(Packet::Subscribe(Subscribe {
            pkid,
            filters: filters
                .iter()
                .map(|(f, q)| (TopicFilter::new(*f).unwrap(), *q))
                .collect(),
        }))
        .await;
        match self.recv().await {
            Some(Packet::SubAck(a)) => a.return_codes,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    fn pkid(&mut self) -> u16 {
        let id = self.next_pkid;
        self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
        id
    }
}

/// Adapts a WebSocket client to a byte stream (binary messages).
struct WsStream<S> {
    ws: tokio_tungstenite::WebSocketStream<S>,
    pending: BytesMut,
}

impl<S> WsStream<S> {
    fn new(ws: tokio_tungstenite::WebSocketStream<S>) -> Self {
        WsStream {
            ws,
            pending: BytesMut::new(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                let chunk = self.pending.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match self.ws.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(Message::Binary(b)))) => self.pending.extend_from_slice(&b),
                Poll::Ready(Some(Ok(Message::Close(_)))) | Poll::Ready(None) => {
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(std::io::Error::other(e)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.ws.poll_ready_unpin(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(std::io::Error::other(e))),
            Poll::Pending => return Poll::Pending,
        }
        match self
            .ws
            .start_send_unpin(Message::Binary(Bytes::copy_from_slice(data)))
        {
            Ok(()) => Poll::Ready(Ok(data.len())),
            Err(e) => Poll::Ready(Err(std::io::Error::other(e))),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.ws.poll_flush_unpin(cx).map_err(std::io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.ws.poll_close_unpin(cx).map_err(std::io::Error::other)
    }
}
