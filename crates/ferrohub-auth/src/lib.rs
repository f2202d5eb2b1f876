//! Connection strings and SAS tokens, as Azure IoT Hub and its SDKs write, sign and check them.
//!
//! What this crate does:
//!
//! * parses and formats connection strings ([`ConnectionString`]);
//! * decodes, generates and validates symmetric keys ([`SymmetricKey`]);
//! * parses, verifies and mints shared access signature tokens ([`SasToken`], [`mint`]), signing
//!   the resource text exactly as the client sent it, so every SDK's encoding verifies;
//! * interprets a token's resource as a [`Scope`] on this hub;
//! * makes the authorization decisions of service and device endpoints
//!   ([`authorize_service`], [`authorize_device`]), reporting Azure's error codes.
//!
//! What it does not do: no I/O, no clock, no storage, no async. The current time is always a
//! parameter (`now`, unix seconds), and keys and policies are looked up through closures the
//! caller provides. Checking whether an identity is enabled is the caller's job.

pub mod authorize;
pub mod connection_string;
pub mod key;
pub mod sas;
pub mod scope;

pub use authorize::{
    AuthError, DeviceAuthMethod, KeyPair, PolicyCredentials, authorize_device, authorize_service,
};
pub use connection_string::{ConnectionString, ConnectionStringError};
pub use key::{KeyError, SymmetricKey};
pub use sas::{
    MAX_CLOCK_SKEW_SECS, MAX_TOKEN_LEN, SasError, SasToken, encode_component, mint, sign,
};
pub use scope::{Scope, ScopeError};
