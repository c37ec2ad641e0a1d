//! Message filters of receive and pull requests: [`Filter::Tag`] (`*` or `tagA || tagB`, with
//! the consume-queue tag-hash pre-filter) and [`Filter::Sql`] (RocketMQ's SQL92 expressions over
//! user properties and `TAGS`, see [`sql`]; no pre-filter, every message is read and evaluated).

pub mod sql;
mod tag;

use comet_proto::apache::rocketmq::v2::{FilterExpression, FilterType};
use comet_store::Properties;

pub use sql::{SqlError, TAGS};
pub use tag::TagFilter;

/// Longest filter expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 65536;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// A tag list (or everything).
    Tag(TagFilter),
    /// A SQL92 condition.
    Sql(sql::Expr),
}

/// Why a filter expression was refused (answered as ILLEGAL_FILTER_EXPRESSION).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The expression is longer than [`MAX_EXPRESSION_BYTES`].
    #[error("filter expression of {0} bytes exceeds the {MAX_EXPRESSION_BYTES}-byte limit")]
    TooLong(usize),
    /// The filter type is neither TAG nor SQL.
    #[error("unknown filter type {0}; use TAG or SQL")]
    UnknownType(i32),
    /// A SQL expression that does not parse (or that RocketMQ refuses).
    #[error("invalid SQL filter expression {expression:?} {error}")]
    Sql {
        /// The expression as given.
        expression: String,
        /// Where and why.
        error: SqlError,
    },
}

/// The properties a filter sees: the user properties plus `TAGS` (the tag).
struct MessageProperties<'a>(&'a Properties);

impl sql::PropertyLookup for MessageProperties<'_> {
    fn property(&self, name: &str) -> Option<&str> {
        if name == TAGS {
            self.0.tag.as_deref()
        } else {
            self.0.user.get(name).map(String::as_str)
        }
    }
}

impl Filter {
    /// Everything passes.
    pub const ALL: Filter = Filter::Tag(TagFilter::All);

    /// The filter of a receive or pull request (absent = everything; TAG when unspecified).
    ///
    /// # Errors
    /// [`FilterError`] for an unknown type, an oversized expression or invalid SQL.
    pub fn from_request(f: Option<&FilterExpression>) -> Result<Filter, FilterError> {
        let Some(f) = f else {
            return Ok(Filter::ALL);
        };
        if f.expression.len() > MAX_EXPRESSION_BYTES {
            return Err(FilterError::TooLong(f.expression.len()));
        }
        match FilterType::try_from(f.r#type) {
            Ok(FilterType::Unspecified | FilterType::Tag) => {
                Ok(Filter::Tag(TagFilter::parse(&f.expression)))
            }
            Ok(FilterType::Sql) => Self::sql(&f.expression),
            Err(_) => Err(FilterError::UnknownType(f.r#type)),
        }
    }

    /// Parses a SQL92 filter.
    ///
    /// # Errors
    /// [`FilterError::Sql`] with the position and what was expected.
    pub fn sql(expression: &str) -> Result<Filter, FilterError> {
        sql::parse(expression)
            .map(Filter::Sql)
            .map_err(|error| FilterError::Sql {
                expression: expression.to_owned(),
                error,
            })
    }

    /// Consume-queue pre-filter on the tag hash: may pass a message the exact match then
    /// rejects; never rejects a matching one. SQL filters pass everything here.
    pub fn matches_hash(&self, hash: i64) -> bool {
        match self {
            Filter::Tag(t) => t.matches_hash(hash),
            Filter::Sql(_) => true,
        }
    }

    /// The exact match on a stored message's properties.
    pub fn matches(&self, properties: &Properties) -> bool {
        match self {
            Filter::Tag(t) => t.matches(properties.tag.as_deref()),
            Filter::Sql(e) => e.matches(&MessageProperties(properties)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn props(tag: Option<&str>, user: &[(&str, &str)]) -> Properties {
        Properties {
            tag: tag.map(str::to_owned),
            user: user
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    fn expr(t: FilterType, e: &str) -> FilterExpression {
        FilterExpression {
            r#type: t as i32,
            expression: e.into(),
        }
    }

    #[test]
    fn given_tag_or_absent_filter_when_from_request_should_be_a_tag_filter() {
        assert_eq!(Filter::from_request(None), Ok(Filter::ALL));
        let f = Filter::from_request(Some(&expr(FilterType::Tag, "x||y"))).unwrap();
        assert!(f.matches(&props(Some("y"), &[])));
        assert!(!f.matches(&props(Some("z"), &[])));
        let f = Filter::from_request(Some(&expr(FilterType::Unspecified, ""))).unwrap();
        assert_eq!(f, Filter::ALL);
    }

    #[test]
    fn given_sql_filter_when_matched_should_read_user_properties_and_tags() {
        let f = Filter::from_request(Some(&expr(FilterType::Sql, "TAGS = 'red' AND price > 10")))
            .unwrap();
        assert!(f.matches(&props(Some("red"), &[("price", "11")])));
        assert!(!f.matches(&props(Some("red"), &[("price", "9")])));
        assert!(!f.matches(&props(Some("blue"), &[("price", "11")])));
        assert!(!f.matches(&props(None, &[("price", "11")])), "no tag");
        assert!(!f.matches(&props(Some("red"), &[])), "missing property");
        assert!(
            f.matches_hash(0) && f.matches_hash(42),
            "SQL has no tag-hash pre-filter"
        );
        // The tag wins over a user property named TAGS.
        let f = Filter::sql("TAGS = 'a'").unwrap();
        assert!(!f.matches(&props(Some("b"), &[("TAGS", "a")])));
    }

    #[test]
    fn given_bad_filters_when_from_request_should_say_why() {
        let e = Filter::from_request(Some(&expr(FilterType::Sql, "a >"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid SQL filter expression \"a >\" at position 4: the expression ends too \
             early: expected a property name, a literal ('text', 12, 1.5, TRUE, FALSE, \
             NULL) or '('"
        );
        let bad = FilterExpression {
            r#type: 9,
            expression: "a".into(),
        };
        assert_eq!(
            Filter::from_request(Some(&bad)),
            Err(FilterError::UnknownType(9))
        );
        let long = expr(FilterType::Tag, &"a".repeat(MAX_EXPRESSION_BYTES + 1));
        assert_eq!(
            Filter::from_request(Some(&long)),
            Err(FilterError::TooLong(MAX_EXPRESSION_BYTES + 1))
        );
    }
}
