//! proptest strategies producing valid packets (those `encode` accepts).

use bytes::Bytes;
use ferrohub_mqtt::codec::{
    ConnAck, Connect, ConnectReturnCode, LastWill, Packet, PubAck, PubComp, PubRec, PubRel,
    Publish, QoS, SubAck, Subscribe, SubscribeReturnCode, UnsubAck, Unsubscribe,
};
use ferrohub_mqtt::topic::{TopicFilter, TopicName};
use proptest::collection::vec;
use proptest::prelude::*;

pub(crate) fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

/// Any text without U+0000, including multi-byte characters.
pub(crate) fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[^\\x00]{{0,{max}}}")).expect("valid regex")
}

pub(crate) fn binary(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

pub(crate) fn pkid() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

pub(crate) fn topic_name() -> impl Strategy<Value = TopicName> {
    proptest::string::string_regex("[^\\x00+#]{1,40}")
        .expect("valid regex")
        .prop_map(|s| TopicName::new(s).expect("generated topic name is valid"))
}

pub(crate) fn topic_filter() -> impl Strategy<Value = TopicFilter> {
    let level = prop_oneof![
        1 => Just("+".to_owned()),
        4 => proptest::string::string_regex("[^\\x00+#/]{0,8}").expect("valid regex"),
    ];
    (vec(level, 1..5), any::<bool>()).prop_map(|(levels, hash)| {
        let mut s = levels.join("/");
        if hash {
            s.push_str("/#");
        }
        if s.is_empty() {
            s.push('#');
        }
        TopicFilter::new(s).expect("generated topic filter is valid")
    })
}

fn will() -> impl Strategy<Value = LastWill> {
    (topic_name(), binary(32), qos(), any::<bool>()).prop_map(|(topic, message, qos, retain)| {
        LastWill {
            topic,
            message,
            qos,
            retain,
        }
    })
}

pub(crate) fn connect() -> impl Strategy<Value = Connect> {
    (
        any::<bool>(),
        any::<u16>(),
        text(23),
        proptest::option::of(text(40)),
        proptest::option::of(binary(40)),
        proptest::option::of(will()),
    )
        .prop_map(
            |(clean_session, keep_alive, client_id, username, password, will)| Connect {
                clean_session: clean_session || client_id.is_empty(),
                keep_alive,
                password: password.filter(|_| username.is_some()),
                client_id,
                username,
                will,
            },
        )
}

fn connack() -> impl Strategy<Value = ConnAck> {
    (0u8..=5, any::<bool>()).prop_map(|(code, session_present)| {
        let code = ConnectReturnCode::from_u8(code).unwrap_or(ConnectReturnCode::Accepted);
        ConnAck {
            session_present: session_present && code == ConnectReturnCode::Accepted,
            code,
        }
    })
}

pub(crate) fn publish() -> impl Strategy<Value = Publish> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        pkid(),
        binary(64),
    )
        .prop_map(|(qos, dup, retain, topic, pkid, payload)| {
            let pkid = (qos != QoS::AtMostOnce).then_some(pkid);
            Publish {
                dup: dup && pkid.is_some(),
                qos,
                retain,
                topic,
                pkid,
                payload,
            }
        })
}

fn suback_code() -> impl Strategy<Value = SubscribeReturnCode> {
    prop_oneof![
        qos().prop_map(SubscribeReturnCode::Success),
        Just(SubscribeReturnCode::Failure)
    ]
}

pub(crate) fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        connect().prop_map(Packet::Connect),
        connack().prop_map(Packet::ConnAck),
        publish().prop_map(Packet::Publish),
        pkid().prop_map(|pkid| Packet::PubAck(PubAck { pkid })),
        pkid().prop_map(|pkid| Packet::PubRec(PubRec { pkid })),
        pkid().prop_map(|pkid| Packet::PubRel(PubRel { pkid })),
        pkid().prop_map(|pkid| Packet::PubComp(PubComp { pkid })),
        (pkid(), vec((topic_filter(), qos()), 1..4))
            .prop_map(|(pkid, filters)| Packet::Subscribe(Subscribe { pkid, filters })),
        (pkid(), vec(suback_code(), 1..6))
            .prop_map(|(pkid, return_codes)| Packet::SubAck(SubAck { pkid, return_codes })),
        (pkid(), vec(topic_filter(), 1..4))
            .prop_map(|(pkid, filters)| Packet::Unsubscribe(Unsubscribe { pkid, filters })),
        pkid().prop_map(|pkid| Packet::UnsubAck(UnsubAck { pkid })),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        Just(Packet::Disconnect),
    ]
}

/// Byte edits applied to an encoded packet: (position, new byte), positions taken modulo length.
pub(crate) fn mutations() -> impl Strategy<Value = Vec<(usize, u8)>> {
    vec((any::<usize>(), any::<u8>()), 0..4)
}

pub(crate) fn mutate(bytes: &mut [u8], edits: &[(usize, u8)]) {
    if bytes.is_empty() {
        return;
    }
    let len = bytes.len();
    for &(at, value) in edits {
        if let Some(b) = bytes.get_mut(at % len) {
            *b = value;
        }
    }
}
