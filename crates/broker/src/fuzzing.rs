//! Fuzz entry points for every decoder of bytes the broker reads from clients, its master or
//! its disk.
//!
//! Built for the unit tests and behind the `fuzzing` feature (the `fuzz/` crate at the
//! repository root enables it); not part of the broker's API. Each target takes arbitrary bytes
//! and panics only on a real bug: a decoder that panics, or a decoded value that does not
//! survive re-encoding. [`TARGETS`] lists every target with seed inputs made by the real
//! encoders.
//!
//! Layout of the structured inputs:
//! - `receipt_handle`, `transaction_id`, `sql_filter`: the text (invalid UTF-8 is replaced).
//! - `consumer_state`: a state file (frames) and, the same bytes, one frame payload; frames
//!   get valid checksums too, so the payload decoder is reached.
//! - `replication_stream`: `kind u8 | local log u8 | protobuf message`: kind even, a
//!   `HandshakeResponse` compared with one of a few local logs; odd, a `ReplicationFrame`
//!   whose chunk is verified as a replica would.

use std::collections::BTreeMap;

use comet_proto::comet::v1 as pb;
use comet_store::EpochEntry;
use prost::Message as _;

use crate::filter::sql;
use crate::ha::role::{LogShape, StartAction, start_action};
use crate::handle::{ReceiptHandle, scope};
use crate::persist;
use crate::state::{InFlight, QueueKey, QueueRecord};
use crate::transaction::id::TxId;

/// One fuzz target: a name (the `fuzz/` binary and corpus directory), the function under
/// test and seed inputs made by the encoders.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Target name.
    pub name: &'static str,
    /// Runs one input; panics only on a bug.
    pub run: fn(&[u8]),
    /// Valid encoded inputs to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every broker target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "receipt_handle",
        run: receipt_handle,
        seeds: receipt_handle_seeds,
    },
    Target {
        name: "transaction_id",
        run: transaction_id,
        seeds: transaction_id_seeds,
    },
    Target {
        name: "consumer_state",
        run: consumer_state,
        seeds: consumer_state_seeds,
    },
    Target {
        name: "sql_filter",
        run: sql_filter,
        seeds: sql_filter_seeds,
    },
    Target {
        name: "replication_stream",
        run: replication_stream,
        seeds: replication_stream_seeds,
    },
];

const BROKER_SET: &str = "broker-a";
const GROUP: &str = "ns%billing";
const TOPIC: &str = "ns%orders";

/// Receipt handle: a handle that decodes is exactly the string its value encodes to (one
/// handle, one string), so a tampered handle cannot alias a current one.
pub fn receipt_handle(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(h) = ReceiptHandle::decode(&text, BROKER_SET, GROUP, TOPIC) {
        assert_eq!(h.encode(BROKER_SET), text, "receipt handle round trip");
    }
}

/// Seeds of [`receipt_handle`].
pub fn receipt_handle_seeds() -> Vec<Vec<u8>> {
    let h = ReceiptHandle {
        queue_id: 3,
        offset: 123_456,
        generation: (5u64 << 32) | 42,
        scope: scope(GROUP, TOPIC),
    };
    vec![
        h.encode(BROKER_SET).into_bytes(),
        h.encode("broker-b").into_bytes(),
    ]
}

/// Transaction id: an id that decodes is exactly the string its value encodes to.
pub fn transaction_id(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(id) = TxId::decode(&text, BROKER_SET) {
        assert_eq!(id.encode(BROKER_SET), text, "transaction id round trip");
    }
}

/// Seeds of [`transaction_id`].
pub fn transaction_id_seeds() -> Vec<Vec<u8>> {
    vec![
        TxId::new(4096, 8192, "01ABCDEF")
            .encode(BROKER_SET)
            .into_bytes(),
    ]
}

/// Consumer-state snapshot or log: frames decode up to the first bad one; a queue record that
/// decodes re-encodes to a frame that decodes to the same record.
pub fn consumer_state(data: &[u8]) {
    for input in [data.to_vec(), persist::fuzzing::with_valid_checksums(data)] {
        let (frames, _clean) = persist::fuzzing::decode_frames(&input);
        for r in frames.into_iter().flatten() {
            let mut again = Vec::new();
            persist::encode_queue(&r, &mut again);
            let (back, clean) = persist::fuzzing::decode_frames(&again);
            assert!(clean, "a re-encoded queue record decodes cleanly");
            assert_eq!(back, vec![Some(r)], "queue record round trip");
        }
    }
    let _ = persist::fuzzing::decode_payload(data);
}

/// Seeds of [`consumer_state`].
pub fn consumer_state_seeds() -> Vec<Vec<u8>> {
    let record = |queue_id: i32, n: usize| QueueRecord {
        key: QueueKey {
            group: GROUP.to_owned(),
            topic: TOPIC.to_owned(),
            queue_id,
        },
        pop_offset: 100,
        inflight: (0..n)
            .map(|i| {
                (
                    90 + i as i64,
                    InFlight {
                        generation: 7 + i as u64,
                        deadline_ms: 1_700_000_030_000,
                        visible_at_ms: 1_700_000_031_000,
                        attempts: 1,
                        dlq_pending: false,
                        group: i as u64,
                    },
                )
            })
            .collect(),
    };
    let mut log = Vec::new();
    persist::encode_queue(&record(0, 0), &mut log);
    persist::encode_queue(&record(1, 3), &mut log);
    vec![persist::fuzzing::snapshot(&[record(2, 2)]), log]
}

/// SQL92 filter expression: parsing never panics; a parsed expression prints as text that
/// parses back to the same tree, and evaluates over a property map without panicking.
pub fn sql_filter(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(e) = sql::parse(&text) else {
        return;
    };
    let props: BTreeMap<String, String> = [
        ("a", "5"),
        ("s", "abc"),
        ("d", "2.5"),
        ("neg", "-3"),
        ("TAGS", "red"),
        ("big", "99999999999999999999"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let _ = e.evaluate(&props);
    let printed = e.to_string();
    assert_eq!(sql::parse(&printed), Ok(e), "printed as {printed:?}");
}

/// Seeds of [`sql_filter`].
pub fn sql_filter_seeds() -> Vec<Vec<u8>> {
    [
        "region = 'eu' AND price >= 10.0",
        "TAGS IN ('red', 'blue') OR vip IS NOT NULL",
        "NOT (a = 'x')",
        "a BETWEEN 1 AND 10 AND s NOT IN ('x', 'y''z')",
        "s CONTAINS 'b' OR s STARTSWITH 'a' OR s NOT ENDSWITH 'c'",
        "d > -2.5E3 AND neg <> 4 AND flag = TRUE AND x IS NULL",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn entries(v: &[(u64, i64)]) -> Vec<EpochEntry> {
    v.iter()
        .map(|&(epoch, start_offset)| EpochEntry {
            epoch,
            start_offset,
        })
        .collect()
}

/// Replication stream, from the master: a handshake answer leads to a start action that
/// keeps the replica's log within its bounds; a log chunk is verified record by record.
pub fn replication_stream(data: &[u8]) {
    let (Some(&kind), Some(&local)) = (data.first(), data.get(1)) else {
        return;
    };
    let msg = &data[2..];
    if kind % 2 == 0 {
        let Ok(hs) = pb::HandshakeResponse::decode(msg) else {
            return;
        };
        let remote: Vec<EpochEntry> = hs
            .epochs
            .iter()
            .map(|e| EpochEntry {
                epoch: e.epoch,
                start_offset: e.start_offset,
            })
            .collect();
        let locals = [
            (entries(&[]), 0, 0),
            (entries(&[(1, 0), (3, 4096)]), 0, 8192),
            (entries(&[(2, 1 << 20), (4, 5 << 20)]), 1 << 20, 6 << 20),
        ];
        let (epochs, min, end) = &locals[usize::from(local) % locals.len()];
        let local = LogShape {
            epochs,
            min: *min,
            end: *end,
        };
        let remote_shape = LogShape {
            epochs: &remote,
            min: hs.min_offset,
            end: hs.end_offset,
        };
        match start_action(local, remote_shape) {
            StartAction::Follow(p) => assert_eq!(p, local.end, "a replica follows from its end"),
            StartAction::Truncate(p) => {
                assert!(local.min <= p && p < local.end, "truncation inside the log")
            }
            StartAction::Wipe(p) => assert_eq!(p, hs.min_offset, "wipe to the master's start"),
        }
    } else {
        let Ok(frame) = pb::ReplicationFrame::decode(msg) else {
            return;
        };
        if let Some(pb::replication_frame::Frame::Chunk(c)) = frame.frame {
            let segment_size = 1usize << (12 + usize::from(local) % 19);
            comet_store::fuzzing::check_replica_chunk(c.offset, segment_size, &c.data);
        }
    }
}

/// Seeds of [`replication_stream`].
pub fn replication_stream_seeds() -> Vec<Vec<u8>> {
    let hs = pb::HandshakeResponse {
        epochs: vec![
            pb::EpochEntry {
                epoch: 1,
                start_offset: 0,
            },
            pb::EpochEntry {
                epoch: 3,
                start_offset: 4096,
            },
            pb::EpochEntry {
                epoch: 5,
                start_offset: 6000,
            },
        ],
        min_offset: 0,
        end_offset: 10_000,
        segment_size: 1 << 30,
    };
    let mut seeds = vec![[&[0u8, 1][..], &hs.encode_to_vec()].concat()];
    for chunk in comet_store::fuzzing::replica_chunk_seeds() {
        // `at u64 | segment selector u32 | bytes` as the store's target takes it.
        let at = i64::from_le_bytes(chunk[..8].try_into().expect("8 bytes"));
        let frame = pb::ReplicationFrame {
            frame: Some(pb::replication_frame::Frame::Chunk(pb::LogChunk {
                epoch: 3,
                offset: at,
                data: chunk[12..].to_vec(),
                ..Default::default()
            })),
        };
        // Segment sizes 64 KiB and 4 KiB, as the store seeds use.
        let selector = if at == 0 { 0u8 } else { 4 };
        seeds.push([&[1u8, selector][..], &frame.encode_to_vec()].concat());
    }
    seeds
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Runs every target on its seeds and on every file under
    /// `tests/fuzz_regressions/<target>/` (inputs that once found a bug).
    #[test]
    fn given_seeds_and_fuzz_regressions_when_decoded_should_not_panic() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
        for t in TARGETS {
            let seeds = (t.seeds)();
            assert!(!seeds.is_empty(), "{} has seeds", t.name);
            for s in &seeds {
                (t.run)(s);
            }
            if let Ok(dir) = std::fs::read_dir(root.join(t.name)) {
                for f in dir.flatten() {
                    let data = std::fs::read(f.path()).expect("regression input is readable");
                    (t.run)(&data);
                }
            }
        }
    }

    #[test]
    fn given_seeds_when_decoded_should_be_accepted() {
        for s in receipt_handle_seeds().into_iter().take(1) {
            let text = String::from_utf8(s).expect("utf-8");
            assert!(ReceiptHandle::decode(&text, BROKER_SET, GROUP, TOPIC).is_ok());
        }
        for s in transaction_id_seeds() {
            let text = String::from_utf8(s).expect("utf-8");
            assert!(TxId::decode(&text, BROKER_SET).is_ok());
        }
        for s in consumer_state_seeds() {
            let (frames, clean) = persist::fuzzing::decode_frames(&s);
            assert!(clean && !frames.is_empty());
        }
        for s in sql_filter_seeds() {
            let text = String::from_utf8(s).expect("utf-8");
            assert!(sql::parse(&text).is_ok(), "{text}");
        }
        for s in replication_stream_seeds().into_iter().skip(1) {
            let frame = pb::ReplicationFrame::decode(&s[2..]).expect("frame");
            let Some(pb::replication_frame::Frame::Chunk(c)) = frame.frame else {
                panic!("a chunk frame");
            };
            let segment_size = 1usize << (12 + usize::from(s[1]) % 19);
            assert!(comet_store::fuzzing::check_replica_chunk(
                c.offset,
                segment_size,
                &c.data
            ));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn given_any_handle_or_transaction_id_when_encoded_should_decode_to_it(
            queue_id in any::<i32>(),
            offset in any::<i64>(),
            generation in any::<u64>(),
            half in any::<i64>(),
            phys in any::<i64>(),
            message_id in "\\PC{0,32}",
            set in "[a-zA-Z0-9_-]{1,32}",
        ) {
            let h = ReceiptHandle { queue_id, offset, generation, scope: scope(GROUP, TOPIC) };
            prop_assert_eq!(ReceiptHandle::decode(&h.encode(&set), &set, GROUP, TOPIC), Ok(h));
            let id = TxId::new(half, phys, &message_id);
            let back = TxId::decode(&id.encode(&set), &set).expect("an encoded id decodes");
            prop_assert_eq!((back.half_offset, back.physical_offset), (half, phys));
            prop_assert_eq!(back.encode(&set), id.encode(&set));
        }

        #[test]
        fn given_any_queue_record_when_encoded_should_decode_to_it(
            group in "\\PC{0,40}",
            topic in "\\PC{0,40}",
            queue_id in any::<i32>(),
            pop_offset in any::<i64>(),
            inflight in proptest::collection::vec(
                (any::<i64>(), any::<u64>(), any::<i64>(), any::<i64>(), any::<u32>(), any::<u64>()),
                0..8,
            ),
        ) {
            let r = QueueRecord {
                key: QueueKey { group, topic, queue_id },
                pop_offset,
                inflight: inflight
                    .into_iter()
                    .map(|(off, generation, deadline_ms, visible_at_ms, attempts, group)| {
                        (off, InFlight { generation, deadline_ms, visible_at_ms, attempts, dlq_pending: false, group })
                    })
                    .collect(),
            };
            let mut b = Vec::new();
            persist::encode_queue(&r, &mut b);
            prop_assert_eq!(persist::fuzzing::decode_frames(&b), (vec![Some(r)], true));
        }
    }
}
