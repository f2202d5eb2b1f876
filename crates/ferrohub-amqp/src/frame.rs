//! Protocol headers and frames (AMQP 1.0 part 2 §2.2–§2.3, part 5 §5.3.1).
//!
//! A connection starts with an 8-byte protocol header from each side: `AMQP 3 1 0 0` for a
//! SASL layer, then `AMQP 0 1 0 0` for AMQP itself (amqp-contract §1.1: which one a client
//! sends first depends on the SDK). After the headers come frames: a 4-byte size, a data
//! offset, a type (0 AMQP, 1 SASL) and a channel, then the body. A frame with an empty body is
//! a heartbeat.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::condition;
use crate::types::Symbol;

/// The header that opens AMQP itself: `AMQP 0 1 0 0`.
pub const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// The header that opens a SASL layer: `AMQP 3 1 0 0`.
pub const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// The header that asks for an in-band TLS upgrade: `AMQP 2 1 0 0`. No Azure SDK sends it
/// (amqp-contract §1.1: TLS is implicit on 5671); the hub answers it like any unsupported
/// header.
pub const TLS_HEADER: [u8; 8] = *b"AMQP\x02\x01\x00\x00";

/// The size of a frame header, and of an empty (heartbeat) frame.
pub const FRAME_HEADER_SIZE: usize = 8;

/// The smallest max-frame-size a peer may announce, and the limit before OPEN is exchanged
/// (part 2 §2.7.1, MIN-MAX-FRAME-SIZE).
pub const MIN_MAX_FRAME_SIZE: u32 = 512;

/// A protocol header as read from the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolHeader {
    /// `AMQP 0 1 0 0`.
    Amqp,
    /// `AMQP 3 1 0 0`.
    Sasl,
    /// `AMQP` followed by anything else (a TLS upgrade, another version): the bytes after
    /// `AMQP`.
    Unsupported([u8; 4]),
}

impl ProtocolHeader {
    /// Reads a protocol header from the start of `buf` without consuming anything.
    ///
    /// `Ok(None)` while fewer than 8 bytes are in and they agree with `AMQP`. Fails with
    /// [`FrameError::NotAmqp`] as soon as a byte disagrees, so a TLS ClientHello or an HTTP
    /// request is recognised from its first byte.
    pub fn read(buf: &[u8]) -> Result<Option<Self>, FrameError> {
        let prefix = &buf[..buf.len().min(4)];
        if !b"AMQP".starts_with(prefix) {
            return Err(FrameError::NotAmqp);
        }
        let Some(header) = buf.get(..8) else {
            return Ok(None);
        };
        Ok(Some(if header == AMQP_HEADER {
            Self::Amqp
        } else if header == SASL_HEADER {
            Self::Sasl
        } else {
            let mut rest = [0; 4];
            rest.copy_from_slice(&header[4..8]);
            Self::Unsupported(rest)
        }))
    }
}

/// The type of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    /// Type 0: an AMQP performative (or a heartbeat).
    Amqp,
    /// Type 1: a SASL frame.
    Sasl,
}

/// One frame, its header checked and its extended header skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// AMQP or SASL.
    pub frame_type: FrameType,
    /// The channel (the peer's outgoing channel for an AMQP frame; ignored for SASL).
    pub channel: u16,
    /// The frame body: the performative and, for a TRANSFER, the payload. Empty for a
    /// heartbeat.
    pub body: Bytes,
}

/// Why bytes are not a frame. Every variant closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The stream does not start with `AMQP`: a TLS ClientHello (implicit TLS not terminated
    /// by the driver), HTTP, or garbage.
    #[error("not an AMQP protocol header")]
    NotAmqp,
    /// A frame declares more bytes than the negotiated max-frame-size. Checked from the frame
    /// header alone, before the body is buffered.
    #[error("frame of {size} bytes exceeds the max-frame-size {max}")]
    TooLarge {
        /// The declared frame size.
        size: u32,
        /// The limit.
        max: u32,
    },
    /// A frame declares fewer than 8 bytes, less than its own header.
    #[error("frame size {0} is smaller than a frame header")]
    TooSmall(u32),
    /// The data offset is below 2 (4-byte words), or points past the end of the frame.
    #[error("invalid data offset {0}")]
    InvalidDataOffset(u8),
    /// A frame type other than 0 (AMQP) and 1 (SASL).
    #[error("unknown frame type {0}")]
    UnknownType(u8),
}

impl FrameError {
    /// The condition to close the connection with: always `amqp:connection:framing-error`.
    pub fn condition(&self) -> Symbol {
        condition::FRAMING_ERROR
    }
}

impl Frame {
    /// Reads one frame from the front of `buf`, consuming it.
    ///
    /// `Ok(None)` while the header or the body is incomplete; `buf` is then unchanged. The
    /// declared size is checked against `max_frame_size` as soon as the 4 size bytes are in,
    /// so a peer cannot make the caller buffer more than the limit. The body is split off
    /// `buf` without copying.
    pub fn decode(buf: &mut BytesMut, max_frame_size: u32) -> Result<Option<Self>, FrameError> {
        let Some(size) = buf.get(..4) else {
            return Ok(None);
        };
        let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]);
        if size > max_frame_size {
            return Err(FrameError::TooLarge {
                size,
                max: max_frame_size,
            });
        }
        if (size as usize) < FRAME_HEADER_SIZE {
            return Err(FrameError::TooSmall(size));
        }
        let Some(&[doff, frame_type, ch0, ch1]) = buf.get(4..8) else {
            return Ok(None);
        };
        let body_offset = usize::from(doff) * 4;
        if doff < 2 || body_offset > size as usize {
            return Err(FrameError::InvalidDataOffset(doff));
        }
        let frame_type = match frame_type {
            0 => FrameType::Amqp,
            1 => FrameType::Sasl,
            other => return Err(FrameError::UnknownType(other)),
        };
        if buf.len() < size as usize {
            return Ok(None);
        }
        let mut body = buf.split_to(size as usize).freeze();
        body.advance(body_offset);
        Ok(Some(Self {
            frame_type,
            channel: u16::from_be_bytes([ch0, ch1]),
            body,
        }))
    }
}

/// Appends an empty AMQP frame on channel 0: the heartbeat that keeps a peer's idle timer from
/// expiring (part 2 §2.4.5).
pub fn encode_heartbeat(buf: &mut BytesMut) {
    buf.put_slice(&[0, 0, 0, 8, 2, 0, 0, 0]);
}

/// Writes a frame header with a size to be patched by [`finish_frame`]; returns where the
/// frame starts.
pub(crate) fn start_frame(buf: &mut BytesMut, frame_type: FrameType, channel: u16) -> usize {
    let start = buf.len();
    buf.put_u32(0);
    buf.put_u8(2);
    buf.put_u8(match frame_type {
        FrameType::Amqp => 0,
        FrameType::Sasl => 1,
    });
    buf.put_u16(channel);
    start
}

/// Patches the size of the frame that starts at `start` and ends at the end of `buf`. Returns
/// the frame's size; a frame larger than `u32::MAX` is removed and reported as `None`.
pub(crate) fn finish_frame(buf: &mut BytesMut, start: usize) -> Option<usize> {
    let len = buf.len() - start;
    match u32::try_from(len) {
        Ok(size) => {
            buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
            Some(len)
        }
        Err(_) => {
            buf.truncate(start);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_recognised_from_their_first_bytes() {
        assert_eq!(ProtocolHeader::read(b"AM"), Ok(None));
        assert_eq!(
            ProtocolHeader::read(&AMQP_HEADER),
            Ok(Some(ProtocolHeader::Amqp))
        );
        assert_eq!(
            ProtocolHeader::read(&SASL_HEADER),
            Ok(Some(ProtocolHeader::Sasl))
        );
        assert_eq!(
            ProtocolHeader::read(&TLS_HEADER),
            Ok(Some(ProtocolHeader::Unsupported([2, 1, 0, 0])))
        );
        // A TLS ClientHello, an HTTP request.
        assert_eq!(
            ProtocolHeader::read(&[0x16, 0x03]),
            Err(FrameError::NotAmqp)
        );
        assert_eq!(ProtocolHeader::read(b"GET /"), Err(FrameError::NotAmqp));
    }

    #[test]
    fn frame_size_is_checked_before_the_body_arrives() {
        let mut buf = BytesMut::from(&[0, 1, 0, 1, 2, 0, 0, 0][..]);
        assert_eq!(
            Frame::decode(&mut buf, 65536),
            Err(FrameError::TooLarge {
                size: 65537,
                max: 65536
            })
        );
        let mut buf = BytesMut::from(&[0, 0, 0, 7][..]);
        assert_eq!(Frame::decode(&mut buf, 512), Err(FrameError::TooSmall(7)));
    }

    #[test]
    fn extended_headers_are_skipped_and_partial_frames_wait() {
        let bytes = [0, 0, 0, 14, 3, 1, 0, 5, 0xee, 0xee, 0xee, 0xee, 0xaa, 0xbb];
        let mut buf = BytesMut::from(&bytes[..13]);
        assert_eq!(Frame::decode(&mut buf, 512), Ok(None));
        assert_eq!(buf.len(), 13);
        buf.extend_from_slice(&bytes[13..]);
        buf.extend_from_slice(&[0, 0]);
        let frame = Frame::decode(&mut buf, 512)
            .expect("valid")
            .expect("complete");
        assert_eq!(frame.frame_type, FrameType::Sasl);
        assert_eq!(frame.channel, 5);
        assert_eq!(&frame.body[..], [0xaa, 0xbb]);
        assert_eq!(&buf[..], [0, 0]);
    }

    #[test]
    fn bad_offsets_and_types_are_framing_errors() {
        let mut buf = BytesMut::from(&[0, 0, 0, 8, 1, 0, 0, 0][..]);
        assert_eq!(
            Frame::decode(&mut buf, 512),
            Err(FrameError::InvalidDataOffset(1))
        );
        let mut buf = BytesMut::from(&[0, 0, 0, 8, 3, 0, 0, 0][..]);
        assert_eq!(
            Frame::decode(&mut buf, 512),
            Err(FrameError::InvalidDataOffset(3))
        );
        let mut buf = BytesMut::from(&[0, 0, 0, 8, 2, 7, 0, 0][..]);
        assert_eq!(
            Frame::decode(&mut buf, 512),
            Err(FrameError::UnknownType(7))
        );
    }

    #[test]
    fn heartbeat_is_an_empty_amqp_frame() {
        let mut buf = BytesMut::new();
        encode_heartbeat(&mut buf);
        let frame = Frame::decode(&mut buf, 512)
            .expect("valid")
            .expect("complete");
        assert_eq!(frame.frame_type, FrameType::Amqp);
        assert!(frame.body.is_empty());
    }
}
