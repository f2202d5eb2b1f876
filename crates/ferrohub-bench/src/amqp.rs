//! AMQP 1.0 on Ferrohub's AMQP port, through `ferrohub-client`'s AMQP client (Ferrohub's own
//! codecs): the connection a service back end opens, the C2D sender of the `c2d --send amqp`
//! workload, and Event Hubs-style partition receivers for `e2e --reader amqp` and `eh-read`.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use ferrohub_amqp::azure::filter::{SELECTOR_FILTER, SELECTOR_FILTER_CODE};
use ferrohub_amqp::message::{Body, Message, MessageId, Properties};
use ferrohub_amqp::performative::{DeliveryState, Fields, Source};
use ferrohub_amqp::types::{Described, Value};
use ferrohub_client::amqp::{AmqpClient, Incoming};
use tokio::sync::{mpsc, oneshot};

use crate::c2d::SendOutcome;
use crate::conn::{BoxIo, Endpoint, Tls};
use crate::target::Ferrohub;

/// An AMQP connection to the hub.
pub type AmqpConn = AmqpClient<BoxIo>;

/// How long connecting and authorizing may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Opens a TLS connection to the hub's AMQP port and puts the `iothubowner` token on `$cbs`.
pub async fn connect_service(hub: &Ferrohub) -> anyhow::Result<AmqpConn> {
    let addr = hub
        .listeners
        .amqp
        .context("the hub's listeners.json names no AMQP listener")?;
    let tls = Tls::from_ca_pem(&hub.ca_pem, &hub.device_host, true)?;
    let endpoint = Endpoint {
        addr,
        tls: Some(tls),
    };
    let token = hub.service_token()?;
    let host = hub.device_host.clone();
    tokio::time::timeout(CONNECT_TIMEOUT, async {
        let io = crate::conn::open(&endpoint, None)
            .await
            .map_err(|e| anyhow::anyhow!("AMQP connect: {e}"))?;
        let mut conn = AmqpClient::open(io, &host).await.context("AMQP open")?;
        let (status, description) = conn
            .put_token(&host, &token)
            .await
            .context("$cbs put-token")?;
        if status != 200 {
            anyhow::bail!("$cbs put-token answered {status}: {description}");
        }
        Ok(conn)
    })
    .await
    .map_err(|_| anyhow::anyhow!("AMQP connect timed out"))?
}

/// The Event Hub name of the hub (the first label of its host name).
pub fn event_hub_name(hub: &Ferrohub) -> String {
    hub.device_host
        .split('.')
        .next()
        .unwrap_or(&hub.device_host)
        .to_owned()
}

/// A partition receiver's source: `{hub}/ConsumerGroups/$Default/Partitions/{p}`, from the
/// events with a sequence number of at least `from`.
pub fn partition_source(hub_name: &str, partition: &str, from: u64) -> Source {
    let mut filter = Fields::new();
    filter.insert(
        SELECTOR_FILTER.clone(),
        Value::Described(Box::new(Described {
            descriptor: Value::Ulong(SELECTOR_FILTER_CODE),
            value: Value::String(format!("amqp.annotation.x-opt-sequence-number >= '{from}'")),
        })),
    );
    let mut source = Source::address(format!(
        "{hub_name}/ConsumerGroups/$Default/Partitions/{partition}"
    ));
    source.filter = Some(filter);
    source
}

/// The body of an event as a receiver gets it: its data sections, joined.
pub fn body(message: &Message) -> Bytes {
    match message.body.as_data() {
        Some([one]) => one.clone(),
        Some(parts) => Bytes::from(parts.concat()),
        None => Bytes::new(),
    }
}

/// One C2D send for the sender task.
struct C2dRequest {
    device_id: String,
    message_id: String,
    body: Vec<u8>,
    answer: oneshot::Sender<SendOutcome>,
}

/// The service side's C2D sender over AMQP: one connection, one sender link to
/// `/messages/devicebound`, sends answered by the hub's outcome (accepted once queued).
#[derive(Clone)]
pub struct C2dSender {
    tx: mpsc::Sender<C2dRequest>,
}

impl C2dSender {
    /// Connects and attaches the sender link; a task owns the connection from then on.
    pub async fn start(hub: &Ferrohub) -> anyhow::Result<C2dSender> {
        let mut conn = connect_service(hub).await?;
        let link = conn
            .attach_sender("bench-c2d", "/messages/devicebound", None)
            .await
            .context("attaching the C2D sender link")?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(drive_c2d(conn, link, rx));
        Ok(C2dSender { tx })
    }

    /// Sends one message to `device_id` and waits for the hub's outcome.
    pub async fn send(&self, device_id: &str, message_id: String, body: Vec<u8>) -> SendOutcome {
        let (answer, outcome) = oneshot::channel();
        let request = C2dRequest {
            device_id: device_id.to_owned(),
            message_id,
            body,
            answer,
        };
        if self.tx.send(request).await.is_err() {
            return SendOutcome::Failed("the AMQP connection is gone".into());
        }
        outcome
            .await
            .unwrap_or_else(|_| SendOutcome::Failed("the AMQP connection is gone".into()))
    }
}

/// The outcome of a C2D delivery as the sending side counts it.
fn c2d_outcome(state: Option<&DeliveryState>) -> SendOutcome {
    match state {
        Some(DeliveryState::Accepted) => SendOutcome::Accepted,
        Some(DeliveryState::Rejected { error }) => {
            let full = error
                .as_ref()
                .is_some_and(|e| e.condition.as_str() == "amqp:resource-limit-exceeded");
            if full {
                SendOutcome::Refused
            } else {
                SendOutcome::Failed(format!("rejected: {error:?}"))
            }
        }
        other => SendOutcome::Failed(format!("outcome {other:?}")),
    }
}

/// Owns the connection: sends requests as credit allows, answers them from dispositions.
async fn drive_c2d(mut conn: AmqpConn, link: u32, mut rx: mpsc::Receiver<C2dRequest>) {
    let mut waiting: std::collections::VecDeque<C2dRequest> = std::collections::VecDeque::new();
    let mut in_flight: HashMap<u32, oneshot::Sender<SendOutcome>> = HashMap::new();
    let mut open = true;
    let failure = 'run: loop {
        // Send what credit allows.
        while conn.credit(link) > 0
            && let Some(req) = waiting.pop_front()
        {
            let message = Message {
                properties: Some(Properties {
                    message_id: Some(MessageId::String(req.message_id)),
                    to: Some(format!("/devices/{}/messages/devicebound", req.device_id)),
                    ..Properties::default()
                }),
                body: Body::data(req.body),
                ..Message::default()
            };
            match conn.try_send(link, &message, false).await {
                Ok(Some(id)) => {
                    in_flight.insert(id, req.answer);
                }
                Ok(None) => {
                    let _ = req.answer.send(SendOutcome::Failed("no credit".into()));
                }
                Err(e) => {
                    let _ = req.answer.send(SendOutcome::Failed(format!("{e}")));
                    break 'run Some(format!("{e}"));
                }
            }
        }
        if !open && waiting.is_empty() && in_flight.is_empty() {
            break 'run None;
        }
        tokio::select! {
            req = rx.recv(), if open => match req {
                Some(req) => waiting.push_back(req),
                None => open = false,
            },
            incoming = conn.next() => match incoming {
                Ok(Incoming::Disposition {
                    first, last, state, ..
                }) => {
                    for id in first..=last {
                        if let Some(answer) = in_flight.remove(&id) {
                            let _ = answer.send(c2d_outcome(state.as_ref()));
                        }
                    }
                }
                Ok(Incoming::Detached { error, .. }) => {
                    break 'run Some(format!("the C2D link was detached: {error:?}"));
                }
                Ok(_) => {}
                Err(e) => break 'run Some(format!("{e}")),
            },
        }
    };
    let why = failure.unwrap_or_default();
    for (_, answer) in in_flight.drain() {
        let _ = answer.send(SendOutcome::Failed(why.clone()));
    }
    for req in waiting {
        let _ = req.answer.send(SendOutcome::Failed(why.clone()));
    }
    let _ = conn.close().await;
}
