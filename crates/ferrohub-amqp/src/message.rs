//! The AMQP 1.0 message format (part 3 §3.2): a bare message and its annotations, as carried
//! in the payload of a delivery.
//!
//! A message is a sequence of described sections: header, delivery-annotations,
//! message-annotations, properties, application-properties, the body (one or more `data`
//! sections, one or more `amqp-sequence` sections, or one `amqp-value`), and a footer. The
//! section descriptors are written as small ulongs (`00 53 70` … `00 53 78`), which pyamqp
//! requires (amqp-contract §1.2: it reads the third byte as the section code).
//!
//! Message and correlation ids keep their AMQP type ([`MessageId`]): the SDKs match replies by
//! the id *and* its type (amqp-contract §0).
//!
//! Event Hubs batches (message format [`BATCH_MESSAGE_FORMAT`]) carry one encoded message per
//! data section; [`decode_batch`] unpacks them.

mod sections;

use bytes::{Bytes, BytesMut};

use crate::performative::fields::{FieldReader, put};
use crate::types::{DecodeError, Decoder, EncodeError, Value, encode};

pub use sections::{Annotations, ApplicationProperties, Header, MessageId, Properties};

/// The message format of an Event Hubs / Service Bus batch: the body is one data section per
/// encoded inner message (amqp-contract §3.9).
pub const BATCH_MESSAGE_FORMAT: u32 = 0x8001_3700;

/// An AMQP message: the bare message plus its annotations and footer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    /// Transport headers (durability, priority, TTL, delivery count).
    pub header: Option<Header>,
    /// Annotations for the next hop only. Event Hubs puts its runtime metric here
    /// (amqp-contract §3.6).
    pub delivery_annotations: Option<Annotations>,
    /// Annotations that travel with the message: `x-opt-*`, `iothub-*`.
    pub message_annotations: Option<Annotations>,
    /// The immutable properties: ids, addresses, content type, times.
    pub properties: Option<Properties>,
    /// The application's own properties (string keys, simple values).
    pub application_properties: Option<ApplicationProperties>,
    /// The body.
    pub body: Body,
    /// Footer annotations (hashes, signatures).
    pub footer: Option<Annotations>,
}

/// A message body.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Body {
    /// No body section. The specification requires one; the decoder accepts its absence, and
    /// the encoder writes nothing.
    #[default]
    Empty,
    /// One or more `data` sections (0x75): opaque bytes. What telemetry, C2D and events carry.
    Data(Vec<Bytes>),
    /// One or more `amqp-sequence` sections (0x76).
    Sequence(Vec<Vec<Value>>),
    /// One `amqp-value` section (0x77): the `$cbs` token (a string) and `$management`
    /// responses (a map).
    Value(Value),
}

impl Body {
    /// A body of one data section.
    pub fn data(bytes: impl Into<Bytes>) -> Self {
        Self::Data(vec![bytes.into()])
    }

    /// The data sections, if the body is made of them.
    pub fn as_data(&self) -> Option<&[Bytes]> {
        match self {
            Self::Data(sections) => Some(sections),
            _ => None,
        }
    }

    /// The value of an `amqp-value` body.
    pub fn as_value(&self) -> Option<&Value> {
        match self {
            Self::Value(value) => Some(value),
            _ => None,
        }
    }
}

/// An Event Hubs batch taken apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The outer message: its annotations (a partition key) and its body, whose data sections
    /// are the inner messages' encodings.
    pub envelope: Message,
    /// The inner messages, in order.
    pub messages: Vec<Message>,
}

/// The position of each section kind in the specification's order; the body kinds share one.
fn rank(code: u64) -> u8 {
    match code {
        0x75..=0x77 => 5,
        0x78 => 6,
        other => (other - 0x70) as u8,
    }
}

impl Message {
    /// A message with a one-data-section body and nothing else.
    pub fn with_data(bytes: impl Into<Bytes>) -> Self {
        Self {
            body: Body::data(bytes),
            ..Self::default()
        }
    }

    /// Decodes a delivery's payload.
    ///
    /// Sections must come in the specification's order, each at most once, the body made of
    /// one kind of section (one `amqp-value` at most). `data` sections are slices of `payload`.
    pub fn decode(mut payload: Bytes) -> Result<Self, DecodeError> {
        let mut decoder = Decoder::new();
        let mut message = Self::default();
        let mut last_rank = None;
        while !payload.is_empty() {
            let section = decoder.value(&mut payload, 0)?;
            let Value::Described(section) = section else {
                return Err(DecodeError::NotAList("message section"));
            };
            let code = crate::performative::fields::descriptor_code(&section.descriptor)
                .filter(|code| (0x70..=0x78).contains(code))
                .ok_or_else(|| DecodeError::UnexpectedDescriptor {
                    expected: "message section",
                    found: crate::performative::fields::describe(&section.descriptor),
                })?;
            let rank = rank(code);
            match last_rank {
                Some(last) if rank < last => {
                    return Err(DecodeError::InvalidSections("sections out of order"));
                }
                Some(last) if rank == last && rank != 5 => {
                    return Err(DecodeError::InvalidSections("a section appears twice"));
                }
                _ => last_rank = Some(rank),
            }
            message.add_section(code, section.value)?;
        }
        Ok(message)
    }

    fn add_section(&mut self, code: u64, value: Value) -> Result<(), DecodeError> {
        match code {
            0x70 => self.header = Some(Header::decode(list(value, "header")?)?),
            0x71 => self.delivery_annotations = Some(Annotations::from_value(value)?),
            0x72 => self.message_annotations = Some(Annotations::from_value(value)?),
            0x73 => self.properties = Some(Properties::decode(list(value, "properties")?)?),
            0x74 => {
                self.application_properties = Some(ApplicationProperties::from_value(value)?);
            }
            0x75 => {
                let Value::Binary(bytes) = value else {
                    return Err(DecodeError::InvalidField {
                        composite: "data",
                        field: "value",
                    });
                };
                match &mut self.body {
                    Body::Empty => self.body = Body::Data(vec![bytes]),
                    Body::Data(sections) => sections.push(bytes),
                    _ => return Err(DecodeError::InvalidSections("mixed body sections")),
                }
            }
            0x76 => {
                let Value::List(items) = value else {
                    return Err(DecodeError::InvalidField {
                        composite: "amqp-sequence",
                        field: "value",
                    });
                };
                match &mut self.body {
                    Body::Empty => self.body = Body::Sequence(vec![items]),
                    Body::Sequence(sections) => sections.push(items),
                    _ => return Err(DecodeError::InvalidSections("mixed body sections")),
                }
            }
            0x77 => match self.body {
                Body::Empty => self.body = Body::Value(value),
                _ => return Err(DecodeError::InvalidSections("amqp-value after a body")),
            },
            _ => self.footer = Some(Annotations::from_value(value)?),
        }
        Ok(())
    }

    /// Appends the message's sections in the specification's order. On error `buf` is
    /// unchanged.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        crate::performative::fields::atomically(buf, |buf| {
            if let Some(header) = &self.header {
                header.encode(buf)?;
            }
            if let Some(annotations) = &self.delivery_annotations {
                annotations.encode(0x71, buf)?;
            }
            if let Some(annotations) = &self.message_annotations {
                annotations.encode(0x72, buf)?;
            }
            if let Some(properties) = &self.properties {
                properties.encode(buf)?;
            }
            if let Some(properties) = &self.application_properties {
                properties.encode(buf)?;
            }
            match &self.body {
                Body::Empty => {}
                Body::Data(sections) => {
                    for section in sections {
                        section_descriptor(buf, 0x75);
                        encode::write_binary(buf, section)?;
                    }
                }
                Body::Sequence(sections) => {
                    for section in sections {
                        section_descriptor(buf, 0x76);
                        put::value(buf, &Value::List(section.clone()))?;
                    }
                }
                Body::Value(value) => {
                    section_descriptor(buf, 0x77);
                    put::value(buf, value)?;
                }
            }
            if let Some(footer) = &self.footer {
                footer.encode(0x78, buf)?;
            }
            Ok(())
        })
    }

    /// The encoded message, ready to be a delivery's payload.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut buf = BytesMut::new();
        self.encode(&mut buf)?;
        Ok(buf.freeze())
    }
}

/// Unpacks an Event Hubs batch (message format [`BATCH_MESSAGE_FORMAT`]): the envelope, then
/// one message per data section of its body. A body of anything but data sections is an
/// error; so is any inner message that does not decode.
pub fn decode_batch(payload: Bytes) -> Result<Batch, DecodeError> {
    let envelope = Message::decode(payload)?;
    let messages = match &envelope.body {
        Body::Data(sections) => sections
            .iter()
            .map(|section| Message::decode(section.clone()))
            .collect::<Result<Vec<_>, _>>()?,
        Body::Empty => Vec::new(),
        _ => {
            return Err(DecodeError::InvalidSections(
                "a batch body is data sections",
            ));
        }
    };
    Ok(Batch { envelope, messages })
}

/// Writes a small-ulong section descriptor `00 53 code`.
fn section_descriptor(buf: &mut BytesMut, code: u8) {
    buf.extend_from_slice(&[0x00, 0x53, code]);
}

/// The fields of a list section (header, properties); `null` reads as no fields.
fn list(value: Value, composite: &'static str) -> Result<FieldReader, DecodeError> {
    match value {
        Value::List(fields) => Ok(FieldReader::new(composite, fields)),
        Value::Null => Ok(FieldReader::new(composite, Vec::new())),
        _ => Err(DecodeError::NotAList(composite)),
    }
}
