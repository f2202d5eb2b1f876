//! Azure's limits on twin documents (contract §2.5 and §12.4, from the device-twins guide, 2024).
//!
//! * **Names** (object keys at every level): UTF-8, case-sensitive, at most 1 KB; no C0/C1
//!   control characters, no `.`, `$` or space ([`check_key`]). The empty name is refused too: no
//!   query path can reach it.
//! * **Values**: booleans, numbers, strings, objects and arrays. Integers lie within
//!   −2^52 … 2^52−1 (JavaScript's exact range); numbers written with a fraction or exponent are
//!   doubles and not range-checked. Strings are at most 4 KB in UTF-8. `null` means "delete" as an
//!   object member of a patch, is refused by a replace, and is refused inside arrays (some hub
//!   versions refuse it, contract §2.4, and devices' caches drop nulls).
//! * **Depth**: at most 10 levels of objects and arrays below the section, so Azure's own example
//!   `{"one":{"two":…{"ten":{"property":"value"}}}}` is the deepest allowed tags section.
//!   Arrays count as a level, like objects (Azure does not say; this is the cautious reading).
//! * **Sizes**: tags 8 KB, desired 32 KB, reported 32 KB, counted by the documented rule
//!   ([`section_size`]), excluding `$version` and `$metadata`. They are checked on the section as
//!   it would be after the change, so a patch that shrinks an over-full section is accepted.

use serde_json::{Map, Value};

use crate::error::{KeyProblem, SectionName, TwinError, ValueProblem};

/// Largest `tags` section, by [`section_size`].
pub const MAX_TAGS_BYTES: usize = 8 * 1024;
/// Largest `properties.desired` section, by [`section_size`].
pub const MAX_DESIRED_BYTES: usize = 32 * 1024;
/// Largest `properties.reported` section, by [`section_size`].
pub const MAX_REPORTED_BYTES: usize = 32 * 1024;
/// Longest name, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest string value, in UTF-8 bytes.
pub const MAX_STRING_BYTES: usize = 4 * 1024;
/// Deepest nesting of objects and arrays below a section.
pub const MAX_DEPTH: usize = 10;
/// Largest integer value (2^52 − 1).
pub const MAX_INTEGER: i64 = 4_503_599_627_370_495;
/// Smallest integer value (−2^52).
pub const MIN_INTEGER: i64 = -4_503_599_627_370_496;
/// What a number counts for in [`section_size`].
pub const NUMBER_BYTES: usize = 8;
/// What a boolean counts for in [`section_size`].
pub const BOOLEAN_BYTES: usize = 4;

/// The size limit of a section.
pub const fn max_section_bytes(section: SectionName) -> usize {
    match section {
        SectionName::Tags => MAX_TAGS_BYTES,
        SectionName::Desired => MAX_DESIRED_BYTES,
        SectionName::Reported => MAX_REPORTED_BYTES,
    }
}

/// Checks one name against the key rules.
pub fn check_key(key: &str) -> Result<(), KeyProblem> {
    if key.is_empty() {
        return Err(KeyProblem::Empty);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyProblem::TooLong { len: key.len() });
    }
    for c in key.chars() {
        match c {
            '$' => return Err(KeyProblem::Dollar),
            '.' => return Err(KeyProblem::Dot),
            ' ' => return Err(KeyProblem::Space),
            c if is_control(c) => return Err(KeyProblem::Control),
            _ => {}
        }
    }
    Ok(())
}

/// C0 (U+0000–U+001F), DEL (U+007F) and C1 (U+0080–U+009F).
fn is_control(c: char) -> bool {
    c.is_control()
}

/// A section's size by Azure's rule: for every member, the UTF-8 length of its name plus the
/// size of its value; strings count their UTF-8 length without control characters, numbers
/// [`NUMBER_BYTES`], booleans [`BOOLEAN_BYTES`], objects the sum over their members, arrays the
/// sum over their elements.
pub fn section_size(members: &Map<String, Value>) -> usize {
    members
        .iter()
        .map(|(k, v)| k.len() + value_size(v))
        .fold(0, usize::saturating_add)
}

/// The size of one value by the rule of [`section_size`]; `null` counts 0.
pub fn value_size(value: &Value) -> usize {
    match value {
        Value::Null => 0,
        Value::Bool(_) => BOOLEAN_BYTES,
        Value::Number(_) => NUMBER_BYTES,
        Value::String(s) => s
            .chars()
            .filter(|c| !is_control(*c))
            .map(char::len_utf8)
            .sum(),
        Value::Array(items) => items.iter().map(value_size).fold(0, usize::saturating_add),
        Value::Object(members) => section_size(members),
    }
}

/// Fails with [`TwinError::TooLarge`] when `members` is over the section's limit.
pub(crate) fn check_size(
    section: SectionName,
    members: &Map<String, Value>,
) -> Result<(), TwinError> {
    let size = section_size(members);
    let max = max_section_bytes(section);
    if size > max {
        return Err(TwinError::TooLarge { section, size, max });
    }
    Ok(())
}

/// What a `null` object member means in the input being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nulls {
    /// A patch: `null` deletes the member.
    Delete,
    /// A replace: `null` is refused with Azure's legacy message.
    Refuse,
}

/// Checks every name and value of a section's members (a patch or a replacement), with paths in
/// errors starting at the section's path.
pub(crate) fn check_members(
    section: SectionName,
    members: &Map<String, Value>,
    nulls: Nulls,
) -> Result<(), TwinError> {
    let mut checker = Checker {
        section,
        nulls,
        path: Vec::new(),
    };
    checker.members(members, 0, false)
}

/// One step of a path inside a section.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

struct Checker<'a> {
    section: SectionName,
    nulls: Nulls,
    path: Vec<Step<'a>>,
}

impl<'a> Checker<'a> {
    /// The current path, e.g. `properties.desired.a.list[2]`.
    fn path(&self) -> String {
        let mut s = self.section.path().to_owned();
        for step in &self.path {
            match step {
                Step::Key(k) => {
                    s.push('.');
                    s.push_str(k);
                }
                Step::Index(i) => {
                    s.push('[');
                    s.push_str(&i.to_string());
                    s.push(']');
                }
            }
        }
        s
    }

    /// The name of the innermost member on the path (for the legacy null message).
    fn last_key(&self) -> String {
        self.path
            .iter()
            .rev()
            .find_map(|s| match s {
                Step::Key(k) => Some((*k).to_owned()),
                Step::Index(_) => None,
            })
            .unwrap_or_else(|| self.section.path().to_owned())
    }

    /// `members` is an object at nesting `level` (0 for the section itself).
    fn members(
        &mut self,
        members: &'a Map<String, Value>,
        level: usize,
        in_array: bool,
    ) -> Result<(), TwinError> {
        for (key, value) in members {
            self.path.push(Step::Key(key));
            if let Err(problem) = check_key(key) {
                return Err(TwinError::InvalidKey {
                    path: self.path(),
                    problem,
                });
            }
            self.value(value, level + 1, in_array)?;
            self.path.pop();
        }
        Ok(())
    }

    /// `value` sits at nesting `level`: an object or array there is that many levels deep.
    fn value(&mut self, value: &'a Value, level: usize, in_array: bool) -> Result<(), TwinError> {
        match value {
            Value::Null if in_array => Err(self.invalid(ValueProblem::NullInArray)),
            Value::Null => match self.nulls {
                Nulls::Delete => Ok(()),
                Nulls::Refuse => Err(TwinError::NullNotAllowed {
                    name: self.last_key(),
                }),
            },
            Value::Bool(_) => Ok(()),
            Value::Number(n) => {
                let in_range = match n.as_i64() {
                    Some(i) => (MIN_INTEGER..=MAX_INTEGER).contains(&i),
                    // A u64 above i64::MAX; anything else is a double.
                    None => n.as_u64().is_none(),
                };
                if in_range {
                    Ok(())
                } else {
                    Err(self.invalid(ValueProblem::IntegerOutOfRange))
                }
            }
            Value::String(s) if s.len() > MAX_STRING_BYTES => {
                Err(self.invalid(ValueProblem::StringTooLong { len: s.len() }))
            }
            Value::String(_) => Ok(()),
            Value::Array(items) => {
                self.depth(level)?;
                for (i, item) in items.iter().enumerate() {
                    self.path.push(Step::Index(i));
                    self.value(item, level + 1, true)?;
                    self.path.pop();
                }
                Ok(())
            }
            Value::Object(members) => {
                self.depth(level)?;
                self.members(members, level, in_array)
            }
        }
    }

    fn depth(&self, level: usize) -> Result<(), TwinError> {
        if level > MAX_DEPTH {
            return Err(TwinError::TooDeep {
                path: self.path(),
                max: MAX_DEPTH,
            });
        }
        Ok(())
    }

    fn invalid(&self, problem: ValueProblem) -> TwinError {
        TwinError::InvalidValue {
            path: self.path(),
            problem,
        }
    }
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

    fn check(v: Value) -> Result<(), TwinError> {
        check_members(SectionName::Desired, &obj(v), Nulls::Delete)
    }

    /// `{"l1":{"l2":…{"l<levels>": leaf}}}`: `levels` names, `levels - 1` objects below the
    /// section.
    fn nested(levels: usize, leaf: Value) -> Value {
        let mut v = leaf;
        for i in (1..=levels).rev() {
            v = json!({ format!("l{i}"): v });
        }
        v
    }

    #[test]
    fn key_rules() {
        assert_eq!(check_key("a"), Ok(()));
        assert_eq!(check_key("ünïcødé-_:/@#"), Ok(()));
        assert_eq!(check_key(""), Err(KeyProblem::Empty));
        assert_eq!(check_key("$version"), Err(KeyProblem::Dollar));
        assert_eq!(check_key("a$"), Err(KeyProblem::Dollar));
        assert_eq!(check_key("a.b"), Err(KeyProblem::Dot));
        assert_eq!(check_key("a b"), Err(KeyProblem::Space));
        assert_eq!(check_key("a\tb"), Err(KeyProblem::Control));
        assert_eq!(check_key("a\u{7f}"), Err(KeyProblem::Control));
        assert_eq!(check_key("a\u{85}"), Err(KeyProblem::Control));
        assert_eq!(
            check_key("a\u{a0}"),
            Ok(()),
            "NBSP is not a control character"
        );
        assert_eq!(check_key(&"k".repeat(MAX_KEY_BYTES)), Ok(()));
        assert_eq!(
            check_key(&"k".repeat(MAX_KEY_BYTES + 1)),
            Err(KeyProblem::TooLong { len: 1025 })
        );
        // The limit is in bytes: 512 two-byte characters fit, 513 do not.
        assert_eq!(check_key(&"é".repeat(512)), Ok(()));
        assert!(check_key(&"é".repeat(513)).is_err());
    }

    #[test]
    fn nested_keys_are_checked_with_their_path() {
        let err = check(json!({"a": {"b": {"c.d": 1}}})).expect_err("dot in a nested key");
        assert_eq!(
            err,
            TwinError::InvalidKey {
                path: "properties.desired.a.b.c.d".to_owned(),
                problem: KeyProblem::Dot
            }
        );
        let err = check(json!({"list": [1, {"$x": 1}]})).expect_err("dollar inside an array");
        assert_eq!(
            err,
            TwinError::InvalidKey {
                path: "properties.desired.list[1].$x".to_owned(),
                problem: KeyProblem::Dollar
            }
        );
    }

    #[test]
    fn integer_range() {
        assert!(check(json!({"a": MAX_INTEGER})).is_ok());
        assert!(check(json!({"a": MIN_INTEGER})).is_ok());
        for bad in [
            json!({"a": MAX_INTEGER + 1}),
            json!({"a": MIN_INTEGER - 1}),
            json!({"a": u64::MAX}),
            json!({"a": [MAX_INTEGER + 1]}),
        ] {
            let err = check(bad).expect_err("out of range");
            assert!(matches!(
                err,
                TwinError::InvalidValue {
                    problem: ValueProblem::IntegerOutOfRange,
                    ..
                }
            ));
        }
        // Doubles are not integers.
        assert!(check(json!({"a": 1.0e300, "b": -2.5})).is_ok());
    }

    #[test]
    fn string_length_in_bytes() {
        assert!(check(json!({"s": "x".repeat(MAX_STRING_BYTES)})).is_ok());
        assert!(check(json!({"s": "é".repeat(MAX_STRING_BYTES / 2)})).is_ok());
        let err = check(json!({"s": "x".repeat(MAX_STRING_BYTES + 1)})).expect_err("too long");
        assert_eq!(
            err,
            TwinError::InvalidValue {
                path: "properties.desired.s".to_owned(),
                problem: ValueProblem::StringTooLong { len: 4097 }
            }
        );
        assert!(check(json!({"s": "é".repeat(MAX_STRING_BYTES / 2 + 1)})).is_err());
    }

    #[test]
    fn depth_at_and_over_the_limit() {
        // Azure's own example: names one…ten each holding an object, the last holding
        // "property": "value" (eleven names, ten objects) is the deepest allowed.
        assert!(check(nested(11, json!("value"))).is_ok());
        assert!(check(nested(10, json!([1, 2]))).is_ok());
        let err = check(nested(12, json!("value"))).expect_err("eleven levels of objects");
        assert_eq!(
            err,
            TwinError::TooDeep {
                path: "properties.desired.l1.l2.l3.l4.l5.l6.l7.l8.l9.l10.l11".to_owned(),
                max: MAX_DEPTH
            }
        );
        assert!(
            check(nested(11, json!([1]))).is_err(),
            "an array is a level"
        );
        assert!(
            check(nested(11, json!({}))).is_err(),
            "an empty object is a level"
        );
        assert!(
            check(nested(10, json!([[1]]))).is_err(),
            "nested arrays count"
        );
    }

    #[test]
    fn nulls() {
        assert!(check(json!({"a": null, "b": {"c": null}})).is_ok());
        let refuse = check_members(
            SectionName::Tags,
            &obj(json!({"a": {"my-tag": null}})),
            Nulls::Refuse,
        );
        assert_eq!(
            refuse,
            Err(TwinError::NullNotAllowed {
                name: "my-tag".to_owned()
            })
        );
        for bad in [json!({"a": [1, null]}), json!({"a": [{"b": null}]})] {
            assert!(matches!(
                check(bad),
                Err(TwinError::InvalidValue {
                    problem: ValueProblem::NullInArray,
                    ..
                })
            ));
        }
    }

    #[test]
    fn size_rule() {
        // Name bytes plus value size: "héé" is 5 bytes in UTF-8, numbers 8, booleans 4.
        let m = obj(json!({"a": 1, "bb": true, "s": "héé", "o": {"x": 1.5, "l": [1, "ab"]}}));
        assert_eq!(
            section_size(&m),
            (1 + 8) + (2 + 4) + (1 + 5) + (1 + (1 + 8) + (1 + 8 + 2))
        );
        // Control characters in strings do not count.
        assert_eq!(value_size(&json!("a\nb\u{0}")), 2);
        assert_eq!(value_size(&Value::Null), 0);
    }

    #[test]
    fn size_limits_at_and_over() {
        // One key "k" (1 byte) and strings of 4 KB: each member counts 4097.
        let mut m = Map::new();
        let filler = |n: usize| "x".repeat(n);
        m.insert("k".to_owned(), Value::String(filler(MAX_STRING_BYTES)));
        m.insert(
            "l".to_owned(),
            Value::String(filler(MAX_TAGS_BYTES - 4097 - 1)),
        );
        assert_eq!(section_size(&m), MAX_TAGS_BYTES);
        assert!(check_size(SectionName::Tags, &m).is_ok());
        m.insert("m".to_owned(), Value::Bool(true));
        assert_eq!(
            check_size(SectionName::Tags, &m),
            Err(TwinError::TooLarge {
                section: SectionName::Tags,
                size: MAX_TAGS_BYTES + 5,
                max: MAX_TAGS_BYTES
            })
        );
        assert!(check_size(SectionName::Desired, &m).is_ok());
    }
}
