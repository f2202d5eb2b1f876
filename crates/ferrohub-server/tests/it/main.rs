//! Black-box tests of the hub through its real listeners: one binary, one module per area.
#![allow(clippy::unwrap_used)]

mod abuse;
mod amqp;
mod amqp_twin;
mod auth;
mod bulk;
mod c2d;
mod devices;
mod disk;
mod eventhubs;
mod events;
mod https_limits;
mod jobs;
mod methods;
mod modules;
mod mqtt;
mod query;
mod restart;
mod scheduled_jobs;
mod service;
mod twins;

use ferrohub_auth::{SymmetricKey, mint};
use ferrohub_mqtt::codec::ConnectReturnCode;
use ferrohub_test_support::mqtt::{MqttClient, Transport};
use ferrohub_test_support::{TestHub, now_secs};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;

/// Sends `method path` with the owner's token (or `token` when given) and an optional JSON body.
async fn send(
    hub: &TestHub,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    let owner = hub.policy_token("iothubowner", 3600);
    let sep = if path.contains('?') { '&' } else { '?' };
    let url = format!("{}{path}{sep}api-version=2021-04-12", hub.base_url());
    let mut req = hub
        .http()
        .request(method, url)
        .header("Authorization", token.unwrap_or(&owner));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json; charset=utf-8")
            .body(b.to_owned());
    }
    req.send().await.unwrap()
}

/// Asserts an Azure error response: status, `iothub-errorcode` header, legacy body, content
/// type. Returns the body's text.
async fn expect_error(resp: Response, status: u16, code: &str) -> String {
    assert_eq!(resp.status().as_u16(), status, "status");
    assert_eq!(
        resp.headers()["iothub-errorcode"].to_str().unwrap(),
        code,
        "iothub-errorcode header"
    );
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json; charset=utf-8"
    );
    let body: Value = resp.json().await.unwrap();
    let message = body["Message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with(&format!("ErrorCode:{code};")),
        "legacy Message form: {message}"
    );
    assert!(
        body["ExceptionMessage"]
            .as_str()
            .unwrap()
            .starts_with("Tracking ID:")
    );
    message
}

/// Creates device `id` through the REST API and returns its JSON.
async fn create_device(hub: &TestHub, id: &str) -> Value {
    let resp = send(
        hub,
        Method::PUT,
        &format!("/devices/{id}"),
        None,
        &[],
        Some(&format!(r#"{{"deviceId":"{id}"}}"#)),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

/// How long a test waits for the hub to reach a state before it fails.
const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Device `id` as `GET /devices/{id}` shows it.
async fn device_json(hub: &TestHub, id: &str) -> Value {
    send(hub, Method::GET, &format!("/devices/{id}"), None, &[], None)
        .await
        .json()
        .await
        .unwrap()
}

/// Waits until device `id` shows `field` = `value`, and returns it.
async fn wait_device(hub: &TestHub, id: &str, field: &str, value: Value) -> Value {
    ferrohub_test_support::eventually(WAIT, &format!("{id}.{field} = {value}"), || async {
        let d = device_json(hub, id).await;
        (d[field] == value).then_some(d)
    })
    .await
}

/// Waits until the event log holds `n` events, and returns them.
async fn wait_events(hub: &TestHub, n: usize) -> Vec<Value> {
    ferrohub_test_support::eventually(WAIT, &format!("{n} events in the log"), || async {
        let events = all_events(hub).await;
        (events.len() >= n).then_some(events)
    })
    .await
}

/// Connects over MQTT (TLS) as the device whose JSON is `device`, or as its module `module`
/// (created here), with its primary key; asserts the CONNACK accepts it.
async fn connect_identity(
    hub: &TestHub,
    device: &Value,
    module: Option<&str>,
    clean_session: bool,
) -> MqttClient {
    let id = device["deviceId"].as_str().unwrap();
    let (client_id, resource, key) = match module {
        None => (
            id.to_owned(),
            format!("localhost/devices/{id}"),
            device["authentication"]["symmetricKey"]["primaryKey"]
                .as_str()
                .unwrap()
                .to_owned(),
        ),
        Some(m) => {
            let path = format!("/devices/{id}/modules/{m}");
            let mut resp = send(hub, Method::GET, &path, None, &[], None).await;
            if resp.status() == StatusCode::NOT_FOUND {
                resp = send(hub, Method::PUT, &path, None, &[], Some("{}")).await;
            }
            let module: Value = resp.json().await.unwrap();
            (
                format!("{id}/{m}"),
                format!("localhost/devices/{id}/modules/{m}"),
                module["authentication"]["symmetricKey"]["primaryKey"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        }
    };
    let token = mint(
        &resource,
        &SymmetricKey::from_base64(&key).unwrap(),
        now_secs() + 600,
        None,
    );
    let ca = hub.ca_pem();
    let (c, ack) = MqttClient::connect(
        Transport::Tls(hub.mqtt_addr(), &ca),
        &client_id,
        &format!("localhost/{client_id}/?api-version=2021-04-12"),
        &token,
        clean_session,
        60,
        None,
    )
    .await;
    assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::Accepted));
    c
}

/// The ids of every device, via `GET /devices`.
async fn device_ids(hub: &TestHub) -> Vec<String> {
    let resp = send(hub, Method::GET, "/devices", None, &[], None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let list: Vec<Value> = resp.json().await.unwrap();
    list.iter()
        .map(|d| d["deviceId"].as_str().unwrap().to_owned())
        .collect()
}

/// Every event in the log, partition by partition, via the read API.
/// The hub's OpenAPI document.
async fn openapi(hub: &TestHub) -> Value {
    hub.http()
        .get(format!("{}/openapi.json", hub.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn all_events(hub: &TestHub) -> Vec<Value> {
    let info: Value = send(
        hub,
        Method::GET,
        "/messages/events/partitions",
        None,
        &[],
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let mut events = Vec::new();
    for p in info["partitionIds"].as_array().unwrap() {
        let batch: Value = send(
            hub,
            Method::GET,
            &format!(
                "/messages/events/partitions/{}/events?max=1000",
                p.as_str().unwrap()
            ),
            None,
            &[],
            None,
        )
        .await
        .json()
        .await
        .unwrap();
        events.extend(batch["events"].as_array().unwrap().iter().cloned());
    }
    events
}
