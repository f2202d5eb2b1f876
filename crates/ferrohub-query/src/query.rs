//! The operations on parsed queries and conditions.

use serde_json::{Map, Value};

use crate::aggregate::Aggregator;
use crate::ast::{Collection, Condition, Projection, Query, Select};
use crate::error::{ContinuationError, ParseError};
use crate::eval::{is_true, resolve};
use crate::paging::{ItemType, Pager};
use crate::parser;
use crate::pushdown::{Dialect, KeyLookup, PreFilter, Table, key_lookup, pre_filter};
use crate::sql::SqlFilter;

impl Query {
    /// Parses query text (at most [`MAX_QUERY_CHARS`](crate::MAX_QUERY_CHARS) characters).
    pub fn parse(text: &str) -> Result<Query, ParseError> {
        parser::parse_query(text)
    }

    /// `SELECT * FROM collection WHERE condition`: the query a job runs over its
    /// `queryCondition`.
    pub fn select_all(from: Collection, condition: Condition) -> Query {
        Query {
            top: None,
            select: Select::All,
            from,
            condition,
            group_by: Vec::new(),
        }
    }

    /// Whether the query's condition selects `row`.
    pub fn matches(&self, row: &Value) -> bool {
        self.condition.matches(row)
    }

    /// Whether the query aggregates (has an aggregate or `GROUP BY`), so that its rows are
    /// made by an [`Aggregator`] rather than one per selected row.
    pub fn is_aggregate(&self) -> bool {
        if !self.group_by.is_empty() {
            return true;
        }
        match &self.select {
            Select::All => false,
            Select::Items(items) => items
                .iter()
                .any(|i| matches!(i.value, Projection::Aggregate(_))),
        }
    }

    /// The result row for a selected `row` of a query that does not aggregate: the row
    /// itself for `SELECT *`, else an object with one member per item whose path is defined
    /// (undefined values are left out, as Azure does).
    pub fn project(&self, row: Value) -> Value {
        self.project_named(row, &self.select.names())
    }

    /// [`project`](Query::project) with the select list's [`names`](Select::names) computed
    /// once by the caller.
    pub(crate) fn project_named(&self, row: Value, names: &[String]) -> Value {
        let Select::Items(items) = &self.select else {
            return row;
        };
        let mut out = Map::new();
        for (item, name) in items.iter().zip(names) {
            if let Projection::Path(p) = &item.value
                && let Some(v) = resolve(p, &row)
            {
                out.insert(name.clone(), v.clone());
            }
        }
        Value::Object(out)
    }

    /// An aggregator for this query's rows.
    pub fn aggregator(&self) -> Aggregator<'_> {
        Aggregator::new(self)
    }

    /// The `x-ms-item-type` of the result.
    pub fn item_type(&self) -> ItemType {
        match (&self.select, self.from, self.is_aggregate()) {
            (Select::All, Collection::Jobs, false) => ItemType::DeviceJob,
            (Select::All, _, false) => ItemType::Twin,
            _ => ItemType::Raw,
        }
    }

    /// A stable fingerprint of what the query means (a hash of its canonical text), which
    /// continuation tokens carry.
    pub fn fingerprint(&self) -> u64 {
        // FNV-1a: fixed across builds and platforms, unlike std's hasher.
        self.to_string()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            })
    }

    /// A pager for one page of the result.
    pub fn pager(
        &self,
        page_size: usize,
        continuation: Option<&str>,
    ) -> Result<Pager<'_>, ContinuationError> {
        Pager::new(self, page_size, continuation)
    }

    /// The pre-filter a store can run in SQL before evaluating rows exactly.
    pub fn pre_filter(&self, dialect: Dialect, table: &Table<'_>) -> PreFilter {
        pre_filter(&self.condition, self.from, dialect, table)
    }

    /// The pre-filter rendered as SQL, placeholders numbered from `first_param`.
    pub fn sql_filter(&self, dialect: Dialect, table: &Table<'_>, first_param: usize) -> SqlFilter {
        self.pre_filter(dialect, table).to_sql(table, first_param)
    }

    /// The ids the condition limits rows to.
    pub fn key_lookup(&self) -> KeyLookup {
        key_lookup(&self.condition, self.from)
    }
}

impl Condition {
    /// Parses a job's `queryCondition`: `*` (every device), or a `WHERE` condition over
    /// `devices` (the keyword `WHERE` itself is optional).
    pub fn parse(text: &str) -> Result<Condition, ParseError> {
        parser::parse_condition(text)
    }

    /// Whether the condition selects `row`.
    pub fn matches(&self, row: &Value) -> bool {
        match self {
            Condition::All => true,
            Condition::Where(e) => is_true(e, row),
        }
    }

    /// The pre-filter of the condition over `collection` (see [`Query::pre_filter`]).
    pub fn pre_filter(
        &self,
        collection: Collection,
        dialect: Dialect,
        table: &Table<'_>,
    ) -> PreFilter {
        pre_filter(self, collection, dialect, table)
    }

    /// The ids the condition limits rows of `collection` to.
    pub fn key_lookup(&self, collection: Collection) -> KeyLookup {
        key_lookup(self, collection)
    }
}
