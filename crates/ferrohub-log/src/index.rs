//! The sparse index of a segment, and its file format.
//!
//! An entry is taken at the first record of a segment and then at the first record that starts
//! at least `index_interval_bytes` after the previous entry ([`IndexBuilder`]; the writer and
//! the recovery scan use the same rule, so a rebuilt index equals the original). An entry holds
//! the record's sequence number, its byte position in the segment file, and the partition's
//! running maximum of enqueued times up to and including that record. The running maximum never
//! decreases, so a seek by time is a binary search even though enqueued times may step back.
//!
//! The active segment's index lives in memory only (recovery scans the active segment anyway).
//! When a segment is sealed its index is written once, atomically (`fs::write_file_durable`):
//!
//! ```text
//! header  (24 B): "FHLIDX01" base_seq:u64 base_offset:u64
//! entries (32 B each): seq:u64 pos:u64 max_time:i64 crc:u32 0:u32   (crc over the 24 bytes)
//! trailer (64 B): "FHLIDXT1" entries:u64 end:u64 next_seq:u64 last_pos:u64 last_time:i64
//!                 max_time:i64 crc:u32 0:u32                         (crc over header + trailer)
//! ```
//!
//! `end` is the segment's file length; an index whose `end` differs from the segment on disk is
//! stale and is rebuilt. On open every entry is checked (CRC, order, bounds), which reads about
//! 0.8 % of the log at the default interval. Lookups afterwards read single entries with
//! positional reads and check each one's CRC; a damaged entry makes the lookup fall back to
//! scanning the segment from its start.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::LogError;
use crate::segment::{LastRecord, SegmentId};

const HEADER_MAGIC: &[u8; 8] = b"FHLIDX01";
const TRAILER_MAGIC: &[u8; 8] = b"FHLIDXT1";
const HEADER_BYTES: u64 = 24;
const ENTRY_BYTES: u64 = 32;
const TRAILER_BYTES: u64 = 64;

/// One index entry; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) seq: u64,
    pub(crate) pos: u64,
    pub(crate) max_time: i64,
}

/// What a sealed segment's index trailer records about the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SealedMeta {
    /// File length of the segment.
    pub(crate) end: u64,
    /// One past the segment's last sequence number.
    pub(crate) next_seq: u64,
    /// The segment's last record, if it has any.
    pub(crate) last: Option<LastRecord>,
    /// Running maximum of enqueued times at the segment's end.
    pub(crate) max_time: i64,
    /// Number of index entries.
    pub(crate) entries: u64,
}

/// The key of an index search: the last entry not after it is where a scan starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IndexKey {
    /// Last entry with `seq <= s`.
    Seq(u64),
    /// Last entry with `pos <= p`.
    Pos(u64),
    /// Last entry with `max_time < t`: every record up to it is older than `t`.
    TimeBefore(i64),
}

impl IndexKey {
    /// Whether `e` is at or before the key. Monotone over a segment's entries.
    pub(crate) fn admits(self, e: &IndexEntry) -> bool {
        match self {
            IndexKey::Seq(s) => e.seq <= s,
            IndexKey::Pos(p) => e.pos <= p,
            IndexKey::TimeBefore(t) => e.max_time < t,
        }
    }
}

/// Decides which records get an index entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexBuilder {
    interval: u64,
    last_pos: Option<u64>,
}

impl IndexBuilder {
    pub(crate) fn new(interval: u64) -> Self {
        IndexBuilder {
            interval,
            last_pos: None,
        }
    }

    /// A builder that goes on after the entry at `last_pos` (none: from the segment's start).
    pub(crate) fn resume(interval: u64, last_pos: Option<u64>) -> Self {
        IndexBuilder { interval, last_pos }
    }

    /// Whether the record starting at `pos` gets an entry; remembers it if so.
    pub(crate) fn take(&mut self, pos: u64) -> bool {
        let due = match self.last_pos {
            None => true,
            Some(last) => pos.saturating_sub(last) >= self.interval,
        };
        if due {
            self.last_pos = Some(pos);
        }
        due
    }
}

/// Search in-memory entries.
pub(crate) fn search(entries: &[IndexEntry], key: IndexKey) -> Option<IndexEntry> {
    let n = entries.partition_point(|e| key.admits(e));
    n.checked_sub(1).and_then(|i| entries.get(i)).copied()
}

/// Serialise a sealed segment's index.
pub(crate) fn encode(id: SegmentId, entries: &[IndexEntry], meta: &SealedMeta) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        (HEADER_BYTES + ENTRY_BYTES * entries.len() as u64 + TRAILER_BYTES) as usize,
    );
    out.extend_from_slice(HEADER_MAGIC);
    out.extend_from_slice(&id.base_seq.to_le_bytes());
    out.extend_from_slice(&id.base_offset.to_le_bytes());
    for e in entries {
        let start = out.len();
        out.extend_from_slice(&e.seq.to_le_bytes());
        out.extend_from_slice(&e.pos.to_le_bytes());
        out.extend_from_slice(&e.max_time.to_le_bytes());
        let crc = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
    }
    let header_crc = crc32c::crc32c(&out[..HEADER_BYTES as usize]);
    let t = out.len();
    out.extend_from_slice(TRAILER_MAGIC);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    out.extend_from_slice(&meta.end.to_le_bytes());
    out.extend_from_slice(&meta.next_seq.to_le_bytes());
    let (last_pos, last_time) = meta.last.map_or((0, 0), |l| (l.pos, l.enqueued_ms));
    out.extend_from_slice(&last_pos.to_le_bytes());
    out.extend_from_slice(&last_time.to_le_bytes());
    out.extend_from_slice(&meta.max_time.to_le_bytes());
    let crc = crc32c::crc32c_append(header_crc, &out[t..]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out
}

/// Load and fully check the index of the sealed segment `id` whose file is `seg_len` bytes.
/// `Ok(Err(reason))` means the index is missing, stale or damaged and must be rebuilt;
/// `Err` is an I/O failure other than a missing file.
pub(crate) fn load(
    path: &Path,
    id: SegmentId,
    seg_len: u64,
) -> Result<Result<SealedMeta, String>, LogError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Err("missing".into())),
        Err(e) => return Err(LogError::io("read", path, e)),
    };
    Ok(parse(&bytes, id, seg_len))
}

fn parse(bytes: &[u8], id: SegmentId, seg_len: u64) -> Result<SealedMeta, String> {
    let len = bytes.len() as u64;
    if len < HEADER_BYTES + TRAILER_BYTES
        || !(len - HEADER_BYTES - TRAILER_BYTES).is_multiple_of(ENTRY_BYTES)
    {
        return Err(format!("impossible length {len}"));
    }
    let header = &bytes[..HEADER_BYTES as usize];
    if &header[..8] != HEADER_MAGIC
        || u64_at(header, 8) != id.base_seq
        || u64_at(header, 16) != id.base_offset
    {
        return Err("header does not match the segment".into());
    }
    let t = &bytes[(len - TRAILER_BYTES) as usize..];
    let crc = crc32c::crc32c_append(crc32c::crc32c(header), &t[..56]);
    if &t[..8] != TRAILER_MAGIC || crc != u32_at(t, 56) {
        return Err("trailer damaged".into());
    }
    let n = (len - HEADER_BYTES - TRAILER_BYTES) / ENTRY_BYTES;
    let meta_entries = u64_at(t, 8);
    let end = u64_at(t, 16);
    let next_seq = u64_at(t, 24);
    let last_pos = u64_at(t, 32);
    let last_time = u64_at(t, 40) as i64;
    let max_time = u64_at(t, 48) as i64;
    if meta_entries != n {
        return Err("entry count mismatch".into());
    }
    if end != seg_len {
        return Err(format!("stale: indexes {end} bytes, segment has {seg_len}"));
    }
    if next_seq < id.base_seq {
        return Err("sequence numbers out of range".into());
    }
    let empty = next_seq == id.base_seq;
    if empty != (n == 0) || empty != (end == 0) {
        return Err("entries do not match the segment's records".into());
    }
    let mut prev: Option<IndexEntry> = None;
    for i in 0..n {
        let e =
            entry_from(&bytes[(HEADER_BYTES + i * ENTRY_BYTES) as usize..][..ENTRY_BYTES as usize])
                .ok_or_else(|| format!("entry {i} damaged"))?;
        let ordered = match prev {
            None => e.pos == 0 && e.seq == id.base_seq,
            Some(p) => e.seq > p.seq && e.pos > p.pos && e.max_time >= p.max_time,
        };
        if !ordered || e.seq >= next_seq || e.pos >= end || e.max_time > max_time {
            return Err(format!("entry {i} out of order or range"));
        }
        prev = Some(e);
    }
    let last = (!empty).then_some(LastRecord {
        seq: next_seq - 1,
        pos: last_pos,
        enqueued_ms: last_time,
    });
    if let (Some(l), Some(p)) = (last, prev)
        && (l.pos < p.pos || l.pos >= end)
    {
        return Err("last record out of range".into());
    }
    Ok(SealedMeta {
        end,
        next_seq,
        last,
        max_time,
        entries: n,
    })
}

/// Binary-search the index file of a sealed segment with `entries` entries. `Ok(None)`: no
/// entry admits the key (start at the segment's beginning). `Err(reason)`: an entry failed
/// its CRC or could not be read; the caller scans the segment instead.
pub(crate) fn lookup(
    path: &Path,
    entries: u64,
    key: IndexKey,
) -> Result<Option<IndexEntry>, String> {
    let file = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let read = |i: u64| -> Result<IndexEntry, String> {
        let mut b = [0u8; ENTRY_BYTES as usize];
        file.read_exact_at(&mut b, HEADER_BYTES + i * ENTRY_BYTES)
            .map_err(|e| format!("read entry {i}: {e}"))?;
        entry_from(&b).ok_or_else(|| format!("entry {i} damaged"))
    };
    // Invariant: entries [0, lo) admit the key, entries [hi, n) do not.
    let (mut lo, mut hi) = (0u64, entries);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if key.admits(&read(mid)?) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    match lo.checked_sub(1) {
        None => Ok(None),
        Some(i) => read(i).map(Some),
    }
}

fn entry_from(b: &[u8]) -> Option<IndexEntry> {
    if crc32c::crc32c(&b[..24]) != u32_at(b, 24) {
        return None;
    }
    Some(IndexEntry {
        seq: u64_at(b, 0),
        pos: u64_at(b, 8),
        max_time: u64_at(b, 16) as i64,
    })
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (SegmentId, Vec<IndexEntry>, SealedMeta) {
        let id = SegmentId {
            base_seq: 10,
            base_offset: 1000,
        };
        let entries = vec![
            IndexEntry {
                seq: 10,
                pos: 0,
                max_time: 5,
            },
            IndexEntry {
                seq: 20,
                pos: 4100,
                max_time: 5,
            },
            IndexEntry {
                seq: 31,
                pos: 8300,
                max_time: 9,
            },
        ];
        let meta = SealedMeta {
            end: 9000,
            next_seq: 35,
            last: Some(LastRecord {
                seq: 34,
                pos: 8800,
                enqueued_ms: 7,
            }),
            max_time: 9,
            entries: 3,
        };
        (id, entries, meta)
    }

    #[test]
    fn round_trip_and_damage() {
        let (id, entries, meta) = sample();
        let bytes = encode(id, &entries, &meta);
        assert_eq!(parse(&bytes, id, 9000), Ok(meta));
        assert!(parse(&bytes, id, 9001).is_err(), "stale index accepted");
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            // Padding bytes are not covered; everything else is.
            let pad = ((24..24 + 96).contains(&i) && (i - 24) % 32 >= 28) || i >= bytes.len() - 4;
            if !pad {
                assert!(parse(&b, id, 9000).is_err(), "flip at {i} accepted");
            }
        }
    }

    #[test]
    fn search_in_memory() {
        let (_, entries, _) = sample();
        assert_eq!(search(&entries, IndexKey::Seq(9)), None);
        assert_eq!(search(&entries, IndexKey::Seq(25)).map(|e| e.seq), Some(20));
        assert_eq!(
            search(&entries, IndexKey::Pos(8300)).map(|e| e.seq),
            Some(31)
        );
        assert_eq!(
            search(&entries, IndexKey::TimeBefore(6)).map(|e| e.seq),
            Some(20)
        );
        assert_eq!(search(&entries, IndexKey::TimeBefore(5)), None);
    }
}
