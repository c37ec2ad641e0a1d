//! The broker's view of cluster metadata: topics placed on this broker set and group policies,
//! indexed once per metadata snapshot.

use std::collections::HashMap;
use std::sync::Arc;

use comet_proto::apache::rocketmq::v2::Permission;
use comet_proto::comet::v1::{ClusterMetadata, TopicMessageType};
use comet_vocab::system;
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::outcome::{Code, Failure};

/// A topic as this broker sees it.
#[derive(Debug, Clone)]
pub(crate) struct TopicView {
    /// Queues of the topic on this broker set (0 if the topic is placed elsewhere only).
    pub queue_count: u32,
    pub readable: bool,
    pub writable: bool,
    /// A PRIORITY topic: a message's queue is its priority, pops take the highest first.
    pub priority: bool,
    /// A LITE parent topic (see `lite`).
    pub lite: bool,
}

/// A consumer group's policies.
#[derive(Debug, Clone)]
pub(crate) struct GroupView {
    pub max_retries: u32,
    pub backoff: Backoff,
    /// Messages of one message group are handed out one at a time, in order.
    pub fifo: bool,
    /// PRIORITY topics: the percentage of pops that take the highest priority first.
    pub priority_percent: u32,
    /// Every client of the group has its own position (see `broadcast`).
    pub broadcast: bool,
    /// Broadcast: a new client starts at the earliest stored message, not the end.
    pub broadcast_from_start: bool,
}

#[derive(Debug, Default)]
pub(crate) struct MetaIndex {
    topics: HashMap<String, TopicView>,
    groups: HashMap<String, GroupView>,
}

impl MetaIndex {
    /// The index of `md` as broker set `broker_set` sees it.
    pub(crate) fn build_for(md: &ClusterMetadata, broker_set: &str) -> Self {
        Self::build(md, broker_set)
    }

    fn build(md: &ClusterMetadata, broker_set: &str) -> Self {
        let topics = md
            .topics
            .iter()
            .map(|t| {
                let queue_count = t
                    .placements
                    .iter()
                    .find(|p| p.broker_set == broker_set)
                    .map_or(0, |p| p.queue_count);
                let perm = Permission::try_from(t.permission).unwrap_or(Permission::Unspecified);
                let (readable, writable) = match perm {
                    Permission::Unspecified | Permission::ReadWrite => (true, true),
                    Permission::Read => (true, false),
                    Permission::Write => (false, true),
                    Permission::None => (false, false),
                };
                (
                    t.name.clone(),
                    TopicView {
                        queue_count,
                        readable,
                        writable,
                        priority: t.message_type == TopicMessageType::Priority as i32,
                        lite: t.message_type == TopicMessageType::Lite as i32,
                    },
                )
            })
            .collect();
        let groups = md
            .groups
            .iter()
            .map(|g| {
                (
                    g.name.clone(),
                    GroupView {
                        max_retries: g.max_retries,
                        backoff: Backoff::from_policy(g.retry_policy.as_ref()),
                        fifo: g.fifo,
                        priority_percent: g.priority_percent.unwrap_or(100).min(100),
                        broadcast: g.broadcast,
                        broadcast_from_start: g.broadcast_from_start,
                    },
                )
            })
            .collect();
        MetaIndex { topics, groups }
    }

    pub fn group(&self, name: &str) -> Option<&GroupView> {
        self.groups.get(name)
    }

    /// Whether `topic` is a PRIORITY topic.
    pub fn is_priority_topic(&self, topic: &str) -> bool {
        self.topics.get(topic).is_some_and(|t| t.priority)
    }

    /// The LITE parent topics placed here, with their queue counts here.
    pub fn lite_topics(&self) -> Vec<(String, u32)> {
        self.topics
            .iter()
            .filter(|(_, t)| t.lite && t.queue_count > 0)
            .map(|(name, t)| (name.clone(), t.queue_count))
            .collect()
    }

    /// Whether `topic` is a LITE parent topic.
    pub fn is_lite_topic(&self, topic: &str) -> bool {
        self.topics.get(topic).is_some_and(|t| t.lite)
    }

    /// Queue ids of `topic` this broker serves for the given access, or the in-body error.
    /// Dead-letter topics and the transaction discard topic are the broker's own: one queue,
    /// readable, not in metadata.
    pub fn queues(&self, topic: &str, access: Access) -> Result<u32, Failure> {
        if system::is_implicit_topic(topic) && access == Access::Read {
            return Ok(1);
        }
        let Some(t) = self.topics.get(topic) else {
            return Err(Failure::new(
                Code::TopicNotFound,
                format!("topic {topic:?} does not exist"),
            ));
        };
        if t.queue_count == 0 {
            return Err(Failure::new(
                Code::TopicNotFound,
                format!("topic {topic:?} has no queues on this broker set"),
            ));
        }
        let allowed = match access {
            Access::Read => t.readable,
            Access::Write => t.writable,
        };
        if !allowed {
            return Err(Failure::new(
                Code::Forbidden,
                format!(
                    "topic {topic:?} is not {}",
                    match access {
                        Access::Read => "readable",
                        Access::Write => "writable",
                    }
                ),
            ));
        }
        Ok(t.queue_count)
    }
}

/// What a request wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// Caches the index of the latest metadata snapshot.
pub(crate) struct MetaView {
    rx: watch::Receiver<Arc<ClusterMetadata>>,
    broker_set: String,
    cache: RwLock<(Option<Arc<ClusterMetadata>>, Arc<MetaIndex>)>,
}

impl MetaView {
    pub fn new(rx: watch::Receiver<Arc<ClusterMetadata>>, broker_set: String) -> Self {
        Self {
            rx,
            broker_set,
            cache: RwLock::new((None, Arc::new(MetaIndex::default()))),
        }
    }

    /// The metadata as the watch holds it now.
    pub fn current(&self) -> Arc<ClusterMetadata> {
        Arc::clone(&self.rx.borrow())
    }

    /// The index of the current snapshot (rebuilt only when the snapshot changed).
    pub fn index(&self) -> Arc<MetaIndex> {
        let current = Arc::clone(&self.rx.borrow());
        {
            let c = self.cache.read();
            if c.0.as_ref().is_some_and(|m| Arc::ptr_eq(m, &current)) {
                return Arc::clone(&c.1);
            }
        }
        let idx = Arc::new(MetaIndex::build(&current, &self.broker_set));
        *self.cache.write() = (Some(current), Arc::clone(&idx));
        idx
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use comet_proto::comet::v1::{QueuePlacement, Topic};

    #[test]
    fn given_metadata_when_queues_should_check_placement_and_permission() {
        let md = ClusterMetadata {
            topics: vec![
                Topic {
                    name: "t".into(),
                    placements: vec![
                        QueuePlacement {
                            broker_set: "other".into(),
                            queue_count: 8,
                        },
                        QueuePlacement {
                            broker_set: "a".into(),
                            queue_count: 4,
                        },
                    ],
                    ..Default::default()
                },
                Topic {
                    name: "elsewhere".into(),
                    placements: vec![QueuePlacement {
                        broker_set: "other".into(),
                        queue_count: 8,
                    }],
                    ..Default::default()
                },
                Topic {
                    name: "ro".into(),
                    permission: Permission::Read as i32,
                    placements: vec![QueuePlacement {
                        broker_set: "a".into(),
                        queue_count: 1,
                    }],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let idx = MetaIndex::build(&md, "a");
        assert_eq!(idx.queues("t", Access::Write), Ok(4));
        assert_eq!(
            idx.queues("missing", Access::Read).unwrap_err().code,
            Code::TopicNotFound
        );
        assert_eq!(
            idx.queues("elsewhere", Access::Read).unwrap_err().code,
            Code::TopicNotFound
        );
        assert_eq!(
            idx.queues("ro", Access::Write).unwrap_err().code,
            Code::Forbidden
        );
        assert_eq!(idx.queues("ro", Access::Read), Ok(1));
        assert_eq!(idx.queues("%DLQ%g", Access::Read), Ok(1));
        assert_eq!(
            idx.queues("%DLQ%g", Access::Write).unwrap_err().code,
            Code::TopicNotFound
        );
    }
}
