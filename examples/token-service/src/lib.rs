//! A token service for Ferrohub: the "custom device authentication" pattern of Azure IoT Hub.
//!
//! Devices authenticate to this service with whatever scheme the fleet already has — here, a
//! per-device API key whose SHA-256 is kept in a JSON file — and receive a short-lived SAS token
//! scoped to themselves (`sr={hub}/devices/{id}`), signed with a shared access policy that has
//! DeviceConnect (the hub's built-in `device` policy). The device connects to Ferrohub with that
//! token as its MQTT password or HTTPS `Authorization` header.
//!
//! The hub still decides: a disabled or deleted device is refused even with a valid token, and
//! a connection is closed when its token expires (plus Azure's 5-minute skew).

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use ferrohub_auth::SymmetricKey;
use ferrohub_types::DeviceId;
use serde::{Deserialize, Serialize};

/// A clock, in seconds since the Unix epoch, so tests can mint tokens for any time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The service's settings and device credentials.
pub struct TokenService {
    /// The hub's host name, as devices put it in their tokens (`localhost`).
    pub hub_host: String,
    /// The policy that signs tokens; it must have DeviceConnect.
    pub policy_name: String,
    /// That policy's key.
    pub policy_key: SymmetricKey,
    /// SHA-256 of each device's API key.
    pub api_key_hashes: HashMap<String, Vec<u8>>,
    /// How long tokens live, in seconds.
    pub ttl_secs: u64,
    /// The current time.
    pub clock: Clock,
}

/// A token for a device.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    /// `SharedAccessSignature sr=…&sig=…&se=…&skn=…`.
    pub sas_token: String,
    /// When it expires, seconds since the Unix epoch.
    pub expires_on: u64,
}

/// SHA-256 of an API key, hex, as the keys file stores it.
pub fn hash_api_key(key: &str) -> String {
    digest::digest(&digest::SHA256, key.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads a keys file: `{"deviceId": "<sha256 hex of its API key>", …}`.
pub fn parse_keys_file(text: &str) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    let raw: HashMap<String, String> = serde_json::from_str(text)?;
    let mut out = HashMap::new();
    for (device, hex) in raw {
        DeviceId::new(device.clone())?;
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| anyhow::anyhow!("the key hash of {device} is not 64 hex digits"))?;
        out.insert(device, bytes);
    }
    Ok(out)
}

/// The HTTP API: `POST /devices/{id}/token` with `Authorization: ApiKey <key>`.
pub fn router(service: Arc<TokenService>) -> Router {
    Router::new()
        .route("/devices/{id}/token", post(issue))
        .with_state(service)
}

async fn issue(
    State(svc): State<Arc<TokenService>>,
    Path(device): Path<String>,
    headers: HeaderMap,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("ApiKey "));
    let (Some(key), Some(expected)) = (presented, svc.api_key_hashes.get(&device)) else {
        return (
            StatusCode::UNAUTHORIZED,
            "unknown device or missing API key",
        )
            .into_response();
    };
    let hash = digest::digest(&digest::SHA256, key.as_bytes());
    if verify_slices_are_equal(hash.as_ref(), expected).is_err() {
        return (StatusCode::UNAUTHORIZED, "wrong API key").into_response();
    }
    let expires_on = (svc.clock)().saturating_add(svc.ttl_secs);
    let sas_token = ferrohub_auth::mint(
        &format!("{}/devices/{device}", svc.hub_host),
        &svc.policy_key,
        expires_on,
        Some(&svc.policy_name),
    );
    tracing::info!(%device, expires_on, "issued a device token");
    Json(TokenResponse {
        sas_token,
        expires_on,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_file_round_trip() {
        let text = format!(r#"{{"d1": "{}"}}"#, hash_api_key("k"));
        let keys = parse_keys_file(&text).expect("valid");
        assert_eq!(keys["d1"].len(), 32);
        assert!(parse_keys_file(r#"{"d1": "abc"}"#).is_err(), "short hash");
        assert!(
            parse_keys_file(r#"{"bad id": "00"}"#).is_err(),
            "invalid device id"
        );
        assert_eq!(
            hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
