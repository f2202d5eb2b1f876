//! The Event Hub-compatible endpoint through the real AMQP listener, where the SDK suites leave
//! gaps: live tail from MQTT and HTTPS devices, credit, every filter form, epochs, refusals.
//!
//! The connection is Ferrohub's AMQP client as pyamqp and rhea open it (amqp-contract §3.10):
//! TLS, SASL ANONYMOUS, OPEN, BEGIN, a `$cbs` put-token, then partition receivers with the
//! SDKs' filters, link properties and capabilities.

use ferrohub_amqp::azure::event::{EPOCH, RUNTIME_METRIC};
use ferrohub_amqp::azure::filter::{SELECTOR_FILTER, SELECTOR_FILTER_CODE};
use ferrohub_amqp::message::{Body, Message, MessageId};
use ferrohub_amqp::performative::{AmqpError, Fields, Role, SenderSettleMode, Source, Target};
use ferrohub_amqp::types::{Symbol, Value};
use ferrohub_auth::{SymmetricKey, mint};
use ferrohub_mqtt::codec::QoS;
use ferrohub_test_support::amqp::{
    AmqpClientError, AmqpTestClient, Incoming, new_attach, put_token,
};
use ferrohub_test_support::{TestHub, now_secs};
use reqwest::{Method, StatusCode};
use serde_json::Value as Json;

use super::{WAIT, connect_identity, create_device, send};

/// The hub's Event Hub: the first label of its host name.
const EH: &str = "localhost";

/// A receiver's start, as the SDKs write their selector filters.
enum Start<'a> {
    /// No filter at all.
    None,
    /// A selector expression with the symbol descriptor (pyamqp).
    Selector(&'a str),
    /// A selector expression with the ulong descriptor (rhea, JS).
    SelectorUlong(&'a str),
}

/// One AMQP connection to the hub's TLS listener (SASL ANONYMOUS, as pyamqp and rhea start),
/// with Event Hubs partition receivers.
struct EhClient {
    c: AmqpTestClient,
    /// Receivers attached so far, for unique link names.
    receivers: u32,
}

impl EhClient {
    /// Connects, authenticates nothing yet (SASL ANONYMOUS), opens and begins.
    async fn open(hub: &TestHub) -> EhClient {
        let c = hub
            .amqp_sasl("ANONYMOUS", Some(b""))
            .await
            .expect("SASL ANONYMOUS");
        EhClient { c, receivers: 0 }
    }

    /// Opens and puts a token of policy `policy` (signed with `key`, by default the policy's
    /// own) for the Event Hub on `$cbs`; returns the put-token's status code.
    async fn connect_as(hub: &TestHub, policy: &str, key: Option<SymmetricKey>) -> (EhClient, i64) {
        let mut c = EhClient::open(hub).await;
        let key = key.unwrap_or_else(|| hub.policy_key(policy));
        let audience = format!("sb://localhost/{EH}");
        let token = mint(&audience, &key, now_secs() + 600, Some(policy));
        let status = c.put_token(&audience, &token).await;
        (c, status)
    }

    /// Connects with the `service` policy.
    async fn connect(hub: &TestHub) -> EhClient {
        let (c, status) = EhClient::connect_as(hub, "service", None).await;
        assert_eq!(status, 200);
        c
    }

    /// Puts `token` for `audience` on `$cbs` and returns the status code.
    async fn put_token(&mut self, audience: &str, token: &str) -> i64 {
        let id = MessageId::Uuid([7; 16]);
        let (status, _, _) = put_token(&mut self.c, audience, token, id).await;
        i64::from(status)
    }

    /// Attaches a receiver from `address` and waits for the hub's answer: its handle when
    /// accepted, the DETACH's error when refused (an ATTACH with a null source, then a DETACH).
    async fn receiver(
        &mut self,
        address: &str,
        start: Start<'_>,
        epoch: Option<i64>,
        runtime_metric: bool,
    ) -> Result<u32, AmqpError> {
        self.receivers += 1;
        let n = self.receivers;
        let mut a = new_attach(
            &format!("r{n}-{}", now_secs()),
            Role::Receiver,
            Source::address(address),
            Target::address(format!("receiver-link-{n}")),
        );
        let filter = match start {
            Start::None => None,
            Start::Selector(e) => Some(Value::described(Value::Symbol(SELECTOR_FILTER), e)),
            Start::SelectorUlong(e) => {
                Some(Value::described(Value::Ulong(SELECTOR_FILTER_CODE), e))
            }
        };
        if let Some(f) = filter {
            let mut set = Fields::new();
            set.insert(SELECTOR_FILTER, f);
            a.source = Some(Source {
                filter: Some(set),
                ..a.source.unwrap_or_default()
            });
        }
        let mut props = Fields::new();
        props.insert(Symbol::from_static("com.microsoft:timeout"), Value::Long(0));
        if let Some(e) = epoch {
            props.insert(EPOCH, Value::Long(e));
        }
        a.properties = Some(props);
        let mut caps = vec![Symbol::from_static("com.microsoft:georeplication")];
        if runtime_metric {
            caps.push(RUNTIME_METRIC);
        }
        a.desired_capabilities = Some(caps);
        a.max_message_size = Some(1_048_576);
        match self.c.attach_link(a, 0).await {
            Ok(handle) => {
                let reply = self.c.remote_attach(handle).expect("the hub's ATTACH");
                assert_eq!(reply.role, Role::Sender);
                assert_eq!(reply.snd_settle_mode, SenderSettleMode::Settled);
                Ok(handle)
            }
            Err(AmqpClientError::Detached { error, .. }) => {
                Err(error.expect("a refusal carries an error"))
            }
            Err(e) => panic!("attaching {address}: {e}"),
        }
    }

    /// Attaches a receiver from `address` at `start` (no epoch, no runtime metric) and grants
    /// it `credit` (0: none yet); returns its handle.
    async fn read_from(&mut self, address: &str, start: Start<'_>, credit: u32) -> u32 {
        let handle = self.receiver(address, start, None, false).await.unwrap();
        if credit > 0 {
            self.credit(handle, credit).await;
        }
        handle
    }

    /// The error of the hub's refusal of a receiver from `address` at `start`.
    async fn refusal(&mut self, address: &str, start: Start<'_>) -> AmqpError {
        self.receiver(address, start, None, false)
            .await
            .expect_err("a refusal")
    }

    /// Grants `credit` on receiver `handle`.
    async fn credit(&mut self, handle: u32, credit: u32) {
        self.c.grant(handle, credit).await.unwrap();
    }

    /// The next thing the hub sent.
    async fn next(&mut self) -> Incoming {
        tokio::time::timeout(WAIT, self.c.next())
            .await
            .expect("the hub answers in time")
            .unwrap()
    }

    /// The next event on any receiver, with its handle; other frames are skipped.
    async fn event(&mut self) -> (u32, Message) {
        loop {
            match self.next().await {
                i @ Incoming::Message { handle, .. } => {
                    return (handle, i.message().expect("an AMQP message"));
                }
                Incoming::Detached { handle, error } => {
                    panic!("link {handle} was detached: {error:?}")
                }
                _ => {}
            }
        }
    }

    /// The next event on any receiver that `pred` accepts.
    async fn event_where(&mut self, pred: impl Fn(&Message) -> bool) -> (u32, Message) {
        loop {
            let (h, m) = self.event().await;
            if pred(&m) {
                return (h, m);
            }
        }
    }

    /// Detaches `handle` and returns the events that arrived on it before the hub's answer.
    async fn detach(&mut self, handle: u32) -> Vec<Message> {
        self.c.detach(handle).await.unwrap();
        let mut before = Vec::new();
        loop {
            match self.next().await {
                i @ Incoming::Message { handle: h, .. } if h == handle => {
                    before.push(i.message().expect("an AMQP message"));
                }
                Incoming::Detached { handle: h, .. } if h == handle => return before,
                _ => {}
            }
        }
    }
}

fn address(partition: u32) -> String {
    format!("{EH}/ConsumerGroups/$Default/Partitions/{partition}")
}

fn annotation<'a>(m: &'a Message, key: &str) -> Option<&'a Value> {
    m.message_annotations.as_ref().and_then(|a| a.get(key))
}

fn seq(m: &Message) -> i64 {
    match annotation(m, "x-opt-sequence-number") {
        Some(Value::Long(s)) => *s,
        other => panic!("x-opt-sequence-number: {other:?}"),
    }
}

fn device_of(m: &Message) -> Option<&str> {
    annotation(m, "iothub-connection-device-id").and_then(Value::as_str)
}

fn body(m: &Message) -> Vec<u8> {
    match &m.body {
        Body::Data(sections) => sections.iter().flat_map(|s| s.to_vec()).collect(),
        other => panic!("not a data body: {other:?}"),
    }
}

/// A device token signed with the device's primary key.
fn device_token(device: &Json) -> String {
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

/// Telemetry over HTTPS; returns once the hub answered 204 (the event is durable).
async fn https_event(hub: &TestHub, device: &Json, message_id: &str, body: &[u8]) {
    let id = device["deviceId"].as_str().unwrap();
    let resp = hub
        .http()
        .post(format!(
            "{}/devices/{id}/messages/events?api-version=2021-04-12",
            hub.base_url()
        ))
        .header("Authorization", device_token(device))
        .header("iothub-messageid", message_id)
        .header("iothub-app-via", "https")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
}

/// The partition holding device `id`'s events, from the read API.
async fn partition_of(hub: &TestHub, id: &str) -> u32 {
    for p in 0..4u32 {
        let resp = send(
            hub,
            Method::GET,
            &format!("/messages/events/partitions/{p}/events?max=1000"),
            None,
            &[],
            None,
        )
        .await;
        let batch: Json = resp.json().await.unwrap();
        if batch["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["systemProperties"]["iothub-connection-device-id"] == id)
        {
            return p;
        }
    }
    panic!("no event of {id} in the log");
}

/// Sends `n` HTTPS events from a new device `id`; returns the device and its partition.
async fn device_with_events(hub: &TestHub, id: &str, n: usize) -> (Json, u32) {
    let device = create_device(hub, id).await;
    for i in 0..n {
        https_event(
            hub,
            &device,
            &format!("{id}-{i}"),
            format!("{i}").as_bytes(),
        )
        .await;
    }
    let p = partition_of(hub, id).await;
    (device, p)
}

#[tokio::test]
async fn a_receiver_at_latest_sees_new_telemetry_from_mqtt_and_https_devices() {
    let hub = TestHub::start().await;
    let mqtt_device = create_device(&hub, "tail-mqtt").await;
    let https_device = create_device(&hub, "tail-https").await;
    let mut mqtt = connect_identity(&hub, &mqtt_device, None, true).await;
    // Sent before the receivers exist: @latest must not deliver it.
    assert!(
        mqtt.publish(
            "devices/tail-mqtt/messages/events/when=before",
            QoS::AtLeastOnce,
            b"before"
        )
        .await
        .is_some()
    );

    let mut c = EhClient::connect(&hub).await;
    for p in 0..4 {
        c.read_from(
            &address(p),
            Start::Selector("amqp.annotation.x-opt-offset > '@latest'"),
            10,
        )
        .await;
    }

    // Nothing more is asked of the hub: the events come because they were appended.
    assert!(
        mqtt.publish(
            "devices/tail-mqtt/messages/events/when=after",
            QoS::AtLeastOnce,
            b"from mqtt"
        )
        .await
        .is_some()
    );
    let (_, event) = c.event().await;
    assert_eq!(device_of(&event), Some("tail-mqtt"));
    assert_eq!(body(&event), b"from mqtt");
    assert_eq!(
        event
            .application_properties
            .as_ref()
            .and_then(|a| a.get("when")),
        Some(&Value::from("after"))
    );
    assert_eq!(
        annotation(&event, "iothub-message-source"),
        Some(&Value::from("Telemetry"))
    );

    https_event(&hub, &https_device, "h-1", b"from https").await;
    let (_, event) = c.event().await;
    assert_eq!(device_of(&event), Some("tail-https"));
    assert_eq!(body(&event), b"from https");
    assert!(matches!(
        event.properties.as_ref().and_then(|p| p.message_id.as_ref()),
        Some(MessageId::String(id)) if id == "h-1"
    ));
    assert!(matches!(
        annotation(&event, "x-opt-offset"),
        Some(Value::String(_))
    ));
    assert!(matches!(
        annotation(&event, "x-opt-enqueued-time"),
        Some(Value::Timestamp(_))
    ));

    // And again from MQTT, after a quiet moment on every receiver.
    assert!(
        mqtt.publish(
            "devices/tail-mqtt/messages/events/",
            QoS::AtLeastOnce,
            b"again"
        )
        .await
        .is_some()
    );
    let (_, event) = c.event().await;
    assert_eq!(body(&event), b"again");
}

#[tokio::test]
async fn deliveries_never_exceed_the_credit() {
    let hub = TestHub::start().await;
    let (_, p) = device_with_events(&hub, "credit-1", 5).await;
    let mut c = EhClient::connect(&hub).await;
    let h = c
        .read_from(
            &address(p),
            Start::Selector("amqp.annotation.x-opt-offset > '-1'"),
            2,
        )
        .await;
    let first: Vec<i64> = vec![seq(&c.event().await.1), seq(&c.event().await.1)];
    assert_eq!(first, vec![0, 1]);
    // Two more credits: exactly the next two, none skipped.
    c.credit(h, 2).await;
    let next: Vec<i64> = vec![seq(&c.event().await.1), seq(&c.event().await.1)];
    assert_eq!(next, vec![2, 3]);
    // The fifth event waits for credit: nothing arrives before the hub answers a DETACH.
    assert!(c.detach(h).await.is_empty());
}

#[tokio::test]
async fn every_filter_form_the_sdks_send() {
    let hub = TestHub::start().await;
    let (_, p) = device_with_events(&hub, "filters-1", 5).await;
    let mut c = EhClient::connect(&hub).await;

    // Read everything once, for the offsets and times to filter by.
    let handle = c.read_from(&address(p), Start::None, 5).await;
    let mut all = Vec::new();
    for _ in 0..5 {
        all.push(c.event().await.1);
    }
    assert_eq!(all.iter().map(seq).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    c.detach(handle).await;
    let offset = |m: &Message| {
        annotation(m, "x-opt-offset")
            .and_then(Value::as_str)
            .unwrap()
            .to_owned()
    };
    let time = |m: &Message| match annotation(m, "x-opt-enqueued-time") {
        Some(Value::Timestamp(t)) => *t,
        other => panic!("{other:?}"),
    };

    let o2 = offset(&all[2]);
    let t2 = time(&all[2]);
    let cases: Vec<(String, bool, i64)> = vec![
        ("amqp.annotation.x-opt-offset > '-1'".into(), false, 0),
        (format!("amqp.annotation.x-opt-offset > '{o2}'"), false, 3),
        (format!("amqp.annotation.x-opt-offset >= '{o2}'"), true, 2),
        (
            "amqp.annotation.x-opt-sequence-number > '1'".into(),
            false,
            2,
        ),
        (
            "amqp.annotation.x-opt-sequence-number >= '1'".into(),
            true,
            1,
        ),
        // Events of the same millisecond share a time: the first at or after it.
        (
            format!("amqp.annotation.x-opt-enqueued-time >= '{t2}'"),
            false,
            all.iter().find(|m| time(m) >= t2).map_or(-1, seq),
        ),
        (
            format!("amqp.annotation.x-opt-enqueued-time > '{}'", time(&all[4])),
            true,
            -1,
        ),
    ];
    for (i, (expr, ulong, want)) in cases.iter().enumerate() {
        let start = if *ulong {
            Start::SelectorUlong(expr)
        } else {
            Start::Selector(expr)
        };
        let handle = c
            .receiver(&address(p), start, None, false)
            .await
            .unwrap_or_else(|e| panic!("case {i} {expr}: {e:?}"));
        c.credit(handle, 1).await;
        let got = if *want >= 0 {
            let (h, m) = c.event().await;
            assert_eq!(h, handle);
            Some(seq(&m))
        } else {
            None
        };
        // With one credit, at most one event; the detach answer closes the case.
        let rest = c.detach(handle).await;
        assert!(rest.is_empty(), "case {i} {expr}: more than the credit");
        if *want >= 0 {
            assert_eq!(got, Some(*want), "case {i} {expr}");
        }
    }

    // @latest: only what comes after the attach.
    c.read_from(
        &address(p),
        Start::SelectorUlong("amqp.annotation.x-opt-offset > '@latest'"),
        5,
    )
    .await;
    let device = super::device_json(&hub, "filters-1").await;
    https_event(&hub, &device, "filters-late", b"late").await;
    let (_, m) = c.event().await;
    assert_eq!(seq(&m), 5);
    assert_eq!(body(&m), b"late");

    // A filter the hub cannot read is refused, not ignored.
    let err = c
        .refusal(
            &address(p),
            Start::Selector("amqp.annotation.x-opt-color = 'blue'"),
        )
        .await;
    assert_eq!(err.condition.as_str(), "com.microsoft:argument-error");
}

#[tokio::test]
async fn epochs_displace_and_refuse_receivers() {
    let hub = TestHub::start().await;
    let (_, p) = device_with_events(&hub, "epoch-1", 1).await;
    let start = || Start::Selector("amqp.annotation.x-opt-offset > '-1'");

    let mut a = EhClient::connect(&hub).await;
    let h = a
        .receiver(&address(p), start(), Some(1), false)
        .await
        .unwrap();
    a.credit(h, 10).await;
    assert_eq!(seq(&a.event().await.1), 0);

    // A higher epoch takes the partition: the first receiver is detached with link:stolen.
    let mut b = EhClient::connect(&hub).await;
    let owner = b
        .receiver(&address(p), start(), Some(2), false)
        .await
        .unwrap();
    loop {
        if let Incoming::Detached { error, .. } = a.next().await {
            let e = error.expect("an error");
            assert_eq!(e.condition.as_str(), "amqp:link:stolen");
            assert!(
                e.description
                    .as_deref()
                    .is_some_and(|t| t.contains("epoch")),
                "{e:?}"
            );
            break;
        }
    }

    // A lower epoch, and a receiver without one, are refused while it owns the partition; in
    // another consumer group the partition is free.
    let mut c = EhClient::connect(&hub).await;
    let e = c
        .receiver(&address(p), start(), Some(1), false)
        .await
        .unwrap_err();
    assert_eq!(e.condition.as_str(), "amqp:link:stolen");
    let e = c.refusal(&address(p), start()).await;
    assert_eq!(e.condition.as_str(), "amqp:link:stolen");
    let resp = send(
        &hub,
        Method::PUT,
        "/messages/events/consumergroups/other",
        None,
        &[],
        None,
    )
    .await;
    assert!(resp.status().is_success(), "{}", resp.status());
    c.receiver(
        &format!("{EH}/ConsumerGroups/OTHER/Partitions/{p}"),
        start(),
        None,
        false,
    )
    .await
    .unwrap();

    // Once the owner leaves, receivers without an epoch may come back.
    b.detach(owner).await;
    c.receiver(&address(p), start(), None, false).await.unwrap();
}

#[tokio::test]
async fn unknown_partitions_groups_and_entities_are_not_found() {
    let hub = TestHub::start().await;
    let mut c = EhClient::connect(&hub).await;
    let start = || Start::Selector("amqp.annotation.x-opt-offset > '-1'");
    let cases = [
        format!("{EH}/ConsumerGroups/$Default/Partitions/4"),
        format!("{EH}/ConsumerGroups/$Default/Partitions/x"),
        format!("{EH}/ConsumerGroups/nope/Partitions/0"),
        "otherhub/ConsumerGroups/$Default/Partitions/0".to_owned(),
    ];
    for a in &cases {
        let e = c.refusal(a, start()).await;
        assert_eq!(e.condition.as_str(), "amqp:not-found", "{a}: {e:?}");
    }
    // The IoT Hub form of the address, and the consumer group in any case, are found (with a
    // token for the whole hub).
    let mut c = EhClient::open(&hub).await;
    let token = mint(
        "localhost",
        &hub.policy_key("service"),
        now_secs() + 600,
        Some("service"),
    );
    assert_eq!(
        c.put_token("sb://localhost/messages/events", &token).await,
        200
    );
    c.receiver(
        "amqps://localhost/messages/events/ConsumerGroups/$default/Partitions/0",
        start(),
        None,
        false,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn tokens_without_service_connect_or_with_a_wrong_key_are_refused() {
    let hub = TestHub::start().await;
    let (_, status) = EhClient::connect_as(&hub, "service", Some(SymmetricKey::generate())).await;
    assert_eq!(status, 401);
    // A registryRead token is a valid token of the hub, but gives no receiver.
    let (mut c, status) = EhClient::connect_as(&hub, "registryRead", None).await;
    assert_eq!(status, 200);
    let e = c
        .refusal(
            &address(0),
            Start::Selector("amqp.annotation.x-opt-offset > '-1'"),
        )
        .await;
    assert_eq!(e.condition.as_str(), "amqp:unauthorized-access");
}

#[tokio::test]
async fn the_runtime_metric_describes_the_partition_end() {
    let hub = TestHub::start().await;
    let (_, p) = device_with_events(&hub, "metric-1", 3).await;
    let mut c = EhClient::connect(&hub).await;
    let first = c
        .receiver(
            &address(p),
            Start::Selector("amqp.annotation.x-opt-sequence-number >= '0'"),
            None,
            true,
        )
        .await
        .unwrap();
    c.credit(first, 1).await;
    let (_, m) = c.event_where(|m| device_of(m) == Some("metric-1")).await;
    assert_eq!(seq(&m), 0);
    let metric = m.delivery_annotations.expect("delivery annotations");
    assert_eq!(
        metric.get("last_enqueued_sequence_number"),
        Some(&Value::Long(2))
    );
    assert!(matches!(
        metric.get("last_enqueued_offset"),
        Some(Value::String(_))
    ));
    assert!(matches!(
        metric.get("last_enqueued_time_utc"),
        Some(Value::Timestamp(_))
    ));
    assert!(matches!(
        metric.get("runtime_info_retrieval_time_utc"),
        Some(Value::Timestamp(_))
    ));
    // Without the capability there is no metric.
    let second = c
        .read_from(
            &address(p),
            Start::Selector("amqp.annotation.x-opt-sequence-number >= '0'"),
            1,
        )
        .await;
    let (h, m) = c.event().await;
    assert_eq!(h, second);
    assert!(m.delivery_annotations.is_none());
}

#[tokio::test]
async fn events_keep_the_device_message_as_sent() {
    let hub = TestHub::start().await;
    let device = create_device(&hub, "props-1").await;
    let mut mqtt = connect_identity(&hub, &device, None, true).await;
    let payload: Vec<u8> = (0..=255u8).collect();
    let topic = "devices/props-1/messages/events/%24.mid=m-9&%24.cid=c-9&%24.ct=application%2Foctet-stream&%24.ce=binary&k%20ey=v%26al";
    assert!(
        mqtt.publish(topic, QoS::AtLeastOnce, &payload)
            .await
            .is_some()
    );
    let p = partition_of(&hub, "props-1").await;
    let mut c = EhClient::connect(&hub).await;
    c.read_from(
        &address(p),
        Start::Selector("amqp.annotation.x-opt-offset > '-1'"),
        10,
    )
    .await;
    let (_, m) = c.event_where(|m| device_of(m) == Some("props-1")).await;
    assert_eq!(body(&m), payload);
    let props = m.properties.as_ref().expect("properties");
    assert_eq!(props.message_id, Some(MessageId::String("m-9".into())));
    assert_eq!(props.correlation_id, Some(MessageId::String("c-9".into())));
    assert_eq!(
        props.content_type.as_ref().map(Symbol::as_str),
        Some("application/octet-stream")
    );
    assert_eq!(
        props.content_encoding.as_ref().map(Symbol::as_str),
        Some("binary")
    );
    let app = m.application_properties.as_ref().expect("user properties");
    assert_eq!(app.get("k ey"), Some(&Value::from("v&al")));
    assert_eq!(
        annotation(&m, "iothub-connection-auth-generation-id").and_then(Value::as_str),
        device["generationId"].as_str()
    );
    assert!(matches!(
        annotation(&m, "iothub-enqueuedtime"),
        Some(Value::Timestamp(_))
    ));
    assert!(
        annotation(&m, "iothub-connection-auth-method")
            .and_then(Value::as_str)
            .is_some_and(|t| t.contains("\"scope\":\"device\""))
    );
    assert_eq!(annotation(&m, "x-opt-partition-key"), None);
}

#[tokio::test]
async fn a_drain_delivers_what_the_partition_holds_before_it_ends_the_credit() {
    let hub = TestHub::start().await;
    let (_, p) = device_with_events(&hub, "drain-1", 5).await;
    let mut c = EhClient::connect(&hub).await;
    let h = c
        .read_from(
            &address(p),
            Start::Selector("amqp.annotation.x-opt-offset > '-1'"),
            0,
        )
        .await;
    // Ten credits and drain: the five events, then the hub's FLOW ending the credit.
    c.c.drain(h, 10).await.unwrap();
    let mut seqs = Vec::new();
    let answer = loop {
        match c.next().await {
            i @ Incoming::Message { .. } => seqs.push(seq(&i.message().unwrap())),
            Incoming::Flow {
                handle,
                delivery_count,
                link_credit,
                drain,
            } if handle == h => break (delivery_count, link_credit, drain),
            Incoming::Credit { .. } => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
    let (delivery_count, link_credit, drain) = answer;
    assert_eq!(delivery_count, Some(10));
    assert_eq!(link_credit, Some(0));
    assert!(drain);
    // Nothing more: the credit is gone.
    assert!(c.detach(h).await.is_empty());
}
