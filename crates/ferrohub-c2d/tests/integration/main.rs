//! Integration tests of `ferrohub-c2d`, compiled as one binary: the queue contract run over
//! every store, what only the SQLite store promises (durability, the registry trigger, crash
//! safety), and a property test that both stores behave alike.

mod common;
mod contract;
mod props;
mod sqlite_only;
