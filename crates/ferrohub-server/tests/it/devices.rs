//! `/devices/{id}`: the device JSON, ETag rules, validation.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{create_device, device_ids, expect_error, send};
use ferrohub_test_support::TestHub;

#[tokio::test]
async fn create_returns_azure_device_json() {
    let hub = TestHub::start().await;
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/dev1",
        None,
        &[],
        Some(r#"{"deviceId":"dev1"}"#),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json; charset=utf-8"
    );
    let etag_header = resp.headers()["etag"].to_str().unwrap().to_owned();
    let d: Value = resp.json().await.unwrap();
    assert_eq!(d["deviceId"], "dev1");
    assert_eq!(etag_header, format!("\"{}\"", d["etag"].as_str().unwrap()));
    assert_eq!(d["etag"], "MA==", "a new device's etag is base64 of \"0\"");
    let gen_id = d["generationId"].as_str().unwrap();
    assert_eq!(gen_id.len(), 18);
    assert!(gen_id.chars().all(|c| c.is_ascii_digit()));
    assert_eq!(d["status"], "enabled");
    assert_eq!(d["statusReason"], Value::Null);
    assert_eq!(d["connectionState"], "Disconnected");
    assert_eq!(d["lastActivityTime"], "0001-01-01T00:00:00");
    assert_eq!(d["cloudToDeviceMessageCount"], 0);
    assert_eq!(d["authentication"]["type"], "sas");
    let pk = d["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap();
    let sk = d["authentication"]["symmetricKey"]["secondaryKey"]
        .as_str()
        .unwrap();
    assert_eq!(pk.len(), 44, "32-byte generated key");
    assert_eq!(sk.len(), 44);
    assert_ne!(pk, sk);
    assert_eq!(d["capabilities"]["iotEdge"], false);

    let got: Value = send(&hub, Method::GET, "/devices/dev1", None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got, d);
}

#[tokio::test]
async fn given_keys_are_kept_and_empty_keys_generated() {
    let hub = TestHub::start().await;
    let pk = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";
    let body = format!(
        r#"{{"deviceId":"k1","authentication":{{"type":"sas","symmetricKey":{{"primaryKey":"{pk}","secondaryKey":""}}}}}}"#
    );
    let resp = send(&hub, Method::PUT, "/devices/k1", None, &[], Some(&body)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let d: Value = resp.json().await.unwrap();
    assert_eq!(d["authentication"]["symmetricKey"]["primaryKey"], pk);
    assert_eq!(
        d["authentication"]["symmetricKey"]["secondaryKey"]
            .as_str()
            .unwrap()
            .len(),
        44
    );
}

#[tokio::test]
async fn etag_rules() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "e1").await;
    let etag0 = d["etag"].as_str().unwrap().to_owned();

    // PUT without If-Match is create-only.
    let again = send(
        &hub,
        Method::PUT,
        "/devices/e1",
        None,
        &[],
        Some(r#"{"deviceId":"e1"}"#),
    )
    .await;
    expect_error(again, 409, "DeviceAlreadyExists").await;

    // Update with the current etag, quoted.
    let quoted = format!("\"{etag0}\"");
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/e1",
        None,
        &[("If-Match", &quoted)],
        Some(r#"{"deviceId":"e1","status":"disabled","statusReason":"maintenance"}"#),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let d1: Value = resp.json().await.unwrap();
    assert_eq!(d1["status"], "disabled");
    assert_eq!(d1["statusReason"], "maintenance");
    assert_ne!(d1["etag"], d["etag"], "etag changes on update");
    assert_eq!(d1["generationId"], d["generationId"]);
    assert_ne!(d1["statusUpdatedTime"], "0001-01-01T00:00:00");
    assert_eq!(
        d1["authentication"]["symmetricKey"]["primaryKey"],
        d["authentication"]["symmetricKey"]["primaryKey"],
        "keys survive an update that omits them"
    );

    // The old etag is stale now: 412, and nothing changes.
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/e1",
        None,
        &[("If-Match", &quoted)],
        Some(r#"{"deviceId":"e1","status":"enabled"}"#),
    )
    .await;
    expect_error(resp, 412, "PreconditionFailed").await;
    let now: Value = send(&hub, Method::GET, "/devices/e1", None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(now["status"], "disabled");

    // Quoted and bare star both match anything.
    for star in ["\"*\"", "*"] {
        let resp = send(
            &hub,
            Method::PUT,
            "/devices/e1",
            None,
            &[("If-Match", star)],
            Some(r#"{"deviceId":"e1","status":"enabled"}"#),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK, "If-Match {star}");
    }

    // Update of a device that does not exist.
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/ghost",
        None,
        &[("If-Match", "\"*\"")],
        Some(r#"{"deviceId":"ghost"}"#),
    )
    .await;
    expect_error(resp, 404, "DeviceNotFound").await;
    assert_eq!(device_ids(&hub).await, vec!["e1"]);

    // Delete with a stale etag fails; with the current one it succeeds.
    let resp = send(
        &hub,
        Method::DELETE,
        "/devices/e1",
        None,
        &[("If-Match", &quoted)],
        None,
    )
    .await;
    expect_error(resp, 412, "PreconditionFailed").await;
    let current: Value = send(&hub, Method::GET, "/devices/e1", None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    let tag = format!("\"{}\"", current["etag"].as_str().unwrap());
    let resp = send(
        &hub,
        Method::DELETE,
        "/devices/e1",
        None,
        &[("If-Match", &tag)],
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = send(&hub, Method::GET, "/devices/e1", None, &[], None).await;
    let msg = expect_error(resp, 404, "DeviceNotFound").await;
    assert!(msg.contains("e1"), "{msg}");
    let resp = send(&hub, Method::DELETE, "/devices/e1", None, &[], None).await;
    expect_error(resp, 404, "DeviceNotFound").await;
}

#[tokio::test]
async fn recreated_device_gets_a_new_generation() {
    let hub = TestHub::start().await;
    let a = create_device(&hub, "g1").await;
    let resp = send(
        &hub,
        Method::DELETE,
        "/devices/g1",
        None,
        &[("If-Match", "\"*\"")],
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let b = create_device(&hub, "g1").await;
    assert_ne!(a["generationId"], b["generationId"]);
    assert_ne!(
        a["authentication"]["symmetricKey"]["primaryKey"],
        b["authentication"]["symmetricKey"]["primaryKey"]
    );
}

#[tokio::test]
async fn bad_requests_change_nothing() {
    let hub = TestHub::start().await;
    create_device(&hub, "keep").await;
    let cases: Vec<(&str, Option<&str>, &str)> = vec![
        // An id with a character outside Azure's set.
        (
            "/devices/bad%20id",
            Some(r#"{"deviceId":"bad id"}"#),
            "space in id",
        ),
        ("/devices/a+b", Some(r#"{"deviceId":"a+b"}"#), "plus in id"),
        // The body names another device.
        ("/devices/x1", Some(r#"{"deviceId":"x2"}"#), "mismatched id"),
        // Not JSON, or JSON of the wrong shape.
        ("/devices/x1", Some("{not json"), "malformed JSON"),
        (
            "/devices/x1",
            Some(r#"{"deviceId":"x1","status":"sleeping"}"#),
            "unknown status",
        ),
        ("/devices/x1", Some("[]"), "array body"),
        // Keys that are not base64, or too short / too long once decoded.
        (
            "/devices/x1",
            Some(
                r#"{"deviceId":"x1","authentication":{"symmetricKey":{"primaryKey":"not base64!","secondaryKey":""}}}"#,
            ),
            "non-base64 key",
        ),
        (
            "/devices/x1",
            Some(
                r#"{"deviceId":"x1","authentication":{"symmetricKey":{"primaryKey":"AAAA","secondaryKey":""}}}"#,
            ),
            "3-byte key",
        ),
    ];
    for (path, body, what) in cases {
        let resp = send(&hub, Method::PUT, path, None, &[], body).await;
        assert_eq!(resp.status().as_u16(), 400, "{what}");
        expect_error(resp, 400, "ArgumentInvalid").await;
    }
    let long = "x".repeat(129);
    let resp = send(
        &hub,
        Method::GET,
        &format!("/devices/{long}"),
        None,
        &[],
        None,
    )
    .await;
    expect_error(resp, 400, "ArgumentInvalid").await;
    let reason = "r".repeat(129);
    let body = format!(r#"{{"deviceId":"keep","statusReason":"{reason}"}}"#);
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/keep",
        None,
        &[("If-Match", "*")],
        Some(&body),
    )
    .await;
    expect_error(resp, 400, "ArgumentInvalid").await;
    assert_eq!(device_ids(&hub).await, vec!["keep"]);
    let keep: Value = send(&hub, Method::GET, "/devices/keep", None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(keep["etag"], "MA==", "the failed update changed nothing");
}

#[tokio::test]
async fn list_honours_top() {
    let hub = TestHub::start().await;
    for id in ["c", "a", "b"] {
        create_device(&hub, id).await;
    }
    assert_eq!(device_ids(&hub).await, vec!["a", "b", "c"]);
    // Node's Registry.list() asks for `/devices/`.
    let resp = send(&hub, Method::GET, "/devices/", None, &[], None).await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    let slash: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(slash.len(), 3);
    let two: Vec<Value> = send(&hub, Method::GET, "/devices?top=2", None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(two.len(), 2);
    for out_of_range in ["0", "5000", "-1"] {
        let all: Vec<Value> = send(
            &hub,
            Method::GET,
            &format!("/devices?top={out_of_range}"),
            None,
            &[],
            None,
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(all.len(), 3, "top={out_of_range} means 1000");
    }
    let resp = send(&hub, Method::GET, "/devices?top=many", None, &[], None).await;
    expect_error(resp, 400, "ArgumentInvalid").await;
}

#[tokio::test]
async fn any_api_version_is_accepted() {
    let hub = TestHub::start().await;
    create_device(&hub, "v1").await;
    for v in ["2016-11-14", "2020-09-30", "anything"] {
        let url = format!("{}/devices/v1?api-version={v}", hub.base_url());
        let resp = hub
            .http()
            .get(url)
            .header("Authorization", hub.policy_token("iothubowner", 60))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "api-version {v}");
    }
    let url = format!("{}/devices/v1", hub.base_url());
    let resp = hub
        .http()
        .get(url)
        .header("Authorization", hub.policy_token("iothubowner", 60))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "no api-version");
}
