//! The connected phase, after CONNACK 0: telemetry, subscriptions, keep-alive, acknowledgements.
//!
//! Every handler returns `Err(reason)` when the connection must close; the session then closes
//! it, so that no handler can emit anything after deciding to close.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::{Packet, PubAck, Publish, QoS, SubAck, UnsubAck};
use crate::session::connect::Identity;
use crate::session::inflight::{Outbound, TelemetryWindow};
use crate::session::subscriptions::Subscriptions;
use crate::session::{CloseReason, Outputs, SendPublishError, SessionEvent, TelemetryId, quoted};
use crate::topic::{TelemetryTopic, TelemetryTopicError, TopicFilter, TopicName};

/// State of an accepted connection.
#[derive(Debug)]
pub(crate) struct Connected {
    pub(crate) identity: Identity,
    /// Whether the CONNECT carried a will, to be published on any close but DISCONNECT.
    pub(crate) has_will: bool,
    idle_timeout: Duration,
    /// When the last packet arrived (or backpressure ended): the keep-alive counts from here.
    last_activity: Instant,
    subscriptions: Subscriptions,
    telemetry: TelemetryWindow,
    outbound: Outbound,
    /// The next [`TelemetryId`].
    next_telemetry_id: u64,
}

impl Connected {
    pub(crate) fn new(
        now: Instant,
        identity: Identity,
        has_will: bool,
        idle_timeout: Duration,
        subscriptions: Subscriptions,
        max_inflight_telemetry: usize,
    ) -> Self {
        Self {
            identity,
            has_will,
            idle_timeout,
            last_activity: now,
            subscriptions,
            telemetry: TelemetryWindow::new(max_inflight_telemetry),
            outbound: Outbound::default(),
            next_telemetry_id: 1,
        }
    }

    /// Handles one packet from the client. Any packet resets the keep-alive [MQTT-3.1.2-24].
    pub(crate) fn handle_packet(
        &mut self,
        now: Instant,
        packet: Packet,
        out: &mut Outputs,
    ) -> Result<(), CloseReason> {
        self.last_activity = self.last_activity.max(now);
        match packet {
            Packet::Publish(publish) => self.handle_publish(publish, out),
            Packet::PubAck(ack) => {
                if self.outbound.acknowledge(ack.pkid) {
                    out.events
                        .push_back(SessionEvent::Delivered { pkid: ack.pkid });
                }
                // A PUBACK for nothing in flight (say, for a message sent on an earlier
                // connection) is ignored, as brokers commonly do.
                Ok(())
            }
            Packet::Subscribe(subscribe) => {
                let (return_codes, changed) = self
                    .subscriptions
                    .subscribe(&self.identity, subscribe.filters);
                // Always answer: the SDKs wait for a SUBACK, whatever its codes
                // (real-clients §3.4).
                out.transmit.push_back(Packet::SubAck(SubAck {
                    pkid: subscribe.pkid,
                    return_codes,
                }));
                if changed {
                    self.subscriptions_changed(out);
                }
                Ok(())
            }
            Packet::Unsubscribe(unsubscribe) => {
                let changed = self.subscriptions.unsubscribe(&unsubscribe.filters);
                out.transmit.push_back(Packet::UnsubAck(UnsubAck {
                    pkid: unsubscribe.pkid,
                }));
                if changed {
                    self.subscriptions_changed(out);
                }
                Ok(())
            }
            Packet::PingReq => {
                out.transmit.push_back(Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect => Err(CloseReason::ClientDisconnect),
            Packet::Connect(_) => Err(CloseReason::ProtocolViolation(
                "second CONNECT [MQTT-3.1.0-2]".to_owned(),
            )),
            Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => {
                Err(CloseReason::ProtocolViolation(format!(
                    "{} but the hub does not use QoS 2 (azure-contract §4.5)",
                    packet.packet_type()
                )))
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Err(CloseReason::ProtocolViolation(format!(
                    "{} is sent only by a server",
                    packet.packet_type()
                )))
            }
        }
    }

    /// Closes the connection when the client has been silent for the idle timeout; not while
    /// reading is paused for backpressure.
    pub(crate) fn handle_timeout(&self, now: Instant) -> Result<(), CloseReason> {
        match self.deadline() {
            Some(deadline) if now >= deadline => Err(CloseReason::KeepAliveTimeout),
            _ => Ok(()),
        }
    }

    /// Marks a telemetry message durable and queues the PUBACKs that became due. Leaving
    /// backpressure restarts the keep-alive from `now`: the client may have been waiting on
    /// the hub all along.
    pub(crate) fn handle_telemetry_durable(
        &mut self,
        now: Instant,
        id: TelemetryId,
        out: &mut Outputs,
    ) {
        let was_full = self.telemetry.is_full();
        if !self.telemetry.mark_durable(id) {
            return;
        }
        while let Some(pkid) = self.telemetry.pop_durable() {
            out.transmit.push_back(Packet::PubAck(PubAck { pkid }));
        }
        if was_full && !self.telemetry.is_full() {
            self.last_activity = self.last_activity.max(now);
        }
    }

    /// Queues a PUBLISH to the client, at the lower of `qos` and the QoS granted to the matching
    /// subscription [MQTT-3.8.4-6], and at most QoS 1.
    pub(crate) fn send_publish(
        &mut self,
        topic: TopicName,
        qos: QoS,
        payload: Bytes,
        dup: bool,
        out: &mut Outputs,
    ) -> Result<Option<u16>, SendPublishError> {
        let granted = self
            .subscriptions
            .granted_qos(&topic)
            .ok_or(SendPublishError::NotSubscribed)?;
        let qos = qos.min(granted).min(QoS::AtLeastOnce);
        let pkid = match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce | QoS::ExactlyOnce => Some(
                self.outbound
                    .allocate()
                    .ok_or(SendPublishError::NoPacketId)?,
            ),
        };
        out.transmit.push_back(Packet::Publish(Publish {
            dup: dup && pkid.is_some(),
            qos,
            retain: false,
            topic,
            pkid,
            payload,
        }));
        Ok(pkid)
    }

    /// When the keep-alive expires; `None` while reading is paused or for an unrepresentable
    /// instant.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.telemetry.is_full() {
            return None;
        }
        self.last_activity.checked_add(self.idle_timeout)
    }

    /// Whether `id` still waits for durability.
    pub(crate) fn is_pending(&self, id: TelemetryId) -> bool {
        self.telemetry.is_pending(id)
    }

    /// Whether the driver should read more packets.
    pub(crate) fn wants_read(&self) -> bool {
        !self.telemetry.is_full()
    }

    pub(crate) fn subscriptions(&self) -> &[(TopicFilter, QoS)] {
        self.subscriptions.as_slice()
    }

    pub(crate) fn inflight_telemetry(&self) -> usize {
        self.telemetry.len()
    }

    pub(crate) fn outbound_in_flight(&self) -> usize {
        self.outbound.len()
    }

    /// Queues the current subscription set for the driver.
    pub(crate) fn subscriptions_changed(&self, out: &mut Outputs) {
        out.events.push_back(SessionEvent::SubscriptionsChanged {
            subscriptions: self.subscriptions.as_slice().to_vec(),
        });
    }

    /// A twin or method request: emitted for the server, and acknowledged at once, in order
    /// with the telemetry acknowledgements still due before it [MQTT-4.6.0-2].
    fn handle_request(&mut self, publish: Publish, pkid: Option<u16>, out: &mut Outputs) {
        if let Some(pkid) = pkid {
            if self.telemetry.contains_pkid(pkid) {
                // A redelivery while an earlier copy waits for its turn: one answer is enough.
                return;
            }
            let id = TelemetryId(self.next_telemetry_id);
            self.next_telemetry_id = self.next_telemetry_id.saturating_add(1);
            self.telemetry.push(id, pkid);
            self.telemetry.mark_durable(id);
            while let Some(pkid) = self.telemetry.pop_durable() {
                out.transmit.push_back(Packet::PubAck(PubAck { pkid }));
            }
        }
        out.events.push_back(SessionEvent::Request {
            topic: publish.topic,
            payload: publish.payload,
        });
    }

    /// A device publishes telemetry on its own topic at QoS 0 or 1; anything else closes the
    /// connection, as Azure does (azure-contract §4.5: "MQTT terminates the connection").
    fn handle_publish(&mut self, publish: Publish, out: &mut Outputs) -> Result<(), CloseReason> {
        let pkid = match (publish.qos, publish.pkid) {
            (QoS::AtMostOnce, _) => None,
            (QoS::AtLeastOnce, Some(pkid)) => Some(pkid),
            (QoS::ExactlyOnce, _) => {
                return Err(CloseReason::ProtocolViolation(
                    "QoS 2 PUBLISH (azure-contract §4.5)".to_owned(),
                ));
            }
            // The decoder never produces this.
            (QoS::AtLeastOnce, None) => {
                return Err(CloseReason::ProtocolViolation(
                    "QoS 1 PUBLISH without packet identifier".to_owned(),
                ));
            }
        };
        let topic = match TelemetryTopic::parse(publish.topic.as_str()) {
            Ok(topic) => topic,
            Err(TelemetryTopicError::NotTelemetry) if is_request(publish.topic.as_str()) => {
                self.handle_request(publish, pkid, out);
                return Ok(());
            }
            Err(TelemetryTopicError::NotTelemetry) => {
                return Err(CloseReason::ProtocolViolation(format!(
                    "PUBLISH to unsupported topic {}",
                    quoted(publish.topic.as_str())
                )));
            }
            Err(e) => {
                return Err(CloseReason::ProtocolViolation(format!(
                    "PUBLISH to {}: {e}",
                    quoted(publish.topic.as_str())
                )));
            }
        };
        if !self.identity.owns(&topic) {
            return Err(CloseReason::Unauthorized(format!(
                "{} published to {}",
                self.identity.describe(),
                quoted(publish.topic.as_str())
            )));
        }
        if let Some(pkid) = pkid
            && self.telemetry.contains_pkid(pkid)
        {
            // A redelivery of a message still waiting for durability: its PUBACK will come.
            return Ok(());
        }
        let id = TelemetryId(self.next_telemetry_id);
        self.next_telemetry_id = self.next_telemetry_id.saturating_add(1);
        if let Some(pkid) = pkid {
            self.telemetry.push(id, pkid);
        }
        out.events.push_back(SessionEvent::Telemetry {
            id,
            qos: publish.qos,
            retain: publish.retain,
            device_id: self.identity.device_id.clone(),
            module_id: self.identity.module_id.clone(),
            properties: topic.properties,
            payload: publish.payload,
        });
        Ok(())
    }
}

/// Whether `topic` is one of the requests a device sends on the hub's own topics: a twin GET, a
/// reported-properties patch, or a direct method's response (azure-contract §4.10, §4.11).
/// The identity is the connection's: these topics carry no device id.
fn is_request(topic: &str) -> bool {
    [
        "$iothub/twin/GET/",
        "$iothub/twin/PATCH/properties/reported/",
    ]
    .iter()
    .any(|prefix| {
        topic
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('?'))
    }) || topic
        .strip_prefix("$iothub/methods/res/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(status, rest)| {
            !status.is_empty()
                && status.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                && rest.starts_with('?')
        })
}
