//! Direct methods (twins-methods-contract §4): a service call waits for the device's answer.
//!
//! [`Hub::invoke_method`] finds the identity's live connection that subscribed to methods
//! (waiting up to the call's connect timeout for one), queues the request on it under a fresh
//! request id, and waits up to the response timeout for [`Hub::method_response`] with the same
//! id. The driver of whichever protocol the device uses carries the request and reports the
//! answer. Requests whose connection goes away fail at once as not online. The request and
//! result rules (names, timeouts, payloads, the device's JSON) are `ferrohub-twin`'s.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use ferrohub_twin::methods::{
    CONNECT_TIMEOUT_MESSAGE, DEVICE_NOT_ONLINE_MESSAGE, RESPONSE_TIMEOUT_MESSAGE,
};
use ferrohub_twin::{CloudToDeviceMethod, MethodResult};
use ferrohub_types::ErrorCode;
use tokio::sync::oneshot;

use super::{Hub, HubError};
use crate::cluster::{MethodReply, MethodRequest};
use crate::connections::{DeviceCommand, Identity, Interests};

/// A device's answer as its connection got it: the status from the topic and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceAnswer {
    /// The status the device chose.
    pub(crate) status: i32,
    /// The device's response body, as sent (JSON, or empty).
    pub(crate) body: Bytes,
}

/// Calls waiting for their answer, by identity and request id (a random UUID: AMQP devices
/// carry it as a `uuid`-typed correlation id).
#[derive(Default)]
pub(crate) struct PendingMethods {
    waiting: Mutex<HashMap<(Identity, String), oneshot::Sender<DeviceAnswer>>>,
}

impl PendingMethods {
    fn insert(&self, identity: &Identity) -> (String, oneshot::Receiver<DeviceAnswer>) {
        // Never empty, and nothing in it needs encoding in an MQTT topic.
        let rid = crate::random_uuid();
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.insert((identity.clone(), rid.clone()), tx);
        }
        (rid, rx)
    }

    fn remove(&self, identity: &Identity, rid: &str) -> Option<oneshot::Sender<DeviceAnswer>> {
        self.waiting
            .lock()
            .ok()
            .and_then(|mut w| w.remove(&(identity.clone(), rid.to_owned())))
    }
}

/// Whether a connection takes direct method requests.
pub(crate) fn wants_methods(i: Interests) -> bool {
    i.methods
}

/// 404103 DeviceNotOnline, worded as the real hub words it for `call`'s connect timeout.
fn not_online(call: &CloudToDeviceMethod) -> HubError {
    let message = if call.connect_timeout().is_zero() {
        DEVICE_NOT_ONLINE_MESSAGE
    } else {
        CONNECT_TIMEOUT_MESSAGE
    };
    HubError::new(ErrorCode::DeviceNotOnline, message)
}

impl Hub {
    /// Invokes a direct method on `identity` and waits for its answer: the device's status and
    /// JSON payload.
    ///
    /// Errors: 404103 when no connection of the identity subscribed to methods within the
    /// connect timeout (or it went away before answering), 504101 when the device did not
    /// answer within the response timeout, 400004 when its answer is not JSON. The caller has
    /// checked that the identity exists.
    pub(crate) async fn invoke_method(
        &self,
        identity: &Identity,
        call: &CloudToDeviceMethod,
    ) -> Result<MethodResult, HubError> {
        let answer = if self.coordinator.is_clustered()
            && !self.connections.has_interest(identity, wants_methods)
        {
            self.invoke_elsewhere(identity, call).await?
        } else {
            self.invoke_here(identity, call).await?
        };
        MethodResult::from_device_response(answer.status, &answer.body)
            .map_err(|e| HubError::new(e.error_code(), e.to_string()))
    }

    /// A cluster node without the identity's connection: the node that holds it runs the call.
    async fn invoke_elsewhere(
        &self,
        identity: &Identity,
        call: &CloudToDeviceMethod,
    ) -> Result<DeviceAnswer, HubError> {
        // Connected to no node as far as this one heard, and the call may not wait for a
        // connection: 404103 at once, as one hub answers, not after the call's timeouts.
        if call.connect_timeout().is_zero()
            && !self
                .connections
                .presence(identity)
                .is_some_and(|p| p.connected)
        {
            return Err(not_online(call));
        }
        let request = MethodRequest {
            device: identity.0.to_string(),
            module: identity.1.as_ref().map(ToString::to_string),
            method_name: call.method_name().to_string(),
            payload: String::from_utf8_lossy(&call.device_body()).into_owned(),
            connect_timeout_secs: call.connect_timeout().as_secs(),
            response_timeout_secs: call.response_timeout().as_secs(),
        };
        match self.coordinator.call_method(request).await {
            Some(MethodReply::Answer { status, payload }) => Ok(DeviceAnswer {
                status,
                body: Bytes::from(payload),
            }),
            Some(MethodReply::Error { code, message }) => Err(HubError::new(
                ErrorCode::from_number(code).unwrap_or(ErrorCode::ServiceUnavailable),
                message,
            )),
            // No node holds it (or it connected here meanwhile).
            None if self.connections.has_interest(identity, wants_methods) => {
                self.invoke_here(identity, call).await
            }
            None => Err(not_online(call)),
        }
    }

    /// A call from another node for an identity connected here; `None` when it is not.
    pub(crate) async fn invoke_for_node(&self, request: MethodRequest) -> Option<MethodReply> {
        let device = ferrohub_types::DeviceId::new(request.device.clone()).ok()?;
        let module = match &request.module {
            Some(m) => Some(ferrohub_types::ModuleId::new(m.clone()).ok()?),
            None => None,
        };
        let identity: Identity = (device, module);
        if !self.connections.is_live_here(&identity) {
            return None;
        }
        let body = format!(
            r#"{{"methodName":{},"payload":{},"responseTimeoutInSeconds":{},"connectTimeoutInSeconds":{}}}"#,
            serde_json::Value::String(request.method_name.clone()),
            request.payload,
            request.response_timeout_secs,
            request.connect_timeout_secs,
        );
        let call = match CloudToDeviceMethod::from_slice(body.as_bytes()) {
            Ok(call) => call,
            Err(e) => {
                return Some(MethodReply::Error {
                    code: e.error_code().number(),
                    message: e.to_string(),
                });
            }
        };
        Some(match self.invoke_here(&identity, &call).await {
            Ok(answer) => MethodReply::Answer {
                status: answer.status,
                payload: String::from_utf8_lossy(&answer.body).into_owned(),
            },
            Err(e) => MethodReply::Error {
                code: e.code.number(),
                message: e.message,
            },
        })
    }

    /// Runs the call on this node's connection of `identity`, waiting for one as the call
    /// allows.
    async fn invoke_here(
        &self,
        identity: &Identity,
        call: &CloudToDeviceMethod,
    ) -> Result<DeviceAnswer, HubError> {
        if !self.connections.has_interest(identity, wants_methods) {
            let deadline = tokio::time::Instant::now() + call.connect_timeout();
            if call.connect_timeout().is_zero()
                || !self
                    .connections
                    .wait_for_interest(identity, wants_methods, deadline)
                    .await
            {
                return Err(not_online(call));
            }
        }
        let (rid, answer) = self.methods.insert(identity);
        let command = DeviceCommand::Method {
            rid: rid.clone(),
            name: call.method_name().clone(),
            payload: Bytes::from(call.device_body()),
        };
        if self
            .connections
            .send_command(identity, wants_methods, command)
            .is_err()
        {
            self.methods.remove(identity, &rid);
            return Err(not_online(call));
        }
        metrics::counter!("ferrohub_methods_invoked_total").increment(1);
        match tokio::time::timeout(call.response_timeout(), answer).await {
            Ok(Ok(answer)) => Ok(answer),
            // The connection ended (or dropped the request) before answering.
            Ok(Err(_)) => Err(not_online(call)),
            Err(_) => {
                self.methods.remove(identity, &rid);
                Err(HubError::new(
                    ErrorCode::GatewayTimeout,
                    RESPONSE_TIMEOUT_MESSAGE,
                ))
            }
        }
    }

    /// The device's answer to request `rid`; answers for unknown or expired requests are
    /// dropped.
    pub(crate) fn method_response(&self, identity: &Identity, rid: &str, answer: DeviceAnswer) {
        match self.methods.remove(identity, rid) {
            Some(waiting) => {
                let _ = waiting.send(answer);
            }
            None => tracing::debug!(?identity, rid, "a method response nobody waits for"),
        }
    }

    /// Fails the calls waiting on `identity`'s connection `rids` (the connection ended).
    pub(crate) fn methods_abandoned(
        &self,
        identity: &Identity,
        rids: impl IntoIterator<Item = String>,
    ) {
        for rid in rids {
            // Dropping the sender fails the waiting call as not online.
            drop(self.methods.remove(identity, &rid));
        }
    }
}
