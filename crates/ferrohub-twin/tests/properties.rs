//! Properties of the twin operations over generated documents and patches:
//!
//! * a device that keeps a copy of the desired properties from its `GET` and merges every
//!   desired notification into it ends up with the hub's desired properties — both Node's cache
//!   (lodash `merge`, then every `null` removed) and a JSON Merge Patch cache;
//! * the hub's desired properties are what an independent JSON Merge Patch model says;
//! * whatever a service or device sends, an accepted write leaves a document within every limit
//!   (names, values, depth, sizes, no nulls), with metadata mirroring the values and
//!   `version` = ETag counter + reported `$version`, and a refused one is 400004 or 412001;
//! * the stored form reads back as the same twin.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use ferrohub_twin::limits::{
    MAX_DEPTH, MAX_DESIRED_BYTES, MAX_INTEGER, MAX_KEY_BYTES, MAX_REPORTED_BYTES, MAX_STRING_BYTES,
    MAX_TAGS_BYTES, MIN_INTEGER, section_size,
};
use ferrohub_twin::{IfMatch, Twin, TwinError, TwinUpdated};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0)
        .single()
        .expect("valid time")
}

fn to_object(m: BTreeMap<String, Value>) -> Value {
    Value::Object(m.into_iter().collect())
}

fn to_map(m: BTreeMap<String, Value>) -> Map<String, Value> {
    m.into_iter().collect()
}

fn as_map(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

// === Generators of valid input ===

/// Few short names, so patches often meet existing members.
fn key() -> impl Strategy<Value = String> {
    "[a-d]{1,2}"
}

fn scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::from),
        (-1000i64..1000).prop_map(Value::from),
        "[a-z]{0,5}".prop_map(Value::from),
        Just(json!(1.5)),
    ]
    .boxed()
}

/// A value a document may hold (no nulls), with or without arrays.
fn value(arrays: bool) -> BoxedStrategy<Value> {
    scalar()
        .prop_recursive(4, 24, 4, move |inner| {
            let object =
                prop::collection::btree_map(key(), inner.clone(), 0..4).prop_map(to_object);
            if arrays {
                prop_oneof![
                    3 => object,
                    1 => prop::collection::vec(inner, 0..3).prop_map(Value::Array),
                ]
                .boxed()
            } else {
                object.boxed()
            }
        })
        .boxed()
}

/// A patch member: a value, `null`, or an object of patch members.
fn patch_value(arrays: bool) -> BoxedStrategy<Value> {
    prop_oneof![1 => Just(Value::Null), 3 => value(arrays)]
        .prop_recursive(3, 24, 4, |inner| {
            prop::collection::btree_map(key(), inner, 0..4).prop_map(to_object)
        })
        .boxed()
}

fn patch(arrays: bool) -> BoxedStrategy<Map<String, Value>> {
    prop::collection::btree_map(key(), patch_value(arrays), 0..5)
        .prop_map(to_map)
        .boxed()
}

fn members(arrays: bool) -> BoxedStrategy<Map<String, Value>> {
    prop::collection::btree_map(key(), value(arrays), 0..5)
        .prop_map(to_map)
        .boxed()
}

/// A service write of the desired properties.
#[derive(Debug, Clone)]
enum DesiredOp {
    /// `PATCH {"properties":{"desired": patch}}`.
    Patch(Map<String, Value>),
    /// `PATCH {"properties":{"desired": null}}`.
    Clear,
    /// `PUT {"properties":{"desired": members}}`.
    Replace(Map<String, Value>),
}

fn desired_op(arrays: bool) -> BoxedStrategy<DesiredOp> {
    prop_oneof![
        3 => patch(arrays).prop_map(DesiredOp::Patch),
        1 => Just(DesiredOp::Clear),
        1 => members(arrays).prop_map(DesiredOp::Replace),
    ]
    .boxed()
}

fn apply(twin: &Twin, op: &DesiredOp, now: DateTime<Utc>) -> TwinUpdated {
    let result = match op {
        DesiredOp::Patch(p) => {
            twin.service_patch(&json!({"properties": {"desired": p}}), &IfMatch::Any, now)
        }
        DesiredOp::Clear => twin.service_patch(
            &json!({"properties": {"desired": null}}),
            &IfMatch::Any,
            now,
        ),
        DesiredOp::Replace(m) => {
            twin.service_replace(&json!({"properties": {"desired": m}}), &IfMatch::Any, now)
        }
    };
    result.expect("generated writes are valid")
}

fn twin_after(history: &[DesiredOp]) -> Twin {
    history
        .iter()
        .enumerate()
        .fold(Twin::new(at(0)), |twin, (i, op)| {
            apply(&twin, op, at(i as i64 + 1)).twin
        })
}

// === Device-side caches and an independent model ===

/// Node's `Twin._mergePatch`: lodash `merge` (objects merged, anything else assigned, `null`
/// included), then every `null` anywhere removed.
fn node_merge(dest: &mut Map<String, Value>, patch: &Map<String, Value>) {
    fn lodash_merge(dest: &mut Map<String, Value>, patch: &Map<String, Value>) {
        for (k, v) in patch {
            match v {
                Value::Object(p) => {
                    let slot = dest
                        .entry(k.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !slot.is_object() {
                        *slot = Value::Object(Map::new());
                    }
                    if let Value::Object(inner) = slot {
                        lodash_merge(inner, p);
                    }
                }
                other => {
                    dest.insert(k.clone(), other.clone());
                }
            }
        }
    }
    fn prune(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|_, v| !v.is_null());
                m.values_mut().for_each(prune);
            }
            Value::Array(a) => {
                a.retain(|v| !v.is_null());
                a.iter_mut().for_each(prune);
            }
            _ => {}
        }
    }
    lodash_merge(dest, patch);
    let mut whole = Value::Object(std::mem::take(dest));
    prune(&mut whole);
    *dest = as_map(&whole);
}

/// JSON Merge Patch (RFC 7386 §2), written from the RFC's pseudo-code.
fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut t = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            let current = t.get(k).cloned().unwrap_or(Value::Null);
            t.insert(k.clone(), merge_patch(&current, v));
        }
    }
    Value::Object(t)
}

fn device_desired(twin: &Twin) -> Map<String, Value> {
    as_map(&twin.device_view().to_json()["desired"])
}

proptest! {
    #[test]
    fn node_cache_follows_the_hub(history in prop::collection::vec(desired_op(false), 0..4),
                                  op in desired_op(false)) {
        let twin = twin_after(&history);
        let mut cache = device_desired(&twin);
        let updated = apply(&twin, &op, at(100));
        let notification = updated.desired_patch.as_ref().expect("desired was written");
        prop_assert_eq!(notification.version(), twin.desired().version() + 1);
        node_merge(&mut cache, &as_map(&notification.to_json()));
        prop_assert_eq!(cache, device_desired(&updated.twin));
    }

    #[test]
    fn merge_patch_cache_follows_the_hub_with_arrays(
        history in prop::collection::vec(desired_op(true), 0..4),
        op in desired_op(true),
    ) {
        let twin = twin_after(&history);
        let cache = Value::Object(device_desired(&twin));
        let updated = apply(&twin, &op, at(100));
        let notification = updated.desired_patch.as_ref().expect("desired was written");
        let cache = merge_patch(&cache, &notification.to_json());
        prop_assert_eq!(cache, Value::Object(device_desired(&updated.twin)));
    }

    #[test]
    fn desired_follows_the_merge_patch_model(
        history in prop::collection::vec(desired_op(true), 0..4),
        op in desired_op(true),
    ) {
        let twin = twin_after(&history);
        let before = Value::Object(twin.desired().values().clone());
        let expected = match &op {
            DesiredOp::Patch(p) => merge_patch(&before, &Value::Object(p.clone())),
            DesiredOp::Clear => json!({}),
            DesiredOp::Replace(m) => Value::Object(m.clone()),
        };
        let updated = apply(&twin, &op, at(100));
        prop_assert_eq!(Value::Object(updated.twin.desired().values().clone()), expected);
        prop_assert!(updated.twin.desired().metadata().mirrors(updated.twin.desired().values()));
        prop_assert_eq!(updated.twin.etag().counter(), twin.etag().counter() + 1);
        prop_assert_eq!(updated.twin.reported(), twin.reported());
    }

    #[test]
    fn stored_form_round_trips(history in prop::collection::vec(desired_op(true), 0..5),
                               reports in prop::collection::vec(patch(true), 0..3),
                               tags in patch(true)) {
        let mut twin = twin_after(&history);
        for (i, r) in reports.iter().enumerate() {
            let body = Value::Object(r.clone()).to_string();
            twin = twin.device_report(body.as_bytes(), None, at(200 + i as i64))
                .expect("generated reports are valid").twin;
        }
        twin = twin.service_patch(&json!({"tags": tags}), &IfMatch::Any, at(300))
            .expect("generated tags are valid").twin;
        let text = serde_json::to_string(&twin).expect("serializes");
        let back: Twin = serde_json::from_str(&text).expect("reads back");
        prop_assert_eq!(back, twin);
    }
}

// === Generators of anything, valid or not ===

fn any_key() -> BoxedStrategy<String> {
    prop_oneof![
        80 => "[a-c]{1,2}".boxed(),
        1 => Just("$v".to_owned()).boxed(),
        1 => Just("a.b".to_owned()).boxed(),
        1 => Just("a b".to_owned()).boxed(),
        1 => Just("c\u{1}".to_owned()).boxed(),
        1 => Just(String::new()).boxed(),
        1 => Just("k".repeat(MAX_KEY_BYTES)).boxed(),
        1 => Just("k".repeat(MAX_KEY_BYTES + 1)).boxed(),
    ]
    .boxed()
}

fn any_scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => any::<bool>().prop_map(Value::from),
        4 => (-10i64..10).prop_map(Value::from),
        4 => "[a-z]{0,4}".prop_map(Value::from),
        2 => (MAX_STRING_BYTES - 2..MAX_STRING_BYTES + 2).prop_map(|n| Value::from("x".repeat(n))),
        1 => prop_oneof![
            Just(json!(MAX_INTEGER)),
            Just(json!(MAX_INTEGER + 1)),
            Just(json!(MIN_INTEGER)),
            Just(json!(MIN_INTEGER - 1)),
            Just(json!(u64::MAX)),
        ],
    ]
    .boxed()
}

/// `{"n": {"n": … leaf}}` with `levels` objects.
fn nested(levels: usize) -> Value {
    (0..levels).fold(json!(1), |v, _| json!({ "n": v }))
}

/// Any member value of a patch: nulls anywhere (arrays included), deep nesting, bad names.
fn any_value() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => any_scalar(),
        2 => Just(Value::Null),
        1 => (MAX_DEPTH - 2..MAX_DEPTH + 2).prop_map(nested),
    ]
    .prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            3 => prop::collection::btree_map(any_key(), inner.clone(), 0..6).prop_map(to_object),
            1 => prop::collection::vec(inner, 0..3).prop_map(Value::Array),
        ]
    })
    .boxed()
}

fn any_patch() -> BoxedStrategy<Value> {
    prop::collection::btree_map(any_key(), any_value(), 0..10)
        .prop_map(to_object)
        .boxed()
}

/// Any write, from the service or the device.
#[derive(Debug, Clone)]
enum AnyOp {
    ServicePatch(Value),
    ServiceReplace(Value),
    Report(Value, Option<u64>),
}

/// Members holding strings of about 4 KB, to reach the section size limits in a few writes.
fn filler() -> BoxedStrategy<Value> {
    prop::collection::btree_map(
        "f[a-z]",
        (MAX_STRING_BYTES - 100..=MAX_STRING_BYTES).prop_map(|n| Value::from("x".repeat(n))),
        1..5,
    )
    .prop_map(to_object)
    .boxed()
}

fn any_op() -> BoxedStrategy<AnyOp> {
    let section = || prop_oneof![4 => any_patch(), 1 => Just(Value::Null), 3 => filler()];
    let body =
        (prop::option::of(section()), prop::option::of(section())).prop_map(|(tags, desired)| {
            let mut body = Map::new();
            if let Some(t) = tags {
                body.insert("tags".to_owned(), t);
            }
            if let Some(d) = desired {
                body.insert("properties".to_owned(), json!({ "desired": d }));
            }
            Value::Object(body)
        });
    let report = prop_oneof![3 => any_patch(), 2 => filler()];
    prop_oneof![
        3 => body.clone().prop_map(AnyOp::ServicePatch),
        1 => body.prop_map(AnyOp::ServiceReplace),
        3 => (report, prop::option::of(0u64..4)).prop_map(|(p, v)| AnyOp::Report(p, v)),
    ]
    .boxed()
}

// === An independent check of the limits ===

fn key_ok(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_KEY_BYTES
        && !k
            .chars()
            .any(|c| c == '$' || c == '.' || c == ' ' || c.is_control())
}

/// Whether a stored value keeps every rule; `level` is the nesting of an object or array here.
fn value_ok(v: &Value, level: usize) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(_) => true,
        Value::Number(n) => n.as_i64().map_or(n.as_u64().is_none(), |i| {
            (MIN_INTEGER..=MAX_INTEGER).contains(&i)
        }),
        Value::String(s) => s.len() <= MAX_STRING_BYTES,
        Value::Array(a) => level <= MAX_DEPTH && a.iter().all(|v| value_ok(v, level + 1)),
        Value::Object(m) => level <= MAX_DEPTH && members_ok(m, level),
    }
}

fn members_ok(m: &Map<String, Value>, level: usize) -> bool {
    m.iter().all(|(k, v)| key_ok(k) && value_ok(v, level + 1))
}

fn check_document(twin: &Twin) -> Result<(), TestCaseError> {
    prop_assert!(members_ok(twin.tags(), 0), "tags: {:?}", twin.tags());
    prop_assert!(members_ok(twin.desired().values(), 0));
    prop_assert!(members_ok(twin.reported().values(), 0));
    prop_assert!(section_size(twin.tags()) <= MAX_TAGS_BYTES);
    prop_assert!(section_size(twin.desired().values()) <= MAX_DESIRED_BYTES);
    prop_assert!(section_size(twin.reported().values()) <= MAX_REPORTED_BYTES);
    prop_assert!(twin.desired().metadata().mirrors(twin.desired().values()));
    prop_assert!(twin.reported().metadata().mirrors(twin.reported().values()));
    prop_assert_eq!(
        twin.version(),
        twin.etag().counter() + twin.reported().version()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn accepted_writes_keep_the_document_within_limits(
        ops in prop::collection::vec(any_op(), 1..16),
    ) {
        let mut twin = Twin::new(at(0));
        let mut accepted = 0;
        for (i, op) in ops.iter().enumerate() {
            let now = at(i as i64 + 1);
            let before = twin.clone();
            let result = match op {
                AnyOp::ServicePatch(body) => twin
                    .service_patch(body, &IfMatch::Any, now)
                    .map(|u| u.twin),
                AnyOp::ServiceReplace(body) => twin
                    .service_replace(body, &IfMatch::Any, now)
                    .map(|u| u.twin),
                AnyOp::Report(patch, version) => twin
                    .device_report(patch.to_string().as_bytes(), *version, now)
                    .map(|u| u.twin),
            };
            match result {
                Ok(next) => {
                    check_document(&next)?;
                    accepted += 1;
                    twin = next;
                }
                Err(e) => {
                    prop_assert!(
                        matches!(e.code(), 400004 | 412001),
                        "unexpected code for {:?}", e
                    );
                    if let TwinError::VersionMismatch { current, .. } = e {
                        prop_assert_eq!(current, twin.reported().version());
                    }
                    prop_assert_eq!(&twin, &before);
                }
            }
        }
        prop_assert!(accepted <= ops.len());
    }
}
