//! Device and module twins as Azure IoT Hub has them: the document, its operations, its
//! renderings and stored form, and the device-side MQTT topics.

pub mod error;
pub mod etag;
pub mod limits;
pub mod merge;
pub mod metadata;
pub mod render;
pub mod storage;
mod time;
pub mod topics;
pub mod twin;

pub use error::{KeyProblem, MethodError, SectionName, TopicError, TwinError, ValueProblem};
pub use etag::{IfMatch, TwinEtag};
pub use metadata::Metadata;
pub use render::{DeviceTwin, RestTwin, TwinIdentity, X509Thumbprint, device_error_body};
pub use topics::{
    DeviceTopic, ReportedPatchTopic, desired_patch_topic, parse_device_topic,
    parse_reported_patch_topic, parse_twin_get_topic, twin_response_topic,
};
pub use twin::{
    DesiredPatch, Properties, ReportedPatch, ReportedUpdated, SectionChange, Twin, TwinUpdate,
    TwinUpdated,
};
