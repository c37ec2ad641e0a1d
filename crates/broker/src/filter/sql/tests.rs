//! SQL filter tests: grammar, RocketMQ's evaluation rules, error positions, and property tests
//! (print/parse round trip; no panics on arbitrary input).

use std::collections::BTreeMap;

use proptest::prelude::*;

use std::cmp::Ordering;

use super::parse::literal_order;
use super::*;

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Evaluates `sql` over `pairs`: Some(true/false), None (unknown), or "error".
fn eval(sql: &str, pairs: &[(&str, &str)]) -> Result<Option<bool>, EvalError> {
    parse(sql)
        .unwrap_or_else(|e| panic!("{sql:?} should parse: {e}"))
        .evaluate(&props(pairs))
}

fn matches(sql: &str, pairs: &[(&str, &str)]) -> bool {
    parse(sql)
        .unwrap_or_else(|e| panic!("{sql:?} should parse: {e}"))
        .matches(&props(pairs))
}

fn parse_err(sql: &str) -> SqlError {
    match parse(sql) {
        Ok(e) => panic!("{sql:?} should not parse, got {e}"),
        Err(e) => e,
    }
}

#[test]
fn given_comparisons_when_evaluated_should_follow_numeric_and_string_rules() {
    let p = [("a", "5"), ("s", "abc"), ("d", "2.5"), ("neg", "-3")];
    for (sql, want) in [
        ("a = 5", true),
        ("a = '5'", true),
        ("a <> 5", false),
        ("a > 4", true),
        ("a >= 5", true),
        ("a < 5", false),
        ("a <= 5", true),
        ("a > 4.5", true),
        ("d > 2", false), // "2.5" is not an integer: the comparison fails
        ("d > 2.0", true),
        ("d < 2.6", true),
        ("neg < 0", true),
        ("neg = -3", true),
        ("s = 'abc'", true),
        ("s <> 'abd'", true),
        ("s = 'ABC'", false),
        ("a BETWEEN 1 AND 5", true),
        ("a BETWEEN 6 AND 9", false),
        ("a NOT BETWEEN 6 AND 9", true),
        ("a NOT BETWEEN 1 AND 5", false),
        ("a BETWEEN -1 AND 5.5", true),
        ("s IN ('x', 'abc')", true),
        ("s IN ('x')", false),
        ("s NOT IN ('x', 'y')", true),
        ("s CONTAINS 'b'", true),
        ("s NOT CONTAINS 'b'", false),
        ("s STARTSWITH 'ab'", true),
        ("s ENDSWITH 'bc'", true),
        ("s ENDSWITH 'ab'", false),
        ("s NOT STARTSWITH 'x'", true),
        ("s CONTAINS ''", false),
        ("TRUE", true),
        ("FALSE OR TRUE", true),
        ("NOT FALSE", true),
        ("(a = 5) = TRUE", true),
        ("a = 5 AND s = 'abc' AND d > 1.0", true),
        ("a = 6 OR s = 'abc'", true),
        ("a = 6 OR s = 'x'", false),
        ("a IS NOT NULL", true),
        ("a IS NULL", false),
        ("-a = -5", false), // negating a string is unknown
        ("+a = 5", true),
        ("a > 2 and s = 'abc'", true), // keywords are case-insensitive
        ("a = 5L", true),
        ("a = 5.", true),
        ("a < 1e3", true),
        ("d = .25E1", true),
    ] {
        assert_eq!(matches(sql, &p), want, "{sql}");
    }
}

#[test]
fn given_missing_property_when_compared_should_never_match() {
    for sql in [
        "x = 1",
        "x <> 1",
        "x > 1",
        "x < 1",
        "x BETWEEN 1 AND 2",
        "x NOT BETWEEN 1 AND 2",
        "x IN ('a')",
        "x NOT IN ('a')",
        "x CONTAINS 'a'",
        "x NOT CONTAINS 'a'",
        "x STARTSWITH 'a'",
        "x NOT ENDSWITH 'a'",
        "NOT (x = 1)",
        "x = 'a' OR x <> 'a'",
    ] {
        assert!(!matches(sql, &[("a", "1")]), "{sql}");
    }
    assert_eq!(eval("x = 1", &[]), Ok(None), "unknown, not false");
    assert_eq!(eval("x CONTAINS 'a'", &[]), Ok(Some(false)));
    assert!(matches("x IS NULL", &[]));
    assert!(matches("x IS NULL OR x = 1", &[]));
    assert!(!matches("x = 1 AND y IS NULL", &[]));
    assert!(
        matches("x = 1 OR y IS NULL", &[]),
        "unknown OR true is true"
    );
}

#[test]
fn given_three_valued_logic_when_combined_should_match_rocketmq() {
    // AND: false wins, then unknown; OR: true wins, then unknown; NOT keeps unknown.
    assert_eq!(eval("x = 1 AND FALSE", &[]), Ok(Some(false)));
    assert_eq!(eval("x = 1 AND TRUE", &[]), Ok(None));
    assert_eq!(eval("x = 1 OR FALSE", &[]), Ok(None));
    assert_eq!(eval("NOT (x = 1)", &[]), Ok(None));
    assert_eq!(eval("NULL", &[]), Ok(None));
    assert_eq!(eval("NOT NULL", &[]), Ok(None));
    // A bare property reads as FALSE when present, unknown when missing.
    assert_eq!(eval("a", &[("a", "true")]), Ok(Some(false)));
    assert_eq!(eval("a", &[]), Ok(None));
    assert_eq!(eval("NOT a", &[("a", "x")]), Ok(Some(true)));
    // Both sides missing: RocketMQ's equality says TRUE.
    assert_eq!(eval("x = y", &[]), Ok(Some(true)));
    assert_eq!(eval("'v' = x", &[]), Ok(Some(false)));
}

#[test]
fn given_unconvertible_values_when_compared_should_fail_the_message() {
    assert!(eval("s = 5", &[("s", "abc")]).is_err());
    assert!(eval("s > 5.0", &[("s", "abc")]).is_err());
    assert!(eval("a > b", &[("a", "x"), ("b", "1")]).is_err());
    assert_eq!(eval("a > b", &[("a", "2"), ("b", "1.5")]), Ok(Some(true)));
    // An error anywhere fails the whole expression, unless short-circuited before it.
    assert!(!matches("s = 5 OR TRUE", &[("s", "abc")]));
    assert!(matches("TRUE OR s = 5", &[("s", "abc")]));
    // A string property against a boolean reads "true" (any case) as TRUE.
    assert!(matches("b = TRUE", &[("b", "True")]));
    assert!(matches("b = FALSE", &[("b", "no")]));
    // Booleans and numbers never compare equal.
    assert!(!matches("(a = 1) = 1", &[("a", "1")]));
    // NOT binds tighter than '=': (NOT a) = 'x' compares a boolean with a string.
    assert!(eval("NOT a = 'x'", &[("a", "y")]).is_err());
}

#[test]
fn given_strings_and_identifiers_when_lexed_should_keep_quotes_case_and_comments() {
    assert!(matches("s = 'it''s'", &[("s", "it's")]));
    assert!(matches("s = ''", &[("s", "")]));
    assert!(matches("s = 'héllo ✓'", &[("s", "héllo ✓")]));
    assert!(matches("$x_1 = 'v'", &[("$x_1", "v")]));
    assert!(
        !matches("A = 'v'", &[("a", "v")]),
        "property names are case-sensitive"
    );
    assert!(matches("a = 1 -- trailing comment", &[("a", "1")]));
    assert!(matches(
        "a = 1 -- comment\n AND b = 2",
        &[("a", "1"), ("b", "2")]
    ));
    assert!(matches("/* c */ a /* d */ = 1", &[("a", "1")]));
    assert!(matches("TAGS = 'x'", &[("TAGS", "x")]));
    assert!(is_property_name("price"));
    assert!(!is_property_name("and"));
    assert!(!is_property_name("a.b"));
    assert!(!is_property_name("1a"));
}

#[test]
fn given_invalid_expressions_when_parsed_should_name_position_and_expectation() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "",
            1,
            "the expression ends too early: expected a property name",
        ),
        (
            "a = ",
            5,
            "the expression ends too early: expected a property name",
        ),
        ("a = 'x", 5, "unterminated string literal"),
        (
            "a = 1 b",
            7,
            "unexpected property b: expected AND, OR, a comparison",
        ),
        (
            "a != 1",
            3,
            "unexpected character '!': write <> for \"not equal\"",
        ),
        (
            "a IN 'x'",
            6,
            "unexpected string 'x': expected '(' after IN",
        ),
        (
            "a IN ()",
            7,
            "unexpected ')': expected a string literal in single quotes after IN (",
        ),
        ("a IN ('x' 'y')", 11, "expected ',' or ')' in the IN list"),
        (
            "a IN (1)",
            7,
            "unexpected number 1: expected a string literal",
        ),
        (
            "1 IN ('x')",
            3,
            "IN needs a property name on its left, not 1",
        ),
        (
            "a BETWEEN 1 OR 2",
            13,
            "expected AND between the bounds of BETWEEN",
        ),
        ("a BETWEEN 5 AND 1", 3, "BETWEEN bounds are reversed"),
        (
            "a BETWEEN 'x' AND 'y'",
            3,
            "'x' cannot be compared with BETWEEN",
        ),
        (
            "a > 'x'",
            3,
            "'x' cannot be compared with >: only numbers and properties can",
        ),
        ("a > TRUE", 3, "TRUE cannot be compared with >"),
        ("(a = 1) > 2", 9, "(a = 1) cannot be compared with >"),
        (
            "a = NULL",
            3,
            "NULL cannot be compared with =: use IS NULL or IS NOT NULL",
        ),
        ("NULL <> a", 6, "NULL cannot be compared with <>"),
        ("TRUE = 1", 6, "TRUE cannot be compared with 1"),
        ("a IS 1", 6, "expected NULL or NOT NULL after IS"),
        ("a IS NOT 1", 10, "expected NULL after IS NOT"),
        ("5", 1, "5 does not produce a boolean value"),
        ("'x'", 1, "'x' does not produce a boolean value"),
        ("-a", 1, "-a does not produce a boolean value"),
        ("a = 1 AND 5", 11, "5 does not produce a boolean value"),
        ("NOT 5", 1, "5 does not produce a boolean value"),
        ("(a = 1", 7, "the expression ends too early: expected ')'"),
        ("a = 1)", 6, "unexpected ')'"),
        ("a = 007", 5, "integers are written without leading zeros"),
        ("a = 9223372036854775808", 5, "out of range"),
        ("a = 1e999", 5, "too large"),
        (
            "a CONTAINS b",
            12,
            "expected a string literal in single quotes after CONTAINS",
        ),
        ("a = 1 /* open", 7, "unterminated comment"),
        ("a = #", 5, "unexpected character '#'"),
        ("a ＝ 1", 3, "unexpected character '＝'"),
    ];
    for (sql, position, text) in cases {
        let e = parse_err(sql);
        assert_eq!(e.position, *position, "{sql:?}: {e}");
        assert!(e.message.contains(text), "{sql:?}: {e}");
    }
}

#[test]
fn given_deep_nesting_when_parsed_should_be_refused_not_overflow() {
    let ok = format!("{}a = 1{}", "(".repeat(50), ")".repeat(50));
    assert!(parse(&ok).is_ok());
    for deep in [
        format!("{}a = 1{}", "(".repeat(5000), ")".repeat(5000)),
        format!("{}TRUE", "NOT ".repeat(5000)),
        format!("a = {}1", "- ".repeat(5000)),
        format!("a{}", " = a".repeat(5000)),
        "(".repeat(100_000),
    ] {
        let e = parse(&deep).unwrap_err();
        assert!(e.message.contains("nests deeper than 100 levels"), "{e}");
    }
    // Long flat AND / OR chains are not deep.
    let chain = vec!["a = 1"; 3000].join(" OR ");
    assert!(parse(&chain).is_ok());
}

#[test]
fn given_parsed_expressions_when_printed_should_read_back_identically() {
    for sql in [
        "a = 1 AND b = 2 AND (c = 3 OR d = 4)",
        "(a = 1 AND b = 2) AND c = 3",
        "NOT a = 'x'",
        "NOT (a = 'x')",
        "a NOT BETWEEN -1 AND 2.5 OR b IN ('x', 'it''s') OR c IS NOT NULL",
        "x CONTAINS 'a' AND y NOT STARTSWITH 'b' AND z ENDSWITH ''",
        "- - a = 1",
        "a = b = c",
        "TAGS IN ('a', 'b') AND price >= 1.5E-7",
    ] {
        let e = parse(sql).unwrap();
        let printed = e.to_string();
        assert_eq!(parse(&printed).unwrap(), e, "{sql} -> {printed}");
    }
    assert_eq!(
        parse("a = 1 and not (b IN ('x'))").unwrap().to_string(),
        "((a = 1) AND NOT (b IN ('x')))"
    );
    assert_eq!(parse("- - a = -1").unwrap().to_string(), "(- -a = -1)");
}

// ---------------------------------------------------------------------------- property tests

const KEYWORDS: [&str; 12] = [
    "NOT",
    "AND",
    "OR",
    "BETWEEN",
    "IN",
    "TRUE",
    "FALSE",
    "NULL",
    "IS",
    "CONTAINS",
    "STARTSWITH",
    "ENDSWITH",
];

fn property_name() -> impl Strategy<Value = String> {
    "[a-zA-Z_$][a-zA-Z0-9_$]{0,6}".prop_filter("not a keyword", |s| {
        !KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(s))
    })
}

fn number() -> impl Strategy<Value = Expr> {
    prop_oneof![
        (0..=i64::MAX).prop_map(|i| Expr::Literal(Literal::Int(i))),
        (0.0..1e300f64).prop_map(|f| Expr::Literal(Literal::Float(f))),
    ]
}

/// Operands of `<`, `>`, BETWEEN: numbers, properties and negations of those.
fn orderable() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![number(), property_name().prop_map(Expr::Property)];
    leaf.prop_recursive(2, 4, 1, |inner| inner.prop_map(|e| Expr::Neg(Box::new(e))))
}

/// Non-boolean values: orderable ones plus strings.
fn value() -> impl Strategy<Value = Expr> {
    prop_oneof![
        3 => orderable(),
        1 => ".{0,8}".prop_map(|s| Expr::Literal(Literal::Str(s))),
    ]
}

fn condition() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        (value(), value(), any::<bool>()).prop_map(|(l, r, ne)| Expr::Compare {
            op: if ne { CmpOp::Ne } else { CmpOp::Eq },
            left: Box::new(l),
            right: Box::new(r),
        }),
        (orderable(), orderable(), 0..4u8).prop_map(|(l, r, op)| Expr::Compare {
            op: [CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge][usize::from(op)],
            left: Box::new(l),
            right: Box::new(r),
        }),
        (orderable(), orderable(), orderable(), any::<bool>()).prop_map(|(e, lo, hi, n)| {
            let (lo, hi) = match (&lo, &hi) {
                (Expr::Literal(a), Expr::Literal(b))
                    if literal_order(a, b) == Some(Ordering::Greater) =>
                {
                    (hi, lo)
                }
                _ => (lo, hi),
            };
            Expr::Between {
                expr: Box::new(e),
                low: Box::new(lo),
                high: Box::new(hi),
                negated: n,
            }
        }),
        (
            property_name(),
            prop::collection::vec(".{0,5}", 1..4),
            any::<bool>()
        )
            .prop_map(|(property, list, negated)| Expr::In {
                property,
                list,
                negated,
            }),
        (value(), ".{0,5}", 0..3u8, any::<bool>()).prop_map(|(e, p, op, n)| Expr::Text {
            op: [TextOp::Contains, TextOp::StartsWith, TextOp::EndsWith][usize::from(op)],
            expr: Box::new(e),
            pattern: p,
            negated: n,
        }),
        (value(), any::<bool>()).prop_map(|(e, n)| Expr::IsNull {
            expr: Box::new(e),
            negated: n,
        }),
        any::<bool>().prop_map(|b| Expr::Literal(Literal::Bool(b))),
        Just(Expr::Literal(Literal::Null)),
        property_name().prop_map(Expr::Property),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            inner.clone().prop_map(|e| Expr::IsNull {
                expr: Box::new(e),
                negated: false
            }),
            (inner.clone(), inner).prop_map(|(l, r)| Expr::Compare {
                op: CmpOp::Eq,
                left: Box::new(l),
                right: Box::new(r),
            }),
        ]
    })
}

/// Whether a generated tree is one RocketMQ accepts (the generator is mostly but not exactly
/// typed: e.g. `TRUE = 'x'` is refused).
fn acceptable(e: &Expr) -> bool {
    match e {
        Expr::Compare {
            op: CmpOp::Eq | CmpOp::Ne,
            left,
            right,
        } => {
            let null = |x: &Expr| matches!(x, Expr::Literal(Literal::Null));
            let bool_vs_other = matches!(
                (&**left, &**right),
                (Expr::Literal(Literal::Bool(_)), Expr::Literal(r))
                    if !matches!(r, Literal::Bool(_))
            );
            !null(left) && !null(right) && !bool_vs_other && acceptable(left) && acceptable(right)
        }
        Expr::Compare { left, right, .. } => acceptable(left) && acceptable(right),
        Expr::And(v) | Expr::Or(v) => v.iter().all(acceptable),
        Expr::Not(x) | Expr::Neg(x) | Expr::IsNull { expr: x, .. } | Expr::Text { expr: x, .. } => {
            acceptable(x)
        }
        Expr::Between {
            expr, low, high, ..
        } => acceptable(expr) && acceptable(low) && acceptable(high),
        Expr::Literal(_) | Expr::Property(_) | Expr::In { .. } => true,
    }
}

fn property_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        property_name(),
        prop_oneof![
            "-?[0-9]{1,4}",
            "-?[0-9]{1,3}\\.[0-9]{1,2}",
            ".{0,6}",
            "(?i)true|false"
        ],
        0..6,
    )
}

/// Fragments that make token soup closer to real expressions than random text.
fn soup() -> impl Strategy<Value = String> {
    let frag = prop_oneof![
        Just("a".to_owned()),
        Just("TAGS".to_owned()),
        Just("'x'".to_owned()),
        Just("'".to_owned()),
        Just("1".to_owned()),
        Just("2.5e3".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just(",".to_owned()),
        Just("-".to_owned()),
        Just("--".to_owned()),
        Just("/*".to_owned()),
        Just("*/".to_owned()),
        Just("\n".to_owned()),
        prop::sample::select(&["=", "<>", "<", "<=", ">", ">=", "+"][..]).prop_map(str::to_owned),
        prop::sample::select(&KEYWORDS[..]).prop_map(str::to_owned),
        ".{0,2}",
    ];
    prop::collection::vec(frag, 0..24).prop_map(|v| v.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn prop_printed_expressions_parse_back_to_the_same_tree(e in condition()) {
        prop_assume!(acceptable(&e));
        let printed = e.to_string();
        let back = parse(&printed);
        prop_assert_eq!(back.as_ref(), Ok(&e), "printed: {}", printed);
    }

    #[test]
    fn prop_arbitrary_text_never_panics(s in "\\PC{0,64}") {
        let _ = parse(&s);
    }

    #[test]
    fn prop_token_soup_never_panics_and_round_trips_when_valid(
        s in soup(),
        p in property_map(),
    ) {
        if let Ok(e) = parse(&s) {
            let _ = e.evaluate(&p);
            let printed = e.to_string();
            prop_assert_eq!(parse(&printed), Ok(e), "from {:?} printed {}", s, printed);
        }
    }

    #[test]
    fn prop_evaluation_never_panics_and_not_inverts_known_results(
        e in condition(),
        p in property_map(),
    ) {
        prop_assume!(acceptable(&e));
        let r = e.evaluate(&p);
        let not = Expr::Not(Box::new(e)).evaluate(&p);
        match r {
            Ok(v) => prop_assert_eq!(not, Ok(v.map(|b| !b))),
            Err(_) => prop_assert!(not.is_err()),
        }
    }
}
