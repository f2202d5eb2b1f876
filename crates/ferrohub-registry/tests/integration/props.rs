//! Property tests: the SQLite store agrees with the memory store on any sequence of changes, and
//! ETags match their header forms.

use ferrohub_registry::{
    Change, ETag, Expect, IfMatch, MemoryStore, RegistryStore, SqliteStore, StoreError,
};
use proptest::prelude::*;

use crate::common::*;

const DEVICES: [&str; 3] = ["a", "b", "c"];
const MODULES: [&str; 2] = ["m1", "m2"];

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![Just(Expect::Absent), (0u64..3).prop_map(Expect::Version)]
}

fn change() -> impl Strategy<Value = Change> {
    let d = 0..DEVICES.len();
    let m = 0..MODULES.len();
    prop_oneof![
        (d.clone(), 0u64..3, expect()).prop_map(|(d, v, expect)| Change::PutDevice {
            device: device(DEVICES[d], v),
            expect,
        }),
        (d.clone(), expect()).prop_map(|(d, expect)| Change::DeleteDevice {
            id: did(DEVICES[d]),
            expect,
        }),
        (d.clone(), m.clone(), 0u64..3, expect()).prop_map(|(d, m, v, expect)| {
            Change::PutModule {
                module: module(DEVICES[d], MODULES[m], v),
                expect,
            }
        }),
        (d.clone(), m.clone(), expect()).prop_map(|(d, m, expect)| Change::DeleteModule {
            device_id: did(DEVICES[d]),
            module_id: mid(MODULES[m]),
            expect,
        }),
        (d, prop::option::of(m), 0u64..3, expect()).prop_map(|(d, m, v, expect)| {
            Change::PutTwin {
                device_id: did(DEVICES[d]),
                module_id: m.map(|m| mid(MODULES[m])),
                twin: twin(v, v),
                expect,
            }
        }),
    ]
}

type Twins = Vec<Option<ferrohub_registry::StoredTwin>>;
type Snapshot = Vec<(
    ferrohub_registry::Device,
    Vec<ferrohub_registry::Module>,
    Twins,
)>;

fn snapshot<S: RegistryStore>(s: &S) -> Snapshot {
    block_on(async {
        let mut out = Vec::new();
        for d in s.devices(100).await.expect("list") {
            let modules = s.modules(&d.device_id).await.expect("modules");
            let mut twins = vec![s.twin(&d.device_id, None).await.expect("twin")];
            for m in MODULES {
                twins.push(s.twin(&d.device_id, Some(&mid(m))).await.expect("twin"));
            }
            out.push((d, modules, twins));
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_agrees_with_memory(
        batches in prop::collection::vec(prop::collection::vec(change(), 1..4), 1..10)
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = SqliteStore::open(dir.path().join("r.db")).expect("open");
        let memory = MemoryStore::new();
        for batch in batches {
            let a: Result<(), StoreError> = block_on(memory.apply(batch.clone()));
            let b = block_on(sqlite.apply(batch));
            prop_assert_eq!(a, b);
        }
        prop_assert_eq!(snapshot(&memory), snapshot(&sqlite));
        let stats = (block_on(memory.statistics()), block_on(sqlite.statistics()));
        prop_assert_eq!(stats.0, stats.1);
    }

    #[test]
    fn etags_match_their_header_forms(v in any::<u64>(), other in any::<u64>()) {
        let etag = ETag::from_version(v);
        for form in [
            etag.as_str().to_owned(),
            etag.quoted(),
            format!("W/{}", etag.quoted()),
            format!("  {} ", etag.quoted()),
        ] {
            prop_assert!(etag.matches(&form), "{}", form);
            prop_assert!(IfMatch::parse(&form).matches(&etag), "{}", form);
        }
        prop_assert!(IfMatch::parse("\"*\"").matches(&etag));
        prop_assert_eq!(IfMatch::parse("*"), IfMatch::Any);
        if other != v {
            prop_assert!(!etag.matches(&ETag::from_version(other).quoted()));
        }
    }
}

#[test]
fn etag_of_zero_is_ma() {
    assert_eq!(ETag::from_version(0).as_str(), "MA==");
    assert_eq!(ETag::from_version(791_938_671).as_str(), "NzkxOTM4Njcx");
    assert_eq!(
        IfMatch::parse("W/\"MA==\""),
        IfMatch::ETag("MA==".to_owned())
    );
}

#[test]
fn import_modes_parse_case_insensitively() {
    use ferrohub_registry::ImportMode;
    for mode in ImportMode::ALL {
        assert_eq!(mode.name().parse::<ImportMode>(), Ok(mode));
        assert_eq!(mode.name().to_uppercase().parse::<ImportMode>(), Ok(mode));
    }
    assert_eq!("Update".parse::<ImportMode>(), Ok(ImportMode::Update));
    assert_eq!(
        "UpdateIfMatchETag".parse::<ImportMode>(),
        Ok(ImportMode::UpdateIfMatchETag)
    );
    assert!("upsert".parse::<ImportMode>().is_err());
    assert_eq!(ImportMode::default(), ImportMode::CreateOrUpdate);
}

#[test]
fn error_codes_match_azure() {
    use ferrohub_registry::RegistryError as E;
    let cases: Vec<(E, u32)> = vec![
        (E::DeviceNotFound(did("d")), 404001),
        (
            E::ModuleNotFound {
                device_id: did("d"),
                module_id: mid("m"),
            },
            404010,
        ),
        (E::DeviceAlreadyExists(did("d")), 409001),
        (
            E::ModuleAlreadyExists {
                device_id: did("d"),
                module_id: mid("m"),
            },
            409301,
        ),
        (E::PreconditionFailed, 412001),
        (E::InvalidArgument("x".to_owned()), 400004),
        (E::TooManyDevices { max: 100 }, 413002),
        (E::DeviceDefinedMultipleTimes("d".to_owned()), 400011),
        (E::Store(StoreError::Unavailable("down".to_owned())), 503001),
        (E::Store(StoreError::Corrupt("bad".to_owned())), 500001),
    ];
    for (e, n) in cases {
        assert_eq!(e.error_code().number(), n, "{e}");
    }
}
