//! Segment files: naming, the buffered frame reader, and the scan that recovery and index
//! rebuilds use.
//!
//! A partition is a directory of segments. A segment file holds whole frames back to back and
//! nothing else; it is named after its first record's sequence number and offset,
//! `{base_seq:020}-{base_offset:020}.seg`, with its sealed index beside it as `….idx`. The
//! names alone give the order and the logical position of every segment, so no header can be
//! torn.
//!
//! # Invariants
//!
//! 1. Segments are contiguous: a segment's `base_seq`/`base_offset` are one past the previous
//!    segment's last sequence number / last byte.
//! 2. Every segment but the last (the *active* one) is *sealed*: it was written completely and
//!    `fdatasync`ed before the next segment was created, so a crash cannot tear it. Only the
//!    active segment can have a torn tail.
//! 3. Within the active segment, every acknowledged (flushed) record lies before every byte
//!    that was never synced, because `fdatasync` covers the whole file up to its length. So
//!    cutting the file at its first invalid frame never removes a flushed record.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{LogError, TailDamage};
use crate::frame::{self, FrameMeta, HEADER_BYTES};
use crate::index::{IndexBuilder, IndexEntry};

/// First read size of a frame reader for reads (most reads want a few records).
pub(crate) const SMALL_CHUNK_BYTES: usize = 16 * 1024;
/// Read size for scans, and the most a reader's read size doubles to.
pub(crate) const LARGE_CHUNK_BYTES: usize = 1024 * 1024;

/// The first sequence number and offset of a segment: its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SegmentId {
    pub(crate) base_seq: u64,
    pub(crate) base_offset: u64,
}

impl SegmentId {
    pub(crate) fn seg_path(self, dir: &Path) -> PathBuf {
        dir.join(format!(
            "{:020}-{:020}.seg",
            self.base_seq, self.base_offset
        ))
    }

    pub(crate) fn idx_path(self, dir: &Path) -> PathBuf {
        dir.join(format!(
            "{:020}-{:020}.idx",
            self.base_seq, self.base_offset
        ))
    }

    /// Parse a file name of the form `{seq}-{offset}.{ext}`; `None` for any other name.
    pub(crate) fn parse(name: &str, ext: &str) -> Option<SegmentId> {
        let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
        let (seq, offset) = stem.split_once('-')?;
        if seq.len() != 20 || offset.len() != 20 {
            return None;
        }
        Some(SegmentId {
            base_seq: seq.parse().ok()?,
            base_offset: offset.parse().ok()?,
        })
    }
}

/// The newest record of a segment or partition: what `PartitionInfo` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LastRecord {
    pub(crate) seq: u64,
    /// Byte position in its segment file.
    pub(crate) pos: u64,
    pub(crate) enqueued_ms: i64,
}

/// One step of a [`FrameReader`].
pub(crate) enum Step<'a> {
    /// A frame that passed its checks, at `pos`, with its bytes.
    Frame {
        pos: u64,
        meta: FrameMeta,
        bytes: &'a [u8],
    },
    /// The reader reached its end exactly at a frame boundary.
    End,
    /// The bytes at `pos` are not a valid frame.
    Damaged { pos: u64, damage: TailDamage },
}

/// Reads frames of one segment file from `pos` up to `end` with large positional reads.
/// Every length is bounded by `max_frame` and by the bytes left before `end` before any buffer
/// grows.
pub(crate) struct FrameReader<'f> {
    file: &'f File,
    path: &'f Path,
    max_frame: usize,
    end: u64,
    pos: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_pos: u64,
    /// Size of the next read; doubles up to `LARGE_CHUNK_BYTES` as the reader keeps going.
    chunk: usize,
}

impl<'f> FrameReader<'f> {
    pub(crate) fn new(
        file: &'f File,
        path: &'f Path,
        pos: u64,
        end: u64,
        max_frame: usize,
        chunk: usize,
    ) -> Self {
        FrameReader {
            file,
            path,
            max_frame,
            end,
            pos,
            buf: Vec::new(),
            buf_pos: pos,
            chunk,
        }
    }

    /// The next frame. A frame is only returned whole and checked; the reader does not move
    /// past damage.
    pub(crate) fn next(&mut self) -> Result<Step<'_>, LogError> {
        if self.pos >= self.end {
            return Ok(Step::End);
        }
        let pos = self.pos;
        let left = usize::try_from(self.end - pos).unwrap_or(usize::MAX);
        let damaged = |damage| Ok(Step::Damaged { pos, damage });
        if left < HEADER_BYTES || !self.fill(HEADER_BYTES)? {
            return damaged(TailDamage::Torn);
        }
        let total = match frame::frame_len(self.window(), self.max_frame) {
            Ok(Some(n)) => n,
            Ok(None) => return damaged(TailDamage::Torn),
            Err(d) => return damaged(d),
        };
        if total > left || !self.fill(total)? {
            return damaged(TailDamage::Torn);
        }
        let start = (pos - self.buf_pos) as usize;
        let bytes = &self.buf[start..start + total];
        match frame::verify(bytes) {
            Ok(meta) => {
                self.pos = pos + total as u64;
                Ok(Step::Frame { pos, meta, bytes })
            }
            Err(d) => damaged(d),
        }
    }

    fn window(&self) -> &[u8] {
        &self.buf[(self.pos - self.buf_pos) as usize..]
    }

    /// Make at least `need` bytes from `pos` available; `false` if the file ends first.
    fn fill(&mut self, need: usize) -> Result<bool, LogError> {
        if self.window().len() >= need {
            return Ok(true);
        }
        let consumed = (self.pos - self.buf_pos) as usize;
        self.buf.drain(..consumed);
        self.buf_pos = self.pos;
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let target = need.max(self.chunk.min(left));
        self.chunk = (self.chunk * 2).min(LARGE_CHUNK_BYTES);
        let mut filled = self.buf.len();
        self.buf.resize(target, 0);
        while filled < target {
            match self
                .file
                .read_at(&mut self.buf[filled..], self.pos + filled as u64)
            {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LogError::io("read", self.path, e)),
            }
        }
        self.buf.truncate(filled);
        Ok(filled >= need)
    }
}

/// What a full scan of a segment found.
#[derive(Debug, Clone)]
pub(crate) struct ScanOutcome {
    /// End of the last valid frame.
    pub(crate) valid_end: u64,
    /// Length of the file when scanned.
    pub(crate) file_len: u64,
    /// One past the last valid sequence number.
    pub(crate) next_seq: u64,
    pub(crate) last: Option<LastRecord>,
    /// Running maximum of enqueued times after the last valid record.
    pub(crate) max_time: i64,
    pub(crate) index: Vec<IndexEntry>,
    /// The first invalid frame, if the scan stopped before the end of the file.
    pub(crate) damage: Option<TailDamage>,
}

/// Scan the whole segment `id` in `dir`, checking every frame and that sequence numbers
/// continue from `base_seq`; `max_time` is the partition's running maximum before this segment.
/// Stops at the first invalid frame.
pub(crate) fn scan(
    dir: &Path,
    id: SegmentId,
    max_time: i64,
    index_interval: u64,
    max_frame: usize,
) -> Result<ScanOutcome, LogError> {
    let path = id.seg_path(dir);
    let file = File::open(&path).map_err(|e| LogError::io("open", &path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| LogError::io("stat", &path, e))?
        .len();
    let mut out = ScanOutcome {
        valid_end: 0,
        file_len,
        next_seq: id.base_seq,
        last: None,
        max_time,
        index: Vec::new(),
        damage: None,
    };
    let mut builder = IndexBuilder::new(index_interval);
    let mut reader = FrameReader::new(&file, &path, 0, file_len, max_frame, LARGE_CHUNK_BYTES);
    loop {
        match reader.next()? {
            Step::End => break,
            Step::Damaged { damage, .. } => {
                out.damage = Some(damage);
                break;
            }
            Step::Frame { pos, meta, bytes } => {
                if meta.seq != out.next_seq {
                    out.damage = Some(TailDamage::SequenceMismatch {
                        expected: out.next_seq,
                        found: meta.seq,
                    });
                    break;
                }
                out.max_time = out.max_time.max(meta.enqueued_ms);
                if builder.take(pos) {
                    out.index.push(IndexEntry {
                        seq: meta.seq,
                        pos,
                        max_time: out.max_time,
                    });
                }
                out.last = Some(LastRecord {
                    seq: meta.seq,
                    pos,
                    enqueued_ms: meta.enqueued_ms,
                });
                out.next_seq = meta.seq + 1;
                out.valid_end = pos + bytes.len() as u64;
            }
        }
    }
    Ok(out)
}
