//! The broker-set prefix of receipt handles and transaction ids: `"<broker_set>~<opaque>"`.
//!
//! The broker that issues a handle or id puts its broker set in front, so a proxy can route
//! an ack, an invisible-time change or an `EndTransaction` to the set that holds the message
//! without understanding the opaque part (which only the issuing broker decodes). Broker-set
//! names never contain [`SEPARATOR`] ([`crate::names::validate_broker_set`]), so the first
//! `~` ends the prefix.

/// Ends the broker-set prefix.
pub const SEPARATOR: char = '~';

/// A string holding `"<broker_set>~"`, with room for `opaque_len` more bytes, to which the
/// issuer appends the opaque part.
pub fn prefix(broker_set: &str, opaque_len: usize) -> String {
    let mut s = String::with_capacity(broker_set.len() + 1 + opaque_len);
    s.push_str(broker_set);
    s.push(SEPARATOR);
    s
}

/// `"<broker_set>~<opaque>"`.
pub fn join(broker_set: &str, opaque: &str) -> String {
    let mut s = prefix(broker_set, opaque.len());
    s.push_str(opaque);
    s
}

/// The broker-set prefix and the opaque rest; `None` without a separator. The prefix may be
/// empty: callers that route use [`broker_set`].
pub fn split(handle: &str) -> Option<(&str, &str)> {
    handle.split_once(SEPARATOR)
}

/// The broker set that issued `handle`; `None` when it names none (no separator, or an empty
/// prefix).
pub fn broker_set(handle: &str) -> Option<&str> {
    split(handle).map(|(set, _)| set).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_and_split_round_trip() {
        let h = join("broker-a", "AQID");
        assert_eq!(h, "broker-a~AQID");
        assert_eq!(split(&h), Some(("broker-a", "AQID")));
        assert_eq!(broker_set(&h), Some("broker-a"));
        let mut p = prefix("b", 4);
        p.push_str("xyz");
        assert_eq!(p, "b~xyz");
    }

    #[test]
    fn the_first_separator_ends_the_prefix() {
        assert_eq!(split("a~b~c"), Some(("a", "b~c")));
        assert_eq!(split("a~"), Some(("a", "")));
    }

    #[test]
    fn a_handle_without_a_broker_set_names_none() {
        assert_eq!(split("no-separator"), None);
        assert_eq!(broker_set("no-separator"), None);
        assert_eq!(broker_set("~opaque"), None);
        assert_eq!(split("~opaque"), Some(("", "opaque")));
        assert_eq!(broker_set(""), None);
    }
}
