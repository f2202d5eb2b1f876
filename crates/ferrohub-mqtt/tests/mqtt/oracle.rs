//! Differential tests against mqttbytes 0.6 (v4): whenever our decoder accepts a packet, the
//! oracle must decode the same bytes to the same contents.
//!
//! Our decoder is stricter, so the converse does not hold: mqttbytes accepts, and we reject,
//! packets with reserved header or CONNECT flags set, protocol level 5, DUP on QoS 0, wildcards,
//! U+0000 or an empty topic in PUBLISH, trailing bytes after fixed-size bodies, reserved bits in
//! a requested QoS, SUBSCRIBE/UNSUBSCRIBE without filters, packet id 0 outside PUBLISH, an empty
//! client id without clean session, a password without a user name, will QoS/retain without a
//! will, and CONNACK flags other than bit 0 (or session present with a refusal).
//!
//! Where mqttbytes is stricter, or cannot express what we decode, the comparison is skipped
//! ([`to_oracle`] returns `None`): a CONNECT password that is not UTF-8 (mqttbytes reads it as a
//! string). Where its model is coarser, the comparison maps ours onto it: an absent user name or
//! password is an empty string, both empty is no login at all, and a QoS 0 PUBLISH has packet id 0.

use bytes::BytesMut;
use ferrohub_mqtt::codec::{ConnectReturnCode, Packet, QoS, SubscribeReturnCode, decode, encode};
use mqttbytes::v4 as oracle;
use proptest::prelude::*;

use super::strategies::{mutate, mutations, packet};

const LIMIT: usize = 1 << 20;

fn qos(q: QoS) -> mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => mqttbytes::QoS::ExactlyOnce,
    }
}

/// What mqttbytes should decode from the bytes of `p`, or `None` where it cannot say.
fn to_oracle(p: &Packet) -> Option<oracle::Packet> {
    Some(match p {
        Packet::Connect(c) => {
            let password = match &c.password {
                Some(pw) => String::from_utf8(pw.to_vec()).ok()?,
                None => String::new(),
            };
            let username = c.username.clone().unwrap_or_default();
            let login = (!username.is_empty() || !password.is_empty())
                .then_some(oracle::Login { username, password });
            oracle::Packet::Connect(oracle::Connect {
                protocol: mqttbytes::Protocol::V4,
                keep_alive: c.keep_alive,
                client_id: c.client_id.clone(),
                clean_session: c.clean_session,
                last_will: c.will.as_ref().map(|w| oracle::LastWill {
                    topic: w.topic.as_str().to_owned(),
                    message: w.message.clone(),
                    qos: qos(w.qos),
                    retain: w.retain,
                }),
                login,
            })
        }
        Packet::ConnAck(c) => oracle::Packet::ConnAck(oracle::ConnAck {
            session_present: c.session_present,
            code: match c.code {
                ConnectReturnCode::Accepted => oracle::ConnectReturnCode::Success,
                ConnectReturnCode::RefusedProtocolVersion => {
                    oracle::ConnectReturnCode::RefusedProtocolVersion
                }
                ConnectReturnCode::IdentifierRejected => oracle::ConnectReturnCode::BadClientId,
                ConnectReturnCode::ServerUnavailable => {
                    oracle::ConnectReturnCode::ServiceUnavailable
                }
                ConnectReturnCode::BadUsernameOrPassword => {
                    oracle::ConnectReturnCode::BadUserNamePassword
                }
                ConnectReturnCode::NotAuthorized => oracle::ConnectReturnCode::NotAuthorized,
            },
        }),
        Packet::Publish(p) => oracle::Packet::Publish(oracle::Publish {
            dup: p.dup,
            qos: qos(p.qos),
            retain: p.retain,
            topic: p.topic.as_str().to_owned(),
            pkid: p.pkid.unwrap_or(0),
            payload: p.payload.clone(),
        }),
        Packet::PubAck(a) => oracle::Packet::PubAck(oracle::PubAck { pkid: a.pkid }),
        Packet::PubRec(a) => oracle::Packet::PubRec(oracle::PubRec { pkid: a.pkid }),
        Packet::PubRel(a) => oracle::Packet::PubRel(oracle::PubRel { pkid: a.pkid }),
        Packet::PubComp(a) => oracle::Packet::PubComp(oracle::PubComp { pkid: a.pkid }),
        Packet::Subscribe(s) => oracle::Packet::Subscribe(oracle::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .iter()
                .map(|(f, q)| oracle::SubscribeFilter::new(f.as_str().to_owned(), qos(*q)))
                .collect(),
        }),
        Packet::SubAck(s) => oracle::Packet::SubAck(oracle::SubAck {
            pkid: s.pkid,
            return_codes: s
                .return_codes
                .iter()
                .map(|c| match c {
                    SubscribeReturnCode::Success(q) => {
                        oracle::SubscribeReasonCode::Success(qos(*q))
                    }
                    SubscribeReturnCode::Failure => oracle::SubscribeReasonCode::Failure,
                })
                .collect(),
        }),
        Packet::Unsubscribe(u) => oracle::Packet::Unsubscribe(oracle::Unsubscribe {
            pkid: u.pkid,
            topics: u.filters.iter().map(|f| f.as_str().to_owned()).collect(),
        }),
        Packet::UnsubAck(u) => oracle::Packet::UnsubAck(oracle::UnsubAck { pkid: u.pkid }),
        Packet::PingReq => oracle::Packet::PingReq,
        Packet::PingResp => oracle::Packet::PingResp,
        Packet::Disconnect => oracle::Packet::Disconnect,
    })
}

/// Decodes `bytes` with both decoders; if ours accepts, the oracle must agree.
fn agree(bytes: &[u8]) -> Result<bool, TestCaseError> {
    let Ok(Some(ours)) = decode(&mut BytesMut::from(bytes), LIMIT) else {
        return Ok(false);
    };
    let theirs = oracle::read(&mut BytesMut::from(bytes), LIMIT);
    if let Some(expected) = to_oracle(&ours) {
        prop_assert_eq!(theirs, Ok(expected), "ours: {:?}", ours);
    }
    Ok(true)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn valid_packets_agree_with_mqttbytes(p in packet()) {
        let mut bytes = BytesMut::new();
        encode(&p, &mut bytes).expect("generated packets encode");
        prop_assert!(agree(&bytes)?);
    }

    #[test]
    fn mutated_packets_we_accept_agree_with_mqttbytes(p in packet(), edits in mutations()) {
        let mut bytes = BytesMut::new();
        encode(&p, &mut bytes).expect("generated packets encode");
        mutate(&mut bytes, &edits);
        agree(&bytes)?;
    }
}

#[test]
fn known_leniencies_of_mqttbytes() {
    // Accepted by mqttbytes, rejected by us.
    for bytes in [
        &[0x41, 0x02, 0x00, 0x01][..],   // reserved PUBACK flags
        &[0x38, 0x03, 0x00, 0x01, b'a'], // DUP on QoS 0
        &[0x30, 0x03, 0x00, 0x01, b'#'], // wildcard in a topic name
        &[0x40, 0x03, 0x00, 0x01, 0x00], // trailing byte
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x05], // reserved requested-QoS bits
        &[0x82, 0x02, 0x00, 0x01],       // SUBSCRIBE without filters
        &[0x40, 0x02, 0x00, 0x00],       // packet id 0
    ] {
        assert!(
            oracle::read(&mut BytesMut::from(bytes), LIMIT).is_ok(),
            "{bytes:02x?}"
        );
        assert!(
            decode(&mut BytesMut::from(bytes), LIMIT).is_err(),
            "{bytes:02x?}"
        );
    }
}
