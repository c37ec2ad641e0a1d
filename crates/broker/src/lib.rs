//! The Comet broker: one storage node of a broker set, serving the internal
//! `comet.v1.BrokerService` over `comet-store` with POP-style consumption.
//!
//! # What it does
//! - **Send**: validates each message against the watched cluster metadata (the topic must be
//!   placed on this broker set with `queue_count > queue_id`), appends the batch and answers
//!   one result per message (`offset` = queue offset).
//! - **Pop** (`PopMessage`): per (group, topic, queue) the broker keeps a pop offset and the
//!   set of messages in flight. A pop first redelivers in-flight messages whose invisible
//!   deadline passed (`delivery_attempt + 1`), then hands out new messages in queue order,
//!   filtered by tag (consume-queue tag-hash pre-filter, then exact match) or by a SQL92
//!   expression over user properties and `TAGS` ([`filter::sql`]). Queue id -1 means
//!   every queue of the topic on this broker, visited round-robin. With nothing to hand out it
//!   long-polls on the store's arrival listener (and on redelivery timers) until the request's
//!   long-polling timeout, then answers MESSAGE_NOT_FOUND.
//! - **Receipt handles** (`"<broker_set>~<base64url>"`, see [`handle`]) name (queue, offset,
//!   generation) plus a checksum of (group, topic). Every delivery and invisible-time change
//!   issues a new generation, so older handles are detected as stale.
//! - **Redelivery timing** ([`RedeliveryDelay`]): by default RocketMQ 5 POP semantics — the
//!   invisible duration is the backoff and a message is visible again at its deadline; optionally
//!   the group's retry policy is added on top.
//! - **Pull and offsets**: `PullMessage` reads a named queue from a given offset (filtered,
//!   batched, long-polled); `UpdateOffset` commits a group's offset durably (answered once in
//!   the state log); `QueryOffset` resolves BEGINNING / END / TIMESTAMP (binary search by store
//!   time). Admin calls reset a group by time or offset, query messages and report backlog.
//! - **Dead letters**: a message whose deliveries reached `max_retries + 1` (group metadata, or
//!   `default_max_retries`) is appended to `%DLQ%<group>` queue 0 when its last deadline passes
//!   (or on `ForwardMessageToDeadLetterQueue`) with the origin recorded in system properties
//!   (`DLQ_ORIGIN_TOPIC`, ...), and completed. Dead-letter topics need no metadata to be read.
//! - **Invisible time**: the proxy's rules (`comet_vocab::limits::InvisibleRange`) over the
//!   broker's range: a receive's must be positive and at most `max_invisible_duration` (12 h);
//!   a missing one is `default_invisible_duration` (60 s, RocketMQ's default, for
//!   auto-renewing push consumers); a change above the maximum is refused, a missing or zero
//!   one makes the message visible at once. Out of range is ILLEGAL_INVISIBLE_TIME, as at the
//!   proxy (which refuses below its own minimum first).
//! - **Delay messages** (see [`TimerStats`]): a `delivery_timestamp` in the future
//!   (at most `max_delivery_delay`, 40 days by default; later, or before the epoch, is
//!   ILLEGAL_DELIVERY_TIME: `comet_vocab::limits::check_delivery_time`, the proxy's rule) stores
//!   the message under `rmq_sys_wheel_timer` and schedules it in the store's persisted timer
//!   wheel; when due it is appended to its topic (ms precision). Exactly once across restarts.
//!   A time in the past delivers at once.
//! - **Recall** ([`RecallRequest`]): a delay message's send answers a recall handle
//!   (`"<broker_set>~..."`, `recall::handle`); RecallMessage cancels the timer before its
//!   delivery by appending a recall record to the timer queue (a done record marked recalled,
//!   under the same lock as delivery), so replicas, restarts and a promoted replica honour it.
//!   A repeated recall is OK; a delivered, unknown, other-topic or malformed handle is refused
//!   with NOT_FOUND or BAD_REQUEST and a message that says which.
//! - **FIFO groups** (`Group.fifo`): per queue, at most one message of a message group is out
//!   at a time, in queue order; later ones are *held* and released when it is acked or
//!   dead-lettered (an un-acked one is redelivered first). Other message groups proceed.
//! - **Transactions**: a TRANSACTION message is a half message under
//!   `RMQ_SYS_TRANS_HALF_TOPIC` until `EndTransaction` (transaction id `"<broker_set>~..."`)
//!   commits (appended to its topic, atomically with the op record) or rolls it back.
//!   Unresolved ones are checked through every proxy watching `WatchTransactionChecks`; after
//!   `transaction_max_checks` they are discarded into `TRANS_CHECK_MAX_TIME_TOPIC` (readable)
//!   and counted ([`TransactionStats`]).
//! - **Broadcast groups** (`Group.broadcast`): the consumer state is kept per (group, client id)
//!   (the `x-mq-client-id` the proxy forwards, [`CLIENT_ID_HEADER`]), so every client receives
//!   every message; a new client starts at the end (or the earliest message with
//!   `broadcast_from_start`); retries and dead letters are per client ([`DLQ_CLIENT_ID`]); a
//!   client silent for `broadcast_client_ttl` loses its position (see `broadcast`).
//! - **Replication** ([`ha`]): in a broker set of several brokers, [`HaBroker`] takes the
//!   broker's role from the controller's metadata. The master streams its commitlog to the
//!   replicas (`comet.v1.ReplicationService`), which append it verbatim and dispatch it; SYNC
//!   sends are acknowledged once every member of the sync-state set holds them
//!   (HA_NOT_AVAILABLE / SLAVE_PERSISTENCE_TIMEOUT otherwise); the master's writes are fenced
//!   by its controller lease; a returning broker cuts its divergent tail before following.
//! - **Priority** (RIP-80): on a PRIORITY topic a message of priority p goes to queue
//!   `min(p, queue_count - 1)` of this broker set (`comet_vocab::limits::priority_queue`), and
//!   a pop of every queue visits the highest queue first, so with a backlog a group gets the
//!   higher priorities first (strict within the set); the group's `priority_percent` (absent:
//!   100) is the share of pops that do, the others go round-robin (0 disables priority).
//!   Priorities are checked by `comet_vocab::limits::check_priority`.
//! - **Lite topics** (RIP-83, `lite`): a LITE parent topic's messages each name a lite
//!   topic, created by its first message and removed after `lite_topic_ttl` without one. Lite
//!   messages live in the parent's commitlog and consume queues (a lite topic in one queue
//!   here); an index of their offsets per lite topic (memory + one append-only log, rebuilt
//!   from the store on recovery) makes each lite topic a logical queue, consumed in order with
//!   its own consumer state per group. Lite consumers pop the lite topics their client
//!   subscribed with SyncLiteSubscription; expired ones are reported back for
//!   NotifyUnsubscribeLiteCommand.
//!
//! # Layout
//! One module per operation over one engine; imports run one way, top to bottom:
//!
//! ```text
//!  node (BrokerNode: serve, controller link, ControllerClient) the broker as a server
//!  ha (HaBroker: supervisor) ─► ha::{service, follower}      replication: master and replica
//!  broker (Broker: open, shutdown, abandon)
//!  service (BrokerGrpc: the comet.v1 adapter) + convert (protobuf ↔ the broker's types)
//!  api (BrokerApi: every operation as Comet's types; admission, role switching)
//!  tasks::{revive, timer, checks, persist, replica, broadcast} background loops
//!  send · pop · ack · dead_letter · transaction · recall · pull · offsets · query   the operations
//!  lite (lite topics: subscriptions, lite pops, expiry) ─► lite::{index, subscriptions}
//!  broadcast (per-client consumer-state owners, their expiry)
//!  state_log (consumer-state writes and waits)
//!  engine (Inner: open, store, call admission, receipt handles)
//!  delay (timer wheel) · transaction::{table, pending, record, id} · ha::{tracker, role,
//!    consumer_sync, config, lease}
//!  owner (consumer-state owners: group or broadcast client)
//!  meta (metadata index) · state (consumer state) · persist (its files) · long_poll
//!    · record (NewMessage and the records the broker builds)
//!  outcome (Failure, Unavailable, blocking) · sys (system-property keys) · clock · handle · filter
//!    · backoff
//!    · config · error
//! ```
//!
//! - [`node`]: [`BrokerNode`] and [`node::serve`]: a broker (plain or replicated) served on a
//!   listener under one `CancellationToken`, its tasks on a `TaskTracker`, linked to the
//!   controller cluster (`node::controller_link`: registration, heartbeats, the master's write
//!   lease) through [`ControllerClient`] ([`node::controller_client`], the workspace's one
//!   controller client, with [`node::watch_metadata`]). It uses only the crate's public API.
//! - `engine`: `Inner`, the state of one broker instance, and what every operation
//!   needs from it. Each operation module adds its own `impl Inner` and never calls another
//!   operation's module, except `pop` → `pull` (queue and group checks) and `offsets`/`query`
//!   → `pull` (the same checks and the plain message of a read) and `send` → `recall` (the
//!   recall handle of a delay message); the revive task calls `dead_letter`.
//! - `send`: Send (now, delayed, half message); `pop`: PopMessage; `ack`: AckMessage and
//!   ChangeInvisibleDuration; `dead_letter`: ForwardMessageToDeadLetterQueue and the revive
//!   task's moves; `transaction`: EndTransaction over its table (`transaction::table`), the
//!   in-memory `pending` set, its commitlog `record`s and transaction `id`s; `recall`:
//!   RecallMessage and its handles (`recall::handle`), over `delay`'s recall record; `pull`:
//!   PullMessage; `offsets`: UpdateOffset, GetOffset, QueryOffset and the admin ResetOffset /
//!   GetConsumerProgress (a group's offset is its POP consumer state, so it is persisted with
//!   it); `query`: the admin QueryMessage (by id, key, queue offset).
//! - `tasks`: the background loops (see its table of who runs what).
//! - `broadcast`: who owns a call's consumer state (the group, or `"<group>@<client>"` in a
//!   broadcast group), where a new client starts, and the expiry of silent clients; `pop`,
//!   `ack` and `dead_letter` ask it before they touch the state.
//! - `state`: in-memory consumer state and visibility timers; `persist`: its snapshot + log
//!   files; `state_log`: how calls and the persist task write them.
//! - `api`: [`BrokerApi`], the domain API: each operation takes a typed request (e.g.
//!   [`SendRequest`], [`PopRequest`], [`AckRequest`]) and answers [`Answer`] — the operation's
//!   result or its [`Failure`] (a status code and a message), or [`Unavailable`] when no
//!   instance took the call. Each rule is checked once, inside its operation; each operation
//!   keeps its own durability promise. `Broker::api`, `HaBroker::api` and `BrokerGrpc::api`
//!   hand it out.
//! - `service`: [`BrokerGrpc`], the tonic trait implementation over [`BrokerApi`];
//!   `convert`: protobuf requests → the broker's types → protobuf replies. Protobuf appears
//!   only there, in the replication wire code (`ha::service`, `ha::follower`,
//!   `ha::consumer_sync`) and in the cluster metadata the controller publishes.
//! - [`ha`]: [`HaBroker`] (roles, supervisor), `ha::service` ([`ReplicationGrpc`], the
//!   master side), `ha::follower` (the replica side), `ha::tracker` (confirmed offsets, SYNC
//!   watermark, sync-state set), `ha::role` (pure role and start decisions), `ha::config`,
//!   `ha::lease` (the controller link and the master's write gate).
//! - `delay`: the timer wheel and its delivery; `meta`: the metadata index; `long_poll`:
//!   wake-ups; `sys`: every system-property key the broker writes (RocketMQ's system topics
//!   and `%DLQ%` names are `comet_vocab::system`'s);
//!   `outcome`: in-body failures, store-error mapping, the blocking pool.
//! - [`handle`], [`filter`], [`backoff`]: receipt handles, tag and SQL92 filters, retry backoff.
//! - `stats` ([`BrokerStats`]: the instance as plain numbers), `counters` (dead letters and
//!   revives as they happen) and `metrics` ([`BrokerMetrics`]: RocketMQ's storage and
//!   consumer series and Comet's own, observed from one snapshot per collection).
//! - [`config`], [`error`].
//! - `fuzzing` (tests and the `fuzzing` feature only): fuzz entry points for every decoder.
//!
//! # Invariants
//! - Offsets below a queue's pop offset that are not in flight are completed; the ack offset is
//!   the first in-flight offset. Acknowledged messages take no memory.
//! - In flight (held FIFO messages included) per (group, topic, queue) never exceeds
//!   `max_inflight_per_queue`.
//! - A FIFO message group never has two messages out at once; a message is handed out only
//!   after every earlier message of its group on that queue completed.
//! - A due timer is committed only after its message (and every earlier one) is appended; a
//!   transaction's visible copy and its COMMIT op are one atomic append.
//! - A receipt handle is accepted only while its generation is the entry's current one.
//! - Consumer state changes are appended to the state log as they happen (by the call that
//!   made them, on its own thread, when the log is free; else by the persist task); Ack,
//!   ChangeInvisibleDuration and ForwardMessageToDeadLetterQueue answer only once their change
//!   is written, so a process crash (kill -9) loses no answered ack. The log is fdatasynced
//!   every `state_persist_interval` and at shutdown: a power loss may lose that interval of
//!   progress (those messages are delivered again). In-flight messages come back with their
//!   deadlines; messages handed out but not yet written are delivered again at once. Generations carry a
//!   per-start incarnation, so a pre-crash handle never matches a post-crash delivery.
//! - Store work that may wait for the disk runs on the blocking pool: SYNC-flush appends,
//!   reads of older data (redeliveries, pops more than 256 MiB behind the log's end),
//!   queries, and every fdatasync. Work that only touches the page cache runs on the
//!   calling thread: ASYNC-flush appends, pops near the log's end, state-log writes.
//! - A replicated broker instance has one role for its life: a replica's store refuses local
//!   appends; a master's accepts them only while its lease holds (when it has in-sync peers).
//!
//! RocketMQ's vocabulary (names and their limits, system topics, the receipt-handle prefix,
//! status aggregation, invisible-time and delivery-time rules, defaults) comes from
//! `comet_vocab`; the broker applies it and spells none of it itself.
//!
//! Dependency rule: broker → store + proto + vocab; never proxy or sdk.
#![forbid(unsafe_code)]

mod ack;
mod api;
pub mod backoff;
mod broadcast;
mod broker;
mod clock;
pub mod config;
mod convert;
mod counters;
mod dead_letter;
mod delay;
mod engine;
pub mod error;
pub mod filter;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod ha;
pub mod handle;
mod lite;
mod long_poll;
mod meta;
mod metrics;
pub mod node;
mod offsets;
mod outcome;
mod owner;
mod persist;
mod pop;
mod pull;
mod query;
mod recall;
mod record;
mod send;
mod service;
mod state;
mod state_log;
mod stats;
mod sys;
mod tasks;
mod transaction;

pub use ack::{AckRequest, ChangeInvisibleRequest};
pub use api::{Answer, BrokerApi};
pub use broker::{Broker, ConsumerProgress};
pub use config::{BrokerConfig, ConsumeFrom, FlushPolicy, RedeliveryDelay};
pub use dead_letter::DeadLetterRequest;
pub use delay::TimerStats;
pub use error::BrokerError;
pub use ha::{
    ControllerLink, HaBroker, HaConfig, HaRole, HaStatus, ReplicationGrpc, ReplicationMode,
};
pub use lite::{LiteAction, LiteOffset, LiteSubscriptionRequest};
pub use metrics::BrokerMetrics;
pub use node::{BrokerNode, ControllerClient, NodeConfig};
pub use offsets::{OffsetChange, OffsetPolicy, QueueOffset, QueueProgress, ResetTarget};
pub use outcome::{Code, Failure, Unavailable};
pub use pop::{Delivery, PopRequest};
pub use pull::{PullRequest, PullResult, PullStatus};
pub use query::{DEFAULT_KEY_RESULTS, MAX_KEY_RESULTS, MessageQuery};
pub use recall::RecallRequest;
pub use record::{MessageKind, NewMessage};
pub use send::{SendRequest, Sent};
pub use service::{BrokerGrpc, CLIENT_ID_HEADER, TransactionCheckStream};
pub use stats::{BrokerStats, GroupStats, ReplicaStats, StorageStatus};
pub use sys::{
    DLQ_CLIENT_ID, SYS_BODY_ENCODING, SYS_BORN_HOST, SYS_DELIVERY_TIMESTAMP, SYS_DLQ,
    SYS_DLQ_DELIVERIES, SYS_DLQ_GROUP, SYS_DLQ_ORIGIN_QUEUE_ID, SYS_DLQ_ORIGIN_QUEUE_OFFSET,
    SYS_DLQ_ORIGIN_TOPIC, SYS_MESSAGE_GROUP, SYS_MESSAGE_TYPE, SYS_PRIORITY, SYS_TIMER_ORIGIN,
    SYS_TRACE_CONTEXT, SYS_TRANSACTION_ID,
};
pub use transaction::table::TransactionStats;
pub use transaction::{Decision, OrphanCheck, TransactionEnd};
