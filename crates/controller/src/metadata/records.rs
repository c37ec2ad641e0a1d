//! The durable form of the metadata: serde records persisted in Raft log
//! entries and snapshots, and their conversion to the `comet.v1` protobuf
//! messages served to brokers and proxies.
//!
//! The records are deliberately separate from the prost types: their JSON
//! form is the on-disk format and must stay readable by later releases, while
//! the protobuf types may evolve independently.

use std::collections::BTreeMap;

use comet_proto::apache::rocketmq::v2 as api;
use comet_proto::comet::v1 as pb;
use serde::{Deserialize, Serialize};

/// A topic's queues on one broker set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementRecord {
    /// Broker-set name.
    pub broker_set: String,
    /// Queue ids `0..queue_count` on that broker set.
    pub queue_count: u32,
}

/// A topic (see `comet.v1.Topic`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Qualified name.
    pub name: String,
    /// `comet.v1.TopicMessageType` value, never UNSPECIFIED.
    pub message_type: i32,
    /// At least one placement, broker sets unique.
    pub placements: Vec<PlacementRecord>,
    /// `apache.rocketmq.v2.Permission` value, never UNSPECIFIED (normalised to READ_WRITE).
    pub permission: i32,
    /// Free-form attributes.
    pub attributes: BTreeMap<String, String>,
}

/// A protobuf `google.protobuf.Duration`, kept as its two fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurationRecord {
    /// Whole seconds, >= 0.
    pub seconds: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nanos: i32,
}

/// A group's redelivery backoff (see `apache.rocketmq.v2.RetryPolicy`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RetryPolicyRecord {
    /// Delay grows from `initial` by `multiplier` per attempt, capped at `max`.
    Exponential {
        /// First delay.
        initial: DurationRecord,
        /// Upper bound of the delay.
        max: DurationRecord,
        /// Growth factor, finite and >= 1.
        multiplier: f32,
    },
    /// One explicit delay per attempt.
    Customized {
        /// The delays, in attempt order.
        next: Vec<DurationRecord>,
    },
}

/// A consumer group (see `comet.v1.Group`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Qualified name.
    pub name: String,
    /// Redeliveries after the first delivery (already defaulted, `1..=64`).
    pub max_retries: u32,
    /// Backoff; `None` is the RocketMQ default customized backoff.
    pub retry_policy: Option<RetryPolicyRecord>,
    /// FIFO consumption.
    pub fifo: bool,
    /// PRIORITY topics: the percentage of pops that take the highest priority first
    /// (`None`: 100).
    #[serde(default)]
    pub priority_percent: Option<u32>,
    /// Broadcast consumption: a position per client of the group.
    #[serde(default)]
    pub broadcast: bool,
    /// Broadcast only: a new client starts at the earliest stored message, not the end.
    #[serde(default)]
    pub broadcast_from_start: bool,
}

/// One broker process of a broker set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMemberRecord {
    /// Broker id within the set.
    pub broker_id: u64,
    /// host:port of its BrokerService.
    pub address: String,
    /// False once its lease lapsed.
    pub alive: bool,
    /// Controller wall clock (ms since the epoch) of the last heartbeat the
    /// leader recorded in the log (registration or a liveness change).
    pub last_heartbeat_ms: i64,
}

/// A broker set and its members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerSetRecord {
    /// Broker-set name.
    pub name: String,
    /// Members by broker id.
    pub members: BTreeMap<u64, BrokerMemberRecord>,
    /// The master's broker id (0 until master election exists).
    pub master_broker_id: u64,
    /// Incremented at every master change.
    pub master_epoch: u64,
    /// Broker ids in sync with the master.
    pub sync_state_set: Vec<u64>,
}

impl From<&PlacementRecord> for pb::QueuePlacement {
    fn from(p: &PlacementRecord) -> Self {
        pb::QueuePlacement {
            broker_set: p.broker_set.clone(),
            queue_count: p.queue_count,
        }
    }
}

impl From<&TopicRecord> for pb::Topic {
    fn from(t: &TopicRecord) -> Self {
        pb::Topic {
            name: t.name.clone(),
            message_type: t.message_type,
            placements: t.placements.iter().map(Into::into).collect(),
            permission: t.permission,
            attributes: t
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

impl From<DurationRecord> for prost_types::Duration {
    fn from(d: DurationRecord) -> Self {
        prost_types::Duration {
            seconds: d.seconds,
            nanos: d.nanos,
        }
    }
}

impl From<&RetryPolicyRecord> for api::RetryPolicy {
    fn from(r: &RetryPolicyRecord) -> Self {
        let strategy = match r {
            RetryPolicyRecord::Exponential {
                initial,
                max,
                multiplier,
            } => api::retry_policy::Strategy::ExponentialBackoff(api::ExponentialBackoff {
                initial: Some((*initial).into()),
                max: Some((*max).into()),
                multiplier: *multiplier,
            }),
            RetryPolicyRecord::Customized { next } => {
                api::retry_policy::Strategy::CustomizedBackoff(api::CustomizedBackoff {
                    next: next.iter().map(|d| (*d).into()).collect(),
                })
            }
        };
        api::RetryPolicy {
            max_attempts: 0,
            strategy: Some(strategy),
        }
    }
}

impl From<&GroupRecord> for pb::Group {
    fn from(g: &GroupRecord) -> Self {
        pb::Group {
            name: g.name.clone(),
            max_retries: g.max_retries,
            retry_policy: g.retry_policy.as_ref().map(Into::into),
            fifo: g.fifo,
            priority_percent: g.priority_percent,
            broadcast: g.broadcast,
            broadcast_from_start: g.broadcast_from_start,
        }
    }
}

impl BrokerSetRecord {
    /// An empty broker set named `name`.
    pub fn new(name: String) -> Self {
        BrokerSetRecord {
            name,
            members: BTreeMap::new(),
            master_broker_id: 0,
            master_epoch: 0,
            sync_state_set: Vec::new(),
        }
    }
}

impl From<&BrokerSetRecord> for pb::BrokerSet {
    fn from(s: &BrokerSetRecord) -> Self {
        pb::BrokerSet {
            name: s.name.clone(),
            members: s
                .members
                .values()
                .map(|m| pb::BrokerMember {
                    broker_set: s.name.clone(),
                    broker_id: m.broker_id,
                    address: m.address.clone(),
                    alive: m.alive,
                    last_heartbeat_ms: m.last_heartbeat_ms,
                })
                .collect(),
            master_broker_id: s.master_broker_id,
            master_epoch: s.master_epoch,
            sync_state_set: s.sync_state_set.clone(),
        }
    }
}

/// An ACL 2.0 user. The secret is sealed with the cluster key (`comet_auth::SecretCipher`);
/// the plaintext never enters a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// User name (access key).
    pub name: String,
    /// `v1:<key id>:<base64>`.
    pub sealed_secret: String,
    /// `super` or `normal`.
    pub user_type: String,
}

/// One ACL entry of a user, in its canonical text form (validated before proposing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclEntryRecord {
    /// Canonical resource pattern (`Topic:a`, `Topic:a-*`, `Group:*`, `Cluster`, `*`); an
    /// entry's identity within its user's ACL.
    pub resource: String,
    /// Canonical actions (`Pub,Sub` or `All`).
    pub actions: String,
    /// `Allow` or `Deny`.
    pub decision: String,
    /// Canonical CIDRs; empty: any source.
    pub source_ips: Vec<String>,
}

impl From<&UserRecord> for pb::User {
    fn from(u: &UserRecord) -> Self {
        pb::User {
            name: u.name.clone(),
            sealed_secret: u.sealed_secret.clone(),
            user_type: u.user_type.clone(),
        }
    }
}

impl From<&AclEntryRecord> for pb::AclEntry {
    fn from(e: &AclEntryRecord) -> Self {
        pb::AclEntry {
            resource: e.resource.clone(),
            actions: e.actions.clone(),
            decision: e.decision.clone(),
            source_ips: e.source_ips.clone(),
        }
    }
}

/// The protobuf ACL of `user`.
pub fn acl_to_proto(user: &str, entries: &[AclEntryRecord]) -> pb::Acl {
    pb::Acl {
        subject: format!("User:{user}"),
        entries: entries.iter().map(Into::into).collect(),
    }
}
