//! AMQP for black-box tests: the product's client ([`ferrohub_client::amqp::AmqpClient`]) over
//! TLS to a [`TestHub`](crate::TestHub), with helpers asserting what the hub answers, and a
//! raw-frame escape hatch ([`send_raw`], [`send_frame`]) for tests of malformed or
//! out-of-order frames.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferrohub_amqp::message::{Body, Message, MessageId, Properties};
use ferrohub_amqp::performative::{AmqpError, DeliveryState, Performative};
use ferrohub_amqp::types::Value;
pub use ferrohub_client::amqp::{AmqpClient, AmqpClientError, CbsReply, Incoming, new_attach};
use tokio::io::AsyncWriteExt;

/// An AMQP connection to a test hub.
pub type AmqpTestClient = AmqpClient<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Writes `bytes` as they are, after the frames the client queued.
pub async fn send_raw(c: &mut AmqpTestClient, bytes: &[u8]) {
    // The hub may already have closed: a failed write shows up on the next read.
    let _ = c.flush().await;
    let _ = c.get_mut().write_all(bytes).await;
    let _ = c.get_mut().flush().await;
}

/// Writes performative `p` (and its payload) on channel 0, untracked by the client.
pub async fn send_frame(c: &mut AmqpTestClient, p: Performative, payload: &[u8]) {
    let mut buf = BytesMut::new();
    p.encode_frame(0, payload, &mut buf).unwrap();
    send_raw(c, &buf).await;
}

/// Whether the hub closes the connection (CLOSE or end of stream) within `limit`; returns
/// the CLOSE's error if it sent one.
pub async fn closed_within(c: &mut AmqpTestClient, limit: Duration) -> Option<Option<AmqpError>> {
    let closed = async {
        loop {
            match c.next().await {
                Ok(_) => {}
                Err(AmqpClientError::Closed(error)) => return error,
                Err(_) => return None,
            }
        }
    };
    tokio::time::timeout(limit, closed).await.ok()
}

/// Puts `token` for `audience` on `$cbs` in a request with `message_id`, unsettled, and
/// returns the reply's status code, description and correlation id. Asserts the hub accepts
/// the request, sends the reply pre-settled, and types the status code as an AMQP int.
pub async fn put_token(
    c: &mut AmqpTestClient,
    audience: &str,
    token: &str,
    message_id: MessageId,
) -> (i32, String, Option<MessageId>) {
    let reply = c
        .cbs_put_token(audience, token, message_id, false)
        .await
        .unwrap();
    assert_eq!(
        reply.outcome,
        Some(DeliveryState::Accepted),
        "put-token delivery"
    );
    assert!(reply.settled, "$cbs replies come pre-settled");
    let status = match reply.status() {
        Some(Value::Int(s)) => *s,
        other => panic!("status-code must be an AMQP int: {other:?}"),
    };
    (status, reply.description(), reply.correlation_id().cloned())
}

/// Waits for the hub's settlement of delivery `id`; asserts the hub settled it.
pub async fn outcome(c: &mut AmqpTestClient, id: u32) -> Option<DeliveryState> {
    c.wait_for(|i| match i {
        Incoming::Disposition {
            first,
            last,
            settled,
            state,
        } if (*first..=*last).contains(&id) => {
            assert!(settled, "the hub settles what it decides: {i:?}");
            Some(state.clone())
        }
        _ => None,
    })
    .await
    .unwrap()
}

/// Sends `message` unsettled on sender `handle` and waits for its outcome.
pub async fn send_message(
    c: &mut AmqpTestClient,
    handle: u32,
    message: &Message,
) -> Option<DeliveryState> {
    let id = c.send(handle, message, false).await.unwrap();
    outcome(c, id).await
}

/// A message with a data body and `properties`.
pub fn data_message(body: &[u8], properties: Properties) -> Message {
    Message {
        properties: Some(properties),
        body: Body::data(Bytes::copy_from_slice(body)),
        ..Message::default()
    }
}
