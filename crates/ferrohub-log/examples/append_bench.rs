//! Benchmark of the log (not a test): durable append throughput for 256 B and 4 KiB records at
//! several group-commit bounds, next to the disk's own limit measured in the same run (plain
//! sequential writes + `fdatasync` into as many files, with the same bytes per sync), then read
//! throughput and recovery time. Prints markdown tables.
//!
//! ```text
//! cargo run --release -p ferrohub-log --example append_bench -- \
//!     [--mb 256] [--recovery-mb 1024] [--partitions 4] [--producers 4] [--inflight 2048] \
//!     [--segment-mb 128] [--dir /path/on/the/disk/to/measure]
//! ```
//!
//! `--mb` is the payload volume per append case, `--recovery-mb` the size of the log whose open
//! is timed (page cache warm). Producers each keep `--inflight` single-record appends
//! outstanding through `LogWriter`, like that many devices waiting for their PUBACK. The
//! `core, 1 thread` rows drive `Log::append`/`Log::flush` directly from one thread (flush every
//! 2048 records per partition), which shows what the writer threads and channels cost.
//!
//! "Same cadence" means the raw baseline writes the same bytes into as many files (one thread
//! each, as the log has one writer thread per partition) with the same number of `fdatasync`s,
//! so both pay for the same sync sizes; the CPU column shows when a run is CPU bound rather
//! than disk bound.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use ferrohub_log::{Log, LogConfig, LogWriter, RecordIn, Retention, StartPosition, WriterConfig};

/// Framed size minus body size of the records used here: 32 bytes of framing plus one system
/// property `message-id = m` (8 + 10 + 1).
const OVERHEAD: u64 = 51;

struct Args {
    mb: u64,
    recovery_mb: u64,
    partitions: u32,
    producers: u32,
    inflight: usize,
    segment_mb: u64,
    dir: PathBuf,
}

fn main() {
    let args = parse_args();
    let root = tempfile::Builder::new()
        .prefix("ferrohub-log-bench")
        .tempdir_in(&args.dir)
        .unwrap();
    println!(
        "# ferrohub-log append_bench\n\n{} MB per case, {} partitions, {} producers x {} in flight, dir {}\n",
        args.mb,
        args.partitions,
        args.producers,
        args.inflight,
        args.dir.display()
    );
    println!("## Durable append (acknowledged after fdatasync)\n");
    println!(
        "| record | max_wait | records | rec/s | MB/s | syncs | recs/sync | CPU s / wall s | raw write+fdatasync MB/s | log / raw |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut reads = Vec::new();
    let mut case = 0;
    for size in [256usize, 4096] {
        for wait_ms in [0u64, 1, 10] {
            case += 1;
            let dir = root.path().join(format!("case{case}"));
            let cpu0 = cpu_secs();
            let a = append_case(&args, &dir, size, Duration::from_millis(wait_ms));
            let cpu = cpu_secs() - cpu0;
            let raw = raw_case(&root.path().join(format!("raw{case}")), &a);
            println!(
                "| {size} B | {wait_ms} ms | {} | {:.0} | {:.1} | {} | {:.1} | {:.2} / {:.2} | {:.1} | {:.0} % |",
                a.records,
                a.records as f64 / a.secs,
                mb(a.framed_bytes) / a.secs,
                a.syncs,
                a.records as f64 / a.syncs.max(1) as f64,
                cpu,
                a.secs,
                raw,
                100.0 * (mb(a.framed_bytes) / a.secs) / raw
            );
            if wait_ms == 0 {
                reads.push((size, read_case(&dir, &args)));
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
        case += 1;
        let dir = root.path().join(format!("case{case}"));
        let cpu0 = cpu_secs();
        let a = core_case(&args, &dir, size);
        let cpu = cpu_secs() - cpu0;
        let raw = raw_case(&root.path().join(format!("raw{case}")), &a);
        println!(
            "| {size} B | core, 1 thread | {} | {:.0} | {:.1} | {} | {:.1} | {:.2} / {:.2} | {:.1} | {:.0} % |",
            a.records,
            a.records as f64 / a.secs,
            mb(a.framed_bytes) / a.secs,
            a.syncs,
            a.records as f64 / a.syncs.max(1) as f64,
            cpu,
            a.secs,
            raw,
            100.0 * (mb(a.framed_bytes) / a.secs) / raw
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
    println!(
        "\nMB/s counts framed bytes (payload + {OVERHEAD} B of framing and properties); raw writes \
         the same bytes into as many files with the same bytes per fdatasync.\n"
    );
    println!("## Read (page cache warm, batches of 10,000)\n");
    println!("| record | records | rec/s | MB/s |");
    println!("|---|---|---|---|");
    for (size, (records, bytes, secs)) in reads {
        println!(
            "| {size} B | {records} | {:.0} | {:.1} |",
            records as f64 / secs,
            mb(bytes) / secs
        );
    }
    println!("\n## Recovery\n");
    println!("| log size | segments | open time | GB/s |");
    println!("|---|---|---|---|");
    let (bytes, segments, secs) = recovery_case(&args, &root.path().join("recovery"));
    println!(
        "| {:.0} MB | {segments} | {:.3} s | {:.2} |",
        mb(bytes),
        secs,
        bytes as f64 / 1e9 / secs
    );
}

struct AppendResult {
    records: u64,
    framed_bytes: u64,
    secs: f64,
    syncs: u64,
    /// Per partition: (bytes written, syncs).
    per_partition: Vec<(u64, u64)>,
}

fn config(dir: &Path, args: &Args) -> LogConfig {
    let mut cfg = LogConfig::new(dir);
    cfg.partitions = args.partitions;
    cfg.segment_bytes = args.segment_mb * 1024 * 1024;
    cfg.retention = Retention::unlimited();
    cfg
}

fn record(size: usize, i: u64) -> RecordIn {
    let mut body = vec![0u8; size];
    // Incompressible enough: a cheap xorshift stream.
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in body.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    RecordIn {
        enqueued_ms: i as i64,
        system_properties: vec![("message-id".into(), "m".into())],
        application_properties: Vec::new(),
        body,
    }
}

fn append_case(args: &Args, dir: &Path, size: usize, max_wait: Duration) -> AppendResult {
    let (log, _) = Log::open(config(dir, args)).unwrap();
    let cfg = WriterConfig::with_max_wait(max_wait);
    let writer = Arc::new(LogWriter::spawn(log.clone(), cfg).unwrap());
    let total = (args.mb * 1_000_000 / size as u64).max(1);
    let per_producer = total / u64::from(args.producers);
    let start = Instant::now();
    let threads: Vec<_> = (0..args.producers)
        .map(|t| {
            let writer = Arc::clone(&writer);
            let inflight = args.inflight;
            let partitions = args.partitions;
            std::thread::spawn(move || {
                // Cloning from a pool keeps the generator's cost to one copy per record.
                let pool: Vec<RecordIn> = (0..64).map(|i| record(size, i)).collect();
                let mut window = VecDeque::with_capacity(inflight);
                for i in 0..per_producer {
                    let p = ((i + u64::from(t)) % u64::from(partitions)) as u32;
                    let mut rec = pool[(i % 64) as usize].clone();
                    rec.enqueued_ms = i as i64;
                    window.push_back(writer.append(p, vec![rec]));
                    if window.len() >= inflight {
                        block_on(window.pop_front().unwrap()).unwrap().unwrap();
                    }
                }
                for rx in window {
                    block_on(rx).unwrap().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let per_partition: Vec<(u64, u64)> = (0..args.partitions)
        .map(|p| {
            let s = log.partition(p).unwrap().stats();
            (s.bytes_written, s.syncs)
        })
        .collect();
    AppendResult {
        records: per_producer * u64::from(args.producers),
        framed_bytes: per_partition.iter().map(|s| s.0).sum(),
        secs,
        syncs: per_partition.iter().map(|s| s.1).sum(),
        per_partition,
    }
}

/// The synchronous core without the writer threads: one thread appends records one call
/// each, round robin over partitions, and flushes each partition every 2048 of its records.
fn core_case(args: &Args, dir: &Path, size: usize) -> AppendResult {
    let (log, _) = Log::open(config(dir, args)).unwrap();
    let pool: Vec<RecordIn> = (0..64).map(|i| record(size, i)).collect();
    let total = (args.mb * 1_000_000 / size as u64).max(1);
    let parts = u64::from(args.partitions);
    let start = Instant::now();
    for i in 0..total {
        let p = (i % parts) as u32;
        let mut rec = pool[(i % 64) as usize].clone();
        rec.enqueued_ms = i as i64;
        log.append(p, &[rec]).unwrap();
        if (i / parts + 1) % 2048 == 0 || i + parts >= total {
            log.flush(p).unwrap();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let per_partition: Vec<(u64, u64)> = (0..args.partitions)
        .map(|p| {
            let s = log.partition(p).unwrap().stats();
            (s.bytes_written, s.syncs)
        })
        .collect();
    AppendResult {
        records: total,
        framed_bytes: per_partition.iter().map(|s| s.0).sum(),
        secs,
        syncs: per_partition.iter().map(|s| s.1).sum(),
        per_partition,
    }
}

/// The disk's limit at the same cadence: for each partition a file, the same bytes, the same
/// number of `fdatasync`s, one thread per file. Returns MB/s.
fn raw_case(dir: &Path, a: &AppendResult) -> f64 {
    std::fs::create_dir_all(dir).unwrap();
    let start = Instant::now();
    let threads: Vec<_> = a
        .per_partition
        .iter()
        .enumerate()
        .map(|(i, &(bytes, syncs))| {
            let path = dir.join(format!("raw{i}"));
            std::thread::spawn(move || {
                let mut f = OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .open(&path)
                    .unwrap();
                let syncs = syncs.max(1);
                let chunk = vec![0xA5u8; (bytes / syncs).max(1) as usize];
                for _ in 0..syncs {
                    f.write_all(&chunk).unwrap();
                    f.sync_data().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    std::fs::remove_dir_all(dir).unwrap();
    mb(a.framed_bytes) / secs
}

fn read_case(dir: &Path, args: &Args) -> (u64, u64, f64) {
    let (log, _) = Log::open(config(dir, args)).unwrap();
    let start = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    for p in 0..args.partitions {
        let mut from = StartPosition::Earliest;
        loop {
            let batch = log.read(p, from, 10_000).unwrap();
            let Some(last) = batch.last() else { break };
            from = StartPosition::Sequence {
                seq: last.sequence_number,
                inclusive: false,
            };
            records += batch.len() as u64;
            bytes += batch
                .iter()
                .map(|r| r.body.len() as u64 + OVERHEAD)
                .sum::<u64>();
        }
    }
    (records, bytes, start.elapsed().as_secs_f64())
}

/// Build a log of `--recovery-mb` (4 KiB records, no waiting for syncs) and time its open.
fn recovery_case(args: &Args, dir: &Path) -> (u64, usize, f64) {
    {
        let (log, _) = Log::open(config(dir, args)).unwrap();
        let target = args.recovery_mb * 1_000_000 / u64::from(args.partitions);
        for p in 0..args.partitions {
            let mut i = 0;
            while log.partition(p).unwrap().stats().bytes_written < target {
                let batch: Vec<RecordIn> = (0..256).map(|k| record(4096, i + k)).collect();
                i += 256;
                log.append(p, &batch).unwrap();
            }
            log.flush(p).unwrap();
        }
    }
    let start = Instant::now();
    let (log, report) = Log::open(config(dir, args)).unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(report.is_clean());
    let mut bytes = 0;
    let mut segments = 0;
    for p in 0..args.partitions {
        for e in std::fs::read_dir(log.partition(p).unwrap().dir()).unwrap() {
            let e = e.unwrap();
            if e.path().extension().is_some_and(|x| x == "seg") {
                segments += 1;
                bytes += e.metadata().unwrap().len();
            }
        }
    }
    (bytes, segments, secs)
}

/// User + system CPU time of this process so far (Linux `/proc/self/stat`; 0 elsewhere).
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Clock ticks are 100 per second on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn parse_args() -> Args {
    let mut args = Args {
        mb: 256,
        recovery_mb: 1024,
        partitions: 4,
        producers: 4,
        inflight: 2048,
        segment_mb: 128,
        dir: std::env::temp_dir(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| usage(&flag));
        let num = || value.parse::<u64>().unwrap_or_else(|_| usage(&flag));
        match flag.as_str() {
            "--mb" => args.mb = num(),
            "--recovery-mb" => args.recovery_mb = num(),
            "--partitions" => args.partitions = num() as u32,
            "--producers" => args.producers = num().max(1) as u32,
            "--inflight" => args.inflight = num().max(1) as usize,
            "--segment-mb" => args.segment_mb = num().max(1),
            "--dir" => args.dir = PathBuf::from(&value),
            _ => usage(&flag),
        }
    }
    args
}

fn usage(flag: &str) -> ! {
    eprintln!(
        "bad argument {flag}\nusage: append_bench [--mb N] [--recovery-mb N] [--partitions N] \
         [--producers N] [--inflight N] [--segment-mb N] [--dir PATH]"
    );
    std::process::exit(2)
}

fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
