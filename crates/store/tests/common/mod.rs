//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use comet_store::{DiskStats, DiskUsage, FlushPolicy, Message, Properties, StoreConfig};

/// A disk that is always half full, so that no test depends on how full the machine's disk
/// is (the store refuses appends above 90% used). Tests of the watermarks set their own.
pub struct HalfFullDisk;

impl DiskUsage for HalfFullDisk {
    fn stats(&self, _path: &Path) -> std::io::Result<DiskStats> {
        Ok(DiskStats {
            total: 1000,
            available: 500,
        })
    }
}

/// A config with small files so that tests cross segment and file boundaries.
pub fn small_config(dir: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.segment_size = 64 * 1024;
    c.max_record_size = 16 * 1024;
    c.cq_entries_per_file = 64;
    c.index_slots_per_file = 64;
    c.index_entries_per_file = 256;
    c.checkpoint_interval = Duration::from_millis(50);
    c.flush = FlushPolicy::Async {
        interval: Duration::from_millis(20),
    };
    c.retention.disk_usage = std::sync::Arc::new(HalfFullDisk);
    c
}

/// A message with a deterministic body derived from `n`.
pub fn msg(topic: &str, queue_id: i32, n: u64, body_len: usize) -> Message {
    let mut body = Vec::with_capacity(body_len);
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while body.len() < body_len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.push(x as u8);
    }
    let mut user = BTreeMap::new();
    user.insert("n".to_owned(), n.to_string());
    Message {
        topic: topic.to_owned(),
        queue_id,
        flags: 0,
        born_timestamp: 1_700_000_000_000 + n as i64,
        born_host: "127.0.0.1:5000".parse().expect("addr"),
        reconsume_times: 0,
        properties: Properties {
            tag: Some(if n.is_multiple_of(2) { "even" } else { "odd" }.to_owned()),
            keys: vec![format!("key-{n}"), "shared".to_owned()],
            message_id: format!("ID{n:016X}"),
            system: BTreeMap::new(),
            user,
        },
        body: Bytes::from(body),
    }
}
