//! Device and module twins as Azure IoT Hub has them: the document and its operations.

pub mod error;
pub mod etag;
pub mod limits;
pub mod merge;
pub mod metadata;
mod time;
pub mod twin;

pub use error::{KeyProblem, MethodError, SectionName, TopicError, TwinError, ValueProblem};
pub use etag::{IfMatch, TwinEtag};
pub use metadata::Metadata;
pub use twin::{
    DesiredPatch, Properties, ReportedPatch, ReportedUpdated, SectionChange, Twin, TwinUpdate,
    TwinUpdated,
};
