//! The [`QueueStore`](crate::QueueStore) contract as a suite any store can run: the PostgreSQL
//! store of `ferrohub-cluster` runs the same cases as the memory and SQLite stores, through
//! [`C2dQueues`] and through the raw store guards.
//!
//! Built only with the `contract-suite` feature (tests of store crates enable it). The cases
//! panic on a broken rule, as tests do. They need no async runtime: [`block_on`] runs them on
//! the calling thread, and several cases run from several threads at once (two hub processes
//! over one database), so a store whose futures need a runtime has to drive its I/O elsewhere.
//!
//! A store crate runs the whole suite with [`c2d_store_contract!`](crate::c2d_store_contract):
//!
//! ```ignore
//! ferrohub_c2d::c2d_store_contract!(memory_store, (MemoryQueueStore::new(), ()));
//! ```
//!
//! The second argument is an expression evaluated once per case, giving `(store, guard)`: the
//! guard (a temporary directory, a database dropped afterwards) lives until the case ends.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use ferrohub_types::DeviceId;

use crate::{AckMode, C2dConfig, C2dQueues, FeedbackStatus, OutgoingMessage, QueueStore};

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread, parking while it is pending.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

// === Fixtures ===

/// Queues over `store` with `config`.
pub fn queues<S: QueueStore>(store: S, config: C2dConfig) -> C2dQueues<S> {
    block_on(C2dQueues::open(store, config)).expect("valid config")
}

pub fn did(s: &str) -> DeviceId {
    DeviceId::new(s).expect("valid device id")
}

/// A fixed instant plus `secs` seconds.
pub fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("valid time")
}

pub fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

pub fn minutes(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

/// A message with this id and ack mode and a small body.
pub fn msg(id: &str, ack: AckMode) -> OutgoingMessage {
    OutgoingMessage {
        message_id: Some(id.to_owned()),
        ack,
        ..OutgoingMessage::new(format!("body of {id}"))
    }
}

/// A message with every field set.
pub fn full_msg(id: &str) -> OutgoingMessage {
    OutgoingMessage {
        message_id: Some(id.to_owned()),
        correlation_id: Some("corr-1".to_owned()),
        user_id: Some("user-ü".to_owned()),
        content_type: Some("application/json".to_owned()),
        content_encoding: Some("utf-8".to_owned()),
        expiry: Some(at(3600 * 24)),
        ack: AckMode::Full,
        properties: vec![
            ("k1".to_owned(), "v1".to_owned()),
            ("k1".to_owned(), "repeated".to_owned()),
            ("empty".to_owned(), String::new()),
            ("spaces & = ?".to_owned(), "ünïcode ✓".to_owned()),
        ],
        body: vec![0, 1, 2, 255, 0, 42],
    }
}

/// Receives and completes every feedback batch available at `now`; returns their records as
/// (original message id, device id, status), in order.
pub fn drain_feedback<S: QueueStore>(
    q: &C2dQueues<S>,
    now: DateTime<Utc>,
) -> Vec<(String, String, FeedbackStatus)> {
    let mut out = Vec::new();
    while let Some(batch) = block_on(q.receive_feedback(now)).expect("receive feedback") {
        assert!(!batch.records.is_empty());
        for r in &batch.records {
            out.push((
                r.original_message_id.clone(),
                r.device_id.clone(),
                r.status_code,
            ));
        }
        block_on(q.complete_feedback(&batch.lock_token, now)).expect("complete feedback");
    }
    out
}

/// Statuses of the feedback records for the message `id` in `records`.
pub fn statuses_of(records: &[(String, String, FeedbackStatus)], id: &str) -> Vec<FeedbackStatus> {
    records
        .iter()
        .filter(|(m, _, _)| m == id)
        .map(|(_, _, s)| *s)
        .collect()
}

/// The contract's cases, generic over the store. Each takes an empty store.
pub mod cases {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::*;
    use crate::store::{Expect, QueueChange};
    use crate::{C2dError, QueuedMessage, StoreError};

    const GEN: &str = "637000000000000001";

    fn send<S: QueueStore>(
        q: &C2dQueues<S>,
        device: &str,
        m: OutgoingMessage,
        now: chrono::DateTime<chrono::Utc>,
    ) -> QueuedMessage {
        block_on(q.send(&did(device), GEN, m, now)).expect("send")
    }

    fn receive<S: QueueStore>(
        q: &C2dQueues<S>,
        device: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<QueuedMessage> {
        block_on(q.receive(&did(device), now)).expect("receive")
    }

    fn token(m: &QueuedMessage) -> &str {
        m.lock_token
            .as_deref()
            .expect("a received message is locked")
    }

    pub fn fifo_order_and_sequence_numbers<S: QueueStore>(store: S) {
        let q = queues(store, C2dConfig::default());
        let t = at(0);
        let a1 = send(&q, "a", msg("a1", AckMode::None), t);
        let a2 = send(&q, "a", msg("a2", AckMode::None), t + secs(1));
        let b1 = send(&q, "b", msg("b1", AckMode::None), t + secs(2));
        let a3 = send(&q, "a", msg("a3", AckMode::None), t + secs(3));
        assert_eq!(
            [a1.sequence_number, a2.sequence_number, a3.sequence_number],
            [1, 2, 3]
        );
        assert_eq!(b1.sequence_number, 1, "sequence numbers are per device");
        assert_eq!(a1.enqueued_time, t);
        assert_eq!(a1.expiry_time, t + secs(3600), "default time to live");
        assert_eq!((a1.delivery_count, a1.deliveries), (0, 0));
        assert_eq!((a1.lock_token.as_ref(), a1.locked_until), (None, None));
        assert_eq!(a1.device_generation_id, GEN);

        let now = t + secs(10);
        let mut got = Vec::new();
        while let Some(m) = receive(&q, "a", now) {
            assert_eq!(m.deliveries, 1);
            assert_eq!(m.delivery_count, 0);
            assert_eq!(m.locked_until, Some(now + secs(60)));
            let tok = token(&m);
            assert_eq!(tok.len(), 36, "GUID-shaped token {tok}");
            assert_eq!(tok.matches('-').count(), 4);
            got.push((m.sequence_number, m.message.message_id.clone()));
        }
        assert_eq!(
            got,
            vec![
                (1, Some("a1".to_owned())),
                (2, Some("a2".to_owned())),
                (3, Some("a3".to_owned()))
            ]
        );
        assert_eq!(block_on(q.depth(&did("a"), now)).expect("depth"), 3);

        // Completing everything empties the queue but never reuses a number.
        let b = receive(&q, "b", now).expect("b1");
        block_on(q.complete(&did("b"), token(&b), now)).expect("complete");
        assert_eq!(block_on(q.depth(&did("b"), now)).expect("depth"), 0);
        let b2 = send(&q, "b", msg("b2", AckMode::None), now);
        assert_eq!(b2.sequence_number, 2);
        assert_eq!(
            block_on(q.devices_with_messages()).expect("devices"),
            vec![did("a"), did("b")]
        );
    }

    pub fn messages_round_trip<S: QueueStore>(store: S) {
        let q = queues(store, C2dConfig::default());
        let sent = send(&q, "d", full_msg("m1"), at(0));
        assert_eq!(sent.message, full_msg("m1"));
        assert_eq!(sent.expiry_time, at(3600 * 24), "the message's own expiry");
        let got = receive(&q, "d", at(1)).expect("message");
        assert_eq!(got.message, full_msg("m1"));
        assert_eq!(got.device_id, did("d"));
        assert_eq!(got.enqueued_time, sent.enqueued_time);
        assert_eq!(got.expiry_time, sent.expiry_time);
        // A message without id or properties is kept as is.
        let bare = OutgoingMessage::new(Vec::new());
        let sent = send(&q, "d", bare.clone(), at(2));
        assert_eq!(sent.message, bare);
        assert_eq!(receive(&q, "d", at(3)).expect("second").message, bare);
        // Times are kept to the microsecond.
        let fine = at(4) + chrono::TimeDelta::nanoseconds(1_234_567);
        let sent = send(&q, "e", OutgoingMessage::new("x"), fine);
        assert_eq!(
            sent.enqueued_time,
            at(4) + chrono::TimeDelta::microseconds(1_234)
        );
        assert_eq!(
            receive(&q, "e", fine).expect("e").enqueued_time,
            sent.enqueued_time
        );
    }

    pub fn depth_limit<S: QueueStore>(store: S) {
        let q = queues(
            store,
            C2dConfig {
                max_queue_depth: 3,
                ..C2dConfig::default()
            },
        );
        let t = at(0);
        let short = OutgoingMessage {
            expiry: Some(t + secs(100)),
            ..msg("short", AckMode::Negative)
        };
        send(&q, "d", short, t);
        send(&q, "d", msg("m2", AckMode::None), t);
        send(&q, "d", msg("m3", AckMode::None), t);
        let e = block_on(q.send(&did("d"), GEN, msg("m4", AckMode::None), t)).expect_err("full");
        assert_eq!(e, C2dError::QueueFull { max: 3 });
        assert_eq!(e.error_code().number(), 403004);
        assert_eq!(block_on(q.depth(&did("d"), t)).expect("depth"), 3);
        // Invisible messages count.
        let first = receive(&q, "d", t).expect("first");
        assert!(matches!(
            block_on(q.send(&did("d"), GEN, msg("m4", AckMode::None), t)),
            Err(C2dError::QueueFull { .. })
        ));
        // Other devices are not affected.
        send(&q, "other", msg("o1", AckMode::None), t);
        // Settling makes room; the refused sends took no sequence number.
        block_on(q.complete(&did("d"), token(&first), t)).expect("complete");
        let m4 = send(&q, "d", msg("m4", AckMode::None), t);
        assert_eq!(m4.sequence_number, 4);
        // Expired messages do not count and are dead-lettered by the send that finds them.
        let t2 = t + secs(200);
        assert!(matches!(
            block_on(q.send(&did("d"), GEN, msg("m5", AckMode::None), t)),
            Err(C2dError::QueueFull { .. })
        ));
        let two = queues_depth(&q, "d", t2);
        assert_eq!(two, 3, "m2, m3, m4: 'short' was completed");
        let t3 = t + secs(3601);
        assert_eq!(queues_depth(&q, "d", t3), 0, "everything expired");
        send(&q, "d", msg("m5", AckMode::None), t3);
        send(&q, "d", msg("m6", AckMode::None), t3);
        send(&q, "d", msg("m7", AckMode::None), t3);
        assert_eq!(queues_depth(&q, "d", t3), 3);
    }

    fn queues_depth<S: QueueStore>(
        q: &C2dQueues<S>,
        device: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> u64 {
        block_on(q.depth(&did(device), now)).expect("depth")
    }

    pub fn size_limit<S: QueueStore>(store: S) {
        let q = queues(
            store,
            C2dConfig {
                max_message_bytes: 100,
                ..C2dConfig::default()
            },
        );
        let t = at(0);
        send(&q, "d", OutgoingMessage::new(vec![7u8; 100]), t);
        let e = block_on(q.send(&did("d"), GEN, OutgoingMessage::new(vec![7u8; 101]), t))
            .expect_err("too large");
        assert_eq!(
            e,
            C2dError::MessageTooLarge {
                size: 101,
                max: 100
            }
        );
        assert_eq!(e.error_code().number(), 413001);
        // Property names and values count.
        let mut m = OutgoingMessage::new(vec![7u8; 90]);
        m.properties.push(("name".into(), "value".into()));
        m.message_id = Some("12".into());
        assert_eq!(m.size(), 101);
        assert!(matches!(
            block_on(q.send(&did("d"), GEN, m, t)),
            Err(C2dError::MessageTooLarge { size: 101, .. })
        ));
        assert_eq!(queues_depth(&q, "d", t), 1, "nothing stored");
        assert_eq!(
            send(&q, "d", OutgoingMessage::new("ok"), t).sequence_number,
            2
        );
    }

    pub fn time_to_live<S: QueueStore>(store: S) {
        let q = queues(
            store,
            C2dConfig {
                default_ttl: minutes(5),
                ..C2dConfig::default()
            },
        );
        let t = at(0);
        assert_eq!(
            send(&q, "d", msg("default", AckMode::None), t).expiry_time,
            t + secs(300)
        );
        let explicit = OutgoingMessage {
            expiry: Some(t + secs(7 * 24 * 3600)),
            ..msg("explicit", AckMode::None)
        };
        assert_eq!(
            send(&q, "d", explicit, t).expiry_time,
            t + secs(7 * 24 * 3600)
        );
        for expiry in [t, t - secs(1)] {
            let m = OutgoingMessage {
                expiry: Some(expiry),
                ..msg("past", AckMode::None)
            };
            let e = block_on(q.send(&did("d"), GEN, m, t)).expect_err("expiry in the past");
            assert!(matches!(e, C2dError::InvalidArgument(_)), "{e:?}");
            assert_eq!(e.error_code().number(), 400004);
        }
        assert_eq!(queues_depth(&q, "d", t), 2);
        assert_eq!(queues_depth(&q, "d", t + secs(300)), 1, "default expired");
    }

    pub fn expired_messages_are_never_delivered<S: QueueStore>(store: S) {
        let q = queues(store, C2dConfig::default());
        let t = at(0);
        for (id, ack) in [
            ("e-none", AckMode::None),
            ("e-pos", AckMode::Positive),
            ("e-neg", AckMode::Negative),
            ("e-full", AckMode::Full),
        ] {
            let m = OutgoingMessage {
                expiry: Some(t + secs(10)),
                ..msg(id, ack)
            };
            send(&q, "d", m, t);
        }
        send(&q, "d", msg("live", AckMode::Full), t);
        let now = t + secs(10);
        let got = receive(&q, "d", now).expect("the live message");
        assert_eq!(got.message.message_id.as_deref(), Some("live"));
        assert_eq!(got.sequence_number, 5);
        assert_eq!(receive(&q, "d", now), None);
        let fb = drain_feedback(&q, now);
        assert_eq!(
            fb,
            vec![
                ("e-neg".to_owned(), "d".to_owned(), FeedbackStatus::Expired),
                ("e-full".to_owned(), "d".to_owned(), FeedbackStatus::Expired),
            ]
        );
        assert_eq!(queues_depth(&q, "d", now), 1);
        // The dead-lettered messages are gone: a sweep finds nothing more.
        assert_eq!(block_on(q.sweep(now)).expect("sweep"), 0);
    }

    pub fn sweep_dead_letters_expired<S: QueueStore>(store: S) {
        let q = queues(store, C2dConfig::default());
        let t = at(0);
        let short = |id: &str, ack| OutgoingMessage {
            expiry: Some(t + secs(30)),
            ..msg(id, ack)
        };
        send(&q, "a", short("a1", AckMode::Full), t);
        send(&q, "a", msg("a2", AckMode::Full), t);
        send(&q, "b", short("b1", AckMode::Positive), t);
        send(&q, "c", short("c1", AckMode::Negative), t);
        // c1 is received just before it expires: its valid lock protects it from the sweep.
        let c1 = receive(&q, "c", t + secs(29)).expect("c1");
        assert_eq!(block_on(q.sweep(t + secs(29))).expect("sweep"), 0);
        let now = t + secs(30);
        assert_eq!(block_on(q.sweep(now)).expect("sweep"), 2, "a1 and b1");
        assert_eq!(
            block_on(q.devices_with_messages()).expect("devices"),
            vec![did("a"), did("c")]
        );
        let fb = drain_feedback(&q, now);
        assert_eq!(
            fb,
            vec![("a1".to_owned(), "a".to_owned(), FeedbackStatus::Expired)]
        );
        // The device got c1 in time, so completing it within its lock counts.
        block_on(q.complete(&did("c"), token(&c1), now)).expect("complete within lock");
        assert!(
            drain_feedback(&q, now).is_empty(),
            "c1 wants negative acks only"
        );

        // Once its lock expired, an expired message is swept.
        send(&q, "c", short("c2", AckMode::Negative), t);
        let c2 = receive(&q, "c", t + secs(29)).expect("c2");
        let after = t + secs(29 + 60);
        assert_eq!(block_on(q.sweep(after)).expect("sweep"), 1);
        assert_eq!(
            block_on(q.complete(&did("c"), token(&c2), after)),
            Err(C2dError::LockLost)
        );
        assert_eq!(
            statuses_of(&drain_feedback(&q, after), "c2"),
            vec![FeedbackStatus::Expired]
        );
        // Expired feedback is dropped by the sweep, and counted.
        send(&q, "b", short("b2", AckMode::Negative), t);
        assert_eq!(block_on(q.sweep(now)).expect("sweep"), 1, "b2");
        let late = now + secs(3600);
        assert_eq!(
            block_on(q.sweep(late)).expect("sweep"),
            2,
            "a2, expired by now, and b2's feedback record"
        );
        assert_eq!(
            drain_feedback(&q, late),
            vec![("a2".to_owned(), "a".to_owned(), FeedbackStatus::Expired)]
        );
    }

    pub fn lock_expiry_redelivers_without_counting<S: QueueStore>(store: S) {
        let q = queues(store, C2dConfig::default());
        let t = at(0);
        send(&q, "d", msg("m1", AckMode::None), t);
        send(&q, "d", msg("m2", AckMode::None), t);
        let first = receive(&q, "d", t).expect("m1");
        let second = receive(&q, "d", t + secs(30)).expect("m2");
        assert_eq!(second.sequence_number, 2);
        assert_eq!(receive(&q, "d", t + secs(59)), None, "both locked");
        // m1's lock ends at t+60.
        let again = receive(&q, "d", t + secs(60)).expect("m1 again");
        assert_eq!(again.sequence_number, 1);
        assert_eq!(again.deliveries, 2, "a redelivery");
        assert_eq!(again.delivery_count, 0, "lock expiry does not count");
        assert_ne!(again.lock_token, first.lock_token);
        assert_eq!(again.locked_until, Some(t + secs(120)));
        assert_eq!(
            block_on(q.complete(&did("d"), token(&first), t + secs(61))),
            Err(C2dError::LockLost),
            "the old token is gone"
        );
        block_on(q.complete(&did("d"), token(&again), t + secs(61))).expect("complete");
        let m2 = receive(&q, "d", t + secs(90)).expect("m2 again");
        assert_eq!((m2.sequence_number, m2.deliveries), (2, 2));
        assert_eq!(receive(&q, "d", t + secs(91)), None);
    }

    pub fn feedback_follows_ack_mode<S: QueueStore>(store: S) {
        let q = queues(
            store,
            C2dConfig {
                max_delivery_count: 1,
                ..C2dConfig::default()
            },
        );
        let t = at(0);
        let outcomes = ["complete", "reject", "abandon", "expire", "purge"];
        let acks = [
            AckMode::None,
            AckMode::Positive,
            AckMode::Negative,
            AckMode::Full,
        ];
        for (i, outcome) in outcomes.iter().enumerate() {
            let device = format!("dev-{outcome}");
            for ack in acks {
                let m = OutgoingMessage {
                    expiry: Some(t + secs(100)),
                    ..msg(&format!("{outcome}-{}", ack.as_str()), ack)
                };
                send(&q, &device, m, t + secs(i as i64));
            }
        }
        let now = t + secs(10);
        for outcome in ["complete", "reject", "abandon"] {
            let device = did(&format!("dev-{outcome}"));
            while let Some(m) = block_on(q.receive(&device, now)).expect("receive") {
                let tok = token(&m);
                match outcome {
                    "complete" => block_on(q.complete(&device, tok, now)),
                    "reject" => block_on(q.reject(&device, tok, now)),
                    _ => block_on(q.abandon(&device, tok, now)),
                }
                .expect("settle");
            }
            assert_eq!(block_on(q.depth(&device, now)).expect("depth"), 0);
        }
        assert_eq!(block_on(q.purge(&did("dev-purge"), now)).expect("purge"), 4);
        block_on(q.sweep(t + secs(100))).expect("sweep");
        let fb = drain_feedback(&q, t + secs(100));
        let expected = [
            ("complete", FeedbackStatus::Success),
            ("reject", FeedbackStatus::Rejected),
            ("abandon", FeedbackStatus::DeliveryCountExceeded),
            ("expire", FeedbackStatus::Expired),
            ("purge", FeedbackStatus::Purged),
        ];
        for (outcome, status) in expected {
            for ack in acks {
                let id = format!("{outcome}-{}", ack.as_str());
                let want = if ack.wants(status) {
                    vec![status]
                } else {
                    vec![]
                };
                assert_eq!(statuses_of(&fb, &id), want, "{id}");
            }
        }
        assert_eq!(fb.len(), 10, "{fb:?}");
        // Every record names the device and the generation id.
        let records = {
            send(&q, "gen", msg("g1", AckMode::Full), now);
            let m = receive(&q, "gen", now).expect("g1");
            block_on(q.complete(&did("gen"), token(&m), now)).expect("complete");
            block_on(q.receive_feedback(now))
                .expect("feedback")
                .expect("a batch")
                .records
        };
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].device_id, "gen");
        assert_eq!(records[0].device_generation_id, GEN);
        assert_eq!(records[0].enqueued_time_utc, now);
        assert_eq!(records[0].description, "Success");
    }

    pub fn abandon_counts_up_to_the_maximum<S: QueueStore>(store: S) {
        let q = queues(
            store,
            C2dConfig {
                max_delivery_count: 3,
                ..C2dConfig::default()
            },
        );
        let t = at(0);
        send(&q, "d", msg("m1", AckMode::Negative), t);
        send(&q, "d", msg("m2", AckMode::Negative), t);
        for round in 1..=2u32 {
            let m = receive(&q, "d", t).expect("m1");
            assert_eq!(m.sequence_number, 1, "an abandoned message is first again");
            assert_eq!(m.delivery_count, round - 1);
            assert_eq!(m.deliveries, round);
            block_on(q.abandon(&did("d"), token(&m), t)).expect("abandon");
        }
        let m = receive(&q, "d", t).expect("m1");
        assert_eq!((m.delivery_count, m.deliveries), (2, 3));
        block_on(q.abandon(&did("d"), token(&m), t)).expect("third abandon");
        let next = receive(&q, "d", t).expect("m2");
        assert_eq!(next.sequence_number, 2, "m1 was dead-lettered");
        assert_eq!(
            drain_feedback(&q, t),
            vec![(
                "m1".to_owned(),
                "d".to_owned(),
                FeedbackStatus::DeliveryCountExceeded
            )]
        );
        // Abandoning a message that expired meanwhile dead-letters it as expired.
        let short = OutgoingMessage {
            expiry: Some(t + secs(10)),
            ..msg("m3", AckMode::Negative)
        };
        send(&q, "e", short, t);
        let m3 = receive(&q, "e", t + secs(9)).expect("m3");
        block_on(q.abandon(&did("e"), token(&m3), t + secs(11))).expect("abandon");
        assert_eq!(queues_depth(&q, "e", t + secs(11)), 0);
        assert_eq!(
            statuses_of(&drain_feedback(&q, t + secs(11)), "m3"),
            vec![FeedbackStatus::Expired]
        );
    }

    pub fn release_requeues_without_counting<S: QueueStore>(store: S) {
        let q = queues(store, C2dConfig::default());
        let t = at(0);
        send(&q, "d", msg("m1", AckMode::Full), t);
        send(&q, "d", msg("m2", AckMode::Full), t);
        let m = receive(&q, "d", t).expect("m1");
        block_on(q.release(&did("d"), token(&m), t)).expect("release");
        let again = receive(&q, "d", t + secs(1)).expect("m1 again");
        assert_eq!(again.sequence_number, 1);
        assert_eq!((again.delivery_count, again.deliveries), (0, 2));
        assert_eq!(
            block_on(q.release(&did("d"), token(&m), t + secs(1))),
            Err(C2dError::LockLost),
            "the released token is gone"
        );
        assert_eq!(
            block_on(q.release(&did("d"), "not-a-token", t)),
            Err(C2dError::LockLost)
        );
        assert!(
            drain_feedback(&q, t).is_empty(),
            "release gives no feedback"
        );
        block_on(q.reject(&did("d"), token(&again), t + secs(2))).expect("reject");
        assert_eq!(
            statuses_of(&drain_feedback(&q, t + secs(2)), "m1"),
            vec![FeedbackStatus::Rejected]
        );
        assert_eq!(
            receive(&q, "d", t + secs(2)).expect("m2").sequence_number,
            2
        );
    }

    pub fn purge_counts_and_reports<S: QueueStore>(store: S) {
        let q = queues(store, C2dConfig::default());
        let t = at(0);
        send(&q, "d", msg("p-none", AckMode::None), t);
        send(&q, "d", msg("p-pos", AckMode::Positive), t);
        send(&q, "d", msg("p-neg", AckMode::Negative), t);
        let expiring = OutgoingMessage {
            expiry: Some(t + secs(5)),
            ..msg("p-expired", AckMode::Full)
        };
        send(&q, "d", expiring, t);
        send(&q, "keep", msg("k", AckMode::Full), t);
        let locked = receive(&q, "d", t).expect("p-none");
        let now = t + secs(5);
        assert_eq!(block_on(q.purge(&did("d"), now)).expect("purge"), 3);
        assert_eq!(queues_depth(&q, "d", now), 0);
        assert_eq!(receive(&q, "d", now), None);
        assert_eq!(
            block_on(q.complete(&did("d"), token(&locked), now)),
            Err(C2dError::LockLost)
        );
        let fb = drain_feedback(&q, now);
        assert_eq!(
            fb,
            vec![
                (
                    "p-expired".to_owned(),
                    "d".to_owned(),
                    FeedbackStatus::Expired
                ),
                ("p-neg".to_owned(), "d".to_owned(), FeedbackStatus::Purged),
            ]
        );
        assert_eq!(block_on(q.purge(&did("d"), now)).expect("purge"), 0);
        assert_eq!(block_on(q.purge(&did("never"), now)).expect("purge"), 0);
        assert_eq!(queues_depth(&q, "keep", now), 1);
        // Numbering goes on after a purge.
        assert_eq!(
            send(&q, "d", msg("after", AckMode::None), now).sequence_number,
            5
        );
    }

    pub fn lost_locks<S: QueueStore>(store: S) {
        let q = queues(store, C2dConfig::default());
        let t = at(0);
        send(&q, "a", msg("a1", AckMode::Full), t);
        send(&q, "b", msg("b1", AckMode::Full), t);
        let a1 = receive(&q, "a", t).expect("a1");
        let b1 = receive(&q, "b", t).expect("b1");
        let (a, b) = (did("a"), did("b"));
        let e = block_on(q.complete(&a, "00000000-0000-4000-8000-000000000000", t))
            .expect_err("unknown token");
        assert_eq!(e, C2dError::LockLost);
        assert_eq!(e.error_code().number(), 412002);
        assert_eq!(
            block_on(q.complete(&a, token(&b1), t)),
            Err(C2dError::LockLost),
            "another device's token"
        );
        assert_eq!(
            block_on(q.abandon(&b, token(&a1), t)),
            Err(C2dError::LockLost)
        );
        block_on(q.complete(&a, token(&a1), t)).expect("complete");
        for r in [
            block_on(q.complete(&a, token(&a1), t)),
            block_on(q.abandon(&a, token(&a1), t)),
            block_on(q.reject(&a, token(&a1), t)),
            block_on(q.release(&a, token(&a1), t)),
        ] {
            assert_eq!(r, Err(C2dError::LockLost), "settled twice");
        }
        // An expired lock is lost for every settlement, and the message is Enqueued again.
        let late = t + secs(60);
        for r in [
            block_on(q.complete(&b, token(&b1), late)),
            block_on(q.abandon(&b, token(&b1), late)),
            block_on(q.reject(&b, token(&b1), late)),
            block_on(q.release(&b, token(&b1), late)),
        ] {
            assert_eq!(r, Err(C2dError::LockLost), "expired lock");
        }
        assert_eq!(queues_depth(&q, "b", late), 1);
        let again = receive(&q, "b", late).expect("b1 is Enqueued again");
        assert_eq!((again.delivery_count, again.deliveries), (0, 2));
        // Only the completion of a1 produced feedback.
        assert_eq!(
            drain_feedback(&q, late),
            vec![("a1".to_owned(), "a".to_owned(), FeedbackStatus::Success)]
        );
    }

    pub fn feedback_batches<S: QueueStore>(store: S) {
        let q = queues(
            store,
            C2dConfig {
                feedback_batch_size: 3,
                feedback_max_delivery_count: 2,
                ..C2dConfig::default()
            },
        );
        let t = at(0);
        assert_eq!(block_on(q.receive_feedback(t)).expect("empty"), None);
        for i in 0..7 {
            let id = format!("m{i}");
            send(&q, "d", msg(&id, AckMode::Positive), t);
            let m = receive(&q, "d", t).expect("message");
            block_on(q.complete(&did("d"), token(&m), t + secs(i))).expect("complete");
        }
        let ids = |b: &crate::FeedbackBatch| -> Vec<String> {
            b.records
                .iter()
                .map(|r| r.original_message_id.clone())
                .collect()
        };
        let now = t + secs(10);
        let b1 = block_on(q.receive_feedback(now))
            .expect("receive")
            .expect("batch 1");
        assert_eq!(ids(&b1), ["m0", "m1", "m2"]);
        assert_eq!(b1.enqueued_time, now);
        assert_eq!(b1.records[1].enqueued_time_utc, t + secs(1));
        let b2 = block_on(q.receive_feedback(now))
            .expect("receive")
            .expect("batch 2");
        assert_eq!(ids(&b2), ["m3", "m4", "m5"]);
        assert_ne!(b1.lock_token, b2.lock_token);
        let b3 = block_on(q.receive_feedback(now))
            .expect("receive")
            .expect("batch 3");
        assert_eq!(ids(&b3), ["m6"]);
        assert_eq!(block_on(q.receive_feedback(now)).expect("receive"), None);

        // Complete removes, abandon returns the records to the front.
        block_on(q.complete_feedback(&b2.lock_token, now)).expect("complete b2");
        assert_eq!(
            block_on(q.complete_feedback(&b2.lock_token, now)),
            Err(C2dError::LockLost),
            "completed twice"
        );
        block_on(q.abandon_feedback(&b1.lock_token, now)).expect("abandon b1");
        assert_eq!(
            block_on(q.abandon_feedback(&b1.lock_token, now)),
            Err(C2dError::LockLost)
        );
        let b1again = block_on(q.receive_feedback(now))
            .expect("receive")
            .expect("b1 again");
        assert_eq!(ids(&b1again), ["m0", "m1", "m2"]);
        // Lock expiry: b3's lock (60 s) ends; completing it then fails and it comes back.
        let late = now + secs(60);
        assert_eq!(
            block_on(q.complete_feedback(&b3.lock_token, late)),
            Err(C2dError::LockLost)
        );
        assert_eq!(
            block_on(q.complete_feedback("unknown", now)),
            Err(C2dError::LockLost)
        );
        // b1again's lock also ended at `late`; its records were delivered twice, the maximum,
        // so they are dropped; m6 (delivered once) comes back.
        let b4 = block_on(q.receive_feedback(late))
            .expect("receive")
            .expect("m6 again");
        assert_eq!(ids(&b4), ["m6"]);
        block_on(q.abandon_feedback(&b4.lock_token, late)).expect("abandon");
        // m6 has now been delivered twice as well: abandoning dropped it.
        assert_eq!(block_on(q.receive_feedback(late)).expect("receive"), None);
    }

    pub fn feedback_expires<S: QueueStore>(store: S) {
        let q = queues(
            store,
            C2dConfig {
                feedback_ttl: minutes(2),
                ..C2dConfig::default()
            },
        );
        let t = at(0);
        send(&q, "d", msg("m1", AckMode::Full), t);
        let m = receive(&q, "d", t).expect("m1");
        block_on(q.reject(&did("d"), token(&m), t)).expect("reject");
        let batch = block_on(q.receive_feedback(t + secs(119)))
            .expect("receive")
            .expect("not yet expired");
        // A record under a valid lock is not swept even though it expired.
        assert_eq!(block_on(q.sweep(t + secs(120))).expect("sweep"), 0);
        block_on(q.abandon_feedback(&batch.lock_token, t + secs(120))).expect("abandon");
        assert_eq!(
            block_on(q.receive_feedback(t + secs(120))).expect("receive"),
            None,
            "expired feedback is never delivered"
        );
        assert_eq!(block_on(q.sweep(t + secs(120))).expect("sweep"), 1);
        assert_eq!(block_on(q.sweep(t + secs(120))).expect("sweep"), 0);
    }

    pub fn delete_device_forgets_everything<S: QueueStore>(store: S) {
        let q = queues(store, C2dConfig::default());
        let t = at(0);
        for i in 0..3 {
            send(&q, "gone", msg(&format!("g{i}"), AckMode::Full), t);
        }
        send(&q, "stays", msg("s0", AckMode::Full), t);
        let g0 = receive(&q, "gone", t).expect("g0");
        block_on(q.reject(&did("gone"), token(&g0), t)).expect("reject");
        let s0 = receive(&q, "stays", t).expect("s0");
        block_on(q.reject(&did("stays"), token(&s0), t)).expect("reject");
        let g1 = receive(&q, "gone", t).expect("g1");

        block_on(q.delete_device(&did("gone"))).expect("delete");
        assert_eq!(queues_depth(&q, "gone", t), 0);
        assert_eq!(
            block_on(q.complete(&did("gone"), token(&g1), t)),
            Err(C2dError::LockLost)
        );
        assert_eq!(
            block_on(q.devices_with_messages()).expect("devices"),
            Vec::<DeviceId>::new()
        );
        assert_eq!(
            drain_feedback(&q, t),
            vec![(
                "s0".to_owned(),
                "stays".to_owned(),
                FeedbackStatus::Rejected
            )],
            "the deleted device's feedback is dropped and none is produced"
        );
        // A device created again with the same id starts a new queue.
        assert_eq!(
            send(&q, "gone", msg("new", AckMode::None), t).sequence_number,
            1
        );
        block_on(q.delete_device(&did("never-existed"))).expect("delete is idempotent");
    }

    /// `receive_many` hands out the oldest available messages under distinct locks, skipping
    /// locked ones; `complete_many` settles each token once, in one change, with feedback.
    pub fn receive_and_complete_many<S: QueueStore>(store: S) {
        let q = queues(store, C2dConfig::default());
        let t = at(0);
        for i in 0..5 {
            send(&q, "d", msg(&format!("m{i}"), AckMode::Full), t);
        }
        assert!(
            block_on(q.receive_many(&did("d"), 0, t))
                .expect("receive none")
                .is_empty()
        );
        let first = block_on(q.receive_many(&did("d"), 3, t)).expect("receive");
        let seqs: Vec<u64> = first.iter().map(|m| m.sequence_number).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        let tokens: BTreeSet<&str> = first.iter().map(token).collect();
        assert_eq!(tokens.len(), 3, "each message has its own lock");
        assert!(first.iter().all(|m| m.deliveries == 1));
        // The locked ones are skipped; only two remain.
        let rest = block_on(q.receive_many(&did("d"), 10, t)).expect("receive");
        let seqs: Vec<u64> = rest.iter().map(|m| m.sequence_number).collect();
        assert_eq!(seqs, vec![4, 5]);
        assert!(
            block_on(q.receive_many(&did("d"), 10, t))
                .expect("receive")
                .is_empty()
        );

        let mut settle: Vec<String> = first.iter().map(|m| token(m).to_owned()).collect();
        settle.push(token(&first[0]).to_owned());
        settle.push("not-a-token".to_owned());
        let outcomes = block_on(q.complete_many(&did("d"), &settle, t)).expect("complete");
        assert_eq!(
            outcomes,
            vec![
                Ok(()),
                Ok(()),
                Ok(()),
                Err(C2dError::LockLost),
                Err(C2dError::LockLost)
            ]
        );
        assert_eq!(queues_depth(&q, "d", t), 2);
        let feedback = drain_feedback(&q, t);
        let mut ids: Vec<&str> = feedback
            .iter()
            .filter(|f| f.2 == FeedbackStatus::Success)
            .map(|f| f.0.as_str())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, vec!["m0", "m1", "m2"]);
        // Completing again: the locks are gone.
        let again = block_on(q.complete_many(&did("d"), &settle[..1], t)).expect("complete");
        assert_eq!(again, vec![Err(C2dError::LockLost)]);
        // An expired lock is lost too, and its message is available again.
        let later = t + secs(120);
        let rest_tokens: Vec<String> = rest.iter().map(|m| token(m).to_owned()).collect();
        let outcomes = block_on(q.complete_many(&did("d"), &rest_tokens, later)).expect("late");
        assert!(outcomes.iter().all(|o| *o == Err(C2dError::LockLost)));
        let redelivered = block_on(q.receive_many(&did("d"), 10, later)).expect("receive");
        assert_eq!(redelivered.len(), 2);
        assert!(redelivered.iter().all(|m| m.deliveries == 2));
    }

    /// Many threads receive from one queue at once: every message is handed out exactly once.
    pub fn concurrent_receivers_never_share<S: QueueStore>(store: S) {
        const MESSAGES: usize = 40;
        const THREADS: usize = 4;
        let q = queues(store, C2dConfig::default());
        let t = at(0);
        for i in 0..MESSAGES {
            send(&q, "d", msg(&format!("m{i}"), AckMode::None), t);
        }
        let got: Vec<Vec<u64>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(|| {
                        let mut mine = Vec::new();
                        while let Some(m) = receive(&q, "d", t) {
                            mine.push(m.sequence_number);
                        }
                        mine
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("receiver thread"))
                .collect()
        });
        let all: Vec<u64> = got.iter().flatten().copied().collect();
        let distinct: BTreeSet<u64> = all.iter().copied().collect();
        assert_eq!(all.len(), MESSAGES, "{got:?}");
        assert_eq!(
            distinct.len(),
            MESSAGES,
            "a message was handed out twice: {got:?}"
        );
        assert_eq!(distinct, (1..=MESSAGES as u64).collect());
    }

    /// Concurrent sends to one device get distinct, gap-free sequence numbers and respect the
    /// depth limit.
    pub fn concurrent_senders<S: QueueStore>(store: S) {
        let q = queues(
            store,
            C2dConfig {
                max_queue_depth: 30,
                ..C2dConfig::default()
            },
        );
        let t = at(0);
        let results: Vec<Result<QueuedMessage, C2dError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|n| {
                    let q = &q;
                    scope.spawn(move || {
                        (0..10)
                            .map(|i| {
                                block_on(q.send(
                                    &did("d"),
                                    GEN,
                                    msg(&format!("t{n}-{i}"), AckMode::None),
                                    t,
                                ))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("sender thread"))
                .collect()
        });
        let seqs: BTreeSet<u64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|m| m.sequence_number))
            .collect();
        let full = results
            .iter()
            .filter(|r| matches!(r, Err(C2dError::QueueFull { max: 30 })))
            .count();
        assert_eq!(seqs, (1..=30).collect(), "gap-free numbers");
        assert_eq!(full, 10);
        assert_eq!(queues_depth(&q, "d", t), 30);
    }

    /// Two queue façades over one store (two hub processes, one database): the guards keep
    /// them from handing out a message twice or reusing a sequence number.
    pub fn two_facades_share_a_store<S: QueueStore>(store: S) {
        let shared = Arc::new(store);
        let q1 = queues(Arc::clone(&shared), C2dConfig::default());
        let q2 = queues(Arc::clone(&shared), C2dConfig::default());
        let t = at(0);
        // Concurrent sends through both.
        let sent: Vec<u64> = std::thread::scope(|scope| {
            let a = scope.spawn(|| {
                (0..20)
                    .filter_map(|i| {
                        retry_conflict(|| {
                            block_on(q1.send(
                                &did("d"),
                                GEN,
                                msg(&format!("a{i}"), AckMode::None),
                                t,
                            ))
                        })
                    })
                    .map(|m| m.sequence_number)
                    .collect::<Vec<_>>()
            });
            let b = scope.spawn(|| {
                (0..20)
                    .filter_map(|i| {
                        retry_conflict(|| {
                            block_on(q2.send(
                                &did("d"),
                                GEN,
                                msg(&format!("b{i}"), AckMode::None),
                                t,
                            ))
                        })
                    })
                    .map(|m| m.sequence_number)
                    .collect::<Vec<_>>()
            });
            let mut all = a.join().expect("a");
            all.extend(b.join().expect("b"));
            all
        });
        let distinct: BTreeSet<u64> = sent.iter().copied().collect();
        assert_eq!(sent.len(), 40);
        assert_eq!(distinct, (1..=40).collect());
        // Concurrent receives through both.
        fn drain<S: QueueStore>(q: &C2dQueues<Arc<S>>) -> Vec<u64> {
            let t = at(0);
            let mut mine = Vec::new();
            loop {
                match retry_conflict(|| block_on(q.receive(&did("d"), t))) {
                    Some(Some(m)) => mine.push(m.sequence_number),
                    Some(None) => return mine,
                    None => {}
                }
            }
        }
        let got: Vec<u64> = std::thread::scope(|scope| {
            let a = scope.spawn(|| drain(&q1));
            let b = scope.spawn(|| drain(&q2));
            let mut all = a.join().expect("a");
            all.extend(b.join().expect("b"));
            all
        });
        let distinct: BTreeSet<u64> = got.iter().copied().collect();
        assert_eq!(got.len(), 40, "a message was handed out twice");
        assert_eq!(distinct, (1..=40).collect());
    }

    /// Runs `f` until it does not fail with a store conflict; `None` never happens in practice
    /// but keeps the helper total.
    fn retry_conflict<T>(mut f: impl FnMut() -> Result<T, C2dError>) -> Option<T> {
        for _ in 0..100 {
            match f() {
                Ok(v) => return Some(v),
                Err(C2dError::Store(StoreError::Conflict { .. })) => continue,
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        None
    }

    /// The raw store guards: what a new store implementation must get right.
    pub async fn store_guards<S: QueueStore>(s: S) {
        let d = did("d");
        let m = |seq: u64| QueuedMessage {
            device_id: d.clone(),
            sequence_number: seq,
            enqueued_time: at(0),
            expiry_time: at(100),
            delivery_count: 0,
            deliveries: 0,
            lock_token: None,
            locked_until: None,
            message: full_msg(&format!("m{seq}")),
            device_generation_id: GEN.to_owned(),
        };
        let unlocked = Expect {
            deliveries: 0,
            lock_token: None,
        };
        let insert = |seq, last| QueueChange::Insert {
            message: m(seq),
            expect_last_sequence_number: last,
        };
        s.apply(vec![insert(1, 0), insert(2, 1)])
            .await
            .expect("two inserts in one apply");
        assert_eq!(
            s.apply(vec![insert(3, 1)]).await,
            Err(StoreError::Conflict { index: 0 }),
            "a stale counter conflicts"
        );
        assert_eq!(
            s.apply(vec![insert(2, 2)]).await,
            Err(StoreError::Conflict { index: 0 }),
            "a number at or below the counter conflicts"
        );
        // All or nothing: the insert is rolled back with the failing removal.
        assert_eq!(
            s.apply(vec![
                insert(3, 2),
                QueueChange::AddFeedback {
                    record: crate::FeedbackRecord {
                        original_message_id: "x".into(),
                        device_id: "d".into(),
                        device_generation_id: GEN.into(),
                        enqueued_time_utc: at(0),
                        status_code: FeedbackStatus::Purged,
                        description: "Purged".into(),
                    },
                    expiry_time: at(100),
                },
                QueueChange::RemoveMessage {
                    device_id: d.clone(),
                    sequence_number: 9,
                    expect: unlocked.clone(),
                },
            ])
            .await,
            Err(StoreError::Conflict { index: 2 })
        );
        let queue = s.queue(&d).await.expect("queue");
        assert_eq!(queue.last_sequence_number, 2);
        assert_eq!(queue.messages.len(), 2);
        assert!(
            s.available_feedback(at(0), 10)
                .await
                .expect("feedback")
                .is_empty()
        );
        assert_eq!(s.message(&d, 2).await.expect("read"), Some(m(2)));
        assert_eq!(s.message(&d, 3).await.expect("read"), None);

        // State changes need the expected (deliveries, lock token).
        let locked = crate::store::MessageState {
            delivery_count: 0,
            deliveries: 1,
            lock_token: Some("t1".into()),
            locked_until: Some(at(60)),
        };
        let set =
            |state: &crate::store::MessageState, expect: &Expect| QueueChange::SetMessageState {
                device_id: d.clone(),
                sequence_number: 1,
                state: state.clone(),
                expect: expect.clone(),
            };
        s.apply(vec![set(&locked, &unlocked)]).await.expect("lock");
        assert_eq!(
            s.apply(vec![set(&locked, &unlocked)]).await,
            Err(StoreError::Conflict { index: 0 }),
            "the second locker loses"
        );
        let head = s.queue(&d).await.expect("queue").messages[0].clone();
        assert_eq!(head.state, locked);
        assert_eq!(head.ack, AckMode::Full);
        assert_eq!(head.message_id.as_deref(), Some("m1"));
        let held = head.expect();
        assert_eq!(
            s.apply(vec![QueueChange::RemoveMessage {
                device_id: d.clone(),
                sequence_number: 1,
                expect: unlocked.clone(),
            }])
            .await,
            Err(StoreError::Conflict { index: 0 })
        );
        s.apply(vec![QueueChange::RemoveMessage {
            device_id: d.clone(),
            sequence_number: 1,
            expect: held,
        }])
        .await
        .expect("remove with the right guard");
        assert_eq!(
            s.devices_with_expired_messages(at(100))
                .await
                .expect("read"),
            vec![d.clone()]
        );
        assert!(
            s.devices_with_expired_messages(at(99))
                .await
                .expect("read")
                .is_empty()
        );
        s.apply(vec![QueueChange::DeleteDevice {
            device_id: d.clone(),
        }])
        .await
        .expect("delete");
        assert_eq!(s.queue(&d).await.expect("queue"), Default::default());
    }
}

/// Generates one `#[test]` per contract case in a module named `$name`; `$make` is evaluated
/// once per case and gives `(store, guard)`, the guard living until the case ends.
#[macro_export]
macro_rules! c2d_store_contract {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use $crate::contract::{block_on, cases};

            #[test]
            fn fifo_order_and_sequence_numbers() {
                let (s, _guard) = $make;
                cases::fifo_order_and_sequence_numbers(s);
            }

            #[test]
            fn messages_round_trip() {
                let (s, _guard) = $make;
                cases::messages_round_trip(s);
            }

            #[test]
            fn depth_limit() {
                let (s, _guard) = $make;
                cases::depth_limit(s);
            }

            #[test]
            fn size_limit() {
                let (s, _guard) = $make;
                cases::size_limit(s);
            }

            #[test]
            fn time_to_live() {
                let (s, _guard) = $make;
                cases::time_to_live(s);
            }

            #[test]
            fn expired_messages_are_never_delivered() {
                let (s, _guard) = $make;
                cases::expired_messages_are_never_delivered(s);
            }

            #[test]
            fn sweep_dead_letters_expired() {
                let (s, _guard) = $make;
                cases::sweep_dead_letters_expired(s);
            }

            #[test]
            fn lock_expiry_redelivers_without_counting() {
                let (s, _guard) = $make;
                cases::lock_expiry_redelivers_without_counting(s);
            }

            #[test]
            fn feedback_follows_ack_mode() {
                let (s, _guard) = $make;
                cases::feedback_follows_ack_mode(s);
            }

            #[test]
            fn abandon_counts_up_to_the_maximum() {
                let (s, _guard) = $make;
                cases::abandon_counts_up_to_the_maximum(s);
            }

            #[test]
            fn release_requeues_without_counting() {
                let (s, _guard) = $make;
                cases::release_requeues_without_counting(s);
            }

            #[test]
            fn purge_counts_and_reports() {
                let (s, _guard) = $make;
                cases::purge_counts_and_reports(s);
            }

            #[test]
            fn lost_locks() {
                let (s, _guard) = $make;
                cases::lost_locks(s);
            }

            #[test]
            fn feedback_batches() {
                let (s, _guard) = $make;
                cases::feedback_batches(s);
            }

            #[test]
            fn feedback_expires() {
                let (s, _guard) = $make;
                cases::feedback_expires(s);
            }

            #[test]
            fn delete_device_forgets_everything() {
                let (s, _guard) = $make;
                cases::delete_device_forgets_everything(s);
            }

            #[test]
            fn receive_and_complete_many() {
                let (s, _guard) = $make;
                cases::receive_and_complete_many(s);
            }

            #[test]
            fn concurrent_receivers_never_share() {
                let (s, _guard) = $make;
                cases::concurrent_receivers_never_share(s);
            }

            #[test]
            fn concurrent_senders() {
                let (s, _guard) = $make;
                cases::concurrent_senders(s);
            }

            #[test]
            fn two_facades_share_a_store() {
                let (s, _guard) = $make;
                cases::two_facades_share_a_store(s);
            }

            #[test]
            fn store_guards() {
                let (s, _guard) = $make;
                block_on(cases::store_guards(s));
            }
        }
    };
}
