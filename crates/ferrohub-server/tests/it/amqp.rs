//! The AMQP 1.0 endpoint through its TLS listener, with Ferrohub's client on its own codec (raw
//! frames only where a test sends bad ones):
//! SASL and the no-SASL header, `$cbs`, the service's C2D sender and feedback receiver, device
//! telemetry and C2D, token expiry, bad frames, one connection per identity, revocation.

use std::time::Duration;

use bytes::Bytes;
use ferrohub_amqp::message::{
    ApplicationProperties, BATCH_MESSAGE_FORMAT, Body, Message, MessageId, Properties,
};
use ferrohub_amqp::performative::{
    AmqpError, DeliveryState, Performative, SaslCode, Source, Transfer,
};
use ferrohub_auth::{SymmetricKey, mint};
use ferrohub_test_support::amqp::{
    AmqpClientError, AmqpTestClient, Incoming, closed_within, data_message, outcome, put_token,
    send_frame, send_message, send_raw,
};
use ferrohub_test_support::{TestHub, now_secs};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{all_events, create_device, send};

const C2D_SENDER: &str = "/messages/devicebound";
const FEEDBACK: &str = "/messages/serviceBound/feedback";

/// The audience Node's service client puts its token for (the raw host name).
const AUDIENCE: &str = "localhost";

fn key_of(device: &Value) -> SymmetricKey {
    SymmetricKey::from_base64(
        device["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap(),
    )
    .unwrap()
}

/// A device's own SAS token, valid until `expiry`.
fn device_token(device: &Value, expiry: u64) -> String {
    let id = device["deviceId"].as_str().unwrap();
    mint(
        &format!("localhost/devices/{id}"),
        &key_of(device),
        expiry,
        None,
    )
}

/// A connection without SASL, opened, with the owner's token put on `$cbs`.
async fn service(hub: &TestHub) -> AmqpTestClient {
    let mut c = hub.amqp().await;
    let token = hub.policy_token("iothubowner", 3600);
    let (status, _, _) = put_token(&mut c, AUDIENCE, &token, MessageId::Ulong(0)).await;
    assert_eq!(status, 200);
    c
}

/// A connection as `device` (its own token on `$cbs`), opened.
async fn device_conn(hub: &TestHub, device: &Value) -> AmqpTestClient {
    let mut c = hub.amqp().await;
    let id = device["deviceId"].as_str().unwrap();
    let token = device_token(device, now_secs() + 600);
    let (status, description, _) = put_token(
        &mut c,
        &format!("localhost/devices/{id}"),
        &token,
        MessageId::String("put-1".into()),
    )
    .await;
    assert_eq!(status, 200, "{description}");
    c
}

/// A C2D message for `device` as the service SDKs build it.
fn c2d(device: &str, message_id: &str, body: &[u8], ack: Option<&str>) -> Message {
    let mut m = data_message(
        body,
        Properties {
            message_id: Some(MessageId::String(message_id.into())),
            to: Some(format!("/devices/{device}/messages/devicebound")),
            correlation_id: Some(MessageId::String(format!("corr-{message_id}"))),
            content_type: Some("text/plain".to_owned().into()),
            ..Properties::default()
        },
    );
    let mut app = ApplicationProperties::new();
    app.insert("color", "blue");
    if let Some(ack) = ack {
        app.insert("iothub-ack", ack);
    }
    m.application_properties = Some(app);
    m
}

fn rejected_condition(state: Option<DeliveryState>) -> String {
    match state {
        Some(DeliveryState::Rejected { error: Some(e) }) => e.condition.as_str().to_owned(),
        other => panic!("expected a rejection with an error, got {other:?}"),
    }
}

fn condition_of(error: Option<AmqpError>) -> String {
    error
        .map(|e| e.condition.as_str().to_owned())
        .unwrap_or_default()
}

/// The error of a refused attach (the hub's ATTACH without a terminus, then its DETACH).
fn refusal<T: std::fmt::Debug>(attached: Result<T, AmqpClientError>) -> Option<AmqpError> {
    match attached {
        Err(AmqpClientError::Detached { error, .. }) => error,
        other => panic!("expected a refused link, got {other:?}"),
    }
}

/// Attaches a sender to `address`; panics if refused.
async fn sender_link(c: &mut AmqpTestClient, name: &str, address: &str) -> u32 {
    c.attach_sender(name, address, None)
        .await
        .unwrap_or_else(|e| panic!("{address}: {e}"))
}

/// Attaches a receiver from `address` keeping `credit` granted; panics if refused.
async fn receiver_link(c: &mut AmqpTestClient, name: &str, address: &str, credit: u32) -> u32 {
    c.attach_receiver(name, Source::address(address), None, credit)
        .await
        .unwrap_or_else(|e| panic!("{address}: {e}"))
}

/// How many messages a purge of `device`'s queue removed.
async fn purge(hub: &TestHub, device: &str) -> u64 {
    let resp = send(
        hub,
        Method::DELETE,
        &format!("/devices/{device}/commands"),
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    body["totalMessagesPurged"].as_u64().unwrap()
}

/// The events of `device` in the log, now.
async fn events_of(hub: &TestHub, device: &str) -> Vec<Value> {
    all_events(hub)
        .await
        .into_iter()
        .filter(|e| e["systemProperties"]["iothub-connection-device-id"] == device)
        .collect()
}

#[tokio::test]
async fn sasl_mechanisms_and_outcomes() {
    let hub = TestHub::start().await;

    // uamqp's MSSBCBS: the outcome is ok, authorization follows on $cbs.
    let mut c = hub.amqp_sasl("MSSBCBS", None).await.unwrap();
    let offered = c.sasl_mechanisms();
    for m in ["MSSBCBS", "ANONYMOUS", "PLAIN"] {
        assert!(offered.iter().any(|o| o == m), "{m} offered: {offered:?}");
    }
    // Nothing is authorized before a token is put: the C2D sender is refused.
    let error = refusal(c.attach_sender("c2d", C2D_SENDER, None).await);
    assert_eq!(condition_of(error), "amqp:unauthorized-access");

    // pyamqp's ANONYMOUS, then a put-token with a uuid message-id: echoed as a uuid.
    let mut c = hub.amqp_sasl("ANONYMOUS", Some(b"")).await.unwrap();
    let id = MessageId::Uuid(*b"0123456789abcdef");
    let token = hub.policy_token("service", 3600);
    let (status, _, correlation) = put_token(&mut c, "sb://localhost", &token, id.clone()).await;
    assert_eq!((status, correlation), (200, Some(id)));
    sender_link(&mut c, "c2d", C2D_SENDER).await;

    // PLAIN with a good token authorizes the connection without $cbs.
    let token = hub.policy_token("iothubowner", 3600);
    let response = format!("\0iothubowner@sas.root.localhost\0{token}");
    let mut c = hub
        .amqp_sasl("PLAIN", Some(response.as_bytes()))
        .await
        .unwrap();
    sender_link(&mut c, "c2d", C2D_SENDER).await;

    // PLAIN with a bad signature, and a mechanism the hub does not offer, fail with auth.
    let key = SymmetricKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
    let forged = mint("localhost", &key, now_secs() + 3600, Some("iothubowner"));
    let response = format!("\0iothubowner@sas.root.localhost\0{forged}");
    let sasl_code = |r: Result<_, AmqpClientError>| match r {
        Err(AmqpClientError::Sasl { code, .. }) => code,
        Ok(_) => SaslCode::Ok,
        Err(e) => panic!("no SASL outcome: {e}"),
    };
    assert_eq!(
        sasl_code(hub.amqp_sasl("PLAIN", Some(response.as_bytes())).await),
        SaslCode::Auth
    );
    assert_eq!(
        sasl_code(hub.amqp_sasl("EXTERNAL", None).await),
        SaslCode::Auth
    );
}

#[tokio::test]
async fn cbs_put_token_answers_with_typed_status_and_echoed_id() {
    let hub = TestHub::start().await;
    // Node's header: no SASL at all.
    let mut c = hub.amqp().await;
    let token = hub.policy_token("iothubowner", 3600);
    // uamqp's ulong ids and Node's string ids come back with their own type.
    let (status, description, correlation) =
        put_token(&mut c, AUDIENCE, &token, MessageId::Ulong(7)).await;
    assert_eq!(status, 200, "{description}");
    assert_eq!(correlation, Some(MessageId::Ulong(7)));
    let (status, _, correlation) =
        put_token(&mut c, AUDIENCE, &token, MessageId::String("req-2".into())).await;
    assert_eq!(
        (status, correlation),
        (200, Some(MessageId::String("req-2".into())))
    );

    // A wrong key, an expired token, a malformed one: 401 on the reply, the link stays.
    let key = SymmetricKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
    let forged = mint("localhost", &key, now_secs() + 3600, Some("iothubowner"));
    let expired = mint(
        "localhost",
        &hub.policy_key("iothubowner"),
        now_secs() - 3600,
        Some("iothubowner"),
    );
    for (i, bad) in [forged, expired, "not a token".to_owned()]
        .iter()
        .enumerate()
    {
        let (status, description, correlation) = put_token(
            &mut c,
            "other-audience",
            bad,
            MessageId::Ulong(100 + i as u64),
        )
        .await;
        assert_eq!(status, 401, "token {i}");
        // A string: the client reads status-description as text.
        assert!(!description.is_empty(), "token {i}: no status-description");
        assert_eq!(correlation, Some(MessageId::Ulong(100 + i as u64)));
    }
    // The good token still authorizes the service links.
    sender_link(&mut c, "c2d", C2D_SENDER).await;

    // A policy without ServiceConnect: its token is valid, the service links are refused.
    let mut c = hub.amqp().await;
    let token = hub.policy_token("registryRead", 3600);
    assert_eq!(
        put_token(&mut c, AUDIENCE, &token, MessageId::Ulong(0))
            .await
            .0,
        200
    );
    let error = refusal(c.attach_sender("c2d", C2D_SENDER, None).await);
    assert_eq!(condition_of(error), "amqp:unauthorized-access");
}

#[tokio::test]
async fn c2d_send_outcomes() {
    let hub = TestHub::start().await;
    create_device(&hub, "d1").await;
    let mut c = service(&hub).await;
    // uamqp's full-URL target.
    let link = sender_link(&mut c, "c2d", "amqps://localhost/messages/devicebound").await;

    let state = send_message(&mut c, link, &c2d("d1", "m-0", b"hello", Some("full"))).await;
    assert_eq!(state, Some(DeliveryState::Accepted));

    let state = send_message(&mut c, link, &c2d("nobody", "m-x", b"hello", None)).await;
    assert_eq!(rejected_condition(state), "amqp:not-found");

    // A message without `to` is an argument error; the link stays usable.
    let state = send_message(
        &mut c,
        link,
        &Message::with_data(Bytes::from_static(b"where to?")),
    )
    .await;
    assert_eq!(rejected_condition(state), "com.microsoft:argument-error");

    // Above 64 KB.
    let big = vec![b'x'; 64 * 1024 + 1];
    let state = send_message(&mut c, link, &c2d("d1", "m-big", &big, None)).await;
    assert_eq!(rejected_condition(state), "amqp:link:message-size-exceeded");

    // The queue holds 50.
    for i in 1..50 {
        let state = send_message(&mut c, link, &c2d("d1", &format!("m-{i}"), b"x", None)).await;
        assert_eq!(state, Some(DeliveryState::Accepted), "message {i}");
    }
    let state = send_message(&mut c, link, &c2d("d1", "m-50", b"x", None)).await;
    assert_eq!(rejected_condition(state), "amqp:resource-limit-exceeded");
    assert_eq!(purge(&hub, "d1").await, 50);
}

#[tokio::test]
async fn device_receives_c2d_and_feedback_reaches_the_service() {
    let hub = TestHub::start().await;
    let device = create_device(&hub, "d1").await;
    let mut svc = service(&hub).await;
    let sender = sender_link(&mut svc, "c2d", C2D_SENDER).await;
    for (id, ack) in [("done", "full"), ("refused", "negative")] {
        let state = send_message(&mut svc, sender, &c2d("d1", id, b"payload", Some(ack))).await;
        assert_eq!(state, Some(DeliveryState::Accepted));
    }

    let mut dev = device_conn(&hub, &device).await;
    let c2d_link = receiver_link(&mut dev, "c2d", "/devices/d1/messages/devicebound", 10).await;
    let (first, settled, m) = dev.next_message(c2d_link).await.unwrap();
    assert!(!settled, "C2D messages are sent unsettled");
    let props = m.properties.clone().unwrap();
    assert_eq!(props.message_id, Some(MessageId::String("done".into())));
    assert_eq!(
        props.to.as_deref(),
        Some("/devices/d1/messages/devicebound")
    );
    assert_eq!(
        props.correlation_id,
        Some(MessageId::String("corr-done".into()))
    );
    let app = m.application_properties.clone().unwrap();
    assert_eq!(app.get("color").and_then(|v| v.as_text()), Some("blue"));
    assert_eq!(
        app.get("iothub-ack").and_then(|v| v.as_text()),
        Some("full")
    );
    assert_eq!(m.body, Body::data(Bytes::from_static(b"payload")));
    dev.settle(first, DeliveryState::Accepted).await.unwrap();

    let (second, _, m) = dev.next_message(c2d_link).await.unwrap();
    assert_eq!(
        m.properties.unwrap().message_id,
        Some(MessageId::String("refused".into()))
    );
    dev.settle(second, DeliveryState::Rejected { error: None })
        .await
        .unwrap();

    // One feedback receiver gets both records (in one batch or two) and accepts them.
    let feedback = receiver_link(&mut svc, "feedback", FEEDBACK, 10).await;
    let mut records = Vec::new();
    while records.len() < 2 {
        let (id, settled, m) = svc.next_message(feedback).await.unwrap();
        assert!(!settled, "feedback batches are sent unsettled");
        let content_type = m
            .properties
            .as_ref()
            .and_then(|p| p.content_type.as_ref())
            .map(|s| s.as_str().to_owned());
        assert_eq!(
            content_type.as_deref(),
            Some("application/vnd.microsoft.iothub.feedback.json")
        );
        let body = match &m.body {
            Body::Data(sections) => sections.concat(),
            other => panic!("feedback body {other:?}"),
        };
        let batch: Vec<Value> = serde_json::from_slice(&body).unwrap();
        records.extend(batch);
        svc.settle(id, DeliveryState::Accepted).await.unwrap();
    }
    let status_of = |id: &str| {
        records
            .iter()
            .find(|r| r["originalMessageId"] == id)
            .map(|r| r["statusCode"].as_str().unwrap().to_owned())
    };
    assert_eq!(status_of("done").as_deref(), Some("Success"));
    assert_eq!(status_of("refused").as_deref(), Some("Rejected"));
    assert!(records.iter().all(|r| r["deviceId"] == "d1"));

    // Accepted batches are completed: nothing is left for the HTTPS feedback API.
    ferrohub_test_support::eventually(super::WAIT, "feedback completed", || async {
        let resp = send(
            &hub,
            Method::GET,
            "/messages/serviceBound/feedback",
            None,
            &[],
            None,
        )
        .await;
        (resp.status() == StatusCode::NO_CONTENT).then_some(())
    })
    .await;
    assert_eq!(purge(&hub, "d1").await, 0);
}

#[tokio::test]
async fn device_c2d_abandon_redelivers() {
    let hub = TestHub::start().await;
    let device = create_device(&hub, "d1").await;
    let mut svc = service(&hub).await;
    let sender = sender_link(&mut svc, "c2d", C2D_SENDER).await;
    let state = send_message(&mut svc, sender, &c2d("d1", "again", b"x", None)).await;
    assert_eq!(state, Some(DeliveryState::Accepted));
    let mut dev = device_conn(&hub, &device).await;
    let link = receiver_link(&mut dev, "c2d", "/devices/d1/messages/devicebound", 10).await;
    let (id, _, m) = dev.next_message(link).await.unwrap();
    assert_eq!(
        m.properties.unwrap().message_id,
        Some(MessageId::String("again".into()))
    );
    dev.settle(id, DeliveryState::Released).await.unwrap();
    let (id2, _, m) = dev.next_message(link).await.unwrap();
    assert_ne!(id, id2);
    assert_eq!(
        m.properties.unwrap().message_id,
        Some(MessageId::String("again".into()))
    );
    dev.settle(id2, DeliveryState::Accepted).await.unwrap();
    assert_eq!(purge(&hub, "d1").await, 0);
}

#[tokio::test]
async fn telemetry_is_accepted_once_durable_and_readable() {
    let hub = TestHub::start().await;
    let device = create_device(&hub, "d1").await;
    let mut dev = device_conn(&hub, &device).await;
    let link = sender_link(&mut dev, "events", "/devices/d1/messages/events").await;

    let mut m = data_message(
        b"{\"t\":21}",
        Properties {
            message_id: Some(MessageId::String("t-1".into())),
            correlation_id: Some(MessageId::String("c-1".into())),
            content_type: Some("application/json".to_owned().into()),
            content_encoding: Some("utf-8".to_owned().into()),
            ..Properties::default()
        },
    );
    let mut app = ApplicationProperties::new();
    app.insert("alert", "yes");
    m.application_properties = Some(app);
    assert_eq!(
        send_message(&mut dev, link, &m).await,
        Some(DeliveryState::Accepted)
    );
    // Accepted means appended: the read API has it now, without waiting.
    let events = events_of(&hub, "d1").await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e["systemProperties"]["message-id"], "t-1");
    assert_eq!(e["systemProperties"]["correlation-id"], "c-1");
    assert_eq!(e["systemProperties"]["content-type"], "application/json");
    assert_eq!(e["properties"]["alert"], "yes");
    assert_eq!(e["body"], "{\"t\":21}");

    // A batch (Event Hubs message format): one event per inner message.
    let inner: Vec<Bytes> = ["b-1", "b-2"]
        .iter()
        .map(|id| {
            data_message(
                id.as_bytes(),
                Properties {
                    message_id: Some(MessageId::String((*id).into())),
                    ..Properties::default()
                },
            )
            .to_bytes()
            .unwrap()
        })
        .collect();
    let envelope = Message {
        body: Body::Data(inner),
        ..Message::default()
    };
    let id = dev
        .send_payload(
            link,
            &envelope.to_bytes().unwrap(),
            BATCH_MESSAGE_FORMAT,
            false,
        )
        .await
        .unwrap();
    assert_eq!(outcome(&mut dev, id).await, Some(DeliveryState::Accepted));
    let mut ids: Vec<String> = events_of(&hub, "d1")
        .await
        .iter()
        .map(|e| {
            e["systemProperties"]["message-id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["b-1", "b-2", "t-1"]);

    // A payload that is not an AMQP message is rejected and stores nothing.
    let id = dev
        .send_payload(link, b"\x00\x53\x75\xff\xff", 0, false)
        .await
        .unwrap();
    assert_eq!(
        rejected_condition(outcome(&mut dev, id).await),
        "com.microsoft:argument-error"
    );
    assert_eq!(events_of(&hub, "d1").await.len(), 3);
}

#[tokio::test]
async fn device_links_need_the_device_token() {
    let hub = TestHub::start().await;
    create_device(&hub, "victim").await;
    let other = create_device(&hub, "other").await;
    let mut c = device_conn(&hub, &other).await;
    // other's token does not open victim's links.
    let error = refusal(
        c.attach_sender("events", "/devices/victim/messages/events", None)
            .await,
    );
    assert_eq!(condition_of(error), "amqp:unauthorized-access");
    let source = Source::address("/devices/victim/messages/devicebound");
    refusal(c.attach_receiver("c2d", source, None, 10).await);
    assert!(events_of(&hub, "victim").await.is_empty());
}

#[tokio::test]
async fn an_expiring_token_detaches_the_link() {
    let hub = TestHub::start().await;
    let device = create_device(&hub, "d1").await;
    let mut c = hub.amqp().await;
    // The hub allows 300 s of clock skew: expired 297 s ago, the token is good for ~3 s more.
    let token = device_token(&device, now_secs() - 297);
    let (status, _, _) =
        put_token(&mut c, "localhost/devices/d1", &token, MessageId::Ulong(1)).await;
    assert_eq!(status, 200);
    let link = sender_link(&mut c, "events", "/devices/d1/messages/events").await;
    let m = Message::with_data(Bytes::from_static(b"in time"));
    assert_eq!(
        send_message(&mut c, link, &m).await,
        Some(DeliveryState::Accepted)
    );
    let error = c.detached(link).await.unwrap();
    assert_eq!(condition_of(error), "amqp:unauthorized-access");
    assert_eq!(events_of(&hub, "d1").await.len(), 1);
}

#[tokio::test]
async fn a_second_connection_of_an_identity_takes_over() {
    let hub = TestHub::start().await;
    let device = create_device(&hub, "d1").await;
    let mut first = device_conn(&hub, &device).await;
    let first_link = sender_link(&mut first, "events", "/devices/d1/messages/events").await;
    let mut second = device_conn(&hub, &device).await;
    let second_link = sender_link(&mut second, "events", "/devices/d1/messages/events").await;
    assert_eq!(
        condition_of(first.detached(first_link).await.unwrap()),
        "amqp:link:stolen"
    );
    let m = Message::with_data(Bytes::from_static(b"from the second"));
    assert_eq!(
        send_message(&mut second, second_link, &m).await,
        Some(DeliveryState::Accepted)
    );
}

#[tokio::test]
async fn disabling_a_device_detaches_its_links() {
    let hub = TestHub::start().await;
    let device = create_device(&hub, "d1").await;
    let mut c = device_conn(&hub, &device).await;
    let link = sender_link(&mut c, "events", "/devices/d1/messages/events").await;
    let mut disabled = device.clone();
    disabled["status"] = Value::from("disabled");
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/d1",
        None,
        &[("If-Match", "*")],
        Some(&disabled.to_string()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        condition_of(c.detached(link).await.unwrap()),
        "amqp:unauthorized-access"
    );
    // The token no longer opens the device's links.
    refusal(
        c.attach_sender("again", "/devices/d1/messages/events", None)
            .await,
    );
}

#[tokio::test]
async fn bad_frames_close_the_connection_with_an_amqp_error() {
    let hub = TestHub::start().await;
    let device = create_device(&hub, "d1").await;

    // A frame whose body is no performative.
    let mut c = device_conn(&hub, &device).await;
    sender_link(&mut c, "events", "/devices/d1/messages/events").await;
    send_raw(&mut c, &[0, 0, 0, 12, 2, 0, 0, 0, 0x00, 0x53, 0x99, 0x45]).await;
    let closed = closed_within(&mut c, Duration::from_secs(10)).await;
    let Some(Some(error)) = closed else {
        panic!("no CLOSE with an error: {closed:?}");
    };
    assert!(error.condition.as_str().starts_with("amqp:"), "{error:?}");

    // A transfer on a handle that was never attached.
    let mut c = device_conn(&hub, &device).await;
    let transfer = Transfer {
        handle: 42,
        delivery_id: Some(0),
        delivery_tag: Some(Bytes::from_static(&[0])),
        message_format: Some(0),
        settled: Some(false),
        ..Transfer::default()
    };
    let lost = Message::with_data(Bytes::from_static(b"lost"))
        .to_bytes()
        .unwrap();
    send_frame(&mut c, Performative::Transfer(transfer), &lost).await;
    let closed = closed_within(&mut c, Duration::from_secs(10)).await;
    assert!(
        matches!(closed, Some(Some(_))),
        "no CLOSE with an error: {closed:?}"
    );

    // A frame larger than the hub's max-frame-size.
    let mut c = device_conn(&hub, &device).await;
    let mut huge = vec![0u8; 8];
    huge[..4].copy_from_slice(&(64u32 * 1024 * 1024).to_be_bytes());
    huge[4] = 2;
    send_raw(&mut c, &huge).await;
    let closed = closed_within(&mut c, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "the connection stayed open");

    assert!(events_of(&hub, "d1").await.is_empty());
}

#[tokio::test]
async fn oversized_telemetry_is_rejected_and_not_stored() {
    let hub = TestHub::start().await;
    let device = create_device(&hub, "d1").await;
    let mut c = device_conn(&hub, &device).await;
    let link = sender_link(&mut c, "events", "/devices/d1/messages/events").await;
    // Azure's telemetry limit is 256 KB.
    let big = Message::with_data(Bytes::from(vec![b'x'; 256 * 1024 + 1]));
    let state = send_message(&mut c, link, &big).await;
    assert_eq!(rejected_condition(state), "amqp:link:message-size-exceeded");
    // The link stays usable.
    let small = Message::with_data(Bytes::from_static(b"fits"));
    assert_eq!(
        send_message(&mut c, link, &small).await,
        Some(DeliveryState::Accepted)
    );
    let events = events_of(&hub, "d1").await;
    assert_eq!(events.len(), 1, "{events:#?}");
}

#[tokio::test]
async fn file_notifications_attach_and_stay_empty() {
    let hub = TestHub::start().await;
    create_device(&hub, "d1").await;
    let mut c = service(&hub).await;
    let notes = receiver_link(
        &mut c,
        "files",
        "/messages/serviceBound/filenotifications",
        10,
    )
    .await;
    // C2D and its feedback flow meanwhile: a purged message with ack=full gives a Purged
    // record on the feedback link, and nothing reaches the file-notification link.
    let sender = sender_link(&mut c, "c2d", C2D_SENDER).await;
    let state = send_message(&mut c, sender, &c2d("d1", "n-1", b"x", Some("full"))).await;
    assert_eq!(state, Some(DeliveryState::Accepted));
    assert_eq!(purge(&hub, "d1").await, 1);
    let feedback = receiver_link(&mut c, "feedback", FEEDBACK, 10).await;
    let mut on_notes = 0;
    c.wait_for(|i| match i {
        Incoming::Message { handle, .. } if *handle == feedback => Some(()),
        Incoming::Message { handle, .. } if *handle == notes => {
            on_notes += 1;
            None
        }
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(on_notes, 0, "file notifications arrived");
}

#[tokio::test]
async fn a_module_sends_telemetry_with_its_own_token() {
    let hub = TestHub::start().await;
    create_device(&hub, "d1").await;
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/d1/modules/m1",
        None,
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let module: Value = resp.json().await.unwrap();
    let token = mint(
        "localhost/devices/d1/modules/m1",
        &key_of(&module),
        now_secs() + 600,
        None,
    );
    let mut c = hub.amqp().await;
    let (status, _, _) = put_token(
        &mut c,
        "localhost/devices/d1/modules/m1",
        &token,
        MessageId::Ulong(1),
    )
    .await;
    assert_eq!(status, 200);
    // The module's token does not open its device's links.
    refusal(
        c.attach_sender("device-events", "/devices/d1/messages/events", None)
            .await,
    );
    let link = sender_link(&mut c, "events", "/devices/d1/modules/m1/messages/events").await;
    let m = Message::with_data(Bytes::from_static(b"from the module"));
    assert_eq!(
        send_message(&mut c, link, &m).await,
        Some(DeliveryState::Accepted)
    );
    let events = events_of(&hub, "d1").await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        events[0]["systemProperties"]["iothub-connection-module-id"],
        "m1"
    );
}

#[tokio::test]
async fn another_identitys_token_put_for_a_links_audience_detaches_it() {
    /// Puts `device`'s token, valid for `secs`, for device a's audience; the status code.
    async fn put_for_a(c: &mut AmqpTestClient, device: &Value, secs: u64, id: u64) -> i32 {
        let token = device_token(device, now_secs() + secs);
        let audience = "localhost/devices/a";
        put_token(c, audience, &token, MessageId::Ulong(id)).await.0
    }

    let hub = TestHub::start().await;
    let a = create_device(&hub, "a").await;
    let b = create_device(&hub, "b").await;
    let mut c = hub.amqp().await;
    assert_eq!(put_for_a(&mut c, &a, 600, 1).await, 200);
    let link = sender_link(&mut c, "events", "/devices/a/messages/events").await;
    // A renewal with a's own token keeps the link.
    assert_eq!(put_for_a(&mut c, &a, 900, 2).await, 200);
    let m = Message::with_data(Bytes::from_static(b"still a"));
    assert_eq!(
        send_message(&mut c, link, &m).await,
        Some(DeliveryState::Accepted)
    );
    // b's token is valid, but it does not authorize a's link: that link goes, instead of
    // living on b's token past a's.
    assert_eq!(put_for_a(&mut c, &b, 600, 3).await, 200);
    assert_eq!(
        condition_of(c.detached(link).await.unwrap()),
        "amqp:unauthorized-access"
    );
    assert_eq!(events_of(&hub, "a").await.len(), 1);
}
