//! Limits, timeouts and the SASL policy of one [`Connection`](super::Connection).

use std::time::Duration;

use crate::types::Symbol;

/// Default [`ConnectionConfig::max_frame_size`]: 64 KiB, what Azure's front ends announce.
/// A 1 MiB event goes out in 16 frames.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 64 * 1024;

/// Default [`ConnectionConfig::max_message_size`]: 1 MiB, the Event Hubs limit
/// (amqp-contract §3.4, §6). Azure IoT Hub's own limits (256 KB telemetry, 64 KB C2D) are
/// smaller and the hub checks them per message.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 1024 * 1024;

/// Default [`ConnectionConfig::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default [`ConnectionConfig::idle_timeout`]: Azure closes AMQP connections idle for 240 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(240);

/// The SASL mechanisms Azure's front ends offer, in their order (amqp-contract §1.1).
pub const AZURE_SASL_MECHANISMS: [Symbol; 4] = [
    Symbol::from_static("MSSBCBS"),
    Symbol::from_static("PLAIN"),
    Symbol::from_static("ANONYMOUS"),
    Symbol::from_static("EXTERNAL"),
];

/// Which security layers a connection accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslPolicy {
    /// The mechanisms offered after `AMQP 3 1 0 0`, in order. Empty: SASL is refused, and a
    /// client sending the SASL header is answered with `AMQP 0 1 0 0` and closed.
    pub mechanisms: Vec<Symbol>,
    /// Whether a client may start with `AMQP 0 1 0 0`, skipping SASL. The Node IoT SDKs and the
    /// JS Event Hubs SDK with a SAS string always do (amqp-contract §0); such a connection is
    /// anonymous until it puts a token on `$cbs`, which is the hub's to enforce.
    pub allow_no_sasl: bool,
}

impl Default for SaslPolicy {
    /// Azure's mechanisms, and no-SASL accepted.
    fn default() -> Self {
        Self {
            mechanisms: AZURE_SASL_MECHANISMS.to_vec(),
            allow_no_sasl: true,
        }
    }
}

/// Limits and timeouts of one connection.
///
/// Odd values give well-defined behaviour and never a panic: a max-frame-size below 512 is
/// raised to 512 (the specification's minimum), zero limits refuse what they limit, zero
/// windows are raised to 1. Rejecting such values is the server configuration's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// The container id the hub announces in its OPEN.
    pub container_id: String,
    /// The largest frame the hub accepts, announced in OPEN. A frame declaring more closes the
    /// connection with `amqp:connection:framing-error` before its body is buffered. Applies
    /// from the first frame (SASL included), which is laxer than the specification's 512
    /// bytes before OPEN: some clients' OPEN and SASL PLAIN frames are larger.
    pub max_frame_size: u32,
    /// The highest channel number the hub accepts, announced in OPEN.
    pub channel_max: u16,
    /// The most sessions one connection may have at once. One more closes the connection with
    /// `amqp:resource-limit-exceeded`.
    pub max_sessions: usize,
    /// The most links one session may have at once; the hub announces `handle-max` as one
    /// less, and a handle above it closes the connection with
    /// `amqp:connection:framing-error` as the specification asks.
    pub max_links_per_session: u32,
    /// How long the peer may stay silent once OPEN is exchanged, announced as the hub's
    /// `idle-time-out`. After that long without a frame the connection closes with
    /// `amqp:resource-limit-exceeded`. `None`: no idle timeout.
    pub idle_timeout: Option<Duration>,
    /// How long the protocol headers, SASL and OPEN may take from the connection's start.
    pub handshake_timeout: Duration,
    /// The largest message the hub reassembles from incoming transfers; a larger one detaches
    /// its link with `amqp:link:message-size-exceeded`. Also the `max-message-size` the hub
    /// announces on its links unless the driver's reply says otherwise.
    pub max_message_size: u64,
    /// The session incoming window the hub announces (transfer frames the peer may send
    /// before the hub reopens the window). Reopened when half used.
    pub session_window: u32,
    /// The default credit window on links where the peer sends: the hub keeps up to this many
    /// deliveries granted or awaiting the driver, topping the credit up as the driver settles.
    /// 0: no automatic credit; the driver grants it with
    /// [`Connection::grant_credit`](super::Connection::grant_credit).
    pub credit_window: u32,
    /// How many incoming deliveries may await [`Connection::settle`](super::Connection::settle)
    /// at once. When reached, [`Connection::wants_read`](super::Connection::wants_read) turns
    /// false and input stops being consumed until the driver settles one. Their payloads are
    /// the driver's, so this times the max message size bounds what a connection makes the
    /// driver hold.
    pub max_unsettled_incoming: usize,
    /// How many ATTACHes may await the driver's answer at once. When reached,
    /// [`Connection::wants_read`](super::Connection::wants_read) turns false until one is
    /// answered: each holds the peer's ATTACH (up to a frame) until then.
    pub max_pending_attaches: usize,
    /// How many bytes of incoming deliveries still arriving (multi-frame) the connection holds
    /// at once, over all its links. A frame that would exceed it detaches its link with
    /// `amqp:resource-limit-exceeded`.
    pub max_reassembly_bytes: usize,
    /// How many unsettled outgoing deliveries may await the peer's disposition at once;
    /// [`Connection::send`](super::Connection::send) refuses further unsettled sends.
    pub max_unsettled_outgoing: usize,
    /// Which security layers are accepted.
    pub sasl: SaslPolicy,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            container_id: "ferrohub".to_owned(),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            channel_max: 255,
            max_sessions: 256,
            max_links_per_session: 64,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            session_window: 5000,
            credit_window: 100,
            max_unsettled_incoming: 256,
            max_pending_attaches: 16,
            max_reassembly_bytes: 4 * 1024 * 1024,
            max_unsettled_outgoing: 5000,
            sasl: SaslPolicy::default(),
        }
    }
}
