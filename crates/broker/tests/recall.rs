//! Recall of delay messages: before and after delivery, repeated, bad handles of every kind,
//! and across a restart.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use comet_proto::apache::rocketmq::v2::{Code, Message, SendMessageResponse};
use common::*;

const LIMIT: Duration = Duration::from_secs(20);

/// Sends delay messages (all OK) and returns their recall handles, in order.
async fn send_delayed(svc: &comet_broker::BrokerGrpc, msgs: Vec<Message>) -> Vec<String> {
    let r: SendMessageResponse = send(svc, msgs).await;
    assert_eq!(code(&r.status), Code::Ok, "{r:?}");
    r.entries
        .iter()
        .map(|e| {
            assert!(
                e.recall_handle.starts_with(&format!("{SET}~")),
                "a delay message's answer carries a recall handle: {e:?}"
            );
            e.recall_handle.clone()
        })
        .collect()
}

/// Pops until the message `id` arrives (bounded); returns every id popped, in order.
async fn pop_until(svc: &comet_broker::BrokerGrpc, id: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + LIMIT;
    let mut ids = Vec::new();
    while !ids.iter().any(|i| i == id) {
        assert!(
            std::time::Instant::now() < deadline,
            "{id} never arrived; got {ids:?}"
        );
        let r = pop(
            svc,
            &Pop {
                long_poll_ms: 2000,
                ..Default::default()
            },
        )
        .await;
        ids.extend(r.messages.iter().map(|m| sp(m).message_id.clone()));
    }
    ids
}

#[tokio::test]
async fn given_a_delay_message_when_recalled_before_its_time_should_never_be_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1)], &[])).await;
    let t0 = now_ms();
    // A normal message has no recall handle.
    let r = send(&n.svc, vec![msg("t", 0, "now", None, "b")]).await;
    assert_eq!(r.entries[0].recall_handle, "");
    let h = send_delayed(
        &n.svc,
        vec![delayed("recalled", t0 + 1000), delayed("kept", t0 + 1500)],
    )
    .await;
    let (c, m, id) = recall(&n.svc, "t", &h[0]).await;
    assert_eq!((c, id.as_str()), (Code::Ok, "recalled"), "{m}");
    // Repeating a recall answers OK again (a client may retry after a lost answer).
    let (c, m, id) = recall(&n.svc, "t", &h[0]).await;
    assert_eq!((c, id.as_str()), (Code::Ok, "recalled"), "{m}");
    assert_eq!(n.broker.timer_stats().recalled, 1);

    // Timers deliver in time order: once "kept" is out, "recalled" would have been too.
    let ids = pop_until(&n.svc, "kept").await;
    assert_eq!(ids, ["now", "kept"]);
    // After its delivery a message can no longer be recalled, and the answer says why.
    let (c, m, _) = recall(&n.svc, "t", &h[1]).await;
    assert_eq!(c, Code::NotFound, "{m}");
    assert!(m.contains("already delivered"), "{m}");
    // The recalled one stays recalled once its time has passed.
    let (c, m, _) = recall(&n.svc, "t", &h[0]).await;
    assert_eq!(c, Code::Ok, "{m}");
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_bad_recall_handles_when_recalled_should_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let n = open(dir.path(), metadata(&[("t", 1), ("u", 1)], &[])).await;
    let far = now_ms() + 3_600_000;
    let h = send_delayed(&n.svc, vec![delayed("d", far)]).await;
    let h = &h[0];
    for (bad, why) in [
        ("", "prefix"),
        ("no-separator", "prefix"),
        ("broker-a~", "length"),
        ("broker-a~!!!", "base64url"),
    ] {
        let (c, m, _) = recall(&n.svc, "t", bad).await;
        assert_eq!(c, Code::BadRequest, "{bad:?}: {m}");
        assert!(m.contains("malformed") && m.contains(why), "{bad:?}: {m}");
    }
    // One character changed: the checksum catches it.
    let mut tampered: Vec<char> = h.chars().collect();
    let i = tampered.len() - 12;
    tampered[i] = if tampered[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    let (c, m, _) = recall(&n.svc, "t", &tampered).await;
    assert_eq!(c, Code::BadRequest, "{m}");
    assert!(m.contains("checksum"), "{m}");
    // Another topic's recall.
    let (c, m, _) = recall(&n.svc, "u", h).await;
    assert_eq!(c, Code::BadRequest, "{m}");
    assert!(m.contains("another topic"), "{m}");
    // Another broker set's handle.
    let foreign = h.replacen(SET, "broker-z", 1);
    let (c, m, _) = recall(&n.svc, "t", &foreign).await;
    assert_eq!(c, Code::BadRequest, "{m}");
    assert!(m.contains("broker-z"), "{m}");
    // A well-formed handle of this set and topic that names no message here: issued by
    // another broker of the same name for a message this one does not hold.
    let other_dir = tempfile::tempdir().unwrap();
    let other = open(other_dir.path(), metadata(&[("t", 1)], &[])).await;
    let unknown = send_delayed(&other.svc, vec![delayed("elsewhere", far)]).await;
    other.broker.shutdown().await.unwrap();
    let (c, m, _) = recall(&n.svc, "t", &unknown[0]).await;
    assert_eq!(c, Code::NotFound, "{m}");
    assert!(m.contains("no delay message"), "{m}");
    // Nothing above recalled anything.
    assert_eq!(n.broker.timer_stats().recalled, 0);
    let (c, m, id) = recall(&n.svc, "t", h).await;
    assert_eq!((c, id.as_str()), (Code::Ok, "d"), "{m}");
    n.broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn given_recalls_when_the_broker_restarts_should_hold_and_handles_stay_valid() {
    let dir = tempfile::tempdir().unwrap();
    let md = || metadata(&[("t", 1)], &[]);
    let t0 = now_ms();
    let h = {
        let n = open(dir.path(), md()).await;
        let h = send_delayed(
            &n.svc,
            vec![
                delayed("before", t0 + 1500),
                delayed("after", t0 + 2000),
                delayed("kept", t0 + 2500),
            ],
        )
        .await;
        let (c, m, _) = recall(&n.svc, "t", &h[0]).await;
        assert_eq!(c, Code::Ok, "{m}");
        n.broker.shutdown().await.unwrap();
        h
    };
    let n = open(dir.path(), md()).await;
    // A handle issued before the restart recalls after it.
    let (c, m, id) = recall(&n.svc, "t", &h[1]).await;
    assert_eq!((c, id.as_str()), (Code::Ok, "after"), "{m}");
    let (c, m, _) = recall(&n.svc, "t", &h[0]).await;
    assert_eq!(c, Code::Ok, "the recall before the restart holds: {m}");
    let ids = pop_until(&n.svc, "kept").await;
    assert_eq!(ids, ["kept"]);
    n.broker.shutdown().await.unwrap();
}
