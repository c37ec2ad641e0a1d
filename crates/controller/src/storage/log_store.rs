//! [`FileLogStore`]: the Raft log and vote on disk (openraft storage-v2
//! [`RaftLogStorage`]).
//!
//! # Layout (under the store's directory)
//!
//! - `log/<first index, 20 digits>.log`: segments of framed entries. A record
//!   is `len: u32 LE | crc32c(payload): u32 LE | payload` where the payload is
//!   the serde_json of one [`Entry`]. A segment rolls once it passes
//!   [`SEGMENT_TARGET_BYTES`]; only the last segment is ever appended to.
//! - `vote.json`: the vote, replaced atomically and durably (tmp + fsync +
//!   rename + dir fsync).
//! - `purged.json`: the last purged log id, replaced the same way before any
//!   segment is deleted.
//! - `committed.json`: the last committed log id, replaced atomically but
//!   without fsync: losing it only delays re-applying committed entries until
//!   the leader says so again; an unreadable copy is ignored.
//!
//! # Invariants
//!
//! - Every write (append, truncate, purge, vote, committed) runs on one I/O
//!   thread in submission order, so writes are serialized as openraft
//!   requires. Appends waiting together share one `fdatasync` (group commit);
//!   an append's [`LogFlushed`] callback fires only after that sync.
//! - The live entries (after the last purge) are also kept in memory, so reads
//!   never touch the disk and entries are readable as soon as `append` returns.
//! - The log has no holes: segments are deleted newest-first on truncation and
//!   oldest-first on purge, and recovery checks that indexes are consecutive.
//! - Recovery truncates an incomplete or checksum-failing record at the tail of
//!   the *last* segment (a torn write that was never acknowledged) and keeps
//!   everything before it. Damage anywhere else is [`ControllerError::Corrupt`].
//! - After an I/O error the store refuses every later write: the files' state
//!   is unknown, so openraft must stop (it treats the error as fatal).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, OptionalSend, StorageIOError, Vote};
use parking_lot::RwLock;
use tokio::sync::oneshot;

use super::fs_util::{atomic_write, read_optional, sync_dir};
use crate::error::ControllerError;
use crate::raft_types::{Entry, LogId, NodeId, StorageError, TypeConfig};

/// A segment rolls once it is at least this large.
pub const SEGMENT_TARGET_BYTES: u64 = 8 << 20;
/// Bytes of a record header (length + CRC32C).
const HEADER_LEN: usize = 8;
/// Largest accepted record payload; a larger length field is damage.
const MAX_RECORD_LEN: u32 = 256 << 20;

const VOTE_FILE: &str = "vote.json";
const PURGED_FILE: &str = "purged.json";
const COMMITTED_FILE: &str = "committed.json";
const LOG_DIR: &str = "log";

/// What the in-memory side of the store knows.
#[derive(Debug, Default)]
struct LogMem {
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
}

/// A write for the I/O thread.
enum IoOp {
    Append {
        records: Vec<(u64, Vec<u8>)>,
        callback: LogFlushed<TypeConfig>,
    },
    Truncate {
        since: u64,
        done: oneshot::Sender<io::Result<()>>,
    },
    Purge {
        upto: LogId,
        done: oneshot::Sender<io::Result<()>>,
    },
    SaveVote {
        bytes: Vec<u8>,
        done: oneshot::Sender<io::Result<()>>,
    },
    SaveCommitted {
        bytes: Vec<u8>,
        done: oneshot::Sender<io::Result<()>>,
    },
}

/// The Raft log and vote, persisted under one directory.
pub struct FileLogStore {
    mem: Arc<RwLock<LogMem>>,
    io: mpsc::Sender<IoOp>,
}

/// A cheap reader of the live log entries, for replication tasks.
#[derive(Clone)]
pub struct FileLogReader {
    mem: Arc<RwLock<LogMem>>,
}

/// The I/O thread of a [`FileLogStore`]; joins once the store is dropped and
/// every queued write finished.
#[derive(Debug)]
pub struct LogIoHandle {
    thread: std::thread::JoinHandle<()>,
}

impl LogIoHandle {
    /// Waits for the I/O thread to finish its queued writes and exit. The
    /// store must have been dropped (Raft shut down) for this to return.
    pub fn join(self) -> Result<(), ControllerError> {
        self.thread
            .join()
            .map_err(|_| ControllerError::Task("the raft log I/O thread panicked".to_owned()))
    }
}

/// The segment files, owned by the I/O thread.
struct LogFiles {
    dir: PathBuf,
    log_dir: PathBuf,
    /// First index → byte length, for every segment on disk.
    segments: BTreeMap<u64, u64>,
    /// The last segment, open for appending.
    active: Option<(u64, File)>,
    /// Index → (segment first index, byte offset) of every live entry.
    positions: BTreeMap<u64, (u64, u64)>,
    /// Set after the first I/O error; every later write fails with it.
    failed: Option<String>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn corrupt(path: &Path, reason: impl Into<String>) -> ControllerError {
    ControllerError::Corrupt {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ControllerError + '_ {
    move |source| ControllerError::Io {
        path: path.to_owned(),
        source,
    }
}

fn segment_path(log_dir: &Path, first: u64) -> PathBuf {
    log_dir.join(format!("{first:020}.log"))
}

/// Frames one payload: `len | crc32c | payload`.
pub(crate) fn frame(payload: &[u8]) -> io::Result<Vec<u8>> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_RECORD_LEN)
        .ok_or_else(|| io_err(format!("log entry of {} bytes is too large", payload.len())))?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Parses the record at the start of `buf`: `Ok((payload, record_len))`, or
/// `Err(reason)` when the record is incomplete or fails its checksum.
pub(crate) fn parse_record(buf: &[u8]) -> Result<(&[u8], usize), String> {
    if buf.len() < HEADER_LEN {
        return Err(format!("incomplete record header ({} bytes)", buf.len()));
    }
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&buf[0..4]);
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(&buf[4..8]);
    let len = u32::from_le_bytes(len_bytes);
    if len > MAX_RECORD_LEN {
        return Err(format!(
            "record length {len} exceeds the {MAX_RECORD_LEN} limit"
        ));
    }
    let end = HEADER_LEN + len as usize;
    if buf.len() < end {
        return Err(format!(
            "incomplete record: {} of {len} payload bytes",
            buf.len() - HEADER_LEN
        ));
    }
    let payload = &buf[HEADER_LEN..end];
    if crc32c::crc32c(payload) != u32::from_le_bytes(crc_bytes) {
        return Err("record checksum mismatch".to_owned());
    }
    Ok((payload, end))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, ControllerError> {
    match read_optional(path).map_err(io_error(path))? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| corrupt(path, format!("unreadable JSON: {e}"))),
    }
}

impl FileLogStore {
    /// Opens (or creates) the log under `dir`, recovering from a torn tail,
    /// and starts its I/O thread.
    pub fn open(dir: &Path) -> Result<(FileLogStore, LogIoHandle), ControllerError> {
        let log_dir = dir.join(LOG_DIR);
        std::fs::create_dir_all(&log_dir).map_err(io_error(&log_dir))?;
        sync_dir(dir).map_err(io_error(dir))?;

        let vote: Option<Vote<NodeId>> = read_json(&dir.join(VOTE_FILE))?;
        let last_purged: Option<LogId> = read_json(&dir.join(PURGED_FILE))?;
        let committed_path = dir.join(COMMITTED_FILE);
        let committed: Option<LogId> = match read_json(&committed_path) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring unreadable committed log id; it is re-learned from the leader");
                None
            }
        };

        let mut firsts = Vec::new();
        for item in std::fs::read_dir(&log_dir).map_err(io_error(&log_dir))? {
            let item = item.map_err(io_error(&log_dir))?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".log")
                && let Ok(first) = stem.parse::<u64>()
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();

        let mut entries = BTreeMap::new();
        let mut positions = BTreeMap::new();
        let mut segments = BTreeMap::new();
        let mut last_kept: Option<u64> = None;
        for (i, first) in firsts.iter().copied().enumerate() {
            let is_last = i + 1 == firsts.len();
            let path = segment_path(&log_dir, first);
            let data = std::fs::read(&path).map_err(io_error(&path))?;
            let mut off = 0usize;
            let mut first_record = true;
            while off < data.len() {
                let (payload, rec_len) = match parse_record(&data[off..]) {
                    Ok(r) => r,
                    Err(reason) if is_last => {
                        tracing::warn!(
                            segment = %path.display(),
                            offset = off,
                            dropped_bytes = data.len() - off,
                            %reason,
                            "truncating a torn tail of the raft log"
                        );
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(io_error(&path))?;
                        f.set_len(off as u64).map_err(io_error(&path))?;
                        f.sync_all().map_err(io_error(&path))?;
                        break;
                    }
                    Err(reason) => {
                        return Err(corrupt(
                            &path,
                            format!("{reason} at offset {off} in a sealed segment"),
                        ));
                    }
                };
                let entry: Entry = serde_json::from_slice(payload).map_err(|e| {
                    corrupt(&path, format!("undecodable entry at offset {off}: {e}"))
                })?;
                let index = entry.log_id.index;
                if first_record && index != first {
                    return Err(corrupt(
                        &path,
                        format!("segment starts with index {index}, its name says {first}"),
                    ));
                }
                first_record = false;
                let purged = last_purged.is_some_and(|p| index <= p.index);
                if !purged {
                    let expected = match (last_kept, last_purged) {
                        (Some(prev), _) => Some(prev + 1),
                        (None, Some(p)) => Some(p.index + 1),
                        (None, None) => None,
                    };
                    if expected.is_some_and(|want| want != index) {
                        return Err(corrupt(
                            &path,
                            format!(
                                "log hole: found index {index} where {} was expected",
                                expected.unwrap_or_default()
                            ),
                        ));
                    }
                    positions.insert(index, (first, off as u64));
                    entries.insert(index, entry);
                    last_kept = Some(index);
                }
                off += rec_len;
            }
            let len = std::fs::metadata(&path).map_err(io_error(&path))?.len();
            segments.insert(first, len);
        }

        let active = match segments.last_key_value() {
            Some((&first, _)) => {
                let path = segment_path(&log_dir, first);
                let f = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(io_error(&path))?;
                Some((first, f))
            }
            None => None,
        };
        tracing::info!(
            dir = %dir.display(),
            entries = entries.len(),
            segments = segments.len(),
            last_purged = ?last_purged.map(|l| l.index),
            "raft log recovered"
        );

        let mem = Arc::new(RwLock::new(LogMem {
            entries,
            last_purged,
            vote,
            committed,
        }));
        let files = LogFiles {
            dir: dir.to_owned(),
            log_dir,
            segments,
            active,
            positions,
            failed: None,
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("comet-raft-log".to_owned())
            .spawn(move || files.run(rx))
            .map_err(io_error(dir))?;
        Ok((FileLogStore { mem, io: tx }, LogIoHandle { thread }))
    }

    async fn submit(
        &self,
        make: impl FnOnce(oneshot::Sender<io::Result<()>>) -> IoOp,
    ) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.io
            .send(make(done))
            .map_err(|_| io_err("the raft log I/O thread has stopped"))?;
        wait.await
            .map_err(|_| io_err("the raft log I/O thread has stopped"))?
    }
}

impl RaftLogReader<TypeConfig> for FileLogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .mem
            .read()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogReader<TypeConfig> for FileLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .mem
            .read()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for FileLogStore {
    type LogReader = FileLogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let mem = self.mem.read();
        let last_purged_log_id = mem.last_purged;
        let last_log_id = mem
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        FileLogReader {
            mem: self.mem.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.submit(|done| IoOp::SaveVote { bytes, done })
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.mem.write().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.mem.read().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(&committed).map_err(|e| StorageIOError::write(&e))?;
        self.submit(|done| IoOp::SaveCommitted { bytes, done })
            .await
            .map_err(|e| StorageIOError::write(&e))?;
        self.mem.write().committed = committed;
        Ok(())
    }

    /// The saved committed log id, clamped to the last entry present: the
    /// committed id may have been saved before a follower's entries were
    /// flushed, and a torn tail may have dropped them since. Every present
    /// entry up to the saved index is committed, so the clamp is safe.
    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let mem = self.mem.read();
        let Some(committed) = mem.committed else {
            return Ok(None);
        };
        let last = mem
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(mem.last_purged);
        Ok(match last {
            Some(last) if last.index < committed.index => Some(last),
            Some(_) => Some(committed),
            None => None,
        })
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut records = Vec::new();
        let mut decoded = Vec::new();
        for entry in entries {
            let payload = serde_json::to_vec(&entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            let framed =
                frame(&payload).map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            records.push((entry.log_id.index, framed));
            decoded.push(entry);
        }
        {
            let mut mem = self.mem.write();
            for entry in decoded {
                mem.entries.insert(entry.log_id.index, entry);
            }
        }
        if records.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        self.io
            .send(IoOp::Append { records, callback })
            .map_err(|_| {
                StorageIOError::write_logs(&io_err("the raft log I/O thread has stopped"))
            })?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(since = log_id.index, "truncating raft log");
        let since = log_id.index;
        self.mem.write().entries.split_off(&since);
        self.submit(|done| IoOp::Truncate { since, done })
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(upto = log_id.index, "purging raft log");
        {
            let mut mem = self.mem.write();
            let keep = mem.entries.split_off(&(log_id.index + 1));
            mem.entries = keep;
            if mem.last_purged.is_none_or(|p| p.index < log_id.index) {
                mem.last_purged = Some(log_id);
            }
        }
        self.submit(|done| IoOp::Purge { upto: log_id, done })
            .await
            .map_err(|e| {
                StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Delete, AnyError::new(&e))
            })?;
        Ok(())
    }
}

impl LogFiles {
    fn run(mut self, rx: mpsc::Receiver<IoOp>) {
        let mut pending: Option<IoOp> = None;
        loop {
            let op = match pending.take() {
                Some(op) => op,
                None => match rx.recv() {
                    Ok(op) => op,
                    Err(_) => break,
                },
            };
            match op {
                IoOp::Append { records, callback } => {
                    let mut batch = vec![(records, callback)];
                    while let Ok(next) = rx.try_recv() {
                        match next {
                            IoOp::Append { records, callback } => batch.push((records, callback)),
                            other => {
                                pending = Some(other);
                                break;
                            }
                        }
                    }
                    let result = self.guarded(|files| {
                        files.append_batch(batch.iter().flat_map(|(records, _)| records.iter()))
                    });
                    for (_, callback) in batch {
                        callback.log_io_completed(
                            result
                                .as_ref()
                                .map(|_| ())
                                .map_err(|e| io::Error::new(e.kind(), e.to_string())),
                        );
                    }
                }
                IoOp::Truncate { since, done } => {
                    let _ = done.send(self.guarded(|files| files.truncate(since)));
                }
                IoOp::Purge { upto, done } => {
                    let _ = done.send(self.guarded(|files| files.purge(upto)));
                }
                IoOp::SaveVote { bytes, done } => {
                    let path = self.dir.join(VOTE_FILE);
                    let _ = done.send(self.guarded(|_| atomic_write(&path, &bytes, true)));
                }
                IoOp::SaveCommitted { bytes, done } => {
                    let path = self.dir.join(COMMITTED_FILE);
                    let _ = done.send(self.guarded(|_| atomic_write(&path, &bytes, false)));
                }
            }
        }
        if let Some((_, f)) = &self.active
            && let Err(e) = f.sync_data()
        {
            tracing::error!(error = %e, "final raft log sync failed");
        }
        tracing::debug!("raft log I/O thread stopped");
    }

    /// Runs a write unless an earlier one failed; records the first failure.
    fn guarded(&mut self, op: impl FnOnce(&mut Self) -> io::Result<()>) -> io::Result<()> {
        if let Some(msg) = &self.failed {
            return Err(io_err(format!(
                "raft log store disabled after an earlier I/O error: {msg}"
            )));
        }
        let result = op(self);
        if let Err(e) = &result {
            tracing::error!(error = %e, dir = %self.dir.display(), "raft log write failed; the store is now read-only");
            self.failed = Some(e.to_string());
        }
        result
    }

    fn roll(&mut self, first: u64) -> io::Result<()> {
        if let Some((_, f)) = &self.active {
            f.sync_data()?;
        }
        let path = segment_path(&self.log_dir, first);
        let f = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        sync_dir(&self.log_dir)?;
        self.segments.insert(first, 0);
        self.active = Some((first, f));
        Ok(())
    }

    fn append_batch<'a>(
        &mut self,
        records: impl Iterator<Item = &'a (u64, Vec<u8>)>,
    ) -> io::Result<()> {
        for (index, framed) in records {
            let needs_roll = match (&self.active, self.segments.last_key_value()) {
                (Some(_), Some((_, len))) => *len >= SEGMENT_TARGET_BYTES,
                _ => true,
            };
            if needs_roll {
                self.roll(*index)?;
            }
            let Some((first, f)) = &mut self.active else {
                return Err(io_err("no active raft log segment"));
            };
            f.write_all(framed)?;
            let first = *first;
            let len = self
                .segments
                .get_mut(&first)
                .ok_or_else(|| io_err("active segment missing from the segment table"))?;
            self.positions.insert(*index, (first, *len));
            *len += framed.len() as u64;
        }
        if let Some((_, f)) = &self.active {
            f.sync_data()?;
        }
        Ok(())
    }

    fn truncate(&mut self, since: u64) -> io::Result<()> {
        let doomed: Vec<u64> = self.segments.range(since..).map(|(k, _)| *k).collect();
        for first in doomed.iter().rev() {
            if self.active.as_ref().is_some_and(|(a, _)| a == first) {
                self.active = None;
            }
            std::fs::remove_file(segment_path(&self.log_dir, *first))?;
            self.segments.remove(first);
        }
        if let Some(&(seg, off)) = self.positions.get(&since)
            && seg < since
        {
            let path = segment_path(&self.log_dir, seg);
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(off)?;
            f.sync_all()?;
            self.segments.insert(seg, off);
        }
        self.positions.split_off(&since);
        if !doomed.is_empty() {
            sync_dir(&self.log_dir)?;
        }
        self.reopen_active()
    }

    fn reopen_active(&mut self) -> io::Result<()> {
        self.active = match self.segments.last_key_value() {
            Some((&first, _)) => {
                let f = OpenOptions::new()
                    .append(true)
                    .open(segment_path(&self.log_dir, first))?;
                Some((first, f))
            }
            None => None,
        };
        Ok(())
    }

    fn purge(&mut self, upto: LogId) -> io::Result<()> {
        let bytes = serde_json::to_vec(&upto).map_err(io_err)?;
        atomic_write(&self.dir.join(PURGED_FILE), &bytes, true)?;
        let last_on_disk = self.positions.last_key_value().map(|(k, _)| *k);
        let doomed: Vec<u64> = if last_on_disk.is_none_or(|last| last <= upto.index) {
            self.segments.keys().copied().collect()
        } else {
            let firsts: Vec<u64> = self.segments.keys().copied().collect();
            firsts
                .windows(2)
                .filter(|w| w[1] <= upto.index + 1)
                .map(|w| w[0])
                .collect()
        };
        for first in &doomed {
            if self.active.as_ref().is_some_and(|(a, _)| a == first) {
                self.active = None;
            }
            std::fs::remove_file(segment_path(&self.log_dir, *first))?;
            self.segments.remove(first);
        }
        let keep = self.positions.split_off(&(upto.index + 1));
        self.positions = keep;
        if !doomed.is_empty() {
            sync_dir(&self.log_dir)?;
        }
        if self.active.is_none() {
            self.reopen_active()?;
        }
        Ok(())
    }
}
