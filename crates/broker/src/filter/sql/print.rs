//! The SQL filter's printer: an expression back to text that parses to the same tree.

use std::fmt;

use super::ast::{Expr, Literal, quote};

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => f.write_str(&quote(s)),
            Literal::Int(i) => write!(f, "{i}"),
            // Debug prints the shortest text that reads back as the same f64, always with a
            // '.' or an exponent, so it lexes as a decimal again.
            Literal::Float(v) => write!(f, "{v:?}"),
            Literal::Bool(true) => f.write_str("TRUE"),
            Literal::Bool(false) => f.write_str("FALSE"),
            Literal::Null => f.write_str("NULL"),
        }
    }
}

/// Prints the expression so that it parses back to the same tree: every binary, n-ary and
/// postfix node is parenthesized; a unary operator (`-`, `NOT`) is not, since it binds tighter
/// than anything else and applies to exactly the leaf, unary or parenthesized node printed
/// after it. So the text nests no deeper than the tree, and whatever parsed within
/// [`super::MAX_DEPTH`] parses back. (Printed as `(-e)`, a unary counted twice on the way
/// back: `tests/fuzz_regressions/sql_filter/printed-unary-nesting-deeper-than-parsed`.) A
/// minus before another one gets a space, or `--` would start a comment.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let not = |n: bool| if n { "NOT " } else { "" };
        match self {
            Expr::Literal(l) => write!(f, "{l}"),
            Expr::Property(p) => f.write_str(p),
            Expr::Neg(e) if matches!(**e, Expr::Neg(_)) => write!(f, "- {e}"),
            Expr::Neg(e) => write!(f, "-{e}"),
            Expr::Not(e) => write!(f, "NOT {e}"),
            Expr::And(v) | Expr::Or(v) => {
                let sep = if matches!(self, Expr::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                f.write_str("(")?;
                for (i, e) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(sep)?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str(")")
            }
            Expr::Compare { op, left, right } => {
                write!(f, "({left} {} {right})", op.symbol())
            }
            Expr::IsNull { expr, negated } => write!(f, "({expr} IS {}NULL)", not(*negated)),
            Expr::Between {
                expr,
                low,
                high,
                negated,
            } => write!(f, "({expr} {}BETWEEN {low} AND {high})", not(*negated)),
            Expr::In {
                property,
                list,
                negated,
            } => {
                write!(f, "({property} {}IN (", not(*negated))?;
                for (i, s) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(&quote(s))?;
                }
                f.write_str("))")
            }
            Expr::Text {
                op,
                expr,
                pattern,
                negated,
            } => write!(
                f,
                "({expr} {}{} {})",
                not(*negated),
                op.keyword(),
                quote(pattern)
            ),
        }
    }
}

// --------------------------------------------------------------------------------- evaluator
