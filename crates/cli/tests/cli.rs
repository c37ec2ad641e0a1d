//! End-to-end tests of the `comet` binary: each test builds a real store in a temp directory
//! with `comet_store`, closes it, then runs `comet store ...` as a separate process and checks
//! its JSON on stdout, its stderr and its exit status.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use comet_store::{Message, MessageStore, Properties, StoreConfig};
use serde_json::Value;

const SEGMENT_SIZE: usize = 64 * 1024;
const BODY_LEN: usize = 600;

/// (topic, queue id, messages): `orders/0` spans more than one verify batch (64 messages).
const QUEUES: [(&str, i32, i64); 3] = [("orders", 0, 150), ("orders", 1, 25), ("audit", 3, 30)];

fn total_messages() -> u64 {
    QUEUES.iter().map(|(_, _, n)| *n as u64).sum()
}

/// A body that names its message, so a test can find it in the segment files.
fn marker(topic: &str, queue_id: i32, queue_offset: i64) -> String {
    format!("body-{topic}-{queue_id}-{queue_offset}-")
}

fn message(topic: &str, queue_id: i32, queue_offset: i64) -> Message {
    let mut body = marker(topic, queue_id, queue_offset).into_bytes();
    body.resize(BODY_LEN, b'x');
    Message {
        topic: topic.to_owned(),
        queue_id,
        flags: 0,
        born_timestamp: 1_700_000_000_000 + queue_offset,
        born_host: "127.0.0.1:5000".parse().expect("valid address"),
        reconsume_times: 0,
        properties: Properties {
            tag: Some("t".to_owned()),
            keys: vec![format!("k{queue_offset}")],
            message_id: format!("ID-{topic}-{queue_id}-{queue_offset}"),
            system: BTreeMap::new(),
            user: BTreeMap::new(),
        },
        body: Bytes::from(body),
    }
}

/// Writes every queue of [`QUEUES`] into a fresh store in `dir` (interleaved, as a broker
/// would), closes it, and returns the number of segment files left on disk.
fn build_store(dir: &Path) -> usize {
    let mut cfg = StoreConfig::new(dir);
    cfg.segment_size = SEGMENT_SIZE;
    cfg.max_record_size = 16 * 1024;
    cfg.retention.disk_high_watermark = 1.0;
    cfg.retention.disk_refuse_watermark = 1.0;
    let store = MessageStore::open(cfg).expect("open a new store");
    let longest = QUEUES.iter().map(|(_, _, n)| *n).max().unwrap_or(0);
    for offset in 0..longest {
        for (topic, queue_id, n) in QUEUES {
            if offset < n {
                let r = store
                    .append(&message(topic, queue_id, offset))
                    .expect("append");
                assert_eq!(r.queue_offset, offset);
            }
        }
    }
    store.close().expect("close the store");
    let segments = segment_files(dir).len();
    assert!(
        segments >= 2,
        "the fixture must span segments, has {segments}"
    );
    segments
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("commitlog"))
        .expect("list commitlog")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.parse::<i64>().is_ok())
        })
        .collect();
    files.sort();
    files
}

/// Flips one byte inside the body of the given message, found by its marker.
fn corrupt_body(dir: &Path, topic: &str, queue_id: i32, queue_offset: i64) {
    let needle = marker(topic, queue_id, queue_offset).into_bytes();
    let mut hits = Vec::new();
    for path in segment_files(dir) {
        let bytes = fs::read(&path).expect("read segment");
        for (i, w) in bytes.windows(needle.len()).enumerate() {
            if w == needle.as_slice() {
                hits.push((path.clone(), i));
            }
        }
    }
    assert_eq!(
        hits.len(),
        1,
        "the body of {topic}/{queue_id}@{queue_offset}"
    );
    let (path, at) = &hits[0];
    let mut bytes = fs::read(path).expect("read segment");
    // Inside the padding that follows the marker: body bytes, not a header field.
    bytes[at + needle.len() + 10] ^= 0x5A;
    fs::write(path, bytes).expect("write segment");
}

fn comet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_comet"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run comet")
}

fn store_cmd(cmd: &str, dir: &Path, segment_size: Option<&str>) -> Output {
    let dir = dir.to_str().expect("UTF-8 temp path");
    let mut args = vec!["store", cmd, "--data-dir", dir];
    if let Some(size) = segment_size {
        args.extend(["--segment-size", size]);
    }
    comet(&args)
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn given_a_closed_store_when_inspected_should_print_queues_segments_and_recovery() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let segments = build_store(tmp.path());

    let out = store_cmd("inspect", tmp.path(), Some("64KiB"));

    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["data_dir"], tmp.path().display().to_string());
    assert_eq!(v["segment_size"], SEGMENT_SIZE as u64);
    let starts: Vec<i64> = (0..segments as i64)
        .map(|i| i * SEGMENT_SIZE as i64)
        .collect();
    assert_eq!(v["segments"], serde_json::json!(starts));
    let mut expected: Vec<Value> = QUEUES
        .iter()
        .map(|(topic, queue_id, n)| {
            serde_json::json!({
                "topic": topic, "queue_id": queue_id,
                "min_offset": 0, "max_offset": n, "backlog": n,
            })
        })
        .collect();
    expected.sort_by_key(|q| (q["topic"].to_string(), q["queue_id"].as_i64()));
    assert_eq!(v["queues"], Value::Array(expected));
    let write = v["write_offset"].as_i64().expect("write_offset");
    assert!(write > (segments as i64 - 1) * SEGMENT_SIZE as i64, "{v}");
    assert_eq!(v["min_offset"], 0);
    assert_eq!(v["flushed_offset"], write);
    assert_eq!(v["dispatched_offset"], write);
    let rec = &v["recovery"];
    assert_eq!(rec["had_checkpoint"], true, "{v}");
    assert_eq!(rec["truncated"], false);
    assert_eq!(rec["valid_end"], write);
    for key in [
        "scanned_from",
        "records_verified",
        "redispatched",
        "scan_duration_ms",
        "redispatch_duration_ms",
        "duration_ms",
    ] {
        assert!(rec[key].is_number(), "recovery.{key} missing: {v}");
    }
}

#[test]
fn given_an_intact_store_when_verified_should_count_every_message_and_exit_0() {
    let tmp = tempfile::tempdir().expect("tempdir");
    build_store(tmp.path());

    let out = store_cmd("verify", tmp.path(), Some("65536"));

    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["queues"], QUEUES.len());
    assert_eq!(v["messages"], total_messages());
    assert_eq!(v["body_bytes"], total_messages() * BODY_LEN as u64);
    let bytes = v["bytes"].as_u64().expect("bytes");
    assert!(bytes > total_messages() * BODY_LEN as u64, "{v}");
    assert_eq!(v["corrupt"], serde_json::json!([]));
}

#[test]
fn given_flipped_body_bytes_when_verified_should_name_each_record_count_the_rest_and_exit_1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    build_store(tmp.path());
    // Two neighbours in one batch, one in a second batch of a long queue, one elsewhere.
    let bad = [
        ("audit", 3, 20),
        ("orders", 0, 70),
        ("orders", 1, 7),
        ("orders", 1, 8),
    ];
    for (topic, queue_id, offset) in bad {
        corrupt_body(tmp.path(), topic, queue_id, offset);
    }

    let out = store_cmd("verify", tmp.path(), Some("64KiB"));

    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["ok"], false);
    assert_eq!(v["messages"], total_messages() - bad.len() as u64, "{v}");
    let corrupt = v["corrupt"].as_array().expect("corrupt list");
    let named: Vec<(&str, i32, i64)> = corrupt
        .iter()
        .map(|c| {
            (
                c["topic"].as_str().expect("topic"),
                c["queue_id"]
                    .as_i64()
                    .and_then(|q| i32::try_from(q).ok())
                    .expect("queue_id"),
                c["queue_offset"].as_i64().expect("queue_offset"),
            )
        })
        .collect();
    assert_eq!(named, bad.to_vec());
    for c in corrupt {
        let error = c["error"].as_str().expect("error");
        assert!(error.contains("corrupt"), "{error}");
        assert!(c["physical_offset"].is_number(), "{c}");
    }
}

#[test]
fn given_a_missing_data_dir_when_run_should_fail_without_creating_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("no-such-store");
    for cmd in ["inspect", "verify"] {
        let out = store_cmd(cmd, &missing, None);

        assert!(!out.status.success(), "{cmd} succeeded");
        let err = stderr(&out);
        let expected = format!("data directory {} does not exist", missing.display());
        assert!(err.contains(&expected), "{cmd}: {err}");
        assert!(out.stdout.is_empty(), "{cmd} printed a result");
        assert!(!missing.exists(), "{cmd} created the directory");
    }
}

#[test]
fn given_a_directory_that_is_not_a_store_when_inspected_should_fail_and_leave_it_empty() {
    let tmp = tempfile::tempdir().expect("tempdir");

    let out = store_cmd("inspect", tmp.path(), Some("64KiB"));

    assert!(!out.status.success());
    assert!(stderr(&out).contains("no commitlog/"), "{}", stderr(&out));
    let left = fs::read_dir(tmp.path()).expect("list").count();
    assert_eq!(
        left, 0,
        "the command wrote into a directory that is not a store"
    );
}

#[test]
fn given_the_wrong_segment_size_when_run_should_fail_naming_the_segment_size() {
    let tmp = tempfile::tempdir().expect("tempdir");
    build_store(tmp.path());
    let before = store_cmd("verify", tmp.path(), Some("64KiB"));
    assert_eq!(before.status.code(), Some(0), "stderr: {}", stderr(&before));
    // Default (1GiB), a larger and a smaller size than the store was created with.
    for size in [None, Some("128KiB"), Some("32KiB")] {
        for cmd in ["inspect", "verify"] {
            let out = store_cmd(cmd, tmp.path(), size);

            assert_eq!(out.status.code(), Some(2), "{cmd} {size:?}");
            let err = stderr(&out);
            assert!(err.contains("segment size"), "{cmd} {size:?}: {err}");
            assert!(
                err.contains("invalid store layout"),
                "{cmd} {size:?}: {err}"
            );
            assert!(out.stdout.is_empty());
        }
    }
    // The failed attempts left the store as it was.
    let after = store_cmd("verify", tmp.path(), Some("64KiB"));
    assert_eq!(after.status.code(), Some(0), "stderr: {}", stderr(&after));
    assert_eq!(json(&after)["messages"], total_messages());
    assert_eq!(json(&after)["bytes"], json(&before)["bytes"]);
}

#[test]
fn given_an_unparsable_segment_size_when_run_should_reject_the_flag() {
    let tmp = tempfile::tempdir().expect("tempdir");

    let out = store_cmd("inspect", tmp.path(), Some("64KB"));

    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("--segment-size"), "{err}");
    assert!(err.contains("KiB"), "{err}");
}

#[test]
fn given_help_when_asked_should_list_the_store_commands() {
    let top = comet(&["--help"]);
    assert!(top.status.success());
    assert!(String::from_utf8_lossy(&top.stdout).contains("store"));

    let store = comet(&["store", "--help"]);
    let text = String::from_utf8_lossy(&store.stdout);
    assert!(
        text.contains("inspect") && text.contains("verify"),
        "{text}"
    );

    let inspect = comet(&["store", "inspect", "--help"]);
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        text.contains("recovery") && text.contains("broker start"),
        "{text}"
    );
}
