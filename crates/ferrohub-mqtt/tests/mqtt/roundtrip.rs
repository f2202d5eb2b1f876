//! Property tests: whatever `encode` accepts, `decode` reads back unchanged, however the bytes
//! arrive.

use bytes::BytesMut;
use ferrohub_mqtt::codec::{decode, encode};
use proptest::prelude::*;

use super::strategies::packet;

const LIMIT: usize = 1 << 20;

proptest! {
    #[test]
    fn encode_then_decode_is_identity(p in packet()) {
        let mut buf = BytesMut::new();
        encode(&p, &mut buf).expect("generated packets encode");
        prop_assert_eq!(decode(&mut buf, LIMIT), Ok(Some(p)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn split_delivery_decodes_the_same(p in packet(), cut in any::<prop::sample::Index>()) {
        let mut encoded = BytesMut::new();
        encode(&p, &mut encoded).expect("generated packets encode");
        let cut = cut.index(encoded.len());
        let mut buf = BytesMut::from(&encoded[..cut]);
        prop_assert_eq!(decode(&mut buf, LIMIT), Ok(None));
        prop_assert_eq!(buf.len(), cut);
        buf.extend_from_slice(&encoded[cut..]);
        prop_assert_eq!(decode(&mut buf, LIMIT), Ok(Some(p)));
    }

    #[test]
    fn a_stream_of_packets_decodes_in_order(ps in prop::collection::vec(packet(), 1..6)) {
        let mut buf = BytesMut::new();
        for p in &ps {
            encode(p, &mut buf).expect("generated packets encode");
        }
        for p in ps {
            prop_assert_eq!(decode(&mut buf, LIMIT), Ok(Some(p)));
        }
        prop_assert_eq!(decode(&mut buf, LIMIT), Ok(None));
    }
}
