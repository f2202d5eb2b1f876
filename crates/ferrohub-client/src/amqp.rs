//! A small AMQP 1.0 client for Ferrohub's AMQP endpoint, for tests and benchmarks: one
//! connection, one session, links the caller attaches, `$cbs` put-token.
//!
//! It speaks the wire through `ferrohub-amqp`'s codecs over any byte stream the caller opened
//! (TLS to the hub's AMQP port, usually). It starts without SASL (`AMQP 0 1 0 0`, as Node's
//! clients do) and authorizes with `$cbs`, or with a SASL exchange first
//! ([`AmqpClient::open_sasl`], as pyamqp and uamqp do). It keeps the session's and links' flow
//! control: receivers get their credit topped up as deliveries arrive (or granted by the
//! caller, drain included), senders wait for the hub's credit, transfers larger than the hub's
//! frame size are split.
//!
//! Links are attached from a full ATTACH ([`AmqpClient::attach_link`]) when a caller needs
//! filters, capabilities or properties; the hub's ATTACH stays readable
//! ([`AmqpClient::remote_attach`]).
//!
//! Everything the hub sends that the caller asked to see comes out of [`AmqpClient::next`], which
//! is cancel-safe: frames the client must write are queued and written on the next call that
//! writes, by the partial-write-safe [`AmqpClient::flush`].

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use ferrohub_amqp::frame::{AMQP_HEADER, Frame, FrameType, SASL_HEADER};
use ferrohub_amqp::message::{ApplicationProperties, Message, MessageId, Properties};
use ferrohub_amqp::performative::{
    AmqpError, Attach, Begin, DeliveryState, Detach, Disposition, Fields, Flow, Open, Performative,
    Role, SaslCode, SaslFrame, SaslInit, SenderSettleMode, Source, Target, Transfer,
};
use ferrohub_amqp::types::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame the client takes.
const MAX_FRAME: u32 = 1024 * 1024;

/// The session window the client announces (and refreshes with every FLOW).
const WINDOW: u32 = 100_000;

/// How long [`AmqpClient::open`] and the request helpers wait for the hub.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum AmqpClientError {
    /// Reading or writing the stream failed.
    #[error("AMQP I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The hub closed the stream.
    #[error("the hub closed the connection")]
    Eof,
    /// The hub sent something the client cannot read or does not expect.
    #[error("AMQP protocol: {0}")]
    Protocol(String),
    /// The hub closed the connection with an error.
    #[error("the hub closed the connection: {0:?}")]
    Closed(Option<AmqpError>),
    /// The hub refused or detached a link.
    #[error("link {name:?} detached: {error:?}")]
    Detached {
        /// The link's name.
        name: String,
        /// The hub's error.
        error: Option<AmqpError>,
    },
    /// The hub did not answer in time.
    #[error("no answer from the hub within {0:?}")]
    Timeout(Duration),
    /// A link the client does not have.
    #[error("no such link: {0}")]
    NoLink(u32),
    /// The SASL exchange did not authenticate.
    #[error("SASL outcome {code:?} (mechanisms offered: {offered:?})")]
    Sasl {
        /// The hub's outcome.
        code: SaslCode,
        /// The mechanisms the hub offered.
        offered: Vec<String>,
    },
}

/// What the hub sent on a link or the connection.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A whole message on a receiver link.
    Message {
        /// The client's link handle.
        handle: u32,
        /// Its delivery id (to settle it with [`AmqpClient::settle`] unless `settled`).
        delivery_id: u32,
        /// Whether the hub sent it pre-settled.
        settled: bool,
        /// The message format (0 for plain messages).
        format: u32,
        /// The raw payload.
        payload: Bytes,
    },
    /// The hub settled (or updated) deliveries the client sent.
    Disposition {
        /// The first delivery id.
        first: u32,
        /// The last (same as `first` for one).
        last: u32,
        /// Whether the hub settled them.
        settled: bool,
        /// The outcome.
        state: Option<DeliveryState>,
    },
    /// The hub's FLOW on a receiver link (the answer to a drain or an echo).
    Flow {
        /// The client's link handle.
        handle: u32,
        /// The hub's delivery count.
        delivery_count: Option<u32>,
        /// The credit left.
        link_credit: Option<u32>,
        /// Whether the hub is draining.
        drain: bool,
    },
    /// The hub granted credit on a sender link (see [`AmqpClient::credit`]).
    Credit {
        /// The client's link handle.
        handle: u32,
    },
    /// The hub detached a link.
    Detached {
        /// The client's link handle.
        handle: u32,
        /// Why.
        error: Option<AmqpError>,
    },
}

impl Incoming {
    /// The message of a [`Incoming::Message`], decoded.
    pub fn message(&self) -> Option<Message> {
        match self {
            Incoming::Message { payload, .. } => Message::decode(payload.clone()).ok(),
            _ => None,
        }
    }

    /// The message of a [`Incoming::Message`] on receiver `handle` whose correlation id is
    /// `correlation_id` (`None`: a message without one), decoded.
    pub fn correlated_on(
        &self,
        handle: u32,
        correlation_id: Option<&MessageId>,
    ) -> Option<Message> {
        match self {
            Incoming::Message { handle: h, .. } if *h == handle => {
                let m = self.message()?;
                let id = m
                    .properties
                    .as_ref()
                    .and_then(|p| p.correlation_id.as_ref());
                (id == correlation_id).then_some(m)
            }
            _ => None,
        }
    }
}

#[derive(Debug)]
struct LinkState {
    name: String,
    role: Role,
    /// Deliveries on the link so far (the sender's delivery-count as this side knows it).
    delivery_count: u32,
    /// Credit: for a sender, what the hub granted and is left; for a receiver, what this side
    /// granted and is left.
    credit: u32,
    /// Receivers: the credit kept topped up (0: the caller grants it).
    window: u32,
    /// The hub's ATTACH, once attached.
    remote: Option<Box<Attach>>,
    /// A transfer being reassembled: (delivery id, settled, format, bytes).
    partial: Option<(u32, bool, u32, BytesMut)>,
    /// The hub answered the ATTACH without a terminus: a refusal, its DETACH follows.
    refused: bool,
}

/// An AMQP connection with one session.
pub struct AmqpClient<S> {
    io: S,
    rx: BytesMut,
    tx: BytesMut,
    remote_max_frame: u32,
    /// The next transfer id this side sends.
    next_outgoing_id: u32,
    /// The next transfer id this side expects.
    next_incoming_id: u32,
    /// Transfers the hub's session still takes from this side.
    remote_incoming_window: u32,
    next_handle: u32,
    next_delivery_id: u32,
    links: HashMap<u32, LinkState>,
    by_remote: HashMap<u32, u32>,
    pending: VecDeque<Incoming>,
    /// `$cbs` sender and receiver handles, once attached.
    cbs: Option<(u32, u32)>,
    next_message_id: u64,
    /// The SASL mechanisms the hub offered (empty without SASL).
    sasl_mechanisms: Vec<String>,
}

/// The hub's answer to a `$cbs` put-token ([`AmqpClient::cbs_put_token`]).
#[derive(Debug, Clone)]
pub struct CbsReply {
    /// The hub's outcome of the request's delivery (`None` when it was sent settled).
    pub outcome: Option<DeliveryState>,
    /// Whether the reply came pre-settled.
    pub settled: bool,
    /// The reply.
    pub message: Message,
}

impl CbsReply {
    /// The reply's `status-code`, as sent.
    pub fn status(&self) -> Option<&Value> {
        self.message
            .application_properties
            .as_ref()
            .and_then(|a| a.get("status-code"))
    }

    /// The `status-code` as a number (0 when missing).
    pub fn status_code(&self) -> i32 {
        self.status()
            .and_then(Value::as_integer)
            .and_then(|s| i32::try_from(s).ok())
            .unwrap_or(0)
    }

    /// The `status-description` (empty when missing).
    pub fn description(&self) -> String {
        self.message
            .application_properties
            .as_ref()
            .and_then(|a| a.get("status-description"))
            .and_then(Value::as_text)
            .unwrap_or_default()
            .to_owned()
    }

    /// The reply's correlation id.
    pub fn correlation_id(&self) -> Option<&MessageId> {
        self.message
            .properties
            .as_ref()
            .and_then(|p| p.correlation_id.as_ref())
    }
}

/// An ATTACH for link `name` where the client is `role`, for [`AmqpClient::attach_link`]
/// (which picks the handle). A receiver asks for unsettled deliveries.
pub fn new_attach(name: &str, role: Role, source: Source, target: Target) -> Attach {
    let mut attach = Attach::new(name, 0, role, source, target);
    if role == Role::Receiver {
        attach.snd_settle_mode = SenderSettleMode::Unsettled;
    }
    attach
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> AmqpClient<S> {
    /// Opens the connection over `io` (no SASL) with `hostname` in OPEN, and begins a session.
    pub async fn open(io: S, hostname: &str) -> Result<Self, AmqpClientError> {
        Self::start(io, hostname, None).await
    }

    /// Opens the connection over `io` after a SASL exchange with `mechanism` and
    /// `initial_response`; an outcome other than ok is [`AmqpClientError::Sasl`].
    pub async fn open_sasl(
        io: S,
        hostname: &str,
        mechanism: &str,
        initial_response: Option<&[u8]>,
    ) -> Result<Self, AmqpClientError> {
        let init = SaslInit {
            mechanism: mechanism.to_owned().into(),
            initial_response: initial_response.map(Bytes::copy_from_slice),
            hostname: Some(hostname.to_owned()),
        };
        Self::start(io, hostname, Some(init)).await
    }

    /// The SASL mechanisms the hub offered (empty without SASL).
    pub fn sasl_mechanisms(&self) -> &[String] {
        &self.sasl_mechanisms
    }

    async fn start(io: S, hostname: &str, sasl: Option<SaslInit>) -> Result<Self, AmqpClientError> {
        let mut c = AmqpClient {
            io,
            rx: BytesMut::new(),
            tx: BytesMut::new(),
            remote_max_frame: 512,
            next_outgoing_id: 0,
            next_incoming_id: 0,
            remote_incoming_window: 0,
            next_handle: 0,
            next_delivery_id: 0,
            links: HashMap::new(),
            by_remote: HashMap::new(),
            pending: VecDeque::new(),
            cbs: None,
            next_message_id: 1,
            sasl_mechanisms: Vec::new(),
        };
        if let Some(init) = sasl {
            tokio::time::timeout(ANSWER_TIMEOUT, c.sasl(init))
                .await
                .map_err(|_| AmqpClientError::Timeout(ANSWER_TIMEOUT))??;
        }
        c.tx.extend_from_slice(&AMQP_HEADER);
        c.queue(Performative::Open(Open {
            container_id: format!("ferrohub-client-{}", std::process::id()),
            hostname: Some(hostname.to_owned()),
            max_frame_size: MAX_FRAME,
            channel_max: 0,
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }))?;
        c.queue(Performative::Begin(Begin {
            remote_channel: None,
            next_outgoing_id: 0,
            incoming_window: WINDOW,
            outgoing_window: WINDOW,
            handle_max: 1023,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }))?;
        c.flush().await?;
        tokio::time::timeout(ANSWER_TIMEOUT, c.handshake())
            .await
            .map_err(|_| AmqpClientError::Timeout(ANSWER_TIMEOUT))??;
        Ok(c)
    }

    /// Reads the hub's protocol header; it must be `expected`.
    async fn read_header(&mut self, expected: [u8; 8]) -> Result<(), AmqpClientError> {
        while self.rx.len() < 8 {
            self.read_some().await?;
        }
        let header = self.rx.split_to(8);
        if header[..] != expected {
            return Err(AmqpClientError::Protocol(format!(
                "unexpected protocol header {:?}",
                &header[..]
            )));
        }
        Ok(())
    }

    /// The SASL exchange: header, the hub's mechanisms, `init`, the outcome.
    async fn sasl(&mut self, init: SaslInit) -> Result<(), AmqpClientError> {
        self.tx.extend_from_slice(&SASL_HEADER);
        self.flush().await?;
        self.read_header(SASL_HEADER).await?;
        loop {
            let frame = match Frame::decode(&mut self.rx, MAX_FRAME) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    self.read_some().await?;
                    continue;
                }
                Err(e) => return Err(AmqpClientError::Protocol(format!("bad frame: {e}"))),
            };
            let sasl = SaslFrame::decode(frame.body)
                .map_err(|e| AmqpClientError::Protocol(format!("bad SASL frame: {e}")))?;
            match sasl {
                SaslFrame::Mechanisms(m) => {
                    self.sasl_mechanisms =
                        m.mechanisms.iter().map(|s| s.as_str().to_owned()).collect();
                    SaslFrame::Init(init.clone())
                        .encode_frame(&mut self.tx)
                        .map_err(|e| {
                            AmqpClientError::Protocol(format!("encoding sasl-init: {e}"))
                        })?;
                    self.flush().await?;
                }
                SaslFrame::Outcome(o) if o.code == SaslCode::Ok => return Ok(()),
                SaslFrame::Outcome(o) => {
                    return Err(AmqpClientError::Sasl {
                        code: o.code,
                        offered: std::mem::take(&mut self.sasl_mechanisms),
                    });
                }
                other => {
                    return Err(AmqpClientError::Protocol(format!(
                        "unexpected SASL frame {other:?}"
                    )));
                }
            }
        }
    }

    async fn handshake(&mut self) -> Result<(), AmqpClientError> {
        self.read_header(AMQP_HEADER).await?;
        let mut opened = false;
        loop {
            let (_, performative, _) = self.read_frame().await?;
            match performative {
                Performative::Open(open) => {
                    self.remote_max_frame = open.max_frame_size.max(512);
                    opened = true;
                }
                Performative::Begin(begin) if opened => {
                    self.next_incoming_id = begin.next_outgoing_id;
                    self.remote_incoming_window = begin.incoming_window;
                    return Ok(());
                }
                Performative::Close(close) => return Err(AmqpClientError::Closed(close.error)),
                other => {
                    return Err(AmqpClientError::Protocol(format!(
                        "expected OPEN and BEGIN, got {}",
                        other.name()
                    )));
                }
            }
        }
    }

    /// Writes every queued frame. Safe to cancel: what was written is not written again.
    pub async fn flush(&mut self) -> Result<(), AmqpClientError> {
        while !self.tx.is_empty() {
            let n = self.io.write(&self.tx).await?;
            if n == 0 {
                return Err(AmqpClientError::Eof);
            }
            self.tx.advance(n);
        }
        self.io.flush().await?;
        Ok(())
    }

    /// The stream, for writing bytes the client does not track (a malformed or out-of-order
    /// frame, in a test of the hub's answer to it). [`flush`](Self::flush) first: queued
    /// frames go before.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    fn queue(&mut self, p: Performative) -> Result<(), AmqpClientError> {
        self.queue_with(p, &[])
    }

    fn queue_with(&mut self, p: Performative, payload: &[u8]) -> Result<(), AmqpClientError> {
        p.encode_frame(0, payload, &mut self.tx)
            .map(|_| ())
            .map_err(|e| AmqpClientError::Protocol(format!("encoding {}: {e}", p.name())))
    }

    async fn read_some(&mut self) -> Result<(), AmqpClientError> {
        if self.rx.capacity() - self.rx.len() < 16 * 1024 {
            self.rx.reserve(64 * 1024);
        }
        match self.io.read_buf(&mut self.rx).await? {
            0 => Err(AmqpClientError::Eof),
            _ => Ok(()),
        }
    }

    /// The next AMQP frame (heartbeats skipped). Cancel-safe: bytes stay in `rx` until a
    /// whole frame is there.
    async fn read_frame(&mut self) -> Result<(u16, Performative, Bytes), AmqpClientError> {
        loop {
            match Frame::decode(&mut self.rx, MAX_FRAME) {
                Ok(Some(frame)) => {
                    if frame.frame_type != FrameType::Amqp || frame.body.is_empty() {
                        continue;
                    }
                    let (p, payload) = Performative::decode(frame.body)
                        .map_err(|e| AmqpClientError::Protocol(format!("bad frame: {e}")))?;
                    return Ok((frame.channel, p, payload));
                }
                Ok(None) => self.read_some().await?,
                Err(e) => return Err(AmqpClientError::Protocol(format!("bad frame: {e}"))),
            }
        }
    }

    /// Handles one frame of the hub; what the caller should see goes to `pending`.
    fn on_frame(&mut self, p: Performative, payload: Bytes) -> Result<(), AmqpClientError> {
        match p {
            Performative::Attach(a) => {
                let Some((&handle, link)) = self
                    .links
                    .iter_mut()
                    .find(|(_, l)| l.name == a.name && l.remote.is_none())
                else {
                    return Ok(());
                };
                link.refused = match link.role {
                    Role::Sender => a.target.is_none(),
                    Role::Receiver => a.source.is_none(),
                };
                if link.role == Role::Receiver {
                    link.delivery_count = a.initial_delivery_count.unwrap_or(0);
                }
                self.by_remote.insert(a.handle, handle);
                link.remote = Some(a);
            }
            Performative::Detach(d) => {
                if let Some(handle) = self.by_remote.remove(&d.handle) {
                    self.links.remove(&handle);
                    self.pending.push_back(Incoming::Detached {
                        handle,
                        error: d.error,
                    });
                }
            }
            Performative::Flow(f) => {
                if let Some(next_in) = f.next_incoming_id {
                    self.remote_incoming_window = next_in
                        .wrapping_add(f.incoming_window)
                        .wrapping_sub(self.next_outgoing_id);
                }
                let Some(&handle) = f.handle.and_then(|h| self.by_remote.get(&h)) else {
                    return Ok(());
                };
                let Some(link) = self.links.get_mut(&handle) else {
                    return Ok(());
                };
                match link.role {
                    Role::Sender => {
                        if let (Some(count), Some(credit)) = (f.delivery_count, f.link_credit) {
                            link.credit =
                                count.wrapping_add(credit).wrapping_sub(link.delivery_count);
                            if link.credit > 0 {
                                self.pending.push_back(Incoming::Credit { handle });
                            }
                        }
                    }
                    Role::Receiver => {
                        if let Some(count) = f.delivery_count {
                            link.delivery_count = count;
                        }
                        if let Some(credit) = f.link_credit {
                            link.credit = credit;
                        }
                        self.pending.push_back(Incoming::Flow {
                            handle,
                            delivery_count: f.delivery_count,
                            link_credit: f.link_credit,
                            drain: f.drain,
                        });
                    }
                }
            }
            Performative::Transfer(t) => {
                self.next_incoming_id = self.next_incoming_id.wrapping_add(1);
                let Some(&handle) = self.by_remote.get(&t.handle) else {
                    return Ok(());
                };
                let Some(link) = self.links.get_mut(&handle) else {
                    return Ok(());
                };
                let mut whole = match link.partial.take() {
                    Some(p) => p,
                    None => {
                        link.delivery_count = link.delivery_count.wrapping_add(1);
                        link.credit = link.credit.saturating_sub(1);
                        (
                            t.delivery_id.unwrap_or(0),
                            t.settled.unwrap_or(false),
                            t.message_format.unwrap_or(0),
                            BytesMut::new(),
                        )
                    }
                };
                whole.3.extend_from_slice(&payload);
                if t.more {
                    link.partial = Some(whole);
                } else {
                    self.pending.push_back(Incoming::Message {
                        handle,
                        delivery_id: whole.0,
                        settled: whole.1 || t.settled.unwrap_or(false),
                        format: whole.2,
                        payload: whole.3.freeze(),
                    });
                }
                let top_up = link.window > 0 && link.credit <= link.window / 2;
                let window = link.window;
                if top_up || self.next_incoming_id.is_multiple_of(WINDOW / 2) {
                    let grant = if top_up { Some(window) } else { None };
                    self.queue_flow(handle, grant, false)?;
                }
            }
            Performative::Disposition(d) if d.role == Role::Receiver => {
                self.pending.push_back(Incoming::Disposition {
                    first: d.first,
                    last: d.last.unwrap_or(d.first),
                    settled: d.settled,
                    state: d.state,
                });
            }
            Performative::Close(c) => return Err(AmqpClientError::Closed(c.error)),
            Performative::End(e) => return Err(AmqpClientError::Closed(e.error)),
            _ => {}
        }
        Ok(())
    }

    /// Queues a FLOW refreshing the session window, and granting `credit` on receiver
    /// `handle` when given (asking the hub to use it up or end it when `drain`).
    fn queue_flow(
        &mut self,
        handle: u32,
        credit: Option<u32>,
        drain: bool,
    ) -> Result<(), AmqpClientError> {
        let mut flow = Flow {
            next_incoming_id: Some(self.next_incoming_id),
            incoming_window: WINDOW,
            next_outgoing_id: self.next_outgoing_id,
            outgoing_window: WINDOW,
            drain,
            ..Flow::default()
        };
        if let Some(credit) = credit
            && let Some(link) = self.links.get_mut(&handle)
        {
            link.credit = credit;
            flow.handle = Some(handle);
            flow.delivery_count = Some(link.delivery_count);
            flow.link_credit = Some(credit);
        }
        self.queue(Performative::Flow(flow))
    }

    /// The next thing the hub sent that the caller should see. Cancel-safe.
    pub async fn next(&mut self) -> Result<Incoming, AmqpClientError> {
        loop {
            if let Some(i) = self.pending.pop_front() {
                return Ok(i);
            }
            self.flush().await?;
            let (_, p, payload) = self.read_frame().await?;
            self.on_frame(p, payload)?;
        }
    }

    /// Reads until `done` says the state is reached, keeping what the caller should see.
    async fn pump_until(
        &mut self,
        mut done: impl FnMut(&Self) -> Result<bool, AmqpClientError>,
    ) -> Result<(), AmqpClientError> {
        let work = async {
            loop {
                if done(self)? {
                    return Ok(());
                }
                self.flush().await?;
                let (_, p, payload) = self.read_frame().await?;
                self.on_frame(p, payload)?;
            }
        };
        tokio::time::timeout(ANSWER_TIMEOUT, work)
            .await
            .map_err(|_| AmqpClientError::Timeout(ANSWER_TIMEOUT))?
    }

    /// Attaches the link `attach` describes (the client picks its handle), keeping `window`
    /// credit granted on a receiver (0: none until [`grant`](Self::grant)). A refusal (the
    /// hub's ATTACH without a terminus, then its DETACH) is [`AmqpClientError::Detached`].
    pub async fn attach_link(
        &mut self,
        mut attach: Attach,
        window: u32,
    ) -> Result<u32, AmqpClientError> {
        let handle = self.next_handle;
        self.next_handle += 1;
        let name = attach.name.clone();
        let role = attach.role;
        attach.handle = handle;
        self.links.insert(
            handle,
            LinkState {
                name: name.clone(),
                role,
                delivery_count: 0,
                credit: 0,
                window,
                remote: None,
                partial: None,
                refused: false,
            },
        );
        self.queue(Performative::Attach(Box::new(attach)))?;
        self.pump_until(|c| match c.links.get(&handle) {
            Some(l) => Ok(l.remote.is_some()),
            None => Err(AmqpClientError::Detached {
                name: name.clone(),
                error: None,
            }),
        })
        .await?;
        if self.links.get(&handle).is_some_and(|l| l.refused) {
            let error = self.detached(handle).await?;
            return Err(AmqpClientError::Detached { name, error });
        }
        if window > 0 {
            self.queue_flow(handle, Some(window), false)?;
            self.flush().await?;
        }
        Ok(handle)
    }

    /// The hub's ATTACH of link `handle`, once attached.
    pub fn remote_attach(&self, handle: u32) -> Option<&Attach> {
        self.links.get(&handle).and_then(|l| l.remote.as_deref())
    }

    /// Attaches a sender link to `target`; the link's credit comes from the hub.
    pub async fn attach_sender(
        &mut self,
        name: &str,
        target: &str,
        properties: Option<Fields>,
    ) -> Result<u32, AmqpClientError> {
        let mut attach = new_attach(
            name,
            Role::Sender,
            Source::address(name),
            Target::address(target),
        );
        attach.properties = properties;
        self.attach_link(attach, 0).await
    }

    /// Attaches a receiver link from `source`, keeping `window` credit granted (0: none until
    /// [`grant`](Self::grant)).
    pub async fn attach_receiver(
        &mut self,
        name: &str,
        source: Source,
        properties: Option<Fields>,
        window: u32,
    ) -> Result<u32, AmqpClientError> {
        let mut attach = new_attach(name, Role::Receiver, source, Target::address(name));
        attach.properties = properties;
        self.attach_link(attach, window).await
    }

    /// Grants `credit` on receiver `handle` (replacing what is left).
    pub async fn grant(&mut self, handle: u32, credit: u32) -> Result<(), AmqpClientError> {
        if !self.links.contains_key(&handle) {
            return Err(AmqpClientError::NoLink(handle));
        }
        self.queue_flow(handle, Some(credit), false)?;
        self.flush().await
    }

    /// Grants `credit` on receiver `handle` with drain set: the hub sends what it has and
    /// ends the rest of the credit with a FLOW ([`Incoming::Flow`]).
    pub async fn drain(&mut self, handle: u32, credit: u32) -> Result<(), AmqpClientError> {
        if !self.links.contains_key(&handle) {
            return Err(AmqpClientError::NoLink(handle));
        }
        self.queue_flow(handle, Some(credit), true)?;
        self.flush().await
    }

    /// How many messages sender `handle` may send now.
    pub fn credit(&self, handle: u32) -> u32 {
        self.links
            .get(&handle)
            .filter(|l| l.role == Role::Sender)
            .map_or(0, |l| l.credit.min(self.remote_incoming_window))
    }

    /// Queues `message` on sender `handle` if it has credit, and writes it. Returns its
    /// delivery id; `None` when the link has no credit now (read with [`next`](Self::next)
    /// until it has).
    pub async fn try_send(
        &mut self,
        handle: u32,
        message: &Message,
        settled: bool,
    ) -> Result<Option<u32>, AmqpClientError> {
        let payload = message
            .to_bytes()
            .map_err(|e| AmqpClientError::Protocol(format!("encoding a message: {e}")))?;
        self.try_send_payload(handle, &payload, settled).await
    }

    /// [`try_send`](Self::try_send) of an encoded message.
    pub async fn try_send_payload(
        &mut self,
        handle: u32,
        payload: &[u8],
        settled: bool,
    ) -> Result<Option<u32>, AmqpClientError> {
        self.try_transfer(handle, payload, 0, settled).await
    }

    /// [`try_send_payload`](Self::try_send_payload) with message format `format` (Event
    /// Hubs batches use their own).
    async fn try_transfer(
        &mut self,
        handle: u32,
        payload: &[u8],
        format: u32,
        settled: bool,
    ) -> Result<Option<u32>, AmqpClientError> {
        if self.credit(handle) == 0 {
            return Ok(None);
        }
        // Room for the TRANSFER's own fields.
        let chunk = (self.remote_max_frame as usize).saturating_sub(128).max(64);
        let frames = payload.len().div_ceil(chunk).max(1) as u32;
        if frames > self.remote_incoming_window {
            return Ok(None);
        }
        let delivery_id = self.next_delivery_id;
        self.next_delivery_id = self.next_delivery_id.wrapping_add(1);
        let Some(link) = self.links.get_mut(&handle) else {
            return Err(AmqpClientError::NoLink(handle));
        };
        link.credit -= 1;
        link.delivery_count = link.delivery_count.wrapping_add(1);
        let mut parts = payload.chunks(chunk).peekable();
        let mut first = true;
        loop {
            let part = parts.next().unwrap_or(&[]);
            let more = parts.peek().is_some();
            let transfer = Transfer {
                handle,
                delivery_id: first.then_some(delivery_id),
                delivery_tag: first.then(|| Bytes::copy_from_slice(&delivery_id.to_be_bytes())),
                message_format: first.then_some(format),
                settled: Some(settled),
                more,
                ..Transfer::default()
            };
            self.queue_with(Performative::Transfer(transfer), part)?;
            self.next_outgoing_id = self.next_outgoing_id.wrapping_add(1);
            self.remote_incoming_window = self.remote_incoming_window.saturating_sub(1);
            first = false;
            if !more {
                break;
            }
        }
        self.flush().await?;
        Ok(Some(delivery_id))
    }

    /// Sends `message` on sender `handle`, waiting for credit; returns its delivery id.
    pub async fn send(
        &mut self,
        handle: u32,
        message: &Message,
        settled: bool,
    ) -> Result<u32, AmqpClientError> {
        let payload = message
            .to_bytes()
            .map_err(|e| AmqpClientError::Protocol(format!("encoding a message: {e}")))?;
        self.send_payload(handle, &payload, 0, settled).await
    }

    /// Sends an encoded message of format `format` on sender `handle`, waiting for credit;
    /// returns its delivery id.
    pub async fn send_payload(
        &mut self,
        handle: u32,
        payload: &[u8],
        format: u32,
        settled: bool,
    ) -> Result<u32, AmqpClientError> {
        self.pump_until(|c| {
            if c.links.contains_key(&handle) {
                Ok(c.credit(handle) > 0)
            } else {
                Err(AmqpClientError::NoLink(handle))
            }
        })
        .await?;
        self.try_transfer(handle, payload, format, settled)
            .await?
            .ok_or_else(|| AmqpClientError::Protocol("no credit after waiting for it".into()))
    }

    /// Sends `message` unsettled and waits for the hub's outcome.
    pub async fn send_and_wait(
        &mut self,
        handle: u32,
        message: &Message,
    ) -> Result<Option<DeliveryState>, AmqpClientError> {
        let id = self.send(handle, message, false).await?;
        self.wait_for(|i| match i {
            Incoming::Disposition {
                first, last, state, ..
            } if (*first..=*last).contains(&id) => Some(state.clone()),
            _ => None,
        })
        .await
    }

    /// Reads until `pick` picks something, keeping everything else for [`next`](Self::next).
    pub async fn wait_for<T>(
        &mut self,
        mut pick: impl FnMut(&Incoming) -> Option<T>,
    ) -> Result<T, AmqpClientError> {
        let mut kept = VecDeque::new();
        let work = async {
            loop {
                let i = self.next().await?;
                if let Some(t) = pick(&i) {
                    return Ok(t);
                }
                kept.push_back(i);
            }
        };
        let result = tokio::time::timeout(ANSWER_TIMEOUT, work).await;
        for k in kept.into_iter().rev() {
            self.pending.push_front(k);
        }
        result.map_err(|_| AmqpClientError::Timeout(ANSWER_TIMEOUT))?
    }

    /// Settles delivery `delivery_id` (of any receiver link: delivery ids are the session's)
    /// with `state`.
    pub async fn settle(
        &mut self,
        delivery_id: u32,
        state: DeliveryState,
    ) -> Result<(), AmqpClientError> {
        self.queue(Performative::Disposition(Disposition {
            role: Role::Receiver,
            first: delivery_id,
            last: None,
            settled: true,
            state: Some(state),
            batchable: false,
        }))?;
        self.flush().await
    }

    /// The next message on receiver `handle`: its delivery id, whether it came settled, and
    /// the message. Other things stay for [`next`](Self::next).
    pub async fn next_message(
        &mut self,
        handle: u32,
    ) -> Result<(u32, bool, Message), AmqpClientError> {
        let (delivery_id, settled, payload) = self
            .wait_for(|i| match i {
                Incoming::Message {
                    handle: h,
                    delivery_id,
                    settled,
                    payload,
                    ..
                } if *h == handle => Some((*delivery_id, *settled, payload.clone())),
                _ => None,
            })
            .await?;
        let message = Message::decode(payload)
            .map_err(|e| AmqpClientError::Protocol(format!("an undecodable message: {e}")))?;
        Ok((delivery_id, settled, message))
    }

    /// Waits for the hub's DETACH of link `handle`; returns its error.
    pub async fn detached(&mut self, handle: u32) -> Result<Option<AmqpError>, AmqpClientError> {
        self.wait_for(|i| match i {
            Incoming::Detached { handle: h, error } if *h == handle => Some(error.clone()),
            _ => None,
        })
        .await
    }

    /// Detaches (closes) link `handle`. The link keeps receiving until the hub's DETACH,
    /// which comes out of [`next`](Self::next) as [`Incoming::Detached`].
    pub async fn detach(&mut self, handle: u32) -> Result<(), AmqpClientError> {
        self.queue(Performative::Detach(Detach {
            handle,
            closed: true,
            error: None,
        }))?;
        self.flush().await
    }

    /// Puts a SAS token on `$cbs` for `audience`; returns the hub's status code and
    /// description.
    pub async fn put_token(
        &mut self,
        audience: &str,
        token: &str,
    ) -> Result<(i32, String), AmqpClientError> {
        let id = self.next_message_id;
        self.next_message_id += 1;
        let reply = self
            .cbs_put_token(audience, token, MessageId::Ulong(id), true)
            .await?;
        Ok((reply.status_code(), reply.description()))
    }

    /// Puts a SAS token on `$cbs` for `audience` in a request with `message_id` (the `$cbs`
    /// links are attached on first use), sent `settled` or not (then the hub's outcome is
    /// awaited too); returns the reply correlated to `message_id`.
    pub async fn cbs_put_token(
        &mut self,
        audience: &str,
        token: &str,
        message_id: MessageId,
        settled: bool,
    ) -> Result<CbsReply, AmqpClientError> {
        let (sender, receiver) = match self.cbs {
            Some(pair) => pair,
            None => {
                let s = self.attach_sender("cbs-sender", "$cbs", None).await?;
                let r = self
                    .attach_receiver("cbs-receiver", Source::address("$cbs"), None, 16)
                    .await?;
                self.cbs = Some((s, r));
                (s, r)
            }
        };
        let mut app = ApplicationProperties::new();
        app.insert("operation", "put-token");
        app.insert("type", "servicebus.windows.net:sastoken");
        app.insert("name", audience);
        let message = Message {
            properties: Some(Properties {
                message_id: Some(message_id.clone()),
                to: Some("$cbs".into()),
                reply_to: Some("cbs".into()),
                ..Properties::default()
            }),
            application_properties: Some(app),
            body: ferrohub_amqp::message::Body::Value(Value::String(token.to_owned())),
            ..Message::default()
        };
        let outcome = if settled {
            self.send(sender, &message, true).await?;
            None
        } else {
            self.send_and_wait(sender, &message).await?
        };
        let (settled, message) = self
            .wait_for(|i| {
                let m = i.correlated_on(receiver, Some(&message_id))?;
                Some((matches!(i, Incoming::Message { settled: true, .. }), m))
            })
            .await?;
        Ok(CbsReply {
            outcome,
            settled,
            message,
        })
    }

    /// Closes the connection.
    pub async fn close(mut self) -> Result<(), AmqpClientError> {
        self.queue(Performative::Close(ferrohub_amqp::performative::Close {
            error: None,
        }))?;
        self.flush().await?;
        let _ = self.io.shutdown().await;
        Ok(())
    }
}
