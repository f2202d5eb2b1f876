//! The `ScheduledJobStore` contract (`ferrohub_registry::jobs_contract`) run against the SQLite
//! job store; `ferrohub-cluster` runs it against PostgreSQL.

use ferrohub_registry::scheduled_jobs::SqliteJobStore;
use tempfile::TempDir;

fn sqlite_jobs() -> (SqliteJobStore, TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteJobStore::open(dir.path().join("scheduled-jobs.db")).expect("open");
    (store, dir)
}

ferrohub_registry::job_store_contract!(sqlite_job_store, sqlite_jobs());

#[test]
fn jobs_survive_reopening() {
    use ferrohub_registry::contract::block_on;
    use ferrohub_registry::jobs_contract::{device_job, job};
    use ferrohub_registry::scheduled_jobs::{DeviceJobStatus, Expect, JobWrite, ScheduledJobStore};
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("scheduled-jobs.db");
    {
        let s = SqliteJobStore::open(&path).expect("open");
        block_on(s.write(JobWrite {
            job: Some((job("j1", 0), Expect::Absent)),
            devices: vec![device_job("j1", "d1", DeviceJobStatus::Running)],
        }))
        .expect("write");
    }
    let s = SqliteJobStore::open(&path).expect("reopen");
    assert_eq!(block_on(s.job("j1")).expect("read"), Some(job("j1", 0)));
    assert_eq!(
        block_on(s.statistics("j1")).expect("stats").running_count,
        1
    );
}
