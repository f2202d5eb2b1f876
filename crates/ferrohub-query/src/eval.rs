//! The evaluator: expressions over a row (`serde_json::Value`), with Azure's semantics.
//!
//! * A missing path is *undefined*; undefined is a value of its own, not `null`.
//! * Comparisons are defined only between primitives of the same kind: `null` with `null`,
//!   booleans (`false < true`), numbers (numerically and exactly: `1 = 1.0`, and a 64-bit
//!   integer is never rounded to compare it with a float), strings (case-sensitively, by code
//!   point). Anything else compares to undefined.
//! * `AND`, `OR` and `NOT` are three-valued: `false AND x` is false and `true OR x` is true
//!   whatever `x` is; otherwise an operand that is not a boolean makes the result undefined.
//! * `v IN [list]` is undefined when `v` is not a primitive, else whether a constant of the
//!   list equals it; `NIN` is the negation of that.
//! * Arithmetic is on numbers only (anything else, a division by zero, or a result out of
//!   range is undefined); integer arithmetic is exact while it fits.
//! * A condition selects a row only when it evaluates to boolean `true`.

use std::cmp::Ordering;

use serde_json::Value;

use crate::ast::{BinaryOp, Constant, Expr, Function, Path, Segment};

/// A number during evaluation: integers exactly (every JSON integer fits), others as floats.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    pub(crate) fn of(n: &serde_json::Number) -> Option<Num> {
        if let Some(i) = n.as_i64() {
            Some(Num::Int(i128::from(i)))
        } else if let Some(u) = n.as_u64() {
            Some(Num::Int(i128::from(u)))
        } else {
            n.as_f64().filter(|f| f.is_finite()).map(Num::Float)
        }
    }

    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// Exact numeric order (floats are never NaN here).
    pub(crate) fn cmp(self, other: Num) -> Ordering {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a.cmp(&b),
            (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
            (Num::Int(a), Num::Float(b)) => cmp_int_float(a, b),
            (Num::Float(a), Num::Int(b)) => cmp_int_float(b, a).reverse(),
        }
    }

    /// As a JSON number: integers when they fit 64 bits, floats otherwise; `None` when not
    /// finite.
    pub(crate) fn to_json(self) -> Option<serde_json::Number> {
        match self {
            Num::Int(i) => {
                if let Ok(i) = i64::try_from(i) {
                    Some(i.into())
                } else if let Ok(u) = u64::try_from(i) {
                    Some(u.into())
                } else {
                    serde_json::Number::from_f64(i as f64)
                }
            }
            Num::Float(f) => serde_json::Number::from_f64(f),
        }
    }

    fn from_f64(f: f64) -> Option<Num> {
        f.is_finite().then_some(Num::Float(f))
    }

    fn arith(self, op: BinaryOp, other: Num) -> Option<Num> {
        if let (Num::Int(a), Num::Int(b)) = (self, other) {
            let exact = match op {
                BinaryOp::Add => a.checked_add(b),
                BinaryOp::Sub => a.checked_sub(b),
                BinaryOp::Mul => a.checked_mul(b),
                BinaryOp::Div if b == 0 => return None,
                BinaryOp::Div => (a.checked_rem(b) == Some(0))
                    .then(|| a.checked_div(b))
                    .flatten(),
                BinaryOp::Rem if b == 0 => return None,
                BinaryOp::Rem => a.checked_rem(b),
                _ => return None,
            };
            if let Some(n) = exact {
                return Some(Num::Int(n));
            }
        }
        let (a, b) = (self.as_f64(), other.as_f64());
        let r = match op {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Rem => a % b,
            _ => return None,
        };
        Num::from_f64(r)
    }
}

/// Compares an integer with a finite float exactly.
fn cmp_int_float(i: i128, f: f64) -> Ordering {
    // 2^127: every i128 is below it.
    const LIMIT: f64 = 1.7014118346046923e38;
    if f >= LIMIT {
        return Ordering::Less;
    }
    if f < -LIMIT {
        return Ordering::Greater;
    }
    let t = f.trunc();
    // `t` is integral and within range, so the conversion is exact.
    match i.cmp(&(t as i128)) {
        Ordering::Equal => {
            if f > t {
                Ordering::Less
            } else if f < t {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        }
        o => o,
    }
}

/// A value during evaluation. Arrays and objects carry nothing: no operation looks inside
/// them, only at their kind.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Val<'a> {
    Undefined,
    Null,
    Bool(bool),
    Num(Num),
    Str(&'a str),
    Array,
    Object,
}

impl<'a> Val<'a> {
    pub(crate) fn of_json(v: &'a Value) -> Val<'a> {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Num::of(n).map_or(Val::Undefined, Val::Num),
            Value::String(s) => Val::Str(s),
            Value::Array(_) => Val::Array,
            Value::Object(_) => Val::Object,
        }
    }

    fn of_constant(c: &'a Constant) -> Val<'a> {
        match c {
            Constant::Undefined => Val::Undefined,
            Constant::Null => Val::Null,
            Constant::Bool(b) => Val::Bool(*b),
            Constant::Number(n) => Num::of(n).map_or(Val::Undefined, Val::Num),
            Constant::String(s) => Val::Str(s),
            Constant::Array(_) => Val::Array,
        }
    }

    fn truth(self) -> Option<bool> {
        match self {
            Val::Bool(b) => Some(b),
            _ => None,
        }
    }

    fn is_primitive(self) -> bool {
        matches!(self, Val::Null | Val::Bool(_) | Val::Num(_) | Val::Str(_))
    }

    /// The order of two primitives of the same kind; `None` across kinds or for
    /// non-primitives.
    pub(crate) fn compare(self, other: Val<'_>) -> Option<Ordering> {
        match (self, other) {
            (Val::Null, Val::Null) => Some(Ordering::Equal),
            (Val::Bool(a), Val::Bool(b)) => Some(a.cmp(&b)),
            (Val::Num(a), Val::Num(b)) => Some(a.cmp(b)),
            (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// The value at `path` in `row`, if there is one.
pub(crate) fn resolve<'a>(path: &Path, row: &'a Value) -> Option<&'a Value> {
    let mut v = row;
    for seg in path.segments() {
        v = match (seg, v) {
            (Segment::Key(k), Value::Object(m)) => m.get(k)?,
            (Segment::Index(i), Value::Array(a)) => a.get(usize::try_from(*i).ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// Evaluates `e` over `row`.
pub(crate) fn eval<'a>(e: &'a Expr, row: &'a Value) -> Val<'a> {
    match e {
        Expr::Constant(c) => Val::of_constant(c),
        Expr::Path(p) => resolve(p, row).map_or(Val::Undefined, Val::of_json),
        Expr::Not(inner) => match eval(inner, row).truth() {
            Some(b) => Val::Bool(!b),
            None => Val::Undefined,
        },
        Expr::Negate(inner) => match eval(inner, row) {
            Val::Num(n) => Num::Int(0)
                .arith(BinaryOp::Sub, n)
                .map_or(Val::Undefined, Val::Num),
            _ => Val::Undefined,
        },
        Expr::Binary { op, left, right } => binary(*op, left, right, row),
        Expr::In {
            value,
            list,
            negated,
        } => {
            let v = eval(value, row);
            if !v.is_primitive() {
                return Val::Undefined;
            }
            let found = list
                .iter()
                .any(|c| v.compare(Val::of_constant(c)) == Some(Ordering::Equal));
            Val::Bool(found != *negated)
        }
        Expr::Call { function, args } => call(*function, args, row),
    }
}

fn binary<'a>(op: BinaryOp, left: &'a Expr, right: &'a Expr, row: &'a Value) -> Val<'a> {
    match op {
        BinaryOp::And => {
            let l = eval(left, row).truth();
            if l == Some(false) {
                return Val::Bool(false);
            }
            match (l, eval(right, row).truth()) {
                (_, Some(false)) => Val::Bool(false),
                (Some(true), Some(true)) => Val::Bool(true),
                _ => Val::Undefined,
            }
        }
        BinaryOp::Or => {
            let l = eval(left, row).truth();
            if l == Some(true) {
                return Val::Bool(true);
            }
            match (l, eval(right, row).truth()) {
                (_, Some(true)) => Val::Bool(true),
                (Some(false), Some(false)) => Val::Bool(false),
                _ => Val::Undefined,
            }
        }
        BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
            match eval(left, row).compare(eval(right, row)) {
                Some(o) => Val::Bool(comparison_holds(op, o)),
                None => Val::Undefined,
            }
        }
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem => {
            match (eval(left, row), eval(right, row)) {
                (Val::Num(a), Val::Num(b)) => a.arith(op, b).map_or(Val::Undefined, Val::Num),
                _ => Val::Undefined,
            }
        }
    }
}

/// Whether comparison `op` holds for operands in order `o`.
pub(crate) fn comparison_holds(op: BinaryOp, o: Ordering) -> bool {
    match op {
        BinaryOp::Eq => o == Ordering::Equal,
        BinaryOp::Ne => o != Ordering::Equal,
        BinaryOp::Lt => o == Ordering::Less,
        BinaryOp::Le => o != Ordering::Greater,
        BinaryOp::Gt => o == Ordering::Greater,
        BinaryOp::Ge => o != Ordering::Less,
        _ => false,
    }
}

fn call<'a>(f: Function, args: &'a [Expr], row: &'a Value) -> Val<'a> {
    if args.len() != f.arity() {
        return Val::Undefined;
    }
    let arg = |i: usize| args.get(i).map_or(Val::Undefined, |a| eval(a, row));
    let test = |kind: fn(Val<'_>) -> bool| Val::Bool(kind(arg(0)));
    match f {
        Function::IsDefined => test(|v| !matches!(v, Val::Undefined)),
        Function::IsNull => test(|v| matches!(v, Val::Null)),
        Function::IsBool => test(|v| matches!(v, Val::Bool(_))),
        Function::IsNumber => test(|v| matches!(v, Val::Num(_))),
        Function::IsString => test(|v| matches!(v, Val::Str(_))),
        Function::IsObject => test(|v| matches!(v, Val::Object)),
        Function::IsArray => test(|v| matches!(v, Val::Array)),
        Function::IsPrimitive => test(|v| v.is_primitive()),
        Function::StartsWith | Function::EndsWith | Function::Contains => match (arg(0), arg(1)) {
            (Val::Str(s), Val::Str(p)) => Val::Bool(match f {
                Function::StartsWith => s.starts_with(p),
                Function::EndsWith => s.ends_with(p),
                _ => s.contains(p),
            }),
            _ => Val::Undefined,
        },
    }
}

/// Whether `e` is boolean `true` over `row`.
pub(crate) fn is_true(e: &Expr, row: &Value) -> bool {
    matches!(eval(e, row), Val::Bool(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn num(v: Value) -> Num {
        match v {
            Value::Number(n) => Num::of(&n).expect("finite"),
            _ => unreachable!("a number"),
        }
    }

    #[test]
    fn integers_and_floats_compare_exactly() {
        // 2^53 + 1 is not 2^53 although it converts to that float.
        assert_eq!(
            num(json!(9_007_199_254_740_993_i64)).cmp(num(json!(9_007_199_254_740_992.0))),
            Ordering::Greater
        );
        assert_eq!(
            num(json!(9_007_199_254_740_992_i64)).cmp(num(json!(9_007_199_254_740_992.0))),
            Ordering::Equal
        );
        assert_eq!(
            num(json!(u64::MAX)).cmp(num(json!(18_446_744_073_709_551_616.0))),
            Ordering::Less
        );
        assert_eq!(
            num(json!(i64::MIN)).cmp(num(json!(-9_223_372_036_854_775_808.0))),
            Ordering::Equal
        );
        assert_eq!(num(json!(1)).cmp(num(json!(1.5))), Ordering::Less);
        assert_eq!(num(json!(-1)).cmp(num(json!(-1.5))), Ordering::Greater);
        assert_eq!(num(json!(2)).cmp(num(json!(1e300))), Ordering::Less);
        assert_eq!(num(json!(2)).cmp(num(json!(-1e300))), Ordering::Greater);
        assert_eq!(num(json!(0)).cmp(num(json!(-0.0))), Ordering::Equal);
    }

    #[test]
    fn arithmetic_stays_exact_while_it_fits() {
        let a = Num::Int(i128::from(i64::MAX));
        assert!(
            matches!(a.arith(BinaryOp::Add, Num::Int(1)), Some(Num::Int(n)) if n == i128::from(i64::MAX) + 1)
        );
        assert!(
            matches!(Num::Int(7).arith(BinaryOp::Div, Num::Int(2)), Some(Num::Float(f)) if f == 3.5)
        );
        assert!(matches!(
            Num::Int(8).arith(BinaryOp::Div, Num::Int(2)),
            Some(Num::Int(4))
        ));
        assert!(Num::Int(1).arith(BinaryOp::Div, Num::Int(0)).is_none());
        assert!(Num::Int(1).arith(BinaryOp::Rem, Num::Int(0)).is_none());
        assert!(
            Num::Float(1.0)
                .arith(BinaryOp::Rem, Num::Float(0.0))
                .is_none()
        );
        assert!(
            Num::Float(1e308)
                .arith(BinaryOp::Mul, Num::Float(10.0))
                .is_none()
        );
        assert!(matches!(
            Num::Int(-7).arith(BinaryOp::Rem, Num::Int(3)),
            Some(Num::Int(-1))
        ));
        assert!(matches!(
            Num::Int(i128::MAX).arith(BinaryOp::Add, Num::Int(1)),
            Some(Num::Float(_))
        ));
    }

    #[test]
    fn paths_resolve_members_and_elements_only() {
        let row = json!({"a": {"b": [10, {"c": null}]}, "0": 1});
        let p = |segs: Vec<Segment>| Path::new(segs).expect("not empty");
        let key = |k: &str| Segment::Key(k.to_owned());
        assert_eq!(
            resolve(&p(vec![key("a"), key("b"), Segment::Index(0)]), &row),
            Some(&json!(10))
        );
        assert_eq!(
            resolve(
                &p(vec![key("a"), key("b"), Segment::Index(1), key("c")]),
                &row
            ),
            Some(&Value::Null)
        );
        assert_eq!(
            resolve(&p(vec![key("a"), key("b"), key("0")]), &row),
            None,
            "a key is not an index"
        );
        assert_eq!(
            resolve(&p(vec![Segment::Index(0)]), &row),
            None,
            "an index is not a key"
        );
        assert_eq!(
            resolve(&p(vec![key("a"), key("b"), Segment::Index(2)]), &row),
            None
        );
    }
}
