//! EndTransaction: resolves a half message (commit: its visible copy and the COMMIT op in
//! one atomic append; rollback: a ROLLBACK op), then, with SYNC replication, waits for the
//! in-sync replicas. The transaction table, ids and records are the submodules.

pub(crate) mod id;
pub(crate) mod pending;
pub(crate) mod record;
pub(crate) mod table;

use std::sync::Arc;

use crate::engine::Inner;
use crate::outcome::{Code, Failure, blocking};
use table::EndPlan;
pub use table::{Decision, OrphanCheck};

/// Ends (or leaves pending) one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionEnd {
    /// The topic the message was sent to.
    pub topic: String,
    /// The message id (empty: not checked).
    pub message_id: String,
    /// The transaction id the send answered.
    pub transaction_id: String,
    /// The producer's decision.
    pub decision: Decision,
    /// The decision answers a check (for logs).
    pub from_check: bool,
}

impl Inner {
    /// Applies a producer's decision (a commit appends the visible copy and its op in one
    /// batch) and, with SYNC replication, waits for the in-sync replicas; returns what was
    /// done ("OK", or why nothing had to be).
    ///
    /// # Errors
    /// ILLEGAL_TOPIC, INVALID_TRANSACTION_ID (unknown, resolved otherwise, another message's
    /// or topic's), TOO_MANY_REQUESTS (being resolved by another call), the store's failures.
    pub(crate) async fn end_transaction(&self, req: &TransactionEnd) -> Result<String, Failure> {
        let topic = req.topic.as_str();
        if topic.is_empty() {
            return Err(Failure::new(
                Code::IllegalTopic,
                "EndTransaction names no topic",
            ));
        }
        let plan = self.transactions.plan_end(
            topic,
            &req.message_id,
            &req.transaction_id,
            req.decision,
        )?;
        let (half_offset, physical_offset, transaction_id, resolution) = match plan {
            EndPlan::Done(msg) => return Ok(msg),
            EndPlan::Write {
                half_offset,
                physical_offset,
                transaction_id,
                resolution,
            } => (half_offset, physical_offset, transaction_id, resolution),
        };
        let store = self.store()?;
        let (tx, idx) = (Arc::clone(&self.transactions), self.meta.index());
        let id = transaction_id.clone();
        let write =
            move || tx.write_end(&store, &idx, half_offset, physical_offset, &id, resolution);
        match self.cfg.flush {
            comet_store::FlushPolicy::Async { .. } => write(),
            comet_store::FlushPolicy::Sync { .. } => blocking(write).await.and_then(|r| r),
        }?;
        let store = self.store()?;
        self.replicated(store.write_offset()).await?;
        tracing::debug!(transaction_id = %transaction_id, ?resolution, from_check = req.from_check,
            "transaction resolved");
        Ok("OK".to_owned())
    }
}
