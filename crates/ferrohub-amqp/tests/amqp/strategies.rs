//! Proptest strategies for AMQP values, performatives and messages.

use bytes::Bytes;
use ferrohub_amqp::types::{Array, Symbol, TypeKind, Value};
use proptest::collection::vec;
use proptest::prelude::*;

/// Any scalar value (no compounds). Floats are never NaN, so that equality holds after a
/// round trip.
pub(crate) fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u8>().prop_map(Value::Ubyte),
        any::<u16>().prop_map(Value::Ushort),
        any::<u32>().prop_map(Value::Uint),
        prop_oneof![Just(0u32), 0u32..256].prop_map(Value::Uint),
        any::<u64>().prop_map(Value::Ulong),
        (0u64..300).prop_map(Value::Ulong),
        any::<i8>().prop_map(Value::Byte),
        any::<i16>().prop_map(Value::Short),
        any::<i32>().prop_map(Value::Int),
        (-200i32..200).prop_map(Value::Int),
        any::<i64>().prop_map(Value::Long),
        (-200i64..200).prop_map(Value::Long),
        any::<f32>()
            .prop_filter("not NaN", |f| !f.is_nan())
            .prop_map(Value::Float),
        any::<f64>()
            .prop_filter("not NaN", |f| !f.is_nan())
            .prop_map(Value::Double),
        any::<[u8; 4]>().prop_map(Value::Decimal32),
        any::<[u8; 8]>().prop_map(Value::Decimal64),
        any::<[u8; 16]>().prop_map(Value::Decimal128),
        any::<char>().prop_map(Value::Char),
        any::<i64>().prop_map(Value::Timestamp),
        any::<[u8; 16]>().prop_map(Value::Uuid),
        vec(any::<u8>(), 0..300).prop_map(|b| Value::Binary(Bytes::from(b))),
        ".{0,40}".prop_map(Value::String),
        "[a-z:.-]{0,20}".prop_map(|s| Value::Symbol(Symbol::new(s))),
    ]
}

/// An array of one element type.
fn array() -> impl Strategy<Value = Value> {
    prop_oneof![
        vec(any::<i64>(), 0..5)
            .prop_map(|v| array_of(TypeKind::Long, v.into_iter().map(Value::Long))),
        vec(any::<bool>(), 0..5)
            .prop_map(|v| array_of(TypeKind::Bool, v.into_iter().map(Value::Bool))),
        vec(".{0,10}", 0..5).prop_map(|v| Value::Array(Array::strings(v))),
        vec("[a-z]{0,300}", 0..3).prop_map(|v| Value::Array(Array::strings(v))),
        vec("[a-z:]{0,10}", 0..5)
            .prop_map(|v| { Value::Array(Array::symbols(v.into_iter().map(Symbol::new))) }),
        (0usize..4).prop_map(|n| array_of(TypeKind::Null, std::iter::repeat_n(Value::Null, n))),
        vec(any::<u32>(), 0..4).prop_map(|v| {
            Value::Array(
                Array::described(
                    Value::Ulong(0x77),
                    TypeKind::Uint,
                    v.into_iter().map(Value::Uint).collect(),
                )
                .expect("uints"),
            )
        }),
    ]
}

fn array_of(kind: TypeKind, items: impl Iterator<Item = Value>) -> Value {
    Value::Array(Array::new(kind, items.collect()).expect("one type"))
}

/// Any value, compounds nested a few levels deep.
pub(crate) fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![4 => scalar(), 1 => array()];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::List),
            vec((inner.clone(), inner.clone()), 0..5).prop_map(Value::Map),
            (inner.clone(), inner.clone()).prop_map(|(d, v)| Value::described(d, v)),
            vec(vec(inner.clone(), 0..3), 0..3)
                .prop_map(|lists| { array_of(TypeKind::List, lists.into_iter().map(Value::List)) }),
        ]
    })
}
