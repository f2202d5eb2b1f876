//! Property test: random operation sequences give the same results over both stores (lock
//! tokens aside, which are random), and the queues' invariants hold throughout.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferrohub_c2d::{
    AckMode, C2dConfig, C2dError, C2dQueues, FeedbackBatch, MemoryQueueStore, OutgoingMessage,
    QueueStore, QueuedMessage, SqliteQueueStore,
};
use proptest::prelude::*;

use crate::common::*;

const DEVICES: [&str; 3] = ["d0", "d1", "d2"];

#[derive(Debug, Clone)]
enum Op {
    Send {
        device: usize,
        ack: usize,
        ttl: Option<i64>,
    },
    Receive(usize),
    Settle {
        device: usize,
        token: usize,
        how: u8,
    },
    Purge(usize),
    Delete(usize),
    Sweep,
    ReceiveFeedback,
    SettleFeedback {
        token: usize,
        complete: bool,
    },
    Advance(i64),
}

fn op() -> impl Strategy<Value = Op> {
    let device = 0..DEVICES.len();
    prop_oneof![
        4 => (device.clone(), 0..4usize, proptest::option::of(1..150i64))
            .prop_map(|(device, ack, ttl)| Op::Send { device, ack, ttl }),
        4 => device.clone().prop_map(Op::Receive),
        4 => (device.clone(), 0..8usize, 0..4u8)
            .prop_map(|(device, token, how)| Op::Settle { device, token, how }),
        1 => device.clone().prop_map(Op::Purge),
        1 => device.prop_map(Op::Delete),
        1 => Just(Op::Sweep),
        2 => Just(Op::ReceiveFeedback),
        2 => (0..4usize, any::<bool>())
            .prop_map(|(token, complete)| Op::SettleFeedback { token, complete }),
        3 => (1..90i64).prop_map(Op::Advance),
    ]
}

/// A received message without its lock token: sequence number, delivery count, deliveries,
/// lock expiry, message.
type Received = (u64, u32, u32, Option<DateTime<Utc>>, OutgoingMessage);

/// A feedback record: original message id, device id, status.
type Record = (String, String, String);

/// An outcome with the random lock tokens left out.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Sent(Result<(u64, DateTime<Utc>), C2dError>),
    Received(Result<Option<Received>, C2dError>),
    Unit(Result<(), C2dError>),
    Count(Result<u64, C2dError>),
    Feedback(Result<Option<Vec<Record>>, C2dError>),
    Depths(Vec<u64>),
}

/// One side of the comparison: queues over a store, with the tokens they handed out.
struct Side<S: QueueStore> {
    q: C2dQueues<S>,
    tokens: Vec<(usize, String)>,
    feedback_tokens: Vec<String>,
    seen: BTreeSet<(String, u64, u32)>,
}

fn config() -> C2dConfig {
    C2dConfig {
        max_queue_depth: 3,
        default_ttl: Duration::from_secs(60),
        max_delivery_count: 2,
        feedback_ttl: Duration::from_secs(120),
        feedback_max_delivery_count: 2,
        feedback_batch_size: 2,
        ..C2dConfig::default()
    }
}

impl<S: QueueStore> Side<S> {
    fn new(store: S) -> Self {
        Side {
            q: queues(store, config()),
            tokens: Vec::new(),
            feedback_tokens: Vec::new(),
            seen: BTreeSet::new(),
        }
    }

    fn run(&mut self, op: &Op, now: DateTime<Utc>) -> Outcome {
        let id = |i: usize| did(DEVICES[i]);
        match *op {
            Op::Send { device, ack, ttl } => {
                let m = OutgoingMessage {
                    expiry: ttl.map(|s| now + secs(s)),
                    ..msg(&format!("m{}", now.timestamp()), AckMode::ALL[ack])
                };
                Outcome::Sent(
                    block_on(self.q.send(&id(device), "g", m, now))
                        .map(|m| (m.sequence_number, m.expiry_time)),
                )
            }
            Op::Receive(device) => {
                let r = block_on(self.q.receive(&id(device), now));
                if let Ok(Some(m)) = &r {
                    self.check_received(device, m, now);
                }
                Outcome::Received(r.map(|o| {
                    o.map(|m| {
                        (
                            m.sequence_number,
                            m.delivery_count,
                            m.deliveries,
                            m.locked_until,
                            m.message,
                        )
                    })
                }))
            }
            Op::Settle { device, token, how } => {
                let token = self
                    .tokens
                    .get(token)
                    .map(|(d, t)| (*d, t.clone()))
                    .unwrap_or((device, "unknown".to_owned()));
                let (d, t) = (id(token.0), token.1);
                Outcome::Unit(block_on(async {
                    match how {
                        0 => self.q.complete(&d, &t, now).await,
                        1 => self.q.abandon(&d, &t, now).await,
                        2 => self.q.reject(&d, &t, now).await,
                        _ => self.q.release(&d, &t, now).await,
                    }
                }))
            }
            Op::Purge(device) => Outcome::Count(block_on(self.q.purge(&id(device), now))),
            Op::Delete(device) => {
                // A device created again starts numbering over.
                self.seen.retain(|(d, _, _)| d != DEVICES[device]);
                Outcome::Unit(block_on(self.q.delete_device(&id(device))))
            }
            Op::Sweep => Outcome::Count(block_on(self.q.sweep(now))),
            Op::ReceiveFeedback => {
                let r = block_on(self.q.receive_feedback(now));
                if let Ok(Some(b)) = &r {
                    self.feedback_tokens.push(b.lock_token.clone());
                }
                Outcome::Feedback(r.map(|o| o.map(|b: FeedbackBatch| records(&b))))
            }
            Op::SettleFeedback { token, complete } => {
                let t = self
                    .feedback_tokens
                    .get(token)
                    .cloned()
                    .unwrap_or_else(|| "unknown".to_owned());
                Outcome::Unit(if complete {
                    block_on(self.q.complete_feedback(&t, now))
                } else {
                    block_on(self.q.abandon_feedback(&t, now))
                })
            }
            Op::Advance(_) => Outcome::Depths(
                DEVICES
                    .iter()
                    .map(|d| block_on(self.q.depth(&did(d), now)).expect("depth"))
                    .collect(),
            ),
        }
    }

    /// Invariants of every received message.
    fn check_received(&mut self, device: usize, m: &QueuedMessage, now: DateTime<Utc>) {
        assert!(m.expiry_time > now, "an expired message was delivered");
        assert!(m.delivery_count < config().max_delivery_count);
        assert!(m.deliveries >= 1);
        assert_eq!(m.locked_until, Some(now + secs(60)));
        let token = m.lock_token.clone().expect("locked");
        // The same (device, message, delivery) is never handed out twice.
        assert!(
            self.seen
                .insert((DEVICES[device].to_owned(), m.sequence_number, m.deliveries)),
            "delivered twice: {m:?}"
        );
        self.tokens.push((device, token));
    }
}

fn records(b: &FeedbackBatch) -> Vec<Record> {
    assert!(!b.records.is_empty() && b.records.len() <= config().feedback_batch_size);
    b.records
        .iter()
        .map(|r| {
            (
                r.original_message_id.clone(),
                r.device_id.clone(),
                r.status_code.as_str().to_owned(),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn both_stores_agree(ops in proptest::collection::vec(op(), 1..60)) {
        let mut memory = Side::new(MemoryQueueStore::new());
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sqlite = Side::new(
            SqliteQueueStore::open(dir.path().join("registry.db")).expect("open"),
        );
        let mut now = at(0);
        for (i, op) in ops.iter().enumerate() {
            if let Op::Advance(s) = op {
                now += secs(*s);
            }
            let a = memory.run(op, now);
            let b = sqlite.run(op, now);
            prop_assert_eq!(&a, &b, "op {} {:?}", i, op);
            if let Outcome::Depths(depths) = &a {
                prop_assert!(depths.iter().all(|d| *d <= 3));
            }
        }
    }
}
