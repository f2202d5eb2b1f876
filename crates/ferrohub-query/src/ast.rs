//! The syntax tree of a query, and its canonical text.
//!
//! A parsed tree is already resolved: collection prefixes are gone from paths (`devices.modules.moduleId`
//! is the path `moduleId`), top-level twin names are in their canonical case (`DeviceId` is
//! `deviceId`, `id` is `deviceId`), `<>` is [`BinaryOp::Ne`], `NOT IN` is `NIN` and a minus
//! sign directly before a number is part of the constant. Printing a tree ([`fmt::Display`])
//! gives query text that parses back to the same tree, so the text is a fair fingerprint of
//! what a query means.

use std::fmt::{self, Write as _};

use crate::names;

/// A whole `SELECT` query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// `TOP n`: at most this many rows in the whole result (over all pages).
    pub top: Option<u64>,
    /// What each result row holds.
    pub select: Select,
    /// The collection the rows come from.
    pub from: Collection,
    /// The `WHERE` condition; [`Condition::All`] when the query has none.
    pub condition: Condition,
    /// The `GROUP BY` paths; empty when the query has none.
    pub group_by: Vec<Path>,
}

/// The collections a query can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collection {
    /// `devices`: one row per device twin.
    Devices,
    /// `devices.modules`: one row per module twin (rows carry `deviceId` and `moduleId`).
    Modules,
    /// `devices.jobs`: one row per device and job (the per-device job records).
    Jobs,
}

impl Collection {
    /// The collection's name as written after `FROM`.
    pub fn name(self) -> &'static str {
        match self {
            Collection::Devices => "devices",
            Collection::Modules => "devices.modules",
            Collection::Jobs => "devices.jobs",
        }
    }
}

impl fmt::Display for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The select list.
#[derive(Debug, Clone, PartialEq)]
pub enum Select {
    /// `SELECT *`: each row as it is.
    All,
    /// `SELECT item, …`: each row is an object with one member per item.
    Items(Vec<SelectItem>),
}

impl Select {
    /// The member names of result rows, in select order (empty for `SELECT *`): an item's
    /// alias; else, for a path, its last member name (`properties.reported.State` gives
    /// `State`); else `$1`, `$2`, … numbering the items that have neither, as Azure names an
    /// unaliased `COUNT()`.
    pub fn names(&self) -> Vec<String> {
        let Select::Items(items) = self else {
            return Vec::new();
        };
        let mut unnamed = 0;
        items
            .iter()
            .map(|item| {
                let natural = match &item.value {
                    Projection::Path(p) => p.default_name(),
                    Projection::Aggregate(_) => None,
                };
                match (&item.alias, natural) {
                    (Some(a), _) => a.clone(),
                    (None, Some(n)) => n.to_owned(),
                    (None, None) => {
                        unnamed += 1;
                        format!("${unnamed}")
                    }
                }
            })
            .collect()
    }
}

/// One item of a select list.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectItem {
    /// What the item computes.
    pub value: Projection,
    /// `AS alias`: the member name in the result rows.
    pub alias: Option<String>,
}

/// What a select item computes.
#[derive(Debug, Clone, PartialEq)]
pub enum Projection {
    /// The value at a path of the row (a grouping path when the query aggregates).
    Path(Path),
    /// An aggregate over the rows of a group.
    Aggregate(Aggregate),
}

/// The aggregate functions of a select list.
#[derive(Debug, Clone, PartialEq)]
pub enum Aggregate {
    /// `COUNT()`: the number of rows.
    Count,
    /// `AVG(path)`: the mean of the numbers at the path (other values are skipped).
    Avg(Path),
    /// `SUM(path)`: the sum of the numbers at the path (other values are skipped).
    Sum(Path),
    /// `MIN(path)`: the least primitive value at the path.
    Min(Path),
    /// `MAX(path)`: the greatest primitive value at the path.
    Max(Path),
}

impl Aggregate {
    /// The function's name as printed.
    pub fn name(&self) -> &'static str {
        match self {
            Aggregate::Count => "COUNT",
            Aggregate::Avg(_) => "AVG",
            Aggregate::Sum(_) => "SUM",
            Aggregate::Min(_) => "MIN",
            Aggregate::Max(_) => "MAX",
        }
    }

    /// The path the function reads (`None` for `COUNT()`).
    pub fn path(&self) -> Option<&Path> {
        match self {
            Aggregate::Count => None,
            Aggregate::Avg(p) | Aggregate::Sum(p) | Aggregate::Min(p) | Aggregate::Max(p) => {
                Some(p)
            }
        }
    }
}

/// A condition that selects rows: a query's `WHERE`, or a job's `queryCondition`.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Every row (no `WHERE`; the job condition `*`).
    All,
    /// The rows for which the expression is boolean `true`.
    Where(Expr),
}

/// A property path into a row: one or more segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    segments: Vec<Segment>,
}

impl Path {
    /// A path of these segments; `None` when there are none.
    pub fn new(segments: Vec<Segment>) -> Option<Path> {
        (!segments.is_empty()).then_some(Path { segments })
    }

    /// A path of object member names (`Path::keys(&["tags", "a"])` is `tags.a`); `None` when
    /// empty.
    pub fn keys(keys: &[&str]) -> Option<Path> {
        Path::new(keys.iter().map(|k| Segment::Key((*k).to_owned())).collect())
    }

    /// The segments, first to last (never empty).
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The first segment's member name, if it is one (the top-level field the path reads).
    pub fn top_level(&self) -> Option<&str> {
        match self.segments.first() {
            Some(Segment::Key(k)) => Some(k),
            _ => None,
        }
    }

    /// Whether the path is exactly the one top-level member `name`.
    pub fn is_field(&self, name: &str) -> bool {
        matches!(self.segments.as_slice(), [Segment::Key(k)] if k == name)
    }

    /// The name a projection of this path has in result rows when it has no alias: the last
    /// segment, when it is a member name.
    pub fn default_name(&self) -> Option<&str> {
        match self.segments.last() {
            Some(Segment::Key(k)) => Some(k),
            _ => None,
        }
    }
}

/// One step of a [`Path`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// An object member (`.name` or `['name']`).
    Key(String),
    /// An array element (`[3]`).
    Index(u32),
}

/// An expression (conditions are expressions too: a row is selected when its condition
/// evaluates to boolean `true`).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A constant.
    Constant(Constant),
    /// The value at a path of the row (undefined when absent).
    Path(Path),
    /// `NOT e`.
    Not(Box<Expr>),
    /// `-e` (a minus sign directly before a number is part of the [`Constant`] instead).
    Negate(Box<Expr>),
    /// `left op right`.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// The left operand.
        left: Box<Expr>,
        /// The right operand.
        right: Box<Expr>,
    },
    /// `value IN [list]`, or `value NIN [list]` when `negated`.
    In {
        /// The tested value.
        value: Box<Expr>,
        /// The constants it is compared with.
        list: Vec<Constant>,
        /// `NIN` (also written `NOT IN`).
        negated: bool,
    },
    /// A function call.
    Call {
        /// The function.
        function: Function,
        /// Its arguments.
        args: Vec<Expr>,
    },
}

/// The binary operators, loosest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `OR`
    Or,
    /// `AND`
    And,
    /// `=`
    Eq,
    /// `!=` (also written `<>`)
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
}

impl BinaryOp {
    /// The operator as printed.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "OR",
            BinaryOp::And => "AND",
            BinaryOp::Eq => "=",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
        }
    }

    /// Whether this is one of the six comparisons.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge
        )
    }

    fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => PREC_OR,
            BinaryOp::And => PREC_AND,
            BinaryOp::Add | BinaryOp::Sub => PREC_ADD,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem => PREC_MUL,
            _ => PREC_CMP,
        }
    }
}

/// A constant of the language.
#[derive(Debug, Clone, PartialEq)]
pub enum Constant {
    /// `undefined`: the value of a missing property.
    Undefined,
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A decimal or `0x` hexadecimal number.
    Number(serde_json::Number),
    /// `'text'` or `"text"`.
    String(String),
    /// `[c, …]`
    Array(Vec<Constant>),
}

/// The functions a condition can call. Names are case-insensitive.
///
/// Type tests answer `true` or `false` for any argument (`false` for undefined); the string
/// functions answer only when both arguments are strings and are undefined otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// `IS_DEFINED(e)`: whether `e` has a value (`null` counts).
    IsDefined,
    /// `IS_NULL(e)`
    IsNull,
    /// `IS_BOOL(e)`
    IsBool,
    /// `IS_NUMBER(e)`
    IsNumber,
    /// `IS_STRING(e)`
    IsString,
    /// `IS_OBJECT(e)`
    IsObject,
    /// `IS_ARRAY(e)`
    IsArray,
    /// `IS_PRIMITIVE(e)`: null, boolean, number or string.
    IsPrimitive,
    /// `STARTSWITH(s, prefix)`, also `STARTS_WITH`; case-sensitive.
    StartsWith,
    /// `ENDSWITH(s, suffix)`, also `ENDS_WITH`; case-sensitive.
    EndsWith,
    /// `CONTAINS(s, part)`; case-sensitive.
    Contains,
}

impl Function {
    /// Every function, for messages and tests.
    pub const ALL: [Function; 11] = [
        Function::IsDefined,
        Function::IsNull,
        Function::IsBool,
        Function::IsNumber,
        Function::IsString,
        Function::IsObject,
        Function::IsArray,
        Function::IsPrimitive,
        Function::StartsWith,
        Function::EndsWith,
        Function::Contains,
    ];

    /// The function's name as printed.
    pub fn name(self) -> &'static str {
        match self {
            Function::IsDefined => "IS_DEFINED",
            Function::IsNull => "IS_NULL",
            Function::IsBool => "IS_BOOL",
            Function::IsNumber => "IS_NUMBER",
            Function::IsString => "IS_STRING",
            Function::IsObject => "IS_OBJECT",
            Function::IsArray => "IS_ARRAY",
            Function::IsPrimitive => "IS_PRIMITIVE",
            Function::StartsWith => "STARTSWITH",
            Function::EndsWith => "ENDSWITH",
            Function::Contains => "CONTAINS",
        }
    }

    /// The function a name denotes (case-insensitive; `STARTS_WITH` and `ENDS_WITH` are
    /// accepted as spellings of `STARTSWITH` and `ENDSWITH`).
    pub fn from_name(name: &str) -> Option<Function> {
        let upper = name.to_ascii_uppercase();
        match upper.as_str() {
            "STARTS_WITH" => Some(Function::StartsWith),
            "ENDS_WITH" => Some(Function::EndsWith),
            _ => Function::ALL.into_iter().find(|f| f.name() == upper),
        }
    }

    /// How many arguments the function takes.
    pub fn arity(self) -> usize {
        match self {
            Function::StartsWith | Function::EndsWith | Function::Contains => 2,
            _ => 1,
        }
    }
}

// Printing. Precedence levels, loosest first; an operand is parenthesised when its level is
// looser than its context needs.
const PREC_OR: u8 = 1;
const PREC_AND: u8 = 2;
const PREC_NOT: u8 = 3;
const PREC_CMP: u8 = 4;
const PREC_ADD: u8 = 5;
const PREC_MUL: u8 = 6;
const PREC_PRIMARY: u8 = 8;

fn precedence(e: &Expr) -> u8 {
    match e {
        Expr::Binary { op, .. } => op.precedence(),
        Expr::Not(_) => PREC_NOT,
        Expr::In { .. } => PREC_CMP,
        // Unary minus and negative constants (`-5`) bind like a primary.
        Expr::Negate(_) | Expr::Constant(_) | Expr::Path(_) | Expr::Call { .. } => PREC_PRIMARY,
    }
}

/// Writes `e`, parenthesised when it binds looser than `min`.
fn write_expr(out: &mut dyn fmt::Write, e: &Expr, ctx: Collection, min: u8) -> fmt::Result {
    let parens = precedence(e) < min;
    if parens {
        out.write_char('(')?;
    }
    match e {
        Expr::Constant(c) => write_constant(out, c)?,
        Expr::Path(p) => write_path(out, p, ctx)?,
        Expr::Not(inner) => {
            out.write_str("NOT ")?;
            write_expr(out, inner, ctx, PREC_NOT)?;
        }
        Expr::Negate(inner) => {
            out.write_char('-')?;
            match &**inner {
                // `-5` would be the constant -5: keep the number apart.
                Expr::Constant(Constant::Number(n)) if !n.to_string().starts_with('-') => {
                    write!(out, "({n})")?;
                }
                Expr::Negate(_) | Expr::Constant(Constant::Number(_)) => {
                    out.write_char(' ')?;
                    write_expr(out, inner, ctx, PREC_PRIMARY)?;
                }
                _ => write_expr(out, inner, ctx, PREC_PRIMARY)?,
            }
        }
        Expr::Binary { op, left, right } => {
            let p = op.precedence();
            // Left-associative chains print without parentheses on the left; comparisons
            // do not chain, so both their operands must bind tighter.
            let (lmin, rmin) = if p == PREC_CMP {
                (p + 1, p + 1)
            } else {
                (p, p + 1)
            };
            write_expr(out, left, ctx, lmin)?;
            write!(out, " {} ", op.symbol())?;
            write_expr(out, right, ctx, rmin)?;
        }
        Expr::In {
            value,
            list,
            negated,
        } => {
            write_expr(out, value, ctx, PREC_CMP + 1)?;
            out.write_str(if *negated { " NIN " } else { " IN " })?;
            write_list(out, list)?;
        }
        Expr::Call { function, args } => {
            out.write_str(function.name())?;
            out.write_char('(')?;
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    out.write_str(", ")?;
                }
                write_expr(out, a, ctx, 0)?;
            }
            out.write_char(')')?;
        }
    }
    if parens {
        out.write_char(')')?;
    }
    Ok(())
}

fn write_list(out: &mut dyn fmt::Write, list: &[Constant]) -> fmt::Result {
    out.write_char('[')?;
    for (i, c) in list.iter().enumerate() {
        if i > 0 {
            out.write_str(", ")?;
        }
        write_constant(out, c)?;
    }
    out.write_char(']')
}

fn write_constant(out: &mut dyn fmt::Write, c: &Constant) -> fmt::Result {
    match c {
        Constant::Undefined => out.write_str("undefined"),
        Constant::Null => out.write_str("null"),
        Constant::Bool(b) => out.write_str(if *b { "true" } else { "false" }),
        Constant::Number(n) => write!(out, "{n}"),
        Constant::String(s) => write_string(out, s),
        Constant::Array(items) => write_list(out, items),
    }
}

/// Writes a single-quoted string literal with the escapes the lexer reads back.
pub(crate) fn write_string(out: &mut dyn fmt::Write, s: &str) -> fmt::Result {
    out.write_char('\'')?;
    for c in s.chars() {
        match c {
            '\'' => out.write_str("\\'")?,
            '\\' => out.write_str("\\\\")?,
            c if c.is_control() => write!(out, "\\u{:04x}", u32::from(c))?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('\'')
}

/// Writes a path so that it parses back to the same segments in collection `ctx`: bare when
/// the first segment is an ordinary name, otherwise behind the collection's prefix (the only
/// way to write a top-level name that is a keyword, `devices`, or not an identifier).
fn write_path(out: &mut dyn fmt::Write, p: &Path, ctx: Collection) -> fmt::Result {
    let bare_first = match p.segments().first() {
        Some(Segment::Key(k)) => {
            names::is_identifier(k)
                && !names::is_reserved(k)
                && !k.eq_ignore_ascii_case("devices")
                && names::canonical_top_level(ctx, k) == k.as_str()
        }
        _ => false,
    };
    if !bare_first {
        out.write_str(ctx.name())?;
    }
    for (i, seg) in p.segments().iter().enumerate() {
        match seg {
            Segment::Key(k) if i == 0 && bare_first => out.write_str(k)?,
            Segment::Key(k) if names::is_segment_word(k) => {
                out.write_char('.')?;
                out.write_str(k)?;
            }
            Segment::Key(k) => {
                out.write_char('[')?;
                write_string(out, k)?;
                out.write_char(']')?;
            }
            Segment::Index(n) => write!(out, "[{n}]")?,
        }
    }
    Ok(())
}

fn write_condition(out: &mut dyn fmt::Write, c: &Condition, ctx: Collection) -> fmt::Result {
    match c {
        Condition::All => out.write_char('*'),
        Condition::Where(e) => write_expr(out, e, ctx, 0),
    }
}

fn write_alias(out: &mut dyn fmt::Write, alias: &Option<String>) -> fmt::Result {
    match alias {
        Some(a) if names::is_identifier(a) && !names::is_reserved(a) => write!(out, " AS {a}"),
        // The parser only makes aliases of words that are not keywords; anything else (in a
        // tree built by hand) is quoted so the text stays readable, though it does not parse.
        Some(a) => {
            out.write_str(" AS ")?;
            write_string(out, a)
        }
        None => Ok(()),
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ctx = self.from;
        f.write_str("SELECT ")?;
        if let Some(n) = self.top {
            write!(f, "TOP {n} ")?;
        }
        match &self.select {
            Select::All => f.write_char('*')?,
            Select::Items(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    match &item.value {
                        Projection::Path(p) => write_path(f, p, ctx)?,
                        Projection::Aggregate(a) => {
                            f.write_str(a.name())?;
                            f.write_char('(')?;
                            if let Some(p) = a.path() {
                                write_path(f, p, ctx)?;
                            }
                            f.write_char(')')?;
                        }
                    }
                    write_alias(f, &item.alias)?;
                }
            }
        }
        write!(f, " FROM {}", self.from)?;
        if let Condition::Where(e) = &self.condition {
            f.write_str(" WHERE ")?;
            write_expr(f, e, ctx, 0)?;
        }
        for (i, p) in self.group_by.iter().enumerate() {
            f.write_str(if i == 0 { " GROUP BY " } else { ", " })?;
            write_path(f, p, ctx)?;
        }
        Ok(())
    }
}

/// Prints the condition as a job `queryCondition` over `devices`: `*`, or the expression.
impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_condition(f, self, Collection::Devices)
    }
}

/// Prints the expression as it would appear in a query over `devices`.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_expr(f, self, Collection::Devices, 0)
    }
}

/// Prints the path as it would appear in a query over `devices`.
impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_path(f, self, Collection::Devices)
    }
}

/// Prints the constant as a literal.
impl fmt::Display for Constant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_constant(f, self)
    }
}
