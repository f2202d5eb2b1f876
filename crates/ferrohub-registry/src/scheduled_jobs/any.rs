//! [`AnyJobStore`]: a scheduled job store chosen at run time (SQLite embedded, PostgreSQL in a
//! cluster), one box per call, as [`crate::AnyStore`] does for identities.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{
    DeviceJob, DeviceJobStatistics, DeviceJobStatus, JobFilter, JobWrite, ScheduledJob,
    ScheduledJobStore, StoreError,
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
}
