//! The queue contract (`ferrohub_c2d::contract`) run over every store of this crate, and what
//! only the façade promises.

use ferrohub_c2d::{C2dConfig, C2dError, C2dQueues, OutgoingMessage};

use crate::common::*;

ferrohub_c2d::c2d_store_contract!(memory_store, memory());
ferrohub_c2d::c2d_store_contract!(sqlite_store, sqlite());

/// Configuration is checked at open, and the queues' futures can move between threads.
mod facade {
    use super::*;
    use ferrohub_c2d::MemoryQueueStore;

    #[test]
    fn open_refuses_a_bad_config() {
        let bad = C2dConfig {
            max_delivery_count: 0,
            ..C2dConfig::default()
        };
        match block_on(C2dQueues::open(MemoryQueueStore::new(), bad)) {
            Err(C2dError::InvalidArgument(m)) => assert!(m.contains("max_delivery_count"), "{m}"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn futures_are_send() {
        let q = queues(MemoryQueueStore::new(), C2dConfig::default());
        let d = did("d");
        let t = at(0);
        assert_send(&q.send(&d, "g", OutgoingMessage::new("x"), t));
        assert_send(&q.receive(&d, t));
        assert_send(&q.complete(&d, "t", t));
        assert_send(&q.abandon(&d, "t", t));
        assert_send(&q.reject(&d, "t", t));
        assert_send(&q.release(&d, "t", t));
        assert_send(&q.purge(&d, t));
        assert_send(&q.depth(&d, t));
        assert_send(&q.sweep(t));
        assert_send(&q.delete_device(&d));
        assert_send(&q.receive_feedback(t));
        assert_send(&q.complete_feedback("t", t));
        assert_send(&q.abandon_feedback("t", t));
        assert_send(&q.devices_with_messages());
        let dir = tempfile::tempdir().expect("dir");
        let sq = queues(
            ferrohub_c2d::SqliteQueueStore::open(dir.path().join("q.db")).expect("open"),
            C2dConfig::default(),
        );
        assert_send(&sq.receive(&d, t));
    }
}
