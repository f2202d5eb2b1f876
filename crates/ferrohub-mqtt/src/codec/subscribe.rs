//! SUBSCRIBE, SUBACK, UNSUBSCRIBE (MQTT 3.1.1 §3.8–3.10); UNSUBACK is a bare packet identifier.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::wire::{self, Reader};
use crate::codec::{
    DecodeError, EncodeError, PacketType, QoS, SubAck, Subscribe, SubscribeReturnCode, Unsubscribe,
};
use crate::topic::TopicFilter;

/// SUBSCRIBE and UNSUBSCRIBE carry the reserved flags 0b0010 [MQTT-3.8.1-1, MQTT-3.10.1-1].
const REQUIRED_FLAGS: u8 = 0b0010;

pub(crate) fn decode_subscribe(body: Bytes) -> Result<Subscribe, DecodeError> {
    let mut r = Reader::new(body, PacketType::Subscribe);
    let pkid = r.pkid()?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = TopicFilter::new(r.string()?).map_err(DecodeError::InvalidTopicFilter)?;
        let requested = r.u8()?;
        let qos = QoS::from_u8(requested).ok_or(DecodeError::InvalidRequestedQoS(requested))?;
        filters.push((filter, qos));
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters(PacketType::Subscribe));
    }
    Ok(Subscribe { pkid, filters })
}

pub(crate) fn encode_subscribe(s: &Subscribe, buf: &mut BytesMut) -> Result<(), EncodeError> {
    check_list(PacketType::Subscribe, s.pkid, s.filters.is_empty())?;
    let mut len = 2;
    for (filter, _) in &s.filters {
        len += wire::string_len("topic filter", filter.as_str())? + 1;
    }
    let len = wire::check_remaining_len(len)?;
    wire::put_header(
        buf,
        (PacketType::Subscribe as u8) << 4 | REQUIRED_FLAGS,
        len,
    );
    buf.put_u16(s.pkid);
    for (filter, qos) in &s.filters {
        wire::put_binary(buf, filter.as_str().as_bytes());
        buf.put_u8(*qos as u8);
    }
    Ok(())
}

pub(crate) fn decode_suback(body: Bytes) -> Result<SubAck, DecodeError> {
    let mut r = Reader::new(body, PacketType::SubAck);
    let pkid = r.pkid()?;
    let return_codes = r
        .rest()
        .iter()
        .map(|&b| SubscribeReturnCode::from_u8(b).ok_or(DecodeError::InvalidSubAckReturnCode(b)))
        .collect::<Result<Vec<_>, _>>()?;
    if return_codes.is_empty() {
        return Err(DecodeError::NoReturnCodes);
    }
    Ok(SubAck { pkid, return_codes })
}

pub(crate) fn encode_suback(s: &SubAck, buf: &mut BytesMut) -> Result<(), EncodeError> {
    if s.pkid == 0 {
        return Err(EncodeError::PacketIdZero(PacketType::SubAck));
    }
    if s.return_codes.is_empty() {
        return Err(EncodeError::NoReturnCodes);
    }
    let len = wire::check_remaining_len(2 + s.return_codes.len())?;
    wire::put_header(buf, (PacketType::SubAck as u8) << 4, len);
    buf.put_u16(s.pkid);
    for code in &s.return_codes {
        buf.put_u8(code.to_u8());
    }
    Ok(())
}

pub(crate) fn decode_unsubscribe(body: Bytes) -> Result<Unsubscribe, DecodeError> {
    let mut r = Reader::new(body, PacketType::Unsubscribe);
    let pkid = r.pkid()?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(TopicFilter::new(r.string()?).map_err(DecodeError::InvalidTopicFilter)?);
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters(PacketType::Unsubscribe));
    }
    Ok(Unsubscribe { pkid, filters })
}

pub(crate) fn encode_unsubscribe(u: &Unsubscribe, buf: &mut BytesMut) -> Result<(), EncodeError> {
    check_list(PacketType::Unsubscribe, u.pkid, u.filters.is_empty())?;
    let mut len = 2;
    for filter in &u.filters {
        len += wire::string_len("topic filter", filter.as_str())?;
    }
    let len = wire::check_remaining_len(len)?;
    wire::put_header(
        buf,
        (PacketType::Unsubscribe as u8) << 4 | REQUIRED_FLAGS,
        len,
    );
    buf.put_u16(u.pkid);
    for filter in &u.filters {
        wire::put_binary(buf, filter.as_str().as_bytes());
    }
    Ok(())
}

fn check_list(packet_type: PacketType, pkid: u16, empty: bool) -> Result<(), EncodeError> {
    if pkid == 0 {
        return Err(EncodeError::PacketIdZero(packet_type));
    }
    if empty {
        return Err(EncodeError::NoTopicFilters(packet_type));
    }
    Ok(())
}
