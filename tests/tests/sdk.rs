//! The Comet Rust SDK (`comet-sdk`) against a real standalone node started by each test:
//! producer (single, batch, async, FIFO, delay, transactions with check-back, recall),
//! simple consumer (tag and SQL filters, ack, batch ack, invisibility), push consumer (retries
//! with a higher delivery attempt, the concurrency bound, FIFO order under failures, dead
//! letters, batched acks, graceful shutdown), TLS and request signing through a relay
//! ([`tap`]), and proxy restarts.
//!
//! The SDK crate itself has no server dependency; these tests live here because this crate
//! may depend on everything.

#[path = "sdk/tap.rs"]
mod tap;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use comet::admin::{self, OffsetCommand, ProgressSpec, TopicType};
use comet_sdk::{
    ConsumeResult, Credentials, Error, FilterExpression, Invalid, Message, MessageListener,
    MessageView, Producer, PushConsumer, PushConsumerBuilder, SimpleConsumer, Tls,
    TransactionResolution,
};
use comet_tests::{Mode, TestCluster, uuid_like, wait_until};
use tokio::sync::mpsc;

use tap::{Expected, Pki, Tap};

/// Longest a test waits for one expected delivery.
const DELIVERY_LIMIT: Duration = Duration::from_secs(30);

/// A consumer group as a test creates it.
#[derive(Clone, Copy)]
struct GroupSpec {
    max_retries: u32,
    fifo: bool,
    backoff: Option<&'static str>,
}

/// 16 retries on the server's default schedule.
const GROUP: GroupSpec = GroupSpec {
    max_retries: 16,
    fifo: false,
    backoff: None,
};

/// 16 retries, 100 ms apart: a failed message comes back quickly.
const QUICK_RETRY_GROUP: GroupSpec = GroupSpec {
    max_retries: 16,
    fifo: false,
    backoff: Some("customized:100ms"),
};

/// One test's node, with a topic `<prefix>-<id>` and a consumer group `g-<id>` on it.
struct Fixture {
    cluster: TestCluster,
    topic: String,
    group: String,
}

impl Fixture {
    /// A fresh standalone node with the topic and the group.
    async fn start(prefix: &str, queues: u32, kind: TopicType, group: GroupSpec) -> Fixture {
        Fixture::on(
            TestCluster::start(Mode::Local).await,
            prefix,
            queues,
            kind,
            group,
        )
        .await
    }

    /// The topic and the group on `cluster`.
    async fn on(
        cluster: TestCluster,
        prefix: &str,
        queues: u32,
        kind: TopicType,
        group: GroupSpec,
    ) -> Fixture {
        let topic = format!("{prefix}-{}", uuid_like());
        let name = format!("g-{}", uuid_like());
        cluster.create_topic(&topic, queues, kind).await;
        cluster
            .create_group_with(&name, group.max_retries, group.fifo, group.backoff)
            .await;
        Fixture {
            cluster,
            topic,
            group: name,
        }
    }

    async fn producer(&self) -> Producer {
        producer(&self.cluster, &self.topic).await
    }

    /// A simple consumer of the group on the topic.
    async fn simple(&self, filter: FilterExpression) -> SimpleConsumer {
        simple(&self.cluster, &self.group, &self.topic, filter).await
    }

    /// A push consumer of the group on every message of the topic, to finish building.
    fn push(&self) -> PushConsumerBuilder {
        PushConsumer::builder(&self.group)
            .endpoints(self.cluster.access_url())
            .subscribe(&self.topic, FilterExpression::all())
    }

    fn msg(&self, body: &str) -> Message {
        msg(&self.topic, body)
    }

    /// Sends `n` messages with bodies `<prefix><i>`.
    async fn send_numbered(&self, p: &Producer, prefix: &str, n: usize) {
        for i in 0..n {
            p.send(self.msg(&format!("{prefix}{i}")))
                .await
                .expect("send");
        }
    }

    /// The broker's view of the group on the topic: `(backlog, in flight)`.
    async fn progress(&self) -> (i64, i64) {
        let cmd = OffsetCommand::Progress(ProgressSpec {
            group: self.group.clone(),
            topic: self.topic.clone(),
        });
        let v = admin::offset(&self.cluster.admin(), &cmd)
            .await
            .expect("consumer progress");
        let n = |key: &str| v[key].as_i64().unwrap_or(-1);
        (n("backlog"), n("inflight"))
    }
}

async fn producer(cluster: &TestCluster, topic: &str) -> Producer {
    Producer::builder()
        .endpoints(cluster.access_url())
        .topics([topic])
        .build()
        .await
        .expect("producer starts")
}

async fn simple(
    cluster: &TestCluster,
    group: &str,
    topic: &str,
    f: FilterExpression,
) -> SimpleConsumer {
    SimpleConsumer::builder(group)
        .endpoints(cluster.access_url())
        .subscribe(topic, f)
        .await_duration(Duration::from_secs(2))
        .build()
        .await
        .expect("simple consumer starts")
}

fn msg(topic: &str, body: &str) -> Message {
    Message::builder(topic)
        .body(body.to_owned())
        .build()
        .expect("valid message")
}

/// Receives (and acks) until `n` messages arrived or `limit` passed.
async fn receive_acked(c: &SimpleConsumer, n: usize, limit: Duration) -> Vec<MessageView> {
    let started = tokio::time::Instant::now();
    let mut got = Vec::new();
    while got.len() < n && started.elapsed() < limit {
        for m in c
            .receive(32, Duration::from_secs(10))
            .await
            .expect("receive")
        {
            c.ack(&m).await.expect("ack");
            got.push(m);
        }
    }
    got
}

/// Waits for the next item of `rx` within [`DELIVERY_LIMIT`].
async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(DELIVERY_LIMIT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {DELIVERY_LIMIT:?}"))
        .expect("listener channel open")
}

/// A listener that reports what `f` makes of each message on `tx` and returns its verdict.
fn reporting<T: Send + 'static>(
    tx: mpsc::UnboundedSender<T>,
    f: impl Fn(&MessageView) -> (T, ConsumeResult) + Send + Sync + 'static,
) -> impl MessageListener {
    let f = Arc::new(f);
    move |m: MessageView| {
        let (tx, f) = (tx.clone(), f.clone());
        async move {
            let (report, verdict) = f(&m);
            let _ = tx.send(report);
            verdict
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_producer_when_sending_single_batch_and_async_should_reach_a_tag_filtered_simple_consumer()
 {
    let fx = Fixture::start("sdk-normal", 2, TopicType::Normal, GROUP).await;
    let topic = &fx.topic;
    let p = fx.producer().await;
    let c = fx.simple(FilterExpression::tag("a||b")).await;

    let mut want = HashSet::new();
    let r = p
        .send(
            Message::builder(topic)
                .tag("a")
                .keys(["k1"])
                .property("p", "1")
                .body("one")
                .build()
                .expect("valid"),
        )
        .await
        .expect("send");
    assert!(!r.message_id().is_empty());
    assert_eq!(r.topic(), topic);
    want.insert(r.message_id().to_owned());
    let batch: Vec<Message> = (0..3)
        .map(|i| {
            Message::builder(topic)
                .tag("b")
                .body(format!("batch {i}"))
                .build()
                .expect("valid")
        })
        .collect();
    for r in p.send_batch(batch).await.expect("batch send") {
        want.insert(r.message_id().to_owned());
    }
    let handle = p.send_async(
        Message::builder(topic)
            .tag("a")
            .body("async")
            .build()
            .expect("valid"),
    );
    want.insert(handle.await.expect("async send").message_id().to_owned());
    // Filtered out by the tag expression.
    p.send(
        Message::builder(topic)
            .tag("c")
            .body("other")
            .build()
            .expect("valid"),
    )
    .await
    .expect("send c");

    let got = receive_acked(&c, want.len(), DELIVERY_LIMIT).await;
    let ids: HashSet<String> = got.iter().map(|m| m.message_id().to_owned()).collect();
    assert_eq!(ids, want);
    let first = got
        .iter()
        .find(|m| m.body().as_ref() == b"one")
        .expect("first message");
    assert_eq!(first.tag(), Some("a"));
    assert_eq!(first.keys(), ["k1"]);
    assert_eq!(first.properties().get("p").map(String::as_str), Some("1"));
    assert_eq!(first.delivery_attempt(), 1);
    let more = c
        .receive(32, Duration::from_secs(10))
        .await
        .expect("receive");
    assert!(
        more.iter().all(|m| m.tag() != Some("c")),
        "tag c leaked through the filter"
    );
    p.shutdown().await;
    c.shutdown().await;
    fx.cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_simple_consumer_when_it_delays_a_message_should_get_it_again_with_a_higher_attempt()
 {
    let fx = Fixture::start("sdk-inv", 1, TopicType::Normal, QUICK_RETRY_GROUP).await;
    let topic = &fx.topic;
    let p = fx.producer().await;
    let c = fx.simple(FilterExpression::sql("n > 1")).await;
    p.send(
        Message::builder(topic)
            .property("n", "1")
            .body("low")
            .build()
            .expect("valid"),
    )
    .await
    .expect("send low");
    let id = p
        .send(
            Message::builder(topic)
                .property("n", "5")
                .body("high")
                .build()
                .expect("valid"),
        )
        .await
        .expect("send high")
        .message_id()
        .to_owned();
    let mut first = Vec::new();
    while first.is_empty() {
        first = c
            .receive(1, Duration::from_secs(30))
            .await
            .expect("receive");
    }
    assert_eq!(
        first[0].message_id(),
        id,
        "the SQL filter lets only n > 1 through"
    );
    let mut m = first.remove(0);
    c.change_invisible_duration(&mut m, Duration::from_secs(1))
        .await
        .expect("change invisible duration");
    let again = receive_acked(&c, 1, DELIVERY_LIMIT).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message_id(), id);
    assert_eq!(again[0].delivery_attempt(), 2);
    p.shutdown().await;
    c.shutdown().await;
    fx.cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_invalid_input_when_building_or_sending_should_fail_with_typed_errors_before_any_rpc()
{
    let fx = Fixture::start("sdk-val", 1, TopicType::Normal, GROUP).await;
    let (cluster, topic) = (&fx.cluster, &fx.topic);
    let p = fx.producer().await;
    let cases = [
        (Message::builder("").body("b").build(), Invalid::EmptyTopic),
        (Message::builder(topic).build(), Invalid::EmptyBody),
        (
            Message::builder(topic).tag("x|y").body("b").build(),
            Invalid::IllegalTag("x|y".into()),
        ),
        (
            Message::builder(topic).keys([" "]).body("b").build(),
            Invalid::IllegalKey,
        ),
        (
            Message::builder(topic).message_group("").body("b").build(),
            Invalid::IllegalMessageGroup,
        ),
    ];
    for (built, want) in cases {
        match built {
            Err(Error::InvalidMessage(got)) => assert_eq!(got, want),
            other => panic!("expected {want:?}, got {other:?}"),
        }
    }
    let conflict = Message::builder(topic)
        .message_group("g")
        .delay(Duration::from_secs(5))
        .body("b")
        .build();
    assert!(matches!(
        conflict,
        Err(Error::InvalidMessage(Invalid::Conflict(_)))
    ));
    // Over the server's max body size (the settings echo's; Comet's is just under 4 MiB).
    let big = Message::builder(topic)
        .body(vec![b'x'; (4 << 20) + 1])
        .build()
        .expect("valid shape");
    match p.send(big).await {
        Err(Error::InvalidMessage(Invalid::BodyTooLarge { size, max })) => {
            assert_eq!(size, (4 << 20) + 1);
            assert!(max < size && max > 1 << 20, "max {max}");
        }
        other => panic!("expected BodyTooLarge, got {other:?}"),
    }
    let mixed = vec![
        fx.msg("a"),
        Message::builder(topic)
            .message_group("g")
            .body("b")
            .build()
            .expect("valid"),
    ];
    assert!(matches!(
        p.send_batch(mixed).await,
        Err(Error::InvalidMessage(Invalid::Batch(_)))
    ));
    assert!(matches!(
        p.send_batch(Vec::new()).await,
        Err(Error::InvalidMessage(Invalid::Batch(_)))
    ));
    // A FIFO message to a NORMAL topic: no queue accepts it.
    let fifo = Message::builder(topic)
        .message_group("g")
        .body("b")
        .build()
        .expect("valid");
    assert!(matches!(p.send(fifo).await, Err(Error::NoQueue { .. })));
    // Transactions need a checker.
    assert!(matches!(
        p.begin_transaction(),
        Err(Error::Config {
            setting: "transaction_checker",
            ..
        })
    ));
    // Builders refuse what cannot work.
    assert!(matches!(
        Producer::builder().build().await,
        Err(Error::Config {
            setting: "endpoints",
            ..
        })
    ));
    assert!(matches!(
        PushConsumer::builder("g")
            .endpoints(cluster.access_url())
            .subscribe(topic, FilterExpression::all())
            .build()
            .await,
        Err(Error::Config {
            setting: "listener",
            ..
        })
    ));
    let c = simple(
        cluster,
        &format!("g-{}", uuid_like()),
        topic,
        FilterExpression::all(),
    )
    .await;
    assert!(matches!(
        c.receive(0, Duration::from_secs(5)).await,
        Err(Error::InvalidMessage(Invalid::Argument { .. }))
    ));
    // An unknown topic is the server's permanent error, with its code.
    let unknown = p
        .send(msg("sdk-no-such-topic", "b"))
        .await
        .expect_err("unknown topic");
    assert!(!unknown.is_retryable(), "{unknown}");
    assert_eq!(unknown.code(), Some(40402), "{unknown}");
    p.shutdown().await;
    c.shutdown().await;
    fx.cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_delay_message_when_recalled_should_answer_its_id_and_refuse_bad_handles() {
    let fx = Fixture::start("sdk-recall", 1, TopicType::Delay, GROUP).await;
    let topic = &fx.topic;
    let p = fx.producer().await;
    let r = p
        .send(
            Message::builder(topic)
                .delay(Duration::from_secs(60))
                .body("later")
                .build()
                .expect("valid"),
        )
        .await
        .expect("delay send");
    let handle = r
        .recall_handle()
        .expect("a delay message has a recall handle");
    let id = p.recall(topic, handle).await.expect("recalled");
    assert_eq!(id, r.message_id());
    // A malformed handle is the server's permanent BAD_REQUEST.
    let e = p
        .recall(topic, "not-a-handle")
        .await
        .expect_err("malformed handle");
    assert!(!e.is_retryable(), "{e}");
    assert_eq!(e.code(), Some(40000), "{e}");
    p.shutdown().await;
    fx.cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_transactions_when_committed_rolled_back_or_left_open_should_follow_the_client_and_the_checker()
 {
    let cluster = TestCluster::start_with(Mode::Local, |cfg| {
        cfg.broker.transaction_timeout = Duration::from_millis(500).into();
        cfg.broker.transaction_check_interval = Duration::from_millis(700).into();
        cfg.broker.transaction_max_checks = 10;
    })
    .await;
    let fx = Fixture::on(cluster, "sdk-tx", 1, TopicType::Transaction, GROUP).await;
    let topic = &fx.topic;
    let (checked_tx, mut checked) = mpsc::unbounded_channel();
    let p = Producer::builder()
        .endpoints(fx.cluster.access_url())
        .topics([topic.as_str()])
        .transaction_checker(move |m: MessageView| {
            let checked_tx = checked_tx.clone();
            async move {
                let _ = checked_tx.send(m.message_id().to_owned());
                TransactionResolution::Commit
            }
        })
        .build()
        .await
        .expect("transactional producer");
    let tx = p.begin_transaction().expect("transaction");
    let committed = tx.send(fx.msg("commit")).await.expect("half send");
    assert!(committed.transaction_id().is_some());
    tx.commit().await.expect("commit");
    let tx = p.begin_transaction().expect("transaction");
    tx.send(fx.msg("rollback")).await.expect("half send");
    tx.rollback().await.expect("rollback");
    let tx = p.begin_transaction().expect("transaction");
    let open = tx.send(fx.msg("checked")).await.expect("half send");
    drop(tx); // neither committed nor rolled back: the server asks the checker
    assert_eq!(next(&mut checked, "check-back").await, open.message_id());

    let c = fx.simple(FilterExpression::all()).await;
    let got = receive_acked(&c, 2, DELIVERY_LIMIT).await;
    let bodies: HashSet<&[u8]> = got.iter().map(|m| m.body().as_ref()).collect();
    assert_eq!(bodies, HashSet::from([&b"commit"[..], &b"checked"[..]]));
    p.shutdown().await;
    c.shutdown().await;
    fx.cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_push_consumer_when_its_listener_fails_should_redeliver_with_a_higher_attempt_within_the_concurrency_bound()
 {
    let fx = Fixture::start("sdk-push", 2, TopicType::Normal, QUICK_RETRY_GROUP).await;
    let p = fx.producer().await;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let listener = {
        let (running, peak) = (running.clone(), peak.clone());
        move |m: MessageView| {
            let (running, peak, seen_tx) = (running.clone(), peak.clone(), seen_tx.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                // Holds the slot long enough for the others to pile up behind the bound.
                tokio::time::sleep(Duration::from_millis(50)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                let fail = m.body().as_ref() == b"fail once" && m.delivery_attempt() == 1;
                let _ = seen_tx.send((m.body().clone(), m.delivery_attempt()));
                if fail {
                    ConsumeResult::Failure
                } else {
                    ConsumeResult::Success
                }
            }
        }
    };
    let consumer = fx
        .push()
        .max_concurrency(3)
        .listener(listener)
        .build()
        .await
        .expect("push consumer starts");
    p.send(fx.msg("fail once")).await.expect("send");
    fx.send_numbered(&p, "ok ", 20).await;
    let mut ok = HashSet::new();
    let mut retried = None;
    while ok.len() < 20 || retried.is_none() {
        let (body, attempt) = next(&mut seen, "push delivery").await;
        if body.as_ref() == b"fail once" {
            if attempt > 1 {
                retried = Some(attempt);
            }
        } else {
            ok.insert(body);
        }
    }
    assert_eq!(retried, Some(2));
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        peak <= 3,
        "{peak} listener calls ran at once; the bound is 3"
    );
    consumer.shutdown().await;
    p.shutdown().await;
    fx.cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_fifo_group_when_a_message_keeps_failing_should_keep_order_and_dead_letter_it() {
    let fifo_group = GroupSpec {
        max_retries: 2,
        fifo: true,
        backoff: Some("customized:100ms"),
    };
    let fx = Fixture::start("sdk-fifo", 2, TopicType::Fifo, fifo_group).await;
    let p = fx.producer().await;
    for i in 0..6 {
        let m = Message::builder(&fx.topic)
            .message_group("order-1")
            .body(format!("{i}"))
            .build()
            .expect("valid");
        p.send(m).await.expect("fifo send");
    }
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let consumer = fx
        .push()
        .listener(reporting(seen_tx, |m| {
            let body = String::from_utf8_lossy(m.body()).into_owned();
            // "1" always fails; "3" fails on its first attempt only.
            let result = match (body.as_str(), m.delivery_attempt()) {
                ("1", _) | ("3", 1) => ConsumeResult::Failure,
                _ => ConsumeResult::Success,
            };
            ((body, m.delivery_attempt()), result)
        }))
        .build()
        .await
        .expect("push consumer starts");
    let mut order = Vec::new();
    while order.last().map(|(b, _): &(String, u32)| b.as_str()) != Some("5") {
        order.push(next(&mut seen, "fifo delivery").await);
    }
    let bodies: Vec<&str> = order.iter().map(|(b, _)| b.as_str()).collect();
    // max_retries 2 → 3 attempts of "1", then it is dead-lettered and "2" follows.
    assert_eq!(
        bodies,
        ["0", "1", "1", "1", "2", "3", "3", "4", "5"],
        "{order:?}"
    );
    let attempts: Vec<u32> = order
        .iter()
        .filter(|(b, _)| b == "1")
        .map(|(_, a)| *a)
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
    consumer.shutdown().await;
    let dlq = comet_vocab::system::dlq_topic(&fx.group);
    fx.cluster.wait_routable(&dlq).await;
    let reader = simple(
        &fx.cluster,
        &format!("dlq-{}", uuid_like()),
        &dlq,
        FilterExpression::all(),
    )
    .await;
    let dead = receive_acked(&reader, 1, DELIVERY_LIMIT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body().as_ref(), b"1");
    reader.shutdown().await;
    p.shutdown().await;
    fx.cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_push_consumer_when_shut_down_mid_stream_should_lose_nothing() {
    let fx = Fixture::start("sdk-stop", 2, TopicType::Normal, QUICK_RETRY_GROUP).await;
    let p = fx.producer().await;
    let total = 40;
    fx.send_numbered(&p, "m", total).await;
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let first = {
        let done_tx = done_tx.clone();
        fx.push()
            .max_concurrency(2)
            .listener(move |m: MessageView| {
                let done_tx = done_tx.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = done_tx.send(m.body().clone());
                    ConsumeResult::Success
                }
            })
            .build()
            .await
            .expect("first consumer")
    };
    // Stop once a few are handled, with more cached or running.
    let mut handled = HashSet::new();
    while handled.len() < 5 {
        handled.insert(next(&mut done, "first consumer's delivery").await);
    }
    first.shutdown().await;
    while let Ok(b) = done.try_recv() {
        handled.insert(b);
    }
    assert_eq!(
        first.cached_messages(),
        0,
        "the shutdown left messages cached"
    );
    let second = fx
        .push()
        .listener(reporting(done_tx, |m| {
            (m.body().clone(), ConsumeResult::Success)
        }))
        .build()
        .await
        .expect("second consumer");
    while handled.len() < total {
        handled.insert(next(&mut done, "second consumer's delivery").await);
    }
    assert_eq!(handled.len(), total);
    second.shutdown().await;
    p.shutdown().await;
    fx.cluster.stop().await;
}

/// A node that advertises a [`Tap`] relay in front of it (which the caller then starts on the
/// returned listener), with the fixture's topic and group.
async fn behind_tap(
    prefix: &str,
    queues: u32,
    group: GroupSpec,
) -> (Fixture, tokio::net::TcpListener) {
    let (listener, tap_addr) = Tap::bind().await;
    let cluster = TestCluster::start_with(Mode::Local, |cfg| {
        cfg.proxy.advertised_endpoint = tap_addr.to_string();
    })
    .await;
    let fx = Fixture::on(cluster, prefix, queues, TopicType::Normal, group).await;
    (fx, listener)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_push_consumer_when_acking_many_messages_should_batch_acks_and_lose_none_at_shutdown()
 {
    let (fx, listener) = behind_tap("sdk-acks", 2, GROUP).await;
    let tap = Tap::start(listener, fx.cluster.proxy, None, None);
    let access = tap.addr.to_string();
    let p = Producer::builder()
        .endpoints(&access)
        .topics([fx.topic.as_str()])
        .build()
        .await
        .expect("producer through the tap");
    let total = 300;
    for chunk in 0..total / 50 {
        let batch = (0..50)
            .map(|i| fx.msg(&format!("m{}", chunk * 50 + i)))
            .collect();
        p.send_batch(batch).await.expect("batch send");
    }
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let consumer = PushConsumer::builder(&fx.group)
        .endpoints(&access)
        .subscribe(&fx.topic, FilterExpression::all())
        .listener(reporting(seen_tx, |m| {
            (
                (m.body().to_vec(), m.delivery_attempt()),
                ConsumeResult::Success,
            )
        }))
        .build()
        .await
        .expect("push consumer through the tap");
    let mut deliveries: HashMap<Vec<u8>, Vec<u32>> = HashMap::new();
    while deliveries.len() < total {
        let (body, attempt) = next(&mut seen, "push delivery").await;
        deliveries.entry(body).or_default().push(attempt);
    }
    // The last listener has just returned: its ack may still wait in a batch.
    consumer.shutdown().await;
    assert_eq!(
        consumer.cached_messages(),
        0,
        "shutdown left messages cached"
    );
    while let Ok((body, attempt)) = seen.try_recv() {
        deliveries.entry(body).or_default().push(attempt);
    }
    let again: Vec<_> = deliveries.iter().filter(|(_, a)| **a != [1]).collect();
    assert!(again.is_empty(), "delivered more than once: {again:?}");
    let acks = tap.calls("AckMessage");
    assert!(
        acks > 0 && acks <= total / 2,
        "{acks} AckMessage calls for {total} messages"
    );
    // Every ack landed before the shutdown returned: nothing is in flight to come back.
    let mut last = (-1, -1);
    wait_until("the group drained", Duration::from_secs(10), async || {
        last = fx.progress().await;
        last == (0, 0)
    })
    .await;
    p.shutdown().await;
    fx.cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_tls_and_credentials_when_connecting_should_trust_only_the_given_ca_and_sign_every_request()
 {
    let (fx, listener) = behind_tap("sdk-tls", 1, GROUP).await;
    let pki = Pki::generate();
    let credentials = Credentials::new("sdk-ak", "sdk-secret");
    let tap = Tap::start(
        listener,
        fx.cluster.proxy,
        Some(pki.server.clone()),
        Some(Expected {
            access_key: "sdk-ak".into(),
            secret: "sdk-secret".into(),
        }),
    );
    let access = tap.addr.to_string();
    let trusted = Tls::Ca {
        pem: pki.ca_pem.clone().into_bytes(),
        domain: None,
    };
    let p = Producer::builder()
        .endpoints(&access)
        .topics([fx.topic.as_str()])
        .tls(trusted.clone())
        .credentials(credentials.clone())
        .build()
        .await
        .expect("producer over TLS");
    let total = 10;
    fx.send_numbered(&p, "secure ", total).await;
    let c = SimpleConsumer::builder(&fx.group)
        .endpoints(&access)
        .subscribe(&fx.topic, FilterExpression::all())
        .await_duration(Duration::from_secs(2))
        .tls(trusted)
        .credentials(credentials.clone())
        .build()
        .await
        .expect("simple consumer over TLS");
    let mut got = HashSet::new();
    let mut receives_with_messages = 0;
    let started = tokio::time::Instant::now();
    while got.len() < total && started.elapsed() < DELIVERY_LIMIT {
        let batch = c
            .receive(32, Duration::from_secs(10))
            .await
            .expect("receive");
        if batch.is_empty() {
            continue;
        }
        receives_with_messages += 1;
        for r in c.ack_many(&batch).await {
            r.expect("batch ack");
        }
        got.extend(batch.iter().map(|m| m.body().clone()));
    }
    assert_eq!(got.len(), total);
    assert_eq!(
        tap.calls("AckMessage"),
        receives_with_messages,
        "one AckMessage per received batch"
    );
    assert!(tap.calls("Telemetry") > 0 && tap.calls("SendMessage") >= total);
    assert_eq!(tap.refused(), Vec::<String>::new());
    assert!(tap.signed() >= total + receives_with_messages);

    // A CA that did not issue the relay's certificate: refused with a typed error.
    let stranger = Pki::generate();
    let refused = Producer::builder()
        .endpoints(&access)
        .topics([fx.topic.as_str()])
        .tls(Tls::Ca {
            pem: stranger.ca_pem.into_bytes(),
            domain: None,
        })
        .credentials(credentials)
        .build()
        .await
        .expect_err("an untrusted server certificate");
    assert!(matches!(refused, Error::Tls { .. }), "{refused}");
    assert!(!refused.is_retryable());
    p.shutdown().await;
    c.shutdown().await;
    fx.cluster.stop().await;
}

// The example files themselves (their `main`s are unused here).
#[allow(dead_code)]
#[path = "../../crates/sdk/examples/batch.rs"]
mod example_batch;
#[allow(dead_code)]
#[path = "../../crates/sdk/examples/delay.rs"]
mod example_delay;
#[allow(dead_code)]
#[path = "../../crates/sdk/examples/fifo.rs"]
mod example_fifo;
#[allow(dead_code)]
#[path = "../../crates/sdk/examples/producer.rs"]
mod example_producer;
#[allow(dead_code)]
#[path = "../../crates/sdk/examples/push_consumer.rs"]
mod example_push_consumer;
#[allow(dead_code)]
#[path = "../../crates/sdk/examples/simple_consumer.rs"]
mod example_simple_consumer;
#[allow(dead_code)]
#[path = "../../crates/sdk/examples/transaction.rs"]
mod example_transaction;

/// The SDK's examples, run against a fresh node after exactly the `comet` commands their doc
/// comments list (`//! $ comet ...`).
mod examples {
    use clap::Parser;
    use comet::admin::{GroupCommand, TopicCommand};
    use comet::args::{Cli, Command};
    use comet_tests::{Mode, TestCluster};

    macro_rules! example {
        ($($name:ident => $module:ident),* $(,)?) => {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let source = include_str!(concat!(
                        "../../crates/sdk/examples/", stringify!($name), ".rs"
                    ));
                    run_example(source, |endpoint| async move {
                        crate::$module::run(&endpoint)
                            .await
                            .map_err(|e| e.to_string())
                    })
                    .await;
                }
            )*
        };
    }

    example!(
        producer => example_producer,
        batch => example_batch,
        fifo => example_fifo,
        delay => example_delay,
        transaction => example_transaction,
        simple_consumer => example_simple_consumer,
        push_consumer => example_push_consumer,
    );

    /// Starts a node, applies the example's `//! $ comet` commands and runs it.
    async fn run_example<F, Fut>(source: &str, run: F)
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let cluster = TestCluster::start(Mode::Local).await;
        let commands: Vec<&str> = source
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .filter_map(|l| l.strip_prefix("//! $ "))
            .collect();
        assert!(!commands.is_empty(), "the example lists no comet commands");
        for line in commands {
            let cli = Cli::try_parse_from(line.split_whitespace())
                .unwrap_or_else(|e| panic!("{line:?} is not a comet command: {e}"));
            match cli.command {
                Command::Topic {
                    cmd: TopicCommand::Create(t),
                    ..
                } => {
                    cluster
                        .create_topic(&t.name, t.queues, t.message_type)
                        .await;
                }
                Command::Group {
                    cmd: GroupCommand::Create(g),
                    ..
                } => {
                    cluster
                        .create_group_with(&g.name, g.max_retries, g.fifo, g.backoff.as_deref())
                        .await;
                }
                _ => panic!("{line:?}: only topic and group creation are expected"),
            }
        }
        let outcome = run(cluster.access_url()).await;
        cluster.stop().await;
        if let Err(e) = outcome {
            panic!("the example failed: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_running_clients_when_the_node_restarts_on_its_data_should_resume_without_new_clients()
 {
    let fx = Fixture::start("sdk-restart", 2, TopicType::Normal, QUICK_RETRY_GROUP).await;
    let address = fx.cluster.proxy;
    let p = fx.producer().await;
    let c = fx.simple(FilterExpression::all()).await;
    let before = p.send(fx.msg("before")).await.expect("send before");
    let got = receive_acked(&c, 1, DELIVERY_LIMIT).await;
    assert_eq!(
        got.first().map(MessageView::message_id),
        Some(before.message_id())
    );

    let Fixture { cluster, topic, .. } = fx;
    let dir = cluster.stop().await;
    // The same data directory and the same client address (clients keep their endpoints).
    let cluster = TestCluster::start_in(Mode::Local, dir, |cfg| {
        cfg.proxy.listen = address.to_string();
    })
    .await;
    // The first send may land while channels reconnect; the producer's retries cover it.
    let mut after = None;
    for _ in 0..10 {
        match p.send(msg(&topic, "after")).await {
            Ok(r) => {
                after = Some(r);
                break;
            }
            Err(e) => assert!(e.is_retryable(), "a permanent error after restart: {e}"),
        }
    }
    let after = after.expect("the producer sends again after the restart");
    let got = receive_acked(&c, 1, DELIVERY_LIMIT).await;
    assert_eq!(
        got.first().map(MessageView::message_id),
        Some(after.message_id())
    );
    p.shutdown().await;
    c.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_two_proxies_when_one_stops_should_keep_sending_through_the_other() {
    let cluster = TestCluster::start(Mode::Cluster).await;
    let mut fx = Fixture::on(cluster, "sdk-failover", 2, TopicType::Normal, GROUP).await;
    let first = fx.cluster.proxy;
    let second = fx.cluster.add_proxy().await;
    let p = Producer::builder()
        .endpoints(format!("{first};{second}"))
        .topics([fx.topic.as_str()])
        .build()
        .await
        .expect("producer on two proxies");
    let mut sent = HashSet::new();
    sent.insert(
        p.send(fx.msg("via first"))
            .await
            .expect("send")
            .message_id()
            .to_owned(),
    );
    fx.cluster.stop_proxy(first).await;
    for i in 0..5 {
        let r = p
            .send(fx.msg(&format!("after stop {i}")))
            .await
            .expect("send after one proxy stopped");
        sent.insert(r.message_id().to_owned());
    }
    let c = SimpleConsumer::builder(&fx.group)
        .endpoints(second.to_string())
        .subscribe(&fx.topic, FilterExpression::all())
        .await_duration(Duration::from_secs(2))
        .build()
        .await
        .expect("consumer on the second proxy");
    let got = receive_acked(&c, sent.len(), DELIVERY_LIMIT).await;
    let ids: HashSet<String> = got.iter().map(|m| m.message_id().to_owned()).collect();
    assert_eq!(ids, sent);
    p.shutdown().await;
    c.shutdown().await;
    fx.cluster.stop().await;
}
