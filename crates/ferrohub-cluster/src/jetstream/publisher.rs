//! A partition's publisher: one task per partition that publishes every append's records to
//! the partition's stream and answers each append once JetStream acknowledged all of its
//! records.
//!
//! # Group commit
//!
//! Appends from all of a node's connections queue up for the partition's publisher. Each time
//! it wakes it takes every append waiting, publishes all their records one after the other
//! without waiting for any acknowledgement (the NATS client writes them to the socket
//! together), and goes back to reading acknowledgements. JetStream stores and acknowledges a
//! stream's messages in the order it received them, so a partition's records are stored in
//! call order, and the records published while one group is being acknowledged form the next
//! group: the more appends wait, the larger the groups.
//!
//! # Acknowledgements
//!
//! Records are published with plain core publishes whose reply subject carries a record token
//! (`{inbox}.{partition}.{token}`); one subscription per partition receives every
//! acknowledgement, so a record costs no request state in the client (no inbox, no oneshot
//! channel, no timer). The publisher matches an acknowledgement to its record by the token. An
//! append is answered `Ok` only when every one of its records has an acknowledgement carrying
//! its stream sequence; an error reply (no stream leader, a JetStream error) or no reply within
//! [`JetStreamConfig::request_timeout`] publishes the record again with the same
//! `Nats-Msg-Id` (the duplicate window stores it once), until the append's deadline, when the
//! append fails. A late acknowledgement of a record whose append already failed is ignored: the
//! device was told the append failed and sends again (at least once).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::{HeaderMap, HeaderName, Message, Subject, Subscriber};
use futures_util::{FutureExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use ferrohub_log::LogError;

use super::codec::{ENQUEUED_HEADER, FORMAT, FORMAT_HEADER};
use super::{Append, AppendReply, JetStreamConfig, Outgoing, RECORD_OVERHEAD, Shared};

/// Most records a partition's publisher keeps published but not yet acknowledged; further
/// appends wait in its queue until acknowledgements come.
const MAX_IN_FLIGHT: usize = 16_384;
/// How often the publisher looks for acknowledgements that did not come in time.
const TICK: Duration = Duration::from_millis(25);
/// The first pause before a record whose publish failed is published again; doubled per
/// failure of the same append, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// An append being published.
struct Waiting {
    records: Vec<Outgoing>,
    /// Stream sequence per record, 0 until acknowledged.
    seqs: Vec<u64>,
    /// Records not yet acknowledged.
    missing: usize,
    deadline: Instant,
    /// Failed publishes so far (for the pause before the next attempt).
    failures: u32,
    last_error: Option<String>,
    reply: tokio::sync::oneshot::Sender<AppendReply>,
}

/// A published record waiting for its acknowledgement.
#[derive(Clone, Copy)]
struct Slot {
    append: u64,
    index: usize,
    sent: Instant,
}

/// The acknowledgement JetStream sends for a publish (the fields used).
#[derive(Deserialize)]
struct Ack {
    seq: Option<u64>,
    error: Option<AckError>,
}

#[derive(Deserialize)]
struct AckError {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    description: String,
}

/// The state of a partition's publisher.
pub(super) struct Publisher {
    client: async_nats::Client,
    shared: Arc<Shared>,
    partition: usize,
    subject: Subject,
    /// `{inbox}.{partition}`: reply subjects are this, a dot and the record's token.
    reply_prefix: String,
    request_timeout: Duration,
    max_record_bytes: usize,
    /// Appends being published, by number: append `k` at `k - first_append`; `None` once
    /// answered. (Boxed: an append whose record waits for a retry keeps the answered ones
    /// behind it in the queue, a word each.)
    appends: VecDeque<Option<Box<Waiting>>>,
    first_append: u64,
    /// Published records by token: the slot of token `t` is at `t - first_token`; `None` once
    /// answered (or given up).
    in_flight: VecDeque<Option<Slot>>,
    first_token: u64,
    /// The `Some` slots in `in_flight`.
    live: usize,
    /// Records to publish again, with when.
    retries: Vec<(Instant, u64, usize)>,
}

impl Publisher {
    pub(super) fn new(
        client: async_nats::Client,
        config: &JetStreamConfig,
        shared: Arc<Shared>,
        partition: u32,
        subject: Subject,
        reply_prefix: String,
    ) -> Publisher {
        Publisher {
            client,
            shared,
            partition: partition as usize,
            subject,
            reply_prefix,
            request_timeout: config.request_timeout,
            max_record_bytes: config.max_record_bytes,
            appends: VecDeque::new(),
            first_append: 0,
            in_flight: VecDeque::new(),
            first_token: 0,
            live: 0,
            retries: Vec::new(),
        }
    }

    /// Takes an append off the queue and publishes its records, unless it was given up while
    /// waiting (timed out or dropped): publishing then would store records nobody will
    /// acknowledge to a device.
    async fn submit(&mut self, append: Append) {
        if append.reply.is_closed() {
            return;
        }
        if Instant::now() >= append.deadline {
            let _ = append.reply.send(Err(LogError::Unavailable(format!(
                "{n} of {n} records not acknowledged in time",
                n = append.records.len()
            ))));
            return;
        }
        let n = append.records.len();
        if n == 0 {
            let _ = append.reply.send(Ok(Vec::new()));
            return;
        }
        let key = self.first_append + self.appends.len() as u64;
        self.appends.push_back(Some(Box::new(Waiting {
            records: append.records,
            seqs: vec![0; n],
            missing: n,
            deadline: append.deadline,
            failures: 0,
            last_error: None,
            reply: append.reply,
        })));
        for index in 0..n {
            if !self.publish(key, index).await {
                break;
            }
        }
    }

    /// Publishes record `index` of append `key` with a new token. False when the append failed
    /// for good (its record is too large for the NATS servers).
    async fn publish(&mut self, key: u64, index: usize) -> bool {
        let Some(waiting) = self.get(key) else {
            return false;
        };
        let Some(record) = waiting.records.get(index) else {
            return false;
        };
        let token = self.first_token + self.in_flight.len() as u64;
        let reply = Subject::from(format!("{}.{token}", self.reply_prefix));
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, record.id.clone());
        headers.insert(HeaderName::from_static(FORMAT_HEADER), FORMAT);
        headers.insert(
            HeaderName::from_static(ENQUEUED_HEADER),
            record.enqueued_ms.to_string(),
        );
        let payload = record.payload.clone();
        let size = payload.len() + RECORD_OVERHEAD;
        let sent = tokio::time::timeout(
            self.request_timeout,
            self.client.publish_with_reply_and_headers(
                self.subject.clone(),
                reply,
                headers,
                payload,
            ),
        )
        .await;
        let now = Instant::now();
        match sent {
            Ok(Ok(())) => {
                self.in_flight.push_back(Some(Slot {
                    append: key,
                    index,
                    sent: now,
                }));
                self.live += 1;
                true
            }
            Ok(Err(e)) if e.kind() == async_nats::PublishErrorKind::MaxPayloadExceeded => {
                self.fail(
                    key,
                    LogError::RecordTooLarge {
                        size,
                        limit: self.max_record_bytes,
                    },
                );
                false
            }
            Ok(Err(e)) => {
                self.failed(key, index, e.to_string(), now);
                true
            }
            Err(_) => {
                self.failed(key, index, "publishing timed out".into(), now);
                true
            }
        }
    }

    /// Record `index` of append `key` was not stored: publish it again after a pause.
    fn failed(&mut self, key: u64, index: usize, error: String, now: Instant) {
        let Some(waiting) = self.get_mut(key) else {
            return;
        };
        let pause = FIRST_PAUSE
            .saturating_mul(1 << waiting.failures.min(8))
            .min(MAX_PAUSE);
        waiting.failures += 1;
        waiting.last_error = Some(error);
        self.retries.push((now + pause, key, index));
    }

    /// Answers append `key` with `error` and forgets it; acknowledgements of its records that
    /// come later are ignored.
    fn fail(&mut self, key: u64, error: LogError) {
        if let Some(waiting) = self.remove(key) {
            let _ = waiting.reply.send(Err(error));
        }
    }

    /// An acknowledgement (or an error reply) for one published record.
    fn acknowledged(&mut self, message: &Message) {
        let Some(token) = message
            .subject
            .as_str()
            .rsplit('.')
            .next()
            .and_then(|t| t.parse::<u64>().ok())
        else {
            return;
        };
        let Some(slot) = token
            .checked_sub(self.first_token)
            .and_then(|i| self.in_flight.get_mut(usize::try_from(i).ok()?))
            .and_then(Option::take)
        else {
            return;
        };
        self.live -= 1;
        self.pop_answered();
        let outcome = match message.status {
            Some(status) if status.as_u16() != 200 => Err(format!(
                "publish answered {status}{}",
                message
                    .description
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            )),
            _ => match serde_json::from_slice::<Ack>(&message.payload) {
                Ok(Ack { seq: Some(seq), .. }) if seq > 0 => Ok(seq),
                Ok(Ack { error: Some(e), .. }) => {
                    Err(format!("JetStream error {}: {}", e.code, e.description))
                }
                Ok(_) => Err("an acknowledgement without a sequence".into()),
                Err(e) => Err(format!("an unreadable acknowledgement: {e}")),
            },
        };
        match outcome {
            Ok(seq) => self.stored(slot.append, slot.index, seq),
            Err(e) => self.failed(slot.append, slot.index, e, Instant::now()),
        }
    }

    /// Record `index` of append `key` is stored at `seq`; answers the append once all are.
    fn stored(&mut self, key: u64, index: usize, seq: u64) {
        let Some(waiting) = self.get_mut(key) else {
            return;
        };
        let Some(slot) = waiting.seqs.get_mut(index) else {
            return;
        };
        if *slot == 0 {
            *slot = seq;
            waiting.missing -= 1;
        }
        if waiting.missing > 0 {
            return;
        }
        let Some(waiting) = self.remove(key) else {
            return;
        };
        // The partition's tail moves to the append's newest record (one update per append).
        if let Some((seq, record)) = waiting
            .seqs
            .iter()
            .zip(&waiting.records)
            .max_by_key(|(seq, _)| **seq)
        {
            self.shared
                .stored(self.partition, *seq, Some(record.enqueued_ms));
        }
        let _ = waiting.reply.send(Ok(waiting.seqs));
    }

    fn get(&self, key: u64) -> Option<&Waiting> {
        let i = usize::try_from(key.checked_sub(self.first_append)?).ok()?;
        self.appends.get(i)?.as_deref()
    }

    fn get_mut(&mut self, key: u64) -> Option<&mut Waiting> {
        let i = usize::try_from(key.checked_sub(self.first_append)?).ok()?;
        self.appends.get_mut(i)?.as_deref_mut()
    }

    /// Takes append `key` out (it is answered), dropping answered appends from the front.
    fn remove(&mut self, key: u64) -> Option<Box<Waiting>> {
        let i = usize::try_from(key.checked_sub(self.first_append)?).ok()?;
        let waiting = self.appends.get_mut(i)?.take();
        while let Some(None) = self.appends.front() {
            self.appends.pop_front();
            self.first_append += 1;
        }
        waiting
    }

    /// Drops answered slots from the front of `in_flight`.
    fn pop_answered(&mut self) {
        while let Some(None) = self.in_flight.front() {
            self.in_flight.pop_front();
            self.first_token += 1;
        }
    }

    /// Publishes again what was not acknowledged in time or failed, and fails the appends past
    /// their deadline.
    async fn tick(&mut self, now: Instant) {
        // Records published longest ago come first: look until one is recent enough.
        let mut i = 0;
        while let Some(entry) = self.in_flight.get_mut(i) {
            match *entry {
                Some(slot) if now.duration_since(slot.sent) >= self.request_timeout => {
                    *entry = None;
                    self.live -= 1;
                    if let Some(waiting) = self.get_mut(slot.append) {
                        waiting.last_error = Some("no acknowledgement in time".into());
                        self.retries.push((now, slot.append, slot.index));
                    }
                }
                Some(_) => break,
                None => {}
            }
            i += 1;
        }
        self.pop_answered();
        if self.retries.is_empty() {
            return;
        }
        let mut due = Vec::new();
        self.retries.retain(|r| {
            if r.0 <= now {
                due.push(*r);
                false
            } else {
                true
            }
        });
        for (_, key, index) in due {
            let Some(waiting) = self.get(key) else {
                continue;
            };
            if now >= waiting.deadline {
                let error = LogError::Unavailable(format!(
                    "{} of {} records not acknowledged in time{}",
                    waiting.missing,
                    waiting.records.len(),
                    waiting
                        .last_error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ));
                self.fail(key, error);
                continue;
            }
            tracing::debug!(
                partition = self.partition,
                "publishing an unacknowledged record again"
            );
            self.publish(key, index).await;
        }
    }
}

/// Runs a partition's publisher until the log is dropped (its queue closes) or the NATS client
/// is closed.
pub(super) async fn run(
    mut publisher: Publisher,
    mut queue: mpsc::UnboundedReceiver<Append>,
    mut acks: Subscriber,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = tick.tick() => publisher.tick(Instant::now()).await,
            message = acks.next() => match message {
                Some(m) => {
                    publisher.acknowledged(&m);
                    // Every acknowledgement already received, without a trip through select.
                    while let Some(Some(m)) = acks.next().now_or_never() {
                        publisher.acknowledged(&m);
                    }
                }
                None => return,
            },
            append = queue.recv(), if publisher.live < MAX_IN_FLIGHT => match append {
                Some(append) => {
                    // The group: every append waiting now, published before any
                    // acknowledgement is read.
                    publisher.submit(append).await;
                    while publisher.live < MAX_IN_FLIGHT {
                        match queue.try_recv() {
                            Ok(append) => publisher.submit(append).await,
                            Err(_) => break,
                        }
                    }
                }
                None => return,
            },
        }
    }
}
