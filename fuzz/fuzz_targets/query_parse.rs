//! Parses arbitrary text as a query and as a job condition. Whatever parses prints to text
//! that parses back to the same tree, and evaluates, projects, aggregates, pages and renders
//! both SQL dialects without panicking; its SQL pre-filter and key lookup pass every sample
//! row the query selects.
#![no_main]

use std::sync::LazyLock;

use ferrohub_query::{
    Collection, Condition, Continuation, Dialect, LIVE_FIELDS, Layout, Query, RowKey, Table,
};
use serde_json::{Value, json};

/// Sample rows: twin-shaped, with every kind of value, and a job-record-shaped one.
static ROWS: LazyLock<Vec<Value>> = LazyLock::new(|| {
    vec![
        json!({
            "deviceId": "d1", "moduleId": "m1", "jobId": "j1", "etag": "AAAAAAAAAAE=", "status": "enabled",
            "connectionState": "Connected", "lastActivityTime": "2021-05-07T00:50:38Z", "cloudToDeviceMessageCount": 0,
            "version": 2, "tags": {"a": 1, "b": "x", "c": [1, "y", null], "d": {"e": true}, "": 0.5, "0": -3},
            "properties": {"desired": {"$version": 1}, "reported": {"$version": 1, "s": "scanning", "n": 1e300, "z": null}},
        }),
        json!({
            "deviceId": "d2", "moduleId": "m2", "jobId": "j2", "status": "disabled", "version": 9_007_199_254_740_993_u64,
            "tags": {"a": 1.0, "b": "xy\u{0}z", "c": [], "d": {}}, "properties": {"desired": {}, "reported": {"s": ""}},
        }),
        json!({
            "deviceId": "e2e-é", "moduleId": "m", "jobId": "j", "jobType": "scheduleTwinUpdate", "status": "completed",
            "createdDateTimeUtc": "2016-09-29T18:18:56Z", "outcome": {"deviceMethodResponse": {"status": 200}},
            "tags": {"a": u64::MAX, "b": ["x"], "c": "c", "d": -0.0},
        }),
    ]
});

const TABLE: Table<'static> = Table {
    document: "doc",
    layout: Layout::Rest,
    device_id: Some("device_id"),
    child_id: Some("child_id"),
    computed_fields: &["status"],
};

fn key(collection: Collection, row: &Value) -> RowKey {
    let s = |k: &str| row[k].as_str().unwrap_or_default().to_owned();
    match collection {
        Collection::Devices => RowKey::device(s("deviceId")),
        Collection::Modules => RowKey::module(s("deviceId"), s("moduleId")),
        Collection::Jobs => RowKey::job(s("deviceId"), s("jobId")),
    }
}

fn stored(row: &Value) -> Value {
    let mut doc = row.clone();
    if let Value::Object(m) = &mut doc {
        for f in LIVE_FIELDS.iter().chain(TABLE.computed_fields) {
            m.remove(*f);
        }
    }
    doc
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(query) = Query::parse(text) {
        assert_eq!(
            Query::parse(&query.to_string()).as_ref(),
            Ok(&query),
            "{text}"
        );
        let _ = query.item_type();
        let pre = [Dialect::Sqlite, Dialect::Postgres].map(|d| query.pre_filter(d, &TABLE));
        for p in &pre {
            let _ = p.to_sql(&TABLE, 1);
        }
        let lookup = query.key_lookup();
        let mut aggregator = query.aggregator();
        for row in ROWS.iter() {
            aggregator.push(row);
            if query.matches(row) {
                let _ = query.project(row.clone());
                for p in &pre {
                    assert!(
                        p.matches(&key(query.from, row), &stored(row)),
                        "{text}: the pre-filter drops {row}"
                    );
                }
                if let Some(ids) = &lookup.device_ids {
                    assert!(
                        ids.iter().any(|id| row["deviceId"] == *id),
                        "{text}: the key lookup drops {row}"
                    );
                }
            }
        }
        let _ = aggregator.finish();
        if let Ok(mut pager) = query.pager(1, None) {
            for row in ROWS.iter() {
                if pager.push(key(query.from, row), row.clone()) == ferrohub_query::Flow::Stop {
                    break;
                }
            }
            if let Some(token) = pager.finish().continuation {
                assert!(
                    Continuation::decode(&token, &query).is_ok(),
                    "{text}: own token refused"
                );
            }
        }
    }
    if let Ok(condition) = Condition::parse(text) {
        assert_eq!(
            Condition::parse(&condition.to_string()).as_ref(),
            Ok(&condition),
            "{text}"
        );
        for row in ROWS.iter() {
            let _ = condition.matches(row);
        }
        for d in [Dialect::Sqlite, Dialect::Postgres] {
            let _ = condition
                .pre_filter(Collection::Devices, d, &TABLE)
                .to_sql(&TABLE, 1);
        }
        let _ = condition.key_lookup(Collection::Devices);
    }
    // Tokens are read from clients too.
    if let Ok(query) = Query::parse("SELECT * FROM devices.modules") {
        let _ = Continuation::decode(text, &query);
    }
});
