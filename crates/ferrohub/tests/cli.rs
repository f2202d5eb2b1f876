//! End-to-end tests of the admin commands: the real `ferrohub` binary against a real hub
//! (TLS, generated CA, owner connection string) started by `ferrohub-test-support`.

use ferrohub_auth::{SasToken, SymmetricKey};
use ferrohub_test_support::TestHub;
use serde_json::Value;

mod common;
use common::*;

fn primary_key(device: &Value) -> String {
    device["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .expect("primary key")
        .to_owned()
}

fn secondary_key(device: &Value) -> String {
    device["authentication"]["symmetricKey"]["secondaryKey"]
        .as_str()
        .expect("secondary key")
        .to_owned()
}

#[tokio::test]
async fn device_round_trip() {
    let hub = TestHub::start().await;

    let created = ok_json(&run(&hub, &["device", "create", "dev-1", "--output", "json"]).await);
    assert_eq!(created["deviceId"], "dev-1");
    assert_eq!(created["status"], "enabled");
    assert_eq!(created["capabilities"]["iotEdge"], false);
    let primary = primary_key(&created);
    let secondary = secondary_key(&created);
    assert!(
        SymmetricKey::validate_registry_key(&primary).is_ok(),
        "{primary}"
    );
    assert!(SymmetricKey::validate_registry_key(&secondary).is_ok());
    assert!(created["etag"].as_str().is_some_and(|e| !e.is_empty()));

    // Given keys and flags are kept.
    let k1 = SymmetricKey::generate().to_base64();
    let k2 = SymmetricKey::generate().to_base64();
    let edge = ok_json(
        &run(
            &hub,
            &[
                "device",
                "create",
                "edge-1",
                "--primary-key",
                &k1,
                "--secondary-key",
                &k2,
                "--disabled",
                "--edge",
                "--output",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(edge["status"], "disabled");
    assert_eq!(edge["capabilities"]["iotEdge"], true);
    assert_eq!(primary_key(&edge), k1);
    assert_eq!(secondary_key(&edge), k2);

    let shown = ok_json(&run(&hub, &["device", "show", "dev-1", "--output", "json"]).await);
    assert_eq!(shown["deviceId"], "dev-1");
    assert_eq!(primary_key(&shown), primary);

    // The table form is readable key/value lines.
    let table = ok(&run(&hub, &["device", "show", "dev-1"]).await);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("deviceId") && l.ends_with(" dev-1"))
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("status") && l.ends_with(" enabled"))
    );

    let listed = ok_json(&run(&hub, &["device", "list", "--output", "json"]).await);
    let ids: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|d| d["deviceId"].as_str())
        .collect();
    assert!(ids.contains(&"dev-1") && ids.contains(&"edge-1"), "{ids:?}");
    let list_table = ok(&run(&hub, &["device", "list"]).await);
    assert!(list_table.starts_with("DEVICE ID"), "{list_table}");
    assert_eq!(list_table.lines().count(), 3, "{list_table}");

    let updated = ok_json(
        &run(
            &hub,
            &[
                "device",
                "update",
                "dev-1",
                "--status",
                "disabled",
                "--status-reason",
                "maintenance",
                "--output",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(updated["status"], "disabled");
    assert_eq!(updated["statusReason"], "maintenance");
    assert_eq!(primary_key(&updated), primary, "keys survive an update");

    // A stale ETag is refused by the hub.
    let stale = created["etag"].as_str().expect("etag");
    let o = run(
        &hub,
        &[
            "device", "update", "dev-1", "--status", "enabled", "--etag", stale,
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("(PreconditionFailed)"),
        "{}",
        stderr(&o)
    );

    let enabled = ok_json(&run(&hub, &["device", "enable", "dev-1", "--output", "json"]).await);
    assert_eq!(enabled["status"], "enabled");
    assert_eq!(enabled["statusReason"], Value::Null);

    let disabled = ok_json(
        &run(
            &hub,
            &[
                "device", "disable", "dev-1", "--reason", "stolen", "--output", "json",
            ],
        )
        .await,
    );
    assert_eq!(disabled["status"], "disabled");
    assert_eq!(disabled["statusReason"], "stolen");
    let enabled = ok_json(&run(&hub, &["device", "enable", "dev-1", "--output", "json"]).await);
    assert_eq!(enabled["status"], "enabled");

    let regen = ok_json(
        &run(
            &hub,
            &[
                "device",
                "regenerate-key",
                "dev-1",
                "--key",
                "primary",
                "--output",
                "json",
            ],
        )
        .await,
    );
    let new_primary = primary_key(&regen);
    assert_ne!(new_primary, primary);
    assert!(SymmetricKey::validate_registry_key(&new_primary).is_ok());
    assert_eq!(secondary_key(&regen), secondary);
    let regen = ok_json(
        &run(
            &hub,
            &[
                "device",
                "regenerate-key",
                "dev-1",
                "--key",
                "both",
                "--output",
                "json",
            ],
        )
        .await,
    );
    assert_ne!(primary_key(&regen), new_primary);
    assert_ne!(secondary_key(&regen), secondary);
    let current = primary_key(&regen);

    let cs = ok(&run(&hub, &["device", "connection-string", "dev-1"]).await);
    assert_eq!(
        cs.trim(),
        format!("HostName=localhost;DeviceId=dev-1;SharedAccessKey={current}")
    );
    let cs = ok_json(
        &run(
            &hub,
            &[
                "device",
                "connection-string",
                "dev-1",
                "--key",
                "secondary",
                "--output",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(
        cs["connectionString"],
        format!(
            "HostName=localhost;DeviceId=dev-1;SharedAccessKey={}",
            secondary_key(&regen)
        )
    );

    let stats = ok_json(&run(&hub, &["stats", "--output", "json"]).await);
    assert_eq!(stats["registry"]["totalDeviceCount"], 2);
    assert_eq!(stats["registry"]["enabledDeviceCount"], 1);
    assert_eq!(stats["registry"]["disabledDeviceCount"], 1);
    assert_eq!(stats["service"]["connectedDeviceCount"], 0);
    let stats = ok(&run(&hub, &["stats"]).await);
    assert!(stats.contains("totalDeviceCount      2\n"), "{stats}");

    let deleted = ok(&run(&hub, &["device", "delete", "dev-1"]).await);
    assert!(deleted.contains("dev-1"), "{deleted}");
    let o = run(&hub, &["device", "show", "dev-1"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("(DeviceNotFound)"), "{}", stderr(&o));

    // Deleting with a matching ETag works; with a stale one it does not.
    let o = run(&hub, &["device", "delete", "edge-1", "--etag", "bm9wZQ=="]).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let etag = edge["etag"].as_str().expect("etag");
    ok(&run(
        &hub,
        &[
            "device", "delete", "edge-1", "--etag", etag, "--output", "json",
        ],
    )
    .await);
    let listed = ok_json(&run(&hub, &["device", "list", "--output", "json"]).await);
    assert_eq!(listed, Value::Array(vec![]));
}

#[tokio::test]
async fn missing_device_is_an_api_error() {
    let hub = TestHub::start().await;
    let o = run(&hub, &["device", "show", "nobody"]).await;
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.trim_end().ends_with("(DeviceNotFound)"), "{err}");
    assert!(err.contains("nobody"), "{err}");
    assert!(stdout(&o).is_empty());

    let o = run(&hub, &["device", "create", "twice"]).await;
    ok(&o);
    let o = run(&hub, &["device", "create", "twice"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("(DeviceAlreadyExists)"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test]
async fn configuration_errors_exit_2() {
    let hub = TestHub::start().await;
    let cwd = tempfile::tempdir().expect("tempdir");
    let ca = hub.ca_path();
    let ca = ca.to_str().expect("utf-8 path");

    let o = raw(
        cwd.path(),
        &[
            "device",
            "list",
            "--connection-string",
            "HostName=h;Nonsense=1",
            "--ca",
            ca,
        ],
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    assert!(stderr(&o).contains("Nonsense"), "{}", stderr(&o));

    // A device's connection string is not a policy's.
    let key = SymmetricKey::generate().to_base64();
    let device_cs = format!("HostName=localhost;DeviceId=d;SharedAccessKey={key}");
    let o = raw(
        cwd.path(),
        &[
            "device",
            "list",
            "--connection-string",
            &device_cs,
            "--ca",
            ca,
        ],
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    let owner = hub.owner_connection_string();
    let o = raw(
        cwd.path(),
        &[
            "device",
            "list",
            "--connection-string",
            &owner,
            "--ca",
            "/nonexistent/ca.pem",
        ],
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent/ca.pem"), "{}", stderr(&o));

    // Nothing to find.
    let o = raw(cwd.path(), &["stats"], &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--connection-string"), "{}", stderr(&o));

    // Bad usage is clap's exit 2 too.
    let o = raw(cwd.path(), &["token", "policy", "--ttl", "soon"], &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[tokio::test]
async fn wrong_ca_is_a_transport_error() {
    let hub = TestHub::start().await;
    let other = TestHub::start().await;
    let o = run_with_ca(&hub, &other.ca_path(), &["stats"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("error: could not reach the hub"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test]
async fn connection_string_and_ca_are_discovered() {
    let hub = TestHub::start().await;
    let data_dir = hub.data_dir().to_str().expect("utf-8 path").to_owned();

    // $FERROHUB_DATA_DIR holds owner.connection-string and tls/ca.pem.
    let cwd = tempfile::tempdir().expect("tempdir");
    let o = raw(
        cwd.path(),
        &["stats", "--output", "json"],
        &[("FERROHUB_DATA_DIR", &data_dir)],
    )
    .await;
    assert_eq!(ok_json(&o)["registry"]["totalDeviceCount"], 0);

    // ./ferrohub-data in the working directory.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(hub.data_dir(), cwd.path().join("ferrohub-data"))
            .expect("symlink");
        let o = raw(cwd.path(), &["device", "list", "--output", "json"], &[]).await;
        assert_eq!(ok_json(&o), Value::Array(vec![]));
    }

    // The environment variables, with the CA from $FERROHUB_CA.
    let empty = tempfile::tempdir().expect("tempdir");
    let owner = hub.owner_connection_string();
    let ca = hub.ca_path();
    let ca = ca.to_str().expect("utf-8 path");
    for var in ["FERROHUB_CONNECTION_STRING", "IOTHUB_CONNECTION_STRING"] {
        let o = raw(
            empty.path(),
            &["stats"],
            &[(var, &owner), ("FERROHUB_CA", ca)],
        )
        .await;
        ok(&o);
    }
}

#[tokio::test]
async fn tokens_verify() {
    let hub = TestHub::start().await;
    let created = ok_json(&run(&hub, &["device", "create", "tok-1", "--output", "json"]).await);
    let device_key = SymmetricKey::from_base64(&primary_key(&created)).expect("device key");
    let owner_key = hub.policy_key("iothubowner");

    // Signed with the device's own key, scoped to the device, host without port, no skn.
    let text = ok(&run(&hub, &["token", "device", "tok-1", "--ttl", "15m"]).await);
    let token = SasToken::parse(text.trim()).expect("token parses");
    assert!(token.signed_by(&device_key));
    assert_eq!(token.resource(), "localhost/devices/tok-1");
    assert_eq!(token.key_name(), None);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        token.expiry() > now + 800 && token.expiry() <= now + 901,
        "{}",
        token.expiry()
    );

    let secondary = SymmetricKey::from_base64(&secondary_key(&created)).expect("secondary");
    let text = ok(&run(&hub, &["token", "device", "tok-1", "--key", "secondary"]).await);
    assert!(
        SasToken::parse(text.trim())
            .expect("parses")
            .signed_by(&secondary)
    );

    // Token-service style: the connection string's own policy signs.
    let text = ok(&run(
        &hub,
        &["token", "device", "tok-1", "--policy", "iothubowner"],
    )
    .await);
    let token = SasToken::parse(text.trim()).expect("token parses");
    assert!(token.signed_by(&owner_key));
    assert!(!token.signed_by(&device_key));
    assert_eq!(token.key_name(), Some("iothubowner"));
    assert_eq!(token.resource(), "localhost/devices/tok-1");

    // Another policy's key is not at hand.
    let o = run(&hub, &["token", "device", "tok-1", "--policy", "device"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("iothubowner"), "{}", stderr(&o));
    // With that policy's connection string it is.
    let cwd = tempfile::tempdir().expect("tempdir");
    let device_policy = hub.policy_connection_string("device");
    let o = raw(
        cwd.path(),
        &[
            "token", "device", "tok-1", "--policy", "device", "--output", "json",
        ],
        &[("FERROHUB_CONNECTION_STRING", &device_policy)],
    )
    .await;
    let minted = ok_json(&o);
    let token =
        SasToken::parse(minted["sharedAccessSignature"].as_str().expect("token")).expect("parses");
    assert!(token.signed_by(&hub.policy_key("device")));
    assert_eq!(minted["keyName"], "device");
    assert_eq!(minted["resourceUri"], "localhost/devices/tok-1");

    // The policy's own hub-scoped token: sr is HostName with its port, as the SDKs sign.
    let text = ok(&run(&hub, &["token", "policy", "--ttl", "30s"]).await);
    let token = SasToken::parse(text.trim()).expect("token parses");
    assert!(token.signed_by(&owner_key));
    assert_eq!(token.key_name(), Some("iothubowner"));
    assert_eq!(
        token.resource(),
        format!("localhost:{}", hub.https_addr().port())
    );

    // A missing device has no key to sign with.
    let o = run(&hub, &["token", "device", "nobody"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("(DeviceNotFound)"), "{}", stderr(&o));
}

#[tokio::test]
async fn module_round_trip() {
    let hub = TestHub::start().await;
    ok(&run(&hub, &["device", "create", "host-1"]).await);

    let created = ok_json(
        &run(
            &hub,
            &["module", "create", "host-1", "mod-1", "--output", "json"],
        )
        .await,
    );
    assert_eq!(created["deviceId"], "host-1");
    assert_eq!(created["moduleId"], "mod-1");
    let key = primary_key(&created);
    assert!(SymmetricKey::validate_registry_key(&key).is_ok());

    let shown = ok_json(
        &run(
            &hub,
            &["module", "show", "host-1", "mod-1", "--output", "json"],
        )
        .await,
    );
    assert_eq!(primary_key(&shown), key);

    let listed = ok_json(&run(&hub, &["module", "list", "host-1", "--output", "json"]).await);
    let ids: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["moduleId"].as_str())
        .collect();
    assert_eq!(ids, ["mod-1"]);
    let table = ok(&run(&hub, &["module", "list", "host-1"]).await);
    assert!(table.starts_with("MODULE ID"), "{table}");

    let cs = ok(&run(&hub, &["module", "connection-string", "host-1", "mod-1"]).await);
    assert_eq!(
        cs.trim(),
        format!("HostName=localhost;DeviceId=host-1;ModuleId=mod-1;SharedAccessKey={key}")
    );

    let text = ok(&run(&hub, &["token", "module", "host-1", "mod-1"]).await);
    let token = SasToken::parse(text.trim()).expect("parses");
    assert!(token.signed_by(&SymmetricKey::from_base64(&key).expect("key")));
    assert_eq!(token.resource(), "localhost/devices/host-1/modules/mod-1");

    ok(&run(&hub, &["module", "delete", "host-1", "mod-1"]).await);
    let o = run(&hub, &["module", "show", "host-1", "mod-1"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("(ModuleNotFound)"), "{}", stderr(&o));
}

#[tokio::test]
async fn eventhub_connection_string() {
    let hub = TestHub::start().await;
    let owner = hub.owner_connection_string();
    let data_dir = hub.data_dir().to_str().expect("utf-8 path").to_owned();
    let cwd = tempfile::tempdir().expect("tempdir");
    let amqp_port = hub.amqp_addr().port();

    // The connection string's own policy, as the portal shows the built-in endpoint.
    let out = raw(
        cwd.path(),
        &[
            "eventhub",
            "connection-string",
            "--connection-string",
            &owner,
        ],
        &[("FERROHUB_DATA_DIR", &data_dir)],
    )
    .await;
    let owner_key = hub.policy_key("iothubowner").to_base64();
    assert_eq!(
        ok(&out).trim(),
        format!(
            "Endpoint=sb://localhost/;SharedAccessKeyName=iothubowner;SharedAccessKey={owner_key};\
             EntityPath=localhost"
        )
    );
    // The hub listens on an ephemeral port: the note says how to give it to each SDK.
    let note = stderr(&out);
    assert!(
        note.contains(&format!(
            "custom_endpoint_address=\"sb://localhost:{amqp_port}\""
        )) && note.contains("customEndpointAddress"),
        "{note}"
    );

    // Another policy's key comes from the data directory.
    let out = raw(
        cwd.path(),
        &[
            "eventhub",
            "connection-string",
            "--policy",
            "service",
            "--output",
            "json",
            "--connection-string",
            &owner,
        ],
        &[("FERROHUB_DATA_DIR", &data_dir)],
    )
    .await;
    let json = ok_json(&out);
    let service_key = hub.policy_key("service").to_base64();
    assert_eq!(
        json["connectionString"],
        format!(
            "Endpoint=sb://localhost/;SharedAccessKeyName=service;SharedAccessKey={service_key};\
             EntityPath=localhost"
        )
    );
    assert_eq!(json["eventHubName"], "localhost");
    assert_eq!(json["amqpPort"], amqp_port);
    assert_eq!(
        json["customEndpointAddress"],
        format!("sb://localhost:{amqp_port}")
    );

    // Without the data directory only the connection string's own key is at hand.
    let out = raw(
        cwd.path(),
        &[
            "eventhub",
            "connection-string",
            "--policy",
            "service",
            "--connection-string",
            &owner,
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("policies.json"), "{}", stderr(&out));
}
