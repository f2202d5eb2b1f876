//! Why bytes are not valid AMQP, and why a value cannot be encoded.

use crate::condition;
use crate::types::Symbol;

/// Why decoding failed: a value, a performative, a message section or a message.
///
/// Every variant names what was wrong, not where in the stream: the caller knows that. The
/// engine answers all of them by closing the connection with [`condition`](Self::condition).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ends inside a value. Inside a frame this means a wrong size somewhere.
    #[error("input ends in the middle of a value")]
    UnexpectedEnd,
    /// A constructor byte that is no AMQP format code (or a descriptor nested in an array
    /// constructor, which the hub does not support).
    #[error("invalid format code {0:#04x}")]
    InvalidFormatCode(u8),
    /// A `string` or `symbol` that is not UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A `char` that is not a Unicode scalar value.
    #[error("invalid char {0:#x}")]
    InvalidChar(u32),
    /// A 0x56 `boolean` whose byte is neither 0 nor 1.
    #[error("invalid boolean byte {0:#04x}")]
    InvalidBoolean(u8),
    /// A compound value whose declared size disagrees with its content (bytes left over, or a
    /// size too small to hold its count).
    #[error("compound value size does not match its content")]
    SizeMismatch,
    /// A compound value declares more elements than its bytes can hold, or the input would
    /// make the decoder create more values than its length justifies (zero-width array
    /// elements). Refused before allocating.
    #[error("declared element count {0} is more than the input can hold")]
    TooManyElements(u64),
    /// A map with an odd number of elements.
    #[error("map with an odd element count {0}")]
    OddMapCount(u64),
    /// Values nested deeper than [`MAX_DEPTH`](crate::types::MAX_DEPTH).
    #[error("values nested more than {} deep", crate::types::MAX_DEPTH)]
    TooDeep,
    /// Bytes follow the last value where nothing may follow.
    #[error("trailing bytes after the value")]
    TrailingBytes,
    /// A described value whose descriptor is not the one expected here (e.g. a message section
    /// code in a frame body).
    #[error("unexpected descriptor for {expected}: {found}")]
    UnexpectedDescriptor {
        /// What was expected, e.g. "performative".
        expected: &'static str,
        /// The descriptor found, for the log.
        found: String,
    },
    /// A composite's body is not a list, or a value that must be described is not.
    #[error("{0} is not a described list")]
    NotAList(&'static str),
    /// A mandatory field is null or absent.
    #[error("{composite}.{field} is mandatory")]
    MissingField {
        /// The composite type, e.g. "attach".
        composite: &'static str,
        /// The field, e.g. "handle".
        field: &'static str,
    },
    /// A field has a type or value the specification does not allow.
    #[error("{composite}.{field} has an invalid value")]
    InvalidField {
        /// The composite type.
        composite: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A message section appears twice, or body sections of different kinds are mixed.
    #[error("invalid message section sequence: {0}")]
    InvalidSections(&'static str),
}

impl DecodeError {
    /// The AMQP error condition to close the connection with: `amqp:invalid-field` for a field
    /// with a bad value, `amqp:decode-error` for everything else (a missing mandatory field
    /// included, as the specification asks).
    pub fn condition(&self) -> Symbol {
        match self {
            Self::InvalidField { .. } => condition::INVALID_FIELD,
            _ => condition::DECODE_ERROR,
        }
    }
}

/// Why a value could not be encoded. Nothing is left in the buffer then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A value, or a compound's content or element count, exceeds the 2³²−1 bytes AMQP's
    /// widest encodings can express.
    #[error("value of {0} bytes or elements is too large for AMQP")]
    TooLarge(usize),
}
