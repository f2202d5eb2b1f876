//! Decodes arbitrary bytes as a stream of MQTT packets under a size limit. Every packet that
//! decodes must encode, and decode again to the same packet.
#![no_main]

use bytes::BytesMut;
use ferrohub_mqtt::codec::{decode, encode};

const LIMIT: usize = 64 * 1024;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(packet)) = decode(&mut buf, LIMIT) {
        let mut encoded = BytesMut::new();
        encode(&packet, &mut encoded).expect("a decoded packet encodes");
        let again = decode(&mut encoded, LIMIT).expect("a re-encoded packet decodes");
        assert_eq!(again, Some(packet));
        assert!(encoded.is_empty());
    }
});
