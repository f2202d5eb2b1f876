//! Sample rows and a helper that runs a query through the pager, page after page, the way a
//! store would.

#![allow(dead_code, unreachable_pub)]

pub mod arb;

use ferrohub_query::{Collection, Flow, Page, Query, RowKey};
use serde_json::{Value, json};

/// A device twin as REST shows it, with the fields the tests vary.
pub fn twin(device_id: &str, tags: Value, reported: Value, connection: &str) -> Value {
    let mut reported = reported;
    if let Value::Object(m) = &mut reported {
        m.insert(
            "$metadata".into(),
            json!({"$lastUpdated": "2023-08-17T08:24:40.736671Z"}),
        );
        m.insert("$version".into(), json!(1));
    }
    json!({
        "deviceId": device_id,
        "etag": "AAAAAAAAAAE=",
        "deviceEtag": "NzMzMTE3MTAz",
        "status": "enabled",
        "statusUpdateTime": "0001-01-01T00:00:00Z",
        "connectionState": connection,
        "lastActivityTime": "2021-05-07T00:50:38.0543092Z",
        "cloudToDeviceMessageCount": 0,
        "authenticationType": "sas",
        "x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null},
        "modelId": "",
        "version": 2,
        "tags": tags,
        "properties": {
            "desired": {"$metadata": {"$lastUpdated": "2023-10-12T13:38:52.3108419Z", "$lastUpdatedVersion": 1}, "$version": 1},
            "reported": reported
        },
        "capabilities": {"iotEdge": false}
    })
}

/// Four devices covering the contract's examples.
pub fn devices() -> Vec<Value> {
    vec![
        twin(
            "AZ3166Device",
            json!({"location": {"region": "US"}}),
            json!({"telemetryConfig": {"sendFrequencyInSecs": 60, "status": "Success"}, "connectivity": "wired"}),
            "Disconnected",
        ),
        twin(
            "d1",
            json!({"location": {"region": "US"}}),
            json!({"telemetryConfig": {"sendFrequencyInSecs": 30, "status": "Pending"}, "connectivity": "wifi"}),
            "Connected",
        ),
        twin(
            "d2",
            json!({"location": {"region": "EU"}}),
            json!({"telemetryConfig": {"sendFrequencyInSecs": 120, "status": "Success"}}),
            "Disconnected",
        ),
        twin(
            "e2e-device",
            json!({"location": {"region": "US"}}),
            json!({"telemetryConfig": {"sendFrequencyInSecs": 90.5, "status": "Success"}, "connectivity": null}),
            "Connected",
        ),
    ]
}

/// Module twins: rows carry `moduleId` right after `deviceId`.
pub fn modules() -> Vec<Value> {
    let module = |d: &str, m: &str, status: &str| {
        let mut t = twin(d, json!({}), json!({"status": status}), "Connected");
        if let Value::Object(o) = &mut t {
            o.insert("moduleId".into(), json!(m));
        }
        t
    };
    vec![
        module("d1", "$edgeAgent", "running"),
        module("d1", "scanner", "scanning"),
        module("device1", "scanner", "scanning"),
        module("device2", "scanner", "idle"),
        module("device3", "scanner", "scanning"),
    ]
}

/// Per-device job records.
pub fn jobs() -> Vec<Value> {
    let job = |d: &str, j: &str, ty: &str, status: &str, created: &str| {
        json!({
            "deviceId": d, "jobId": j, "jobType": ty, "status": status,
            "startTimeUtc": "2016-09-29T18:18:52.7418462", "endTimeUtc": "2016-09-29T18:20:52.7418462",
            "createdDateTimeUtc": created, "lastUpdatedDateTimeUtc": "2016-09-29T18:18:56.8894408Z",
            "outcome": {"deviceMethodResponse": {"status": 200, "payload": {}}}
        })
    };
    vec![
        job(
            "myDeviceId",
            "myJobId",
            "scheduleTwinUpdate",
            "completed",
            "2016-09-29T18:18:56.7787107Z",
        ),
        job(
            "myDeviceId",
            "old",
            "scheduleTwinUpdate",
            "completed",
            "2016-08-01T00:00:00Z",
        ),
        job(
            "myDeviceId",
            "m1",
            "scheduleDeviceMethod",
            "failed",
            "2016-09-29T18:18:56Z",
        ),
        job(
            "other",
            "myJobId",
            "scheduleTwinUpdate",
            "running",
            "2016-09-29T18:18:56Z",
        ),
    ]
}

/// The key of a row of `collection`.
pub fn key_of(collection: Collection, row: &Value) -> RowKey {
    let s = |k: &str| {
        row.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match collection {
        Collection::Devices => RowKey::device(s("deviceId")),
        Collection::Modules => RowKey::module(s("deviceId"), s("moduleId")),
        Collection::Jobs => RowKey::job(s("deviceId"), s("jobId")),
    }
}

/// Runs `query` over `rows` page by page (as a store would: in key order, from the
/// continuation), returning every page.
pub fn pages(query: &Query, rows: &[Value], page_size: usize) -> Vec<Page> {
    let mut sorted: Vec<(RowKey, Value)> = rows
        .iter()
        .map(|r| (key_of(query.from, r), r.clone()))
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut pager = query
            .pager(page_size, token.as_deref())
            .expect("our own token");
        let after = pager.resume_after().cloned();
        for (key, row) in &sorted {
            if after.as_ref().is_some_and(|a| key <= a) {
                continue;
            }
            if pager.push(key.clone(), row.clone()) == Flow::Stop {
                break;
            }
        }
        let page = pager.finish();
        token = page.continuation.clone();
        out.push(page);
        if token.is_none() {
            return out;
        }
        assert!(out.len() < 1000, "paging does not end");
    }
}

/// Every result row of `text` over `rows`, with a page size larger than the result.
pub fn run(text: &str, rows: &[Value]) -> Vec<Value> {
    let query = Query::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let pages = pages(&query, rows, 1000);
    assert_eq!(pages.len(), 1, "one page");
    pages.into_iter().flat_map(|p| p.rows).collect()
}

/// The device ids of result rows.
pub fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["deviceId"].as_str().unwrap_or_default().to_owned())
        .collect()
}
