//! The REST abuse matrix: every refusal answers Azure's status, `iothub-errorcode` and legacy
//! body, and changes nothing (the registry, the queues, the event log and the jobs are compared
//! before and after).

use ferrohub_auth::{SymmetricKey, mint};
use ferrohub_test_support::{TestHub, now_secs};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{all_events, create_device, expect_error, send};

/// What a refused request must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    devices: Value,
    modules: Value,
    jobs: Value,
    events: usize,
    groups: Value,
}

async fn snapshot(hub: &TestHub) -> Snapshot {
    let get = |path: &'static str| async move {
        let resp = send(hub, Method::GET, path, None, &[], None).await;
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        resp.json::<Value>().await.unwrap()
    };
    Snapshot {
        // The device view includes each queue's depth and keys, so a queued message or a
        // changed key shows here too.
        devices: get("/devices").await,
        modules: get("/devices/d1/modules").await,
        jobs: get("/jobs").await,
        events: all_events(hub).await.len(),
        groups: get("/messages/events/consumergroups").await,
    }
}

/// A hub with devices d1 and d2, a module d1/m1, and a queued message for d2.
async fn hub_with_identities() -> (TestHub, Value, Value) {
    let hub = TestHub::start().await;
    let d1 = create_device(&hub, "d1").await;
    let d2 = create_device(&hub, "d2").await;
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/d1/modules/m1",
        None,
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = send(
        &hub,
        Method::POST,
        "/devices/d2/messages/deviceBound",
        None,
        &[],
        Some("queued"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    (hub, d1, d2)
}

/// A SAS token of device `d`'s own key.
fn device_token(hub: &TestHub, d: &Value) -> String {
    let id = d["deviceId"].as_str().unwrap();
    let key = SymmetricKey::from_base64(
        d["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    mint(
        &format!("localhost:{}/devices/{id}", hub.https_addr().port()),
        &key,
        now_secs() + 600,
        None,
    )
}

/// Permissions of the built-in policies: RegistryRead, RegistryWrite, ServiceConnect,
/// DeviceConnect.
const POLICIES: [(&str, [bool; 4]); 4] = [
    ("registryRead", [true, false, false, false]),
    ("registryReadWrite", [true, true, false, false]),
    ("service", [false, false, true, false]),
    ("device", [false, false, false, true]),
];

/// A service route, its body and the permission it needs (index into the arrays above).
struct Route {
    method: Method,
    path: &'static str,
    body: Option<&'static str>,
    needs: usize,
}

const READ: usize = 0;
const WRITE: usize = 1;
const SERVICE: usize = 2;

fn routes() -> Vec<Route> {
    let r = |method: Method, path, body, needs| Route {
        method,
        path,
        body,
        needs,
    };
    vec![
        r(Method::GET, "/devices/d1", None, READ),
        r(Method::GET, "/devices", None, READ),
        r(Method::GET, "/devices/d1/modules/m1", None, READ),
        r(Method::GET, "/statistics/devices", None, READ),
        r(Method::GET, "/jobs", None, READ),
        r(
            Method::PUT,
            "/devices/n1",
            Some(r#"{"deviceId":"n1"}"#),
            WRITE,
        ),
        r(
            Method::PUT,
            "/devices/d1",
            Some(r#"{"deviceId":"d1","status":"disabled"}"#),
            WRITE,
        ),
        r(Method::DELETE, "/devices/d1", None, WRITE),
        r(
            Method::POST,
            "/devices",
            Some(r#"[{"id":"n2","importMode":"create"},{"id":"d1","importMode":"delete"}]"#),
            WRITE,
        ),
        r(Method::PUT, "/devices/d1/modules/m2", Some("{}"), WRITE),
        r(Method::DELETE, "/devices/d1/modules/m1", None, WRITE),
        r(
            Method::POST,
            "/jobs/create",
            Some(
                r#"{"type":"import","inputBlobContainerUri":"https://store.example/c","outputBlobContainerUri":"https://store.example/c"}"#,
            ),
            WRITE,
        ),
        r(
            Method::POST,
            "/devices/d1/messages/deviceBound",
            Some("hello"),
            SERVICE,
        ),
        r(Method::DELETE, "/devices/d2/commands", None, SERVICE),
        r(
            Method::POST,
            "/twins/d1/methods",
            Some(r#"{"methodName":"reboot","responseTimeoutInSeconds":5}"#),
            SERVICE,
        ),
        r(Method::GET, "/messages/events/partitions", None, SERVICE),
        r(
            Method::GET,
            "/messages/serviceBound/feedback",
            None,
            SERVICE,
        ),
        r(
            Method::PUT,
            "/messages/events/consumergroups/g1",
            None,
            SERVICE,
        ),
    ]
}

#[tokio::test]
async fn refused_callers_change_nothing_on_any_service_route() {
    let (hub, d1, _d2) = hub_with_identities().await;
    let before = snapshot(&hub).await;
    let host = format!("localhost:{}", hub.https_addr().port());
    let owner_key = hub.policy_key("iothubowner");

    let mut callers: Vec<(String, String, &str)> = vec![
        (
            "a wrong key".into(),
            mint(
                &host,
                &SymmetricKey::generate(),
                now_secs() + 600,
                Some("iothubowner"),
            ),
            "IotHubUnauthorizedAccess",
        ),
        (
            "an expired token".into(),
            mint(&host, &owner_key, now_secs() - 3600, Some("iothubowner")),
            "IotHubUnauthorized",
        ),
        (
            "a device's own token".into(),
            device_token(&hub, &d1),
            "IotHubUnauthorizedAccess",
        ),
    ];
    for (name, _) in POLICIES {
        callers.push((
            format!("policy {name}"),
            hub.policy_token(name, 600),
            "IotHubUnauthorizedAccess",
        ));
    }
    for route in routes() {
        for (who, token, code) in &callers {
            let policy = POLICIES
                .iter()
                .find(|(name, _)| who == &format!("policy {name}"));
            if policy.is_some_and(|(_, perms)| perms[route.needs]) {
                continue; // Allowed: not an abuse case.
            }
            let resp = send(
                &hub,
                route.method.clone(),
                route.path,
                Some(token),
                &[],
                route.body,
            )
            .await;
            let what = format!("{} {} with {who}", route.method, route.path);
            assert_eq!(resp.status().as_u16(), 401, "{what}");
            let message = expect_error(resp, 401, code).await;
            assert!(!message.contains(&owner_key.to_base64()), "{what}");
        }
    }
    assert_eq!(snapshot(&hub).await, before, "refusals changed nothing");
}

#[tokio::test]
async fn a_device_speaks_only_for_itself_on_the_device_api() {
    let (hub, d1, _d2) = hub_with_identities().await;
    let before = snapshot(&hub).await;
    let token = device_token(&hub, &d1);
    for (method, path, body) in [
        (Method::POST, "/devices/d2/messages/events", Some("spoof")),
        (Method::GET, "/devices/d2/messages/deviceBound", None),
        (
            Method::DELETE,
            "/devices/d2/messages/deviceBound/00000000-0000-0000-0000-000000000000",
            None,
        ),
        (
            Method::POST,
            "/devices/d2/messages/deviceBound/00000000-0000-0000-0000-000000000000/abandon",
            None,
        ),
        (
            Method::POST,
            "/devices/d1/modules/m1/messages/events",
            Some("x"),
        ),
    ] {
        let resp = send(&hub, method.clone(), path, Some(&token), &[], body).await;
        let status = resp.status().as_u16();
        assert!(status == 401 || status == 404, "{method} {path}: {status}");
        if status == 401 {
            expect_error(resp, 401, "IotHubUnauthorizedAccess").await;
        } else {
            expect_error(resp, 404, "GenericNotFound").await;
        }
    }
    assert_eq!(
        snapshot(&hub).await,
        before,
        "d2's queue and the log unchanged"
    );
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_in_azure_shape() {
    let hub = TestHub::start().await;
    create_device(&hub, "d1").await;
    let before = snapshot_devices(&hub).await;
    for (method, path) in [
        (Method::GET, "/nope"),
        (Method::POST, "/twins/d1/methods/x/y/z"),
        (Method::GET, "/devices/d1/modules/m1/extra/parts"),
    ] {
        let resp = send(&hub, method, path, None, &[], None).await;
        expect_error(resp, 404, "GenericNotFound").await;
    }
    for (method, path, allowed) in [
        (Method::POST, "/devices/d1", "GET,PUT,DELETE"),
        (Method::PATCH, "/devices/d1", "GET,PUT,DELETE"),
        (Method::DELETE, "/statistics/devices", "GET"),
        (Method::PUT, "/jobs", "GET"),
    ] {
        // With and without a token: the answer does not depend on the caller.
        for token in [None, Some("SharedAccessSignature sr=x&sig=y&se=1&skn=z")] {
            let resp = send(&hub, method.clone(), path, token, &[], Some("{}")).await;
            let allow = resp
                .headers()
                .get("allow")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            for m in allowed.split(',') {
                assert!(allow.contains(m), "{method} {path}: Allow: {allow}");
            }
            let message = expect_error(resp, 405, "InvalidOperation").await;
            assert!(message.contains(method.as_str()), "{message}");
        }
    }
    assert_eq!(snapshot_devices(&hub).await, before);
}

async fn snapshot_devices(hub: &TestHub) -> Value {
    send(hub, Method::GET, "/devices", None, &[], None)
        .await
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn bodies_are_judged_only_after_the_caller_is() {
    let hub = TestHub::start_with_config("[https]\nmax_request_body_bytes = 4096\n").await;
    create_device(&hub, "d1").await;
    let before = snapshot_devices(&hub).await;
    let huge = "x".repeat(64 * 1024);
    let read_only = hub.policy_token("registryRead", 600);
    for (path, method) in [
        ("/devices/n1", Method::PUT),
        ("/devices", Method::POST),
        ("/devices/d1/modules/m1", Method::PUT),
        ("/jobs/create", Method::POST),
        ("/devices/d1/messages/deviceBound", Method::POST),
    ] {
        for body in ["{{{ not json", huge.as_str()] {
            let url = format!("{}{path}?api-version=2021-04-12", hub.base_url());
            let resp = hub
                .http()
                .request(method.clone(), url)
                .header("Content-Type", "application/json")
                .body(body.to_owned())
                .send()
                .await
                .unwrap();
            expect_error(resp, 401, "IotHubUnauthorizedAccess").await;
            if path != "/devices/d1/messages/deviceBound" && path != "/jobs/create" {
                let resp = send(
                    &hub,
                    method.clone(),
                    path,
                    Some(&read_only),
                    &[],
                    Some(body),
                )
                .await;
                expect_error(resp, 401, "IotHubUnauthorizedAccess").await;
            }
        }
        // An authorized caller learns what is wrong with the body (any bytes are a valid
        // cloud-to-device message).
        if path != "/devices/d1/messages/deviceBound" {
            let resp = send(&hub, method.clone(), path, None, &[], Some("{{{ not json")).await;
            expect_error(resp, 400, "ArgumentInvalid").await;
        }
        let resp = send(&hub, method.clone(), path, None, &[], Some(&huge)).await;
        expect_error(resp, 413, "MessageTooLarge").await;
    }
    assert_eq!(snapshot_devices(&hub).await, before);
}

#[tokio::test]
async fn oversized_bodies_get_413_over_http2_too() {
    let hub = TestHub::start_with_config("[https]\nmax_request_body_bytes = 4096\n").await;
    let ca = reqwest::Certificate::from_pem(&hub.ca_pem()).unwrap();
    let h2 = reqwest::Client::builder()
        .add_root_certificate(ca)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let token = hub.policy_token("iothubowner", 600);
    for size in [5000, 1024 * 1024, 16 * 1024 * 1024] {
        let body = json!({"deviceId": "big", "statusReason": "x".repeat(size)}).to_string();
        let resp = h2
            .put(format!(
                "{}/devices/big?api-version=2021-04-12",
                hub.base_url()
            ))
            .header("Authorization", &token)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        expect_error(resp, 413, "MessageTooLarge").await;
    }
    // The connection is still good.
    let resp = h2
        .get(format!("{}/devices?api-version=2021-04-12", hub.base_url()))
        .header("Authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!([]));
}
