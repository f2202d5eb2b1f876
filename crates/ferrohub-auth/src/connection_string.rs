//! Azure IoT Hub connection strings: `HostName=…;DeviceId=…;SharedAccessKey=…`.
//!
//! Parsing follows the Python SDK, the strictest of the official parsers: pairs split on `;`,
//! each pair on its first `=`, case-sensitive key names, unknown and repeated keys rejected.
//! Formatting produces the canonical order the Azure portal shows, which parses back to the
//! same value.

use std::fmt;
use std::str::FromStr;

use crate::key::{KeyError, SymmetricKey};
use crate::sas::mint;

const HOST_NAME: &str = "HostName";
const DEVICE_ID: &str = "DeviceId";
const MODULE_ID: &str = "ModuleId";
const SHARED_ACCESS_KEY_NAME: &str = "SharedAccessKeyName";
const SHARED_ACCESS_KEY: &str = "SharedAccessKey";
const SHARED_ACCESS_SIGNATURE: &str = "SharedAccessSignature";
const GATEWAY_HOST_NAME: &str = "GatewayHostName";
const X509: &str = "x509";

/// Longest connection string accepted, in bytes.
pub const MAX_CONNECTION_STRING_LEN: usize = 8192;

/// Why a text is not a valid connection string. Messages name keys, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionStringError {
    /// Longer than [`MAX_CONNECTION_STRING_LEN`].
    #[error("the connection string is longer than {MAX_CONNECTION_STRING_LEN} bytes")]
    TooLong,
    /// A `;`-separated piece has no `=`. `index` counts the non-empty pieces from 0.
    #[error("piece {index} of the connection string is not of the form Key=Value")]
    MissingEquals {
        /// Position of the piece among the non-empty pieces.
        index: usize,
    },
    /// A key that connection strings do not have (keys are case-sensitive).
    #[error("unknown connection string key {0:?}")]
    UnknownKey(String),
    /// A key given more than once.
    #[error("the connection string gives {0} more than once")]
    DuplicateKey(&'static str),
    /// A key with an empty value.
    #[error("the connection string gives an empty {0}")]
    EmptyValue(&'static str),
    /// `x509` is neither `true` nor `false`.
    #[error("x509 must be true or false")]
    InvalidX509,
    /// `x509=true` together with a key or signature.
    #[error("the connection string mixes x509 with a shared access key or signature")]
    MixedAuthentication,
    /// `ModuleId` without `DeviceId`.
    #[error("the connection string gives a ModuleId without a DeviceId")]
    ModuleWithoutDevice,
    /// Neither a device nor a policy connection string.
    #[error(
        "the connection string is incomplete: it needs HostName and DeviceId with SharedAccessKey, \
         SharedAccessSignature or x509=true, or HostName with SharedAccessKeyName and SharedAccessKey"
    )]
    Incomplete,
}

/// A parsed connection string. Construct with [`str::parse`], [`ConnectionString::policy`] or
/// [`ConnectionString::device`]; print with `Display` for the canonical text.
///
/// `Debug` hides the key and the signature; `Display` shows them, as it must.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// The hub's host name, possibly with a port (`localhost:8443`).
    pub host_name: String,
    /// The device, for device and module connection strings.
    pub device_id: Option<String>,
    /// The module, for module connection strings.
    pub module_id: Option<String>,
    /// The shared access policy, for policy connection strings.
    pub shared_access_key_name: Option<String>,
    /// Base64 key of the device, module or policy.
    pub shared_access_key: Option<String>,
    /// A ready-made SAS token (`SharedAccessSignature sr=…`).
    pub shared_access_signature: Option<String>,
    /// Where to open the socket when it is not `host_name` (a gateway).
    pub gateway_host_name: Option<String>,
    /// Whether the identity authenticates with an X.509 certificate.
    pub x509: bool,
}

impl ConnectionString {
    /// A shared access policy connection string:
    /// `HostName={host};SharedAccessKeyName={name};SharedAccessKey={key}`.
    ///
    /// `key` may be base64 text or a [`SymmetricKey`] (by reference or value).
    pub fn policy(
        host: impl Into<String>,
        name: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        Self {
            host_name: host.into(),
            device_id: None,
            module_id: None,
            shared_access_key_name: Some(name.into()),
            shared_access_key: Some(key.into()),
            shared_access_signature: None,
            gateway_host_name: None,
            x509: false,
        }
    }

    /// A device (or, with `module_id`, module) connection string:
    /// `HostName={host};DeviceId={device_id}[;ModuleId={module_id}];SharedAccessKey={key}`.
    ///
    /// `key` may be base64 text or a [`SymmetricKey`] (by reference or value).
    pub fn device(
        host: impl Into<String>,
        device_id: impl Into<String>,
        module_id: Option<&str>,
        key: impl Into<String>,
    ) -> Self {
        Self {
            host_name: host.into(),
            device_id: Some(device_id.into()),
            module_id: module_id.map(str::to_owned),
            shared_access_key_name: None,
            shared_access_key: Some(key.into()),
            shared_access_signature: None,
            gateway_host_name: None,
            x509: false,
        }
    }

    /// Whether this names a device or module (rather than only a policy).
    pub fn is_device(&self) -> bool {
        self.device_id.is_some()
    }

    /// The decoded `SharedAccessKey`, if there is one.
    pub fn key(&self) -> Result<Option<SymmetricKey>, KeyError> {
        self.shared_access_key
            .as_deref()
            .map(SymmetricKey::from_base64)
            .transpose()
    }

    /// The resource URI a token for this connection string is scoped to, unencoded:
    /// `{host}/devices/{device}[/modules/{module}]` for devices and modules, `{host}` for
    /// policies.
    pub fn resource_uri(&self) -> String {
        match (&self.device_id, &self.module_id) {
            (Some(d), Some(m)) => format!("{}/devices/{d}/modules/{m}", self.host_name),
            (Some(d), None) => format!("{}/devices/{d}", self.host_name),
            _ => self.host_name.clone(),
        }
    }

    /// Mints a SAS token the way the SDKs do from this connection string, expiring at `expiry`
    /// (unix seconds). A `SharedAccessKeyName` becomes the token's `skn`, as in Node.
    ///
    /// Returns `Ok(None)` when the connection string has no key (x509, or a ready-made
    /// signature).
    pub fn sas_token(&self, expiry: u64) -> Result<Option<String>, KeyError> {
        Ok(self.key()?.map(|key| {
            mint(
                &self.resource_uri(),
                &key,
                expiry,
                self.shared_access_key_name.as_deref(),
            )
        }))
    }
}

fn set(
    slot: &mut Option<String>,
    name: &'static str,
    value: &str,
) -> Result<(), ConnectionStringError> {
    if slot.is_some() {
        return Err(ConnectionStringError::DuplicateKey(name));
    }
    if value.is_empty() {
        return Err(ConnectionStringError::EmptyValue(name));
    }
    *slot = Some(value.to_owned());
    Ok(())
}

impl FromStr for ConnectionString {
    type Err = ConnectionStringError;

    fn from_str(s: &str) -> Result<Self, ConnectionStringError> {
        if s.len() > MAX_CONNECTION_STRING_LEN {
            return Err(ConnectionStringError::TooLong);
        }
        let mut host_name = None;
        let mut device_id = None;
        let mut module_id = None;
        let mut key_name = None;
        let mut key = None;
        let mut signature = None;
        let mut gateway = None;
        let mut x509 = None;

        for (index, piece) in s.split(';').filter(|p| !p.is_empty()).enumerate() {
            let (name, value) = piece
                .split_once('=')
                .ok_or(ConnectionStringError::MissingEquals { index })?;
            match name {
                HOST_NAME => set(&mut host_name, HOST_NAME, value)?,
                DEVICE_ID => set(&mut device_id, DEVICE_ID, value)?,
                MODULE_ID => set(&mut module_id, MODULE_ID, value)?,
                SHARED_ACCESS_KEY_NAME => set(&mut key_name, SHARED_ACCESS_KEY_NAME, value)?,
                SHARED_ACCESS_KEY => set(&mut key, SHARED_ACCESS_KEY, value)?,
                SHARED_ACCESS_SIGNATURE => set(&mut signature, SHARED_ACCESS_SIGNATURE, value)?,
                GATEWAY_HOST_NAME => set(&mut gateway, GATEWAY_HOST_NAME, value)?,
                X509 => set(&mut x509, X509, value)?,
                other => return Err(ConnectionStringError::UnknownKey(other.to_owned())),
            }
        }

        let x509 = match x509.as_deref() {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(_) => return Err(ConnectionStringError::InvalidX509),
        };
        if x509 && (key.is_some() || signature.is_some()) {
            return Err(ConnectionStringError::MixedAuthentication);
        }
        if module_id.is_some() && device_id.is_none() {
            return Err(ConnectionStringError::ModuleWithoutDevice);
        }
        let Some(host_name) = host_name else {
            return Err(ConnectionStringError::Incomplete);
        };
        let device_ok = device_id.is_some() && (key.is_some() || signature.is_some() || x509);
        let policy_ok = key_name.is_some() && key.is_some();
        if !(device_ok || policy_ok) {
            return Err(ConnectionStringError::Incomplete);
        }
        Ok(Self {
            host_name,
            device_id,
            module_id,
            shared_access_key_name: key_name,
            shared_access_key: key,
            shared_access_signature: signature,
            gateway_host_name: gateway,
            x509,
        })
    }
}

impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{HOST_NAME}={}", self.host_name)?;
        let optional = [
            (DEVICE_ID, &self.device_id),
            (MODULE_ID, &self.module_id),
            (SHARED_ACCESS_KEY_NAME, &self.shared_access_key_name),
            (SHARED_ACCESS_KEY, &self.shared_access_key),
            (SHARED_ACCESS_SIGNATURE, &self.shared_access_signature),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                write!(f, ";{name}={v}")?;
            }
        }
        if self.x509 {
            write!(f, ";{X509}=true")?;
        }
        if let Some(g) = &self.gateway_host_name {
            write!(f, ";{GATEWAY_HOST_NAME}={g}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("ConnectionString")
            .field("host_name", &self.host_name)
            .field("device_id", &self.device_id)
            .field("module_id", &self.module_id)
            .field("shared_access_key_name", &self.shared_access_key_name)
            .field("shared_access_key", &redacted(&self.shared_access_key))
            .field(
                "shared_access_signature",
                &redacted(&self.shared_access_signature),
            )
            .field("gateway_host_name", &self.gateway_host_name)
            .field("x509", &self.x509)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::sas::SasToken;

    const KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";

    fn parse(s: &str) -> Result<ConnectionString, ConnectionStringError> {
        s.parse()
    }

    #[test]
    fn device_connection_string() {
        let cs = parse(&format!(
            "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey={KEY}"
        ))
        .expect("valid");
        assert_eq!(cs.host_name, "myhub.azure-devices.net");
        assert_eq!(cs.device_id.as_deref(), Some("dev1"));
        assert_eq!(cs.module_id, None);
        assert_eq!(cs.shared_access_key.as_deref(), Some(KEY));
        assert!(!cs.x509);
        assert!(cs.is_device());
        assert_eq!(cs.resource_uri(), "myhub.azure-devices.net/devices/dev1");
    }

    #[test]
    fn value_split_on_first_equals_keeps_padding() {
        let cs = parse("HostName=h;SharedAccessKeyName=iothubowner;SharedAccessKey=YWJjZA==")
            .expect("valid");
        assert_eq!(cs.shared_access_key.as_deref(), Some("YWJjZA=="));
        assert_eq!(cs.shared_access_key_name.as_deref(), Some("iothubowner"));
        assert!(!cs.is_device());
        assert_eq!(cs.resource_uri(), "h");
    }

    #[test]
    fn module_gateway_signature_and_x509_forms() {
        let m = parse(&format!(
            "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey={KEY};GatewayHostName=edge.local;"
        ))
        .expect("module via gateway, trailing ';'");
        assert_eq!(m.module_id.as_deref(), Some("m"));
        assert_eq!(m.gateway_host_name.as_deref(), Some("edge.local"));
        assert_eq!(m.resource_uri(), "h/devices/d/modules/m");

        let token = "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=abc%3D&se=1";
        let s = parse(&format!(
            "HostName=h;DeviceId=d;SharedAccessSignature={token}"
        ))
        .expect("device with token");
        assert_eq!(s.shared_access_signature.as_deref(), Some(token));
        assert_eq!(s.sas_token(5), Ok(None));

        let x = parse("HostName=h;DeviceId=d;x509=true").expect("x509");
        assert!(x.x509);
        assert_eq!(x.to_string(), "HostName=h;DeviceId=d;x509=true");

        // Node's device-via-policy form.
        let p = parse(&format!(
            "HostName=h;DeviceId=d;SharedAccessKeyName=device;SharedAccessKey={KEY}"
        ))
        .expect("device via policy");
        assert_eq!(p.shared_access_key_name.as_deref(), Some("device"));
    }

    #[test]
    fn rejections_name_the_key() {
        assert_eq!(
            parse("HostName=h;DeviceId=d;SharedAccessKey=a;Bogus=1"),
            Err(ConnectionStringError::UnknownKey("Bogus".into()))
        );
        assert_eq!(
            parse("HostName=h;deviceid=d;SharedAccessKey=a"),
            Err(ConnectionStringError::UnknownKey("deviceid".into()))
        );
        let dup = parse("HostName=h;DeviceId=d;DeviceId=e;SharedAccessKey=a");
        assert_eq!(dup, Err(ConnectionStringError::DuplicateKey("DeviceId")));
        assert!(dup.expect_err("dup").to_string().contains("DeviceId"));
        assert_eq!(
            parse("HostName=h;DeviceId;SharedAccessKey=a"),
            Err(ConnectionStringError::MissingEquals { index: 1 })
        );
        assert_eq!(
            parse("HostName=h;DeviceId=;SharedAccessKey=a"),
            Err(ConnectionStringError::EmptyValue("DeviceId"))
        );
    }

    #[test]
    fn validity_rule() {
        use ConnectionStringError::*;
        assert_eq!(parse(""), Err(Incomplete));
        assert_eq!(parse(";;;"), Err(Incomplete));
        assert_eq!(parse("HostName=h"), Err(Incomplete));
        assert_eq!(parse("HostName=h;DeviceId=d"), Err(Incomplete));
        assert_eq!(parse("DeviceId=d;SharedAccessKey=a"), Err(Incomplete));
        assert_eq!(parse("HostName=h;SharedAccessKey=a"), Err(Incomplete));
        assert_eq!(parse("HostName=h;SharedAccessKeyName=n"), Err(Incomplete));
        assert_eq!(parse("HostName=h;DeviceId=d;x509=false"), Err(Incomplete));
        assert_eq!(parse("HostName=h;DeviceId=d;x509=yes"), Err(InvalidX509));
        assert_eq!(
            parse("HostName=h;DeviceId=d;x509=true;SharedAccessKey=a"),
            Err(MixedAuthentication)
        );
        assert_eq!(
            parse("HostName=h;ModuleId=m;SharedAccessKeyName=n;SharedAccessKey=a"),
            Err(ModuleWithoutDevice)
        );
        assert_eq!(parse(&"x".repeat(10_000)), Err(TooLong));
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        let p = ConnectionString::policy("myhub.azure-devices.net", "iothubowner", KEY);
        assert_eq!(
            p.to_string(),
            format!(
                "HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"
            )
        );
        assert_eq!(parse(&p.to_string()), Ok(p));

        let key = SymmetricKey::from_base64(KEY).expect("valid");
        let d = ConnectionString::device("h", "d1", Some("m1"), &key);
        assert_eq!(
            d.to_string(),
            format!("HostName=h;DeviceId=d1;ModuleId=m1;SharedAccessKey={KEY}")
        );
        assert_eq!(parse(&d.to_string()), Ok(d.clone()));

        let mut g = d;
        g.gateway_host_name = Some("edge".into());
        assert!(g.to_string().ends_with(";GatewayHostName=edge"));
        assert_eq!(parse(&g.to_string()), Ok(g));

        // Non-canonical input order comes out canonical.
        let shuffled = parse(&format!("SharedAccessKey={KEY};DeviceId=d;HostName=h")).expect("ok");
        assert_eq!(
            shuffled.to_string(),
            format!("HostName=h;DeviceId=d;SharedAccessKey={KEY}")
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let p = ConnectionString::policy("h", "iothubowner", KEY);
        let dbg = format!("{p:?}");
        assert!(!dbg.contains(KEY));
        assert!(dbg.contains("iothubowner"));
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn mints_tokens_like_the_sdks() {
        let d = ConnectionString::device("myhub.azure-devices.net", "device1", None, KEY);
        let token = d
            .sas_token(1_700_000_000)
            .expect("valid key")
            .expect("has key");
        // azure-contract §2.6 vector 4.
        assert_eq!(
            token,
            "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdevice1\
             &sig=YmIL%2FdTZAntV%2FlLZdg3E7re%2BiH8C6Gt9dG4E4I74ho0%3D&se=1700000000"
        );
        let p = ConnectionString::policy("myhub.azure-devices.net", "iothubowner", KEY);
        let t = SasToken::parse(&p.sas_token(1_700_000_000).expect("ok").expect("key"))
            .expect("parses");
        assert_eq!(t.key_name(), Some("iothubowner"));
        assert_eq!(t.resource_raw(), "myhub.azure-devices.net");

        let bad = ConnectionString::policy("h", "n", "!!");
        assert_eq!(bad.sas_token(1), Err(KeyError::InvalidBase64));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,300}") {
            let _ = s.parse::<ConnectionString>();
        }

        #[test]
        fn whatever_parses_prints_back_to_itself(
            pieces in proptest::collection::vec(
                "(HostName|DeviceId|ModuleId|SharedAccessKeyName|SharedAccessKey|\
                 SharedAccessSignature|GatewayHostName|x509|hostname)?=?[a-zA-Z0-9=+/ .]{0,12}",
                0..8,
            ),
        ) {
            let text = pieces.join(";");
            if let Ok(cs) = text.parse::<ConnectionString>() {
                prop_assert_eq!(cs.to_string().parse::<ConnectionString>(), Ok(cs));
            }
        }

        #[test]
        fn display_round_trips(
            host in "[a-z0-9.-]{1,30}(:[0-9]{1,5})?",
            device in "[A-Za-z0-9._:@$!-]{1,20}",
            module in proptest::option::of("[A-Za-z0-9._-]{1,20}"),
            gateway in proptest::option::of("[a-z.]{1,20}"),
        ) {
            let key = SymmetricKey::generate();
            let mut cs = ConnectionString::device(host, device, module.as_deref(), &key);
            cs.gateway_host_name = gateway;
            prop_assert_eq!(cs.to_string().parse::<ConnectionString>(), Ok(cs));
        }
    }
}
