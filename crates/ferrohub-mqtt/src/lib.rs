//! The MQTT 3.1.1 wire format and Azure IoT Hub's topic grammar, for Ferrohub's device endpoint.
//!
//! This crate is sans-IO: no sockets, no clock, no tokio. It turns bytes into packets and packets
//! into bytes ([`codec`]), and topic strings into typed values ([`topic`]). The connection and
//! session state machine (CONNECT first, keep-alive, in-flight windows, persisted subscriptions)
//! and authentication live elsewhere; so does anything MQTT 5.
//!
//! Everything that comes from the network is parsed into types that are valid by construction,
//! and no input can make the crate panic or allocate beyond the caller's packet-size limit.

pub mod codec;
pub mod topic;

pub use codec::{DecodeError, EncodeError, Packet, QoS, decode, encode};
pub use topic::{TopicFilter, TopicName};
