//! Transaction ids: `"<broker_set>~" + base64url(25 bytes)`: version (1), half queue offset
//! (i64 LE), commitlog offset (i64 LE), CRC32C of the message id, CRC32C of the 21 bytes
//! before it. The broker-set prefix routes an EndTransaction to the set that holds the half
//! message; the checksums reject ids that were never issued.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const ID_VERSION: u8 = 1;
const ID_LEN: usize = 25;

/// The decoded opaque part of a transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TxId {
    pub half_offset: i64,
    pub physical_offset: i64,
    id_crc: u32,
}

impl TxId {
    pub fn new(half_offset: i64, physical_offset: i64, message_id: &str) -> TxId {
        TxId {
            half_offset,
            physical_offset,
            id_crc: crc32c::crc32c(message_id.as_bytes()),
        }
    }

    pub fn encode(&self, broker_set: &str) -> String {
        let mut b = [0u8; ID_LEN];
        b[0] = ID_VERSION;
        b[1..9].copy_from_slice(&self.half_offset.to_le_bytes());
        b[9..17].copy_from_slice(&self.physical_offset.to_le_bytes());
        b[17..21].copy_from_slice(&self.id_crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[..21]);
        b[21..25].copy_from_slice(&crc.to_le_bytes());
        let mut s = comet_vocab::handle::prefix(broker_set, 34);
        URL_SAFE_NO_PAD.encode_string(b, &mut s);
        s
    }

    /// Parses an id issued by `broker_set`; the error says why it cannot be one.
    pub fn decode(id: &str, broker_set: &str) -> Result<TxId, String> {
        let (prefix, opaque) = comet_vocab::handle::split(id)
            .ok_or("transaction id is malformed: it lacks the '<broker_set>~' prefix")?;
        if prefix != broker_set {
            return Err(format!(
                "transaction id belongs to broker set {prefix:?}, not {broker_set:?}"
            ));
        }
        if opaque.len() > 64 {
            return Err("transaction id is malformed: too long".into());
        }
        let b = URL_SAFE_NO_PAD
            .decode(opaque)
            .map_err(|_| "transaction id is malformed: not base64url".to_owned())?;
        if b.len() != ID_LEN || b[0] != ID_VERSION {
            return Err("transaction id is malformed: wrong length or version".into());
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let i64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            i64::from_le_bytes(a)
        };
        if crc32c::crc32c(&b[..21]) != u32_at(21) {
            return Err("transaction id is malformed: checksum mismatch".into());
        }
        Ok(TxId {
            half_offset: i64_at(1),
            physical_offset: i64_at(9),
            id_crc: u32_at(17),
        })
    }

    pub(crate) fn matches_message(&self, message_id: &str) -> bool {
        self.id_crc == crc32c::crc32c(message_id.as_bytes())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn given_a_transaction_id_when_encoded_and_decoded_should_round_trip() {
        let id = TxId::new(42, 123_456, "msg-1");
        let s = id.encode("broker-a");
        assert!(s.starts_with("broker-a~"), "{s}");
        assert_eq!(TxId::decode(&s, "broker-a").unwrap(), id);
        assert!(id.matches_message("msg-1"));
        assert!(!id.matches_message("msg-2"));
        assert!(
            TxId::decode(&s, "broker-b")
                .unwrap_err()
                .contains("broker-b")
        );
        for bad in ["", "broker-a", "broker-a~", "broker-a~!!", "broker-a~AAAA"] {
            assert!(TxId::decode(bad, "broker-a").is_err(), "{bad}");
        }
        let mut tampered: Vec<char> = s.chars().collect();
        let i = tampered.len() - 8;
        tampered[i] = if tampered[i] == 'A' { 'B' } else { 'A' };
        let tampered: String = tampered.into_iter().collect();
        assert!(TxId::decode(&tampered, "broker-a").is_err());
    }
}
