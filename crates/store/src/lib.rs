//! Comet's storage engine: the bytes on disk of one broker.
//!
//! Every topic's messages go into one append-only **commitlog** of fixed-size, memory-mapped
//! segment files. A **dispatcher** turns each record into an entry of its (topic, queue)
//! **consume queue** (commitlog offset, size, tag hash) and into **index** entries for its
//! message id and keys. A **checkpoint** records how far all of that is on disk, so that
//! recovery after any stop, SIGKILL or power loss included, verifies only the tail of the log,
//! cuts a torn or corrupt tail, and re-dispatches from the checkpoint. **Retention** deletes
//! whole segments by age or disk pressure. A persisted **timer** log and wheel holds
//! references to delayed messages until they are due.
//!
//! ```text
//!  MessageStore::append ─► commitlog/<segments> ──flush (async | sync group commit)──► disk
//!                               │ dispatcher (checkpointed)
//!                               ├─► consumequeue/<topic>/<queue>/<files>  (20-byte entries)
//!                               └─► index/<files>                          (key hash → offset)
//!  TimerStore (timer/): timer log + wheel of delayed-message references
//! ```
//!
//! # Layout
//! - [`store`]: [`MessageStore`], the facade, one job per submodule: `open` (recovery
//!   orchestration), `lifecycle` (background threads, close), `lock` (the directory lock),
//!   `append` (local appends, [`WriteGate`]), `replication` (raw log copy, epochs), `flush`
//!   (ASYNC flusher, SYNC group commit), `dispatch` (queues and index, visibility), `read`,
//!   `housekeeping` (checkpoints), `retention` (segment deletion, disk watermarks),
//!   `allocate` (next segment ahead of need), `signal` (thread wake-ups).
//! - `commit_log`: the log, one job per submodule: `recovery` (open, recovery scan), `append`
//!   (local appends), `read` (records, the dispatcher's walk), `segments` (roll, segments
//!   prepared and populated ahead, flush, deletion from the front), `replica` (raw-chunk
//!   verification, the replica append and the master's raw read).
//! - [`record`]: the record format (see there for the byte layout).
//! - `consume_queue`, `index_file`: the derived structures (`index_file`: `format`, `file`,
//!   `recovery`, and the `IndexStore` directory in its `mod.rs`).
//! - `checkpoint`: durable progress markers.
//! - [`epoch`]: the epoch history (which master epoch wrote which offsets) and the
//!   consistent-point rule replicas use to cut a divergent tail.
//! - [`timer`]: the timer log and wheel: `store` ([`TimerStore`](timer::TimerStore)'s public
//!   API), `state` (the internal state machine it drives; `state::recovery` rebuilds it at
//!   open), `log` (the record log), `wheel` (slots and checkpoint), `record` (the format).
//! - `mapped_file`: fixed-size memory-mapped files; the only `unsafe` code in Comet.
//! - [`config`], [`error`].
//! - `fuzzing` (tests and the `fuzzing` feature only): fuzz entry points for every decoder.
//!
//! # Invariants
//! - A record is served only after its CRC32C verifies; recovery never keeps a record after
//!   the first invalid one.
//! - Consume queues and the index only point below the dispatched offset, which never passes
//!   what the flush policy makes visible (SYNC: flushed; ASYNC: written).
//! - Consume queues and the index never hold entries beyond the commitlog's valid end after
//!   recovery, and follow its minimum offset after retention.
//! - Replication copies the log byte for byte: [`MessageStore::read_raw`] on the master,
//!   [`MessageStore::append_raw`] (verified record by record) on a replica, which then
//!   dispatches as usual. Local appends pass the [`WriteGate`]; a replica's is closed.
//! - No networking, no async runtime, no protobuf, no other workspace crate: this crate is
//!   plain synchronous Rust over files (callers run it from blocking threads).

#![warn(missing_docs)]

mod checkpoint;
mod commit_log;
pub mod config;
mod consume_queue;
pub mod epoch;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod index_file;
mod mapped_file;
pub mod record;
pub mod store;
pub mod timer;

pub use commit_log::{AppendResult, RawAppended, RawChunk};
pub use config::{
    AppendListener, Arrival, ArrivalListener, DiskStats, DiskUsage, FlushPolicy, MAX_SYNC_FLUSHERS,
    RetentionConfig, StatvfsDiskUsage, StoreConfig,
};
pub use consume_queue::{CQ_ENTRY_SIZE, CqEntry};
pub use epoch::{EpochEntry, consistent_point};
pub use error::{Result, StoreError};
pub use record::{Message, Properties, StoredMessage, tag_hash};
pub use store::{
    GetResult, MessageStore, RecoveryReport, Released, RetentionReport, StoreStats, WriteGate,
};
