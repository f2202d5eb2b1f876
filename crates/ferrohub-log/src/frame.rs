//! The on-disk record frame.
//!
//! ```text
//! [u32 len][u32 crc][u64 seq][i64 enqueued_ms]
//! [u32 n_sys]{[u32 klen][key][u32 vlen][value]}*n_sys
//! [u32 n_app]{[u32 klen][key][u32 vlen][value]}*n_app
//! [body: the rest]
//! ```
//!
//! All integers little-endian. `len` counts the bytes after the 8-byte header (from `seq` to the
//! end of the body). `crc` is CRC32C over the 4 `len` bytes followed by those `len` bytes, so a
//! damaged length is caught too. Keys and values are UTF-8.
//!
//! Reading is two steps over a buffer, check then parse: [`frame_len`] looks only at the header
//! and bounds the length *before* anything is allocated (`Ok(None)`: need more bytes), then
//! [`verify`] checks the CRC and the structure, and [`decode`] copies the fields out.

use crate::error::TailDamage;
use crate::record::{Record, RecordIn};

/// `len` + `crc`.
pub(crate) const HEADER_BYTES: usize = 8;
/// `seq`, `enqueued_ms`, `n_sys`, `n_app`: the smallest possible `len`.
const FIXED_BYTES: usize = 8 + 8 + 4 + 4;
/// The smallest frame: no properties, empty body.
pub(crate) const MIN_FRAME_BYTES: usize = HEADER_BYTES + FIXED_BYTES;

/// What [`verify`] learns about a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameMeta {
    pub(crate) seq: u64,
    pub(crate) enqueued_ms: i64,
}

/// The framed size of `record`. Saturates instead of overflowing, so a huge record is simply
/// too large.
pub(crate) fn framed_len(record: &RecordIn) -> usize {
    fn props<K: AsRef<str>, V: AsRef<str>>(list: &[(K, V)]) -> usize {
        list.iter().fold(0usize, |acc, (k, v)| {
            acc.saturating_add(8)
                .saturating_add(k.as_ref().len())
                .saturating_add(v.as_ref().len())
        })
    }
    MIN_FRAME_BYTES
        .saturating_add(props(&record.system_properties))
        .saturating_add(props(&record.application_properties))
        .saturating_add(record.body.len())
}

/// Appends a property list: its length, then each name and value with their lengths.
fn put_props<K: AsRef<str>, V: AsRef<str>>(buf: &mut Vec<u8>, list: &[(K, V)]) {
    put_u32(buf, list.len());
    for (k, v) in list {
        let (k, v) = (k.as_ref(), v.as_ref());
        put_u32(buf, k.len());
        buf.extend_from_slice(k.as_bytes());
        put_u32(buf, v.len());
        buf.extend_from_slice(v.as_bytes());
    }
}

/// Append the frame of `record` with sequence number `seq` to `buf`.
///
/// The caller has checked `framed_len(record)` against the record limit, which is far below
/// `u32::MAX`, so every length fits its `u32` field.
pub(crate) fn encode(buf: &mut Vec<u8>, seq: u64, record: &RecordIn) {
    let start = buf.len();
    let total = framed_len(record);
    buf.reserve(total);
    buf.extend_from_slice(&[0u8; HEADER_BYTES]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&record.enqueued_ms.to_le_bytes());
    put_props(buf, &record.system_properties);
    put_props(buf, &record.application_properties);
    buf.extend_from_slice(&record.body);
    let rest_len = buf.len() - start - HEADER_BYTES;
    let len_bytes = u32::try_from(rest_len).unwrap_or(u32::MAX).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), &buf[start + HEADER_BYTES..]);
    buf[start..start + 4].copy_from_slice(&len_bytes);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Step one: the total length of the frame starting at `buf[0]`, from its header alone.
/// `Ok(None)` if `buf` is shorter than the header. A length outside
/// `MIN_FRAME_BYTES..=max_frame` is damage.
pub(crate) fn frame_len(buf: &[u8], max_frame: usize) -> Result<Option<usize>, TailDamage> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let rest = le_u32(header) as usize;
    let total = rest.saturating_add(HEADER_BYTES);
    if total < MIN_FRAME_BYTES || total > max_frame {
        return Err(TailDamage::BadLength);
    }
    Ok(Some(total))
}

/// Step two: check the CRC and the structure of the complete frame `frame` (exactly the
/// length [`frame_len`] gave).
pub(crate) fn verify(frame: &[u8]) -> Result<FrameMeta, TailDamage> {
    if frame.len() < MIN_FRAME_BYTES {
        return Err(TailDamage::BadLength);
    }
    let stored = le_u32(&frame[4..8]);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&frame[..4]), &frame[HEADER_BYTES..]);
    if crc != stored {
        return Err(TailDamage::ChecksumMismatch);
    }
    let mut cur = Cursor::new(&frame[HEADER_BYTES..]);
    let seq = cur.u64().ok_or(TailDamage::Malformed)?;
    let enqueued_ms = cur.u64().ok_or(TailDamage::Malformed)? as i64;
    for _ in 0..2 {
        let n = cur.u32().ok_or(TailDamage::Malformed)?;
        for _ in 0..n {
            for _ in 0..2 {
                let s = cur.bytes_u32().ok_or(TailDamage::Malformed)?;
                std::str::from_utf8(s).map_err(|_| TailDamage::Malformed)?;
            }
        }
    }
    Ok(FrameMeta { seq, enqueued_ms })
}

/// Copy a frame that passed [`verify`] into a [`Record`] at `offset`.
pub(crate) fn decode(frame: &[u8], offset: u64) -> Result<Record, TailDamage> {
    let mut cur = Cursor::new(frame.get(HEADER_BYTES..).ok_or(TailDamage::BadLength)?);
    let sequence_number = cur.u64().ok_or(TailDamage::Malformed)?;
    let enqueued_ms = cur.u64().ok_or(TailDamage::Malformed)? as i64;
    let system_properties = cur.props()?;
    let application_properties = cur.props()?;
    Ok(Record {
        sequence_number,
        offset,
        enqueued_ms,
        system_properties,
        application_properties,
        body: cur.rest().to_vec(),
    })
}

fn put_u32(buf: &mut Vec<u8>, n: usize) {
    buf.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// Bounds-checked reads over a frame; every method returns `None` when the bytes run out.
struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { buf }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(le_u32)
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }

    fn bytes_u32(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, TailDamage> {
        let b = self.bytes_u32().ok_or(TailDamage::Malformed)?;
        String::from_utf8(b.to_vec()).map_err(|_| TailDamage::Malformed)
    }

    fn props(&mut self) -> Result<Vec<(String, String)>, TailDamage> {
        let n = self.u32().ok_or(TailDamage::Malformed)? as usize;
        // Each pair takes at least 8 bytes, so the remaining bytes bound the allocation.
        let mut out = Vec::with_capacity(n.min(self.buf.len() / 8));
        for _ in 0..n {
            let k = self.string()?;
            let v = self.string()?;
            out.push((k, v));
        }
        Ok(out)
    }

    fn rest(&self) -> &'a [u8] {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RecordIn {
        RecordIn {
            enqueued_ms: 1_603_288_810_715,
            system_properties: vec![("message-id".into(), "m1".into())],
            application_properties: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
            body: b"{\"t\":21.5}".to_vec(),
        }
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode(&mut buf, 42, &sample());
        assert_eq!(buf.len(), framed_len(&sample()));
        assert_eq!(frame_len(&buf, 1 << 20), Ok(Some(buf.len())));
        let meta = verify(&buf).expect("valid frame");
        assert_eq!(meta.seq, 42);
        let rec = decode(&buf, 7).expect("decodes");
        assert_eq!(rec.sequence_number, 42);
        assert_eq!(rec.offset, 7);
        assert_eq!(rec.application_properties, sample().application_properties);
        assert_eq!(rec.body, sample().body);
    }

    #[test]
    fn header_checks_come_first() {
        assert_eq!(frame_len(&[1, 2, 3], 100), Ok(None));
        assert_eq!(frame_len(&[0; 8], 100), Err(TailDamage::BadLength));
        assert_eq!(
            frame_len(&u32::MAX.to_le_bytes(), 1 << 20),
            Err(TailDamage::BadLength)
        );
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, &sample());
        for i in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[i / 8] ^= 1 << (i % 8);
            let ok = match frame_len(&b, 1 << 20) {
                Ok(Some(n)) if n == b.len() => verify(&b).is_ok(),
                _ => false,
            };
            assert!(!ok, "bit {i} flip not detected");
        }
    }
}
