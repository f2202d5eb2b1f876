//! The stored form of a twin: [`Twin`]'s serde form, compact JSON kept beside the identity in
//! SQLite and PostgreSQL.
//!
//! ```json
//! {"etag":7,
//!  "tags":{"location":{"region":"US"}},
//!  "properties":{"desired":{"fw":"2.0","$version":4},"reported":{"fw":"1.0","$version":2}},
//!  "metadata":{"desired":{"$lastUpdated":"2023-10-12T13:38:52.3108419Z","$lastUpdatedVersion":4,"fw":{…}},
//!              "reported":{"$lastUpdated":"…","fw":{…}}}}
//! ```
//!
//! * `etag` is the ETag counter (the twin's `version` is derived, never stored).
//! * `tags` and `properties.desired` / `properties.reported` are the sections exactly as the
//!   query language names them, with `$version` inside as in the rendered twin, so a query path
//!   maps to a JSON path unchanged: `properties.reported.fw` is `$.properties.reported.fw` in
//!   SQLite's `json_extract` and `doc #> '{properties,reported,fw}'` in PostgreSQL;
//!   `properties.desired.$version` is `$.properties.desired."$version"`.
//! * `$metadata` is kept apart under `metadata.desired` / `metadata.reported` (same shape as the
//!   rendered `$metadata`), so scans of the sections never wade through it; the query path
//!   `properties.desired.$metadata.x` maps to `metadata.desired.x`.
//!
//! Reading checks what the operations rely on: integer `$version`s, well-formed metadata whose
//! tree mirrors the values. A document that fails is reported as a serde error and not guessed at.

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::etag::TwinEtag;
use crate::metadata::Metadata;
use crate::render::WithVersion;
use crate::twin::{Properties, Twin};

/// The name `$version` inside a stored section.
const VERSION: &str = "$version";

impl Serialize for Twin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("etag", &self.etag.counter())?;
        map.serialize_entry("tags", &self.tags)?;
        map.serialize_entry(
            "properties",
            &Pair {
                desired: WithVersion::of(&self.desired),
                reported: WithVersion::of(&self.reported),
            },
        )?;
        map.serialize_entry(
            "metadata",
            &Pair {
                desired: &self.desired.metadata,
                reported: &self.reported.metadata,
            },
        )?;
        map.end()
    }
}

/// `{"desired":…,"reported":…}`.
#[derive(Serialize, Deserialize)]
struct Pair<T> {
    desired: T,
    reported: T,
}

/// The stored form as read.
#[derive(Deserialize)]
struct Stored {
    etag: u64,
    #[serde(default)]
    tags: Map<String, Value>,
    properties: Pair<Map<String, Value>>,
    metadata: Pair<Metadata>,
}

impl<'de> Deserialize<'de> for Twin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let stored = Stored::deserialize(d)?;
        let desired = section(
            "desired",
            stored.properties.desired,
            stored.metadata.desired,
        )
        .map_err(serde::de::Error::custom)?;
        let reported = section(
            "reported",
            stored.properties.reported,
            stored.metadata.reported,
        )
        .map_err(serde::de::Error::custom)?;
        Ok(Twin {
            etag: TwinEtag::from_counter(stored.etag),
            tags: stored.tags,
            desired,
            reported,
        })
    }
}

fn section(
    name: &str,
    mut values: Map<String, Value>,
    metadata: Metadata,
) -> Result<Properties, String> {
    let version = values
        .remove(VERSION)
        .and_then(|v| v.as_u64())
        .ok_or_else(|| format!("the stored {name} properties have no valid $version"))?;
    if !metadata.mirrors(&values) {
        return Err(format!(
            "the stored {name} metadata does not match the {name} properties"
        ));
    }
    Ok(Properties {
        version,
        values,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etag::IfMatch;
    use chrono::{DateTime, TimeZone, Utc};
    use serde_json::json;

    fn at(secs: i64, nanos: u32) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, nanos).single().expect("valid time")
    }

    fn sample() -> Twin {
        let twin = Twin::new(at(1_697_117_000, 123_456_789));
        let twin = twin
            .service_patch(
                &json!({"tags": {"loc": {"region": "US"}}, "properties": {"desired": {"fw": "2.0", "cfg": {"a": [1, 2]}}}}),
                &IfMatch::Any,
                at(1_697_117_932, 310_841_987),
            )
            .expect("valid patch")
            .twin;
        twin.device_report(br#"{"fw":"1.0"}"#, None, at(1_697_118_000, 5))
            .expect("valid report")
            .twin
    }

    #[test]
    fn stored_form_has_query_paths_and_separate_metadata() {
        let twin = sample();
        let stored = serde_json::to_value(&twin).expect("serializes");
        assert_eq!(stored["etag"], json!(2));
        assert_eq!(stored["tags"]["loc"]["region"], json!("US"));
        assert_eq!(stored["properties"]["desired"]["fw"], json!("2.0"));
        assert_eq!(stored["properties"]["desired"]["$version"], json!(2));
        assert_eq!(stored["properties"]["reported"]["fw"], json!("1.0"));
        assert_eq!(stored["properties"]["reported"]["$version"], json!(2));
        assert!(stored["properties"]["desired"].get("$metadata").is_none());
        assert_eq!(
            stored["metadata"]["desired"]["cfg"]["$lastUpdated"],
            json!("2023-10-12T13:38:52.3108419Z")
        );
        assert_eq!(
            stored["metadata"]["desired"]["cfg"]["$lastUpdatedVersion"],
            json!(2)
        );
        assert!(
            stored["metadata"]["reported"]["fw"]
                .get("$lastUpdatedVersion")
                .is_none()
        );
    }

    #[test]
    fn round_trips_exactly() {
        let twin = sample();
        let text = serde_json::to_string(&twin).expect("serializes");
        let back: Twin = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, twin);
        assert_eq!(serde_json::to_string(&back).expect("serializes"), text);
        let fresh = Twin::new(at(0, 999_999_999));
        let back: Twin = serde_json::from_str(&serde_json::to_string(&fresh).expect("serializes"))
            .expect("parses");
        assert_eq!(back, fresh);
    }

    #[test]
    fn inconsistent_documents_are_refused() {
        let good = serde_json::to_value(sample()).expect("serializes");

        let mut no_version = good.clone();
        if let Some(d) = no_version["properties"]["desired"].as_object_mut() {
            d.remove("$version");
        }
        assert!(serde_json::from_value::<Twin>(no_version).is_err());

        let mut extra_value = good.clone();
        extra_value["properties"]["reported"]["new"] = json!(1);
        assert!(serde_json::from_value::<Twin>(extra_value).is_err());

        let mut bad_time = good;
        bad_time["metadata"]["desired"]["$lastUpdated"] = json!("soon");
        assert!(serde_json::from_value::<Twin>(bad_time).is_err());
    }
}
