//! Tag filter expressions: `*` (everything) or `tagA || tagB` (whitespace around tags ignored).

use std::collections::HashSet;

use comet_store::tag_hash;

/// A parsed TAG filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagFilter {
    /// Every message, tagged or not.
    All,
    /// Messages whose tag is one of these.
    Tags {
        /// The tags, trimmed and de-duplicated.
        tags: HashSet<String>,
        /// Their consume-queue hashes, for the pre-filter.
        hashes: HashSet<i64>,
    },
}

impl TagFilter {
    /// Parses a TAG expression as RocketMQ does: empty or `*` means everything; otherwise tags
    /// separated by `||`, each trimmed, empty ones ignored. A `*` among the tags also means
    /// everything.
    pub fn parse(expr: &str) -> TagFilter {
        let expr = expr.trim();
        if expr.is_empty() || expr == "*" {
            return TagFilter::All;
        }
        let mut tags = HashSet::new();
        for t in expr.split("||").map(str::trim).filter(|t| !t.is_empty()) {
            if t == "*" {
                return TagFilter::All;
            }
            tags.insert(t.to_owned());
        }
        if tags.is_empty() {
            return TagFilter::All;
        }
        let hashes = tags.iter().map(|t| tag_hash(Some(t))).collect();
        TagFilter::Tags { tags, hashes }
    }

    /// Consume-queue pre-filter on the tag hash (may pass a colliding tag; never rejects a
    /// matching one).
    pub fn matches_hash(&self, hash: i64) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Tags { hashes, .. } => hashes.contains(&hash),
        }
    }

    /// Exact match on the message's tag.
    pub fn matches(&self, tag: Option<&str>) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Tags { tags, .. } => tag.is_some_and(|t| tags.contains(t)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn given_star_or_empty_when_parsed_should_match_everything() {
        for e in ["*", " * ", "", "  ", "a || *", "||"] {
            assert_eq!(TagFilter::parse(e), TagFilter::All, "{e:?}");
        }
        assert!(TagFilter::All.matches(None));
        assert!(TagFilter::All.matches_hash(0));
    }

    #[test]
    fn given_tag_list_when_parsed_should_trim_and_match_exactly() {
        let f = TagFilter::parse(" a ||b|| c  ||");
        assert!(f.matches(Some("a")));
        assert!(f.matches(Some("b")));
        assert!(f.matches(Some("c")));
        assert!(!f.matches(Some("d")));
        assert!(!f.matches(Some(" a")));
        assert!(!f.matches(None));
        assert!(f.matches_hash(tag_hash(Some("c"))));
        assert!(!f.matches_hash(tag_hash(Some("d"))));
        assert!(
            !f.matches_hash(0),
            "untagged messages never pass a tag list"
        );
    }
}
