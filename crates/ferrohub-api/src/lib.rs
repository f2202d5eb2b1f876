//! The JSON shapes of Ferrohub's service REST API, shared by the server and the client.
//!
//! Field names and formats follow Azure IoT Hub's data-plane API (api-version 2021-04-12) so
//! Microsoft's service SDKs read them unchanged. This crate holds plain serde types and nothing
//! else: no HTTP, no validation beyond what serde does, no domain rules.

mod c2d;
mod device;
mod error;
mod events;
mod jobs;
mod registry;
mod time;
mod twin;

pub use c2d::{C2dSendResult, FeedbackRecord, PurgeMessageQueueResult};
pub use device::{
    AuthenticationMechanism, AuthenticationType, ConnectionState, Device, DeviceCapabilities,
    DeviceStatus, Module, SymmetricKey, X509Thumbprint,
};
pub use error::ErrorBody;
pub use events::{
    Checkpoint, ConsumerGroupInfo, EndpointInfo, EventBatch, EventData, PartitionProperties,
};
pub use jobs::{JobProperties, JobRequest};
pub use registry::{
    BulkRegistryOperationResult, DeviceRegistryOperationError, DeviceRegistryOperationWarning,
    ExportImportDevice, RegistryStatistics, ServiceStatistics,
};
pub use time::Timestamp;
pub use twin::{CloudToDeviceMethod, CloudToDeviceMethodResult, Twin, TwinProperties};

/// The api-version Ferrohub behaves as. Requests may carry any `api-version`.
pub const API_VERSION: &str = "2021-04-12";

/// Media type of every JSON response, exactly as Azure sends it (Node's SDK only parses a body
/// whose content type contains `application/json`).
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// Response header that carries the error code name next to the legacy error body.
pub const ERROR_CODE_HEADER: &str = "iothub-errorcode";
