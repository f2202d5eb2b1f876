//! The connection engine driven by byte-level scripts of the exchanges in amqp-contract §2.5,
//! §2.6 and §3.10, and by the edge cases around them.

use bytes::Bytes;
use ferrohub_amqp::condition;
use ferrohub_amqp::connection::{AttachReply, ConnectionConfig, Event, SaslPolicy, SendError};
use ferrohub_amqp::frame::{AMQP_HEADER, SASL_HEADER};
use ferrohub_amqp::message::{ApplicationProperties, Body, Message, MessageId, Properties};
use ferrohub_amqp::performative::{
    AmqpError, Close, DeliveryState, Detach, Disposition, End, Flow, Open, Performative,
    ReceiverSettleMode, Role, SaslCode, SaslFrame, SaslInit, SaslOutcome, SenderSettleMode,
    Transfer,
};
use ferrohub_amqp::types::{Symbol, Value};

use super::golden::hex;
use super::harness::{
    Harness, Out, attach, attached, begin, credit, frame, frame_with, open, opened, sasl, transfer,
};

fn config() -> ConnectionConfig {
    ConnectionConfig {
        container_id: "hub".into(),
        ..ConnectionConfig::default()
    }
}

fn closed_with(events: &[Event]) -> Option<&AmqpError> {
    match events.last() {
        Some(Event::Closed { error, .. }) => error.as_ref(),
        other => panic!("not closed: {other:?}"),
    }
}

/// The field count of a performative as encoded: the list's count byte.
fn field_count(out: &Out) -> u8 {
    let Out::Amqp { body, .. } = out else {
        panic!("not an AMQP frame: {out:?}");
    };
    assert_eq!(body[..2], [0x00, 0x53]);
    match body[3] {
        0xc0 => body[5],
        0xd0 => body[9],
        other => panic!("not list8/list32: {other:#x}"),
    }
}

/// §2.5: Python's uamqp sending C2D: SASL MSSBCBS, OPEN, BEGIN, the CBS link pair, put-token
/// with a ulong message-id, the hub's settled disposition and its response.
#[test]
fn uamqp_sasl_mssbcbs_then_cbs_put_token() {
    let mut h = Harness::new(config());
    h.input(0, &SASL_HEADER);
    let out = h.raw_output();
    assert_eq!(out[..8], SASL_HEADER);
    assert_eq!(
        out[8..],
        [
            &hex("00 00 00 33 02 01 00 00")[..],
            &hex(r#"00 53 40 c0 26 01 e0 23 04 a3 07 "MSSBCBS" 05 "PLAIN" 09 "ANONYMOUS" 08 "EXTERNAL""#)
        ]
        .concat()
    );

    // sasl-init with the mechanism only; the client pipelines its AMQP header and OPEN.
    let mut bytes = sasl(SaslFrame::Init(SaslInit {
        mechanism: Symbol::from_static("MSSBCBS"),
        initial_response: None,
        hostname: None,
    }));
    bytes.extend(AMQP_HEADER);
    bytes.extend(frame(0, open("uamqp-client")));
    h.input(1, &bytes);
    assert_eq!(
        h.event(),
        Event::SaslInit {
            mechanism: Symbol::from_static("MSSBCBS"),
            initial_response: None,
            hostname: None,
        }
    );
    // Nothing more is read until the driver decides.
    assert!(!h.conn.wants_read());
    assert!(h.output().is_empty());
    h.conn.sasl_outcome(SaslOutcome::ok());
    assert_eq!(
        h.output(),
        [Out::Sasl(SaslFrame::Outcome(SaslOutcome::ok()))]
    );
    assert!(h.conn.wants_read());
    h.resume(2);
    let out = h.output();
    assert_eq!(out[0], Out::Header(AMQP_HEADER));
    assert_eq!(field_count(&out[1]), 10);
    let Performative::Open(ours) = out[1].performative() else {
        panic!("not an OPEN");
    };
    assert_eq!(ours.container_id, "hub");
    assert_eq!(ours.max_frame_size, 65536);
    assert_eq!(ours.idle_time_out, Some(240_000));
    let Event::Opened {
        container_id,
        hostname,
        sasl_mechanism,
        ..
    } = h.event()
    else {
        panic!("not opened");
    };
    assert_eq!(container_id, "uamqp-client");
    assert_eq!(hostname.as_deref(), Some("hub.example"));
    assert_eq!(sasl_mechanism, Some(Symbol::from_static("MSSBCBS")));

    h.input(3, &frame(0, begin()));
    let out = h.output();
    assert_eq!(field_count(&out[0]), 8);
    let Performative::Begin(b) = out[0].performative() else {
        panic!("not a BEGIN");
    };
    assert_eq!(b.remote_channel, Some(0));
    assert_eq!(b.handle_max, 63);

    let mut bytes = frame(0, attach("$cbs-sender", 0, Role::Sender, "$cbs", "$cbs"));
    bytes.extend(frame(
        0,
        attach("$cbs-receiver", 1, Role::Receiver, "$cbs", "$cbs"),
    ));
    h.input(4, &bytes);
    let events = h.events();
    let [
        Event::Attach {
            link: sender,
            attach: a,
        },
        Event::Attach {
            link: receiver,
            attach: b,
        },
    ] = &events[..]
    else {
        panic!("{events:#?}");
    };
    assert_eq!((a.name.as_str(), a.role), ("$cbs-sender", Role::Sender));
    assert_eq!((b.name.as_str(), b.role), ("$cbs-receiver", Role::Receiver));
    let (sender, receiver) = (*sender, *receiver);
    assert_eq!(sender.session(), receiver.session());

    h.conn.accept_attach(sender, AttachReply::default());
    h.conn.accept_attach(
        receiver,
        AttachReply {
            snd_settle_mode: Some(SenderSettleMode::Settled),
            ..AttachReply::default()
        },
    );
    let out = h.output();
    assert_eq!(out.len(), 3, "{out:#?}");
    assert_eq!(field_count(&out[0]), 14);
    let Performative::Attach(reply) = out[0].performative() else {
        panic!("not an ATTACH");
    };
    assert_eq!(reply.role, Role::Receiver);
    assert_eq!(reply.rcv_settle_mode, ReceiverSettleMode::First);
    assert_eq!(
        reply.source.as_ref().and_then(|s| s.address.as_deref()),
        Some("$cbs")
    );
    assert_eq!(
        reply.target.as_ref().and_then(|t| t.address.as_deref()),
        Some("$cbs")
    );
    assert_eq!(reply.initial_delivery_count, None);
    assert_eq!(reply.max_message_size, Some(1_048_576));
    let Performative::Flow(flow) = out[1].performative() else {
        panic!("not a FLOW");
    };
    assert_eq!(flow.handle, Some(reply.handle));
    assert_eq!(flow.link_credit, Some(100));
    assert_eq!(field_count(&out[1]), 11);
    let Performative::Attach(reply) = out[2].performative() else {
        panic!("not an ATTACH");
    };
    let receiver_handle = reply.handle;
    assert_eq!(reply.role, Role::Sender);
    assert_eq!(reply.snd_settle_mode, SenderSettleMode::Settled);
    assert_eq!(reply.initial_delivery_count, Some(0));

    h.input(5, &frame(0, credit(1, 0, 100)));
    assert_eq!(
        h.event(),
        Event::Credit {
            link: receiver,
            credit: 100,
            drain: false
        }
    );

    // The put-token request: message-id ulong 0.
    let mut app = ApplicationProperties::new();
    app.insert("operation", "put-token");
    app.insert("type", "servicebus.windows.net:sastoken");
    app.insert("name", "https://hub.example");
    let request = Message {
        properties: Some(Properties {
            message_id: Some(MessageId::Ulong(0)),
            ..Properties::default()
        }),
        application_properties: Some(app),
        body: Body::Value(Value::from(
            "SharedAccessSignature sr=hub.example&sig=x&se=1",
        )),
        ..Message::default()
    }
    .to_bytes()
    .expect("encodable");
    h.input(6, &frame_with(0, transfer(0, 0, false), &request));
    let Event::Delivery {
        link,
        delivery_id,
        settled,
        message_format,
        payload,
        ..
    } = h.event()
    else {
        panic!("not a delivery");
    };
    assert_eq!((link, settled, message_format), (sender, false, 0));
    assert_eq!(payload, request);

    h.conn.settle(sender, delivery_id, DeliveryState::Accepted);
    let mut app = ApplicationProperties::new();
    app.insert("status-code", Value::Int(200));
    app.insert("status-description", "OK");
    let response = Message {
        properties: Some(Properties {
            correlation_id: Some(MessageId::Ulong(0)),
            ..Properties::default()
        }),
        application_properties: Some(app),
        body: Body::Value(Value::Null),
        ..Message::default()
    }
    .to_bytes()
    .expect("encodable");
    let sent = h
        .conn
        .send(
            receiver,
            Bytes::from_static(b"\0\0\0\0"),
            true,
            0,
            response.clone(),
        )
        .expect("credit");
    assert_eq!(sent.get(), 0);
    let out = h.output();
    assert_eq!(out.len(), 2, "{out:#?}");
    // The settled disposition, full width.
    assert_eq!(
        out[0],
        Out::Amqp {
            channel: 0,
            performative: Performative::Disposition(Disposition {
                role: Role::Receiver,
                first: 0,
                last: None,
                settled: true,
                state: Some(DeliveryState::Accepted),
                batchable: false,
            }),
            payload: Bytes::new(),
            body: Bytes::from(hex("00 53 15 c0 0c 06 41 43 40 41 00 53 24 c0 01 00 42")),
        }
    );
    let Out::Amqp {
        performative: Performative::Transfer(t),
        payload,
        ..
    } = &out[1]
    else {
        panic!("not a TRANSFER: {:?}", out[1]);
    };
    assert_eq!(field_count(&out[1]), 11);
    assert_eq!(t.handle, receiver_handle);
    assert_eq!(t.settled, Some(true));
    assert!(!t.more);
    assert_eq!(payload, &response);
    assert_eq!(h.conn.credit(receiver), 99);
}

/// §2.6 and §4.1: Node skips SASL, and pipelines its frames.
#[test]
fn node_without_sasl_pipelines_open_begin_attach_flow() {
    let mut h = Harness::new(config());
    let mut bytes = AMQP_HEADER.to_vec();
    bytes.extend(frame(0, open("rhea")));
    bytes.extend(frame(0, begin()));
    bytes.extend(frame(
        0,
        attach(
            "rheaReceiver_1",
            0,
            Role::Receiver,
            "$cbs",
            "rheaReceiver_1",
        ),
    ));
    bytes.extend(frame(0, credit(0, 0, 1000)));
    h.input(0, &bytes);
    let out = h.output();
    assert_eq!(out[0], Out::Header(AMQP_HEADER));
    assert!(matches!(out[1].performative(), Performative::Open(_)));
    assert!(matches!(out[2].performative(), Performative::Begin(_)));
    assert_eq!(out.len(), 3);
    let events = h.events();
    assert!(matches!(
        &events[0],
        Event::Opened {
            sasl_mechanism: None,
            ..
        }
    ));
    let Event::Attach { link, .. } = events[1] else {
        panic!("{events:#?}");
    };
    // The FLOW came before the answer: its credit waits for it.
    assert_eq!(h.conn.credit(link), 0);
    assert_eq!(
        h.conn.send(link, Bytes::new(), true, 0, Bytes::new()),
        Err(SendError::NotAttached)
    );
    h.conn.accept_attach(link, AttachReply::default());
    assert_eq!(
        h.event(),
        Event::Credit {
            link,
            credit: 1000,
            drain: false
        }
    );
    assert_eq!(h.conn.credit(link), 1000);
}

#[test]
fn sasl_anonymous_and_failed_plain() {
    let mut h = Harness::new(config());
    h.input(0, &SASL_HEADER);
    let _ = h.output();
    h.input(
        0,
        &sasl(SaslFrame::Init(SaslInit {
            mechanism: Symbol::from_static("PLAIN"),
            initial_response: Some(Bytes::from_static(b"\0user\0bad")),
            hostname: Some("hub".into()),
        })),
    );
    assert!(matches!(h.event(), Event::SaslInit { .. }));
    h.conn.sasl_outcome(SaslOutcome::auth_failed());
    assert_eq!(
        h.output(),
        [Out::Sasl(SaslFrame::Outcome(SaslOutcome {
            code: SaslCode::Auth,
            additional_data: None
        }))]
    );
    assert!(h.conn.is_closed());
    let events = h.events();
    assert_eq!(
        closed_with(&events).map(|e| &e.condition),
        Some(&condition::UNAUTHORIZED_ACCESS)
    );

    // A mechanism that was not offered is refused at once.
    let mut h = Harness::new(ConnectionConfig {
        sasl: SaslPolicy {
            mechanisms: vec![Symbol::from_static("ANONYMOUS")],
            allow_no_sasl: false,
        },
        ..config()
    });
    h.input(0, &SASL_HEADER);
    h.input(
        0,
        &sasl(SaslFrame::Init(SaslInit {
            mechanism: Symbol::from_static("PLAIN"),
            initial_response: None,
            hostname: None,
        })),
    );
    let out = h.output();
    assert_eq!(
        out.last(),
        Some(&Out::Sasl(SaslFrame::Outcome(SaslOutcome::auth_failed())))
    );
    assert!(h.conn.is_closed());
}

#[test]
fn headers_the_policy_refuses_get_the_preferred_header_and_a_close() {
    // No-SASL refused: the SASL header, then close.
    let mut h = Harness::new(ConnectionConfig {
        sasl: SaslPolicy {
            allow_no_sasl: false,
            ..SaslPolicy::default()
        },
        ..config()
    });
    h.input(0, &AMQP_HEADER);
    assert_eq!(h.raw_output(), SASL_HEADER);
    assert!(h.conn.is_closed());

    // SASL not offered: the AMQP header.
    let mut h = Harness::new(ConnectionConfig {
        sasl: SaslPolicy {
            mechanisms: vec![],
            allow_no_sasl: true,
        },
        ..config()
    });
    h.input(0, &SASL_HEADER);
    assert_eq!(h.raw_output(), AMQP_HEADER);
    assert!(h.conn.is_closed());

    // A TLS ClientHello (implicit TLS not terminated) or the TLS upgrade header.
    for first in [&[0x16, 0x03, 0x01][..], b"AMQP\x02\x01\x00\x00"] {
        let mut h = Harness::new(config());
        h.input(0, first);
        assert_eq!(h.raw_output(), SASL_HEADER);
        let events = h.events();
        assert!(closed_with(&events).is_some());
        assert!(!h.conn.wants_read());
    }
}

#[test]
fn handshake_must_finish_in_time() {
    let mut h = Harness::new(config());
    assert_eq!(h.deadline(), Some(30_000));
    h.input(1000, &AMQP_HEADER);
    let _ = h.output();
    h.timeout(29_999);
    assert!(!h.conn.is_closed());
    h.timeout(30_000);
    // While OPEN is awaited, an error goes out as OPEN then CLOSE.
    let out = h.output();
    assert!(matches!(out[0].performative(), Performative::Open(_)));
    let Performative::Close(Close { error: Some(e) }) = out[1].performative() else {
        panic!("{out:#?}");
    };
    assert_eq!(e.condition, condition::RESOURCE_LIMIT_EXCEEDED);
    assert!(h.conn.is_closed());
    assert_eq!(h.deadline(), None);
}

#[test]
fn heartbeats_and_idle_timeout() {
    let mut h = Harness::new(ConnectionConfig {
        idle_timeout: Some(std::time::Duration::from_secs(20)),
        ..config()
    });
    let Performative::Open(mut client) = open("js") else {
        unreachable!()
    };
    client.idle_time_out = Some(10_000);
    let mut bytes = AMQP_HEADER.to_vec();
    bytes.extend(frame(0, Performative::Open(client)));
    h.input(0, &bytes);
    let _ = h.output();
    let _ = h.events();
    // The hub last sent at 0: a heartbeat is due at half the peer's 10 s.
    assert_eq!(h.deadline(), Some(5_000));
    h.timeout(5_000);
    assert_eq!(h.output(), [Out::Heartbeat]);
    assert_eq!(h.deadline(), Some(10_000));
    // The peer's heartbeat resets the idle clock.
    h.input(8_000, &[0, 0, 0, 8, 2, 0, 0, 0]);
    assert!(h.output().is_empty());
    h.timeout(10_000);
    assert_eq!(h.output(), [Out::Heartbeat]);
    h.timeout(15_000);
    assert_eq!(h.output(), [Out::Heartbeat]);
    h.timeout(20_000);
    assert_eq!(h.output(), [Out::Heartbeat]);
    assert_eq!(h.deadline(), Some(25_000));
    h.timeout(25_000);
    assert_eq!(h.output(), [Out::Heartbeat]);
    assert_eq!(h.deadline(), Some(28_000));
    h.timeout(28_000);
    let out = h.output();
    let Performative::Close(Close { error: Some(e) }) = out[0].performative() else {
        panic!("{out:#?}");
    };
    assert_eq!(e.condition, condition::RESOURCE_LIMIT_EXCEEDED);
    assert_eq!(field_count(&out[0]), 1);
    let events = h.events();
    assert!(matches!(
        events.last(),
        Some(Event::Closed { by_peer: false, .. })
    ));
}

#[test]
fn multi_frame_deliveries_are_reassembled() {
    let mut h = opened(ConnectionConfig {
        max_frame_size: 512,
        ..config()
    });
    let link = attached(
        &mut h,
        attach(
            "d2c",
            0,
            Role::Sender,
            "client",
            "/devices/d1/messages/events",
        ),
        AttachReply::default(),
    );
    let payload: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
    let chunks: Vec<&[u8]> = payload.chunks(450).collect();
    let mut bytes = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let Performative::Transfer(mut t) = transfer(0, 7, false) else {
            unreachable!()
        };
        t.more = i + 1 < chunks.len();
        if i > 0 {
            t.delivery_id = None;
            t.delivery_tag = None;
        }
        bytes.extend(frame_with(0, Performative::Transfer(t), chunk));
    }
    h.input(1, &bytes);
    let Event::Delivery {
        link: l,
        delivery_id,
        payload: got,
        ..
    } = h.event()
    else {
        panic!("not a delivery");
    };
    assert_eq!(l, link);
    assert_eq!(delivery_id.get(), 7);
    assert_eq!(got, payload);
}

#[test]
fn oversized_deliveries_detach_the_link() {
    let mut h = opened(config());
    let link = attached(
        &mut h,
        attach(
            "d2c",
            0,
            Role::Sender,
            "client",
            "/devices/d1/messages/events",
        ),
        AttachReply {
            max_message_size: Some(1000),
            ..AttachReply::default()
        },
    );
    let Performative::Transfer(mut t) = transfer(0, 0, false) else {
        unreachable!()
    };
    t.more = true;
    let mut bytes = frame_with(0, Performative::Transfer(t), &[0; 600]);
    bytes.extend(frame_with(
        0,
        Performative::Transfer(Transfer {
            handle: 0,
            ..Transfer::default()
        }),
        &[0; 600],
    ));
    h.input(1, &bytes);
    let out = h.output();
    let Performative::Detach(d) = out[0].performative() else {
        panic!("{out:#?}");
    };
    assert!(d.closed);
    assert_eq!(
        d.error.as_ref().map(|e| &e.condition),
        Some(&condition::MESSAGE_SIZE_EXCEEDED)
    );
    let Event::Detached {
        link: l,
        by_peer: false,
        error: Some(e),
        ..
    } = h.event()
    else {
        panic!("not detached");
    };
    assert_eq!((l, e.condition), (link, condition::MESSAGE_SIZE_EXCEEDED));
    // Frames the peer sent before seeing the DETACH are ignored; its DETACH ends the link.
    h.input(2, &frame_with(0, transfer(0, 1, false), b"late"));
    assert!(h.events().is_empty());
    h.input(
        3,
        &frame(
            0,
            Performative::Detach(Detach {
                handle: 0,
                closed: true,
                error: None,
            }),
        ),
    );
    assert!(h.output().is_empty());
    assert!(h.events().is_empty());
    // The handle is free again.
    h.input(4, &frame(0, attach("d2c-2", 0, Role::Sender, "c", "t")));
    assert!(matches!(h.event(), Event::Attach { .. }));
}

#[test]
fn outgoing_deliveries_are_split_to_the_peer_frame_size_and_window() {
    let mut h = Harness::new(config());
    let Performative::Open(mut client) = open("py") else {
        unreachable!()
    };
    client.max_frame_size = 512;
    let Performative::Begin(mut b) = begin() else {
        unreachable!()
    };
    b.incoming_window = 2;
    let mut bytes = AMQP_HEADER.to_vec();
    bytes.extend(frame(0, Performative::Open(client)));
    bytes.extend(frame(0, Performative::Begin(b)));
    h.input(0, &bytes);
    let _ = h.output();
    let _ = h.events();
    let link = attached(
        &mut h,
        attach(
            "eh",
            0,
            Role::Receiver,
            "hub/ConsumerGroups/$default/Partitions/0",
            "r",
        ),
        AttachReply {
            snd_settle_mode: Some(SenderSettleMode::Settled),
            ..AttachReply::default()
        },
    );
    // pyamqp's FLOW: window 2 frames, 300 credit.
    let flow = Performative::Flow(Flow {
        next_incoming_id: Some(0),
        incoming_window: 2,
        next_outgoing_id: 1,
        outgoing_window: 5000,
        handle: Some(0),
        delivery_count: Some(0),
        link_credit: Some(300),
        ..Flow::default()
    });
    h.input(1, &frame(0, flow));
    let _ = h.events();
    let payload: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();
    let payload = Bytes::from(payload);
    let id = h
        .conn
        .send(link, Bytes::from_static(b"tag"), true, 0, payload.clone())
        .expect("credit");
    let first = h.output();
    assert_eq!(first.len(), 2, "the window holds two frames");
    assert_eq!(h.conn.credit(link), 0);
    assert_eq!(
        h.conn.send(link, Bytes::new(), true, 0, Bytes::new()),
        Err(SendError::SessionBusy)
    );
    // The peer reopens its window.
    h.input(
        2,
        &frame(
            0,
            Performative::Flow(Flow {
                next_incoming_id: Some(2),
                incoming_window: 100,
                next_outgoing_id: 1,
                outgoing_window: 5000,
                ..Flow::default()
            }),
        ),
    );
    let rest = h.output();
    assert_eq!(
        h.event(),
        Event::Credit {
            link,
            credit: 299,
            drain: false
        }
    );
    let mut got = Vec::new();
    let frames: Vec<&Out> = first.iter().chain(&rest).collect();
    for (i, out) in frames.iter().enumerate() {
        let Out::Amqp {
            performative: Performative::Transfer(t),
            payload,
            body,
            ..
        } = out
        else {
            panic!("not a transfer: {out:?}");
        };
        assert!(body.len() + 8 <= 512, "frame {i} too large");
        assert_eq!(t.delivery_id, Some(id.get()));
        assert_eq!(t.more, i + 1 < frames.len());
        got.extend_from_slice(payload);
    }
    assert!(frames.len() >= 4);
    assert_eq!(got, payload);
}

#[test]
fn credit_is_consumed_and_drained() {
    let mut h = opened(config());
    let link = attached(
        &mut h,
        attach(
            "c2d",
            0,
            Role::Receiver,
            "/devices/d1/messages/devicebound",
            "c",
        ),
        AttachReply {
            snd_settle_mode: Some(SenderSettleMode::Unsettled),
            ..AttachReply::default()
        },
    );
    assert_eq!(
        h.conn.send(link, Bytes::new(), false, 0, Bytes::new()),
        Err(SendError::NoCredit)
    );
    h.input(1, &frame(0, credit(0, 0, 2)));
    let _ = h.events();
    assert_eq!(
        h.conn.send(link, Bytes::new(), true, 0, Bytes::new()),
        Err(SendError::SettleMode)
    );
    assert_eq!(
        h.conn
            .send(link, Bytes::from(vec![0; 33]), false, 0, Bytes::new()),
        Err(SendError::TagTooLong(33))
    );
    h.conn
        .send(link, Bytes::from_static(&[1; 16]), false, 0, Bytes::new())
        .expect("credit");
    assert_eq!(h.conn.credit(link), 1);
    assert_eq!(h.conn.unsettled_outgoing(), 1);
    let _ = h.output();
    // Drain: the peer asks for the remaining credit back.
    let Performative::Flow(mut f) = credit(0, 1, 1) else {
        unreachable!()
    };
    f.drain = true;
    h.input(2, &frame(0, Performative::Flow(f)));
    assert_eq!(
        h.event(),
        Event::Credit {
            link,
            credit: 1,
            drain: true
        }
    );
    h.conn.drain(link);
    let out = h.output();
    let Performative::Flow(f) = out[0].performative() else {
        panic!("{out:#?}");
    };
    assert_eq!(
        (f.delivery_count, f.link_credit, f.drain),
        (Some(2), Some(0), true)
    );
    assert_eq!(h.conn.credit(link), 0);
    // A receiver's echo request gets the link's state back.
    let Performative::Flow(mut f) = credit(0, 2, 0) else {
        unreachable!()
    };
    f.echo = true;
    h.input(3, &frame(0, Performative::Flow(f)));
    let out = h.output();
    assert!(matches!(out[0].performative(), Performative::Flow(_)));
}

#[test]
fn peer_outcomes_of_outgoing_deliveries() {
    let mut h = opened(config());
    let link = attached(
        &mut h,
        attach(
            "feedback",
            0,
            Role::Receiver,
            "/messages/serviceBound/feedback",
            "c",
        ),
        AttachReply {
            snd_settle_mode: Some(SenderSettleMode::Unsettled),
            ..AttachReply::default()
        },
    );
    h.input(1, &frame(0, credit(0, 0, 10)));
    let _ = h.events();
    let ids: Vec<_> = (0..3)
        .map(|_| {
            h.conn
                .send(link, Bytes::from_static(b"t"), false, 0, Bytes::new())
                .expect("credit")
        })
        .collect();
    let _ = h.output();
    // rhea auto-accepts 0 and 1 together, then sends a second disposition for 0.
    let accepted = |first: u32, last: Option<u32>| {
        frame(
            0,
            Performative::Disposition(Disposition {
                role: Role::Receiver,
                first,
                last,
                settled: true,
                state: Some(DeliveryState::Accepted),
                batchable: false,
            }),
        )
    };
    h.input(2, &accepted(0, Some(1)));
    let events = h.events();
    assert_eq!(
        events,
        [
            Event::Disposition {
                link,
                delivery_id: ids[0],
                state: Some(DeliveryState::Accepted),
                settled: true
            },
            Event::Disposition {
                link,
                delivery_id: ids[1],
                state: Some(DeliveryState::Accepted),
                settled: true
            },
        ]
    );
    h.input(3, &accepted(0, None));
    assert!(h.events().is_empty());
    // A huge range visits only what exists.
    h.input(4, &accepted(0, Some(u32::MAX)));
    assert_eq!(h.events().len(), 1);
    assert_eq!(h.conn.unsettled_outgoing(), 0);
    assert!(h.output().is_empty());
}

#[test]
fn receivers_settling_second_are_settled_by_the_hub() {
    let mut h = opened(config());
    let Performative::Attach(mut a) = attach(
        "c2d",
        0,
        Role::Receiver,
        "/devices/d1/messages/devicebound",
        "c",
    ) else {
        unreachable!()
    };
    a.rcv_settle_mode = ReceiverSettleMode::Second;
    let link = attached(&mut h, Performative::Attach(a), AttachReply::default());
    h.input(1, &frame(0, credit(0, 0, 1)));
    let _ = h.events();
    let id = h
        .conn
        .send(link, Bytes::from_static(b"t"), false, 0, Bytes::new())
        .expect("credit");
    let _ = h.output();
    h.input(
        2,
        &frame(
            0,
            Performative::Disposition(Disposition {
                role: Role::Receiver,
                first: id.get(),
                last: None,
                settled: false,
                state: Some(DeliveryState::Released),
                batchable: false,
            }),
        ),
    );
    let out = h.output();
    let Performative::Disposition(d) = out[0].performative() else {
        panic!("{out:#?}");
    };
    assert_eq!((d.role, d.settled), (Role::Sender, true));
    assert_eq!(
        h.event(),
        Event::Disposition {
            link,
            delivery_id: id,
            state: Some(DeliveryState::Released),
            settled: true
        }
    );
}

#[test]
fn refused_attach_is_attach_with_a_null_terminus_then_detach() {
    let mut h = opened(config());
    h.input(
        1,
        &frame(
            0,
            attach(
                "r",
                3,
                Role::Receiver,
                "hub/ConsumerGroups/x/Partitions/0",
                "r",
            ),
        ),
    );
    let Event::Attach { link, .. } = h.event() else {
        panic!("no attach");
    };
    h.conn.refuse_attach(
        link,
        AmqpError::new(condition::STOLEN, "New receiver with higher epoch"),
    );
    let out = h.output();
    assert_eq!(out.len(), 2);
    let Performative::Attach(a) = out[0].performative() else {
        panic!("{out:#?}");
    };
    assert_eq!(a.role, Role::Sender);
    assert!(a.source.is_none());
    assert!(a.target.is_some());
    assert_eq!(a.initial_delivery_count, Some(0));
    let Performative::Detach(d) = out[1].performative() else {
        panic!("{out:#?}");
    };
    assert_eq!(d.handle, a.handle);
    assert!(d.closed);
    assert_eq!(
        d.error.as_ref().map(|e| &e.condition),
        Some(&condition::STOLEN)
    );
    assert_eq!(field_count(&out[1]), 3);
    // The peer's DETACH completes it silently; later answers are ignored.
    h.input(
        2,
        &frame(
            0,
            Performative::Detach(Detach {
                handle: 3,
                closed: true,
                error: None,
            }),
        ),
    );
    assert!(h.events().is_empty());
    h.conn.accept_attach(link, AttachReply::default());
    assert!(h.output().is_empty());

    // A sending client refused: the target is null.
    h.input(
        3,
        &frame(
            0,
            attach("s", 4, Role::Sender, "c", "/devices/other/messages/events"),
        ),
    );
    let Event::Attach { link, .. } = h.event() else {
        panic!("no attach");
    };
    h.conn
        .refuse_attach(link, AmqpError::condition(condition::UNAUTHORIZED_ACCESS));
    let out = h.output();
    let Performative::Attach(a) = out[0].performative() else {
        panic!("{out:#?}");
    };
    assert!(a.source.is_some() && a.target.is_none());
    assert_eq!(a.initial_delivery_count, None);
}

#[test]
fn attaches_without_termini_get_synthesized_ones() {
    let mut h = opened(config());
    let Performative::Attach(mut a) = attach("x", 0, Role::Sender, "c", "t") else {
        unreachable!()
    };
    a.target = None;
    a.initial_delivery_count = None;
    h.input(1, &frame(0, Performative::Attach(a)));
    let Event::Attach { link, .. } = h.event() else {
        panic!("no attach");
    };
    h.conn.accept_attach(link, AttachReply::default());
    let out = h.output();
    let Performative::Attach(a) = out[0].performative() else {
        panic!("{out:#?}");
    };
    assert!(a.target.is_some());
    assert_eq!(a.properties, Some(Default::default()));
}

#[test]
fn detach_end_and_close_are_answered_full_width() {
    let mut h = opened(config());
    let link = attached(
        &mut h,
        attach("d2c", 0, Role::Sender, "c", "/devices/d1/messages/events"),
        AttachReply::default(),
    );
    h.input(
        1,
        &frame(
            0,
            Performative::Detach(Detach {
                handle: 0,
                closed: true,
                error: None,
            }),
        ),
    );
    let out = h.output();
    assert_eq!(
        out,
        [Out::Amqp {
            channel: 0,
            performative: Performative::Detach(Detach {
                handle: 0,
                closed: true,
                error: None
            }),
            payload: Bytes::new(),
            body: Bytes::from(hex("00 53 16 c0 04 03 43 41 40")),
        }]
    );
    assert_eq!(
        h.event(),
        Event::Detached {
            link,
            closed: true,
            error: None,
            by_peer: true
        }
    );

    let link = attached(
        &mut h,
        attach("again", 1, Role::Sender, "c", "t"),
        AttachReply::default(),
    );
    // END as fe2o3 sends it (list0): answered full width; its links are detached.
    h.input(2, &hex("00 00 00 0c 02 00 00 00 00 53 17 45"));
    let out = h.output();
    assert_eq!(out.len(), 1);
    let Out::Amqp { body, .. } = &out[0] else {
        panic!("{out:#?}");
    };
    assert_eq!(body[..], hex("00 53 17 c0 02 01 40"));
    let events = h.events();
    assert_eq!(
        events[0],
        Event::Detached {
            link,
            closed: false,
            error: None,
            by_peer: true
        }
    );
    assert!(matches!(
        events[1],
        Event::SessionEnded { by_peer: true, .. }
    ));

    h.input(3, &frame(0, Performative::Close(Close::default())));
    let out = h.output();
    let Out::Amqp { body, .. } = &out[0] else {
        panic!("{out:#?}");
    };
    assert_eq!(body[..], hex("00 53 18 c0 02 01 40"));
    assert_eq!(
        h.event(),
        Event::Closed {
            error: None,
            by_peer: true
        }
    );
    assert!(h.conn.is_closed());
    assert!(!h.conn.wants_read());
}

#[test]
fn settlements_are_batched_and_credit_topped_up() {
    let mut h = opened(config());
    let link = attached(
        &mut h,
        attach("c2d", 0, Role::Sender, "c", "/messages/devicebound"),
        AttachReply {
            credit_window: Some(4),
            ..AttachReply::default()
        },
    );
    let mut bytes = Vec::new();
    for id in 0..4 {
        bytes.extend(frame_with(0, transfer(0, id, false), b"m"));
    }
    h.input(1, &bytes);
    let ids: Vec<_> = h
        .events()
        .into_iter()
        .map(|e| match e {
            Event::Delivery { delivery_id, .. } => delivery_id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids.len(), 4);
    for id in &ids[..3] {
        h.conn.settle(link, *id, DeliveryState::Accepted);
    }
    let rejected = DeliveryState::Rejected {
        error: Some(AmqpError::new(condition::NOT_FOUND, "no such device")),
    };
    h.conn.settle(link, ids[3], rejected.clone());
    let out = h.output();
    let performatives: Vec<_> = out.iter().map(Out::performative).collect();
    // Half the window settled tops the credit up (the FLOW goes ahead of the batch being
    // built); 0..=2 accepted in one frame; the rejection in its own.
    let [
        Performative::Flow(flow),
        Performative::Disposition(accepted),
        Performative::Flow(flow2),
        Performative::Disposition(reject),
    ] = &performatives[..]
    else {
        panic!("{performatives:#?}");
    };
    assert_eq!((flow.link_credit, flow2.link_credit), (Some(2), Some(4)));
    assert_eq!(
        (flow.delivery_count, flow2.delivery_count),
        (Some(4), Some(4))
    );
    assert_eq!(
        (accepted.first, accepted.last, accepted.settled),
        (ids[0].get(), Some(ids[2].get()), true)
    );
    assert_eq!((reject.first, reject.last), (ids[3].get(), None));
    assert_eq!(reject.state, Some(rejected));
}

#[test]
fn backpressure_stops_reading_until_settled() {
    let mut h = opened(ConnectionConfig {
        max_unsettled_incoming: 2,
        ..config()
    });
    let link = attached(
        &mut h,
        attach("d2c", 0, Role::Sender, "c", "t"),
        AttachReply::default(),
    );
    let mut bytes = Vec::new();
    for id in 0..3 {
        bytes.extend(frame_with(0, transfer(0, id, id == 2), b"m"));
    }
    h.input(1, &bytes);
    let events = h.events();
    assert_eq!(events.len(), 2);
    assert!(!h.conn.wants_read());
    assert!(h.pending_input() > 0);
    // The idle clock stands still meanwhile.
    h.timeout(1_000_000);
    assert!(!h.conn.is_closed());
    let Event::Delivery { delivery_id, .. } = &events[0] else {
        panic!("{events:#?}");
    };
    h.conn.settle(link, *delivery_id, DeliveryState::Accepted);
    assert!(h.conn.wants_read());
    h.resume(1_000_001);
    let Event::Delivery {
        settled,
        delivery_id: third,
        ..
    } = h.event()
    else {
        panic!("no delivery");
    };
    assert!(settled);
    assert_eq!(h.pending_input(), 0);
    assert!(!h.conn.wants_read());
    assert_eq!(h.deadline(), None);
    // A pre-settled delivery is settled too, without a disposition.
    h.conn.settle(link, third, DeliveryState::Accepted);
    let Event::Delivery { delivery_id, .. } = &events[1] else {
        panic!("{events:#?}");
    };
    h.conn.settle(link, *delivery_id, DeliveryState::Accepted);
    let out = h.output();
    let Performative::Disposition(d) = out[0].performative() else {
        panic!("{out:#?}");
    };
    assert_eq!((d.first, d.last), (0, Some(1)));
    assert_eq!(out.len(), 1);
    // The idle clock restarts when reading resumes, not at the last frame.
    h.timeout(1_000_002);
    assert_eq!(h.deadline(), Some(1_000_002 + 240_000));
}

#[test]
fn violations_close_with_the_right_condition() {
    let cases: Vec<(Vec<u8>, Symbol)> = vec![
        // A TRANSFER on a handle nobody attached.
        (
            frame_with(0, transfer(9, 0, true), b"x"),
            condition::UNATTACHED_HANDLE,
        ),
        // A frame larger than the hub's max-frame-size.
        (hex("00 01 00 01 02 00 00 00"), condition::FRAMING_ERROR),
        // Garbage where a performative belongs.
        (
            hex("00 00 00 0b 02 00 00 00 00 53 99"),
            condition::DECODE_ERROR,
        ),
        // A second OPEN.
        (frame(0, open("again")), condition::NOT_ALLOWED),
        // BEGIN above channel-max.
        (frame(300, begin()), condition::FRAMING_ERROR),
        // ATTACH above handle-max.
        (
            frame(0, attach("x", 1000, Role::Sender, "c", "t")),
            condition::FRAMING_ERROR,
        ),
        // A frame on a channel without a session.
        (frame(7, credit(0, 0, 1)), condition::NOT_ALLOWED),
        // A SASL frame after OPEN.
        (
            hex("00 00 00 0c 02 01 00 00 00 53 44 45"),
            condition::FRAMING_ERROR,
        ),
        // An invalid field value.
        (
            hex(r#"00 00 00 14 02 00 00 00 00 53 12 c0 07 03 a1 01 "n" 43 50 05"#),
            condition::INVALID_FIELD,
        ),
    ];
    for (bytes, expected) in cases {
        let mut h = opened(config());
        h.input(1, &bytes);
        let out = h.output();
        let Some(Performative::Close(Close { error: Some(e) })) = out.last().map(Out::performative)
        else {
            panic!("no CLOSE for {bytes:02x?}: {out:#?}");
        };
        assert_eq!(e.condition, expected, "{bytes:02x?}: {e}");
        let events = h.events();
        assert_eq!(closed_with(&events).map(|e| &e.condition), Some(&expected));
        assert!(h.conn.is_closed());
        // Nothing after the close.
        h.input(2, &frame(0, begin()));
        assert!(h.output().is_empty());
        assert!(h.events().is_empty());
    }
}

#[test]
fn session_window_is_enforced_and_reopened() {
    let mut h = opened(ConnectionConfig {
        session_window: 4,
        ..config()
    });
    let link = attached(
        &mut h,
        attach("d2c", 0, Role::Sender, "c", "t"),
        AttachReply::default(),
    );
    // Two frames use half the window: the hub reopens it.
    h.input(1, &frame_with(0, transfer(0, 0, true), b"a"));
    h.input(1, &frame_with(0, transfer(0, 1, true), b"b"));
    let out = h.output();
    let Performative::Flow(f) = out[0].performative() else {
        panic!("{out:#?}");
    };
    assert_eq!(
        (f.handle, f.incoming_window, f.next_incoming_id),
        (None, 4, Some(3))
    );
    for event in h.events() {
        let Event::Delivery { delivery_id, .. } = event else {
            panic!("{event:?}");
        };
        h.conn.settle(link, delivery_id, DeliveryState::Accepted);
    }
}

#[test]
fn driver_close_and_end_session() {
    let mut h = opened(config());
    let link = attached(
        &mut h,
        attach("d2c", 0, Role::Sender, "c", "t"),
        AttachReply::default(),
    );
    h.conn.end_session(link.session(), None);
    let out = h.output();
    assert!(matches!(
        out[0].performative(),
        Performative::End(End { error: None })
    ));
    assert!(h.events().is_empty());
    // Frames for the ended session are ignored until the peer's END.
    h.input(1, &frame_with(0, transfer(0, 0, true), b"x"));
    assert!(h.events().is_empty());
    h.input(2, &frame(0, Performative::End(End::default())));
    assert!(h.output().is_empty());
    // The channel can carry a new session.
    h.input(3, &frame(0, begin()));
    assert!(matches!(
        h.output()[0].performative(),
        Performative::Begin(_)
    ));

    h.conn.close(Some(AmqpError::new(
        condition::CONNECTION_FORCED,
        "shutdown",
    )));
    let out = h.output();
    let Performative::Close(Close { error: Some(e) }) = out[0].performative() else {
        panic!("{out:#?}");
    };
    assert_eq!(e.condition, condition::CONNECTION_FORCED);
    assert_eq!(
        h.event(),
        Event::Closed {
            error: Some(AmqpError::new(condition::CONNECTION_FORCED, "shutdown")),
            by_peer: false
        }
    );
    assert_eq!(
        h.conn.send(link, Bytes::new(), true, 0, Bytes::new()),
        Err(SendError::NotOpen)
    );
}

#[test]
fn open_values_are_respected() {
    // A peer announcing a max-frame-size below the minimum gets 512-byte frames anyway.
    let mut h = Harness::new(config());
    let mut bytes = AMQP_HEADER.to_vec();
    bytes.extend(frame(
        0,
        Performative::Open(Open {
            max_frame_size: 100,
            ..match open("tiny") {
                Performative::Open(o) => o,
                _ => unreachable!(),
            }
        }),
    ));
    h.input(0, &bytes);
    assert!(h.conn.is_open());
}

#[test]
fn transfers_without_credit_detach_the_link() {
    let mut h = opened(config());
    let link = attached(
        &mut h,
        attach("d2c", 0, Role::Sender, "c", "t"),
        AttachReply {
            credit_window: Some(0),
            ..AttachReply::default()
        },
    );
    h.input(1, &frame_with(0, transfer(0, 0, true), b"x"));
    let out = h.output();
    let Performative::Detach(d) = out[0].performative() else {
        panic!("{out:#?}");
    };
    assert_eq!(
        d.error.as_ref().map(|e| &e.condition),
        Some(&condition::TRANSFER_LIMIT_EXCEEDED)
    );
    assert!(matches!(h.event(), Event::Detached { by_peer: false, .. }));

    // With manual credit, the driver grants it.
    let link2 = attached(
        &mut h,
        attach("d2c-2", 1, Role::Sender, "c", "t"),
        AttachReply {
            credit_window: Some(0),
            ..AttachReply::default()
        },
    );
    h.conn.grant_credit(link2, 5);
    let out = h.output();
    let Performative::Flow(f) = out[0].performative() else {
        panic!("{out:#?}");
    };
    assert_eq!(f.link_credit, Some(5));
    h.input(2, &frame_with(0, transfer(1, 1, true), b"x"));
    assert!(matches!(h.event(), Event::Delivery { .. }));
    let _ = link;
}

#[test]
fn a_detach_before_the_answer_is_answered_with_attach_and_detach() {
    let mut h = opened(config());
    let mut bytes = frame(0, attach("x", 0, Role::Receiver, "$cbs", "c"));
    bytes.extend(frame(
        0,
        Performative::Detach(Detach {
            handle: 0,
            closed: true,
            error: None,
        }),
    ));
    h.input(1, &bytes);
    let events = h.events();
    let [
        Event::Attach { link, .. },
        Event::Detached {
            link: gone,
            by_peer: true,
            ..
        },
    ] = &events[..]
    else {
        panic!("{events:#?}");
    };
    assert_eq!(link, gone);
    let out = h.output();
    assert!(matches!(out[0].performative(), Performative::Attach(_)));
    assert!(matches!(out[1].performative(), Performative::Detach(_)));
    // The late answer is ignored.
    h.conn.accept_attach(*link, AttachReply::default());
    assert!(h.output().is_empty());
}

#[test]
fn unanswered_attaches_stop_reading() {
    let mut h = opened(ConnectionConfig {
        max_pending_attaches: 2,
        ..config()
    });
    let mut bytes = Vec::new();
    for handle in 0..3 {
        bytes.extend(frame(
            0,
            attach(&format!("l{handle}"), handle, Role::Sender, "c", "t"),
        ));
    }
    h.input(1, &bytes);
    let events = h.events();
    assert_eq!(events.len(), 2);
    assert!(!h.conn.wants_read());
    let Event::Attach { link, .. } = &events[0] else {
        panic!("{events:#?}");
    };
    h.conn.accept_attach(*link, AttachReply::default());
    assert!(h.conn.wants_read());
    h.resume(2);
    assert!(matches!(h.event(), Event::Attach { .. }));
}

#[test]
fn reassembly_is_bounded_per_connection() {
    let mut h = opened(ConnectionConfig {
        max_reassembly_bytes: 1000,
        ..config()
    });
    for handle in 0..2 {
        attached(
            &mut h,
            attach(&format!("l{handle}"), handle, Role::Sender, "c", "t"),
            AttachReply::default(),
        );
    }
    let half = |handle: u32, id: u32| {
        let Performative::Transfer(mut t) = transfer(handle, id, false) else {
            unreachable!()
        };
        t.more = true;
        frame_with(0, Performative::Transfer(t), &[0; 600])
    };
    h.input(1, &half(0, 0));
    assert!(h.output().is_empty());
    h.input(2, &half(1, 1));
    let out = h.output();
    let Performative::Detach(d) = out[0].performative() else {
        panic!("{out:#?}");
    };
    assert_eq!(d.handle, 1);
    assert_eq!(
        d.error.as_ref().map(|e| &e.condition),
        Some(&condition::RESOURCE_LIMIT_EXCEEDED)
    );
}

#[test]
fn peer_settled_deliveries_get_no_disposition() {
    let mut h = opened(config());
    let link = attached(
        &mut h,
        attach("d2c", 0, Role::Sender, "c", "t"),
        AttachReply::default(),
    );
    h.input(1, &frame_with(0, transfer(0, 0, false), b"x"));
    let Event::Delivery { delivery_id, .. } = h.event() else {
        panic!("no delivery");
    };
    // The sender settles (gives up on) the delivery before the hub answers.
    h.input(
        2,
        &frame(
            0,
            Performative::Disposition(Disposition {
                role: Role::Sender,
                first: 0,
                last: None,
                settled: true,
                state: None,
                batchable: false,
            }),
        ),
    );
    h.conn.settle(link, delivery_id, DeliveryState::Accepted);
    assert!(h.output().is_empty());
    assert_eq!(h.conn.unsettled_incoming(), 0);
}

/// Fuzzing (amqp_connection): a SASL answer after the connection had closed (here on a bad
/// first byte) reopened it in the SASL phase.
#[test]
fn regression_late_answers_do_not_revive_a_closed_connection() {
    let mut h = Harness::new(config());
    h.input(0, &frame(1, Performative::End(End::default())));
    assert!(h.conn.is_closed());
    let _ = h.events();
    h.conn.sasl_outcome(SaslOutcome::auth_failed());
    h.conn.sasl_outcome(SaslOutcome::ok());
    assert!(h.conn.is_closed());
    assert!(!h.conn.wants_read());
    assert!(h.events().is_empty());
    assert_eq!(h.raw_output(), SASL_HEADER);
}
