//! The Azure IoT Hub topic grammar against what the SDKs really send (captured traffic and SDK
//! sources, see the design notes on real clients).

use ferrohub_mqtt::topic::{
    C2dTopicError, ClientId, ClientIdError, PropertyBag, PropertyBagError, PropertyName,
    Subscription, SystemProperty, TelemetryTopic, TelemetryTopicError, TopicError, TopicFilter,
    Username, UsernameError, c2d_topic,
};
use proptest::prelude::*;

fn telemetry(topic: &str) -> TelemetryTopic<'_> {
    TelemetryTopic::parse(topic).expect("valid telemetry topic")
}

fn app(bag: &PropertyBag) -> Vec<(&str, Option<&str>)> {
    bag.application().collect()
}

#[test]
fn python_telemetry() {
    let t = telemetry(
        "devices/dev1/messages/events/%24.mid=mid-1&%24.cid=cid-1&%24.ct=application%2Fjson&%24.ce=utf-8&a%20b%2Fc=x%26y%3Dz&alert=yes",
    );
    assert_eq!((t.device_id, t.module_id), ("dev1", None));
    let p = &t.properties;
    assert_eq!(p.system(&SystemProperty::MessageId), Some("mid-1"));
    assert_eq!(p.system(&SystemProperty::CorrelationId), Some("cid-1"));
    assert_eq!(
        p.system(&SystemProperty::ContentType),
        Some("application/json")
    );
    assert_eq!(p.system(&SystemProperty::ContentEncoding), Some("utf-8"));
    assert_eq!(p.system(&SystemProperty::UserId), None);
    assert_eq!(app(p), [("a b/c", Some("x&y=z")), ("alert", Some("yes"))]);
}

#[test]
fn node_telemetry_keeps_insertion_order() {
    let t = telemetry(
        "devices/dev2/messages/events/%24.mid=mid-1&%24.cid=cid-1&%24.ct=application%2Fjson&%24.ce=utf-8&alert=yes&a%20b%2Fc=x%26y%3Dz",
    );
    assert_eq!(
        app(&t.properties),
        [("alert", Some("yes")), ("a b/c", Some("x&y=z"))]
    );
    assert_eq!(t.properties.len(), 6);
}

#[test]
fn csharp_trailing_slash_and_empty_bags() {
    let t = telemetry("devices/d/messages/events/%24.mid=1&a=b/");
    assert_eq!(t.properties.system(&SystemProperty::MessageId), Some("1"));
    assert_eq!(app(&t.properties), [("a", Some("b"))]);
    for empty in [
        "devices/dev1/messages/events/",
        "devices/dev1/messages/events",
        "devices/dev1/messages/events//",
    ] {
        assert!(telemetry(empty).properties.is_empty(), "{empty}");
    }
}

#[test]
fn module_telemetry() {
    let t = telemetry("devices/dev1/modules/mod1/messages/events/%24.on=out1&x=1/");
    assert_eq!((t.device_id, t.module_id), ("dev1", Some("mod1")));
    assert_eq!(
        t.properties.system(&SystemProperty::OutputName),
        Some("out1")
    );
    let t = telemetry("devices/dev1/modules/mod1/messages/events/");
    assert_eq!(t.module_id, Some("mod1"));
}

#[test]
fn bag_encoding_quirks() {
    // Docs show `$` unencoded; `+` is literal, not a space; hex in either case.
    let t = telemetry(
        "devices/d/messages/events/$.ct=application%2fjson&a+b=c+d&%24.exp=2030-01-01T00%3a00%3A00Z",
    );
    assert_eq!(
        t.properties.system(&SystemProperty::ContentType),
        Some("application/json")
    );
    assert_eq!(
        t.properties.system(&SystemProperty::AbsoluteExpiryTime),
        Some("2030-01-01T00:00:00Z")
    );
    assert_eq!(app(&t.properties), [("a+b", Some("c+d"))]);
    // A bare key is null, `key=` is empty; only the first `=` splits.
    let t = telemetry("devices/d/messages/events/prop1&prop2=&prop3=a%20string&k=v=w");
    assert_eq!(
        app(&t.properties),
        [
            ("prop1", None),
            ("prop2", Some("")),
            ("prop3", Some("a string")),
            ("k", Some("v=w"))
        ]
    );
    // Empty pairs are skipped.
    let t = telemetry("devices/d/messages/events/&a=1&&b=2&");
    assert_eq!(app(&t.properties), [("a", Some("1")), ("b", Some("2"))]);
}

#[test]
fn system_properties_are_distinguished() {
    let t = telemetry(
        "devices/d/messages/events/%24.mid=1&%24.cid=2&%24.uid=3&%24.to=4&%24.ct=5&%24.ce=6&%24.exp=7&%24.on=8&%24.ifid=9&%24.sub=10&%24.schema=11&%24.ctime=12&%24.diagid=13&%24.diagctx=14&%24.future=15&iothub-ack=full&%24x=16",
    );
    let names: Vec<PropertyName> = t.properties.iter().map(|p| p.name.clone()).collect();
    use SystemProperty::*;
    let expected: Vec<PropertyName> = [
        MessageId,
        CorrelationId,
        UserId,
        To,
        ContentType,
        ContentEncoding,
        AbsoluteExpiryTime,
        OutputName,
        InterfaceId,
        ComponentName,
        MessageSchema,
        CreationTimeUtc,
        DiagnosticId,
        DiagnosticContext,
        Other("future".into()),
    ]
    .into_iter()
    .map(PropertyName::System)
    .chain([
        PropertyName::Application("iothub-ack".into()),
        PropertyName::Application("$x".into()),
    ])
    .collect();
    assert_eq!(names, expected);
}

#[test]
fn malformed_bags_are_rejected() {
    for (topic, offset) in [
        ("devices/d/messages/events/a=%zz", 2),
        ("devices/d/messages/events/a=100%", 5),
        ("devices/d/messages/events/x=1&%2=1", 4),
    ] {
        assert_eq!(
            TelemetryTopic::parse(topic),
            Err(TelemetryTopicError::Properties(
                PropertyBagError::MalformedEscape { offset }
            )),
            "{topic}"
        );
    }
    assert_eq!(
        TelemetryTopic::parse("devices/d/messages/events/a=%C3"),
        Err(TelemetryTopicError::Properties(
            PropertyBagError::InvalidUtf8
        ))
    );
    assert_eq!(
        TelemetryTopic::parse("devices/d/messages/events/=v"),
        Err(TelemetryTopicError::Properties(PropertyBagError::EmptyKey))
    );
}

#[test]
fn other_topics_are_not_telemetry() {
    for topic in [
        "devices/d/messages/devicebound/",
        "devices//messages/events/",
        "devices/d/modules//messages/events/",
        "devices/d/messages/eventsX",
        "devices/d",
        "devices/d/modules/m",
        "$iothub/twin/GET/?$rid=1",
        "devices/d/messages/events-not/",
        "/devices/d/messages/events/",
    ] {
        assert_eq!(
            TelemetryTopic::parse(topic),
            Err(TelemetryTopicError::NotTelemetry),
            "{topic}"
        );
    }
}

#[test]
fn c2d_topic_always_has_the_slash() {
    let topic = c2d_topic("dev1", &PropertyBag::new()).expect("topic");
    assert_eq!(topic.as_str(), "devices/dev1/messages/devicebound/");
}

#[test]
fn c2d_topic_matches_the_hub() {
    // The representative hub topic from the Python SDK's unit tests.
    let mut bag = PropertyBag::new();
    bag.push_system(
        SystemProperty::AbsoluteExpiryTime,
        "3237-07-19T23:06:40.0000000Z",
    );
    bag.push_system(SystemProperty::CorrelationId, "fake_corid");
    bag.push_system(
        SystemProperty::MessageId,
        "6b822696-f75a-46f5-8b02-0680db65abf5",
    );
    bag.push_system(
        SystemProperty::To,
        "/devices/fake_device/messages/devicebound",
    );
    bag.push_system(SystemProperty::ContentType, "fake_content_type");
    bag.push_system(SystemProperty::ContentEncoding, "utf-8");
    bag.push_application("iothub-ack", Some("positive".into()));
    let topic = c2d_topic("fake_device", &bag).expect("topic");
    assert_eq!(
        topic.as_str(),
        "devices/fake_device/messages/devicebound/%24.exp=3237-07-19T23%3A06%3A40.0000000Z&%24.cid=fake_corid&%24.mid=6b822696-f75a-46f5-8b02-0680db65abf5&%24.to=%2Fdevices%2Ffake_device%2Fmessages%2Fdevicebound&%24.ct=fake_content_type&%24.ce=utf-8&iothub-ack=positive"
    );
}

#[test]
fn c2d_topic_escapes_keys_and_values() {
    let mut bag = PropertyBag::new();
    bag.push_application("with space", Some("a&b".into()));
    bag.push_application("k/=%+#", Some("v/=%+#é".into()));
    bag.push_application("prop1", None);
    bag.push_application("prop2", Some(String::new()));
    let topic = c2d_topic("dev1", &bag).expect("topic");
    assert_eq!(
        topic.as_str(),
        "devices/dev1/messages/devicebound/with%20space=a%26b&k%2F%3D%25%2B%23=v%2F%3D%25%2B%23%C3%A9&prop1&prop2="
    );
    // What the hub builds, a device parses back.
    let tail = topic
        .as_str()
        .trim_start_matches("devices/dev1/messages/devicebound/");
    assert_eq!(PropertyBag::parse(tail), Ok(bag));
}

#[test]
fn c2d_topic_rejects_unplaceable_ids() {
    let bag = PropertyBag::new();
    assert_eq!(c2d_topic("", &bag), Err(C2dTopicError::InvalidDeviceId));
    assert_eq!(c2d_topic("a/b", &bag), Err(C2dTopicError::InvalidDeviceId));
    assert_eq!(
        c2d_topic("a+b", &bag),
        Err(C2dTopicError::Topic(TopicError::WildcardInName))
    );
}

#[test]
fn usernames_from_the_sdks() {
    let py = Username::parse(
        "localhost/dev1/?api-version=2019-10-01&DeviceClientType=azure-iot-device-iothub-py%2F2.14.0%283.11.7%3BLinux%20%231%20SMP%20PREEMPT_DYNAMIC%20%400%3Bx86_64%29",
    )
    .expect("python");
    assert_eq!((py.host, py.client_id), ("localhost", "dev1"));
    assert_eq!(py.api_version(), Some("2019-10-01"));
    assert_eq!(
        py.device_client_type(),
        Some("azure-iot-device-iothub-py/2.14.0(3.11.7;Linux #1 SMP PREEMPT_DYNAMIC @0;x86_64)")
    );
    assert_eq!(py.model_id(), None);

    let node = Username::parse(
        "localhost/dev2/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4%20(node%20v20.20.2%3B%20Debian%2012%3B%20x64)",
    )
    .expect("node");
    assert_eq!(node.client_id, "dev2");
    assert_eq!(
        node.device_client_type(),
        Some("azure-iot-device/1.18.4 (node v20.20.2; Debian 12; x64)")
    );

    // C SDK, module identity, lower-case escapes.
    let c = Username::parse(
        "hub.azure-devices.net/dev/mod/?api-version=2020-09-30&DeviceClientType=iothubclient%2f1.9.0%20(native%3b%20Linux%3b%20aarch64)",
    )
    .expect("c");
    assert_eq!((c.host, c.client_id), ("hub.azure-devices.net", "dev/mod"));
    assert_eq!(
        c.device_client_type(),
        Some("iothubclient/1.9.0 (native; Linux; aarch64)")
    );

    // Plug and Play model ids, current and older parameter names; unknown parameters kept.
    let pnp = Username::parse(
        "h/d/?api-version=2020-09-30&DeviceClientType=x&auth-chain=a;b&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1",
    )
    .expect("pnp");
    assert_eq!(pnp.model_id(), Some("dtmi:com:example:Thermostat;1"));
    assert_eq!(
        pnp.params.get("auth-chain").map(String::as_str),
        Some("a;b")
    );
    let old = Username::parse("h/d/?digital-twin-model-id=dtmi:x;1").expect("old pnp");
    assert_eq!(old.model_id(), Some("dtmi:x;1"));
}

#[test]
fn username_variants_from_the_docs() {
    for (username, client_id, api) in [
        ("h/d/api-version=2016-11-14", "d", Some("2016-11-14")),
        ("h/d/m/api-version=1&DeviceClientType=a/b", "d/m", Some("1")),
        ("h/d?api-version=2021-04-12", "d", Some("2021-04-12")),
        ("h/d/?", "d", None),
        ("h/d/", "d", None),
        ("h/d", "d", None),
        ("h/d/m/?api-version=1&api-version=2", "d/m", Some("1")),
        ("h/d/?bad=%zz&flag", "d", None),
    ] {
        let u = Username::parse(username).expect(username);
        assert_eq!(
            (u.host, u.client_id, u.api_version()),
            ("h", client_id, api)
        );
    }
    let u = Username::parse("h/d/?bad=%zz&flag").expect("lenient");
    assert_eq!(u.params.get("bad").map(String::as_str), Some("%zz"));
    assert_eq!(u.params.get("flag").map(String::as_str), Some(""));
    assert_eq!(Username::parse(""), Err(UsernameError::MissingHost));
    assert_eq!(Username::parse("/d"), Err(UsernameError::MissingHost));
    assert_eq!(Username::parse("h"), Err(UsernameError::MissingClientId));
    assert_eq!(
        Username::parse("h/?api-version=1"),
        Err(UsernameError::MissingClientId)
    );
}

#[test]
fn client_ids() {
    let d = ClientId::parse("dev1").expect("device");
    assert_eq!((d.device_id, d.module_id), ("dev1", None));
    let m = ClientId::parse("dev1/mod1").expect("module");
    assert_eq!((m.device_id, m.module_id), ("dev1", Some("mod1")));
    assert_eq!(ClientId::parse(""), Err(ClientIdError::EmptyDeviceId));
    assert_eq!(ClientId::parse("/m"), Err(ClientIdError::EmptyDeviceId));
    assert_eq!(ClientId::parse("d/"), Err(ClientIdError::EmptyModuleId));
    assert_eq!(
        ClientId::parse("a/b/c"),
        Err(ClientIdError::TooManySegments)
    );
}

#[test]
fn subscriptions() {
    let parse = |s: &str| {
        let f = TopicFilter::new(s).expect("valid filter");
        format!("{:?}", Subscription::parse(&f))
    };
    assert_eq!(
        parse("devices/dev1/messages/devicebound/#"),
        format!("{:?}", Subscription::C2d { device_id: "dev1" })
    );
    assert_eq!(parse("$iothub/twin/res/#"), "TwinResponses");
    assert_eq!(
        parse("$iothub/twin/PATCH/properties/desired/#"),
        "DesiredProperties"
    );
    assert_eq!(parse("$iothub/methods/POST/#"), "Methods");
    assert_eq!(
        parse("devices/d/modules/m/inputs/#"),
        format!(
            "{:?}",
            Subscription::ModuleInputs {
                device_id: "d",
                module_id: "m"
            }
        )
    );
    assert_eq!(
        parse("devices/d/modules/m/#"),
        format!(
            "{:?}",
            Subscription::Module {
                device_id: "d",
                module_id: "m"
            }
        )
    );
    for unsupported in [
        "devices/+/messages/devicebound/#",
        "devices/d/messages/devicebound/+",
        "devices/d/messages/devicebound",
        "devices/d/messages/events/#",
        "devices//messages/devicebound/#",
        "devices/d/modules/+/inputs/#",
        "$iothub/twin/res/+",
        "$iothub/methods/POST/reboot",
        "#",
    ] {
        assert_eq!(parse(unsupported), "Unsupported", "{unsupported}");
    }
}

proptest! {
    #[test]
    fn property_bags_round_trip(
        props in prop::collection::vec(
            ("\\PC{1,12}", proptest::option::of("\\PC{0,12}")),
            0..6,
        )
    ) {
        let mut bag = PropertyBag::new();
        for (key, value) in props {
            bag.push(PropertyName::from_key(&key), value);
        }
        let encoded = bag.encode();
        prop_assert!(!encoded.contains(['/', '+', '#', ' ', '$']));
        prop_assert_eq!(PropertyBag::parse(&encoded), Ok(bag.clone()));
        let topic = format!("devices/d/messages/events/{encoded}/");
        prop_assert_eq!(TelemetryTopic::parse(&topic).map(|t| t.properties), Ok(bag));
    }

    #[test]
    fn parsers_never_panic(s in "\\PC{0,80}") {
        let _ = TelemetryTopic::parse(&s);
        let _ = Username::parse(&s);
        let _ = ClientId::parse(&s);
        let _ = PropertyBag::parse(&s);
        if let Ok(f) = TopicFilter::new(s) {
            let _ = Subscription::parse(&f);
        }
    }
}
