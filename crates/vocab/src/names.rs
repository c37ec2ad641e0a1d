//! Names and their limits: one validation function per kind.
//!
//! Topic and group names follow RocketMQ's `TopicValidator` characters `[%|a-zA-Z0-9_-]`, at
//! most 127 bytes for a topic (`TOPIC_MAX_LENGTH`) and 255 for a group
//! (`Validators.CHARACTER_MAX_LENGTH`). Namespaces are at most 64 bytes of `[a-zA-Z0-9_-]`
//! and may be empty (no namespace). Broker-set names are 1..=127 bytes of `[a-zA-Z0-9_.-]`,
//! so they never contain the receipt-handle separator `~`.
//!
//! Every check runs in the same order (empty or blank, then length, then characters), so the
//! first violation is the one reported. Lengths are in bytes.
//!
//! Two levels:
//! - [`validate_topic`], [`validate_group`], [`validate_namespace`],
//!   [`validate_broker_set`]: the name as a client gives it (the proxy's checks; reading a
//!   dead-letter topic is allowed). [`validate_writable_topic`] adds the publish rule.
//! - [`validate_qualified_topic`], [`validate_qualified_group`]: a name as the controller
//!   stores it, `<name>` or `<namespace>%<name>`; the whole qualified name keeps the kind's
//!   limit, `%` appears at most once (which reserves every `%RETRY%`/`%DLQ%` name: brokers
//!   derive them) and the bare name is not a RocketMQ system name.

use crate::error::{Error, NameKind, Result};
use crate::{namespace, system};

/// Longest topic name, in bytes (RocketMQ `TopicValidator.TOPIC_MAX_LENGTH`).
pub const TOPIC_MAX_LEN: usize = 127;
/// Longest consumer group name, in bytes (RocketMQ `Validators.CHARACTER_MAX_LENGTH`).
pub const GROUP_MAX_LEN: usize = 255;
/// Longest namespace, in bytes.
pub const NAMESPACE_MAX_LEN: usize = 64;
/// Longest broker-set name, in bytes.
pub const BROKER_SET_MAX_LEN: usize = 127;

impl NameKind {
    /// The longest name of this kind, in bytes.
    pub fn max_len(self) -> usize {
        match self {
            NameKind::Topic => TOPIC_MAX_LEN,
            NameKind::Group => GROUP_MAX_LEN,
            NameKind::Namespace => NAMESPACE_MAX_LEN,
            NameKind::BrokerSet => BROKER_SET_MAX_LEN,
        }
    }

    /// Whether `b` may appear in a name of this kind.
    pub fn allows(self, b: u8) -> bool {
        b.is_ascii_alphanumeric()
            || match self {
                NameKind::Topic | NameKind::Group => matches!(b, b'%' | b'|' | b'_' | b'-'),
                NameKind::Namespace => matches!(b, b'_' | b'-'),
                NameKind::BrokerSet => matches!(b, b'_' | b'-' | b'.'),
            }
    }
}

/// Checks length and characters of a name of `kind`; `required` refuses empty or blank.
fn check(kind: NameKind, name: &str, required: bool) -> Result<()> {
    if required && name.trim().is_empty() {
        return Err(Error::Empty { kind });
    }
    let max = kind.max_len();
    if name.len() > max {
        return Err(Error::TooLong {
            kind,
            len: name.len(),
            max,
        });
    }
    if !name.bytes().all(|b| kind.allows(b)) {
        return Err(Error::IllegalCharacters {
            kind,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Validates a name of `kind` as a client gives it: [`validate_topic`], [`validate_group`],
/// [`validate_namespace`] or [`validate_broker_set`].
///
/// # Errors
/// [`Error::Empty`] (except for namespaces), [`Error::TooLong`] or
/// [`Error::IllegalCharacters`].
pub fn validate(kind: NameKind, name: &str) -> Result<()> {
    check(kind, name, kind != NameKind::Namespace)
}

/// Validates a topic name as a client gives it.
///
/// # Errors
/// [`Error::Empty`], [`Error::TooLong`] or [`Error::IllegalCharacters`].
pub fn validate_topic(name: &str) -> Result<()> {
    check(NameKind::Topic, name, true)
}

/// Validates a topic a client is about to publish to: [`validate_topic`], and not a system,
/// retry or dead-letter topic ([`system::is_system_topic`], [`system::is_group_topic`]).
///
/// # Errors
/// As [`validate_topic`], or [`Error::SystemTopic`].
pub fn validate_writable_topic(name: &str) -> Result<()> {
    validate_topic(name)?;
    if system::is_group_topic(name) || system::is_system_topic(name) {
        return Err(Error::SystemTopic {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Validates a consumer group name as a client gives it.
///
/// # Errors
/// [`Error::Empty`], [`Error::TooLong`] or [`Error::IllegalCharacters`].
pub fn validate_group(name: &str) -> Result<()> {
    check(NameKind::Group, name, true)
}

/// Validates a namespace; the empty namespace (none) is valid.
///
/// # Errors
/// [`Error::TooLong`] or [`Error::IllegalCharacters`].
pub fn validate_namespace(namespace: &str) -> Result<()> {
    check(NameKind::Namespace, namespace, false)
}

/// Validates a broker-set name.
///
/// # Errors
/// [`Error::Empty`], [`Error::TooLong`] or [`Error::IllegalCharacters`].
pub fn validate_broker_set(name: &str) -> Result<()> {
    check(NameKind::BrokerSet, name, true)
}

/// The structure rule of qualified names: at most one `%`, between non-empty parts.
fn check_qualified(kind: NameKind, qualified: &str) -> Result<()> {
    check(kind, qualified, true)?;
    let mut parts = qualified.split(namespace::SEPARATOR);
    let well_formed = match (parts.next(), parts.next(), parts.next()) {
        (Some(_), None, None) => true,
        (Some(ns), Some(bare), None) => !ns.is_empty() && !bare.is_empty(),
        _ => false,
    };
    if !well_formed {
        return Err(Error::NotQualified {
            kind,
            name: qualified.to_owned(),
        });
    }
    Ok(())
}

/// Validates a qualified topic name as the controller stores it (see the module doc).
///
/// # Errors
/// As [`validate_topic`], [`Error::NotQualified`] or [`Error::Reserved`].
pub fn validate_qualified_topic(qualified: &str) -> Result<()> {
    check_qualified(NameKind::Topic, qualified)?;
    if system::is_system_topic(namespace::bare_name(qualified)) {
        return Err(Error::Reserved {
            kind: NameKind::Topic,
            name: qualified.to_owned(),
        });
    }
    Ok(())
}

/// Validates a qualified consumer group name as the controller stores it (see the module
/// doc).
///
/// # Errors
/// As [`validate_group`], [`Error::NotQualified`] or [`Error::Reserved`].
pub fn validate_qualified_group(qualified: &str) -> Result<()> {
    check_qualified(NameKind::Group, qualified)?;
    if system::is_system_group(namespace::bare_name(qualified)) {
        return Err(Error::Reserved {
            kind: NameKind::Group,
            name: qualified.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_1_to_127_bytes_of_the_rocketmq_characters() {
        assert_eq!(validate_topic("Topic_1-a|b%c"), Ok(()));
        assert_eq!(validate_topic(&"t".repeat(127)), Ok(()));
        assert_eq!(
            validate_topic(&"t".repeat(128)).unwrap_err().to_string(),
            "topic name is too long: 128 bytes, at most 127"
        );
        for blank in ["", "  "] {
            assert_eq!(
                validate_topic(blank).unwrap_err().to_string(),
                "topic name must not be empty"
            );
        }
        assert_eq!(
            validate_topic("bad topic").unwrap_err().to_string(),
            "topic name \"bad topic\" contains illegal characters; allowed are [%|a-zA-Z0-9_-]"
        );
        for bad in ["a.b", "t\u{e9}", "a/b", "a~b"] {
            assert!(
                matches!(
                    validate_topic(bad),
                    Err(Error::IllegalCharacters {
                        kind: NameKind::Topic,
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn validate_dispatches_on_the_kind() {
        assert_eq!(validate(NameKind::Namespace, ""), Ok(()));
        assert!(validate(NameKind::Topic, "").is_err());
        assert_eq!(validate(NameKind::Group, &"g".repeat(255)), Ok(()));
        assert!(validate(NameKind::Topic, &"t".repeat(128)).is_err());
        assert_eq!(validate(NameKind::BrokerSet, "a.b"), Ok(()));
    }

    #[test]
    fn length_is_checked_before_characters() {
        let long_and_bad = " ".repeat(3) + &"\u{e9}".repeat(70);
        assert!(matches!(
            validate_topic(&long_and_bad),
            Err(Error::TooLong { len: 143, .. })
        ));
    }

    #[test]
    fn group_names_are_1_to_255_bytes() {
        assert_eq!(validate_group(&"g".repeat(255)), Ok(()));
        assert_eq!(
            validate_group(&"g".repeat(256)).unwrap_err().to_string(),
            "consumer group name is too long: 256 bytes, at most 255"
        );
        assert_eq!(
            validate_group("").unwrap_err().to_string(),
            "consumer group name must not be empty"
        );
        assert_eq!(
            validate_group("bad group").unwrap_err().to_string(),
            "consumer group name \"bad group\" contains illegal characters; allowed are \
             [%|a-zA-Z0-9_-]"
        );
    }

    #[test]
    fn namespaces_may_be_empty_and_never_hold_the_separator() {
        assert_eq!(validate_namespace(""), Ok(()));
        assert_eq!(validate_namespace("prod_eu-1"), Ok(()));
        assert_eq!(validate_namespace(&"n".repeat(64)), Ok(()));
        assert_eq!(
            validate_namespace(&"n".repeat(65)).unwrap_err().to_string(),
            "namespace is too long: 65 bytes, at most 64"
        );
        assert_eq!(
            validate_namespace("a%b").unwrap_err().to_string(),
            "namespace \"a%b\" contains illegal characters; allowed are [a-zA-Z0-9_-]"
        );
        assert!(validate_namespace("a|b").is_err());
    }

    #[test]
    fn broker_set_names_allow_dots_but_not_the_handle_separator() {
        assert_eq!(validate_broker_set("broker-a.zone_1"), Ok(()));
        assert_eq!(validate_broker_set(&"b".repeat(127)), Ok(()));
        assert!(validate_broker_set(&"b".repeat(128)).is_err());
        assert!(validate_broker_set("").is_err());
        for bad in ["a~b", "a b", "a%b", "a|b"] {
            assert!(
                matches!(
                    validate_broker_set(bad),
                    Err(Error::IllegalCharacters {
                        kind: NameKind::BrokerSet,
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn clients_cannot_publish_to_system_retry_or_dead_letter_topics() {
        assert_eq!(validate_writable_topic("orders"), Ok(()));
        for name in [
            "%DLQ%g",
            "%RETRY%g",
            "rmq_sys_x",
            "RMQ_SYS_TRANS_HALF_TOPIC",
            "Rmq_Sys_x",
            "TBW102",
            "TRANS_CHECK_MAX_TIME_TOPIC",
        ] {
            assert_eq!(
                validate_writable_topic(name),
                Err(Error::SystemTopic { name: name.into() }),
                "{name}"
            );
        }
        assert_eq!(
            validate_writable_topic("%RETRY%g").unwrap_err().to_string(),
            "topic %RETRY%g is a system topic; clients cannot publish to it"
        );
        assert!(matches!(
            validate_writable_topic("a b"),
            Err(Error::IllegalCharacters { .. })
        ));
    }

    #[test]
    fn qualified_topics_follow_the_controller_rules() {
        let long_ok = "t".repeat(TOPIC_MAX_LEN);
        let too_long = "t".repeat(TOPIC_MAX_LEN + 1);
        let cases: &[(&str, bool)] = &[
            ("orders", true),
            ("ns1%orders", true),
            ("a|b_c-D9", true),
            (&long_ok, true),
            ("", false),
            (&too_long, false),
            ("has space", false),
            ("dot.name", false),
            ("ünï", false),
            ("%RETRY%group", false),
            ("%DLQ%group", false),
            ("%DLQ%ns%group", false),
            ("ns%", false),
            ("%name", false),
            ("a%b%c", false),
            ("TBW102", false),
            ("ns%TBW102", false),
            ("rmq_sys_anything", false),
            ("RMQ_SYS_TRANS_HALF_TOPIC", false),
            ("SCHEDULE_TOPIC_XXXX", false),
        ];
        for (name, ok) in cases {
            assert_eq!(
                validate_qualified_topic(name).is_ok(),
                *ok,
                "{name:?}: {:?}",
                validate_qualified_topic(name)
            );
        }
        assert!(
            validate_qualified_topic("%RETRY%x")
                .unwrap_err()
                .to_string()
                .contains("reserved")
        );
        assert_eq!(
            validate_qualified_topic("ns%TBW102")
                .unwrap_err()
                .to_string(),
            "topic name \"ns%TBW102\" is reserved for RocketMQ system topics"
        );
    }

    #[test]
    fn qualified_groups_allow_255_bytes_and_reject_system_groups() {
        let cases: &[(&str, bool)] = &[
            ("consumers", true),
            ("ns%consumers", true),
            (&"g".repeat(GROUP_MAX_LEN), true),
            (&"g".repeat(GROUP_MAX_LEN + 1), false),
            ("CID_RMQ_SYS_X", false),
            ("ns%CID_RMQ_SYS_X", false),
            ("TOOLS_CONSUMER", false),
            ("%RETRY%g", false),
            ("a/b", false),
        ];
        for (name, ok) in cases {
            assert_eq!(
                validate_qualified_group(name).is_ok(),
                *ok,
                "{name:?}: {:?}",
                validate_qualified_group(name)
            );
        }
        assert_eq!(
            validate_qualified_group("TOOLS_CONSUMER")
                .unwrap_err()
                .to_string(),
            "consumer group name \"TOOLS_CONSUMER\" is reserved for RocketMQ system groups"
        );
    }
}
