//! The official RocketMQ 5 Rust client (`rocketmq` 5.0.0) as the whole-node tests use it:
//! options, a started producer or simple consumer, and bounded receive loops.

use std::time::Duration;

use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageView;
use rocketmq::{Producer, SimpleConsumer};

/// The client's long-polling timeout in these tests.
pub const LONG_POLL: Duration = Duration::from_secs(2);

/// Longest a [`receive_n`] waits for its messages.
pub const RECEIVE_LIMIT: Duration = Duration::from_secs(40);

/// Options for a client of the proxy at `access_url` (`host:port`).
pub fn option(access_url: &str) -> ClientOption {
    let mut o = ClientOption::default();
    o.set_access_url(access_url);
    o.set_timeout(Duration::from_secs(5));
    o.set_long_polling_timeout(LONG_POLL);
    o
}

/// A started producer of `topic`.
pub async fn producer(access_url: &str, topic: &str) -> Producer {
    let mut opt = ProducerOption::default();
    opt.set_topics(vec![topic]);
    let mut p = Producer::new(opt, option(access_url)).expect("producer");
    p.start().await.expect("producer starts");
    p
}

/// A started simple consumer of `topic` in `group`.
pub async fn consumer(access_url: &str, group: &str, topic: &str) -> SimpleConsumer {
    let mut opt = SimpleConsumerOption::default();
    opt.set_consumer_group(group);
    opt.set_topics(vec![topic]);
    let mut c = SimpleConsumer::new(opt, option(access_url)).expect("consumer");
    c.start().await.expect("consumer starts");
    c
}

/// A tag filter expression (`*`, `a||b`).
pub fn tag(expr: &str) -> FilterExpression {
    FilterExpression::new(FilterType::Tag, expr)
}

/// Receives until `expected` messages arrived (within [`RECEIVE_LIMIT`]), without acking.
/// Each round is one long poll, so the loop waits on arrivals, not on a clock.
pub async fn receive_n(
    c: &SimpleConsumer,
    topic: &str,
    filter: &FilterExpression,
    expected: usize,
    invisible: Duration,
) -> Vec<MessageView> {
    let deadline = tokio::time::Instant::now() + RECEIVE_LIMIT;
    let mut got = Vec::new();
    while got.len() < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "received {} of {expected} messages before the deadline",
            got.len()
        );
        got.extend(
            c.receive_with(topic, filter, 32, invisible)
                .await
                .expect("receive"),
        );
    }
    got
}

/// Receives for `rounds` long polls and returns everything (to prove nothing arrives).
pub async fn receive_rounds(
    c: &SimpleConsumer,
    topic: &str,
    filter: &FilterExpression,
    rounds: usize,
) -> Vec<MessageView> {
    let mut got = Vec::new();
    for _ in 0..rounds {
        got.extend(
            c.receive_with(topic, filter, 32, Duration::from_secs(10))
                .await
                .expect("receive"),
        );
    }
    got
}

/// The first message dead-lettered for `group`: waits (bounded) until `%DLQ%<group>` is
/// routable, then reads and acknowledges it with a consumer of a fresh group.
pub async fn dead_letter(cluster: &crate::TestCluster, group: &str) -> MessageView {
    let dlq = comet_vocab::system::dlq_topic(group);
    cluster.wait_routable(&dlq).await;
    let reader = consumer(
        &cluster.access_url(),
        &format!("dlq-reader-{}", crate::uuid_like()),
        &dlq,
    )
    .await;
    let mut dead = receive_n(&reader, &dlq, &tag("*"), 1, Duration::from_secs(30)).await;
    let first = dead.swap_remove(0);
    reader.ack(&first).await.expect("ack the dead letter");
    first
}
