//! The crate's one error type: why a name, a duration or a time was refused.

use std::fmt;
use std::time::Duration;

/// The kind of a name, which fixes its length limit and its characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// A topic: 1..=127 bytes of `[%|a-zA-Z0-9_-]`.
    Topic,
    /// A consumer group: 1..=255 bytes of `[%|a-zA-Z0-9_-]`.
    Group,
    /// A namespace: 0..=64 bytes of `[a-zA-Z0-9_-]` (never `%`, the separator).
    Namespace,
    /// A broker set: 1..=127 bytes of `[a-zA-Z0-9_.-]` (never `~`, the handle separator).
    BrokerSet,
}

impl NameKind {
    /// The allowed characters, as messages show them.
    pub fn allowed(self) -> &'static str {
        match self {
            NameKind::Topic | NameKind::Group => "[%|a-zA-Z0-9_-]",
            NameKind::Namespace => "[a-zA-Z0-9_-]",
            NameKind::BrokerSet => "[a-zA-Z0-9_.-]",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            NameKind::Topic => "topics",
            NameKind::Group => "groups",
            NameKind::Namespace => "namespaces",
            NameKind::BrokerSet => "broker sets",
        }
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Topic => "topic name",
            NameKind::Group => "consumer group name",
            NameKind::Namespace => "namespace",
            NameKind::BrokerSet => "broker set name",
        })
    }
}

/// Why input was refused. The message is meant for a person; a caller picks the status code
/// from the variant (and from [`NameKind`] for names).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The name is empty or only whitespace.
    #[error("{kind} must not be empty")]
    Empty {
        /// What was named.
        kind: NameKind,
    },
    /// The name is longer than its kind allows.
    #[error("{kind} is too long: {len} bytes, at most {max}")]
    TooLong {
        /// What was named.
        kind: NameKind,
        /// Its length in bytes.
        len: usize,
        /// The limit of its kind.
        max: usize,
    },
    /// The name has a character outside its kind's set.
    #[error("{kind} {name:?} contains illegal characters; allowed are {}", kind.allowed())]
    IllegalCharacters {
        /// What was named.
        kind: NameKind,
        /// The refused name.
        name: String,
    },
    /// A qualified name is not `<name>` or `<namespace>%<name>` with both parts non-empty.
    #[error(
        "{kind} {name:?} is not <namespace>%<name>: '%' may appear once, between a non-empty \
         namespace and name (names such as %RETRY%... and %DLQ%... are reserved for internal \
         use)"
    )]
    NotQualified {
        /// What was named.
        kind: NameKind,
        /// The refused name.
        name: String,
    },
    /// The name (without namespace) is one of RocketMQ's system topics or groups.
    #[error("{kind} {name:?} is reserved for RocketMQ system {}", kind.plural())]
    Reserved {
        /// What was named.
        kind: NameKind,
        /// The refused name.
        name: String,
    },
    /// A client tried to publish to a system, retry or dead-letter topic.
    #[error("topic {name} is a system topic; clients cannot publish to it")]
    SystemTopic {
        /// The refused topic (as the client named it).
        name: String,
    },
    /// A receive asked for an invisible time outside the accepted range (or a malformed one).
    #[error(
        "invisible duration {seconds}s{nanos}ns is outside the allowed range [{min:?}, {max:?}]"
    )]
    InvisibleOutOfRange {
        /// Requested seconds.
        seconds: i64,
        /// Requested nanoseconds.
        nanos: i32,
        /// Shortest accepted.
        min: Duration,
        /// Longest accepted.
        max: Duration,
    },
    /// An invisible-time change asked for a negative, malformed or too long duration.
    #[error("invisible duration {seconds}s{nanos}ns is negative or above the maximum of {max:?}")]
    InvisibleAboveMax {
        /// Requested seconds.
        seconds: i64,
        /// Requested nanoseconds.
        nanos: i32,
        /// Longest accepted.
        max: Duration,
    },
    /// A delivery timestamp before the epoch or with nanoseconds out of range.
    #[error("delivery timestamp is not a valid point in time")]
    DeliveryTimeInvalid,
    /// A delivery time further in the future than the accepted delay.
    #[error(
        "delivery time is {ahead_secs}s in the future, more than the limit of {max_secs}s \
         ({} days)",
        max_secs / 86_400
    )]
    DeliveryTimeTooFar {
        /// How far ahead the requested time is, in whole seconds.
        ahead_secs: u64,
        /// The accepted delay, in whole seconds.
        max_secs: u64,
    },
    /// A message priority below zero.
    #[error("priority {priority} is negative; priorities are 0 or more (higher is first)")]
    NegativePriority {
        /// The refused priority.
        priority: i32,
    },
    /// A priority on a message that also carries what another message type needs.
    #[error("a PRIORITY message must not carry {what}; priority does not combine with it")]
    PriorityConflict {
        /// What the message also carries: "a message group", "a delivery timestamp" or "a
        /// lite topic".
        what: &'static str,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
