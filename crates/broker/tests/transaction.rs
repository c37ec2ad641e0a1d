//! Transactional messages: half messages, EndTransaction, check-back, discard, restarts.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use comet_broker::{BrokerConfig, BrokerGrpc};
use comet_proto::apache::rocketmq::v2::{Code, MessageType, TransactionResolution};
use common::*;
use futures::StreamExt as _;

const LIMIT: Duration = Duration::from_secs(15);

/// Polls `check` until it holds; panics naming `what` once [`LIMIT`] has passed. For the
/// broker's transaction statistics, which nothing signals and only asking shows (the discard
/// after the last check is written by the check task on its own schedule). Backs off like
/// `comet_tests::wait_until` (the cluster tests' helper, which a crate test cannot use): from
/// 2 ms, doubling up to 50 ms.
async fn poll_until(what: &str, check: impl Fn() -> bool) {
    let started = Instant::now();
    let mut pause = Duration::from_millis(2);
    while !check() {
        let waited = started.elapsed();
        assert!(waited < LIMIT, "{what}: not reached within {LIMIT:?}");
        tokio::time::sleep(pause.min(LIMIT - waited)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Sends one transactional message; returns its transaction id.
async fn send_half(svc: &BrokerGrpc, id: &str) -> String {
    let r = send(svc, vec![tx_msg(id)]).await;
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");
    let tx = r.entries[0].transaction_id.clone();
    assert!(tx.starts_with("broker-a~"), "{tx}");
    tx
}

async fn nothing_visible(svc: &BrokerGrpc) {
    let r = pop(
        svc,
        &Pop {
            long_poll_ms: 300,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(code(&r.status), Code::MessageNotFound, "{r:?}");
}

fn checking(dir: &std::path::Path, timeout_ms: u64, interval_ms: u64, max: u32) -> BrokerConfig {
    let mut cfg = config(dir);
    cfg.transaction_timeout = Duration::from_millis(timeout_ms);
    cfg.transaction_check_interval = Duration::from_millis(interval_ms);
    cfg.transaction_max_checks = max;
    cfg
}

#[tokio::test]
async fn given_half_message_when_committed_should_become_visible_once() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    let tx = send_half(&n.svc, "c1").await;
    nothing_visible(&n.svc).await;
    assert_eq!(n.broker.transaction_stats().pending, 1);
    let (c, _) = end(&n.svc, "t", "c1", &tx, TransactionResolution::Commit).await;
    assert_eq!(c, Code::Ok);
    let got = pop_n(&n.svc, &Pop::default(), 1, LIMIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(sp(&got[0]).message_id, "c1");
    assert_eq!(sp(&got[0]).message_type, MessageType::Transaction as i32);
    assert_eq!(sp(&got[0]).tag.as_deref(), Some("tx-tag"));
    assert_eq!(got[0].body.as_ref(), b"body-c1");
    // Repeating the same resolution is harmless; the other one is refused.
    let (c, msg) = end(&n.svc, "t", "c1", &tx, TransactionResolution::Commit).await;
    assert_eq!(c, Code::Ok, "{msg}");
    assert!(msg.contains("already committed"), "{msg}");
    let (c, msg) = end(&n.svc, "t", "c1", &tx, TransactionResolution::Rollback).await;
    assert_eq!(c, Code::InvalidTransactionId);
    assert!(msg.contains("already committed"), "{msg}");
    nothing_visible(&n.svc).await;
    let s = n.broker.transaction_stats();
    assert_eq!((s.pending, s.committed), (0, 1));
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_half_message_when_rolled_back_should_never_be_visible() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    let tx = send_half(&n.svc, "r1").await;
    let (c, _) = end(&n.svc, "t", "r1", &tx, TransactionResolution::Rollback).await;
    assert_eq!(c, Code::Ok);
    nothing_visible(&n.svc).await;
    let (c, _) = end(&n.svc, "t", "r1", &tx, TransactionResolution::Commit).await;
    assert_eq!(c, Code::InvalidTransactionId);
    let s = n.broker.transaction_stats();
    assert_eq!((s.pending, s.rolled_back), (0, 1));
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_bad_end_transaction_requests_when_sent_should_answer_invalid_transaction_id() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1), ("u", 1)], &[])).await;
    let tx = send_half(&n.svc, "b1").await;
    let commit = TransactionResolution::Commit;
    let cases = [
        ("t", "b1", String::new(), "empty"),
        ("t", "b1", "broker-a~AAAA".to_owned(), "malformed"),
        ("t", "b1", tx.replace("broker-a~", "broker-b~"), "broker-b"),
        ("u", "b1", tx.clone(), "belongs to topic"),
        ("t", "other", tx.clone(), "belongs to message"),
    ];
    for (topic, id, t, text) in cases {
        let (c, msg) = end(&n.svc, topic, id, &t, commit).await;
        assert_eq!(c, Code::InvalidTransactionId, "{t}: {msg}");
        assert!(msg.contains(text), "{msg:?} should mention {text:?}");
    }
    // "Unknown" leaves it pending.
    let (c, msg) = end(&n.svc, "t", "b1", &tx, TransactionResolution::Unspecified).await;
    assert_eq!(c, Code::Ok);
    assert!(msg.contains("checked again"), "{msg}");
    assert_eq!(n.broker.transaction_stats().pending, 1);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_unresolved_half_when_checked_should_ask_watchers_and_commit_on_their_answer() {
    let dir = tempfile::tempdir().unwrap();
    let n = open_with(
        checking(dir.path(), 300, 400, 5),
        metadata(&[("t", 1)], &[]),
    )
    .await;
    let mut checks = watch(&n.svc).await;
    let sent = Instant::now();
    let tx = send_half(&n.svc, "k1").await;
    let c = next_check(&mut checks, LIMIT).await;
    assert!(
        sent.elapsed() >= Duration::from_millis(250),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(c.topic, "t");
    assert_eq!(c.transaction_id, tx);
    let m = c.message.unwrap();
    assert_eq!(m.topic.unwrap().name, "t");
    let msp = m.system_properties.unwrap();
    assert_eq!(msp.message_id, "k1");
    assert_eq!(msp.message_type, MessageType::Transaction as i32);
    assert!(msp.body_digest.is_some() && msp.receipt_handle.is_none());
    assert_eq!(m.body.as_ref(), b"body-k1");
    // "Unknown": asked again one interval later.
    let (code_, _) = end(&n.svc, "t", "k1", &tx, TransactionResolution::Unspecified).await;
    assert_eq!(code_, Code::Ok);
    let again = next_check(&mut checks, LIMIT).await;
    assert_eq!(again.transaction_id, tx);
    let (code_, _) = end(&n.svc, "t", "k1", &tx, TransactionResolution::Commit).await;
    assert_eq!(code_, Code::Ok);
    let got = pop_n(&n.svc, &Pop::default(), 1, LIMIT).await;
    assert_eq!(sp(&got[0]).message_id, "k1");
    assert!(n.broker.transaction_stats().checks >= 2);
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_checks_exhausted_when_unresolved_should_discard_and_record() {
    let dir = tempfile::tempdir().unwrap();
    let n = open_with(
        checking(dir.path(), 100, 150, 2),
        metadata(&[("t", 1)], &[]),
    )
    .await;
    let mut checks = watch(&n.svc).await;
    let tx = send_half(&n.svc, "d1").await;
    assert_eq!(next_check(&mut checks, LIMIT).await.transaction_id, tx);
    assert_eq!(next_check(&mut checks, LIMIT).await.transaction_id, tx);
    poll_until("the half message discarded", || {
        n.broker.transaction_stats().discarded > 0
    })
    .await;
    let s = n.broker.transaction_stats();
    assert_eq!((s.pending, s.discarded, s.checks), (0, 1, 2));
    let (c, msg) = end(&n.svc, "t", "d1", &tx, TransactionResolution::Commit).await;
    assert_eq!(c, Code::InvalidTransactionId);
    assert!(msg.contains("discarded"), "{msg}");
    nothing_visible(&n.svc).await;
    // The discarded half message is kept where an admin can read it.
    let kept = pop_n(
        &n.svc,
        &Pop {
            group: "admin",
            topic: comet_vocab::system::TRANS_CHECK_MAX_TIME_TOPIC,
            ..Default::default()
        },
        1,
        LIMIT,
    )
    .await;
    assert_eq!(kept.len(), 1);
    assert_eq!(sp(&kept[0]).message_id, "d1");
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_restart_when_halves_are_pending_should_keep_them_and_their_check_counts() {
    let dir = tempfile::tempdir().unwrap();
    let md = metadata(&[("t", 1)], &[]);
    let cfg = || checking(dir.path(), 200, 300, 3);
    let n = open_with(cfg(), md.clone()).await;
    let mut checks = watch(&n.svc).await;
    let committed = send_half(&n.svc, "p1").await;
    let open_tx = send_half(&n.svc, "p2").await;
    let rolled = send_half(&n.svc, "p3").await;
    // p2 is checked once before the restart.
    loop {
        if next_check(&mut checks, LIMIT).await.transaction_id == open_tx {
            break;
        }
    }
    assert_eq!(
        end(&n.svc, "t", "p3", &rolled, TransactionResolution::Rollback)
            .await
            .0,
        Code::Ok
    );
    n.broker.abandon().await;

    let n = open_with(cfg(), md.clone()).await;
    assert_eq!(n.broker.transaction_stats().pending, 2, "p1 and p2 survive");
    // The pre-restart transaction id still commits, once.
    assert_eq!(
        end(&n.svc, "t", "p1", &committed, TransactionResolution::Commit)
            .await
            .0,
        Code::Ok
    );
    let got = pop_n(&n.svc, &Pop::default(), 1, LIMIT).await;
    assert_eq!(sp(&got[0]).message_id, "p1");
    assert_eq!(ack(&n.svc, "g", "t", &handle(&got[0])).await, Code::Ok);
    n.broker.shutdown().await.unwrap();

    // p2 had at least one check before the first stop: at most two more before the discard.
    let n = open_with(cfg(), md).await;
    assert_eq!(n.broker.transaction_stats().pending, 1);
    let mut checks = watch(&n.svc).await;
    let mut more = 0;
    let deadline = Instant::now() + LIMIT;
    while n.broker.transaction_stats().discarded == 0 {
        assert!(Instant::now() < deadline, "discarded in time");
        if let Ok(Some(Ok(c))) =
            tokio::time::timeout(Duration::from_millis(100), checks.next()).await
        {
            assert_eq!(c.transaction_id, open_tx);
            more += 1;
        }
    }
    assert!((1..=2).contains(&more), "{more} checks after the restart");
    nothing_visible(&n.svc).await;
    n.broker.shutdown().await.unwrap();
}
