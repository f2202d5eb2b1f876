//! The hub side of one MQTT connection, as a sans-IO state machine.
//!
//! A [`Session`] owns the rules of the Azure IoT Hub MQTT profile (azure-contract §4): CONNECT
//! first, the identity in the client id, keep-alive, which topics a device may publish and
//! subscribe to, QoS 1 acknowledgements only once telemetry is durable, and the will. It owns no
//! socket, reads no clock (every time-dependent call takes `now`) and knows no registry or
//! storage: those are the driver's, which feeds it packets and carries out its events.
//!
//! The handshake is a sequence of typed states, each holding only what it needs:
//!
//! ```text
//!  ExpectConnect ──CONNECT──▶ Authenticating ──Accepted──▶ Connected
//!        │                          │                          │
//!        └── timeout, bad CONNECT ──┴── Refused, violation ────┴── DISCONNECT, keep-alive,
//!                                                                  violation, close() ──▶ Closed
//! ```

mod config;
mod connect;
mod connected;
mod event;
mod inflight;
mod subscriptions;

use std::collections::VecDeque;
use std::mem;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::{ConnAck, Connect, ConnectReturnCode, DecodeError, Packet, QoS};
use crate::session::connect::{Identity, Refusal};
use crate::session::connected::Connected;
use crate::session::subscriptions::Subscriptions;
use crate::topic::{TopicFilter, TopicName};

pub use config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_INFLIGHT_TELEMETRY, DEFAULT_MAX_KEEP_ALIVE,
    DEFAULT_MAX_PACKET_SIZE, DEFAULT_MAX_SUBSCRIPTIONS, MAX_TELEMETRY_SIZE, SessionConfig,
};
pub use event::{AuthDecision, CloseReason, SendPublishError, SessionEvent, TelemetryId};

/// How many packets a client may send after CONNECT before its CONNACK is out.
///
/// MQTT lets a client send further packets right after CONNECT without waiting for the CONNACK
/// [MQTT-3.1.4-5 and the non-normative note in §3.1.4]. [`Session::wants_read`] is false while
/// authenticating, so a driver that honours it leaves such packets in the socket and this bound
/// is never reached; it caps the memory a driver that reads anyway can make the session hold.
/// Over it, the connection closes as a protocol violation.
pub const MAX_PACKETS_BEFORE_CONNACK: usize = 16;

/// One MQTT connection, hub side.
///
/// # Driving a session
///
/// The driver owns the socket and the clock, and repeats:
///
/// 1. While [`wants_read`](Self::wants_read) is true, read bytes, [`decode`](crate::decode)
///    them with [`SessionConfig::max_packet_size`], and hand each packet to
///    [`handle_packet`](Self::handle_packet), or a decode failure to
///    [`handle_decode_error`](Self::handle_decode_error). Check `wants_read` again before each
///    packet, not only before each read: it turns false mid-buffer while authenticating or when
///    too much telemetry waits for durability (backpressure).
/// 2. After every `handle_*` call, drain [`poll_transmit`](Self::poll_transmit),
///    [`encode`](crate::encode) each packet and write it.
/// 3. Drain [`poll_event`](Self::poll_event) and act on each [`SessionEvent`]: authenticate and
///    answer with [`handle_auth_result`](Self::handle_auth_result); append telemetry to the
///    durable log and answer with [`handle_telemetry_durable`](Self::handle_telemetry_durable)
///    or [`handle_telemetry_failed`](Self::handle_telemetry_failed); persist subscriptions.
///    Answers may come later, from other tasks; drain both queues again after each one.
/// 4. Sleep until [`poll_timeout`](Self::poll_timeout) (none: no timer), then call
///    [`handle_timeout`](Self::handle_timeout). Recompute the deadline after every call: any
///    input can move it. Calling `handle_timeout` early is harmless.
/// 5. To end the session from the server side (revocation, token expiry, a newer connection for
///    the same identity, shutdown), call [`close`](Self::close).
/// 6. Once [`is_closed`](Self::is_closed) is true, write what `poll_transmit` still yields (at
///    most the CONNACK), drain the final [`SessionEvent::Closed`], and close the socket. A
///    refused CONNECT is closed this way too, right after its CONNACK.
///
/// Every input is accepted in every state: one that does not apply (a durable acknowledgement
/// after the close, an auth result while connected) is ignored. Nothing panics on any input.
///
/// # Rules
///
/// * **CONNECT first** [MQTT-3.1.0-1]: any other first packet, or none within
///   [`SessionConfig::connect_timeout`], closes the connection without an answer. A second
///   CONNECT closes it too [MQTT-3.1.0-2].
/// * **Identity** (azure-contract §4.2, §4.4): the client id must be `{deviceId}` or
///   `{deviceId}/{moduleId}`, else CONNACK 2. A user name that does not parse or names another
///   client id, or a will on a topic that is not the identity's telemetry, gets CONNACK 5.
///   Everything else, the password included, is the server's to judge.
/// * **Keep-alive** (§4.3): 1.5 × the client's keep-alive, capped at
///   [`SessionConfig::max_keep_alive`], which also applies to keep-alive 0. Every packet resets
///   it; PINGREQ gets PINGRESP.
/// * **Telemetry** (§4.7): a PUBLISH must be QoS 0 or 1 (QoS 2 closes, §4.5) on the
///   identity's own telemetry topic with a valid property bag. Another identity's topic closes
///   with [`CloseReason::Unauthorized`], any other topic with
///   [`CloseReason::ProtocolViolation`], and nothing is emitted for it. QoS 1 is acknowledged
///   only once durable, in arrival order; a redelivery of a message still waiting is dropped.
/// * **Subscriptions** (§4.5, §4.8, §4.10, §4.11): only the documented filters, for the
///   identity's own device or module, are granted (C2D to a device, inputs to a module, twin
///   and methods to both), requested QoS 2 as 1; any other filter, and any past
///   [`SessionConfig::max_subscriptions`], gets 0x80. A SUBACK is always sent.
/// * **Will** (§4.9): published (the driver does it) when an accepted connection ends any way
///   but DISCONNECT.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    out: Outputs,
}

/// The phase of the connection.
#[derive(Debug)]
enum State {
    /// Waiting for CONNECT.
    ExpectConnect {
        /// When to give up; `None` if not representable.
        deadline: Option<Instant>,
    },
    /// The server is checking the credentials.
    Authenticating(Authenticating),
    /// CONNACK 0 was sent.
    Connected(Box<Connected>),
    /// Over; the identity stays readable if it was accepted.
    Closed { identity: Option<Identity> },
}

/// What a well-formed CONNECT told us, while the server decides.
#[derive(Debug)]
struct Authenticating {
    identity: Identity,
    clean_session: bool,
    keep_alive: u16,
    has_will: bool,
    /// Packets sent after CONNECT, handled once accepted, dropped if refused [MQTT-3.1.4-5].
    early: VecDeque<Packet>,
}

/// What the session has for the driver.
#[derive(Debug, Default)]
struct Outputs {
    transmit: VecDeque<Packet>,
    events: VecDeque<SessionEvent>,
}

impl Session {
    /// A session for a connection accepted at `now`. The CONNECT must arrive by
    /// `now + connect_timeout`.
    pub fn new(now: Instant, config: SessionConfig) -> Self {
        let deadline = now.checked_add(config.connect_timeout);
        Self {
            config,
            state: State::ExpectConnect { deadline },
            out: Outputs::default(),
        }
    }

    /// Handles one packet from the client.
    ///
    /// Before the CONNACK: CONNECT emits [`SessionEvent::Authenticate`] or is refused;
    /// anything else first closes the connection. Packets that follow CONNECT are kept (up to
    /// [`MAX_PACKETS_BEFORE_CONNACK`]) and handled after acceptance.
    ///
    /// Once connected: PUBLISH emits [`SessionEvent::Telemetry`]; SUBSCRIBE is always answered
    /// with SUBACK, granting the documented filters for the identity's own device or module
    /// (requested QoS 2 as 1) and refusing other filters and those beyond
    /// [`SessionConfig::max_subscriptions`] with 0x80; UNSUBSCRIBE gets UNSUBACK; either emits
    /// [`SessionEvent::SubscriptionsChanged`] when the set changed. PUBACK completes a
    /// [`send_publish`](Self::send_publish) ([`SessionEvent::Delivered`]); PINGREQ gets
    /// PINGRESP; DISCONNECT closes without the will. PUBREC, PUBREL, PUBCOMP (QoS 2) and the
    /// packets only a server sends close the connection.
    pub fn handle_packet(&mut self, now: Instant, packet: Packet) {
        match &mut self.state {
            State::ExpectConnect { .. } => match packet {
                Packet::Connect(connect) => self.handle_connect(connect),
                other => self.close_with(CloseReason::ProtocolViolation(format!(
                    "{} before CONNECT [MQTT-3.1.0-1]",
                    other.packet_type()
                ))),
            },
            State::Authenticating(auth) => match packet {
                Packet::Connect(_) => self.close_with(CloseReason::ProtocolViolation(
                    "second CONNECT [MQTT-3.1.0-2]".to_owned(),
                )),
                _ if auth.early.len() >= MAX_PACKETS_BEFORE_CONNACK => {
                    self.close_with(CloseReason::ProtocolViolation(format!(
                        "more than {MAX_PACKETS_BEFORE_CONNACK} packets before CONNACK"
                    )));
                }
                other => auth.early.push_back(other),
            },
            State::Connected(connected) => {
                if let Err(reason) = connected.handle_packet(now, packet, &mut self.out) {
                    self.close_with(reason);
                }
            }
            State::Closed { .. } => {}
        }
    }

    /// Handles bytes that [`decode`](crate::decode) rejected. The connection closes: MQTT has
    /// no way to skip a bad packet.
    ///
    /// When the bad packet is the first one and MQTT asks for an answer
    /// ([`DecodeError::connack_code`]: protocol level other than 4 or MQTT 3.1 → CONNACK 1,
    /// empty client id without clean session → CONNACK 2), that CONNACK is sent first. A
    /// connected session publishes its will, as for any abnormal close.
    ///
    /// `now` is unused today; it is there so that every network input carries the time.
    pub fn handle_decode_error(&mut self, now: Instant, error: &DecodeError) {
        let _ = now;
        match (&self.state, error.connack_code()) {
            (State::Closed { .. }, _) => {}
            (State::ExpectConnect { .. }, Some(code)) => self.refuse(code, error.to_string()),
            _ => self.close_with(CloseReason::ProtocolViolation(error.to_string())),
        }
    }

    /// Takes the server's answer to [`SessionEvent::Authenticate`].
    ///
    /// Accepted: CONNACK 0 (with `session_present`, forced to false for a clean session), the
    /// restored subscriptions become the session's, the keep-alive starts at `now`, and the
    /// packets the client sent after CONNECT are handled. Refused: the CONNACK with that code,
    /// then close. Ignored unless the session is authenticating.
    pub fn handle_auth_result(&mut self, now: Instant, decision: AuthDecision) {
        let auth = match mem::replace(&mut self.state, State::Closed { identity: None }) {
            State::Authenticating(auth) => auth,
            other => {
                self.state = other;
                return;
            }
        };
        let (session_present, stored) = match decision {
            AuthDecision::Refused(code) => {
                let code = match code {
                    ConnectReturnCode::Accepted => ConnectReturnCode::NotAuthorized,
                    code => code,
                };
                self.state = State::Authenticating(auth);
                self.refuse(code, "refused by the server".to_owned());
                return;
            }
            // A clean session starts empty [MQTT-3.1.2-6, MQTT-3.2.2-1].
            AuthDecision::Accepted { .. } if auth.clean_session => (false, Vec::new()),
            AuthDecision::Accepted {
                session_present,
                subscriptions,
            } => (session_present, subscriptions),
        };
        let (subscriptions, trimmed) =
            Subscriptions::restore(&auth.identity, stored, self.config.max_subscriptions);
        let idle_timeout = config::idle_timeout(auth.keep_alive, self.config.max_keep_alive);
        let connected = Connected::new(
            now,
            auth.identity,
            auth.has_will,
            idle_timeout,
            subscriptions,
            self.config.max_inflight_telemetry,
        );
        self.out.transmit.push_back(Packet::ConnAck(ConnAck {
            session_present,
            code: ConnectReturnCode::Accepted,
        }));
        if trimmed {
            connected.subscriptions_changed(&mut self.out);
        }
        self.state = State::Connected(Box::new(connected));
        for packet in auth.early {
            if self.is_closed() {
                break;
            }
            self.handle_packet(now, packet);
        }
    }

    /// Reports that the telemetry message `id` is durable. The PUBACK of a QoS 1 message is
    /// queued once it and every QoS 1 message before it are durable. If this ends backpressure,
    /// the keep-alive restarts at `now`. Unknown ids (QoS 0, already acknowledged, after the
    /// close) are ignored.
    pub fn handle_telemetry_durable(&mut self, now: Instant, id: TelemetryId) {
        if let State::Connected(connected) = &mut self.state {
            connected.handle_telemetry_durable(now, id, &mut self.out);
        }
    }

    /// Reports that the telemetry message `id` could not be stored. For a QoS 1 message still
    /// waiting, the connection closes ([`CloseReason::TelemetryNotStored`]) without its PUBACK,
    /// so the client sends it again after reconnecting. For a QoS 0 message (at most once) or
    /// an unknown id, nothing happens.
    pub fn handle_telemetry_failed(&mut self, id: TelemetryId) {
        if let State::Connected(connected) = &self.state
            && connected.is_pending(id)
        {
            self.close_with(CloseReason::TelemetryNotStored);
        }
    }

    /// Reports that the server refused the telemetry message `id` (`why` says what happened:
    /// too large, over the device's budget, …). For a QoS 1 message still waiting, the
    /// connection closes ([`CloseReason::TelemetryRefused`]) without its PUBACK; for QoS 0 or an
    /// unknown id, nothing happens.
    pub fn handle_telemetry_refused(&mut self, id: TelemetryId, why: String) {
        if let State::Connected(connected) = &self.state
            && connected.is_pending(id)
        {
            self.close_with(CloseReason::TelemetryRefused(why));
        }
    }

    /// Closes on the deadline [`poll_timeout`](Self::poll_timeout) named, if `now` has reached
    /// it: no CONNECT in time ([`CloseReason::ConnectTimeout`]), or a connected client silent
    /// for its idle timeout ([`CloseReason::KeepAliveTimeout`], exactly at the deadline, not
    /// before).
    pub fn handle_timeout(&mut self, now: Instant) {
        let reason = match &self.state {
            State::ExpectConnect {
                deadline: Some(deadline),
            } if now >= *deadline => CloseReason::ConnectTimeout,
            State::Connected(connected) => match connected.handle_timeout(now) {
                Ok(()) => return,
                Err(reason) => reason,
            },
            _ => return,
        };
        self.close_with(reason);
    }

    /// Closes the session from the server side, usually with [`CloseReason::ServerClose`]:
    /// revocation, token expiry, a newer connection for the same identity (azure-contract
    /// §4.6), shutdown. A connected session publishes its will. Nothing more is sent, not even
    /// a CONNACK to a CONNECT being authenticated (to refuse one, use
    /// [`handle_auth_result`](Self::handle_auth_result)). Ignored once closed.
    pub fn close(&mut self, reason: CloseReason) {
        self.close_with(reason);
    }

    /// Sends a PUBLISH to the client: C2D, twin responses, desired-property patches, method
    /// requests.
    ///
    /// It goes out at the lower of `qos` and the QoS granted to the highest matching
    /// subscription, and at most at QoS 1. Returns the packet identifier when sent at QoS 1:
    /// [`SessionEvent::Delivered`] with it follows the client's PUBACK. Returns `Ok(None)` when
    /// sent at QoS 0: no acknowledgement will come.
    pub fn send_publish(
        &mut self,
        topic: TopicName,
        qos: QoS,
        payload: Bytes,
    ) -> Result<Option<u16>, SendPublishError> {
        self.send_publish_dup(topic, qos, payload, false)
    }

    /// [`send_publish`](Self::send_publish) with the DUP flag given: set it when the message
    /// was handed to the client before (on an earlier connection) without an acknowledgement.
    /// DUP is only sent at QoS 1.
    pub fn send_publish_dup(
        &mut self,
        topic: TopicName,
        qos: QoS,
        payload: Bytes,
        dup: bool,
    ) -> Result<Option<u16>, SendPublishError> {
        match &mut self.state {
            State::Connected(connected) => {
                connected.send_publish(topic, qos, payload, dup, &mut self.out)
            }
            _ => Err(SendPublishError::NotConnected),
        }
    }

    /// The next packet to send to the client.
    pub fn poll_transmit(&mut self) -> Option<Packet> {
        self.out.transmit.pop_front()
    }

    /// The next event for the driver. [`SessionEvent::Closed`] is the last one.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.out.events.pop_front()
    }

    /// Gives back the memory of the output queues while they are empty, so that an idle
    /// connection holds none. For the driver to call before it waits.
    pub fn release_idle_memory(&mut self) {
        if self.out.transmit.is_empty() {
            self.out.transmit = VecDeque::new();
        }
        if self.out.events.is_empty() {
            self.out.events = VecDeque::new();
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next: the CONNECT
    /// deadline, or the keep-alive deadline once connected. `None` while authenticating, while
    /// reading is paused for backpressure, and once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::ExpectConnect { deadline } => *deadline,
            State::Connected(connected) => connected.deadline(),
            State::Authenticating(_) | State::Closed { .. } => None,
        }
    }

    /// Whether the driver should decode and hand over more packets. False while the server
    /// authenticates (packets after CONNECT stay in the socket until the CONNACK), while
    /// [`SessionConfig::max_inflight_telemetry`] QoS 1 messages wait for durability, and once
    /// closed.
    pub fn wants_read(&self) -> bool {
        match &self.state {
            State::ExpectConnect { .. } => true,
            State::Connected(connected) => connected.wants_read(),
            State::Authenticating(_) | State::Closed { .. } => false,
        }
    }

    /// Whether the session is over. The driver still writes what
    /// [`poll_transmit`](Self::poll_transmit) yields and reads the events.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed { .. })
    }

    /// Whether the CONNECT was accepted and the session is not closed.
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected(_))
    }

    /// The authenticated identity, `(device id, module id)`: from acceptance on, and still after
    /// the close of an accepted session.
    pub fn identity(&self) -> Option<(&str, Option<&str>)> {
        let identity = match &self.state {
            State::Connected(connected) => &connected.identity,
            State::Closed {
                identity: Some(identity),
            } => identity,
            _ => return None,
        };
        Some((&identity.device_id, identity.module_id.as_deref()))
    }

    /// The granted subscriptions with their QoS, in the order they were granted; empty unless
    /// connected.
    pub fn subscriptions(&self) -> &[(TopicFilter, QoS)] {
        match &self.state {
            State::Connected(connected) => connected.subscriptions(),
            _ => &[],
        }
    }

    /// How many QoS 1 telemetry messages wait for their PUBACK.
    pub fn inflight_telemetry(&self) -> usize {
        match &self.state {
            State::Connected(connected) => connected.inflight_telemetry(),
            _ => 0,
        }
    }

    /// How many QoS 1 PUBLISHes from [`send_publish`](Self::send_publish) wait for the client's
    /// PUBACK. The driver bounds this (e.g. C2D messages in flight).
    pub fn outbound_in_flight(&self) -> usize {
        match &self.state {
            State::Connected(connected) => connected.outbound_in_flight(),
            _ => 0,
        }
    }

    /// The configuration the session was created with.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// A CONNECT in the `ExpectConnect` state: check it, then ask the server.
    fn handle_connect(&mut self, connect: Connect) {
        let identity = match connect::check(&connect) {
            Ok(identity) => identity,
            Err(Refusal { code, detail }) => return self.refuse(code, detail),
        };
        let has_will = connect.will.is_some();
        self.out.events.push_back(SessionEvent::Authenticate {
            device_id: identity.device_id.clone(),
            module_id: identity.module_id.clone(),
            username: connect.username,
            password: connect.password,
            clean_session: connect.clean_session,
            keep_alive: Duration::from_secs(u64::from(connect.keep_alive)),
            will: connect.will,
        });
        self.state = State::Authenticating(Authenticating {
            identity,
            clean_session: connect.clean_session,
            keep_alive: connect.keep_alive,
            has_will,
            early: VecDeque::new(),
        });
    }

    /// Sends a refusing CONNACK and closes. Only before acceptance.
    fn refuse(&mut self, code: ConnectReturnCode, detail: String) {
        self.out.transmit.push_back(Packet::ConnAck(ConnAck {
            session_present: false,
            code,
        }));
        self.close_with(CloseReason::Refused { code, detail });
    }

    /// Enters `Closed` once: drops everything not yet sent but a CONNACK, and emits the final
    /// event.
    fn close_with(&mut self, reason: CloseReason) {
        let (identity, publish_will) =
            match mem::replace(&mut self.state, State::Closed { identity: None }) {
                closed @ State::Closed { .. } => {
                    self.state = closed;
                    return;
                }
                State::Connected(connected) => {
                    let publish_will =
                        connected.has_will && reason != CloseReason::ClientDisconnect;
                    (Some(connected.identity), publish_will)
                }
                State::ExpectConnect { .. } | State::Authenticating(_) => (None, false),
            };
        self.state = State::Closed { identity };
        self.out
            .transmit
            .retain(|packet| matches!(packet, Packet::ConnAck(_)));
        self.out.events.push_back(SessionEvent::Closed {
            reason,
            publish_will,
        });
    }
}

/// `s` quoted for a log message, cut after 100 characters: topics and ids can be 64 KiB long.
fn quoted(s: &str) -> String {
    const MAX_CHARS: usize = 100;
    match s.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{:?}…", s.get(..end).unwrap_or(s)),
        None => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drained_output_queues_give_their_memory_back() {
        let now = Instant::now();
        let mut session = Session::new(now, SessionConfig::default());
        session.handle_packet(
            now,
            Packet::Connect(Connect {
                clean_session: true,
                keep_alive: 60,
                client_id: "d1".into(),
                username: Some("hub.example/d1/?api-version=2021-04-12".into()),
                password: Some(Bytes::from_static(b"SharedAccessSignature sr=x")),
                will: None,
            }),
        );
        // Queued, not yet taken: released memory must not lose it.
        session.release_idle_memory();
        let event = session.poll_event();
        assert!(
            matches!(event, Some(SessionEvent::Authenticate { .. })),
            "{event:?}"
        );
        assert!(session.out.events.capacity() > 0);
        session.release_idle_memory();
        assert_eq!(session.out.events.capacity(), 0);
        assert_eq!(session.out.transmit.capacity(), 0);
    }
}
