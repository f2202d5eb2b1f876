//! Device and module twins: the service's REST calls, the device's MQTT requests and desired
//! notifications, modules, and the twin's life with its identity (delete, restart).

use std::time::Duration;

use ferrohub_mqtt::{Packet, QoS};
use ferrohub_test_support::TestHub;
use ferrohub_test_support::mqtt::MqttClient;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::{connect_identity, create_device, expect_error, send};

const RESPONSES: &str = "$iothub/twin/res/#";
const DESIRED: &str = "$iothub/twin/PATCH/properties/desired/#";

/// `GET path` with the owner's token; asserts 200, the JSON content type and the ETag header
/// (the body's `etag`, quoted), and returns the twin.
async fn get_twin(hub: &TestHub, path: &str) -> Value {
    let resp = send(hub, Method::GET, path, None, &[], None).await;
    twin_of(resp).await
}

/// A successful twin response's body, after checking its headers.
async fn twin_of(resp: Response) -> Value {
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let twin: Value = resp.json().await.unwrap();
    assert_eq!(etag, format!("\"{}\"", twin["etag"].as_str().unwrap()));
    twin
}

/// `PATCH` or `PUT` of a twin, with `If-Match` when given.
async fn write(
    hub: &TestHub,
    method: Method,
    path: &str,
    if_match: Option<&str>,
    body: &Value,
) -> Response {
    let headers: Vec<(&str, &str)> = if_match.map(|e| ("If-Match", e)).into_iter().collect();
    send(hub, method, path, None, &headers, Some(&body.to_string())).await
}

/// The next PUBLISH the client gets (other packets skipped): topic and payload.
async fn next_publish(c: &mut MqttClient) -> (String, Vec<u8>) {
    loop {
        match c.recv_within(Duration::from_secs(10)).await {
            Some(Packet::Publish(p)) => return (p.topic.as_str().to_owned(), p.payload.to_vec()),
            Some(_) => {}
            None => panic!("no PUBLISH came"),
        }
    }
}

/// Sends a twin request on `topic` and returns the response's status, topic query and body.
async fn request(c: &mut MqttClient, topic: &str, qos: QoS, body: &[u8]) -> (u16, String, Vec<u8>) {
    let rid = topic
        .split("$rid=")
        .nth(1)
        .and_then(|r| r.split('&').next())
        .unwrap()
        .to_owned();
    if qos == QoS::AtLeastOnce {
        assert!(c.publish(topic, qos, body).await.is_some(), "PUBACK");
    } else {
        c.publish(topic, qos, body).await;
    }
    let (topic, body) = next_publish(c).await;
    let rest = topic
        .strip_prefix("$iothub/twin/res/")
        .unwrap_or_else(|| panic!("a twin response, not {topic}"));
    let (status, query) = rest.split_once("/?").expect("status/?query");
    assert!(
        query.split('&').all(|item| item.contains('=')),
        "every query item is k=v: {query}"
    );
    assert!(
        query.split('&').any(|item| item == format!("$rid={rid}")),
        "the rid is echoed: {query}"
    );
    (status.parse().unwrap(), query.to_owned(), body)
}

/// `GET` over MQTT: status and body.
async fn mqtt_get(c: &mut MqttClient, rid: &str) -> (u16, Value) {
    let (status, _, body) = request(
        c,
        &format!("$iothub/twin/GET/?$rid={rid}"),
        QoS::AtLeastOnce,
        b" ",
    )
    .await;
    (status, serde_json::from_slice(&body).unwrap())
}

/// A reported patch over MQTT: status, the `$version` of the response topic, the body.
async fn mqtt_report(c: &mut MqttClient, rid: &str, patch: &[u8]) -> (u16, Option<u64>, Vec<u8>) {
    let (status, query, body) = request(
        c,
        &format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}"),
        QoS::AtMostOnce,
        patch,
    )
    .await;
    let version = query
        .split('&')
        .find_map(|item| item.strip_prefix("$version="))
        .map(|v| v.parse().unwrap());
    (status, version, body)
}

/// The next desired notification: its `$version` from the topic, and its body.
async fn next_desired(c: &mut MqttClient) -> (u64, Value) {
    let (topic, body) = next_publish(c).await;
    let version = topic
        .strip_prefix("$iothub/twin/PATCH/properties/desired/?$version=")
        .unwrap_or_else(|| panic!("a desired notification, not {topic}"))
        .parse()
        .unwrap();
    (version, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn a_new_device_has_azures_initial_twin() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "tw1").await;
    let twin = get_twin(&hub, "/twins/tw1").await;
    assert_eq!(twin["deviceId"], "tw1");
    assert!(twin.get("moduleId").is_none());
    assert_eq!(twin["etag"], "AAAAAAAAAAE=");
    assert_eq!(twin["deviceEtag"], d["etag"]);
    assert_eq!(twin["status"], "enabled");
    assert_eq!(twin["connectionState"], "Disconnected");
    assert_eq!(twin["authenticationType"], "sas");
    assert_eq!(twin["version"], 2);
    assert_eq!(twin["tags"], json!({}));
    assert_eq!(twin["capabilities"], json!({"iotEdge": false}));
    for section in ["desired", "reported"] {
        let s = &twin["properties"][section];
        assert_eq!(s["$version"], 1, "{section}");
        assert!(s["$metadata"]["$lastUpdated"].is_string(), "{section}");
    }
    assert_eq!(
        twin["properties"]["desired"]["$metadata"]["$lastUpdatedVersion"],
        1
    );

    expect_error(
        send(&hub, Method::GET, "/twins/nobody", None, &[], None).await,
        404,
        "DeviceNotFound",
    )
    .await;
    expect_error(
        send(
            &hub,
            Method::GET,
            "/twins/tw1/modules/nomod",
            None,
            &[],
            None,
        )
        .await,
        404,
        "ModuleNotFound",
    )
    .await;
    expect_error(
        write(
            &hub,
            Method::PATCH,
            "/twins/nobody",
            Some("*"),
            &json!({"tags": {}}),
        )
        .await,
        404,
        "DeviceNotFound",
    )
    .await;
}

#[tokio::test]
async fn service_writes_follow_if_match_and_the_patch_rules() {
    let hub = TestHub::start().await;
    create_device(&hub, "tw2").await;
    // Python's update_twin: quoted "*", tags and desired.
    let twin = twin_of(
        write(
            &hub,
            Method::PATCH,
            "/twins/tw2",
            Some("\"*\""),
            &json!({"tags": {"loc": {"room": "k"}}, "properties": {"desired": {"fw": "1.0", "old": 1}}}),
        )
        .await,
    )
    .await;
    assert_eq!(twin["etag"], "AAAAAAAAAAI=");
    assert_eq!(twin["version"], 3);
    assert_eq!(twin["tags"], json!({"loc": {"room": "k"}}));
    assert_eq!(twin["properties"]["desired"]["fw"], "1.0");
    assert_eq!(twin["properties"]["desired"]["$version"], 2);
    assert_eq!(
        twin["properties"]["desired"]["$metadata"]["fw"]["$lastUpdatedVersion"],
        2
    );
    let etag = format!("\"{}\"", twin["etag"].as_str().unwrap());

    // Node's updateTwin with the ETag it read: deep merge, null deletes.
    let twin = twin_of(
        write(
            &hub,
            Method::PATCH,
            "/twins/tw2",
            Some(&etag),
            &json!({"tags": {"loc": {"floor": 2}}, "properties": {"desired": {"old": null, "new": [1, 2]}}}),
        )
        .await,
    )
    .await;
    assert_eq!(twin["tags"], json!({"loc": {"room": "k", "floor": 2}}));
    assert!(twin["properties"]["desired"].get("old").is_none());
    assert_eq!(twin["properties"]["desired"]["new"], json!([1, 2]));

    // The old ETag no longer matches: 412001, nothing changed.
    let msg = expect_error(
        write(
            &hub,
            Method::PATCH,
            "/twins/tw2",
            Some(&etag),
            &json!({"tags": {"x": 1}}),
        )
        .await,
        412,
        "PreconditionFailed",
    )
    .await;
    assert!(msg.contains("ETag"), "{msg}");
    assert!(
        get_twin(&hub, "/twins/tw2").await["tags"]
            .get("x")
            .is_none()
    );

    // PUT replaces the sections it carries; reported is the device's and ignored.
    let twin = twin_of(
        write(
            &hub,
            Method::PUT,
            "/twins/tw2",
            None,
            &json!({"tags": {"only": true}, "properties": {"desired": {"a": 1}, "reported": {"r": 1}}}),
        )
        .await,
    )
    .await;
    assert_eq!(twin["tags"], json!({"only": true}));
    assert_eq!(twin["properties"]["desired"]["a"], 1);
    assert!(twin["properties"]["desired"].get("fw").is_none());
    assert!(twin["properties"]["reported"].get("r").is_none());

    // A twin read with GET can be sent back whole (Python and C# do).
    let read = get_twin(&hub, "/twins/tw2").await;
    let again = twin_of(write(&hub, Method::PUT, "/twins/tw2", Some("*"), &read).await).await;
    assert_eq!(again["properties"]["desired"]["a"], 1);

    // Refusals: 400004, nothing applied.
    let refused = [
        (Method::PUT, json!({"tags": {"a": null}})),
        (Method::PATCH, json!({"tags": {"$bad": 1}})),
        (Method::PATCH, json!({"tags": {"a.b": 1}})),
        (Method::PATCH, json!({"properties": {"reported": {"r": 1}}})),
        (Method::PATCH, json!({"tags": {"big": "x".repeat(4097)}})),
        (
            Method::PATCH,
            json!({"tags": {"n": 4_503_599_627_370_496_i64}}),
        ),
        (Method::PATCH, json!([1, 2])),
    ];
    for (method, body) in refused {
        let resp = write(&hub, method.clone(), "/twins/tw2", Some("*"), &body).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{method} {body}");
        expect_error(resp, 400, "ArgumentInvalid").await;
    }
    // Sections over their size limit (tags 8 KB).
    let big: serde_json::Map<String, Value> = (0..3)
        .map(|i| (format!("k{i}"), Value::String("x".repeat(3000))))
        .collect();
    let msg = expect_error(
        write(
            &hub,
            Method::PATCH,
            "/twins/tw2",
            Some("*"),
            &json!({"tags": big}),
        )
        .await,
        400,
        "ArgumentInvalid",
    )
    .await;
    assert!(msg.contains("tags"), "{msg}");
    // Eleven levels of objects below the section: one more than allowed.
    let deep = (0..12).fold(json!(1), |v, i| json!({ format!("l{i}"): v }));
    expect_error(
        write(
            &hub,
            Method::PATCH,
            "/twins/tw2",
            None,
            &json!({"properties": {"desired": deep}}),
        )
        .await,
        400,
        "ArgumentInvalid",
    )
    .await;
    let resp = send(
        &hub,
        Method::PATCH,
        "/twins/tw2",
        None,
        &[],
        Some("{not json"),
    )
    .await;
    expect_error(resp, 400, "ArgumentInvalid").await;
    assert_eq!(
        get_twin(&hub, "/twins/tw2").await["tags"],
        json!({"only": true})
    );
}

#[tokio::test]
async fn devices_get_and_patch_their_twin_over_mqtt() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "tw3").await;
    write(
        &hub,
        Method::PATCH,
        "/twins/tw3",
        None,
        &json!({"tags": {"secret": 1}, "properties": {"desired": {"fw": "2.0"}}}),
    )
    .await;
    let mut c = connect_identity(&hub, &d, None, true).await;
    c.subscribe(&[(RESPONSES, QoS::AtLeastOnce)]).await;

    // Python's GET: QoS 1, a single space; no tags, no $metadata.
    let (status, body) = mqtt_get(&mut c, "f6d09b74-1de0-4f88-9cdf-a44f7fea5127").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"desired": {"fw": "2.0", "$version": 2}, "reported": {"$version": 1}})
    );

    // Node's reported patch: QoS 0, compact JSON; 204, empty, $version in the topic.
    let (status, version, body) =
        mqtt_report(&mut c, "r1", br#"{"a":1,"b":null,"n":{"x":[1,2]}}"#).await;
    assert_eq!((status, version), (204, Some(2)));
    assert!(body.is_empty());
    let (status, version, _) = mqtt_report(&mut c, "r2", br#"{"a":2}"#).await;
    assert_eq!((status, version), (204, Some(3)));
    let (_, body) = mqtt_get(&mut c, "g2").await;
    assert_eq!(
        body["reported"],
        json!({"a": 2, "n": {"x": [1, 2]}, "$version": 3})
    );
    let twin = get_twin(&hub, "/twins/tw3").await;
    assert_eq!(twin["properties"]["reported"]["a"], 2);
    assert_eq!(twin["connectionState"], "Connected");
    assert_eq!(
        twin["etag"], "AAAAAAAAAAI=",
        "reported patches keep the ETag"
    );
    assert_eq!(twin["version"], 5);

    // Errors carry a JSON body with a numeric errorCode (Node reads only that).
    let (status, _, body) = mqtt_report(&mut c, "bad1", b"{not json").await;
    assert_eq!(status, 400);
    let err: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["errorCode"], 400004);
    assert!(err["message"].is_string() && err["trackingId"].is_string());
    assert!(err["timestampUtc"].is_string());
    let (status, _, body) = mqtt_report(&mut c, "bad2", br#"{"$version":4}"#).await;
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["errorCode"],
        400004
    );
    // The optional $version precondition.
    let (status, _, body) = request(
        &mut c,
        "$iothub/twin/PATCH/properties/reported/?$rid=v1&$version=1",
        QoS::AtMostOnce,
        br#"{"a":3}"#,
    )
    .await;
    assert_eq!(status, 412);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["errorCode"],
        412001
    );
    let (status, query, _) = request(
        &mut c,
        "$iothub/twin/PATCH/properties/reported/?$rid=v2&$version=3",
        QoS::AtMostOnce,
        br#"{"a":3}"#,
    )
    .await;
    assert_eq!(status, 204);
    assert!(query.ends_with("&$version=4"), "{query}");
    let (status, _, body) = request(
        &mut c,
        "$iothub/twin/PATCH/properties/reported/?$rid=v3&$version=soon",
        QoS::AtMostOnce,
        br#"{"a":3}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["errorCode"],
        400004
    );
}

#[tokio::test]
async fn a_devices_requests_are_answered_in_order() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "tw4").await;
    let mut c = connect_identity(&hub, &d, None, true).await;
    c.subscribe(&[(RESPONSES, QoS::AtMostOnce)]).await;
    // Many patches at once, without waiting: each applies in the order sent.
    for i in 0..20 {
        c.publish(
            &format!("$iothub/twin/PATCH/properties/reported/?$rid=p{i}"),
            QoS::AtMostOnce,
            format!(r#"{{"i":{i}}}"#).as_bytes(),
        )
        .await;
    }
    for i in 0..20 {
        let (topic, _) = next_publish(&mut c).await;
        assert_eq!(
            topic,
            format!("$iothub/twin/res/204/?$rid=p{i}&$version={}", i + 2)
        );
    }
    let twin = get_twin(&hub, "/twins/tw4").await;
    assert_eq!(twin["properties"]["reported"]["i"], 19);
}

#[tokio::test]
async fn subscribed_devices_hear_of_desired_changes() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "tw5").await;
    let mut c = connect_identity(&hub, &d, None, true).await;

    // Not subscribed: nothing is sent, nothing is queued.
    write(
        &hub,
        Method::PATCH,
        "/twins/tw5",
        None,
        &json!({"properties": {"desired": {"early": 1}}}),
    )
    .await;
    c.subscribe(&[(DESIRED, QoS::AtLeastOnce)]).await;

    write(
        &hub,
        Method::PATCH,
        "/twins/tw5",
        Some("*"),
        &json!({"properties": {"desired": {"fw": "2.0", "early": null}}}),
    )
    .await;
    let (version, body) = next_desired(&mut c).await;
    assert_eq!(
        version, 3,
        "the first notification is the change after subscribing"
    );
    assert_eq!(body, json!({"fw": "2.0", "early": null, "$version": 3}));

    // Tags only: no notification; the next one is the next desired write.
    write(
        &hub,
        Method::PATCH,
        "/twins/tw5",
        None,
        &json!({"tags": {"t": 1}}),
    )
    .await;
    // A replace sends the diff: new values and null for what went away.
    write(
        &hub,
        Method::PUT,
        "/twins/tw5",
        None,
        &json!({"properties": {"desired": {"b": {"c": 1}}}}),
    )
    .await;
    let (version, body) = next_desired(&mut c).await;
    assert_eq!(version, 4);
    assert_eq!(body, json!({"fw": null, "b": {"c": 1}, "$version": 4}));
    // A section set to null clears it, with null for every member.
    write(
        &hub,
        Method::PATCH,
        "/twins/tw5",
        None,
        &json!({"properties": {"desired": null}}),
    )
    .await;
    let (version, body) = next_desired(&mut c).await;
    assert_eq!(version, 5);
    assert_eq!(body, json!({"b": null, "$version": 5}));
    let twin = get_twin(&hub, "/twins/tw5").await;
    assert_eq!(twin["properties"]["desired"]["$version"], 5);
    assert_eq!(twin["tags"], json!({"t": 1}));
}

#[tokio::test]
async fn a_persistent_session_keeps_its_twin_subscriptions() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "tw6").await;
    {
        let mut c = connect_identity(&hub, &d, None, false).await;
        c.subscribe(&[(RESPONSES, QoS::AtLeastOnce), (DESIRED, QoS::AtLeastOnce)])
            .await;
        // The connection handles what it reads in order: once a GET is answered, the
        // subscriptions before it are stored.
        assert_eq!(mqtt_get(&mut c, "before").await.0, 200);
    }
    // Python reconnects without subscribing again, and GETs the twin at once.
    let mut c = connect_identity(&hub, &d, None, false).await;
    let (status, body) = mqtt_get(&mut c, "after-reconnect").await;
    assert_eq!(status, 200);
    assert_eq!(body["desired"]["$version"], 1);
    write(
        &hub,
        Method::PATCH,
        "/twins/tw6",
        None,
        &json!({"properties": {"desired": {"x": 1}}}),
    )
    .await;
    let (version, body) = next_desired(&mut c).await;
    assert_eq!((version, body), (2, json!({"x": 1, "$version": 2})));
}

#[tokio::test]
async fn modules_have_twins_of_their_own() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "tw7").await;
    let mut m = connect_identity(&hub, &d, Some("mod1"), true).await;
    m.subscribe(&[(RESPONSES, QoS::AtMostOnce), (DESIRED, QoS::AtMostOnce)])
        .await;
    let (status, version, _) = mqtt_report(&mut m, "m1", br#"{"mod":true}"#).await;
    assert_eq!((status, version), (204, Some(2)));

    let twin = twin_of(
        write(
            &hub,
            Method::PATCH,
            "/twins/tw7/modules/mod1",
            Some("*"),
            &json!({"tags": {"kind": "edge"}, "properties": {"desired": {"rate": 5}}}),
        )
        .await,
    )
    .await;
    assert_eq!(twin["deviceId"], "tw7");
    assert_eq!(twin["moduleId"], "mod1");
    assert!(twin.get("capabilities").is_none());
    assert_eq!(twin["connectionState"], "Connected");
    assert_eq!(twin["properties"]["reported"]["mod"], true);
    let (version, body) = next_desired(&mut m).await;
    assert_eq!((version, body), (2, json!({"rate": 5, "$version": 2})));

    // The device's twin is its own.
    let device_twin = get_twin(&hub, "/twins/tw7").await;
    assert_eq!(device_twin["tags"], json!({}));
    assert!(device_twin["properties"]["reported"].get("mod").is_none());
    assert_eq!(device_twin["connectionState"], "Disconnected");
    let module: Value = send(
        &hub,
        Method::GET,
        "/devices/tw7/modules/mod1",
        None,
        &[],
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(module["connectionState"], "Connected");

    let twin = twin_of(
        write(
            &hub,
            Method::PUT,
            "/twins/tw7/modules/mod1",
            None,
            &json!({"tags": {}}),
        )
        .await,
    )
    .await;
    assert_eq!(twin["tags"], json!({}));
    assert_eq!(
        get_twin(&hub, "/twins/tw7/modules/mod1").await["properties"]["desired"]["rate"],
        5
    );
}

#[tokio::test]
async fn a_twin_lives_and_dies_with_its_identity() {
    let hub = TestHub::start().await;
    create_device(&hub, "tw8").await;
    send(
        &hub,
        Method::PUT,
        "/devices/tw8/modules/m",
        None,
        &[],
        Some("{}"),
    )
    .await;
    for path in ["/twins/tw8", "/twins/tw8/modules/m"] {
        write(&hub, Method::PATCH, path, None, &json!({"tags": {"t": 1}})).await;
    }
    let resp = send(
        &hub,
        Method::DELETE,
        "/devices/tw8",
        None,
        &[("If-Match", "*")],
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    expect_error(
        send(&hub, Method::GET, "/twins/tw8", None, &[], None).await,
        404,
        "DeviceNotFound",
    )
    .await;
    create_device(&hub, "tw8").await;
    send(
        &hub,
        Method::PUT,
        "/devices/tw8/modules/m",
        None,
        &[],
        Some("{}"),
    )
    .await;
    for path in ["/twins/tw8", "/twins/tw8/modules/m"] {
        let twin = get_twin(&hub, path).await;
        assert_eq!(twin["tags"], json!({}), "{path}");
        assert_eq!(twin["etag"], "AAAAAAAAAAE=", "{path}");
    }
}

#[tokio::test]
async fn twins_survive_a_restart() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "tw9").await;
    write(
        &hub,
        Method::PATCH,
        "/twins/tw9",
        None,
        &json!({"tags": {"keep": 1}, "properties": {"desired": {"d": 2}}}),
    )
    .await;
    {
        let mut c = connect_identity(&hub, &d, None, true).await;
        c.subscribe(&[(RESPONSES, QoS::AtMostOnce)]).await;
        let (status, _, _) = mqtt_report(&mut c, "r", br#"{"r":3}"#).await;
        assert_eq!(status, 204, "acknowledged only once durable");
    }
    let before = get_twin(&hub, "/twins/tw9").await;
    let data_dir = hub.data_dir().to_owned();
    let dir = hub.stop().await;

    let hub = TestHub::start_in(&data_dir).await;
    let after = get_twin(&hub, "/twins/tw9").await;
    for key in ["etag", "version", "tags", "properties"] {
        assert_eq!(after[key], before[key], "{key}");
    }
    assert_eq!(after["properties"]["reported"]["r"], 3);
    drop(hub);
    drop(dir);
}

#[tokio::test]
async fn the_openapi_document_lists_the_twin_routes() {
    let hub = TestHub::start().await;
    let doc = super::openapi(&hub).await;
    for (path, methods) in [
        ("/twins/{id}", ["get", "patch", "put"]),
        ("/twins/{id}/modules/{mid}", ["get", "patch", "put"]),
    ] {
        for m in methods {
            assert!(doc["paths"][path][m].is_object(), "{m} {path}");
        }
    }
}

/// Runs an import or export job to its end; returns the finished job.
async fn run_job(hub: &TestHub, body: Value) -> Value {
    let resp = send(
        hub,
        Method::POST,
        "/jobs/create",
        None,
        &[],
        Some(&body.to_string()),
    )
    .await;
    let status = resp.status();
    let job: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{job}");
    let path = format!("/jobs/{}", job["jobId"].as_str().unwrap());
    ferrohub_test_support::eventually(Duration::from_secs(60), "the job to finish", || async {
        let job: Value = send(hub, Method::GET, &path, None, &[], None)
            .await
            .json()
            .await
            .unwrap();
        matches!(
            job["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
        .then_some(job)
    })
    .await
}

#[tokio::test]
async fn twins_travel_through_export_and_import() {
    let hub = TestHub::start().await;
    create_device(&hub, "ex1").await;
    create_device(&hub, "ex2").await;
    send(
        &hub,
        Method::PUT,
        "/devices/ex1/modules/m",
        None,
        &[],
        Some("{}"),
    )
    .await;
    write(
        &hub,
        Method::PATCH,
        "/twins/ex1",
        None,
        &json!({"tags": {"site": "a"}, "properties": {"desired": {"rate": 5}}}),
    )
    .await;
    write(
        &hub,
        Method::PATCH,
        "/twins/ex1/modules/m",
        None,
        &json!({"tags": {"mod": 1}}),
    )
    .await;
    let out = super::jobs::job_dir(&hub);
    let uri = format!("file://{}", out.path().display());
    let done = run_job(
        &hub,
        json!({"type": "export", "outputBlobContainerUri": uri}),
    )
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    let lines: Vec<Value> = std::fs::read_to_string(out.path().join("devices.txt"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let ex1 = &lines[0];
    assert_eq!(ex1["twinETag"], "AAAAAAAAAAI=");
    assert_eq!(ex1["tags"], json!({"site": "a"}));
    assert_eq!(ex1["properties"]["desired"]["rate"], 5);
    assert_eq!(ex1["properties"]["desired"]["$version"], 2);
    assert!(ex1["properties"]["desired"]["$metadata"].is_object());
    assert_eq!(ex1["properties"]["reported"]["$version"], 1);
    assert_eq!(lines[1]["moduleId"], "m");
    assert_eq!(lines[1]["tags"], json!({"mod": 1}));
    assert_eq!(
        lines[2]["tags"],
        json!({}),
        "a twin never written exports empty"
    );

    // Into a fresh hub: the tags and desired properties come along.
    let fresh = TestHub::start().await;
    let input = super::jobs::job_dir(&fresh);
    std::fs::copy(
        out.path().join("devices.txt"),
        input.path().join("devices.txt"),
    )
    .unwrap();
    let uri = format!("file://{}", input.path().display());
    let done = run_job(
        &fresh,
        json!({"type": "import", "inputBlobContainerUri": uri, "outputBlobContainerUri": uri}),
    )
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["errorCount"], 0, "{done}");
    let twin = get_twin(&fresh, "/twins/ex1").await;
    assert_eq!(twin["tags"], json!({"site": "a"}));
    assert_eq!(twin["properties"]["desired"]["rate"], 5);
    assert_eq!(
        get_twin(&fresh, "/twins/ex1/modules/m").await["tags"],
        json!({"mod": 1})
    );
}

#[tokio::test]
async fn bulk_records_update_twins_and_notify() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "bk1").await;
    create_device(&hub, "bk2").await;
    let mut c = connect_identity(&hub, &d, None, true).await;
    c.subscribe(&[(DESIRED, QoS::AtMostOnce)]).await;
    let body = json!([
        {"id": "bk1", "importMode": "updateTwin", "properties": {"desired": {"x": 1}}},
        {"id": "bk2", "importMode": "updateTwinIfMatchETag", "twinETag": "AAAAAAAAAAk=",
         "tags": {"no": 1}},
        {"id": "bk3", "importMode": "create", "tags": {"new": true}}
    ]);
    let resp = send(
        &hub,
        Method::POST,
        "/devices",
        None,
        &[],
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let result: Value = resp.json().await.unwrap();
    assert_eq!(result["isSuccessful"], false);
    assert_eq!(result["errors"].as_array().unwrap().len(), 1);
    assert_eq!(result["errors"][0]["deviceId"], "bk2");
    assert_eq!(result["errors"][0]["errorCode"], "PreconditionFailed");
    let (version, body) = next_desired(&mut c).await;
    assert_eq!((version, body), (2, json!({"x": 1, "$version": 2})));
    assert_eq!(
        get_twin(&hub, "/twins/bk3").await["tags"],
        json!({"new": true})
    );
    assert_eq!(get_twin(&hub, "/twins/bk2").await["tags"], json!({}));
}

#[tokio::test]
async fn modules_receive_no_cloud_to_device_messages() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "mc1").await;
    let mut m = connect_identity(&hub, &d, Some("mod"), true).await;
    // Neither the device's queue nor a module queue can be subscribed (§7.3).
    let codes = m
        .subscribe(&[
            (
                "devices/mc1/modules/mod/messages/devicebound/#",
                QoS::AtLeastOnce,
            ),
            ("devices/mc1/messages/devicebound/#", QoS::AtLeastOnce),
            ("devices/mc1/modules/mod/inputs/#", QoS::AtLeastOnce),
        ])
        .await;
    assert_eq!(
        codes,
        vec![
            ferrohub_mqtt::codec::SubscribeReturnCode::Failure,
            ferrohub_mqtt::codec::SubscribeReturnCode::Failure,
            ferrohub_mqtt::codec::SubscribeReturnCode::Success(QoS::AtLeastOnce),
        ]
    );
    // And the service cannot address a module.
    let resp = send(
        &hub,
        Method::POST,
        "/devices/mc1/modules/mod/messages/deviceBound",
        None,
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(resp.headers().contains_key("iothub-errorcode"));
    // A message for the device stays the device's: the module connection gets nothing, and the
    // next thing it gets is the answer to its own request.
    let resp = send(
        &hub,
        Method::POST,
        "/devices/mc1/messages/deviceBound",
        None,
        &[],
        Some("for the device"),
    )
    .await;
    assert!(resp.status().is_success());
    m.subscribe(&[(RESPONSES, QoS::AtMostOnce)]).await;
    let (status, _) = mqtt_get(&mut m, "after").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_twin_shows_the_model_id_a_device_announced() {
    use ferrohub_auth::{SymmetricKey, mint};
    use ferrohub_mqtt::codec::ConnectReturnCode;
    use ferrohub_test_support::mqtt::Transport;

    let hub = TestHub::start().await;
    let d = create_device(&hub, "pnp1").await;
    assert_eq!(get_twin(&hub, "/twins/pnp1").await["modelId"], "");
    let key = d["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap();
    let token = mint(
        "localhost/devices/pnp1",
        &SymmetricKey::from_base64(key).unwrap(),
        ferrohub_test_support::now_secs() + 600,
        None,
    );
    let ca = hub.ca_pem();
    let (_c, ack) = MqttClient::connect(
        Transport::Tls(hub.mqtt_addr(), &ca),
        "pnp1",
        "localhost/pnp1/?api-version=2020-09-30&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1",
        &token,
        true,
        60,
        None,
    )
    .await;
    assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::Accepted));
    let twin = get_twin(&hub, "/twins/pnp1").await;
    assert_eq!(twin["modelId"], "dtmi:com:example:Thermostat;1");
    assert_eq!(twin["connectionState"], "Connected");
}
