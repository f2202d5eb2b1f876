//! [`AnyJobStore`]: a scheduled job store chosen at run time (SQLite embedded, PostgreSQL in a
//! cluster), one box per call, as [`crate::AnyStore`] does for identities.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{
    Created, DeviceJob, DeviceJobRow, DeviceJobStatistics, DeviceJobStatus, JobFilter, JobLease,
    JobWrite, ScheduledJob, ScheduledJobStore, StoreError,
};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

trait DynJobStore: Send + Sync + 'static {
    fn write(&self, write: JobWrite) -> BoxFuture<'_, Result<(), StoreError>>;
    fn job<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<ScheduledJob>, StoreError>>;
    fn jobs<'a>(
        &'a self,
        filter: &'a JobFilter,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<ScheduledJob>, StoreError>>;
    fn device_jobs<'a>(
        &'a self,
        job_id: &'a str,
        statuses: &'a [DeviceJobStatus],
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeviceJob>, StoreError>>;
    fn statistics<'a>(
        &'a self,
        job_id: &'a str,
    ) -> BoxFuture<'a, Result<DeviceJobStatistics, StoreError>>;
    fn remove_ended_before(&self, cutoff: DateTime<Utc>) -> BoxFuture<'_, Result<(), StoreError>>;
    fn create(
        &self,
        job: ScheduledJob,
        max_unfinished: Option<u64>,
    ) -> BoxFuture<'_, Result<Created, StoreError>>;
    fn claim<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn renew<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn release<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    fn lease<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<JobLease>, StoreError>>;
    fn claimable<'a>(
        &'a self,
        now: DateTime<Utc>,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;
    fn device_job_rows<'a>(
        &'a self,
        after: Option<(&'a str, &'a str)>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeviceJobRow>, StoreError>>;
}

impl<S: ScheduledJobStore> DynJobStore for S {
    fn write(&self, write: JobWrite) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(ScheduledJobStore::write(self, write))
    }

    fn job<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<ScheduledJob>, StoreError>> {
        Box::pin(ScheduledJobStore::job(self, id))
    }

    fn jobs<'a>(
        &'a self,
        filter: &'a JobFilter,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<ScheduledJob>, StoreError>> {
        Box::pin(ScheduledJobStore::jobs(self, filter, after, limit))
    }

    fn device_jobs<'a>(
        &'a self,
        job_id: &'a str,
        statuses: &'a [DeviceJobStatus],
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeviceJob>, StoreError>> {
        Box::pin(ScheduledJobStore::device_jobs(
            self, job_id, statuses, after, limit,
        ))
    }

    fn statistics<'a>(
        &'a self,
        job_id: &'a str,
    ) -> BoxFuture<'a, Result<DeviceJobStatistics, StoreError>> {
        Box::pin(ScheduledJobStore::statistics(self, job_id))
    }

    fn remove_ended_before(&self, cutoff: DateTime<Utc>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(ScheduledJobStore::remove_ended_before(self, cutoff))
    }

    fn create(
        &self,
        job: ScheduledJob,
        max_unfinished: Option<u64>,
    ) -> BoxFuture<'_, Result<Created, StoreError>> {
        Box::pin(ScheduledJobStore::create(self, job, max_unfinished))
    }

    fn claim<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(ScheduledJobStore::claim(self, id, owner, now, until))
    }

    fn renew<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(ScheduledJobStore::renew(self, id, owner, now, until))
    }

    fn release<'a>(&'a self, id: &'a str, owner: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(ScheduledJobStore::release(self, id, owner))
    }

    fn lease<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<JobLease>, StoreError>> {
        Box::pin(ScheduledJobStore::lease(self, id))
    }

    fn claimable<'a>(
        &'a self,
        now: DateTime<Utc>,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(ScheduledJobStore::claimable(self, now, after, limit))
    }

    fn device_job_rows<'a>(
        &'a self,
        after: Option<(&'a str, &'a str)>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeviceJobRow>, StoreError>> {
        Box::pin(ScheduledJobStore::device_job_rows(self, after, limit))
    }
}

/// Any [`ScheduledJobStore`], chosen at run time; cheap to clone (the store is shared).
#[derive(Clone)]
pub struct AnyJobStore(Arc<dyn DynJobStore>);

impl AnyJobStore {
    /// Wraps `store`.
    pub fn new(store: impl ScheduledJobStore) -> Self {
        AnyJobStore(Arc::new(store))
    }
}

impl std::fmt::Debug for AnyJobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnyJobStore")
    }
}

impl ScheduledJobStore for AnyJobStore {
    async fn write(&self, write: JobWrite) -> Result<(), StoreError> {
        self.0.write(write).await
    }

    async fn job(&self, id: &str) -> Result<Option<ScheduledJob>, StoreError> {
        self.0.job(id).await
    }

    async fn jobs(
        &self,
        filter: &JobFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ScheduledJob>, StoreError> {
        self.0.jobs(filter, after, limit).await
    }

    async fn device_jobs(
        &self,
        job_id: &str,
        statuses: &[DeviceJobStatus],
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeviceJob>, StoreError> {
        self.0.device_jobs(job_id, statuses, after, limit).await
    }

    async fn statistics(&self, job_id: &str) -> Result<DeviceJobStatistics, StoreError> {
        self.0.statistics(job_id).await
    }

    async fn remove_ended_before(&self, cutoff: DateTime<Utc>) -> Result<(), StoreError> {
        self.0.remove_ended_before(cutoff).await
    }

    async fn create(
        &self,
        job: ScheduledJob,
        max_unfinished: Option<u64>,
    ) -> Result<Created, StoreError> {
        self.0.create(job, max_unfinished).await
    }

    async fn claim(
        &self,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.0.claim(id, owner, now, until).await
    }

    async fn renew(
        &self,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.0.renew(id, owner, now, until).await
    }

    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        self.0.release(id, owner).await
    }

    async fn lease(&self, id: &str) -> Result<Option<JobLease>, StoreError> {
        self.0.lease(id).await
    }

    async fn claimable(
        &self,
        now: DateTime<Utc>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.0.claimable(now, after, limit).await
    }

    async fn device_job_rows(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<DeviceJobRow>, StoreError> {
        self.0.device_job_rows(after, limit).await
    }
}
