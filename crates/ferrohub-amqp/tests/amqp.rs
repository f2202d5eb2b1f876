//! Integration tests of the type codec, frames, performatives, messages, the connection engine
//! and the Azure conventions, compiled as one binary.

mod amqp {
    mod azure_flow;
    mod connection;
    mod engine;
    mod golden;
    mod harness;
    mod messages;
    mod strategies;
    mod types;
}
