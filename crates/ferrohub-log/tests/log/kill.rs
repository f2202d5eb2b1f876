//! A real crash: a child process (this test binary, re-executed with an environment variable
//! that selects the writer role) appends through `LogWriter` from several threads and prints
//! every acknowledged record; it is killed with SIGKILL at a random moment, several times in a
//! row on the same log. After each kill every acknowledged record must be present and intact.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferrohub_log::{
    Log, LogConfig, LogWriter, Record, RecordIn, Retention, StartPosition, WriterConfig,
};

use crate::support::Rng;

const CHILD_DIR: &str = "FERROHUB_LOG_KILL_CHILD_DIR";
const CHILD_ROUND: &str = "FERROHUB_LOG_KILL_CHILD_ROUND";
const ROUNDS: usize = 6;

fn config(dir: &Path) -> LogConfig {
    let mut cfg = LogConfig::new(dir);
    cfg.partitions = 2;
    cfg.segment_bytes = 64 * 1024;
    cfg.index_interval_bytes = 1024;
    cfg.retention = Retention::unlimited();
    cfg
}

/// The body of the record tagged `tag`; its length varies so segments roll at odd places.
fn body(tag: &str) -> Vec<u8> {
    let len = tag.bytes().map(usize::from).sum::<usize>() * 13 % 3000;
    tag.bytes().cycle().take(len.max(tag.len())).collect()
}

/// The child's role. A no-op unless the parent set the environment variable.
#[test]
fn kill9_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let round = std::env::var(CHILD_ROUND).unwrap_or_default();
    let (log, _) = Log::open(config(Path::new(&dir))).unwrap();
    let writer = LogWriter::spawn(log, WriterConfig::default()).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let writer = &writer;
            let round = &round;
            s.spawn(move || {
                let device = format!("dev-{t}");
                let p = writer.log().partition_for(&device);
                for i in 0.. {
                    let tag = format!("r{round}-t{t}-{i}");
                    let rec = RecordIn {
                        enqueued_ms: i,
                        application_properties: vec![("tag".into(), tag.clone())],
                        body: body(&tag),
                        ..RecordIn::default()
                    };
                    let pos = writer.append_blocking(p, vec![rec]).unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {p} {} {tag}", pos[0].sequence_number).unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}

#[test]
fn kill9_never_loses_acknowledged_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng::from_time();
    let mut acked: Vec<(u32, u64, String)> = Vec::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "kill::kill9_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, &dir)
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(ack) = line.strip_prefix("ACK ") {
                    let mut it = ack.split(' ');
                    let p = it.next().unwrap().parse::<u32>().unwrap();
                    let seq = it.next().unwrap().parse::<u64>().unwrap();
                    let tag = it.next().unwrap().to_string();
                    let _ = tx.send((p, seq, tag));
                }
            }
        });
        // Kill once the child is writing, at a random moment.
        let first = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("child acknowledged nothing");
        let until = Instant::now() + Duration::from_millis(20 + rng.below(400));
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        acked.push(first);
        acked.extend(rx.try_iter());

        let (log, report) = Log::open(config(&dir)).unwrap();
        let all: Vec<Vec<Record>> = (0..2)
            .map(|p| log.read(p, StartPosition::Earliest, usize::MAX).unwrap())
            .collect();
        for records in &all {
            assert!(
                records
                    .iter()
                    .enumerate()
                    .all(|(i, r)| r.sequence_number == i as u64)
            );
        }
        for (p, seq, tag) in &acked {
            let r = all[*p as usize].get(*seq as usize).unwrap_or_else(|| {
                panic!("round {round}: acknowledged {p}/{seq} ({tag}) is gone; {report:?}")
            });
            assert_eq!(
                r.application_properties,
                vec![("tag".to_string(), tag.clone())]
            );
            assert_eq!(r.body, body(tag));
        }
    }
    assert!(
        acked.len() > ROUNDS,
        "too few acknowledgements to mean anything"
    );
}
