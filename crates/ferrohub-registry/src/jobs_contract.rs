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

use std::future::Future;
use std::task::Poll;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::scheduled_jobs::{
    Created, DeviceJob, DeviceJobStatus, Expect, JobFilter, JobLease, JobStatus, JobType, JobWrite,
    ScheduledJob, ScheduledJobStore, StoreError,
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

/// Runs `a` and `b` at once (each store call may start before the other ends).
async fn both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let mut ra = None;
    let mut rb = None;
    std::future::poll_fn(|cx| {
        if ra.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    match (ra, rb) {
        (Some(a), Some(b)) => (a, b),
        _ => unreachable!("both futures completed"),
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

    pub async fn leases_claim_renew_expire_and_steal<S: ScheduledJobStore>(s: &S) {
        assert!(
            !s.claim("nope", "a", at(0), at(30)).await.expect("claim"),
            "an unknown job cannot be claimed"
        );
        s.write(new_job(job("j", 0))).await.expect("create");
        assert_eq!(
            s.lease("j").await.expect("lease"),
            None,
            "a new job has no owner"
        );
        assert_eq!(
            s.claimable(at(0), None, 10).await.expect("claimable"),
            ["j"]
        );
        assert!(s.claim("j", "a", at(0), at(30)).await.expect("claim"));
        assert_eq!(
            s.lease("j").await.expect("lease"),
            Some(JobLease {
                owner: "a".into(),
                until: at(30)
            })
        );
        assert!(
            s.claimable(at(10), None, 10)
                .await
                .expect("claimable")
                .is_empty(),
            "a held lease is not claimable"
        );
        assert!(
            !s.claim("j", "b", at(10), at(40)).await.expect("claim"),
            "another node cannot take a lease that has not ended"
        );
        assert!(
            s.claim("j", "a", at(10), at(40)).await.expect("claim"),
            "the owner may claim again"
        );
        assert!(s.renew("j", "a", at(20), at(50)).await.expect("renew"));
        assert!(
            !s.renew("j", "b", at(20), at(60)).await.expect("renew"),
            "only the owner renews"
        );
        // The owner's writes to the job do not touch the lease, and the lease does not touch
        // the job's version.
        let mut running = job("j", 1);
        running.status = JobStatus::Running;
        s.write(JobWrite {
            job: Some((running, Expect::Version(0))),
            devices: Vec::new(),
        })
        .await
        .expect("job write");
        assert_eq!(
            s.lease("j").await.expect("lease").map(|l| l.until),
            Some(at(50))
        );
        // The owner stops renewing: at the end of its lease the job is claimable again.
        assert!(
            s.claimable(at(49), None, 10)
                .await
                .expect("claimable")
                .is_empty()
        );
        assert_eq!(
            s.claimable(at(50), None, 10).await.expect("claimable"),
            ["j"]
        );
        assert!(
            !s.renew("j", "a", at(50), at(80)).await.expect("renew"),
            "an ended lease is not renewed"
        );
        assert!(
            s.claim("j", "b", at(50), at(80)).await.expect("steal"),
            "another node takes a lease that ended"
        );
        assert!(
            !s.renew("j", "a", at(51), at(90)).await.expect("renew"),
            "the old owner lost it"
        );
        s.release("j", "a").await.expect("release by a non-owner");
        assert_eq!(
            s.lease("j").await.expect("lease").map(|l| l.owner),
            Some("b".to_owned()),
            "a non-owner's release changes nothing"
        );
        s.release("j", "b").await.expect("release");
        assert_eq!(s.lease("j").await.expect("lease"), None);
        assert!(
            s.claim("j", "c", at(51), at(81))
                .await
                .expect("claim released")
        );
        // A finished job is never claimed.
        let mut done = job("j", 2);
        done.status = JobStatus::Completed;
        done.end_time = Some(at(60));
        s.write(JobWrite {
            job: Some((done, Expect::Version(1))),
            devices: Vec::new(),
        })
        .await
        .expect("finish");
        s.release("j", "c").await.expect("release");
        assert!(!s.claim("j", "a", at(100), at(130)).await.expect("claim"));
        assert!(
            s.claimable(at(100), None, 10)
                .await
                .expect("claimable")
                .is_empty()
        );
    }

    pub async fn one_claim_wins<S: ScheduledJobStore>(s: &S) {
        for id in ["j1", "j2", "j3"] {
            s.write(new_job(job(id, 0))).await.expect("create");
        }
        for id in ["j1", "j2", "j3"] {
            let (a, b) = both(
                s.claim(id, "a", at(0), at(30)),
                s.claim(id, "b", at(0), at(30)),
            )
            .await;
            let won = [a.expect("claim a"), b.expect("claim b")];
            assert_eq!(won.iter().filter(|w| **w).count(), 1, "{id}: {won:?}");
            let owner = if won[0] { "a" } else { "b" };
            assert_eq!(
                s.lease(id).await.expect("lease").map(|l| l.owner),
                Some(owner.to_owned())
            );
        }
        assert_eq!(
            s.claimable(at(30), Some("j1"), 10)
                .await
                .expect("claimable"),
            ["j2", "j3"],
            "claimable pages in id order"
        );
    }

    pub async fn create_counts_unfinished_jobs<S: ScheduledJobStore>(s: &S) {
        assert_eq!(
            s.create(job("a", 0), Some(2)).await.expect("create"),
            Created::Created
        );
        assert_eq!(
            s.create(job("a", 0), Some(2)).await.expect("create"),
            Created::Exists
        );
        assert_eq!(
            s.create(job("b", 0), Some(2)).await.expect("create"),
            Created::Created
        );
        assert_eq!(
            s.create(job("c", 0), Some(2)).await.expect("create"),
            Created::TooMany
        );
        assert_eq!(s.job("c").await.expect("read"), None, "nothing stored");
        let mut done = job("a", 1);
        done.status = JobStatus::Cancelled;
        done.end_time = Some(at(70));
        s.write(JobWrite {
            job: Some((done, Expect::Version(0))),
            devices: Vec::new(),
        })
        .await
        .expect("cancel");
        assert_eq!(
            s.create(job("c", 0), Some(2)).await.expect("create"),
            Created::Created,
            "a finished job no longer counts"
        );
        assert_eq!(
            s.create(job("d", 0), None).await.expect("create"),
            Created::Created,
            "no limit"
        );
        // Concurrent creations never pass the limit together.
        let (e, f) = both(
            s.create(job("e", 0), Some(4)),
            s.create(job("f", 0), Some(4)),
        )
        .await;
        let outcomes = [e.expect("create e"), f.expect("create f")];
        assert!(
            outcomes.contains(&Created::Created) && outcomes.contains(&Created::TooMany),
            "{outcomes:?}"
        );
    }

    pub async fn device_job_rows_in_device_order<S: ScheduledJobStore>(s: &S) {
        let mut method = job("m", 0);
        method.job_type = JobType::ScheduleDeviceMethod;
        s.write(new_job(method)).await.expect("create");
        s.write(new_job(job("t", 0))).await.expect("create");
        s.write(JobWrite {
            job: None,
            devices: vec![
                device_job("t", "d2", DeviceJobStatus::Completed),
                device_job("m", "d2", DeviceJobStatus::Failed),
                device_job("t", "d1", DeviceJobStatus::Pending),
                device_job("m", "d3", DeviceJobStatus::Running),
            ],
        })
        .await
        .expect("records");
        let keys = |rows: Vec<crate::scheduled_jobs::DeviceJobRow>| {
            rows.into_iter()
                .map(|r| {
                    (
                        r.record.device_id,
                        r.record.job_id,
                        r.job_type.device_job_name(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let all = keys(s.device_job_rows(None, 10).await.expect("rows"));
        assert_eq!(
            all,
            [
                ("d1".to_owned(), "t".to_owned(), "scheduleTwinUpdate"),
                ("d2".to_owned(), "m".to_owned(), "scheduleDeviceMethod"),
                ("d2".to_owned(), "t".to_owned(), "scheduleTwinUpdate"),
                ("d3".to_owned(), "m".to_owned(), "scheduleDeviceMethod"),
            ]
        );
        let rest = keys(s.device_job_rows(Some(("d2", "m")), 2).await.expect("rows"));
        assert_eq!(
            rest.iter()
                .map(|(d, j, _)| (d.as_str(), j.as_str()))
                .collect::<Vec<_>>(),
            [("d2", "t"), ("d3", "m")]
        );
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
            #[test]
            fn leases_claim_renew_expire_and_steal() {
                let (s, _guard) = $make;
                block_on(cases::leases_claim_renew_expire_and_steal(&s));
            }

            #[test]
            fn one_claim_wins() {
                let (s, _guard) = $make;
                block_on(cases::one_claim_wins(&s));
            }

            #[test]
            fn create_counts_unfinished_jobs() {
                let (s, _guard) = $make;
                block_on(cases::create_counts_unfinished_jobs(&s));
            }

            #[test]
            fn device_job_rows_in_device_order() {
                let (s, _guard) = $make;
                block_on(cases::device_job_rows_in_device_order(&s));
            }
        }
    };
}
