//! `$metadata`: when each part of the desired and reported properties last changed (contract
//! §2.2).
//!
//! Every object level and every member of `properties.desired` and `properties.reported` has a
//! metadata node with `$lastUpdated`; desired nodes also carry `$lastUpdatedVersion`, the desired
//! `$version` of the write that last touched them. The tree mirrors the values: a member holding
//! an object has a node with one child per member of that object; a member holding anything else
//! (arrays included) has a leaf node. Azure keeps metadata at every level "to preserve updates
//! that remove object keys": removing a member updates its parent's node.
//!
//! A write touches the section's root node and, for each member of the patch, the member's node
//! and (for an object value) its own members' nodes, recursively. A member deleted by `null` loses
//! its node; deleting an absent member touches nothing below the parent. Tags have no metadata.
//!
//! `$metadata` is rendered over REST and in query results, never to devices (contract §1.3).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::time;

/// The name of the update time in a metadata node.
const LAST_UPDATED: &str = "$lastUpdated";
/// The name of the desired version in a desired metadata node.
const LAST_UPDATED_VERSION: &str = "$lastUpdatedVersion";

/// What a write stamps on the nodes it touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// The write's time, cut to 100 ns ticks.
    pub(crate) at: DateTime<Utc>,
    /// The desired `$version` the write produced; `None` for reported properties.
    pub(crate) version: Option<u64>,
}

/// One node of `$metadata`, with the nodes of the members below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    last_updated: DateTime<Utc>,
    last_updated_version: Option<u64>,
    children: BTreeMap<String, Metadata>,
}

impl Metadata {
    /// A node without children, stamped.
    pub(crate) fn new(stamp: Stamp) -> Self {
        Metadata {
            last_updated: stamp.at,
            last_updated_version: stamp.version,
            children: BTreeMap::new(),
        }
    }

    /// `$lastUpdated`: when this part last changed.
    pub fn last_updated(&self) -> DateTime<Utc> {
        self.last_updated
    }

    /// `$lastUpdatedVersion`: the desired `$version` of the write that last changed this part;
    /// `None` in reported properties.
    pub fn last_updated_version(&self) -> Option<u64> {
        self.last_updated_version
    }

    /// The node of the member `key`, if there is such a member.
    pub fn get(&self, key: &str) -> Option<&Metadata> {
        self.children.get(key)
    }

    /// The nodes of the members, by name.
    pub fn children(&self) -> impl Iterator<Item = (&str, &Metadata)> {
        self.children.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The node as Azure renders it: `{"$lastUpdated":…,"$lastUpdatedVersion":…,"member":{…}}`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            LAST_UPDATED.to_owned(),
            Value::String(time::format(self.last_updated)),
        );
        if let Some(v) = self.last_updated_version {
            m.insert(LAST_UPDATED_VERSION.to_owned(), Value::from(v));
        }
        for (k, child) in &self.children {
            m.insert(k.clone(), child.to_json());
        }
        Value::Object(m)
    }

    /// Stamps this node (not its children).
    pub(crate) fn touch(&mut self, stamp: Stamp) {
        self.last_updated = stamp.at;
        self.last_updated_version = stamp.version;
    }

    /// Records a merge patch already applied to the values this node describes: touches this
    /// node, drops the nodes of deleted members, replaces the nodes of members set to a
    /// non-object, and recurses into members set to an object.
    pub(crate) fn apply_patch(&mut self, patch: &Map<String, Value>, stamp: Stamp) {
        self.touch(stamp);
        for (key, value) in patch {
            match value {
                Value::Null => {
                    self.children.remove(key);
                }
                Value::Object(members) => self
                    .children
                    .entry(key.clone())
                    .or_insert_with(|| Metadata::new(stamp))
                    .apply_patch(members, stamp),
                _ => {
                    self.children.insert(key.clone(), Metadata::new(stamp));
                }
            }
        }
    }

    /// Reads a node in the form [`Metadata::to_json`] writes.
    pub(crate) fn from_json(value: &Value) -> Result<Self, String> {
        let Value::Object(m) = value else {
            return Err("a metadata node is not an object".to_owned());
        };
        let last_updated = m
            .get(LAST_UPDATED)
            .and_then(Value::as_str)
            .and_then(time::parse)
            .ok_or_else(|| format!("a metadata node has no valid {LAST_UPDATED}"))?;
        let last_updated_version = match m.get(LAST_UPDATED_VERSION) {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| format!("{LAST_UPDATED_VERSION} is not a version number"))?,
            ),
        };
        let mut children = BTreeMap::new();
        for (k, v) in m {
            if k != LAST_UPDATED && k != LAST_UPDATED_VERSION {
                children.insert(k.clone(), Metadata::from_json(v)?);
            }
        }
        Ok(Metadata {
            last_updated,
            last_updated_version,
            children,
        })
    }

    /// Whether the tree has exactly one node per member of `values`, recursively, and no other
    /// (the invariant every operation keeps).
    pub fn mirrors(&self, values: &Map<String, Value>) -> bool {
        self.children.len() == values.len()
            && values.iter().all(|(k, v)| match (self.children.get(k), v) {
                (Some(node), Value::Object(members)) => node.mirrors(members),
                (Some(node), _) => node.children.is_empty(),
                (None, _) => false,
            })
    }
}

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let extra = usize::from(self.last_updated_version.is_some());
        let mut map = s.serialize_map(Some(1 + extra + self.children.len()))?;
        map.serialize_entry(LAST_UPDATED, &time::format(self.last_updated))?;
        if let Some(v) = self.last_updated_version {
            map.serialize_entry(LAST_UPDATED_VERSION, &v)?;
        }
        for (k, child) in &self.children {
            map.serialize_entry(k, child)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Metadata::from_json(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn patch_touches_every_level_it_names() {
        let s1 = Stamp {
            at: at(100),
            version: Some(2),
        };
        let s2 = Stamp {
            at: at(200),
            version: Some(3),
        };
        let mut m = Metadata::new(s1);
        m.apply_patch(&obj(json!({"a": {"b": 1, "c": {"d": 2}}, "e": 3})), s1);
        m.apply_patch(&obj(json!({"a": {"b": 5}})), s2);

        assert_eq!(m.last_updated(), at(200));
        assert_eq!(m.last_updated_version(), Some(3));
        let a = m.get("a").expect("a");
        assert_eq!(a.last_updated_version(), Some(3));
        assert_eq!(a.get("b").expect("b").last_updated(), at(200));
        // Untouched members keep their stamps.
        assert_eq!(a.get("c").expect("c").last_updated_version(), Some(2));
        assert_eq!(
            a.get("c")
                .and_then(|c| c.get("d"))
                .expect("d")
                .last_updated(),
            at(100)
        );
        assert_eq!(m.get("e").expect("e").last_updated_version(), Some(2));
    }

    #[test]
    fn deletes_drop_nodes_and_scalars_drop_children() {
        let s = Stamp {
            at: at(1),
            version: None,
        };
        let mut m = Metadata::new(s);
        m.apply_patch(&obj(json!({"a": {"b": 1}, "c": 1})), s);
        m.apply_patch(&obj(json!({"a": 7, "c": null, "x": null})), s);
        assert_eq!(m.children().map(|(k, _)| k).collect::<Vec<_>>(), ["a"]);
        assert_eq!(m.get("a").expect("a").children().count(), 0);
        assert!(m.mirrors(&obj(json!({"a": 7}))));
        assert!(!m.mirrors(&obj(json!({"a": {"b": 1}}))));
    }

    #[test]
    fn json_round_trip() {
        let s = Stamp {
            at: at(1_697_117_932),
            version: Some(4),
        };
        let mut m = Metadata::new(s);
        m.apply_patch(&obj(json!({"a": {"b": 1}})), s);
        let j = m.to_json();
        assert_eq!(
            j,
            json!({
                "$lastUpdated": "2023-10-12T13:38:52.0000000Z",
                "$lastUpdatedVersion": 4,
                "a": {
                    "$lastUpdated": "2023-10-12T13:38:52.0000000Z",
                    "$lastUpdatedVersion": 4,
                    "b": {"$lastUpdated": "2023-10-12T13:38:52.0000000Z", "$lastUpdatedVersion": 4}
                }
            })
        );
        assert_eq!(serde_json::to_value(&m).expect("serializes"), j);
        assert_eq!(Metadata::from_json(&j), Ok(m));
        assert!(Metadata::from_json(&json!({"a": {}})).is_err());
        assert!(Metadata::from_json(&json!([])).is_err());
    }
}
