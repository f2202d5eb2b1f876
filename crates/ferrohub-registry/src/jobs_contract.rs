//! The [`ScheduledJobStore`] contract as a suite any job store can run (the SQLite store here,
//! the PostgreSQL store of `ferrohub-cluster`), with
//! [`job_store_contract!`](crate::job_store_contract):
//!
//! ```ignore
//! ferrohub_registry::job_store_contract!(sqlite_jobs, sqlite_job_store());
//! ```
//!
//! The argument is evaluated once per case, giving `(store, guard)`. Cases run on
//! [`crate::contract::block_on`].

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::scheduled_jobs::{
    DeviceJob, DeviceJobStatus, Expect, JobFilter, JobStatus, JobType, JobWrite, ScheduledJob,
    ScheduledJobStore, StoreError,
};

/// A fixed instant plus `secs` seconds.
pub fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("valid time")
}

/// A queued twin job.
pub fn job(id: &str, version: u64) -> ScheduledJob {
    ScheduledJob {
        job_id: id.to_owned(),
        job_type: JobType::ScheduleUpdateTwin,
        query_condition: "tags.site = 'B7'".to_owned(),
        created_time: at(0),
        start_time: at(60),
        end_time: None,
        max_execution_time_in_seconds: 3600,
        update_twin: Some(json!({"etag": "*", "tags": {"fw": "2.1"}})),
        cloud_to_device_method: None,
        status: JobStatus::Queued,
        failure_reason: None,
        status_message: None,
        scanned_to: None,
        scan_complete: false,
        version,
    }
}

/// A device record of `job_id`.
pub fn device_job(job_id: &str, device: &str, status: DeviceJobStatus) -> DeviceJob {
    DeviceJob {
        job_id: job_id.to_owned(),
        device_id: device.to_owned(),
        status,
        created_time: at(61),
        start_time: None,
        end_time: None,
        last_updated_time: at(61),
        outcome: None,
        error: None,
    }
}

fn new_job(j: ScheduledJob) -> JobWrite {
    JobWrite {
        job: Some((j, Expect::Absent)),
        devices: Vec::new(),
    }
}

/// The contract's cases.
pub mod cases {
    use super::*;

    pub async fn create_once_then_compare_and_set<S: ScheduledJobStore>(s: &S) {
        s.write(new_job(job("j1", 0))).await.expect("create");
        assert_eq!(
            s.write(new_job(job("j1", 0))).await,
            Err(StoreError::Conflict { index: 0 }),
            "a second create conflicts"
        );
        let mut running = job("j1", 1);
        running.status = JobStatus::Running;
        running.scanned_to = Some("d5".to_owned());
        s.write(JobWrite {
            job: Some((running.clone(), Expect::Version(0))),
            devices: Vec::new(),
        })
        .await
        .expect("update from version 0");
        assert_eq!(
            s.write(JobWrite {
                job: Some((job("j1", 2), Expect::Version(0))),
                devices: Vec::new(),
            })
            .await,
            Err(StoreError::Conflict { index: 0 }),
            "a stale version conflicts"
        );
        assert_eq!(s.job("j1").await.expect("read"), Some(running));
        assert_eq!(s.job("nope").await.expect("read"), None);
    }

    pub async fn writes_are_all_or_nothing<S: ScheduledJobStore>(s: &S) {
        s.write(new_job(job("j1", 0))).await.expect("create");
        // Device records with a stale job version: neither lands.
        let mut next = job("j1", 1);
        next.scanned_to = Some("d2".to_owned());
        assert_eq!(
            s.write(JobWrite {
                job: Some((next.clone(), Expect::Version(7))),
                devices: vec![device_job("j1", "d1", DeviceJobStatus::Pending)],
            })
            .await,
            Err(StoreError::Conflict { index: 0 })
        );
        assert_eq!(s.statistics("j1").await.expect("stats").device_count, 0);
        assert_eq!(s.job("j1").await.expect("read"), Some(job("j1", 0)));
        // Device records of a job that does not exist are refused.
        assert_eq!(
            s.write(JobWrite {
                job: None,
                devices: vec![device_job("ghost", "d1", DeviceJobStatus::Pending)],
            })
            .await,
            Err(StoreError::Conflict { index: 0 })
        );
        // Job and records together.
        s.write(JobWrite {
            job: Some((next.clone(), Expect::Version(0))),
            devices: vec![
                device_job("j1", "d1", DeviceJobStatus::Pending),
                device_job("j1", "d2", DeviceJobStatus::Pending),
            ],
        })
        .await
        .expect("progress");
        assert_eq!(s.job("j1").await.expect("read"), Some(next));
        assert_eq!(s.statistics("j1").await.expect("stats").pending_count, 2);
    }

    pub async fn device_records_replace_and_count<S: ScheduledJobStore>(s: &S) {
        s.write(new_job(job("j1", 0))).await.expect("create");
        s.write(new_job(job("j2", 0))).await.expect("create");
        let statuses = [
            ("d1", DeviceJobStatus::Pending),
            ("d2", DeviceJobStatus::Scheduled),
            ("d3", DeviceJobStatus::Running),
            ("d4", DeviceJobStatus::Completed),
            ("d5", DeviceJobStatus::Failed),
            ("d6", DeviceJobStatus::Canceled),
        ];
        s.write(JobWrite {
            job: None,
            devices: statuses
                .iter()
                .map(|(d, st)| device_job("j1", d, DeviceJobStatus::Pending).with_status(*st))
                .chain([device_job("j2", "d1", DeviceJobStatus::Completed)])
                .collect(),
        })
        .await
        .expect("records");
        let stats = s.statistics("j1").await.expect("stats");
        assert_eq!(
            (
                stats.device_count,
                stats.pending_count,
                stats.running_count,
                stats.succeeded_count,
                stats.failed_count
            ),
            (6, 2, 1, 1, 2)
        );
        // Replacing a record moves it between counts.
        let mut done = device_job("j1", "d1", DeviceJobStatus::Completed);
        done.outcome =
            Some(json!({"deviceMethodResponse": {"status": 200, "payload": {"ok": true}}}));
        done.end_time = Some(at(70));
        s.write(JobWrite {
            job: None,
            devices: vec![done.clone()],
        })
        .await
        .expect("replace");
        let stats = s.statistics("j1").await.expect("stats");
        assert_eq!(
            (
                stats.device_count,
                stats.pending_count,
                stats.succeeded_count
            ),
            (6, 1, 2)
        );
        // Listing by status, in device order, from after a key.
        let open = s
            .device_jobs(
                "j1",
                &[
                    DeviceJobStatus::Pending,
                    DeviceJobStatus::Scheduled,
                    DeviceJobStatus::Running,
                ],
                None,
                10,
            )
            .await
            .expect("list");
        assert_eq!(
            open.iter()
                .map(|d| d.device_id.as_str())
                .collect::<Vec<_>>(),
            ["d2", "d3"]
        );
        let all = s.device_jobs("j1", &[], Some("d1"), 2).await.expect("list");
        assert_eq!(
            all.iter().map(|d| d.device_id.as_str()).collect::<Vec<_>>(),
            ["d2", "d3"]
        );
        let first = s.device_jobs("j1", &[], None, 1).await.expect("list");
        assert_eq!(first, vec![done]);
        assert_eq!(s.statistics("none").await.expect("stats").device_count, 0);
    }

    pub async fn jobs_list_by_type_and_status<S: ScheduledJobStore>(s: &S) {
        let mut a = job("a", 0);
        a.status = JobStatus::Completed;
        let mut b = job("b", 0);
        b.job_type = JobType::ScheduleDeviceMethod;
        b.update_twin = None;
        b.cloud_to_device_method = Some(json!({"methodName": "reboot"}));
        let c = job("c", 0);
        for j in [c.clone(), a.clone(), b.clone()] {
            s.write(new_job(j)).await.expect("create");
        }
        let ids = |jobs: Vec<ScheduledJob>| jobs.into_iter().map(|j| j.job_id).collect::<Vec<_>>();
        assert_eq!(
            ids(s.jobs(&JobFilter::default(), None, 10).await.expect("all")),
            ["a", "b", "c"]
        );
        assert_eq!(
            ids(s
                .jobs(&JobFilter::default(), Some("a"), 1)
                .await
                .expect("page")),
            ["b"]
        );
        let twins = JobFilter {
            job_type: Some(JobType::ScheduleUpdateTwin),
            statuses: Vec::new(),
        };
        assert_eq!(
            ids(s.jobs(&twins, None, 10).await.expect("twins")),
            ["a", "c"]
        );
        let queued_twins = JobFilter {
            statuses: vec![JobStatus::Queued],
            ..twins
        };
        assert_eq!(
            ids(s.jobs(&queued_twins, None, 10).await.expect("queued")),
            ["c"]
        );
        let open = JobFilter {
            job_type: None,
            statuses: vec![JobStatus::Queued, JobStatus::Running],
        };
        assert_eq!(
            ids(s.jobs(&open, None, 10).await.expect("open")),
            ["b", "c"]
        );
        assert_eq!(s.job("b").await.expect("read"), Some(b));
    }

    pub async fn finished_jobs_expire<S: ScheduledJobStore>(s: &S) {
        let mut old = job("old", 0);
        old.status = JobStatus::Completed;
        old.end_time = Some(at(100));
        let mut recent = job("recent", 0);
        recent.status = JobStatus::Failed;
        recent.end_time = Some(at(300));
        let open = job("open", 0);
        for j in [old, recent, open] {
            s.write(JobWrite {
                devices: vec![device_job(&j.job_id, "d1", DeviceJobStatus::Completed)],
                job: Some((j, Expect::Absent)),
            })
            .await
            .expect("create");
        }
        s.remove_ended_before(at(200)).await.expect("remove");
        assert_eq!(s.job("old").await.expect("read"), None);
        assert_eq!(s.statistics("old").await.expect("stats").device_count, 0);
        assert!(s.job("recent").await.expect("read").is_some());
        assert!(s.job("open").await.expect("read").is_some());
        assert_eq!(s.statistics("open").await.expect("stats").device_count, 1);
    }
}

trait WithStatus {
    fn with_status(self, status: DeviceJobStatus) -> Self;
}

impl WithStatus for DeviceJob {
    fn with_status(mut self, status: DeviceJobStatus) -> Self {
        self.status = status;
        self
    }
}

/// Runs every case of the job store contract against the store `$make` gives (`(store, guard)`).
#[macro_export]
macro_rules! job_store_contract {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::contract::block_on;
            use $crate::jobs_contract::cases;

            #[test]
            fn create_once_then_compare_and_set() {
                let (s, _guard) = $make;
                block_on(cases::create_once_then_compare_and_set(&s));
            }

            #[test]
            fn writes_are_all_or_nothing() {
                let (s, _guard) = $make;
                block_on(cases::writes_are_all_or_nothing(&s));
            }

            #[test]
            fn device_records_replace_and_count() {
                let (s, _guard) = $make;
                block_on(cases::device_records_replace_and_count(&s));
            }

            #[test]
            fn jobs_list_by_type_and_status() {
                let (s, _guard) = $make;
                block_on(cases::jobs_list_by_type_and_status(&s));
            }

            #[test]
            fn finished_jobs_expire() {
                let (s, _guard) = $make;
                block_on(cases::finished_jobs_expire(&s));
            }
        }
    };
}
