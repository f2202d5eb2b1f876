//! The registry, scheduled job and queue contract suites, run against the PostgreSQL stores.

use ferrohub_cluster::testing::pg_fixture;
use ferrohub_cluster::{PgJobStore, PgQueueStore, PgRegistryStore};

ferrohub_registry::registry_store_contract!(registry, pg_fixture(PgRegistryStore::open));
ferrohub_c2d::c2d_store_contract!(queues, pg_fixture(PgQueueStore::open));
ferrohub_registry::job_store_contract!(scheduled_jobs, pg_fixture(PgJobStore::open));
