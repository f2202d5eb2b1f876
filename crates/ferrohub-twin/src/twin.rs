//! The twin document and the operations that change it (contract §2.1–§2.5, §3, §12.4–§12.5).
//!
//! A [`Twin`] holds the `tags`, the desired and reported [`Properties`] (values, `$version`,
//! `$metadata`) and the ETag counter. Every operation is pure: it takes `&self` and `now`, and
//! returns a new twin plus what the hub must do with it, or an error and no change at all.
//!
//! # Versions and ETags (§2.3)
//!
//! * A new twin has ETag counter 1 (`AAAAAAAAAAE=`), desired `$version` 1, reported `$version`
//!   1, so `version` 2.
//! * A service write that includes `tags` or `properties.desired` adds 1 to the ETag counter.
//!   Reported updates do not change the ETag.
//! * A service write that includes `properties.desired` (even `{}`) adds 1 to the desired
//!   `$version` and notifies the device once ([`TwinUpdated::desired_patch`]).
//! * Every accepted reported patch adds 1 to the reported `$version`.
//! * `version` = ETag counter + reported `$version` (1+1=2, 7+1=8, 11+313=324 on real twins).
//!
//! # Service writes (§2.4, §3)
//!
//! [`TwinUpdate::patch`] reads a `PATCH /twins/{id}` body (or a twin job's `updateTwin`):
//! `tags` and `properties.desired` are merge patches ([`crate::merge`]), a section set to `null`
//! is cleared, `properties.reported` may be present only when empty. [`TwinUpdate::replace`]
//! reads a `PUT` body: `tags` and `properties.desired` replace the sections wholesale when
//! present (sections absent from the body are kept), `properties.reported` is ignored, and any
//! `null` is refused with Azure's legacy message. In both, `$metadata` and `$version` at the top
//! of `desired` and `reported` are read-only and ignored, so a twin read with `GET` can be changed
//! and sent back (the Python and C# service SDKs send the whole document on update).
//!
//! # Device writes (§1, §12.4)
//!
//! [`ReportedPatch`] is a device's reported-properties patch: a merge patch whose names must all
//! obey the key rules (a `$version` sent back is refused, §2.4). An optional `$version` from the
//! topic is a precondition on the current reported version (412 on mismatch).
//!
//! # Validation (§2.5)
//!
//! Names, values and depth are checked on the input ([`crate::limits`]); sizes on the sections as
//! they would be after the change. A refused operation changes nothing: the caller keeps `self`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::error::{SectionName, TwinError};
use crate::etag::{IfMatch, TwinEtag};
use crate::limits::{self, Nulls};
use crate::merge::{diff, merge};
use crate::metadata::{Metadata, Stamp};
use crate::time;

/// Read-only names a service body may carry at the top of `desired` or `reported` (from a twin
/// it read); they are ignored.
const READ_ONLY_NAMES: [&str; 2] = ["$metadata", "$version"];

/// The desired or the reported properties of a twin: user values, `$version` and `$metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Properties {
    pub(crate) version: u64,
    pub(crate) values: Map<String, Value>,
    pub(crate) metadata: Metadata,
}

impl Properties {
    /// An empty section at version 1.
    fn new(stamp: Stamp) -> Self {
        Properties {
            version: 1,
            values: Map::new(),
            metadata: Metadata::new(stamp),
        }
    }

    /// `$version`: 1 when the twin is created, +1 per write of this section.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The user values (no `$version`, no `$metadata`).
    pub fn values(&self) -> &Map<String, Value> {
        &self.values
    }

    /// The value of one top-level property.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// `$metadata`: when each part last changed.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Applies a merge patch as one write stamped `stamp` (the version is already raised).
    fn merge_patch(&mut self, patch: &Map<String, Value>, stamp: Stamp) {
        merge(&mut self.values, patch);
        self.metadata.apply_patch(patch, stamp);
    }
}

/// A device or module twin: tags, desired and reported properties, versions, metadata and ETag.
///
/// Its serde form is the compact storage form ([`crate::storage`]), not the REST rendering (that
/// is [`Twin::rest_view`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Twin {
    pub(crate) etag: TwinEtag,
    pub(crate) tags: Map<String, Value>,
    pub(crate) desired: Properties,
    pub(crate) reported: Properties,
}

/// How a service write changes one section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionChange {
    /// Merge this patch into the section (`PATCH`).
    Merge(Map<String, Value>),
    /// Replace the section with these members (`PUT`, or a section set to `null` in a `PATCH`,
    /// which is a replace with nothing).
    Replace(Map<String, Value>),
}

/// A service write of a twin, read and validated from a `PATCH` or `PUT` body (or a twin job's
/// `updateTwin`); apply it with [`Twin::apply_update`]. Parsing once and applying to many twins
/// is how a twin job uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwinUpdate {
    tags: Option<SectionChange>,
    desired: Option<SectionChange>,
}

/// A device's reported-properties patch, read and validated; apply it with
/// [`Twin::apply_reported`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedPatch(Map<String, Value>);

/// What the connected device must hear after a desired-properties write: published on
/// [`DesiredPatch::topic`] with [`DesiredPatch::body`] (contract §1.1, §2.4).
///
/// After a `PATCH` it is the desired patch as the service sent it (the devices merge it, as a
/// real hub does); after a replace or a section-level `null` it is the computed diff: new and
/// changed values, and `null` for every removed member. Either way, a device that merges it into
/// its copy of the desired properties and drops nulls (Node's cache) ends up with the hub's
/// desired properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPatch {
    pub(crate) version: u64,
    pub(crate) patch: Map<String, Value>,
}

impl DesiredPatch {
    /// The new desired `$version`.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The patch members (without `$version`).
    pub fn patch(&self) -> &Map<String, Value> {
        &self.patch
    }
}

/// The result of an accepted service write.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinUpdated {
    /// The twin after the write, to be stored.
    pub twin: Twin,
    /// The notification for the device when the write included desired properties; `None`
    /// otherwise. Send it only to a connected device subscribed to desired patches (nothing is
    /// queued, contract §1.5).
    pub desired_patch: Option<DesiredPatch>,
}

/// The result of an accepted reported-properties patch.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedUpdated {
    /// The twin after the patch, to be stored.
    pub twin: Twin,
    /// The new reported `$version`, for the `204` response topic's `$version` (contract §1.1).
    pub version: u64,
}

impl Twin {
    /// The twin of a newly created device or module: no tags or properties, ETag counter 1,
    /// both `$version`s 1, metadata stamped `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        let at = time::to_ticks(now);
        Twin {
            etag: TwinEtag::INITIAL,
            tags: Map::new(),
            desired: Properties::new(Stamp {
                at,
                version: Some(1),
            }),
            reported: Properties::new(Stamp { at, version: None }),
        }
    }

    /// The twin's ETag (`etag` in its JSON, and the value `If-Match` is compared with).
    pub fn etag(&self) -> TwinEtag {
        self.etag
    }

    /// The twin's `version`: ETag counter + reported `$version` (contract §2.3).
    pub fn version(&self) -> u64 {
        self.etag.counter().saturating_add(self.reported.version)
    }

    /// The tags.
    pub fn tags(&self) -> &Map<String, Value> {
        &self.tags
    }

    /// The desired properties.
    pub fn desired(&self) -> &Properties {
        &self.desired
    }

    /// The reported properties.
    pub fn reported(&self) -> &Properties {
        &self.reported
    }

    /// `PATCH /twins/{id}`: [`TwinUpdate::patch`] then [`Twin::apply_update`].
    pub fn service_patch(
        &self,
        body: &Value,
        if_match: &IfMatch,
        now: DateTime<Utc>,
    ) -> Result<TwinUpdated, TwinError> {
        self.apply_update(&TwinUpdate::patch(body)?, if_match, now)
    }

    /// `PUT /twins/{id}`: [`TwinUpdate::replace`] then [`Twin::apply_update`].
    pub fn service_replace(
        &self,
        body: &Value,
        if_match: &IfMatch,
        now: DateTime<Utc>,
    ) -> Result<TwinUpdated, TwinError> {
        self.apply_update(&TwinUpdate::replace(body)?, if_match, now)
    }

    /// Applies a service write if `if_match` names the current ETag (412001 otherwise) and the
    /// sections stay within their size limits (400004 otherwise).
    pub fn apply_update(
        &self,
        update: &TwinUpdate,
        if_match: &IfMatch,
        now: DateTime<Utc>,
    ) -> Result<TwinUpdated, TwinError> {
        if !if_match.matches(self.etag) {
            return Err(TwinError::PreconditionFailed);
        }
        let mut twin = self.clone();
        if let Some(change) = &update.tags {
            match change {
                SectionChange::Merge(patch) => merge(&mut twin.tags, patch),
                SectionChange::Replace(members) => twin.tags = members.clone(),
            }
            limits::check_size(SectionName::Tags, &twin.tags)?;
        }
        let mut desired_patch = None;
        if let Some(change) = &update.desired {
            let desired = &mut twin.desired;
            desired.version = desired.version.saturating_add(1);
            let stamp = Stamp {
                at: time::to_ticks(now),
                version: Some(desired.version),
            };
            let sent = match change {
                SectionChange::Merge(patch) => {
                    desired.merge_patch(patch, stamp);
                    patch.clone()
                }
                SectionChange::Replace(members) => {
                    let changes = diff(&desired.values, members);
                    desired.values = members.clone();
                    desired.metadata.apply_patch(&changes, stamp);
                    changes
                }
            };
            limits::check_size(SectionName::Desired, &desired.values)?;
            desired_patch = Some(DesiredPatch {
                version: desired.version,
                patch: sent,
            });
        }
        if update.tags.is_some() || update.desired.is_some() {
            twin.etag = twin.etag.next();
        }
        Ok(TwinUpdated {
            twin,
            desired_patch,
        })
    }

    /// A device's reported patch from an MQTT or AMQP body: [`ReportedPatch::from_slice`] then
    /// [`Twin::apply_reported`].
    pub fn device_report(
        &self,
        body: &[u8],
        expected_version: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<ReportedUpdated, TwinError> {
        self.apply_reported(&ReportedPatch::from_slice(body)?, expected_version, now)
    }

    /// Applies a device's reported patch. `expected_version` is the `$version` of the request
    /// topic, when the device sent one: the reported `$version` it last saw (412001 when it is
    /// not the current one).
    pub fn apply_reported(
        &self,
        patch: &ReportedPatch,
        expected_version: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<ReportedUpdated, TwinError> {
        if let Some(expected) = expected_version
            && expected != self.reported.version
        {
            return Err(TwinError::VersionMismatch {
                expected,
                current: self.reported.version,
            });
        }
        let mut twin = self.clone();
        let reported = &mut twin.reported;
        reported.version = reported.version.saturating_add(1);
        reported.merge_patch(
            &patch.0,
            Stamp {
                at: time::to_ticks(now),
                version: None,
            },
        );
        limits::check_size(SectionName::Reported, &reported.values)?;
        let version = reported.version;
        Ok(ReportedUpdated { twin, version })
    }
}

impl TwinUpdate {
    /// Reads a `PATCH` body: `{"tags":{…},"properties":{"desired":{…}}}`, any part optional.
    ///
    /// * `tags` / `properties.desired`: an object is a merge patch (`null` members delete), `null`
    ///   clears the section; anything else is 400004.
    /// * `properties.reported`: absent or empty (`{}`, or only `$metadata`/`$version`); anything
    ///   else is [`TwinError::ReportedNotWritable`].
    /// * Other top-level members (`deviceId`, `etag`, … of a twin read earlier) are ignored.
    pub fn patch(body: &Value) -> Result<Self, TwinError> {
        let root = root_object(body)?;
        let tags = match root.get("tags") {
            None => None,
            Some(Value::Null) => Some(SectionChange::Replace(Map::new())),
            Some(Value::Object(patch)) => {
                limits::check_members(SectionName::Tags, patch, Nulls::Delete)?;
                Some(SectionChange::Merge(patch.clone()))
            }
            Some(_) => return Err(not_an_object("tags")),
        };
        let desired = match root.get("properties") {
            None | Some(Value::Null) => None,
            Some(Value::Object(properties)) => {
                match properties.get("reported") {
                    None => {}
                    Some(Value::Object(r)) if writable(r).is_empty() => {}
                    Some(_) => return Err(TwinError::ReportedNotWritable),
                }
                match properties.get("desired") {
                    None => None,
                    Some(Value::Null) => Some(SectionChange::Replace(Map::new())),
                    Some(Value::Object(d)) => {
                        let patch = writable(d);
                        limits::check_members(SectionName::Desired, &patch, Nulls::Delete)?;
                        Some(SectionChange::Merge(patch))
                    }
                    Some(_) => return Err(not_an_object("properties.desired")),
                }
            }
            Some(_) => return Err(not_an_object("properties")),
        };
        Ok(TwinUpdate { tags, desired })
    }

    /// Reads a `PUT` body: `tags` and `properties.desired` replace their sections when present;
    /// `properties.reported` and other members are ignored; any `null` is refused with Azure's
    /// legacy message ([`TwinError::NullNotAllowed`]).
    pub fn replace(body: &Value) -> Result<Self, TwinError> {
        let root = root_object(body)?;
        let tags = match root.get("tags") {
            None => None,
            Some(Value::Object(members)) => {
                limits::check_members(SectionName::Tags, members, Nulls::Refuse)?;
                Some(SectionChange::Replace(members.clone()))
            }
            Some(Value::Null) => return Err(null_not_allowed("tags")),
            Some(_) => return Err(not_an_object("tags")),
        };
        let desired = match root.get("properties") {
            None => None,
            Some(Value::Object(properties)) => match properties.get("desired") {
                None => None,
                Some(Value::Object(d)) => {
                    let members = writable(d);
                    limits::check_members(SectionName::Desired, &members, Nulls::Refuse)?;
                    Some(SectionChange::Replace(members))
                }
                Some(Value::Null) => return Err(null_not_allowed("desired")),
                Some(_) => return Err(not_an_object("properties.desired")),
            },
            Some(Value::Null) => return Err(null_not_allowed("properties")),
            Some(_) => return Err(not_an_object("properties")),
        };
        Ok(TwinUpdate { tags, desired })
    }

    /// How the write changes the tags; `None` when it leaves them alone.
    pub fn tags(&self) -> Option<&SectionChange> {
        self.tags.as_ref()
    }

    /// How the write changes the desired properties; `None` when it leaves them alone.
    pub fn desired(&self) -> Option<&SectionChange> {
        self.desired.as_ref()
    }
}

impl ReportedPatch {
    /// Reads a patch body: a JSON object whose members are merged into the reported properties
    /// (`null` deletes). The body as bytes, as MQTT and AMQP deliver it.
    pub fn from_slice(body: &[u8]) -> Result<Self, TwinError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            TwinError::Malformed(format!(
                "The reported properties patch is not valid JSON: {e}."
            ))
        })?;
        Self::from_json(&value)
    }

    /// Reads a patch already parsed as JSON.
    pub fn from_json(body: &Value) -> Result<Self, TwinError> {
        let Value::Object(members) = body else {
            return Err(TwinError::Malformed(
                "The reported properties patch must be a JSON object.".to_owned(),
            ));
        };
        limits::check_members(SectionName::Reported, members, Nulls::Delete)?;
        Ok(ReportedPatch(members.clone()))
    }

    /// The patch members.
    pub fn members(&self) -> &Map<String, Value> {
        &self.0
    }
}

fn root_object(body: &Value) -> Result<&Map<String, Value>, TwinError> {
    body.as_object().ok_or_else(|| {
        TwinError::Malformed("The twin in the request body must be a JSON object.".to_owned())
    })
}

fn not_an_object(what: &str) -> TwinError {
    TwinError::Malformed(format!("'{what}' in the twin must be a JSON object."))
}

fn null_not_allowed(name: &str) -> TwinError {
    TwinError::NullNotAllowed {
        name: name.to_owned(),
    }
}

/// The members of a `desired` or `reported` object from a service body, without the read-only
/// `$metadata` and `$version`.
fn writable(section: &Map<String, Value>) -> Map<String, Value> {
    section
        .iter()
        .filter(|(k, _)| !READ_ONLY_NAMES.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{KeyProblem, ValueProblem};
    use crate::limits::{MAX_DESIRED_BYTES, MAX_REPORTED_BYTES, MAX_STRING_BYTES, MAX_TAGS_BYTES};
    use chrono::TimeZone;
    use serde_json::json;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).single().expect("valid time")
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// A service patch with `If-Match: *` that must succeed.
    fn patch(twin: &Twin, body: Value) -> TwinUpdated {
        twin.service_patch(&body, &IfMatch::Any, at(100))
            .expect("patch accepted")
    }

    fn desired_patch(twin: &Twin, desired: Value) -> TwinUpdated {
        patch(twin, json!({"properties": {"desired": desired}}))
    }

    fn replace(twin: &Twin, body: Value) -> TwinUpdated {
        twin.service_replace(&body, &IfMatch::Any, at(100))
            .expect("replace accepted")
    }

    fn report(twin: &Twin, body: Value) -> ReportedUpdated {
        twin.device_report(body.to_string().as_bytes(), None, at(100))
            .expect("report accepted")
    }

    /// A twin whose desired properties are `desired` (and notification state irrelevant).
    fn with_desired(desired: Value) -> Twin {
        desired_patch(&Twin::new(at(0)), desired).twin
    }

    fn values(p: &Properties) -> Value {
        Value::Object(p.values().clone())
    }

    fn sent(updated: &TwinUpdated) -> Value {
        Value::Object(
            updated
                .desired_patch
                .as_ref()
                .expect("a desired notification")
                .patch()
                .clone(),
        )
    }

    // === §2.3 versions and ETags ===

    #[test]
    fn a_new_twin_has_etag_1_and_version_2() {
        let twin = Twin::new(at(0));
        assert_eq!(twin.etag().to_string(), "AAAAAAAAAAE=");
        assert_eq!(twin.etag().counter(), 1);
        assert_eq!(twin.desired().version(), 1);
        assert_eq!(twin.reported().version(), 1);
        assert_eq!(twin.version(), 2);
        assert!(twin.tags().is_empty());
        assert!(twin.desired().values().is_empty());
        assert_eq!(twin.desired().metadata().last_updated(), at(0));
        assert_eq!(twin.desired().metadata().last_updated_version(), Some(1));
        assert_eq!(twin.reported().metadata().last_updated_version(), None);
    }

    #[test]
    fn tags_only_writes_bump_the_etag_but_not_desired() {
        let twin = Twin::new(at(0));
        let u = patch(&twin, json!({"tags": {"loc": "x"}}));
        assert_eq!(u.twin.etag().to_string(), "AAAAAAAAAAI=");
        assert_eq!(u.twin.desired().version(), 1);
        assert_eq!(u.twin.version(), 3);
        assert_eq!(u.desired_patch, None);
        assert_eq!(u.twin.desired().metadata(), twin.desired().metadata());
    }

    #[test]
    fn any_write_naming_desired_bumps_it_and_notifies_once() {
        let twin = Twin::new(at(0));
        let u = desired_patch(&twin, json!({}));
        assert_eq!(u.twin.desired().version(), 2);
        assert_eq!(u.twin.etag().counter(), 2);
        let n = u.desired_patch.expect("notified");
        assert_eq!(n.version(), 2);
        assert!(n.patch().is_empty());
        assert_eq!(n.to_json(), json!({"$version": 2}));

        let u = patch(
            &u.twin,
            json!({"tags": {"a": 1}, "properties": {"desired": {"x": 1}}}),
        );
        assert_eq!(u.twin.desired().version(), 3);
        assert_eq!(u.twin.etag().counter(), 3, "one write, one increment");
    }

    #[test]
    fn reported_patches_bump_reported_and_version_but_not_the_etag() {
        let twin = Twin::new(at(0));
        let r = report(&twin, json!({"a": 1}));
        assert_eq!(r.version, 2);
        assert_eq!(r.twin.reported().version(), 2);
        assert_eq!(r.twin.etag(), twin.etag());
        assert_eq!(r.twin.version(), 3);
        assert_eq!(r.twin.desired(), twin.desired());
    }

    #[test]
    fn version_is_etag_counter_plus_reported_version() {
        // 7 + 1 = 8: six service writes on a new twin.
        let mut twin = Twin::new(at(0));
        for i in 0..6 {
            twin = patch(&twin, json!({"tags": {"n": i}})).twin;
        }
        assert_eq!(twin.etag().to_string(), "AAAAAAAAAAc=");
        assert_eq!(twin.version(), 8);
        // 11 + 313 = 324.
        for i in 0..4 {
            twin = desired_patch(&twin, json!({"n": i})).twin;
        }
        for i in 0..312 {
            twin = report(&twin, json!({"n": i})).twin;
        }
        assert_eq!(twin.etag().to_string(), "AAAAAAAAAAs=");
        assert_eq!(twin.reported().version(), 313);
        assert_eq!(twin.version(), 324);
    }

    #[test]
    fn if_match_is_checked_before_anything_changes() {
        let twin = patch(&Twin::new(at(0)), json!({"tags": {"a": 1}})).twin;
        let body = json!({"tags": {"a": 2}});
        for ok in ["*", "\"*\"", "\"AAAAAAAAAAI=\""] {
            assert!(
                twin.service_patch(&body, &IfMatch::parse(ok), at(1))
                    .is_ok(),
                "{ok}"
            );
            assert!(
                twin.service_replace(&body, &IfMatch::parse(ok), at(1))
                    .is_ok()
            );
        }
        let stale = IfMatch::parse("\"AAAAAAAAAAE=\"");
        let err = twin
            .service_patch(&body, &stale, at(1))
            .expect_err("stale etag");
        assert_eq!(err, TwinError::PreconditionFailed);
        assert_eq!(err.code(), 412001);
        assert_eq!(err.error_code().http_status(), 412);
        assert_eq!(
            twin.service_replace(&body, &stale, at(1)),
            Err(TwinError::PreconditionFailed)
        );
    }

    #[test]
    fn reported_version_precondition() {
        let twin = report(&Twin::new(at(0)), json!({"a": 1})).twin;
        let body = br#"{"a": 2}"#;
        let ok = twin
            .device_report(body, Some(2), at(1))
            .expect("current version");
        assert_eq!(ok.version, 3);
        let err = twin
            .device_report(body, Some(1), at(1))
            .expect_err("old version");
        assert_eq!(
            err,
            TwinError::VersionMismatch {
                expected: 1,
                current: 2
            }
        );
        assert_eq!(err.code(), 412001);
    }

    // === §2.4 patch semantics, one test per row ===

    #[test]
    fn row_add_or_replace() {
        let twin = with_desired(json!({"a": 0, "b": 1}));
        let u = desired_patch(&twin, json!({"a": 1, "c": "new"}));
        assert_eq!(
            values(u.twin.desired()),
            json!({"a": 1, "b": 1, "c": "new"})
        );
        assert_eq!(sent(&u), json!({"a": 1, "c": "new"}));
    }

    #[test]
    fn row_null_deletes_and_absent_is_a_no_op() {
        let twin = with_desired(json!({"a": 1, "b": 2}));
        let u = desired_patch(&twin, json!({"a": null, "zz": null}));
        assert_eq!(values(u.twin.desired()), json!({"b": 2}));
        assert!(u.twin.desired().metadata().get("zz").is_none());
        // Same in tags and reported.
        let t = patch(&Twin::new(at(0)), json!({"tags": {"x": null}})).twin;
        assert!(t.tags().is_empty());
        let r = report(&Twin::new(at(0)), json!({"x": null})).twin;
        assert!(r.reported().values().is_empty());
    }

    #[test]
    fn row_nested_null_under_absent_parent_creates_it_empty() {
        let u = desired_patch(&Twin::new(at(0)), json!({"p": {"q": null}}));
        assert_eq!(values(u.twin.desired()), json!({"p": {}}));
        assert!(u.twin.desired().metadata().get("p").is_some());
        let r = report(&Twin::new(at(0)), json!({"p": {"q": null}})).twin;
        assert_eq!(values(r.reported()), json!({"p": {}}));
    }

    #[test]
    fn row_deep_merge_and_notification_as_sent() {
        let twin = with_desired(json!({"bar": {"baz": 2, "tweedle": {"dee": 3}}}));
        let u = desired_patch(&twin, json!({"bar": {"baz": 3}}));
        assert_eq!(
            values(u.twin.desired()),
            json!({"bar": {"baz": 3, "tweedle": {"dee": 3}}})
        );
        assert_eq!(sent(&u), json!({"bar": {"baz": 3}}));
    }

    #[test]
    fn row_nested_null_removes_only_that_member() {
        let twin = with_desired(json!({"bar": {"baz": 2, "tweedle": {"dee": 3}}}));
        let u = desired_patch(&twin, json!({"bar": {"tweedle": null}}));
        assert_eq!(values(u.twin.desired()), json!({"bar": {"baz": 2}}));
    }

    #[test]
    fn row_desired_null_clears_and_notifies_every_removed_key() {
        let twin = with_desired(json!({"a": 1, "b": {"c": 2}}));
        let u = patch(&twin, json!({"properties": {"desired": null}}));
        assert!(u.twin.desired().values().is_empty());
        assert_eq!(u.twin.desired().version(), 3);
        assert_eq!(sent(&u), json!({"a": null, "b": null}));
        assert_eq!(
            u.desired_patch.expect("notified").to_json(),
            json!({"a": null, "b": null, "$version": 3})
        );
        assert_eq!(u.twin.desired().metadata().children().count(), 0);
        // With If-Match "*" too (the e2e variant).
        assert!(
            twin.service_patch(
                &json!({"properties": {"desired": null}}),
                &IfMatch::parse("\"*\""),
                at(1)
            )
            .is_ok()
        );
    }

    #[test]
    fn row_tags_null_clears_tags() {
        let twin = patch(&Twin::new(at(0)), json!({"tags": {"a": 1}})).twin;
        let u = patch(&twin, json!({"tags": null}));
        assert!(u.twin.tags().is_empty());
        assert_eq!(u.desired_patch, None);
        assert_eq!(u.twin.etag().counter(), 3);
    }

    #[test]
    fn row_arrays_are_values_replaced_whole() {
        let twin = with_desired(json!({"list": [1, "two", {"three": 3}, [4]]}));
        assert_eq!(
            values(twin.desired()),
            json!({"list": [1, "two", {"three": 3}, [4]]})
        );
        let u = desired_patch(&twin, json!({"list": [9]}));
        assert_eq!(values(u.twin.desired()), json!({"list": [9]}));
        // Array metadata is a leaf.
        assert_eq!(
            u.twin
                .desired()
                .metadata()
                .get("list")
                .expect("node")
                .children()
                .count(),
            0
        );
    }

    #[test]
    fn row_null_inside_an_array_is_refused() {
        let err = Twin::new(at(0))
            .service_patch(
                &json!({"properties": {"desired": {"a": [1, null]}}}),
                &IfMatch::Any,
                at(1),
            )
            .expect_err("null in array");
        assert_eq!(
            err,
            TwinError::InvalidValue {
                path: "properties.desired.a[1]".to_owned(),
                problem: ValueProblem::NullInArray
            }
        );
    }

    #[test]
    fn row_dollar_keys_are_refused_and_nothing_is_applied() {
        let twin = Twin::new(at(0));
        // A device sending $version back.
        let err = twin
            .device_report(br#"{"a": 1, "$version": 4}"#, None, at(1))
            .expect_err("$version from the device");
        assert_eq!(
            err,
            TwinError::InvalidKey {
                path: "properties.reported.$version".to_owned(),
                problem: KeyProblem::Dollar
            }
        );
        assert_eq!(err.code(), 400004);
        // Nested $ keys in a service patch, next to valid members.
        let err = twin
            .service_patch(
                &json!({"tags": {"ok": 1}, "properties": {"desired": {"ok": 1, "o": {"$x": 1}}}}),
                &IfMatch::Any,
                at(1),
            )
            .expect_err("$ key");
        assert!(matches!(err, TwinError::InvalidKey { .. }));
        assert_eq!(twin, Twin::new(at(0)), "nothing applied");
        // $ keys in tags.
        assert!(matches!(
            twin.service_patch(&json!({"tags": {"$t": 1}}), &IfMatch::Any, at(1)),
            Err(TwinError::InvalidKey { .. })
        ));
    }

    #[test]
    fn row_replace_with_null_uses_the_legacy_message() {
        let twin = Twin::new(at(0));
        let err = twin
            .service_replace(&json!({"tags": {"my-tag": null}}), &IfMatch::Any, at(1))
            .expect_err("null in PUT");
        assert_eq!(
            err.to_string(),
            "Value of Property or Tag cannot be null. Error in Property/Tag my-tag"
        );
        assert_eq!(err.code(), 400004);
        for body in [
            json!({"properties": {"desired": {"a": {"b": null}}}}),
            json!({"properties": {"desired": null}}),
            json!({"tags": null}),
            json!({"properties": null}),
        ] {
            assert!(
                matches!(
                    twin.service_replace(&body, &IfMatch::Any, at(1)),
                    Err(TwinError::NullNotAllowed { .. })
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn row_replace_is_wholesale_and_ignores_reported() {
        let twin = patch(
            &Twin::new(at(0)),
            json!({"tags": {"a": 1, "b": 2}, "properties": {"desired": {"x": 1, "y": {"z": 1}}}}),
        )
        .twin;
        let twin = report(&twin, json!({"r": 1})).twin;
        let u = replace(
            &twin,
            json!({"tags": {"c": 3}, "properties": {"desired": {"y": {"w": 2}}, "reported": {"r": 99, "s": 1}}}),
        );
        assert_eq!(Value::Object(u.twin.tags().clone()), json!({"c": 3}));
        assert_eq!(values(u.twin.desired()), json!({"y": {"w": 2}}));
        assert_eq!(u.twin.reported(), twin.reported());
        // The notification is the diff: new values and a null per removed member.
        assert_eq!(sent(&u), json!({"x": null, "y": {"z": null, "w": 2}}));
        assert_eq!(u.twin.etag().counter(), twin.etag().counter() + 1);
    }

    #[test]
    fn replace_keeps_sections_absent_from_the_body() {
        let twin = patch(
            &Twin::new(at(0)),
            json!({"tags": {"a": 1}, "properties": {"desired": {"x": 1}}}),
        )
        .twin;
        let u = replace(&twin, json!({"tags": {"b": 2}}));
        assert_eq!(u.twin.desired(), twin.desired());
        assert_eq!(u.desired_patch, None);
        let u = replace(&twin, json!({"properties": {"desired": {"x": 1}}}));
        assert_eq!(u.twin.tags(), twin.tags());
        // Unchanged desired still counts as a write: version +1, notification with no members.
        assert_eq!(u.twin.desired().version(), twin.desired().version() + 1);
        assert_eq!(sent(&u), json!({}));
        // An empty body changes nothing and does not bump the ETag.
        let u = replace(&twin, json!({}));
        assert_eq!(u.twin, twin);
    }

    #[test]
    fn row_patch_with_reported() {
        let twin = Twin::new(at(0));
        // Node's e2e job patch.
        let u = patch(
            &twin,
            json!({"etag": "*", "tags": {"key": "value2"}, "properties": {"desired": {}, "reported": {}}}),
        );
        assert_eq!(u.twin.tags().get("key"), Some(&json!("value2")));
        let err = twin
            .service_patch(
                &json!({"properties": {"reported": {"a": 1}}}),
                &IfMatch::Any,
                at(1),
            )
            .expect_err("reported from the service");
        assert_eq!(err, TwinError::ReportedNotWritable);
        assert_eq!(err.code(), 400004);
        assert!(
            twin.service_patch(
                &json!({"properties": {"reported": null}}),
                &IfMatch::Any,
                at(1)
            )
            .is_err()
        );
    }

    #[test]
    fn a_twin_read_with_get_can_be_sent_back() {
        let twin = patch(
            &Twin::new(at(0)),
            json!({"tags": {"t": 1}, "properties": {"desired": {"x": 1}}}),
        )
        .twin;
        let twin = report(&twin, json!({"r": 1})).twin;
        let identity = crate::render::TwinIdentity {
            device_id: "d".to_owned(),
            ..Default::default()
        };
        let mut read = twin.rest_view(&identity).to_json();
        read["properties"]["desired"]["x"] = json!(2);
        // PATCH with the whole document: $metadata/$version ignored, reported unchanged is fine
        // only when it holds no values; a full reported section is refused.
        let mut as_patch = read.clone();
        as_patch["properties"]["reported"] = json!({"$version": 2, "$metadata": {}});
        let u = patch(&twin, as_patch);
        assert_eq!(values(u.twin.desired()), json!({"x": 2}));
        assert_eq!(sent(&u), json!({"x": 2}));
        // PUT with the whole document, reported included.
        let u = replace(&twin, read);
        assert_eq!(values(u.twin.desired()), json!({"x": 2}));
        assert_eq!(sent(&u), json!({"x": 2}));
        assert_eq!(u.twin.reported(), twin.reported());
    }

    #[test]
    fn malformed_bodies() {
        let twin = Twin::new(at(0));
        for body in [
            json!([]),
            json!("x"),
            json!({"tags": 1}),
            json!({"tags": []}),
            json!({"properties": 1}),
            json!({"properties": {"desired": [1]}}),
        ] {
            let err = twin
                .service_patch(&body, &IfMatch::Any, at(1))
                .expect_err("malformed");
            assert!(matches!(err, TwinError::Malformed(_)), "{body}: {err:?}");
            assert_eq!(err.code(), 400004);
            assert!(twin.service_replace(&body, &IfMatch::Any, at(1)).is_err());
        }
        for body in [&b""[..], b" ", b"null", b"[1]", b"{", b"\"a\""] {
            assert!(matches!(
                twin.device_report(body, None, at(1)),
                Err(TwinError::Malformed(_))
            ));
        }
    }

    // === §2.2 metadata ===

    #[test]
    fn metadata_is_updated_at_every_level() {
        let t0 = Twin::new(at(0));
        let t1 = t0
            .service_patch(
                &json!({"properties": {"desired": {"a": {"b": {"c": 1}, "d": 2}, "e": 3}}}),
                &IfMatch::Any,
                at(10),
            )
            .expect("valid")
            .twin;
        let t2 = t1
            .service_patch(
                &json!({"properties": {"desired": {"a": {"b": {"c": 5}}}}}),
                &IfMatch::Any,
                at(20),
            )
            .expect("valid")
            .twin;
        let m = t2.desired().metadata();
        let a = m.get("a").expect("a");
        let b = a.get("b").expect("b");
        let c = b.get("c").expect("c");
        for (node, when, version) in [(m, 20, 3), (a, 20, 3), (b, 20, 3), (c, 20, 3)] {
            assert_eq!(node.last_updated(), at(when));
            assert_eq!(node.last_updated_version(), Some(version));
        }
        // Untouched members keep the stamp of their own write.
        assert_eq!(a.get("d").expect("d").last_updated(), at(10));
        assert_eq!(a.get("d").expect("d").last_updated_version(), Some(2));
        assert_eq!(m.get("e").expect("e").last_updated(), at(10));

        // Removing a member updates its parent's node.
        let t3 = t2
            .service_patch(
                &json!({"properties": {"desired": {"a": {"d": null}}}}),
                &IfMatch::Any,
                at(30),
            )
            .expect("valid")
            .twin;
        let a = t3.desired().metadata().get("a").expect("a");
        assert_eq!(a.last_updated(), at(30));
        assert!(a.get("d").is_none());
        assert_eq!(a.get("b").expect("b").last_updated(), at(20));
        assert!(t3.desired().metadata().mirrors(t3.desired().values()));

        // Reported metadata has no $lastUpdatedVersion; tags have no metadata.
        let r = t3
            .device_report(br#"{"x": {"y": 1}}"#, None, at(40))
            .expect("valid")
            .twin;
        let x = r.reported().metadata().get("x").expect("x");
        assert_eq!(x.last_updated(), at(40));
        assert_eq!(x.last_updated_version(), None);
        assert_eq!(x.get("y").expect("y").last_updated_version(), None);
        assert_eq!(r.reported().metadata().last_updated(), at(40));
        assert_eq!(r.desired(), t3.desired());
    }

    #[test]
    fn replace_stamps_only_what_changed() {
        let t1 = with_desired(json!({"same": 1, "changed": 1, "gone": 1}));
        let t2 = t1
            .service_replace(
                &json!({"properties": {"desired": {"same": 1, "changed": 2, "new": 1}}}),
                &IfMatch::Any,
                at(50),
            )
            .expect("valid")
            .twin;
        let m = t2.desired().metadata();
        assert_eq!(m.last_updated(), at(50));
        assert_eq!(m.get("same").expect("same").last_updated(), at(100));
        assert_eq!(m.get("changed").expect("changed").last_updated(), at(50));
        assert_eq!(m.get("new").expect("new").last_updated(), at(50));
        assert!(m.get("gone").is_none());
        assert!(m.mirrors(t2.desired().values()));
    }

    // === §2.5 limits, at and over each bound, through the operations ===

    /// `count` members named `k0`, `k1`, … (2 bytes each for count ≤ 10) holding strings of
    /// `len` characters: each counts `2 + len`.
    fn filled(count: usize, len: usize) -> Value {
        Value::Object(
            (0..count)
                .map(|i| (format!("k{i}"), Value::String("x".repeat(len))))
                .collect(),
        )
    }

    #[test]
    fn tags_limit() {
        let twin = Twin::new(at(0));
        // 2 × (2 + 4094) = 8192.
        let full = filled(2, MAX_TAGS_BYTES / 2 - 2);
        let u = patch(&twin, json!({"tags": full}));
        assert_eq!(crate::limits::section_size(u.twin.tags()), MAX_TAGS_BYTES);
        let err = u
            .twin
            .service_patch(&json!({"tags": {"b": true}}), &IfMatch::Any, at(1))
            .expect_err("over");
        assert_eq!(
            err,
            TwinError::TooLarge {
                section: SectionName::Tags,
                size: MAX_TAGS_BYTES + 5,
                max: MAX_TAGS_BYTES
            }
        );
        assert!(
            twin.service_replace(
                &json!({"tags": filled(3, MAX_TAGS_BYTES / 3)}),
                &IfMatch::Any,
                at(1)
            )
            .is_err()
        );
    }

    #[test]
    fn desired_limit() {
        let twin = Twin::new(at(0));
        // 8 × (2 + 4094) = 32768.
        let full = filled(8, MAX_STRING_BYTES - 2);
        let u = desired_patch(&twin, full.clone());
        assert_eq!(
            crate::limits::section_size(u.twin.desired().values()),
            MAX_DESIRED_BYTES
        );
        let err = u
            .twin
            .service_patch(
                &json!({"properties": {"desired": {"k0": "x".repeat(MAX_STRING_BYTES - 1)}}}),
                &IfMatch::Any,
                at(1),
            )
            .expect_err("over");
        assert!(matches!(
            err,
            TwinError::TooLarge {
                section: SectionName::Desired,
                ..
            }
        ));
        // The size counted is the section after the change: swapping members is fine.
        assert!(
            u.twin
                .service_patch(
                    &json!({"properties": {"desired": {"k0": null, "k9": "x".repeat(MAX_STRING_BYTES - 2)}}}),
                    &IfMatch::Any,
                    at(1)
                )
                .is_ok()
        );
        let replaced = replace(&twin, json!({"properties": {"desired": full}}));
        assert_eq!(replaced.twin.desired().values(), u.twin.desired().values());
    }

    #[test]
    fn reported_limit_and_atomic_refusal() {
        let twin = report(&Twin::new(at(0)), filled(8, MAX_STRING_BYTES - 2)).twin;
        assert_eq!(
            crate::limits::section_size(twin.reported().values()),
            MAX_REPORTED_BYTES
        );
        let before = twin.clone();
        let err = twin
            .device_report(
                br#"{"k0": null, "a": 1, "k1": "longer than before, by far: 4096 is the limit"}"#,
                None,
                at(1),
            )
            .map(|_| ())
            .err();
        // k0 freed 4096 bytes, so this fits; now overfill instead.
        assert_eq!(err, None);
        let over = json!({"zz": 1});
        assert!(matches!(
            twin.device_report(over.to_string().as_bytes(), None, at(1)),
            Err(TwinError::TooLarge {
                section: SectionName::Reported,
                size,
                max: MAX_REPORTED_BYTES
            }) if size == MAX_REPORTED_BYTES + 10
        ));
        assert_eq!(twin, before, "a refused patch changes nothing");
        assert_eq!(twin.reported().version(), 2);
    }

    #[test]
    fn value_and_key_limits_through_operations() {
        let twin = Twin::new(at(0));
        let long_key = "k".repeat(crate::limits::MAX_KEY_BYTES + 1);
        let cases = [
            json!({ long_key: 1 }),
            json!({"s": "x".repeat(MAX_STRING_BYTES + 1)}),
            json!({"i": crate::limits::MAX_INTEGER + 1}),
            json!({"a b": 1}),
            json!({"a.b": 1}),
            json!({"a\u{1}": 1}),
            json!({"": 1}),
        ];
        for case in cases {
            let body = case.to_string();
            assert!(
                twin.device_report(body.as_bytes(), None, at(1)).is_err(),
                "{body}"
            );
            assert!(
                twin.service_patch(&json!({"tags": case}), &IfMatch::Any, at(1))
                    .is_err()
            );
        }
        let ok = json!({"s": "x".repeat(MAX_STRING_BYTES), "i": crate::limits::MIN_INTEGER});
        assert!(
            twin.device_report(ok.to_string().as_bytes(), None, at(1))
                .is_ok()
        );
    }

    #[test]
    fn update_accessors() {
        let u = TwinUpdate::patch(&json!({"tags": null, "properties": {"desired": {"a": 1}}}))
            .expect("valid");
        assert_eq!(u.tags(), Some(&SectionChange::Replace(Map::new())));
        assert_eq!(
            u.desired(),
            Some(&SectionChange::Merge(obj(json!({"a": 1}))))
        );
        let u = TwinUpdate::replace(&json!({"deviceId": "x"})).expect("valid");
        assert_eq!(u.tags(), None);
        assert_eq!(u.desired(), None);
        let p = ReportedPatch::from_json(&json!({"a": null})).expect("valid");
        assert_eq!(p.members(), &obj(json!({"a": null})));
    }
}
