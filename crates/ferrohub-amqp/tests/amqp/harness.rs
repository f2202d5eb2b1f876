//! A client's side of the wire for driving a `Connection` with byte-level scripts: frames
//! encoded as a client would send them, the hub's output decoded back, a fake clock.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ferrohub_amqp::connection::{AttachReply, Connection, ConnectionConfig, Event, LinkId};
use ferrohub_amqp::frame::{AMQP_HEADER, Frame, FrameType};
use ferrohub_amqp::performative::{
    Attach, Begin, Fields, Flow, Open, Performative, Role, SaslFrame, SenderSettleMode, Source,
    Target, Transfer,
};

/// Something the hub wrote.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Out {
    Header([u8; 8]),
    Sasl(SaslFrame),
    Amqp {
        channel: u16,
        performative: Performative,
        payload: Bytes,
        /// The frame's encoded body (performative and payload), for byte-level checks.
        body: Bytes,
    },
    Heartbeat,
}

impl Out {
    pub(crate) fn performative(&self) -> &Performative {
        match self {
            Out::Amqp { performative, .. } => performative,
            other => panic!("not an AMQP frame: {other:?}"),
        }
    }
}

pub(crate) struct Harness {
    pub(crate) conn: Connection,
    base: Instant,
    rx: BytesMut,
}

impl Harness {
    pub(crate) fn new(config: ConnectionConfig) -> Self {
        let base = Instant::now();
        Self {
            conn: Connection::new(base, config),
            base,
            rx: BytesMut::new(),
        }
    }

    pub(crate) fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    /// Bytes from the client at `ms`.
    pub(crate) fn input(&mut self, ms: u64, bytes: &[u8]) {
        self.rx.extend_from_slice(bytes);
        let now = self.at(ms);
        self.conn.handle_input(now, &mut self.rx);
    }

    /// Hands the leftover input over again (after backpressure ends).
    pub(crate) fn resume(&mut self, ms: u64) {
        let now = self.at(ms);
        self.conn.handle_input(now, &mut self.rx);
    }

    pub(crate) fn pending_input(&self) -> usize {
        self.rx.len()
    }

    pub(crate) fn timeout(&mut self, ms: u64) {
        let now = self.at(ms);
        self.conn.handle_timeout(now);
    }

    /// The deadline as ms after the start.
    pub(crate) fn deadline(&self) -> Option<u64> {
        self.conn
            .poll_timeout()
            .map(|d| d.duration_since(self.base).as_millis() as u64)
    }

    pub(crate) fn raw_output(&mut self) -> Vec<u8> {
        let mut buf = BytesMut::new();
        self.conn.poll_transmit(&mut buf);
        buf.to_vec()
    }

    /// Everything the hub wrote since the last call, decoded.
    pub(crate) fn output(&mut self) -> Vec<Out> {
        decode_output(&self.raw_output())
    }

    pub(crate) fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    /// The one event expected now.
    pub(crate) fn event(&mut self) -> Event {
        let events = self.events();
        assert_eq!(events.len(), 1, "{events:#?}");
        events.into_iter().next().expect("one event")
    }
}

/// Splits the hub's bytes into headers and frames.
pub(crate) fn decode_output(bytes: &[u8]) -> Vec<Out> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while !buf.is_empty() {
        if buf.starts_with(b"AMQP") {
            let header = buf.split_to(8);
            out.push(Out::Header(header[..].try_into().expect("8 bytes")));
            continue;
        }
        let frame = Frame::decode(&mut buf, u32::MAX)
            .expect("the hub writes valid frames")
            .expect("the hub writes whole frames");
        out.push(match frame.frame_type {
            FrameType::Sasl => Out::Sasl(SaslFrame::decode(frame.body).expect("valid SASL")),
            FrameType::Amqp if frame.body.is_empty() => Out::Heartbeat,
            FrameType::Amqp => {
                let body = frame.body.clone();
                let (performative, payload) =
                    Performative::decode(frame.body).expect("valid performative");
                Out::Amqp {
                    channel: frame.channel,
                    performative,
                    payload,
                    body,
                }
            }
        });
    }
    out
}

pub(crate) fn frame(channel: u16, p: Performative) -> Vec<u8> {
    frame_with(channel, p, b"")
}

pub(crate) fn frame_with(channel: u16, p: Performative, payload: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    p.encode_frame(channel, payload, &mut buf)
        .expect("encodable");
    buf.to_vec()
}

pub(crate) fn sasl(f: SaslFrame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    f.encode_frame(&mut buf).expect("encodable");
    buf.to_vec()
}

pub(crate) fn open(container_id: &str) -> Performative {
    Performative::Open(Open {
        container_id: container_id.into(),
        hostname: Some("hub.example".into()),
        max_frame_size: 1_048_576,
        channel_max: 65535,
        idle_time_out: None,
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    })
}

pub(crate) fn begin() -> Performative {
    Performative::Begin(Begin {
        remote_channel: None,
        next_outgoing_id: 1,
        incoming_window: 5000,
        outgoing_window: 5000,
        handle_max: 255,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    })
}

/// An ATTACH as a client sends it: `role` is the client's.
pub(crate) fn attach(
    name: &str,
    handle: u32,
    role: Role,
    source: &str,
    target: &str,
) -> Performative {
    let mut a = Attach::new(
        name,
        handle,
        role,
        Source::address(source),
        Target::address(target),
    );
    a.snd_settle_mode = SenderSettleMode::Unsettled;
    a.properties = Some(Fields::new());
    Performative::Attach(Box::new(a))
}

/// A client receiver's FLOW granting `credit`.
pub(crate) fn credit(handle: u32, delivery_count: u32, credit: u32) -> Performative {
    Performative::Flow(Flow {
        next_incoming_id: Some(0),
        incoming_window: 5000,
        next_outgoing_id: 1,
        outgoing_window: 5000,
        handle: Some(handle),
        delivery_count: Some(delivery_count),
        link_credit: Some(credit),
        ..Flow::default()
    })
}

/// A client's single-frame TRANSFER.
pub(crate) fn transfer(handle: u32, delivery_id: u32, settled: bool) -> Performative {
    Performative::Transfer(Transfer {
        handle,
        delivery_id: Some(delivery_id),
        delivery_tag: Some(Bytes::copy_from_slice(&delivery_id.to_be_bytes())),
        message_format: Some(0),
        settled: Some(settled),
        ..Transfer::default()
    })
}

/// A harness whose client skipped SASL and has an open connection with one session on
/// channel 0, queues drained.
pub(crate) fn opened(config: ConnectionConfig) -> Harness {
    let mut h = Harness::new(config);
    let mut bytes = AMQP_HEADER.to_vec();
    bytes.extend(frame(0, open("client")));
    bytes.extend(frame(0, begin()));
    h.input(0, &bytes);
    let out = h.output();
    assert_eq!(out.len(), 3, "{out:#?}");
    assert!(matches!(h.event(), Event::Opened { .. }));
    h
}

/// Attaches a link and accepts it with `reply`; returns its id. Output and events drained.
pub(crate) fn attached(h: &mut Harness, p: Performative, reply: AttachReply) -> LinkId {
    h.input(0, &frame(0, p));
    let Event::Attach { link, .. } = h.event() else {
        panic!("no attach event");
    };
    h.conn.accept_attach(link, reply);
    let _ = h.output();
    let _ = h.events();
    link
}
