//! End-to-end tests of `ferrohub monitor`, `partitions` and `c2d` against a real hub.

use ferrohub_auth::{SymmetricKey, mint};
use ferrohub_test_support::{TestHub, now_secs};
use serde_json::Value;

mod common;
use common::*;

/// Creates `id` and returns a SAS token signed with its key.
async fn device(hub: &TestHub, id: &str) -> String {
    let out = ok(&run(hub, &["device", "create", id, "--output", "json"]).await);
    let d: Value = serde_json::from_str(&out).expect("json");
    let key = SymmetricKey::from_base64(
        d["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .expect("key"),
    )
    .expect("base64");
    mint(
        &format!("localhost/devices/{id}"),
        &key,
        now_secs() + 600,
        None,
    )
}

#[tokio::test]
async fn monitor_prints_events_like_az() {
    let hub = TestHub::start().await;
    let token = device(&hub, "mon1").await;
    let other = device(&hub, "mon2").await;
    for (id, t, body) in [
        ("mon1", &token, r#"{"temp":21}"#),
        ("mon2", &other, r#"{"temp":5}"#),
    ] {
        let resp = hub
            .http()
            .post(format!("{}/devices/{id}/messages/events", hub.base_url()))
            .header("Authorization", t.as_str())
            .header("iothub-contenttype", "application/json")
            .header("iothub-app-room", "kitchen")
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 204);
    }
    let out = ok(&run(
        &hub,
        &[
            "monitor",
            "--from",
            "start",
            "--device",
            "mon1",
            "--properties",
            "app",
            "--timeout",
            "3",
        ],
    )
    .await);
    assert!(out.contains("\"origin\": \"mon1\""), "{out}");
    assert!(out.contains("\"temp\": 21"), "{out}");
    assert!(out.contains("\"room\": \"kitchen\""), "{out}");
    assert!(!out.contains("mon2"), "filtered by device: {out}");

    let out = ok(&run(&hub, &["partitions", "--output", "json"]).await);
    let info: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(info["partitionCount"], 4);
    let total: i64 = info["partitions"]
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["lastEnqueuedSequenceNumber"].as_i64().expect("n") + 1)
        .sum();
    assert_eq!(total, 2);
}

#[tokio::test]
async fn c2d_send_generates_a_message_id_when_none_is_given() {
    let hub = TestHub::start().await;
    let token = device(&hub, "cmd2").await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let out = ok(&run(&hub, &["c2d", "send", "cmd2", "hi", "--output", "json"]).await);
        let sent: Value = serde_json::from_str(&out).expect("json");
        let id = sent["messageId"].as_str().expect("a message id").to_owned();
        // A version 4 UUID, as az iot device c2d-message send makes.
        let hex: String = id.chars().filter(|c| *c != '-').collect();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(hex.len(), 32, "{id}");
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert_eq!(&id[14..15], "4", "{id}");
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
    // The device receives the first one with the id that was printed.
    let resp = hub
        .http()
        .get(format!(
            "{}/devices/cmd2/messages/deviceBound",
            hub.base_url()
        ))
        .header("Authorization", token.as_str())
        .send()
        .await
        .expect("poll");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["iothub-messageid"], ids[0].as_str());
}

#[tokio::test]
async fn c2d_send_feedback_and_purge() {
    let hub = TestHub::start().await;
    let token = device(&hub, "cmd1").await;
    let out = ok(&run(
        &hub,
        &[
            "c2d",
            "send",
            "cmd1",
            "reboot",
            "--ack",
            "full",
            "--message-id",
            "m-1",
            "--prop",
            "delay=5",
            "--output",
            "json",
        ],
    )
    .await);
    let sent: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(sent["messageId"], "m-1");
    // The device receives it over HTTPS and completes it.
    let resp = hub
        .http()
        .get(format!(
            "{}/devices/cmd1/messages/deviceBound",
            hub.base_url()
        ))
        .header("Authorization", token.as_str())
        .send()
        .await
        .expect("poll");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["iothub-app-delay"], "5");
    let lock = resp.headers()["etag"]
        .to_str()
        .expect("etag")
        .trim_matches('"')
        .to_owned();
    assert_eq!(resp.text().await.expect("body"), "reboot");
    let resp = hub
        .http()
        .delete(format!(
            "{}/devices/cmd1/messages/deviceBound/{lock}",
            hub.base_url()
        ))
        .header("Authorization", token.as_str())
        .send()
        .await
        .expect("complete");
    assert_eq!(resp.status().as_u16(), 204);
    let out = ok(&run(
        &hub,
        &["c2d", "feedback", "--wait", "5", "--output", "json"],
    )
    .await);
    let records: Vec<Value> = serde_json::from_str(&out).expect("json");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["statusCode"], "Success");
    assert_eq!(records[0]["originalMessageId"], "m-1");

    ok(&run(&hub, &["c2d", "send", "cmd1", "a"]).await);
    ok(&run(&hub, &["c2d", "send", "cmd1", "b", "--ttl", "10m"]).await);
    let out = ok(&run(&hub, &["c2d", "purge", "cmd1", "--output", "json"]).await);
    let purged: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(purged["totalMessagesPurged"], 2);

    let bad = run(&hub, &["c2d", "send", "nobody", "x"]).await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("DeviceNotFound"));
    let bad = run(&hub, &["c2d", "send", "cmd1", "x", "--prop", "novalue"]).await;
    assert_eq!(bad.status.code(), Some(2));
}
