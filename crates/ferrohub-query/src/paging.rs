//! Paging: row keys, continuation tokens, and the [`Pager`] that turns a key-ordered scan
//! into one page of results.
//!
//! Rows are paged in key order: `deviceId`, then `moduleId` (`devices.modules`) or `jobId`
//! (`devices.jobs`), comparing strings byte by byte. A row query's token holds the key of the
//! last row returned, so the next page starts right after it whatever was added or removed
//! meanwhile; an aggregating query is computed again for every page and its token holds how
//! many result rows were already returned. Either way the token also holds how many rows the
//! earlier pages returned (for `TOP`) and a fingerprint of the query, so a token is refused
//! with a different query.
//!
//! A token is base64url (no padding) of a small JSON object; it is opaque to clients and
//! validated completely when read back.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::aggregate::Aggregator;
use crate::ast::{Collection, Query};
use crate::error::ContinuationError;
use crate::pushdown::{Dialect, Table};
use crate::sql::{SqlFilter, SqlParam};

/// The page size when the request names none (Azure's documented default).
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// The largest page size honoured; larger requests get this many.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Tokens longer than this are refused unread.
const MAX_TOKEN_LEN: usize = 4096;

/// The `x-ms-item-type` of a query's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemType {
    /// Whole twins: `SELECT *` from `devices` or `devices.modules`.
    Twin,
    /// Whole per-device job records: `SELECT *` from `devices.jobs`.
    DeviceJob,
    /// Anything else: projections and aggregates.
    Raw,
}

impl ItemType {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemType::Twin => "twin",
            ItemType::DeviceJob => "deviceJob",
            ItemType::Raw => "raw",
        }
    }
}

/// The key of a row, in paging order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowKey {
    device_id: String,
    child_id: Option<String>,
}

impl RowKey {
    /// The key of a device twin row.
    pub fn device(device_id: impl Into<String>) -> RowKey {
        RowKey {
            device_id: device_id.into(),
            child_id: None,
        }
    }

    /// The key of a module twin row.
    pub fn module(device_id: impl Into<String>, module_id: impl Into<String>) -> RowKey {
        RowKey {
            device_id: device_id.into(),
            child_id: Some(module_id.into()),
        }
    }

    /// The key of a per-device job record.
    pub fn job(device_id: impl Into<String>, job_id: impl Into<String>) -> RowKey {
        RowKey::module(device_id, job_id)
    }

    /// The row's `deviceId`.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The row's `moduleId` or `jobId` (`None` for a device row).
    pub fn child_id(&self) -> Option<&str> {
        self.child_id.as_deref()
    }

    /// An SQL condition for "the row's key is after this one", on `table`'s key columns, or
    /// `None` when the table lacks the columns (the [`Pager`] skips such rows anyway).
    pub fn sql_after(
        &self,
        dialect: Dialect,
        table: &Table<'_>,
        first_param: usize,
    ) -> Option<SqlFilter> {
        let n = first_param.max(1);
        let (collate, ph): (&str, fn(usize) -> String) = match dialect {
            Dialect::Sqlite => ("", |i| format!("?{i}")),
            Dialect::Postgres => (" COLLATE \"C\"", |i| format!("${i}::text")),
        };
        let quote = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
        let device = quote(table.device_id?);
        match &self.child_id {
            None => Some(SqlFilter {
                sql: format!("({device}{collate} > {})", ph(n)),
                params: vec![SqlParam::Text(self.device_id.clone())],
            }),
            Some(child_id) => {
                let child = quote(table.child_id?);
                Some(SqlFilter {
                    sql: format!(
                        "({device}{collate} > {} OR ({device} = {} AND {child}{collate} > {}))",
                        ph(n),
                        ph(n + 1),
                        ph(n + 2)
                    ),
                    params: vec![
                        SqlParam::Text(self.device_id.clone()),
                        SqlParam::Text(self.device_id.clone()),
                        SqlParam::Text(child_id.clone()),
                    ],
                })
            }
        }
    }
}

/// Where a continuation token resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resume {
    /// A row query: after this key.
    After(RowKey),
    /// An aggregating query: after this many result rows.
    Offset(u64),
}

/// A decoded continuation token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    fingerprint: u64,
    resume: Resume,
    returned: u64,
}

impl Continuation {
    /// Reads a token handed out for `query`.
    pub fn decode(token: &str, query: &Query) -> Result<Continuation, ContinuationError> {
        use ContinuationError::Malformed;
        if token.len() > MAX_TOKEN_LEN {
            return Err(Malformed);
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| Malformed)?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| Malformed)?;
        let obj = v.as_object().ok_or(Malformed)?;
        if obj.get("v").and_then(Value::as_u64) != Some(1) {
            return Err(Malformed);
        }
        let fingerprint = obj
            .get("q")
            .and_then(Value::as_str)
            .and_then(|q| u64::from_str_radix(q, 16).ok())
            .ok_or(Malformed)?;
        let returned = obj.get("n").and_then(Value::as_u64).ok_or(Malformed)?;
        let resume = match (obj.get("k"), obj.get("o")) {
            (Some(Value::Array(k)), None) => {
                let part = |i: usize| k.get(i).and_then(Value::as_str).map(str::to_owned);
                let key = match (k.len(), query.from) {
                    (1, Collection::Devices) => RowKey::device(part(0).ok_or(Malformed)?),
                    (2, Collection::Modules | Collection::Jobs) => {
                        RowKey::module(part(0).ok_or(Malformed)?, part(1).ok_or(Malformed)?)
                    }
                    _ => return Err(ContinuationError::OtherQuery),
                };
                Resume::After(key)
            }
            (None, Some(o)) => Resume::Offset(o.as_u64().ok_or(Malformed)?),
            _ => return Err(Malformed),
        };
        if obj.len() != 4 {
            return Err(Malformed);
        }
        if fingerprint != query.fingerprint()
            || matches!(resume, Resume::Offset(_)) != query.is_aggregate()
        {
            return Err(ContinuationError::OtherQuery);
        }
        Ok(Continuation {
            fingerprint,
            resume,
            returned,
        })
    }

    /// The token text.
    pub fn encode(&self) -> String {
        let mut v = json!({
            "v": 1,
            "q": format!("{:016x}", self.fingerprint),
            "n": self.returned,
        });
        match &self.resume {
            Resume::After(key) => {
                let mut k = vec![Value::from(key.device_id.as_str())];
                if let Some(c) = &key.child_id {
                    k.push(Value::from(c.as_str()));
                }
                v["k"] = Value::Array(k);
            }
            Resume::Offset(o) => v["o"] = Value::from(*o),
        }
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// The key after which a row query resumes (`None` for an aggregating query, which
    /// reads everything again).
    pub fn resume_after(&self) -> Option<&RowKey> {
        match &self.resume {
            Resume::After(k) => Some(k),
            Resume::Offset(_) => None,
        }
    }

    /// How many rows the earlier pages returned.
    pub fn returned(&self) -> u64 {
        self.returned
    }
}

/// What a store should do after pushing a row into a [`Pager`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep pushing rows.
    Continue,
    /// The page is complete: stop reading and call [`Pager::finish`].
    Stop,
}

/// One page of a query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The rows (the response body is this array).
    pub rows: Vec<Value>,
    /// The `x-ms-continuation` header: present only when more rows follow.
    pub continuation: Option<String>,
    /// The `x-ms-item-type` header.
    pub item_type: ItemType,
}

/// Builds one page from rows pushed in key order.
///
/// For a row query, push the collection's rows in key order, starting after
/// [`resume_after`](Pager::resume_after) (rows at or before it are skipped if pushed), until
/// [`push`](Pager::push) says [`Flow::Stop`] or the rows run out, then
/// [`finish`](Pager::finish). The pager evaluates, projects and counts; it reads one
/// matching row past a full page to know whether there is more, so a page that happens to
/// hold the last row carries no continuation. For an aggregating query, push every row (the
/// pager never stops early) and the page is cut from the aggregated result.
#[derive(Debug)]
pub struct Pager<'q> {
    query: &'q Query,
    page_size: usize,
    returned: u64,
    resume_after: Option<RowKey>,
    offset: u64,
    mode: Mode<'q>,
}

#[derive(Debug)]
enum Mode<'q> {
    Rows {
        names: Vec<String>,
        rows: Vec<Value>,
        last: Option<RowKey>,
        next: Option<RowKey>,
        done: bool,
    },
    Aggregate(Aggregator<'q>),
}

impl<'q> Pager<'q> {
    /// A pager for `query` with pages of `page_size` rows (clamped to
    /// 1..=[`MAX_PAGE_SIZE`]), resuming from `continuation` when given.
    pub fn new(
        query: &'q Query,
        page_size: usize,
        continuation: Option<&str>,
    ) -> Result<Pager<'q>, ContinuationError> {
        let resume = continuation
            .map(|t| Continuation::decode(t, query))
            .transpose()?;
        let returned = resume.as_ref().map_or(0, |c| c.returned);
        let mode = if query.is_aggregate() {
            Mode::Aggregate(Aggregator::new(query))
        } else {
            let exhausted = query.top.is_some_and(|t| returned >= t);
            Mode::Rows {
                names: query.select.names(),
                rows: Vec::new(),
                last: None,
                next: None,
                done: exhausted,
            }
        };
        let (resume_after, offset) = match resume.map(|c| c.resume) {
            Some(Resume::After(k)) => (Some(k), 0),
            Some(Resume::Offset(o)) => (None, o),
            None => (None, 0),
        };
        Ok(Pager {
            query,
            page_size: page_size.clamp(1, MAX_PAGE_SIZE),
            returned,
            resume_after,
            offset,
            mode,
        })
    }

    /// The key after which the store should start reading (`None`: from the first row).
    pub fn resume_after(&self) -> Option<&RowKey> {
        self.resume_after.as_ref()
    }

    /// Whether the pager still takes rows (false when `TOP` was already reached, so the
    /// store need not read at all).
    pub fn wants_rows(&self) -> bool {
        match &self.mode {
            Mode::Rows { done, .. } => !done,
            Mode::Aggregate(_) => true,
        }
    }

    /// Takes the next row of the scan, with its key.
    pub fn push(&mut self, key: RowKey, row: Value) -> Flow {
        let remaining_top = self.query.top.map(|t| t.saturating_sub(self.returned));
        match &mut self.mode {
            Mode::Aggregate(agg) => {
                agg.push(&row);
                Flow::Continue
            }
            Mode::Rows {
                names,
                rows,
                last,
                next,
                done,
            } => {
                if *done {
                    return Flow::Stop;
                }
                if self
                    .resume_after
                    .as_ref()
                    .is_some_and(|after| key <= *after)
                    || !self.query.matches(&row)
                {
                    return Flow::Continue;
                }
                if rows.len() >= self.page_size {
                    // A matching row past a full page: there is more.
                    *next = last.take();
                    *done = true;
                    return Flow::Stop;
                }
                rows.push(self.query.project_named(row, names));
                *last = Some(key);
                if remaining_top.is_some_and(|r| rows.len() as u64 >= r) {
                    *done = true;
                    return Flow::Stop;
                }
                Flow::Continue
            }
        }
    }

    /// The page.
    pub fn finish(self) -> Page {
        let item_type = self.query.item_type();
        let fingerprint = self.query.fingerprint();
        match self.mode {
            Mode::Rows { rows, next, .. } => {
                let continuation = next.map(|key| {
                    Continuation {
                        fingerprint,
                        resume: Resume::After(key),
                        returned: self.returned + rows.len() as u64,
                    }
                    .encode()
                });
                Page {
                    rows,
                    continuation,
                    item_type,
                }
            }
            Mode::Aggregate(agg) => {
                let all = agg.finish();
                let start = usize::try_from(self.offset)
                    .unwrap_or(usize::MAX)
                    .min(all.len());
                let end = start.saturating_add(self.page_size).min(all.len());
                let continuation = (end < all.len()).then(|| {
                    Continuation {
                        fingerprint,
                        resume: Resume::Offset(end as u64),
                        returned: end as u64,
                    }
                    .encode()
                });
                let rows = all.into_iter().skip(start).take(end - start).collect();
                Page {
                    rows,
                    continuation,
                    item_type,
                }
            }
        }
    }
}
