//! The HTTPS listener: TLS (rustls), then HTTP/1.1 or HTTP/2 (hyper) into the axum router.
//!
//! One task per connection; the accept loop stops on shutdown and open connections are given
//! the grace period to finish their requests.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the HTTPS port. Azure's 443 falls back to 8443 where this process may not bind it (not
/// root, no `CAP_NET_BIND_SERVICE`), so a first start never fails for a port permission.
pub(crate) async fn bind(ip: IpAddr, port: u16) -> io::Result<TcpListener> {
    match TcpListener::bind((ip, port)).await {
        Err(e) if port == 443 && e.kind() == io::ErrorKind::PermissionDenied => {
            tracing::warn!(
                "port 443 needs privileges this process does not have; serving HTTPS on 8443 \
                 instead (SDKs that hard-code 443 need the port set explicitly)"
            );
            TcpListener::bind((ip, 8443)).await
        }
        other => other,
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` turns true, then waits up to `grace`
/// for open connections.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting an HTTPS connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let builder = Builder::new(TokioExecutor::new());
            let router = router.layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            // SDKs differ on trailing slashes (Node's Registry lists `GET /devices/`).
            let service = tower::Layer::layer(
                &tower_http::normalize_path::NormalizePathLayer::trim_trailing_slash(),
                router,
            );
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(service),
            );
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "HTTPS connections still open after the grace period; closing them");
        }
    }
}

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The address clients on this machine use to reach a listener bound to `addr`.
pub(crate) fn local_address(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip: IpAddr = if addr.is_ipv4() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}
