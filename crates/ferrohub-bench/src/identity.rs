//! Who each simulated device is: its id, topic, CONNECT packet and SAS token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use ferrohub_auth::{ConnectionString, SymmetricKey};
use ferrohub_mqtt::codec::Connect;
use ferrohub_mqtt::{Packet, TopicFilter, TopicName};

/// The api-version devices put in their MQTT user name.
pub const API_VERSION: &str = ferrohub_api::API_VERSION;

/// How long minted tokens stay valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// The `i`-th device id: `{prefix}{i}`.
pub fn device_id(prefix: &str, i: usize) -> String {
    format!("{prefix}{i}")
}

/// The MQTT user name an Azure device sends: `{host}/{deviceId}/?api-version=…`.
pub fn username(host: &str, device_id: &str) -> String {
    format!("{host}/{device_id}/?api-version={API_VERSION}")
}

/// A device SAS token: resource `{host}/devices/{deviceId}`, signed with the device's own key
/// (no `skn`), expiring at `expiry` (unix seconds).
pub fn device_token(host: &str, device_id: &str, key: &SymmetricKey, expiry: u64) -> String {
    ferrohub_auth::mint(&format!("{host}/devices/{device_id}"), key, expiry, None)
}

/// A service SAS token from a policy connection string (`sr` = its `HostName`, `skn` = its
/// policy), expiring at `expiry`.
pub fn service_token(owner: &ConnectionString, expiry: u64) -> anyhow::Result<String> {
    owner
        .sas_token(expiry)?
        .ok_or_else(|| anyhow::anyhow!("the owner connection string has no key"))
}

/// The device-to-cloud telemetry topic: `devices/{deviceId}/messages/events/`.
pub fn telemetry_topic(device_id: &str) -> anyhow::Result<TopicName> {
    TopicName::new(format!("devices/{device_id}/messages/events/"))
        .map_err(|e| anyhow::anyhow!("device id {device_id:?} makes a bad topic: {e}"))
}

/// The cloud-to-device subscription: `devices/{deviceId}/messages/devicebound/#`.
pub fn c2d_filter(device_id: &str) -> anyhow::Result<TopicFilter> {
    TopicFilter::new(format!("devices/{device_id}/messages/devicebound/#"))
        .map_err(|e| anyhow::anyhow!("device id {device_id:?} makes a bad filter: {e}"))
}

/// The host part of `host[:port]`.
pub fn host_without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Nanoseconds since the Unix epoch.
pub fn unix_now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// How devices authenticate.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// No user name or password (a plain broker).
    Anonymous,
    /// Azure-style: user name with the hub host, a SAS token as password.
    Sas {
        /// The hub's host name without port, as devices put it in tokens and user names.
        host: String,
        /// Every bench device's primary key.
        key: SymmetricKey,
        /// Token expiry, unix seconds.
        expiry: u64,
    },
}

impl Credentials {
    /// The CONNECT that device `client_id` sends (clean session).
    pub fn connect(&self, client_id: &str, keep_alive: u16) -> Connect {
        let (username, password) = match self {
            Credentials::Anonymous => (None, None),
            Credentials::Sas { host, key, expiry } => (
                Some(username(host, client_id)),
                Some(Bytes::from(device_token(host, client_id, key, *expiry))),
            ),
        };
        Connect {
            clean_session: true,
            keep_alive,
            client_id: client_id.to_owned(),
            username,
            password,
            will: None,
        }
    }

    /// [`Credentials::connect`], encoded.
    pub fn connect_bytes(&self, client_id: &str, keep_alive: u16) -> anyhow::Result<Bytes> {
        let mut buf = BytesMut::new();
        ferrohub_mqtt::encode(
            &Packet::Connect(self.connect(client_id, keep_alive)),
            &mut buf,
        )
        .map_err(|e| anyhow::anyhow!("cannot encode CONNECT for {client_id:?}: {e}"))?;
        Ok(buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use ferrohub_auth::SasToken;

    use super::*;

    fn key() -> SymmetricKey {
        SymmetricKey::from_base64("NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=").expect("key")
    }

    #[test]
    fn ids_topics_and_user_names() {
        assert_eq!(device_id("bench-", 7), "bench-7");
        assert_eq!(
            username("localhost", "bench-7"),
            "localhost/bench-7/?api-version=2021-04-12"
        );
        assert_eq!(
            telemetry_topic("bench-7").expect("topic").as_str(),
            "devices/bench-7/messages/events/"
        );
        assert!(telemetry_topic("a+b").is_err());
        let filter = c2d_filter("bench-7").expect("filter");
        assert_eq!(filter.as_str(), "devices/bench-7/messages/devicebound/#");
        assert_eq!(
            ferrohub_mqtt::topic::Subscription::parse(&filter),
            ferrohub_mqtt::topic::Subscription::C2d {
                device_id: "bench-7"
            }
        );
        assert!(c2d_filter("a#b").is_err());
    }

    #[test]
    fn host_port_is_split_off() {
        assert_eq!(host_without_port("localhost:8443"), "localhost");
        assert_eq!(host_without_port("localhost"), "localhost");
        assert_eq!(host_without_port("hub.example:x"), "hub.example:x");
    }

    #[test]
    fn device_tokens_verify_with_the_device_key() {
        let token = device_token("localhost", "bench-1", &key(), 2_000_000_000);
        let parsed = SasToken::parse(&token).expect("parses");
        assert_eq!(parsed.resource(), "localhost/devices/bench-1");
        assert_eq!(parsed.key_name(), None);
        assert_eq!(parsed.expiry(), 2_000_000_000);
        assert!(parsed.signed_by(&key()));
    }

    #[test]
    fn service_tokens_carry_the_policy() {
        let cs: ConnectionString =
            "HostName=localhost:8443;SharedAccessKeyName=iothubowner;SharedAccessKey=NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
                .parse()
                .expect("connection string");
        let token = service_token(&cs, 2_000_000_000).expect("token");
        let parsed = SasToken::parse(&token).expect("parses");
        assert_eq!(parsed.resource(), "localhost:8443");
        assert_eq!(parsed.key_name(), Some("iothubowner"));
        assert!(parsed.signed_by(&key()));
    }

    #[test]
    fn connect_packets() {
        let anon = Credentials::Anonymous.connect("c1", 60);
        assert_eq!(anon.client_id, "c1");
        assert!(anon.username.is_none() && anon.password.is_none());
        assert!(anon.clean_session);

        let sas = Credentials::Sas {
            host: "localhost".into(),
            key: key(),
            expiry: 2_000_000_000,
        };
        let c = sas.connect("bench-3", 600);
        assert_eq!(
            c.username.as_deref(),
            Some("localhost/bench-3/?api-version=2021-04-12")
        );
        let password = c.password.expect("password");
        let token = std::str::from_utf8(&password).expect("utf-8");
        assert!(SasToken::parse(token).expect("token").signed_by(&key()));

        let bytes = sas.connect_bytes("bench-3", 600).expect("encodes");
        let mut buf = BytesMut::from(&bytes[..]);
        match ferrohub_mqtt::decode(&mut buf, 1 << 16) {
            Ok(Some(Packet::Connect(back))) => assert_eq!(back.client_id, "bench-3"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
