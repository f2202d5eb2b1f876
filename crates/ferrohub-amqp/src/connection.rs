//! The hub side of one AMQP 1.0 connection, as a sans-IO state machine.
//!
//! A [`Connection`] owns the protocol rules of one socket: the protocol headers, SASL, OPEN,
//! sessions and their windows, links and their credit, reassembly of incoming deliveries,
//! splitting of outgoing ones, settlement, heartbeats and timeouts. It owns no socket and reads
//! no clock (every time-dependent call takes `now`), and it knows nothing of Azure's nodes or
//! tokens: it reports ATTACHes and deliveries as [`Event`]s, and the driver (the hub's AMQP
//! listener) decides with the help of [`azure`](crate::azure).
//!
//! The handshake is a sequence of states; everything after OPEN lives in one:
//!
//! ```text
//!  ExpectHeader ─AMQP 3 1 0 0─▶ SaslInit ─sasl-init─▶ SaslAuthenticating ─ok─▶ ExpectAmqpHeader
//!       │                                                                           │
//!       └──────────────AMQP 0 1 0 0 (if allowed)──────────▶ ExpectOpen ◀─AMQP 0 1 0 0┘
//!                                                               │
//!                                                             OPEN
//!                                                               ▼
//!   bad header, failed SASL, timeout, violation, CLOSE ──▶ Closed ◀── Opened (sessions, links)
//! ```

mod config;
mod event;
mod output;
mod session;

use std::mem;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use crate::condition;
use crate::connection::output::Output;
use crate::connection::session::{Counters, Ctx, Opened};
use crate::frame::{
    AMQP_HEADER, Frame, FrameType, MIN_MAX_FRAME_SIZE, ProtocolHeader, SASL_HEADER,
};
use crate::performative::{
    AmqpError, Close, DeliveryState, Open, Performative, SaslCode, SaslFrame, SaslMechanisms,
    SaslOutcome,
};
use crate::types::Symbol;

pub use config::{
    AZURE_SASL_MECHANISMS, ConnectionConfig, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_MESSAGE_SIZE, SaslPolicy,
};
pub use event::{AttachReply, DeliveryId, Event, LinkId, SendError, SessionId};

/// The shortest interval between heartbeats, whatever idle timeout the peer announces: a peer
/// asking for a 2 ms timeout must not make the driver spin.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// One AMQP connection, hub side.
///
/// # Driving a connection
///
/// The driver owns the socket and the clock, and repeats:
///
/// 1. While [`wants_read`](Self::wants_read) is true, read bytes into a buffer and pass it
///    to [`handle_input`](Self::handle_input), which consumes every complete protocol header
///    and frame (many at once: clients pipeline OPEN, BEGIN, ATTACH and FLOW in one write) and
///    leaves a partial frame in the buffer. It stops early, leaving complete frames behind,
///    when `wants_read` turns false: call it again once it is true.
/// 2. After every call, append [`poll_transmit`](Self::poll_transmit)'s bytes to the socket
///    and drain [`poll_event`](Self::poll_event).
/// 3. Act on each [`Event`]: answer [`Event::SaslInit`] with
///    [`sasl_outcome`](Self::sasl_outcome), [`Event::Attach`] with
///    [`accept_attach`](Self::accept_attach) or [`refuse_attach`](Self::refuse_attach), and
///    every [`Event::Delivery`] with [`settle`](Self::settle) once the message is dealt with
///    (stored, routed, refused). Send on links where the hub is the sender with
///    [`send`](Self::send) while [`credit`](Self::credit) allows, resuming on
///    [`Event::Credit`]. Answers may come later, from other tasks; drain both queues again
///    after each.
/// 4. Sleep until [`poll_timeout`](Self::poll_timeout) (none: no timer), then call
///    [`handle_timeout`](Self::handle_timeout). Recompute the deadline after every call;
///    calling early is harmless.
/// 5. To end the connection from the hub's side (shutdown, token expiry), call
///    [`close`](Self::close); links and sessions have [`detach`](Self::detach) and
///    [`end_session`](Self::end_session).
/// 6. Once [`is_closed`](Self::is_closed) is true, write what `poll_transmit` still yields
///    (the CLOSE, or a protocol header), take the final [`Event::Closed`], and close the
///    socket. If the peer closes the socket first, just drop the connection.
///
/// Every call is accepted in every state; one that does not apply (an answer for a link that
/// is gone, a send after the close) is ignored or refused with an error. Nothing panics on any
/// input, and no input makes the engine hold more than its configured limits allow.
///
/// # Rules
///
/// * **Headers** (amqp-contract §1.1): nothing is written before the client's 8-byte header
///   is read. `AMQP 3 1 0 0` gets the SASL header and the configured mechanisms
///   ([`SaslPolicy`]); `AMQP 0 1 0 0` gets the AMQP header if
///   [`SaslPolicy::allow_no_sasl`], else the SASL header and a close. Anything else gets
///   the hub's preferred header and a close, as the specification asks.
/// * **Handshake**: headers, SASL and OPEN must be done within
///   [`ConnectionConfig::handshake_timeout`].
/// * **Encoding** (§1.2): every performative goes out full width; see
///   [`performative`](crate::performative).
/// * **Sessions and links** (§1.3): the hub answers BEGIN itself. An ATTACH waits for the
///   driver. Accepting answers with non-null termini (echoed or synthesized),
///   `initial-delivery-count` 0 where the hub sends, and, where the peer sends, credit per the
///   window. Refusing answers with a null terminus, then DETACH(closed) with the error. A
///   peer's DETACH and END are answered at once, full width.
/// * **Deliveries**: incoming ones are reassembled up to the link's max message size (beyond:
///   DETACH with `amqp:link:message-size-exceeded`), counted against credit and the session
///   window, and settled by the hub with settled dispositions only, consecutive ones batched.
///   A disposition for a delivery that is over is ignored.
/// * **Timers**: with [`ConnectionConfig::idle_timeout`], a peer silent that long is closed
///   with `amqp:resource-limit-exceeded` (the clock stops while the engine does not read).
///   The hub sends an empty frame when it has sent nothing for half the peer's idle timeout.
/// * **Violations** close the connection with the matching condition
///   (`amqp:decode-error`, `amqp:connection:framing-error`, `amqp:invalid-field`,
///   `amqp:not-allowed`, `amqp:session:window-violation`, …).
#[derive(Debug)]
pub struct Connection {
    config: ConnectionConfig,
    state: State,
    out: Output,
    counters: Counters,
    /// When the handshake must be done; `None` once open (or not representable).
    handshake_deadline: Option<Instant>,
    /// When the peer last sent a frame (or the engine last stopped not reading).
    last_received: Instant,
    /// Backpressure just ended: the idle clock restarts at the next `now`.
    resume_idle: bool,
}

#[derive(Debug)]
enum State {
    /// Waiting for the client's protocol header.
    ExpectHeader,
    /// SASL header and mechanisms sent; waiting for sasl-init.
    SaslInit,
    /// [`Event::SaslInit`] emitted; waiting for the driver's outcome. Input is not read.
    SaslAuthenticating {
        mechanism: Symbol,
    },
    /// SASL succeeded; waiting for the AMQP header.
    ExpectAmqpHeader {
        mechanism: Symbol,
    },
    /// AMQP headers exchanged; waiting for OPEN.
    ExpectOpen {
        sasl: Option<Symbol>,
    },
    /// OPEN exchanged.
    Opened(Box<Opened>),
    Closed,
}

/// Whether a step consumed input.
enum Progress {
    Consumed,
    NeedMore,
}

impl Connection {
    /// A connection accepted at `now` (after TLS, which the driver terminates). The handshake
    /// must be done by `now + handshake_timeout`.
    pub fn new(now: Instant, config: ConnectionConfig) -> Self {
        Self {
            handshake_deadline: now.checked_add(config.handshake_timeout),
            config,
            state: State::ExpectHeader,
            out: Output::new(now),
            counters: Counters::default(),
            last_received: now,
            resume_idle: false,
        }
    }

    /// Consumes the complete protocol headers and frames at the front of `buf`, answering
    /// what the engine answers itself and emitting events for the rest. Stops when `buf` holds
    /// no complete header or frame, or when [`wants_read`](Self::wants_read) turns false.
    ///
    /// A frame declaring more than [`ConnectionConfig::max_frame_size`] closes the connection
    /// as soon as its size is read.
    pub fn handle_input(&mut self, now: Instant, buf: &mut BytesMut) {
        self.tick(now);
        while self.wants_read() {
            match self.step(buf) {
                Progress::Consumed => self.last_received = now,
                Progress::NeedMore => break,
            }
        }
    }

    /// Appends the bytes to send to `buf`; returns how many.
    pub fn poll_transmit(&mut self, buf: &mut BytesMut) -> usize {
        if let Err(e) = self.out.flush() {
            self.fail(e);
        }
        let len = self.out.tx.len();
        if buf.is_empty() {
            mem::swap(buf, &mut self.out.tx);
        } else {
            buf.extend_from_slice(&self.out.tx);
            self.out.tx.clear();
        }
        len
    }

    /// The next event for the driver. [`Event::Closed`] is the last one.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next: the handshake
    /// deadline before OPEN; afterwards the idle deadline (not while the engine does not
    /// read) and the next heartbeat. `None` once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Closed => None,
            State::Opened(opened) => {
                let idle = match self.config.idle_timeout {
                    Some(idle) if !self.backpressured() => self.last_received.checked_add(idle),
                    _ => None,
                };
                let heartbeat = heartbeat_interval(opened.peer_idle_timeout)
                    .and_then(|interval| self.out.last_sent.checked_add(interval));
                match (idle, heartbeat) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            _ => self.handshake_deadline,
        }
    }

    /// Acts on the deadlines that `now` has reached: closes a handshake that took too long or
    /// a peer silent for the idle timeout (`amqp:resource-limit-exceeded`), or queues a
    /// heartbeat.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        let heartbeat = match &self.state {
            State::Closed => return,
            State::Opened(opened) => heartbeat_interval(opened.peer_idle_timeout),
            _ => {
                if self.handshake_deadline.is_some_and(|d| now >= d) {
                    self.fail(AmqpError::new(
                        condition::RESOURCE_LIMIT_EXCEEDED,
                        "the connection handshake did not finish in time",
                    ));
                }
                return;
            }
        };
        if let Some(idle) = self.config.idle_timeout
            && !self.backpressured()
            && self
                .last_received
                .checked_add(idle)
                .is_some_and(|d| now >= d)
        {
            self.fail(AmqpError::new(
                condition::RESOURCE_LIMIT_EXCEEDED,
                format!("no frame received for {} ms", idle.as_millis()),
            ));
            return;
        }
        if let Some(interval) = heartbeat
            && self
                .out
                .last_sent
                .checked_add(interval)
                .is_some_and(|d| now >= d)
        {
            if self.out.is_empty() {
                self.out.heartbeat();
            } else {
                // Output is waiting to be written: that will do.
                self.out.last_sent = now;
            }
        }
    }

    /// Answers [`Event::SaslInit`]. Success lets the client go on to `AMQP 0 1 0 0` and OPEN;
    /// anything else sends the outcome and closes. Ignored unless an answer is awaited.
    pub fn sasl_outcome(&mut self, outcome: SaslOutcome) {
        let State::SaslAuthenticating { mechanism } = &self.state else {
            return;
        };
        let mechanism = mechanism.clone();
        let code = outcome.code;
        if let Err(e) = self.out.sasl(&SaslFrame::Outcome(outcome)) {
            self.fail(e);
            return;
        }
        if code == SaslCode::Ok {
            self.state = State::ExpectAmqpHeader { mechanism };
        } else {
            self.close_with(
                Some(AmqpError::new(
                    condition::UNAUTHORIZED_ACCESS,
                    format!("SASL {mechanism} authentication failed ({code:?})"),
                )),
                false,
            );
        }
    }

    /// Accepts a link the peer attached ([`Event::Attach`]), answering its ATTACH per `reply`
    /// and, where the peer sends, granting credit. Ignored for links that are gone or already
    /// answered.
    pub fn accept_attach(&mut self, link: LinkId, reply: AttachReply) {
        self.answer(|c| c.with_opened((), |opened, ctx| opened.accept_attach(ctx, link, reply)));
    }

    /// Refuses a link the peer attached: an ATTACH with a null terminus, then DETACH(closed)
    /// carrying `error` (amqp-contract §1.3). Ignored for links already answered.
    pub fn refuse_attach(&mut self, link: LinkId, error: AmqpError) {
        self.answer(|c| c.with_opened((), |opened, ctx| opened.refuse_attach(ctx, link, error)));
    }

    /// Settles an incoming delivery ([`Event::Delivery`]) with `state`: accepted, or rejected
    /// with an Azure error (amqp-contract §2.4), released, modified. Sends a settled
    /// DISPOSITION unless the peer had settled the delivery; consecutive settlements with the
    /// same state share one frame. Frees the delivery's slot, which may top up the link's
    /// credit and resume reading. Ignored for unknown deliveries.
    pub fn settle(&mut self, link: LinkId, delivery: DeliveryId, state: DeliveryState) {
        self.answer(|c| c.with_opened((), |opened, ctx| opened.settle(ctx, link, delivery, state)));
    }

    /// Sends a delivery on a link where the hub is the sender: one TRANSFER, or several with
    /// `more` set when `payload` exceeds the peer's max frame size. Consumes one credit.
    ///
    /// `tag` is the delivery tag (at most 32 bytes; C# wants a 16-byte GUID for C2D and
    /// feedback, amqp-contract §4.4). `settled` sends it pre-settled (no disposition comes
    /// back); otherwise [`Event::Disposition`] reports the peer's outcome. `message_format`
    /// is 0 for a plain message. `payload` is an encoded [`Message`](crate::message::Message).
    ///
    /// When the peer's session window cannot take every frame, the rest goes out as the
    /// window reopens; meanwhile the session takes no other delivery
    /// ([`SendError::SessionBusy`]) and [`credit`](Self::credit) is 0.
    pub fn send(
        &mut self,
        link: LinkId,
        tag: Bytes,
        settled: bool,
        message_format: u32,
        payload: Bytes,
    ) -> Result<DeliveryId, SendError> {
        self.with_opened(Err(SendError::NotOpen), |opened, ctx| {
            opened.send(ctx, link, tag, settled, message_format, payload)
        })
    }

    /// How many deliveries [`send`](Self::send) may send on `link` now: the peer's credit, or
    /// 0 while the session is still sending an earlier delivery, or for a link where the hub
    /// does not send.
    pub fn credit(&self, link: LinkId) -> u32 {
        match &self.state {
            State::Opened(opened) => opened.credit(link),
            _ => 0,
        }
    }

    /// Grants the peer `credit` more deliveries on a link where it sends (for links with
    /// manual credit, [`AttachReply::credit_window`] 0; with a window it adds to it).
    pub fn grant_credit(&mut self, link: LinkId, credit: u32) {
        self.with_opened((), |opened, ctx| opened.grant_credit(ctx, link, credit));
    }

    /// Completes the peer's drain request ([`Event::Credit`] with `drain`): the credit left is
    /// given back (spent without deliveries) and the peer is told. Call it after sending what
    /// was available. Ignored unless the peer asked.
    pub fn drain(&mut self, link: LinkId) {
        self.with_opened((), |opened, ctx| opened.drain(ctx, link));
    }

    /// Detaches a link from the hub's side with DETACH(closed) and `error` (an unknown node, a
    /// stolen Event Hubs receiver, an expired token). An unanswered link is refused. Its
    /// unsettled deliveries are forgotten. No [`Event::Detached`] follows.
    pub fn detach(&mut self, link: LinkId, error: Option<AmqpError>) {
        self.answer(|c| c.with_opened((), |opened, ctx| opened.detach(ctx, link, error)));
    }

    /// Ends a session from the hub's side with END and `error`; its links are gone at once.
    /// No events follow for it.
    pub fn end_session(&mut self, session: SessionId, error: Option<AmqpError>) {
        self.answer(|c| c.with_opened((), |opened, ctx| opened.end_session(ctx, session, error)));
    }

    /// Closes the connection from the hub's side: CLOSE with `error` once open (OPEN then
    /// CLOSE while the client's OPEN is awaited), nothing before the AMQP header. Emits the
    /// final [`Event::Closed`]. Ignored once closed.
    pub fn close(&mut self, error: Option<AmqpError>) {
        self.close_with(error, false);
    }

    /// Whether the driver should read and pass more input. False while SASL waits for the
    /// driver's outcome, while [`ConnectionConfig::max_unsettled_incoming`] deliveries await
    /// [`settle`](Self::settle) or [`ConnectionConfig::max_pending_attaches`] ATTACHes await
    /// an answer (backpressure), and once closed.
    pub fn wants_read(&self) -> bool {
        match self.state {
            State::Closed | State::SaslAuthenticating { .. } => false,
            _ => !self.backpressured(),
        }
    }

    /// Whether the connection is over. The driver still writes what
    /// [`poll_transmit`](Self::poll_transmit) yields and reads the events.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whether OPEN was exchanged and the connection is not closed.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Opened(_))
    }

    /// How many incoming deliveries await [`settle`](Self::settle).
    pub fn unsettled_incoming(&self) -> usize {
        self.counters.unsettled_incoming
    }

    /// How many deliveries the hub sent unsettled await the peer's outcome.
    pub fn unsettled_outgoing(&self) -> usize {
        self.counters.unsettled_outgoing
    }

    /// Gives back the memory of the output buffer and event queue while they are empty, so
    /// that an idle connection holds none.
    pub fn release_idle_memory(&mut self) {
        if self.out.tx.is_empty() {
            self.out.tx = BytesMut::new();
        }
        if self.out.events.is_empty() {
            self.out.events = Default::default();
        }
    }

    /// The configuration the connection was created with.
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    fn backpressured(&self) -> bool {
        self.counters.unsettled_incoming >= self.config.max_unsettled_incoming.max(1)
            || self.counters.pending_attaches >= self.config.max_pending_attaches.max(1)
    }

    /// Runs an answer of the driver's; if it ends backpressure, the idle clock restarts at
    /// the next `now`.
    fn answer(&mut self, f: impl FnOnce(&mut Self)) {
        let was_full = self.backpressured();
        f(self);
        if was_full && !self.backpressured() {
            self.resume_idle = true;
        }
    }

    /// Records `now`; while the engine does not read, the idle clock stands still.
    fn tick(&mut self, now: Instant) {
        self.out.now = now;
        if self.resume_idle || self.backpressured() {
            self.last_received = now;
            self.resume_idle = false;
        }
    }

    /// Runs `f` on the open connection, closing it if `f` reports a violation. Returns
    /// `default` when not open or on a violation.
    fn with_opened<T>(
        &mut self,
        default: T,
        f: impl FnOnce(&mut Opened, &mut Ctx<'_>) -> Result<T, AmqpError>,
    ) -> T {
        let State::Opened(opened) = &mut self.state else {
            return default;
        };
        let mut ctx = Ctx {
            config: &self.config,
            out: &mut self.out,
            counters: &mut self.counters,
        };
        match f(opened, &mut ctx) {
            Ok(value) => value,
            Err(error) => {
                self.fail(error);
                default
            }
        }
    }

    /// Handles the next header or frame in `buf`, if complete.
    fn step(&mut self, buf: &mut BytesMut) -> Progress {
        match &self.state {
            State::ExpectHeader | State::ExpectAmqpHeader { .. } => self.header(buf),
            State::SaslInit | State::ExpectOpen { .. } | State::Opened(_) => {
                let max = self.config.max_frame_size.max(MIN_MAX_FRAME_SIZE);
                match Frame::decode(buf, max) {
                    Ok(Some(frame)) => {
                        self.frame(frame);
                        Progress::Consumed
                    }
                    Ok(None) => Progress::NeedMore,
                    Err(e) => {
                        self.fail(AmqpError::new(e.condition(), e.to_string()));
                        Progress::NeedMore
                    }
                }
            }
            State::SaslAuthenticating { .. } | State::Closed => Progress::NeedMore,
        }
    }

    /// The header the hub answers an unacceptable one with before closing.
    fn preferred_header(&self) -> [u8; 8] {
        if self.config.sasl.mechanisms.is_empty() {
            AMQP_HEADER
        } else {
            SASL_HEADER
        }
    }

    fn header(&mut self, buf: &mut BytesMut) -> Progress {
        let header = match ProtocolHeader::read(buf) {
            Ok(Some(header)) => header,
            Ok(None) => return Progress::NeedMore,
            Err(e) => {
                let preferred = self.preferred_header();
                self.out.raw(&preferred);
                self.close_with(
                    Some(AmqpError::new(condition::FRAMING_ERROR, e.to_string())),
                    false,
                );
                return Progress::NeedMore;
            }
        };
        buf.advance(AMQP_HEADER.len());
        let state = mem::replace(&mut self.state, State::Closed);
        let refusal = match (state, header) {
            (State::ExpectHeader, ProtocolHeader::Sasl)
                if !self.config.sasl.mechanisms.is_empty() =>
            {
                self.out.raw(&SASL_HEADER);
                let mechanisms = SaslFrame::Mechanisms(SaslMechanisms {
                    mechanisms: self.config.sasl.mechanisms.clone(),
                });
                if let Err(e) = self.out.sasl(&mechanisms) {
                    self.state = State::SaslInit;
                    self.fail(e);
                    return Progress::Consumed;
                }
                self.state = State::SaslInit;
                return Progress::Consumed;
            }
            (State::ExpectHeader, ProtocolHeader::Amqp) if self.config.sasl.allow_no_sasl => {
                self.out.raw(&AMQP_HEADER);
                self.state = State::ExpectOpen { sasl: None };
                return Progress::Consumed;
            }
            (State::ExpectAmqpHeader { mechanism }, ProtocolHeader::Amqp) => {
                self.out.raw(&AMQP_HEADER);
                self.state = State::ExpectOpen {
                    sasl: Some(mechanism),
                };
                return Progress::Consumed;
            }
            (State::ExpectHeader, ProtocolHeader::Sasl) => {
                self.out.raw(&AMQP_HEADER);
                "SASL is not offered"
            }
            (State::ExpectHeader, ProtocolHeader::Amqp) => {
                self.out.raw(&SASL_HEADER);
                "SASL is required"
            }
            (State::ExpectAmqpHeader { .. }, _) => {
                self.out.raw(&AMQP_HEADER);
                "after SASL only AMQP 0 1 0 0 may follow"
            }
            (_, _) => {
                let preferred = self.preferred_header();
                self.out.raw(&preferred);
                "unsupported protocol header"
            }
        };
        self.state = State::ExpectHeader;
        self.close_with(
            Some(AmqpError::new(condition::NOT_IMPLEMENTED, refusal)),
            false,
        );
        Progress::Consumed
    }

    fn frame(&mut self, frame: Frame) {
        match (&self.state, frame.frame_type) {
            (State::SaslInit, FrameType::Sasl) => self.sasl_frame(frame.body),
            (State::SaslInit, FrameType::Amqp) | (_, FrameType::Sasl) => {
                self.fail(AmqpError::new(
                    condition::FRAMING_ERROR,
                    "frame of the wrong type for the connection's phase",
                ));
            }
            // An empty frame is a heartbeat: it only resets the idle clock.
            (_, FrameType::Amqp) if frame.body.is_empty() => {}
            (_, FrameType::Amqp) => match Performative::decode(frame.body) {
                Ok((p, payload)) => self.performative(frame.channel, p, payload),
                Err(e) => self.fail(AmqpError::new(e.condition(), e.to_string())),
            },
        }
    }

    fn sasl_frame(&mut self, body: Bytes) {
        let init = match SaslFrame::decode(body) {
            Ok(SaslFrame::Init(init)) => init,
            Ok(_) => {
                return self.fail(AmqpError::new(condition::NOT_ALLOWED, "expected sasl-init"));
            }
            Err(e) => return self.fail(AmqpError::new(e.condition(), e.to_string())),
        };
        if !self.config.sasl.mechanisms.contains(&init.mechanism) {
            let _ = self
                .out
                .sasl(&SaslFrame::Outcome(SaslOutcome::auth_failed()));
            return self.fail(AmqpError::new(
                condition::UNAUTHORIZED_ACCESS,
                format!("SASL mechanism {} is not offered", init.mechanism),
            ));
        }
        self.state = State::SaslAuthenticating {
            mechanism: init.mechanism.clone(),
        };
        self.out.event(Event::SaslInit {
            mechanism: init.mechanism,
            initial_response: init.initial_response,
            hostname: init.hostname,
        });
    }

    fn performative(&mut self, channel: u16, p: Performative, payload: Bytes) {
        match (&mut self.state, p) {
            (_, Performative::Close(close)) => self.close_with(close.error, true),
            (State::ExpectOpen { sasl }, Performative::Open(open)) => {
                let sasl = sasl.take();
                self.open(open, sasl);
            }
            (State::ExpectOpen { .. }, p) => self.fail(AmqpError::new(
                condition::NOT_ALLOWED,
                format!("{} before OPEN", p.name()),
            )),
            (State::Opened(_), p) => {
                self.with_opened((), |opened, ctx| opened.handle(ctx, channel, p, payload));
            }
            _ => {}
        }
    }

    /// The client's OPEN: answer it, and the connection is up.
    fn open(&mut self, open: Open, sasl: Option<Symbol>) {
        self.out.peer_max_frame_size = open.max_frame_size.max(MIN_MAX_FRAME_SIZE);
        let peer_idle = open
            .idle_time_out
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(ms.into()));
        if let Err(e) = self.out.frame(0, &Performative::Open(self.our_open())) {
            self.state = State::ExpectOpen { sasl };
            return self.fail(e);
        }
        self.state = State::Opened(Box::new(Opened::new(open.channel_max, peer_idle)));
        self.handshake_deadline = None;
        self.out.event(Event::Opened {
            container_id: open.container_id,
            hostname: open.hostname,
            sasl_mechanism: sasl,
            properties: open.properties,
        });
    }

    fn our_open(&self) -> Open {
        Open {
            container_id: self.config.container_id.clone(),
            hostname: None,
            max_frame_size: self.config.max_frame_size.max(MIN_MAX_FRAME_SIZE),
            channel_max: self.config.channel_max,
            idle_time_out: self
                .config
                .idle_timeout
                .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }
    }

    /// Closes for a violation or timeout of the hub's finding.
    fn fail(&mut self, error: AmqpError) {
        self.close_with(Some(error), false);
    }

    /// Enters `Closed` once: sends what the phase allows (CLOSE once open, OPEN and CLOSE
    /// while OPEN is awaited, nothing earlier) and emits the final event.
    fn close_with(&mut self, error: Option<AmqpError>, by_peer: bool) {
        let state = mem::replace(&mut self.state, State::Closed);
        let send_open = match state {
            State::Closed => {
                self.state = State::Closed;
                return;
            }
            State::ExpectOpen { .. } => true,
            State::Opened(_) => false,
            _ => {
                self.finish_close(error, by_peer);
                return;
            }
        };
        if send_open {
            let _ = self.out.frame(0, &Performative::Open(self.our_open()));
        }
        // The peer's CLOSE is answered without an error; the hub's carries its own.
        let sent = if by_peer { None } else { error.clone() };
        let close = |error| Performative::Close(Close { error });
        if self.out.frame(0, &close(sent.clone())).is_err() {
            // Too large for the peer's frames: the condition alone.
            let short = sent.map(|e| AmqpError::condition(e.condition));
            let _ = self.out.frame(0, &close(short));
        }
        self.finish_close(error, by_peer);
    }

    fn finish_close(&mut self, error: Option<AmqpError>, by_peer: bool) {
        self.counters = Counters::default();
        self.handshake_deadline = None;
        self.out.event(Event::Closed { error, by_peer });
    }
}

/// How often the hub must send something for a peer with this idle timeout: half of it, but
/// never more often than [`MIN_HEARTBEAT_INTERVAL`].
fn heartbeat_interval(peer_idle_timeout: Option<Duration>) -> Option<Duration> {
    peer_idle_timeout.map(|t| (t / 2).max(MIN_HEARTBEAT_INTERVAL))
}
