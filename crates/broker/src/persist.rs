//! Durable consumer state: a snapshot plus an append-only log of queue-state records.
//!
//! ```text
//! <dir>/snapshot        Header{incarnation, next_log_seq} Queue* End{count}   (atomic: tmp+fsync+rename)
//! <dir>/log.<seq>       Queue*                                                (append + fdatasync)
//! ```
//!
//! Every frame is `len u32 | crc32c(payload) u32 | payload` (little-endian). Queue records
//! are written as kind 4 (each entry: offset, generation, deadline, visible-at, attempts,
//! message-group hash); kind 2 (the same without the hash) is still read. A `Queue` record
//! holds the *whole* state of one (group, topic, queue): pop offset and in-flight entries; the
//! last record of a key wins, so replay needs no ordering between keys. A record whose pop
//! offset is `i64::MIN` is a tombstone (an expired broadcast client's queue): replay drops
//! the key, and snapshots never hold one. Recovery loads the
//! snapshot, replays `log.<seq>` for every seq >= `next_log_seq` in order (stopping at a torn or
//! corrupt tail), then writes a fresh snapshot with the next incarnation and starts a new log.
//! Compaction opens log `seq+1` first, then writes a snapshot naming `seq+1`, then deletes the
//! older logs, so a crash at any step replays a superset of the truth in the right order.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::BrokerError;
use crate::state::{InFlight, QueueKey, QueueRecord, REMOVED};

const KIND_HEADER: u8 = 1;
const KIND_QUEUE: u8 = 2;
const KIND_END: u8 = 3;
/// `KIND_QUEUE` plus each entry's message-group hash (FIFO); written since FIFO support.
const KIND_QUEUE_V2: u8 = 4;
const MAX_FRAME: usize = 256 << 20;
const SNAPSHOT: &str = "snapshot";
const SNAPSHOT_TMP: &str = "snapshot.tmp";

type Result<T> = std::result::Result<T, BrokerError>;

/// What recovery found.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The incarnation of this run (one more than any before).
    pub incarnation: u32,
    pub queues: Vec<QueueRecord>,
}

/// The open state files; used by one task at a time.
pub(crate) struct StateFiles {
    dir: PathBuf,
    log: File,
    log_seq: u64,
    log_bytes: u64,
    incarnation: u32,
    /// Records were written since the last fdatasync.
    unsynced: bool,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names are at most a few hundred bytes (topics `comet_vocab::names::TOPIC_MAX_LEN`);
    // longer ones are cut at u16::MAX, which no valid name reaches.
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

pub(crate) fn encode_queue(r: &QueueRecord, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    out.push(KIND_QUEUE_V2);
    put_str(out, &r.key.group);
    put_str(out, &r.key.topic);
    out.extend_from_slice(&r.key.queue_id.to_le_bytes());
    out.extend_from_slice(&r.pop_offset.to_le_bytes());
    out.extend_from_slice(&(r.inflight.len() as u32).to_le_bytes());
    for (off, f) in &r.inflight {
        out.extend_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&f.generation.to_le_bytes());
        out.extend_from_slice(&f.deadline_ms.to_le_bytes());
        out.extend_from_slice(&f.visible_at_ms.to_le_bytes());
        out.extend_from_slice(&f.attempts.to_le_bytes());
        out.extend_from_slice(&f.group.to_le_bytes());
    }
    seal(out, start);
}

fn encode_simple(kind: u8, fields: &[&[u8]], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    out.push(kind);
    for f in fields {
        out.extend_from_slice(f);
    }
    seal(out, start);
}

fn seal(out: &mut [u8], start: usize) {
    let payload = &out[start + 8..];
    let len = payload.len() as u32;
    let crc = crc32c::crc32c(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A reader over one payload.
struct Cur<'a> {
    b: &'a [u8],
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    }
    fn i64(&mut self) -> Option<i64> {
        self.u64().map(|v| v as i64)
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        self.take(n)
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_owned)
    }
}

enum Frame {
    Header { incarnation: u32, next_log_seq: u64 },
    Queue(QueueRecord),
    End { count: u64 },
}

fn decode_payload(p: &[u8]) -> Option<Frame> {
    let mut c = Cur { b: p };
    let f = match c.u8()? {
        KIND_HEADER => Frame::Header {
            incarnation: c.u32()?,
            next_log_seq: c.u64()?,
        },
        KIND_END => Frame::End { count: c.u64()? },
        kind @ (KIND_QUEUE | KIND_QUEUE_V2) => {
            let v2 = kind == KIND_QUEUE_V2;
            let entry_len = if v2 { 44 } else { 36 };
            let group = c.str()?;
            let topic = c.str()?;
            let queue_id = c.u32()? as i32;
            let pop_offset = c.i64()?;
            let n = c.u32()? as usize;
            if n > c.b.len() / entry_len {
                return None;
            }
            let mut inflight = Vec::with_capacity(n);
            for _ in 0..n {
                let off = c.i64()?;
                inflight.push((
                    off,
                    InFlight {
                        generation: c.u64()?,
                        deadline_ms: c.i64()?,
                        visible_at_ms: c.i64()?,
                        attempts: c.u32()?,
                        dlq_pending: false,
                        group: if v2 { c.u64()? } else { 0 },
                    },
                ));
            }
            Frame::Queue(QueueRecord {
                key: QueueKey {
                    group,
                    topic,
                    queue_id,
                },
                pop_offset,
                inflight,
            })
        }
        _ => return None,
    };
    c.b.is_empty().then_some(f)
}

/// Decodes frames until the end or the first invalid one; returns them and whether the data
/// ended cleanly.
fn decode_frames(data: &[u8]) -> (Vec<Frame>, bool) {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let Some(h) = data.get(pos..pos + 8) else {
            return (frames, false);
        };
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if len > MAX_FRAME {
            return (frames, false);
        }
        let Some(p) = data.get(pos + 8..pos + 8 + len) else {
            return (frames, false);
        };
        if crc32c::crc32c(p) != crc {
            return (frames, false);
        }
        let Some(f) = decode_payload(p) else {
            return (frames, false);
        };
        frames.push(f);
        pos += 8 + len;
    }
    (frames, true)
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(BrokerError::state_io("read", path))?;
    Ok(data)
}

fn log_name(seq: u64) -> String {
    format!("log.{seq:020}")
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(BrokerError::state_io("fsync directory", dir))
}

impl StateFiles {
    /// Recovers the state in `dir` (created if missing), writes a fresh snapshot for a new
    /// incarnation and opens a new log.
    ///
    /// # Errors
    /// I/O errors; [`BrokerError::StateCorrupt`] for a snapshot that fails verification (it is
    /// written atomically, so that means damage, not a crash).
    pub fn open(dir: &Path) -> Result<(StateFiles, Loaded)> {
        fs::create_dir_all(dir).map_err(BrokerError::state_io("create", dir))?;
        let mut queues: HashMap<QueueKey, QueueRecord> = HashMap::new();
        let mut incarnation = 0u32;
        let mut next_log_seq = 0u64;
        let snap = dir.join(SNAPSHOT);
        if snap.exists() {
            let data = read_file(&snap)?;
            let (frames, clean) = decode_frames(&data);
            let corrupt = |reason: &str| BrokerError::StateCorrupt {
                path: snap.clone(),
                reason: reason.to_owned(),
            };
            if !clean {
                return Err(corrupt("a frame fails its checksum or does not decode"));
            }
            let mut it = frames.into_iter();
            match it.next() {
                Some(Frame::Header {
                    incarnation: i,
                    next_log_seq: s,
                }) => {
                    incarnation = i;
                    next_log_seq = s;
                }
                _ => return Err(corrupt("missing header")),
            }
            let mut ended = false;
            for f in it {
                match f {
                    Frame::Queue(r) if !ended => {
                        queues.insert(r.key.clone(), r);
                    }
                    Frame::End { count } if !ended && count == queues.len() as u64 => {
                        ended = true;
                    }
                    _ => return Err(corrupt("unexpected frame")),
                }
            }
            if !ended {
                return Err(corrupt("missing end marker"));
            }
        }
        let mut logs: Vec<(u64, PathBuf)> = Vec::new();
        for e in fs::read_dir(dir).map_err(BrokerError::state_io("list", dir))? {
            let e = e.map_err(BrokerError::state_io("list", dir))?;
            let name = e.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_prefix("log."))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            logs.push((seq, e.path()));
        }
        logs.sort();
        let mut max_seq = next_log_seq;
        for (seq, path) in &logs {
            max_seq = max_seq.max(*seq);
            if *seq < next_log_seq {
                continue;
            }
            let data = read_file(path)?;
            let (frames, clean) = decode_frames(&data);
            if !clean {
                tracing::warn!(
                    file = %path.display(),
                    records = frames.len(),
                    "consumer-state log ends in a torn or corrupt record; replayed up to it"
                );
            }
            for f in frames {
                if let Frame::Queue(r) = f {
                    if r.pop_offset == REMOVED {
                        // A tombstone: the (group, topic, queue) was removed.
                        queues.remove(&r.key);
                    } else {
                        queues.insert(r.key.clone(), r);
                    }
                }
            }
        }
        let incarnation = incarnation.wrapping_add(1).max(1);
        let mut records: Vec<QueueRecord> = queues.into_values().collect();
        records.sort_by(|a, b| a.key.cmp(&b.key));
        let new_seq = max_seq + 1;
        let files = StateFiles {
            dir: dir.to_owned(),
            log: Self::create_log(dir, new_seq)?,
            log_seq: new_seq,
            log_bytes: 0,
            incarnation,
            unsynced: false,
        };
        files.write_snapshot(&records)?;
        files.remove_logs_before(new_seq);
        tracing::info!(
            dir = %dir.display(),
            incarnation,
            queues = records.len(),
            "consumer state loaded"
        );
        Ok((
            files,
            Loaded {
                incarnation,
                queues: records,
            },
        ))
    }

    fn create_log(dir: &Path, seq: u64) -> Result<File> {
        let path = dir.join(log_name(seq));
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(BrokerError::state_io("create log", &path))?;
        sync_dir(dir)?;
        Ok(f)
    }

    fn write_snapshot(&self, records: &[QueueRecord]) -> Result<()> {
        let tmp = self.dir.join(SNAPSHOT_TMP);
        let f = File::create(&tmp).map_err(BrokerError::state_io("create", &tmp))?;
        let mut w = BufWriter::new(f);
        let mut buf = Vec::with_capacity(64 << 10);
        encode_simple(
            KIND_HEADER,
            &[&self.incarnation.to_le_bytes(), &self.log_seq.to_le_bytes()],
            &mut buf,
        );
        for r in records {
            encode_queue(r, &mut buf);
            if buf.len() >= 1 << 20 {
                w.write_all(&buf)
                    .map_err(BrokerError::state_io("write", &tmp))?;
                buf.clear();
            }
        }
        encode_simple(KIND_END, &[&(records.len() as u64).to_le_bytes()], &mut buf);
        w.write_all(&buf)
            .map_err(BrokerError::state_io("write", &tmp))?;
        let f = w.into_inner().map_err(|e| BrokerError::StateIo {
            op: "write",
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        f.sync_all().map_err(BrokerError::state_io("fsync", &tmp))?;
        let snap = self.dir.join(SNAPSHOT);
        fs::rename(&tmp, &snap).map_err(BrokerError::state_io("rename", &snap))?;
        sync_dir(&self.dir)
    }

    fn remove_logs_before(&self, seq: u64) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let old = e
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("log."))
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|s| s < seq);
            if old && let Err(err) = fs::remove_file(e.path()) {
                tracing::warn!(file = %e.path().display(), error = %err, "cannot delete old consumer-state log");
            }
        }
    }

    /// Appends records to the log (in the page cache: they survive a process crash); with
    /// `sync`, also makes everything written so far durable (fdatasync).
    ///
    /// # Errors
    /// I/O errors of write or fdatasync.
    pub fn append(&mut self, records: &[QueueRecord], sync: bool) -> Result<()> {
        let path = self.dir.join(log_name(self.log_seq));
        if !records.is_empty() {
            let mut buf = Vec::new();
            for r in records {
                encode_queue(r, &mut buf);
            }
            self.log
                .write_all(&buf)
                .map_err(BrokerError::state_io("append", &path))?;
            self.log_bytes += buf.len() as u64;
            self.unsynced = true;
        }
        if sync && self.unsynced {
            self.log
                .sync_data()
                .map_err(BrokerError::state_io("fdatasync", &path))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Whether the log grew past `threshold` bytes.
    pub fn needs_compaction(&self, threshold: u64) -> bool {
        self.log_bytes >= threshold
    }

    /// Starts a new log, then writes a snapshot of `all()` (called after the switch, so it
    /// covers everything in the older logs), then deletes the older logs.
    ///
    /// # Errors
    /// I/O errors; the previous files stay valid.
    pub fn compact(&mut self, all: impl FnOnce() -> Vec<QueueRecord>) -> Result<()> {
        let seq = self.log_seq + 1;
        self.log = Self::create_log(&self.dir, seq)?;
        self.log_seq = seq;
        self.log_bytes = 0;
        let records = all();
        self.write_snapshot(&records)?;
        // The snapshot is durable and covers everything the older logs held.
        self.unsynced = false;
        self.remove_logs_before(seq);
        tracing::debug!(
            queues = records.len(),
            log_seq = seq,
            "consumer state compacted"
        );
        Ok(())
    }
}

/// Access for the fuzz targets (the `fuzzing` module).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzzing {
    use super::{Frame, KIND_END, KIND_HEADER, QueueRecord, encode_queue, encode_simple};

    fn record(f: Frame) -> Option<QueueRecord> {
        match f {
            Frame::Queue(r) => Some(r),
            Frame::Header { .. } | Frame::End { .. } => None,
        }
    }

    /// The frames of a state file up to the first invalid one (queue records as `Some`, the
    /// other kinds as `None`), and whether the data ended cleanly.
    pub(crate) fn decode_frames(data: &[u8]) -> (Vec<Option<QueueRecord>>, bool) {
        let (frames, clean) = super::decode_frames(data);
        (frames.into_iter().map(record).collect(), clean)
    }

    /// One frame payload: `None` if invalid, else as [`decode_frames`] gives it.
    pub(crate) fn decode_payload(p: &[u8]) -> Option<Option<QueueRecord>> {
        super::decode_payload(p).map(record)
    }

    /// `data` with the checksum of every complete frame (as its length fields cut them)
    /// recomputed.
    pub(crate) fn with_valid_checksums(data: &[u8]) -> Vec<u8> {
        let mut b = data.to_vec();
        let mut pos = 0usize;
        while let Some(h) = b.get(pos..pos + 8) {
            let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let Some(end) = (pos + 8).checked_add(len).filter(|e| *e <= b.len()) else {
                break;
            };
            let crc = crc32c::crc32c(&b[pos + 8..end]);
            b[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
            pos = end;
        }
        b
    }

    /// A snapshot file holding `records`, as the state writer makes it.
    pub(crate) fn snapshot(records: &[QueueRecord]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_simple(
            KIND_HEADER,
            &[&3u32.to_le_bytes(), &9u64.to_le_bytes()],
            &mut buf,
        );
        for r in records {
            encode_queue(r, &mut buf);
        }
        encode_simple(KIND_END, &[&(records.len() as u64).to_le_bytes()], &mut buf);
        buf
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(group: &str, q: i32, pop: i64, inflight: &[i64]) -> QueueRecord {
        QueueRecord {
            key: QueueKey {
                group: group.into(),
                topic: "t".into(),
                queue_id: q,
            },
            pop_offset: pop,
            inflight: inflight
                .iter()
                .map(|o| {
                    (
                        *o,
                        InFlight {
                            generation: 9,
                            deadline_ms: 1000 + o,
                            visible_at_ms: 2000 + o,
                            attempts: 2,
                            dlq_pending: false,
                            group: if o % 2 == 0 { 0 } else { 7 + *o as u64 },
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn given_appended_records_when_reopened_should_keep_the_last_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, l) = StateFiles::open(dir.path()).unwrap();
        assert_eq!(l.incarnation, 1);
        assert!(l.queues.is_empty());
        f.append(&[rec("a", 0, 5, &[3, 4]), rec("b", 1, 1, &[])], true)
            .unwrap();
        f.append(&[rec("a", 0, 7, &[4])], false).unwrap();
        drop(f);
        let (_f, l) = StateFiles::open(dir.path()).unwrap();
        assert_eq!(l.incarnation, 2);
        assert_eq!(l.queues, vec![rec("a", 0, 7, &[4]), rec("b", 1, 1, &[])]);
    }

    #[test]
    fn given_a_tombstone_when_reopened_should_drop_the_key_and_keep_it_out_of_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, _) = StateFiles::open(dir.path()).unwrap();
        f.append(&[rec("g@c1", 0, 5, &[3]), rec("g@c2", 0, 4, &[])], true)
            .unwrap();
        f.append(&[rec("g@c1", 0, REMOVED, &[])], true).unwrap();
        drop(f);
        let (_f, l) = StateFiles::open(dir.path()).unwrap();
        assert_eq!(l.queues, vec![rec("g@c2", 0, 4, &[])]);
        // The reopen wrote a snapshot of what was loaded: still without the removed key.
        drop(_f);
        let (_f, l) = StateFiles::open(dir.path()).unwrap();
        assert_eq!(l.queues, vec![rec("g@c2", 0, 4, &[])]);
    }

    #[test]
    fn given_torn_log_tail_when_reopened_should_replay_up_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, _) = StateFiles::open(dir.path()).unwrap();
        f.append(&[rec("a", 0, 5, &[3])], true).unwrap();
        f.append(&[rec("a", 0, 9, &[])], true).unwrap();
        let path = dir.path().join(log_name(f.log_seq));
        drop(f);
        let len = fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 3).unwrap();
        let (_f, l) = StateFiles::open(dir.path()).unwrap();
        assert_eq!(l.queues, vec![rec("a", 0, 5, &[3])]);
    }

    #[test]
    fn given_compaction_when_reopened_should_hold_the_snapshot_plus_newer_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, _) = StateFiles::open(dir.path()).unwrap();
        f.append(&[rec("a", 0, 5, &[3])], true).unwrap();
        f.compact(|| vec![rec("a", 0, 6, &[]), rec("c", 2, 2, &[1])])
            .unwrap();
        f.append(&[rec("c", 2, 3, &[])], true).unwrap();
        assert!(!f.needs_compaction(1 << 20));
        drop(f);
        let (_f, l) = StateFiles::open(dir.path()).unwrap();
        assert_eq!(l.queues, vec![rec("a", 0, 6, &[]), rec("c", 2, 3, &[])]);
        let logs = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .starts_with("log.")
            })
            .count();
        assert_eq!(logs, 1, "older logs are deleted");
    }

    #[test]
    fn given_a_log_of_the_format_before_fifo_when_reopened_should_read_it_without_groups() {
        let dir = tempfile::tempdir().unwrap();
        let (f, _) = StateFiles::open(dir.path()).unwrap();
        let path = dir.path().join(log_name(f.log_seq));
        drop(f);
        // A kind-2 frame: no message-group hashes.
        let mut payload = vec![KIND_QUEUE];
        put_str(&mut payload, "g");
        put_str(&mut payload, "t");
        payload.extend_from_slice(&3i32.to_le_bytes());
        payload.extend_from_slice(&10i64.to_le_bytes());
        payload.extend_from_slice(&1u32.to_le_bytes());
        for v in [8i64, 5, 100, 200] {
            payload.extend_from_slice(&v.to_le_bytes());
        }
        payload.extend_from_slice(&2u32.to_le_bytes());
        let mut frame = Vec::new();
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        fs::write(&path, frame).unwrap();
        let (_f, l) = StateFiles::open(dir.path()).unwrap();
        assert_eq!(l.queues.len(), 1);
        let r = &l.queues[0];
        assert_eq!((r.key.queue_id, r.pop_offset), (3, 10));
        assert_eq!(
            r.inflight,
            vec![(
                8,
                InFlight {
                    generation: 5,
                    deadline_ms: 100,
                    visible_at_ms: 200,
                    attempts: 2,
                    dlq_pending: false,
                    group: 0,
                }
            )]
        );
    }

    #[test]
    fn given_corrupt_snapshot_when_opened_should_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let (f, _) = StateFiles::open(dir.path()).unwrap();
        drop(f);
        let snap = dir.path().join(SNAPSHOT);
        let mut data = fs::read(&snap).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        fs::write(&snap, data).unwrap();
        assert!(matches!(
            StateFiles::open(dir.path()),
            Err(BrokerError::StateCorrupt { .. })
        ));
    }
}
