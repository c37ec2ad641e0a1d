//! Behaviour of `MessageStore` through its public API.

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use comet_store::{Arrival, DiskStats, DiskUsage, FlushPolicy, MessageStore, StoreError, tag_hash};
use common::{msg, small_config};

const WAIT: Duration = Duration::from_secs(10);

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    // Skip `.<name>.tmp` files: the allocator may be creating the next segment right now.
    let mut v: Vec<_> = fs::read_dir(dir.join("commitlog"))
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn given_messages_when_appended_should_read_back_by_offset_and_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(small_config(dir.path())).expect("open");
    let mut results = Vec::new();
    for n in 0..300u64 {
        let m = msg("orders", (n % 3) as i32, n, 500);
        results.push((m.clone(), store.append(&m).expect("append")));
    }
    assert!(store.stats().segments.len() > 1, "small segments must roll");
    for (m, r) in &results {
        let got = store.read(r.physical_offset).expect("read");
        assert_eq!(&got.message, m);
        assert_eq!(got.queue_offset, r.queue_offset);
    }
    let end = results
        .last()
        .map(|(_, r)| r.physical_offset + i64::from(r.size));
    assert!(store.wait_dispatched(end.expect("end"), WAIT));
    for q in 0..3 {
        assert_eq!(store.max_offset("orders", q), 100);
        let got = store
            .get_messages("orders", q, 0, 1000, |_| true)
            .expect("get");
        assert_eq!(got.messages.len(), 100);
        for (i, s) in got.messages.iter().enumerate() {
            assert_eq!(s.queue_offset, i as i64);
            assert_eq!(s.message.queue_id, q);
        }
    }
    assert_eq!(store.max_offset("unknown", 0), 0);
}

#[test]
fn given_tag_filter_when_getting_messages_should_only_return_matching_tags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(small_config(dir.path())).expect("open");
    let mut last = 0;
    for n in 0..50u64 {
        let r = store.append(&msg("t", 0, n, 10)).expect("append");
        last = r.physical_offset + i64::from(r.size);
    }
    assert!(store.wait_dispatched(last, WAIT));
    let even = tag_hash(Some("even"));
    let got = store
        .get_messages("t", 0, 0, 10, |e| e.tag_hash == even)
        .expect("get");
    assert_eq!(got.messages.len(), 10);
    assert!(
        got.messages
            .iter()
            .all(|m| m.message.properties.tag.as_deref() == Some("even"))
    );
    assert_eq!(
        got.next_offset, 19,
        "resumes right after the tenth even message"
    );
    let rest = store
        .get_messages("t", 0, got.next_offset, 100, |e| e.tag_hash == even)
        .expect("get");
    assert_eq!(rest.messages.len(), 15);
    assert_eq!(rest.next_offset, 50);
}

#[test]
fn given_batch_when_appended_should_be_contiguous_and_recover_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batch: Vec<_> = (0..20).map(|n| msg("b", 1, n, 100)).collect();
    let results = {
        let store = MessageStore::open(small_config(dir.path())).expect("open");
        let r = store.append_batch(&batch).expect("batch");
        for w in r.windows(2) {
            assert_eq!(
                w[0].physical_offset + i64::from(w[0].size),
                w[1].physical_offset
            );
            assert_eq!(w[0].queue_offset + 1, w[1].queue_offset);
        }
        r
    };
    // Tear the last record of the batch: recovery must drop the whole batch.
    let last = results.last().expect("last");
    let seg = segment_files(dir.path())
        .into_iter()
        .find(|p| {
            let start: i64 = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())
                .expect("name");
            start <= last.physical_offset && last.physical_offset < start + 64 * 1024
        })
        .expect("segment");
    let start: i64 = seg
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .expect("name");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open seg");
    f.seek(SeekFrom::Start((last.physical_offset - start + 50) as u64))
        .expect("seek");
    f.write_all(&[0xFF; 8]).expect("garble");
    drop(f);
    fs::remove_file(dir.path().join("checkpoint")).expect("rm checkpoint");
    let store = MessageStore::open(small_config(dir.path())).expect("reopen");
    let rep = store.recovery_report();
    assert!(rep.truncated);
    assert_eq!(
        rep.valid_end, results[0].physical_offset,
        "whole batch dropped"
    );
    assert_eq!(store.max_offset("b", 1), 0);
    assert!(store.read(results[0].physical_offset).is_err());
    let again = store
        .append(&msg("b", 1, 99, 10))
        .expect("append after cut");
    assert_eq!(again.queue_offset, 0);
    assert_eq!(again.physical_offset, results[0].physical_offset);
}

#[test]
fn given_restart_when_reopened_should_keep_messages_offsets_and_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut expected = Vec::new();
    {
        let store = MessageStore::open(small_config(dir.path())).expect("open");
        for n in 0..200u64 {
            let m = msg("r", (n % 2) as i32, n, 300);
            expected.push((m.clone(), store.append(&m).expect("append")));
        }
        store.close().expect("close");
    }
    let store = MessageStore::open(small_config(dir.path())).expect("reopen");
    assert!(!store.recovery_report().truncated);
    assert!(store.recovery_report().had_checkpoint);
    for (m, r) in &expected {
        assert_eq!(&store.read(r.physical_offset).expect("read").message, m);
    }
    assert_eq!(store.max_offset("r", 0), 100);
    let r = store.append(&msg("r", 0, 1000, 10)).expect("append");
    assert_eq!(r.queue_offset, 100, "queue offsets continue after restart");
}

#[test]
fn given_lost_checkpoint_when_reopened_should_rebuild_queues_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = MessageStore::open(small_config(dir.path())).expect("open");
        for n in 0..120u64 {
            store.append(&msg("x", 0, n, 200)).expect("append");
        }
    }
    fs::remove_file(dir.path().join("checkpoint")).expect("rm checkpoint");
    fs::remove_dir_all(dir.path().join("consumequeue")).expect("rm queues");
    let store = MessageStore::open(small_config(dir.path())).expect("reopen");
    let rep = store.recovery_report();
    assert!(!rep.had_checkpoint);
    assert_eq!(rep.records_verified, 120);
    assert_eq!(rep.redispatched, 120);
    assert_eq!(store.max_offset("x", 0), 120);
    let got = store.get_messages("x", 0, 0, 200, |_| true).expect("get");
    assert_eq!(got.messages.len(), 120);
}

#[test]
fn given_bit_flip_in_stored_record_when_read_should_refuse_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(small_config(dir.path())).expect("open");
    let r = store.append(&msg("f", 0, 1, 400)).expect("append");
    let r2 = store.append(&msg("f", 0, 2, 400)).expect("append");
    store.flush().expect("flush");
    // Flip a body bit behind the store's back, as bit rot would.
    let seg = &segment_files(dir.path())[0];
    let mut bytes = fs::read(seg).expect("read seg");
    bytes[(r.physical_offset + 300) as usize] ^= 0x08;
    let mut f = fs::OpenOptions::new().write(true).open(seg).expect("open");
    f.seek(SeekFrom::Start((r.physical_offset + 300) as u64))
        .expect("seek");
    f.write_all(&bytes[(r.physical_offset + 300) as usize..(r.physical_offset + 301) as usize])
        .expect("write");
    drop(f);
    match store.read(r.physical_offset) {
        Err(StoreError::Corrupt { offset, reason }) => {
            assert_eq!(offset, r.physical_offset);
            assert!(reason.contains("CRC"), "{reason}");
        }
        other => panic!("corrupt record served: {other:?}"),
    }
    assert!(
        store.read(r2.physical_offset).is_ok(),
        "neighbours stay readable"
    );
    assert!(
        store.read(r.physical_offset + 1).is_err(),
        "mid-record offsets are refused"
    );
}

#[test]
fn given_truncated_segment_file_when_opened_should_fail_with_layout_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = MessageStore::open(small_config(dir.path())).expect("open");
        store.append(&msg("t", 0, 1, 10)).expect("append");
    }
    let seg = &segment_files(dir.path())[0];
    fs::OpenOptions::new()
        .write(true)
        .open(seg)
        .expect("open")
        .set_len(1000)
        .expect("truncate");
    let err = MessageStore::open(small_config(dir.path())).expect_err("must refuse");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Layout { .. }), "{text}");
    assert!(text.contains("expected exactly"), "{text}");
}

#[test]
fn given_torn_tail_of_zeros_and_garbage_when_reopened_should_cut_and_accept_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kept, torn) = {
        let store = MessageStore::open(small_config(dir.path())).expect("open");
        let a = store.append(&msg("t", 0, 1, 1000)).expect("append");
        let b = store.append(&msg("t", 0, 2, 1000)).expect("append");
        (a, b)
    };
    let seg = &segment_files(dir.path())[0];
    let mut f = fs::OpenOptions::new().write(true).open(seg).expect("open");
    // Zero the second half of the second record, as a lost page would.
    f.seek(SeekFrom::Start((torn.physical_offset + 500) as u64))
        .expect("seek");
    f.write_all(&[0u8; 600]).expect("zero");
    // And leave garbage beyond it.
    f.seek(SeekFrom::Start((torn.physical_offset + 5000) as u64))
        .expect("seek");
    f.write_all(&[0xAB; 100]).expect("garbage");
    drop(f);
    // The crash came before any checkpoint covered these records.
    fs::remove_file(dir.path().join("checkpoint")).expect("rm checkpoint");
    let store = MessageStore::open(small_config(dir.path())).expect("reopen");
    assert_eq!(store.recovery_report().valid_end, torn.physical_offset);
    assert!(store.read(kept.physical_offset).is_ok());
    assert!(matches!(
        store.read(torn.physical_offset),
        Err(StoreError::OffsetOutOfRange { .. })
    ));
    assert_eq!(store.max_offset("t", 0), 1);
    let c = store.append(&msg("t", 0, 3, 10)).expect("append");
    assert_eq!(
        (c.physical_offset, c.queue_offset),
        (torn.physical_offset, 1)
    );
    drop(store);
    let store = MessageStore::open(small_config(dir.path())).expect("reopen again");
    assert!(
        !store.recovery_report().truncated,
        "garbage was zeroed by the first recovery"
    );
    assert_eq!(
        store.read(c.physical_offset).expect("read").message,
        msg("t", 0, 3, 10)
    );
}

#[test]
fn given_sync_policy_when_many_threads_append_should_all_be_durable_and_ordered() {
    const THREADS: i32 = 16;
    const PER_THREAD: u64 = 40;
    // One flusher (no pipelining), the default, and the most allowed.
    for flushers in [1, 2, comet_store::MAX_SYNC_FLUSHERS] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = small_config(dir.path());
        cfg.segment_size = 1 << 20;
        cfg.sync_flushers = flushers;
        cfg.flush = FlushPolicy::Sync {
            timeout: Duration::from_secs(5),
        };
        let store = Arc::new(MessageStore::open(cfg).expect("open"));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    (0..PER_THREAD)
                        .map(|n| {
                            let r = store.append(&msg("s", t, n, 64)).expect("append");
                            assert!(
                                store.stats().flushed_offset
                                    >= r.physical_offset + i64::from(r.size),
                                "SYNC append returned before a flush covered it"
                            );
                            r
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (t, h) in threads.into_iter().enumerate() {
            let rs = h.join().expect("thread");
            let offsets: Vec<i64> = rs.iter().map(|r| r.queue_offset).collect();
            assert_eq!(
                offsets,
                (0..PER_THREAD as i64).collect::<Vec<_>>(),
                "queue {t} offsets in order ({flushers} flushers)"
            );
            for (n, r) in rs.iter().enumerate() {
                assert_eq!(
                    store.read(r.physical_offset).expect("read").message,
                    msg("s", t as i32, n as u64, 64)
                );
            }
        }
        let flushes = store.stats().flushes;
        assert!(
            flushes > 0 && flushes <= THREADS as u64 * PER_THREAD,
            "{flushes} flushes for {} appends",
            THREADS as u64 * PER_THREAD
        );
    }
}

#[test]
fn given_query_by_key_and_id_when_searched_should_return_exact_matches_in_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(small_config(dir.path())).expect("open");
    let mut last = 0;
    for n in 0..100u64 {
        let r = store
            .append(&msg("q", (n % 4) as i32, n, 50))
            .expect("append");
        last = r.physical_offset + i64::from(r.size);
    }
    assert!(store.wait_dispatched(last, WAIT));
    let hits = store
        .query_by_key("q", "key-42", 10, 0, i64::MAX)
        .expect("query");
    assert_eq!(hits.len(), 1);
    assert_eq!(
        hits[0].message.properties.message_id,
        format!("ID{:016X}", 42)
    );
    let shared = store
        .query_by_key("q", "shared", 30, 0, i64::MAX)
        .expect("query");
    assert_eq!(shared.len(), 30, "capped at max");
    let none = store.query_by_key("q", "shared", 30, 0, 1).expect("query");
    assert!(none.is_empty(), "time range filters");
    assert!(
        store
            .query_by_key("other", "key-42", 10, 0, i64::MAX)
            .expect("query")
            .is_empty()
    );
    let by_id = store
        .query_by_id("q", &format!("ID{:016X}", 7))
        .expect("by id");
    assert_eq!(by_id.len(), 1);
    assert_eq!(by_id[0].message.properties.keys[0], "key-7");
}

#[test]
fn given_timestamps_when_offset_by_time_should_find_first_at_or_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(small_config(dir.path())).expect("open");
    let mut stamps = Vec::new();
    let mut last = 0;
    for n in 0..30u64 {
        let r = store.append(&msg("ts", 0, n, 10)).expect("append");
        stamps.push(r.store_timestamp);
        last = r.physical_offset + i64::from(r.size);
        if n % 10 == 9 {
            // Let the store clock move on so the timestamps are not all equal.
            let t0 = SystemTime::now();
            while SystemTime::now().duration_since(t0).unwrap_or_default()
                < Duration::from_millis(3)
            {
                std::hint::spin_loop();
            }
        }
    }
    assert!(store.wait_dispatched(last, WAIT));
    for (i, ts) in stamps.iter().enumerate() {
        let first = stamps.iter().position(|s| s >= ts).expect("some") as i64;
        assert_eq!(
            store.offset_by_time("ts", 0, *ts),
            first,
            "stamp of message {i}"
        );
    }
    assert_eq!(store.offset_by_time("ts", 0, 0), 0);
    assert_eq!(store.offset_by_time("ts", 0, i64::MAX), 30);
}

struct FakeDisk {
    used_permille: AtomicU64,
}

impl DiskUsage for FakeDisk {
    fn stats(&self, _path: &Path) -> std::io::Result<DiskStats> {
        let used = self.used_permille.load(Ordering::SeqCst);
        Ok(DiskStats {
            total: 1000,
            available: 1000 - used,
        })
    }
}

#[test]
fn given_disk_above_refuse_watermark_when_appending_should_fail_but_reads_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Arc::new(FakeDisk {
        used_permille: AtomicU64::new(500),
    });
    let mut cfg = small_config(dir.path());
    cfg.retention.disk_usage = disk.clone();
    let store = MessageStore::open(cfg).expect("open");
    let r = store.append(&msg("d", 0, 1, 10)).expect("append");
    disk.used_permille.store(950, Ordering::SeqCst);
    let report = store.run_retention().expect("retention");
    assert!(report.refusing_appends);
    match store.append(&msg("d", 0, 2, 10)) {
        Err(StoreError::DiskFull {
            used_percent,
            limit_percent,
            ..
        }) => {
            assert!((used_percent - 95.0).abs() < 0.01);
            assert!((limit_percent - 90.0).abs() < 0.01);
        }
        other => panic!("append must be refused: {other:?}"),
    }
    assert_eq!(
        store.read(r.physical_offset).expect("read").message,
        msg("d", 0, 1, 10)
    );
    disk.used_permille.store(600, Ordering::SeqCst);
    assert!(!store.run_retention().expect("retention").refusing_appends);
    store
        .append(&msg("d", 0, 3, 10))
        .expect("append accepted again");
}

#[test]
fn given_high_watermark_when_retention_runs_should_delete_oldest_segments_and_follow_in_queues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = Arc::new(FakeDisk {
        used_permille: AtomicU64::new(100),
    });
    let mut cfg = small_config(dir.path());
    cfg.retention.disk_usage = disk.clone();
    let store = MessageStore::open(cfg).expect("open");
    let mut last = None;
    for n in 0..400u64 {
        last = Some(store.append(&msg("ret", 0, n, 900)).expect("append"));
    }
    let last = last.expect("last");
    store.flush().expect("flush");
    assert!(store.wait_dispatched(last.physical_offset + i64::from(last.size), WAIT));
    let before = store.stats().segments.len();
    assert!(before >= 5);
    assert_eq!(
        store
            .run_retention()
            .expect("nothing to do")
            .pressure_segments,
        0
    );
    disk.used_permille.store(870, Ordering::SeqCst);
    // The fake disk never drains, so retention deletes every sealed segment.
    let rep = store.run_retention().expect("retention");
    assert_eq!(rep.pressure_segments, before - 1);
    let stats = store.stats();
    assert_eq!(stats.segments.len(), 1, "active segment is kept");
    assert_eq!(stats.min_offset, stats.segments[0]);
    let min_q = store.min_offset("ret", 0);
    assert!(min_q > 0);
    let got = store
        .get_messages("ret", 0, 0, 1000, |_| true)
        .expect("get");
    assert_eq!(got.messages.first().map(|m| m.queue_offset), Some(min_q));
    assert_eq!(got.messages.len() as i64, 400 - min_q);
    assert!(
        got.messages
            .iter()
            .all(|m| m.physical_offset >= stats.min_offset)
    );
}

#[test]
fn given_expired_segments_when_retention_runs_should_delete_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = small_config(dir.path());
    // A half-full disk, whatever the machine's: only age may delete segments here.
    cfg.retention.disk_usage = Arc::new(FakeDisk {
        used_permille: AtomicU64::new(500),
    });
    let store = MessageStore::open(cfg).expect("open");
    let mut last = None;
    for n in 0..200u64 {
        last = Some(store.append(&msg("old", 0, n, 900)).expect("append"));
    }
    let last = last.expect("last");
    store.flush().expect("flush");
    assert!(store.wait_dispatched(last.physical_offset + i64::from(last.size), WAIT));
    let segs = segment_files(dir.path());
    let old = SystemTime::now() - Duration::from_secs(73 * 3600);
    for p in &segs[..2] {
        fs::File::options()
            .write(true)
            .open(p)
            .expect("open")
            .set_modified(old)
            .expect("age the file");
    }
    let rep = store.run_retention().expect("retention");
    assert_eq!(rep.expired_segments, 2);
    assert_eq!(store.stats().min_offset, 2 * 64 * 1024);
    assert!(!segs[0].exists() && !segs[1].exists() && segs[2].exists());
}

#[test]
fn given_arrival_listener_when_messages_dispatched_should_report_queue_max_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seen: Arc<Mutex<Vec<Arrival>>> = Arc::default();
    let mut cfg = small_config(dir.path());
    let sink = Arc::clone(&seen);
    cfg.arrival_listener = Some(Arc::new(move |a: &Arrival| {
        sink.lock().expect("lock").push(a.clone());
    }));
    let store = MessageStore::open(cfg).expect("open");
    let mut last = 0;
    for n in 0..5u64 {
        let r = store.append(&msg("arr", 2, n, 10)).expect("append");
        last = r.physical_offset + i64::from(r.size);
    }
    assert!(store.wait_dispatched(last, WAIT));
    let seen = seen.lock().expect("lock");
    let newest = seen
        .iter()
        .filter(|a| a.topic == "arr" && a.queue_id == 2)
        .map(|a| a.max_offset)
        .max();
    assert_eq!(newest, Some(5));
}

#[test]
fn given_open_store_when_opened_twice_should_report_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = MessageStore::open(small_config(dir.path())).expect("open");
    match MessageStore::open(small_config(dir.path())) {
        Err(StoreError::Locked { .. }) => {}
        other => panic!("second open must fail: {other:?}"),
    }
}

#[test]
fn given_shared_store_when_last_holder_lets_go_should_signal_release_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = std::sync::Arc::new(MessageStore::open(small_config(dir.path())).expect("open"));
    let released = store.released();
    let other = std::sync::Arc::clone(&store);
    drop(store);
    // Another holder keeps the directory locked.
    assert!(!released.is_released());
    assert!(matches!(
        MessageStore::open(small_config(dir.path())),
        Err(StoreError::Locked { .. })
    ));
    let holder = std::thread::spawn(move || drop(other));
    assert!(
        released.wait(std::time::Duration::from_secs(10)),
        "the last holder's drop must release the directory"
    );
    holder.join().expect("holder thread");
    // Released means unlocked: the directory opens at once.
    MessageStore::open(small_config(dir.path())).expect("reopen after release");
}

#[test]
fn given_invalid_messages_when_appended_should_be_rejected_with_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MessageStore::open(small_config(dir.path())).expect("open");
    let mut m = msg("bad topic", 0, 1, 10);
    assert!(matches!(
        store.append(&m),
        Err(StoreError::InvalidMessage(_))
    ));
    m.topic = "ok".into();
    m.queue_id = -1;
    assert!(matches!(
        store.append(&m),
        Err(StoreError::InvalidMessage(_))
    ));
    let big = msg("ok", 0, 1, 20_000);
    match store.append(&big) {
        Err(StoreError::MessageTooLarge { max, .. }) => assert_eq!(max, 16 * 1024),
        other => panic!("{other:?}"),
    }
    let batch: Vec<_> = (0..40).map(|n| msg("ok", 0, n, 500)).collect();
    assert!(matches!(
        store.append_batch(&batch),
        Err(StoreError::MessageTooLarge { .. })
    ));
    assert_eq!(
        store.stats().write_offset,
        0,
        "nothing of a rejected append is written"
    );
}
