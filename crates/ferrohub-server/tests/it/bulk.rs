//! `POST /devices`: bulk create, update and delete.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{create_device, device_ids, expect_error, send};
use ferrohub_test_support::TestHub;

#[tokio::test]
async fn bulk_create_update_delete() {
    let hub = TestHub::start().await;
    let body = json!([
        {"id": "b1", "importMode": "create", "status": "enabled"},
        {"id": "b2", "status": "disabled"},
        {"id": "b3", "importMode": "createOrUpdate", "status": "enabled"}
    ]);
    let resp = send(
        &hub,
        Method::POST,
        "/devices",
        None,
        &[],
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["isSuccessful"], true);
    assert_eq!(r["errors"], json!([]));
    assert_eq!(device_ids(&hub).await, vec!["b1", "b2", "b3"]);
    let b2: Value = send(&hub, Method::GET, "/devices/b2", None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        b2["status"], "disabled",
        "missing importMode is createOrUpdate"
    );

    // One good record, one failing record: the good one applies, the response is 400.
    let body = json!([
        {"id": "b1", "importMode": "create", "status": "enabled"},
        {"id": "b4", "importMode": "create", "status": "enabled"},
        {"id": "b2", "importMode": "updateIfMatchETag", "eTag": "bm90IGl0", "status": "enabled"},
        {"id": "nope", "importMode": "delete"},
        {"id": "bad id", "importMode": "create"},
        {"id": "b5", "importMode": "teleport"}
    ]);
    let resp = send(
        &hub,
        Method::POST,
        "/devices",
        None,
        &[],
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["isSuccessful"], false);
    let mut codes: Vec<(String, String)> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["deviceId"].as_str().unwrap().to_owned(),
                e["errorCode"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        vec![
            ("b1".to_owned(), "DeviceAlreadyExists".to_owned()),
            ("b2".to_owned(), "PreconditionFailed".to_owned()),
            ("b5".to_owned(), "ArgumentInvalid".to_owned()),
            ("bad id".to_owned(), "ArgumentInvalid".to_owned()),
            ("nope".to_owned(), "DeviceNotFound".to_owned()),
        ]
    );
    assert_eq!(device_ids(&hub).await, vec!["b1", "b2", "b3", "b4"]);

    let body = json!([{"id": "b1", "importMode": "delete"}, {"id": "b3", "importMode": "deleteIfMatchETag", "eTag": "MA=="}]);
    let resp = send(
        &hub,
        Method::POST,
        "/devices",
        None,
        &[],
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(device_ids(&hub).await, vec!["b2", "b4"]);
}

#[tokio::test]
async fn bulk_limits() {
    let hub = TestHub::start().await;
    create_device(&hub, "only").await;
    let many: Vec<Value> = (0..101).map(|i| json!({"id": format!("m{i}")})).collect();
    let resp = send(
        &hub,
        Method::POST,
        "/devices",
        None,
        &[],
        Some(&Value::Array(many).to_string()),
    )
    .await;
    expect_error(resp, 413, "TooManyDevices").await;

    let twice = json!([{"id": "t1"}, {"id": "t1"}]);
    let resp = send(
        &hub,
        Method::POST,
        "/devices",
        None,
        &[],
        Some(&twice.to_string()),
    )
    .await;
    expect_error(resp, 400, "DeviceDefinedMultipleTimes").await;

    let resp = send(
        &hub,
        Method::POST,
        "/devices",
        None,
        &[],
        Some(r#"{"id":"x"}"#),
    )
    .await;
    expect_error(resp, 400, "ArgumentInvalid").await;
    assert_eq!(device_ids(&hub).await, vec!["only"]);
}
