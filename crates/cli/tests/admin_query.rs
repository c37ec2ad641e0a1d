//! End-to-end tests of `comet offset ...` and `comet message ...`: a standalone node runs in
//! this test process; the `comet` binary runs as a separate process against its controller
//! address and reaches the broker through the address in the metadata. Each test checks the
//! JSON on stdout, stderr and the exit status.

use std::process::Output;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use comet::admin::{self, AdminTarget, Perm, TopicCommand, TopicSpec, TopicType};
use comet::config::Config;
use comet::server::{Node, Role};
use comet_proto::apache::rocketmq::v2 as pb;
use pb::messaging_service_client::MessagingServiceClient;
use serde_json::Value;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const LIMIT: Duration = Duration::from_secs(15);

struct Running {
    node: Node,
    controller: String,
    proxy: String,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    cfg.log.level = "warn".to_owned();
    cfg.proxy.listen = "127.0.0.1:0".to_owned();
    cfg.broker.listen = "127.0.0.1:0".to_owned();
    cfg.controller.listen = "127.0.0.1:0".to_owned();
    cfg.controller.remoting_listen = "127.0.0.1:0".to_owned();
    cfg.metrics.listen = "127.0.0.1:0".to_owned();
    cfg.console.listen = "127.0.0.1:0".to_owned();
    cfg.broker.segment_size = comet::size::ByteSize(4 << 20);
    cfg.broker.disk_high_watermark = 0.995;
    cfg.broker.disk_refuse_watermark = 0.999;
    let node = Node::start(Role::Standalone, &cfg)
        .await
        .expect("standalone starts");
    let a = node.addrs();
    Running {
        controller: a.controller.expect("controller").to_string(),
        proxy: a.proxy.expect("proxy").to_string(),
        node,
        _dir: dir,
    }
}

async fn create_topic(r: &Running, name: &str) {
    let target = AdminTarget {
        controllers: vec![r.controller.clone()],
        config: None,
        namespace: String::new(),
        username: None,
        password: None,
    };
    admin::topic(
        &target,
        &TopicCommand::Create(TopicSpec {
            name: name.to_owned(),
            queues: 1,
            message_type: TopicType::Normal,
            broker_sets: Vec::new(),
            perm: Perm::Rw,
        }),
    )
    .await
    .expect("topic created");
    let mut md = r.node.metadata().expect("metadata");
    tokio::time::timeout(
        LIMIT,
        md.wait_for(|m| m.topics.iter().any(|t| t.name == name)),
    )
    .await
    .expect("topic visible")
    .expect("watch open");
}

/// A standalone node with the one-queue topic `topic`, and a raw v2 client of its proxy.
async fn start_with_topic(topic: &str) -> (Running, MessagingServiceClient<Channel>) {
    let r = start().await;
    create_topic(&r, topic).await;
    let c = MessagingServiceClient::connect(format!("http://{}", r.proxy))
        .await
        .expect("connect");
    (r, c)
}

async fn comet(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_comet"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("run comet")
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "comet failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `comet offset progress readers --topic events` against controller `ctl`, as JSON.
async fn readers_progress(ctl: &str) -> Value {
    json(
        &comet(&[
            "offset",
            "progress",
            "readers",
            "--topic",
            "events",
            "--controller",
            ctl,
        ])
        .await,
    )
}

/// `comet offset reset readers --topic events <to>` against controller `ctl`, as JSON.
async fn reset_readers(ctl: &str, to: &[&str]) -> Value {
    let mut args = vec!["offset", "reset", "readers", "--topic", "events"];
    args.extend_from_slice(to);
    args.extend(["--controller", ctl]);
    json(&comet(&args).await)
}

/// `comet message offset --topic orders --queue 0 --offset <offset>` against controller `ctl`,
/// as JSON.
async fn message_at(ctl: &str, offset: i64) -> Value {
    let offset = offset.to_string();
    json(
        &comet(&[
            "message",
            "offset",
            "--topic",
            "orders",
            "--queue",
            "0",
            "--offset",
            &offset,
            "--controller",
            ctl,
        ])
        .await,
    )
}

/// Runs `comet <args> --controller <ctl>` for each `(args, text)`: it must exit with status 2
/// and say `text` on stderr.
async fn assert_usage_errors(ctl: &str, cases: &[(Vec<&str>, &str)]) {
    for (args, text) in cases {
        let mut args = args.clone();
        args.extend(["--controller", ctl]);
        let out = comet(&args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(text), "{args:?}: {err}");
    }
}

fn with_client<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("x-mq-client-id", "cli-test@1#1".parse().expect("ascii"));
    r
}

fn res(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.to_owned(),
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn send(c: &mut MessagingServiceClient<Channel>, topic: &str, ids: &[&str]) {
    let messages = ids
        .iter()
        .map(|id| pb::Message {
            topic: res(topic),
            user_properties: [("origin".to_owned(), "cli-test".to_owned())].into(),
            system_properties: Some(pb::SystemProperties {
                tag: Some("t".to_owned()),
                keys: vec![format!("key-{id}")],
                message_id: (*id).to_owned(),
                message_type: pb::MessageType::Normal as i32,
                body_encoding: pb::Encoding::Identity as i32,
                born_host: "tester".to_owned(),
                ..Default::default()
            }),
            body: format!("hello {id}").into_bytes().into(),
        })
        .collect();
    let r = c
        .send_message(with_client(pb::SendMessageRequest { messages }))
        .await
        .expect("gRPC OK")
        .into_inner();
    let s = r.status.expect("status");
    assert_eq!(s.code, pb::Code::Ok as i32, "{}", s.message);
}

/// Waits (bounded) until the topic's queue 0 holds `n` messages; returns the store time of
/// the last one. Each round long-polls PullMessage, which the broker answers as soon as a
/// message is there; while fewer than `n` are stored, it polls at the queue's end.
async fn stored(c: &mut MessagingServiceClient<Channel>, topic: &str, n: i64) -> i64 {
    let deadline = Instant::now() + LIMIT;
    let last = n - 1;
    let mut offset = last;
    loop {
        let mut stream = c
            .pull_message(with_client(pb::PullMessageRequest {
                group: res("cli-probe"),
                message_queue: Some(pb::MessageQueue {
                    topic: res(topic),
                    id: 0,
                    ..Default::default()
                }),
                offset,
                batch_size: 1,
                filter_expression: None,
                long_polling_timeout: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
            }))
            .await
            .expect("gRPC OK")
            .into_inner();
        while let Some(frame) = stream.next().await {
            match frame.expect("frame").content {
                // Batch 1 without a filter: the message at `offset`.
                Some(pb::pull_message_response::Content::Message(m)) if offset == last => {
                    let t = m
                        .system_properties
                        .and_then(|s| s.store_timestamp)
                        .expect("store time");
                    return t.seconds * 1000 + i64::from(t.nanos) / 1_000_000;
                }
                // Where to go on: after what came, or the queue's end when `offset` lies
                // beyond it (ILLEGAL_OFFSET, nothing waited for).
                Some(pb::pull_message_response::Content::NextOffset(next)) => {
                    offset = next.min(last);
                }
                _ => {}
            }
        }
        assert!(Instant::now() < deadline, "{n} messages never stored");
    }
}

/// POPs up to `n` messages for `group`; returns their receipt handles.
async fn pop(c: &mut MessagingServiceClient<Channel>, topic: &str, group: &str) -> Vec<String> {
    let mut stream = c
        .receive_message(with_client(pb::ReceiveMessageRequest {
            group: res(group),
            message_queue: Some(pb::MessageQueue {
                topic: res(topic),
                id: 0,
                ..Default::default()
            }),
            filter_expression: None,
            batch_size: 32,
            invisible_duration: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            auto_renew: false,
            long_polling_timeout: Some(prost_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
            attempt_id: None,
        }))
        .await
        .expect("gRPC OK")
        .into_inner();
    let mut handles = Vec::new();
    while let Some(frame) = stream.next().await {
        if let Some(pb::receive_message_response::Content::Message(m)) =
            frame.expect("frame").content
        {
            handles.push(
                m.system_properties
                    .and_then(|s| s.receipt_handle)
                    .expect("handle"),
            );
        }
    }
    handles
}

async fn ack(c: &mut MessagingServiceClient<Channel>, topic: &str, group: &str, handle: &str) {
    let r = c
        .ack_message(with_client(pb::AckMessageRequest {
            group: res(group),
            topic: res(topic),
            entries: vec![pb::AckMessageEntry {
                message_id: String::new(),
                receipt_handle: handle.to_owned(),
                lite_topic: None,
            }],
        }))
        .await
        .expect("gRPC OK")
        .into_inner();
    assert_eq!(r.status.expect("status").code, pb::Code::Ok as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_stored_messages_when_queried_should_print_them_by_id_key_and_offset() {
    let (r, mut c) = start_with_topic("orders").await;
    send(&mut c, "orders", &["ID-1", "ID-2", "ID-3"]).await;
    stored(&mut c, "orders", 3).await;
    let ctl = r.controller.as_str();

    let v = json(
        &comet(&[
            "message",
            "id",
            "ID-2",
            "--topic",
            "orders",
            "--controller",
            ctl,
        ])
        .await,
    );
    assert_eq!(v["count"], 1, "{v}");
    let m = &v["messages"][0];
    assert_eq!(m["message_id"], "ID-2");
    assert_eq!(m["queue_offset"], 1);
    assert_eq!(m["broker_set"], "broker-a");
    assert_eq!(m["tag"], "t");
    assert_eq!(m["keys"][0], "key-ID-2");
    assert_eq!(m["user_properties"]["origin"], "cli-test");
    assert_eq!(m["body"]["text"], "hello ID-2");
    assert!(
        m["store_timestamp"]["ms"].as_i64().is_some_and(|t| t > 0),
        "{m}"
    );

    let v = json(
        &comet(&[
            "message",
            "key",
            "key-ID-3",
            "--topic",
            "orders",
            "--begin",
            "0",
            "--end",
            &(now_ms() + 60_000).to_string(),
            "--controller",
            ctl,
        ])
        .await,
    );
    assert_eq!(v["count"], 1, "{v}");
    assert_eq!(v["messages"][0]["message_id"], "ID-3");
    // A time range before the messages finds nothing (not an error).
    let v = json(
        &comet(&[
            "message",
            "key",
            "key-ID-3",
            "--topic",
            "orders",
            "--end",
            "2001-01-01T00:00:00Z",
            "--controller",
            ctl,
        ])
        .await,
    );
    assert_eq!(v["count"], 0);

    let v = message_at(ctl, 0).await;
    assert_eq!(v["messages"][0]["message_id"], "ID-1");
    let v = message_at(ctl, 3).await;
    assert_eq!(v["count"], 0);

    // Errors: exit status 2 and a reason on stderr.
    assert_usage_errors(
        ctl,
        &[
            (
                vec!["message", "id", "x", "--topic", "nope"],
                "topic \"nope\" does not exist",
            ),
            (
                vec![
                    "message", "key", "k", "--topic", "orders", "--begin", "soon",
                ],
                "\"soon\" is not a time",
            ),
            (
                vec![
                    "message", "key", "k", "--topic", "orders", "--begin", "10", "--end", "5",
                ],
                "--begin (10 ms) is after --end (5 ms)",
            ),
            (
                vec![
                    "message",
                    "offset",
                    "--topic",
                    "orders",
                    "--queue",
                    "0",
                    "--offset",
                    "0",
                    "--broker-set",
                    "zz",
                ],
                "no queues on broker set \"zz\"",
            ),
        ],
    )
    .await;
    r.node.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_consuming_group_when_reset_by_time_should_show_progress_and_move_it() {
    let (r, mut c) = start_with_topic("events").await;
    send(&mut c, "events", &["E-1", "E-2", "E-3"]).await;
    let ts1 = stored(&mut c, "events", 3).await;
    // Not a wait for state: the wall clock itself must pass `ts1` so that E-4 and E-5 are
    // stored strictly later (store times have millisecond resolution), and nothing signals
    // that. Bounded; 1 ms at a time.
    let deadline = Instant::now() + LIMIT;
    while now_ms() <= ts1 {
        assert!(Instant::now() < deadline, "clock stuck");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    send(&mut c, "events", &["E-4", "E-5"]).await;
    stored(&mut c, "events", 5).await;
    let ctl = r.controller.as_str();

    // A group that never consumed: everything is backlog.
    let v = readers_progress(ctl).await;
    assert_eq!(
        (v["backlog"].as_i64(), v["inflight"].as_i64()),
        (Some(5), Some(0)),
        "{v}"
    );
    assert_eq!(v["queues"][0]["consume_offset"], Value::Null);

    // Consume all five, acknowledge three: two in flight, backlog two.
    let handles = pop(&mut c, "events", "readers").await;
    assert_eq!(handles.len(), 5);
    for h in &handles[..3] {
        ack(&mut c, "events", "readers", h).await;
    }
    let v = readers_progress(ctl).await;
    assert_eq!(
        (v["backlog"].as_i64(), v["inflight"].as_i64()),
        (Some(2), Some(2)),
        "{v}"
    );
    let q = &v["queues"][0];
    assert_eq!(
        (
            q["broker_set"].as_str(),
            q["queue_id"].as_i64(),
            q["consume_offset"].as_i64(),
            q["max_offset"].as_i64()
        ),
        (Some("broker-a"), Some(0), Some(3), Some(5))
    );

    // Reset to the time just after the first three: offset 3, the two in flight dropped.
    let at = (ts1 + 1).to_string();
    let v = reset_readers(ctl, &["--timestamp", &at]).await;
    let q = &v["broker_sets"][0]["queues"][0];
    assert_eq!(
        (
            q["queue_id"].as_i64(),
            q["previous_offset"].as_i64(),
            q["offset"].as_i64(),
            q["dropped_inflight"].as_i64()
        ),
        (Some(0), Some(3), Some(3), Some(2)),
        "{v}"
    );
    // The group receives E-4 and E-5 again.
    assert_eq!(pop(&mut c, "events", "readers").await.len(), 2);

    // Reset to an offset on one queue, then by RFC 3339 time to the very beginning.
    let v = reset_readers(ctl, &["--offset", "1", "--queue", "0"]).await;
    assert_eq!(v["broker_sets"][0]["queues"][0]["offset"], 1);
    let v = reset_readers(ctl, &["--timestamp", "1970-01-01T00:00:00Z"]).await;
    assert_eq!(v["broker_sets"][0]["queues"][0]["offset"], 0);
    let v = readers_progress(ctl).await;
    assert_eq!(v["backlog"], 5);

    // Errors.
    assert_usage_errors(
        ctl,
        &[
            (
                vec!["offset", "reset", "readers", "--topic", "events"],
                "required arguments were not provided",
            ),
            (
                vec![
                    "offset", "reset", "readers", "--topic", "events", "--offset", "0", "--queue",
                    "7",
                ],
                "BAD_REQUEST",
            ),
            (
                vec!["offset", "progress", "readers", "--topic", "nope"],
                "does not exist",
            ),
        ],
    )
    .await;
    r.node.shutdown().await.expect("clean shutdown");
}
