//! Integration tests of `ferrohub-cluster`, compiled as one binary: the store contract suites
//! against PostgreSQL (the machine's server, a fresh database per case), what only the
//! PostgreSQL stores promise (migrations, notifications, the registry link, outages), and the
//! event log contract against JetStream (nats-server processes started per test).

mod epoch;
mod eventlog_contract;
mod hub;
mod jetstream_only;
mod jobs;
mod nodes;
mod pg_contract;
mod pg_stores;
mod presence;
