//! The `$cbs` node: put-token requests and their responses (amqp-contract §0, §1.5).
//!
//! A client attaches a sender and a receiver on `$cbs` and sends a request with the
//! application properties `operation = "put-token"`, `type`, `name` (the audience) and the
//! token as an `amqp-value` string body. The SDKs differ in everything around that (§0's
//! table): the message-id is a ulong (uamqp), a uuid (pyamqp) or a string (Node, JS); the
//! reply-to is absent, `cbs` or a link name. The response therefore echoes the message-id as
//! the correlation-id with its type, carries `status-code` as an `int` (Node insists on
//! exactly 200), and goes on the `$cbs` sender link of the same session, whatever the
//! reply-to says.
//!
//! The hub validates the token, not the `name`: audiences differ wildly between SDKs.

use crate::azure::{self, PropertyError};
use crate::message::{Body, Message, MessageId};
use crate::types::{Symbol, Value};

/// The node's address.
pub const ADDRESS: &str = "$cbs";
/// The only operation.
pub const PUT_TOKEN: &str = "put-token";
/// The token type of a shared access signature.
pub const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";
/// The token types of Entra ID tokens (PY-SVC sends `bearer`, JS core-amqp `jwt`).
pub const JWT_TOKEN_TYPES: [&str; 2] = ["jwt", "bearer"];

/// A put-token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutToken {
    /// The request's message-id, with its AMQP type, to correlate the response.
    pub message_id: Option<MessageId>,
    /// The reply-to, if sent (informational: the response goes on the `$cbs` sender link).
    pub reply_to: Option<String>,
    /// The token type: [`SAS_TOKEN_TYPE`] or one of [`JWT_TOKEN_TYPES`].
    pub token_type: String,
    /// The audience the client names (`https://{host}`, `sb://{host}/{eh}`, an encoded `sr`…).
    pub name: String,
    /// The token: `SharedAccessSignature sr=…&sig=…&se=…[&skn=…]` for SAS.
    pub token: String,
    /// The expiry pyamqp sends (ms since the epoch); the token's own expiry is what counts.
    pub expiration: Option<i64>,
}

/// Why a `$cbs` request was not a usable put-token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CbsError {
    /// An operation other than `put-token`.
    #[error("unsupported $cbs operation {0:?}")]
    UnsupportedOperation(String),
    /// A missing or mistyped application property.
    #[error(transparent)]
    Property(#[from] PropertyError),
    /// The body is not an `amqp-value` string.
    #[error("the token is not an amqp-value string")]
    TokenNotAString,
}

impl CbsError {
    /// The status code to answer with: 400, or 501 for an operation the hub lacks.
    pub fn status_code(&self) -> i32 {
        match self {
            Self::UnsupportedOperation(_) => 501,
            _ => 400,
        }
    }
}

impl PutToken {
    /// Reads a put-token request.
    pub fn parse(message: &Message) -> Result<Self, CbsError> {
        let operation = azure::string_property(message, azure::OPERATION)?;
        if operation != PUT_TOKEN {
            return Err(CbsError::UnsupportedOperation(operation.to_owned()));
        }
        let token_type = azure::string_property(message, "type")?.to_owned();
        let name = azure::string_property(message, "name")?.to_owned();
        let token = match &message.body {
            Body::Value(Value::String(token)) => token.clone(),
            _ => return Err(CbsError::TokenNotAString),
        };
        let expiration = message
            .application_properties
            .as_ref()
            .and_then(|app| app.get("expiration"))
            .and_then(|v| match v {
                Value::Timestamp(t) => Some(*t),
                _ => None,
            });
        let properties = message.properties.as_ref();
        Ok(Self {
            message_id: properties.and_then(|p| p.message_id.clone()),
            reply_to: properties.and_then(|p| p.reply_to.clone()),
            token_type,
            name,
            token,
            expiration,
        })
    }

    /// Whether the token is a shared access signature.
    pub fn is_sas(&self) -> bool {
        self.token_type == SAS_TOKEN_TYPE
    }

    /// The response: `status_code` 200 with "OK" on success, or e.g. 401/403/404 with a
    /// description and the condition (which pyamqp reads as failure).
    pub fn response(
        &self,
        status_code: i32,
        description: &str,
        error_condition: Option<&Symbol>,
    ) -> Message {
        response(
            self.message_id.as_ref(),
            status_code,
            description,
            error_condition,
        )
    }
}

/// A `$cbs` response to the request with `request_id`, for requests that did not parse too.
/// The body is an `amqp-value` null: responses carry no data, but a message needs a body.
pub fn response(
    request_id: Option<&MessageId>,
    status_code: i32,
    description: &str,
    error_condition: Option<&Symbol>,
) -> Message {
    azure::response(
        request_id,
        status_code,
        description,
        error_condition,
        Body::Value(Value::Null),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ApplicationProperties, Properties};

    fn request(id: MessageId, extra: &[(&str, Value)]) -> Message {
        let mut app = ApplicationProperties::new();
        app.insert("operation", "put-token");
        app.insert("type", SAS_TOKEN_TYPE);
        app.insert("name", "sb://hub.example/hub");
        for (k, v) in extra {
            app.insert(*k, v.clone());
        }
        Message {
            properties: Some(Properties {
                message_id: Some(id),
                reply_to: Some("cbs".into()),
                ..Properties::default()
            }),
            application_properties: Some(app),
            body: Body::Value(Value::from("SharedAccessSignature sr=x&sig=y&se=1")),
            ..Message::default()
        }
    }

    #[test]
    fn requests_from_every_sdk_parse_and_responses_echo_the_id_type() {
        for id in [
            MessageId::Ulong(0),
            MessageId::Uuid([7; 16]),
            MessageId::String("0b5c3f2e-2f0a-4a4f-8a52-1c0f0f0f0f0f".into()),
        ] {
            let message = request(id.clone(), &[("expiration", Value::Timestamp(5))]);
            let put = PutToken::parse(&message).expect("a put-token");
            assert!(put.is_sas());
            assert_eq!(put.name, "sb://hub.example/hub");
            assert_eq!(put.token, "SharedAccessSignature sr=x&sig=y&se=1");
            assert_eq!(put.expiration, Some(5));
            assert_eq!(put.reply_to.as_deref(), Some("cbs"));
            let response = put.response(200, "OK", None);
            let props = response.properties.as_ref().expect("properties");
            assert_eq!(props.correlation_id.as_ref(), Some(&id));
            let app = response.application_properties.as_ref().expect("app");
            assert_eq!(app.get("status-code"), Some(&Value::Int(200)));
            assert_eq!(app.get("status-description"), Some(&Value::from("OK")));
            assert_eq!(app.get("error-condition"), None);
        }
    }

    #[test]
    fn the_status_code_is_an_int_on_the_wire() {
        let response = response(Some(&MessageId::Ulong(3)), 200, "OK", None);
        let bytes = response.to_bytes().expect("encodable");
        let needle = [&b"\xa1\x0bstatus-code"[..], &[0x71, 0, 0, 0, 200]].concat();
        assert!(bytes.windows(needle.len()).any(|w| w == needle));
    }

    #[test]
    fn bad_requests_say_why() {
        let mut message = request(MessageId::Ulong(1), &[]);
        message.body = Body::data(&b"token"[..]);
        assert_eq!(PutToken::parse(&message), Err(CbsError::TokenNotAString));
        let message = request(
            MessageId::Ulong(1),
            &[("operation", Value::from("delete-token"))],
        );
        let err = PutToken::parse(&message).expect_err("not a put-token");
        assert_eq!(err.status_code(), 501);
        let message = request(MessageId::Ulong(1), &[("name", Value::Int(1))]);
        assert_eq!(
            PutToken::parse(&message),
            Err(CbsError::Property(PropertyError::NotAString("name")))
        );
        let message = Message::default();
        assert_eq!(
            PutToken::parse(&message),
            Err(CbsError::Property(PropertyError::Missing("operation")))
        );
    }
}
