//! The identity fields of an Azure IoT Hub CONNECT: the client id and the user name.

use std::collections::BTreeMap;

use crate::topic::percent;

/// Why a CONNECT client id is not `{deviceId}` or `{deviceId}/{moduleId}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientIdError {
    /// The device part is empty (an empty client id, or one starting with `/`).
    #[error("the client id has no device id")]
    EmptyDeviceId,
    /// A `/` is followed by nothing.
    #[error("the client id has an empty module id")]
    EmptyModuleId,
    /// More than one `/`.
    #[error("the client id has more than two segments")]
    TooManySegments,
}

/// Why a CONNECT user name is not `{host}/{clientId}/…`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsernameError {
    /// Nothing before the first `/`.
    #[error("the user name has no host name")]
    MissingHost,
    /// Nothing after the host name.
    #[error("the user name has no client id")]
    MissingClientId,
}

/// A parsed client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientId<'a> {
    /// The device id.
    pub device_id: &'a str,
    /// The module id, for module identities.
    pub module_id: Option<&'a str>,
}

/// A parsed user name: `{host}/{clientId}/?api-version=…&DeviceClientType=…[&model-id=…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username<'a> {
    /// The hub host name the device was configured with (not necessarily the one it dialled).
    pub host: &'a str,
    /// The client id as written (`{deviceId}` or `{deviceId}/{moduleId}`), not decoded.
    pub client_id: &'a str,
    /// The query parameters, percent-decoded. The first occurrence of a key wins; a key without
    /// `=` maps to the empty string.
    pub params: BTreeMap<String, String>,
}

// === impl ClientId ===

impl<'a> ClientId<'a> {
    /// Parses `{deviceId}` or `{deviceId}/{moduleId}`. The ids are not checked against the
    /// registry's character rules.
    pub fn parse(client_id: &'a str) -> Result<Self, ClientIdError> {
        let (device_id, module_id) = match client_id.split_once('/') {
            Some((_, m)) if m.contains('/') => return Err(ClientIdError::TooManySegments),
            Some((_, "")) => return Err(ClientIdError::EmptyModuleId),
            Some((d, m)) => (d, Some(m)),
            None => (client_id, None),
        };
        if device_id.is_empty() {
            return Err(ClientIdError::EmptyDeviceId);
        }
        Ok(Self {
            device_id,
            module_id,
        })
    }
}

// === impl Username ===

impl<'a> Username<'a> {
    /// Parses a user name, tolerating the variants seen in SDKs and docs:
    ///
    /// * `{host}/{clientId}/?{query}` (all current SDKs), also without the `/` before `?`;
    /// * `{host}/{clientId}/api-version=…` (old docs, no `?`);
    /// * `{host}/{clientId}` (no query at all).
    ///
    /// Escapes in the query may use either hex case; a malformed escape is kept as written.
    /// Unknown parameters are kept in `params` for the caller to ignore.
    pub fn parse(username: &'a str) -> Result<Self, UsernameError> {
        let (path, query) = match username.split_once('?') {
            Some((path, query)) => (path, query),
            None => match username.find("/api-version=") {
                Some(at) => (&username[..at], &username[at + 1..]),
                None => (username, ""),
            },
        };
        let path = path.strip_suffix('/').unwrap_or(path);
        let (host, client_id) = path.split_once('/').unwrap_or((path, ""));
        if host.is_empty() {
            return Err(UsernameError::MissingHost);
        }
        if client_id.is_empty() {
            return Err(UsernameError::MissingClientId);
        }
        let mut params = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params
                .entry(percent::decode_lenient(k))
                .or_insert_with(|| percent::decode_lenient(v));
        }
        Ok(Self {
            host,
            client_id,
            params,
        })
    }

    /// The `api-version` parameter.
    pub fn api_version(&self) -> Option<&str> {
        self.params.get("api-version").map(String::as_str)
    }

    /// The Plug and Play model id: `model-id`, or the older `digital-twin-model-id`.
    pub fn model_id(&self) -> Option<&str> {
        self.params
            .get("model-id")
            .or_else(|| self.params.get("digital-twin-model-id"))
            .map(String::as_str)
    }

    /// The `DeviceClientType` parameter (the SDK's user agent).
    pub fn device_client_type(&self) -> Option<&str> {
        self.params.get("DeviceClientType").map(String::as_str)
    }
}
