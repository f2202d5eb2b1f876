//! Direct methods: the service's call reaches the device's connection and waits for its answer.

use std::time::Duration;

use ferrohub_mqtt::{Packet, QoS};
use ferrohub_test_support::TestHub;
use ferrohub_test_support::mqtt::MqttClient;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{connect_identity, create_device, send};

async fn device_client(hub: &TestHub, device: &Value, module: Option<&str>) -> MqttClient {
    let mut c = connect_identity(hub, device, module, true).await;
    c.subscribe(&[("$iothub/methods/POST/#", QoS::AtMostOnce)])
        .await;
    c
}

/// Waits for a method request; returns (name, rid, payload).
async fn next_request(c: &mut MqttClient) -> (String, String, Vec<u8>) {
    loop {
        match c.recv_within(Duration::from_secs(10)).await {
            Some(Packet::Publish(p)) => {
                let topic = p.topic.as_str().to_owned();
                let rest = topic
                    .strip_prefix("$iothub/methods/POST/")
                    .expect("a method request");
                let (name, query) = rest.split_once("/?$rid=").expect("/?$rid=");
                return (name.to_owned(), query.to_owned(), p.payload.to_vec());
            }
            Some(_) => {}
            None => panic!("no method request"),
        }
    }
}

async fn invoke(hub: &TestHub, path: &str, body: &str) -> (StatusCode, Value) {
    let resp = send(hub, Method::POST, path, None, &[], Some(body)).await;
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_method_reaches_the_device_and_its_answer_the_caller() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "meth1").await;
    let mut device = device_client(&hub, &d, None).await;
    let call = invoke(
        &hub,
        "/twins/meth1/methods",
        r#"{"methodName":"reboot","payload":{"delay":5},"responseTimeoutInSeconds":30}"#,
    );
    let answer = async {
        let (name, rid, payload) = next_request(&mut device).await;
        assert_eq!(name, "reboot");
        assert_eq!(payload, br#"{"delay":5}"#);
        device
            .publish(
                &format!("$iothub/methods/res/201/?$rid={rid}"),
                QoS::AtLeastOnce,
                br#"{"done":true}"#,
            )
            .await
            .expect("PUBACK");
    };
    let ((status, body), ()) = tokio::join!(call, answer);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        serde_json::json!({"status": 201, "payload": {"done": true}})
    );
}

#[tokio::test]
async fn a_missing_payload_reaches_the_device_as_null() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "meth2").await;
    let mut device = device_client(&hub, &d, Some("mod1")).await;
    let call = invoke(
        &hub,
        "/twins/meth2/modules/mod1/methods",
        r#"{"methodName":"ping"}"#,
    );
    let answer = async {
        let (_, rid, payload) = next_request(&mut device).await;
        assert_eq!(payload, b"null", "never an empty body");
        device
            .publish(
                &format!("$iothub/methods/res/200/?$rid={rid}"),
                QoS::AtMostOnce,
                b"",
            )
            .await;
    };
    let ((status, body), ()) = tokio::join!(call, answer);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"status": 200, "payload": null}));
}

#[tokio::test]
async fn offline_unsubscribed_and_silent_devices_get_azure_errors() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "meth3").await;

    // Not connected: 404103 at once (no connect timeout), as the real hub words it.
    let (status, body) = invoke(&hub, "/twins/meth3/methods", r#"{"methodName":"m"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["ExceptionMessage"], "");
    let inner: Value = serde_json::from_str(body["Message"].as_str().unwrap()).unwrap();
    assert_eq!(inner["errorCode"], 404103);
    assert_eq!(inner["info"]["timeout"], "00:00:00");
    assert!(
        inner["message"]
            .as_str()
            .unwrap()
            .contains("isn't online or hasn't registered the direct method callback"),
        "{inner}"
    );
    assert!(inner["trackingId"].is_string() && inner["timestampUtc"].is_string());

    // Connected but not subscribed to methods: the same.
    let unsubscribed = connect_identity(&hub, &d, None, true).await;
    let (status, _) = invoke(&hub, "/twins/meth3/methods", r#"{"methodName":"m"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    drop(unsubscribed);

    // Bad requests: 400004.
    for bad in [
        r#"{"payload":1}"#,
        r#"{"methodName":"a b"}"#,
        r#"{"methodName":"m","responseTimeoutInSeconds":4}"#,
        r#"{"methodName":"m","connectTimeoutInSeconds":301}"#,
        "[]",
    ] {
        let resp = send(
            &hub,
            Method::POST,
            "/twins/meth3/methods",
            None,
            &[],
            Some(bad),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(
            resp.headers()["iothub-errorcode"],
            "ArgumentInvalid",
            "{bad}"
        );
    }

    // Unknown device and module: 404001, 404010.
    let resp = send(
        &hub,
        Method::POST,
        "/twins/nobody/methods",
        None,
        &[],
        Some(r#"{"methodName":"m"}"#),
    )
    .await;
    assert_eq!(resp.headers()["iothub-errorcode"], "DeviceNotFound");
    let resp = send(
        &hub,
        Method::POST,
        "/twins/meth3/modules/nomod/methods",
        None,
        &[],
        Some(r#"{"methodName":"m"}"#),
    )
    .await;
    assert_eq!(resp.headers()["iothub-errorcode"], "ModuleNotFound");

    // Connected but never answering: 504101 after the response timeout.
    let mut device = device_client(&hub, &d, None).await;
    let call = invoke(
        &hub,
        "/twins/meth3/methods",
        r#"{"methodName":"m","responseTimeoutInSeconds":5}"#,
    );
    let ignore = async {
        let _ = next_request(&mut device).await;
    };
    let ((status, body), ()) = tokio::join!(call, ignore);
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let inner: Value = serde_json::from_str(body["Message"].as_str().unwrap()).unwrap();
    assert_eq!(inner["errorCode"], 504101);
    assert_eq!(
        inner["message"],
        "Timed out waiting for the response from device."
    );
}

#[tokio::test]
async fn an_answer_that_is_not_json_is_refused() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "meth5").await;
    let mut device = device_client(&hub, &d, None).await;
    let call = invoke(&hub, "/twins/meth5/methods", r#"{"methodName":"m"}"#);
    let answer = async {
        let (_, rid, _) = next_request(&mut device).await;
        device
            .publish(
                &format!("$iothub/methods/res/200/?$rid={rid}"),
                QoS::AtMostOnce,
                b"not json",
            )
            .await;
    };
    let ((status, body), ()) = tokio::join!(call, answer);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["Message"]
            .as_str()
            .unwrap()
            .starts_with("ErrorCode:ArgumentInvalid;"),
        "{body}"
    );
}

#[tokio::test]
async fn a_connect_timeout_waits_for_the_device_to_come() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "meth4").await;
    let call = invoke(
        &hub,
        "/twins/meth4/methods",
        r#"{"methodName":"late","connectTimeoutInSeconds":30,"responseTimeoutInSeconds":30}"#,
    );
    let arrive = async {
        let mut device = device_client(&hub, &d, None).await;
        let (_, rid, _) = next_request(&mut device).await;
        device
            .publish(
                &format!("$iothub/methods/res/200/?$rid={rid}"),
                QoS::AtMostOnce,
                b"\"hi\"",
            )
            .await;
        device
    };
    let ((status, body), _device) = tokio::join!(call, arrive);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["payload"], "hi");
}
