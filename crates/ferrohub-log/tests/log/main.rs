//! Integration tests of `ferrohub-log`, compiled into one binary.
//!
//! - `basic`: append, flush, read from every kind of start, reopen, limits.
//! - `recovery`: torn tails, damaged indexes, damaged durable data.
//! - `retention`: removal by age and size.
//! - `writer`: the group-commit writer.
//! - `disk_full`: a disk that fills up and is freed, on a small tmpfs.
//! - `crash`: property tests that damage the unsynced tail at random points.
//! - `kill`: a writer process killed with SIGKILL at random moments.

#![allow(clippy::unwrap_used)]

mod basic;
mod crash;
mod disk_full;
mod kill;
mod recovery;
mod retention;
mod support;
mod writer;
