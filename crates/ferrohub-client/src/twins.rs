//! Twins and direct methods: `GET/PATCH/PUT /twins/{id}[/modules/{mid}]` and
//! `POST /twins/{id}[/modules/{mid}]/methods`.

use std::time::Duration;

use ferrohub_api::{CloudToDeviceMethod, CloudToDeviceMethodResult, Twin};
use reqwest::Method;

use crate::ClientError;
use crate::client::{HubClient, if_match, segment};

/// How much longer than the method's own timeouts the client waits for the hub's answer.
const METHOD_MARGIN: Duration = Duration::from_secs(10);

/// The response timeout of a method call that does not give one (the hub's default).
const DEFAULT_RESPONSE_TIMEOUT_SECS: u32 = 30;

/// `/twins/{id}` or `/twins/{id}/modules/{mid}`.
fn twin_path(device_id: &str, module_id: Option<&str>) -> Result<String, ClientError> {
    let device = segment("device id", device_id)?;
    Ok(match module_id {
        None => format!("/twins/{device}"),
        Some(m) => format!("/twins/{device}/modules/{}", segment("module id", m)?),
    })
}

impl HubClient {
    /// Reads the twin of a device, or of its module `module_id`.
    pub async fn twin(
        &self,
        device_id: &str,
        module_id: Option<&str>,
    ) -> Result<Twin, ClientError> {
        let path = twin_path(device_id, module_id)?;
        self.send::<()>(Method::GET, &path, None, None, None)
            .await?
            .json()
    }

    /// Updates a twin (`PATCH`): `patch.tags` and `patch.properties.desired` are merge patches
    /// (`null` deletes a member). With `etag`, only if it is the twin's current ETag (else
    /// `PreconditionFailed`); `None` sends `If-Match: "*"`. Returns the twin after the update.
    pub async fn update_twin(
        &self,
        device_id: &str,
        module_id: Option<&str>,
        patch: &Twin,
        etag: Option<&str>,
    ) -> Result<Twin, ClientError> {
        let path = twin_path(device_id, module_id)?;
        self.send(
            Method::PATCH,
            &path,
            None,
            Some(if_match(etag)),
            Some(patch),
        )
        .await?
        .json()
    }

    /// Replaces a twin's `tags` and `properties.desired` (`PUT`; those `twin` carries), with
    /// the same `etag` rule as [`HubClient::update_twin`].
    pub async fn replace_twin(
        &self,
        device_id: &str,
        module_id: Option<&str>,
        twin: &Twin,
        etag: Option<&str>,
    ) -> Result<Twin, ClientError> {
        let path = twin_path(device_id, module_id)?;
        self.send(Method::PUT, &path, None, Some(if_match(etag)), Some(twin))
            .await?
            .json()
    }

    /// Invokes a direct method on a device, or on its module `module_id`, and returns the
    /// device's answer. The request waits as long as the call's timeouts allow (plus a margin),
    /// whatever the client's usual request timeout.
    ///
    /// Errors the hub reports: `DeviceNotOnline` (404103: not connected or not subscribed to
    /// methods within the connect timeout), `GatewayTimeout` (504101: no answer within the
    /// response timeout), `DeviceNotFound`, `ModuleNotFound`, `ArgumentInvalid`.
    pub async fn invoke_method(
        &self,
        device_id: &str,
        module_id: Option<&str>,
        call: &CloudToDeviceMethod,
    ) -> Result<CloudToDeviceMethodResult, ClientError> {
        let path = format!("{}/methods", twin_path(device_id, module_id)?);
        let wait = Duration::from_secs(u64::from(
            call.response_timeout_in_seconds
                .unwrap_or(DEFAULT_RESPONSE_TIMEOUT_SECS)
                .saturating_add(call.connect_timeout_in_seconds.unwrap_or(0)),
        )) + METHOD_MARGIN;
        self.send_within(Method::POST, &path, Some(call), wait)
            .await?
            .json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_encode_ids() {
        assert_eq!(twin_path("d 1", None).expect("path"), "/twins/d%201");
        assert_eq!(
            twin_path("d1", Some("$edgeAgent")).expect("path"),
            "/twins/d1/modules/%24edgeAgent"
        );
        assert!(twin_path("", None).is_err());
    }
}
