//! A whole hub on the cluster engines (PostgreSQL registry and queues, JetStream log), driven
//! through its real endpoints: the hub cannot tell them from the embedded ones.

use std::sync::Arc;
use std::time::Duration;

use ferrohub_auth::{SymmetricKey, mint};
use ferrohub_c2d::AnyQueueStore;
use ferrohub_cluster::testing::TestDatabase;
use ferrohub_cluster::{JetStreamLog, PgDatabase, PgJobStore, PgQueueStore, PgRegistryStore};
use ferrohub_mqtt::codec::ConnectReturnCode;
use ferrohub_mqtt::{Packet, QoS};
use ferrohub_registry::AnyStore;
use ferrohub_server::Backends;
use ferrohub_test_support::mqtt::{MqttClient, Transport};
use ferrohub_test_support::{TestHub, now_secs};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::eventlog_contract::{config, nats_server};

async fn send(hub: &TestHub, method: Method, path: &str, body: Option<&str>) -> reqwest::Response {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut req = hub
        .http()
        .request(
            method,
            format!("{}{path}{sep}api-version=2021-04-12", hub.base_url()),
        )
        .header("Authorization", hub.policy_token("iothubowner", 3600));
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json; charset=utf-8")
            .body(b.to_owned());
    }
    req.send().await.expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_runs_on_postgres_and_jetstream() {
    let server = nats_server().await;
    let database = TestDatabase::create().await.expect("database");
    let db = PgDatabase::new(&database.config()).expect("pool");
    let registry = PgRegistryStore::open(db.clone()).await.expect("registry");
    let queues = PgQueueStore::open(db.clone()).await.expect("queues");
    let scheduled_jobs = PgJobStore::open(db).await.expect("scheduled jobs");
    let events = JetStreamLog::open(config(vec![server.url()], 1))
        .await
        .expect("event log");
    let hub = TestHub::start_with_backends(Backends::new(
        AnyStore::new(registry),
        AnyQueueStore::new(queues),
        Arc::new(events),
        ferrohub_registry::scheduled_jobs::AnyJobStore::new(scheduled_jobs),
    ))
    .await;

    // The registry is PostgreSQL's.
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/e2e",
        Some(r#"{"deviceId":"e2e"}"#),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let device: Value = resp.json().await.expect("json");
    let (client, connection) = tokio_postgres::connect(&database.url(), tokio_postgres::NoTls)
        .await
        .expect("inspect");
    let inspect = tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT doc->>'deviceId' FROM devices WHERE device_id = 'e2e'",
            &[],
        )
        .await
        .expect("the device row");
    assert_eq!(row.get::<_, String>(0), "e2e");

    // Telemetry over MQTT is acknowledged once JetStream stored it, and read back.
    let key = SymmetricKey::from_base64(
        device["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .expect("key"),
    )
    .expect("base64 key");
    let token = mint("localhost/devices/e2e", &key, now_secs() + 600, None);
    let ca = hub.ca_pem();
    let (mut c, ack) = MqttClient::connect(
        Transport::Tls(hub.mqtt_addr(), &ca),
        "e2e",
        "localhost/e2e/?api-version=2021-04-12",
        &token,
        true,
        60,
        None,
    )
    .await;
    assert_eq!(ack.expect("CONNACK").code, ConnectReturnCode::Accepted);
    for i in 0..3 {
        let topic = format!("devices/e2e/messages/events/%24.mid=m{i}&n={i}");
        assert!(
            c.publish(&topic, QoS::AtLeastOnce, format!("t{i}").as_bytes())
                .await
                .is_some(),
            "PUBACK {i}"
        );
    }
    let partitions: Value = send(&hub, Method::GET, "/messages/events/partitions", None)
        .await
        .json()
        .await
        .expect("json");
    let mut bodies = Vec::new();
    for p in partitions["partitionIds"].as_array().expect("ids") {
        let batch: Value = send(
            &hub,
            Method::GET,
            &format!(
                "/messages/events/partitions/{}/events?max=100",
                p.as_str().expect("id")
            ),
            None,
        )
        .await
        .json()
        .await
        .expect("json");
        for e in batch["events"].as_array().expect("events") {
            assert_eq!(e["systemProperties"]["iothub-connection-device-id"], "e2e");
            bodies.push(e["body"].as_str().expect("body").to_owned());
        }
    }
    assert_eq!(
        bodies,
        ["dDA=", "dDE=", "dDI="],
        "the three events, in order"
    );

    // A cloud-to-device message goes through PostgreSQL to the connected device.
    c.subscribe(&[("devices/e2e/messages/devicebound/#", QoS::AtLeastOnce)])
        .await;
    let resp = hub
        .http()
        .post(format!(
            "{}/devices/e2e/messages/deviceBound?api-version=2021-04-12",
            hub.base_url()
        ))
        .header("Authorization", hub.policy_token("iothubowner", 3600))
        .header("iothub-messageid", "c2d-1")
        .body("hello")
        .send()
        .await
        .expect("send C2D");
    assert!(resp.status().is_success(), "{}", resp.status());
    let delivered = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match c.recv().await {
                Some(Packet::Publish(p)) => return p,
                Some(_) => continue,
                None => panic!("the connection closed"),
            }
        }
    })
    .await
    .expect("the C2D message arrives");
    assert_eq!(&delivered.payload[..], b"hello");

    // Deleting the device purges its queue with it (foreign keys) and closes its connection.
    let resp = send(&hub, Method::DELETE, "/devices/e2e", None).await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM c2d_messages WHERE device_id = 'e2e'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0);
    assert!(c.closed_within(Duration::from_secs(10)).await);
    drop(client);
    let _ = inspect.await;
    hub.stop().await;
}
