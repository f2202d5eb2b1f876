//! The SUBSCRIBE filters Azure IoT Hub supports, recognised as an enum.

use crate::topic::TopicFilter;

/// What a subscription filter asks for. Azure IoT Hub supports a fixed set of filters; `#` only
/// stands for the property bag (or method name), never for arbitrary subtopics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscription<'a> {
    /// `devices/{deviceId}/messages/devicebound/#`: cloud-to-device messages.
    C2d {
        /// The device id in the filter.
        device_id: &'a str,
    },
    /// `devices/{deviceId}/modules/{moduleId}/inputs/#`: routed module input messages (Python).
    ModuleInputs {
        /// The device id in the filter.
        device_id: &'a str,
        /// The module id in the filter.
        module_id: &'a str,
    },
    /// `devices/{deviceId}/modules/{moduleId}/#`: everything for a module, which is how the C# SDK
    /// and the docs subscribe module inputs.
    Module {
        /// The device id in the filter.
        device_id: &'a str,
        /// The module id in the filter.
        module_id: &'a str,
    },
    /// `$iothub/twin/res/#`: responses to twin GET and PATCH.
    TwinResponses,
    /// `$iothub/twin/PATCH/properties/desired/#`: desired-property updates.
    DesiredProperties,
    /// `$iothub/methods/POST/#`: direct method requests.
    Methods,
    /// Anything else.
    Unsupported,
}

impl<'a> Subscription<'a> {
    /// Recognises `filter`. Ids containing wildcards (e.g. `devices/+/…`) are unsupported.
    pub fn parse(filter: &'a TopicFilter) -> Self {
        match filter.as_str() {
            "$iothub/twin/res/#" => return Self::TwinResponses,
            "$iothub/twin/PATCH/properties/desired/#" => return Self::DesiredProperties,
            "$iothub/methods/POST/#" => return Self::Methods,
            _ => {}
        }
        let levels: Vec<&str> = filter.as_str().split('/').collect();
        let id = |s: &'a str| !s.is_empty() && !s.contains(['+', '#']);
        match levels[..] {
            ["devices", d, "messages", "devicebound", "#"] if id(d) => Self::C2d { device_id: d },
            ["devices", d, "modules", m, "inputs", "#"] if id(d) && id(m) => Self::ModuleInputs {
                device_id: d,
                module_id: m,
            },
            ["devices", d, "modules", m, "#"] if id(d) && id(m) => Self::Module {
                device_id: d,
                module_id: m,
            },
            _ => Self::Unsupported,
        }
    }
}
