//! Device and module twins, and direct methods, as Azure IoT Hub has them, so that Microsoft's
//! device and service SDKs work unchanged. The rules come from
//! `shared/design/twins-methods-contract.md` (section numbers below are that file's) and
//! `azure-contract.md` §4.10–4.11.
//!
//! # What it does
//!
//! * **The twin document** ([`Twin`], [`twin`] module): tags, desired and reported
//!   [`Properties`] with their `$version`s and `$metadata` ([`Metadata`], every object level,
//!   §2.2), the ETag counter ([`TwinEtag`]) and the derived `version` (§2.3). Its serde form is a
//!   compact stored form whose sections sit at the query language's paths ([`storage`]).
//! * **Operations**, pure and `now`-taking, each returning the new twin and what the hub must do:
//!   service `PATCH` and `PUT` with `If-Match` ([`Twin::service_patch`],
//!   [`Twin::service_replace`], or [`TwinUpdate`] + [`Twin::apply_update`]) yielding the
//!   [`DesiredPatch`] to notify the device with; the device's reported patch with its optional
//!   `$version` precondition ([`Twin::device_report`]) yielding the new reported version. The
//!   merge rules are [`merge`]'s (§2.4), the limits [`limits`]' (§2.5). A refused operation
//!   changes nothing and fails with a [`TwinError`] that carries Azure's code (400004, 412001).
//! * **Renderings** ([`render`]): the REST twin ([`Twin::rest_view`] with a [`TwinIdentity`]),
//!   the device's `GET` body ([`Twin::device_view`]), the desired notification
//!   ([`DesiredPatch::body`]) and the error body of twin responses ([`device_error_body`]).
//! * **MQTT topics** ([`topics`], §1.1, §1.3, §4.1): parsing what devices publish under
//!   `$iothub/`, building what the hub publishes, with the request id echoed byte for byte.
//! * **Direct methods** ([`methods`], §4): the service's request ([`CloudToDeviceMethod`]), the
//!   body sent to the device, the service's result from the device's answer ([`MethodResult`]),
//!   and the 404103 / 504101 bodies.
//!
//! Modules (§7) have twins of the same shape on the same topics; only the REST rendering differs
//! (`moduleId`, no `capabilities`), which [`TwinIdentity`] carries.
//!
//! # What it doesn't
//!
//! * No I/O, no async runtime, no clock: storage, connections and timers belong to the server,
//!   which stores the twin beside the identity, publishes notifications to connected subscribed
//!   devices, and times method calls.
//! * No identity data: `deviceId`, status, connection state and the like come in through
//!   [`TwinIdentity`] when rendering.
//! * No throttling and no query language (`ferrohub-query` reads the stored form).
//!
//! # Known differences from a device's view
//!
//! Node's device SDK merges desired patches into its cache with lodash's `merge`, which merges
//! arrays element by element. The hub replaces arrays whole (as the contract says), so a Node
//! device that receives a shorter array keeps the old tail in its cache; Python devices apply
//! patches themselves. This is the SDK's behaviour against Azure too.

pub mod error;
pub mod etag;
pub mod limits;
pub mod merge;
pub mod metadata;
pub mod methods;
pub mod render;
pub mod storage;
mod time;
pub mod topics;
pub mod twin;

pub use error::{KeyProblem, MethodError, SectionName, TopicError, TwinError, ValueProblem};
pub use etag::{IfMatch, TwinEtag};
pub use metadata::Metadata;
pub use methods::{
    CloudToDeviceMethod, MethodName, MethodResult, device_not_online_body, gateway_timeout_body,
};
pub use render::{DeviceTwin, RestTwin, TwinIdentity, X509Thumbprint, device_error_body};
pub use topics::{
    DeviceTopic, MethodResponseTopic, ReportedPatchTopic, desired_patch_topic,
    method_request_topic, parse_device_topic, parse_method_response_topic,
    parse_reported_patch_topic, parse_twin_get_topic, twin_response_topic,
};
pub use twin::{
    DesiredPatch, Properties, ReportedPatch, ReportedUpdated, SectionChange, Twin, TwinUpdate,
    TwinUpdated,
};
