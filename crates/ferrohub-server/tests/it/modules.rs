//! `/devices/{id}/modules`: module identities.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{create_device, expect_error, send};
use ferrohub_test_support::TestHub;

#[tokio::test]
async fn module_lifecycle() {
    let hub = TestHub::start().await;
    create_device(&hub, "edge1").await;
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/edge1/modules/mod1",
        None,
        &[],
        Some(r#"{"deviceId":"edge1","moduleId":"mod1","managedBy":"IotEdge"}"#),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let etag_header = resp.headers()["etag"].to_str().unwrap().to_owned();
    let m: Value = resp.json().await.unwrap();
    assert_eq!(m["moduleId"], "mod1");
    assert_eq!(m["deviceId"], "edge1");
    assert_eq!(m["managedBy"], "IotEdge");
    assert_eq!(etag_header, format!("\"{}\"", m["etag"].as_str().unwrap()));
    assert_eq!(
        m["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap()
            .len(),
        44
    );

    let resp = send(
        &hub,
        Method::PUT,
        "/devices/edge1/modules/mod1",
        None,
        &[],
        Some("{}"),
    )
    .await;
    expect_error(resp, 409, "ModuleAlreadyExistsOnDevice").await;

    let list: Vec<Value> = send(&hub, Method::GET, "/devices/edge1/modules", None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 1);

    let resp = send(
        &hub,
        Method::PUT,
        "/devices/nodev/modules/m",
        None,
        &[],
        Some("{}"),
    )
    .await;
    expect_error(resp, 404, "DeviceNotFound").await;
    let resp = send(
        &hub,
        Method::GET,
        "/devices/edge1/modules/none",
        None,
        &[],
        None,
    )
    .await;
    expect_error(resp, 404, "ModuleNotFound").await;

    let resp = send(
        &hub,
        Method::DELETE,
        "/devices/edge1/modules/mod1",
        None,
        &[("If-Match", "\"*\"")],
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = send(
        &hub,
        Method::GET,
        "/devices/edge1/modules/mod1",
        None,
        &[],
        None,
    )
    .await;
    expect_error(resp, 404, "ModuleNotFound").await;
}

#[tokio::test]
async fn deleting_a_device_deletes_its_modules() {
    let hub = TestHub::start().await;
    create_device(&hub, "d").await;
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/d/modules/m",
        None,
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = send(&hub, Method::DELETE, "/devices/d", None, &[], None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    create_device(&hub, "d").await;
    let list: Vec<Value> = send(&hub, Method::GET, "/devices/d/modules", None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    assert!(list.is_empty(), "modules went with their device");
}
