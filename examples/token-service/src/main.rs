//! `token-service`: run the sample token service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use ferrohub_auth::ConnectionString;
use token_service::{TokenService, parse_keys_file, router};

/// Hands out device-scoped Ferrohub SAS tokens to devices that present their API key.
#[derive(Parser)]
struct Args {
    /// Connection string of a shared access policy with DeviceConnect (the hub's `device`
    /// policy: `ferrohub-data/policies.json` has its key).
    #[arg(long, env = "TOKEN_SERVICE_CONNECTION_STRING")]
    connection_string: String,
    /// JSON file mapping device ids to the SHA-256 (hex) of their API keys.
    #[arg(long)]
    keys: PathBuf,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// Address to listen on (plain HTTP: put it behind TLS outside a laptop).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Print the SHA-256 of this API key (for the keys file) and exit.
    #[arg(long)]
    hash: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().init();
    let args = Args::parse();
    if let Some(key) = &args.hash {
        println!("{}", token_service::hash_api_key(key));
        return Ok(());
    }
    let cs: ConnectionString = args.connection_string.parse()?;
    let policy_name = cs
        .shared_access_key_name
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the connection string names no policy"))?;
    let policy_key = cs
        .key()?
        .ok_or_else(|| anyhow::anyhow!("the connection string has no key"))?;
    let hub_host = cs
        .host_name
        .split(':')
        .next()
        .unwrap_or(&cs.host_name)
        .to_owned();
    let service = TokenService {
        hub_host,
        policy_name,
        policy_key,
        api_key_hashes: parse_keys_file(&std::fs::read_to_string(&args.keys)?)?,
        ttl_secs: args.ttl,
        clock: Arc::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        }),
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "token service listening");
    axum::serve(listener, router(Arc::new(service))).await?;
    Ok(())
}
