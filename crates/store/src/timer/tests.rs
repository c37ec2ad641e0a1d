//! Tests of the timer store: ordering, rolling, restarts, torn and corrupt records, retention.
//! The clock is simulated: every call gets `now_ms` from the test.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use rand::{Rng, SeedableRng};

use super::*;
use crate::error::StoreError;

const SEC: i64 = 1000;
const DAY: i64 = 24 * 60 * 60 * SEC;
/// A realistic wall clock, on a slot boundary.
const T0: i64 = 1_700_000_000_000;
const REC: u64 = 64;

fn small() -> TimerConfig {
    TimerConfig {
        slot_ms: 1000,
        wheel_slots: 64,
        log_segment_size: 64 * 1024,
        max_delay_ms: 365 * DAY,
    }
}

fn payload(id: u64) -> TimerPayload {
    TimerPayload {
        commit_log_offset: id as i64 * 1000,
        size: 100 + id as i32 % 7,
        cookie: id,
    }
}

fn open(dir: &Path, cfg: &TimerConfig, now: i64) -> TimerStore {
    TimerStore::open(dir, cfg.clone(), now).expect("open timer store")
}

fn poll(store: &TimerStore, now: i64) -> Vec<TimerEntry> {
    store.poll_due(now, usize::MAX).expect("poll")
}

fn ids(entries: &[TimerEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.payload.cookie).collect()
}

fn commit_all(store: &TimerStore, entries: &[TimerEntry]) {
    for e in entries {
        store.commit(e).expect("commit");
    }
}

fn segment(dir: &Path, base: u64) -> PathBuf {
    dir.join("log").join(format!("{base:020}"))
}

fn segments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("log"))
        .expect("ls log")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Overwrites bytes of the first segment, as a torn write or bit rot would.
fn overwrite(dir: &Path, pos: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(segment(dir, 0))
        .expect("open segment");
    f.seek(SeekFrom::Start(pos)).expect("seek");
    f.write_all(bytes).expect("write");
}

fn assert_in_delivery_order(entries: &[TimerEntry]) {
    for w in entries.windows(2) {
        assert!(
            (w[0].deliver_at_ms, w[0].id()) < (w[1].deliver_at_ms, w[1].id()),
            "out of order: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
}

#[test]
fn given_store_when_shared_should_be_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<TimerStore>();
}

#[test]
fn given_timers_in_one_slot_when_polled_should_deliver_at_ms_precision_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), &small(), T0);
    let base = T0 + 5 * SEC;
    // (id, ms offset inside the slot); ids 2 and 4 share a millisecond.
    let timers = [(1, 900), (2, 5), (3, 500), (4, 5), (5, 999), (6, 0)];
    for (id, off) in timers {
        store
            .schedule(base + off, payload(id), T0)
            .expect("schedule");
    }
    assert!(poll(&store, base - 1).is_empty(), "nothing before the slot");
    assert_eq!(ids(&poll(&store, base + 4)), vec![6]);
    let same_ms = poll(&store, base + 5);
    assert_eq!(ids(&same_ms), vec![2, 4], "same ms: schedule order");
    assert!(poll(&store, base + 499).is_empty());
    assert_eq!(ids(&poll(&store, base + 500)), vec![3]);
    let rest = poll(&store, base + 999);
    assert_eq!(ids(&rest), vec![1, 5]);
    assert_eq!(rest[0].deliver_at_ms, base + 900);
    assert_eq!(rest[1].deliver_at_ms, base + 999);
    assert_eq!(rest[1].payload, payload(5));
}

#[test]
fn given_timers_across_slots_when_clock_ticks_should_deliver_each_exactly_at_its_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), &small(), T0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut due = BTreeMap::new();
    for id in 0..300u64 {
        let at = T0 + rng.random_range(0..30 * SEC);
        store.schedule(at, payload(id), T0).expect("schedule");
        due.insert(id, at);
    }
    let mut all = Vec::new();
    for now in T0..=T0 + 30 * SEC {
        let got = poll(&store, now);
        for e in &got {
            assert_eq!(
                e.deliver_at_ms, now,
                "entry {:?} not delivered exactly on time",
                e
            );
            assert_eq!(due[&e.payload.cookie], now);
        }
        commit_all(&store, &got);
        all.extend(got);
    }
    assert_eq!(all.len(), 300);
    assert_in_delivery_order(&all);
    assert_eq!(store.pending(), 0);
}

#[test]
fn given_past_deadline_when_scheduled_should_deliver_at_once_after_earlier_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), &small(), T0);
    store.schedule(T0 + 1000, payload(1), T0).expect("schedule");
    let first = poll(&store, T0 + 1500);
    assert_eq!(ids(&first), vec![1]);
    store.commit(&first[0]).expect("commit");

    store
        .schedule(T0 - 10 * SEC, payload(2), T0 + 1500)
        .expect("past");
    // A caller whose clock lags behind: its "future" time is already past for the store.
    store
        .schedule(T0 + 1200, payload(3), T0 + 1100)
        .expect("lagging");
    let late = poll(&store, T0 + 1500);
    assert_eq!(ids(&late), vec![2, 3]);
    assert!(late.iter().all(|e| e.deliver_at_ms == T0 + 1500));
    assert!(
        (late[0].deliver_at_ms, late[0].id()) > (first[0].deliver_at_ms, first[0].id()),
        "a late timer must sort after everything already delivered"
    );
}

#[test]
fn given_40_day_delay_when_clock_advances_should_roll_and_deliver_exactly_at_due() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = TimerConfig::default();
    let store = open(dir.path(), &cfg, T0);
    let due = T0 + 40 * DAY + 123;
    store.schedule(due, payload(40), T0).expect("schedule");
    store
        .schedule(T0 + 3 * SEC, payload(1), T0)
        .expect("schedule");
    let near = poll(&store, T0 + 3 * SEC);
    assert_eq!(ids(&near), vec![1]);
    commit_all(&store, &near);

    let mut now = T0 + 3 * SEC;
    while now + 6 * 3600 * SEC < due {
        now += 6 * 3600 * SEC;
        assert!(poll(&store, now).is_empty(), "nothing due at {now}");
        assert_eq!(store.pending(), 1);
    }
    assert!(poll(&store, due - 1).is_empty(), "not one ms early");
    let got = poll(&store, due);
    assert_eq!(ids(&got), vec![40]);
    assert_eq!(got[0].deliver_at_ms, due);
    assert_eq!(got[0].payload, payload(40));
    assert_eq!(got[0].id(), 0, "the id is the scheduled record's position");
    assert!(
        got[0].pos >= 3 * REC as i64,
        "the delivered record is a roll copy, not the original"
    );
    commit_all(&store, &got);
    assert_eq!(store.pending(), 0);
    assert_eq!(store.next_due_ms(), None);
}

#[test]
fn given_pending_timers_when_reopened_should_deliver_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path(), &small(), T0);
        for id in 0..40u64 {
            let at = T0 + SEC + (id as i64 * 397) % (20 * SEC);
            store.schedule(at, payload(id), T0).expect("schedule");
            if id == 19 {
                store.flush().expect("flush");
            }
        }
        // Dropped without a flush: the second half lives only in the page cache.
    }
    let store = open(dir.path(), &small(), T0 + 100);
    assert_eq!(store.pending(), 40);
    assert_eq!(store.next_due_ms(), Some(T0 + SEC));
    let got = poll(&store, T0 + 30 * SEC);
    assert_in_delivery_order(&got);
    let mut got_ids = ids(&got);
    got_ids.sort_unstable();
    assert_eq!(got_ids, (0..40).collect::<Vec<_>>());
}

#[test]
fn given_cookies_scheduled_when_reopened_after_a_crash_or_power_loss_should_report_their_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wheel = dir.path().join("wheel");
    let seg0 = segment(dir.path(), 0);
    let read = |p: &Path| std::fs::read(p).expect("read");
    let at_flush = {
        let store = open(dir.path(), &small(), T0);
        assert_eq!(
            store.cookie_end(),
            Some(0),
            "a new store has scheduled nothing"
        );
        for id in [3u64, 9, 4] {
            store
                .schedule(T0 + 5 * SEC, payload(id), T0)
                .expect("schedule");
        }
        assert_eq!(store.cookie_end(), Some(10));
        store.flush().expect("flush");
        let snapshot = (read(&wheel), read(&seg0));
        // Unflushed: survives a process crash (the page cache), not a power loss.
        store
            .schedule(T0 + 5 * SEC, payload(20), T0)
            .expect("schedule");
        // A delivered, committed timer still counts.
        let due = poll(&store, T0 + 5 * SEC);
        commit_all(&store, &due);
        snapshot
    };
    let store = open(dir.path(), &small(), T0 + SEC);
    assert_eq!(
        store.cookie_end(),
        Some(21),
        "the unflushed tail is recovered"
    );
    drop(store);
    std::fs::write(&wheel, &at_flush.0).expect("write");
    std::fs::write(&seg0, &at_flush.1).expect("write");
    let store = open(dir.path(), &small(), T0 + SEC);
    assert_eq!(
        store.cookie_end(),
        Some(10),
        "only what the flush made durable"
    );
    assert_eq!(ids(&poll(&store, T0 + 5 * SEC)), vec![3, 9, 4]);
}

#[test]
fn given_delivered_entries_when_reopened_should_redeliver_only_uncommitted_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path(), &small(), T0);
        for id in 0..10u64 {
            store
                .schedule(T0 + SEC + id as i64 * 10, payload(id), T0)
                .expect("schedule");
        }
        let got = poll(&store, T0 + 2 * SEC);
        assert_eq!(got.len(), 10);
        store.commit(&got[3]).expect("commit"); // commits 0..=3
        assert_eq!(store.pending(), 6);
        store.commit(&got[1]).expect("older commit is a no-op");
        assert_eq!(store.pending(), 6);
    }
    let store = open(dir.path(), &small(), T0 + 3 * SEC);
    let again = poll(&store, T0 + 3 * SEC);
    assert_eq!(ids(&again), (4..10).collect::<Vec<_>>());
    commit_all(&store, &again);
    drop(store);
    let store = open(dir.path(), &small(), T0 + 4 * SEC);
    assert!(poll(&store, T0 + 5 * SEC).is_empty(), "all committed");
    assert_eq!(store.pending(), 0);
}

#[test]
fn given_corrupt_record_in_flushed_chain_when_slot_loads_should_skip_it_and_keep_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path(), &small(), T0);
        for id in 0..3u64 {
            store
                .schedule(T0 + 2 * SEC + id as i64, payload(id), T0)
                .expect("schedule");
        }
        store.flush().expect("flush");
    }
    overwrite(dir.path(), REC + 20, &[0xAB; 8]); // bit rot in the middle record
    let store = open(dir.path(), &small(), T0);
    let got = poll(&store, T0 + 3 * SEC);
    assert_eq!(ids(&got), vec![0, 2]);
}

#[test]
fn given_corrupt_chain_head_when_reopened_should_rebuild_the_slot_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path(), &small(), T0);
        for id in 0..3u64 {
            store
                .schedule(T0 + 2 * SEC + id as i64, payload(id), T0)
                .expect("schedule");
        }
        store
            .schedule(T0 + 4 * SEC, payload(9), T0)
            .expect("other slot");
        store.flush().expect("flush");
    }
    overwrite(dir.path(), 2 * REC + 9, &[0x55]); // the slot's newest record
    {
        let store = open(dir.path(), &small(), T0);
        assert_eq!(ids(&poll(&store, T0 + 3 * SEC)), vec![0, 1]);
    }
    // The rebuilt chain is durable: a second restart still finds both.
    let store = open(dir.path(), &small(), T0);
    assert_eq!(ids(&poll(&store, T0 + 5 * SEC)), vec![0, 1, 9]);
}

#[test]
fn given_torn_unflushed_record_when_reopened_should_keep_the_others_of_its_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path(), &small(), T0);
        for id in 0..4u64 {
            store
                .schedule(T0 + 2 * SEC + id as i64, payload(id), T0)
                .expect("schedule");
        }
    }
    overwrite(dir.path(), REC + 32, &[0u8; 32]); // half of record 1 never reached the disk
    {
        let store = open(dir.path(), &small(), T0);
        assert_eq!(store.pending(), 3);
        let got = poll(&store, T0 + 3 * SEC);
        assert_eq!(ids(&got), vec![0, 2, 3]);
        assert!(got.iter().all(|e| e.payload == payload(e.payload.cookie)));
    }
    // And again after a second restart (the recovery copies are found, not duplicated).
    let store = open(dir.path(), &small(), T0);
    assert_eq!(ids(&poll(&store, T0 + 3 * SEC)), vec![0, 2, 3]);
}

#[test]
fn given_torn_tail_when_reopened_should_append_after_the_last_intact_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path(), &small(), T0);
        for id in 0..3u64 {
            store
                .schedule(T0 + 2 * SEC, payload(id), T0)
                .expect("schedule");
        }
    }
    overwrite(dir.path(), 2 * REC + 5, &[0xFF; 3]); // the last record is torn
    let store = open(dir.path(), &small(), T0);
    store
        .schedule(T0 + 2 * SEC, payload(7), T0)
        .expect("schedule");
    assert_eq!(ids(&poll(&store, T0 + 2 * SEC)), vec![0, 1, 7]);
}

#[test]
fn given_delay_beyond_max_when_scheduled_should_be_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), &TimerConfig::default(), T0);
    let err = store
        .schedule(T0 + 365 * DAY + 1, payload(1), T0)
        .expect_err("too far");
    assert!(matches!(err, StoreError::InvalidMessage(_)), "{err}");
    assert_eq!(store.pending(), 0);
    store
        .schedule(T0 + 365 * DAY, payload(2), T0)
        .expect("exactly the maximum is fine");
    assert_eq!(store.pending(), 1);
}

#[test]
fn given_invalid_or_changed_config_when_opened_should_fail_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = TimerConfig {
        log_segment_size: 1000,
        ..small()
    };
    let err = TimerStore::open(dir.path(), bad, T0).expect_err("invalid");
    assert!(matches!(
        err,
        StoreError::Config {
            key: "timer.log_segment_size",
            ..
        }
    ));
    drop(open(dir.path(), &small(), T0));
    let other = TimerConfig {
        wheel_slots: 128,
        ..small()
    };
    let err = TimerStore::open(dir.path(), other, T0).expect_err("changed");
    assert!(matches!(
        err,
        StoreError::Config {
            key: "timer.wheel_slots",
            ..
        }
    ));
}

#[test]
fn given_processed_segments_when_flushed_should_delete_them_but_keep_live_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = TimerConfig {
        log_segment_size: 4096, // 64 records per segment
        ..small()
    };
    let store = open(dir.path(), &cfg, T0);
    store
        .schedule(T0 + 20 * SEC, payload(999), T0)
        .expect("long");
    for id in 0..200u64 {
        store
            .schedule(T0 + SEC + id as i64, payload(id), T0)
            .expect("short");
    }
    assert_eq!(segments(dir.path()).len(), 4);
    let short = poll(&store, T0 + 2 * SEC);
    assert_eq!(short.len(), 200);
    commit_all(&store, &short);
    store.flush().expect("flush");
    assert_eq!(
        segments(dir.path()).len(),
        4,
        "segment 0 still holds the long timer"
    );

    let long = poll(&store, T0 + 20 * SEC);
    assert_eq!(ids(&long), vec![999]);
    commit_all(&store, &long);
    store.flush().expect("flush");
    assert_eq!(
        segments(dir.path()),
        vec![format!("{:020}", 3 * 4096)],
        "only the active segment remains"
    );

    // The store keeps working across a restart after retention.
    store
        .schedule(T0 + 25 * SEC, payload(5), T0 + 20 * SEC)
        .expect("schedule");
    drop(store);
    let store = open(dir.path(), &cfg, T0 + 21 * SEC);
    assert_eq!(ids(&poll(&store, T0 + 25 * SEC)), vec![5]);
}

#[test]
fn given_rolled_timers_when_rolls_are_processed_should_delete_their_original_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = TimerConfig {
        slot_ms: 1000,
        wheel_slots: 8, // 4-period horizon: a 100 s timer rolls about 25 times
        log_segment_size: 4096,
        max_delay_ms: DAY,
    };
    let store = open(dir.path(), &cfg, T0);
    for id in 0..64u64 {
        store
            .schedule(T0 + 100 * SEC, payload(id), T0)
            .expect("schedule");
    }
    let mut now = T0;
    while now < T0 + 99 * SEC {
        now += 500;
        assert!(poll(&store, now).is_empty());
    }
    store.flush().expect("flush");
    assert!(
        !segments(dir.path()).contains(&format!("{:020}", 0)),
        "the originals' segment is gone once every timer in it was rolled"
    );
    let got = poll(&store, T0 + 100 * SEC);
    assert_eq!(ids(&got), (0..64).collect::<Vec<_>>());
}

#[test]
fn given_rolling_timers_when_restarted_repeatedly_without_flush_should_deliver_each_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = TimerConfig {
        slot_ms: 1000,
        wheel_slots: 8,
        log_segment_size: 4096,
        max_delay_ms: DAY,
    };
    let due = |id: u64| T0 + 60 * SEC + id as i64 * 317;
    {
        let store = open(dir.path(), &cfg, T0);
        for id in 0..20u64 {
            store.schedule(due(id), payload(id), T0).expect("schedule");
        }
    }
    let mut delivered: HashMap<u64, usize> = HashMap::new();
    let mut now = T0;
    while now < T0 + 70 * SEC {
        now += 1700;
        // Every step is a crash: nothing is flushed by the test (open flushes, and so does
        // poll_due when it must).
        let store = open(dir.path(), &cfg, now);
        let got = poll(&store, now);
        for e in &got {
            assert_eq!(e.deliver_at_ms, due(e.payload.cookie));
            *delivered.entry(e.payload.cookie).or_default() += 1;
        }
        commit_all(&store, &got);
        // A second crash right after the recovery flush must not roll anything twice.
        drop(store);
        drop(open(dir.path(), &cfg, now));
    }
    assert_eq!(delivered.len(), 20, "every timer delivered");
    assert!(delivered.values().all(|n| *n == 1), "{delivered:?}");
}

#[test]
fn given_power_loss_after_flush_when_reopened_should_keep_every_flushed_timer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wheel = dir.path().join("wheel");
    let seg0 = segment(dir.path(), 0);
    let read = |p: &Path| std::fs::read(p).expect("read");
    let (wheel_at_flush, log_at_flush) = {
        let store = open(dir.path(), &small(), T0);
        for id in 0..10u64 {
            store
                .schedule(T0 + SEC + id as i64 * 100, payload(id), T0)
                .expect("schedule");
        }
        store.flush().expect("flush");
        let snapshot = (read(&wheel), read(&seg0));
        let first = poll(&store, T0 + SEC);
        assert_eq!(ids(&first), vec![0]);
        store.commit(&first[0]).expect("commit");
        for id in 10..20u64 {
            store
                .schedule(T0 + SEC + id as i64 * 100, payload(id), T0)
                .expect("schedule");
        }
        snapshot
    };
    let (wheel_final, log_final) = (read(&wheel), read(&seg0));
    let write = |p: &Path, b: &[u8]| std::fs::write(p, b).expect("write");

    // The wheel file's page (with the commit) reached the disk; the new log pages did not.
    write(&wheel, &wheel_final);
    write(&seg0, &log_at_flush);
    let store = open(dir.path(), &small(), T0 + SEC);
    assert_eq!(
        ids(&poll(&store, T0 + 5 * SEC)),
        (1..10).collect::<Vec<_>>()
    );
    drop(store);

    // The log pages reached the disk; the wheel file's page did not (commit lost: redelivery).
    write(&wheel, &wheel_at_flush);
    write(&seg0, &log_final);
    let store = open(dir.path(), &small(), T0 + SEC);
    assert_eq!(
        ids(&poll(&store, T0 + 5 * SEC)),
        (0..20).collect::<Vec<_>>()
    );
}

#[test]
fn given_flush_cut_after_slot_writes_when_reopened_should_not_duplicate_tail_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wheel = dir.path().join("wheel");
    {
        let store = open(dir.path(), &small(), T0);
        for id in 0..5u64 {
            store
                .schedule(T0 + SEC + id as i64, payload(id), T0)
                .expect("schedule");
        }
        store.flush().expect("flush");
        let old = std::fs::read(&wheel).expect("read wheel");
        for id in 5..10u64 {
            store
                .schedule(T0 + SEC + id as i64, payload(id), T0)
                .expect("schedule");
        }
        store.flush().expect("flush");
        drop(store);
        // Power loss inside the second flush: log and stable slots synced, checkpoint not.
        let mut now = std::fs::read(&wheel).expect("read wheel");
        now[..512].copy_from_slice(&old[..512]);
        std::fs::write(&wheel, &now).expect("write wheel");
    }
    let store = open(dir.path(), &small(), T0);
    assert_eq!(store.pending(), 10);
    assert_eq!(
        ids(&poll(&store, T0 + 2 * SEC)),
        (0..10).collect::<Vec<_>>()
    );
}

#[test]
fn given_stalled_commits_when_grace_passes_should_stop_advancing_until_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = TimerConfig {
        wheel_slots: 8, // grace of 4 periods
        ..small()
    };
    let store = open(dir.path(), &cfg, T0);
    store.schedule(T0 + SEC, payload(1), T0).expect("schedule");
    store
        .schedule(T0 + 10 * SEC, payload(2), T0)
        .expect("schedule");
    let first = poll(&store, T0 + SEC);
    assert_eq!(ids(&first), vec![1]);
    assert!(
        poll(&store, T0 + 10 * SEC).is_empty(),
        "entry 1 is uncommitted for longer than the grace"
    );
    store.commit(&first[0]).expect("commit");
    assert_eq!(ids(&poll(&store, T0 + 10 * SEC)), vec![2]);
}

#[test]
fn given_100k_timers_when_polled_should_deliver_all_in_order_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = TimerConfig {
        slot_ms: 1000,
        wheel_slots: 4096,
        log_segment_size: 1 << 20,
        max_delay_ms: DAY,
    };
    let store = open(dir.path(), &cfg, T0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(100_000);
    let mut due = Vec::with_capacity(100_000);
    for id in 0..100_000u64 {
        let at = T0 + rng.random_range(0..600 * SEC);
        store.schedule(at, payload(id), T0).expect("schedule");
        due.push(at);
    }
    assert_eq!(store.pending(), 100_000);
    let mut seen = vec![false; 100_000];
    let mut last = (i64::MIN, i64::MIN);
    let mut count = 0;
    let mut now = T0;
    while count < 100_000 {
        now += rng.random_range(1..5 * SEC);
        loop {
            let got = store
                .poll_due(now, rng.random_range(1..5000))
                .expect("poll");
            let Some(tail) = got.last() else {
                break;
            };
            for e in &got {
                let id = e.payload.cookie as usize;
                assert!(!seen[id], "timer {id} delivered twice");
                seen[id] = true;
                assert_eq!(e.deliver_at_ms, due[id]);
                assert!(e.deliver_at_ms <= now);
                let key = (e.deliver_at_ms, e.id());
                assert!(key > last, "out of order");
                last = key;
            }
            count += got.len();
            store.commit(tail).expect("commit");
        }
    }
    assert_eq!(store.pending(), 0);
    store.flush().expect("flush");
    assert_eq!(
        segments(dir.path()).len(),
        1,
        "all processed segments deleted"
    );
}

#[test]
fn given_concurrent_schedulers_and_flushes_when_polled_should_deliver_each_timer_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = std::sync::Arc::new(open(dir.path(), &small(), T0));
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let schedulers: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            let finished = finished.clone();
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(t);
                for i in 0..2_500u64 {
                    let at = T0 + rng.random_range(0..10 * SEC);
                    store
                        .schedule(at, payload(t * 10_000 + i), T0)
                        .expect("schedule");
                }
                finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
        })
        .collect();
    let flusher = {
        let store = store.clone();
        std::thread::spawn(move || {
            for _ in 0..20 {
                store.flush().expect("flush");
            }
        })
    };
    let mut seen = HashSet::new();
    let mut now = T0;
    let mut last = (i64::MIN, i64::MIN);
    let last_deadline = T0 + 10 * SEC;
    while seen.len() < 10_000 {
        // Past every deadline, the clock stops: whatever is missing must still be scheduling.
        let all_scheduled = finished.load(std::sync::atomic::Ordering::SeqCst) == 4;
        if now <= last_deadline {
            now += 37;
        } else if !all_scheduled {
            std::thread::yield_now();
        }
        let got = poll(&store, now);
        for e in &got {
            assert!(
                seen.insert(e.payload.cookie),
                "{} delivered twice",
                e.payload.cookie
            );
            assert!((e.deliver_at_ms, e.id()) > last, "out of order");
            last = (e.deliver_at_ms, e.id());
        }
        commit_all(&store, &got);
        assert!(
            !(all_scheduled && now > last_deadline && got.is_empty() && seen.len() < 10_000),
            "timers missing: {} delivered after all were scheduled and due",
            seen.len()
        );
    }
    for handle in schedulers {
        handle.join().expect("scheduler");
    }
    flusher.join().expect("flusher");
    assert_eq!(store.pending(), 0);
}

// ---- model-based property test ------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    /// Schedule a timer `delay` ms after now (negative: in the past).
    Schedule(i64),
    /// Advance the clock and poll at most `max` entries.
    Advance(i64, usize),
    /// Commit the n-th delivered, uncommitted entry (and so everything before it).
    Commit(usize),
    Flush,
    /// Drop the store (a crash: nothing is flushed) and reopen it.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (-500i64..8_000).prop_map(Op::Schedule),
        4 => (0i64..1_500, 1usize..20).prop_map(|(ms, max)| Op::Advance(ms, max)),
        2 => (0usize..30).prop_map(Op::Commit),
        1 => Just(Op::Flush),
        1 => Just(Op::Restart),
    ]
}

/// Checks a poll result against the model.
fn check_model(
    got: &[TimerEntry],
    now: i64,
    delivered: &mut HashSet<u64>,
    last_key: &mut (i64, i64),
    committed: &HashSet<u64>,
    requested: &BTreeMap<u64, i64>,
) {
    for e in got {
        let id = e.payload.cookie;
        assert!(requested.contains_key(&id), "unknown timer {id}");
        assert!(
            !committed.contains(&id),
            "timer {id} delivered after commit"
        );
        assert!(
            delivered.insert(id),
            "timer {id} delivered twice in one life"
        );
        assert!(e.deliver_at_ms <= now, "timer {id} early");
        assert!(
            e.deliver_at_ms >= requested[&id],
            "timer {id} before its time"
        );
        assert_eq!(e.payload, payload(id));
        let key = (e.deliver_at_ms, e.id());
        assert!(key > *last_key, "timer {id} out of order");
        *last_key = key;
    }
}

/// 48 cases by default; `PROPTEST_CASES` raises it for a long soak.
fn model_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: model_cases(), ..ProptestConfig::default() })]

    #[test]
    fn given_random_ops_with_crashes_should_deliver_every_timer_in_order_and_never_after_commit(
        ops in prop::collection::vec(op(), 1..60)
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = TimerConfig {
            slot_ms: 100,
            wheel_slots: 16, // 800 ms horizon: most timers roll
            log_segment_size: 4096,
            max_delay_ms: DAY,
        };
        let mut now = T0;
        let mut store = open(dir.path(), &cfg, now);
        let mut requested: BTreeMap<u64, i64> = BTreeMap::new();
        let mut committed: HashSet<u64> = HashSet::new();
        let mut in_flight: Vec<TimerEntry> = Vec::new();
        let mut delivered_this_life: HashSet<u64> = HashSet::new();
        let mut last_key = (i64::MIN, i64::MIN);
        let mut next_id = 0u64;

        for op in ops {
            match op {
                Op::Schedule(delay) => {
                    store.schedule(now + delay, payload(next_id), now).expect("schedule");
                    requested.insert(next_id, now + delay);
                    next_id += 1;
                }
                Op::Advance(ms, max) => {
                    now += ms;
                    let got = store.poll_due(now, max).expect("poll");
                    check_model(&got, now, &mut delivered_this_life, &mut last_key, &committed,
                        &requested);
                    in_flight.extend(got);
                }
                Op::Commit(n) => {
                    if !in_flight.is_empty() {
                        let n = n % in_flight.len();
                        store.commit(&in_flight[n]).expect("commit");
                        for e in in_flight.drain(..=n) {
                            committed.insert(e.payload.cookie);
                        }
                    }
                }
                Op::Flush => store.flush().expect("flush"),
                Op::Restart => {
                    drop(store);
                    store = open(dir.path(), &cfg, now);
                    in_flight.clear();
                    delivered_this_life.clear();
                    last_key = (i64::MIN, i64::MIN);
                }
            }
        }
        // Drain: everything not committed must come out, once, in order.
        for e in &in_flight {
            store.commit(e).expect("commit");
            committed.insert(e.payload.cookie);
        }
        let end = requested.values().copied().max().unwrap_or(now).max(now) + 1;
        let mut steps = 0;
        while store.pending() > 0 {
            now = (now + 300).min(end);
            let got = store.poll_due(now, usize::MAX).expect("poll");
            check_model(&got, now, &mut delivered_this_life, &mut last_key, &committed,
                &requested);
            for e in &got {
                store.commit(e).expect("commit");
                committed.insert(e.payload.cookie);
            }
            steps += 1;
            prop_assert!(steps < 100_000, "drain does not finish");
        }
        let all: HashSet<u64> = requested.keys().copied().collect();
        prop_assert_eq!(committed, all, "every timer delivered and committed");
    }
}

// ---- power-loss model ----------------------------------------------------------------------

type Files = BTreeMap<PathBuf, Vec<u8>>;

fn read_files(dir: &Path) -> Files {
    let mut out = BTreeMap::new();
    let wheel = dir.join("wheel");
    out.insert(wheel.clone(), std::fs::read(&wheel).expect("read wheel"));
    for e in std::fs::read_dir(dir.join("log")).expect("ls log") {
        let path = e.expect("entry").path();
        out.insert(path.clone(), std::fs::read(&path).expect("read segment"));
    }
    out
}

/// Simulates a power loss: every 4 KiB page written since the last flush independently keeps
/// its new content or reverts to what the flush made durable (zeros for new files).
fn lose_power(dir: &Path, durable: &Files, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    lose_pages(dir, durable, |_, _| rng.random_bool(0.5));
}

/// Reverts the pages for which `lost(path, page)` holds to their durable content.
fn lose_pages(dir: &Path, durable: &Files, mut lost: impl FnMut(&Path, usize) -> bool) {
    for (path, current) in read_files(dir) {
        let old = durable.get(&path);
        let mut mixed = current;
        for (i, page) in mixed.chunks_mut(4096).enumerate() {
            if lost(&path, i) {
                match old {
                    Some(o) => page.copy_from_slice(&o[i * 4096..i * 4096 + page.len()]),
                    None => page.fill(0),
                }
            }
        }
        std::fs::write(&path, &mixed).expect("write");
    }
}

/// Opens the store and keeps `snapshot` equal to the files as of the last completed flush.
fn open_tracked(
    dir: &Path,
    cfg: &TimerConfig,
    now: i64,
    snapshot: &std::sync::Arc<parking_lot::Mutex<Files>>,
    flushes: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> TimerStore {
    let store = open(dir, cfg, now); // open ends with a flush
    *snapshot.lock() = read_files(dir);
    flushes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let (snap, count, path) = (snapshot.clone(), flushes.clone(), dir.to_path_buf());
    *store.on_flushed.lock() = Some(Box::new(move || {
        *snap.lock() = read_files(&path);
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));
    store
}

#[derive(Clone, Debug)]
enum PowerOp {
    Op(Op),
    /// Drop the store and lose every page written since the last flush with probability 1/2.
    PowerLoss(u64),
}

fn power_op() -> impl Strategy<Value = PowerOp> {
    prop_oneof![
        10 => op().prop_map(PowerOp::Op),
        1 => any::<u64>().prop_map(PowerOp::PowerLoss),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: model_cases(), ..ProptestConfig::default() })]

    #[test]
    fn given_random_ops_with_power_losses_should_keep_every_flushed_timer_and_commit(
        ops in prop::collection::vec(power_op(), 1..60)
    ) {
        use std::sync::atomic::Ordering::SeqCst;
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = TimerConfig {
            slot_ms: 100,
            wheel_slots: 16,
            log_segment_size: 4096,
            max_delay_ms: DAY,
        };
        let snapshot = std::sync::Arc::new(parking_lot::Mutex::new(Files::new()));
        let flushes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut now = T0;
        let mut store = open_tracked(dir.path(), &cfg, now, &snapshot, &flushes);
        let mut seen_flushes = flushes.load(SeqCst);

        let mut requested: BTreeMap<u64, i64> = BTreeMap::new();
        // Timers scheduled since the last flush (a power loss may drop them) ...
        let mut unflushed: HashSet<u64> = HashSet::new();
        // ... and those a power loss may actually have dropped.
        let mut optional: HashSet<u64> = HashSet::new();
        let mut committed: HashSet<u64> = HashSet::new();
        let mut durable_committed: HashSet<u64> = HashSet::new();
        let mut ever_committed: HashSet<u64> = HashSet::new();
        let mut in_flight: Vec<TimerEntry> = Vec::new();
        let mut delivered_this_life: HashSet<u64> = HashSet::new();
        let mut last_key = (i64::MIN, i64::MIN);
        let mut next_id = 0u64;

        for op in ops {
            match op {
                PowerOp::Op(Op::Schedule(delay)) => {
                    store.schedule(now + delay, payload(next_id), now).expect("schedule");
                    requested.insert(next_id, now + delay);
                    unflushed.insert(next_id);
                    next_id += 1;
                }
                PowerOp::Op(Op::Advance(ms, max)) => {
                    now += ms;
                    let got = store.poll_due(now, max).expect("poll");
                    check_model(&got, now, &mut delivered_this_life, &mut last_key, &committed,
                        &requested);
                    in_flight.extend(got);
                }
                PowerOp::Op(Op::Commit(n)) => {
                    if !in_flight.is_empty() {
                        let n = n % in_flight.len();
                        store.commit(&in_flight[n]).expect("commit");
                        for e in in_flight.drain(..=n) {
                            committed.insert(e.payload.cookie);
                            ever_committed.insert(e.payload.cookie);
                        }
                    }
                }
                PowerOp::Op(Op::Flush) => store.flush().expect("flush"),
                PowerOp::Op(Op::Restart) => {
                    drop(store);
                    store = open_tracked(dir.path(), &cfg, now, &snapshot, &flushes);
                    in_flight.clear();
                    delivered_this_life.clear();
                    last_key = (i64::MIN, i64::MIN);
                }
                PowerOp::PowerLoss(seed) => {
                    drop(store);
                    lose_power(dir.path(), &snapshot.lock(), seed);
                    // Commits since the last flush may be lost: those timers may come back.
                    committed = durable_committed.clone();
                    optional.extend(unflushed.drain());
                    store = open_tracked(dir.path(), &cfg, now, &snapshot, &flushes);
                    in_flight.clear();
                    delivered_this_life.clear();
                    last_key = (i64::MIN, i64::MIN);
                }
            }
            if flushes.load(SeqCst) != seen_flushes {
                // A flush completed during this op (explicit, automatic or at open): everything
                // scheduled and committed so far is durable.
                seen_flushes = flushes.load(SeqCst);
                durable_committed = committed.clone();
                unflushed.clear();
            }
        }
        for e in &in_flight {
            store.commit(e).expect("commit");
            ever_committed.insert(e.payload.cookie);
            committed.insert(e.payload.cookie);
        }
        let end = requested.values().copied().max().unwrap_or(now).max(now) + 1;
        let mut steps = 0;
        while store.pending() > 0 {
            now = (now + 300).min(end);
            let got = store.poll_due(now, usize::MAX).expect("poll");
            check_model(&got, now, &mut delivered_this_life, &mut last_key, &committed,
                &requested);
            for e in &got {
                store.commit(e).expect("commit");
                committed.insert(e.payload.cookie);
                ever_committed.insert(e.payload.cookie);
            }
            steps += 1;
            prop_assert!(steps < 100_000, "drain does not finish");
        }
        for id in requested.keys() {
            prop_assert!(
                optional.contains(id) || ever_committed.contains(id),
                "flushed timer {} was lost", id
            );
        }
    }
}

#[test]
fn given_edge_timer_filed_below_roll_claim_when_power_is_lost_twice_should_still_deliver_it() {
    // t90-style regression (found by the power-loss model): after a restart `L` resumes below
    // the checkpoint's "edge records up to here are rolled" claim, so a far timer is filed
    // under a period the claim covers. Recovery must lower the claim for it even when the
    // checkpoint page that lowered it was lost, or a later restart skips its period.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = TimerConfig {
        slot_ms: 100,
        wheel_slots: 16, // horizon and grace of 8 periods
        log_segment_size: 4096,
        max_delay_ms: DAY,
    };
    let wheel = dir.path().join("wheel");
    {
        let store = open(dir.path(), &cfg, T0);
        store.schedule(T0, payload(0), T0).expect("schedule");
        store.schedule(T0 + 700, payload(1), T0).expect("schedule");
        // Loading period 7 first flushes by itself: the claim becomes period 6.
        assert_eq!(ids(&poll(&store, T0 + 700)), vec![0, 1]);
    } // crash, nothing committed: the next life resumes far below the claim
    let durable = {
        let store = open(dir.path(), &cfg, T0 + 700);
        let durable = read_files(dir.path());
        store
            .schedule(T0 + 5000, payload(2), T0 + 700)
            .expect("far timer, filed at the edge under period 6");
        durable
    };
    // Power loss: the record reached the disk, the checkpoint page did not.
    lose_pages(dir.path(), &durable, |path, _| path == wheel.as_path());
    let durable = {
        let store = open(dir.path(), &cfg, T0 + 700);
        let durable = read_files(dir.path());
        // Reloads period 6 and rolls the far timer on; commits move the key past period 6.
        let got = poll(&store, T0 + 700);
        assert_eq!(ids(&got), vec![0, 1]);
        commit_all(&store, &got);
        durable
    };
    // Power loss: the roll copy is lost, the checkpoint page with the commits is not.
    lose_pages(dir.path(), &durable, |path, _| path != wheel.as_path());
    let store = open(dir.path(), &cfg, T0 + 700);
    let mut got = Vec::new();
    for now in (T0 + 700..=T0 + 5000).step_by(100) {
        got.extend(poll(&store, now));
    }
    assert_eq!(
        ids(&got),
        vec![2],
        "the far timer survives both power losses"
    );
}

#[test]
fn given_committed_timer_with_duplicate_roll_copy_when_delivered_copy_is_lost_should_not_redeliver()
{
    // Regression (found by the power-loss model): delivery keys used to contain the record's
    // position, so a second copy of a timer (a roll redone after a restart) had a larger key
    // than the committed one, and came back once the committed copy was gone. Keys now use the
    // timer's id, which every copy shares.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = TimerConfig {
        slot_ms: 100,
        wheel_slots: 16, // horizon and grace of 8 periods
        log_segment_size: 4096,
        max_delay_ms: DAY,
    };
    let due = T0 + 1250;
    {
        let store = open(dir.path(), &cfg, T0);
        store
            .schedule(due, payload(1), T0)
            .expect("filed at the edge, period 7");
        // Loading period 7 (after an automatic flush) rolls it: copy 1 at position 64.
        assert!(poll(&store, T0 + 800).is_empty());
    } // crash: the roll is not covered by a flush
    {
        let store = open(dir.path(), &cfg, T0 + 800);
        // Resuming below period 7 rolls it again: copy 2 at position 128, same slot.
        assert!(poll(&store, T0 + 800).is_empty());
        let got = poll(&store, due);
        assert_eq!(ids(&got), vec![1], "one delivery for two copies");
        assert_eq!(got[0].id(), 0);
        commit_all(&store, &got);
    }
    overwrite(dir.path(), REC + 10, &[0xEE; 4]); // the delivered copy rots
    let store = open(dir.path(), &cfg, due + 50);
    assert!(
        poll(&store, due + 50).is_empty(),
        "committed timer came back"
    );
    assert_eq!(store.pending(), 0);
}
