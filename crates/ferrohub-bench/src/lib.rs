//! `ferrohub-bench`: the one load generator for Ferrohub and the brokers it is compared with.
//!
//! It speaks plain MQTT 3.1.1 through Ferrohub's own codec, so the same workload runs against
//! Ferrohub (authenticating like an Azure device, with SAS tokens it signs itself for devices it
//! created through the bulk registry API) and against any broker (anonymous).
//!
//! * [`publish`]: telemetry at a fixed open-loop rate or as fast as a window of unacknowledged
//!   QoS 1 messages allows; PUBACK latency percentiles.
//! * [`connect`]: many connections at a paced rate, held idle; connect rate and latency, and the
//!   server's memory per connection.
//! * [`e2e`]: stamped messages read back through the hub's event read API; end-to-end latency.
//! * [`c2d`]: stamped cloud-to-device messages sent over HTTPS to devices subscribed over MQTT;
//!   delivered rate, end-to-end and enqueue latency.
//! * [`twin`]: direct methods (`methods`: the REST call's round trip through an MQTT device) and
//!   desired-property updates (`twin`: write latency, and the time until the device hears of it).
//! * [`query`]: `POST /devices/query` latency over many tagged twins (selective, full scan,
//!   `GROUP BY`).
//! * [`faults`]: the real `ferrohub` binary under kill -9, a full disk, stalled readers and
//!   connection floods; nothing acknowledged may be lost.
//!
//! Everything it measures goes into HdrHistograms ([`stats`]); every figure it reports comes with
//! the offered load. It only ever connects to loopback addresses ([`target`]).

pub mod amqp;
pub mod c2d;
pub mod conn;
pub mod connect;
pub mod e2e;
pub mod ehread;
pub mod faults;
pub mod identity;
pub mod pacing;
pub mod procfs;
pub mod progress;
pub mod provision;
pub mod publish;
pub mod query;
pub mod stats;
pub mod target;
pub mod twin;
pub mod twin_job;
