//! The registry façade: Azure's rules over every store.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ferrohub_registry::{
    AuthType, Authentication, Change, DeviceSpec, DeviceStatus, ETag, Expect, IdentityChange,
    IdentityChangeKind, IfMatch, ImportMode, ImportRecord, ModuleSpec, Registry, RegistryError,
    RegistryStore,
};
use ferrohub_types::ErrorCode;

use crate::common::*;

/// Records every change event.
fn recorder<S: RegistryStore>(r: &Registry<S>) -> Arc<Mutex<Vec<IdentityChange>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    r.on_change(move |c| sink.lock().expect("lock").push(c.clone()));
    seen
}

fn take(seen: &Mutex<Vec<IdentityChange>>) -> Vec<(String, Option<String>, IdentityChangeKind)> {
    seen.lock()
        .expect("lock")
        .drain(..)
        .map(|c| {
            (
                c.device_id.to_string(),
                c.module_id.map(|m| m.to_string()),
                c.kind,
            )
        })
        .collect()
}

fn ev(
    d: &str,
    m: Option<&str>,
    k: IdentityChangeKind,
) -> (String, Option<String>, IdentityChangeKind) {
    (d.to_owned(), m.map(str::to_owned), k)
}

fn sas_spec(id: &str, primary: String, secondary: String) -> DeviceSpec {
    DeviceSpec {
        authentication: Some(Authentication::sas(primary, secondary)),
        ..DeviceSpec::new(did(id))
    }
}

fn keys_of(d: &ferrohub_registry::Device) -> (String, String) {
    let k = d.authentication.symmetric_key.clone().expect("sas keys");
    (k.primary_key, k.secondary_key)
}

mod cases {
    use super::*;

    pub(crate) async fn create_and_get<S: RegistryStore>(r: Registry<S>) {
        let d = r
            .create_device(DeviceSpec::new(did("d1")), at(0))
            .await
            .expect("create");
        assert_eq!(d.version, 0);
        assert_eq!(d.etag.as_str(), "MA==");
        assert_eq!(d.etag.quoted(), "\"MA==\"");
        assert_eq!(d.status, DeviceStatus::Enabled);
        assert_eq!(d.status_updated_time, None);
        assert_eq!(d.generation_id.len(), 18);
        assert!(d.generation_id.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(d.authentication.kind, AuthType::Sas);
        let (p, s) = keys_of(&d);
        for k in [&p, &s] {
            assert_eq!(k.len(), 44);
            assert_eq!(STANDARD.decode(k).expect("base64").len(), 32);
        }
        assert_ne!(p, s);
        assert_eq!(r.device(&did("d1")).await.expect("get"), d);

        let err = r
            .create_device(DeviceSpec::new(did("d1")), at(1))
            .await
            .expect_err("second create");
        assert!(matches!(err, RegistryError::DeviceAlreadyExists(_)));
        assert_eq!(err.error_code(), ErrorCode::DeviceAlreadyExists);
        assert_eq!(
            err.to_string(),
            "A device with ID 'd1' is already registered."
        );
        assert_eq!(r.device(&did("d1")).await.expect("get"), d, "unchanged");

        let err = r.device(&did("nope")).await.expect_err("missing");
        assert_eq!(err.error_code().number(), 404001);
        assert_eq!(
            err.to_string(),
            "The device with ID 'nope' could not be found."
        );
    }

    pub(crate) async fn update_follows_etag_rules<S: RegistryStore>(r: Registry<S>) {
        let d0 = r
            .create_device(DeviceSpec::new(did("d1")), at(0))
            .await
            .expect("create");
        let mut spec = DeviceSpec::new(did("d1"));

        // Quoted star, bare star, quoted etag, bare etag, weak etag: each accepted.
        let d1 = r
            .update_device(spec.clone(), IfMatch::parse("\"*\""), at(1))
            .await
            .expect("quoted star");
        assert_eq!((d1.version, d1.etag.as_str()), (1, "MQ=="));
        let d2 = r
            .update_device(spec.clone(), IfMatch::parse("*"), at(2))
            .await
            .expect("bare star");
        let d3 = r
            .update_device(spec.clone(), IfMatch::parse(&d2.etag.quoted()), at(3))
            .await
            .expect("quoted etag");
        let d4 = r
            .update_device(spec.clone(), IfMatch::parse(d3.etag.as_str()), at(4))
            .await
            .expect("bare etag");
        let d5 = r
            .update_device(
                spec.clone(),
                IfMatch::parse(&format!("W/\"{}\"", d4.etag)),
                at(5),
            )
            .await
            .expect("weak etag");
        assert_eq!(d5.version, 5);
        assert_eq!(d5.etag, ETag::from_version(5));

        // A stale ETag fails and changes nothing.
        let err = r
            .update_device(spec.clone(), IfMatch::parse(&d4.etag.quoted()), at(6))
            .await
            .expect_err("stale");
        assert!(matches!(err, RegistryError::PreconditionFailed));
        assert_eq!(err.error_code().number(), 412001);
        assert_eq!(r.device(&did("d1")).await.expect("get"), d5);

        // Hub-owned fields and unspecified credentials are kept.
        assert_eq!(d5.generation_id, d0.generation_id);
        assert_eq!(d5.authentication, d0.authentication);
        assert_eq!(d5.status_updated_time, None);

        // The status time moves only when the status changes.
        spec.status = Some(DeviceStatus::Disabled);
        spec.status_reason = Some("stolen".to_owned());
        let d6 = r
            .update_device(spec.clone(), IfMatch::Any, at(7))
            .await
            .expect("disable");
        assert_eq!(d6.status, DeviceStatus::Disabled);
        assert_eq!(d6.status_updated_time, Some(at(7)));
        let d7 = r
            .update_device(spec.clone(), IfMatch::Any, at(8))
            .await
            .expect("same status");
        assert_eq!(d7.status_updated_time, Some(at(7)));
        assert_eq!(d7.status_reason.as_deref(), Some("stolen"));

        // Missing devices are not found, with any precondition.
        let err = r
            .update_device(DeviceSpec::new(did("nope")), IfMatch::Any, at(9))
            .await
            .expect_err("missing");
        assert!(matches!(err, RegistryError::DeviceNotFound(_)));
    }

    pub(crate) async fn keys_are_validated_and_generated<S: RegistryStore>(r: Registry<S>) {
        let given = (key(9, 16), key(8, 64));
        let d = r
            .create_device(sas_spec("given", given.0.clone(), given.1.clone()), at(0))
            .await
            .expect("valid keys");
        assert_eq!(keys_of(&d), given);

        // Empty strings are generated; one given key is kept.
        let d = r
            .create_device(sas_spec("half", String::new(), key(7, 32)), at(0))
            .await
            .expect("half");
        let (p, s) = keys_of(&d);
        assert_eq!(p.len(), 44);
        assert_eq!(s, key(7, 32));

        for (bad_p, bad_s) in [
            (key(1, 15), key(2, 32)),
            (key(1, 32), key(2, 65)),
            ("not*base64".to_owned(), key(2, 32)),
            (key(1, 17).trim_end_matches('=').to_owned(), key(2, 32)),
        ] {
            let err = r
                .create_device(sas_spec("bad", bad_p.clone(), bad_s.clone()), at(0))
                .await
                .expect_err("invalid key");
            assert_eq!(
                err.error_code(),
                ErrorCode::ArgumentInvalid,
                "{bad_p} {bad_s}"
            );
        }
        assert!(r.device(&did("bad")).await.is_err(), "nothing created");
        assert_eq!(r.identity(&did("bad"), None), None);

        // An invalid update changes nothing.
        let before = r.device(&did("given")).await.expect("get");
        let err = r
            .update_device(
                sas_spec("given", key(1, 8), key(2, 32)),
                IfMatch::Any,
                at(1),
            )
            .await
            .expect_err("invalid key");
        assert_eq!(err.error_code(), ErrorCode::ArgumentInvalid);
        assert_eq!(r.device(&did("given")).await.expect("get"), before);

        let long = DeviceSpec {
            status_reason: Some("x".repeat(129)),
            ..DeviceSpec::new(did("long"))
        };
        let err = r.create_device(long, at(0)).await.expect_err("long reason");
        assert_eq!(err.error_code(), ErrorCode::ArgumentInvalid);

        // Empty keys on update are regenerated.
        let d = r
            .update_device(
                sas_spec("given", String::new(), String::new()),
                IfMatch::Any,
                at(2),
            )
            .await
            .expect("regenerate");
        let (p, s) = keys_of(&d);
        assert_ne!((p.clone(), s.clone()), given);
        assert_ne!(p, s);
        assert_eq!(p.len(), 44);

        // Switching to X.509 drops the keys.
        let x509 = DeviceSpec {
            authentication: Some(Authentication::self_signed("ab".repeat(20), None)),
            ..DeviceSpec::new(did("given"))
        };
        let d = r
            .update_device(x509, IfMatch::Any, at(3))
            .await
            .expect("x509");
        assert_eq!(d.authentication.symmetric_key, None);
        let auth = r.identity(&did("given"), None).expect("cached");
        assert!(auth.primary_key.is_empty() && auth.secondary_key.is_empty());
    }

    pub(crate) async fn delete_follows_etag_rules<S: RegistryStore>(r: Registry<S>) {
        let d = r
            .create_device(DeviceSpec::new(did("d1")), at(0))
            .await
            .expect("create");
        r.create_module(ModuleSpec::new(did("d1"), mid("m1")), at(0))
            .await
            .expect("module");
        let d1 = r
            .update_device(DeviceSpec::new(did("d1")), IfMatch::Any, at(1))
            .await
            .expect("update");
        let err = r
            .delete_device(&did("d1"), IfMatch::parse(&d.etag.quoted()))
            .await
            .expect_err("stale");
        assert!(matches!(err, RegistryError::PreconditionFailed));
        r.delete_device(&did("d1"), IfMatch::parse(&d1.etag.quoted()))
            .await
            .expect("delete");
        assert!(matches!(
            r.device(&did("d1")).await,
            Err(RegistryError::DeviceNotFound(_))
        ));
        assert!(matches!(
            r.module(&did("d1"), &mid("m1")).await,
            Err(RegistryError::DeviceNotFound(_))
        ));
        assert!(matches!(
            r.delete_device(&did("d1"), IfMatch::Any).await,
            Err(RegistryError::DeviceNotFound(_))
        ));

        // A new device under the old id is a new generation, at version 0, without modules.
        let again = r
            .create_device(DeviceSpec::new(did("d1")), at(2))
            .await
            .expect("re-create");
        assert_ne!(again.generation_id, d.generation_id);
        assert_eq!(again.version, 0);
        assert!(r.modules(&did("d1")).await.expect("modules").is_empty());
        assert_eq!(r.identity(&did("d1"), Some(&mid("m1"))), None);
    }

    pub(crate) async fn modules_follow_the_rules<S: RegistryStore>(r: Registry<S>) {
        let err = r
            .create_module(ModuleSpec::new(did("d1"), mid("m1")), at(0))
            .await
            .expect_err("no device");
        assert!(matches!(err, RegistryError::DeviceNotFound(_)));
        assert!(matches!(
            r.modules(&did("d1")).await,
            Err(RegistryError::DeviceNotFound(_))
        ));
        r.create_device(DeviceSpec::new(did("d1")), at(0))
            .await
            .expect("device");
        assert!(r.modules(&did("d1")).await.expect("modules").is_empty());

        let spec = ModuleSpec {
            managed_by: Some("IotEdge".to_owned()),
            ..ModuleSpec::new(did("d1"), mid("m1"))
        };
        let m = r.create_module(spec.clone(), at(0)).await.expect("module");
        assert_eq!(m.etag.as_str(), "MA==");
        assert_eq!(m.managed_by.as_deref(), Some("IotEdge"));
        let (p, s) = {
            let k = m.authentication.symmetric_key.clone().expect("keys");
            (k.primary_key, k.secondary_key)
        };
        assert_eq!(p.len(), 44);
        assert_ne!(p, s);
        let err = r
            .create_module(spec.clone(), at(1))
            .await
            .expect_err("twice");
        assert!(matches!(err, RegistryError::ModuleAlreadyExists { .. }));
        assert_eq!(err.error_code().number(), 409301);

        let err = r.module(&did("d1"), &mid("m2")).await.expect_err("missing");
        assert!(matches!(err, RegistryError::ModuleNotFound { .. }));
        assert_eq!(err.error_code().number(), 404010);

        let m1 = r
            .update_module(spec.clone(), IfMatch::parse("\"*\""), at(1))
            .await
            .expect("update");
        assert_eq!(m1.etag.as_str(), "MQ==");
        assert_eq!(m1.generation_id, m.generation_id);
        assert_eq!(m1.authentication, m.authentication, "keys kept");
        let err = r
            .update_module(spec.clone(), IfMatch::parse(&m.etag.quoted()), at(2))
            .await
            .expect_err("stale");
        assert!(matches!(err, RegistryError::PreconditionFailed));
        let err = r
            .update_module(ModuleSpec::new(did("d1"), mid("m2")), IfMatch::Any, at(2))
            .await
            .expect_err("missing module");
        assert!(matches!(err, RegistryError::ModuleNotFound { .. }));
        let err = r
            .update_module(ModuleSpec::new(did("d9"), mid("m1")), IfMatch::Any, at(2))
            .await
            .expect_err("missing device");
        assert!(matches!(err, RegistryError::DeviceNotFound(_)));

        r.create_module(ModuleSpec::new(did("d1"), mid("a0")), at(3))
            .await
            .expect("second module");
        let ids: Vec<String> = r
            .modules(&did("d1"))
            .await
            .expect("list")
            .iter()
            .map(|m| m.module_id.to_string())
            .collect();
        assert_eq!(ids, ["a0", "m1"]);

        let err = r
            .delete_module(&did("d1"), &mid("m1"), IfMatch::parse(&m.etag.quoted()))
            .await
            .expect_err("stale");
        assert!(matches!(err, RegistryError::PreconditionFailed));
        r.delete_module(&did("d1"), &mid("m1"), IfMatch::parse(m1.etag.as_str()))
            .await
            .expect("delete");
        assert!(matches!(
            r.delete_module(&did("d1"), &mid("m1"), IfMatch::Any).await,
            Err(RegistryError::ModuleNotFound { .. })
        ));
        assert_eq!(r.identity(&did("d1"), Some(&mid("m1"))), None);
        assert!(r.identity(&did("d1"), Some(&mid("a0"))).is_some());
    }

    pub(crate) async fn cache_and_events_follow_every_change<S: RegistryStore>(r: Registry<S>) {
        let seen = recorder(&r);
        let d = r
            .create_device(DeviceSpec::new(did("d1")), at(0))
            .await
            .expect("create");
        let m = r
            .create_module(ModuleSpec::new(did("d1"), mid("m1")), at(0))
            .await
            .expect("module");
        assert!(take(&seen).is_empty(), "creations are not reported");

        let auth = r.identity(&did("d1"), None).expect("cached");
        assert_eq!(
            (auth.primary_key.clone(), auth.secondary_key.clone()),
            keys_of(&d)
        );
        assert!(auth.enabled);
        assert_eq!(auth.generation_id, d.generation_id);
        let mauth = r
            .identity(&did("d1"), Some(&mid("m1")))
            .expect("module cached");
        assert!(mauth.enabled);
        assert_eq!(mauth.generation_id, m.generation_id);

        // A plain update.
        r.update_device(DeviceSpec::new(did("d1")), IfMatch::Any, at(1))
            .await
            .expect("update");
        assert_eq!(take(&seen), [ev("d1", None, IdentityChangeKind::Updated)]);

        // New keys.
        let rotated = sas_spec("d1", key(5, 32), key(6, 32));
        r.update_device(rotated, IfMatch::Any, at(2))
            .await
            .expect("rotate");
        assert_eq!(
            take(&seen),
            [ev("d1", None, IdentityChangeKind::KeysChanged)]
        );
        let auth = r.identity(&did("d1"), None).expect("cached");
        assert_eq!(
            (auth.primary_key, auth.secondary_key),
            (key(5, 32), key(6, 32))
        );

        // Disabled, then enabled again.
        let disable = DeviceSpec {
            status: Some(DeviceStatus::Disabled),
            ..DeviceSpec::new(did("d1"))
        };
        r.update_device(disable, IfMatch::Any, at(3))
            .await
            .expect("disable");
        assert_eq!(take(&seen), [ev("d1", None, IdentityChangeKind::Disabled)]);
        assert!(!r.identity(&did("d1"), None).expect("cached").enabled);
        let enable = DeviceSpec {
            status: Some(DeviceStatus::Enabled),
            ..DeviceSpec::new(did("d1"))
        };
        r.update_device(enable, IfMatch::Any, at(4))
            .await
            .expect("enable");
        assert_eq!(take(&seen), [ev("d1", None, IdentityChangeKind::Updated)]);
        assert!(r.identity(&did("d1"), None).expect("cached").enabled);

        // Module key change.
        let mspec = ModuleSpec {
            authentication: Some(Authentication::sas(key(7, 32), key(8, 32))),
            ..ModuleSpec::new(did("d1"), mid("m1"))
        };
        r.update_module(mspec, IfMatch::Any, at(5))
            .await
            .expect("module keys");
        assert_eq!(
            take(&seen),
            [ev("d1", Some("m1"), IdentityChangeKind::KeysChanged)]
        );
        assert_eq!(
            r.identity(&did("d1"), Some(&mid("m1")))
                .expect("cached")
                .primary_key,
            key(7, 32)
        );

        // Deleting the device reports it and its modules.
        r.create_module(ModuleSpec::new(did("d1"), mid("m0")), at(6))
            .await
            .expect("module");
        r.delete_device(&did("d1"), IfMatch::Any)
            .await
            .expect("delete");
        assert_eq!(
            take(&seen),
            [
                ev("d1", None, IdentityChangeKind::Deleted),
                ev("d1", Some("m0"), IdentityChangeKind::Deleted),
                ev("d1", Some("m1"), IdentityChangeKind::Deleted),
            ]
        );
        assert_eq!(r.identity(&did("d1"), None), None);
        assert_eq!(r.identity(&did("d1"), Some(&mid("m1"))), None);
    }

    pub(crate) async fn open_warms_the_cache<S: RegistryStore>(s: S) {
        let mut off = device("off", 0);
        off.status = DeviceStatus::Disabled;
        s.apply(vec![
            Change::PutDevice {
                device: device("on", 0),
                expect: Expect::Absent,
            },
            Change::PutDevice {
                device: off,
                expect: Expect::Absent,
            },
            Change::PutModule {
                module: module("off", "m", 0),
                expect: Expect::Absent,
            },
        ])
        .await
        .expect("seed");
        let r = Registry::open(s).await.expect("open");
        let on = r.identity(&did("on"), None).expect("on");
        assert!(on.enabled);
        assert_eq!(on.primary_key, key(1, 32));
        assert!(!r.identity(&did("off"), None).expect("off").enabled);
        assert_eq!(
            r.identity(&did("off"), Some(&mid("m")))
                .expect("module")
                .secondary_key,
            key(4, 32)
        );
        assert_eq!(r.identity(&did("nope"), None), None);
        assert_eq!(r.identity(&did("on"), Some(&mid("m"))), None);
    }

    pub(crate) async fn listing_and_statistics<S: RegistryStore>(r: Registry<S>) {
        for i in 0..5 {
            let spec = DeviceSpec {
                status: (i == 2).then_some(DeviceStatus::Disabled),
                ..DeviceSpec::new(did(&format!("d{i}")))
            };
            r.create_device(spec, at(0)).await.expect("create");
        }
        assert_eq!(r.devices(2).await.expect("list").len(), 2);
        assert_eq!(
            r.devices(0).await.expect("list").len(),
            5,
            "0 means the maximum"
        );
        assert_eq!(r.devices(5000).await.expect("list").len(), 5);
        let s = r.statistics().await.expect("stats");
        assert_eq!(
            (
                s.total_device_count,
                s.enabled_device_count,
                s.disabled_device_count
            ),
            (5, 4, 1)
        );
    }

    /// Many threads updating one device with `If-Match: *` all succeed, in some order.
    pub(crate) fn concurrent_updates_serialize<S: RegistryStore>(r: Registry<S>) {
        block_on(r.create_device(DeviceSpec::new(did("hot")), at(0))).expect("create");
        const THREADS: u64 = 4;
        const EACH: u64 = 10;
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let r = &r;
                scope.spawn(move || {
                    for i in 0..EACH {
                        let spec = sas_spec("hot", key(t as u8, 32), key(i as u8, 32));
                        block_on(r.update_device(spec, IfMatch::Any, at(1))).expect("update");
                    }
                });
            }
        });
        let d = block_on(r.device(&did("hot"))).expect("get");
        assert_eq!(d.version, THREADS * EACH);
        let cached = r.identity(&did("hot"), None).expect("cached");
        assert_eq!(
            (cached.primary_key, cached.secondary_key),
            keys_of(&d),
            "the cache holds the last stored keys"
        );
    }

    pub(crate) async fn bulk_handles_every_mode<S: RegistryStore>(r: Registry<S>) {
        let seen = recorder(&r);
        for id in [
            "exists", "upd", "upd-etag", "upd-bad", "cou", "coue", "coue-bad", "del", "dele",
            "dele-bad", "twin",
        ] {
            r.create_device(DeviceSpec::new(did(id)), at(0))
                .await
                .expect("seed");
        }
        r.update_device(DeviceSpec::new(did("dele")), IfMatch::Any, at(0))
            .await
            .expect("bump dele to version 1");
        take(&seen);
        let etag0 = ETag::from_version(0).quoted();
        let etag1 = ETag::from_version(1).as_str().to_owned();

        let rec = |id: &str, mode: ImportMode, etag: Option<&str>| ImportRecord {
            etag: etag.map(str::to_owned),
            ..ImportRecord::new(did(id), mode)
        };
        let disabled = ImportRecord {
            status: Some(DeviceStatus::Disabled),
            ..rec("upd", ImportMode::Update, None)
        };
        let with_module = ImportRecord {
            module_id: Some(mid("m1")),
            managed_by: Some("IotEdge".to_owned()),
            ..rec("new", ImportMode::Create, None)
        };
        let bad_key = ImportRecord {
            authentication: Some(Authentication::sas("short", "")),
            ..rec("badkey", ImportMode::Create, None)
        };
        let records = vec![
            rec("new", ImportMode::Create, None),
            with_module,
            rec("exists", ImportMode::Create, None),
            disabled,
            rec("missing-upd", ImportMode::Update, None),
            rec("upd-etag", ImportMode::UpdateIfMatchETag, Some(&etag0)),
            rec(
                "upd-bad",
                ImportMode::UpdateIfMatchETag,
                Some("\"bm9wZQ==\""),
            ),
            rec("upd-none", ImportMode::UpdateIfMatchETag, Some(&etag0)),
            rec("cou", ImportMode::CreateOrUpdate, None),
            rec("cou-new", ImportMode::CreateOrUpdate, None),
            rec("coue", ImportMode::CreateOrUpdateIfMatchETag, Some("*")),
            rec("coue-bad", ImportMode::CreateOrUpdateIfMatchETag, None),
            rec("coue-new", ImportMode::CreateOrUpdateIfMatchETag, Some("x")),
            rec("del", ImportMode::Delete, None),
            rec("missing-del", ImportMode::Delete, None),
            rec("dele", ImportMode::DeleteIfMatchETag, Some(&etag1)),
            rec("dele-bad", ImportMode::DeleteIfMatchETag, Some("MQ==")),
            rec("twin", ImportMode::UpdateTwin, None),
            rec("missing-twin", ImportMode::UpdateTwinIfMatchETag, Some("*")),
            bad_key,
        ];
        let result = r.bulk(records, at(10)).await.expect("bulk");
        assert!(!result.is_successful);
        assert!(result.warnings.is_empty());
        let errors: Vec<(String, ErrorCode)> = result
            .errors
            .iter()
            .map(|e| (e.device_id.clone(), e.error_code))
            .collect();
        assert_eq!(
            errors,
            vec![
                ("exists".to_owned(), ErrorCode::DeviceAlreadyExists),
                ("missing-upd".to_owned(), ErrorCode::DeviceNotFound),
                ("upd-bad".to_owned(), ErrorCode::PreconditionFailed),
                ("upd-none".to_owned(), ErrorCode::DeviceNotFound),
                ("coue-bad".to_owned(), ErrorCode::PreconditionFailed),
                ("missing-del".to_owned(), ErrorCode::DeviceNotFound),
                ("dele-bad".to_owned(), ErrorCode::PreconditionFailed),
                ("missing-twin".to_owned(), ErrorCode::DeviceNotFound),
                ("badkey".to_owned(), ErrorCode::ArgumentInvalid),
            ]
        );
        assert_eq!(
            result.errors[1].error_status,
            "The device with ID 'missing-upd' could not be found."
        );

        // What succeeded is stored.
        let version = |id: &'static str| {
            let r = &r;
            async move { r.device(&did(id)).await.map(|d| d.version).ok() }
        };
        assert_eq!(version("new").await, Some(0));
        assert_eq!(version("exists").await, Some(0), "untouched");
        assert_eq!(version("upd").await, Some(1));
        assert_eq!(
            r.device(&did("upd")).await.expect("upd").status,
            DeviceStatus::Disabled
        );
        assert_eq!(version("upd-etag").await, Some(1));
        assert_eq!(version("upd-bad").await, Some(0));
        assert_eq!(version("cou").await, Some(1));
        assert_eq!(version("cou-new").await, Some(0));
        assert_eq!(version("coue").await, Some(1));
        assert_eq!(version("coue-bad").await, Some(0));
        assert_eq!(version("coue-new").await, Some(0));
        assert_eq!(version("del").await, None);
        assert_eq!(version("dele").await, None);
        assert_eq!(version("dele-bad").await, Some(0));
        assert_eq!(
            version("twin").await,
            Some(0),
            "twin updates leave the device"
        );
        assert_eq!(version("badkey").await, None);
        let m = r.module(&did("new"), &mid("m1")).await.expect("module");
        assert_eq!(m.managed_by.as_deref(), Some("IotEdge"));

        // The cache and the listeners saw it.
        assert!(r.identity(&did("new"), None).is_some());
        assert!(r.identity(&did("new"), Some(&mid("m1"))).is_some());
        assert!(r.identity(&did("del"), None).is_none());
        assert!(!r.identity(&did("upd"), None).expect("upd").enabled);
        let mut events = take(&seen);
        events.sort();
        let mut expected = vec![
            ev("upd", None, IdentityChangeKind::Disabled),
            ev("upd-etag", None, IdentityChangeKind::Updated),
            ev("cou", None, IdentityChangeKind::Updated),
            ev("coue", None, IdentityChangeKind::Updated),
            ev("del", None, IdentityChangeKind::Deleted),
            ev("dele", None, IdentityChangeKind::Deleted),
        ];
        expected.sort();
        assert_eq!(events, expected);

        // A fully successful request.
        let ok = r
            .bulk(vec![rec("del", ImportMode::Create, None)], at(11))
            .await
            .expect("bulk");
        assert!(ok.is_successful && ok.errors.is_empty());
    }

    pub(crate) async fn bulk_rejects_whole_requests<S: RegistryStore>(r: Registry<S>) {
        let many: Vec<ImportRecord> = (0..101)
            .map(|i| ImportRecord::new(did(&format!("d{i}")), ImportMode::Create))
            .collect();
        let err = r.bulk(many.clone(), at(0)).await.expect_err("too many");
        assert!(matches!(err, RegistryError::TooManyDevices { max: 100 }));
        assert_eq!(err.error_code().number(), 413002);
        assert_eq!(r.statistics().await.expect("stats").total_device_count, 0);

        let dup = vec![
            ImportRecord::new(did("a"), ImportMode::Create),
            ImportRecord::new(did("b"), ImportMode::Create),
            ImportRecord::new(did("a"), ImportMode::Delete),
        ];
        let err = r.bulk(dup, at(0)).await.expect_err("duplicate");
        assert!(matches!(err, RegistryError::DeviceDefinedMultipleTimes(ref id) if id == "a"));
        assert_eq!(err.error_code().number(), 400011);
        assert_eq!(r.statistics().await.expect("stats").total_device_count, 0);

        // Exactly the limit is fine, and commits together.
        let hundred = many[..100].to_vec();
        let result = r.bulk(hundred, at(0)).await.expect("100");
        assert!(result.is_successful);
        assert_eq!(r.statistics().await.expect("stats").total_device_count, 100);

        // A device and one of its modules are distinct records.
        let mut module = ImportRecord::new(did("d1"), ImportMode::Create);
        module.module_id = Some(mid("m"));
        let both = vec![ImportRecord::new(did("d1"), ImportMode::Update), module];
        assert!(
            r.bulk(both, at(1))
                .await
                .expect("device and module")
                .is_successful
        );

        // A module record for a device deleted earlier in the same request fails alone.
        let mut late = ImportRecord::new(did("d2"), ImportMode::Create);
        late.module_id = Some(mid("m"));
        let result = r
            .bulk(
                vec![ImportRecord::new(did("d2"), ImportMode::Delete), late],
                at(2),
            )
            .await
            .expect("bulk");
        assert_eq!(result.errors.len(), 1);
        assert_eq!(result.errors[0].module_id.as_deref(), Some("m"));
        assert_eq!(result.errors[0].error_code, ErrorCode::DeviceNotFound);
        assert!(r.device(&did("d2")).await.is_err());
    }
}

macro_rules! registry_tests {
    ($store:ident, $make:expr) => {
        mod $store {
            use super::*;

            fn registry() -> (Registry<impl RegistryStore>, Option<tempfile::TempDir>) {
                let (s, dir) = $make;
                (block_on(Registry::open(s)).expect("open registry"), dir)
            }

            #[test]
            fn create_and_get() {
                let (r, _dir) = registry();
                block_on(cases::create_and_get(r));
            }

            #[test]
            fn update_follows_etag_rules() {
                let (r, _dir) = registry();
                block_on(cases::update_follows_etag_rules(r));
            }

            #[test]
            fn keys_are_validated_and_generated() {
                let (r, _dir) = registry();
                block_on(cases::keys_are_validated_and_generated(r));
            }

            #[test]
            fn delete_follows_etag_rules() {
                let (r, _dir) = registry();
                block_on(cases::delete_follows_etag_rules(r));
            }

            #[test]
            fn modules_follow_the_rules() {
                let (r, _dir) = registry();
                block_on(cases::modules_follow_the_rules(r));
            }

            #[test]
            fn cache_and_events_follow_every_change() {
                let (r, _dir) = registry();
                block_on(cases::cache_and_events_follow_every_change(r));
            }

            #[test]
            fn open_warms_the_cache() {
                let (s, _dir) = $make;
                block_on(cases::open_warms_the_cache(s));
            }

            #[test]
            fn listing_and_statistics() {
                let (r, _dir) = registry();
                block_on(cases::listing_and_statistics(r));
            }

            #[test]
            fn concurrent_updates_serialize() {
                let (r, _dir) = registry();
                cases::concurrent_updates_serialize(r);
            }

            #[test]
            fn bulk_handles_every_mode() {
                let (r, _dir) = registry();
                block_on(cases::bulk_handles_every_mode(r));
            }

            #[test]
            fn bulk_rejects_whole_requests() {
                let (r, _dir) = registry();
                block_on(cases::bulk_rejects_whole_requests(r));
            }
        }
    };
}

registry_tests!(over_memory, memory());
registry_tests!(over_sqlite, sqlite());

#[test]
fn registry_survives_reopen_with_its_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.db");
    let (d, m) = {
        let store = ferrohub_registry::SqliteStore::open(&path).expect("open");
        let r = block_on(Registry::open(store)).expect("registry");
        let d = block_on(r.create_device(DeviceSpec::new(did("d1")), at(0))).expect("create");
        let m = block_on(r.create_module(ModuleSpec::new(did("d1"), mid("m1")), at(0)))
            .expect("module");
        (d, m)
    };
    let store = ferrohub_registry::SqliteStore::open(&path).expect("reopen");
    let r = block_on(Registry::open(store)).expect("registry");
    assert_eq!(block_on(r.device(&did("d1"))).expect("get"), d);
    let auth = r.identity(&did("d1"), None).expect("cached device");
    assert_eq!((auth.primary_key, auth.secondary_key), keys_of(&d));
    assert_eq!(
        r.identity(&did("d1"), Some(&mid("m1")))
            .expect("cached module")
            .generation_id,
        m.generation_id
    );
}

#[test]
fn registry_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let (s, _dir) = sqlite();
    let r = block_on(Registry::open(s)).expect("open");
    let now = at(0);
    send(&r.create_device(DeviceSpec::new(did("d")), now));
    send(&r.update_device(DeviceSpec::new(did("d")), IfMatch::Any, now));
    send(&r.delete_device(&did("d"), IfMatch::Any));
    send(&r.bulk(Vec::new(), now));
    send(&r.create_module(ModuleSpec::new(did("d"), mid("m")), now));
    send(&r.modules(&did("d")));
    send(&r.statistics());
    fn shared<T: Send + Sync>(_: &T) {}
    shared(&r);
}

/// A store whose `apply` stores at once (through the inner store) but answers only when the test
/// opens the gate: it lets a test drop a write's future while the store "works".
mod gated {
    use std::future::Future;
    use std::sync::Mutex;

    use ferrohub_registry::{
        Change, Device, IdentityAuth, MemoryStore, Module, RegistryStatistics, RegistryStore,
        StoreError, StoredTwin,
    };
    use ferrohub_types::{DeviceId, ModuleId};
    use futures_channel::oneshot;

    #[derive(Default)]
    pub(crate) struct GatedStore {
        pub(crate) inner: MemoryStore,
        pub(crate) gates: Mutex<Vec<oneshot::Sender<()>>>,
        pub(crate) closed: std::sync::atomic::AtomicBool,
    }

    impl RegistryStore for GatedStore {
        fn apply(
            &self,
            changes: Vec<Change>,
        ) -> impl Future<Output = Result<(), StoreError>> + Send {
            let done = self.inner.apply(changes);
            let gate = if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                let (tx, rx) = oneshot::channel();
                self.gates.lock().expect("lock").push(tx);
                Some(rx)
            } else {
                None
            };
            async move {
                let result = done.await;
                if let Some(rx) = gate {
                    let _ = rx.await;
                }
                result
            }
        }

        fn device(
            &self,
            id: &DeviceId,
        ) -> impl Future<Output = Result<Option<Device>, StoreError>> + Send {
            self.inner.device(id)
        }

        fn devices(
            &self,
            limit: usize,
        ) -> impl Future<Output = Result<Vec<Device>, StoreError>> + Send {
            self.inner.devices(limit)
        }

        fn device_twins(
            &self,
            after: Option<&DeviceId>,
            limit: usize,
        ) -> impl Future<Output = Result<Vec<(Device, Option<StoredTwin>)>, StoreError>> + Send
        {
            self.inner.device_twins(after, limit)
        }

        fn module(
            &self,
            d: &DeviceId,
            m: &ModuleId,
        ) -> impl Future<Output = Result<Option<Module>, StoreError>> + Send {
            self.inner.module(d, m)
        }

        fn modules(
            &self,
            d: &DeviceId,
        ) -> impl Future<Output = Result<Vec<Module>, StoreError>> + Send {
            self.inner.modules(d)
        }

        fn twin(
            &self,
            d: &DeviceId,
            m: Option<&ModuleId>,
        ) -> impl Future<Output = Result<Option<StoredTwin>, StoreError>> + Send {
            self.inner.twin(d, m)
        }

        fn statistics(
            &self,
        ) -> impl Future<Output = Result<RegistryStatistics, StoreError>> + Send {
            self.inner.statistics()
        }

        fn query_twins(
            &self,
            scan: ferrohub_registry::TwinScan,
        ) -> impl Future<Output = Result<Vec<ferrohub_registry::TwinRow>, StoreError>> + Send
        {
            self.inner.query_twins(scan)
        }

        fn identities(
            &self,
        ) -> impl Future<
            Output = Result<Vec<(DeviceId, Option<ModuleId>, IdentityAuth)>, StoreError>,
        > + Send {
            self.inner.identities()
        }
    }
}

#[test]
fn abandoned_writes_leave_the_cache_restrictive_until_repaired() {
    use std::pin::pin;
    use std::sync::atomic::Ordering;

    let r = block_on(Registry::open(gated::GatedStore::default())).expect("open");
    let seen = recorder(&r);
    let d =
        block_on(r.create_device(sas_spec("d1", key(1, 32), key(2, 32)), at(0))).expect("create");
    r.store().closed.store(true, Ordering::SeqCst);

    // A key rotation whose caller goes away while the store works: the change is stored, but
    // only the key common to the old and new state is trusted meanwhile.
    {
        let mut f =
            pin!(r.update_device(sas_spec("d1", key(3, 32), key(2, 32)), IfMatch::Any, at(1)));
        assert!(poll_once(f.as_mut()).is_pending());
    }
    let auth = r.identity(&did("d1"), None).expect("still cached");
    assert_eq!(
        auth.primary_key, "",
        "the old primary key is no longer trusted"
    );
    assert_eq!(auth.secondary_key, key(2, 32));
    assert_eq!(
        take(&seen),
        [ev("d1", None, IdentityChangeKind::KeysChanged)]
    );

    // A creation of unknown outcome is not trusted; a deletion is trusted at once.
    {
        let mut f = pin!(r.create_device(DeviceSpec::new(did("d2")), at(2)));
        assert!(poll_once(f.as_mut()).is_pending());
    }
    assert_eq!(r.identity(&did("d2"), None), None);
    {
        let d2 = did("d2");
        let mut f = pin!(r.delete_device(&d2, IfMatch::Any));
        assert!(poll_once(f.as_mut()).is_pending());
    }
    assert_eq!(r.identity(&did("d2"), None), None);
    assert_eq!(take(&seen), [ev("d2", None, IdentityChangeKind::Deleted)]);

    // The next write to the device reads it back and repairs the entry.
    r.store().closed.store(false, Ordering::SeqCst);
    for gate in r.store().gates.lock().expect("lock").drain(..) {
        let _ = gate.send(());
    }
    let updated =
        block_on(r.update_device(DeviceSpec::new(did("d1")), IfMatch::Any, at(3))).expect("update");
    assert_eq!(keys_of(&updated), (key(3, 32), key(2, 32)));
    let auth = r.identity(&did("d1"), None).expect("cached");
    assert_eq!(
        (auth.primary_key, auth.secondary_key),
        (key(3, 32), key(2, 32))
    );
    assert_eq!(d.generation_id, updated.generation_id);
}
