//! Test harness for black-box tests: [`TestHub`] runs a real Ferrohub (real TLS, real SQLite,
//! real listeners on port 0) in a temporary data directory, inside the test's runtime.
//!
//! Only `tests/` folders use this crate. It panics on set-up failures: a test that cannot start
//! its hub has nothing to assert.
#![allow(clippy::unwrap_used)]

pub mod amqp;
pub mod mqtt;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrohub_auth::{ConnectionString, SymmetricKey};
use ferrohub_client::HubClient;
use ferrohub_server::{App, Backends, Config, Overrides, SystemClock};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use amqp::AmqpTestClient;
use ferrohub_client::amqp::{AmqpClient, AmqpClientError};

/// A running hub for a test. Dropping it stops the hub; [`TestHub::stop`] waits for the stop.
pub struct TestHub {
    dir: Option<TempDir>,
    data_dir: PathBuf,
    https: SocketAddr,
    mqtt: SocketAddr,
    mqtt_plain: SocketAddr,
    amqp: SocketAddr,
    owner: String,
    ca_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Installs the process-wide rustls crypto provider, as `ferrohub serve` does.
pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

impl TestHub {
    /// Starts a hub in a new temporary data directory.
    pub async fn start() -> TestHub {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let mut hub = Self::start_in(&data_dir).await;
        hub.dir = Some(dir);
        hub
    }

    /// Starts a hub in a new temporary data directory with `toml` as its configuration file
    /// (ports, bind address and data directory are still the test's).
    pub async fn start_with_config(toml: &str) -> TestHub {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let mut hub = Self::start_configured(&data_dir, toml).await;
        hub.dir = Some(dir);
        hub
    }

    /// Starts a hub on `data_dir`, which may hold an earlier hub's state (restart tests).
    pub async fn start_in(data_dir: &Path) -> TestHub {
        Self::start_configured(data_dir, "").await
    }

    /// Starts a hub in a new temporary data directory on the given engines (a cluster node's
    /// PostgreSQL stores and JetStream log) instead of the embedded ones.
    pub async fn start_with_backends(backends: Backends) -> TestHub {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let mut hub = Self::start_on(&data_dir, "", Some(backends)).await;
        hub.dir = Some(dir);
        hub
    }

    /// [`TestHub::start_with_backends`] with `toml` as the configuration file (ports, bind
    /// address and data directory are still the test's).
    pub async fn start_with_backends_and_config(backends: Backends, toml: &str) -> TestHub {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let mut hub = Self::start_on(&data_dir, toml, Some(backends)).await;
        hub.dir = Some(dir);
        hub
    }

    async fn start_configured(data_dir: &Path, toml: &str) -> TestHub {
        Self::start_on(data_dir, toml, None).await
    }

    /// Starts a hub on `data_dir`, or says why it could not (a stopped hub's last tasks may
    /// still hold the directory for a moment: callers retry until a deadline).
    pub async fn try_start_in(data_dir: &Path) -> Result<TestHub, ferrohub_server::BuildError> {
        Self::try_start_on(data_dir, "", None).await
    }

    async fn start_on(data_dir: &Path, toml: &str, backends: Option<Backends>) -> TestHub {
        Self::try_start_on(data_dir, toml, backends).await.unwrap()
    }

    async fn try_start_on(
        data_dir: &Path,
        toml: &str,
        backends: Option<Backends>,
    ) -> Result<TestHub, ferrohub_server::BuildError> {
        install_crypto();
        let overrides = Overrides {
            data_dir: Some(data_dir.to_owned()),
            https_port: Some(0),
            mqtt_port: Some(0),
            mqtt_plain_port: Some(0),
            amqp_port: Some(0),
            bind: Some("127.0.0.1".into()),
            ..Overrides::default()
        };
        let raw = ferrohub_server::config::ConfigToml::parse(toml, "test configuration").unwrap();
        let config = Config::from_toml(raw, &overrides).unwrap();
        let app = App::build_with(config, std::sync::Arc::new(SystemClock), backends).await?;
        let https = app.listeners().https;
        let mqtt = app.listeners().mqtt.unwrap();
        let mqtt_plain = app.listeners().mqtt_plain.unwrap();
        let amqp = app.listeners().amqp.unwrap();
        let owner = app.owner_connection_string().to_owned();
        let ca_path = app.ca_path().unwrap().to_owned();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        Ok(TestHub {
            dir: None,
            data_dir: data_dir.to_owned(),
            https,
            mqtt,
            mqtt_plain,
            amqp,
            owner,
            ca_path,
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// Stops the hub and waits until it has released its data directory. Returns the
    /// temporary directory (if the hub made one) so a restart can reuse it.
    pub async fn stop(mut self) -> Option<TempDir> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
        self.dir.take()
    }

    /// The HTTPS listener.
    pub fn https_addr(&self) -> SocketAddr {
        self.https
    }

    /// The MQTT over TLS listener.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt
    }

    /// The plain-TCP MQTT listener.
    pub fn mqtt_plain_addr(&self) -> SocketAddr {
        self.mqtt_plain
    }

    /// The AMQP over TLS listener.
    pub fn amqp_addr(&self) -> SocketAddr {
        self.amqp
    }

    /// An AMQP connection to the hub's AMQP listener over TLS (no SASL; authorize with
    /// [`AmqpClient::put_token`]).
    pub async fn amqp(&self) -> AmqpTestClient {
        AmqpClient::open(self.amqp_tls().await, "localhost")
            .await
            .unwrap()
    }

    /// An AMQP connection to the hub's AMQP listener over TLS after a SASL exchange with
    /// `mechanism`; the hub's refusal is [`AmqpClientError::Sasl`].
    pub async fn amqp_sasl(
        &self,
        mechanism: &str,
        initial_response: Option<&[u8]>,
    ) -> Result<AmqpTestClient, AmqpClientError> {
        let tls = self.amqp_tls().await;
        AmqpClient::open_sasl(tls, "localhost", mechanism, initial_response).await
    }

    async fn amqp_tls(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(self.amqp).await.unwrap();
        let _ = tcp.set_nodelay(true);
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        tls_connector(&self.ca_pem(), &[])
            .connect(name, tcp)
            .await
            .unwrap()
    }

    /// `https://localhost:<port>`.
    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.https.port())
    }

    /// The owner connection string; `HostName` is `localhost:<port>`.
    pub fn owner_connection_string(&self) -> String {
        self.owner.clone()
    }

    /// The generated CA certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.ca_path.clone()
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca_path).unwrap()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A typed client authenticated as `iothubowner`.
    pub fn client(&self) -> HubClient {
        let cs: ConnectionString = self.owner.parse().unwrap();
        HubClient::new(&cs, Some(&self.ca_pem())).unwrap()
    }

    /// A typed client for policy `name` (keys read from the data directory).
    pub fn client_for(&self, policy: &str) -> HubClient {
        let cs: ConnectionString = self.policy_connection_string(policy).parse().unwrap();
        HubClient::new(&cs, Some(&self.ca_pem())).unwrap()
    }

    /// The connection string of policy `name`, with this hub's host and port.
    pub fn policy_connection_string(&self, name: &str) -> String {
        let key = self.policy_key(name);
        format!(
            "HostName=localhost:{};SharedAccessKeyName={name};SharedAccessKey={}",
            self.https.port(),
            key.to_base64()
        )
    }

    /// The primary key of policy `name`, from `policies.json`.
    pub fn policy_key(&self, name: &str) -> SymmetricKey {
        let text = std::fs::read(self.data_dir.join("policies.json")).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&text).unwrap();
        let rule = doc["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["keyName"] == name)
            .unwrap();
        SymmetricKey::from_base64(rule["primaryKey"].as_str().unwrap()).unwrap()
    }

    /// A SAS token for policy `name`, scoped to the hub, expiring `ttl` from now (a negative
    /// `ttl_secs` gives a token that expired that long ago).
    pub fn policy_token(&self, name: &str, ttl_secs: i64) -> String {
        let expiry = (now_secs() as i64 + ttl_secs).max(0) as u64;
        let host = format!("localhost:{}", self.https.port());
        ferrohub_auth::mint(&host, &self.policy_key(name), expiry, Some(name))
    }

    /// A raw HTTP client trusting the hub's CA, for asserting exact statuses, headers and bodies.
    pub fn http(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&self.ca_pem()).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap()
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A TLS connector trusting `ca_pem` (the hub's CA) that offers the `alpn` protocols, for
/// tests that drive connections byte by byte.
pub fn tls_connector(ca_pem: &[u8], alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    install_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::pem_slice_iter(
            ca_pem,
        )
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` after `limit`.
/// Tests wait for conditions, never for fixed times.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_ok(limit, || {
        let checked = check();
        async move { checked.await.ok_or_else(|| what.to_owned()) }
    })
    .await
}

/// Polls `check` every 20 ms until it returns `Ok`, or panics after `limit` with what its
/// last `Err` said is still missing.
pub async fn eventually_ok<T, F, Fut>(limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(missing) => assert!(
                tokio::time::Instant::now() < deadline,
                "not within {limit:?}: {missing}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
