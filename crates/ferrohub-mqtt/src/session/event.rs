//! What a [`Session`](super::Session) tells its driver, and what the driver answers.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use crate::codec::{ConnectReturnCode, LastWill, QoS};
use crate::topic::{PropertyBag, TopicFilter, TopicName};

/// Names one telemetry message of one session, from
/// [`SessionEvent::Telemetry`] to [`Session::handle_telemetry_durable`] or
/// [`Session::handle_telemetry_failed`].
///
/// Ids grow by one per message, starting at 1, and are unique within a session only.
///
/// [`Session::handle_telemetry_durable`]: super::Session::handle_telemetry_durable
/// [`Session::handle_telemetry_failed`]: super::Session::handle_telemetry_failed
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TelemetryId(pub(crate) u64);

/// The server's answer to [`SessionEvent::Authenticate`], given to
/// [`Session::handle_auth_result`](super::Session::handle_auth_result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDecision {
    /// The identity may connect: CONNACK 0 follows.
    Accepted {
        /// Whether a stored session was resumed. Ignored (sent as `false`) for a CONNECT with
        /// clean session 1 [MQTT-3.2.2-1].
        session_present: bool,
        /// The subscriptions persisted for this client id (azure-contract §4.5, §13 item 5),
        /// empty for a new session. They are checked again like a SUBSCRIBE and trimmed to the
        /// limit; if that changes the set, a [`SessionEvent::SubscriptionsChanged`] corrects
        /// the stored copy. Ignored for clean session 1.
        subscriptions: Vec<(TopicFilter, QoS)>,
    },
    /// The identity may not connect: CONNACK with this code, then close. Azure sends 5 (not
    /// authorized) for bad or expired credentials and unknown or disabled identities, and 3
    /// (server unavailable) for transient conditions so that the SDKs retry (azure-contract
    /// §4.4). `Refused(Accepted)` makes no sense and is sent as 5.
    Refused(ConnectReturnCode),
}

/// Something the driver must act on, from [`Session::poll_event`](super::Session::poll_event).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// A well-formed CONNECT arrived: check the credentials and answer with
    /// [`Session::handle_auth_result`](super::Session::handle_auth_result). The client id has
    /// been parsed, the user name (if any) matched against it and the will (if any) checked;
    /// the credentials have not.
    Authenticate {
        /// The device id from the client id.
        device_id: String,
        /// The module id, for a client id `{deviceId}/{moduleId}`.
        module_id: Option<String>,
        /// The user name as sent (`{host}/{clientId}/?api-version=…`), for the server to log or
        /// to read the model id from.
        username: Option<String>,
        /// The password as sent: a SAS token, or absent for X.509 (azure-contract §4.2). The
        /// session does not refuse a missing password; the server does (CONNACK 5), unless
        /// the TLS layer authenticated the device.
        password: Option<Bytes>,
        /// Whether the client asked for a clean session. With `false` (what the SDKs send), the
        /// server restores and persists subscriptions under the client id.
        clean_session: bool,
        /// The keep-alive the client asked for; zero means none. The session enforces it.
        keep_alive: Duration,
        /// The will. Its topic has been checked to be this identity's telemetry topic with a
        /// valid property bag, so `TelemetryTopic::parse` on it succeeds (azure-contract §4.9).
        will: Option<LastWill>,
    },
    /// A device-to-cloud message from the authenticated identity (azure-contract §4.7). Append
    /// it to the durable log, then call
    /// [`Session::handle_telemetry_durable`](super::Session::handle_telemetry_durable) or
    /// [`Session::handle_telemetry_failed`](super::Session::handle_telemetry_failed). For QoS 0
    /// those calls may be skipped: they change nothing.
    Telemetry {
        /// The id to acknowledge it with.
        id: TelemetryId,
        /// QoS 1 messages are acknowledged (PUBACK) only once durable.
        qos: QoS,
        /// The MQTT retain flag: the hub does not retain, it adds the application property
        /// `mqtt-retain` (azure-contract §4.7).
        retain: bool,
        /// The authenticated device id (equal to the one in the topic).
        device_id: String,
        /// The authenticated module id (equal to the one in the topic).
        module_id: Option<String>,
        /// The decoded property bag from the topic. Hub-stamped properties are the server's job.
        properties: PropertyBag,
        /// The message body.
        payload: Bytes,
    },
    /// The session's subscriptions changed (SUBSCRIBE, UNSUBSCRIBE, or a trimmed restore). The
    /// full current set, in subscription order: persist it under the client id when the session
    /// is not clean, and deliver C2D, method and twin traffic only on matching filters.
    SubscriptionsChanged {
        /// Every granted filter with its granted QoS.
        subscriptions: Vec<(TopicFilter, QoS)>,
    },
    /// A request of the identity on the hub's own topics (azure-contract §4.10, §4.11): a twin
    /// GET (`$iothub/twin/GET/?$rid=…`), a reported-properties patch
    /// (`$iothub/twin/PATCH/properties/reported/?$rid=…`) or a direct method's response
    /// (`$iothub/methods/res/{status}/?$rid=…`). A QoS 1 request is acknowledged at once, in
    /// order with the telemetry before it: the answer travels on its own topic, which the
    /// server sends with [`Session::send_publish`](super::Session::send_publish).
    Request {
        /// The topic as published, with its `?$rid=…` query.
        topic: TopicName,
        /// The body: JSON (a single space for a twin GET).
        payload: Bytes,
    },
    /// The client acknowledged (PUBACK) the QoS 1 PUBLISH sent by
    /// [`Session::send_publish`](super::Session::send_publish) under this packet id. For C2D
    /// this completes the message (azure-contract §4.8).
    Delivered {
        /// The packet identifier `send_publish` returned.
        pkid: u16,
    },
    /// The session is over. Always the last event, emitted exactly once. Send what
    /// [`Session::poll_transmit`](super::Session::poll_transmit) still yields, then close the
    /// socket.
    Closed {
        /// Why.
        reason: CloseReason,
        /// Whether to publish the CONNECT's will as telemetry, with the application property
        /// `iothub-MessageType=Will` (azure-contract §4.9): true when an authenticated
        /// connection that gave a will ends other than by DISCONNECT.
        publish_will: bool,
    },
}

/// Why a session closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent DISCONNECT; the will is discarded [MQTT-3.14.4-3].
    ClientDisconnect,
    /// The client sent nothing for 1.5 × its keep-alive (azure-contract §4.3). Azure logs this
    /// as `404104 DeviceConnectionClosedRemotely`.
    KeepAliveTimeout,
    /// The first packet did not arrive within
    /// [`SessionConfig::connect_timeout`](super::SessionConfig::connect_timeout).
    ConnectTimeout,
    /// The client broke MQTT 3.1.1 or the hub's profile of it: a first packet other than
    /// CONNECT, a second CONNECT, a QoS 2 PUBLISH, an unsupported topic, a malformed packet.
    /// The text says which.
    ProtocolViolation(String),
    /// The CONNECT was refused with a CONNACK carrying `code`, by the session (client id, user
    /// name, will, protocol level) or by the server through
    /// [`AuthDecision::Refused`].
    Refused {
        /// The CONNACK return code sent.
        code: ConnectReturnCode,
        /// Why, for the log.
        detail: String,
    },
    /// The client published for an identity other than its own, e.g. another device's
    /// telemetry topic (the anti-spoofing rule).
    Unauthorized(String),
    /// The server could not store a QoS 1 telemetry message, so it closed the connection
    /// without acknowledging it; the client sends it again after reconnecting.
    TelemetryNotStored,
    /// The server refused a QoS 1 telemetry message for a reason of its own (too large for the
    /// hub's limit, the device over its budget, …), so it closed the connection without
    /// acknowledging it. The text says why.
    TelemetryRefused(String),
    /// The server closed the session with [`Session::close`](super::Session::close):
    /// revocation, token expiry, a newer connection for the same identity (azure-contract
    /// §4.6), shutdown.
    ServerClose(String),
}

/// Why [`Session::send_publish`](super::Session::send_publish) sent nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendPublishError {
    /// The session is not (or no longer) connected.
    #[error("the session is not connected")]
    NotConnected,
    /// No granted subscription matches the topic, so MQTT does not allow delivering it.
    #[error("the client has no subscription matching the topic")]
    NotSubscribed,
    /// All 65535 packet identifiers are waiting for a PUBACK.
    #[error("no free packet identifier")]
    NoPacketId,
}

// === impl TelemetryId ===

impl TelemetryId {
    /// The id as a number, for logs.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TelemetryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

// === impl CloseReason ===

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientDisconnect => f.write_str("the client disconnected"),
            Self::KeepAliveTimeout => f.write_str("keep-alive timeout"),
            Self::ConnectTimeout => f.write_str("no CONNECT in time"),
            Self::ProtocolViolation(why) => write!(f, "protocol violation: {why}"),
            Self::Refused { code, detail } => {
                write!(f, "connection refused ({}): {detail}", *code as u8)
            }
            Self::Unauthorized(why) => write!(f, "unauthorized: {why}"),
            Self::TelemetryNotStored => f.write_str("telemetry could not be stored"),
            Self::TelemetryRefused(why) => write!(f, "telemetry refused: {why}"),
            Self::ServerClose(why) => write!(f, "closed by the server: {why}"),
        }
    }
}
