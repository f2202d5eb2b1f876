//! The MQTT 3.1.1 wire format, Azure IoT Hub's topic grammar and the hub side of an MQTT
//! session, for Ferrohub's device endpoint.
//!
//! This crate is sans-IO: no sockets, no clock, no tokio. It turns bytes into packets and packets
//! into bytes ([`codec`]), topic strings into typed values ([`topic`]), and runs the per-connection
//! state machine ([`session`]: CONNECT first, keep-alive, telemetry acknowledged once durable,
//! subscriptions) with `now` passed in. Checking credentials, storing telemetry and persisting
//! subscriptions are the server's: the session asks for them as events. Anything MQTT 5 is out of
//! scope.
//!
//! Everything that comes from the network is parsed into types that are valid by construction,
//! and no input can make the crate panic or allocate beyond the caller's packet-size limit.

pub mod codec;
pub mod session;
pub mod topic;

pub use codec::{DecodeError, EncodeError, Packet, QoS, decode, encode};
pub use session::{Session, SessionConfig, SessionEvent};
pub use topic::{TopicFilter, TopicName};
