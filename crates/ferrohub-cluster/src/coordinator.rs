//! How the hub nodes of a cluster reach each other: [`NodeCoordinator`], the cluster's
//! `ferrohub_server::cluster::Coordinator`.
//!
//! Two channels, each on an engine that already guarantees what it needs:
//!
//! * **PostgreSQL `LISTEN`**: the registry and C2D stores announce every committed change with
//!   `NOTIFY` in the writing transaction ([`crate::postgres::REGISTRY_CHANNEL`],
//!   [`crate::postgres::C2D_CHANNEL`]). A node keeps one listening connection: an identity
//!   changed through any node is re-read into its cache (so revocation, re-keying and deletion
//!   close its connections here within the notification's latency), and a message queued
//!   through any node wakes the device's connection here at once. When the listening
//!   connection breaks, the node reconnects, then re-reads every identity, since it may have
//!   missed notifications meanwhile; a missed C2D wake-up only delays a delivery until the
//!   device's next periodic check or reconnect.
//! * **NATS core subjects** (`{prefix}.cluster.events`, `{prefix}.cluster.methods`): what
//!   happens on one node's connections — an identity connected (older connections elsewhere
//!   close: one connection per identity across the cluster) or disconnected (presence), a
//!   desired-property patch for a device connected elsewhere, an Event Hubs owner-level
//!   receiver attached or gone (receivers it outranks elsewhere go) — is published once, in order, to
//!   every node. A direct method call for a device not connected here is a NATS request that
//!   only the node holding the device's connection answers.
//!
//! Core NATS delivers at most once: a node that is cut off from NATS misses events, which is
//! why it also reports itself unhealthy ([`Coordinator::health`]) so the balancer moves its
//! devices away.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

use ferrohub_server::cluster::{
    BoxFuture, ClusterEvent, ClusterHandler, Coordinator, MethodReply, MethodRequest,
};

use ferrohub_server::fence::EngineHealth;

use crate::postgres::{C2D_CHANNEL, REGISTRY_CHANNEL, RegistryNotification};

/// How to reach the engines the nodes talk through.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// This node's name, unique among the live nodes.
    pub node: String,
    /// NATS server URLs.
    pub nats: Vec<String>,
    /// Prefix of the NATS subjects (`{prefix}.cluster.…`).
    pub prefix: String,
    /// PostgreSQL connection string (the listening connection).
    pub postgres: String,
    /// Longest wait to connect to NATS or PostgreSQL (default 5 s).
    pub connect_timeout: Duration,
    /// How long to wait between attempts to re-open the listening connection (default 1 s).
    pub reconnect_delay: Duration,
    /// How often to ping the NATS server; two unanswered pings end the connection (default
    /// 2 s).
    pub ping_interval: Duration,
}

impl CoordinatorConfig {
    /// The defaults for `node` on these engines.
    pub fn new(node: &str, nats: Vec<String>, prefix: &str, postgres: &str) -> Self {
        CoordinatorConfig {
            node: node.to_owned(),
            nats,
            prefix: prefix.to_owned(),
            postgres: postgres.to_owned(),
            connect_timeout: Duration::from_secs(5),
            reconnect_delay: Duration::from_secs(1),
            ping_interval: Duration::from_secs(2),
        }
    }
}

/// Why the coordinator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// NATS could not be reached.
    #[error("NATS: {0}")]
    Nats(String),
    /// PostgreSQL could not be reached for the change feed.
    #[error("PostgreSQL change feed: {0}")]
    Postgres(String),
}

/// What travels on `{prefix}.cluster.events`.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    origin: String,
    event: ClusterEvent,
}

/// Inbound work, queued from the moment the coordinator connects until the hub attaches.
struct Inbound {
    feed: mpsc::UnboundedReceiver<ClusterEvent>,
    events: mpsc::UnboundedReceiver<ClusterEvent>,
    methods: mpsc::UnboundedReceiver<(MethodRequest, async_nats::Subject)>,
}

/// The cluster's [`Coordinator`]. See the module documentation.
pub struct NodeCoordinator {
    node: String,
    events_subject: String,
    methods_subject: String,
    client: async_nats::Client,
    outgoing: mpsc::UnboundedSender<ClusterEvent>,
    listening: Arc<AtomicBool>,
    inbound: Mutex<Option<Inbound>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for NodeCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCoordinator")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Drop for NodeCoordinator {
    fn drop(&mut self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            t.abort();
        }
    }
}

impl NodeCoordinator {
    /// Connects to NATS and opens the PostgreSQL listening connection; from then on, what the
    /// other nodes tell is queued until the hub [attaches](Coordinator::attach). Must be
    /// called on the tokio runtime that will run the coordinator's tasks.
    pub async fn connect(config: CoordinatorConfig) -> Result<NodeCoordinator, CoordinatorError> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("ferrohub {}", config.node))
            .retry_on_initial_connect()
            .connection_timeout(config.connect_timeout)
            // A server that stops answering without closing the connection (a partition) is
            // noticed within a few pings, so the node can fence itself.
            .ping_interval(config.ping_interval)
            .connect(config.nats.clone())
            .await
            .map_err(|e| CoordinatorError::Nats(e.to_string()))?;
        let events_subject = format!("{}.cluster.events", config.prefix);
        let methods_subject = format!("{}.cluster.methods", config.prefix);
        let mut events_sub = client
            .subscribe(events_subject.clone())
            .await
            .map_err(|e| CoordinatorError::Nats(e.to_string()))?;
        let mut methods_sub = client
            .subscribe(methods_subject.clone())
            .await
            .map_err(|e| CoordinatorError::Nats(e.to_string()))?;
        // The subscriptions are in place on the server before anything is announced.
        tokio::time::timeout(config.connect_timeout, client.flush())
            .await
            .map_err(|_| CoordinatorError::Nats("no answer from NATS".into()))?
            .map_err(|e| CoordinatorError::Nats(e.to_string()))?;

        let mut tasks = Vec::new();
        let (events_tx, events) = mpsc::unbounded_channel();
        let own = config.node.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(msg) = events_sub.next().await {
                match serde_json::from_slice::<Envelope>(&msg.payload) {
                    Ok(env) if env.origin == own => {}
                    Ok(env) => {
                        if events_tx.send(env.event).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "an unreadable cluster event"),
                }
            }
        }));
        let (methods_tx, methods) = mpsc::unbounded_channel();
        tasks.push(tokio::spawn(async move {
            while let Some(msg) = methods_sub.next().await {
                let Some(reply) = msg.reply.clone() else {
                    continue;
                };
                match serde_json::from_slice::<MethodRequest>(&msg.payload) {
                    Ok(req) => {
                        if methods_tx.send((req, reply)).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "an unreadable method request"),
                }
            }
        }));

        let (outgoing, mut out_rx) = mpsc::unbounded_channel::<ClusterEvent>();
        let publisher = client.clone();
        let subject = events_subject.clone();
        let origin = config.node.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(event) = out_rx.recv().await {
                let env = Envelope {
                    origin: origin.clone(),
                    event,
                };
                let Ok(payload) = serde_json::to_vec(&env) else {
                    continue;
                };
                if let Err(e) = publisher
                    .publish(subject.clone(), Bytes::from(payload))
                    .await
                {
                    tracing::warn!(error = %e, "telling the other nodes failed");
                }
            }
        }));

        let listening = Arc::new(AtomicBool::new(false));
        let (feed_tx, feed) = mpsc::unbounded_channel();
        let first = listen(&config.postgres, &feed_tx, config.connect_timeout)
            .await
            .map_err(CoordinatorError::Postgres)?;
        listening.store(true, Ordering::SeqCst);
        tasks.push(tokio::spawn(follow_feed(
            config.clone(),
            first,
            feed_tx,
            listening.clone(),
        )));

        Ok(NodeCoordinator {
            node: config.node,
            events_subject,
            methods_subject,
            client,
            outgoing,
            listening,
            inbound: Mutex::new(Some(Inbound {
                feed,
                events,
                methods,
            })),
            tasks: Mutex::new(tasks),
        })
    }

    /// The subject events are published on.
    pub fn events_subject(&self) -> &str {
        &self.events_subject
    }
}

/// A listening connection: its task forwards notifications until the connection ends.
type Listener = JoinHandle<()>;

/// Opens a connection, `LISTEN`s on the registry and C2D channels, and forwards what arrives
/// to `feed` as events, until the connection ends (then the returned task finishes).
async fn listen(
    url: &str,
    feed: &mpsc::UnboundedSender<ClusterEvent>,
    timeout: Duration,
) -> Result<Listener, String> {
    let (client, mut connection) =
        tokio::time::timeout(timeout, tokio_postgres::connect(url, NoTls))
            .await
            .map_err(|_| format!("no answer from PostgreSQL within {timeout:?}"))?
            .map_err(|e| e.to_string())?;
    let (note_tx, mut notes) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if note_tx.send(n).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the PostgreSQL change feed's connection failed");
                    return;
                }
            }
        }
    });
    let sql = format!("LISTEN {REGISTRY_CHANNEL}; LISTEN {C2D_CHANNEL}");
    if let Err(e) = tokio::time::timeout(timeout, client.batch_execute(&sql))
        .await
        .map_err(|_| "LISTEN timed out".to_owned())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        driver.abort();
        return Err(e);
    }
    let feed = feed.clone();
    Ok(tokio::spawn(async move {
        // The client must live as long as the connection is wanted.
        let _client = client;
        while let Some(n) = notes.recv().await {
            let event = if n.channel() == REGISTRY_CHANNEL {
                match RegistryNotification::parse(n.payload()) {
                    Ok(note) => ClusterEvent::IdentityChanged {
                        device: note.device,
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "an unreadable registry notification");
                        continue;
                    }
                }
            } else if n.channel() == C2D_CHANNEL {
                ClusterEvent::C2dQueued {
                    device: n.payload().to_owned(),
                }
            } else {
                continue;
            };
            if feed.send(event).is_err() {
                break;
            }
        }
        driver.abort();
    }))
}

/// Keeps a listening connection open: when it ends, reconnects (every `reconnect_delay`) and
/// asks for every identity to be re-read, since notifications may have been missed.
async fn follow_feed(
    config: CoordinatorConfig,
    mut current: Listener,
    feed: mpsc::UnboundedSender<ClusterEvent>,
    listening: Arc<AtomicBool>,
) {
    loop {
        let _ = (&mut current).await;
        listening.store(false, Ordering::SeqCst);
        tracing::warn!("the PostgreSQL change feed is down; reconnecting");
        current = loop {
            tokio::time::sleep(config.reconnect_delay).await;
            match listen(&config.postgres, &feed, config.connect_timeout).await {
                Ok(l) => break l,
                Err(e) => tracing::debug!(error = %e, "the change feed cannot reconnect yet"),
            }
        };
        listening.store(true, Ordering::SeqCst);
        tracing::info!("the PostgreSQL change feed is back; re-reading the identities");
        if feed.send(ClusterEvent::Resync).is_err() {
            return;
        }
    }
}

impl Coordinator for NodeCoordinator {
    fn node(&self) -> &str {
        &self.node
    }

    fn is_clustered(&self) -> bool {
        true
    }

    fn attach(&self, handler: Arc<dyn ClusterHandler>) {
        let Some(Inbound {
            mut feed,
            mut events,
            mut methods,
        }) = self
            .inbound
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            tracing::warn!("the cluster coordinator was attached twice");
            return;
        };
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        // Each source in its own task and in order: a slow re-read of an identity does not
        // hold up takeovers.
        let h = handler.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(event) = feed.recv().await {
                h.on_event(event).await;
            }
        }));
        let h = handler.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                h.on_event(event).await;
            }
        }));
        let client = self.client.clone();
        tasks.push(tokio::spawn(async move {
            while let Some((request, reply)) = methods.recv().await {
                let h = handler.clone();
                let client = client.clone();
                // Calls wait for devices: each in its own task.
                tokio::spawn(async move {
                    if let Some(answer) = h.on_method(request).await
                        && let Ok(payload) = serde_json::to_vec(&answer)
                        && let Err(e) = client.publish(reply, Bytes::from(payload)).await
                    {
                        tracing::warn!(error = %e, "answering a method call failed");
                    }
                });
            }
        }));
    }

    fn publish(&self, event: ClusterEvent) {
        let _ = self.outgoing.send(event);
    }

    fn call_method(&self, request: MethodRequest) -> BoxFuture<'_, Option<MethodReply>> {
        Box::pin(async move {
            let wait = Duration::from_secs(
                request
                    .connect_timeout_secs
                    .saturating_add(request.response_timeout_secs)
                    .saturating_add(2),
            );
            let payload = serde_json::to_vec(&request).ok()?;
            let req = async_nats::Request::new()
                .payload(Bytes::from(payload))
                .timeout(Some(wait));
            match self
                .client
                .send_request(self.methods_subject.clone(), req)
                .await
            {
                Ok(msg) => serde_json::from_slice(&msg.payload).ok(),
                Err(e) => {
                    tracing::debug!(error = %e, "no node answered a method call");
                    None
                }
            }
        })
    }

    fn engines(&self) -> EngineHealth {
        EngineHealth {
            nats: self.client.connection_state() == async_nats::connection::State::Connected,
            postgres: self.listening.load(Ordering::SeqCst),
        }
    }

    fn health(&self) -> Result<(), String> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => {}
            state => return Err(format!("not connected to NATS ({state})")),
        }
        if !self.listening.load(Ordering::SeqCst) {
            return Err("the PostgreSQL change feed is down".into());
        }
        Ok(())
    }
}
