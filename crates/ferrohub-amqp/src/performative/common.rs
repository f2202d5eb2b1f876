//! Types shared by several performatives: roles, settle modes, `fields` maps, errors and
//! delivery states.

use std::fmt;

use bytes::BytesMut;

use crate::performative::fields::{FieldReader, atomically, described_list, put};
use crate::types::{DecodeError, EncodeError, Symbol, Value, encode};

/// Which end of a link an ATTACH or DISPOSITION speaks for. On the wire a boolean: `false` is
/// the sender, `true` the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The end that sends messages.
    Sender,
    /// The end that receives them.
    Receiver,
}

impl Role {
    /// The other end.
    pub fn opposite(self) -> Self {
        match self {
            Self::Sender => Self::Receiver,
            Self::Receiver => Self::Sender,
        }
    }

    pub(crate) fn from_bool(receiver: bool) -> Self {
        if receiver {
            Self::Receiver
        } else {
            Self::Sender
        }
    }

    pub(crate) fn as_bool(self) -> bool {
        self == Self::Receiver
    }
}

/// How the sender of a link settles (part 2 §2.8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SenderSettleMode {
    /// 0: every delivery is sent unsettled; the receiver's disposition settles it.
    Unsettled,
    /// 1: every delivery is sent settled ("pre-settled", fire and forget). What the hub uses
    /// for Event Hubs, `$cbs` and `$management` replies (amqp-contract §1.3).
    Settled,
    /// 2: the sender chooses per delivery. The specification's default.
    #[default]
    Mixed,
}

impl SenderSettleMode {
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Unsettled),
            1 => Some(Self::Settled),
            2 => Some(Self::Mixed),
            _ => None,
        }
    }

    pub(crate) fn as_u8(self) -> u8 {
        match self {
            Self::Unsettled => 0,
            Self::Settled => 1,
            Self::Mixed => 2,
        }
    }

    /// Whether a delivery sent with `settled` is allowed in this mode.
    pub fn allows(self, settled: bool) -> bool {
        match self {
            Self::Unsettled => !settled,
            Self::Settled => settled,
            Self::Mixed => true,
        }
    }
}

/// How the receiver of a link settles (part 2 §2.8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReceiverSettleMode {
    /// 0: the receiver settles as soon as it has an outcome. The default, and what the hub
    /// answers as a receiver (amqp-contract §1.3: uamqp asks for `second` but completes only on
    /// a settled disposition).
    #[default]
    First,
    /// 1: the receiver waits for the sender to settle first.
    Second,
}

impl ReceiverSettleMode {
    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::First),
            1 => Some(Self::Second),
            _ => None,
        }
    }

    pub(crate) fn as_u8(self) -> u8 {
        match self {
            Self::First => 0,
            Self::Second => 1,
        }
    }
}

/// An AMQP `fields` map: symbol keys in wire order (link and connection properties, filter
/// sets, error info).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fields(Vec<(Symbol, Value)>);

impl Fields {
    /// An empty map (what the hub sends as ATTACH properties so the frame is full width).
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// The value under `key`, compared exactly.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key` to `value`, replacing an existing entry in place or appending a new one.
    pub fn insert(&mut self, key: impl Into<Symbol>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// The entries in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&Symbol, &Value)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries, taken out.
    pub fn into_vec(self) -> Vec<(Symbol, Value)> {
        self.0
    }

    /// The map as a [`Value::Map`].
    pub fn to_value(&self) -> Value {
        Value::Map(
            self.0
                .iter()
                .map(|(k, v)| (Value::Symbol(k.clone()), v.clone()))
                .collect(),
        )
    }

    /// Reads a decoded map whose keys are symbols (or strings, from lenient peers).
    pub(crate) fn from_map(pairs: Vec<(Value, Value)>) -> Option<Self> {
        pairs
            .into_iter()
            .map(|(k, v)| match k {
                Value::Symbol(s) => Some((s, v)),
                Value::String(s) => Some((Symbol::new(s), v)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(Self)
    }

    pub(crate) fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let count = self.0.len().saturating_mul(2);
        encode::write_compound(buf, 0xc1, 0xd1, count, |buf| {
            self.0.iter().try_for_each(|(k, v)| {
                encode::write_symbol(buf, k.as_str())?;
                encode::write_value(v, buf)
            })
        })
    }
}

impl From<Vec<(Symbol, Value)>> for Fields {
    fn from(entries: Vec<(Symbol, Value)>) -> Self {
        Self(entries)
    }
}

impl FromIterator<(Symbol, Value)> for Fields {
    fn from_iter<I: IntoIterator<Item = (Symbol, Value)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// An AMQP `error` (part 2 §2.8.14): what DETACH, END, CLOSE and a `rejected` outcome carry.
#[derive(Debug, Clone, PartialEq)]
pub struct AmqpError {
    /// The condition, e.g. `amqp:not-found` or `com.microsoft:argument-error`.
    pub condition: Symbol,
    /// Text for people; Azure puts a JSON object here (amqp-contract §2.4).
    pub description: Option<String>,
    /// More detail, e.g. `com.microsoft:tracking-id`, or a redirect's `hostname` and `port`.
    pub info: Option<Fields>,
}

impl AmqpError {
    /// An error with a condition and a description.
    pub fn new(condition: Symbol, description: impl Into<String>) -> Self {
        Self {
            condition,
            description: Some(description.into()),
            info: None,
        }
    }

    /// An error with only a condition.
    pub fn condition(condition: Symbol) -> Self {
        Self {
            condition,
            description: None,
            info: None,
        }
    }

    /// The same error with `info`.
    pub fn with_info(mut self, info: Fields) -> Self {
        self.info = Some(info);
        self
    }

    pub(crate) fn from_value(value: Value) -> Result<Self, DecodeError> {
        let (code, fields) = described_list(value, "error")?;
        if code != 0x1d {
            return Err(DecodeError::UnexpectedDescriptor {
                expected: "error",
                found: format!("{code:#x}"),
            });
        }
        let mut r = FieldReader::new("error", fields);
        let condition = r.symbol("condition")?;
        Ok(Self {
            condition: r.required("condition", condition)?,
            description: r.string("description")?,
            info: r.fields("info")?,
        })
    }

    /// Appends the error as a described list of its 3 fields.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        atomically(buf, |buf| {
            encode::write_described_list(buf, 0x1d, 3, |buf| {
                put::symbol(buf, &self.condition)?;
                put::opt_string(buf, self.description.as_deref())?;
                put::opt_fields(buf, self.info.as_ref())
            })
        })
    }
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.description {
            Some(description) => write!(f, "{}: {description}", self.condition),
            None => write!(f, "{}", self.condition),
        }
    }
}

impl std::error::Error for AmqpError {}

/// The state of a delivery (part 3 §3.4): what a DISPOSITION or TRANSFER reports.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryState {
    /// `received` (0x23): partial progress, for resuming. Not a terminal outcome.
    Received {
        /// The section the receiver got to.
        section_number: u32,
        /// The offset within it.
        section_offset: u64,
    },
    /// `accepted` (0x24): processed successfully.
    Accepted,
    /// `rejected` (0x25): invalid and not processable, with an optional error. How the hub
    /// fails a C2D send (amqp-contract §2.4) and how a device rejects a C2D message.
    Rejected {
        /// Why.
        error: Option<AmqpError>,
    },
    /// `released` (0x26): not (and not to be) processed; may be redelivered. A device's
    /// "abandon".
    Released,
    /// `modified` (0x27): released with changes to apply before redelivery.
    Modified {
        /// Count the delivery as a failed attempt.
        delivery_failed: Option<bool>,
        /// Do not redeliver to this link.
        undeliverable_here: Option<bool>,
        /// Annotations to merge into the message.
        message_annotations: Option<Fields>,
    },
}

impl DeliveryState {
    /// Whether this is an outcome (everything but `received`), which ends the delivery once
    /// settled.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Self::Received { .. })
    }

    pub(crate) fn from_value(value: Value) -> Result<Self, DecodeError> {
        let (code, fields) = described_list(value, "delivery-state")?;
        let composite = match code {
            0x23 => "received",
            0x24 => "accepted",
            0x25 => "rejected",
            0x26 => "released",
            0x27 => "modified",
            other => {
                return Err(DecodeError::UnexpectedDescriptor {
                    expected: "delivery-state",
                    found: format!("{other:#x}"),
                });
            }
        };
        let mut r = FieldReader::new(composite, fields);
        Ok(match code {
            0x23 => {
                let section_number = r.uint("section-number")?;
                let section_offset = r.ulong("section-offset")?;
                Self::Received {
                    section_number: r.required("section-number", section_number)?,
                    section_offset: r.required("section-offset", section_offset)?,
                }
            }
            0x24 => Self::Accepted,
            0x25 => Self::Rejected {
                error: r.error("error")?,
            },
            0x26 => Self::Released,
            _ => Self::Modified {
                delivery_failed: r.bool("delivery-failed")?,
                undeliverable_here: r.bool("undeliverable-here")?,
                message_annotations: r.fields("message-annotations")?,
            },
        })
    }

    /// Appends the state as a described list of all its fields.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        atomically(buf, |buf| match self {
            Self::Received {
                section_number,
                section_offset,
            } => encode::write_described_list(buf, 0x23, 2, |buf| {
                put::uint(buf, *section_number)?;
                put::opt_ulong(buf, Some(*section_offset))
            }),
            Self::Accepted => encode::write_described_list(buf, 0x24, 0, |_| Ok(())),
            Self::Rejected { error } => encode::write_described_list(buf, 0x25, 1, |buf| {
                put::opt_error(buf, error.as_ref())
            }),
            Self::Released => encode::write_described_list(buf, 0x26, 0, |_| Ok(())),
            Self::Modified {
                delivery_failed,
                undeliverable_here,
                message_annotations,
            } => encode::write_described_list(buf, 0x27, 3, |buf| {
                put::opt_bool(buf, *delivery_failed);
                put::opt_bool(buf, *undeliverable_here);
                put::opt_fields(buf, message_annotations.as_ref())
            }),
        })
    }
}
