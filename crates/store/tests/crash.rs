//! Crash test: a child process appends with SYNC flush from several threads and reports each
//! acknowledged append on stdout; the parent SIGKILLs it at a random moment (during open, or
//! while appends are in flight), reopens the store, and checks that every acknowledged record
//! is intact and readable, that queue offsets are dense, and that every consume-queue entry
//! leads to a valid record. Repeated many times on the same data directory.
//!
//! The ack contract under test (SYNC): once `append` returns Ok, the record survives any crash.
//!
//! Environment: `COMET_CRASH_ROUNDS` (default 40), `COMET_CRASH_SEED` (default: random, printed).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use comet_store::{FlushPolicy, MessageStore, StoreConfig};
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "COMET_CRASH_CHILD_DIR";
const START_ENV: &str = "COMET_CRASH_CHILD_START";
const THREADS: u64 = 4;
const QUEUES: i32 = 4;
/// Longest wait for the next acknowledgement before the round is declared hung.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

fn config(dir: &Path) -> StoreConfig {
    let mut c = common::small_config(dir);
    c.segment_size = 256 * 1024;
    c.flush = FlushPolicy::Sync {
        timeout: Duration::from_secs(10),
    };
    c.checkpoint_interval = Duration::from_millis(5);
    // A nearly full developer or CI disk must not refuse the child's appends.
    c.retention.disk_high_watermark = 0.995;
    c.retention.disk_refuse_watermark = 0.999;
    c
}

fn body_len(n: u64) -> usize {
    (n.wrapping_mul(2_654_435_761) % 3000) as usize
}

/// The child: append forever, print `ack <n> <phys> <queue_offset>` after each success.
fn child(dir: &Path, start: u64) -> ! {
    let store = Arc::new(MessageStore::open(config(dir)).expect("child open"));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            let out = Arc::clone(&out);
            std::thread::spawn(move || {
                let mut n = start + t;
                loop {
                    let m = common::msg("crash", (n % QUEUES as u64) as i32, n, body_len(n));
                    let r = store.append(&m).expect("child append");
                    let mut o = out.lock().expect("stdout");
                    writeln!(o, "ack {n} {} {}", r.physical_offset, r.queue_offset).expect("write");
                    o.flush().expect("flush");
                    n += THREADS;
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    std::process::exit(0)
}

#[derive(Debug, Clone, Copy)]
struct Ack {
    n: u64,
    phys: i64,
    queue_offset: i64,
}

/// Runs one child and SIGKILLs it once it has acknowledged `kill_after_acks` appends (0 kills it
/// while it may still be opening the store). Returns every ack it printed, including those
/// still in the pipe at the kill.
fn run_round(exe: &Path, dir: &Path, start: u64, kill_after_acks: usize) -> Vec<Ack> {
    let mut child = Command::new(exe)
        .env(CHILD_ENV, dir)
        .env(START_ENV, start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let ["ack", n, phys, q] = parts.as_slice() {
                let ack = Ack {
                    n: n.parse().expect("n"),
                    phys: phys.parse().expect("phys"),
                    queue_offset: q.parse().expect("q"),
                };
                if tx.send(ack).is_err() {
                    break;
                }
            }
        }
    });
    let mut acks = Vec::new();
    while acks.len() < kill_after_acks {
        match rx.recv_timeout(ACK_TIMEOUT) {
            Ok(a) => acks.push(a),
            Err(e) => panic!("child stopped acknowledging after {} acks: {e}", acks.len()),
        }
    }
    child.kill().expect("SIGKILL child");
    child.wait().expect("reap child");
    reader.join().expect("reader");
    acks.extend(rx.try_iter());
    acks
}

fn verify(dir: &Path, acked: &BTreeMap<u64, Ack>) -> (usize, u64) {
    let store = MessageStore::open(config(dir)).expect("parent open after crash");
    for (n, a) in acked {
        let got = store
            .read(a.phys)
            .unwrap_or_else(|e| panic!("acknowledged message {n} at {} lost: {e}", a.phys));
        let want = common::msg("crash", (n % QUEUES as u64) as i32, *n, body_len(*n));
        assert_eq!(got.message, want, "acknowledged message {n} differs");
        assert_eq!(
            got.queue_offset, a.queue_offset,
            "message {n} moved in its queue"
        );
    }
    let mut entries = 0;
    for q in 0..QUEUES {
        let max = store.max_offset("crash", q);
        let got = store
            .get_messages("crash", q, 0, usize::MAX, |_| true)
            .expect("every queue entry leads to a valid record");
        let offsets: Vec<i64> = got.messages.iter().map(|m| m.queue_offset).collect();
        assert_eq!(
            offsets,
            (0..max).collect::<Vec<_>>(),
            "queue {q} offsets dense"
        );
        entries += got.messages.len();
    }
    let redispatched = store.recovery_report().redispatched;
    store.close().expect("close");
    (entries, redispatched)
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let start = std::env::var(START_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        child(Path::new(&dir), start);
    }
    let rounds: usize = std::env::var("COMET_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let seed: u64 = std::env::var("COMET_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("\nrunning 1 test\ncrash test: {rounds} rounds, seed {seed} (COMET_CRASH_SEED)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let exe = std::env::current_exe().expect("current exe");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked: BTreeMap<u64, Ack> = BTreeMap::new();
    let mut next_start = 0u64;
    let started = Instant::now();
    let mut per_queue_seen: HashMap<i32, i64> = HashMap::new();
    for round in 0..rounds {
        // A quarter of the rounds kill at once (during open), the rest after up to 400 acks.
        let kill_after = if rng.random_bool(0.25) {
            0
        } else {
            rng.random_range(1..400)
        };
        let acks = run_round(&exe, dir.path(), next_start, kill_after);
        for a in &acks {
            acked.insert(a.n, *a);
            let q = (a.n % QUEUES as u64) as i32;
            let e = per_queue_seen.entry(q).or_insert(-1);
            *e = (*e).max(a.queue_offset);
        }
        // Past anything a thread may have had in flight (one append each) when killed.
        next_start = acked
            .keys()
            .next_back()
            .map_or(next_start, |n| n + THREADS * 4 + 1);
        let (entries, redispatched) = verify(dir.path(), &acked);
        assert!(
            entries >= acked.len(),
            "fewer queue entries than acknowledged messages"
        );
        println!(
            "round {round:>3}: killed after {kill_after:>3} acks, {:>4} acks this round, \
             {:>6} acked in total, {entries} in queues, {redispatched} re-dispatched on recovery",
            acks.len(),
            acked.len()
        );
    }
    println!(
        "crash test: {} acknowledged messages verified over {rounds} SIGKILLs in {:.1}s",
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "test crash_recovery ... ok\n\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out"
    );
}
