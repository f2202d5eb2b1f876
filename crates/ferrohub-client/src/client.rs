//! [`HubClient`]: the service REST API (identity registry, statistics, twins and methods) over
//! HTTPS.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrohub_api::{
    API_VERSION, BulkRegistryOperationResult, Device, ERROR_CODE_HEADER, ExportImportDevice,
    Module, RegistryStatistics, ServiceStatistics,
};
use ferrohub_auth::{ConnectionString, SymmetricKey, mint};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, ETAG, HeaderMap, IF_MATCH};
use reqwest::{Certificate, Method};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ClientError;

/// How long each minted token is valid, in seconds (the SDKs' default of one hour).
pub const TOKEN_TTL_SECS: u64 = 3600;

/// A cached token is replaced once fewer than this many seconds of its life remain.
pub const TOKEN_RENEW_MARGIN_SECS: u64 = 900;

/// How long to wait for a TCP and TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for a whole request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The content type of every JSON request body, as the SDKs send it.
const JSON_REQUEST_TYPE: &str = "application/json; charset=utf-8";

/// Characters escaped in a path segment: everything except `A-Z a-z 0-9 - _ . ~`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A client of one hub's service REST API, authenticated as a shared access policy.
///
/// Every request carries `api-version=2021-04-12` and an `Authorization: SharedAccessSignature`
/// header scoped to the hub (`sr` = the connection string's `HostName`, port included, as the
/// SDKs do). The token is cached and minted again before it expires. Cloning is cheap and clones
/// share the connection pool and the token.
#[derive(Clone)]
pub struct HubClient {
    http: reqwest::Client,
    base_url: String,
    credentials: Arc<Credentials>,
}

struct Credentials {
    host_name: String,
    key_name: String,
    key: SymmetricKey,
    cached: Mutex<Option<CachedToken>>,
}

#[derive(Clone)]
struct CachedToken {
    token: String,
    expiry: u64,
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("base_url", &self.base_url)
            .field("policy", &self.credentials.key_name)
            .finish_non_exhaustive()
    }
}

/// A response, read whole.
pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn into_error(self) -> ClientError {
        let code = self
            .headers
            .get(ERROR_CODE_HEADER)
            .and_then(|v| v.to_str().ok());
        ClientError::from_response(self.status, code, &self.body)
    }

    /// The body as `T` on success, else the hub's error.
    pub(crate) fn json<T: DeserializeOwned>(self) -> Result<T, ClientError> {
        if !self.is_success() {
            return Err(self.into_error());
        }
        serde_json::from_slice(&self.body).map_err(ClientError::Decode)
    }

    /// A response header's value, when it is text.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The `ETag` response header without quotes or a weak marker.
    pub(crate) fn etag(&self) -> Option<String> {
        let raw = self.headers.get(ETAG)?.to_str().ok()?;
        let unquoted = unquote_etag(raw);
        (!unquoted.is_empty()).then(|| unquoted.to_owned())
    }
}

impl HubClient {
    /// A client for the hub a shared access policy connection string names
    /// (`HostName=…;SharedAccessKeyName=…;SharedAccessKey=…`). `HostName` may carry a port.
    ///
    /// With `ca_pem`, the certificates in it are trusted in addition to the system's roots (a
    /// development hub's own CA, say).
    pub fn new(conn: &ConnectionString, ca_pem: Option<&[u8]>) -> Result<HubClient, ClientError> {
        let (host_name, key_name, key) = policy_credentials(conn)?;
        let base_url = format!("https://{host_name}");
        let parsed = reqwest::Url::parse(&base_url).map_err(|_| {
            ClientError::InvalidConnectionString(format!(
                "HostName {host_name:?} is not a valid host name"
            ))
        })?;
        if parsed.path() != "/" || parsed.query().is_some() || !parsed.username().is_empty() {
            return Err(ClientError::InvalidConnectionString(format!(
                "HostName {host_name:?} must be a host name with an optional port"
            )));
        }

        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("ferrohub-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        if let Some(pem) = ca_pem {
            let certs = Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError::InvalidCertificate(e.to_string()))?;
            if certs.is_empty() {
                return Err(ClientError::InvalidCertificate(
                    "the PEM text holds no certificate".into(),
                ));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(ClientError::Transport)?;

        Ok(HubClient {
            http,
            base_url,
            credentials: Arc::new(Credentials {
                host_name,
                key_name,
                key,
                cached: Mutex::new(None),
            }),
        })
    }

    /// The hub's host name as the connection string gives it (with any port).
    pub fn host_name(&self) -> &str {
        &self.credentials.host_name
    }

    /// The shared access policy the client authenticates as.
    pub fn policy_name(&self) -> &str {
        &self.credentials.key_name
    }

    /// The base URL requests go to, `https://{HostName}`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    // ---- devices -------------------------------------------------------------------------

    /// Creates a device (`PUT /devices/{id}` without `If-Match`). Fails with
    /// `DeviceAlreadyExists` if the id is taken. Empty or absent keys are generated by the hub.
    pub async fn create_device(&self, device: &Device) -> Result<Device, ClientError> {
        let path = device_path(&device.device_id)?;
        let reply = self
            .send(Method::PUT, &path, None, None, Some(device))
            .await?;
        with_etag(reply, |d: &mut Device| &mut d.etag)
    }

    /// Replaces a device's writable fields (`PUT /devices/{id}` with `If-Match`): the quoted
    /// `etag`, or `"*"` (any version) when `None`.
    pub async fn update_device(
        &self,
        device: &Device,
        etag: Option<&str>,
    ) -> Result<Device, ClientError> {
        let path = device_path(&device.device_id)?;
        let reply = self
            .send(Method::PUT, &path, None, Some(if_match(etag)), Some(device))
            .await?;
        with_etag(reply, |d: &mut Device| &mut d.etag)
    }

    /// Reads a device (`GET /devices/{id}`).
    pub async fn device(&self, device_id: &str) -> Result<Device, ClientError> {
        let path = device_path(device_id)?;
        let reply = self
            .send::<()>(Method::GET, &path, None, None, None)
            .await?;
        with_etag(reply, |d: &mut Device| &mut d.etag)
    }

    /// Deletes a device (`DELETE /devices/{id}`) if its ETag is `etag`, or whatever its ETag
    /// when `None`.
    pub async fn delete_device(
        &self,
        device_id: &str,
        etag: Option<&str>,
    ) -> Result<(), ClientError> {
        let path = device_path(device_id)?;
        let reply = self
            .send::<()>(Method::DELETE, &path, None, Some(if_match(etag)), None)
            .await?;
        expect_empty(reply)
    }

    /// Lists up to `top` devices (`GET /devices?top=N`; the hub caps and defaults it to 1000).
    pub async fn devices(&self, top: Option<u32>) -> Result<Vec<Device>, ClientError> {
        let query = top.map(|n| format!("top={n}"));
        let reply = self
            .send::<()>(Method::GET, "/devices", query.as_deref(), None, None)
            .await?;
        reply.json()
    }

    /// Creates, updates or deletes up to 100 identities at once (`POST /devices`).
    ///
    /// The hub answers 200 when every record succeeded and 400 when some failed; both carry the
    /// per-record outcome, returned here as `Ok`. Only a request the hub refuses as a whole is
    /// an `Err`.
    pub async fn bulk(
        &self,
        records: &[ExportImportDevice],
    ) -> Result<BulkRegistryOperationResult, ClientError> {
        let reply = self
            .send(Method::POST, "/devices", None, None, Some(records))
            .await?;
        if reply.is_success() {
            return reply.json();
        }
        if reply.status == 400
            && let Some(result) = bulk_result(&reply.body)
        {
            return Ok(result);
        }
        Err(reply.into_error())
    }

    /// Device counts (`GET /statistics/devices`).
    pub async fn registry_statistics(&self) -> Result<RegistryStatistics, ClientError> {
        self.send::<()>(Method::GET, "/statistics/devices", None, None, None)
            .await?
            .json()
    }

    /// Connected-device count (`GET /statistics/service`).
    pub async fn service_statistics(&self) -> Result<ServiceStatistics, ClientError> {
        self.send::<()>(Method::GET, "/statistics/service", None, None, None)
            .await?
            .json()
    }

    // ---- modules -------------------------------------------------------------------------

    /// Creates a module (`PUT /devices/{id}/modules/{mid}` without `If-Match`).
    pub async fn create_module(&self, module: &Module) -> Result<Module, ClientError> {
        let path = module_path(&module.device_id, &module.module_id)?;
        let reply = self
            .send(Method::PUT, &path, None, None, Some(module))
            .await?;
        with_etag(reply, |m: &mut Module| &mut m.etag)
    }

    /// Replaces a module's writable fields, with `If-Match` the quoted `etag` or `"*"`.
    pub async fn update_module(
        &self,
        module: &Module,
        etag: Option<&str>,
    ) -> Result<Module, ClientError> {
        let path = module_path(&module.device_id, &module.module_id)?;
        let reply = self
            .send(Method::PUT, &path, None, Some(if_match(etag)), Some(module))
            .await?;
        with_etag(reply, |m: &mut Module| &mut m.etag)
    }

    /// Reads a module.
    pub async fn module(&self, device_id: &str, module_id: &str) -> Result<Module, ClientError> {
        let path = module_path(device_id, module_id)?;
        let reply = self
            .send::<()>(Method::GET, &path, None, None, None)
            .await?;
        with_etag(reply, |m: &mut Module| &mut m.etag)
    }

    /// Lists a device's modules (`GET /devices/{id}/modules`).
    pub async fn modules(&self, device_id: &str) -> Result<Vec<Module>, ClientError> {
        let path = format!("{}/modules", device_path(device_id)?);
        self.send::<()>(Method::GET, &path, None, None, None)
            .await?
            .json()
    }

    /// Deletes a module if its ETag is `etag`, or whatever its ETag when `None`.
    pub async fn delete_module(
        &self,
        device_id: &str,
        module_id: &str,
        etag: Option<&str>,
    ) -> Result<(), ClientError> {
        let path = module_path(device_id, module_id)?;
        let reply = self
            .send::<()>(Method::DELETE, &path, None, Some(if_match(etag)), None)
            .await?;
        expect_empty(reply)
    }

    // ---- plumbing ------------------------------------------------------------------------

    /// The `Authorization` value: the cached token, or a fresh one when it is near expiry.
    fn authorization(&self) -> String {
        let now = unix_now();
        let creds = &*self.credentials;
        let mut cached = creds.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = cached.as_ref()
            && !needs_renewal(t.expiry, now)
        {
            return t.token.clone();
        }
        let expiry = now.saturating_add(TOKEN_TTL_SECS);
        let token = mint(&creds.host_name, &creds.key, expiry, Some(&creds.key_name));
        *cached = Some(CachedToken {
            token: token.clone(),
            expiry,
        });
        token
    }

    pub(crate) async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: Option<&str>,
        if_match: Option<String>,
        body: Option<&B>,
    ) -> Result<Reply, ClientError> {
        self.request(method, path, query, if_match, body, None)
            .await
    }

    /// [`HubClient::send`] of a request that may take up to `wait` (a direct method call waits
    /// for the device), whatever the client's usual request timeout.
    pub(crate) async fn send_within<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        wait: Duration,
    ) -> Result<Reply, ClientError> {
        self.request(method, path, None, None, body, Some(wait))
            .await
    }

    /// [`HubClient::send`] of a JSON body with extra request headers.
    pub(crate) async fn send_with_headers<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: &B,
    ) -> Result<Reply, ClientError> {
        self.request_with(method, path, None, None, Some(body), None, headers)
            .await
    }

    /// A `GET` with extra request headers (paging headers).
    pub(crate) async fn get_with_headers(
        &self,
        path: &str,
        query: Option<&str>,
        headers: &[(&str, String)],
    ) -> Result<Reply, ClientError> {
        self.request_with::<()>(Method::GET, path, query, None, None, None, headers)
            .await
    }

    async fn request<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: Option<&str>,
        if_match: Option<String>,
        body: Option<&B>,
        timeout: Option<Duration>,
    ) -> Result<Reply, ClientError> {
        self.request_with(method, path, query, if_match, body, timeout, &[])
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn request_with<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: Option<&str>,
        if_match: Option<String>,
        body: Option<&B>,
        timeout: Option<Duration>,
        headers: &[(&str, String)],
    ) -> Result<Reply, ClientError> {
        let url = request_url(&self.base_url, path, query);
        let mut req = self
            .http
            .request(method, url)
            .header(AUTHORIZATION, self.authorization())
            .header(ACCEPT, "application/json");
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        if let Some(wait) = timeout {
            req = req.timeout(wait);
        }
        if let Some(tag) = if_match {
            req = req.header(IF_MATCH, tag);
        }
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body).map_err(ClientError::Decode)?;
            req = req.header(CONTENT_TYPE, JSON_REQUEST_TYPE).body(bytes);
        }
        let resp = req.send().await.map_err(ClientError::Transport)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(ClientError::Transport)?.to_vec();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

impl HubClient {
    /// Sends `body` as is, with extra `headers` (message properties).
    pub(crate) async fn send_raw(
        &self,
        method: Method,
        path: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<Reply, ClientError> {
        let url = request_url(&self.base_url, path, None);
        let mut req = self
            .http
            .request(method, url)
            .header(AUTHORIZATION, self.authorization())
            .header(ACCEPT, "application/json");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(ClientError::Transport)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(ClientError::Transport)?.to_vec();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

/// Checks that `conn` is a policy connection string and takes its host, policy and key.
fn policy_credentials(
    conn: &ConnectionString,
) -> Result<(String, String, SymmetricKey), ClientError> {
    if conn.device_id.is_some() {
        return Err(ClientError::InvalidConnectionString(
            "it names a device; the service API needs a shared access policy's connection \
             string (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…)"
                .into(),
        ));
    }
    let Some(key_name) = conn.shared_access_key_name.clone() else {
        return Err(ClientError::InvalidConnectionString(
            "it has no SharedAccessKeyName; the service API needs a shared access policy's \
             connection string"
                .into(),
        ));
    };
    let Some(key_text) = conn.shared_access_key.as_deref() else {
        return Err(ClientError::InvalidConnectionString(
            "it has no SharedAccessKey".into(),
        ));
    };
    let key = SymmetricKey::from_base64(key_text)
        .map_err(|e| ClientError::InvalidConnectionString(format!("SharedAccessKey: {e}")))?;
    if conn.host_name.is_empty() {
        return Err(ClientError::InvalidConnectionString(
            "it has an empty HostName".into(),
        ));
    }
    Ok((conn.host_name.clone(), key_name, key))
}

/// The body of a 400 answer to a bulk request, when it is a bulk result rather than an error.
fn bulk_result(body: &[u8]) -> Option<BulkRegistryOperationResult> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("isSuccessful")?;
    serde_json::from_value(value).ok()
}

/// Decodes an identity and fills its ETag from the response header when the body has none.
fn with_etag<T: DeserializeOwned>(
    reply: Reply,
    etag_of: impl FnOnce(&mut T) -> &mut Option<String>,
) -> Result<T, ClientError> {
    let header = reply.etag();
    let mut value: T = reply.json()?;
    let slot = etag_of(&mut value);
    if slot.is_none() {
        *slot = header;
    }
    Ok(value)
}

pub(crate) fn expect_empty(reply: Reply) -> Result<(), ClientError> {
    if reply.is_success() {
        Ok(())
    } else {
        Err(reply.into_error())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether a token expiring at `expiry` should be replaced at `now`.
fn needs_renewal(expiry: u64, now: u64) -> bool {
    expiry <= now.saturating_add(TOKEN_RENEW_MARGIN_SECS)
}

/// The `If-Match` value: the ETag in double quotes (kept as is if already quoted), or `"*"`.
pub(crate) fn if_match(etag: Option<&str>) -> String {
    match etag {
        None => "\"*\"".to_owned(),
        Some(t) if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') => t.to_owned(),
        Some(t) => format!("\"{t}\""),
    }
}

/// An ETag header value without its weak marker and quotes.
fn unquote_etag(raw: &str) -> &str {
    let t = raw.trim();
    let t = t.strip_prefix("W/").unwrap_or(t);
    t.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(t)
}

/// One percent-encoded path segment holding an id.
pub(crate) fn segment(kind: &str, id: &str) -> Result<String, ClientError> {
    if id.is_empty() {
        return Err(ClientError::InvalidArgument(format!("the {kind} is empty")));
    }
    if id == "." || id == ".." {
        return Err(ClientError::InvalidArgument(format!(
            "the {kind} {id:?} cannot be carried in a URL path"
        )));
    }
    Ok(utf8_percent_encode(id, SEGMENT).to_string())
}

pub(crate) fn device_path(device_id: &str) -> Result<String, ClientError> {
    Ok(format!("/devices/{}", segment("device id", device_id)?))
}

fn module_path(device_id: &str, module_id: &str) -> Result<String, ClientError> {
    Ok(format!(
        "{}/modules/{}",
        device_path(device_id)?,
        segment("module id", module_id)?
    ))
}

/// A query-string value, percent-encoded.
pub(crate) fn query_value(v: &str) -> String {
    utf8_percent_encode(v, SEGMENT).to_string()
}

fn request_url(base: &str, path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{base}{path}?{q}&api-version={API_VERSION}"),
        None => format!("{base}{path}?api-version={API_VERSION}"),
    }
}

#[cfg(test)]
mod tests {
    use ferrohub_auth::SasToken;

    use super::*;

    const KEY: &str = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=";

    fn owner(host: &str) -> ConnectionString {
        ConnectionString::policy(host, "iothubowner", KEY)
    }

    #[test]
    fn new_accepts_policy_strings_with_ports() {
        let c = HubClient::new(&owner("localhost:8443"), None).expect("client");
        assert_eq!(c.base_url(), "https://localhost:8443");
        assert_eq!(c.host_name(), "localhost:8443");
        assert_eq!(c.policy_name(), "iothubowner");
    }

    #[test]
    fn new_rejects_device_strings_and_bad_hosts() {
        let dev = ConnectionString::device("h", "d1", None, KEY);
        assert!(matches!(
            HubClient::new(&dev, None),
            Err(ClientError::InvalidConnectionString(_))
        ));
        let bad_key = ConnectionString::policy("h", "p", "not base64!");
        assert!(matches!(
            HubClient::new(&bad_key, None),
            Err(ClientError::InvalidConnectionString(_))
        ));
        for host in ["a/b", "a b", "", "h?x=1"] {
            assert!(
                matches!(
                    HubClient::new(&owner(host), None),
                    Err(ClientError::InvalidConnectionString(_))
                ),
                "{host:?} should be refused"
            );
        }
    }

    #[test]
    fn new_rejects_pem_without_certificates() {
        assert!(matches!(
            HubClient::new(&owner("h"), Some(b"hello")),
            Err(ClientError::InvalidCertificate(_))
        ));
    }

    #[test]
    fn token_is_hub_scoped_cached_and_signed_with_the_policy_key() {
        let c = HubClient::new(&owner("localhost:8443"), None).expect("client");
        let a = c.authorization();
        let b = c.authorization();
        assert_eq!(a, b, "the token is cached");
        let t = SasToken::parse(&a).expect("token parses");
        assert_eq!(t.resource_raw(), "localhost%3A8443");
        assert_eq!(t.key_name(), Some("iothubowner"));
        let key = SymmetricKey::from_base64(KEY).expect("key");
        assert!(t.signed_by(&key));
        assert!(t.expiry() >= unix_now() + TOKEN_TTL_SECS - 5);
    }

    #[test]
    fn renewal_margin() {
        assert!(!needs_renewal(10_000, 10_000 - TOKEN_RENEW_MARGIN_SECS - 1));
        assert!(needs_renewal(10_000, 10_000 - TOKEN_RENEW_MARGIN_SECS));
        assert!(needs_renewal(10_000, 20_000));
        assert!(needs_renewal(0, u64::MAX));
    }

    #[test]
    fn if_match_is_quoted() {
        assert_eq!(if_match(None), "\"*\"");
        assert_eq!(if_match(Some("MA==")), "\"MA==\"");
        assert_eq!(if_match(Some("\"MA==\"")), "\"MA==\"");
        assert_eq!(if_match(Some("*")), "\"*\"");
        assert_eq!(if_match(Some("\"")), "\"\"\"");
    }

    #[test]
    fn etag_header_is_unquoted() {
        assert_eq!(unquote_etag("\"MA==\""), "MA==");
        assert_eq!(unquote_etag("W/\"MQ==\""), "MQ==");
        assert_eq!(unquote_etag("MQ=="), "MQ==");
    }

    #[test]
    fn ids_are_percent_encoded() {
        assert_eq!(device_path("dev-1.a_b").expect("ok"), "/devices/dev-1.a_b");
        assert_eq!(
            device_path("a%b?c#d/e f").expect("ok"),
            "/devices/a%25b%3Fc%23d%2Fe%20f"
        );
        assert_eq!(
            module_path("d:1", "m=2").expect("ok"),
            "/devices/d%3A1/modules/m%3D2"
        );
        assert!(device_path("").is_err());
        assert!(device_path("..").is_err());
        assert!(module_path("d", ".").is_err());
    }

    #[test]
    fn urls_carry_the_api_version() {
        assert_eq!(
            request_url("https://h:1", "/devices", Some("top=5")),
            "https://h:1/devices?top=5&api-version=2021-04-12"
        );
        assert_eq!(
            request_url("https://h", "/statistics/devices", None),
            "https://h/statistics/devices?api-version=2021-04-12"
        );
    }

    #[test]
    fn bulk_400_is_a_result_only_with_is_successful() {
        let r = bulk_result(
            br#"{"isSuccessful":false,"errors":[{"deviceId":"d","errorCode":"DeviceAlreadyExists","errorStatus":"x"}],"warnings":[]}"#,
        )
        .expect("bulk result");
        assert!(!r.is_successful);
        assert_eq!(r.errors[0].error_code, "DeviceAlreadyExists");
        assert!(bulk_result(br#"{"Message":"ErrorCode:ArgumentInvalid;x"}"#).is_none());
        assert!(bulk_result(b"not json").is_none());
    }
}
