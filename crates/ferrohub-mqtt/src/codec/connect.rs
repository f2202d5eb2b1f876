//! CONNECT and CONNACK (MQTT 3.1.1 §3.1, §3.2).

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::wire::{self, Reader};
use crate::codec::{
    ConnAck, Connect, ConnectReturnCode, DecodeError, EncodeError, LastWill, PacketType,
};
use crate::topic::TopicName;

const PROTOCOL_NAME: &[u8] = b"MQTT";
const PROTOCOL_NAME_31: &[u8] = b"MQIsdp";
const PROTOCOL_LEVEL: u8 = 4;

const CLEAN_SESSION: u8 = 0b0000_0010;
const WILL: u8 = 0b0000_0100;
const WILL_QOS_SHIFT: u8 = 3;
const WILL_QOS: u8 = 0b0001_1000;
const WILL_RETAIN: u8 = 0b0010_0000;
const PASSWORD: u8 = 0b0100_0000;
const USERNAME: u8 = 0b1000_0000;

pub(crate) fn decode_connect(body: Bytes) -> Result<Connect, DecodeError> {
    let mut r = Reader::new(body, PacketType::Connect);
    let name = r.binary()?;
    match &name[..] {
        PROTOCOL_NAME => {}
        PROTOCOL_NAME_31 => return Err(DecodeError::Mqtt31),
        _ => return Err(DecodeError::InvalidProtocolName),
    }
    let level = r.u8()?;
    if level != PROTOCOL_LEVEL {
        return Err(DecodeError::UnsupportedProtocolLevel(level));
    }
    let flags = r.u8()?;
    if flags & 1 != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let has_will = flags & WILL != 0;
    if !has_will && flags & (WILL_QOS | WILL_RETAIN) != 0 {
        return Err(DecodeError::InvalidWillFlags);
    }
    let will_qos = wire::qos_from_bits((flags & WILL_QOS) >> WILL_QOS_SHIFT)?;
    if flags & PASSWORD != 0 && flags & USERNAME == 0 {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let clean_session = flags & CLEAN_SESSION != 0;
    let keep_alive = r.u16()?;
    let client_id = r.string()?;
    if client_id.is_empty() && !clean_session {
        return Err(DecodeError::EmptyClientId);
    }
    let will = if has_will {
        let topic = TopicName::new(r.string()?).map_err(DecodeError::InvalidTopicName)?;
        Some(LastWill {
            topic,
            message: r.binary()?,
            qos: will_qos,
            retain: flags & WILL_RETAIN != 0,
        })
    } else {
        None
    };
    let username = if flags & USERNAME != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let password = if flags & PASSWORD != 0 {
        Some(r.binary()?)
    } else {
        None
    };
    r.finish()?;
    Ok(Connect {
        clean_session,
        keep_alive,
        client_id,
        username,
        password,
        will,
    })
}

pub(crate) fn encode_connect(c: &Connect, buf: &mut BytesMut) -> Result<(), EncodeError> {
    if c.client_id.is_empty() && !c.clean_session {
        return Err(EncodeError::EmptyClientId);
    }
    if c.password.is_some() && c.username.is_none() {
        return Err(EncodeError::PasswordWithoutUsername);
    }
    // Protocol name, level, flags, keep-alive.
    let mut len = 2 + PROTOCOL_NAME.len() + 1 + 1 + 2;
    len += wire::string_len("client id", &c.client_id)?;
    let mut flags = 0;
    if c.clean_session {
        flags |= CLEAN_SESSION;
    }
    if let Some(will) = &c.will {
        len += wire::string_len("will topic", will.topic.as_str())?;
        len += wire::binary_len("will message", &will.message)?;
        flags |= WILL | (will.qos as u8) << WILL_QOS_SHIFT;
        if will.retain {
            flags |= WILL_RETAIN;
        }
    }
    if let Some(username) = &c.username {
        len += wire::string_len("user name", username)?;
        flags |= USERNAME;
    }
    if let Some(password) = &c.password {
        len += wire::binary_len("password", password)?;
        flags |= PASSWORD;
    }
    let len = wire::check_remaining_len(len)?;

    wire::put_header(buf, (PacketType::Connect as u8) << 4, len);
    wire::put_binary(buf, PROTOCOL_NAME);
    buf.put_u8(PROTOCOL_LEVEL);
    buf.put_u8(flags);
    buf.put_u16(c.keep_alive);
    wire::put_binary(buf, c.client_id.as_bytes());
    if let Some(will) = &c.will {
        wire::put_binary(buf, will.topic.as_str().as_bytes());
        wire::put_binary(buf, &will.message);
    }
    if let Some(username) = &c.username {
        wire::put_binary(buf, username.as_bytes());
    }
    if let Some(password) = &c.password {
        wire::put_binary(buf, password);
    }
    Ok(())
}

pub(crate) fn decode_connack(body: Bytes) -> Result<ConnAck, DecodeError> {
    let mut r = Reader::new(body, PacketType::ConnAck);
    let flags = r.u8()?;
    let code = r.u8()?;
    r.finish()?;
    let code =
        ConnectReturnCode::from_u8(code).ok_or(DecodeError::InvalidConnectReturnCode(code))?;
    let session_present = match flags {
        0 => false,
        1 if code == ConnectReturnCode::Accepted => true,
        _ => return Err(DecodeError::InvalidConnAckFlags(flags)),
    };
    Ok(ConnAck {
        session_present,
        code,
    })
}

pub(crate) fn encode_connack(c: &ConnAck, buf: &mut BytesMut) -> Result<(), EncodeError> {
    if c.session_present && c.code != ConnectReturnCode::Accepted {
        return Err(EncodeError::SessionPresentOnRefusal);
    }
    wire::put_header(buf, (PacketType::ConnAck as u8) << 4, 2);
    buf.put_u8(u8::from(c.session_present));
    buf.put_u8(c.code as u8);
    Ok(())
}
