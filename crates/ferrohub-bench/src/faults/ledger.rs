//! The fault runner's book of every message: how often each was sent, whether the hub
//! acknowledged it (PUBACK, HTTP 204) and in which cycle, and how many copies readers found in
//! the event log. The verdicts come from here:
//!
//! * **lost**: acknowledged, yet not in the log once readers reached the log's end. Never
//!   allowed: an acknowledgement promises durability.
//! * **duplicate**: found more than once. Allowed up to the number of times the device sent it
//!   (a device resends what was not acknowledged, and the first copy may have been stored before
//!   the hub died); a copy beyond that is **unexplained**: the hub stored something twice.
//! * **unknown**: an event that is not a message of this run, names a message never sent, or
//!   carries another device's id. Never allowed.
//!
//! Messages are identified by the stamp at the start of their payload (run id, device index,
//! message number), the same [`Stamp`] the end-to-end workload uses.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use bytes::Bytes;
use ferrohub_api::EventData;
use serde::Serialize;

use crate::publish::Stamp;

/// The system property naming the device that sent an event.
const DEVICE_ID_PROPERTY: &str = "iothub-connection-device-id";

/// Bytes of a message payload: the stamp, then filler.
pub fn payload(run: u64, device: usize, k: u32, sent_unix_ns: u64, len: usize) -> Bytes {
    let mut body = vec![0u8; len.max(Stamp::LEN)];
    Stamp {
        run,
        seq: seq(device, k),
        sent_unix_ns,
        in_window: true,
    }
    .write(&mut body);
    Bytes::from(body)
}

/// The stamp's sequence field for message `k` of device `device`.
fn seq(device: usize, k: u32) -> u64 {
    ((device as u64) << 32) | u64::from(k)
}

/// What the book keeps per message (8 bytes, so a few million messages fit easily).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    /// Transmissions (first send and resends), saturating.
    sends: u16,
    /// Copies found by the incremental readers, saturating.
    copies: u16,
    /// 0: not acknowledged; else the cycle it was acknowledged in, plus one.
    acked_in: u32,
}

/// A message that was acknowledged and is not in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LostMessage {
    /// The device's id.
    pub device: String,
    /// The message's number on that device (from 0).
    pub message: u32,
    /// How often it was sent.
    pub sends: u16,
    /// The cycle in which its acknowledgement arrived.
    pub acked_in_cycle: u32,
}

/// Why an event was not counted as one of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unknown {
    /// No stamp at the start of the body, or an unreadable body.
    NotStamped,
    /// A stamp of another run.
    OtherRun(u64),
    /// A device index or message number that was never sent.
    NeverSent {
        /// Device index.
        device: usize,
        /// Message number.
        message: u32,
    },
    /// The hub says another device sent it.
    WrongDevice {
        /// The device the stamp names.
        expected: String,
        /// The device the hub stamped.
        found: Option<String>,
    },
}

impl std::fmt::Display for Unknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unknown::NotStamped => f.write_str("an event without this runner's stamp"),
            Unknown::OtherRun(run) => write!(f, "an event of another run ({run:#x})"),
            Unknown::NeverSent { device, message } => {
                write!(f, "message {message} of device {device}, never sent")
            }
            Unknown::WrongDevice { expected, found } => write!(
                f,
                "an event of {expected} attributed by the hub to {}",
                found.as_deref().unwrap_or("no device")
            ),
        }
    }
}

/// What the incremental readers saw of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The first copy of a message.
    First,
    /// Another copy, `explained` when the device sent it at least as often.
    Duplicate {
        /// Whether the device's resends account for it.
        explained: bool,
    },
    /// Not one of ours.
    Unknown(Unknown),
}

/// The book of one fleet's messages.
#[derive(Debug)]
pub struct Ledger {
    run: u64,
    ids: Vec<String>,
    books: Vec<Mutex<Vec<Entry>>>,
    acked: AtomicU64,
    sends: AtomicU64,
    duplicates: AtomicU64,
    unexplained: AtomicU64,
    unknown: AtomicU64,
    first_unknown: Mutex<Option<String>>,
}

/// The book at one moment: what was acknowledged and which of those were not found yet.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Messages acknowledged so far.
    pub acked: u64,
    /// Acknowledged and not found yet: `(device, message)`.
    pub unfound: Vec<(usize, u32)>,
}

/// The outcome of reading the whole log back and comparing it with the book.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Messages acknowledged.
    pub acknowledged: u64,
    /// Of those, found in the log.
    pub found: u64,
    /// Acknowledged and not in the log (must be 0).
    pub lost: u64,
    /// The first lost messages.
    pub lost_messages: Vec<LostMessage>,
    /// Messages sent and never acknowledged (allowed to be missing or present).
    pub unacknowledged: u64,
    /// Of those, present in the log (stored, but the acknowledgement never arrived).
    pub unacknowledged_present: u64,
    /// Messages found more than once.
    pub duplicated_messages: u64,
    /// Copies beyond the first, in total.
    pub duplicates: u64,
    /// Copies beyond the number of sends (must be 0).
    pub unexplained_duplicates: u64,
    /// Messages sent more than once (resent after a broken connection).
    pub resent_messages: u64,
    /// Events that are not messages of this run (must be 0).
    pub unknown: u64,
    /// The first unknown event, described.
    pub first_unknown: Option<String>,
    /// Events read.
    pub events_read: u64,
}

/// Most lost messages listed one by one.
const LOST_LISTED: usize = 50;

impl Ledger {
    /// A book for run `run` and the devices `ids` (index = position).
    pub fn new(run: u64, ids: Vec<String>) -> Ledger {
        let books = ids.iter().map(|_| Mutex::new(Vec::new())).collect();
        Ledger {
            run,
            ids,
            books,
            acked: AtomicU64::new(0),
            sends: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            unexplained: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            first_unknown: Mutex::new(None),
        }
    }

    /// The run id every stamp carries.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// Device `device`'s id.
    pub fn device_id(&self, device: usize) -> &str {
        self.ids.get(device).map_or("?", String::as_str)
    }

    /// How many devices the book covers.
    pub fn devices(&self) -> usize {
        self.ids.len()
    }

    fn book(&self, device: usize) -> Option<std::sync::MutexGuard<'_, Vec<Entry>>> {
        // A panic while holding the lock cannot leave an entry half written (plain copies).
        self.books
            .get(device)
            .map(|m| m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Notes a transmission of message `k` (its first send or a resend). Called before the
    /// bytes leave, so a reader can never find a copy of a message the book has not seen sent.
    pub fn sent(&self, device: usize, k: u32) {
        if let Some(mut book) = self.book(device) {
            let i = k as usize;
            if book.len() <= i {
                book.resize(i + 1, Entry::default());
            }
            book[i].sends = book[i].sends.saturating_add(1);
            self.sends.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Notes the hub's acknowledgement of message `k`, received in cycle `cycle`.
    pub fn acked(&self, device: usize, k: u32, cycle: u32) {
        if let Some(mut book) = self.book(device)
            && let Some(e) = book.get_mut(k as usize)
            && e.acked_in == 0
        {
            e.acked_in = cycle.saturating_add(1);
            self.acked.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Messages acknowledged so far.
    pub fn acked_total(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Transmissions so far.
    pub fn sends_total(&self) -> u64 {
        self.sends.load(Ordering::Relaxed)
    }

    /// Copies beyond the first seen by the incremental readers so far.
    pub fn duplicates_total(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Copies beyond the sends seen by the incremental readers so far (must stay 0).
    pub fn unexplained_total(&self) -> u64 {
        self.unexplained.load(Ordering::Relaxed)
    }

    /// Unknown events seen by the incremental readers so far (must stay 0), and the first.
    pub fn unknown_total(&self) -> (u64, Option<String>) {
        let first = self
            .first_unknown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        (self.unknown.load(Ordering::Relaxed), first)
    }

    /// Which message `event` is, or why it is not one of ours.
    pub fn identify(&self, event: &EventData) -> Result<(usize, u32), Unknown> {
        let body = if event.body_encoding == "base64" {
            base64::engine::general_purpose::STANDARD
                .decode(&event.body)
                .map_err(|_| Unknown::NotStamped)?
        } else {
            event.body.as_bytes().to_vec()
        };
        let stamp = Stamp::read(&body).ok_or(Unknown::NotStamped)?;
        if stamp.run != self.run {
            return Err(Unknown::OtherRun(stamp.run));
        }
        let device = usize::try_from(stamp.seq >> 32).unwrap_or(usize::MAX);
        let k = (stamp.seq & 0xffff_ffff) as u32;
        let Some(expected) = self.ids.get(device) else {
            return Err(Unknown::NeverSent { device, message: k });
        };
        let found = event
            .system_properties
            .get(DEVICE_ID_PROPERTY)
            .and_then(|v| v.as_str());
        if found != Some(expected.as_str()) {
            return Err(Unknown::WrongDevice {
                expected: expected.clone(),
                found: found.map(str::to_owned),
            });
        }
        let sent = self
            .book(device)
            .and_then(|b| b.get(k as usize).map(|e| e.sends > 0))
            .unwrap_or(false);
        if !sent {
            return Err(Unknown::NeverSent { device, message: k });
        }
        Ok((device, k))
    }

    /// Counts one event the incremental readers read.
    pub fn observe(&self, event: &EventData) -> Observation {
        match self.identify(event) {
            Ok((device, k)) => {
                let Some(mut book) = self.book(device) else {
                    return Observation::Unknown(Unknown::NeverSent { device, message: k });
                };
                let Some(e) = book.get_mut(k as usize) else {
                    return Observation::Unknown(Unknown::NeverSent { device, message: k });
                };
                e.copies = e.copies.saturating_add(1);
                if e.copies == 1 {
                    return Observation::First;
                }
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                let explained = e.copies <= e.sends;
                if !explained {
                    self.unexplained.fetch_add(1, Ordering::Relaxed);
                }
                Observation::Duplicate { explained }
            }
            Err(why) => {
                self.note_unknown(&why);
                Observation::Unknown(why)
            }
        }
    }

    fn note_unknown(&self, why: &Unknown) {
        self.unknown.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first_unknown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if first.is_none() {
            *first = Some(why.to_string());
        }
    }

    /// The acknowledged messages and, of those, the ones readers have not found yet.
    pub fn scan(&self) -> Scan {
        let mut scan = Scan::default();
        for device in 0..self.ids.len() {
            let Some(book) = self.book(device) else {
                continue;
            };
            for (k, e) in book.iter().enumerate() {
                if e.acked_in != 0 {
                    scan.acked += 1;
                    if e.copies == 0 {
                        scan.unfound.push((device, k as u32));
                    }
                }
            }
        }
        scan
    }

    /// Of `candidates` (from [`Ledger::scan`]), those still not found: lost, once the readers
    /// have read past every acknowledged message.
    pub fn still_unfound(&self, candidates: &[(usize, u32)]) -> Vec<LostMessage> {
        let mut lost = Vec::new();
        for &(device, k) in candidates {
            let Some(book) = self.book(device) else {
                continue;
            };
            if let Some(e) = book.get(k as usize)
                && e.copies == 0
            {
                lost.push(LostMessage {
                    device: self.device_id(device).to_owned(),
                    message: k,
                    sends: e.sends,
                    acked_in_cycle: e.acked_in.saturating_sub(1),
                });
            }
        }
        lost
    }

    /// Compares a complete re-read of the log (`tally`) with the book.
    pub fn verify(&self, tally: &Tally) -> Verification {
        let mut v = Verification {
            unknown: tally.unknown,
            first_unknown: tally.first_unknown.clone(),
            events_read: tally.events,
            ..Verification::default()
        };
        for device in 0..self.ids.len() {
            let Some(book) = self.book(device) else {
                continue;
            };
            let copies = tally.copies.get(device);
            for (k, e) in book.iter().enumerate() {
                if e.sends == 0 {
                    continue;
                }
                let n = copies.and_then(|c| c.get(k)).copied().unwrap_or(0);
                if e.sends > 1 {
                    v.resent_messages += 1;
                }
                if e.acked_in != 0 {
                    v.acknowledged += 1;
                    if n == 0 {
                        v.lost += 1;
                        if v.lost_messages.len() < LOST_LISTED {
                            v.lost_messages.push(LostMessage {
                                device: self.device_id(device).to_owned(),
                                message: k as u32,
                                sends: e.sends,
                                acked_in_cycle: e.acked_in - 1,
                            });
                        }
                    } else {
                        v.found += 1;
                    }
                } else {
                    v.unacknowledged += 1;
                    if n > 0 {
                        v.unacknowledged_present += 1;
                    }
                }
                if n > 1 {
                    v.duplicated_messages += 1;
                    v.duplicates += u64::from(n - 1);
                }
                if n > e.sends {
                    v.unexplained_duplicates += u64::from(n - e.sends);
                }
            }
        }
        v
    }
}

/// Copies of each message found by one complete re-read of the log, kept apart from the
/// incremental readers' counts so that the final verdict depends on nothing read earlier.
#[derive(Debug, Default)]
pub struct Tally {
    copies: Vec<Vec<u16>>,
    unknown: u64,
    first_unknown: Option<String>,
    events: u64,
}

impl Tally {
    /// An empty tally for `devices` devices.
    pub fn new(devices: usize) -> Tally {
        Tally {
            copies: vec![Vec::new(); devices],
            ..Tally::default()
        }
    }

    /// Counts one event.
    pub fn add(&mut self, ledger: &Ledger, event: &EventData) {
        self.events += 1;
        match ledger.identify(event) {
            Ok((device, k)) => {
                if let Some(c) = self.copies.get_mut(device) {
                    let i = k as usize;
                    if c.len() <= i {
                        c.resize(i + 1, 0);
                    }
                    c[i] = c[i].saturating_add(1);
                }
            }
            Err(why) => {
                self.unknown += 1;
                if self.first_unknown.is_none() {
                    self.first_unknown = Some(why.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn event(ledger: &Ledger, device: usize, k: u32, hub_says: &str) -> EventData {
        let body = payload(ledger.run(), device, k, 1, 64);
        EventData {
            system_properties: BTreeMap::from([(
                DEVICE_ID_PROPERTY.to_owned(),
                serde_json::Value::String(hub_says.to_owned()),
            )]),
            body: base64::engine::general_purpose::STANDARD.encode(&body),
            body_encoding: "base64".into(),
            ..EventData::default()
        }
    }

    fn ledger() -> Ledger {
        Ledger::new(0xfeed, vec!["d0".into(), "d1".into()])
    }

    #[test]
    fn acknowledged_and_found_is_not_lost() {
        let l = ledger();
        l.sent(0, 0);
        l.acked(0, 0, 3);
        assert_eq!(l.scan().unfound, vec![(0, 0)]);
        assert_eq!(l.observe(&event(&l, 0, 0, "d0")), Observation::First);
        let scan = l.scan();
        assert_eq!(scan.acked, 1);
        assert!(scan.unfound.is_empty());
        assert!(l.still_unfound(&[(0, 0)]).is_empty());
    }

    #[test]
    fn acknowledged_and_missing_is_lost_with_its_cycle() {
        let l = ledger();
        l.sent(1, 0);
        l.sent(1, 1);
        l.sent(1, 1);
        l.acked(1, 1, 7);
        let scan = l.scan();
        assert_eq!(scan.unfound, vec![(1, 1)]);
        assert_eq!(
            l.still_unfound(&scan.unfound),
            vec![LostMessage {
                device: "d1".into(),
                message: 1,
                sends: 2,
                acked_in_cycle: 7
            }]
        );
        let v = l.verify(&Tally::new(2));
        assert_eq!((v.acknowledged, v.found, v.lost), (1, 0, 1));
        assert_eq!(v.unacknowledged, 1);
        assert_eq!(v.resent_messages, 1);
    }

    #[test]
    fn duplicates_are_explained_by_resends_only() {
        let l = ledger();
        l.sent(0, 0);
        l.sent(0, 0);
        let e = event(&l, 0, 0, "d0");
        assert_eq!(l.observe(&e), Observation::First);
        assert_eq!(l.observe(&e), Observation::Duplicate { explained: true });
        assert_eq!(l.observe(&e), Observation::Duplicate { explained: false });
        assert_eq!(l.duplicates_total(), 2);
        assert_eq!(l.unexplained_total(), 1);
        let mut t = Tally::new(2);
        for _ in 0..3 {
            t.add(&l, &e);
        }
        let v = l.verify(&t);
        assert_eq!(v.duplicated_messages, 1);
        assert_eq!(v.duplicates, 2);
        assert_eq!(v.unexplained_duplicates, 1);
        assert_eq!(v.unacknowledged_present, 1);
    }

    #[test]
    fn strangers_are_unknown() {
        let l = ledger();
        l.sent(0, 0);
        // Never sent.
        assert!(matches!(
            l.observe(&event(&l, 0, 5, "d0")),
            Observation::Unknown(Unknown::NeverSent {
                device: 0,
                message: 5
            })
        ));
        // A device index beyond the fleet.
        assert!(matches!(
            l.observe(&event(&l, 9, 0, "d9")),
            Observation::Unknown(Unknown::NeverSent { device: 9, .. })
        ));
        // Attributed to another device by the hub.
        assert!(matches!(
            l.observe(&event(&l, 0, 0, "d1")),
            Observation::Unknown(Unknown::WrongDevice { .. })
        ));
        // Another run.
        let other = Ledger::new(1, vec!["d0".into()]);
        other.sent(0, 0);
        assert_eq!(
            l.observe(&event(&other, 0, 0, "d0")),
            Observation::Unknown(Unknown::OtherRun(1))
        );
        // No stamp.
        let plain = EventData {
            body: "hello".into(),
            body_encoding: "text".into(),
            ..EventData::default()
        };
        assert_eq!(l.observe(&plain), Observation::Unknown(Unknown::NotStamped));
        let (n, first) = l.unknown_total();
        assert_eq!(n, 5);
        assert!(first.expect("first").contains("never sent"));
    }

    #[test]
    fn acknowledgements_count_once() {
        let l = ledger();
        l.sent(0, 2);
        l.acked(0, 2, 0);
        l.acked(0, 2, 1);
        assert_eq!(l.acked_total(), 1);
        // An acknowledgement for a message never sent is ignored.
        l.acked(0, 9, 0);
        assert_eq!(l.acked_total(), 1);
        assert_eq!(l.sends_total(), 1);
    }
}
