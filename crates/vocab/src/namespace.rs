//! Namespace qualification.
//!
//! A resource in namespace `ns` is stored under `"<ns>%<name>"` (metadata.proto); without a
//! namespace the qualified name is the plain name. Namespaces never contain `%`
//! ([`crate::names::validate_namespace`]), so the prefix `"<ns>%"` is unambiguous and
//! [`unqualify`] strips it back off.
//!
//! The per-group topics keep their prefix in front of the namespace (RocketMQ's
//! `NamespaceUtil`): the dead-letter topic of group `g` in namespace `ns` is `%DLQ%ns%g`,
//! which is `%DLQ%` followed by the qualified group.

use crate::system::GROUP_TOPIC_PREFIXES;

/// Separates a namespace from a name.
pub const SEPARATOR: char = '%';

/// `"<ns>%<name>"`, or `name` when `namespace` is empty; `%DLQ%<name>` (and `%RETRY%<name>`)
/// in a namespace becomes `%DLQ%<ns>%<name>`.
pub fn qualify(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        return name.to_owned();
    }
    for prefix in GROUP_TOPIC_PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix) {
            return format!("{prefix}{namespace}{SEPARATOR}{rest}");
        }
    }
    format!("{namespace}{SEPARATOR}{name}")
}

/// Strips the namespace off a qualified name (the inverse of [`qualify`]); names of other
/// namespaces are returned whole.
pub fn unqualify(namespace: &str, qualified: &str) -> String {
    if namespace.is_empty() {
        return qualified.to_owned();
    }
    for prefix in GROUP_TOPIC_PREFIXES {
        if let Some(rest) = qualified
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix(namespace))
            .and_then(|r| r.strip_prefix(SEPARATOR))
        {
            return format!("{prefix}{rest}");
        }
    }
    qualified
        .strip_prefix(namespace)
        .and_then(|rest| rest.strip_prefix(SEPARATOR))
        .unwrap_or(qualified)
        .to_owned()
}

/// The name without its namespace: what follows the last `%` (the whole name without one).
pub fn bare_name(qualified: &str) -> &str {
    qualified
        .rsplit_once(SEPARATOR)
        .map_or(qualified, |(_, bare)| bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualification_round_trips() {
        assert_eq!(qualify("", "t"), "t");
        assert_eq!(qualify("ns", "t"), "ns%t");
        assert_eq!(unqualify("ns", "ns%t"), "t");
        assert_eq!(unqualify("ns", "other%t"), "other%t");
        assert_eq!(unqualify("ns", "nsx%t"), "nsx%t");
        assert_eq!(unqualify("", "ns%t"), "ns%t");
    }

    #[test]
    fn group_topics_keep_their_prefix_in_front_of_the_namespace() {
        assert_eq!(qualify("ns", "%DLQ%g"), "%DLQ%ns%g");
        assert_eq!(qualify("ns", "%RETRY%g"), "%RETRY%ns%g");
        assert_eq!(unqualify("ns", "%DLQ%ns%g"), "%DLQ%g");
        assert_eq!(unqualify("ns", "%RETRY%ns%g"), "%RETRY%g");
        assert_eq!(unqualify("ns", "%DLQ%other%g"), "%DLQ%other%g");
        assert_eq!(qualify("", "%DLQ%g"), "%DLQ%g");
        assert_eq!(unqualify("", "%DLQ%g"), "%DLQ%g");
    }

    #[test]
    fn bare_name_drops_the_namespace() {
        assert_eq!(bare_name("orders"), "orders");
        assert_eq!(bare_name("ns%orders"), "orders");
        assert_eq!(bare_name("%DLQ%ns%g"), "g");
        assert_eq!(bare_name("ns%"), "");
        assert_eq!(bare_name(""), "");
    }
}
