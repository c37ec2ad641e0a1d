//! Delayed delivery through the timer wheel: timing, validation and restarts.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use comet_proto::apache::rocketmq::v2::{Code, Message, MessageType};
use common::*;

const LIMIT: Duration = Duration::from_secs(20);

/// Pops until one message arrives; returns it with the wall clock (ms) of its arrival.
async fn pop_one_timed(svc: &comet_broker::BrokerGrpc) -> (Message, i64) {
    let got = pop_n(svc, &Pop::default(), 1, LIMIT).await;
    let at = now_ms();
    assert_eq!(got.len(), 1, "the delayed message arrived");
    (got.into_iter().next().unwrap(), at)
}

#[tokio::test]
async fn given_delay_message_when_due_should_arrive_not_before_and_within_100ms_after() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    let at = now_ms() + 1500;
    let r = send(&n.svc, vec![delayed("d1", at)]).await;
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");
    assert_eq!(n.broker.timer_stats().pending, 1);
    // Not visible before its time.
    let early = pop(
        &n.svc,
        &Pop {
            long_poll_ms: 500,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(code(&early.status), Code::MessageNotFound);
    let (m, arrived) = pop_one_timed(&n.svc).await;
    assert_eq!(sp(&m).message_id, "d1");
    assert_eq!(sp(&m).message_type, MessageType::Delay as i32);
    let ts = sp(&m).delivery_timestamp.unwrap();
    assert_eq!(ts.seconds * 1000 + i64::from(ts.nanos / 1_000_000), at);
    assert!(arrived >= at, "arrived {} ms early", at - arrived);
    assert!(arrived - at <= 100, "arrived {} ms late", arrived - at);
    // `pending` drops when the delivery is committed, just after `delivered` counts it.
    let stats = settled_timer_stats(&n.broker, |s| s.delivered == 1 && s.pending == 0).await;
    assert_eq!(stats.delivered, 1);
    assert_eq!(stats.pending, 0);
    n.broker.shutdown().await.unwrap();
}

/// The broker's timer statistics once `done` holds (bounded): the wheel counts a delivery just
/// after it appended the message, which a consumer may already have received.
async fn settled_timer_stats(
    broker: &comet_broker::Broker,
    done: impl Fn(&comet_broker::TimerStats) -> bool,
) -> comet_broker::TimerStats {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let stats = broker.timer_stats();
        if done(&stats) || std::time::Instant::now() >= deadline {
            return stats;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn given_delivery_time_in_the_past_when_sent_should_deliver_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    let r = send(&n.svc, vec![delayed("past", now_ms() - 60_000)]).await;
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");
    assert_eq!(
        n.broker.timer_stats().pending,
        0,
        "no timer for a past time"
    );
    let got = pop_n(&n.svc, &Pop::default(), 1, LIMIT).await;
    assert_eq!(got.len(), 1);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_delivery_time_before_the_epoch_when_sent_should_be_illegal_delivery_time() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    let r = send(&n.svc, vec![delayed("before", -1000)]).await;
    assert_eq!(code(&r.entries[0].status), Code::IllegalDeliveryTime);
    assert_eq!(
        r.entries[0].status.as_ref().unwrap().message,
        "delivery timestamp is not a valid point in time",
        "the proxy's rule and message (comet_vocab)"
    );
    assert_eq!(n.broker.timer_stats().pending, 0);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_delivery_time_beyond_the_maximum_when_sent_should_be_illegal_delivery_time() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    let far = now_ms() + 41 * 86_400_000;
    let r = send(&n.svc, vec![delayed("far", far)]).await;
    assert_eq!(code(&r.entries[0].status), Code::IllegalDeliveryTime);
    let msg = &r.entries[0].status.as_ref().unwrap().message;
    assert!(msg.contains("40 days"), "{msg}");
    // Forty days is accepted.
    let r = send(
        &n.svc,
        vec![delayed("ok", now_ms() + 40 * 86_400_000 - 60_000)],
    )
    .await;
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");
    assert_eq!(n.broker.timer_stats().pending, 1);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_many_delays_when_due_should_arrive_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    let base = now_ms() + 800;
    // Sent in reverse order of their times.
    let msgs: Vec<Message> = (0..20)
        .rev()
        .map(|i| delayed(&format!("m{i:02}"), base + i * 37))
        .collect();
    let r = send(&n.svc, msgs).await;
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");
    let got = pop_n(&n.svc, &Pop::default(), 20, LIMIT).await;
    let ids: Vec<String> = got.iter().map(|m| sp(m).message_id.clone()).collect();
    let want: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
    assert_eq!(ids, want);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_restart_in_the_middle_of_the_delay_when_due_should_arrive_once_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let md = metadata(&[("t", 1)], &[]);
    let n = open(dir.path(), md.clone()).await;
    let at = now_ms() + 2500;
    let r = send(&n.svc, vec![delayed("r1", at), delayed("r2", at + 10)]).await;
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");
    n.broker.shutdown().await.unwrap();

    let n = open(dir.path(), md.clone()).await;
    assert_eq!(
        n.broker.timer_stats().pending,
        2,
        "timers survive the restart"
    );
    let got = pop_n(&n.svc, &Pop::default(), 2, LIMIT).await;
    let arrived = now_ms();
    assert_eq!(got.len(), 2);
    assert!(arrived >= at, "arrived {} ms early", at - arrived);
    assert!(arrived - at <= 300, "arrived {} ms late", arrived - at);
    for m in &got {
        assert_eq!(ack(&n.svc, "g", "t", &handle(m)).await, Code::Ok);
    }
    // A crash-like stop after delivery: nothing is delivered twice after the next start.
    n.broker.abandon().await;
    let n = open(dir.path(), md).await;
    let again = pop(
        &n.svc,
        &Pop {
            long_poll_ms: 1000,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(code(&again.status), Code::MessageNotFound, "{again:?}");
    assert_eq!(n.broker.timer_stats().pending, 0);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_transaction_message_with_delivery_time_when_sent_should_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    let mut m = delayed("tx", now_ms() + 5000);
    m.system_properties.as_mut().unwrap().message_type = MessageType::Transaction as i32;
    let r = send(&n.svc, vec![m]).await;
    assert_eq!(
        code(&r.entries[0].status),
        Code::MessagePropertyConflictWithType
    );
    n.broker.shutdown().await.unwrap();
}
