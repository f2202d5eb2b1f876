//! Link addresses: normalised, then classified (amqp-contract §2.2, §3.2, §4.2).
//!
//! The SDKs spell the same node many ways: uamqp and pyamqp send full URLs
//! (`amqps://{host}/messages/devicebound`), Node a leading slash, JS Event Hubs a relative
//! path, C# `deviceBound`; Python writes `consumergroups`, JS `ConsumerGroups`. So
//! [`Address::parse`] drops `scheme://authority`, leading and trailing slashes and a query,
//! percent-decodes every segment, and compares the fixed segments without regard to case.
//! Identifiers (device, module, entity, consumer group, partition) are returned decoded but
//! otherwise as sent: validating and comparing them is the hub's job.

/// What a link address names.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Address {
    /// `$cbs`: the claims-based-security node, where tokens are put.
    Cbs,
    /// `$management`, `{entity}/$management` or `messages/events/$management`: the Event Hubs
    /// management node.
    Management {
        /// The entity before `/$management`, if any (`messages/events` for the IoT Hub form).
        entity: Option<String>,
    },
    /// `/messages/devicebound`: where the service sends cloud-to-device messages.
    ServiceC2d,
    /// `/messages/serviceBound/feedback`: where the service receives C2D feedback.
    ServiceFeedback,
    /// `/messages/serviceBound/filenotifications`: where the service receives file-upload
    /// notifications.
    ServiceFileNotifications,
    /// `/devices/{id}[/modules/{m}]/messages/events`: a device's telemetry (client sends) or,
    /// for a module, its input messages (client receives; amqp-contract §4.2).
    DeviceEvents {
        /// The device id.
        device_id: String,
        /// The module id.
        module_id: Option<String>,
    },
    /// `/devices/{id}[/modules/{m}]/messages/devicebound`: C2D messages to a device.
    DeviceC2d {
        /// The device id.
        device_id: String,
        /// The module id.
        module_id: Option<String>,
    },
    /// `/devices/{id}[/modules/{m}]/twin`: twin requests (client sends) and responses
    /// (client receives).
    Twin {
        /// The device id.
        device_id: String,
        /// The module id.
        module_id: Option<String>,
    },
    /// `/devices/{id}[/modules/{m}]/methods/devicebound`: direct methods.
    Methods {
        /// The device id.
        device_id: String,
        /// The module id.
        module_id: Option<String>,
    },
    /// `{entity}/ConsumerGroups/{cg}/Partitions/{p}`: an Event Hubs partition receiver.
    EventHubsReceiver {
        /// The Event Hub.
        entity: Entity,
        /// The consumer group as sent (`$Default` and `$default` both occur).
        consumer_group: String,
        /// The partition id.
        partition: String,
    },
    /// `{entity}[/Partitions/{p}]`: an Event Hubs producer.
    EventHubsProducer {
        /// The Event Hub.
        entity: Entity,
        /// The partition, when the producer targets one.
        partition: Option<String>,
    },
    /// Anything else (or an address that does not decode).
    Unknown,
}

/// The Event Hub an Event Hubs address names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entity {
    /// A name, to be compared with the hub's Event Hub-compatible name.
    Named(String),
    /// `messages/events`: IoT Hub's own spelling of its built-in endpoint.
    MessagesEvents,
}

impl Address {
    /// Normalises and classifies a link address (a terminus' `address`).
    pub fn parse(address: &str) -> Self {
        match segments(address) {
            Some(segments) => {
                let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
                classify(&segments)
            }
            None => Self::Unknown,
        }
    }
}

/// The address' path segments, percent-decoded; `None` if a segment is empty or not UTF-8.
pub fn segments(address: &str) -> Option<Vec<String>> {
    let path = address.split(['?', '#']).next().unwrap_or_default();
    let path = match path.find("://") {
        Some(at) => {
            let after = &path[at + 3..];
            after.find('/').map_or("", |slash| &after[slash..])
        }
        None => path,
    };
    let path = path.trim_matches('/');
    if path.is_empty() {
        return None;
    }
    path.split('/').map(percent_decode).collect()
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is kept as is. `None` if the
/// segment is empty or the result is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    if segment.is_empty() {
        return None;
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn is(segment: &str, fixed: &str) -> bool {
    segment.eq_ignore_ascii_case(fixed)
}

fn classify(s: &[&str]) -> Address {
    let owned = |s: &str| s.to_owned();
    // The node names first: they are also valid entity names.
    match s {
        [cbs] if is(cbs, "$cbs") => return Address::Cbs,
        [mgmt] if is(mgmt, "$management") => return Address::Management { entity: None },
        [entity @ .., mgmt] if is(mgmt, "$management") => {
            return Address::Management {
                entity: Some(entity.join("/")),
            };
        }
        [m, d] if is(m, "messages") && is(d, "devicebound") => return Address::ServiceC2d,
        [m, sb, f] if is(m, "messages") && is(sb, "servicebound") => {
            if is(f, "feedback") {
                return Address::ServiceFeedback;
            }
            if is(f, "filenotifications") {
                return Address::ServiceFileNotifications;
            }
            return Address::Unknown;
        }
        [devices, device, rest @ ..] if is(devices, "devices") => {
            let (module_id, rest) = match rest {
                [modules, module, rest @ ..] if is(modules, "modules") => {
                    (Some(owned(module)), rest)
                }
                rest => (None, rest),
            };
            let device_id = owned(device);
            let address = match rest {
                [m, e] if is(m, "messages") && is(e, "events") => Address::DeviceEvents {
                    device_id,
                    module_id,
                },
                [m, d] if is(m, "messages") && is(d, "devicebound") => Address::DeviceC2d {
                    device_id,
                    module_id,
                },
                [t] if is(t, "twin") => Address::Twin {
                    device_id,
                    module_id,
                },
                [m, d] if is(m, "methods") && is(d, "devicebound") => Address::Methods {
                    device_id,
                    module_id,
                },
                _ => Address::Unknown,
            };
            // An Event Hub may be called "devices": try that reading too.
            if address != Address::Unknown {
                return address;
            }
        }
        _ => {}
    }
    let (entity, rest) = match s {
        [m, e, rest @ ..] if is(m, "messages") && is(e, "events") => (Entity::MessagesEvents, rest),
        [name, rest @ ..] => (Entity::Named(owned(name)), rest),
        [] => return Address::Unknown,
    };
    match rest {
        [] => Address::EventHubsProducer {
            entity,
            partition: None,
        },
        [p, partition] if is(p, "partitions") => Address::EventHubsProducer {
            entity,
            partition: Some(owned(partition)),
        },
        [c, cg, p, partition] if is(c, "consumergroups") && is(p, "partitions") => {
            Address::EventHubsReceiver {
                entity,
                consumer_group: owned(cg),
                partition: owned(partition),
            }
        }
        _ => Address::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(kind: fn(String, Option<String>) -> Address, d: &str, m: Option<&str>) -> Address {
        kind(d.to_owned(), m.map(str::to_owned))
    }

    #[test]
    fn nodes_and_service_endpoints_in_every_sdk_spelling() {
        assert_eq!(Address::parse("$cbs"), Address::Cbs);
        assert_eq!(
            Address::parse("$management"),
            Address::Management { entity: None }
        );
        assert_eq!(
            Address::parse("amqps://hub.example/messages/events/$management"),
            Address::Management {
                entity: Some("messages/events".into())
            }
        );
        for c2d in [
            "/messages/devicebound",
            "amqps://hub.example/messages/devicebound",
            "amqps://hub.example:5671/messages/deviceBound",
            "messages/devicebound/",
        ] {
            assert_eq!(Address::parse(c2d), Address::ServiceC2d, "{c2d}");
        }
        assert_eq!(
            Address::parse("/messages/serviceBound/feedback"),
            Address::ServiceFeedback
        );
        assert_eq!(
            Address::parse("/messages/servicebound/FileNotifications"),
            Address::ServiceFileNotifications
        );
        assert_eq!(Address::parse("/messages/servicebound/x"), Address::Unknown);
    }

    #[test]
    fn device_addresses_are_decoded() {
        let events = |d: String, m| Address::DeviceEvents {
            device_id: d,
            module_id: m,
        };
        assert_eq!(
            Address::parse("/devices/dev%201/messages/events"),
            device(events, "dev 1", None)
        );
        assert_eq!(
            Address::parse("amqps://h/devices/d1/modules/m%2F1/messages/events"),
            device(events, "d1", Some("m/1"))
        );
        let c2d = |d: String, m| Address::DeviceC2d {
            device_id: d,
            module_id: m,
        };
        assert_eq!(
            Address::parse("/Devices/d1/Messages/DeviceBound"),
            device(c2d, "d1", None)
        );
        let twin = |d: String, m| Address::Twin {
            device_id: d,
            module_id: m,
        };
        assert_eq!(Address::parse("/devices/d1/twin"), device(twin, "d1", None));
        assert_eq!(
            Address::parse("/devices/d1/modules/m1/twin"),
            device(twin, "d1", Some("m1"))
        );
        let methods = |d: String, m| Address::Methods {
            device_id: d,
            module_id: m,
        };
        assert_eq!(
            Address::parse("/devices/d1/methods/devicebound"),
            device(methods, "d1", None)
        );
        // A stray `%` stays; an escape that is not UTF-8 makes the address unknown.
        assert_eq!(
            Address::parse("/devices/100%/twin"),
            device(twin, "100%", None)
        );
        assert_eq!(Address::parse("/devices/%ff/twin"), Address::Unknown);
        assert_eq!(Address::parse("/devices//twin"), Address::Unknown);
        assert_eq!(Address::parse("/devices/d1/telemetry"), Address::Unknown);
        // Unless it reads as an Event Hub called "devices".
        assert_eq!(
            Address::parse("devices/ConsumerGroups/cg/Partitions/0"),
            Address::EventHubsReceiver {
                entity: Entity::Named("devices".into()),
                consumer_group: "cg".into(),
                partition: "0".into(),
            }
        );
    }

    #[test]
    fn event_hubs_receivers_and_producers() {
        let receiver = |entity, cg: &str, p: &str| Address::EventHubsReceiver {
            entity,
            consumer_group: cg.into(),
            partition: p.into(),
        };
        // Python: a full URL, lower-case segments elsewhere; JS: relative.
        assert_eq!(
            Address::parse("amqps://hub.example/myhub/ConsumerGroups/$Default/Partitions/0"),
            receiver(Entity::Named("myhub".into()), "$Default", "0")
        );
        assert_eq!(
            Address::parse("myhub/consumergroups/$default/partitions/3"),
            receiver(Entity::Named("myhub".into()), "$default", "3")
        );
        assert_eq!(
            Address::parse("/messages/events/ConsumerGroups/cg/Partitions/1"),
            receiver(Entity::MessagesEvents, "cg", "1")
        );
        assert_eq!(
            Address::parse("myhub"),
            Address::EventHubsProducer {
                entity: Entity::Named("myhub".into()),
                partition: None
            }
        );
        assert_eq!(
            Address::parse("amqps://h/myhub/Partitions/2"),
            Address::EventHubsProducer {
                entity: Entity::Named("myhub".into()),
                partition: Some("2".into())
            }
        );
        assert_eq!(Address::parse("myhub/ConsumerGroups/cg"), Address::Unknown);
        assert_eq!(Address::parse(""), Address::Unknown);
        assert_eq!(Address::parse("amqps://host-only"), Address::Unknown);
    }
}
