//! What every benchmark message carries, whichever client sends it.
//!
//! The first 8 bytes of the body are the message's due time in nanoseconds since the run's
//! epoch (little-endian), the rest is printable filler; the user property [`RUN_PROPERTY`]
//! holds the run id. A consumer tells this run's messages from leftovers by the property and
//! computes end-to-end latency from the due time.

use bytes::{BufMut, Bytes, BytesMut};

/// User property naming the run a message belongs to (16 hex digits).
pub(crate) const RUN_PROPERTY: &str = "comet-bench-run";

/// Bytes of the body taken by the embedded due time.
pub(crate) const TIMESTAMP_BYTES: usize = 8;

/// The body of a message due at `due_ns`: the due time, then filler up to `template.len()`.
pub(crate) fn body(template: &Bytes, due_ns: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(template.len());
    b.put_u64_le(due_ns);
    b.put_slice(&template[TIMESTAMP_BYTES.min(template.len())..]);
    b.freeze()
}

/// The due time embedded in a body, if it is long enough to carry one.
pub(crate) fn due_ns(body: &[u8]) -> Option<u64> {
    let bytes: [u8; TIMESTAMP_BYTES] = body.get(..TIMESTAMP_BYTES)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// The filler of every body: printable, so that a body looked at in a store dump is readable.
pub(crate) fn body_template(size: usize) -> Bytes {
    let pattern = b"comet-bench ";
    (0..size.max(TIMESTAMP_BYTES))
        .map(|i| pattern[i % pattern.len()])
        .collect::<Vec<u8>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_due_time_when_building_a_body_should_embed_it_and_keep_the_size() {
        let t = body_template(1024);
        let b = body(&t, 123_456_789);
        assert_eq!(b.len(), 1024);
        assert_eq!(due_ns(&b), Some(123_456_789));
        assert_eq!(&b[8..20], &t[8..20]);
        assert_eq!(body(&body_template(8), 5).len(), 8);
        assert_eq!(due_ns(b"short"), None);
    }
}
