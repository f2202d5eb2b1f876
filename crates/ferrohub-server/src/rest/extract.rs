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

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use ferrohub_types::{DeviceId, ErrorCode, ModuleId};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Reads the body of `req` as JSON: malformed JSON is 400004 ArgumentInvalid, an oversized
/// body 413001 MessageTooLarge.
pub(crate) async fn json<T: DeserializeOwned>(req: Request) -> Result<T, ApiError> {
    let AzureJson(value) = AzureJson::from_request(req, &()).await?;
    Ok(value)
}

/// Reads the body of `req` as a JSON object (an identity, a job request); see [`json`].
pub(crate) async fn json_object<T: DeserializeOwned>(req: Request) -> Result<T, ApiError> {
    let AzureJsonObject(value) = AzureJsonObject::from_request(req, &()).await?;
    Ok(value)
}

/// Reads the body of `req` as bytes; an oversized body is 413001 MessageTooLarge.
pub(crate) async fn bytes(req: Request) -> Result<Bytes, ApiError> {
    body_bytes(req, &()).await
}

/// A JSON request body; malformed JSON is 400004 ArgumentInvalid, an oversized body 413001.
struct AzureJson<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AzureJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(AzureJson)
    }
}

/// A JSON object request body (an identity). serde would also read a struct from an array, so
/// anything but an object is refused first.
struct AzureJsonObject<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AzureJsonObject<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        parse_json_object(&bytes).map(AzureJsonObject)
    }
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

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state)
        .await
        .map_err(|e: BytesRejection| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::MessageTooLarge, "The request body is too large.")
            } else {
                ApiError::invalid(format!("The request body could not be read: {e}"))
            }
        })
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
