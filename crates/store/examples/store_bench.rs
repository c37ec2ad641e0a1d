//! Store benchmark: prints one JSON object with append, read and recovery figures, and the raw
//! bandwidth of the same disk measured in the same run, with the ratios between them.
//!
//! ```text
//! cargo run --release -p comet-store --example store_bench [-- --dir PATH] [--gib N]
//!     [--sync-secs S] [--sync-flushers N]
//! ```
//!
//! Phases (progress on stderr):
//! 1. raw buffered sequential write of the append volume in 1 MiB chunks (no sync);
//! 2. raw write + fdatasync of 1 MiB chunks;
//! 3. ASYNC-flush appends of 1 KiB messages, one appender, with the default 1 GiB segments;
//! 4. consume-queue reads of those messages (32 per call, bodies copied out);
//! 5. recovery: the store is abandoned as a crash would leave it, its checkpoint removed, and
//!    reopened, so recovery verifies every record's CRC and re-dispatches all of them;
//! 6. SYNC-flush appends of 1 KiB messages with 1, 16 and 64 concurrent appenders (group
//!    commit), and 64 appenders appending 16-message batches (1 MiB in flight).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use comet_store::{FlushPolicy, Message, MessageStore, Properties, StoreConfig};
use serde_json::json;

const MIB: f64 = 1024.0 * 1024.0;
const BODY: usize = 1024;

struct Args {
    dir: PathBuf,
    gib: f64,
    sync_secs: f64,
    sync_flushers: Option<usize>,
}

fn args() -> Args {
    let mut a = Args {
        dir: PathBuf::from("target/store-bench"),
        gib: 1.0,
        sync_secs: 3.0,
        sync_flushers: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().unwrap_or_default();
        match flag.as_str() {
            "--dir" => a.dir = PathBuf::from(val),
            "--gib" => a.gib = val.parse().unwrap_or(a.gib),
            "--sync-secs" => a.sync_secs = val.parse().unwrap_or(a.sync_secs),
            "--sync-flushers" => a.sync_flushers = val.parse().ok(),
            other => {
                eprintln!(
                    "unknown flag {other}; flags: --dir PATH --gib N --sync-secs S --sync-flushers N"
                );
                std::process::exit(2);
            }
        }
    }
    a
}

fn message(n: u64, body: &Bytes) -> Message {
    Message {
        topic: "bench".to_owned(),
        queue_id: (n % 8) as i32,
        flags: 0,
        born_timestamp: 1_700_000_000_000,
        born_host: "127.0.0.1:40000".parse().expect("literal address"),
        reconsume_times: 0,
        properties: Properties {
            tag: Some("TagA".to_owned()),
            keys: vec![],
            message_id: format!("{n:032X}"),
            ..Properties::default()
        },
        body: body.clone(),
    }
}

/// Writes back every dirty page of the system, so each phase starts from the same state and
/// no phase pays for an earlier phase's writeback.
fn settle() {
    rustix::fs::sync();
}

fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).expect("create bench dir");
    d
}

fn raw_buffered(root: &Path, bytes: u64) -> f64 {
    let path = root.join("raw-buffered");
    let chunk = vec![0x5Au8; 1 << 20];
    let mut f = File::create(&path).expect("create raw file");
    settle();
    let t = Instant::now();
    let mut written = 0;
    while written < bytes {
        f.write_all(&chunk).expect("raw write");
        written += chunk.len() as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    drop(f);
    let _ = fs::remove_file(&path);
    written as f64 / MIB / secs
}

fn raw_fdatasync(root: &Path, chunk_bytes: usize, max_bytes: u64, max_time: Duration) -> f64 {
    let path = root.join("raw-sync");
    let chunk = vec![0xA5u8; chunk_bytes];
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .expect("create raw file");
    settle();
    let t = Instant::now();
    let mut written = 0;
    while written < max_bytes && t.elapsed() < max_time {
        f.write_all(&chunk).expect("raw write");
        f.sync_data().expect("fdatasync");
        written += chunk.len() as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    drop(f);
    let _ = fs::remove_file(&path);
    written as f64 / MIB / secs
}

fn sync_run(
    root: &Path,
    flushers: Option<usize>,
    appenders: usize,
    batch: usize,
    secs: f64,
    body: &Bytes,
) -> serde_json::Value {
    let dir = fresh_dir(root, &format!("sync-{appenders}-{batch}"));
    let mut cfg = StoreConfig::new(&dir);
    cfg.flush = FlushPolicy::Sync {
        timeout: Duration::from_secs(5),
    };
    if let Some(n) = flushers {
        cfg.sync_flushers = n;
    }
    let sync_flushers = cfg.sync_flushers;
    let store = Arc::new(MessageStore::open(cfg).expect("open sync store"));
    settle();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let cpu0 = cpu_seconds();
    let threads: Vec<_> = (0..appenders)
        .map(|i| {
            let (store, stop, count, bytes) = (
                Arc::clone(&store),
                Arc::clone(&stop),
                Arc::clone(&count),
                Arc::clone(&bytes),
            );
            let body = body.clone();
            std::thread::spawn(move || {
                let mut n = i as u64;
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let msgs: Vec<Message> = (0..batch)
                        .map(|k| message(n * batch as u64 + k as u64, &body))
                        .collect();
                    let s = Instant::now();
                    let rs = store.append_batch(&msgs).expect("sync append");
                    lat.push(s.elapsed());
                    count.fetch_add(rs.len() as u64, Ordering::Relaxed);
                    bytes.fetch_add(
                        rs.iter().map(|r| u64::from(r.size)).sum(),
                        Ordering::Relaxed,
                    );
                    n += appenders as u64;
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<Duration> = threads
        .into_iter()
        .flat_map(|h| h.join().expect("appender"))
        .collect();
    let elapsed = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let stats = store.stats();
    let n = count.load(Ordering::Relaxed) as f64;
    let mb = bytes.load(Ordering::Relaxed) as f64 / MIB;
    drop(store);
    let _ = fs::remove_dir_all(&dir);
    json!({
        "appenders": appenders,
        "messages_per_append": batch,
        "sync_flushers": sync_flushers,
        "msgs_per_sec": (n / elapsed).round(),
        "log_mb_per_sec": round2(mb / elapsed),
        "append_latency_ms": {"p50": round3(pct(0.5)), "p99": round3(pct(0.99))},
        "flushes": stats.flushes,
        "avg_group_size": round2(n / stats.flushes.max(1) as f64),
        "cpu_cores_busy": round2(cpu / elapsed),
        "avg_flush_ms": round3(stats.flush_time.as_secs_f64() * 1000.0 / stats.flushes.max(1) as f64),
    })
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat`; zero where
/// that is unavailable.
fn cpu_seconds() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the ')'.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn machine() -> serde_json::Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "kernel": kernel.trim(),
    })
}

fn main() {
    let a = args();
    fs::create_dir_all(&a.dir).expect("create bench root");
    let root = a.dir.canonicalize().expect("bench root");
    let volume = (a.gib * 1024.0 * MIB) as u64;
    let body = Bytes::from(vec![0x42u8; BODY]);

    eprintln!(
        "[1/6] raw buffered write of {:.0} MiB ...",
        volume as f64 / MIB
    );
    let raw_buf = raw_buffered(&root, volume);
    eprintln!("[2/6] raw write+fdatasync in 1 MiB and in 64 KiB chunks ...");
    let raw_sync = raw_fdatasync(&root, 1 << 20, 512 << 20, Duration::from_secs(3));
    let raw_sync_64k = raw_fdatasync(&root, 64 << 10, 512 << 20, Duration::from_secs(3));

    eprintln!("[3/6] ASYNC appends of 1 KiB messages ...");
    let dir = fresh_dir(&root, "async");
    let store = MessageStore::open(StoreConfig::new(&dir)).expect("open async store");
    settle();
    let t = Instant::now();
    let mut n = 0u64;
    let mut log_bytes = 0u64;
    let mut last_end = 0;
    while log_bytes < volume {
        let r = store.append(&message(n, &body)).expect("async append");
        log_bytes += u64::from(r.size);
        last_end = r.physical_offset + i64::from(r.size);
        n += 1;
    }
    let async_secs = t.elapsed().as_secs_f64();
    let async_msgs = n;
    store.wait_dispatched(last_end, Duration::from_secs(60));

    eprintln!("[4/6] consume-queue reads ...");
    let t = Instant::now();
    let mut read = 0u64;
    for q in 0..8 {
        let mut from = 0;
        loop {
            let got = store
                .get_messages("bench", q, from, 32, |_| true)
                .expect("read queue");
            if got.messages.is_empty() {
                break;
            }
            read += got.messages.len() as u64;
            from = got.next_offset;
        }
    }
    let read_secs = t.elapsed().as_secs_f64();
    assert_eq!(read, async_msgs, "every appended message must be read back");

    eprintln!("[5/6] recovery of the whole log (crash, no checkpoint) ...");
    store.flush().expect("flush before crash");
    store.abandon();
    fs::remove_file(dir.join("checkpoint")).expect("remove checkpoint");
    settle();
    let t = Instant::now();
    let store = MessageStore::open(StoreConfig::new(&dir)).expect("recover");
    let recovery_secs = t.elapsed().as_secs_f64();
    let rep = store.recovery_report();
    assert_eq!(
        rep.records_verified, async_msgs,
        "recovery must verify every record"
    );
    drop(store);
    let _ = fs::remove_dir_all(&dir);

    eprintln!("[6/6] SYNC appends with 1, 16 and 64 appenders ...");
    let sync: Vec<serde_json::Value> = [1, 16, 64]
        .iter()
        .map(|k| sync_run(&root, a.sync_flushers, *k, 1, a.sync_secs, &body))
        .collect();
    // The same 64 appenders, each appending 16 messages per call: 1 MiB in flight, the size
    // of the raw baseline's chunks. Shows the group commit itself is not the limit.
    let sync_batched = sync_run(&root, a.sync_flushers, 64, 16, a.sync_secs, &body);

    let async_mb = log_bytes as f64 / MIB / async_secs;
    let sync64_mb = sync[2]["log_mb_per_sec"].as_f64().unwrap_or(0.0);
    let recovered_gib = rep.valid_end as f64 / (1024.0 * MIB);
    let report = json!({
        "machine": machine(),
        "dir": root.display().to_string(),
        "message_body_bytes": BODY,
        "raw": {
            "buffered_write_mb_per_sec": round2(raw_buf),
            "fdatasync_1mib_mb_per_sec": round2(raw_sync),
            "fdatasync_64kib_mb_per_sec": round2(raw_sync_64k),
        },
        "async_append": {
            "messages": async_msgs,
            "msgs_per_sec": (async_msgs as f64 / async_secs).round(),
            "log_mb_per_sec": round2(async_mb),
            "payload_mb_per_sec": round2(async_msgs as f64 * BODY as f64 / MIB / async_secs),
        },
        "sync_append": sync,
        "sync_append_64x16_batches": sync_batched,
        "consume_queue_read": {
            "messages": read,
            "msgs_per_sec": (read as f64 / read_secs).round(),
        },
        "recovery": {
            "log_gib": round3(recovered_gib),
            "records_verified": rep.records_verified,
            "records_redispatched": rep.redispatched,
            "seconds": round3(recovery_secs),
            "verify_seconds": round3(rep.scan_duration.as_secs_f64()),
            "redispatch_seconds": round3(rep.redispatch_duration.as_secs_f64()),
        },
        "ratios": {
            "async_append_vs_raw_buffered": round3(async_mb / raw_buf),
            "sync64_append_vs_raw_fdatasync": round3(sync64_mb / raw_sync),
            "sync64_append_vs_raw_fdatasync_64kib": round3(sync64_mb / raw_sync_64k),
            "sync64_batched16_vs_raw_fdatasync": round3(
                sync_batched["log_mb_per_sec"].as_f64().unwrap_or(0.0) / raw_sync
            ),
        },
        "targets": {
            "async_append_vs_raw_buffered_min": 0.8,
            "sync64_append_vs_raw_fdatasync_min": 0.5,
            "recovery_seconds_per_gib_max": 3.0,
            "met": async_mb / raw_buf >= 0.8
                && sync64_mb / raw_sync >= 0.5
                && recovery_secs / recovered_gib.max(1e-9) < 3.0,
        },
    });
    let _ = fs::remove_dir_all(&root);
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
}
