//! End-to-end tests of `ferrohub twin` and `ferrohub method` against a real hub, with a raw MQTT
//! device answering methods.

use std::time::Duration;

use ferrohub_auth::{SymmetricKey, mint};
use ferrohub_mqtt::{Packet, QoS};
use ferrohub_test_support::mqtt::{MqttClient, Transport};
use ferrohub_test_support::{TestHub, now_secs};
use serde_json::{Value, json};

mod common;
use common::*;

/// Creates device `id` and connects it over MQTT, subscribed to direct methods.
async fn connected_device(hub: &TestHub, id: &str) -> MqttClient {
    let d = ok_json(&run(hub, &["device", "create", id, "--output", "json"]).await);
    let key = SymmetricKey::from_base64(
        d["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .expect("key"),
    )
    .expect("base64");
    let token = mint(
        &format!("localhost/devices/{id}"),
        &key,
        now_secs() + 600,
        None,
    );
    let ca = hub.ca_pem();
    let (mut c, ack) = MqttClient::connect(
        Transport::Tls(hub.mqtt_addr(), &ca),
        id,
        &format!("localhost/{id}/?api-version=2021-04-12"),
        &token,
        true,
        60,
        None,
    )
    .await;
    assert!(ack.is_some(), "connected");
    c.subscribe(&[("$iothub/methods/POST/#", QoS::AtMostOnce)])
        .await;
    c
}

/// Waits for a method request: its topic and payload.
async fn next_request(c: &mut MqttClient) -> (String, Vec<u8>) {
    loop {
        match c.recv_within(Duration::from_secs(20)).await {
            Some(Packet::Publish(p)) => return (p.topic.as_str().to_owned(), p.payload.to_vec()),
            Some(_) => {}
            None => panic!("no method request came"),
        }
    }
}

#[tokio::test]
async fn twin_show_and_update_like_az() {
    let hub = TestHub::start().await;
    ok(&run(&hub, &["device", "create", "t1"]).await);
    let twin = ok_json(&run(&hub, &["twin", "show", "t1", "--output", "json"]).await);
    assert_eq!(twin["deviceId"], "t1");
    assert_eq!(twin["etag"], "AAAAAAAAAAE=");
    assert_eq!(twin["properties"]["desired"]["$version"], 1);

    let updated = ok_json(
        &run(
            &hub,
            &[
                "twin",
                "update",
                "t1",
                "--desired",
                r#"{"fw":"1.2","cfg":{"a":1}}"#,
                "--tags",
                r#"{"site":"b7"}"#,
                "--etag",
                "AAAAAAAAAAE=",
                "--output",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(updated["etag"], "AAAAAAAAAAI=");
    assert_eq!(updated["tags"], json!({"site": "b7"}));
    assert_eq!(updated["properties"]["desired"]["fw"], "1.2");

    // A merge: null deletes, the rest stays.
    let table = ok(&run(
        &hub,
        &["twin", "update", "t1", "--desired", r#"{"cfg":null}"#],
    )
    .await);
    assert!(
        table.contains("desired           {\"fw\":\"1.2\"}"),
        "{table}"
    );
    assert!(table.contains("desiredVersion    3"), "{table}");
    assert!(
        table.contains("tags              {\"site\":\"b7\"}"),
        "{table}"
    );
    assert!(table.contains("connectionState   Disconnected"), "{table}");

    // A stale ETag is the hub's refusal: exit 1, Azure's code.
    let out = run(
        &hub,
        &[
            "twin",
            "update",
            "t1",
            "--tags",
            "{}",
            "--etag",
            "AAAAAAAAAAE=",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("(PreconditionFailed)"),
        "{}",
        stderr(&out)
    );
    // Bad input is a usage error: exit 2, nothing sent.
    for args in [
        &["twin", "update", "t1"][..],
        &["twin", "update", "t1", "--desired", "{nope"],
        &["twin", "update", "t1", "--tags", "[1]"],
    ] {
        let out = run(&hub, args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    let out = run(&hub, &["twin", "show", "nobody"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("(DeviceNotFound)"),
        "{}",
        stderr(&out)
    );

    // Module twins.
    ok(&run(&hub, &["module", "create", "t1", "m1"]).await);
    let module = ok_json(
        &run(
            &hub,
            &[
                "twin",
                "update",
                "t1",
                "--module",
                "m1",
                "--tags",
                r#"{"m":1}"#,
                "--output",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(module["moduleId"], "m1");
    assert_eq!(module["tags"], json!({"m": 1}));
    let shown = ok(&run(&hub, &["twin", "show", "t1", "--module", "m1"]).await);
    assert!(shown.contains("moduleId"), "{shown}");
    let out = run(&hub, &["twin", "show", "t1", "--module", "nomod"]).await;
    assert!(
        stderr(&out).contains("(ModuleNotFound)"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn method_invoke_like_az() {
    let hub = TestHub::start().await;
    let mut device = connected_device(&hub, "mi1").await;
    let call = run(
        &hub,
        &[
            "method",
            "invoke",
            "mi1",
            "reboot",
            "--payload",
            r#"{"delay":5}"#,
            "--output",
            "json",
        ],
    );
    let answer = async {
        let (topic, payload) = next_request(&mut device).await;
        assert!(
            topic.starts_with("$iothub/methods/POST/reboot/?$rid="),
            "{topic}"
        );
        assert_eq!(payload, br#"{"delay":5}"#);
        let rid = topic.split("$rid=").nth(1).expect("rid").to_owned();
        device
            .publish(
                &format!("$iothub/methods/res/201/?$rid={rid}"),
                QoS::AtMostOnce,
                br#"{"done":true}"#,
            )
            .await;
    };
    let (out, ()) = tokio::join!(call, answer);
    assert_eq!(
        ok_json(&out),
        json!({"status": 201, "payload": {"done": true}})
    );

    // The table form.
    let call = run(&hub, &["method", "invoke", "mi1", "ping"]);
    let answer = async {
        let (topic, payload) = next_request(&mut device).await;
        assert_eq!(payload, b"null", "no payload reaches the device as null");
        let rid = topic.split("$rid=").nth(1).expect("rid").to_owned();
        device
            .publish(
                &format!("$iothub/methods/res/200/?$rid={rid}"),
                QoS::AtMostOnce,
                b"",
            )
            .await;
    };
    let (out, ()) = tokio::join!(call, answer);
    assert_eq!(ok(&out), "status   200\npayload  null\n");
}

#[tokio::test]
async fn method_errors_exit_1_with_azures_code() {
    let hub = TestHub::start().await;
    ok(&run(&hub, &["device", "create", "off1"]).await);
    // Not connected: 404103 at once; the client reads the JSON inside Message.
    let out = run(&hub, &["method", "invoke", "off1", "m"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("(DeviceNotOnline)"), "{err}");
    assert!(err.contains("isn't online"), "{err}");

    // Connected and silent: 504101 after the 5-second minimum.
    let mut device = connected_device(&hub, "silent1").await;
    let call = run(
        &hub,
        &["method", "invoke", "silent1", "m", "--timeout", "5"],
    );
    let ignore = async {
        let _ = next_request(&mut device).await;
    };
    let (out, ()) = tokio::join!(call, ignore);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("(GatewayTimeout)"), "{err}");
    assert!(
        err.contains("Timed out waiting for the response from device."),
        "{err}"
    );

    let out = run(
        &hub,
        &["method", "invoke", "off1", "m", "--payload", "{bad"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let out = run(&hub, &["method", "invoke", "nobody", "m"]).await;
    assert!(
        stderr(&out).contains("(DeviceNotFound)"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn desired_updates_reach_a_connected_device() {
    let hub = TestHub::start().await;
    let mut device = connected_device(&hub, "dn1").await;
    device
        .subscribe(&[("$iothub/twin/PATCH/properties/desired/#", QoS::AtMostOnce)])
        .await;
    ok(&run(
        &hub,
        &["twin", "update", "dn1", "--desired", r#"{"rate":5}"#],
    )
    .await);
    let (topic, body) = next_request(&mut device).await;
    assert_eq!(topic, "$iothub/twin/PATCH/properties/desired/?$version=2");
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body, json!({"rate": 5, "$version": 2}));
}
