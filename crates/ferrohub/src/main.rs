//! `ferrohub`: the hub (`ferrohub serve`) and its admin command line in one binary.
//!
//! `serve` runs in this order: parse flags, read and validate the configuration (before any
//! port is bound), start logging, build the hub (data directory, TLS, registry, listeners), run
//! until SIGINT/SIGTERM, drain. Exit codes: 0 after a clean stop, 64 for a configuration or
//! usage error, 1 when the hub could not start.

mod admin;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use std::sync::Arc;

use ferrohub_server::{App, Config, DEFAULT_CONFIG_TOML, LogFormat, Overrides, SystemClock};

/// Exit code for a configuration or usage error (`EX_USAGE`).
const EXIT_USAGE: u8 = 64;

/// Ferrohub: a self-hosted IoT hub that speaks Azure IoT Hub's protocols.
#[derive(Parser)]
#[command(name = "ferrohub", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve(ServeArgs),
    /// Print or check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    #[command(flatten)]
    Admin(admin::AdminCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the commented default configuration file.
    Generate,
    /// Validate a configuration (file, environment and flags) and print the result.
    Check(ServeArgs),
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Configuration file (TOML); `ferrohub config generate` prints the default.
    #[arg(long, short = 'c', env = "FERROHUB_CONFIG")]
    config: Option<PathBuf>,
    /// Where the hub keeps its state [default: ./ferrohub-data].
    #[arg(long, env = "FERROHUB_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The hub's host name, as in connection strings [default: localhost].
    #[arg(long, env = "FERROHUB_HOSTNAME")]
    hostname: Option<String>,
    /// HTTPS port (REST API); 0 picks a free one [default: 443, else 8443].
    #[arg(long, env = "FERROHUB_HTTPS_PORT")]
    https_port: Option<u16>,
    /// MQTT over TLS port; 0 picks a free one [default: 8883].
    #[arg(long, env = "FERROHUB_MQTT_PORT")]
    mqtt_port: Option<u16>,
    /// Plain-TCP MQTT port (no TLS; local experiments only) [default: off].
    #[arg(long, env = "FERROHUB_MQTT_PLAIN_PORT")]
    mqtt_plain_port: Option<u16>,
    /// AMQP 1.0 over TLS port; 0 picks a free one [default: 5671].
    #[arg(long, env = "FERROHUB_AMQP_PORT")]
    amqp_port: Option<u16>,
    /// Address the listeners bind [default: 0.0.0.0].
    #[arg(long, env = "FERROHUB_BIND")]
    bind: Option<String>,
    /// Log filter, such as `info` or `ferrohub_server=debug,info` [default: info].
    #[arg(long = "log", env = "FERROHUB_LOG")]
    log_level: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "FERROHUB_LOG_FORMAT")]
    log_format: Option<String>,
    /// This node's name in a cluster (`cluster.node`) [default: random].
    #[arg(long, env = "FERROHUB_NODE")]
    node: Option<String>,
}

impl ServeArgs {
    fn load(&self) -> Result<Config, ferrohub_server::ConfigError> {
        let overrides = Overrides {
            data_dir: self.data_dir.clone(),
            hostname: self.hostname.clone(),
            https_port: self.https_port,
            mqtt_port: self.mqtt_port,
            mqtt_plain_port: self.mqtt_plain_port,
            amqp_port: self.amqp_port,
            bind: self.bind.clone(),
            log_level: self.log_level.clone(),
            log_format: self.log_format.clone(),
            node: self.node.clone(),
        };
        Config::load(self.config.as_deref(), &overrides)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Config(ConfigCommand::Generate) => {
            print!("{DEFAULT_CONFIG_TOML}");
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Check(args)) => match args.load() {
            Ok(config) => {
                println!("{config:#?}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Admin(cmd) => runtime.block_on(admin::run(cmd)),
    }
}

fn init_logging(config: &Config) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .map_err(|e| format!("invalid value for `log.level`: {e}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let result = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| format!("cannot start logging: {e}"))
}

async fn serve(args: ServeArgs) -> ExitCode {
    let config = match args.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(e) = init_logging(&config) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    // Every TLS user in the process shares one crypto provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let data_dir = config.data_dir.clone();
    let backends = match &config.cluster {
        None => None,
        Some(cluster) => {
            tracing::info!(node = %cluster.node, nats = ?cluster.nats, replicas = cluster.replicas, "cluster node: connecting to PostgreSQL and NATS");
            match ferrohub_cluster::node::backends(&config).await {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::error!("cannot start: {e}");
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let node = config.cluster.as_ref().map(|c| c.node.clone());
    let app = match App::build_with(config, Arc::new(SystemClock), backends).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listeners = app.listeners();
    tracing::info!(https = %listeners.https, "HTTPS listening (REST API, device HTTPS, MQTT over WebSockets)");
    if let Some(mqtt) = listeners.mqtt {
        tracing::info!(%mqtt, "MQTT over TLS listening");
    }
    if let Some(plain) = listeners.mqtt_plain {
        tracing::warn!(%plain, "plain-TCP MQTT listening: no TLS, for local use only");
    }
    if let Some(amqp) = listeners.amqp {
        tracing::info!(%amqp, "AMQP over TLS listening (Event Hub-compatible endpoint)");
    }
    println!();
    match &node {
        Some(node) => println!("Ferrohub is running as cluster node {node}."),
        None => println!("Ferrohub is running."),
    }
    println!(
        "  HTTPS (REST API, device HTTPS, MQTT over WebSockets): https://{}",
        listeners.https
    );
    if let Some(mqtt) = listeners.mqtt {
        println!("  MQTT over TLS:      {mqtt}");
    }
    if let Some(plain) = listeners.mqtt_plain {
        println!("  MQTT, plain TCP:    {plain}");
    }
    if let Some(amqp) = listeners.amqp {
        println!("  AMQP over TLS (Event Hub-compatible endpoint): {amqp}");
    }
    println!(
        "  Owner connection string (also in {}):",
        data_dir.join("owner.connection-string").display()
    );
    println!("    {}", app.owner_connection_string());
    if let Some(ca) = app.ca_path() {
        println!("  CA certificate to trust: {}", ca.display());
    }
    println!();
    app.run(shutdown_signal()).await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
