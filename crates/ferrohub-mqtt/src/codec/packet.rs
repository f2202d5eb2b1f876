//! The fourteen MQTT 3.1.1 control packets as plain Rust values.
//!
//! Fields are public. What the types cannot express (packet identifiers are non-zero, strings
//! hold no U+0000 and fit in 65535 bytes, lists are non-empty) is checked by
//! [`encode`](super::encode), which refuses such packets, and by [`decode`](super::decode), which
//! never produces them.

use std::fmt;

use bytes::Bytes;

use crate::topic::{TopicFilter, TopicName};

/// An MQTT 3.1.1 control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Client request to open a session.
    Connect(Connect),
    /// Server answer to CONNECT.
    ConnAck(ConnAck),
    /// An application message, in either direction.
    Publish(Publish),
    /// Acknowledges a QoS 1 PUBLISH.
    PubAck(PubAck),
    /// First acknowledgement of a QoS 2 PUBLISH.
    PubRec(PubRec),
    /// Answer to PUBREC.
    PubRel(PubRel),
    /// Answer to PUBREL, the end of a QoS 2 exchange.
    PubComp(PubComp),
    /// Client request to add subscriptions.
    Subscribe(Subscribe),
    /// Server answer to SUBSCRIBE.
    SubAck(SubAck),
    /// Client request to remove subscriptions.
    Unsubscribe(Unsubscribe),
    /// Server answer to UNSUBSCRIBE.
    UnsubAck(UnsubAck),
    /// Client keep-alive probe.
    PingReq,
    /// Server answer to PINGREQ.
    PingResp,
    /// Client announcement that it closes the connection cleanly.
    Disconnect,
}

/// The packet type, the high nibble of the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// CONNECT (1).
    Connect = 1,
    /// CONNACK (2).
    ConnAck = 2,
    /// PUBLISH (3).
    Publish = 3,
    /// PUBACK (4).
    PubAck = 4,
    /// PUBREC (5).
    PubRec = 5,
    /// PUBREL (6).
    PubRel = 6,
    /// PUBCOMP (7).
    PubComp = 7,
    /// SUBSCRIBE (8).
    Subscribe = 8,
    /// SUBACK (9).
    SubAck = 9,
    /// UNSUBSCRIBE (10).
    Unsubscribe = 10,
    /// UNSUBACK (11).
    UnsubAck = 11,
    /// PINGREQ (12).
    PingReq = 12,
    /// PINGRESP (13).
    PingResp = 13,
    /// DISCONNECT (14).
    Disconnect = 14,
}

/// Quality of service of a message or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum QoS {
    /// 0: fire and forget.
    AtMostOnce = 0,
    /// 1: acknowledged with PUBACK.
    AtLeastOnce = 1,
    /// 2: PUBREC, PUBREL, PUBCOMP handshake.
    ExactlyOnce = 2,
}

/// CONNECT. The protocol name and level are not stored: the decoder only accepts "MQTT" level 4
/// and the encoder always writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Whether the server discards any previous session. Azure SDKs send `false`.
    pub clean_session: bool,
    /// Keep-alive interval in seconds; 0 disables it.
    pub keep_alive: u16,
    /// The client identifier; for Azure `{deviceId}` or `{deviceId}/{moduleId}`.
    pub client_id: String,
    /// User name; for Azure `{host}/{clientId}/?api-version=…`.
    pub username: Option<String>,
    /// Password, binary in MQTT; for Azure a SAS token. Only allowed with a user name.
    pub password: Option<Bytes>,
    /// Message the server publishes if the connection drops without DISCONNECT.
    pub will: Option<LastWill>,
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Where the will is published.
    pub topic: TopicName,
    /// The will payload.
    pub message: Bytes,
    /// QoS of the will publication.
    pub qos: QoS,
    /// Whether the will is retained.
    pub retain: bool,
}

/// CONNACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server resumed a stored session. Must be `false` when `code` refuses.
    pub session_present: bool,
    /// Accepted, or why not.
    pub code: ConnectReturnCode,
}

/// The CONNACK return code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnectReturnCode {
    /// 0: connection accepted.
    Accepted = 0,
    /// 1: the server does not support the requested protocol level.
    RefusedProtocolVersion = 1,
    /// 2: the client identifier is not allowed.
    IdentifierRejected = 2,
    /// 3: the service is unavailable; SDKs retry.
    ServerUnavailable = 3,
    /// 4: malformed user name or password.
    BadUsernameOrPassword = 4,
    /// 5: not authorized; what Azure IoT Hub sends for bad credentials.
    NotAuthorized = 5,
}

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Redelivery flag; only allowed with QoS 1 or 2.
    pub dup: bool,
    /// Delivery guarantee.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Where the message is published.
    pub topic: TopicName,
    /// Packet identifier: `Some` (non-zero) exactly when `qos` is 1 or 2.
    pub pkid: Option<u16>,
    /// The application message; when decoded, shares the receive buffer.
    pub payload: Bytes,
}

/// PUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubAck {
    /// The acknowledged packet identifier (non-zero).
    pub pkid: u16,
}

/// PUBREC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubRec {
    /// The acknowledged packet identifier (non-zero).
    pub pkid: u16,
}

/// PUBREL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubRel {
    /// The released packet identifier (non-zero).
    pub pkid: u16,
}

/// PUBCOMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubComp {
    /// The completed packet identifier (non-zero).
    pub pkid: u16,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier (non-zero).
    pub pkid: u16,
    /// At least one filter with its requested maximum QoS.
    pub filters: Vec<(TopicFilter, QoS)>,
}

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The acknowledged packet identifier (non-zero).
    pub pkid: u16,
    /// One code per filter of the SUBSCRIBE, in order; at least one.
    pub return_codes: Vec<SubscribeReturnCode>,
}

/// One entry of a SUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscribeReturnCode {
    /// Subscribed, with the granted maximum QoS.
    Success(QoS),
    /// 0x80: the subscription was refused.
    Failure,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier (non-zero).
    pub pkid: u16,
    /// At least one filter to remove.
    pub filters: Vec<TopicFilter>,
}

/// UNSUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsubAck {
    /// The acknowledged packet identifier (non-zero).
    pub pkid: u16,
}

// === impl Packet ===

impl Packet {
    /// The type of this packet.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect => PacketType::Disconnect,
        }
    }
}

// === impl PacketType ===

impl PacketType {
    /// Maps the high nibble of the first byte; `None` for the reserved values 0 and 15.
    pub fn from_nibble(nibble: u8) -> Option<Self> {
        Some(match nibble {
            1 => Self::Connect,
            2 => Self::ConnAck,
            3 => Self::Publish,
            4 => Self::PubAck,
            5 => Self::PubRec,
            6 => Self::PubRel,
            7 => Self::PubComp,
            8 => Self::Subscribe,
            9 => Self::SubAck,
            10 => Self::Unsubscribe,
            11 => Self::UnsubAck,
            12 => Self::PingReq,
            13 => Self::PingResp,
            14 => Self::Disconnect,
            _ => return None,
        })
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "CONNECT",
            Self::ConnAck => "CONNACK",
            Self::Publish => "PUBLISH",
            Self::PubAck => "PUBACK",
            Self::PubRec => "PUBREC",
            Self::PubRel => "PUBREL",
            Self::PubComp => "PUBCOMP",
            Self::Subscribe => "SUBSCRIBE",
            Self::SubAck => "SUBACK",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::UnsubAck => "UNSUBACK",
            Self::PingReq => "PINGREQ",
            Self::PingResp => "PINGRESP",
            Self::Disconnect => "DISCONNECT",
        })
    }
}

// === impl QoS ===

impl QoS {
    /// Maps 0, 1 and 2; `None` for anything else (3 is reserved).
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

// === impl ConnectReturnCode ===

impl ConnectReturnCode {
    /// Maps 0 to 5; `None` for the reserved values.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::Accepted,
            1 => Self::RefusedProtocolVersion,
            2 => Self::IdentifierRejected,
            3 => Self::ServerUnavailable,
            4 => Self::BadUsernameOrPassword,
            5 => Self::NotAuthorized,
            _ => return None,
        })
    }
}

// === impl SubscribeReturnCode ===

impl SubscribeReturnCode {
    /// The byte on the wire: the granted QoS or 0x80.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Success(qos) => qos as u8,
            Self::Failure => 0x80,
        }
    }

    /// Maps 0, 1, 2 and 0x80; `None` for anything else.
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            0x80 => Some(Self::Failure),
            v => QoS::from_u8(v).map(Self::Success),
        }
    }
}
