//! AMQP 1.0 for the hub side of a connection, with Azure's conventions, for Ferrohub's AMQP
//! endpoints: the IoT Hub service endpoint (C2D send, feedback, file notifications), the
//! Event Hub-compatible endpoint and the device endpoint (amqp-contract §2–§4).
//!
//! This crate is sans-IO: no sockets, no clock, no TLS, no tokio. The driver in
//! `ferrohub-server` terminates TLS (and WebSockets), feeds bytes in and writes bytes out,
//! and owns every decision about identities, tokens, storage and routing.
//!
//! # Layers
//!
//! * [`types`]: the AMQP type system as one [`Value`](types::Value) enum whose variant is the
//!   wire type, a bounded zero-copy decoder, and an encoder choosing the smallest encoding of
//!   each type.
//! * [`frame`]: protocol headers (`AMQP 0 1 0 0`, `AMQP 3 1 0 0`, anything else) and frames,
//!   their size checked against the limit before the body is buffered.
//! * [`performative`]: OPEN … CLOSE, SASL frames, termini, delivery states and errors;
//!   decoded leniently, encoded full width (amqp-contract §1.2: pyamqp reads fields by
//!   position).
//! * [`message`]: the message format, ids that keep their AMQP type, Event Hubs batches.
//! * [`connection`]: the engine, one [`Connection`] per socket: headers, SASL, OPEN,
//!   sessions, links, credit, reassembly, settlement, heartbeats, timeouts, limits.
//! * [`azure`]: what the SDKs' addresses mean, `$cbs` and `$management` requests and
//!   responses, the Event Hubs filter, error conditions and descriptions, event messages.
//!
//! # Driving a connection
//!
//! ```
//! use std::time::Instant;
//!
//! use bytes::{Bytes, BytesMut};
//! use ferrohub_amqp::azure::address::Address;
//! use ferrohub_amqp::connection::{AttachReply, Connection, ConnectionConfig, Event};
//! use ferrohub_amqp::performative::{DeliveryState, SaslOutcome};
//!
//! let mut conn = Connection::new(Instant::now(), ConnectionConfig::default());
//! let mut input = BytesMut::new();
//! let mut output = BytesMut::new();
//! # input.extend_from_slice(b"AMQP\x00\x01\x00\x00");
//! // After each read from the socket (only while `conn.wants_read()`):
//! conn.handle_input(Instant::now(), &mut input);
//! conn.poll_transmit(&mut output); // write `output` to the socket
//! while let Some(event) = conn.poll_event() {
//!     match event {
//!         Event::SaslInit { .. } => conn.sasl_outcome(SaslOutcome::ok()),
//!         Event::Attach { link, attach } => {
//!             let address = attach
//!                 .target
//!                 .as_ref()
//!                 .and_then(|t| t.address.as_deref())
//!                 .map_or(Address::Unknown, Address::parse);
//!             // The hub decides from the address, the filter and its token state.
//!             let _ = address;
//!             conn.accept_attach(link, AttachReply::default());
//!         }
//!         Event::Delivery { link, delivery_id, payload, .. } => {
//!             // Decode with `Message::decode(payload)`, store or route it, then:
//!             let _: Bytes = payload;
//!             conn.settle(link, delivery_id, DeliveryState::Accepted);
//!         }
//!         Event::Closed { .. } => { /* write what is left, close the socket */ }
//!         _ => {}
//!     }
//! }
//! // Sleep until `conn.poll_timeout()`, then `conn.handle_timeout(now)`.
//! ```
//!
//! The rules the engine enforces and the answers it expects are on [`Connection`]. A `$cbs`
//! exchange, for example, is: a [`Event::Delivery`] on the `$cbs` sender link →
//! [`azure::cbs::PutToken::parse`] → the hub validates the token →
//! [`Connection::settle`] with `Accepted` → [`Connection::send`] of
//! [`PutToken::response`](azure::cbs::PutToken::response), pre-settled, on the link whose
//! source is `$cbs` in the same session.
//!
//! # Guarantees
//!
//! No input makes the crate panic. The decoder creates at most one value per input byte plus
//! [`types::MAX_ZERO_WIDTH_ITEMS`], reserves nothing a declared size or count cannot back
//! with bytes, and nests at most [`types::MAX_DEPTH`] deep; the engine holds at most what its
//! [`ConnectionConfig`] allows (frame size, sessions, links, pending attaches, unsettled
//! deliveries, reassembly bytes), and keeps no queue that input alone can grow without bound.

pub mod azure;
pub mod condition;
pub mod connection;
pub mod frame;
pub mod message;
pub mod performative;
pub mod types;

pub use connection::{Connection, ConnectionConfig, Event};
