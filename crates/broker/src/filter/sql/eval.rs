//! The SQL filter's evaluator: three-valued logic over a message's properties, RocketMQ's
//! conversions and short-circuit order.

use std::cmp::Ordering;

use super::ast::{CmpOp, EvalError, Expr, Literal, PropertyLookup, quote};

/// A runtime value; `Null` is SQL's unknown.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

fn fail(msg: String) -> EvalError {
    EvalError(msg)
}

fn parse_int(s: &str) -> Result<i64, EvalError> {
    s.parse::<i64>()
        .map_err(|_| fail(format!("{} is not an integer", quote(s))))
}

/// Java's `Double.valueOf`: surrounding whitespace and a trailing type suffix are accepted.
fn parse_float(s: &str) -> Result<f64, EvalError> {
    let t = s.trim();
    let t = t
        .strip_suffix(['d', 'D', 'f', 'F'])
        .filter(|r| !r.is_empty() && !r.ends_with(['e', 'E']))
        .unwrap_or(t);
    t.parse::<f64>()
        .map_err(|_| fail(format!("{} is not a number", quote(s))))
}

fn parse_bool(s: &str) -> bool {
    s.eq_ignore_ascii_case("true")
}

/// RocketMQ's comparison of two non-null values (`ComparisonExpression.__compare`): values of
/// different types are converted towards the number or boolean side; values that cannot be
/// related compare as "less".
pub(crate) fn compare(l: &Value<'_>, r: &Value<'_>) -> Result<Ordering, EvalError> {
    use Value as V;
    Ok(match (l, r) {
        (V::Bool(a), V::Bool(b)) => a.cmp(b),
        (V::Int(a), V::Int(b)) => a.cmp(b),
        (V::Float(a), V::Float(b)) => a.total_cmp(b),
        (V::Str(a), V::Str(b)) => a.cmp(b),
        (V::Int(a), V::Float(b)) => (*a as f64).total_cmp(b),
        (V::Float(a), V::Int(b)) => a.total_cmp(&(*b as f64)),
        (V::Int(a), V::Str(b)) => a.cmp(&parse_int(b)?),
        (V::Float(a), V::Str(b)) => a.total_cmp(&parse_float(b)?),
        (V::Str(a), V::Int(b)) => parse_int(a)?.cmp(b),
        (V::Str(a), V::Float(b)) => parse_float(a)?.total_cmp(b),
        (V::Str(a), V::Bool(b)) => parse_bool(a).cmp(b),
        (V::Bool(_), V::Str(s)) => {
            return Err(fail(format!(
                "a boolean cannot be compared with the string {}",
                quote(s)
            )));
        }
        // Booleans and numbers are unrelated; NULL never gets here.
        _ => Ordering::Less,
    })
}

impl Expr {
    /// Evaluates the expression as a condition: `Some(true)` / `Some(false)`, or `None` when
    /// unknown (e.g. it compares a missing property).
    ///
    /// # Errors
    /// [`EvalError`] when a property value cannot be converted for a comparison (RocketMQ
    /// treats the message as not matching).
    pub fn evaluate(&self, props: &dyn PropertyLookup) -> Result<Option<bool>, EvalError> {
        self.eval_bool(props)
    }

    /// Whether the message with these properties matches (TRUE; unknown and errors do not).
    pub fn matches(&self, props: &dyn PropertyLookup) -> bool {
        matches!(self.eval_bool(props), Ok(Some(true)))
    }

    fn eval_bool(&self, props: &dyn PropertyLookup) -> Result<Option<bool>, EvalError> {
        match self {
            // RocketMQ's boolean cast: property values are strings, never booleans.
            Expr::Property(name) => Ok(props.property(name).map(|_| false)),
            Expr::And(items) => {
                let mut unknown = false;
                for e in items {
                    match e.eval_bool(props)? {
                        Some(false) => return Ok(Some(false)),
                        None => unknown = true,
                        Some(true) => {}
                    }
                }
                Ok(if unknown { None } else { Some(true) })
            }
            Expr::Or(items) => {
                let mut unknown = false;
                for e in items {
                    match e.eval_bool(props)? {
                        Some(true) => return Ok(Some(true)),
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                Ok(if unknown { None } else { Some(false) })
            }
            Expr::Not(e) => Ok(e.eval_bool(props)?.map(|b| !b)),
            other => match other.eval(props)? {
                Value::Null => Ok(None),
                Value::Bool(b) => Ok(Some(b)),
                v => Err(fail(format!("{v:?} is not a boolean"))),
            },
        }
    }

    fn eval<'a>(&'a self, props: &'a dyn PropertyLookup) -> Result<Value<'a>, EvalError> {
        Ok(match self {
            Expr::Literal(l) => match l {
                Literal::Str(s) => Value::Str(s),
                Literal::Int(i) => Value::Int(*i),
                Literal::Float(f) => Value::Float(*f),
                Literal::Bool(b) => Value::Bool(*b),
                Literal::Null => Value::Null,
            },
            Expr::Property(name) => props.property(name).map_or(Value::Null, Value::Str),
            Expr::Neg(e) => match e.eval(props)? {
                Value::Int(i) => Value::Int(i.wrapping_neg()),
                Value::Float(f) => Value::Float(-f),
                _ => Value::Null,
            },
            Expr::Not(_) | Expr::And(_) | Expr::Or(_) => {
                self.eval_bool(props)?.map_or(Value::Null, Value::Bool)
            }
            Expr::Compare { op, left, right } => bool_value(compare_op(*op, left, right, props)?),
            Expr::IsNull { expr, negated } => {
                Value::Bool(matches!(expr.eval(props)?, Value::Null) != *negated)
            }
            Expr::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let (a, b) = if *negated {
                    (CmpOp::Lt, CmpOp::Gt)
                } else {
                    (CmpOp::Ge, CmpOp::Le)
                };
                let first = compare_op(a, expr, low, props)?;
                // Short-circuit exactly like the AND / OR RocketMQ builds for BETWEEN.
                if first == Some(*negated) {
                    return Ok(Value::Bool(*negated));
                }
                let second = compare_op(b, expr, high, props)?;
                bool_value(match (first, second) {
                    (_, Some(s)) if s == *negated => Some(*negated),
                    (Some(_), Some(_)) => Some(!*negated),
                    _ => None,
                })
            }
            Expr::In {
                property,
                list,
                negated,
            } => match props.property(property) {
                None => Value::Null,
                Some(v) => Value::Bool(list.iter().any(|s| s == v) != *negated),
            },
            Expr::Text {
                op,
                expr,
                pattern,
                negated,
            } => {
                if pattern.is_empty() {
                    return Ok(Value::Bool(false));
                }
                match expr.eval(props)? {
                    Value::Str(s) => Value::Bool(op.test(s, pattern) != *negated),
                    _ => Value::Bool(false),
                }
            }
        })
    }
}

fn bool_value<'a>(b: Option<bool>) -> Value<'a> {
    b.map_or(Value::Null, Value::Bool)
}

/// One comparison with RocketMQ's null handling.
fn compare_op(
    op: CmpOp,
    left: &Expr,
    right: &Expr,
    props: &dyn PropertyLookup,
) -> Result<Option<bool>, EvalError> {
    let l = left.eval(props)?;
    match op {
        CmpOp::Eq | CmpOp::Ne => {
            let r = right.eval(props)?;
            let eq = match (&l, &r) {
                (Value::Null, Value::Null) => Some(true),
                (Value::Null, _) => None,
                (_, Value::Null) => Some(false),
                (a, b) => Some(compare(a, b)? == Ordering::Equal),
            };
            Ok(if op == CmpOp::Ne { eq.map(|b| !b) } else { eq })
        }
        CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => {
            if l == Value::Null {
                return Ok(None);
            }
            let r = right.eval(props)?;
            if r == Value::Null {
                return Ok(None);
            }
            let ord = match (&l, &r) {
                // Two strings are only comparable as numbers.
                (Value::Str(a), Value::Str(b)) => parse_float(a)
                    .and_then(|a| Ok(a.total_cmp(&parse_float(b)?)))
                    .map_err(|e| {
                        fail(format!(
                            "strings can only be compared with {} as numbers: {e}",
                            op.symbol()
                        ))
                    })?,
                (a, b) => compare(a, b)?,
            };
            Ok(Some(match op {
                CmpOp::Lt => ord == Ordering::Less,
                CmpOp::Le => ord != Ordering::Greater,
                CmpOp::Gt => ord == Ordering::Greater,
                _ => ord != Ordering::Less,
            }))
        }
    }
}
