//! What a [`Connection`](super::Connection) tells its driver, and what the driver answers.

use std::fmt;

use bytes::Bytes;

use crate::performative::{
    AmqpError, Attach, DeliveryState, Fields, ReceiverSettleMode, SenderSettleMode, Source, Target,
};
use crate::types::Symbol;

/// Names a session for the driver. Unique within a connection, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId {
    /// The peer's channel for the session.
    pub(crate) channel: u16,
    /// A connection-wide serial, so that an id of an ended session never matches a new one
    /// on the same channel.
    pub(crate) serial: u64,
}

/// Names a link for the driver. Unique within a connection, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId {
    pub(crate) session: SessionId,
    /// The peer's handle for the link.
    pub(crate) handle: u32,
    /// A connection-wide serial: a handle the peer reuses gets a new id.
    pub(crate) serial: u64,
}

/// A delivery's id within its session (the AMQP `delivery-id`), as the driver names it in
/// [`Connection::settle`](super::Connection::settle) and sees it in
/// [`Event::Disposition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(pub(crate) u32);

/// Something the driver must know or act on, from
/// [`Connection::poll_event`](super::Connection::poll_event).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The client chose a SASL mechanism. Check the credentials (PLAIN: `\0user\0password`;
    /// EXTERNAL: the TLS client certificate; MSSBCBS and ANONYMOUS: nothing yet, auth follows
    /// on `$cbs`) and answer with
    /// [`Connection::sasl_outcome`](super::Connection::sasl_outcome). Input is not read
    /// until then.
    SaslInit {
        /// One of the offered mechanisms.
        mechanism: Symbol,
        /// The mechanism's initial response.
        initial_response: Option<Bytes>,
        /// The host the client dialled.
        hostname: Option<String>,
    },
    /// OPEN was exchanged: the connection is up. The hub's OPEN has already been sent.
    Opened {
        /// The client's container id.
        container_id: String,
        /// The host the client names (the Endpoint/HostName host, amqp-contract §1.1), for
        /// virtual hosting. Close the connection to refuse it.
        hostname: Option<String>,
        /// The SASL mechanism that authenticated the connection, `None` for a client that
        /// skipped SASL.
        sasl_mechanism: Option<Symbol>,
        /// The client's connection properties (product, version, platform, …).
        properties: Option<Fields>,
    },
    /// The peer attaches a link. Decide from its address, filter and properties, then answer
    /// with [`Connection::accept_attach`](super::Connection::accept_attach) or
    /// [`Connection::refuse_attach`](super::Connection::refuse_attach). Until then the link
    /// can neither send nor receive; frames for it wait in the engine (a FLOW's credit is
    /// remembered).
    Attach {
        /// The link.
        link: LinkId,
        /// The peer's ATTACH as sent: name, role, termini, settle modes, properties
        /// (`com.microsoft:epoch`, …), desired capabilities, max-message-size.
        attach: Box<Attach>,
    },
    /// A complete incoming delivery (reassembled from its transfer frames) on a link where
    /// the peer sends. Answer with [`Connection::settle`](super::Connection::settle) once the
    /// message is dealt with, **also when the peer sent it settled**: that frees its slot in
    /// the credit window and in [`ConnectionConfig::max_unsettled_incoming`].
    ///
    /// [`ConnectionConfig::max_unsettled_incoming`]: super::ConnectionConfig::max_unsettled_incoming
    Delivery {
        /// The link.
        link: LinkId,
        /// The delivery's id, to settle it with.
        delivery_id: DeliveryId,
        /// The peer's delivery tag.
        tag: Bytes,
        /// Whether the peer settled it already (pre-settled: no outcome travels back).
        settled: bool,
        /// The message format: 0, or [`BATCH_MESSAGE_FORMAT`](crate::message::BATCH_MESSAGE_FORMAT).
        message_format: u32,
        /// The encoded message. Decode it with
        /// [`Message::decode`](crate::message::Message::decode).
        payload: Bytes,
    },
    /// The peer changed the credit of a link where the hub sends: the hub may now
    /// [`send`](super::Connection::send) up to `credit` deliveries. Also emitted when a
    /// session that could not take a delivery (its window full, a large delivery half sent)
    /// can again.
    Credit {
        /// The link.
        link: LinkId,
        /// What [`Connection::credit`](super::Connection::credit) returns now.
        credit: u32,
        /// The peer asks to use the credit up or give it back: send what is available, then
        /// call [`Connection::drain`](super::Connection::drain).
        drain: bool,
    },
    /// The peer reported the outcome of a delivery the hub sent unsettled. A second
    /// disposition for a delivery already over is ignored (amqp-contract §2.7: rhea sends one).
    Disposition {
        /// The link the delivery was sent on.
        link: LinkId,
        /// The id [`send`](super::Connection::send) returned.
        delivery_id: DeliveryId,
        /// The outcome: accepted (complete), released or modified (abandon), rejected
        /// (dead-letter). `None` if the peer sent none.
        state: Option<DeliveryState>,
        /// Whether the delivery is over. When the peer asked to settle second, the hub
        /// settles it itself and reports `true`.
        settled: bool,
    },
    /// A link is gone: the peer detached it (the hub has answered), its session ended, or the
    /// hub detached it for a violation (message too large, transfer without credit). Not
    /// emitted for a [`detach`](super::Connection::detach) or refusal by the driver.
    Detached {
        /// The link.
        link: LinkId,
        /// Whether the link was closed rather than only detached.
        closed: bool,
        /// The peer's error, or the hub's reason.
        error: Option<AmqpError>,
        /// Whether the peer started it.
        by_peer: bool,
    },
    /// A session is gone (its links' [`Event::Detached`] came first). Not emitted for an
    /// [`end_session`](super::Connection::end_session) by the driver.
    SessionEnded {
        /// The session.
        session: SessionId,
        /// The peer's error.
        error: Option<AmqpError>,
        /// Whether the peer ended it (always, today).
        by_peer: bool,
    },
    /// The connection is over. Always the last event, emitted exactly once. Write what
    /// [`poll_transmit`](super::Connection::poll_transmit) still yields (usually a CLOSE),
    /// then close the socket.
    Closed {
        /// Why: the peer's error, or the hub's (a violation, a timeout, the driver's
        /// [`close`](super::Connection::close)). For closes before OPEN (a bad protocol
        /// header, failed SASL, a handshake timeout) the error says why although nothing was
        /// sent.
        error: Option<AmqpError>,
        /// Whether the peer sent CLOSE.
        by_peer: bool,
    },
}

/// The driver's answer to [`Event::Attach`], for
/// [`Connection::accept_attach`](super::Connection::accept_attach). The default echoes the
/// peer's termini, answers `rcv-settle-mode=first`, announces the configured max message size
/// and sends empty properties, so that the reply is full width with non-null termini
/// (amqp-contract §1.3).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AttachReply {
    /// The sender settle mode to answer; `None` echoes the peer's. Event Hubs, `$cbs` and
    /// `$management` senders answer `settled` (amqp-contract §1.3, §3.4).
    pub snd_settle_mode: Option<SenderSettleMode>,
    /// The receiver settle mode to answer. The hub settles every disposition it sends.
    pub rcv_settle_mode: ReceiverSettleMode,
    /// The source to answer with; `None` echoes the peer's (with its filter), or synthesizes
    /// an empty one if the peer sent none.
    pub source: Option<Source>,
    /// The target to answer with; `None` echoes or synthesizes as for the source.
    pub target: Option<Target>,
    /// The max-message-size to announce; `None` is
    /// [`ConnectionConfig::max_message_size`](super::ConnectionConfig::max_message_size).
    /// On a link where the peer sends, the hub also enforces it (never above the
    /// configured limit).
    pub max_message_size: Option<u64>,
    /// Offered capabilities.
    pub offered_capabilities: Option<Vec<Symbol>>,
    /// Desired capabilities.
    pub desired_capabilities: Option<Vec<Symbol>>,
    /// Link properties (empty by default, never null).
    pub properties: Fields,
    /// On a link where the peer sends: the credit window; `None` is
    /// [`ConnectionConfig::credit_window`](super::ConnectionConfig::credit_window), 0 is
    /// manual credit. Ignored where the hub sends.
    pub credit_window: Option<u32>,
}

/// Why [`Connection::send`](super::Connection::send) sent nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is not open (or no longer).
    #[error("the connection is not open")]
    NotOpen,
    /// No such link (detached, or never existed).
    #[error("unknown link")]
    UnknownLink,
    /// The link is not attached yet (no answer to its ATTACH) or is being detached.
    #[error("the link is not attached")]
    NotAttached,
    /// The hub receives on this link; it cannot send.
    #[error("the hub is not the sender on this link")]
    NotSender,
    /// The peer has granted no credit.
    #[error("no link credit")]
    NoCredit,
    /// The session still has part of an earlier delivery to send (the peer's window is
    /// full); wait for [`Event::Credit`].
    #[error("the session is still sending an earlier delivery")]
    SessionBusy,
    /// The payload exceeds the max-message-size the peer announced.
    #[error("message of {size} bytes exceeds the peer's limit of {max}")]
    MessageTooLarge {
        /// The payload's size.
        size: usize,
        /// The peer's limit.
        max: u64,
    },
    /// A delivery tag longer than 32 bytes.
    #[error("delivery tag of {0} bytes exceeds 32")]
    TagTooLong(usize),
    /// `settled` contradicts the link's sender settle mode.
    #[error("the link's settle mode forbids this delivery's settlement")]
    SettleMode,
    /// [`ConnectionConfig::max_unsettled_outgoing`](super::ConnectionConfig::max_unsettled_outgoing)
    /// unsettled deliveries await the peer's disposition.
    #[error("too many unsettled outgoing deliveries")]
    TooManyUnsettled,
}

// === impl SessionId, LinkId, DeliveryId ===

impl LinkId {
    /// The session the link belongs to.
    pub fn session(self) -> SessionId {
        self.session
    }

    /// The peer's handle for the link, for logs.
    pub fn handle(self) -> u32 {
        self.handle
    }
}

impl SessionId {
    /// The peer's channel for the session, for logs.
    pub fn channel(self) -> u16 {
        self.channel
    }
}

impl DeliveryId {
    /// The AMQP delivery-id, for logs.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session {}#{}", self.channel, self.serial)
    }
}

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "link {}/{}#{}",
            self.session.channel, self.handle, self.serial
        )
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
