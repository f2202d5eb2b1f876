//! Presence every node shows the same (`connectionState`, `connectionStateUpdatedTime`,
//! `lastActivityTime` through GET, twins, queries and lists), and the fence: a node cut off
//! from NATS stops serving devices, they move to a healthy node, and it serves them again once
//! NATS is back. Hub nodes in one process, on real PostgreSQL and NATS servers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ferrohub_amqp::performative::{Performative, Role, SaslCode, Source, Target};
use ferrohub_auth::{SymmetricKey, mint};
use ferrohub_cluster::testing::{
    NatsCluster, NatsServer, PrivatePostgres, TestDatabase, unique_name,
};
use ferrohub_mqtt::QoS;
use ferrohub_mqtt::codec::ConnectReturnCode;
use ferrohub_server::config::ConfigToml;
use ferrohub_server::{Config, Overrides};
use ferrohub_test_support::amqp::{AmqpClientError, closed_within, new_attach, send_frame};
use ferrohub_test_support::mqtt::{MqttClient, Transport};
use ferrohub_test_support::{TestHub, eventually, now_secs};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::eventlog_contract::nats_server;
use crate::nodes::create_device;

/// Settings of every node here: presence written within 200 ms, fenced after 1 s without NATS.
const TIMING: &str = "presence_interval = \"200ms\"\nnats_grace = \"1s\"\n";

/// A node of the hub `prefix` on `database`, reaching NATS through `nats`.
async fn node(
    database: &TestDatabase,
    nats: &[String],
    prefix: &str,
    replicas: usize,
    name: &str,
) -> TestHub {
    node_with(database, nats, prefix, replicas, name, "").await
}

/// [`node`] with more `[cluster]` settings.
async fn node_with(
    database: &TestDatabase,
    nats: &[String],
    prefix: &str,
    replicas: usize,
    name: &str,
    more: &str,
) -> TestHub {
    let nats: Vec<String> = nats.iter().map(|u| format!("{u:?}")).collect();
    let toml = format!(
        "[cluster]\npostgres = {:?}\nnats = [{}]\nnode = {name:?}\nreplicas = {replicas}\nprefix = {prefix:?}\n{TIMING}{more}",
        database.url(),
        nats.join(", "),
    );
    let raw = ConfigToml::parse(&toml, "test").expect("parses");
    let config = Config::from_toml(raw, &Overrides::default()).expect("valid");
    let backends = ferrohub_cluster::node::backends(&config)
        .await
        .expect("the node reaches its engines");
    TestHub::start_with_backends(backends).await
}

async fn call(
    hub: &TestHub,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    crate::nodes::call(hub, method, path, body, false).await
}

fn device_token(id: &str, key: &SymmetricKey) -> String {
    mint(
        &format!("localhost/devices/{id}"),
        key,
        now_secs() + 600,
        None,
    )
}

async fn connect(hub: &TestHub, id: &str, key: &SymmetricKey) -> (MqttClient, ConnectReturnCode) {
    let ca = hub.ca_pem();
    let (c, ack) = MqttClient::connect(
        Transport::Tls(hub.mqtt_addr(), &ca),
        id,
        &format!("localhost/{id}/?api-version=2021-04-12"),
        &device_token(id, key),
        true,
        60,
        None,
    )
    .await;
    (
        c,
        ack.map_or(ConnectReturnCode::ServerUnavailable, |a| a.code),
    )
}

/// Connects `id` to `hub` once `hub` accepts it, within `limit`.
async fn connect_accepted(
    hub: &TestHub,
    id: &str,
    key: &SymmetricKey,
    limit: Duration,
) -> MqttClient {
    eventually(limit, &format!("{id} accepted"), || async {
        let (c, code) = connect(hub, id, key).await;
        (code == ConnectReturnCode::Accepted).then_some(c)
    })
    .await
}

/// A time the API shows (`0001-01-01T00:00:00` for never).
fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// What node `hub` shows of `id`: (`connectionState`, `lastActivityTime`,
/// `connectionStateUpdatedTime`) from GET /devices/{id}.
async fn shown(hub: &TestHub, id: &str) -> (String, Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let (status, d) = call(hub, Method::GET, &format!("/devices/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    (
        d["connectionState"].as_str().unwrap_or_default().to_owned(),
        time(&d["lastActivityTime"]),
        time(&d["connectionStateUpdatedTime"]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_shows_the_same_presence() {
    let database = TestDatabase::create().await.expect("database");
    let nats = nats_server().await;
    let prefix = unique_name("hub");
    let a = node(&database, &[nats.url()], &prefix, 1, "a").await;
    let b = node(&database, &[nats.url()], &prefix, 1, "b").await;
    let key = create_device(&a, "walker").await;
    let (status, _) = call(
        &a,
        Method::PUT,
        "/devices/walker/modules/sensor",
        Some(json!({"deviceId": "walker", "moduleId": "sensor"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Never connected: the same on both nodes.
    for hub in [&a, &b] {
        let (state, activity, _) = shown(hub, "walker").await;
        assert_eq!(state, "Disconnected");
        assert_eq!(activity, None, "never active");
    }

    // The device connects to node a: node b shows it connected.
    let mut device = connect_accepted(&a, "walker", &key, Duration::from_secs(10)).await;
    let (connected_at, state_updated) = eventually(
        Duration::from_secs(10),
        "node b shows the device connected",
        || async {
            let (state, activity, updated) = shown(&b, "walker").await;
            (state == "Connected").then(|| (activity.expect("activity"), updated))
        },
    )
    .await;
    assert!(state_updated.is_some(), "connectionStateUpdatedTime set");

    // Telemetry through node a moves lastActivityTime on node b, and both nodes agree.
    for i in 0..5 {
        let ack = tokio::time::timeout(
            Duration::from_secs(20),
            device.publish(
                "devices/walker/messages/events/",
                QoS::AtLeastOnce,
                format!("reading {i}").as_bytes(),
            ),
        )
        .await
        .expect("PUBACK in time");
        assert!(ack.is_some(), "telemetry acknowledged");
    }
    let active = eventually(
        Duration::from_secs(10),
        "node b shows the telemetry's activity",
        || async {
            let (state, activity, _) = shown(&b, "walker").await;
            assert_eq!(state, "Connected");
            activity.filter(|t| *t > connected_at)
        },
    )
    .await;
    eventually(Duration::from_secs(10), "both nodes agree", || async {
        let on_a = shown(&a, "walker").await;
        let on_b = shown(&b, "walker").await;
        (on_a == on_b).then_some(())
    })
    .await;

    // Twins, queries and the registry list of node b say the same.
    let (status, twin) = call(&b, Method::GET, "/twins/walker", None).await;
    assert_eq!(status, StatusCode::OK, "{twin}");
    assert_eq!(twin["connectionState"], "Connected", "{twin}");
    assert!(
        time(&twin["lastActivityTime"]).is_some_and(|t| t >= active),
        "{twin}"
    );
    let since = connected_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (status, rows) = call(
        &b,
        Method::POST,
        "/devices/query",
        Some(json!({"query": format!(
            "SELECT deviceId, connectionState, lastActivityTime FROM devices \
             WHERE connectionState = 'Connected' AND lastActivityTime > '{since}'"
        )})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    let rows = rows.as_array().expect("rows");
    assert!(rows.iter().any(|r| r["deviceId"] == "walker"), "{rows:?}");
    let (status, list) = call(&b, Method::GET, "/devices", None).await;
    assert_eq!(status, StatusCode::OK);
    let listed = list
        .as_array()
        .expect("list")
        .iter()
        .find(|d| d["deviceId"] == "walker")
        .cloned()
        .expect("listed");
    assert_eq!(listed["connectionState"], "Connected", "{listed}");
    assert!(time(&listed["lastActivityTime"]).is_some_and(|t| t >= active));
    let (_, stats) = call(&b, Method::GET, "/statistics/service", None).await;
    assert_eq!(stats["connectedDeviceCount"], 1, "{stats}");

    // A module connected to node b shows on node a.
    let module_token = mint(
        "localhost/devices/walker/modules/sensor",
        &SymmetricKey::from_base64(
            call(&a, Method::GET, "/devices/walker/modules/sensor", None)
                .await
                .1["authentication"]["symmetricKey"]["primaryKey"]
                .as_str()
                .expect("key"),
        )
        .expect("key"),
        now_secs() + 600,
        None,
    );
    let ca = b.ca_pem();
    let (_module, ack) = MqttClient::connect(
        Transport::Tls(b.mqtt_addr(), &ca),
        "walker/sensor",
        "localhost/walker/sensor/?api-version=2021-04-12",
        &module_token,
        true,
        60,
        None,
    )
    .await;
    assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::Accepted));
    eventually(
        Duration::from_secs(10),
        "node a shows the module connected",
        || async {
            let (_, m) = call(&a, Method::GET, "/devices/walker/modules/sensor", None).await;
            (m["connectionState"] == "Connected").then_some(())
        },
    )
    .await;

    // The device disconnects: every node shows it disconnected, with its last activity.
    device.send(ferrohub_mqtt::Packet::Disconnect).await;
    assert!(device.closed_within(Duration::from_secs(5)).await);
    for hub in [&a, &b] {
        eventually(
            Duration::from_secs(10),
            "the device shows disconnected",
            || async {
                let (state, activity, updated) = shown(hub, "walker").await;
                (state == "Disconnected").then(|| {
                    assert!(activity.is_some_and(|t| t >= active));
                    assert!(updated.is_some_and(|t| t >= active));
                })
            },
        )
        .await;
    }
    let (_, rows) = call(
        &a,
        Method::POST,
        "/devices/query",
        Some(json!({"query": "SELECT deviceId FROM devices WHERE connectionState = 'Connected'"})),
    )
    .await;
    assert_eq!(rows, json!([]), "no device connected any more");

    b.stop().await;
    a.stop().await;
    drop(nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_activity_counts_and_a_stopped_node_leaves_nothing_connected() {
    let database = TestDatabase::create().await.expect("database");
    let nats: NatsServer = nats_server().await;
    let prefix = unique_name("hub");
    let a = node(&database, &[nats.url()], &prefix, 1, "a").await;
    let b = node(&database, &[nats.url()], &prefix, 1, "b").await;
    let key = create_device(&a, "poster").await;

    // A device that only uses HTTPS: its telemetry counts as activity, it is never connected.
    let token = device_token("poster", &key);
    eventually(
        Duration::from_secs(10),
        "HTTPS telemetry accepted",
        || async {
            let resp = a
                .http()
                .post(format!(
                    "{}/devices/poster/messages/events?api-version=2021-04-12",
                    a.base_url()
                ))
                .header("Authorization", &token)
                .body("over https")
                .send()
                .await
                .expect("send");
            resp.status().is_success().then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "node b shows the HTTPS activity",
        || async {
            let (state, activity, updated) = shown(&b, "poster").await;
            assert_eq!(state, "Disconnected");
            activity.map(|_| assert_eq!(updated, None, "never connected"))
        },
    )
    .await;

    // A device connected to node a, which stops: node b does not show it connected.
    let _device = connect_accepted(&a, "poster", &key, Duration::from_secs(10)).await;
    eventually(Duration::from_secs(10), "connected on b", || async {
        (shown(&b, "poster").await.0 == "Connected").then_some(())
    })
    .await;
    a.stop().await;
    eventually(
        Duration::from_secs(30),
        "the stopped node's device shows disconnected",
        || async { (shown(&b, "poster").await.0 == "Disconnected").then_some(()) },
    )
    .await;
    b.stop().await;
    drop(nats);
}

/// `/healthz` of `hub`.
async fn health(hub: &TestHub) -> StatusCode {
    hub.http()
        .get(format!("{}/healthz", hub.base_url()))
        .send()
        .await
        .map_or(StatusCode::INTERNAL_SERVER_ERROR, |r| r.status())
}

/// Every event body in the hub, read through `hub`'s read API; `None` while a read is refused
/// (503 while JetStream moves a partition's leader).
async fn all_bodies(hub: &TestHub) -> Option<Vec<String>> {
    let (status, partitions) = call(hub, Method::GET, "/messages/events/partitions", None).await;
    if status == StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let mut bodies = Vec::new();
    for p in partitions["partitionIds"].as_array().expect("ids") {
        let p = p.as_str().expect("id");
        let (status, batch) = call(
            hub,
            Method::GET,
            &format!("/messages/events/partitions/{p}/events?max=1000"),
            None,
        )
        .await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return None;
        }
        assert_eq!(status, StatusCode::OK, "{batch}");
        for e in batch["events"].as_array().expect("events") {
            let body = e["body"].as_str().expect("body");
            bodies.push(decode_base64(body));
        }
    }
    Some(bodies)
}

fn decode_base64(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_nats_fences_itself_and_comes_back() {
    let mut cluster = tokio::task::spawn_blocking(|| NatsCluster::start_unadvertised(3))
        .await
        .expect("task")
        .expect("three NATS servers");
    let urls = cluster.urls();
    let database = TestDatabase::create().await.expect("database");
    let prefix = unique_name("hub");
    // Node g reaches NATS through the second and third servers; node f only through the first.
    let g = node(&database, &urls[1..], &prefix, 3, "g").await;
    let f = node(&database, &urls[..1], &prefix, 3, "f").await;
    let key = create_device(&g, "mover").await;
    let mut on_f = connect_accepted(&f, "mover", &key, Duration::from_secs(10)).await;
    let ack = tokio::time::timeout(
        Duration::from_secs(20),
        on_f.publish(
            "devices/mover/messages/events/",
            QoS::AtLeastOnce,
            b"before",
        ),
    )
    .await
    .expect("in time");
    assert!(ack.is_some(), "acknowledged while NATS is whole");
    assert_eq!(health(&f).await, StatusCode::OK);

    // Node f loses its only NATS server: it closes the device's connection and refuses it.
    tokio::task::block_in_place(|| cluster.server(0).expect("server").kill()).expect("kill");
    assert!(
        on_f.closed_within(Duration::from_secs(15)).await,
        "the fenced node closes its device connections"
    );
    let (_, code) = connect(&f, "mover", &key).await;
    assert_eq!(code, ConnectReturnCode::ServerUnavailable, "CONNACK 3");
    let resp = f
        .http()
        .post(format!(
            "{}/devices/mover/messages/events?api-version=2021-04-12",
            f.base_url()
        ))
        .header("Authorization", device_token("mover", &key))
        .body("refused")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["Message"]
            .as_str()
            .is_some_and(|m| m.starts_with("ErrorCode:ServiceUnavailable;")),
        "{body}"
    );
    assert_eq!(health(&f).await, StatusCode::SERVICE_UNAVAILABLE);
    // AMQP: SASL PLAIN with the device's token is a temporary failure; a device link on an
    // anonymous connection closes the connection with amqp:internal-error.
    let plain = format!("\0mover@sas.localhost\0{}", device_token("mover", &key));
    match f.amqp_sasl("PLAIN", Some(plain.as_bytes())).await {
        Err(AmqpClientError::Sasl { code, .. }) => assert_eq!(code, SaslCode::SysTemp),
        Err(e) => panic!("SASL PLAIN failed otherwise: {e}"),
        Ok(_) => panic!("SASL PLAIN accepted on a fenced node"),
    }
    let mut amqp = f.amqp_sasl("ANONYMOUS", None).await.expect("anonymous");
    send_frame(
        &mut amqp,
        Performative::Attach(Box::new(new_attach(
            "events",
            Role::Sender,
            Source::address("events"),
            Target::address("/devices/mover/messages/events"),
        ))),
        b"",
    )
    .await;
    let error = closed_within(&mut amqp, Duration::from_secs(10))
        .await
        .expect("the connection is closed")
        .expect("with an error");
    assert_eq!(error.condition.as_str(), "amqp:internal-error", "{error:?}");

    // The device moves to node g: its telemetry is acknowledged and readable.
    let mut n = 0;
    let sent = eventually(
        Duration::from_secs(60),
        "telemetry acknowledged on the healthy node",
        || {
            n += 1;
            let body = format!("after {n}");
            let (g, key) = (&g, &key);
            async move {
                let (mut c, code) = connect(g, "mover", key).await;
                if code != ConnectReturnCode::Accepted {
                    return None;
                }
                let ack = tokio::time::timeout(
                    Duration::from_secs(20),
                    c.publish(
                        "devices/mover/messages/events/",
                        QoS::AtLeastOnce,
                        body.as_bytes(),
                    ),
                )
                .await
                .ok()
                .flatten();
                ack.map(|_| (body, c))
            }
        },
    )
    .await;
    let (body, _on_g) = sent;
    eventually(
        Duration::from_secs(30),
        "the acknowledged telemetry is readable",
        || async {
            let bodies = all_bodies(&g).await?;
            assert!(bodies.iter().any(|b| b == "before"), "{bodies:?}");
            bodies.contains(&body).then_some(())
        },
    )
    .await;

    // The server comes back: node f serves devices again.
    tokio::task::block_in_place(|| {
        let server = cluster.server(0).expect("server");
        server.start_again()?;
        server.wait_healthy(Duration::from_secs(60))
    })
    .expect("restart");
    eventually(Duration::from_secs(30), "/healthz of f is 200", || async {
        (health(&f).await == StatusCode::OK).then_some(())
    })
    .await;
    let _back = connect_accepted(&f, "mover", &key, Duration::from_secs(20)).await;

    f.stop().await;
    g.stop().await;
    drop(cluster);
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_800_000_000 + secs, 0).expect("time")
}

fn update(
    device: &str,
    state: Option<(bool, &str, i64, bool)>,
    activity: i64,
) -> ferrohub_server::presence::PresenceUpdate {
    ferrohub_server::presence::PresenceUpdate {
        key: (device.to_owned(), None),
        state: state.map(
            |(connected, node, t, claims)| ferrohub_server::presence::StateChange {
                connected,
                node: node.to_owned(),
                at: at(t),
                claims,
            },
        ),
        last_activity: at(activity),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_presence_store_keeps_the_newest_connection_and_forgets_dead_nodes() {
    use ferrohub_cluster::{PgDatabase, PgPresenceStore};
    use ferrohub_server::presence::PresenceStore;

    let database = TestDatabase::create().await.expect("database");
    let db = PgDatabase::new(&database.config()).expect("pool");
    let a = PgPresenceStore::open(db.clone(), "a")
        .await
        .expect("open a");
    let b = PgPresenceStore::open(db.clone(), "b")
        .await
        .expect("open b");
    let read = |store: &PgPresenceStore, d: &str| {
        let store = store.clone();
        let d = d.to_owned();
        async move {
            store
                .read(vec![(d, None)])
                .await
                .expect("read")
                .pop()
                .flatten()
        }
    };

    // Connected on a, then on b; a's older connection ends late: b's stays.
    a.write(vec![update("d", Some((true, "a", 10, true)), 10)])
        .await
        .expect("write");
    b.write(vec![update("d", Some((true, "b", 20, true)), 20)])
        .await
        .expect("write");
    a.write(vec![update("d", Some((false, "a", 30, false)), 25)])
        .await
        .expect("write");
    let p = read(&a, "d").await.expect("presence");
    assert!(p.connected, "the newer connection on b is not hidden");
    assert_eq!(p.state_updated, Some(at(20)));
    assert_eq!(p.last_activity, at(25), "a's activity still counts");

    // A connect older than the stored state, written late (a retried batch), changes nothing.
    a.write(vec![update("d", Some((true, "a", 15, true)), 15)])
        .await
        .expect("write");
    let p = read(&b, "d").await.expect("presence");
    assert_eq!(p.state_updated, Some(at(20)));
    assert_eq!(p.last_activity, at(25), "activity never goes back");

    // Activity alone, for an identity never connected (HTTPS), and for several at once.
    b.write(vec![
        update("d", None, 40),
        update("h", None, 41),
        update("e", Some((true, "b", 42, true)), 42),
    ])
    .await
    .expect("write");
    let all = b
        .read(vec![
            ("d".into(), None),
            ("nobody".into(), None),
            ("h".into(), None),
        ])
        .await
        .expect("read");
    assert_eq!(all[0].map(|p| p.last_activity), Some(at(40)));
    assert_eq!(all[1], None, "never seen");
    let h = all[2].expect("https device");
    assert!(!h.connected);
    assert_eq!(h.state_updated, None);
    assert_eq!(b.connected_devices().await.expect("count"), 2);

    // Node b stops beating: its connections read as disconnected.
    let client = db.pool().get().await.expect("connection");
    client
        .execute(
            "UPDATE presence_nodes SET seen_at = now() - interval '1 minute' WHERE node = 'b'",
            &[],
        )
        .await
        .expect("age b");
    assert!(!read(&a, "d").await.expect("presence").connected);
    assert_eq!(a.connected_devices().await.expect("count"), 0);
    b.heartbeat().await.expect("beat");
    assert!(read(&a, "d").await.expect("presence").connected);

    // A node restarted under the same name ends what it left connected; deleting forgets.
    let b = PgPresenceStore::open(db.clone(), "b")
        .await
        .expect("reopen b");
    assert!(!read(&b, "e").await.expect("presence").connected);
    b.forget("e".into()).await.expect("forget");
    assert_eq!(read(&b, "e").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_postgres_past_its_grace_fences_itself_until_it_is_back() {
    let pg = tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .expect("task")
        .expect("private PostgreSQL");
    let database = TestDatabase::create_on(&pg.base()).await.expect("database");
    let nats = nats_server().await;
    let prefix = unique_name("hub");
    let a = node_with(
        &database,
        &[nats.url()],
        &prefix,
        1,
        "a",
        "postgres_grace = \"1s\"\n",
    )
    .await;
    let key = create_device(&a, "patient").await;
    let mut device = connect_accepted(&a, "patient", &key, Duration::from_secs(10)).await;

    tokio::task::block_in_place(|| pg.stop()).expect("stop PostgreSQL");
    assert!(
        device.closed_within(Duration::from_secs(15)).await,
        "the node fences itself once PostgreSQL is away for longer than its grace"
    );
    let (_, code) = connect(&a, "patient", &key).await;
    assert_eq!(code, ConnectReturnCode::ServerUnavailable, "CONNACK 3");
    assert_eq!(health(&a).await, StatusCode::SERVICE_UNAVAILABLE);

    tokio::task::block_in_place(|| pg.start_again()).expect("start PostgreSQL");
    eventually(Duration::from_secs(30), "/healthz of a is 200", || async {
        (health(&a).await == StatusCode::OK).then_some(())
    })
    .await;
    let _back = connect_accepted(&a, "patient", &key, Duration::from_secs(20)).await;
    eventually(
        Duration::from_secs(20),
        "presence written again once PostgreSQL is back",
        || async {
            let (status, d) = call(&a, Method::GET, "/devices/patient", None).await;
            (status == StatusCode::OK && d["connectionState"] == "Connected").then_some(())
        },
    )
    .await;
    a.stop().await;
    drop(nats);
    drop(pg);
}
