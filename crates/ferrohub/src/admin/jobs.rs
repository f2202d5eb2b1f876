//! `ferrohub devices import|export` and `ferrohub jobs list|show|cancel`: provisioning fleets.
//!
//! `devices import FILE` streams a local JSON Lines file (Azure's `devices.txt` format) through
//! the bulk API, 100 records a request, so it works against any hub. `devices import URL` and
//! `devices export` run an import/export job on the hub (`file://` directories inside the hub's
//! job file root, `<data_dir>/job-files` unless configured, or http(s) container URLs) and follow
//! its progress.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use ferrohub_api::{ExportImportDevice, JobProperties, JobRequest};
use ferrohub_client::HubClient;
use indicatif::{ProgressBar, ProgressStyle};

use super::output::{fields, render, table};
use super::{Failure, HubArgs, emit};

/// Records per bulk request (the hub's limit).
const CHUNK: usize = 100;

/// `devices …` (bulk provisioning).
#[derive(Debug, Subcommand)]
pub(crate) enum DevicesCommand {
    /// Import identities from a JSON Lines file (devices.txt format) or a container URL
    Import(ImportArgs),
    /// Export every identity to a JSON Lines file
    Export(ExportArgs),
}

/// `devices import`.
#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// A local file, or a blob URL (`file:///dir/devices.txt`, `https://…/container/devices.txt?sas`)
    /// the hub reads itself in an import job.
    source: String,
    #[command(flatten)]
    hub: HubArgs,
}

/// `devices export`.
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// Where to write: a local path inside the hub's job file root (the hub must run on this
    /// machine; `<data_dir>/job-files` unless configured) or a blob URL.
    target: String,
    /// Write keys as null.
    #[arg(long)]
    exclude_keys: bool,
    #[command(flatten)]
    hub: HubArgs,
}

/// `jobs …`.
#[derive(Debug, Subcommand)]
pub(crate) enum JobsCommand {
    /// List recent import/export jobs
    List(JobsListArgs),
    /// Show one job
    Show(JobIdArgs),
    /// Cancel a job
    Cancel(JobIdArgs),
}

/// `jobs list`.
#[derive(Debug, Args)]
pub(crate) struct JobsListArgs {
    #[command(flatten)]
    hub: HubArgs,
}

/// `jobs show|cancel`.
#[derive(Debug, Args)]
pub(crate) struct JobIdArgs {
    /// The job id.
    job_id: String,
    #[command(flatten)]
    hub: HubArgs,
}

/// What an import did.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ImportSummary {
    records: u64,
    created: u64,
    updated: u64,
    created_or_updated: u64,
    deleted: u64,
    failed: u64,
}

impl DevicesCommand {
    pub(crate) async fn run(self) -> Result<(), Failure> {
        match self {
            DevicesCommand::Import(a) => a.run().await,
            DevicesCommand::Export(a) => a.run().await,
        }
    }
}

/// A blob URL split into its container and blob name.
fn split_blob_url(url: &str) -> Result<(String, String), Failure> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let (container, name) = base
        .rsplit_once('/')
        .filter(|(c, n)| !n.is_empty() && c.contains("://"))
        .ok_or_else(|| Failure::Usage(format!("{url:?} is not a blob URL")))?;
    let container = match query {
        Some(q) => format!("{container}?{q}"),
        None => container.to_owned(),
    };
    Ok((container, name.to_owned()))
}

fn is_url(s: &str) -> bool {
    s.starts_with("file://") || s.starts_with("http://") || s.starts_with("https://")
}

/// A local path as a `file://` blob URL.
fn file_url(path: &Path) -> Result<String, Failure> {
    let abs = std::path::absolute(path)
        .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
    Ok(format!("file://{}", abs.display()))
}

impl ImportArgs {
    async fn run(self) -> Result<(), Failure> {
        let (client, _) = self.hub.connect()?;
        if is_url(&self.source) {
            let (container, name) = split_blob_url(&self.source)?;
            let job = client
                .create_job(&JobRequest {
                    kind: "import".into(),
                    input_blob_container_uri: Some(container.clone()),
                    input_blob_name: Some(name),
                    output_blob_container_uri: Some(container),
                    ..JobRequest::default()
                })
                .await?;
            let done = follow(&client, job).await?;
            emit(&render(self.hub.output, &done, job_fields)?);
            return finished_ok(&done);
        }
        let summary = import_file(&client, Path::new(&self.source)).await?;
        emit(&render(self.hub.output, &summary, |s| {
            fields(&[
                ("records", s.records.to_string()),
                ("created", s.created.to_string()),
                ("updated", s.updated.to_string()),
                ("createdOrUpdated", s.created_or_updated.to_string()),
                ("deleted", s.deleted.to_string()),
                ("failed", s.failed.to_string()),
            ])
        })?);
        if summary.failed > 0 {
            return Err(Failure::Failed(format!(
                "{} of {} records failed (see the errors above)",
                summary.failed, summary.records
            )));
        }
        Ok(())
    }
}

async fn import_file(client: &HubClient, path: &Path) -> Result<ImportSummary, Failure> {
    let file = std::fs::File::open(path)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
    let total = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut summary = ImportSummary::default();
    let mut chunk: Vec<ExportImportDevice> = Vec::with_capacity(CHUNK);
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Failure::Failed(format!("reading {}: {e}", path.display())))?;
        bar.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        summary.records += 1;
        match serde_json::from_str::<ExportImportDevice>(&line) {
            Ok(rec) => chunk.push(rec),
            Err(e) => {
                summary.failed += 1;
                bar.println(format!("line {}: not a device record: {e}", n + 1));
            }
        }
        if chunk.len() == CHUNK {
            apply(client, &mut chunk, &mut summary, &bar).await?;
        }
        bar.set_message(format!("{} records", summary.records));
    }
    apply(client, &mut chunk, &mut summary, &bar).await?;
    bar.finish_and_clear();
    Ok(summary)
}

async fn apply(
    client: &HubClient,
    chunk: &mut Vec<ExportImportDevice>,
    summary: &mut ImportSummary,
    bar: &ProgressBar,
) -> Result<(), Failure> {
    if chunk.is_empty() {
        return Ok(());
    }
    let result = client.bulk(chunk).await?;
    let failed: std::collections::HashSet<(String, Option<String>)> = result
        .errors
        .iter()
        .map(|e| (e.device_id.clone(), e.module_id.clone()))
        .collect();
    for e in &result.errors {
        bar.println(format!(
            "{}: {} ({})",
            e.device_id, e.error_status, e.error_code
        ));
    }
    for rec in chunk.iter() {
        if failed.contains(&(rec.id.clone(), rec.module_id.clone())) {
            summary.failed += 1;
            continue;
        }
        let mode = rec.import_mode.as_deref().unwrap_or("createOrUpdate");
        let mode = mode.to_ascii_lowercase();
        if mode.starts_with("delete") {
            summary.deleted += 1;
        } else if mode.starts_with("createorupdate") {
            summary.created_or_updated += 1;
        } else if mode.starts_with("create") {
            summary.created += 1;
        } else {
            summary.updated += 1;
        }
    }
    chunk.clear();
    Ok(())
}

impl ExportArgs {
    async fn run(self) -> Result<(), Failure> {
        let (client, _) = self.hub.connect()?;
        let url = if is_url(&self.target) {
            self.target.clone()
        } else {
            let path = PathBuf::from(&self.target);
            if path.file_name().is_none() {
                return Err(Failure::Usage(format!("{:?} names no file", self.target)));
            }
            file_url(&path)?
        };
        let (container, name) = split_blob_url(&url)?;
        let job = client
            .create_job(&JobRequest {
                kind: "export".into(),
                output_blob_container_uri: Some(container),
                output_blob_name: Some(name),
                exclude_keys_in_export: Some(self.exclude_keys),
                ..JobRequest::default()
            })
            .await?;
        let done = follow(&client, job).await?;
        emit(&render(self.hub.output, &done, job_fields)?);
        finished_ok(&done)
    }
}

/// Polls a job until it finishes, showing its progress.
async fn follow(client: &HubClient, mut job: JobProperties) -> Result<JobProperties, Failure> {
    let bar = ProgressBar::new(100);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    while !job.is_finished() {
        bar.set_position(u64::from(job.progress));
        bar.set_message(format!(
            "{} {} ({} records)",
            job.kind, job.status, job.device_count
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
        job = client.job(&job.job_id).await?;
    }
    bar.finish_and_clear();
    Ok(job)
}

fn finished_ok(job: &JobProperties) -> Result<(), Failure> {
    match job.status.as_str() {
        "completed" => Ok(()),
        other => Err(Failure::Failed(format!(
            "the job {} ended {other}: {}",
            job.job_id,
            job.failure_reason.as_deref().unwrap_or("no reason given")
        ))),
    }
}

fn job_fields(j: &JobProperties) -> String {
    fields(&[
        ("jobId", j.job_id.clone()),
        ("type", j.kind.clone()),
        ("status", j.status.clone()),
        ("progress", format!("{}%", j.progress)),
        ("records", j.device_count.to_string()),
        ("errors", j.error_count.to_string()),
        (
            "failureReason",
            j.failure_reason.clone().unwrap_or_default(),
        ),
    ])
}

impl JobsCommand {
    pub(crate) async fn run(self) -> Result<(), Failure> {
        match self {
            JobsCommand::List(a) => {
                let (client, _) = a.hub.connect()?;
                let jobs = client.jobs().await?;
                emit(&render(a.hub.output, &jobs, |js| {
                    let rows: Vec<Vec<String>> = js
                        .iter()
                        .map(|j| {
                            vec![
                                j.job_id.clone(),
                                j.kind.clone(),
                                j.status.clone(),
                                format!("{}%", j.progress),
                                j.start_time_utc.map(|t| t.to_rfc3339()).unwrap_or_default(),
                            ]
                        })
                        .collect();
                    table(&["JOB ID", "TYPE", "STATUS", "PROGRESS", "STARTED"], &rows)
                })?);
                Ok(())
            }
            JobsCommand::Show(a) => {
                let (client, _) = a.hub.connect()?;
                let job = client.job(&a.job_id).await?;
                emit(&render(a.hub.output, &job, job_fields)?);
                Ok(())
            }
            JobsCommand::Cancel(a) => {
                let (client, _) = a.hub.connect()?;
                let job = client.cancel_job(&a.job_id).await?;
                emit(&render(a.hub.output, &job, job_fields)?);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_urls_split_into_container_and_name() {
        assert_eq!(
            split_blob_url("file:///tmp/x/devices.txt").ok(),
            Some(("file:///tmp/x".to_owned(), "devices.txt".to_owned()))
        );
        assert_eq!(
            split_blob_url("https://acct.blob.core.windows.net/c/devices.txt?sv=1&sig=x").ok(),
            Some((
                "https://acct.blob.core.windows.net/c?sv=1&sig=x".to_owned(),
                "devices.txt".to_owned()
            ))
        );
        assert!(split_blob_url("devices.txt").is_err());
        assert!(split_blob_url("file:///tmp/").is_err());
    }
}
