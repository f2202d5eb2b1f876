//! Differential tests against rmqtt-codec 0.3 (v3 codec): whenever our decoder accepts a packet,
//! the oracle must decode the same bytes to the same contents.
//!
//! rmqtt-codec is the strictest of the oracles, yet still more lenient than ours: it accepts
//! MQTT 3.1 (`MQIsdp`, level 3), trailing bytes after CONNECT, CONNACK and the bodyless packets,
//! reserved bits in a requested-QoS byte (it masks them off), DUP on QoS 0, wildcards and U+0000
//! in topic names, U+0000 in strings, a password without a user name, SUBACK without return
//! codes, and session present on a refused CONNACK. It rejects nothing that we accept.
//!
//! rmqtt-codec's decoder is only reachable through `tokio_util::codec::Decoder`, so this module
//! is compiled only once `tokio-util` (feature `codec`) is a dev-dependency of the crate.

use std::num::NonZeroU16;

use bytes::BytesMut;
use ferrohub_mqtt::codec::{ConnectReturnCode, Packet, QoS, SubscribeReturnCode, decode, encode};
use proptest::prelude::*;
use rmqtt_codec::types::Protocol;
use rmqtt_codec::v3 as oracle;
use tokio_util::codec::Decoder;

use super::strategies::{mutate, mutations, packet};

const LIMIT: usize = 1 << 20;

fn qos(q: QoS) -> oracle::QoS {
    match q {
        QoS::AtMostOnce => oracle::QoS::AtMostOnce,
        QoS::AtLeastOnce => oracle::QoS::AtLeastOnce,
        QoS::ExactlyOnce => oracle::QoS::ExactlyOnce,
    }
}

fn id(pkid: u16) -> Option<NonZeroU16> {
    NonZeroU16::new(pkid)
}

/// What rmqtt-codec should decode from the bytes of `p` (`None` if we produced a packet id 0,
/// which our decoder never does).
fn to_oracle(p: &Packet) -> Option<oracle::Packet> {
    Some(match p {
        Packet::Connect(c) => oracle::Packet::Connect(Box::new(oracle::Connect {
            protocol: Protocol(4),
            clean_session: c.clean_session,
            keep_alive: c.keep_alive,
            last_will: c.will.as_ref().map(|w| oracle::LastWill {
                qos: qos(w.qos),
                retain: w.retain,
                topic: w.topic.as_str().into(),
                message: w.message.clone(),
            }),
            client_id: c.client_id.as_str().into(),
            username: c.username.as_deref().map(Into::into),
            password: c.password.clone(),
            cert: None,
        })),
        Packet::ConnAck(c) => oracle::Packet::ConnectAck(oracle::ConnectAck {
            session_present: c.session_present,
            return_code: match c.code {
                ConnectReturnCode::Accepted => oracle::ConnectAckReason::ConnectionAccepted,
                ConnectReturnCode::RefusedProtocolVersion => {
                    oracle::ConnectAckReason::UnacceptableProtocolVersion
                }
                ConnectReturnCode::IdentifierRejected => {
                    oracle::ConnectAckReason::IdentifierRejected
                }
                ConnectReturnCode::ServerUnavailable => {
                    oracle::ConnectAckReason::ServiceUnavailable
                }
                ConnectReturnCode::BadUsernameOrPassword => {
                    oracle::ConnectAckReason::BadUserNameOrPassword
                }
                ConnectReturnCode::NotAuthorized => oracle::ConnectAckReason::NotAuthorized,
            },
        }),
        Packet::Publish(p) => oracle::Packet::Publish(Box::new(rmqtt_codec::types::Publish {
            dup: p.dup,
            retain: p.retain,
            qos: qos(p.qos),
            topic: p.topic.as_str().into(),
            packet_id: p.pkid.and_then(NonZeroU16::new),
            payload: p.payload.clone(),
            properties: None,
        })),
        Packet::PubAck(a) => oracle::Packet::PublishAck {
            packet_id: id(a.pkid)?,
        },
        Packet::PubRec(a) => oracle::Packet::PublishReceived {
            packet_id: id(a.pkid)?,
        },
        Packet::PubRel(a) => oracle::Packet::PublishRelease {
            packet_id: id(a.pkid)?,
        },
        Packet::PubComp(a) => oracle::Packet::PublishComplete {
            packet_id: id(a.pkid)?,
        },
        Packet::Subscribe(s) => oracle::Packet::Subscribe {
            packet_id: id(s.pkid)?,
            topic_filters: s
                .filters
                .iter()
                .map(|(f, q)| (f.as_str().into(), qos(*q)))
                .collect(),
        },
        Packet::SubAck(s) => oracle::Packet::SubscribeAck {
            packet_id: id(s.pkid)?,
            status: s
                .return_codes
                .iter()
                .map(|c| match c {
                    SubscribeReturnCode::Success(q) => {
                        oracle::SubscribeReturnCode::Success(qos(*q))
                    }
                    SubscribeReturnCode::Failure => oracle::SubscribeReturnCode::Failure,
                })
                .collect(),
        },
        Packet::Unsubscribe(u) => oracle::Packet::Unsubscribe {
            packet_id: id(u.pkid)?,
            topic_filters: u.filters.iter().map(|f| f.as_str().into()).collect(),
        },
        Packet::UnsubAck(u) => oracle::Packet::UnsubscribeAck {
            packet_id: id(u.pkid)?,
        },
        Packet::PingReq => oracle::Packet::PingRequest,
        Packet::PingResp => oracle::Packet::PingResponse,
        Packet::Disconnect => oracle::Packet::Disconnect,
    })
}

fn oracle_decode(bytes: &[u8]) -> Result<Option<oracle::Packet>, String> {
    let mut codec = oracle::Codec::new(u32::try_from(LIMIT).unwrap_or(u32::MAX));
    codec
        .decode(&mut BytesMut::from(bytes))
        .map(|p| p.map(|(p, _)| p))
        .map_err(|e| e.to_string())
}

/// Decodes `bytes` with both decoders; if ours accepts, the oracle must agree.
fn agree(bytes: &[u8]) -> Result<bool, TestCaseError> {
    let Ok(Some(ours)) = decode(&mut BytesMut::from(bytes), LIMIT) else {
        return Ok(false);
    };
    let expected = to_oracle(&ours);
    prop_assert!(expected.is_some(), "we decoded a packet id 0: {:?}", ours);
    prop_assert_eq!(oracle_decode(bytes), Ok(expected), "ours: {:?}", ours);
    Ok(true)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn valid_packets_agree_with_rmqtt(p in packet()) {
        let mut bytes = BytesMut::new();
        encode(&p, &mut bytes).expect("generated packets encode");
        prop_assert!(agree(&bytes)?);
    }

    #[test]
    fn mutated_packets_we_accept_agree_with_rmqtt(p in packet(), edits in mutations()) {
        let mut bytes = BytesMut::new();
        encode(&p, &mut bytes).expect("generated packets encode");
        mutate(&mut bytes, &edits);
        agree(&bytes)?;
    }
}

#[test]
fn known_leniencies_of_rmqtt() {
    // Accepted by rmqtt-codec, rejected by us.
    for bytes in [
        &[
            0x10, 0x0E, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x00,
            0x00, 0x00,
        ][..],
        &[0xC0, 0x01, 0x00],                               // PINGREQ with a body
        &[0x38, 0x03, 0x00, 0x01, b'a'],                   // DUP on QoS 0
        &[0x30, 0x03, 0x00, 0x01, b'#'],                   // wildcard in a topic name
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x05], // reserved requested-QoS bits
    ] {
        assert!(matches!(oracle_decode(bytes), Ok(Some(_))), "{bytes:02x?}");
        assert!(
            decode(&mut BytesMut::from(bytes), LIMIT).is_err(),
            "{bytes:02x?}"
        );
    }
}
