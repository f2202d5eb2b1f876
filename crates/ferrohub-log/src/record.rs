//! The values that go into and come out of the log: [`RecordIn`], [`Record`], [`Position`],
//! [`StartPosition`], [`PartitionInfo`] and [`DurablePosition`].

use std::borrow::Cow;

/// A record to append. The log adds the sequence number and offset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordIn {
    /// When the hub accepted the event, in milliseconds since the Unix epoch. The caller reads
    /// the clock; the log never does. Times need not increase (see
    /// [`StartPosition::EnqueuedTime`]).
    pub enqueued_ms: i64,
    /// System properties (`message-id`, `iothub-connection-device-id`, …), in order. Borrowed
    /// where the caller has a constant (the names, fixed values), to spare an allocation each.
    pub system_properties: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    /// Application properties, in order. Names may repeat; the log keeps the list as given.
    pub application_properties: Vec<(String, String)>,
    /// The event body.
    pub body: Vec<u8>,
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Dense per-partition sequence number: the first record of a partition has 0, each next one
    /// the previous plus one, across restarts and retention.
    pub sequence_number: u64,
    /// Byte position of the record in the partition's logical stream (all records of the
    /// partition, framed, back to back). Increasing but not dense; Event Hubs shows it as a
    /// decimal string.
    pub offset: u64,
    /// As given in [`RecordIn::enqueued_ms`].
    pub enqueued_ms: i64,
    /// As given.
    pub system_properties: Vec<(String, String)>,
    /// As given.
    pub application_properties: Vec<(String, String)>,
    /// As given.
    pub body: Vec<u8>,
}

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// The partition.
    pub partition: u32,
    /// The record's sequence number.
    pub sequence_number: u64,
    /// The record's offset.
    pub offset: u64,
}

/// Where a [`read`](crate::Partition::read) starts. A start before the oldest retained record
/// starts at the oldest retained record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest retained record.
    Earliest,
    /// After the newest durable record: the read returns nothing. To follow the partition from
    /// now on, take [`PartitionInfo::last_enqueued_sequence_number`] and read from
    /// `Sequence { seq, inclusive: false }`.
    Latest,
    /// The first record whose offset is `>= offset` (`inclusive`) or `> offset`.
    Offset {
        /// The offset.
        offset: u64,
        /// Whether a record at exactly `offset` is included.
        inclusive: bool,
    },
    /// The record with sequence number `seq` (`inclusive`) or the one after it.
    Sequence {
        /// The sequence number.
        seq: u64,
        /// Whether the record `seq` itself is included.
        inclusive: bool,
    },
    /// The first record, in sequence order, enqueued at or after this time (ms since the epoch).
    /// Every record after that one follows, whatever its time: enqueued times come from the
    /// caller and may step back when its clock does.
    EnqueuedTime(i64),
}

/// A partition's state, with the fields of Event Hubs' partition properties. Only durable
/// records count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition.
    pub partition: u32,
    /// Sequence number of the oldest retained record; when the partition is empty, the number
    /// the next record will get.
    pub begin_sequence_number: u64,
    /// Sequence number of the newest durable record; `None` if there is none.
    pub last_enqueued_sequence_number: Option<u64>,
    /// Offset of the newest durable record.
    pub last_enqueued_offset: Option<u64>,
    /// Enqueued time of the newest durable record.
    pub last_enqueued_time_ms: Option<i64>,
    /// No record is retained. Retention never removes the newest record, so this holds only
    /// for a partition that has never had a durable record.
    pub is_empty: bool,
}

/// How far a partition is durable: every record with a sequence number below
/// `next_sequence_number` is on disk and visible to readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurablePosition {
    /// One past the newest durable sequence number.
    pub next_sequence_number: u64,
    /// One past the last durable byte of the partition's logical stream (the offset the next
    /// record will get).
    pub next_offset: u64,
}
