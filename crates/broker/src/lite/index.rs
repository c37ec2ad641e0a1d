//! The lite-topic index: for every lite topic, the parent-queue offsets of its messages, in
//! order, behind one logical queue (logical offset `base + i` is the `i`-th kept message).
//!
//! Lite messages are stored like any message of their parent topic: in the commitlog and the
//! parent's consume queues (a lite topic lives in one parent queue). Nothing is created per
//! lite topic on disk. The index is kept in memory and in one append-only log
//! (`<data_dir>/lite/index.log`) of framed records (`len u32 | crc32c u32 | payload`):
//!
//! ```text
//! DEFINE  kind=1 | id u32 | queue_id i32 | base i64 | last_write_ms i64 | parent str | lite str
//! APPEND  kind=2 | queue_id i32 | indexed_to i64 | stored_ms i64 | parent str
//!                | n u32 | n × (id u32, queue_offset i64)
//! REMOVE  kind=3 | id u32
//! (str = len u16 | UTF-8 bytes)
//! ```
//!
//! The index follows the parent queues by *catching up*: it reads a parent queue's consume
//! queue from its cursor (`indexed_to`) to the end, reads each record's lite topic, appends the
//! offsets to their lite topics (creating the ones it meets for the first time) and writes
//! one APPEND. One catch-up runs at a time, so every lite topic's offsets are in queue order.
//! Sends catch up the queues they wrote, pops the queues they read.
//!
//! Recovery: the log is read up to its first invalid record (a torn or corrupt tail is cut),
//! rewritten compactly (DEFINE per live topic, one APPEND per parent queue), and every known
//! cursor is caught up from the store, so messages stored after the last record written (a
//! crash, a power loss) are indexed again, in the same order, under the same logical offsets.
//! A parent queue whose cursor the log lost entirely is caught up from its first message when
//! the broker opens (the LITE topics of the metadata it opens with), at the lite task's next
//! round, or at the first send or pop of its parent, whichever comes first.
//! A write failure stops all further writes until the next open (the log never has holes).

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use comet_store::{CqEntry, MessageStore};
use parking_lot::{Mutex, RwLock};

use crate::error::BrokerError;
use crate::outcome::{Code, Failure};
use crate::sys::SYS_LITE_TOPIC;

/// Separates parent and lite topic in a lite topic's consumer-state key: `'+'` appears in no
/// topic name and no lite topic name (both are `[%|a-zA-Z0-9_-]`).
pub(crate) const SEP: char = '+';

const KIND_DEFINE: u8 = 1;
const KIND_APPEND: u8 = 2;
const KIND_REMOVE: u8 = 3;
const LOG: &str = "index.log";
/// Consume-queue entries read per catch-up round.
const CATCH_UP_WINDOW: usize = 1024;
/// Longest a single catch-up goes on (bounded; the next one continues).
const CATCH_UP_MAX_ROUNDS: usize = 1024;

/// Checks a lite topic name: a topic name's characters and length.
///
/// # Errors
/// ILLEGAL_LITE_TOPIC.
pub(crate) fn check_lite_name(lite: &str) -> Result<(), Failure> {
    if lite.is_empty() {
        return Err(Failure::new(Code::IllegalLiteTopic, "lite topic is empty"));
    }
    comet_vocab::names::validate(comet_vocab::NameKind::Topic, lite)
        .map_err(|e| Failure::new(Code::IllegalLiteTopic, format!("lite topic: {e}")))
}

/// The queue of a lite topic on a broker set with `queue_count` queues of its parent.
pub(crate) fn lite_queue(lite: &str, queue_count: u32) -> i32 {
    (crc32c::crc32c(lite.as_bytes()) % queue_count.max(1)) as i32
}

/// The consumer-state topic of a lite topic: `"<parent>+<lite>"`.
pub(crate) fn state_key(parent: &str, lite: &str) -> String {
    let mut s = String::with_capacity(parent.len() + 1 + lite.len());
    s.push_str(parent);
    s.push(SEP);
    s.push_str(lite);
    s
}

/// The parent and lite topic of a consumer-state topic, if it is a lite topic's.
pub(crate) fn split_key(topic: &str) -> Option<(&str, &str)> {
    topic.split_once(SEP)
}

/// The topic whose arrivals wake pops of `topic` (a lite topic's: its parent's).
pub(crate) fn arrival_topic(topic: &str) -> &str {
    split_key(topic).map_or(topic, |(parent, _)| parent)
}

/// One lite topic in memory.
#[derive(Debug)]
struct LiteTopic {
    id: u32,
    queue_id: i32,
    /// Logical offset of `offsets[0]`.
    base: i64,
    /// Parent-queue offsets of its messages, in order.
    offsets: VecDeque<i64>,
    /// Store time of its newest message (ms).
    last_write_ms: i64,
}

struct State {
    /// By consumer-state key (`"<parent>+<lite>"`).
    topics: HashMap<String, LiteTopic>,
    /// Key of each live id.
    ids: HashMap<u32, String>,
    /// Next parent-queue offset to index, per (parent, queue id).
    cursors: HashMap<(String, i32), i64>,
    next_id: u32,
}

struct LogFile {
    file: File,
    bytes: u64,
    /// A write failed: no more writes until the next open.
    broken: bool,
    unsynced: bool,
}

/// A lite topic removed by [`LiteIndex::expire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expired {
    pub parent: String,
    pub lite: String,
    pub key: String,
}

/// See the module docs.
pub(crate) struct LiteIndex {
    dir: PathBuf,
    state: RwLock<State>,
    log: Mutex<LogFile>,
    /// One catch-up at a time (keeps each lite topic's offsets in queue order).
    catching_up: Mutex<()>,
}

impl std::fmt::Debug for LiteIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiteIndex")
            .field("dir", &self.dir)
            .field("topics", &self.state.read().topics.len())
            .finish()
    }
}

impl LiteIndex {
    /// Loads the index from `dir` (created if missing), compacts its log and catches every
    /// known parent queue up with `store` (blocking).
    ///
    /// # Errors
    /// The log cannot be read or rewritten.
    pub(crate) fn open(dir: &Path, store: &MessageStore) -> Result<LiteIndex, BrokerError> {
        std::fs::create_dir_all(dir).map_err(BrokerError::state_io("create", dir))?;
        let path = dir.join(LOG);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)
                    .map_err(BrokerError::state_io("read", &path))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BrokerError::state_io("open", &path)(e)),
        }
        let mut state = State {
            topics: HashMap::new(),
            ids: HashMap::new(),
            cursors: HashMap::new(),
            next_id: 1,
        };
        let (records, valid) = replay(&bytes, &mut state);
        if valid < bytes.len() {
            tracing::warn!(path = %path.display(), valid, len = bytes.len(),
                "lite index log has an invalid tail; cut (the store is re-read from there)");
        }
        // Entries that retention deleted meanwhile are dropped.
        for (key, t) in &mut state.topics {
            if let Some((parent, _)) = split_key(key) {
                trim(t, store.min_offset(parent, t.queue_id));
            }
        }
        let file = write_compacted(dir, &state)?;
        let bytes_now = file
            .metadata()
            .map_err(BrokerError::state_io("stat", &path))?
            .len();
        tracing::info!(topics = state.topics.len(), records, "lite index loaded");
        let index = LiteIndex {
            dir: dir.to_owned(),
            state: RwLock::new(state),
            log: Mutex::new(LogFile {
                file,
                bytes: bytes_now,
                broken: false,
                unsynced: false,
            }),
            catching_up: Mutex::new(()),
        };
        let cursors: Vec<(String, i32)> = index.state.read().cursors.keys().cloned().collect();
        for (parent, queue_id) in cursors {
            index.catch_up(store, &parent, queue_id);
        }
        Ok(index)
    }

    /// Number of lite topics.
    pub(crate) fn len(&self) -> usize {
        self.state.read().topics.len()
    }

    /// Whether the lite topic with this state key exists.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.state.read().topics.contains_key(key)
    }

    /// The parent queue a lite topic lives in, if it exists.
    pub(crate) fn queue_of(&self, key: &str) -> Option<i32> {
        self.state.read().topics.get(key).map(|t| t.queue_id)
    }

    /// `(min, max)` logical offsets of a lite topic (`max` = next to be written); `None` when
    /// it does not exist.
    pub(crate) fn bounds(&self, key: &str) -> Option<(i64, i64)> {
        self.state
            .read()
            .topics
            .get(key)
            .map(|t| (t.base, t.base + t.offsets.len() as i64))
    }

    /// The next logical offset of each lite topic of `keys` (0 for one that does not exist).
    pub(crate) fn max_offsets<'a>(&self, keys: impl Iterator<Item = &'a str>) -> Vec<i64> {
        let st = self.state.read();
        keys.map(|k| {
            st.topics
                .get(k)
                .map_or(0, |t| t.base + t.offsets.len() as i64)
        })
        .collect()
    }

    /// The consume-queue entry of logical offset `offset` of a lite topic, its
    /// `queue_offset` being the logical offset.
    pub(crate) fn entry(&self, store: &MessageStore, key: &str, offset: i64) -> Option<CqEntry> {
        let (parent, _) = split_key(key)?;
        let (queue_id, qoff) = {
            let st = self.state.read();
            let t = st.topics.get(key)?;
            let i = usize::try_from(offset - t.base).ok()?;
            (t.queue_id, *t.offsets.get(i)?)
        };
        store.queue_entry(parent, queue_id, qoff).map(|e| CqEntry {
            queue_offset: offset,
            ..e
        })
    }

    /// Up to `max` consume-queue entries of a lite topic from logical offset `from` (those
    /// retention deleted are skipped), `queue_offset` being logical.
    pub(crate) fn entries(
        &self,
        store: &MessageStore,
        key: &str,
        from: i64,
        max: usize,
    ) -> Vec<CqEntry> {
        let Some((parent, _)) = split_key(key) else {
            return Vec::new();
        };
        let (queue_id, start, qoffs) = {
            let st = self.state.read();
            let Some(t) = st.topics.get(key) else {
                return Vec::new();
            };
            let start = from.max(t.base);
            let skip = usize::try_from(start - t.base).unwrap_or(usize::MAX);
            let qoffs: Vec<i64> = t.offsets.iter().skip(skip).take(max).copied().collect();
            (t.queue_id, start, qoffs)
        };
        qoffs
            .into_iter()
            .zip(start..)
            .filter_map(|(qoff, logical)| {
                store.queue_entry(parent, queue_id, qoff).map(|e| CqEntry {
                    queue_offset: logical,
                    ..e
                })
            })
            .collect()
    }

    /// How many entries of `parent` queue `queue_id` the index has not looked at yet.
    pub(crate) fn lag(&self, store: &MessageStore, parent: &str, queue_id: i32) -> i64 {
        let min = store.min_offset(parent, queue_id);
        let end = store.max_offset(parent, queue_id);
        let cursor = self
            .state
            .read()
            .cursors
            .get(&(parent.to_owned(), queue_id))
            .copied()
            .unwrap_or(min)
            .max(min);
        (end - cursor).max(0)
    }

    /// Indexes what `store` holds of `parent` queue `queue_id` beyond the cursor (blocking;
    /// reads the new records). Returns how many lite messages were indexed.
    pub(crate) fn catch_up(&self, store: &MessageStore, parent: &str, queue_id: i32) -> usize {
        let _one = self.catching_up.lock();
        let cursor_key = (parent.to_owned(), queue_id);
        let min = store.min_offset(parent, queue_id);
        let mut from = self
            .state
            .read()
            .cursors
            .get(&cursor_key)
            .copied()
            .unwrap_or(min)
            .max(min);
        let mut total = 0;
        for _ in 0..CATCH_UP_MAX_ROUNDS {
            let end = store.max_offset(parent, queue_id);
            if from >= end {
                break;
            }
            let entries = store.read_queue(parent, queue_id, from, CATCH_UP_WINDOW);
            let Some(last) = entries.last() else {
                break;
            };
            let next = last.queue_offset + 1;
            let mut found: Vec<(String, i64)> = Vec::with_capacity(entries.len());
            let mut stored_ms = i64::MIN;
            for e in &entries {
                match store.read(e.physical_offset) {
                    Ok(m) => {
                        if let Some(lite) = m.message.properties.system.get(SYS_LITE_TOPIC) {
                            stored_ms = stored_ms.max(m.store_timestamp);
                            found.push((lite.clone(), e.queue_offset));
                        }
                    }
                    Err(e2) => {
                        tracing::warn!(topic = parent, queue_id, offset = e.queue_offset,
                            error = %e2, "lite index skips an unreadable record");
                    }
                }
            }
            total += found.len();
            self.apply_append(parent, queue_id, next, stored_ms, found);
            from = next;
        }
        total
    }

    /// Adds found messages to their lite topics (creating new ones) and logs it.
    fn apply_append(
        &self,
        parent: &str,
        queue_id: i32,
        indexed_to: i64,
        stored_ms: i64,
        found: Vec<(String, i64)>,
    ) {
        let mut buf = Vec::new();
        let mut ids = Vec::with_capacity(found.len());
        {
            let mut st = self.state.write();
            for (lite, qoff) in found {
                let key = state_key(parent, &lite);
                let id = match st.topics.get_mut(&key) {
                    Some(t) if t.queue_id != queue_id => {
                        // The broker places a lite topic in one queue; a record elsewhere
                        // (the parent's queue count changed) cannot join its order.
                        tracing::warn!(topic = parent, queue_id, offset = qoff, lite = %lite,
                            home = t.queue_id, "lite message outside its lite topic's queue; not indexed");
                        continue;
                    }
                    Some(t) => {
                        t.offsets.push_back(qoff);
                        t.last_write_ms = t.last_write_ms.max(stored_ms);
                        t.id
                    }
                    None => {
                        let id = st.next_id;
                        st.next_id = st.next_id.wrapping_add(1).max(1);
                        let t = LiteTopic {
                            id,
                            queue_id,
                            base: 0,
                            offsets: VecDeque::from([qoff]),
                            last_write_ms: stored_ms,
                        };
                        encode_define(&mut buf, &t, parent, &lite);
                        st.topics.insert(key.clone(), t);
                        st.ids.insert(id, key);
                        id
                    }
                };
                ids.push((id, qoff));
            }
            st.cursors.insert((parent.to_owned(), queue_id), indexed_to);
        }
        encode_append(&mut buf, parent, queue_id, indexed_to, stored_ms, &ids);
        self.write(&buf);
    }

    /// Removes the lite topics without a write for `ttl_ms` at `now_ms`, and drops from every
    /// lite topic the offsets that retention deleted from the store. Returns the removed.
    pub(crate) fn expire(&self, store: &MessageStore, now_ms: i64, ttl_ms: i64) -> Vec<Expired> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        {
            let mut st = self.state.write();
            let dead: Vec<String> = st
                .topics
                .iter()
                .filter(|(_, t)| now_ms.saturating_sub(t.last_write_ms) >= ttl_ms)
                .map(|(k, _)| k.clone())
                .collect();
            for key in dead {
                if let Some(t) = st.topics.remove(&key) {
                    st.ids.remove(&t.id);
                    encode_simple(&mut buf, KIND_REMOVE, &t.id.to_le_bytes());
                    if let Some((parent, lite)) = split_key(&key) {
                        out.push(Expired {
                            parent: parent.to_owned(),
                            lite: lite.to_owned(),
                            key: key.clone(),
                        });
                    }
                }
            }
            let State { topics, .. } = &mut *st;
            for (key, t) in topics.iter_mut() {
                let Some((parent, _)) = split_key(key) else {
                    continue;
                };
                trim(t, store.min_offset(parent, t.queue_id));
            }
        }
        self.write(&buf);
        out
    }

    /// Rewrites the log compactly when it is more than four times the size of a compact one
    /// (and at least `min_bytes`); fdatasyncs it when written since the last call.
    pub(crate) fn maintain(&self, min_bytes: u64) {
        let compact_size = {
            let st = self.state.read();
            st.topics
                .iter()
                .map(|(k, t)| 40 + k.len() as u64 + 12 * t.offsets.len() as u64)
                .sum::<u64>()
        };
        let mut log = self.log.lock();
        if log.broken {
            return;
        }
        if log.bytes > min_bytes.max(4 * compact_size) {
            let st = self.state.read();
            match write_compacted(&self.dir, &st) {
                Ok(file) => {
                    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
                    tracing::info!(
                        before = log.bytes,
                        after = bytes,
                        "lite index log compacted"
                    );
                    log.file = file;
                    log.bytes = bytes;
                    log.unsynced = false;
                }
                Err(e) => tracing::warn!(error = %e, "lite index log compaction failed"),
            }
        } else if log.unsynced {
            if let Err(e) = log.file.sync_data() {
                tracing::warn!(error = %e, "lite index log sync failed");
            }
            log.unsynced = false;
        }
    }

    fn write(&self, buf: &[u8]) {
        if buf.is_empty() {
            return;
        }
        let mut log = self.log.lock();
        if log.broken {
            return;
        }
        match log.file.write_all(buf) {
            Ok(()) => {
                log.bytes += buf.len() as u64;
                log.unsynced = true;
            }
            Err(e) => {
                // Later records would follow a hole: stop writing; the next open re-reads
                // the store from the last good record.
                log.broken = true;
                tracing::error!(error = %e, dir = %self.dir.display(),
                    "lite index log write failed; the index is rebuilt from the store at the next start");
            }
        }
    }
}

/// Drops the offsets below `min` (deleted by retention) from the front.
fn trim(t: &mut LiteTopic, min: i64) {
    while t.offsets.front().is_some_and(|o| *o < min) {
        t.offsets.pop_front();
        t.base += 1;
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

fn frame(out: &mut Vec<u8>, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    payload(out);
    let len = (out.len() - start - 8) as u32;
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn encode_simple(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    frame(out, |o| {
        o.push(kind);
        o.extend_from_slice(body);
    });
}

fn encode_define(out: &mut Vec<u8>, t: &LiteTopic, parent: &str, lite: &str) {
    frame(out, |o| {
        o.push(KIND_DEFINE);
        o.extend_from_slice(&t.id.to_le_bytes());
        o.extend_from_slice(&t.queue_id.to_le_bytes());
        o.extend_from_slice(&t.base.to_le_bytes());
        o.extend_from_slice(&t.last_write_ms.to_le_bytes());
        put_str(o, parent);
        put_str(o, lite);
    });
}

fn encode_append(
    out: &mut Vec<u8>,
    parent: &str,
    queue_id: i32,
    indexed_to: i64,
    stored_ms: i64,
    ids: &[(u32, i64)],
) {
    frame(out, |o| {
        o.push(KIND_APPEND);
        o.extend_from_slice(&queue_id.to_le_bytes());
        o.extend_from_slice(&indexed_to.to_le_bytes());
        o.extend_from_slice(&stored_ms.to_le_bytes());
        put_str(o, parent);
        o.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for (id, qoff) in ids {
            o.extend_from_slice(&id.to_le_bytes());
            o.extend_from_slice(&qoff.to_le_bytes());
        }
    });
}

/// Writes the compact form of `st` to a new log and puts it in place (atomic rename);
/// returns it open for appends.
fn write_compacted(dir: &Path, st: &State) -> Result<File, BrokerError> {
    let mut buf = Vec::new();
    let mut per_queue: HashMap<(&str, i32), Vec<(u32, i64)>> = HashMap::new();
    for (key, t) in &st.topics {
        let Some((parent, lite)) = split_key(key) else {
            continue;
        };
        encode_define(&mut buf, t, parent, lite);
        per_queue
            .entry((parent, t.queue_id))
            .or_default()
            .extend(t.offsets.iter().map(|o| (t.id, *o)));
    }
    for ((parent, queue_id), indexed_to) in &st.cursors {
        let ids = per_queue
            .remove(&(parent.as_str(), *queue_id))
            .unwrap_or_default();
        encode_append(&mut buf, parent, *queue_id, *indexed_to, i64::MIN, &ids);
    }
    let tmp = dir.join("index.log.tmp");
    let path = dir.join(LOG);
    let mut f = File::create(&tmp).map_err(BrokerError::state_io("create", &tmp))?;
    f.write_all(&buf)
        .and_then(|()| f.sync_data())
        .map_err(BrokerError::state_io("write", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(BrokerError::state_io("rename", &path))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(BrokerError::state_io("open", &path))
}

struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
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
    fn i64(&mut self) -> Option<i64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(i64::from_le_bytes(a))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        self.take(n)
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_owned)
    }
}

/// Applies the valid prefix of a log to `st`; returns (records applied, valid bytes).
fn replay(bytes: &[u8], st: &mut State) -> (usize, usize) {
    let mut pos = 0;
    let mut records = 0;
    while bytes.len() - pos >= 8 {
        let len = u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]])
            as usize;
        let crc = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]);
        let Some(payload) = bytes.get(pos + 8..pos + 8 + len) else {
            break;
        };
        if crc32c::crc32c(payload) != crc || apply(payload, st).is_none() {
            break;
        }
        pos += 8 + len;
        records += 1;
    }
    (records, pos)
}

fn apply(payload: &[u8], st: &mut State) -> Option<()> {
    let mut c = Cur(payload);
    match c.u8()? {
        KIND_DEFINE => {
            let id = c.u32()?;
            let queue_id = c.u32()? as i32;
            let base = c.i64()?;
            let last_write_ms = c.i64()?;
            let parent = c.str()?;
            let lite = c.str()?;
            let key = state_key(&parent, &lite);
            if let Some(old) = st.topics.remove(&key) {
                st.ids.remove(&old.id);
            }
            st.topics.insert(
                key.clone(),
                LiteTopic {
                    id,
                    queue_id,
                    base,
                    offsets: VecDeque::new(),
                    last_write_ms,
                },
            );
            st.ids.insert(id, key);
            st.next_id = st.next_id.max(id.wrapping_add(1)).max(1);
        }
        KIND_APPEND => {
            let queue_id = c.u32()? as i32;
            let indexed_to = c.i64()?;
            let stored_ms = c.i64()?;
            let parent = c.str()?;
            let n = c.u32()? as usize;
            if n > c.0.len() / 12 {
                return None;
            }
            for _ in 0..n {
                let id = c.u32()?;
                let qoff = c.i64()?;
                if let Some(t) = st.ids.get(&id).and_then(|k| st.topics.get_mut(k)) {
                    t.offsets.push_back(qoff);
                    t.last_write_ms = t.last_write_ms.max(stored_ms);
                }
            }
            st.cursors.insert((parent, queue_id), indexed_to);
        }
        KIND_REMOVE => {
            let id = c.u32()?;
            if let Some(key) = st.ids.remove(&id) {
                st.topics.remove(&key);
            }
        }
        _ => return None,
    }
    c.0.is_empty().then_some(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn empty() -> State {
        State {
            topics: HashMap::new(),
            ids: HashMap::new(),
            cursors: HashMap::new(),
            next_id: 1,
        }
    }

    #[test]
    fn given_keys_when_split_should_give_parent_and_lite() {
        let k = state_key("ns%chat", "session-1");
        assert_eq!(split_key(&k), Some(("ns%chat", "session-1")));
        assert_eq!(arrival_topic(&k), "ns%chat");
        assert_eq!(arrival_topic("plain"), "plain");
    }

    #[test]
    fn given_records_with_a_torn_tail_when_replayed_should_keep_the_valid_prefix() {
        let mut buf = Vec::new();
        let t = LiteTopic {
            id: 7,
            queue_id: 2,
            base: 0,
            offsets: VecDeque::new(),
            last_write_ms: 5,
        };
        encode_define(&mut buf, &t, "p", "a");
        encode_append(&mut buf, "p", 2, 3, 9, &[(7, 0), (7, 2)]);
        let good = buf.len();
        encode_simple(&mut buf, KIND_REMOVE, &7u32.to_le_bytes());
        buf.truncate(buf.len() - 2);
        let mut st = empty();
        let (records, valid) = replay(&buf, &mut st);
        assert_eq!((records, valid), (2, good));
        let lt = &st.topics[&state_key("p", "a")];
        assert_eq!(lt.offsets, VecDeque::from([0, 2]));
        assert_eq!(lt.last_write_ms, 9);
        assert_eq!(st.cursors[&("p".to_owned(), 2)], 3);
        assert_eq!(st.next_id, 8);
        // The whole record applied removes the topic.
        let mut full = buf[..good].to_vec();
        encode_simple(&mut full, KIND_REMOVE, &7u32.to_le_bytes());
        let mut st = empty();
        replay(&full, &mut st);
        assert!(st.topics.is_empty());
    }
}
