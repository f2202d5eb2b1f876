//! `ferrohub eventhub …`: the Event Hub-compatible endpoint, as Azure's portal shows it.
//!
//! `eventhub connection-string [--policy NAME]` prints
//! `Endpoint=sb://{host}/;SharedAccessKeyName={policy};SharedAccessKey={key};EntityPath={hub}`,
//! the string `azure-eventhub` and `@azure/event-hubs` take. The host is the connection
//! string's `HostName` without its port, the Event Hub's name is the host's first label (as the
//! hub names it), and the key is the policy's own key text (the Event Hubs SDKs sign with it as
//! it is written).
//!
//! The endpoint never carries a port: Python `azure-eventhub` 5.15 ignores it over TLS and dials
//! 5671 (`Endpoint` gives only the host), so a port there would silently reach the wrong server.
//! When the hub's AMQP port is not 5671, a note on stderr says how each SDK is given it
//! (`custom_endpoint_address` with `transport_type=TransportType.Amqp` in Python,
//! `customEndpointAddress` in JS), and `--output json` carries it as `customEndpointAddress`.
//! The port comes from `--amqp-port`, else from `listeners.json` in the data directory.
//!
//! The key of the connection string's own policy is at hand; another policy's (`--policy
//! service`) is read from `policies.json` in the data directory, so that form works where the
//! hub's data directory is (`$FERROHUB_DATA_DIR` or `./ferrohub-data`).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use ferrohub_auth::ConnectionString;
use serde::{Deserialize, Serialize};

use super::discovery::{self, DEFAULT_DATA_DIR};
use super::{Failure, HubArgs, Output, emit, env_var, host_without_port};

/// The AMQP port the Event Hubs SDKs dial when told nothing else.
pub(crate) const DEFAULT_AMQP_PORT: u16 = 5671;

/// Event Hub-compatible endpoint commands.
#[derive(Debug, Subcommand)]
pub(crate) enum EventHubCommand {
    /// Print the Event Hub-compatible connection string for the Event Hubs SDKs
    ConnectionString(ConnectionStringArgs),
}

/// `eventhub connection-string`.
#[derive(Debug, Args)]
pub(crate) struct ConnectionStringArgs {
    /// The shared access policy whose key the string carries (it needs ServiceConnect); by
    /// default the connection string's own policy. Another policy's key is read from
    /// policies.json in the hub's data directory
    #[arg(long, value_name = "POLICY")]
    policy: Option<String>,
    /// The hub's AMQP port; by default the one in listeners.json in the data directory, else
    /// 5671
    #[arg(long, value_name = "PORT")]
    amqp_port: Option<u16>,
    #[command(flatten)]
    hub: HubArgs,
}

/// The endpoint, as `--output json` prints it.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Endpoint {
    connection_string: String,
    host: String,
    event_hub_name: String,
    policy: String,
    amqp_port: u16,
    /// `sb://{host}:{port}` when the port is not 5671: what the SDKs' custom endpoint options
    /// take.
    custom_endpoint_address: Option<String>,
}

impl EventHubCommand {
    pub(crate) async fn run(self) -> Result<(), Failure> {
        match self {
            EventHubCommand::ConnectionString(a) => a.run(),
        }
    }
}

impl ConnectionStringArgs {
    fn run(self) -> Result<(), Failure> {
        let conn = self.hub.connection_string()?;
        let cwd = Path::new(".");
        let key = policy_key(&conn, self.policy.as_deref(), &env_var, cwd)?;
        let port = match self.amqp_port {
            Some(p) => p,
            None => listeners_amqp_port(&env_var, cwd)?.unwrap_or(DEFAULT_AMQP_PORT),
        };
        let endpoint = endpoint(&conn.host_name, &key.0, &key.1, port);
        match self.hub.output {
            Output::Table => {
                emit(&endpoint.connection_string);
                if let Some(custom) = &endpoint.custom_endpoint_address {
                    eprintln!(
                        "note: the hub's AMQP port is {port}, not 5671; the Endpoint cannot carry \
                         it. Give it to the SDK: Python custom_endpoint_address=\"{custom}\" with \
                         transport_type=TransportType.Amqp; JS customEndpointAddress: \"{custom}\""
                    );
                }
            }
            Output::Json => emit(&super::output::json(&endpoint)?),
        }
        Ok(())
    }
}

/// The endpoint of a hub reached at `host_name` (a port there is dropped), for `policy`.
pub(crate) fn endpoint(host_name: &str, policy: &str, key: &str, amqp_port: u16) -> Endpoint {
    let host = host_without_port(host_name).to_owned();
    let event_hub_name = host.split('.').next().unwrap_or(&host).to_owned();
    Endpoint {
        connection_string: format!(
            "Endpoint=sb://{host}/;SharedAccessKeyName={policy};SharedAccessKey={key};\
             EntityPath={event_hub_name}"
        ),
        custom_endpoint_address: (amqp_port != DEFAULT_AMQP_PORT)
            .then(|| format!("sb://{host}:{amqp_port}")),
        host,
        event_hub_name,
        policy: policy.to_owned(),
        amqp_port,
    }
}

/// The policy's name and key text: the connection string's own, or `wanted`'s from
/// `policies.json`.
fn policy_key(
    conn: &ConnectionString,
    wanted: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<(String, String), Failure> {
    let own = match (
        &conn.device_id,
        &conn.shared_access_key_name,
        &conn.shared_access_key,
    ) {
        (None, Some(name), Some(key)) => Some((name.clone(), key.clone())),
        _ => None,
    };
    match (wanted, own) {
        (None, Some(own)) => Ok(own),
        (Some(w), Some(own)) if w == own.0 => Ok(own),
        (None, None) => Err(Failure::Usage(
            "the connection string is not a shared access policy's \
             (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…); pass --policy to read a \
             policy's key from the hub's data directory"
                .into(),
        )),
        (Some(w), _) => {
            let Some(path) = data_file("policies.json", env, cwd) else {
                return Err(Failure::Usage(format!(
                    "--policy {w}: the connection string does not hold that policy's key, and no \
                     policies.json was found in $FERROHUB_DATA_DIR or ./{DEFAULT_DATA_DIR}; pass \
                     policy {w:?}'s own connection string instead"
                )));
            };
            let key = read_policy_key(&path, w)?;
            Ok((w.to_owned(), key))
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicyRule {
    key_name: String,
    primary_key: String,
}

#[derive(Deserialize)]
struct PolicyFile {
    policies: Vec<PolicyRule>,
}

fn read_policy_key(path: &Path, name: &str) -> Result<String, Failure> {
    let text = std::fs::read(path)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
    let file: PolicyFile = serde_json::from_slice(&text)
        .map_err(|e| Failure::Usage(format!("{} is not a policy file: {e}", path.display())))?;
    file.policies
        .into_iter()
        .find(|p| p.key_name == name)
        .map(|p| p.primary_key)
        .ok_or_else(|| {
            Failure::Usage(format!(
                "the hub has no shared access policy {name:?} ({})",
                path.display()
            ))
        })
}

/// `name` in the first data directory that has it.
fn data_file(name: &str, env: &dyn Fn(&str) -> Option<String>, cwd: &Path) -> Option<PathBuf> {
    discovery::data_dirs(env, cwd)
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The AMQP port in the data directory's `listeners.json` (`"amqp": "host:port"`), if any.
fn listeners_amqp_port(
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<Option<u16>, Failure> {
    let Some(path) = data_file("listeners.json", env, cwd) else {
        return Ok(None);
    };
    let text = std::fs::read(&path)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
    let value: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| Failure::Usage(format!("{} is not JSON: {e}", path.display())))?;
    Ok(value
        .get("amqp")
        .and_then(serde_json::Value::as_str)
        .and_then(|addr| addr.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";
    const SERVICE_KEY: &str = "c2VydmljZWtleXNlcnZpY2VrZXlzZXJ2aWNla2V5cw==";

    fn env_with(dir: &Path) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<&str, String> =
            HashMap::from([("FERROHUB_DATA_DIR", dir.display().to_string())]);
        move |k| vars.get(k).cloned()
    }

    #[test]
    fn the_endpoint_names_the_host_without_port_and_the_hub() {
        let e = endpoint("myhub.example.com:8443", "service", KEY, 5671);
        assert_eq!(
            e.connection_string,
            format!(
                "Endpoint=sb://myhub.example.com/;SharedAccessKeyName=service;\
                 SharedAccessKey={KEY};EntityPath=myhub"
            )
        );
        assert_eq!(e.custom_endpoint_address, None);
        let e = endpoint("localhost", "iothubowner", KEY, 15671);
        assert!(e.connection_string.starts_with("Endpoint=sb://localhost/;"));
        assert!(e.connection_string.ends_with(";EntityPath=localhost"));
        assert_eq!(
            e.custom_endpoint_address.as_deref(),
            Some("sb://localhost:15671")
        );
        let json = serde_json::to_value(&e).expect("json");
        assert_eq!(json["eventHubName"], "localhost");
        assert_eq!(json["amqpPort"], 15671);
    }

    #[test]
    fn another_policy_is_read_from_the_data_directory() {
        let data = tempfile::tempdir().expect("tempdir");
        let cwd = tempfile::tempdir().expect("tempdir");
        let owner = ConnectionString::policy("localhost:8443", "iothubowner", KEY);
        let env = env_with(data.path());

        assert_eq!(
            policy_key(&owner, None, &env, cwd.path()).expect("own"),
            ("iothubowner".to_owned(), KEY.to_owned())
        );
        assert_eq!(
            policy_key(&owner, Some("iothubowner"), &env, cwd.path()).expect("own"),
            ("iothubowner".to_owned(), KEY.to_owned())
        );
        assert!(matches!(
            policy_key(&owner, Some("service"), &env, cwd.path()),
            Err(Failure::Usage(_))
        ));

        std::fs::write(
            data.path().join("policies.json"),
            format!(
                r#"{{"policies":[{{"keyName":"service","primaryKey":"{SERVICE_KEY}",
                "secondaryKey":"x","rights":"ServiceConnect"}}]}}"#
            ),
        )
        .expect("write");
        assert_eq!(
            policy_key(&owner, Some("service"), &env, cwd.path()).expect("service"),
            ("service".to_owned(), SERVICE_KEY.to_owned())
        );
        match policy_key(&owner, Some("nobody"), &env, cwd.path()) {
            Err(Failure::Usage(m)) => assert!(m.contains("nobody"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }

        let device = ConnectionString::device("localhost", "d1", None, KEY);
        assert!(matches!(
            policy_key(&device, None, &env, cwd.path()),
            Err(Failure::Usage(_))
        ));
    }

    #[test]
    fn the_amqp_port_comes_from_listeners_json() {
        let data = tempfile::tempdir().expect("tempdir");
        let cwd = tempfile::tempdir().expect("tempdir");
        let env = env_with(data.path());
        assert_eq!(listeners_amqp_port(&env, cwd.path()).expect("none"), None);
        std::fs::write(
            data.path().join("listeners.json"),
            r#"{"https":"127.0.0.1:8443","mqtt":"127.0.0.1:8883","amqp":"127.0.0.1:40123"}"#,
        )
        .expect("write");
        assert_eq!(
            listeners_amqp_port(&env, cwd.path()).expect("read"),
            Some(40123)
        );
        std::fs::write(data.path().join("listeners.json"), r#"{"amqp":null}"#).expect("write");
        assert_eq!(listeners_amqp_port(&env, cwd.path()).expect("read"), None);
    }
}
