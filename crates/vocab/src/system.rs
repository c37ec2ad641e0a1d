//! RocketMQ's system topics and groups, and the per-group retry and dead-letter topics.
//!
//! - System topics (RocketMQ `TopicValidator.isSystemTopic`): the names in [`SYSTEM_TOPICS`]
//!   and every name starting with [`SYSTEM_TOPIC_PREFIX`] `rmq_sys_`, in any letter case
//!   (Comet is stricter than upstream's case-sensitive prefix check). Brokers write the
//!   transaction and timer topics; nobody creates or publishes to any of them.
//! - System groups (RocketMQ `MixAll`): the names in [`SYSTEM_GROUPS`] and every name starting
//!   with [`SYSTEM_GROUP_PREFIX`] `CID_RMQ_SYS_`.
//! - Group topics: `%RETRY%<group>` and `%DLQ%<group>`, where `<group>` is the *qualified*
//!   group; in a namespace the prefix stays in front (`%DLQ%<ns>%<group>`, see
//!   [`crate::namespace::qualify`]).
//! - Implicit topics ([`is_implicit_topic`]): `%DLQ%<group>` and
//!   [`TRANS_CHECK_MAX_TIME_TOPIC`] exist without metadata, as one readable queue (queue 0)
//!   on every broker set; clients may read them (any group), never write them.

/// Prefix of the retry topic of a group (RocketMQ `MixAll.RETRY_GROUP_TOPIC_PREFIX`).
pub const RETRY_PREFIX: &str = "%RETRY%";
/// Prefix of the dead-letter topic of a group (RocketMQ `MixAll.DLQ_GROUP_TOPIC_PREFIX`).
pub const DLQ_PREFIX: &str = "%DLQ%";
/// The per-group topic prefixes, which keep their place in front of a namespace.
pub const GROUP_TOPIC_PREFIXES: [&str; 2] = [DLQ_PREFIX, RETRY_PREFIX];

/// Prefix of system topics (RocketMQ `TopicValidator.SYSTEM_TOPIC_PREFIX`), in any case.
pub const SYSTEM_TOPIC_PREFIX: &str = "rmq_sys_";
/// Topic of the half (prepared) messages of transactions.
pub const TRANS_HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
/// Topic of the op records that resolve half messages.
pub const TRANS_OP_HALF_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
/// Where brokers keep the half messages of transactions discarded after their maximum
/// number of checks; readable like a dead-letter topic.
pub const TRANS_CHECK_MAX_TIME_TOPIC: &str = "TRANS_CHECK_MAX_TIME_TOPIC";
/// Topic of the timer wheel's schedule and done records (RocketMQ `TimerMessageStore`).
pub const TIMER_TOPIC: &str = "rmq_sys_wheel_timer";
/// RocketMQ 4's delay-level topic.
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";
/// The message-trace topic.
pub const TRACE_TOPIC: &str = "RMQ_SYS_TRACE_TOPIC";
/// The auto-create template topic.
pub const AUTO_CREATE_TOPIC: &str = "TBW102";

/// RocketMQ's built-in system topics (`TopicValidator.SYSTEM_TOPIC_SET`).
pub const SYSTEM_TOPICS: &[&str] = &[
    AUTO_CREATE_TOPIC,
    SCHEDULE_TOPIC,
    "BenchmarkTest",
    TRANS_HALF_TOPIC,
    TRACE_TOPIC,
    TRANS_OP_HALF_TOPIC,
    TRANS_CHECK_MAX_TIME_TOPIC,
    "SELF_TEST_TOPIC",
    "OFFSET_MOVED_EVENT",
];

/// Prefix of system consumer groups (RocketMQ `MixAll.CID_RMQ_SYS_PREFIX`).
pub const SYSTEM_GROUP_PREFIX: &str = "CID_RMQ_SYS_";
/// RocketMQ's built-in groups (`MixAll`).
pub const SYSTEM_GROUPS: &[&str] = &[
    "TOOLS_CONSUMER",
    "FILTERSRV_CONSUMER",
    "__MONITOR_CONSUMER",
    "CLIENT_INNER_PRODUCER",
    "SELF_TEST_P_GROUP",
    "SELF_TEST_C_GROUP",
];

/// Whether `name` (without namespace) is a RocketMQ system topic.
pub fn is_system_topic(name: &str) -> bool {
    let prefix = SYSTEM_TOPIC_PREFIX.len();
    name.get(..prefix)
        .is_some_and(|p| p.eq_ignore_ascii_case(SYSTEM_TOPIC_PREFIX))
        || SYSTEM_TOPICS.contains(&name)
}

/// Whether `name` (without namespace) is a RocketMQ system group.
pub fn is_system_group(name: &str) -> bool {
    name.starts_with(SYSTEM_GROUP_PREFIX) || SYSTEM_GROUPS.contains(&name)
}

/// Whether `name` starts with a retry or dead-letter prefix.
pub fn is_group_topic(name: &str) -> bool {
    GROUP_TOPIC_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The dead-letter topic of a (qualified) group: `%DLQ%<group>`.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_PREFIX}{group}")
}

/// The retry topic of a (qualified) group: `%RETRY%<group>`.
pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_PREFIX}{group}")
}

/// The group whose dead-letter topic `topic` is; `None` for other topics and for a bare
/// `%DLQ%`.
pub fn dlq_group(topic: &str) -> Option<&str> {
    topic.strip_prefix(DLQ_PREFIX).filter(|g| !g.is_empty())
}

/// The group whose retry topic `topic` is; `None` for other topics and for a bare `%RETRY%`.
pub fn retry_group(topic: &str) -> Option<&str> {
    topic.strip_prefix(RETRY_PREFIX).filter(|g| !g.is_empty())
}

/// Whether the (qualified) topic exists on every broker set without metadata: a group's
/// dead-letter topic or [`TRANS_CHECK_MAX_TIME_TOPIC`] (one readable queue each).
pub fn is_implicit_topic(topic: &str) -> bool {
    topic == TRANS_CHECK_MAX_TIME_TOPIC || dlq_group(topic).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_topics_are_the_builtin_set_and_the_prefix_in_any_case() {
        for name in [
            "TBW102",
            "SCHEDULE_TOPIC_XXXX",
            "RMQ_SYS_TRANS_HALF_TOPIC",
            "RMQ_SYS_TRANS_OP_HALF_TOPIC",
            "TRANS_CHECK_MAX_TIME_TOPIC",
            "rmq_sys_wheel_timer",
            "rmq_sys_",
            "Rmq_Sys_anything",
        ] {
            assert!(is_system_topic(name), "{name}");
        }
        for name in ["", "orders", "rmq_sy", "my_rmq_sys_x", "tbw102", "%DLQ%g"] {
            assert!(!is_system_topic(name), "{name}");
        }
        // Not a char boundary at the prefix length: no panic, not a system topic.
        assert!(!is_system_topic("rmq_sys\u{e9}x"));
    }

    #[test]
    fn system_groups_are_the_builtin_set_and_the_prefix() {
        assert!(is_system_group("CID_RMQ_SYS_X"));
        assert!(is_system_group("TOOLS_CONSUMER"));
        assert!(!is_system_group("cid_rmq_sys_x"));
        assert!(!is_system_group("consumers"));
    }

    #[test]
    fn group_topics_round_trip() {
        assert_eq!(dlq_topic("g"), "%DLQ%g");
        assert_eq!(retry_topic("g"), "%RETRY%g");
        assert_eq!(dlq_topic("ns%g"), "%DLQ%ns%g");
        assert_eq!(dlq_group("%DLQ%ns%g"), Some("ns%g"));
        assert_eq!(retry_group(&retry_topic("g")), Some("g"));
        assert_eq!(dlq_group("%DLQ%"), None);
        assert_eq!(dlq_group("%RETRY%g"), None);
        assert_eq!(retry_group("%DLQ%g"), None);
        assert!(is_group_topic("%DLQ%g") && is_group_topic("%RETRY%g"));
        assert!(!is_group_topic("DLQ%g"));
    }

    #[test]
    fn implicit_topics_are_dead_letters_and_the_discard_topic() {
        assert!(is_implicit_topic("%DLQ%g"));
        assert!(is_implicit_topic("%DLQ%ns%g"));
        assert!(is_implicit_topic(TRANS_CHECK_MAX_TIME_TOPIC));
        assert!(!is_implicit_topic("%DLQ%"));
        assert!(!is_implicit_topic("TRANS_CHECK_MAX_TIME_TOPICX"));
        assert!(!is_implicit_topic("%RETRY%g"));
        assert!(!is_implicit_topic("orders"));
    }
}
