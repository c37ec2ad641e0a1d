//! Recall of delay messages end to end with the Comet Rust SDK: a standalone node and a
//! cluster of separate controller, broker and proxy nodes (the proxy routes a recall by the
//! handle's broker set), before and after delivery, and across a restart of the deployment.
//!
//! Non-delivery is observed without waiting out a fixed time: timers deliver in time order, so
//! once a later "marker" delay message has arrived, a recalled earlier one would have too.

use std::time::Duration;

use comet::admin::TopicType;
use comet_sdk::{FilterExpression, Message, Producer, SendReceipt, SimpleConsumer};
use comet_tests::{Mode, TestCluster, uuid_like};

/// Longest a test waits for the marker message.
const LIMIT: Duration = Duration::from_secs(30);

struct Names {
    topic: String,
    group: String,
}

async fn names(cluster: &TestCluster) -> Names {
    let n = Names {
        topic: format!("recall-{}", uuid_like()),
        group: format!("g-{}", uuid_like()),
    };
    cluster.create_topic(&n.topic, 2, TopicType::Delay).await;
    cluster.create_group(&n.group, 16, None).await;
    cluster.wait_routable(&n.topic).await;
    n
}

async fn producer(cluster: &TestCluster, topic: &str) -> Producer {
    Producer::builder()
        .endpoints(cluster.access_url())
        .topics([topic])
        .build()
        .await
        .expect("producer starts")
}

async fn consumer(cluster: &TestCluster, n: &Names) -> SimpleConsumer {
    SimpleConsumer::builder(&n.group)
        .endpoints(cluster.access_url())
        .subscribe(&n.topic, FilterExpression::all())
        .await_duration(Duration::from_secs(2))
        .build()
        .await
        .expect("simple consumer starts")
}

async fn send_delayed(p: &Producer, topic: &str, body: &str, delay: Duration) -> SendReceipt {
    p.send(
        Message::builder(topic)
            .delay(delay)
            .body(body.to_owned())
            .build()
            .expect("valid"),
    )
    .await
    .expect("delay send")
}

/// Receives (and acks) until a message with body `marker` arrived; returns every body.
async fn receive_until(c: &SimpleConsumer, marker: &str) -> Vec<String> {
    let started = tokio::time::Instant::now();
    let mut bodies = Vec::new();
    while !bodies.iter().any(|b| b == marker) {
        assert!(
            started.elapsed() < LIMIT,
            "{marker} never arrived; got {bodies:?}"
        );
        for m in c
            .receive(16, Duration::from_secs(10))
            .await
            .expect("receive")
        {
            c.ack(&m).await.expect("ack");
            bodies.push(String::from_utf8_lossy(m.body()).into_owned());
        }
    }
    bodies
}

async fn recall_before_and_after_delivery(mode: Mode) {
    let cluster = TestCluster::start(mode).await;
    let n = names(&cluster).await;
    let p = producer(&cluster, &n.topic).await;
    let recalled = send_delayed(&p, &n.topic, "recalled", Duration::from_millis(1500)).await;
    let marker = send_delayed(&p, &n.topic, "marker", Duration::from_millis(2500)).await;
    let handle = recalled.recall_handle().expect("recall handle");
    assert_eq!(
        p.recall(&n.topic, handle).await.expect("recalled"),
        recalled.message_id()
    );
    // A repeated recall answers the same.
    assert_eq!(
        p.recall(&n.topic, handle).await.expect("recalled again"),
        recalled.message_id()
    );
    let c = consumer(&cluster, &n).await;
    assert_eq!(receive_until(&c, "marker").await, ["marker"]);
    // Delivered: too late to recall, and the error says so.
    let e = p
        .recall(&n.topic, marker.recall_handle().expect("recall handle"))
        .await
        .expect_err("already delivered");
    assert_eq!(e.code(), Some(40400), "{e}");
    assert!(e.to_string().contains("already delivered"), "{e}");
    p.shutdown().await;
    c.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_standalone_node_when_a_delay_message_is_recalled_should_never_deliver_it() {
    recall_before_and_after_delivery(Mode::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_cluster_when_a_delay_message_is_recalled_should_never_deliver_it() {
    recall_before_and_after_delivery(Mode::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_recalls_when_the_deployment_restarts_should_hold_and_handles_stay_valid() {
    let cluster = TestCluster::start(Mode::Cluster).await;
    let n = names(&cluster).await;
    let p = producer(&cluster, &n.topic).await;
    let before = send_delayed(&p, &n.topic, "recalled-before", Duration::from_secs(3)).await;
    let after = send_delayed(&p, &n.topic, "recalled-after", Duration::from_secs(8)).await;
    send_delayed(&p, &n.topic, "marker", Duration::from_secs(9)).await;
    p.recall(&n.topic, before.recall_handle().expect("handle"))
        .await
        .expect("recalled before the restart");
    p.shutdown().await;
    let dir = cluster.stop().await;

    let cluster = TestCluster::start_in(Mode::Cluster, dir, |_| {}).await;
    cluster.wait_routable(&n.topic).await;
    let p = producer(&cluster, &n.topic).await;
    // A handle from before the restart recalls after it.
    assert_eq!(
        p.recall(&n.topic, after.recall_handle().expect("handle"))
            .await
            .expect("recalled after the restart"),
        after.message_id()
    );
    let c = consumer(&cluster, &n).await;
    assert_eq!(receive_until(&c, "marker").await, ["marker"]);
    p.shutdown().await;
    c.shutdown().await;
    cluster.stop().await;
}
