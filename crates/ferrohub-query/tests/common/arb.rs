//! proptest strategies: syntax trees as the parser makes them (paths resolved and in
//! canonical case), twin-like documents, and conditions over those documents.

use ferrohub_query::{
    Aggregate, BinaryOp, Collection, Condition, Constant, Expr, Function, Path, Projection, Query,
    Segment, Select, SelectItem,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

// ---- syntax trees for printing and parsing back

/// Top-level names that are already canonical in every collection, including ones that
/// must be written behind the collection prefix (keywords, `devices`, non-identifiers).
const FIRST: &[&str] = &[
    "deviceId",
    "tags",
    "properties",
    "status",
    "version",
    "connectionState",
    "jobId",
    "a",
    "b",
    "not",
    "devices",
    "modules",
    "my key",
    "1x",
    "in",
    "x'y\"z",
    "é",
    "$metadata",
    "count",
    "select",
];

/// Later names; none is a fixed name in another case.
const LATER: &[&str] = &[
    "desired", "reported", "a", "b", "$version", "x y", "0", "Tag", "not", "modules", "jobs",
    "devices", "1e5", "", "\u{1}", "ü",
];

fn segment_after() -> impl Strategy<Value = Segment> {
    prop_oneof![
        4 => proptest::sample::select(LATER).prop_map(|s| Segment::Key(s.to_owned())),
        1 => (0u32..3).prop_map(Segment::Index),
        1 => "[a-zA-Z_$][a-zA-Z0-9_$]{0,5}".prop_map(Segment::Key),
    ]
}

/// A canonical path.
pub fn path() -> impl Strategy<Value = Path> {
    (
        proptest::sample::select(FIRST),
        proptest::collection::vec(segment_after(), 0..4),
    )
        .prop_map(|(first, rest)| {
            let mut segments = vec![Segment::Key(first.to_owned())];
            segments.extend(rest);
            Path::new(segments).unwrap_or_else(|| unreachable!("one segment at least"))
        })
}

fn number() -> impl Strategy<Value = serde_json::Number> {
    prop_oneof![
        any::<i64>().prop_map(Into::into),
        any::<u64>().prop_map(Into::into),
        (-1000i64..1000).prop_map(Into::into),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| serde_json::Number::from_f64(f).unwrap_or_else(|| 0.into())),
        (-40i32..40).prop_map(
            |k| serde_json::Number::from_f64(f64::from(k) / 4.0).unwrap_or_else(|| 0.into())
        ),
    ]
}

/// A constant, arrays included.
pub fn constant() -> impl Strategy<Value = Constant> {
    let leaf = prop_oneof![
        Just(Constant::Undefined),
        Just(Constant::Null),
        any::<bool>().prop_map(Constant::Bool),
        number().prop_map(Constant::Number),
        any::<String>().prop_map(Constant::String),
        "[a-c'\"\\\\ ]{0,4}".prop_map(Constant::String),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        proptest::collection::vec(inner, 0..3).prop_map(Constant::Array)
    })
}

const OPS: [BinaryOp; 13] = [
    BinaryOp::Or,
    BinaryOp::And,
    BinaryOp::Eq,
    BinaryOp::Ne,
    BinaryOp::Lt,
    BinaryOp::Le,
    BinaryOp::Gt,
    BinaryOp::Ge,
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Rem,
];

/// Any expression tree over the given leaves.
pub fn expr_over(
    leaf: BoxedStrategy<Expr>,
    list: BoxedStrategy<Constant>,
) -> impl Strategy<Value = Expr> {
    leaf.prop_recursive(5, 48, 3, move |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            inner.clone().prop_map(|e| Expr::Negate(Box::new(e))),
            (
                proptest::sample::select(&OPS[..]),
                inner.clone(),
                inner.clone()
            )
                .prop_map(|(op, l, r)| Expr::Binary {
                    op,
                    left: Box::new(l),
                    right: Box::new(r),
                }),
            (
                inner.clone(),
                proptest::collection::vec(list.clone(), 0..4),
                any::<bool>()
            )
                .prop_map(|(v, list, negated)| Expr::In {
                    value: Box::new(v),
                    list,
                    negated,
                }),
            (
                proptest::sample::select(&Function::ALL[..]),
                inner.clone(),
                inner.clone()
            )
                .prop_map(|(f, a, b)| {
                    let args = if f.arity() == 1 { vec![a] } else { vec![a, b] };
                    Expr::Call { function: f, args }
                }),
        ]
    })
}

/// Any expression over canonical paths and any constants.
pub fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        path().prop_map(Expr::Path),
        constant().prop_map(Expr::Constant)
    ]
    .boxed();
    expr_over(leaf, constant().boxed())
}

/// An alias: a word that is not a keyword.
fn alias() -> impl Strategy<Value = Option<String>> {
    const RESERVED: &[&str] = &[
        "SELECT",
        "TOP",
        "FROM",
        "WHERE",
        "GROUP",
        "BY",
        "AS",
        "AND",
        "OR",
        "NOT",
        "IN",
        "NIN",
        "TRUE",
        "FALSE",
        "NULL",
        "UNDEFINED",
        "ORDER",
        "JOIN",
        "HAVING",
        "LIMIT",
        "OFFSET",
        "DISTINCT",
        "VALUE",
        "LIKE",
        "BETWEEN",
        "EXISTS",
        "IS",
        "UNION",
    ];
    proptest::option::of(
        "[a-zA-Z_$][a-zA-Z0-9_$]{0,6}".prop_filter("not a keyword", |a| {
            !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(a))
        }),
    )
}

fn aggregate() -> impl Strategy<Value = Aggregate> {
    prop_oneof![
        Just(Aggregate::Count),
        path().prop_map(Aggregate::Avg),
        path().prop_map(Aggregate::Sum),
        path().prop_map(Aggregate::Min),
        path().prop_map(Aggregate::Max),
    ]
}

/// Gives every item a unique result name (renaming with aliases where two collide).
fn unique_names(mut items: Vec<SelectItem>) -> Vec<SelectItem> {
    loop {
        let names = Select::Items(items.clone()).names();
        let dup = (0..names.len()).find(|&i| names[..i].contains(&names[i]));
        match dup {
            Some(i) => items[i].alias = Some(format!("n{i}_{}", names.len())),
            None => return items,
        }
    }
}

/// A valid query, as the parser would make it.
pub fn query() -> impl Strategy<Value = Query> {
    let collection = prop_oneof![
        Just(Collection::Devices),
        Just(Collection::Modules),
        Just(Collection::Jobs)
    ];
    let condition =
        proptest::option::of(expr()).prop_map(|e| e.map_or(Condition::All, Condition::Where));
    let plain = proptest::collection::vec((path(), alias()), 1..4).prop_map(|items| {
        let items = items
            .into_iter()
            .map(|(p, alias)| SelectItem {
                value: Projection::Path(p),
                alias,
            })
            .collect();
        (Select::Items(unique_names(items)), Vec::new())
    });
    let grouped = (
        proptest::collection::vec(path(), 0..3),
        proptest::collection::vec((aggregate(), alias()), 1..3),
        proptest::collection::vec(alias(), 0..3),
    )
        .prop_map(|(group_by, aggs, key_aliases)| {
            let mut items: Vec<SelectItem> = group_by
                .iter()
                .zip(key_aliases)
                .map(|(p, alias)| SelectItem {
                    value: Projection::Path(p.clone()),
                    alias,
                })
                .collect();
            items.extend(aggs.into_iter().map(|(a, alias)| SelectItem {
                value: Projection::Aggregate(a),
                alias,
            }));
            (Select::Items(unique_names(items)), group_by)
        });
    let select = prop_oneof![Just((Select::All, Vec::new())), plain, grouped];
    (
        proptest::option::of(any::<u64>()),
        select,
        collection,
        condition,
    )
        .prop_map(|(top, (select, group_by), from, condition)| Query {
            top,
            select,
            from,
            condition,
            group_by,
        })
}

// ---- documents and conditions over them, for push-down

/// Member names in documents and in conditions (one holds `"` and one NUL, which SQLite
/// paths cannot express, one reads as an array index to PostgreSQL, one holds path syntax).
pub const KEYS: &[&str] = &["a", "b", "0", "my key", "x\"y", "k\u{0}", "a.b[0]'$", "é"];

/// Strings in documents and in conditions, chosen to collide with each other.
pub const STRINGS: &[&str] = &[
    "", "a", "ab", "abc", "b", "A", "é", "ab\u{0}c", "\u{0}", "true", "1",
];

fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..4).prop_map(Value::from),
        (-8i32..8).prop_map(|k| json!(f64::from(k) / 4.0)),
        proptest::sample::select(
            &[
                9_007_199_254_740_991i64,
                9_007_199_254_740_992,
                9_007_199_254_740_993,
                i64::MIN,
                i64::MAX
            ][..]
        )
        .prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        Just(json!(1e300)),
        Just(json!(-0.0)),
        Just(json!(0.1)),
    ]
}

/// A JSON value from the shared pools, nested a little.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        proptest::sample::select(STRINGS).prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::btree_map(
                proptest::sample::select(KEYS).prop_map(str::to_owned),
                inner,
                0..3
            )
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

fn object() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map(
        proptest::sample::select(KEYS).prop_map(str::to_owned),
        json_value(),
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// A twin-like document: fixed members, some of them absent, with values from the pools.
pub fn document() -> impl Strategy<Value = Value> {
    (
        object(),
        object(),
        proptest::option::of(json_value()),
        proptest::option::of(json_value()),
        proptest::option::of(json_value()),
    )
        .prop_map(|(tags, reported, status, connection, version)| {
            let mut doc = Map::new();
            doc.insert("tags".into(), tags);
            doc.insert(
                "properties".into(),
                json!({"desired": {}, "reported": reported}),
            );
            for (name, v) in [
                ("status", status),
                ("connectionState", connection),
                ("version", version),
            ] {
                if let Some(v) = v {
                    doc.insert(name.into(), v);
                }
            }
            Value::Object(doc)
        })
}

/// A path into documents of [`document`].
pub fn doc_path() -> impl Strategy<Value = Path> {
    let key = || proptest::sample::select(KEYS).prop_map(|k| Segment::Key(k.to_owned()));
    let tail = proptest::collection::vec(
        prop_oneof![4 => key(), 1 => (0u32..2).prop_map(Segment::Index)],
        0..3,
    );
    prop_oneof![
        (key(), tail.clone()).prop_map(|(k, rest)| {
            let mut s = vec![Segment::Key("tags".into()), k];
            s.extend(rest);
            s
        }),
        (key(), tail).prop_map(|(k, rest)| {
            let mut s = vec![
                Segment::Key("properties".into()),
                Segment::Key("reported".into()),
                k,
            ];
            s.extend(rest);
            s
        }),
        (key(), proptest::collection::vec(key(), 0..2)).prop_map(|(k, rest)| {
            let mut s = vec![
                Segment::Key("properties".into()),
                Segment::Key("reported".into()),
                Segment::Key("$metadata".into()),
                k,
            ];
            s.extend(rest);
            s
        }),
        proptest::sample::select(
            &[
                "deviceId",
                "status",
                "connectionState",
                "version",
                "tags",
                "properties",
                "metadata",
                "etag"
            ][..]
        )
        .prop_map(|k| vec![Segment::Key(k.to_owned())]),
    ]
    .prop_map(|s| Path::new(s).unwrap_or_else(|| unreachable!("never empty")))
}

/// A constant from the documents' pools (so that comparisons hit).
pub fn doc_constant() -> impl Strategy<Value = Constant> {
    prop_oneof![
        4 => json_value().prop_map(|v| to_constant(&v)),
        1 => Just(Constant::Undefined),
        2 => proptest::sample::select(STRINGS).prop_map(|s| Constant::String(s.to_owned())),
        2 => (-3i64..4).prop_map(|i| Constant::Number(i.into())),
    ]
}

fn to_constant(v: &Value) -> Constant {
    match v {
        Value::Null => Constant::Null,
        Value::Bool(b) => Constant::Bool(*b),
        Value::Number(n) => Constant::Number(n.clone()),
        Value::String(s) => Constant::String(s.clone()),
        Value::Array(items) => Constant::Array(items.iter().map(to_constant).collect()),
        // Objects have no literal: stand in an empty array (also never equal).
        Value::Object(_) => Constant::Array(Vec::new()),
    }
}

/// A condition over documents of [`document`].
pub fn doc_condition() -> impl Strategy<Value = Expr> {
    let path = || doc_path().prop_map(Expr::Path);
    let cmp = proptest::sample::select(
        &[
            BinaryOp::Eq,
            BinaryOp::Ne,
            BinaryOp::Lt,
            BinaryOp::Le,
            BinaryOp::Gt,
            BinaryOp::Ge,
        ][..],
    );
    let leaf = prop_oneof![
        3 => (cmp.clone(), path(), doc_constant()).prop_map(|(op, p, c)| Expr::Binary {
            op,
            left: Box::new(p),
            right: Box::new(Expr::Constant(c)),
        }),
        1 => (cmp.clone(), doc_constant(), path()).prop_map(|(op, c, p)| Expr::Binary {
            op,
            left: Box::new(Expr::Constant(c)),
            right: Box::new(p),
        }),
        1 => (cmp, path(), path()).prop_map(|(op, a, b)| Expr::Binary {
            op,
            left: Box::new(a),
            right: Box::new(b),
        }),
        2 => (path(), proptest::collection::vec(doc_constant(), 0..4), any::<bool>()).prop_map(|(p, list, negated)| {
            Expr::In {
                value: Box::new(p),
                list,
                negated,
            }
        }),
        2 => (proptest::sample::select(&Function::ALL[..]), path(), doc_constant()).prop_map(|(f, p, c)| {
            let args = if f.arity() == 1 { vec![p] } else { vec![p, Expr::Constant(c)] };
            Expr::Call { function: f, args }
        }),
        1 => (proptest::sample::select(&Function::ALL[..]), doc_constant(), path()).prop_map(|(f, c, p)| {
            let args = if f.arity() == 1 { vec![Expr::Constant(c)] } else { vec![Expr::Constant(c), p] };
            Expr::Call { function: f, args }
        }),
        1 => path(),
        1 => doc_constant().prop_map(Expr::Constant),
        1 => (path(), doc_constant()).prop_map(|(p, c)| Expr::Binary {
            op: BinaryOp::Gt,
            left: Box::new(Expr::Binary {
                op: BinaryOp::Add,
                left: Box::new(p),
                right: Box::new(Expr::Constant(Constant::Number(1.into()))),
            }),
            right: Box::new(Expr::Constant(c)),
        }),
    ];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            (inner.clone(), inner.clone()).prop_map(|(l, r)| Expr::Binary {
                op: BinaryOp::And,
                left: Box::new(l),
                right: Box::new(r),
            }),
            (inner.clone(), inner).prop_map(|(l, r)| Expr::Binary {
                op: BinaryOp::Or,
                left: Box::new(l),
                right: Box::new(r),
            }),
        ]
    })
}
