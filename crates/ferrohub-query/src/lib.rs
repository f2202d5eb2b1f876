//! The IoT Hub query language: `POST /devices/query` and the `queryCondition` of jobs.
//!
//! Pure: no I/O, no runtime. A query is parsed once into a [`Query`] (whose every refusal is
//! a [`ParseError`] naming the construct and where it is — the hub answers it as 400
//! `ArgumentInvalid`), then evaluated row by row over `serde_json::Value` rows shaped exactly
//! as the REST API shows them (twins, module twins with `moduleId`, per-device job records).
//!
//! # The language
//!
//! ```text
//! SELECT [TOP n] (* | item {, item}) FROM (devices | devices.modules | devices.jobs)
//!        [WHERE condition] [GROUP BY path {, path}]
//! item      := (path | COUNT() | AVG(path) | SUM(path) | MIN(path) | MAX(path)) [AS name]
//! condition := expressions with OR, AND, NOT, = != <> < > <= >=, IN/NIN [constants],
//!              + - * / %, parentheses, and the functions IS_DEFINED, IS_NULL, IS_BOOL,
//!              IS_NUMBER, IS_STRING, IS_OBJECT, IS_ARRAY, IS_PRIMITIVE,
//!              STARTSWITH (STARTS_WITH), ENDSWITH (ENDS_WITH), CONTAINS
//! constants := 'str' "str" (escapes \' \" \\ \/ \b \f \n \r \t \uXXXX), 12, 1.5e3, 0x1F,
//!              true, false, null, undefined, [c, …]
//! path      := name {.name | ['name'] | [index]}, optionally behind the collection
//!              (devices.tags.x, devices.modules.moduleId, devices.jobs.jobId)
//! ```
//!
//! Keywords and function names are case-insensitive, and so are the fixed twin and job
//! member names (`DeviceId`, `Properties.Reported`), which results show in canonical case;
//! `id` is `deviceId`, and in `devices.jobs` the documentation's `createdTimeUtc` is the
//! records' `createdDateTimeUtc`. User property names are case-sensitive. A path may start
//! with its own collection's name (`devices.modules.moduleId` in a module query); a path
//! into another collection is refused, as are joins, subqueries, `ORDER BY`, `DISTINCT`,
//! `LIKE`, `BETWEEN`, `IS NULL`, parameters and every other function — each by name, with
//! its line and column. Where Azure is stricter than needed (it allows `GROUP BY` only on
//! `devices` and only `SELECT *` on `devices.jobs`), these queries are accepted.
//!
//! # Semantics
//!
//! A condition selects a row only when it is boolean `true`. A missing path is undefined;
//! comparisons hold only between primitives of the same kind (numbers numerically and
//! exactly, strings case-sensitively by code point), anything else is undefined;
//! `AND`/`OR`/`NOT` are three-valued (`false AND undefined` is false, `NOT undefined` is
//! undefined); `IN` needs a primitive; `IS_DEFINED` is true for a `null` property; the type
//! tests are false for undefined; the string functions need two strings. Projections are
//! objects keyed by alias or by the path's last name (`$1`, `$2`, … for unaliased
//! aggregates), leaving out undefined values; `SELECT *` rows are the rows. Aggregation, and
//! how an undefined `GROUP BY` key shows, is described at [`Aggregator`].
//!
//! # Serving a query from a store, one page at a time
//!
//! Nothing requires the registry in memory: parse, push the condition down to SQL, read rows
//! in key order from where the continuation token points, and let a [`Pager`] evaluate,
//! project or aggregate until the page is full.
//!
//! ```
//! use ferrohub_query::{Dialect, Flow, Query, RowKey, Table};
//! use serde_json::json;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let query = Query::parse(
//!     "SELECT deviceId, tags.floor FROM devices WHERE tags.building = 'A' AND connectionState = 'Connected'",
//! )?;
//!
//! // What the store's SQL may pre-filter on (never the live connectionState), with the
//! // values bound as parameters ?1, ?2, …, never spliced into the text.
//! let table = Table { device_id: Some("device_id"), ..Table::new("doc") };
//! let filter = query.sql_filter(Dialect::Sqlite, &table, 1);
//! assert!(!filter.sql.contains("connectionState") && !filter.sql.contains("'A'"));
//!
//! // The first page (no continuation token in the request). The store runs
//! // `SELECT device_id, doc FROM devices WHERE <filter.sql> ORDER BY device_id`, adds the live
//! // fields to each document, and pushes rows until the pager says stop.
//! let mut pager = query.pager(2, None)?;
//! let rows = [
//!     ("d1", json!({"deviceId": "d1", "tags": {"building": "A", "floor": 1}, "connectionState": "Connected"})),
//!     ("d2", json!({"deviceId": "d2", "tags": {"building": "B", "floor": 2}, "connectionState": "Connected"})),
//!     ("d3", json!({"deviceId": "d3", "tags": {"building": "A", "floor": 3}, "connectionState": "Connected"})),
//!     ("d4", json!({"deviceId": "d4", "tags": {"building": "A", "floor": 4}, "connectionState": "Connected"})),
//! ];
//! for (id, row) in rows.clone() {
//!     if pager.push(RowKey::device(id), row) == Flow::Stop {
//!         break;
//!     }
//! }
//! let page = pager.finish();
//! assert_eq!(page.item_type.as_str(), "raw");
//! assert_eq!(page.rows, vec![json!({"deviceId": "d1", "floor": 1}), json!({"deviceId": "d3", "floor": 3})]);
//!
//! // d4 also matched, so there is a next page: the response carries a token, and the next
//! // request brings it back with the same query. The store reads from after d3.
//! let token = page.continuation.expect("a next page");
//! let mut pager = query.pager(2, Some(&token))?;
//! let after = pager.resume_after().expect("row queries resume after a key");
//! let range = after
//!     .sql_after(Dialect::Sqlite, &table, 1 + filter.params.len())
//!     .expect("the table has a device_id column");
//! let sql = format!(
//!     "SELECT device_id, doc FROM devices WHERE {} AND {} ORDER BY device_id",
//!     filter.sql, range.sql
//! );
//! # let _ = sql;
//! for (id, row) in rows.into_iter().skip(3) {
//!     if pager.push(RowKey::device(id), row) == Flow::Stop {
//!         break;
//!     }
//! }
//! let last = pager.finish();
//! assert_eq!(last.rows, vec![json!({"deviceId": "d4", "floor": 4})]);
//! assert_eq!(last.continuation, None, "the last page has no token");
//! # Ok(())
//! # }
//! ```
//!
//! A store that can look rows up by key should check [`Query::key_lookup`] first
//! (`deviceId = 'x'`, `deviceId IN [...]`) and read just those ids, still in key order and
//! after the resume key. A store keeping twins in `ferrohub-twin`'s stored form says so with
//! [`Layout::StoredTwin`]. Aggregating queries read every row for every page; their
//! continuation counts result rows. A job runs its `queryCondition` as
//! [`Query::select_all`]`(Collection::Devices, Condition::parse(text)?)`.

mod aggregate;
mod ast;
mod error;
mod eval;
mod lexer;
mod names;
mod paging;
mod parser;
mod pushdown;
mod query;
mod sql;

pub use aggregate::Aggregator;
pub use ast::{
    Aggregate, BinaryOp, Collection, Condition, Constant, Expr, Function, Path, Projection, Query,
    Segment, Select, SelectItem,
};
pub use error::{ContinuationError, Location, ParseError, ParseErrorKind};
pub use names::LIVE_FIELDS;
pub use paging::{
    Continuation, DEFAULT_PAGE_SIZE, Flow, ItemType, MAX_PAGE_SIZE, Page, Pager, RowKey,
};
pub use parser::{MAX_DEPTH, MAX_QUERY_CHARS};
pub use pushdown::{
    CompareOp, Dialect, Field, Filter, JsonTypes, KeyLookup, Layout, PreFilter, Scalar, Table,
    TextTest,
};
pub use sql::{SqlFilter, SqlParam};
