//! Jobs across hub nodes on one PostgreSQL database: a scheduled job runs on exactly one node
//! under a lease and is finished by another when its node stops; the limit on unfinished jobs
//! holds for the whole cluster; per-device job records are queryable from any node.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use ferrohub_auth::{SymmetricKey, mint};
use ferrohub_cluster::testing::{NatsServer, TestDatabase, unique_name};
use ferrohub_cluster::{PgConfig, PgDatabase, PgJobStore};
use ferrohub_mqtt::codec::ConnectReturnCode;
use ferrohub_mqtt::{Packet, QoS};
use ferrohub_registry::scheduled_jobs::{
    Created, DeviceJob, DeviceJobStatus, JobStatus, JobType, JobWrite, ScheduledJob,
    ScheduledJobStore,
};
use ferrohub_server::config::ConfigToml;
use ferrohub_server::{Config, Overrides};
use ferrohub_test_support::mqtt::{MqttClient, Transport};
use ferrohub_test_support::{TestHub, eventually, now_secs};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::eventlog_contract::nats_server;
use crate::nodes::create_device;

/// Long enough for a lease to end and another node to notice.
const WAIT: Duration = Duration::from_secs(30);

/// The engines the nodes share.
struct Engines {
    database: TestDatabase,
    nats: NatsServer,
    prefix: String,
}

impl Engines {
    async fn start() -> Engines {
        Engines {
            database: TestDatabase::create().await.expect("database"),
            nats: nats_server().await,
            prefix: unique_name("jobs"),
        }
    }

    /// A node named `name` whose configuration file is `toml`.
    async fn node(&self, name: &str, toml: &str) -> TestHub {
        let cluster = format!(
            "[cluster]\npostgres = {:?}\nnats = [{:?}]\nnode = {name:?}\nreplicas = 1\nprefix = {:?}\n",
            self.database.url(),
            self.nats.url(),
            self.prefix
        );
        let raw = ConfigToml::parse(&cluster, "test").expect("parses");
        let config = Config::from_toml(raw, &Overrides::default()).expect("valid");
        let backends = ferrohub_cluster::node::backends(&config)
            .await
            .expect("the node reaches its engines");
        TestHub::start_with_backends_and_config(backends, toml).await
    }

    /// The scheduled job store the nodes share, opened directly.
    async fn job_store(&self) -> PgJobStore {
        let db = PgDatabase::new(&PgConfig::new(self.database.url())).expect("pool");
        PgJobStore::open(db).await.expect("job store")
    }
}

/// Leases of a second: a stopped node's jobs move within a few seconds.
const SHORT_LEASE: &str = "[jobs]\nlease_seconds = 1\n";

async fn rest(
    hub: &TestHub,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
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
            .body(b.to_string());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let code = resp
        .headers()
        .get("iothub-errorcode")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.expect("body");
    let mut body = serde_json::from_str(&text).unwrap_or(Value::Null);
    if let (Some(code), Value::Object(m)) = (code, &mut body) {
        m.insert("iothub-errorcode".into(), code.into());
    }
    (status, body)
}

/// `id` connected to `hub` and subscribed to direct methods (retried until `hub` knows the
/// identity, which another node may have created).
async fn method_device(hub: &TestHub, id: &str, key: &SymmetricKey) -> MqttClient {
    let mut c = eventually(WAIT, &format!("{id} connects"), || async {
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
        let accepted = ack.is_some_and(|a| a.code == ConnectReturnCode::Accepted);
        accepted.then_some(c)
    })
    .await;
    c.subscribe(&[("$iothub/methods/POST/#", QoS::AtMostOnce)])
        .await;
    c
}

/// The next method request `c` gets: (name, rid).
async fn next_request(c: &mut MqttClient) -> (String, String) {
    loop {
        match c.recv_within(WAIT).await {
            Some(Packet::Publish(p)) => {
                if let Some(rest) = p.topic.as_str().strip_prefix("$iothub/methods/POST/") {
                    let (name, rid) = rest.split_once("/?$rid=").expect("/?$rid=");
                    return (name.to_owned(), rid.to_owned());
                }
            }
            Some(_) => {}
            None => panic!("no method request"),
        }
    }
}

async fn job(hub: &TestHub, id: &str) -> Value {
    let (status, job) = rest(hub, Method::GET, &format!("/jobs/v2/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    job
}

async fn query(hub: &TestHub, text: &str) -> Vec<Value> {
    let (status, rows) = rest(
        hub,
        Method::POST,
        "/devices/query",
        Some(json!({ "query": text })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    rows.as_array().cloned().unwrap_or_default()
}

/// A method job runs on the node it was created on and calls a device connected to another
/// node; the job's node stops with that call in flight. The other node takes the job over once
/// the lease is gone: the in-flight device fails (its call is not repeated: the device may have
/// run it), the device still waiting is called when it connects, and the job completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_nodes_method_job_is_finished_by_another_node() {
    let engines = Engines::start().await;
    // Node B looks for jobs to take over every two seconds; node A renews every third of a
    // second.
    let b = engines.node("job-b", "[jobs]\nlease_seconds = 6\n").await;
    let a = engines.node("job-a", SHORT_LEASE).await;
    let silent_key = create_device(&a, "mj-silent").await;
    let off_key = create_device(&a, "mj-off").await;
    let mut silent = method_device(&b, "mj-silent", &silent_key).await;
    let (status, created) = rest(
        &a,
        Method::PUT,
        "/jobs/v2/mj",
        Some(json!({"type":"scheduleDeviceMethod",
                    "cloudToDeviceMethod":{"methodName":"update","payload":null,"responseTimeoutInSeconds":300},
                    "queryCondition":"deviceId IN ['mj-silent','mj-off']","maxExecutionTimeInSeconds":600})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    // Node A reaches the device through node B; the device never answers.
    let (name, _rid) = next_request(&mut silent).await;
    assert_eq!(name, "update");
    eventually(
        WAIT,
        "one call in flight on node A, one device waiting",
        || async {
            let s = job(&a, "mj").await["deviceJobStatistics"].clone();
            (s["runningCount"] == 1 && s["pendingCount"] == 1).then_some(())
        },
    )
    .await;
    let store = engines.job_store().await;
    assert_eq!(
        store.lease("mj").await.expect("lease").map(|l| l.owner),
        Some("job-a".to_owned()),
        "the node that created the job runs it"
    );
    a.stop().await;

    eventually(WAIT, "node B took the job over", || async {
        let lease = store.lease("mj").await.ok()??;
        (lease.owner == "job-b").then_some(())
    })
    .await;
    let failed = eventually(WAIT, "the in-flight device failed", || async {
        let rows = query(
            &b,
            "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'mj' AND devices.jobs.status = 'failed'",
        )
        .await;
        rows.into_iter().next()
    })
    .await;
    assert_eq!(failed["deviceId"], "mj-silent");
    assert_eq!(failed["jobType"], "scheduleDeviceMethod");
    assert_eq!(failed["error"]["code"], "HubRestarted");

    let mut off = method_device(&b, "mj-off", &off_key).await;
    let (name, rid) = next_request(&mut off).await;
    assert_eq!(name, "update");
    off.publish(
        &format!("$iothub/methods/res/200/?$rid={rid}"),
        QoS::AtLeastOnce,
        b"{\"done\":true}",
    )
    .await
    .expect("PUBACK");
    let done = eventually(WAIT, "the job completed on node B", || async {
        let j = job(&b, "mj").await;
        (j["status"] == "completed").then_some(j)
    })
    .await;
    assert_eq!(
        done["deviceJobStatistics"],
        json!({"deviceCount": 2, "failedCount": 1, "succeededCount": 1, "runningCount": 0, "pendingCount": 0})
    );
    let rows = query(
        &b,
        "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'mj'",
    )
    .await;
    assert_eq!(rows.len(), 2, "one record per device: {rows:?}");
    assert_eq!(rows[0]["deviceId"], "mj-off");
    assert_eq!(
        rows[0]["outcome"]["deviceMethodResponse"],
        json!({"status": 200, "payload": {"done": true}})
    );
    // The in-flight call was not repeated: the silent device got one request in all.
    assert!(
        !matches!(
            silent.recv_within(Duration::from_millis(500)).await,
            Some(Packet::Publish(p)) if p.topic.as_str().starts_with("$iothub/methods/POST/")
        ),
        "the silent device was called once"
    );
    eventually(WAIT, "the lease is released", || async {
        store.lease("mj").await.ok()?.is_none().then_some(())
    })
    .await;
    drop(b);
}

/// A twin job whose node died mid-job (its lease is held by a node that never renews it) is
/// left alone until the lease ends, then taken over by a live node, which resumes from the
/// stored scan position: the device the dead node finished is not patched again, the one it
/// was patching is patched (the same merge), the rest are scanned and patched once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_twin_job_resumes_where_it_stopped_once_its_lease_ends() {
    let engines = Engines::start().await;
    let setup = engines.node("tw-setup", SHORT_LEASE).await;
    for i in 1..=4 {
        create_device(&setup, &format!("tw-{i}")).await;
    }
    setup.stop().await;

    // The dead node's state: running, scanned up to tw-2; tw-1 done, tw-2 being patched.
    let store = engines.job_store().await;
    let now = Utc::now();
    let started = now - TimeDelta::seconds(5);
    let job = ScheduledJob {
        job_id: "tw".into(),
        job_type: JobType::ScheduleUpdateTwin,
        query_condition: "*".into(),
        created_time: started,
        start_time: started,
        end_time: None,
        max_execution_time_in_seconds: 600,
        update_twin: Some(json!({"etag": "*", "tags": {"fw": "9"}})),
        cloud_to_device_method: None,
        status: JobStatus::Running,
        failure_reason: None,
        status_message: None,
        scanned_to: Some("tw-2".into()),
        scan_complete: false,
        version: 0,
    };
    assert_eq!(
        store.create(job, None).await.expect("create"),
        Created::Created
    );
    let record = |device: &str, status| DeviceJob {
        job_id: "tw".into(),
        device_id: device.into(),
        status,
        created_time: started,
        start_time: Some(started),
        end_time: None,
        last_updated_time: started,
        outcome: None,
        error: None,
    };
    let dead_until = Utc::now() + TimeDelta::seconds(4);
    assert!(
        store
            .claim("tw", "dead-node", Utc::now(), dead_until)
            .await
            .expect("claim")
    );
    store
        .write(JobWrite {
            job: None,
            devices: vec![
                record("tw-1", DeviceJobStatus::Completed),
                record("tw-2", DeviceJobStatus::Running),
            ],
        })
        .await
        .expect("records");

    let b = engines.node("tw-b", SHORT_LEASE).await;
    // While the dead node's lease lasts, nobody runs the job.
    if Utc::now() < dead_until - TimeDelta::seconds(1) {
        assert_eq!(
            store.lease("tw").await.expect("lease").map(|l| l.owner),
            Some("dead-node".to_owned())
        );
        assert_eq!(
            job_status(&store).await,
            JobStatus::Running,
            "untouched before the lease ends"
        );
        let records = store
            .device_jobs("tw", &[], None, 10)
            .await
            .expect("records");
        assert_eq!(records.len(), 2, "no device scanned yet");
    }
    let done = eventually(WAIT, "node B completed the job", || async {
        let j = job_of(&b, "tw").await;
        (j["status"] == "completed").then_some(j)
    })
    .await;
    assert!(
        Utc::now() >= dead_until,
        "taken over only after the lease ended"
    );
    assert_eq!(
        done["deviceJobStatistics"],
        json!({"deviceCount": 4, "failedCount": 0, "succeededCount": 4, "runningCount": 0, "pendingCount": 0})
    );
    let records = store
        .device_jobs("tw", &[], None, 10)
        .await
        .expect("records");
    assert_eq!(
        records
            .iter()
            .map(|r| (r.device_id.as_str(), r.status))
            .collect::<Vec<_>>(),
        [
            ("tw-1", DeviceJobStatus::Completed),
            ("tw-2", DeviceJobStatus::Completed),
            ("tw-3", DeviceJobStatus::Completed),
            ("tw-4", DeviceJobStatus::Completed),
        ]
    );
    assert_eq!(
        records[0].last_updated_time, started,
        "the finished device's record is the dead node's"
    );
    // tw-1 was (in this staged state) recorded done without its patch: node B did not
    // process it again.
    let (_, t1) = rest(&b, Method::GET, "/twins/tw-1", None).await;
    assert!(t1["tags"].get("fw").is_none(), "{t1}");
    let untouched = t1["version"].as_u64().expect("version");
    for i in 2..=4 {
        let (_, t) = rest(&b, Method::GET, &format!("/twins/tw-{i}"), None).await;
        assert_eq!(t["tags"]["fw"], "9", "tw-{i}");
        // One service write each: the twin's version moved once.
        assert_eq!(t["version"], untouched + 1, "tw-{i} patched once: {t}");
    }
    drop(b);
}

async fn job_status(store: &PgJobStore) -> JobStatus {
    store
        .job("tw")
        .await
        .expect("read")
        .expect("the job")
        .status
}

async fn job_of(hub: &TestHub, id: &str) -> Value {
    job(hub, id).await
}

/// `[jobs] max_concurrent_jobs` counts the unfinished jobs of the whole cluster: two nodes
/// creating at once cannot both pass the limit, and the refusal is Azure's 429004.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_on_unfinished_jobs_holds_across_nodes() {
    let engines = Engines::start().await;
    let config = "[jobs]\nmax_concurrent_jobs = 1\n";
    let a = engines.node("lim-a", config).await;
    let b = engines.node("lim-b", config).await;
    let later = json!({"type":"scheduleUpdateTwin","updateTwin":{"tags":{"a":1}},
                       "queryCondition":"*","startTime":"2099-01-01T00:00:00Z"});
    let (on_a, on_b) = tokio::join!(
        rest(&a, Method::PUT, "/jobs/v2/lim-1", Some(later.clone())),
        rest(&b, Method::PUT, "/jobs/v2/lim-2", Some(later.clone())),
    );
    let statuses = [on_a.0, on_b.0];
    assert!(
        statuses.contains(&StatusCode::OK) && statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{on_a:?} {on_b:?}"
    );
    let refused = if on_a.0 == StatusCode::OK {
        on_b.1
    } else {
        on_a.1
    };
    assert_eq!(
        refused["iothub-errorcode"],
        "ThrottlingMaxActiveJobCountExceeded"
    );
    assert!(
        refused["Message"]
            .as_str()
            .is_some_and(|m| m.starts_with("ErrorCode:ThrottlingMaxActiveJobCountExceeded;")),
        "{refused}"
    );
    let accepted = if on_a.0 == StatusCode::OK {
        "lim-1"
    } else {
        "lim-2"
    };
    // Cancelled through the other node, the job frees its place on both.
    let (status, _) = rest(
        &b,
        Method::POST,
        &format!("/jobs/v2/{accepted}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = rest(&a, Method::PUT, "/jobs/v2/lim-3", Some(later)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    drop((a, b));
}

/// A blob endpoint that accepts connections and never answers: an export writing to it stays
/// `running`.
async fn stalled_blob_endpoint() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (format!("http://{addr}/exports?sv=2021&sig=x"), task)
}

async fn import_export_job(hub: &TestHub, id: &str) -> Value {
    let (status, job) = rest(hub, Method::GET, &format!("/jobs/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    job
}

/// One import or export job at a time across the cluster: while a node runs one, another
/// node refuses a second as Azure does (429004). When the running node stops without
/// finishing it (its lease is no longer renewed), any node marks the job failed, as a restarted
/// embedded hub does, and the hub takes a new job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_import_or_export_job_at_a_time_across_nodes() {
    let engines = Engines::start().await;
    let a = engines.node("ie-a", SHORT_LEASE).await;
    let b = engines.node("ie-b", SHORT_LEASE).await;
    create_device(&a, "ie-1").await;
    let (container, endpoint) = stalled_blob_endpoint().await;
    let export =
        json!({"type": "export", "outputBlobContainerUri": container, "excludeKeysInExport": true});

    let (status, first) = rest(&a, Method::POST, "/jobs/create", Some(export.clone())).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let first_id = first["jobId"].as_str().expect("job id").to_owned();
    eventually(WAIT, "the export runs on node A", || async {
        (import_export_job(&a, &first_id).await["status"] == "running").then_some(())
    })
    .await;

    let (status, refused) = rest(&b, Method::POST, "/jobs/create", Some(export.clone())).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{refused}");
    assert_eq!(
        refused["iothub-errorcode"],
        "ThrottlingMaxActiveJobCountExceeded"
    );
    assert!(
        refused["Message"]
            .as_str()
            .is_some_and(|m| m.contains(&first_id)),
        "names the running job: {refused}"
    );
    // Node B shows node A's job as node A last renewed it.
    eventually(WAIT, "node B shows the job running", || async {
        (import_export_job(&b, &first_id).await["status"] == "running").then_some(())
    })
    .await;
    let (status, listed) = rest(&b, Method::GET, "/jobs", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        listed
            .as_array()
            .is_some_and(|l| l.iter().any(|j| j["jobId"] == first_id.as_str())),
        "{listed}"
    );

    // Cancelled through node B, the job stops on node A, which runs it.
    let (status, cancelled) = rest(&b, Method::DELETE, &format!("/jobs/{first_id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    eventually(WAIT, "node A stopped the cancelled job", || async {
        (import_export_job(&a, &first_id).await["status"] == "cancelled").then_some(())
    })
    .await;
    let (status, running) = rest(&a, Method::POST, "/jobs/create", Some(export.clone())).await;
    assert_eq!(status, StatusCode::OK, "the slot is free again: {running}");
    let first_id = running["jobId"].as_str().expect("job id").to_owned();
    eventually(WAIT, "the new export runs on node A", || async {
        (import_export_job(&a, &first_id).await["status"] == "running").then_some(())
    })
    .await;

    // Node A stops with the job running (it keeps its record `running`, as a killed node
    // would): once its lease ends, node B marks the job failed and takes a new one.
    // Its data directory stays until the end of the test, as a killed node's disk would.
    let _a_data = a.stop().await;
    let failed = eventually(WAIT, "node A's job is marked failed", || async {
        let job = import_export_job(&b, &first_id).await;
        (job["status"] == "failed").then_some(job)
    })
    .await;
    assert_eq!(
        failed["failureReason"],
        "the hub restarted while the job was running"
    );
    assert!(failed["endTimeUtc"].is_string(), "{failed}");
    let (status, second) = rest(&b, Method::POST, "/jobs/create", Some(export)).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let second_id = second["jobId"].as_str().expect("job id").to_owned();
    // Cancelled on the node that runs it, the job frees the slot.
    let (status, cancelled) = rest(&b, Method::DELETE, &format!("/jobs/{second_id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    drop(b);
    endpoint.abort();
}
