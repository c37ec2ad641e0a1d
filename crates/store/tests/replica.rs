//! Replication at the store level: a replica copies its master's log with `read_raw` /
//! `append_raw`, rebuilds consume queues and index from it, keeps the epoch history, refuses
//! bad bytes, and cuts a divergent tail with `open_truncated` (or starts over with `wipe`).

mod common;

use std::time::Duration;

use comet_store::{EpochEntry, MessageStore, StoreError, WriteGate, consistent_point};
use common::{msg, small_config};

const WAIT: Duration = Duration::from_secs(10);

fn replica_gate() -> WriteGate {
    WriteGate::Closed("replica".into())
}

/// Copies everything `master` has beyond the replica's end; returns the chunks copied.
fn copy_all(master: &MessageStore, replica: &MessageStore, epoch: u64, max: usize) -> usize {
    let mut chunks = 0;
    loop {
        let from = replica.write_offset();
        let chunk = master
            .read_raw(from, max, i64::MAX)
            .expect("read raw from master");
        if chunk.end == from {
            return chunks;
        }
        let done = replica
            .append_raw(epoch, from, &chunk.data)
            .expect("append raw on replica");
        assert_eq!(done.end, chunk.end);
        chunks += 1;
        assert!(chunks < 100_000, "copy does not converge");
    }
}

fn assert_same_queues(master: &MessageStore, replica: &MessageStore, topic: &str, queues: i32) {
    assert!(replica.wait_dispatched(replica.write_offset(), WAIT));
    assert!(master.wait_dispatched(master.write_offset(), WAIT));
    for q in 0..queues {
        let a = master
            .get_messages(topic, q, 0, 10_000, |_| true)
            .expect("master");
        let b = replica
            .get_messages(topic, q, 0, 10_000, |_| true)
            .expect("replica");
        assert_eq!(a.messages, b.messages, "queue {q}");
        assert_eq!(a.max_offset, b.max_offset);
    }
}

#[test]
fn given_master_log_when_copied_raw_should_rebuild_identical_queues_and_index() {
    let (md, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = MessageStore::open(small_config(md.path())).unwrap();
    let replica = MessageStore::open(small_config(rd.path())).unwrap();
    replica.set_write_gate(replica_gate());
    // Singles and batches, across several 64 KiB segments.
    for n in 0..200u64 {
        master
            .append(&msg("orders", (n % 3) as i32, n, 700))
            .unwrap();
        if n % 20 == 0 {
            let batch: Vec<_> = (0..5)
                .map(|i| msg("orders", 1, 10_000 + n + i, 300))
                .collect();
            master.append_batch(&batch).unwrap();
        }
    }
    assert!(master.stats().segments.len() > 2);
    // A small chunk limit: one record (or batch) per chunk.
    let chunks = copy_all(&master, &replica, 1, 1);
    assert!(chunks > 200, "{chunks} chunks");
    assert_eq!(replica.write_offset(), master.write_offset());
    assert_same_queues(&master, &replica, "orders", 3);
    assert_eq!(
        replica
            .query_by_id("orders", "ID0000000000000007")
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        replica.epochs(),
        vec![EpochEntry {
            epoch: 1,
            start_offset: 0
        }]
    );
    // Appends continue incrementally, in bigger chunks, and survive a restart of the replica.
    for n in 200..260u64 {
        master
            .append(&msg("orders", (n % 3) as i32, n, 900))
            .unwrap();
    }
    copy_all(&master, &replica, 1, 256 << 10);
    drop(replica);
    let replica = MessageStore::open(small_config(rd.path())).unwrap();
    assert_eq!(replica.write_offset(), master.write_offset());
    assert_same_queues(&master, &replica, "orders", 3);
    // A replica promoted to master continues every queue at the right offset.
    let next = replica.append(&msg("orders", 0, 999_999, 10)).unwrap();
    assert_eq!(next.queue_offset, master.max_offset("orders", 0));
}

#[test]
fn given_bad_bytes_when_appended_raw_should_refuse_and_write_nothing() {
    let (md, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = MessageStore::open(small_config(md.path())).unwrap();
    let replica = MessageStore::open(small_config(rd.path())).unwrap();
    for n in 0..5u64 {
        master.append(&msg("t", 0, n, 100)).unwrap();
    }
    let chunk = master.read_raw(0, 1 << 20, i64::MAX).unwrap();
    assert_eq!(chunk.records, 5);
    // An open gate means this store takes local appends: no raw ones.
    assert!(matches!(
        replica.append_raw(1, 0, &chunk.data),
        Err(StoreError::InvalidState(_))
    ));
    replica.set_write_gate(replica_gate());
    // Local appends are refused with the gate's reason.
    match replica.append(&msg("t", 0, 1, 1)) {
        Err(StoreError::NotWritable(r)) => assert_eq!(r, "replica"),
        other => panic!("{other:?}"),
    }
    for byte in [3usize, 9, 40, 150, chunk.data.len() - 1] {
        let mut bad = chunk.data.clone();
        bad[byte] ^= 0x20;
        assert!(
            replica.append_raw(1, 0, &bad).is_err(),
            "flip in byte {byte} accepted"
        );
    }
    // Cut in the middle of a record.
    assert!(matches!(
        replica.append_raw(1, 0, &chunk.data[..chunk.data.len() - 3]),
        Err(StoreError::Corrupt { .. })
    ));
    // Not where the log ends.
    let second = master.read(0).unwrap().size as usize;
    assert!(matches!(
        replica.append_raw(1, second as i64, &chunk.data[second..]),
        Err(StoreError::NotContiguous { .. })
    ));
    assert_eq!(replica.write_offset(), 0, "nothing was written");
    replica.append_raw(1, 0, &chunk.data).unwrap();
    assert_eq!(replica.write_offset(), master.write_offset());
    // Older epochs cannot follow newer ones.
    master.append(&msg("t", 0, 9, 10)).unwrap();
    let more = master
        .read_raw(replica.write_offset(), 1 << 20, i64::MAX)
        .unwrap();
    replica
        .append_raw(4, replica.write_offset(), &more.data)
        .unwrap();
    master.append(&msg("t", 0, 10, 10)).unwrap();
    let more = master
        .read_raw(replica.write_offset(), 1 << 20, i64::MAX)
        .unwrap();
    assert!(matches!(
        replica.append_raw(3, replica.write_offset(), &more.data),
        Err(StoreError::InvalidState(_))
    ));
    // A read from inside a record is refused.
    assert!(matches!(
        master.read_raw(7, 100, i64::MAX),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn given_divergent_tail_when_reopened_truncated_should_match_the_new_master() {
    let (ad, bd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A is master in epoch 1; B copies everything.
    let a = MessageStore::open(small_config(ad.path())).unwrap();
    a.set_write_gate(replica_gate());
    a.begin_epoch(1).unwrap();
    a.set_write_gate(WriteGate::Open);
    let b = MessageStore::open(small_config(bd.path())).unwrap();
    b.set_write_gate(replica_gate());
    for n in 0..150u64 {
        a.append(&msg("t", (n % 2) as i32, n, 600)).unwrap();
    }
    copy_all(&a, &b, 1, 64 << 10);
    let shared_end = b.write_offset();
    // A writes on alone (partitioned), crossing a segment boundary.
    for n in 150..260u64 {
        a.append(&msg("t", (n % 2) as i32, n, 600)).unwrap();
    }
    // B becomes master in epoch 2 and writes.
    assert_eq!(b.begin_epoch(2).unwrap(), shared_end);
    b.set_write_gate(WriteGate::Open);
    for n in 0..30u64 {
        b.append(&msg("t", 0, 50_000 + n, 200)).unwrap();
    }
    // A returns: compare histories, cut, follow.
    let point = consistent_point(&a.epochs(), a.write_offset(), &b.epochs(), b.write_offset())
        .expect("shared epoch");
    assert_eq!(point, shared_end);
    let a_before = a.write_offset();
    drop(a);
    let a = MessageStore::open_truncated(small_config(ad.path()), point).unwrap();
    assert!(a.recovery_report().truncated || a_before > point);
    assert_eq!(a.write_offset(), point);
    assert_eq!(a.epochs().last().map(|e| e.epoch), Some(1));
    a.set_write_gate(replica_gate());
    copy_all(&b, &a, 2, 64 << 10);
    assert_eq!(a.write_offset(), b.write_offset());
    assert_eq!(a.epochs(), b.epochs());
    assert_same_queues(&b, &a, "t", 2);
    // The cut messages are gone from the index too.
    assert!(a.query_by_id("t", "ID00000000000000C8").unwrap().is_empty());
    // And all of this holds after a restart.
    drop(a);
    let a = MessageStore::open(small_config(ad.path())).unwrap();
    assert_same_queues(&b, &a, "t", 2);
}

#[test]
fn given_wiped_store_when_copying_from_a_later_offset_should_start_there() {
    let (md, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = MessageStore::open(small_config(md.path())).unwrap();
    let seg = master.segment_size() as i64;
    {
        let replica = MessageStore::open(small_config(rd.path())).unwrap();
        replica.append(&msg("old", 0, 1, 100)).unwrap();
    }
    for n in 0..200u64 {
        master.append(&msg("t", 0, n, 800)).unwrap();
    }
    // Pretend retention removed the master's first segment: copy from the second.
    assert!(
        MessageStore::wipe(&small_config(rd.path()), 7).is_err(),
        "unaligned"
    );
    MessageStore::wipe(&small_config(rd.path()), seg).unwrap();
    let replica = MessageStore::open(small_config(rd.path())).unwrap();
    assert_eq!(replica.write_offset(), seg);
    assert_eq!(replica.max_offset("old", 0), 0, "old queues are gone");
    replica.set_write_gate(replica_gate());
    copy_all(&master, &replica, 1, 32 << 10);
    assert_eq!(replica.write_offset(), master.write_offset());
    assert!(replica.wait_dispatched(replica.write_offset(), WAIT));
    let got = replica.get_messages("t", 0, 0, 10_000, |_| true).unwrap();
    let want = master.get_messages("t", 0, 0, 10_000, |_| true).unwrap();
    assert_eq!(got.max_offset, want.max_offset);
    assert!(!got.messages.is_empty());
    assert_eq!(
        got.messages.last().map(|m| m.queue_offset),
        want.messages.last().map(|m| m.queue_offset)
    );
}
