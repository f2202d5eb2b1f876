//! Ferrohub's identity registry: the devices and modules a hub knows, with Azure IoT Hub's
//! management rules, and the storage behind them.
//!
//! # What it does
//!
//! * Models identities ([`Device`], [`Module`]) and the inputs that change them ([`DeviceSpec`],
//!   [`ModuleSpec`], [`ImportRecord`]).
//! * Applies Azure's rules in [`Registry`]: ETags and `If-Match`, generated SAS keys and generation
//!   ids, key and status-reason validation, bulk import modes, and Azure's error codes
//!   ([`RegistryError::error_code`]).
//! * Keeps a twin beside every identity ([`Registry::twin`], [`Registry::update_twin`],
//!   [`Registry::report_twin`]): stored in the same store, deleted with the identity, changed
//!   with `ferrohub-twin`'s operations under compare-and-set, and each desired change reported
//!   to [`Registry::on_desired_change`] listeners in order, for the device's notification.
//! * Keeps scheduled jobs (`/jobs/v2`) and what became of each device they reached
//!   ([`scheduled_jobs`]): the [`scheduled_jobs::ScheduledJobStore`] contract, its SQLite
//!   implementation and, with `contract-suite`, its contract suite (`jobs_contract`).
//! * Keeps every identity's credentials in memory ([`Registry::identity`]) so authenticating a
//!   connection never touches the disk, and tells listeners ([`Registry::on_change`]) when an
//!   identity is deleted, disabled or re-keyed so live connections can be closed.
//! * Defines the storage contract ([`RegistryStore`]) with two implementations: [`MemoryStore`]
//!   and [`SqliteStore`] (durable, group-committing); with the `contract-suite` feature, the
//!   contract's cases as a suite other store crates run (`contract`).
//!
//! # What it doesn't
//!
//! * No network, no HTTP or JSON wire format: the server maps these types to Azure's JSON.
//! * No async runtime: stores answer through runtime-agnostic futures (the SQLite store runs its
//!   own threads), so any executor can drive it.
//! * No clock: operations that record a time take `now`.
//! * No SAS token verification (that is `ferrohub-auth`), no connection tracking. Twins are
//!   stored and changed here, but their rules are `ferrohub-twin`'s.

#[cfg(feature = "contract-suite")]
pub mod contract;
pub mod error;
#[cfg(feature = "contract-suite")]
pub mod jobs_contract;
pub mod model;
pub mod registry;
mod rules;
pub mod scheduled_jobs;
pub mod store;

pub use error::{RegistryError, StoreError};
pub use model::{
    AuthType, Authentication, BulkError, BulkResult, BulkWarning, ConnectionState, DesiredChange,
    Device, DeviceSpec, DeviceStatus, ETag, IdentityAuth, IdentityChange, IdentityChangeKind,
    IdentityTwin, IfMatch, ImportMode, ImportRecord, Module, ModuleSpec, RegistryStatistics,
    StoredTwin, SymmetricKeys, TwinOwner, UnknownName, X509Thumbprints,
};
pub use registry::{MAX_BULK_RECORDS, MAX_LIST_DEVICES, Registry, initial_twin};
pub use rules::{GENERATED_KEY_BYTES, MAX_KEY_BYTES, MAX_STATUS_REASON_CHARS, MIN_KEY_BYTES};
pub use store::{
    AnyStore, Change, Expect, MAX_SCAN_BATCH, MemoryStore, RegistryStore, SqliteStore, TwinRow,
    TwinScan, WriteStats,
};
