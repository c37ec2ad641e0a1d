//! RocketMQ's SQL92 property filter (`FilterType.SQL`): lexer, recursive-descent parser to an
//! [`Expr`] tree, printer and evaluator over a [`PropertyLookup`].
//!
//! # Grammar
//!
//! The grammar is RocketMQ's `SelectorParser.jj` (derived from ActiveMQ's JMS selector, without
//! arithmetic, LIKE and hex/octal literals, with CONTAINS / STARTSWITH / ENDSWITH), lowest
//! precedence first:
//!
//! ```text
//! or         := and ( OR and )*
//! and        := equality ( AND equality )*
//! equality   := comparison ( '=' comparison | '<>' comparison | IS NULL | IS NOT NULL )*
//! comparison := unary ( ('>' | '>=' | '<' | '<=') unary
//!                     | [NOT] BETWEEN unary AND unary
//!                     | [NOT] IN '(' string ( ',' string )* ')'
//!                     | [NOT] (CONTAINS | STARTSWITH | ENDSWITH) string )*
//! unary      := '+' unary | '-' unary | NOT unary | primary
//! primary    := literal | property | '(' or ')'
//! literal    := 'string' ('' escapes a quote) | integer [L] | decimal | TRUE | FALSE | NULL
//! property   := [A-Za-z_$][A-Za-z0-9_$]*      (case-sensitive; keywords are not)
//! ```
//!
//! Comments (`-- ...` to the end of the line, `/* ... */`) are skipped. Note that, as in
//! RocketMQ, `NOT` binds tighter than comparisons: `NOT a = 'x'` reads `(NOT a) = 'x'`; write
//! `NOT (a = 'x')`.
//!
//! Parse-time checks (RocketMQ's): `NULL` cannot be an operand of `=` / `<>` (use `IS NULL`);
//! only numbers and properties can be operands of `<`, `<=`, `>`, `>=` and `BETWEEN`; constant
//! `BETWEEN` bounds must be ordered; `IN` needs a property on its left; `AND`, `OR`, `NOT` and
//! the whole expression need boolean operands (a bare property is allowed and reads FALSE).
//!
//! # Evaluation
//!
//! Properties are strings: the message's user properties, and `TAGS`, its tag. Evaluation is
//! three-valued (TRUE / FALSE / unknown) and a message matches only when the expression is
//! TRUE:
//! - a comparison with a missing property is unknown, so it never matches (nor does its `NOT`);
//!   `CONTAINS`, `STARTSWITH`, `ENDSWITH` and their `NOT` forms are FALSE on a missing property;
//! - a string property compared with a number is converted to the number's type (`a > 5` parses
//!   `a` as an integer, `a > 5.0` as a decimal); two properties compared with `<`, `>`, ... are
//!   both read as decimals; a value that does not convert makes the whole expression fail, which
//!   means no match (as an exception does in RocketMQ);
//! - `AND` / `OR` short-circuit left to right exactly like RocketMQ's.
//!
//! Deviations from RocketMQ: integers are 64-bit throughout (RocketMQ parses a property compared
//! with a small literal as a 32-bit integer); `0.0` is an accepted literal; a `--` comment may end
//! the input without a newline.
//!
//! Invariants: parsing is bounded ([`MAX_DEPTH`] levels of nesting, so neither parsing,
//! evaluation nor dropping a tree can exhaust the stack) and never panics; `parse(print(e)) == e`
//! for every tree the parser produces.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

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
pub struct EvalError(String);

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
    fn symbol(self) -> &'static str {
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
    fn keyword(self) -> &'static str {
        match self {
            TextOp::Contains => "CONTAINS",
            TextOp::StartsWith => "STARTSWITH",
            TextOp::EndsWith => "ENDSWITH",
        }
    }

    fn test(self, value: &str, pattern: &str) -> bool {
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

// ------------------------------------------------------------------------------------- lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Not,
    And,
    Or,
    Between,
    In,
    True,
    False,
    Null,
    Is,
    Text(TextOp),
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
    Eof,
}

impl Tok {
    /// "unexpected X", or that the input ended.
    fn found(&self) -> String {
        match self {
            Tok::Eof => "the expression ends too early".to_owned(),
            other => format!("unexpected {}", other.describe()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("property {s}"),
            Tok::Str(s) => format!("string {}", quote(s)),
            Tok::Int(i) => format!("number {i}"),
            Tok::Float(f) => format!("number {f:?}"),
            Tok::Not => "NOT".into(),
            Tok::And => "AND".into(),
            Tok::Or => "OR".into(),
            Tok::Between => "BETWEEN".into(),
            Tok::In => "IN".into(),
            Tok::True => "TRUE".into(),
            Tok::False => "FALSE".into(),
            Tok::Null => "NULL".into(),
            Tok::Is => "IS".into(),
            Tok::Text(op) => op.keyword().into(),
            Tok::Eq => "'='".into(),
            Tok::Ne => "'<>'".into(),
            Tok::Lt => "'<'".into(),
            Tok::Le => "'<='".into(),
            Tok::Gt => "'>'".into(),
            Tok::Ge => "'>='".into(),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::Plus => "'+'".into(),
            Tok::Minus => "'-'".into(),
            Tok::Eof => "the end of the expression".into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// 1-based character position.
    pos: usize,
}

fn keyword(word: &str) -> Option<Tok> {
    let k = match word.to_ascii_uppercase().as_str() {
        "NOT" => Tok::Not,
        "AND" => Tok::And,
        "OR" => Tok::Or,
        "BETWEEN" => Tok::Between,
        "IN" => Tok::In,
        "TRUE" => Tok::True,
        "FALSE" => Tok::False,
        "NULL" => Tok::Null,
        "IS" => Tok::Is,
        "CONTAINS" => Tok::Text(TextOp::Contains),
        "STARTSWITH" => Tok::Text(TextOp::StartsWith),
        "ENDSWITH" => Tok::Text(TextOp::EndsWith),
        _ => return None,
    };
    Some(k)
}

/// Whether `name` can be written as a property in an expression (not a keyword, identifier
/// characters only).
pub fn is_property_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && keyword(name).is_none()
}

fn err(position: usize, message: impl Into<String>) -> SqlError {
    SqlError {
        position,
        message: message.into(),
    }
}

fn lex(text: &str) -> Result<Vec<Token>, SqlError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied();
    while i < chars.len() {
        let c = chars[i];
        let pos = i + 1;
        // Whitespace and comments.
        if matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{c}') {
            i += 1;
            continue;
        }
        if c == '-' && at(i + 1) == Some('-') {
            while i < chars.len() && !matches!(chars[i], '\n' | '\r') {
                i += 1;
            }
            continue;
        }
        if c == '/' && at(i + 1) == Some('*') {
            let mut j = i + 2;
            loop {
                match at(j) {
                    None => return Err(err(pos, "unterminated comment: expected '*/'")),
                    Some('*') if at(j + 1) == Some('/') => break,
                    Some(_) => j += 1,
                }
            }
            i = j + 2;
            continue;
        }
        let (tok, len) = match c {
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            ',' => (Tok::Comma, 1),
            '+' => (Tok::Plus, 1),
            '-' => (Tok::Minus, 1),
            '=' => (Tok::Eq, 1),
            '<' => match at(i + 1) {
                Some('>') => (Tok::Ne, 2),
                Some('=') => (Tok::Le, 2),
                _ => (Tok::Lt, 1),
            },
            '>' => match at(i + 1) {
                Some('=') => (Tok::Ge, 2),
                _ => (Tok::Gt, 1),
            },
            '!' => {
                return Err(err(
                    pos,
                    "unexpected character '!': write <> for \"not equal\" and NOT for negation",
                ));
            }
            '\'' => {
                let mut s = String::new();
                let mut j = i + 1;
                loop {
                    match at(j) {
                        None => {
                            return Err(err(
                                pos,
                                "unterminated string literal: expected a closing quote (write '' \
                                 for a quote inside a string)",
                            ));
                        }
                        Some('\'') if at(j + 1) == Some('\'') => {
                            s.push('\'');
                            j += 2;
                        }
                        Some('\'') => break,
                        Some(ch) => {
                            s.push(ch);
                            j += 1;
                        }
                    }
                }
                (Tok::Str(s), j + 1 - i)
            }
            c if c.is_ascii_digit()
                || (c == '.' && at(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                lex_number(&chars, i)?
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == '$' => {
                let mut j = i + 1;
                while at(j).is_some_and(|d| d.is_ascii_alphanumeric() || d == '_' || d == '$') {
                    j += 1;
                }
                let word: String = chars[i..j].iter().collect();
                (keyword(&word).unwrap_or(Tok::Ident(word)), j - i)
            }
            other => {
                return Err(err(
                    pos,
                    format!(
                        "unexpected character {other:?}: expected a property name, a literal, \
                         an operator or a parenthesis"
                    ),
                ));
            }
        };
        out.push(Token { tok, pos });
        i += len;
    }
    out.push(Token {
        tok: Tok::Eof,
        pos: chars.len() + 1,
    });
    Ok(out)
}

/// Lexes a number starting at `start`: an integer (`0` or no leading zero, optional `L`) or a
/// decimal (`5.`, `5.5`, `.5`, with an optional exponent `E[+-]digits`).
fn lex_number(chars: &[char], start: usize) -> Result<(Tok, usize), SqlError> {
    let at = |i: usize| chars.get(i).copied();
    let digits_from = |mut i: usize| {
        while at(i).is_some_and(|c| c.is_ascii_digit()) {
            i += 1;
        }
        i
    };
    let exponent_end = |i: usize| -> Option<usize> {
        if !matches!(at(i), Some('e' | 'E')) {
            return None;
        }
        let mut j = i + 1;
        if matches!(at(j), Some('+' | '-')) {
            j += 1;
        }
        let end = digits_from(j);
        (end > j).then_some(end)
    };
    let pos = start + 1;
    let int_end = digits_from(start);
    let mut end = int_end;
    let mut is_float = false;
    if at(end) == Some('.') {
        is_float = true;
        end = digits_from(end + 1);
    }
    if let Some(e) = exponent_end(end) {
        is_float = true;
        end = e;
    }
    let text: String = chars[start..end].iter().collect();
    if is_float {
        let v: f64 = text
            .parse()
            .map_err(|_| err(pos, format!("invalid number {text}")))?;
        if !v.is_finite() {
            return Err(err(
                pos,
                format!("number {text} is too large: decimals must fit a 64-bit float"),
            ));
        }
        return Ok((Tok::Float(v), end - start));
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(err(
            pos,
            format!("invalid number {text}: integers are written without leading zeros"),
        ));
    }
    let v: i64 = text.parse().map_err(|_| {
        err(
            pos,
            format!(
                "integer {text} is out of range: integers must fit a signed 64-bit value \
                 (at most {})",
                i64::MAX
            ),
        )
    })?;
    if matches!(at(end), Some('l' | 'L'))
        && !at(end + 1).is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    {
        end += 1;
    }
    Ok((Tok::Int(v), end - start))
}

// ------------------------------------------------------------------------------------ parser

/// Parses an expression.
///
/// # Errors
/// [`SqlError`] with the position and what was expected, for a syntax error or an expression
/// RocketMQ refuses (see the module docs).
pub fn parse(text: &str) -> Result<Expr, SqlError> {
    let tokens = lex(text)?;
    let mut p = Parser {
        tokens,
        at: 0,
        nesting: 0,
    };
    let (expr, _) = p.or()?;
    let t = p.peek();
    if t.tok != Tok::Eof {
        return Err(err(
            t.pos,
            format!(
                "{}: expected AND, OR, a comparison or the end of the expression",
                t.tok.found()
            ),
        ));
    }
    require_boolean(&expr, 1)?;
    Ok(expr)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// Current recursion depth (parentheses and unary operators).
    nesting: usize,
}

/// An expression with its tree depth.
type Node = (Expr, usize);

fn depth_check(depth: usize, pos: usize) -> Result<usize, SqlError> {
    if depth > MAX_DEPTH {
        Err(err(
            pos,
            format!("expression nests deeper than {MAX_DEPTH} levels"),
        ))
    } else {
        Ok(depth)
    }
}

/// Whether the node produces a boolean (or may be used as one, like a bare property).
fn is_boolean(e: &Expr) -> bool {
    match e {
        Expr::Literal(Literal::Bool(_) | Literal::Null) | Expr::Property(_) => true,
        Expr::Literal(_) | Expr::Neg(_) => false,
        Expr::Not(_)
        | Expr::And(_)
        | Expr::Or(_)
        | Expr::Compare { .. }
        | Expr::IsNull { .. }
        | Expr::Between { .. }
        | Expr::In { .. }
        | Expr::Text { .. } => true,
    }
}

/// Whether the node is statically boolean-valued (RocketMQ's `BooleanExpression`), which a
/// bare property is not.
fn is_boolean_valued(e: &Expr) -> bool {
    !matches!(e, Expr::Property(_)) && is_boolean(e)
}

fn require_boolean(e: &Expr, pos: usize) -> Result<(), SqlError> {
    if is_boolean(e) {
        Ok(())
    } else {
        Err(err(
            pos,
            format!("{e} does not produce a boolean value: expected a condition such as a = 'x'"),
        ))
    }
}

/// `<`, `<=`, `>`, `>=` and BETWEEN operands: numbers, properties and negations only.
fn require_orderable(e: &Expr, op: &str, pos: usize) -> Result<(), SqlError> {
    let ok = match e {
        Expr::Literal(Literal::Int(_) | Literal::Float(_)) => true,
        Expr::Literal(_) => false,
        other => !is_boolean_valued(other),
    };
    if ok {
        Ok(())
    } else {
        Err(err(
            pos,
            format!("{e} cannot be compared with {op}: only numbers and properties can"),
        ))
    }
}

fn boxed(e: Expr) -> Box<Expr> {
    Box::new(e)
}

impl Parser {
    fn peek(&self) -> &Token {
        // The last token is always Eof and is never consumed.
        &self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn peek2(&self) -> &Tok {
        &self.tokens[(self.at + 1).min(self.tokens.len() - 1)].tok
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if t.tok != Tok::Eof {
            self.at += 1;
        }
        t
    }

    fn expect(&mut self, want: &Tok, what: &str) -> Result<Token, SqlError> {
        let t = self.bump();
        if &t.tok == want {
            Ok(t)
        } else {
            Err(err(t.pos, format!("{}: expected {what}", t.tok.found())))
        }
    }

    fn string(&mut self, after: &str) -> Result<String, SqlError> {
        let t = self.bump();
        match t.tok {
            Tok::Str(s) => Ok(s),
            other => Err(err(
                t.pos,
                format!(
                    "{}: expected a string literal in single quotes after {after}",
                    other.found()
                ),
            )),
        }
    }

    fn enter(&mut self, pos: usize) -> Result<(), SqlError> {
        self.nesting += 1;
        depth_check(self.nesting, pos).map(|_| ())
    }

    fn or(&mut self) -> Result<Node, SqlError> {
        self.logic(true)
    }

    /// `OR` (or, with `or == false`, `AND`) chains as one n-ary node.
    fn logic(&mut self, or: bool) -> Result<Node, SqlError> {
        let first_pos = self.peek().pos;
        let first = if or {
            self.logic(false)?
        } else {
            self.equality()?
        };
        let op = if or { Tok::Or } else { Tok::And };
        if self.peek().tok != op {
            return Ok(first);
        }
        require_boolean(&first.0, first_pos)?;
        let mut depth = first.1;
        let mut items = vec![first.0];
        while self.peek().tok == op {
            self.bump();
            let pos = self.peek().pos;
            let (e, d) = if or {
                self.logic(false)?
            } else {
                self.equality()?
            };
            require_boolean(&e, pos)?;
            depth = depth.max(d);
            items.push(e);
        }
        let depth = depth_check(depth + 1, first_pos)?;
        Ok((
            if or {
                Expr::Or(items)
            } else {
                Expr::And(items)
            },
            depth,
        ))
    }

    fn equality(&mut self) -> Result<Node, SqlError> {
        let (mut left, mut depth) = self.comparison()?;
        loop {
            let t = self.peek().clone();
            match t.tok {
                Tok::Eq | Tok::Ne => {
                    self.bump();
                    let (right, d) = self.comparison()?;
                    let op = if t.tok == Tok::Eq {
                        CmpOp::Eq
                    } else {
                        CmpOp::Ne
                    };
                    for e in [&left, &right] {
                        if matches!(e, Expr::Literal(Literal::Null)) {
                            return Err(err(
                                t.pos,
                                format!(
                                    "NULL cannot be compared with {}: use IS NULL or IS NOT NULL",
                                    op.symbol()
                                ),
                            ));
                        }
                    }
                    if let (Expr::Literal(l), Expr::Literal(r)) = (&left, &right)
                        && matches!(l, Literal::Bool(_))
                        && !matches!(r, Literal::Bool(_))
                    {
                        return Err(err(
                            t.pos,
                            format!("{left} cannot be compared with {right}"),
                        ));
                    }
                    depth = depth_check(depth.max(d) + 1, t.pos)?;
                    left = Expr::Compare {
                        op,
                        left: boxed(left),
                        right: boxed(right),
                    };
                }
                Tok::Is => {
                    self.bump();
                    let negated = if self.peek().tok == Tok::Not {
                        self.bump();
                        true
                    } else {
                        false
                    };
                    self.expect(
                        &Tok::Null,
                        if negated {
                            "NULL after IS NOT"
                        } else {
                            "NULL or NOT NULL after IS"
                        },
                    )?;
                    depth = depth_check(depth + 1, t.pos)?;
                    left = Expr::IsNull {
                        expr: boxed(left),
                        negated,
                    };
                }
                _ => return Ok((left, depth)),
            }
        }
    }

    fn comparison(&mut self) -> Result<Node, SqlError> {
        let (mut left, mut depth) = self.unary()?;
        loop {
            let t = self.peek().clone();
            let negated =
                t.tok == Tok::Not && matches!(self.peek2(), Tok::Between | Tok::In | Tok::Text(_));
            let op_tok = if negated {
                self.peek2().clone()
            } else {
                t.tok.clone()
            };
            let node = match op_tok {
                Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge => {
                    self.bump();
                    let op = match op_tok {
                        Tok::Lt => CmpOp::Lt,
                        Tok::Le => CmpOp::Le,
                        Tok::Gt => CmpOp::Gt,
                        _ => CmpOp::Ge,
                    };
                    let (right, d) = self.unary()?;
                    require_orderable(&left, op.symbol(), t.pos)?;
                    require_orderable(&right, op.symbol(), t.pos)?;
                    depth = depth.max(d);
                    Expr::Compare {
                        op,
                        left: boxed(left),
                        right: boxed(right),
                    }
                }
                Tok::Between => {
                    self.bump();
                    if negated {
                        self.bump();
                    }
                    let (low, d1) = self.unary()?;
                    self.expect(&Tok::And, "AND between the bounds of BETWEEN")?;
                    let (high, d2) = self.unary()?;
                    for e in [&left, &low, &high] {
                        require_orderable(e, "BETWEEN", t.pos)?;
                    }
                    if !negated
                        && let (Expr::Literal(l), Expr::Literal(h)) = (&low, &high)
                        && literal_order(l, h) == Some(Ordering::Greater)
                    {
                        return Err(err(
                            t.pos,
                            format!(
                                "BETWEEN bounds are reversed: the lower bound {low} must be at \
                                 most the upper bound {high}"
                            ),
                        ));
                    }
                    depth = depth.max(d1).max(d2);
                    Expr::Between {
                        expr: boxed(left),
                        low: boxed(low),
                        high: boxed(high),
                        negated,
                    }
                }
                Tok::In => {
                    self.bump();
                    if negated {
                        self.bump();
                    }
                    let Expr::Property(property) = left else {
                        return Err(err(
                            t.pos,
                            format!("IN needs a property name on its left, not {left}"),
                        ));
                    };
                    self.expect(&Tok::LParen, "'(' after IN")?;
                    let mut list = vec![self.string("IN (")?];
                    loop {
                        let sep = self.bump();
                        match sep.tok {
                            Tok::Comma => list.push(self.string("','")?),
                            Tok::RParen => break,
                            other => {
                                return Err(err(
                                    sep.pos,
                                    format!(
                                        "{}: expected ',' or ')' in the IN list",
                                        other.found()
                                    ),
                                ));
                            }
                        }
                    }
                    Expr::In {
                        property,
                        list,
                        negated,
                    }
                }
                Tok::Text(op) => {
                    self.bump();
                    if negated {
                        self.bump();
                    }
                    let pattern = self.string(op.keyword())?;
                    Expr::Text {
                        op,
                        expr: boxed(left),
                        pattern,
                        negated,
                    }
                }
                _ => return Ok((left, depth)),
            };
            depth = depth_check(depth + 1, t.pos)?;
            left = node;
        }
    }

    fn unary(&mut self) -> Result<Node, SqlError> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Plus | Tok::Minus | Tok::Not => {
                self.bump();
                self.enter(t.pos)?;
                let (inner, d) = self.unary()?;
                self.nesting -= 1;
                match t.tok {
                    Tok::Plus => Ok((inner, d)),
                    Tok::Minus => Ok((Expr::Neg(boxed(inner)), depth_check(d + 1, t.pos)?)),
                    _ => {
                        require_boolean(&inner, t.pos)?;
                        Ok((Expr::Not(boxed(inner)), depth_check(d + 1, t.pos)?))
                    }
                }
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Node, SqlError> {
        let t = self.bump();
        let e = match t.tok {
            Tok::Str(s) => Expr::Literal(Literal::Str(s)),
            Tok::Int(i) => Expr::Literal(Literal::Int(i)),
            Tok::Float(f) => Expr::Literal(Literal::Float(f)),
            Tok::True => Expr::Literal(Literal::Bool(true)),
            Tok::False => Expr::Literal(Literal::Bool(false)),
            Tok::Null => Expr::Literal(Literal::Null),
            Tok::Ident(name) => Expr::Property(name),
            Tok::LParen => {
                self.enter(t.pos)?;
                let inner = self.or()?;
                self.nesting -= 1;
                self.expect(&Tok::RParen, "')'")?;
                return Ok(inner);
            }
            other => {
                return Err(err(
                    t.pos,
                    format!(
                        "{}: expected a property name, a literal ('text', 12, 1.5, \
                         TRUE, FALSE, NULL) or '('",
                        other.found()
                    ),
                ));
            }
        };
        Ok((e, 1))
    }
}

/// Order of two constant BETWEEN bounds, when both are numbers.
fn literal_order(a: &Literal, b: &Literal) -> Option<Ordering> {
    let num = |l: &Literal| match l {
        Literal::Int(i) => Some(Value::Int(*i)),
        Literal::Float(f) => Some(Value::Float(*f)),
        _ => None,
    };
    compare(&num(a)?, &num(b)?).ok()
}

// ----------------------------------------------------------------------------------- printer

fn quote(s: &str) -> String {
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

/// Prints the expression so that it parses back to the same tree: every compound node is
/// parenthesized.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let not = |n: bool| if n { "NOT " } else { "" };
        match self {
            Expr::Literal(l) => write!(f, "{l}"),
            Expr::Property(p) => f.write_str(p),
            Expr::Neg(e) => write!(f, "(-{e})"),
            Expr::Not(e) => write!(f, "(NOT {e})"),
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

/// A runtime value; `Null` is SQL's unknown.
#[derive(Debug, Clone, PartialEq)]
enum Value<'a> {
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
fn compare(l: &Value<'_>, r: &Value<'_>) -> Result<Ordering, EvalError> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
