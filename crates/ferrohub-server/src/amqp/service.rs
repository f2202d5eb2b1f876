//! The service endpoint (amqp-contract §2): C2D send on `/messages/devicebound`, feedback on
//! `/messages/serviceBound/feedback`, file notifications on
//! `/messages/serviceBound/filenotifications`. Every link needs a policy token with
//! ServiceConnect.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use ferrohub_amqp::connection::{AttachReply, DeliveryId, LinkId};
use ferrohub_amqp::message::Message;
use ferrohub_amqp::performative::{DeliveryState, ReceiverSettleMode, SenderSettleMode};
use ferrohub_types::{DeviceId, ErrorCode};

use super::auth::{Authorization, Need};
use super::{Done, Driver, Link, convert};
use crate::hub::{Hub, HubError};

/// The largest C2D message body Azure takes (azure-contract §7).
const MAX_C2D_BYTES: usize = 64 * 1024;

/// Feedback batches one link holds unsettled at once, whatever credit it grants.
const MAX_FEEDBACK_IN_FLIGHT: usize = 4;

/// A feedback receiver.
#[derive(Debug)]
pub(super) struct FeedbackLink {
    pub(super) auth: Authorization,
    /// Batches sent and not settled: delivery → lock token.
    pub(super) outstanding: HashMap<DeliveryId, String>,
    /// Whether a read of the feedback queue is under way.
    reading: bool,
    /// Whether the last read found nothing (then the link waits for the poll).
    idle: bool,
}

/// Settles a feedback batch by the service's outcome: accepted (and rejected) complete it,
/// released or modified abandon it (its records come back), nothing leaves it to its lock.
pub(super) fn settle_feedback(hub: &Arc<Hub>, lock: String, state: Option<DeliveryState>) {
    let hub = hub.clone();
    tokio::spawn(async move {
        let now = hub.now();
        let result = match state {
            Some(DeliveryState::Accepted | DeliveryState::Rejected { .. }) => {
                hub.c2d.complete_feedback(&lock, now).await
            }
            Some(DeliveryState::Released | DeliveryState::Modified { .. }) => {
                hub.c2d.abandon_feedback(&lock, now).await
            }
            _ => return,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "settling a feedback batch failed");
        }
    });
}

impl Driver {
    fn authorize_service(&mut self, link: LinkId, path: &str) -> Option<Authorization> {
        match self.tokens.authorize(&self.hub, &Need::Service(path)) {
            Ok((auth, _)) => Some(auth),
            Err(e) => {
                self.refuse_with(link, &e);
                None
            }
        }
    }

    pub(super) fn attach_service_c2d(&mut self, link: LinkId) {
        let Some(auth) = self.authorize_service(link, "/messages/devicebound") else {
            return;
        };
        self.conn.accept_attach(
            link,
            AttachReply {
                rcv_settle_mode: ReceiverSettleMode::First,
                max_message_size: Some(MAX_C2D_BYTES as u64 + 16 * 1024),
                ..AttachReply::default()
            },
        );
        self.links.insert(link, Link::ServiceC2d(auth));
    }

    pub(super) fn attach_feedback(&mut self, link: LinkId) {
        let Some(auth) = self.authorize_service(link, "/messages/serviceBound/feedback") else {
            return;
        };
        self.conn.accept_attach(
            link,
            AttachReply {
                snd_settle_mode: Some(SenderSettleMode::Unsettled),
                ..AttachReply::default()
            },
        );
        self.links.insert(
            link,
            Link::Feedback(FeedbackLink {
                auth,
                outstanding: HashMap::new(),
                reading: false,
                idle: false,
            }),
        );
        self.pump_feedback_link(link);
    }

    pub(super) fn attach_file_notifications(&mut self, link: LinkId) {
        let Some(auth) = self.authorize_service(link, "/messages/serviceBound/filenotifications")
        else {
            return;
        };
        self.conn.accept_attach(
            link,
            AttachReply {
                snd_settle_mode: Some(SenderSettleMode::Unsettled),
                ..AttachReply::default()
            },
        );
        self.links.insert(link, Link::FileNotifications(auth));
    }

    /// A C2D message from the service: queued for its device, then settled with the outcome
    /// (amqp-contract §2.4).
    pub(super) fn service_c2d(&mut self, link: LinkId, delivery: DeliveryId, payload: Bytes) {
        let parsed = Message::decode(payload)
            .map_err(|e| HubError::invalid(format!("the message does not decode: {e}")))
            .and_then(|m| convert::service_c2d(&m));
        let (device, message) = match parsed {
            Ok(x) => x,
            Err(e) => return self.settle_error(link, delivery, &e),
        };
        if message.body.len() > MAX_C2D_BYTES {
            let e = HubError::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "The message body is {} bytes; the limit is {MAX_C2D_BYTES}.",
                    message.body.len()
                ),
            );
            return self.settle_error(link, delivery, &e);
        }
        let device = match DeviceId::new(device) {
            Ok(d) => d,
            Err(e) => return self.settle_error(link, delivery, &HubError::invalid(e.to_string())),
        };
        let hub = self.hub.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let result = hub.send_c2d(&device, message).await.map(|_| ());
            let _ = done.send(Done::C2dSent {
                link,
                delivery,
                result,
            });
        });
    }

    pub(super) fn settle_error(&mut self, link: LinkId, delivery: DeliveryId, e: &HubError) {
        tracing::info!(peer = %self.peer, %link, error = %e, "AMQP message refused");
        let error = convert::amqp_error(e, self.hub.now());
        self.conn.settle(
            link,
            delivery,
            DeliveryState::Rejected { error: Some(error) },
        );
    }

    /// Reads the next feedback batch for `link` if it has credit and room.
    pub(super) fn pump_feedback_link(&mut self, link: LinkId) {
        let credit = self.conn.credit(link);
        let Some(Link::Feedback(f)) = self.links.get_mut(&link) else {
            return;
        };
        if f.reading || credit == 0 || f.outstanding.len() >= MAX_FEEDBACK_IN_FLIGHT {
            return;
        }
        f.reading = true;
        let hub = self.hub.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let batch = match hub.c2d.receive_feedback(hub.now()).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "reading feedback failed");
                    None
                }
            };
            let _ = done.send(Done::Feedback { link, batch });
        });
    }

    /// Polls every idle feedback link (nothing tells the hub when feedback appears).
    pub(super) fn pump_feedback(&mut self) {
        let idle: Vec<LinkId> = self
            .links
            .iter_mut()
            .filter_map(|(id, l)| match l {
                Link::Feedback(f) if f.idle => {
                    f.idle = false;
                    Some(*id)
                }
                _ => None,
            })
            .collect();
        for link in idle {
            self.pump_feedback_link(link);
        }
    }

    /// Whether some feedback link waits for the poll.
    pub(super) fn feedback_waiting(&self) -> bool {
        self.links
            .values()
            .any(|l| matches!(l, Link::Feedback(f) if f.idle))
    }

    /// A feedback batch read for `link`: sent unsettled, its outcome settling the batch.
    pub(super) fn feedback_read(
        &mut self,
        link: LinkId,
        batch: Option<ferrohub_c2d::FeedbackBatch>,
    ) {
        let now = self.hub.now();
        let hub_name = self.hub.hub_name().to_owned();
        let Some(Link::Feedback(f)) = self.links.get_mut(&link) else {
            // The link went away meanwhile: the batch goes back.
            if let Some(b) = batch {
                settle_feedback(&self.hub, b.lock_token, Some(DeliveryState::Released));
            }
            return;
        };
        f.reading = false;
        let Some(batch) = batch else {
            f.idle = true;
            return;
        };
        let message = convert::feedback(&batch, &hub_name, now);
        // The C# SDK reads the delivery tag as the batch's lock token (a GUID).
        let tag = convert::uuid_bytes(&batch.lock_token)
            .map(|u| Bytes::copy_from_slice(&u))
            .unwrap_or_else(|| Bytes::copy_from_slice(batch.lock_token.as_bytes()));
        let sent = message
            .to_bytes()
            .ok()
            .and_then(|payload| self.conn.send(link, tag, false, 0, payload).ok());
        match (sent, self.links.get_mut(&link)) {
            (Some(delivery), Some(Link::Feedback(f))) => {
                f.outstanding.insert(delivery, batch.lock_token);
                self.pump_feedback_link(link);
            }
            _ => settle_feedback(&self.hub, batch.lock_token, Some(DeliveryState::Released)),
        }
    }
}
