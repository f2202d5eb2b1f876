//! Twins in the registry: reads, service writes, reported patches and bulk twin data, over every
//! store, with the desired notifications they report.

use std::sync::{Arc, Mutex};

use ferrohub_registry::{
    DesiredChange, DeviceSpec, IdentityTwin, ImportMode, ImportRecord, ModuleSpec, Registry,
    RegistryError, RegistryStore, TwinOwner, initial_twin,
};
use ferrohub_twin::{IfMatch, ReportedPatch, TwinUpdate};
use ferrohub_types::ErrorCode;
use serde_json::{Value, json};

use crate::common::*;

/// A desired change as (device, module, version, notification body).
type Seen = (String, Option<String>, u64, Value);

/// Records every desired change.
fn desired_recorder<S: RegistryStore>(r: &Registry<S>) -> Arc<Mutex<Vec<Seen>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    r.on_desired_change(move |c: &DesiredChange| {
        sink.lock().expect("lock").push((
            c.device_id.to_string(),
            c.module_id.as_ref().map(ToString::to_string),
            c.patch.version(),
            c.patch.to_json(),
        ));
    });
    seen
}

fn patch(body: Value) -> TwinUpdate {
    TwinUpdate::patch(&body).expect("a valid patch")
}

fn replace(body: Value) -> TwinUpdate {
    TwinUpdate::replace(&body).expect("a valid replace")
}

fn reported(body: Value) -> ReportedPatch {
    ReportedPatch::from_json(&body).expect("a valid reported patch")
}

fn desired(t: &IdentityTwin) -> Value {
    Value::Object(t.twin.desired().values().clone())
}

mod cases {
    use super::*;

    pub(crate) async fn reads_give_the_initial_twin_until_written<S: RegistryStore>(
        r: Registry<S>,
    ) {
        let d = r
            .create_device(DeviceSpec::new(did("d1")), at(0))
            .await
            .expect("create");
        let t = r.twin(&did("d1"), None).await.expect("twin");
        assert_eq!(t.owner, TwinOwner::Device(d));
        assert_eq!(t.twin, initial_twin());
        assert_eq!(t.twin.etag().to_string(), "AAAAAAAAAAE=");
        assert_eq!(t.twin.version(), 2);
        assert_eq!(
            r.twin_document(&did("d1"), None).await.expect("document"),
            initial_twin()
        );
        let m = r
            .create_module(ModuleSpec::new(did("d1"), mid("m1")), at(0))
            .await
            .expect("module");
        let t = r.twin(&did("d1"), Some(&mid("m1"))).await.expect("twin");
        assert_eq!(t.owner, TwinOwner::Module(m));
        assert_eq!(t.owner.module_id(), Some(&mid("m1")));

        let e = r.twin(&did("nope"), None).await.expect_err("no device");
        assert_eq!(e.error_code(), ErrorCode::DeviceNotFound);
        let e = r
            .twin(&did("d1"), Some(&mid("nope")))
            .await
            .expect_err("no module");
        assert_eq!(e.error_code(), ErrorCode::ModuleNotFound);
        let e = r
            .twin(&did("nope"), Some(&mid("m1")))
            .await
            .expect_err("no device");
        assert_eq!(e.error_code(), ErrorCode::DeviceNotFound);
    }

    pub(crate) async fn service_writes_follow_the_twin_rules<S: RegistryStore>(r: Registry<S>) {
        let seen = desired_recorder(&r);
        r.create_device(DeviceSpec::new(did("d1")), at(0))
            .await
            .expect("create");
        let t = r
            .update_twin(
                &did("d1"),
                None,
                &patch(
                    json!({"tags": {"loc": "x"}, "properties": {"desired": {"fw": "1", "old": 1}}}),
                ),
                &IfMatch::Any,
                at(1),
            )
            .await
            .expect("patch");
        assert_eq!(t.twin.etag().counter(), 2);
        assert_eq!(t.twin.tags()["loc"], "x");
        assert_eq!(desired(&t), json!({"fw": "1", "old": 1}));
        let etag = t.twin.etag();

        // A stale ETag fails, the current one and `*` pass.
        let e = r
            .update_twin(
                &did("d1"),
                None,
                &patch(json!({"tags": {"a": 1}})),
                &IfMatch::parse("\"AAAAAAAAAAE=\""),
                at(2),
            )
            .await
            .expect_err("stale etag");
        assert_eq!(e.error_code(), ErrorCode::PreconditionFailed);
        let t = r
            .update_twin(
                &did("d1"),
                None,
                &patch(json!({"properties": {"desired": {"old": null}}})),
                &IfMatch::parse(&etag.quoted()),
                at(2),
            )
            .await
            .expect("current etag");
        assert_eq!(desired(&t), json!({"fw": "1"}));
        // A replace sends the diff.
        let t = r
            .update_twin(
                &did("d1"),
                None,
                &replace(json!({"properties": {"desired": {"new": true}}})),
                &IfMatch::Any,
                at(3),
            )
            .await
            .expect("replace");
        assert_eq!(desired(&t), json!({"new": true}));
        assert_eq!(t.twin.tags()["loc"], "x", "tags left out are kept");
        // Tags only: no notification. Nothing at all: no write.
        let t = r
            .update_twin(
                &did("d1"),
                None,
                &patch(json!({"tags": {"loc": null}})),
                &IfMatch::Any,
                at(4),
            )
            .await
            .expect("tags");
        assert!(t.twin.tags().is_empty());
        let before = t.twin.clone();
        let t = r
            .update_twin(&did("d1"), None, &patch(json!({})), &IfMatch::Any, at(5))
            .await
            .expect("empty");
        assert_eq!(t.twin, before, "an empty patch changes nothing");
        // Size limits are checked on the result.
        let e = r
            .update_twin(
                &did("d1"),
                None,
                &patch(json!({"tags": {"big": "x".repeat(4096), "b2": "x".repeat(4096)}})),
                &IfMatch::Any,
                at(6),
            )
            .await
            .expect_err("too large");
        assert_eq!(e.error_code(), ErrorCode::ArgumentInvalid);
        assert!(matches!(e, RegistryError::Twin(_)));

        assert_eq!(
            seen.lock().expect("lock").clone(),
            vec![
                (
                    "d1".to_owned(),
                    None,
                    2,
                    json!({"fw": "1", "old": 1, "$version": 2})
                ),
                (
                    "d1".to_owned(),
                    None,
                    3,
                    json!({"old": null, "$version": 3})
                ),
                (
                    "d1".to_owned(),
                    None,
                    4,
                    json!({"fw": null, "new": true, "$version": 4})
                ),
            ]
        );
        let e = r
            .update_twin(&did("nope"), None, &patch(json!({})), &IfMatch::Any, at(7))
            .await
            .expect_err("no device");
        assert_eq!(e.error_code(), ErrorCode::DeviceNotFound);
    }

    pub(crate) async fn reported_patches_follow_the_twin_rules<S: RegistryStore>(r: Registry<S>) {
        r.create_device(DeviceSpec::new(did("d1")), at(0))
            .await
            .expect("create");
        r.create_module(ModuleSpec::new(did("d1"), mid("m1")), at(0))
            .await
            .expect("module");
        let v = r
            .report_twin(&did("d1"), None, &reported(json!({"a": 1})), None, at(1))
            .await
            .expect("report");
        assert_eq!(v, 2);
        let v = r
            .report_twin(
                &did("d1"),
                None,
                &reported(json!({"a": null, "b": {"c": 2}})),
                Some(2),
                at(2),
            )
            .await
            .expect("report at the current version");
        assert_eq!(v, 3);
        let e = r
            .report_twin(&did("d1"), None, &reported(json!({"a": 1})), Some(2), at(3))
            .await
            .expect_err("stale version");
        assert_eq!(e.error_code(), ErrorCode::PreconditionFailed);
        let t = r.twin(&did("d1"), None).await.expect("twin");
        assert_eq!(
            Value::Object(t.twin.reported().values().clone()),
            json!({"b": {"c": 2}})
        );
        assert_eq!(t.twin.etag().counter(), 1, "reported patches keep the ETag");

        let v = r
            .report_twin(
                &did("d1"),
                Some(&mid("m1")),
                &reported(json!({"m": true})),
                None,
                at(4),
            )
            .await
            .expect("module report");
        assert_eq!(v, 2);
        let module = r.twin(&did("d1"), Some(&mid("m1"))).await.expect("twin");
        assert_eq!(module.twin.reported().get("m"), Some(&json!(true)));
        assert!(
            r.twin(&did("d1"), None)
                .await
                .expect("twin")
                .twin
                .reported()
                .get("m")
                .is_none(),
            "the device's twin is its own"
        );

        let e = r
            .report_twin(&did("gone"), None, &reported(json!({"a": 1})), None, at(5))
            .await
            .expect_err("no device");
        assert_eq!(e.error_code(), ErrorCode::DeviceNotFound);
        let e = r
            .report_twin(
                &did("d1"),
                Some(&mid("gone")),
                &reported(json!({"a": 1})),
                None,
                at(5),
            )
            .await
            .expect_err("no module");
        assert_eq!(e.error_code(), ErrorCode::ModuleNotFound);
    }

    pub(crate) async fn deleting_an_identity_deletes_its_twin<S: RegistryStore>(r: Registry<S>) {
        r.create_device(DeviceSpec::new(did("d1")), at(0))
            .await
            .expect("create");
        r.create_module(ModuleSpec::new(did("d1"), mid("m1")), at(0))
            .await
            .expect("module");
        for m in [None, Some(mid("m1"))] {
            r.update_twin(
                &did("d1"),
                m.as_ref(),
                &patch(json!({"tags": {"t": 1}})),
                &IfMatch::Any,
                at(1),
            )
            .await
            .expect("patch");
        }
        r.delete_module(&did("d1"), &mid("m1"), ferrohub_registry::IfMatch::Any)
            .await
            .expect("delete module");
        r.create_module(ModuleSpec::new(did("d1"), mid("m1")), at(2))
            .await
            .expect("re-create module");
        assert_eq!(
            r.twin(&did("d1"), Some(&mid("m1")))
                .await
                .expect("twin")
                .twin,
            initial_twin()
        );
        assert_eq!(
            r.twin(&did("d1"), None).await.expect("twin").twin.tags()["t"],
            1
        );
        r.delete_device(&did("d1"), ferrohub_registry::IfMatch::Any)
            .await
            .expect("delete");
        r.create_device(DeviceSpec::new(did("d1")), at(3))
            .await
            .expect("re-create");
        assert_eq!(
            r.twin(&did("d1"), None).await.expect("twin").twin,
            initial_twin()
        );
    }

    pub(crate) async fn bulk_records_carry_twins<S: RegistryStore>(r: Registry<S>) {
        let seen = desired_recorder(&r);
        for id in ["upd", "twin", "twin-etag", "twin-bad", "del"] {
            r.create_device(DeviceSpec::new(did(id)), at(0))
                .await
                .expect("seed");
        }
        let with_twin = |id: &str, mode: ImportMode, body: Value| ImportRecord {
            twin: Some(replace(body)),
            ..ImportRecord::new(did(id), mode)
        };
        let data = json!({"tags": {"site": "a"}, "properties": {"desired": {"rate": 5}}});
        let records = vec![
            with_twin("new", ImportMode::Create, data.clone()),
            ImportRecord {
                module_id: Some(mid("m1")),
                ..with_twin("new", ImportMode::Create, json!({"tags": {"mod": true}}))
            },
            with_twin("upd", ImportMode::Update, json!({"tags": {"u": 1}})),
            with_twin("twin", ImportMode::UpdateTwin, data.clone()),
            ImportRecord {
                twin_etag: Some("\"AAAAAAAAAAE=\"".to_owned()),
                ..with_twin("twin-etag", ImportMode::UpdateTwinIfMatchETag, data.clone())
            },
            ImportRecord {
                twin_etag: Some("AAAAAAAAAAk=".to_owned()),
                ..with_twin("twin-bad", ImportMode::UpdateTwinIfMatchETag, data.clone())
            },
            with_twin("twin-missing", ImportMode::UpdateTwin, data.clone()),
            with_twin("del", ImportMode::Delete, data.clone()),
        ];
        let result = r.bulk(records, at(1)).await.expect("bulk");
        let failed: Vec<(String, ErrorCode)> = result
            .errors
            .iter()
            .map(|e| (e.device_id.clone(), e.error_code))
            .collect();
        assert_eq!(
            failed,
            vec![
                ("twin-bad".to_owned(), ErrorCode::PreconditionFailed),
                ("twin-missing".to_owned(), ErrorCode::DeviceNotFound),
            ]
        );
        let tags = |t: IdentityTwin| Value::Object(t.twin.tags().clone());
        let new = r.twin(&did("new"), None).await.expect("twin");
        assert_eq!(desired(&new), json!({"rate": 5}));
        assert_eq!(tags(new), json!({"site": "a"}));
        assert_eq!(
            tags(r.twin(&did("new"), Some(&mid("m1"))).await.expect("twin")),
            json!({"mod": true})
        );
        assert_eq!(
            tags(r.twin(&did("upd"), None).await.expect("twin")),
            json!({"u": 1})
        );
        for id in ["twin", "twin-etag"] {
            let t = r.twin(&did(id), None).await.expect("twin");
            assert_eq!(desired(&t), json!({"rate": 5}), "{id}");
            assert_eq!(t.twin.etag().counter(), 2);
        }
        assert_eq!(
            r.twin(&did("twin-bad"), None).await.expect("twin").twin,
            initial_twin(),
            "a failed record changes nothing"
        );
        assert!(r.device(&did("del")).await.is_err(), "deleted");
        let mut notified: Vec<String> = seen
            .lock()
            .expect("lock")
            .iter()
            .map(|(d, _, v, _)| format!("{d}@{v}"))
            .collect();
        notified.sort();
        assert_eq!(notified, ["new@2", "twin-etag@2", "twin@2"]);
    }
}

macro_rules! twin_tests {
    ($store:ident, $make:expr) => {
        mod $store {
            use super::*;

            fn registry() -> (Registry<impl RegistryStore>, Option<tempfile::TempDir>) {
                let (s, dir) = $make;
                (block_on(Registry::open(s)).expect("open registry"), dir)
            }

            #[test]
            fn reads_give_the_initial_twin_until_written() {
                let (r, _dir) = registry();
                block_on(cases::reads_give_the_initial_twin_until_written(r));
            }

            #[test]
            fn service_writes_follow_the_twin_rules() {
                let (r, _dir) = registry();
                block_on(cases::service_writes_follow_the_twin_rules(r));
            }

            #[test]
            fn reported_patches_follow_the_twin_rules() {
                let (r, _dir) = registry();
                block_on(cases::reported_patches_follow_the_twin_rules(r));
            }

            #[test]
            fn deleting_an_identity_deletes_its_twin() {
                let (r, _dir) = registry();
                block_on(cases::deleting_an_identity_deletes_its_twin(r));
            }

            #[test]
            fn bulk_records_carry_twins() {
                let (r, _dir) = registry();
                block_on(cases::bulk_records_carry_twins(r));
            }
        }
    };
}

twin_tests!(over_memory, memory());
twin_tests!(over_sqlite, sqlite());

#[test]
fn twins_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.db");
    {
        let store = ferrohub_registry::SqliteStore::open(&path).expect("open");
        let r = block_on(Registry::open(store)).expect("registry");
        block_on(r.create_device(DeviceSpec::new(did("d1")), at(0))).expect("create");
        block_on(r.update_twin(
            &did("d1"),
            None,
            &patch(json!({"properties": {"desired": {"x": 1}}})),
            &IfMatch::Any,
            at(1),
        ))
        .expect("patch");
        block_on(r.report_twin(&did("d1"), None, &reported(json!({"y": 2})), None, at(2)))
            .expect("report");
    }
    let store = ferrohub_registry::SqliteStore::open(&path).expect("reopen");
    let r = block_on(Registry::open(store)).expect("registry");
    let t = block_on(r.twin(&did("d1"), None)).expect("twin");
    assert_eq!(t.twin.desired().get("x"), Some(&json!(1)));
    assert_eq!(t.twin.reported().get("y"), Some(&json!(2)));
    assert_eq!(t.twin.version(), 4);
}
