//! Topics: MQTT topic names and filters, and the Azure IoT Hub grammar layered on them.
//!
//! * [`TopicName`], [`TopicFilter`]: the MQTT rules (§4.7), valid by construction.
//! * [`TelemetryTopic`]: `devices/{d}[/modules/{m}]/messages/events/{bag}` with its
//!   [`PropertyBag`].
//! * [`c2d_topic`]: builds `devices/{d}/messages/devicebound/{bag}`.
//! * [`ClientId`], [`Username`]: the identity fields of CONNECT.
//! * [`Subscription`]: the SUBSCRIBE filters the hub supports.
//!
//! Twin and method *request* topics (`$iothub/twin/GET/?$rid=…`) are not parsed here.

mod c2d;
mod client;
mod name;
mod percent;
mod property_bag;
mod subscription;
mod telemetry;

pub use c2d::{C2dTopicError, c2d_topic};
pub use client::{ClientId, ClientIdError, Username, UsernameError};
pub use name::{MAX_TOPIC_LEN, TopicError, TopicFilter, TopicName};
pub use property_bag::{Property, PropertyBag, PropertyBagError, PropertyName, SystemProperty};
pub use subscription::Subscription;
pub use telemetry::{TelemetryTopic, TelemetryTopicError};
