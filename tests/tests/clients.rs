//! The official Python (`rocketmq-python-client` 5.1.2) and Node (`rocketmq-client-nodejs`
//! 1.0.8) clients, unmodified, against a standalone node: every scenario runs once per client
//! (`python::NAME`, `node::NAME`). The scripts in `tests/clients/` only drive the client and
//! report what it saw; the assertions are here. A client that is not installed skips its
//! tests unless `COMET_REQUIRE_CLIENTS=1` (see `comet_tests::scripted`).
//!
//! Scenarios: normal messages through a SimpleConsumer (receive, ack,
//! change_invisible_duration); FIFO order per message group through a FIFO PushConsumer whose
//! listener fails one message until the client dead-letters it; a failing listener on a
//! concurrent PushConsumer, redelivered with growing attempts until `%DLQ%<group>`; tag and
//! SQL filters on two PushConsumers; delay messages; transactions committed, rolled back and
//! resolved by the client's checker; recall of delay messages. While the consumers still run, each push scenario waits
//! until the broker reports the group drained (no backlog, nothing in flight), so a message
//! delivered more often than expected shows in the report.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use comet::admin::{self, OffsetCommand, ProgressSpec, TopicType};
use comet_tests::scripted::{Lang, Script};
use comet_tests::{Mode, TestCluster, client, uuid_like, wait_until};
use serde_json::{Value, json};

/// Time a whole scenario may take inside the script.
const DEADLINE_S: u64 = 60;

/// The node every scenario starts: standalone, with long polls of at most 2 s (the settings
/// echo tells push consumers so; their shutdown waits for the poll under way), and
/// transaction checks 0.5 s after the send, then every 0.7 s.
async fn node() -> TestCluster {
    TestCluster::start_with(Mode::Local, |cfg| {
        cfg.proxy.long_polling_max = Duration::from_secs(2).into();
        cfg.broker.transaction_timeout = Duration::from_millis(500).into();
        cfg.broker.transaction_check_interval = Duration::from_millis(700).into();
    })
    .await
}

/// A started [`node`] with one topic of `queues` queues named after `kind`, and a fresh name
/// for a consumer group.
async fn node_with_topic(
    kind: &str,
    queues: u32,
    r#type: TopicType,
) -> (TestCluster, String, String) {
    let cluster = node().await;
    let topic = format!("{kind}-{}", uuid_like());
    cluster.create_topic(&topic, queues, r#type).await;
    (cluster, topic, format!("g-{}", uuid_like()))
}

/// Declares each named `async fn(Lang)` as two tokio tests, `python::NAME` and `node::NAME`.
macro_rules! both_clients {
    ($($name:ident),* $(,)?) => {
        mod python {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(comet_tests::scripted::Lang::Python).await;
                }
            )*
        }
        mod node {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(comet_tests::scripted::Lang::Node).await;
                }
            )*
        }
    };
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` is not a string in {v}"))
}

fn int_of(v: &Value, key: &str) -> i64 {
    v[key]
        .as_i64()
        .unwrap_or_else(|| panic!("`{key}` is not an integer in {v}"))
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("`{key}` is not a list in {v}"))
}

/// Body → message id of what the script sent.
fn sent_ids(report: &Value) -> HashMap<String, String> {
    list(report, "sent")
        .iter()
        .map(|s| (str_of(s, "body").to_owned(), str_of(s, "id").to_owned()))
        .collect()
}

/// Waits (bounded) until the broker reports `group` drained on `topic`: nothing left to
/// deliver and nothing in flight (every delivery acked or dead-lettered).
async fn wait_drained(cluster: &TestCluster, group: &str, topic: &str) {
    let cmd = OffsetCommand::Progress(ProgressSpec {
        group: group.to_owned(),
        topic: topic.to_owned(),
    });
    let mut last = Value::Null;
    let what = format!("group {group} drained on {topic}");
    wait_until(&what, Duration::from_secs(20), async || {
        last = admin::offset(&cluster.admin(), &cmd)
            .await
            .expect("consumer progress");
        last["backlog"] == 0 && last["inflight"] == 0
    })
    .await;
}

/// Runs a script to its `consumed` line, waits while its consumers still run until the broker
/// reports each of `groups` drained on the spec's topic, and returns the script's report;
/// `None` when the client is not installed.
async fn run(
    cluster: &TestCluster,
    lang: Lang,
    scenario: &str,
    spec: Value,
    groups: &[&str],
) -> Option<Value> {
    let mut script = Script::start(lang, scenario, &spec)?;
    script.consumed().await;
    for group in groups {
        wait_drained(cluster, group, str_of(&spec, "topic")).await;
    }
    Some(script.finish().await)
}

/// The spec fields every scenario takes.
fn spec(cluster: &TestCluster, fields: Value) -> Value {
    let mut spec = json!({"endpoint": cluster.access_url(), "deadline_s": DEADLINE_S});
    for (k, v) in fields.as_object().expect("an object") {
        spec[k] = v.clone();
    }
    spec
}

/// Normal messages with tags, keys and properties, consumed by a SimpleConsumer: every message
/// once with its fields; one set invisible for 1 s comes back with attempt 2; one set invisible
/// for 30 s is acked with the receipt handle that change answered; nothing else comes back.
async fn produce_simple(lang: Lang) {
    let (cluster, topic, group) = node_with_topic("simple", 2, TopicType::Normal).await;
    let count = 10;
    let s = spec(
        &cluster,
        json!({"topic": topic, "group": group, "count": count}),
    );
    let Some(report) = run(&cluster, lang, "produce_simple", s, &[&group]).await else {
        return;
    };

    let sent = sent_ids(&report);
    let distinct: BTreeSet<&String> = sent.values().collect();
    assert_eq!(distinct.len(), count, "one distinct message id per send");
    let received = list(&report, "received");
    assert_eq!(received.len(), count, "{received:?}");
    let mut seen = BTreeSet::new();
    for m in received {
        let i: i64 = str_of(&m["props"], "index")
            .parse()
            .expect("index property");
        assert!(seen.insert(i), "message {i} delivered twice");
        assert_eq!(str_of(m, "id"), sent[&format!("body-{i}")]);
        assert_eq!(str_of(m, "topic"), topic);
        assert_eq!(str_of(m, "body"), format!("body-{i}"));
        assert_eq!(str_of(m, "tag"), if i % 2 == 0 { "even" } else { "odd" });
        let mut keys = vec![format!("key-{i}"), format!("order-{}", i / 5)];
        keys.sort();
        assert_eq!(m["keys"], json!(keys));
        assert_eq!(
            m["props"],
            json!({"index": i.to_string(), "origin": lang.name()})
        );
        assert_eq!(m["attempt"], 1);
        assert!(m["group"].is_null(), "{m}");
    }
    let actions = report["actions"].as_object().expect("actions");
    assert_eq!(actions.len(), count);
    let redelivered = list(&report, "redelivered");
    assert_eq!(redelivered.len(), 1, "{redelivered:?}");
    assert_eq!(str_of(&redelivered[0], "id"), sent["body-0"]);
    assert_eq!(redelivered[0]["attempt"], 2);
    assert_eq!(str_of(&redelivered[0], "body"), "body-0");
    assert_eq!(
        list(&report, "final"),
        &[] as &[Value],
        "nothing else comes back"
    );
    cluster.stop().await;
}

/// Groups created for push consumers that fail: 3 deliveries (2 retries), 1 s apart.
const MAX_ATTEMPTS: i64 = 3;
const RETRY_BACKOFF: &str = "customized:1s";

/// A FIFO PushConsumer: every message group in send order; the listener fails `mg-1:1`, which
/// the client retries locally up to the group's max attempts and then forwards to
/// `%DLQ%<group>`, after which the group goes on with its next message.
async fn fifo(lang: Lang) {
    let (cluster, topic, group) = node_with_topic("fifo", 2, TopicType::Fifo).await;
    cluster
        .create_group_with(
            &group,
            u32::try_from(MAX_ATTEMPTS - 1).expect("small"),
            true,
            Some(RETRY_BACKOFF),
        )
        .await;
    let (groups, per_group) = (3, 4);
    let poison = "mg-1:1";
    let s = spec(
        &cluster,
        json!({"topic": topic, "group": group, "message_groups": groups,
               "per_group": per_group, "poison": poison, "max_attempts": MAX_ATTEMPTS}),
    );
    let Some(report) = run(&cluster, lang, "fifo", s, &[&group]).await else {
        return;
    };

    let sent = sent_ids(&report);
    let mut order: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut poison_attempts = Vec::new();
    for r in list(&report, "records") {
        let body = str_of(r, "body");
        let (mg, seq) = body.split_once(':').expect("body is <group>:<seq>");
        assert_eq!(str_of(r, "group"), mg, "message group of {body}");
        assert_eq!(str_of(r, "id"), sent[body]);
        order
            .entry(mg.to_owned())
            .or_default()
            .push(seq.parse().expect("sequence number"));
        if body == poison {
            poison_attempts.push(r["attempt"].clone());
        } else {
            assert_eq!(r["attempt"], 1, "{r}");
        }
    }
    let all: Vec<i64> = (0..per_group).collect();
    for g in [0, 2] {
        assert_eq!(order[&format!("mg-{g}")], all, "order of mg-{g}");
    }
    assert_eq!(
        order["mg-1"],
        vec![0, 1, 1, 1, 2, 3],
        "mg-1: the failing message {MAX_ATTEMPTS} times, then the rest in order"
    );
    assert_eq!(
        poison_attempts.len(),
        usize::try_from(MAX_ATTEMPTS).expect("small")
    );
    let dead = client::dead_letter(&cluster, &group).await;
    assert_eq!(dead.message_id(), sent[poison]);
    assert_eq!(dead.body(), poison.as_bytes());
    cluster.stop().await;
}

/// A concurrent PushConsumer whose listener fails `m-2`: the client asks for it again after the
/// group's backoff (Node asks for a 1 ms invisible time and ignores customized backoff), the
/// broker redelivers it with attempts 1, 2, 3 and then dead-letters it; the others are
/// delivered once.
async fn push_retry(lang: Lang) {
    let (cluster, topic, group) = node_with_topic("retry", 2, TopicType::Normal).await;
    cluster
        .create_group(
            &group,
            u32::try_from(MAX_ATTEMPTS - 1).expect("small"),
            Some(RETRY_BACKOFF),
        )
        .await;
    let (count, poison) = (5, "m-2");
    let s = spec(
        &cluster,
        json!({"topic": topic, "group": group, "count": count, "poison": poison,
               "max_attempts": MAX_ATTEMPTS}),
    );
    let Some(report) = run(&cluster, lang, "push_retry", s, &[&group]).await else {
        return;
    };

    let sent = sent_ids(&report);
    let mut deliveries: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in list(&report, "records") {
        let body = str_of(r, "body");
        assert_eq!(str_of(r, "id"), sent[body]);
        deliveries
            .entry(body.to_owned())
            .or_default()
            .push(r["attempt"].clone());
    }
    assert_eq!(deliveries.len(), count, "{deliveries:?}");
    for (body, attempts) in &deliveries {
        if body == poison {
            assert_eq!(
                attempts,
                &(1..=MAX_ATTEMPTS).map(Value::from).collect::<Vec<_>>(),
                "the failing message, redelivered with growing attempts"
            );
        } else {
            assert_eq!(attempts, &[json!(1)], "{body} delivered once");
        }
    }
    let dead = client::dead_letter(&cluster, &group).await;
    assert_eq!(dead.message_id(), sent[poison]);
    assert_eq!(dead.body(), poison.as_bytes());
    assert_eq!(dead.tag(), Some("t"));
    cluster.stop().await;
}

/// Two PushConsumer groups on one topic, one with a tag filter and one with an SQL filter: each
/// gets exactly the messages its filter selects, once.
async fn push_filters(lang: Lang) {
    let cluster = node().await;
    let topic = format!("filters-{}", uuid_like());
    let (tag_group, sql_group) = (
        format!("tags-{}", uuid_like()),
        format!("sql-{}", uuid_like()),
    );
    cluster.create_topic(&topic, 2, TopicType::Normal).await;
    let count = 12i64;
    // Message i: tag "abc"[i % 3], region eu for even i, price i.
    let tag_expected: BTreeSet<String> = (0..count)
        .filter(|i| i % 3 != 1)
        .map(|i| format!("f-{i}"))
        .collect();
    let sql_expected: BTreeSet<String> = (0..count)
        .filter(|i| i % 2 == 0 && *i >= 4)
        .map(|i| format!("f-{i}"))
        .collect();
    let s = spec(
        &cluster,
        json!({"topic": topic, "count": count, "tag_group": tag_group, "sql_group": sql_group,
               "tag_expression": "a || c",
               "sql_expression": "region = 'eu' AND price >= 4",
               "expected": {tag_group.clone(): tag_expected.len(),
                            sql_group.clone(): sql_expected.len()}}),
    );
    let Some(report) = run(&cluster, lang, "push_filters", s, &[&tag_group, &sql_group]).await
    else {
        return;
    };

    let sent = sent_ids(&report);
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in list(&report, "records") {
        let body = str_of(r, "body");
        assert_eq!(str_of(r, "id"), sent[body]);
        assert_eq!(r["attempt"], 1, "{r}");
        got.entry(str_of(r, "consumer").to_owned())
            .or_default()
            .push(body.to_owned());
    }
    for (group, expected) in [(&tag_group, &tag_expected), (&sql_group, &sql_expected)] {
        let mut bodies = got.remove(group).unwrap_or_default();
        bodies.sort();
        let unique: BTreeSet<String> = bodies.iter().cloned().collect();
        assert_eq!(
            bodies.len(),
            unique.len(),
            "{group}: duplicates in {bodies:?}"
        );
        assert_eq!(&unique, expected, "{group}");
    }
    assert!(got.is_empty(), "deliveries to unknown consumers: {got:?}");
    cluster.stop().await;
}

/// Delay messages through a PushConsumer: each arrives once, not before its delivery time
/// (the timer's precision is 100 ms) and within 5 s after it.
async fn delay(lang: Lang) {
    let (cluster, topic, group) = node_with_topic("delay", 2, TopicType::Delay).await;
    let count = 3;
    let s = spec(
        &cluster,
        json!({"topic": topic, "group": group, "count": count, "delay_s": 3}),
    );
    let Some(report) = run(&cluster, lang, "delay", s, &[&group]).await else {
        return;
    };

    let sent: HashMap<String, &Value> = list(&report, "sent")
        .iter()
        .map(|s| (str_of(s, "body").to_owned(), s))
        .collect();
    let records = list(&report, "records");
    assert_eq!(records.len(), count, "{records:?}");
    let mut seen = BTreeSet::new();
    for r in records {
        let body = str_of(r, "body");
        assert!(seen.insert(body.to_owned()), "{body} delivered twice");
        let s = sent[body];
        assert_eq!(str_of(r, "id"), str_of(s, "id"));
        let due = int_of(s, "delivery_ms");
        assert_eq!(int_of(r, "delivery_ms"), due, "delivery time of {body}");
        assert!(due > int_of(s, "sent_ms") + 1000, "{body} was delayed: {s}");
        let at = int_of(r, "at_ms");
        assert!(at >= due - 100, "{body} arrived {} ms early", due - at);
        assert!(at <= due + 5000, "{body} arrived {} ms late", at - due);
    }
    cluster.stop().await;
}

/// Transactions: committed and rolled back by the producer, and two left open that the
/// broker's check-back resolves through the client's checker (one COMMIT, one ROLLBACK): the
/// consumer gets exactly the two committed messages.
async fn transaction(lang: Lang) {
    let (cluster, topic, group) = node_with_topic("tx", 1, TopicType::Transaction).await;
    let s = spec(&cluster, json!({"topic": topic, "group": group}));
    let Some(report) = run(&cluster, lang, "transaction", s, &[&group]).await else {
        return;
    };

    let sent: HashMap<String, String> = report["sent"]
        .as_object()
        .expect("sent")
        .iter()
        .map(|(body, id)| (body.clone(), id.as_str().expect("id").to_owned()))
        .collect();
    let checked: BTreeSet<&str> = list(&report, "checks")
        .iter()
        .map(|c| {
            let body = str_of(c, "body");
            assert_eq!(str_of(c, "id"), sent[body], "checked message id");
            body
        })
        .collect();
    assert_eq!(
        checked,
        BTreeSet::from(["check-commit", "check-rollback"]),
        "only the open transactions are checked"
    );
    let received = list(&report, "received");
    let mut bodies: Vec<&str> = received.iter().map(|r| str_of(r, "body")).collect();
    bodies.sort_unstable();
    assert_eq!(bodies, ["check-commit", "direct-commit"]);
    for r in received {
        assert_eq!(str_of(r, "id"), sent[str_of(r, "body")]);
        assert_eq!(r["attempt"], 1);
    }
    assert_eq!(
        list(&report, "final"),
        &[] as &[Value],
        "rolled back stays invisible"
    );
    cluster.stop().await;
}

/// Recall: the client's recall of a pending delay message answers its id (again when
/// repeated) and the message never arrives (a later marker does); a recall after delivery and
/// a malformed handle fail with the server's reason.
async fn recall(lang: Lang) {
    let (cluster, topic, group) = node_with_topic("recall", 2, TopicType::Delay).await;
    let s = spec(
        &cluster,
        json!({"topic": topic, "group": group, "delay_s": 3}),
    );
    let Some(report) = run(&cluster, lang, "recall", s, &[&group]).await else {
        return;
    };
    let recalled_id = str_of(&report["sent"], "recalled");
    for h in ["recalled", "marker"] {
        assert!(
            str_of(&report["handles"], h).contains('~'),
            "{h}: a recall handle from the send: {report}"
        );
    }
    for id in list(&report, "recalled") {
        assert_eq!(id.as_str(), Some(recalled_id), "{report}");
    }
    let bodies: Vec<&str> = list(&report, "received")
        .iter()
        .map(|r| str_of(r, "body"))
        .collect();
    assert_eq!(bodies, ["marker"], "the recalled message never arrives");
    assert_eq!(list(&report, "final"), &[] as &[Value]);
    let late = str_of(&report["late"], "error");
    assert!(late.contains("already delivered"), "{late}");
    let bad = str_of(&report["bad"], "error");
    assert!(bad.contains("malformed"), "{bad}");
    cluster.stop().await;
}

both_clients!(
    produce_simple,
    fifo,
    push_retry,
    push_filters,
    delay,
    transaction,
    recall
);
