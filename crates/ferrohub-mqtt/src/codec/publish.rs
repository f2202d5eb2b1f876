//! PUBLISH and its acknowledgements PUBACK, PUBREC, PUBREL, PUBCOMP (MQTT 3.1.1 §3.3–3.7).

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::wire::{self, Reader};
use crate::codec::{DecodeError, EncodeError, PacketType, Publish, QoS};
use crate::topic::TopicName;

const DUP: u8 = 0b1000;
const RETAIN: u8 = 0b0001;

/// `flags` were checked by the fixed header: QoS is not 3 and DUP is only set with QoS > 0.
pub(crate) fn decode_publish(flags: u8, body: Bytes) -> Result<Publish, DecodeError> {
    let qos = wire::qos_from_bits((flags >> 1) & 0b11)?;
    let mut r = Reader::new(body, PacketType::Publish);
    let topic = TopicName::new(r.string()?).map_err(DecodeError::InvalidTopicName)?;
    let pkid = match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce | QoS::ExactlyOnce => Some(r.pkid()?),
    };
    Ok(Publish {
        dup: flags & DUP != 0,
        qos,
        retain: flags & RETAIN != 0,
        topic,
        pkid,
        payload: r.rest(),
    })
}

pub(crate) fn encode_publish(p: &Publish, buf: &mut BytesMut) -> Result<(), EncodeError> {
    match (p.qos, p.pkid) {
        (QoS::AtMostOnce, Some(_)) => return Err(EncodeError::UnexpectedPacketId),
        (QoS::AtMostOnce, None) if p.dup => return Err(EncodeError::DupOnQoS0),
        (QoS::AtLeastOnce | QoS::ExactlyOnce, None) => return Err(EncodeError::MissingPacketId),
        (_, Some(0)) => return Err(EncodeError::PacketIdZero(PacketType::Publish)),
        _ => {}
    }
    let len = wire::string_len("topic", p.topic.as_str())?
        + if p.pkid.is_some() { 2 } else { 0 }
        + p.payload.len();
    let len = wire::check_remaining_len(len)?;
    let mut first = (PacketType::Publish as u8) << 4 | (p.qos as u8) << 1;
    if p.dup {
        first |= DUP;
    }
    if p.retain {
        first |= RETAIN;
    }
    wire::put_header(buf, first, len);
    wire::put_binary(buf, p.topic.as_str().as_bytes());
    if let Some(pkid) = p.pkid {
        buf.put_u16(pkid);
    }
    buf.put_slice(&p.payload);
    Ok(())
}

/// Decodes the body of a packet that holds only a packet identifier (PUBACK, PUBREC, PUBREL,
/// PUBCOMP, UNSUBACK).
pub(crate) fn decode_pkid_only(packet_type: PacketType, body: Bytes) -> Result<u16, DecodeError> {
    let mut r = Reader::new(body, packet_type);
    let pkid = r.pkid()?;
    r.finish()?;
    Ok(pkid)
}

/// Encodes a packet that holds only a packet identifier.
pub(crate) fn encode_pkid_only(
    packet_type: PacketType,
    pkid: u16,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    if pkid == 0 {
        return Err(EncodeError::PacketIdZero(packet_type));
    }
    // PUBREL's reserved flags are 0b0010 [MQTT-3.6.1-1]; the others' are 0.
    let flags = if packet_type == PacketType::PubRel {
        0b0010
    } else {
        0
    };
    wire::put_header(buf, (packet_type as u8) << 4 | flags, 2);
    buf.put_u16(pkid);
    Ok(())
}
