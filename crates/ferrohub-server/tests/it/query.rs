//! `POST /devices/query`: the IoT Hub query language over the real hub (twins-methods-contract
//! §5): paging headers exactly as the SDKs page, row shapes and item types, live fields,
//! modules, and Azure's 400 for what the language does not support.

use ferrohub_test_support::TestHub;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::{connect_identity, create_device, expect_error, send};

/// One page: status 200 checked; rows, `x-ms-item-type`, `x-ms-continuation`.
struct Page {
    rows: Vec<Value>,
    item_type: String,
    continuation: Option<String>,
}

async fn post_query(
    hub: &TestHub,
    query: &str,
    page_size: Option<usize>,
    token: Option<&str>,
) -> Response {
    let size = page_size.map(|n| n.to_string());
    let mut headers = Vec::new();
    if let Some(n) = size.as_deref() {
        headers.push(("x-ms-max-item-count", n));
    }
    if let Some(t) = token {
        headers.push(("x-ms-continuation", t));
    }
    let body = json!({ "query": query }).to_string();
    send(
        hub,
        Method::POST,
        "/devices/query",
        None,
        &headers,
        Some(&body),
    )
    .await
}

async fn page(hub: &TestHub, query: &str, page_size: Option<usize>, token: Option<&str>) -> Page {
    let resp = post_query(hub, query, page_size, token).await;
    assert_eq!(resp.status(), StatusCode::OK, "{query}");
    assert_eq!(
        resp.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let item_type = resp.headers()["x-ms-item-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let continuation = resp
        .headers()
        .get("x-ms-continuation")
        .map(|v| v.to_str().unwrap().to_owned());
    if let Some(t) = &continuation {
        assert!(!t.is_empty(), "a continuation is never sent empty");
    }
    Page {
        rows: resp.json().await.unwrap(),
        item_type,
        continuation,
    }
}

/// Every page of `query` with pages of `size`: the pages' row counts and all rows.
async fn all_pages(hub: &TestHub, query: &str, size: usize) -> (Vec<usize>, Vec<Value>) {
    let mut token: Option<String> = None;
    let mut sizes = Vec::new();
    let mut rows = Vec::new();
    loop {
        let p = page(hub, query, Some(size), token.as_deref()).await;
        sizes.push(p.rows.len());
        rows.extend(p.rows);
        match p.continuation {
            Some(t) => token = Some(t),
            None => return (sizes, rows),
        }
        assert!(sizes.len() < 100, "paging ends");
    }
}

async fn set_tags(hub: &TestHub, id: &str, tags: Value) {
    let resp = send(
        hub,
        Method::PATCH,
        &format!("/twins/{id}"),
        None,
        &[],
        Some(&json!({ "tags": tags }).to_string()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

fn ids(rows: &[Value]) -> Vec<&str> {
    rows.iter()
        .map(|r| r["deviceId"].as_str().unwrap())
        .collect()
}

/// Seven devices `q1`…`q7`; odd ones in EU, even ones in US, with floors.
async fn fleet(hub: &TestHub) {
    for i in 1..=7 {
        let id = format!("q{i}");
        create_device(hub, &id).await;
        let region = if i % 2 == 1 { "EU" } else { "US" };
        set_tags(hub, &id, json!({"region": region, "floor": i})).await;
    }
}

#[tokio::test]
async fn pages_carry_a_continuation_only_when_more_rows_follow() {
    let hub = TestHub::start().await;
    fleet(&hub).await;

    let (sizes, rows) = all_pages(&hub, "SELECT * FROM devices", 3).await;
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(ids(&rows), ["q1", "q2", "q3", "q4", "q5", "q6", "q7"]);
    // Whole twins, as GET /twins shows them.
    let twin: Value = send(&hub, Method::GET, "/twins/q3", None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rows[2], twin);
    assert_eq!(rows[2]["tags"], json!({"region": "EU", "floor": 3}));

    // A page that holds exactly the last row has no token.
    let p = page(
        &hub,
        "SELECT * FROM devices WHERE tags.region = 'US'",
        Some(3),
        None,
    )
    .await;
    assert_eq!(p.item_type, "twin");
    assert_eq!(ids(&p.rows), ["q2", "q4", "q6"]);
    assert_eq!(p.continuation, None);

    // Without a page size: the default (100) holds them all.
    let p = page(
        &hub,
        "select * from devices where tags.floor >= 6",
        None,
        None,
    )
    .await;
    assert_eq!(ids(&p.rows), ["q6", "q7"]);
    assert_eq!(p.continuation, None);

    // Page size 1 over a selective query.
    let (sizes, rows) = all_pages(
        &hub,
        "SELECT * FROM devices WHERE tags.region = 'EU' AND tags.floor > 1",
        1,
    )
    .await;
    assert_eq!(sizes, [1, 1, 1]);
    assert_eq!(ids(&rows), ["q3", "q5", "q7"]);

    // Rows added behind the cursor do not repeat rows; rows ahead show up.
    let first = page(&hub, "SELECT deviceId FROM devices", Some(4), None).await;
    assert_eq!(ids(&first.rows), ["q1", "q2", "q3", "q4"]);
    create_device(&hub, "q0").await;
    create_device(&hub, "q8").await;
    let rest = page(
        &hub,
        "SELECT deviceId FROM devices",
        Some(4),
        first.continuation.as_deref(),
    )
    .await;
    assert_eq!(ids(&rest.rows), ["q5", "q6", "q7", "q8"]);
    assert_eq!(rest.continuation, None);
}

#[tokio::test]
async fn projections_aggregates_and_groups() {
    let hub = TestHub::start().await;
    fleet(&hub).await;

    let p = page(
        &hub,
        "SELECT DeviceId, tags.floor, Status FROM devices WHERE tags.region = 'EU' AND tags.floor < 5",
        None,
        None,
    )
    .await;
    assert_eq!(p.item_type, "raw");
    assert_eq!(
        p.rows,
        [
            json!({"deviceId": "q1", "floor": 1, "status": "enabled"}),
            json!({"deviceId": "q3", "floor": 3, "status": "enabled"}),
        ]
    );

    let p = page(
        &hub,
        "SELECT COUNT() AS numberOfDevices FROM devices",
        None,
        None,
    )
    .await;
    assert_eq!(p.item_type, "raw");
    assert_eq!(p.rows, [json!({"numberOfDevices": 7})]);

    let (sizes, rows) = all_pages(
        &hub,
        "SELECT COUNT() AS n, tags.region AS region FROM devices GROUP BY tags.region",
        1,
    )
    .await;
    assert_eq!(sizes, [1, 1], "groups page like rows");
    let mut groups: Vec<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["region"].as_str().unwrap().to_owned(),
                r["n"].as_u64().unwrap(),
            )
        })
        .collect();
    groups.sort();
    assert_eq!(groups, [("EU".to_owned(), 4), ("US".to_owned(), 3)]);

    let p = page(
        &hub,
        "SELECT * FROM devices WHERE tags.region IN ['EU'] AND STARTSWITH(deviceId, 'q') AND NOT (tags.floor = 1 OR tags.floor = 7)",
        None,
        None,
    )
    .await;
    assert_eq!(ids(&p.rows), ["q3", "q5"]);

    let p = page(
        &hub,
        "SELECT * FROM devices WHERE deviceId IN ['q7', 'q2', 'nope']",
        None,
        None,
    )
    .await;
    assert_eq!(ids(&p.rows), ["q2", "q7"]);

    let p = page(
        &hub,
        "SELECT * FROM devices WHERE is_defined(properties.reported.connectivity)",
        None,
        None,
    )
    .await;
    assert!(p.rows.is_empty());
    assert_eq!(p.continuation, None);
}

#[tokio::test]
async fn live_fields_modules_and_jobs() {
    let hub = TestHub::start().await;
    let d1 = create_device(&hub, "live1").await;
    create_device(&hub, "live2").await;
    let _conn = connect_identity(&hub, &d1, None, true).await;

    let connected = ferrohub_test_support::eventually(
        std::time::Duration::from_secs(30),
        "live1 shows as connected",
        || async {
            let p = page(
                &hub,
                "SELECT deviceId FROM devices WHERE connectionState = 'Connected'",
                None,
                None,
            )
            .await;
            (!p.rows.is_empty()).then_some(p.rows)
        },
    )
    .await;
    assert_eq!(connected, [json!({"deviceId": "live1"})]);
    let p = page(
        &hub,
        "SELECT deviceId, connectionState FROM devices WHERE connectionState = 'Disconnected'",
        None,
        None,
    )
    .await;
    assert_eq!(
        p.rows,
        [json!({"deviceId": "live2", "connectionState": "Disconnected"})]
    );

    // Cloud-to-device queue depth.
    let resp = send(
        &hub,
        Method::POST,
        "/devices/live2/messages/deviceBound",
        None,
        &[],
        Some("hello"),
    )
    .await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let p = page(
        &hub,
        "SELECT deviceId FROM devices WHERE cloudToDeviceMessageCount > 0",
        None,
        None,
    )
    .await;
    assert_eq!(p.rows, [json!({"deviceId": "live2"})]);
    let p = page(
        &hub,
        "SELECT * FROM devices WHERE deviceId = 'live2'",
        None,
        None,
    )
    .await;
    assert_eq!(p.rows[0]["cloudToDeviceMessageCount"], 1);

    // Module twins: rows carry moduleId; the module's twin is queried by its own paths.
    for m in ["m1", "m2"] {
        let resp = send(
            &hub,
            Method::PUT,
            &format!("/devices/live2/modules/{m}"),
            None,
            &[],
            Some("{}"),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = send(
        &hub,
        Method::PATCH,
        "/twins/live2/modules/m2",
        None,
        &[],
        Some(r#"{"properties":{"desired":{"mode":"scan"}}}"#),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (sizes, rows) = all_pages(&hub, "SELECT * FROM devices.modules", 1).await;
    assert_eq!(sizes, [1, 1]);
    assert_eq!(rows[0]["moduleId"], "m1");
    assert_eq!(rows[1]["moduleId"], "m2");
    assert_eq!(rows[1]["deviceId"], "live2");
    let p = page(
        &hub,
        "SELECT * FROM devices.modules WHERE properties.desired.mode = 'scan' AND deviceId IN ['live2']",
        None,
        None,
    )
    .await;
    assert_eq!(p.item_type, "twin");
    assert_eq!(p.rows.len(), 1);
    assert_eq!(p.rows[0]["moduleId"], "m2");
    let p = page(
        &hub,
        "SELECT * FROM devices.modules WHERE devices.modules.moduleId = 'm1'",
        None,
        None,
    )
    .await;
    assert_eq!(p.rows.len(), 1);
    assert_eq!(p.rows[0]["moduleId"], "m1");

    // No job has run: an empty result of the right type.
    let p = page(
        &hub,
        "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j1'",
        None,
        None,
    )
    .await;
    assert_eq!(p.item_type, "deviceJob");
    assert!(p.rows.is_empty());
    assert_eq!(p.continuation, None);
}

#[tokio::test]
async fn refusals_name_what_is_wrong() {
    let hub = TestHub::start().await;
    fleet(&hub).await;

    let msg = expect_error(
        post_query(&hub, "SELECT * FROM devices ORDER BY deviceId", None, None).await,
        400,
        "ArgumentInvalid",
    )
    .await;
    assert!(msg.contains("ORDER BY"), "{msg}");
    let msg = expect_error(
        post_query(
            &hub,
            "SELECT * FROM devices WHERE LOWER(deviceId) = 'x'",
            None,
            None,
        )
        .await,
        400,
        "ArgumentInvalid",
    )
    .await;
    assert!(msg.contains("LOWER"), "{msg}");
    let msg = expect_error(
        post_query(&hub, "SELECT * FROM registry", None, None).await,
        400,
        "ArgumentInvalid",
    )
    .await;
    assert!(msg.contains("registry"), "{msg}");

    // Tokens: malformed, or of another query.
    expect_error(
        post_query(&hub, "SELECT * FROM devices", Some(2), Some("not-a-token")).await,
        400,
        "ArgumentInvalid",
    )
    .await;
    let first = page(&hub, "SELECT * FROM devices", Some(2), None).await;
    let token = first.continuation.expect("more pages");
    let msg = expect_error(
        post_query(&hub, "SELECT deviceId FROM devices", Some(2), Some(&token)).await,
        400,
        "ArgumentInvalid",
    )
    .await;
    assert!(msg.contains("different query"), "{msg}");

    // Page size, body.
    for bad in ["0", "-1", "ten"] {
        let resp = send(
            &hub,
            Method::POST,
            "/devices/query",
            None,
            &[("x-ms-max-item-count", bad)],
            Some(r#"{"query":"SELECT * FROM devices"}"#),
        )
        .await;
        expect_error(resp, 400, "ArgumentInvalid").await;
    }
    for body in [r#"{}"#, r#"{"query":""}"#, r#"{"query":5}"#, "[]", "nope"] {
        let resp = send(&hub, Method::POST, "/devices/query", None, &[], Some(body)).await;
        expect_error(resp, 400, "ArgumentInvalid").await;
    }

    // A page size over the maximum is served at the maximum.
    let p = page(&hub, "SELECT * FROM devices", Some(100_000), None).await;
    assert_eq!(p.rows.len(), 7);

    // Registry read is needed: a device-only policy is refused.
    let device_token = hub.policy_token("device", 3600);
    let resp = send(
        &hub,
        Method::POST,
        "/devices/query",
        Some(&device_token),
        &[],
        Some(r#"{"query":"SELECT * FROM devices"}"#),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let read_token = hub.policy_token("registryRead", 3600);
    let resp = send(
        &hub,
        Method::POST,
        "/devices/query",
        Some(&read_token),
        &[],
        Some(r#"{"query":"SELECT COUNT() AS n FROM devices"}"#),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let rows: Value = resp.json().await.unwrap();
    assert_eq!(rows, json!([{"n": 7}]));
}

/// Creates scheduled job `id` and waits until it completed.
async fn run_job(hub: &TestHub, id: &str, body: Value) {
    let resp = send(
        hub,
        Method::PUT,
        &format!("/jobs/v2/{id}"),
        None,
        &[],
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    ferrohub_test_support::eventually(super::WAIT, &format!("job {id} completed"), || async {
        let job: Value = send(hub, Method::GET, &format!("/jobs/v2/{id}"), None, &[], None)
            .await
            .json()
            .await
            .ok()?;
        (job["status"] == "completed").then_some(())
    })
    .await;
}

#[tokio::test]
async fn devices_jobs_lists_the_per_device_records_of_scheduled_jobs() {
    let hub = TestHub::start().await;
    fleet(&hub).await;
    run_job(
        &hub,
        "dj-eu",
        json!({"type":"scheduleUpdateTwin","updateTwin":{"etag":"*","tags":{"fw":"2"}},
               "queryCondition":"tags.region = 'EU'","maxExecutionTimeInSeconds":120}),
    )
    .await;
    // Not connected: each device fails as not online once the short window ends.
    run_job(
        &hub,
        "dj-m",
        json!({"type":"scheduleDeviceMethod",
               "cloudToDeviceMethod":{"methodName":"reboot","payload":null,"responseTimeoutInSeconds":5},
               "queryCondition":"deviceId IN ['q1','q2']","maxExecutionTimeInSeconds":2}),
    )
    .await;

    let all = page(&hub, "SELECT * FROM devices.jobs", None, None).await;
    assert_eq!(all.item_type, "deviceJob");
    let keys: Vec<(String, String)> = all
        .rows
        .iter()
        .map(|r| {
            (
                r["deviceId"].as_str().unwrap_or_default().to_owned(),
                r["jobId"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("q1", "dj-eu"),
        ("q1", "dj-m"),
        ("q2", "dj-m"),
        ("q3", "dj-eu"),
        ("q5", "dj-eu"),
        ("q7", "dj-eu"),
    ]
    .iter()
    .map(|(d, j)| ((*d).to_owned(), (*j).to_owned()))
    .collect();
    assert_eq!(keys, expected, "ordered by device, then job");
    let twin_row = &all.rows[0];
    assert_eq!(twin_row["jobType"], "scheduleTwinUpdate");
    assert_eq!(twin_row["status"], "completed");
    for field in [
        "startTimeUtc",
        "endTimeUtc",
        "createdDateTimeUtc",
        "lastUpdatedDateTimeUtc",
    ] {
        assert!(twin_row[field].is_string(), "{field}: {twin_row}");
    }
    let method_row = &all.rows[1];
    assert_eq!(method_row["jobType"], "scheduleDeviceMethod");
    assert_eq!(method_row["status"], "failed");
    assert_eq!(method_row["error"]["code"], "DeviceNotOnline");

    let one = page(
        &hub,
        "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'dj-m'",
        None,
        None,
    )
    .await;
    assert_eq!(one.rows.len(), 2);
    assert!(one.rows.iter().all(|r| r["jobId"] == "dj-m"));
    let filtered = page(
        &hub,
        "SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'q1' AND devices.jobs.jobType = 'scheduleTwinUpdate' AND devices.jobs.status = 'completed' AND devices.jobs.createdTimeUtc > '2016-09-01'",
        None,
        None,
    )
    .await;
    assert_eq!(filtered.rows.len(), 1, "{:?}", filtered.rows);
    assert_eq!(filtered.rows[0]["jobId"], "dj-eu");

    // Pages of two carry a continuation that resumes after the last (device, job) key.
    let (sizes, rows) = all_pages(&hub, "SELECT * FROM devices.jobs", 2).await;
    assert_eq!(sizes, [2, 2, 2]);
    assert_eq!(rows, all.rows);
}
