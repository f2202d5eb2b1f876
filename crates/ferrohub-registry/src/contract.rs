//! The [`RegistryStore`] contract as a suite any store can run: the PostgreSQL store of
//! `ferrohub-cluster` runs the same cases as [`MemoryStore`](crate::MemoryStore) and
//! [`SqliteStore`](crate::SqliteStore), so every backend keeps the same compare-and-set rules.
//!
//! Built only with the `contract-suite` feature (tests of store crates enable it). The cases
//! panic on a broken rule, as tests do. They need no async runtime: [`block_on`] runs them on
//! the calling thread, and a store whose futures need a runtime (tokio, for a network client)
//! has to drive its I/O elsewhere, as the PostgreSQL store does on its own runtime handle.
//!
//! A store crate runs the whole suite with [`registry_store_contract!`](crate::registry_store_contract):
//!
//! ```ignore
//! ferrohub_registry::registry_store_contract!(memory_store, (MemoryStore::new(), ()));
//! ```
//!
//! The second argument is an expression evaluated once per case, giving `(store, guard)`: the
//! guard (a temporary directory, a database dropped afterwards) lives until the case ends.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use chrono::{DateTime, Utc};
use ferrohub_types::{DeviceId, ModuleId};

use crate::{
    Authentication, ConnectionState, Device, DeviceStatus, ETag, Module, StoredTwin,
    X509Thumbprints,
};

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

/// A device id from a string known to be valid.
pub fn did(s: &str) -> DeviceId {
    DeviceId::new(s).expect("valid device id")
}

/// A module id from a string known to be valid.
pub fn mid(s: &str) -> ModuleId {
    ModuleId::new(s).expect("valid module id")
}

/// A fixed instant plus `secs` seconds.
pub fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("valid time")
}

/// A key of `n` bytes, all `b`, in base64.
pub fn key(b: u8, n: usize) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(vec![b; n])
}

/// A stored device document with the given version.
pub fn device(id: &str, version: u64) -> Device {
    Device {
        device_id: did(id),
        generation_id: "123456789012345678".to_owned(),
        version,
        etag: ETag::from_version(version),
        status: DeviceStatus::Enabled,
        status_reason: None,
        status_updated_time: None,
        connection_state: ConnectionState::Disconnected,
        connection_state_updated_time: None,
        last_activity_time: None,
        cloud_to_device_message_count: 0,
        authentication: Authentication::sas(key(1, 32), key(2, 32)),
        iot_edge: false,
        device_scope: None,
        parent_scopes: Vec::new(),
    }
}

/// A device document with every optional field set.
pub fn full_device(id: &str) -> Device {
    Device {
        status: DeviceStatus::Disabled,
        status_reason: Some("maintenance — überholt".to_owned()),
        status_updated_time: Some(at(1)),
        connection_state: ConnectionState::Connected,
        connection_state_updated_time: Some(at(2)),
        last_activity_time: Some(at(3)),
        cloud_to_device_message_count: 7,
        authentication: Authentication {
            kind: crate::AuthType::SelfSigned,
            symmetric_key: None,
            x509_thumbprint: X509Thumbprints {
                primary_thumbprint: Some("ab".repeat(20)),
                secondary_thumbprint: Some("CD".repeat(32)),
            },
        },
        iot_edge: true,
        device_scope: Some("ms-azure-iot-edge://edge-1".to_owned()),
        parent_scopes: vec!["ms-azure-iot-edge://parent-1".to_owned()],
        ..device(id, 3)
    }
}

/// A stored module document with the given version.
pub fn module(d: &str, m: &str, version: u64) -> Module {
    Module {
        device_id: did(d),
        module_id: mid(m),
        generation_id: "876543210987654321".to_owned(),
        version,
        etag: ETag::from_version(version),
        managed_by: None,
        connection_state: ConnectionState::Disconnected,
        connection_state_updated_time: None,
        last_activity_time: None,
        cloud_to_device_message_count: 0,
        authentication: Authentication::sas(key(3, 32), key(4, 32)),
    }
}

/// A stored twin at store version `version` whose documents differ by `n`: tags, desired and
/// reported properties set (nested objects, arrays, non-ASCII text) by the twin's own
/// operations.
pub fn twin(version: u64, n: u64) -> StoredTwin {
    use ferrohub_twin::{IfMatch, Twin};
    let body = serde_json::json!({
        "tags": {"n": n, "site": {"building": "B7", "floor": 3}},
        "properties": {"desired": {"fw": format!("{n}.0"), "cfg": {"rates": [1, 2.5, "x"], "ünï": true}}}
    });
    let base = Twin::new(at(0));
    let twin = base
        .service_patch(&body, &IfMatch::Any, at(10))
        .expect("a valid patch")
        .twin;
    let twin = twin
        .device_report(
            format!(r#"{{"fw":"{n}.0","temp":{{"c":21.5}}}}"#).as_bytes(),
            None,
            at(20),
        )
        .expect("a valid report")
        .twin;
    StoredTwin { version, twin }
}

/// The contract's cases, generic over the store. Each starts from an empty store.
pub mod cases {
    use super::*;
    use std::pin::Pin;

    use crate::{Change, Expect, RegistryStatistics, RegistryStore, StoreError};

    fn put(d: crate::Device, expect: Expect) -> Change {
        Change::PutDevice { device: d, expect }
    }

    fn put_module(m: crate::Module, expect: Expect) -> Change {
        Change::PutModule { module: m, expect }
    }

    fn put_twin(d: &str, m: Option<&str>, twin: StoredTwin, expect: Expect) -> Change {
        Change::PutTwin {
            device_id: did(d),
            module_id: m.map(mid),
            twin,
            expect,
        }
    }

    pub async fn twins_need_their_identity<S: RegistryStore>(s: &S) {
        assert_eq!(
            s.apply(vec![put_twin("d1", None, twin(0, 1), Expect::Absent)])
                .await,
            Err(StoreError::Conflict { index: 0 }),
            "no twin without its device"
        );
        s.apply(vec![
            put(device("d1", 0), Expect::Absent),
            put_twin("d1", None, twin(0, 1), Expect::Absent),
        ])
        .await
        .expect("a device and its twin in one batch");
        assert_eq!(
            s.apply(vec![put_twin("d1", Some("m1"), twin(0, 2), Expect::Absent)])
                .await,
            Err(StoreError::Conflict { index: 0 }),
            "no module twin without its module"
        );
        s.apply(vec![
            put_module(module("d1", "m1", 0), Expect::Absent),
            put_twin("d1", Some("m1"), twin(0, 2), Expect::Absent),
        ])
        .await
        .expect("a module and its twin in one batch");
        assert_eq!(
            s.twin(&did("d1"), None).await.expect("read"),
            Some(twin(0, 1))
        );
        assert_eq!(
            s.twin(&did("d1"), Some(&mid("m1"))).await.expect("read"),
            Some(twin(0, 2)),
            "the module's twin is its own"
        );
        assert_eq!(s.twin(&did("nope"), None).await.expect("read"), None);
        assert_eq!(
            s.twin(&did("d1"), Some(&mid("m2"))).await.expect("read"),
            None
        );
        s.apply(vec![put(device("d2", 0), Expect::Absent)])
            .await
            .expect("insert");
        assert_eq!(
            s.twin(&did("d2"), None).await.expect("read"),
            None,
            "a device starts without a stored twin"
        );
    }

    pub async fn device_twins_page_in_id_order<S: RegistryStore>(s: &S) {
        s.apply(vec![
            put(device("d3", 0), Expect::Absent),
            put(device("d1", 0), Expect::Absent),
            put(device("d2", 0), Expect::Absent),
            put_module(module("d1", "m1", 0), Expect::Absent),
            put_twin("d2", None, twin(0, 5), Expect::Absent),
            put_twin("d1", Some("m1"), twin(0, 6), Expect::Absent),
        ])
        .await
        .expect("seed");
        let ids = |page: &[(crate::Device, Option<StoredTwin>)]| {
            page.iter()
                .map(|(d, _)| d.device_id.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        let first = s.device_twins(None, 2).await.expect("first page");
        assert_eq!(ids(&first), ["d1", "d2"]);
        assert_eq!(first[0].1, None, "a module's twin is not its device's");
        assert_eq!(first[1].1, Some(twin(0, 5)));
        let rest = s
            .device_twins(Some(&did("d2")), 2)
            .await
            .expect("next page");
        assert_eq!(ids(&rest), ["d3"]);
        assert!(
            s.device_twins(Some(&did("d3")), 2)
                .await
                .expect("past the end")
                .is_empty()
        );
        // `after` need not be a stored id.
        assert_eq!(
            ids(&s.device_twins(Some(&did("d1x")), 5).await.expect("read")),
            ["d2", "d3"]
        );
    }

    pub async fn twin_writes_need_the_current_version<S: RegistryStore>(s: &S) {
        s.apply(vec![
            put(device("d1", 0), Expect::Absent),
            put_twin("d1", None, twin(0, 1), Expect::Absent),
        ])
        .await
        .expect("seed");
        assert_eq!(
            s.apply(vec![put_twin("d1", None, twin(0, 2), Expect::Absent)])
                .await,
            Err(StoreError::Conflict { index: 0 }),
            "a second first write conflicts"
        );
        s.apply(vec![put_twin("d1", None, twin(1, 3), Expect::Version(0))])
            .await
            .expect("update from version 0");
        assert_eq!(
            s.apply(vec![put_twin("d1", None, twin(2, 4), Expect::Version(0))])
                .await,
            Err(StoreError::Conflict { index: 0 }),
            "a stale version conflicts"
        );
        assert_eq!(
            s.twin(&did("d1"), None).await.expect("read"),
            Some(twin(1, 3))
        );
        // A device update leaves its twin alone, and a twin write its device.
        s.apply(vec![put(device("d1", 1), Expect::Version(0))])
            .await
            .expect("device update");
        assert_eq!(
            s.twin(&did("d1"), None).await.expect("read"),
            Some(twin(1, 3))
        );
        assert_eq!(
            s.device(&did("d1")).await.expect("read").map(|d| d.version),
            Some(1)
        );
    }

    pub async fn twins_go_with_their_identity<S: RegistryStore>(s: &S) {
        s.apply(vec![
            put(device("d1", 0), Expect::Absent),
            put_module(module("d1", "m1", 0), Expect::Absent),
            put_module(module("d1", "m2", 0), Expect::Absent),
            put_twin("d1", None, twin(0, 1), Expect::Absent),
            put_twin("d1", Some("m1"), twin(0, 2), Expect::Absent),
            put_twin("d1", Some("m2"), twin(0, 3), Expect::Absent),
            put(device("d2", 0), Expect::Absent),
            put_twin("d2", None, twin(0, 4), Expect::Absent),
        ])
        .await
        .expect("seed");
        s.apply(vec![Change::DeleteModule {
            device_id: did("d1"),
            module_id: mid("m1"),
            expect: Expect::Version(0),
        }])
        .await
        .expect("delete module");
        assert_eq!(
            s.twin(&did("d1"), Some(&mid("m1"))).await.expect("read"),
            None
        );
        assert_eq!(
            s.twin(&did("d1"), None).await.expect("read"),
            Some(twin(0, 1)),
            "the device's twin stays"
        );
        // A module re-created under the old id starts without a twin.
        s.apply(vec![put_module(module("d1", "m1", 0), Expect::Absent)])
            .await
            .expect("re-create module");
        assert_eq!(
            s.twin(&did("d1"), Some(&mid("m1"))).await.expect("read"),
            None
        );
        s.apply(vec![Change::DeleteDevice {
            id: did("d1"),
            expect: Expect::Version(0),
        }])
        .await
        .expect("delete device");
        assert_eq!(s.twin(&did("d1"), None).await.expect("read"), None);
        assert_eq!(
            s.twin(&did("d1"), Some(&mid("m2"))).await.expect("read"),
            None,
            "its modules' twins go too"
        );
        assert_eq!(
            s.twin(&did("d2"), None).await.expect("read"),
            Some(twin(0, 4)),
            "other devices' twins stay"
        );
        s.apply(vec![
            put(device("d1", 0), Expect::Absent),
            put_module(module("d1", "m2", 0), Expect::Absent),
        ])
        .await
        .expect("re-create");
        assert_eq!(s.twin(&did("d1"), None).await.expect("read"), None);
        assert_eq!(
            s.twin(&did("d1"), Some(&mid("m2"))).await.expect("read"),
            None
        );
    }

    pub async fn twin_changes_roll_back_with_their_batch<S: RegistryStore>(s: &S) {
        s.apply(vec![
            put(device("d1", 0), Expect::Absent),
            put_module(module("d1", "m1", 0), Expect::Absent),
            put_twin("d1", None, twin(0, 1), Expect::Absent),
            put_twin("d1", Some("m1"), twin(0, 2), Expect::Absent),
        ])
        .await
        .expect("seed");
        let result = s
            .apply(vec![
                put_twin("d1", None, twin(1, 5), Expect::Version(0)),
                put(device("new", 0), Expect::Absent),
                put_twin("new", None, twin(0, 6), Expect::Absent),
                Change::DeleteModule {
                    device_id: did("d1"),
                    module_id: mid("m1"),
                    expect: Expect::Version(0),
                },
                put(device("c", 8), Expect::Version(7)),
            ])
            .await;
        assert_eq!(result, Err(StoreError::Conflict { index: 4 }));
        assert_eq!(
            s.twin(&did("d1"), None).await.expect("read"),
            Some(twin(0, 1)),
            "the twin update was rolled back"
        );
        assert_eq!(
            s.twin(&did("d1"), Some(&mid("m1"))).await.expect("read"),
            Some(twin(0, 2)),
            "the module's twin came back with its module"
        );
        assert_eq!(s.twin(&did("new"), None).await.expect("read"), None);
        assert_eq!(s.device(&did("new")).await.expect("read"), None);
    }

    /// The keys a scan returns, as `device` or `device/module`.
    async fn scan_keys<S: RegistryStore>(
        s: &S,
        collection: ferrohub_query::Collection,
        condition: &str,
        after: Option<ferrohub_query::RowKey>,
        limit: usize,
    ) -> Vec<String> {
        let condition = ferrohub_query::Condition::parse(condition).expect("a valid condition");
        s.query_twins(crate::TwinScan {
            collection,
            condition,
            after,
            limit,
        })
        .await
        .expect("scan")
        .into_iter()
        .map(|row| {
            let key = row.key();
            match key.child_id() {
                None => key.device_id().to_owned(),
                Some(m) => format!("{}/{m}", key.device_id()),
            }
        })
        .collect()
    }

    /// Every row of the collection, read in batches of `limit` as the hub pages.
    async fn scan_all<S: RegistryStore>(
        s: &S,
        collection: ferrohub_query::Collection,
        condition: &str,
        limit: usize,
    ) -> Vec<String> {
        let condition = ferrohub_query::Condition::parse(condition).expect("a valid condition");
        let mut after = None;
        let mut out = Vec::new();
        loop {
            let rows = s
                .query_twins(crate::TwinScan {
                    collection,
                    condition: condition.clone(),
                    after: after.clone(),
                    limit,
                })
                .await
                .expect("scan");
            assert!(rows.len() <= limit, "a batch holds at most its limit");
            let n = rows.len();
            for row in rows {
                let key = row.key();
                assert!(
                    after.as_ref().is_none_or(|a| key > *a),
                    "rows come after the resume key, in key order"
                );
                out.push(match key.child_id() {
                    None => key.device_id().to_owned(),
                    Some(m) => format!("{}/{m}", key.device_id()),
                });
                after = Some(key);
            }
            if n < limit {
                return out;
            }
        }
    }

    pub async fn queries_scan_in_key_order<S: RegistryStore>(s: &S) {
        use ferrohub_query::{Collection, RowKey};
        let ids = ["b", "B", "a", "10", "9", "A", "a-1", "a.1"];
        for id in ids {
            s.apply(vec![put(device(id, 0), Expect::Absent)])
                .await
                .expect("insert");
        }
        for m in ["z", "M", "a"] {
            s.apply(vec![put_module(module("a", m, 0), Expect::Absent)])
                .await
                .expect("insert module");
        }
        s.apply(vec![put_module(module("B", "x", 0), Expect::Absent)])
            .await
            .expect("insert module");
        s.apply(vec![put_twin("a", None, twin(0, 1), Expect::Absent)])
            .await
            .expect("twin");
        let mut sorted: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
        sorted.sort_unstable(); // byte order
        for limit in [1, 2, 3, 100] {
            assert_eq!(
                scan_all(s, Collection::Devices, "*", limit).await,
                sorted,
                "batches of {limit}"
            );
        }
        assert_eq!(
            scan_keys(s, Collection::Devices, "*", Some(RowKey::device("a")), 2).await,
            ["a-1", "a.1"]
        );
        assert_eq!(
            scan_keys(s, Collection::Devices, "*", Some(RowKey::device("zz")), 2).await,
            Vec::<String>::new()
        );
        // Rows carry their identity and their twin (None: never written).
        let rows = s
            .query_twins(crate::TwinScan {
                collection: Collection::Devices,
                condition: ferrohub_query::Condition::All,
                after: Some(RowKey::device("A")),
                limit: 2,
            })
            .await
            .expect("scan");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].owner, crate::TwinOwner::Device(device("B", 0)));
        assert_eq!(rows[0].twin, None);
        assert_eq!(rows[1].owner, crate::TwinOwner::Device(device("a", 0)));
        assert_eq!(rows[1].twin, Some(twin(0, 1)));

        for limit in [1, 2, 100] {
            assert_eq!(
                scan_all(s, Collection::Modules, "*", limit).await,
                ["B/x", "a/M", "a/a", "a/z"],
                "module batches of {limit}"
            );
        }
        assert_eq!(
            scan_keys(
                s,
                Collection::Modules,
                "*",
                Some(RowKey::module("a", "M")),
                10
            )
            .await,
            ["a/a", "a/z"],
            "a module key resumes inside its device"
        );
        assert!(
            scan_keys(s, Collection::Jobs, "*", None, 10)
                .await
                .is_empty(),
            "no per-device job records are stored"
        );
    }

    pub async fn queries_select_by_twin_and_id<S: RegistryStore>(s: &S) {
        use ferrohub_query::Collection;
        for (i, id) in ["d1", "d2", "d3", "d4", "d5"].into_iter().enumerate() {
            s.apply(vec![put(device(id, 0), Expect::Absent)])
                .await
                .expect("insert");
            if i < 4 {
                // d5 keeps the initial twin.
                s.apply(vec![put_twin(
                    id,
                    None,
                    twin(0, i as u64 + 1),
                    Expect::Absent,
                )])
                .await
                .expect("twin");
            }
        }
        s.apply(vec![put_module(module("d2", "m1", 0), Expect::Absent)])
            .await
            .expect("module");
        s.apply(vec![put_module(module("d3", "m1", 0), Expect::Absent)])
            .await
            .expect("module");
        s.apply(vec![put_twin("d3", Some("m1"), twin(0, 7), Expect::Absent)])
            .await
            .expect("module twin");

        // Every row the condition selects is returned (the caller evaluates exactly); the
        // stores of this workspace push these conditions down, so nothing else is.
        let cases: &[(&str, &[&str])] = &[
            ("tags.n = 2", &["d2"]),
            ("tags.n >= 2 AND tags.n < 4", &["d2", "d3"]),
            ("tags.n IN [1, 4, 9]", &["d1", "d4"]),
            (
                "tags.site.building = 'B7' AND properties.desired.fw = '3.0'",
                &["d3"],
            ),
            ("properties.reported.temp.c > 21", &["d1", "d2", "d3", "d4"]),
            ("NOT IS_DEFINED(tags.n)", &["d5"]),
            (
                "IS_DEFINED(tags.n) OR deviceId = 'd5'",
                &["d1", "d2", "d3", "d4", "d5"],
            ),
            ("deviceId IN ['d4', 'd1', 'nope']", &["d1", "d4"]),
            ("STARTSWITH(properties.desired.fw, '4.')", &["d4"]),
            ("properties.desired.$version = 2", &["d1", "d2", "d3", "d4"]),
            ("tags.n = '2'", &[]),
        ];
        for (condition, expected) in cases {
            assert_eq!(
                scan_all(s, Collection::Devices, condition, 2).await,
                *expected,
                "WHERE {condition}"
            );
        }
        // Live fields are never filtered by the store: every row may match.
        assert_eq!(
            scan_all(s, Collection::Devices, "connectionState = 'Connected'", 10)
                .await
                .len(),
            5
        );
        assert_eq!(
            scan_all(s, Collection::Modules, "tags.n = 7", 10).await,
            ["d3/m1"]
        );
        assert_eq!(
            scan_all(
                s,
                Collection::Modules,
                "moduleId = 'm1' AND deviceId = 'd2'",
                10
            )
            .await,
            ["d2/m1"]
        );
    }

    pub async fn insert_then_insert_again_conflicts<S: RegistryStore>(s: &S) {
        s.apply(vec![put(device("d1", 0), Expect::Absent)])
            .await
            .expect("insert");
        assert_eq!(
            s.apply(vec![put(device("d1", 0), Expect::Absent)]).await,
            Err(StoreError::Conflict { index: 0 })
        );
        let got = s.device(&did("d1")).await.expect("read").expect("present");
        assert_eq!(got, device("d1", 0));
        assert_eq!(
            s.device(&did("D1")).await.expect("read"),
            None,
            "ids are case-sensitive"
        );
    }

    pub async fn update_needs_the_current_version<S: RegistryStore>(s: &S) {
        s.apply(vec![put(device("d1", 0), Expect::Absent)])
            .await
            .expect("insert");
        s.apply(vec![put(device("d1", 1), Expect::Version(0))])
            .await
            .expect("update from version 0");
        assert_eq!(
            s.apply(vec![put(device("d1", 2), Expect::Version(0))])
                .await,
            Err(StoreError::Conflict { index: 0 }),
            "a stale version conflicts"
        );
        assert_eq!(
            s.apply(vec![put(device("nope", 1), Expect::Version(0))])
                .await,
            Err(StoreError::Conflict { index: 0 }),
            "updating a missing device conflicts"
        );
        let got = s.device(&did("d1")).await.expect("read").expect("present");
        assert_eq!(got.version, 1);
        assert_eq!(s.device(&did("nope")).await.expect("read"), None);
    }

    pub async fn delete_needs_the_current_version<S: RegistryStore>(s: &S) {
        s.apply(vec![put(device("d1", 4), Expect::Absent)])
            .await
            .expect("insert");
        let delete = |expect| Change::DeleteDevice {
            id: did("d1"),
            expect,
        };
        assert_eq!(
            s.apply(vec![delete(Expect::Version(3))]).await,
            Err(StoreError::Conflict { index: 0 })
        );
        assert_eq!(
            s.apply(vec![delete(Expect::Absent)]).await,
            Err(StoreError::Conflict { index: 0 })
        );
        s.apply(vec![delete(Expect::Version(4))])
            .await
            .expect("delete");
        assert_eq!(s.device(&did("d1")).await.expect("read"), None);
        s.apply(vec![delete(Expect::Absent)])
            .await
            .expect("absent as expected");
        assert_eq!(
            s.apply(vec![delete(Expect::Version(4))]).await,
            Err(StoreError::Conflict { index: 0 })
        );
    }

    pub async fn apply_is_all_or_nothing<S: RegistryStore>(s: &S) {
        s.apply(vec![
            put(device("x", 0), Expect::Absent),
            put_module(module("x", "m", 0), Expect::Absent),
        ])
        .await
        .expect("seed");
        let result = s
            .apply(vec![
                put(device("a", 0), Expect::Absent),
                put(device("x", 1), Expect::Version(0)),
                put_module(module("x", "m2", 0), Expect::Absent),
                Change::DeleteModule {
                    device_id: did("x"),
                    module_id: mid("m"),
                    expect: Expect::Version(0),
                },
                put(device("b", 0), Expect::Absent),
                put(device("c", 8), Expect::Version(7)),
            ])
            .await;
        assert_eq!(result, Err(StoreError::Conflict { index: 5 }));
        assert_eq!(s.device(&did("a")).await.expect("read"), None);
        assert_eq!(s.device(&did("b")).await.expect("read"), None);
        let x = s.device(&did("x")).await.expect("read").expect("present");
        assert_eq!(x.version, 0, "the update was rolled back");
        let modules = s.modules(&did("x")).await.expect("read");
        assert_eq!(
            modules,
            vec![module("x", "m", 0)],
            "module changes rolled back"
        );

        // A delete and re-create of the same device in one batch, rolled back.
        let result = s
            .apply(vec![
                Change::DeleteDevice {
                    id: did("x"),
                    expect: Expect::Version(0),
                },
                put(device("x", 0), Expect::Absent),
                put(device("y", 0), Expect::Version(0)),
            ])
            .await;
        assert_eq!(result, Err(StoreError::Conflict { index: 2 }));
        assert_eq!(
            s.modules(&did("x")).await.expect("read"),
            vec![module("x", "m", 0)],
            "the cascade was rolled back"
        );
    }

    pub async fn deleting_a_device_deletes_its_modules<S: RegistryStore>(s: &S) {
        s.apply(vec![
            put(device("d1", 0), Expect::Absent),
            put_module(module("d1", "m1", 0), Expect::Absent),
            put_module(module("d1", "m2", 0), Expect::Absent),
            put(device("d2", 0), Expect::Absent),
            put_module(module("d2", "m1", 0), Expect::Absent),
        ])
        .await
        .expect("seed");
        s.apply(vec![Change::DeleteDevice {
            id: did("d1"),
            expect: Expect::Version(0),
        }])
        .await
        .expect("delete");
        assert_eq!(s.modules(&did("d1")).await.expect("read"), vec![]);
        assert_eq!(s.module(&did("d1"), &mid("m1")).await.expect("read"), None);
        assert_eq!(
            s.module(&did("d2"), &mid("m1")).await.expect("read"),
            Some(module("d2", "m1", 0)),
            "other devices' modules stay"
        );
        // A new device under the old id starts without modules.
        s.apply(vec![put(device("d1", 0), Expect::Absent)])
            .await
            .expect("re-create");
        assert_eq!(s.modules(&did("d1")).await.expect("read"), vec![]);
    }

    pub async fn modules_need_their_device<S: RegistryStore>(s: &S) {
        assert_eq!(
            s.apply(vec![put_module(module("d1", "m1", 0), Expect::Absent)])
                .await,
            Err(StoreError::Conflict { index: 0 })
        );
        s.apply(vec![
            put(device("d1", 0), Expect::Absent),
            put_module(module("d1", "m1", 0), Expect::Absent),
        ])
        .await
        .expect("device and module in one batch");
        assert_eq!(
            s.apply(vec![put_module(module("d1", "m1", 0), Expect::Absent)])
                .await,
            Err(StoreError::Conflict { index: 0 })
        );
        s.apply(vec![put_module(module("d1", "m1", 1), Expect::Version(0))])
            .await
            .expect("update module");
        assert_eq!(
            s.apply(vec![put_module(module("d1", "m1", 2), Expect::Version(0))])
                .await,
            Err(StoreError::Conflict { index: 0 })
        );
        let delete = |expect| Change::DeleteModule {
            device_id: did("d1"),
            module_id: mid("m1"),
            expect,
        };
        assert_eq!(
            s.apply(vec![delete(Expect::Version(0))]).await,
            Err(StoreError::Conflict { index: 0 })
        );
        s.apply(vec![delete(Expect::Version(1))])
            .await
            .expect("delete module");
        assert_eq!(s.module(&did("d1"), &mid("m1")).await.expect("read"), None);
        s.apply(vec![delete(Expect::Absent)]).await.expect("absent");
        assert!(s.device(&did("d1")).await.expect("read").is_some());
    }

    pub async fn listings_are_ordered_and_limited<S: RegistryStore>(s: &S) {
        let ids = ["b", "B", "a", "10", "9", "A", "a-1", "a.1"];
        for id in ids {
            s.apply(vec![put(device(id, 0), Expect::Absent)])
                .await
                .expect("insert");
        }
        let mut sorted: Vec<&str> = ids.to_vec();
        sorted.sort_unstable(); // byte order
        let all: Vec<String> = s
            .devices(100)
            .await
            .expect("list")
            .into_iter()
            .map(|d| d.device_id.to_string())
            .collect();
        assert_eq!(all, sorted);
        let three: Vec<String> = s
            .devices(3)
            .await
            .expect("list")
            .into_iter()
            .map(|d| d.device_id.to_string())
            .collect();
        assert_eq!(three, sorted[..3]);
        assert!(s.devices(0).await.expect("list").is_empty());
        assert_eq!(s.devices(usize::MAX).await.expect("list").len(), ids.len());

        for m in ["z", "m", "M", "a"] {
            s.apply(vec![put_module(module("a", m, 0), Expect::Absent)])
                .await
                .expect("insert module");
        }
        let modules: Vec<String> = s
            .modules(&did("a"))
            .await
            .expect("list")
            .into_iter()
            .map(|m| m.module_id.to_string())
            .collect();
        assert_eq!(modules, ["M", "a", "m", "z"]);
        assert!(s.modules(&did("nope")).await.expect("list").is_empty());

        // Lookups by id keep the order asked for, with None for the unknown.
        let asked = [did("b"), did("nope"), did("A"), did("b")];
        let found: Vec<Option<String>> = s
            .devices_by_id(&asked)
            .await
            .expect("lookup")
            .into_iter()
            .map(|d| d.map(|d| d.device_id.to_string()))
            .collect();
        assert_eq!(
            found,
            [
                Some("b".to_owned()),
                None,
                Some("A".to_owned()),
                Some("b".to_owned())
            ]
        );
        assert!(s.devices_by_id(&[]).await.expect("lookup").is_empty());
    }

    pub async fn statistics_count_by_status<S: RegistryStore>(s: &S) {
        assert_eq!(
            s.statistics().await.expect("stats"),
            RegistryStatistics::default()
        );
        for i in 0..5 {
            let mut d = device(&format!("d{i}"), 0);
            if i % 2 == 1 {
                d.status = DeviceStatus::Disabled;
            }
            s.apply(vec![put(d, Expect::Absent)]).await.expect("insert");
        }
        s.apply(vec![put_module(module("d0", "m", 0), Expect::Absent)])
            .await
            .expect("module");
        assert_eq!(
            s.statistics().await.expect("stats"),
            RegistryStatistics {
                total_device_count: 5,
                enabled_device_count: 3,
                disabled_device_count: 2,
            }
        );
    }

    pub async fn identities_list_devices_and_modules<S: RegistryStore>(s: &S) {
        let mut disabled = device("off", 0);
        disabled.status = DeviceStatus::Disabled;
        s.apply(vec![
            put(device("on", 0), Expect::Absent),
            put(disabled, Expect::Absent),
            put(full_device("x509"), Expect::Absent),
            put_module(module("off", "m", 0), Expect::Absent),
        ])
        .await
        .expect("seed");
        let mut ids = s.identities().await.expect("identities");
        ids.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let summary: Vec<(String, Option<String>, bool, String, String)> = ids
            .into_iter()
            .map(|(d, m, a)| {
                (
                    d.to_string(),
                    m.map(|m| m.to_string()),
                    a.enabled,
                    a.primary_key,
                    a.secondary_key,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("off".into(), None, false, key(1, 32), key(2, 32)),
                ("off".into(), Some("m".into()), true, key(3, 32), key(4, 32)),
                ("on".into(), None, true, key(1, 32), key(2, 32)),
                ("x509".into(), None, false, String::new(), String::new()),
            ]
        );
    }

    pub async fn documents_round_trip<S: RegistryStore>(s: &S) {
        let d = full_device("full");
        let mut m = module("full", "edge", 9);
        m.managed_by = Some("IotEdge".to_owned());
        m.last_activity_time = Some(at(5));
        s.apply(vec![
            put(d.clone(), Expect::Absent),
            put_module(m.clone(), Expect::Absent),
        ])
        .await
        .expect("insert");
        assert_eq!(s.device(&did("full")).await.expect("read"), Some(d));
        assert_eq!(
            s.module(&did("full"), &mid("edge")).await.expect("read"),
            Some(m)
        );
    }

    /// Applies from several threads at once all land, each with its own outcome.
    pub fn concurrent_applies_all_land<S: RegistryStore>(s: &S) {
        const THREADS: usize = 4;
        const EACH: usize = 25;
        block_on(s.apply(vec![put(device("shared", 0), Expect::Absent)])).expect("seed");
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                scope.spawn(move || {
                    for i in 0..EACH {
                        let id = format!("t{t}-{i}");
                        block_on(s.apply(vec![put(device(&id, 0), Expect::Absent)]))
                            .expect("distinct ids never conflict");
                        // Every thread also races to bump the shared device from version 0:
                        // exactly one wins.
                        if i == 0 {
                            let _ = block_on(
                                s.apply(vec![put(device("shared", 1), Expect::Version(0))]),
                            );
                        }
                    }
                });
            }
        });
        let all = block_on(s.devices(1000)).expect("list");
        assert_eq!(all.len(), THREADS * EACH + 1);
        let shared = block_on(s.device(&did("shared")))
            .expect("read")
            .expect("present");
        assert_eq!(shared.version, 1);
    }

    /// Applies submitted together (likely one transaction) succeed or fail independently.
    pub async fn conflicting_apply_fails_alone<S: RegistryStore>(s: &S) {
        s.apply(vec![put(device("taken", 0), Expect::Absent)])
            .await
            .expect("seed");
        type Pending<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;
        let mut futures: Vec<Pending<'_>> = Vec::new();
        for i in 0..10 {
            let id = if i == 4 {
                "taken".to_owned()
            } else {
                format!("new{i}")
            };
            futures.push(Box::pin(s.apply(vec![put(device(&id, 0), Expect::Absent)])));
        }
        for (i, f) in futures.into_iter().enumerate() {
            let r = f.await;
            if i == 4 {
                assert_eq!(r, Err(StoreError::Conflict { index: 0 }));
            } else {
                assert_eq!(r, Ok(()), "apply {i}");
            }
        }
        assert_eq!(s.devices(100).await.expect("list").len(), 10);
    }
}

/// Generates one `#[test]` per contract case in a module named `$name`; `$make` is evaluated
/// once per case and gives `(store, guard)`, the guard living until the case ends.
#[macro_export]
macro_rules! registry_store_contract {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::contract::{block_on, cases};

            #[test]
            fn insert_then_insert_again_conflicts() {
                let (s, _guard) = $make;
                block_on(cases::insert_then_insert_again_conflicts(&s));
            }

            #[test]
            fn update_needs_the_current_version() {
                let (s, _guard) = $make;
                block_on(cases::update_needs_the_current_version(&s));
            }

            #[test]
            fn delete_needs_the_current_version() {
                let (s, _guard) = $make;
                block_on(cases::delete_needs_the_current_version(&s));
            }

            #[test]
            fn apply_is_all_or_nothing() {
                let (s, _guard) = $make;
                block_on(cases::apply_is_all_or_nothing(&s));
            }

            #[test]
            fn deleting_a_device_deletes_its_modules() {
                let (s, _guard) = $make;
                block_on(cases::deleting_a_device_deletes_its_modules(&s));
            }

            #[test]
            fn modules_need_their_device() {
                let (s, _guard) = $make;
                block_on(cases::modules_need_their_device(&s));
            }

            #[test]
            fn listings_are_ordered_and_limited() {
                let (s, _guard) = $make;
                block_on(cases::listings_are_ordered_and_limited(&s));
            }

            #[test]
            fn statistics_count_by_status() {
                let (s, _guard) = $make;
                block_on(cases::statistics_count_by_status(&s));
            }

            #[test]
            fn identities_list_devices_and_modules() {
                let (s, _guard) = $make;
                block_on(cases::identities_list_devices_and_modules(&s));
            }

            #[test]
            fn documents_round_trip() {
                let (s, _guard) = $make;
                block_on(cases::documents_round_trip(&s));
            }

            #[test]
            fn concurrent_applies_all_land() {
                let (s, _guard) = $make;
                cases::concurrent_applies_all_land(&s);
            }

            #[test]
            fn twins_need_their_identity() {
                let (s, _guard) = $make;
                block_on(cases::twins_need_their_identity(&s));
            }

            #[test]
            fn device_twins_page_in_id_order() {
                let (s, _guard) = $make;
                block_on(cases::device_twins_page_in_id_order(&s));
            }

            #[test]
            fn twin_writes_need_the_current_version() {
                let (s, _guard) = $make;
                block_on(cases::twin_writes_need_the_current_version(&s));
            }

            #[test]
            fn twins_go_with_their_identity() {
                let (s, _guard) = $make;
                block_on(cases::twins_go_with_their_identity(&s));
            }

            #[test]
            fn twin_changes_roll_back_with_their_batch() {
                let (s, _guard) = $make;
                block_on(cases::twin_changes_roll_back_with_their_batch(&s));
            }

            #[test]
            fn queries_scan_in_key_order() {
                let (s, _guard) = $make;
                block_on(cases::queries_scan_in_key_order(&s));
            }

            #[test]
            fn queries_select_by_twin_and_id() {
                let (s, _guard) = $make;
                block_on(cases::queries_select_by_twin_and_id(&s));
            }

            #[test]
            fn conflicting_apply_fails_alone() {
                let (s, _guard) = $make;
                block_on(cases::conflicting_apply_fails_alone(&s));
            }
        }
    };
}
