//! The admin commands: manage a running hub's identities, mint tokens and read statistics,
//! through the service REST API (`ferrohub-client`), exactly as any Azure service SDK would.
//!
//! Every command takes the same hub arguments ([`HubArgs`]): `--connection-string`, `--ca` and
//! `--output`. Exit status: 0 on success, 1 when the hub refuses or cannot be reached, 2 for
//! usage and configuration errors (a bad connection string, a missing CA file).

mod c2d;
mod device;
mod discovery;
mod eventhub;
mod events;
mod job;
mod jobs;
mod module;
mod output;
mod query;
mod stats;
mod token;
mod ttl;
mod twin;

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ferrohub_auth::ConnectionString;
use ferrohub_client::{ClientError, HubClient};

pub(crate) use c2d::C2dCommand;
pub(crate) use device::DeviceCommand;
pub(crate) use eventhub::EventHubCommand;
pub(crate) use events::{MonitorArgs, PartitionsArgs};
pub(crate) use job::JobCommand;
pub(crate) use jobs::{DevicesCommand, JobsCommand};
pub(crate) use module::ModuleCommand;
pub(crate) use query::QueryArgs;
pub(crate) use stats::StatsArgs;
pub(crate) use token::TokenCommand;
pub(crate) use twin::{MethodCommand, TwinCommand};

/// The admin subcommands of the `ferrohub` binary.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AdminCommand {
    /// Manage device identities
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Manage module identities
    #[command(subcommand)]
    Module(ModuleCommand),
    /// Show and update device and module twins
    #[command(subcommand)]
    Twin(TwinCommand),
    /// Invoke direct methods on devices and modules
    #[command(subcommand)]
    Method(MethodCommand),
    /// Mint SAS tokens for devices, modules and the connection string's policy
    #[command(subcommand)]
    Token(TokenCommand),
    /// Query device twins, module twins and job records with the IoT Hub query language
    Query(QueryArgs),
    /// Show registry and connection statistics
    Stats(StatsArgs),
    /// Send cloud-to-device messages, purge queues, read feedback
    #[command(subcommand)]
    C2d(C2dCommand),
    /// Print device-to-cloud events as they arrive
    Monitor(MonitorArgs),
    /// Show the event endpoint's partitions
    Partitions(PartitionsArgs),
    /// The Event Hub-compatible endpoint: connection strings for the Event Hubs SDKs
    #[command(name = "eventhub", subcommand)]
    EventHub(EventHubCommand),
    /// Import or export identities in bulk
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// List, show or cancel import/export jobs
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Schedule twin updates and method calls over many devices; show, list, cancel them
    #[command(subcommand)]
    Job(JobCommand),
}

/// Runs one admin command, printing its result to stdout and any error to stderr.
pub(crate) async fn run(cmd: AdminCommand) -> ExitCode {
    let result = match cmd {
        AdminCommand::Device(c) => c.run().await,
        AdminCommand::Module(c) => c.run().await,
        AdminCommand::Twin(c) => c.run().await,
        AdminCommand::Method(c) => c.run().await,
        AdminCommand::Token(c) => c.run().await,
        AdminCommand::Query(c) => c.run().await,
        AdminCommand::Stats(c) => c.run().await,
        AdminCommand::C2d(c) => c.run().await,
        AdminCommand::Monitor(c) => c.run().await,
        AdminCommand::Partitions(c) => c.run().await,
        AdminCommand::EventHub(c) => c.run().await,
        AdminCommand::Devices(c) => c.run().await,
        AdminCommand::Jobs(c) => c.run().await,
        AdminCommand::Job(c) => c.run().await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "error: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    /// Aligned, human-readable columns.
    #[default]
    Table,
    /// The API object as pretty-printed JSON.
    Json,
}

/// The arguments every admin command shares: which hub, how to trust it, how to print.
#[derive(Clone, Debug, Default, clap::Args)]
pub(crate) struct HubArgs {
    /// Connection string of a shared access policy (such as iothubowner). Defaults to
    /// $FERROHUB_CONNECTION_STRING, then $IOTHUB_CONNECTION_STRING, then the file
    /// owner.connection-string in $FERROHUB_DATA_DIR or ./ferrohub-data
    #[arg(long, value_name = "CONNECTION_STRING")]
    pub(crate) connection_string: Option<String>,
    /// PEM file of a CA to trust besides the system roots. Defaults to $FERROHUB_CA, then
    /// tls/ca.pem in $FERROHUB_DATA_DIR or ./ferrohub-data when present
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// How to print results
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub(crate) output: Output,
}

impl HubArgs {
    /// The connection string, from the flag or where [`discovery`] finds it.
    pub(crate) fn connection_string(&self) -> Result<ConnectionString, Failure> {
        let found = discovery::connection_string(
            self.connection_string.as_deref(),
            &env_var,
            Path::new("."),
        )?;
        found.text.trim().parse().map_err(|e| {
            Failure::Usage(format!(
                "the connection string from {} is invalid: {e}",
                found.source
            ))
        })
    }

    /// The CA certificate PEM to trust, if any.
    fn ca_pem(&self) -> Result<Option<Vec<u8>>, Failure> {
        let Some(path) = discovery::ca_file(self.ca.as_deref(), &env_var, Path::new("."))? else {
            return Ok(None);
        };
        std::fs::read(&path)
            .map(Some)
            .map_err(|e| Failure::Usage(format!("cannot read the CA file {}: {e}", path.display())))
    }

    /// A client for the hub, with the parsed connection string it uses.
    pub(crate) fn connect(&self) -> Result<(HubClient, ConnectionString), Failure> {
        let conn = self.connection_string()?;
        let ca = self.ca_pem()?;
        let client = HubClient::new(&conn, ca.as_deref())?;
        Ok((client, conn))
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Writes `text` and a final newline to stdout, ignoring a closed pipe.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.is_empty() && !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

/// Why a command failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Bad usage or configuration; exit status 2.
    Usage(String),
    /// A call to the hub failed.
    Client(ClientError),
    /// The command could not be carried out; exit status 1.
    Failed(String),
}

impl Failure {
    /// 2 for usage and configuration errors, 1 for everything else.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Client(
                ClientError::InvalidConnectionString(_)
                | ClientError::InvalidCertificate(_)
                | ClientError::InvalidArgument(_),
            ) => 2,
            Failure::Client(_) | Failure::Failed(_) => 1,
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(m) | Failure::Failed(m) => f.write_str(m),
            Failure::Client(ClientError::Api {
                status,
                code,
                message,
            }) => match code {
                Some(code) => write!(f, "{message} ({code})"),
                None => write!(f, "{message} (HTTP {status})"),
            },
            Failure::Client(e) => {
                write!(f, "{e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    write!(f, ": {s}")?;
                    source = s.source();
                }
                Ok(())
            }
        }
    }
}

/// The host name without any port: `localhost:8443` → `localhost`, `[::1]:8443` → `[::1]`.
///
/// Devices name the hub without a port, so device connection strings and device tokens use
/// this form.
pub(crate) fn host_without_port(host: &str) -> &str {
    if let Some(end) = host.rfind(']') {
        return &host[..=end];
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped() {
        assert_eq!(host_without_port("localhost:8443"), "localhost");
        assert_eq!(
            host_without_port("myhub.azure-devices.net"),
            "myhub.azure-devices.net"
        );
        assert_eq!(host_without_port("[::1]:8443"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
        assert_eq!(host_without_port("h:"), "h:");
    }

    #[test]
    fn api_errors_print_their_code() {
        let f = Failure::Client(ClientError::Api {
            status: 404,
            code: Some("DeviceNotFound".into()),
            message: "The device with ID 'x' could not be found.".into(),
        });
        assert_eq!(
            f.to_string(),
            "The device with ID 'x' could not be found. (DeviceNotFound)"
        );
        assert_eq!(f.exit_code(), 1);
        let f = Failure::Client(ClientError::Api {
            status: 502,
            code: None,
            message: "Bad Gateway".into(),
        });
        assert_eq!(f.to_string(), "Bad Gateway (HTTP 502)");
    }

    #[test]
    fn configuration_errors_exit_2() {
        assert_eq!(Failure::Usage("x".into()).exit_code(), 2);
        assert_eq!(
            Failure::Client(ClientError::InvalidConnectionString("x".into())).exit_code(),
            2
        );
        assert_eq!(Failure::Failed("x".into()).exit_code(), 1);
    }

    #[test]
    fn commands_parse() {
        use clap::Parser as _;

        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: AdminCommand,
        }
        let ok = [
            &["x", "device", "create", "d1", "--edge", "--disabled"][..],
            &["x", "device", "list", "--top", "5", "--output", "json"],
            &[
                "x", "device", "update", "d1", "--status", "disabled", "--etag", "MA==",
            ],
            &["x", "device", "regenerate-key", "d1", "--key", "both"],
            &[
                "x",
                "device",
                "connection-string",
                "d1",
                "--key",
                "secondary",
            ],
            &["x", "module", "create", "d1", "m1"],
            &["x", "module", "list", "d1"],
            &[
                "x", "twin", "show", "d1", "--module", "m1", "--output", "json",
            ],
            &[
                "x",
                "twin",
                "update",
                "d1",
                "--desired",
                "{\"a\":1}",
                "--tags",
                "{}",
                "--etag",
                "AAAAAAAAAAE=",
            ],
            &[
                "x",
                "method",
                "invoke",
                "d1",
                "reboot",
                "--payload",
                "{\"delay\":5}",
                "--timeout",
                "5",
                "--connect-timeout",
                "300",
            ],
            &[
                "x", "token", "device", "d1", "--ttl", "15m", "--policy", "device",
            ],
            &["x", "token", "policy", "--ttl", "2d"],
            &["x", "eventhub", "connection-string"],
            &[
                "x",
                "eventhub",
                "connection-string",
                "--policy",
                "service",
                "--amqp-port",
                "15671",
                "--output",
                "json",
            ],
            &[
                "x",
                "stats",
                "--ca",
                "ca.pem",
                "--connection-string",
                "HostName=h",
            ],
        ];
        for args in ok {
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("{args:?}: {e}");
            }
        }
        let bad = [
            &["x", "device", "regenerate-key", "d1"][..],
            &["x", "token", "policy", "--ttl", "soon"],
            &["x", "device", "list", "--output", "yaml"],
            &["x", "method", "invoke", "d1", "m", "--timeout", "4"],
            &[
                "x",
                "method",
                "invoke",
                "d1",
                "m",
                "--connect-timeout",
                "301",
            ],
            &["x", "method", "invoke", "d1"],
            &["x", "eventhub", "connection-string", "--amqp-port", "70000"],
        ];
        for args in bad {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?} should fail");
        }
    }
}
