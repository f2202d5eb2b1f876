//! How an event is stored in a JetStream message (format 1).
//!
//! * Header `Ferrohub-Event: 1`: the format version. A reader refuses other versions rather
//!   than misread them.
//! * Header `Ferrohub-Enqueued: <ms>`: [`RecordIn::enqueued_ms`] in decimal. In a header, not
//!   the payload, so that headers-only deliveries (the tail that feeds `info` and `watch`) see
//!   it without the body.
//! * Header `Nats-Msg-Id`: the append's id for the record, for JetStream's duplicate window
//!   (set by the publisher, not part of the format).
//! * Payload: the system properties, then the application properties, then the body:
//!
//! ```text
//! u32 LE count, then per property: u32 LE name length, name (UTF-8), u32 LE value length, value
//! u32 LE count, then the application properties the same way
//! the body: every remaining byte
//! ```
//!
//! Properties are in the payload rather than in headers because header names may not hold
//! every character a property name may, and because the order and repetition of properties
//! must survive.

use bytes::{BufMut, Bytes, BytesMut};
use ferrohub_log::RecordIn;

/// The format version header.
pub(crate) const FORMAT_HEADER: &str = "Ferrohub-Event";
/// The format this build writes and reads.
pub(crate) const FORMAT: &str = "1";
/// The enqueued-time header.
pub(crate) const ENQUEUED_HEADER: &str = "Ferrohub-Enqueued";

/// The payload of `record`.
pub(crate) fn encode_payload(record: &RecordIn) -> Bytes {
    let props = |list: &mut dyn Iterator<Item = (&str, &str)>| -> usize {
        list.map(|(k, v)| 8 + k.len() + v.len()).sum()
    };
    let size =
        8 + props(
            &mut record
                .system_properties
                .iter()
                .map(|(k, v)| (k.as_ref(), v.as_ref())),
        ) + props(
            &mut record
                .application_properties
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        ) + record.body.len();
    let mut buf = BytesMut::with_capacity(size);
    put_list(
        &mut buf,
        record
            .system_properties
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_ref())),
        record.system_properties.len(),
    );
    put_list(
        &mut buf,
        record
            .application_properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
        record.application_properties.len(),
    );
    buf.put_slice(&record.body);
    buf.freeze()
}

fn put_list<'a>(buf: &mut BytesMut, list: impl Iterator<Item = (&'a str, &'a str)>, n: usize) {
    buf.put_u32_le(u32::try_from(n).unwrap_or(u32::MAX));
    for (k, v) in list {
        buf.put_u32_le(u32::try_from(k.len()).unwrap_or(u32::MAX));
        buf.put_slice(k.as_bytes());
        buf.put_u32_le(u32::try_from(v.len()).unwrap_or(u32::MAX));
        buf.put_slice(v.as_bytes());
    }
}

/// A decoded payload: system properties, application properties, body.
pub(crate) type Decoded = (Vec<(String, String)>, Vec<(String, String)>, Vec<u8>);

/// Decodes a payload written by [`encode_payload`]; `Err` names what is wrong.
pub(crate) fn decode_payload(payload: &[u8]) -> Result<Decoded, String> {
    let mut rest = payload;
    let system = take_list(&mut rest)?;
    let application = take_list(&mut rest)?;
    Ok((system, application, rest.to_vec()))
}

fn take_u32(rest: &mut &[u8]) -> Result<usize, String> {
    let (head, tail) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| "payload ends inside a length".to_owned())?;
    *rest = tail;
    usize::try_from(u32::from_le_bytes(*head)).map_err(|e| e.to_string())
}

fn take_str(rest: &mut &[u8]) -> Result<String, String> {
    let len = take_u32(rest)?;
    if len > rest.len() {
        return Err(format!("a property of {len} bytes runs past the payload"));
    }
    let (s, tail) = rest.split_at(len);
    *rest = tail;
    String::from_utf8(s.to_vec()).map_err(|_| "a property is not UTF-8".to_owned())
}

fn take_list(rest: &mut &[u8]) -> Result<Vec<(String, String)>, String> {
    let n = take_u32(rest)?;
    // Each property takes at least 8 bytes: a count beyond that is damage, not a reason to
    // reserve memory.
    if n > rest.len() / 8 {
        return Err(format!("{n} properties cannot fit in the payload"));
    }
    let mut list = Vec::with_capacity(n);
    for _ in 0..n {
        let k = take_str(rest)?;
        let v = take_str(rest)?;
        list.push((k, v));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    #[test]
    fn payload_round_trips() {
        let record = RecordIn {
            enqueued_ms: 5,
            system_properties: vec![
                (Cow::Borrowed("message-id"), Cow::Owned("m1".into())),
                (Cow::Borrowed(""), Cow::Borrowed("")),
            ],
            application_properties: vec![
                ("k".into(), "v".into()),
                ("k".into(), "again ✓".into()),
                ("with: colon\r\n".into(), String::new()),
            ],
            body: vec![0, 255, 1],
        };
        let payload = encode_payload(&record);
        let (system, application, body) = decode_payload(&payload).expect("decode");
        assert_eq!(
            system,
            vec![
                ("message-id".to_owned(), "m1".to_owned()),
                (String::new(), String::new())
            ]
        );
        assert_eq!(application, record.application_properties);
        assert_eq!(body, record.body);
        let empty = encode_payload(&RecordIn::default());
        assert_eq!(&empty[..], &[0u8; 8]);
        assert_eq!(
            decode_payload(&empty).expect("decode"),
            (vec![], vec![], vec![])
        );
    }

    #[test]
    fn damage_is_reported_not_trusted() {
        assert!(decode_payload(&[1, 0]).is_err());
        assert!(decode_payload(&[255, 255, 255, 255, 0, 0, 0, 0]).is_err());
        // One property whose name claims more bytes than remain.
        let mut bad = vec![1, 0, 0, 0, 100, 0, 0, 0];
        bad.extend_from_slice(b"abcdefgh");
        assert!(decode_payload(&bad).is_err());
        // Invalid UTF-8 in a name.
        let mut bad = vec![1, 0, 0, 0, 1, 0, 0, 0, 0xff, 0, 0, 0, 0];
        bad.extend_from_slice(&[0, 0, 0, 0]);
        assert!(decode_payload(&bad).is_err());
    }
}
