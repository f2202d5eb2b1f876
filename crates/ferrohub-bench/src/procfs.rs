//! What `/proc` says about a process: resident memory and CPU time. Plus raising this
//! process's open-file limit.

use std::io;
use std::time::{Duration, Instant};

use serde::Serialize;

/// `VmRSS` of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vmrss(&status).ok_or_else(|| io::Error::other("no VmRSS line in /proc/PID/status"))
}

/// How many file descriptors process `pid` has open (entries of `/proc/PID/fd`): sockets,
/// files and pipes alike, which is what a connection flood or a leak shows up in.
pub fn fd_count(pid: u32) -> io::Result<u64> {
    let mut n = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        entry?;
        n += 1;
    }
    Ok(n)
}

/// The `VmRSS:  1234 kB` line of a `/proc/PID/status` text, in KiB.
pub fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") | None => Some(value),
        _ => None,
    }
}

/// User plus system CPU time of process `pid` (`None`: this process), all threads.
pub fn cpu_time(pid: Option<u32>) -> io::Result<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path)?;
    let ticks =
        parse_stat_ticks(&stat).ok_or_else(|| io::Error::other("unreadable /proc/PID/stat"))?;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Ok(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000 / hz),
    ))
}

/// `utime + stime` (clock ticks) from a `/proc/PID/stat` line. The command name may hold
/// spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
    // cmajflt utime(11) stime(12).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU use over an interval, in percent of one core (200 % = both cores of a 2-core machine).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuUsage {
    /// Length of the interval, seconds.
    pub interval_s: f64,
    /// The generator (this process).
    pub generator_pct: f64,
    /// The server, when its pid was given.
    pub server_pct: Option<f64>,
}

/// A CPU-time sample of this process and, optionally, the server.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    at: Instant,
    own: Duration,
    server_pid: Option<u32>,
    server: Option<Duration>,
}

impl CpuMeter {
    /// Samples now.
    pub fn start(server_pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            at: Instant::now(),
            own: cpu_time(None).unwrap_or_default(),
            server_pid,
            server: server_pid.and_then(|p| cpu_time(Some(p)).ok()),
        }
    }

    /// CPU use since [`CpuMeter::start`].
    pub fn finish(&self) -> CpuUsage {
        let elapsed = self.at.elapsed();
        let own = cpu_time(None).unwrap_or_default();
        let server = match (self.server_pid, self.server) {
            (Some(pid), Some(before)) => cpu_time(Some(pid))
                .ok()
                .map(|after| percent(after.saturating_sub(before), elapsed)),
            _ => None,
        };
        CpuUsage {
            interval_s: crate::stats::round1(elapsed.as_secs_f64()),
            generator_pct: percent(own.saturating_sub(self.own), elapsed),
            server_pct: server,
        }
    }
}

/// `busy` as a percentage of `elapsed`, one decimal.
pub fn percent(busy: Duration, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        return 0.0;
    }
    crate::stats::round1(100.0 * busy.as_secs_f64() / elapsed.as_secs_f64())
}

/// Raises this process's soft open-file limit towards `wanted` (up to the hard limit, which
/// only a privileged process can raise). Returns the soft limit in force afterwards.
pub fn raise_nofile(wanted: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let current = now.current.unwrap_or(u64::MAX);
    if current >= wanted {
        return current;
    }
    // Try the hard limit itself first (works as root with CAP_SYS_RESOURCE), then the soft one.
    let raised_hard = Rlimit {
        current: Some(wanted),
        maximum: Some(wanted.max(now.maximum.unwrap_or(u64::MAX))),
    };
    if setrlimit(Resource::Nofile, raised_hard).is_ok() {
        return wanted;
    }
    let target = now.maximum.map_or(wanted, |max| wanted.min(max));
    let soft_only = Rlimit {
        current: Some(target),
        maximum: now.maximum,
    };
    match setrlimit(Resource::Nofile, soft_only) {
        Ok(()) => target,
        Err(_) => current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vmrss() {
        let status = "Name:\tferrohub\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss(status), Some(12345));
        assert_eq!(parse_vmrss("Name:\tx\n"), None);
        assert_eq!(parse_vmrss("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn parses_stat_with_awkward_names() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_stat_ticks(stat), Some(300));
        assert_eq!(parse_stat_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(rss_kib(pid).expect("rss") > 0);
        assert!(fd_count(pid).expect("fds") >= 3);
        let _ = cpu_time(None).expect("cpu time");
        let meter = CpuMeter::start(Some(pid));
        let usage = meter.finish();
        assert!(usage.server_pct.is_some());
    }

    #[test]
    fn percentages() {
        assert_eq!(
            percent(Duration::from_millis(500), Duration::from_secs(1)),
            50.0
        );
        assert_eq!(percent(Duration::from_secs(1), Duration::ZERO), 0.0);
    }

    #[test]
    fn nofile_never_goes_down() {
        let before = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        assert!(raise_nofile(16) >= before.min(16));
    }
}
