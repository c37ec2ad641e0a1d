//! The commitlog: every topic's messages, appended to one log of fixed-size segment files.
//!
//! ```text
//! commitlog/00000000000000000000   segment 0: physical offsets [0, S)
//! commitlog/00000000001073741824   segment 1: [S, 2S)          (S = segment size)
//! ```
//!
//! A segment holds whole records (see [`crate::record`]); a record never spans two segments.
//! When the next record does not fit, the rest of the segment is covered by a blank marker
//! (or left as fewer than 8 zero bytes) and appends continue at the next segment's start.
//!
//! Invariants:
//! - Appends are serialized by one lock; a batch is written contiguously under one
//!   acquisition, and its records say how many follow (`batch_left`), so recovery keeps or
//!   drops a batch whole.
//! - `write_pos` only moves forward while the store runs, and every byte below it belongs to a
//!   complete, CRC-protected record or blank marker.
//! - Segment files are never shrunk or rewritten below `write_pos`; retention deletes whole
//!   segments from the front.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};

use crate::error::{Result, StoreError};
use crate::mapped_file::{MappedFile, Writer};
use crate::record::{self, Assigned, Marker, Message, RecordView, StoredMessage};

/// Where an appended message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Commitlog offset of the record.
    pub physical_offset: i64,
    /// Record size in bytes.
    pub size: u32,
    /// Logical offset in the message's (topic, queue).
    pub queue_offset: i64,
    /// Store timestamp assigned to the record (ms since the Unix epoch).
    pub store_timestamp: i64,
}

/// What a replica append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAppended {
    /// The end of the log after the append.
    pub end: i64,
    /// Records appended.
    pub records: u64,
}

/// What [`verify_raw_chunk`] found in a replica chunk.
#[derive(Debug)]
pub(crate) struct VerifiedChunk {
    /// Records in the chunk.
    pub(crate) records: u64,
    /// The chunk ends with its segment's blank marker (or zero tail).
    pub(crate) blank: bool,
    /// Store timestamp of the last record.
    pub(crate) last_ts: Option<i64>,
    /// `(topic, queue id, next queue offset)` after each record, in order.
    pub(crate) next_offsets: Vec<(String, i32, i64)>,
}

/// Verifies replica bytes `data` to be written at physical offset `at` of a log with segments
/// of `seg` bytes, record by record (see [`crate::record`]), without touching the log: whole
/// records and batches only, inside one segment, ending at most with the segment's blank
/// marker. Bytes from the network: every length is checked before use.
pub(crate) fn verify_raw_chunk(at: i64, seg: usize, data: &[u8]) -> Result<VerifiedChunk> {
    if at < 0 {
        return Err(StoreError::corrupt(at, "negative replica offset"));
    }
    let in_seg = (at % seg as i64) as usize;
    if in_seg + data.len() > seg {
        return Err(StoreError::corrupt(
            at,
            format!(
                "replica chunk of {} bytes crosses the end of its segment",
                data.len()
            ),
        ));
    }
    let mut off = 0usize;
    let mut blank = false;
    let mut batch_left = 0u32;
    let mut records = 0u64;
    let mut last_ts = None;
    let mut next_offsets: Vec<(String, i32, i64)> = Vec::new();
    while off < data.len() {
        let phys = at + off as i64;
        let rest = seg - (in_seg + off);
        if rest < record::MIN_MARKER {
            if data.len() - off != rest || !crate::mapped_file::all_zero(&data[off..]) {
                return Err(StoreError::corrupt(
                    phys,
                    "bad bytes at the end of a segment",
                ));
            }
            blank = true;
            break;
        }
        if data.len() - off < record::MIN_MARKER {
            return Err(StoreError::corrupt(
                phys,
                "chunk ends inside a record header",
            ));
        }
        match record::peek_head(&data[off..off + record::MIN_MARKER], rest) {
            Marker::Record(n) => {
                let buf = data
                    .get(off..off + n)
                    .ok_or_else(|| StoreError::corrupt(phys, "chunk ends inside a record"))?;
                let v = RecordView::parse(buf, phys)?;
                next_offsets.push((v.topic().to_owned(), v.queue_id(), v.queue_offset() + 1));
                batch_left = v.batch_left();
                last_ts = Some(v.store_timestamp());
                records += 1;
                off += n;
            }
            Marker::Blank => {
                if off + record::MIN_MARKER != data.len() || batch_left != 0 {
                    return Err(StoreError::corrupt(
                        phys,
                        "a blank marker must end a chunk, after a complete batch",
                    ));
                }
                blank = true;
                break;
            }
            Marker::Invalid => {
                return Err(StoreError::corrupt(phys, "not a record or blank marker"));
            }
        }
    }
    if batch_left != 0 {
        return Err(StoreError::corrupt(
            at + off as i64,
            "chunk ends inside a batch",
        ));
    }
    Ok(VerifiedChunk {
        records,
        blank,
        last_ts,
        next_offsets,
    })
}

/// Raw log bytes for a replica (see [`crate::MessageStore::read_raw`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawChunk {
    /// Whole records, possibly ending with a segment's blank marker.
    pub data: Vec<u8>,
    /// Where the log continues after these bytes.
    pub end: i64,
    /// Records in `data`.
    pub records: u64,
}

#[derive(Clone)]
pub(crate) struct Segment {
    pub start: i64,
    pub file: Arc<MappedFile>,
}

struct AppendState {
    writer: Writer,
    active_start: i64,
    queue_offsets: HashMap<String, HashMap<i32, i64>>,
    last_store_ts: i64,
}

struct Prepared {
    start: i64,
    writer: Writer,
}

/// What recovery found in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanReport {
    /// Where verification started.
    pub scanned_from: i64,
    /// End of the valid log.
    pub valid_end: i64,
    /// Records verified.
    pub records: u64,
    /// Whether anything after `valid_end` was discarded.
    pub truncated: bool,
}

pub(crate) struct CommitLog {
    dir: PathBuf,
    segment_size: usize,
    store_host: SocketAddr,
    prefault: bool,
    segments: RwLock<VecDeque<Segment>>,
    append: Mutex<AppendState>,
    prepared: Mutex<Option<Prepared>>,
    active_start: AtomicI64,
    write_pos: AtomicI64,
    min_pos: AtomicI64,
    /// Log offset up to which the pages ahead of the write position were populated.
    populated: AtomicI64,
}

/// How far ahead of the write position [`CommitLog::populate_ahead`] keeps pages mapped.
pub(crate) const POPULATE_WINDOW: i64 = 4 << 20;

fn segment_name(start: i64) -> String {
    format!("{start:020}")
}

/// Creates `dir` holding one empty segment that starts at `start` (a multiple of the segment
/// size), for a log that begins there.
pub(crate) fn create_empty_log(dir: &Path, segment_size: usize, start: i64) -> Result<()> {
    fs::create_dir_all(dir).map_err(StoreError::io("create commitlog dir", dir))?;
    MappedFile::create(&dir.join(segment_name(start)), segment_size, 0)?;
    Ok(())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl CommitLog {
    /// Opens (or creates) the log in `dir`, verifies it record by record from `scan_from`
    /// (clamped into the log; `None` = from the first segment), and cuts everything after the
    /// first record that fails verification, keeping batches whole. With `limit`, the log is
    /// also cut before the first record that does not end at or below `limit` (a replica
    /// dropping a divergent tail); `scan_from` must then not lie beyond `limit`.
    pub(crate) fn open(
        dir: &Path,
        segment_size: usize,
        store_host: SocketAddr,
        prefault: bool,
        scan_from: Option<i64>,
        limit: Option<i64>,
    ) -> Result<(Self, ScanReport)> {
        fs::create_dir_all(dir).map_err(StoreError::io("create commitlog dir", dir))?;
        crate::mapped_file::remove_temp_files(dir)?;
        let mut starts = Vec::new();
        for e in fs::read_dir(dir).map_err(StoreError::io("list commitlog", dir))? {
            let e = e.map_err(StoreError::io("list commitlog", dir))?;
            let name = e.file_name();
            let Some(start) = name.to_str().and_then(|n| n.parse::<i64>().ok()) else {
                tracing::warn!(file = %e.path().display(), "ignoring unexpected file in commitlog");
                continue;
            };
            if start < 0 || start % segment_size as i64 != 0 {
                return Err(StoreError::Layout {
                    path: e.path(),
                    reason: format!(
                        "segment start {start} is not a multiple of the segment size \
                         {segment_size}; was the store created with another segment_size?"
                    ),
                });
            }
            starts.push(start);
        }
        starts.sort_unstable();
        for w in starts.windows(2) {
            if w[1] != w[0] + segment_size as i64 {
                return Err(StoreError::Layout {
                    path: dir.join(segment_name(w[0] + segment_size as i64)),
                    reason: "segment is missing: the log has a gap and cannot be served".into(),
                });
            }
        }
        let mut files = Vec::with_capacity(starts.len());
        for &s in &starts {
            files.push((
                s,
                MappedFile::open(&dir.join(segment_name(s)), segment_size, 0)?,
            ));
        }
        if files.is_empty() {
            files.push((
                0,
                MappedFile::create(&dir.join(segment_name(0)), segment_size, 0)?,
            ));
        }
        let first_start = files[0].0;
        let seg = segment_size as i64;
        let log_end = files[files.len() - 1].0 + seg;
        let from = scan_from.unwrap_or(first_start).clamp(first_start, log_end);
        let mut scan_seg = ((from - first_start) / seg) as usize;
        let mut pos = (from - first_start - scan_seg as i64 * seg) as usize;
        if scan_seg == files.len() {
            // The checkpoint points at the very end of the last segment.
            scan_seg -= 1;
            pos = segment_size;
        }
        let mut report = ScanReport {
            scanned_from: from,
            valid_end: from,
            records: 0,
            truncated: false,
        };
        let mut last_store_ts = 0;
        // Walk records; `batch_start` is the start of an unfinished batch, if any.
        let mut batch: Option<(i64, u32)> = None;
        let mut end_seg = scan_seg;
        let mut end_pos = pos;
        'segments: for (si, (start, mf)) in files.iter_mut().enumerate().skip(scan_seg) {
            if si > scan_seg {
                pos = 0;
            }
            mf.advise_sequential();
            let bytes = mf.recovery_bytes();
            loop {
                if limit.is_some_and(|l| *start + pos as i64 >= l) {
                    break 'segments;
                }
                match record::peek(&bytes[pos..]) {
                    Marker::Blank => {
                        if batch.is_none() {
                            // Segment full: the valid log continues in the next segment.
                            end_seg = si + 1;
                            end_pos = 0;
                        }
                        continue 'segments;
                    }
                    Marker::Invalid => break 'segments,
                    Marker::Record(n) => {
                        let phys = *start + pos as i64;
                        if limit.is_some_and(|l| phys + n as i64 > l) {
                            break 'segments;
                        }
                        let Ok(v) = RecordView::parse(&bytes[pos..pos + n], phys) else {
                            break 'segments;
                        };
                        batch = match (batch, v.batch_left()) {
                            (None, 0) => None,
                            (None, left) => Some((phys, left)),
                            (Some((b, expect)), left) if left + 1 == expect => {
                                (left > 0).then_some((b, left))
                            }
                            // A batch that does not continue as announced ends the log.
                            (Some(_), _) => break 'segments,
                        };
                        pos += n;
                        report.records += 1;
                        last_store_ts = v.store_timestamp();
                        if batch.is_none() {
                            end_seg = si;
                            end_pos = pos;
                        }
                    }
                }
            }
        }
        for (_, mf) in files.iter().skip(scan_seg) {
            mf.advise_normal();
        }
        // Everything after (end_seg, end_pos) goes.
        if end_seg == files.len() {
            let start = files[files.len() - 1].0 + seg;
            files.push((
                start,
                MappedFile::create(&dir.join(segment_name(start)), segment_size, 0)?,
            ));
        }
        let valid_end = files[end_seg].0 + end_pos as i64;
        while files.len() > end_seg + 1 {
            if let Some((start, mf)) = files.pop() {
                let path = mf.path().to_path_buf();
                drop(mf);
                tracing::warn!(
                    segment = start,
                    "removing segment beyond the valid end of the log"
                );
                fs::remove_file(&path).map_err(StoreError::io("remove segment", &path))?;
                report.truncated = true;
            }
        }
        {
            // Whatever lies after the valid end is released (hole punch: metadata only, no
            // reading of a possibly huge unused remainder). Stale bytes there could otherwise
            // line up with a later append and be taken for records after the next crash.
            let (_, active) = &mut files[end_seg];
            let probe_end = (end_pos + (1 << 16)).min(segment_size);
            if !crate::mapped_file::all_zero(&active.recovery_bytes()[end_pos..probe_end]) {
                tracing::warn!(
                    offset = valid_end,
                    "cutting torn or corrupt tail of the commitlog"
                );
                report.truncated = true;
            }
            active.zero_tail(end_pos)?;
        }
        let mut segments = VecDeque::with_capacity(files.len());
        let mut writer = None;
        for (i, (start, mut mf)) in files.into_iter().enumerate() {
            let active = i == end_seg;
            mf.set_published(if active { end_pos } else { segment_size });
            let file = Arc::new(mf);
            if active {
                writer = file.writer();
            }
            segments.push_back(Segment { start, file });
        }
        let active_start = segments[end_seg].start;
        let writer = writer.ok_or_else(|| StoreError::Layout {
            path: dir.to_path_buf(),
            reason: "active segment already has a writer".into(),
        })?;
        report.valid_end = valid_end;
        let log = CommitLog {
            dir: dir.to_path_buf(),
            segment_size,
            store_host,
            prefault,
            segments: RwLock::new(segments),
            append: Mutex::new(AppendState {
                writer,
                active_start,
                queue_offsets: HashMap::new(),
                last_store_ts,
            }),
            prepared: Mutex::new(None),
            active_start: AtomicI64::new(active_start),
            write_pos: AtomicI64::new(valid_end),
            min_pos: AtomicI64::new(first_start),
            populated: AtomicI64::new(valid_end),
        };
        Ok((log, report))
    }

    pub(crate) fn segment_size(&self) -> usize {
        self.segment_size
    }

    /// One past the last byte of the last complete record.
    pub(crate) fn write_pos(&self) -> i64 {
        self.write_pos.load(Ordering::Acquire)
    }

    /// Start of the oldest segment still stored.
    pub(crate) fn min_pos(&self) -> i64 {
        self.min_pos.load(Ordering::Acquire)
    }

    /// Sets the next logical offset of each (topic, queue); recovery calls this once the
    /// consume queues are rebuilt.
    pub(crate) fn set_queue_offsets(&self, offsets: HashMap<String, HashMap<i32, i64>>) {
        self.append.lock().queue_offsets = offsets;
    }

    /// Appends `msgs` as one contiguous batch, stamped with `now_ms` (never earlier than the
    /// previous record's store time). Validation failures reject the whole batch before
    /// anything is written.
    pub(crate) fn append(
        &self,
        msgs: &[Message],
        max_record: usize,
        now_ms: i64,
    ) -> Result<Vec<AppendResult>> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        let mut sizes = Vec::with_capacity(msgs.len());
        let mut total = 0usize;
        for m in msgs {
            record::validate(m)?;
            let n = record::encoded_len(m);
            if n > max_record || m.topic.len() > u16::MAX as usize {
                return Err(StoreError::MessageTooLarge {
                    size: n,
                    max: max_record,
                });
            }
            total += n;
            sizes.push(n);
        }
        if total > max_record {
            return Err(StoreError::MessageTooLarge {
                size: total,
                max: max_record,
            });
        }
        let mut results = Vec::with_capacity(msgs.len());
        let mut st = self.append.lock();
        let mut pos = st.writer.position();
        if pos + total > self.segment_size {
            self.roll(&mut st, pos)?;
            pos = 0;
        }
        let store_ts = now_ms.max(st.last_store_ts);
        st.last_store_ts = store_ts;
        let active_start = st.active_start;
        let n = msgs.len();
        // Next offset of each queue the batch touches; a single append needs no map.
        let mut batch_next: HashMap<(&str, i32), i64> = HashMap::new();
        for (i, (m, size)) in msgs.iter().zip(&sizes).enumerate() {
            let stored = || {
                st.queue_offsets
                    .get(m.topic.as_str())
                    .and_then(|q| q.get(&m.queue_id))
                    .copied()
                    .unwrap_or(0)
            };
            let queue_offset = if n == 1 {
                stored()
            } else {
                let next = batch_next
                    .entry((m.topic.as_str(), m.queue_id))
                    .or_insert_with(stored);
                *next += 1;
                *next - 1
            };
            let a = Assigned {
                queue_offset,
                physical_offset: active_start + pos as i64,
                store_timestamp: store_ts,
                batch_left: (n - 1 - i) as u32,
            };
            let Some(buf) = st.writer.unpublished_mut(pos, *size) else {
                return Err(StoreError::corrupt(
                    a.physical_offset,
                    "segment has no room for record",
                ));
            };
            record::encode(buf, m, a, &self.store_host);
            results.push(AppendResult {
                physical_offset: a.physical_offset,
                size: *size as u32,
                queue_offset,
                store_timestamp: store_ts,
            });
            pos += size;
        }
        // All records are written: only now do the queue offsets move and the bytes appear.
        for (m, r) in msgs.iter().zip(&results) {
            let qmap = match st.queue_offsets.get_mut(m.topic.as_str()) {
                Some(q) => q,
                None => st.queue_offsets.entry(m.topic.clone()).or_default(),
            };
            qmap.insert(m.queue_id, r.queue_offset + 1);
        }
        st.writer.publish(pos);
        self.write_pos
            .store(active_start + pos as i64, Ordering::Release);
        Ok(results)
    }

    /// Appends records a master wrote, byte for byte, at `at` (replication).
    ///
    /// `data` must continue the log exactly where it ends, hold only whole records that verify
    /// (CRC32C, own physical offset, structure) at their offsets, end on a batch boundary, lie
    /// within one segment, and may end with the segment's blank marker (or, when fewer than 8
    /// bytes of the segment remain, those zero bytes), after which the log continues at the
    /// next segment. Everything is verified before a byte is written.
    ///
    /// # Errors
    /// [`StoreError::NotContiguous`] when `at` is not the log's end; [`StoreError::Corrupt`]
    /// for bytes that fail verification.
    pub(crate) fn append_raw(&self, at: i64, data: &[u8]) -> Result<RawAppended> {
        let seg = self.segment_size;
        let VerifiedChunk {
            records,
            blank,
            last_ts,
            next_offsets,
        } = verify_raw_chunk(at, seg, data)?;
        let mut st = self.append.lock();
        let mut pos = st.writer.position();
        let end = st.active_start + pos as i64;
        if end != at {
            return Err(StoreError::NotContiguous {
                offset: at,
                expected: end,
            });
        }
        if data.is_empty() {
            return Ok(RawAppended { end, records: 0 });
        }
        if pos == seg {
            self.roll(&mut st, pos)?;
            pos = 0;
        }
        if !st.writer.write(pos, data) {
            return Err(StoreError::corrupt(at, "segment has no room for the chunk"));
        }
        for (topic, queue_id, next) in next_offsets {
            st.queue_offsets
                .entry(topic)
                .or_default()
                .insert(queue_id, next);
        }
        if let Some(ts) = last_ts {
            st.last_store_ts = st.last_store_ts.max(ts);
        }
        let new_pos = if blank { seg } else { pos + data.len() };
        st.writer.publish(new_pos);
        let end = st.active_start + new_pos as i64;
        self.write_pos.store(end, Ordering::Release);
        Ok(RawAppended { end, records })
    }

    /// Up to about `max_bytes` of whole records from `from` (a record boundary), never past
    /// `limit` or the written end, never across a segment end, always ending on a batch
    /// boundary (a batch larger than `max_bytes` comes whole). A segment's blank marker ends
    /// the chunk, whose `end` is then the next segment's start.
    ///
    /// # Errors
    /// [`StoreError::OffsetOutOfRange`] outside `[min, write end]`; [`StoreError::Corrupt`]
    /// when `from` is not a record boundary.
    pub(crate) fn read_raw(&self, from: i64, max_bytes: usize, limit: i64) -> Result<RawChunk> {
        let (min, write) = (self.min_pos(), self.write_pos());
        if from < min || from > write {
            return Err(StoreError::OffsetOutOfRange {
                offset: from,
                min,
                max: write,
            });
        }
        let limit = limit.min(write);
        let empty = RawChunk {
            data: Vec::new(),
            end: from,
            records: 0,
        };
        if from >= limit {
            return Ok(empty);
        }
        let Some(segment) = self.segment_of(from) else {
            return Ok(empty);
        };
        let seg = self.segment_size;
        let start = (from - segment.start) as usize;
        let mut p = start;
        let mut taken_end = start;
        let mut end = from;
        let mut batch_left = 0u32;
        let mut records = 0u64;
        while segment.start + (p as i64) < limit {
            let phys = segment.start + p as i64;
            let rest = seg - p;
            if rest < record::MIN_MARKER {
                taken_end = seg;
                end = segment.start + seg as i64;
                break;
            }
            let head = segment
                .file
                .bytes(p, record::MIN_MARKER)
                .ok_or_else(|| StoreError::corrupt(phys, "record header beyond the written log"))?;
            match record::peek_head(head, rest) {
                Marker::Record(n) => {
                    if phys + n as i64 > limit {
                        break;
                    }
                    if p > start && p - start + n > max_bytes && batch_left == 0 {
                        break;
                    }
                    let buf = segment.file.bytes(p, n).ok_or_else(|| {
                        StoreError::corrupt(phys, "record beyond the written log")
                    })?;
                    let v = RecordView::parse_trusted(buf, phys)?;
                    batch_left = v.batch_left();
                    records += 1;
                    p += n;
                    taken_end = p;
                    end = segment.start + p as i64;
                }
                Marker::Blank => {
                    if batch_left != 0 {
                        return Err(StoreError::corrupt(phys, "blank marker inside a batch"));
                    }
                    taken_end = p + record::MIN_MARKER;
                    end = segment.start + seg as i64;
                    break;
                }
                Marker::Invalid => {
                    return Err(StoreError::corrupt(
                        phys,
                        "not a record boundary of the log",
                    ));
                }
            }
        }
        let data = segment
            .file
            .bytes(start, taken_end - start)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| StoreError::corrupt(from, "chunk beyond the written log"))?;
        Ok(RawChunk { data, end, records })
    }

    fn roll(&self, st: &mut AppendState, pos: usize) -> Result<()> {
        let remaining = self.segment_size - pos;
        if remaining >= record::MIN_MARKER
            && let Some(buf) = st.writer.unpublished_mut(pos, record::MIN_MARKER)
        {
            record::encode_blank(buf, remaining);
        }
        st.writer.publish(self.segment_size);
        let next = st.active_start + self.segment_size as i64;
        self.write_pos.store(next, Ordering::Release);
        // The allocator creates segments under the same lock and reads `active_start` only
        // while holding it, so the two never create the same file.
        let mut slot = self.prepared.lock();
        let writer = match slot.take() {
            Some(p) if p.start == next => p.writer,
            stale => {
                drop(stale);
                self.create_segment(next)?
            }
        };
        self.segments.write().push_back(Segment {
            start: next,
            file: Arc::clone(writer.file()),
        });
        st.writer = writer;
        st.active_start = next;
        self.active_start.store(next, Ordering::Release);
        drop(slot);
        tracing::debug!(segment = next, "rolled to a new commitlog segment");
        Ok(())
    }

    fn create_segment(&self, start: i64) -> Result<Writer> {
        let path = self.dir.join(segment_name(start));
        let file = Arc::new(MappedFile::create(&path, self.segment_size, 0)?);
        let mut w = file.writer().ok_or_else(|| StoreError::Layout {
            path: path.clone(),
            reason: "new segment already has a writer".into(),
        })?;
        if self.prefault {
            w.prefault(0, self.segment_size);
        }
        Ok(w)
    }

    /// Whether the write position has come within half a window of the populated end (or of
    /// the segment's end, past which nothing is populated before the roll), so
    /// [`CommitLog::populate_ahead`] has work to do.
    pub(crate) fn wants_populate(&self) -> bool {
        let pos = self.write_pos();
        let seg_end = self.active_start.load(Ordering::Acquire) + self.segment_size as i64;
        (pos + POPULATE_WINDOW / 2).min(seg_end) > self.populated.load(Ordering::Relaxed)
    }

    /// Populates the active segment's pages from the write position up to a window ahead (see
    /// [`MappedFile::populate`]), so appends do not take the page faults that read or zero
    /// them. Called from the allocator thread, never under the append lock.
    pub(crate) fn populate_ahead(&self) {
        let pos = self.write_pos();
        let seg_end = self.active_start.load(Ordering::Acquire) + self.segment_size as i64;
        // Never below the write position, so a full segment awaiting its roll (no segment
        // holds `pos` yet) does not look like pending work.
        let to = (pos + POPULATE_WINDOW).min(seg_end).max(pos);
        let from = self.populated.load(Ordering::Relaxed).max(pos);
        if to > from
            && let Some(seg) = self.segment_of(from)
            && to <= seg.start + self.segment_size as i64
        {
            seg.file
                .populate((from - seg.start) as usize, (to - from) as usize);
        }
        self.populated.fetch_max(to, Ordering::Relaxed);
    }

    /// Creates the segment after the active one ahead of time, so the append that fills the
    /// active segment does not wait for file creation. Returns true if it created one.
    pub(crate) fn prepare_next(&self) -> Result<bool> {
        let mut slot = self.prepared.lock();
        let next = self.active_start.load(Ordering::Acquire) + self.segment_size as i64;
        if slot.as_ref().is_some_and(|p| p.start >= next) {
            return Ok(false);
        }
        let writer = self.create_segment(next)?;
        writer
            .file()
            .populate(0, POPULATE_WINDOW.min(self.segment_size as i64) as usize);
        *slot = Some(Prepared {
            start: next,
            writer,
        });
        Ok(true)
    }

    /// Removes a prepared segment that was never used (on shutdown), so it does not linger
    /// as an empty file.
    pub(crate) fn discard_prepared(&self) -> Result<()> {
        if let Some(p) = self.prepared.lock().take() {
            let path = p.writer.file().path().to_path_buf();
            drop(p);
            fs::remove_file(&path).map_err(StoreError::io("remove prepared segment", &path))?;
        }
        Ok(())
    }

    fn segment_of(&self, phys: i64) -> Option<Segment> {
        let segs = self.segments.read();
        let first = segs.front()?.start;
        if phys < first {
            return None;
        }
        segs.get(((phys - first) / self.segment_size as i64) as usize)
            .cloned()
    }

    /// Calls `f` with the verified record at `phys`; the view borrows the log only inside `f`.
    ///
    /// # Errors
    /// [`StoreError::OffsetOutOfRange`] outside the stored range; [`StoreError::Corrupt`] if
    /// the bytes there are not a valid record (they are never handed out).
    pub(crate) fn with_record<R>(
        &self,
        phys: i64,
        verify: bool,
        f: impl FnOnce(&RecordView<'_>) -> R,
    ) -> Result<R> {
        let (min, max) = (self.min_pos(), self.write_pos());
        let out_of_range = || StoreError::OffsetOutOfRange {
            offset: phys,
            min,
            max,
        };
        if phys < min || phys >= max {
            return Err(out_of_range());
        }
        let seg = self.segment_of(phys).ok_or_else(out_of_range)?;
        let pos = (phys - seg.start) as usize;
        let head = seg
            .file
            .bytes(pos, record::MIN_MARKER)
            .ok_or_else(|| StoreError::corrupt(phys, "record header beyond the written log"))?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let buf = seg.file.bytes(pos, len).ok_or_else(|| {
            StoreError::corrupt(phys, format!("record length {len} out of bounds"))
        })?;
        let view = if verify {
            RecordView::parse(buf, phys)?
        } else {
            RecordView::parse_trusted(buf, phys)?
        };
        Ok(f(&view))
    }

    /// Reads and verifies the record at `phys`.
    pub(crate) fn read(&self, phys: i64) -> Result<StoredMessage> {
        self.with_record(phys, true, |v| v.to_stored())
    }

    /// The position of the record after the one at `phys`, skipping blank segment ends; used
    /// by the dispatcher to walk the log. Returns `None` at the end of the written log.
    pub(crate) fn next_record_pos(&self, phys: i64) -> Option<i64> {
        let end = self.write_pos();
        let mut p = phys;
        while p < end {
            let seg = self.segment_of(p)?;
            let pos = (p - seg.start) as usize;
            let rest = self.segment_size - pos;
            let head = seg.file.bytes(pos, rest.min(record::MIN_MARKER))?;
            match record::peek_head(head, rest) {
                Marker::Record(_) => return Some(p),
                Marker::Blank | Marker::Invalid => p = seg.start + self.segment_size as i64,
            }
        }
        None
    }

    /// Flushes `[from, to)` of the log to disk.
    pub(crate) fn flush_range(&self, from: i64, to: i64) -> Result<()> {
        if to <= from {
            return Ok(());
        }
        let segs: Vec<Segment> = self
            .segments
            .read()
            .iter()
            .filter(|s| s.start < to && s.start + self.segment_size as i64 > from)
            .cloned()
            .collect();
        // Only the range's segments can hold dirty log pages (older ones were synced before),
        // so a whole-file fdatasync of each costs no more than a ranged msync, and is cheaper.
        for s in segs {
            s.file.sync_data()?;
        }
        Ok(())
    }

    /// The oldest segment, if it is not the active one: its start and last-modified time.
    pub(crate) fn oldest_sealed(&self) -> Option<(i64, Option<SystemTime>)> {
        let segs = self.segments.read();
        if segs.len() < 2 {
            return None;
        }
        let s = segs.front()?;
        let modified = fs::metadata(s.file.path()).and_then(|m| m.modified()).ok();
        Some((s.start, modified))
    }

    /// Deletes the oldest segment if it starts at `start` and is not the active one.
    pub(crate) fn delete_oldest(&self, start: i64) -> Result<bool> {
        let mut segs = self.segments.write();
        if segs.len() < 2 || segs.front().map(|s| s.start) != Some(start) {
            return Ok(false);
        }
        let Some(seg) = segs.pop_front() else {
            return Ok(false);
        };
        let next_min = segs.front().map(|s| s.start).unwrap_or(start);
        self.min_pos.store(next_min, Ordering::Release);
        drop(segs);
        let path = seg.file.path().to_path_buf();
        drop(seg);
        fs::remove_file(&path).map_err(StoreError::io("remove segment", &path))?;
        tracing::info!(segment = start, "deleted commitlog segment");
        Ok(true)
    }

    /// Number of segment files and their starts (for inspection).
    pub(crate) fn segment_starts(&self) -> Vec<i64> {
        self.segments.read().iter().map(|s| s.start).collect()
    }
}
