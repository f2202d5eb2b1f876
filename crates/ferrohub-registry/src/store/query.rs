//! Queries over stored twins: one batch of a key-ordered scan at a time
//! ([`RegistryStore::query_twins`](super::RegistryStore::query_twins)).
//!
//! The store never evaluates a query exactly: a twin's REST rendering has fields only the hub
//! knows (`connectionState`, `lastActivityTime`, `cloudToDeviceMessageCount`, `modelId`).
//! It reads the rows of a collection in key order, after a key, a bounded batch at a time,
//! and leaves out rows the condition can never select where it can tell cheaply: the SQL
//! stores render `ferrohub-query`'s pre-filter (a superset of the exact result) over the
//! twin documents in their stored form ([`Layout::StoredTwin`]) and the key columns. The hub
//! renders each row, evaluates the condition exactly and pages with `ferrohub-query`'s
//! `Pager`, asking for the next batch after the last key it read until a page is full or the
//! rows run out. Memory is bounded by the batch, whatever the registry's size.
//!
//! An identity whose twin was never written has the registry's initial twin; the SQL stores
//! filter it as that twin (the stored form of [`initial_twin`](crate::initial_twin)) so the
//! pre-filter stays a superset.

use ferrohub_query::{Collection, Condition, Dialect, Layout, PreFilter, RowKey, Table};

use crate::model::{StoredTwin, TwinOwner};

/// The most rows one batch returns, whatever the caller asks for.
pub const MAX_SCAN_BATCH: usize = 10_000;

/// One batch of a query's scan.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinScan {
    /// The collection: `devices` (one row per device) or `devices.modules` (one per module).
    /// `devices.jobs` has no stored rows here: its scan is always empty.
    pub collection: Collection,
    /// The condition the caller will evaluate; rows it can never select may be left out.
    pub condition: Condition,
    /// Start after this key (`None`: from the first row).
    pub after: Option<RowKey>,
    /// At most this many rows (at least one, at most [`MAX_SCAN_BATCH`]).
    pub limit: usize,
}

impl TwinScan {
    /// The batch size a store should read: `limit` within `1..=MAX_SCAN_BATCH`.
    pub fn batch(&self) -> usize {
        self.limit.clamp(1, MAX_SCAN_BATCH)
    }

    /// The pre-filter of the condition for `dialect` over a table with `device_id` and
    /// `module_id` key columns and the stored twin in column `document`.
    pub fn pre_filter(&self, dialect: Dialect, document: &str) -> PreFilter {
        self.condition
            .pre_filter(self.collection, dialect, &twin_table(document))
    }
}

/// The table the SQL stores' scans read: key columns `device_id` and (`devices.modules`)
/// `module_id`, the stored twin in `document`.
pub fn twin_table(document: &str) -> Table<'_> {
    Table {
        document,
        layout: Layout::StoredTwin,
        device_id: Some("device_id"),
        child_id: Some("module_id"),
        computed_fields: &[],
    }
}

/// A row of a scan: an identity and its stored twin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwinRow {
    /// The device, or the module.
    pub owner: TwinOwner,
    /// The twin; `None` when it was never written (the identity has the initial twin).
    pub twin: Option<StoredTwin>,
}

impl TwinRow {
    /// The row's key in paging order.
    pub fn key(&self) -> RowKey {
        match &self.owner {
            TwinOwner::Device(d) => RowKey::device(d.device_id.as_str()),
            TwinOwner::Module(m) => RowKey::module(m.device_id.as_str(), m.module_id.as_str()),
        }
    }
}

/// The stored form of the initial twin, which the SQL stores filter identities without a
/// stored twin as.
pub fn initial_twin_document() -> String {
    serde_json::to_string(&crate::initial_twin()).unwrap_or_else(|_| "{}".to_owned())
}
