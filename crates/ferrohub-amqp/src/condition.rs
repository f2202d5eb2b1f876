//! The error conditions of the AMQP 1.0 core (part 2 §2.8.15–§2.8.18 of the specification),
//! as [`Symbol`] constants. Azure's own conditions are in
//! [`azure::errors`](crate::azure::errors).

use crate::types::Symbol;

/// An internal error occurred; the operator may need to intervene.
pub const INTERNAL_ERROR: Symbol = Symbol::from_static("amqp:internal-error");
/// A peer attempted to work with a remote entity that does not exist.
pub const NOT_FOUND: Symbol = Symbol::from_static("amqp:not-found");
/// A peer attempted to work with a remote entity to which it has no access.
pub const UNAUTHORIZED_ACCESS: Symbol = Symbol::from_static("amqp:unauthorized-access");
/// Data could not be decoded.
pub const DECODE_ERROR: Symbol = Symbol::from_static("amqp:decode-error");
/// A peer exceeded its resource allocation (also the idle-timeout condition).
pub const RESOURCE_LIMIT_EXCEEDED: Symbol = Symbol::from_static("amqp:resource-limit-exceeded");
/// The peer tried to use a frame in a manner that is inconsistent with the semantics defined
/// in the specification.
pub const NOT_ALLOWED: Symbol = Symbol::from_static("amqp:not-allowed");
/// An invalid field was passed in a frame body.
pub const INVALID_FIELD: Symbol = Symbol::from_static("amqp:invalid-field");
/// The peer tried to use functionality that is not implemented in its partner.
pub const NOT_IMPLEMENTED: Symbol = Symbol::from_static("amqp:not-implemented");
/// The client attempted to work with a server entity to which it has no access because
/// another client is working with it.
pub const RESOURCE_LOCKED: Symbol = Symbol::from_static("amqp:resource-locked");
/// The client made a request that was not allowed because some precondition failed.
pub const PRECONDITION_FAILED: Symbol = Symbol::from_static("amqp:precondition-failed");
/// A server entity the client is working with has been deleted.
pub const RESOURCE_DELETED: Symbol = Symbol::from_static("amqp:resource-deleted");
/// The peer sent a frame that is not permitted in the current state.
pub const ILLEGAL_STATE: Symbol = Symbol::from_static("amqp:illegal-state");
/// The peer cannot send a frame because the smallest encoding of the performative with the
/// currently valid values would be too large to fit within a frame of the agreed size.
pub const FRAME_SIZE_TOO_SMALL: Symbol = Symbol::from_static("amqp:frame-size-too-small");

/// An operator intervened to close the connection for some reason.
pub const CONNECTION_FORCED: Symbol = Symbol::from_static("amqp:connection:forced");
/// A valid frame header cannot be formed from the incoming byte stream.
pub const FRAMING_ERROR: Symbol = Symbol::from_static("amqp:connection:framing-error");
/// The container is no longer available on the current connection.
pub const CONNECTION_REDIRECT: Symbol = Symbol::from_static("amqp:connection:redirect");

/// The peer violated incoming window for the session.
pub const WINDOW_VIOLATION: Symbol = Symbol::from_static("amqp:session:window-violation");
/// Input was received for a link that was detached with an error.
pub const ERRANT_LINK: Symbol = Symbol::from_static("amqp:session:errant-link");
/// An attach was received using a handle that is already in use for an attached link.
pub const HANDLE_IN_USE: Symbol = Symbol::from_static("amqp:session:handle-in-use");
/// A frame (other than attach) was received referencing a handle which is not currently in
/// use of an attached link.
pub const UNATTACHED_HANDLE: Symbol = Symbol::from_static("amqp:session:unattached-handle");

/// An operator intervened to detach for some reason.
pub const DETACH_FORCED: Symbol = Symbol::from_static("amqp:link:detach-forced");
/// The peer sent more message transfers than currently allowed on the link.
pub const TRANSFER_LIMIT_EXCEEDED: Symbol =
    Symbol::from_static("amqp:link:transfer-limit-exceeded");
/// The peer sent a larger message than is supported on the link.
pub const MESSAGE_SIZE_EXCEEDED: Symbol = Symbol::from_static("amqp:link:message-size-exceeded");
/// The address provided cannot be resolved to a terminus at the current container.
pub const LINK_REDIRECT: Symbol = Symbol::from_static("amqp:link:redirect");
/// The link has been attached elsewhere, causing the existing attachment to be forcibly
/// closed. Event Hubs uses it for epoch receivers (amqp-contract §3.7).
pub const STOLEN: Symbol = Symbol::from_static("amqp:link:stolen");
