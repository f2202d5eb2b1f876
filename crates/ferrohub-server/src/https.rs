//! The HTTPS listener: TLS (rustls), then HTTP/1.1 or HTTP/2 (hyper) into the axum router.
//!
//! One task per connection; the accept loop stops on shutdown and open connections are given
//! the grace period to finish their requests.
//!
//! # Protection against idle, slow and too many connections
//!
//! Every open connection costs a file descriptor and TLS buffers, so a client must not be able
//! to hold connections it does not use ([`HttpsLimits`], `[https]` in the configuration):
//!
//! * the TLS handshake must finish within `handshake_timeout`;
//! * an HTTP/1.1 request's headers must arrive within `header_read_timeout` (hyper's timer,
//!   which runs from the moment hyper waits for a request: a keep-alive connection that sends
//!   no next request ends after it too);
//! * a connection with no request in flight for `idle_timeout` is closed, HTTP/1.1 keep-alive
//!   and HTTP/2 alike (HTTP/2 pings also detect dead peers). A request in flight (a long poll,
//!   an event stream) keeps its connection; a WebSocket (MQTT over WebSockets) is no longer an
//!   HTTP connection once upgraded and is never idled out here;
//! * at most `max_connections` connections are open at once, WebSockets included. Beyond it a
//!   new connection is accepted and closed at once, before any TLS work, so a flood costs
//!   almost nothing and ends as soon as the flood does; requests on open connections go on.
//!
//! The cap also keeps file-descriptor headroom: at start the process's soft `RLIMIT_NOFILE` is
//! raised to its hard limit ([`raise_fd_limit`]), and an unset `max_connections` is sized from
//! it ([`default_max_connections`]) so that a flood on this port leaves descriptors for the
//! stores, the other listeners and the health check.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

pub(crate) use crate::config::HttpsLimits;

/// How long a connection being closed (idle, or the hub stopping) gets to finish cleanly.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// File descriptors kept back from the listeners' caps for everything else the hub opens:
/// the stores, the event log's segments, TLS material, jobs' blobs.
pub(crate) const FD_RESERVE: u64 = 512;

/// The smallest cap [`default_max_connections`] gives, however low the descriptor limit.
const MIN_CONNECTIONS: usize = 64;

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

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (many systems start processes at 1024
/// while allowing far more) and returns the soft limit in force afterwards, if known.
pub(crate) fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum)
        && maximum > current
    {
        let raised = rustix::process::Rlimit {
            current: Some(maximum),
            maximum: Some(maximum),
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::debug!(from = current, to = maximum, "raised the open-file limit");
                return Some(maximum);
            }
            Err(e) => tracing::warn!(error = %e, "raising the open-file limit failed"),
        }
    }
    limit.current
}

/// The HTTPS connection cap for a soft descriptor limit of `fd_limit`: half of what
/// [`FD_RESERVE`] leaves, the other half being the MQTT listeners' share; at least
/// [`MIN_CONNECTIONS`]. No limit known (unlimited): 100,000.
pub(crate) fn default_max_connections(fd_limit: Option<u64>) -> usize {
    match fd_limit {
        None => 100_000,
        Some(limit) => {
            let share = limit.saturating_sub(FD_RESERVE) / 2;
            usize::try_from(share)
                .unwrap_or(usize::MAX)
                .max(MIN_CONNECTIONS)
        }
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
    limits: HttpsLimits,
) {
    let fd_limit = raise_fd_limit();
    let cap = limits
        .max_connections
        .unwrap_or_else(|| default_max_connections(fd_limit));
    tracing::info!(
        max_connections = cap,
        handshake_timeout = ?limits.handshake_timeout,
        header_read_timeout = ?limits.header_read_timeout,
        idle_timeout = ?limits.idle_timeout,
        "HTTPS connection limits"
    );
    let slots = Arc::new(Semaphore::new(cap));
    let acceptor = TlsAcceptor::from(tls);
    let mut refusals = Refusals::default();
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Accept and close: the cheapest refusal, and the backlog does not fill up.
            drop(tcp);
            refusals.note(cap);
            continue;
        };
        metrics::gauge!("ferrohub_https_connections").increment(1.0);
        let conn = Connection {
            acceptor: acceptor.clone(),
            router: router.clone(),
            limits: limits.clone(),
            shutdown: shutdown.clone(),
            peer,
        };
        tokio::spawn(conn.run(Counted { tcp, _slot: slot }));
    }
    drop(listener);
    // Every open connection holds a slot until its socket closes: all slots back means all
    // connections are gone.
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "HTTPS connections still open after the grace period; closing them");
        }
    }
}

/// Counts refused connections and says so at most once a minute.
#[derive(Default)]
struct Refusals {
    since_report: u64,
    last_report: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, cap: usize) {
        metrics::counter!("ferrohub_https_connections_refused_total").increment(1);
        self.since_report += 1;
        if self
            .last_report
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            tracing::warn!(
                max_connections = cap,
                refused = self.since_report,
                "HTTPS connections refused: the listener is at [https] max_connections"
            );
            self.since_report = 0;
            self.last_report = Some(Instant::now());
        }
    }
}

/// A TCP connection holding its listener slot: the slot is given back when the socket closes,
/// whoever owns it then (hyper, or a WebSocket task after an upgrade).
struct Counted {
    tcp: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Counted {
    fn drop(&mut self) {
        metrics::gauge!("ferrohub_https_connections").decrement(1.0);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    acceptor: TlsAcceptor,
    router: Router,
    limits: HttpsLimits,
    shutdown: watch::Receiver<bool>,
    peer: SocketAddr,
}

impl Connection {
    async fn run(mut self, tcp: Counted) {
        let peer = self.peer;
        let handshake =
            tokio::time::timeout(self.limits.handshake_timeout, self.acceptor.accept(tcp));
        let stream = match handshake.await {
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
        let activity = Arc::new(Activity::new());
        let router = self
            .router
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        // SDKs differ on trailing slashes (Node's Registry lists `GET /devices/`).
        let router = tower::Layer::layer(
            &tower_http::normalize_path::NormalizePathLayer::trim_trailing_slash(),
            router,
        );
        let tracked = activity.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let busy = tracked.begin();
            let call = tower::ServiceExt::oneshot(router.clone(), req);
            async move {
                let resp = call.await?;
                // The request stays in flight until its response body has been sent.
                Ok::<_, std::convert::Infallible>(resp.map(|body| {
                    Body::new(InFlightBody {
                        inner: body,
                        _busy: busy,
                    })
                }))
            }
        });
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(self.limits.idle_timeout / 2)
            .keep_alive_timeout(self.limits.idle_timeout / 2);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let mut conn = std::pin::pin!(conn);
        let idle = self.limits.idle_timeout;
        let closing = loop {
            let wake = activity.next_check(idle);
            tokio::select! {
                result = conn.as_mut() => {
                    // Finished, or upgraded (the WebSocket task owns the socket now).
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
                    }
                    return;
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    if activity.idle_for(idle) {
                        tracing::debug!(%peer, ?idle, "closing an idle HTTPS connection");
                        break "idle";
                    }
                }
                _ = stopped(&mut self.shutdown) => break "shutdown",
            }
        };
        conn.as_mut().graceful_shutdown();
        if tokio::time::timeout(CLOSE_GRACE, conn).await.is_err() {
            tracing::debug!(%peer, reason = closing, "HTTPS connection did not close in time; dropped");
        }
    }
}

/// Whether a connection has requests in flight, and since when it has had none.
struct Activity {
    in_flight: AtomicUsize,
    /// When the last request ended (or the connection started).
    quiet_since: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            quiet_since: Mutex::new(Instant::now()),
        }
    }

    fn quiet_since(&self) -> Instant {
        *self
            .quiet_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A request starts; it ends when the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// No request in flight for `idle`.
    fn idle_for(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0 && self.quiet_since().elapsed() >= idle
    }

    /// When to look again: `idle` after the last request ended, or in `idle` while requests
    /// are in flight.
    fn next_check(&self, idle: Duration) -> Instant {
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            self.quiet_since() + idle
        } else {
            Instant::now() + idle
        }
    }
}

/// A request in flight.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self
            .0
            .quiet_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request in flight until it is sent (or dropped).
struct InFlightBody {
    inner: Body,
    _busy: Busy,
}

impl hyper::body::Body for InFlightBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_leave_descriptor_headroom() {
        assert_eq!(default_max_connections(Some(1024)), 256);
        assert_eq!(default_max_connections(Some(1_048_576)), 524_032);
        assert_eq!(default_max_connections(Some(100)), MIN_CONNECTIONS);
        assert_eq!(default_max_connections(None), 100_000);
    }

    #[test]
    fn activity_tracks_requests_in_flight() {
        let a = Arc::new(Activity::new());
        let idle = Duration::from_secs(3600);
        assert!(!a.idle_for(idle));
        assert!(a.idle_for(Duration::ZERO));
        let busy = a.begin();
        assert!(!a.idle_for(Duration::ZERO), "a request is in flight");
        drop(busy);
        assert!(a.idle_for(Duration::ZERO));
        assert!(a.next_check(idle) > Instant::now());
    }
}
