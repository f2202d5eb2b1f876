//! Sans-IO AMQP 1.0 for the hub side of a connection.

pub mod azure;
pub mod condition;
pub mod connection;
pub mod frame;
pub mod message;
pub mod performative;
pub mod types;

pub use connection::{Connection, ConnectionConfig, Event};
