//! Direct methods (azure-contract §4.11): a service call waits for the device's answer.
//!
//! [`Hub::invoke_method`] finds the identity's live connection that subscribed to methods
//! (waiting up to the call's connect timeout for one), queues the request on it under a fresh
//! request id, and waits up to the response timeout for [`Hub::method_response`] with the same
//! id. The driver of whichever protocol the device uses carries the request and reports the
//! answer. Requests whose connection goes away fail at once as not online.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use ferrohub_types::ErrorCode;
use tokio::sync::oneshot;

use super::{Hub, HubError};
use crate::connections::{DeviceCommand, Identity, Interests};

/// A direct method call as the service made it, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MethodCall {
    /// The method's name.
    pub(crate) name: String,
    /// The request body sent to the device: JSON (`null` for none).
    pub(crate) payload: Bytes,
    /// How long to wait for the device's answer.
    pub(crate) response_timeout: Duration,
    /// How long to wait for the device to connect and subscribe to methods (0: it must be
    /// already).
    pub(crate) connect_timeout: Duration,
}

/// The device's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MethodResult {
    /// The status the device chose.
    pub(crate) status: i32,
    /// The device's response body, as sent (JSON, or empty).
    pub(crate) payload: Bytes,
}

/// Calls waiting for their answer, by identity and request id (a random UUID: AMQP devices
/// carry it as a `uuid`-typed correlation id).
#[derive(Default)]
pub(crate) struct PendingMethods {
    waiting: Mutex<HashMap<(Identity, String), oneshot::Sender<MethodResult>>>,
}

impl PendingMethods {
    fn insert(&self, identity: &Identity) -> (String, oneshot::Receiver<MethodResult>) {
        let rid = crate::random_uuid();
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.insert((identity.clone(), rid.clone()), tx);
        }
        (rid, rx)
    }

    fn remove(&self, identity: &Identity, rid: &str) -> Option<oneshot::Sender<MethodResult>> {
        self.waiting
            .lock()
            .ok()
            .and_then(|mut w| w.remove(&(identity.clone(), rid.to_owned())))
    }
}

fn wants_methods(i: Interests) -> bool {
    i.methods
}

/// 404103 DeviceNotOnline, as the real hub words it.
fn not_online(connect_timeout: Duration) -> HubError {
    let message = if connect_timeout.is_zero() {
        "The operation failed because the requested device isn't online or hasn't registered the direct method callback. To learn more, see https://aka.ms/iothub404103"
    } else {
        "Timed out waiting for device to connect."
    };
    HubError::new(ErrorCode::DeviceNotOnline, message)
}

impl Hub {
    /// Invokes a direct method on `identity` and waits for its answer.
    ///
    /// Errors: 404103 when no connection of the identity subscribed to methods within the
    /// connect timeout (or it went away before answering), 504101 when the device did not
    /// answer within the response timeout. The caller has checked that the identity exists.
    pub(crate) async fn invoke_method(
        &self,
        identity: &Identity,
        call: MethodCall,
    ) -> Result<MethodResult, HubError> {
        if !self.connections.has_interest(identity, wants_methods) {
            let deadline = tokio::time::Instant::now() + call.connect_timeout;
            if call.connect_timeout.is_zero()
                || !self
                    .connections
                    .wait_for_interest(identity, wants_methods, deadline)
                    .await
            {
                return Err(not_online(call.connect_timeout));
            }
        }
        let (rid, answer) = self.methods.insert(identity);
        let command = DeviceCommand::Method {
            rid: rid.clone(),
            name: call.name,
            payload: call.payload,
        };
        if self
            .connections
            .send_command(identity, wants_methods, command)
            .is_err()
        {
            self.methods.remove(identity, &rid);
            return Err(not_online(call.connect_timeout));
        }
        metrics::counter!("ferrohub_methods_invoked_total").increment(1);
        match tokio::time::timeout(call.response_timeout, answer).await {
            Ok(Ok(result)) => Ok(result),
            // The connection ended (or dropped the request) before answering.
            Ok(Err(_)) => Err(not_online(call.connect_timeout)),
            Err(_) => {
                self.methods.remove(identity, &rid);
                Err(HubError::new(
                    ErrorCode::GatewayTimeout,
                    "Timed out waiting for the response from device.",
                ))
            }
        }
    }

    /// The device's answer to request `rid`; answers for unknown or expired requests are
    /// dropped.
    pub(crate) fn method_response(&self, identity: &Identity, rid: &str, result: MethodResult) {
        match self.methods.remove(identity, rid) {
            Some(waiting) => {
                let _ = waiting.send(result);
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
