//! Several hub nodes in one process on one PostgreSQL database and one NATS server, each with
//! its own data directory and listeners, built from a `[cluster]` configuration as `ferrohub
//! serve` builds them: what one node does reaches the devices on the others.

use std::time::Duration;

use ferrohub_auth::{SymmetricKey, mint};
use ferrohub_cluster::testing::{NatsServer, PrivatePostgres, TestDatabase, unique_name};
use ferrohub_mqtt::codec::ConnectReturnCode;
use ferrohub_mqtt::{Packet, QoS};
use ferrohub_server::config::ConfigToml;
use ferrohub_server::{Config, Overrides};
use ferrohub_test_support::mqtt::{MqttClient, Transport};
use ferrohub_test_support::{TestHub, eventually, now_secs};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::eventlog_contract::nats_server;

/// The engines several nodes share.
pub(crate) struct Engines {
    database: TestDatabase,
    nats: NatsServer,
    prefix: String,
}

impl Engines {
    pub(crate) async fn start() -> Engines {
        Engines::on(TestDatabase::create().await.expect("database")).await
    }

    async fn on(database: TestDatabase) -> Engines {
        Engines {
            database,
            nats: nats_server().await,
            prefix: unique_name("hub"),
        }
    }

    fn config(&self, node: &str) -> Config {
        let toml = format!(
            "[cluster]\npostgres = {:?}\nnats = [{:?}]\nnode = {node:?}\nreplicas = 1\nprefix = {:?}\n",
            self.database.url(),
            self.nats.url(),
            self.prefix
        );
        let raw = ConfigToml::parse(&toml, "test").expect("parses");
        Config::from_toml(raw, &Overrides::default()).expect("valid")
    }

    pub(crate) async fn node(&self, name: &str) -> TestHub {
        let backends = ferrohub_cluster::node::backends(&self.config(name))
            .await
            .expect("the node reaches its engines");
        TestHub::start_with_backends(backends).await
    }
}

/// A service call as `iothubowner`; writes to what exists carry `If-Match: *`.
async fn rest(
    hub: &TestHub,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call(hub, method, path, body, true).await
}

pub(crate) async fn call(
    hub: &TestHub,
    method: Method,
    path: &str,
    body: Option<Value>,
    if_match: bool,
) -> (StatusCode, Value) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut req = hub
        .http()
        .request(
            method,
            format!("{}{path}{sep}api-version=2021-04-12", hub.base_url()),
        )
        .header("Authorization", hub.policy_token("iothubowner", 3600));
    if if_match {
        req = req.header("If-Match", "*");
    }
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json; charset=utf-8")
            .body(b.to_string());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Creates `id` through `hub`; returns its primary key.
pub(crate) async fn create_device(hub: &TestHub, id: &str) -> SymmetricKey {
    let (status, device) = call(
        hub,
        Method::PUT,
        &format!("/devices/{id}"),
        Some(json!({ "deviceId": id })),
        false,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{device}");
    SymmetricKey::from_base64(
        device["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .expect("key"),
    )
    .expect("base64 key")
}

async fn connect(hub: &TestHub, id: &str, key: &SymmetricKey) -> (MqttClient, ConnectReturnCode) {
    let token = mint(
        &format!("localhost/devices/{id}"),
        key,
        now_secs() + 600,
        None,
    );
    let ca = hub.ca_pem();
    let (c, ack) = MqttClient::connect(
        Transport::Tls(hub.mqtt_addr(), &ca),
        id,
        &format!("localhost/{id}/?api-version=2021-04-12"),
        &token,
        true,
        60,
        None,
    )
    .await;
    let code = ack.map_or(ConnectReturnCode::ServerUnavailable, |a| a.code);
    (c, code)
}

/// Connects `id` to `hub`, retrying until `hub` has heard of the identity (it was created
/// through another node) or `limit` passes.
async fn connect_when_known(
    hub: &TestHub,
    id: &str,
    key: &SymmetricKey,
    limit: Duration,
) -> MqttClient {
    eventually(
        limit,
        &format!("{id} accepted by a node that learns of it"),
        || async {
            let (c, code) = connect(hub, id, key).await;
            (code == ConnectReturnCode::Accepted).then_some(c)
        },
    )
    .await
}

/// The next PUBLISH the device gets, within `limit`.
async fn next_publish(c: &mut MqttClient, limit: Duration) -> ferrohub_mqtt::codec::Publish {
    tokio::time::timeout(limit, async {
        loop {
            match c.recv().await {
                Some(Packet::Publish(p)) => return p,
                Some(_) => continue,
                None => panic!("the connection closed"),
            }
        }
    })
    .await
    .expect("a message within the limit")
}

fn shared_key(connection_string: &str) -> String {
    connection_string
        .split(';')
        .find_map(|p| p.strip_prefix("SharedAccessKey="))
        .expect("key")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_policies_certificates_and_identities() {
    let engines = Engines::start().await;
    let a = engines.node("a").await;
    let b = engines.node("b").await;

    // The first node initialised the database; the second took its policies and CA.
    assert_eq!(
        shared_key(&a.owner_connection_string()),
        shared_key(&b.owner_connection_string())
    );
    assert_eq!(a.ca_pem(), b.ca_pem());
    // A node started later on the same database (a restart) keeps them.
    let c = engines.node("c").await;
    assert_eq!(
        shared_key(&a.owner_connection_string()),
        shared_key(&c.owner_connection_string())
    );

    // A device created through one node connects through another; the service API of any
    // node sees it connected.
    let key = create_device(&a, "shared-1").await;
    let _device = connect_when_known(&b, "shared-1", &key, Duration::from_secs(5)).await;
    eventually(
        Duration::from_secs(5),
        "node c sees the connection on node b",
        || async {
            let (status, device) = rest(&c, Method::GET, "/devices/shared-1", None).await;
            assert_eq!(status, StatusCode::OK);
            (device["connectionState"] == "Connected").then_some(())
        },
    )
    .await;

    // Consumer groups and checkpoints written through one node are read through another.
    let (status, _) = call(
        &a,
        Method::PUT,
        "/messages/events/consumergroups/analytics",
        None,
        false,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = call(
        &b,
        Method::PUT,
        "/messages/events/consumergroups/analytics/partitions/1/checkpoint",
        Some(json!({"sequenceNumber": 41, "offset": "41"})),
        false,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, cps) = call(
        &c,
        Method::GET,
        "/messages/events/consumergroups/analytics/checkpoints",
        None,
        false,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{cps}");
    assert_eq!(cps["1"]["sequenceNumber"], 41, "{cps}");
    let (status, _) = call(
        &c,
        Method::PUT,
        "/messages/events/consumergroups/analytics",
        None,
        false,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the group exists for every node");

    c.stop().await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_c2d_methods_desired_and_revocation_cross_nodes() {
    let engines = Engines::start().await;
    let a = engines.node("a").await;
    let b = engines.node("b").await;
    let key = create_device(&a, "roamer").await;

    // One connection per identity across the cluster: the newer one, on node a, closes the
    // one on node b.
    let mut on_b = connect_when_known(&b, "roamer", &key, Duration::from_secs(5)).await;
    let mut on_a = connect_when_known(&a, "roamer", &key, Duration::from_secs(5)).await;
    assert!(
        on_b.closed_within(Duration::from_secs(5)).await,
        "the older connection on the other node is closed"
    );

    // A cloud-to-device message sent through node b reaches the device on node a at once
    // (nothing polls the queue: only the change feed wakes the connection).
    on_a.subscribe(&[
        ("devices/roamer/messages/devicebound/#", QoS::AtLeastOnce),
        ("$iothub/methods/POST/#", QoS::AtMostOnce),
        ("$iothub/twin/PATCH/properties/desired/#", QoS::AtMostOnce),
    ])
    .await;
    let resp = b
        .http()
        .post(format!(
            "{}/devices/roamer/messages/deviceBound?api-version=2021-04-12",
            b.base_url()
        ))
        .header("Authorization", b.policy_token("iothubowner", 3600))
        .header("iothub-messageid", "c2d-across")
        .body("across")
        .send()
        .await
        .expect("send C2D");
    assert!(resp.status().is_success(), "{}", resp.status());
    let c2d = next_publish(&mut on_a, Duration::from_secs(5)).await;
    assert_eq!(&c2d.payload[..], b"across");
    assert!(
        c2d.topic
            .as_str()
            .starts_with("devices/roamer/messages/devicebound/")
    );
    if let Some(pkid) = c2d.pkid {
        on_a.send(Packet::PubAck(ferrohub_mqtt::codec::PubAck { pkid }))
            .await;
    }

    // A direct method invoked through node b runs on node a's connection.
    let call = tokio::spawn({
        let http = b.http();
        let url = format!(
            "{}/twins/roamer/methods?api-version=2021-04-12",
            b.base_url()
        );
        let token = b.policy_token("iothubowner", 3600);
        async move {
            let resp = http
                .post(url)
                .header("Authorization", token)
                .header("Content-Type", "application/json")
                .body(
                    json!({"methodName": "reboot", "payload": {"delay": 1}, "responseTimeoutInSeconds": 10})
                        .to_string(),
                )
                .send()
                .await
                .expect("invoke");
            let status = resp.status();
            (status, resp.json::<Value>().await.expect("json"))
        }
    });
    let request = next_publish(&mut on_a, Duration::from_secs(10)).await;
    assert!(
        request
            .topic
            .as_str()
            .starts_with("$iothub/methods/POST/reboot/?$rid="),
        "{}",
        request.topic
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&request.payload).expect("json"),
        json!({"delay": 1})
    );
    let rid = request
        .topic
        .as_str()
        .rsplit("$rid=")
        .next()
        .expect("rid")
        .to_owned();
    on_a.publish(
        &format!("$iothub/methods/res/200/?$rid={rid}"),
        QoS::AtMostOnce,
        br#"{"rebooted":true}"#,
    )
    .await;
    let (status, result) = call.await.expect("task");
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(
        result,
        json!({"status": 200, "payload": {"rebooted": true}})
    );

    // A desired-property patch written through node b is sent by node a.
    let (status, twin) = rest(
        &b,
        Method::PATCH,
        "/twins/roamer",
        Some(json!({"properties": {"desired": {"interval": 5}}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{twin}");
    let patch = next_publish(&mut on_a, Duration::from_secs(5)).await;
    assert!(
        patch
            .topic
            .as_str()
            .starts_with("$iothub/twin/PATCH/properties/desired/"),
        "{}",
        patch.topic
    );
    let body: Value = serde_json::from_slice(&patch.payload).expect("json");
    assert_eq!(body["interval"], 5);

    // Disabling the device through node b closes its connection on node a within a second or
    // so, and node a refuses it afterwards.
    let disabled_at = Instant::now();
    let (status, device) = rest(
        &b,
        Method::PUT,
        "/devices/roamer",
        Some(json!({"deviceId": "roamer", "status": "disabled"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{device}");
    assert!(
        on_a.closed_within(Duration::from_secs(3)).await,
        "revoked on the other node"
    );
    assert!(disabled_at.elapsed() < Duration::from_secs(3));
    let (_, code) = connect(&a, "roamer", &key).await;
    assert_ne!(code, ConnectReturnCode::Accepted);

    b.stop().await;
    a.stop().await;
}

/// `/healthz` of `hub`: the status and the reason.
async fn health(hub: &TestHub) -> (StatusCode, String) {
    let resp = hub
        .http()
        .get(format!("{}/healthz", hub.base_url()))
        .send()
        .await
        .expect("healthz");
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

async fn wait_health(hub: &TestHub, want: StatusCode, limit: Duration) -> String {
    eventually(limit, &format!("/healthz answers {want}"), || async {
        let (status, text) = health(hub).await;
        (status == want).then_some(text)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_ride_out_a_postgres_restart() {
    let pg = tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .expect("task")
        .expect("private PostgreSQL");
    let database = TestDatabase::create_on(&pg.base()).await.expect("database");
    let engines = Engines::on(database).await;
    let a = engines.node("a").await;
    let b = engines.node("b").await;
    let key = create_device(&a, "steady").await;
    let mut device = connect_when_known(&b, "steady", &key, Duration::from_secs(5)).await;
    wait_health(&a, StatusCode::OK, Duration::from_secs(5)).await;

    tokio::task::block_in_place(|| pg.stop()).expect("stop PostgreSQL");

    // Registry calls fail with Azure's error body; the nodes say what is wrong; a connected
    // device's telemetry is still acknowledged (JetStream keeps it).
    let (status, body) = call(
        &a,
        Method::PUT,
        "/devices/during",
        Some(json!({"deviceId": "during"})),
        false,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["Message"]
            .as_str()
            .is_some_and(|m| m.starts_with("ErrorCode:ServiceUnavailable;")),
        "{body}"
    );
    let why = wait_health(&a, StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(10)).await;
    assert!(why.contains("PostgreSQL"), "{why}");
    assert!(
        device
            .publish(
                "devices/steady/messages/events/",
                QoS::AtLeastOnce,
                b"while the database is down"
            )
            .await
            .is_some(),
        "telemetry acknowledged without PostgreSQL"
    );

    tokio::task::block_in_place(|| pg.start_again()).expect("start PostgreSQL");
    wait_health(&a, StatusCode::OK, Duration::from_secs(20)).await;
    wait_health(&b, StatusCode::OK, Duration::from_secs(20)).await;
    // Writes work again, and the other node hears of them.
    let key = eventually(
        Duration::from_secs(20),
        "creating a device works again",
        || async {
            let (status, device) = call(
                &a,
                Method::PUT,
                "/devices/after",
                Some(json!({"deviceId": "after"})),
                false,
            )
            .await;
            (status == StatusCode::OK).then(|| {
                SymmetricKey::from_base64(
                    device["authentication"]["symmetricKey"]["primaryKey"]
                        .as_str()
                        .expect("key"),
                )
                .expect("key")
            })
        },
    )
    .await;
    let _after = connect_when_known(&b, "after", &key, Duration::from_secs(5)).await;
    b.stop().await;
    a.stop().await;
    drop(pg);
}

/// A node that has not heard of an identity yet (it was created or given new keys through
/// another node a moment ago) reads it from the database before refusing it: a device connects
/// through any node as soon as its creation or new keys are acknowledged, and a C2D message for
/// it is taken by any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reads_an_identity_it_has_not_heard_of_before_refusing_it() {
    let engines = Engines::start().await;
    let a = engines.node("a").await;
    let b = engines.node("b").await;

    for i in 0..3 {
        let id = format!("fresh-{i}");
        let key = create_device(&a, &id).await;
        let (device, code) = connect(&b, &id, &key).await;
        assert_eq!(
            code,
            ConnectReturnCode::Accepted,
            "{id} through node b right after its creation through node a"
        );
        drop(device);

        let id = format!("fresh-c2d-{i}");
        create_device(&a, &id).await;
        let resp = b
            .http()
            .post(format!(
                "{}/devices/{id}/messages/deviceBound?api-version=2021-04-12",
                b.base_url()
            ))
            .header("Authorization", b.policy_token("iothubowner", 3600))
            .body("hello")
            .send()
            .await
            .expect("request");
        assert!(
            resp.status().is_success(),
            "C2D for {id} through node b right after its creation through node a: {}",
            resp.status()
        );
    }

    // New keys written through node a are taken by node b at once.
    create_device(&a, "rekeyed").await;
    let (status, device) = rest(
        &a,
        Method::PUT,
        "/devices/rekeyed",
        Some(json!({
            "deviceId": "rekeyed",
            "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "", "secondaryKey": ""}}
        })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{device}");
    let key = SymmetricKey::from_base64(
        device["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .expect("key"),
    )
    .expect("base64 key");
    let (_device, code) = connect(&b, "rekeyed", &key).await;
    assert_eq!(
        code,
        ConnectReturnCode::Accepted,
        "the new key through node b"
    );

    b.stop().await;
    a.stop().await;
}
