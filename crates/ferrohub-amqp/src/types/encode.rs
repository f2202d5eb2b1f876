//! The encoder: [`Value`] to bytes, smallest encoding within each type.

use bytes::{BufMut, Bytes, BytesMut};

use crate::types::{Array, EncodeError, TypeKind, Value};

/// The bytes reserved for a compound's 32-bit header (constructor, size, count) while its
/// content is written; shrunk to 3 when the 8-bit form fits.
const WIDE_HEADER: usize = 9;

impl Value {
    /// Appends the encoding of `self` to `buf`. On error `buf` is left as it was.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let start = buf.len();
        let result = write_value(self, buf);
        if result.is_err() {
            buf.truncate(start);
        }
        result
    }

    /// The encoding of `self` as bytes.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut buf = BytesMut::new();
        self.encode(&mut buf)?;
        Ok(buf.freeze())
    }
}

/// Writes `value` with its constructor.
pub(crate) fn write_value(value: &Value, buf: &mut BytesMut) -> Result<(), EncodeError> {
    match value {
        Value::Null => buf.put_u8(0x40),
        Value::Bool(true) => buf.put_u8(0x41),
        Value::Bool(false) => buf.put_u8(0x42),
        Value::Ubyte(v) => {
            buf.put_u8(0x50);
            buf.put_u8(*v);
        }
        Value::Ushort(v) => {
            buf.put_u8(0x60);
            buf.put_u16(*v);
        }
        Value::Uint(0) => buf.put_u8(0x43),
        Value::Uint(v) => match u8::try_from(*v) {
            Ok(small) => {
                buf.put_u8(0x52);
                buf.put_u8(small);
            }
            Err(_) => {
                buf.put_u8(0x70);
                buf.put_u32(*v);
            }
        },
        Value::Ulong(0) => buf.put_u8(0x44),
        Value::Ulong(v) => match u8::try_from(*v) {
            Ok(small) => {
                buf.put_u8(0x53);
                buf.put_u8(small);
            }
            Err(_) => {
                buf.put_u8(0x80);
                buf.put_u64(*v);
            }
        },
        Value::Byte(v) => {
            buf.put_u8(0x51);
            buf.put_i8(*v);
        }
        Value::Short(v) => {
            buf.put_u8(0x61);
            buf.put_i16(*v);
        }
        Value::Int(v) => match i8::try_from(*v) {
            Ok(small) => {
                buf.put_u8(0x54);
                buf.put_i8(small);
            }
            Err(_) => {
                buf.put_u8(0x71);
                buf.put_i32(*v);
            }
        },
        Value::Long(v) => match i8::try_from(*v) {
            Ok(small) => {
                buf.put_u8(0x55);
                buf.put_i8(small);
            }
            Err(_) => {
                buf.put_u8(0x81);
                buf.put_i64(*v);
            }
        },
        Value::Float(v) => {
            buf.put_u8(0x72);
            buf.put_f32(*v);
        }
        Value::Double(v) => {
            buf.put_u8(0x82);
            buf.put_f64(*v);
        }
        Value::Decimal32(v) => {
            buf.put_u8(0x74);
            buf.put_slice(v);
        }
        Value::Decimal64(v) => {
            buf.put_u8(0x84);
            buf.put_slice(v);
        }
        Value::Decimal128(v) => {
            buf.put_u8(0x94);
            buf.put_slice(v);
        }
        Value::Char(c) => {
            buf.put_u8(0x73);
            buf.put_u32(u32::from(*c));
        }
        Value::Timestamp(v) => {
            buf.put_u8(0x83);
            buf.put_i64(*v);
        }
        Value::Uuid(v) => {
            buf.put_u8(0x98);
            buf.put_slice(v);
        }
        Value::Binary(b) => write_variable(buf, 0xa0, 0xb0, b)?,
        Value::String(s) => write_variable(buf, 0xa1, 0xb1, s.as_bytes())?,
        Value::Symbol(s) => write_variable(buf, 0xa3, 0xb3, s.as_str().as_bytes())?,
        Value::List(items) if items.is_empty() => buf.put_u8(0x45),
        Value::List(items) => write_compound(buf, 0xc0, 0xd0, items.len(), |buf| {
            items.iter().try_for_each(|item| write_value(item, buf))
        })?,
        Value::Map(pairs) => write_map(buf, pairs)?,
        Value::Array(array) => write_compound(buf, 0xe0, 0xf0, array.len(), |buf| {
            write_array_body(array, buf)
        })?,
        Value::Described(d) => {
            buf.put_u8(0x00);
            write_value(&d.descriptor, buf)?;
            write_value(&d.value, buf)?;
        }
    }
    Ok(())
}

/// Writes a map with its constructor (`map8` when it fits; AMQP has no `map0`).
fn write_map(buf: &mut BytesMut, pairs: &[(Value, Value)]) -> Result<(), EncodeError> {
    let count = pairs
        .len()
        .checked_mul(2)
        .ok_or(EncodeError::TooLarge(pairs.len()))?;
    write_compound(buf, 0xc1, 0xd1, count, |buf| {
        pairs.iter().try_for_each(|(k, v)| {
            write_value(k, buf)?;
            write_value(v, buf)
        })
    })
}

/// Writes `bytes` with the 8-bit constructor `code8` when it is shorter than 256 bytes, else
/// with `code32`.
fn write_variable(
    buf: &mut BytesMut,
    code8: u8,
    code32: u8,
    bytes: &[u8],
) -> Result<(), EncodeError> {
    match u8::try_from(bytes.len()) {
        Ok(len) => {
            buf.put_u8(code8);
            buf.put_u8(len);
        }
        Err(_) => {
            let len = u32::try_from(bytes.len()).map_err(|_| EncodeError::TooLarge(bytes.len()))?;
            buf.put_u8(code32);
            buf.put_u32(len);
        }
    }
    buf.put_slice(bytes);
    Ok(())
}

/// Writes a compound (list, map, array) with its constructor: `code8` with one-byte size and
/// count when the content and count fit, else `code32`.
///
/// The content is written once, after a 9-byte header; when it turns out to fit the 8-bit
/// form, it is moved back 6 bytes. Only contents under 256 bytes are ever moved, so nesting
/// costs no more than a copy of each small compound per level.
pub(crate) fn write_compound(
    buf: &mut BytesMut,
    code8: u8,
    code32: u8,
    count: usize,
    content: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = buf.len();
    buf.put_bytes(0, WIDE_HEADER);
    content(buf)?;
    let len = buf.len() - start - WIDE_HEADER;
    match (u8::try_from(len + 1), u8::try_from(count)) {
        (Ok(size), Ok(count)) => {
            buf[start..start + 3].copy_from_slice(&[code8, size, count]);
            buf.copy_within(start + WIDE_HEADER.., start + 3);
            buf.truncate(start + 3 + len);
        }
        _ => {
            let size = u32::try_from(len + 4).map_err(|_| EncodeError::TooLarge(len))?;
            let count = u32::try_from(count).map_err(|_| EncodeError::TooLarge(count))?;
            buf[start] = code32;
            buf[start + 1..start + 5].copy_from_slice(&size.to_be_bytes());
            buf[start + 5..start + 9].copy_from_slice(&count.to_be_bytes());
        }
    }
    Ok(())
}

/// Writes `0x00 0x53 code` and a list of `count` fields (`list8` or `list32`, never `list0`):
/// how performatives and composite types go on the wire (amqp-contract §1.2: pyamqp misreads
/// anything else).
pub(crate) fn write_described_list(
    buf: &mut BytesMut,
    code: u8,
    count: usize,
    fields: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    buf.put_slice(&[0x00, 0x53, code]);
    write_compound(buf, 0xc0, 0xd0, count, fields)
}

/// Writes a compound's 32-bit size and count around `content`, without a constructor: how a
/// list, map or array is written as an array element.
fn write_compound32(
    buf: &mut BytesMut,
    count: usize,
    content: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = buf.len();
    buf.put_bytes(0, 8);
    content(buf)?;
    let len = buf.len() - start - 8;
    let size = u32::try_from(len + 4).map_err(|_| EncodeError::TooLarge(len))?;
    let count = u32::try_from(count).map_err(|_| EncodeError::TooLarge(count))?;
    buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
    buf[start + 4..start + 8].copy_from_slice(&count.to_be_bytes());
    Ok(())
}

/// Writes an array's constructor and items (everything after its count).
fn write_array_body(array: &Array, buf: &mut BytesMut) -> Result<(), EncodeError> {
    if let Some(descriptor) = array.descriptor() {
        buf.put_u8(0x00);
        write_value(descriptor, buf)?;
    }
    let code = element_code(array.kind(), array.items());
    buf.put_u8(code);
    array
        .items()
        .iter()
        .try_for_each(|item| write_element(code, item, buf))
}

/// The one constructor for every item of an array: fixed-width codes for fixed-width types,
/// the 8-bit variable form when every item fits it, 32-bit compounds.
fn element_code(kind: TypeKind, items: &[Value]) -> u8 {
    let short = |len: fn(&Value) -> usize| items.iter().all(|v| len(v) < 256);
    match kind {
        TypeKind::Null | TypeKind::Described => 0x40,
        TypeKind::Bool => 0x56,
        TypeKind::Ubyte => 0x50,
        TypeKind::Ushort => 0x60,
        TypeKind::Uint => 0x70,
        TypeKind::Ulong => 0x80,
        TypeKind::Byte => 0x51,
        TypeKind::Short => 0x61,
        TypeKind::Int => 0x71,
        TypeKind::Long => 0x81,
        TypeKind::Float => 0x72,
        TypeKind::Double => 0x82,
        TypeKind::Decimal32 => 0x74,
        TypeKind::Decimal64 => 0x84,
        TypeKind::Decimal128 => 0x94,
        TypeKind::Char => 0x73,
        TypeKind::Timestamp => 0x83,
        TypeKind::Uuid => 0x98,
        TypeKind::Binary if short(|v| v.as_binary().map_or(0, Bytes::len)) => 0xa0,
        TypeKind::Binary => 0xb0,
        TypeKind::String if short(|v| v.as_str().map_or(0, str::len)) => 0xa1,
        TypeKind::String => 0xb1,
        TypeKind::Symbol if short(|v| v.as_symbol().map_or(0, |s| s.as_str().len())) => 0xa3,
        TypeKind::Symbol => 0xb3,
        TypeKind::List => 0xd0,
        TypeKind::Map => 0xd1,
        TypeKind::Array => 0xf0,
    }
}

/// Writes one array item's data under the constructor `code` (no constructor of its own).
fn write_element(code: u8, item: &Value, buf: &mut BytesMut) -> Result<(), EncodeError> {
    match (code, item) {
        (0x40, _) => {}
        (_, Value::Bool(b)) => buf.put_u8(u8::from(*b)),
        (_, Value::Ubyte(v)) => buf.put_u8(*v),
        (_, Value::Ushort(v)) => buf.put_u16(*v),
        (_, Value::Uint(v)) => buf.put_u32(*v),
        (_, Value::Ulong(v)) => buf.put_u64(*v),
        (_, Value::Byte(v)) => buf.put_i8(*v),
        (_, Value::Short(v)) => buf.put_i16(*v),
        (_, Value::Int(v)) => buf.put_i32(*v),
        (_, Value::Long(v)) => buf.put_i64(*v),
        (_, Value::Float(v)) => buf.put_f32(*v),
        (_, Value::Double(v)) => buf.put_f64(*v),
        (_, Value::Decimal32(v)) => buf.put_slice(v),
        (_, Value::Decimal64(v)) => buf.put_slice(v),
        (_, Value::Decimal128(v)) => buf.put_slice(v),
        (_, Value::Char(c)) => buf.put_u32(u32::from(*c)),
        (_, Value::Timestamp(v)) => buf.put_i64(*v),
        (_, Value::Uuid(v)) => buf.put_slice(v),
        (_, Value::Binary(b)) => write_element_bytes(code, b, buf)?,
        (_, Value::String(s)) => write_element_bytes(code, s.as_bytes(), buf)?,
        (_, Value::Symbol(s)) => write_element_bytes(code, s.as_str().as_bytes(), buf)?,
        (_, Value::List(items)) => write_compound32(buf, items.len(), |buf| {
            items.iter().try_for_each(|item| write_value(item, buf))
        })?,
        (_, Value::Map(pairs)) => {
            let count = pairs
                .len()
                .checked_mul(2)
                .ok_or(EncodeError::TooLarge(pairs.len()))?;
            write_compound32(buf, count, |buf| {
                pairs.iter().try_for_each(|(k, v)| {
                    write_value(k, buf)?;
                    write_value(v, buf)
                })
            })?;
        }
        (_, Value::Array(array)) => {
            write_compound32(buf, array.len(), |buf| write_array_body(array, buf))?;
        }
        // Arrays are valid by construction: no described or null items under another code.
        (_, Value::Null | Value::Described(_)) => {}
    }
    Ok(())
}

/// Writes a variable-width array item: a 1-byte length under an 8-bit code, else 4 bytes.
fn write_element_bytes(code: u8, bytes: &[u8], buf: &mut BytesMut) -> Result<(), EncodeError> {
    if code & 0xf0 == 0xa0 {
        // `element_code` chose the 8-bit form only if every item is shorter than 256 bytes.
        buf.put_u8(u8::try_from(bytes.len()).map_err(|_| EncodeError::TooLarge(bytes.len()))?);
    } else {
        buf.put_u32(u32::try_from(bytes.len()).map_err(|_| EncodeError::TooLarge(bytes.len()))?);
    }
    buf.put_slice(bytes);
    Ok(())
}

/// Writes a `string` without building a [`Value`].
pub(crate) fn write_string(buf: &mut BytesMut, s: &str) -> Result<(), EncodeError> {
    write_variable(buf, 0xa1, 0xb1, s.as_bytes())
}

/// Writes a `symbol` without building a [`Value`].
pub(crate) fn write_symbol(buf: &mut BytesMut, s: &str) -> Result<(), EncodeError> {
    write_variable(buf, 0xa3, 0xb3, s.as_bytes())
}

/// Writes a `binary` without building a [`Value`].
pub(crate) fn write_binary(buf: &mut BytesMut, b: &[u8]) -> Result<(), EncodeError> {
    write_variable(buf, 0xa0, 0xb0, b)
}

/// Writes an array of `symbol`s (how "multiple" symbol fields are sent).
pub(crate) fn write_symbol_array(
    buf: &mut BytesMut,
    symbols: &[crate::types::Symbol],
) -> Result<(), EncodeError> {
    let short = symbols.iter().all(|s| s.as_str().len() < 256);
    write_compound(buf, 0xe0, 0xf0, symbols.len(), |buf| {
        buf.put_u8(if short { 0xa3 } else { 0xb3 });
        symbols.iter().try_for_each(|s| {
            write_element_bytes(if short { 0xa3 } else { 0xb3 }, s.as_str().as_bytes(), buf)
        })
    })
}
