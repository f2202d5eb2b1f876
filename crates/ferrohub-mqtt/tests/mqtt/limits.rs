//! Robustness: `decode` never panics, never grows the buffer, and never waits for more than
//! header + limit bytes.

use bytes::BytesMut;
use ferrohub_mqtt::codec::{decode, encode};
use proptest::prelude::*;

use super::strategies::{mutate, mutations, packet};

/// Decodes `bytes` until it needs more input or fails, checking the memory bounds on the way.
fn decode_stream(bytes: &[u8], limit: usize) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::from(bytes);
    let capacity = buf.capacity();
    loop {
        let before = buf.len();
        let result = decode(&mut buf, limit);
        prop_assert!(buf.capacity() <= capacity, "decode grew the buffer");
        match result {
            Ok(Some(_)) => prop_assert!(before - buf.len() <= 5 + limit),
            // Waiting for more is only allowed while the packet can still fit the limit.
            Ok(None) => {
                prop_assert!(buf.len() < 5 + limit);
                return Ok(());
            }
            Err(_) => return Ok(()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300), limit in 0usize..200) {
        decode_stream(&bytes, limit)?;
    }

    #[test]
    fn mutated_packets(p in packet(), edits in mutations(), limit in 0usize..400) {
        let mut bytes = BytesMut::new();
        encode(&p, &mut bytes).expect("generated packets encode");
        mutate(&mut bytes, &edits);
        decode_stream(&bytes, limit)?;
    }

    #[test]
    fn anything_decoded_reencodes_to_itself(p in packet(), edits in mutations()) {
        let mut bytes = BytesMut::new();
        encode(&p, &mut bytes).expect("generated packets encode");
        mutate(&mut bytes, &edits);
        if let Ok(Some(decoded)) = decode(&mut bytes, usize::MAX) {
            let mut again = BytesMut::new();
            encode(&decoded, &mut again).expect("a decoded packet encodes");
            prop_assert_eq!(decode(&mut again, usize::MAX), Ok(Some(decoded)));
        }
    }
}
