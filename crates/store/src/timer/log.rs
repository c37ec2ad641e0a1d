//! The timer log: append-only, segmented, fixed-size records.
//!
//! Positions are global byte offsets; record `p` lives in the segment named by the 20-digit
//! decimal `p - p % segment_size`, at offset `p % segment_size`. Segments are contiguous from
//! `first_base` to the append position `end`; retention removes whole segments from the front.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{debug, info, warn};

use super::record::{RECORD_SIZE, Record};
use crate::error::{Result, StoreError};
use crate::mapped_file::{MappedFile, Writer};

/// What is at a log position.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// The position lies before the first retained segment: retention removed it.
    Gone,
    /// The position is at or after the append position, or misaligned.
    Missing,
    /// The bytes there are not an intact record.
    Invalid,
    /// An intact record.
    Found(Record),
}

/// A range of one segment to sync: `(file, offset, len)`.
pub(crate) type SyncRange = (Arc<MappedFile>, usize, usize);

/// The segmented timer log. Owned by the store's state; not shared.
#[derive(Debug)]
pub(crate) struct TimerLog {
    dir: PathBuf,
    segment_size: usize,
    segments: VecDeque<Arc<MappedFile>>,
    /// Position of `segments[0]`; equals `end` rounded down to a segment when there are none.
    first_base: i64,
    /// The next append position.
    end: i64,
    /// Writer of the last segment, while it has room.
    writer: Option<Writer>,
}

impl TimerLog {
    /// Opens (or creates) the log in `dir` and recovers its tail.
    ///
    /// Records before `tail_from` (the checkpoint's flushed position) are trusted as durable and
    /// not scanned. From `tail_from` on, every record is verified; invalid ones are skipped
    /// (fixed-size records keep the scan aligned past a hole) and the append position becomes
    /// the end of the last intact record. Returns the intact tail records in log order.
    pub(crate) fn open(
        dir: &Path,
        segment_size: usize,
        tail_from: i64,
    ) -> Result<(Self, Vec<(i64, Record)>)> {
        fs::create_dir_all(dir).map_err(StoreError::io("create timer log dir", dir))?;
        // `MappedFile::create` builds files under a temporary name; a crash leaves only those.
        crate::mapped_file::remove_temp_files(dir)?;
        let seg = segment_size as i64;
        if tail_from < 0 || tail_from % RECORD_SIZE as i64 != 0 {
            return Err(StoreError::corrupt(
                tail_from,
                "timer checkpoint holds a misaligned flushed position",
            ));
        }
        let mut bases = list_segments(dir, seg)?;
        bases.sort_unstable();
        for pair in bases.windows(2) {
            if pair[1] != pair[0] + seg {
                return Err(StoreError::Layout {
                    path: dir.to_path_buf(),
                    reason: format!("gap between timer log segments {} and {}", pair[0], pair[1]),
                });
            }
        }
        let mut files = Vec::with_capacity(bases.len());
        for &base in &bases {
            files.push((
                base,
                MappedFile::open(&segment_path(dir, base), segment_size, 0)?,
            ));
        }
        if let Some((first, _)) = files.first()
            && *first > tail_from
        {
            return Err(StoreError::Layout {
                path: dir.to_path_buf(),
                reason: format!(
                    "timer log starts at {first}, after the flushed position {tail_from}"
                ),
            });
        }
        if let Some((last, _)) = files.last()
            && last + seg < tail_from
        {
            return Err(StoreError::Layout {
                path: dir.to_path_buf(),
                reason: format!(
                    "timer log ends at {}, before the flushed position {tail_from}",
                    last + seg
                ),
            });
        }

        // Scan the unflushed tail.
        let mut tail = Vec::new();
        let mut end = tail_from;
        let mut holes = 0u64;
        let mut invalid_since_valid = 0u64;
        for (base, file) in &mut files {
            let base = *base;
            if base + seg <= tail_from {
                continue;
            }
            file.advise_sequential();
            let bytes = file.recovery_bytes();
            let mut off = (tail_from.max(base) - base) as usize;
            while off + RECORD_SIZE <= bytes.len() {
                match Record::decode(&bytes[off..off + RECORD_SIZE]) {
                    Some(rec) => {
                        let pos = base + off as i64;
                        tail.push((pos, rec));
                        end = pos + RECORD_SIZE as i64;
                        // Invalid records before an intact one are holes, not unwritten space.
                        holes += std::mem::take(&mut invalid_since_valid);
                    }
                    None => invalid_since_valid += 1,
                }
                off += RECORD_SIZE;
            }
        }
        if holes > 0 {
            warn!(
                dir = %dir.display(),
                holes,
                tail_from,
                end,
                "timer log tail has invalid records (lost or torn writes); skipping them"
            );
        }

        // Keep the segments below `end`; the one containing `end` becomes the active one.
        let mut log = TimerLog {
            dir: dir.to_path_buf(),
            segment_size,
            segments: VecDeque::new(),
            first_base: files.first().map_or(end - end % seg, |(b, _)| *b),
            end,
            writer: None,
        };
        let mut active = None;
        for (base, mut file) in files {
            if base >= end {
                debug!(
                    segment = base,
                    "removing timer log segment past the recovered end"
                );
                let path = file.path().to_path_buf();
                drop(file);
                fs::remove_file(&path).map_err(StoreError::io("remove timer segment", &path))?;
            } else if base + seg <= end {
                file.set_published(segment_size);
                log.segments.push_back(Arc::new(file));
            } else {
                let at = (end - base) as usize;
                file.set_published(at);
                file.zero_tail(at)?;
                let file = Arc::new(file);
                active = Some(Arc::clone(&file));
                log.segments.push_back(file);
            }
        }
        if log.segments.is_empty() && end % seg != 0 {
            // Every segment was removed by hand, yet the checkpoint points inside one: restart
            // the segment at the checkpoint's position (the bytes before it are gone).
            let base = end - end % seg;
            warn!(
                segment = base,
                end, "timer log segment missing; recreating it"
            );
            let mut file = MappedFile::create(&segment_path(dir, base), segment_size, 0)?;
            file.set_published((end - base) as usize);
            let file = Arc::new(file);
            active = Some(Arc::clone(&file));
            log.segments.push_back(file);
            log.first_base = base;
        }
        if let Some(file) = active {
            log.writer = file.writer();
        }
        info!(
            dir = %dir.display(),
            segments = log.segments.len(),
            first = log.first_base,
            end = log.end,
            tail_records = tail.len(),
            "timer log opened"
        );
        Ok((log, tail))
    }

    /// The next append position (one past the last record).
    pub(crate) fn end(&self) -> i64 {
        self.end
    }

    /// Position of the first retained segment.
    pub(crate) fn first_base(&self) -> i64 {
        self.first_base
    }

    /// Appends a record and returns its position. The record is readable at once and durable
    /// after the next [`TimerLog::sync_ranges`] covering it has been synced.
    pub(crate) fn append(&mut self, rec: &Record) -> Result<i64> {
        let bytes = rec.encode();
        let pos = self.end;
        let writer = match self.writer.take() {
            Some(w) if w.remaining() >= RECORD_SIZE => w,
            _ => self.new_segment()?,
        };
        let mut writer = writer;
        let off = writer.position();
        let written = writer.write(off, &bytes);
        if written {
            writer.publish(off + RECORD_SIZE);
        }
        self.writer = Some(writer);
        if !written {
            return Err(StoreError::corrupt(
                pos,
                "timer log writer refused an append",
            ));
        }
        self.end += RECORD_SIZE as i64;
        Ok(pos)
    }

    fn new_segment(&mut self) -> Result<Writer> {
        let base = self.end;
        debug_assert_eq!(
            base % self.segment_size as i64,
            0,
            "segments end on a boundary"
        );
        let path = segment_path(&self.dir, base);
        let file = Arc::new(MappedFile::create(&path, self.segment_size, 0)?);
        let writer = file
            .writer()
            .ok_or_else(|| StoreError::corrupt(base, "new timer segment already has a writer"))?;
        if self.segments.is_empty() {
            self.first_base = base;
        }
        // `MappedFile::create` has synced the directory: the new file survives a power loss.
        self.segments.push_back(file);
        debug!(segment = base, "timer log segment created");
        Ok(writer)
    }

    /// Reads the record at `pos`.
    pub(crate) fn read(&self, pos: i64) -> Lookup {
        if pos < self.first_base {
            return Lookup::Gone;
        }
        if pos >= self.end || pos % RECORD_SIZE as i64 != 0 {
            return Lookup::Missing;
        }
        let seg = self.segment_size as i64;
        let idx = ((pos - self.first_base) / seg) as usize;
        let Some(file) = self.segments.get(idx) else {
            return Lookup::Missing;
        };
        match file.bytes((pos % seg) as usize, RECORD_SIZE) {
            None => Lookup::Missing,
            Some(bytes) => Record::decode(bytes).map_or(Lookup::Invalid, Lookup::Found),
        }
    }

    /// Calls `f` with every intact record at or after `from` in the retained log, in log order.
    pub(crate) fn for_each_valid(&self, from: i64, mut f: impl FnMut(i64, &Record)) {
        let seg = self.segment_size as i64;
        let mut base = self.first_base;
        for file in &self.segments {
            let start = (from.max(base) - base).min(seg) as usize;
            let start = start - start % RECORD_SIZE;
            let published = file.published();
            if start < published
                && let Some(bytes) = file.bytes(start, published - start)
            {
                for (i, chunk) in bytes.chunks_exact(RECORD_SIZE).enumerate() {
                    if let Some(rec) = Record::decode(chunk) {
                        f(base + (start + i * RECORD_SIZE) as i64, &rec);
                    }
                }
            }
            base += seg;
        }
    }

    /// The segment ranges holding `[from, to)`, for syncing outside the store's lock.
    pub(crate) fn sync_ranges(&self, from: i64, to: i64) -> Vec<SyncRange> {
        let seg = self.segment_size as i64;
        let mut out = Vec::new();
        let mut base = self.first_base;
        for file in &self.segments {
            let lo = from.max(base);
            let hi = to.min(base + seg);
            if lo < hi {
                out.push((Arc::clone(file), (lo - base) as usize, (hi - lo) as usize));
            }
            base += seg;
        }
        out
    }

    /// Detaches every segment that lies entirely below `low`, except the last one, and returns
    /// them for the caller to delete (outside the store's lock).
    pub(crate) fn detach_below(&mut self, low: i64) -> Vec<Arc<MappedFile>> {
        let seg = self.segment_size as i64;
        let mut out = Vec::new();
        while self.segments.len() > 1 && self.first_base + seg <= low {
            if let Some(file) = self.segments.pop_front() {
                out.push(file);
            }
            self.first_base += seg;
        }
        out
    }
}

/// Whether `dir` holds any timer log segment.
pub(crate) fn has_segments(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
        })
    })
}

/// Syncs a directory, so that a file renamed into it survives a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("sync timer log dir", dir))
}

fn segment_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}"))
}

fn list_segments(dir: &Path, seg: i64) -> Result<Vec<i64>> {
    let mut bases = Vec::new();
    let entries = fs::read_dir(dir).map_err(StoreError::io("list timer log dir", dir))?;
    for entry in entries {
        let entry = entry.map_err(StoreError::io("list timer log dir", dir))?;
        let name = entry.file_name();
        let parsed = name
            .to_str()
            .filter(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<i64>().ok());
        match parsed {
            Some(base) if base % seg == 0 => bases.push(base),
            Some(base) => {
                return Err(StoreError::Layout {
                    path: entry.path(),
                    reason: format!(
                        "segment start {base} is not a multiple of the segment size {seg}; was \
                         the timer store created with another log_segment_size?"
                    ),
                });
            }
            None => {
                warn!(file = %entry.path().display(), "ignoring unexpected file in timer log");
            }
        }
    }
    Ok(bases)
}
