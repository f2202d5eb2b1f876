//! Runs the Azure IoT Hub topic and CONNECT identity parsers on arbitrary text. A property bag
//! that decodes must encode to text that decodes to the same bag.
#![no_main]

use ferrohub_mqtt::topic::{
    ClientId, PropertyBag, Subscription, TelemetryTopic, TopicFilter, TopicName, Username,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = TelemetryTopic::parse(s) {
        assert_eq!(PropertyBag::parse(&t.properties.encode()), Ok(t.properties));
    }
    if let Ok(u) = Username::parse(s) {
        assert!(!u.host.is_empty() && !u.client_id.is_empty());
    }
    let _ = ClientId::parse(s);
    let _ = TopicName::new(s);
    if let Ok(f) = TopicFilter::new(s) {
        let _ = Subscription::parse(&f);
    }
});
