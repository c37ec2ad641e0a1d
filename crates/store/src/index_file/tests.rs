//! Tests of the index: format pins, queries, rolling, truncation, recovery from every kind of
//! damage, and a model-based property test.

use std::collections::BTreeSet;
use std::io::{Seek, SeekFrom, Write};

use proptest::prelude::*;

use super::*;

const ALL: (i64, i64) = (i64::MIN, i64::MAX);

fn cfg(slots: u32, entries: u32) -> IndexConfig {
    IndexConfig {
        slots_per_file: slots,
        entries_per_file: entries,
    }
}

fn open(dir: &Path, c: IndexConfig) -> IndexStore {
    IndexStore::open(dir, c).expect("open index")
}

fn put(store: &IndexStore, phys: i64, ts: i64, keys: &[&str]) {
    store
        .put_record(phys, ts, keys.iter().copied())
        .expect("put record");
}

fn all(store: &IndexStore, key: &str) -> Vec<i64> {
    store.query(key, usize::MAX, ALL.0, ALL.1).expect("query")
}

fn files_on_disk(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// File position of entry `idx` in a file with `slots` slots.
fn entry_at(slots: u32, idx: u32) -> u64 {
    (HEADER_BYTES + 8 * slots as usize + ENTRY_SIZE * idx as usize) as u64
}

fn overwrite(path: &Path, pos: u64, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for corruption");
    f.seek(SeekFrom::Start(pos)).expect("seek");
    f.write_all(bytes).expect("corrupt");
}

fn flip_byte(path: &Path, pos: u64) {
    let mut b = fs::read(path).expect("read file");
    b[pos as usize] ^= 0x40;
    fs::write(path, b).expect("write file");
}

#[test]
fn given_key_hash_when_computed_should_match_the_pinned_format() {
    // The hash is part of the file format: these values (computed independently from
    // the FNV-1a and murmur3 fmix64 definitions) must never change.
    let pinned = [
        ("", 0xefd0_1f60_ba99_2926_u64),
        ("a", 0x82a2_a958_a9be_ce5b),
        ("TopicTest#order-42", 0x7028_f9f4_2781_ec38),
    ];
    for (key, hash) in pinned {
        assert_eq!(
            key_hash(key),
            hash,
            "{key:?} hashes to {:#x}",
            key_hash(key)
        );
    }
}

#[test]
fn given_entry_when_encoded_should_decode_only_at_its_own_index() {
    let e = Entry {
        hash: 0x0123_4567_89ab_cdef,
        phys: 1 << 40,
        ts: -5,
        prev: 7,
        last_of_record: true,
    };
    let b = e.encode(9);
    assert_eq!(Entry::decode(&b, 9), Some(e));
    assert_eq!(Entry::decode(&b, 10), None, "the CRC covers the index");
    assert_eq!(
        Entry::decode(&[0u8; ENTRY_SIZE], 0),
        None,
        "zeros are never an entry"
    );
    for i in 0..ENTRY_SIZE {
        let mut c = b;
        c[i] ^= 1;
        assert_eq!(
            Entry::decode(&c, 9),
            None,
            "flipped byte {i} must fail the CRC"
        );
    }
}

#[test]
fn given_invalid_config_when_opened_should_fail_with_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in [cfg(0, 10), cfg(10, 0), cfg(10, MAX_ENTRIES_PER_FILE + 1)] {
        let err = IndexStore::open(dir.path(), bad).expect_err("invalid config");
        assert!(matches!(err, StoreError::Config { .. }), "{err}");
    }
}

#[test]
fn given_one_slot_when_keys_collide_should_return_only_matching_key_newest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), cfg(1, 100));
    put(&store, 0, 1, &["a"]);
    put(&store, 10, 2, &["b"]);
    put(&store, 20, 3, &["a", "b", "c"]);
    put(&store, 30, 4, &["c"]);
    put(&store, 40, 5, &["a"]);
    assert_eq!(all(&store, "a"), vec![40, 20, 0]);
    assert_eq!(all(&store, "b"), vec![20, 10]);
    assert_eq!(all(&store, "c"), vec![30, 20]);
    assert!(all(&store, "d").is_empty());
    assert_eq!(store.last_indexed(), 40);
}

#[test]
fn given_records_over_time_when_queried_by_range_should_return_only_those_inside() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Two records per file, so ranges also skip whole files.
    let store = open(dir.path(), cfg(3, 2));
    for i in 0..10 {
        put(&store, i * 10, 1000 * (i + 1), &["k"]);
    }
    assert_eq!(files_on_disk(dir.path()).len(), 5);
    let q = |b, e| store.query("k", 100, b, e).expect("query");
    assert_eq!(q(2000, 4000), vec![30, 20, 10], "bounds are inclusive");
    assert_eq!(q(2001, 3999), vec![20]);
    assert_eq!(q(9500, 20_000), vec![90]);
    assert!(q(0, 999).is_empty());
    assert!(q(4000, 2000).is_empty(), "empty range");
    assert_eq!(
        store.query("k", 2, ALL.0, ALL.1).expect("query"),
        vec![90, 80]
    );
    assert!(store.query("k", 0, ALL.0, ALL.1).expect("query").is_empty());
}

#[test]
fn given_out_of_order_timestamps_when_queried_should_filter_each_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), cfg(2, 100));
    put(&store, 0, 500, &["k"]);
    put(&store, 10, 100, &["k"]); // the clock went back
    put(&store, 20, 300, &["k"]);
    assert_eq!(store.query("k", 10, 100, 300).expect("query"), vec![20, 10]);
    assert_eq!(store.query("k", 10, 400, 600).expect("query"), vec![0]);
}

#[test]
fn given_small_files_when_records_exceed_capacity_should_roll_and_seal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), cfg(2, 3));
    // Two keys per record: a second record never fits, so every record gets a file.
    for i in 0..5 {
        put(&store, 100 + i, i, &["id", &format!("k{i}")]);
    }
    assert_eq!(
        files_on_disk(dir.path()),
        (100..105).map(file_name).collect::<Vec<_>>()
    );
    assert_eq!(all(&store, "id"), vec![104, 103, 102, 101, 100]);
    assert_eq!(all(&store, "k3"), vec![103]);
    let files = store.files.read().clone();
    for f in &files[..4] {
        assert_eq!(
            f.sealed(),
            Some(2),
            "rolled files are sealed at their count"
        );
    }
    assert_eq!(files[4].sealed(), None, "the active file takes appends");
}

#[test]
fn given_repeated_keys_and_redispatch_when_queried_should_return_each_offset_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), cfg(1, 100));
    put(&store, 0, 1, &["k", "k", "m"]);
    put(&store, 0, 1, &["k"]); // re-dispatch: ignored
    put(&store, 10, 2, &["k"]);
    put(&store, 5, 2, &["k"]); // below last_indexed: ignored
    put(&store, 10, 2, &["x"]); // re-dispatch of the last record: ignored
    assert_eq!(
        store.files.read()[0].count(),
        3,
        "k, m, k: duplicates are not stored"
    );
    assert_eq!(all(&store, "k"), vec![10, 0]);
    assert!(all(&store, "x").is_empty());
    assert_eq!(store.query("k", 1, ALL.0, ALL.1).expect("query"), vec![10]);
    assert_eq!(store.last_indexed(), 10);
}

#[test]
fn given_record_with_more_keys_than_a_file_when_put_should_index_the_first_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), cfg(4, 2));
    put(&store, 0, 1, &["a", "b", "c"]);
    assert_eq!(all(&store, "a"), vec![0]);
    assert_eq!(all(&store, "b"), vec![0]);
    assert!(all(&store, "c").is_empty());
    assert_eq!(store.last_indexed(), 0);
}

#[test]
fn given_records_without_keys_when_reopened_should_fall_back_to_last_record_with_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path(), cfg(4, 10));
        assert_eq!(store.last_indexed(), -1);
        put(&store, 0, 1, &["a"]);
        put(&store, 10, 1, &[]);
        assert_eq!(store.last_indexed(), 10);
    }
    let store = open(dir.path(), cfg(4, 10));
    assert_eq!(store.last_indexed(), 0);
}

#[test]
fn given_store_when_dropped_and_reopened_should_keep_entries_and_take_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(3, 4);
    {
        let store = open(dir.path(), c);
        for i in 0..10 {
            put(
                &store,
                i * 10,
                i,
                &["all", if i % 2 == 0 { "even" } else { "odd" }],
            );
        }
        store.flush().expect("flush");
    }
    let store = open(dir.path(), c);
    assert_eq!(store.last_indexed(), 90);
    assert_eq!(
        all(&store, "all"),
        (0..10).rev().map(|i| i * 10).collect::<Vec<_>>()
    );
    assert_eq!(all(&store, "odd"), vec![90, 70, 50, 30, 10]);
    put(&store, 100, 10, &["all", "even"]);
    assert_eq!(all(&store, "even"), vec![100, 80, 60, 40, 20, 0]);
    drop(store);
    let store = open(dir.path(), c);
    assert_eq!(store.last_indexed(), 100);
    assert_eq!(all(&store, "even"), vec![100, 80, 60, 40, 20, 0]);
    assert_eq!(all(&store, "all").len(), 11);
}

#[test]
fn given_truncate_in_middle_of_file_when_putting_again_should_keep_chains_correct() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(2, 100);
    let store = open(dir.path(), c);
    let keys = ["a", "b", "c"];
    for i in 0..10 {
        put(&store, i * 10, i, &[keys[i as usize % 3]]);
    }
    store.truncate(55).expect("truncate");
    assert_eq!(store.last_indexed(), 50);
    assert_eq!(all(&store, "a"), vec![30, 0]);
    assert_eq!(all(&store, "b"), vec![40, 10]);
    assert_eq!(all(&store, "c"), vec![50, 20]);
    let file = Arc::clone(&store.files.read()[0]);
    assert_eq!(file.count(), 6);
    for slot in 0..2 {
        assert!(file.head(slot) <= 6, "no head points at a dropped entry");
    }
    // The commitlog continues at the cut with different records.
    put(&store, 55, 20, &["a", "c"]);
    put(&store, 65, 21, &["b"]);
    let expect = |s: &IndexStore| {
        assert_eq!(all(s, "a"), vec![55, 30, 0]);
        assert_eq!(all(s, "b"), vec![65, 40, 10]);
        assert_eq!(all(s, "c"), vec![55, 50, 20]);
        assert_eq!(s.last_indexed(), 65);
    };
    expect(&store);
    assert_eq!(files_on_disk(dir.path()), vec![file_name(0), file_name(55)]);
    drop((store, file));
    let store = open(dir.path(), c);
    expect(&store);
    assert_eq!(store.files.read()[0].count(), 6, "recovery honours the cut");
    store
        .truncate(1000)
        .expect("truncate beyond the end is a no-op");
    expect(&store);
}

#[test]
fn given_truncate_before_later_files_when_called_should_delete_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(2, 2);
    let store = open(dir.path(), c);
    for i in 0..6 {
        put(&store, i * 10, i, &["k"]);
    }
    assert_eq!(files_on_disk(dir.path()).len(), 3);
    store.truncate(20).expect("truncate");
    assert_eq!(files_on_disk(dir.path()), vec![file_name(0)]);
    assert_eq!(all(&store, "k"), vec![10, 0]);
    assert_eq!(store.last_indexed(), 10);
    store.truncate(0).expect("truncate everything");
    assert!(files_on_disk(dir.path()).is_empty());
    assert_eq!(store.last_indexed(), -1);
    assert!(all(&store, "k").is_empty());
    put(&store, 0, 1, &["k"]);
    drop(store);
    let store = open(dir.path(), c);
    assert_eq!(all(&store, "k"), vec![0]);
}

#[test]
fn given_old_files_when_delete_before_should_delete_whole_expired_files_but_the_newest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(2, 2);
    let store = open(dir.path(), c);
    for i in 0..6 {
        put(&store, i * 10, i, &["k"]);
    }
    assert_eq!(store.delete_before(0).expect("delete"), 0);
    assert_eq!(
        store.delete_before(15).expect("delete"),
        1,
        "file 0 ends at 10"
    );
    assert_eq!(
        store.delete_before(25).expect("delete"),
        0,
        "file 20 ends at 30"
    );
    assert_eq!(all(&store, "k"), vec![50, 40, 30, 20]);
    assert_eq!(store.delete_before(i64::MAX).expect("delete"), 1);
    assert_eq!(files_on_disk(dir.path()), vec![file_name(40)]);
    assert_eq!(all(&store, "k"), vec![50, 40]);
    drop(store);
    let store = open(dir.path(), c);
    assert_eq!(store.last_indexed(), 50);
    assert_eq!(all(&store, "k"), vec![50, 40]);
}

#[test]
fn given_zeroed_page_in_middle_of_entries_when_reopened_should_keep_prefix_and_fall_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(4, 1000);
    let key = |i: i64| format!("k{}", i % 7);
    {
        let store = open(dir.path(), c);
        for i in 0..400 {
            put(&store, i * 10, i, &[&key(i)]);
        }
    }
    // Lose the page holding entry 200: entries overlapping it are gone, later ones remain.
    let path = dir.path().join(file_name(0));
    let page = entry_at(4, 200) / 4096 * 4096;
    overwrite(&path, page, &[0u8; 4096]);
    let first_lost = ((page - entry_at(4, 0)) / ENTRY_SIZE as u64) as i64;
    let store = open(dir.path(), c);
    assert_eq!(store.last_indexed(), (first_lost - 1) * 10);
    for k in 0..7 {
        let got = all(&store, &format!("k{k}"));
        let want: Vec<i64> = (0..first_lost)
            .rev()
            .filter(|i| i % 7 == k)
            .map(|i| i * 10)
            .collect();
        assert_eq!(got, want, "key k{k}");
    }
    // Re-dispatch past the lost page, but not to the end: the stale entries after it are
    // identical to what re-dispatch would write, so only the zeroed tail stops them from
    // coming back and claiming records that were not dispatched again.
    let redone = first_lost + 150;
    assert!(redone < 400 && entry_at(4, redone as u32) > page + 4096);
    for i in first_lost..redone {
        put(&store, i * 10, i, &[&key(i)]);
    }
    drop(store);
    let store = open(dir.path(), c);
    assert_eq!(store.last_indexed(), (redone - 1) * 10);
    for k in 0..7 {
        let got = all(&store, &format!("k{k}"));
        let want: Vec<i64> = (0..redone)
            .rev()
            .filter(|i| i % 7 == k)
            .map(|i| i * 10)
            .collect();
        assert_eq!(got, want, "key k{k}");
    }
}

#[test]
fn given_flipped_byte_when_reopened_should_drop_from_that_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(3, 200);
    {
        let store = open(dir.path(), c);
        for i in 0..100 {
            put(&store, i * 10, i, &["k"]);
        }
    }
    flip_byte(&dir.path().join(file_name(0)), entry_at(3, 50) + 9);
    let store = open(dir.path(), c);
    assert_eq!(store.last_indexed(), 490);
    assert_eq!(
        all(&store, "k"),
        (0..50).rev().map(|i| i * 10).collect::<Vec<_>>()
    );
}

#[test]
fn given_cut_off_record_when_reopened_should_drop_the_whole_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(8, 100);
    {
        let store = open(dir.path(), c);
        put(&store, 0, 1, &["id0", "a"]);
        put(&store, 10, 2, &["id1", "a", "b"]);
    }
    // The record at 10 occupies entries 2..5; lose its last entry only.
    overwrite(
        &dir.path().join(file_name(0)),
        entry_at(8, 4),
        &[0u8; ENTRY_SIZE],
    );
    let store = open(dir.path(), c);
    assert_eq!(store.last_indexed(), 0);
    assert_eq!(all(&store, "a"), vec![0]);
    assert!(all(&store, "id1").is_empty());
    assert!(all(&store, "b").is_empty());
    put(&store, 10, 2, &["id1", "a", "b"]);
    assert_eq!(all(&store, "a"), vec![10, 0]);
    assert_eq!(all(&store, "b"), vec![10]);
}

#[test]
fn given_lost_header_and_slot_heads_when_reopened_should_rebuild_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(16, 100);
    {
        let store = open(dir.path(), c);
        for i in 0..30 {
            put(&store, i * 10, i, &[&format!("k{}", i % 4)]);
        }
    }
    let path = dir.path().join(file_name(0));
    overwrite(&path, 0, &vec![0u8; entry_at(16, 0) as usize]);
    let store = open(dir.path(), c);
    assert_eq!(store.last_indexed(), 290);
    assert_eq!(
        all(&store, "k1"),
        (0..30)
            .rev()
            .filter(|i| i % 4 == 1)
            .map(|i| i * 10)
            .collect::<Vec<_>>()
    );
    put(&store, 300, 30, &["k1"]);
    assert_eq!(all(&store, "k1")[..2], [300, 290]);
}

#[test]
fn given_heads_pointing_at_wrong_entries_when_reopened_should_ignore_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(1, 100);
    {
        let store = open(dir.path(), c);
        for i in 0..10 {
            put(&store, i * 10, i, &["k"]);
        }
    }
    // Head of slot 0 claims entry 50, which was never written.
    overwrite(
        &dir.path().join(file_name(0)),
        HEADER_BYTES as u64,
        &51u64.to_ne_bytes(),
    );
    let store = open(dir.path(), c);
    assert_eq!(all(&store, "k").len(), 10);
}

#[test]
fn given_valid_entry_with_wrong_chain_link_when_reopened_should_stop_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(1, 100);
    {
        let store = open(dir.path(), c);
        for i in 0..5 {
            put(&store, i * 10, i, &["k"]);
        }
    }
    // A CRC-valid entry after the last one, but its link skips the slot's chain (as a
    // stale entry from an older history would).
    let stale = Entry {
        hash: key_hash("k"),
        phys: 50,
        ts: 5,
        prev: 0,
        last_of_record: true,
    };
    overwrite(
        &dir.path().join(file_name(0)),
        entry_at(1, 5),
        &stale.encode(5),
    );
    let store = open(dir.path(), c);
    assert_eq!(store.last_indexed(), 40);
    assert_eq!(all(&store, "k"), vec![40, 30, 20, 10, 0]);
}

#[test]
fn given_damaged_earlier_file_when_reopened_should_delete_later_files_and_fall_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(2, 10);
    {
        let store = open(dir.path(), c);
        for i in 0..30 {
            put(&store, i * 10, i, &["k"]);
        }
    }
    assert_eq!(files_on_disk(dir.path()).len(), 3);
    flip_byte(&dir.path().join(file_name(0)), entry_at(2, 5));
    let store = open(dir.path(), c);
    assert_eq!(files_on_disk(dir.path()), vec![file_name(0)]);
    assert_eq!(store.last_indexed(), 40);
    assert_eq!(all(&store, "k"), vec![40, 30, 20, 10, 0]);
    assert_eq!(store.files.read()[0].sealed(), Some(5));
    // Re-dispatch from the loss point rebuilds everything.
    for i in 5..30 {
        put(&store, i * 10, i, &["k"]);
    }
    drop(store);
    let store = open(dir.path(), c);
    assert_eq!(store.last_indexed(), 290);
    assert_eq!(
        all(&store, "k"),
        (0..30).rev().map(|i| i * 10).collect::<Vec<_>>()
    );
}

#[test]
fn given_empty_or_foreign_files_when_reopened_should_drop_or_ignore_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cfg(2, 4);
    {
        let store = open(dir.path(), c);
        for i in 0..6 {
            put(&store, i * 10, i, &["k"]);
        }
    }
    // The newest file lost its only flushed page; a stray file is not ours.
    let newest = dir.path().join(file_name(40));
    overwrite(&newest, 0, &vec![0u8; entry_at(2, 4) as usize]);
    fs::write(dir.path().join("README"), b"not an index file").expect("write");
    let store = open(dir.path(), c);
    assert_eq!(store.last_indexed(), 30);
    assert_eq!(
        files_on_disk(dir.path()),
        vec![file_name(0), "README".to_owned()]
    );
    // The first file was sealed when it rolled, so the next record starts a new file.
    put(&store, 40, 4, &["k"]);
    assert_eq!(all(&store, "k"), vec![40, 30, 20, 10, 0]);
}

#[test]
fn given_changed_config_when_reopened_should_read_old_files_with_their_geometry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = cfg(4, 8);
    let new = cfg(16, 32);
    {
        let store = open(dir.path(), old);
        for i in 0..10 {
            put(&store, i * 10, i, &["k"]);
        }
    }
    let store = open(dir.path(), new);
    assert_eq!(all(&store, "k").len(), 10);
    // The old active file (8 entries, 2 used) fills up before a new-geometry file starts.
    for i in 10..20 {
        put(&store, i * 10, i, &["k"]);
    }
    let files = store.files.read().clone();
    assert_eq!(
        files.iter().map(|f| f.geo.capacity).collect::<Vec<_>>(),
        vec![8, 8, 32]
    );
    let len = fs::metadata(dir.path().join(file_name(160)))
        .expect("stat")
        .len();
    assert_eq!(
        len,
        Geometry::from_config(&new)
            .expect("geo")
            .file_len()
            .expect("len") as u64
    );
    drop((store, files));
    let store = open(dir.path(), old);
    assert_eq!(
        all(&store, "k"),
        (0..20).rev().map(|i| i * 10).collect::<Vec<_>>()
    );
}

#[test]
fn given_concurrent_queries_when_putting_should_see_only_whole_valid_results() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<IndexStore>();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(dir.path(), cfg(3, 16)));
    let writer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            for i in 0..2000i64 {
                let k = format!("k{}", i % 5);
                put(&store, i * 10, i, &[&format!("id{i}"), &k]);
            }
        })
    };
    let mut checks = 0;
    while !writer.is_finished() || checks == 0 {
        for k in 0..5i64 {
            let got = all(&store, &format!("k{k}"));
            assert!(
                got.windows(2).all(|w| w[0] > w[1]),
                "newest first, no duplicates"
            );
            assert!(
                got.iter().all(|p| (p / 10) % 5 == k),
                "only records with the key"
            );
            if let Some(newest) = got.first() {
                // Every older record with the key is visible too.
                assert_eq!(got.len() as i64, newest / 10 / 5 + 1, "key k{k}");
            }
        }
        checks += 1;
    }
    writer.join().expect("writer thread");
    assert_eq!(all(&store, "k0").len(), 400);
    assert_eq!(all(&store, "id1999"), vec![19990]);
}

/// Keys the property test draws from.
const KEYS: [&str; 5] = ["a", "b", "c", "d", "e"];

#[derive(Debug, Clone)]
enum Op {
    Put {
        gap: i64,
        ts: i64,
        keys: Vec<usize>,
    },
    Restart,
    Truncate {
        back: usize,
    },
    DeleteBefore {
        at: usize,
    },
    Query {
        key: usize,
        lo: i64,
        hi: i64,
        max: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1..40i64, 0..100i64, prop::collection::vec(0..KEYS.len(), 0..4))
            .prop_map(|(gap, ts, keys)| Op::Put { gap, ts, keys }),
        1 => Just(Op::Restart),
        1 => (0..8usize).prop_map(|back| Op::Truncate { back }),
        1 => (0..64usize).prop_map(|at| Op::DeleteBefore { at }),
        2 => (0..KEYS.len(), 0..100i64, 0..100i64, 1..6usize)
            .prop_map(|(key, lo, hi, max)| Op::Query { key, lo, hi, max }),
    ]
}

/// The model: every record put and not truncated, in offset order.
#[derive(Default)]
struct Model {
    records: Vec<(i64, i64, BTreeSet<usize>)>,
    next_phys: i64,
    /// Records below this may have been deleted by retention.
    floor: i64,
}

impl Model {
    fn expected(&self, key: usize, lo: i64, hi: i64) -> Vec<i64> {
        self.records
            .iter()
            .rev()
            .filter(|(_, ts, keys)| keys.contains(&key) && (lo..=hi).contains(ts))
            .map(|(phys, _, _)| *phys)
            .collect()
    }

    fn last_with_keys(&self) -> i64 {
        self.records
            .iter()
            .rev()
            .find(|(_, _, keys)| !keys.is_empty())
            .map_or(-1, |(phys, _, _)| *phys)
    }

    fn check_last_indexed(&self, actual: i64) {
        let exact = self.last_with_keys();
        assert!(
            actual == exact || (actual == -1 && exact < self.floor),
            "last_indexed {actual}, model {exact}, floor {}",
            self.floor
        );
    }

    fn check_query(&self, got: &[i64], key: usize, lo: i64, hi: i64, max: usize) {
        let want = self.expected(key, lo, hi);
        assert!(got.windows(2).all(|w| w[0] > w[1]), "newest first: {got:?}");
        assert!(got.len() <= max);
        let present: Vec<i64> = want.iter().copied().filter(|p| *p >= self.floor).collect();
        if present.len() == want.len() {
            let n = want.len().min(max);
            assert_eq!(got, &want[..n], "key {key} [{lo}, {hi}] max {max}");
        } else {
            assert!(
                got.iter().all(|p| want.contains(p)),
                "{got:?} not in {want:?}"
            );
            let n = present.len().min(max);
            assert_eq!(&got[..n], &present[..n], "key {key} [{lo}, {hi}] max {max}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn given_random_operations_when_compared_with_a_model_should_agree(
        ops in prop::collection::vec(op(), 1..80),
        slots in 1..5u32,
        entries in 2..7u32,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cfg(slots, entries);
        let mut store = open(dir.path(), c);
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Put { gap, ts, keys } => {
                    let phys = model.next_phys;
                    model.next_phys += gap;
                    let names: Vec<&str> = keys.iter().map(|k| KEYS[*k]).collect();
                    put(&store, phys, ts, &names);
                    prop_assert_eq!(store.last_indexed(), phys);
                    // A record with more keys than a file holds keeps its first keys.
                    let set: BTreeSet<usize> =
                        keys.into_iter().take(entries as usize).collect();
                    model.records.push((phys, ts, set));
                }
                Op::Restart => {
                    drop(store);
                    store = open(dir.path(), c);
                    model.check_last_indexed(store.last_indexed());
                }
                Op::Truncate { back } => {
                    let n = model.records.len();
                    let end = if back == 0 || n == 0 {
                        model.next_phys
                    } else {
                        model.records[n.saturating_sub(back)].0
                    }
                    .max(model.floor);
                    store.truncate(end).expect("truncate");
                    model.records.retain(|(phys, _, _)| *phys < end);
                    model.next_phys = end;
                    model.check_last_indexed(store.last_indexed());
                }
                Op::DeleteBefore { at } => {
                    if let Some((phys, _, _)) = model.records.get(at) {
                        store.delete_before(*phys).expect("delete before");
                        model.floor = model.floor.max(*phys);
                    }
                }
                Op::Query { key, lo, hi, max } => {
                    let got = store.query(KEYS[key], max, lo, hi).expect("query");
                    model.check_query(&got, key, lo, hi, max);
                }
            }
            for (key, name) in KEYS.iter().enumerate() {
                let got = all(&store, name);
                model.check_query(&got, key, ALL.0, ALL.1, usize::MAX);
            }
        }
    }
}
