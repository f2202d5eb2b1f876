//! Who reads each partition of each consumer group over the Event Hubs protocol, and the
//! epoch (owner level) rules between them (amqp-contract §3.7).
//!
//! A receiver with an epoch takes the partition from every receiver with a lower or equal
//! epoch and from every receiver without one: they are told to go ([`Displaced`]). A receiver
//! with a lower epoch than the current owner, or one without an epoch while an epoch receiver
//! exists, is refused. At most [`MAX_READERS`] receivers without an epoch share a partition.
//!
//! In a cluster the rule holds across the nodes: a node announces each epoch receiver it
//! accepts ([`ClusterEvent::ReceiverOwner`]) and its end; every other node displaces its own
//! receivers that the announced one outranks and remembers the highest level held elsewhere,
//! refusing lower receivers while it lasts. Since epochs are totally ordered, two receivers
//! attached at once on two nodes settle on the higher one (both go on a tie).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;

use super::Hub;
use crate::cluster::ClusterEvent;

/// Most receivers without an epoch on one partition of one consumer group.
pub(crate) const MAX_READERS: usize = 5;

/// Why a displaced receiver must go, for its DETACH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Displaced(pub(crate) String);

/// Why a receiver may not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReaderRefusal {
    /// An epoch receiver holds the partition (`amqp:link:stolen`).
    Stolen(String),
    /// Too many receivers without an epoch (`amqp:resource-limit-exceeded`).
    TooMany(String),
}

struct Reader {
    id: u64,
    epoch: Option<i64>,
    go: oneshot::Sender<Displaced>,
}

/// The receivers of every (consumer group, partition).
#[derive(Default)]
pub(crate) struct Readers {
    next_id: AtomicU64,
    by_partition: Mutex<Partitions>,
}

#[derive(Default)]
struct Partitions {
    local: HashMap<(String, u32), Vec<Reader>>,
    /// The highest owner level held by a receiver on another node, and that node.
    elsewhere: HashMap<(String, u32), (String, i64)>,
}

/// Why a receiver with `old` epoch goes for one with epoch `new`.
fn displaced_why(new: i64, old: Option<i64>) -> Displaced {
    Displaced(match old {
        Some(o) => format!(
            "New receiver with higher epoch of '{new}' is created hence current receiver with \
             epoch '{o}' is getting disconnected. If you are recreating the receiver, make sure \
             a higher epoch is used."
        ),
        None => format!(
            "New receiver with epoch of '{new}' is created hence current non-epoch receiver is \
             getting disconnected."
        ),
    })
}

/// A registered receiver; dropping it does not unregister (call [`Readers::leave`]).
#[derive(Debug)]
pub(crate) struct ReaderTicket {
    pub(crate) id: u64,
    key: (String, u32),
    epoch: Option<i64>,
}

impl Readers {
    /// Registers a receiver of `partition` in `group` (canonical name) with `epoch`, displacing
    /// the receivers it outranks, or refuses it. The receiver resolves when a newer receiver
    /// displaces this one.
    pub(crate) fn join(
        &self,
        group: &str,
        partition: u32,
        epoch: Option<i64>,
    ) -> Result<(ReaderTicket, oneshot::Receiver<Displaced>), ReaderRefusal> {
        let key = (group.to_ascii_lowercase(), partition);
        let mut all = self
            .by_partition
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let all = &mut *all;
        let elsewhere = all.elsewhere.get(&key).map(|(_, e)| *e);
        let readers = all.local.entry(key.clone()).or_default();
        let owner = readers
            .iter()
            .filter_map(|r| r.epoch)
            .chain(elsewhere)
            .max();
        match (epoch, owner) {
            (Some(e), Some(o)) if e < o => {
                return Err(ReaderRefusal::Stolen(format!(
                    "Receiver 'epoch' of '{e}' is lower than the current epoch of '{o}' on this \
                     partition. Reconnect with a higher epoch."
                )));
            }
            (None, Some(o)) => {
                return Err(ReaderRefusal::Stolen(format!(
                    "At least one receiver for the endpoint is created with epoch of '{o}', and so \
                     non-epoch receiver is not allowed. Either reconnect with a higher epoch, or \
                     make sure all epoch receivers are closed or disconnected."
                )));
            }
            (None, None) if readers.len() >= MAX_READERS => {
                return Err(ReaderRefusal::TooMany(format!(
                    "Exceeded the maximum number of allowed receivers per partition in a consumer \
                     group which is {MAX_READERS}."
                )));
            }
            (Some(e), _) => {
                for old in readers.drain(..) {
                    let _ = old.go.send(displaced_why(e, old.epoch));
                }
                all.elsewhere.remove(&key);
            }
            (None, None) => {}
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (go, displaced) = oneshot::channel();
        readers.push(Reader { id, epoch, go });
        Ok((ReaderTicket { id, key, epoch }, displaced))
    }

    /// Unregisters a receiver (its link closed, or it was displaced); returns whether no
    /// receiver of its partition is left here.
    pub(crate) fn leave(&self, ticket: &ReaderTicket) -> bool {
        let mut all = self
            .by_partition
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(readers) = all.local.get_mut(&ticket.key) else {
            return true;
        };
        readers.retain(|r| r.id != ticket.id);
        if readers.is_empty() {
            all.local.remove(&ticket.key);
            return true;
        }
        false
    }

    /// A receiver with owner level `epoch` attached on `node` (another node): the receivers
    /// here that it outranks go, and lower ones are refused while it lasts. An announcement
    /// outranked by a receiver here is ignored (that receiver's own announcement makes the
    /// other node give way).
    pub(crate) fn owner_elsewhere(&self, node: &str, group: &str, partition: u32, epoch: i64) {
        let key = (group.to_ascii_lowercase(), partition);
        let mut all = self
            .by_partition
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let all = &mut *all;
        let here = all
            .local
            .get(&key)
            .and_then(|rs| rs.iter().filter_map(|r| r.epoch).max());
        let there = all.elsewhere.get(&key).map(|(_, e)| *e);
        if here.is_some_and(|h| h > epoch) || there.is_some_and(|t| t > epoch) {
            return;
        }
        if let Some(readers) = all.local.remove(&key) {
            for old in readers {
                let _ = old.go.send(displaced_why(epoch, old.epoch));
            }
        }
        all.elsewhere.insert(key, (node.to_owned(), epoch));
    }

    /// The receiver announced by [`Readers::owner_elsewhere`] is gone.
    pub(crate) fn owner_gone_elsewhere(&self, node: &str, group: &str, partition: u32, epoch: i64) {
        let key = (group.to_ascii_lowercase(), partition);
        let mut all = self
            .by_partition
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if all
            .elsewhere
            .get(&key)
            .is_some_and(|(n, e)| n == node && *e == epoch)
        {
            all.elsewhere.remove(&key);
        }
    }
}

impl Hub {
    /// [`Readers::join`], announcing an accepted epoch receiver to the other nodes.
    pub(crate) fn join_reader(
        &self,
        group: &str,
        partition: u32,
        epoch: Option<i64>,
    ) -> Result<(ReaderTicket, oneshot::Receiver<Displaced>), ReaderRefusal> {
        let joined = self.readers.join(group, partition, epoch)?;
        if let (Some(epoch), true) = (epoch, self.coordinator.is_clustered()) {
            self.coordinator.publish(ClusterEvent::ReceiverOwner {
                node: self.node().to_owned(),
                group: joined.0.key.0.clone(),
                partition,
                epoch,
            });
        }
        Ok(joined)
    }

    /// [`Readers::leave`], announcing the end of an epoch receiver to the other nodes (once
    /// no receiver of its partition is left here: the receivers left hold the level of the
    /// newest epoch receiver, which displaced the older ones).
    pub(crate) fn leave_reader(&self, ticket: &ReaderTicket) {
        let last = self.readers.leave(ticket);
        if let (Some(epoch), true) = (ticket.epoch, last && self.coordinator.is_clustered()) {
            self.coordinator.publish(ClusterEvent::ReceiverOwnerGone {
                node: self.node().to_owned(),
                group: ticket.key.0.clone(),
                partition: ticket.key.1,
                epoch,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_higher_or_equal_epoch_takes_over() {
        let r = Readers::default();
        let (_, mut first) = r.join("$Default", 0, Some(1)).expect("first");
        let (_, mut plain_elsewhere) = r.join("$Default", 1, None).expect("another partition");
        let (_, mut second) = r.join("$default", 0, Some(1)).expect("equal epoch");
        assert!(first.try_recv().is_ok(), "displaced");
        let _third = r.join("$Default", 0, Some(5)).expect("higher epoch");
        assert!(second.try_recv().is_ok());
        assert!(matches!(
            r.join("$Default", 0, Some(4)),
            Err(ReaderRefusal::Stolen(_))
        ));
        assert!(matches!(
            r.join("$Default", 0, None),
            Err(ReaderRefusal::Stolen(_))
        ));
        assert!(plain_elsewhere.try_recv().is_err(), "untouched");
    }

    #[test]
    fn an_epoch_receiver_displaces_plain_ones_and_plain_ones_are_bounded() {
        let r = Readers::default();
        let mut plain: Vec<_> = (0..MAX_READERS)
            .map(|_| r.join("cg", 3, None).expect("plain"))
            .collect();
        assert!(matches!(
            r.join("cg", 3, None),
            Err(ReaderRefusal::TooMany(_))
        ));
        r.leave(&plain[0].0);
        let extra = r.join("cg", 3, None).expect("room again");
        let _owner = r.join("cg", 3, Some(0)).expect("epoch 0");
        for (_, displaced) in plain.iter_mut().skip(1) {
            assert!(displaced.try_recv().is_ok());
        }
        drop(extra);
        // After the owner leaves, plain readers may come back.
        let (owner2, _) = r.join("cg", 3, Some(0)).expect("equal epoch");
        r.leave(&owner2);
        assert!(r.join("cg", 3, None).is_ok());
    }

    #[test]
    fn an_owner_on_another_node_displaces_and_refuses_until_it_goes() {
        let r = Readers::default();
        let (_, mut mine) = r.join("cg", 0, Some(1)).expect("epoch 1 here");
        let (_, mut plain) = r.join("cg", 1, None).expect("plain, another partition");

        // A lower level elsewhere is ignored: this node's receiver wins.
        r.owner_elsewhere("b", "CG", 0, 0);
        assert!(mine.try_recv().is_err());

        // A higher or equal level elsewhere takes the partition.
        r.owner_elsewhere("b", "CG", 0, 2);
        let why = mine.try_recv().expect("displaced");
        assert!(why.0.contains("higher epoch of '2'"), "{why:?}");
        r.owner_elsewhere("b", "cg", 1, 0);
        assert!(plain.try_recv().is_ok(), "a plain receiver goes too");
        assert!(matches!(
            r.join("cg", 0, Some(1)),
            Err(ReaderRefusal::Stolen(_))
        ));
        assert!(matches!(
            r.join("cg", 0, None),
            Err(ReaderRefusal::Stolen(_))
        ));

        // The end of another receiver, or of another node's, changes nothing.
        r.owner_gone_elsewhere("b", "cg", 0, 1);
        r.owner_gone_elsewhere("c", "cg", 0, 2);
        assert!(r.join("cg", 0, Some(1)).is_err());

        // Once it goes, the partition is free; a higher level here takes it back at once.
        r.owner_gone_elsewhere("b", "cg", 0, 2);
        let (t, _) = r.join("cg", 0, None).expect("free again");
        r.leave(&t);
        r.owner_elsewhere("b", "cg", 0, 2);
        let _ = r.join("cg", 0, Some(3)).expect("a higher level here");
        assert!(r.join("cg", 0, Some(2)).is_err(), "3 is the owner now");
    }
}
