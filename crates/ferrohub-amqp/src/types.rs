//! The AMQP 1.0 type system (OASIS AMQP 1.0 part 1, "Types"): [`Value`] and its codec.
//!
//! Every AMQP value on the wire is a constructor byte (a format code, or `0x00` followed by a
//! descriptor and a constructor) and its data. [`Value`] has one variant per AMQP type, so the
//! variant a caller picks *is* the type that goes on the wire: `Value::Int(200)` is an AMQP
//! `int`, never a `long` or a `uint`, which is what the SDKs check (amqp-contract §0: status
//! codes are `int`, sequence numbers `long`, times `timestamp`). Within a type, [`Value::encode`]
//! picks the smallest encoding (`uint0`, `smalluint`, `list8`, `str8`, …); the decoder accepts
//! every encoding of a type and normalises it to the same variant.
//!
//! The decoder treats its input as hostile: every declared size or count is checked against
//! the bytes that remain before anything is allocated, every value but a zero-width array
//! item is paid for by bytes of its own while those items are capped per decode by
//! [`MAX_ZERO_WIDTH_ITEMS`] (so an `array32` of a billion `null`s in a few bytes fails instead
//! of allocating), and nesting is bounded by [`MAX_DEPTH`].
//! `binary` values are slices of the input [`Bytes`](bytes::Bytes), not copies.

mod array;
pub(crate) mod decode;
pub(crate) mod encode;
mod error;
mod symbol;
mod value;

pub use array::{Array, ArrayError};
pub use decode::{MAX_DEPTH, MAX_ZERO_WIDTH_ITEMS, decode_value};
pub use error::{DecodeError, EncodeError};
pub use symbol::Symbol;
pub use value::{Described, TypeKind, Value};

pub(crate) use decode::Decoder;
