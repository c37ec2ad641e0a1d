//! Broadcast consumer groups (`comet group create NAME --broadcast`) through the unmodified
//! consumer APIs: the official Rust client's (`rocketmq` 5.0.0) SimpleConsumer and the Comet
//! SDK's PushConsumer for "every client receives every message", and raw
//! `apache.rocketmq.v2` calls where a test needs to choose the client id (`x-mq-client-id`)
//! itself: a client restarting under its id, a client leaving.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use comet::admin::TopicType;
use comet_proto::apache::rocketmq::v2 as pb;
use comet_sdk::{ConsumeResult, FilterExpression, MessageView, PushConsumer};
use comet_tests::client::{self, receive_n, receive_rounds, tag};
use comet_tests::raw::{self, messages, receive_frames, receive_request};
use comet_tests::{Mode, TestCluster, both_modes, uuid_like, wait_until};
use pb::messaging_service_client::MessagingServiceClient;
use rocketmq::model::message::MessageBuilder;
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// Broadcast-client TTL of the deployments that test expiry.
const TTL: Duration = Duration::from_secs(3);

/// Long poll of the raw receives (the test proxy's minimum).
const POLL: Duration = Duration::from_millis(200);

async fn send(cluster: &TestCluster, topic: &str, bodies: impl IntoIterator<Item = String>) {
    let p = client::producer(&cluster.access_url(), topic).await;
    for body in bodies {
        let msg = MessageBuilder::builder()
            .set_topic(topic)
            .set_tag("t")
            .set_body(body.into_bytes())
            .build()
            .expect("message");
        p.send(msg).await.expect("send");
    }
}

fn body(m: &pb::Message) -> String {
    String::from_utf8(m.body.to_vec()).expect("utf-8 body")
}

/// One raw receive of up to 32 messages by `client_id`: (body, receipt handle, attempt).
async fn receive(
    v2: &mut MessagingServiceClient<Channel>,
    client_id: &str,
    group: &str,
    topic: &str,
    invisible: Duration,
) -> Vec<(String, String, i32)> {
    let req = receive_request(group, raw::queue(topic, -1, None), 32, invisible, POLL);
    let frames = receive_frames(v2, raw::request(client_id, req)).await;
    messages(&frames)
        .map(|m| {
            let sys = m.system_properties.as_ref().expect("system properties");
            (
                body(m),
                sys.receipt_handle.clone().unwrap_or_default(),
                sys.delivery_attempt.unwrap_or(0),
            )
        })
        .collect()
}

/// Raw receives by `client_id` until `n` messages arrived (bounded).
async fn receive_count(
    v2: &mut MessagingServiceClient<Channel>,
    client_id: &str,
    group: &str,
    topic: &str,
    invisible: Duration,
    n: usize,
) -> Vec<(String, String, i32)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{client_id} received {} of {n} messages in time",
            got.len()
        );
        got.extend(receive(v2, client_id, group, topic, invisible).await);
    }
    got
}

async fn ack(
    v2: &mut MessagingServiceClient<Channel>,
    client_id: &str,
    group: &str,
    topic: &str,
    handles: &[&str],
) -> Vec<i32> {
    let req = pb::AckMessageRequest {
        group: raw::resource(group),
        topic: raw::resource(topic),
        entries: handles
            .iter()
            .map(|h| pb::AckMessageEntry {
                message_id: String::new(),
                receipt_handle: (*h).to_owned(),
                ..Default::default()
            })
            .collect(),
    };
    let resp = v2
        .ack_message(raw::request(client_id, req))
        .await
        .expect("AckMessage answers")
        .into_inner();
    resp.entries
        .iter()
        .map(|e| e.status.as_ref().map_or(-1, |s| s.code))
        .collect()
}

/// Three official-client SimpleConsumers of one broadcast group each receive and acknowledge
/// every message; a clustering group on the same topic shares them out instead.
async fn three_clients_each_receive_every_message(mode: Mode) {
    let cluster = TestCluster::start(mode).await;
    let topic = format!("bc-{}", uuid_like());
    let group = format!("bc-g-{}", uuid_like());
    cluster.create_topic(&topic, 2, TopicType::Normal).await;
    cluster.create_broadcast_group(&group, 16, true).await;
    let url = cluster.access_url();
    let consumers = [
        client::consumer(&url, &group, &topic).await,
        client::consumer(&url, &group, &topic).await,
        client::consumer(&url, &group, &topic).await,
    ];
    let sent: BTreeSet<String> = (0..20).map(|i| format!("m-{i}")).collect();
    send(&cluster, &topic, sent.iter().cloned()).await;
    for c in &consumers {
        let got = receive_n(c, &topic, &tag("*"), sent.len(), Duration::from_secs(30)).await;
        let bodies: BTreeSet<String> = got
            .iter()
            .map(|m| String::from_utf8(m.body().to_vec()).expect("utf-8"))
            .collect();
        assert_eq!(got.len(), sent.len(), "each message once per client");
        assert_eq!(bodies, sent, "every client receives every message");
        for m in &got {
            c.ack(m).await.expect("ack");
        }
    }
    assert_eq!(
        cluster.broadcast_clients(&group).len(),
        3,
        "one position per client"
    );
    for c in &consumers {
        let more = receive_rounds(c, &topic, &tag("*"), 1).await;
        assert!(more.is_empty(), "acknowledged messages stay acknowledged");
    }
    cluster.stop().await;
}

/// Two push consumers (the Comet SDK's, over QueryAssignment and ReceiveMessage) of one
/// broadcast group each consume every message once.
async fn two_push_consumers_each_consume_every_message(mode: Mode) {
    let cluster = TestCluster::start(mode).await;
    let topic = format!("bc-{}", uuid_like());
    let group = format!("bc-g-{}", uuid_like());
    cluster.create_topic(&topic, 2, TopicType::Normal).await;
    cluster.create_broadcast_group(&group, 16, true).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Vec<u8>, u32)>();
    let mut consumers = Vec::new();
    for i in 0..2 {
        let tx = tx.clone();
        let c = PushConsumer::builder(&group)
            .endpoints(cluster.access_url())
            .subscribe(&topic, FilterExpression::all())
            .listener(move |m: MessageView| {
                let _ = tx.send((i, m.body().to_vec(), m.delivery_attempt()));
                async { ConsumeResult::Success }
            })
            .build()
            .await
            .expect("push consumer");
        consumers.push(c);
    }
    send(&cluster, &topic, (0..10).map(|i| format!("m-{i}"))).await;
    let mut seen: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    while seen.iter().any(|s| s.len() < 10) {
        let (i, body, attempt) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("every push consumer consumes every message in time")
            .expect("listeners alive");
        assert_eq!(attempt, 1, "consumed once, no redelivery");
        seen[i].push(body);
    }
    for c in &consumers {
        c.shutdown().await;
    }
    for s in &mut seen {
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 10, "each consumer got all ten");
    }
    cluster.stop().await;
}

/// A client keeps its own position under its id: after it restarts it gets what it did not
/// acknowledge and what arrived meanwhile, never what it acknowledged; its handles are its
/// own (another client cannot acknowledge them); another client is unaffected.
async fn a_restarted_client_resumes_its_position(mode: Mode) {
    let cluster = TestCluster::start(mode).await;
    let topic = format!("bc-{}", uuid_like());
    let group = format!("bc-g-{}", uuid_like());
    cluster.create_topic(&topic, 2, TopicType::Normal).await;
    cluster.create_broadcast_group(&group, 16, false).await;
    let (a, b) = ("client-a@test", "client-b@test");
    let mut v2 = cluster.v2().await;
    // A new client starts at the end: its first receive places it.
    send(&cluster, &topic, ["before".to_owned()]).await;
    assert!(receive(&mut v2, a, &group, &topic, TTL).await.is_empty());
    assert!(receive(&mut v2, b, &group, &topic, TTL).await.is_empty());
    send(&cluster, &topic, (0..10).map(|i| format!("m-{i}"))).await;

    // Invisible for 4 s: long enough that nothing comes back while the ten arrive.
    let got = receive_count(&mut v2, a, &group, &topic, Duration::from_secs(4), 10).await;
    let (acked, kept) = got.split_at(5);
    let handles: Vec<&str> = acked.iter().map(|(_, h, _)| h.as_str()).collect();
    let invalid = pb::Code::InvalidReceiptHandle as i32;
    assert!(
        ack(&mut v2, b, &group, &topic, &handles[..1])
            .await
            .iter()
            .all(|c| *c == invalid),
        "another client's receipt handle is not valid for this one"
    );
    let ok = pb::Code::Ok as i32;
    assert!(
        ack(&mut v2, a, &group, &topic, &handles)
            .await
            .iter()
            .all(|c| *c == ok)
    );

    // A "restarts": a new connection, the same client id.
    drop(v2);
    send(&cluster, &topic, (10..13).map(|i| format!("m-{i}"))).await;
    let mut v2 = cluster.v2().await;
    let again = receive_count(&mut v2, a, &group, &topic, Duration::from_secs(60), 8).await;
    let bodies: HashMap<String, i32> = again.iter().map(|(b, _, n)| (b.clone(), *n)).collect();
    let mut want: Vec<String> = kept.iter().map(|(b, _, _)| b.clone()).collect();
    want.extend((10..13).map(|i| format!("m-{i}")));
    let mut have: Vec<String> = bodies.keys().cloned().collect();
    want.sort();
    have.sort();
    assert_eq!(
        have, want,
        "unacknowledged and new messages, nothing acknowledged"
    );
    for (b, _, _) in kept {
        assert_eq!(bodies[b], 2, "{b} is a redelivery");
    }
    let b_got = receive_count(&mut v2, b, &group, &topic, Duration::from_secs(60), 13).await;
    let b_bodies: BTreeSet<String> = b_got.iter().map(|(b, _, _)| b.clone()).collect();
    assert_eq!(
        b_bodies.len(),
        13,
        "the other client receives all, unaffected"
    );
    assert!(
        !b_bodies.contains("before"),
        "a new client starts at the end"
    );
    assert_eq!(
        cluster.broadcast_clients(&group),
        vec![a.to_owned(), b.to_owned()]
    );
    cluster.stop().await;
}

/// A client that stops receiving loses its position after the TTL (its messages in flight
/// with it), while a client that keeps receiving keeps its own; coming back, it starts at the
/// end like a new client.
async fn a_departed_client_position_expires(mode: Mode) {
    let cluster = TestCluster::start_with(mode, |cfg| {
        cfg.broker.broadcast_client_ttl = TTL.into();
    })
    .await;
    let topic = format!("bc-{}", uuid_like());
    let group = format!("bc-g-{}", uuid_like());
    cluster.create_topic(&topic, 1, TopicType::Normal).await;
    cluster.create_broadcast_group(&group, 16, false).await;
    let (stays, leaves) = ("stays@test", "leaves@test");
    let mut v2 = cluster.v2().await;
    assert!(
        receive(&mut v2, stays, &group, &topic, TTL)
            .await
            .is_empty()
    );
    assert!(
        receive(&mut v2, leaves, &group, &topic, TTL)
            .await
            .is_empty()
    );
    send(&cluster, &topic, (0..4).map(|i| format!("m-{i}"))).await;
    let held = receive_count(&mut v2, leaves, &group, &topic, Duration::from_secs(60), 4).await;
    assert_eq!(held.len(), 4);
    assert_eq!(
        cluster.broadcast_clients(&group),
        vec![leaves.to_owned(), stays.to_owned()]
    );

    // Only `stays` receives from now on (each receive is one long poll, so the loop waits on
    // the server, and keeps `stays` alive).
    let mut stays_got = Vec::new();
    wait_until(
        "the silent client's position expires",
        TTL * 10,
        async || {
            stays_got
                .extend(receive(&mut v2, stays, &group, &topic, Duration::from_secs(60)).await);
            !cluster
                .broadcast_clients(&group)
                .contains(&leaves.to_owned())
        },
    )
    .await;
    assert_eq!(cluster.broadcast_clients(&group), vec![stays.to_owned()]);
    assert_eq!(stays_got.len(), 4, "the staying client got every message");

    // Coming back, `leaves` is a new client: nothing of its old position (its four messages
    // in flight) remains, and it starts at the end.
    assert!(
        receive(&mut v2, leaves, &group, &topic, TTL)
            .await
            .is_empty()
    );
    send(&cluster, &topic, ["after".to_owned()]).await;
    let back = receive_count(&mut v2, leaves, &group, &topic, TTL, 1).await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].0, "after");
    assert_eq!(back[0].2, 1, "a first delivery");
    cluster.stop().await;
}

/// Retries and dead letters are per client: a message one client never acknowledges goes to
/// `%DLQ%<group>` after its retries, marked with that client; the other client's copy is
/// unaffected. A broadcast group's call without a client id is refused.
async fn dead_letters_are_per_client(mode: Mode) {
    let cluster = TestCluster::start(mode).await;
    let topic = format!("bc-{}", uuid_like());
    let group = format!("bc-g-{}", uuid_like());
    cluster.create_topic(&topic, 1, TopicType::Normal).await;
    cluster.create_broadcast_group(&group, 1, true).await;
    send(&cluster, &topic, ["poison".to_owned()]).await;
    let (good, bad) = ("good@test", "bad@test");
    let mut v2 = cluster.v2().await;
    let g = receive_count(&mut v2, good, &group, &topic, TTL, 1).await;
    assert_eq!(
        ack(&mut v2, good, &group, &topic, &[g[0].1.as_str()]).await,
        vec![pb::Code::Ok as i32]
    );
    // `bad` lets both deliveries (max_retries 1) time out.
    let first = receive_count(&mut v2, bad, &group, &topic, Duration::from_secs(1), 1).await;
    assert_eq!(first[0].2, 1);
    let second = receive_count(&mut v2, bad, &group, &topic, Duration::from_secs(1), 1).await;
    assert_eq!(second[0].2, 2);
    let dead = client::dead_letter(&cluster, &group).await;
    assert_eq!(dead.body(), b"poison");
    assert_eq!(
        dead.properties().get("DLQ_CLIENT_ID").map(String::as_str),
        Some(bad)
    );

    // Without a client id the broker cannot tell whose position a call is for.
    let req = receive_request(&group, raw::queue(&topic, -1, None), 1, TTL, POLL);
    let status = v2
        .receive_message(tonic::Request::new(req))
        .await
        .map(|s| s.into_inner());
    let refused = match status {
        Err(s) => s.message().to_owned(),
        Ok(mut stream) => {
            let frame = stream.message().await.expect("a frame").expect("a status");
            match frame.content {
                Some(pb::receive_message_response::Content::Status(s)) => {
                    assert_eq!(s.code, pb::Code::ClientIdRequired as i32);
                    s.message
                }
                other => panic!("expected a status, got {other:?}"),
            }
        }
    };
    assert!(refused.to_lowercase().contains("client"), "{refused}");
    cluster.stop().await;
}

both_modes!(
    three_clients_each_receive_every_message,
    two_push_consumers_each_consume_every_message,
    a_restarted_client_resumes_its_position,
    a_departed_client_position_expires,
    dead_letters_are_per_client,
);
