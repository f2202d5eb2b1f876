//! What a cluster node does with what the other nodes tell it (see [`crate::cluster`]): close
//! a connection that a newer one on another node replaced, refresh identities changed through
//! another node (the registry's listeners then close revoked connections), wake a connection
//! for a cloud-to-device message queued through another node, send desired-property patches
//! written through another node, and run direct method calls for the connections it holds.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use ferrohub_types::{DeviceId, ModuleId};

use super::Hub;
use crate::cluster::{BoxFuture, ClusterEvent, ClusterHandler, MethodReply, MethodRequest};
use crate::connections::Identity;

struct Handler {
    hub: Weak<Hub>,
}

/// Hands what other nodes tell to `hub` from now on.
pub(crate) fn attach_to_cluster(hub: &Arc<Hub>) {
    hub.coordinator.attach(Arc::new(Handler {
        hub: Arc::downgrade(hub),
    }));
}

fn identity(device: &str, module: Option<&str>) -> Option<Identity> {
    let d = DeviceId::new(device.to_owned()).ok()?;
    let m = match module {
        Some(m) => Some(ModuleId::new(m.to_owned()).ok()?),
        None => None,
    };
    Some((d, m))
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_else(Utc::now)
}

impl ClusterHandler for Handler {
    fn on_event(&self, event: ClusterEvent) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(hub) = self.hub.upgrade() else {
                return;
            };
            match event {
                ClusterEvent::Connected {
                    node,
                    device,
                    module,
                    at_ms,
                } => {
                    if node == hub.node() {
                        return;
                    }
                    if let Some(id) = identity(&device, module.as_deref()) {
                        hub.connections
                            .connected_elsewhere(id, &node, hub.node(), time(at_ms));
                    }
                }
                ClusterEvent::Disconnected {
                    node,
                    device,
                    module,
                    at_ms,
                } => {
                    if node == hub.node() {
                        return;
                    }
                    if let Some(id) = identity(&device, module.as_deref()) {
                        hub.connections
                            .disconnected_elsewhere(&id, &node, time(at_ms));
                    }
                }
                ClusterEvent::IdentityChanged { device } => {
                    let Ok(d) = DeviceId::new(device) else {
                        return;
                    };
                    if let Err(e) = hub.registry.refresh(&d).await {
                        tracing::warn!(device = %d, error = %e, "refreshing an identity changed elsewhere failed");
                    }
                }
                ClusterEvent::Resync => {
                    if let Err(e) = hub.registry.refresh_all().await {
                        tracing::warn!(error = %e, "re-reading the identities failed");
                    }
                    // Wake-ups may have been missed too: every connection looks at its queue.
                    hub.connections.notify_all_c2d();
                }
                ClusterEvent::GroupsChanged => hub.groups.refresh().await,
                ClusterEvent::C2dQueued { device } => {
                    if let Ok(d) = DeviceId::new(device) {
                        hub.connections.notify_c2d(&d);
                    }
                }
                ClusterEvent::DesiredPatch {
                    device,
                    module,
                    version,
                    body,
                } => {
                    if let Some(id) = identity(&device, module.as_deref()) {
                        super::twins::deliver_desired(&hub, &id, version, Bytes::from(body));
                    }
                }
                ClusterEvent::ReceiverOwner {
                    node,
                    group,
                    partition,
                    epoch,
                } => {
                    if node != hub.node() {
                        hub.readers.owner_elsewhere(&node, &group, partition, epoch);
                    }
                }
                ClusterEvent::ReceiverOwnerGone {
                    node,
                    group,
                    partition,
                    epoch,
                } => {
                    if node != hub.node() {
                        hub.readers
                            .owner_gone_elsewhere(&node, &group, partition, epoch);
                    }
                }
            }
        })
    }

    fn on_method(&self, request: MethodRequest) -> BoxFuture<'_, Option<MethodReply>> {
        Box::pin(async move {
            let hub = self.hub.upgrade()?;
            hub.invoke_for_node(request).await
        })
    }
}
