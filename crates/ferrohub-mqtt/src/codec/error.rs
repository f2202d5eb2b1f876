//! Why a byte stream is not a valid MQTT 3.1.1 packet, and why a packet cannot be encoded.

use crate::codec::{ConnectReturnCode, PacketType};
use crate::topic::TopicError;

/// Why [`decode`](super::decode) rejected its input.
///
/// Every variant is fatal for the connection: MQTT 3.1.1 has no way to skip a bad packet. Where
/// the specification asks for a CONNACK before closing, [`DecodeError::connack_code`] says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The first byte names packet type 0 or 15, which MQTT reserves. Likely cause: the peer does
    /// not speak MQTT (TLS or HTTP on the MQTT port) or the stream lost its framing.
    #[error("reserved packet type {0}")]
    InvalidPacketType(u8),
    /// The low nibble of the first byte is not what the specification fixes for this packet type
    /// [MQTT-2.2.2-1], e.g. SUBSCRIBE without 0b0010. Likely cause: a buggy or non-3.1.1 client.
    #[error("{packet_type} with reserved header flags {flags:#06b}")]
    InvalidHeaderFlags {
        /// The packet type.
        packet_type: PacketType,
        /// The low nibble of the first byte.
        flags: u8,
    },
    /// The remaining length continues past its fourth byte. Likely cause: garbage on the wire.
    #[error("malformed remaining length (more than 4 bytes)")]
    MalformedRemainingLength,
    /// The remaining length exceeds the limit passed to `decode`. Checked before any byte of the
    /// body is buffered. Likely cause: an oversized message, or an attack.
    #[error("packet of {size} bytes exceeds the limit of {max}")]
    PacketTooLarge {
        /// The declared remaining length.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A field runs past the end announced by the remaining length. Likely cause: a wrong length
    /// prefix or remaining length in a hand-built packet.
    #[error("{0} ends in the middle of a field")]
    UnexpectedEnd(PacketType),
    /// Bytes are left after the last field. Likely cause: a wrong remaining length, or an MQTT 5
    /// packet with properties.
    #[error("{0} has bytes after its last field")]
    TrailingBytes(PacketType),
    /// CONNECT whose protocol name is neither "MQTT" nor "MQIsdp" [MQTT-3.1.2-1]. Likely cause: not
    /// an MQTT client. The server closes without CONNACK.
    #[error("unknown protocol name in CONNECT")]
    InvalidProtocolName,
    /// CONNECT with protocol name "MQTT" but a level other than 4. Likely cause: an MQTT 5 client
    /// (level 5). Answer with CONNACK 1 [MQTT-3.1.2-2].
    #[error("unsupported MQTT protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// CONNECT with protocol name "MQIsdp": an MQTT 3.1 client. Answer with CONNACK 1.
    #[error("MQTT 3.1 (MQIsdp) is not supported")]
    Mqtt31,
    /// The reserved bit 0 of the CONNECT flags is set [MQTT-3.1.2-3].
    #[error("reserved CONNECT flag set")]
    ConnectReservedFlag,
    /// Will QoS or will retain set without the will flag [MQTT-3.1.2-11, MQTT-3.1.2-15].
    #[error("will QoS or retain set without a will")]
    InvalidWillFlags,
    /// CONNECT with the password flag but without the user-name flag [MQTT-3.1.2-22].
    #[error("password without user name")]
    PasswordWithoutUsername,
    /// CONNECT with an empty client identifier and clean session 0. Answer with CONNACK 2
    /// [MQTT-3.1.3-8].
    #[error("empty client identifier without clean session")]
    EmptyClientId,
    /// QoS 3 in a PUBLISH header or a will [MQTT-3.3.1-4].
    #[error("invalid QoS {0}")]
    InvalidQoS(u8),
    /// PUBLISH with DUP set and QoS 0 [MQTT-3.3.1-2].
    #[error("DUP set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    /// A packet identifier of 0 [MQTT-2.3.1-1]. Likely cause: a client that numbers from 0.
    #[error("{0} with packet identifier 0")]
    PacketIdZero(PacketType),
    /// A string field is not valid UTF-8 [MQTT-1.5.3-1].
    #[error("string field is not valid UTF-8")]
    InvalidUtf8,
    /// A string field contains U+0000 [MQTT-1.5.3-2].
    #[error("string field contains U+0000")]
    NullCharacter,
    /// A PUBLISH or will topic is not a valid topic name (empty, or has wildcards).
    #[error("invalid topic name: {0}")]
    InvalidTopicName(TopicError),
    /// A SUBSCRIBE or UNSUBSCRIBE filter is not a valid topic filter.
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(TopicError),
    /// SUBSCRIBE or UNSUBSCRIBE without any filter [MQTT-3.8.3-3, MQTT-3.10.3-2].
    #[error("{0} without topic filters")]
    NoTopicFilters(PacketType),
    /// SUBACK without any return code.
    #[error("SUBACK without return codes")]
    NoReturnCodes,
    /// A SUBSCRIBE requested-QoS byte with reserved bits set or QoS 3 [MQTT-3.8.3-4].
    #[error("invalid requested QoS byte {0:#04x}")]
    InvalidRequestedQoS(u8),
    /// CONNACK acknowledge flags with reserved bits set [MQTT-3.2.2-1], or session present
    /// together with a refusal [MQTT-3.2.2-4].
    #[error("invalid CONNACK flags {0:#04x}")]
    InvalidConnAckFlags(u8),
    /// CONNACK return code above 5.
    #[error("reserved CONNACK return code {0}")]
    InvalidConnectReturnCode(u8),
    /// SUBACK return code other than 0, 1, 2 or 0x80 [MQTT-3.9.3-2].
    #[error("invalid SUBACK return code {0:#04x}")]
    InvalidSubAckReturnCode(u8),
}

impl DecodeError {
    /// The CONNACK code to send before closing, for the errors where MQTT asks for one.
    pub fn connack_code(&self) -> Option<ConnectReturnCode> {
        match self {
            Self::UnsupportedProtocolLevel(_) | Self::Mqtt31 => {
                Some(ConnectReturnCode::RefusedProtocolVersion)
            }
            Self::EmptyClientId => Some(ConnectReturnCode::IdentifierRejected),
            _ => None,
        }
    }
}

/// Why [`encode`](super::encode) refused a packet. Nothing is written to the buffer then.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A packet identifier of 0, which MQTT forbids.
    #[error("{0} with packet identifier 0")]
    PacketIdZero(PacketType),
    /// A QoS 1 or 2 PUBLISH without a packet identifier.
    #[error("QoS > 0 PUBLISH without packet identifier")]
    MissingPacketId,
    /// A QoS 0 PUBLISH with a packet identifier.
    #[error("QoS 0 PUBLISH with a packet identifier")]
    UnexpectedPacketId,
    /// DUP set on a QoS 0 PUBLISH.
    #[error("DUP set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    /// A string or binary field is longer than 65535 bytes.
    #[error("{field} is {len} bytes long, more than 65535")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// A string field contains U+0000.
    #[error("{0} contains U+0000")]
    NullCharacter(&'static str),
    /// The packet body exceeds the 268,435,455 bytes a remaining length can express.
    #[error("packet body of {0} bytes is too large for MQTT")]
    PacketTooLarge(usize),
    /// SUBSCRIBE or UNSUBSCRIBE without filters.
    #[error("{0} without topic filters")]
    NoTopicFilters(PacketType),
    /// SUBACK without return codes.
    #[error("SUBACK without return codes")]
    NoReturnCodes,
    /// CONNECT with a password but no user name.
    #[error("password without user name")]
    PasswordWithoutUsername,
    /// CONNECT with an empty client identifier and clean session 0.
    #[error("empty client identifier without clean session")]
    EmptyClientId,
    /// CONNACK with session present and a refusal code.
    #[error("session present on a refused CONNACK")]
    SessionPresentOnRefusal,
}
