//! Storage tests: openraft's conformance suite, plus reopen, truncate, purge
//! and torn-tail recovery of the file log.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftSnapshotBuilder, Vote};
use tempfile::TempDir;

use super::log_store::{FileLogStore, LogIoHandle, SEGMENT_TARGET_BYTES};
use super::state_machine::FileStateMachine;
use crate::metadata::Command;
use crate::raft_types::{Entry, LogId, StorageError, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, FileLogStore, FileStateMachine, (TempDir, LogIoHandle)> for Builder {
    async fn build(
        &self,
    ) -> Result<((TempDir, LogIoHandle), FileLogStore, FileStateMachine), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let (log, io) = FileLogStore::open(&dir.path().join("raft")).unwrap();
        let (sm, _rx) = FileStateMachine::open(&dir.path().join("sm"), "test").unwrap();
        Ok(((dir, io), log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).unwrap();
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command::DeleteTopic {
            name: format!("t{index}"),
        }),
    }
}

/// A big entry, to make segments roll quickly.
fn big_entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command::DeleteTopic {
            name: "x".repeat(1 << 20),
        }),
    }
}

async fn append(store: &mut FileLogStore, entries: Vec<Entry>) {
    store.blocking_append(entries).await.unwrap();
}

async fn indexes(store: &mut FileLogStore) -> Vec<u64> {
    store
        .try_get_log_entries(0..u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect()
}

fn open(dir: &Path) -> (FileLogStore, LogIoHandle) {
    FileLogStore::open(dir).unwrap()
}

fn close(store: FileLogStore, io: LogIoHandle) {
    drop(store);
    io.join().unwrap();
}

fn segments(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn given_appended_entries_and_vote_when_reopened_should_read_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, io) = open(dir.path());
    append(&mut store, (1..=5).map(|i| entry(1, i)).collect()).await;
    let vote = Vote::new_committed(2, 7);
    store.save_vote(&vote).await.unwrap();
    store.save_committed(Some(log_id(1, 4))).await.unwrap();
    close(store, io);

    let (mut store, io) = open(dir.path());
    assert_eq!(indexes(&mut store).await, vec![1, 2, 3, 4, 5]);
    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 4)));
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 5)));
    assert_eq!(state.last_purged_log_id, None);
    close(store, io);
}

#[tokio::test]
async fn given_truncate_and_purge_when_reopened_should_keep_only_the_live_range() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, io) = open(dir.path());
    append(&mut store, (1..=10).map(|i| entry(1, i)).collect()).await;
    store.truncate(log_id(1, 8)).await.unwrap();
    append(&mut store, vec![entry(2, 8), entry(2, 9)]).await;
    store.purge(log_id(1, 3)).await.unwrap();
    assert_eq!(indexes(&mut store).await, vec![4, 5, 6, 7, 8, 9]);
    close(store, io);

    let (mut store, io) = open(dir.path());
    assert_eq!(indexes(&mut store).await, vec![4, 5, 6, 7, 8, 9]);
    let got = store.try_get_log_entries(8..10).await.unwrap();
    assert_eq!(
        got[0].log_id,
        log_id(2, 8),
        "truncated entries were replaced"
    );
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(2, 9)));
    close(store, io);
}

#[tokio::test]
async fn given_many_segments_when_truncating_and_purging_should_delete_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, io) = open(dir.path());
    // Each entry is ~1 MiB, so a segment holds about SEGMENT_TARGET_BYTES / 1 MiB entries.
    let per_segment = SEGMENT_TARGET_BYTES / (1 << 20);
    let total = per_segment * 3 + 2;
    for i in 1..=total {
        append(&mut store, vec![big_entry(1, i)]).await;
    }
    let before = segments(dir.path());
    assert!(before.len() >= 3, "segments rolled: {before:?}");

    store.truncate(log_id(1, per_segment + 2)).await.unwrap();
    let after_truncate = segments(dir.path());
    assert!(after_truncate.len() < before.len(), "{after_truncate:?}");
    append(&mut store, vec![big_entry(2, per_segment + 2)]).await;

    store.purge(log_id(1, per_segment + 1)).await.unwrap();
    let after_purge = segments(dir.path());
    assert!(
        after_purge.len() < after_truncate.len() + 1,
        "a fully purged segment is deleted: {after_purge:?}"
    );
    close(store, io);

    let (mut store, io) = open(dir.path());
    assert_eq!(indexes(&mut store).await, vec![per_segment + 2]);
    close(store, io);
}

#[tokio::test]
async fn given_purge_past_the_last_entry_when_appending_and_reopening_should_continue_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, io) = open(dir.path());
    append(&mut store, (1..=3).map(|i| entry(1, i)).collect()).await;
    store.purge(log_id(1, 10)).await.unwrap();
    append(&mut store, vec![entry(1, 11), entry(1, 12)]).await;
    close(store, io);

    let (mut store, io) = open(dir.path());
    assert_eq!(indexes(&mut store).await, vec![11, 12]);
    assert_eq!(
        store.get_log_state().await.unwrap().last_purged_log_id,
        Some(log_id(1, 10))
    );
    close(store, io);
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    dir.join("log").join(segments(dir).pop().unwrap())
}

#[tokio::test]
async fn given_a_torn_last_record_when_reopened_should_truncate_it_and_keep_the_rest() {
    for damage in ["partial header", "partial payload", "bad checksum"] {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, io) = open(dir.path());
        append(&mut store, (1..=4).map(|i| entry(1, i)).collect()).await;
        close(store, io);

        let seg = last_segment(dir.path());
        let good_len = std::fs::metadata(&seg).unwrap().len();
        match damage {
            "partial header" => {
                let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
                f.write_all(&[7, 0, 0]).unwrap();
            }
            "partial payload" => {
                let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
                f.write_all(&100u32.to_le_bytes()).unwrap();
                f.write_all(&0u32.to_le_bytes()).unwrap();
                f.write_all(b"{\"log_id\"").unwrap();
            }
            _ => {
                // Flip a byte inside the last record's payload.
                let mut bytes = std::fs::read(&seg).unwrap();
                let n = bytes.len();
                bytes[n - 2] ^= 0xff;
                std::fs::write(&seg, bytes).unwrap();
            }
        }

        let (mut store, io) = open(dir.path());
        let want: Vec<u64> = if damage == "bad checksum" {
            vec![1, 2, 3]
        } else {
            vec![1, 2, 3, 4]
        };
        assert_eq!(indexes(&mut store).await, want, "{damage}");
        let len = std::fs::metadata(&seg).unwrap().len();
        if damage == "bad checksum" {
            assert!(len < good_len, "{damage}: the damaged record is cut");
        } else {
            assert_eq!(
                len, good_len,
                "{damage}: the file is cut back to the last good record"
            );
        }
        // The log keeps working after recovery.
        let next = *want.last().unwrap() + 1;
        append(&mut store, vec![entry(1, next)]).await;
        close(store, io);
        let (mut store, io) = open(dir.path());
        assert_eq!(indexes(&mut store).await.last(), Some(&next), "{damage}");
        close(store, io);
    }
}

#[tokio::test]
async fn given_damage_in_a_sealed_segment_when_reopened_should_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, io) = open(dir.path());
    let per_segment = SEGMENT_TARGET_BYTES / (1 << 20);
    for i in 1..=per_segment + 2 {
        append(&mut store, vec![big_entry(1, i)]).await;
    }
    close(store, io);
    let first = dir.path().join("log").join(segments(dir.path()).remove(0));
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    match FileLogStore::open(dir.path()) {
        Err(crate::error::ControllerError::Corrupt { reason, .. }) => {
            assert!(reason.contains("sealed segment"), "{reason}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a damaged sealed segment must not be accepted"),
    }
}

#[tokio::test]
async fn given_a_saved_committed_beyond_the_log_when_read_should_clamp_to_the_last_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, io) = open(dir.path());
    append(&mut store, (1..=3).map(|i| entry(1, i)).collect()).await;
    store.save_committed(Some(log_id(1, 9))).await.unwrap();
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 3)));
    close(store, io);
}

#[tokio::test]
async fn given_a_snapshot_when_state_machine_reopens_should_restore_state_and_membership() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sm, rx) = FileStateMachine::open(dir.path(), "c").unwrap();
    let membership = Membership::new(vec![BTreeSet::from([1u64])], None);
    let entries = vec![
        Entry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Membership(membership.clone()),
        },
        Entry {
            log_id: log_id(1, 2),
            payload: EntryPayload::Normal(Command::RegisterBroker {
                broker_set: "a".to_owned(),
                broker_id: 0,
                address: "127.0.0.1:1".to_owned(),
                now_ms: 1,
            }),
        },
    ];
    sm.apply(entries).await.unwrap();
    assert_eq!(rx.borrow().revision, 2);
    assert_eq!(rx.borrow().broker_sets.len(), 1);
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(1, 2)));
    drop(sm);

    let (mut sm, rx) = FileStateMachine::open(dir.path(), "c").unwrap();
    let (applied, m) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 2)));
    assert_eq!(m.membership(), &membership);
    assert_eq!(rx.borrow().revision, 2);
    assert_eq!(rx.borrow().broker_sets[0].name, "a");
}

#[tokio::test]
async fn given_truncate_at_a_segment_start_when_reopened_should_drop_that_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, io) = open(dir.path());
    let per_segment = SEGMENT_TARGET_BYTES / (1 << 20);
    for i in 1..=per_segment * 2 + 1 {
        append(&mut store, vec![big_entry(1, i)]).await;
    }
    let names = segments(dir.path());
    let second: u64 = names[1].trim_end_matches(".log").parse().unwrap();
    store.truncate(log_id(1, second)).await.unwrap();
    assert_eq!(segments(dir.path()), names[..1].to_vec());
    append(&mut store, vec![entry(2, second)]).await;
    close(store, io);

    let (mut store, io) = open(dir.path());
    let got = indexes(&mut store).await;
    assert_eq!(got, (1..=second).collect::<Vec<_>>());
    let last = store.get_log_state().await.unwrap().last_log_id;
    assert_eq!(last, Some(log_id(2, second)));
    close(store, io);
}
