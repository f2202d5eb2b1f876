//! The Event Hubs-compatible endpoint (amqp-contract §3): `$management` READs and partition
//! receivers, over the hub's event log.
//!
//! A receiver reads from where its filter says, sends one pre-settled transfer per event while
//! the client grants credit, and, once caught up, waits for the log to say that new events are
//! durable (no polling): a consumer at `@latest` sees an event as soon as the device that sent
//! it has its acknowledgement. Reads run on tasks of their own, at most one per receiver, never
//! more events than the credit: nothing is buffered for a consumer that stops reading.

use ferrohub_amqp::azure::address::{Address, Entity};
use ferrohub_amqp::azure::event::{self as ehevent, RuntimeMetric};
use ferrohub_amqp::azure::filter::{EventPosition, event_position};
use ferrohub_amqp::azure::management::{
    EventHubProperties, PartitionProperties, ReadRequest, ReadTarget,
};
use ferrohub_amqp::condition;
use ferrohub_amqp::connection::{AttachReply, LinkId};
use ferrohub_amqp::message::Message;
use ferrohub_amqp::performative::{Attach, SenderSettleMode};
use ferrohub_log::{PartitionInfo, Record, StartPosition};
use ferrohub_types::ErrorCode;

use super::auth::{self, Authorization, Need};
use super::{Done, Driver, Link, convert};
use crate::hub::{HubError, ReaderRefusal, ReaderTicket};

/// Most events one read takes (and so one burst of transfers).
const MAX_READ: usize = 300;

/// The largest event the endpoint sends (Event Hubs' limit).
const MAX_EVENT_BYTES: u64 = 1024 * 1024;

/// A partition receiver.
#[derive(Debug)]
pub(super) struct Reader {
    pub(super) auth: Authorization,
    pub(super) ticket: ReaderTicket,
    partition: u32,
    /// Where the next read starts.
    next: StartPosition,
    /// Whether a read is under way.
    reading: bool,
    /// Whether the last read reached the end of the partition.
    caught_up: bool,
    /// Whether the receiver asked for the runtime metric.
    runtime_metric: bool,
    /// Whether the client asked to drain while a read was under way: the events it brings
    /// are sent before the credit is given back.
    drain: bool,
}

/// What a read brought.
#[derive(Debug)]
pub(super) struct ReadBatch {
    records: Vec<Record>,
    /// How many were asked for.
    asked: usize,
    /// The partition's state, for the runtime metric.
    info: Option<PartitionInfo>,
}

fn not_found(what: String) -> HubError {
    HubError::new(ErrorCode::GenericNotFound, what)
}

impl Driver {
    /// The entity name a client used, if it names this hub's Event Hub.
    fn entity_name(&self, entity: &Entity) -> Option<String> {
        match entity {
            Entity::MessagesEvents => Some("messages/events".to_owned()),
            Entity::Named(n) if n.eq_ignore_ascii_case(self.hub.hub_name()) => Some(n.clone()),
            Entity::Named(_) => None,
        }
    }

    /// Attaches a partition receiver (amqp-contract §3.4, §3.7).
    pub(super) fn attach_event_hubs(&mut self, link: LinkId, attach: &Attach) {
        match self.event_hubs_reader(attach) {
            Ok((reader, displaced)) => {
                self.conn.accept_attach(
                    link,
                    AttachReply {
                        snd_settle_mode: Some(SenderSettleMode::Settled),
                        max_message_size: Some(MAX_EVENT_BYTES),
                        ..AttachReply::default()
                    },
                );
                self.links.insert(link, Link::EventHubs(Box::new(reader)));
                let done = self.done_tx.clone();
                tokio::spawn(async move {
                    if let Ok(why) = displaced.await {
                        let _ = done.send(Done::Displaced { link, why: why.0 });
                    }
                });
                self.pump_event_hub(link);
            }
            Err(Refusal::Hub(e)) => self.refuse_with(link, &e),
            Err(Refusal::Amqp(condition, why)) => self.refuse(link, condition, &why),
        }
    }

    fn event_hubs_reader(
        &mut self,
        attach: &Attach,
    ) -> Result<
        (
            Reader,
            tokio::sync::oneshot::Receiver<crate::hub::Displaced>,
        ),
        Refusal,
    > {
        let source = attach.source.clone().unwrap_or_default();
        let address = source.address.clone().unwrap_or_default();
        let Address::EventHubsReceiver {
            entity,
            consumer_group,
            partition,
        } = Address::parse(&address)
        else {
            return Err(Refusal::Hub(not_found(format!(
                "no such node: {address:?}"
            ))));
        };
        let entity = self.entity_name(&entity).ok_or_else(|| {
            Refusal::Hub(not_found(format!(
                "The messaging entity '{address}' could not be found: this hub's Event Hub is '{}'.",
                self.hub.hub_name()
            )))
        })?;
        let rest = format!("ConsumerGroups/{consumer_group}/Partitions/{partition}");
        let (auth, _) = self
            .tokens
            .authorize(
                &self.hub,
                &Need::EventHubs {
                    entity: &entity,
                    rest: &rest,
                },
            )
            .map_err(Refusal::Hub)?;
        let group = self.hub.groups.resolve(&consumer_group).ok_or_else(|| {
            Refusal::Hub(not_found(format!(
                "The messaging entity '{entity}/ConsumerGroups/{consumer_group}' could not be found."
            )))
        })?;
        let count = self.hub.events.partition_count();
        let partition = partition
            .parse::<u32>()
            .ok()
            .filter(|p| *p < count)
            .ok_or_else(|| {
                Refusal::Hub(not_found(format!(
                    "The partition '{partition}' does not exist: the partitions are 0 to {}.",
                    count.saturating_sub(1)
                )))
            })?;
        let position = event_position(&source).map_err(|e| {
            Refusal::Amqp(
                ferrohub_amqp::azure::errors::ARGUMENT_ERROR,
                format!("the receiver's filter is not understood: {e}"),
            )
        })?;
        let info = self
            .hub
            .events
            .info(partition)
            .map_err(|e| Refusal::Hub(HubError::unavailable("Reading the partition", &e)))?;
        let next = start(position, &info);
        let (ticket, displaced) = self
            .hub
            .join_reader(&group, partition, ehevent::epoch(attach))
            .map_err(|r| match r {
                ReaderRefusal::Stolen(why) => Refusal::Amqp(condition::STOLEN, why),
                ReaderRefusal::TooMany(why) => {
                    Refusal::Amqp(condition::RESOURCE_LIMIT_EXCEEDED, why)
                }
            })?;
        Ok((
            Reader {
                auth,
                ticket,
                partition,
                next,
                reading: false,
                caught_up: false,
                runtime_metric: ehevent::wants_runtime_metric(attach),
                drain: false,
            },
            displaced,
        ))
    }

    /// Starts a read for receiver `link` if it has credit and none is under way.
    pub(super) fn pump_event_hub(&mut self, link: LinkId) {
        let credit = self.conn.credit(link) as usize;
        let Some(Link::EventHubs(r)) = self.links.get_mut(&link) else {
            return;
        };
        if r.reading || credit == 0 {
            return;
        }
        r.reading = true;
        r.caught_up = false;
        let asked = credit.min(MAX_READ);
        let (partition, from, metric) = (r.partition, r.next, r.runtime_metric);
        let hub = self.hub.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let result = hub
                .events
                .read(partition, from, asked)
                .await
                .map_err(|e| HubError::unavailable("Reading the event log", &e))
                .map(|records| ReadBatch {
                    records,
                    asked,
                    info: metric.then(|| hub.events.info(partition).ok()).flatten(),
                });
            let _ = done.send(Done::Events { link, result });
        });
    }

    /// Starts reads for every receiver that had caught up (new events are durable).
    pub(super) fn pump_event_hubs(&mut self) {
        let waiting: Vec<LinkId> = self
            .links
            .iter()
            .filter_map(|(id, l)| match l {
                Link::EventHubs(r) if r.caught_up => Some(*id),
                _ => None,
            })
            .collect();
        for link in waiting {
            self.pump_event_hub(link);
        }
    }

    /// Whether some receiver waits for new events.
    pub(super) fn tailing(&self) -> bool {
        self.links
            .values()
            .any(|l| matches!(l, Link::EventHubs(r) if r.caught_up))
    }

    /// Events read for `link`: one pre-settled transfer each.
    pub(super) fn events_read(&mut self, link: LinkId, result: Result<ReadBatch, HubError>) {
        let batch = match result {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(peer = %self.peer, %link, error = %e, "reading events failed");
                self.conn
                    .detach(link, Some(convert::amqp_error(&e, self.hub.now())));
                self.forget_link(link);
                return;
            }
        };
        let now_ms = self.hub.now().timestamp_millis();
        let metric = batch.info.map(|info| RuntimeMetric {
            last_enqueued_sequence_number: info
                .last_enqueued_sequence_number
                .map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX)),
            last_enqueued_offset: info
                .last_enqueued_offset
                .map_or_else(|| "-1".to_owned(), |o| o.to_string()),
            last_enqueued_time_utc: info.last_enqueued_time_ms.unwrap_or(0),
            retrieval_time_utc: now_ms,
        });
        let mut sent_last = None;
        for record in &batch.records {
            let mut message = convert::event(record).to_message();
            if let Some(m) = &metric {
                message.delivery_annotations = Some(m.to_annotations());
            }
            let Ok(payload) = message.to_bytes() else {
                continue;
            };
            let tag = self.tag();
            match self.conn.send(link, tag, true, 0, payload) {
                Ok(_) => sent_last = Some(record.sequence_number),
                Err(e) => {
                    tracing::debug!(peer = %self.peer, %link, error = %e, "event not sent");
                    break;
                }
            }
        }
        let Some(Link::EventHubs(r)) = self.links.get_mut(&link) else {
            return;
        };
        r.reading = false;
        if let Some(seq) = sent_last {
            r.next = StartPosition::Sequence {
                seq,
                inclusive: false,
            };
        }
        metrics::counter!("ferrohub_eventhubs_events_sent_total")
            .increment(batch.records.len() as u64);
        if batch.records.len() < batch.asked {
            r.caught_up = true;
        } else {
            self.pump_event_hub(link);
        }
        self.finish_drain(link);
    }

    /// Whether a drain of `link` waits for the read under way, so that what the partition
    /// holds is delivered before the credit is given back (AMQP 1.0 §2.6.7: the sender uses
    /// the credit it can, then ends it). The read answers in [`Driver::events_read`].
    pub(super) fn drain_after_read(&mut self, link: LinkId) -> bool {
        match self.links.get_mut(&link) {
            Some(Link::EventHubs(r)) if r.reading => {
                r.drain = true;
                true
            }
            _ => false,
        }
    }

    /// Ends a deferred drain once no read is under way.
    fn finish_drain(&mut self, link: LinkId) {
        let due = match self.links.get_mut(&link) {
            Some(Link::EventHubs(r)) if r.drain && !r.reading => {
                r.drain = false;
                true
            }
            _ => false,
        };
        if due {
            self.conn.drain(link);
        }
    }
}

/// Why a receiver is refused.
enum Refusal {
    Hub(HubError),
    Amqp(ferrohub_amqp::types::Symbol, String),
}

/// Where a receiver with `position` starts, given the partition's state now.
fn start(position: Option<EventPosition>, info: &PartitionInfo) -> StartPosition {
    let latest = || match info.last_enqueued_sequence_number {
        Some(seq) => StartPosition::Sequence {
            seq,
            inclusive: false,
        },
        None => StartPosition::Sequence {
            seq: info.begin_sequence_number,
            inclusive: true,
        },
    };
    match position {
        None | Some(EventPosition::Start) => StartPosition::Earliest,
        Some(EventPosition::Latest) => latest(),
        Some(EventPosition::Offset { offset, inclusive }) => match offset.parse::<u64>() {
            Ok(offset) => StartPosition::Offset { offset, inclusive },
            // Not an offset of this hub's: the start.
            Err(_) => StartPosition::Earliest,
        },
        Some(EventPosition::SequenceNumber {
            sequence_number,
            inclusive,
        }) => match u64::try_from(sequence_number) {
            Ok(seq) => StartPosition::Sequence { seq, inclusive },
            Err(_) => StartPosition::Earliest,
        },
        Some(EventPosition::EnqueuedTime {
            enqueued_time,
            inclusive,
        }) => StartPosition::EnqueuedTime(if inclusive {
            enqueued_time
        } else {
            enqueued_time.saturating_add(1)
        }),
    }
}

/// Answers a `$management` READ (amqp-contract §3.3): authorized by a token put on `$cbs` for
/// the Event Hub, or by the request's own `security_token`.
pub(super) fn read(d: &mut Driver, read: &ReadRequest) -> Message {
    let hub_name = d.hub.hub_name().to_owned();
    let entity = if read.name.eq_ignore_ascii_case(&hub_name) || read.name == "messages/events" {
        read.name.clone()
    } else {
        return read.error_response(
            404,
            &format!(
                "The messaging entity '{}' could not be found: this hub's Event Hub is '{hub_name}'.",
                read.name
            ),
            Some(&condition::NOT_FOUND),
        );
    };
    let need = Need::EventHubs {
        entity: &entity,
        rest: "",
    };
    let authorized = d.tokens.authorize(&d.hub, &need).is_ok()
        || read
            .security_token
            .as_deref()
            .is_some_and(|t| auth::check(&d.hub, t, &need).is_ok());
    if !authorized {
        return read.error_response(
            401,
            "Unauthorized: put a token for this Event Hub on $cbs",
            Some(&condition::UNAUTHORIZED_ACCESS),
        );
    }
    let count = d.hub.events.partition_count();
    match &read.target {
        ReadTarget::EventHub => EventHubProperties {
            name: hub_name,
            created_at: d
                .hub
                .groups
                .list()
                .iter()
                .find(|(n, _)| n == crate::consumer_groups::DEFAULT_GROUP)
                .map_or(0, |(_, t)| t.timestamp_millis()),
            partition_ids: (0..count).map(|p| p.to_string()).collect(),
            georeplication_factor: None,
        }
        .response(read),
        ReadTarget::Partition { partition } => {
            let info = partition
                .parse::<u32>()
                .ok()
                .filter(|p| *p < count)
                .and_then(|p| d.hub.events.info(p).ok());
            match info {
                None => read.error_response(
                    404,
                    &format!("The partition '{partition}' does not exist."),
                    Some(&condition::NOT_FOUND),
                ),
                Some(info) => PartitionProperties {
                    name: hub_name,
                    partition: partition.clone(),
                    begin_sequence_number: i64::try_from(info.begin_sequence_number)
                        .unwrap_or(i64::MAX),
                    last_enqueued_sequence_number: info
                        .last_enqueued_sequence_number
                        .map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX)),
                    last_enqueued_sequence_number_epoch: 0,
                    last_enqueued_offset: info
                        .last_enqueued_offset
                        .map_or_else(|| "-1".to_owned(), |o| o.to_string()),
                    last_enqueued_time_utc: info.last_enqueued_time_ms.unwrap_or(0),
                    is_partition_empty: info.is_empty,
                }
                .response(read),
            }
        }
    }
}
