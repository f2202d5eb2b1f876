//! Drives an MQTT session the way the server's driver does, with arbitrary input: bytes from the
//! client (decoded while the session wants to read), interleaved with clock steps and timeouts,
//! auth results (accepting any identity, sometimes refusing), durability reports, server closes
//! and hub-to-device publishes. Canned well-formed packets can be spliced into the stream so the
//! fuzzer reaches the connected phase quickly.
//!
//! Checked on every step: nothing panics; every packet the session sends encodes; `Closed` is
//! emitted exactly once and is the last event; once closed, nothing but a CONNACK is sent and
//! nothing more is read.
#![no_main]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ferrohub_mqtt::codec::{
    Connect, ConnectReturnCode, LastWill, Packet, PubAck, Publish, QoS, Subscribe, Unsubscribe,
    decode, encode,
};
use ferrohub_mqtt::session::{
    AuthDecision, CloseReason, Session, SessionConfig, SessionEvent, TelemetryId,
};
use ferrohub_mqtt::topic::{TopicFilter, TopicName};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    Driver::new().run(data);
});

/// The subset of a server driver the session needs, plus the invariants.
struct Driver {
    session: Session,
    now: Instant,
    rx: BytesMut,
    telemetry: Vec<TelemetryId>,
    last_sent_pkid: Option<u16>,
    closed: bool,
}

impl Driver {
    fn new() -> Self {
        let now = Instant::now();
        let config = SessionConfig {
            max_packet_size: 4096,
            max_keep_alive: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_inflight_telemetry: 4,
            max_subscriptions: 3,
        };
        Self {
            session: Session::new(now, config),
            now,
            rx: BytesMut::new(),
            telemetry: Vec::new(),
            last_sent_pkid: None,
            closed: false,
        }
    }

    fn run(&mut self, data: &[u8]) {
        let mut input = data.iter().copied();
        while let Some(op) = input.next() {
            let arg = input.next().unwrap_or(0);
            match op % 10 {
                0..=2 => {
                    self.rx.extend(input.by_ref().take(usize::from(arg)));
                    self.read();
                }
                3 => {
                    self.now += Duration::from_millis(u64::from(arg) * 250);
                    self.session.handle_timeout(self.now);
                }
                4 => {
                    let decision = if arg % 8 == 0 {
                        AuthDecision::Refused(
                            ConnectReturnCode::from_u8(arg / 8 % 6)
                                .unwrap_or(ConnectReturnCode::NotAuthorized),
                        )
                    } else {
                        AuthDecision::Accepted {
                            session_present: arg & 1 != 0,
                            subscriptions: restored(arg),
                        }
                    };
                    self.session.handle_auth_result(self.now, decision);
                }
                5 | 6 => {
                    let index = usize::from(arg) % self.telemetry.len().max(1);
                    match self.telemetry.get(index) {
                        Some(&id) if op % 10 == 5 => {
                            self.session.handle_telemetry_durable(self.now, id);
                        }
                        // Failures are rare, so that durable acknowledgements get exercised.
                        Some(&id) if arg % 16 == 0 => self.session.handle_telemetry_failed(id),
                        _ => {}
                    }
                }
                7 => {
                    if arg == 0 {
                        self.session
                            .close(CloseReason::ServerClose("fuzz".to_owned()));
                    } else if let Ok(Some(pkid)) = self.session.send_publish(
                        topic(arg),
                        QoS::from_u8(arg % 3).unwrap_or(QoS::AtLeastOnce),
                        Bytes::from_static(b"payload"),
                    ) {
                        self.last_sent_pkid = Some(pkid);
                    }
                }
                _ => {
                    let packet = self.canned(arg);
                    let mut buf = BytesMut::new();
                    if encode(&packet, &mut buf).is_ok() {
                        self.rx.extend_from_slice(&buf);
                    }
                    self.read();
                }
            }
            self.drain();
        }
    }

    /// Decodes and hands over packets while the session wants them, as the driver does.
    fn read(&mut self) {
        while self.session.wants_read() {
            let limit = self.session.config().max_packet_size;
            match decode(&mut self.rx, limit) {
                Ok(Some(packet)) => self.session.handle_packet(self.now, packet),
                Ok(None) => break,
                Err(e) => {
                    self.session.handle_decode_error(self.now, &e);
                    self.rx.clear();
                    break;
                }
            }
        }
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(packet) = self.session.poll_transmit() {
            if self.session.is_closed() {
                assert!(
                    matches!(packet, Packet::ConnAck(_)),
                    "sent {packet:?} after the close"
                );
            }
            let mut buf = BytesMut::new();
            encode(&packet, &mut buf).expect("the session sends only encodable packets");
        }
        while let Some(event) = self.session.poll_event() {
            assert!(!self.closed, "event {event:?} after Closed");
            match event {
                SessionEvent::Telemetry { id, .. } => self.telemetry.push(id),
                SessionEvent::Closed { .. } => self.closed = true,
                _ => {}
            }
        }
        assert_eq!(self.closed, self.session.is_closed());
        if self.closed {
            assert!(!self.session.wants_read());
            assert_eq!(self.session.poll_timeout(), None);
        }
    }

    /// A well-formed packet a real client might send.
    fn canned(&self, arg: u8) -> Packet {
        let telemetry = |s: &str| TopicName::new(s).ok();
        match arg % 8 {
            0 | 1 => Packet::Connect(Connect {
                clean_session: arg & 0x10 != 0,
                keep_alive: u16::from(arg / 16),
                client_id: if arg & 1 == 0 { "dev1" } else { "dev1/mod1" }.to_owned(),
                username: (arg & 0x20 != 0).then(|| "hub/dev1/?api-version=2021-04-12".to_owned()),
                password: Some(Bytes::from_static(b"sas")),
                will: (arg & 0x40 != 0)
                    .then(|| telemetry("devices/dev1/messages/events/"))
                    .flatten()
                    .map(|topic| LastWill {
                        topic,
                        message: Bytes::from_static(b"bye"),
                        qos: QoS::AtLeastOnce,
                        retain: false,
                    }),
            }),
            2 | 3 => {
                let qos = QoS::from_u8(arg / 8 % 3).unwrap_or(QoS::AtLeastOnce);
                let topic = if arg & 0x40 == 0 {
                    "devices/dev1/messages/events/%24.mid=1&a=b"
                } else {
                    "devices/dev1/modules/mod1/messages/events/"
                };
                match telemetry(topic) {
                    Some(topic) => Packet::Publish(Publish {
                        dup: false,
                        qos,
                        retain: arg & 0x80 != 0,
                        topic,
                        pkid: (qos != QoS::AtMostOnce).then_some(u16::from(arg % 4) + 1),
                        payload: Bytes::from_static(b"{}"),
                    }),
                    None => Packet::PingReq,
                }
            }
            4 => Packet::Subscribe(Subscribe {
                pkid: u16::from(arg) + 1,
                filters: restored(arg),
            }),
            5 => Packet::Unsubscribe(Unsubscribe {
                pkid: u16::from(arg) + 1,
                filters: restored(arg).into_iter().map(|(f, _)| f).collect(),
            }),
            6 => Packet::PubAck(PubAck {
                pkid: self.last_sent_pkid.unwrap_or(1),
            }),
            _ => Packet::PingReq,
        }
    }
}

/// A few subscription filters chosen by `arg`, supported or not, at various QoS.
fn restored(arg: u8) -> Vec<(TopicFilter, QoS)> {
    const FILTERS: [&str; 6] = [
        "devices/dev1/messages/devicebound/#",
        "$iothub/methods/POST/#",
        "$iothub/twin/res/#",
        "$iothub/twin/PATCH/properties/desired/#",
        "devices/dev1/modules/mod1/#",
        "devices/dev2/messages/devicebound/#",
    ];
    FILTERS
        .iter()
        .enumerate()
        .filter(|(i, _)| arg >> i & 1 != 0)
        .filter_map(|(i, f)| {
            let qos = QoS::from_u8(((i + usize::from(arg)) % 3) as u8)?;
            Some((TopicFilter::new(*f).ok()?, qos))
        })
        .collect()
}

/// A hub-to-device topic chosen by `arg`.
fn topic(arg: u8) -> TopicName {
    let s = match arg % 4 {
        0 => "devices/dev1/messages/devicebound/%24.to=%2Fdevices%2Fdev1%2Fmessages%2Fdevicebound",
        1 => "$iothub/methods/POST/reboot/?$rid=1",
        2 => "$iothub/twin/res/200/?$rid=1",
        _ => "devices/dev1/modules/mod1/inputs/in1/",
    };
    TopicName::new(s).expect("a valid topic")
}
