//! `ferrohub job …`: scheduled jobs, twin updates and direct method calls over the devices a
//! query condition selects, as `az iot hub job create/show/list/cancel` do. (The import and
//! export jobs are `ferrohub jobs …`.)

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::output::{fields, render, table};
use super::{Failure, HubArgs, emit};

/// Scheduled job commands.
#[derive(Debug, Subcommand)]
pub(crate) enum JobCommand {
    /// Schedule a twin update (tags and desired properties) on the devices a condition selects
    ScheduleTwin(ScheduleTwinArgs),
    /// Schedule a direct method call on the devices a condition selects
    ScheduleMethod(ScheduleMethodArgs),
    /// Show a scheduled job with its device counts
    Show(IdArgs),
    /// List scheduled jobs
    List(ListArgs),
    /// Cancel a scheduled job
    Cancel(IdArgs),
}

/// What every scheduling command takes.
#[derive(Debug, Args)]
pub(crate) struct When {
    /// The devices: a condition such as "tags.site = 'b7'", or "*" for all
    #[arg(long, value_name = "CONDITION")]
    query: String,
    /// The job's id (default: a fresh one)
    #[arg(long, value_name = "ID")]
    job_id: Option<String>,
    /// When to start, RFC 3339 such as 2030-01-01T02:00:00Z (default: now)
    #[arg(long, value_name = "TIME")]
    start: Option<String>,
    /// How long the job may run from its start, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    max_seconds: u64,
}

/// `job schedule-twin`.
#[derive(Debug, Args)]
pub(crate) struct ScheduleTwinArgs {
    #[command(flatten)]
    when: When,
    /// The twin patch, such as '{"tags":{"fw":"2.1"},"properties":{"desired":{"rate":5}}}'
    #[arg(long, value_name = "JSON")]
    patch: String,
    #[command(flatten)]
    hub: HubArgs,
}

/// `job schedule-method`.
#[derive(Debug, Args)]
pub(crate) struct ScheduleMethodArgs {
    #[command(flatten)]
    when: When,
    /// The method's name
    #[arg(long, value_name = "NAME")]
    method: String,
    /// The payload, any JSON (the devices get null when absent)
    #[arg(long, value_name = "JSON")]
    payload: Option<String>,
    /// Seconds to wait for each device's answer (5 to 300)
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(5..=300))]
    timeout: u32,
    #[command(flatten)]
    hub: HubArgs,
}

/// `job show` / `job cancel`.
#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    /// The job id
    job_id: String,
    #[command(flatten)]
    hub: HubArgs,
}

/// `job list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only jobs of this type: scheduleUpdateTwin or scheduleDeviceMethod
    #[arg(long = "type", value_name = "TYPE")]
    job_type: Option<String>,
    /// Only jobs in this status: queued, scheduled, running, completed, failed, cancelled
    #[arg(long, value_name = "STATUS")]
    status: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
}

fn parse_json(what: &str, text: &str) -> Result<Value, Failure> {
    serde_json::from_str(text)
        .map_err(|e| Failure::Usage(format!("--{what} is not valid JSON: {e}")))
}

impl When {
    /// The request fields every job has, for job `id` of `job_type`.
    fn request(&self, id: &str, job_type: &str) -> Result<Map<String, Value>, Failure> {
        if let Some(start) = &self.start
            && chrono::DateTime::parse_from_rfc3339(start).is_err()
        {
            return Err(Failure::Usage(format!(
                "--start {start:?} is not an RFC 3339 time such as 2030-01-01T02:00:00Z"
            )));
        }
        let mut m = Map::new();
        m.insert("jobId".into(), id.into());
        m.insert("type".into(), job_type.into());
        m.insert("queryCondition".into(), self.query.clone().into());
        m.insert(
            "startTime".into(),
            self.start.clone().map_or(Value::Null, Value::String),
        );
        m.insert("maxExecutionTimeInSeconds".into(), self.max_seconds.into());
        Ok(m)
    }

    fn id(&self) -> String {
        self.job_id.clone().unwrap_or_else(fresh_id)
    }
}

/// A job id nobody chose: the time to the microsecond and the process id.
fn fresh_id() -> String {
    format!(
        "job-{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%6f"),
        std::process::id()
    )
}

impl ScheduleTwinArgs {
    fn request(&self, id: &str) -> Result<Value, Failure> {
        let mut patch = match parse_json("patch", &self.patch)? {
            Value::Object(m) => m,
            _ => return Err(Failure::Usage("--patch must be a JSON object".to_owned())),
        };
        patch.entry("etag").or_insert_with(|| "*".into());
        let mut m = self.when.request(id, "scheduleUpdateTwin")?;
        m.insert("updateTwin".into(), Value::Object(patch));
        Ok(Value::Object(m))
    }
}

impl ScheduleMethodArgs {
    fn request(&self, id: &str) -> Result<Value, Failure> {
        let payload = self
            .payload
            .as_deref()
            .map(|p| parse_json("payload", p))
            .transpose()?
            .unwrap_or(Value::Null);
        let mut m = self.when.request(id, "scheduleDeviceMethod")?;
        m.insert(
            "cloudToDeviceMethod".into(),
            json!({"methodName": self.method, "payload": payload, "responseTimeoutInSeconds": self.timeout}),
        );
        Ok(Value::Object(m))
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One job for people.
fn job_fields(j: &Value) -> String {
    let s = &j["deviceJobStatistics"];
    let mut pairs = vec![
        ("jobId", text(&j["jobId"])),
        ("type", text(&j["type"])),
        ("status", text(&j["status"])),
        ("queryCondition", text(&j["queryCondition"])),
        ("startTime", text(&j["startTime"])),
        ("endTime", text(&j["endTime"])),
        (
            "maxExecutionTimeInSeconds",
            text(&j["maxExecutionTimeInSeconds"]),
        ),
        ("devices", text(&s["deviceCount"])),
        ("succeeded", text(&s["succeededCount"])),
        ("failed", text(&s["failedCount"])),
        ("running", text(&s["runningCount"])),
        ("pending", text(&s["pendingCount"])),
    ];
    if let Some(r) = j.get("failureReason") {
        pairs.push(("failureReason", text(r)));
    }
    fields(&pairs)
}

/// Jobs for people, one a line.
fn jobs_table(jobs: &[Value]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            let s = &j["deviceJobStatistics"];
            vec![
                text(&j["jobId"]),
                text(&j["type"]),
                text(&j["status"]),
                text(&j["startTime"]),
                text(&s["deviceCount"]),
                text(&s["succeededCount"]),
                text(&s["failedCount"]),
            ]
        })
        .collect();
    table(
        &[
            "JOB ID",
            "TYPE",
            "STATUS",
            "START",
            "DEVICES",
            "SUCCEEDED",
            "FAILED",
        ],
        &rows,
    )
}

impl JobCommand {
    pub(crate) async fn run(self) -> Result<(), Failure> {
        match self {
            JobCommand::ScheduleTwin(a) => {
                let id = a.when.id();
                let request = a.request(&id)?;
                let (client, _) = a.hub.connect()?;
                let job = client.schedule_job(&id, &request).await?;
                emit(&render(a.hub.output, &job, job_fields)?);
            }
            JobCommand::ScheduleMethod(a) => {
                let id = a.when.id();
                let request = a.request(&id)?;
                let (client, _) = a.hub.connect()?;
                let job = client.schedule_job(&id, &request).await?;
                emit(&render(a.hub.output, &job, job_fields)?);
            }
            JobCommand::Show(a) => {
                let (client, _) = a.hub.connect()?;
                let job = client.scheduled_job(&a.job_id).await?;
                emit(&render(a.hub.output, &job, job_fields)?);
            }
            JobCommand::Cancel(a) => {
                let (client, _) = a.hub.connect()?;
                let job = client.cancel_scheduled_job(&a.job_id).await?;
                emit(&render(a.hub.output, &job, job_fields)?);
            }
            JobCommand::List(a) => {
                let (client, _) = a.hub.connect()?;
                let jobs = client
                    .scheduled_jobs(a.job_type.as_deref(), a.status.as_deref())
                    .await?;
                emit(&render(a.hub.output, &jobs, |j: &Vec<Value>| {
                    jobs_table(j)
                })?);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn when(start: Option<&str>) -> When {
        When {
            query: "tags.site = 'b7'".into(),
            job_id: Some("j1".into()),
            start: start.map(str::to_owned),
            max_seconds: 120,
        }
    }

    #[test]
    fn twin_jobs_become_job_requests() {
        let a = ScheduleTwinArgs {
            when: when(Some("2030-01-01T02:00:00Z")),
            patch: r#"{"tags":{"fw":"2.1"}}"#.into(),
            hub: HubArgs::default(),
        };
        assert_eq!(
            a.request("j1").expect("request"),
            json!({"jobId":"j1","type":"scheduleUpdateTwin","queryCondition":"tags.site = 'b7'",
                   "startTime":"2030-01-01T02:00:00Z","maxExecutionTimeInSeconds":120,
                   "updateTwin":{"etag":"*","tags":{"fw":"2.1"}}})
        );
    }

    #[test]
    fn method_jobs_become_job_requests() {
        let a = ScheduleMethodArgs {
            when: when(None),
            method: "reboot".into(),
            payload: Some(r#"{"delay":5}"#.into()),
            timeout: 30,
            hub: HubArgs::default(),
        };
        let r = a.request("j1").expect("request");
        assert_eq!(r["startTime"], Value::Null);
        assert_eq!(
            r["cloudToDeviceMethod"],
            json!({"methodName":"reboot","payload":{"delay":5},"responseTimeoutInSeconds":30})
        );
    }

    #[test]
    fn bad_options_are_usage_errors() {
        let bad_patch = ScheduleTwinArgs {
            when: when(None),
            patch: "[1]".into(),
            hub: HubArgs::default(),
        };
        assert_eq!(bad_patch.request("j").expect_err("refused").exit_code(), 2);
        let bad_start = ScheduleTwinArgs {
            when: when(Some("tomorrow")),
            patch: "{}".into(),
            hub: HubArgs::default(),
        };
        assert_eq!(bad_start.request("j").expect_err("refused").exit_code(), 2);
    }
}
