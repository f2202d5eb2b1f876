//! MQTT 3.1.1 packets and their wire format.
//!
//! [`decode`] frames and parses one packet from the front of a receive buffer; [`encode`] appends
//! one packet to a send buffer. Decoding works in two steps, check then parse: the fixed header is
//! validated and the remaining length compared with the caller's limit before the body is even
//! waited for, and nothing is allocated or reserved for it. Payloads are split off the receive
//! buffer without copying.
//!
//! The decoder is strict: anything MQTT 3.1.1 calls malformed or a protocol violation is an
//! error, because a broker has to close the connection in that case anyway. Session rules (CONNECT
//! first, in-flight windows, keep-alive) are not checked here.

mod connect;
mod error;
mod packet;
mod publish;
mod subscribe;
mod wire;

use bytes::{Buf, BytesMut};

pub use error::{DecodeError, EncodeError};
pub use packet::{
    ConnAck, Connect, ConnectReturnCode, LastWill, Packet, PacketType, PubAck, PubComp, PubRec,
    PubRel, Publish, QoS, SubAck, Subscribe, SubscribeReturnCode, UnsubAck, Unsubscribe,
};
pub use wire::MAX_REMAINING_LENGTH;

/// Decodes the packet at the front of `buf`.
///
/// * `Ok(Some(packet))`: a whole packet was consumed from `buf`.
/// * `Ok(None)`: `buf` holds only part of a packet; nothing was consumed. Read more and call again.
/// * `Err(_)`: the stream is not valid MQTT 3.1.1; close the connection (after the CONNACK that
///   [`DecodeError::connack_code`] names, if any). If the bad packet was complete it has been
///   consumed; otherwise `buf` is unchanged.
///
/// `max_packet_size` bounds the remaining length (the bytes after the fixed header). A header
/// declaring more fails with [`DecodeError::PacketTooLarge`] as soon as its length bytes are in,
/// so a peer cannot make the caller buffer more than the limit.
pub fn decode(buf: &mut BytesMut, max_packet_size: usize) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = wire::FixedHeader::check(buf, max_packet_size)? else {
        return Ok(None);
    };
    let mut body = buf.split_to(header.frame_len()).freeze();
    body.advance(header.header_len);
    let packet = match header.packet_type {
        PacketType::Connect => Packet::Connect(connect::decode_connect(body)?),
        PacketType::ConnAck => Packet::ConnAck(connect::decode_connack(body)?),
        PacketType::Publish => Packet::Publish(publish::decode_publish(header.flags, body)?),
        PacketType::PubAck => Packet::PubAck(PubAck {
            pkid: publish::decode_pkid_only(PacketType::PubAck, body)?,
        }),
        PacketType::PubRec => Packet::PubRec(PubRec {
            pkid: publish::decode_pkid_only(PacketType::PubRec, body)?,
        }),
        PacketType::PubRel => Packet::PubRel(PubRel {
            pkid: publish::decode_pkid_only(PacketType::PubRel, body)?,
        }),
        PacketType::PubComp => Packet::PubComp(PubComp {
            pkid: publish::decode_pkid_only(PacketType::PubComp, body)?,
        }),
        PacketType::Subscribe => Packet::Subscribe(subscribe::decode_subscribe(body)?),
        PacketType::SubAck => Packet::SubAck(subscribe::decode_suback(body)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(subscribe::decode_unsubscribe(body)?),
        PacketType::UnsubAck => Packet::UnsubAck(UnsubAck {
            pkid: publish::decode_pkid_only(PacketType::UnsubAck, body)?,
        }),
        PacketType::PingReq | PacketType::PingResp | PacketType::Disconnect => {
            if !body.is_empty() {
                return Err(DecodeError::TrailingBytes(header.packet_type));
            }
            match header.packet_type {
                PacketType::PingReq => Packet::PingReq,
                PacketType::PingResp => Packet::PingResp,
                _ => Packet::Disconnect,
            }
        }
    };
    Ok(Some(packet))
}

/// Appends `packet` to `buf`.
///
/// Fails, leaving `buf` unchanged, if the packet breaks a rule its Rust type cannot express (a
/// zero packet identifier, an over-long string, an empty filter list, …). Whatever `encode`
/// accepts, [`decode`] reads back as an equal packet.
pub fn encode(packet: &Packet, buf: &mut BytesMut) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(c) => connect::encode_connect(c, buf),
        Packet::ConnAck(c) => connect::encode_connack(c, buf),
        Packet::Publish(p) => publish::encode_publish(p, buf),
        Packet::PubAck(p) => publish::encode_pkid_only(PacketType::PubAck, p.pkid, buf),
        Packet::PubRec(p) => publish::encode_pkid_only(PacketType::PubRec, p.pkid, buf),
        Packet::PubRel(p) => publish::encode_pkid_only(PacketType::PubRel, p.pkid, buf),
        Packet::PubComp(p) => publish::encode_pkid_only(PacketType::PubComp, p.pkid, buf),
        Packet::Subscribe(s) => subscribe::encode_subscribe(s, buf),
        Packet::SubAck(s) => subscribe::encode_suback(s, buf),
        Packet::Unsubscribe(u) => subscribe::encode_unsubscribe(u, buf),
        Packet::UnsubAck(u) => publish::encode_pkid_only(PacketType::UnsubAck, u.pkid, buf),
        Packet::PingReq | Packet::PingResp | Packet::Disconnect => {
            wire::put_header(buf, (packet.packet_type() as u8) << 4, 0);
            Ok(())
        }
    }
}
