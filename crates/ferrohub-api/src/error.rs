//! The error body every failed REST call returns.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Azure's legacy error body: `Message` is `ErrorCode:<Name>;<text>`. Both Node's and C#'s
/// service SDKs understand this form (azure-contract §8.6); the `iothub-errorcode` header
/// carries the name again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// `ErrorCode:<Name>;<human-readable text>`.
    #[serde(rename = "Message")]
    pub message: String,
    /// `Tracking ID:<id>-TimeStamp:<MM/dd/yyyy HH:mm:ss>`.
    #[serde(rename = "ExceptionMessage", default)]
    pub exception_message: String,
}

impl ErrorBody {
    /// The error code name (`DeviceNotFound`) from `Message`, if it has the legacy form.
    pub fn code_name(&self) -> Option<&str> {
        self.message
            .split(';')
            .next()?
            .strip_prefix("ErrorCode:")
            .map(str::trim)
    }

    /// The human-readable text after the code.
    pub fn text(&self) -> &str {
        match self.message.split_once(';') {
            Some((head, rest)) if head.starts_with("ErrorCode:") => rest,
            _ => &self.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_legacy_message() {
        let b = ErrorBody {
            message: "ErrorCode:DeviceNotFound;The device with ID 'd' could not be found.".into(),
            exception_message: String::new(),
        };
        assert_eq!(b.code_name(), Some("DeviceNotFound"));
        assert_eq!(b.text(), "The device with ID 'd' could not be found.");
    }
}
