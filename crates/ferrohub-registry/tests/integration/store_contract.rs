//! The `RegistryStore` contract (`ferrohub_registry::contract`) run against every store of this
//! crate, and what only the durable store promises.

use ferrohub_registry::{Change, Expect, RegistryStore, StoreError};

use crate::common::*;

ferrohub_registry::registry_store_contract!(memory_store, memory());
ferrohub_registry::registry_store_contract!(sqlite_store, sqlite());

/// What only a durable store promises.
mod sqlite_only {
    use ferrohub_registry::SqliteStore;
    use rusqlite::Connection;

    use super::*;

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registry.db");
        {
            let s = SqliteStore::open(&path).expect("open");
            block_on(s.apply(vec![
                Change::PutDevice {
                    device: full_device("d1"),
                    expect: Expect::Absent,
                },
                Change::PutModule {
                    module: module("d1", "m1", 2),
                    expect: Expect::Absent,
                },
                Change::PutDevice {
                    device: device("d2", 0),
                    expect: Expect::Absent,
                },
            ]))
            .expect("apply");
            block_on(s.apply(vec![Change::DeleteDevice {
                id: did("d2"),
                expect: Expect::Version(0),
            }]))
            .expect("delete");
        }
        let s = SqliteStore::open(&path).expect("reopen");
        assert_eq!(
            block_on(s.device(&did("d1"))).expect("read"),
            Some(full_device("d1"))
        );
        assert_eq!(
            block_on(s.modules(&did("d1"))).expect("read"),
            vec![module("d1", "m1", 2)]
        );
        assert_eq!(block_on(s.device(&did("d2"))).expect("read"), None);
        // The versions still guard writes after reopening.
        assert_eq!(
            block_on(s.apply(vec![Change::PutDevice {
                device: full_device("d1"),
                expect: Expect::Version(2),
            }])),
            Err(StoreError::Conflict { index: 0 })
        );
    }

    #[test]
    fn schema_is_versioned_and_wal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registry.db");
        drop(SqliteStore::open(&path).expect("open"));
        {
            let conn = Connection::open(&path).expect("inspect");
            let version: i64 = conn
                .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
                .expect("schema version");
            assert_eq!(version, 2);
            let mode: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .expect("journal mode");
            assert_eq!(mode, "wal");
        }
        // Reopening does not migrate twice.
        drop(SqliteStore::open(&path).expect("reopen"));
        let conn = Connection::open(&path).expect("inspect");
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM schema_version", [], |r| r.get(0))
            .expect("rows");
        assert_eq!(rows, 2);
        // A database from a newer build is refused, not misread.
        conn.execute("INSERT INTO schema_version (version) VALUES (99)", [])
            .expect("bump");
        drop(conn);
        match SqliteStore::open(&path) {
            Err(StoreError::Incompatible(msg)) => assert!(msg.contains("99"), "{msg}"),
            other => panic!("expected Incompatible, got {other:?}"),
        }
    }

    #[test]
    fn a_version_1_database_gains_twins_and_keeps_its_identities() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registry.db");
        {
            let s = SqliteStore::open(&path).expect("open");
            block_on(s.apply(vec![Change::PutDevice {
                device: full_device("d1"),
                expect: Expect::Absent,
            }]))
            .expect("insert");
        }
        {
            // Back to what a build without twins wrote.
            let conn = Connection::open(&path).expect("inspect");
            conn.execute_batch("DROP TABLE twins; DELETE FROM schema_version WHERE version = 2;")
                .expect("downgrade");
        }
        let s = SqliteStore::open(&path).expect("migrate");
        assert_eq!(
            block_on(s.device(&did("d1"))).expect("read"),
            Some(full_device("d1"))
        );
        assert_eq!(block_on(s.twin(&did("d1"), None)).expect("read"), None);
        block_on(s.apply(vec![Change::PutTwin {
            device_id: did("d1"),
            module_id: None,
            twin: twin(0, 1),
            expect: Expect::Absent,
        }]))
        .expect("a twin after the migration");
    }

    #[test]
    fn twin_sections_sit_at_the_query_paths() {
        let (s, dir) = sqlite();
        block_on(s.apply(vec![
            Change::PutDevice {
                device: device("d1", 0),
                expect: Expect::Absent,
            },
            Change::PutModule {
                module: module("d1", "m1", 0),
                expect: Expect::Absent,
            },
            Change::PutTwin {
                device_id: did("d1"),
                module_id: None,
                twin: twin(0, 7),
                expect: Expect::Absent,
            },
            Change::PutTwin {
                device_id: did("d1"),
                module_id: Some(mid("m1")),
                twin: twin(0, 8),
                expect: Expect::Absent,
            },
        ]))
        .expect("seed");
        let path = dir.as_ref().expect("dir").path().join("registry.db");
        let conn = Connection::open(path).expect("inspect");
        let row = |module: &str| -> (i64, String, String, f64, String) {
            conn.query_row(
                "SELECT json_extract(doc, '$.tags.n'),
                        json_extract(doc, '$.tags.site.building'),
                        json_extract(doc, '$.properties.desired.fw'),
                        json_extract(doc, '$.properties.reported.temp.c'),
                        json_type(doc, '$.properties.desired.cfg.rates')
                 FROM twins WHERE device_id = 'd1' AND module_id = ?1",
                [module],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .expect("the twin's row")
        };
        assert_eq!(
            row(""),
            (
                7,
                "B7".to_owned(),
                "7.0".to_owned(),
                21.5,
                "array".to_owned()
            ),
            "the device's twin has module id ''"
        );
        assert_eq!(row("m1").0, 8);
    }

    #[test]
    fn group_commit_shares_transactions() {
        let (s, _dir) = sqlite();
        ferrohub_registry::contract::cases::concurrent_applies_all_land(&s);
        let stats = s.write_stats();
        assert!(stats.applies >= 105, "{stats:?}");
        assert!(stats.transactions <= stats.applies, "{stats:?}");
        eprintln!("group commit: {stats:?}");
    }

    #[test]
    fn corrupt_documents_are_reported() {
        let (s, dir) = sqlite();
        block_on(s.apply(vec![Change::PutDevice {
            device: device("d1", 0),
            expect: Expect::Absent,
        }]))
        .expect("insert");
        let path = dir.as_ref().expect("dir").path().join("registry.db");
        let conn = Connection::open(path).expect("inspect");
        conn.execute("UPDATE devices SET doc = '{' WHERE device_id = 'd1'", [])
            .expect("corrupt");
        assert!(matches!(
            block_on(s.device(&did("d1"))),
            Err(StoreError::Corrupt(_))
        ));
    }
}
