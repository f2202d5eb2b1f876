//! What the end-to-end tests of the `ferrohub` binary share: running it against a hub with a
//! clean environment, and reading its output.
// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::process::Output;

use ferrohub_test_support::TestHub;
use serde_json::Value;

/// Environment variables the admin commands read; cleared so the developer's own settings
/// cannot leak into a test.
const ENV: [&str; 4] = [
    "FERROHUB_CONNECTION_STRING",
    "IOTHUB_CONNECTION_STRING",
    "FERROHUB_DATA_DIR",
    "FERROHUB_CA",
];

/// Runs the binary in `cwd` with `args`, nothing else.
pub(crate) async fn raw(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferrohub"));
    cmd.args(args).current_dir(cwd);
    for name in ENV {
        cmd.env_remove(name);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("the ferrohub binary runs")
}

/// Runs an admin command against `hub` with its owner connection string and CA.
pub(crate) async fn run(hub: &TestHub, args: &[&str]) -> Output {
    let cwd = tempfile::tempdir().expect("tempdir");
    let owner = hub.owner_connection_string();
    let ca = hub.ca_path();
    let ca = ca.to_str().expect("utf-8 path");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--connection-string", &owner, "--ca", ca]);
    raw(cwd.path(), &all, &[]).await
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub(crate) fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({:?})\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// Asserts success and parses stdout as JSON.
pub(crate) fn ok_json(o: &Output) -> Value {
    let text = ok(o);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Runs an admin command against `hub` with its owner connection string and the CA at `ca`.
pub(crate) async fn run_with_ca(hub: &TestHub, ca: &Path, args: &[&str]) -> Output {
    let cwd = tempfile::tempdir().expect("tempdir");
    let owner = hub.owner_connection_string();
    let ca = ca.to_str().expect("utf-8 path");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--connection-string", &owner, "--ca", ca]);
    raw(cwd.path(), &all, &[]).await
}
