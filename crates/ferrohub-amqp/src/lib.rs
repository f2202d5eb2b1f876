//! Sans-IO AMQP 1.0 for the hub side of a connection.

pub mod condition;
pub mod frame;
pub mod message;
pub mod performative;
pub mod types;
