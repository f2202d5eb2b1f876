//! The queries the SDKs, tools and users actually send (twins-methods contract §5, §6), on
//! sample twins, module twins and job records.

mod common;

use common::{devices, ids, jobs, modules, pages, run};
use ferrohub_query::{Collection, Condition, ItemType, Query};
use serde_json::json;

#[test]
fn select_star_returns_whole_twins_in_key_order() {
    let rows = run("SELECT * FROM devices", &devices());
    assert_eq!(ids(&rows), ["AZ3166Device", "d1", "d2", "e2e-device"]);
    assert_eq!(rows[0], devices()[0]);
    let q = Query::parse("SELECT * FROM devices").expect("parses");
    assert_eq!(q.item_type(), ItemType::Twin);
    assert_eq!(q.item_type().as_str(), "twin");
}

#[test]
fn region_and_send_frequency() {
    let rows = run(
        "SELECT * FROM devices WHERE tags.location.region = 'US' AND properties.reported.telemetryConfig.sendFrequencyInSecs >= 60",
        &devices(),
    );
    // 60 (integer) and 90.5 (float) qualify; d1's 30 does not, d2 is in the EU.
    assert_eq!(ids(&rows), ["AZ3166Device", "e2e-device"]);
}

#[test]
fn in_list() {
    let rows = run(
        "SELECT * FROM devices WHERE properties.reported.connectivity IN ['wired', 'wifi']",
        &devices(),
    );
    assert_eq!(ids(&rows), ["AZ3166Device", "d1"]);
}

#[test]
fn is_defined_counts_null_as_defined() {
    let rows = run(
        "SELECT * FROM devices WHERE is_defined(properties.reported.connectivity)",
        &devices(),
    );
    assert_eq!(ids(&rows), ["AZ3166Device", "d1", "e2e-device"]);
    let rows = run(
        "SELECT * FROM devices WHERE NOT IS_DEFINED(properties.reported.connectivity)",
        &devices(),
    );
    assert_eq!(ids(&rows), ["d2"]);
}

#[test]
fn device_id_or() {
    let rows = run(
        "SELECT * FROM devices WHERE deviceId = 'd1' OR deviceId = 'd2'",
        &devices(),
    );
    assert_eq!(ids(&rows), ["d1", "d2"]);
    let q = Query::parse("SELECT * FROM devices WHERE deviceId = 'd1' OR deviceId = 'd2'")
        .expect("parses");
    assert_eq!(
        q.key_lookup().device_ids,
        Some(vec!["d1".to_owned(), "d2".to_owned()])
    );
}

#[test]
fn count_without_group_by() {
    let rows = run(
        "SELECT COUNT() as totalNumberOfDevices FROM devices",
        &devices(),
    );
    assert_eq!(rows, [json!({"totalNumberOfDevices": 4})]);
    // No alias: Azure's generated name.
    assert_eq!(
        run("SELECT COUNT() FROM devices", &devices()),
        [json!({"$1": 4})]
    );
    // Nothing matches: still one row.
    assert_eq!(
        run(
            "SELECT COUNT() AS n FROM devices WHERE deviceId = 'nope'",
            &devices()
        ),
        [json!({"n": 0})]
    );
    let q = Query::parse("SELECT COUNT() as TotalNumberOfDevices FROM devices").expect("parses");
    assert_eq!(q.item_type(), ItemType::Raw);
}

#[test]
fn count_group_by_status() {
    let rows = run(
        "SELECT COUNT() AS numberOfDevices, properties.reported.telemetryConfig.status AS status FROM devices GROUP BY properties.reported.telemetryConfig.status",
        &devices(),
    );
    assert_eq!(
        rows,
        [
            json!({"numberOfDevices": 3, "status": "Success"}),
            json!({"numberOfDevices": 1, "status": "Pending"}),
        ]
    );
}

#[test]
fn group_by_undefined_key_is_its_own_group_without_the_member() {
    let rows = run(
        "SELECT properties.reported.connectivity AS c, COUNT() AS n FROM devices GROUP BY properties.reported.connectivity",
        &devices(),
    );
    assert_eq!(
        rows,
        [
            json!({"c": "wired", "n": 1}),
            json!({"c": "wifi", "n": 1}),
            json!({"n": 1}),
            json!({"c": null, "n": 1}),
        ]
    );
}

#[test]
fn modules_by_status_and_device() {
    let rows = run(
        "SELECT * FROM devices.modules WHERE properties.reported.status = 'scanning' AND deviceId IN ['device1', 'device2']",
        &modules(),
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["deviceId"], "device1");
    assert_eq!(rows[0]["moduleId"], "scanner");
    let q = Query::parse("SELECT * FROM devices.modules WHERE deviceId IN ['device1']")
        .expect("parses");
    assert_eq!(q.item_type(), ItemType::Twin);
}

#[test]
fn modules_by_prefixed_module_id() {
    let text = "SELECT * FROM devices.modules WHERE devices.modules.moduleId = '$edgeAgent' AND deviceId in ['d1']";
    let rows = run(text, &modules());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["moduleId"], "$edgeAgent");
    let lookup = Query::parse(text).expect("parses").key_lookup();
    assert_eq!(lookup.device_ids, Some(vec!["d1".to_owned()]));
    assert_eq!(lookup.child_ids, Some(vec!["$edgeAgent".to_owned()]));
}

#[test]
fn module_projection_keyed_by_last_segment() {
    let rows = run(
        "select properties.reported.State from devices.modules where properties.reported.status = 'idle'",
        &modules(),
    );
    // The module has no `State`: the member is left out, the row is still there.
    assert_eq!(rows, [json!({})]);
    let mut with_state = modules();
    with_state[3]["properties"]["reported"]["State"] = json!("Running");
    let rows = run(
        "select properties.reported.State from devices.modules where properties.reported.status = 'idle'",
        &with_state,
    );
    assert_eq!(rows, [json!({"State": "Running"})]);
}

#[test]
fn jobs_with_all_prefixed_conditions() {
    let text = "SELECT * FROM devices.jobs WHERE devices.jobs.deviceId = 'myDeviceId' AND devices.jobs.jobType = 'scheduleTwinUpdate' AND devices.jobs.status = 'completed' AND devices.jobs.createdTimeUtc > '2016-09-01'";
    // The docs filter on `createdTimeUtc`; job records have `createdDateTimeUtc`, which the
    // name stands for. The record created in August is left out.
    assert_eq!(run(text, &jobs()), [jobs()[0].clone()]);
    let q = Query::parse(text).expect("parses");
    assert_eq!(q.item_type(), ItemType::DeviceJob);
    assert_eq!(q.item_type().as_str(), "deviceJob");
}

#[test]
fn jobs_by_job_id() {
    let rows = run(
        "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'myJobId'",
        &jobs(),
    );
    assert_eq!(ids(&rows), ["myDeviceId", "other"]);
    let q = Query::parse("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'myJobId'")
        .expect("parses");
    assert_eq!(q.key_lookup().child_ids, Some(vec!["myJobId".to_owned()]));
    assert_eq!(q.key_lookup().device_ids, None);
}

#[test]
fn projection_names_in_canonical_case() {
    let rows = run(
        "SELECT DeviceId, LastActivityTime FROM devices WHERE status = 'enabled' AND connectionState = 'Disconnected'",
        &devices(),
    );
    assert_eq!(
        rows,
        [
            json!({"deviceId": "AZ3166Device", "lastActivityTime": "2021-05-07T00:50:38.0543092Z"}),
            json!({"deviceId": "d2", "lastActivityTime": "2021-05-07T00:50:38.0543092Z"}),
        ]
    );
}

#[test]
fn startswith_and_id_alias() {
    let rows = run(
        "SELECT deviceId FROM devices WHERE STARTSWITH(deviceId, 'e2e-')",
        &devices(),
    );
    assert_eq!(rows, [json!({"deviceId": "e2e-device"})]);
    // Microsoft's C# sample: STARTSWITH(id, '{prefix}').
    let rows = run(
        "SELECT * FROM devices WHERE STARTSWITH(id, 'd')",
        &devices(),
    );
    assert_eq!(ids(&rows), ["d1", "d2"]);
    let rows = run(
        "SELECT * FROM devices WHERE starts_with(id, 'D')",
        &devices(),
    );
    assert!(rows.is_empty(), "case-sensitive");
    let rows = run(
        "SELECT * FROM devices WHERE ENDS_WITH(deviceId, 'Device') OR CONTAINS(deviceId, '2e-')",
        &devices(),
    );
    assert_eq!(ids(&rows), ["AZ3166Device", "e2e-device"]);
}

#[test]
fn job_query_conditions() {
    let all = Condition::parse("*").expect("parses");
    assert_eq!(all, Condition::All);
    assert!(devices().iter().all(|d| all.matches(d)));
    let one = Condition::parse("deviceId = 'd1'").expect("parses");
    let selected: Vec<_> = devices().into_iter().filter(|d| one.matches(d)).collect();
    assert_eq!(ids(&selected), ["d1"]);
    let two = Condition::parse("deviceId IN ['d1','d2']").expect("parses");
    let selected: Vec<_> = devices().into_iter().filter(|d| two.matches(d)).collect();
    assert_eq!(ids(&selected), ["d1", "d2"]);
    assert_eq!(
        two.key_lookup(Collection::Devices).device_ids,
        Some(vec!["d1".to_owned(), "d2".to_owned()])
    );
    // Node's scheduleTwinUpdate condition, and the optional WHERE keyword.
    let node = Condition::parse("deviceId IN ['dev1']").expect("parses");
    assert_eq!(
        node,
        Condition::parse("WHERE deviceId IN ['dev1']").expect("parses")
    );
    // The job runs as SELECT * over devices.
    let q = Query::select_all(Collection::Devices, two);
    assert_eq!(
        q.to_string(),
        "SELECT * FROM devices WHERE deviceId IN ['d1', 'd2']"
    );
}

#[test]
fn top_limits_over_pages() {
    let q = Query::parse("SELECT TOP 3 deviceId FROM devices").expect("parses");
    let ps = pages(&q, &devices(), 2);
    assert_eq!(ps.len(), 2);
    assert_eq!(ps[0].rows.len(), 2);
    assert_eq!(ps[1].rows, [json!({"deviceId": "d2"})]);
    assert!(ps[1].continuation.is_none());
    let q = Query::parse("SELECT TOP 0 * FROM devices").expect("parses");
    assert!(pages(&q, &devices(), 2)[0].rows.is_empty());
}

#[test]
fn exactly_full_last_page_has_no_continuation() {
    // Contract: 3 results, page size 3 → no second page.
    let q = Query::parse("SELECT * FROM devices WHERE deviceId != 'd2'").expect("parses");
    let ps = pages(&q, &devices(), 3);
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].rows.len(), 3);
    assert!(ps[0].continuation.is_none());
    // Page size 1: three pages of one.
    let ps = pages(&q, &devices(), 1);
    assert_eq!(
        ps.iter().map(|p| p.rows.len()).collect::<Vec<_>>(),
        [1, 1, 1]
    );
    assert!(ps[..2].iter().all(|p| p.continuation.is_some()));
}

#[test]
fn aggregate_pages() {
    let q = Query::parse(
        "SELECT tags.location.region AS region, COUNT() AS n FROM devices GROUP BY tags.location.region",
    )
    .expect("parses");
    let ps = pages(&q, &devices(), 1);
    let rows: Vec<_> = ps.iter().flat_map(|p| p.rows.clone()).collect();
    assert_eq!(
        rows,
        [
            json!({"region": "US", "n": 3}),
            json!({"region": "EU", "n": 1})
        ]
    );
    assert_eq!(ps.len(), 2);
}

#[test]
fn sum_avg_min_max() {
    let rows = run(
        "SELECT SUM(properties.reported.telemetryConfig.sendFrequencyInSecs) AS s, AVG(properties.reported.telemetryConfig.sendFrequencyInSecs) AS a, MIN(deviceId) AS lo, MAX(properties.reported.telemetryConfig.sendFrequencyInSecs) AS hi FROM devices",
        &devices(),
    );
    assert_eq!(
        rows,
        [json!({"s": 300.5, "a": 75.125, "lo": "AZ3166Device", "hi": 120})]
    );
    let rows = run(
        "SELECT SUM(tags.none) AS s, AVG(tags.none) AS a, MAX(tags.none) AS m FROM devices",
        &devices(),
    );
    assert_eq!(rows, [json!({"s": 0})]);
}

#[test]
fn comparisons_need_same_kind() {
    let rows = devices();
    // A string never equals a number, and != does not select across kinds either.
    assert!(
        run(
            "SELECT * FROM devices WHERE properties.reported.connectivity = 1",
            &rows
        )
        .is_empty()
    );
    assert!(
        run(
            "SELECT * FROM devices WHERE properties.reported.connectivity != 1",
            &rows
        )
        .is_empty()
    );
    // null equals null only.
    assert_eq!(
        ids(&run(
            "SELECT * FROM devices WHERE properties.reported.connectivity = null",
            &rows
        )),
        ["e2e-device"]
    );
    // Objects do not compare.
    assert!(run("SELECT * FROM devices WHERE tags = tags", &rows).is_empty());
    // Properties compared with each other.
    assert_eq!(
        run(
            "SELECT * FROM devices WHERE tags.location.region = tags.location.region",
            &rows
        )
        .len(),
        4
    );
    // Numbers compare exactly across integer and float.
    assert_eq!(
        ids(&run(
            "SELECT * FROM devices WHERE properties.reported.telemetryConfig.sendFrequencyInSecs = 60.0",
            &rows
        )),
        ["AZ3166Device"]
    );
}

#[test]
fn arithmetic_and_hex() {
    let rows = devices();
    assert_eq!(
        ids(&run(
            "SELECT * FROM devices WHERE properties.reported.telemetryConfig.sendFrequencyInSecs * 2 = 0x78",
            &rows
        )),
        ["AZ3166Device"]
    );
    assert_eq!(
        ids(&run(
            "SELECT * FROM devices WHERE properties.reported.telemetryConfig.sendFrequencyInSecs % 60 = 0 AND -(version) < -1",
            &rows
        )),
        ["AZ3166Device", "d2"]
    );
    // Division by zero is undefined, not an error.
    assert!(run("SELECT * FROM devices WHERE version / 0 = 1", &rows).is_empty());
}

#[test]
fn three_valued_logic() {
    let rows = devices();
    // NOT of undefined is undefined: devices without connectivity are not selected.
    assert_eq!(
        ids(&run(
            "SELECT * FROM devices WHERE NOT (properties.reported.connectivity = 'wired')",
            &rows
        )),
        ["d1"]
    );
    // NIN likewise needs a primitive.
    assert_eq!(
        ids(&run(
            "SELECT * FROM devices WHERE properties.reported.connectivity NIN ['wired']",
            &rows
        )),
        ["d1", "e2e-device"]
    );
    assert_eq!(
        ids(&run(
            "SELECT * FROM devices WHERE properties.reported.connectivity NOT IN ['wired']",
            &rows
        )),
        ["d1", "e2e-device"]
    );
    // false AND undefined is false, so its negation is true.
    assert_eq!(
        run(
            "SELECT * FROM devices WHERE NOT (tags.none = 1 AND deviceId = 'x')",
            &rows
        )
        .len(),
        4
    );
    // true OR undefined is true.
    assert_eq!(
        run(
            "SELECT * FROM devices WHERE tags.none = 1 OR status = 'enabled'",
            &rows
        )
        .len(),
        4
    );
}

#[test]
fn type_functions() {
    let rows = devices();
    let q = |f: &str| {
        ids(&run(
            &format!("SELECT * FROM devices WHERE {f}(properties.reported.connectivity)"),
            &rows,
        ))
    };
    assert_eq!(q("IS_NULL"), ["e2e-device"]);
    assert_eq!(q("IS_STRING"), ["AZ3166Device", "d1"]);
    assert_eq!(q("IS_PRIMITIVE"), ["AZ3166Device", "d1", "e2e-device"]);
    assert!(q("IS_NUMBER").is_empty());
    assert_eq!(
        run(
            "SELECT * FROM devices WHERE IS_OBJECT(tags) AND IS_BOOL(capabilities.iotEdge)",
            &rows
        )
        .len(),
        4
    );
    assert!(run("SELECT * FROM devices WHERE IS_ARRAY(tags)", &rows).is_empty());
}

#[test]
fn brackets_and_escapes_in_paths_and_strings() {
    let mut rows = devices();
    rows[1]["tags"]["my key"] = json!("it's");
    rows[1]["tags"]["list"] = json!([10, 20]);
    assert_eq!(
        ids(&run(
            r"SELECT * FROM devices WHERE tags['my key'] = 'it\'s'",
            &rows
        )),
        ["d1"]
    );
    assert_eq!(
        ids(&run(
            r#"SELECT * FROM devices WHERE tags["my key"] = "it's""#,
            &rows
        )),
        ["d1"]
    );
    assert_eq!(
        ids(&run("SELECT * FROM devices WHERE tags.list[1] = 20", &rows)),
        ["d1"]
    );
    assert_eq!(
        ids(&run(
            r"SELECT * FROM devices WHERE tags['my key'] = 'it\u0027s'",
            &rows
        )),
        ["d1"]
    );
}

#[test]
fn keywords_and_names_are_case_insensitive() {
    let rows = devices();
    let a = run(
        "select * from DEVICES where TAGS.location.region = 'US' and Properties.Reported.connectivity = 'wifi'",
        &rows,
    );
    assert_eq!(ids(&a), ["d1"]);
    // User property names stay case-sensitive.
    assert!(
        run(
            "SELECT * FROM devices WHERE tags.Location.region = 'US'",
            &rows
        )
        .is_empty()
    );
}
