//! What the generator talks to: `ferrohub://DATA_DIR` (a local Ferrohub, found through the
//! files it writes in its data directory) or `mqtt://HOST:PORT` (any MQTT 3.1.1 broker). Only
//! loopback addresses are accepted.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use ferrohub_auth::ConnectionString;
use serde::Deserialize;

use crate::conn::{Endpoint, Tls};
use crate::identity;

/// A `--target` as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// `ferrohub://DATA_DIR`.
    Ferrohub(PathBuf),
    /// `mqtt://HOST:PORT`, HOST a loopback address or `localhost`.
    Mqtt(SocketAddr),
}

impl FromStr for TargetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(dir) = s.strip_prefix("ferrohub://") {
            if dir.is_empty() {
                return Err("ferrohub:// needs a data directory, e.g. ferrohub:///tmp/hub".into());
            }
            return Ok(TargetSpec::Ferrohub(PathBuf::from(dir)));
        }
        if let Some(rest) = s.strip_prefix("mqtt://") {
            let rest = rest.trim_end_matches('/');
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("{s:?}: expected mqtt://HOST:PORT"))?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("{s:?}: {port:?} is not a port"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let ip = if host.eq_ignore_ascii_case("localhost") {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                host.parse::<IpAddr>()
                    .map_err(|_| format!("{s:?}: {host:?} is not an IP address or localhost"))?
            };
            let addr = SocketAddr::new(ip, port);
            check_loopback(addr)?;
            return Ok(TargetSpec::Mqtt(addr));
        }
        Err(format!(
            "{s:?}: expected ferrohub://DATA_DIR or mqtt://HOST:PORT"
        ))
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::Ferrohub(dir) => write!(f, "ferrohub://{}", dir.display()),
            TargetSpec::Mqtt(addr) => write!(f, "mqtt://{addr}"),
        }
    }
}

/// Refuses anything but 127.0.0.0/8 and ::1: load goes to this machine only.
pub fn check_loopback(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "{addr} is not a loopback address; the generator only targets 127.0.0.0/8 and ::1"
        ))
    }
}

/// `listeners.json` in a Ferrohub data directory.
#[derive(Debug, Clone, Deserialize)]
pub struct Listeners {
    /// The HTTPS (REST) listener.
    pub https: SocketAddr,
    /// MQTT over TLS.
    pub mqtt: SocketAddr,
    /// Plain-TCP MQTT, when enabled.
    #[serde(default)]
    pub mqtt_plain: Option<SocketAddr>,
    /// AMQP over TLS, when enabled.
    #[serde(default)]
    pub amqp: Option<SocketAddr>,
}

/// A local Ferrohub: its listeners, CA and owner credentials.
#[derive(Debug, Clone)]
pub struct Ferrohub {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Where it listens.
    pub listeners: Listeners,
    /// The `iothubowner` connection string (`HostName=localhost:P;…`).
    pub owner: ConnectionString,
    /// The host name devices use in tokens and user names (`HostName` without the port).
    pub device_host: String,
    /// The development CA (`tls/ca.pem`).
    pub ca_pem: Vec<u8>,
}

impl Ferrohub {
    /// Reads `listeners.json`, `owner.connection-string` and `tls/ca.pem` from `data_dir`.
    pub fn load(data_dir: &Path) -> anyhow::Result<Ferrohub> {
        let path = data_dir.join("listeners.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (is the hub running?)", path.display()))?;
        let listeners: Listeners =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        for addr in [
            Some(listeners.https),
            Some(listeners.mqtt),
            listeners.mqtt_plain,
            listeners.amqp,
        ]
        .into_iter()
        .flatten()
        {
            check_loopback(addr).map_err(anyhow::Error::msg)?;
        }
        let path = data_dir.join("owner.connection-string");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let owner: ConnectionString = text
            .trim()
            .parse()
            .with_context(|| format!("parsing {}", path.display()))?;
        let device_host = identity::host_without_port(&owner.host_name).to_owned();
        let path = data_dir.join("tls").join("ca.pem");
        let ca_pem = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Ferrohub {
            data_dir: data_dir.to_owned(),
            listeners,
            owner,
            device_host,
            ca_pem,
        })
    }

    /// `https://{HostName}`, the REST base URL.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.owner.host_name)
    }

    /// An HTTPS client that trusts the hub's CA and resolves its host name to the HTTPS
    /// listener (so requests stay on loopback whatever `localhost` resolves to).
    pub fn http_client(&self) -> anyhow::Result<reqwest::Client> {
        crate::conn::install_crypto();
        let ca = reqwest::Certificate::from_pem(&self.ca_pem).context("parsing the hub's CA")?;
        let client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .resolve(&self.device_host, self.listeners.https)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(90))
            .build()
            .context("building the HTTPS client")?;
        Ok(client)
    }

    /// A fresh `iothubowner` service token valid for a day.
    pub fn service_token(&self) -> anyhow::Result<String> {
        identity::service_token(
            &self.owner,
            identity::unix_now() + identity::TOKEN_TTL.as_secs(),
        )
    }
}

/// A resolved target: where MQTT connections go, and the hub's details for a Ferrohub.
#[derive(Debug, Clone)]
pub struct Target {
    /// As given.
    pub spec: TargetSpec,
    /// Where MQTT connections go.
    pub endpoint: Endpoint,
    /// The hub, for `ferrohub://` targets.
    pub ferrohub: Option<Ferrohub>,
}

/// TLS options from the command line.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Connect with TLS (Ferrohub: its TLS port instead of the plain one).
    pub enabled: bool,
    /// CA file to trust; for Ferrohub the default is its `tls/ca.pem`.
    pub ca: Option<PathBuf>,
    /// The name to verify (default `localhost`).
    pub server_name: String,
    /// Allow TLS session resumption between connections.
    pub resume: bool,
}

impl Target {
    /// Resolves `spec`: for Ferrohub reads its data directory and picks the TLS or plain MQTT
    /// port; for a broker uses the address as given.
    pub fn resolve(spec: &TargetSpec, tls: &TlsOptions) -> anyhow::Result<Target> {
        let server_name = if tls.server_name.is_empty() {
            "localhost"
        } else {
            tls.server_name.as_str()
        };
        let ca_from_file = match &tls.ca {
            Some(path) => {
                Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
            }
            None => None,
        };
        match spec {
            TargetSpec::Ferrohub(dir) => {
                let hub = Ferrohub::load(dir)?;
                let (addr, tls_settings) = if tls.enabled {
                    let ca = ca_from_file.as_deref().unwrap_or(&hub.ca_pem);
                    (
                        hub.listeners.mqtt,
                        Some(Tls::from_ca_pem(ca, server_name, tls.resume)?),
                    )
                } else {
                    let addr = hub.listeners.mqtt_plain.ok_or_else(|| {
                        anyhow::anyhow!(
                            "the hub has no plain MQTT listener (start it with --mqtt-plain-port), or pass --tls"
                        )
                    })?;
                    (addr, None)
                };
                Ok(Target {
                    spec: spec.clone(),
                    endpoint: Endpoint {
                        addr,
                        tls: tls_settings,
                    },
                    ferrohub: Some(hub),
                })
            }
            TargetSpec::Mqtt(addr) => {
                let tls_settings = if tls.enabled {
                    let ca = ca_from_file.ok_or_else(|| {
                        anyhow::anyhow!("--tls against an mqtt:// target needs --ca FILE")
                    })?;
                    Some(Tls::from_ca_pem(&ca, server_name, tls.resume)?)
                } else {
                    None
                };
                Ok(Target {
                    spec: spec.clone(),
                    endpoint: Endpoint {
                        addr: *addr,
                        tls: tls_settings,
                    },
                    ferrohub: None,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ferrohub_targets() {
        assert_eq!(
            "ferrohub:///tmp/hub".parse::<TargetSpec>(),
            Ok(TargetSpec::Ferrohub("/tmp/hub".into()))
        );
        assert_eq!(
            "ferrohub://data".parse::<TargetSpec>(),
            Ok(TargetSpec::Ferrohub("data".into()))
        );
        assert!("ferrohub://".parse::<TargetSpec>().is_err());
    }

    #[test]
    fn parses_mqtt_targets_on_loopback_only() {
        assert_eq!(
            "mqtt://127.0.0.1:1883".parse::<TargetSpec>(),
            Ok(TargetSpec::Mqtt("127.0.0.1:1883".parse().expect("addr")))
        );
        assert_eq!(
            "mqtt://localhost:1884/".parse::<TargetSpec>(),
            Ok(TargetSpec::Mqtt("127.0.0.1:1884".parse().expect("addr")))
        );
        assert_eq!(
            "mqtt://127.3.2.1:9".parse::<TargetSpec>(),
            Ok(TargetSpec::Mqtt("127.3.2.1:9".parse().expect("addr")))
        );
        assert_eq!(
            "mqtt://[::1]:1883".parse::<TargetSpec>(),
            Ok(TargetSpec::Mqtt("[::1]:1883".parse().expect("addr")))
        );
        for bad in [
            "mqtt://10.0.0.1:1883",
            "mqtt://192.168.1.1:1883",
            "mqtt://example.com:1883",
            "mqtt://127.0.0.1",
            "mqtt://127.0.0.1:99999",
            "tcp://127.0.0.1:1883",
            "",
        ] {
            assert!(bad.parse::<TargetSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["ferrohub:///tmp/hub", "mqtt://127.0.0.1:1883"] {
            assert_eq!(s.parse::<TargetSpec>().expect("parses").to_string(), s);
        }
    }

    #[test]
    fn loads_a_data_directory() {
        let dir =
            std::env::temp_dir().join(format!("ferrohub-bench-target-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tls")).expect("mkdir");
        std::fs::write(
            dir.join("listeners.json"),
            r#"{"https":"127.0.0.1:8443","mqtt":"127.0.0.1:8883","mqtt_plain":"127.0.0.1:1883"}"#,
        )
        .expect("write");
        std::fs::write(
            dir.join("owner.connection-string"),
            "HostName=localhost:8443;SharedAccessKeyName=iothubowner;SharedAccessKey=NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=\n",
        )
        .expect("write");
        std::fs::write(dir.join("tls").join("ca.pem"), "x").expect("write");
        let hub = Ferrohub::load(&dir).expect("loads");
        assert_eq!(hub.device_host, "localhost");
        assert_eq!(hub.base_url(), "https://localhost:8443");
        assert_eq!(
            hub.listeners.mqtt_plain,
            Some("127.0.0.1:1883".parse().expect("addr"))
        );
        let plain = Target::resolve(&TargetSpec::Ferrohub(dir.clone()), &TlsOptions::default())
            .expect("resolves");
        assert_eq!(plain.endpoint.addr.port(), 1883);
        assert!(plain.endpoint.tls.is_none());
        std::fs::write(
            dir.join("listeners.json"),
            r#"{"https":"10.1.1.1:8443","mqtt":"127.0.0.1:8883"}"#,
        )
        .expect("write");
        assert!(Ferrohub::load(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
