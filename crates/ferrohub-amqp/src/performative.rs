//! Performatives and SASL frames: the frame bodies of AMQP 1.0 (part 2 §2.7, part 5 §5.3).
//!
//! Decoding is lenient where the specification allows it and the SDKs rely on it: trailing
//! fields may be missing, a list may be `list0`, a null is the field's default, descriptors
//! may be codes or symbolic names, and integer fields accept any integer type whose value
//! fits. Encoding is strict in the one way the SDKs need (amqp-contract §1.2): every
//! performative goes out **full width**, all its fields present (nulls as `0x40`), as a
//! `list8` or `list32` after a small-ulong descriptor, never `list0`. pyamqp indexes the
//! fields by position and misreads anything shorter.

mod common;
mod definitions;
pub(crate) mod fields;
mod sasl;
mod terminus;

use bytes::{Bytes, BytesMut};

use crate::frame::{self, FrameType};
use crate::types::{DecodeError, Decoder, EncodeError};

pub use common::{AmqpError, DeliveryState, Fields, ReceiverSettleMode, Role, SenderSettleMode};
pub use definitions::{Attach, Begin, Close, Detach, Disposition, End, Flow, Open, Transfer};
pub use sasl::{
    SaslChallenge, SaslCode, SaslFrame, SaslInit, SaslMechanisms, SaslOutcome, SaslResponse,
};
pub use terminus::{Source, Target};

use fields::{FieldReader, described_list};

/// The body of an AMQP frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Performative {
    /// OPEN.
    Open(Open),
    /// BEGIN.
    Begin(Begin),
    /// ATTACH (boxed: by far the largest).
    Attach(Box<Attach>),
    /// FLOW.
    Flow(Flow),
    /// TRANSFER.
    Transfer(Transfer),
    /// DISPOSITION.
    Disposition(Disposition),
    /// DETACH.
    Detach(Detach),
    /// END.
    End(End),
    /// CLOSE.
    Close(Close),
}

impl Performative {
    /// The performative's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Open(_) => "open",
            Self::Begin(_) => "begin",
            Self::Attach(_) => "attach",
            Self::Flow(_) => "flow",
            Self::Transfer(_) => "transfer",
            Self::Disposition(_) => "disposition",
            Self::Detach(_) => "detach",
            Self::End(_) => "end",
            Self::Close(_) => "close",
        }
    }

    /// Decodes the body of a non-empty AMQP frame: the performative, then whatever follows it
    /// (a TRANSFER's payload, returned without copying; must be empty for the others, but that
    /// is for the caller to judge).
    pub fn decode(mut body: Bytes) -> Result<(Self, Bytes), DecodeError> {
        let value = Decoder::new().value(&mut body, 0)?;
        let (code, fields) = described_list(value, "performative")?;
        let name = match code {
            0x10 => "open",
            0x11 => "begin",
            0x12 => "attach",
            0x13 => "flow",
            0x14 => "transfer",
            0x15 => "disposition",
            0x16 => "detach",
            0x17 => "end",
            0x18 => "close",
            other => {
                return Err(DecodeError::UnexpectedDescriptor {
                    expected: "performative",
                    found: format!("{other:#x}"),
                });
            }
        };
        let r = FieldReader::new(name, fields);
        let performative = match code {
            0x10 => Self::Open(Open::decode(r)?),
            0x11 => Self::Begin(Begin::decode(r)?),
            0x12 => Self::Attach(Box::new(Attach::decode(r)?)),
            0x13 => Self::Flow(Flow::decode(r)?),
            0x14 => Self::Transfer(Transfer::decode(r)?),
            0x15 => Self::Disposition(Disposition::decode(r)?),
            0x16 => Self::Detach(Detach::decode(r)?),
            0x17 => Self::End(End::decode(r)?),
            _ => Self::Close(Close::decode(r)?),
        };
        Ok((performative, body))
    }

    /// Appends the performative (descriptor and full-width field list), without a frame
    /// header. On error `buf` is unchanged.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        fields::atomically(buf, |buf| match self {
            Self::Open(p) => p.encode_fields(buf),
            Self::Begin(p) => p.encode_fields(buf),
            Self::Attach(p) => p.encode_fields(buf),
            Self::Flow(p) => p.encode_fields(buf),
            Self::Transfer(p) => p.encode_fields(buf),
            Self::Disposition(p) => p.encode_fields(buf),
            Self::Detach(p) => p.encode_fields(buf),
            Self::End(p) => p.encode_fields(buf),
            Self::Close(p) => p.encode_fields(buf),
        })
    }

    /// Appends a whole AMQP frame on `channel`: header, performative, then `payload` (empty
    /// except for a TRANSFER). Returns the frame's size. On error `buf` is unchanged.
    pub fn encode_frame(
        &self,
        channel: u16,
        payload: &[u8],
        buf: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        let start = frame::start_frame(buf, FrameType::Amqp, channel);
        if let Err(e) = self.encode(buf) {
            buf.truncate(start);
            return Err(e);
        }
        buf.extend_from_slice(payload);
        frame::finish_frame(buf, start).ok_or(EncodeError::TooLarge(buf.len() - start))
    }
}

impl SaslFrame {
    /// Decodes the body of a SASL frame. Bytes after the SASL performative are an error.
    pub fn decode(mut body: Bytes) -> Result<Self, DecodeError> {
        let value = Decoder::new().value(&mut body, 0)?;
        if !body.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        let (code, fields) = described_list(value, "sasl frame")?;
        let name = match code {
            0x40 => "sasl-mechanisms",
            0x41 => "sasl-init",
            0x42 => "sasl-challenge",
            0x43 => "sasl-response",
            0x44 => "sasl-outcome",
            other => {
                return Err(DecodeError::UnexpectedDescriptor {
                    expected: "sasl frame",
                    found: format!("{other:#x}"),
                });
            }
        };
        Self::decode_fields(code, FieldReader::new(name, fields))
    }

    /// Appends the SASL frame body, full width. On error `buf` is unchanged.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        fields::atomically(buf, |buf| self.encode_fields(buf))
    }

    /// Appends a whole SASL frame (header and body). Returns the frame's size.
    pub fn encode_frame(&self, buf: &mut BytesMut) -> Result<usize, EncodeError> {
        let start = frame::start_frame(buf, FrameType::Sasl, 0);
        if let Err(e) = self.encode(buf) {
            buf.truncate(start);
            return Err(e);
        }
        frame::finish_frame(buf, start).ok_or(EncodeError::TooLarge(buf.len() - start))
    }
}
