//! The SQL filter's recursive-descent parser, with RocketMQ's parse-time checks.

use std::cmp::Ordering;

use super::ast::{CmpOp, Expr, Literal, MAX_DEPTH, SqlError, err};
use super::eval::{Value, compare};
use super::lex::{Tok, Token, lex};

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
pub(crate) fn literal_order(a: &Literal, b: &Literal) -> Option<Ordering> {
    let num = |l: &Literal| match l {
        Literal::Int(i) => Some(Value::Int(*i)),
        Literal::Float(f) => Some(Value::Float(*f)),
        _ => None,
    };
    compare(&num(a)?, &num(b)?).ok()
}

// ----------------------------------------------------------------------------------- printer
