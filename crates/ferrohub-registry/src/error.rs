//! Errors of the registry's management operations and of its stores.
//!
//! [`RegistryError`]'s `Display` text is what an API client sees after `ErrorCode:<Name>;`, so it
//! is written for people and follows Azure's wording where Azure's is known.

use ferrohub_types::{DeviceId, ErrorCode, ModuleId};

/// Why a management operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// No device has this id (or it was deleted meanwhile).
    #[error("The device with ID '{0}' could not be found.")]
    DeviceNotFound(DeviceId),
    /// The device exists but has no module with this id.
    #[error("The module with ID '{module_id}' on device '{device_id}' could not be found.")]
    ModuleNotFound {
        /// The device.
        device_id: DeviceId,
        /// The module that is missing.
        module_id: ModuleId,
    },
    /// A create named an id that is taken.
    #[error("A device with ID '{0}' is already registered.")]
    DeviceAlreadyExists(DeviceId),
    /// A module create named a module id that is taken on the device.
    #[error("A module with ID '{module_id}' is already registered on device '{device_id}'.")]
    ModuleAlreadyExists {
        /// The device.
        device_id: DeviceId,
        /// The module id that is taken.
        module_id: ModuleId,
    },
    /// The `If-Match` ETag is not the identity's current one: someone changed it since the caller
    /// read it.
    #[error("The ETag in the request does not match the identity's current ETag.")]
    PreconditionFailed,
    /// An input breaks a rule (key encoding or length, status reason length, thumbprint form).
    #[error("{0}")]
    InvalidArgument(String),
    /// A bulk request holds more records than allowed.
    #[error("Too many devices in one request: at most {max} are allowed.")]
    TooManyDevices {
        /// The limit.
        max: usize,
    },
    /// A bulk request names the same identity twice (the payload is the id, `device/module` for
    /// a module).
    #[error("The identity '{0}' is defined more than once in the request.")]
    DeviceDefinedMultipleTimes(String),
    /// A twin operation was refused by the twin's rules (a bad patch, a section over its size,
    /// an `If-Match` or `$version` that is not the twin's): 400004 or 412001.
    #[error("{0}")]
    Twin(#[from] ferrohub_twin::TwinError),
    /// The store failed; the operation may be retried.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The operating system's random number generator failed, so no key or generation id could
    /// be made.
    #[error("The random number generator failed: {0}")]
    Entropy(String),
}

impl RegistryError {
    /// Azure's error code for this error.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            RegistryError::DeviceNotFound(_) => ErrorCode::DeviceNotFound,
            RegistryError::ModuleNotFound { .. } => ErrorCode::ModuleNotFound,
            RegistryError::DeviceAlreadyExists(_) => ErrorCode::DeviceAlreadyExists,
            RegistryError::ModuleAlreadyExists { .. } => ErrorCode::ModuleAlreadyExistsOnDevice,
            RegistryError::PreconditionFailed => ErrorCode::PreconditionFailed,
            RegistryError::InvalidArgument(_) => ErrorCode::ArgumentInvalid,
            RegistryError::Twin(e) => e.error_code(),
            RegistryError::TooManyDevices { .. } => ErrorCode::TooManyDevices,
            RegistryError::DeviceDefinedMultipleTimes(_) => ErrorCode::DeviceDefinedMultipleTimes,
            RegistryError::Store(StoreError::Unavailable(_)) => ErrorCode::ServiceUnavailable,
            RegistryError::Store(_) | RegistryError::Entropy(_) => ErrorCode::ServerError,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The change at `index` of an `apply` found the identity in another state than its
    /// [`crate::store::Expect`] says; nothing of that `apply` was stored. Another writer changed
    /// the identity in between.
    #[error("change {index} of the batch conflicts with the stored state")]
    Conflict {
        /// The position of the first failing change.
        index: usize,
    },
    /// The storage backend failed (I/O error, disk full, database locked, store shut down).
    #[error("The identity store is unavailable: {0}")]
    Unavailable(String),
    /// A stored document could not be decoded, or a document could not be encoded.
    #[error("The identity store holds data it cannot read: {0}")]
    Corrupt(String),
    /// The database was written by a newer version of Ferrohub (its schema is newer than this
    /// build knows).
    #[error("The identity store cannot be used by this version: {0}")]
    Incompatible(String),
}
