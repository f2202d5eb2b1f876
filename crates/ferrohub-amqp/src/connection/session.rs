//! The open phase: sessions and links, their windows, credit and deliveries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::mem;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::condition;
use crate::connection::output::Output;
use crate::connection::{
    AttachReply, ConnectionConfig, DeliveryId, Event, LinkId, SendError, SessionId,
};
use crate::performative::{
    AmqpError, Attach, Begin, DeliveryState, Detach, Disposition, End, Flow, Performative,
    ReceiverSettleMode, Role, SenderSettleMode, Transfer,
};

/// The most a delivery tag may hold (part 2 §2.8.7).
const MAX_TAG_LEN: usize = 32;

/// What every handler may touch besides its session.
pub(crate) struct Ctx<'a> {
    pub(crate) config: &'a ConnectionConfig,
    pub(crate) out: &'a mut Output,
    pub(crate) counters: &'a mut Counters,
}

/// Connection-wide counts.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// The last serial handed out to a session or link.
    serial: u64,
    /// Deliveries announced to the driver and not yet settled by it.
    pub(crate) unsettled_incoming: usize,
    /// Deliveries the hub sent unsettled and the peer has not settled.
    pub(crate) unsettled_outgoing: usize,
    /// ATTACHes announced to the driver and not yet answered.
    pub(crate) pending_attaches: usize,
    /// Bytes held in incoming deliveries still being reassembled.
    reassembly: usize,
}

impl Counters {
    fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }
}

/// The connection once OPEN is exchanged.
#[derive(Debug)]
pub(crate) struct Opened {
    /// The highest channel the peer accepts: the hub's channels stay at or below it.
    peer_channel_max: u16,
    /// Half of this is how often the hub must send something.
    pub(crate) peer_idle_timeout: Option<Duration>,
    /// Sessions by the peer's channel.
    sessions: HashMap<u16, Session>,
    /// The hub's channels in use.
    local_channels: BTreeSet<u16>,
    /// The peer's channels whose session the peer ended: frames still arriving on them (pyamqp
    /// detaches its links after ending their session) are dropped, not treated as violations.
    ended: BTreeSet<u16>,
}

#[derive(Debug)]
struct Session {
    id: SessionId,
    local_channel: u16,
    /// The hub sent END and waits for the peer's; frames for the session are ignored.
    ending: bool,
    /// The transfer id the next incoming transfer frame has.
    next_incoming_id: u32,
    /// Transfer frames the peer may still send before the hub reopens the window.
    incoming_window: u32,
    /// The transfer id of the hub's next transfer frame.
    next_outgoing_id: u32,
    /// Transfer frames the peer can still take.
    remote_incoming_window: u32,
    /// The highest handle the peer accepts.
    peer_handle_max: u32,
    /// The id of the hub's next delivery.
    next_delivery_id: u32,
    /// Links by the peer's handle.
    links: HashMap<u32, Link>,
    /// The hub's handles in use.
    output_handles: BTreeSet<u32>,
    /// Incoming deliveries announced to the driver, by delivery id.
    incoming: BTreeMap<u32, Incoming>,
    /// Outgoing unsettled deliveries, by delivery id.
    outgoing: BTreeMap<u32, Outgoing>,
    /// The rest of a delivery whose frames did not all fit the peer's window. At most one per
    /// session: no more deliveries are taken until it is out.
    partial_out: Option<PartialSend>,
}

#[derive(Debug)]
struct Incoming {
    handle: u32,
    serial: u64,
    /// The peer settled it: the driver's settlement sends no disposition.
    remote_settled: bool,
}

#[derive(Debug)]
struct Outgoing {
    handle: u32,
    serial: u64,
}

#[derive(Debug)]
struct PartialSend {
    handle: u32,
    /// The next frame's TRANSFER, with the hub's handle.
    transfer: Transfer,
    rest: Bytes,
}

#[derive(Debug)]
struct Link {
    id: LinkId,
    output_handle: u32,
    state: LinkState,
    role: HubRole,
}

#[derive(Debug)]
enum LinkState {
    /// The driver has not answered the ATTACH; the peer's is kept to build the reply.
    Pending(Box<Attach>),
    Attached,
    /// The hub sent DETACH and waits for the peer's.
    Detaching,
}

/// What the hub is on the link.
#[derive(Debug)]
enum HubRole {
    Sender(SenderLink),
    Receiver(ReceiverLink),
}

#[derive(Debug)]
struct SenderLink {
    delivery_count: u32,
    credit: u32,
    drain: bool,
    settle_mode: SenderSettleMode,
    /// The peer receiver's mode: with `second` the hub settles after its disposition.
    peer_rcv_mode: ReceiverSettleMode,
    /// The largest message the peer takes, if it said.
    peer_max_message_size: Option<u64>,
}

#[derive(Debug)]
struct ReceiverLink {
    delivery_count: u32,
    credit: u32,
    /// The automatic credit window, 0 for manual credit.
    window: u32,
    /// Deliveries announced to the driver and not settled by it.
    awaiting: u32,
    max_message_size: u64,
    partial: Option<Partial>,
}

/// A delivery whose frames are still arriving.
#[derive(Debug)]
struct Partial {
    delivery_id: u32,
    tag: Bytes,
    message_format: u32,
    settled: bool,
    data: BytesMut,
}

fn violation(condition: crate::types::Symbol, description: impl Into<String>) -> AmqpError {
    AmqpError::new(condition, description)
}

/// The lowest number not in `used` and not above `max`.
fn lowest_free<T: Copy + Ord + TryFrom<u64> + Into<u64>>(used: &BTreeSet<T>, max: T) -> Option<T> {
    let mut candidate: u64 = 0;
    for &n in used {
        if n.into() != candidate {
            break;
        }
        candidate += 1;
    }
    T::try_from(candidate).ok().filter(|c| *c <= max)
}

impl Opened {
    pub(crate) fn new(peer_channel_max: u16, peer_idle_timeout: Option<Duration>) -> Self {
        Self {
            peer_channel_max,
            peer_idle_timeout,
            sessions: HashMap::new(),
            local_channels: BTreeSet::new(),
            ended: BTreeSet::new(),
        }
    }

    /// Handles a performative other than OPEN and CLOSE.
    pub(crate) fn handle(
        &mut self,
        ctx: &mut Ctx<'_>,
        channel: u16,
        p: Performative,
        payload: Bytes,
    ) -> Result<(), AmqpError> {
        if let Performative::Begin(begin) = p {
            self.ended.remove(&channel);
            return self.begin(ctx, channel, begin);
        }
        if self.ended.contains(&channel) && !self.sessions.contains_key(&channel) {
            return Ok(());
        }
        let Some(session) = self.sessions.get_mut(&channel) else {
            return Err(violation(
                condition::NOT_ALLOWED,
                format!("{} on channel {channel}, which has no session", p.name()),
            ));
        };
        match p {
            Performative::Attach(attach) => session.attach(ctx, attach),
            Performative::Flow(flow) => session.flow(ctx, flow),
            Performative::Transfer(transfer) => session.transfer(ctx, transfer, payload),
            Performative::Disposition(d) => session.disposition(ctx, d),
            Performative::Detach(detach) => session.detach(ctx, detach),
            Performative::End(end) => self.end(ctx, channel, end),
            Performative::Open(_) => Err(violation(condition::NOT_ALLOWED, "a second OPEN")),
            Performative::Begin(_) | Performative::Close(_) => Ok(()),
        }
    }

    fn begin(&mut self, ctx: &mut Ctx<'_>, channel: u16, begin: Begin) -> Result<(), AmqpError> {
        if begin.remote_channel.is_some() {
            return Err(violation(
                condition::NOT_ALLOWED,
                "BEGIN answering a session the hub never began",
            ));
        }
        if channel > ctx.config.channel_max {
            return Err(violation(
                condition::FRAMING_ERROR,
                format!(
                    "channel {channel} above channel-max {}",
                    ctx.config.channel_max
                ),
            ));
        }
        if self.sessions.contains_key(&channel) {
            return Err(violation(
                condition::NOT_ALLOWED,
                format!("BEGIN on channel {channel}, which has a session"),
            ));
        }
        if self.sessions.len() >= ctx.config.max_sessions {
            return Err(violation(
                condition::RESOURCE_LIMIT_EXCEEDED,
                format!("more than {} sessions", ctx.config.max_sessions),
            ));
        }
        let local_channel = lowest_free(&self.local_channels, self.peer_channel_max)
            .ok_or_else(|| violation(condition::RESOURCE_LIMIT_EXCEEDED, "no free channel"))?;
        let window = ctx.config.session_window.max(1);
        let session = Session {
            id: SessionId {
                channel,
                serial: ctx.counters.next_serial(),
            },
            local_channel,
            ending: false,
            next_incoming_id: begin.next_outgoing_id,
            incoming_window: window,
            next_outgoing_id: 0,
            remote_incoming_window: begin.incoming_window,
            peer_handle_max: begin.handle_max,
            next_delivery_id: 0,
            links: HashMap::new(),
            output_handles: BTreeSet::new(),
            incoming: BTreeMap::new(),
            outgoing: BTreeMap::new(),
            partial_out: None,
        };
        ctx.out.frame(
            local_channel,
            &Performative::Begin(Begin {
                remote_channel: Some(channel),
                next_outgoing_id: session.next_outgoing_id,
                incoming_window: window,
                outgoing_window: window,
                handle_max: ctx.config.max_links_per_session.saturating_sub(1),
                offered_capabilities: None,
                desired_capabilities: None,
                properties: None,
            }),
        )?;
        self.local_channels.insert(local_channel);
        self.sessions.insert(channel, session);
        Ok(())
    }

    fn end(&mut self, ctx: &mut Ctx<'_>, channel: u16, end: End) -> Result<(), AmqpError> {
        let Some(mut session) = self.sessions.remove(&channel) else {
            return Ok(());
        };
        self.local_channels.remove(&session.local_channel);
        self.ended.insert(channel);
        if session.ending {
            return Ok(());
        }
        ctx.out
            .frame(session.local_channel, &Performative::End(End::default()))?;
        session.forget_all(ctx, true);
        ctx.out.event(Event::SessionEnded {
            session: session.id,
            error: end.error,
            by_peer: true,
        });
        Ok(())
    }

    /// Ends a session from the hub's side.
    pub(crate) fn end_session(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: SessionId,
        error: Option<AmqpError>,
    ) -> Result<(), AmqpError> {
        let Some(session) = self.session_mut(id) else {
            return Ok(());
        };
        if session.ending {
            return Ok(());
        }
        ctx.out
            .frame(session.local_channel, &Performative::End(End { error }))?;
        session.ending = true;
        session.forget_all(ctx, false);
        Ok(())
    }

    fn session_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        self.sessions
            .get_mut(&id.channel)
            .filter(|s| s.id == id && !s.ending)
    }

    /// The link's session and handle, if the link exists and is not being detached.
    fn link(&mut self, id: LinkId) -> Option<&mut Session> {
        self.session_mut(id.session).filter(|s| {
            s.links
                .get(&id.handle)
                .is_some_and(|l| l.id == id && !matches!(l.state, LinkState::Detaching))
        })
    }

    pub(crate) fn accept_attach(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: LinkId,
        reply: AttachReply,
    ) -> Result<(), AmqpError> {
        match self.link(id) {
            Some(session) => session.accept(ctx, id.handle, reply),
            None => Ok(()),
        }
    }

    pub(crate) fn refuse_attach(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: LinkId,
        error: AmqpError,
    ) -> Result<(), AmqpError> {
        match self.link(id) {
            Some(session) if session.is_pending(id.handle) => {
                session.refuse(ctx, id.handle, Some(error))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn detach(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: LinkId,
        error: Option<AmqpError>,
    ) -> Result<(), AmqpError> {
        match self.link(id) {
            Some(session) if session.is_pending(id.handle) => session.refuse(ctx, id.handle, error),
            Some(session) => session.detach_link(ctx, id.handle, error, false),
            None => Ok(()),
        }
    }

    pub(crate) fn settle(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: LinkId,
        delivery: DeliveryId,
        state: DeliveryState,
    ) -> Result<(), AmqpError> {
        match self.link(id) {
            Some(session) => session.settle(ctx, id, delivery.0, state),
            None => Ok(()),
        }
    }

    pub(crate) fn send(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: LinkId,
        tag: Bytes,
        settled: bool,
        message_format: u32,
        payload: Bytes,
    ) -> Result<Result<DeliveryId, SendError>, AmqpError> {
        match self.link(id) {
            Some(session) => session.send(ctx, id.handle, tag, settled, message_format, payload),
            None => Ok(Err(SendError::UnknownLink)),
        }
    }

    pub(crate) fn credit(&self, id: LinkId) -> u32 {
        let Some(session) = self.sessions.get(&id.session.channel) else {
            return 0;
        };
        if session.id != id.session || session.ending || session.partial_out.is_some() {
            return 0;
        }
        match session.links.get(&id.handle) {
            Some(Link {
                id: link_id,
                state: LinkState::Attached,
                role: HubRole::Sender(s),
                ..
            }) if *link_id == id => s.credit,
            _ => 0,
        }
    }

    pub(crate) fn grant_credit(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: LinkId,
        credit: u32,
    ) -> Result<(), AmqpError> {
        let Some(session) = self.link(id) else {
            return Ok(());
        };
        let Some(link) = session.links.get_mut(&id.handle) else {
            return Ok(());
        };
        match (&link.state, &mut link.role) {
            (LinkState::Attached, HubRole::Receiver(r)) if credit > 0 => {
                r.credit = r.credit.saturating_add(credit);
                session.link_flow(ctx, id.handle, false)
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn drain(&mut self, ctx: &mut Ctx<'_>, id: LinkId) -> Result<(), AmqpError> {
        let Some(session) = self.link(id) else {
            return Ok(());
        };
        let Some(link) = session.links.get_mut(&id.handle) else {
            return Ok(());
        };
        match (&link.state, &mut link.role) {
            (LinkState::Attached, HubRole::Sender(s)) if s.drain => {
                s.delivery_count = s.delivery_count.wrapping_add(s.credit);
                s.credit = 0;
                let flow = session.link_flow(ctx, id.handle, false);
                if let Some(Link {
                    role: HubRole::Sender(s),
                    ..
                }) = session.links.get_mut(&id.handle)
                {
                    s.drain = false;
                }
                flow
            }
            _ => Ok(()),
        }
    }
}

impl Session {
    fn is_pending(&self, handle: u32) -> bool {
        self.links
            .get(&handle)
            .is_some_and(|l| matches!(l.state, LinkState::Pending(_)))
    }

    fn attach(&mut self, ctx: &mut Ctx<'_>, attach: Box<Attach>) -> Result<(), AmqpError> {
        if self.ending {
            return Ok(());
        }
        let handle_max = ctx.config.max_links_per_session.saturating_sub(1);
        if attach.handle > handle_max || ctx.config.max_links_per_session == 0 {
            return Err(violation(
                condition::FRAMING_ERROR,
                format!("handle {} above handle-max {handle_max}", attach.handle),
            ));
        }
        if self.links.contains_key(&attach.handle) {
            return Err(violation(
                condition::HANDLE_IN_USE,
                format!("handle {} is in use", attach.handle),
            ));
        }
        let output_handle =
            lowest_free(&self.output_handles, self.peer_handle_max).ok_or_else(|| {
                violation(
                    condition::RESOURCE_LIMIT_EXCEEDED,
                    "no handle left within the peer's handle-max",
                )
            })?;
        let role = match attach.role {
            Role::Receiver => HubRole::Sender(SenderLink {
                delivery_count: 0,
                credit: 0,
                drain: false,
                settle_mode: attach.snd_settle_mode,
                peer_rcv_mode: attach.rcv_settle_mode,
                peer_max_message_size: attach.max_message_size.filter(|m| *m > 0),
            }),
            // .NET omits initial-delivery-count; read it as 0 (amqp-contract §5.8).
            Role::Sender => HubRole::Receiver(ReceiverLink {
                delivery_count: attach.initial_delivery_count.unwrap_or(0),
                credit: 0,
                window: 0,
                awaiting: 0,
                max_message_size: ctx.config.max_message_size,
                partial: None,
            }),
        };
        let id = LinkId {
            session: self.id,
            handle: attach.handle,
            serial: ctx.counters.next_serial(),
        };
        self.output_handles.insert(output_handle);
        self.links.insert(
            attach.handle,
            Link {
                id,
                output_handle,
                state: LinkState::Pending(attach.clone()),
                role,
            },
        );
        ctx.counters.pending_attaches += 1;
        ctx.out.event(Event::Attach { link: id, attach });
        Ok(())
    }

    fn accept(
        &mut self,
        ctx: &mut Ctx<'_>,
        handle: u32,
        reply: AttachReply,
    ) -> Result<(), AmqpError> {
        let blocked = self.partial_out.is_some();
        let Some(link) = self.links.get_mut(&handle) else {
            return Ok(());
        };
        if !matches!(link.state, LinkState::Pending(_)) {
            return Ok(());
        }
        let LinkState::Pending(peer) = mem::replace(&mut link.state, LinkState::Attached) else {
            return Ok(());
        };
        ctx.counters.pending_attaches -= 1;
        let peer = *peer;
        let hub_sends = matches!(link.role, HubRole::Sender(_));
        let snd_settle_mode = reply.snd_settle_mode.unwrap_or(peer.snd_settle_mode);
        let max_message_size = reply
            .max_message_size
            .unwrap_or(ctx.config.max_message_size);
        let answer = Attach {
            name: peer.name,
            handle: link.output_handle,
            role: peer.role.opposite(),
            snd_settle_mode,
            rcv_settle_mode: reply.rcv_settle_mode,
            source: Some(reply.source.or(peer.source).unwrap_or_default()),
            target: Some(reply.target.or(peer.target).unwrap_or_default()),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: hub_sends.then_some(0),
            max_message_size: Some(max_message_size),
            offered_capabilities: reply.offered_capabilities,
            desired_capabilities: reply.desired_capabilities,
            properties: Some(reply.properties),
        };
        ctx.out
            .frame(self.local_channel, &Performative::Attach(Box::new(answer)))?;
        let id = link.id;
        match &mut link.role {
            HubRole::Sender(s) => {
                s.settle_mode = snd_settle_mode;
                if s.credit > 0 || s.drain {
                    let (credit, drain) = (if blocked { 0 } else { s.credit }, s.drain);
                    ctx.out.event(Event::Credit {
                        link: id,
                        credit,
                        drain,
                    });
                }
                Ok(())
            }
            HubRole::Receiver(r) => {
                let limit = ctx.config.max_message_size;
                r.max_message_size = match max_message_size {
                    0 => limit,
                    m => m.min(limit),
                };
                r.window = reply.credit_window.unwrap_or(ctx.config.credit_window);
                if r.window > 0 {
                    r.credit = r.window;
                    self.link_flow(ctx, handle, false)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Refuses a pending link (amqp-contract §1.3): an ATTACH whose local terminus is null,
    /// then a closing DETACH with the error. The link waits for the peer's DETACH.
    fn refuse(
        &mut self,
        ctx: &mut Ctx<'_>,
        handle: u32,
        error: Option<AmqpError>,
    ) -> Result<(), AmqpError> {
        let Some(link) = self.links.get_mut(&handle) else {
            return Ok(());
        };
        if !matches!(link.state, LinkState::Pending(_)) {
            return Ok(());
        }
        let LinkState::Pending(peer) = mem::replace(&mut link.state, LinkState::Detaching) else {
            return Ok(());
        };
        ctx.counters.pending_attaches -= 1;
        let answer = refusal(*peer, link.output_handle);
        let output_handle = link.output_handle;
        ctx.out
            .frame(self.local_channel, &Performative::Attach(Box::new(answer)))?;
        ctx.out.frame(
            self.local_channel,
            &Performative::Detach(Detach {
                handle: output_handle,
                closed: true,
                error,
            }),
        )
    }

    /// Detaches an attached link from the hub's side: DETACH(closed) with `error`, its
    /// deliveries forgotten, and the link kept until the peer's DETACH. `announce` emits
    /// [`Event::Detached`] (for the engine's own detaches, not the driver's).
    fn detach_link(
        &mut self,
        ctx: &mut Ctx<'_>,
        handle: u32,
        error: Option<AmqpError>,
        announce: bool,
    ) -> Result<(), AmqpError> {
        let Some(link) = self.links.get_mut(&handle) else {
            return Ok(());
        };
        if !matches!(link.state, LinkState::Attached) {
            return Ok(());
        }
        link.state = LinkState::Detaching;
        let (id, output_handle) = (link.id, link.output_handle);
        ctx.out.frame(
            self.local_channel,
            &Performative::Detach(Detach {
                handle: output_handle,
                closed: true,
                error: error.clone(),
            }),
        )?;
        self.forget_deliveries(ctx, handle);
        if announce {
            ctx.out.event(Event::Detached {
                link: id,
                closed: true,
                error,
                by_peer: false,
            });
        }
        Ok(())
    }

    /// The peer's DETACH.
    fn detach(&mut self, ctx: &mut Ctx<'_>, detach: Detach) -> Result<(), AmqpError> {
        if self.ending {
            return Ok(());
        }
        let Some(link) = self.links.get_mut(&detach.handle) else {
            return Err(violation(
                condition::UNATTACHED_HANDLE,
                format!("DETACH of handle {}, which is not attached", detach.handle),
            ));
        };
        let (id, output_handle) = (link.id, link.output_handle);
        match mem::replace(&mut link.state, LinkState::Detaching) {
            LinkState::Detaching => {
                // The answer to the hub's DETACH.
                self.remove_link(ctx, detach.handle);
                return Ok(());
            }
            LinkState::Pending(peer) => {
                // The link was never answered: answer the ATTACH before the DETACH.
                ctx.counters.pending_attaches -= 1;
                ctx.out.frame(
                    self.local_channel,
                    &Performative::Attach(Box::new(refusal(*peer, output_handle))),
                )?;
            }
            LinkState::Attached => {}
        }
        ctx.out.frame(
            self.local_channel,
            &Performative::Detach(Detach {
                handle: output_handle,
                closed: detach.closed,
                error: None,
            }),
        )?;
        self.remove_link(ctx, detach.handle);
        ctx.out.event(Event::Detached {
            link: id,
            closed: detach.closed,
            error: detach.error,
            by_peer: true,
        });
        Ok(())
    }

    /// Forgets a link and everything about it.
    fn remove_link(&mut self, ctx: &mut Ctx<'_>, handle: u32) {
        self.forget_deliveries(ctx, handle);
        if let Some(link) = self.links.remove(&handle) {
            self.output_handles.remove(&link.output_handle);
        }
    }

    /// Forgets the deliveries of a link: those awaiting the driver, those awaiting the peer,
    /// and a half-sent one.
    fn forget_deliveries(&mut self, ctx: &mut Ctx<'_>, handle: u32) {
        let before = self.incoming.len();
        self.incoming.retain(|_, d| d.handle != handle);
        ctx.counters.unsettled_incoming -= before - self.incoming.len();
        let before = self.outgoing.len();
        self.outgoing.retain(|_, d| d.handle != handle);
        ctx.counters.unsettled_outgoing -= before - self.outgoing.len();
        if self
            .partial_out
            .as_ref()
            .is_some_and(|p| p.handle == handle)
        {
            self.partial_out = None;
        }
        if let Some(Link {
            role: HubRole::Receiver(r),
            ..
        }) = self.links.get_mut(&handle)
        {
            if let Some(partial) = r.partial.take() {
                ctx.counters.reassembly -= partial.data.len();
            }
            r.awaiting = 0;
        }
    }

    /// Forgets every link, as when the session ends; `announce` emits their
    /// [`Event::Detached`].
    fn forget_all(&mut self, ctx: &mut Ctx<'_>, announce: bool) {
        ctx.counters.unsettled_incoming -= self.incoming.len();
        ctx.counters.unsettled_outgoing -= self.outgoing.len();
        self.incoming.clear();
        self.outgoing.clear();
        self.partial_out = None;
        let mut links: Vec<Link> = self.links.drain().map(|(_, l)| l).collect();
        links.sort_by_key(|l| l.id);
        for link in &links {
            if matches!(link.state, LinkState::Pending(_)) {
                ctx.counters.pending_attaches -= 1;
            }
            if let HubRole::Receiver(ReceiverLink {
                partial: Some(partial),
                ..
            }) = &link.role
            {
                ctx.counters.reassembly -= partial.data.len();
            }
        }
        self.output_handles.clear();
        if announce {
            for link in links {
                if !matches!(link.state, LinkState::Detaching) {
                    ctx.out.event(Event::Detached {
                        link: link.id,
                        closed: false,
                        error: None,
                        by_peer: true,
                    });
                }
            }
        }
    }

    fn flow(&mut self, ctx: &mut Ctx<'_>, flow: Flow) -> Result<(), AmqpError> {
        if self.ending {
            return Ok(());
        }
        let was_blocked = self.partial_out.is_some();
        // The peer's window as the specification computes it (part 2 §2.5.6); before the peer
        // has seen the hub's BEGIN it counts from the hub's initial outgoing id, 0.
        self.remote_incoming_window = flow
            .next_incoming_id
            .unwrap_or(0)
            .wrapping_add(flow.incoming_window)
            .wrapping_sub(self.next_outgoing_id);
        if let Some(handle) = flow.handle {
            let Some(link) = self.links.get_mut(&handle) else {
                return Err(violation(
                    condition::UNATTACHED_HANDLE,
                    format!("FLOW for handle {handle}, which is not attached"),
                ));
            };
            let id = link.id;
            let attached = matches!(link.state, LinkState::Attached);
            let detaching = matches!(link.state, LinkState::Detaching);
            match &mut link.role {
                _ if detaching => {}
                HubRole::Sender(s) => {
                    // The receiver's view (part 2 §2.6.7): credit counts from its
                    // delivery-count, or from the initial one if it has not seen the ATTACH.
                    let their_count = flow.delivery_count.unwrap_or(0);
                    let limit = their_count.wrapping_add(flow.link_credit.unwrap_or(0));
                    let credit = limit.wrapping_sub(s.delivery_count);
                    // A limit behind the hub's count (the peer lowered its credit below what
                    // is in flight) is no credit, not 4 billion.
                    s.credit = if credit > u32::MAX / 2 { 0 } else { credit };
                    s.drain = flow.drain;
                    if attached {
                        let (credit, drain) = (s.credit, s.drain);
                        let credit = if self.partial_out.is_some() {
                            0
                        } else {
                            credit
                        };
                        ctx.out.event(Event::Credit {
                            link: id,
                            credit,
                            drain,
                        });
                    }
                }
                HubRole::Receiver(r) => {
                    // The sender's delivery-count is authoritative: credit is what is left
                    // of the hub's limit after it.
                    if let Some(count) = flow.delivery_count {
                        let limit = r.delivery_count.wrapping_add(r.credit);
                        let credit = limit.wrapping_sub(count);
                        r.credit = if credit > u32::MAX / 2 { 0 } else { credit };
                        r.delivery_count = count;
                    }
                }
            }
            if flow.echo && attached {
                self.link_flow(ctx, handle, false)?;
            }
        } else if flow.echo {
            self.session_flow(ctx)?;
        }
        self.continue_partial(ctx)?;
        if was_blocked && self.partial_out.is_none() {
            self.announce_credit(ctx, flow.handle);
        }
        Ok(())
    }

    /// After a session could again take a delivery: [`Event::Credit`] for its sending links
    /// that have credit (but `skip`, already announced).
    fn announce_credit(&mut self, ctx: &mut Ctx<'_>, skip: Option<u32>) {
        let mut ready: Vec<(LinkId, u32, bool)> = self
            .links
            .iter()
            .filter(|(handle, _)| Some(**handle) != skip)
            .filter_map(|(_, link)| match (&link.state, &link.role) {
                (LinkState::Attached, HubRole::Sender(s)) if s.credit > 0 => {
                    Some((link.id, s.credit, s.drain))
                }
                _ => None,
            })
            .collect();
        ready.sort();
        for (link, credit, drain) in ready {
            ctx.out.event(Event::Credit {
                link,
                credit,
                drain,
            });
        }
    }

    /// Sends a session-only FLOW.
    fn session_flow(&mut self, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        let flow = self.flow_base(ctx);
        ctx.out.frame(self.local_channel, &Performative::Flow(flow))
    }

    fn flow_base(&self, ctx: &Ctx<'_>) -> Flow {
        Flow {
            next_incoming_id: Some(self.next_incoming_id),
            incoming_window: self.incoming_window,
            next_outgoing_id: self.next_outgoing_id,
            outgoing_window: ctx.config.session_window.max(1),
            ..Flow::default()
        }
    }

    /// Sends a FLOW with the link's state: the credit granted (hub receiving) or left (hub
    /// sending).
    fn link_flow(&mut self, ctx: &mut Ctx<'_>, handle: u32, echo: bool) -> Result<(), AmqpError> {
        let Some(link) = self.links.get(&handle) else {
            return Ok(());
        };
        let (delivery_count, credit, drain, available) = match &link.role {
            HubRole::Sender(s) => (s.delivery_count, s.credit, s.drain, Some(0)),
            HubRole::Receiver(r) => (r.delivery_count, r.credit, false, None),
        };
        let flow = Flow {
            handle: Some(link.output_handle),
            delivery_count: Some(delivery_count),
            link_credit: Some(credit),
            available,
            drain,
            echo,
            ..self.flow_base(ctx)
        };
        ctx.out.flow(self.local_channel, flow)
    }

    fn transfer(
        &mut self,
        ctx: &mut Ctx<'_>,
        transfer: Transfer,
        payload: Bytes,
    ) -> Result<(), AmqpError> {
        if self.ending {
            return Ok(());
        }
        // Session flow control counts frames (part 2 §2.5.6).
        if self.incoming_window == 0 {
            return Err(violation(
                condition::WINDOW_VIOLATION,
                "TRANSFER beyond the session's incoming window",
            ));
        }
        self.incoming_window -= 1;
        self.next_incoming_id = self.next_incoming_id.wrapping_add(1);
        let window = ctx.config.session_window.max(1);
        if self.incoming_window <= window / 2 {
            self.incoming_window = window;
            self.session_flow(ctx)?;
        }

        let handle = transfer.handle;
        let Some(link) = self.links.get_mut(&handle) else {
            return Err(violation(
                condition::UNATTACHED_HANDLE,
                format!("TRANSFER on handle {handle}, which is not attached"),
            ));
        };
        let id = link.id;
        let r = match (&link.state, &mut link.role) {
            (LinkState::Detaching, _) => return Ok(()),
            (LinkState::Pending(_), _) => {
                return Err(violation(
                    condition::TRANSFER_LIMIT_EXCEEDED,
                    "TRANSFER on a link the hub has not attached",
                ));
            }
            (LinkState::Attached, HubRole::Sender(_)) => {
                return Err(violation(
                    condition::NOT_ALLOWED,
                    "TRANSFER from the receiving end of a link",
                ));
            }
            (LinkState::Attached, HubRole::Receiver(r)) => r,
        };

        let mut partial = match r.partial.take() {
            Some(partial) => {
                ctx.counters.reassembly -= partial.data.len();
                if transfer
                    .delivery_id
                    .is_some_and(|d| d != partial.delivery_id)
                {
                    return Err(violation(
                        condition::INVALID_FIELD,
                        "a new delivery-id in the middle of a multi-frame delivery",
                    ));
                }
                partial
            }
            None => {
                let Some(delivery_id) = transfer.delivery_id else {
                    return Err(violation(
                        condition::INVALID_FIELD,
                        "the first TRANSFER of a delivery has no delivery-id",
                    ));
                };
                if r.credit == 0 {
                    let error = violation(
                        condition::TRANSFER_LIMIT_EXCEEDED,
                        "TRANSFER without link credit",
                    );
                    return self.detach_link(ctx, handle, Some(error), true);
                }
                r.credit -= 1;
                r.delivery_count = r.delivery_count.wrapping_add(1);
                Partial {
                    delivery_id,
                    tag: transfer.delivery_tag.clone().unwrap_or_default(),
                    message_format: transfer.message_format.unwrap_or(0),
                    settled: false,
                    data: BytesMut::new(),
                }
            }
        };
        if transfer.aborted {
            return Ok(());
        }
        partial.settled |= transfer.settled == Some(true);
        let size = partial.data.len() as u64 + payload.len() as u64;
        if size > r.max_message_size {
            let error = violation(
                condition::MESSAGE_SIZE_EXCEEDED,
                format!(
                    "message larger than the link's max-message-size {}",
                    r.max_message_size
                ),
            );
            return self.detach_link(ctx, handle, Some(error), true);
        }
        if transfer.more {
            // Every link may be reassembling at once: the connection-wide bound keeps that
            // within the configuration, whatever the links' sizes add up to.
            let held = ctx.counters.reassembly + partial.data.len() + payload.len();
            if held > ctx.config.max_reassembly_bytes {
                let error = violation(
                    condition::RESOURCE_LIMIT_EXCEEDED,
                    "too many bytes of incomplete deliveries on the connection",
                );
                return self.detach_link(ctx, handle, Some(error), true);
            }
            partial.data.extend_from_slice(&payload);
            ctx.counters.reassembly += partial.data.len();
            r.partial = Some(partial);
            return Ok(());
        }
        // Single-frame deliveries keep the frame's memory; only reassembly copies.
        let payload = if partial.data.is_empty() {
            payload
        } else {
            partial.data.extend_from_slice(&payload);
            partial.data.freeze()
        };
        if self.incoming.contains_key(&partial.delivery_id) {
            return Err(violation(
                condition::INVALID_FIELD,
                format!(
                    "delivery-id {} is already in use on the session",
                    partial.delivery_id
                ),
            ));
        }
        r.awaiting += 1;
        self.incoming.insert(
            partial.delivery_id,
            Incoming {
                handle,
                serial: id.serial,
                remote_settled: partial.settled,
            },
        );
        ctx.counters.unsettled_incoming += 1;
        ctx.out.event(Event::Delivery {
            link: id,
            delivery_id: DeliveryId(partial.delivery_id),
            tag: partial.tag,
            settled: partial.settled,
            message_format: partial.message_format,
            payload,
        });
        Ok(())
    }

    fn settle(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: LinkId,
        delivery: u32,
        state: DeliveryState,
    ) -> Result<(), AmqpError> {
        match self.incoming.get(&delivery) {
            Some(d) if d.handle == id.handle && d.serial == id.serial => {}
            _ => return Ok(()),
        }
        let Some(d) = self.incoming.remove(&delivery) else {
            return Ok(());
        };
        ctx.counters.unsettled_incoming -= 1;
        if !d.remote_settled {
            // Always settled (amqp-contract §1.3: uamqp completes a send only on a settled
            // disposition; pyamqp drops unsettled ones).
            ctx.out.settle(self.local_channel, delivery, state)?;
        }
        let Some(Link {
            role: HubRole::Receiver(r),
            ..
        }) = self.links.get_mut(&id.handle)
        else {
            return Ok(());
        };
        r.awaiting = r.awaiting.saturating_sub(1);
        if r.window > 0 {
            // Top up once at least half the window (and at least one) can be granted again.
            let target = r.window.saturating_sub(r.awaiting);
            if target >= r.credit.saturating_add((r.window / 2).max(1)) {
                r.credit = target;
                return self.link_flow(ctx, id.handle, false);
            }
        }
        Ok(())
    }

    fn disposition(&mut self, ctx: &mut Ctx<'_>, d: Disposition) -> Result<(), AmqpError> {
        if self.ending {
            return Ok(());
        }
        let last = d.last.unwrap_or(d.first);
        let ids = match d.role {
            Role::Receiver => ids_in(&self.outgoing, d.first, last),
            Role::Sender => ids_in(&self.incoming, d.first, last),
        };
        match d.role {
            // The peer receives: outcomes of what the hub sent.
            Role::Receiver => {
                for delivery in ids {
                    let Some(out) = self.outgoing.get(&delivery) else {
                        continue;
                    };
                    let Some(link) = self
                        .links
                        .get(&out.handle)
                        .filter(|l| l.id.serial == out.serial)
                    else {
                        continue;
                    };
                    let link_id = link.id;
                    let second = matches!(
                        &link.role,
                        HubRole::Sender(s) if s.peer_rcv_mode == ReceiverSettleMode::Second
                    );
                    let terminal = d.state.as_ref().is_some_and(DeliveryState::is_terminal);
                    let settle_here = !d.settled && second && terminal;
                    if d.settled || settle_here {
                        self.outgoing.remove(&delivery);
                        ctx.counters.unsettled_outgoing -= 1;
                    }
                    if settle_here {
                        ctx.out.frame(
                            self.local_channel,
                            &Performative::Disposition(Disposition {
                                role: Role::Sender,
                                first: delivery,
                                last: None,
                                settled: true,
                                state: d.state.clone(),
                                batchable: false,
                            }),
                        )?;
                    }
                    ctx.out.event(Event::Disposition {
                        link: link_id,
                        delivery_id: DeliveryId(delivery),
                        state: d.state.clone(),
                        settled: d.settled || settle_here,
                    });
                }
            }
            // The peer sends: it settled deliveries the driver has not answered yet.
            Role::Sender => {
                if d.settled {
                    for delivery in ids {
                        if let Some(incoming) = self.incoming.get_mut(&delivery) {
                            incoming.remote_settled = true;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn send(
        &mut self,
        ctx: &mut Ctx<'_>,
        handle: u32,
        tag: Bytes,
        settled: bool,
        message_format: u32,
        payload: Bytes,
    ) -> Result<Result<DeliveryId, SendError>, AmqpError> {
        let Some(link) = self.links.get_mut(&handle) else {
            return Ok(Err(SendError::UnknownLink));
        };
        let s = match (&link.state, &mut link.role) {
            (LinkState::Attached, HubRole::Sender(s)) => s,
            (LinkState::Attached, HubRole::Receiver(_)) => return Ok(Err(SendError::NotSender)),
            _ => return Ok(Err(SendError::NotAttached)),
        };
        if s.credit == 0 {
            return Ok(Err(SendError::NoCredit));
        }
        if self.partial_out.is_some() {
            return Ok(Err(SendError::SessionBusy));
        }
        if tag.len() > MAX_TAG_LEN {
            return Ok(Err(SendError::TagTooLong(tag.len())));
        }
        if let Some(max) = s.peer_max_message_size
            && payload.len() as u64 > max
        {
            return Ok(Err(SendError::MessageTooLarge {
                size: payload.len(),
                max,
            }));
        }
        if !s.settle_mode.allows(settled) {
            return Ok(Err(SendError::SettleMode));
        }
        if !settled && ctx.counters.unsettled_outgoing >= ctx.config.max_unsettled_outgoing {
            return Ok(Err(SendError::TooManyUnsettled));
        }
        s.credit -= 1;
        s.delivery_count = s.delivery_count.wrapping_add(1);
        let (serial, output_handle) = (link.id.serial, link.output_handle);
        let delivery_id = self.next_delivery_id;
        self.next_delivery_id = self.next_delivery_id.wrapping_add(1);
        if !settled {
            self.outgoing
                .insert(delivery_id, Outgoing { handle, serial });
            ctx.counters.unsettled_outgoing += 1;
        }
        self.partial_out = Some(PartialSend {
            handle,
            transfer: Transfer {
                handle: output_handle,
                delivery_id: Some(delivery_id),
                delivery_tag: Some(tag),
                message_format: Some(message_format),
                settled: Some(settled),
                ..Transfer::default()
            },
            rest: payload,
        });
        self.continue_partial(ctx)?;
        Ok(Ok(DeliveryId(delivery_id)))
    }

    /// Sends frames of the half-sent delivery while the peer's window has room, each as large
    /// as the peer's max-frame-size allows.
    fn continue_partial(&mut self, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        while self.remote_incoming_window > 0 {
            let Some(partial) = &mut self.partial_out else {
                return Ok(());
            };
            // The TRANSFER's size does not depend on `more` (0x41 and 0x42 are one byte).
            let room = ctx.out.transfer_room(&partial.transfer)?;
            let chunk = partial.rest.split_to(room.min(partial.rest.len()));
            let mut transfer = partial.transfer.clone();
            transfer.more = !partial.rest.is_empty();
            let done = !transfer.more;
            ctx.out.transfer(self.local_channel, transfer, &chunk)?;
            self.remote_incoming_window -= 1;
            self.next_outgoing_id = self.next_outgoing_id.wrapping_add(1);
            if done {
                self.partial_out = None;
            }
        }
        Ok(())
    }
}

/// The keys of `map` within the serial-number range `first..=last`, which may wrap around
/// `u32::MAX`. Only existing keys are visited, however wide the peer's range.
fn ids_in<V>(map: &BTreeMap<u32, V>, first: u32, last: u32) -> Vec<u32> {
    if first <= last {
        map.range(first..=last).map(|(k, _)| *k).collect()
    } else {
        map.range(first..)
            .chain(map.range(..=last))
            .map(|(k, _)| *k)
            .collect()
    }
}

/// The ATTACH that refuses `peer`'s link: the hub's terminus null (the source when the hub
/// would send, the target when it would receive), the other echoed or synthesized.
fn refusal(peer: Attach, output_handle: u32) -> Attach {
    let hub_sends = peer.role == Role::Receiver;
    Attach {
        name: peer.name,
        handle: output_handle,
        role: peer.role.opposite(),
        snd_settle_mode: peer.snd_settle_mode,
        rcv_settle_mode: peer.rcv_settle_mode,
        source: if hub_sends {
            None
        } else {
            Some(peer.source.unwrap_or_default())
        },
        target: if hub_sends {
            Some(peer.target.unwrap_or_default())
        } else {
            None
        },
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count: hub_sends.then_some(0),
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}
