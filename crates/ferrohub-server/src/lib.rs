//! The Ferrohub runtime: configuration, the data directory, TLS, the HTTPS listener and the
//! service REST API, wired around the identity registry.
//!
//! Sockets, tokio, rustls and axum live here and in no other library crate: protocol and
//! storage logic sit in the pure crates (`ferrohub-auth`, `ferrohub-registry`, …) and this crate
//! drives them. Start with [`Config::load`], then [`App::build`] and [`App::run`].

mod amqp;
mod app;
pub mod cluster;
pub mod config;
mod connections;
pub mod consumer_groups;
pub mod eventlog;
pub mod fence;
mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
mod https;
mod hub;
mod jobs;
mod limits;
mod mqtt;
mod policies;
pub mod presence;
pub mod rest;
pub mod sessions;
pub mod telemetry;
mod tls;
mod transport;

pub use app::{App, Backends, BuildError, Listeners, SHUTDOWN_GRACE};
pub use config::{ClusterSettings, Config, ConfigError, DEFAULT_CONFIG_TOML, LogFormat, Overrides};
pub use hub::{Clock, Hub, HubError, SystemClock};
pub use jobs::shared::{SharedJobSlot, SlotBegin};

/// `n` random bytes as lower-case hex (tracking ids, certificate tags).
pub(crate) fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    // The OS random source failing is not recoverable; fall back to the clock so an id is
    // still produced (these are labels, not secrets).
    if getrandom::fill(&mut buf).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> ((i % 16) * 8)) as u8;
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random (version 4) UUID in its text form, e.g. direct-method request ids: AMQP devices
/// carry them as `uuid`-typed correlation ids.
pub(crate) fn random_uuid() -> String {
    let hex = random_hex(16);
    let mut bytes: Vec<char> = hex.chars().collect();
    // Version 4, variant 10xx.
    bytes[12] = '4';
    bytes[16] = match bytes[16] {
        '0' | '4' | '8' | 'c' => '8',
        '1' | '5' | '9' | 'd' => '9',
        '2' | '6' | 'a' | 'e' => 'a',
        _ => 'b',
    };
    let s: String = bytes.into_iter().collect();
    format!(
        "{}-{}-{}-{}-{}",
        &s[..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..]
    )
}
