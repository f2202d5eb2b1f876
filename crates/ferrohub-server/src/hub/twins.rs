//! Device and module twins (twins-methods-contract §1–§3): the service's reads and writes, the
//! device's `GET` and reported patches, and the desired notifications to connected devices.
//!
//! The twin lives in the registry beside its identity; its rules are `ferrohub-twin`'s. What the
//! hub adds:
//!
//! * the REST rendering's identity fields ([`Hub::twin_identity`]): the stored identity's, and
//!   `connectionState` / `lastActivityTime` from live presence, as the device API shows them,
//!   and `modelId` from what the identity announced when it last connected (kept in memory,
//!   like presence);
//! * writes that run to their end on a task of their own ([`Hub::update_twin`],
//!   [`Hub::report_twin`]): a caller that goes away (an HTTP client that hangs up) never leaves a
//!   stored change whose notification was not sent;
//! * the notification path ([`notify_desired_changes`]): every stored desired change becomes a
//!   [`DeviceCommand::DesiredPatch`] for the identity's live connection when it subscribed to
//!   desired patches. Nothing is queued for devices that are not connected (§1.5): they read the
//!   twin when they come back.

use std::sync::Arc;

use bytes::Bytes;
use ferrohub_registry::{IdentityTwin, TwinOwner};
use ferrohub_twin::{IfMatch, ReportedPatch, Twin, TwinIdentity, TwinUpdate, X509Thumbprint};

use super::{Hub, HubError};
use crate::connections::{DeviceCommand, Identity, Interests};

/// Whether a connection wants desired-property notifications.
pub(crate) fn wants_desired(i: Interests) -> bool {
    i.desired
}

impl Hub {
    /// The twin of `identity` with its identity, for the service.
    ///
    /// Errors: 404001 DeviceNotFound, 404010 ModuleNotFound.
    pub(crate) async fn twin(&self, identity: &Identity) -> Result<IdentityTwin, HubError> {
        Ok(self.registry.twin(&identity.0, identity.1.as_ref()).await?)
    }

    /// The twin of a connected identity, for its own `GET` (desired and reported only matter).
    pub(crate) async fn device_twin(&self, identity: &Identity) -> Result<Twin, HubError> {
        Ok(self
            .registry
            .twin_document(&identity.0, identity.1.as_ref())
            .await?)
    }

    /// A service write (`PATCH` or `PUT`, read into `update`) of `identity`'s twin if `if_match`
    /// names its ETag. The connected device hears of desired changes through
    /// [`notify_desired_changes`].
    ///
    /// Errors: 404001, 404010, 412001 PreconditionFailed, 400004 ArgumentInvalid (a section over
    /// its size).
    pub(crate) async fn update_twin(
        self: &Arc<Self>,
        identity: Identity,
        update: TwinUpdate,
        if_match: IfMatch,
    ) -> Result<IdentityTwin, HubError> {
        let hub = Arc::clone(self);
        let write = tokio::spawn(async move {
            let now = hub.now();
            hub.registry
                .update_twin(&identity.0, identity.1.as_ref(), &update, &if_match, now)
                .await
        });
        match write.await {
            Ok(result) => Ok(result?),
            Err(e) => Err(HubError::unavailable("The twin update", &e)),
        }
    }

    /// A reported-properties patch of `identity` (the body as the device sent it), applied if
    /// `expected_version` (when given) is the reported `$version`. Returns the new reported
    /// `$version`.
    ///
    /// Errors: 400004 (not a valid patch, a section over its size), 412001 (another reported
    /// version), 404001/404010 (the identity is gone).
    pub(crate) async fn report_twin(
        self: &Arc<Self>,
        identity: Identity,
        body: Bytes,
        expected_version: Option<u64>,
    ) -> Result<u64, HubError> {
        let patch = ReportedPatch::from_slice(&body)
            .map_err(|e| HubError::new(e.error_code(), e.to_string()))?;
        let hub = Arc::clone(self);
        let write = tokio::spawn(async move {
            let now = hub.now();
            hub.registry
                .report_twin(
                    &identity.0,
                    identity.1.as_ref(),
                    &patch,
                    expected_version,
                    now,
                )
                .await
        });
        match write.await {
            Ok(result) => {
                let version = result?;
                metrics::counter!("ferrohub_twin_reported_patches_total").increment(1);
                Ok(version)
            }
            Err(e) => Err(HubError::unavailable("The reported properties update", &e)),
        }
    }

    /// The identity's fields of a twin's REST rendering: the stored identity's, the live
    /// presence's `connectionState` and `lastActivityTime`, and the device's queue depth.
    pub(crate) async fn twin_identity(&self, owner: &TwinOwner) -> TwinIdentity {
        self.twin_identity_with(owner, true).await
    }

    /// [`Hub::twin_identity`], reading the device's queue depth only when `c2d_count` is set
    /// (a read of the queue store; `cloudToDeviceMessageCount` is 0 otherwise): a query that
    /// never looks at the count does not pay for it on every row it scans.
    pub(crate) async fn twin_identity_with(
        &self,
        owner: &TwinOwner,
        c2d_count: bool,
    ) -> TwinIdentity {
        let identity: Identity = (owner.device_id().clone(), owner.module_id().cloned());
        let presence = self.presence_of(&identity).await;
        self.twin_identity_from(owner, c2d_count, presence).await
    }

    /// [`Hub::twin_identity_with`], with the identity's presence read already (a query reads
    /// the presence of a whole batch of rows at once).
    pub(crate) async fn twin_identity_from(
        &self,
        owner: &TwinOwner,
        c2d_count: bool,
        presence: Option<crate::connections::Presence>,
    ) -> TwinIdentity {
        let identity: Identity = (owner.device_id().clone(), owner.module_id().cloned());
        let model_id = self.connections.model_id(&identity).unwrap_or_default();
        let connected = presence.is_some_and(|p| p.connected);
        let connection_state = if connected {
            "Connected"
        } else {
            "Disconnected"
        };
        match owner {
            TwinOwner::Device(d) => TwinIdentity {
                device_id: d.device_id.to_string(),
                module_id: None,
                device_etag: d.etag.to_string(),
                status: d.status.as_str().to_owned(),
                status_reason: d.status_reason.clone(),
                status_update_time: d.status_updated_time,
                connection_state: connection_state.to_owned(),
                last_activity_time: presence.map(|p| p.last_activity).or(d.last_activity_time),
                cloud_to_device_message_count: if c2d_count {
                    self.c2d_count(&d.device_id).await
                } else {
                    0
                },
                authentication_type: d.authentication.kind.as_str().to_owned(),
                x509_thumbprint: X509Thumbprint {
                    primary_thumbprint: d.authentication.x509_thumbprint.primary_thumbprint.clone(),
                    secondary_thumbprint: d
                        .authentication
                        .x509_thumbprint
                        .secondary_thumbprint
                        .clone(),
                },
                model_id,
                iot_edge: Some(d.iot_edge),
                device_scope: d.device_scope.clone(),
                parent_scopes: d.parent_scopes.clone(),
            },
            TwinOwner::Module(m) => TwinIdentity {
                device_id: m.device_id.to_string(),
                module_id: Some(m.module_id.to_string()),
                device_etag: m.etag.to_string(),
                // Modules have no status of their own; Azure's module twins say enabled.
                status: "enabled".to_owned(),
                status_reason: None,
                status_update_time: None,
                connection_state: connection_state.to_owned(),
                last_activity_time: presence.map(|p| p.last_activity).or(m.last_activity_time),
                cloud_to_device_message_count: 0,
                authentication_type: m.authentication.kind.as_str().to_owned(),
                x509_thumbprint: X509Thumbprint {
                    primary_thumbprint: m.authentication.x509_thumbprint.primary_thumbprint.clone(),
                    secondary_thumbprint: m
                        .authentication
                        .x509_thumbprint
                        .secondary_thumbprint
                        .clone(),
                },
                model_id,
                iot_edge: None,
                device_scope: None,
                parent_scopes: Vec::new(),
            },
        }
    }
}

impl Hub {
    /// The device's cloud-to-device queue depth as twins show it (0 when the queue store
    /// cannot say).
    pub(crate) async fn c2d_count(&self, device: &ferrohub_types::DeviceId) -> u64 {
        self.c2d.depth(device, self.now()).await.unwrap_or(0)
    }
}

/// Sends every stored desired change to the identity's live connection when it subscribed to
/// desired patches (§1.5: only connected, subscribed devices hear of it; the others read the
/// twin when they connect). Runs in the registry's listener, in the order the twin changed, so
/// one connection's notifications are queued in version order.
pub(crate) fn notify_desired_changes(hub: &Arc<Hub>) {
    let weak = Arc::downgrade(hub);
    hub.registry.on_desired_change(move |change| {
        let Some(hub) = weak.upgrade() else {
            return;
        };
        let identity: Identity = (change.device_id.clone(), change.module_id.clone());
        let version = change.patch.version();
        let body = change.patch.body();
        if hub.coordinator.is_clustered() && !hub.connections.is_live_here(&identity) {
            // The identity may be connected to another node: that node sends the patch.
            hub.coordinator
                .publish(crate::cluster::ClusterEvent::DesiredPatch {
                    device: change.device_id.to_string(),
                    module: change.module_id.as_ref().map(ToString::to_string),
                    version,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
        }
        deliver_desired(&hub, &identity, version, Bytes::from(body));
    });
}

/// Sends a desired-properties patch to `identity`'s connection on this node if it subscribed
/// to them. On a cluster node the patches pass in version order (see
/// [`super::desired_order`]): patches written through different nodes may arrive out of order.
pub(crate) fn deliver_desired(hub: &Arc<Hub>, identity: &Identity, version: u64, body: Bytes) {
    if !hub.coordinator.is_clustered() {
        send_desired(hub, identity, version, body);
        return;
    }
    let lock = || {
        hub.desired_order
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if !hub.connections.has_interest(identity, wants_desired) {
        lock().forget(identity);
        send_desired(hub, identity, version, body);
        return;
    }
    let offered = lock().offer(identity, version, body, std::time::Instant::now());
    for (version, body) in offered.send {
        send_desired(hub, identity, version, body);
    }
    if offered.held {
        let weak = Arc::downgrade(hub);
        let expire = async move {
            tokio::time::sleep(super::desired_order::HOLD).await;
            if let Some(hub) = weak.upgrade() {
                let expired = hub
                    .desired_order
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .expire(std::time::Instant::now());
                for (identity, patches) in expired {
                    for (version, body) in patches {
                        send_desired(&hub, &identity, version, body);
                    }
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(expire);
            }
            Err(_) => tracing::warn!("no runtime to send a held desired patch from"),
        }
    }
}

fn send_desired(hub: &Hub, identity: &Identity, version: u64, body: Bytes) {
    let command = DeviceCommand::DesiredPatch { version, body };
    match hub
        .connections
        .send_command(identity, wants_desired, command)
    {
        Ok(()) => metrics::counter!("ferrohub_twin_desired_notifications_total").increment(1),
        // Subscribed, but so far behind that its queue is full: a notification left out
        // would leave the device's copy wrong for good, so the connection is closed and the
        // device reads the twin when it reconnects.
        Err(_) if hub.connections.has_interest(identity, wants_desired) => {
            tracing::warn!(
                device = %identity.0,
                module = ?identity.1,
                "a device fell behind its desired notifications; closing its connection"
            );
            hub.connections.close(
                identity,
                "the device fell behind its desired-property notifications",
            );
        }
        Err(_) => tracing::debug!(
            device = %identity.0,
            module = ?identity.1,
            version,
            "desired change not sent: the identity is not connected and subscribed (or its queue is full)"
        ),
    }
}

/// A twin request of a device (MQTT topic or AMQP twin link), waiting its turn.
pub(crate) enum TwinRequest {
    /// `$iothub/twin/GET/?$rid=…`.
    Get { rid: String },
    /// `$iothub/twin/PATCH/properties/reported/?$rid=…[&$version=…]`.
    Patch {
        rid: String,
        version: Option<u64>,
        body: Bytes,
    },
}

/// The answer to a twin request, to publish on its response topic or twin link.
pub(crate) struct TwinReply {
    pub(crate) rid: String,
    pub(crate) status: u16,
    /// The new reported `$version`, on a `204`.
    pub(crate) version: Option<u64>,
    pub(crate) body: Bytes,
}

impl TwinReply {
    /// An error status with Azure's JSON error body. A server error's cause is logged, not
    /// shown.
    pub(crate) fn error(rid: String, e: &HubError, now: chrono::DateTime<chrono::Utc>) -> Self {
        let tracking_id = format!(
            "{}-TimeStamp:{}",
            crate::random_hex(16),
            now.format("%m/%d/%Y %H:%M:%S")
        );
        let message = if e.is_server_error() {
            tracing::error!(tracking_id = %tracking_id, error = %e, "a twin request failed");
            "The hub failed to handle the request; its log has the cause under this tracking id."
        } else {
            e.message.as_str()
        };
        TwinReply {
            rid,
            status: e.code.http_status(),
            version: None,
            body: Bytes::from(ferrohub_twin::device_error_body(
                e.code,
                message,
                &tracking_id,
                now,
            )),
        }
    }
}

/// Carries out one twin request of `identity`.
pub(crate) async fn serve_twin_request(
    hub: Arc<Hub>,
    identity: Identity,
    request: TwinRequest,
) -> TwinReply {
    match request {
        TwinRequest::Get { rid } => match hub.device_twin(&identity).await {
            Ok(twin) => TwinReply {
                rid,
                status: 200,
                version: None,
                body: Bytes::from(twin.device_view().body()),
            },
            Err(e) => TwinReply::error(rid, &e, hub.now()),
        },
        TwinRequest::Patch { rid, version, body } => {
            match hub.report_twin(identity, body, version).await {
                Ok(v) => TwinReply {
                    rid,
                    status: 204,
                    version: Some(v),
                    body: Bytes::new(),
                },
                Err(e) => TwinReply::error(rid, &e, hub.now()),
            }
        }
    }
}
