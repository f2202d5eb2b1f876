//! Messages in flight in both directions: QoS 1 telemetry waiting to become durable before its
//! PUBACK, and QoS 1 PUBLISHes sent by the hub waiting for the client's PUBACK.

use std::collections::{BTreeSet, VecDeque};

use crate::session::TelemetryId;

/// QoS 1 telemetry between its arrival and its PUBACK, in arrival order.
///
/// Invariants: ids strictly increase from front to back (they are handed out in arrival order),
/// so lookups by id are binary searches; an entry leaves only from the front, once it and every
/// entry before it are durable, so PUBACKs go out in arrival order even if the storage reports
/// durability out of order. MQTT allows any order, but per-connection order is what clients
/// expect and costs nothing here.
#[derive(Debug)]
pub(crate) struct TelemetryWindow {
    entries: VecDeque<Pending>,
    max: usize,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    id: TelemetryId,
    pkid: u16,
    durable: bool,
}

/// Packet identifiers of QoS 1 PUBLISHes the hub sent and the client has not acknowledged.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    in_flight: BTreeSet<u16>,
    /// Where the search for a free identifier starts; cycling makes a just-freed identifier the
    /// last to be reused, which keeps a late PUBACK from matching a new message.
    next: u16,
}

// === impl TelemetryWindow ===

impl TelemetryWindow {
    /// A window that counts as full at `max` entries (at least 1).
    pub(crate) fn new(max: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Adds a message. The caller checks [`Self::contains_pkid`] first and hands out increasing
    /// ids.
    pub(crate) fn push(&mut self, id: TelemetryId, pkid: u16) {
        self.entries.push_back(Pending {
            id,
            pkid,
            durable: false,
        });
    }

    /// Whether a message with this packet identifier still waits for its PUBACK: a PUBLISH
    /// with the same identifier is then a redelivery, since the client may not reuse an
    /// identifier before it is acknowledged [MQTT-2.3.1-2].
    pub(crate) fn contains_pkid(&self, pkid: u16) -> bool {
        self.entries.iter().any(|p| p.pkid == pkid)
    }

    /// Whether `id` waits for durability (known and not yet durable).
    pub(crate) fn is_pending(&self, id: TelemetryId) -> bool {
        self.find(id)
            .and_then(|i| self.entries.get(i))
            .is_some_and(|p| !p.durable)
    }

    /// Marks `id` durable. Returns false if it is unknown (QoS 0, already acknowledged, or never
    /// handed out).
    pub(crate) fn mark_durable(&mut self, id: TelemetryId) -> bool {
        match self.find(id).and_then(|i| self.entries.get_mut(i)) {
            Some(p) => {
                p.durable = true;
                true
            }
            None => false,
        }
    }

    /// The packet identifier of the oldest message, if it is durable; removes it.
    pub(crate) fn pop_durable(&mut self) -> Option<u16> {
        if self.entries.front()?.durable {
            self.entries.pop_front().map(|p| p.pkid)
        } else {
            None
        }
    }

    /// Whether the window is full, so that reading should pause.
    pub(crate) fn is_full(&self) -> bool {
        self.entries.len() >= self.max
    }

    /// How many messages wait for durability or for an earlier one.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn find(&self, id: TelemetryId) -> Option<usize> {
        self.entries.binary_search_by_key(&id, |p| p.id).ok()
    }
}

// === impl Outbound ===

impl Outbound {
    /// Reserves a free packet identifier, or `None` if all 65535 are in flight.
    pub(crate) fn allocate(&mut self) -> Option<u16> {
        if self.in_flight.len() >= usize::from(u16::MAX) {
            return None;
        }
        // At most 65535 steps, and only when nearly every identifier is taken.
        loop {
            self.next = self.next.checked_add(1).unwrap_or(1);
            if self.in_flight.insert(self.next) {
                return Some(self.next);
            }
        }
    }

    /// Frees `pkid`; returns whether it was in flight.
    pub(crate) fn acknowledge(&mut self, pkid: u16) -> bool {
        self.in_flight.remove(&pkid)
    }

    /// How many PUBLISHes wait for a PUBACK.
    pub(crate) fn len(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubacks_leave_in_arrival_order() {
        let mut w = TelemetryWindow::new(3);
        w.push(TelemetryId(1), 10);
        w.push(TelemetryId(2), 20);
        w.push(TelemetryId(3), 30);
        assert!(w.is_full());
        assert!(w.mark_durable(TelemetryId(2)));
        assert_eq!(w.pop_durable(), None, "1 is not durable yet");
        assert!(w.is_pending(TelemetryId(1)));
        assert!(!w.is_pending(TelemetryId(2)));
        assert!(w.mark_durable(TelemetryId(1)));
        assert_eq!(w.pop_durable(), Some(10));
        assert_eq!(w.pop_durable(), Some(20));
        assert_eq!(w.pop_durable(), None);
        assert!(!w.is_full());
        assert!(w.contains_pkid(30));
        assert!(!w.contains_pkid(10));
        assert!(!w.mark_durable(TelemetryId(1)), "already acknowledged");
        assert!(!w.mark_durable(TelemetryId(9)), "unknown");
    }

    #[test]
    fn zero_window_holds_one() {
        let mut w = TelemetryWindow::new(0);
        assert!(!w.is_full());
        w.push(TelemetryId(1), 1);
        assert!(w.is_full());
    }

    #[test]
    fn packet_ids_cycle_and_skip_those_in_flight() {
        let mut o = Outbound::default();
        assert_eq!(o.allocate(), Some(1));
        assert_eq!(o.allocate(), Some(2));
        assert!(o.acknowledge(1));
        assert!(!o.acknowledge(1));
        assert_eq!(o.allocate(), Some(3));
        o.next = u16::MAX - 1;
        assert_eq!(o.allocate(), Some(u16::MAX));
        assert_eq!(o.allocate(), Some(1), "wraps past 0");
        assert_eq!(o.allocate(), Some(4), "skips 2 and 3, still in flight");
        assert_eq!(o.len(), 5);
    }

    #[test]
    fn packet_ids_run_out() {
        let mut o = Outbound::default();
        for _ in 0..u16::MAX {
            assert!(o.allocate().is_some());
        }
        assert_eq!(o.allocate(), None);
        assert!(o.acknowledge(777));
        assert_eq!(o.allocate(), Some(777));
    }
}
