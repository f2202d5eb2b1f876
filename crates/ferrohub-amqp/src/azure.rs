//! Azure's conventions on top of AMQP (amqp-contract §0–§4): what the SDKs' link addresses
//! mean, the `$cbs` and `$management` request/response nodes, the Event Hubs selector filter,
//! error conditions and descriptions, and Event Hubs event messages.
//!
//! Everything here is pure: it parses what a client sent and builds what the hub answers, from
//! plain inputs. Deciding (is the token valid, does the device exist, which events to send) is
//! the hub's.

pub mod address;
pub mod cbs;
pub mod errors;
pub mod event;
pub mod filter;
pub mod management;

use crate::message::{ApplicationProperties, Body, Message, MessageId, Properties};
use crate::types::{Symbol, Value};

/// The application property naming a request's operation (`put-token`, `READ`).
pub const OPERATION: &str = "operation";
/// The application property of a response's status code, an AMQP `int`.
pub const STATUS_CODE: &str = "status-code";
/// The application property of a response's status text.
pub const STATUS_DESCRIPTION: &str = "status-description";
/// The optional application property of a failed response's condition; pyamqp treats its
/// presence as failure and JS maps it to an error (amqp-contract §1.5, §3.3).
pub const ERROR_CONDITION: &str = "error-condition";

/// A response on a request/response node (`$cbs`, `$management`), per amqp-contract §0:
/// `correlation-id` is the request's `message-id` with the same AMQP type, `status-code` an
/// AMQP `int`, `status-description` a string, and for a failure the optional
/// `error-condition`. Send it pre-settled on the node's sender link in the request's session.
pub fn response(
    request_id: Option<&MessageId>,
    status_code: i32,
    status_description: &str,
    error_condition: Option<&Symbol>,
    body: Body,
) -> Message {
    let mut app = ApplicationProperties::new();
    app.insert(STATUS_CODE, Value::Int(status_code));
    app.insert(STATUS_DESCRIPTION, status_description);
    if let Some(condition) = error_condition {
        app.insert(ERROR_CONDITION, Value::Symbol(condition.clone()));
    }
    Message {
        properties: Some(Properties {
            correlation_id: request_id.cloned(),
            ..Properties::default()
        }),
        application_properties: Some(app),
        body,
        ..Message::default()
    }
}

/// A string application property of a request, or why not.
fn string_property<'a>(message: &'a Message, key: &'static str) -> Result<&'a str, PropertyError> {
    let value = message
        .application_properties
        .as_ref()
        .and_then(|app| app.get(key))
        .ok_or(PropertyError::Missing(key))?;
    value.as_text().ok_or(PropertyError::NotAString(key))
}

/// Why a request's application property is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    /// The property is absent.
    #[error("application property {0:?} is missing")]
    Missing(&'static str),
    /// The property is not a string.
    #[error("application property {0:?} is not a string")]
    NotAString(&'static str),
}
