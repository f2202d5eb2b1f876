//! Reading the fields of a composite type leniently, and writing them in full.
//!
//! Reading follows the specification's rule that trailing fields may be omitted and a null is
//! the field's default, and forgives type slips that do not change the value (a `handle` sent
//! as a `ulong`, a `hostname` sent as a `symbol`). Writing always emits every field, nulls as
//! `0x40` (amqp-contract §1.2).

use bytes::{Bytes, BytesMut};

use crate::performative::{AmqpError, DeliveryState, Fields, Source, Target};
use crate::types::{DecodeError, EncodeError, Symbol, Value};

/// The known composite descriptors: code and symbolic name (part 2–5 of the specification).
/// A peer may send either; the hub always sends the code.
const DESCRIPTORS: &[(u64, &str)] = &[
    (0x10, "amqp:open:list"),
    (0x11, "amqp:begin:list"),
    (0x12, "amqp:attach:list"),
    (0x13, "amqp:flow:list"),
    (0x14, "amqp:transfer:list"),
    (0x15, "amqp:disposition:list"),
    (0x16, "amqp:detach:list"),
    (0x17, "amqp:end:list"),
    (0x18, "amqp:close:list"),
    (0x1d, "amqp:error:list"),
    (0x23, "amqp:received:list"),
    (0x24, "amqp:accepted:list"),
    (0x25, "amqp:rejected:list"),
    (0x26, "amqp:released:list"),
    (0x27, "amqp:modified:list"),
    (0x28, "amqp:source:list"),
    (0x29, "amqp:target:list"),
    (0x40, "amqp:sasl-mechanisms:list"),
    (0x41, "amqp:sasl-init:list"),
    (0x42, "amqp:sasl-challenge:list"),
    (0x43, "amqp:sasl-response:list"),
    (0x44, "amqp:sasl-outcome:list"),
    (0x70, "amqp:header:list"),
    (0x71, "amqp:delivery-annotations:map"),
    (0x72, "amqp:message-annotations:map"),
    (0x73, "amqp:properties:list"),
    (0x74, "amqp:application-properties:map"),
    (0x75, "amqp:data:binary"),
    (0x76, "amqp:amqp-sequence:list"),
    (0x77, "amqp:amqp-value:*"),
    (0x78, "amqp:footer:map"),
];

/// The numeric code of a descriptor given as a `ulong` or as one of the known symbolic names.
pub(crate) fn descriptor_code(descriptor: &Value) -> Option<u64> {
    match descriptor {
        Value::Ulong(code) => Some(*code),
        Value::Symbol(name) => DESCRIPTORS
            .iter()
            .find(|(_, known)| name == known)
            .map(|(code, _)| *code),
        _ => None,
    }
}

/// A descriptor for an error message: the code in hex, or the value.
pub(crate) fn describe(descriptor: &Value) -> String {
    match descriptor {
        Value::Ulong(code) => format!("{code:#x}"),
        Value::Symbol(name) => name.to_string(),
        other => format!("{:?}", other.kind()),
    }
}

/// Takes a described value apart into its descriptor code and list fields. `list0` is an empty
/// list; anything but a list is [`DecodeError::NotAList`].
pub(crate) fn described_list(
    value: Value,
    what: &'static str,
) -> Result<(u64, Vec<Value>), DecodeError> {
    let Value::Described(described) = value else {
        return Err(DecodeError::NotAList(what));
    };
    let code = descriptor_code(&described.descriptor).ok_or_else(|| {
        DecodeError::UnexpectedDescriptor {
            expected: what,
            found: describe(&described.descriptor),
        }
    })?;
    match described.value {
        Value::List(fields) => Ok((code, fields)),
        _ => Err(DecodeError::NotAList(what)),
    }
}

/// Reads fields by position from a composite's list; missing trailing fields read as null.
pub(crate) struct FieldReader {
    fields: std::vec::IntoIter<Value>,
    composite: &'static str,
}

impl FieldReader {
    pub(crate) fn new(composite: &'static str, fields: Vec<Value>) -> Self {
        Self {
            fields: fields.into_iter(),
            composite,
        }
    }

    /// The next field as it came, null when absent.
    pub(crate) fn value(&mut self) -> Value {
        self.fields.next().unwrap_or(Value::Null)
    }

    pub(crate) fn invalid(&self, field: &'static str) -> DecodeError {
        DecodeError::InvalidField {
            composite: self.composite,
            field,
        }
    }

    pub(crate) fn missing(&self, field: &'static str) -> DecodeError {
        DecodeError::MissingField {
            composite: self.composite,
            field,
        }
    }

    /// Fails with `MissingField` when `value` is `None`.
    pub(crate) fn required<T>(
        &self,
        field: &'static str,
        value: Option<T>,
    ) -> Result<T, DecodeError> {
        value.ok_or_else(|| self.missing(field))
    }

    /// An integer field of any integer type whose value fits `T`.
    fn integer<T: TryFrom<i128>>(&mut self, field: &'static str) -> Result<Option<T>, DecodeError> {
        match self.value() {
            Value::Null => Ok(None),
            v => v
                .as_integer()
                .and_then(|i| T::try_from(i).ok())
                .map(Some)
                .ok_or_else(|| self.invalid(field)),
        }
    }

    pub(crate) fn ubyte(&mut self, field: &'static str) -> Result<Option<u8>, DecodeError> {
        self.integer(field)
    }

    pub(crate) fn ushort(&mut self, field: &'static str) -> Result<Option<u16>, DecodeError> {
        self.integer(field)
    }

    pub(crate) fn uint(&mut self, field: &'static str) -> Result<Option<u32>, DecodeError> {
        self.integer(field)
    }

    pub(crate) fn ulong(&mut self, field: &'static str) -> Result<Option<u64>, DecodeError> {
        self.integer(field)
    }

    pub(crate) fn req_uint(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let value = self.uint(field)?;
        self.required(field, value)
    }

    pub(crate) fn bool(&mut self, field: &'static str) -> Result<Option<bool>, DecodeError> {
        match self.value() {
            Value::Null => Ok(None),
            Value::Bool(b) => Ok(Some(b)),
            _ => Err(self.invalid(field)),
        }
    }

    /// A `timestamp` field (ms since the epoch).
    pub(crate) fn timestamp(&mut self, field: &'static str) -> Result<Option<i64>, DecodeError> {
        match self.value() {
            Value::Null => Ok(None),
            Value::Timestamp(t) => Ok(Some(t)),
            _ => Err(self.invalid(field)),
        }
    }

    /// A `string` field; a `symbol` is accepted too.
    pub(crate) fn string(&mut self, field: &'static str) -> Result<Option<String>, DecodeError> {
        match self.value() {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            Value::Symbol(s) => Ok(Some(s.as_str().to_owned())),
            _ => Err(self.invalid(field)),
        }
    }

    /// A `symbol` field; a `string` is accepted too.
    pub(crate) fn symbol(&mut self, field: &'static str) -> Result<Option<Symbol>, DecodeError> {
        match self.value() {
            Value::Null => Ok(None),
            Value::Symbol(s) => Ok(Some(s)),
            Value::String(s) => Ok(Some(Symbol::new(s))),
            _ => Err(self.invalid(field)),
        }
    }

    pub(crate) fn binary(&mut self, field: &'static str) -> Result<Option<Bytes>, DecodeError> {
        match self.value() {
            Value::Null => Ok(None),
            Value::Binary(b) => Ok(Some(b)),
            _ => Err(self.invalid(field)),
        }
    }

    /// A "multiple" symbol field: one symbol, an array of symbols, or (leniently) a list.
    pub(crate) fn symbols(
        &mut self,
        field: &'static str,
    ) -> Result<Option<Vec<Symbol>>, DecodeError> {
        let value = self.value();
        symbols(value).map_err(|()| self.invalid(field))
    }

    /// A `fields` map (symbol keys; string keys accepted).
    pub(crate) fn fields(&mut self, field: &'static str) -> Result<Option<Fields>, DecodeError> {
        match self.value() {
            Value::Null => Ok(None),
            Value::Map(pairs) => Fields::from_map(pairs)
                .map(Some)
                .ok_or_else(|| self.invalid(field)),
            _ => Err(self.invalid(field)),
        }
    }

    /// A map field of any keys.
    pub(crate) fn map(
        &mut self,
        field: &'static str,
    ) -> Result<Option<Vec<(Value, Value)>>, DecodeError> {
        match self.value() {
            Value::Null => Ok(None),
            Value::Map(pairs) => Ok(Some(pairs)),
            _ => Err(self.invalid(field)),
        }
    }

    pub(crate) fn error(&mut self, field: &'static str) -> Result<Option<AmqpError>, DecodeError> {
        match self.value() {
            Value::Null => Ok(None),
            v => AmqpError::from_value(v).map(Some),
        }
        .map_err(|e| match e {
            DecodeError::NotAList(_) | DecodeError::UnexpectedDescriptor { .. } => {
                self.invalid(field)
            }
            e => e,
        })
    }

    pub(crate) fn state(
        &mut self,
        field: &'static str,
    ) -> Result<Option<DeliveryState>, DecodeError> {
        match self.value() {
            Value::Null => Ok(None),
            v => DeliveryState::from_value(v)
                .map(Some)
                .map_err(|_| self.invalid(field)),
        }
    }

    pub(crate) fn source(&mut self, field: &'static str) -> Result<Option<Source>, DecodeError> {
        match self.value() {
            Value::Null => Ok(None),
            v => Source::from_value(v)
                .map(Some)
                .map_err(|_| self.invalid(field)),
        }
    }

    pub(crate) fn target(&mut self, field: &'static str) -> Result<Option<Target>, DecodeError> {
        match self.value() {
            Value::Null => Ok(None),
            v => Target::from_value(v)
                .map(Some)
                .map_err(|_| self.invalid(field)),
        }
    }
}

/// A "multiple" symbol value: null, one symbol, or an array or list of symbols.
pub(crate) fn symbols(value: Value) -> Result<Option<Vec<Symbol>>, ()> {
    let items = match value {
        Value::Null => return Ok(None),
        Value::Symbol(s) => return Ok(Some(vec![s])),
        Value::Array(array) => array.into_items(),
        Value::List(items) => items,
        _ => return Err(()),
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Symbol(s) => Ok(s),
            _ => Err(()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Field writers: each writes one field, null (0x40) for `None`.
pub(crate) mod put {
    use bytes::{BufMut, BytesMut};

    use super::*;
    use crate::types::encode;

    pub(crate) fn null(buf: &mut BytesMut) {
        buf.put_u8(0x40);
    }

    pub(crate) fn value(buf: &mut BytesMut, v: &Value) -> Result<(), EncodeError> {
        encode::write_value(v, buf)
    }

    pub(crate) fn bool(buf: &mut BytesMut, b: bool) {
        buf.put_u8(if b { 0x41 } else { 0x42 });
    }

    pub(crate) fn opt_bool(buf: &mut BytesMut, b: Option<bool>) {
        match b {
            Some(b) => bool(buf, b),
            None => null(buf),
        }
    }

    pub(crate) fn ubyte(buf: &mut BytesMut, v: u8) {
        buf.put_slice(&[0x50, v]);
    }

    pub(crate) fn opt_ubyte(buf: &mut BytesMut, v: Option<u8>) {
        match v {
            Some(v) => ubyte(buf, v),
            None => null(buf),
        }
    }

    pub(crate) fn ushort(buf: &mut BytesMut, v: u16) {
        buf.put_u8(0x60);
        buf.put_u16(v);
    }

    pub(crate) fn opt_ushort(buf: &mut BytesMut, v: Option<u16>) {
        match v {
            Some(v) => ushort(buf, v),
            None => null(buf),
        }
    }

    pub(crate) fn uint(buf: &mut BytesMut, v: u32) -> Result<(), EncodeError> {
        encode::write_value(&Value::Uint(v), buf)
    }

    pub(crate) fn opt_uint(buf: &mut BytesMut, v: Option<u32>) -> Result<(), EncodeError> {
        encode::write_value(&Value::from(v), buf)
    }

    pub(crate) fn opt_ulong(buf: &mut BytesMut, v: Option<u64>) -> Result<(), EncodeError> {
        encode::write_value(&Value::from(v), buf)
    }

    pub(crate) fn opt_timestamp(buf: &mut BytesMut, v: Option<i64>) -> Result<(), EncodeError> {
        encode::write_value(&v.map_or(Value::Null, Value::Timestamp), buf)
    }

    pub(crate) fn string(buf: &mut BytesMut, s: &str) -> Result<(), EncodeError> {
        encode::write_string(buf, s)
    }

    pub(crate) fn opt_string(buf: &mut BytesMut, s: Option<&str>) -> Result<(), EncodeError> {
        match s {
            Some(s) => encode::write_string(buf, s),
            None => {
                null(buf);
                Ok(())
            }
        }
    }

    pub(crate) fn symbol(buf: &mut BytesMut, s: &Symbol) -> Result<(), EncodeError> {
        encode::write_symbol(buf, s.as_str())
    }

    pub(crate) fn opt_symbol(buf: &mut BytesMut, s: Option<&Symbol>) -> Result<(), EncodeError> {
        match s {
            Some(s) => symbol(buf, s),
            None => {
                null(buf);
                Ok(())
            }
        }
    }

    pub(crate) fn opt_binary(buf: &mut BytesMut, b: Option<&[u8]>) -> Result<(), EncodeError> {
        match b {
            Some(b) => encode::write_binary(buf, b),
            None => {
                null(buf);
                Ok(())
            }
        }
    }

    /// A "multiple" symbol field, always as an array.
    pub(crate) fn opt_symbols(buf: &mut BytesMut, s: Option<&[Symbol]>) -> Result<(), EncodeError> {
        match s {
            Some(s) => encode::write_symbol_array(buf, s),
            None => {
                null(buf);
                Ok(())
            }
        }
    }

    pub(crate) fn opt_fields(buf: &mut BytesMut, f: Option<&Fields>) -> Result<(), EncodeError> {
        match f {
            Some(f) => f.encode(buf),
            None => {
                null(buf);
                Ok(())
            }
        }
    }

    pub(crate) fn opt_map(
        buf: &mut BytesMut,
        m: Option<&[(Value, Value)]>,
    ) -> Result<(), EncodeError> {
        match m {
            Some(pairs) => {
                let count = pairs.len().saturating_mul(2);
                encode::write_compound(buf, 0xc1, 0xd1, count, |buf| {
                    pairs.iter().try_for_each(|(k, v)| {
                        encode::write_value(k, buf)?;
                        encode::write_value(v, buf)
                    })
                })
            }
            None => {
                null(buf);
                Ok(())
            }
        }
    }

    pub(crate) fn opt_error(buf: &mut BytesMut, e: Option<&AmqpError>) -> Result<(), EncodeError> {
        match e {
            Some(e) => e.encode(buf),
            None => {
                null(buf);
                Ok(())
            }
        }
    }

    pub(crate) fn opt_state(
        buf: &mut BytesMut,
        s: Option<&DeliveryState>,
    ) -> Result<(), EncodeError> {
        match s {
            Some(s) => s.encode(buf),
            None => {
                null(buf);
                Ok(())
            }
        }
    }
}

/// Runs `f` on `buf` and removes what it wrote if it fails.
pub(crate) fn atomically(
    buf: &mut BytesMut,
    f: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = buf.len();
    let result = f(buf);
    if result.is_err() {
        buf.truncate(start);
    }
    result
}
