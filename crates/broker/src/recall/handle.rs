//! Recall handles: `"<broker_set>~" + base64url(29 bytes)`: version (1), the schedule record's
//! commitlog offset (i64 LE), the delivery time in ms since the epoch (i64 LE), CRC32C of the
//! topic, CRC32C of the message id, CRC32C of the 25 bytes before it.
//!
//! The broker-set prefix routes a RecallMessage to the set that holds the timer (as for
//! transaction ids); the topic checksum tells a handle of another topic from one never
//! issued; the message-id checksum ties the handle to the one message it was issued for; the
//! last checksum rejects handles that were never issued (typos, truncation).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const VERSION: u8 = 1;
const LEN: usize = 29;
/// Longest opaque part accepted before decoding (the encoding of [`LEN`] bytes is 39).
const MAX_OPAQUE: usize = 64;

/// The decoded opaque part of a recall handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecallHandle {
    /// Commitlog offset of the schedule record (the timer's origin).
    pub origin: i64,
    /// When the message is due, ms since the epoch.
    pub deliver_at_ms: i64,
    topic_crc: u32,
    id_crc: u32,
}

/// Why a string is not a recall handle of this broker set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HandleError {
    /// Not a recall handle at all; the reason says what is wrong with it.
    Malformed(&'static str),
    /// A well-formed handle of another broker set.
    OtherBrokerSet(String),
}

impl RecallHandle {
    pub fn new(origin: i64, deliver_at_ms: i64, topic: &str, message_id: &str) -> RecallHandle {
        RecallHandle {
            origin,
            deliver_at_ms,
            topic_crc: crc32c::crc32c(topic.as_bytes()),
            id_crc: crc32c::crc32c(message_id.as_bytes()),
        }
    }

    pub fn encode(&self, broker_set: &str) -> String {
        let mut b = [0u8; LEN];
        b[0] = VERSION;
        b[1..9].copy_from_slice(&self.origin.to_le_bytes());
        b[9..17].copy_from_slice(&self.deliver_at_ms.to_le_bytes());
        b[17..21].copy_from_slice(&self.topic_crc.to_le_bytes());
        b[21..25].copy_from_slice(&self.id_crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[..25]);
        b[25..29].copy_from_slice(&crc.to_le_bytes());
        let mut s = comet_vocab::handle::prefix(broker_set, 40);
        URL_SAFE_NO_PAD.encode_string(b, &mut s);
        s
    }

    /// Parses a handle issued by `broker_set`.
    pub fn decode(handle: &str, broker_set: &str) -> Result<RecallHandle, HandleError> {
        let (prefix, opaque) = comet_vocab::handle::split(handle).ok_or(HandleError::Malformed(
            "it lacks the '<broker_set>~' prefix",
        ))?;
        if opaque.len() > MAX_OPAQUE {
            return Err(HandleError::Malformed("it is too long"));
        }
        let b = URL_SAFE_NO_PAD
            .decode(opaque)
            .map_err(|_| HandleError::Malformed("it is not base64url"))?;
        if b.len() != LEN || b[0] != VERSION {
            return Err(HandleError::Malformed("wrong length or version"));
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let i64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            i64::from_le_bytes(a)
        };
        if crc32c::crc32c(&b[..25]) != u32_at(25) {
            return Err(HandleError::Malformed("checksum mismatch"));
        }
        if prefix != broker_set {
            return Err(HandleError::OtherBrokerSet(prefix.to_owned()));
        }
        Ok(RecallHandle {
            origin: i64_at(1),
            deliver_at_ms: i64_at(9),
            topic_crc: u32_at(17),
            id_crc: u32_at(21),
        })
    }

    /// Whether the handle was issued for a message of `topic`.
    pub fn matches_topic(&self, topic: &str) -> bool {
        self.topic_crc == crc32c::crc32c(topic.as_bytes())
    }

    /// Whether the handle was issued for the message with id `message_id`.
    pub fn matches_message(&self, message_id: &str) -> bool {
        self.id_crc == crc32c::crc32c(message_id.as_bytes())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn given_a_recall_handle_when_encoded_and_decoded_should_round_trip() {
        let h = RecallHandle::new(4096, 1_700_000_000_000, "orders", "msg-1");
        let s = h.encode("broker-a");
        assert!(s.starts_with("broker-a~"), "{s}");
        let back = RecallHandle::decode(&s, "broker-a").unwrap();
        assert_eq!(back, h);
        assert!(back.matches_topic("orders") && !back.matches_topic("other"));
        assert!(back.matches_message("msg-1") && !back.matches_message("msg-2"));
        assert_eq!(
            RecallHandle::decode(&s, "broker-b").unwrap_err(),
            HandleError::OtherBrokerSet("broker-a".into())
        );
    }

    #[test]
    fn given_bad_handles_when_decoded_should_say_why() {
        for (bad, why) in [
            ("", "prefix"),
            ("broker-a", "prefix"),
            ("broker-a~", "length"),
            ("broker-a~!!", "base64url"),
            ("broker-a~AAAA", "length"),
        ] {
            match RecallHandle::decode(bad, "broker-a").unwrap_err() {
                HandleError::Malformed(reason) => assert!(reason.contains(why), "{bad}: {reason}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let s = RecallHandle::new(1, 2, "t", "m").encode("broker-a");
        let mut tampered: Vec<char> = s.chars().collect();
        let i = tampered.len() - 10;
        tampered[i] = if tampered[i] == 'A' { 'B' } else { 'A' };
        let tampered: String = tampered.into_iter().collect();
        assert_eq!(
            RecallHandle::decode(&tampered, "broker-a").unwrap_err(),
            HandleError::Malformed("checksum mismatch")
        );
        let long = format!("broker-a~{}", "A".repeat(80));
        assert_eq!(
            RecallHandle::decode(&long, "broker-a").unwrap_err(),
            HandleError::Malformed("it is too long")
        );
    }
}
