//! Event Hubs owner-level (epoch) receivers across the nodes of a cluster: a receiver on one
//! node displaces the receivers it outranks on another, with the error a single node gives,
//! and lower receivers are refused on every node while it holds the partition.

use std::time::Duration;

use ferrohub_amqp::azure::event::EPOCH;
use ferrohub_amqp::message::MessageId;
use ferrohub_amqp::performative::{AmqpError, Fields, Role, Source, Target};
use ferrohub_amqp::types::{Symbol, Value};
use ferrohub_auth::mint;
use ferrohub_test_support::amqp::{AmqpClientError, AmqpTestClient, new_attach, put_token};
use ferrohub_test_support::{TestHub, eventually, now_secs};

use crate::nodes::Engines;

/// How long a node may take to hear of a receiver on another node.
const WAIT: Duration = Duration::from_secs(15);

/// Partition 0 of `$Default`, as the SDKs address it.
const ADDRESS: &str = "localhost/ConsumerGroups/$Default/Partitions/0";

/// An AMQP connection to one node with the `service` policy's token on `$cbs`.
async fn connect(hub: &TestHub) -> AmqpTestClient {
    let mut c = hub
        .amqp_sasl("ANONYMOUS", Some(b""))
        .await
        .expect("SASL ANONYMOUS");
    let audience = "sb://localhost/localhost";
    let token = mint(
        audience,
        &hub.policy_key("service"),
        now_secs() + 600,
        Some("service"),
    );
    let (status, _, _) = put_token(&mut c, audience, &token, MessageId::Uuid([7; 16])).await;
    assert_eq!(status, 200);
    c
}

/// Attaches receiver `name` of partition 0 with `epoch`: its handle, or the refusal's error.
async fn receiver(
    c: &mut AmqpTestClient,
    name: &str,
    epoch: Option<i64>,
) -> Result<u32, AmqpError> {
    let mut a = new_attach(
        name,
        Role::Receiver,
        Source::address(ADDRESS),
        Target::address(format!("{name}-target")),
    );
    let mut props = Fields::new();
    props.insert(Symbol::from_static("com.microsoft:timeout"), Value::Long(0));
    if let Some(e) = epoch {
        props.insert(EPOCH, Value::Long(e));
    }
    a.properties = Some(props);
    match c.attach_link(a, 0).await {
        Ok(handle) => Ok(handle),
        Err(AmqpClientError::Detached { error, .. }) => {
            Err(error.expect("a refusal carries an error"))
        }
        Err(e) => panic!("attaching {name}: {e}"),
    }
}

/// Waits for the hub to detach `handle`; returns the error.
async fn detached(c: &mut AmqpTestClient, handle: u32) -> AmqpError {
    tokio::time::timeout(WAIT, c.detached(handle))
        .await
        .expect("detached in time")
        .expect("the connection stays open")
        .expect("an error")
}

#[tokio::test]
async fn an_owner_level_receiver_displaces_and_refuses_across_nodes() {
    let engines = Engines::start().await;
    let a = engines.node("epoch-a").await;
    let b = engines.node("epoch-b").await;

    let mut ca = connect(&a).await;
    let first = receiver(&mut ca, "a1", Some(1))
        .await
        .expect("epoch 1 on A");

    // Epoch 2 on node B takes the partition: A's receiver is detached as on one node.
    let mut cb = connect(&b).await;
    let owner = receiver(&mut cb, "b2", Some(2))
        .await
        .expect("epoch 2 on B");
    let e = detached(&mut ca, first).await;
    assert_eq!(e.condition.as_str(), "amqp:link:stolen", "{e:?}");
    assert!(
        e.description
            .as_deref()
            .is_some_and(|t| t.contains("higher epoch of '2'")),
        "{e:?}"
    );

    // A lower epoch, and a receiver without one, are refused on A while B's receiver lasts.
    let e = receiver(&mut ca, "a1-again", Some(1))
        .await
        .expect_err("epoch 1 on A is refused");
    assert_eq!(e.condition.as_str(), "amqp:link:stolen", "{e:?}");
    assert!(
        e.description
            .as_deref()
            .is_some_and(|t| t.contains("lower than the current epoch of '2'")),
        "{e:?}"
    );
    let e = receiver(&mut ca, "a-plain", None)
        .await
        .expect_err("a receiver without an epoch on A is refused");
    assert_eq!(e.condition.as_str(), "amqp:link:stolen", "{e:?}");

    // Once B's receiver leaves, A accepts lower epochs again.
    cb.detach(owner).await.expect("detach");
    let a = &a;
    eventually(
        WAIT,
        "epoch 1 accepted on A after the owner left",
        || async move {
            let mut c = connect(a).await;
            receiver(&mut c, "a1-later", Some(1)).await.ok()
        },
    )
    .await;
}
