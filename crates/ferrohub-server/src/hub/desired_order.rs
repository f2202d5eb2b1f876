//! Desired-property notifications in version order on a cluster node.
//!
//! On one hub the registry's listener queues an identity's desired patches in the order the
//! twin changed. In a cluster, concurrent writes to one twin go through several nodes, and each
//! node publishes its own patch to the node holding the device's connection: two patches from
//! two nodes can arrive in either order, and a device that saw `$version` 8 before 7 would
//! apply 7's change last. The node holding the connection therefore hands patches to the
//! connection in version order: a patch that comes before its predecessor waits, and is sent
//! once the predecessor arrives or, at the latest, after [`HOLD`] (the predecessor's
//! notification may be lost: core NATS delivers at most once, and the device then reads the
//! twin as after a reconnect).
//!
//! The state is sans-IO: every call takes `now`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::connections::Identity;

/// How long a patch waits for its predecessor.
pub(crate) const HOLD: Duration = Duration::from_millis(500);

/// Patches of one identity: the next version expected, and those that came early.
#[derive(Debug, Default)]
struct Stream {
    next: Option<u64>,
    early: BTreeMap<u64, Bytes>,
    /// When the oldest patch in `early` started waiting.
    waiting_since: Option<Instant>,
}

impl Stream {
    /// Takes every patch from `next` on that has arrived, in order.
    fn drain_ready(&mut self, out: &mut Vec<(u64, Bytes)>) {
        while let Some(next) = self.next {
            match self.early.remove(&next) {
                Some(body) => {
                    out.push((next, body));
                    self.next = Some(next + 1);
                }
                None => break,
            }
        }
        if self.early.is_empty() {
            self.waiting_since = None;
        }
    }
}

/// What [`DesiredOrder::offer`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Offered {
    /// Patches to send now, in this order.
    pub(crate) send: Vec<(u64, Bytes)>,
    /// The patch waits for its predecessor: call [`DesiredOrder::expire`] after [`HOLD`].
    pub(crate) held: bool,
}

/// The order of desired patches per identity connected to this node.
#[derive(Debug, Default)]
pub(crate) struct DesiredOrder {
    streams: HashMap<Identity, Stream>,
}

impl DesiredOrder {
    /// Patch `version` of `identity` arrived. The first patch of an identity is sent at once;
    /// later ones in version order. A version already sent is dropped.
    pub(crate) fn offer(
        &mut self,
        identity: &Identity,
        version: u64,
        body: Bytes,
        now: Instant,
    ) -> Offered {
        let stream = self.streams.entry(identity.clone()).or_default();
        let mut send = Vec::new();
        match stream.next {
            Some(next) if version < next => {}
            Some(next) if version > next => {
                stream.early.insert(version, body);
                stream.waiting_since.get_or_insert(now);
                return Offered { send, held: true };
            }
            _ => {
                send.push((version, body));
                stream.next = Some(version + 1);
                stream.drain_ready(&mut send);
            }
        }
        Offered { send, held: false }
    }

    /// Sends what waited [`HOLD`] or longer: the missing predecessors are given up, and every
    /// patch from the oldest waiting one on goes in order. Returns the patches per identity.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(Identity, Vec<(u64, Bytes)>)> {
        let mut out = Vec::new();
        for (identity, stream) in &mut self.streams {
            let Some(since) = stream.waiting_since else {
                continue;
            };
            if now.duration_since(since) < HOLD {
                continue;
            }
            let mut send = Vec::new();
            if let Some((&first, _)) = stream.early.first_key_value() {
                stream.next = Some(first);
            }
            stream.drain_ready(&mut send);
            // A gap after the ones sent: those wait again, from now.
            if !stream.early.is_empty() {
                stream.waiting_since = Some(now);
            }
            out.push((identity.clone(), send));
        }
        out
    }

    /// Forgets `identity` (it is not connected here any more, or its connection is new and
    /// reads its twin afresh).
    pub(crate) fn forget(&mut self, identity: &Identity) {
        self.streams.remove(identity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrohub_types::DeviceId;

    fn id() -> Identity {
        (DeviceId::new("d").expect("a valid id"), None)
    }

    fn versions(sent: &[(u64, Bytes)]) -> Vec<u64> {
        sent.iter().map(|(v, _)| *v).collect()
    }

    #[test]
    fn patches_in_order_pass_and_an_early_one_waits_for_its_predecessor() {
        let mut order = DesiredOrder::default();
        let t = Instant::now();
        let b = Bytes::from_static(b"{}");
        assert_eq!(versions(&order.offer(&id(), 2, b.clone(), t).send), [2]);
        assert_eq!(versions(&order.offer(&id(), 3, b.clone(), t).send), [3]);
        let early = order.offer(&id(), 5, b.clone(), t);
        assert!(early.held && early.send.is_empty());
        assert_eq!(versions(&order.offer(&id(), 4, b.clone(), t).send), [4, 5]);
        // A version already sent (a duplicate) is dropped.
        assert!(order.offer(&id(), 4, b.clone(), t).send.is_empty());
        assert!(order.expire(t + HOLD).is_empty());
    }

    #[test]
    fn a_lost_predecessor_is_given_up_after_the_hold() {
        let mut order = DesiredOrder::default();
        let t = Instant::now();
        let b = Bytes::from_static(b"{}");
        order.offer(&id(), 7, b.clone(), t);
        assert!(order.offer(&id(), 9, b.clone(), t).held);
        assert!(order.offer(&id(), 10, b.clone(), t).held);
        assert!(order.expire(t + HOLD / 2).is_empty());
        let expired = order.expire(t + HOLD);
        assert_eq!(expired.len(), 1);
        assert_eq!(versions(&expired[0].1), [9, 10]);
        // 8 comes after all: too late, dropped; 11 passes.
        assert!(order.offer(&id(), 8, b.clone(), t + HOLD).send.is_empty());
        assert_eq!(versions(&order.offer(&id(), 11, b, t + HOLD).send), [11]);
    }

    #[test]
    fn a_forgotten_identity_starts_afresh() {
        let mut order = DesiredOrder::default();
        let t = Instant::now();
        let b = Bytes::from_static(b"{}");
        order.offer(&id(), 7, b.clone(), t);
        order.forget(&id());
        assert_eq!(versions(&order.offer(&id(), 3, b, t).send), [3]);
    }
}
