//! The hub's one active import or export job across the nodes of a cluster
//! ([`SharedJobSlot`], kept in PostgreSQL by `ferrohub-cluster`).
//!
//! A node that creates a job takes the slot for it: a record with the job, its owner (the
//! node) and a lease end. While the job runs, the owner renews the lease; when it ends, the
//! owner frees the slot and stores the final record. A second job, on any node, finds the slot
//! taken and is refused as on one node (429004). Each renewal also stores the job's current
//! record, so the other nodes show its status and progress. A node that dies stops renewing: once its
//! lease has ended, the next node to look marks the job `failed` with
//! [`super::RESTART_REASON`], as a restarted embedded hub does, and the slot is free again.
//! Jobs of other nodes are listed and read from the slot's records.
//!
//! Every method takes `now`; implementations compare instants and never read a clock.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::cluster::BoxFuture;

/// How [`SharedJobSlot::begin`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotBegin {
    /// The slot is the new job's.
    Taken,
    /// The job with this id holds it (its owner's lease has not ended).
    Busy(String),
}

/// Where the nodes of a cluster agree on the one active import or export job. Records are
/// the jobs' `JobProperties` JSON.
pub trait SharedJobSlot: Send + Sync + 'static {
    /// Takes the slot for job `job_id` (record `record`), owned by `owner` until `until`. First
    /// marks the job holding it `failed` (status `failed`, `failureReason` `reason`,
    /// `endTimeUtc` `now`) if its lease ended at or before `now` or `owner` held it (a node
    /// restarted under the same name); then refuses with [`SlotBegin::Busy`] if a job still
    /// holds it. One atomic step across nodes.
    fn begin<'a>(
        &'a self,
        job_id: &'a str,
        record: Value,
        owner: &'a str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<SlotBegin, String>>;

    /// Extends `owner`'s lease of the slot for `job_id` to `until` and stores the job's current
    /// `record` (its status and progress, for the other nodes), if it still holds the slot and
    /// the lease has not ended at `now`. `Ok(false)`: lost (the job was cancelled or failed
    /// through another node).
    fn renew<'a>(
        &'a self,
        job_id: &'a str,
        owner: &'a str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        record: Value,
    ) -> BoxFuture<'a, Result<bool, String>>;

    /// Frees the slot of `owner`'s job `job_id` and stores its final `record`.
    fn end<'a>(
        &'a self,
        job_id: &'a str,
        owner: &'a str,
        record: Value,
    ) -> BoxFuture<'a, Result<(), String>>;

    /// Cancels job `job_id` if it holds the slot (status `cancelled`, `endTimeUtc` `now`) and
    /// returns its record, whatever its state (`None`: unknown job).
    fn cancel<'a>(
        &'a self,
        job_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<Value>, String>>;

    /// Marks the job holding the slot `failed` with `reason` if its lease ended at or before
    /// `now` (as [`SharedJobSlot::begin`] does), then returns every record.
    fn records<'a>(
        &'a self,
        now: DateTime<Utc>,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Value>, String>>;
}
