//! Azure IoT Hub's numeric error codes, shared by every surface that reports an error.

use std::fmt;

/// An Azure IoT Hub error code. The first three digits of the number are the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400004: a request argument is malformed or out of range.
    ArgumentInvalid,
    /// 400011: a bulk request names the same identity twice.
    DeviceDefinedMultipleTimes,
    /// 400013: a bulk registry operation failed for some records.
    BulkRegistryOperationFailure,
    /// 400023: the ETag in a bulk record does not match.
    EtagDoesNotMatch,
    /// 401002: the caller's credentials are missing, malformed or wrong.
    IotHubUnauthorizedAccess,
    /// 401003: the token is valid in form but does not authorize this (expired, wrong scope).
    IotHubUnauthorized,
    /// 403002: the hub's quota is used up.
    IotHubQuotaExceeded,
    /// 403004: the device's cloud-to-device queue is full.
    DeviceMaximumQueueDepthExceeded,
    /// 403012: the device is disabled.
    DeviceDisabled,
    /// 404000: the resource (route, consumer group, …) does not exist.
    GenericNotFound,
    /// 404001: no such device.
    DeviceNotFound,
    /// 404002: no such job.
    JobNotFound,
    /// 404010: no such module.
    ModuleNotFound,
    /// 404103: the device is not connected.
    DeviceNotOnline,
    /// 409001: a device with that id exists.
    DeviceAlreadyExists,
    /// 409104: a job with that id exists.
    JobAlreadyExists,
    /// 409301: a module with that id exists on the device.
    ModuleAlreadyExistsOnDevice,
    /// 412001: the `If-Match` ETag does not match the current one.
    PreconditionFailed,
    /// 412002: the lock token is unknown or its lock has expired.
    DeviceMessageLockLost,
    /// 413001: the message is larger than allowed.
    MessageTooLarge,
    /// 413002: too many devices in one request.
    TooManyDevices,
    /// 429001: throttled.
    ThrottlingException,
    /// 429004: only one import/export job may run at a time.
    ThrottlingMaxActiveJobCountExceeded,
    /// 500001: an internal error.
    ServerError,
    /// 503001: a dependency (storage) is unavailable.
    ServiceUnavailable,
    /// 504101: the device did not answer a direct method in time.
    GatewayTimeout,
}

impl ErrorCode {
    /// The six-digit number, e.g. 404001.
    pub const fn number(self) -> u32 {
        match self {
            ErrorCode::ArgumentInvalid => 400004,
            ErrorCode::DeviceDefinedMultipleTimes => 400011,
            ErrorCode::BulkRegistryOperationFailure => 400013,
            ErrorCode::EtagDoesNotMatch => 400023,
            ErrorCode::IotHubUnauthorizedAccess => 401002,
            ErrorCode::IotHubUnauthorized => 401003,
            ErrorCode::IotHubQuotaExceeded => 403002,
            ErrorCode::DeviceMaximumQueueDepthExceeded => 403004,
            ErrorCode::DeviceDisabled => 403012,
            ErrorCode::GenericNotFound => 404000,
            ErrorCode::DeviceNotFound => 404001,
            ErrorCode::JobNotFound => 404002,
            ErrorCode::ModuleNotFound => 404010,
            ErrorCode::DeviceNotOnline => 404103,
            ErrorCode::DeviceAlreadyExists => 409001,
            ErrorCode::JobAlreadyExists => 409104,
            ErrorCode::ModuleAlreadyExistsOnDevice => 409301,
            ErrorCode::PreconditionFailed => 412001,
            ErrorCode::DeviceMessageLockLost => 412002,
            ErrorCode::MessageTooLarge => 413001,
            ErrorCode::TooManyDevices => 413002,
            ErrorCode::ThrottlingException => 429001,
            ErrorCode::ThrottlingMaxActiveJobCountExceeded => 429004,
            ErrorCode::ServerError => 500001,
            ErrorCode::ServiceUnavailable => 503001,
            ErrorCode::GatewayTimeout => 504101,
        }
    }

    /// Azure's name, e.g. `DeviceNotFound` (the `iothub-errorcode` header and `errorCode` fields).
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::ArgumentInvalid => "ArgumentInvalid",
            ErrorCode::DeviceDefinedMultipleTimes => "DeviceDefinedMultipleTimes",
            ErrorCode::BulkRegistryOperationFailure => "BulkRegistryOperationFailure",
            ErrorCode::EtagDoesNotMatch => "EtagDoesNotMatch",
            ErrorCode::IotHubUnauthorizedAccess => "IotHubUnauthorizedAccess",
            ErrorCode::IotHubUnauthorized => "IotHubUnauthorized",
            ErrorCode::IotHubQuotaExceeded => "IotHubQuotaExceeded",
            ErrorCode::DeviceMaximumQueueDepthExceeded => "DeviceMaximumQueueDepthExceeded",
            ErrorCode::DeviceDisabled => "DeviceDisabled",
            ErrorCode::GenericNotFound => "GenericNotFound",
            ErrorCode::DeviceNotFound => "DeviceNotFound",
            ErrorCode::JobNotFound => "JobNotFound",
            ErrorCode::ModuleNotFound => "ModuleNotFound",
            ErrorCode::DeviceNotOnline => "DeviceNotOnline",
            ErrorCode::DeviceAlreadyExists => "DeviceAlreadyExists",
            ErrorCode::JobAlreadyExists => "JobAlreadyExists",
            ErrorCode::ModuleAlreadyExistsOnDevice => "ModuleAlreadyExistsOnDevice",
            ErrorCode::PreconditionFailed => "PreconditionFailed",
            ErrorCode::DeviceMessageLockLost => "DeviceMessageLockLost",
            ErrorCode::MessageTooLarge => "MessageTooLarge",
            ErrorCode::TooManyDevices => "TooManyDevices",
            ErrorCode::ThrottlingException => "ThrottlingException",
            ErrorCode::ThrottlingMaxActiveJobCountExceeded => "ThrottlingMaxActiveJobCountExceeded",
            ErrorCode::ServerError => "ServerError",
            ErrorCode::ServiceUnavailable => "ServiceUnavailable",
            ErrorCode::GatewayTimeout => "GatewayTimeout",
        }
    }

    /// Every code, for lookups by number or name.
    pub const ALL: [ErrorCode; 26] = [
        ErrorCode::ArgumentInvalid,
        ErrorCode::DeviceDefinedMultipleTimes,
        ErrorCode::BulkRegistryOperationFailure,
        ErrorCode::EtagDoesNotMatch,
        ErrorCode::IotHubUnauthorizedAccess,
        ErrorCode::IotHubUnauthorized,
        ErrorCode::IotHubQuotaExceeded,
        ErrorCode::DeviceMaximumQueueDepthExceeded,
        ErrorCode::DeviceDisabled,
        ErrorCode::GenericNotFound,
        ErrorCode::DeviceNotFound,
        ErrorCode::JobNotFound,
        ErrorCode::ModuleNotFound,
        ErrorCode::DeviceNotOnline,
        ErrorCode::DeviceAlreadyExists,
        ErrorCode::JobAlreadyExists,
        ErrorCode::ModuleAlreadyExistsOnDevice,
        ErrorCode::PreconditionFailed,
        ErrorCode::DeviceMessageLockLost,
        ErrorCode::MessageTooLarge,
        ErrorCode::TooManyDevices,
        ErrorCode::ThrottlingException,
        ErrorCode::ThrottlingMaxActiveJobCountExceeded,
        ErrorCode::ServerError,
        ErrorCode::ServiceUnavailable,
        ErrorCode::GatewayTimeout,
    ];

    /// The code with this six-digit number (the `errorCode` of Azure's JSON error bodies),
    /// if it is one Ferrohub knows.
    pub fn from_number(number: u32) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|c| c.number() == number)
    }

    /// The HTTP status that carries this code.
    pub const fn http_status(self) -> u16 {
        (self.number() / 1000) as u16
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.number())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_prefix() {
        assert_eq!(ErrorCode::DeviceNotFound.http_status(), 404);
        assert_eq!(ErrorCode::PreconditionFailed.number(), 412001);
        assert_eq!(ErrorCode::TooManyDevices.http_status(), 413);
    }

    #[test]
    fn numbers_find_their_code() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_number(code.number()), Some(code), "{code}");
        }
        let mut numbers: Vec<u32> = ErrorCode::ALL.iter().map(|c| c.number()).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), ErrorCode::ALL.len(), "each code once");
        assert_eq!(
            ErrorCode::from_number(404103),
            Some(ErrorCode::DeviceNotOnline)
        );
        assert_eq!(ErrorCode::from_number(999999), None);
    }
}
