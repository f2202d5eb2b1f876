//! The event log contract, run against the embedded log and against JetStream (one server,
//! replicas 1, per case; and all cases on one three-server cluster with replicas 3).

use std::time::Duration;

use ferrohub_cluster::eventlog_contract::{run, run_all};
use ferrohub_cluster::testing::{NatsCluster, NatsServer, unique_name};
use ferrohub_cluster::{JetStreamConfig, JetStreamLog, ReadStrategy};
use ferrohub_log::Retention;
use ferrohub_server::eventlog::{EmbeddedLog, EmbeddedLogSettings};

async fn embedded() -> (EmbeddedLog, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let settings = EmbeddedLogSettings {
        partitions: 4,
        retention: Retention::unlimited(),
        max_commit_wait: Duration::from_millis(1),
    };
    let log = EmbeddedLog::open(&dir.path().join("eventlog"), &settings).expect("open");
    (log, dir)
}

/// A JetStream log configuration for `servers` with a unique prefix.
pub(crate) fn config(servers: Vec<String>, replicas: usize) -> JetStreamConfig {
    let mut config = JetStreamConfig::new(servers);
    config.prefix = unique_name("d2c").replace('_', "-");
    config.partitions = 4;
    config.replicas = replicas;
    config.append_timeout = Duration::from_secs(20);
    config
}

pub(crate) async fn nats_server() -> NatsServer {
    tokio::task::spawn_blocking(NatsServer::start)
        .await
        .expect("task")
        .expect("nats-server")
}

async fn jetstream(reads: ReadStrategy) -> (JetStreamLog, NatsServer) {
    let server = nats_server().await;
    let mut config = config(vec![server.url()], 1);
    config.reads = reads;
    let log = JetStreamLog::open(config).await.expect("open");
    (log, server)
}

ferrohub_cluster::event_log_contract!(embedded_log, embedded());
ferrohub_cluster::event_log_contract!(jetstream_r1, jetstream(ReadStrategy::DirectGet));
ferrohub_cluster::event_log_contract!(
    jetstream_r1_ordered_consumer_reads,
    jetstream(ReadStrategy::OrderedConsumer)
);

#[test]
fn jetstream_r3_on_three_servers() {
    run(async {
        let cluster = tokio::task::spawn_blocking(|| NatsCluster::start(3))
            .await
            .expect("task")
            .expect("cluster");
        let urls = cluster.urls();
        run_all(|_case| {
            let config = config(urls.clone(), 3);
            async move { JetStreamLog::open(config).await.expect("open") }
        })
        .await;
        drop(cluster);
    });
}
