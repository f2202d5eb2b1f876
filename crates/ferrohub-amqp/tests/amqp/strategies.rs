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

pub(crate) mod performatives {
    use bytes::Bytes;
    use ferrohub_amqp::message::{
        Annotations, ApplicationProperties, Body, Header, Message, MessageId, Properties,
    };
    use ferrohub_amqp::performative::{
        AmqpError, Attach, Begin, Close, DeliveryState, Detach, Disposition, End, Fields, Flow,
        Open, Performative, ReceiverSettleMode, Role, SenderSettleMode, Source, Target, Transfer,
    };
    use ferrohub_amqp::types::{Symbol, Value};
    use proptest::collection::vec;
    use proptest::option::of;
    use proptest::prelude::*;

    use super::{scalar, value};

    fn symbol() -> impl Strategy<Value = Symbol> {
        "[a-z][a-z:.-]{0,15}".prop_map(Symbol::new)
    }

    fn symbols() -> impl Strategy<Value = Option<Vec<Symbol>>> {
        of(vec(symbol(), 0..3))
    }

    fn fields() -> BoxedStrategy<Fields> {
        vec((symbol(), scalar()), 0..3)
            .prop_map(Fields::from)
            .boxed()
    }

    fn text() -> impl Strategy<Value = String> {
        "[ -~]{0,20}"
    }

    fn error() -> BoxedStrategy<AmqpError> {
        (symbol(), of(text()), of(fields()))
            .prop_map(|(condition, description, info)| AmqpError {
                condition,
                description,
                info,
            })
            .boxed()
    }

    fn state() -> BoxedStrategy<DeliveryState> {
        prop_oneof![
            (any::<u32>(), any::<u64>()).prop_map(|(section_number, section_offset)| {
                DeliveryState::Received {
                    section_number,
                    section_offset,
                }
            }),
            Just(DeliveryState::Accepted),
            of(error()).prop_map(|error| DeliveryState::Rejected { error }),
            Just(DeliveryState::Released),
            (of(any::<bool>()), of(any::<bool>()), of(fields())).prop_map(|(f, u, a)| {
                DeliveryState::Modified {
                    delivery_failed: f,
                    undeliverable_here: u,
                    message_annotations: a,
                }
            }),
        ]
        .boxed()
    }

    fn source() -> BoxedStrategy<Source> {
        (
            (of(text()), of(any::<u32>()), of(symbol()), of(any::<u32>())),
            (of(any::<bool>()), of(fields()), of(symbol()), of(fields())),
            (
                of(scalar().prop_filter("not null", |v| !v.is_null())),
                symbols(),
                symbols(),
            ),
        )
            .prop_map(
                |((address, durable, expiry_policy, timeout), b, c)| Source {
                    address,
                    durable,
                    expiry_policy,
                    timeout,
                    dynamic: b.0,
                    dynamic_node_properties: b.1,
                    distribution_mode: b.2,
                    filter: b.3,
                    default_outcome: c.0,
                    outcomes: c.1,
                    capabilities: c.2,
                },
            )
            .boxed()
    }

    fn target() -> BoxedStrategy<Target> {
        (
            of(text()),
            of(any::<u32>()),
            of(symbol()),
            of(any::<u32>()),
            of(any::<bool>()),
            of(fields()),
            symbols(),
        )
            .prop_map(
                |(address, durable, expiry_policy, timeout, dynamic, props, capabilities)| Target {
                    address,
                    durable,
                    expiry_policy,
                    timeout,
                    dynamic,
                    dynamic_node_properties: props,
                    capabilities,
                },
            )
            .boxed()
    }

    fn role() -> impl Strategy<Value = Role> {
        prop_oneof![Just(Role::Sender), Just(Role::Receiver)]
    }

    fn open() -> BoxedStrategy<Open> {
        (
            (
                text(),
                of(text()),
                any::<u32>(),
                any::<u16>(),
                of(any::<u32>()),
            ),
            (symbols(), symbols(), symbols(), symbols(), of(fields())),
        )
            .prop_map(|(a, b)| Open {
                container_id: a.0,
                hostname: a.1,
                max_frame_size: a.2,
                channel_max: a.3,
                idle_time_out: a.4,
                outgoing_locales: b.0,
                incoming_locales: b.1,
                offered_capabilities: b.2,
                desired_capabilities: b.3,
                properties: b.4,
            })
            .boxed()
    }

    fn begin() -> BoxedStrategy<Begin> {
        (
            of(any::<u16>()),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            symbols(),
            symbols(),
            of(fields()),
        )
            .prop_map(|(rc, no, iw, ow, hm, oc, dc, p)| Begin {
                remote_channel: rc,
                next_outgoing_id: no,
                incoming_window: iw,
                outgoing_window: ow,
                handle_max: hm,
                offered_capabilities: oc,
                desired_capabilities: dc,
                properties: p,
            })
            .boxed()
    }

    fn attach() -> BoxedStrategy<Attach> {
        (
            (text(), any::<u32>(), role(), 0u8..3, any::<bool>()),
            (
                of(source()),
                of(target()),
                of(vec((scalar(), scalar()), 0..2)),
            ),
            (any::<bool>(), of(any::<u32>()), of(any::<u64>())),
            (symbols(), symbols(), of(fields())),
        )
            .prop_map(|(a, b, c, d)| Attach {
                name: a.0,
                handle: a.1,
                role: a.2,
                snd_settle_mode: [
                    SenderSettleMode::Unsettled,
                    SenderSettleMode::Settled,
                    SenderSettleMode::Mixed,
                ][usize::from(a.3)],
                rcv_settle_mode: if a.4 {
                    ReceiverSettleMode::Second
                } else {
                    ReceiverSettleMode::First
                },
                source: b.0,
                target: b.1,
                unsettled: b.2,
                incomplete_unsettled: c.0,
                initial_delivery_count: c.1,
                max_message_size: c.2,
                offered_capabilities: d.0,
                desired_capabilities: d.1,
                properties: d.2,
            })
            .boxed()
    }

    fn flow() -> BoxedStrategy<Flow> {
        (
            (of(any::<u32>()), any::<u32>(), any::<u32>(), any::<u32>()),
            (
                of(any::<u32>()),
                of(any::<u32>()),
                of(any::<u32>()),
                of(any::<u32>()),
            ),
            (any::<bool>(), any::<bool>(), of(fields())),
        )
            .prop_map(|(a, b, c)| Flow {
                next_incoming_id: a.0,
                incoming_window: a.1,
                next_outgoing_id: a.2,
                outgoing_window: a.3,
                handle: b.0,
                delivery_count: b.1,
                link_credit: b.2,
                available: b.3,
                drain: c.0,
                echo: c.1,
                properties: c.2,
            })
            .boxed()
    }

    fn transfer() -> BoxedStrategy<Transfer> {
        (
            (any::<u32>(), of(any::<u32>()), of(vec(any::<u8>(), 0..32))),
            (
                of(any::<u32>()),
                of(any::<bool>()),
                any::<bool>(),
                of(any::<bool>()),
            ),
            (of(state()), any::<bool>(), any::<bool>(), any::<bool>()),
        )
            .prop_map(|(a, b, c)| Transfer {
                handle: a.0,
                delivery_id: a.1,
                delivery_tag: a.2.map(Bytes::from),
                message_format: b.0,
                settled: b.1,
                more: b.2,
                rcv_settle_mode: b.3.map(|second| {
                    if second {
                        ReceiverSettleMode::Second
                    } else {
                        ReceiverSettleMode::First
                    }
                }),
                state: c.0,
                resume: c.1,
                aborted: c.2,
                batchable: c.3,
            })
            .boxed()
    }

    /// Any performative.
    pub(crate) fn performative() -> BoxedStrategy<Performative> {
        prop_oneof![
            open().prop_map(Performative::Open),
            begin().prop_map(Performative::Begin),
            attach().prop_map(|a| Performative::Attach(Box::new(a))),
            flow().prop_map(Performative::Flow),
            transfer().prop_map(Performative::Transfer),
            (
                role(),
                any::<u32>(),
                of(any::<u32>()),
                any::<bool>(),
                of(state()),
                any::<bool>()
            )
                .prop_map(|(role, first, last, settled, state, batchable)| {
                    Performative::Disposition(Disposition {
                        role,
                        first,
                        last,
                        settled,
                        state,
                        batchable,
                    })
                }),
            (any::<u32>(), any::<bool>(), of(error())).prop_map(|(handle, closed, error)| {
                Performative::Detach(Detach {
                    handle,
                    closed,
                    error,
                })
            }),
            of(error()).prop_map(|error| Performative::End(End { error })),
            of(error()).prop_map(|error| Performative::Close(Close { error })),
        ]
        .boxed()
    }

    fn message_id() -> impl Strategy<Value = MessageId> {
        prop_oneof![
            any::<u64>().prop_map(MessageId::Ulong),
            any::<[u8; 16]>().prop_map(MessageId::Uuid),
            vec(any::<u8>(), 0..8).prop_map(|b| MessageId::Binary(Bytes::from(b))),
            text().prop_map(MessageId::String),
        ]
    }

    fn annotations() -> impl Strategy<Value = Annotations> {
        vec((symbol().prop_map(Value::Symbol), value()), 0..4).prop_map(Annotations::from)
    }

    /// Any message.
    pub(crate) fn message() -> BoxedStrategy<Message> {
        let header = (
            of(any::<bool>()),
            of(any::<u8>()),
            of(any::<u32>()),
            of(any::<bool>()),
            of(any::<u32>()),
        )
            .prop_map(
                |(durable, priority, ttl, first_acquirer, delivery_count)| Header {
                    durable,
                    priority,
                    ttl,
                    first_acquirer,
                    delivery_count,
                },
            );
        let properties = (
            (
                of(message_id()),
                of(vec(any::<u8>(), 0..8)),
                of(text()),
                of(text()),
            ),
            (of(text()), of(message_id()), of(symbol()), of(symbol())),
            (
                of(any::<i64>()),
                of(any::<i64>()),
                of(text()),
                of(any::<u32>()),
                of(text()),
            ),
        )
            .prop_map(|(a, b, c)| Properties {
                message_id: a.0,
                user_id: a.1.map(Bytes::from),
                to: a.2,
                subject: a.3,
                reply_to: b.0,
                correlation_id: b.1,
                content_type: b.2,
                content_encoding: b.3,
                absolute_expiry_time: c.0,
                creation_time: c.1,
                group_id: c.2,
                group_sequence: c.3,
                reply_to_group_id: c.4,
            });
        let app = vec((text(), scalar()), 0..4).prop_map(ApplicationProperties::from);
        let body = prop_oneof![
            Just(Body::Empty),
            vec(vec(any::<u8>(), 0..300).prop_map(Bytes::from), 1..3).prop_map(Body::Data),
            vec(vec(value(), 0..3), 1..3).prop_map(Body::Sequence),
            value().prop_map(Body::Value),
        ];
        (
            of(header),
            of(annotations()),
            of(annotations()),
            of(properties),
            of(app),
            body,
            of(annotations()),
        )
            .prop_map(|(header, da, ma, properties, app, body, footer)| Message {
                header,
                delivery_annotations: da,
                message_annotations: ma,
                properties,
                application_properties: app,
                body,
                footer,
            })
            .boxed()
    }
}
