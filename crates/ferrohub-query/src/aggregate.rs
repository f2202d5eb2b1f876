//! Aggregation: `COUNT()`, `AVG`, `SUM`, `MIN`, `MAX`, with and without `GROUP BY`, one row
//! at a time.
//!
//! Choices where Azure's documentation is silent:
//!
//! * Rows whose grouping path is undefined form a group of their own, and that group's rows
//!   leave the member out (as a projection of an undefined path does); a `null` key is a
//!   different group, shown as `null`. Keys that are equal numbers (`1`, `1.0`) are one group,
//!   shown as first seen.
//! * `SUM` and `AVG` add the numbers and skip other values; `SUM` of no numbers is 0, `AVG`
//!   of none is left out. `MIN` and `MAX` range over primitives, ordered
//!   `null < false < true < numbers < strings`, and are left out when there are none.
//! * Without `GROUP BY` there is always exactly one result row (`COUNT()` of nothing is 0);
//!   with it, one row per group in the order the groups were first seen, and none when no row
//!   matched.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::ast::{Aggregate, Projection, Query, Select};
use crate::eval::{Num, Val, resolve};

/// Accumulates the rows of an aggregating query and produces its result rows.
///
/// Push every row of the collection (the aggregator applies the query's condition itself),
/// then [`finish`](Aggregator::finish). Memory is one small state per group.
#[derive(Debug)]
pub struct Aggregator<'q> {
    query: &'q Query,
    groups: Vec<Group>,
    index: HashMap<String, usize>,
}

#[derive(Debug)]
struct Group {
    /// The grouping values as first seen (`None`: undefined).
    key: Vec<Option<Value>>,
    /// One accumulator per select item.
    accs: Vec<Acc>,
}

#[derive(Debug)]
enum Acc {
    Count(u64),
    Sum(Num),
    Avg(Num, u64),
    Min(Option<Value>),
    Max(Option<Value>),
    /// A grouped path: the value comes from the group key at this position.
    Key(usize),
    /// A path that is not grouped (only in hand-built trees): the first row's value.
    First(Option<Option<Value>>),
}

impl<'q> Aggregator<'q> {
    /// An aggregator for `query`.
    pub fn new(query: &'q Query) -> Aggregator<'q> {
        let mut a = Aggregator {
            query,
            groups: Vec::new(),
            index: HashMap::new(),
        };
        if query.group_by.is_empty() {
            // One group, present even when no row matches.
            let group = a.new_group(Vec::new());
            a.groups.push(group);
            a.index.insert(String::new(), 0);
        }
        a
    }

    fn new_group(&self, key: Vec<Option<Value>>) -> Group {
        let accs = match &self.query.select {
            Select::All => Vec::new(),
            Select::Items(items) => items
                .iter()
                .map(|item| match &item.value {
                    Projection::Aggregate(Aggregate::Count) => Acc::Count(0),
                    Projection::Aggregate(Aggregate::Sum(_)) => Acc::Sum(Num::Int(0)),
                    Projection::Aggregate(Aggregate::Avg(_)) => Acc::Avg(Num::Int(0), 0),
                    Projection::Aggregate(Aggregate::Min(_)) => Acc::Min(None),
                    Projection::Aggregate(Aggregate::Max(_)) => Acc::Max(None),
                    Projection::Path(p) => match self.query.group_by.iter().position(|g| g == p) {
                        Some(i) => Acc::Key(i),
                        None => Acc::First(None),
                    },
                })
                .collect(),
        };
        Group { key, accs }
    }

    /// Adds a row, if the query's condition selects it.
    pub fn push(&mut self, row: &Value) {
        if !self.query.matches(row) {
            return;
        }
        let key: Vec<Option<&Value>> = self
            .query
            .group_by
            .iter()
            .map(|p| resolve(p, row))
            .collect();
        let mut fingerprint = String::new();
        for k in &key {
            write_key(&mut fingerprint, *k);
        }
        let at = match self.index.get(&fingerprint) {
            Some(&i) => i,
            None => {
                let group = self.new_group(key.iter().map(|k| k.cloned()).collect());
                self.groups.push(group);
                self.index.insert(fingerprint, self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        let Select::Items(items) = &self.query.select else {
            return;
        };
        let Some(group) = self.groups.get_mut(at) else {
            return;
        };
        for (acc, item) in group.accs.iter_mut().zip(items) {
            let value = match &item.value {
                Projection::Aggregate(a) => a.path().and_then(|p| resolve(p, row)),
                Projection::Path(p) => resolve(p, row),
            };
            acc.add(value);
        }
    }

    /// The result rows, `TOP` applied.
    pub fn finish(self) -> Vec<Value> {
        let names = self.query.select.names();
        let limit = self
            .query
            .top
            .map_or(usize::MAX, |t| usize::try_from(t).unwrap_or(usize::MAX));
        self.groups
            .into_iter()
            .take(limit)
            .map(|group| {
                let mut row = Map::new();
                for (acc, name) in group.accs.into_iter().zip(&names) {
                    if let Some(v) = acc.result(&group.key) {
                        row.insert(name.clone(), v);
                    }
                }
                Value::Object(row)
            })
            .collect()
    }
}

impl Acc {
    fn add(&mut self, value: Option<&Value>) {
        let num = || match value.map(Val::of_json) {
            Some(Val::Num(n)) => Some(n),
            _ => None,
        };
        match self {
            Acc::Count(n) => *n += 1,
            Acc::Sum(sum) => {
                if let Some(n) = num() {
                    *sum = add(*sum, n);
                }
            }
            Acc::Avg(sum, count) => {
                if let Some(n) = num() {
                    *sum = add(*sum, n);
                    *count += 1;
                }
            }
            Acc::Min(best) => keep(best, value, Ordering::Less),
            Acc::Max(best) => keep(best, value, Ordering::Greater),
            Acc::Key(_) => {}
            Acc::First(first) => {
                if first.is_none() {
                    *first = Some(value.cloned());
                }
            }
        }
    }

    fn result(self, key: &[Option<Value>]) -> Option<Value> {
        match self {
            Acc::Count(n) => Some(n.into()),
            Acc::Sum(sum) => tidy(sum).map(Value::Number),
            Acc::Avg(_, 0) => None,
            Acc::Avg(sum, count) => {
                tidy(Num::Float(sum.as_f64() / count as f64)).map(Value::Number)
            }
            Acc::Min(v) | Acc::Max(v) => v,
            Acc::Key(i) => key.get(i).cloned().flatten(),
            Acc::First(v) => v.flatten(),
        }
    }
}

fn add(a: Num, b: Num) -> Num {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x
            .checked_add(y)
            .map_or(Num::Float(x as f64 + y as f64), Num::Int),
        _ => Num::Float(a.as_f64() + b.as_f64()),
    }
}

/// A result number, integral floats as integers (Azure's service writes `2`, not `2.0`).
fn tidy(n: Num) -> Option<serde_json::Number> {
    match n {
        Num::Float(f) if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => {
            Num::Int(f as i128).to_json()
        }
        n => n.to_json(),
    }
}

/// Keeps in `best` whichever of it and `value` is first in direction `want`.
fn keep(best: &mut Option<Value>, value: Option<&Value>, want: Ordering) {
    let Some(v) = value else { return };
    if rank(v).is_none() {
        return;
    }
    let better = match best {
        None => true,
        Some(b) => cross_kind_order(v, b) == Some(want),
    };
    if better {
        *best = Some(v.clone());
    }
}

/// The kind rank of a primitive for `MIN`/`MAX`; `None` for arrays and objects.
fn rank(v: &Value) -> Option<u8> {
    match v {
        Value::Null => Some(0),
        Value::Bool(_) => Some(1),
        Value::Number(_) => Some(2),
        Value::String(_) => Some(3),
        Value::Array(_) | Value::Object(_) => None,
    }
}

fn cross_kind_order(a: &Value, b: &Value) -> Option<Ordering> {
    let (ra, rb) = (rank(a)?, rank(b)?);
    if ra != rb {
        return Some(ra.cmp(&rb));
    }
    Val::of_json(a).compare(Val::of_json(b))
}

/// Appends an injective text form of a grouping value: equal numbers give equal text,
/// object members are sorted.
fn write_key(out: &mut String, v: Option<&Value>) {
    match v {
        None => out.push('u'),
        Some(Value::Null) => out.push('n'),
        Some(Value::Bool(b)) => out.push(if *b { 't' } else { 'f' }),
        Some(Value::Number(n)) => {
            match Num::of(n) {
                Some(Num::Int(i)) => {
                    let _ = write!(out, "i{i};");
                }
                Some(Num::Float(f)) if f.fract() == 0.0 && f.abs() < 1e38 => {
                    let _ = write!(out, "i{};", f as i128);
                }
                Some(Num::Float(f)) => {
                    let _ = write!(out, "f{f:?};");
                }
                None => {
                    let _ = write!(out, "x{n};");
                }
            };
        }
        Some(Value::String(s)) => {
            let _ = write!(out, "s{}:{s}", s.len());
        }
        Some(Value::Array(items)) => {
            let _ = write!(out, "a{}:", items.len());
            for item in items {
                write_key(out, Some(item));
            }
        }
        Some(Value::Object(members)) => {
            let mut keys: Vec<&String> = members.keys().collect();
            keys.sort();
            let _ = write!(out, "o{}:", keys.len());
            for k in keys {
                let _ = write!(out, "{}:{k}", k.len());
                write_key(out, members.get(k));
            }
        }
    }
}
