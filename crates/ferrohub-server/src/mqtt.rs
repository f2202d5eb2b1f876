//! The MQTT device endpoint: listeners (TLS on 8883, plain TCP when configured, WebSockets on
//! the HTTPS port) and the per-connection driver of `ferrohub_mqtt::Session`.
//!
//! The driver owns the socket and the clock and carries out what the session asks: it
//! authenticates the CONNECT against the registry and policies, submits telemetry to the event
//! log and acknowledges it (PUBACK) only once it is durable, keeps CleanSession=0 subscriptions
//! in the session store, answers twin requests, carries direct methods and desired-property
//! notifications, and closes the connection when the hub revokes the identity, when its token
//! expires, or when a newer connection for the same identity arrives. The protocol rules
//! themselves live in the session, not here, and the twin and method topics are
//! `ferrohub-twin`'s.
//!
//! # Twin requests
//!
//! A connection's twin `GET`s and reported patches are carried out one at a time, in the order
//! the device sent them (so its patches apply in its order), each answered on
//! `$iothub/twin/res/{status}/?$rid=…` once done: `200` with the twin's device view, `204` with
//! `&$version=` once the patch is durable, or an error status with Azure's JSON error body
//! (twins-methods-contract §1.3, §12.1; Node reads only the body). While
//! [`MAX_QUEUED_TWIN_REQUESTS`] wait, the driver stops reading from the device.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ferrohub_auth::SasToken;
use ferrohub_mqtt::codec::{ConnectReturnCode, LastWill};
use ferrohub_mqtt::session::{AuthDecision, CloseReason, TelemetryId};
use ferrohub_mqtt::topic::{PropertyBag, PropertyName, SystemProperty, TelemetryTopic, Username};
use ferrohub_mqtt::{Session, SessionConfig, SessionEvent, TopicName};
use ferrohub_twin::DeviceTopic;

use crate::hub::{TwinReply, TwinRequest, serve_twin_request};
use ferrohub_types::{DeviceId, ErrorCode, ModuleId};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::connections::{DeviceCommand, Identity, Interests, Registration};
use crate::hub::{C2dDelivery, DeviceAnswer, Hub, HubError, Metered};
use crate::limits::Admission;
use crate::sessions::client_id;
use crate::telemetry::{DeviceMessage, Origin};
use crate::transport::{TcpTransport, TlsTransport, Transport};

/// Longest a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts MQTT connections on `listener` (over TLS when `tls` is given) until shutdown.
pub(crate) async fn serve(listener: TcpListener, tls: Option<Arc<ServerConfig>>, hub: Arc<Hub>) {
    let acceptor = tls.map(TlsAcceptor::from);
    let mut shutdown = hub.shutdown_signal();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an MQTT connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = wait_true(&mut shutdown) => break,
        };
        let _ = tcp.set_nodelay(true);
        let hub = hub.clone();
        // One task type per transport: a plain connection's task holds no TLS state.
        match acceptor.clone() {
            Some(acceptor) => {
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => drive(hub, TlsTransport(stream), peer).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "MQTT TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "MQTT TLS handshake timed out"),
                    }
                });
            }
            None => {
                tokio::spawn(drive(hub, TcpTransport::new(tcp), peer));
            }
        }
    }
}

async fn wait_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Telemetry submitted to the log, each resolving to its id and the outcome of its append.
type Durables = FuturesUnordered<BoxFuture<'static, (TelemetryId, Result<(), HubError>)>>;

/// What the driver knows about its connection once it is authenticated.
struct Authenticated {
    origin: Origin,
    identity: Identity,
    client_id: String,
    clean_session: bool,
    will: Option<LastWill>,
    registration: Registration,
    /// When the token stops being valid (its expiry plus the 5-minute skew).
    token_deadline: Option<tokio::time::Instant>,
    /// The identity's telemetry budget, kept by the hub across reconnects.
    budget: Metered,
    /// Cloud-to-device delivery (devices only).
    c2d: C2dDelivery,
    /// Cloud-to-device messages sent and not yet acknowledged: packet id → lock token.
    c2d_packets: HashMap<u16, String>,
    /// Direct method requests sent and not answered yet, by request id.
    methods_out: std::collections::HashSet<String>,
}

/// Twin requests of one connection waiting to be carried out, at most; reading pauses while
/// this many wait.
const MAX_QUEUED_TWIN_REQUESTS: usize = 8;

/// Most cloud-to-device messages in flight to one device at a time.
const MAX_C2D_INFLIGHT: usize = 8;

/// One MQTT connection's driver: the session, the socket's buffers aside, and what the hub
/// knows of the connection.
struct Driver {
    hub: Arc<Hub>,
    peer: SocketAddr,
    session: Session,
    /// Telemetry waiting to be durable, in the order it was submitted.
    durables: Durables,
    auth: Option<Authenticated>,
    /// While shaping a device that sends too fast, nothing is read from it until then.
    throttled_until: Option<Instant>,
    /// Twin requests waiting for the one in flight.
    twin_queue: std::collections::VecDeque<TwinRequest>,
    /// The twin request being carried out.
    twin_inflight: Option<BoxFuture<'static, TwinReply>>,
}

/// Drives one MQTT connection to its end.
pub(crate) async fn drive<T: Transport>(hub: Arc<Hub>, mut transport: T, peer: SocketAddr) {
    let config = SessionConfig::default();
    let max_packet = config.max_packet_size;
    let mut shutdown = hub.shutdown_signal();
    let _counted = ConnectionCount::new(hub.clone());
    let mut d = Driver {
        session: Session::new(Instant::now(), config),
        hub,
        peer,
        durables: FuturesUnordered::new(),
        auth: None,
        throttled_until: None,
        twin_queue: std::collections::VecDeque::new(),
        twin_inflight: None,
    };
    // Both buffers are released whenever they are empty: idle connections hold neither.
    let mut inbuf = BytesMut::new();
    let mut outbuf = BytesMut::new();

    loop {
        // Decode what is buffered, as far as the session wants to read.
        while d.session.wants_read()
            && d.throttled_until.is_none()
            && d.twin_room()
            && !inbuf.is_empty()
        {
            match ferrohub_mqtt::decode(&mut inbuf, max_packet) {
                Ok(Some(packet)) => d.session.handle_packet(Instant::now(), packet),
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(peer = %d.peer, error = %e, "malformed MQTT input");
                    d.session.handle_decode_error(Instant::now(), &e);
                    break;
                }
            }
        }
        if inbuf.is_empty() && inbuf.capacity() > 0 {
            inbuf = BytesMut::new();
        }
        // Carry out what the session asks until it has nothing more.
        loop {
            let mut busy = false;
            while let Some(packet) = d.session.poll_transmit() {
                busy = true;
                if let Err(e) = ferrohub_mqtt::encode(&packet, &mut outbuf) {
                    tracing::error!(peer = %d.peer, error = %e, "encoding an MQTT packet failed");
                }
            }
            if !outbuf.is_empty() {
                let result = transport.write(&outbuf).await;
                outbuf = BytesMut::new();
                if result.is_err() {
                    d.session
                        .close(CloseReason::ServerClose("the connection broke".into()));
                }
            }
            while let Some(event) = d.session.poll_event() {
                busy = true;
                d.handle_event(event).await;
            }
            if let Some(a) = d.auth.as_mut()
                && a.c2d.has_completions()
            {
                busy = true;
                a.c2d.flush(&d.hub);
                d.pump_c2d().await;
            }
            if !busy {
                break;
            }
        }
        if d.session.is_closed() {
            break;
        }
        d.session.release_idle_memory();

        let timeout = d.session.poll_timeout();
        let token_deadline = d.auth.as_ref().and_then(|a| a.token_deadline);
        let c2d_notify = d.auth.as_ref().map(|a| a.registration.c2d.clone());
        let can_read = d.session.wants_read() && d.throttled_until.is_none() && d.twin_room();
        let twin = d.twin_inflight.as_mut();
        let (closed, commands) = match d.auth.as_mut() {
            Some(a) => (
                Some(&mut a.registration.closed),
                Some(&mut a.registration.commands),
            ),
            None => (None, None),
        };
        let revoked = async {
            match closed {
                Some(closed) => match closed.await {
                    Ok(reason) => reason,
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        let next_command = async {
            match commands {
                Some(commands) => commands.recv().await,
                None => std::future::pending().await,
            }
        };
        let c2d_ready = async {
            match &c2d_notify {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        let twin_done = async {
            match twin {
                Some(f) => f.await,
                None => std::future::pending().await,
            }
        };
        let mut pump = false;
        let mut command = None;
        let mut twin_reply = None;
        tokio::select! {
            biased;
            _ = wait_true(&mut shutdown) => {
                d.session.close(CloseReason::ServerClose("the hub is shutting down".into()));
            }
            reason = revoked => {
                d.session.close(CloseReason::ServerClose(reason));
            }
            Some(c) = next_command => command = Some(c),
            reply = twin_done => twin_reply = Some(reply),
            Some(first) = d.durables.next(), if !d.durables.is_empty() => {
                // Every acknowledgement that is ready leaves in one write.
                let mut ready = Some(first);
                while let Some((id, outcome)) = ready {
                    match outcome {
                        Ok(()) => d.session.handle_telemetry_durable(Instant::now(), id),
                        Err(e) => {
                            tracing::warn!(peer = %d.peer, error = %e, "telemetry could not be stored");
                            d.session.handle_telemetry_failed(id);
                        }
                    }
                    ready = d.durables.next().now_or_never().flatten();
                }
            }
            () = c2d_ready => pump = true,
            _ = sleep_until(token_deadline) => {
                d.session.close(CloseReason::Unauthorized("the SAS token expired".into()));
            }
            _ = sleep_until(timeout.map(tokio::time::Instant::from_std)) => {
                d.session.handle_timeout(Instant::now());
            }
            _ = sleep_until(d.throttled_until.map(tokio::time::Instant::from_std)) => {
                d.throttled_until = None;
            }
            read = transport.read(&mut inbuf), if can_read => match read {
                Ok(0) => d.session.close(CloseReason::ServerClose("the client closed the connection".into())),
                Ok(_) => {}
                Err(e) => d.session.close(CloseReason::ServerClose(format!("the connection broke: {e}"))),
            },
        }
        if pump {
            d.pump_c2d().await;
        }
        if let Some(c) = command {
            d.command(c);
        }
        if let Some(reply) = twin_reply {
            d.twin_inflight = None;
            d.twin_reply(reply);
            d.next_twin_request();
        }
    }

    if let Some(a) = d.auth.take() {
        d.hub.unregister_connection(&a.identity, a.registration.id);
        d.hub.methods_abandoned(&a.identity, a.methods_out);
        // Messages the device never acknowledged go back to its queue for the next connection.
        let finish: BoxFuture<'_, ()> = Box::pin(a.c2d.finish(&d.hub));
        finish.await;
    }
    transport.shutdown().await;
}

/// Counts a live connection for as long as it lives.
struct ConnectionCount(Arc<Hub>);

impl ConnectionCount {
    fn new(hub: Arc<Hub>) -> Self {
        hub.mqtt_connections.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("ferrohub_mqtt_connections").increment(1.0);
        ConnectionCount(hub)
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.mqtt_connections.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("ferrohub_mqtt_connections").decrement(1.0);
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    /// Carries out one event of the session.
    async fn handle_event(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::Authenticate {
                device_id,
                module_id,
                username,
                password,
                clean_session,
                will,
                ..
            } => {
                let request = ConnectRequest {
                    device_id,
                    module_id,
                    username,
                    password,
                    clean_session,
                    will,
                };
                Box::pin(self.authenticate(request)).await;
            }
            SessionEvent::Telemetry {
                id,
                retain,
                properties,
                payload,
                ..
            } => self.telemetry(id, retain, &properties, payload),
            // Completed together with the other acknowledgements of this read, and the freed
            // slots refilled, once every event of the read is handled (see `drive`).
            SessionEvent::Delivered { pkid } => {
                if let Some(a) = self.auth.as_mut()
                    && let Some(lock) = a.c2d_packets.remove(&pkid)
                {
                    a.c2d.acknowledged(&lock);
                    self.hub.touch(&a.identity, self.hub.now());
                }
            }
            SessionEvent::Request { topic, payload } => self.request(topic.as_str(), payload),
            SessionEvent::SubscriptionsChanged { subscriptions } => {
                self.publish_interests();
                self.pump_c2d().await;
                if let Some(a) = self.auth.as_ref()
                    && !a.clean_session
                    && let Err(e) = self.hub.sessions.save(&a.client_id, subscriptions).await
                {
                    tracing::error!(client_id = %a.client_id, error = %e, "storing MQTT subscriptions failed");
                }
            }
            SessionEvent::Closed {
                reason,
                publish_will,
            } => {
                if let Some(a) = self.auth.as_ref() {
                    tracing::info!(peer = %self.peer, client_id = %a.client_id, %reason, "MQTT connection closed");
                    if publish_will && let Some(will) = &a.will {
                        publish_will_message(&self.hub, &a.origin, will);
                    }
                } else {
                    tracing::info!(peer = %self.peer, %reason, "MQTT connection closed before it was accepted");
                }
            }
            _ => {}
        }
    }

    /// Answers a CONNECT: the connection and connect-rate limits, then the credentials.
    async fn authenticate(&mut self, req: ConnectRequest) {
        let hub = &self.hub;
        let cid = client_id(&req.device_id, req.module_id.as_deref());
        let refuse = |session: &mut Session,
                      code: ConnectReturnCode,
                      why: &dyn std::fmt::Display| {
            tracing::info!(peer = %self.peer, client_id = %cid, code = code as u8, reason = %why, "MQTT connection refused");
            session.handle_auth_result(Instant::now(), AuthDecision::Refused(code));
        };
        if hub.mqtt_connections.load(Ordering::Relaxed) > hub.limits.max_connections {
            refuse(
                &mut self.session,
                ConnectReturnCode::ServerUnavailable,
                &"the hub's connection limit is reached",
            );
            return;
        }
        let origin = match check_credentials(hub, &req).await {
            Ok(origin) => origin,
            Err((code, e)) => {
                refuse(&mut self.session, code, &e);
                return;
            }
        };
        let identity: Identity = (origin.device_id.clone(), origin.module_id.clone());
        if let Err(wait) = hub.budgets.admit_connect(&identity, Instant::now()) {
            metrics::counter!("ferrohub_connects_throttled_total").increment(1);
            refuse(
                &mut self.session,
                ConnectReturnCode::ServerUnavailable,
                &format_args!(
                    "the identity or the hub is connecting too often; retry in {} ms",
                    wait.as_millis()
                ),
            );
            return;
        }
        let token_deadline = req
            .password
            .as_deref()
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(|t| token_deadline(hub, t));
        let registration = hub.register_connection(identity.clone());
        if let Some(model) = &origin.model_id {
            hub.connections.set_model_id(&identity, model);
        }
        let (session_present, subscriptions) = restore(hub, &cid, req.clean_session).await;
        tracing::info!(peer = %self.peer, client_id = %cid, clean_session = req.clean_session, "MQTT client connected");
        let budget = hub.budgets.messages(&identity, Instant::now());
        self.auth = Some(Authenticated {
            c2d: C2dDelivery::new(origin.device_id.clone(), MAX_C2D_INFLIGHT),
            origin,
            identity,
            client_id: cid,
            clean_session: req.clean_session,
            will: req.will,
            registration,
            token_deadline,
            budget,
            c2d_packets: HashMap::new(),
            methods_out: std::collections::HashSet::new(),
        });
        self.session.handle_auth_result(
            Instant::now(),
            AuthDecision::Accepted {
                session_present,
                subscriptions,
            },
        );
        // Restored subscriptions count as made (Python never subscribes again).
        self.publish_interests();
        self.pump_c2d().await;
    }

    /// Tells the hub what this connection subscribed to, of what the hub sends unasked.
    fn publish_interests(&self) {
        let Some(a) = self.auth.as_ref() else {
            return;
        };
        let has = |f: &str| {
            self.session
                .subscriptions()
                .iter()
                .any(|(filter, _)| filter.as_str() == f)
        };
        let interests = Interests {
            methods: has(ferrohub_twin::topics::METHOD_REQUEST_FILTER),
            desired: has(ferrohub_twin::topics::DESIRED_PATCH_FILTER),
        };
        self.hub
            .connections
            .set_interests(&a.identity, a.registration.id, interests);
    }

    /// Carries out a command of the hub: a method request or a desired-properties patch.
    fn command(&mut self, command: DeviceCommand) {
        let Some(a) = self.auth.as_mut() else {
            return;
        };
        let (topic, payload, rid) = match command {
            DeviceCommand::Method { rid, name, payload } => (
                ferrohub_twin::method_request_topic(&name, &rid),
                payload,
                Some(rid),
            ),
            DeviceCommand::DesiredPatch { version, body } => {
                (ferrohub_twin::desired_patch_topic(version), body, None)
            }
        };
        let sent = TopicName::new(topic).ok().is_some_and(|topic| {
            self.session
                .send_publish(topic, ferrohub_mqtt::QoS::AtMostOnce, payload)
                .is_ok()
        });
        if sent {
            self.hub.touch(&a.identity, self.hub.now());
        }
        if let Some(rid) = rid {
            if sent {
                a.methods_out.insert(rid);
            } else {
                // Not subscribed after all: the call fails as not online.
                self.hub.methods_abandoned(&a.identity, [rid]);
            }
        }
    }

    /// A request of the device on the hub's topics: a method's answer, or a twin request.
    fn request(&mut self, topic: &str, payload: Bytes) {
        let Some(a) = self.auth.as_mut() else {
            return;
        };
        self.hub.touch(&a.identity, self.hub.now());
        let request = match ferrohub_twin::parse_device_topic(topic) {
            Ok(DeviceTopic::MethodResponse(r)) => {
                if a.methods_out.remove(r.rid) {
                    let answer = DeviceAnswer {
                        status: r.status,
                        body: payload,
                    };
                    self.hub.method_response(&a.identity, r.rid, answer);
                }
                return;
            }
            Ok(DeviceTopic::TwinGet { rid }) => TwinRequest::Get {
                rid: rid.to_owned(),
            },
            Ok(DeviceTopic::ReportedPatch(r)) => TwinRequest::Patch {
                rid: r.rid.to_owned(),
                version: r.version,
                body: payload,
            },
            Err(e) => {
                // A twin request whose id is known is answered, never left waiting (§12.1).
                if topic.starts_with("$iothub/twin/")
                    && let Some(rid) = e.request_id()
                {
                    let reply = TwinReply::error(
                        rid.to_owned(),
                        &HubError::invalid(e.to_string()),
                        self.hub.now(),
                    );
                    self.twin_reply(reply);
                } else {
                    tracing::debug!(peer = %self.peer, topic, error = %e, "unreadable request dropped");
                }
                return;
            }
        };
        self.queue_twin_request(request);
    }

    /// Queues a twin request, starting it at once when none is in flight.
    fn queue_twin_request(&mut self, request: TwinRequest) {
        self.twin_queue.push_back(request);
        self.next_twin_request();
    }

    /// Starts the next queued twin request when none is in flight.
    fn next_twin_request(&mut self) {
        let Some(a) = self.auth.as_ref() else {
            return;
        };
        if self.twin_inflight.is_some() {
            return;
        }
        if let Some(request) = self.twin_queue.pop_front() {
            let hub = Arc::clone(&self.hub);
            let identity = a.identity.clone();
            self.twin_inflight = Some(Box::pin(serve_twin_request(hub, identity, request)));
        }
    }

    /// Publishes the answer to a twin request on `$iothub/twin/res/{status}/?$rid=…`.
    fn twin_reply(&mut self, reply: TwinReply) {
        let topic = ferrohub_twin::twin_response_topic(reply.status, &reply.rid, reply.version);
        let sent = TopicName::new(topic).ok().is_some_and(|topic| {
            self.session
                .send_publish(topic, ferrohub_mqtt::QoS::AtMostOnce, reply.body)
                .is_ok()
        });
        if !sent {
            tracing::debug!(peer = %self.peer, rid = %reply.rid, "twin response not sent: the device is not subscribed to $iothub/twin/res/#");
        }
    }

    /// Whether the driver may read more requests: fewer than [`MAX_QUEUED_TWIN_REQUESTS`] twin
    /// requests wait.
    fn twin_room(&self) -> bool {
        self.twin_queue.len() < MAX_QUEUED_TWIN_REQUESTS
    }

    /// Admits a telemetry message under the device's budget and submits it to the log.
    fn telemetry(
        &mut self,
        id: TelemetryId,
        retain: bool,
        properties: &PropertyBag,
        payload: Bytes,
    ) {
        let Some(a) = self.auth.as_ref() else {
            self.session.handle_telemetry_failed(id);
            return;
        };
        let mut msg = message(properties, payload);
        if retain {
            msg.application.push(("mqtt-retain".into(), "true".into()));
        }
        match a.budget.admit(msg.size(), Instant::now()) {
            Admission::Now => {}
            Admission::After(t) => self.throttled_until = Some(t),
            Admission::Refuse => {
                tracing::warn!(peer = %self.peer, client_id = %a.client_id, "device exceeded its message rate; disconnecting");
                metrics::counter!("ferrohub_mqtt_throttled_disconnects_total").increment(1);
                self.session
                    .handle_telemetry_refused(id, "the device exceeded its message rate".into());
                return;
            }
        }
        match self.hub.submit(&a.origin, vec![msg]) {
            Ok(durable) => {
                self.durables
                    .push(Box::pin(async move { (id, durable.await.map(|_| ())) }));
            }
            Err(e) => {
                tracing::info!(peer = %self.peer, client_id = %a.client_id, error = %e, "telemetry refused");
                self.session.handle_telemetry_refused(id, e.message);
            }
        }
    }

    /// Sends queued cloud-to-device messages to a subscribed device, up to
    /// [`MAX_C2D_INFLIGHT`].
    ///
    /// Boxed, like the other rare, large steps of a connection (authentication, session
    /// restore), so that the connection's own future, which every idle connection keeps, stays
    /// small.
    fn pump_c2d(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(self.pump_c2d_now())
    }

    async fn pump_c2d_now(&mut self) {
        let Some(a) = self.auth.as_mut() else {
            return;
        };
        if a.origin.module_id.is_some() || !self.session.is_connected() {
            return;
        }
        let device = a.origin.device_id.clone();
        let filter = format!("devices/{device}/messages/devicebound/#");
        if !self
            .session
            .subscriptions()
            .iter()
            .any(|(f, _)| f.as_str() == filter)
        {
            return;
        }
        let mut unsent = Vec::new();
        'refill: while a.c2d.room() > 0 {
            let room = a.c2d.room();
            let batch = match a.c2d.take(&self.hub, room).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(%device, error = %e, "reading the C2D queue failed");
                    break;
                }
            };
            let exhausted = batch.len() < room;
            let mut batch = batch.into_iter();
            for msg in batch.by_ref() {
                let Some(lock) = msg.lock_token.clone() else {
                    continue;
                };
                let Some(topic) = c2d_topic(&msg) else {
                    // Cannot be expressed as a topic (should not happen for stored messages).
                    let _ = a.c2d.reject(&self.hub, &lock).await;
                    continue;
                };
                match self.session.send_publish_dup(
                    topic,
                    ferrohub_mqtt::QoS::AtLeastOnce,
                    Bytes::from(msg.message.body),
                    msg.deliveries > 1,
                ) {
                    Ok(Some(pkid)) => {
                        a.c2d_packets.insert(pkid, lock);
                    }
                    // Subscribed at QoS 0: no acknowledgement will come; delivery is completion.
                    Ok(None) => a.c2d.acknowledged(&lock),
                    Err(_) => {
                        unsent.push(lock);
                        unsent.extend(batch.filter_map(|m| m.lock_token));
                        break 'refill;
                    }
                }
            }
            if exhausted {
                break;
            }
        }
        for lock in unsent {
            a.c2d.unsent(&self.hub, &lock).await;
        }
        a.c2d.flush(&self.hub);
    }
}

/// What a CONNECT claims.
struct ConnectRequest {
    device_id: String,
    module_id: Option<String>,
    username: Option<String>,
    password: Option<Bytes>,
    clean_session: bool,
    will: Option<LastWill>,
}

/// Checks a CONNECT's credentials: the user name must name one of the hub's host names and
/// the connection's client id, and the password must be a SAS token for the identity.
/// Refusals are CONNACK 5 (what Azure sends for a bad or expired token, an unknown or disabled
/// identity, a user name for another hub), 2 for an identifier the registry cannot hold, or 3
/// when the hub itself is unable; each with its cause for the log.
async fn check_credentials(
    hub: &Hub,
    req: &ConnectRequest,
) -> Result<Origin, (ConnectReturnCode, HubError)> {
    let not_authorized = |why: String| {
        (
            ConnectReturnCode::NotAuthorized,
            HubError::new(ErrorCode::IotHubUnauthorizedAccess, why),
        )
    };
    let device = DeviceId::new(req.device_id.as_str()).map_err(|e| {
        (
            ConnectReturnCode::IdentifierRejected,
            HubError::invalid(e.to_string()),
        )
    })?;
    let module = req
        .module_id
        .as_deref()
        .map(ModuleId::new)
        .transpose()
        .map_err(|e| {
            (
                ConnectReturnCode::IdentifierRejected,
                HubError::invalid(e.to_string()),
            )
        })?;
    let username = req
        .username
        .as_deref()
        .ok_or_else(|| not_authorized("the CONNECT carries no user name".into()))?;
    let parsed = Username::parse(username)
        .map_err(|e| not_authorized(format!("the user name does not parse: {e}")))?;
    // `HostName` may carry a port in a connection string; the user name's host is compared
    // without it.
    let host = parsed.host.rsplit_once(':').map_or(parsed.host, |(h, _)| h);
    if !hub
        .host_names()
        .iter()
        .any(|n| n.eq_ignore_ascii_case(host))
    {
        return Err(not_authorized(format!(
            "the user name names the hub '{host}', which is not this hub"
        )));
    }
    let password = req
        .password
        .as_deref()
        .ok_or_else(|| not_authorized("the CONNECT carries no password (SAS token)".into()))?;
    let token = std::str::from_utf8(password)
        .map_err(|_| not_authorized("the password is not a SAS token".into()))?;
    let mut origin = hub
        .authenticate_device_current(token, &device, module.as_ref())
        .await
        .map_err(|e| {
            let code = if e.is_server_error() {
                ConnectReturnCode::ServerUnavailable
            } else {
                ConnectReturnCode::NotAuthorized
            };
            (code, e)
        })?;
    origin.model_id = parsed.model_id().map(str::to_owned);
    Ok(origin)
}

/// When a connection authenticated with `token` must close: the token's expiry plus the
/// 5-minute skew Azure allows.
fn token_deadline(hub: &Hub, token: &str) -> Option<tokio::time::Instant> {
    SasToken::parse(token).ok().map(|t| {
        let valid_until = t
            .expiry()
            .saturating_add(ferrohub_auth::MAX_CLOCK_SKEW_SECS);
        let now = u64::try_from(hub.now().timestamp()).unwrap_or(0);
        // Far-future tokens: a timer a year away is as good as none.
        let left = valid_until.saturating_sub(now).min(365 * 86_400);
        tokio::time::Instant::now() + Duration::from_secs(left)
    })
}

/// The stored subscriptions of a CleanSession=0 client (and whether it had a session), or a
/// fresh start that forgets any stored session.
async fn restore(
    hub: &Hub,
    client_id: &str,
    clean_session: bool,
) -> (bool, Vec<(ferrohub_mqtt::TopicFilter, ferrohub_mqtt::QoS)>) {
    // Most connections have no stored session: nothing to load or to forget.
    if !hub.sessions.may_have(client_id) {
        return (false, Vec::new());
    }
    let result = if clean_session {
        hub.sessions.delete(client_id).await.map(|()| None)
    } else {
        hub.sessions.load(client_id).await
    };
    match result {
        Ok(Some(subs)) => (true, subs),
        Ok(None) => (false, Vec::new()),
        Err(e) => {
            tracing::error!(client_id, error = %e, "reading the MQTT session store failed");
            (false, Vec::new())
        }
    }
}

/// Maps a telemetry property bag to Azure's message properties (azure-contract §4.7, §6.1).
fn message(bag: &PropertyBag, payload: Bytes) -> DeviceMessage {
    let mut system = Vec::new();
    let mut application = Vec::new();
    for p in bag.iter() {
        let value = p.value.clone().unwrap_or_default();
        match &p.name {
            PropertyName::System(s) => {
                let name = match s {
                    SystemProperty::MessageId => "message-id",
                    SystemProperty::CorrelationId => "correlation-id",
                    SystemProperty::UserId => "user-id",
                    SystemProperty::To => "to",
                    SystemProperty::ContentType => "content-type",
                    SystemProperty::ContentEncoding => "content-encoding",
                    SystemProperty::AbsoluteExpiryTime => "absolute-expiry-time",
                    SystemProperty::CreationTimeUtc => "iothub-creation-time-utc",
                    SystemProperty::InterfaceId => "iothub-interface-id",
                    SystemProperty::ComponentName => "dt-subject",
                    _ => continue,
                };
                system.push((name.to_owned(), value));
            }
            PropertyName::Application(k) => application.push((k.clone(), value)),
        }
    }
    DeviceMessage {
        system,
        application,
        body: payload,
    }
}

/// Publishes a connection's will as telemetry (azure-contract §4.9), without waiting.
fn publish_will_message(hub: &Hub, origin: &Origin, will: &LastWill) {
    let Ok(topic) = TelemetryTopic::parse(will.topic.as_str()) else {
        return;
    };
    let mut msg = message(&topic.properties, will.message.clone());
    msg.application
        .push(("iothub-MessageType".into(), "Will".into()));
    match hub.submit(origin, vec![msg]) {
        Ok(durable) => {
            tokio::spawn(async move {
                if let Err(e) = durable.await {
                    tracing::warn!(error = %e.message, "storing a will message failed");
                }
            });
        }
        Err(e) => tracing::info!(error = %e.message, "will message refused"),
    }
}

/// The delivery topic of a C2D message with its property bag (azure-contract §4.8): `$.to`
/// always (C#'s SDK needs a properties segment), the trailing `/` always (Node's needs it).
fn c2d_topic(msg: &ferrohub_c2d::QueuedMessage) -> Option<ferrohub_mqtt::TopicName> {
    let m = &msg.message;
    let mut bag = PropertyBag::new();
    bag.push_system(
        SystemProperty::AbsoluteExpiryTime,
        dotnet_round_trip(msg.expiry_time),
    );
    if let Some(v) = &m.correlation_id {
        bag.push_system(SystemProperty::CorrelationId, v.clone());
    }
    if let Some(v) = &m.message_id {
        bag.push_system(SystemProperty::MessageId, v.clone());
    }
    bag.push_system(
        SystemProperty::To,
        format!("/devices/{}/messages/devicebound", msg.device_id),
    );
    if let Some(v) = &m.user_id {
        bag.push_system(SystemProperty::UserId, v.clone());
    }
    if let Some(v) = &m.content_type {
        bag.push_system(SystemProperty::ContentType, v.clone());
    }
    if let Some(v) = &m.content_encoding {
        bag.push_system(SystemProperty::ContentEncoding, v.clone());
    }
    bag.push_application("iothub-ack", Some(m.ack.as_str().to_owned()));
    for (k, v) in &m.properties {
        bag.push_application(k.clone(), Some(v.clone()));
    }
    ferrohub_mqtt::topic::c2d_topic(msg.device_id.as_str(), &bag).ok()
}

/// .NET's round-trip time format with seven fractional digits, as the hub writes `$.exp`:
/// `2024-03-14T09:54:49.6536567Z`.
fn dotnet_round_trip(t: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::Timelike;
    format!(
        "{}.{:07}Z",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.nanosecond() % 1_000_000_000 / 100
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_has_seven_fractional_digits() {
        let t = chrono::DateTime::parse_from_rfc3339("3237-07-19T23:06:40.123456789Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        assert_eq!(dotnet_round_trip(t), "3237-07-19T23:06:40.1234567Z");
    }
}
