//! Integration tests of `ferrohub-registry`, compiled as one binary: the store contract run
//! against every store, the registry façade run over every store, and property tests.

mod common;
mod job_store_contract;
mod props;
mod registry;
mod store_contract;
mod twins;
