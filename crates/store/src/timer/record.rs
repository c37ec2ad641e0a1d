//! The timer log's fixed-size record and its codec.
//!
//! ```text
//!  off  size  field
//!    0     4  magic          "CTR1"
//!    4     4  flags          bit 0 ROLLED (a roll copy), bit 1 RELINKED (a recovery copy)
//!    8     8  deliver_at_ms  effective delivery time, ms since the Unix epoch (i64)
//!   16     8  period         the slot period this record is filed under (i64)
//!   24     8  prev           position of the previous record of the same slot chain, -1 none
//!   32     8  origin         identity of the timer a copy belongs to (position of its first
//!                            record); -1 in a first record
//!   40     8  commit_log_offset   ┐
//!   48     8  cookie              ├ the caller's payload, opaque to the store
//!   56     4  size                ┘
//!   60     4  crc32c of bytes [0, 60)
//! ```
//!
//! All integers are little-endian. 64 bytes divide a 4 KiB page, and records start at multiples
//! of 64, so a record never straddles two pages: a torn page write damages whole records, and the
//! CRC catches every damaged one (a zero-filled record fails the magic check).

use super::TimerPayload;

/// Size of one record in bytes.
pub(crate) const RECORD_SIZE: usize = 64;
/// "No position": the end of a chain, or the `origin` of a record that is not a copy.
pub(crate) const NONE: i64 = -1;
/// The record is a roll copy: re-filed from a horizon edge slot.
pub(crate) const FLAG_ROLLED: u32 = 1;
/// The record is a recovery copy: re-appended because its chain was broken by a lost record.
pub(crate) const FLAG_RELINKED: u32 = 1 << 1;

const MAGIC: u32 = u32::from_le_bytes(*b"CTR1");
const KNOWN_FLAGS: u32 = FLAG_ROLLED | FLAG_RELINKED;
const CRC_AT: usize = 60;

/// One decoded, verified timer log record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) flags: u32,
    pub(crate) deliver_at_ms: i64,
    pub(crate) period: i64,
    pub(crate) prev: i64,
    pub(crate) origin: i64,
    pub(crate) payload: TimerPayload,
}

impl Record {
    /// Encodes the record, CRC included.
    pub(crate) fn encode(&self) -> [u8; RECORD_SIZE] {
        let mut b = [0u8; RECORD_SIZE];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..16].copy_from_slice(&self.deliver_at_ms.to_le_bytes());
        b[16..24].copy_from_slice(&self.period.to_le_bytes());
        b[24..32].copy_from_slice(&self.prev.to_le_bytes());
        b[32..40].copy_from_slice(&self.origin.to_le_bytes());
        b[40..48].copy_from_slice(&self.payload.commit_log_offset.to_le_bytes());
        b[48..56].copy_from_slice(&self.payload.cookie.to_le_bytes());
        b[56..60].copy_from_slice(&self.payload.size.to_le_bytes());
        let crc = crc32c::crc32c(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies one record. `None` for anything that is not an intact record:
    /// wrong length, zeros, a torn or corrupted write, an unknown flag.
    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != RECORD_SIZE {
            return None;
        }
        // The magic goes first: it rejects unwritten (zero) space without computing a CRC.
        if u32::from_le_bytes(word4(b, 0)) != MAGIC
            || crc32c::crc32c(&b[..CRC_AT]) != u32::from_le_bytes(word4(b, CRC_AT))
        {
            return None;
        }
        let flags = u32::from_le_bytes(word4(b, 4));
        let rec = Record {
            flags,
            deliver_at_ms: i64::from_le_bytes(word8(b, 8)),
            period: i64::from_le_bytes(word8(b, 16)),
            prev: i64::from_le_bytes(word8(b, 24)),
            origin: i64::from_le_bytes(word8(b, 32)),
            payload: TimerPayload {
                commit_log_offset: i64::from_le_bytes(word8(b, 40)),
                cookie: u64::from_le_bytes(word8(b, 48)),
                size: i32::from_le_bytes(word4(b, 56)),
            },
        };
        let sane = flags & !KNOWN_FLAGS == 0 && rec.prev >= NONE && rec.origin >= NONE;
        sane.then_some(rec)
    }

    /// The identity of the timer this record (at `pos`) belongs to: the position of the
    /// timer's first record. Roll and recovery copies inherit it, so that copies of one timer
    /// can be told apart from other timers.
    pub(crate) fn identity(&self, pos: i64) -> i64 {
        if self.origin == NONE {
            pos
        } else {
            self.origin
        }
    }
}

fn word4(b: &[u8], at: usize) -> [u8; 4] {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    w
}

fn word8(b: &[u8], at: usize) -> [u8; 8] {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            flags: FLAG_ROLLED,
            deliver_at_ms: 1_700_000_000_123,
            period: 1_700_000_000,
            prev: 4096,
            origin: 128,
            payload: TimerPayload {
                commit_log_offset: 987_654_321,
                size: 4321,
                cookie: u64::MAX - 7,
            },
        }
    }

    #[test]
    fn given_record_when_encoded_and_decoded_should_round_trip() {
        let rec = sample();
        assert_eq!(Record::decode(&rec.encode()), Some(rec));
    }

    #[test]
    fn given_any_flipped_bit_when_decoded_should_reject() {
        let bytes = sample().encode();
        for bit in 0..RECORD_SIZE * 8 {
            let mut b = bytes;
            b[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(Record::decode(&b), None, "bit {bit} flip must be detected");
        }
    }

    #[test]
    fn given_zeros_or_short_input_when_decoded_should_reject() {
        assert_eq!(Record::decode(&[0u8; RECORD_SIZE]), None);
        assert_eq!(Record::decode(&sample().encode()[..RECORD_SIZE - 1]), None);
    }
}
