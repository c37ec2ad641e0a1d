//! The consumer state a master sends its replicas every `consumer_offsets_interval`
//! (`comet.v1.ConsumerOffsets`), and how a replica reads it.
//!
//! The master sends, per (group, topic, queue), its whole [`QueueRecord`]: the pop position
//! and every entry in flight (or held behind its FIFO message group) with its generation,
//! deadline, visibility and attempts. A replica adopts it as it is, so after a failover:
//!
//! - acknowledged messages come back only if they were acknowledged within the last interval
//!   (the newest state the replica had), never in bulk behind one long-unacknowledged message;
//! - messages in flight come back when their invisible time ends, not all at once, with their
//!   attempts counted, and receipt handles of the old master still acknowledge them (same
//!   generation);
//! - FIFO groups stay blocked behind their in-flight message and keep their order.
//!
//! Masters that send only the ack offset (`pop_offset` 0, no entries) are read as before: the
//! queue restarts at that offset with nothing in flight.

use comet_proto::comet::v1 as pb;

use crate::state::{InFlight, QueueKey, QueueRecord};

/// The frame a master sends for `records`.
pub(crate) fn encode(records: Vec<QueueRecord>) -> pb::ConsumerOffsets {
    let offsets = records
        .into_iter()
        .map(|r| {
            let ack = r.inflight.first().map_or(r.pop_offset, |(o, _)| *o);
            pb::ConsumerOffset {
                group: r.key.group,
                topic: r.key.topic,
                queue_id: r.key.queue_id,
                offset: ack,
                pop_offset: r.pop_offset,
                inflight: r
                    .inflight
                    .into_iter()
                    .map(|(offset, f)| pb::InFlightEntry {
                        offset,
                        generation: f.generation,
                        deadline_ms: f.deadline_ms,
                        visible_at_ms: f.visible_at_ms,
                        attempts: f.attempts,
                        message_group: f.group,
                    })
                    .collect(),
            }
        })
        .collect();
    pb::ConsumerOffsets { offsets }
}

/// What a replica read from one frame.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// The queues' states, in the frame's order.
    pub records: Vec<QueueRecord>,
    /// Queues left out, with why (a frame no master would send).
    pub rejected: Vec<(QueueKey, &'static str)>,
}

/// Reads a frame from the master. A queue whose entry is inconsistent is left out (and
/// reported), the others are read.
pub(crate) fn decode(frame: pb::ConsumerOffsets) -> Decoded {
    let mut out = Decoded::default();
    for o in frame.offsets {
        let key = QueueKey {
            group: o.group,
            topic: o.topic,
            queue_id: o.queue_id,
        };
        match record(o.offset, o.pop_offset, o.inflight) {
            Ok((pop_offset, inflight)) => out.records.push(QueueRecord {
                key,
                pop_offset,
                inflight,
            }),
            Err(why) => out.rejected.push((key, why)),
        }
    }
    out
}

/// A queue's pop position and its in-flight entries by queue offset, ascending.
type Position = (i64, Vec<(i64, InFlight)>);

fn record(ack: i64, pop: i64, entries: Vec<pb::InFlightEntry>) -> Result<Position, &'static str> {
    if ack < 0 || pop < 0 {
        return Err("negative offset");
    }
    if pop == 0 && entries.is_empty() {
        // Only the ack offset (an older master, or a queue at its start).
        return Ok((ack, Vec::new()));
    }
    let mut inflight: Vec<(i64, InFlight)> = Vec::with_capacity(entries.len());
    for e in entries {
        if e.offset < 0 || e.offset >= pop {
            return Err("in-flight entry outside [0, pop offset)");
        }
        if inflight.last().is_some_and(|(o, _)| *o >= e.offset) {
            return Err("in-flight entries not in ascending offset order");
        }
        inflight.push((
            e.offset,
            InFlight {
                generation: e.generation,
                deadline_ms: e.deadline_ms,
                visible_at_ms: e.visible_at_ms,
                attempts: e.attempts,
                dlq_pending: false,
                group: e.message_group,
            },
        ));
    }
    let first = inflight.first().map_or(pop, |(o, _)| *o);
    if first != ack {
        return Err("ack offset is not the first in-flight offset");
    }
    Ok((pop, inflight))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::HELD;

    fn key(q: i32) -> QueueKey {
        QueueKey {
            group: "g".into(),
            topic: "t".into(),
            queue_id: q,
        }
    }

    fn flight(generation: u64, group: u64) -> InFlight {
        InFlight {
            generation,
            deadline_ms: 1_000,
            visible_at_ms: 1_500,
            attempts: 2,
            dlq_pending: false,
            group,
        }
    }

    #[test]
    fn given_records_with_entries_in_flight_and_held_when_encoded_and_decoded_should_be_equal() {
        let records = vec![
            QueueRecord {
                key: key(0),
                pop_offset: 10,
                inflight: vec![(3, flight(7 << 32 | 4, 0)), (8, flight(7 << 32 | 9, 0))],
            },
            QueueRecord {
                key: key(1),
                pop_offset: 5,
                inflight: vec![(2, flight(1, 42)), (4, InFlight::held(42))],
            },
            QueueRecord {
                key: key(2),
                pop_offset: 77,
                inflight: Vec::new(),
            },
        ];
        let frame = encode(records.clone());
        assert_eq!(
            frame.offsets[0].offset, 3,
            "the ack offset is the first in flight"
        );
        assert_eq!(frame.offsets[2].offset, 77);
        assert_eq!(frame.offsets[1].inflight[1].visible_at_ms, HELD);
        let decoded = decode(frame);
        assert_eq!(decoded.records, records);
        assert!(decoded.rejected.is_empty());
    }

    #[test]
    fn given_an_ack_offset_only_when_decoded_should_start_there_with_nothing_in_flight() {
        let frame = pb::ConsumerOffsets {
            offsets: vec![pb::ConsumerOffset {
                group: "g".into(),
                topic: "t".into(),
                queue_id: 0,
                offset: 12,
                pop_offset: 0,
                inflight: Vec::new(),
            }],
        };
        let d = decode(frame);
        assert_eq!(
            d.records,
            vec![QueueRecord {
                key: key(0),
                pop_offset: 12,
                inflight: Vec::new()
            }]
        );
    }

    #[test]
    fn given_inconsistent_queues_when_decoded_should_leave_only_those_out() {
        let entry = |offset| pb::InFlightEntry {
            offset,
            generation: 1,
            deadline_ms: 1,
            visible_at_ms: 1,
            attempts: 1,
            message_group: 0,
        };
        let q = |queue_id, offset, pop_offset, inflight| pb::ConsumerOffset {
            group: "g".into(),
            topic: "t".into(),
            queue_id,
            offset,
            pop_offset,
            inflight,
        };
        let frame = pb::ConsumerOffsets {
            offsets: vec![
                q(0, -1, 0, Vec::new()),
                q(1, 5, 5, vec![entry(5)]),
                q(2, 3, 9, vec![entry(4), entry(3)]),
                q(3, 2, 9, vec![entry(3)]),
                q(4, 3, 9, vec![entry(3), entry(6)]),
            ],
        };
        let d = decode(frame);
        let rejected: Vec<(i32, &str)> = d
            .rejected
            .iter()
            .map(|(k, why)| (k.queue_id, *why))
            .collect();
        assert_eq!(
            rejected,
            vec![
                (0, "negative offset"),
                (1, "in-flight entry outside [0, pop offset)"),
                (2, "in-flight entries not in ascending offset order"),
                (3, "ack offset is not the first in-flight offset"),
            ]
        );
        assert_eq!(d.records.len(), 1);
        assert_eq!(d.records[0].key, key(4));
        assert_eq!(d.records[0].inflight.len(), 2);
    }
}
