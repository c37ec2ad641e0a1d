//! Static validation of client input: turns `comet.v1` request messages into
//! records or explains, in a sentence meant for a person, why it cannot.
//!
//! These rules run at the gRPC boundary *before* a command is proposed, never
//! while applying the Raft log: a later release may tighten a rule, and
//! replaying an entry accepted under the old rule must still give the same
//! state on every node.
//!
//! # Names
//!
//! Topic, group and broker-set names follow `comet_vocab::names` (RocketMQ's
//! `TopicValidator` characters `[%|a-zA-Z0-9_-]`; at most 127 bytes for topics
//! and 255 for groups, the whole qualified name): a qualified name holds at most
//! one `%`, between a non-empty namespace and a non-empty name, which reserves
//! every name RocketMQ derives internally (`%RETRY%<group>`, `%DLQ%<group>`:
//! brokers manage them, so they are never created through this API); the bare
//! name is not a RocketMQ system topic or group (`comet_vocab::system`).
//! Broker-set names use `[a-zA-Z0-9_.-]`, 1..=127 bytes; broker addresses are
//! `host:port` with a non-zero port.
//!
//! # Numbers
//!
//! - `queue_count` is `1..=1024` per placement; a topic has `1..=64`
//!   placements, each on a distinct broker set.
//! - `Group.max_retries`: proto3 cannot tell "unset" from 0, so 0 means the
//!   RocketMQ default of 16; explicit values are `1..=64`.
//! - Retry-policy delays are non-negative and at most 24 h; an exponential
//!   backoff needs `0 < initial <= max` and a finite multiplier >= 1; a
//!   customized backoff lists 1..=64 delays. `max_attempts` is ignored
//!   (`max_retries` is authoritative).
//! - Topic attributes: at most 64, keys 1..=128 characters, values at most
//!   1024.

use std::collections::{BTreeMap, BTreeSet};

use comet_proto::apache::rocketmq::v2 as api;
use comet_proto::comet::v1 as pb;
use comet_vocab::limits::DEFAULT_MAX_RETRIES;
use comet_vocab::names;

use super::MetadataError;
use super::records::{
    DurationRecord, GroupRecord, PlacementRecord, RetryPolicyRecord, TopicRecord,
};

/// Longest broker address.
pub const BROKER_ADDRESS_MAX: usize = 255;
/// Queues per placement.
pub const QUEUE_COUNT_MAX: u32 = 1024;
/// Placements per topic.
pub const PLACEMENTS_MAX: usize = 64;
/// Largest explicit `max_retries`.
pub const MAX_RETRIES_MAX: u32 = 64;
/// Longest retry delay, in seconds.
pub const RETRY_DELAY_MAX_SECS: i64 = 24 * 3600;
/// Delays in a customized backoff.
pub const CUSTOMIZED_BACKOFF_MAX: usize = 64;
/// Attributes per topic.
pub const ATTRIBUTES_MAX: usize = 64;
/// Longest attribute key.
pub const ATTRIBUTE_KEY_MAX: usize = 128;
/// Longest attribute value.
pub const ATTRIBUTE_VALUE_MAX: usize = 1024;

fn invalid(msg: String) -> MetadataError {
    MetadataError::InvalidArgument(msg)
}

fn refused(e: comet_vocab::Error) -> MetadataError {
    invalid(e.to_string())
}

/// Validates a qualified topic name.
pub fn validate_topic_name(name: &str) -> Result<(), MetadataError> {
    names::validate_qualified_topic(name).map_err(refused)
}

/// Validates a qualified group name.
pub fn validate_group_name(name: &str) -> Result<(), MetadataError> {
    names::validate_qualified_group(name).map_err(refused)
}

/// Validates a broker-set name.
pub fn validate_broker_set_name(name: &str) -> Result<(), MetadataError> {
    names::validate_broker_set(name).map_err(refused)
}

/// Validates a `host:port` address (IPv6 hosts in brackets).
pub fn validate_address(address: &str) -> Result<(), MetadataError> {
    let bad = |why: &str| {
        invalid(format!(
            "broker address {address:?} is not host:port: {why}"
        ))
    };
    if address.is_empty() {
        return Err(bad("it is empty"));
    }
    if address.len() > BROKER_ADDRESS_MAX {
        return Err(bad(&format!("longer than {BROKER_ADDRESS_MAX} characters")));
    }
    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it contains whitespace"));
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(bad("the port is missing"));
    };
    if host.is_empty() || host == "[]" {
        return Err(bad("the host is empty"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad("an IPv6 host must be in brackets"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad("the port must be 1..=65535")),
    }
}

/// Validates a `CreateTopic`/`UpdateTopic` topic and normalises it into a record.
pub fn topic_record(topic: Option<pb::Topic>) -> Result<TopicRecord, MetadataError> {
    let Some(topic) = topic else {
        return Err(invalid("the request has no topic".to_owned()));
    };
    validate_topic_name(&topic.name)?;
    let name = &topic.name;
    match pb::TopicMessageType::try_from(topic.message_type) {
        Ok(pb::TopicMessageType::Unspecified) => {
            return Err(invalid(format!(
                "topic {name:?}: message_type must be NORMAL, FIFO, DELAY, TRANSACTION, MIXED, PRIORITY or LITE"
            )));
        }
        Ok(_) => {}
        Err(_) => {
            return Err(invalid(format!(
                "topic {name:?}: unknown message_type {}",
                topic.message_type
            )));
        }
    }
    let permission = match api::Permission::try_from(topic.permission) {
        Ok(api::Permission::Unspecified) => api::Permission::ReadWrite as i32,
        Ok(p) => p as i32,
        Err(_) => {
            return Err(invalid(format!(
                "topic {name:?}: unknown permission {}",
                topic.permission
            )));
        }
    };
    if topic.placements.is_empty() {
        return Err(invalid(format!(
            "topic {name:?} needs at least one placement (broker set and queue count)"
        )));
    }
    if topic.placements.len() > PLACEMENTS_MAX {
        return Err(invalid(format!(
            "topic {name:?} has {} placements; the limit is {PLACEMENTS_MAX}",
            topic.placements.len()
        )));
    }
    let mut seen = BTreeSet::new();
    let mut placements = Vec::with_capacity(topic.placements.len());
    for p in topic.placements {
        validate_broker_set_name(&p.broker_set)?;
        if !seen.insert(p.broker_set.clone()) {
            return Err(invalid(format!(
                "topic {name:?} places queues on broker set {:?} twice",
                p.broker_set
            )));
        }
        if p.queue_count == 0 || p.queue_count > QUEUE_COUNT_MAX {
            return Err(invalid(format!(
                "topic {name:?}: queue_count {} on broker set {:?} is out of range 1..={QUEUE_COUNT_MAX}",
                p.queue_count, p.broker_set
            )));
        }
        placements.push(PlacementRecord {
            broker_set: p.broker_set,
            queue_count: p.queue_count,
        });
    }
    if topic.attributes.len() > ATTRIBUTES_MAX {
        return Err(invalid(format!(
            "topic {name:?} has {} attributes; the limit is {ATTRIBUTES_MAX}",
            topic.attributes.len()
        )));
    }
    let mut attributes = BTreeMap::new();
    for (k, v) in topic.attributes {
        if k.is_empty() || k.chars().count() > ATTRIBUTE_KEY_MAX {
            return Err(invalid(format!(
                "topic {name:?}: attribute keys must be 1..={ATTRIBUTE_KEY_MAX} characters, got {k:?}"
            )));
        }
        if v.chars().count() > ATTRIBUTE_VALUE_MAX {
            return Err(invalid(format!(
                "topic {name:?}: the value of attribute {k:?} is longer than {ATTRIBUTE_VALUE_MAX} characters"
            )));
        }
        attributes.insert(k, v);
    }
    Ok(TopicRecord {
        name: topic.name,
        message_type: topic.message_type,
        placements,
        permission,
        attributes,
    })
}

fn duration_record(
    group: &str,
    what: &str,
    d: Option<prost_types::Duration>,
) -> Result<DurationRecord, MetadataError> {
    let Some(d) = d else {
        return Err(invalid(format!(
            "group {group:?}: retry_policy {what} is missing"
        )));
    };
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(invalid(format!(
            "group {group:?}: retry_policy {what} must be a non-negative duration (seconds >= 0, nanos 0..1e9)"
        )));
    }
    if d.seconds > RETRY_DELAY_MAX_SECS || (d.seconds == RETRY_DELAY_MAX_SECS && d.nanos > 0) {
        return Err(invalid(format!(
            "group {group:?}: retry_policy {what} exceeds the 24 h limit"
        )));
    }
    Ok(DurationRecord {
        seconds: d.seconds,
        nanos: d.nanos,
    })
}

fn retry_policy_record(
    group: &str,
    policy: api::RetryPolicy,
) -> Result<RetryPolicyRecord, MetadataError> {
    match policy.strategy {
        None => Err(invalid(format!(
            "group {group:?}: retry_policy must set exponential_backoff or customized_backoff \
             (omit retry_policy for the default backoff)"
        ))),
        Some(api::retry_policy::Strategy::ExponentialBackoff(e)) => {
            let initial = duration_record(group, "initial", e.initial)?;
            let max = duration_record(group, "max", e.max)?;
            if initial.seconds == 0 && initial.nanos == 0 {
                return Err(invalid(format!(
                    "group {group:?}: retry_policy initial backoff must be greater than zero"
                )));
            }
            if (max.seconds, max.nanos) < (initial.seconds, initial.nanos) {
                return Err(invalid(format!(
                    "group {group:?}: retry_policy max backoff is shorter than the initial backoff"
                )));
            }
            if !e.multiplier.is_finite() || e.multiplier < 1.0 {
                return Err(invalid(format!(
                    "group {group:?}: retry_policy multiplier must be a finite number >= 1, got {}",
                    e.multiplier
                )));
            }
            Ok(RetryPolicyRecord::Exponential {
                initial,
                max,
                multiplier: e.multiplier,
            })
        }
        Some(api::retry_policy::Strategy::CustomizedBackoff(c)) => {
            if c.next.is_empty() || c.next.len() > CUSTOMIZED_BACKOFF_MAX {
                return Err(invalid(format!(
                    "group {group:?}: a customized backoff lists 1..={CUSTOMIZED_BACKOFF_MAX} delays, got {}",
                    c.next.len()
                )));
            }
            let next = c
                .next
                .into_iter()
                .map(|d| duration_record(group, "delay", Some(d)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(RetryPolicyRecord::Customized { next })
        }
    }
}

/// Validates a `CreateGroup`/`UpdateGroup` group and normalises it (default
/// `max_retries`) into a record.
pub fn group_record(group: Option<pb::Group>) -> Result<GroupRecord, MetadataError> {
    let Some(group) = group else {
        return Err(invalid("the request has no group".to_owned()));
    };
    validate_group_name(&group.name)?;
    let max_retries = match group.max_retries {
        0 => DEFAULT_MAX_RETRIES,
        n if n <= MAX_RETRIES_MAX => n,
        n => {
            return Err(invalid(format!(
                "group {:?}: max_retries {n} is out of range 1..={MAX_RETRIES_MAX} (0 means the default, {DEFAULT_MAX_RETRIES})",
                group.name
            )));
        }
    };
    let retry_policy = group
        .retry_policy
        .map(|p| retry_policy_record(&group.name, p))
        .transpose()?;
    if let Some(p) = group.priority_percent.filter(|p| *p > 100) {
        return Err(invalid(format!(
            "group {:?}: priority_percent {p} is out of range 0..=100 (0 disables priority, 100 is strict)",
            group.name
        )));
    }
    Ok(GroupRecord {
        name: group.name,
        max_retries,
        retry_policy,
        fifo: group.fifo,
        priority_percent: group.priority_percent,
        broadcast: group.broadcast,
        broadcast_from_start: group.broadcast && group.broadcast_from_start,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;
    use comet_vocab::names::{GROUP_MAX_LEN as GROUP_NAME_MAX, TOPIC_MAX_LEN as TOPIC_NAME_MAX};

    fn topic(name: &str) -> pb::Topic {
        pb::Topic {
            name: name.to_owned(),
            message_type: pb::TopicMessageType::Normal as i32,
            placements: vec![pb::QueuePlacement {
                broker_set: "broker-a".to_owned(),
                queue_count: 8,
            }],
            permission: 0,
            attributes: Default::default(),
        }
    }

    fn dur(seconds: i64) -> prost_types::Duration {
        prost_types::Duration { seconds, nanos: 0 }
    }

    #[test]
    fn topic_names_follow_the_documented_rules() {
        let long_ok = "t".repeat(TOPIC_NAME_MAX);
        let too_long = "t".repeat(TOPIC_NAME_MAX + 1);
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
                validate_topic_name(name).is_ok(),
                *ok,
                "topic name {name:?}: {:?}",
                validate_topic_name(name)
            );
        }
    }

    #[test]
    fn group_names_allow_255_characters_and_reject_system_groups() {
        let long_ok = "g".repeat(GROUP_NAME_MAX);
        let too_long = "g".repeat(GROUP_NAME_MAX + 1);
        let cases: &[(&str, bool)] = &[
            ("consumers", true),
            ("ns%consumers", true),
            (&long_ok, true),
            (&too_long, false),
            ("CID_RMQ_SYS_X", false),
            ("TOOLS_CONSUMER", false),
            ("%RETRY%g", false),
            ("a/b", false),
        ];
        for (name, ok) in cases {
            assert_eq!(
                validate_group_name(name).is_ok(),
                *ok,
                "group name {name:?}"
            );
        }
    }

    #[test]
    fn addresses_need_host_and_nonzero_port() {
        let cases: &[(&str, bool)] = &[
            ("127.0.0.1:10911", true),
            ("broker-0.broker.svc:10911", true),
            ("[::1]:10911", true),
            ("", false),
            ("host", false),
            ("host:0", false),
            ("host:70000", false),
            (":10911", false),
            ("::1:10911", false),
            ("ho st:1", false),
        ];
        for (addr, ok) in cases {
            assert_eq!(validate_address(addr).is_ok(), *ok, "address {addr:?}");
        }
    }

    #[test]
    fn topic_validation_table() {
        type Mutate = fn(&mut pb::Topic);
        let cases: &[(&str, Mutate, Option<&str>)] = &[
            ("valid", |_| {}, None),
            (
                "unspecified type",
                |t| t.message_type = 0,
                Some("message_type must be"),
            ),
            (
                "unknown type",
                |t| t.message_type = 99,
                Some("unknown message_type"),
            ),
            (
                "unknown permission",
                |t| t.permission = 42,
                Some("unknown permission"),
            ),
            (
                "no placements",
                |t| t.placements.clear(),
                Some("at least one placement"),
            ),
            (
                "zero queues",
                |t| t.placements[0].queue_count = 0,
                Some("out of range 1..=1024"),
            ),
            (
                "too many queues",
                |t| t.placements[0].queue_count = 1025,
                Some("out of range 1..=1024"),
            ),
            ("max queues", |t| t.placements[0].queue_count = 1024, None),
            (
                "duplicate broker set",
                |t| {
                    let p = t.placements[0].clone();
                    t.placements.push(p);
                },
                Some("twice"),
            ),
            (
                "bad broker set name",
                |t| t.placements[0].broker_set = "a b".to_owned(),
                Some("broker set name"),
            ),
            (
                "empty attribute key",
                |t| {
                    t.attributes.insert(String::new(), "v".to_owned());
                },
                Some("attribute keys"),
            ),
        ];
        for (what, mutate, want) in cases {
            let mut t = topic("orders");
            mutate(&mut t);
            match (topic_record(Some(t)), want) {
                (Ok(_), None) => {}
                (Err(MetadataError::InvalidArgument(msg)), Some(want)) => {
                    assert!(
                        msg.contains(want),
                        "{what}: {msg:?} should contain {want:?}"
                    )
                }
                (got, want) => panic!("{what}: got {got:?}, want error containing {want:?}"),
            }
        }
    }

    #[test]
    fn unspecified_permission_is_normalised_to_read_write() {
        let rec = topic_record(Some(topic("orders"))).unwrap();
        assert_eq!(rec.permission, api::Permission::ReadWrite as i32);
        let mut t = topic("orders");
        t.permission = api::Permission::Read as i32;
        assert_eq!(
            topic_record(Some(t)).unwrap().permission,
            api::Permission::Read as i32
        );
        assert!(topic_record(None).is_err());
    }

    fn group(max_retries: u32, policy: Option<api::RetryPolicy>) -> Option<pb::Group> {
        Some(pb::Group {
            name: "g".to_owned(),
            max_retries,
            retry_policy: policy,
            fifo: false,
            priority_percent: None,
            ..Default::default()
        })
    }

    fn exp(initial: i64, max: i64, multiplier: f32) -> Option<api::RetryPolicy> {
        Some(api::RetryPolicy {
            max_attempts: 3,
            strategy: Some(api::retry_policy::Strategy::ExponentialBackoff(
                api::ExponentialBackoff {
                    initial: Some(dur(initial)),
                    max: Some(dur(max)),
                    multiplier,
                },
            )),
        })
    }

    fn custom(next: Vec<prost_types::Duration>) -> Option<api::RetryPolicy> {
        Some(api::RetryPolicy {
            max_attempts: 0,
            strategy: Some(api::retry_policy::Strategy::CustomizedBackoff(
                api::CustomizedBackoff { next },
            )),
        })
    }

    #[test]
    fn group_max_retries_zero_means_sixteen_and_explicit_values_are_bounded() {
        assert_eq!(group_record(group(0, None)).unwrap().max_retries, 16);
        assert_eq!(group_record(group(1, None)).unwrap().max_retries, 1);
        assert_eq!(group_record(group(64, None)).unwrap().max_retries, 64);
        assert!(group_record(group(65, None)).is_err());
        assert!(group_record(None).is_err());
    }

    #[test]
    fn group_priority_percent_is_kept_and_bounded() {
        let with = |p: Option<u32>| {
            let mut g = group(0, None);
            if let Some(g) = g.as_mut() {
                g.priority_percent = p;
            }
            group_record(g)
        };
        assert_eq!(with(None).unwrap().priority_percent, None);
        assert_eq!(with(Some(0)).unwrap().priority_percent, Some(0));
        assert_eq!(with(Some(100)).unwrap().priority_percent, Some(100));
        let e = with(Some(101)).unwrap_err().to_string();
        assert!(e.contains("priority_percent 101"), "{e}");
    }

    #[test]
    fn given_broadcast_attributes_when_stored_should_keep_start_only_for_broadcast_groups() {
        let with = |broadcast, broadcast_from_start| {
            let mut g = group(0, None);
            if let Some(g) = g.as_mut() {
                g.broadcast = broadcast;
                g.broadcast_from_start = broadcast_from_start;
            }
            let r = group_record(g).unwrap();
            (r.broadcast, r.broadcast_from_start)
        };
        assert_eq!(with(true, true), (true, true));
        assert_eq!(with(true, false), (true, false));
        assert_eq!(
            with(false, true),
            (false, false),
            "start means nothing without broadcast"
        );
        // Records written before broadcast existed read as clustering groups.
        let old: GroupRecord = serde_json::from_str(
            r#"{"name":"g","max_retries":16,"retry_policy":null,"fifo":true}"#,
        )
        .unwrap();
        assert!(old.fifo && !old.broadcast && !old.broadcast_from_start);
        assert!(pb::Group::from(&old).fifo && !pb::Group::from(&old).broadcast);
    }

    #[test]
    fn retry_policy_validation_table() {
        let cases: Vec<(&str, Option<api::RetryPolicy>, bool)> = vec![
            ("absent", None, true),
            ("exponential", exp(1, 60, 2.0), true),
            ("zero initial", exp(0, 60, 2.0), false),
            ("max < initial", exp(10, 5, 2.0), false),
            ("multiplier < 1", exp(1, 60, 0.5), false),
            ("nan multiplier", exp(1, 60, f32::NAN), false),
            ("over 24h", exp(1, 24 * 3600 + 1, 2.0), false),
            (
                "no strategy",
                Some(api::RetryPolicy {
                    max_attempts: 1,
                    strategy: None,
                }),
                false,
            ),
            ("customized", custom(vec![dur(1), dur(5), dur(10)]), true),
            ("customized empty", custom(vec![]), false),
            ("customized negative", custom(vec![dur(-1)]), false),
            (
                "customized too many",
                custom(vec![dur(1); CUSTOMIZED_BACKOFF_MAX + 1]),
                false,
            ),
        ];
        for (what, policy, ok) in cases {
            let got = group_record(group(0, policy));
            assert_eq!(got.is_ok(), ok, "{what}: {got:?}");
        }
    }
}
