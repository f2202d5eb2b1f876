//! The registry's domain model: stored identities, the inputs that create and change them, and
//! the results the management operations report.
//!
//! [`Device`] and [`Module`] are what the stores keep. Their serde form (camelCase JSON) is the
//! stored document, close to but not the same as Azure's wire JSON: the server maps these types to
//! Azure's shapes itself (for example it renders a `None` time as `0001-01-01T00:00:00`).
//!
//! Inputs ([`DeviceSpec`], [`ModuleSpec`], [`ImportRecord`]) carry what a `PUT` body or a bulk
//! record carries; the hub-owned fields (generation id, version, connection state, counters) are
//! never taken from them.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use ferrohub_twin::{DesiredPatch, Twin, TwinUpdate};
use ferrohub_types::{DeviceId, ModuleId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name that is not one of an enumeration's values, such as an unknown `importMode`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{value}' is not a valid {kind}")]
pub struct UnknownName {
    /// What was being parsed ("device status", "import mode", ...).
    pub kind: &'static str,
    /// The text that was given.
    pub value: String,
}

fn parse_name<T: Copy>(
    kind: &'static str,
    s: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<T, UnknownName> {
    all.iter()
        .copied()
        .find(|v| name(*v).eq_ignore_ascii_case(s.trim()))
        .ok_or_else(|| UnknownName {
            kind,
            value: s.to_owned(),
        })
}

// === impl DeviceStatus ===

/// Whether a device may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// The device may connect (the default).
    #[default]
    Enabled,
    /// Connections are refused; existing ones are closed.
    Disabled,
}

impl DeviceStatus {
    const ALL: [DeviceStatus; 2] = [DeviceStatus::Enabled, DeviceStatus::Disabled];

    /// Azure's JSON value: `enabled` or `disabled`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Enabled => "enabled",
            DeviceStatus::Disabled => "disabled",
        }
    }
}

impl fmt::Display for DeviceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeviceStatus {
    type Err = UnknownName;

    /// Case-insensitive: the docs' prose says `Enabled`, the JSON says `enabled`.
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        parse_name("device status", s, &Self::ALL, Self::as_str)
    }
}

// === impl ConnectionState ===

/// Whether the identity has a live MQTT or AMQP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum ConnectionState {
    /// No live connection (the default).
    #[default]
    Disconnected,
    /// Connected over MQTT or AMQP.
    Connected,
}

impl ConnectionState {
    /// Azure's JSON value: `Disconnected` or `Connected`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Disconnected => "Disconnected",
            ConnectionState::Connected => "Connected",
        }
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl AuthType ===

/// How an identity authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuthType {
    /// Shared access signatures signed with one of the identity's symmetric keys (the default).
    #[default]
    Sas,
    /// A client certificate whose thumbprint is registered on the identity.
    SelfSigned,
    /// A client certificate issued by a CA the hub trusts.
    CertificateAuthority,
    /// No credentials of its own (modules that authenticate through their device, edge children).
    None,
}

impl AuthType {
    const ALL: [AuthType; 4] = [
        AuthType::Sas,
        AuthType::SelfSigned,
        AuthType::CertificateAuthority,
        AuthType::None,
    ];

    /// Azure's JSON value: `sas`, `selfSigned`, `certificateAuthority` or `none`.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthType::Sas => "sas",
            AuthType::SelfSigned => "selfSigned",
            AuthType::CertificateAuthority => "certificateAuthority",
            AuthType::None => "none",
        }
    }
}

impl fmt::Display for AuthType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuthType {
    type Err = UnknownName;

    /// Case-insensitive.
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        parse_name("authentication type", s, &Self::ALL, Self::as_str)
    }
}

// === Authentication ===

/// An identity's two symmetric keys, base64 (standard alphabet, padded). `Debug` shows only
/// their lengths.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKeys {
    /// The primary key. In an input, empty means "generate one".
    pub primary_key: String,
    /// The secondary key. In an input, empty means "generate one".
    pub secondary_key: String,
}

impl fmt::Debug for SymmetricKeys {
    /// Keys are secrets: they never appear in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SymmetricKeys")
            .field("primary_key_len", &self.primary_key.len())
            .field("secondary_key_len", &self.secondary_key.len())
            .finish()
    }
}

/// The certificate thumbprints of a `selfSigned` identity (40 or 64 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Thumbprints {
    /// The primary thumbprint.
    #[serde(default)]
    pub primary_thumbprint: Option<String>,
    /// The secondary thumbprint.
    #[serde(default)]
    pub secondary_thumbprint: Option<String>,
}

/// An identity's credentials.
///
/// Stored identities are normalized: `symmetric_key` is `Some` exactly when `kind` is
/// [`AuthType::Sas`], and thumbprints are set only for [`AuthType::SelfSigned`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Authentication {
    /// How the identity authenticates.
    #[serde(rename = "type")]
    pub kind: AuthType,
    /// The keys, for [`AuthType::Sas`].
    #[serde(default)]
    pub symmetric_key: Option<SymmetricKeys>,
    /// The thumbprints, for [`AuthType::SelfSigned`].
    #[serde(default)]
    pub x509_thumbprint: X509Thumbprints,
}

impl Authentication {
    /// SAS authentication with the given base64 keys (empty strings ask for generated keys).
    pub fn sas(primary_key: impl Into<String>, secondary_key: impl Into<String>) -> Self {
        Authentication {
            kind: AuthType::Sas,
            symmetric_key: Some(SymmetricKeys {
                primary_key: primary_key.into(),
                secondary_key: secondary_key.into(),
            }),
            x509_thumbprint: X509Thumbprints::default(),
        }
    }

    /// Self-signed X.509 authentication with the given thumbprints.
    pub fn self_signed(primary: impl Into<String>, secondary: Option<String>) -> Self {
        Authentication {
            kind: AuthType::SelfSigned,
            symmetric_key: None,
            x509_thumbprint: X509Thumbprints {
                primary_thumbprint: Some(primary.into()),
                secondary_thumbprint: secondary,
            },
        }
    }
}

// === impl ETag ===

/// An identity's entity tag: base64 of its decimal version counter (`MA==` for version 0).
///
/// Azure's ETags are weak and compared by value; clients send them back quoted in `If-Match`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ETag(String);

impl ETag {
    /// The ETag of `version`.
    pub fn from_version(version: u64) -> Self {
        ETag(STANDARD.encode(version.to_string()))
    }

    /// The ETag as text, unquoted (`MA==`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ETag as an HTTP `ETag` header value: quoted (`"MA=="`).
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }

    /// Whether an `If-Match` value names this ETag. Surrounding whitespace and quotes and a `W/`
    /// prefix are ignored; `*` matches every ETag.
    pub fn matches(&self, if_match: &str) -> bool {
        let v = unquote(if_match);
        v == "*" || v == self.0
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Strips whitespace, a weak-validator prefix `W/` and one pair of surrounding double quotes.
fn unquote(s: &str) -> &str {
    let s = s.trim();
    let s = s
        .strip_prefix("W/")
        .or_else(|| s.strip_prefix("w/"))
        .unwrap_or(s)
        .trim();
    s.strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(s)
}

// === impl IfMatch ===

/// The precondition of an update or delete, from the `If-Match` header or a bulk record's `eTag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: whatever the current version is.
    Any,
    /// Only if the current ETag is this one (unquoted).
    ETag(String),
}

impl IfMatch {
    /// Parses a header value, accepting `*`, `"*"`, `"MA=="`, `MA==` and `W/"MA=="`. Anything else
    /// is taken as an ETag that will simply not match.
    pub fn parse(header: &str) -> Self {
        match unquote(header) {
            "*" => IfMatch::Any,
            etag => IfMatch::ETag(etag.to_owned()),
        }
    }

    /// Whether `etag` satisfies the precondition.
    pub fn matches(&self, etag: &ETag) -> bool {
        match self {
            IfMatch::Any => true,
            IfMatch::ETag(expected) => etag.matches(expected),
        }
    }
}

// === Identities ===

/// A device identity as the registry stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// The device's id; immutable.
    pub device_id: DeviceId,
    /// 18 random decimal digits, new each time a device with this id is created.
    pub generation_id: String,
    /// Incremented by every change; 0 when created.
    pub version: u64,
    /// [`ETag::from_version`] of `version`.
    pub etag: ETag,
    /// Whether the device may connect.
    pub status: DeviceStatus,
    /// Why the status was set (≤ 128 characters).
    #[serde(default)]
    pub status_reason: Option<String>,
    /// When the status last changed; `None` until it does.
    #[serde(default)]
    pub status_updated_time: Option<DateTime<Utc>>,
    /// Whether the device has a live connection.
    #[serde(default)]
    pub connection_state: ConnectionState,
    /// When `connection_state` last changed; `None` until it does.
    #[serde(default)]
    pub connection_state_updated_time: Option<DateTime<Utc>>,
    /// When the device last connected or sent; `None` until it does.
    #[serde(default)]
    pub last_activity_time: Option<DateTime<Utc>>,
    /// Cloud-to-device messages waiting for the device.
    #[serde(default)]
    pub cloud_to_device_message_count: u32,
    /// The device's credentials.
    pub authentication: Authentication,
    /// Whether the device is an IoT Edge device (`capabilities.iotEdge`).
    #[serde(default)]
    pub iot_edge: bool,
    /// The edge scope of the device.
    #[serde(default)]
    pub device_scope: Option<String>,
    /// The scopes of the device's parents.
    #[serde(default)]
    pub parent_scopes: Vec<String>,
}

impl Device {
    /// Whether the device may connect.
    pub fn is_enabled(&self) -> bool {
        self.status == DeviceStatus::Enabled
    }
}

/// A module identity as the registry stores it. A module lives and dies with its device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Module {
    /// The module's device.
    pub device_id: DeviceId,
    /// The module's id within its device.
    pub module_id: ModuleId,
    /// 18 random decimal digits, new each time a module with this id is created.
    pub generation_id: String,
    /// Incremented by every change; 0 when created.
    pub version: u64,
    /// [`ETag::from_version`] of `version`.
    pub etag: ETag,
    /// Who manages the module (`IotEdge` for edge modules).
    #[serde(default)]
    pub managed_by: Option<String>,
    /// Whether the module has a live connection.
    #[serde(default)]
    pub connection_state: ConnectionState,
    /// When `connection_state` last changed; `None` until it does.
    #[serde(default)]
    pub connection_state_updated_time: Option<DateTime<Utc>>,
    /// When the module last connected or sent; `None` until it does.
    #[serde(default)]
    pub last_activity_time: Option<DateTime<Utc>>,
    /// Cloud-to-device messages waiting for the module.
    #[serde(default)]
    pub cloud_to_device_message_count: u32,
    /// The module's credentials.
    pub authentication: Authentication,
}

// === Inputs ===

/// What a create or update of a device carries (a `PUT /devices/{id}` body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// The device's id.
    pub device_id: DeviceId,
    /// The status; `None` means enabled on create and unchanged on update.
    pub status: Option<DeviceStatus>,
    /// Why the status is set (≤ 128 characters).
    pub status_reason: Option<String>,
    /// The credentials. `None` means generated SAS keys on create and unchanged on update; SAS
    /// keys that are empty strings are generated (32 random bytes each).
    pub authentication: Option<Authentication>,
    /// Whether the device is an IoT Edge device.
    pub iot_edge: bool,
    /// The device's edge scope.
    pub device_scope: Option<String>,
    /// The scopes of the device's parents.
    pub parent_scopes: Vec<String>,
}

impl DeviceSpec {
    /// An enabled, non-edge device with generated SAS keys.
    pub fn new(device_id: DeviceId) -> Self {
        DeviceSpec {
            device_id,
            status: None,
            status_reason: None,
            authentication: None,
            iot_edge: false,
            device_scope: None,
            parent_scopes: Vec::new(),
        }
    }
}

/// What a create or update of a module carries (a `PUT /devices/{id}/modules/{mid}` body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSpec {
    /// The module's device.
    pub device_id: DeviceId,
    /// The module's id.
    pub module_id: ModuleId,
    /// Who manages the module.
    pub managed_by: Option<String>,
    /// The credentials, with the same rules as [`DeviceSpec::authentication`].
    pub authentication: Option<Authentication>,
}

impl ModuleSpec {
    /// A module with generated SAS keys.
    pub fn new(device_id: DeviceId, module_id: ModuleId) -> Self {
        ModuleSpec {
            device_id,
            module_id,
            managed_by: None,
            authentication: None,
        }
    }
}

// === Bulk ===

/// What a bulk record asks for (`importMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ImportMode {
    /// Create; an existing identity is an error.
    Create,
    /// Update regardless of ETag; a missing identity is an error.
    Update,
    /// Update if the record's ETag matches; a missing identity is an error.
    UpdateIfMatchETag,
    /// Create, or update regardless of ETag (the default when `importMode` is absent).
    #[default]
    CreateOrUpdate,
    /// Create, or update if the record's ETag matches.
    CreateOrUpdateIfMatchETag,
    /// Delete regardless of ETag; a missing identity is an error.
    Delete,
    /// Delete if the record's ETag matches; a missing identity is an error.
    DeleteIfMatchETag,
    /// Replace the twin regardless of its ETag; the identity must exist.
    UpdateTwin,
    /// Replace the twin if its ETag matches; the identity must exist.
    UpdateTwinIfMatchETag,
}

impl ImportMode {
    /// Every mode.
    pub const ALL: [ImportMode; 9] = [
        ImportMode::Create,
        ImportMode::Update,
        ImportMode::UpdateIfMatchETag,
        ImportMode::CreateOrUpdate,
        ImportMode::CreateOrUpdateIfMatchETag,
        ImportMode::Delete,
        ImportMode::DeleteIfMatchETag,
        ImportMode::UpdateTwin,
        ImportMode::UpdateTwinIfMatchETag,
    ];

    /// Azure's name, as in `updateIfMatchETag`.
    pub const fn name(self) -> &'static str {
        match self {
            ImportMode::Create => "create",
            ImportMode::Update => "update",
            ImportMode::UpdateIfMatchETag => "updateIfMatchETag",
            ImportMode::CreateOrUpdate => "createOrUpdate",
            ImportMode::CreateOrUpdateIfMatchETag => "createOrUpdateIfMatchETag",
            ImportMode::Delete => "delete",
            ImportMode::DeleteIfMatchETag => "deleteIfMatchETag",
            ImportMode::UpdateTwin => "updateTwin",
            ImportMode::UpdateTwinIfMatchETag => "updateTwinIfMatchETag",
        }
    }
}

impl fmt::Display for ImportMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ImportMode {
    type Err = UnknownName;

    /// Case-insensitive on Azure's names (Node sends `Update`, C# `updateIfMatchETag`).
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        parse_name("import mode", s, &Self::ALL, Self::name)
    }
}

impl Serialize for ImportMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ImportMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One record of a bulk request (Azure's `ExportImportDevice`), already parsed.
///
/// A record with a `module_id` is about that module; otherwise about the device. Device fields
/// (`status`, `iot_edge`, scopes) are ignored for modules and `managed_by` is ignored for devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRecord {
    /// The device (`id`).
    pub device_id: DeviceId,
    /// The module, for a module record.
    pub module_id: Option<ModuleId>,
    /// The record's `eTag`, checked by the `…IfMatchETag` modes (quotes are tolerated).
    pub etag: Option<String>,
    /// What to do; the caller decides the default ([`ImportMode::CreateOrUpdate`]).
    pub import_mode: ImportMode,
    /// The status; `None` means enabled on create and unchanged on update.
    pub status: Option<DeviceStatus>,
    /// Why the status is set.
    pub status_reason: Option<String>,
    /// The credentials, as in [`DeviceSpec::authentication`].
    pub authentication: Option<Authentication>,
    /// Whether the device is an IoT Edge device.
    pub iot_edge: bool,
    /// The device's edge scope.
    pub device_scope: Option<String>,
    /// The scopes of the device's parents.
    pub parent_scopes: Vec<String>,
    /// Who manages the module.
    pub managed_by: Option<String>,
    /// The twin's `tags` and `properties.desired` the record carries, as a replace: they
    /// overwrite the twin's sections (a section the record leaves out is kept). Applied by every
    /// mode but the deletes, after the identity's own change.
    pub twin: Option<TwinUpdate>,
    /// The record's `twinETag`, checked by [`ImportMode::UpdateTwinIfMatchETag`] only (the
    /// swagger's rule: an export's twin ETags belong to the hub it came from).
    pub twin_etag: Option<String>,
}

impl ImportRecord {
    /// A device record with no payload beyond its id.
    pub fn new(device_id: DeviceId, import_mode: ImportMode) -> Self {
        ImportRecord {
            device_id,
            module_id: None,
            etag: None,
            import_mode,
            status: None,
            status_reason: None,
            authentication: None,
            iot_edge: false,
            device_scope: None,
            parent_scopes: Vec::new(),
            managed_by: None,
            twin: None,
            twin_etag: None,
        }
    }

    /// The device payload of the record.
    pub fn device_spec(&self) -> DeviceSpec {
        DeviceSpec {
            device_id: self.device_id.clone(),
            status: self.status,
            status_reason: self.status_reason.clone(),
            authentication: self.authentication.clone(),
            iot_edge: self.iot_edge,
            device_scope: self.device_scope.clone(),
            parent_scopes: self.parent_scopes.clone(),
        }
    }

    /// The module payload of the record, for a module record.
    pub fn module_spec(&self) -> Option<ModuleSpec> {
        self.module_id.as_ref().map(|module_id| ModuleSpec {
            device_id: self.device_id.clone(),
            module_id: module_id.clone(),
            managed_by: self.managed_by.clone(),
            authentication: self.authentication.clone(),
        })
    }
}

/// The outcome of a bulk request (Azure's `BulkRegistryOperationResult`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BulkResult {
    /// `true` when `errors` is empty.
    pub is_successful: bool,
    /// The records that were not applied, in request order.
    pub errors: Vec<BulkError>,
    /// Records applied with a remark.
    pub warnings: Vec<BulkWarning>,
}

/// A bulk record that was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkError {
    /// The record's device id.
    pub device_id: String,
    /// The record's module id, for a module record.
    pub module_id: Option<String>,
    /// Why; the wire form is the name ([`ferrohub_types::ErrorCode::name`]).
    pub error_code: ferrohub_types::ErrorCode,
    /// A sentence for people.
    pub error_status: String,
}

/// A bulk record applied with a remark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkWarning {
    /// The record's device id.
    pub device_id: String,
    /// Azure's warning name, e.g. `DeviceRegisteredWithoutTwin`.
    pub warning_code: String,
    /// A sentence for people.
    pub warning_status: String,
}

/// Device counts (`GET /statistics/devices`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatistics {
    /// All devices.
    pub total_device_count: u64,
    /// Devices whose status is enabled.
    pub enabled_device_count: u64,
    /// Devices whose status is disabled.
    pub disabled_device_count: u64,
}

// === Identity lookups ===

/// What an endpoint needs to authenticate an identity, served from memory.
///
/// An empty key is no key: it must never be used to verify a signature.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityAuth {
    /// The primary key, base64; empty unless the identity uses SAS.
    pub primary_key: String,
    /// The secondary key, base64; empty unless the identity uses SAS.
    pub secondary_key: String,
    /// Whether the identity may connect (a module follows no status of its own: always `true`).
    pub enabled: bool,
    /// The identity's generation id.
    pub generation_id: String,
}

impl IdentityAuth {
    pub(crate) fn of(authentication: &Authentication, enabled: bool, generation_id: &str) -> Self {
        let (primary_key, secondary_key) =
            match (&authentication.kind, &authentication.symmetric_key) {
                (AuthType::Sas, Some(keys)) => {
                    (keys.primary_key.clone(), keys.secondary_key.clone())
                }
                _ => (String::new(), String::new()),
            };
        IdentityAuth {
            primary_key,
            secondary_key,
            enabled,
            generation_id: generation_id.to_owned(),
        }
    }
}

impl fmt::Debug for IdentityAuth {
    /// Keys are secrets: they never appear in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityAuth")
            .field("has_primary_key", &!self.primary_key.is_empty())
            .field("has_secondary_key", &!self.secondary_key.is_empty())
            .field("enabled", &self.enabled)
            .field("generation_id", &self.generation_id)
            .finish()
    }
}

impl From<&Device> for IdentityAuth {
    fn from(d: &Device) -> Self {
        IdentityAuth::of(&d.authentication, d.is_enabled(), &d.generation_id)
    }
}

impl From<&Module> for IdentityAuth {
    fn from(m: &Module) -> Self {
        IdentityAuth::of(&m.authentication, true, &m.generation_id)
    }
}

/// What happened to an identity, reported to [`crate::Registry::on_change`] listeners after it
/// is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityChange {
    /// The device, or the module's device.
    pub device_id: DeviceId,
    /// The module, for a module identity.
    pub module_id: Option<ModuleId>,
    /// What changed.
    pub kind: IdentityChangeKind,
}

/// The kind of an [`IdentityChange`]. Creations are not reported: nothing is connected yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdentityChangeKind {
    /// The identity is gone (a device's deletion reports each of its modules too).
    Deleted,
    /// The device went from enabled to disabled.
    Disabled,
    /// The credentials changed (keys, thumbprints or authentication type).
    KeysChanged,
    /// Anything else changed.
    Updated,
}

// === Twins ===

/// A twin as a store keeps it: the document and the version its compare-and-set writes check.
///
/// The version is the store's own counter (0 for the first write, +1 per write), not the twin's
/// ETag or `version`: a reported patch leaves the ETag alone, and the store must still see every
/// write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTwin {
    /// The store's version of the document.
    pub version: u64,
    /// The document.
    pub twin: Twin,
}

/// The identity a twin belongs to, as stored: its fields (`deviceEtag`, `status`, credentials'
/// type, …) are part of the twin's REST rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwinOwner {
    /// A device's own twin.
    Device(Device),
    /// A module's twin.
    Module(Module),
}

impl TwinOwner {
    /// The device, or the module's device.
    pub fn device_id(&self) -> &DeviceId {
        match self {
            TwinOwner::Device(d) => &d.device_id,
            TwinOwner::Module(m) => &m.device_id,
        }
    }

    /// The module, for a module twin.
    pub fn module_id(&self) -> Option<&ModuleId> {
        match self {
            TwinOwner::Device(_) => None,
            TwinOwner::Module(m) => Some(&m.module_id),
        }
    }
}

/// A twin with its identity, as the service reads and writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityTwin {
    /// The identity.
    pub owner: TwinOwner,
    /// The twin (the initial twin when it was never written).
    pub twin: Twin,
}

/// A change of an identity's desired properties, reported to
/// [`crate::Registry::on_desired_change`] listeners after it is stored, in the order the
/// identity's twin changed: the notification its connected device must get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredChange {
    /// The device, or the module's device.
    pub device_id: DeviceId,
    /// The module, for a module twin.
    pub module_id: Option<ModuleId>,
    /// The notification: the new desired `$version` and the patch to send.
    pub patch: DesiredPatch,
}
