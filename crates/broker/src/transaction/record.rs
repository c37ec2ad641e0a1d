//! The records of transactions in the commitlog: a half message is the producer's message
//! moved to the half topic (its real topic and queue kept as properties); every resolution
//! or check is an op record in the op topic naming the half message's queue offset; a
//! commit appends the visible copy, a discard keeps a copy in the discard topic.

use comet_store::Message;
use comet_vocab::system;

use crate::clock::now_ms;
use crate::meta::{Access, MetaIndex};
use crate::sys;

/// A transaction's final outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolution {
    Commit,
    Rollback,
    Discard,
}

impl Resolution {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Resolution::Commit => "committed",
            Resolution::Rollback => "rolled back",
            Resolution::Discard => "discarded after its maximum number of checks",
        }
    }
}

/// One resolution record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Final(Resolution),
    Check(u32),
}

impl Op {
    pub(crate) fn encode(self) -> (&'static str, Option<u32>) {
        match self {
            Op::Final(Resolution::Commit) => ("COMMIT", None),
            Op::Final(Resolution::Rollback) => ("ROLLBACK", None),
            Op::Final(Resolution::Discard) => ("DISCARD", None),
            Op::Check(n) => ("CHECK", Some(n)),
        }
    }

    pub(crate) fn decode(m: &Message) -> Option<(i64, Op)> {
        let sys = &m.properties.system;
        let half: i64 = sys.get(sys::SYS_TRAN_HALF_OFFSET)?.parse().ok()?;
        let op = match sys.get(sys::SYS_TRAN_OP)?.as_str() {
            "COMMIT" => Op::Final(Resolution::Commit),
            "ROLLBACK" => Op::Final(Resolution::Rollback),
            "DISCARD" => Op::Final(Resolution::Discard),
            "CHECK" => Op::Check(sys.get(sys::SYS_TRAN_CHECKS)?.parse().ok()?),
            _ => return None,
        };
        Some((half, op))
    }
}

/// The half-topic record of a transactional message (real topic and queue kept as properties).
pub(crate) fn to_half_record(mut rec: Message) -> Message {
    let sys = &mut rec.properties.system;
    sys.insert(sys::SYS_TRAN_REAL_TOPIC.to_owned(), rec.topic.clone());
    sys.insert(
        sys::SYS_TRAN_REAL_QUEUE_ID.to_owned(),
        rec.queue_id.to_string(),
    );
    rec.topic = system::TRANS_HALF_TOPIC.to_owned();
    rec.queue_id = 0;
    rec
}

/// The message as the producer sent it (real topic and queue).
pub(crate) fn real_message(half: &Message) -> Option<Message> {
    let mut m = half.clone();
    let sys = &mut m.properties.system;
    m.topic = sys.remove(sys::SYS_TRAN_REAL_TOPIC)?;
    m.queue_id = sys.remove(sys::SYS_TRAN_REAL_QUEUE_ID)?.parse().ok()?;
    sys.remove(sys::SYS_RECOVERY_MS);
    Some(m)
}

/// The visible copy of a committed half message (the queue id wraps if the topic now has fewer
/// queues here).
pub(crate) fn committed_copy(
    half: &Message,
    idx: &MetaIndex,
    transaction_id: &str,
) -> Option<Message> {
    let mut m = real_message(half)?;
    if let Ok(n) = idx.queues(&m.topic, Access::Write)
        && n > 0
        && m.queue_id as u32 >= n
    {
        m.queue_id = (m.queue_id as u32 % n) as i32;
    }
    m.properties.system.insert(
        sys::SYS_TRANSACTION_ID.to_owned(),
        transaction_id.to_owned(),
    );
    Some(m)
}

/// The record kept of a discarded half message.
pub(crate) fn discarded_copy(half: &Message, transaction_id: &str) -> Option<Message> {
    let mut m = half.clone();
    let sys = &mut m.properties.system;
    sys.get(sys::SYS_TRAN_REAL_TOPIC)?;
    sys.insert(
        sys::SYS_TRANSACTION_ID.to_owned(),
        transaction_id.to_owned(),
    );
    m.topic = system::TRANS_CHECK_MAX_TIME_TOPIC.to_owned();
    m.queue_id = 0;
    Some(m)
}

pub(crate) fn op_record(half_offset: i64, op: Op, transaction_id: &str) -> Message {
    let (name, checks) = op.encode();
    let mut system = std::collections::BTreeMap::new();
    system.insert(sys::SYS_TRAN_OP.to_owned(), name.to_owned());
    system.insert(
        sys::SYS_TRAN_HALF_OFFSET.to_owned(),
        half_offset.to_string(),
    );
    if let Some(n) = checks {
        system.insert(sys::SYS_TRAN_CHECKS.to_owned(), n.to_string());
    }
    Message {
        topic: system::TRANS_OP_HALF_TOPIC.to_owned(),
        queue_id: 0,
        flags: 0,
        born_timestamp: now_ms(),
        born_host: comet_store::record::UNKNOWN_HOST,
        reconsume_times: 0,
        properties: comet_store::Properties {
            message_id: transaction_id.to_owned(),
            system,
            ..Default::default()
        },
        body: bytes::Bytes::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn given_ops_when_encoded_should_decode_back() {
        for op in [
            Op::Final(Resolution::Commit),
            Op::Final(Resolution::Rollback),
            Op::Final(Resolution::Discard),
            Op::Check(7),
        ] {
            assert_eq!(Op::decode(&op_record(9, op, "tx")), Some((9, op)));
        }
    }

    #[test]
    fn given_half_record_when_restored_should_get_the_real_topic_and_queue() {
        let rec = Message {
            topic: "t".into(),
            queue_id: 5,
            flags: 0,
            born_timestamp: 1,
            born_host: comet_store::record::UNKNOWN_HOST,
            reconsume_times: 0,
            properties: comet_store::Properties {
                message_id: "m".into(),
                ..Default::default()
            },
            body: bytes::Bytes::from_static(b"x"),
        };
        let half = to_half_record(rec.clone());
        assert_eq!(
            (half.topic.as_str(), half.queue_id),
            (system::TRANS_HALF_TOPIC, 0)
        );
        assert_eq!(real_message(&half).unwrap(), rec);
        let c = committed_copy(&half, &MetaIndex::default(), "tx").unwrap();
        assert_eq!((c.topic.as_str(), c.queue_id), ("t", 5));
        assert_eq!(
            c.properties.system.get(sys::SYS_TRANSACTION_ID).unwrap(),
            "tx"
        );
        let d = discarded_copy(&half, "tx").unwrap();
        assert_eq!(d.topic, system::TRANS_CHECK_MAX_TIME_TOPIC);
    }
}
