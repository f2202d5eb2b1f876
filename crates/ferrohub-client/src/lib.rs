//! A typed async client for Ferrohub's service REST API, which is Azure IoT Hub's
//! (api-version 2021-04-12): the identity registry (devices and modules), bulk registry
//! operations and statistics, twins and direct methods, messaging and jobs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ferrohub_client::HubClient;
//!
//! let conn = "HostName=localhost:8443;SharedAccessKeyName=iothubowner;SharedAccessKey=…".parse()?;
//! let ca = std::fs::read("ferrohub-data/tls/ca.pem")?;
//! let hub = HubClient::new(&conn, Some(&ca))?;
//! let device = hub.device("dev1").await?;
//! println!("{:?}", device.status);
//! # Ok(())
//! # }
//! ```
//!
//! The wire types are [`ferrohub_api`]'s, re-exported as [`api`]. Failures are [`ClientError`]s;
//! errors the hub reports keep its status, Azure error code name and message.

pub mod amqp;
mod client;
mod error;
mod messaging;
mod query;
mod scheduled_jobs;
mod twins;

pub use client::{HubClient, TOKEN_RENEW_MARGIN_SECS, TOKEN_TTL_SECS};
pub use error::ClientError;
pub use ferrohub_api as api;
pub use messaging::{C2dMessage, FeedbackBatch, ReadFrom};
pub use query::QueryPage;
