//! The device endpoint (amqp-contract §4): telemetry, C2D to the device, twins and direct
//! methods, for every identity that attaches links on the connection (a gateway may multiplex
//! many).
//!
//! Twins (amqp-contract §4.5) take two links on `/devices/{id}/twin` (or a module's): requests
//! come on the one where the device sends, with the message annotations `operation` (`GET`,
//! `PATCH`, `PUT`, `DELETE`) and `resource`, and a `correlation-id`; answers go out pre-settled on
//! the other, with the same `correlation-id`, the annotation `status` (an `int`) and, after a
//! reported patch, `version`. `GET` and `PATCH` are the hub's device twin requests, carried out
//! one at a time per identity in the order they came, like MQTT's; `PUT` and `DELETE` of
//! `/notifications/twin/properties/desired` turn desired notifications on and off. A desired
//! notification is a message without `correlation-id` whose body is the patch.
//!
//! An identity's first link registers it with the hub like an MQTT CONNECT does: one live
//! connection per identity (a newer one, on any protocol, takes over and this one's links of
//! that identity are detached), revocation and token expiry end its links, and its telemetry
//! budget and connect rate are the identity's, shared with its other protocols.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferrohub_amqp::azure::address::Address;
use ferrohub_amqp::condition;
use ferrohub_amqp::connection::{AttachReply, DeliveryId, LinkId};
use ferrohub_amqp::message::{
    Annotations, ApplicationProperties, BATCH_MESSAGE_FORMAT, Body, Message, MessageId, Properties,
    decode_batch,
};
use ferrohub_amqp::performative::{AmqpError, DeliveryState, ReceiverSettleMode, SenderSettleMode};
use ferrohub_amqp::types::Value;
use ferrohub_types::{DeviceId, ModuleId};
use tokio::task::JoinHandle;

use super::auth::{Authorization, Need};
use super::{Done, Driver, Link, convert};
use crate::connections::{DeviceCommand, Identity, Interests, Registration};
use crate::hub::{
    C2dDelivery, DeviceAnswer, Hub, HubError, Metered, TwinReply, TwinRequest, serve_twin_request,
};
use crate::limits::Admission;
use crate::telemetry::{DeviceMessage, Origin};

/// Most C2D messages in flight to one device at a time.
const MAX_C2D_IN_FLIGHT: usize = 8;

/// The largest telemetry message a device may send (the hub checks its own limit too).
const MAX_TELEMETRY_BYTES: u64 = 256 * 1024 + 16 * 1024;

/// The application property naming a method (hub → device).
const METHOD_NAME: &str = "IoThub-methodname";
/// The application property of a method's status (device → hub), an AMQP `int`.
const METHOD_STATUS: &str = "IoThub-status";

/// The resource of the desired-notification subscription (`PUT` on, `DELETE` off).
const DESIRED_SUBSCRIPTION: &str = "/notifications/twin/properties/desired";

/// The resource of reported-properties patches.
const REPORTED: &str = "/properties/reported";

/// Twin requests of one identity waiting for the one being carried out; more are answered
/// 429.
const MAX_QUEUED_TWIN_REQUESTS: usize = 16;

/// Twin messages one twin link holds while the device grants no credit; past that the device
/// is too far behind (a desired notification left out would leave its copy wrong for good), so
/// the link is detached and the device reads the twin again when it reattaches.
const MAX_QUEUED_TWIN_MESSAGES: usize = 256;

/// What a device link carries.
#[derive(Debug)]
pub(super) enum Kind {
    /// Telemetry from the device.
    Events,
    /// C2D messages to the device: delivery → lock token.
    C2d {
        deliveries: HashMap<DeliveryId, String>,
        taking: bool,
        /// A wake-up came while a read of the queue was under way: read again after it (the
        /// message that caused it may have been queued after that read looked).
        again: bool,
    },
    /// Method requests to the device.
    MethodRequests,
    /// Method responses from the device.
    MethodResponses,
    /// Twin requests from the device.
    TwinRequests,
    /// Twin answers and desired notifications to the device, waiting for credit.
    TwinResponses { queue: VecDeque<Bytes> },
}

/// A link of one identity.
#[derive(Debug)]
pub(super) struct DeviceLink {
    pub(super) auth: Authorization,
    identity: Identity,
    kind: Kind,
}

impl DeviceLink {
    /// The device and module the link belongs to.
    pub(super) fn identity(&self) -> &Identity {
        &self.identity
    }
}

/// What an identity's registration says.
#[derive(Debug)]
pub(super) enum RegistrationEvent {
    /// The hub ended the identity's connection: revocation, a newer connection.
    Closed(String),
    /// A command for the device.
    Command(DeviceCommand),
    /// C2D messages wait.
    C2dReady,
}

/// An identity with links on this connection.
pub(super) struct DeviceState {
    origin: Origin,
    registration: u64,
    forwarder: JoinHandle<()>,
    budget: Metered,
    c2d: C2dDelivery,
    /// Method requests sent and not answered.
    methods_out: HashSet<String>,
    /// Twin requests waiting their turn, with the correlation id to answer with.
    twin_queue: VecDeque<(MessageId, TwinRequest)>,
    /// Whether a twin request is being carried out.
    twin_busy: bool,
    /// Whether the device asked for desired notifications (`PUT` of the subscription).
    desired: bool,
}

impl DeviceState {
    /// Ends the identity's presence on this connection: unregisters it, fails its pending
    /// methods, gives back its unsettled C2D messages.
    pub(super) async fn end(self, hub: &Arc<Hub>) {
        self.forwarder.abort();
        let identity = (self.origin.device_id.clone(), self.origin.module_id.clone());
        hub.unregister_connection(&identity, self.registration);
        hub.methods_abandoned(&identity, self.methods_out);
        self.c2d.finish(hub).await;
    }
}

/// Forwards a registration's signals to the connection's channel.
fn forward(
    identity: Identity,
    mut reg: Registration,
    done: tokio::sync::mpsc::UnboundedSender<Done>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                closed = &mut reg.closed => match closed {
                    Ok(reason) => RegistrationEvent::Closed(reason),
                    Err(_) => return,
                },
                Some(command) = reg.commands.recv() => RegistrationEvent::Command(command),
                () = reg.c2d.notified() => RegistrationEvent::C2dReady,
            };
            let last = matches!(event, RegistrationEvent::Closed(_));
            if done.send(Done::Device(identity.clone(), event)).is_err() || last {
                return;
            }
        }
    })
}

/// A device-side address taken apart.
fn device_address(address: &str) -> Option<(String, Option<String>, Address)> {
    let parsed = Address::parse(address);
    let (d, m) = match &parsed {
        Address::DeviceEvents {
            device_id,
            module_id,
        }
        | Address::DeviceC2d {
            device_id,
            module_id,
        }
        | Address::Twin {
            device_id,
            module_id,
        }
        | Address::Methods {
            device_id,
            module_id,
        } => (device_id.clone(), module_id.clone()),
        _ => return None,
    };
    Some((d, m, parsed))
}

impl Driver {
    /// Attaches a device link.
    pub(super) fn attach_device(&mut self, link: LinkId, address: &str, client_sends: bool) {
        if let Err(e) = self.hub.admit_devices() {
            // The node fenced itself: the whole connection goes, so the device reconnects,
            // through the balancer, to another node.
            tracing::info!(peer = %self.peer, error = %e, "AMQP device refused: the node is fenced");
            self.conn
                .close(Some(AmqpError::new(condition::INTERNAL_ERROR, e.message)));
            return;
        }
        let Some((device, module, parsed)) = device_address(address) else {
            return self.refuse(link, condition::NOT_FOUND, "not a device address");
        };
        let ids = DeviceId::new(device)
            .map_err(|e| HubError::invalid(e.to_string()))
            .and_then(|d| {
                module
                    .map(ModuleId::new)
                    .transpose()
                    .map_err(|e| HubError::invalid(e.to_string()))
                    .map(|m| (d, m))
            });
        let (device, module) = match ids {
            Ok(x) => x,
            Err(e) => return self.refuse_with(link, &e),
        };
        let kind = match (&parsed, client_sends, module.is_some()) {
            (Address::DeviceEvents { .. }, true, _) => Kind::Events,
            (Address::DeviceC2d { .. }, false, false) => Kind::C2d {
                deliveries: HashMap::new(),
                taking: false,
                again: false,
            },
            (Address::Methods { .. }, false, _) => Kind::MethodRequests,
            (Address::Methods { .. }, true, _) => Kind::MethodResponses,
            (Address::Twin { .. }, true, _) => Kind::TwinRequests,
            (Address::Twin { .. }, false, _) => Kind::TwinResponses {
                queue: VecDeque::new(),
            },
            (Address::DeviceC2d { .. }, false, true) => {
                return self.refuse(
                    link,
                    condition::NOT_IMPLEMENTED,
                    "cloud-to-device messages to modules are not supported",
                );
            }
            _ => {
                return self.refuse(
                    link,
                    condition::NOT_ALLOWED,
                    "the link's direction does not fit its address",
                );
            }
        };
        let (auth, origin) = match self
            .tokens
            .authorize(&self.hub, &Need::Identity(&device, module.as_ref()))
        {
            Ok((auth, Some(origin))) => (auth, origin),
            Ok((_, None)) => {
                return self.refuse(link, condition::UNAUTHORIZED_ACCESS, "not a device token");
            }
            Err(e) => return self.refuse_with(link, &e),
        };
        let identity: Identity = (device, module);
        if !self.devices.contains_key(&identity) {
            if let Err(wait) = self.hub.budgets.admit_connect(&identity, Instant::now()) {
                let e = HubError::throttled(
                    wait,
                    "The identity or the hub is connecting too often; retry later.",
                );
                return self.refuse_with(link, &e);
            }
            let registration = self.hub.register_connection(identity.clone());
            tracing::info!(peer = %self.peer, device = %identity.0, module = ?identity.1, "AMQP device connected");
            let state = DeviceState {
                registration: registration.id,
                forwarder: forward(identity.clone(), registration, self.done_tx.clone()),
                budget: self.hub.budgets.messages(&identity, Instant::now()),
                c2d: C2dDelivery::new(identity.0.clone(), MAX_C2D_IN_FLIGHT),
                origin,
                methods_out: HashSet::new(),
                twin_queue: VecDeque::new(),
                twin_busy: false,
                desired: false,
            };
            self.devices.insert(identity.clone(), state);
        }
        let reply = match kind {
            Kind::Events | Kind::MethodResponses | Kind::TwinRequests => AttachReply {
                rcv_settle_mode: ReceiverSettleMode::First,
                max_message_size: Some(MAX_TELEMETRY_BYTES),
                ..AttachReply::default()
            },
            Kind::C2d { .. } => AttachReply {
                snd_settle_mode: Some(SenderSettleMode::Unsettled),
                ..AttachReply::default()
            },
            Kind::MethodRequests | Kind::TwinResponses { .. } => AttachReply {
                snd_settle_mode: Some(SenderSettleMode::Settled),
                ..AttachReply::default()
            },
        };
        self.conn.accept_attach(link, reply);
        self.links.insert(
            link,
            Link::Device(DeviceLink {
                auth,
                identity: identity.clone(),
                kind,
            }),
        );
        self.publish_interests(&identity);
        self.pump_device_link(link);
    }

    /// The links of `identity` on this connection, with their kinds.
    fn links_of<'a>(&'a self, identity: &'a Identity) -> impl Iterator<Item = (LinkId, &'a Kind)> {
        self.links.iter().filter_map(move |(id, l)| match l {
            Link::Device(d) if &d.identity == identity => Some((*id, &d.kind)),
            _ => None,
        })
    }

    /// Tells the hub whether `identity` can take method requests here: both method links up.
    fn publish_interests(&self, identity: &Identity) {
        let Some(state) = self.devices.get(identity) else {
            return;
        };
        let mut requests = false;
        let mut responses = false;
        let mut twin = false;
        for (_, kind) in self.links_of(identity) {
            match kind {
                Kind::MethodRequests => requests = true,
                Kind::MethodResponses => responses = true,
                Kind::TwinResponses { .. } => twin = true,
                _ => {}
            }
        }
        self.hub.connections.set_interests(
            identity,
            state.registration,
            Interests {
                methods: requests && responses,
                desired: state.desired && twin,
            },
        );
    }

    /// A message on a device link: telemetry, or a method's response.
    pub(super) fn device_delivery(
        &mut self,
        link: LinkId,
        delivery: DeliveryId,
        format: u32,
        payload: Bytes,
    ) {
        let Some(Link::Device(l)) = self.links.get(&link) else {
            return;
        };
        let identity = l.identity.clone();
        match l.kind {
            Kind::Events => self.telemetry(link, delivery, &identity, format, payload),
            Kind::MethodResponses => {
                self.conn.settle(link, delivery, DeliveryState::Accepted);
                self.hub.touch(&identity, self.hub.now());
                self.method_response(&identity, payload);
            }
            Kind::TwinRequests => {
                self.conn.settle(link, delivery, DeliveryState::Accepted);
                self.hub.touch(&identity, self.hub.now());
                self.twin_request(&identity, payload);
            }
            _ => self.conn.settle(link, delivery, DeliveryState::Released),
        }
    }

    fn telemetry(
        &mut self,
        link: LinkId,
        delivery: DeliveryId,
        identity: &Identity,
        format: u32,
        payload: Bytes,
    ) {
        let messages = if format == BATCH_MESSAGE_FORMAT {
            decode_batch(payload).map(|b| b.messages)
        } else {
            Message::decode(payload).map(|m| vec![m])
        };
        let messages: Vec<DeviceMessage> = match messages {
            Ok(m) => m.iter().map(convert::telemetry).collect(),
            Err(e) => {
                let e = HubError::invalid(format!("the message does not decode: {e}"));
                return self.settle_error(link, delivery, &e);
            }
        };
        let Some(state) = self.devices.get(identity) else {
            return self.conn.settle(link, delivery, DeliveryState::Released);
        };
        let bytes: usize = messages.iter().map(DeviceMessage::size).sum();
        match state.budget.admit(bytes, Instant::now()) {
            Admission::Now | Admission::After(_) => {}
            Admission::Refuse => {
                let e = HubError::throttled(
                    std::time::Duration::from_secs(1),
                    "The device exceeded its message rate.",
                );
                return self.settle_error(link, delivery, &e);
            }
        }
        match self.hub.submit(&state.origin, messages) {
            Ok(durable) => {
                let done = self.done_tx.clone();
                tokio::spawn(async move {
                    let result = durable.await.map(|_| ());
                    let _ = done.send(Done::Telemetry {
                        link,
                        delivery,
                        result,
                    });
                });
            }
            Err(e) => self.settle_error(link, delivery, &e),
        }
    }

    /// A device's answer to a method request (amqp-contract §4.6).
    fn method_response(&mut self, identity: &Identity, payload: Bytes) {
        let Ok(message) = Message::decode(payload) else {
            return;
        };
        let rid = message
            .properties
            .as_ref()
            .and_then(|p| p.correlation_id.as_ref())
            .map(convert::id_text);
        let status = message
            .application_properties
            .as_ref()
            .and_then(|a| a.get_ignore_case(METHOD_STATUS))
            .and_then(Value::as_integer)
            .and_then(|s| i32::try_from(s).ok());
        let (Some(rid), Some(status)) = (rid, status) else {
            tracing::debug!(peer = %self.peer, "a method response without its id or status");
            return;
        };
        let Some(state) = self.devices.get_mut(identity) else {
            return;
        };
        if state.methods_out.remove(&rid) {
            let body = convert::body_bytes(&message);
            self.hub
                .method_response(identity, &rid, DeviceAnswer { status, body });
        }
    }

    /// A device's twin request (amqp-contract §4.5).
    fn twin_request(&mut self, identity: &Identity, payload: Bytes) {
        let Ok(message) = Message::decode(payload) else {
            tracing::debug!(peer = %self.peer, "an undecodable twin request");
            return;
        };
        let Some(correlation) = message
            .properties
            .as_ref()
            .and_then(|p| p.correlation_id.clone())
        else {
            // An answer without a correlation id would read as a desired notification.
            tracing::debug!(peer = %self.peer, "a twin request without a correlation-id");
            return;
        };
        let rid = convert::id_text(&correlation);
        let annotation = |key: &str| {
            message
                .message_annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .and_then(Value::as_text)
                .map(str::to_owned)
        };
        let operation = annotation("operation").unwrap_or_default();
        let resource = annotation("resource").unwrap_or_default();
        let resource = resource.trim_end_matches('/');
        let request = match (operation.to_ascii_uppercase().as_str(), resource) {
            ("GET", "") => TwinRequest::Get { rid },
            ("PATCH", REPORTED) => TwinRequest::Patch {
                rid,
                version: None,
                body: convert::body_bytes(&message),
            },
            (op @ ("PUT" | "DELETE"), DESIRED_SUBSCRIPTION) => {
                let on = op == "PUT";
                if let Some(state) = self.devices.get_mut(identity) {
                    state.desired = on;
                }
                self.publish_interests(identity);
                let reply = twin_message(Some(correlation), Some(200), None, Bytes::new());
                return self.send_twin(identity, &reply);
            }
            _ => {
                let e = HubError::invalid(format!(
                    "unsupported twin request: operation {operation:?} on resource {resource:?}"
                ));
                let reply = TwinReply::error(rid, &e, self.hub.now());
                return self.send_twin_reply(identity, correlation, reply);
            }
        };
        let Some(state) = self.devices.get_mut(identity) else {
            return;
        };
        if state.twin_queue.len() >= MAX_QUEUED_TWIN_REQUESTS {
            let e = HubError::throttled(
                std::time::Duration::from_secs(1),
                "Too many twin requests are waiting; retry later.",
            );
            let reply = TwinReply::error(convert::id_text(&correlation), &e, self.hub.now());
            return self.send_twin_reply(identity, correlation, reply);
        }
        state.twin_queue.push_back((correlation, request));
        self.next_twin_request(identity);
    }

    /// Starts the identity's next twin request unless one is under way.
    fn next_twin_request(&mut self, identity: &Identity) {
        let Some(state) = self.devices.get_mut(identity) else {
            return;
        };
        if state.twin_busy {
            return;
        }
        let Some((correlation, request)) = state.twin_queue.pop_front() else {
            return;
        };
        state.twin_busy = true;
        let hub = self.hub.clone();
        let done = self.done_tx.clone();
        let identity = identity.clone();
        tokio::spawn(async move {
            let reply = serve_twin_request(hub, identity.clone(), request).await;
            let _ = done.send(Done::Twin {
                identity,
                correlation,
                reply,
            });
        });
    }

    /// A twin request was carried out: answer it, start the next.
    pub(super) fn twin_done(
        &mut self,
        identity: Identity,
        correlation: MessageId,
        reply: TwinReply,
    ) {
        let Some(state) = self.devices.get_mut(&identity) else {
            return;
        };
        state.twin_busy = false;
        self.send_twin_reply(&identity, correlation, reply);
        self.next_twin_request(&identity);
    }

    fn send_twin_reply(&mut self, identity: &Identity, correlation: MessageId, reply: TwinReply) {
        let message = twin_message(
            Some(correlation),
            Some(reply.status),
            reply.version,
            reply.body,
        );
        self.send_twin(identity, &message);
    }

    /// Queues a twin message on the identity's twin link (where the hub sends) and sends what
    /// its credit allows. Without such a link the message is dropped: the device has nowhere
    /// to hear it.
    fn send_twin(&mut self, identity: &Identity, message: &Message) {
        let Some(link) = self
            .links_of(identity)
            .find(|(_, k)| matches!(k, Kind::TwinResponses { .. }))
            .map(|(id, _)| id)
        else {
            tracing::debug!(peer = %self.peer, device = %identity.0, "a twin message with no twin link to go on");
            return;
        };
        let Ok(payload) = message.to_bytes() else {
            return;
        };
        if let Some(Link::Device(DeviceLink {
            kind: Kind::TwinResponses { queue },
            ..
        })) = self.links.get_mut(&link)
        {
            queue.push_back(payload);
        }
        self.flush_twin(link);
    }

    /// Sends a twin link's queued messages while it has credit; detaches a link whose device
    /// fell too far behind.
    pub(super) fn flush_twin(&mut self, link: LinkId) {
        loop {
            let credit = self.conn.credit(link);
            let tag = self.tag();
            let Some(Link::Device(DeviceLink {
                kind: Kind::TwinResponses { queue },
                ..
            })) = self.links.get_mut(&link)
            else {
                return;
            };
            if queue.len() > MAX_QUEUED_TWIN_MESSAGES {
                self.conn.detach(
                    link,
                    Some(AmqpError::new(
                        condition::RESOURCE_LIMIT_EXCEEDED,
                        "the device fell behind its twin messages; reattach and read the twin",
                    )),
                );
                self.forget_link(link);
                return;
            }
            if credit == 0 {
                return;
            }
            let Some(payload) = queue.pop_front() else {
                return;
            };
            if let Err(e) = self.conn.send(link, tag, true, 0, payload) {
                tracing::debug!(peer = %self.peer, %link, error = %e, "a twin message not sent");
                return;
            }
        }
    }

    /// A desired-properties patch for a subscribed identity: a message without
    /// correlation-id, the patch (with its `$version`) as the body.
    fn desired_patch(&mut self, identity: &Identity, version: u64, body: Bytes) {
        if !self.devices.get(identity).is_some_and(|s| s.desired) {
            return;
        }
        let message = twin_message(None, None, Some(version), body);
        self.send_twin(identity, &message);
    }

    /// Sends C2D messages on a device's C2D link while it has credit.
    pub(super) fn pump_device_link(&mut self, link: LinkId) {
        let credit = self.conn.credit(link) as usize;
        let Some(Link::Device(l)) = self.links.get_mut(&link) else {
            return;
        };
        let Kind::C2d { taking, again, .. } = &mut l.kind else {
            return;
        };
        let Some(state) = self.devices.get(&l.identity) else {
            return;
        };
        let want = credit.min(state.c2d.room());
        if *taking {
            *again = true;
            return;
        }
        if want == 0 {
            return;
        }
        *taking = true;
        *again = false;
        let device = l.identity.0.clone();
        let hub = self.hub.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let messages = match hub.c2d.receive_many(&device, want, hub.now()).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(%device, error = %e, "reading the C2D queue failed");
                    Vec::new()
                }
            };
            let _ = done.send(Done::C2dTaken { link, messages });
        });
    }

    /// C2D messages locked for `link`: each sent unsettled, its outcome settling it.
    pub(super) fn c2d_taken(&mut self, link: LinkId, messages: Vec<ferrohub_c2d::QueuedMessage>) {
        let mut read_again = false;
        let identity = match self.links.get_mut(&link) {
            Some(Link::Device(l)) => {
                if let Kind::C2d { taking, again, .. } = &mut l.kind {
                    *taking = false;
                    read_again = std::mem::take(again);
                }
                Some(l.identity.clone())
            }
            _ => None,
        };
        let mut unsent = Vec::new();
        for m in messages {
            let Some(lock) = m.lock_token.clone() else {
                continue;
            };
            let sent = identity.as_ref().and_then(|_| {
                let payload = convert::device_c2d(&m).to_bytes().ok()?;
                // The C# SDK takes the delivery tag as the lock token (a GUID).
                let tag = convert::uuid_bytes(&lock)
                    .map(|u| Bytes::copy_from_slice(&u))
                    .unwrap_or_else(|| Bytes::copy_from_slice(lock.as_bytes()));
                self.conn.send(link, tag, false, 0, payload).ok()
            });
            match (sent, identity.as_ref()) {
                (Some(delivery), Some(identity)) => {
                    if let Some(state) = self.devices.get_mut(identity) {
                        state.c2d.adopt(&lock);
                    }
                    if let Some(Link::Device(DeviceLink {
                        kind: Kind::C2d { deliveries, .. },
                        ..
                    })) = self.links.get_mut(&link)
                    {
                        deliveries.insert(delivery, lock);
                    }
                }
                _ => unsent.push((m.device_id.clone(), lock)),
            }
        }
        if !unsent.is_empty() {
            let hub = self.hub.clone();
            tokio::spawn(async move {
                for (device, lock) in unsent {
                    let _ = hub.c2d.release(&device, &lock, hub.now()).await;
                }
            });
        }
        if read_again {
            self.pump_device_link(link);
        }
    }

    /// The device settled a C2D message (amqp-contract §4.4): accepted completes it, released
    /// or modified abandons it, rejected dead-letters it.
    pub(super) fn device_disposition(
        &mut self,
        link: LinkId,
        delivery: DeliveryId,
        state: Option<DeliveryState>,
    ) {
        // Not an outcome (or none): the lock stays until it expires.
        if !state.as_ref().is_some_and(DeliveryState::is_terminal) {
            return;
        }
        let Some(Link::Device(l)) = self.links.get_mut(&link) else {
            return;
        };
        let identity = l.identity.clone();
        let Kind::C2d { deliveries, .. } = &mut l.kind else {
            return;
        };
        let Some(lock) = deliveries.remove(&delivery) else {
            return;
        };
        let Some(device) = self.devices.get_mut(&identity) else {
            return;
        };
        match state {
            Some(DeliveryState::Accepted) => {
                device.c2d.acknowledged(&lock);
                device.c2d.flush(&self.hub);
                self.hub.touch(&identity, self.hub.now());
            }
            Some(DeliveryState::Released | DeliveryState::Modified { .. })
                if device.c2d.settled(&lock) =>
            {
                let hub = self.hub.clone();
                tokio::spawn(async move {
                    let _ = hub.c2d.abandon(&identity.0, &lock, hub.now()).await;
                    hub.connections.notify_c2d(&identity.0);
                });
            }
            Some(DeliveryState::Rejected { .. }) if device.c2d.settled(&lock) => {
                let hub = self.hub.clone();
                tokio::spawn(async move {
                    let _ = hub.c2d.reject(&identity.0, &lock, hub.now()).await;
                });
            }
            _ => {}
        }
        self.pump_device_link(link);
    }

    /// A device link went away; the identity's last one ends its presence here.
    pub(super) fn device_link_gone(&mut self, link: LinkId, l: DeviceLink) {
        let _ = link;
        if let Kind::C2d { deliveries, .. } = l.kind
            && let Some(state) = self.devices.get_mut(&l.identity)
        {
            // Unsettled messages go back to the queue now, for the device's next link.
            let hub = self.hub.clone();
            let device = l.identity.0.clone();
            let locks: Vec<String> = deliveries
                .into_values()
                .filter(|lock| state.c2d.settled(lock))
                .collect();
            tokio::spawn(async move {
                for lock in locks {
                    let _ = hub.c2d.release(&device, &lock, hub.now()).await;
                }
                hub.connections.notify_c2d(&device);
            });
        }
        if self.links_of(&l.identity).next().is_none() {
            if let Some(state) = self.devices.remove(&l.identity) {
                tracing::info!(peer = %self.peer, device = %l.identity.0, module = ?l.identity.1, "AMQP device disconnected");
                let hub = self.hub.clone();
                tokio::spawn(async move { state.end(&hub).await });
            }
        } else {
            self.publish_interests(&l.identity);
        }
    }

    /// A signal of an identity's registration.
    pub(super) fn registration_event(&mut self, identity: Identity, event: RegistrationEvent) {
        match event {
            RegistrationEvent::Closed(reason) if reason == crate::hub::FENCED_CLOSE => {
                self.conn
                    .close(Some(AmqpError::new(condition::INTERNAL_ERROR, reason)));
            }
            RegistrationEvent::Closed(reason) => {
                let stolen = reason.contains("newer connection");
                let links: Vec<LinkId> = self.links_of(&identity).map(|(id, _)| id).collect();
                for link in links {
                    let condition = if stolen {
                        condition::STOLEN
                    } else {
                        condition::UNAUTHORIZED_ACCESS
                    };
                    self.conn
                        .detach(link, Some(AmqpError::new(condition, reason.clone())));
                    self.forget_link(link);
                }
            }
            RegistrationEvent::Command(command) => command_for(self, &identity, command),
            RegistrationEvent::C2dReady => {
                let links: Vec<LinkId> = self
                    .links_of(&identity)
                    .filter(|(_, k)| matches!(k, Kind::C2d { .. }))
                    .map(|(id, _)| id)
                    .collect();
                for link in links {
                    self.pump_device_link(link);
                }
            }
        }
    }
}

/// A twin answer or notification: `correlation-id` for answers, the annotations `status`
/// (`int`) and `version` (`long`) when given, the body as one data section.
fn twin_message(
    correlation: Option<MessageId>,
    status: Option<u16>,
    version: Option<u64>,
    body: Bytes,
) -> Message {
    let mut annotations = Annotations::new();
    if let Some(status) = status {
        annotations.insert("status", Value::Int(i32::from(status)));
    }
    if let Some(version) = version {
        annotations.insert(
            "version",
            Value::Long(i64::try_from(version).unwrap_or(i64::MAX)),
        );
    }
    Message {
        message_annotations: (!annotations.is_empty()).then_some(annotations),
        properties: correlation.map(|c| Properties {
            correlation_id: Some(c),
            ..Properties::default()
        }),
        body: Body::data(body),
        ..Message::default()
    }
}

/// Carries out a command for `identity`: a method request goes out on its method link, a
/// desired patch on its twin link.
pub(super) fn command_for(d: &mut Driver, identity: &Identity, command: DeviceCommand) {
    match command {
        DeviceCommand::Method { rid, name, payload } => {
            let link = d
                .links_of(identity)
                .find(|(_, k)| matches!(k, Kind::MethodRequests))
                .map(|(id, _)| id);
            let mut app = ApplicationProperties::new();
            app.insert(METHOD_NAME, name.as_str());
            let correlation = convert::uuid_bytes(&rid)
                .map_or_else(|| MessageId::String(rid.clone()), MessageId::Uuid);
            let message = Message {
                properties: Some(Properties {
                    correlation_id: Some(correlation),
                    ..Properties::default()
                }),
                application_properties: Some(app),
                body: Body::data(payload),
                ..Message::default()
            };
            let tag = d.tag();
            let sent = link.is_some_and(|link| {
                message
                    .to_bytes()
                    .ok()
                    .is_some_and(|p| d.conn.send(link, tag, true, 0, p).is_ok())
            });
            match d.devices.get_mut(identity) {
                Some(state) if sent => {
                    state.methods_out.insert(rid);
                }
                _ => d.hub.methods_abandoned(identity, [rid]),
            }
        }
        DeviceCommand::DesiredPatch { version, body } => d.desired_patch(identity, version, body),
    }
}
