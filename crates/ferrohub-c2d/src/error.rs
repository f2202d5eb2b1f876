//! Errors of the queue operations ([`C2dError`]) and of the stores behind them ([`StoreError`]).
//!
//! [`C2dError`]'s `Display` text is what a client sees after `ErrorCode:<Name>;`, so it is written
//! for people and follows Azure's wording where Azure's is known.

use ferrohub_types::ErrorCode;

/// Why a queue operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum C2dError {
    /// The device's queue already holds as many messages as allowed; nothing was stored.
    #[error("Total number of messages on the device queue exceeds the allowed limit of {max}.")]
    QueueFull {
        /// The queue depth limit.
        max: usize,
    },
    /// The message is larger than allowed; nothing was stored.
    #[error("The message is {size} bytes; at most {max} bytes are allowed.")]
    MessageTooLarge {
        /// The message's size (see [`crate::OutgoingMessage::size`]).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// An input or configuration value is out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// The lock token is unknown (never issued, already settled, issued for another device) or
    /// its lock has expired.
    #[error("The lock token is unknown or the message's lock has expired.")]
    LockLost,
    /// The store failed; the operation may be retried.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The operating system's random number generator failed, so no lock token could be made.
    #[error("The random number generator failed: {0}")]
    Entropy(String),
}

impl C2dError {
    /// Azure's error code for this error.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            C2dError::QueueFull { .. } => ErrorCode::DeviceMaximumQueueDepthExceeded,
            C2dError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            C2dError::InvalidArgument(_) => ErrorCode::ArgumentInvalid,
            C2dError::LockLost => ErrorCode::DeviceMessageLockLost,
            C2dError::Store(StoreError::Unavailable(_)) => ErrorCode::ServiceUnavailable,
            C2dError::Store(_) | C2dError::Entropy(_) => ErrorCode::ServerError,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The change at `index` of an `apply` found the queue in another state than it expected;
    /// nothing of that `apply` was stored. Another writer changed the queue in between.
    #[error("change {index} of the batch conflicts with the stored state")]
    Conflict {
        /// The position of the first failing change.
        index: usize,
    },
    /// The storage backend failed (I/O error, disk full, database locked, store shut down).
    #[error("The message queue store is unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded, or a value could not be encoded.
    #[error("The message queue store holds data it cannot read: {0}")]
    Corrupt(String),
    /// The database was written by a newer version of Ferrohub.
    #[error("The message queue store cannot be used by this version: {0}")]
    Incompatible(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(
            C2dError::QueueFull { max: 50 }.error_code().number(),
            403004
        );
        assert_eq!(
            C2dError::MessageTooLarge { size: 2, max: 1 }
                .error_code()
                .number(),
            413001
        );
        assert_eq!(
            C2dError::InvalidArgument(String::new())
                .error_code()
                .number(),
            400004
        );
        assert_eq!(C2dError::LockLost.error_code().number(), 412002);
        assert_eq!(
            C2dError::Store(StoreError::Unavailable(String::new()))
                .error_code()
                .number(),
            503001
        );
        assert_eq!(
            C2dError::Store(StoreError::Conflict { index: 0 })
                .error_code()
                .number(),
            500001
        );
    }
}
