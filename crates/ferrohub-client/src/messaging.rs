//! The messaging half of the service API: reading the event log, sending cloud-to-device
//! messages, purging queues and settling feedback.

use std::collections::BTreeMap;

use ferrohub_api::{
    C2dSendResult, EndpointInfo, EventBatch, FeedbackRecord, JobProperties, JobRequest,
    PartitionProperties, PurgeMessageQueueResult,
};
use reqwest::Method;

use crate::ClientError;
use crate::client::{HubClient, device_path, segment};

/// Where a read starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// The oldest retained event.
    Earliest,
    /// Only events enqueued after the read starts.
    Latest,
    /// After (or at, when `inclusive`) this sequence number.
    Sequence {
        /// The sequence number.
        sequence_number: u64,
        /// Whether the event at the position is included.
        inclusive: bool,
    },
    /// At this time (RFC 3339 or milliseconds since the epoch).
    EnqueuedTime(String),
}

/// A cloud-to-device message to send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct C2dMessage {
    /// The body.
    pub body: Vec<u8>,
    /// `message-id`, needed to correlate feedback.
    pub message_id: Option<String>,
    /// `correlation-id`.
    pub correlation_id: Option<String>,
    /// `user-id`.
    pub user_id: Option<String>,
    /// `content-type`.
    pub content_type: Option<String>,
    /// `content-encoding`.
    pub content_encoding: Option<String>,
    /// Absolute expiry, RFC 3339.
    pub expiry: Option<String>,
    /// `none`, `positive`, `negative` or `full`.
    pub ack: Option<String>,
    /// Application properties.
    pub properties: BTreeMap<String, String>,
}

/// A locked batch of feedback records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedbackBatch {
    /// The lock token that completes or abandons the batch.
    pub lock_token: String,
    /// The records.
    pub records: Vec<FeedbackRecord>,
}

impl HubClient {
    /// The event endpoint's partitions (`GET /messages/events/partitions`).
    pub async fn partitions(&self) -> Result<EndpointInfo, ClientError> {
        self.send::<()>(Method::GET, "/messages/events/partitions", None, None, None)
            .await?
            .json()
    }

    /// One partition's properties.
    pub async fn partition(&self, partition: &str) -> Result<PartitionProperties, ClientError> {
        let path = format!(
            "/messages/events/partitions/{}",
            segment("partition", partition)?
        );
        self.send::<()>(Method::GET, &path, None, None, None)
            .await?
            .json()
    }

    /// Reads up to `max` events of `partition` from `from`, waiting up to `wait_secs` (≤ 60)
    /// for events to arrive when there are none yet.
    pub async fn read_events(
        &self,
        partition: &str,
        from: &ReadFrom,
        max: u32,
        wait_secs: u32,
    ) -> Result<EventBatch, ClientError> {
        let path = format!(
            "/messages/events/partitions/{}/events",
            segment("partition", partition)?
        );
        let start = match from {
            ReadFrom::Earliest => "from=earliest".to_owned(),
            ReadFrom::Latest => "from=latest".to_owned(),
            ReadFrom::Sequence {
                sequence_number,
                inclusive,
            } => format!("sequenceNumber={sequence_number}&inclusive={inclusive}"),
            ReadFrom::EnqueuedTime(t) => format!("enqueuedTime={}", crate::client::query_value(t)),
        };
        let query = format!("{start}&max={max}&wait={wait_secs}");
        self.send::<()>(Method::GET, &path, Some(&query), None, None)
            .await?
            .json()
    }

    /// Sends a cloud-to-device message (`POST /devices/{id}/messages/deviceBound`).
    pub async fn send_c2d(
        &self,
        device_id: &str,
        message: &C2dMessage,
    ) -> Result<C2dSendResult, ClientError> {
        let path = format!("{}/messages/deviceBound", device_path(device_id)?);
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut add = |name: &str, value: &Option<String>| {
            if let Some(v) = value {
                headers.push((name.to_owned(), v.clone()));
            }
        };
        add("iothub-messageid", &message.message_id);
        add("iothub-correlationid", &message.correlation_id);
        add("iothub-userid", &message.user_id);
        add("iothub-contenttype", &message.content_type);
        add("iothub-contentencoding", &message.content_encoding);
        add("iothub-expiry", &message.expiry);
        add("iothub-ack", &message.ack);
        for (k, v) in &message.properties {
            headers.push((format!("iothub-app-{k}"), v.clone()));
        }
        self.send_raw(Method::POST, &path, headers, message.body.clone())
            .await?
            .json()
    }

    /// Removes every message from a device's queue (`DELETE /devices/{id}/commands`).
    pub async fn purge_c2d(&self, device_id: &str) -> Result<PurgeMessageQueueResult, ClientError> {
        let path = format!("{}/commands", device_path(device_id)?);
        self.send::<()>(Method::DELETE, &path, None, None, None)
            .await?
            .json()
    }

    /// Receives a locked batch of feedback records, or `None` when there is none.
    pub async fn receive_feedback(&self) -> Result<Option<FeedbackBatch>, ClientError> {
        let reply = self
            .send::<()>(
                Method::GET,
                "/messages/serviceBound/feedback",
                None,
                None,
                None,
            )
            .await?;
        if reply.status == 204 {
            return Ok(None);
        }
        let lock_token = reply.etag().unwrap_or_default();
        let records: Vec<FeedbackRecord> = reply.json()?;
        Ok(Some(FeedbackBatch {
            lock_token,
            records,
        }))
    }

    /// Completes a feedback batch.
    pub async fn complete_feedback(&self, lock_token: &str) -> Result<(), ClientError> {
        let path = format!(
            "/messages/serviceBound/feedback/{}",
            segment("lock token", lock_token)?
        );
        crate::client::expect_empty(
            self.send::<()>(Method::DELETE, &path, None, None, None)
                .await?,
        )
    }

    /// Abandons a feedback batch: its records become available again.
    pub async fn abandon_feedback(&self, lock_token: &str) -> Result<(), ClientError> {
        let path = format!(
            "/messages/serviceBound/feedback/{}/abandon",
            segment("lock token", lock_token)?
        );
        crate::client::expect_empty(
            self.send::<()>(Method::POST, &path, None, None, None)
                .await?,
        )
    }

    /// Starts an import or export job (`POST /jobs/create`).
    pub async fn create_job(&self, request: &JobRequest) -> Result<JobProperties, ClientError> {
        self.send(Method::POST, "/jobs/create", None, None, Some(request))
            .await?
            .json()
    }

    /// A job's state (`GET /jobs/{id}`).
    pub async fn job(&self, job_id: &str) -> Result<JobProperties, ClientError> {
        let path = format!("/jobs/{}", segment("job id", job_id)?);
        self.send::<()>(Method::GET, &path, None, None, None)
            .await?
            .json()
    }

    /// The hub's recent jobs (`GET /jobs`).
    pub async fn jobs(&self) -> Result<Vec<JobProperties>, ClientError> {
        self.send::<()>(Method::GET, "/jobs", None, None, None)
            .await?
            .json()
    }

    /// Cancels a job (`DELETE /jobs/{id}`).
    pub async fn cancel_job(&self, job_id: &str) -> Result<JobProperties, ClientError> {
        let path = format!("/jobs/{}", segment("job id", job_id)?);
        self.send::<()>(Method::DELETE, &path, None, None, None)
            .await?
            .json()
    }
}
