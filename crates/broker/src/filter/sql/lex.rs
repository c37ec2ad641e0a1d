//! The SQL filter's lexer: characters to tokens (comments skipped, keywords case-insensitive).

use super::ast::{SqlError, TextOp, err, quote};

// ------------------------------------------------------------------------------------- lexer

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
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
    pub(crate) fn found(&self) -> String {
        match self {
            Tok::Eof => "the expression ends too early".to_owned(),
            other => format!("unexpected {}", other.describe()),
        }
    }

    pub(crate) fn describe(&self) -> String {
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
pub(crate) struct Token {
    pub(crate) tok: Tok,
    /// 1-based character position.
    pub(crate) pos: usize,
}

pub(crate) fn keyword(word: &str) -> Option<Tok> {
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

pub(crate) fn lex(text: &str) -> Result<Vec<Token>, SqlError> {
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
