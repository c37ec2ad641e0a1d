//! Route resolution over the metadata watch: topics, groups, broker-set masters, the queues a
//! client sees, and which broker set a send or receive goes to. Pure functions over one
//! [`ClusterMetadata`] snapshot, indexed once per snapshot.
//!
//! Queue layout: a topic with placements `[{A, 2}, {B, 3}]` shows clients five queues:
//! `A/0, A/1, B/0, B/1, B/2`, each with broker `{name: A|B, id: 0, endpoints: <this proxy>}`.
//! Queue ids name a queue within its broker set only, so sends are placed by the proxy (a
//! message cannot name a broker set) and receives use the broker name of the requested queue.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use comet_proto::apache::rocketmq::v2::{
    Broker, Code, Endpoints, MessageQueue, MessageType, Permission,
};
use comet_proto::comet::v1::{
    BrokerSet, ClusterMetadata, Group, QueuePlacement, Topic, TopicMessageType,
};
use comet_vocab::{handle, system};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::names::Name;
use crate::status::{Failure, Outcome};

/// One metadata snapshot with lookup tables.
#[derive(Debug)]
pub(crate) struct MetadataIndex {
    pub(crate) metadata: Arc<ClusterMetadata>,
    topics: HashMap<String, usize>,
    groups: HashMap<String, usize>,
    broker_sets: HashMap<String, usize>,
}

impl MetadataIndex {
    pub(crate) fn new(metadata: Arc<ClusterMetadata>) -> Self {
        /// Position of each item by name.
        fn positions<'a>(names: impl Iterator<Item = &'a String>) -> HashMap<String, usize> {
            names.enumerate().map(|(i, n)| (n.clone(), i)).collect()
        }
        MetadataIndex {
            topics: positions(metadata.topics.iter().map(|t| &t.name)),
            groups: positions(metadata.groups.iter().map(|g| &g.name)),
            broker_sets: positions(metadata.broker_sets.iter().map(|b| &b.name)),
            metadata,
        }
    }

    /// The topic named `qualified`: from metadata, or an implicit dead-letter topic.
    pub(crate) fn topic(&self, qualified: &str) -> Option<Cow<'_, Topic>> {
        match self.topics.get(qualified) {
            Some(&i) => Some(Cow::Borrowed(&self.metadata.topics[i])),
            None => self.dead_letter_topic(qualified).map(Cow::Owned),
        }
    }

    /// `%DLQ%<group>` topics exist without being created: a broker appends a group's dead
    /// letters to queue 0 of that topic on its own broker set. So does
    /// [`system::TRANS_CHECK_MAX_TIME_TOPIC`] with the half messages of transactions discarded
    /// after their maximum number of checks ([`system::is_implicit_topic`]). Clients may read
    /// them (any group), never write them.
    fn dead_letter_topic(&self, qualified: &str) -> Option<Topic> {
        if !system::is_implicit_topic(qualified) {
            return None;
        }
        let placements: Vec<QueuePlacement> = self
            .metadata
            .broker_sets
            .iter()
            .filter(|b| !b.members.is_empty())
            .map(|b| QueuePlacement {
                broker_set: b.name.clone(),
                queue_count: 1,
            })
            .collect();
        if placements.is_empty() {
            return None;
        }
        Some(Topic {
            name: qualified.to_owned(),
            message_type: TopicMessageType::Mixed as i32,
            placements,
            permission: Permission::Read as i32,
            attributes: Default::default(),
        })
    }

    pub(crate) fn group(&self, qualified: &str) -> Option<&Group> {
        self.groups
            .get(qualified)
            .map(|&i| &self.metadata.groups[i])
    }

    fn broker_set(&self, name: &str) -> Option<&BrokerSet> {
        self.broker_sets
            .get(name)
            .map(|&i| &self.metadata.broker_sets[i])
    }

    /// Address of the broker set's alive master, if any (none before the controller's first
    /// election, `master_epoch` 0).
    pub(crate) fn master_address(&self, broker_set: &str) -> Option<&str> {
        let set = self.broker_set(broker_set)?;
        if set.master_epoch == 0 {
            return None;
        }
        set.members
            .iter()
            .find(|m| m.broker_id == set.master_broker_id && m.alive && !m.address.is_empty())
            .map(|m| m.address.as_str())
    }

    /// Address of the member that serves reads of the broker set: its alive master, else
    /// (the master is down and not yet replaced) the alive replica with the lowest id.
    /// Replicas serve what they copied: consumers keep receiving while a set has no master,
    /// and acknowledgements of what a replica handed out go back to it.
    pub(crate) fn read_address(&self, broker_set: &str) -> Option<&str> {
        if let Some(a) = self.master_address(broker_set) {
            return Some(a);
        }
        let set = self.broker_set(broker_set)?;
        set.members
            .iter()
            .filter(|m| m.alive && !m.address.is_empty())
            .min_by_key(|m| m.broker_id)
            .map(|m| m.address.as_str())
    }

    /// The topic or TOPIC_NOT_FOUND naming it.
    pub(crate) fn require_topic(&self, name: &Name) -> Outcome<Cow<'_, Topic>> {
        self.topic(&name.qualified)
            .ok_or_else(|| topic_not_found(name))
    }
}

pub(crate) fn topic_not_found(name: &Name) -> Failure {
    let ns = if name.namespace.is_empty() {
        String::new()
    } else {
        format!(" in namespace {}", name.namespace)
    };
    Failure::new(
        Code::TopicNotFound,
        format!("topic {}{ns} does not exist", name.name),
    )
}

/// Caches the index of the latest snapshot of the metadata watch.
#[derive(Debug)]
pub(crate) struct MetadataView {
    rx: watch::Receiver<Arc<ClusterMetadata>>,
    cached: Mutex<Arc<MetadataIndex>>,
}

impl MetadataView {
    pub(crate) fn new(rx: watch::Receiver<Arc<ClusterMetadata>>) -> Self {
        let first = Arc::new(MetadataIndex::new(rx.borrow().clone()));
        MetadataView {
            rx,
            cached: Mutex::new(first),
        }
    }

    /// The index of the current snapshot (rebuilt only when the snapshot changed).
    pub(crate) fn current(&self) -> Arc<MetadataIndex> {
        let latest = self.rx.borrow().clone();
        let mut cached = self.cached.lock();
        if !Arc::ptr_eq(&cached.metadata, &latest) {
            *cached = Arc::new(MetadataIndex::new(latest));
        }
        cached.clone()
    }

    /// A receiver of the metadata watch (to react to changes).
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<ClusterMetadata>> {
        self.rx.clone()
    }

    /// Waits until the watch shows `qualified` as a topic, up to `limit`.
    pub(crate) async fn wait_for_topic(&self, qualified: &str, limit: std::time::Duration) -> bool {
        let mut rx = self.rx.clone();
        let found = tokio::time::timeout(
            limit,
            rx.wait_for(|md| md.topics.iter().any(|t| t.name == qualified)),
        )
        .await;
        matches!(found, Ok(Ok(_)))
    }
}

/// Topic permission with UNSPECIFIED read as READ_WRITE.
pub(crate) fn permission(topic: &Topic) -> Permission {
    match Permission::try_from(topic.permission) {
        Ok(Permission::Unspecified) | Err(_) => Permission::ReadWrite,
        Ok(p) => p,
    }
}

pub(crate) fn readable(p: Permission) -> bool {
    matches!(p, Permission::Read | Permission::ReadWrite)
}

pub(crate) fn writable(p: Permission) -> bool {
    matches!(p, Permission::Write | Permission::ReadWrite)
}

/// Message types the topic accepts (MIXED: NORMAL, FIFO, DELAY, TRANSACTION).
pub(crate) fn accepted_types(topic: &Topic) -> Vec<MessageType> {
    match TopicMessageType::try_from(topic.message_type) {
        Ok(TopicMessageType::Normal) => vec![MessageType::Normal],
        Ok(TopicMessageType::Fifo) => vec![MessageType::Fifo],
        Ok(TopicMessageType::Delay) => vec![MessageType::Delay],
        Ok(TopicMessageType::Transaction) => vec![MessageType::Transaction],
        Ok(TopicMessageType::Priority) => vec![MessageType::Priority],
        Ok(TopicMessageType::Lite) => vec![MessageType::Lite],
        // UNSPECIFIED is treated like MIXED: the topic states no restriction.
        Ok(TopicMessageType::Mixed | TopicMessageType::Unspecified) | Err(_) => vec![
            MessageType::Normal,
            MessageType::Fifo,
            MessageType::Delay,
            MessageType::Transaction,
        ],
    }
}

fn broker(name: &str, endpoints: &Endpoints) -> Broker {
    Broker {
        name: name.to_owned(),
        id: 0,
        endpoints: Some(endpoints.clone()),
    }
}

fn queue(
    name: &Name,
    id: i32,
    perm: Permission,
    set: &str,
    endpoints: &Endpoints,
    types: &[i32],
) -> MessageQueue {
    MessageQueue {
        topic: Some(name.resource()),
        id,
        permission: perm as i32,
        broker: Some(broker(set, endpoints)),
        accept_message_types: types.to_vec(),
    }
}

fn queue_id(i: u32) -> i32 {
    i32::try_from(i).unwrap_or(i32::MAX)
}

/// The placements a route shows: those whose broker set has a live member (a master, or a
/// replica serving reads while the set has none). A broker set with no live member leaves the
/// route, as a stopped broker leaves a NameServer's tables; when no placement is live, all are
/// shown, so that clients keep a route and their requests get a retryable HA_NOT_AVAILABLE
/// instead of TOPIC_NOT_FOUND.
pub(crate) fn routable_placements<'a>(
    index: &MetadataIndex,
    topic: &'a Topic,
) -> Vec<&'a QueuePlacement> {
    let all: Vec<&QueuePlacement> = topic
        .placements
        .iter()
        .filter(|p| p.queue_count > 0)
        .collect();
    let live: Vec<&QueuePlacement> = all
        .iter()
        .copied()
        .filter(|p| index.read_address(&p.broker_set).is_some())
        .collect();
    if live.is_empty() { all } else { live }
}

/// The permission of a placement's queues: the topic's, without WRITE while the broker set has
/// no live master (its replicas serve reads only).
fn placement_permission(index: &MetadataIndex, topic_perm: Permission, set: &str) -> Permission {
    if index.master_address(set).is_some() {
        return topic_perm;
    }
    match topic_perm {
        Permission::ReadWrite | Permission::Read => Permission::Read,
        _ => Permission::None,
    }
}

/// The route of a topic: one queue per queue id of every routable placement (see
/// [`routable_placements`]).
pub(crate) fn message_queues(
    index: &MetadataIndex,
    topic: &Topic,
    name: &Name,
    endpoints: &Endpoints,
) -> Vec<MessageQueue> {
    let perm = permission(topic);
    let types: Vec<i32> = accepted_types(topic)
        .into_iter()
        .map(|t| t as i32)
        .collect();
    routable_placements(index, topic)
        .into_iter()
        .flat_map(|p| (0..p.queue_count).map(move |i| (p.broker_set.as_str(), queue_id(i))))
        .map(|(set, id)| {
            let perm = placement_permission(index, perm, set);
            queue(name, id, perm, set, endpoints, &types)
        })
        .collect()
}

/// Push-consumer assignments over the routable placements: non-FIFO groups get one queue per
/// broker set with id -1 ("any queue of the topic there"), FIFO groups every queue. FORBIDDEN
/// when nothing is readable.
pub(crate) fn assignments(
    index: &MetadataIndex,
    topic: &Topic,
    name: &Name,
    fifo: bool,
    endpoints: &Endpoints,
) -> Outcome<Vec<MessageQueue>> {
    let perm = permission(topic);
    let placements = routable_placements(index, topic);
    if !readable(perm) || placements.is_empty() {
        return Err(Failure::new(
            Code::Forbidden,
            format!("topic {} has no readable queue", name.name),
        ));
    }
    let types: Vec<i32> = accepted_types(topic)
        .into_iter()
        .map(|t| t as i32)
        .collect();
    Ok(if fifo {
        placements
            .into_iter()
            .flat_map(|p| (0..p.queue_count).map(move |i| (p.broker_set.as_str(), queue_id(i))))
            .map(|(set, id)| queue(name, id, perm, set, endpoints, &types))
            .collect()
    } else {
        placements
            .into_iter()
            .map(|p| queue(name, -1, perm, &p.broker_set, endpoints, &types))
            .collect()
    })
}

/// A concrete target: a queue on a broker set and the master address serving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) broker_set: String,
    pub(crate) address: String,
    pub(crate) queue_id: i32,
}

/// Stable 64-bit FNV-1a, identical on every proxy so that all proxies place a message group on
/// the same queue.
pub(crate) fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Picks the queue of one message: FIFO messages by hash of `message_group` over all the
/// topic's queues (stable while the placements do not change: a broker set without a live
/// master answers HA_NOT_AVAILABLE instead of moving the group, which would break its order),
/// others round-robin over the queues of broker sets with a live master.
pub(crate) fn send_target(
    index: &MetadataIndex,
    topic: &Topic,
    name: &Name,
    message_group: Option<&str>,
    round_robin: &AtomicU64,
) -> Outcome<Target> {
    if !writable(permission(topic)) {
        return Err(Failure::new(
            Code::Forbidden,
            format!("topic {} is not writable", name.name),
        ));
    }
    if let Some(group) = message_group {
        return fifo_target(index, topic, name, group);
    }
    let live: Vec<(&str, &str, u32)> = topic
        .placements
        .iter()
        .filter(|p| p.queue_count > 0)
        .filter_map(|p| {
            index
                .master_address(&p.broker_set)
                .map(|a| (p.broker_set.as_str(), a, p.queue_count))
        })
        .collect();
    let total: u64 = live.iter().map(|&(_, _, n)| u64::from(n)).sum();
    if total == 0 {
        return Err(no_live_broker(topic, name));
    }
    let mut slot = round_robin.fetch_add(1, Ordering::Relaxed) % total;
    for (set, address, n) in live {
        if slot < u64::from(n) {
            return Ok(Target {
                broker_set: set.to_owned(),
                address: address.to_owned(),
                queue_id: i32::try_from(slot).unwrap_or(0),
            });
        }
        slot -= u64::from(n);
    }
    Err(no_live_broker(topic, name))
}

/// The queue of a message group: `stable_hash(group) % total queues`, placements in their
/// metadata order.
fn fifo_target(index: &MetadataIndex, topic: &Topic, name: &Name, group: &str) -> Outcome<Target> {
    let total: u64 = topic
        .placements
        .iter()
        .map(|p| u64::from(p.queue_count))
        .sum();
    if total == 0 {
        return Err(no_live_broker(topic, name));
    }
    let mut slot = stable_hash(group) % total;
    for p in &topic.placements {
        let n = u64::from(p.queue_count);
        if slot >= n {
            slot -= n;
            continue;
        }
        let address = index.master_address(&p.broker_set).ok_or_else(|| {
            Failure::new(
                Code::HaNotAvailable,
                format!(
                    "message group {group:?} of topic {} belongs to broker set {}, which has no \
                     live master; retry later (FIFO messages are not moved to another broker \
                     set, to keep their order)",
                    name.name, p.broker_set
                ),
            )
        })?;
        return Ok(Target {
            broker_set: p.broker_set.clone(),
            address: address.to_owned(),
            queue_id: i32::try_from(slot).unwrap_or(0),
        });
    }
    Err(no_live_broker(topic, name))
}

fn no_live_broker(topic: &Topic, name: &Name) -> Failure {
    let sets: Vec<&str> = topic
        .placements
        .iter()
        .map(|p| p.broker_set.as_str())
        .collect();
    Failure::new(
        Code::HaNotAvailable,
        format!(
            "no broker set of topic {} has a live master (placements: {})",
            name.name,
            sets.join(", ")
        ),
    )
}

/// Picks the broker set of a receive: the requested queue's broker set when it is a live
/// placement of the topic, otherwise (stale route, no live member) another live placement.
/// The member is the one serving reads (see [`MetadataIndex::read_address`]). The queue id is
/// not used (a pop takes from any queue of the set), as in the Apache proxy, which selects by
/// broker name only.
pub(crate) fn receive_target(
    index: &MetadataIndex,
    topic: &Topic,
    name: &Name,
    requested: Option<&MessageQueue>,
    round_robin: &AtomicU64,
) -> Outcome<Target> {
    if !readable(permission(topic)) {
        return Err(Failure::new(
            Code::Forbidden,
            format!("topic {} is not readable", name.name),
        ));
    }
    let wanted = requested
        .and_then(|q| q.broker.as_ref())
        .map(|b| b.name.as_str())
        .unwrap_or("");
    if topic.placements.iter().any(|p| p.broker_set == wanted)
        && let Some(address) = index.read_address(wanted)
    {
        return Ok(Target {
            broker_set: wanted.to_owned(),
            address: address.to_owned(),
            queue_id: -1,
        });
    }
    let live: Vec<(&str, &str)> = topic
        .placements
        .iter()
        .filter(|p| p.queue_count > 0)
        .filter_map(|p| {
            index
                .read_address(&p.broker_set)
                .map(|a| (p.broker_set.as_str(), a))
        })
        .collect();
    if live.is_empty() {
        return Err(no_live_broker(topic, name));
    }
    let n = live.len() as u64;
    let i = usize::try_from(round_robin.fetch_add(1, Ordering::Relaxed) % n).unwrap_or(0);
    let (set, address) = live[i];
    Ok(Target {
        broker_set: set.to_owned(),
        address: address.to_owned(),
        queue_id: -1,
    })
}

/// The member of the broker set named by a receipt handle prefix that serves its
/// acknowledgements: the master, or while the set has none, the replica serving reads.
pub(crate) fn handle_target(index: &MetadataIndex, receipt_handle: &str) -> Outcome<Target> {
    let set = handle::broker_set(receipt_handle).ok_or_else(|| {
        Failure::new(
            Code::InvalidReceiptHandle,
            "receipt handle is malformed: it does not name a broker set",
        )
    })?;
    named_set_target(
        index,
        set,
        Code::InvalidReceiptHandle,
        "receipt handle",
        Access::Read,
    )
}

/// Which member of a broker set a call may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// The master, or a live replica while the set has no master (acks of what a replica
    /// handed out, reads).
    Read,
    /// The master only.
    Write,
}

/// The member of the broker set `set` that a client-held token (`what`: a receipt handle, a
/// transaction id) names: `unknown` when the set is not in the cluster, HA_NOT_AVAILABLE while
/// no member may take the call.
pub(crate) fn named_set_target(
    index: &MetadataIndex,
    set: &str,
    unknown: Code,
    what: &str,
    access: Access,
) -> Result<Target, Failure> {
    if index.broker_set(set).is_none() {
        return Err(Failure::new(
            unknown,
            format!("{what} names broker set {set}, which is not in the cluster"),
        ));
    }
    let address = match access {
        Access::Read => index.read_address(set),
        Access::Write => index.master_address(set),
    }
    .ok_or_else(|| {
        let who = match access {
            Access::Read => "live member",
            Access::Write => "live master",
        };
        Failure::new(
            Code::HaNotAvailable,
            format!("broker set {set} has no {who}; retry later"),
        )
    })?;
    Ok(Target {
        broker_set: set.to_owned(),
        address: address.to_owned(),
        queue_id: -1,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use comet_proto::comet::v1::{BrokerMember, QueuePlacement};

    fn md() -> MetadataIndex {
        let member = |set: &str, alive: bool| BrokerMember {
            broker_set: set.into(),
            broker_id: 0,
            address: format!("{set}:10911"),
            alive,
            last_heartbeat_ms: 0,
        };
        let set = |name: &str, alive: bool| BrokerSet {
            name: name.into(),
            members: vec![member(name, alive)],
            master_broker_id: 0,
            master_epoch: 1,
            sync_state_set: vec![0],
        };
        MetadataIndex::new(Arc::new(ClusterMetadata {
            revision: 1,
            cluster_name: "c".into(),
            topics: vec![Topic {
                name: "t".into(),
                message_type: TopicMessageType::Normal as i32,
                placements: vec![
                    QueuePlacement {
                        broker_set: "a".into(),
                        queue_count: 2,
                    },
                    QueuePlacement {
                        broker_set: "b".into(),
                        queue_count: 3,
                    },
                    QueuePlacement {
                        broker_set: "dead".into(),
                        queue_count: 4,
                    },
                ],
                permission: 0,
                attributes: HashMap::new(),
            }],
            groups: vec![],
            broker_sets: vec![set("a", true), set("b", true), set("dead", false)],
            ..Default::default()
        }))
    }

    fn name() -> Name {
        crate::names::topic(
            &crate::context::RequestContext::default(),
            Some(&comet_proto::apache::rocketmq::v2::Resource {
                resource_namespace: String::new(),
                name: "t".into(),
            }),
        )
        .unwrap()
    }

    /// A set whose master (id 0) is down and replica (id 2, then 1) alive, at `epoch`.
    fn replicated(epoch: u64, master_alive: bool) -> MetadataIndex {
        let m = |id: u64, alive: bool| BrokerMember {
            broker_set: "r".into(),
            broker_id: id,
            address: format!("r{id}:10911"),
            alive,
            last_heartbeat_ms: 0,
        };
        MetadataIndex::new(Arc::new(ClusterMetadata {
            revision: 1,
            cluster_name: "c".into(),
            topics: vec![Topic {
                name: "t".into(),
                message_type: TopicMessageType::Normal as i32,
                placements: vec![QueuePlacement {
                    broker_set: "r".into(),
                    queue_count: 2,
                }],
                permission: 0,
                attributes: HashMap::new(),
            }],
            groups: vec![],
            broker_sets: vec![BrokerSet {
                name: "r".into(),
                members: vec![m(0, master_alive), m(2, true), m(1, true)],
                master_broker_id: 0,
                master_epoch: epoch,
                sync_state_set: vec![0, 1, 2],
            }],
            ..Default::default()
        }))
    }

    #[test]
    fn a_set_without_a_live_master_is_read_from_a_replica_and_not_written() {
        let up = replicated(3, true);
        assert_eq!(up.master_address("r"), Some("r0:10911"));
        assert_eq!(up.read_address("r"), Some("r0:10911"));
        let down = replicated(3, false);
        assert_eq!(down.master_address("r"), None);
        assert_eq!(
            down.read_address("r"),
            Some("r1:10911"),
            "lowest live replica"
        );
        let topic = down.topic("t").unwrap();
        let rr = AtomicU64::new(0);
        let recv = receive_target(&down, &topic, &name(), None, &rr).unwrap();
        assert_eq!(recv.address, "r1:10911");
        let send = send_target(&down, &topic, &name(), None, &rr).unwrap_err();
        assert_eq!(send.code, Code::HaNotAvailable);
        assert_eq!(
            handle_target(&down, "r~abc").unwrap().address,
            "r1:10911",
            "acks go where the pop was served"
        );
        let endpoints = Endpoints::default();
        let queues = message_queues(&down, &topic, &name(), &endpoints);
        assert_eq!(queues.len(), 2, "the replica keeps the queues routable");
        assert!(
            queues
                .iter()
                .all(|q| q.permission == Permission::Read as i32),
            "{queues:?}"
        );
        let queues = message_queues(&up, &topic, &name(), &endpoints);
        assert!(
            queues
                .iter()
                .all(|q| q.permission == Permission::ReadWrite as i32)
        );
        // Before the first election nothing is the master, but members serve reads.
        let fresh = replicated(0, true);
        assert_eq!(fresh.master_address("r"), None);
        assert_eq!(fresh.read_address("r"), Some("r0:10911"));
    }

    #[test]
    fn the_transaction_discard_topic_is_implicit_and_read_only() {
        let idx = md();
        let t = idx.topic(system::TRANS_CHECK_MAX_TIME_TOPIC).unwrap();
        assert_eq!(t.permission, Permission::Read as i32);
        assert!(!t.placements.is_empty());
        assert!(t.placements.iter().all(|p| p.queue_count == 1));
        assert!(idx.topic("TRANS_CHECK_MAX_TIME_TOPICX").is_none());
    }

    #[test]
    fn dead_letter_topics_are_implicit_read_only_and_on_every_broker_set() {
        let idx = md();
        let t = idx.topic("%DLQ%g").expect("implicit DLQ topic");
        assert_eq!(t.name, "%DLQ%g");
        assert_eq!(permission(&t), Permission::Read);
        let sets: Vec<(&str, u32)> = t
            .placements
            .iter()
            .map(|p| (p.broker_set.as_str(), p.queue_count))
            .collect();
        assert_eq!(sets, vec![("a", 1), ("b", 1), ("dead", 1)]);
        assert!(idx.topic("%DLQ%").is_none(), "a DLQ name needs a group");
        assert!(idx.topic("unknown").is_none());
    }

    #[test]
    fn route_lists_every_queue_of_every_live_placement() {
        let idx = md();
        let ep = crate::config::parse_endpoint("127.0.0.1:8081").unwrap();
        let qs = message_queues(&idx, &idx.topic("t").unwrap(), &name(), &ep);
        let ids: Vec<(String, i32)> = qs
            .iter()
            .map(|q| (q.broker.as_ref().unwrap().name.clone(), q.id))
            .collect();
        assert_eq!(
            ids.len(),
            5,
            "the dead broker set's 4 queues leave the route"
        );
        assert!(ids.iter().all(|(set, _)| set != "dead"));
        assert_eq!(ids[0], ("a".to_owned(), 0));
        assert_eq!(ids[2], ("b".to_owned(), 0));
        assert!(
            qs.iter()
                .all(|q| q.permission == Permission::ReadWrite as i32
                    && q.broker.as_ref().unwrap().id == 0
                    && q.accept_message_types == vec![MessageType::Normal as i32])
        );
    }

    #[test]
    fn assignments_skip_dead_sets_unless_every_set_is_dead() {
        let idx = md();
        let ep = crate::config::parse_endpoint("127.0.0.1:8081").unwrap();
        let t = idx.topic("t").unwrap();
        let sets: Vec<String> = assignments(&idx, &t, &name(), false, &ep)
            .unwrap()
            .iter()
            .map(|q| q.broker.as_ref().unwrap().name.clone())
            .collect();
        assert_eq!(sets, ["a", "b"]);
        assert_eq!(
            assignments(&idx, &t, &name(), true, &ep).unwrap().len(),
            5,
            "FIFO: every queue of the live sets"
        );
        let mut only_dead = t.into_owned();
        only_dead.placements.retain(|p| p.broker_set == "dead");
        assert_eq!(
            message_queues(&idx, &only_dead, &name(), &ep).len(),
            4,
            "with no live set the route keeps every queue"
        );
    }

    #[test]
    fn sends_avoid_dead_sets_and_fifo_is_stable() {
        let idx = md();
        let t = &*idx.topic("t").unwrap();
        let rr = AtomicU64::new(0);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10 {
            let target = send_target(&idx, t, &name(), None, &rr).unwrap();
            assert_ne!(target.broker_set, "dead");
            seen.insert((target.broker_set, target.queue_id));
        }
        assert_eq!(seen.len(), 5);
        let a = send_target(&idx, t, &name(), Some("g1"), &rr).unwrap();
        let b = send_target(&idx, t, &name(), Some("g1"), &rr).unwrap();
        assert_eq!(a, b);
        // Message groups hash over every queue, the dead set's included: a group whose queue
        // is on the dead set waits instead of moving.
        let total: u64 = t.placements.iter().map(|p| u64::from(p.queue_count)).sum();
        let mut dead = 0;
        for i in 0..200 {
            let g = format!("group-{i}");
            match send_target(&idx, t, &name(), Some(&g), &rr) {
                Ok(target) => {
                    assert_ne!(target.broker_set, "dead");
                    let mut slot = stable_hash(&g) % total;
                    for p in &t.placements {
                        if slot < u64::from(p.queue_count) {
                            assert_eq!(
                                (target.broker_set.as_str(), i64::from(target.queue_id)),
                                (p.broker_set.as_str(), slot as i64)
                            );
                            break;
                        }
                        slot -= u64::from(p.queue_count);
                    }
                }
                Err(f) => {
                    assert_eq!(f.code, Code::HaNotAvailable);
                    assert!(f.message.contains("dead"), "{}", f.message);
                    dead += 1;
                }
            }
        }
        assert!(dead > 0, "some groups hash to the dead set");
    }

    #[test]
    fn receives_fall_back_from_dead_or_unknown_sets() {
        let idx = md();
        let t = &*idx.topic("t").unwrap();
        let rr = AtomicU64::new(0);
        let q = |set: &str, id: i32| MessageQueue {
            broker: Some(Broker {
                name: set.into(),
                id: 0,
                endpoints: None,
            }),
            id,
            ..MessageQueue::default()
        };
        let got = receive_target(&idx, t, &name(), Some(&q("b", 2)), &rr).unwrap();
        assert_eq!((got.broker_set.as_str(), got.queue_id), ("b", -1));
        let got = receive_target(&idx, t, &name(), Some(&q("dead", 0)), &rr).unwrap();
        assert_ne!(got.broker_set, "dead");
        // The queue id is not used, as upstream: any id reads the named set.
        for id in [3, -7] {
            let got = receive_target(&idx, t, &name(), Some(&q("b", id)), &rr).unwrap();
            assert_eq!((got.broker_set.as_str(), got.queue_id), ("b", -1));
        }
    }

    #[test]
    fn receipt_handles_route_by_prefix() {
        let idx = md();
        assert_eq!(handle_target(&idx, "a~xyz").unwrap().address, "a:10911");
        assert_eq!(
            handle_target(&idx, "xyz").unwrap_err().code,
            Code::InvalidReceiptHandle
        );
        assert_eq!(
            handle_target(&idx, "zz~1").unwrap_err().code,
            Code::InvalidReceiptHandle
        );
        assert_eq!(
            handle_target(&idx, "dead~1").unwrap_err().code,
            Code::HaNotAvailable
        );
    }
}
