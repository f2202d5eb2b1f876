//! Cloud-to-device messaging as every protocol uses it: the service sends
//! ([`Hub::send_c2d`]), and a connected device's driver hands messages out and settles them
//! through a [`C2dDelivery`].
//!
//! The queue rules (locks, delivery counts, expiry, feedback) are `ferrohub-c2d`'s; this is the
//! part shared by MQTT and AMQP that is not protocol: how many messages a connection holds at
//! once, completing acknowledged ones together off the connection's path, and giving back what
//! the device never acknowledged when the connection ends.

use std::collections::HashSet;
use std::sync::Arc;

use ferrohub_c2d::{OutgoingMessage, QueuedMessage};
use ferrohub_types::DeviceId;

use super::{Hub, HubError};

impl Hub {
    /// Sends `message` to `device`'s queue and wakes its connection, if any. Returns the
    /// message as queued (with its sequence number and expiry).
    ///
    /// Errors: 404001 for an unknown device, 403004 when its queue is full, 503 when the store
    /// fails.
    pub async fn send_c2d(
        self: &Arc<Self>,
        device: &DeviceId,
        message: OutgoingMessage,
    ) -> Result<QueuedMessage, HubError> {
        let identity = self
            .identity_current(device, None)
            .await
            .ok_or_else(|| HubError::device_not_found(device))?;
        // On its own task: a send may carry other sends to the same device with it (see
        // `C2dQueues::send`), so it must finish even if its caller goes away.
        let hub = Arc::clone(self);
        let id = device.clone();
        let queued = tokio::spawn(async move {
            let now = hub.now();
            hub.c2d
                .send(&id, &identity.generation_id, message, now)
                .await
        })
        .await
        .map_err(|e| HubError::unavailable("Sending a cloud-to-device message", &e))??;
        self.connections.notify_c2d(device);
        metrics::counter!("ferrohub_c2d_sent_total").increment(1);
        Ok(queued)
    }
}

/// Cloud-to-device delivery to one connected device, for any protocol.
///
/// The driver asks for messages when the device can take more ([`C2dDelivery::take`]), maps
/// them to its own delivery ids, and reports each outcome by lock token. Completions are
/// gathered and written together ([`C2dDelivery::flush`]); whatever is still out when the
/// connection ends goes back to the queue ([`C2dDelivery::finish`]).
#[derive(Debug)]
pub(crate) struct C2dDelivery {
    device: DeviceId,
    max_in_flight: usize,
    /// Lock tokens handed to the device and not settled yet.
    in_flight: HashSet<String>,
    /// Lock tokens the device acknowledged, to complete together.
    completed: Vec<String>,
}

impl C2dDelivery {
    /// Delivery to `device`, at most `max_in_flight` messages unsettled at a time.
    pub(crate) fn new(device: DeviceId, max_in_flight: usize) -> Self {
        C2dDelivery {
            device,
            max_in_flight,
            in_flight: HashSet::new(),
            completed: Vec::new(),
        }
    }

    /// How many more messages the device may hold now.
    pub(crate) fn room(&self) -> usize {
        self.max_in_flight.saturating_sub(self.in_flight.len())
    }

    /// Locks and returns up to `limit` (and at most [`C2dDelivery::room`]) waiting messages,
    /// oldest first. Every returned message has a lock token.
    pub(crate) async fn take(
        &mut self,
        hub: &Hub,
        limit: usize,
    ) -> Result<Vec<QueuedMessage>, HubError> {
        let want = limit.min(self.room());
        if want == 0 {
            return Ok(Vec::new());
        }
        let batch = hub.c2d.receive_many(&self.device, want, hub.now()).await?;
        let mut taken = Vec::with_capacity(batch.len());
        for msg in batch {
            if let Some(lock) = &msg.lock_token {
                self.in_flight.insert(lock.clone());
                taken.push(msg);
            }
        }
        Ok(taken)
    }

    /// Counts a message locked elsewhere (a read on a task of its own) as handed to the device.
    pub(crate) fn adopt(&mut self, lock: &str) {
        self.in_flight.insert(lock.to_owned());
    }

    /// Stops counting the message under `lock` as handed out, for a settlement the caller
    /// carries out itself (on a task of its own); whether it was.
    pub(crate) fn settled(&mut self, lock: &str) -> bool {
        self.in_flight.remove(lock)
    }

    /// The device acknowledged the message under `lock` (MQTT PUBACK, AMQP accepted): it is
    /// completed with the others at the next [`C2dDelivery::flush`].
    pub(crate) fn acknowledged(&mut self, lock: &str) {
        if self.in_flight.remove(lock) {
            self.completed.push(lock.to_owned());
        }
    }

    /// Whether acknowledged messages wait to be completed.
    pub(crate) fn has_completions(&self) -> bool {
        !self.completed.is_empty()
    }

    /// Completes the acknowledged messages in one store change, on a task of its own: the
    /// connection goes on meanwhile (the messages stay locked, so they are not handed out
    /// again), and a dropped connection does not cancel it.
    pub(crate) fn flush(&mut self, hub: &Arc<Hub>) {
        if self.completed.is_empty() {
            return;
        }
        let locks = std::mem::take(&mut self.completed);
        let hub = Arc::clone(hub);
        let device = self.device.clone();
        tokio::spawn(async move {
            match hub.c2d.complete_many(&device, &locks, hub.now()).await {
                Ok(outcomes) => {
                    for e in outcomes.into_iter().filter_map(Result::err) {
                        tracing::info!(%device, error = %e, "completing a delivered C2D message failed");
                    }
                }
                Err(e) => {
                    tracing::warn!(%device, error = %e, "completing delivered C2D messages failed");
                }
            }
        });
    }

    /// The device abandoned the message under `lock` (AMQP released or modified): it goes back
    /// to the queue with its delivery count raised.
    #[allow(dead_code, reason = "MQTT has no abandon; AMQP devices use it")]
    pub(crate) async fn abandon(&mut self, hub: &Hub, lock: &str) -> Result<(), HubError> {
        if !self.in_flight.remove(lock) {
            return Ok(());
        }
        hub.c2d.abandon(&self.device, lock, hub.now()).await?;
        hub.connections.notify_c2d(&self.device);
        Ok(())
    }

    /// The device rejected the message under `lock` (AMQP rejected): it is dead-lettered.
    pub(crate) async fn reject(&mut self, hub: &Hub, lock: &str) -> Result<(), HubError> {
        if !self.in_flight.remove(lock) {
            return Ok(());
        }
        hub.c2d.reject(&self.device, lock, hub.now()).await?;
        Ok(())
    }

    /// The message under `lock` was not sent after all (the connection could not take it): it
    /// goes back to the queue uncounted.
    pub(crate) async fn unsent(&mut self, hub: &Hub, lock: &str) {
        if self.in_flight.remove(lock) {
            let _ = hub.c2d.release(&self.device, lock, hub.now()).await;
        }
    }

    /// Ends delivery with the connection: completes what was acknowledged, and gives back the
    /// messages the device never acknowledged, for its next connection (which may already be
    /// waiting for them).
    pub(crate) async fn finish(mut self, hub: &Arc<Hub>) {
        self.flush(hub);
        if self.in_flight.is_empty() {
            return;
        }
        for lock in &self.in_flight {
            let _ = hub.c2d.release(&self.device, lock, hub.now()).await;
        }
        hub.connections.notify_c2d(&self.device);
    }
}
