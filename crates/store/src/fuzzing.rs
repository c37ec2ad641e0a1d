//! Fuzz entry points for every decoder of bytes the store reads from disk or a master.
//!
//! Built for the unit tests and behind the `fuzzing` feature (the `fuzz/` crate at the
//! repository root enables it); not part of the store's API. Each target takes arbitrary bytes
//! and panics only on a real bug: a decoder that panics, or a decoded value that does not
//! survive re-encoding. Checksums are recomputed by the targets before decoding (besides
//! decoding the bytes as they came), so the fuzzer reaches the structure behind them.
//! [`TARGETS`] lists every target with seed inputs made by the real encoders.
//!
//! Layout of the structured inputs (little-endian):
//! - `replica_chunk`: `at u64 | segment selector u32 | chunk bytes`.
//! - `epoch`: `local_end u64 | remote_end u64 | split u16 | history bytes`; the history bytes
//!   are decoded as a whole epoch file and, split at `split`, as two histories for
//!   [`crate::consistent_point`].
//! - `timer_log`: `mode u8 | at u32 | bytes`, applied to the files of a real timer store (see
//!   [`timer_log`]) before it is opened and recovered.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::checkpoint::Checkpoint;
use crate::commit_log::verify_raw_chunk;
use crate::epoch::{self, EpochEntry};
use crate::index_file::{self, Entry};
use crate::record::{self, Assigned, Message, Properties, RecordView};
use crate::timer::record::{FLAG_ROLLED, NONE, RECORD_SIZE, Record};
use crate::timer::{TimerConfig, TimerPayload, TimerStore};

/// One fuzz target: a name (the `fuzz/` binary and corpus directory), the function under
/// test and seed inputs made by the encoders.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Target name.
    pub name: &'static str,
    /// Runs one input; panics only on a bug.
    pub run: fn(&[u8]),
    /// Valid encoded inputs to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every store target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "commitlog_record",
        run: commitlog_record,
        seeds: commitlog_record_seeds,
    },
    Target {
        name: "replica_chunk",
        run: replica_chunk,
        seeds: replica_chunk_seeds,
    },
    Target {
        name: "epoch",
        run: epoch,
        seeds: epoch_seeds,
    },
    Target {
        name: "checkpoint",
        run: checkpoint,
        seeds: checkpoint_seeds,
    },
    Target {
        name: "timer_record",
        run: timer_record,
        seeds: timer_record_seeds,
    },
    Target {
        name: "index_entry",
        run: index_entry,
        seeds: index_entry_seeds,
    },
    Target {
        name: "timer_log",
        run: timer_log,
        seeds: timer_log_seeds,
    },
];

/// Segment sizes the `replica_chunk` target picks from: the smallest allowed, a few in
/// between, the default.
const SEGMENT_SIZES: [usize; 4] = [4096, 64 << 10, 1 << 20, 1 << 30];

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

/// A copy of `data` with its CRC32C at `crc_at` recomputed over `range` (when long enough).
fn with_crc(data: &[u8], crc_at: usize, range: std::ops::Range<usize>) -> Vec<u8> {
    let mut b = data.to_vec();
    if b.len() >= range.end.max(crc_at + 4) && range.start <= range.end {
        let crc = crc32c::crc32c(&b[range]);
        b[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    }
    b
}

fn sample_message(body: &[u8], extra_props: bool) -> Message {
    let mut user = BTreeMap::new();
    let mut system = BTreeMap::new();
    if extra_props {
        user.insert("region".to_owned(), "eu".to_owned());
        user.insert("price".to_owned(), "10.5".to_owned());
        system.insert("__DELAY_AT".to_owned(), "1700000000000".to_owned());
    }
    Message {
        topic: "orders".into(),
        queue_id: 3,
        flags: 9,
        born_timestamp: 1_700_000_000_000,
        born_host: SocketAddr::from(([10, 1, 2, 3], 4567)),
        reconsume_times: 2,
        properties: Properties {
            tag: extra_props.then(|| "TagA".to_owned()),
            keys: if extra_props {
                vec!["k1".into(), "k2".into()]
            } else {
                Vec::new()
            },
            message_id: "01ABCDEF".into(),
            system,
            user,
        },
        body: Bytes::copy_from_slice(body),
    }
}

fn store_host() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 10911))
}

fn encode_record(
    msg: &Message,
    physical_offset: i64,
    queue_offset: i64,
    batch_left: u32,
) -> Vec<u8> {
    let mut buf = vec![0u8; record::encoded_len(msg)];
    let a = Assigned {
        queue_offset,
        physical_offset,
        store_timestamp: 1_700_000_000_123,
        batch_left,
    };
    record::encode(&mut buf, msg, a, &store_host());
    buf
}

/// Commitlog record: parse as found, then with length, offset and CRC made consistent; a
/// record that parses must copy out, and its message must encode to a record that parses
/// back to the same message.
pub fn commitlog_record(data: &[u8]) {
    let phys = u64_at(data, 32) as i64;
    let _ = RecordView::parse(data, phys);
    let mut b = data.to_vec();
    if b.len() >= 12 {
        let len = b.len() as u32;
        b[0..4].copy_from_slice(&len.to_le_bytes());
    }
    let b = with_crc(&b, 8, 12..data.len());
    let Ok(view) = RecordView::parse(&b, phys) else {
        return;
    };
    let _ = view.index_fields();
    let stored = view.to_stored();
    assert_eq!(stored.size as usize, b.len());
    let again = encode_record(
        &stored.message,
        phys,
        stored.queue_offset,
        view.batch_left(),
    );
    let reparsed = RecordView::parse(&again, phys)
        .expect("a re-encoded record parses")
        .to_stored();
    assert_eq!(reparsed.message, stored.message, "record round trip");
}

/// Seeds of [`commitlog_record`].
pub fn commitlog_record_seeds() -> Vec<Vec<u8>> {
    vec![
        encode_record(&sample_message(b"hello", false), 0, 0, 0),
        encode_record(&sample_message(b"hello world", true), 4096, 42, 0),
        encode_record(&sample_message(&[0u8; 300], true), 1 << 20, 7, 2),
    ]
}

/// Replica chunk (the bytes of a replication frame): verified as a replica would before
/// writing anything; an accepted chunk's record count must match what it holds.
pub fn replica_chunk(data: &[u8]) {
    let at = (u64_at(data, 0) & (i64::MAX as u64)) as i64;
    let seg = SEGMENT_SIZES[u32_at(data, 8) as usize % SEGMENT_SIZES.len()];
    check_replica_chunk(at, seg, data.get(12..).unwrap_or_default());
}

/// Verifies `chunk` as a replica would before writing it at `at` (segments of `segment_size`
/// bytes) and checks what an accepted chunk reports; returns whether it was accepted.
pub fn check_replica_chunk(at: i64, segment_size: usize, chunk: &[u8]) -> bool {
    match verify_raw_chunk(at, segment_size, chunk) {
        Ok(v) => {
            assert_eq!(v.records as usize, v.next_offsets.len());
            assert!(v.records == 0 || v.last_ts.is_some());
            true
        }
        Err(_) => false,
    }
}

/// Seeds of [`replica_chunk`].
pub fn replica_chunk_seeds() -> Vec<Vec<u8>> {
    let head = |at: u64, sel: u32| {
        let mut b = at.to_le_bytes().to_vec();
        b.extend_from_slice(&sel.to_le_bytes());
        b
    };
    let mut seeds = Vec::new();
    // A batch of three records at offset 8192 of a 64 KiB segment.
    let mut s = head(8192, 1);
    let mut phys = 8192i64;
    for (i, left) in [2u32, 1, 0].into_iter().enumerate() {
        let r = encode_record(&sample_message(b"batched", i == 1), phys, i as i64, left);
        phys += r.len() as i64;
        s.extend_from_slice(&r);
    }
    seeds.push(s);
    // One record, then the blank marker that closes a 4 KiB segment.
    let mut s = head(0, 0);
    let r = encode_record(&sample_message(b"last", true), 0, 0, 0);
    let rest = 4096 - r.len();
    s.extend_from_slice(&r);
    let mut blank = [0u8; 8];
    record::encode_blank(&mut blank, rest);
    s.extend_from_slice(&blank);
    seeds.push(s);
    seeds
}

fn history(b: &[u8]) -> Vec<EpochEntry> {
    b.chunks_exact(16)
        .map(|c| EpochEntry {
            epoch: u64_at(c, 0),
            start_offset: u64_at(c, 8) as i64,
        })
        .collect()
}

/// Epoch file and the replication handshake's consistent point: the file decodes (as found
/// and with its CRC made valid) to a history that encodes back to the same bytes; any two
/// histories give a consistent point no later than either log end.
pub fn epoch(data: &[u8]) {
    let local_end = (u64_at(data, 0) & (i64::MAX as u64)) as i64;
    let remote_end = (u64_at(data, 8) & (i64::MAX as u64)) as i64;
    let split = u32_at(data, 16) as usize & 0xFFFF;
    let body = data.get(18..).unwrap_or_default();
    let _ = epoch::decode(body);
    let fixed = with_crc(
        body,
        body.len().saturating_sub(4),
        0..body.len().saturating_sub(4),
    );
    if let Some(entries) = epoch::decode(&fixed) {
        assert_eq!(epoch::encode(&entries), fixed, "epoch file round trip");
    }
    let (l, r) = body.split_at(split.min(body.len()));
    let (local, remote) = (history(l), history(r));
    if let Some(p) = epoch::consistent_point(&local, local_end, &remote, remote_end) {
        assert!(
            p <= local_end && p <= remote_end,
            "consistent point past a log end"
        );
    }
}

/// Seeds of [`epoch`].
pub fn epoch_seeds() -> Vec<Vec<u8>> {
    let entries = [(1u64, 0i64), (3, 4096), (5, 9000)].map(|(epoch, start_offset)| EpochEntry {
        epoch,
        start_offset,
    });
    let file = epoch::encode(&entries);
    let mut s = 12_000u64.to_le_bytes().to_vec();
    s.extend_from_slice(&10_000u64.to_le_bytes());
    s.extend_from_slice(&(8u16 + 32).to_le_bytes());
    s.extend_from_slice(&file);
    vec![s]
}

/// Checkpoint file: decodes as found and with a valid CRC; what decodes encodes back.
pub fn checkpoint(data: &[u8]) {
    let _ = Checkpoint::decode(data);
    let fixed = with_crc(data, 32, 0..32);
    if let Some(c) = Checkpoint::decode(&fixed) {
        assert_eq!(
            c.encode().as_slice(),
            fixed.as_slice(),
            "checkpoint round trip"
        );
    }
}

/// Seeds of [`checkpoint`].
pub fn checkpoint_seeds() -> Vec<Vec<u8>> {
    let c = Checkpoint {
        commitlog_flushed: 1 << 30,
        dispatched: (1 << 30) - 512,
        written_at_ms: 1_700_000_000_000,
    };
    vec![c.encode().to_vec()]
}

/// Timer log record: decodes as found and with a valid CRC; what decodes encodes back.
pub fn timer_record(data: &[u8]) {
    let _ = Record::decode(data);
    let fixed = with_crc(data, RECORD_SIZE - 4, 0..RECORD_SIZE - 4);
    if let Some(r) = Record::decode(&fixed) {
        assert_eq!(
            r.encode().as_slice(),
            fixed.as_slice(),
            "timer record round trip"
        );
        let _ = r.identity(0);
    }
}

/// Seeds of [`timer_record`].
pub fn timer_record_seeds() -> Vec<Vec<u8>> {
    let r = Record {
        flags: FLAG_ROLLED,
        deliver_at_ms: 1_700_000_000_123,
        period: 1_700_000_000,
        prev: 4096,
        origin: NONE,
        payload: TimerPayload {
            commit_log_offset: 987_654_321,
            size: 4321,
            cookie: 77,
        },
    };
    vec![r.encode().to_vec()]
}

/// Index file entry (first 4 bytes: the entry's index, covered by its CRC) and seal word:
/// decodes as found and with a valid CRC; what decodes encodes back.
pub fn index_entry(data: &[u8]) {
    let idx = u32_at(data, 0);
    let body = data.get(4..).unwrap_or_default();
    let _ = index_file::decode_seal(u64_at(data, 0), u32_at(data, 8));
    let _ = Entry::decode(body, idx);
    let mut fixed = body.to_vec();
    if fixed.len() >= 32 {
        let crc = index_file::entry_crc(idx, &fixed[..28]);
        fixed[28..32].copy_from_slice(&crc.to_le_bytes());
    }
    if let Some(e) = Entry::decode(&fixed, idx) {
        assert_eq!(
            e.encode(idx).as_slice(),
            fixed.as_slice(),
            "index entry round trip"
        );
    }
}

/// Seeds of [`index_entry`].
pub fn index_entry_seeds() -> Vec<Vec<u8>> {
    let mut s = 5u32.to_le_bytes().to_vec();
    let e = Entry {
        hash: 0xDEAD_BEEF,
        phys: 1 << 20,
        ts: 1_700_000_000_000,
        prev: 3,
        last_of_record: true,
    };
    s.extend_from_slice(&e.encode(5));
    vec![s]
}

/// The wall clock of the `timer_log` target's stores (a slot boundary).
const TIMER_T0: i64 = 1_700_000_000_000;

/// A small timer store: 8 one-second slots (a 4 s filing horizon), one 4 KiB log segment.
fn timer_config() -> TimerConfig {
    TimerConfig {
        slot_ms: 1000,
        wheel_slots: 8,
        log_segment_size: 4096,
        max_delay_ms: 365 * 24 * 3600 * 1000,
    }
}

/// The files of the timer store the `timer_log` target starts from: timers due soon, later
/// and beyond the horizon, one delivered and committed, the last three scheduled after the
/// last flush (an unflushed tail). `(wheel file, first log segment)`.
fn timer_files() -> &'static (Vec<u8>, Vec<u8>) {
    static FILES: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        let dir = scratch_dir("timer-template");
        let store =
            TimerStore::open(&dir, timer_config(), TIMER_T0).expect("a new timer store opens");
        let payload = |cookie: u64| TimerPayload {
            commit_log_offset: cookie as i64 * 512,
            size: 200,
            cookie,
        };
        for (cookie, delay) in [(1u64, 500i64), (2, 2_500), (3, 9_000), (4, 60_000)] {
            store
                .schedule(TIMER_T0 + delay, payload(cookie), TIMER_T0)
                .expect("schedule");
        }
        for e in store.poll_due(TIMER_T0 + 600, 16).expect("poll") {
            store.commit(&e).expect("commit");
        }
        store.flush().expect("flush");
        for (cookie, delay) in [(5u64, 1_200i64), (6, 3_000), (7, 30_000)] {
            store
                .schedule(TIMER_T0 + 700 + delay, payload(cookie), TIMER_T0 + 700)
                .expect("schedule");
        }
        drop(store);
        let files = (
            std::fs::read(dir.join("wheel")).expect("read the wheel file"),
            std::fs::read(timer_segment(&dir)).expect("read the log segment"),
        );
        let _ = std::fs::remove_dir_all(&dir);
        files
    })
}

fn timer_segment(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("log").join(format!("{:020}", 0))
}

/// A directory of this process and thread for one target's files (in memory where the
/// system offers it: the store syncs its files on every open).
fn scratch_dir(what: &str) -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    let dir = base.join(format!("comet-fuzz-{what}-{}-{thread}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("log")).expect("create the scratch directory");
    dir
}

/// Timer store open and recovery over damaged files: the files of a real store
/// ([`timer_files`]) with the input applied — `mode` bit 0 picks the file (log segment or
/// wheel), bit 1 whether `bytes` overwrite it at `at` (its length kept) or replace it whole —
/// then the store opens. An open may fail; one that succeeds must serve (poll, commit, flush)
/// and, being flushed, open again.
pub fn timer_log(data: &[u8]) {
    let _ = recover_timer_log(data);
}

/// [`timer_log`]; returns the cookies of the timers the recovered store delivered (sorted), if
/// it opened.
fn recover_timer_log(data: &[u8]) -> Option<Vec<u64>> {
    let (wheel, segment) = timer_files();
    let mode = data.first().copied().unwrap_or(0);
    let at = u32_at(data, 1) as usize;
    let bytes = data.get(5..).unwrap_or_default();
    let mut files = [wheel.clone(), segment.clone()];
    let target = &mut files[usize::from(mode & 1 == 0)];
    if mode & 2 == 0 {
        let len = target.len();
        let start = at % len.max(1);
        let n = bytes.len().min(len - start);
        target[start..start + n].copy_from_slice(&bytes[..n]);
    } else {
        *target = bytes.to_vec();
    }
    let dir = scratch_dir("timer-log");
    std::fs::write(dir.join("wheel"), &files[0]).expect("write the wheel file");
    std::fs::write(timer_segment(&dir), &files[1]).expect("write the log segment");
    let now = TIMER_T0 + 1_000;
    let mut delivered = None;
    if let Ok(store) = TimerStore::open(&dir, timer_config(), now) {
        let _ = store.pending();
        let _ = store.next_due_ms();
        // The clock moves on a filing horizon at a time, past the last timer's due time.
        let mut cookies = Vec::new();
        for t in (now..=now + 64_000).step_by(4_000) {
            let Ok(due) = store.poll_due(t, 64) else {
                break;
            };
            for e in &due {
                store.commit(e).expect("committing a polled timer");
                cookies.push(e.payload.cookie);
            }
        }
        cookies.sort_unstable();
        delivered = Some(cookies);
        store.flush().expect("flushing a recovered store");
        drop(store);
        TimerStore::open(&dir, timer_config(), now + 64_000)
            .expect("a recovered and flushed timer store opens again");
    }
    let _ = std::fs::remove_dir_all(&dir);
    delivered
}

/// Seeds of [`timer_log`]: the files untouched, a torn record in the unflushed tail, a
/// damaged checkpoint area of the wheel, and a log cut short.
pub fn timer_log_seeds() -> Vec<Vec<u8>> {
    let seed = |mode: u8, at: u32, bytes: &[u8]| {
        let mut s = vec![mode];
        s.extend_from_slice(&at.to_le_bytes());
        s.extend_from_slice(bytes);
        s
    };
    let (_, segment) = timer_files();
    let rec = RECORD_SIZE as u32;
    vec![
        seed(0, 0, &[]),
        seed(0, rec * 6 + 9, &[0xFF, 0x00, 0x7F]),
        seed(1, 40, &[0xA5; 24]),
        seed(2, 0, &segment[..RECORD_SIZE * 5 + 17]),
    ]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Runs every target on its seeds and on every file under
    /// `tests/fuzz_regressions/<target>/` (inputs that once found a bug).
    #[test]
    fn given_seeds_and_fuzz_regressions_when_decoded_should_not_panic() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
        for t in TARGETS {
            let seeds = (t.seeds)();
            assert!(!seeds.is_empty(), "{} has seeds", t.name);
            for s in &seeds {
                (t.run)(s);
            }
            if let Ok(dir) = std::fs::read_dir(root.join(t.name)) {
                for f in dir.flatten() {
                    let data = std::fs::read(f.path()).expect("regression input is readable");
                    (t.run)(&data);
                }
            }
        }
    }

    #[test]
    fn given_intact_or_torn_timer_files_when_recovered_should_keep_the_pending_timers() {
        let seeds = timer_log_seeds();
        // Seven scheduled, the first delivered: the other six, the unflushed three included.
        assert_eq!(recover_timer_log(&seeds[0]), Some(vec![2, 3, 4, 5, 6, 7]));
        // A torn record in the unflushed tail (the last timer's, never flushed: what a power
        // loss may take) is skipped; the others stay.
        assert_eq!(recover_timer_log(&seeds[1]), Some(vec![2, 3, 4, 5, 6]));
    }

    #[test]
    fn given_seeds_when_decoded_should_be_accepted() {
        for s in commitlog_record_seeds() {
            let phys = u64_at(&s, 32) as i64;
            assert!(RecordView::parse(&s, phys).is_ok());
        }
        for s in replica_chunk_seeds() {
            let at = u64_at(&s, 0) as i64;
            let seg = SEGMENT_SIZES[u32_at(&s, 8) as usize % SEGMENT_SIZES.len()];
            assert!(verify_raw_chunk(at, seg, &s[12..]).is_ok());
        }
        for s in epoch_seeds() {
            assert!(epoch::decode(&s[18..]).is_some());
        }
        assert!(
            checkpoint_seeds()
                .iter()
                .all(|s| Checkpoint::decode(s).is_some())
        );
        assert!(
            timer_record_seeds()
                .iter()
                .all(|s| Record::decode(s).is_some())
        );
        for s in index_entry_seeds() {
            assert!(Entry::decode(&s[4..], 5).is_some());
        }
    }

    fn arb_map() -> impl Strategy<Value = BTreeMap<String, String>> {
        proptest::collection::btree_map("[a-zA-Z_]{1,12}", "\\PC{0,24}", 0..4)
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        (
            "[a-zA-Z0-9_%|-]{1,127}",
            0..=crate::record::MAX_QUEUE_ID,
            any::<u32>(),
            any::<i64>(),
            any::<u32>(),
            (
                proptest::option::of("\\PC{1,16}"),
                proptest::collection::vec("\\PC{0,16}", 0..4),
                "\\PC{0,32}",
            ),
            (arb_map(), arb_map()),
            proptest::collection::vec(any::<u8>(), 0..512),
        )
            .prop_map(
                |(
                    topic,
                    queue_id,
                    flags,
                    born_timestamp,
                    reconsume_times,
                    (tag, keys, message_id),
                    (system, user),
                    body,
                )| Message {
                    topic,
                    queue_id,
                    flags,
                    born_timestamp,
                    born_host: SocketAddr::from(([10, 0, 0, 1], 9)),
                    reconsume_times,
                    properties: Properties {
                        tag,
                        keys,
                        message_id,
                        system,
                        user,
                    },
                    body: Bytes::from(body),
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn given_any_message_when_encoded_should_parse_back_to_the_same_message(
            msg in arb_message(),
            phys in 0i64..(1 << 50),
            queue_offset in 0i64..(1 << 40),
        ) {
            let b = encode_record(&msg, phys, queue_offset, 0);
            let stored = RecordView::parse(&b, phys).expect("an encoded record parses").to_stored();
            prop_assert_eq!(stored.message, msg);
            prop_assert_eq!(stored.queue_offset, queue_offset);
            prop_assert_eq!(stored.size as usize, b.len());
        }

        #[test]
        fn given_any_epoch_history_checkpoint_or_timer_record_when_encoded_should_decode_to_it(
            steps in proptest::collection::vec((1u64..1000, 0i64..(1 << 30)), 0..16),
            c in (any::<i64>(), any::<i64>(), any::<i64>()),
            t in (any::<i64>(), any::<i64>(), -1i64..i64::MAX, -1i64..i64::MAX, any::<i64>(), any::<u64>(), any::<i32>()),
        ) {
            let (mut epoch_no, mut start) = (0u64, 0i64);
            let entries: Vec<EpochEntry> = steps
                .iter()
                .map(|&(de, ds)| {
                    epoch_no += de;
                    start += ds;
                    EpochEntry { epoch: epoch_no, start_offset: start }
                })
                .collect();
            prop_assert_eq!(epoch::decode(&epoch::encode(&entries)), Some(entries));
            let cp = Checkpoint { commitlog_flushed: c.0, dispatched: c.1, written_at_ms: c.2 };
            prop_assert_eq!(Checkpoint::decode(&cp.encode()), Some(cp));
            let r = Record {
                flags: FLAG_ROLLED,
                deliver_at_ms: t.0,
                period: t.1,
                prev: t.2,
                origin: t.3,
                payload: TimerPayload { commit_log_offset: t.4, cookie: t.5, size: t.6 },
            };
            prop_assert_eq!(Record::decode(&r.encode()), Some(r));
        }
    }
}
