//! The AMQP 1.0 endpoint: listeners (TLS on 5671, WebSockets on the HTTPS port) and the
//! per-connection driver of `ferrohub_amqp::Connection`.
//!
//! One connection may carry every kind of link Azure's SDKs attach (amqp-contract §0–§4):
//!
//! * `$cbs` (token put, reply) and `$management` (Event Hubs READ, reply): request/response
//!   nodes answered on the server-sender link of the same session whose source names them;
//! * the service endpoint: C2D send (`/messages/devicebound`), feedback and file notifications;
//! * device links: telemetry (`/devices/{id}/messages/events`), C2D to the device, twin and
//!   direct methods, for any number of identities on the connection;
//! * Event Hubs partition receivers (`{entity}/ConsumerGroups/{cg}/Partitions/{p}`).
//!
//! The driver owns the socket and the clock; the engine owns the protocol; the hub owns the
//! decisions (who a token speaks for, storing telemetry, queueing C2D). Slow work (appends,
//! store calls, log reads) runs on tasks of its own that report back on the connection's
//! channel, so one link never holds up the others.

mod auth;
mod convert;
mod device;
mod eventhubs;
mod service;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ferrohub_amqp::azure::address::Address;
use ferrohub_amqp::azure::{cbs, management};
use ferrohub_amqp::connection::{AttachReply, DeliveryId, LinkId, SessionId};
use ferrohub_amqp::message::Message;
use ferrohub_amqp::performative::{
    AmqpError, Attach, DeliveryState, ReceiverSettleMode, Role, SaslOutcome, SenderSettleMode,
};
use ferrohub_amqp::{Connection, ConnectionConfig, Event, condition};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::connections::Identity;
use crate::hub::{Hub, HubError};
use crate::transport::{TlsTransport, Transport};

use auth::{Authorization, Need, Tokens};

/// Longest a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a feedback link with credit and nothing to send looks for new feedback.
const FEEDBACK_POLL: Duration = Duration::from_secs(1);

/// Replies one reply link may hold while it has no credit.
const MAX_QUEUED_REPLIES: usize = 16;

/// Live AMQP connections, against the hub's connection limit.
static AMQP_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

/// Accepts AMQP connections over TLS on `listener` until shutdown.
pub(crate) async fn serve(listener: TcpListener, tls: Arc<ServerConfig>, hub: Arc<Hub>) {
    let acceptor = TlsAcceptor::from(tls);
    let mut shutdown = hub.shutdown_signal();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an AMQP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = wait_true(&mut shutdown) => break,
        };
        let _ = tcp.set_nodelay(true);
        let hub = hub.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => drive(hub, TlsTransport(stream), peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "AMQP TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "AMQP TLS handshake timed out"),
            }
        });
    }
}

/// The engine's settings for the hub's connections.
fn engine_config(hub: &Hub) -> ConnectionConfig {
    ConnectionConfig {
        container_id: hub.host_names().first().cloned().unwrap_or_default(),
        ..ConnectionConfig::default()
    }
}

/// What a link of the connection is for.
#[derive(Debug)]
enum Link {
    /// `$cbs` or `$management` requests (the client sends).
    Requests(Node),
    /// `$cbs` or `$management` replies (the hub sends, pre-settled); found through
    /// `reply_links`.
    Replies,
    /// The service sends C2D messages.
    ServiceC2d(Authorization),
    /// The service receives feedback batches.
    Feedback(service::FeedbackLink),
    /// The service receives file-upload notifications (none exist: nothing is sent).
    FileNotifications(Authorization),
    /// A device's or module's link.
    Device(device::DeviceLink),
    /// An Event Hubs partition receiver.
    EventHubs(Box<eventhubs::Reader>),
}

/// A request/response node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Node {
    Cbs,
    Management,
}

impl Link {
    /// The audience whose token keeps this link authorized, if it needs one.
    fn authorization(&self) -> Option<&Authorization> {
        match self {
            Link::ServiceC2d(a) | Link::FileNotifications(a) => Some(a),
            Link::Feedback(f) => Some(&f.auth),
            Link::Device(d) => Some(&d.auth),
            Link::EventHubs(r) => Some(&r.auth),
            Link::Requests(_) | Link::Replies => None,
        }
    }
}

/// Work finished elsewhere, reported back to the connection.
enum Done {
    /// A service C2D send: settle its delivery.
    C2dSent {
        link: LinkId,
        delivery: DeliveryId,
        result: Result<(), HubError>,
    },
    /// Telemetry appended (or not): settle its delivery.
    Telemetry {
        link: LinkId,
        delivery: DeliveryId,
        result: Result<(), HubError>,
    },
    /// A feedback batch read for a link (or none waiting).
    Feedback {
        link: LinkId,
        batch: Option<ferrohub_c2d::FeedbackBatch>,
    },
    /// Events read for an Event Hubs receiver.
    Events {
        link: LinkId,
        result: Result<eventhubs::ReadBatch, HubError>,
    },
    /// C2D messages locked for a device link.
    C2dTaken {
        link: LinkId,
        messages: Vec<ferrohub_c2d::QueuedMessage>,
    },
    /// A device's registration says something (closed, a command, C2D waiting).
    Device(Identity, device::RegistrationEvent),
    /// An Event Hubs receiver was displaced by a receiver with a higher epoch.
    Displaced { link: LinkId, why: String },
    /// A device's twin request was carried out.
    Twin {
        identity: Identity,
        correlation: ferrohub_amqp::message::MessageId,
        reply: crate::hub::TwinReply,
    },
}

/// One AMQP connection's driver.
struct Driver {
    hub: Arc<Hub>,
    peer: SocketAddr,
    conn: Connection,
    tokens: Tokens,
    links: HashMap<LinkId, Link>,
    /// Per session, the link each request/response node answers on.
    reply_links: HashMap<(SessionId, Node), LinkId>,
    /// Replies whose reply link is not attached yet (Node attaches the request link first).
    pending_replies: Vec<(SessionId, Node, Message)>,
    /// Replies waiting for credit on their reply link (a request can beat the link's FLOW).
    queued_replies: HashMap<LinkId, Vec<Bytes>>,
    /// The identities with device links on this connection.
    devices: HashMap<Identity, device::DeviceState>,
    /// Work in flight reports here.
    done_tx: mpsc::UnboundedSender<Done>,
    /// A counter for the tags of pre-settled deliveries.
    next_tag: u64,
}

/// Drives one AMQP connection to its end.
pub(crate) async fn drive<T: Transport>(hub: Arc<Hub>, mut transport: T, peer: SocketAddr) {
    let live = AMQP_CONNECTIONS.fetch_add(1, Ordering::Relaxed) + 1;
    let _count = ConnectionCount;
    if live > hub.limits.max_connections {
        tracing::warn!(%peer, "connection limit reached; refusing an AMQP connection");
        transport.shutdown().await;
        return;
    }
    metrics::gauge!("ferrohub_amqp_connections").increment(1.0);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut d = Driver {
        conn: Connection::new(Instant::now(), engine_config(&hub)),
        hub: hub.clone(),
        peer,
        tokens: Tokens::default(),
        links: HashMap::new(),
        reply_links: HashMap::new(),
        pending_replies: Vec::new(),
        queued_replies: HashMap::new(),
        devices: HashMap::new(),
        done_tx,
        next_tag: 0,
    };
    let mut shutdown = hub.shutdown_signal();
    let mut events_watch: watch::Receiver<u64> = hub.events.watch();
    let mut inbuf = BytesMut::new();
    let mut outbuf = BytesMut::new();

    loop {
        if !inbuf.is_empty() && d.conn.wants_read() {
            d.conn.handle_input(Instant::now(), &mut inbuf);
        }
        // Act on what the engine says until it has nothing more, then write.
        while let Some(event) = d.conn.poll_event() {
            d.refresh_before(&event).await;
            d.handle_event(event);
        }
        d.conn.poll_transmit(&mut outbuf);
        if !outbuf.is_empty() {
            if transport.write(&outbuf).await.is_err() {
                break;
            }
            outbuf = BytesMut::new();
        }
        if d.conn.is_closed() {
            break;
        }
        if inbuf.is_empty() && inbuf.capacity() > 0 {
            inbuf = BytesMut::new();
        }
        d.conn.release_idle_memory();

        let timeout = d.conn.poll_timeout();
        let token_deadline = d.next_token_expiry();
        let feedback_poll = d.feedback_waiting().then(|| Instant::now() + FEEDBACK_POLL);
        let tailing = d.tailing();
        tokio::select! {
            biased;
            () = wait_true(&mut shutdown) => {
                d.conn.close(Some(AmqpError::new(
                    condition::CONNECTION_FORCED,
                    "the hub is shutting down",
                )));
            }
            Some(done) = done_rx.recv() => d.done(done),
            read = transport.read(&mut inbuf), if d.conn.wants_read() => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            _ = sleep_until(timeout) => d.conn.handle_timeout(Instant::now()),
            _ = sleep_until(token_deadline) => d.expire_tokens(),
            _ = sleep_until(feedback_poll) => d.pump_feedback(),
            changed = events_watch.changed(), if tailing => {
                if changed.is_ok() {
                    d.pump_event_hubs();
                }
            }
        }
    }
    d.finish().await;
    transport.shutdown().await;
    metrics::gauge!("ferrohub_amqp_connections").decrement(1.0);
}

/// Counts a live AMQP connection for as long as it lives.
struct ConnectionCount;

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        AMQP_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn wait_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    fn now_secs(&self) -> u64 {
        u64::try_from(self.hub.now().timestamp()).unwrap_or(0)
    }

    fn tag(&mut self) -> Bytes {
        self.next_tag += 1;
        Bytes::copy_from_slice(&self.next_tag.to_be_bytes())
    }

    /// Carries out one event of the engine.
    /// In a cluster, before an event is handled: re-reads the identity a put-token on `$cbs` is
    /// for when this node's cache refuses the token (see [`auth::refresh_identity_of`]), and
    /// brings an Event Hubs receiver's partition up to date before it attaches.
    async fn refresh_before(&self, event: &Event) {
        if !self.hub.coordinator.is_clustered() {
            return;
        }
        if let Event::Attach { attach, .. } = event {
            // An Event Hubs receiver may start at "the end now": this node's view of its
            // partition must include what other nodes appended (see `EventLog::catch_up`).
            if attach.role == Role::Receiver
                && let Some(address) = attach.source.as_ref().and_then(|s| s.address.as_deref())
                && let Address::EventHubsReceiver { partition, .. } = Address::parse(address)
                && let Ok(partition) = partition.parse::<u32>()
                && let Err(e) = self.hub.events.catch_up(partition).await
            {
                tracing::debug!(peer = %self.peer, partition, error = %e, "catching up with the partition failed");
            }
            return;
        }
        let Event::Delivery { link, payload, .. } = event else {
            return;
        };
        if !matches!(self.links.get(link), Some(Link::Requests(Node::Cbs))) {
            return;
        }
        let Ok(message) = Message::decode(payload.clone()) else {
            return;
        };
        if let Ok(put) = cbs::PutToken::parse(&message) {
            auth::refresh_identity_of(&self.hub, &put.token).await;
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::SaslInit {
                mechanism,
                initial_response,
                ..
            } => {
                let outcome = match mechanism.as_str() {
                    // Authentication follows on $cbs.
                    "MSSBCBS" | "ANONYMOUS" => SaslOutcome::ok(),
                    "PLAIN" => self.sasl_plain(initial_response.as_deref()),
                    // No client certificates on this listener.
                    _ => SaslOutcome::auth_failed(),
                };
                self.conn.sasl_outcome(outcome);
            }
            Event::Opened {
                container_id,
                hostname,
                ..
            } => {
                tracing::debug!(peer = %self.peer, container_id, ?hostname, "AMQP connection open");
            }
            Event::Attach { link, attach } => self.attach(link, *attach),
            Event::Delivery {
                link,
                delivery_id,
                message_format,
                payload,
                ..
            } => self.delivery(link, delivery_id, message_format, payload),
            Event::Credit { link, drain, .. } => {
                self.credit(link);
                if drain && !self.drain_after_read(link) {
                    self.conn.drain(link);
                }
            }
            Event::Disposition {
                link,
                delivery_id,
                state,
                ..
            } => self.disposition(link, delivery_id, state),
            Event::Detached { link, error, .. } => {
                if let Some(e) = &error {
                    tracing::debug!(peer = %self.peer, %link, error = ?e, "AMQP link detached");
                }
                self.forget_link(link);
            }
            Event::SessionEnded { session, .. } => {
                self.reply_links.retain(|(s, _), _| *s != session);
            }
            Event::Closed { error, by_peer } => {
                tracing::debug!(peer = %self.peer, ?error, by_peer, "AMQP connection closed");
            }
            _ => {}
        }
    }

    /// SASL PLAIN (amqp-contract §1.1): `\0{authcid}\0{SAS token}`, the authcid
    /// `{policy}@sas.root.{hub}` or `{device}@sas.{hub}`; the token is kept as if put on `$cbs`.
    fn sasl_plain(&mut self, response: Option<&[u8]>) -> SaslOutcome {
        let Some(response) = response else {
            return SaslOutcome::auth_failed();
        };
        let mut parts = response.split(|b| *b == 0);
        let (_authzid, authcid, password) = (parts.next(), parts.next(), parts.next());
        let (Some(authcid), Some(password)) = (authcid, password) else {
            return SaslOutcome::auth_failed();
        };
        let (Ok(authcid), Ok(token)) =
            (std::str::from_utf8(authcid), std::str::from_utf8(password))
        else {
            return SaslOutcome::auth_failed();
        };
        match self.tokens.put(&self.hub, authcid, token) {
            Ok(_) => SaslOutcome::ok(),
            Err(e) if fenced(&self.hub, &e) => {
                // The node fenced itself: a temporary failure, which clients retry.
                tracing::info!(peer = %self.peer, error = %e, "AMQP SASL PLAIN refused: the node is fenced");
                SaslOutcome {
                    code: ferrohub_amqp::performative::SaslCode::SysTemp,
                    additional_data: None,
                }
            }
            Err(e) => {
                tracing::info!(peer = %self.peer, error = %e, "AMQP SASL PLAIN refused");
                SaslOutcome::auth_failed()
            }
        }
    }

    /// Decides an ATTACH from its address.
    fn attach(&mut self, link: LinkId, attach: Attach) {
        // The peer's role: a sending client attaches to a target, a receiving one from a
        // source.
        let client_sends = attach.role == Role::Sender;
        let address = if client_sends {
            attach.target.as_ref().and_then(|t| t.address.clone())
        } else {
            attach.source.as_ref().and_then(|s| s.address.clone())
        };
        let Some(address) = address else {
            return self.refuse(link, condition::INVALID_FIELD, "the link has no address");
        };
        let parsed = Address::parse(&address);
        tracing::debug!(peer = %self.peer, %link, address, ?parsed, client_sends, "AMQP attach");
        match (parsed, client_sends) {
            (Address::Cbs, true) => self.accept_requests(link, Node::Cbs),
            (Address::Cbs, false) => self.accept_replies(link, Node::Cbs),
            (Address::Management { entity }, true) => {
                let _ = entity;
                self.accept_requests(link, Node::Management);
            }
            (Address::Management { .. }, false) => self.accept_replies(link, Node::Management),
            (Address::ServiceC2d, true) => self.attach_service_c2d(link),
            (Address::ServiceFeedback, false) => self.attach_feedback(link),
            (Address::ServiceFileNotifications, false) => self.attach_file_notifications(link),
            (Address::EventHubsReceiver { .. }, false) => self.attach_event_hubs(link, &attach),
            (
                Address::DeviceEvents { .. }
                | Address::DeviceC2d { .. }
                | Address::Twin { .. }
                | Address::Methods { .. },
                _,
            ) => self.attach_device(link, &address, client_sends),
            _ => self.refuse(
                link,
                condition::NOT_FOUND,
                &format!(
                    "no such node: {address:?} for a {} link",
                    attach.role_name()
                ),
            ),
        }
    }

    fn refuse(&mut self, link: LinkId, condition: ferrohub_amqp::types::Symbol, why: &str) {
        tracing::info!(peer = %self.peer, %link, why, "AMQP link refused");
        self.conn
            .refuse_attach(link, AmqpError::new(condition, why.to_owned()));
    }

    fn refuse_with(&mut self, link: LinkId, e: &HubError) {
        tracing::info!(peer = %self.peer, %link, error = %e, "AMQP link refused");
        let error = convert::amqp_error(e, self.hub.now());
        self.conn.refuse_attach(link, error);
    }

    fn accept_requests(&mut self, link: LinkId, node: Node) {
        self.conn.accept_attach(
            link,
            AttachReply {
                rcv_settle_mode: ReceiverSettleMode::First,
                ..AttachReply::default()
            },
        );
        self.links.insert(link, Link::Requests(node));
    }

    fn accept_replies(&mut self, link: LinkId, node: Node) {
        self.conn.accept_attach(
            link,
            AttachReply {
                snd_settle_mode: Some(SenderSettleMode::Settled),
                ..AttachReply::default()
            },
        );
        self.links.insert(link, Link::Replies);
        let session = link.session();
        self.reply_links.insert((session, node), link);
        // Replies that waited for this link.
        let waiting = std::mem::take(&mut self.pending_replies);
        for (s, n, message) in waiting {
            if s == session && n == node {
                self.reply(session, node, message);
            } else {
                self.pending_replies.push((s, n, message));
            }
        }
    }

    /// Sends a response on the node's reply link of `session` (pre-settled).
    fn reply(&mut self, session: SessionId, node: Node, message: Message) {
        let Some(&link) = self.reply_links.get(&(session, node)) else {
            // At most a few: a client that never attaches its reply link gets none.
            if self.pending_replies.len() < 16 {
                self.pending_replies.push((session, node, message));
            }
            return;
        };
        let Ok(payload) = message.to_bytes() else {
            return;
        };
        let queue = self.queued_replies.entry(link).or_default();
        if queue.len() < MAX_QUEUED_REPLIES {
            queue.push(payload);
        }
        self.flush_replies(link);
    }

    /// Sends the replies queued for `link` while it has credit.
    fn flush_replies(&mut self, link: LinkId) {
        let Some(mut queue) = self.queued_replies.remove(&link) else {
            return;
        };
        while !queue.is_empty() && self.conn.credit(link) > 0 {
            let payload = queue.remove(0);
            let tag = self.tag();
            if let Err(e) = self.conn.send(link, tag, true, 0, payload) {
                tracing::debug!(peer = %self.peer, %link, error = %e, "AMQP reply not sent");
            }
        }
        if !queue.is_empty() {
            self.queued_replies.insert(link, queue);
        }
    }

    /// A complete incoming delivery.
    fn delivery(&mut self, link: LinkId, delivery: DeliveryId, format: u32, payload: Bytes) {
        let Some(kind) = self.links.get(&link) else {
            self.conn.settle(link, delivery, DeliveryState::Released);
            return;
        };
        match kind {
            Link::Requests(node) => {
                let node = *node;
                self.conn.settle(link, delivery, DeliveryState::Accepted);
                match Message::decode(payload) {
                    Ok(message) => match node {
                        Node::Cbs => self.put_token(link.session(), &message),
                        Node::Management => self.management(link.session(), &message),
                    },
                    Err(e) => {
                        tracing::debug!(peer = %self.peer, error = %e, "undecodable request");
                    }
                }
            }
            Link::ServiceC2d(_) => self.service_c2d(link, delivery, payload),
            Link::Device(_) => self.device_delivery(link, delivery, format, payload),
            _ => {
                // Links where the hub sends do not receive.
                self.conn.settle(
                    link,
                    delivery,
                    DeliveryState::Rejected {
                        error: Some(AmqpError::new(
                            condition::NOT_ALLOWED,
                            "this link does not take messages",
                        )),
                    },
                );
            }
        }
    }

    /// A put-token on `$cbs` (amqp-contract §1.5).
    fn put_token(&mut self, session: SessionId, message: &Message) {
        let response = match cbs::PutToken::parse(message) {
            Err(e) => cbs::response(
                message
                    .properties
                    .as_ref()
                    .and_then(|p| p.message_id.as_ref()),
                e.status_code(),
                &e.to_string(),
                None,
            ),
            Ok(put) if !put.is_sas() => put.response(
                400,
                "only SAS tokens (servicebus.windows.net:sastoken) are accepted",
                None,
            ),
            Ok(put) => match self.tokens.put(&self.hub, &put.name, &put.token) {
                Ok(_) => {
                    // A renewed token keeps the links it authorized; links it does not
                    // authorize (another identity's token put for the same audience) go.
                    self.recheck_links(&put.name, &put.token);
                    put.response(200, "OK", None)
                }
                Err(e) if fenced(&self.hub, &e) => {
                    // The node fenced itself: the connection goes, so the device reconnects,
                    // through the balancer, to another node.
                    tracing::info!(peer = %self.peer, audience = put.name, error = %e, "AMQP put-token refused: the node is fenced");
                    self.conn
                        .close(Some(AmqpError::new(condition::INTERNAL_ERROR, e.message)));
                    return;
                }
                Err(e) => {
                    tracing::info!(peer = %self.peer, audience = put.name, error = %e, "AMQP put-token refused");
                    put.response(
                        i32::from(e.code.http_status()),
                        &e.message,
                        Some(&condition::UNAUTHORIZED_ACCESS),
                    )
                }
            },
        };
        self.reply(session, Node::Cbs, response);
    }

    /// A `$management` READ.
    fn management(&mut self, session: SessionId, message: &Message) {
        let response = match management::ReadRequest::parse(message) {
            Err(e) => ferrohub_amqp::azure::response(
                message
                    .properties
                    .as_ref()
                    .and_then(|p| p.message_id.as_ref()),
                e.status_code(),
                &e.to_string(),
                None,
                ferrohub_amqp::message::Body::Value(ferrohub_amqp::types::Value::Null),
            ),
            Ok(read) => eventhubs::read(self, &read),
        };
        self.reply(session, Node::Management, response);
    }

    /// The peer granted credit on a link where the hub sends.
    fn credit(&mut self, link: LinkId) {
        match self.links.get(&link) {
            Some(Link::Feedback(_)) => self.pump_feedback_link(link),
            Some(Link::EventHubs(_)) => self.pump_event_hub(link),
            Some(Link::Device(_)) => {
                self.pump_device_link(link);
                self.flush_twin(link);
            }
            Some(Link::Replies) => self.flush_replies(link),
            _ => {}
        }
    }

    /// The peer settled (or updated) a delivery the hub sent unsettled.
    fn disposition(&mut self, link: LinkId, delivery: DeliveryId, state: Option<DeliveryState>) {
        match self.links.get_mut(&link) {
            Some(Link::Feedback(f)) => {
                if let Some(lock) = f.outstanding.remove(&delivery) {
                    service::settle_feedback(&self.hub, lock, state);
                    self.pump_feedback_link(link);
                }
            }
            Some(Link::Device(_)) => self.device_disposition(link, delivery, state),
            _ => {}
        }
    }

    /// Work finished elsewhere.
    fn done(&mut self, done: Done) {
        match done {
            Done::C2dSent {
                link,
                delivery,
                result,
            }
            | Done::Telemetry {
                link,
                delivery,
                result,
            } => {
                let state = match result {
                    Ok(()) => DeliveryState::Accepted,
                    Err(e) => DeliveryState::Rejected {
                        error: Some(convert::amqp_error(&e, self.hub.now())),
                    },
                };
                self.conn.settle(link, delivery, state);
            }
            Done::Feedback { link, batch } => self.feedback_read(link, batch),
            Done::Events { link, result } => self.events_read(link, result),
            Done::C2dTaken { link, messages } => self.c2d_taken(link, messages),
            Done::Device(identity, event) => self.registration_event(identity, event),
            Done::Twin {
                identity,
                correlation,
                reply,
            } => self.twin_done(identity, correlation, reply),
            Done::Displaced { link, why } => {
                if self.links.contains_key(&link) {
                    self.conn
                        .detach(link, Some(AmqpError::new(condition::STOLEN, why)));
                    self.forget_link(link);
                }
            }
        }
    }

    /// Detaches the links that depend on `audience` and that `token`, now put for it, does
    /// not authorize.
    fn recheck_links(&mut self, audience: &str, token: &str) {
        let refused: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| l.authorization().is_some_and(|a| a.audience == audience))
            .filter(|(_, l)| {
                let need = match l {
                    Link::ServiceC2d(_) => Need::Service("/messages/devicebound"),
                    Link::Feedback(_) => Need::Service("/messages/serviceBound/feedback"),
                    Link::FileNotifications(_) => {
                        Need::Service("/messages/serviceBound/filenotifications")
                    }
                    Link::Device(d) => {
                        let (device, module) = d.identity();
                        Need::Identity(device, module.as_ref())
                    }
                    // Event Hubs receivers and the request/response nodes keep their rules.
                    _ => return false,
                };
                auth::check(&self.hub, token, &need).is_err()
            })
            .map(|(id, _)| *id)
            .collect();
        for link in refused {
            tracing::info!(peer = %self.peer, %link, audience, "AMQP link no longer authorized by the token put for its audience; detaching it");
            self.conn.detach(
                link,
                Some(AmqpError::new(
                    condition::UNAUTHORIZED_ACCESS,
                    "the token now put for this link's audience does not authorize it",
                )),
            );
            self.forget_link(link);
        }
    }

    /// When the soonest token some link depends on expires.
    fn next_token_expiry(&self) -> Option<Instant> {
        let audiences = self
            .links
            .values()
            .filter_map(|l| l.authorization().map(|a| a.audience.as_str()));
        let until = self.tokens.next_expiry(audiences)?;
        let left = until.saturating_sub(self.now_secs()).min(365 * 86_400);
        Some(Instant::now() + Duration::from_secs(left) + Duration::from_millis(10))
    }

    /// Detaches the links whose token expired unrenewed.
    fn expire_tokens(&mut self) {
        let now = self.now_secs();
        let expired: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| {
                l.authorization()
                    .is_some_and(|a| !self.tokens.valid(&a.audience, now))
            })
            .map(|(id, _)| *id)
            .collect();
        for link in expired {
            tracing::info!(peer = %self.peer, %link, "AMQP link's token expired; detaching it");
            self.conn.detach(
                link,
                Some(AmqpError::new(
                    condition::UNAUTHORIZED_ACCESS,
                    "the token that authorized this link expired",
                )),
            );
            self.forget_link(link);
        }
    }

    /// Forgets a link that is gone, releasing what it held.
    fn forget_link(&mut self, link: LinkId) {
        let Some(kind) = self.links.remove(&link) else {
            return;
        };
        self.reply_links.retain(|_, l| *l != link);
        self.queued_replies.remove(&link);
        match kind {
            Link::Feedback(f) => {
                for lock in f.outstanding.into_values() {
                    service::settle_feedback(&self.hub, lock, Some(DeliveryState::Released));
                }
            }
            Link::EventHubs(r) => self.hub.leave_reader(&r.ticket),
            Link::Device(d) => self.device_link_gone(link, d),
            _ => {}
        }
    }

    /// The connection ended: give back what its links held.
    async fn finish(&mut self) {
        let links: Vec<LinkId> = self.links.keys().copied().collect();
        for link in links {
            self.forget_link(link);
        }
        let identities: Vec<Identity> = self.devices.keys().cloned().collect();
        for identity in identities {
            if let Some(state) = self.devices.remove(&identity) {
                state.end(&self.hub).await;
            }
        }
    }
}

trait RoleName {
    fn role_name(&self) -> &'static str;
}

impl RoleName for Attach {
    fn role_name(&self) -> &'static str {
        match self.role {
            Role::Sender => "sending",
            Role::Receiver => "receiving",
        }
    }
}

/// Whether `e` refused a device because this node fenced itself.
fn fenced(hub: &Hub, e: &HubError) -> bool {
    e.code == ferrohub_types::ErrorCode::ServiceUnavailable && hub.admit_devices().is_err()
}
