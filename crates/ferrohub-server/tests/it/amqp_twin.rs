//! Twins and direct methods over AMQP for devices and modules (amqp-contract §4.5, §4.6): the
//! links Node's `azure-iot-device-amqp` attaches, driven through the hub's AMQP listener.

use bytes::Bytes;
use ferrohub_amqp::message::{
    Annotations, ApplicationProperties, Body, Message, MessageId, Properties,
};
use ferrohub_amqp::performative::{Fields, Source};
use ferrohub_amqp::types::Value;
use ferrohub_auth::{SymmetricKey, mint};
use ferrohub_client::amqp::Incoming;
use ferrohub_test_support::{AmqpTestClient, TestHub, now_secs};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

use super::{create_device, send};

/// A device's (or module's) AMQP connection with its twin links attached.
struct TwinLinks {
    conn: AmqpTestClient,
    sender: u32,
    receiver: u32,
    next: u64,
}

/// The answer to a twin request: status, version annotation, body.
struct Answer {
    status: Option<i128>,
    version: Option<i128>,
    body: Bytes,
}

/// The link properties Node's twin client sends.
fn twin_link_properties() -> Fields {
    let mut p = Fields::new();
    p.insert(
        "com.microsoft:channel-correlation-id",
        Value::String("twin:7b5c3c2e-62ad-4c4e-9d1e-2f0c1d8e3a11".into()),
    );
    p.insert(
        "com.microsoft:api-version",
        Value::String("2021-04-12".into()),
    );
    p
}

/// Connects as `id` (or its module `module`) with a token of `key`, authorized through `$cbs`.
async fn connect(hub: &TestHub, id: &str, module: Option<&str>, key: &str) -> AmqpTestClient {
    let resource = match module {
        None => format!("localhost/devices/{id}"),
        Some(m) => format!("localhost/devices/{id}/modules/{m}"),
    };
    let token = mint(
        &resource,
        &SymmetricKey::from_base64(key).unwrap(),
        now_secs() + 600,
        None,
    );
    let mut conn = hub.amqp().await;
    let (status, description) = conn.put_token(&resource, &token).await.unwrap();
    assert_eq!(status, 200, "put-token: {description}");
    conn
}

fn primary_key(identity: &Json) -> String {
    identity["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned()
}

impl TwinLinks {
    async fn attach(mut conn: AmqpTestClient, address: &str) -> TwinLinks {
        let receiver = conn
            .attach_receiver(
                "twin-receiver",
                Source::address(address),
                Some(twin_link_properties()),
                100,
            )
            .await
            .unwrap();
        let sender = conn
            .attach_sender("twin-sender", address, Some(twin_link_properties()))
            .await
            .unwrap();
        TwinLinks {
            conn,
            sender,
            receiver,
            next: 1,
        }
    }

    /// Sends a request as Node does (string correlation-id, annotations, a data body) and
    /// waits for the answer carrying its correlation-id.
    async fn request(&mut self, operation: &str, resource: Option<&str>, body: &[u8]) -> Answer {
        let correlation = format!("6d1c0d7e-0000-4000-8000-{:012}", self.next);
        self.next += 1;
        let mut annotations = Annotations::new();
        annotations.insert("operation", Value::String(operation.into()));
        if let Some(r) = resource {
            annotations.insert("resource", Value::String(r.into()));
        }
        let message = Message {
            message_annotations: Some(annotations),
            properties: Some(Properties {
                correlation_id: Some(MessageId::String(correlation.clone())),
                ..Properties::default()
            }),
            body: Body::data(Bytes::copy_from_slice(body)),
            ..Message::default()
        };
        self.conn.send(self.sender, &message, true).await.unwrap();
        let receiver = self.receiver;
        let expected = MessageId::String(correlation);
        self.conn
            .wait_for(|i| {
                i.correlated_on(receiver, Some(&expected))
                    .map(|m| answer_of(&m))
            })
            .await
            .unwrap()
    }

    /// Waits for a desired notification: a message without correlation-id.
    async fn desired(&mut self) -> (Option<i128>, Json) {
        let receiver = self.receiver;
        self.conn
            .wait_for(|i| {
                i.correlated_on(receiver, None).map(|m| {
                    let a = answer_of(&m);
                    (a.version, serde_json::from_slice(&a.body).unwrap())
                })
            })
            .await
            .unwrap()
    }
}

fn answer_of(m: &Message) -> Answer {
    let annotation = |k: &str| {
        m.message_annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .and_then(Value::as_integer)
    };
    Answer {
        status: annotation("status"),
        version: annotation("version"),
        body: match m.body.as_data() {
            Some(parts) => Bytes::from(parts.concat()),
            None => Bytes::new(),
        },
    }
}

async fn service_twin(hub: &TestHub, path: &str) -> Json {
    let resp = send(hub, Method::GET, path, None, &[], None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn a_device_gets_and_patches_its_twin_and_hears_of_desired_changes() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "atwin1").await;
    let conn = connect(&hub, "atwin1", None, &primary_key(&d)).await;
    let mut twin = TwinLinks::attach(conn, "/devices/atwin1/twin").await;

    // GET: the device's view of a new twin.
    let got = twin.request("GET", None, b" ").await;
    assert_eq!(got.status, Some(200));
    let doc: Json = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(doc["desired"]["$version"], 1, "{doc}");
    assert_eq!(doc["reported"]["$version"], 1, "{doc}");

    // PATCH reported: 204, the new reported version, visible to the service.
    let patched = twin
        .request(
            "PATCH",
            Some("/properties/reported"),
            br#"{"firmware":"1.2.3","battery":{"level":80}}"#,
        )
        .await;
    assert_eq!(patched.status, Some(204));
    assert_eq!(patched.version, Some(2));
    assert!(patched.body.is_empty());
    let service = service_twin(&hub, "/twins/atwin1").await;
    assert_eq!(service["properties"]["reported"]["firmware"], "1.2.3");
    assert_eq!(service["properties"]["reported"]["battery"]["level"], 80);
    assert_eq!(service["properties"]["reported"]["$version"], 2);

    // Patches apply in the order sent.
    for n in 0..5 {
        let r = twin
            .request(
                "PATCH",
                Some("/properties/reported"),
                format!(r#"{{"counter":{n}}}"#).as_bytes(),
            )
            .await;
        assert_eq!(r.status, Some(204));
        assert_eq!(r.version, Some(3 + n));
    }
    let service = service_twin(&hub, "/twins/atwin1").await;
    assert_eq!(service["properties"]["reported"]["counter"], 4);

    // Subscribe, then a service write of desired properties reaches the device.
    let subscribed = twin
        .request("PUT", Some("/notifications/twin/properties/desired"), b" ")
        .await;
    assert_eq!(subscribed.status, Some(200));
    let resp = send(
        &hub,
        Method::PATCH,
        "/twins/atwin1",
        None,
        &[("If-Match", "*")],
        Some(r#"{"properties":{"desired":{"interval":30}}}"#),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (version, patch) = twin.desired().await;
    assert_eq!(patch["interval"], 30, "{patch}");
    assert_eq!(patch["$version"], 2, "{patch}");
    assert_eq!(version, Some(2));

    // The device's GET now shows it.
    let got = twin.request("GET", None, b" ").await;
    let doc: Json = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(doc["desired"]["interval"], 30);

    // Unsubscribed: the next write sends nothing; the GET after it still sees it.
    let off = twin
        .request(
            "DELETE",
            Some("/notifications/twin/properties/desired"),
            b" ",
        )
        .await;
    assert_eq!(off.status, Some(200));
    let resp = send(
        &hub,
        Method::PATCH,
        "/twins/atwin1",
        None,
        &[("If-Match", "*")],
        Some(r#"{"properties":{"desired":{"interval":60}}}"#),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let got = twin.request("GET", None, b" ").await;
    let doc: Json = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(doc["desired"]["interval"], 60);
    // Nothing but the answers arrived: no notification is waiting behind the GET's answer
    // (credit the hub grants on the sender link is all there may be).
    let messages = async {
        loop {
            if let Incoming::Message { .. } = twin.conn.next().await.unwrap() {
                return;
            }
        }
    };
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), messages).await;
    assert!(early.is_err(), "a message after unsubscribing");
}

#[tokio::test]
async fn bad_twin_requests_get_azure_errors() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "atwin2").await;
    let conn = connect(&hub, "atwin2", None, &primary_key(&d)).await;
    let mut twin = TwinLinks::attach(conn, "/devices/atwin2/twin").await;

    let bad = twin
        .request("PATCH", Some("/properties/reported"), b"not json")
        .await;
    assert_eq!(bad.status, Some(400));
    let error: Json = serde_json::from_slice(&bad.body).unwrap();
    assert_eq!(error["errorCode"], 400004, "{error}");

    let unknown = twin
        .request("POST", Some("/properties/desired"), b" ")
        .await;
    assert_eq!(unknown.status, Some(400));
    let error: Json = serde_json::from_slice(&unknown.body).unwrap();
    assert!(
        error["message"].as_str().unwrap().contains("unsupported"),
        "{error}"
    );

    // Nothing was stored.
    let service = service_twin(&hub, "/twins/atwin2").await;
    assert_eq!(service["properties"]["reported"]["$version"], 1);
}

#[tokio::test]
async fn twin_links_of_another_device_are_refused() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "atwin3").await;
    create_device(&hub, "atwin4").await;
    let mut conn = connect(&hub, "atwin3", None, &primary_key(&d)).await;
    let refused = conn
        .attach_receiver(
            "twin-receiver",
            Source::address("/devices/atwin4/twin"),
            None,
            10,
        )
        .await;
    let Err(ferrohub_client::amqp::AmqpClientError::Detached { error, .. }) = refused else {
        panic!("attached another device's twin: {refused:?}");
    };
    let error = error.expect("an error");
    assert_eq!(
        error.condition.as_str(),
        "amqp:unauthorized-access",
        "{error:?}"
    );
}

#[tokio::test]
async fn modules_have_twins_over_amqp() {
    let hub = TestHub::start().await;
    create_device(&hub, "atwin5").await;
    let resp = send(
        &hub,
        Method::PUT,
        "/devices/atwin5/modules/sensor",
        None,
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let module: Json = resp.json().await.unwrap();
    let conn = connect(&hub, "atwin5", Some("sensor"), &primary_key(&module)).await;
    let mut twin = TwinLinks::attach(conn, "/devices/atwin5/modules/sensor/twin").await;
    let patched = twin
        .request("PATCH", Some("/properties/reported"), br#"{"temp":21.5}"#)
        .await;
    assert_eq!(patched.status, Some(204));
    let service = service_twin(&hub, "/twins/atwin5/modules/sensor").await;
    assert_eq!(service["properties"]["reported"]["temp"], 21.5);
    // The device's own twin is untouched.
    let device = service_twin(&hub, "/twins/atwin5").await;
    assert!(device["properties"]["reported"].get("temp").is_none());
}

#[tokio::test]
async fn a_method_reaches_an_amqp_device_and_its_answer_the_caller() {
    let hub = TestHub::start().await;
    let d = create_device(&hub, "ameth1").await;
    let mut conn = connect(&hub, "ameth1", None, &primary_key(&d)).await;
    let address = "/devices/ameth1/methods/devicebound";
    let mut props = Fields::new();
    props.insert(
        "com.microsoft:channel-correlation-id",
        Value::String("methods:0e6f1f44-3b7c-4a36-b5f0-5a3b1c7d9e20".into()),
    );
    props.insert(
        "com.microsoft:api-version",
        Value::String("2021-04-12".into()),
    );
    let requests = conn
        .attach_receiver(
            "methods-receiver",
            Source::address(address),
            Some(props.clone()),
            10,
        )
        .await
        .unwrap();
    let responses = conn
        .attach_sender("methods-sender", address, Some(props))
        .await
        .unwrap();

    let call = send(
        &hub,
        Method::POST,
        "/twins/ameth1/methods",
        None,
        &[],
        Some(r#"{"methodName":"reboot","payload":{"delay":5},"responseTimeoutInSeconds":30}"#),
    );
    let device = async {
        let request = conn
            .wait_for(|i| match i {
                Incoming::Message { handle, .. } if *handle == requests => i.message(),
                _ => None,
            })
            .await
            .unwrap();
        let name = request
            .application_properties
            .as_ref()
            .and_then(|a| a.get("IoThub-methodname"))
            .and_then(Value::as_text)
            .map(str::to_owned);
        assert_eq!(name.as_deref(), Some("reboot"));
        let correlation = request
            .properties
            .as_ref()
            .and_then(|p| p.correlation_id.clone())
            .expect("a correlation-id");
        assert!(matches!(correlation, MessageId::Uuid(_)), "{correlation:?}");
        assert_eq!(
            request.body.as_data().map(<[Bytes]>::concat).as_deref(),
            Some(&br#"{"delay":5}"#[..])
        );
        let mut app = ApplicationProperties::new();
        app.insert("IoThub-status", Value::Int(201));
        let answer = Message {
            properties: Some(Properties {
                correlation_id: Some(correlation),
                ..Properties::default()
            }),
            application_properties: Some(app),
            body: Body::data(Bytes::from_static(br#"{"rebooting":true}"#)),
            ..Message::default()
        };
        conn.send(responses, &answer, false).await.unwrap();
        conn
    };
    let (resp, _conn) = tokio::join!(call, device);
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Json = resp.json().await.unwrap();
    assert_eq!(body, json!({"status":201,"payload":{"rebooting":true}}));
}
