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

mod ast;
mod eval;
mod lex;
mod parse;
mod print;

pub use ast::{CmpOp, EvalError, Expr, Literal, MAX_DEPTH, PropertyLookup, SqlError, TAGS, TextOp};
pub use lex::is_property_name;
pub use parse::parse;

#[cfg(test)]
mod tests;
