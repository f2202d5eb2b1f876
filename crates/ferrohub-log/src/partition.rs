//! One partition: the synchronous write path (append, flush, roll), the read path, recovery on
//! open and retention.
//!
//! # Invariants
//!
//! (Besides those of [`segment`](crate::segment).)
//!
//! 1. **Write is separate from flush.** [`Partition::append`] encodes records into a user-space
//!    buffer (writing it to the file, unsynced, when it grows past `write_buffer_bytes`) and
//!    assigns sequence numbers and offsets; nothing it returns is durable. [`Partition::flush`]
//!    writes the buffer, calls `fdatasync` once, and only then *publishes*: moves the durable
//!    mark that readers and [`PartitionInfo`] see. A record is visible to readers only once it
//!    is durable.
//! 2. **Sealing syncs first.** A segment is sealed (and the next one created) only after a
//!    flush covered it entirely, then its index is written atomically, then the next segment
//!    file is created durably. So after a crash every segment but the last is whole.
//! 3. **A failed write or sync poisons the partition** ([`LogError::Poisoned`]): the kernel may
//!    have dropped the pages while marking them clean, so nothing written since the last good
//!    sync can be trusted. [`Partition::recover`] cuts the active segment back to the last good
//!    sync (what was written since was never published, so never acknowledged) through a new
//!    file descriptor, and then accepts writes again; a disk that filled up and was freed needs
//!    no restart.
//! 4. **Lazy roll.** A new segment is created only when a record does not fit the active one,
//!    and never for an empty active segment; retention keeps the newest segment that holds a
//!    record. Together: the newest durable record is always retained.
//!
//! Locking: `writer` (a mutex) serialises appends, flushes and rolls, and is held across the
//! `fdatasync`. `view` (a read-write lock) holds what readers may see; the writer takes it for
//! writing only to publish, briefly. Readers take it for reading only to plan a read, then do
//! their I/O without any lock, so they never wait for a sync.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::{LogError, TailDamage};
use crate::frame;
use crate::fs;
use crate::index::{self, IndexBuilder, IndexEntry, IndexKey, SealedMeta};
use crate::record::{DurablePosition, PartitionInfo, Position, Record, RecordIn, StartPosition};
use crate::segment::{self, FrameReader, LastRecord, SegmentId, Step};
use crate::{RecoveryReport, Retention, Truncation};

/// Largest base sequence number or offset in a segment name: far beyond any real log, far
/// below overflow.
const MAX_BASE: u64 = 1 << 62;

/// The parts of [`LogConfig`](crate::LogConfig) a partition uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) segment_bytes: u64,
    pub(crate) index_interval_bytes: u64,
    pub(crate) max_record_bytes: usize,
    pub(crate) write_buffer_bytes: usize,
    /// Largest frame accepted when reading: the hard limit, not the configured one, so that
    /// lowering `max_record_bytes` never turns existing records into "damage".
    pub(crate) max_frame_bytes: usize,
}

/// Counters of a partition's write path, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionStats {
    /// Records appended since open.
    pub records_appended: u64,
    /// Bytes written to segment files since open.
    pub bytes_written: u64,
    /// `fdatasync` calls on segment files since open.
    pub syncs: u64,
}

/// One partition of the log. Shared by reference; every method takes `&self`.
#[derive(Debug)]
pub struct Partition {
    id: u32,
    dir: PathBuf,
    settings: Settings,
    writer: Mutex<Writer>,
    view: RwLock<View>,
    records_appended: AtomicU64,
    bytes_written: AtomicU64,
    syncs: AtomicU64,
}

/// The newest record, located by offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LastInfo {
    seq: u64,
    offset: u64,
    enqueued_ms: i64,
}

/// Write-side state; guarded by `Partition::writer`.
#[derive(Debug)]
struct Writer {
    poisoned: bool,
    seg: SegmentId,
    file: File,
    /// Bytes of the active segment in the file.
    written: u64,
    /// Bytes of the active segment covered by the last `fdatasync`.
    synced: u64,
    /// Encoded frames not yet written; they follow `written`.
    buf: Vec<u8>,
    /// The sequence number the next appended record gets.
    next_seq: u64,
    last: Option<LastInfo>,
    max_time: i64,
    builder: IndexBuilder,
    /// Index entries of records not yet published.
    pending_index: Vec<IndexEntry>,
}

/// What readers see: durable records only. Guarded by `Partition::view`.
#[derive(Debug)]
struct View {
    sealed: Vec<Sealed>,
    active: SegmentId,
    active_index: Vec<IndexEntry>,
    /// Durable bytes of the active segment.
    durable_end: u64,
    next_seq: u64,
    last: Option<LastInfo>,
    max_time: i64,
}

#[derive(Debug, Clone, Copy)]
struct Sealed {
    id: SegmentId,
    meta: SealedMeta,
}

/// The kinds of start a read resolves to.
#[derive(Debug, Clone, Copy)]
enum Seek {
    Seq(u64),
    Offset(u64),
    Time(i64),
}

impl Seek {
    fn reached(self, seq: u64, offset: u64, enqueued_ms: i64) -> bool {
        match self {
            Seek::Seq(s) => seq >= s,
            Seek::Offset(o) => offset >= o,
            Seek::Time(t) => enqueued_ms >= t,
        }
    }
}

/// One segment of a read plan.
#[derive(Debug, Clone, Copy)]
struct Span {
    id: SegmentId,
    /// Read up to here (the sealed length, or the active segment's durable end).
    end: u64,
    /// Index entries of a sealed segment (for a lookup in its file).
    sealed_entries: Option<u64>,
    /// Where to start, if already known (the active segment's in-memory index).
    start: Option<Option<IndexEntry>>,
}

/// Removed by retention.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Removed {
    pub(crate) segments: u64,
    pub(crate) bytes: u64,
    pub(crate) records: u64,
}

// === impl Partition ===

impl Partition {
    /// The partition number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Buffer `records` and give each its sequence number and offset. **Not durable**: the
    /// positions become durable, and the records visible, when a later [`flush`](Self::flush)
    /// returns a [`DurablePosition`] beyond them. Records of one call are consecutive.
    ///
    /// Every record is checked against `max_record_bytes` before any is buffered, so a
    /// [`LogError::RecordTooLarge`] leaves the partition unchanged.
    pub fn append(&self, records: &[RecordIn]) -> Result<Vec<Position>, LogError> {
        let limit = self.settings.max_record_bytes;
        for r in records {
            let size = frame::framed_len(r);
            if size > limit {
                return Err(LogError::RecordTooLarge { size, limit });
            }
        }
        let mut w = self.lock_writer()?;
        let mut positions = Vec::with_capacity(records.len());
        for r in records {
            let size = frame::framed_len(r) as u64;
            let used = w.used();
            if used > 0 && used.saturating_add(size) > self.settings.segment_bytes {
                self.roll(&mut w)?;
            }
            let pos = w.used();
            let seq = w.next_seq;
            frame::encode(&mut w.buf, seq, r);
            w.next_seq += 1;
            w.max_time = w.max_time.max(r.enqueued_ms);
            if w.builder.take(pos) {
                let max_time = w.max_time;
                w.pending_index.push(IndexEntry { seq, pos, max_time });
            }
            let offset = w.seg.base_offset + pos;
            w.last = Some(LastInfo {
                seq,
                offset,
                enqueued_ms: r.enqueued_ms,
            });
            positions.push(Position {
                partition: self.id,
                sequence_number: seq,
                offset,
            });
            if w.buf.len() >= self.settings.write_buffer_bytes {
                self.write_out(&mut w)?;
            }
        }
        self.records_appended
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(positions)
    }

    /// Make every appended record durable with one `fdatasync`, publish it to readers, and
    /// return how far the partition is durable. Cheap when nothing is pending.
    pub fn flush(&self) -> Result<DurablePosition, LogError> {
        let mut w = self.lock_writer()?;
        self.sync(&mut w)?;
        Ok(DurablePosition {
            next_sequence_number: w.next_seq,
            next_offset: w.seg.base_offset + w.synced,
        })
    }

    /// How far the partition is durable (what readers can see).
    pub fn durable(&self) -> DurablePosition {
        let v = self.read_view();
        DurablePosition {
            next_sequence_number: v.next_seq,
            next_offset: v.active.base_offset + v.durable_end,
        }
    }

    /// Read up to `max_records` durable records starting at `from`. Returns fewer (possibly
    /// none) when the durable end is reached. Never blocks on a writer's sync.
    pub fn read(&self, from: StartPosition, max_records: usize) -> Result<Vec<Record>, LogError> {
        let seek = match from {
            StartPosition::Latest => return Ok(Vec::new()),
            StartPosition::Earliest => Seek::Seq(0),
            StartPosition::Sequence { seq, inclusive } => Seek::Seq(if inclusive {
                seq
            } else {
                seq.saturating_add(1)
            }),
            StartPosition::Offset { offset, inclusive } => Seek::Offset(if inclusive {
                offset
            } else {
                offset.saturating_add(1)
            }),
            StartPosition::EnqueuedTime(t) => Seek::Time(t),
        };
        if max_records == 0 {
            return Ok(Vec::new());
        }
        // Retention may delete a planned segment before it is opened; plan again then.
        let mut attempts = 0;
        loop {
            let plan = self.plan(seek);
            match self.execute(&plan, seek, max_records) {
                Err(Vanished(_)) if attempts < 3 => attempts += 1,
                Err(Vanished(e)) => return Err(e),
                Ok(r) => return r,
            }
        }
    }

    /// The partition's state, from durable records only.
    pub fn info(&self) -> PartitionInfo {
        let v = self.read_view();
        let begin = v
            .sealed
            .first()
            .map_or(v.active.base_seq, |s| s.id.base_seq);
        PartitionInfo {
            partition: self.id,
            begin_sequence_number: if v.last.is_some() { begin } else { v.next_seq },
            last_enqueued_sequence_number: v.last.map(|l| l.seq),
            last_enqueued_offset: v.last.map(|l| l.offset),
            last_enqueued_time_ms: v.last.map(|l| l.enqueued_ms),
            is_empty: v.last.is_none(),
        }
    }

    /// Write-path counters.
    pub fn stats(&self) -> PartitionStats {
        PartitionStats {
            records_appended: self.records_appended.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
        }
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A planned segment disappeared (retention); the read is planned again.
struct Vanished(LogError);

impl Partition {
    // --- write path ---

    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>, LogError> {
        let poisoned = LogError::Poisoned { partition: self.id };
        let w = self.writer.lock().map_err(|_| poisoned.clone())?;
        if w.poisoned {
            return Err(poisoned);
        }
        Ok(w)
    }

    /// Whether a failed write or sync stopped this partition ([`LogError::Poisoned`]) and
    /// [`Partition::recover`] has not brought it back yet.
    pub fn is_poisoned(&self) -> bool {
        self.writer.lock().map_or(true, |w| w.poisoned)
    }

    /// Brings a poisoned partition back (invariant 3): the active segment is reopened and cut
    /// back to its last good sync, durably, and the unpublished records and index entries are
    /// forgotten. Readers saw none of them, and no producer was told they were durable: a
    /// device resends them. Returns whether the partition was poisoned; fails, leaving it
    /// poisoned, when the file cannot be cut or synced (the disk is still failing).
    pub fn recover(&self) -> Result<bool, LogError> {
        let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if !w.poisoned {
            return Ok(false);
        }
        let path = w.seg.seg_path(&self.dir);
        // A new descriptor: the old one may keep reporting the failure it saw.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| LogError::io("open", &path, e))?;
        file.set_len(w.synced)
            .map_err(|e| LogError::io("truncate", &path, e))?;
        file.sync_all()
            .map_err(|e| LogError::io("fsync", &path, e))?;
        let v = self.read_view();
        w.file = file;
        w.written = w.synced;
        w.buf.clear();
        w.pending_index.clear();
        w.next_seq = v.next_seq;
        w.last = v.last;
        w.max_time = v.max_time;
        w.builder = IndexBuilder::resume(
            self.settings.index_interval_bytes,
            v.active_index.last().map(|e| e.pos),
        );
        drop(v);
        w.poisoned = false;
        Ok(true)
    }

    fn read_view(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_view(&self) -> RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write the buffer to the file, without syncing.
    fn write_out(&self, w: &mut Writer) -> Result<(), LogError> {
        if w.buf.is_empty() {
            return Ok(());
        }
        let path = w.seg.seg_path(&self.dir);
        if let Err(e) = w.file.write_all_at(&w.buf, w.written) {
            w.poisoned = true;
            return Err(LogError::io("write", path, e));
        }
        w.written += w.buf.len() as u64;
        self.bytes_written
            .fetch_add(w.buf.len() as u64, Ordering::Relaxed);
        w.buf.clear();
        Ok(())
    }

    /// Write, `fdatasync` if anything is unsynced, publish.
    fn sync(&self, w: &mut Writer) -> Result<(), LogError> {
        self.write_out(w)?;
        if w.written > w.synced {
            if let Err(e) = w.file.sync_data() {
                w.poisoned = true;
                return Err(LogError::io("fdatasync", w.seg.seg_path(&self.dir), e));
            }
            self.syncs.fetch_add(1, Ordering::Relaxed);
            w.synced = w.written;
        }
        if w.pending_index.is_empty() && self.read_view().next_seq == w.next_seq {
            return Ok(());
        }
        let mut v = self.write_view();
        v.durable_end = w.synced;
        v.next_seq = w.next_seq;
        v.last = w.last;
        v.max_time = w.max_time;
        v.active_index.append(&mut w.pending_index);
        Ok(())
    }

    /// Seal the active segment and start a new one (invariant 2).
    fn roll(&self, w: &mut Writer) -> Result<(), LogError> {
        self.sync(w)?;
        let old = w.seg;
        let (meta, bytes) = {
            let v = self.read_view();
            let meta = SealedMeta {
                end: w.synced,
                next_seq: w.next_seq,
                last: w
                    .last
                    .filter(|l| l.seq >= old.base_seq)
                    .map(|l| LastRecord {
                        seq: l.seq,
                        pos: l.offset - old.base_offset,
                        enqueued_ms: l.enqueued_ms,
                    }),
                max_time: w.max_time,
                entries: v.active_index.len() as u64,
            };
            (meta, index::encode(old, &v.active_index, &meta))
        };
        let new = SegmentId {
            base_seq: w.next_seq,
            base_offset: old.base_offset + w.synced,
        };
        let created = fs::write_file_durable(&old.idx_path(&self.dir), &bytes)
            .and_then(|()| fs::create_file_durable(&new.seg_path(&self.dir)));
        let file = match created {
            Ok(f) => f,
            Err(e) => {
                w.poisoned = true;
                return Err(e);
            }
        };
        {
            let mut v = self.write_view();
            v.sealed.push(Sealed { id: old, meta });
            v.active = new;
            v.active_index.clear();
            v.durable_end = 0;
        }
        w.seg = new;
        w.file = file;
        w.written = 0;
        w.synced = 0;
        w.builder = IndexBuilder::new(self.settings.index_interval_bytes);
        Ok(())
    }

    // --- read path ---

    /// Choose the segments to read, under the view lock.
    fn plan(&self, seek: Seek) -> Vec<Span> {
        let v = self.read_view();
        let durable_end_offset = v.active.base_offset + v.durable_end;
        let n = v.sealed.len() + 1;
        let id_at = |i: usize| v.sealed.get(i).map_or(v.active, |s| s.id);
        let first = match seek {
            _ if v.last.is_none() => return Vec::new(),
            Seek::Seq(s) if s >= v.next_seq => return Vec::new(),
            Seek::Offset(o) if o >= durable_end_offset => return Vec::new(),
            Seek::Time(t) if v.max_time < t => return Vec::new(),
            Seek::Seq(s) => (0..n).rposition(|i| id_at(i).base_seq <= s).unwrap_or(0),
            Seek::Offset(o) => (0..n).rposition(|i| id_at(i).base_offset <= o).unwrap_or(0),
            Seek::Time(t) => v
                .sealed
                .iter()
                .position(|s| s.meta.max_time >= t)
                .unwrap_or(n - 1),
        };
        let mut spans = Vec::with_capacity(n - first);
        for (i, s) in v.sealed.iter().enumerate().skip(first) {
            spans.push(Span {
                id: s.id,
                end: s.meta.end,
                sealed_entries: Some(s.meta.entries),
                start: (i != first).then_some(None),
            });
        }
        let active_start = if first == n - 1 {
            Some(index::search(&v.active_index, key_for(seek, v.active)))
        } else {
            Some(None)
        };
        spans.push(Span {
            id: v.active,
            end: v.durable_end,
            sealed_entries: None,
            start: active_start,
        });
        spans
    }

    fn execute(
        &self,
        plan: &[Span],
        seek: Seek,
        max_records: usize,
    ) -> Result<Result<Vec<Record>, LogError>, Vanished> {
        let mut out = Vec::new();
        let mut started = false;
        for span in plan {
            if span.end == 0 {
                continue;
            }
            let path = span.id.seg_path(&self.dir);
            let start = match span.start {
                Some(s) => s,
                None => self.sealed_lookup(span, seek),
            };
            let (pos, mut expected) = start.map_or((0, span.id.base_seq), |e| (e.pos, e.seq));
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && span.sealed_entries.is_some() =>
                {
                    return Err(Vanished(LogError::io("open", path, e)));
                }
                Err(e) => return Ok(Err(LogError::io("open", path, e))),
            };
            let chunk = segment::SMALL_CHUNK_BYTES.max(max_records.saturating_mul(256));
            let chunk = chunk.min(segment::LARGE_CHUNK_BYTES);
            let mut reader = FrameReader::new(
                &file,
                &path,
                pos,
                span.end,
                self.settings.max_frame_bytes,
                chunk,
            );
            loop {
                let step = match reader.next() {
                    Ok(s) => s,
                    Err(e) => return Ok(Err(e)),
                };
                match step {
                    Step::End => break,
                    Step::Damaged { pos, damage } => {
                        return Ok(Err(LogError::corrupt(&path, pos, damage)));
                    }
                    Step::Frame { pos, meta, bytes } => {
                        if meta.seq != expected {
                            let reason = TailDamage::SequenceMismatch {
                                expected,
                                found: meta.seq,
                            };
                            return Ok(Err(LogError::corrupt(&path, pos, reason)));
                        }
                        expected += 1;
                        let offset = span.id.base_offset + pos;
                        if !started && !seek.reached(meta.seq, offset, meta.enqueued_ms) {
                            continue;
                        }
                        started = true;
                        match frame::decode(bytes, offset) {
                            Ok(r) => out.push(r),
                            Err(d) => return Ok(Err(LogError::corrupt(&path, pos, d))),
                        }
                        if out.len() >= max_records {
                            return Ok(Ok(out));
                        }
                    }
                }
            }
        }
        Ok(Ok(out))
    }

    /// Find where to start in a sealed segment; on a damaged index, start at its beginning.
    fn sealed_lookup(&self, span: &Span, seek: Seek) -> Option<IndexEntry> {
        let entries = span.sealed_entries.unwrap_or(0);
        let idx = span.id.idx_path(&self.dir);
        match index::lookup(&idx, entries, key_for(seek, span.id)) {
            Ok(e) => e,
            Err(reason) => {
                tracing::warn!(partition = self.id, index = %idx.display(), %reason,
                    "index unusable, scanning the segment instead");
                None
            }
        }
    }

    // --- retention ---

    /// Remove whole sealed segments, oldest first, while the oldest is older than the age
    /// limit or the partition is over its size limit. Never removes the active segment nor the
    /// newest segment holding a record (invariant 4).
    pub(crate) fn enforce_retention(
        &self,
        now_ms: i64,
        retention: &Retention,
    ) -> Result<Removed, LogError> {
        let cutoff = retention
            .max_age_ms
            .map(|age| now_ms.saturating_sub(i64::try_from(age).unwrap_or(i64::MAX)));
        let victims: Vec<Sealed> = {
            let mut v = self.write_view();
            let keep_from = if v.durable_end > 0 {
                v.sealed.len()
            } else {
                // The active segment holds no durable record: keep the newest sealed one that does.
                v.sealed
                    .iter()
                    .rposition(|s| s.meta.next_seq > s.id.base_seq)
                    .unwrap_or(v.sealed.len())
            };
            let mut total: u64 = v.sealed.iter().map(|s| s.meta.end).sum::<u64>() + v.durable_end;
            let mut count = 0;
            for s in v.sealed.iter().take(keep_from) {
                let old = cutoff.is_some_and(|c| s.meta.max_time < c);
                let big = retention.max_bytes.is_some_and(|m| total > m);
                if !(old || big) {
                    break;
                }
                total -= s.meta.end;
                count += 1;
            }
            v.sealed.drain(..count).collect()
        };
        let mut removed = Removed::default();
        for s in victims {
            fs::remove_file_durable(&s.id.seg_path(&self.dir))?;
            fs::remove_file_durable(&s.id.idx_path(&self.dir))?;
            removed.segments += 1;
            removed.bytes += s.meta.end;
            removed.records += s.meta.next_seq - s.id.base_seq;
        }
        if removed.segments > 0 {
            tracing::info!(
                partition = self.id,
                segments = removed.segments,
                bytes = removed.bytes,
                records = removed.records,
                "retention removed segments"
            );
        }
        Ok(removed)
    }

    // --- recovery ---

    /// Open (creating if needed) the partition in `dir`, recovering as the module doc says.
    pub(crate) fn open(
        id: u32,
        dir: PathBuf,
        settings: Settings,
        report: &mut RecoveryReport,
    ) -> Result<Partition, LogError> {
        fs::create_dir_durable(&dir)?;
        let mut segs = Vec::new();
        let mut idxs = HashSet::new();
        let entries =
            std::fs::read_dir(&dir).map_err(|e| LogError::io("read directory", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| LogError::io("read directory", &dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(s) = SegmentId::parse(name, "seg") {
                segs.push(s);
            } else if let Some(s) = SegmentId::parse(name, "idx") {
                idxs.insert(s);
            } else if name.ends_with(".tmp") {
                let path = dir.join(name);
                fs::remove_file_durable(&path)?;
                report.removed_files.push(path);
            }
        }
        segs.sort();
        // Names are ours, but a hostile or damaged directory must not make arithmetic overflow.
        if let Some(s) = segs
            .iter()
            .find(|s| s.base_seq > MAX_BASE || s.base_offset > MAX_BASE)
        {
            return Err(LogError::corrupt(
                s.seg_path(&dir),
                0,
                "segment name out of range",
            ));
        }
        if let Some(w) = segs.windows(2).find(|w| w[0].base_seq == w[1].base_seq) {
            let reason = "two segments start at the same sequence number";
            return Err(LogError::corrupt(w[1].seg_path(&dir), 0, reason));
        }
        let Some(&active) = segs.last() else {
            return Self::create(id, dir, settings);
        };

        // Sealed segments: trust a valid index, rebuild a missing or damaged one.
        let mut sealed = Vec::with_capacity(segs.len() - 1);
        let mut next: Option<(u64, u64)> = None;
        let mut max_time = i64::MIN;
        let mut last: Option<LastInfo> = None;
        for &sid in &segs[..segs.len() - 1] {
            check_contiguous(&dir, sid, next)?;
            let meta = Self::load_sealed(&dir, sid, max_time, settings, report)?;
            next = Some((meta.next_seq, sid.base_offset.saturating_add(meta.end)));
            max_time = meta.max_time;
            if let Some(l) = meta.last {
                last = Some(LastInfo {
                    seq: l.seq,
                    offset: sid.base_offset + l.pos,
                    enqueued_ms: l.enqueued_ms,
                });
            }
            sealed.push(Sealed { id: sid, meta });
        }

        // The active segment: scan it all, cut a damaged tail (segment invariant 3).
        check_contiguous(&dir, active, next)?;
        let scan = segment::scan(
            &dir,
            active,
            max_time,
            settings.index_interval_bytes,
            settings.max_frame_bytes,
        )?;
        let path = active.seg_path(&dir);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| LogError::io("open", &path, e))?;
        if scan.valid_end < scan.file_len {
            let damage = scan.damage.unwrap_or(TailDamage::Torn);
            let cut = scan.file_len - scan.valid_end;
            tracing::warn!(partition = id, segment = %path.display(), valid_bytes = scan.valid_end,
                cut_bytes = cut, %damage, "cutting the damaged tail of the active segment");
            file.set_len(scan.valid_end)
                .map_err(|e| LogError::io("truncate", &path, e))?;
            file.sync_all()
                .map_err(|e| LogError::io("fsync", &path, e))?;
            report.truncations.push(Truncation {
                partition: id,
                segment: path.clone(),
                valid_bytes: scan.valid_end,
                cut_bytes: cut,
                damage,
            });
        }
        if idxs.remove(&active) {
            // Left by a crash between sealing this segment and creating the next one.
            let stale = active.idx_path(&dir);
            fs::remove_file_durable(&stale)?;
            report.removed_files.push(stale);
        }
        for orphan in idxs.iter().filter(|i| !segs.contains(i)) {
            let path = orphan.idx_path(&dir);
            fs::remove_file_durable(&path)?;
            report.removed_files.push(path);
        }
        if let Some(l) = scan.last {
            last = Some(LastInfo {
                seq: l.seq,
                offset: active.base_offset + l.pos,
                enqueued_ms: l.enqueued_ms,
            });
        }
        let mut builder = IndexBuilder::new(settings.index_interval_bytes);
        if let Some(e) = scan.index.last() {
            builder.take(e.pos);
        }
        let writer = Writer {
            poisoned: false,
            seg: active,
            file,
            written: scan.valid_end,
            synced: scan.valid_end,
            buf: Vec::new(),
            next_seq: scan.next_seq,
            last,
            max_time: scan.max_time,
            builder,
            pending_index: Vec::new(),
        };
        let view = View {
            sealed,
            active,
            active_index: scan.index,
            durable_end: scan.valid_end,
            next_seq: scan.next_seq,
            last,
            max_time: scan.max_time,
        };
        Ok(Self::assemble(id, dir, settings, writer, view))
    }

    fn create(id: u32, dir: PathBuf, settings: Settings) -> Result<Partition, LogError> {
        let seg = SegmentId {
            base_seq: 0,
            base_offset: 0,
        };
        let file = fs::create_file_durable(&seg.seg_path(&dir))?;
        let writer = Writer {
            poisoned: false,
            seg,
            file,
            written: 0,
            synced: 0,
            buf: Vec::new(),
            next_seq: 0,
            last: None,
            max_time: i64::MIN,
            builder: IndexBuilder::new(settings.index_interval_bytes),
            pending_index: Vec::new(),
        };
        let view = View {
            sealed: Vec::new(),
            active: seg,
            active_index: Vec::new(),
            durable_end: 0,
            next_seq: 0,
            last: None,
            max_time: i64::MIN,
        };
        Ok(Self::assemble(id, dir, settings, writer, view))
    }

    fn assemble(
        id: u32,
        dir: PathBuf,
        settings: Settings,
        writer: Writer,
        view: View,
    ) -> Partition {
        Partition {
            id,
            dir,
            settings,
            writer: Mutex::new(writer),
            view: RwLock::new(view),
            records_appended: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
        }
    }

    /// The summary of sealed segment `sid`: from its index if valid, else by scanning it and
    /// rewriting the index. A sealed segment that fails the scan is an error (invariant 2 says
    /// a crash cannot cause that).
    fn load_sealed(
        dir: &Path,
        sid: SegmentId,
        max_time_before: i64,
        settings: Settings,
        report: &mut RecoveryReport,
    ) -> Result<SealedMeta, LogError> {
        let seg_path = sid.seg_path(dir);
        let idx_path = sid.idx_path(dir);
        let seg_len = std::fs::metadata(&seg_path)
            .map_err(|e| LogError::io("stat", &seg_path, e))?
            .len();
        let reason = match index::load(&idx_path, sid, seg_len)? {
            Ok(meta) if meta.max_time >= max_time_before || meta.entries == 0 => return Ok(meta),
            Ok(_) => "running maximum time goes back".to_string(),
            Err(reason) => reason,
        };
        tracing::warn!(index = %idx_path.display(), %reason, "rebuilding segment index");
        let scan = segment::scan(
            dir,
            sid,
            max_time_before,
            settings.index_interval_bytes,
            settings.max_frame_bytes,
        )?;
        if let Some(damage) = scan.damage {
            return Err(LogError::corrupt(
                &seg_path,
                scan.valid_end,
                format!("sealed segment: {damage}"),
            ));
        }
        let meta = SealedMeta {
            end: scan.valid_end,
            next_seq: scan.next_seq,
            last: scan.last,
            max_time: scan.max_time,
            entries: scan.index.len() as u64,
        };
        fs::write_file_durable(&idx_path, &index::encode(sid, &scan.index, &meta))?;
        report.rebuilt_indexes.push(idx_path);
        Ok(meta)
    }
}

impl Writer {
    /// Bytes of the active segment, written or buffered.
    fn used(&self) -> u64 {
        self.written + self.buf.len() as u64
    }
}

fn key_for(seek: Seek, seg: SegmentId) -> IndexKey {
    match seek {
        Seek::Seq(s) => IndexKey::Seq(s),
        Seek::Offset(o) => IndexKey::Pos(o.saturating_sub(seg.base_offset)),
        Seek::Time(t) => IndexKey::TimeBefore(t),
    }
}

fn check_contiguous(dir: &Path, sid: SegmentId, next: Option<(u64, u64)>) -> Result<(), LogError> {
    match next {
        Some((seq, offset)) if (sid.base_seq, sid.base_offset) != (seq, offset) => {
            Err(LogError::corrupt(
                sid.seg_path(dir),
                0,
                format!("gap: the previous segment ends at sequence {seq}, offset {offset}"),
            ))
        }
        _ => Ok(()),
    }
}
