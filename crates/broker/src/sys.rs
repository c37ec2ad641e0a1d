//! The broker's own system names: the system-property keys of the records it writes. Nothing
//! else in the broker spells them. RocketMQ's names (system topics such as the timer and
//! transaction topics, `%DLQ%<group>`, the topics served without metadata) are
//! `comet_vocab::system`'s, used from there.
//!
//! Fields of a message that the store has no column for travel in the record's system-property
//! map under these keys; records the broker writes for itself (timer schedules, transaction
//! half messages and their resolutions, dead letters) carry their bookkeeping the same way.
//! The keys are part of the on-disk format: renaming one orphans what existing logs hold.

// --------------------------------------------------------------------- message properties

/// Message type name (`NORMAL`, `FIFO`, `DELAY`, `TRANSACTION`).
pub const SYS_MESSAGE_TYPE: &str = "MESSAGE_TYPE";
/// FIFO message group.
pub const SYS_MESSAGE_GROUP: &str = "MESSAGE_GROUP";
/// Delivery time, ms since the epoch.
pub const SYS_DELIVERY_TIMESTAMP: &str = "DELIVERY_TIMESTAMP";
/// A PRIORITY message's priority (0 or more; higher first).
pub const SYS_PRIORITY: &str = "PRIORITY";
/// A LITE message's lite topic (RIP-83; see `lite`).
pub const SYS_LITE_TOPIC: &str = "LITE_TOPIC";
/// Trace context.
pub const SYS_TRACE_CONTEXT: &str = "TRACE_CONTEXT";
/// The producer's host exactly as it sent it (may be a host name).
pub const SYS_BORN_HOST: &str = "BORN_HOST";
/// `GZIP` when the body is compressed.
pub const SYS_BODY_ENCODING: &str = "BODY_ENCODING";

// ------------------------------------------------------------------------- dead letters

/// Present (`true`) on dead-lettered messages.
pub const SYS_DLQ: &str = "DLQ";
/// Topic a dead-lettered message came from.
pub const SYS_DLQ_ORIGIN_TOPIC: &str = "DLQ_ORIGIN_TOPIC";
/// Queue id a dead-lettered message came from.
pub const SYS_DLQ_ORIGIN_QUEUE_ID: &str = "DLQ_ORIGIN_QUEUE_ID";
/// Queue offset a dead-lettered message came from.
pub const SYS_DLQ_ORIGIN_QUEUE_OFFSET: &str = "DLQ_ORIGIN_QUEUE_OFFSET";
/// Consumer group whose retries were exhausted.
pub const SYS_DLQ_GROUP: &str = "DLQ_GROUP";
/// Deliveries made before the message was dead-lettered.
pub const SYS_DLQ_DELIVERIES: &str = "DLQ_DELIVERIES";
/// A *user* property of a broadcast client's dead letter: the client whose deliveries
/// exhausted the message (see `broadcast`); user, so that every client can read it.
pub const DLQ_CLIENT_ID: &str = "DLQ_CLIENT_ID";

// ------------------------------------------------------------------------------- timers

/// On a timer record: the topic the message is delivered to.
pub(crate) const SYS_TIMER_REAL_TOPIC: &str = "TIMER_REAL_TOPIC";
/// On a timer record: the queue id the message is delivered to.
pub(crate) const SYS_TIMER_REAL_QUEUE_ID: &str = "TIMER_REAL_QUEUE_ID";
/// On a delivered copy: commitlog offset of the timer record it came from.
pub const SYS_TIMER_ORIGIN: &str = "TIMER_ORIGIN";
/// On a done record: the number of timers it finishes (one index key per timer).
pub const SYS_TIMER_DONE: &str = "TIMER_DONE";
/// On a done record: present (`true`) when it is a recall, not a delivery.
pub(crate) const SYS_TIMER_RECALLED: &str = "TIMER_RECALLED";
/// Index key prefix of a done record, followed by the schedule record's commitlog offset.
pub(crate) const TIMER_DONE_KEY: &str = "timer-done:";

// ------------------------------------------------------------------------- transactions

/// On committed and discarded copies: the transaction id.
pub const SYS_TRANSACTION_ID: &str = "TRANSACTION_ID";
/// On a message: the producer's `orphaned_transaction_recovery_duration`, in ms.
pub(crate) const SYS_RECOVERY_MS: &str = "TRAN_RECOVERY_MS";
/// On a half message: the topic it is committed to.
pub(crate) const SYS_TRAN_REAL_TOPIC: &str = "TRAN_REAL_TOPIC";
/// On a half message: the queue id it is committed to.
pub(crate) const SYS_TRAN_REAL_QUEUE_ID: &str = "TRAN_REAL_QUEUE_ID";
/// On an op record: `COMMIT`, `ROLLBACK`, `DISCARD` or `CHECK`.
pub(crate) const SYS_TRAN_OP: &str = "TRAN_OP";
/// On an op record: the queue offset of the half message it resolves or checks.
pub(crate) const SYS_TRAN_HALF_OFFSET: &str = "TRAN_HALF_OFFSET";
/// On a CHECK op record: the check number.
pub(crate) const SYS_TRAN_CHECKS: &str = "TRAN_CHECKS";
