//! Real `ferrohub serve` processes as the nodes of one cluster, on one PostgreSQL database and
//! one NATS server (the fixtures of `ferrohub-cluster`), each bound to its own loopback address
//! with the same ports, as `docs/deploy.md` describes: a node killed with SIGKILL under QoS 1
//! load loses no acknowledged message, and its devices carry on through the other node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrohub_auth::{SymmetricKey, mint};
use ferrohub_cluster::testing::{NatsServer, TestDatabase, free_port, unique_name};
use ferrohub_mqtt::QoS;
use ferrohub_mqtt::codec::ConnectReturnCode;
use ferrohub_test_support::mqtt::MqttClient;
use ferrohub_test_support::{eventually_ok, now_secs};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The ports every node uses, each on its own address.
#[derive(Clone, Copy)]
struct Ports {
    https: u16,
    mqtt: u16,
    amqp: u16,
}

struct Node {
    child: Child,
    name: String,
    config: PathBuf,
    ip: IpAddr,
    ports: Ports,
    dir: PathBuf,
}

fn spawn(config: &Path, name: &str, ip: IpAddr, ports: Ports, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("node.log"))
        .expect("log file");
    let err = log.try_clone().expect("log file");
    Command::new(env!("CARGO_BIN_EXE_ferrohub"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--node", name, "--bind", &ip.to_string(), "--data-dir"])
        .arg(dir.join("data"))
        .args([
            "--https-port",
            &ports.https.to_string(),
            "--mqtt-port",
            &ports.mqtt.to_string(),
            "--amqp-port",
            &ports.amqp.to_string(),
            "--log",
            "warn",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .expect("ferrohub serve starts")
}

impl Node {
    async fn start(config: &Path, name: &str, ip: IpAddr, ports: Ports, root: &Path) -> Node {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("node dir");
        let node = Node {
            child: spawn(config, name, ip, ports, &dir),
            name: name.to_owned(),
            config: config.to_owned(),
            ip,
            ports,
            dir,
        };
        node.wait_healthy(Duration::from_secs(60)).await;
        node
    }

    /// SIGKILL: no drain, no goodbye.
    async fn kill(&mut self) {
        self.child.start_kill().expect("kill -9");
        let status = self.child.wait().await.expect("reaped");
        assert!(!status.success());
    }

    /// Starts the killed node again on its data directory.
    async fn restart(&mut self) {
        self.child = spawn(&self.config, &self.name, self.ip, self.ports, &self.dir);
        self.wait_healthy(Duration::from_secs(60)).await;
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn ca(&self) -> Vec<u8> {
        std::fs::read(self.data().join("tls/ca.pem")).expect("CA")
    }

    fn mqtt(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.ports.mqtt)
    }

    fn owner(&self) -> String {
        std::fs::read_to_string(self.data().join("owner.connection-string"))
            .expect("owner connection string")
            .trim()
            .to_owned()
    }

    fn http(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&self.ca()).expect("CA");
        reqwest::Client::builder()
            .add_root_certificate(ca)
            .resolve("localhost", SocketAddr::new(self.ip, self.ports.https))
            .build()
            .expect("client")
    }

    fn url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!(
            "https://localhost:{}{path}{sep}api-version=2021-04-12",
            self.ports.https
        )
    }

    fn token(&self) -> String {
        let owner = self.owner();
        let key = owner
            .split(';')
            .find_map(|p| p.strip_prefix("SharedAccessKey="))
            .expect("key");
        let key = SymmetricKey::from_base64(key).expect("key");
        mint(
            &format!("localhost:{}", self.ports.https),
            &key,
            now_secs() + 3600,
            Some("iothubowner"),
        )
    }

    async fn wait_healthy(&self, limit: Duration) {
        eventually_ok(limit, || async {
            if self.data().join("tls/ca.pem").exists() {
                let ok = match self.http().get(self.url("/healthz")).send().await {
                    Ok(r) => r.status().is_success(),
                    Err(_) => false,
                };
                if ok {
                    return Ok(());
                }
            }
            Err(format!(
                "node in {} healthy: {}",
                self.dir.display(),
                std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
            ))
        })
        .await;
    }
}

/// Every event body in the log, read through `node`'s read API.
async fn all_bodies(node: &Node) -> Vec<String> {
    let http = node.http();
    let token = node.token();
    let partitions: Value = http
        .get(node.url("/messages/events/partitions"))
        .header("Authorization", &token)
        .send()
        .await
        .expect("partitions")
        .json()
        .await
        .expect("json");
    let mut bodies = Vec::new();
    for p in partitions["partitionIds"].as_array().expect("ids") {
        let p = p.as_str().expect("id");
        let mut from: Option<u64> = None;
        loop {
            let path = match from {
                None => format!("/messages/events/partitions/{p}/events?max=1000"),
                Some(s) => format!(
                    "/messages/events/partitions/{p}/events?max=1000&sequenceNumber={s}&inclusive=true"
                ),
            };
            let batch: Value = http
                .get(node.url(&path))
                .header("Authorization", &token)
                .send()
                .await
                .expect("read")
                .json()
                .await
                .expect("json");
            let events = batch["events"].as_array().expect("events");
            if events.is_empty() {
                break;
            }
            for e in events {
                let b64 = e["body"].as_str().expect("body");
                let raw = base64_decode(b64);
                bodies.push(String::from_utf8_lossy(&raw).into_owned());
            }
            from = batch["nextSequenceNumber"].as_u64();
        }
    }
    bodies
}

fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
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
    out
}

/// One device sending QoS 1 telemetry as long as `run` holds, reconnecting to the first node
/// that accepts it (starting with `preferred`), resending what was not acknowledged. Returns
/// the acknowledged bodies.
async fn device(
    id: String,
    key: SymmetricKey,
    nodes: Vec<SocketAddr>,
    preferred: usize,
    ca: Vec<u8>,
    run: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<String, usize>>>,
) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut seq = 0u64;
    let mut client: Option<MqttClient> = None;
    let mut attempt = preferred;
    while run.load(Ordering::SeqCst) {
        let Some(c) = client.as_mut() else {
            let addr = nodes[attempt % nodes.len()];
            attempt += 1;
            let token = mint(
                &format!("localhost/devices/{id}"),
                &key,
                now_secs() + 600,
                None,
            );
            match MqttClient::try_connect_tls(
                addr,
                &ca,
                &id,
                &format!("localhost/{id}/?api-version=2021-04-12"),
                &token,
                true,
            )
            .await
            {
                Ok((c, Some(ack))) if ack.code == ConnectReturnCode::Accepted => {
                    client = Some(c);
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
            continue;
        };
        let body = format!("{id}-{seq}");
        match c
            .publish(
                &format!("devices/{id}/messages/events/"),
                QoS::AtLeastOnce,
                body.as_bytes(),
            )
            .await
        {
            Some(_) => {
                bodies.push(body);
                seq += 1;
                if let Ok(mut a) = acked.lock() {
                    *a.entry(id.clone()).or_default() += 1;
                }
            }
            // The node went away (or the connection was taken over): another one.
            None => client = None,
        }
    }
    bodies
}

/// Waits until every device has `n` more acknowledgements than in `since`.
async fn progress(
    acked: &Mutex<BTreeMap<String, usize>>,
    since: &BTreeMap<String, usize>,
    devices: usize,
    n: usize,
    limit: Duration,
) -> BTreeMap<String, usize> {
    eventually_ok(limit, || async {
        let now = acked.lock().expect("lock").clone();
        let moving = now
            .iter()
            .filter(|(d, c)| **c >= since.get(*d).copied().unwrap_or(0) + n)
            .count();
        if moving == devices {
            return Ok(now);
        }
        Err(format!(
            "only {moving} of {devices} devices progressed by {n}: {now:?}"
        ))
    })
    .await
}

/// Two nodes under QoS 1 load from devices spread over both; then, `kills` times (or until
/// `seconds` passed), one node is killed with SIGKILL — each in turn — and, when more kills
/// follow, started again once the devices carried on through the other. Every device must keep
/// getting acknowledgements, and every acknowledged message must be in the log.
async fn kill_nodes_under_load(kills: usize, seconds: u64) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let database = TestDatabase::create().await.expect("database");
    let nats = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .expect("task")
        .expect("nats-server");
    let root = tempfile::tempdir().expect("tempdir");
    let config = root.path().join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\npostgres = {:?}\nnats = [{:?}]\nreplicas = 1\nprefix = {:?}\n",
            database.url(),
            nats.url(),
            unique_name("kill")
        ),
    )
    .expect("config");
    let ports = Ports {
        https: free_port().expect("port"),
        mqtt: free_port().expect("port"),
        amqp: free_port().expect("port"),
    };
    let a = Node::start(
        &config,
        "a",
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        ports,
        root.path(),
    )
    .await;
    let b = Node::start(
        &config,
        "b",
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)),
        ports,
        root.path(),
    )
    .await;
    // Both nodes serve the same hub: the same owner key and CA.
    assert_eq!(
        a.owner(),
        b.owner(),
        "same ports, same host name, same keys"
    );
    assert_eq!(a.ca(), b.ca());

    const DEVICES: usize = 8;
    let mut keys = Vec::new();
    for i in 0..DEVICES {
        let id = format!("k{i}");
        let resp = a
            .http()
            .put(a.url(&format!("/devices/{id}")))
            .header("Authorization", a.token())
            .header("Content-Type", "application/json")
            .body(json!({ "deviceId": id }).to_string())
            .send()
            .await
            .expect("create");
        assert!(resp.status().is_success(), "{}", resp.status());
        let device: Value = resp.json().await.expect("json");
        let key = device["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .expect("key");
        keys.push((id, SymmetricKey::from_base64(key).expect("key")));
    }

    let run = Arc::new(AtomicBool::new(true));
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let nodes = vec![a.mqtt(), b.mqtt()];
    let ca = a.ca();
    let mut tasks = Vec::new();
    for (i, (id, key)) in keys.into_iter().enumerate() {
        tasks.push(tokio::spawn(device(
            id,
            key,
            nodes.clone(),
            i % 2,
            ca.clone(),
            run.clone(),
            acked.clone(),
        )));
    }
    let before = progress(
        &acked,
        &BTreeMap::new(),
        DEVICES,
        5,
        Duration::from_secs(60),
    )
    .await;

    let started = Instant::now();
    let mut last = before;
    let mut nodes_ = [a, b];
    let mut done = 0;
    let mut victim = 0;
    while done < kills || started.elapsed() < Duration::from_secs(seconds) {
        victim = (done + 1) % 2;
        nodes_[victim].kill().await;
        // Every device, including those on the killed node, keeps getting acknowledgements
        // (from the other one).
        last = progress(&acked, &last, DEVICES, 5, Duration::from_secs(60)).await;
        done += 1;
        if done < kills || started.elapsed() < Duration::from_secs(seconds) {
            nodes_[victim].restart().await;
        }
        eprintln!(
            "kill cycle {done}: node {} killed, every device carried on",
            nodes_[victim].name
        );
    }
    let a = &nodes_[1 - victim];
    run.store(false, Ordering::SeqCst);
    let mut sent = Vec::new();
    for t in tasks {
        sent.extend(t.await.expect("device task"));
    }

    // Every acknowledged message is in the log, read through the surviving node.
    eventually_ok(Duration::from_secs(30), || async {
        let stored: BTreeSet<String> = all_bodies(a).await.into_iter().collect();
        let missing: Vec<&String> = sent.iter().filter(|b| !stored.contains(*b)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{} of {} acknowledged messages missing, e.g. {:?}",
            missing.len(),
            sent.len(),
            &missing[..missing.len().min(5)]
        ))
    })
    .await;
    eprintln!(
        "{done} kill cycles; {} messages acknowledged, all in the log",
        sent.len()
    );
    drop(nodes_);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_qos1_load_loses_nothing_acknowledged() {
    kill_nodes_under_load(1, 0).await;
}

/// The long run (`bench/cluster-faults`): nodes killed and restarted in turn under load for
/// `FERROHUB_FAULT_SECONDS` (default 120).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long fault run; bench/cluster-faults runs it"]
async fn fault_kill_and_restart_hub_nodes_in_turn() {
    let seconds = std::env::var("FERROHUB_FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    kill_nodes_under_load(2, seconds).await;
}
