//! Why a twin operation, a direct-method request or a device topic was refused.
//!
//! [`TwinError`] and [`MethodError`] carry Azure's error codes ([`TwinError::error_code`],
//! [`MethodError::error_code`]); their `Display` text is what a client sees (after
//! `ErrorCode:<Name>;` in a REST body, or as `message` in an MQTT twin response), so it is written
//! for people and follows Azure's wording where Azure's is known (contract §2.4, §2.5, §4.3).
//! [`TopicError`] has no code: a device topic that cannot be read is the connection's problem,
//! and the MQTT layer decides whether it can still answer (it can when
//! [`TopicError::request_id`] is known).

use std::fmt;

use ferrohub_types::ErrorCode;

/// One of the three sections of a twin that hold user values (contract §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectionName {
    /// `tags`: written by the service only, never sent to devices.
    Tags,
    /// `properties.desired`: written by the service, sent to the device.
    Desired,
    /// `properties.reported`: written by the device, read by the service.
    Reported,
}

impl SectionName {
    /// The section's path in the twin document and the query language, e.g.
    /// `properties.desired`.
    pub const fn path(self) -> &'static str {
        match self {
            SectionName::Tags => "tags",
            SectionName::Desired => "properties.desired",
            SectionName::Reported => "properties.reported",
        }
    }
}

impl fmt::Display for SectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

/// What is wrong with a property or tag name (contract §2.5 "keys").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyProblem {
    /// The name is the empty string (it could never be addressed by a query path).
    Empty,
    /// The name contains `$`: names starting with `$` are the hub's (`$version`, `$metadata`).
    Dollar,
    /// The name contains `.`, the query language's path separator.
    Dot,
    /// The name contains a space.
    Space,
    /// The name contains a C0 or C1 control character (U+0000–U+001F, U+007F–U+009F).
    Control,
    /// The name is longer than [`crate::limits::MAX_KEY_BYTES`] bytes in UTF-8.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyProblem::Empty => f.write_str("names cannot be empty"),
            KeyProblem::Dollar => f.write_str("names cannot contain '$'"),
            KeyProblem::Dot => f.write_str("names cannot contain '.'"),
            KeyProblem::Space => f.write_str("names cannot contain spaces"),
            KeyProblem::Control => f.write_str("names cannot contain control characters"),
            KeyProblem::TooLong { len } => write!(
                f,
                "names are at most {} bytes long in UTF-8, this one is {len}",
                crate::limits::MAX_KEY_BYTES
            ),
        }
    }
}

/// What is wrong with a property or tag value (contract §2.5 "values").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueProblem {
    /// A string longer than [`crate::limits::MAX_STRING_BYTES`] bytes in UTF-8.
    StringTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// An integer outside [`crate::limits::MIN_INTEGER`]..=[`crate::limits::MAX_INTEGER`].
    IntegerOutOfRange,
    /// A `null` inside an array: `null` only means "delete" as an object member, and devices'
    /// caches drop nulls, so an array holding one could never be seen the same way twice.
    NullInArray,
}

impl fmt::Display for ValueProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueProblem::StringTooLong { len } => write!(
                f,
                "string values are at most {} bytes long in UTF-8, this one is {len}",
                crate::limits::MAX_STRING_BYTES
            ),
            ValueProblem::IntegerOutOfRange => write!(
                f,
                "integers must lie between {} and {}",
                crate::limits::MIN_INTEGER,
                crate::limits::MAX_INTEGER
            ),
            ValueProblem::NullInArray => f.write_str("arrays cannot contain null"),
        }
    }
}

/// Why a twin operation was refused. A refused operation changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TwinError {
    /// The body is not JSON, or not of the shape the operation needs (an object, a section that
    /// is an object).
    #[error("{0}")]
    Malformed(String),
    /// A property or tag name breaks the key rules.
    #[error("The property or tag name '{path}' is not valid: {problem}.")]
    InvalidKey {
        /// The name's full path, e.g. `properties.desired.a.b$c`.
        path: String,
        /// Which rule it breaks.
        problem: KeyProblem,
    },
    /// A property or tag value breaks the value rules.
    #[error("The value of '{path}' is not valid: {problem}.")]
    InvalidValue {
        /// The value's full path, e.g. `tags.location.name` or `properties.reported.list[2]`.
        path: String,
        /// Which rule it breaks.
        problem: ValueProblem,
    },
    /// Objects and arrays are nested more than [`crate::limits::MAX_DEPTH`] levels deep.
    #[error(
        "The value of '{path}' is nested too deeply: at most {max} levels of objects and arrays \
         are allowed."
    )]
    TooDeep {
        /// The path of the first object or array that is one level too deep.
        path: String,
        /// The limit.
        max: usize,
    },
    /// The section would be larger than its limit after the change (sizes as contract §2.5
    /// counts them, see [`crate::limits::section_size`]).
    #[error(
        "'{section}' would be {size} bytes by Azure's size rule; at most {max} bytes are allowed."
    )]
    TooLarge {
        /// The section.
        section: SectionName,
        /// Its size after the change.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A replace (`PUT`) carries a `null`; Azure's own wording (contract §2.4, observed 2023).
    #[error("Value of Property or Tag cannot be null. Error in Property/Tag {name}")]
    NullNotAllowed {
        /// The name whose value is null.
        name: String,
    },
    /// A service patch carries reported properties: only the device writes them (an empty
    /// `"reported": {}` is accepted, contract §2.4).
    #[error("Reported properties are written by the device; a service update cannot change them.")]
    ReportedNotWritable,
    /// The `If-Match` ETag is not the twin's current one: someone changed the twin since the
    /// caller read it.
    #[error("The ETag in the request does not match the twin's current ETag.")]
    PreconditionFailed,
    /// The device's `$version` precondition names another reported version than the current one.
    #[error(
        "The reported properties are at version {current}, not at version {expected} as the \
         request expects."
    )]
    VersionMismatch {
        /// The version the request expected.
        expected: u64,
        /// The current reported version.
        current: u64,
    },
}

impl TwinError {
    /// Azure's error code for this error: 400004 `ArgumentInvalid` or 412001
    /// `PreconditionFailed`.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            TwinError::PreconditionFailed | TwinError::VersionMismatch { .. } => {
                ErrorCode::PreconditionFailed
            }
            TwinError::Malformed(_)
            | TwinError::InvalidKey { .. }
            | TwinError::InvalidValue { .. }
            | TwinError::TooDeep { .. }
            | TwinError::TooLarge { .. }
            | TwinError::NullNotAllowed { .. }
            | TwinError::ReportedNotWritable => ErrorCode::ArgumentInvalid,
        }
    }

    /// The six-digit code number, e.g. 400004.
    pub fn code(&self) -> u32 {
        self.error_code().number()
    }
}

/// Why a direct-method request or a device's method response was refused (contract §4.3).
/// Every case is 400004 `ArgumentInvalid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MethodError {
    /// The request body is not a JSON object.
    #[error("{0}")]
    Malformed(String),
    /// The request has no `methodName`, or it is not a string.
    #[error("The request must name the method in 'methodName'.")]
    MissingMethodName,
    /// The method name is empty or holds a character outside the documented set (printable
    /// ASCII except `$ ( ) < > @ , ; : \ " / [ ] ? = { }`, space and tab).
    #[error(
        "The method name '{name}' is not valid: use printable ASCII characters except \
         $ ( ) < > @ , ; : \\ \" / [ ] ? = {{ }} and spaces."
    )]
    InvalidMethodName {
        /// The name as given.
        name: String,
    },
    /// A timeout is not an integer number of seconds within its range.
    #[error("'{field}' must be an integer from {min} to {max} seconds; it is {value}.")]
    TimeoutOutOfRange {
        /// `responseTimeoutInSeconds` or `connectTimeoutInSeconds`.
        field: &'static str,
        /// The value as given (JSON text).
        value: String,
        /// The smallest allowed value.
        min: u32,
        /// The largest allowed value.
        max: u32,
    },
    /// The payload is larger than [`crate::methods::MAX_PAYLOAD_BYTES`].
    #[error("The method payload is {size} bytes; at most {max} bytes are allowed.")]
    PayloadTooLarge {
        /// The payload's size as JSON text.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The device answered with a body that is not JSON.
    #[error("The device's response is not valid JSON: {0}")]
    InvalidResponse(String),
}

impl MethodError {
    /// Azure's error code for this error: always 400004 `ArgumentInvalid`.
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::ArgumentInvalid
    }

    /// The six-digit code number, 400004.
    pub fn code(&self) -> u32 {
        self.error_code().number()
    }
}

/// Why a topic published by a device is not a twin request or a method response the hub can
/// act on (contract §1.1, §4.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The topic is not `$iothub/twin/GET/?…`, `$iothub/twin/PATCH/properties/reported/?…` or
    /// `$iothub/methods/res/{status}/?…`.
    #[error("'{0}' is not a twin request or method response topic.")]
    Unrecognized(String),
    /// The topic has no `$rid`, or an empty one, so the request cannot be answered.
    #[error("The topic carries no request id ($rid).")]
    MissingRequestId,
    /// The topic carries `$rid` more than once, so it is unclear which to echo.
    #[error("The topic carries more than one request id ($rid).")]
    DuplicateRequestId,
    /// `$version` is not a non-negative integer.
    #[error("The topic's $version '{value}' is not a non-negative integer.")]
    InvalidVersion {
        /// The request id, so the hub can still answer with an error.
        rid: String,
        /// The value as given.
        value: String,
    },
    /// The method response status segment is not an integer.
    #[error("The method response status '{value}' is not an integer.")]
    InvalidStatus {
        /// The request id of the response.
        rid: String,
        /// The segment as given.
        value: String,
    },
}

impl TopicError {
    /// The request id, when the topic carried one: the hub can then answer with an error instead
    /// of leaving the request unanswered (contract §12.1).
    pub fn request_id(&self) -> Option<&str> {
        match self {
            TopicError::InvalidVersion { rid, .. } | TopicError::InvalidStatus { rid, .. } => {
                Some(rid)
            }
            TopicError::Unrecognized(_)
            | TopicError::MissingRequestId
            | TopicError::DuplicateRequestId => None,
        }
    }
}
