//! Cloud-to-device messages: service send, MQTT delivery, HTTPS polling, feedback, purge.

use std::time::Duration;

use ferrohub_auth::{SymmetricKey, mint};
use ferrohub_mqtt::codec::ConnectReturnCode;
use ferrohub_mqtt::topic::PropertyBag;
use ferrohub_mqtt::{Packet, QoS};
use ferrohub_test_support::mqtt::{MqttClient, Transport};
use ferrohub_test_support::{TestHub, now_secs};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{WAIT, create_device, expect_error, send, wait_device};

fn token(device: &Value) -> String {
    let id = device["deviceId"].as_str().unwrap();
    let key = SymmetricKey::from_base64(
        device["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    mint(
        &format!("localhost/devices/{id}"),
        &key,
        now_secs() + 600,
        None,
    )
}

async fn c2d_send(
    hub: &TestHub,
    device: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = hub
        .http()
        .post(format!(
            "{}/devices/{device}/messages/deviceBound?api-version=2021-04-12",
            hub.base_url()
        ))
        .header("Authorization", hub.policy_token("service", 600))
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn mqtt_device(hub: &TestHub, device: &Value, clean: bool) -> MqttClient {
    let id = device["deviceId"].as_str().unwrap();
    let ca = hub.ca_pem();
    let (c, ack) = MqttClient::connect(
        Transport::Tls(hub.mqtt_addr(), &ca),
        id,
        &format!("localhost/{id}/?api-version=2021-04-12"),
        &token(device),
        clean,
        60,
        None,
    )
    .await;
    assert_eq!(ack.map(|a| a.code), Some(ConnectReturnCode::Accepted));
    c
}

async fn feedback(hub: &TestHub) -> Vec<Value> {
    let mut all = Vec::new();
    for _ in 0..10 {
        let resp = send(
            hub,
            Method::GET,
            "/messages/serviceBound/feedback",
            Some(&hub.policy_token("service", 60)),
            &[],
            None,
        )
        .await;
        if resp.status() == StatusCode::NO_CONTENT {
            break;
        }
        assert_eq!(resp.status(), StatusCode::OK);
        let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "quoted lock: {etag}"
        );
        let records: Vec<Value> = resp.json().await.unwrap();
        all.extend(records);
        let lock = etag.trim_matches('"');
        let resp = send(
            hub,
            Method::DELETE,
            &format!("/messages/serviceBound/feedback/{lock}"),
            None,
            &[],
            None,
        )
        .await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    }
    all
}

#[tokio::test]
async fn mqtt_delivery_online_offline_and_redelivery() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "c1").await;
    let mut c = mqtt_device(&hub, &d, false).await;
    c.subscribe(&[("devices/c1/messages/devicebound/#", QoS::AtLeastOnce)])
        .await;

    // Online: arrives without polling, with its properties in the topic.
    let resp = c2d_send(
        &hub,
        "c1",
        "hello",
        &[
            ("iothub-messageid", "mid-1"),
            ("iothub-correlationid", "cid-1"),
            ("iothub-contenttype", "text/plain"),
            ("iothub-ack", "full"),
            ("iothub-app-color", "blue & green"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let Some(Packet::Publish(p)) = c.recv().await else {
        panic!("expected a C2D PUBLISH");
    };
    let topic = p.topic.as_str().to_owned();
    assert!(
        topic.starts_with("devices/c1/messages/devicebound/"),
        "{topic}"
    );
    let bag =
        PropertyBag::parse(topic.trim_start_matches("devices/c1/messages/devicebound/")).unwrap();
    let get = |k: &str| {
        bag.iter()
            .find(|p| match &p.name {
                ferrohub_mqtt::topic::PropertyName::System(s) => s.to_string() == k,
                ferrohub_mqtt::topic::PropertyName::Application(a) => a == k,
            })
            .and_then(|p| p.value.clone())
    };
    assert_eq!(get("$.mid").as_deref(), Some("mid-1"));
    assert_eq!(get("$.cid").as_deref(), Some("cid-1"));
    assert_eq!(
        get("$.to").as_deref(),
        Some("/devices/c1/messages/devicebound")
    );
    assert_eq!(get("$.ct").as_deref(), Some("text/plain"));
    assert_eq!(get("iothub-ack").as_deref(), Some("full"));
    assert_eq!(get("color").as_deref(), Some("blue & green"));
    assert!(get("$.exp").is_some());
    assert_eq!(&p.payload[..], b"hello");
    assert!(!p.dup);
    c.send(Packet::PubAck(ferrohub_mqtt::codec::PubAck {
        pkid: p.pkid.unwrap(),
    }))
    .await;
    c.send(Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));
    let fb = ferrohub_test_support::eventually(WAIT, "the delivery's feedback", || async {
        let fb = feedback(&hub).await;
        (!fb.is_empty()).then_some(fb)
    })
    .await;
    assert_eq!(fb.len(), 1);
    assert_eq!(fb[0]["originalMessageId"], "mid-1");
    assert_eq!(fb[0]["statusCode"], "Success");
    assert_eq!(fb[0]["deviceId"], "c1");
    assert_eq!(fb[0]["deviceGenerationId"], d["generationId"]);

    // Offline: queued, delivered when the persistent session comes back.
    drop(c);
    wait_device(&hub, "c1", "connectionState", "Disconnected".into()).await;
    let resp = c2d_send(&hub, "c1", "while away", &[("iothub-messageid", "mid-2")]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let dev: Value = send(&hub, Method::GET, "/devices/c1", None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(dev["cloudToDeviceMessageCount"], 1);
    let mut c = mqtt_device(&hub, &d, false).await;
    let Some(Packet::Publish(p)) = c.recv().await else {
        panic!("expected the queued message");
    };
    assert_eq!(&p.payload[..], b"while away");
    // Not acknowledged: comes again, marked DUP, on the next connection.
    drop(c);
    wait_device(&hub, "c1", "connectionState", "Disconnected".into()).await;
    let mut c = mqtt_device(&hub, &d, false).await;
    let Some(Packet::Publish(p)) = c.recv().await else {
        panic!("expected the redelivery");
    };
    assert_eq!(&p.payload[..], b"while away");
    assert!(p.dup, "redelivery carries DUP");
    c.send(Packet::PubAck(ferrohub_mqtt::codec::PubAck {
        pkid: p.pkid.unwrap(),
    }))
    .await;
    c.send(Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));
    // Completed on PUBACK.
    wait_device(&hub, "c1", "cloudToDeviceMessageCount", 0.into()).await;
    assert!(
        c.recv_within(Duration::from_millis(500)).await.is_none(),
        "nothing delivered twice"
    );
}

async fn poll(hub: &TestHub, device: &str, token: &str) -> reqwest::Response {
    hub.http()
        .get(format!(
            "{}/devices/{device}/messages/devicebound?api-version=2021-04-12",
            hub.base_url()
        ))
        .header("Authorization", token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn https_polling_and_settlement() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "h1").await;
    let t = token(&d);
    assert_eq!(poll(&hub, "h1", &t).await.status(), StatusCode::NO_CONTENT);
    for (i, ack) in ["full", "negative", "full"].iter().enumerate() {
        let mid = format!("m{i}");
        let resp = c2d_send(
            &hub,
            "h1",
            &format!("body{i}"),
            &[
                ("iothub-messageid", &mid),
                ("iothub-ack", ack),
                ("iothub-app-k", "v"),
            ],
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    // Receive and complete the first.
    let resp = poll(&hub, "h1", &t).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"'));
    assert_eq!(h["iothub-messageid"], "m0");
    assert_eq!(h["iothub-sequencenumber"], "1");
    assert_eq!(h["iothub-deliverycount"], "0");
    assert_eq!(h["iothub-to"], "/devices/h1/messages/deviceBound");
    assert_eq!(h["iothub-app-k"], "v");
    assert_eq!(resp.text().await.unwrap(), "body0");
    let lock = etag.trim_matches('"').to_owned();
    let url = |suffix: &str| {
        format!(
            "{}/devices/h1/messages/deviceBound/{lock}{suffix}",
            hub.base_url()
        )
    };
    let resp = hub
        .http()
        .delete(url("?api-version=1"))
        .header("Authorization", &t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    // Completing twice: the lock is gone.
    let resp = hub
        .http()
        .delete(url("?api-version=1"))
        .header("Authorization", &t)
        .send()
        .await
        .unwrap();
    expect_error(resp, 412, "DeviceMessageLockLost").await;

    // Abandon the second: it comes back with delivery count 1; then reject it.
    let resp = poll(&hub, "h1", &t).await;
    let lock2 = resp.headers()["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let resp = hub
        .http()
        .post(format!(
            "{}/devices/h1/messages/deviceBound/{lock2}/abandon?api-version=1",
            hub.base_url()
        ))
        .header("Authorization", &t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = poll(&hub, "h1", &t).await;
    assert_eq!(resp.headers()["iothub-messageid"], "m1");
    assert_eq!(resp.headers()["iothub-deliverycount"], "1");
    let lock3 = resp.headers()["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let resp = hub
        .http()
        .delete(format!(
            "{}/devices/h1/messages/deviceBound/{lock3}?api-version=1&reject",
            hub.base_url()
        ))
        .header("Authorization", &t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    // Another device's token cannot poll this queue.
    let other = create_device(&hub, "h2").await;
    let resp = poll(&hub, "h1", &token(&other)).await;
    expect_error(resp, 401, "IotHubUnauthorizedAccess").await;

    // Purge the third.
    let resp = send(
        &hub,
        Method::DELETE,
        "/devices/h1/commands",
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let purged: Value = resp.json().await.unwrap();
    assert_eq!(purged["totalMessagesPurged"], 1);
    assert_eq!(purged["deviceId"], "h1");
    assert_eq!(purged["moduleId"], Value::Null);
    assert_eq!(poll(&hub, "h1", &t).await.status(), StatusCode::NO_CONTENT);

    let mut statuses: Vec<(String, String)> = feedback(&hub)
        .await
        .iter()
        .map(|r| {
            (
                r["originalMessageId"].as_str().unwrap().to_owned(),
                r["statusCode"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        vec![
            ("m0".to_owned(), "Success".to_owned()),
            ("m1".to_owned(), "Rejected".to_owned()),
            ("m2".to_owned(), "Purged".to_owned()),
        ]
    );
}

#[tokio::test]
async fn send_limits_and_errors() {
    let hub = TestHub::start().await;
    create_device(&hub, "l1").await;
    for i in 0..50 {
        let resp = c2d_send(&hub, "l1", &format!("{i}"), &[]).await;
        assert_eq!(resp.status(), StatusCode::OK, "message {i}");
    }
    let resp = c2d_send(&hub, "l1", "one too many", &[]).await;
    expect_error(resp, 403, "DeviceMaximumQueueDepthExceeded").await;
    let dev: Value = send(&hub, Method::GET, "/devices/l1", None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(dev["cloudToDeviceMessageCount"], 50);

    create_device(&hub, "l2").await;
    let big = "x".repeat(64 * 1024 + 1);
    expect_error(
        c2d_send(&hub, "l2", &big, &[]).await,
        413,
        "MessageTooLarge",
    )
    .await;
    expect_error(
        c2d_send(&hub, "l2", "x", &[("iothub-ack", "sometimes")]).await,
        400,
        "ArgumentInvalid",
    )
    .await;
    expect_error(
        c2d_send(
            &hub,
            "l2",
            "x",
            &[("iothub-expiry", "2000-01-01T00:00:00Z")],
        )
        .await,
        400,
        "ArgumentInvalid",
    )
    .await;
    expect_error(
        c2d_send(&hub, "l2", "x", &[("iothub-expiry", "soon")]).await,
        400,
        "ArgumentInvalid",
    )
    .await;
    expect_error(
        c2d_send(&hub, "ghost", "x", &[]).await,
        404,
        "DeviceNotFound",
    )
    .await;
    let resp = hub
        .http()
        .post(format!(
            "{}/devices/l2/messages/deviceBound",
            hub.base_url()
        ))
        .header("Authorization", hub.policy_token("registryReadWrite", 60))
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(resp, 401, "IotHubUnauthorizedAccess").await;
    let dev: Value = send(&hub, Method::GET, "/devices/l2", None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        dev["cloudToDeviceMessageCount"], 0,
        "refused sends stored nothing"
    );

    // Deleting the device purges its queue in the same transaction.
    let resp = send(&hub, Method::DELETE, "/devices/l1", None, &[], None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    create_device(&hub, "l1").await;
    let dev: Value = send(&hub, Method::GET, "/devices/l1", None, &[], None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(dev["cloudToDeviceMessageCount"], 0);
    assert!(feedback(&hub).await.is_empty(), "no feedback was asked for");
}

#[tokio::test]
async fn queue_survives_restart() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "q1").await;
    for i in 0..3 {
        assert_eq!(
            c2d_send(&hub, "q1", &format!("m{i}"), &[]).await.status(),
            StatusCode::OK
        );
    }
    let data_dir = hub.data_dir().to_owned();
    let dir = hub.stop().await;
    let hub = TestHub::start_in(&data_dir).await;
    let t = token(&d);
    for i in 0..3 {
        let resp = poll(&hub, "q1", &t).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let lock = resp.headers()["etag"]
            .to_str()
            .unwrap()
            .trim_matches('"')
            .to_owned();
        assert_eq!(resp.text().await.unwrap(), format!("m{i}"));
        let resp = hub
            .http()
            .delete(format!(
                "{}/devices/q1/messages/deviceBound/{lock}",
                hub.base_url()
            ))
            .header("Authorization", &t)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    }
    drop(hub);
    drop(dir);
}

#[tokio::test]
async fn a_taking_over_connection_gets_the_unacknowledged_message() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "t1").await;
    let mut old = mqtt_device(&hub, &d, false).await;
    old.subscribe(&[("devices/t1/messages/devicebound/#", QoS::AtLeastOnce)])
        .await;
    assert_eq!(
        c2d_send(&hub, "t1", "cmd", &[]).await.status(),
        StatusCode::OK
    );
    let Some(Packet::Publish(_)) = old.recv().await else {
        panic!("expected the message on the old connection");
    };
    // A new connection takes over before the old one acknowledged: the old one is closed and
    // its message goes to the new one, marked DUP.
    let mut new = mqtt_device(&hub, &d, false).await;
    let Some(Packet::Publish(p)) = new.recv().await else {
        panic!("expected the message on the new connection");
    };
    assert_eq!(&p.payload[..], b"cmd");
    assert!(p.dup);
    assert!(old.closed_within(Duration::from_secs(2)).await);
}

/// A benchmark, not a test (no assertion on time): service send → device receive latency over
/// MQTT at a stated rate, then sustained throughput. Run with
/// `cargo test --release -p ferrohub-server --test it c2d::c2d_latency_benchmark -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn c2d_latency_benchmark() {
    let rate: u64 = std::env::var("C2D_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let count: u64 = std::env::var("C2D_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let hub = TestHub::start().await;
    let d = create_device(&hub, "bench-c2d").await;
    let mut dev = mqtt_device(&hub, &d, true).await;
    dev.subscribe(&[("devices/bench-c2d/messages/devicebound/#", QoS::AtLeastOnce)])
        .await;
    let epoch = std::time::Instant::now();

    // The device: receive, note the latency from the send time in the body, PUBACK.
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::new();
        while (latencies.len() as u64) < count {
            match dev.recv_within(Duration::from_secs(5)).await {
                Some(Packet::Publish(p)) => {
                    let sent: u128 = std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
                    latencies.push(epoch.elapsed().as_micros() - sent);
                    dev.send(Packet::PubAck(ferrohub_mqtt::codec::PubAck {
                        pkid: p.pkid.unwrap(),
                    }))
                    .await;
                }
                _ => break,
            }
        }
        latencies
    });

    // The service: send at `rate` (open loop), each body the send time in µs since `epoch`.
    let start = tokio::time::Instant::now();
    let interval = Duration::from_micros(1_000_000 / rate.max(1));
    let mut sends = tokio::task::JoinSet::new();
    let mut refused = 0u64;
    // One client for every send: connections are kept alive, as a real back end keeps them.
    let client = hub.http();
    for i in 0..count {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let http = client.clone();
        let url = format!("{}/devices/bench-c2d/messages/deviceBound", hub.base_url());
        let token = hub.policy_token("service", 600);
        let body = epoch.elapsed().as_micros().to_string();
        sends.spawn(async move {
            let r = http
                .post(url)
                .header("Authorization", token)
                .body(body)
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        });
        // The queue holds 50 messages; never have more than that unacknowledged.
        while sends.len() > 32 {
            if let Some(Ok(status)) = sends.join_next().await {
                refused += u64::from(status != 200);
            }
        }
    }
    while let Some(joined) = sends.join_next().await {
        if let Ok(status) = joined {
            refused += u64::from(status != 200);
        }
    }
    let mut lat = receiver.await.unwrap();
    let elapsed = start.elapsed();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "| offered msg/s | delivered | refused sends | achieved msg/s | p50 µs | p99 µs | p99.9 µs | max µs |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {rate} | {} of {count} | {refused} | {:.0} | {} | {} | {} | {} |",
        lat.len(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(0.999),
        lat.last().copied().unwrap_or(0)
    );
}
