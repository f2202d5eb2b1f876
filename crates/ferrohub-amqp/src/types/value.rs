//! [`Value`]: one variant per AMQP 1.0 type.

use bytes::Bytes;

use crate::types::{Array, Symbol};

/// An AMQP 1.0 value (part 1 §1.6 of the specification).
///
/// The variant is the AMQP type; see the [module docs](crate::types) for how it maps to format
/// codes. Equality is structural; two `Float`/`Double` NaNs are unequal, as in Rust.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// `null` (0x40): the absence of a value. Also what a missing field decodes to.
    #[default]
    Null,
    /// `boolean` (0x41 true, 0x42 false, or 0x56 with a byte).
    Bool(bool),
    /// `ubyte` (0x50).
    Ubyte(u8),
    /// `ushort` (0x60).
    Ushort(u16),
    /// `uint` (0x70, 0x52 smalluint, 0x43 uint0).
    Uint(u32),
    /// `ulong` (0x80, 0x53 smallulong, 0x44 ulong0). Also the usual descriptor type.
    Ulong(u64),
    /// `byte` (0x51).
    Byte(i8),
    /// `short` (0x61).
    Short(i16),
    /// `int` (0x71, 0x54 smallint). Azure's `status-code` is an `int` (amqp-contract §0).
    Int(i32),
    /// `long` (0x81, 0x55 smalllong). Event Hubs sequence numbers and epochs are `long`s.
    Long(i64),
    /// `float` (0x72), IEEE 754 binary32.
    Float(f32),
    /// `double` (0x82), IEEE 754 binary64.
    Double(f64),
    /// `decimal32` (0x74), IEEE 754 decimal32, kept as its raw big-endian bytes: nothing in the
    /// hub does decimal arithmetic.
    Decimal32([u8; 4]),
    /// `decimal64` (0x84), raw bytes.
    Decimal64([u8; 8]),
    /// `decimal128` (0x94), raw bytes.
    Decimal128([u8; 16]),
    /// `char` (0x73): one Unicode scalar value, sent as UTF-32BE.
    Char(char),
    /// `timestamp` (0x83): milliseconds since the Unix epoch, UTC. Azure's enqueued times.
    Timestamp(i64),
    /// `uuid` (0x98): 16 bytes in RFC 4122 (network) order. pyamqp's message ids.
    Uuid([u8; 16]),
    /// `binary` (0xa0, 0xb0). Decoded as a slice of the input, without copying.
    Binary(Bytes),
    /// `string` (0xa1, 0xb1): UTF-8 text.
    String(String),
    /// `symbol` (0xa3, 0xb3).
    Symbol(Symbol),
    /// `list` (0x45 list0, 0xc0, 0xd0): a sequence of values of any types.
    List(Vec<Value>),
    /// `map` (0xc1, 0xd1): key/value pairs in wire order. Kept as a vector, not a hash map,
    /// because the order is observable and keys of any type are allowed.
    Map(Vec<(Value, Value)>),
    /// `array` (0xe0, 0xf0): values sharing one constructor.
    Array(Array),
    /// A described value (0x00): a descriptor (usually a `ulong` or `symbol`) and a value.
    Described(Box<Described>),
}

/// A descriptor and the value it describes: how AMQP builds composite types (performatives,
/// message sections, filters) and restricted types.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    /// The descriptor: a `ulong` code such as `0x0000_0000_0000_0010` (open) or a `symbol`
    /// name such as `amqp:open:list`.
    pub descriptor: Value,
    /// The value described.
    pub value: Value,
}

/// The AMQP type of a [`Value`], without its data; the element type of an [`Array`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // One variant per `Value` variant, named the same.
pub enum TypeKind {
    Null,
    Bool,
    Ubyte,
    Ushort,
    Uint,
    Ulong,
    Byte,
    Short,
    Int,
    Long,
    Float,
    Double,
    Decimal32,
    Decimal64,
    Decimal128,
    Char,
    Timestamp,
    Uuid,
    Binary,
    String,
    Symbol,
    List,
    Map,
    Array,
    Described,
}

impl Value {
    /// A described value.
    pub fn described(descriptor: impl Into<Value>, value: impl Into<Value>) -> Self {
        Self::Described(Box::new(Described {
            descriptor: descriptor.into(),
            value: value.into(),
        }))
    }

    /// A `symbol` value.
    pub fn symbol(s: impl Into<Symbol>) -> Self {
        Self::Symbol(s.into())
    }

    /// The AMQP type of this value.
    pub fn kind(&self) -> TypeKind {
        match self {
            Self::Null => TypeKind::Null,
            Self::Bool(_) => TypeKind::Bool,
            Self::Ubyte(_) => TypeKind::Ubyte,
            Self::Ushort(_) => TypeKind::Ushort,
            Self::Uint(_) => TypeKind::Uint,
            Self::Ulong(_) => TypeKind::Ulong,
            Self::Byte(_) => TypeKind::Byte,
            Self::Short(_) => TypeKind::Short,
            Self::Int(_) => TypeKind::Int,
            Self::Long(_) => TypeKind::Long,
            Self::Float(_) => TypeKind::Float,
            Self::Double(_) => TypeKind::Double,
            Self::Decimal32(_) => TypeKind::Decimal32,
            Self::Decimal64(_) => TypeKind::Decimal64,
            Self::Decimal128(_) => TypeKind::Decimal128,
            Self::Char(_) => TypeKind::Char,
            Self::Timestamp(_) => TypeKind::Timestamp,
            Self::Uuid(_) => TypeKind::Uuid,
            Self::Binary(_) => TypeKind::Binary,
            Self::String(_) => TypeKind::String,
            Self::Symbol(_) => TypeKind::Symbol,
            Self::List(_) => TypeKind::List,
            Self::Map(_) => TypeKind::Map,
            Self::Array(_) => TypeKind::Array,
            Self::Described(_) => TypeKind::Described,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// The text of a `string`; `None` for any other type, `symbol` included.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The symbol of a `symbol`; `None` for any other type.
    pub fn as_symbol(&self) -> Option<&Symbol> {
        match self {
            Self::Symbol(s) => Some(s),
            _ => None,
        }
    }

    /// The text of a `string` or a `symbol`: for fields that lenient peers send as either.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            Self::Symbol(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// The bytes of a `binary`.
    pub fn as_binary(&self) -> Option<&Bytes> {
        match self {
            Self::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// The value of any integer type (signed or unsigned) as an `i128`, which holds them all.
    /// For fields whose type a peer may get wrong (a `handle` sent as `ulong`) without the
    /// value being wrong.
    pub fn as_integer(&self) -> Option<i128> {
        match *self {
            Self::Ubyte(v) => Some(v.into()),
            Self::Ushort(v) => Some(v.into()),
            Self::Uint(v) => Some(v.into()),
            Self::Ulong(v) => Some(v.into()),
            Self::Byte(v) => Some(v.into()),
            Self::Short(v) => Some(v.into()),
            Self::Int(v) => Some(v.into()),
            Self::Long(v) => Some(v.into()),
            _ => None,
        }
    }

    /// The descriptor and value of a described value.
    pub fn as_described(&self) -> Option<&Described> {
        match self {
            Self::Described(d) => Some(d),
            _ => None,
        }
    }
}

macro_rules! from_impls {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Self::$variant(v)
            }
        })*
    };
}

from_impls! {
    bool => Bool,
    u8 => Ubyte,
    u16 => Ushort,
    u32 => Uint,
    u64 => Ulong,
    i8 => Byte,
    i16 => Short,
    i32 => Int,
    i64 => Long,
    f32 => Float,
    f64 => Double,
    char => Char,
    Bytes => Binary,
    String => String,
    Symbol => Symbol,
    Vec<Value> => List,
    Vec<(Value, Value)> => Map,
    Array => Array,
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::String(s.to_owned())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}
