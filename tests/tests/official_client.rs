//! The official RocketMQ 5 Rust client (`rocketmq` 5.0.0, unmodified) against Comet, in both
//! deployment modes: standalone (proxy → broker in process) and cluster (over gRPC).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use comet::admin::TopicType;
use comet_tests::client::{receive_n, receive_rounds, tag};
use comet_tests::{Mode, TestCluster, client, uuid_like};
use rocketmq::model::message::MessageBuilder;

/// Long polling the client asks for: short, so an empty queue answers quickly.
async fn round_trip(mode: Mode) {
    let cluster = TestCluster::start(mode).await;
    let topic = format!("orders-{}", uuid_like());
    let group = format!("g-{}", uuid_like());
    cluster.create_topic(&topic, 2, TopicType::Normal).await;
    let p = client::producer(&cluster.access_url(), &topic).await;
    let mut sent: HashMap<String, usize> = HashMap::new();
    for i in 0..20usize {
        let msg = MessageBuilder::builder()
            .set_topic(&topic)
            .set_tag(if i.is_multiple_of(2) { "even" } else { "odd" })
            .set_keys(vec![format!("key-{i}"), format!("order-{}", i / 5)])
            .set_properties(HashMap::from([
                ("index".to_owned(), i.to_string()),
                ("origin".to_owned(), "test".to_owned()),
            ]))
            .set_body(format!("body-{i}").into_bytes())
            .build()
            .expect("message");
        let receipt = p.send(msg).await.expect("send");
        assert!(!receipt.message_id().is_empty());
        sent.insert(receipt.message_id().to_owned(), i);
    }
    assert_eq!(sent.len(), 20, "message ids are unique");

    let c = client::consumer(&cluster.access_url(), &group, &topic).await;
    let got = receive_n(&c, &topic, &tag("*"), 20, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 20, "exactly the sent messages arrive");
    let mut seen = HashSet::new();
    for m in &got {
        let i = *sent
            .get(m.message_id())
            .unwrap_or_else(|| panic!("unknown message id {}", m.message_id()));
        assert!(seen.insert(i), "message {i} delivered twice");
        assert_eq!(m.topic(), topic);
        assert_eq!(m.body(), format!("body-{i}").as_bytes());
        assert_eq!(
            m.tag(),
            Some(if i.is_multiple_of(2) { "even" } else { "odd" })
        );
        assert_eq!(
            m.keys().to_vec(),
            vec![format!("key-{i}"), format!("order-{}", i / 5)]
        );
        assert_eq!(m.properties().get("index"), Some(&i.to_string()));
        assert_eq!(
            m.properties().get("origin").map(String::as_str),
            Some("test")
        );
        assert_eq!(m.delivery_attempt(), 1);
        assert!(m.born_timestamp() > 0);
        c.ack(m).await.expect("ack");
    }
    // Acked messages do not come back: both queues are empty now.
    let again = receive_rounds(&c, &topic, &tag("*"), 4).await;
    assert!(
        again.is_empty(),
        "acked messages were redelivered: {again:?}"
    );
    p.shutdown().await.expect("producer shutdown");
    c.shutdown().await.expect("consumer shutdown");
    cluster.stop().await;
}

async fn tag_filtering(mode: Mode) {
    let cluster = TestCluster::start(mode).await;
    let topic = format!("tags-{}", uuid_like());
    let group = format!("g-{}", uuid_like());
    cluster.create_topic(&topic, 1, TopicType::Normal).await;
    let p = client::producer(&cluster.access_url(), &topic).await;
    for i in 0..9usize {
        let t = ["a", "b", "c"][i % 3];
        let msg = MessageBuilder::builder()
            .set_topic(&topic)
            .set_tag(t)
            .set_body(format!("{t}-{i}").into_bytes())
            .build()
            .expect("message");
        p.send(msg).await.expect("send");
    }
    let c = client::consumer(&cluster.access_url(), &group, &topic).await;
    let got = receive_n(&c, &topic, &tag("a || c"), 6, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 6);
    for m in &got {
        let t = m.tag().expect("tag");
        assert!(t == "a" || t == "c", "filter let through tag {t}");
        assert!(m.body().starts_with(t.as_bytes()));
        c.ack(m).await.expect("ack");
    }
    let rest = receive_rounds(&c, &topic, &tag("a||c"), 2).await;
    assert!(rest.is_empty(), "{rest:?}");
    cluster.stop().await;
}

async fn unacked_comes_back(mode: Mode) {
    let cluster = TestCluster::start(mode).await;
    let topic = format!("retry-{}", uuid_like());
    let group = format!("g-{}", uuid_like());
    cluster
        .create_group(&group, 16, Some("customized:100ms"))
        .await;
    cluster.create_topic(&topic, 1, TopicType::Normal).await;
    let p = client::producer(&cluster.access_url(), &topic).await;
    let msg = MessageBuilder::builder()
        .set_topic(&topic)
        .set_tag("t")
        .set_body(b"once more".to_vec())
        .build()
        .expect("message");
    let id = p.send(msg).await.expect("send").message_id().to_owned();
    let c = client::consumer(&cluster.access_url(), &group, &topic).await;
    let first = receive_n(&c, &topic, &tag("*"), 1, Duration::from_secs(1)).await;
    assert_eq!(first[0].message_id(), id);
    assert_eq!(first[0].delivery_attempt(), 1);
    // Not acked: after the invisible time (1 s) plus the group's backoff it is delivered again.
    let second = receive_n(&c, &topic, &tag("*"), 1, Duration::from_secs(30)).await;
    assert_eq!(second[0].message_id(), id);
    assert_eq!(second[0].delivery_attempt(), 2);
    assert_eq!(second[0].body(), b"once more");
    c.ack(&second[0]).await.expect("ack with the new handle");
    // The first delivery's handle is stale now.
    assert!(
        c.ack(&first[0]).await.is_err(),
        "a stale receipt handle was accepted"
    );
    cluster.stop().await;
}

async fn dead_letter_after_max_attempts(mode: Mode) {
    let cluster = TestCluster::start(mode).await;
    let topic = format!("dlq-{}", uuid_like());
    let group = format!("g-{}", uuid_like());
    cluster
        .create_group(&group, 1, Some("customized:100ms"))
        .await;
    cluster.create_topic(&topic, 1, TopicType::Normal).await;
    let p = client::producer(&cluster.access_url(), &topic).await;
    let msg = MessageBuilder::builder()
        .set_topic(&topic)
        .set_tag("poison")
        .set_keys(vec!["k1"])
        .set_body(b"cannot be processed".to_vec())
        .build()
        .expect("message");
    let id = p.send(msg).await.expect("send").message_id().to_owned();
    let c = client::consumer(&cluster.access_url(), &group, &topic).await;
    // max_retries = 1: two deliveries, neither acked.
    for attempt in 1..=2 {
        let got = receive_n(&c, &topic, &tag("*"), 1, Duration::from_secs(1)).await;
        assert_eq!(got[0].message_id(), id);
        assert_eq!(got[0].delivery_attempt(), attempt);
    }
    // Then it is dead-lettered: the DLQ topic of the group holds it.
    let dead = client::dead_letter(&cluster, &group).await;
    assert_eq!(dead.message_id(), id);
    assert_eq!(dead.body(), b"cannot be processed");
    assert_eq!(dead.tag(), Some("poison"));
    // And the original group does not get it a third time.
    let more = receive_rounds(&c, &topic, &tag("*"), 2).await;
    assert!(more.is_empty(), "{more:?}");
    cluster.stop().await;
}

comet_tests::both_modes!(
    round_trip,
    tag_filtering,
    unacked_comes_back,
    dead_letter_after_max_attempts,
);
