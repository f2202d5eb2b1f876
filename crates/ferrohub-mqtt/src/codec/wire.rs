//! Wire primitives: the fixed header, and length-prefixed fields read from a frame or written to
//! a buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::codec::{DecodeError, EncodeError, PacketType, QoS};

/// The largest remaining length four variable-length bytes can express.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// A validated fixed header whose whole frame is in the buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FixedHeader {
    pub(crate) packet_type: PacketType,
    /// The low nibble of the first byte.
    pub(crate) flags: u8,
    /// 1 + the number of remaining-length bytes.
    pub(crate) header_len: usize,
    pub(crate) remaining_len: usize,
}

impl FixedHeader {
    /// Reads the fixed header at the start of `buf` without consuming anything.
    ///
    /// `Ok(None)` means the header or the body is not complete yet. The limit is checked as soon
    /// as the remaining length is known, so an oversized packet fails before it is buffered.
    pub(crate) fn check(buf: &[u8], max_remaining_len: usize) -> Result<Option<Self>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let packet_type = PacketType::from_nibble(first >> 4)
            .ok_or(DecodeError::InvalidPacketType(first >> 4))?;
        let flags = first & 0x0F;
        check_flags(packet_type, flags)?;

        let mut remaining_len = 0usize;
        let mut header_len = 1;
        loop {
            let Some(&byte) = buf.get(header_len) else {
                return Ok(None);
            };
            remaining_len |= usize::from(byte & 0x7F) << (7 * (header_len - 1));
            header_len += 1;
            if byte & 0x80 == 0 {
                break;
            }
            if header_len == 5 {
                return Err(DecodeError::MalformedRemainingLength);
            }
        }
        if remaining_len > max_remaining_len {
            return Err(DecodeError::PacketTooLarge {
                size: remaining_len,
                max: max_remaining_len,
            });
        }
        if buf.len() - header_len < remaining_len {
            return Ok(None);
        }
        Ok(Some(Self {
            packet_type,
            flags,
            header_len,
            remaining_len,
        }))
    }

    pub(crate) fn frame_len(&self) -> usize {
        self.header_len + self.remaining_len
    }
}

/// The first-byte flag rules of MQTT 3.1.1 §2.2.2.
fn check_flags(packet_type: PacketType, flags: u8) -> Result<(), DecodeError> {
    let ok = match packet_type {
        PacketType::Publish => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(DecodeError::InvalidQoS(qos));
            }
            if qos == 0 && flags & 0b1000 != 0 {
                return Err(DecodeError::DupOnQoS0);
            }
            true
        }
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => flags == 0b0010,
        _ => flags == 0,
    };
    if ok {
        Ok(())
    } else {
        Err(DecodeError::InvalidHeaderFlags { packet_type, flags })
    }
}

/// Reads the fields of one frame body; every read is bounds-checked against the remaining length.
pub(crate) struct Reader {
    body: Bytes,
    packet_type: PacketType,
}

impl Reader {
    pub(crate) fn new(body: Bytes, packet_type: PacketType) -> Self {
        Self { body, packet_type }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.body.is_empty() {
            return Err(DecodeError::UnexpectedEnd(self.packet_type));
        }
        Ok(self.body.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.body.len() < 2 {
            return Err(DecodeError::UnexpectedEnd(self.packet_type));
        }
        Ok(self.body.get_u16())
    }

    /// A packet identifier, which must not be 0.
    pub(crate) fn pkid(&mut self) -> Result<u16, DecodeError> {
        match self.u16()? {
            0 => Err(DecodeError::PacketIdZero(self.packet_type)),
            id => Ok(id),
        }
    }

    /// Length-prefixed binary data, shared with the frame (no copy).
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16()?);
        if self.body.len() < len {
            return Err(DecodeError::UnexpectedEnd(self.packet_type));
        }
        Ok(self.body.split_to(len))
    }

    /// A length-prefixed UTF-8 string without U+0000.
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        let raw = self.binary()?;
        let s = std::str::from_utf8(&raw).map_err(|_| DecodeError::InvalidUtf8)?;
        if s.contains('\0') {
            return Err(DecodeError::NullCharacter);
        }
        Ok(s.to_owned())
    }

    /// Everything left in the frame (no copy).
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }

    /// Fails if bytes are left over.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.packet_type))
        }
    }
}

/// Writes the first byte and the remaining length, reserving room for the whole packet.
pub(crate) fn put_header(buf: &mut BytesMut, first: u8, remaining_len: usize) {
    buf.reserve(1 + remaining_length_len(remaining_len) + remaining_len);
    buf.put_u8(first);
    let mut x = remaining_len;
    loop {
        // Masked to 7 bits, so the cast cannot truncate.
        let mut byte = (x & 0x7F) as u8;
        x >>= 7;
        if x > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if x == 0 {
            break;
        }
    }
}

fn remaining_length_len(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Fails if a packet body is too large for the remaining-length encoding.
pub(crate) fn check_remaining_len(len: usize) -> Result<usize, EncodeError> {
    if len > MAX_REMAINING_LENGTH {
        Err(EncodeError::PacketTooLarge(len))
    } else {
        Ok(len)
    }
}

/// Encoded size of a length-prefixed binary field, or why it cannot be encoded.
pub(crate) fn binary_len(field: &'static str, data: &[u8]) -> Result<usize, EncodeError> {
    if data.len() > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong {
            field,
            len: data.len(),
        });
    }
    Ok(2 + data.len())
}

/// Encoded size of a length-prefixed string field, or why it cannot be encoded.
pub(crate) fn string_len(field: &'static str, s: &str) -> Result<usize, EncodeError> {
    if s.contains('\0') {
        return Err(EncodeError::NullCharacter(field));
    }
    binary_len(field, s.as_bytes())
}

/// Writes a length-prefixed field whose length was checked by [`binary_len`].
pub(crate) fn put_binary(buf: &mut BytesMut, data: &[u8]) {
    // Checked by `binary_len` before anything was written.
    buf.put_u16(u16::try_from(data.len()).unwrap_or(u16::MAX));
    buf.put_slice(data);
}

pub(crate) fn qos_from_bits(bits: u8) -> Result<QoS, DecodeError> {
    QoS::from_u8(bits).ok_or(DecodeError::InvalidQoS(bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_length_boundaries() {
        for (len, bytes) in [
            (0usize, &[0x00][..]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (MAX_REMAINING_LENGTH, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut buf = BytesMut::new();
            put_header(&mut buf, 0xC0, len);
            assert_eq!(&buf[1..], bytes, "{len}");
            assert_eq!(remaining_length_len(len), bytes.len());
            let mut frame = buf.to_vec();
            frame.resize(frame.len() + len.min(200), 0);
            let header = FixedHeader::check(&frame, usize::MAX);
            if len <= 200 {
                let header = header
                    .ok()
                    .flatten()
                    .map(|h| (h.header_len, h.remaining_len));
                assert_eq!(header, Some((1 + bytes.len(), len)));
            } else {
                assert!(matches!(header, Ok(None)));
            }
        }
    }

    #[test]
    fn five_byte_remaining_length_is_malformed() {
        let frame = [0xC0, 0x80, 0x80, 0x80, 0x80, 0x01];
        assert_eq!(
            FixedHeader::check(&frame, usize::MAX).map(|h| h.map(|h| h.remaining_len)),
            Err(DecodeError::MalformedRemainingLength)
        );
    }
}
