//! Opening MQTT connections: TCP from a chosen loopback source address, optional TLS, then
//! CONNECT and CONNACK, with a deadline on the whole exchange.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferrohub_mqtt::Packet;
use ferrohub_mqtt::codec::{ConnAck, ConnectReturnCode};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// The largest packet the generator accepts from a server.
pub const MAX_PACKET: usize = 1 << 20;

/// Any byte stream a connection runs over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection's byte stream, TCP or TLS.
pub type BoxIo = Box<dyn Io>;

/// Installs the process-wide rustls crypto provider (aws-lc-rs), once.
pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// TLS client settings: trusted roots and the name to verify.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl Tls {
    /// Trusts the certificates in `ca_pem` and expects the server to be `server_name`. Session
    /// resumption is off unless `resume`: every bench device is a new device with its own full
    /// handshake.
    pub fn from_ca_pem(ca_pem: &[u8], server_name: &str, resume: bool) -> anyhow::Result<Tls> {
        install_crypto();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(cert.map_err(|e| anyhow::anyhow!("bad CA certificate: {e}"))?)?;
        }
        if roots.is_empty() {
            anyhow::bail!("the CA file holds no certificate");
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        if !resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| anyhow::anyhow!("bad TLS server name {server_name:?}: {e}"))?;
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }
}

/// Where connections go.
#[derive(Clone)]
pub struct Endpoint {
    /// The server's address (loopback).
    pub addr: SocketAddr,
    /// TLS settings, or `None` for plain TCP.
    pub tls: Option<Tls>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Why a connection could not be established.
#[derive(Debug)]
pub enum ConnectError {
    /// The TCP connect (or bind) failed.
    Tcp(io::Error),
    /// The TLS handshake failed.
    Tls(io::Error),
    /// Writing CONNECT or reading CONNACK failed.
    Io(io::Error),
    /// The whole exchange took longer than allowed.
    Timeout,
    /// The server answered with a refusing CONNACK.
    Refused(ConnectReturnCode),
    /// The server closed the connection without a CONNACK.
    Closed,
    /// The server sent something that is not a CONNACK.
    Protocol(String),
}

impl ConnectError {
    /// A short name for counting failures by kind.
    pub fn kind(&self) -> String {
        match self {
            ConnectError::Tcp(e) => format!("tcp: {}", e.kind()),
            ConnectError::Tls(_) => "tls".into(),
            ConnectError::Io(e) => format!("io: {}", e.kind()),
            ConnectError::Timeout => "timeout".into(),
            ConnectError::Refused(code) => format!("refused: {code:?}"),
            ConnectError::Closed => "closed before CONNACK".into(),
            ConnectError::Protocol(_) => "protocol".into(),
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Tcp(e) => write!(f, "TCP connect failed: {e}"),
            ConnectError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            ConnectError::Io(e) => write!(f, "CONNECT exchange failed: {e}"),
            ConnectError::Timeout => f.write_str("timed out"),
            ConnectError::Refused(code) => write!(f, "CONNACK refused: {code:?}"),
            ConnectError::Closed => f.write_str("closed before CONNACK"),
            ConnectError::Protocol(m) => write!(f, "protocol error: {m}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Opens TCP (bound to `source` when given) and, for a TLS endpoint, completes the handshake.
pub async fn open(endpoint: &Endpoint, source: Option<IpAddr>) -> Result<BoxIo, ConnectError> {
    let socket = match endpoint.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(ConnectError::Tcp)?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(ConnectError::Tcp)?;
    }
    let tcp = socket
        .connect(endpoint.addr)
        .await
        .map_err(ConnectError::Tcp)?;
    tcp.set_nodelay(true).map_err(ConnectError::Tcp)?;
    match &endpoint.tls {
        None => Ok(Box::new(tcp)),
        Some(tls) => {
            let stream = tls
                .connector
                .connect(tls.name.clone(), tcp)
                .await
                .map_err(ConnectError::Tls)?;
            Ok(Box::new(stream))
        }
    }
}

/// Sends the encoded CONNECT and waits for the CONNACK. Bytes the server sent after it stay in
/// `buf`.
pub async fn handshake(
    io: &mut BoxIo,
    connect: &[u8],
    buf: &mut BytesMut,
) -> Result<ConnAck, ConnectError> {
    io.write_all(connect).await.map_err(ConnectError::Io)?;
    io.flush().await.map_err(ConnectError::Io)?;
    // A CONNACK is 4 bytes; a few reads at most. Bounded by the caller's deadline too.
    for _ in 0..64 {
        match ferrohub_mqtt::decode(buf, MAX_PACKET) {
            Ok(Some(Packet::ConnAck(ack))) => {
                return match ack.code {
                    ConnectReturnCode::Accepted => Ok(ack),
                    code => Err(ConnectError::Refused(code)),
                };
            }
            Ok(Some(other)) => {
                return Err(ConnectError::Protocol(format!(
                    "{} before CONNACK",
                    other.packet_type()
                )));
            }
            Ok(None) => {}
            Err(e) => return Err(ConnectError::Protocol(e.to_string())),
        }
        if buf.capacity() - buf.len() < 64 {
            buf.reserve(256);
        }
        match io.read_buf(buf).await {
            Ok(0) => return Err(ConnectError::Closed),
            Ok(_) => {}
            Err(e) => return Err(ConnectError::Io(e)),
        }
    }
    Err(ConnectError::Protocol("no CONNACK in 64 reads".into()))
}

/// Opens a connection and completes CONNECT/CONNACK within `limit`.
pub async fn establish(
    endpoint: &Endpoint,
    source: Option<IpAddr>,
    connect: &[u8],
    limit: Duration,
) -> Result<(BoxIo, BytesMut), ConnectError> {
    let deadline = Instant::now() + limit;
    let attempt = async {
        let mut io = open(endpoint, source).await?;
        let mut buf = BytesMut::new();
        handshake(&mut io, connect, &mut buf).await?;
        Ok::<_, ConnectError>((io, buf))
    };
    tokio::time::timeout_at(deadline, attempt)
        .await
        .map_err(|_| ConnectError::Timeout)?
}

/// Source address number `i` of `count`, counting up from `base` (127.0.0.1, 127.0.0.2, …).
pub fn source_address(base: std::net::Ipv4Addr, count: usize, i: usize) -> IpAddr {
    let step = u32::try_from(i % count.max(1)).unwrap_or(0);
    IpAddr::V4(std::net::Ipv4Addr::from(u32::from(base).wrapping_add(step)))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn source_addresses_cycle_from_the_base() {
        let base = Ipv4Addr::new(127, 0, 0, 1);
        assert_eq!(source_address(base, 3, 0), IpAddr::from([127, 0, 0, 1]));
        assert_eq!(source_address(base, 3, 2), IpAddr::from([127, 0, 0, 3]));
        assert_eq!(source_address(base, 3, 3), IpAddr::from([127, 0, 0, 1]));
        assert_eq!(source_address(base, 0, 5), IpAddr::from([127, 0, 0, 1]));
        let base = Ipv4Addr::new(127, 1, 0, 255);
        assert_eq!(source_address(base, 4, 1), IpAddr::from([127, 1, 1, 0]));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        assert!(Tls::from_ca_pem(b"not a pem", "localhost", false).is_err());
    }
}
