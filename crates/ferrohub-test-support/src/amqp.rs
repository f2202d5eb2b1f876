//! A raw AMQP 1.0 test client over TLS, built on Ferrohub's own codec (`ferrohub-amqp`), for
//! asserting exactly what the hub sends: SASL outcomes, `$cbs` replies with their AMQP types,
//! dispositions, detaches and closes. One session on channel 0; the client's links are numbered
//! from handle 0.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferrohub_amqp::frame::{AMQP_HEADER, Frame, FrameType, SASL_HEADER};
use ferrohub_amqp::message::{ApplicationProperties, Body, Message, MessageId, Properties};
use ferrohub_amqp::performative::{
    AmqpError, Attach, Begin, DeliveryState, Disposition, Flow, Open, Performative,
    ReceiverSettleMode, Role, SaslCode, SaslFrame, SaslInit, SenderSettleMode, Source, Target,
    Transfer,
};
use ferrohub_amqp::types::Value;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::mqtt::Stream;

/// How long the client waits for any one thing the hub should send.
const RECV_LIMIT: Duration = Duration::from_secs(10);

/// Something the hub wrote.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A protocol header.
    Header([u8; 8]),
    /// A SASL frame.
    Sasl(SaslFrame),
    /// An AMQP frame: its performative and payload.
    Frame(Performative, Bytes),
    /// An empty frame.
    Heartbeat,
}

/// The answer to an ATTACH.
#[derive(Debug)]
pub enum AttachOutcome {
    /// The hub attached the link; its ATTACH.
    Attached(Box<Attach>),
    /// The hub refused it (an ATTACH with no terminus, then a DETACH): the DETACH's error.
    Refused(Option<AmqpError>),
}

/// A raw AMQP client on one TLS connection.
pub struct AmqpClient {
    stream: Box<dyn Stream>,
    rx: BytesMut,
    /// Frames read but not yet asked for.
    pending: VecDeque<Received>,
    /// Whether the connection ended (EOF or a read error).
    pub eof: bool,
    next_handle: u32,
    next_delivery: u32,
    next_request: u64,
    /// The hub's handle for each of the client's.
    remote_handles: HashMap<u32, u32>,
    /// Per client receiver handle: the hub's initial delivery count and transfers received.
    received: HashMap<u32, u32>,
    remote_next_outgoing: u32,
    transfers_in: u32,
    /// The `$cbs` links (sender, receiver), attached on the first put-token.
    cbs: Option<(u32, u32)>,
    /// The hub's max-frame-size, from its OPEN.
    max_frame_size: u32,
}

/// A TLS connector trusting `ca_pem`.
fn connector(ca_pem: &[u8]) -> tokio_rustls::TlsConnector {
    crate::tls_connector(ca_pem, &[])
}

impl AmqpClient {
    /// Opens a TLS connection to `addr` trusting `ca_pem`; nothing AMQP is sent yet.
    pub async fn connect(addr: SocketAddr, ca_pem: &[u8]) -> AmqpClient {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = connector(ca_pem).connect(name, tcp).await.unwrap();
        AmqpClient {
            stream: Box::new(tls),
            rx: BytesMut::new(),
            pending: VecDeque::new(),
            eof: false,
            next_handle: 0,
            next_delivery: 0,
            next_request: 0,
            remote_handles: HashMap::new(),
            received: HashMap::new(),
            remote_next_outgoing: 0,
            transfers_in: 0,
            cbs: None,
            max_frame_size: 512,
        }
    }

    /// Writes `bytes` as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        // The hub may already have closed: a failed write shows up as EOF on the next read.
        let _ = self.stream.write_all(bytes).await;
        let _ = self.stream.flush().await;
    }

    /// Writes a performative (and its payload) on channel 0.
    pub async fn send(&mut self, p: Performative, payload: &[u8]) {
        let mut buf = BytesMut::new();
        p.encode_frame(0, payload, &mut buf).unwrap();
        self.send_raw(&buf).await;
    }

    /// Writes a SASL frame.
    pub async fn send_sasl(&mut self, f: SaslFrame) {
        let mut buf = BytesMut::new();
        f.encode_frame(&mut buf).unwrap();
        self.send_raw(&buf).await;
    }

    /// Decodes one item from the buffer, if a whole one is there.
    fn decode_one(&mut self) -> Option<Received> {
        if self.rx.starts_with(b"AMQP") && self.rx.len() >= 8 {
            let header = self.rx.split_to(8);
            return Some(Received::Header(header[..].try_into().unwrap()));
        }
        let frame = Frame::decode(&mut self.rx, u32::MAX).unwrap()?;
        Some(match frame.frame_type {
            FrameType::Sasl => Received::Sasl(SaslFrame::decode(frame.body).unwrap()),
            FrameType::Amqp if frame.body.is_empty() => Received::Heartbeat,
            FrameType::Amqp => {
                let (p, payload) = Performative::decode(frame.body).unwrap();
                if let Performative::Transfer(_) = &p {
                    self.transfers_in += 1;
                }
                Received::Frame(p, payload)
            }
        })
    }

    /// The next thing the hub writes, or `None` when the connection ends or nothing comes
    /// within `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Received> {
        if let Some(r) = self.pending.pop_front() {
            return Some(r);
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(r) = self.decode_one() {
                return Some(r);
            }
            if self.eof {
                return None;
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0) | Err(_)) => self.eof = true,
                Ok(Ok(n)) => self.rx.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next performative (heartbeats skipped), or `None` at the end of the connection.
    pub async fn recv_frame(&mut self) -> Option<(Performative, Bytes)> {
        loop {
            match self.recv_within(RECV_LIMIT).await? {
                Received::Frame(p, payload) => return Some((p, payload)),
                Received::Heartbeat => {}
                other => panic!("expected an AMQP frame, got {other:?}"),
            }
        }
    }

    /// Waits for the first performative `pick` takes, keeping the others for later.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Performative, &Bytes) -> Option<T>,
    ) -> T {
        let mut skipped = Vec::new();
        let found = loop {
            let Some(r) = self.recv_within(RECV_LIMIT).await else {
                panic!("no {what} (connection ended or timed out); skipped {skipped:#?}");
            };
            if let Received::Frame(p, payload) = &r
                && let Some(t) = pick(p, payload)
            {
                break t;
            }
            if !matches!(r, Received::Heartbeat) {
                skipped.push(r);
            }
        };
        for r in skipped.into_iter().rev() {
            self.pending.push_front(r);
        }
        found
    }

    /// Whether the hub closes the connection (CLOSE or EOF) within `limit`; returns the
    /// CLOSE's error if it sent one.
    pub async fn closed_within(&mut self, limit: Duration) -> Option<Option<AmqpError>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(left).await {
                Some(Received::Frame(Performative::Close(c), _)) => return Some(c.error),
                Some(_) => {}
                None if self.eof => return Some(None),
                None => return None,
            }
        }
    }

    /// The SASL exchange: `AMQP 3 1 0 0`, the hub's mechanisms, `mechanism` with
    /// `initial_response`; returns the mechanisms offered and the outcome's code.
    pub async fn sasl(
        &mut self,
        mechanism: &str,
        initial_response: Option<&[u8]>,
    ) -> (Vec<String>, SaslCode) {
        self.send_raw(&SASL_HEADER).await;
        assert_eq!(
            self.recv_within(RECV_LIMIT).await,
            Some(Received::Header(SASL_HEADER))
        );
        let Some(Received::Sasl(SaslFrame::Mechanisms(m))) = self.recv_within(RECV_LIMIT).await
        else {
            panic!("no sasl-mechanisms");
        };
        let offered = m.mechanisms.iter().map(|s| s.as_str().to_owned()).collect();
        self.send_sasl(SaslFrame::Init(SaslInit {
            mechanism: mechanism.to_owned().into(),
            initial_response: initial_response.map(Bytes::copy_from_slice),
            hostname: Some("localhost".into()),
        }))
        .await;
        let Some(Received::Sasl(SaslFrame::Outcome(o))) = self.recv_within(RECV_LIMIT).await else {
            panic!("no sasl-outcome");
        };
        (offered, o.code)
    }

    /// `AMQP 0 1 0 0`, OPEN and BEGIN; waits for the hub's header, OPEN and BEGIN.
    pub async fn open(&mut self) -> Open {
        self.send_raw(&AMQP_HEADER).await;
        self.send(
            Performative::Open(Open {
                container_id: "ferrohub-test".into(),
                hostname: Some("localhost".into()),
                max_frame_size: 1_048_576,
                channel_max: 16,
                idle_time_out: None,
                outgoing_locales: None,
                incoming_locales: None,
                offered_capabilities: None,
                desired_capabilities: None,
                properties: None,
            }),
            b"",
        )
        .await;
        self.send(
            Performative::Begin(Begin {
                remote_channel: None,
                next_outgoing_id: 0,
                incoming_window: 5000,
                outgoing_window: 5000,
                handle_max: 255,
                offered_capabilities: None,
                desired_capabilities: None,
                properties: None,
            }),
            b"",
        )
        .await;
        assert_eq!(
            self.recv_within(RECV_LIMIT).await,
            Some(Received::Header(AMQP_HEADER))
        );
        let Some((Performative::Open(open), _)) = self.recv_frame().await else {
            panic!("no OPEN");
        };
        let Some((Performative::Begin(begin), _)) = self.recv_frame().await else {
            panic!("no BEGIN");
        };
        self.remote_next_outgoing = begin.next_outgoing_id;
        self.max_frame_size = open.max_frame_size;
        open
    }

    /// Attaches a link where the client has `role`; waits for the hub's answer.
    pub async fn attach(&mut self, role: Role, name: &str, address: &str) -> (u32, AttachOutcome) {
        let handle = self.next_handle;
        self.next_handle += 1;
        let (source, target) = match role {
            Role::Sender => (Source::address(name), Target::address(address)),
            Role::Receiver => (Source::address(address), Target::address(name)),
        };
        self.send(
            Performative::Attach(Box::new(Attach {
                name: name.into(),
                handle,
                role,
                snd_settle_mode: SenderSettleMode::Unsettled,
                rcv_settle_mode: ReceiverSettleMode::First,
                source: Some(source),
                target: Some(target),
                unsettled: None,
                incomplete_unsettled: false,
                initial_delivery_count: (role == Role::Sender).then_some(0),
                max_message_size: None,
                offered_capabilities: None,
                desired_capabilities: None,
                properties: None,
            })),
            b"",
        )
        .await;
        let reply = self
            .wait_for("the ATTACH reply", |p, _| match p {
                Performative::Attach(a) if a.name == name => Some(a.clone()),
                _ => None,
            })
            .await;
        self.remote_handles.insert(handle, reply.handle);
        let refused = match role {
            Role::Sender => reply.target.is_none(),
            Role::Receiver => reply.source.is_none(),
        };
        if refused {
            let remote = reply.handle;
            let error = self
                .wait_for("the DETACH of a refused link", |p, _| match p {
                    Performative::Detach(d) if d.handle == remote => Some(d.error.clone()),
                    _ => None,
                })
                .await;
            return (handle, AttachOutcome::Refused(error));
        }
        if role == Role::Receiver {
            self.received
                .insert(handle, reply.initial_delivery_count.unwrap_or(0));
        }
        (handle, AttachOutcome::Attached(reply))
    }

    /// Attaches a sender to `address` and waits for credit; panics if refused.
    pub async fn attach_sender(&mut self, name: &str, address: &str) -> u32 {
        let (handle, outcome) = self.attach(Role::Sender, name, address).await;
        assert!(
            matches!(outcome, AttachOutcome::Attached(_)),
            "{address}: {outcome:?}"
        );
        self.wait_credit(handle).await;
        handle
    }

    /// The hub's handle for the client's link `handle`.
    pub fn remote_handle(&self, handle: u32) -> u32 {
        self.remote_handles[&handle]
    }

    /// Waits until the hub gives `handle` credit.
    pub async fn wait_credit(&mut self, handle: u32) {
        let remote = self.remote_handles[&handle];
        self.wait_for("credit", |p, _| match p {
            Performative::Flow(f) if f.handle == Some(remote) && f.link_credit.unwrap_or(0) > 0 => {
                Some(())
            }
            _ => None,
        })
        .await;
    }

    /// Attaches a receiver from `address` and grants it `credit`; panics if refused.
    pub async fn attach_receiver(&mut self, name: &str, address: &str, credit: u32) -> u32 {
        let (handle, outcome) = self.attach(Role::Receiver, name, address).await;
        assert!(
            matches!(outcome, AttachOutcome::Attached(_)),
            "{address}: {outcome:?}"
        );
        self.flow(handle, credit).await;
        handle
    }

    /// Grants `credit` on receiver `handle`.
    pub async fn flow(&mut self, handle: u32, credit: u32) {
        let delivery_count = self.received.get(&handle).copied().unwrap_or(0);
        self.send(
            Performative::Flow(Flow {
                next_incoming_id: Some(self.remote_next_outgoing.wrapping_add(self.transfers_in)),
                incoming_window: 5000,
                next_outgoing_id: self.next_delivery,
                outgoing_window: 5000,
                handle: Some(handle),
                delivery_count: Some(delivery_count),
                link_credit: Some(credit),
                ..Flow::default()
            }),
            b"",
        )
        .await;
    }

    /// Sends `payload` unsettled on sender `handle` with `format`, in as many frames as the
    /// hub's max-frame-size needs; returns its delivery id.
    pub async fn transfer(&mut self, handle: u32, payload: &[u8], format: u32) -> u32 {
        let id = self.next_delivery;
        self.next_delivery += 1;
        // Room for the frame header and the TRANSFER performative.
        let chunk = (self.max_frame_size as usize).saturating_sub(256).max(1);
        let mut parts: Vec<&[u8]> = payload.chunks(chunk).collect();
        if parts.is_empty() {
            parts.push(b"");
        }
        let last = parts.len() - 1;
        for (i, part) in parts.into_iter().enumerate() {
            let first = i == 0;
            let transfer = Transfer {
                handle,
                delivery_id: first.then_some(id),
                delivery_tag: first.then(|| Bytes::copy_from_slice(&id.to_be_bytes())),
                message_format: first.then_some(format),
                settled: first.then_some(false),
                more: i != last,
                ..Transfer::default()
            };
            self.send(Performative::Transfer(transfer), part).await;
        }
        id
    }

    /// Waits for the hub's settlement of delivery `id`.
    pub async fn outcome(&mut self, id: u32) -> Option<DeliveryState> {
        self.wait_for("a disposition", |p, _| match p {
            Performative::Disposition(d)
                if d.role == Role::Receiver && d.first <= id && d.last.unwrap_or(d.first) >= id =>
            {
                assert!(d.settled, "the hub settles what it decides: {d:?}");
                Some(d.state.clone())
            }
            _ => None,
        })
        .await
    }

    /// Sends `message` on sender `handle` and waits for its outcome.
    pub async fn send_message(&mut self, handle: u32, message: &Message) -> Option<DeliveryState> {
        let id = self.transfer(handle, &message.to_bytes().unwrap(), 0).await;
        self.outcome(id).await
    }

    /// Waits for a message on receiver `handle`: its delivery id, whether it came settled,
    /// and the message.
    pub async fn next_message(&mut self, handle: u32) -> (u32, bool, Message) {
        let remote = self.remote_handles[&handle];
        let (id, settled, payload) = self
            .wait_for("a transfer", |p, payload| match p {
                Performative::Transfer(t) if t.handle == remote => Some((
                    t.delivery_id.unwrap_or(0),
                    t.settled.unwrap_or(false),
                    payload.clone(),
                )),
                _ => None,
            })
            .await;
        if let Some(n) = self.received.get_mut(&handle) {
            *n += 1;
        }
        (id, settled, Message::decode(payload).unwrap())
    }

    /// Settles delivery `id` the hub sent, with `state`.
    pub async fn dispose(&mut self, id: u32, state: DeliveryState) {
        self.send(
            Performative::Disposition(Disposition {
                role: Role::Receiver,
                first: id,
                last: None,
                settled: true,
                state: Some(state),
                batchable: false,
            }),
            b"",
        )
        .await;
    }

    /// Waits for the hub to detach the client's link `handle`; returns the error.
    pub async fn detached(&mut self, handle: u32) -> Option<AmqpError> {
        let remote = self.remote_handles[&handle];
        self.wait_for("a DETACH", |p, _| match p {
            Performative::Detach(d) if d.handle == remote => Some(d.error.clone()),
            _ => None,
        })
        .await
    }

    /// Puts `token` for `audience` on `$cbs` (attaching the pair on first use, with Node's
    /// `reply-to`) and returns the reply: its status code, description and correlation id.
    pub async fn put_token(
        &mut self,
        audience: &str,
        token: &str,
        message_id: MessageId,
    ) -> (i32, String, Option<MessageId>) {
        let (sender, receiver) = match self.cbs {
            Some(pair) => pair,
            None => {
                let s = self.attach_sender("cbs-sender", "$cbs").await;
                let r = self.attach_receiver("cbs-receiver", "$cbs", 100).await;
                self.cbs = Some((s, r));
                (s, r)
            }
        };
        self.next_request += 1;
        let mut app = ApplicationProperties::new();
        app.insert("operation", "put-token");
        app.insert("type", "servicebus.windows.net:sastoken");
        app.insert("name", audience);
        let request = Message {
            properties: Some(Properties {
                message_id: Some(message_id),
                to: Some("$cbs".into()),
                reply_to: Some("cbs".into()),
                ..Properties::default()
            }),
            application_properties: Some(app),
            body: Body::Value(Value::String(token.to_owned())),
            ..Message::default()
        };
        let state = self.send_message(sender, &request).await;
        assert_eq!(state, Some(DeliveryState::Accepted), "put-token delivery");
        let (_, settled, reply) = self.next_message(receiver).await;
        assert!(settled, "$cbs replies come pre-settled");
        let app = reply.application_properties.unwrap_or_default();
        let status = match app.get("status-code") {
            Some(Value::Int(s)) => *s,
            other => panic!("status-code must be an AMQP int: {other:?}"),
        };
        let description = app
            .get("status-description")
            .and_then(Value::as_text)
            .unwrap_or_default()
            .to_owned();
        let correlation = reply.properties.and_then(|p| p.correlation_id);
        (status, description, correlation)
    }
}

/// A message with a data body and `properties`.
pub fn data_message(body: &[u8], properties: Properties) -> Message {
    Message {
        properties: Some(properties),
        body: Body::data(Bytes::copy_from_slice(body)),
        ..Message::default()
    }
}
