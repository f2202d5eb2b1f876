//! End-to-end tests of `ferrohub devices import|export` and `ferrohub jobs`.

use ferrohub_test_support::TestHub;
use serde_json::Value;

mod common;
use common::*;

#[tokio::test]
async fn import_export_round_trip_between_hubs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("fleet.jsonl");
    let mut lines = String::new();
    for i in 0..250 {
        lines.push_str(&format!(
            "{{\"id\":\"p{i}\",\"status\":\"{}\"}}\n",
            if i % 10 == 0 { "disabled" } else { "enabled" }
        ));
    }
    lines.push_str("not json\n");
    std::fs::write(&input, lines).expect("write");

    let hub = TestHub::start().await;
    let out = run(
        &hub,
        &[
            "devices",
            "import",
            input.to_str().expect("utf-8"),
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "one bad line fails the command");
    let summary: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary["records"], 251);
    assert_eq!(summary["createdOrUpdated"], 250);
    assert_eq!(summary["failed"], 1);
    let stats: Value = ok_json(&run(&hub, &["stats", "--output", "json"]).await);
    assert_eq!(stats["registry"]["totalDeviceCount"], 250);
    assert_eq!(stats["registry"]["disabledDeviceCount"], 25);

    // File containers live in the hub's job file root.
    let export = hub.data_dir().join("job-files/out/devices.txt");
    std::fs::create_dir_all(export.parent().expect("parent")).expect("mkdir");
    let job = ok_json(
        &run(
            &hub,
            &[
                "devices",
                "export",
                export.to_str().expect("utf-8"),
                "--output",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(job["status"], "completed");
    let exported = std::fs::read_to_string(&export).expect("export written");
    assert_eq!(exported.lines().count(), 250);

    // A fresh hub imports the export through a job and ends up with the same identities.
    let fresh = TestHub::start().await;
    let copy = fresh.data_dir().join("job-files/in/devices.txt");
    std::fs::create_dir_all(copy.parent().expect("parent")).expect("mkdir");
    std::fs::copy(&export, &copy).expect("copy");
    let url = format!("file://{}", copy.display());
    let job = ok_json(&run(&fresh, &["devices", "import", &url, "--output", "json"]).await);
    assert_eq!(job["status"], "completed");
    for id in ["p0", "p7", "p249"] {
        let a = ok_json(&run(&hub, &["device", "show", id, "--output", "json"]).await);
        let b = ok_json(&run(&fresh, &["device", "show", id, "--output", "json"]).await);
        assert_eq!(a["authentication"], b["authentication"], "{id}: same keys");
        assert_eq!(a["status"], b["status"], "{id}: same status");
    }
    let jobs = ok_json(&run(&fresh, &["jobs", "list", "--output", "json"]).await);
    assert_eq!(jobs.as_array().map(Vec::len), Some(1));
    let id = jobs[0]["jobId"].as_str().expect("id").to_owned();
    let shown = ok_json(&run(&fresh, &["jobs", "show", &id, "--output", "json"]).await);
    assert_eq!(shown["type"], "import");
    let missing = run(&fresh, &["jobs", "show", "nope", "--output", "json"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("JobNotFound"));
}
