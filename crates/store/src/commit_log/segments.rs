//! The log's segments: rolling to the next segment when one is full, creating (and
//! prefaulting) segment files, the allocator's work ahead of need (the next segment prepared,
//! the active one's pages populated), locating the segment of an offset, flushing a range,
//! and retention's deletion of whole segments from the front.
//!
//! Invariants: a segment is only ever appended to the back (by `roll`, under the append lock)
//! and removed from the front (`delete_oldest`, never the active one), so the segments stay
//! contiguous and `min_pos` only moves forward; the allocator and `roll` take the `prepared`
//! lock, so they never create the same file.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::{AppendState, CommitLog, POPULATE_WINDOW, Prepared, Segment, segment_name};
use crate::error::{Result, StoreError};
use crate::mapped_file::{MappedFile, Writer};
use crate::record;

impl CommitLog {
    pub(super) fn roll(&self, st: &mut AppendState, pos: usize) -> Result<()> {
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

    pub(super) fn create_segment(&self, start: i64) -> Result<Writer> {
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

    pub(super) fn segment_of(&self, phys: i64) -> Option<Segment> {
        let segs = self.segments.read();
        let first = segs.front()?.start;
        if phys < first {
            return None;
        }
        segs.get(((phys - first) / self.segment_size as i64) as usize)
            .cloned()
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
