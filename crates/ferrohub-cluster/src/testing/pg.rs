//! PostgreSQL fixtures: a fresh database per test, and private clusters to stop and start.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::runtime::Runtime;

use super::{FixtureError, wait_until};
use crate::postgres::{PgConfig, PgDatabase};

/// The server test databases are created on, as a URL ending in `/`.
fn server_base() -> String {
    let mut base = std::env::var("FERROHUB_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/".to_owned());
    if !base.ends_with('/') {
        base.push('/');
    }
    base
}

/// A name no other test (in this process or another) picks: `prefix`, the process id, the
/// time and a counter.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A port that was free a moment ago (bound to 127.0.0.1:0 and released).
pub fn free_port() -> Result<u16, FixtureError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(FixtureError::new)?;
    Ok(listener.local_addr().map_err(FixtureError::new)?.port())
}

/// A database created for one test on the test server, dropped (with `FORCE`, closing what is
/// still connected) when this value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    base: String,
}

impl TestDatabase {
    /// Creates a database with a unique name on the test server (`FERROHUB_TEST_PG`).
    pub async fn create() -> Result<Self, FixtureError> {
        Self::create_on(&server_base()).await
    }

    /// Creates a database with a unique name on the server at `base` (a URL ending in `/`).
    pub async fn create_on(base: &str) -> Result<Self, FixtureError> {
        let name = unique_name("ferrohub_test");
        admin(base, &format!("CREATE DATABASE {name}")).await?;
        Ok(TestDatabase {
            name,
            base: base.to_owned(),
        })
    }

    /// The database's URL.
    pub fn url(&self) -> String {
        format!("{}{}", self.base, self.name)
    }

    /// The store configuration for this database, with short time limits for tests.
    pub fn config(&self) -> PgConfig {
        let mut config = PgConfig::new(self.url());
        config.max_connections = 8;
        config.connect_timeout = Duration::from_secs(2);
        config.wait_timeout = Duration::from_secs(2);
        config.op_timeout = Duration::from_secs(5);
        config
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let base = self.base.clone();
        // A thread of its own: the drop may happen inside or outside a runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(FixtureError::new)?;
            rt.block_on(admin(&base, &sql))
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// Runs `sql` on the `postgres` database of the server at `base`.
async fn admin(base: &str, sql: &str) -> Result<(), FixtureError> {
    let (client, connection) =
        tokio_postgres::connect(&format!("{base}postgres"), tokio_postgres::NoTls)
            .await
            .map_err(|e| FixtureError::new(format!("connecting to {base}: {e}")))?;
    let task = tokio::spawn(connection);
    let result = client
        .batch_execute(sql)
        .await
        .map_err(|e| FixtureError::new(format!("{sql}: {e}")));
    drop(client);
    let _ = task.await;
    result
}

/// What keeps a store made by [`pg_fixture`] working: its runtime and its database. Dropping
/// it stops the runtime and drops the database.
pub struct PgFixture {
    /// The runtime the store's pool runs on.
    pub runtime: Runtime,
    /// The database.
    pub database: TestDatabase,
}

impl std::fmt::Debug for PgFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgFixture")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// A store opened by `open` on a fresh database, with a runtime of its own, for tests that
/// drive the store from plain threads (the contract suites).
///
/// # Panics
///
/// When the database cannot be created or the store not opened: a fixture failing is a test
/// failing.
pub fn pg_fixture<T, E, F, Fut>(open: F) -> (T, PgFixture)
where
    F: FnOnce(PgDatabase) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Debug,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let (store, database) = runtime.block_on(async {
        let database = TestDatabase::create()
            .await
            .unwrap_or_else(|e| panic!("test database: {e}"));
        let db = PgDatabase::new(&database.config()).unwrap_or_else(|e| panic!("pool: {e}"));
        let store = open(db)
            .await
            .unwrap_or_else(|e| panic!("open store: {e:?}"));
        (store, database)
    });
    (store, PgFixture { runtime, database })
}

/// A PostgreSQL cluster of its own (initdb into a temporary directory, its own port), for tests
/// that stop and restart the server. Stopped and removed when dropped.
#[derive(Debug)]
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// Creates and starts a cluster on a free port, trusting local connections (user
    /// `postgres`). Takes a few seconds.
    pub fn start() -> Result<Self, FixtureError> {
        let bin = PathBuf::from(
            std::env::var("FERROHUB_PG_BIN")
                .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".to_owned()),
        );
        let dir = tempfile::Builder::new()
            .prefix("ferrohub-pg-")
            .tempdir()
            .map_err(FixtureError::new)?;
        // PostgreSQL refuses to run as root: then it runs as the `postgres` account.
        let as_postgres = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        if as_postgres {
            let uid = id_of("-u")?;
            let gid = id_of("-g")?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| FixtureError::new(format!("chown {}: {e}", dir.path().display())))?;
        }
        let pg = PrivatePostgres {
            port: free_port()?,
            dir,
            bin,
            as_postgres,
        };
        let data = pg.data_dir();
        pg.run(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )?;
        pg.start_again()?;
        Ok(pg)
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("{}{name}", self.base())
    }

    /// The cluster's URL without a database name (for [`TestDatabase::create_on`]).
    pub fn base(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/", self.port)
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: like a crash, open connections
    /// are cut).
    pub fn stop(&self) -> Result<(), FixtureError> {
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &["-D", path_str(&data)?, "-m", "immediate", "-w", "stop"],
        )
    }

    /// Starts the (stopped) server again on the same port and waits until it takes
    /// connections.
    pub fn start_again(&self) -> Result<(), FixtureError> {
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            path_str(self.dir.path())?
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data)?,
                "-l",
                path_str(&log)?,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        let port = self.port;
        wait_until(Duration::from_secs(30), "private PostgreSQL", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), FixtureError> {
        let program = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd
            .args(args)
            .output()
            .map_err(|e| FixtureError::new(format!("{}: {e}", program.display())))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(FixtureError::new(format!(
                "{tool} {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn id_of(flag: &str) -> Result<u32, FixtureError> {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .map_err(FixtureError::new)?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| FixtureError::new("no `postgres` account to run PostgreSQL as"))
}

fn path_str(p: &Path) -> Result<&str, FixtureError> {
    p.to_str()
        .ok_or_else(|| FixtureError::new(format!("{} is not UTF-8", p.display())))
}
