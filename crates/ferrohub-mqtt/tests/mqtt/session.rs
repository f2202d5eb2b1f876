//! The hub-side session state machine, driven deterministically: a fake clock (a base instant
//! plus offsets), packets in, and the transmit and event queues drained after every step.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ferrohub_mqtt::codec::{
    ConnAck, Connect, ConnectReturnCode, DecodeError, LastWill, Packet, PubAck, PubComp, PubRec,
    PubRel, Publish, QoS, SubAck, Subscribe, SubscribeReturnCode, UnsubAck, Unsubscribe, decode,
    encode,
};
use ferrohub_mqtt::session::{
    AuthDecision, CloseReason, DEFAULT_MAX_KEEP_ALIVE, MAX_PACKETS_BEFORE_CONNACK,
    SendPublishError, Session, SessionConfig, SessionEvent, TelemetryId,
};
use ferrohub_mqtt::topic::{PropertyBag, SystemProperty, TopicFilter, TopicName};

// === harness ===

/// A session with a fake clock. Times are offsets from the moment the connection was accepted.
struct Harness {
    session: Session,
    base: Instant,
}

impl Harness {
    fn new() -> Self {
        Self::with(SessionConfig::default())
    }

    fn with(config: SessionConfig) -> Self {
        let base = Instant::now();
        Self {
            session: Session::new(base, config),
            base,
        }
    }

    /// A session for `client_id` that has been accepted at 0 s, with its queues drained.
    fn connected(client_id: &str) -> Self {
        Self::connected_with(SessionConfig::default(), connect(client_id))
    }

    fn connected_with(config: SessionConfig, connect: Connect) -> Self {
        let mut h = Self::with(config);
        h.packet(0, Packet::Connect(connect));
        assert!(matches!(
            h.events()[..],
            [SessionEvent::Authenticate { .. }]
        ));
        h.accept(0, false, Vec::new());
        assert_eq!(h.transmits(), [connack(false, ConnectReturnCode::Accepted)]);
        assert!(h.events().is_empty());
        h
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    fn packet(&mut self, ms: u64, packet: Packet) {
        self.session.handle_packet(self.at(ms), packet);
    }

    fn accept(&mut self, ms: u64, session_present: bool, subscriptions: Vec<(TopicFilter, QoS)>) {
        self.session.handle_auth_result(
            self.at(ms),
            AuthDecision::Accepted {
                session_present,
                subscriptions,
            },
        );
    }

    fn timeout(&mut self, ms: u64) {
        self.session.handle_timeout(self.at(ms));
    }

    fn durable(&mut self, ms: u64, id: TelemetryId) {
        self.session.handle_telemetry_durable(self.at(ms), id);
    }

    /// Feeds raw bytes the way the driver does: decode while the session wants to read.
    fn bytes(&mut self, ms: u64, buf: &mut BytesMut) {
        while self.session.wants_read() {
            match decode(buf, self.session.config().max_packet_size) {
                Ok(Some(packet)) => self.packet(ms, packet),
                Ok(None) => return,
                Err(e) => return self.session.handle_decode_error(self.at(ms), &e),
            }
        }
    }

    fn transmits(&mut self) -> Vec<Packet> {
        std::iter::from_fn(|| self.session.poll_transmit()).collect()
    }

    fn events(&mut self) -> Vec<SessionEvent> {
        std::iter::from_fn(|| self.session.poll_event()).collect()
    }

    /// The telemetry ids among `events`.
    fn telemetry_ids(events: &[SessionEvent]) -> Vec<TelemetryId> {
        events
            .iter()
            .filter_map(|e| match e {
                SessionEvent::Telemetry { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// Drains the events, expecting the last to be `Closed`; returns its fields and checks the
    /// session looks closed.
    fn expect_closed(&mut self) -> (CloseReason, bool) {
        let mut events = self.events();
        let last = events.pop();
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, SessionEvent::Closed { .. })),
            "Closed must be the last event"
        );
        assert!(self.session.is_closed());
        assert!(!self.session.wants_read());
        assert_eq!(self.session.poll_timeout(), None);
        match last {
            Some(SessionEvent::Closed {
                reason,
                publish_will,
            }) => (reason, publish_will),
            other => panic!("expected Closed, got {other:?}"),
        }
    }

    fn assert_open(&self) {
        assert!(!self.session.is_closed(), "the session closed");
    }
}

// === packet builders ===

fn connect(client_id: &str) -> Connect {
    Connect {
        clean_session: false,
        keep_alive: 60,
        client_id: client_id.to_owned(),
        username: Some(format!(
            "hub.example.test/{client_id}/?api-version=2021-04-12&DeviceClientType=test"
        )),
        password: Some(Bytes::from_static(b"SharedAccessSignature sr=x&sig=y&se=1")),
        will: None,
    }
}

fn with_keep_alive(client_id: &str, keep_alive: u16) -> Connect {
    Connect {
        keep_alive,
        ..connect(client_id)
    }
}

fn with_will(client_id: &str, topic: &str) -> Connect {
    Connect {
        will: Some(LastWill {
            topic: topic_name(topic),
            message: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: false,
        }),
        ..connect(client_id)
    }
}

fn topic_name(s: &str) -> TopicName {
    TopicName::new(s).expect("valid topic name")
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s).expect("valid topic filter")
}

fn publish(topic: &str, qos: QoS, pkid: Option<u16>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic_name(topic),
        pkid,
        payload: Bytes::from_static(b"{\"t\":21.5}"),
    })
}

fn qos1(topic: &str, pkid: u16) -> Packet {
    publish(topic, QoS::AtLeastOnce, Some(pkid))
}

fn qos0(topic: &str) -> Packet {
    publish(topic, QoS::AtMostOnce, None)
}

fn subscribe(pkid: u16, filters: &[(&str, QoS)]) -> Packet {
    Packet::Subscribe(Subscribe {
        pkid,
        filters: filters.iter().map(|(f, q)| (filter(f), *q)).collect(),
    })
}

fn unsubscribe(pkid: u16, filters: &[&str]) -> Packet {
    Packet::Unsubscribe(Unsubscribe {
        pkid,
        filters: filters.iter().map(|f| filter(f)).collect(),
    })
}

fn connack(session_present: bool, code: ConnectReturnCode) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present,
        code,
    })
}

fn puback(pkid: u16) -> Packet {
    Packet::PubAck(PubAck { pkid })
}

const TELEMETRY: &str = "devices/dev1/messages/events/";
const C2D: &str = "devices/dev1/messages/devicebound/#";
const METHODS: &str = "$iothub/methods/POST/#";
const TWIN_RES: &str = "$iothub/twin/res/#";
const DESIRED: &str = "$iothub/twin/PATCH/properties/desired/#";
const GRANTED_0: SubscribeReturnCode = SubscribeReturnCode::Success(QoS::AtMostOnce);
const GRANTED_1: SubscribeReturnCode = SubscribeReturnCode::Success(QoS::AtLeastOnce);
const REFUSED: SubscribeReturnCode = SubscribeReturnCode::Failure;

// === CONNECT ===

#[test]
fn happy_path() {
    let mut h = Harness::new();
    assert!(h.session.wants_read());
    h.packet(5, Packet::Connect(connect("dev1")));
    assert_eq!(
        h.events(),
        [SessionEvent::Authenticate {
            device_id: "dev1".into(),
            module_id: None,
            username: Some(
                "hub.example.test/dev1/?api-version=2021-04-12&DeviceClientType=test".into()
            ),
            password: Some(Bytes::from_static(b"SharedAccessSignature sr=x&sig=y&se=1")),
            clean_session: false,
            keep_alive: Duration::from_secs(60),
            will: None,
        }]
    );
    assert!(
        h.transmits().is_empty(),
        "no CONNACK before the server decides"
    );
    assert!(
        !h.session.wants_read(),
        "packets after CONNECT wait in the socket"
    );
    assert_eq!(h.session.poll_timeout(), None);
    assert_eq!(h.session.identity(), None, "not authenticated yet");

    h.accept(20, true, Vec::new());
    assert_eq!(h.transmits(), [connack(true, ConnectReturnCode::Accepted)]);
    assert!(h.events().is_empty());
    assert!(h.session.is_connected());
    assert!(h.session.wants_read());
    assert_eq!(h.session.identity(), Some(("dev1", None)));
    assert_eq!(h.session.poll_timeout(), Some(h.at(20 + 90_000)));
}

#[test]
fn module_connect() {
    let mut h = Harness::new();
    h.packet(0, Packet::Connect(connect("dev1/mod1")));
    assert!(matches!(
        &h.events()[..],
        [SessionEvent::Authenticate { device_id, module_id: Some(m), .. }]
            if device_id == "dev1" && m == "mod1"
    ));
    h.accept(0, false, Vec::new());
    assert_eq!(h.session.identity(), Some(("dev1", Some("mod1"))));
}

#[test]
fn clean_session_never_reports_a_stored_session() {
    let mut h = Harness::new();
    h.packet(
        0,
        Packet::Connect(Connect {
            clean_session: true,
            ..connect("dev1")
        }),
    );
    h.events();
    h.accept(0, true, vec![(filter(C2D), QoS::AtLeastOnce)]);
    assert_eq!(h.transmits(), [connack(false, ConnectReturnCode::Accepted)]);
    assert!(h.session.subscriptions().is_empty());
    assert!(h.events().is_empty());
}

#[test]
fn restored_subscriptions_are_rechecked() {
    let mut h = Harness::new();
    h.packet(0, Packet::Connect(connect("dev1")));
    h.events();
    let own = vec![
        (filter(C2D), QoS::AtLeastOnce),
        (filter(METHODS), QoS::AtMostOnce),
    ];
    h.accept(0, true, own.clone());
    assert_eq!(h.session.subscriptions(), &own[..]);
    assert!(h.events().is_empty(), "nothing to correct");

    let mut h = Harness::new();
    h.packet(0, Packet::Connect(connect("dev1")));
    h.events();
    let mut stored = own.clone();
    stored.insert(
        1,
        (
            filter("devices/dev2/messages/devicebound/#"),
            QoS::AtLeastOnce,
        ),
    );
    h.accept(0, true, stored);
    assert_eq!(h.transmits(), [connack(true, ConnectReturnCode::Accepted)]);
    assert_eq!(
        h.events(),
        [SessionEvent::SubscriptionsChanged {
            subscriptions: own.clone()
        }]
    );
    assert_eq!(h.session.subscriptions(), &own[..]);
}

#[test]
fn every_refusal_code_is_sent_then_the_connection_closes() {
    for code in [
        ConnectReturnCode::RefusedProtocolVersion,
        ConnectReturnCode::IdentifierRejected,
        ConnectReturnCode::ServerUnavailable,
        ConnectReturnCode::BadUsernameOrPassword,
        ConnectReturnCode::NotAuthorized,
    ] {
        let mut h = Harness::new();
        h.packet(0, Packet::Connect(with_will("dev1", TELEMETRY)));
        h.events();
        h.session
            .handle_auth_result(h.at(10), AuthDecision::Refused(code));
        assert_eq!(h.transmits(), [connack(false, code)], "{code:?}");
        let (reason, publish_will) = h.expect_closed();
        assert!(
            matches!(reason, CloseReason::Refused { code: c, .. } if c == code),
            "{reason:?}"
        );
        assert!(!publish_will, "a refused connection has no will");
        assert_eq!(h.session.identity(), None);
    }
}

#[test]
fn refused_with_accepted_is_sent_as_not_authorized() {
    let mut h = Harness::new();
    h.packet(0, Packet::Connect(connect("dev1")));
    h.events();
    h.session
        .handle_auth_result(h.at(0), AuthDecision::Refused(ConnectReturnCode::Accepted));
    assert_eq!(
        h.transmits(),
        [connack(false, ConnectReturnCode::NotAuthorized)]
    );
    h.expect_closed();
}

#[test]
fn malformed_client_id_gets_identifier_rejected() {
    for client_id in ["", "/mod1", "dev1/", "dev1/mod1/x"] {
        let mut h = Harness::new();
        h.packet(
            0,
            Packet::Connect(Connect {
                clean_session: true,
                username: None,
                password: None,
                ..connect(client_id)
            }),
        );
        assert_eq!(
            h.transmits(),
            [connack(false, ConnectReturnCode::IdentifierRejected)],
            "{client_id:?}"
        );
        let (reason, _) = h.expect_closed();
        assert!(matches!(
            reason,
            CloseReason::Refused {
                code: ConnectReturnCode::IdentifierRejected,
                ..
            }
        ));
    }
}

#[test]
fn user_name_for_another_client_gets_not_authorized() {
    for username in ["hub/dev2/?api-version=2021-04-12", "dev1", "hub/dev1/mod1/"] {
        let mut h = Harness::new();
        h.packet(
            0,
            Packet::Connect(Connect {
                username: Some(username.to_owned()),
                ..connect("dev1")
            }),
        );
        assert_eq!(
            h.transmits(),
            [connack(false, ConnectReturnCode::NotAuthorized)],
            "{username}"
        );
        let (reason, _) = h.expect_closed();
        assert!(matches!(reason, CloseReason::Refused { .. }));
    }
}

#[test]
fn user_name_variants_are_tolerated() {
    for (client_id, username) in [
        ("dev1", "hub.azure-devices.net/dev1/api-version=2016-11-14"),
        ("dev1", "hub.azure-devices.net/dev1"),
        (
            "dev1/mod1",
            "hub.azure-devices.net/dev1/mod1/?api-version=2020-09-30&DeviceClientType=iothubclient%2f1.9.0",
        ),
    ] {
        let mut h = Harness::new();
        h.packet(
            0,
            Packet::Connect(Connect {
                username: Some(username.to_owned()),
                ..connect(client_id)
            }),
        );
        assert!(
            matches!(h.events()[..], [SessionEvent::Authenticate { .. }]),
            "{username}"
        );
    }
}

#[test]
fn missing_password_is_left_to_the_server() {
    let mut h = Harness::new();
    h.packet(
        0,
        Packet::Connect(Connect {
            password: None,
            ..connect("dev1")
        }),
    );
    assert!(matches!(
        h.events()[..],
        [SessionEvent::Authenticate { password: None, .. }]
    ));
    h.session.handle_auth_result(
        h.at(0),
        AuthDecision::Refused(ConnectReturnCode::NotAuthorized),
    );
    assert_eq!(
        h.transmits(),
        [connack(false, ConnectReturnCode::NotAuthorized)]
    );
}

#[test]
fn will_must_be_own_telemetry() {
    let mut h = Harness::new();
    h.packet(
        0,
        Packet::Connect(with_will("dev1", "devices/dev2/messages/events/")),
    );
    assert_eq!(
        h.transmits(),
        [connack(false, ConnectReturnCode::NotAuthorized)]
    );
    h.expect_closed();

    let mut h = Harness::new();
    h.packet(
        0,
        Packet::Connect(with_will("dev1", "devices/dev1/messages/events/a=1")),
    );
    assert!(matches!(
        &h.events()[..],
        [SessionEvent::Authenticate { will: Some(w), .. }] if w.topic.as_str().ends_with("a=1")
    ));
}

#[test]
fn connect_phase_decode_errors_get_their_connack() {
    for (error, code) in [
        (
            DecodeError::UnsupportedProtocolLevel(5),
            Some(ConnectReturnCode::RefusedProtocolVersion),
        ),
        (
            DecodeError::Mqtt31,
            Some(ConnectReturnCode::RefusedProtocolVersion),
        ),
        (
            DecodeError::EmptyClientId,
            Some(ConnectReturnCode::IdentifierRejected),
        ),
        (DecodeError::InvalidProtocolName, None),
        (DecodeError::InvalidPacketType(0), None),
    ] {
        let mut h = Harness::new();
        h.session.handle_decode_error(h.at(0), &error);
        let expected: Vec<Packet> = code.map(|c| connack(false, c)).into_iter().collect();
        assert_eq!(h.transmits(), expected, "{error:?}");
        let (reason, publish_will) = h.expect_closed();
        match code {
            Some(c) => assert!(
                matches!(reason, CloseReason::Refused { code, .. } if code == c),
                "{reason:?}"
            ),
            None => assert!(
                matches!(reason, CloseReason::ProtocolViolation(_)),
                "{reason:?}"
            ),
        }
        assert!(!publish_will);
    }
}

#[test]
fn mqtt5_connect_bytes_get_connack_1() {
    let mut buf = BytesMut::new();
    encode(&Packet::Connect(connect("dev1")), &mut buf).expect("encodes");
    // Fixed header (2 bytes: the packet is < 128 bytes), "MQTT" (6 bytes), then the level.
    assert_eq!(buf[8], 4);
    buf[8] = 5;
    let mut h = Harness::new();
    h.bytes(0, &mut buf);
    assert_eq!(
        h.transmits(),
        [connack(false, ConnectReturnCode::RefusedProtocolVersion)]
    );
    h.expect_closed();
}

#[test]
fn decode_error_after_connect_closes_without_connack_and_with_will() {
    let mut h = Harness::connected_with(SessionConfig::default(), with_will("dev1", TELEMETRY));
    h.session
        .handle_decode_error(h.at(1), &DecodeError::UnsupportedProtocolLevel(5));
    assert!(h.transmits().is_empty());
    let (reason, publish_will) = h.expect_closed();
    assert!(matches!(reason, CloseReason::ProtocolViolation(_)));
    assert!(publish_will);
}

#[test]
fn first_packet_must_be_connect() {
    for first in [
        qos1(TELEMETRY, 1),
        Packet::PingReq,
        Packet::Disconnect,
        subscribe(1, &[(C2D, QoS::AtLeastOnce)]),
    ] {
        let mut h = Harness::new();
        h.packet(0, first.clone());
        assert!(h.transmits().is_empty(), "{first:?}");
        let (reason, publish_will) = h.expect_closed();
        assert!(matches!(reason, CloseReason::ProtocolViolation(_)));
        assert!(!publish_will);
        // Whatever follows is ignored.
        h.packet(1, Packet::Connect(connect("dev1")));
        assert!(h.events().is_empty());
        assert!(h.transmits().is_empty());
    }
}

#[test]
fn second_connect_closes() {
    let mut h = Harness::connected_with(SessionConfig::default(), with_will("dev1", TELEMETRY));
    h.packet(1000, Packet::Connect(connect("dev1")));
    assert!(h.transmits().is_empty());
    let (reason, publish_will) = h.expect_closed();
    assert!(matches!(reason, CloseReason::ProtocolViolation(_)));
    assert!(publish_will);
    assert_eq!(
        h.session.identity(),
        Some(("dev1", None)),
        "kept after close"
    );
}

#[test]
fn second_connect_while_authenticating_closes() {
    let mut h = Harness::new();
    h.packet(0, Packet::Connect(connect("dev1")));
    h.events();
    h.packet(1, Packet::Connect(connect("dev1")));
    let (reason, publish_will) = h.expect_closed();
    assert!(matches!(reason, CloseReason::ProtocolViolation(_)));
    assert!(!publish_will);
    // The late answer changes nothing.
    h.accept(2, false, Vec::new());
    assert!(h.transmits().is_empty());
    assert!(h.events().is_empty());
}

#[test]
fn connect_timeout() {
    let mut h = Harness::new();
    assert_eq!(h.session.poll_timeout(), Some(h.at(30_000)));
    h.timeout(29_999);
    h.assert_open();
    h.timeout(30_000);
    assert!(h.transmits().is_empty());
    assert_eq!(h.expect_closed(), (CloseReason::ConnectTimeout, false));
}

#[test]
fn no_connect_deadline_while_authenticating() {
    let mut h = Harness::new();
    h.packet(29_000, Packet::Connect(connect("dev1")));
    h.timeout(60_000);
    h.assert_open();
    h.accept(60_000, false, Vec::new());
    assert_eq!(h.session.poll_timeout(), Some(h.at(150_000)));
}

// === packets sent before the CONNACK ===

#[test]
fn packets_after_connect_are_handled_after_acceptance() {
    let mut buf = BytesMut::new();
    for packet in [
        Packet::Connect(connect("dev1")),
        subscribe(7, &[(C2D, QoS::AtLeastOnce)]),
        qos1(TELEMETRY, 8),
        Packet::PingReq,
    ] {
        encode(&packet, &mut buf).expect("encodes");
    }
    let mut h = Harness::new();
    h.bytes(0, &mut buf);
    assert!(
        !buf.is_empty(),
        "the session stops reading while authenticating"
    );
    assert!(matches!(
        h.events()[..],
        [SessionEvent::Authenticate { .. }]
    ));

    h.accept(10, false, Vec::new());
    h.bytes(10, &mut buf);
    assert!(buf.is_empty());
    assert_eq!(
        h.transmits(),
        [
            connack(false, ConnectReturnCode::Accepted),
            Packet::SubAck(SubAck {
                pkid: 7,
                return_codes: vec![GRANTED_1]
            }),
            Packet::PingResp,
        ]
    );
    let events = h.events();
    assert!(matches!(
        events[..],
        [
            SessionEvent::SubscriptionsChanged { .. },
            SessionEvent::Telemetry { .. }
        ]
    ));
    let id = Harness::telemetry_ids(&events)[0];
    h.durable(11, id);
    assert_eq!(h.transmits(), [puback(8)]);
}

#[test]
fn packets_handed_over_while_authenticating_are_queued_or_dropped() {
    // A driver that ignores `wants_read`: packets are kept and handled after acceptance...
    let mut h = Harness::new();
    h.packet(0, Packet::Connect(connect("dev1")));
    h.events();
    h.packet(1, Packet::PingReq);
    assert!(h.transmits().is_empty());
    h.accept(2, false, Vec::new());
    assert_eq!(
        h.transmits(),
        [
            connack(false, ConnectReturnCode::Accepted),
            Packet::PingResp
        ]
    );

    // ...dropped on refusal [MQTT-3.1.4-5]...
    let mut h = Harness::new();
    h.packet(0, Packet::Connect(connect("dev1")));
    h.events();
    h.packet(1, qos1(TELEMETRY, 1));
    h.session.handle_auth_result(
        h.at(2),
        AuthDecision::Refused(ConnectReturnCode::NotAuthorized),
    );
    assert_eq!(
        h.transmits(),
        [connack(false, ConnectReturnCode::NotAuthorized)]
    );
    let events = h.events();
    assert!(Harness::telemetry_ids(&events).is_empty());

    // ...and bounded.
    let mut h = Harness::new();
    h.packet(0, Packet::Connect(connect("dev1")));
    h.events();
    for _ in 0..MAX_PACKETS_BEFORE_CONNACK {
        h.packet(1, Packet::PingReq);
    }
    h.assert_open();
    h.packet(1, Packet::PingReq);
    let (reason, _) = h.expect_closed();
    assert!(matches!(reason, CloseReason::ProtocolViolation(_)));
}

#[test]
fn a_violation_replayed_after_acceptance_still_sends_the_connack_only() {
    let mut h = Harness::new();
    h.packet(0, Packet::Connect(with_will("dev1", TELEMETRY)));
    h.events();
    h.packet(1, subscribe(1, &[(C2D, QoS::AtLeastOnce)]));
    h.packet(1, Packet::PubRec(PubRec { pkid: 1 }));
    h.accept(2, false, Vec::new());
    assert_eq!(
        h.transmits(),
        [connack(false, ConnectReturnCode::Accepted)],
        "the SUBACK queued before the close is dropped"
    );
    let (reason, publish_will) = h.expect_closed();
    assert!(matches!(reason, CloseReason::ProtocolViolation(_)));
    assert!(publish_will, "the connection had been accepted");
}

// === keep-alive ===

#[test]
fn keep_alive_expires_exactly_at_one_and_a_half_times() {
    let mut h = Harness::connected("dev1");
    assert_eq!(h.session.poll_timeout(), Some(h.at(90_000)));
    h.timeout(89_999);
    h.assert_open();
    h.timeout(90_000);
    assert!(h.transmits().is_empty());
    assert_eq!(h.expect_closed(), (CloseReason::KeepAliveTimeout, false));
}

#[test]
fn any_packet_resets_the_keep_alive() {
    let mut h = Harness::connected("dev1");
    h.packet(50_000, Packet::PingReq);
    assert_eq!(h.transmits(), [Packet::PingResp]);
    assert_eq!(h.session.poll_timeout(), Some(h.at(140_000)));
    h.timeout(90_000);
    h.assert_open();
    h.packet(100_000, qos0(TELEMETRY));
    h.packet(120_000, subscribe(1, &[(METHODS, QoS::AtMostOnce)]));
    assert_eq!(h.session.poll_timeout(), Some(h.at(210_000)));
    h.timeout(209_999);
    h.assert_open();
    h.timeout(210_000);
    assert_eq!(h.expect_closed().0, CloseReason::KeepAliveTimeout);
}

#[test]
fn keep_alive_zero_and_large_values_use_the_cap() {
    let max = DEFAULT_MAX_KEEP_ALIVE.as_millis() as u64;
    for keep_alive in [0, 1178, u16::MAX] {
        let mut h = Harness::connected_with(
            SessionConfig::default(),
            with_keep_alive("dev1", keep_alive),
        );
        assert_eq!(h.session.poll_timeout(), Some(h.at(max)), "{keep_alive}");
        h.timeout(max - 1);
        h.assert_open();
        h.timeout(max);
        assert_eq!(h.expect_closed().0, CloseReason::KeepAliveTimeout);
    }
    let h = Harness::connected_with(SessionConfig::default(), with_keep_alive("dev1", 1));
    assert_eq!(h.session.poll_timeout(), Some(h.at(1_500)));
}

#[test]
fn keep_alive_cap_is_configurable() {
    let config = SessionConfig {
        max_keep_alive: Duration::from_secs(10),
        ..SessionConfig::default()
    };
    let h = Harness::connected_with(config, with_keep_alive("dev1", 60));
    assert_eq!(h.session.poll_timeout(), Some(h.at(10_000)));
}

#[test]
fn pingreq_gets_pingresp() {
    let mut h = Harness::connected("dev1");
    h.packet(1, Packet::PingReq);
    h.packet(2, Packet::PingReq);
    assert_eq!(h.transmits(), [Packet::PingResp, Packet::PingResp]);
    assert!(h.events().is_empty());
}

// === telemetry ===

#[test]
fn qos0_telemetry_is_an_event_without_puback() {
    let mut h = Harness::connected("dev1");
    h.packet(
        1,
        qos0("devices/dev1/messages/events/%24.mid=m1&%24.ct=application%2Fjson&a=b/"),
    );
    let events = h.events();
    let [
        SessionEvent::Telemetry {
            id,
            qos,
            retain,
            device_id,
            module_id,
            properties,
            payload,
        },
    ] = &events[..]
    else {
        panic!("expected one Telemetry event, got {events:?}");
    };
    assert_eq!(*qos, QoS::AtMostOnce);
    assert!(!retain);
    assert_eq!((device_id.as_str(), module_id.as_deref()), ("dev1", None));
    assert_eq!(properties.system(&SystemProperty::MessageId), Some("m1"));
    assert_eq!(
        properties.system(&SystemProperty::ContentType),
        Some("application/json")
    );
    assert_eq!(
        properties.application().collect::<Vec<_>>(),
        [("a", Some("b"))]
    );
    assert_eq!(&payload[..], b"{\"t\":21.5}");
    assert!(h.transmits().is_empty());
    assert_eq!(h.session.inflight_telemetry(), 0);
    // Acknowledging or failing a QoS 0 message changes nothing.
    let id = *id;
    h.durable(2, id);
    h.session.handle_telemetry_failed(id);
    assert!(h.transmits().is_empty());
    h.assert_open();
}

#[test]
fn qos1_telemetry_is_acknowledged_only_once_durable() {
    let mut h = Harness::connected("dev1");
    h.packet(1, qos1(TELEMETRY, 42));
    let events = h.events();
    assert!(matches!(
        &events[..],
        [SessionEvent::Telemetry { qos: QoS::AtLeastOnce, properties, .. }]
            if *properties == PropertyBag::new()
    ));
    assert!(h.transmits().is_empty(), "no PUBACK before durability");
    assert_eq!(h.session.inflight_telemetry(), 1);
    h.durable(5, Harness::telemetry_ids(&events)[0]);
    assert_eq!(h.transmits(), [puback(42)]);
    assert_eq!(h.session.inflight_telemetry(), 0);
    h.durable(6, Harness::telemetry_ids(&events)[0]);
    assert!(h.transmits().is_empty(), "acknowledged once");
}

#[test]
fn pubacks_keep_arrival_order() {
    let mut h = Harness::connected("dev1");
    h.packet(1, qos1(TELEMETRY, 1));
    h.packet(2, qos0(TELEMETRY));
    h.packet(3, qos1(TELEMETRY, 2));
    h.packet(4, qos1(TELEMETRY, 3));
    let ids = Harness::telemetry_ids(&h.events());
    assert_eq!(ids.len(), 4);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase");
    h.durable(5, ids[2]);
    assert!(h.transmits().is_empty(), "waits for the first");
    h.durable(6, ids[0]);
    assert_eq!(h.transmits(), [puback(1), puback(2)]);
    h.durable(7, ids[3]);
    assert_eq!(h.transmits(), [puback(3)]);
}

#[test]
fn storage_failure_closes_without_puback() {
    let mut h = Harness::connected_with(SessionConfig::default(), with_will("dev1", TELEMETRY));
    h.packet(1, qos1(TELEMETRY, 1));
    h.packet(2, qos1(TELEMETRY, 2));
    let ids = Harness::telemetry_ids(&h.events());
    h.durable(3, ids[0]);
    assert_eq!(h.transmits(), [puback(1)]);
    h.session.handle_telemetry_failed(ids[1]);
    assert!(h.transmits().is_empty());
    assert_eq!(h.expect_closed(), (CloseReason::TelemetryNotStored, true));
    h.durable(4, ids[1]);
    assert!(h.transmits().is_empty(), "nothing after the close");
    assert!(h.events().is_empty());
}

#[test]
fn failure_of_an_already_durable_message_is_ignored() {
    let mut h = Harness::connected("dev1");
    h.packet(1, qos1(TELEMETRY, 1));
    let ids = Harness::telemetry_ids(&h.events());
    h.durable(2, ids[0]);
    h.session.handle_telemetry_failed(ids[0]);
    h.assert_open();
    assert_eq!(h.transmits(), [puback(1)]);
}

#[test]
fn redelivery_of_a_waiting_message_is_not_appended_twice() {
    let mut h = Harness::connected("dev1");
    h.packet(1, qos1(TELEMETRY, 9));
    let ids = Harness::telemetry_ids(&h.events());
    let Packet::Publish(mut again) = qos1(TELEMETRY, 9) else {
        unreachable!()
    };
    again.dup = true;
    h.packet(2, Packet::Publish(again));
    assert!(h.events().is_empty(), "duplicate dropped");
    h.durable(3, ids[0]);
    assert_eq!(h.transmits(), [puback(9)], "one PUBACK");
    // Once acknowledged, the identifier is free for a new message.
    h.packet(4, qos1(TELEMETRY, 9));
    assert_eq!(Harness::telemetry_ids(&h.events()).len(), 1);
}

#[test]
fn retain_is_passed_through() {
    let mut h = Harness::connected("dev1");
    let Packet::Publish(mut p) = qos1(TELEMETRY, 1) else {
        unreachable!()
    };
    p.retain = true;
    h.packet(1, Packet::Publish(p));
    assert!(matches!(
        h.events()[..],
        [SessionEvent::Telemetry { retain: true, .. }]
    ));
}

#[test]
fn backpressure_pauses_reading_and_the_keep_alive() {
    let config = SessionConfig {
        max_inflight_telemetry: 2,
        ..SessionConfig::default()
    };
    let mut h = Harness::connected_with(config, connect("dev1"));
    h.packet(1_000, qos1(TELEMETRY, 1));
    assert!(h.session.wants_read());
    h.packet(2_000, qos0(TELEMETRY));
    assert!(h.session.wants_read(), "QoS 0 does not count");
    h.packet(3_000, qos1(TELEMETRY, 2));
    assert!(!h.session.wants_read());
    assert_eq!(
        h.session.poll_timeout(),
        None,
        "the silence is the hub's doing"
    );
    h.timeout(1_000_000);
    h.assert_open();

    let ids = Harness::telemetry_ids(&h.events());
    h.durable(2_000_000, ids[0]);
    assert_eq!(h.transmits(), [puback(1)]);
    assert!(h.session.wants_read());
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.at(2_090_000)),
        "the keep-alive restarts when reading resumes"
    );
    h.timeout(2_089_999);
    h.assert_open();
    h.timeout(2_090_000);
    assert_eq!(h.expect_closed().0, CloseReason::KeepAliveTimeout);
}

#[test]
fn packets_handed_over_under_backpressure_are_still_handled() {
    let config = SessionConfig {
        max_inflight_telemetry: 1,
        ..SessionConfig::default()
    };
    let mut h = Harness::connected_with(config, connect("dev1"));
    h.packet(1, qos1(TELEMETRY, 1));
    assert!(!h.session.wants_read());
    h.packet(2, qos1(TELEMETRY, 2));
    let ids = Harness::telemetry_ids(&h.events());
    assert_eq!(ids.len(), 2);
    h.durable(3, ids[0]);
    assert!(!h.session.wants_read(), "still one waiting");
    h.durable(4, ids[1]);
    assert!(h.session.wants_read());
    assert_eq!(h.transmits(), [puback(1), puback(2)]);
}

#[test]
fn publishing_for_another_identity_closes_and_emits_nothing() {
    for (client_id, topic) in [
        ("dev1", "devices/dev2/messages/events/"),
        ("dev1", "devices/dev1/modules/mod1/messages/events/"),
        ("dev1/mod1", "devices/dev1/messages/events/"),
        ("dev1/mod1", "devices/dev1/modules/mod2/messages/events/"),
        ("dev1/mod1", "devices/dev2/modules/mod1/messages/events/"),
    ] {
        let mut h = Harness::connected_with(
            SessionConfig::default(),
            with_will(client_id, &will_topic(client_id)),
        );
        h.packet(1, qos1(topic, 1));
        assert!(h.transmits().is_empty(), "{client_id} {topic}");
        let (reason, publish_will) = h.expect_closed();
        assert!(
            matches!(reason, CloseReason::Unauthorized(_)),
            "{client_id} {topic}: {reason:?}"
        );
        assert!(publish_will);
    }
}

fn will_topic(client_id: &str) -> String {
    match client_id.split_once('/') {
        Some((d, m)) => format!("devices/{d}/modules/{m}/messages/events/"),
        None => format!("devices/{client_id}/messages/events/"),
    }
}

#[test]
fn module_telemetry() {
    let mut h = Harness::connected("dev1/mod1");
    h.packet(
        1,
        qos1("devices/dev1/modules/mod1/messages/events/%24.on=out1", 3),
    );
    let events = h.events();
    assert!(matches!(
        &events[..],
        [SessionEvent::Telemetry { device_id, module_id: Some(m), properties, .. }]
            if device_id == "dev1" && m == "mod1"
                && properties.system(&SystemProperty::OutputName) == Some("out1")
    ));
    h.durable(2, Harness::telemetry_ids(&events)[0]);
    assert_eq!(h.transmits(), [puback(3)]);
}

#[test]
fn unsupported_topics_close_as_protocol_violations() {
    for topic in [
        "devices/dev1/messages/devicebound/x",
        "$iothub/twin/GET",
        "$iothub/twin/PATCH/properties/desired/?$rid=1",
        "$iothub/methods/res//?$rid=1",
        "$iothub/methods/res/200",
        "$iothub/methods/POST/reboot/?$rid=1",
        "dev1/telemetry",
        "devices/dev1/messages/events/a=%zz",
    ] {
        let mut h = Harness::connected("dev1");
        h.packet(1, qos1(topic, 1));
        assert!(h.transmits().is_empty());
        let (reason, _) = h.expect_closed();
        assert!(
            matches!(reason, CloseReason::ProtocolViolation(_)),
            "{topic}: {reason:?}"
        );
        assert!(h.events().is_empty());
    }
}

#[test]
fn twin_and_method_requests_are_emitted_and_acknowledged_in_order() {
    let mut h = Harness::connected("dev1");
    // Telemetry first: its PUBACK must not be overtaken by the request's.
    h.packet(1, qos1(TELEMETRY, 1));
    let telemetry = Harness::telemetry_ids(&h.events());
    h.packet(2, qos1("$iothub/twin/GET/?$rid=42", 2));
    h.packet(
        3,
        publish("$iothub/methods/res/200/?$rid=7", QoS::AtMostOnce, None),
    );
    h.packet(
        4,
        qos1(
            "$iothub/twin/PATCH/properties/reported/?$rid=43&$version=2",
            3,
        ),
    );
    let events = h.events();
    let topics: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Request { topic, .. } => Some(topic.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        topics,
        [
            "$iothub/twin/GET/?$rid=42",
            "$iothub/methods/res/200/?$rid=7",
            "$iothub/twin/PATCH/properties/reported/?$rid=43&$version=2"
        ]
    );
    assert!(h.transmits().is_empty(), "held behind the telemetry");
    h.durable(5, telemetry[0]);
    assert_eq!(h.transmits(), [puback(1), puback(2), puback(3)]);
    h.assert_open();
}

#[test]
fn qos2_publish_closes() {
    let mut h = Harness::connected("dev1");
    h.packet(1, publish(TELEMETRY, QoS::ExactlyOnce, Some(1)));
    assert!(h.transmits().is_empty());
    let (reason, _) = h.expect_closed();
    assert!(matches!(reason, CloseReason::ProtocolViolation(_)));
}

#[test]
fn qos2_acknowledgements_and_server_packets_close() {
    for packet in [
        Packet::PubRec(PubRec { pkid: 1 }),
        Packet::PubRel(PubRel { pkid: 1 }),
        Packet::PubComp(PubComp { pkid: 1 }),
        connack(false, ConnectReturnCode::Accepted),
        Packet::SubAck(SubAck {
            pkid: 1,
            return_codes: vec![GRANTED_1],
        }),
        Packet::UnsubAck(UnsubAck { pkid: 1 }),
        Packet::PingResp,
    ] {
        let mut h = Harness::connected("dev1");
        h.packet(1, packet.clone());
        let (reason, _) = h.expect_closed();
        assert!(
            matches!(reason, CloseReason::ProtocolViolation(_)),
            "{packet:?}"
        );
    }
}

// === subscriptions ===

#[test]
fn subscribe_grants_documented_filters_only() {
    let mut h = Harness::connected("dev1");
    h.packet(
        1,
        subscribe(
            3,
            &[
                (C2D, QoS::AtLeastOnce),
                (METHODS, QoS::ExactlyOnce),
                (TWIN_RES, QoS::AtMostOnce),
                ("devices/dev2/messages/devicebound/#", QoS::AtLeastOnce),
                ("#", QoS::AtLeastOnce),
                ("devices/dev1/modules/mod1/#", QoS::AtLeastOnce),
            ],
        ),
    );
    assert_eq!(
        h.transmits(),
        [Packet::SubAck(SubAck {
            pkid: 3,
            return_codes: vec![GRANTED_1, GRANTED_1, GRANTED_0, REFUSED, REFUSED, REFUSED],
        })]
    );
    let granted = vec![
        (filter(C2D), QoS::AtLeastOnce),
        (filter(METHODS), QoS::AtLeastOnce),
        (filter(TWIN_RES), QoS::AtMostOnce),
    ];
    assert_eq!(
        h.events(),
        [SessionEvent::SubscriptionsChanged {
            subscriptions: granted.clone()
        }]
    );
    assert_eq!(h.session.subscriptions(), &granted[..]);

    // The same filters again: a SUBACK, but nothing changed.
    h.packet(2, subscribe(4, &[(C2D, QoS::AtLeastOnce)]));
    assert_eq!(h.transmits().len(), 1);
    assert!(h.events().is_empty());
}

#[test]
fn refused_subscribe_still_gets_a_suback_and_changes_nothing() {
    let mut h = Harness::connected("dev1");
    h.packet(
        1,
        subscribe(1, &[("devices/+/messages/devicebound/#", QoS::AtLeastOnce)]),
    );
    assert_eq!(
        h.transmits(),
        [Packet::SubAck(SubAck {
            pkid: 1,
            return_codes: vec![REFUSED],
        })]
    );
    assert!(h.events().is_empty());
    h.assert_open();
}

#[test]
fn module_subscriptions() {
    let mut h = Harness::connected("dev1/mod1");
    h.packet(
        1,
        subscribe(
            1,
            &[
                ("devices/dev1/modules/mod1/inputs/#", QoS::AtLeastOnce),
                ("devices/dev1/modules/mod1/#", QoS::AtLeastOnce),
                ("devices/dev1/modules/mod2/#", QoS::AtLeastOnce),
                (C2D, QoS::AtLeastOnce),
                (DESIRED, QoS::AtMostOnce),
            ],
        ),
    );
    assert_eq!(
        h.transmits(),
        [Packet::SubAck(SubAck {
            pkid: 1,
            return_codes: vec![GRANTED_1, GRANTED_1, REFUSED, REFUSED, GRANTED_0],
        })]
    );
}

#[test]
fn subscription_limit_refuses_the_excess() {
    let config = SessionConfig {
        max_subscriptions: 2,
        ..SessionConfig::default()
    };
    let mut h = Harness::connected_with(config, connect("dev1"));
    h.packet(
        1,
        subscribe(1, &[(C2D, QoS::AtLeastOnce), (METHODS, QoS::AtLeastOnce)]),
    );
    h.transmits();
    h.events();
    h.packet(
        2,
        subscribe(
            2,
            &[
                (TWIN_RES, QoS::AtLeastOnce),
                (C2D, QoS::AtMostOnce),
                (DESIRED, QoS::AtLeastOnce),
            ],
        ),
    );
    assert_eq!(
        h.transmits(),
        [Packet::SubAck(SubAck {
            pkid: 2,
            return_codes: vec![REFUSED, GRANTED_0, REFUSED],
        })],
        "an existing filter can still be replaced"
    );
    assert_eq!(
        h.events(),
        [SessionEvent::SubscriptionsChanged {
            subscriptions: vec![
                (filter(C2D), QoS::AtMostOnce),
                (filter(METHODS), QoS::AtLeastOnce)
            ]
        }]
    );
    // Room again after an UNSUBSCRIBE.
    h.packet(3, unsubscribe(3, &[METHODS]));
    h.packet(4, subscribe(4, &[(DESIRED, QoS::AtLeastOnce)]));
    assert_eq!(
        h.transmits(),
        [
            Packet::UnsubAck(UnsubAck { pkid: 3 }),
            Packet::SubAck(SubAck {
                pkid: 4,
                return_codes: vec![GRANTED_1]
            })
        ]
    );
}

#[test]
fn default_limit_is_five() {
    let mut h = Harness::connected("dev1/mod1");
    h.packet(
        1,
        subscribe(
            1,
            &[
                ("devices/dev1/modules/mod1/inputs/#", QoS::AtLeastOnce),
                ("devices/dev1/modules/mod1/#", QoS::AtLeastOnce),
                (METHODS, QoS::AtLeastOnce),
                (TWIN_RES, QoS::AtLeastOnce),
                (DESIRED, QoS::AtLeastOnce),
            ],
        ),
    );
    assert_eq!(
        h.transmits(),
        [Packet::SubAck(SubAck {
            pkid: 1,
            return_codes: vec![GRANTED_1; 5],
        })]
    );
    assert_eq!(h.session.subscriptions().len(), 5);
}

#[test]
fn unsubscribe_removes_filters() {
    let mut h = Harness::connected("dev1");
    h.packet(
        1,
        subscribe(1, &[(C2D, QoS::AtLeastOnce), (METHODS, QoS::AtMostOnce)]),
    );
    h.transmits();
    h.events();
    h.packet(2, unsubscribe(2, &[C2D, "not/subscribed"]));
    assert_eq!(h.transmits(), [Packet::UnsubAck(UnsubAck { pkid: 2 })]);
    assert_eq!(
        h.events(),
        [SessionEvent::SubscriptionsChanged {
            subscriptions: vec![(filter(METHODS), QoS::AtMostOnce)]
        }]
    );
    h.packet(3, unsubscribe(3, &[C2D]));
    assert_eq!(h.transmits(), [Packet::UnsubAck(UnsubAck { pkid: 3 })]);
    assert!(h.events().is_empty(), "nothing changed");
}

// === hub-to-device publishes ===

#[test]
fn send_publish_needs_a_matching_subscription() {
    let mut h = Harness::connected("dev1");
    let c2d = topic_name(
        "devices/dev1/messages/devicebound/%24.to=%2Fdevices%2Fdev1%2Fmessages%2Fdevicebound",
    );
    assert_eq!(
        h.session
            .send_publish(c2d.clone(), QoS::AtLeastOnce, Bytes::from_static(b"hi")),
        Err(SendPublishError::NotSubscribed)
    );
    h.packet(
        1,
        subscribe(1, &[(C2D, QoS::AtLeastOnce), (METHODS, QoS::AtMostOnce)]),
    );
    h.transmits();
    h.events();

    let pkid = h
        .session
        .send_publish(c2d.clone(), QoS::AtLeastOnce, Bytes::from_static(b"hi"))
        .expect("subscribed");
    let Some(pkid) = pkid else {
        panic!("QoS 1 gets a packet id")
    };
    assert_eq!(
        h.transmits(),
        [Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: c2d,
            pkid: Some(pkid),
            payload: Bytes::from_static(b"hi"),
        })]
    );
    assert_eq!(h.session.outbound_in_flight(), 1);
    h.packet(2, puback(pkid));
    assert_eq!(h.events(), [SessionEvent::Delivered { pkid }]);
    assert_eq!(h.session.outbound_in_flight(), 0);
    h.packet(3, puback(pkid));
    assert!(h.events().is_empty(), "a stray PUBACK is ignored");
    h.assert_open();

    // Methods were subscribed at QoS 0: delivered at QoS 0, no acknowledgement to wait for.
    let method = topic_name("$iothub/methods/POST/reboot/?$rid=1");
    assert_eq!(
        h.session
            .send_publish(method, QoS::AtLeastOnce, Bytes::new()),
        Ok(None)
    );
    assert!(matches!(
        h.transmits()[..],
        [Packet::Publish(Publish {
            qos: QoS::AtMostOnce,
            pkid: None,
            ..
        })]
    ));
}

#[test]
fn send_publish_needs_a_connected_session() {
    let mut h = Harness::new();
    let topic = topic_name("devices/dev1/messages/devicebound/");
    assert_eq!(
        h.session
            .send_publish(topic.clone(), QoS::AtLeastOnce, Bytes::new()),
        Err(SendPublishError::NotConnected)
    );
    h.packet(0, Packet::Connect(connect("dev1")));
    assert_eq!(
        h.session
            .send_publish(topic, QoS::AtLeastOnce, Bytes::new()),
        Err(SendPublishError::NotConnected)
    );
}

// === will and close ===

#[test]
fn will_on_abnormal_close_only() {
    // Keep-alive timeout, violation, server close, storage failure: the will is published.
    let mut h = Harness::connected_with(SessionConfig::default(), with_will("dev1", TELEMETRY));
    h.timeout(90_000);
    assert_eq!(h.expect_closed(), (CloseReason::KeepAliveTimeout, true));

    let mut h = Harness::connected_with(SessionConfig::default(), with_will("dev1", TELEMETRY));
    h.session
        .close(CloseReason::ServerClose("taken over".into()));
    assert_eq!(
        h.expect_closed(),
        (CloseReason::ServerClose("taken over".into()), true)
    );

    // DISCONNECT discards it.
    let mut h = Harness::connected_with(SessionConfig::default(), with_will("dev1", TELEMETRY));
    h.packet(1, Packet::Disconnect);
    assert!(h.transmits().is_empty());
    assert_eq!(h.expect_closed(), (CloseReason::ClientDisconnect, false));

    // No will, nothing to publish.
    let mut h = Harness::connected("dev1");
    h.timeout(90_000);
    assert_eq!(h.expect_closed(), (CloseReason::KeepAliveTimeout, false));

    // Never accepted, never published.
    let mut h = Harness::new();
    h.packet(0, Packet::Connect(with_will("dev1", TELEMETRY)));
    h.events();
    h.session.close(CloseReason::ServerClose("shutdown".into()));
    assert_eq!(
        h.expect_closed(),
        (CloseReason::ServerClose("shutdown".into()), false)
    );
}

#[test]
fn server_close_is_final() {
    let mut h = Harness::connected("dev1");
    h.packet(1, qos1(TELEMETRY, 1));
    let ids = Harness::telemetry_ids(&h.events());
    h.session
        .close(CloseReason::ServerClose("device disabled".into()));
    assert!(h.transmits().is_empty());
    h.expect_closed();
    assert!(!h.session.is_connected());
    assert_eq!(h.session.identity(), Some(("dev1", None)));

    // Nothing gets out any more, and there is only one Closed event.
    h.session.close(CloseReason::ServerClose("again".into()));
    h.packet(2, Packet::PingReq);
    h.durable(3, ids[0]);
    h.timeout(1_000_000);
    h.session
        .handle_decode_error(h.at(4), &DecodeError::InvalidPacketType(0));
    h.accept(5, false, Vec::new());
    assert!(h.transmits().is_empty());
    assert!(h.events().is_empty());
    assert!(h.session.subscriptions().is_empty());
    assert_eq!(
        h.session.send_publish(
            topic_name("devices/dev1/messages/devicebound/"),
            QoS::AtLeastOnce,
            Bytes::new()
        ),
        Err(SendPublishError::NotConnected)
    );
}

#[test]
fn auth_result_outside_authentication_is_ignored() {
    let mut h = Harness::new();
    h.accept(0, true, Vec::new());
    assert!(h.transmits().is_empty());
    assert!(h.events().is_empty());
    assert!(h.session.wants_read());

    let mut h = Harness::connected("dev1");
    h.session.handle_auth_result(
        h.at(1),
        AuthDecision::Refused(ConnectReturnCode::NotAuthorized),
    );
    assert!(h.transmits().is_empty());
    h.assert_open();
}

#[test]
fn close_reasons_read_well() {
    assert_eq!(
        CloseReason::Refused {
            code: ConnectReturnCode::NotAuthorized,
            detail: "refused by the server".into()
        }
        .to_string(),
        "connection refused (5): refused by the server"
    );
    assert_eq!(
        CloseReason::KeepAliveTimeout.to_string(),
        "keep-alive timeout"
    );
}

#[test]
fn long_topics_are_cut_in_close_reasons() {
    let mut h = Harness::connected("dev1");
    let topic = format!("devices/dev2/messages/events/{}", "a".repeat(60_000));
    h.packet(1, qos1(&topic, 1));
    let (reason, _) = h.expect_closed();
    assert!(
        reason.to_string().len() < 300,
        "{}",
        reason.to_string().len()
    );
}
