//! Drives an AMQP connection the way the server's driver does, with arbitrary input: bytes
//! from the client in arbitrary chunks (read only while the engine wants them), interleaved
//! with clock steps and timeouts, SASL outcomes, ATTACH answers, settlements, sends, credit,
//! detaches, session ends and closes. Canned well-formed frames can be spliced into the
//! stream so the fuzzer reaches the open phase and the link machinery quickly.
//!
//! Checked on every step: nothing panics; everything the engine writes is protocol headers
//! and frames that decode; `Closed` is emitted exactly once and is the last event; once
//! closed, the engine reads nothing, has no timer and writes nothing more.
#![no_main]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ferrohub_amqp::connection::{
    AttachReply, Connection, ConnectionConfig, DeliveryId, Event, LinkId, SessionId,
};
use ferrohub_amqp::frame::{AMQP_HEADER, Frame, FrameType, SASL_HEADER};
use ferrohub_amqp::performative::{
    AmqpError, Attach, Begin, Close, DeliveryState, Detach, Disposition, End, Fields, Flow, Open,
    Performative, ReceiverSettleMode, Role, SaslFrame, SaslInit, SaslOutcome, SenderSettleMode,
    Source, Target, Transfer,
};
use ferrohub_amqp::types::Symbol;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    Driver::new().run(data);
});

struct Driver {
    conn: Connection,
    now: Instant,
    rx: BytesMut,
    pending: Vec<LinkId>,
    links: Vec<LinkId>,
    sessions: Vec<SessionId>,
    deliveries: Vec<(LinkId, DeliveryId)>,
    closed: bool,
}

impl Driver {
    fn new() -> Self {
        let now = Instant::now();
        let config = ConnectionConfig {
            max_frame_size: 4096,
            channel_max: 7,
            max_sessions: 4,
            max_links_per_session: 8,
            idle_timeout: Some(Duration::from_secs(10)),
            handshake_timeout: Duration::from_secs(5),
            max_message_size: 16 * 1024,
            session_window: 8,
            credit_window: 4,
            max_unsettled_incoming: 6,
            max_pending_attaches: 3,
            max_reassembly_bytes: 32 * 1024,
            max_unsettled_outgoing: 8,
            ..ConnectionConfig::default()
        };
        Self {
            conn: Connection::new(now, config),
            now,
            rx: BytesMut::new(),
            pending: Vec::new(),
            links: Vec::new(),
            sessions: Vec::new(),
            deliveries: Vec::new(),
            closed: false,
        }
    }

    fn run(&mut self, data: &[u8]) {
        let mut input = data.iter().copied();
        while let Some(op) = input.next() {
            let arg = input.next().unwrap_or(0);
            match op % 12 {
                0..=2 => {
                    self.rx.extend(input.by_ref().take(usize::from(arg)));
                    self.read();
                }
                3 => {
                    self.now += Duration::from_millis(u64::from(arg) * 100);
                    self.conn.handle_timeout(self.now);
                }
                4 => self.conn.sasl_outcome(if arg % 4 == 0 {
                    SaslOutcome::auth_failed()
                } else {
                    SaslOutcome::ok()
                }),
                5 => {
                    if let Some(link) = pick(&mut self.pending, arg, true) {
                        if arg % 5 == 0 {
                            self.conn.refuse_attach(
                                link,
                                AmqpError::new(Symbol::from_static("amqp:not-found"), "fuzz"),
                            );
                        } else {
                            self.conn.accept_attach(link, reply(arg));
                            self.links.push(link);
                        }
                    }
                }
                6 => {
                    if let Some((link, id)) = pick(&mut self.deliveries, arg, true) {
                        self.conn.settle(link, id, state(arg));
                    }
                }
                7 => {
                    if let Some(link) = pick(&mut self.links, arg, false) {
                        let payload = Bytes::from(vec![arg; usize::from(arg) * 40]);
                        let tag = Bytes::from(vec![0; usize::from(arg % 40)]);
                        let _ = self.conn.send(link, tag, arg & 1 == 0, 0, payload);
                        let _ = self.conn.credit(link);
                    }
                }
                8 => {
                    if let Some(link) = pick(&mut self.links, arg, false) {
                        match arg % 4 {
                            0 => self.conn.grant_credit(link, u32::from(arg)),
                            1 => self.conn.drain(link),
                            2 => self.conn.detach(link, None),
                            _ => self.conn.end_session(link.session(), None),
                        }
                    } else if let Some(session) = pick(&mut self.sessions, arg, false) {
                        self.conn.end_session(session, None);
                    }
                }
                9 => {
                    if arg == 0 {
                        self.conn.close(None);
                    }
                }
                _ => {
                    self.rx
                        .extend_from_slice(&canned(arg, input.next().unwrap_or(0)));
                    self.read();
                }
            }
            self.drain();
        }
    }

    /// Hands over input while the engine wants it, as the driver does.
    fn read(&mut self) {
        if self.conn.wants_read() {
            self.conn.handle_input(self.now, &mut self.rx);
        }
        self.drain();
    }

    fn drain(&mut self) {
        let mut out = BytesMut::new();
        self.conn.poll_transmit(&mut out);
        if self.closed {
            assert!(out.is_empty(), "wrote {} bytes after the close", out.len());
        }
        check_output(out);
        while let Some(event) = self.conn.poll_event() {
            assert!(!self.closed, "event {event:?} after Closed");
            match event {
                Event::Attach { link, .. } => {
                    self.pending.push(link);
                    self.sessions.push(link.session());
                }
                Event::Delivery {
                    link, delivery_id, ..
                } => self.deliveries.push((link, delivery_id)),
                Event::Closed { .. } => self.closed = true,
                _ => {}
            }
        }
        assert_eq!(self.closed, self.conn.is_closed());
        if self.closed {
            assert!(!self.conn.wants_read());
            assert_eq!(self.conn.poll_timeout(), None);
        }
        // Keep the driver's own lists small.
        for list in [&mut self.links, &mut self.pending] {
            if list.len() > 16 {
                list.drain(..8);
            }
        }
        if self.deliveries.len() > 16 {
            self.deliveries.drain(..8);
        }
    }
}

/// Takes (or, without `remove`, copies) an element chosen by `arg`.
fn pick<T: Copy>(list: &mut Vec<T>, arg: u8, remove: bool) -> Option<T> {
    if list.is_empty() {
        return None;
    }
    let i = usize::from(arg) % list.len();
    Some(if remove { list.remove(i) } else { list[i] })
}

/// Every byte the engine writes is a protocol header or a frame that decodes.
fn check_output(mut out: BytesMut) {
    while !out.is_empty() {
        if out.starts_with(b"AMQP") {
            assert!(out.len() >= 8);
            let _ = out.split_to(8);
            continue;
        }
        let frame = Frame::decode(&mut out, u32::MAX)
            .expect("the engine writes valid frame headers")
            .expect("the engine writes whole frames");
        match frame.frame_type {
            FrameType::Amqp if frame.body.is_empty() => {}
            FrameType::Amqp => {
                Performative::decode(frame.body).expect("the engine writes valid performatives");
            }
            FrameType::Sasl => {
                SaslFrame::decode(frame.body).expect("the engine writes valid SASL frames");
            }
        }
    }
}

fn reply(arg: u8) -> AttachReply {
    AttachReply {
        snd_settle_mode: match arg % 4 {
            0 => None,
            1 => Some(SenderSettleMode::Settled),
            2 => Some(SenderSettleMode::Unsettled),
            _ => Some(SenderSettleMode::Mixed),
        },
        max_message_size: (arg & 0x10 != 0).then_some(u64::from(arg) * 64),
        credit_window: (arg & 0x20 != 0).then_some(u32::from(arg % 3)),
        ..AttachReply::default()
    }
}

fn state(arg: u8) -> DeliveryState {
    match arg % 4 {
        0 => DeliveryState::Accepted,
        1 => DeliveryState::Released,
        2 => DeliveryState::Rejected {
            error: Some(AmqpError::new(
                Symbol::from_static("amqp:not-found"),
                "x".repeat(usize::from(arg) * 8),
            )),
        },
        _ => DeliveryState::Modified {
            delivery_failed: Some(true),
            undeliverable_here: None,
            message_annotations: None,
        },
    }
}

/// A well-formed header or frame a client might send, chosen by `arg`; `b` varies its fields.
fn canned(arg: u8, b: u8) -> Vec<u8> {
    let handle = u32::from(b % 4);
    let channel = u16::from(b / 64);
    let p = match arg % 16 {
        0 => return AMQP_HEADER.to_vec(),
        1 => return SASL_HEADER.to_vec(),
        2 => {
            let mut buf = BytesMut::new();
            let init = SaslFrame::Init(SaslInit {
                mechanism: Symbol::from_static(if b & 1 == 0 { "ANONYMOUS" } else { "MSSBCBS" }),
                initial_response: None,
                hostname: None,
            });
            let _ = init.encode_frame(&mut buf);
            return buf.to_vec();
        }
        3 => Performative::Open(Open {
            container_id: "fuzz".into(),
            hostname: None,
            max_frame_size: 512 + u32::from(b) * 8,
            channel_max: u16::from(b % 8),
            idle_time_out: (b & 1 != 0).then_some(u32::from(b) * 50),
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }),
        4 => Performative::Begin(Begin {
            remote_channel: None,
            next_outgoing_id: 0,
            incoming_window: u32::from(b % 4),
            outgoing_window: 100,
            handle_max: u32::from(b % 8),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }),
        5 | 6 => Performative::Attach(Box::new(Attach {
            name: format!("link{b}"),
            handle,
            role: if arg % 16 == 5 {
                Role::Sender
            } else {
                Role::Receiver
            },
            snd_settle_mode: SenderSettleMode::Mixed,
            rcv_settle_mode: if b & 8 != 0 {
                ReceiverSettleMode::Second
            } else {
                ReceiverSettleMode::First
            },
            source: (b & 16 != 0).then(|| Source::address("$cbs")),
            target: Some(Target::address("/messages/devicebound")),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: Some(0),
            max_message_size: (b & 32 != 0).then_some(1024),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: Some(Fields::new()),
        })),
        7 => Performative::Flow(Flow {
            next_incoming_id: Some(0),
            incoming_window: u32::from(b % 16),
            next_outgoing_id: 0,
            outgoing_window: 100,
            handle: (b & 4 != 0).then_some(handle),
            delivery_count: Some(0),
            link_credit: Some(u32::from(b)),
            available: None,
            drain: b & 8 != 0,
            echo: b & 16 != 0,
            properties: None,
        }),
        8 | 9 => Performative::Transfer(Transfer {
            handle,
            delivery_id: (b & 4 != 0).then_some(u32::from(b / 8)),
            delivery_tag: Some(Bytes::from_static(b"tag")),
            message_format: Some(0),
            settled: Some(b & 8 != 0),
            more: arg % 16 == 9,
            aborted: b & 128 != 0,
            ..Transfer::default()
        }),
        10 => Performative::Disposition(Disposition {
            role: if b & 1 == 0 {
                Role::Receiver
            } else {
                Role::Sender
            },
            first: u32::from(b / 4),
            last: (b & 2 != 0).then_some(u32::from(b)),
            settled: b & 64 != 0,
            state: Some(DeliveryState::Accepted),
            batchable: false,
        }),
        11 => Performative::Detach(Detach {
            handle,
            closed: b & 8 != 0,
            error: None,
        }),
        12 => Performative::End(End::default()),
        13 => Performative::Close(Close::default()),
        14 => return vec![0, 0, 0, 8, 2, 0, 0, 0],
        _ => {
            // A transfer with a payload large enough to need reassembly limits.
            let mut buf = BytesMut::new();
            let t = Performative::Transfer(Transfer {
                handle,
                delivery_id: Some(u32::from(b)),
                delivery_tag: Some(Bytes::from_static(b"t")),
                more: b & 1 != 0,
                ..Transfer::default()
            });
            let _ = t.encode_frame(channel, &vec![b; usize::from(b) * 12], &mut buf);
            return buf.to_vec();
        }
    };
    let mut buf = BytesMut::new();
    let _ = p.encode_frame(channel, b"payload", &mut buf);
    buf.to_vec()
}
