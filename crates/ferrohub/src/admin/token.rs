//! `ferrohub token …`: mint SAS tokens.
//!
//! * `token device ID` / `token module DEVICE MODULE`: a device or module token, `sr` =
//!   `{host}/devices/{id}[/modules/{mid}]` with the host as devices name it (no port). Signed
//!   with the identity's own key, read from the hub; or, with `--policy NAME`, a token-service
//!   token signed with that shared access policy's key and carrying `skn=NAME` (the policy needs
//!   DeviceConnect). The policy key can only come from the connection string, so `NAME` must be
//!   the connection string's own policy.
//! * `token policy`: a hub-scoped token for the connection string's own policy, `sr` = the
//!   connection string's `HostName` (port included), as the service SDKs sign.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat};
use clap::{Args, Subcommand};
use ferrohub_auth::{ConnectionString, SymmetricKey, mint};
use serde::Serialize;

use super::device::{WhichKey, identity_key};
use super::ttl::parse_ttl;
use super::{Failure, HubArgs, Output, emit, host_without_port};

/// Token commands.
#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Mint a device token, signed with the device's key or with --policy's key
    Device(DeviceTokenArgs),
    /// Mint a module token, signed with the module's key or with --policy's key
    Module(ModuleTokenArgs),
    /// Mint a hub-scoped token for the connection string's own shared access policy
    Policy(PolicyTokenArgs),
}

/// How a device or module token is signed.
#[derive(Debug, Args)]
pub(crate) struct SigningArgs {
    /// How long the token is valid: 30s, 15m, 1h, 2d or seconds
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: u64,
    /// Sign with this shared access policy's key instead of the identity's (the connection
    /// string must be this policy's)
    #[arg(long, value_name = "POLICY")]
    policy: Option<String>,
    /// Which of the identity's keys signs (without --policy)
    #[arg(long, value_enum, default_value_t = WhichKey::Primary, conflicts_with = "policy")]
    key: WhichKey,
}

/// `token device`.
#[derive(Debug, Args)]
pub(crate) struct DeviceTokenArgs {
    /// The device id
    device_id: String,
    #[command(flatten)]
    signing: SigningArgs,
    #[command(flatten)]
    hub: HubArgs,
}

/// `token module`.
#[derive(Debug, Args)]
pub(crate) struct ModuleTokenArgs {
    /// The device id
    device_id: String,
    /// The module id
    module_id: String,
    #[command(flatten)]
    signing: SigningArgs,
    #[command(flatten)]
    hub: HubArgs,
}

/// `token policy`.
#[derive(Debug, Args)]
pub(crate) struct PolicyTokenArgs {
    /// How long the token is valid: 30s, 15m, 1h, 2d or seconds
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: u64,
    #[command(flatten)]
    hub: HubArgs,
}

/// A minted token, as `--output json` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Minted {
    shared_access_signature: String,
    resource_uri: String,
    key_name: Option<String>,
    expiry: u64,
    expires_at: Option<String>,
}

impl TokenCommand {
    pub(crate) async fn run(self) -> Result<(), Failure> {
        match self {
            TokenCommand::Device(a) => identity_token(&a.hub, &a.device_id, None, &a.signing).await,
            TokenCommand::Module(a) => {
                identity_token(&a.hub, &a.device_id, Some(&a.module_id), &a.signing).await
            }
            TokenCommand::Policy(a) => {
                let conn = a.hub.connection_string()?;
                let (name, key) = own_policy(&conn)?;
                let minted = sign(&conn.host_name, &key, a.ttl, Some(name));
                print(&a.hub, &minted)
            }
        }
    }
}

async fn identity_token(
    hub: &HubArgs,
    device_id: &str,
    module_id: Option<&str>,
    signing: &SigningArgs,
) -> Result<(), Failure> {
    let resource_of = |conn: &ConnectionString| {
        let host = host_without_port(&conn.host_name);
        match module_id {
            Some(m) => format!("{host}/devices/{device_id}/modules/{m}"),
            None => format!("{host}/devices/{device_id}"),
        }
    };
    let minted = match &signing.policy {
        Some(policy) => {
            let conn = hub.connection_string()?;
            let (name, key) = own_policy(&conn)?;
            if name != policy {
                return Err(Failure::Usage(format!(
                    "--policy {policy}: the connection string is policy {name:?}'s, so only its key \
                     is at hand; pass the connection string of policy {policy:?} (or use \
                     --policy {name})"
                )));
            }
            sign(&resource_of(&conn), &key, signing.ttl, Some(name))
        }
        None => {
            let (client, conn) = hub.connect()?;
            let (auth, what) = match module_id {
                Some(m) => (
                    client.module(device_id, m).await?.authentication,
                    format!("module {m:?} of device {device_id:?}"),
                ),
                None => (
                    client.device(device_id).await?.authentication,
                    format!("device {device_id:?}"),
                ),
            };
            let text = identity_key(auth.as_ref(), signing.key, &what)?;
            let key = SymmetricKey::from_base64(&text)
                .map_err(|e| Failure::Failed(format!("the key of {what} is unusable: {e}")))?;
            sign(&resource_of(&conn), &key, signing.ttl, None)
        }
    };
    print(hub, &minted)
}

/// The connection string's policy name and key; an error if it is not a policy's.
fn own_policy(conn: &ConnectionString) -> Result<(&str, SymmetricKey), Failure> {
    let name = match (&conn.device_id, conn.shared_access_key_name.as_deref()) {
        (None, Some(name)) => name,
        _ => {
            return Err(Failure::Usage(
                "the connection string is not a shared access policy's \
                 (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…)"
                    .into(),
            ));
        }
    };
    let key = conn
        .key()
        .map_err(|e| Failure::Usage(format!("the connection string's SharedAccessKey: {e}")))?
        .ok_or_else(|| Failure::Usage("the connection string has no SharedAccessKey".into()))?;
    Ok((name, key))
}

fn sign(resource: &str, key: &SymmetricKey, ttl: u64, key_name: Option<&str>) -> Minted {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let expiry = now.saturating_add(ttl);
    Minted {
        shared_access_signature: mint(resource, key, expiry, key_name),
        resource_uri: resource.to_owned(),
        key_name: key_name.map(str::to_owned),
        expiry,
        expires_at: i64::try_from(expiry)
            .ok()
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
    }
}

fn print(hub: &HubArgs, minted: &Minted) -> Result<(), Failure> {
    match hub.output {
        Output::Table => emit(&minted.shared_access_signature),
        Output::Json => emit(&super::output::json(minted)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ferrohub_auth::SasToken;

    use super::*;

    const KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";

    #[test]
    fn own_policy_needs_a_policy_string() {
        let owner = ConnectionString::policy("localhost:8443", "iothubowner", KEY);
        let (name, key) = own_policy(&owner).expect("policy");
        assert_eq!(name, "iothubowner");
        assert_eq!(key, SymmetricKey::from_base64(KEY).expect("key"));

        let device = ConnectionString::device("localhost", "d1", None, KEY);
        assert!(matches!(own_policy(&device), Err(Failure::Usage(_))));
    }

    #[test]
    fn signed_tokens_verify() {
        let key = SymmetricKey::from_base64(KEY).expect("key");
        let m = sign("localhost/devices/d1", &key, 60, Some("device"));
        let t = SasToken::parse(&m.shared_access_signature).expect("parses");
        assert_eq!(t.resource_raw(), "localhost%2Fdevices%2Fd1");
        assert_eq!(t.key_name(), Some("device"));
        assert_eq!(t.expiry(), m.expiry);
        assert!(t.signed_by(&key));
        assert!(m.expires_at.as_deref().is_some_and(|s| s.ends_with('Z')));
        let json = serde_json::to_value(&m).expect("json");
        assert_eq!(json["resourceUri"], "localhost/devices/d1");
        assert_eq!(json["keyName"], "device");
    }
}
