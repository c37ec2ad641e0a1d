//! The controller's metrics, observed at collection time from its Raft metrics and its applied
//! metadata: RocketMQ's `rocketmq_topic_number` and `rocketmq_consumer_group_number`, and
//! Comet's Raft (term, leader, log and applied index) and broker-set (sync-state-set size,
//! members alive) gauges.

use std::sync::Arc;

use comet_observe::{KeyValue, Observer};
use comet_proto::comet::v1::ClusterMetadata;
use opentelemetry::metrics::AsyncInstrument;
use tokio::sync::watch;

use crate::raft_types::ControllerRaft;

/// What the callbacks read.
struct Source {
    raft: ControllerRaft,
    metadata: watch::Receiver<Arc<ClusterMetadata>>,
}

/// The controller's registered instruments.
pub(crate) struct ControllerMetrics {
    _instruments: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

type RaftValue = fn(&openraft::RaftMetrics<u64, openraft::BasicNode>) -> i64;

/// Raft gauges: name, description, value.
const RAFT_GAUGES: &[(&str, &str, RaftValue)] = &[
    ("comet_raft_term", "Current Raft term", |m| {
        i64::try_from(m.current_term).unwrap_or(i64::MAX)
    }),
    (
        "comet_raft_leader_id",
        "Node id of the Raft leader this node knows (0: none)",
        |m| {
            m.current_leader
                .map_or(0, |l| i64::try_from(l).unwrap_or(i64::MAX))
        },
    ),
    (
        "comet_raft_is_leader",
        "1 when this node is the Raft leader",
        |m| i64::from(m.current_leader == Some(m.id)),
    ),
    (
        "comet_raft_has_leader",
        "1 when this node knows a Raft leader",
        |m| i64::from(m.current_leader.is_some()),
    ),
    (
        "comet_raft_last_log_index",
        "Index of the last entry in this node's Raft log",
        |m| {
            m.last_log_index
                .map_or(0, |i| i64::try_from(i).unwrap_or(i64::MAX))
        },
    ),
    (
        "comet_raft_applied_index",
        "Index of the last entry applied (committed and applied) on this node",
        |m| {
            m.last_applied
                .map_or(0, |l| i64::try_from(l.index).unwrap_or(i64::MAX))
        },
    ),
];

impl ControllerMetrics {
    pub(crate) fn register(
        observer: &Observer,
        raft: ControllerRaft,
        metadata: watch::Receiver<Arc<ClusterMetadata>>,
    ) -> ControllerMetrics {
        let meter = observer.meter();
        let source = Arc::new(Source { raft, metadata });
        let base = observer.labels(&[]);
        let mut kept: Vec<Box<dyn std::any::Any + Send + Sync>> = Vec::new();
        for &(name, description, value) in RAFT_GAUGES {
            let (source, attrs) = (Arc::clone(&source), base.clone());
            kept.push(Box::new(
                meter
                    .i64_observable_gauge(name)
                    .with_description(description)
                    .with_callback(move |o| {
                        o.observe(value(&source.raft.metrics().borrow()), &attrs);
                    })
                    .build(),
            ));
        }
        for (name, description, groups) in [
            ("rocketmq_topic_number", "Topics in the cluster", false),
            (
                "rocketmq_consumer_group_number",
                "Consumer groups in the cluster",
                true,
            ),
        ] {
            let (source, attrs) = (Arc::clone(&source), base.clone());
            kept.push(Box::new(
                meter
                    .i64_observable_gauge(name)
                    .with_description(description)
                    .with_callback(move |o| {
                        let m = source.metadata.borrow();
                        let n = if groups {
                            m.groups.len()
                        } else {
                            m.topics.len()
                        };
                        o.observe(i64::try_from(n).unwrap_or(i64::MAX), &attrs);
                    })
                    .build(),
            ));
        }
        type SetValue = fn(&comet_proto::comet::v1::BrokerSet) -> i64;
        let per_set: [(&str, &str, SetValue); 3] = [
            (
                "comet_sync_state_set_size",
                "Members in the sync-state set of a broker set (the master included)",
                |b| i64::try_from(b.sync_state_set.len()).unwrap_or(i64::MAX),
            ),
            (
                "comet_broker_set_members_alive",
                "Members of a broker set with a live lease",
                |b| i64::try_from(b.members.iter().filter(|m| m.alive).count()).unwrap_or(i64::MAX),
            ),
            (
                "comet_broker_set_master_epoch",
                "Master epoch of a broker set (0: never elected)",
                |b| i64::try_from(b.master_epoch).unwrap_or(i64::MAX),
            ),
        ];
        for (name, description, value) in per_set {
            let (source, observer) = (Arc::clone(&source), observer.clone());
            kept.push(Box::new(
                meter
                    .i64_observable_gauge(name)
                    .with_description(description)
                    .with_callback(move |o: &dyn AsyncInstrument<i64>| {
                        let m = source.metadata.borrow();
                        for b in &m.broker_sets {
                            let attrs =
                                observer.labels(&[KeyValue::new("broker_set", b.name.clone())]);
                            o.observe(value(b), &attrs);
                        }
                    })
                    .build(),
            ));
        }
        ControllerMetrics { _instruments: kept }
    }
}
