//! The patch engine: how a patch changes a section, and which patch turns one section into
//! another (contract §2.4, §12.4).
//!
//! [`merge`] applies a patch member by member:
//!
//! | Patch member | Result |
//! |---|---|
//! | `"a": 1` (any non-object, non-null value, arrays included) | `a` is set to it, whatever it was (arrays are replaced whole, never merged element by element) |
//! | `"a": null` | `a` is removed; if there is no `a`, nothing happens (no member is created) |
//! | `"a": {…}` onto an object | merged recursively: members the patch does not name are kept |
//! | `"a": {…}` onto a non-object or nothing | `a` becomes `{}` and the patch is merged into it, so `{"p":{"q":null}}` creates `p: {}` |
//!
//! This is JSON Merge Patch (RFC 7386) on objects. A whole section set to `null` (clear) is the
//! caller's case: it replaces the section with `{}`.
//!
//! [`diff`] computes the patch between two sections: new or changed values, and `null` for every
//! removed member, recursing into members that are objects on both sides. Merging
//! `diff(old, new)` into `old` gives `new` (for a `new` without nulls, as replacements are). The
//! hub sends it to devices after a replace or a section-level `null`, where the patch the service
//! sent does not say what was removed (contract §2.4: "send a computed diff … so Node's
//! merge-based cache stays right").

use serde_json::{Map, Value};

/// Merges `patch` into `target` (see the module documentation).
pub fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(members) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(inner) = slot {
                    merge(inner, members);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// The patch that turns `old` into `new` (see the module documentation). Empty when they are
/// equal.
pub fn diff(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut patch = Map::new();
    for key in old.keys() {
        if !new.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    for (key, new_value) in new {
        match (old.get(key), new_value) {
            (Some(Value::Object(o)), Value::Object(n)) => {
                let inner = diff(o, n);
                if !inner.is_empty() {
                    patch.insert(key.clone(), Value::Object(inner));
                }
            }
            (Some(old_value), _) if old_value == new_value => {}
            _ => {
                patch.insert(key.clone(), new_value.clone());
            }
        }
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn merged(target: Value, patch: Value) -> Value {
        let mut t = obj(target);
        merge(&mut t, &obj(patch));
        Value::Object(t)
    }

    #[test]
    fn add_and_replace() {
        assert_eq!(merged(json!({}), json!({"a": 1})), json!({"a": 1}));
        assert_eq!(merged(json!({"a": 0}), json!({"a": 1})), json!({"a": 1}));
        assert_eq!(
            merged(json!({"a": {"b": 1}}), json!({"a": 2})),
            json!({"a": 2})
        );
    }

    #[test]
    fn null_deletes_and_absent_is_a_no_op() {
        assert_eq!(
            merged(json!({"a": 1, "b": 2}), json!({"a": null})),
            json!({"b": 2})
        );
        assert_eq!(merged(json!({"b": 2}), json!({"a": null})), json!({"b": 2}));
    }

    #[test]
    fn nested_null_on_absent_parent_creates_an_empty_object() {
        assert_eq!(
            merged(json!({}), json!({"p": {"q": null}})),
            json!({"p": {}})
        );
        assert_eq!(
            merged(json!({"p": 5}), json!({"p": {"q": null}})),
            json!({"p": {}})
        );
    }

    #[test]
    fn deep_merge_keeps_unnamed_members() {
        // The device-twins guide's "partially update" example.
        assert_eq!(
            merged(
                json!({"bar": {"baz": 2, "tweedle": {"dee": 3}}}),
                json!({"bar": {"baz": 3}})
            ),
            json!({"bar": {"baz": 3, "tweedle": {"dee": 3}}})
        );
        assert_eq!(
            merged(
                json!({"bar": {"baz": 2, "tweedle": {"dee": 3}}}),
                json!({"bar": {"tweedle": null}})
            ),
            json!({"bar": {"baz": 2}})
        );
    }

    #[test]
    fn arrays_are_replaced_whole() {
        assert_eq!(
            merged(json!({"a": [1, 2, 3]}), json!({"a": [4]})),
            json!({"a": [4]})
        );
        assert_eq!(
            merged(json!({"a": [1, {"x": 1}]}), json!({"a": [{"y": 2}]})),
            json!({"a": [{"y": 2}]})
        );
        assert_eq!(
            merged(json!({"a": [1]}), json!({"a": {"b": 1}})),
            json!({"a": {"b": 1}})
        );
    }

    #[test]
    fn diff_lists_changes_and_removals() {
        let old =
            obj(json!({"keep": 1, "change": 1, "gone": {"x": 1}, "o": {"a": 1, "b": 2}, "t": 1}));
        let new =
            obj(json!({"keep": 1, "change": 2, "o": {"a": 1, "c": 3}, "t": {"n": 1}, "add": []}));
        let d = diff(&old, &new);
        assert_eq!(
            Value::Object(d.clone()),
            json!({"change": 2, "gone": null, "o": {"b": null, "c": 3}, "t": {"n": 1}, "add": []})
        );
        let mut applied = old.clone();
        merge(&mut applied, &d);
        assert_eq!(applied, new);
        assert!(diff(&new, &new).is_empty());
        // Emptying an object is a change to each of its members.
        assert_eq!(
            Value::Object(diff(&obj(json!({"o": {"a": 1}})), &obj(json!({"o": {}})))),
            json!({"o": {"a": null}})
        );
    }
}
