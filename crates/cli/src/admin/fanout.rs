//! Fan-out to the brokers: which broker sets hold a topic (the controller console's
//! [`comet_controller::console::broker_targets`], one implementation for both), a connection
//! to each, and their answers' statuses as errors that name the broker set.

use std::time::Duration;

use anyhow::{Context, bail};
use comet_proto::comet::v1::ClusterMetadata;
use comet_proto::comet::v1::broker_service_client::BrokerServiceClient;
use tonic::transport::{Channel, Endpoint};

pub(super) use comet_controller::console::BrokerTarget;

/// Largest internal reply accepted (query results carry whole messages).
const BROKER_MAX_MESSAGE: usize = 256 << 20;

/// The broker sets holding `topic` (qualified), optionally only `only`; dead-letter topics
/// live on every broker set with a live master.
pub(super) fn broker_targets(
    meta: &ClusterMetadata,
    topic: &str,
    only: Option<&str>,
) -> anyhow::Result<Vec<BrokerTarget>> {
    Ok(comet_controller::console::broker_targets(
        meta, topic, only,
    )?)
}

/// The one broker set of a single-queue command: the named one, or the topic's only one.
pub(super) fn single_target(
    meta: &ClusterMetadata,
    topic: &str,
    only: Option<&str>,
) -> anyhow::Result<BrokerTarget> {
    let mut targets = broker_targets(meta, topic, only)?;
    if targets.len() > 1 {
        let sets: Vec<&str> = targets.iter().map(|t| t.broker_set.as_str()).collect();
        bail!(
            "topic {topic:?} spans several broker sets ({}); name one with --broker-set",
            sets.join(", ")
        );
    }
    targets.pop().context("the topic has no broker set")
}

pub(super) async fn broker_client(
    t: &BrokerTarget,
    connector: &comet_auth::Connector,
) -> anyhow::Result<BrokerServiceClient<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{}", t.address))
        .with_context(|| format!("bad broker address {:?}", t.address))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    let channel = endpoint
        .connect_with_connector(connector.clone())
        .await
        .with_context(|| {
            format!(
                "connecting to broker set {} at {} (its internal BrokerService address)",
                t.broker_set, t.address
            )
        })?;
    Ok(BrokerServiceClient::new(channel)
        .max_decoding_message_size(BROKER_MAX_MESSAGE)
        .max_encoding_message_size(BROKER_MAX_MESSAGE))
}

pub(super) fn broker_call_error(t: &BrokerTarget, what: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "{what} on broker set {}: {} ({:?})",
        t.broker_set,
        s.message(),
        s.code()
    )
}

/// The broker's in-body status as a result: OK passes, anything else is an error naming it.
pub(super) fn check_status(
    t: &BrokerTarget,
    what: &str,
    s: Option<&comet_proto::apache::rocketmq::v2::Status>,
) -> anyhow::Result<()> {
    Ok(comet_controller::console::check_status(t, what, s)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use comet_proto::comet::v1::{BrokerMember, BrokerSet, QueuePlacement, Topic};

    fn meta() -> ClusterMetadata {
        let set = |name: &str, alive: bool| BrokerSet {
            name: name.into(),
            members: vec![BrokerMember {
                broker_set: name.into(),
                broker_id: 0,
                address: format!("{name}:10911"),
                alive,
                last_heartbeat_ms: 0,
            }],
            master_broker_id: 0,
            master_epoch: 1,
            sync_state_set: vec![0],
        };
        ClusterMetadata {
            topics: vec![
                Topic {
                    name: "t".into(),
                    placements: vec![
                        QueuePlacement {
                            broker_set: "a".into(),
                            queue_count: 2,
                        },
                        QueuePlacement {
                            broker_set: "b".into(),
                            queue_count: 2,
                        },
                    ],
                    ..Default::default()
                },
                Topic {
                    name: "solo".into(),
                    placements: vec![QueuePlacement {
                        broker_set: "dead".into(),
                        queue_count: 1,
                    }],
                    ..Default::default()
                },
            ],
            broker_sets: vec![set("a", true), set("b", true), set("dead", false)],
            ..Default::default()
        }
    }

    fn names(v: &[BrokerTarget]) -> Vec<(&str, &str)> {
        v.iter()
            .map(|t| (t.broker_set.as_str(), t.address.as_str()))
            .collect()
    }

    #[test]
    fn given_topics_when_targeted_should_find_live_masters_of_their_broker_sets() {
        let m = meta();
        assert_eq!(
            names(&broker_targets(&m, "t", None).unwrap()),
            vec![("a", "a:10911"), ("b", "b:10911")]
        );
        assert_eq!(
            names(&broker_targets(&m, "t", Some("b")).unwrap()),
            vec![("b", "b:10911")]
        );
        assert_eq!(
            names(&broker_targets(&m, "%DLQ%g", None).unwrap()),
            vec![("a", "a:10911"), ("b", "b:10911")],
            "dead letters: every broker set with a live master"
        );
        let e = broker_targets(&m, "t", Some("c"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no queues on broker set \"c\""), "{e}");
        let e = broker_targets(&m, "nope", None).err().unwrap().to_string();
        assert!(e.contains("does not exist"), "{e}");
        let e = broker_targets(&m, "solo", None).err().unwrap().to_string();
        assert!(e.contains("no live master"), "{e}");
        let e = single_target(&m, "t", None).err().unwrap().to_string();
        assert!(e.contains("--broker-set"), "{e}");
    }
}
