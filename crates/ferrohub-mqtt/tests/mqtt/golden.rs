//! Hand-written packets from the MQTT 3.1.1 specification and from captured SDK traffic: each
//! decodes to the expected value and encodes back to the same bytes. Then the malformed variants.

use bytes::{Bytes, BytesMut};
use ferrohub_mqtt::codec::{
    ConnAck, Connect, ConnectReturnCode, DecodeError, EncodeError, LastWill, Packet, PacketType,
    PubAck, PubComp, PubRec, PubRel, Publish, QoS, SubAck, Subscribe, SubscribeReturnCode,
    UnsubAck, Unsubscribe, decode, encode,
};
use ferrohub_mqtt::topic::{ClientId, TopicError, TopicFilter, TopicName, Username};

const LIMIT: usize = 256 * 1024;

const PY_USERNAME: &str = "localhost/dev1/?api-version=2019-10-01&DeviceClientType=azure-iot-device-iothub-py%2F2.14.0%283.11.7%3BLinux%20%231%20SMP%20PREEMPT_DYNAMIC%20%400%3Bx86_64%29";
const PY_PASSWORD: &str = "SharedAccessSignature sr=localhost%2Fdevices%2Fdev1&sig=jXjTicBN%2F0zNGgYUWdArX03bolniuT1VDilcU%2BBtpOM%3D&se=1795812973";

fn topic(s: &str) -> TopicName {
    TopicName::new(s).expect("valid topic name")
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s).expect("valid topic filter")
}

fn decode_all(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, LIMIT)?;
    if packet.is_some() {
        assert!(buf.is_empty(), "decode left {} bytes", buf.len());
    }
    Ok(packet)
}

/// `bytes` decodes to `packet`, `packet` encodes to `bytes`, and every proper prefix of `bytes`
/// needs more data without consuming anything.
fn golden(bytes: &[u8], packet: Packet) {
    assert_eq!(decode_all(bytes), Ok(Some(packet.clone())));
    let mut out = BytesMut::new();
    encode(&packet, &mut out).expect("encodes");
    assert_eq!(&out[..], bytes);
    for cut in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert_eq!(decode(&mut buf, LIMIT), Ok(None), "prefix of {cut} bytes");
        assert_eq!(buf.len(), cut);
    }
}

fn rejects(bytes: &[u8], error: DecodeError) {
    assert_eq!(decode_all(bytes), Err(error), "{bytes:02x?}");
}

#[test]
fn connect_as_the_python_sdk_sends_it() {
    #[rustfmt::skip]
    let mut bytes = vec![
        0x10, 0xAA, 0x02,                         // CONNECT, remaining length 298
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, // "MQTT" level 4
        0b1100_0000,                              // user name, password; clean session 0; no will
        0x00, 0x3C,                               // keep-alive 60
        0x00, 0x04, b'd', b'e', b'v', b'1',       // client id
        0x00, 0x9E,                               // user name, 158 bytes
    ];
    bytes.extend_from_slice(PY_USERNAME.as_bytes());
    bytes.extend_from_slice(&[0x00, 0x78]); // password, 120 bytes
    bytes.extend_from_slice(PY_PASSWORD.as_bytes());
    let connect = Connect {
        clean_session: false,
        keep_alive: 60,
        client_id: "dev1".into(),
        username: Some(PY_USERNAME.into()),
        password: Some(Bytes::from_static(PY_PASSWORD.as_bytes())),
        will: None,
    };
    golden(&bytes, Packet::Connect(connect));

    // The identity fields parse as the session layer will use them.
    let Ok(Some(Packet::Connect(c))) = decode_all(&bytes) else {
        panic!("CONNECT did not decode");
    };
    let username = Username::parse(c.username.as_deref().unwrap_or_default()).expect("username");
    assert_eq!(username.host, "localhost");
    assert_eq!(username.client_id, c.client_id);
    assert_eq!(username.api_version(), Some("2019-10-01"));
    let client = ClientId::parse(&c.client_id).expect("client id");
    assert_eq!((client.device_id, client.module_id), ("dev1", None));
}

#[test]
fn connect_with_will_and_clean_session() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x1F,
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04,
        0b1010_1110, // user name, will retain, will QoS 1, will, clean session
        0x00, 0x0A,
        0x00, 0x02, b'c', b'1',             // client id
        0x00, 0x03, b'a', b'/', b'b',       // will topic
        0x00, 0x04, b'g', b'o', b'n', b'e', // will message
        0x00, 0x04, b'u', b's', b'e', b'r', // user name
    ];
    golden(
        &bytes,
        Packet::Connect(Connect {
            clean_session: true,
            keep_alive: 10,
            client_id: "c1".into(),
            username: Some("user".into()),
            password: None,
            will: Some(LastWill {
                topic: topic("a/b"),
                message: Bytes::from_static(b"gone"),
                qos: QoS::AtLeastOnce,
                retain: true,
            }),
        }),
    );
    // An empty client id is fine with clean session 1.
    golden(
        &[
            0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00, 0x00, 0x00,
        ],
        Packet::Connect(Connect {
            clean_session: true,
            keep_alive: 0,
            client_id: String::new(),
            username: None,
            password: None,
            will: None,
        }),
    );
}

#[test]
fn connack() {
    golden(
        &[0x20, 0x02, 0x01, 0x00],
        Packet::ConnAck(ConnAck {
            session_present: true,
            code: ConnectReturnCode::Accepted,
        }),
    );
    golden(
        &[0x20, 0x02, 0x00, 0x05],
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: ConnectReturnCode::NotAuthorized,
        }),
    );
}

#[test]
fn publish_telemetry_qos1() {
    let mut bytes = vec![0x32, 86, 0x00, 0x44];
    bytes
        .extend_from_slice(b"devices/dev1/messages/events/%24.mid=mid-1&%24.ct=application%2Fjson");
    bytes.extend_from_slice(&[0x12, 0x34]);
    bytes.extend_from_slice(b"{\"temp\": 21.5}");
    golden(
        &bytes,
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic("devices/dev1/messages/events/%24.mid=mid-1&%24.ct=application%2Fjson"),
            pkid: Some(0x1234),
            payload: Bytes::from_static(b"{\"temp\": 21.5}"),
        }),
    );
}

#[test]
fn publish_qos0_retain_and_qos2_dup() {
    golden(
        &[0x31, 0x05, 0x00, 0x01, b'a', b'h', b'i'],
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: true,
            topic: topic("a"),
            pkid: None,
            payload: Bytes::from_static(b"hi"),
        }),
    );
    golden(
        &[0x3C, 0x05, 0x00, 0x01, b'a', 0x00, 0x07],
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: topic("a"),
            pkid: Some(7),
            payload: Bytes::new(),
        }),
    );
}

#[test]
fn publish_payload_shares_the_receive_buffer() {
    let mut buf = BytesMut::from(&[0x30, 0x07, 0x00, 0x01, b't', b'd', b'a', b't', b'a'][..]);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let Ok(Some(Packet::Publish(p))) = decode(&mut buf, LIMIT) else {
        panic!("PUBLISH did not decode");
    };
    assert_eq!(&p.payload[..], b"data");
    assert!(range.contains(&(p.payload.as_ptr() as usize)));
}

#[test]
fn publish_acknowledgements() {
    golden(
        &[0x40, 0x02, 0x00, 0x01],
        Packet::PubAck(PubAck { pkid: 1 }),
    );
    golden(
        &[0x50, 0x02, 0xFF, 0xFF],
        Packet::PubRec(PubRec { pkid: 0xFFFF }),
    );
    golden(
        &[0x62, 0x02, 0x01, 0x00],
        Packet::PubRel(PubRel { pkid: 256 }),
    );
    golden(
        &[0x70, 0x02, 0x00, 0x2A],
        Packet::PubComp(PubComp { pkid: 42 }),
    );
}

#[test]
fn subscribe_and_suback() {
    let mut bytes = vec![0x82, 40, 0x00, 0x01, 0x00, 0x23];
    bytes.extend_from_slice(b"devices/dev1/messages/devicebound/#");
    bytes.push(0x01);
    golden(
        &bytes,
        Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![(
                filter("devices/dev1/messages/devicebound/#"),
                QoS::AtLeastOnce,
            )],
        }),
    );
    golden(
        &[
            0x82, 0x10, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'+', 0x00, 0x00, 0x01, b'#', 0x02,
            0x00, 0x01, b'b', 0x01,
        ],
        Packet::Subscribe(Subscribe {
            pkid: 10,
            filters: vec![
                (filter("a/+"), QoS::AtMostOnce),
                (filter("#"), QoS::ExactlyOnce),
                (filter("b"), QoS::AtLeastOnce),
            ],
        }),
    );
    golden(
        &[0x90, 0x05, 0x00, 0x0A, 0x00, 0x80, 0x02],
        Packet::SubAck(SubAck {
            pkid: 10,
            return_codes: vec![
                SubscribeReturnCode::Success(QoS::AtMostOnce),
                SubscribeReturnCode::Failure,
                SubscribeReturnCode::Success(QoS::ExactlyOnce),
            ],
        }),
    );
}

#[test]
fn unsubscribe_and_unsuback() {
    golden(
        &[
            0xA2, 0x09, 0x00, 0x05, 0x00, 0x01, b'a', 0x00, 0x02, b'b', b'/',
        ],
        Packet::Unsubscribe(Unsubscribe {
            pkid: 5,
            filters: vec![filter("a"), filter("b/")],
        }),
    );
    golden(
        &[0xB0, 0x02, 0x00, 0x05],
        Packet::UnsubAck(UnsubAck { pkid: 5 }),
    );
}

#[test]
fn bodyless_packets() {
    golden(&[0xC0, 0x00], Packet::PingReq);
    golden(&[0xD0, 0x00], Packet::PingResp);
    golden(&[0xE0, 0x00], Packet::Disconnect);
}

#[test]
fn consecutive_packets_in_one_buffer() {
    let mut buf = BytesMut::from(&[0xC0, 0x00, 0x40, 0x02, 0x00, 0x09, 0xE0][..]);
    assert_eq!(decode(&mut buf, LIMIT), Ok(Some(Packet::PingReq)));
    assert_eq!(
        decode(&mut buf, LIMIT),
        Ok(Some(Packet::PubAck(PubAck { pkid: 9 })))
    );
    assert_eq!(decode(&mut buf, LIMIT), Ok(None));
    assert_eq!(&buf[..], &[0xE0]);
}

// --- malformed input ---

#[test]
fn oversized_header_fails_before_the_body_arrives() {
    // 268,435,455 bytes declared, 256 KiB allowed: rejected with only the header in the buffer.
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
    let capacity = buf.capacity();
    assert_eq!(
        decode(&mut buf, LIMIT),
        Err(DecodeError::PacketTooLarge {
            size: 268_435_455,
            max: LIMIT
        })
    );
    assert_eq!(buf.capacity(), capacity);
    assert_eq!(buf.len(), 5);
    // The exact limit is fine; one more is not.
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x10][..]);
    assert_eq!(decode(&mut buf, LIMIT), Ok(None));
    let mut buf = BytesMut::from(&[0x30, 0x81, 0x80, 0x10][..]);
    assert!(matches!(
        decode(&mut buf, LIMIT),
        Err(DecodeError::PacketTooLarge { size: 262_145, .. })
    ));
}

#[test]
fn fixed_header_violations() {
    rejects(&[0x00, 0x00], DecodeError::InvalidPacketType(0));
    rejects(&[0xF0, 0x00], DecodeError::InvalidPacketType(15));
    rejects(
        &[0x30, 0x80, 0x80, 0x80, 0x80, 0x01],
        DecodeError::MalformedRemainingLength,
    );
    for (first, packet_type) in [
        (0x11, PacketType::Connect),
        (0x28, PacketType::ConnAck),
        (0x42, PacketType::PubAck),
        (0x60, PacketType::PubRel),
        (0x80, PacketType::Subscribe),
        (0x83, PacketType::Subscribe),
        (0xA0, PacketType::Unsubscribe),
        (0xC1, PacketType::PingReq),
        (0xE2, PacketType::Disconnect),
    ] {
        rejects(
            &[first, 0x00],
            DecodeError::InvalidHeaderFlags {
                packet_type,
                flags: first & 0x0F,
            },
        );
    }
    rejects(&[0x36, 0x00], DecodeError::InvalidQoS(3));
    rejects(&[0x38, 0x03, 0x00, 0x01, b'a'], DecodeError::DupOnQoS0);
}

#[test]
fn length_mismatches() {
    rejects(
        &[0x40, 0x03, 0x00, 0x01, 0x00],
        DecodeError::TrailingBytes(PacketType::PubAck),
    );
    rejects(
        &[0x40, 0x01, 0x00],
        DecodeError::UnexpectedEnd(PacketType::PubAck),
    );
    rejects(
        &[0xC0, 0x01, 0x00],
        DecodeError::TrailingBytes(PacketType::PingReq),
    );
    rejects(
        &[0x20, 0x03, 0x00, 0x00, 0x00],
        DecodeError::TrailingBytes(PacketType::ConnAck),
    );
    // A string length running past the end of the packet.
    rejects(
        &[0x30, 0x03, 0x00, 0x05, b'a'],
        DecodeError::UnexpectedEnd(PacketType::Publish),
    );
    // QoS 1 PUBLISH without room for the packet id.
    rejects(
        &[0x32, 0x03, 0x00, 0x01, b'a'],
        DecodeError::UnexpectedEnd(PacketType::Publish),
    );
}

fn connect_bytes(name: &[u8], level: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, u8::try_from(name.len()).unwrap_or(0)];
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, flags, 0x00, 0x3C]);
    body.extend_from_slice(payload);
    let mut bytes = vec![0x10, u8::try_from(body.len()).unwrap_or(0)];
    bytes.extend_from_slice(&body);
    bytes
}

#[test]
fn connect_protocol_checks() {
    let id = [0x00, 0x02, b'c', b'l'];
    let mqtt31 = decode_all(&connect_bytes(b"MQIsdp", 3, 0x02, &id));
    assert_eq!(mqtt31, Err(DecodeError::Mqtt31));
    let v5 = decode_all(&connect_bytes(b"MQTT", 5, 0x02, &id));
    assert_eq!(v5, Err(DecodeError::UnsupportedProtocolLevel(5)));
    for e in [
        DecodeError::Mqtt31,
        DecodeError::UnsupportedProtocolLevel(5),
    ] {
        assert_eq!(
            e.connack_code(),
            Some(ConnectReturnCode::RefusedProtocolVersion)
        );
    }
    rejects(
        &connect_bytes(b"MQTX", 4, 0x02, &id),
        DecodeError::InvalidProtocolName,
    );
    assert_eq!(DecodeError::InvalidProtocolName.connack_code(), None);
}

#[test]
fn connect_flag_and_field_checks() {
    let id = [0x00, 0x02, b'c', b'l'];
    rejects(
        &connect_bytes(b"MQTT", 4, 0x03, &id),
        DecodeError::ConnectReservedFlag,
    );
    rejects(
        &connect_bytes(b"MQTT", 4, 0x0A, &id),
        DecodeError::InvalidWillFlags,
    );
    rejects(
        &connect_bytes(b"MQTT", 4, 0x22, &id),
        DecodeError::InvalidWillFlags,
    );
    rejects(
        &connect_bytes(b"MQTT", 4, 0x1E, &id),
        DecodeError::InvalidQoS(3),
    );
    rejects(
        &connect_bytes(b"MQTT", 4, 0x42, &id),
        DecodeError::PasswordWithoutUsername,
    );
    let empty = decode_all(&connect_bytes(b"MQTT", 4, 0x00, &[0x00, 0x00]));
    assert_eq!(empty, Err(DecodeError::EmptyClientId));
    assert_eq!(
        DecodeError::EmptyClientId.connack_code(),
        Some(ConnectReturnCode::IdentifierRejected)
    );
    rejects(
        &connect_bytes(b"MQTT", 4, 0x02, &[0x00, 0x01, 0xFF]),
        DecodeError::InvalidUtf8,
    );
    rejects(
        &connect_bytes(b"MQTT", 4, 0x02, &[0x00, 0x01, 0x00]),
        DecodeError::NullCharacter,
    );
    // Surrogate code points are not UTF-8.
    rejects(
        &connect_bytes(b"MQTT", 4, 0x02, &[0x00, 0x03, 0xED, 0xA0, 0x80]),
        DecodeError::InvalidUtf8,
    );
    // Will topic with a wildcard.
    rejects(
        &connect_bytes(
            b"MQTT",
            4,
            0x06,
            &[0x00, 0x01, b'c', 0x00, 0x01, b'#', 0x00, 0x00],
        ),
        DecodeError::InvalidTopicName(TopicError::WildcardInName),
    );
    // User-name flag without a user name.
    rejects(
        &connect_bytes(b"MQTT", 4, 0x82, &id),
        DecodeError::UnexpectedEnd(PacketType::Connect),
    );
    // Bytes after the last field.
    rejects(
        &connect_bytes(b"MQTT", 4, 0x02, &[0x00, 0x01, b'c', 0x00]),
        DecodeError::TrailingBytes(PacketType::Connect),
    );
}

#[test]
fn publish_topic_and_packet_id_checks() {
    rejects(
        &[0x30, 0x03, 0x00, 0x01, b'+'],
        DecodeError::InvalidTopicName(TopicError::WildcardInName),
    );
    rejects(
        &[0x30, 0x04, 0x00, 0x02, b'a', b'#'],
        DecodeError::InvalidTopicName(TopicError::WildcardInName),
    );
    rejects(
        &[0x30, 0x02, 0x00, 0x00],
        DecodeError::InvalidTopicName(TopicError::Empty),
    );
    rejects(&[0x30, 0x03, 0x00, 0x01, 0x00], DecodeError::NullCharacter);
    rejects(
        &[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00],
        DecodeError::PacketIdZero(PacketType::Publish),
    );
    rejects(
        &[0x40, 0x02, 0x00, 0x00],
        DecodeError::PacketIdZero(PacketType::PubAck),
    );
}

#[test]
fn subscription_checks() {
    rejects(
        &[0x82, 0x02, 0x00, 0x01],
        DecodeError::NoTopicFilters(PacketType::Subscribe),
    );
    rejects(
        &[0xA2, 0x02, 0x00, 0x01],
        DecodeError::NoTopicFilters(PacketType::Unsubscribe),
    );
    rejects(
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03],
        DecodeError::InvalidRequestedQoS(0x03),
    );
    rejects(
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x05],
        DecodeError::InvalidRequestedQoS(0x05),
    );
    rejects(
        &[0x82, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],
        DecodeError::UnexpectedEnd(PacketType::Subscribe),
    );
    rejects(
        &[0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'a', b'#', b'b', 0x00],
        DecodeError::InvalidTopicFilter(TopicError::InvalidWildcard),
    );
    rejects(
        &[0x82, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00],
        DecodeError::PacketIdZero(PacketType::Subscribe),
    );
    rejects(&[0x90, 0x02, 0x00, 0x01], DecodeError::NoReturnCodes);
    rejects(
        &[0x90, 0x03, 0x00, 0x01, 0x03],
        DecodeError::InvalidSubAckReturnCode(0x03),
    );
    rejects(
        &[0x90, 0x03, 0x00, 0x01, 0x81],
        DecodeError::InvalidSubAckReturnCode(0x81),
    );
}

#[test]
fn connack_checks() {
    rejects(
        &[0x20, 0x02, 0x02, 0x00],
        DecodeError::InvalidConnAckFlags(0x02),
    );
    rejects(
        &[0x20, 0x02, 0x01, 0x05],
        DecodeError::InvalidConnAckFlags(0x01),
    );
    rejects(
        &[0x20, 0x02, 0x00, 0x06],
        DecodeError::InvalidConnectReturnCode(6),
    );
}

// --- encoder refusals ---

fn refuses(packet: Packet, error: EncodeError) {
    let mut buf = BytesMut::from(&b"keep"[..]);
    assert_eq!(encode(&packet, &mut buf), Err(error));
    assert_eq!(&buf[..], b"keep", "buffer changed on error");
}

fn publish(qos: QoS, pkid: Option<u16>, dup: bool) -> Packet {
    Packet::Publish(Publish {
        dup,
        qos,
        retain: false,
        topic: topic("t"),
        pkid,
        payload: Bytes::new(),
    })
}

fn connect(client_id: &str, clean_session: bool) -> Connect {
    Connect {
        clean_session,
        keep_alive: 0,
        client_id: client_id.into(),
        username: None,
        password: None,
        will: None,
    }
}

#[test]
fn encoder_refuses_what_the_decoder_would_reject() {
    refuses(
        publish(QoS::AtLeastOnce, None, false),
        EncodeError::MissingPacketId,
    );
    refuses(
        publish(QoS::AtMostOnce, Some(1), false),
        EncodeError::UnexpectedPacketId,
    );
    refuses(publish(QoS::AtMostOnce, None, true), EncodeError::DupOnQoS0);
    refuses(
        publish(QoS::ExactlyOnce, Some(0), false),
        EncodeError::PacketIdZero(PacketType::Publish),
    );
    refuses(
        Packet::PubRel(PubRel { pkid: 0 }),
        EncodeError::PacketIdZero(PacketType::PubRel),
    );
    refuses(
        Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![],
        }),
        EncodeError::NoTopicFilters(PacketType::Subscribe),
    );
    refuses(
        Packet::Unsubscribe(Unsubscribe {
            pkid: 1,
            filters: vec![],
        }),
        EncodeError::NoTopicFilters(PacketType::Unsubscribe),
    );
    refuses(
        Packet::SubAck(SubAck {
            pkid: 1,
            return_codes: vec![],
        }),
        EncodeError::NoReturnCodes,
    );
    refuses(
        Packet::ConnAck(ConnAck {
            session_present: true,
            code: ConnectReturnCode::NotAuthorized,
        }),
        EncodeError::SessionPresentOnRefusal,
    );
    refuses(
        Packet::Connect(connect("", false)),
        EncodeError::EmptyClientId,
    );
    refuses(
        Packet::Connect(connect("a\0b", true)),
        EncodeError::NullCharacter("client id"),
    );
    refuses(
        Packet::Connect(connect(&"x".repeat(65_536), true)),
        EncodeError::FieldTooLong {
            field: "client id",
            len: 65_536,
        },
    );
    refuses(
        Packet::Connect(Connect {
            password: Some(Bytes::from_static(b"pw")),
            ..connect("c", true)
        }),
        EncodeError::PasswordWithoutUsername,
    );
}
