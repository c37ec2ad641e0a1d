//! Broker behaviour through the `BrokerService` trait, in process.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use comet_proto::apache::rocketmq::v2::{
    ChangeInvisibleDurationRequest, Code, DigestType, Encoding, FilterExpression, FilterType,
    ForwardMessageToDeadLetterQueueRequest, Message, MessageQueue, MessageType,
    ReceiveMessageRequest,
};
use comet_proto::comet::v1::broker_service_server::BrokerService;
use common::*;

const LIMIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn given_sent_messages_when_popped_and_acked_should_be_complete_and_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    let r = send(
        &n.svc,
        vec![
            msg("t", 0, "id-0", Some("a"), "body-0"),
            msg("t", 0, "id-1", Some("a"), "body-1"),
            msg("t", 0, "id-2", None, "body-2"),
        ],
    )
    .await;
    assert_eq!(code(&r.status), Code::Ok);
    assert_eq!(r.entries.len(), 3);
    for (i, e) in r.entries.iter().enumerate() {
        assert_eq!(code(&e.status), Code::Ok);
        assert_eq!(e.message_id, format!("id-{i}"));
        assert_eq!(e.offset, i as i64);
    }

    let got = pop_n(&n.svc, &Pop::default(), 3, LIMIT).await;
    assert_eq!(got.len(), 3);
    for (i, m) in got.iter().enumerate() {
        let s = sp(m);
        assert_eq!(m.topic.as_ref().unwrap().name, "t");
        assert_eq!(m.body.as_ref(), format!("body-{i}").as_bytes());
        assert_eq!(s.message_id, format!("id-{i}"));
        assert_eq!(s.queue_id, 0);
        assert_eq!(s.queue_offset, Some(i as i64));
        assert_eq!(s.delivery_attempt, Some(1));
        assert_eq!(s.keys, vec![format!("key-id-{i}")]);
        assert_eq!(s.tag.as_deref(), if i < 2 { Some("a") } else { None });
        assert_eq!(s.body_encoding, Encoding::Identity as i32);
        assert_eq!(s.message_type, MessageType::Normal as i32);
        let d = s.body_digest.as_ref().unwrap();
        assert_eq!(d.r#type, DigestType::Md5 as i32);
        assert_eq!(d.checksum, d.checksum.to_uppercase());
        assert_eq!(d.checksum.len(), 32);
        assert_eq!(s.born_host, "client-host");
        assert_eq!(s.born_timestamp.unwrap().seconds, 1_700_000_000);
        assert!(s.store_timestamp.unwrap().seconds > 1_700_000_000);
        assert_eq!(s.store_host, "127.0.0.1:10911");
        assert_eq!(s.invisible_duration.unwrap().seconds, 30);
        assert_eq!(m.user_properties.get("k").map(String::as_str), Some("v"));
        assert!(handle(m).starts_with("broker-a~"));
    }
    for m in &got {
        assert_eq!(ack(&n.svc, "g", "t", &handle(m)).await, Code::Ok);
    }
    // Acking twice: the handle is stale now.
    assert_eq!(
        ack(&n.svc, "g", "t", &handle(&got[0])).await,
        Code::InvalidReceiptHandle
    );
    let r = pop(&n.svc, &Pop::default()).await;
    assert_eq!(code(&r.status), Code::MessageNotFound);
    assert!(r.messages.is_empty());
    let p = n.broker.consumer_progress("g", "t", 0).unwrap();
    assert_eq!((p.ack_offset, p.pop_offset, p.inflight), (3, 3, 0));
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_tagged_messages_when_popped_with_tag_filter_should_get_only_matches() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    for (i, tag) in [Some("a"), Some("b"), Some("c"), None].iter().enumerate() {
        send_one(&n.svc, "t", 0, &format!("m{i}"), *tag).await;
    }
    // Another group with "*" sees all four, which also proves all are dispatched.
    let all = pop_n(
        &n.svc,
        &Pop {
            group: "all",
            ..Default::default()
        },
        4,
        LIMIT,
    )
    .await;
    assert_eq!(all.len(), 4);
    let r = pop(
        &n.svc,
        &Pop {
            group: "ac",
            filter: " a || c ",
            ..Default::default()
        },
    )
    .await;
    let ids: Vec<_> = r
        .messages
        .iter()
        .map(|m| sp(m).message_id.clone())
        .collect();
    assert_eq!(ids, vec!["m0", "m2"]);
    // Filtered-out messages count as consumed by that group.
    let p = n.broker.consumer_progress("ac", "t", 0).unwrap();
    assert_eq!((p.pop_offset, p.inflight), (4, 2));
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_unacked_message_when_invisible_time_passes_should_redeliver_with_attempt_two() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    send_one(&n.svc, "t", 0, "x", None).await;
    let p = Pop {
        invisible_ms: 1000,
        ..Default::default()
    };
    let first = pop_n(&n.svc, &p, 1, LIMIT).await;
    assert_eq!(first.len(), 1);
    let popped_at = Instant::now();
    assert_eq!(sp(&first[0]).delivery_attempt, Some(1));
    // A long poll wakes when the message becomes visible again.
    let r = pop(
        &n.svc,
        &Pop {
            long_poll_ms: 10_000,
            ..p
        },
    )
    .await;
    let elapsed = popped_at.elapsed();
    assert_eq!(code(&r.status), Code::Ok);
    assert_eq!(r.messages.len(), 1);
    let again = &r.messages[0];
    assert_eq!(sp(again).message_id, "x");
    assert_eq!(sp(again).delivery_attempt, Some(2));
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_ne!(handle(again), handle(&first[0]));
    assert_eq!(
        ack(&n.svc, "g", "t", &handle(&first[0])).await,
        Code::InvalidReceiptHandle
    );
    assert_eq!(ack(&n.svc, "g", "t", &handle(again)).await, Code::Ok);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_change_invisible_when_called_should_issue_new_handle_and_stale_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    send_one(&n.svc, "t", 0, "x", None).await;
    let got = pop_n(&n.svc, &Pop::default(), 1, LIMIT).await;
    let old = handle(&got[0]);
    let r = change(&n.svc, "g", "t", &old, 60_000).await;
    assert_eq!(code(&r.status), Code::Ok);
    let newer = r.receipt_handle.clone();
    assert_ne!(newer, old);
    assert!(newer.starts_with("broker-a~"));
    // The old handle is stale for every operation; a failed change echoes the handle it got.
    let r = change(&n.svc, "g", "t", &old, 0).await;
    assert_eq!(code(&r.status), Code::InvalidReceiptHandle);
    assert_eq!(r.receipt_handle, old);
    assert_eq!(
        ack(&n.svc, "g", "t", &old).await,
        Code::InvalidReceiptHandle
    );
    // Still invisible (60 s): nothing to pop.
    let r = pop(&n.svc, &Pop::default()).await;
    assert_eq!(code(&r.status), Code::MessageNotFound);
    // Duration 0: visible at once.
    let r = change(&n.svc, "g", "t", &newer, 0).await;
    assert_eq!(code(&r.status), Code::Ok);
    let start = Instant::now();
    let again = pop_n(&n.svc, &Pop::default(), 1, LIMIT).await;
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(sp(&again[0]).delivery_attempt, Some(2));
    assert_eq!(
        ack(&n.svc, "g", "t", &r.receipt_handle).await,
        Code::InvalidReceiptHandle,
        "redelivery makes the changed handle stale too"
    );
    assert_eq!(ack(&n.svc, "g", "t", &handle(&again[0])).await, Code::Ok);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_invisible_times_outside_the_range_when_popped_or_changed_should_be_refused() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    send_one(&n.svc, "t", 0, "x", None).await;
    let receive = |invisible: Option<prost_types::Duration>| ReceiveMessageRequest {
        group: res("g"),
        message_queue: Some(MessageQueue {
            topic: res("t"),
            id: -1,
            ..Default::default()
        }),
        filter_expression: None,
        batch_size: 1,
        invisible_duration: invisible,
        auto_renew: false,
        long_polling_timeout: None,
        attempt_id: None,
    };
    let d = |seconds: i64, nanos: i32| Some(prost_types::Duration { seconds, nanos });
    // Zero, negative, malformed and above max_invisible_duration (12 h): refused, not clamped.
    for bad in [d(0, 0), d(-1, 0), d(1, 1_000_000_000), d(12 * 3600, 1)] {
        let r = n
            .svc
            .pop_message(tonic::Request::new(receive(bad)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(code(&r.status), Code::IllegalInvisibleTime, "{bad:?}");
        assert!(r.messages.is_empty());
    }
    let r = n
        .svc
        .pop_message(tonic::Request::new(receive(d(12 * 3600 + 1, 0))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status.unwrap().message,
        "invisible duration 43201s0ns is outside the allowed range [1ns, 43200s]",
        "the proxy's rule and message (comet_vocab) over the broker's range"
    );
    // The maximum itself is accepted.
    let got = pop_n(
        &n.svc,
        &Pop {
            invisible_ms: 12 * 3600 * 1000,
            ..Pop::default()
        },
        1,
        LIMIT,
    )
    .await;
    assert_eq!(sp(&got[0]).invisible_duration.unwrap().seconds, 12 * 3600);
    let h = handle(&got[0]);

    // A change above the maximum is refused and keeps the handle; the maximum is accepted.
    let r = change(&n.svc, "g", "t", &h, 12 * 3600 * 1000 + 1000).await;
    assert_eq!(code(&r.status), Code::IllegalInvisibleTime);
    assert_eq!(r.receipt_handle, h);
    let r = change(&n.svc, "g", "t", &h, 12 * 3600 * 1000).await;
    assert_eq!(code(&r.status), Code::Ok);
    let h = r.receipt_handle;
    // A change without a duration makes the message visible at once.
    let r = n
        .svc
        .change_invisible_duration(tonic::Request::new(ChangeInvisibleDurationRequest {
            group: res("g"),
            topic: res("t"),
            receipt_handle: h,
            invisible_duration: None,
            message_id: String::new(),
            lite_topic: None,
            suspend: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), Code::Ok);
    let again = pop_n(&n.svc, &Pop::default(), 1, LIMIT).await;
    assert_eq!(sp(&again[0]).delivery_attempt, Some(2));

    // A malformed long-polling timeout: the proxy's code.
    let mut bad_poll = receive(None);
    bad_poll.long_polling_timeout = d(-1, 0);
    let r = n
        .svc
        .pop_message(tonic::Request::new(bad_poll))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), Code::IllegalPollingTime);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_max_retries_one_when_deliveries_exhausted_should_move_to_dlq() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[("gd", 1)])).await;
    send_one(&n.svc, "t", 0, "poison", Some("tg")).await;
    let p = Pop {
        group: "gd",
        invisible_ms: 1000,
        ..Default::default()
    };
    let first = pop_n(&n.svc, &p, 1, LIMIT).await;
    assert_eq!(sp(&first[0]).delivery_attempt, Some(1));
    let second = pop_n(&n.svc, &p, 1, LIMIT).await;
    assert_eq!(sp(&second[0]).delivery_attempt, Some(2));
    // Not acked again: at its deadline it goes to %DLQ%gd instead of a third delivery.
    let dlq = pop_n(
        &n.svc,
        &Pop {
            group: "dlq-reader",
            topic: "%DLQ%gd",
            ..Default::default()
        },
        1,
        LIMIT,
    )
    .await;
    assert_eq!(dlq.len(), 1, "dead letter arrives");
    let d = &dlq[0];
    assert_eq!(d.topic.as_ref().unwrap().name, "%DLQ%gd");
    assert_eq!(sp(d).message_id, "poison");
    assert_eq!(sp(d).tag.as_deref(), Some("tg"));
    assert_eq!(d.body.as_ref(), b"body-poison");
    assert_eq!(sp(d).delivery_attempt, Some(1));
    let dl = sp(d).dead_letter_queue.as_ref().unwrap();
    assert_eq!(dl.topic, "t");
    assert_eq!(
        ack(&n.svc, "dlq-reader", "%DLQ%gd", &handle(d)).await,
        Code::Ok
    );
    // The original group never sees it again.
    let r = pop(
        &n.svc,
        &Pop {
            group: "gd",
            ..Default::default()
        },
    )
    .await;
    assert_eq!(code(&r.status), Code::MessageNotFound);
    // The dead letter is appended before its original entry completes (a failed append must
    // leave the entry in flight), so a reader of the DLQ can get here first: wait, bounded,
    // for the completion, which follows within microseconds.
    let until = std::time::Instant::now() + LIMIT;
    let prog = loop {
        let p = n.broker.consumer_progress("gd", "t", 0).unwrap();
        if (p.ack_offset, p.inflight) == (1, 0) || std::time::Instant::now() > until {
            break p;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!((prog.ack_offset, prog.inflight), (1, 0));
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_forward_to_dlq_when_called_should_complete_and_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    send_one(&n.svc, "t", 0, "f", None).await;
    let got = pop_n(&n.svc, &Pop::default(), 1, LIMIT).await;
    let req = ForwardMessageToDeadLetterQueueRequest {
        group: res("g"),
        topic: res("t"),
        receipt_handle: handle(&got[0]),
        message_id: "f".into(),
        delivery_attempt: 1,
        max_delivery_attempts: 17,
        lite_topic: None,
    };
    let r = n
        .svc
        .forward_message_to_dead_letter_queue(tonic::Request::new(req.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), Code::Ok);
    let r = n
        .svc
        .forward_message_to_dead_letter_queue(tonic::Request::new(req))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), Code::InvalidReceiptHandle);
    let dlq = pop_n(
        &n.svc,
        &Pop {
            group: "r",
            topic: "%DLQ%g",
            queue: 0,
            ..Default::default()
        },
        1,
        LIMIT,
    )
    .await;
    assert_eq!(sp(&dlq[0]).message_id, "f");
    assert_eq!(
        n.broker.consumer_progress("g", "t", 0).unwrap().ack_offset,
        1
    );
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_waiting_long_poll_when_message_arrives_should_return_well_before_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 2)], &[])).await;
    let svc = n.svc.clone();
    let mut poll = tokio::spawn(async move {
        let start = Instant::now();
        let r = pop(
            &svc,
            &Pop {
                long_poll_ms: 20_000,
                ..Default::default()
            },
        )
        .await;
        (r, start.elapsed())
    });
    // The poll is parked (nothing to return yet).
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut poll)
            .await
            .is_err()
    );
    let sent = Instant::now();
    send_one(&n.svc, "t", 1, "late", None).await;
    let (r, elapsed) = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code(&r.status), Code::Ok);
    assert_eq!(sp(&r.messages[0]).message_id, "late");
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "{:?}",
        sent.elapsed()
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_any_queue_when_popped_one_at_a_time_should_visit_every_queue() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 4)], &[])).await;
    for q in 0..4 {
        send_one(&n.svc, "t", q, &format!("q{q}"), None).await;
    }
    // Wait until all four are dispatched (another group reads them all).
    assert_eq!(
        pop_n(
            &n.svc,
            &Pop {
                group: "probe",
                ..Default::default()
            },
            4,
            LIMIT
        )
        .await
        .len(),
        4
    );
    let mut queues = BTreeSet::new();
    for _ in 0..4 {
        let r = pop(
            &n.svc,
            &Pop {
                batch: 1,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(r.messages.len(), 1);
        queues.insert(sp(&r.messages[0]).queue_id);
    }
    assert_eq!(queues, (0..4).collect());
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_bad_requests_when_called_should_answer_clear_codes() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 2)], &[])).await;
    // Send: unknown topic, queue out of range, mixed batch.
    let r = send(&n.svc, vec![msg("nope", 0, "a", None, "b")]).await;
    assert_eq!(code(&r.status), Code::TopicNotFound);
    assert_eq!(code(&r.entries[0].status), Code::TopicNotFound);
    let r = send(&n.svc, vec![msg("t", 2, "a", None, "b")]).await;
    assert_eq!(code(&r.entries[0].status), Code::BadRequest);
    assert!(
        r.entries[0]
            .status
            .as_ref()
            .unwrap()
            .message
            .contains("queue id 2")
    );
    let r = send(
        &n.svc,
        vec![
            msg("t", 0, "ok", None, "b"),
            msg("nope", 0, "bad", None, "b"),
        ],
    )
    .await;
    assert_eq!(code(&r.status), Code::MultipleResults);
    assert_eq!(code(&r.entries[0].status), Code::Ok);
    assert_eq!(r.entries[0].message_id, "ok");
    assert_eq!(code(&r.entries[1].status), Code::TopicNotFound);
    // Pop: unknown topic, bad queue, invalid SQL filter, bad batch.
    let r = pop(
        &n.svc,
        &Pop {
            topic: "nope",
            ..Default::default()
        },
    )
    .await;
    assert_eq!(code(&r.status), Code::TopicNotFound);
    let r = pop(
        &n.svc,
        &Pop {
            queue: 7,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(code(&r.status), Code::BadRequest);
    let r = pop(
        &n.svc,
        &Pop {
            batch: 0,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(code(&r.status), Code::BadRequest);
    let r = n
        .svc
        .pop_message(tonic::Request::new(ReceiveMessageRequest {
            group: res("g"),
            message_queue: Some(MessageQueue {
                topic: res("t"),
                id: -1,
                ..Default::default()
            }),
            filter_expression: Some(FilterExpression {
                r#type: FilterType::Sql as i32,
                expression: "a > 'x'".into(),
            }),
            batch_size: 1,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&r.status), Code::IllegalFilterExpression);
    assert!(
        r.status
            .unwrap()
            .message
            .contains("at position 3: 'x' cannot be compared with >")
    );
    let r = pop(
        &n.svc,
        &Pop {
            group: "bad group",
            ..Default::default()
        },
    )
    .await;
    assert_eq!(code(&r.status), Code::IllegalConsumerGroup);
    // A LITE message needs a lite topic (and a LITE topic: see tests/lite.rs).
    let mut lite = msg("t", 0, "lite", None, "b");
    lite.system_properties.as_mut().unwrap().message_type =
        comet_proto::apache::rocketmq::v2::MessageType::Lite as i32;
    let r = send(&n.svc, vec![lite]).await;
    assert_eq!(code(&r.entries[0].status), Code::IllegalLiteTopic);
    // Ack: malformed, foreign broker set.
    assert_eq!(
        ack(&n.svc, "g", "t", "garbage").await,
        Code::InvalidReceiptHandle
    );
    assert_eq!(
        ack(
            &n.svc,
            "g",
            "t",
            "broker-b~AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        )
        .await,
        Code::InvalidReceiptHandle
    );
    // A real handle used with another group is refused too.
    let got = pop_n(&n.svc, &Pop::default(), 1, LIMIT).await;
    assert_eq!(
        ack(&n.svc, "other", "t", &handle(&got[0])).await,
        Code::InvalidReceiptHandle
    );
    assert_eq!(ack(&n.svc, "g", "t", &handle(&got[0])).await, Code::Ok);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_shutdown_when_long_poll_waits_should_end_it_and_refuse_new_calls() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    let svc = n.svc.clone();
    let mut poll = tokio::spawn(async move {
        pop(
            &svc,
            &Pop {
                long_poll_ms: 30_000,
                ..Default::default()
            },
        )
        .await
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut poll)
            .await
            .is_err()
    );
    let start = Instant::now();
    n.broker.shutdown().await.unwrap();
    let r = poll.await.unwrap();
    assert_eq!(code(&r.status), Code::MessageNotFound);
    assert!(start.elapsed() < Duration::from_secs(5));
    let err = n
        .svc
        .send_message(tonic::Request::new(Default::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn given_long_backlog_of_other_tags_when_popped_should_scan_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    let mut batch: Vec<_> = (0..600)
        .map(|i| msg("t", 0, &format!("x{i}"), Some("x"), "b"))
        .collect();
    batch.push(msg("t", 0, "wanted", Some("y"), "b"));
    let r = send(&n.svc, batch).await;
    assert_eq!(code(&r.status), Code::Ok);
    let got = pop_n(
        &n.svc,
        &Pop {
            filter: "y",
            ..Default::default()
        },
        1,
        LIMIT,
    )
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(sp(&got[0]).message_id, "wanted");
    assert_eq!(sp(&got[0]).queue_offset, Some(600));
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_group_backoff_mode_when_redelivered_should_wait_deadline_plus_backoff() {
    use comet_proto::apache::rocketmq::v2::{
        CustomizedBackoff, RetryPolicy, retry_policy::Strategy,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut md = metadata(&[("t", 1)], &[("gb", 16)]);
    md.groups[0].retry_policy = Some(RetryPolicy {
        max_attempts: 0,
        strategy: Some(Strategy::CustomizedBackoff(CustomizedBackoff {
            next: vec![prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }],
        })),
    });
    let mut cfg = config(dir.path());
    cfg.redelivery = comet_broker::RedeliveryDelay::DeadlinePlusGroupBackoff;
    let n = open_with(cfg, md).await;
    send_one(&n.svc, "t", 0, "b", None).await;
    let p = Pop {
        group: "gb",
        invisible_ms: 500,
        ..Default::default()
    };
    let first = pop_n(&n.svc, &p, 1, LIMIT).await;
    let popped = Instant::now();
    assert_eq!(first.len(), 1);
    let again = pop_n(&n.svc, &p, 1, LIMIT).await;
    let elapsed = popped.elapsed();
    assert_eq!(sp(&again[0]).delivery_attempt, Some(2));
    assert!(elapsed >= Duration::from_millis(1400), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_acks_and_changes_of_several_consumers_when_settled_in_one_call_should_answer_each_in_order()
 {
    use comet_proto::apache::rocketmq::v2::{AckMessageEntry, AckMessageRequest};
    use comet_proto::comet::v1::{SettleMessagesRequest, Settlement, settled, settlement};

    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    for i in 0..4 {
        send_one(&n.svc, "t", 0, &format!("id-{i}"), None).await;
    }
    let got = pop_n(&n.svc, &Pop::default(), 4, LIMIT).await;
    assert_eq!(got.len(), 4);
    let ack_of = |client: &str, handles: &[&Message]| Settlement {
        client_id: client.into(),
        request: Some(settlement::Request::Ack(AckMessageRequest {
            group: res("g"),
            topic: res("t"),
            entries: handles
                .iter()
                .map(|m| AckMessageEntry {
                    message_id: sp(m).message_id.clone(),
                    receipt_handle: handle(m),
                    lite_topic: None,
                })
                .collect(),
        })),
    };
    let change_of = |client: &str, handle: String| Settlement {
        client_id: client.into(),
        request: Some(settlement::Request::ChangeInvisibleDuration(
            ChangeInvisibleDurationRequest {
                group: res("g"),
                topic: res("t"),
                receipt_handle: handle,
                invisible_duration: secs(60_000),
                ..ChangeInvisibleDurationRequest::default()
            },
        )),
    };
    let settlements = vec![
        ack_of("consumer-1", &[&got[0], &got[1]]),
        change_of("consumer-2", handle(&got[2])),
        ack_of("consumer-2", &[&got[3]]),
        // Not a handle this broker issued: this settlement fails on its own.
        change_of("consumer-1", "broker-a~not-a-handle".into()),
    ];
    let results = n
        .svc
        .settle_messages(tonic::Request::new(SettleMessagesRequest { settlements }))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 4);
    let mut results = results.into_iter().map(|r| r.response.unwrap());
    match results.next().unwrap() {
        settled::Response::Ack(a) => {
            assert_eq!(a.entries.len(), 2);
            assert!(a.entries.iter().all(|e| code(&e.status) == Code::Ok));
        }
        other => panic!("an ack answers an ack: {other:?}"),
    }
    let new_handle = match results.next().unwrap() {
        settled::Response::ChangeInvisibleDuration(c) => {
            assert_eq!(code(&c.status), Code::Ok);
            assert_ne!(
                c.receipt_handle,
                handle(&got[2]),
                "a change issues a new handle"
            );
            c.receipt_handle
        }
        other => panic!("a change answers a change: {other:?}"),
    };
    match results.next().unwrap() {
        settled::Response::Ack(a) => assert_eq!(code(&a.entries[0].status), Code::Ok),
        other => panic!("{other:?}"),
    }
    match results.next().unwrap() {
        settled::Response::ChangeInvisibleDuration(c) => {
            assert_eq!(code(&c.status), Code::InvalidReceiptHandle);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ack(&n.svc, "g", "t", &new_handle).await, Code::Ok);
    let p = n.broker.consumer_progress("g", "t", 0).unwrap();
    assert_eq!((p.ack_offset, p.inflight), (4, 0));
    n.broker.shutdown().await.unwrap();
}
