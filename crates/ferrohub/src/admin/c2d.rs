//! `ferrohub c2d`: send cloud-to-device messages, purge queues, read feedback.

use std::time::Duration;

use clap::{Args, Subcommand};
use ferrohub_client::C2dMessage;

use super::output::{fields, render, table};
use super::ttl::parse_ttl;
use super::{Failure, HubArgs, emit};

/// `c2d …`.
#[derive(Debug, Subcommand)]
pub(crate) enum C2dCommand {
    /// Send a message to a device
    Send(SendArgs),
    /// Remove every message waiting for a device
    Purge(PurgeArgs),
    /// Receive (and complete) feedback records
    Feedback(FeedbackArgs),
}

/// `c2d send`.
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The device.
    device: String,
    /// The body (empty when omitted).
    body: Option<String>,
    /// Feedback to ask for: none, positive, negative or full.
    #[arg(long)]
    ack: Option<String>,
    /// An application property, `key=value`; repeat for more.
    #[arg(long = "prop", value_name = "KEY=VALUE")]
    props: Vec<String>,
    /// Time to live, such as 30s, 15m or 1h (the hub's default when omitted).
    #[arg(long)]
    ttl: Option<String>,
    /// The message id, to match feedback to the message (a new UUID when omitted, as
    /// `az iot device c2d-message send` does; printed either way).
    #[arg(long)]
    message_id: Option<String>,
    /// The correlation id.
    #[arg(long)]
    correlation_id: Option<String>,
    /// The content type, such as application/json.
    #[arg(long)]
    content_type: Option<String>,
    /// The content encoding, such as utf-8.
    #[arg(long)]
    content_encoding: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
}

/// `c2d purge`.
#[derive(Debug, Args)]
pub(crate) struct PurgeArgs {
    /// The device.
    device: String,
    #[command(flatten)]
    hub: HubArgs,
}

/// `c2d feedback`.
#[derive(Debug, Args)]
pub(crate) struct FeedbackArgs {
    /// Wait up to this many seconds for feedback to arrive.
    #[arg(long, default_value_t = 0)]
    wait: u64,
    #[command(flatten)]
    hub: HubArgs,
}

impl C2dCommand {
    pub(crate) async fn run(self) -> Result<(), Failure> {
        match self {
            C2dCommand::Send(a) => a.run().await,
            C2dCommand::Purge(a) => {
                let (client, _) = a.hub.connect()?;
                let r = client.purge_c2d(&a.device).await?;
                emit(&render(a.hub.output, &r, |r| {
                    fields(&[
                        ("deviceId", r.device_id.clone()),
                        ("totalMessagesPurged", r.total_messages_purged.to_string()),
                    ])
                })?);
                Ok(())
            }
            C2dCommand::Feedback(a) => a.run().await,
        }
    }
}

/// Splits `key=value`.
fn property(text: &str) -> Result<(String, String), Failure> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(Failure::Usage(format!(
            "--prop takes key=value, not {text:?}"
        ))),
    }
}

/// A random (version 4) UUID in its usual text form.
fn new_message_id() -> Result<String, Failure> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| Failure::Failed(format!("no randomness for a message id: {e}")))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

impl SendArgs {
    async fn run(self) -> Result<(), Failure> {
        let (client, _) = self.hub.connect()?;
        let expiry = match &self.ttl {
            Some(t) => {
                let secs = parse_ttl(t).map_err(Failure::Usage)?;
                let at = chrono::Utc::now()
                    + chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000));
                Some(at.to_rfc3339())
            }
            None => None,
        };
        let mut properties = std::collections::BTreeMap::new();
        for p in &self.props {
            let (k, v) = property(p)?;
            properties.insert(k, v);
        }
        let message_id = match self.message_id {
            Some(id) => id,
            None => new_message_id()?,
        };
        let message = C2dMessage {
            body: self.body.unwrap_or_default().into_bytes(),
            message_id: Some(message_id),
            correlation_id: self.correlation_id,
            user_id: None,
            content_type: self.content_type,
            content_encoding: self.content_encoding,
            expiry,
            ack: self.ack,
            properties,
        };
        let r = client.send_c2d(&self.device, &message).await?;
        emit(&render(self.hub.output, &r, |r| {
            fields(&[
                ("messageId", r.message_id.clone()),
                ("sequenceNumber", r.sequence_number.to_string()),
                ("expiryTimeUtc", r.expiry_time_utc.to_rfc3339()),
            ])
        })?);
        Ok(())
    }
}

impl FeedbackArgs {
    async fn run(self) -> Result<(), Failure> {
        let (client, _) = self.hub.connect()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(self.wait);
        let mut records = Vec::new();
        loop {
            match client.receive_feedback().await? {
                Some(batch) => {
                    records.extend(batch.records);
                    client.complete_feedback(&batch.lock_token).await?;
                }
                None if records.is_empty() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                None => break,
            }
        }
        emit(&render(self.hub.output, &records, |rs| {
            let rows: Vec<Vec<String>> = rs
                .iter()
                .map(|r| {
                    vec![
                        r.device_id.clone(),
                        r.original_message_id.clone(),
                        r.status_code.clone(),
                        r.enqueued_time_utc.clone(),
                    ]
                })
                .collect();
            table(&["DEVICE", "MESSAGE ID", "STATUS", "TIME"], &rows)
        })?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse() {
        assert_eq!(
            property("color=blue=ish").expect("ok"),
            ("color".to_owned(), "blue=ish".to_owned())
        );
        assert!(property("novalue").is_err());
        assert!(property("=v").is_err());
    }
}
