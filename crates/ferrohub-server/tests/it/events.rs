//! Telemetry over HTTPS into the durable log, and the read API over it.

use std::time::Duration;

use ferrohub_auth::{SymmetricKey, mint};
use ferrohub_test_support::{TestHub, now_secs};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{all_events, create_device, expect_error, send};

/// A SAS token for `device` signed with its primary key.
fn device_token(device: &Value, ttl: i64) -> String {
    let id = device["deviceId"].as_str().unwrap();
    let key = SymmetricKey::from_base64(
        device["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let expiry = (now_secs() as i64 + ttl) as u64;
    mint(&format!("localhost/devices/{id}"), &key, expiry, None)
}

async fn post_event(
    hub: &TestHub,
    device: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> reqwest::Response {
    let mut req = hub
        .http()
        .post(format!(
            "{}/devices/{device}/messages/events?api-version=2021-04-12",
            hub.base_url()
        ))
        .header("Authorization", token)
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn https_telemetry_is_stamped_and_readable() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "t1").await;
    let token = device_token(&d, 600);
    let resp = post_event(
        &hub,
        "t1",
        &token,
        &[
            ("IoTHub-MessageId", "m-1"),
            ("iothub-correlationid", "c-1"),
            ("iothub-contenttype", "application/json"),
            ("iothub-contentencoding", "utf-8"),
            ("iothub-app-temperature", "21.5"),
            ("iothub-app-iothub-connection-device-id", "spoof"),
            ("iothub-to", "/devices/t1/messages/events"),
        ],
        br#"{"t":21.5}"#,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = post_event(&hub, "t1", &token, &[], &[0xff, 0x00, 0x01]).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    let events = all_events(&hub).await;
    assert_eq!(events.len(), 2);
    let e = &events[0];
    let sys = &e["systemProperties"];
    assert_eq!(sys["iothub-connection-device-id"], "t1");
    assert_eq!(sys["message-id"], "m-1");
    assert_eq!(sys["correlation-id"], "c-1");
    assert_eq!(sys["content-type"], "application/json");
    assert_eq!(sys["iothub-message-source"], "Telemetry");
    assert_eq!(
        sys["iothub-connection-auth-generation-id"],
        d["generationId"]
    );
    assert_eq!(
        sys["iothub-connection-auth-method"],
        r#"{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}"#
    );
    assert_eq!(sys["x-opt-sequence-number"], 0);
    assert_eq!(sys["x-opt-offset"], e["offset"]);
    assert!(sys["iothub-enqueuedtime"].is_i64());
    assert_eq!(sys["x-opt-enqueued-time"], sys["iothub-enqueuedtime"]);
    assert_eq!(e["properties"]["temperature"], "21.5");
    assert_eq!(e["properties"]["iothub-connection-device-id"], "spoof");
    assert_eq!(e["body"], r#"{"t":21.5}"#);
    assert_eq!(e["bodyEncoding"], "text");
    assert_eq!(events[1]["bodyEncoding"], "base64");
    assert_eq!(events[1]["body"], "/wAB");
    assert_eq!(events[1]["sequenceNumber"], 1);
}

#[tokio::test]
async fn batches_and_policy_tokens() {
    let hub = TestHub::start().await;
    create_device(&hub, "b1").await;
    // A token-service token: signed by the `device` policy, scoped to the device.
    let host = format!("localhost:{}", hub.https_addr().port());
    let token = mint(
        &format!("{host}/devices/b1"),
        &hub.policy_key("device"),
        now_secs() + 600,
        Some("device"),
    );
    let batch = json!([
        {"body": "aGVsbG8=", "properties": {"iothub-app-k": "v1", "iothub-messageid": "x1"}},
        {"body": "d29ybGQ=", "base64Encoded": true, "properties": {"iothub-app-k": "v2"}},
        {"body": "plain", "base64Encoded": false}
    ]);
    let resp = post_event(
        &hub,
        "b1",
        &token,
        &[("Content-Type", "application/vnd.microsoft.iothub.json")],
        batch.to_string().as_bytes(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let events = all_events(&hub).await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["properties"]["k"], "v1");
    assert_eq!(events[0]["systemProperties"]["message-id"], "x1");
    assert_eq!(events[0]["body"], "aGVsbG8=", "no content type: base64");
    assert_eq!(events[2]["body"], "cGxhaW4=");
    assert_eq!(
        events[0]["systemProperties"]["iothub-connection-auth-method"],
        r#"{"scope":"hub","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}"#
    );

    let bad = post_event(
        &hub,
        "b1",
        &token,
        &[("Content-Type", "application/vnd.microsoft.iothub.json")],
        b"[{\"body\": \"not base64!\"}]",
    )
    .await;
    expect_error(bad, 400, "ArgumentInvalid").await;
    assert_eq!(
        all_events(&hub).await.len(),
        3,
        "a bad batch stores nothing"
    );
}

#[tokio::test]
async fn refused_device_requests_store_nothing() {
    let hub = TestHub::start().await;
    let d1 = create_device(&hub, "r1").await;
    let d2 = create_device(&hub, "r2").await;
    let t1 = device_token(&d1, 600);
    let t2 = device_token(&d2, 600);

    // Another device's token.
    let resp = post_event(&hub, "r1", &t2, &[], b"x").await;
    expect_error(resp, 401, "IotHubUnauthorizedAccess").await;
    // Expired beyond the skew.
    let old = device_token(&d1, -400);
    let resp = post_event(&hub, "r1", &old, &[], b"x").await;
    expect_error(resp, 401, "IotHubUnauthorized").await;
    // A service policy has no DeviceConnect.
    let svc = hub.policy_token("service", 600);
    let resp = post_event(&hub, "r1", &svc, &[], b"x").await;
    expect_error(resp, 401, "IotHubUnauthorizedAccess").await;
    // Too large.
    let big = vec![b'a'; 256 * 1024 + 1];
    let resp = post_event(&hub, "r1", &t1, &[], &big).await;
    expect_error(resp, 413, "MessageTooLarge").await;
    // A policy token for a device that does not exist.
    let host = format!("localhost:{}", hub.https_addr().port());
    let ghost = mint(
        &format!("{host}/devices/ghost"),
        &hub.policy_key("device"),
        now_secs() + 600,
        Some("device"),
    );
    let resp = post_event(&hub, "ghost", &ghost, &[], b"x").await;
    expect_error(resp, 404, "DeviceNotFound").await;
    // A disabled device is refused even with a valid token.
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/r1",
        None,
        &[("If-Match", "*")],
        Some(r#"{"deviceId":"r1","status":"disabled"}"#),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = post_event(&hub, "r1", &t1, &[], b"x").await;
    expect_error(resp, 401, "IotHubUnauthorizedAccess").await;
    // A regenerated key revokes tokens signed with the old one.
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/r2",
        None,
        &[("If-Match", "*")],
        Some(r#"{"deviceId":"r2","authentication":{"symmetricKey":{"primaryKey":"","secondaryKey":""}}}"#),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = post_event(&hub, "r2", &t2, &[], b"x").await;
    expect_error(resp, 401, "IotHubUnauthorizedAccess").await;

    assert!(all_events(&hub).await.is_empty());
}

#[tokio::test]
async fn read_positions_long_poll_and_stream() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "p1").await;
    let token = device_token(&d, 600);
    for i in 0..5 {
        let resp = post_event(
            &hub,
            "p1",
            &token,
            &[("iothub-app-i", &i.to_string())],
            b"x",
        )
        .await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    }
    let events = all_events(&hub).await;
    let p = events[0]["partition"].as_str().unwrap().to_owned();
    let base = format!("/messages/events/partitions/{p}");

    let get = |q: String| {
        let hub = &hub;
        let base = base.clone();
        async move {
            let v: Value = send(
                hub,
                Method::GET,
                &format!("{base}/events?{q}"),
                None,
                &[],
                None,
            )
            .await
            .json()
            .await
            .unwrap();
            v["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["properties"]["i"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(get("sequenceNumber=1".into()).await, vec!["2", "3", "4"]);
    assert_eq!(
        get("sequenceNumber=1&inclusive=true&max=2".into()).await,
        vec!["1", "2"]
    );
    let off3 = events[3]["offset"].as_str().unwrap();
    assert_eq!(get(format!("offset={off3}")).await, vec!["4"]);
    assert_eq!(
        get(format!("offset={off3}&inclusive=true")).await,
        vec!["3", "4"]
    );
    assert_eq!(get("offset=-1".into()).await.len(), 5);
    assert!(get("from=latest".into()).await.is_empty());
    let t0 = events[0]["enqueuedTimeUtc"].as_str().unwrap();
    assert_eq!(
        get(format!("enqueuedTime={}", urlencode(t0))).await.len(),
        5
    );

    let info: Value = send(&hub, Method::GET, &base, None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["beginSequenceNumber"], 0);
    assert_eq!(info["lastEnqueuedSequenceNumber"], 4);
    assert_eq!(info["lastEnqueuedOffset"], events[4]["offset"]);
    assert_eq!(info["isEmpty"], false);

    // A long poll from the end (after sequence number 4, the last) returns the event that arrives
    // while it waits.
    let waiter = {
        let url = format!(
            "{}{base}/events?sequenceNumber=4&wait=20&api-version=1",
            hub.base_url()
        );
        let client = hub.http();
        let auth = hub.policy_token("service", 600);
        tokio::spawn(async move {
            client
                .get(url)
                .header("Authorization", auth)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // The read names its start, so whether it reaches the hub before or after the event below,
    // it must answer with exactly that event: no pause is needed to order them.
    let resp = post_event(&hub, "p1", &token, &[("iothub-app-i", "late")], b"x").await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let got = tokio::time::timeout(Duration::from_secs(15), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got["events"][0]["properties"]["i"], "late");
    assert_eq!(got["nextSequenceNumber"], 6);

    // The live stream starts where asked and carries new events.
    let mut resp = hub
        .http()
        .get(format!(
            "{}{base}/stream?sequenceNumber=4&api-version=1",
            hub.base_url()
        ))
        .header("Authorization", hub.policy_token("service", 600))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let post = post_event(&hub, "p1", &token, &[("iothub-app-i", "streamed")], b"x").await;
    assert_eq!(post.status(), StatusCode::NO_CONTENT);
    let mut text = String::new();
    while !text.contains("streamed") {
        let chunk = tokio::time::timeout(Duration::from_secs(15), resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("\"late\""), "{text}");
    assert!(!text.contains("\"i\":\"4\""), "exclusive start: {text}");

    // Bad positions.
    for q in [
        "sequenceNumber=x",
        "from=middle",
        "max=0",
        "wait=61",
        "inclusive=maybe",
    ] {
        let resp = send(
            &hub,
            Method::GET,
            &format!("{base}/events?{q}"),
            None,
            &[],
            None,
        )
        .await;
        expect_error(resp, 400, "ArgumentInvalid").await;
    }
    let resp = send(
        &hub,
        Method::GET,
        "/messages/events/partitions/99/events",
        None,
        &[],
        None,
    )
    .await;
    expect_error(resp, 404, "GenericNotFound").await;
    let resp = send(
        &hub,
        Method::GET,
        &format!("{base}/events"),
        Some(&hub.policy_token("registryRead", 60)),
        &[],
        None,
    )
    .await;
    expect_error(resp, 401, "IotHubUnauthorizedAccess").await;
}

fn urlencode(s: &str) -> String {
    s.replace(':', "%3A").replace('+', "%2B")
}

#[tokio::test]
async fn consumer_groups_and_checkpoints() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "c1").await;
    let token = device_token(&d, 600);
    for _ in 0..3 {
        post_event(&hub, "c1", &token, &[], b"x").await;
    }
    let events = all_events(&hub).await;
    let p = events[0]["partition"].as_str().unwrap().to_owned();

    let resp = send(
        &hub,
        Method::PUT,
        "/messages/events/consumergroups/analytics",
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = send(
        &hub,
        Method::PUT,
        "/messages/events/consumergroups/analytics",
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = send(
        &hub,
        Method::PUT,
        "/messages/events/consumergroups/bad%20name",
        None,
        &[],
        None,
    )
    .await;
    expect_error(resp, 400, "ArgumentInvalid").await;
    let list: Vec<Value> = send(
        &hub,
        Method::GET,
        "/messages/events/consumergroups",
        None,
        &[],
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let names: Vec<&str> = list.iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["$Default", "analytics"]);

    let body = json!({"sequenceNumber": 0, "offset": events[0]["offset"]}).to_string();
    let resp = send(
        &hub,
        Method::PUT,
        &format!("/messages/events/consumergroups/analytics/partitions/{p}/checkpoint"),
        None,
        &[],
        Some(&body),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let batch: Value = send(
        &hub,
        Method::GET,
        &format!("/messages/events/partitions/{p}/events?from=checkpoint&consumerGroup=analytics"),
        None,
        &[],
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        batch["events"].as_array().unwrap().len(),
        2,
        "resumes after the checkpoint"
    );
    let fresh: Value = send(
        &hub,
        Method::GET,
        &format!("/messages/events/partitions/{p}/events?from=checkpoint"),
        None,
        &[],
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        fresh["events"].as_array().unwrap().len(),
        3,
        "$Default has no checkpoint"
    );

    let resp = send(
        &hub,
        Method::DELETE,
        "/messages/events/consumergroups/$Default",
        None,
        &[],
        None,
    )
    .await;
    expect_error(resp, 400, "ArgumentInvalid").await;
    let resp = send(
        &hub,
        Method::DELETE,
        "/messages/events/consumergroups/analytics",
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = send(
        &hub,
        Method::GET,
        "/messages/events/consumergroups/analytics/checkpoints",
        None,
        &[],
        None,
    )
    .await;
    expect_error(resp, 404, "GenericNotFound").await;
}

#[tokio::test]
async fn acknowledged_events_survive_restart() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "s1").await;
    let token = device_token(&d, 600);
    for i in 0..20 {
        let resp = post_event(
            &hub,
            "s1",
            &token,
            &[("iothub-app-i", &i.to_string())],
            b"x",
        )
        .await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    }
    let data_dir = hub.data_dir().to_owned();
    let dir = hub.stop().await;
    let hub = TestHub::start_in(&data_dir).await;
    let events = all_events(&hub).await;
    let seen: Vec<String> = events
        .iter()
        .map(|e| e["properties"]["i"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(seen, expected);
    drop(hub);
    drop(dir);
}

#[tokio::test]
async fn https_devices_over_their_rate_get_429() {
    let hub = TestHub::start_with_config("[limits]\ndevice_messages_per_second = 2\n").await;
    let d = create_device(&hub, "fast").await;
    let token = device_token(&d, 600);
    // Forty requests at once: at two messages a second, however slowly a loaded machine
    // serves them, most must be refused; what is admitted stays within the burst plus the
    // refill over the time taken.
    let started = std::time::Instant::now();
    let responses = futures_util::future::join_all(
        (0..40).map(|_| post_event(&hub, "fast", &token, &[], b"x")),
    )
    .await;
    let elapsed = started.elapsed();
    let mut admitted = 0usize;
    let mut refused = 0usize;
    for resp in responses {
        match resp.status().as_u16() {
            204 => admitted += 1,
            429 => {
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                assert_eq!(retry_after.as_deref(), Some("1"));
                expect_error(resp, 429, "ThrottlingException").await;
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let allowed = 2 + 2 * elapsed.as_secs_f64().ceil() as usize;
    assert!(
        admitted >= 2,
        "the burst goes through ({admitted} admitted)"
    );
    assert!(
        admitted <= allowed,
        "{admitted} admitted in {elapsed:?}, at most {allowed} allowed"
    );
    assert!(refused > 0, "nothing refused in {elapsed:?}");
    assert_eq!(
        all_events(&hub).await.len(),
        admitted,
        "throttled messages are not stored"
    );
}

#[tokio::test]
async fn https_telemetry_sets_last_activity_but_not_the_connection_state() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "poster").await;
    let token = device_token(&d, 600);
    let resp = post_event(&hub, "poster", &token, &[], b"hello").await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for path in ["/devices/poster", "/twins/poster"] {
        let got: Value = send(&hub, Method::GET, path, None, &[], None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(got["connectionState"], "Disconnected", "{path}: {got}");
        let activity = got["lastActivityTime"].as_str().unwrap_or_default();
        assert!(
            !activity.starts_with("0001-01-01"),
            "{path}: HTTPS telemetry is activity: {got}"
        );
    }
    let device: Value = send(&hub, Method::GET, "/devices/poster", None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        device["connectionStateUpdatedTime"], "0001-01-01T00:00:00",
        "it never connected"
    );
}
