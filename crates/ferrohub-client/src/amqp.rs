//! A small AMQP 1.0 client for Ferrohub's AMQP endpoint, for tests and benchmarks: one
//! connection, one session, links the caller attaches, `$cbs` put-token.
//!
//! It speaks the wire through `ferrohub-amqp`'s codecs over any byte stream the caller opened
//! (TLS to the hub's AMQP port, usually). It starts without SASL (`AMQP 0 1 0 0`, as Node's
//! clients do) and authorizes with `$cbs`. It keeps the session's and links' flow control:
//! receivers get their credit topped up as deliveries arrive, senders wait for the hub's
//! credit, transfers larger than the hub's frame size are split.
//!
//! Everything the hub sends that the caller asked to see comes out of [`AmqpClient::next`], which
//! is cancel-safe: frames the client must write are queued and written on the next call that
//! writes, by the partial-write-safe [`AmqpClient::flush`].

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use ferrohub_amqp::frame::{AMQP_HEADER, Frame, FrameType};
use ferrohub_amqp::message::{ApplicationProperties, Message, MessageId, Properties};
use ferrohub_amqp::performative::{
    AmqpError, Attach, Begin, DeliveryState, Detach, Disposition, Fields, Flow, Open, Performative,
    ReceiverSettleMode, Role, SenderSettleMode, Source, Target, Transfer,
};
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
        /// The outcome.
        state: Option<DeliveryState>,
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
    /// The hub's handle, once attached.
    remote: Option<u32>,
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
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> AmqpClient<S> {
    /// Opens the connection over `io` (no SASL) with `hostname` in OPEN, and begins a session.
    pub async fn open(io: S, hostname: &str) -> Result<Self, AmqpClientError> {
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
        };
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

    async fn handshake(&mut self) -> Result<(), AmqpClientError> {
        while self.rx.len() < 8 {
            self.read_some().await?;
        }
        let header = self.rx.split_to(8);
        if header[..] != AMQP_HEADER {
            return Err(AmqpClientError::Protocol(format!(
                "unexpected protocol header {:?}",
                &header[..]
            )));
        }
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
                let Some((&handle, link)) = self.links.iter_mut().find(|(_, l)| l.name == a.name)
                else {
                    return Ok(());
                };
                link.remote = Some(a.handle);
                link.refused = match link.role {
                    Role::Sender => a.target.is_none(),
                    Role::Receiver => a.source.is_none(),
                };
                if link.role == Role::Receiver {
                    link.delivery_count = a.initial_delivery_count.unwrap_or(0);
                }
                self.by_remote.insert(a.handle, handle);
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
                if let Some(&handle) = f.handle.and_then(|h| self.by_remote.get(&h))
                    && let Some(link) = self.links.get_mut(&handle)
                    && link.role == Role::Sender
                    && let (Some(count), Some(credit)) = (f.delivery_count, f.link_credit)
                {
                    link.credit = count.wrapping_add(credit).wrapping_sub(link.delivery_count);
                    if link.credit > 0 {
                        self.pending.push_back(Incoming::Credit { handle });
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
                    self.queue_flow(handle, grant)?;
                }
            }
            Performative::Disposition(d) if d.role == Role::Receiver => {
                self.pending.push_back(Incoming::Disposition {
                    first: d.first,
                    last: d.last.unwrap_or(d.first),
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
    /// `handle` when given.
    fn queue_flow(&mut self, handle: u32, credit: Option<u32>) -> Result<(), AmqpClientError> {
        let mut flow = Flow {
            next_incoming_id: Some(self.next_incoming_id),
            incoming_window: WINDOW,
            next_outgoing_id: self.next_outgoing_id,
            outgoing_window: WINDOW,
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

    async fn attach(
        &mut self,
        name: &str,
        role: Role,
        source: Source,
        target: Target,
        properties: Option<Fields>,
        window: u32,
    ) -> Result<u32, AmqpClientError> {
        let handle = self.next_handle;
        self.next_handle += 1;
        self.links.insert(
            handle,
            LinkState {
                name: name.to_owned(),
                role,
                delivery_count: 0,
                credit: 0,
                window,
                remote: None,
                partial: None,
                refused: false,
            },
        );
        self.queue(Performative::Attach(Box::new(Attach {
            name: name.to_owned(),
            handle,
            role,
            snd_settle_mode: if role == Role::Sender {
                SenderSettleMode::Mixed
            } else {
                SenderSettleMode::Unsettled
            },
            rcv_settle_mode: ReceiverSettleMode::First,
            source: Some(source),
            target: Some(target),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: (role == Role::Sender).then_some(0),
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties,
        })))?;
        let name_owned = name.to_owned();
        self.pump_until(|c| match c.links.get(&handle) {
            Some(l) => Ok(l.remote.is_some()),
            None => Err(AmqpClientError::Detached {
                name: name_owned.clone(),
                error: None,
            }),
        })
        .await?;
        if self.links.get(&handle).is_some_and(|l| l.refused) {
            let error = self
                .wait_for(|i| match i {
                    Incoming::Detached { handle: h, error } if *h == handle => Some(error.clone()),
                    _ => None,
                })
                .await?;
            return Err(AmqpClientError::Detached {
                name: name.to_owned(),
                error,
            });
        }
        if window > 0 {
            self.queue_flow(handle, Some(window))?;
            self.flush().await?;
        }
        Ok(handle)
    }

    /// Attaches a sender link to `target`; the link's credit comes from the hub.
    pub async fn attach_sender(
        &mut self,
        name: &str,
        target: &str,
        properties: Option<Fields>,
    ) -> Result<u32, AmqpClientError> {
        self.attach(
            name,
            Role::Sender,
            Source::address(name),
            Target::address(target),
            properties,
            0,
        )
        .await
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
        self.attach(
            name,
            Role::Receiver,
            source,
            Target::address(name),
            properties,
            window,
        )
        .await
    }

    /// Grants `credit` on receiver `handle` (replacing what is left).
    pub async fn grant(&mut self, handle: u32, credit: u32) -> Result<(), AmqpClientError> {
        if !self.links.contains_key(&handle) {
            return Err(AmqpClientError::NoLink(handle));
        }
        self.queue_flow(handle, Some(credit))?;
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
                message_format: first.then_some(0),
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
        self.pump_until(|c| {
            if c.links.contains_key(&handle) {
                Ok(c.credit(handle) > 0)
            } else {
                Err(AmqpClientError::NoLink(handle))
            }
        })
        .await?;
        self.try_send(handle, message, settled)
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

    /// Detaches (closes) link `handle`.
    pub async fn detach(&mut self, handle: u32) -> Result<(), AmqpClientError> {
        self.links.remove(&handle);
        self.by_remote.retain(|_, h| *h != handle);
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
        let id = self.next_message_id;
        self.next_message_id += 1;
        let mut app = ApplicationProperties::new();
        app.insert("operation", "put-token");
        app.insert("type", "servicebus.windows.net:sastoken");
        app.insert("name", audience);
        let message = Message {
            properties: Some(Properties {
                message_id: Some(MessageId::Ulong(id)),
                reply_to: Some("cbs".into()),
                ..Properties::default()
            }),
            application_properties: Some(app),
            body: ferrohub_amqp::message::Body::Value(ferrohub_amqp::types::Value::String(
                token.to_owned(),
            )),
            ..Message::default()
        };
        self.send(sender, &message, true).await?;
        self.wait_for(|i| {
            let Incoming::Message { handle, .. } = i else {
                return None;
            };
            if *handle != receiver {
                return None;
            }
            let m = i.message()?;
            let correlated = m
                .properties
                .as_ref()
                .and_then(|p| p.correlation_id.as_ref())
                == Some(&MessageId::Ulong(id));
            if !correlated {
                return None;
            }
            let app = m.application_properties.as_ref();
            let status = app
                .and_then(|a| a.get("status-code"))
                .and_then(ferrohub_amqp::types::Value::as_integer)
                .and_then(|s| i32::try_from(s).ok())
                .unwrap_or(0);
            let description = app
                .and_then(|a| a.get("status-description"))
                .and_then(|v| v.as_text())
                .unwrap_or_default()
                .to_owned();
            Some((status, description))
        })
        .await
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
