//! Scheduled jobs v2: twin updates and method calls over the devices a condition selects,
//! statuses and statistics, the listing's paging, Azure's errors, and a restart mid-job.

use std::time::Duration;

use ferrohub_mqtt::{Packet, QoS};
use ferrohub_test_support::mqtt::MqttClient;
use ferrohub_test_support::{TestHub, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{WAIT, connect_identity, create_device, expect_error, send};

async fn put_job(hub: &TestHub, id: &str, body: &Value) -> reqwest::Response {
    send(
        hub,
        Method::PUT,
        &format!("/jobs/v2/{id}"),
        None,
        &[],
        Some(&body.to_string()),
    )
    .await
}

async fn get_job(hub: &TestHub, id: &str) -> Value {
    let resp = send(hub, Method::GET, &format!("/jobs/v2/{id}"), None, &[], None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

async fn wait_status(hub: &TestHub, id: &str, status: &str) -> Value {
    eventually(WAIT, &format!("job {id} {status}"), || async {
        let job = get_job(hub, id).await;
        (job["status"] == status).then_some(job)
    })
    .await
}

async fn tag_device(hub: &TestHub, id: &str, tags: Value) {
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

async fn twin(hub: &TestHub, id: &str) -> Value {
    send(hub, Method::GET, &format!("/twins/{id}"), None, &[], None)
        .await
        .json()
        .await
        .unwrap()
}

/// A device connected over MQTT and subscribed to methods.
async fn method_device(hub: &TestHub, device: &Value) -> MqttClient {
    let mut c = connect_identity(hub, device, None, true).await;
    c.subscribe(&[("$iothub/methods/POST/#", QoS::AtMostOnce)])
        .await;
    c
}

/// Waits for a method request; returns (name, rid, payload).
async fn next_request(c: &mut MqttClient) -> (String, String, Vec<u8>) {
    loop {
        match c.recv_within(Duration::from_secs(20)).await {
            Some(Packet::Publish(p)) => {
                let topic = p.topic.as_str().to_owned();
                if let Some(rest) = topic.strip_prefix("$iothub/methods/POST/") {
                    let (name, rid) = rest.split_once("/?$rid=").expect("/?$rid=");
                    return (name.to_owned(), rid.to_owned(), p.payload.to_vec());
                }
            }
            Some(_) => {}
            None => panic!("no method request"),
        }
    }
}

async fn answer(c: &mut MqttClient, rid: &str, status: u16, body: &[u8]) {
    c.publish(
        &format!("$iothub/methods/res/{status}/?$rid={rid}"),
        QoS::AtLeastOnce,
        body,
    )
    .await
    .expect("PUBACK");
}

#[tokio::test]
async fn a_twin_job_patches_the_devices_its_condition_selects() {
    let hub = TestHub::start().await;
    for (id, site) in [("tj-a", "B7"), ("tj-b", "B7"), ("tj-c", "C1")] {
        create_device(&hub, id).await;
        tag_device(&hub, id, json!({ "site": site })).await;
    }
    // Node's e2e patch shape: etag "*", empty desired and reported.
    let resp = put_job(
        &hub,
        "twin-job-1",
        &json!({"jobId":"twin-job-1","type":"scheduleUpdateTwin",
                "updateTwin":{"etag":"*","tags":{"fw":"2.1"},"properties":{"desired":{"rate":5},"reported":{}}},
                "startTime":null,"queryCondition":"tags.site = 'B7'"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["jobId"], "twin-job-1");
    assert_eq!(created["type"], "scheduleUpdateTwin");
    assert_eq!(created["status"], "queued");
    assert_eq!(created["maxExecutionTimeInSeconds"], 3600);

    let done = wait_status(&hub, "twin-job-1", "completed").await;
    assert_eq!(
        done["deviceJobStatistics"],
        json!({"deviceCount": 2, "failedCount": 0, "succeededCount": 2, "runningCount": 0, "pendingCount": 0})
    );
    assert!(done["endTime"].is_string());
    for id in ["tj-a", "tj-b"] {
        let t = twin(&hub, id).await;
        assert_eq!(t["tags"]["fw"], "2.1", "{id}");
        assert_eq!(t["properties"]["desired"]["rate"], 5, "{id}");
    }
    let untouched = twin(&hub, "tj-c").await;
    assert!(untouched["tags"].get("fw").is_none());
    assert!(untouched["properties"]["desired"].get("rate").is_none());
}

#[tokio::test]
async fn a_twin_job_with_a_stale_etag_fails_each_device() {
    let hub = TestHub::start().await;
    create_device(&hub, "te-a").await;
    let resp = put_job(
        &hub,
        "etag-job",
        &json!({"type":"scheduleUpdateTwin","updateTwin":{"etag":"AAAAAAAAAAk=","tags":{"x":1}},
                "queryCondition":"deviceId = 'te-a'"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let done = wait_status(&hub, "etag-job", "completed").await;
    assert_eq!(done["deviceJobStatistics"]["deviceCount"], 1);
    assert_eq!(done["deviceJobStatistics"]["failedCount"], 1);
    assert!(twin(&hub, "te-a").await["tags"].get("x").is_none());
}

#[tokio::test]
async fn a_method_job_reaches_connected_devices_and_offline_ones_when_they_connect() {
    let hub = TestHub::start().await;
    let online = create_device(&hub, "mj-on").await;
    let offline = create_device(&hub, "mj-off").await;
    let mut on = method_device(&hub, &online).await;
    let resp = put_job(
        &hub,
        "method-job",
        &json!({"jobId":"method-job","type":"scheduleDeviceMethod",
                "cloudToDeviceMethod":{"methodName":"reboot","payload":{"delay":1},"responseTimeoutInSeconds":30,"connectTimeoutInSeconds":15},
                "queryCondition":"deviceId IN ['mj-on','mj-off']","startTime":null,"maxExecutionTimeInSeconds":120}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (name, rid, payload) = next_request(&mut on).await;
    assert_eq!(name, "reboot");
    assert_eq!(payload, br#"{"delay":1}"#);
    answer(&mut on, &rid, 200, br#"{"ok":true}"#).await;
    // The offline device waits, counted as pending.
    eventually(WAIT, "online device done, offline pending", || async {
        let job = get_job(&hub, "method-job").await;
        let s = &job["deviceJobStatistics"];
        (job["status"] == "running" && s["succeededCount"] == 1 && s["pendingCount"] == 1)
            .then_some(())
    })
    .await;
    let mut off = method_device(&hub, &offline).await;
    let (_, rid, _) = next_request(&mut off).await;
    answer(&mut off, &rid, 500, br#""failed""#).await;
    let done = wait_status(&hub, "method-job", "completed").await;
    // A device that answers (whatever its status) counts as reached.
    assert_eq!(
        done["deviceJobStatistics"],
        json!({"deviceCount": 2, "failedCount": 0, "succeededCount": 2, "runningCount": 0, "pendingCount": 0})
    );
}

#[tokio::test]
async fn a_future_job_is_queued_until_cancelled() {
    let hub = TestHub::start().await;
    create_device(&hub, "fj-a").await;
    let body = json!({"type":"scheduleUpdateTwin","updateTwin":{"etag":"*","tags":{"later":true}},
                      "queryCondition":"*","startTime":"2099-01-01T00:00:00.000Z","maxExecutionTimeInSeconds":60});
    let resp = put_job(&hub, "future", &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(get_job(&hub, "future").await["status"], "queued");
    // Python and Node send no body.
    let resp = send(
        &hub,
        Method::POST,
        "/jobs/v2/future/cancel",
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cancelled: Value = resp.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["endTime"].is_string());
    // Cancelling again changes nothing.
    let resp = send(
        &hub,
        Method::POST,
        "/jobs/v2/future/cancel",
        None,
        &[],
        None,
    )
    .await;
    let again: Value = resp.json().await.unwrap();
    assert_eq!(again["endTime"], cancelled["endTime"]);
    assert!(twin(&hub, "fj-a").await["tags"].get("later").is_none());
}

#[tokio::test]
async fn errors_are_azures() {
    let hub = TestHub::start().await;
    let body = json!({"type":"scheduleUpdateTwin","updateTwin":{"tags":{"a":1}},
                      "queryCondition":"*","startTime":"2099-01-01T00:00:00Z"});
    assert_eq!(put_job(&hub, "dup", &body).await.status(), StatusCode::OK);
    expect_error(put_job(&hub, "dup", &body).await, 409, "JobAlreadyExists").await;
    expect_error(
        send(&hub, Method::GET, "/jobs/v2/nope", None, &[], None).await,
        404,
        "JobNotFound",
    )
    .await;
    expect_error(
        send(&hub, Method::POST, "/jobs/v2/nope/cancel", None, &[], None).await,
        404,
        "JobNotFound",
    )
    .await;
    let bad = [
        json!({"type":"scheduleDirectRequest","queryCondition":"*"}),
        json!({"type":"scheduleUpdateTwin","queryCondition":"*"}),
        json!({"type":"scheduleUpdateTwin","queryCondition":"WHERE ORDER BY x","updateTwin":{}}),
        json!({"type":"scheduleDeviceMethod","queryCondition":"*","cloudToDeviceMethod":{"methodName":""}}),
        json!([1, 2]),
    ];
    for b in bad {
        let msg = expect_error(put_job(&hub, "bad", &b).await, 400, "ArgumentInvalid").await;
        assert!(!msg.is_empty(), "{b}");
    }
    // Reading needs RegistryRead; creating and cancelling, RegistryWrite.
    let reader = hub.policy_token("registryRead", 3600);
    let resp = send(&hub, Method::GET, "/jobs/v2/dup", Some(&reader), &[], None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = send(
        &hub,
        Method::PUT,
        "/jobs/v2/other",
        Some(&reader),
        &[],
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = send(
        &hub,
        Method::POST,
        "/jobs/v2/dup/cancel",
        Some(&reader),
        &[],
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_listing_filters_and_pages() {
    let hub = TestHub::start().await;
    let later = "2099-01-01T00:00:00Z";
    for i in 0..5 {
        let body = json!({"type":"scheduleUpdateTwin","updateTwin":{"tags":{"a":1}},
                          "queryCondition":"*","startTime":later});
        assert_eq!(
            put_job(&hub, &format!("t{i}"), &body).await.status(),
            StatusCode::OK
        );
    }
    let body = json!({"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"m"},
                      "queryCondition":"*","startTime":later});
    assert_eq!(put_job(&hub, "m0", &body).await.status(), StatusCode::OK);
    send(&hub, Method::POST, "/jobs/v2/t4/cancel", None, &[], None).await;

    // Python's parameter order, then Node's.
    let mut ids = Vec::new();
    let mut continuation: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut headers = vec![("x-ms-max-item-count", "2")];
        if let Some(c) = &continuation {
            headers.push(("x-ms-continuation", c.as_str()));
        }
        let resp = send(
            &hub,
            Method::GET,
            "/jobs/v2/query?jobType=scheduleUpdateTwin&jobStatus=queued",
            None,
            &headers,
            None,
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-ms-item-type"], "jobResponse");
        continuation = resp
            .headers()
            .get("x-ms-continuation")
            .map(|v| v.to_str().unwrap().to_owned());
        let page: Vec<Value> = resp.json().await.unwrap();
        assert!(page.len() <= 2);
        ids.extend(page.iter().map(|j| j["jobId"].as_str().unwrap().to_owned()));
        pages += 1;
        if continuation.is_none() {
            break;
        }
    }
    assert_eq!(ids, ["t0", "t1", "t2", "t3"]);
    assert_eq!(pages, 2, "no continuation on the last page");

    let resp = send(
        &hub,
        Method::GET,
        "/jobs/v2/query?jobStatus=cancelled&jobType=scheduleUpdateTwin",
        None,
        &[],
        None,
    )
    .await;
    let page: Vec<Value> = resp.json().await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["jobId"], "t4");
    let resp = send(&hub, Method::GET, "/jobs/v2/query", None, &[], None).await;
    let all: Vec<Value> = resp.json().await.unwrap();
    assert_eq!(all.len(), 6);
    expect_error(
        send(
            &hub,
            Method::GET,
            "/jobs/v2/query?jobType=nope",
            None,
            &[],
            None,
        )
        .await,
        400,
        "ArgumentInvalid",
    )
    .await;
}

#[tokio::test]
async fn a_job_running_at_a_restart_resumes_and_says_what_happened() {
    let hub = TestHub::start().await;
    let silent = create_device(&hub, "rs-silent").await;
    let offline = create_device(&hub, "rs-off").await;
    // Answers nothing: its call is in flight when the hub stops.
    let mut s = method_device(&hub, &silent).await;
    let resp = put_job(
        &hub,
        "restart-job",
        &json!({"type":"scheduleDeviceMethod",
                "cloudToDeviceMethod":{"methodName":"update","payload":null,"responseTimeoutInSeconds":300},
                "queryCondition":"deviceId IN ['rs-silent','rs-off']","maxExecutionTimeInSeconds":600}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let _ = next_request(&mut s).await;
    eventually(WAIT, "one call in flight, one device waiting", || async {
        let s = get_job(&hub, "restart-job").await["deviceJobStatistics"].clone();
        (s["runningCount"] == 1 && s["pendingCount"] == 1).then_some(())
    })
    .await;
    drop(s);
    let data_dir = hub.data_dir().to_owned();
    let dir = hub.stop().await;

    let hub = TestHub::start_in(&data_dir).await;
    // The call in flight is not repeated: that device fails, saying why.
    eventually(WAIT, "the in-flight device failed", || async {
        let job = get_job(&hub, "restart-job").await;
        (job["status"] == "running" && job["deviceJobStatistics"]["failedCount"] == 1).then_some(())
    })
    .await;
    // The waiting device is still reached once it connects.
    let mut off = method_device(&hub, &offline).await;
    let (name, rid, _) = next_request(&mut off).await;
    assert_eq!(name, "update");
    answer(&mut off, &rid, 200, b"{}").await;
    let done = wait_status(&hub, "restart-job", "completed").await;
    assert_eq!(
        done["deviceJobStatistics"],
        json!({"deviceCount": 2, "failedCount": 1, "succeededCount": 1, "runningCount": 0, "pendingCount": 0})
    );
    drop(hub);
    drop(dir);
}

#[tokio::test]
async fn unfinished_jobs_beyond_the_limit_are_refused_as_azure_does() {
    let hub = TestHub::start_with_config("[jobs]\nmax_concurrent_jobs = 2\n").await;
    let later = |i: u32| {
        json!({"type":"scheduleUpdateTwin","updateTwin":{"tags":{"a":i}},
               "queryCondition":"*","startTime":"2099-01-01T00:00:00Z"})
    };
    for i in 0..2 {
        let resp = put_job(&hub, &format!("lim{i}"), &later(i)).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let refused = put_job(&hub, "lim2", &later(2)).await;
    let msg = expect_error(refused, 429, "ThrottlingMaxActiveJobCountExceeded").await;
    assert!(msg.contains('2'), "{msg}");
    // Nothing was stored under the refused id.
    let resp = send(&hub, Method::GET, "/jobs/v2/lim2", None, &[], None).await;
    expect_error(resp, 404, "JobNotFound").await;
    // A duplicate id is still a conflict, not a throttle.
    let dup = put_job(&hub, "lim0", &later(0)).await;
    expect_error(dup, 409, "JobAlreadyExists").await;
    // A finished job frees its place.
    let resp = send(&hub, Method::POST, "/jobs/v2/lim0/cancel", None, &[], None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        put_job(&hub, "lim2", &later(2)).await.status(),
        StatusCode::OK
    );
}
