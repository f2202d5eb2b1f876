//! Names: keywords, identifiers, and the fixed member names of twins and job records.
//!
//! The fixed names are matched case-insensitively (`DeviceId`, `TAGS`) and written in their
//! canonical case, as Azure does; user property names (under `tags`, `desired`, `reported`)
//! stay case-sensitive.

use crate::ast::Collection;

/// Words that are part of the grammar and so cannot start a path. Words of constructs the
/// language does not have are reserved too, so that using one gives a precise message rather
/// than a path.
const RESERVED: &[&str] = &[
    "SELECT",
    "TOP",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "NIN",
    "TRUE",
    "FALSE",
    "NULL",
    "UNDEFINED",
    // Not supported, reserved for their error messages.
    "ORDER",
    "JOIN",
    "HAVING",
    "LIMIT",
    "OFFSET",
    "DISTINCT",
    "VALUE",
    "LIKE",
    "BETWEEN",
    "EXISTS",
    "IS",
    "UNION",
];

/// Whether `word` is reserved (case-insensitive).
pub(crate) fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(word))
}

/// Whether `c` may start a word.
pub(crate) fn is_word_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '$'
}

/// Whether `c` may continue a word (and start a path segment after a `.`).
pub(crate) fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// Whether `s` lexes as one word at the start of a path.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_word_start) && chars.all(is_word_char)
}

/// Whether `s` lexes as one word after a `.` (where a segment may start with a digit).
pub(crate) fn is_segment_word(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_word_char)
}

/// Top-level members of device and module twins (REST shape), plus the live
/// `connectionStateUpdatedTime` the identity carries.
const TWIN_FIELDS: &[&str] = &[
    "deviceId",
    "moduleId",
    "etag",
    "deviceEtag",
    "status",
    "statusReason",
    "statusUpdateTime",
    "connectionState",
    "connectionStateUpdatedTime",
    "lastActivityTime",
    "cloudToDeviceMessageCount",
    "authenticationType",
    "x509Thumbprint",
    "modelId",
    "version",
    "tags",
    "properties",
    "capabilities",
    "deviceScope",
    "parentScopes",
];

/// Fixed second-level members of twins.
const TWIN_NESTED: &[(&str, &[&str])] = &[
    ("properties", &["desired", "reported"]),
    (
        "x509Thumbprint",
        &["primaryThumbprint", "secondaryThumbprint"],
    ),
    ("capabilities", &["iotEdge"]),
];

/// Top-level members of per-device job records.
const JOB_FIELDS: &[&str] = &[
    "deviceId",
    "moduleId",
    "jobId",
    "jobType",
    "status",
    "startTimeUtc",
    "endTimeUtc",
    "createdDateTimeUtc",
    "lastUpdatedDateTimeUtc",
    "outcome",
    "error",
];

/// Fixed second-level members of job records.
const JOB_NESTED: &[(&str, &[&str])] = &[
    ("outcome", &["deviceMethodResponse"]),
    ("error", &["code", "description"]),
];

/// Twin members the hub fills in from live connection state when it reads a row: they are
/// never in a stored document, so a store must not filter on them.
pub const LIVE_FIELDS: &[&str] = &[
    "connectionState",
    "connectionStateUpdatedTime",
    "lastActivityTime",
    "cloudToDeviceMessageCount",
];

fn fields(
    c: Collection,
) -> (
    &'static [&'static str],
    &'static [(&'static str, &'static [&'static str])],
) {
    match c {
        Collection::Devices | Collection::Modules => (TWIN_FIELDS, TWIN_NESTED),
        Collection::Jobs => (JOB_FIELDS, JOB_NESTED),
    }
}

/// The canonical spelling of a top-level name in collection `c`: a fixed member name in its
/// canonical case, `deviceId` for `id`, or `name` itself.
///
/// In `devices.jobs`, `createdTimeUtc` is `createdDateTimeUtc`: Azure's query documentation
/// filters on the former while its job records (and the SDKs' `DeviceJob`) have the latter.
pub(crate) fn canonical_top_level(c: Collection, name: &str) -> &str {
    if name.eq_ignore_ascii_case("id") {
        return "deviceId";
    }
    if c == Collection::Jobs && name.eq_ignore_ascii_case("createdTimeUtc") {
        return "createdDateTimeUtc";
    }
    fields(c)
        .0
        .iter()
        .find(|f| f.eq_ignore_ascii_case(name))
        .copied()
        .unwrap_or(name)
}

/// The canonical spelling of `name` directly under the canonical top-level member `parent`.
pub(crate) fn canonical_nested<'a>(c: Collection, parent: &str, name: &'a str) -> &'a str {
    fields(c)
        .1
        .iter()
        .find(|(p, _)| *p == parent)
        .and_then(|(_, children)| children.iter().find(|n| n.eq_ignore_ascii_case(name)))
        .copied()
        .unwrap_or(name)
}
