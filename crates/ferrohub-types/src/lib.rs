//! The vocabulary every Ferrohub crate shares: identity names and access permissions.
//!
//! Types here are valid by construction ("parse, don't validate"): a [`DeviceId`] that exists has
//! passed Azure IoT Hub's identifier rules. This crate does no I/O and knows nothing of protocols.

mod error_code;
mod id;
mod permission;

pub use error_code::ErrorCode;
pub use id::{DeviceId, IdError, MAX_ID_LEN, ModuleId, PolicyName};
pub use permission::{Permission, Permissions};
