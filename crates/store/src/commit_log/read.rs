//! Reading the log: the record at an offset, verified (CRC32C) or trusted, borrowed from the
//! mapping only inside a closure; and the walk from record to record that the dispatcher
//! uses, skipping blank segment ends. Bytes that are not a valid record are never handed out.

use super::CommitLog;
use crate::error::{Result, StoreError};
use crate::record::{self, Marker, RecordView, StoredMessage};

impl CommitLog {
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
}
