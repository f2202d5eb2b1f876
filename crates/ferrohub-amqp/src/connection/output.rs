//! What the engine has for the driver: encoded bytes, events, and a disposition being batched.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::BytesMut;

use crate::condition;
use crate::connection::Event;
use crate::frame::{self, MIN_MAX_FRAME_SIZE};
use crate::performative::{
    AmqpError, DeliveryState, Disposition, Performative, Role, SaslFrame, Transfer,
};

/// Encoded output, events, and the clock readings the timers need.
#[derive(Debug)]
pub(crate) struct Output {
    /// Encoded headers and frames not yet taken by the driver.
    pub(crate) tx: BytesMut,
    /// Events not yet taken by the driver.
    pub(crate) events: VecDeque<Event>,
    /// A settled disposition not yet encoded, so that consecutive settlements with the same
    /// state go out as one DISPOSITION with a range.
    pending: Option<PendingDisposition>,
    /// The largest frame the peer accepts: 512 until its OPEN says otherwise.
    pub(crate) peer_max_frame_size: u32,
    /// The latest time the driver passed in.
    pub(crate) now: Instant,
    /// When output was last queued, for heartbeats. Actions without a `now` use the latest
    /// known time, which is never later than the real one: at worst a heartbeat goes out
    /// early.
    pub(crate) last_sent: Instant,
}

#[derive(Debug)]
struct PendingDisposition {
    channel: u16,
    first: u32,
    last: u32,
    state: DeliveryState,
}

impl Output {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            tx: BytesMut::new(),
            events: VecDeque::new(),
            pending: None,
            peer_max_frame_size: MIN_MAX_FRAME_SIZE,
            now,
            last_sent: now,
        }
    }

    pub(crate) fn event(&mut self, event: Event) {
        self.events.push_back(event);
    }

    /// Queues raw bytes: a protocol header or a heartbeat.
    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.tx.extend_from_slice(bytes);
        self.last_sent = self.now;
    }

    /// Queues a heartbeat (an empty frame).
    pub(crate) fn heartbeat(&mut self) {
        frame::encode_heartbeat(&mut self.tx);
        self.last_sent = self.now;
    }

    /// Queues a SASL frame.
    pub(crate) fn sasl(&mut self, body: &SaslFrame) -> Result<(), AmqpError> {
        body.encode_frame(&mut self.tx)
            .map_err(|e| AmqpError::new(condition::INTERNAL_ERROR, e.to_string()))?;
        self.last_sent = self.now;
        Ok(())
    }

    /// Queues a performative without payload on `channel`, after any batched disposition.
    pub(crate) fn frame(&mut self, channel: u16, p: &Performative) -> Result<(), AmqpError> {
        self.flush()?;
        self.encode(channel, p, &[])
    }

    /// Queues a FLOW ahead of the batched disposition, which may then keep growing: credit
    /// and settlements are independent, and a top-up must not cut a batch short.
    pub(crate) fn flow(
        &mut self,
        channel: u16,
        flow: crate::performative::Flow,
    ) -> Result<(), AmqpError> {
        self.encode(channel, &Performative::Flow(flow), &[])
    }

    /// Queues a TRANSFER with (part of) a payload. The caller sized the payload to fit.
    pub(crate) fn transfer(
        &mut self,
        channel: u16,
        transfer: Transfer,
        payload: &[u8],
    ) -> Result<(), AmqpError> {
        self.flush()?;
        self.encode(channel, &Performative::Transfer(transfer), payload)
    }

    /// How many payload bytes fit in one frame after `transfer`.
    pub(crate) fn transfer_room(&self, transfer: &Transfer) -> Result<usize, AmqpError> {
        let mut scratch = BytesMut::new();
        Performative::Transfer(transfer.clone())
            .encode(&mut scratch)
            .map_err(|e| AmqpError::new(condition::INTERNAL_ERROR, e.to_string()))?;
        let overhead = frame::FRAME_HEADER_SIZE + scratch.len();
        (self.peer_max_frame_size as usize)
            .checked_sub(overhead)
            .filter(|room| *room > 0)
            .ok_or_else(|| {
                AmqpError::new(
                    condition::FRAME_SIZE_TOO_SMALL,
                    "a transfer frame does not fit the peer's max-frame-size",
                )
            })
    }

    fn encode(&mut self, channel: u16, p: &Performative, payload: &[u8]) -> Result<(), AmqpError> {
        let start = self.tx.len();
        let size = p
            .encode_frame(channel, payload, &mut self.tx)
            .map_err(|e| AmqpError::new(condition::INTERNAL_ERROR, e.to_string()))?;
        if size > self.peer_max_frame_size as usize {
            self.tx.truncate(start);
            return Err(AmqpError::new(
                condition::FRAME_SIZE_TOO_SMALL,
                format!(
                    "a {} frame of {size} bytes exceeds the peer's max-frame-size {}",
                    p.name(),
                    self.peer_max_frame_size
                ),
            ));
        }
        self.last_sent = self.now;
        Ok(())
    }

    /// Settles incoming delivery `id` on `channel` with `state`: merged into the batched
    /// disposition when it extends its range with the same state, else queued after it.
    pub(crate) fn settle(
        &mut self,
        channel: u16,
        id: u32,
        state: DeliveryState,
    ) -> Result<(), AmqpError> {
        if let Some(p) = &mut self.pending
            && p.channel == channel
            && p.last.wrapping_add(1) == id
            && p.state == state
        {
            p.last = id;
            return Ok(());
        }
        self.flush()?;
        self.pending = Some(PendingDisposition {
            channel,
            first: id,
            last: id,
            state,
        });
        Ok(())
    }

    /// Encodes the batched disposition, if any. A rejection whose error does not fit the
    /// peer's frame size goes out with its condition only.
    pub(crate) fn flush(&mut self) -> Result<(), AmqpError> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let disposition = |state| {
            Performative::Disposition(Disposition {
                role: Role::Receiver,
                first: p.first,
                last: (p.last != p.first).then_some(p.last),
                settled: true,
                state: Some(state),
                batchable: false,
            })
        };
        match self.encode(p.channel, &disposition(p.state.clone()), &[]) {
            Err(e) if e.condition == condition::FRAME_SIZE_TOO_SMALL => {
                let DeliveryState::Rejected { error: Some(error) } = p.state else {
                    return Err(e);
                };
                let state = DeliveryState::Rejected {
                    error: Some(AmqpError::condition(error.condition)),
                };
                self.encode(p.channel, &disposition(state), &[])
            }
            other => other,
        }
    }

    /// Whether nothing waits to be encoded or taken.
    pub(crate) fn is_empty(&self) -> bool {
        self.tx.is_empty() && self.pending.is_none()
    }
}
