//! A full disk: the hub reports itself unhealthy and refuses telemetry (never acknowledging what
//! is not durable) while it lasts, starts anyway to serve readers, and takes telemetry again by
//! itself once there is space.
//!
//! The disk is a small tmpfs mounted for the test, which needs root (as the CI machines run);
//! elsewhere the test says so and does nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use ferrohub_auth::{SymmetricKey, mint};
use ferrohub_test_support::{TestHub, now_secs};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{all_events, create_device, send};

struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a file still open (a hub shutting down) must not leave the mount behind.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn fill(disk: &Path) -> PathBuf {
    let filler = disk.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    while std::io::Write::write_all(&mut f, &[0]).is_ok() {}
    filler
}

async fn telemetry(hub: &TestHub, device: &Value, body: &str) -> StatusCode {
    let id = device["deviceId"].as_str().unwrap();
    let key = SymmetricKey::from_base64(
        device["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let token = mint(
        &format!("localhost/devices/{id}"),
        &key,
        now_secs() + 600,
        None,
    );
    send(
        hub,
        Method::POST,
        &format!("/devices/{id}/messages/events"),
        Some(&token),
        &[],
        Some(body),
    )
    .await
    .status()
}

async fn health(hub: &TestHub) -> (StatusCode, String) {
    let resp = hub
        .http()
        .get(format!("{}/healthz", hub.base_url()))
        .send()
        .await
        .unwrap();
    (resp.status(), resp.text().await.unwrap())
}

#[tokio::test]
async fn a_full_disk_refuses_telemetry_then_recovers_without_a_restart() {
    let Some(disk) = SmallDisk::mount(32 << 20) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let data = disk.dir.path().join("data");
    let hub = TestHub::start_in(&data).await;
    let d = create_device(&hub, "full1").await;
    assert_eq!(
        telemetry(&hub, &d, r#"{"n":1}"#).await,
        StatusCode::NO_CONTENT
    );
    let filler = fill(disk.dir.path());

    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(64 * 1024));
    let mut refused = false;
    for _ in 0..5 {
        match telemetry(&hub, &d, &big).await {
            StatusCode::NO_CONTENT => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                refused = true;
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(refused, "the full disk refused telemetry");
    let (status, why) = health(&hub).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(why.contains("cannot write"), "{why}");

    // A restart on the full disk: the hub starts and readers get what was acknowledged.
    let acknowledged = all_events(&hub).await.len();
    assert!(acknowledged >= 1);
    drop(hub.stop().await);
    let hub = TestHub::start_in(&data).await;
    assert_eq!(all_events(&hub).await.len(), acknowledged);

    std::fs::remove_file(&filler).unwrap();
    assert_eq!(
        telemetry(&hub, &d, r#"{"n":2}"#).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(health(&hub).await.0, StatusCode::OK);
    assert_eq!(all_events(&hub).await.len(), acknowledged + 1);
    drop(hub.stop().await);
}
