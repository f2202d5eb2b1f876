//! SQL renderings of a [`Filter`]: clause text with numbered placeholders, and the values
//! to bind to them as a typed list. Nothing from the query is ever spliced into the text;
//! even paths are bound (SQLite: a JSON path string; PostgreSQL: a `text[]`).
//!
//! Atom by atom (SQLite / PostgreSQL), with `v` the value at the path:
//!
//! * kind test: `coalesce(json_type(doc, ?), '') IN (…)` / `coalesce(jsonb_typeof(doc #> $n::text[]), '') IN (…)`;
//! * comparison: a kind test `AND` `json_extract(doc, ?) op ?` / `(doc #> $n::text[]) op to_jsonb($m)` for numbers
//!   and booleans, `(doc #>> $n::text[]) COLLATE "C" op $m::text` for strings (byte order, not the database's
//!   collation);
//! * string tests: `substr`/`instr` over the UTF-8 bytes / `left`/`right`/`strpos` over characters.
//!
//! Every rendering is `0`/`1` (`FALSE`/`TRUE`), never `NULL`, so `NOT` is safe.

use std::fmt::Write as _;

use crate::ast::{Collection, Path, Segment};
use crate::pushdown::{
    CompareOp, Dialect, Field, Filter, JsonTypes, PreFilter, Scalar, Table, TextTest,
};

/// A rendered SQL condition: text with numbered placeholders (`?N` for SQLite, `$N` with a
/// cast for PostgreSQL) and the values to bind to them, in placeholder order.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlFilter {
    /// The condition, to be placed in a `WHERE` clause (it is parenthesised as needed).
    pub sql: String,
    /// The values for placeholders `first_param`, `first_param + 1`, ….
    pub params: Vec<SqlParam>,
}

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlParam {
    /// Text (also SQLite's JSON paths).
    Text(String),
    /// A 64-bit integer.
    Integer(i64),
    /// A double.
    Real(f64),
    /// A boolean (SQLite: bind as integer 1 or 0, which is what `json_extract` returns for
    /// JSON `true` and `false`).
    Bool(bool),
    /// A text array (PostgreSQL's paths for `#>`).
    TextArray(Vec<String>),
}

/// Quotes an SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub(crate) struct Renderer<'a> {
    dialect: Dialect,
    table: &'a Table<'a>,
    collection: Collection,
    out: String,
    params: Vec<SqlParam>,
    first: usize,
}

impl<'a> Renderer<'a> {
    pub(crate) fn new(
        dialect: Dialect,
        table: &'a Table<'a>,
        collection: Collection,
        first_param: usize,
    ) -> Self {
        Renderer {
            dialect,
            table,
            collection,
            out: String::new(),
            params: Vec::new(),
            first: first_param.max(1),
        }
    }

    pub(crate) fn finish(self) -> SqlFilter {
        SqlFilter {
            sql: self.out,
            params: self.params,
        }
    }

    /// Binds `p` and returns its placeholder.
    fn bind(&mut self, p: SqlParam) -> String {
        let n = self.first + self.params.len();
        let placeholder = match self.dialect {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => {
                let cast = match &p {
                    SqlParam::Text(_) => "text",
                    SqlParam::Integer(_) => "int8",
                    SqlParam::Real(_) => "float8",
                    SqlParam::Bool(_) => "bool",
                    SqlParam::TextArray(_) => "text[]",
                };
                format!("${n}::{cast}")
            }
        };
        self.params.push(p);
        placeholder
    }

    fn literal_bool(&self, b: bool) -> &'static str {
        match (self.dialect, b) {
            (Dialect::Sqlite, true) => "1",
            (Dialect::Sqlite, false) => "0",
            (Dialect::Postgres, true) => "TRUE",
            (Dialect::Postgres, false) => "FALSE",
        }
    }

    /// Where `field` is: a key column (quoted), or else a path in the document. A key field
    /// of a table without that column is read from the document, where the REST layout
    /// has it.
    fn column(&self, field: &Field) -> Result<String, Path> {
        let (column, name) = match field {
            Field::Document(path) => return Err(path.clone()),
            Field::DeviceId => (self.table.device_id, "deviceId"),
            Field::ChildId => (
                self.table.child_id,
                if self.collection == Collection::Jobs {
                    "jobId"
                } else {
                    "moduleId"
                },
            ),
        };
        match column {
            Some(c) => Ok(ident(c)),
            None => Err(Path::keys(&[name]).unwrap_or_else(|| unreachable!("one key"))),
        }
    }

    /// The bound path, for the document column.
    fn path_param(&mut self, path: &Path) -> String {
        let p = match self.dialect {
            Dialect::Sqlite => {
                let mut s = String::from("$");
                for seg in path.segments() {
                    match seg {
                        Segment::Key(k) => {
                            let _ = write!(s, ".\"{k}\"");
                        }
                        Segment::Index(i) => {
                            let _ = write!(s, "[{i}]");
                        }
                    }
                }
                SqlParam::Text(s)
            }
            Dialect::Postgres => SqlParam::TextArray(
                path.segments()
                    .iter()
                    .map(|seg| match seg {
                        Segment::Key(k) => k.clone(),
                        Segment::Index(i) => i.to_string(),
                    })
                    .collect(),
            ),
        };
        self.bind(p)
    }

    /// The JSON value at `path` (SQLite: as an SQL value; PostgreSQL: as `jsonb`).
    fn json_value(&mut self, path: &Path) -> String {
        let doc = ident(self.table.document);
        let p = self.path_param(path);
        match self.dialect {
            Dialect::Sqlite => format!("json_extract({doc}, {p})"),
            Dialect::Postgres => format!("({doc} #> {p})"),
        }
    }

    /// The string at `field` as SQL text (meaningful when it is a string).
    fn text_value(&mut self, field: &Field) -> String {
        let path = match self.column(field) {
            Ok(col) => return col,
            Err(path) => path,
        };
        let path = &path;
        let doc = ident(self.table.document);
        let p = self.path_param(path);
        match self.dialect {
            Dialect::Sqlite => format!("json_extract({doc}, {p})"),
            Dialect::Postgres => format!("({doc} #>> {p})"),
        }
    }

    /// A test that the value at `field` is of one of `types` (false when missing).
    fn kind_test(&mut self, field: &Field, types: JsonTypes) -> String {
        let path = match self.column(field) {
            Ok(_) => {
                return self
                    .literal_bool(types.contains(JsonTypes::STRING))
                    .to_owned();
            }
            Err(path) => path,
        };
        let path = &path;
        let doc = ident(self.table.document);
        let p = self.path_param(path);
        if types == JsonTypes::ANY {
            return match self.dialect {
                Dialect::Sqlite => format!("(json_type({doc}, {p}) IS NOT NULL)"),
                Dialect::Postgres => format!("(({doc} #> {p}) IS NOT NULL)"),
            };
        }
        let names: &[(JsonTypes, &[&str])] = match self.dialect {
            Dialect::Sqlite => &[
                (JsonTypes::NULL, &["null"]),
                (JsonTypes::BOOL, &["true", "false"]),
                (JsonTypes::NUMBER, &["integer", "real"]),
                (JsonTypes::STRING, &["text"]),
                (JsonTypes::ARRAY, &["array"]),
                (JsonTypes::OBJECT, &["object"]),
            ],
            Dialect::Postgres => &[
                (JsonTypes::NULL, &["null"]),
                (JsonTypes::BOOL, &["boolean"]),
                (JsonTypes::NUMBER, &["number"]),
                (JsonTypes::STRING, &["string"]),
                (JsonTypes::ARRAY, &["array"]),
                (JsonTypes::OBJECT, &["object"]),
            ],
        };
        let list: Vec<String> = names
            .iter()
            .filter(|(t, _)| types.contains(*t))
            .flat_map(|(_, ns)| ns.iter().map(|n| format!("'{n}'")))
            .collect();
        if list.is_empty() {
            return self.literal_bool(false).to_owned();
        }
        let list = list.join(", ");
        match self.dialect {
            Dialect::Sqlite => format!("(coalesce(json_type({doc}, {p}), '') IN ({list}))"),
            Dialect::Postgres => format!("(coalesce(jsonb_typeof({doc} #> {p}), '') IN ({list}))"),
        }
    }

    pub(crate) fn filter(&mut self, f: &Filter) {
        match f {
            Filter::True => self.out.push_str(self.literal_bool(true)),
            Filter::False => self.out.push_str(self.literal_bool(false)),
            Filter::And(fs) | Filter::Or(fs) => {
                let joiner = if matches!(f, Filter::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                if fs.is_empty() {
                    self.out
                        .push_str(self.literal_bool(matches!(f, Filter::And(_))));
                    return;
                }
                self.out.push('(');
                for (i, inner) in fs.iter().enumerate() {
                    if i > 0 {
                        self.out.push_str(joiner);
                    }
                    self.filter(inner);
                }
                self.out.push(')');
            }
            Filter::Not(inner) => {
                self.out.push_str("(NOT ");
                self.filter(inner);
                self.out.push(')');
            }
            Filter::HasType { field, types } => {
                let s = self.kind_test(field, *types);
                self.out.push_str(&s);
            }
            Filter::Compare { field, op, value } => {
                let s = self.compare(field, *op, value);
                self.out.push_str(&s);
            }
            Filter::Text {
                field,
                test,
                needle,
            } => {
                let s = self.text_test(field, *test, needle);
                self.out.push_str(&s);
            }
        }
    }

    fn compare(&mut self, field: &Field, op: CompareOp, value: &Scalar) -> String {
        let collate = match self.dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => " COLLATE \"C\"",
        };
        let path = match self.column(field) {
            Ok(col) => {
                let Scalar::Text(s) = value else {
                    return self.literal_bool(false).to_owned();
                };
                let p = self.bind(SqlParam::Text(s.clone()));
                return format!("({col}{collate} {} {p})", op.sql());
            }
            Err(path) => path,
        };
        let path = &path;
        let kind = match value {
            Scalar::Bool(_) => JsonTypes::BOOL,
            Scalar::Integer(_) | Scalar::Real(_) => JsonTypes::NUMBER,
            Scalar::Text(_) => JsonTypes::STRING,
        };
        let guard = self.kind_test(field, kind);
        let param = |v: &Scalar| match v {
            Scalar::Bool(b) => SqlParam::Bool(*b),
            Scalar::Integer(i) => SqlParam::Integer(*i),
            Scalar::Real(f) => SqlParam::Real(*f),
            Scalar::Text(s) => SqlParam::Text(s.clone()),
        };
        let test = match (self.dialect, value) {
            (Dialect::Sqlite, v) => {
                let lhs = self.json_value(path);
                let rhs = self.bind(param(v));
                format!("{lhs} {} {rhs}", op.sql())
            }
            (Dialect::Postgres, Scalar::Text(s)) => {
                let lhs = self.text_value(field);
                let rhs = self.bind(SqlParam::Text(s.clone()));
                format!("{lhs}{collate} {} {rhs}", op.sql())
            }
            (Dialect::Postgres, v) => {
                let lhs = self.json_value(path);
                let rhs = self.bind(param(v));
                format!("{lhs} {} to_jsonb({rhs})", op.sql())
            }
        };
        Self::guarded(&guard, &test)
    }

    /// `test`, behind `guard` unless that is literally true (a key column's kind is known).
    fn guarded(guard: &str, test: &str) -> String {
        if guard == "1" || guard == "TRUE" {
            format!("({test})")
        } else {
            format!("({guard} AND {test})")
        }
    }

    fn text_test(&mut self, field: &Field, test: TextTest, needle: &str) -> String {
        let guard = self.kind_test(field, JsonTypes::STRING);
        if needle.is_empty() {
            // Every string starts with, ends with and contains "".
            return guard;
        }
        let s = self.text_value(field);
        let a = self.bind(SqlParam::Text(needle.to_owned()));
        let t = match (self.dialect, test) {
            // SQLite works on the bytes: its `length` and negative `substr` of text stop at
            // a NUL, those of a blob do not, and a byte-wise match of UTF-8 is a
            // character-wise one. `substr` of an empty blob is NULL, not an empty blob, so
            // the prefix and suffix tests compare with `IS` (never NULL: NOT must hold for "").
            (Dialect::Sqlite, TextTest::Contains) => {
                format!("instr(CAST({s} AS BLOB), CAST({a} AS BLOB)) > 0")
            }
            (Dialect::Postgres, TextTest::Contains) => format!("strpos({s}, {a}) > 0"),
            (dialect, test) => {
                let b = self.bind(SqlParam::Text(needle.to_owned()));
                match (dialect, test) {
                    (Dialect::Sqlite, TextTest::StartsWith) => {
                        format!(
                            "substr(CAST({s} AS BLOB), 1, length(CAST({a} AS BLOB))) IS CAST({b} AS BLOB)"
                        )
                    }
                    (Dialect::Sqlite, _) => {
                        format!(
                            "substr(CAST({s} AS BLOB), -length(CAST({a} AS BLOB))) IS CAST({b} AS BLOB)"
                        )
                    }
                    (Dialect::Postgres, TextTest::StartsWith) => {
                        format!("left({s}, length({a})) = {b}")
                    }
                    (Dialect::Postgres, _) => format!("right({s}, length({a})) = {b}"),
                }
            }
        };
        Self::guarded(&guard, &t)
    }
}

impl PreFilter {
    /// Renders the filter as SQL for `table` (the one it was made for), numbering
    /// placeholders from `first_param` (at least 1), so that it can be combined with a
    /// store's own placeholders.
    pub fn to_sql(&self, table: &Table<'_>, first_param: usize) -> SqlFilter {
        let mut r = Renderer::new(self.dialect, table, self.collection, first_param);
        r.filter(&self.filter);
        r.finish()
    }
}
