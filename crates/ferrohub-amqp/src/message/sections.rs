//! The non-body sections of a message.

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::performative::fields::{FieldReader, put};
use crate::types::{DecodeError, EncodeError, Symbol, Value, encode};

/// The `header` section (0x70).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Header {
    /// Whether the message must survive intermediary restarts.
    pub durable: Option<bool>,
    /// Relative priority; default 4.
    pub priority: Option<u8>,
    /// Time to live in milliseconds.
    pub ttl: Option<u32>,
    /// Whether the message has not been acquired before.
    pub first_acquirer: Option<bool>,
    /// How many earlier delivery attempts failed.
    pub delivery_count: Option<u32>,
}

/// A message or correlation id, with its AMQP type (part 3 §3.2.11–§3.2.15).
///
/// The type matters: uamqp sends `ulong` ids, pyamqp `uuid`s, Node and JS `string`s, and each
/// expects its reply's `correlation-id` in the same type (amqp-contract §0).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageId {
    /// `ulong`.
    Ulong(u64),
    /// `uuid`.
    Uuid([u8; 16]),
    /// `binary`.
    Binary(Bytes),
    /// `string`.
    String(String),
}

impl MessageId {
    /// The id as an AMQP value of its type.
    pub fn to_value(&self) -> Value {
        match self {
            Self::Ulong(v) => Value::Ulong(*v),
            Self::Uuid(v) => Value::Uuid(*v),
            Self::Binary(v) => Value::Binary(v.clone()),
            Self::String(v) => Value::String(v.clone()),
        }
    }

    /// The id of a value of one of the four id types.
    pub fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Ulong(v) => Some(Self::Ulong(v)),
            Value::Uuid(v) => Some(Self::Uuid(v)),
            Value::Binary(v) => Some(Self::Binary(v)),
            Value::String(v) => Some(Self::String(v)),
            _ => None,
        }
    }
}

/// The id as text: the number, the UUID in its hyphenated lower-case form, the binary as
/// lower-case hex, the string as is. What a stringified id (feedback's `originalMessageId`)
/// looks like.
impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ulong(v) => write!(f, "{v}"),
            Self::Uuid(b) => {
                for (i, byte) in b.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
            Self::Binary(b) => b.iter().try_for_each(|byte| write!(f, "{byte:02x}")),
            Self::String(s) => f.write_str(s),
        }
    }
}

/// The `properties` section (0x73): the immutable properties of the bare message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Properties {
    /// The message's id, with its type.
    pub message_id: Option<MessageId>,
    /// The identity of the user who produced the message (the hub name on feedback).
    pub user_id: Option<Bytes>,
    /// The destination address, e.g. `/devices/{id}/messages/devicebound`.
    pub to: Option<String>,
    /// The subject.
    pub subject: Option<String>,
    /// Where to send replies.
    pub reply_to: Option<String>,
    /// The id this message answers, with its type.
    pub correlation_id: Option<MessageId>,
    /// The MIME type of the body.
    pub content_type: Option<Symbol>,
    /// The encoding of the body.
    pub content_encoding: Option<Symbol>,
    /// When the message expires (ms since the epoch).
    pub absolute_expiry_time: Option<i64>,
    /// When the message was created (ms since the epoch).
    pub creation_time: Option<i64>,
    /// The group the message belongs to.
    pub group_id: Option<String>,
    /// Its position in the group.
    pub group_sequence: Option<u32>,
    /// The group replies go to.
    pub reply_to_group_id: Option<String>,
}

/// An annotations map (delivery-annotations, message-annotations, footer): keys are symbols
/// (the specification also reserves ulongs), kept as values in wire order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Annotations(Vec<(Value, Value)>);

/// The `application-properties` section (0x74): string keys to simple values, in wire order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApplicationProperties(Vec<(String, Value)>);

impl Header {
    pub(crate) fn decode(mut r: FieldReader) -> Result<Self, DecodeError> {
        Ok(Self {
            durable: r.bool("durable")?,
            priority: r.ubyte("priority")?,
            ttl: r.uint("ttl")?,
            first_acquirer: r.bool("first-acquirer")?,
            delivery_count: r.uint("delivery-count")?,
        })
    }

    pub(crate) fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let present = [
            self.durable.is_some(),
            self.priority.is_some(),
            self.ttl.is_some(),
            self.first_acquirer.is_some(),
            self.delivery_count.is_some(),
        ];
        let count = present.iter().rposition(|p| *p).map_or(0, |i| i + 1);
        encode::write_described_list(buf, 0x70, count, |buf| {
            let start = buf.len();
            let mut ends = [0; 5];
            put::opt_bool(buf, self.durable);
            ends[0] = buf.len();
            put::opt_ubyte(buf, self.priority);
            ends[1] = buf.len();
            put::opt_uint(buf, self.ttl)?;
            ends[2] = buf.len();
            put::opt_bool(buf, self.first_acquirer);
            ends[3] = buf.len();
            put::opt_uint(buf, self.delivery_count)?;
            ends[4] = buf.len();
            keep_fields(buf, start, &ends, count);
            Ok(())
        })
    }
}

impl Properties {
    pub(crate) fn decode(mut r: FieldReader) -> Result<Self, DecodeError> {
        Ok(Self {
            message_id: id(&mut r, "message-id")?,
            user_id: r.binary("user-id")?,
            to: r.string("to")?,
            subject: r.string("subject")?,
            reply_to: r.string("reply-to")?,
            correlation_id: id(&mut r, "correlation-id")?,
            content_type: r.symbol("content-type")?,
            content_encoding: r.symbol("content-encoding")?,
            absolute_expiry_time: r.timestamp("absolute-expiry-time")?,
            creation_time: r.timestamp("creation-time")?,
            group_id: r.string("group-id")?,
            group_sequence: r.uint("group-sequence")?,
            reply_to_group_id: r.string("reply-to-group-id")?,
        })
    }

    /// Writes the section with its trailing null fields left out, which the specification
    /// allows and every SDK reads (amqp-contract §1.2: pyamqp's `Properties(*fields)`).
    pub(crate) fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let present = [
            self.message_id.is_some(),
            self.user_id.is_some(),
            self.to.is_some(),
            self.subject.is_some(),
            self.reply_to.is_some(),
            self.correlation_id.is_some(),
            self.content_type.is_some(),
            self.content_encoding.is_some(),
            self.absolute_expiry_time.is_some(),
            self.creation_time.is_some(),
            self.group_id.is_some(),
            self.group_sequence.is_some(),
            self.reply_to_group_id.is_some(),
        ];
        let count = present.iter().rposition(|p| *p).map_or(0, |i| i + 1);
        encode::write_described_list(buf, 0x73, count, |buf| {
            let start = buf.len();
            let mut ends = [0; 13];
            let id = |id: &Option<MessageId>| id.as_ref().map_or(Value::Null, MessageId::to_value);
            put::value(buf, &id(&self.message_id))?;
            ends[0] = buf.len();
            put::opt_binary(buf, self.user_id.as_deref())?;
            ends[1] = buf.len();
            put::opt_string(buf, self.to.as_deref())?;
            ends[2] = buf.len();
            put::opt_string(buf, self.subject.as_deref())?;
            ends[3] = buf.len();
            put::opt_string(buf, self.reply_to.as_deref())?;
            ends[4] = buf.len();
            put::value(buf, &id(&self.correlation_id))?;
            ends[5] = buf.len();
            put::opt_symbol(buf, self.content_type.as_ref())?;
            ends[6] = buf.len();
            put::opt_symbol(buf, self.content_encoding.as_ref())?;
            ends[7] = buf.len();
            put::opt_timestamp(buf, self.absolute_expiry_time)?;
            ends[8] = buf.len();
            put::opt_timestamp(buf, self.creation_time)?;
            ends[9] = buf.len();
            put::opt_string(buf, self.group_id.as_deref())?;
            ends[10] = buf.len();
            put::opt_uint(buf, self.group_sequence)?;
            ends[11] = buf.len();
            put::opt_string(buf, self.reply_to_group_id.as_deref())?;
            ends[12] = buf.len();
            keep_fields(buf, start, &ends, count);
            Ok(())
        })
    }
}

/// Cuts the fields written from `start` back to the first `count`, given where each field
/// ended: how sections leave out their trailing nulls.
fn keep_fields(buf: &mut BytesMut, start: usize, ends: &[usize], count: usize) {
    let end = count
        .checked_sub(1)
        .and_then(|last| ends.get(last))
        .copied()
        .unwrap_or(start);
    buf.truncate(end);
}

/// A message-id or correlation-id field.
fn id(r: &mut FieldReader, field: &'static str) -> Result<Option<MessageId>, DecodeError> {
    match r.value() {
        Value::Null => Ok(None),
        v => MessageId::from_value(v)
            .map(Some)
            .ok_or_else(|| r.invalid(field)),
    }
}

impl Annotations {
    /// An empty map.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// The value under the symbol key `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(k, _)| k.as_symbol().is_some_and(|s| s == key))
            .map(|(_, v)| v)
    }

    /// Sets the symbol key `key` to `value`, in place if present, else appended.
    pub fn insert(&mut self, key: impl Into<Symbol>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        match self
            .0
            .iter_mut()
            .find(|(k, _)| k.as_symbol().is_some_and(|s| *s == key))
        {
            Some(entry) => entry.1 = value,
            None => self.0.push((Value::Symbol(key), value)),
        }
    }

    /// The entries in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&Value, &Value)> {
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
    pub fn into_vec(self) -> Vec<(Value, Value)> {
        self.0
    }

    pub(crate) fn from_value(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Map(pairs) => Ok(Self(pairs)),
            Value::Null => Ok(Self::new()),
            _ => Err(DecodeError::InvalidField {
                composite: "annotations",
                field: "value",
            }),
        }
    }

    pub(crate) fn encode(&self, code: u8, buf: &mut BytesMut) -> Result<(), EncodeError> {
        buf.extend_from_slice(&[0x00, 0x53, code]);
        put::opt_map(buf, Some(&self.0))
    }
}

impl From<Vec<(Value, Value)>> for Annotations {
    fn from(entries: Vec<(Value, Value)>) -> Self {
        Self(entries)
    }
}

impl ApplicationProperties {
    /// An empty map.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// The value under `key`, compared exactly.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value under `key`, ignoring ASCII case (`IoThub-status` vs `iothub-status`).
    pub fn get_ignore_case(&self, key: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    /// Sets `key` to `value`, in place if present, else appended.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// The entries in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
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
    pub fn into_vec(self) -> Vec<(String, Value)> {
        self.0
    }

    /// Keys must be strings (symbols are accepted from lenient peers).
    pub(crate) fn from_value(value: Value) -> Result<Self, DecodeError> {
        let invalid = DecodeError::InvalidField {
            composite: "application-properties",
            field: "key",
        };
        match value {
            Value::Map(pairs) => pairs
                .into_iter()
                .map(|(k, v)| match k {
                    Value::String(s) => Ok((s, v)),
                    Value::Symbol(s) => Ok((s.as_str().to_owned(), v)),
                    _ => Err(invalid.clone()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Self),
            Value::Null => Ok(Self::new()),
            _ => Err(invalid),
        }
    }

    pub(crate) fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        buf.extend_from_slice(&[0x00, 0x53, 0x74]);
        let count = self.0.len().saturating_mul(2);
        encode::write_compound(buf, 0xc1, 0xd1, count, |buf| {
            self.0.iter().try_for_each(|(k, v)| {
                encode::write_string(buf, k)?;
                encode::write_value(v, buf)
            })
        })
    }
}

impl From<Vec<(String, Value)>> for ApplicationProperties {
    fn from(entries: Vec<(String, Value)>) -> Self {
        Self(entries)
    }
}

impl FromIterator<(String, Value)> for ApplicationProperties {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}
