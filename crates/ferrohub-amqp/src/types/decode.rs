//! The decoder: bytes to [`Value`], bounded in depth and in what it allocates.

use bytes::{Buf, Bytes};

use crate::types::{Array, DecodeError, Described, TypeKind, Value};

/// How deeply values may nest (lists, maps, arrays, described values). The deepest structure
/// the hub meets is an ATTACH: performative → source → filter map → described filter →
/// string, five levels; 32 leaves room for peers' message contents.
pub const MAX_DEPTH: usize = 32;

/// How many array items of zero-width types (`null`, `true`, `false`, `uint0`, `ulong0`,
/// `list0`) one decode may create in all. Every other value is paid for by bytes of its own,
/// so a decode creates at most as many values as its input has bytes, plus this many.
///
/// The bound is a constant rather than a share of the input so that a value decodes (or not)
/// the same wherever it sits: an array of 255 nulls is 4 bytes whether alone or inside a
/// large frame. The encoder widens every zero-width array item but `null`, so whatever
/// decodes re-encodes into something that decodes again.
pub const MAX_ZERO_WIDTH_ITEMS: usize = 4096;

/// Decodes one value from the front of `input`, advancing it past the value.
///
/// The decoder creates at most one value per input byte plus [`MAX_ZERO_WIDTH_ITEMS`],
/// whatever the declared counts say, and never reserves memory for a count or size its
/// remaining bytes cannot hold. `binary` values share `input`'s memory.
pub fn decode_value(input: &mut Bytes) -> Result<Value, DecodeError> {
    Decoder::new().value(input, 0)
}

/// Decoding state shared by the values of one input (a frame, a message).
pub(crate) struct Decoder {
    /// How many more zero-width array items may be created; see [`MAX_ZERO_WIDTH_ITEMS`].
    zero_width: usize,
}

impl Decoder {
    pub(crate) fn new() -> Self {
        Self {
            zero_width: MAX_ZERO_WIDTH_ITEMS,
        }
    }

    /// Decodes one value (constructor and data) from the front of `buf`.
    pub(crate) fn value(&mut self, buf: &mut Bytes, depth: usize) -> Result<Value, DecodeError> {
        let code = take_u8(buf)?;
        if code == 0x00 {
            let depth = nest(depth)?;
            let descriptor = self.value(buf, depth)?;
            let value = self.value(buf, depth)?;
            return Ok(Value::Described(Box::new(Described { descriptor, value })));
        }
        self.data(code, buf, depth)
    }

    /// Decodes the data that follows the format code `code`.
    ///
    /// Split in two so that the recursive path (compounds) keeps a small stack frame: the
    /// scalar arms, with their many temporaries, live in a function of their own that never
    /// recurses. A peer's nesting then costs a few hundred bytes of stack per level.
    fn data(&mut self, code: u8, buf: &mut Bytes, depth: usize) -> Result<Value, DecodeError> {
        match code {
            0x45 | 0xc0 | 0xd0 | 0xc1 | 0xd1 | 0xe0 | 0xf0 => self.compound(code, buf, depth),
            _ => scalar(code, buf),
        }
    }

    /// Decodes a list, map or array after its format code.
    fn compound(&mut self, code: u8, buf: &mut Bytes, depth: usize) -> Result<Value, DecodeError> {
        if code == 0x45 {
            return Ok(Value::List(Vec::new()));
        }
        let depth = nest(depth)?;
        let (count, mut body) = take_compound(code, buf)?;
        let value = match code {
            0xc0 | 0xd0 => Value::List(self.values(count, &mut body, depth)?),
            0xc1 | 0xd1 => {
                if count % 2 != 0 {
                    return Err(DecodeError::OddMapCount(count as u64));
                }
                let mut pairs = Vec::with_capacity(count / 2);
                for _ in 0..count / 2 {
                    let key = self.value(&mut body, depth)?;
                    let value = self.value(&mut body, depth)?;
                    pairs.push((key, value));
                }
                Value::Map(pairs)
            }
            _ => Value::Array(self.array(count, &mut body, depth)?),
        };
        finish(&body)?;
        Ok(value)
    }

    /// Decodes `count` values, each with its own constructor, from `body`. The count has been
    /// checked against `body`'s length, as every such value has at least one byte.
    pub(crate) fn values(
        &mut self,
        count: usize,
        body: &mut Bytes,
        depth: usize,
    ) -> Result<Vec<Value>, DecodeError> {
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(self.value(body, depth)?);
        }
        Ok(items)
    }

    /// Decodes an array's constructor and `count` items from `body`.
    fn array(
        &mut self,
        count: usize,
        body: &mut Bytes,
        depth: usize,
    ) -> Result<Array, DecodeError> {
        let mut code = take_u8(body)?;
        let descriptor = if code == 0x00 {
            let descriptor = self.value(body, depth)?;
            code = take_u8(body)?;
            Some(Box::new(descriptor))
        } else {
            None
        };
        let kind = element_kind(code).ok_or(DecodeError::InvalidFormatCode(code))?;
        // Items of a zero-width type have no bytes to check the count against; a budget
        // bounds them instead.
        if element_width(code) == 0 {
            self.zero_width = self
                .zero_width
                .checked_sub(count)
                .ok_or(DecodeError::TooManyElements(count as u64))?;
        } else if count > body.len() {
            return Err(DecodeError::TooManyElements(count as u64));
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(self.data(code, body, depth)?);
        }
        Ok(Array::from_parts(descriptor, kind, items))
    }
}

/// The depth for the content of a compound at `depth`, or `TooDeep`.
/// Decodes a value of a type that holds no other values, after its format code.
#[inline(never)]
fn scalar(code: u8, buf: &mut Bytes) -> Result<Value, DecodeError> {
    Ok(match code {
        0x40 => Value::Null,
        0x41 => Value::Bool(true),
        0x42 => Value::Bool(false),
        0x56 => match take_u8(buf)? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            other => return Err(DecodeError::InvalidBoolean(other)),
        },
        0x50 => Value::Ubyte(take_u8(buf)?),
        0x60 => Value::Ushort(u16::from_be_bytes(take_array(buf)?)),
        0x70 => Value::Uint(u32::from_be_bytes(take_array(buf)?)),
        0x52 => Value::Uint(take_u8(buf)?.into()),
        0x43 => Value::Uint(0),
        0x80 => Value::Ulong(u64::from_be_bytes(take_array(buf)?)),
        0x53 => Value::Ulong(take_u8(buf)?.into()),
        0x44 => Value::Ulong(0),
        0x51 => Value::Byte(i8::from_be_bytes(take_array(buf)?)),
        0x61 => Value::Short(i16::from_be_bytes(take_array(buf)?)),
        0x71 => Value::Int(i32::from_be_bytes(take_array(buf)?)),
        0x54 => Value::Int(i8::from_be_bytes(take_array(buf)?).into()),
        0x81 => Value::Long(i64::from_be_bytes(take_array(buf)?)),
        0x55 => Value::Long(i8::from_be_bytes(take_array(buf)?).into()),
        0x72 => Value::Float(f32::from_be_bytes(take_array(buf)?)),
        0x82 => Value::Double(f64::from_be_bytes(take_array(buf)?)),
        0x74 => Value::Decimal32(take_array(buf)?),
        0x84 => Value::Decimal64(take_array(buf)?),
        0x94 => Value::Decimal128(take_array(buf)?),
        0x73 => {
            let raw = u32::from_be_bytes(take_array(buf)?);
            Value::Char(char::from_u32(raw).ok_or(DecodeError::InvalidChar(raw))?)
        }
        0x83 => Value::Timestamp(i64::from_be_bytes(take_array(buf)?)),
        0x98 => Value::Uuid(take_array(buf)?),
        0xa0 | 0xb0 => Value::Binary(take_variable(code, buf)?),
        0xa1 | 0xb1 => Value::String(utf8(take_variable(code, buf)?)?),
        0xa3 | 0xb3 => Value::Symbol(utf8(take_variable(code, buf)?)?.into()),
        other => return Err(DecodeError::InvalidFormatCode(other)),
    })
}

fn nest(depth: usize) -> Result<usize, DecodeError> {
    if depth >= MAX_DEPTH {
        Err(DecodeError::TooDeep)
    } else {
        Ok(depth + 1)
    }
}

/// Fails unless a compound's body was consumed exactly.
fn finish(body: &Bytes) -> Result<(), DecodeError> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::SizeMismatch)
    }
}

pub(crate) fn take_u8(buf: &mut Bytes) -> Result<u8, DecodeError> {
    if buf.is_empty() {
        return Err(DecodeError::UnexpectedEnd);
    }
    Ok(buf.get_u8())
}

fn take_array<const N: usize>(buf: &mut Bytes) -> Result<[u8; N], DecodeError> {
    let mut out = [0; N];
    if buf.len() < N {
        return Err(DecodeError::UnexpectedEnd);
    }
    buf.copy_to_slice(&mut out);
    Ok(out)
}

/// Takes `len` bytes, checked against what remains.
fn take_bytes(buf: &mut Bytes, len: usize) -> Result<Bytes, DecodeError> {
    if buf.len() < len {
        return Err(DecodeError::UnexpectedEnd);
    }
    Ok(buf.split_to(len))
}

/// Takes the data of a `binary`, `string` or `symbol`: its 1- or 4-byte length, then bytes.
fn take_variable(code: u8, buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = if code & 0xf0 == 0xa0 {
        usize::from(take_u8(buf)?)
    } else {
        u32::from_be_bytes(take_array(buf)?) as usize
    };
    take_bytes(buf, len)
}

/// Takes a compound's size and count, and returns the count and the bytes after it. For a list
/// or map the count is checked here against the body (every element has a byte at least);
/// an array's is checked by [`Decoder::array`], which knows its items' width.
fn take_compound(code: u8, buf: &mut Bytes) -> Result<(usize, Bytes), DecodeError> {
    let wide = code & 0xf0 != 0xc0 && code & 0xf0 != 0xe0;
    let (size, count_len) = if wide {
        (u32::from_be_bytes(take_array(buf)?) as usize, 4)
    } else {
        (usize::from(take_u8(buf)?), 1)
    };
    let mut body = take_bytes(buf, size)?;
    if body.len() < count_len {
        return Err(DecodeError::SizeMismatch);
    }
    let count = if wide {
        body.get_u32() as usize
    } else {
        usize::from(body.get_u8())
    };
    let is_array = code == 0xe0 || code == 0xf0;
    if !is_array && count > body.len() {
        return Err(DecodeError::TooManyElements(count as u64));
    }
    Ok((count, body))
}

fn utf8(bytes: Bytes) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8)
}

/// The fewest bytes an array item takes under `code`: 0 for the zero-width codes (`null`,
/// `true`, `false`, `uint0`, `ulong0`, `list0`), at least 1 for every other.
fn element_width(code: u8) -> usize {
    match code {
        0x40..=0x45 => 0,
        _ => 1,
    }
}

/// The type of an array whose items share the constructor `code`.
fn element_kind(code: u8) -> Option<TypeKind> {
    Some(match code {
        0x40 => TypeKind::Null,
        0x41 | 0x42 | 0x56 => TypeKind::Bool,
        0x50 => TypeKind::Ubyte,
        0x60 => TypeKind::Ushort,
        0x70 | 0x52 | 0x43 => TypeKind::Uint,
        0x80 | 0x53 | 0x44 => TypeKind::Ulong,
        0x51 => TypeKind::Byte,
        0x61 => TypeKind::Short,
        0x71 | 0x54 => TypeKind::Int,
        0x81 | 0x55 => TypeKind::Long,
        0x72 => TypeKind::Float,
        0x82 => TypeKind::Double,
        0x74 => TypeKind::Decimal32,
        0x84 => TypeKind::Decimal64,
        0x94 => TypeKind::Decimal128,
        0x73 => TypeKind::Char,
        0x83 => TypeKind::Timestamp,
        0x98 => TypeKind::Uuid,
        0xa0 | 0xb0 => TypeKind::Binary,
        0xa1 | 0xb1 => TypeKind::String,
        0xa3 | 0xb3 => TypeKind::Symbol,
        0x45 | 0xc0 | 0xd0 => TypeKind::List,
        0xc1 | 0xd1 => TypeKind::Map,
        0xe0 | 0xf0 => TypeKind::Array,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &'static [u8]) -> Result<Value, DecodeError> {
        let mut input = Bytes::from_static(bytes);
        let value = decode_value(&mut input)?;
        assert!(input.is_empty(), "{} bytes left", input.len());
        Ok(value)
    }

    #[test]
    fn every_integer_encoding_decodes_to_its_type() {
        assert_eq!(decode(&[0x43]), Ok(Value::Uint(0)));
        assert_eq!(decode(&[0x52, 7]), Ok(Value::Uint(7)));
        assert_eq!(decode(&[0x70, 0, 0, 1, 0]), Ok(Value::Uint(256)));
        assert_eq!(decode(&[0x44]), Ok(Value::Ulong(0)));
        assert_eq!(decode(&[0x53, 0x10]), Ok(Value::Ulong(16)));
        assert_eq!(decode(&[0x54, 0xff]), Ok(Value::Int(-1)));
        assert_eq!(decode(&[0x71, 0, 0, 0, 200]), Ok(Value::Int(200)));
        assert_eq!(decode(&[0x55, 0x80]), Ok(Value::Long(-128)));
        assert_eq!(decode(&[0x56, 1]), Ok(Value::Bool(true)));
        assert_eq!(decode(&[0x56, 2]), Err(DecodeError::InvalidBoolean(2)));
    }

    #[test]
    fn declared_sizes_beyond_the_input_fail_before_allocating() {
        // str32 of 4 GiB, list32 claiming 2³²−1 elements in 4 bytes.
        assert_eq!(
            decode(&[0xb1, 0xff, 0xff, 0xff, 0xff, b'a']),
            Err(DecodeError::UnexpectedEnd)
        );
        assert_eq!(
            decode(&[0xd0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::TooManyElements(u32::MAX.into()))
        );
        // An array32 of 2³²−1 nulls in 5 bytes: no bytes to pay for them.
        assert_eq!(
            decode(&[0xf0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0x40]),
            Err(DecodeError::TooManyElements(u32::MAX.into()))
        );
    }

    #[test]
    fn small_arrays_of_zero_width_items_are_fine() {
        let value = decode(&[0xe0, 2, 3, 0x41]).expect("three trues");
        let Value::Array(array) = value else {
            panic!("not an array: {value:?}");
        };
        assert_eq!(array.kind(), TypeKind::Bool);
        assert_eq!(array.items(), vec![Value::Bool(true); 3]);
    }

    #[test]
    fn zero_width_items_are_bounded_per_decode_not_per_input_length() {
        // Found by fuzzing: 255 nulls were accepted inside a long frame but refused alone.
        assert!(decode(&[0xe0, 2, 0xff, 0x40]).is_ok());
        let mut many = vec![0xd0, 0, 0, 0, 0, 0, 0, 0, 17];
        for _ in 0..17 {
            many.extend_from_slice(&[0xe0, 2, 0xff, 0x40]);
        }
        let size = u32::try_from(many.len() - 5).expect("small");
        many[1..5].copy_from_slice(&size.to_be_bytes());
        // 17 × 255 nulls exceed the budget, however the bytes are arranged.
        let mut input = Bytes::from(many);
        assert_eq!(
            decode_value(&mut input),
            Err(DecodeError::TooManyElements(255))
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let mut deep = vec![0x40];
        for _ in 0..=MAX_DEPTH {
            let size = u8::try_from(deep.len() + 1).expect("small");
            deep.splice(0..0, [0xc0, size, 1]);
        }
        let mut input = Bytes::from(deep);
        assert_eq!(decode_value(&mut input), Err(DecodeError::TooDeep));
    }

    #[test]
    fn compound_sizes_must_match_their_content() {
        // list8 of size 3 holding one 1-byte element and a stray byte.
        assert_eq!(
            decode(&[0xc0, 3, 1, 0x40, 0x40]),
            Err(DecodeError::SizeMismatch)
        );
        assert_eq!(
            decode(&[0xc1, 2, 1, 0x40]),
            Err(DecodeError::OddMapCount(1))
        );
    }
}
