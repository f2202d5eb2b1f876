//! Who may call the service API: SAS tokens of shared access policies, checked as Azure does.

use ferrohub_auth::{SymmetricKey, mint};
use ferrohub_test_support::{TestHub, now_secs};
use reqwest::{Method, StatusCode};

use super::{create_device, device_ids, expect_error, send};

const BODY: &str = r#"{"deviceId":"new1"}"#;

#[tokio::test]
async fn refused_tokens_get_401_and_change_nothing() {
    let hub = TestHub::start().await;
    create_device(&hub, "existing").await;
    let host = format!("localhost:{}", hub.https_addr().port());
    let owner_key = hub.policy_key("iothubowner");
    let future = now_secs() + 3600;

    let wrong_key = mint(
        &host,
        &SymmetricKey::generate(),
        future,
        Some("iothubowner"),
    );
    let unknown_policy = mint(&host, &owner_key, future, Some("nosuchpolicy"));
    let expired = mint(&host, &owner_key, now_secs() - 301, Some("iothubowner"));
    let other_host = mint(
        "otherhub.azure-devices.net",
        &owner_key,
        future,
        Some("iothubowner"),
    );
    let elsewhere = mint(
        &format!("{host}/devices/other"),
        &owner_key,
        future,
        Some("iothubowner"),
    );
    let no_skn = mint(&host, &owner_key, future, None);
    let read_only = hub.policy_token("registryRead", 3600);
    let device_policy = hub.policy_token("device", 3600);
    let service_policy = hub.policy_token("service", 3600);
    let mut tampered = hub.policy_token("iothubowner", 3600);
    tampered = tampered.replace("&se=", "&se=1");

    let cases: Vec<(&str, String, &str)> = vec![
        ("wrong key", wrong_key, "IotHubUnauthorizedAccess"),
        ("unknown policy", unknown_policy, "IotHubUnauthorizedAccess"),
        (
            "expired beyond the 5-minute skew",
            expired,
            "IotHubUnauthorized",
        ),
        ("another hub", other_host, "IotHubUnauthorizedAccess"),
        (
            "scoped to another path",
            elsewhere,
            "IotHubUnauthorizedAccess",
        ),
        ("no policy name", no_skn, "IotHubUnauthorizedAccess"),
        (
            "policy without RegistryWrite",
            read_only,
            "IotHubUnauthorizedAccess",
        ),
        (
            "DeviceConnect policy",
            device_policy,
            "IotHubUnauthorizedAccess",
        ),
        (
            "ServiceConnect policy",
            service_policy,
            "IotHubUnauthorizedAccess",
        ),
        ("tampered expiry", tampered, "IotHubUnauthorizedAccess"),
        (
            "not a SAS token",
            "Bearer abc".to_owned(),
            "IotHubUnauthorizedAccess",
        ),
        ("empty", String::new(), "IotHubUnauthorizedAccess"),
    ];
    for (what, token, code) in cases {
        let resp = send(
            &hub,
            Method::PUT,
            "/devices/new1",
            Some(&token),
            &[],
            Some(BODY),
        )
        .await;
        assert_eq!(resp.status().as_u16(), 401, "{what}");
        let msg = expect_error(resp, 401, code).await;
        assert!(
            !msg.contains(&owner_key.to_base64()),
            "{what}: no key in errors"
        );
    }
    // No Authorization header at all.
    let url = format!("{}/devices/new1?api-version=2021-04-12", hub.base_url());
    let resp = hub.http().put(url).body(BODY).send().await.unwrap();
    expect_error(resp, 401, "IotHubUnauthorizedAccess").await;

    assert_eq!(
        device_ids(&hub).await,
        vec!["existing"],
        "nothing was created"
    );
}

#[tokio::test]
async fn accepted_token_forms() {
    let hub = TestHub::start().await;
    let host = format!("localhost:{}", hub.https_addr().port());
    let key = hub.policy_key("iothubowner");

    // Within the 5-minute skew after expiry.
    let recent = mint(&host, &key, now_secs() - 200, Some("iothubowner"));
    let resp = send(&hub, Method::GET, "/devices", Some(&recent), &[], None).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "expired 200 s ago is inside the skew"
    );

    // Node's field order (skn before se) and the Python service SDK's raw '/' in sig.
    let token = mint(&host, &key, now_secs() + 600, Some("iothubowner"));
    let fields: Vec<&str> = token
        .trim_start_matches("SharedAccessSignature ")
        .split('&')
        .collect();
    let get = |name: &str| {
        fields
            .iter()
            .find(|f| f.starts_with(&format!("{name}=")))
            .copied()
            .unwrap()
            .to_owned()
    };
    let node_order = format!(
        "SharedAccessSignature {}&{}&{}&{}",
        get("sr"),
        get("sig"),
        get("skn"),
        get("se")
    );
    let resp = send(&hub, Method::GET, "/devices", Some(&node_order), &[], None).await;
    assert_eq!(resp.status(), StatusCode::OK, "skn before se");
    let raw_slash = node_order.replace("%2F", "/");
    let resp = send(&hub, Method::GET, "/devices", Some(&raw_slash), &[], None).await;
    assert_eq!(resp.status(), StatusCode::OK, "unescaped / in sig");

    // The host without a port, as Node's Registry signs it, and a token scoped to /devices.
    let bare = mint("localhost", &key, now_secs() + 600, Some("iothubowner"));
    let resp = send(&hub, Method::GET, "/devices", Some(&bare), &[], None).await;
    assert_eq!(resp.status(), StatusCode::OK, "sr without port");
    let narrowed = mint(
        &format!("{host}/devices"),
        &key,
        now_secs() + 600,
        Some("iothubowner"),
    );
    let resp = send(&hub, Method::GET, "/devices", Some(&narrowed), &[], None).await;
    assert_eq!(resp.status(), StatusCode::OK, "sr narrowed to /devices");
    let resp = send(
        &hub,
        Method::GET,
        "/statistics/devices",
        Some(&narrowed),
        &[],
        None,
    )
    .await;
    expect_error(resp, 401, "IotHubUnauthorizedAccess").await;

    // Either key of a policy signs.
    let text = std::fs::read(hub.data_dir().join("policies.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&text).unwrap();
    let secondary = doc["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["keyName"] == "registryRead")
        .unwrap()["secondaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = mint(
        &host,
        &SymmetricKey::from_base64(&secondary).unwrap(),
        now_secs() + 600,
        Some("registryRead"),
    );
    let resp = send(&hub, Method::GET, "/devices", Some(&token), &[], None).await;
    assert_eq!(resp.status(), StatusCode::OK, "secondary key");
}

#[tokio::test]
async fn permissions_per_policy() {
    let hub = TestHub::start().await;
    create_device(&hub, "p1").await;
    let read = hub.policy_token("registryRead", 600);
    let write = hub.policy_token("registryReadWrite", 600);
    let service = hub.policy_token("service", 600);

    let resp = send(&hub, Method::GET, "/devices/p1", Some(&read), &[], None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = send(&hub, Method::DELETE, "/devices/p1", Some(&read), &[], None).await;
    expect_error(resp, 401, "IotHubUnauthorizedAccess").await;
    let resp = send(&hub, Method::GET, "/devices/p1", Some(&service), &[], None).await;
    expect_error(resp, 401, "IotHubUnauthorizedAccess").await;
    let resp = send(
        &hub,
        Method::GET,
        "/statistics/service",
        Some(&service),
        &[],
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/p2",
        Some(&write),
        &[],
        Some(r#"{"deviceId":"p2"}"#),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = send(&hub, Method::DELETE, "/devices/p1", Some(&write), &[], None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(device_ids(&hub).await, vec!["p2"]);
}
