//! The token-service pattern end to end: a device gets a token from the service, connects to a
//! real hub over MQTT; disabling the device refuses it despite a valid token; an expiring token
//! closes the connection.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use ferrohub_mqtt::codec::ConnectReturnCode;
use ferrohub_test_support::mqtt::{MqttClient, Transport};
use ferrohub_test_support::{TestHub, now_secs};
use token_service::{Clock, TokenResponse, TokenService, hash_api_key, parse_keys_file, router};

async fn start_service(hub: &TestHub, clock: Clock, ttl_secs: u64) -> String {
    let keys = format!(r#"{{"sensor-1": "{}"}}"#, hash_api_key("s3cret"));
    let service = TokenService {
        hub_host: "localhost".into(),
        policy_name: "device".into(),
        policy_key: hub.policy_key("device"),
        api_key_hashes: parse_keys_file(&keys).unwrap(),
        ttl_secs,
        clock,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(Arc::new(service))).await });
    format!("http://{addr}")
}

async fn get_token(url: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}/devices/sensor-1/token"))
        .header("Authorization", format!("ApiKey {key}"))
        .send()
        .await
        .unwrap()
}

async fn connect(hub: &TestHub, token: &str) -> (MqttClient, Option<ConnectReturnCode>) {
    let ca = hub.ca_pem();
    let (c, ack) = MqttClient::connect(
        Transport::Tls(hub.mqtt_addr(), &ca),
        "sensor-1",
        "localhost/sensor-1/?api-version=2021-04-12",
        token,
        true,
        60,
        None,
    )
    .await;
    (c, ack.map(|a| a.code))
}

#[tokio::test]
async fn tokens_from_the_service_connect_and_are_revoked_live() {
    let hub = TestHub::start().await;
    hub.client()
        .create_device(&ferrohub_client::api::Device {
            device_id: "sensor-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let url = start_service(&hub, Arc::new(now_secs), 3600).await;

    assert_eq!(get_token(&url, "wrong").await.status().as_u16(), 401);
    let resp = get_token(&url, "s3cret").await;
    assert_eq!(resp.status().as_u16(), 200);
    let token: TokenResponse = resp.json().await.unwrap();
    assert!(token.sas_token.contains("skn=device"));

    let (mut c, code) = connect(&hub, &token.sas_token).await;
    assert_eq!(code, Some(ConnectReturnCode::Accepted));
    assert!(
        c.publish(
            "devices/sensor-1/messages/events/",
            ferrohub_mqtt::QoS::AtLeastOnce,
            b"hi"
        )
        .await
        .is_some()
    );

    // Disabled in the hub: the live connection closes, and the valid token no longer connects.
    let client = hub.client();
    let mut d = client.device("sensor-1").await.unwrap();
    d.status = Some(ferrohub_client::api::DeviceStatus::Disabled);
    client.update_device(&d, None).await.unwrap();
    assert!(c.closed_within(Duration::from_secs(2)).await);
    let (_, code) = connect(&hub, &token.sas_token).await;
    assert_eq!(code, Some(ConnectReturnCode::NotAuthorized));
}

#[tokio::test]
async fn an_expiring_token_closes_the_connection() {
    let hub = TestHub::start().await;
    hub.client()
        .create_device(&ferrohub_client::api::Device {
            device_id: "sensor-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // The service's clock runs 299 s behind and hands out 2-second tokens, so the token stops
    // being valid (expiry + 5 minutes of skew) about three seconds from now.
    let url = start_service(&hub, Arc::new(|| now_secs() - 299), 2).await;
    let token: TokenResponse = get_token(&url, "s3cret").await.json().await.unwrap();
    let (mut c, code) = connect(&hub, &token.sas_token).await;
    assert_eq!(code, Some(ConnectReturnCode::Accepted));
    assert!(
        c.closed_within(Duration::from_secs(8)).await,
        "closed at expiry"
    );
}
