//! amqp-contract §3.10 end to end: a Python (pyamqp) Event Hubs consumer against the engine,
//! with the hub's side written with the `azure` helpers.

use bytes::Bytes;
use ferrohub_amqp::azure::address::{Address, Entity};
use ferrohub_amqp::azure::cbs::PutToken;
use ferrohub_amqp::azure::event::{EventInput, IotHubAnnotations, OFFSET, SEQUENCE_NUMBER};
use ferrohub_amqp::azure::filter::{self, EventPosition, SELECTOR_FILTER};
use ferrohub_amqp::azure::management::{EventHubProperties, ReadRequest, ReadTarget};
use ferrohub_amqp::connection::{AttachReply, ConnectionConfig, Event, LinkId};
use ferrohub_amqp::frame::{AMQP_HEADER, SASL_HEADER};
use ferrohub_amqp::message::{ApplicationProperties, Body, Message, MessageId, Properties};
use ferrohub_amqp::performative::{
    DeliveryState, Fields, Performative, Role, SaslFrame, SaslInit, SaslOutcome, SenderSettleMode,
    Source,
};
use ferrohub_amqp::types::{Symbol, TypeKind, Value};

use super::harness::{
    Harness, Out, attach, begin, credit, frame, frame_with, open, sasl, transfer,
};

/// Sends a request on the client's sender `handle`, as delivery `id`; returns the hub's
/// delivery.
fn request(h: &mut Harness, handle: u32, id: u32, message: &Message) -> (LinkId, Message) {
    let payload = message.to_bytes().expect("encodable");
    h.input(0, &frame_with(0, transfer(handle, id, false), &payload));
    let Event::Delivery {
        link,
        delivery_id,
        payload,
        ..
    } = h.event()
    else {
        panic!("no delivery");
    };
    h.conn.settle(link, delivery_id, DeliveryState::Accepted);
    (link, Message::decode(payload).expect("a message"))
}

/// Attaches the pair pyamqp uses for `$cbs` and `$management` (both termini the node) and
/// accepts both; returns the hub's sender link.
fn node_pair(h: &mut Harness, node: &str, handles: (u32, u32)) -> LinkId {
    let mut bytes = frame(
        0,
        attach(&format!("{node}-s"), handles.0, Role::Sender, node, node),
    );
    bytes.extend(frame(
        0,
        attach(&format!("{node}-r"), handles.1, Role::Receiver, node, node),
    ));
    h.input(0, &bytes);
    let events = h.events();
    let mut hub_sender = None;
    for event in events {
        let Event::Attach { link, attach } = event else {
            panic!("{event:?}");
        };
        let node_address = attach.source.as_ref().and_then(|s| s.address.as_deref());
        assert!(matches!(
            node_address.map(Address::parse),
            Some(Address::Cbs | Address::Management { .. })
        ));
        let reply = if attach.role == Role::Receiver {
            hub_sender = Some(link);
            AttachReply {
                snd_settle_mode: Some(SenderSettleMode::Settled),
                ..AttachReply::default()
            }
        } else {
            AttachReply::default()
        };
        h.conn.accept_attach(link, reply);
    }
    let _ = h.output();
    h.input(0, &frame(0, credit(handles.1, 0, 300)));
    let _ = h.events();
    hub_sender.expect("a receiving client link")
}

/// The hub's one TRANSFER in the output, decoded.
fn sent_message(h: &mut Harness) -> Message {
    let out = h.output();
    let transfers: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Out::Amqp {
                performative: Performative::Transfer(t),
                payload,
                ..
            } => Some((t.clone(), payload.clone())),
            _ => None,
        })
        .collect();
    let [(t, payload)] = &transfers[..] else {
        panic!("{out:#?}");
    };
    assert_eq!(t.settled, Some(true));
    Message::decode(payload.clone()).expect("a message")
}

#[test]
fn python_consumer_from_sasl_to_first_event() {
    let mut h = Harness::new(ConnectionConfig::default());
    h.input(0, &SASL_HEADER);
    let _ = h.output();
    h.input(
        0,
        &sasl(SaslFrame::Init(SaslInit {
            mechanism: Symbol::from_static("ANONYMOUS"),
            initial_response: Some(Bytes::new()),
            hostname: Some("hub.example".into()),
        })),
    );
    assert!(matches!(h.event(), Event::SaslInit { .. }));
    h.conn.sasl_outcome(SaslOutcome::ok());
    let mut bytes = AMQP_HEADER.to_vec();
    bytes.extend(frame(0, open("EHConsumer-1-partition0")));
    bytes.extend(frame(0, begin()));
    h.input(0, &bytes);
    let _ = h.output();
    let _ = h.events();

    // $cbs: a uuid message-id, echoed as a uuid correlation-id.
    let cbs = node_pair(&mut h, "$cbs", (0, 1));
    let mut app = ApplicationProperties::new();
    app.insert("name", "sb://hub.example/myhub");
    app.insert("operation", "put-token");
    app.insert("type", "servicebus.windows.net:sastoken");
    app.insert("expiration", Value::Timestamp(1_700_000_000_000));
    let id = MessageId::Uuid([0x42; 16]);
    let put = Message {
        properties: Some(Properties {
            message_id: Some(id.clone()),
            ..Properties::default()
        }),
        application_properties: Some(app),
        body: Body::Value(Value::from(
            "SharedAccessSignature sr=sb%3a%2f%2fhub.example%2fmyhub&sig=s&se=1&skn=owner",
        )),
        ..Message::default()
    };
    let (_, message) = request(&mut h, 0, 0, &put);
    let put = PutToken::parse(&message).expect("a put-token");
    h.conn
        .send(
            cbs,
            Bytes::from_static(b"0"),
            true,
            0,
            put.response(200, "OK", None).to_bytes().expect("encodable"),
        )
        .expect("credit");
    let response = sent_message(&mut h);
    assert_eq!(response.properties.and_then(|p| p.correlation_id), Some(id));

    // $management READ of the Event Hub.
    let mgmt = node_pair(&mut h, "$management", (2, 3));
    let mut app = ApplicationProperties::new();
    app.insert("name", "myhub");
    app.insert("security_token", "SharedAccessSignature sr=x");
    app.insert("operation", "READ");
    app.insert("type", "com.microsoft:eventhub");
    let read = Message {
        properties: Some(Properties {
            message_id: Some(MessageId::Uuid([7; 16])),
            ..Properties::default()
        }),
        application_properties: Some(app),
        ..Message::default()
    };
    let (_, message) = request(&mut h, 2, 1, &read);
    let read = ReadRequest::parse(&message).expect("a READ");
    assert_eq!(read.target, ReadTarget::EventHub);
    let properties = EventHubProperties {
        name: "myhub".into(),
        created_at: 1_600_000_000_000,
        partition_ids: vec!["0".into(), "1".into()],
        georeplication_factor: None,
    };
    h.conn
        .send(
            mgmt,
            Bytes::from_static(b"1"),
            true,
            0,
            properties.response(&read).to_bytes().expect("encodable"),
        )
        .expect("credit");
    let response = sent_message(&mut h);
    let app = response.application_properties.expect("status");
    assert_eq!(app.get("status-code"), Some(&Value::Int(200)));
    let Body::Value(Value::Map(map)) = response.body else {
        panic!("not an amqp-value map");
    };
    assert!(map.iter().any(|(k, v)| k.as_str() == Some("partition_ids")
        && matches!(v, Value::Array(a) if a.kind() == TypeKind::String)));

    // The partition receiver with its filter.
    let mut filter = Fields::new();
    filter.insert(
        SELECTOR_FILTER,
        Value::described(
            Value::Symbol(SELECTOR_FILTER),
            "amqp.annotation.x-opt-offset > '@latest'",
        ),
    );
    let Performative::Attach(mut receiver) = attach(
        "0b1d",
        4,
        Role::Receiver,
        "amqps://hub.example/myhub/ConsumerGroups/$Default/Partitions/0",
        "receiver-link-0b1d",
    ) else {
        unreachable!()
    };
    receiver.source = Some(Source {
        filter: Some(filter),
        ..receiver.source.unwrap_or_default()
    });
    receiver.max_message_size = Some(1_048_576);
    receiver.desired_capabilities = Some(vec![Symbol::from_static("com.microsoft:georeplication")]);
    let mut props = Fields::new();
    props.insert(Symbol::from_static("com.microsoft:timeout"), Value::Long(0));
    receiver.properties = Some(props);
    h.input(0, &frame(0, Performative::Attach(receiver)));
    let Event::Attach { link, attach } = h.event() else {
        panic!("no attach");
    };
    let source = attach.source.as_ref().expect("a source");
    assert_eq!(
        source.address.as_deref().map(Address::parse),
        Some(Address::EventHubsReceiver {
            entity: Entity::Named("myhub".into()),
            consumer_group: "$Default".into(),
            partition: "0".into(),
        })
    );
    assert_eq!(
        filter::event_position(source),
        Ok(Some(EventPosition::Latest))
    );
    h.conn.accept_attach(
        link,
        AttachReply {
            snd_settle_mode: Some(SenderSettleMode::Settled),
            ..AttachReply::default()
        },
    );
    let out = h.output();
    let Performative::Attach(reply) = out[0].performative() else {
        panic!("{out:#?}");
    };
    assert_eq!(reply.role, Role::Sender);
    assert_eq!(reply.snd_settle_mode, SenderSettleMode::Settled);
    assert_eq!(reply.initial_delivery_count, Some(0));
    // The source is echoed with its filter.
    assert_eq!(reply.source.as_ref(), Some(source));

    // pyamqp: credit 0 first, then 300.
    h.input(0, &frame(0, credit(4, 0, 0)));
    assert_eq!(
        h.event(),
        Event::Credit {
            link,
            credit: 0,
            drain: false
        }
    );
    h.input(0, &frame(0, credit(4, 0, 300)));
    assert_eq!(
        h.event(),
        Event::Credit {
            link,
            credit: 300,
            drain: false
        }
    );

    let event = EventInput {
        sequence_number: 0,
        offset: "0".into(),
        enqueued_time: 1_700_000_000_001,
        iothub: IotHubAnnotations {
            connection_device_id: Some("d1".into()),
            ..IotHubAnnotations::default()
        },
        body: Bytes::from_static(b"{}"),
        ..EventInput::default()
    };
    h.conn
        .send(
            link,
            Bytes::from_static(b"e0"),
            true,
            0,
            event.to_message().to_bytes().expect("encodable"),
        )
        .expect("credit");
    let message = sent_message(&mut h);
    let annotations = message.message_annotations.expect("annotations");
    assert_eq!(
        annotations.get(SEQUENCE_NUMBER.as_str()),
        Some(&Value::Long(0))
    );
    assert_eq!(annotations.get(OFFSET.as_str()), Some(&Value::from("0")));
    assert_eq!(message.body, Body::data(Bytes::from_static(b"{}")));
}
