//! The background tasks of a broker instance, each in its own module:
//!
//! | task | runs on | job |
//! |---|---|---|
//! | `revive` | every instance | visibility timers: redelivery and dead letters |
//! | `persist` | every instance | consumer-state log writes, compaction, fdatasync |
//! | `timer` (flush) | every instance | timer-wheel flush at the commitlog's interval |
//! | `timer` (delivery) | writers | due delayed messages appended to their topics |
//! | `checks` | writers | transaction checks, discards, checkpoint |
//! | `replica` | replicas | following the master's timer and transaction records |
//! | `broadcast` | writers | expiry of silent broadcast clients' positions |
//! | `lite` | every instance | expiry of lite topics, lite index log upkeep |
//!
//! Writers are the standalone broker and a master; a replica leaves delivery and checks to
//! its master and follows their records in the log instead.

mod broadcast;
mod checks;
mod lite;
mod persist;
mod replica;
mod revive;
mod timer;

use std::sync::Arc;

use crate::engine::{EngineRole, Inner};

/// Starts the background tasks of `inner`'s role on its task tracker; they return once its
/// shutdown token is cancelled.
pub(crate) fn spawn(inner: &Arc<Inner>) {
    let t = &inner.tasks;
    t.spawn(Arc::clone(inner).revive_loop());
    t.spawn(Arc::clone(inner).persist_loop());
    t.spawn(Arc::clone(inner).timer_flush_loop());
    t.spawn(Arc::clone(inner).lite_loop());
    if matches!(inner.role, EngineRole::Replica) {
        t.spawn(Arc::clone(inner).replica_state_loop());
    } else {
        t.spawn(Arc::clone(inner).timer_loop());
        t.spawn(Arc::clone(inner).transaction_loop());
        t.spawn(Arc::clone(inner).broadcast_expiry_loop());
    }
}
