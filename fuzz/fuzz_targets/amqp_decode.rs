//! Decodes arbitrary bytes as every AMQP structure the hub reads: a protocol header, a stream
//! of frames (performatives and SASL frames), a message (and an Event Hubs batch), a value,
//! and the Azure requests, addresses and filters built on them.
//!
//! Checked: nothing panics, and whatever decodes re-encodes stably: encoding it, decoding
//! that and encoding again gives the same bytes (bytes, not values, so that NaN floats compare).
#![no_main]

use bytes::{Bytes, BytesMut};
use ferrohub_amqp::azure::address::Address;
use ferrohub_amqp::azure::cbs::PutToken;
use ferrohub_amqp::azure::filter;
use ferrohub_amqp::azure::management::ReadRequest;
use ferrohub_amqp::frame::{Frame, FrameType, ProtocolHeader};
use ferrohub_amqp::message::{Message, decode_batch};
use ferrohub_amqp::performative::{Performative, SaslFrame};
use ferrohub_amqp::types::decode_value;

const MAX_FRAME: u32 = 64 * 1024;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ProtocolHeader::read(data);
    frames(data);
    message(data);
    value(data);
    let text = String::from_utf8_lossy(data);
    let _ = Address::parse(&text);
    let _ = filter::parse_selector(&text);
});

fn frames(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = Frame::decode(&mut buf, MAX_FRAME) {
        match frame.frame_type {
            FrameType::Amqp if frame.body.is_empty() => {}
            FrameType::Amqp => {
                if let Ok((p, payload)) = Performative::decode(frame.body) {
                    let once = encode_performative(&p);
                    let (again, rest) = Performative::decode(once.clone())
                        .expect("an encoded performative decodes");
                    assert!(rest.is_empty());
                    assert_eq!(encode_performative(&again), once);
                    if let Performative::Attach(attach) = &p {
                        if let Some(source) = &attach.source {
                            let _ = filter::event_position(source);
                            if let Some(address) = &source.address {
                                let _ = Address::parse(address);
                            }
                        }
                        let _ = ferrohub_amqp::azure::event::epoch(attach);
                    }
                    if let Performative::Transfer(_) = p {
                        message(&payload);
                    }
                }
            }
            FrameType::Sasl => {
                if let Ok(f) = SaslFrame::decode(frame.body) {
                    let mut once = BytesMut::new();
                    f.encode(&mut once).expect("a decoded SASL frame encodes");
                    let again = SaslFrame::decode(once.clone().freeze()).expect("decodes again");
                    assert_eq!(again, f);
                }
            }
        }
    }
}

fn encode_performative(p: &Performative) -> Bytes {
    let mut buf = BytesMut::new();
    p.encode(&mut buf).expect("a decoded performative encodes");
    buf.freeze()
}

fn message(data: &[u8]) {
    if let Ok(m) = Message::decode(Bytes::copy_from_slice(data)) {
        let once = m.to_bytes().expect("a decoded message encodes");
        let again = Message::decode(once.clone()).expect("an encoded message decodes");
        assert_eq!(again.to_bytes().expect("encodes again"), once);
        let _ = PutToken::parse(&m);
        let _ = ReadRequest::parse(&m);
    }
    let _ = decode_batch(Bytes::copy_from_slice(data));
}

fn value(data: &[u8]) {
    let mut input = Bytes::copy_from_slice(data);
    if let Ok(v) = decode_value(&mut input) {
        let once = v.to_bytes().expect("a decoded value encodes");
        let again = decode_value(&mut once.clone()).expect("an encoded value decodes");
        assert_eq!(again.to_bytes().expect("encodes again"), once);
    }
}
