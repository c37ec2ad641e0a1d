//! The SQL filter's syntax tree and its errors, shared by the lexer, parser, printer and
//! evaluator.

use std::collections::{BTreeMap, HashMap};

/// Deepest nesting the parser accepts (parentheses, operators and operand chains).
pub const MAX_DEPTH: usize = 100;

/// The property name that reads the message tag.
pub const TAGS: &str = "TAGS";

/// Why an expression was refused: where (1-based character position in the expression) and
/// what was wrong or expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {message}")]
pub struct SqlError {
    /// 1-based character position of the offending token (one past the end for a premature
    /// end of input).
    pub position: usize,
    /// What is wrong, and what was expected there.
    pub message: String,
}

/// Why evaluating an expression failed for one message (the message then does not match).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub(crate) String);

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `'text'`.
    Str(String),
    /// An integer (always non-negative as parsed; `-` is [`Expr::Neg`]).
    Int(i64),
    /// A decimal (finite, non-negative as parsed).
    Float(f64),
    /// `TRUE` / `FALSE`.
    Bool(bool),
    /// `NULL`.
    Null,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>`
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

impl CmpOp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A string-matching operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextOp {
    /// `CONTAINS`
    Contains,
    /// `STARTSWITH`
    StartsWith,
    /// `ENDSWITH`
    EndsWith,
}

impl TextOp {
    pub(crate) fn keyword(self) -> &'static str {
        match self {
            TextOp::Contains => "CONTAINS",
            TextOp::StartsWith => "STARTSWITH",
            TextOp::EndsWith => "ENDSWITH",
        }
    }

    pub(crate) fn test(self, value: &str, pattern: &str) -> bool {
        match self {
            TextOp::Contains => value.contains(pattern),
            TextOp::StartsWith => value.starts_with(pattern),
            TextOp::EndsWith => value.ends_with(pattern),
        }
    }
}

/// A parsed expression. `AND` / `OR` chains written without parentheses are one node with all
/// their operands (≥ 2); parentheses leave no node of their own.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A constant.
    Literal(Literal),
    /// A message property (`TAGS` = the tag).
    Property(String),
    /// `-e`
    Neg(Box<Expr>),
    /// `NOT e`
    Not(Box<Expr>),
    /// `a AND b AND ...`
    And(Vec<Expr>),
    /// `a OR b OR ...`
    Or(Vec<Expr>),
    /// `left op right`
    Compare {
        /// The operator.
        op: CmpOp,
        /// Left operand.
        left: Box<Expr>,
        /// Right operand.
        right: Box<Expr>,
    },
    /// `e IS [NOT] NULL`
    IsNull {
        /// The tested expression.
        expr: Box<Expr>,
        /// `IS NOT NULL`.
        negated: bool,
    },
    /// `e [NOT] BETWEEN low AND high`
    Between {
        /// The tested expression.
        expr: Box<Expr>,
        /// Lower bound (inclusive).
        low: Box<Expr>,
        /// Upper bound (inclusive).
        high: Box<Expr>,
        /// `NOT BETWEEN`.
        negated: bool,
    },
    /// `property [NOT] IN ('a', 'b', ...)`
    In {
        /// The property.
        property: String,
        /// The strings (at least one).
        list: Vec<String>,
        /// `NOT IN`.
        negated: bool,
    },
    /// `e [NOT] CONTAINS|STARTSWITH|ENDSWITH 'text'`
    Text {
        /// The operator.
        op: TextOp,
        /// The tested expression.
        expr: Box<Expr>,
        /// The string searched for.
        pattern: String,
        /// The `NOT` form.
        negated: bool,
    },
}

/// Where property values come from.
pub trait PropertyLookup {
    /// The value of property `name`, if the message has it.
    fn property(&self, name: &str) -> Option<&str>;
}

impl<S: std::borrow::Borrow<str> + Ord> PropertyLookup for BTreeMap<S, String> {
    fn property(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl<S: std::borrow::Borrow<str> + std::hash::Hash + Eq> PropertyLookup for HashMap<S, String> {
    fn property(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

pub(crate) fn err(position: usize, message: impl Into<String>) -> SqlError {
    SqlError {
        position,
        message: message.into(),
    }
}

/// `s` as a SQL string literal (quotes doubled).
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
    out
}
