//! Ferrohub's cloud-to-device messaging: one queue per device with Azure IoT Hub's lifecycle,
//! and the hub-wide feedback queue that tells the service what became of its messages.
//!
//! # What it does
//!
//! * Enqueues service messages per device ([`C2dQueues::send`]) with Azure's limits: queue depth
//!   (`403004`), message size (`413001`), time to live; hands them to the device one at a time
//!   under a lock ([`C2dQueues::receive`]) and settles them by lock token: complete, abandon,
//!   reject, or release after a dropped connection (`412002` for a lost lock).
//! * Applies lock expiry, message expiry and the maximum delivery count, dead-letters, purges a
//!   queue, and forgets a deleted device's queue and feedback.
//! * Produces feedback records for the outcomes each message's `iothub-ack` asks for and hands
//!   them out in locked batches ([`C2dQueues::receive_feedback`]).
//! * Defines the storage contract ([`QueueStore`], compare-and-set) with two implementations:
//!   [`MemoryQueueStore`] and [`SqliteQueueStore`] (durable, group-committing, sharing the
//!   registry's database file so deleting a device purges its queue atomically); with the
//!   `contract-suite` feature, the contract's cases as a suite other store crates run
//!   (`contract`).
//!
//! # What it doesn't
//!
//! * No network and no wire formats: the MQTT, HTTPS and AMQP endpoints map these types to
//!   topics, headers and AMQP messages, and decide when to call [`C2dQueues::sweep`] and how to
//!   pace feedback messages.
//! * No async runtime: stores answer through runtime-agnostic futures (the SQLite store runs its
//!   own threads), so any executor can drive it.
//! * No clock: every operation takes `now`.
//! * No identity checks: callers check that the device exists and pass its generation id.

pub mod config;
#[cfg(feature = "contract-suite")]
pub mod contract;
pub mod error;
pub mod model;
pub mod queues;
pub mod store;
mod token;

pub use config::C2dConfig;
pub use error::{C2dError, StoreError};
pub use model::{
    AckMode, FeedbackBatch, FeedbackRecord, FeedbackStatus, OutgoingMessage, QueuedMessage,
};
pub use queues::C2dQueues;
pub use store::{AnyQueueStore, MemoryQueueStore, QueueStore, SqliteQueueStore};
