//! The MQTT device endpoint: CONNECT rules, telemetry into the log, sessions, revocation.

use std::time::Duration;

use ferrohub_auth::{SymmetricKey, mint};
use ferrohub_mqtt::codec::{ConnectReturnCode, LastWill, SubscribeReturnCode};
use ferrohub_mqtt::{Packet, QoS, TopicName};
use ferrohub_test_support::mqtt::{MqttClient, Transport};
use ferrohub_test_support::{TestHub, now_secs};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{all_events, create_device, send, wait_device, wait_events};

fn key_of(device: &Value) -> SymmetricKey {
    SymmetricKey::from_base64(
        device["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap(),
    )
    .unwrap()
}

fn token(device: &Value, expiry: u64) -> String {
    let id = device["deviceId"].as_str().unwrap();
    mint(
        &format!("localhost/devices/{id}"),
        &key_of(device),
        expiry,
        None,
    )
}

fn username(id: &str) -> String {
    format!("localhost/{id}/?api-version=2021-04-12&DeviceClientType=test%2F1.0")
}

async fn connect(
    hub: &TestHub,
    id: &str,
    password: &str,
    clean: bool,
) -> (MqttClient, Option<ferrohub_mqtt::codec::ConnAck>) {
    let ca = hub.ca_pem();
    MqttClient::connect(
        Transport::Tls(hub.mqtt_addr(), &ca),
        id,
        &username(id),
        password,
        clean,
        60,
        None,
    )
    .await
}

#[tokio::test]
async fn telemetry_over_tls_is_acknowledged_once_durable() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "m1").await;
    let ca = hub.ca_pem();
    let (mut c, ack) = MqttClient::connect(
        Transport::Tls(hub.mqtt_addr(), &ca),
        "m1",
        "localhost/m1/?api-version=2020-09-30&DeviceClientType=x&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1",
        &token(&d, now_secs() + 600),
        false,
        60,
        None,
    )
    .await;
    let ack = ack.expect("CONNACK");
    assert_eq!(ack.code, ConnectReturnCode::Accepted);
    assert!(!ack.session_present);

    let topic = "devices/m1/messages/events/%24.mid=msg-1&%24.cid=corr-1&%24.ct=application%2Fjson&%24.ce=utf-8&temp=21.5&flag&empty=";
    let puback = c.publish(topic, QoS::AtLeastOnce, br#"{"t":21.5}"#).await;
    assert!(puback.is_some(), "PUBACK");
    assert!(
        c.publish("devices/m1/messages/events/", QoS::AtMostOnce, b"q0")
            .await
            .is_none()
    );
    // The QoS 0 message has no acknowledgement: wait until it is in the log.
    let events = wait_events(&hub, 2).await;
    assert_eq!(events.len(), 2);
    let e = &events[0];
    let sys = &e["systemProperties"];
    assert_eq!(sys["iothub-connection-device-id"], "m1");
    assert_eq!(sys["message-id"], "msg-1");
    assert_eq!(sys["correlation-id"], "corr-1");
    assert_eq!(sys["content-type"], "application/json");
    assert_eq!(sys["content-encoding"], "utf-8");
    assert_eq!(sys["dt-dataschema"], "dtmi:com:example:Thermostat;1");
    assert_eq!(e["properties"]["temp"], "21.5");
    assert_eq!(e["properties"]["flag"], "");
    assert_eq!(e["properties"]["empty"], "");
    assert_eq!(e["body"], r#"{"t":21.5}"#);
    assert_eq!(events[1]["body"], "cTA=");

    // The registry shows the device connected.
    c.send(Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp), "still connected");
    let dev: Value = send(&hub, Method::GET, "/devices/m1", None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(dev["connectionState"], "Connected");
    assert_ne!(dev["lastActivityTime"], "0001-01-01T00:00:00");
    let stats: Value = send(&hub, Method::GET, "/statistics/service", None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stats["connectedDeviceCount"], 1);

    c.send(Packet::Disconnect).await;
    assert!(c.closed_within(Duration::from_secs(5)).await);
    let dev = wait_device(&hub, "m1", "connectionState", "Disconnected".into()).await;
    assert_eq!(dev["connectionState"], "Disconnected");
}

#[tokio::test]
async fn refused_connects_get_their_connack_code() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "r1").await;
    let other = create_device(&hub, "r2").await;
    let good = token(&d, now_secs() + 600);
    let cases: Vec<(&str, String, ConnectReturnCode)> = vec![
        ("r1", "not a token".into(), ConnectReturnCode::NotAuthorized),
        (
            "r1",
            token(&other, now_secs() + 600),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "r1",
            token(&d, now_secs() - 301),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "r1",
            mint(
                "localhost/devices/r1",
                &SymmetricKey::generate(),
                now_secs() + 600,
                None,
            ),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "ghost",
            token(&d, now_secs() + 600),
            ConnectReturnCode::NotAuthorized,
        ),
        ("a/b/c", good.clone(), ConnectReturnCode::IdentifierRejected),
    ];
    for (id, password, code) in cases {
        let (mut c, ack) = connect(&hub, id, &password, true).await;
        assert_eq!(ack.map(|a| a.code), Some(code), "{id} / {password:.40}");
        assert!(c.closed_within(Duration::from_secs(5)).await);
    }
    // A service policy cannot connect a device; the device policy can (token service).
    let host = format!("localhost:{}", hub.https_addr().port());
    let svc = mint(
        &format!("{host}/devices/r1"),
        &hub.policy_key("service"),
        now_secs() + 600,
        Some("service"),
    );
    let (_, ack) = connect(&hub, "r1", &svc, true).await;
    assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::NotAuthorized));
    let dev_policy = mint(
        &format!("{host}/devices/r1"),
        &hub.policy_key("device"),
        now_secs() + 600,
        Some("device"),
    );
    let (_, ack) = connect(&hub, "r1", &dev_policy, true).await;
    assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::Accepted));

    // Disabled devices are refused even with a valid token.
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/r1",
        None,
        &[("If-Match", "*")],
        Some(r#"{"deviceId":"r1","status":"disabled"}"#),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, ack) = connect(&hub, "r1", &good, true).await;
    assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::NotAuthorized));
    assert!(all_events(&hub).await.is_empty());
}

#[tokio::test]
async fn hostile_publishes_disconnect_and_store_nothing() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "h1").await;
    create_device(&hub, "h2").await;
    let pw = token(&d, now_secs() + 600);
    let hostile: Vec<(&str, QoS)> = vec![
        ("devices/h2/messages/events/", QoS::AtLeastOnce),
        ("devices/h1/messages/devicebound/", QoS::AtLeastOnce),
        ("some/other/topic", QoS::AtMostOnce),
        ("devices/h1/messages/events/%ZZ=1", QoS::AtLeastOnce),
        ("devices/h1/messages/events/", QoS::ExactlyOnce),
    ];
    for (topic, qos) in hostile {
        let (mut c, ack) = connect(&hub, "h1", &pw, true).await;
        assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::Accepted));
        c.send(Packet::Publish(ferrohub_mqtt::codec::Publish {
            dup: false,
            qos,
            retain: false,
            topic: TopicName::new(topic).unwrap(),
            pkid: if qos == QoS::AtMostOnce {
                None
            } else {
                Some(7)
            },
            payload: bytes::Bytes::from_static(b"x"),
        }))
        .await;
        assert!(
            c.closed_within(Duration::from_secs(5)).await,
            "{topic} {qos:?}"
        );
    }
    // An oversized message (over 256 KB) disconnects too.
    let (mut c, _) = connect(&hub, "h1", &pw, true).await;
    let big = vec![b'a'; 300 * 1024];
    assert!(
        c.publish("devices/h1/messages/events/", QoS::AtLeastOnce, &big)
            .await
            .is_none()
    );
    assert!(c.closed_within(Duration::from_secs(5)).await);
    // Garbage instead of MQTT.
    let ca = hub.ca_pem();
    let mut raw = MqttClient::open(Transport::Tls(hub.mqtt_addr(), &ca)).await;
    raw.send_raw(b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(raw.closed_within(Duration::from_secs(5)).await);
    assert!(all_events(&hub).await.is_empty(), "nothing stored");
}

#[tokio::test]
async fn persistent_sessions_keep_subscriptions() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "s1").await;
    let pw = token(&d, now_secs() + 600);
    let (mut c, ack) = connect(&hub, "s1", &pw, false).await;
    assert!(!ack.unwrap().session_present);
    let codes = c
        .subscribe(&[
            ("devices/s1/messages/devicebound/#", QoS::ExactlyOnce),
            ("$iothub/methods/POST/#", QoS::AtMostOnce),
            ("devices/s2/messages/devicebound/#", QoS::AtLeastOnce),
            ("#", QoS::AtLeastOnce),
        ])
        .await;
    assert_eq!(
        codes,
        vec![
            SubscribeReturnCode::Success(QoS::AtLeastOnce),
            SubscribeReturnCode::Success(QoS::AtMostOnce),
            SubscribeReturnCode::Failure,
            SubscribeReturnCode::Failure,
        ]
    );
    drop(c);
    wait_device(&hub, "s1", "connectionState", "Disconnected".into()).await;
    let (_c, ack) = connect(&hub, "s1", &pw, false).await;
    assert!(
        ack.unwrap().session_present,
        "session kept across reconnects"
    );

    // And across a restart.
    drop(_c);
    let data_dir = hub.data_dir().to_owned();
    let dir = hub.stop().await;
    let hub = TestHub::start_in(&data_dir).await;
    let (c, ack) = connect(&hub, "s1", &pw, false).await;
    assert!(ack.unwrap().session_present, "session kept across restarts");
    drop(c);
    // A clean session forgets it.
    let (c, ack) = connect(&hub, "s1", &pw, true).await;
    assert!(!ack.unwrap().session_present);
    drop(c);
    let (_c, ack) = connect(&hub, "s1", &pw, false).await;
    assert!(!ack.unwrap().session_present);
    drop(dir);
}

#[tokio::test]
async fn revocation_closes_live_connections() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "v1").await;
    let pw = token(&d, now_secs() + 600);

    // A newer connection for the same identity closes the older one.
    let (mut first, _) = connect(&hub, "v1", &pw, true).await;
    let (mut second, ack) = connect(&hub, "v1", &pw, true).await;
    assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::Accepted));
    assert!(
        first.closed_within(Duration::from_secs(2)).await,
        "older closed"
    );

    // Disabling the device closes the live connection within a second.
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/v1",
        None,
        &[("If-Match", "*")],
        Some(r#"{"deviceId":"v1","status":"disabled"}"#),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        second.closed_within(Duration::from_secs(1)).await,
        "closed on disable"
    );

    // Regenerating keys closes it too.
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/v1",
        None,
        &[("If-Match", "*")],
        Some(r#"{"deviceId":"v1","status":"enabled"}"#),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (mut c, ack) = connect(&hub, "v1", &pw, true).await;
    assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::Accepted));
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/v1",
        None,
        &[("If-Match", "*")],
        Some(r#"{"deviceId":"v1","authentication":{"symmetricKey":{"primaryKey":"","secondaryKey":""}}}"#),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        c.closed_within(Duration::from_secs(1)).await,
        "closed on key change"
    );

    // Deleting closes it.
    let d = create_device(&hub, "v2").await;
    let (mut c, _) = connect(&hub, "v2", &token(&d, now_secs() + 600), true).await;
    let resp = send(&hub, Method::DELETE, "/devices/v2", None, &[], None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(
        c.closed_within(Duration::from_secs(1)).await,
        "closed on delete"
    );
}

#[tokio::test]
async fn expired_token_closes_the_connection() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "x1").await;
    // Expired 299 s ago: valid for one more second of skew.
    let (mut c, ack) = connect(&hub, "x1", &token(&d, now_secs() - 299), true).await;
    assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::Accepted));
    assert!(
        c.closed_within(Duration::from_secs(4)).await,
        "closed at expiry"
    );
}

#[tokio::test]
async fn will_is_published_on_abnormal_close_only() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "w1").await;
    let pw = token(&d, now_secs() + 600);
    let ca = hub.ca_pem();
    let will = LastWill {
        topic: TopicName::new("devices/w1/messages/events/reason=lost").unwrap(),
        message: bytes::Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
    };
    let (c, ack) = MqttClient::connect(
        Transport::Tls(hub.mqtt_addr(), &ca),
        "w1",
        &username("w1"),
        &pw,
        true,
        60,
        Some(will.clone()),
    )
    .await;
    assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::Accepted));
    drop(c); // no DISCONNECT
    let (mut c, _) = MqttClient::connect(
        Transport::Tls(hub.mqtt_addr(), &ca),
        "w1",
        &username("w1"),
        &pw,
        true,
        60,
        Some(will),
    )
    .await;
    c.send(Packet::Disconnect).await;
    assert!(c.closed_within(Duration::from_secs(5)).await);
    // The second connection's close is complete once the device shows disconnected; by then
    // a (wrong) will of its own would be in the log with the first one's.
    wait_events(&hub, 1).await;
    wait_device(&hub, "w1", "connectionState", "Disconnected".into()).await;
    let events = all_events(&hub).await;
    assert_eq!(events.len(), 1, "one will, from the abnormal close");
    assert_eq!(events[0]["properties"]["iothub-MessageType"], "Will");
    assert_eq!(events[0]["properties"]["reason"], "lost");
    assert_eq!(
        events[0]["systemProperties"]["iothub-connection-device-id"],
        "w1"
    );
}

#[tokio::test]
async fn websocket_and_plain_transports() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "ws1").await;
    let pw = token(&d, now_secs() + 600);
    let ca = hub.ca_pem();
    let (mut c, ack) = MqttClient::connect(
        Transport::WebSocket(hub.https_addr(), &ca),
        "ws1",
        &username("ws1"),
        &pw,
        false,
        60,
        None,
    )
    .await;
    assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::Accepted));
    assert!(
        c.publish("devices/ws1/messages/events/via=ws", QoS::AtLeastOnce, b"1")
            .await
            .is_some()
    );
    let (mut c, ack) = MqttClient::connect(
        Transport::Plain(hub.mqtt_plain_addr()),
        "ws1",
        &username("ws1"),
        &pw,
        false,
        60,
        None,
    )
    .await;
    assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::Accepted));
    assert!(
        c.publish(
            "devices/ws1/messages/events/via=tcp",
            QoS::AtLeastOnce,
            b"2"
        )
        .await
        .is_some()
    );
    let events = all_events(&hub).await;
    let via: Vec<&str> = events
        .iter()
        .map(|e| e["properties"]["via"].as_str().unwrap())
        .collect();
    assert_eq!(via, vec!["ws", "tcp"]);
}

#[tokio::test]
async fn connection_limit_answers_connack_3() {
    let hub = TestHub::start_with_config("[limits]\nmax_connections = 1\n").await;
    let a = create_device(&hub, "a").await;
    let b = create_device(&hub, "b").await;
    let (_first, ack) = connect(&hub, "a", &token(&a, now_secs() + 600), true).await;
    assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::Accepted));
    let (mut second, ack) = connect(&hub, "b", &token(&b, now_secs() + 600), true).await;
    assert_eq!(
        ack.map(|a| a.code),
        Some(ConnectReturnCode::ServerUnavailable),
        "transient refusal, so SDKs retry"
    );
    assert!(second.closed_within(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_device_far_beyond_its_rate_is_disconnected() {
    let hub = TestHub::start_with_config(
        "[limits]\ndevice_messages_per_second = 2\nmax_throttle_backlog = \"1s\"\n",
    )
    .await;
    let d = create_device(&hub, "fast").await;
    let (mut c, _) = connect(&hub, "fast", &token(&d, now_secs() + 600), true).await;
    // Two go through at once, two more are shaped (a second of backlog), then it is cut off.
    let mut acked = 0;
    for _ in 0..20 {
        if c.publish("devices/fast/messages/events/", QoS::AtLeastOnce, b"x")
            .await
            .is_some()
        {
            acked += 1;
        } else {
            break;
        }
    }
    assert!(
        c.closed_within(Duration::from_secs(5)).await,
        "disconnected"
    );
    assert!(
        (2..20).contains(&acked),
        "shaped before the cut: {acked} acknowledged"
    );
    assert_eq!(
        all_events(&hub).await.len(),
        acked,
        "what was acknowledged is stored"
    );
}

#[tokio::test]
async fn reconnecting_does_not_reset_a_device_budget() {
    let hub = TestHub::start_with_config(
        "[limits]\ndevice_messages_per_second = 1\nmax_throttle_backlog = \"1s\"\n",
    )
    .await;
    let d = create_device(&hub, "loop").await;
    // 16 KB messages cost four units each against a budget of one a second: the first is let
    // through from the full bucket, the next owes four seconds, more than the backlog allows.
    let body = vec![b'x'; 16 * 1024];
    let (mut c, _) = connect(&hub, "loop", &token(&d, now_secs() + 600), true).await;
    assert!(
        c.publish("devices/loop/messages/events/", QoS::AtLeastOnce, &body)
            .await
            .is_some()
    );
    assert!(
        c.publish("devices/loop/messages/events/", QoS::AtLeastOnce, &body)
            .await
            .is_none(),
        "over budget"
    );
    assert!(c.closed_within(Duration::from_secs(5)).await);
    // A new connection does not bring a new budget.
    let (mut again, ack) = connect(&hub, "loop", &token(&d, now_secs() + 600), true).await;
    assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::Accepted));
    assert!(
        again
            .publish("devices/loop/messages/events/", QoS::AtLeastOnce, &body)
            .await
            .is_none(),
        "still over budget after reconnecting"
    );
    assert_eq!(
        all_events(&hub).await.len(),
        1,
        "only the admitted one is stored"
    );
}

#[tokio::test]
async fn a_device_reconnecting_in_a_loop_is_held_off() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "flappy").await;
    let password = token(&d, now_secs() + 600);
    let mut refused = None;
    for attempt in 0..30 {
        let (mut c, ack) = connect(&hub, "flappy", &password, true).await;
        match ack.map(|a| a.code) {
            Some(ConnectReturnCode::Accepted) => {
                c.send(Packet::Disconnect).await;
            }
            Some(code) => {
                refused = Some((attempt, code));
                break;
            }
            None => panic!("no CONNACK"),
        }
    }
    let (attempt, code) = refused.expect("throttled within 30 attempts");
    assert_eq!(
        code,
        ConnectReturnCode::ServerUnavailable,
        "a retryable refusal"
    );
    assert!(
        attempt >= 10,
        "a burst of ten is allowed, refused at {attempt}"
    );
    // Another device is not affected.
    let e = create_device(&hub, "steady").await;
    let (_c, ack) = connect(&hub, "steady", &token(&e, now_secs() + 600), true).await;
    assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::Accepted));
}

#[tokio::test]
async fn user_names_must_name_this_hub() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "u1").await;
    let ca = hub.ca_pem();
    let password = token(&d, now_secs() + 600);
    for (username, want) in [
        (
            "otherhub.azure-devices.net/u1/?api-version=2021-04-12",
            ConnectReturnCode::NotAuthorized,
        ),
        (
            "/u1/?api-version=2021-04-12",
            ConnectReturnCode::NotAuthorized,
        ),
        ("", ConnectReturnCode::NotAuthorized),
        (
            "LOCALHOST:8883/u1/?api-version=2021-04-12",
            ConnectReturnCode::Accepted,
        ),
    ] {
        let (_c, ack) = MqttClient::connect(
            Transport::Tls(hub.mqtt_addr(), &ca),
            "u1",
            username,
            &password,
            true,
            60,
            None,
        )
        .await;
        assert_eq!(ack.map(|a| a.code), Some(want), "user name {username:?}");
    }
}

#[tokio::test]
async fn a_connect_with_the_reserved_flag_set_is_closed_unanswered() {
    let hub = TestHub::start().await;
    create_device(&hub, "r1").await;
    let ca = hub.ca_pem();
    let mut c = MqttClient::open(Transport::Tls(hub.mqtt_addr(), &ca)).await;
    // CONNECT, protocol MQTT level 4, flags 0x03 (clean session + the reserved bit), client id
    // "r1" [MQTT-3.1.2-3].
    c.send_raw(&[
        0x10, 0x0E, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x03, 0x00, 0x3C, 0x00, 0x02, b'r',
        b'1',
    ])
    .await;
    assert!(
        c.recv_within(Duration::from_secs(5)).await.is_none(),
        "no CONNACK, the connection is closed"
    );
}
