//! The nine AMQP performatives (part 2 §2.7).

use bytes::{Bytes, BytesMut};

use crate::performative::fields::{FieldReader, put};
use crate::performative::{
    AmqpError, DeliveryState, Fields, ReceiverSettleMode, Role, SenderSettleMode, Source, Target,
};
use crate::types::{DecodeError, EncodeError, Symbol, Value, encode};

/// OPEN (0x10): negotiates connection parameters. Sent full width, 10 fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Open {
    /// The sender's container id (mandatory).
    pub container_id: String,
    /// The host the client dialled: the Endpoint/HostName host, for virtual hosting
    /// (amqp-contract §1.1).
    pub hostname: Option<String>,
    /// The largest frame the sender accepts. Default `u32::MAX`.
    pub max_frame_size: u32,
    /// The highest channel number the sender accepts. Default 65535.
    pub channel_max: u16,
    /// Milliseconds of silence after which the sender closes; the other side sends
    /// heartbeats at least twice as often.
    pub idle_time_out: Option<u32>,
    /// Locales for outgoing text.
    pub outgoing_locales: Option<Vec<Symbol>>,
    /// Locales for incoming text.
    pub incoming_locales: Option<Vec<Symbol>>,
    /// Extensions the sender supports.
    pub offered_capabilities: Option<Vec<Symbol>>,
    /// Extensions the sender may use.
    pub desired_capabilities: Option<Vec<Symbol>>,
    /// Connection properties (the SDKs send `product`, `version`, `platform`, …).
    pub properties: Option<Fields>,
}

/// BEGIN (0x11): starts a session on a channel. Sent full width, 8 fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Begin {
    /// For an answer, the channel of the BEGIN it answers; `None` when starting a session.
    pub remote_channel: Option<u16>,
    /// The transfer id of the sender's next outgoing transfer frame.
    pub next_outgoing_id: u32,
    /// How many transfer frames the sender can take.
    pub incoming_window: u32,
    /// How many transfer frames the sender could send.
    pub outgoing_window: u32,
    /// The highest link handle the sender accepts. Default `u32::MAX`.
    pub handle_max: u32,
    /// Extensions the sender supports.
    pub offered_capabilities: Option<Vec<Symbol>>,
    /// Extensions the sender may use.
    pub desired_capabilities: Option<Vec<Symbol>>,
    /// Session properties.
    pub properties: Option<Fields>,
}

/// ATTACH (0x12): attaches a link end to a session. Sent full width, 14 fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Attach {
    /// The link's name, identical on both ends.
    pub name: String,
    /// The sender's handle for the link, used by its later frames.
    pub handle: u32,
    /// Which end the sender of this ATTACH is.
    pub role: Role,
    /// The settlement policy of the link's sender. Default `mixed`.
    pub snd_settle_mode: SenderSettleMode,
    /// The settlement policy of the link's receiver. Default `first`.
    pub rcv_settle_mode: ReceiverSettleMode,
    /// Where messages come from. `None` in a reply refuses the link when the replier is the
    /// sender.
    pub source: Option<Source>,
    /// Where messages go. `None` in a reply refuses the link when the replier is the
    /// receiver.
    pub target: Option<Target>,
    /// Unsettled deliveries to resume, by tag.
    pub unsettled: Option<Vec<(Value, Value)>>,
    /// Whether `unsettled` is incomplete.
    pub incomplete_unsettled: bool,
    /// The sender's first delivery-count; mandatory when the ATTACH comes from the sender
    /// (amqp-contract §1.3: pyamqp and uamqp fail without it).
    pub initial_delivery_count: Option<u32>,
    /// The largest message the sender of this ATTACH accepts; `None` or 0 is unlimited.
    pub max_message_size: Option<u64>,
    /// Extensions the sender supports.
    pub offered_capabilities: Option<Vec<Symbol>>,
    /// Extensions the sender may use (Event Hubs: `com.microsoft:georeplication`, the
    /// runtime metric).
    pub desired_capabilities: Option<Vec<Symbol>>,
    /// Link properties (`com.microsoft:epoch`, `com.microsoft:client-version`, …).
    pub properties: Option<Fields>,
}

/// FLOW (0x13): session windows and, with a handle, link credit. Sent full width, 11 fields.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Flow {
    /// The next transfer id the sender expects; `None` before it has seen the other BEGIN.
    pub next_incoming_id: Option<u32>,
    /// The sender's incoming window.
    pub incoming_window: u32,
    /// The transfer id of the sender's next outgoing transfer.
    pub next_outgoing_id: u32,
    /// The sender's outgoing window.
    pub outgoing_window: u32,
    /// The link this FLOW is about; `None` for a session-only FLOW.
    pub handle: Option<u32>,
    /// The link's delivery-count as the sender sees it.
    pub delivery_count: Option<u32>,
    /// The credit the receiver grants (from the receiver), or has left (from the sender).
    pub link_credit: Option<u32>,
    /// How many messages the sender has waiting.
    pub available: Option<u32>,
    /// The receiver asks the sender to use up or give back all credit.
    pub drain: bool,
    /// The sender asks for a FLOW in return.
    pub echo: bool,
    /// Link state properties.
    pub properties: Option<Fields>,
}

/// TRANSFER (0x14): one frame of a delivery. Sent full width, 11 fields, then the payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transfer {
    /// The sender's handle for the link.
    pub handle: u32,
    /// The delivery's id; mandatory on the first frame of a delivery.
    pub delivery_id: Option<u32>,
    /// The delivery's tag (at most 32 bytes); mandatory on the first frame.
    pub delivery_tag: Option<Bytes>,
    /// The message format: 0 for a plain message, 0x80013700 for an Event Hubs batch.
    pub message_format: Option<u32>,
    /// Whether the sender settled the delivery. Null is "not settled" on a first frame and
    /// "unchanged" on later ones.
    pub settled: Option<bool>,
    /// More frames of this delivery follow.
    pub more: bool,
    /// Overrides the link's receiver settle mode for this delivery.
    pub rcv_settle_mode: Option<ReceiverSettleMode>,
    /// The delivery's state, when resuming.
    pub state: Option<DeliveryState>,
    /// This frame resumes a delivery from an earlier link.
    pub resume: bool,
    /// The delivery is abandoned; discard what arrived of it.
    pub aborted: bool,
    /// A hint that no immediate disposition is needed.
    pub batchable: bool,
}

/// DISPOSITION (0x15): the state or settlement of a range of deliveries. Sent full width, 6
/// fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Disposition {
    /// Whether the sender of this frame is the deliveries' receiver or sender.
    pub role: Role,
    /// The first delivery id of the range.
    pub first: u32,
    /// The last delivery id of the range; `None` means `first`.
    pub last: Option<u32>,
    /// Whether the deliveries are settled.
    pub settled: bool,
    /// Their new state.
    pub state: Option<DeliveryState>,
    /// A hint that no immediate answer is needed.
    pub batchable: bool,
}

/// DETACH (0x16): detaches a link end. Sent full width, 3 fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Detach {
    /// The sender's handle for the link.
    pub handle: u32,
    /// Whether the link is closed (gone) rather than only detached (resumable).
    pub closed: bool,
    /// Why, if for an error.
    pub error: Option<AmqpError>,
}

/// END (0x17): ends a session. Sent full width, 1 field.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct End {
    /// Why, if for an error.
    pub error: Option<AmqpError>,
}

/// CLOSE (0x18): closes the connection. Sent full width, 1 field.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Close {
    /// Why, if for an error.
    pub error: Option<AmqpError>,
}

impl Open {
    pub(crate) fn decode(mut r: FieldReader) -> Result<Self, DecodeError> {
        let container_id = r.string("container-id")?;
        Ok(Self {
            container_id: r.required("container-id", container_id)?,
            hostname: r.string("hostname")?,
            max_frame_size: r.uint("max-frame-size")?.unwrap_or(u32::MAX),
            channel_max: r.ushort("channel-max")?.unwrap_or(u16::MAX),
            idle_time_out: r.uint("idle-time-out")?,
            outgoing_locales: r.symbols("outgoing-locales")?,
            incoming_locales: r.symbols("incoming-locales")?,
            offered_capabilities: r.symbols("offered-capabilities")?,
            desired_capabilities: r.symbols("desired-capabilities")?,
            properties: r.fields("properties")?,
        })
    }

    pub(crate) fn encode_fields(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        encode::write_described_list(buf, 0x10, 10, |buf| {
            put::string(buf, &self.container_id)?;
            put::opt_string(buf, self.hostname.as_deref())?;
            put::uint(buf, self.max_frame_size)?;
            put::ushort(buf, self.channel_max);
            put::opt_uint(buf, self.idle_time_out)?;
            put::opt_symbols(buf, self.outgoing_locales.as_deref())?;
            put::opt_symbols(buf, self.incoming_locales.as_deref())?;
            put::opt_symbols(buf, self.offered_capabilities.as_deref())?;
            put::opt_symbols(buf, self.desired_capabilities.as_deref())?;
            put::opt_fields(buf, self.properties.as_ref())
        })
    }
}

impl Begin {
    pub(crate) fn decode(mut r: FieldReader) -> Result<Self, DecodeError> {
        let remote_channel = r.ushort("remote-channel")?;
        let next_outgoing_id = r.req_uint("next-outgoing-id")?;
        let incoming_window = r.req_uint("incoming-window")?;
        let outgoing_window = r.req_uint("outgoing-window")?;
        Ok(Self {
            remote_channel,
            next_outgoing_id,
            incoming_window,
            outgoing_window,
            handle_max: r.uint("handle-max")?.unwrap_or(u32::MAX),
            offered_capabilities: r.symbols("offered-capabilities")?,
            desired_capabilities: r.symbols("desired-capabilities")?,
            properties: r.fields("properties")?,
        })
    }

    pub(crate) fn encode_fields(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        encode::write_described_list(buf, 0x11, 8, |buf| {
            put::opt_ushort(buf, self.remote_channel);
            put::uint(buf, self.next_outgoing_id)?;
            put::uint(buf, self.incoming_window)?;
            put::uint(buf, self.outgoing_window)?;
            put::uint(buf, self.handle_max)?;
            put::opt_symbols(buf, self.offered_capabilities.as_deref())?;
            put::opt_symbols(buf, self.desired_capabilities.as_deref())?;
            put::opt_fields(buf, self.properties.as_ref())
        })
    }
}

impl Attach {
    /// The ATTACH a link's opening end sends, where it is `role`: settlement modes by
    /// default, an initial delivery count of 0 from a sender, no capabilities or properties.
    pub fn new(name: &str, handle: u32, role: Role, source: Source, target: Target) -> Self {
        Self {
            name: name.to_owned(),
            handle,
            role,
            snd_settle_mode: SenderSettleMode::default(),
            rcv_settle_mode: ReceiverSettleMode::default(),
            source: Some(source),
            target: Some(target),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: (role == Role::Sender).then_some(0),
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }
    }

    pub(crate) fn decode(mut r: FieldReader) -> Result<Self, DecodeError> {
        let name = r.string("name")?;
        let name = r.required("name", name)?;
        let handle = r.req_uint("handle")?;
        let role = r.bool("role")?;
        let role = Role::from_bool(r.required("role", role)?);
        let snd_settle_mode = match r.ubyte("snd-settle-mode")? {
            None => SenderSettleMode::default(),
            Some(v) => SenderSettleMode::from_u8(v).ok_or_else(|| r.invalid("snd-settle-mode"))?,
        };
        let rcv_settle_mode = match r.ubyte("rcv-settle-mode")? {
            None => ReceiverSettleMode::default(),
            Some(v) => {
                ReceiverSettleMode::from_u8(v).ok_or_else(|| r.invalid("rcv-settle-mode"))?
            }
        };
        Ok(Self {
            name,
            handle,
            role,
            snd_settle_mode,
            rcv_settle_mode,
            source: r.source("source")?,
            target: r.target("target")?,
            unsettled: r.map("unsettled")?,
            incomplete_unsettled: r.bool("incomplete-unsettled")?.unwrap_or(false),
            initial_delivery_count: r.uint("initial-delivery-count")?,
            max_message_size: r.ulong("max-message-size")?,
            offered_capabilities: r.symbols("offered-capabilities")?,
            desired_capabilities: r.symbols("desired-capabilities")?,
            properties: r.fields("properties")?,
        })
    }

    pub(crate) fn encode_fields(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        encode::write_described_list(buf, 0x12, 14, |buf| {
            put::string(buf, &self.name)?;
            put::uint(buf, self.handle)?;
            put::bool(buf, self.role.as_bool());
            put::ubyte(buf, self.snd_settle_mode.as_u8());
            put::ubyte(buf, self.rcv_settle_mode.as_u8());
            match &self.source {
                Some(source) => source.encode(buf)?,
                None => put::null(buf),
            }
            match &self.target {
                Some(target) => target.encode(buf)?,
                None => put::null(buf),
            }
            put::opt_map(buf, self.unsettled.as_deref())?;
            put::bool(buf, self.incomplete_unsettled);
            put::opt_uint(buf, self.initial_delivery_count)?;
            put::opt_ulong(buf, self.max_message_size)?;
            put::opt_symbols(buf, self.offered_capabilities.as_deref())?;
            put::opt_symbols(buf, self.desired_capabilities.as_deref())?;
            put::opt_fields(buf, self.properties.as_ref())
        })
    }
}

impl Flow {
    pub(crate) fn decode(mut r: FieldReader) -> Result<Self, DecodeError> {
        let next_incoming_id = r.uint("next-incoming-id")?;
        let incoming_window = r.req_uint("incoming-window")?;
        let next_outgoing_id = r.req_uint("next-outgoing-id")?;
        let outgoing_window = r.req_uint("outgoing-window")?;
        Ok(Self {
            next_incoming_id,
            incoming_window,
            next_outgoing_id,
            outgoing_window,
            handle: r.uint("handle")?,
            delivery_count: r.uint("delivery-count")?,
            link_credit: r.uint("link-credit")?,
            available: r.uint("available")?,
            drain: r.bool("drain")?.unwrap_or(false),
            echo: r.bool("echo")?.unwrap_or(false),
            properties: r.fields("properties")?,
        })
    }

    pub(crate) fn encode_fields(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        encode::write_described_list(buf, 0x13, 11, |buf| {
            put::opt_uint(buf, self.next_incoming_id)?;
            put::uint(buf, self.incoming_window)?;
            put::uint(buf, self.next_outgoing_id)?;
            put::uint(buf, self.outgoing_window)?;
            put::opt_uint(buf, self.handle)?;
            put::opt_uint(buf, self.delivery_count)?;
            put::opt_uint(buf, self.link_credit)?;
            put::opt_uint(buf, self.available)?;
            put::bool(buf, self.drain);
            put::bool(buf, self.echo);
            put::opt_fields(buf, self.properties.as_ref())
        })
    }
}

impl Transfer {
    pub(crate) fn decode(mut r: FieldReader) -> Result<Self, DecodeError> {
        let handle = r.req_uint("handle")?;
        Ok(Self {
            handle,
            delivery_id: r.uint("delivery-id")?,
            delivery_tag: r.binary("delivery-tag")?,
            message_format: r.uint("message-format")?,
            settled: r.bool("settled")?,
            more: r.bool("more")?.unwrap_or(false),
            rcv_settle_mode: match r.ubyte("rcv-settle-mode")? {
                None => None,
                Some(v) => Some(
                    ReceiverSettleMode::from_u8(v).ok_or_else(|| r.invalid("rcv-settle-mode"))?,
                ),
            },
            state: r.state("state")?,
            resume: r.bool("resume")?.unwrap_or(false),
            aborted: r.bool("aborted")?.unwrap_or(false),
            batchable: r.bool("batchable")?.unwrap_or(false),
        })
    }

    pub(crate) fn encode_fields(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        encode::write_described_list(buf, 0x14, 11, |buf| {
            put::uint(buf, self.handle)?;
            put::opt_uint(buf, self.delivery_id)?;
            put::opt_binary(buf, self.delivery_tag.as_deref())?;
            put::opt_uint(buf, self.message_format)?;
            put::opt_bool(buf, self.settled);
            put::bool(buf, self.more);
            put::opt_ubyte(buf, self.rcv_settle_mode.map(ReceiverSettleMode::as_u8));
            put::opt_state(buf, self.state.as_ref())?;
            put::bool(buf, self.resume);
            put::bool(buf, self.aborted);
            put::bool(buf, self.batchable);
            Ok(())
        })
    }
}

impl Disposition {
    pub(crate) fn decode(mut r: FieldReader) -> Result<Self, DecodeError> {
        let role = r.bool("role")?;
        let role = Role::from_bool(r.required("role", role)?);
        let first = r.req_uint("first")?;
        Ok(Self {
            role,
            first,
            last: r.uint("last")?,
            settled: r.bool("settled")?.unwrap_or(false),
            state: r.state("state")?,
            batchable: r.bool("batchable")?.unwrap_or(false),
        })
    }

    pub(crate) fn encode_fields(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        encode::write_described_list(buf, 0x15, 6, |buf| {
            put::bool(buf, self.role.as_bool());
            put::uint(buf, self.first)?;
            put::opt_uint(buf, self.last)?;
            put::bool(buf, self.settled);
            put::opt_state(buf, self.state.as_ref())?;
            put::bool(buf, self.batchable);
            Ok(())
        })
    }
}

impl Detach {
    pub(crate) fn decode(mut r: FieldReader) -> Result<Self, DecodeError> {
        let handle = r.req_uint("handle")?;
        Ok(Self {
            handle,
            closed: r.bool("closed")?.unwrap_or(false),
            error: r.error("error")?,
        })
    }

    pub(crate) fn encode_fields(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        encode::write_described_list(buf, 0x16, 3, |buf| {
            put::uint(buf, self.handle)?;
            put::bool(buf, self.closed);
            put::opt_error(buf, self.error.as_ref())
        })
    }
}

impl End {
    pub(crate) fn decode(mut r: FieldReader) -> Result<Self, DecodeError> {
        Ok(Self {
            error: r.error("error")?,
        })
    }

    pub(crate) fn encode_fields(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        encode::write_described_list(buf, 0x17, 1, |buf| put::opt_error(buf, self.error.as_ref()))
    }
}

impl Close {
    pub(crate) fn decode(mut r: FieldReader) -> Result<Self, DecodeError> {
        Ok(Self {
            error: r.error("error")?,
        })
    }

    pub(crate) fn encode_fields(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        encode::write_described_list(buf, 0x18, 1, |buf| put::opt_error(buf, self.error.as_ref()))
    }
}
