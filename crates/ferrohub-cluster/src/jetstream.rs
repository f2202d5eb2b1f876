//! [`JetStreamLog`]: the hub's device-to-cloud event log on NATS JetStream, replicated by NATS
//! and shared by every hub node.
//!
//! # Streams
//!
//! One stream per partition, named `{prefix}-p{n}` and bound to the subject `{prefix}.p{n}`:
//! each partition has its own Raft group (its own leader, so partitions spread over the NATS
//! servers) and its own dense sequence. File storage, [`JetStreamConfig::replicas`] copies,
//! `max_age` = retention, an optional `max_bytes` cap (oldest records go first), a duplicate
//! window, and direct gets allowed (reads need no consumer). The partition count is recorded in
//! each stream's metadata (`ferrohub-partitions`); opening with another count fails, because it
//! decides where every device's events live.
//!
//! # Numbering
//!
//! A record's Event Hubs sequence number is its stream sequence minus one, so that, as in the
//! embedded log, a partition's first record has sequence number 0 and numbers are dense. Its
//! offset is the stream sequence itself (a decimal string on the wire, parsed back by the read
//! API): offsets increase with sequence numbers, which is all readers may assume of them.
//!
//! # Appends
//!
//! [`EventLog::append`] hands its records to the partition's publisher task at call time, so
//! records are published in call order. The publisher groups the appends of all connections
//! (group commit): it publishes every append waiting, one record after the other without
//! waiting for acknowledgements, and answers each append once JetStream acknowledged each of its
//! own records, which it does once the record is stored on a quorum of replicas (see
//! `publisher`). Each record carries a unique `Nats-Msg-Id`; a record whose acknowledgement did
//! not come (a lost connection, a leader election) is published again with the same id until
//! [`JetStreamConfig::append_timeout`], and the duplicate window makes JetStream store it once
//! and acknowledge the retry with the first copy's sequence. The append resolves `Ok` only when
//! every record is acknowledged, and fails otherwise. After such a retry a record may follow
//! records submitted after it (never lost, never duplicated within the window); without
//! failures, call order is partition order.
//!
//! # Reads
//!
//! Small reads use batched direct gets (`$JS.API.DIRECT.GET`, NATS 2.11+): one request returns
//! up to a batch of records from a sequence or a time, with no consumer created on the server.
//! Large reads use an ordered consumer created for the read and deleted after it, which costs
//! more to set up but less per record ([`ReadStrategy`]; both measured in `bench/RESULTS.md`).
//! A read from an enqueued time starts at the
//! stream's own timestamps [`JetStreamConfig::clock_skew`] earlier (the hub's clock and the NATS
//! servers' clocks differ), then skips records enqueued before the time, so the answer is the
//! embedded log's: the first record, in sequence order, enqueued at or after the time, and
//! everything after it.
//!
//! # Partition state and change notification
//!
//! [`EventLog::info`] is synchronous, so each node keeps every partition's state in memory,
//! fed by (a) its own acknowledged appends, (b) a headers-only ordered consumer per partition
//! that sees every stored record whichever node wrote it, and (c) a periodic stream info (for
//! the first sequence, which retention moves). The same consumer drives [`EventLog::watch`]:
//! JetStream delivers to a consumer only what is stored, so a woken reader finds the new
//! records. (A plain subscription on the partition subjects would fire on publish, before the
//! record is stored, and a reader woken then could miss it until the next one.)

mod codec;
mod publisher;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use ferrohub_log::{LogError, PartitionInfo, Position, Record, RecordIn, StartPosition};
use ferrohub_server::eventlog::{BoxFuture, EventLog};

use codec::{ENQUEUED_HEADER, FORMAT, FORMAT_HEADER};
use publisher::Publisher;

/// The metadata key that records a stream's partition count.
const PARTITIONS_KEY: &str = "ferrohub-partitions";
/// The metadata key that records the record format.
const FORMAT_KEY: &str = "ferrohub-event-format";
/// Bytes a record's headers and framing add to its payload, counted against
/// [`JetStreamConfig::max_record_bytes`] like the embedded log's framing.
const RECORD_OVERHEAD: usize = 128;
/// Most records one direct get request asks for.
const MAX_BATCH: usize = 1000;

/// How [`JetStreamLog`] reads records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadStrategy {
    /// Direct gets for reads of up to [`AUTO_CONSUMER_FROM`] records, an ordered consumer for
    /// larger ones: what measured cheaper for each (see [`ReadStrategy::DirectGet`]).
    #[default]
    Auto,
    /// Batched direct gets: no server-side state per read, about 0.2 ms plus 20 µs per record
    /// here, so the cheaper for small reads.
    DirectGet,
    /// An ordered (ephemeral, flow-controlled) consumer per read, deleted afterwards: about
    /// 3 ms to create and delete, then 5 µs per record, so the cheaper for large reads.
    OrderedConsumer,
}

/// From how many records [`ReadStrategy::Auto`] reads with a consumer (`bench/RESULTS.md`:
/// direct gets took half the time of a consumer for 100 records, a consumer a third of the time
/// of direct gets for 1,000, at replicas 1).
pub const AUTO_CONSUMER_FROM: usize = 200;

/// How to reach NATS and how the streams are made.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// Server URLs (`nats://host:port`); the client connects to one and fails over to others.
    pub servers: Vec<String>,
    /// Prefix of stream names (`{prefix}-p{n}`) and subjects (`{prefix}.p{n}`): letters,
    /// digits, `-` and `_` (default `ferrohub-d2c`).
    pub prefix: String,
    /// Partition count of a new log (default 4). Fixed for the log's life.
    pub partitions: u32,
    /// Copies of every record: 1 (one NATS server) or 3 (a cluster; the default for
    /// production).
    pub replicas: usize,
    /// Retention: records older than this are removed by JetStream (default one day).
    pub max_age: Duration,
    /// Most bytes a partition keeps; the oldest records go first (default: no cap).
    pub max_bytes: Option<u64>,
    /// How long JetStream remembers record ids to drop a retried publish (default 2 minutes).
    pub duplicate_window: Duration,
    /// Largest record accepted, properties and framing included (default as the embedded
    /// log's). NATS servers must allow messages this large (`max_payload`).
    pub max_record_bytes: usize,
    /// Longest an append may take before it fails, retries included (default 10 s).
    pub append_timeout: Duration,
    /// Time limit of one JetStream request or publish acknowledgement (default 5 s).
    pub request_timeout: Duration,
    /// How far the hub nodes' clocks may be ahead of the NATS servers' (default 2 s); see the
    /// module documentation on reads by time.
    pub clock_skew: Duration,
    /// How reads are made (default: by the read's size).
    pub reads: ReadStrategy,
    /// How often each partition's first sequence is refreshed from the stream (default 5 s).
    pub info_refresh: Duration,
}

impl JetStreamConfig {
    /// The defaults, for the servers at `servers`.
    pub fn new(servers: Vec<String>) -> Self {
        JetStreamConfig {
            servers,
            prefix: "ferrohub-d2c".to_owned(),
            partitions: ferrohub_log::DEFAULT_PARTITIONS,
            replicas: 1,
            max_age: Duration::from_secs(24 * 60 * 60),
            max_bytes: None,
            duplicate_window: Duration::from_secs(120),
            max_record_bytes: ferrohub_log::DEFAULT_MAX_RECORD_BYTES,
            append_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            clock_skew: Duration::from_secs(2),
            reads: ReadStrategy::Auto,
            info_refresh: Duration::from_secs(5),
        }
    }

    fn validate(&self) -> Result<(), LogError> {
        let bad = |m: String| Err(LogError::Config(m));
        if self.servers.is_empty() {
            return bad("no NATS server given".into());
        }
        if self.prefix.is_empty()
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad(format!(
                "stream prefix {:?} must be letters, digits, '-' and '_'",
                self.prefix
            ));
        }
        if self.partitions == 0 || self.partitions > ferrohub_log::MAX_PARTITIONS {
            return bad(format!(
                "partitions must be 1..={}, not {}",
                ferrohub_log::MAX_PARTITIONS,
                self.partitions
            ));
        }
        if !matches!(self.replicas, 1..=5) {
            return bad(format!("replicas must be 1 to 5, not {}", self.replicas));
        }
        if self.max_record_bytes > ferrohub_log::MAX_RECORD_BYTES_LIMIT {
            return bad(format!(
                "max_record_bytes must be at most {}",
                ferrohub_log::MAX_RECORD_BYTES_LIMIT
            ));
        }
        Ok(())
    }

    fn stream_name(&self, p: u32) -> String {
        format!("{}-p{p}", self.prefix)
    }

    fn subject(&self, p: u32) -> String {
        format!("{}.p{p}", self.prefix)
    }

    fn stream_config(&self, p: u32) -> stream::Config {
        let metadata = HashMap::from([
            (PARTITIONS_KEY.to_owned(), self.partitions.to_string()),
            (FORMAT_KEY.to_owned(), FORMAT.to_owned()),
        ]);
        stream::Config {
            name: self.stream_name(p),
            subjects: vec![self.subject(p)],
            storage: StorageType::File,
            num_replicas: self.replicas,
            max_age: self.max_age,
            max_bytes: self
                .max_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            discard: DiscardPolicy::Old,
            duplicate_window: self.duplicate_window,
            max_message_size: i32::try_from(self.max_record_bytes + RECORD_OVERHEAD)
                .unwrap_or(i32::MAX),
            allow_direct: true,
            metadata,
            description: Some(format!(
                "Ferrohub device-to-cloud events, partition {p} of {}",
                self.partitions
            )),
            ..stream::Config::default()
        }
    }
}

/// What a node knows of a partition's state (stream sequences: the record numbers plus one).
#[derive(Debug, Clone, Copy, Default)]
struct Tail {
    /// The stream's first sequence (retention moves it); 0 before the first record.
    first: u64,
    /// The stream's last sequence; 0 when nothing was ever stored.
    last: u64,
    /// The enqueued time of the record at `last`, when known.
    last_enqueued_ms: Option<i64>,
}

/// The state shared with the background tasks.
struct Shared {
    tails: Vec<Mutex<Tail>>,
    notify: watch::Sender<u64>,
}

impl Shared {
    fn tail(&self, p: usize) -> Tail {
        self.tails
            .get(p)
            .map(|t| *t.lock().unwrap_or_else(PoisonError::into_inner))
            .unwrap_or_default()
    }

    /// Records that the stream sequence `seq` (enqueued at `enqueued_ms`) is stored, and wakes
    /// the watchers if it is news.
    fn stored(&self, p: usize, seq: u64, enqueued_ms: Option<i64>) {
        let Some(tail) = self.tails.get(p) else {
            return;
        };
        let mut t = tail.lock().unwrap_or_else(PoisonError::into_inner);
        if seq > t.last {
            t.last = seq;
            t.last_enqueued_ms = enqueued_ms.or(t.last_enqueued_ms);
            if t.first == 0 {
                t.first = 1;
            }
            drop(t);
            self.notify.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// One record on its way to JetStream.
struct Outgoing {
    id: String,
    payload: Bytes,
    enqueued_ms: i64,
}

/// What an append is answered: the records' stream sequences, in record order.
type AppendReply = Result<Vec<u64>, LogError>;

/// An append handed to a partition's publisher.
struct Append {
    records: Vec<Outgoing>,
    deadline: Instant,
    reply: oneshot::Sender<AppendReply>,
}

/// The event log on NATS JetStream. See the module documentation.
pub struct JetStreamLog {
    config: Arc<JetStreamConfig>,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    shared: Arc<Shared>,
    subjects: Vec<Subject>,
    publishers: Vec<mpsc::UnboundedSender<Append>>,
    /// This instance's record id prefix (random) and counter: ids are unique across nodes and
    /// restarts.
    id_prefix: String,
    next_id: AtomicU64,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("prefix", &self.config.prefix)
            .field("partitions", &self.config.partitions)
            .field("replicas", &self.config.replicas)
            .finish_non_exhaustive()
    }
}

impl Drop for JetStreamLog {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl JetStreamLog {
    /// Connects to NATS, creates the partitions' streams or checks the existing ones (and
    /// brings their limits to the configuration's), and starts following every partition.
    /// Must be called on a tokio runtime, which then runs the log's tasks.
    pub async fn open(config: JetStreamConfig) -> Result<JetStreamLog, LogError> {
        config.validate()?;
        let client = async_nats::ConnectOptions::new()
            .name("ferrohub")
            .retry_on_initial_connect()
            .connection_timeout(config.request_timeout)
            .request_timeout(Some(config.request_timeout))
            .connect(config.servers.clone())
            .await
            .map_err(unavailable)?;
        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .max_ack_inflight(65_536)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let mut tails = Vec::with_capacity(config.partitions as usize);
        // A NATS cluster that is still forming cannot place replicated streams yet ("stream not
        // found", no leader): keep trying for a while, as a node started beside its NATS servers
        // (by one service manager, at boot) would otherwise stop at once.
        let started = Instant::now();
        for p in 0..config.partitions {
            let tail = loop {
                match ensure_stream(&js, &config, p).await {
                    Err(LogError::Unavailable(reason))
                        if started.elapsed() < STREAM_SETUP_PATIENCE =>
                    {
                        tracing::info!(partition = p, %reason, "JetStream not ready; trying again");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    other => break other?,
                }
            };
            tails.push(Mutex::new(tail));
        }
        let shared = Arc::new(Shared {
            tails,
            notify: watch::channel(0).0,
        });
        let config = Arc::new(config);
        let mut tasks = Vec::new();
        let mut publishers = Vec::new();
        let mut subjects = Vec::new();
        for p in 0..config.partitions {
            let subject = Subject::from(config.subject(p));
            let (tx, rx) = mpsc::unbounded_channel();
            let reply_prefix = format!("{}.{p}", client.new_inbox());
            let acks = client
                .subscribe(format!("{reply_prefix}.*"))
                .await
                .map_err(unavailable)?;
            let publisher = Publisher::new(
                client.clone(),
                &config,
                shared.clone(),
                p,
                subject.clone(),
                reply_prefix,
            );
            tasks.push(tokio::spawn(publisher::run(publisher, rx, acks)));
            tasks.push(tokio::spawn(follow(
                js.clone(),
                config.clone(),
                shared.clone(),
                p,
            )));
            publishers.push(tx);
            subjects.push(subject);
        }
        tasks.push(tokio::spawn(refresh(
            js.clone(),
            config.clone(),
            shared.clone(),
        )));
        let mut random = [0u8; 9];
        getrandom::fill(&mut random).map_err(|e| LogError::Config(e.to_string()))?;
        let id_prefix = random.iter().map(|b| format!("{b:02x}")).collect();
        Ok(JetStreamLog {
            config,
            client,
            js,
            shared,
            subjects,
            publishers,
            id_prefix,
            next_id: AtomicU64::new(0),
            tasks,
        })
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &JetStreamConfig {
        &self.config
    }

    /// Publishes `payload` as a record of `partition` with the record id `id`, as an append
    /// does, and returns its stream sequence: lets tests and tools check that a retried publish
    /// (same id) is stored once.
    pub async fn publish_with_id(
        &self,
        partition: u32,
        id: &str,
        record: &RecordIn,
    ) -> Result<(u64, bool), LogError> {
        let subject = self
            .subjects
            .get(partition as usize)
            .ok_or(self.no_such(partition))?;
        let outgoing = Outgoing {
            id: id.to_owned(),
            payload: codec::encode_payload(record),
            enqueued_ms: record.enqueued_ms,
        };
        let ack = self
            .js
            .send_publish(subject.clone(), message(&outgoing))
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)?;
        self.shared
            .stored(partition as usize, ack.sequence, Some(record.enqueued_ms));
        Ok((ack.sequence, ack.duplicate))
    }

    fn no_such(&self, partition: u32) -> LogError {
        LogError::NoSuchPartition {
            partition,
            count: self.config.partitions,
        }
    }

    fn stream_name(&self, p: u32) -> String {
        self.config.stream_name(p)
    }

    /// Reads with batched direct gets; see the module documentation.
    async fn read_direct(
        &self,
        partition: u32,
        from: Start,
        max: usize,
    ) -> Result<Vec<Record>, LogError> {
        let api = format!("$JS.API.DIRECT.GET.{}", self.stream_name(partition));
        let mut out: Vec<Record> = Vec::with_capacity(max.min(MAX_BATCH));
        let mut next = from;
        let mut lagging = 0;
        while out.len() < max {
            let want = (max - out.len()).min(MAX_BATCH);
            let (got, pending) = self.direct_batch(&api, &next, want).await?;
            let n = got.len();
            for (seq, record) in got {
                next = Start::Seq(seq + 1);
                if let Some(r) = record {
                    out.push(r);
                }
            }
            if n == want || (n > 0 && pending.is_some_and(|p| p > 0)) {
                // A full batch, or one the server cut short (its byte limit): go on.
                continue;
            }
            // The end, as far as the answering server knows. A replica answering the direct
            // get may not have applied what the leader acknowledged: when this node knows of
            // later records, ask again shortly.
            let known_last = self.shared.tail(partition as usize).last;
            let next_seq = match next {
                Start::Seq(s) => s,
                Start::Time(_) => break,
            };
            if next_seq <= known_last && lagging < 20 {
                lagging += 1;
                tokio::time::sleep(Duration::from_millis(lagging)).await;
                continue;
            }
            break;
        }
        Ok(out)
    }

    /// One batched direct get: up to `want` messages from `from`, as (stream sequence, record)
    /// (the record is `None` for a message that is not an event of this format's, skipped),
    /// and how many messages the server said remain after them, when it said so.
    async fn direct_batch(
        &self,
        api: &str,
        from: &Start,
        want: usize,
    ) -> Result<(Vec<(u64, Option<Record>)>, Option<u64>), LogError> {
        let request = match from {
            Start::Seq(seq) => serde_json::json!({ "seq": seq, "batch": want }),
            Start::Time(t) => serde_json::json!({
                "start_time": t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                "batch": want,
            }),
        };
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(unavailable)?;
        self.client
            .publish_with_reply(api.to_owned(), inbox, Bytes::from(request.to_string()))
            .await
            .map_err(unavailable)?;
        let mut out = Vec::with_capacity(want);
        let mut pending = None;
        loop {
            let reply = tokio::time::timeout(self.config.request_timeout, replies.next())
                .await
                .map_err(|_| LogError::Unavailable("no answer to a direct get in time".into()))?
                .ok_or_else(|| LogError::Unavailable("the NATS connection closed".into()))?;
            match reply.status.map(|s| s.as_u16()) {
                None | Some(200) => {}
                // End of batch, with what remains after it.
                Some(204) => {
                    pending = header(reply.headers.as_ref(), "Nats-Num-Pending")
                        .and_then(|v| v.parse().ok());
                    break;
                }
                // Nothing at or after the start.
                Some(404) => {
                    pending = Some(0);
                    break;
                }
                Some(status) => {
                    return Err(LogError::Unavailable(format!(
                        "direct get answered {status}: {}",
                        reply.description.unwrap_or_default()
                    )));
                }
            }
            let headers = reply.headers.as_ref();
            let seq = header(headers, "Nats-Sequence")
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| corrupt("a direct get reply without a sequence"))?;
            out.push((seq, decode_record(seq, headers, &reply.payload)?));
            if out.len() >= want {
                // The server still sends its end-of-batch; the subscription is dropped.
                break;
            }
        }
        Ok((out, pending))
    }

    /// Reads with an ordered consumer created for this read.
    async fn read_ordered(
        &self,
        partition: u32,
        from: Start,
        max: usize,
    ) -> Result<Vec<Record>, LogError> {
        let deliver_policy = match from {
            Start::Seq(s) => DeliverPolicy::ByStartSequence {
                start_sequence: s.max(1),
            },
            Start::Time(t) => DeliverPolicy::ByStartTime { start_time: t },
        };
        let consumer = self
            .js
            .create_consumer_on_stream(
                pull::OrderedConfig {
                    filter_subject: self.config.subject(partition),
                    deliver_policy,
                    ..pull::OrderedConfig::default()
                },
                self.stream_name(partition),
            )
            .await
            .map_err(unavailable)?;
        let pending = consumer.cached_info().num_pending;
        let name = consumer.cached_info().name.clone();
        let want = usize::try_from(pending).unwrap_or(usize::MAX).min(max);
        let mut out = Vec::with_capacity(want);
        if want > 0 {
            let collected = self.collect_ordered(consumer, want, &mut out).await;
            self.drop_consumer(partition, &name).await;
            collected?;
        } else {
            self.drop_consumer(partition, &name).await;
        }
        Ok(out)
    }

    async fn collect_ordered(
        &self,
        consumer: async_nats::jetstream::consumer::Consumer<pull::OrderedConfig>,
        want: usize,
        out: &mut Vec<Record>,
    ) -> Result<(), LogError> {
        let mut messages = consumer.messages().await.map_err(unavailable)?;
        while out.len() < want {
            let m = tokio::time::timeout(self.config.request_timeout, messages.next())
                .await
                .map_err(|_| LogError::Unavailable("no message from the consumer in time".into()))?
                .ok_or_else(|| LogError::Unavailable("the consumer ended".into()))?
                .map_err(unavailable)?;
            let info = m.info().map_err(|e| corrupt(e.to_string()))?;
            let seq = info.stream_sequence;
            let pending = info.pending;
            if let Some(r) = decode_record(seq, m.headers.as_ref(), &m.payload)? {
                out.push(r);
            }
            if pending == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Deletes a read's consumer at once: left to expire, the consumers of frequent reads pile
    /// up on the server (which limits their number).
    async fn drop_consumer(&self, partition: u32, name: &str) {
        if let Err(e) = self
            .js
            .delete_consumer_from_stream(name, self.stream_name(partition))
            .await
        {
            tracing::debug!(error = %e, "deleting a read's consumer failed; it expires by itself");
        }
    }

    async fn read_from(
        &self,
        partition: u32,
        from: Start,
        max: usize,
    ) -> Result<Vec<Record>, LogError> {
        let mut consumer = match self.config.reads {
            ReadStrategy::Auto => max >= AUTO_CONSUMER_FROM,
            ReadStrategy::DirectGet => false,
            ReadStrategy::OrderedConsumer => true,
        };
        // A server that has not applied what the leader acknowledged may answer nothing. A
        // reader that gets nothing waits for the next change, which for records this node
        // already knows of came before the read: ask again (up to the request timeout) while
        // this node knows of records at or after the start, and ask the stream's leader (an
        // ordered consumer) rather than any replica's direct get, as a replica may lag.
        let deadline = Instant::now() + self.config.request_timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            let out = if consumer {
                self.read_ordered(partition, from, max).await?
            } else {
                self.read_direct(partition, from, max).await?
            };
            let known_later = match from {
                Start::Seq(s) => s <= self.shared.tail(partition as usize).last,
                Start::Time(_) => false,
            };
            if !out.is_empty() || !known_later || Instant::now() + pause > deadline {
                return Ok(out);
            }
            consumer = true;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// A read from an enqueued time: from the stream's timestamps `clock_skew` earlier, skip
    /// what was enqueued before `t`, then take everything.
    async fn read_by_time(
        &self,
        partition: u32,
        t: i64,
        max: usize,
    ) -> Result<Vec<Record>, LogError> {
        let skew = i64::try_from(self.config.clock_skew.as_millis()).unwrap_or(i64::MAX);
        let start_ms = t.saturating_sub(skew).max(0);
        let start = DateTime::<Utc>::from_timestamp_millis(start_ms).unwrap_or_default();
        let mut from = Start::Time(start);
        loop {
            let batch = self.read_from(partition, from, MAX_BATCH).await?;
            let Some(last) = batch.last() else {
                return Ok(Vec::new());
            };
            let next = last.offset + 1;
            if let Some(i) = batch.iter().position(|r| r.enqueued_ms >= t) {
                let mut out: Vec<Record> = batch.into_iter().skip(i).take(max).collect();
                if out.len() < max
                    && let Some(last) = out.last()
                {
                    let more = self
                        .read_from(partition, Start::Seq(last.offset + 1), max - out.len())
                        .await?;
                    out.extend(more);
                }
                return Ok(out);
            }
            from = Start::Seq(next);
        }
    }
}

/// Where a read starts, in stream terms.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// From this stream sequence.
    Seq(u64),
    /// From this stream timestamp.
    Time(DateTime<Utc>),
}

impl EventLog for JetStreamLog {
    fn partition_count(&self) -> u32 {
        self.config.partitions
    }

    fn partition_for(&self, device_id: &str) -> u32 {
        ferrohub_log::partition_for(device_id, self.config.partitions)
    }

    fn append(
        &self,
        partition: u32,
        records: Vec<RecordIn>,
    ) -> BoxFuture<'static, Result<Vec<Position>, LogError>> {
        let Some(publisher) = self.publishers.get(partition as usize) else {
            let e = self.no_such(partition);
            return Box::pin(async move { Err(e) });
        };
        let limit = self.config.max_record_bytes;
        let mut outgoing = Vec::with_capacity(records.len());
        for r in &records {
            let payload = codec::encode_payload(r);
            let size = payload.len() + RECORD_OVERHEAD;
            if size > limit {
                return Box::pin(async move { Err(LogError::RecordTooLarge { size, limit }) });
            }
            let n = self.next_id.fetch_add(1, Ordering::Relaxed);
            outgoing.push(Outgoing {
                id: format!("{}-{n}", self.id_prefix),
                payload,
                enqueued_ms: r.enqueued_ms,
            });
        }
        let deadline = Instant::now() + self.config.append_timeout;
        let (reply, answer) = oneshot::channel();
        let sent = publisher.send(Append {
            records: outgoing,
            deadline,
            reply,
        });
        Box::pin(async move {
            if sent.is_err() {
                return Err(LogError::WriterClosed);
            }
            let seqs = answer.await.map_err(|_| LogError::WriterClosed)??;
            Ok(seqs
                .into_iter()
                .map(|seq| Position {
                    partition,
                    sequence_number: seq - 1,
                    offset: seq,
                })
                .collect())
        })
    }

    fn read(
        &self,
        partition: u32,
        from: StartPosition,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<Record>, LogError>> {
        Box::pin(async move {
            if partition >= self.config.partitions {
                return Err(self.no_such(partition));
            }
            if max == 0 {
                return Ok(Vec::new());
            }
            let seq = match from {
                StartPosition::Latest => return Ok(Vec::new()),
                StartPosition::Earliest => 1,
                StartPosition::Sequence { seq, inclusive } => {
                    seq.saturating_add(if inclusive { 1 } else { 2 })
                }
                StartPosition::Offset { offset, inclusive } => {
                    offset.saturating_add(u64::from(!inclusive)).max(1)
                }
                StartPosition::EnqueuedTime(t) => {
                    return self.read_by_time(partition, t, max).await;
                }
            };
            self.read_from(partition, Start::Seq(seq), max).await
        })
    }

    fn info(&self, partition: u32) -> Result<PartitionInfo, LogError> {
        if partition >= self.config.partitions {
            return Err(self.no_such(partition));
        }
        let t = self.shared.tail(partition as usize);
        if t.last == 0 {
            return Ok(PartitionInfo {
                partition,
                begin_sequence_number: 0,
                last_enqueued_sequence_number: None,
                last_enqueued_offset: None,
                last_enqueued_time_ms: None,
                is_empty: true,
            });
        }
        let retained = t.first >= 1 && t.first <= t.last;
        Ok(PartitionInfo {
            partition,
            begin_sequence_number: if retained { t.first - 1 } else { t.last },
            last_enqueued_sequence_number: Some(t.last - 1),
            last_enqueued_offset: Some(t.last),
            last_enqueued_time_ms: t.last_enqueued_ms,
            is_empty: !retained,
        })
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.shared.notify.subscribe()
    }

    /// The stream's own state (from its leader): records other nodes appended that this
    /// node's headers consumer has not delivered yet count from now on.
    fn catch_up(&self, partition: u32) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(async move {
            if partition >= self.config.partitions {
                return Err(self.no_such(partition));
            }
            let stream = self
                .js
                .get_stream(self.stream_name(partition))
                .await
                .map_err(unavailable)?;
            let state = &stream.cached_info().state;
            self.shared
                .stored(partition as usize, state.last_sequence, None);
            Ok(())
        })
    }

    /// Appends can succeed only while the client is connected to a NATS server (it reconnects
    /// by itself, to any of the configured servers).
    fn health(&self) -> Result<(), String> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(format!("not connected to NATS ({state})")),
        }
    }
}

/// The message that publishes `r`.
fn message(r: &Outgoing) -> PublishMessage {
    PublishMessage::build()
        .payload(r.payload.clone())
        .message_id(&r.id)
        .header(FORMAT_HEADER, FORMAT)
        .header(ENQUEUED_HEADER, r.enqueued_ms.to_string())
}

/// Follows partition `p` with a headers-only ordered consumer from the end known at open,
/// recording every stored record and waking the watchers. Recreates the consumer after
/// failures (the ordered consumer itself survives most).
async fn follow(
    js: async_nats::jetstream::Context,
    config: Arc<JetStreamConfig>,
    shared: Arc<Shared>,
    p: u32,
) {
    let mut pause = Duration::from_millis(100);
    loop {
        let start = shared.tail(p as usize).last + 1;
        let consumer = js
            .create_consumer_on_stream(
                pull::OrderedConfig {
                    filter_subject: config.subject(p),
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: start,
                    },
                    headers_only: true,
                    ..pull::OrderedConfig::default()
                },
                config.stream_name(p),
            )
            .await;
        let messages = match consumer {
            Ok(c) => c.messages().await,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "cannot follow the partition; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "cannot follow the partition; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        pause = Duration::from_millis(100);
        while let Some(m) = messages.next().await {
            match m {
                Ok(m) => {
                    if let Ok(info) = m.info() {
                        let enqueued = header(m.headers.as_ref(), ENQUEUED_HEADER)
                            .and_then(|v| v.parse().ok());
                        shared.stored(p as usize, info.stream_sequence, enqueued);
                    }
                }
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "following the partition failed");
                    break;
                }
            }
        }
        tokio::time::sleep(pause).await;
    }
}

/// Refreshes every partition's first and last sequence from its stream, periodically.
async fn refresh(
    js: async_nats::jetstream::Context,
    config: Arc<JetStreamConfig>,
    shared: Arc<Shared>,
) {
    loop {
        tokio::time::sleep(config.info_refresh).await;
        for p in 0..config.partitions {
            let Ok(stream) = js.get_stream(config.stream_name(p)).await else {
                continue;
            };
            let state = &stream.cached_info().state;
            if let Some(tail) = shared.tails.get(p as usize) {
                let mut t = tail.lock().unwrap_or_else(PoisonError::into_inner);
                t.first = state.first_sequence;
            }
            shared.stored(p as usize, state.last_sequence, None);
        }
    }
}

/// Creates partition `p`'s stream, or checks the existing one and updates its limits; returns
/// what is known of its state.
async fn ensure_stream(
    js: &async_nats::jetstream::Context,
    config: &JetStreamConfig,
    p: u32,
) -> Result<Tail, LogError> {
    let wanted = config.stream_config(p);
    let info = match js.get_stream(&wanted.name).await {
        Ok(mut existing) => {
            let info = existing.info().await.map_err(unavailable)?.clone();
            let found = info.config.metadata.get(PARTITIONS_KEY).cloned();
            if found.as_deref() != Some(config.partitions.to_string().as_str()) {
                return Err(LogError::PartitionCountMismatch {
                    dir: PathBuf::from(format!("nats:{}", wanted.name)),
                    found: found.and_then(|f| f.parse().ok()).unwrap_or(0),
                    expected: config.partitions,
                });
            }
            let c = &info.config;
            if c.max_age != wanted.max_age
                || c.max_bytes != wanted.max_bytes
                || c.num_replicas != wanted.num_replicas
                || c.duplicate_window != wanted.duplicate_window
                || c.max_message_size != wanted.max_message_size
            {
                let mut updated = c.clone();
                updated.max_age = wanted.max_age;
                updated.max_bytes = wanted.max_bytes;
                updated.num_replicas = wanted.num_replicas;
                updated.duplicate_window = wanted.duplicate_window;
                updated.max_message_size = wanted.max_message_size;
                js.update_stream(updated).await.map_err(unavailable)?
            } else {
                info
            }
        }
        Err(_) => match js.create_stream(wanted.clone()).await {
            Ok(mut s) => s.info().await.map_err(unavailable)?.clone(),
            // Another node created it meanwhile (with the same configuration, else this fails).
            Err(_) => js
                .get_stream(&wanted.name)
                .await
                .map_err(unavailable)?
                .info()
                .await
                .map_err(unavailable)?
                .clone(),
        },
    };
    let state = &info.state;
    let mut tail = Tail {
        first: state.first_sequence,
        last: state.last_sequence,
        last_enqueued_ms: None,
    };
    if tail.last > 0 {
        // The newest record's enqueued time; the stream's own timestamp if it expired.
        let stream = js
            .get_stream_no_info(&wanted.name)
            .await
            .map_err(unavailable)?;
        tail.last_enqueued_ms = match stream.direct_get(tail.last).await {
            Ok(m) => header(Some(&m.headers), ENQUEUED_HEADER).and_then(|v| v.parse().ok()),
            Err(_) => None,
        }
        .or_else(|| {
            let t = state.last_timestamp;
            Some(t.timestamp_millis())
        });
    }
    Ok(tail)
}

/// A record from a stored message, `None` when the message is not a Ferrohub event.
fn decode_record(
    seq: u64,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<Option<Record>, LogError> {
    match header(headers, FORMAT_HEADER) {
        Some(FORMAT) => {}
        Some(other) => {
            return Err(corrupt(format!(
                "record {seq} has event format {other}; this build reads {FORMAT}"
            )));
        }
        None => return Ok(None),
    }
    let enqueued_ms = header(headers, ENQUEUED_HEADER)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| corrupt(format!("record {seq} has no enqueued time")))?;
    let (system_properties, application_properties, body) =
        codec::decode_payload(payload).map_err(|e| corrupt(format!("record {seq}: {e}")))?;
    Ok(Some(Record {
        sequence_number: seq - 1,
        offset: seq,
        enqueued_ms,
        system_properties,
        application_properties,
        body,
    }))
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers?.get(name).map(|v| v.as_str())
}

/// How long [`JetStreamLog::open`] keeps trying to set up its streams while JetStream answers
/// that it is unavailable (a NATS cluster still electing its leaders).
const STREAM_SETUP_PATIENCE: Duration = Duration::from_secs(60);

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(e.to_string())
}

fn corrupt(reason: impl Into<String>) -> LogError {
    LogError::Corrupt {
        path: PathBuf::from("nats"),
        position: 0,
        reason: reason.into(),
    }
}
