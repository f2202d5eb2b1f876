//! The `source` and `target` termini of an ATTACH (part 3 §3.5.3–§3.5.4).
//!
//! Every field is kept as an `Option` exactly as the peer sent it, because the hub echoes
//! termini back (amqp-contract §1.3) and a faithful echo is what the SDKs expect, the Event
//! Hubs filter included.

use bytes::BytesMut;

use crate::performative::Fields;
use crate::performative::fields::{FieldReader, atomically, described_list, put};
use crate::types::{DecodeError, EncodeError, Symbol, Value, encode};

/// Where messages come from (part 3 §3.5.3): the address a receiving client reads, and its
/// filter.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Source {
    /// The node's address, e.g. `{eh}/ConsumerGroups/{cg}/Partitions/{p}` or `$cbs`.
    pub address: Option<String>,
    /// Terminus durability (0 none, 1 configuration, 2 unsettled-state).
    pub durable: Option<u32>,
    /// When the terminus expires (`link-detach`, `session-end`, …).
    pub expiry_policy: Option<Symbol>,
    /// Seconds before expiry.
    pub timeout: Option<u32>,
    /// Ask the peer to create a node.
    pub dynamic: Option<bool>,
    /// Properties of a dynamically created node.
    pub dynamic_node_properties: Option<Fields>,
    /// `move` or `copy`.
    pub distribution_mode: Option<Symbol>,
    /// The filter set: Event Hubs puts its selector here (amqp-contract §3.4).
    pub filter: Option<Fields>,
    /// The outcome of deliveries settled without one (any outcome value, kept as sent).
    pub default_outcome: Option<Value>,
    /// The outcomes the sender supports.
    pub outcomes: Option<Vec<Symbol>>,
    /// Extension capabilities.
    pub capabilities: Option<Vec<Symbol>>,
}

/// Where messages go (part 3 §3.5.4): the address a sending client writes to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Target {
    /// The node's address, e.g. `/messages/devicebound` or `$cbs`.
    pub address: Option<String>,
    /// Terminus durability.
    pub durable: Option<u32>,
    /// When the terminus expires.
    pub expiry_policy: Option<Symbol>,
    /// Seconds before expiry.
    pub timeout: Option<u32>,
    /// Ask the peer to create a node.
    pub dynamic: Option<bool>,
    /// Properties of a dynamically created node.
    pub dynamic_node_properties: Option<Fields>,
    /// Extension capabilities.
    pub capabilities: Option<Vec<Symbol>>,
}

impl Source {
    /// A source with only an address.
    pub fn address(address: impl Into<String>) -> Self {
        Self {
            address: Some(address.into()),
            ..Self::default()
        }
    }

    pub(crate) fn from_value(value: Value) -> Result<Self, DecodeError> {
        let (code, fields) = described_list(value, "source")?;
        if code != 0x28 {
            return Err(DecodeError::UnexpectedDescriptor {
                expected: "source",
                found: format!("{code:#x}"),
            });
        }
        let mut r = FieldReader::new("source", fields);
        Ok(Self {
            address: r.string("address")?,
            durable: r.uint("durable")?,
            expiry_policy: r.symbol("expiry-policy")?,
            timeout: r.uint("timeout")?,
            dynamic: r.bool("dynamic")?,
            dynamic_node_properties: r.fields("dynamic-node-properties")?,
            distribution_mode: r.symbol("distribution-mode")?,
            filter: r.fields("filter")?,
            default_outcome: Some(r.value()).filter(|v| !v.is_null()),
            outcomes: r.symbols("outcomes")?,
            capabilities: r.symbols("capabilities")?,
        })
    }

    /// Appends the source as a described list of all 11 fields.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        atomically(buf, |buf| {
            encode::write_described_list(buf, 0x28, 11, |buf| {
                put::opt_string(buf, self.address.as_deref())?;
                put::opt_uint(buf, self.durable)?;
                put::opt_symbol(buf, self.expiry_policy.as_ref())?;
                put::opt_uint(buf, self.timeout)?;
                put::opt_bool(buf, self.dynamic);
                put::opt_fields(buf, self.dynamic_node_properties.as_ref())?;
                put::opt_symbol(buf, self.distribution_mode.as_ref())?;
                put::opt_fields(buf, self.filter.as_ref())?;
                match &self.default_outcome {
                    Some(outcome) => put::value(buf, outcome)?,
                    None => put::null(buf),
                }
                put::opt_symbols(buf, self.outcomes.as_deref())?;
                put::opt_symbols(buf, self.capabilities.as_deref())
            })
        })
    }
}

impl Target {
    /// A target with only an address.
    pub fn address(address: impl Into<String>) -> Self {
        Self {
            address: Some(address.into()),
            ..Self::default()
        }
    }

    pub(crate) fn from_value(value: Value) -> Result<Self, DecodeError> {
        let (code, fields) = described_list(value, "target")?;
        if code != 0x29 {
            return Err(DecodeError::UnexpectedDescriptor {
                expected: "target",
                found: format!("{code:#x}"),
            });
        }
        let mut r = FieldReader::new("target", fields);
        Ok(Self {
            address: r.string("address")?,
            durable: r.uint("durable")?,
            expiry_policy: r.symbol("expiry-policy")?,
            timeout: r.uint("timeout")?,
            dynamic: r.bool("dynamic")?,
            dynamic_node_properties: r.fields("dynamic-node-properties")?,
            capabilities: r.symbols("capabilities")?,
        })
    }

    /// Appends the target as a described list of all 7 fields.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        atomically(buf, |buf| {
            encode::write_described_list(buf, 0x29, 7, |buf| {
                put::opt_string(buf, self.address.as_deref())?;
                put::opt_uint(buf, self.durable)?;
                put::opt_symbol(buf, self.expiry_policy.as_ref())?;
                put::opt_uint(buf, self.timeout)?;
                put::opt_bool(buf, self.dynamic);
                put::opt_fields(buf, self.dynamic_node_properties.as_ref())?;
                put::opt_symbols(buf, self.capabilities.as_deref())
            })
        })
    }
}
