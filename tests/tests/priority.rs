//! Priority messages (RIP-80) end to end with the Comet Rust SDK and raw `apache.rocketmq.v2`
//! calls: a backlog on a PRIORITY topic is received highest priority first; the proxy refuses
//! what the clients refuse; `comet group create --priority-percent` is kept.

use std::time::Duration;

use comet::admin::{self, GroupCommand, GroupSpec, NameArg, TopicType};
use comet_proto::apache::rocketmq::v2 as pb;
use comet_sdk::{FilterExpression, Message, Producer, SimpleConsumer};
use comet_tests::raw::{request, resource};
use comet_tests::{Mode, TestCluster, uuid_like};

/// A change to a message's system properties.
type Edit = dyn Fn(&mut pb::SystemProperties);

/// Longest a test waits for its messages.
const LIMIT: Duration = Duration::from_secs(30);

async fn producer(cluster: &TestCluster, topic: &str) -> Producer {
    Producer::builder()
        .endpoints(cluster.access_url())
        .topics([topic])
        .build()
        .await
        .expect("producer starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_backlog_on_a_priority_topic_when_received_should_come_highest_priority_first() {
    let cluster = TestCluster::start(Mode::Local).await;
    let topic = format!("prio-{}", uuid_like());
    let group = format!("g-{}", uuid_like());
    cluster.create_topic(&topic, 4, TopicType::Priority).await;
    let p = producer(&cluster, &topic).await;
    // The backlog, lowest priority first.
    for round in 0..2 {
        for priority in 0..4 {
            p.send(
                Message::builder(&topic)
                    .priority(priority)
                    .body(format!("p{priority}-{round}"))
                    .build()
                    .expect("valid"),
            )
            .await
            .expect("priority send");
        }
    }
    let c = SimpleConsumer::builder(&group)
        .endpoints(cluster.access_url())
        .subscribe(&topic, FilterExpression::all())
        .await_duration(Duration::from_secs(2))
        .build()
        .await
        .expect("simple consumer starts");
    let started = tokio::time::Instant::now();
    let mut got = Vec::new();
    while got.len() < 8 {
        assert!(started.elapsed() < LIMIT, "only {got:?}");
        for m in c
            .receive(1, Duration::from_secs(30))
            .await
            .expect("receive")
        {
            c.ack(&m).await.expect("ack");
            got.push((m.priority(), String::from_utf8_lossy(m.body()).into_owned()));
        }
    }
    let priorities: Vec<Option<i32>> = got.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        priorities,
        [3, 3, 2, 2, 1, 1, 0, 0].map(Some),
        "highest first: {got:?}"
    );
    // Within one priority, send order.
    assert_eq!(got[0].1, "p3-0");
    assert_eq!(got[1].1, "p3-1");
    p.shutdown().await;
    c.shutdown().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_bad_priority_messages_when_sent_should_be_refused_with_the_rule() {
    let cluster = TestCluster::start(Mode::Local).await;
    let topic = format!("prio-{}", uuid_like());
    let normal = format!("normal-{}", uuid_like());
    cluster.create_topic(&topic, 2, TopicType::Priority).await;
    cluster.create_topic(&normal, 2, TopicType::Normal).await;
    let mut v2 = cluster.v2().await;
    let send = |topic: &str, id: &str, edit: &Edit| {
        let mut sp = pb::SystemProperties {
            message_id: id.to_owned(),
            message_type: pb::MessageType::Priority as i32,
            priority: Some(1),
            born_host: "test".into(),
            ..Default::default()
        };
        edit(&mut sp);
        pb::SendMessageRequest {
            messages: vec![pb::Message {
                topic: resource(topic),
                user_properties: Default::default(),
                system_properties: Some(sp),
                body: b"x".to_vec().into(),
            }],
        }
    };
    let cases: [(&str, &Edit, pb::Code, &str); 4] = [
        (
            "neg",
            &|sp| sp.priority = Some(-1),
            pb::Code::BadRequest,
            "negative",
        ),
        (
            "grouped",
            &|sp| sp.message_group = Some("mg".into()),
            pb::Code::MessagePropertyConflictWithType,
            "message group",
        ),
        (
            "lite",
            &|sp| sp.lite_topic = Some("lt".into()),
            pb::Code::MessagePropertyConflictWithType,
            "lite topic",
        ),
        (
            "none",
            &|sp| sp.priority = None,
            pb::Code::MessagePropertyConflictWithType,
            "needs a priority",
        ),
    ];
    for (id, edit, want, says) in cases {
        let r = v2
            .send_message(request("prio-client", send(&topic, id, edit)))
            .await
            .expect("send answered")
            .into_inner();
        let st = r.status.expect("status");
        assert_eq!(st.code, want as i32, "{id}: {st:?}");
        assert!(st.message.contains(says), "{id}: {st:?}");
    }
    // A PRIORITY message on a NORMAL topic, and a good one on the PRIORITY topic.
    let r = v2
        .send_message(request(
            "prio-client",
            send(&normal, "wrong-topic", &|_| {}),
        ))
        .await
        .expect("send answered")
        .into_inner();
    assert_eq!(
        r.status.expect("status").code,
        pb::Code::MessagePropertyConflictWithType as i32
    );
    let r = v2
        .send_message(request("prio-client", send(&topic, "good", &|_| {})))
        .await
        .expect("send answered")
        .into_inner();
    assert_eq!(r.status.expect("status").code, pb::Code::Ok as i32);

    // The group attribute goes through the admin API and back.
    let group = format!("g-{}", uuid_like());
    admin::group(
        &cluster.admin(),
        &GroupCommand::Create(GroupSpec {
            name: group.clone(),
            max_retries: 16,
            fifo: false,
            broadcast: false,
            from_start: false,
            backoff: None,
            priority_percent: Some(0),
        }),
    )
    .await
    .expect("group created");
    let shown = admin::group(
        &cluster.admin(),
        &GroupCommand::Describe(NameArg { name: group }),
    )
    .await
    .expect("group described");
    assert_eq!(shown["priority_percent"], 0, "{shown}");
    cluster.stop().await;
}
