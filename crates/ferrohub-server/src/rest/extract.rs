//! Request extractors and body readers whose failures are Azure errors rather than axum's
//! plain-text ones.
//!
//! # Authenticate first, then read the body
//!
//! A handler with a body takes the whole [`Request`] last and reads the body with [`json`],
//! [`json_object`] or [`bytes`] only after it has authorized the caller: an anonymous or
//! unauthorized caller gets 401 whatever it sends, never a 400 or 413 that would tell it how the
//! body is judged (and the hub never spends time reading or parsing bodies of callers it
//! refuses). The body limit (`[https] max_request_body_bytes`) applies when it is read.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{Version, header};
use bytes::BytesMut;
use ferrohub_types::{DeviceId, ErrorCode, ModuleId};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The largest request body the router accepts (`[https] max_request_body_bytes`), as a request
/// extension the body readers find.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub(crate) usize);

/// The limit when a request carries no [`BodyLimit`] (tests of single handlers).
const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// Most bytes read and thrown away after a body went over the limit, and for how long.
///
/// A client still sending when the answer comes sees a broken connection (HTTP/1.1) or a reset
/// stream (HTTP/2) instead of the 413, and many (curl among them) report only that. So the hub
/// reads on until the client has sent everything, within these bounds; a larger or slower
/// upload is cut off.
const DRAIN_BYTES: usize = 64 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Reads the body of `req` as JSON: malformed JSON is 400004 ArgumentInvalid, an oversized
/// body 413001 MessageTooLarge.
pub(crate) async fn json<T: DeserializeOwned>(req: Request) -> Result<T, ApiError> {
    parse_json(&bytes(req).await?)
}

/// Reads the body of `req` as a JSON object (an identity, a job request); see [`json`].
pub(crate) async fn json_object<T: DeserializeOwned>(req: Request) -> Result<T, ApiError> {
    parse_json_object(&bytes(req).await?)
}

/// Reads the body of `req`, up to its [`BodyLimit`]. Over the limit it is 413001
/// MessageTooLarge, answered the same way over HTTP/1.1 and HTTP/2: at once when the client
/// waits for `100 Continue` before sending a body declared too large (it then never sends it),
/// otherwise after the rest of the body has been read and dropped (see [`DRAIN_BYTES`]).
pub(crate) async fn bytes(req: Request) -> Result<Bytes, ApiError> {
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .map_or(DEFAULT_BODY_LIMIT, |l| l.0);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let waits_for_continue = req.version() == Version::HTTP_11
        && req
            .headers()
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let too_large = || {
        ApiError::new(
            ErrorCode::MessageTooLarge,
            format!("The request body is larger than {limit} bytes."),
        )
    };
    if waits_for_continue && declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut stream = req.into_body().into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::invalid(format!("The request body could not be read: {e}")))?;
        if buf.len() + chunk.len() > limit {
            let drain = async {
                let mut drained = 0usize;
                while let Some(Ok(chunk)) = stream.next().await {
                    drained += chunk.len();
                    if drained > DRAIN_BYTES {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A JSON body as `T`; malformed JSON is 400004 ArgumentInvalid.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("The request body is not valid: {e}")))
}

/// A JSON object body as `T`. serde would also read a struct from an array, so anything but an
/// object is refused first.
pub(crate) fn parse_json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid("The request body must be a JSON object."));
    }
    parse_json(bytes)
}

fn path_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::invalid(format!("The request path is not valid: {e}"))
}

/// `{id}` of `/devices/{id}`, validated.
pub(crate) struct DevicePath(pub(crate) DeviceId);

impl<S: Send + Sync> FromRequestParts<S> for DevicePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(path_error)?;
        DeviceId::new(id)
            .map(DevicePath)
            .map_err(|e| ApiError::invalid(e.to_string()))
    }
}

/// `{id}` and `{mid}` of `/devices/{id}/modules/{mid}`, validated.
pub(crate) struct ModulePath(pub(crate) DeviceId, pub(crate) ModuleId);

impl<S: Send + Sync> FromRequestParts<S> for ModulePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((id, mid)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(path_error)?;
        let device = DeviceId::new(id).map_err(|e| ApiError::invalid(e.to_string()))?;
        let module = ModuleId::new(mid).map_err(|e| ApiError::invalid(e.to_string()))?;
        Ok(ModulePath(device, module))
    }
}
