//! Replication's side of the log: raw chunks read on the master ([`CommitLog::read_raw`]) and
//! appended byte for byte on a replica ([`CommitLog::append_raw`]), after
//! [`verify_raw_chunk`] has checked them record by record.
//!
//! Invariants: a replica chunk is verified in full before a byte is written (CRC32C, each
//! record's own physical offset, structure), holds whole records and batches inside one
//! segment, may end only with the segment's blank marker, and must continue the log exactly
//! at its end; a chunk read for a replica ends on a batch boundary and never crosses a segment
//! end. Bytes from the network: every length is checked before use.

use std::sync::atomic::Ordering;

use super::CommitLog;
use crate::error::{Result, StoreError};
use crate::record::{self, Marker, RecordView};

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

impl CommitLog {
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
}
