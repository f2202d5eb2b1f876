//! `ferrohub-bench`: load generator for Ferrohub and any MQTT 3.1.1 broker on this machine.
//!
//! Progress goes to stderr once a second; the summary goes to stdout at the end (JSON with
//! `--json`). Exit code 1 when the workload could not run at all (no connection, bad target).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ferrohub_auth::SymmetricKey;
use ferrohub_bench::connect::{self, ConnectConfig, OpenPlan};
use ferrohub_bench::identity::{self, Credentials};
use ferrohub_bench::pacing::secs_to_duration;
use ferrohub_bench::progress::Counters;
use ferrohub_bench::publish::{self, Mode, PublishConfig};
use ferrohub_bench::target::{Target, TargetSpec, TlsOptions};
use ferrohub_bench::{c2d, e2e, faults, provision, query, twin, twin_job};
use ferrohub_mqtt::QoS;
use serde::Serialize;

/// Load generator for Ferrohub and MQTT 3.1.1 brokers (loopback targets only).
#[derive(Parser)]
#[command(name = "ferrohub-bench", version, about)]
struct Cli {
    /// Print the summary as JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Devices publish telemetry; reports the achieved rate and PUBACK latency.
    Publish(PublishArgs),
    /// Open many connections at a paced rate and hold them idle; reports the connect rate and
    /// the server's memory per connection.
    Connect(ConnectArgs),
    /// Publish stamped messages and read them back through Ferrohub's event read API; reports
    /// end-to-end latency.
    E2e(E2eArgs),
    /// Send cloud-to-device messages over HTTPS to devices subscribed over MQTT (Ferrohub
    /// only); reports delivery, end-to-end and enqueue latency.
    C2d(C2dArgs),
    /// Invoke direct methods over REST on devices that answer over MQTT (Ferrohub only);
    /// reports the round-trip latency.
    Methods(CallArgs),
    /// Update desired properties over REST while the devices listen over MQTT (Ferrohub only);
    /// reports the write and the notification latency.
    Twin(CallArgs),
    /// Read the last events of one partition through an Event Hubs-style AMQP receiver and
    /// through the HTTP read API (Ferrohub only); reports events/s and MB/s of each.
    EhRead(EhReadArgs),
    /// Create (or update) the bench devices in a Ferrohub with a given key.
    Provision(ProvisionArgs),
    /// Populate a Ferrohub with tagged twins and time queries over them (selective, full scan,
    /// GROUP BY) (Ferrohub only).
    Query(QueryArgs),
    /// One scheduled twin-update job over the bench devices (Ferrohub only); reports the wall
    /// time until the job completed and devices per second.
    TwinJob(TwinJobArgs),
    /// Run the real `ferrohub` binary through kill -9 under load, a disk that fills and
    /// frees, stalled readers and connection floods; fails if anything acknowledged is lost
    /// or any check fails. See docs/faults.md. A later occurrence of an option overrides an
    /// earlier one (bench/faults puts its presets first).
    #[command(args_override_self = true)]
    Faults(Box<FaultsArgs>),
}

#[derive(Args, Clone)]
struct TargetArgs {
    /// `ferrohub://DATA_DIR` or `mqtt://HOST:PORT` (loopback addresses only).
    #[arg(long)]
    target: TargetSpec,
    /// Connect with TLS (Ferrohub: its TLS port; a broker needs --ca).
    #[arg(long)]
    tls: bool,
    /// CA certificate to trust (default for Ferrohub: DATA_DIR/tls/ca.pem).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Name the server certificate must carry.
    #[arg(long, default_value = "localhost")]
    tls_server_name: String,
    /// Let connections resume TLS sessions (default: a full handshake each, like new devices).
    #[arg(long)]
    tls_resume: bool,
    /// Device ids (and broker client ids) are PREFIX0, PREFIX1, …
    #[arg(long, default_value = "bench-")]
    device_prefix: String,
    /// Ferrohub: the devices' primary key, base64 (default: a new random key).
    #[arg(long)]
    device_key: Option<String>,
    /// Ferrohub: the devices already exist with --device-key; do not provision them.
    #[arg(long, requires = "device_key")]
    no_provision: bool,
    /// The server's process id, for its memory (VmRSS) and CPU time from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Args, Clone)]
struct SourceArgs {
    /// First local source address; connections cycle over --source-addrs addresses from it.
    #[arg(long, default_value = "127.0.0.1")]
    source_base: Ipv4Addr,
    /// How many loopback source addresses to spread connections over (each has ~28k ports).
    #[arg(long)]
    source_addrs: Option<usize>,
}

#[derive(Args)]
struct PublishArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    source: SourceArgs,
    /// Device connections.
    #[arg(short = 'n', long, default_value_t = 100)]
    connections: usize,
    /// QoS of the telemetry, 0 or 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Total offered rate, messages per second, open loop (default: max rate, closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Unacknowledged QoS 1 messages allowed per connection [default: 16 at max rate, 1024
    /// with --rate].
    #[arg(long)]
    inflight: Option<usize>,
    /// Measured seconds.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Seconds of sending before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds to wait for outstanding PUBACKs at the end.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Connections opened per second before the run.
    #[arg(long, default_value_t = 2000.0)]
    connect_rate: f64,
}

#[derive(Args)]
struct ConnectArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    source: SourceArgs,
    /// Connections to open.
    #[arg(short = 'n', long, default_value_t = 1000)]
    connections: usize,
    /// Connection attempts per second, open loop; 0: as fast as --concurrency allows.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Most attempts in progress at once.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// Seconds to hold the connections idle once all are up.
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
    /// Seconds between the last connection and the server memory reading.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Seconds one attempt may take.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Another node of the same hub (a cluster node's `ferrohub://DATA_DIR`, or `mqtt://`):
    /// connections go round robin over --target and every --also-target. Devices are
    /// provisioned through --target only (cluster nodes share the registry).
    #[arg(long)]
    also_target: Vec<TargetSpec>,
}

#[derive(Args)]
struct E2eArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Device connections.
    #[arg(short = 'n', long, default_value_t = 10)]
    connections: usize,
    /// Total offered rate, messages per second (open loop).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Payload bytes (at least 33: the stamp).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of sending before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds to wait for outstanding PUBACKs at the end.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Seconds to keep reading for missing events after publishing ends.
    #[arg(long, default_value_t = 10.0)]
    read_timeout: f64,
    /// How events are read back: the HTTP read API, or Event Hubs-style AMQP receivers.
    #[arg(long, value_enum, default_value = "http")]
    reader: e2e::ReadVia,
}

#[derive(Args)]
struct C2dArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Device connections, each subscribed to its cloud-to-device topic.
    #[arg(short = 'n', long, default_value_t = 10)]
    connections: usize,
    /// Total offered rate, messages per second (open loop), round robin over the devices.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Payload bytes (at least 33: the stamp).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of sending before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds to wait for outstanding sends and messages after sending ends.
    #[arg(long, default_value_t = 10.0)]
    read_timeout: f64,
    /// Most sends in progress at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Most messages per device sent but not yet received (the hub queues 50); a message due
    /// for a device at the bound is skipped and counted.
    #[arg(long, default_value_t = 40)]
    max_outstanding: usize,
    /// How the service side sends: HTTPS requests, or the AMQP service endpoint's sender link.
    #[arg(long, value_enum, default_value = "https")]
    send: c2d::SendVia,
}

#[derive(Args)]
struct EhReadArgs {
    /// `ferrohub://DATA_DIR`.
    #[arg(long)]
    target: TargetSpec,
    /// The partition read.
    #[arg(long, default_value_t = 0)]
    partition: u32,
    /// How many events (the partition's last ones) each reader reads.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Credit the AMQP receiver keeps granted (the Event Hubs SDKs' prefetch is 300).
    #[arg(long, default_value_t = 300)]
    credit: u32,
    /// The readers, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "amqp,http")]
    readers: Vec<ferrohub_bench::ehread::Reader>,
    /// Seconds one reader may take.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// The server's process id, for its CPU time during each read.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Args)]
struct CallArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Device connections.
    #[arg(short = 'n', long, default_value_t = 10)]
    connections: usize,
    /// Total offered rate, calls per second (open loop), round robin over the devices.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of calls before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds to wait for answers and notifications after sending ends.
    #[arg(long, default_value_t = 10.0)]
    read_timeout: f64,
    /// Most calls in progress at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

#[derive(Args)]
struct ProvisionArgs {
    /// `ferrohub://DATA_DIR`.
    #[arg(long)]
    target: TargetSpec,
    /// Devices to create: PREFIX0 … PREFIX{n-1}.
    #[arg(short = 'n', long)]
    connections: usize,
    /// Device id prefix.
    #[arg(long, default_value = "bench-")]
    device_prefix: String,
    /// Primary key, base64 (default: a new random key, printed).
    #[arg(long)]
    device_key: Option<String>,
}

#[derive(Args)]
struct QueryArgs {
    /// `ferrohub://DATA_DIR`.
    #[arg(long)]
    target: TargetSpec,
    /// Devices to create (PREFIX0 … PREFIX{n-1}, with tags) before measuring.
    #[arg(short = 'n', long, default_value_t = 100_000)]
    devices: usize,
    /// Device id prefix.
    #[arg(long, default_value = "query-")]
    device_prefix: String,
    /// The devices already exist; measure only.
    #[arg(long)]
    no_provision: bool,
    /// Runs of each query.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
}

#[derive(Args)]
struct TwinJobArgs {
    /// `ferrohub://DATA_DIR`.
    #[arg(long)]
    target: TargetSpec,
    /// Devices to provision first, PREFIX0 … PREFIX{n-1} (0: use the devices there are).
    #[arg(short = 'n', long, default_value_t = 0)]
    connections: usize,
    /// Device id prefix.
    #[arg(long, default_value = "bench-")]
    device_prefix: String,
    /// The job's queryCondition.
    #[arg(long, default_value = "*")]
    condition: String,
    /// Seconds to wait for the job (also its maxExecutionTimeInSeconds).
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
}

#[derive(Args)]
struct FaultsArgs {
    /// The `ferrohub` binary [default: `ferrohub` next to this program].
    #[arg(long, env = "FERROHUB_BIN")]
    ferrohub_bin: Option<PathBuf>,
    /// Where the hubs' data directories, their logs and summary.json go [default: a new
    /// directory under /tmp].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Scenarios to run, comma separated: kill, disk, stall, flood, or all.
    #[arg(long, default_value = "all")]
    scenarios: ferrohub_bench::faults::Scenarios,
    /// Seed of the random choices (kill moments, down times), to repeat a run [default: random].
    #[arg(long)]
    seed: Option<u64>,
    /// kill -9 cycles.
    #[arg(long, default_value_t = 200)]
    cycles: u32,
    /// MQTT/TLS devices publishing at QoS 1.
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Devices sending telemetry over HTTPS.
    #[arg(long, default_value_t = 2)]
    https_senders: usize,
    /// Messages per second all MQTT devices offer together.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Messages per second each HTTPS sender offers (one request at a time).
    #[arg(long, default_value_t = 50.0)]
    https_rate: f64,
    /// Payload bytes (at least 33: the stamp).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Unacknowledged messages one MQTT connection may have in flight.
    #[arg(long, default_value_t = 16)]
    inflight: usize,
    /// Shortest time the hub runs before it is killed, seconds.
    #[arg(long, default_value_t = 0.2)]
    uptime_min: f64,
    /// Longest time the hub runs before it is killed, seconds.
    #[arg(long, default_value_t = 3.0)]
    uptime_max: f64,
    /// Longest pause between a kill and the restart, seconds.
    #[arg(long, default_value_t = 0.5)]
    downtime_max: f64,
    /// Longest a start, a per-cycle check or a recovery may take, seconds.
    #[arg(long, default_value_t = 30.0)]
    check_timeout: f64,
    /// Seconds the stalled readers stay stalled.
    #[arg(long, default_value_t = 10.0)]
    stall_secs: f64,
    /// Event streams left unread.
    #[arg(long, default_value_t = 8)]
    stall_streams: usize,
    /// How much the hub's RSS may grow while readers stall, MiB.
    #[arg(long, default_value_t = 64)]
    stall_rss_limit_mib: u64,
    /// Idle connections per port (half raw TCP, half with TLS completed).
    #[arg(long, default_value_t = 2000)]
    flood_idle: usize,
    /// Byte-a-second senders per port (half in the TLS handshake, half after it).
    #[arg(long, default_value_t = 200)]
    flood_slow: usize,
    /// Longest the hub may take to close idle and slow clients, seconds.
    #[arg(long, default_value_t = 90.0)]
    flood_close_deadline: f64,
    /// Require the HTTPS port to close idle and slow clients too: true, false (measure and
    /// report only, for a hub without HTTPS header and idle timeouts), or auto (required when
    /// the hub has the `[https]` timeout settings).
    #[arg(long, default_value = "true")]
    expect_bounded_https: faults::flood::Expect,
    /// Descriptors above its earlier count the hub may keep after a flood or a stall.
    #[arg(long, default_value_t = 8)]
    fd_slack: u64,
    /// Memory above its earlier RSS the hub may keep after a flood, MiB.
    #[arg(long, default_value_t = 32)]
    rss_slack_mib: u64,
    /// Set the hub's HTTPS handshake, header and idle timeouts to this many seconds, when the
    /// hub has those settings (shortens the flood scenario).
    #[arg(long)]
    https_timeouts: Option<u64>,
    /// Fill/free cycles of the disk scenario.
    #[arg(long, default_value_t = 2)]
    disk_cycles: u32,
    /// Size of the disk scenario's tmpfs, MiB.
    #[arg(long, default_value_t = 64)]
    disk_size_mib: u64,
    /// Seconds the disk stays full once the hub refuses.
    #[arg(long, default_value_t = 3.0)]
    disk_hold: f64,
    /// MQTT devices of the disk scenario.
    #[arg(long, default_value_t = 10)]
    disk_devices: usize,
    /// HTTPS senders of the disk scenario.
    #[arg(long, default_value_t = 1)]
    disk_https_senders: usize,
    /// Messages per second each device of the disk scenario offers.
    #[arg(long, default_value_t = 20.0)]
    disk_rate: f64,
}

impl FaultsArgs {
    fn config(&self) -> anyhow::Result<faults::FaultsConfig> {
        use ferrohub_bench::faults::{disk, flood, kill, stall};
        anyhow::ensure!(self.devices >= 1, "--devices must be at least 1");
        anyhow::ensure!(
            self.payload >= ferrohub_bench::publish::Stamp::LEN,
            "--payload must be at least {} bytes (the stamp)",
            ferrohub_bench::publish::Stamp::LEN
        );
        for (name, v) in [
            ("--rate", self.rate),
            ("--https-rate", self.https_rate),
            ("--disk-rate", self.disk_rate),
            ("--check-timeout", self.check_timeout),
        ] {
            anyhow::ensure!(v > 0.0 && v.is_finite(), "{name} must be a positive number");
        }
        anyhow::ensure!(
            self.uptime_min >= 0.0 && self.uptime_min <= self.uptime_max,
            "--uptime-min must be between 0 and --uptime-max"
        );
        anyhow::ensure!(
            self.downtime_max >= 0.0,
            "--downtime-max must not be negative"
        );
        let ferrohub_bin = match &self.ferrohub_bin {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .context("locating this program")?
                .with_file_name("ferrohub"),
        };
        anyhow::ensure!(
            ferrohub_bin.is_file(),
            "{} is not a file: build it (cargo build --release -p ferrohub) or pass --ferrohub-bin / FERROHUB_BIN",
            ferrohub_bin.display()
        );
        let work_dir = match &self.work_dir {
            Some(p) => p.clone(),
            None => std::env::temp_dir().join(format!(
                "ferrohub-faults.{}.{}",
                ferrohub_bench::identity::unix_now(),
                std::process::id()
            )),
        };
        Ok(faults::FaultsConfig {
            ferrohub_bin,
            work_dir,
            scenarios: self.scenarios,
            seed: self.seed.unwrap_or_else(faults::rng::Rng::os_seed),
            devices: self.devices,
            https_senders: self.https_senders,
            rate: self.rate,
            https_rate: self.https_rate,
            payload: self.payload,
            inflight: self.inflight.max(1),
            check_timeout: secs_to_duration(self.check_timeout),
            kill: kill::KillConfig {
                cycles: self.cycles,
                uptime_min: self.uptime_min,
                uptime_max: self.uptime_max,
                downtime_max: self.downtime_max,
            },
            stall: stall::StallConfig {
                secs: self.stall_secs,
                streams: self.stall_streams,
                rss_limit_mib: self.stall_rss_limit_mib,
                fd_slack: self.fd_slack,
            },
            flood: flood::FloodConfig {
                idle: self.flood_idle,
                slow: self.flood_slow,
                close_deadline: self.flood_close_deadline,
                expect_bounded_https: self.expect_bounded_https,
                fd_slack: self.fd_slack,
                rss_slack_mib: self.rss_slack_mib,
            },
            disk: disk::DiskConfig {
                cycles: self.disk_cycles,
                size_mib: self.disk_size_mib,
                hold_secs: self.disk_hold,
                devices: self.disk_devices.max(1),
                https_senders: self.disk_https_senders,
                device_rate: self.disk_rate,
            },
            https_timeouts: self.https_timeouts,
        })
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json;
    match cli.command {
        Command::Publish(args) => {
            let (target, creds) = prepare(&args.target, args.connections).await?;
            let qos = if args.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            let mode = match args.rate {
                Some(r) if r > 0.0 && r.is_finite() => Mode::Rate(r),
                Some(_) => anyhow::bail!("--rate must be a positive number"),
                None => Mode::Max,
            };
            let inflight = args.inflight.unwrap_or(match mode {
                Mode::Max => 16,
                Mode::Rate(_) => 1024,
            });
            let cfg = PublishConfig {
                connections: args.connections,
                qos,
                payload: args.payload,
                mode,
                inflight,
                warmup: secs_to_duration(args.warmup),
                duration: secs_to_duration(args.duration),
                drain: secs_to_duration(args.drain),
                open: OpenPlan {
                    rate: Some(args.connect_rate),
                    concurrency: 64,
                    source_base: args.source.source_base,
                    source_addrs: args.source.source_addrs.unwrap_or(1),
                    timeout: Duration::from_secs(30),
                },
                device_prefix: args.target.device_prefix.clone(),
                server_pid: args.target.server_pid,
                stamp: None,
            };
            let summary = publish::run(
                target.spec.to_string(),
                &target.endpoint,
                &creds,
                &cfg,
                Arc::new(Counters::default()),
                false,
            )
            .await?;
            output(json, &summary, || publish_text(&summary))
        }
        Command::Connect(args) => {
            let (target, creds) = prepare(&args.target, args.connections).await?;
            let connects = (0..args.connections)
                .map(|i| {
                    creds.connect_bytes(
                        &identity::device_id(&args.target.device_prefix, i),
                        publish::KEEP_ALIVE,
                    )
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let source_addrs = args
                .source
                .source_addrs
                .unwrap_or_else(|| args.connections.div_ceil(20_000).max(4));
            let cfg = ConnectConfig {
                open: OpenPlan {
                    rate: (args.rate > 0.0 && args.rate.is_finite()).then_some(args.rate),
                    concurrency: args.concurrency,
                    source_base: args.source.source_base,
                    source_addrs,
                    timeout: secs_to_duration(args.timeout),
                },
                hold: secs_to_duration(args.hold),
                settle: secs_to_duration(args.settle),
                server_pid: args.target.server_pid,
            };
            let mut targets = vec![(target.spec.to_string(), target.endpoint.clone())];
            for spec in &args.also_target {
                let other = Target::resolve(spec, &tls_options(&args.target))?;
                targets.push((other.spec.to_string(), other.endpoint));
            }
            let summary = connect::run(&targets, connects, &cfg).await;
            if summary.established == 0 {
                output(json, &summary, || connect_text(&summary))?;
                anyhow::bail!(
                    "no connection could be established: {}",
                    summary.first_failure.as_deref().unwrap_or("unknown")
                );
            }
            output(json, &summary, || connect_text(&summary))
        }
        Command::E2e(args) => {
            let (target, creds) = prepare(&args.target, args.connections).await?;
            let Some(hub) = target.ferrohub.clone() else {
                anyhow::bail!(
                    "e2e reads events back through Ferrohub's API: use a ferrohub:// target"
                );
            };
            let cfg = PublishConfig {
                connections: args.connections,
                qos: QoS::AtLeastOnce,
                payload: args.payload,
                mode: Mode::Rate(args.rate),
                inflight: 1024,
                warmup: secs_to_duration(args.warmup),
                duration: secs_to_duration(args.duration),
                drain: secs_to_duration(args.drain),
                open: PublishConfig::open_plan_default(),
                device_prefix: args.target.device_prefix.clone(),
                server_pid: args.target.server_pid,
                stamp: None,
            };
            if !(args.rate > 0.0 && args.rate.is_finite()) {
                anyhow::bail!("--rate must be a positive number");
            }
            let summary = e2e::run(
                &hub,
                target.spec.to_string(),
                &target.endpoint,
                &creds,
                &cfg,
                secs_to_duration(args.read_timeout),
                args.reader,
            )
            .await?;
            output(json, &summary, || e2e_text(&summary))
        }
        Command::C2d(args) => {
            let cfg = c2d::C2dConfig {
                connections: args.connections,
                rate: args.rate,
                payload: args.payload,
                warmup: secs_to_duration(args.warmup),
                duration: secs_to_duration(args.duration),
                read_timeout: secs_to_duration(args.read_timeout),
                concurrency: args.concurrency,
                max_outstanding: args.max_outstanding,
                open: PublishConfig::open_plan_default(),
                device_prefix: args.target.device_prefix.clone(),
                server_pid: args.target.server_pid,
                via: args.send,
            };
            cfg.check()?;
            if cfg.max_outstanding > c2d::HUB_QUEUE_DEPTH {
                eprintln!(
                    "warning: --max-outstanding {} is above the hub's queue depth ({}); expect refused sends",
                    cfg.max_outstanding,
                    c2d::HUB_QUEUE_DEPTH
                );
            }
            let (target, creds) = prepare(&args.target, args.connections).await?;
            let Some(hub) = target.ferrohub.clone() else {
                anyhow::bail!("c2d sends through Ferrohub's service API: use a ferrohub:// target");
            };
            let summary = c2d::run(
                &hub,
                target.spec.to_string(),
                &target.endpoint,
                &creds,
                &cfg,
            )
            .await?;
            output(json, &summary, || c2d_text(&summary))
        }
        Command::EhRead(args) => {
            let TargetSpec::Ferrohub(dir) = &args.target else {
                anyhow::bail!("eh-read reads Ferrohub's event log: use a ferrohub:// target");
            };
            let hub = ferrohub_bench::target::Ferrohub::load(dir)?;
            let cfg = ferrohub_bench::ehread::EhReadConfig {
                partition: args.partition,
                events: args.events,
                credit: args.credit,
                readers: args.readers.clone(),
                timeout: secs_to_duration(args.timeout),
                server_pid: args.server_pid,
            };
            let summary = ferrohub_bench::ehread::run(&hub, &cfg).await?;
            output(json, &summary, || {
                let mut out = format!(
                    "eh-read partition {} sequence numbers {}..={}\n",
                    summary.partition, summary.from_sequence_number, summary.to_sequence_number
                );
                for r in &summary.results {
                    out.push_str(&format!(
                        "  {:?}: {} events in {:.3} s = {:.0} events/s, {:.2} MB/s body, {:.2} MB/s wire{}\n",
                        r.reader,
                        r.events,
                        r.seconds,
                        r.events_per_s,
                        r.body_mb_per_s,
                        r.wire_mb_per_s,
                        r.error.as_deref().map(|e| format!(" (stopped: {e})")).unwrap_or_default()
                    ));
                }
                out
            })
        }
        Command::Methods(args) => calls(twin::Call::Methods, args, json).await,
        Command::Twin(args) => calls(twin::Call::Desired, args, json).await,
        Command::Faults(args) => {
            let cfg = args.config()?;
            eprintln!(
                "faults: {} (seed {}), work dir {}",
                cfg.ferrohub_bin.display(),
                cfg.seed,
                cfg.work_dir.display()
            );
            let print_cycle = move |line: &str| {
                if json {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            };
            let summary = faults::run(cfg, &print_cycle).await?;
            output(json, &summary, || faults::text(&summary))?;
            let failed = summary.checks.iter().filter(|c| !c.ok).count();
            if !summary.ok {
                anyhow::bail!(
                    "{failed} of {} checks failed (details in {}/summary.json)",
                    summary.checks.len(),
                    summary.config.work_dir.display()
                );
            }
            Ok(())
        }
        Command::Query(args) => {
            let TargetSpec::Ferrohub(dir) = &args.target else {
                anyhow::bail!("query needs a ferrohub:// target");
            };
            let hub = ferrohub_bench::target::Ferrohub::load(dir)?;
            let populate_s = if args.no_provision {
                0.0
            } else {
                query::populate(&hub, &args.device_prefix, args.devices)
                    .await?
                    .as_secs_f64()
            };
            let summary = query::measure(&hub, args.repeat, populate_s).await?;
            output(json, &summary, || query::text(&summary))
        }
        Command::TwinJob(args) => {
            let TargetSpec::Ferrohub(dir) = &args.target else {
                anyhow::bail!("twin-job needs a ferrohub:// target");
            };
            let hub = ferrohub_bench::target::Ferrohub::load(dir)?;
            if args.connections > 0 {
                let key = device_key(None)?;
                provision::provision(&hub, &args.device_prefix, args.connections, &key).await?;
            }
            let summary = twin_job::run(
                &hub,
                &args.condition,
                std::time::Duration::from_secs(args.timeout),
            )
            .await?;
            output(json, &summary, || twin_job::text(&summary))
        }
        Command::Provision(args) => {
            let TargetSpec::Ferrohub(dir) = &args.target else {
                anyhow::bail!("provision needs a ferrohub:// target");
            };
            let hub = ferrohub_bench::target::Ferrohub::load(dir)?;
            let key = device_key(args.device_key.as_deref())?;
            let took =
                provision::provision(&hub, &args.device_prefix, args.connections, &key).await?;
            #[derive(Serialize)]
            struct Provisioned {
                devices: usize,
                device_prefix: String,
                device_key: String,
                elapsed_s: f64,
            }
            let summary = Provisioned {
                devices: args.connections,
                device_prefix: args.device_prefix.clone(),
                device_key: key.to_base64(),
                elapsed_s: took.as_secs_f64(),
            };
            output(json, &summary, || {
                format!(
                    "provisioned {} devices in {:.1} s; key {}",
                    summary.devices, summary.elapsed_s, summary.device_key
                )
            })
        }
    }
}

/// Runs the `methods` or `twin` workload.
async fn calls(call: twin::Call, args: CallArgs, json: bool) -> anyhow::Result<()> {
    let cfg = twin::TwinConfig {
        call,
        connections: args.connections,
        rate: args.rate,
        warmup: secs_to_duration(args.warmup),
        duration: secs_to_duration(args.duration),
        read_timeout: secs_to_duration(args.read_timeout),
        concurrency: args.concurrency,
        open: PublishConfig::open_plan_default(),
        device_prefix: args.target.device_prefix.clone(),
        server_pid: args.target.server_pid,
    };
    cfg.check()?;
    let (target, creds) = prepare(&args.target, args.connections).await?;
    let Some(hub) = target.ferrohub.clone() else {
        anyhow::bail!(
            "{} calls Ferrohub's service API: use a ferrohub:// target",
            call.name()
        );
    };
    let summary = twin::run(
        &hub,
        target.spec.to_string(),
        &target.endpoint,
        &creds,
        &cfg,
    )
    .await?;
    output(json, &summary, || twin::text(&summary))
}

/// Parses `--device-key` or makes a new one.
fn device_key(given: Option<&str>) -> anyhow::Result<SymmetricKey> {
    match given {
        Some(k) => SymmetricKey::from_base64(k).context("--device-key is not a valid base64 key"),
        None => SymmetricKey::try_generate().context("generating a device key"),
    }
}

/// The TLS settings of `args`.
fn tls_options(args: &TargetArgs) -> TlsOptions {
    TlsOptions {
        enabled: args.tls,
        ca: args.ca.clone(),
        server_name: args.tls_server_name.clone(),
        resume: args.tls_resume,
    }
}

/// Resolves the target and, for Ferrohub, makes sure `count` devices exist with our key.
async fn prepare(args: &TargetArgs, count: usize) -> anyhow::Result<(Target, Credentials)> {
    let target = Target::resolve(&args.target, &tls_options(args))?;
    let creds = match &target.ferrohub {
        None => Credentials::Anonymous,
        Some(hub) => {
            let key = device_key(args.device_key.as_deref())?;
            if !args.no_provision {
                let took = provision::provision(hub, &args.device_prefix, count, &key).await?;
                eprintln!("provisioned {count} devices in {:.1} s", took.as_secs_f64());
            }
            Credentials::Sas {
                host: hub.device_host.clone(),
                key,
                expiry: identity::unix_now() + identity::TOKEN_TTL.as_secs(),
            }
        }
    };
    Ok((target, creds))
}

/// Prints `summary` as JSON or as text.
fn output<T: Serialize>(
    json: bool,
    summary: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
    } else {
        println!("{}", text());
    }
    Ok(())
}

fn publish_text(s: &publish::PublishSummary) -> String {
    let mut out = format!(
        "publish {} ({}): {}/{} connections, QoS {}, {} B, {}\n",
        s.target,
        if s.tls { "TLS" } else { "plain" },
        s.established,
        s.connections,
        s.qos,
        s.payload_bytes,
        match s.offered_rate {
            Some(r) => format!("offered {r:.0} msg/s"),
            None => format!("max rate, window {}", s.inflight),
        }
    );
    out.push_str(&format!(
        "  achieved {:.0} msg/s over {:.1} s (sent {}, acked {}, unacked {}, unsent {})\n",
        s.rate, s.duration_s, s.sent, s.acked, s.unacked, s.unsent
    ));
    if let Some(l) = &s.latency_us {
        out.push_str(&format!("  PUBACK latency: {}\n", l.line()));
    }
    if let Some(l) = &s.latency_from_due_us {
        out.push_str(&format!("  from scheduled send: {}\n", l.line()));
    }
    if let Some(c) = &s.cpu {
        out.push_str(&format!(
            "  CPU: generator {:.0} %, server {}\n",
            c.generator_pct,
            c.server_pct.map_or("?".into(), |p| format!("{p:.0} %"))
        ));
    }
    if s.error_count() > 0 {
        out.push_str(&format!(
            "  errors: connect {:?}, connections {:?}, unacked {}\n",
            s.connect_failures, s.connection_errors, s.unacked
        ));
    }
    out
}

fn connect_text(s: &connect::ConnectSummary) -> String {
    let nodes = if s.targets.len() > 1 {
        format!(" and {} more nodes", s.targets.len() - 1)
    } else {
        String::new()
    };
    let mut out = format!(
        "connect {}{nodes} ({}): {}/{} established in {:.2} s = {:.0} conn/s\n",
        s.target,
        if s.tls { "TLS" } else { "plain" },
        s.established,
        s.requested,
        s.elapsed_s,
        s.rate
    );
    if let Some(l) = &s.latency_us {
        out.push_str(&format!("  connect latency: {}\n", l.line()));
    }
    if let Some(b) = s.server_bytes_per_connection {
        out.push_str(&format!(
            "  server memory: {:.0} B per connection ({} → {} KiB)\n",
            b,
            s.server_rss_before_kib.unwrap_or(0),
            s.server_rss_after_kib.unwrap_or(0)
        ));
    }
    if !s.failures.is_empty() {
        out.push_str(&format!("  failures: {:?}\n", s.failures));
    }
    out
}

fn e2e_text(s: &e2e::E2eSummary) -> String {
    let mut out = publish_text(&s.publish);
    out.push_str(&format!(
        "  read back {}/{} (missing {}, duplicates {}) from {} partitions\n",
        s.received, s.expected, s.missing, s.duplicates, s.partitions
    ));
    if let Some(l) = &s.latency_us {
        out.push_str(&format!("  end-to-end latency: {}\n", l.line()));
    }
    out
}

fn c2d_text(s: &c2d::C2dSummary) -> String {
    let mut out = format!(
        "c2d {} ({}): {}/{} devices subscribed, {} B, offered {:.0} msg/s (at most {} outstanding per device, {} sends at once)\n",
        s.target,
        if s.tls { "TLS" } else { "plain" },
        s.subscribed,
        s.connections,
        s.payload_bytes,
        s.offered_rate,
        s.max_outstanding,
        s.concurrency
    );
    out.push_str(&format!(
        "  delivered {:.0} msg/s over {:.1} s: due {}, sent {}, accepted {}, refused (queue full) {}, send errors {}, skipped {}\n",
        s.rate, s.duration_s, s.offered, s.sent, s.accepted, s.refused, s.send_errors, s.skipped
    ));
    out.push_str(&format!(
        "  received {} (missing {}, duplicates {}, redelivered {}, stale {}; purged before the run {})\n",
        s.received, s.missing, s.duplicates, s.redelivered, s.stale, s.purged
    ));
    if let Some(l) = &s.latency_us {
        out.push_str(&format!("  end-to-end latency: {}\n", l.line()));
    }
    if let Some(l) = &s.latency_from_due_us {
        out.push_str(&format!("  from scheduled send: {}\n", l.line()));
    }
    if let Some(l) = &s.send_latency_us {
        out.push_str(&format!(
            "  send latency (to HTTP 2xx or AMQP accepted): {}\n",
            l.line()
        ));
    }
    if s.send_overrun_s > 0.0 {
        out.push_str(&format!(
            "  sending ended {:.1} s late: the sends in progress were at --concurrency\n",
            s.send_overrun_s
        ));
    }
    if let Some(c) = &s.cpu {
        out.push_str(&format!(
            "  CPU: generator {:.0} %, server {}\n",
            c.generator_pct,
            c.server_pct.map_or("?".into(), |p| format!("{p:.0} %"))
        ));
    }
    if let Some(e) = &s.first_send_error {
        out.push_str(&format!("  first send error: {e}\n"));
    }
    if !s.connect_failures.is_empty()
        || !s.subscribe_failures.is_empty()
        || !s.connection_errors.is_empty()
    {
        out.push_str(&format!(
            "  errors: connect {:?}, subscribe {:?}, connections {:?}\n",
            s.connect_failures, s.subscribe_failures, s.connection_errors
        ));
    }
    out
}
