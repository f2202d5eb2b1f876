//! Performatives and SASL frames: the exact bytes the hub sends (amqp-contract §1.2: full
//! width, small-ulong descriptors, list8/list32, never list0), lenient decoding, round trips.

use bytes::{Bytes, BytesMut};
use ferrohub_amqp::condition;
use ferrohub_amqp::performative::{
    AmqpError, Attach, Begin, Close, DeliveryState, Detach, Disposition, End, Fields, Flow, Open,
    Performative, ReceiverSettleMode, Role, SaslCode, SaslFrame, SaslInit, SaslMechanisms,
    SaslOutcome, SenderSettleMode, Source, Target, Transfer,
};
use ferrohub_amqp::types::{DecodeError, Symbol, Value};
use proptest::prelude::*;

use super::strategies::performatives::performative;

/// Bytes from a readable hex string: pairs of hex digits, `"text"` for ASCII, spaces ignored.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut parts = s.split('"');
    while let Some(hex) = parts.next() {
        let digits: Vec<char> = hex.chars().filter(|c| !c.is_whitespace()).collect();
        for pair in digits.chunks(2) {
            let text: String = pair.iter().collect();
            out.push(u8::from_str_radix(&text, 16).expect("hex digits"));
        }
        if let Some(text) = parts.next() {
            out.extend_from_slice(text.as_bytes());
        }
    }
    out
}

fn body(p: &Performative) -> Vec<u8> {
    let mut buf = BytesMut::new();
    p.encode(&mut buf).expect("encodable");
    buf.to_vec()
}

fn decode(bytes: &[u8]) -> Result<Performative, DecodeError> {
    let (p, payload) = Performative::decode(Bytes::copy_from_slice(bytes))?;
    assert!(payload.is_empty());
    Ok(p)
}

#[test]
fn open_is_full_width() {
    let open = Performative::Open(Open {
        container_id: "hub".into(),
        hostname: None,
        max_frame_size: 65536,
        channel_max: 255,
        idle_time_out: Some(30_000),
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    });
    assert_eq!(
        body(&open),
        hex(
            r#"00 53 10 c0 19 0a a1 03 "hub" 40 70 00 01 00 00 60 00 ff 70 00 00 75 30
               40 40 40 40 40"#
        )
    );
}

#[test]
fn begin_is_full_width() {
    let begin = Performative::Begin(Begin {
        remote_channel: Some(0),
        next_outgoing_id: 0,
        incoming_window: 5000,
        outgoing_window: 5000,
        handle_max: 255,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    });
    assert_eq!(
        body(&begin),
        hex("00 53 11 c0 14 08 60 00 00 43 70 00 00 13 88 70 00 00 13 88 52 ff 40 40 40")
    );
}

#[test]
fn attach_is_full_width_with_full_width_termini() {
    let attach = Performative::Attach(Box::new(Attach {
        name: "n".into(),
        handle: 0,
        role: Role::Receiver,
        snd_settle_mode: SenderSettleMode::Settled,
        rcv_settle_mode: ReceiverSettleMode::First,
        source: Some(Source::address("$cbs")),
        target: Some(Target::address("$cbs")),
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count: Some(0),
        max_message_size: Some(65536),
        offered_capabilities: None,
        desired_capabilities: None,
        properties: Some(Fields::new()),
    }));
    assert_eq!(
        body(&attach),
        hex(r#"00 53 12 c0 43 0e a1 01 "n" 43 41 50 01 50 00
               00 53 28 c0 11 0b a1 04 "$cbs" 40 40 40 40 40 40 40 40 40 40
               00 53 29 c0 0d 07 a1 04 "$cbs" 40 40 40 40 40 40
               40 42 43 80 00 00 00 00 00 01 00 00 40 40 c1 01 00"#)
    );
}

#[test]
fn flow_is_full_width() {
    let flow = Performative::Flow(Flow {
        next_incoming_id: Some(0),
        incoming_window: 5000,
        next_outgoing_id: 0,
        outgoing_window: 5000,
        handle: Some(0),
        delivery_count: Some(0),
        link_credit: Some(100),
        available: None,
        drain: false,
        echo: false,
        properties: None,
    });
    assert_eq!(
        body(&flow),
        hex("00 53 13 c0 15 0b 43 70 00 00 13 88 43 70 00 00 13 88 43 43 52 64 40 42 42 40")
    );
}

#[test]
fn transfer_is_full_width_and_keeps_its_payload() {
    let transfer = Performative::Transfer(Transfer {
        handle: 1,
        delivery_id: Some(0),
        delivery_tag: Some(Bytes::from_static(b"t1")),
        message_format: Some(0),
        settled: Some(true),
        ..Transfer::default()
    });
    let expected = hex(r#"00 53 14 c0 10 0b 52 01 43 a0 02 "t1" 43 41 42 40 40 42 42 42"#);
    assert_eq!(body(&transfer), expected);

    let mut frame = BytesMut::new();
    let size = transfer
        .encode_frame(3, b"payload", &mut frame)
        .expect("encodable");
    assert_eq!(size, 8 + expected.len() + 7);
    assert_eq!(frame[..8], [0, 0, 0, size as u8, 2, 0, 0, 3]);
    let (decoded, payload) =
        Performative::decode(Bytes::copy_from_slice(&frame[8..])).expect("decodes");
    assert_eq!(decoded, transfer);
    assert_eq!(payload, "payload");
}

#[test]
fn disposition_is_full_width() {
    let disposition = Performative::Disposition(Disposition {
        role: Role::Receiver,
        first: 0,
        last: None,
        settled: true,
        state: Some(DeliveryState::Accepted),
        batchable: false,
    });
    assert_eq!(
        body(&disposition),
        hex("00 53 15 c0 0c 06 41 43 40 41 00 53 24 c0 01 00 42")
    );
    let rejected = Performative::Disposition(Disposition {
        role: Role::Receiver,
        first: 7,
        last: Some(9),
        settled: true,
        state: Some(DeliveryState::Rejected {
            error: Some(AmqpError::condition(condition::NOT_FOUND)),
        }),
        batchable: false,
    });
    assert_eq!(
        body(&rejected),
        hex(r#"00 53 15 c0 26 06 41 52 07 52 09 41
               00 53 25 c0 19 01 00 53 1d c0 13 03 a3 0e "amqp:not-found" 40 40 42"#)
    );
}

#[test]
fn detach_end_and_close_are_full_width() {
    let detach = Performative::Detach(Detach {
        handle: 1,
        closed: true,
        error: None,
    });
    assert_eq!(body(&detach), hex("00 53 16 c0 05 03 52 01 41 40"));
    // fe2o3 sends `00 53 17 45`, which pyamqp misparses (amqp-contract §1.2).
    assert_eq!(
        body(&Performative::End(End::default())),
        hex("00 53 17 c0 02 01 40")
    );
    assert_eq!(
        body(&Performative::Close(Close::default())),
        hex("00 53 18 c0 02 01 40")
    );
    let close = Performative::Close(Close {
        error: Some(AmqpError::new(condition::RESOURCE_LIMIT_EXCEEDED, "idle")),
    });
    assert_eq!(
        body(&close),
        hex(
            r#"00 53 18 c0 2c 01 00 53 1d c0 26 03 a3 1c "amqp:resource-limit-exceeded"
               a1 04 "idle" 40"#
        )
    );
}

#[test]
fn sasl_frames_are_full_width() {
    let mechanisms = SaslFrame::Mechanisms(SaslMechanisms {
        mechanisms: ["MSSBCBS", "PLAIN", "ANONYMOUS", "EXTERNAL"]
            .into_iter()
            .map(Symbol::from_static)
            .collect(),
    });
    let mut buf = BytesMut::new();
    mechanisms.encode(&mut buf).expect("encodable");
    assert_eq!(
        buf.to_vec(),
        hex(
            r#"00 53 40 c0 26 01 e0 23 04 a3 07 "MSSBCBS" 05 "PLAIN" 09 "ANONYMOUS" 08 "EXTERNAL""#
        )
    );
    let mut buf = BytesMut::new();
    SaslFrame::Outcome(SaslOutcome::ok())
        .encode_frame(&mut buf)
        .expect("encodable");
    assert_eq!(
        buf.to_vec(),
        hex("00 00 00 11 02 01 00 00 00 53 44 c0 04 02 50 00 40")
    );
}

#[test]
fn sasl_init_as_uamqp_and_rhea_send_it() {
    // uamqp: the mechanism only (real-clients §5.2).
    let init = SaslFrame::decode(Bytes::from(hex(r#"00 53 41 c0 0a 01 a3 07 "MSSBCBS""#)))
        .expect("decodes");
    assert_eq!(
        init,
        SaslFrame::Init(SaslInit {
            mechanism: Symbol::from_static("MSSBCBS"),
            initial_response: None,
            hostname: None,
        })
    );
    // rhea: ANONYMOUS with `\0{keyName}` and the host (amqp-contract §0, R).
    let init = SaslFrame::decode(Bytes::from(hex(
        r#"00 53 41 c0 25 03 a3 09 "ANONYMOUS" a0 0c 00 "iothubowner" a1 09 "127.0.0.1""#,
    )))
    .expect("decodes");
    let SaslFrame::Init(init) = init else {
        panic!("not an init: {init:?}");
    };
    assert_eq!(
        init.initial_response.as_deref(),
        Some(&b"\0iothubowner"[..])
    );
    assert_eq!(init.hostname.as_deref(), Some("127.0.0.1"));
    let outcome = SaslFrame::decode(Bytes::from(hex("00 53 44 c0 03 01 50 01"))).expect("decodes");
    assert_eq!(
        outcome,
        SaslFrame::Outcome(SaslOutcome {
            code: SaslCode::Auth,
            additional_data: None
        })
    );
}

#[test]
fn decoding_accepts_list0_short_lists_and_symbolic_descriptors() {
    assert_eq!(
        decode(&hex("00 53 17 45")),
        Ok(Performative::End(End::default()))
    );
    assert_eq!(
        decode(&hex(r#"00 a3 0f "amqp:close:list" 45"#)),
        Ok(Performative::Close(Close::default()))
    );
    // An OPEN with only its container id: every other field takes its default.
    let Ok(Performative::Open(open)) = decode(&hex(r#"00 53 10 c0 05 01 a1 02 "c1""#)) else {
        panic!("not an open");
    };
    assert_eq!(open.container_id, "c1");
    assert_eq!(open.max_frame_size, u32::MAX);
    assert_eq!(open.channel_max, u16::MAX);
    // A handle sent as a ulong, a hostname as a symbol.
    let Ok(Performative::Detach(detach)) =
        decode(&hex("00 53 16 c0 0a 01 80 00 00 00 00 00 00 00 05"))
    else {
        panic!("not a detach");
    };
    assert_eq!(detach.handle, 5);
    let Ok(Performative::Open(open)) = decode(&hex(r#"00 53 10 c0 09 02 a1 02 "c1" a3 02 "h1""#))
    else {
        panic!("not an open");
    };
    assert_eq!(open.hostname.as_deref(), Some("h1"));
    // "multiple" fields: a single symbol reads as a list of one.
    let Ok(Performative::Open(open)) = decode(&hex(
        r#"00 53 10 c0 0d 08 a1 01 "c" 40 40 40 40 40 40 a3 01 "x""#,
    )) else {
        panic!("not an open");
    };
    assert_eq!(
        open.offered_capabilities,
        Some(vec![Symbol::from_static("x")])
    );
}

#[test]
fn missing_and_invalid_fields_name_themselves() {
    assert_eq!(
        decode(&hex("00 53 16 45")),
        Err(DecodeError::MissingField {
            composite: "detach",
            field: "handle"
        })
    );
    let err = decode(&hex(r#"00 53 16 c0 04 01 a1 01 "x""#)).expect_err("a string handle");
    assert_eq!(
        err,
        DecodeError::InvalidField {
            composite: "detach",
            field: "handle"
        }
    );
    assert_eq!(err.condition(), condition::INVALID_FIELD);
    // A negative handle does not fit a uint.
    assert!(decode(&hex("00 53 16 c0 03 01 54 ff")).is_err());
    // A settle mode out of range.
    assert!(matches!(
        decode(&hex(r#"00 53 12 c0 08 04 a1 01 "n" 43 41 50 03"#)),
        Err(DecodeError::InvalidField {
            field: "snd-settle-mode",
            ..
        })
    ));
    // Not a performative at all.
    assert!(matches!(
        decode(&hex("00 53 70 45")),
        Err(DecodeError::UnexpectedDescriptor { .. })
    ));
    assert_eq!(
        decode(&hex("40")),
        Err(DecodeError::NotAList("performative"))
    );
}

#[test]
fn the_event_hubs_filter_survives_an_echo() {
    // The JS consumer's source: ulong filter descriptor (amqp-contract §3.4).
    let mut filter = Fields::new();
    filter.insert(
        Symbol::from_static("apache.org:selector-filter:string"),
        Value::described(
            Value::Ulong(0x0000_468C_0000_0004),
            "amqp.annotation.x-opt-offset > '-1'",
        ),
    );
    let source = Source {
        address: Some("hub/ConsumerGroups/$default/Partitions/0".into()),
        filter: Some(filter),
        ..Source::default()
    };
    let attach = Attach {
        name: "r".into(),
        handle: 0,
        role: Role::Receiver,
        snd_settle_mode: SenderSettleMode::Unsettled,
        rcv_settle_mode: ReceiverSettleMode::First,
        source: Some(source),
        target: Some(Target::address("consumer")),
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count: None,
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: Some(vec![Symbol::from_static("com.microsoft:georeplication")]),
        properties: None,
    };
    let p = Performative::Attach(Box::new(attach));
    assert_eq!(decode(&body(&p)), Ok(p));
}

proptest! {
    #[test]
    fn every_performative_round_trips(p in performative()) {
        let bytes = body(&p);
        // Full width: a small-ulong descriptor, then list8 or list32.
        prop_assert_eq!(&bytes[..2], &[0x00, 0x53]);
        prop_assert!(bytes[3] == 0xc0 || bytes[3] == 0xd0);
        prop_assert_eq!(decode(&bytes), Ok(p));
    }

    #[test]
    fn arbitrary_frame_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Performative::decode(Bytes::from(bytes.clone()));
        let _ = SaslFrame::decode(Bytes::from(bytes));
    }

    #[test]
    fn mutated_performatives_never_panic(
        p in performative(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = body(&p);
        for (at, byte) in flips {
            let len = bytes.len();
            bytes[at % len] = byte;
        }
        let _ = Performative::decode(Bytes::from(bytes));
    }
}
