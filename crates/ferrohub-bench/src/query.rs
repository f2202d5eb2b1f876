//! `query`: the latency of `POST /devices/query` over a registry of many tagged twins
//! (Ferrohub only).
//!
//! The devices are created through the bulk registry API (`POST /devices`, 100 records a
//! request, createOrUpdate) with their twin tags in the same records:
//! `{"shard": i % 10000, "region": "r{i % 10}"}` for device `PREFIX{i}`. Then each query runs
//! `--repeat` times, one after another, reading every page (`x-ms-max-item-count: 1000`); the
//! latency of a run is from the first request to the last page's answer.
//!
//! * `selective`: `SELECT * FROM devices WHERE tags.shard = 4321` — N/10,000 twins; the
//!   condition goes down to the store's SQL.
//! * `full scan`: `SELECT COUNT() AS n FROM devices WHERE connectionState = 'Disconnected'` —
//!   a live field the store cannot filter on, so every twin is read, rendered and evaluated.
//! * `group by`: `SELECT COUNT() AS n, tags.region AS region FROM devices GROUP BY
//!   tags.region` — every twin read and aggregated into 10 groups.

use std::time::{Duration, Instant};

use anyhow::Context;
use ferrohub_api::{
    AuthenticationMechanism, AuthenticationType, BulkRegistryOperationResult, DeviceStatus,
    ExportImportDevice, SymmetricKey as ApiKey,
};
use ferrohub_auth::SymmetricKey;
use serde::Serialize;
use serde_json::{Value, json};

use crate::identity;
use crate::provision::BULK_LIMIT;
use crate::target::Ferrohub;

/// The queries measured: name and text.
pub const QUERIES: &[(&str, &str)] = &[
    ("selective", "SELECT * FROM devices WHERE tags.shard = 4321"),
    (
        "full scan",
        "SELECT COUNT() AS n FROM devices WHERE connectionState = 'Disconnected'",
    ),
    (
        "group by",
        "SELECT COUNT() AS n, tags.region AS region FROM devices GROUP BY tags.region",
    ),
];

/// Shards and regions of the tags.
const SHARDS: usize = 10_000;
const REGIONS: usize = 10;

/// How many bulk requests are in flight at once.
const PARALLEL_REQUESTS: usize = 4;

/// The page size the queries ask for.
const PAGE_SIZE: usize = 1000;

/// The tags of device `i`.
pub fn tags(i: usize) -> Value {
    json!({"shard": i % SHARDS, "region": format!("r{}", i % REGIONS)})
}

/// Creates or updates devices `PREFIX0 … PREFIX{count-1}` with their tags. Returns how long
/// it took.
pub async fn populate(hub: &Ferrohub, prefix: &str, count: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let http = hub.http_client()?;
    let token = hub.service_token()?;
    let url = format!(
        "{}/devices?api-version={}",
        hub.base_url(),
        identity::API_VERSION
    );
    let primary = SymmetricKey::try_generate().context("generating a key")?;
    let secondary = SymmetricKey::try_generate().context("generating a key")?;
    let mut last_report = Instant::now();
    let mut start = 0;
    while start < count {
        let mut requests = Vec::new();
        for _ in 0..PARALLEL_REQUESTS {
            if start >= count {
                break;
            }
            let end = (start + BULK_LIMIT).min(count);
            let records: Vec<ExportImportDevice> = (start..end)
                .map(|i| ExportImportDevice {
                    id: identity::device_id(prefix, i),
                    import_mode: Some("createOrUpdate".into()),
                    status: Some(DeviceStatus::Enabled),
                    authentication: Some(AuthenticationMechanism {
                        symmetric_key: Some(ApiKey {
                            primary_key: Some(primary.to_base64()),
                            secondary_key: Some(secondary.to_base64()),
                        }),
                        x509_thumbprint: None,
                        kind: Some(AuthenticationType::Sas),
                    }),
                    tags: Some(tags(i)),
                    ..ExportImportDevice::default()
                })
                .collect();
            start = end;
            let request = http
                .post(&url)
                .header("Authorization", &token)
                .json(&records);
            requests.push(async move {
                let response = request.send().await.context("bulk registry request")?;
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                if !status.is_success() {
                    anyhow::bail!("bulk registry request failed: {status}: {text}");
                }
                let result: BulkRegistryOperationResult =
                    serde_json::from_str(&text).context("parsing the bulk result")?;
                if !result.is_successful {
                    anyhow::bail!(
                        "bulk registry request reported errors: {:?}",
                        result.errors.iter().take(3).collect::<Vec<_>>()
                    );
                }
                Ok(())
            });
        }
        for outcome in futures_util::future::join_all(requests).await {
            outcome?;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!("populating: {start}/{count} devices");
        }
    }
    Ok(started.elapsed())
}

/// One query's figures.
#[derive(Debug, Clone, Serialize)]
pub struct QueryFigures {
    /// Which query.
    pub name: String,
    /// Its text.
    pub query: String,
    /// Rows of the result (all pages).
    pub rows: usize,
    /// Pages read per run.
    pub pages: usize,
    /// Each run's latency, milliseconds, in the order run.
    pub runs_ms: Vec<f64>,
    /// The fastest and the median run, milliseconds.
    pub min_ms: f64,
    /// Median.
    pub median_ms: f64,
}

/// What `query` reports.
#[derive(Debug, Clone, Serialize)]
pub struct QuerySummary {
    /// Devices in the registry (as `SELECT COUNT()` found them).
    pub devices: u64,
    /// Seconds the population took (0 with --no-provision).
    pub populate_s: f64,
    /// The queries.
    pub queries: Vec<QueryFigures>,
}

/// Runs `text` to its last page; returns (rows, pages).
async fn run_query(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    text: &str,
) -> anyhow::Result<(Vec<Value>, usize)> {
    let mut rows = Vec::new();
    let mut pages = 0;
    let mut continuation: Option<String> = None;
    loop {
        let mut req = http
            .post(url)
            .header("Authorization", token)
            .header("x-ms-max-item-count", PAGE_SIZE.to_string())
            .json(&json!({ "query": text }));
        if let Some(c) = &continuation {
            req = req.header("x-ms-continuation", c);
        }
        let resp = req.send().await.context("query request")?;
        let status = resp.status();
        continuation = resp
            .headers()
            .get("x-ms-continuation")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.context("query answer")?;
        if !status.is_success() {
            anyhow::bail!("query failed: {status}: {text}");
        }
        let page: Vec<Value> = serde_json::from_str(&text).context("parsing the page")?;
        rows.extend(page);
        pages += 1;
        if continuation.is_none() {
            return Ok((rows, pages));
        }
    }
}

/// Measures every query of [`QUERIES`] `repeat` times.
pub async fn measure(
    hub: &Ferrohub,
    repeat: usize,
    populate_s: f64,
) -> anyhow::Result<QuerySummary> {
    let http = hub.http_client()?;
    let token = hub.service_token()?;
    let url = format!(
        "{}/devices/query?api-version={}",
        hub.base_url(),
        identity::API_VERSION
    );
    let (count, _) = run_query(&http, &url, &token, "SELECT COUNT() AS n FROM devices").await?;
    let devices = count
        .first()
        .and_then(|r| r["n"].as_u64())
        .context("the device count")?;
    let mut queries = Vec::new();
    for (name, text) in QUERIES {
        let mut runs = Vec::new();
        let mut rows = 0;
        let mut pages = 0;
        for _ in 0..repeat.max(1) {
            let started = Instant::now();
            let (result, n) = run_query(&http, &url, &token, text).await?;
            runs.push(started.elapsed().as_secs_f64() * 1000.0);
            rows = result.len();
            pages = n;
        }
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        queries.push(QueryFigures {
            name: (*name).to_owned(),
            query: (*text).to_owned(),
            rows,
            pages,
            min_ms: round2(sorted.first().copied().unwrap_or(0.0)),
            median_ms: round2(sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)),
            runs_ms: runs.into_iter().map(round2).collect(),
        });
    }
    Ok(QuerySummary {
        devices,
        populate_s,
        queries,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The summary as text.
pub fn text(s: &QuerySummary) -> String {
    let mut out = format!(
        "query over {} devices (populated in {:.1} s)\n",
        s.devices, s.populate_s
    );
    for q in &s.queries {
        out.push_str(&format!(
            "  {:<10} {:>8} rows {:>5} pages  min {:>9.1} ms  median {:>9.1} ms  ({})\n",
            q.name, q.rows, q.pages, q.min_ms, q.median_ms, q.query
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_spread_over_shards_and_regions() {
        assert_eq!(tags(4321), json!({"shard": 4321, "region": "r1"}));
        assert_eq!(tags(14_321), json!({"shard": 4321, "region": "r1"}));
        assert_eq!(tags(10), json!({"shard": 10, "region": "r0"}));
    }
}
