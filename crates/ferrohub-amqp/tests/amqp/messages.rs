//! Messages: sections, ids with their types, batches.

use bytes::Bytes;
use ferrohub_amqp::message::{
    Annotations, ApplicationProperties, BATCH_MESSAGE_FORMAT, Body, Message, MessageId, Properties,
    decode_batch,
};
use ferrohub_amqp::types::{DecodeError, Value};
use proptest::prelude::*;

use super::golden::hex;
use super::strategies::performatives::message;

proptest! {
    #[test]
    fn every_message_round_trips(m in message()) {
        let bytes = m.to_bytes().expect("encodable");
        prop_assert_eq!(Message::decode(bytes), Ok(m));
    }

    #[test]
    fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Message::decode(Bytes::from(bytes.clone()));
        let _ = decode_batch(Bytes::from(bytes));
    }
}

#[test]
fn sections_use_small_ulong_descriptors_and_trim_trailing_nulls() {
    let mut app = ApplicationProperties::new();
    app.insert("status-code", Value::Int(200));
    let message = Message {
        properties: Some(Properties {
            correlation_id: Some(MessageId::Ulong(0)),
            ..Properties::default()
        }),
        application_properties: Some(app),
        body: Body::Value(Value::Null),
        ..Message::default()
    };
    assert_eq!(
        message.to_bytes().expect("encodable").to_vec(),
        hex(r#"00 53 73 c0 07 06 40 40 40 40 40 44
               00 53 74 c1 13 02 a1 0b "status-code" 71 00 00 00 c8
               00 53 77 40"#)
    );
}

#[test]
fn ids_keep_their_type() {
    for id in [
        MessageId::Ulong(7),
        MessageId::Uuid([0xab; 16]),
        MessageId::Binary(Bytes::from_static(b"\x01\x02")),
        MessageId::String("7".into()),
    ] {
        let message = Message {
            properties: Some(Properties {
                message_id: Some(id.clone()),
                ..Properties::default()
            }),
            ..Message::default()
        };
        let decoded = Message::decode(message.to_bytes().expect("encodable")).expect("decodes");
        assert_eq!(decoded.properties.and_then(|p| p.message_id), Some(id));
    }
    assert_eq!(
        MessageId::Uuid(*b"\x12\x34\x56\x78\x9a\xbc\xde\xf0\x12\x34\x56\x78\x9a\xbc\xde\xf0")
            .to_string(),
        "12345678-9abc-def0-1234-56789abcdef0"
    );
}

#[test]
fn data_sections_are_slices_of_the_payload() {
    let payload = Message::with_data(Bytes::from_static(b"hello"))
        .to_bytes()
        .expect("encodable");
    let message = Message::decode(payload.clone()).expect("decodes");
    let data = message.body.as_data().expect("data");
    assert_eq!(data, [Bytes::from_static(b"hello")]);
    assert_eq!(data[0].as_ptr(), payload[5..].as_ptr());
}

#[test]
fn section_order_and_kinds_are_checked() {
    // properties after application-properties.
    let bytes = hex("00 53 74 c1 01 00 00 53 73 45");
    assert_eq!(
        Message::decode(Bytes::from(bytes)),
        Err(DecodeError::InvalidSections("sections out of order"))
    );
    // a data section then an amqp-value.
    let bytes = hex("00 53 75 a0 00 00 53 77 40");
    assert!(matches!(
        Message::decode(Bytes::from(bytes)),
        Err(DecodeError::InvalidSections(_))
    ));
    // two headers.
    let bytes = hex("00 53 70 45 00 53 70 45");
    assert_eq!(
        Message::decode(Bytes::from(bytes)),
        Err(DecodeError::InvalidSections("a section appears twice"))
    );
    // a performative where a section belongs.
    assert!(matches!(
        Message::decode(Bytes::from(hex("00 53 10 45"))),
        Err(DecodeError::UnexpectedDescriptor { .. })
    ));
}

#[test]
fn batches_unpack_into_their_messages() {
    let inner: Vec<Message> = (0..3)
        .map(|i| {
            let mut app = ApplicationProperties::new();
            app.insert("i", Value::Int(i));
            Message {
                application_properties: Some(app),
                body: Body::data(vec![b'0' + i as u8]),
                ..Message::default()
            }
        })
        .collect();
    let mut annotations = Annotations::new();
    annotations.insert("x-opt-partition-key", "k");
    let envelope = Message {
        message_annotations: Some(annotations),
        body: Body::Data(
            inner
                .iter()
                .map(|m| m.to_bytes().expect("encodable"))
                .collect(),
        ),
        ..Message::default()
    };
    assert_eq!(BATCH_MESSAGE_FORMAT, 0x8001_3700);
    let batch = decode_batch(envelope.to_bytes().expect("encodable")).expect("decodes");
    assert_eq!(batch.messages, inner);
    assert_eq!(
        batch
            .envelope
            .message_annotations
            .as_ref()
            .and_then(|a| a.get("x-opt-partition-key")),
        Some(&Value::from("k"))
    );
    // A batch whose body is not data sections.
    let bad = Message {
        body: Body::Value(Value::Null),
        ..Message::default()
    };
    assert!(decode_batch(bad.to_bytes().expect("encodable")).is_err());
}
