//! Opening the log: segment files listed and checked for gaps, then the recovery scan that
//! verifies records from the checkpoint (or the first segment) and cuts the log after the
//! first record that fails verification.
//!
//! Invariants: a batch is kept or dropped whole (a batch that does not continue as announced
//! ends the log); with a `limit` (a replica dropping a divergent tail) nothing ending past it
//! is kept; segments beyond the valid end are removed and the rest of the active segment is
//! released (hole punch), so stale bytes there can never line up with a later append and be
//! taken for records after the next crash.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use parking_lot::{Mutex, RwLock};

use super::{AppendState, CommitLog, Segment, segment_name};
use crate::error::{Result, StoreError};
use crate::mapped_file::MappedFile;
use crate::record::{self, Marker, RecordView};

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
}
