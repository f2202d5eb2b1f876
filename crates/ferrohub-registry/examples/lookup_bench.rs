//! How fast the connect-time identity lookup is with a million identities.
//!
//! `cargo run --release -p ferrohub-registry --example lookup_bench -- [DEVICES] [LOOKUPS]`
//!
//! Fills a registry (in-memory store) with DEVICES identities through `bulk`, then times
//! LOOKUPS random `Registry::identity` calls, the lookup every MQTT CONNECT and HTTPS device
//! request makes. Prints the fill time, lookups per second and the process's peak RSS.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake};
use std::time::Instant;

use chrono::Utc;
use ferrohub_registry::{ImportMode, ImportRecord, MemoryStore, Registry};
use ferrohub_types::DeviceId;

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Arc::new(ThreadWaker(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let devices = args.first().copied().unwrap_or(1_000_000);
    let lookups = args.get(1).copied().unwrap_or(1_000_000);

    let registry = match block_on(Registry::open(MemoryStore::new())) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let start = Instant::now();
    let now = Utc::now();
    let mut i = 0u64;
    while i < devices {
        let end = (i + 100).min(devices);
        let records: Vec<ImportRecord> = (i..end)
            .filter_map(|n| DeviceId::new(format!("device-{n}")).ok())
            .map(|id| ImportRecord::new(id, ImportMode::Create))
            .collect();
        if let Err(e) = block_on(registry.bulk(records, now)) {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        i = end;
    }
    let fill = start.elapsed();

    // A cheap deterministic spread of ids (xorshift), so lookups hit the whole table.
    let ids: Vec<DeviceId> = {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..lookups.min(1_000_000))
            .filter_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                DeviceId::new(format!("device-{}", x % devices.max(1))).ok()
            })
            .collect()
    };
    let start = Instant::now();
    let mut found = 0u64;
    for n in 0..lookups {
        let id = &ids[(n as usize) % ids.len().max(1)];
        if registry.identity(id, None).is_some() {
            found += 1;
        }
    }
    let elapsed = start.elapsed();
    println!(
        "| identities | fill (bulk, memory store) | lookups | lookups/s | ns/lookup | found | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {devices} | {:.2} s | {lookups} | {:.0} | {:.0} | {found} | {} MiB |",
        fill.as_secs_f64(),
        lookups as f64 / elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / lookups.max(1) as f64,
        peak_rss_kib() / 1024
    );
}
