//! Push-down: a query's condition as a pre-filter a store can run in SQL.
//!
//! The pre-filter is a *superset* of the exact result: every row the condition selects passes
//! it, and the store then checks each row that passes with the evaluator. What cannot be
//! translated safely becomes `TRUE`. The translation goes through [`Filter`], a small
//! two-valued language over the stored document whose atoms have exact SQL renderings
//! ([`crate::sql`]); [`Filter::matches`] interprets it directly, which is how the superset
//! property is tested.
//!
//! Because `NOT` flips three-valued results (`NOT undefined` is undefined, not true), the
//! translation computes two filters for every sub-condition: one that passes every row where
//! it is `true`, and one that passes every row where it is `false`; `NOT c` swaps them.
//!
//! Never pushed down: paths on the live fields ([`LIVE_FIELDS`](crate::LIVE_FIELDS), filled in
//! at read time), on [`Table::computed_fields`] and outside what the [`Layout`] stores;
//! comparisons between two paths;
//! arithmetic; numbers of magnitude 2^53 or more (SQLite reads large JSON integers as
//! floats); for PostgreSQL, strings holding NUL (its text cannot); and paths a dialect cannot
//! express exactly (SQLite: a key holding `"` or NUL; PostgreSQL: a key that reads as an array
//! index, or an index segment, because `#>` treats those alike).

use serde_json::Value;

use crate::ast::{BinaryOp, Collection, Condition, Constant, Expr, Function, Path, Segment};
use crate::eval::{Num, Val, eval, resolve};
use crate::names::LIVE_FIELDS;
use crate::paging::RowKey;

/// The SQL dialects the pre-filter is rendered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// SQLite with its JSON functions (`json_extract`, `json_type`); the document column
    /// holds JSON text.
    Sqlite,
    /// PostgreSQL; the document column is `jsonb`.
    Postgres,
}

/// How a store keeps the rows of one collection: the table's columns the pre-filter may
/// read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table<'a> {
    /// The column holding the row as a JSON document (see [`layout`](Table::layout)).
    pub document: &'a str,
    /// How the document holds the row.
    pub layout: Layout,
    /// A text column holding exactly the row's `deviceId`, with binary ordering (SQLite's
    /// default `BINARY`, PostgreSQL's `COLLATE "C"`); conditions on `deviceId` use it, so
    /// they can use its index.
    pub device_id: Option<&'a str>,
    /// A text column holding exactly the row's `moduleId` (`devices.modules`) or `jobId`
    /// (`devices.jobs`), ordered like [`device_id`](Table::device_id).
    pub child_id: Option<&'a str>,
    /// Top-level fields that rows have but the document does not (the store adds them when
    /// it reads a row); never filtered on in SQL. The live fields are always left out too.
    pub computed_fields: &'a [&'a str],
}

impl<'a> Table<'a> {
    /// A table whose document column is `document` and that has no key columns and no
    /// computed fields.
    pub fn new(document: &'a str) -> Table<'a> {
        Table {
            document,
            layout: Layout::Rest,
            device_id: None,
            child_id: None,
            computed_fields: &[],
        }
    }
}

/// How a table's document column holds a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Layout {
    /// The row as REST shows it, less the live fields and [`Table::computed_fields`]: a query
    /// path is the document path.
    #[default]
    Rest,
    /// A twin in `ferrohub-twin`'s stored form (`{"etag":7,"tags":…,"properties":…,
    /// "metadata":…}`): only `tags` and `properties` are filtered on (the stored `etag` is a
    /// counter, not the REST ETag; `version` and the identity's fields are elsewhere), and
    /// `properties.desired.$metadata…` / `properties.reported.$metadata…` are read at
    /// `metadata.desired…` / `metadata.reported…`.
    StoredTwin,
}

impl Layout {
    /// Where the document holds the value a row has at query path `path`, if it holds it
    /// exactly.
    fn document_path(self, path: &Path) -> Option<Path> {
        match self {
            Layout::Rest => Some(path.clone()),
            Layout::StoredTwin => match path.segments() {
                [Segment::Key(t), ..] if t == "tags" => Some(path.clone()),
                [
                    Segment::Key(p),
                    Segment::Key(section),
                    Segment::Key(m),
                    rest @ ..,
                ] if p == "properties"
                    && (section == "desired" || section == "reported")
                    && m == "$metadata" =>
                {
                    let mut segments = vec![
                        Segment::Key("metadata".into()),
                        Segment::Key(section.clone()),
                    ];
                    segments.extend(rest.iter().cloned());
                    Path::new(segments)
                }
                [Segment::Key(p), ..] if p == "properties" => Some(path.clone()),
                _ => None,
            },
        }
    }
}

/// Where a [`Filter`] atom reads its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// The table's [`device_id`](Table::device_id) column (the row key's device id).
    DeviceId,
    /// The table's [`child_id`](Table::child_id) column (the row key's module or job id).
    ChildId,
    /// A path in the document column.
    Document(Path),
}

impl Field {
    /// The value of the field in a stored row.
    fn value<'a>(&self, key: &'a RowKey, document: &'a Value) -> Option<Val<'a>> {
        match self {
            Field::DeviceId => Some(Val::Str(key.device_id())),
            Field::ChildId => key.child_id().map(Val::Str),
            Field::Document(path) => resolve(path, document).map(Val::of_json),
        }
    }
}

/// A comparison operator of a [`Filter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CompareOp {
    fn of(op: BinaryOp) -> Option<CompareOp> {
        Some(match op {
            BinaryOp::Eq => CompareOp::Eq,
            BinaryOp::Ne => CompareOp::Ne,
            BinaryOp::Lt => CompareOp::Lt,
            BinaryOp::Le => CompareOp::Le,
            BinaryOp::Gt => CompareOp::Gt,
            BinaryOp::Ge => CompareOp::Ge,
            _ => return None,
        })
    }

    /// The operator with its operands swapped (`a < b` is `b > a`).
    fn flipped(self) -> CompareOp {
        match self {
            CompareOp::Lt => CompareOp::Gt,
            CompareOp::Le => CompareOp::Ge,
            CompareOp::Gt => CompareOp::Lt,
            CompareOp::Ge => CompareOp::Le,
            o => o,
        }
    }

    /// The operator that holds exactly when this one does not.
    fn negated(self) -> CompareOp {
        match self {
            CompareOp::Eq => CompareOp::Ne,
            CompareOp::Ne => CompareOp::Eq,
            CompareOp::Lt => CompareOp::Ge,
            CompareOp::Le => CompareOp::Gt,
            CompareOp::Gt => CompareOp::Le,
            CompareOp::Ge => CompareOp::Lt,
        }
    }

    /// The SQL spelling.
    pub fn sql(self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::Ne => "<>",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }

    fn holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match self {
            CompareOp::Eq => o == Equal,
            CompareOp::Ne => o != Equal,
            CompareOp::Lt => o == Less,
            CompareOp::Le => o != Greater,
            CompareOp::Gt => o == Greater,
            CompareOp::Ge => o != Less,
        }
    }
}

/// A constant a [`Filter`] compares with.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// A boolean.
    Bool(bool),
    /// An integer of magnitude below 2^53.
    Integer(i64),
    /// A finite float of magnitude below 2^53.
    Real(f64),
    /// A string.
    Text(String),
}

/// A set of JSON kinds, for [`Filter::HasType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JsonTypes(u8);

impl JsonTypes {
    /// `null`
    pub const NULL: JsonTypes = JsonTypes(1);
    /// `true` / `false`
    pub const BOOL: JsonTypes = JsonTypes(2);
    /// numbers
    pub const NUMBER: JsonTypes = JsonTypes(4);
    /// strings
    pub const STRING: JsonTypes = JsonTypes(8);
    /// arrays
    pub const ARRAY: JsonTypes = JsonTypes(16);
    /// objects
    pub const OBJECT: JsonTypes = JsonTypes(32);
    /// null, booleans, numbers and strings
    pub const PRIMITIVE: JsonTypes = JsonTypes(1 | 2 | 4 | 8);
    /// any value (that is: defined)
    pub const ANY: JsonTypes = JsonTypes(63);

    /// The union of two sets.
    pub const fn union(self, other: JsonTypes) -> JsonTypes {
        JsonTypes(self.0 | other.0)
    }

    /// Whether every kind of `other` is in this set.
    pub const fn contains(self, other: JsonTypes) -> bool {
        self.0 & other.0 == other.0
    }

    fn of_val(v: Val<'_>) -> JsonTypes {
        match v {
            Val::Null => JsonTypes::NULL,
            Val::Bool(_) => JsonTypes::BOOL,
            Val::Num(_) => JsonTypes::NUMBER,
            Val::Str(_) => JsonTypes::STRING,
            Val::Array => JsonTypes::ARRAY,
            Val::Object => JsonTypes::OBJECT,
            // Not a value: in no set.
            Val::Undefined => JsonTypes(0),
        }
    }

    /// The kind of a JSON value.
    pub fn of(v: &Value) -> JsonTypes {
        match v {
            Value::Null => JsonTypes::NULL,
            Value::Bool(_) => JsonTypes::BOOL,
            Value::Number(_) => JsonTypes::NUMBER,
            Value::String(_) => JsonTypes::STRING,
            Value::Array(_) => JsonTypes::ARRAY,
            Value::Object(_) => JsonTypes::OBJECT,
        }
    }
}

/// The string tests of a [`Filter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextTest {
    /// The string starts with the needle.
    StartsWith,
    /// The string ends with the needle.
    EndsWith,
    /// The string contains the needle.
    Contains,
}

/// A two-valued condition over a stored row (its key columns and its document), made to be
/// rendered as SQL.
///
/// Every atom is false where the field is missing, so no atom is ever SQL `NULL` and `NOT`
/// means what it says.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every row.
    True,
    /// No row.
    False,
    /// All of these.
    And(Vec<Filter>),
    /// Any of these.
    Or(Vec<Filter>),
    /// Not this.
    Not(Box<Filter>),
    /// The field's value is of the kind of `value` and compares to it by `op` (numbers
    /// numerically, strings by code point).
    Compare {
        /// Where.
        field: Field,
        /// How it compares.
        op: CompareOp,
        /// With what.
        value: Scalar,
    },
    /// The field has a value of one of these kinds.
    HasType {
        /// Where.
        field: Field,
        /// The kinds.
        types: JsonTypes,
    },
    /// The field's value is a string that passes the test with `needle`.
    Text {
        /// Where.
        field: Field,
        /// The test.
        test: TextTest,
        /// The other string.
        needle: String,
    },
}

impl Filter {
    /// Whether a stored row passes: the filter's meaning, which its SQL renderings compute.
    /// `key` stands for the key columns, `document` for the document column.
    pub fn matches(&self, key: &RowKey, document: &Value) -> bool {
        match self {
            Filter::True => true,
            Filter::False => false,
            Filter::And(fs) => fs.iter().all(|f| f.matches(key, document)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(key, document)),
            Filter::Not(f) => !f.matches(key, document),
            Filter::Compare { field, op, value } => {
                let Some(v) = field.value(key, document) else {
                    return false;
                };
                let c = match value {
                    Scalar::Bool(b) => Val::Bool(*b),
                    Scalar::Integer(i) => Val::Num(Num::Int(i128::from(*i))),
                    Scalar::Real(f) => Val::Num(Num::Float(*f)),
                    Scalar::Text(s) => Val::Str(s),
                };
                v.compare(c).is_some_and(|o| op.holds(o))
            }
            Filter::HasType { field, types } => field
                .value(key, document)
                .is_some_and(|v| types.contains(JsonTypes::of_val(v))),
            Filter::Text {
                field,
                test,
                needle,
            } => match field.value(key, document) {
                Some(Val::Str(s)) => match test {
                    TextTest::StartsWith => s.starts_with(needle.as_str()),
                    TextTest::EndsWith => s.ends_with(needle.as_str()),
                    TextTest::Contains => s.contains(needle.as_str()),
                },
                _ => false,
            },
        }
    }

    fn and(fs: Vec<Filter>) -> Filter {
        let mut out = Vec::new();
        for f in fs {
            match f {
                Filter::True => {}
                Filter::False => return Filter::False,
                Filter::And(inner) => out.extend(inner),
                f => out.push(f),
            }
        }
        match out.len() {
            0 => Filter::True,
            1 => out.pop().unwrap_or(Filter::True),
            _ => Filter::And(out),
        }
    }

    fn or(fs: Vec<Filter>) -> Filter {
        let mut out = Vec::new();
        for f in fs {
            match f {
                Filter::False => {}
                Filter::True => return Filter::True,
                Filter::Or(inner) => out.extend(inner),
                f => out.push(f),
            }
        }
        match out.len() {
            0 => Filter::False,
            1 => out.pop().unwrap_or(Filter::False),
            _ => Filter::Or(out),
        }
    }

    fn not(f: Filter) -> Filter {
        match f {
            Filter::True => Filter::False,
            Filter::False => Filter::True,
            Filter::Not(inner) => *inner,
            f => Filter::Not(Box::new(f)),
        }
    }
}

/// A [`Filter`] for one collection, ready to render for a table.
#[derive(Debug, Clone, PartialEq)]
pub struct PreFilter {
    pub(crate) collection: Collection,
    pub(crate) dialect: Dialect,
    pub(crate) filter: Filter,
}

impl PreFilter {
    /// The filter.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// The dialect it was made for (what it leaves out depends on it).
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The collection whose rows it filters.
    pub fn collection(&self) -> Collection {
        self.collection
    }

    /// Whether a stored row passes (see [`Filter::matches`]).
    pub fn matches(&self, key: &RowKey, document: &Value) -> bool {
        self.filter.matches(key, document)
    }

    /// Whether the filter passes every row (nothing could be pushed down).
    pub fn is_everything(&self) -> bool {
        self.filter == Filter::True
    }
}

/// The pre-filter of `condition` over `collection`, for `dialect` and `table`.
pub(crate) fn pre_filter(
    condition: &Condition,
    collection: Collection,
    dialect: Dialect,
    table: &Table<'_>,
) -> PreFilter {
    let filter = match condition {
        Condition::All => Filter::True,
        Condition::Where(e) => {
            let t = Translator {
                collection,
                dialect,
                table,
            };
            t.pos(e)
        }
    };
    PreFilter {
        collection,
        dialect,
        filter,
    }
}

struct Translator<'a> {
    collection: Collection,
    dialect: Dialect,
    table: &'a Table<'a>,
}

/// 2^53: numbers at or beyond this magnitude are not pushed down.
const EXACT_LIMIT: f64 = 9_007_199_254_740_992.0;

/// The constant as a [`Scalar`] the dialect compares exactly, if it is one.
fn scalar_of(c: &Constant, dialect: Dialect) -> Option<Scalar> {
    match c {
        Constant::Bool(b) => Some(Scalar::Bool(*b)),
        Constant::String(s) => text_ok(s, dialect).then(|| Scalar::Text(s.clone())),
        Constant::Number(n) => match Num::of(n)? {
            Num::Int(i) => i64::try_from(i)
                .ok()
                .filter(|i| (*i as f64).abs() < EXACT_LIMIT)
                .map(Scalar::Integer),
            Num::Float(f) => (f.abs() < EXACT_LIMIT).then_some(Scalar::Real(f)),
        },
        _ => None,
    }
}

/// Whether the dialect can bind `s` as text (PostgreSQL text cannot hold NUL).
fn text_ok(s: &str, dialect: Dialect) -> bool {
    dialect == Dialect::Sqlite || !s.contains('\0')
}

impl Translator<'_> {
    /// Where the filter can read the value a row has at query path `path`: a key column,
    /// or a document path the dialect can address exactly; `None` when nowhere.
    fn locate(&self, path: &Path) -> Option<Field> {
        let child = match self.collection {
            Collection::Devices => None,
            Collection::Modules => Some("moduleId"),
            Collection::Jobs => Some("jobId"),
        };
        if path.is_field("deviceId") && self.table.device_id.is_some() {
            return Some(Field::DeviceId);
        }
        if child.is_some_and(|c| path.is_field(c)) && self.table.child_id.is_some() {
            return Some(Field::ChildId);
        }
        let top = path.top_level()?;
        let live = matches!(self.collection, Collection::Devices | Collection::Modules)
            && LIVE_FIELDS.contains(&top);
        if live || self.table.computed_fields.contains(&top) {
            return None;
        }
        let doc_path = self.table.layout.document_path(path)?;
        let addressable = doc_path
            .segments()
            .iter()
            .all(|seg| match (self.dialect, seg) {
                // SQLite's path syntax quotes a key with `"` and stops at NUL.
                (Dialect::Sqlite, Segment::Key(k)) => !k.contains(['"', '\0']),
                (Dialect::Sqlite, Segment::Index(_)) => true,
                (Dialect::Postgres, Segment::Key(k)) => !reads_as_index(k) && !k.contains('\0'),
                (Dialect::Postgres, Segment::Index(_)) => false,
            });
        addressable.then_some(Field::Document(doc_path))
    }

    /// A filter passing every row where `e` is `true`.
    fn pos(&self, e: &Expr) -> Filter {
        self.translate(e).0
    }

    /// Filters passing every row where `e` is `true`, and every row where it is `false`.
    fn translate(&self, e: &Expr) -> (Filter, Filter) {
        if !mentions_path(e) {
            // A constant condition: evaluate it once.
            return match eval(e, &Value::Null) {
                Val::Bool(true) => (Filter::True, Filter::False),
                Val::Bool(false) => (Filter::False, Filter::True),
                _ => (Filter::False, Filter::False),
            };
        }
        let unknown = (Filter::True, Filter::True);
        match e {
            Expr::Not(inner) => {
                let (p, n) = self.translate(inner);
                (n, p)
            }
            Expr::Binary {
                op: BinaryOp::And,
                left,
                right,
            } => {
                let (lp, ln) = self.translate(left);
                let (rp, rn) = self.translate(right);
                (Filter::and(vec![lp, rp]), Filter::or(vec![ln, rn]))
            }
            Expr::Binary {
                op: BinaryOp::Or,
                left,
                right,
            } => {
                let (lp, ln) = self.translate(left);
                let (rp, rn) = self.translate(right);
                (Filter::or(vec![lp, rp]), Filter::and(vec![ln, rn]))
            }
            Expr::Binary { op, left, right } => {
                let Some(cop) = CompareOp::of(*op) else {
                    return unknown;
                };
                match (&**left, &**right) {
                    (Expr::Path(p), Expr::Constant(c)) => self.compare(p, cop, c),
                    (Expr::Constant(c), Expr::Path(p)) => self.compare(p, cop.flipped(), c),
                    _ => unknown,
                }
            }
            Expr::Path(p) => self.compare(p, CompareOp::Eq, &Constant::Bool(true)),
            Expr::In {
                value,
                list,
                negated,
            } => {
                let Expr::Path(p) = &**value else {
                    return unknown;
                };
                let Some(field) = self.locate(p) else {
                    return unknown;
                };
                let (t, f) = self.membership(&field, list);
                if *negated { (f, t) } else { (t, f) }
            }
            Expr::Call { function, args } => self.call(*function, args),
            Expr::Constant(_) | Expr::Negate(_) => unknown,
        }
    }

    /// `path op c`, with `c` on the right.
    fn compare(&self, path: &Path, op: CompareOp, c: &Constant) -> (Filter, Filter) {
        let Some(field) = self.locate(path) else {
            return (Filter::True, Filter::True);
        };
        let atom = |op: CompareOp, value: Scalar| Filter::Compare {
            field: field.clone(),
            op,
            value,
        };
        match c {
            // null compares only with null, and equal to it.
            Constant::Null => {
                let null = Filter::HasType {
                    field: field.clone(),
                    types: JsonTypes::NULL,
                };
                match op {
                    CompareOp::Eq | CompareOp::Le | CompareOp::Ge => (null, Filter::False),
                    _ => (Filter::False, null),
                }
            }
            // Undefined, arrays: the comparison is never defined.
            Constant::Undefined | Constant::Array(_) => (Filter::False, Filter::False),
            c => match scalar_of(c, self.dialect) {
                Some(v) => (atom(op, v.clone()), atom(op.negated(), v)),
                None => (Filter::True, Filter::True),
            },
        }
    }

    /// `path IN list`: (where true, where false).
    fn membership(&self, field: &Field, list: &[Constant]) -> (Filter, Filter) {
        let mut equal = Vec::new();
        let mut all_exact = true;
        for c in list {
            match c {
                Constant::Null => equal.push(Filter::HasType {
                    field: field.clone(),
                    types: JsonTypes::NULL,
                }),
                Constant::Undefined | Constant::Array(_) => {}
                c => match scalar_of(c, self.dialect) {
                    Some(value) => equal.push(Filter::Compare {
                        field: field.clone(),
                        op: CompareOp::Eq,
                        value,
                    }),
                    // Not expressible: the "true" side must let such rows through; the
                    // "false" side may ignore it (it only gets larger).
                    None => all_exact = false,
                },
            }
        }
        let any_equal = Filter::or(equal);
        let t = if all_exact {
            any_equal.clone()
        } else {
            Filter::True
        };
        let f = Filter::and(vec![
            Filter::HasType {
                field: field.clone(),
                types: JsonTypes::PRIMITIVE,
            },
            Filter::not(any_equal),
        ]);
        (t, f)
    }

    fn call(&self, function: Function, args: &[Expr]) -> (Filter, Filter) {
        let unknown = (Filter::True, Filter::True);
        let types = match function {
            Function::IsDefined => Some(JsonTypes::ANY),
            Function::IsNull => Some(JsonTypes::NULL),
            Function::IsBool => Some(JsonTypes::BOOL),
            Function::IsNumber => Some(JsonTypes::NUMBER),
            Function::IsString => Some(JsonTypes::STRING),
            Function::IsObject => Some(JsonTypes::OBJECT),
            Function::IsArray => Some(JsonTypes::ARRAY),
            Function::IsPrimitive => Some(JsonTypes::PRIMITIVE),
            Function::StartsWith | Function::EndsWith | Function::Contains => None,
        };
        if let Some(types) = types {
            return match args {
                [Expr::Path(p)] => match self.locate(p) {
                    Some(field) => {
                        let has = Filter::HasType { field, types };
                        (has.clone(), Filter::not(has))
                    }
                    None => unknown,
                },
                _ => unknown,
            };
        }
        let test = match function {
            Function::StartsWith => TextTest::StartsWith,
            Function::EndsWith => TextTest::EndsWith,
            _ => TextTest::Contains,
        };
        let [Expr::Path(p), Expr::Constant(c)] = args else {
            return unknown;
        };
        let Some(field) = self.locate(p) else {
            return unknown;
        };
        match c {
            Constant::String(s) if text_ok(s, self.dialect) => {
                let hit = Filter::Text {
                    field: field.clone(),
                    test,
                    needle: s.clone(),
                };
                let string = Filter::HasType {
                    field: field.clone(),
                    types: JsonTypes::STRING,
                };
                (hit.clone(), Filter::and(vec![string, Filter::not(hit)]))
            }
            Constant::String(_) => unknown,
            // A non-string argument: the call is never defined.
            _ => (Filter::False, Filter::False),
        }
    }
}

/// Whether PostgreSQL's `#>` could take `key` for an array index (it parses path elements
/// leniently, so anything starting like a signed integer counts).
fn reads_as_index(key: &str) -> bool {
    let t = key.trim_start();
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    t.starts_with(|c: char| c.is_ascii_digit())
}

fn mentions_path(e: &Expr) -> bool {
    match e {
        Expr::Constant(_) => false,
        Expr::Path(_) => true,
        Expr::Not(inner) | Expr::Negate(inner) => mentions_path(inner),
        Expr::Binary { left, right, .. } => mentions_path(left) || mentions_path(right),
        Expr::In { value, .. } => mentions_path(value),
        Expr::Call { args, .. } => args.iter().any(mentions_path),
    }
}

/// The `deviceId` values and the module or job ids a condition limits rows to, so that a
/// store can look rows up by key instead of scanning.
///
/// `None` means unconstrained. The sets are sorted and hold every id a selected row can
/// have: a row whose id is not in the set is never selected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLookup {
    /// The possible `deviceId` values.
    pub device_ids: Option<Vec<String>>,
    /// The possible `moduleId` values (`devices.modules`) or `jobId` values
    /// (`devices.jobs`); always `None` for `devices`.
    pub child_ids: Option<Vec<String>>,
}

pub(crate) fn key_lookup(condition: &Condition, collection: Collection) -> KeyLookup {
    let Condition::Where(e) = condition else {
        return KeyLookup::default();
    };
    let child = match collection {
        Collection::Devices => None,
        Collection::Modules => Some("moduleId"),
        Collection::Jobs => Some("jobId"),
    };
    let sorted = |s: std::collections::BTreeSet<String>| s.into_iter().collect();
    KeyLookup {
        device_ids: ids(e, "deviceId").map(sorted),
        child_ids: child.and_then(|c| ids(e, c)).map(sorted),
    }
}

/// The values `field` can have in rows where `e` is true (ids are always strings in rows).
fn ids(e: &Expr, field: &str) -> Option<std::collections::BTreeSet<String>> {
    let strings = |cs: &mut dyn Iterator<Item = &Constant>| {
        cs.filter_map(|c| match c {
            Constant::String(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
    };
    match e {
        Expr::Binary {
            op: BinaryOp::Eq,
            left,
            right,
        } => match (&**left, &**right) {
            (Expr::Path(p), Expr::Constant(c)) | (Expr::Constant(c), Expr::Path(p))
                if p.is_field(field) =>
            {
                Some(strings(&mut std::iter::once(c)))
            }
            _ => None,
        },
        Expr::In {
            value,
            list,
            negated: false,
        } => match &**value {
            Expr::Path(p) if p.is_field(field) => Some(strings(&mut list.iter())),
            _ => None,
        },
        Expr::Binary {
            op: BinaryOp::And,
            left,
            right,
        } => match (ids(left, field), ids(right, field)) {
            (Some(a), Some(b)) => Some(a.intersection(&b).cloned().collect()),
            (a, b) => a.or(b),
        },
        Expr::Binary {
            op: BinaryOp::Or,
            left,
            right,
        } => match (ids(left, field), ids(right, field)) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            _ => None,
        },
        _ => None,
    }
}
