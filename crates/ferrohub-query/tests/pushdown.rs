//! Push-down: the pre-filter never rejects a row the evaluator selects.
//!
//! Checked twice: on the [`Filter`] itself (its own interpretation, for both dialects), and
//! for SQLite for real — random documents in an in-memory table, the rendered SQL run by
//! SQLite, its rows compared with the evaluator's (a superset) and with the filter's own
//! interpretation (equal: the rendering is exact).

mod common;

use std::collections::BTreeSet;

use common::arb;
use ferrohub_query::{
    Collection, CompareOp, Condition, Dialect, Expr, Field, Filter, JsonTypes, LIVE_FIELDS, Layout,
    Query, RowKey, Scalar, SqlParam, Table,
};
use proptest::prelude::*;
use rusqlite::Connection;
use serde_json::{Value, json};

const KEYED: Table<'static> = Table {
    document: "doc",
    layout: Layout::Rest,
    device_id: Some("device_id"),
    child_id: None,
    computed_fields: &[],
};

/// `status` is computed at read time in this table: the documents lack it.
const COMPUTED: Table<'static> = Table {
    document: "doc",
    layout: Layout::Rest,
    device_id: None,
    child_id: None,
    computed_fields: &["status"],
};

const PLAIN: Table<'static> = Table {
    document: "doc",
    layout: Layout::Rest,
    device_id: None,
    child_id: None,
    computed_fields: &[],
};

/// Twins in `ferrohub-twin`'s stored form, device ids in their column.
const TWIN: Table<'static> = Table {
    document: "doc",
    layout: Layout::StoredTwin,
    device_id: Some("device_id"),
    child_id: None,
    computed_fields: &[],
};

const TABLES: [Table<'static>; 4] = [PLAIN, KEYED, COMPUTED, TWIN];

fn bind(params: &[SqlParam]) -> Vec<Box<dyn rusqlite::ToSql>> {
    params
        .iter()
        .map(|p| -> Box<dyn rusqlite::ToSql> {
            match p {
                SqlParam::Text(s) => Box::new(s.clone()),
                SqlParam::Integer(i) => Box::new(*i),
                SqlParam::Real(f) => Box::new(*f),
                SqlParam::Bool(b) => Box::new(*b),
                SqlParam::TextArray(_) => unreachable!("SQLite renderings bind no arrays"),
            }
        })
        .collect()
}

/// The document a store keeps for `row` under `table`: for the REST layout, the row less
/// the live and computed fields; for the stored-twin layout, `ferrohub-twin`'s stored form
/// (the ETag counter, tags, the sections without `$metadata`, the metadata apart).
fn stored(row: &Value, table: &Table<'_>) -> Value {
    if table.layout == Layout::StoredTwin {
        let section = |name: &str| {
            let mut values = row["properties"][name]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let metadata = values.remove("$metadata").unwrap_or_else(|| json!({}));
            (Value::Object(values), metadata)
        };
        let (desired, desired_meta) = section("desired");
        let (reported, reported_meta) = section("reported");
        return json!({
            "etag": 1,
            "tags": row.get("tags").cloned().unwrap_or_else(|| json!({})),
            "properties": {"desired": desired, "reported": reported},
            "metadata": {"desired": desired_meta, "reported": reported_meta},
        });
    }
    let mut doc = row.clone();
    if let Value::Object(m) = &mut doc {
        for f in LIVE_FIELDS.iter().chain(table.computed_fields) {
            m.remove(*f);
        }
    }
    doc
}

/// Rows `(device_id, full row)`; device ids repeat the strings conditions use.
fn rows(docs: Vec<Value>) -> Vec<(String, Value)> {
    docs.into_iter()
        .enumerate()
        .map(|(i, mut d)| {
            let id = arb::STRINGS[i % arb::STRINGS.len()].to_owned();
            d["deviceId"] = json!(id);
            (id, d)
        })
        .collect()
}

/// Runs the condition's SQLite rendering over the rows; returns the indexes SQLite selects.
fn sqlite_selects(rows: &[(String, Value)], query: &Query, table: &Table<'_>) -> BTreeSet<usize> {
    let db = Connection::open_in_memory().expect("in-memory database");
    db.execute_batch("CREATE TABLE t (i INTEGER, device_id TEXT, doc TEXT)")
        .expect("table");
    for (i, (id, row)) in rows.iter().enumerate() {
        db.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3)",
            rusqlite::params![i as i64, id, stored(row, table).to_string()],
        )
        .expect("insert");
    }
    // Our placeholders start at 1; the statement has none of its own.
    let filter = query.sql_filter(Dialect::Sqlite, table, 1);
    let sql = format!("SELECT i FROM t WHERE {}", filter.sql);
    let params = bind(&filter.params);
    let mut stmt = db.prepare(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let refs: Vec<&dyn rusqlite::ToSql> = params.iter().map(|b| b.as_ref()).collect();
    stmt.query_map(refs.as_slice(), |r| r.get::<_, i64>(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .map(|r| usize::try_from(r.expect("row")).expect("index"))
        .collect()
}

fn query_of(cond: Expr) -> Query {
    Query::select_all(Collection::Devices, Condition::Where(cond))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn filter_passes_every_selected_row(doc in arb::document(), cond in arb::doc_condition()) {
        let q = query_of(cond);
        let mut row = doc;
        row["deviceId"] = json!("ab");
        if q.matches(&row) {
            for dialect in [Dialect::Sqlite, Dialect::Postgres] {
                for table in TABLES {
                    let pre = q.pre_filter(dialect, &table);
                    let key = RowKey::device("ab");
                    prop_assert!(
                        pre.matches(&key, &stored(&row, &table)),
                        "{} {:?} {:?}: {:?} on {}", q, dialect, table.layout, pre.filter(), row
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn sqlite_selects_a_superset(docs in proptest::collection::vec(arb::document(), 1..12), cond in arb::doc_condition()) {
        let q = query_of(cond);
        let rows = rows(docs);
        for table in TABLES {
            let sql = sqlite_selects(&rows, &q, &table);
            let pre = q.pre_filter(Dialect::Sqlite, &table);
            for (i, (id, row)) in rows.iter().enumerate() {
                let doc = stored(row, &table);
                // The rendering computes exactly the filter…
                let key = RowKey::device(id.clone());
                prop_assert_eq!(sql.contains(&i), pre.matches(&key, &doc), "{} on {}: {:?}", q, doc, pre.filter());
                // …which passes every row the evaluator selects.
                if q.matches(row) {
                    prop_assert!(sql.contains(&i), "{} selects {} but SQL does not", q, row);
                }
            }
        }
    }
}

#[test]
fn live_and_computed_fields_are_never_pushed_down() {
    let q = Query::parse("SELECT * FROM devices WHERE connectionState = 'Connected' AND lastActivityTime > '2020' AND cloudToDeviceMessageCount = 0 AND connectionStateUpdatedTime > '2020' AND status = 'enabled'")
        .expect("parses");
    let plain = q.pre_filter(Dialect::Sqlite, &PLAIN);
    assert_eq!(
        plain.filter(),
        &Filter::Compare {
            field: Field::Document(ferrohub_query::Path::keys(&["status"]).expect("path")),
            op: CompareOp::Eq,
            value: Scalar::Text("enabled".into())
        }
    );
    assert!(q.pre_filter(Dialect::Postgres, &COMPUTED).is_everything());
    // Job records have no live fields.
    let q = Query::parse("SELECT * FROM devices.jobs WHERE connectionState = 'x'").expect("parses");
    assert!(!q.pre_filter(Dialect::Sqlite, &PLAIN).is_everything());
}

#[test]
fn not_of_unknown_is_not_pushed_down_as_false() {
    // connectionState is unknown to SQL: NOT of it must still pass everything.
    let q = Query::parse("SELECT * FROM devices WHERE NOT (connectionState = 'Connected')")
        .expect("parses");
    assert!(q.pre_filter(Dialect::Sqlite, &PLAIN).is_everything());
    let q = Query::parse(
        "SELECT * FROM devices WHERE NOT (connectionState = 'Connected' AND tags.a = 1)",
    )
    .expect("parses");
    let pre = q.pre_filter(Dialect::Sqlite, &PLAIN);
    // Where the AND is false: tags.a is a number other than 1, or connectionState is
    // anything at all.
    assert!(pre.is_everything(), "{:?}", pre.filter());
}

#[test]
fn sqlite_rendering_binds_every_value() {
    let q = Query::parse(
        "SELECT * FROM devices WHERE tags.location.region = 'US' AND properties.reported.telemetryConfig.sendFrequencyInSecs >= 60 AND deviceId IN ['a''', 'b']",
    );
    assert!(q.is_err(), "'' is not an escape");
    let q = Query::parse(
        r"SELECT * FROM devices WHERE tags.location.region = 'US' AND properties.reported.x >= 60 AND deviceId IN ['a\'); DROP TABLE t; --', 'b']",
    )
    .expect("parses");
    let f = q.sql_filter(Dialect::Sqlite, &KEYED, 3);
    assert!(
        !f.sql.contains("US") && !f.sql.contains("DROP") && !f.sql.contains("60"),
        "{}",
        f.sql
    );
    let placeholders: Vec<usize> = f
        .sql
        .split('?')
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .expect("number")
        })
        .collect();
    assert_eq!(
        placeholders,
        (3..3 + f.params.len()).collect::<Vec<_>>(),
        "{}",
        f.sql
    );
    assert!(
        f.sql.contains("\"device_id\" = ?"),
        "uses the key column: {}",
        f.sql
    );
    assert!(f.params.contains(&SqlParam::Text("US".into())));
    assert!(f.params.contains(&SqlParam::Integer(60)));
    assert!(
        f.params
            .contains(&SqlParam::Text("$.\"tags\".\"location\".\"region\"".into()))
    );
    assert!(
        f.params
            .contains(&SqlParam::Text("a'); DROP TABLE t; --".into()))
    );
}

#[test]
fn postgres_rendering() {
    let q = Query::parse(
        "SELECT * FROM devices WHERE tags.region = 'US' AND properties.reported.freq >= 60 AND STARTSWITH(deviceId, 'e2e-') AND IS_DEFINED(tags.x) AND tags.flag = true",
    )
    .expect("parses");
    let f = q.sql_filter(Dialect::Postgres, &KEYED, 1);
    assert_eq!(
        f.sql,
        "(((coalesce(jsonb_typeof(\"doc\" #> $1::text[]), '') IN ('string')) AND (\"doc\" #>> $2::text[]) COLLATE \"C\" = $3::text) \
         AND ((coalesce(jsonb_typeof(\"doc\" #> $4::text[]), '') IN ('number')) AND (\"doc\" #> $5::text[]) >= to_jsonb($6::int8)) \
         AND (left(\"device_id\", length($7::text)) = $8::text) \
         AND ((\"doc\" #> $9::text[]) IS NOT NULL) \
         AND ((coalesce(jsonb_typeof(\"doc\" #> $10::text[]), '') IN ('boolean')) AND (\"doc\" #> $11::text[]) = to_jsonb($12::bool)))"
    );
    assert_eq!(
        f.params[0],
        SqlParam::TextArray(vec!["tags".into(), "region".into()])
    );
    assert_eq!(f.params[2], SqlParam::Text("US".into()));
    assert_eq!(f.params[5], SqlParam::Integer(60));
    assert_eq!(f.params[11], SqlParam::Bool(true));
    assert_eq!(f.params.len(), 12);
    // PostgreSQL text holds no NUL: such strings are not pushed down there.
    let q = Query::parse(
        r"SELECT * FROM devices WHERE STARTSWITH(tags.s, 'a\u0000') OR tags.s = '\u0000'",
    )
    .expect("parses");
    assert!(q.pre_filter(Dialect::Postgres, &PLAIN).is_everything());
    assert!(!q.pre_filter(Dialect::Sqlite, &PLAIN).is_everything());
    // SQLite's JSON paths cannot hold `"` or NUL (a NUL would even make SQLite fail with
    // "bad JSON path").
    let q = Query::parse(r#"SELECT * FROM devices WHERE tags['x"y'] = 1"#).expect("parses");
    assert!(q.pre_filter(Dialect::Sqlite, &PLAIN).is_everything());
    assert!(!q.pre_filter(Dialect::Postgres, &PLAIN).is_everything());
    let q =
        Query::parse(r"SELECT * FROM devices WHERE IS_DEFINED(tags['k\u0000'])").expect("parses");
    assert!(q.pre_filter(Dialect::Sqlite, &PLAIN).is_everything());
    assert!(q.pre_filter(Dialect::Postgres, &PLAIN).is_everything());
    // PostgreSQL cannot tell `tags['0']` from `tags[0]`: neither is pushed down.
    let q = Query::parse("SELECT * FROM devices WHERE tags['0'] = 1 OR tags.list[0] = 1")
        .expect("parses");
    assert!(q.pre_filter(Dialect::Postgres, &PLAIN).is_everything());
    assert!(!q.pre_filter(Dialect::Sqlite, &PLAIN).is_everything());
}

#[test]
fn what_is_not_pushed_down() {
    for cond in [
        "tags.a = tags.b",
        "tags.a + 1 = 2",
        "tags.big = 9007199254740992",
        "tags.big < -9007199254740993.0",
        "STARTSWITH('abc', tags.s)",
        "IS_DEFINED(tags.a + 1)",
    ] {
        let q = Query::parse(&format!("SELECT * FROM devices WHERE {cond}")).expect("parses");
        assert!(
            q.pre_filter(Dialect::Sqlite, &PLAIN).is_everything(),
            "{cond}"
        );
    }
    // Never defined: nothing passes.
    for cond in [
        "tags.a = undefined",
        "tags.a < [1]",
        "STARTSWITH(tags.a, 1)",
        "tags.a != null",
        "1 = 2",
    ] {
        let q = Query::parse(&format!("SELECT * FROM devices WHERE {cond}")).expect("parses");
        assert_eq!(
            q.pre_filter(Dialect::Sqlite, &PLAIN).filter(),
            &Filter::False,
            "{cond}"
        );
    }
    let q = Query::parse("SELECT * FROM devices WHERE tags.a = null").expect("parses");
    assert_eq!(
        q.pre_filter(Dialect::Sqlite, &PLAIN).filter(),
        &Filter::HasType {
            field: Field::Document(ferrohub_query::Path::keys(&["tags", "a"]).expect("path")),
            types: JsonTypes::NULL
        }
    );
}

#[test]
fn key_lookup() {
    let lookup = |text: &str| Query::parse(text).expect("parses").key_lookup();
    let ids = |v: &[&str]| Some(v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
    assert_eq!(
        lookup("SELECT * FROM devices WHERE deviceId = 'b' OR id = 'a'").device_ids,
        ids(&["a", "b"])
    );
    assert_eq!(
        lookup("SELECT * FROM devices WHERE deviceId IN ['a', 'b', 'c'] AND (deviceId = 'b' OR deviceId = 'c' OR deviceId = 'z')").device_ids,
        ids(&["b", "c"])
    );
    assert_eq!(
        lookup("SELECT * FROM devices WHERE deviceId = 'a' AND tags.x = 1").device_ids,
        ids(&["a"])
    );
    assert_eq!(
        lookup("SELECT * FROM devices WHERE deviceId = 'a' OR tags.x = 1").device_ids,
        None
    );
    assert_eq!(
        lookup("SELECT * FROM devices WHERE NOT deviceId = 'a'").device_ids,
        None
    );
    assert_eq!(
        lookup("SELECT * FROM devices WHERE deviceId NIN ['a']").device_ids,
        None
    );
    assert_eq!(
        lookup("SELECT * FROM devices WHERE deviceId = 5").device_ids,
        ids(&[])
    );
    assert_eq!(lookup("SELECT * FROM devices").device_ids, None);
    let m =
        lookup("SELECT * FROM devices.modules WHERE moduleId IN ['m1', 'm2'] AND deviceId = 'd'");
    assert_eq!(
        (m.device_ids, m.child_ids),
        (ids(&["d"]), ids(&["m1", "m2"]))
    );
}

#[test]
fn key_lookup_never_drops_a_selected_row() {
    // Superset on random conditions, rows keyed by their deviceId.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    for _ in 0..2000 {
        let doc = arb::document()
            .new_tree(&mut runner)
            .expect("doc")
            .current();
        let cond = arb::doc_condition()
            .new_tree(&mut runner)
            .expect("cond")
            .current();
        let q = query_of(cond);
        for id in arb::STRINGS {
            let mut row = doc.clone();
            row["deviceId"] = json!(id);
            if q.matches(&row)
                && let Some(ids) = q.key_lookup().device_ids
            {
                assert!(
                    ids.iter().any(|i| i == id),
                    "{q} selects {id} outside {ids:?}"
                );
            }
        }
    }
}

#[test]
fn sql_after_pages_in_key_order() {
    let db = Connection::open_in_memory().expect("db");
    db.execute_batch(
        "CREATE TABLE m (device_id TEXT, module_id TEXT, doc TEXT);
         INSERT INTO m VALUES ('a','x','{}'), ('a','y','{}'), ('b','a','{}'), ('b','z','{}'), ('é','a','{}'), ('B','q','{}');",
    )
    .expect("rows");
    let table = Table {
        document: "doc",
        layout: Layout::Rest,
        device_id: Some("device_id"),
        child_id: Some("module_id"),
        computed_fields: &[],
    };
    let key = RowKey::module("a", "y");
    let after = key
        .sql_after(Dialect::Sqlite, &table, 1)
        .expect("has columns");
    let sql = format!(
        "SELECT device_id || '/' || module_id FROM m WHERE {} ORDER BY device_id, module_id",
        after.sql
    );
    let params = bind(&after.params);
    let refs: Vec<&dyn rusqlite::ToSql> = params.iter().map(|b| b.as_ref()).collect();
    let mut stmt = db.prepare(&sql).expect("prepare");
    let got: Vec<String> = stmt
        .query_map(refs.as_slice(), |r| r.get(0))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    assert_eq!(got, ["b/a", "b/z", "é/a"]);
    // Byte order: 'B' < 'a', and RowKey orders the same way.
    assert!(RowKey::module("B", "q") < key);
    assert!(
        RowKey::device("a")
            .sql_after(Dialect::Sqlite, &PLAIN, 1)
            .is_none()
    );
    let pg = RowKey::device("a")
        .sql_after(Dialect::Postgres, &KEYED, 4)
        .expect("column");
    assert_eq!(pg.sql, "(\"device_id\" COLLATE \"C\" > $4::text)");
}

#[test]
fn stored_twin_layout() {
    let q = Query::parse(
        "SELECT * FROM devices WHERE properties.reported.$metadata.fw.$lastUpdated > '2024' AND tags.a = 1 AND etag = 'AAAAAAAAAAE=' AND version > 1 AND status = 'enabled' AND deviceId = 'd'",
    )
    .expect("parses");
    let f = q.sql_filter(Dialect::Sqlite, &TWIN, 1);
    let paths: Vec<&SqlParam> = f
        .params
        .iter()
        .filter(|p| matches!(p, SqlParam::Text(t) if t.starts_with('$')))
        .collect();
    assert_eq!(
        paths,
        [
            &SqlParam::Text("$.\"metadata\".\"reported\".\"fw\".\"$lastUpdated\"".into()),
            &SqlParam::Text("$.\"metadata\".\"reported\".\"fw\".\"$lastUpdated\"".into()),
            &SqlParam::Text("$.\"tags\".\"a\"".into()),
            &SqlParam::Text("$.\"tags\".\"a\"".into()),
        ],
        "{}",
        f.sql
    );
    assert!(f.sql.contains("\"device_id\" = ?"), "{}", f.sql);
    // The stored `metadata` and `etag` are not the REST twin's: never read.
    for cond in [
        "IS_DEFINED(metadata)",
        "NOT IS_DEFINED(metadata)",
        "etag = 1",
        "version = 2",
        "properties.desired.$version = 1",
    ] {
        let q = Query::parse(&format!("SELECT * FROM devices WHERE {cond}")).expect("parses");
        let pre = q.pre_filter(Dialect::Sqlite, &TWIN);
        assert_eq!(
            pre.is_everything(),
            !cond.starts_with("properties"),
            "{cond}: {:?}",
            pre.filter()
        );
    }
}
