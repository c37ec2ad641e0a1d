//! EndTransaction: resolves a half message (commit: its visible copy and the COMMIT op in
//! one atomic append; rollback: a ROLLBACK op), then, with SYNC replication, waits for the
//! in-sync replicas. The transaction table, ids and records are the submodules.

pub(crate) mod id;
pub(crate) mod pending;
pub(crate) mod record;
pub(crate) mod table;

use std::sync::Arc;

use comet_proto::apache::rocketmq::v2::{
    Code, EndTransactionRequest, EndTransactionResponse, TransactionResolution,
};

use crate::engine::Inner;
use crate::outcome::{blocking, status};
use table::EndPlan;

impl Inner {
    // ---------------------------------------------------------------------- transactions

    pub async fn end_transaction(&self, req: EndTransactionRequest) -> EndTransactionResponse {
        let reply = |code: Code, msg: String| EndTransactionResponse {
            status: Some(status(code, msg)),
        };
        let topic = req.topic.as_ref().map(|t| t.name.as_str()).unwrap_or("");
        if topic.is_empty() {
            return reply(Code::IllegalTopic, "EndTransaction names no topic".into());
        }
        let resolution = TransactionResolution::try_from(req.resolution)
            .unwrap_or(TransactionResolution::Unspecified);
        let plan = match self.transactions.plan_end(
            topic,
            &req.message_id,
            &req.transaction_id,
            resolution,
        ) {
            Ok(p) => p,
            Err((code, msg)) => return reply(code, msg),
        };
        let (half_offset, physical_offset, transaction_id, resolution) = match plan {
            EndPlan::Done(msg) => return reply(Code::Ok, msg),
            EndPlan::Write {
                half_offset,
                physical_offset,
                transaction_id,
                resolution,
            } => (half_offset, physical_offset, transaction_id, resolution),
        };
        let store = match self.store() {
            Ok(s) => s,
            Err((code, msg)) => return reply(code, msg),
        };
        let (tx, idx) = (Arc::clone(&self.transactions), self.meta.index());
        let id = transaction_id.clone();
        let write =
            move || tx.write_end(&store, &idx, half_offset, physical_offset, &id, resolution);
        let written = match self.cfg.flush {
            comet_store::FlushPolicy::Async { .. } => write(),
            comet_store::FlushPolicy::Sync { .. } => blocking(write).await.and_then(|r| r),
        };
        let written = match written {
            Ok(()) => match self.store() {
                Ok(store) => self.replicated(store.write_offset()).await,
                Err(o) => Err(o),
            },
            Err(o) => Err(o),
        };
        match written {
            Ok(()) => {
                tracing::debug!(transaction_id = %transaction_id, ?resolution, source = req.source,
                    "transaction resolved");
                reply(Code::Ok, "OK".into())
            }
            Err((code, msg)) => reply(code, msg),
        }
    }
}
