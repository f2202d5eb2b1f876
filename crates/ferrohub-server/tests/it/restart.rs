//! Everything survives a restart: identities, keys, ETags, policies, the CA.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{create_device, send};
use ferrohub_test_support::TestHub;

#[tokio::test]
async fn state_survives_restart() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "r1").await;
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/r1/modules/m1",
        None,
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let owner = hub.owner_connection_string();
    let ca = hub.ca_pem();
    let data_dir = hub.data_dir().to_owned();
    let dir = hub.stop().await.expect("temp dir");

    let hub = TestHub::start_in(&data_dir).await;
    let again: Value = send(&hub, Method::GET, "/devices/r1", None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["etag"], d["etag"]);
    assert_eq!(again["generationId"], d["generationId"]);
    assert_eq!(again["authentication"], d["authentication"]);
    let resp = send(&hub, Method::GET, "/devices/r1/modules/m1", None, &[], None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(hub.ca_pem(), ca, "same CA");
    let key_of = |cs: &str| cs.split("SharedAccessKey=").nth(1).unwrap_or("").to_owned();
    assert_eq!(
        key_of(&hub.owner_connection_string()),
        key_of(&owner),
        "same owner key"
    );
    drop(hub);
    drop(dir);
}

#[tokio::test]
async fn a_second_hub_cannot_share_the_data_dir() {
    let hub = TestHub::start().await;
    let overrides = ferrohub_server::Overrides {
        data_dir: Some(hub.data_dir().to_owned()),
        https_port: Some(0),
        bind: Some("127.0.0.1".into()),
        ..Default::default()
    };
    let config = ferrohub_server::Config::load(None, &overrides).unwrap();
    let err = ferrohub_server::App::build(config)
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(err, ferrohub_server::BuildError::DataDirInUse(_)),
        "{err}"
    );
}
