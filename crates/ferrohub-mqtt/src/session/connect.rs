//! The checks a CONNECT passes before the server is asked to authenticate it: the client id
//! names an identity, the user name agrees with it, and the will is that identity's telemetry.
//!
//! Return codes, and why (azure-contract §4.2, §4.4, §4.9):
//!
//! * a client id that is not `{deviceId}` or `{deviceId}/{moduleId}` → **2** (identifier
//!   rejected), as MQTT prescribes for an unacceptable client id [MQTT-3.1.3-9];
//! * a user name that does not parse, or names another client id → **5** (not authorized). The
//!   client id is the authoritative identity and the user name is part of the credentials; the
//!   real hub answers 5 to every credential problem it is known to detect, and the SDKs treat 4
//!   and 5 alike (no retry). A missing user name is left to the server;
//! * a will whose topic is not this identity's telemetry topic, or whose property bag does not
//!   decode → **5**: the will would be published on the identity's behalf, and publishing
//!   anywhere else is refused too.

use crate::codec::{Connect, ConnectReturnCode};
use crate::session::quoted;
use crate::topic::{ClientId, TelemetryTopic, TelemetryTopicError, Username};

/// The device or module a connection speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) device_id: String,
    pub(crate) module_id: Option<String>,
}

/// A CONNECT refused before authentication: the CONNACK code and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: ConnectReturnCode,
    pub(crate) detail: String,
}

/// Checks `connect` and returns the identity it claims.
pub(crate) fn check(connect: &Connect) -> Result<Identity, Refusal> {
    let client_id = ClientId::parse(&connect.client_id).map_err(|e| Refusal {
        code: ConnectReturnCode::IdentifierRejected,
        detail: format!("client id {}: {e}", quoted(&connect.client_id)),
    })?;
    let identity = Identity {
        device_id: client_id.device_id.to_owned(),
        module_id: client_id.module_id.map(str::to_owned),
    };
    let not_authorized = |detail| Refusal {
        code: ConnectReturnCode::NotAuthorized,
        detail,
    };
    if let Some(username) = &connect.username {
        let parsed = Username::parse(username)
            .map_err(|e| not_authorized(format!("user name {}: {e}", quoted(username))))?;
        if parsed.client_id != connect.client_id {
            return Err(not_authorized(format!(
                "user name names client id {}, the CONNECT {}",
                quoted(parsed.client_id),
                quoted(&connect.client_id)
            )));
        }
    }
    if let Some(will) = &connect.will {
        match TelemetryTopic::parse(will.topic.as_str()) {
            Ok(topic) if identity.owns(&topic) => {}
            Ok(_) => {
                return Err(not_authorized(format!(
                    "will topic {} is another identity's",
                    quoted(will.topic.as_str())
                )));
            }
            Err(TelemetryTopicError::NotTelemetry) => {
                return Err(not_authorized(format!(
                    "will topic {} is not a telemetry topic",
                    quoted(will.topic.as_str())
                )));
            }
            Err(e) => return Err(not_authorized(format!("will topic: {e}"))),
        }
    }
    Ok(identity)
}

// === impl Identity ===

impl Identity {
    /// Whether `topic` is this identity's own telemetry topic (a module publishes on its module
    /// topic, never on its device's).
    pub(crate) fn owns(&self, topic: &TelemetryTopic<'_>) -> bool {
        topic.device_id == self.device_id && topic.module_id == self.module_id.as_deref()
    }

    /// The identity as written in topics, for messages: `d` or `d/m`.
    pub(crate) fn describe(&self) -> String {
        match &self.module_id {
            Some(m) => format!("{}/{m}", self.device_id),
            None => self.device_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::codec::{LastWill, QoS};
    use crate::topic::TopicName;

    fn connect(client_id: &str, username: Option<&str>) -> Connect {
        Connect {
            clean_session: false,
            keep_alive: 60,
            client_id: client_id.to_owned(),
            username: username.map(str::to_owned),
            password: None,
            will: None,
        }
    }

    fn code(c: &Connect) -> Option<ConnectReturnCode> {
        check(c).err().map(|r| r.code)
    }

    #[test]
    fn client_ids() {
        let id = check(&connect("d", None)).ok();
        assert_eq!(
            id.map(|i| (i.device_id, i.module_id)),
            Some(("d".into(), None))
        );
        let id = check(&connect("d/m", None)).ok();
        assert_eq!(
            id.map(|i| (i.device_id, i.module_id)),
            Some(("d".into(), Some("m".into())))
        );
        for bad in ["", "/m", "d/", "d/m/x"] {
            assert_eq!(
                code(&connect(bad, None)),
                Some(ConnectReturnCode::IdentifierRejected),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn user_names() {
        for ok in [
            "hub/d/?api-version=2021-04-12&DeviceClientType=x",
            "hub/d/api-version=2016-11-14",
            "hub/d",
            "hub/d/",
        ] {
            assert_eq!(code(&connect("d", Some(ok))), None, "{ok}");
        }
        assert_eq!(
            code(&connect("d/m", Some("hub/d/m/?api-version=2020-09-30"))),
            None
        );
        for bad in ["hub/e/?api-version=1", "hub/d/m/?x", "d", "/d", "hub/D"] {
            assert_eq!(
                code(&connect("d", Some(bad))),
                Some(ConnectReturnCode::NotAuthorized),
                "{bad}"
            );
        }
    }

    #[test]
    fn wills() {
        let with_will = |client_id: &str, topic: &str| {
            let mut c = connect(client_id, None);
            c.will = TopicName::new(topic).ok().map(|topic| LastWill {
                topic,
                message: Bytes::from_static(b"bye"),
                qos: QoS::AtLeastOnce,
                retain: false,
            });
            c
        };
        assert_eq!(code(&with_will("d", "devices/d/messages/events/")), None);
        assert_eq!(code(&with_will("d", "devices/d/messages/events/a=1")), None);
        assert_eq!(
            code(&with_will("d/m", "devices/d/modules/m/messages/events/")),
            None
        );
        for (client_id, topic) in [
            ("d", "devices/e/messages/events/"),
            ("d/m", "devices/d/messages/events/"),
            ("d", "devices/d/modules/m/messages/events/"),
            ("d", "status/offline"),
            ("d", "devices/d/messages/events/a=%zz"),
        ] {
            assert_eq!(
                code(&with_will(client_id, topic)),
                Some(ConnectReturnCode::NotAuthorized),
                "{client_id} {topic}"
            );
        }
    }
}
