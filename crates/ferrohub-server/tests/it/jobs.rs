//! `/jobs`: import and export jobs against directory (`file://`) and HTTP blob containers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::get;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{create_device, expect_error, openapi, send};
use ferrohub_test_support::TestHub;

/// `file://` URI of a directory.
fn file_uri(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// A new, empty container directory inside the hub's job file root (`<data_dir>/job-files`).
pub(crate) struct JobDir(std::path::PathBuf);

impl JobDir {
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

pub(crate) fn job_dir(hub: &TestHub) -> JobDir {
    let root = hub.data_dir().join("job-files");
    let dir = tempfile::Builder::new()
        .prefix("c")
        .tempdir_in(&root)
        .unwrap()
        .keep();
    JobDir(dir)
}

/// `POST /jobs/create` with the owner's token; returns the response.
async fn post_job(hub: &TestHub, token: Option<&str>, body: &Value) -> reqwest::Response {
    send(
        hub,
        Method::POST,
        "/jobs/create",
        token,
        &[],
        Some(&body.to_string()),
    )
    .await
}

/// Creates a job that must be accepted; returns its JSON.
async fn create_job(hub: &TestHub, body: &Value) -> Value {
    let resp = post_job(hub, None, body).await;
    assert_eq!(resp.status(), StatusCode::OK, "create job {body}");
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json; charset=utf-8"
    );
    resp.json().await.unwrap()
}

async fn get_job(hub: &TestHub, id: &str) -> Value {
    let resp = send(hub, Method::GET, &format!("/jobs/{id}"), None, &[], None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

/// Polls the job until it is completed, failed or cancelled.
async fn wait_job(hub: &TestHub, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let job = get_job(hub, id).await;
        if matches!(
            job["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} did not finish: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the job until its status is `status`.
async fn wait_status(hub: &TestHub, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = get_job(hub, id).await;
        if job["status"] == status {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} never {status}: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The JSON lines of a file.
fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn get_json(hub: &TestHub, path: &str) -> (StatusCode, Value) {
    let resp = send(hub, Method::GET, path, None, &[], None).await;
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn put_json(hub: &TestHub, path: &str, body: Value) {
    let resp = send(hub, Method::PUT, path, None, &[], Some(&body.to_string())).await;
    assert_eq!(resp.status(), StatusCode::OK, "PUT {path}");
}

/// A hub with three devices (one disabled, one with chosen keys) and a module.
async fn seeded_hub() -> TestHub {
    let hub = TestHub::start().await;
    create_device(&hub, "d1").await;
    put_json(
        &hub,
        "/devices/d2",
        json!({"deviceId": "d2", "status": "disabled", "statusReason": "maintenance"}),
    )
    .await;
    put_json(
        &hub,
        "/devices/d3",
        json!({"deviceId": "d3", "authentication": {"symmetricKey": {
            "primaryKey": "AAECAwQFBgcICQoLDA0ODw==", "secondaryKey": "EBESExQVFhcYGRobHB0eHw=="}}}),
    )
    .await;
    put_json(&hub, "/devices/d1/modules/m1", json!({})).await;
    hub
}

/// What must survive an export and import: per identity, status and keys.
async fn identities(hub: &TestHub) -> Vec<(String, Value, Value)> {
    let (_, list) = get_json(hub, "/devices").await;
    let mut out = Vec::new();
    for d in list.as_array().unwrap() {
        let id = d["deviceId"].as_str().unwrap().to_owned();
        out.push((
            id.clone(),
            json!([d["status"], d["statusReason"]]),
            d["authentication"].clone(),
        ));
        let (_, modules) = get_json(hub, &format!("/devices/{id}/modules")).await;
        for m in modules.as_array().unwrap() {
            out.push((
                format!("{id}/{}", m["moduleId"].as_str().unwrap()),
                Value::Null,
                m["authentication"].clone(),
            ));
        }
    }
    out
}

#[tokio::test]
async fn export_then_import_into_a_fresh_hub() {
    let hub = seeded_hub().await;
    let out = job_dir(&hub);

    let created = create_job(
        &hub,
        &json!({"type": "export", "outputBlobContainerUri": file_uri(out.path()),
                "excludeKeysInExport": false, "storageAuthenticationType": "keyBased"}),
    )
    .await;
    let id = created["jobId"].as_str().unwrap().to_owned();
    let parts: Vec<usize> = id.split('-').map(str::len).collect();
    assert_eq!(parts, [8, 4, 4, 4, 12], "GUID-like job id {id}");
    assert_eq!(created["type"], "export");
    assert!(matches!(
        created["status"].as_str(),
        Some("enqueued" | "running" | "completed")
    ));
    assert!(created["startTimeUtc"].is_string());
    assert_eq!(created["outputBlobName"], "devices.txt");
    assert_eq!(created["outputBlobContainerUri"], file_uri(out.path()));
    assert_eq!(created["storageAuthenticationType"], "keyBased");

    let done = wait_job(&hub, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"], 100);
    assert!(done["endTimeUtc"].is_string());
    assert_eq!(done["deviceCount"], 4, "three devices and a module");

    let lines = json_lines(&out.path().join("devices.txt"));
    let ids: Vec<(String, Option<String>)> = lines
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap().to_owned(),
                l["moduleId"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("d1".to_owned(), None),
            ("d1".to_owned(), Some("m1".to_owned())),
            ("d2".to_owned(), None),
            ("d3".to_owned(), None),
        ]
    );
    assert_eq!(lines[0]["eTag"], "MA==");
    assert_eq!(lines[2]["status"], "disabled");
    assert_eq!(lines[2]["statusReason"], "maintenance");
    assert_eq!(
        lines[3]["authentication"]["symmetricKey"]["primaryKey"],
        "AAECAwQFBgcICQoLDA0ODw=="
    );
    assert!(lines[1]["authentication"]["symmetricKey"]["primaryKey"].is_string());
    assert!(lines.iter().all(|l| l.get("importMode").is_none()));

    // Keys excluded, to a named blob in a subdirectory.
    let job = create_job(
        &hub,
        &json!({"type": "export", "outputBlobContainerUri": file_uri(out.path()),
                "outputBlobName": "nokeys/export.txt", "excludeKeysInExport": true}),
    )
    .await;
    let done = wait_job(&hub, job["jobId"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["excludeKeysInExport"], true);
    for line in json_lines(&out.path().join("nokeys/export.txt")) {
        assert_eq!(
            line["authentication"]["symmetricKey"],
            json!({"primaryKey": null, "secondaryKey": null}),
            "{line}"
        );
    }

    // Import the keyed export into a fresh hub: the same identities.
    let fresh = TestHub::start().await;
    let errors = job_dir(&fresh);
    let input = job_dir(&fresh);
    std::fs::copy(
        out.path().join("devices.txt"),
        input.path().join("devices.txt"),
    )
    .unwrap();
    let job = create_job(
        &fresh,
        &json!({"type": "import", "inputBlobContainerUri": file_uri(input.path()),
                "outputBlobContainerUri": file_uri(errors.path())}),
    )
    .await;
    assert_eq!(job["inputBlobName"], "devices.txt");
    assert_eq!(job["outputBlobName"], "importErrors.log");
    let done = wait_job(&fresh, job["jobId"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["deviceCount"], 4);
    assert_eq!(done["errorCount"], 0);
    assert_eq!(
        std::fs::read_to_string(errors.path().join("importErrors.log")).unwrap(),
        "",
        "an import without failures leaves an empty errors log"
    );
    let before = identities(&hub).await;
    assert_eq!(before.len(), 4);
    assert_eq!(identities(&fresh).await, before);
    // The imported keys work: the device can authenticate with its exported key.
    let (_, d3) = get_json(&fresh, "/devices/d3").await;
    assert_eq!(
        d3["authentication"]["symmetricKey"]["secondaryKey"],
        "EBESExQVFhcYGRobHB0eHw=="
    );
}

#[tokio::test]
async fn import_reports_failed_records_and_completes() {
    let hub = TestHub::start().await;
    create_device(&hub, "taken").await;
    let input = job_dir(&hub);
    let lines = [
        r#"{"id":"n1","importMode":"create","status":"enabled"}"#,
        "this is not json",
        r#"{"id":"taken","importMode":"create","status":"enabled"}"#,
        "",
        r#"{"id":"ghost","importMode":"delete"}"#,
        r#"{"id":"bad id","status":"enabled"}"#,
        r#"{"id":"n2","importMode":"teleport"}"#,
        r#"{"id":"n1","importMode":"create","status":"enabled"}"#,
        r#"{"id":"n1","moduleId":"m1","importMode":"create"}"#,
        r#"{"id":"nobody","moduleId":"m1","importMode":"create"}"#,
        r#"{"id":"taken","importMode":"updateIfMatchETag","eTag":"bm90IGl0","status":"disabled"}"#,
        r#"{"id":"n3","status":"disabled"}"#,
        r#"{"id":"taken","importMode":"delete"}"#,
    ];
    std::fs::write(input.path().join("in.txt"), lines.join("\r\n")).unwrap();
    let job = create_job(
        &hub,
        &json!({"type": "import", "inputBlobContainerUri": file_uri(input.path()),
                "inputBlobName": "in.txt", "outputBlobContainerUri": file_uri(input.path())}),
    )
    .await;
    let done = wait_job(&hub, job["jobId"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["deviceCount"], 12, "blank lines are not records");
    assert_eq!(done["errorCount"], 8);

    let errors = json_lines(&input.path().join("importErrors.log"));
    let mut got: Vec<(String, String)> = errors
        .iter()
        .map(|e| {
            assert!(e["errorStatus"].is_string(), "{e}");
            let id = match e["moduleId"].as_str() {
                Some(m) => format!("{}/{m}", e["deviceId"].as_str().unwrap()),
                None => e["deviceId"].as_str().unwrap().to_owned(),
            };
            (id, e["errorCode"].as_str().unwrap().to_owned())
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("", "ArgumentInvalid"),
            ("bad id", "ArgumentInvalid"),
            ("ghost", "DeviceNotFound"),
            ("n1", "DeviceAlreadyExists"),
            ("n2", "ArgumentInvalid"),
            ("nobody/m1", "DeviceNotFound"),
            ("taken", "DeviceAlreadyExists"),
            ("taken", "PreconditionFailed"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    // Records about one device apply in file order: the second create of n1 finds it, the
    // module follows its device, and `taken` is deleted last.
    let (_, n1) = get_json(&hub, "/devices/n1").await;
    assert_eq!(n1["status"], "enabled");
    let (status, _) = get_json(&hub, "/devices/n1/modules/m1").await;
    assert_eq!(status, StatusCode::OK, "a module record after its device's");
    let (_, n3) = get_json(&hub, "/devices/n3").await;
    assert_eq!(
        n3["status"], "disabled",
        "missing importMode is createOrUpdate"
    );
    let (status, _) = get_json(&hub, "/devices/taken").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the later delete applied");
}

/// Starts an import of one device, `device`, from a blob server that holds its input back (the
/// container at `container`), and waits until the job is running. Keep the blob server and the
/// output folder alive as long as the job should stay running.
async fn running_import(
    hub: &TestHub,
    device: &str,
    container: &str,
) -> (BlobServer, JobDir, String) {
    let blobs = BlobServer::start(false).await;
    blobs.put(
        "c/devices.txt",
        format!("{{\"id\":\"{device}\"}}\n").into_bytes(),
    );
    let out = job_dir(hub);
    let job = create_job(
        hub,
        &json!({"type": "import", "inputBlobContainerUri": blobs.url(container),
                "outputBlobContainerUri": file_uri(out.path())}),
    )
    .await;
    let id = job["jobId"].as_str().unwrap().to_owned();
    wait_status(hub, &id, "running").await;
    (blobs, out, id)
}

#[tokio::test]
async fn one_job_at_a_time_and_cancel() {
    let hub = TestHub::start().await;
    // The input blob is held back, so the job stays running.
    let (blobs, out, first_id) = running_import(&hub, "late", "c?sig=s3cret").await;

    let resp = post_job(
        &hub,
        None,
        &json!({"type": "export", "outputBlobContainerUri": file_uri(out.path())}),
    )
    .await;
    expect_error(resp, 429, "ThrottlingMaxActiveJobCountExceeded").await;

    let resp = send(
        &hub,
        Method::DELETE,
        &format!("/jobs/{first_id}"),
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cancelled: Value = resp.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["endTimeUtc"].is_string());

    // The slot is free again; the cancelled job stays cancelled once its read returns.
    let second = create_job(
        &hub,
        &json!({"type": "export", "outputBlobContainerUri": file_uri(out.path())}),
    )
    .await;
    let second_id = second["jobId"].as_str().unwrap().to_owned();
    blobs.open();
    let done = wait_job(&hub, &second_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    // The cancelled job's task records its final count once its read returns.
    let first = ferrohub_test_support::eventually(
        Duration::from_secs(30),
        "the cancelled job's task to stop",
        || async {
            let job = get_job(&hub, &first_id).await;
            (job["deviceCount"] == 1).then_some(job)
        },
    )
    .await;
    assert_eq!(first["status"], "cancelled", "{first}");
    let (status, _) = get_json(&hub, "/devices/late").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a cancelled import applies nothing more"
    );

    // Cancelling a finished job returns it unchanged.
    let resp = send(
        &hub,
        Method::DELETE,
        &format!("/jobs/{second_id}"),
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let again: Value = resp.json().await.unwrap();
    assert_eq!(again, done);

    let (status, list) = get_json(&hub, "/jobs").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["jobId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first_id.as_str(), second_id.as_str()]);
    assert_eq!(
        list[0]["inputBlobContainerUri"],
        blobs.url("c?sig=s3cret"),
        "container URIs are echoed as given"
    );
}

#[tokio::test]
async fn unknown_jobs_permissions_and_bad_requests() {
    let hub = TestHub::start().await;
    let dir = job_dir(&hub);
    let empty = job_dir(&hub);
    let unknown = "00000000-0000-4000-8000-000000000000";
    let resp = send(
        &hub,
        Method::GET,
        &format!("/jobs/{unknown}"),
        None,
        &[],
        None,
    )
    .await;
    expect_error(resp, 404, "JobNotFound").await;
    let resp = send(
        &hub,
        Method::DELETE,
        &format!("/jobs/{unknown}"),
        None,
        &[],
        None,
    )
    .await;
    expect_error(resp, 404, "JobNotFound").await;

    let export = json!({"type": "export", "outputBlobContainerUri": file_uri(dir.path())});
    let import = json!({"type": "import", "inputBlobContainerUri": file_uri(dir.path()),
                        "outputBlobContainerUri": file_uri(dir.path())});
    let read = hub.policy_token("registryRead", 600);
    let service = hub.policy_token("service", 600);
    let resp = post_job(&hub, Some(&read), &import).await;
    expect_error(resp, 401, "IotHubUnauthorizedAccess").await;
    let resp = post_job(&hub, Some(&service), &export).await;
    expect_error(resp, 401, "IotHubUnauthorizedAccess").await;
    let resp = send(&hub, Method::GET, "/jobs", Some(&service), &[], None).await;
    expect_error(resp, 401, "IotHubUnauthorizedAccess").await;

    for bad in [
        json!({"outputBlobContainerUri": file_uri(dir.path())}),
        json!({"type": "backup", "outputBlobContainerUri": file_uri(dir.path())}),
        json!({"type": "export"}),
        json!({"type": "export", "outputBlobContainerUri": "ftp://example.com/c"}),
        json!({"type": "export", "outputBlobContainerUri": "relative/dir"}),
        json!({"type": "export", "outputBlobContainerUri": "file://otherhost/dir"}),
        json!({"type": "export", "outputBlobContainerUri": file_uri(dir.path()),
               "outputBlobName": "../escape.txt"}),
        json!({"type": "import", "outputBlobContainerUri": file_uri(dir.path())}),
        json!({"type": "import", "inputBlobContainerUri": "s3://bucket",
               "outputBlobContainerUri": file_uri(dir.path())}),
        json!({"type": "export", "outputBlobContainerUri": file_uri(hub.data_dir())}),
        json!({"type": "import", "inputBlobContainerUri": file_uri(&hub.data_dir().join("x")),
               "outputBlobContainerUri": file_uri(dir.path())}),
    ] {
        let resp = post_job(&hub, None, &bad).await;
        expect_error(resp, 400, "ArgumentInvalid").await;
    }
    let resp = send(&hub, Method::POST, "/jobs/create", None, &[], Some("[]")).await;
    expect_error(resp, 400, "ArgumentInvalid").await;
    let (_, list) = get_json(&hub, "/jobs").await;
    assert_eq!(list, json!([]), "refused requests leave no job");

    // An export needs only RegistryRead; a missing input blob fails the import, with a reason.
    let resp = post_job(&hub, Some(&read), &export).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let job: Value = resp.json().await.unwrap();
    assert_eq!(
        wait_job(&hub, job["jobId"].as_str().unwrap()).await["status"],
        "completed"
    );
    let job = create_job(
        &hub,
        &json!({"type": "import", "inputBlobContainerUri": file_uri(empty.path()),
                "outputBlobContainerUri": file_uri(dir.path())}),
    )
    .await;
    let done = wait_job(&hub, job["jobId"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    let reason = done["failureReason"].as_str().unwrap();
    assert!(reason.contains("input blob could not be read"), "{reason}");
    assert!(done["endTimeUtc"].is_string());
}

#[tokio::test]
async fn jobs_are_documented() {
    let hub = TestHub::start().await;
    let doc = openapi(&hub).await;
    assert!(doc["paths"]["/jobs/create"]["post"].is_object());
    assert!(doc["paths"]["/jobs"]["get"].is_object());
    assert!(doc["paths"]["/jobs/{id}"]["get"].is_object());
    assert!(doc["paths"]["/jobs/{id}"]["delete"].is_object());
    let props = &doc["components"]["schemas"]["JobProperties"]["properties"];
    for field in [
        "jobId",
        "type",
        "status",
        "progress",
        "failureReason",
        "deviceCount",
    ] {
        assert!(props[field].is_object(), "JobProperties.{field} documented");
    }
}

#[tokio::test]
async fn http_containers_export_and_import() {
    let hub = seeded_hub().await;
    let blobs = BlobServer::start(true).await;
    let container = blobs.url("exports?sv=2021-04-10&sig=abc%2Bdef");
    let job = create_job(
        &hub,
        &json!({"type": "export", "outputBlobContainerUri": container}),
    )
    .await;
    let done = wait_job(&hub, job["jobId"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    let exported = blobs
        .get("exports/devices.txt")
        .expect("devices.txt uploaded");
    assert_eq!(
        String::from_utf8(exported).unwrap().lines().count(),
        4,
        "three devices and a module"
    );

    let fresh = TestHub::start().await;
    let job = create_job(
        &fresh,
        &json!({"type": "import", "inputBlobContainerUri": container,
                "outputBlobContainerUri": blobs.url("results?sig=abc%2Bdef"),
                "outputBlobName": "errors/run1.log"}),
    )
    .await;
    let done = wait_job(&fresh, job["jobId"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(identities(&fresh).await, identities(&hub).await);
    assert_eq!(blobs.get("results/errors/run1.log"), Some(Vec::new()));

    // A container the store refuses fails the job, and the reason shows no signature.
    let job = create_job(
        &fresh,
        &json!({"type": "import", "inputBlobContainerUri": blobs.url("exports?sig=wrong"),
                "outputBlobContainerUri": container}),
    )
    .await;
    let done = wait_job(&fresh, job["jobId"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    let reason = done["failureReason"].as_str().unwrap();
    assert!(reason.contains("403"), "{reason}");
    assert!(!reason.contains("sig="), "{reason}");
}

#[tokio::test]
async fn a_job_interrupted_by_a_restart_is_failed() {
    // Stopped while the job waits for its input blob.
    let hub = TestHub::start().await;
    let (blobs, _out, id) = running_import(&hub, "x", "c?sig=s").await;
    let data_dir = hub.data_dir().to_owned();
    let dir = hub.stop().await;
    // The stopped hub's job task lets go of the hub's stores as soon as it sees the shutdown;
    // until then the event log's lock keeps a new hub out of the directory.
    let hub = ferrohub_test_support::eventually(
        Duration::from_secs(30),
        "the stopped hub to release its data directory",
        || async { TestHub::try_start_in(&data_dir).await.ok() },
    )
    .await;
    let job = get_job(&hub, &id).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(
        job["failureReason"],
        "the hub restarted while the job was running"
    );
    assert!(job["endTimeUtc"].is_string());
    // The stopped hub's task does not bring it back: it let go of its hub before this one could
    // start, so the read it waited for has nowhere to report.
    blobs.open();
    let _ = blobs.get("c/devices.txt");
    assert_eq!(get_job(&hub, &id).await, job);
    let data_dir2 = tempfile::tempdir().unwrap();
    hub.stop().await;
    drop(dir);

    // A record left running in jobs.json, written as an older hub would have.
    let data = data_dir2.path().join("data");
    let out = data.join("job-files/out");
    std::fs::create_dir_all(&out).unwrap();
    let record = json!({"jobs": [{
        "jobId": "11111111-2222-4333-8444-555555555555",
        "startTimeUtc": chrono::Utc::now().to_rfc3339(),
        "type": "export",
        "status": "running",
        "progress": 40,
        "outputBlobContainerUri": file_uri(&out),
        "outputBlobName": "devices.txt",
        "excludeKeysInExport": false,
    }]});
    std::fs::write(data.join("jobs.json"), record.to_string()).unwrap();
    let hub = TestHub::start_in(&data).await;
    let job = get_job(&hub, "11111111-2222-4333-8444-555555555555").await;
    assert_eq!(job["status"], "failed");
    assert_eq!(
        job["failureReason"],
        "the hub restarted while the job was running"
    );
    assert_eq!(job["progress"], 40);
    // And the slot is free.
    let job = create_job(
        &hub,
        &json!({"type": "export", "outputBlobContainerUri": file_uri(&out)}),
    )
    .await;
    assert_eq!(
        wait_job(&hub, job["jobId"].as_str().unwrap()).await["status"],
        "completed"
    );
}

/// Imports 1,000,000 generated devices, then exports them, and reports times and peak RSS
/// (`FERROHUB_IMPORT_COUNT` changes the count, `FERROHUB_SKIP_EXPORT` skips the export). Run by
/// hand:
/// `cargo test --release -p ferrohub-server --test it jobs::import_a_million_devices -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand with --release"]
async fn import_a_million_devices() {
    use std::io::Write;
    let count: usize = std::env::var("FERROHUB_IMPORT_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let hub = TestHub::start().await;
    let input = job_dir(&hub);
    {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(input.path().join("devices.txt")).unwrap(),
        );
        for i in 0..count {
            writeln!(
                f,
                r#"{{"id":"dev-{i:07}","status":"enabled","authentication":{{"symmetricKey":{{"primaryKey":"AAECAwQFBgcICQoLDA0ODw==","secondaryKey":"EBESExQVFhcYGRobHB0eHw=="}},"type":"sas"}}}}"#
            )
            .unwrap();
        }
    }
    let size = std::fs::metadata(input.path().join("devices.txt"))
        .unwrap()
        .len();
    let rss_before = peak_rss_kib();
    let started = Instant::now();
    let job = create_job(
        &hub,
        &json!({"type": "import", "inputBlobContainerUri": file_uri(input.path()),
                "outputBlobContainerUri": file_uri(input.path())}),
    )
    .await;
    let done = wait_quietly(&hub, job["jobId"].as_str().unwrap()).await;
    let import_secs = started.elapsed().as_secs_f64();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["errorCount"], 0);
    let (_, stats) = get_json(&hub, "/statistics/devices").await;
    assert_eq!(stats["totalDeviceCount"], count);
    let rss_import = peak_rss_kib();
    println!(
        "import of {count} devices ({size} bytes): {import_secs:.1} s ({:.0} devices/s); \
         peak RSS {} MiB before the job, {} MiB after it",
        count as f64 / import_secs,
        rss_before / 1024,
        rss_import / 1024
    );
    if std::env::var("FERROHUB_SKIP_EXPORT").is_ok() {
        return;
    }

    let out = job_dir(&hub);
    let started = Instant::now();
    let job = create_job(
        &hub,
        &json!({"type": "export", "outputBlobContainerUri": file_uri(out.path())}),
    )
    .await;
    let done = wait_quietly(&hub, job["jobId"].as_str().unwrap()).await;
    let export_secs = started.elapsed().as_secs_f64();
    assert_eq!(done["status"], "completed", "{done}");
    let exported = std::fs::metadata(out.path().join("devices.txt"))
        .unwrap()
        .len();
    println!(
        "export of {count} devices ({exported} bytes): {export_secs:.1} s; peak RSS {} MiB",
        peak_rss_kib() / 1024
    );
}

/// Polls a job every 250 ms with one client (building a client per poll would load the
/// system's trust store each time and skew the measurement).
async fn wait_quietly(hub: &TestHub, id: &str) -> Value {
    let client = hub.http();
    let token = hub.policy_token("iothubowner", 3600);
    let url = format!("{}/jobs/{id}?api-version=2021-04-12", hub.base_url());
    loop {
        let job: Value = client
            .get(&url)
            .header("Authorization", &token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if matches!(
            job["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The process's peak resident set size (`VmHWM`), KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

// === A tiny blob store: GET and PUT of blobs in memory, a SAS-like `sig` check ===

#[derive(Clone)]
struct BlobServer {
    base: String,
    blobs: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    gate: Arc<watch::Sender<bool>>,
}

#[derive(Clone)]
struct BlobState {
    blobs: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    gate: watch::Receiver<bool>,
}

impl BlobServer {
    /// Starts the server; with `open` false, reads wait until [`BlobServer::open`].
    async fn start(open: bool) -> BlobServer {
        let blobs = Arc::new(Mutex::new(HashMap::new()));
        let (gate, rx) = watch::channel(open);
        let state = BlobState {
            blobs: blobs.clone(),
            gate: rx,
        };
        let app = Router::new()
            .route("/{*path}", get(get_blob).put(put_blob))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        BlobServer {
            base: format!("http://{addr}"),
            blobs,
            gate: Arc::new(gate),
        }
    }

    /// The URL of `path` (which may carry a query).
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    fn put(&self, name: &str, data: Vec<u8>) {
        self.blobs.lock().unwrap().insert(name.to_owned(), data);
    }

    fn get(&self, name: &str) -> Option<Vec<u8>> {
        self.blobs.lock().unwrap().get(name).cloned()
    }

    /// Lets held reads through.
    fn open(&self) {
        let _ = self.gate.send(true);
    }
}

/// Requests must carry `sig=s3cret`, `sig=s` or `sig=abc+def` (decoded), like a SAS token.
fn signed(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|kv| matches!(kv, "sig=s3cret" | "sig=s" | "sig=abc%2Bdef"))
    })
}

async fn get_blob(
    State(state): State<BlobState>,
    UrlPath(path): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> Result<Vec<u8>, AxumStatus> {
    if !signed(query.as_deref()) {
        return Err(AxumStatus::FORBIDDEN);
    }
    let mut gate = state.gate.clone();
    let _ = gate.wait_for(|open| *open).await;
    state
        .blobs
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .ok_or(AxumStatus::NOT_FOUND)
}

async fn put_blob(
    State(state): State<BlobState>,
    UrlPath(path): UrlPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> AxumStatus {
    if !signed(query.as_deref()) {
        return AxumStatus::FORBIDDEN;
    }
    if headers.get("x-ms-blob-type").and_then(|v| v.to_str().ok()) != Some("BlockBlob") {
        return AxumStatus::BAD_REQUEST;
    }
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared != Some(body.len()) {
        return AxumStatus::LENGTH_REQUIRED;
    }
    state.blobs.lock().unwrap().insert(path, body.to_vec());
    AxumStatus::CREATED
}

// === The job file root: what a REST caller may not reach on the hub's host ===

/// Every file under `dir` with its content, for "nothing changed on disk".
fn tree(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                out.push((entry.path(), std::fs::read(entry.path()).unwrap()));
            } else {
                out.push((entry.path(), b"<link>".to_vec()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn file_containers_outside_the_root_are_refused_and_change_nothing() {
    let hub = seeded_hub().await;
    let host = tempfile::tempdir().unwrap();
    // A directory elsewhere on the host holding a file worth overwriting, and one worth reading.
    let victim_dir = host.path().join("etc");
    std::fs::create_dir(&victim_dir).unwrap();
    std::fs::write(victim_dir.join("devices.txt"), b"precious").unwrap();
    std::fs::write(victim_dir.join("passwd"), b"root:x:0:0").unwrap();
    let root = hub.data_dir().join("job-files");
    let inside = job_dir(&hub);
    std::fs::write(inside.path().join("mine.txt"), b"an operator's file").unwrap();
    // Links inside the root leading out of it.
    std::os::unix::fs::symlink(&victim_dir, root.join("escape")).unwrap();
    std::os::unix::fs::symlink(victim_dir.join("passwd"), inside.path().join("devices.txt"))
        .unwrap();
    let before_host = tree(host.path());
    let before_root = tree(&root);
    let read = hub.policy_token("registryRead", 600);
    let root_uri = file_uri(&root);

    let refused = [
        // Another directory on the host.
        json!({"type": "export", "outputBlobContainerUri": file_uri(&victim_dir)}),
        json!({"type": "export", "outputBlobContainerUri": file_uri(&victim_dir),
               "outputBlobName": "passwd"}),
        json!({"type": "export", "outputBlobContainerUri": "file:///etc/"}),
        json!({"type": "export", "outputBlobContainerUri": "file:///"}),
        // Climbing out of the root, written out or percent-encoded.
        json!({"type": "export", "outputBlobContainerUri": format!("{root_uri}/../../etc")}),
        json!({"type": "export", "outputBlobContainerUri": format!("{root_uri}/%2e%2e/%2E%2E")}),
        json!({"type": "export", "outputBlobContainerUri": format!("{root_uri}/escape")}),
        json!({"type": "export", "outputBlobContainerUri": file_uri(inside.path()),
               "outputBlobName": "../../../etc/devices.txt"}),
        json!({"type": "export", "outputBlobContainerUri": file_uri(inside.path()),
               "outputBlobName": "/etc/devices.txt"}),
        // A file that exists (the operator's, or a link out of the root).
        json!({"type": "export", "outputBlobContainerUri": file_uri(inside.path()),
               "outputBlobName": "mine.txt"}),
        json!({"type": "export", "outputBlobContainerUri": file_uri(inside.path())}),
        // Reading host files.
        json!({"type": "import", "inputBlobContainerUri": "file:///etc/",
               "inputBlobName": "passwd", "outputBlobContainerUri": file_uri(inside.path())}),
        json!({"type": "import", "inputBlobContainerUri": file_uri(&victim_dir),
               "inputBlobName": "passwd", "outputBlobContainerUri": file_uri(inside.path())}),
        json!({"type": "import", "inputBlobContainerUri": format!("{root_uri}/escape"),
               "inputBlobName": "passwd", "outputBlobContainerUri": file_uri(inside.path())}),
        // The hub's own state.
        json!({"type": "export", "outputBlobContainerUri": file_uri(hub.data_dir())}),
        json!({"type": "import", "inputBlobContainerUri": file_uri(hub.data_dir()),
               "inputBlobName": "policies.json", "outputBlobContainerUri": file_uri(inside.path())}),
    ];
    for body in &refused {
        let is_export = body["type"] == "export";
        // registryRead may export, so its export requests reach the container checks.
        let token = if is_export { Some(read.as_str()) } else { None };
        let resp = post_job(&hub, token, body).await;
        let message = expect_error(resp, 400, "ArgumentInvalid").await;
        assert!(!message.contains("root:x"), "{message}");
    }
    // registryRead may not import at all.
    let resp = post_job(&hub, Some(&read), &refused[11]).await;
    expect_error(resp, 401, "IotHubUnauthorizedAccess").await;

    // A link as an input blob is caught when the job runs: it fails, reading nothing.
    let job = create_job(
        &hub,
        &json!({"type": "import", "inputBlobContainerUri": file_uri(inside.path()),
                "outputBlobContainerUri": file_uri(inside.path()), "outputBlobName": "errs.log"}),
    )
    .await;
    let done = wait_job(&hub, job["jobId"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["failureReason"].as_str().unwrap().contains("link"),
        "{done}"
    );

    assert_eq!(
        tree(host.path()),
        before_host,
        "nothing outside the root changed"
    );
    assert_eq!(tree(&root), before_root, "nothing inside the root changed");
    let (_, jobs) = get_json(&hub, "/jobs").await;
    assert_eq!(
        jobs.as_array().unwrap().len(),
        1,
        "only the import that ran"
    );
}

#[tokio::test]
async fn a_read_only_policy_exports_with_keys_inside_the_root() {
    // RegistryRead reads keys already (GET /devices/{id}), so an export with keys needs no more.
    let hub = seeded_hub().await;
    let read = hub.policy_token("registryRead", 600);
    let resp = send(&hub, Method::GET, "/devices/d3", Some(&read), &[], None).await;
    let d3: Value = resp.json().await.unwrap();
    assert_eq!(
        d3["authentication"]["symmetricKey"]["primaryKey"],
        "AAECAwQFBgcICQoLDA0ODw=="
    );
    let out = job_dir(&hub);
    let resp = post_job(
        &hub,
        Some(&read),
        &json!({"type": "export", "outputBlobContainerUri": file_uri(out.path()),
                "outputBlobName": "nested/dir/devices.txt", "excludeKeysInExport": false}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let job: Value = resp.json().await.unwrap();
    let done = wait_job(&hub, job["jobId"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    let lines = json_lines(&out.path().join("nested/dir/devices.txt"));
    assert_eq!(lines.len(), 4);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.path().join("nested/dir/devices.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "an export holds keys: owner-only");
}

#[tokio::test]
async fn http_containers_on_private_addresses_or_redirecting_away_fail() {
    let hub = TestHub::start_with_config("[jobs]\nallow_private_addresses = false\n").await;
    let blobs = BlobServer::start(true).await;
    blobs.put("c/devices.txt", b"{\"id\":\"x\"}\n".to_vec());
    let out = job_dir(&hub);
    let job = create_job(
        &hub,
        &json!({"type": "import", "inputBlobContainerUri": blobs.url("c?sig=s"),
                "outputBlobContainerUri": file_uri(out.path())}),
    )
    .await;
    let done = wait_job(&hub, job["jobId"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    let reason = done["failureReason"].as_str().unwrap();
    assert!(reason.contains("allow_private_addresses"), "{reason}");
    let job = create_job(
        &hub,
        &json!({"type": "export", "outputBlobContainerUri": "http://localhost:9/c?sig=s"}),
    )
    .await;
    let done = wait_job(&hub, job["jobId"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");

    // Allowed to reach this machine, a store redirecting to another host is not followed.
    let hub = TestHub::start().await;
    let redirector = Router::new().route(
        "/{*path}",
        get(|| async {
            (
                AxumStatus::TEMPORARY_REDIRECT,
                [("location", "http://localhost:9/elsewhere")],
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, redirector).await;
    });
    let out = job_dir(&hub);
    let job = create_job(
        &hub,
        &json!({"type": "import", "inputBlobContainerUri": format!("http://{addr}/c?sig=s"),
                "outputBlobContainerUri": file_uri(out.path())}),
    )
    .await;
    let done = wait_job(&hub, job["jobId"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    let reason = done["failureReason"].as_str().unwrap();
    assert!(reason.contains("307"), "{reason}");
}
