//! The type codec: round trips, the smallest encodings, and hostile input.

use bytes::{Bytes, BytesMut};
use ferrohub_amqp::types::{
    Array, DecodeError, MAX_ZERO_WIDTH_ITEMS, Symbol, TypeKind, Value, decode_value,
};
use proptest::prelude::*;

use super::strategies;

fn encode(value: &Value) -> Vec<u8> {
    value.to_bytes().expect("encodable").to_vec()
}

fn decode_all(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut input = Bytes::copy_from_slice(bytes);
    let value = decode_value(&mut input)?;
    assert!(input.is_empty(), "{} bytes left", input.len());
    Ok(value)
}

proptest! {
    #[test]
    fn every_value_round_trips(value in strategies::value()) {
        let bytes = encode(&value);
        prop_assert_eq!(decode_all(&bytes), Ok(value));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut input = Bytes::from(bytes);
        while !input.is_empty() {
            if decode_value(&mut input).is_err() {
                break;
            }
        }
    }

    /// Mutating valid encodings reaches deeper into the decoder than random bytes.
    #[test]
    fn mutated_encodings_never_panic(
        value in strategies::value(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode(&value);
        for (at, byte) in flips {
            let len = bytes.len();
            bytes[at % len] = byte;
        }
        let _ = decode_value(&mut Bytes::from(bytes));
    }
}

#[test]
fn integers_use_their_smallest_encoding() {
    assert_eq!(encode(&Value::Uint(0)), [0x43]);
    assert_eq!(encode(&Value::Uint(255)), [0x52, 0xff]);
    assert_eq!(encode(&Value::Uint(256)), [0x70, 0, 0, 1, 0]);
    assert_eq!(encode(&Value::Ulong(0)), [0x44]);
    assert_eq!(encode(&Value::Ulong(0x10)), [0x53, 0x10]);
    assert_eq!(encode(&Value::Int(-1)), [0x54, 0xff]);
    // The contract's status code: an `int`, four bytes once past a byte's range.
    assert_eq!(encode(&Value::Int(200)), [0x71, 0, 0, 0, 200]);
    assert_eq!(encode(&Value::Long(7)), [0x55, 7]);
    assert_eq!(
        encode(&Value::Long(1 << 40)),
        [0x81, 0, 0, 1, 0, 0, 0, 0, 0]
    );
    let time = 1_603_288_810_824_i64;
    assert_eq!(
        encode(&Value::Timestamp(time)),
        [&[0x83][..], &time.to_be_bytes()].concat()
    );
}

#[test]
fn variable_width_types_switch_to_32_bit_lengths_at_256_bytes() {
    let short = encode(&Value::String("a".repeat(255)));
    assert_eq!(short[..2], [0xa1, 255]);
    let long = encode(&Value::String("a".repeat(256)));
    assert_eq!(long[..5], [0xb1, 0, 0, 1, 0]);
    assert_eq!(encode(&Value::symbol("x")), [0xa3, 1, b'x']);
    assert_eq!(encode(&Value::Binary(Bytes::new())), [0xa0, 0]);
}

#[test]
fn compounds_use_their_smallest_encoding() {
    assert_eq!(encode(&Value::List(vec![])), [0x45]);
    assert_eq!(
        encode(&Value::List(vec![Value::Null, Value::Bool(true)])),
        [0xc0, 3, 2, 0x40, 0x41]
    );
    assert_eq!(encode(&Value::Map(vec![])), [0xc1, 1, 0]);
    let big = Value::List(vec![Value::Binary(Bytes::from(vec![0; 300]))]);
    let bytes = encode(&big);
    assert_eq!(bytes[..9], [0xd0, 0, 0, 1, 0x35, 0, 0, 0, 1]);
    assert_eq!(bytes.len(), 9 + 5 + 300);
}

#[test]
fn arrays_of_strings_use_one_constructor() {
    // Event Hubs partition ids (amqp-contract §3.3): 0xe0 with 0xa1 elements.
    let ids = Value::Array(Array::strings(["0", "1"]));
    assert_eq!(encode(&ids), [0xe0, 6, 2, 0xa1, 1, b'0', 1, b'1']);
    let long = Value::Array(Array::strings(["a".repeat(300)]));
    let bytes = encode(&long);
    assert_eq!(bytes[0], 0xe0 | 0x10);
    assert_eq!(bytes[9], 0xb1);
    assert_eq!(decode_all(&bytes), Ok(long));
}

#[test]
fn arrays_refuse_mixed_types() {
    assert!(Array::new(TypeKind::Int, vec![Value::Int(1), Value::Long(2)]).is_err());
    assert!(Array::new(TypeKind::Described, vec![]).is_err());
}

#[test]
fn binary_is_decoded_without_copying() {
    let bytes = Bytes::from(encode(&Value::Binary(Bytes::from_static(b"payload"))));
    let mut input = bytes.clone();
    let Ok(Value::Binary(payload)) = decode_value(&mut input) else {
        panic!("not a binary");
    };
    assert_eq!(payload, "payload");
    // The payload points into the input's memory.
    assert_eq!(payload.as_ptr(), bytes[2..].as_ptr());
}

#[test]
fn invalid_text_is_refused() {
    assert_eq!(decode_all(&[0xa1, 1, 0xff]), Err(DecodeError::InvalidUtf8));
    assert_eq!(
        decode_all(&[0x73, 0, 0, 0xd8, 0]),
        Err(DecodeError::InvalidChar(0xd800))
    );
    assert_eq!(
        decode_all(&[0x99]),
        Err(DecodeError::InvalidFormatCode(0x99))
    );
}

#[test]
fn encode_failures_leave_the_buffer_unchanged() {
    // Nothing the tests can allocate is too large, so check the contract on success instead:
    // encoding appends exactly the value.
    let mut buf = BytesMut::from(&b"prefix"[..]);
    Value::symbol(Symbol::from_static("amqp:accepted:list"))
        .encode(&mut buf)
        .expect("encodable");
    assert_eq!(&buf[..6], b"prefix");
    assert_eq!(buf[6], 0xa3);
}

/// How many values a decoded tree holds, and how many bytes of text it copied.
fn weight(value: &Value) -> (usize, usize) {
    let sum = |values: &mut dyn Iterator<Item = &Value>| {
        values
            .map(weight)
            .fold((0, 0), |(n, b), (vn, vb)| (n + vn, b + vb))
    };
    let (n, b) = match value {
        Value::String(s) => (0, s.len()),
        Value::Symbol(s) => (0, s.as_str().len()),
        Value::List(items) => sum(&mut items.iter()),
        Value::Map(pairs) => sum(&mut pairs.iter().flat_map(|(k, v)| [k, v])),
        Value::Array(array) => {
            let (n, b) = sum(&mut array.items().iter());
            let (dn, db) = array.descriptor().map_or((0, 0), weight);
            (n + dn, b + db)
        }
        Value::Described(d) => {
            let (dn, db) = weight(&d.descriptor);
            let (vn, vb) = weight(&d.value);
            (dn + vn, db + vb)
        }
        _ => (0, 0),
    };
    (n + 1, b)
}

proptest! {
    /// What decodes holds at most one value per input byte plus the zero-width array items
    /// (capped per decode), and no more text than the input had: the decoder's allocations
    /// follow.
    #[test]
    fn decoded_trees_are_bounded_by_the_input(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        zero_width in 0usize..300,
    ) {
        // Arbitrary bytes, and an array of zero-width items at the front to stress the budget.
        let count = u8::try_from(zero_width.min(255)).expect("small");
        let mut input = vec![0xe0, 2, count, 0x40];
        input.extend_from_slice(&bytes);
        for input in [&input[..], &bytes[..]] {
            let mut buf = Bytes::copy_from_slice(input);
            if let Ok(value) = decode_value(&mut buf) {
                let (values, text) = weight(&value);
                prop_assert!(values <= input.len() + MAX_ZERO_WIDTH_ITEMS);
                prop_assert!(text <= input.len());
            }
        }
    }
}

/// Fuzzing (amqp_decode): a value inside a long input decoded, but its re-encoding alone did
/// not (255 nulls were charged against a budget proportional to the input length).
#[test]
fn regression_null_array_decodes_alone_as_in_context() {
    let input = super::golden::hex(
        "e0 02 ff 40 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 e0 02 ff 40 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 40 00 00 00 00 00 00 00 00 00 00 00 00 00 40",
    );
    let mut buf = Bytes::from(input);
    let value = decode_value(&mut buf).expect("an array of nulls");
    let once = value.to_bytes().expect("encodable");
    assert_eq!(decode_all(&once), Ok(value));
}
