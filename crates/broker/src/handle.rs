//! Receipt handles: `"<broker_set>~<opaque>"`.
//!
//! The opaque part is base64url (no padding) of 29 bytes, little-endian:
//!
//! ```text
//! off size field
//!   0    1 version (1)
//!   1    4 queue id
//!   5    8 queue offset
//!  13    8 generation: unique per delivery and per invisible-time change
//!  21    4 scope: CRC32C of "<group>\0<topic>", so a handle used with another group or topic
//!           is refused
//!  25    4 CRC32C of bytes [0, 25)
//! ```
//!
//! A handle is *current* while the in-flight entry at (group, topic, queue, offset) carries the
//! same generation; acknowledging, redelivering or re-arming the message makes older handles
//! stale.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const VERSION: u8 = 1;
const LEN: usize = 29;

/// The decoded opaque part of a receipt handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptHandle {
    /// Queue id of the message.
    pub queue_id: i32,
    /// Queue offset of the message.
    pub offset: i64,
    /// Delivery generation the handle was issued for.
    pub generation: u64,
    /// [`scope`] of the group and topic it was issued for.
    pub scope: u32,
}

/// Why a receipt handle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// Not a handle this broker could have issued.
    #[error("malformed receipt handle: {0}")]
    Malformed(&'static str),
    /// Issued by another broker set.
    #[error("receipt handle belongs to broker set {got:?}, not {expected:?}")]
    ForeignBrokerSet {
        /// This broker's set.
        expected: String,
        /// The handle's prefix.
        got: String,
    },
    /// Issued for another group or topic.
    #[error("receipt handle was issued for another consumer group or topic")]
    WrongScope,
}

/// The scope value of a (group, topic) pair.
pub fn scope(group: &str, topic: &str) -> u32 {
    let c = crc32c::crc32c(group.as_bytes());
    let c = crc32c::crc32c_append(c, &[0]);
    crc32c::crc32c_append(c, topic.as_bytes())
}

impl ReceiptHandle {
    /// The full handle string for `broker_set`.
    pub fn encode(&self, broker_set: &str) -> String {
        let mut b = [0u8; LEN];
        b[0] = VERSION;
        b[1..5].copy_from_slice(&self.queue_id.to_le_bytes());
        b[5..13].copy_from_slice(&self.offset.to_le_bytes());
        b[13..21].copy_from_slice(&self.generation.to_le_bytes());
        b[21..25].copy_from_slice(&self.scope.to_le_bytes());
        let crc = crc32c::crc32c(&b[..25]);
        b[25..29].copy_from_slice(&crc.to_le_bytes());
        let mut s = comet_vocab::handle::prefix(broker_set, 39);
        URL_SAFE_NO_PAD.encode_string(b, &mut s);
        s
    }

    /// Parses a handle issued by `broker_set` for (`group`, `topic`).
    ///
    /// # Errors
    /// [`HandleError`] saying why the handle cannot be this broker's.
    pub fn decode(
        handle: &str,
        broker_set: &str,
        group: &str,
        topic: &str,
    ) -> Result<Self, HandleError> {
        let (prefix, opaque) = comet_vocab::handle::split(handle)
            .ok_or(HandleError::Malformed("missing the '<broker_set>~' prefix"))?;
        if prefix != broker_set {
            return Err(HandleError::ForeignBrokerSet {
                expected: broker_set.to_owned(),
                got: prefix.to_owned(),
            });
        }
        if opaque.len() > 64 {
            return Err(HandleError::Malformed("too long"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(opaque)
            .map_err(|_| HandleError::Malformed("not base64url"))?;
        if bytes.len() != LEN {
            return Err(HandleError::Malformed("wrong length"));
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(a)
        };
        if crc32c::crc32c(&bytes[..25]) != u32_at(25) {
            return Err(HandleError::Malformed("checksum mismatch"));
        }
        if bytes[0] != VERSION {
            return Err(HandleError::Malformed("unknown version"));
        }
        let h = ReceiptHandle {
            queue_id: u32_at(1) as i32,
            offset: u64_at(5) as i64,
            generation: u64_at(13),
            scope: u32_at(21),
        };
        if h.scope != scope(group, topic) {
            return Err(HandleError::WrongScope);
        }
        Ok(h)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> ReceiptHandle {
        ReceiptHandle {
            queue_id: 7,
            offset: 123_456_789_012,
            generation: (5u64 << 32) | 42,
            scope: scope("ns%g", "ns%t"),
        }
    }

    #[test]
    fn given_a_handle_when_encoded_and_decoded_should_round_trip() {
        let h = sample();
        let s = h.encode("broker-a");
        assert!(s.starts_with("broker-a~"), "{s}");
        assert_eq!(ReceiptHandle::decode(&s, "broker-a", "ns%g", "ns%t"), Ok(h));
    }

    #[test]
    fn given_another_broker_set_when_decoded_should_be_foreign() {
        let s = sample().encode("broker-b");
        assert!(matches!(
            ReceiptHandle::decode(&s, "broker-a", "ns%g", "ns%t"),
            Err(HandleError::ForeignBrokerSet { .. })
        ));
    }

    #[test]
    fn given_another_group_or_topic_when_decoded_should_be_wrong_scope() {
        let s = sample().encode("broker-a");
        assert_eq!(
            ReceiptHandle::decode(&s, "broker-a", "ns%other", "ns%t"),
            Err(HandleError::WrongScope)
        );
        assert_eq!(
            ReceiptHandle::decode(&s, "broker-a", "ns%g", "ns%x"),
            Err(HandleError::WrongScope)
        );
    }

    #[test]
    fn given_garbage_when_decoded_should_be_malformed() {
        for bad in ["", "broker-a", "broker-a~", "broker-a~!!!", "broker-a~AAAA"] {
            assert!(
                matches!(
                    ReceiptHandle::decode(bad, "broker-a", "g", "t"),
                    Err(HandleError::Malformed(_))
                ),
                "{bad}"
            );
        }
        // One flipped character fails the checksum.
        let s = sample().encode("broker-a");
        let mut chars: Vec<char> = s.chars().collect();
        let i = chars.len() - 10;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let tampered: String = chars.into_iter().collect();
        assert!(matches!(
            ReceiptHandle::decode(&tampered, "broker-a", "ns%g", "ns%t"),
            Err(HandleError::Malformed(_))
        ));
    }
}
