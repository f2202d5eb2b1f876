//! `ferrohub partitions` and `ferrohub monitor`: the event endpoint from the command line, like
//! `az iot hub monitor-events`.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ferrohub_api::{EndpointInfo, EventData};
use ferrohub_client::{HubClient, ReadFrom};
use serde_json::{Value, json};

use super::output::{render, table};
use super::{Failure, HubArgs, emit};

/// `partitions`.
#[derive(Debug, Args)]
pub(crate) struct PartitionsArgs {
    #[command(flatten)]
    hub: HubArgs,
}

impl PartitionsArgs {
    pub(crate) async fn run(self) -> Result<(), Failure> {
        let (client, _) = self.hub.connect()?;
        let info = client.partitions().await?;
        emit(&render(self.hub.output, &info, partitions_table)?);
        Ok(())
    }
}

fn partitions_table(info: &EndpointInfo) -> String {
    let rows: Vec<Vec<String>> = info
        .partitions
        .iter()
        .map(|p| {
            vec![
                p.partition_id.clone(),
                p.begin_sequence_number.to_string(),
                p.last_enqueued_sequence_number.to_string(),
                p.last_enqueued_offset.clone(),
                p.last_enqueued_time_utc
                    .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339()),
                p.is_empty.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "PARTITION",
            "BEGIN SEQ",
            "LAST SEQ",
            "LAST OFFSET",
            "LAST ENQUEUED",
            "EMPTY",
        ],
        &rows,
    )
}

/// Which properties `monitor` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum PropertyKind {
    /// System properties (`iothub-*`, `message-id`, …).
    Sys,
    /// Application properties.
    App,
}

/// `monitor`.
#[derive(Debug, Args)]
pub(crate) struct MonitorArgs {
    /// Only events from this device.
    #[arg(long)]
    device: Option<String>,
    /// The consumer group to read as (`--from checkpoint` resumes from its checkpoints).
    #[arg(long, default_value = "$Default")]
    consumer_group: String,
    /// Where to start: `start`, `end` (the default), or a time (RFC 3339).
    #[arg(long, default_value = "end")]
    from: String,
    /// Also print these properties (comma-separated: sys,app).
    #[arg(long, value_delimiter = ',')]
    properties: Vec<PropertyKind>,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    timeout: Option<u64>,
    #[command(flatten)]
    hub: HubArgs,
}

impl MonitorArgs {
    pub(crate) async fn run(self) -> Result<(), Failure> {
        let (client, _) = self.hub.connect()?;
        let start = match self.from.as_str() {
            "start" | "earliest" => ReadFrom::Earliest,
            "end" | "latest" => ReadFrom::Latest,
            t if chrono::DateTime::parse_from_rfc3339(t).is_ok() => {
                ReadFrom::EnqueuedTime(t.to_owned())
            }
            other => {
                return Err(Failure::Usage(format!(
                    "--from must be start, end or an RFC 3339 time, not {other:?}"
                )));
            }
        };
        let info = client.partitions().await?;
        eprintln!(
            "Monitoring {} partition(s) as consumer group {}; press Ctrl-C to stop.",
            info.partition_count, self.consumer_group
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<EventData, Failure>>(256);
        for p in info.partition_ids {
            let client = client.clone();
            let tx = tx.clone();
            let start = start.clone();
            tokio::spawn(async move { follow(client, p, start, tx).await });
        }
        drop(tx);
        let deadline = self
            .timeout
            .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
        loop {
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                    Ok(n) => n,
                    Err(_) => return Ok(()),
                },
                None => rx.recv().await,
            };
            match next {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok(event)) => {
                    if let Some(line) =
                        format_event(&event, self.device.as_deref(), &self.properties)
                    {
                        emit(&line);
                    }
                }
            }
        }
    }
}

/// Long-polls one partition forever, sending each event to `tx`.
async fn follow(
    client: HubClient,
    partition: String,
    start: ReadFrom,
    tx: tokio::sync::mpsc::Sender<Result<EventData, Failure>>,
) {
    let mut from = start;
    loop {
        match client.read_events(&partition, &from, 100, 30).await {
            Ok(batch) => {
                for e in batch.events {
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                from = ReadFrom::Sequence {
                    sequence_number: batch.next_sequence_number,
                    inclusive: true,
                };
            }
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        }
    }
}

/// One event as `az iot hub monitor-events` prints it, or `None` when filtered out.
fn format_event(e: &EventData, device: Option<&str>, kinds: &[PropertyKind]) -> Option<String> {
    let origin = e
        .system_properties
        .get("iothub-connection-device-id")
        .and_then(Value::as_str)
        .unwrap_or("");
    if device.is_some_and(|d| d != origin) {
        return None;
    }
    let module = e
        .system_properties
        .get("iothub-connection-module-id")
        .and_then(Value::as_str)
        .unwrap_or("");
    let payload = if e.body_encoding == "text" {
        serde_json::from_str::<Value>(&e.body).unwrap_or_else(|_| Value::String(e.body.clone()))
    } else {
        json!({ "base64": e.body })
    };
    let mut event = json!({ "origin": origin, "module": module, "payload": payload });
    if !kinds.is_empty() {
        let mut props = serde_json::Map::new();
        if kinds.contains(&PropertyKind::Sys) {
            props.insert(
                "system".into(),
                Value::Object(e.system_properties.clone().into_iter().collect()),
            );
        }
        if kinds.contains(&PropertyKind::App) {
            let app: BTreeMap<&String, &String> = e.properties.iter().collect();
            props.insert("application".into(), json!(app));
        }
        event["properties"] = Value::Object(props);
    }
    serde_json::to_string_pretty(&json!({ "event": event })).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(device: &str, body: &str, encoding: &str) -> EventData {
        let mut sys = std::collections::BTreeMap::new();
        sys.insert(
            "iothub-connection-device-id".to_owned(),
            Value::String(device.to_owned()),
        );
        let mut app = std::collections::BTreeMap::new();
        app.insert("k".to_owned(), "v".to_owned());
        EventData {
            partition: "0".into(),
            system_properties: sys,
            properties: app,
            body: body.into(),
            body_encoding: encoding.into(),
            ..EventData::default()
        }
    }

    #[test]
    fn filters_and_formats_like_az() {
        assert!(format_event(&event("d1", "{}", "text"), Some("d2"), &[]).is_none());
        let line =
            format_event(&event("d1", r#"{"t":1}"#, "text"), Some("d1"), &[]).expect("printed");
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["event"]["origin"], "d1");
        assert_eq!(v["event"]["payload"]["t"], 1);
        assert!(v["event"].get("properties").is_none());
        let line = format_event(
            &event("d1", "AAE=", "base64"),
            None,
            &[PropertyKind::Sys, PropertyKind::App],
        )
        .expect("printed");
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["event"]["payload"]["base64"], "AAE=");
        assert_eq!(v["event"]["properties"]["application"]["k"], "v");
        assert_eq!(
            v["event"]["properties"]["system"]["iothub-connection-device-id"],
            "d1"
        );
    }
}
