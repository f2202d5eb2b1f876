//! Configuration: a commented TOML file, overridden by `FERROHUB_*` environment variables and
//! flags, validated in full before anything is bound.
//!
//! Two stages, as the file format and the running hub want different things: [`ConfigToml`] is
//! the raw file (every key optional, unknown keys rejected), and [`Config::from_toml`] checks
//! every value and produces the [`Config`] the hub runs with.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ferrohub_auth::SymmetricKey;
use serde::Deserialize;

/// The commented default configuration, as `ferrohub config generate` prints it.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../../config/ferrohub.toml");

/// The names of the built-in shared access policies.
pub const BUILTIN_POLICIES: [&str; 5] = [
    "iothubowner",
    "service",
    "device",
    "registryRead",
    "registryReadWrite",
];

/// Why a configuration was refused. Every variant names the key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file is not valid TOML or has an unknown key (the message names it).
    #[error("configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the TOML parser said.
        message: String,
    },
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A value is out of range or malformed.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// The key, in file notation (`https.port`).
        key: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// The configuration file as written. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigToml {
    /// `data_dir`.
    pub data_dir: Option<PathBuf>,
    /// `hostname`.
    pub hostname: Option<String>,
    /// `aliases`.
    pub aliases: Option<Vec<String>>,
    /// `bind`.
    pub bind: Option<String>,
    /// `[https]`.
    #[serde(default)]
    pub https: HttpsToml,
    /// `[mqtt]`.
    #[serde(default)]
    pub mqtt: MqttToml,
    /// `[amqp]`.
    #[serde(default)]
    pub amqp: AmqpToml,
    /// `[eventlog]`.
    #[serde(default)]
    pub eventlog: EventLogToml,
    /// `[c2d]`.
    #[serde(default)]
    pub c2d: C2dToml,
    /// `[limits]`.
    #[serde(default)]
    pub limits: LimitsToml,
    /// `[tls]`.
    #[serde(default)]
    pub tls: TlsToml,
    /// `[policies.<name>]`.
    #[serde(default)]
    pub policies: BTreeMap<String, PolicyKeysToml>,
    /// `[log]`.
    #[serde(default)]
    pub log: LogToml,
    /// `[jobs]`.
    #[serde(default)]
    pub jobs: JobsToml,
    /// `[cluster]`: absent for the embedded mode.
    pub cluster: Option<ClusterToml>,
}

/// `[cluster]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterToml {
    /// `postgres`: a `postgres://` URL or libpq key=value string.
    pub postgres: Option<String>,
    /// `nats`: the NATS servers' URLs.
    pub nats: Option<Vec<String>>,
    /// `node`: this node's name, unique in the cluster.
    pub node: Option<String>,
    /// `replicas`: JetStream replicas of the event streams (1 to 5).
    pub replicas: Option<usize>,
    /// `prefix`: prefix of the JetStream stream names and NATS subjects.
    pub prefix: Option<String>,
    /// `presence_interval`: most often an identity's activity is written to PostgreSQL.
    pub presence_interval: Option<String>,
    /// `nats_grace`: how long NATS may be unreachable before the node fences itself.
    pub nats_grace: Option<String>,
    /// `postgres_grace`: how long PostgreSQL may be unreachable before the node fences itself.
    pub postgres_grace: Option<String>,
}

/// The validated `[cluster]` section: the engines a cluster node shares with the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// PostgreSQL connection string.
    pub postgres: String,
    /// NATS server URLs (at least one).
    pub nats: Vec<String>,
    /// This node's name: unique among the live nodes.
    pub node: String,
    /// JetStream replicas of the event streams.
    pub replicas: usize,
    /// Prefix of the JetStream stream names and of the NATS subjects nodes talk on, so that
    /// several hubs can share one NATS cluster.
    pub prefix: String,
    /// How often at most an identity's `lastActivityTime` is written to PostgreSQL.
    pub presence_interval: std::time::Duration,
    /// How long NATS may be unreachable before the node stops serving devices.
    pub nats_grace: std::time::Duration,
    /// How long PostgreSQL may be unreachable before the node stops serving devices.
    pub postgres_grace: std::time::Duration,
}

/// `[https]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsToml {
    /// `https.port`.
    pub port: Option<u16>,
    /// `https.max_request_body_bytes`.
    pub max_request_body_bytes: Option<usize>,
    /// `https.handshake_timeout`.
    pub handshake_timeout: Option<String>,
    /// `https.header_read_timeout`.
    pub header_read_timeout: Option<String>,
    /// `https.idle_timeout`.
    pub idle_timeout: Option<String>,
    /// `https.max_connections`.
    pub max_connections: Option<usize>,
}

/// `[jobs]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsToml {
    /// `jobs.file_root`.
    pub file_root: Option<PathBuf>,
    /// `jobs.allow_private_addresses`.
    pub allow_private_addresses: Option<bool>,
    /// `jobs.max_input_blob_bytes`.
    pub max_input_blob_bytes: Option<u64>,
    /// `jobs.max_concurrent_jobs`.
    pub max_concurrent_jobs: Option<u64>,
    /// `jobs.lease_seconds`.
    pub lease_seconds: Option<u64>,
}

/// `[mqtt]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttToml {
    /// `mqtt.port`.
    pub port: Option<u16>,
    /// `mqtt.plain_port`.
    pub plain_port: Option<u16>,
}

/// `[amqp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpToml {
    /// `amqp.port`.
    pub port: Option<u16>,
}

/// `[eventlog]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLogToml {
    /// `eventlog.partitions`.
    pub partitions: Option<u32>,
    /// `eventlog.retention`.
    pub retention: Option<String>,
    /// `eventlog.max_bytes_per_partition`.
    pub max_bytes_per_partition: Option<u64>,
    /// `eventlog.max_commit_wait_ms`.
    pub max_commit_wait_ms: Option<u64>,
}

/// The size cap of a partition when none is configured: 10 GiB.
pub const DEFAULT_MAX_BYTES_PER_PARTITION: u64 = 10 << 30;

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsToml {
    /// `limits.max_connections`.
    pub max_connections: Option<usize>,
    /// `limits.device_messages_per_second`.
    pub device_messages_per_second: Option<u32>,
    /// `limits.max_throttle_backlog`.
    pub max_throttle_backlog: Option<String>,
    /// `limits.device_connects_per_second`.
    pub device_connects_per_second: Option<u32>,
    /// `limits.hub_connects_per_second`.
    pub hub_connects_per_second: Option<u32>,
}

/// `[c2d]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct C2dToml {
    /// `c2d.max_queue_depth`.
    pub max_queue_depth: Option<usize>,
    /// `c2d.default_ttl`.
    pub default_ttl: Option<String>,
    /// `c2d.max_delivery_count`.
    pub max_delivery_count: Option<u32>,
}

/// `[tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsToml {
    /// `tls.cert_file`.
    pub cert_file: Option<PathBuf>,
    /// `tls.key_file`.
    pub key_file: Option<PathBuf>,
}

/// `[policies.<name>]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyKeysToml {
    /// Base64 primary key.
    pub primary_key: Option<String>,
    /// Base64 secondary key.
    pub secondary_key: Option<String>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogToml {
    /// `log.level`.
    pub level: Option<String>,
    /// `log.format`.
    pub format: Option<String>,
}

/// The HTTPS listener's protections against idle, slow and too many connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsLimits {
    /// Longest a client may take to complete the TLS handshake.
    pub handshake_timeout: std::time::Duration,
    /// Longest a client may take to send a request's headers (HTTP/1.1). hyper starts it when
    /// it waits for a request, so it also ends keep-alive connections that send no next one.
    pub header_read_timeout: std::time::Duration,
    /// How long a connection may stay open with no request in flight (HTTP/1.1 keep-alive and
    /// HTTP/2 alike). WebSocket connections are not HTTP requests any more and never idle out.
    pub idle_timeout: std::time::Duration,
    /// Most HTTPS connections open at once (including WebSocket ones); `None` sizes it from the
    /// process's file-descriptor limit when the listener starts.
    pub max_connections: Option<usize>,
}

impl Default for HttpsLimits {
    fn default() -> Self {
        HttpsLimits {
            handshake_timeout: std::time::Duration::from_secs(10),
            header_read_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(60),
            max_connections: None,
        }
    }
}

/// Where import and export jobs may read and write, and how they reach blob stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobsSettings {
    /// The only directory `file://` containers may name (they must lie inside it); `None` is
    /// `<data_dir>/job-files`, created at start.
    pub file_root: Option<PathBuf>,
    /// Whether `http(s)` containers may resolve to loopback, private, link-local or other
    /// non-public addresses. Defaults to true only when the hub binds a loopback address.
    pub allow_private_addresses: bool,
    /// Most bytes an import downloads from an `http(s)` input blob.
    pub max_input_blob_bytes: u64,
    /// Most scheduled jobs (`/jobs/v2`) unfinished at once (queued, scheduled or running)
    /// across the hub; one more is refused with 429004. Azure allows 1 on S1, 5 on S2 and 10
    /// on S3.
    pub max_concurrent_jobs: u64,
    /// How long a node's claim on a job it runs lasts without renewal: after a node dies,
    /// another takes over its scheduled jobs (and fails its import or export job) this long
    /// after its last renewal.
    pub lease: std::time::Duration,
}

/// The default of `jobs.max_concurrent_jobs`: Azure's S3 limit.
pub const DEFAULT_MAX_CONCURRENT_JOBS: u64 = 10;

/// The default of `jobs.lease_seconds`.
pub const DEFAULT_JOB_LEASE_SECONDS: u64 = 30;

/// The default of `jobs.max_input_blob_bytes`: 1 GiB (about four million identities).
pub const DEFAULT_MAX_INPUT_BLOB_BYTES: u64 = 1 << 30;

/// Values from the environment and the command line; each wins over the file when set.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--data-dir` / `FERROHUB_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--hostname` / `FERROHUB_HOSTNAME`.
    pub hostname: Option<String>,
    /// `--https-port` / `FERROHUB_HTTPS_PORT`.
    pub https_port: Option<u16>,
    /// `--mqtt-port` / `FERROHUB_MQTT_PORT`.
    pub mqtt_port: Option<u16>,
    /// `--mqtt-plain-port` / `FERROHUB_MQTT_PLAIN_PORT`.
    pub mqtt_plain_port: Option<u16>,
    /// `--amqp-port` / `FERROHUB_AMQP_PORT`.
    pub amqp_port: Option<u16>,
    /// `--bind` / `FERROHUB_BIND`.
    pub bind: Option<String>,
    /// `--log` / `FERROHUB_LOG`.
    pub log_level: Option<String>,
    /// `--log-format` / `FERROHUB_LOG_FORMAT`.
    pub log_format: Option<String>,
    /// `--node` / `FERROHUB_NODE`: `cluster.node`.
    pub node: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// A user-supplied server certificate.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// Keys given in the configuration for one built-in policy.
#[derive(Debug, Clone, Default)]
pub struct PolicyKeys {
    /// Base64 primary key, validated.
    pub primary_key: Option<String>,
    /// Base64 secondary key, validated.
    pub secondary_key: Option<String>,
}

/// The validated configuration the hub runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where state lives.
    pub data_dir: PathBuf,
    /// The hub's host name.
    pub hostname: String,
    /// More names the hub answers to.
    pub aliases: Vec<String>,
    /// Address every listener binds.
    pub bind: IpAddr,
    /// HTTPS port; 443 falls back to 8443 where it may not be bound.
    pub https_port: u16,
    /// Largest request body accepted.
    pub max_request_body_bytes: usize,
    /// Timeouts and the connection cap of the HTTPS listener.
    pub https_limits: HttpsLimits,
    /// Import and export job containers.
    pub jobs: JobsSettings,
    /// MQTT over TLS port.
    pub mqtt_port: u16,
    /// Plain-TCP MQTT port, only when configured.
    pub mqtt_plain_port: Option<u16>,
    /// AMQP 1.0 over TLS port.
    pub amqp_port: u16,
    /// A user-supplied certificate, or `None` for the generated development one.
    pub tls: Option<TlsFiles>,
    /// Cloud-to-device queue settings.
    pub c2d: ferrohub_c2d::C2dConfig,
    /// Most live MQTT connections.
    pub max_connections: usize,
    /// Telemetry a second one device may send, in 4 KB message units.
    pub device_messages_per_second: u32,
    /// New connections a second one identity may open (bursts of ten).
    pub device_connects_per_second: u32,
    /// New connections a second the hub accepts in all.
    pub hub_connects_per_second: u32,
    /// How far behind its rate a device may fall before it is disconnected.
    pub max_throttle_backlog: std::time::Duration,
    /// Partitions of a new event log.
    pub eventlog_partitions: u32,
    /// How long events are kept; `None` keeps them forever.
    pub eventlog_retention: Option<std::time::Duration>,
    /// Most bytes kept per partition.
    pub eventlog_max_bytes: Option<u64>,
    /// Longest an event waits for its fsync.
    pub eventlog_max_commit_wait: std::time::Duration,
    /// Configured keys of built-in policies.
    pub policies: BTreeMap<String, PolicyKeys>,
    /// Tracing filter.
    pub log_level: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// The cluster engines; `None` runs the embedded mode.
    pub cluster: Option<ClusterSettings>,
}

impl Config {
    /// Reads and validates `path` (or the defaults when `None`), then applies `overrides`.
    pub fn load(
        path: Option<&std::path::Path>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let raw = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                ConfigToml::parse(&text, &p.display().to_string())?
            }
            None => ConfigToml::default(),
        };
        Self::from_toml(raw, overrides)
    }

    /// Validates a parsed file with `overrides` applied on top.
    pub fn from_toml(raw: ConfigToml, overrides: &Overrides) -> Result<Self, ConfigError> {
        // Destructure exhaustively so a new key cannot be forgotten here.
        let ConfigToml {
            data_dir,
            hostname,
            aliases,
            bind,
            https,
            mqtt,
            amqp,
            eventlog,
            c2d,
            limits,
            tls,
            policies,
            log,
            jobs,
            cluster,
        } = raw;

        let data_dir = overrides
            .data_dir
            .clone()
            .or(data_dir)
            .unwrap_or_else(|| PathBuf::from("./ferrohub-data"));
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }

        let hostname = overrides
            .hostname
            .clone()
            .or(hostname)
            .unwrap_or_else(|| "localhost".to_owned());
        validate_hostname("hostname", &hostname)?;
        let aliases = aliases.unwrap_or_else(|| vec!["127.0.0.1".to_owned()]);
        for a in &aliases {
            validate_hostname("aliases", a)?;
        }

        let bind_text = overrides
            .bind
            .clone()
            .or(bind)
            .unwrap_or_else(|| "0.0.0.0".to_owned());
        let bind: IpAddr = bind_text
            .parse()
            .map_err(|_| invalid("bind", format!("{bind_text:?} is not an IP address")))?;

        let HttpsToml {
            port: https_port,
            max_request_body_bytes,
            handshake_timeout,
            header_read_timeout,
            idle_timeout,
            max_connections: https_max_connections,
        } = https;
        let https_port = overrides.https_port.or(https_port).unwrap_or(443);
        let max_request_body_bytes = max_request_body_bytes.unwrap_or(1 << 20);
        if !(4096..=64 << 20).contains(&max_request_body_bytes) {
            return Err(invalid(
                "https.max_request_body_bytes",
                "must be between 4096 and 67108864",
            ));
        }
        let defaults = HttpsLimits::default();
        let timeout = |key: &str, text: Option<String>, default: std::time::Duration| match text {
            None => Ok(default),
            Some(t) => parse_duration(&t)
                .filter(|d| (1..=3600).contains(&d.as_secs()))
                .ok_or_else(|| invalid(key, format!("{t:?}; expected a duration from 1s to 1h"))),
        };
        let https_limits = HttpsLimits {
            handshake_timeout: timeout(
                "https.handshake_timeout",
                handshake_timeout,
                defaults.handshake_timeout,
            )?,
            header_read_timeout: timeout(
                "https.header_read_timeout",
                header_read_timeout,
                defaults.header_read_timeout,
            )?,
            idle_timeout: timeout("https.idle_timeout", idle_timeout, defaults.idle_timeout)?,
            max_connections: match https_max_connections {
                Some(0) => return Err(invalid("https.max_connections", "must be at least 1")),
                other => other,
            },
        };

        let MqttToml {
            port: mqtt_port,
            plain_port,
        } = mqtt;
        let mqtt_port = overrides.mqtt_port.or(mqtt_port).unwrap_or(8883);
        let mqtt_plain_port = overrides.mqtt_plain_port.or(plain_port);
        if let Some(p) = mqtt_plain_port
            && p != 0
            && (p == mqtt_port || p == https_port)
        {
            return Err(invalid(
                "mqtt.plain_port",
                format!("{p} is already another listener's port"),
            ));
        }
        if https_port != 0 && https_port == mqtt_port {
            return Err(invalid(
                "mqtt.port",
                format!("{mqtt_port} is also the HTTPS port"),
            ));
        }
        let AmqpToml { port: amqp_port } = amqp;
        let amqp_port = overrides.amqp_port.or(amqp_port).unwrap_or(5671);
        if amqp_port != 0 && (amqp_port == https_port || amqp_port == mqtt_port) {
            return Err(invalid(
                "amqp.port",
                format!("{amqp_port} is already another listener's port"),
            ));
        }

        let EventLogToml {
            partitions,
            retention,
            max_bytes_per_partition,
            max_commit_wait_ms,
        } = eventlog;
        let eventlog_partitions = partitions.unwrap_or(4);
        if !(1..=32).contains(&eventlog_partitions) {
            return Err(invalid("eventlog.partitions", "must be between 1 and 32"));
        }
        let retention_text = retention.unwrap_or_else(|| "1d".to_owned());
        let eventlog_retention = if retention_text == "unlimited" {
            None
        } else {
            Some(
                parse_duration(&retention_text)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        invalid(
                            "eventlog.retention",
                            format!("{retention_text:?}; expected a duration such as \"1d\" or \"12h\", or \"unlimited\""),
                        )
                    })?,
            )
        };
        if max_bytes_per_partition.is_some_and(|b| b < 1 << 20) {
            return Err(invalid(
                "eventlog.max_bytes_per_partition",
                "must be at least 1048576",
            ));
        }
        let commit_wait = max_commit_wait_ms.unwrap_or(0);
        if commit_wait > 1000 {
            return Err(invalid(
                "eventlog.max_commit_wait_ms",
                "must be at most 1000",
            ));
        }

        let C2dToml {
            max_queue_depth,
            default_ttl,
            max_delivery_count,
        } = c2d;
        let mut c2d = ferrohub_c2d::C2dConfig::default();
        if let Some(depth) = max_queue_depth {
            if !(1..=100_000).contains(&depth) {
                return Err(invalid(
                    "c2d.max_queue_depth",
                    "must be between 1 and 100000",
                ));
            }
            c2d.max_queue_depth = depth;
        }
        if let Some(ttl) = default_ttl {
            let d = parse_duration(&ttl)
                .filter(|d| (60..=172_800).contains(&d.as_secs()))
                .ok_or_else(|| {
                    invalid(
                        "c2d.default_ttl",
                        format!("{ttl:?}; expected a duration from 1m to 2d"),
                    )
                })?;
            c2d.default_ttl = d;
        }
        if let Some(n) = max_delivery_count {
            if !(1..=100).contains(&n) {
                return Err(invalid(
                    "c2d.max_delivery_count",
                    "must be between 1 and 100",
                ));
            }
            c2d.max_delivery_count = n;
        }

        let LimitsToml {
            max_connections,
            device_messages_per_second,
            max_throttle_backlog,
            device_connects_per_second,
            hub_connects_per_second,
        } = limits;
        let device_connects_per_second = device_connects_per_second.unwrap_or(1);
        if device_connects_per_second == 0 {
            return Err(invalid(
                "limits.device_connects_per_second",
                "must be at least 1",
            ));
        }
        let hub_connects_per_second = hub_connects_per_second.unwrap_or(10_000);
        if hub_connects_per_second == 0 {
            return Err(invalid(
                "limits.hub_connects_per_second",
                "must be at least 1",
            ));
        }
        let max_connections = max_connections.unwrap_or(1_000_000);
        if max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be at least 1"));
        }
        let device_messages_per_second = device_messages_per_second.unwrap_or(1000);
        if device_messages_per_second == 0 {
            return Err(invalid(
                "limits.device_messages_per_second",
                "must be at least 1",
            ));
        }
        let backlog_text = max_throttle_backlog.unwrap_or_else(|| "10s".to_owned());
        let max_throttle_backlog = parse_duration(&backlog_text)
            .filter(|d| !d.is_zero() && d.as_secs() <= 600)
            .ok_or_else(|| {
                invalid(
                    "limits.max_throttle_backlog",
                    format!("{backlog_text:?}; expected a duration from 1s to 10m"),
                )
            })?;

        let TlsToml {
            cert_file,
            key_file,
        } = tls;
        let tls = match (cert_file, key_file) {
            (None, None) => None,
            (Some(cert_file), Some(key_file)) => Some(TlsFiles {
                cert_file,
                key_file,
            }),
            (Some(_), None) => return Err(invalid("tls.key_file", "required with tls.cert_file")),
            (None, Some(_)) => return Err(invalid("tls.cert_file", "required with tls.key_file")),
        };

        let mut policy_keys = BTreeMap::new();
        for (name, keys) in policies {
            if !BUILTIN_POLICIES.contains(&name.as_str()) {
                return Err(invalid(
                    &format!("policies.{name}"),
                    format!(
                        "unknown policy; the policies are {}",
                        BUILTIN_POLICIES.join(", ")
                    ),
                ));
            }
            let PolicyKeysToml {
                primary_key,
                secondary_key,
            } = keys;
            for (field, key) in [
                ("primary_key", &primary_key),
                ("secondary_key", &secondary_key),
            ] {
                if let Some(k) = key {
                    SymmetricKey::validate_registry_key(k)
                        .map_err(|e| invalid(&format!("policies.{name}.{field}"), e.to_string()))?;
                }
            }
            policy_keys.insert(
                name,
                PolicyKeys {
                    primary_key,
                    secondary_key,
                },
            );
        }

        let LogToml { level, format } = log;
        let log_level = overrides
            .log_level
            .clone()
            .or(level)
            .unwrap_or_else(|| "info".to_owned());
        if log_level.trim().is_empty() {
            return Err(invalid("log.level", "must not be empty"));
        }
        let format = overrides
            .log_format
            .clone()
            .or(format)
            .unwrap_or_else(|| "text".to_owned());
        let log_format = match format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log.format",
                    format!("{other:?}; expected \"text\" or \"json\""),
                ));
            }
        };

        let JobsToml {
            file_root,
            allow_private_addresses,
            max_input_blob_bytes,
            max_concurrent_jobs,
            lease_seconds,
        } = jobs;
        let max_concurrent_jobs = max_concurrent_jobs.unwrap_or(DEFAULT_MAX_CONCURRENT_JOBS);
        if max_concurrent_jobs == 0 {
            return Err(invalid("jobs.max_concurrent_jobs", "must be at least 1"));
        }
        let lease_seconds = lease_seconds.unwrap_or(DEFAULT_JOB_LEASE_SECONDS);
        if !(1..=3600).contains(&lease_seconds) {
            return Err(invalid("jobs.lease_seconds", "must be from 1 to 3600"));
        }
        if let Some(root) = &file_root
            && !root.is_absolute()
        {
            return Err(invalid("jobs.file_root", "must be an absolute directory"));
        }
        let max_input_blob_bytes = max_input_blob_bytes.unwrap_or(DEFAULT_MAX_INPUT_BLOB_BYTES);
        if max_input_blob_bytes < 1 << 20 {
            return Err(invalid(
                "jobs.max_input_blob_bytes",
                "must be at least 1048576",
            ));
        }
        let jobs = JobsSettings {
            file_root,
            // A hub reachable only from this machine may fetch from this machine (local blob
            // emulators, tests); one bound to a routable address must not be turned into a
            // probe of its own network.
            allow_private_addresses: allow_private_addresses.unwrap_or(bind.is_loopback()),
            max_input_blob_bytes,
            max_concurrent_jobs,
            lease: std::time::Duration::from_secs(lease_seconds),
        };

        let cluster = match cluster {
            None => None,
            Some(c) => Some(validate_cluster(c, overrides)?),
        };

        Ok(Config {
            data_dir,
            hostname,
            aliases,
            bind,
            https_port,
            max_request_body_bytes,
            https_limits,
            jobs,
            mqtt_port,
            mqtt_plain_port,
            amqp_port,
            tls,
            c2d,
            max_connections,
            device_messages_per_second,
            device_connects_per_second,
            hub_connects_per_second,
            max_throttle_backlog,
            eventlog_partitions,
            eventlog_retention,
            eventlog_max_bytes: Some(
                max_bytes_per_partition.unwrap_or(DEFAULT_MAX_BYTES_PER_PARTITION),
            ),
            eventlog_max_commit_wait: std::time::Duration::from_millis(commit_wait),
            policies: policy_keys,
            log_level,
            log_format,
            cluster,
        })
    }

    /// Every name the hub answers to: the host name, then the aliases.
    pub fn host_names(&self) -> Vec<String> {
        let mut names = vec![self.hostname.clone()];
        for a in &self.aliases {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(a)) {
                names.push(a.clone());
            }
        }
        names
    }
}

impl ConfigToml {
    /// Parses TOML text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }
}

fn validate_cluster(c: ClusterToml, overrides: &Overrides) -> Result<ClusterSettings, ConfigError> {
    let ClusterToml {
        postgres,
        nats,
        node,
        replicas,
        prefix,
        presence_interval,
        nats_grace,
        postgres_grace,
    } = c;
    let postgres = postgres.ok_or_else(|| invalid("cluster.postgres", "required in [cluster]"))?;
    if postgres.trim().is_empty() {
        return Err(invalid("cluster.postgres", "must not be empty"));
    }
    let nats = nats.ok_or_else(|| invalid("cluster.nats", "required in [cluster]"))?;
    if nats.is_empty() {
        return Err(invalid("cluster.nats", "name at least one NATS server"));
    }
    for url in &nats {
        if !(url.starts_with("nats://") || url.starts_with("tls://")) {
            return Err(invalid(
                "cluster.nats",
                format!("{url:?}; expected nats://host:port or tls://host:port"),
            ));
        }
    }
    let node = overrides
        .node
        .clone()
        .or(node)
        .unwrap_or_else(|| format!("node-{}", crate::random_hex(4)));
    let node_ok = !node.is_empty()
        && node.len() <= 64
        && node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !node_ok {
        return Err(invalid(
            "cluster.node",
            format!("{node:?}; 1 to 64 letters, digits, '-' or '_'"),
        ));
    }
    let replicas = replicas.unwrap_or(3);
    if !(1..=5).contains(&replicas) {
        return Err(invalid("cluster.replicas", "must be between 1 and 5"));
    }
    let prefix = prefix.unwrap_or_else(|| "ferrohub".to_owned());
    let prefix_ok = !prefix.is_empty()
        && prefix.len() <= 32
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !prefix_ok {
        return Err(invalid(
            "cluster.prefix",
            format!("{prefix:?}; 1 to 32 letters, digits, '-' or '_'"),
        ));
    }
    let duration = |key: &str,
                    text: Option<String>,
                    default: std::time::Duration,
                    range: (std::time::Duration, std::time::Duration),
                    expected: &str| match text {
        None => Ok(default),
        Some(t) => parse_duration(&t)
            .filter(|d| (range.0..=range.1).contains(d))
            .ok_or_else(|| invalid(key, format!("{t:?}; expected a duration from {expected}"))),
    };
    let ms = std::time::Duration::from_millis;
    let s = std::time::Duration::from_secs;
    let presence_interval = duration(
        "cluster.presence_interval",
        presence_interval,
        crate::presence::DEFAULT_PRESENCE_INTERVAL,
        (ms(100), s(600)),
        "100ms to 10m",
    )?;
    let nats_grace = duration(
        "cluster.nats_grace",
        nats_grace,
        crate::fence::DEFAULT_NATS_GRACE,
        (ms(500), s(600)),
        "500ms to 10m",
    )?;
    let postgres_grace = duration(
        "cluster.postgres_grace",
        postgres_grace,
        crate::fence::DEFAULT_POSTGRES_GRACE,
        (ms(500), s(3600)),
        "500ms to 1h",
    )?;
    Ok(ClusterSettings {
        postgres,
        nats,
        node,
        replicas,
        prefix,
        presence_interval,
        nats_grace,
        postgres_grace,
    })
}

/// Parses `500ms`, `90s`, `15m`, `12h`, `7d` or a number of seconds.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    if unit == "ms" {
        return Some(std::time::Duration::from_millis(n));
    }
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(secs))
}

fn validate_hostname(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 253 {
        return Err(invalid(key, "a host name has 1 to 253 characters"));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    if ok {
        Ok(())
    } else {
        Err(invalid(key, format!("{name:?} is not a valid host name")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_parses_to_defaults() {
        let raw = ConfigToml::parse(DEFAULT_CONFIG_TOML, "default").expect("default parses");
        let c = Config::from_toml(raw, &Overrides::default()).expect("valid");
        assert_eq!(c.https_port, 443);
        assert_eq!(c.mqtt_port, 8883);
        assert_eq!(c.hostname, "localhost");
        assert_eq!(c.data_dir, PathBuf::from("./ferrohub-data"));
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(c.tls.is_none());
        assert_eq!(c.eventlog_partitions, 4);
        assert_eq!(
            c.eventlog_retention,
            Some(std::time::Duration::from_secs(86_400))
        );
        // The file's [https] and [jobs] values are the built-in defaults.
        assert_eq!(c.https_limits, HttpsLimits::default());
        assert_eq!(c.jobs.file_root, None);
        assert!(!c.jobs.allow_private_addresses, "bound to 0.0.0.0");
        assert_eq!(c.jobs.max_input_blob_bytes, DEFAULT_MAX_INPUT_BLOB_BYTES);
        let c = Config::from_toml(ConfigToml::default(), &Overrides::default()).expect("valid");
        assert_eq!(c.https_limits, HttpsLimits::default());
    }

    #[test]
    fn private_addresses_follow_the_bind_address() {
        let loopback = Overrides {
            bind: Some("127.0.0.1".into()),
            ..Overrides::default()
        };
        let c = Config::from_toml(ConfigToml::default(), &loopback).expect("valid");
        assert!(c.jobs.allow_private_addresses);
        let raw =
            ConfigToml::parse("[jobs]\nallow_private_addresses = false", "f").expect("parses");
        let c = Config::from_toml(raw, &loopback).expect("valid");
        assert!(!c.jobs.allow_private_addresses, "the file wins");
        let raw = ConfigToml::parse(
            "[https]\nidle_timeout = \"5s\"\nmax_connections = 10\n[jobs]\nfile_root = \"/srv/j\"",
            "f",
        )
        .expect("parses");
        let c = Config::from_toml(raw, &Overrides::default()).expect("valid");
        assert_eq!(
            c.https_limits.idle_timeout,
            std::time::Duration::from_secs(5)
        );
        assert_eq!(c.https_limits.max_connections, Some(10));
        assert_eq!(c.jobs.file_root, Some(PathBuf::from("/srv/j")));
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("90"),
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("15m"),
            Some(std::time::Duration::from_secs(900))
        );
        assert_eq!(
            parse_duration("2d"),
            Some(std::time::Duration::from_secs(172_800))
        );
        assert_eq!(parse_duration("1w"), None);
        assert_eq!(parse_duration("h"), None);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = ConfigToml::parse("[https]\nprot = 1\n", "f.toml").expect_err("unknown key");
        assert!(err.to_string().contains("prot"), "{err}");
        let err = ConfigToml::parse("colour = 1\n", "f.toml").expect_err("unknown key");
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases = [
            ("bind = \"nowhere\"", "bind"),
            ("hostname = \"bad host\"", "hostname"),
            ("[log]\nformat = \"xml\"", "log.format"),
            ("[tls]\ncert_file = \"a.pem\"", "tls.key_file"),
            ("[policies.owner]\nprimary_key = \"AAAA\"", "policies.owner"),
            (
                "[policies.iothubowner]\nprimary_key = \"short\"",
                "policies.iothubowner.primary_key",
            ),
            (
                "[https]\nmax_request_body_bytes = 1",
                "https.max_request_body_bytes",
            ),
            ("[https]\nport = 9000\n[mqtt]\nport = 9000", "mqtt.port"),
            ("[eventlog]\npartitions = 0", "eventlog.partitions"),
            ("[c2d]\nmax_queue_depth = 0", "c2d.max_queue_depth"),
            ("[limits]\nmax_connections = 0", "limits.max_connections"),
            (
                "[limits]\ndevice_messages_per_second = 0",
                "limits.device_messages_per_second",
            ),
            (
                "[limits]\nmax_throttle_backlog = \"1h\"",
                "limits.max_throttle_backlog",
            ),
            ("[c2d]\ndefault_ttl = \"30s\"", "c2d.default_ttl"),
            ("[c2d]\nmax_delivery_count = 101", "c2d.max_delivery_count"),
            ("[eventlog]\nretention = \"forever\"", "eventlog.retention"),
            ("[eventlog]\nretention = \"0s\"", "eventlog.retention"),
            (
                "[eventlog]\nmax_commit_wait_ms = 5000",
                "eventlog.max_commit_wait_ms",
            ),
            ("[https]\nidle_timeout = \"0s\"", "https.idle_timeout"),
            (
                "[https]\nhandshake_timeout = \"2h\"",
                "https.handshake_timeout",
            ),
            (
                "[https]\nheader_read_timeout = \"x\"",
                "https.header_read_timeout",
            ),
            ("[https]\nmax_connections = 0", "https.max_connections"),
            ("[jobs]\nfile_root = \"relative\"", "jobs.file_root"),
            (
                "[jobs]\nmax_input_blob_bytes = 10",
                "jobs.max_input_blob_bytes",
            ),
        ];
        for (text, key) in cases {
            let raw = ConfigToml::parse(text, "f").expect("parses");
            let err = Config::from_toml(raw, &Overrides::default()).expect_err(text);
            assert!(
                matches!(&err, ConfigError::Invalid { key: k, .. } if k == key),
                "{text}: {err}"
            );
        }
        let err = ConfigToml::parse("[https]\nport = 70000", "f").expect_err("out of range");
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn overrides_win() {
        let raw = ConfigToml::parse("hostname = \"a.example\"\n[https]\nport = 1000", "f")
            .expect("parses");
        let o = Overrides {
            hostname: Some("b.example".into()),
            https_port: Some(0),
            ..Overrides::default()
        };
        let c = Config::from_toml(raw, &o).expect("valid");
        assert_eq!(c.hostname, "b.example");
        assert_eq!(c.https_port, 0);
        assert_eq!(c.host_names(), vec!["b.example", "127.0.0.1"]);
    }

    #[test]
    fn the_commented_cluster_section_states_the_defaults() {
        let section = DEFAULT_CONFIG_TOML
            .split("# [cluster]")
            .nth(1)
            .expect("a commented [cluster] section");
        let mut text = String::from("[cluster]\n");
        for line in section.lines() {
            let Some(rest) = line.strip_prefix("# ") else {
                continue;
            };
            let is_key = rest
                .split_once(" = ")
                .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            if is_key {
                text.push_str(rest);
                text.push('\n');
            }
        }
        let raw = ConfigToml::parse(&text, "f").expect("parses");
        let c = Config::from_toml(raw, &Overrides::default()).expect("valid");
        let c = c.cluster.expect("cluster");
        assert_eq!(
            c.presence_interval,
            crate::presence::DEFAULT_PRESENCE_INTERVAL
        );
        assert_eq!(c.nats_grace, crate::fence::DEFAULT_NATS_GRACE);
        assert_eq!(c.postgres_grace, crate::fence::DEFAULT_POSTGRES_GRACE);
        assert_eq!(c.replicas, 3);
    }

    #[test]
    fn cluster_section() {
        let c = Config::from_toml(ConfigToml::default(), &Overrides::default()).expect("valid");
        assert!(c.cluster.is_none(), "embedded by default");

        let text = "[cluster]\npostgres = \"postgres://db/hub\"\nnats = [\"nats://a:4222\", \"nats://b:4222\"]\nnode = \"hub-1\"\nreplicas = 1";
        let raw = ConfigToml::parse(text, "f").expect("parses");
        let c = Config::from_toml(raw, &Overrides::default()).expect("valid");
        assert_eq!(
            c.cluster,
            Some(ClusterSettings {
                postgres: "postgres://db/hub".into(),
                nats: vec!["nats://a:4222".into(), "nats://b:4222".into()],
                node: "hub-1".into(),
                replicas: 1,
                prefix: "ferrohub".into(),
                presence_interval: std::time::Duration::from_secs(10),
                nats_grace: std::time::Duration::from_secs(5),
                postgres_grace: std::time::Duration::from_secs(30),
            })
        );
        let raw = ConfigToml::parse(
            &format!(
                "{text}\npresence_interval = \"500ms\"\nnats_grace = \"2s\"\npostgres_grace = \"1m\""
            ),
            "f",
        )
        .expect("parses");
        let c = Config::from_toml(raw, &Overrides::default()).expect("valid");
        let settings = c.cluster.expect("cluster");
        assert_eq!(
            settings.presence_interval,
            std::time::Duration::from_millis(500)
        );
        assert_eq!(settings.nats_grace, std::time::Duration::from_secs(2));
        assert_eq!(settings.postgres_grace, std::time::Duration::from_secs(60));
        let raw = ConfigToml::parse(text, "f").expect("parses");
        let o = Overrides {
            node: Some("hub-2".into()),
            ..Overrides::default()
        };
        let c = Config::from_toml(raw, &o).expect("valid");
        assert_eq!(c.cluster.map(|c| c.node).as_deref(), Some("hub-2"));

        let raw = ConfigToml::parse(
            "[cluster]\npostgres = \"postgres://db\"\nnats = [\"nats://a\"]",
            "f",
        )
        .expect("parses");
        let c = Config::from_toml(raw, &Overrides::default()).expect("valid");
        let settings = c.cluster.expect("cluster");
        assert!(settings.node.starts_with("node-"), "{}", settings.node);
        assert_eq!(settings.replicas, 3);

        let cases = [
            ("[cluster]\nnats = [\"nats://a\"]", "cluster.postgres"),
            ("[cluster]\npostgres = \"p\"", "cluster.nats"),
            ("[cluster]\npostgres = \"p\"\nnats = []", "cluster.nats"),
            (
                "[cluster]\npostgres = \"p\"\nnats = [\"http://a\"]",
                "cluster.nats",
            ),
            (
                "[cluster]\npostgres = \"p\"\nnats = [\"nats://a\"]\nreplicas = 0",
                "cluster.replicas",
            ),
            (
                "[cluster]\npostgres = \"p\"\nnats = [\"nats://a\"]\nnode = \"a.b\"",
                "cluster.node",
            ),
            (
                "[cluster]\npostgres = \"p\"\nnats = [\"nats://a\"]\npresence_interval = \"10ms\"",
                "cluster.presence_interval",
            ),
            (
                "[cluster]\npostgres = \"p\"\nnats = [\"nats://a\"]\nnats_grace = \"soon\"",
                "cluster.nats_grace",
            ),
            (
                "[cluster]\npostgres = \"p\"\nnats = [\"nats://a\"]\npostgres_grace = \"2h\"",
                "cluster.postgres_grace",
            ),
        ];
        for (text, key) in cases {
            let raw = ConfigToml::parse(text, "f").expect("parses");
            let err = Config::from_toml(raw, &Overrides::default()).expect_err(text);
            assert!(
                matches!(&err, ConfigError::Invalid { key: k, .. } if k == key),
                "{text}: {err}"
            );
        }
    }
}
