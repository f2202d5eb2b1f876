//! The SASL frames (part 5 §5.3.3).

use bytes::{Bytes, BytesMut};

use crate::performative::fields::{FieldReader, put};
use crate::types::{DecodeError, EncodeError, Symbol, encode};

/// sasl-mechanisms (0x40): the mechanisms the server offers, in its order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslMechanisms {
    /// The mechanisms; Azure offers `MSSBCBS, PLAIN, ANONYMOUS, EXTERNAL`
    /// (amqp-contract §1.1).
    pub mechanisms: Vec<Symbol>,
}

/// sasl-init (0x41): the client's choice of mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslInit {
    /// The chosen mechanism.
    pub mechanism: Symbol,
    /// The mechanism's first message: PLAIN's `\0user\0password`, ANONYMOUS' trace text (the
    /// JS SDK sends `\0{keyName}`).
    pub initial_response: Option<Bytes>,
    /// The host the client dialled.
    pub hostname: Option<String>,
}

/// sasl-challenge (0x42): a server challenge. The hub's mechanisms never send one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslChallenge {
    /// The challenge.
    pub challenge: Bytes,
}

/// sasl-response (0x43): a client's answer to a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslResponse {
    /// The response.
    pub response: Bytes,
}

/// The result of a SASL exchange (part 5 §5.3.3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaslCode {
    /// 0: authenticated.
    Ok,
    /// 1: bad credentials.
    Auth,
    /// 2: a system error.
    Sys,
    /// 3: a system error that will not go away.
    SysPerm,
    /// 4: a system error that may go away.
    SysTemp,
}

impl SaslCode {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Ok,
            1 => Self::Auth,
            2 => Self::Sys,
            3 => Self::SysPerm,
            4 => Self::SysTemp,
            _ => return None,
        })
    }

    fn as_u8(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Auth => 1,
            Self::Sys => 2,
            Self::SysPerm => 3,
            Self::SysTemp => 4,
        }
    }
}

/// sasl-outcome (0x44): the end of the SASL exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslOutcome {
    /// The result.
    pub code: SaslCode,
    /// Extra data for the client (Azure sends `Welcome!` on success, amqp-contract §1.1).
    pub additional_data: Option<Bytes>,
}

impl SaslOutcome {
    /// Success.
    pub fn ok() -> Self {
        Self {
            code: SaslCode::Ok,
            additional_data: None,
        }
    }

    /// Bad credentials.
    pub fn auth_failed() -> Self {
        Self {
            code: SaslCode::Auth,
            additional_data: None,
        }
    }
}

/// A SASL frame body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslFrame {
    /// sasl-mechanisms.
    Mechanisms(SaslMechanisms),
    /// sasl-init.
    Init(SaslInit),
    /// sasl-challenge.
    Challenge(SaslChallenge),
    /// sasl-response.
    Response(SaslResponse),
    /// sasl-outcome.
    Outcome(SaslOutcome),
}

impl SaslFrame {
    pub(crate) fn decode_fields(code: u64, mut r: FieldReader) -> Result<Self, DecodeError> {
        Ok(match code {
            0x40 => {
                let mechanisms = r.symbols("sasl-server-mechanisms")?;
                Self::Mechanisms(SaslMechanisms {
                    mechanisms: r.required("sasl-server-mechanisms", mechanisms)?,
                })
            }
            0x41 => {
                let mechanism = r.symbol("mechanism")?;
                Self::Init(SaslInit {
                    mechanism: r.required("mechanism", mechanism)?,
                    initial_response: r.binary("initial-response")?,
                    hostname: r.string("hostname")?,
                })
            }
            0x42 => {
                let challenge = r.binary("challenge")?;
                Self::Challenge(SaslChallenge {
                    challenge: r.required("challenge", challenge)?,
                })
            }
            0x43 => {
                let response = r.binary("response")?;
                Self::Response(SaslResponse {
                    response: r.required("response", response)?,
                })
            }
            _ => {
                let code = r.ubyte("code")?;
                let code = r.required("code", code)?;
                Self::Outcome(SaslOutcome {
                    code: SaslCode::from_u8(code).ok_or_else(|| r.invalid("code"))?,
                    additional_data: r.binary("additional-data")?,
                })
            }
        })
    }

    pub(crate) fn encode_fields(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Self::Mechanisms(m) => encode::write_described_list(buf, 0x40, 1, |buf| {
                put::opt_symbols(buf, Some(&m.mechanisms))
            }),
            Self::Init(i) => encode::write_described_list(buf, 0x41, 3, |buf| {
                put::symbol(buf, &i.mechanism)?;
                put::opt_binary(buf, i.initial_response.as_deref())?;
                put::opt_string(buf, i.hostname.as_deref())
            }),
            Self::Challenge(c) => encode::write_described_list(buf, 0x42, 1, |buf| {
                put::opt_binary(buf, Some(&c.challenge))
            }),
            Self::Response(r) => encode::write_described_list(buf, 0x43, 1, |buf| {
                put::opt_binary(buf, Some(&r.response))
            }),
            Self::Outcome(o) => encode::write_described_list(buf, 0x44, 2, |buf| {
                put::ubyte(buf, o.code.as_u8());
                put::opt_binary(buf, o.additional_data.as_deref())
            }),
        }
    }
}
