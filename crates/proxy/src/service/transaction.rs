//! Transactions: EndTransaction, and the check-back of unresolved transactions.
//!
//! ```text
//!  broker set A ──WatchTransactionChecks (one stream per set)──► this proxy
//!                                                                  │ TransactionCheck{topic}
//!                                 one live telemetry stream of a ◄─┘
//!                                 producer publishing the topic
//!                                 ◄── RecoverOrphanedTransactionCommand
//!  producer ── EndTransaction(SOURCE_SERVER_CHECK) ──► any proxy ──► broker set named by the
//!                                                                    transaction id prefix
//! ```
//!
//! Every broker sends each due check to every proxy watching it; a proxy without a suitable
//! producer drops it, and the broker asks again at its next check interval. The watch streams
//! follow the metadata: one per broker set with a live master, reopened (1 s backoff, growing
//! to 5 s) when a stream fails, restarted when the master changes, ended at shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use comet_proto::apache::rocketmq::v2::{
    Code, EndTransactionRequest, EndTransactionResponse, RecoverOrphanedTransactionCommand,
    TelemetryCommand, TransactionResolution, telemetry_command,
};
use comet_proto::comet::v1::{TransactionCheck, WatchTransactionChecksRequest};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic::Request;

use super::{Inner, require_client_id};
use crate::context::RequestContext;
use crate::names;
use crate::routes::{Access, MetadataIndex, Target, named_set_target};
use crate::status::{self, Failure, Outcome};

/// First delay before a failed watch stream is reopened; doubles up to [`WATCH_BACKOFF_MAX`].
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(200);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The broker set that issued a transaction id (its `"<broker_set>~"` prefix) and its master.
fn transaction_target(index: &MetadataIndex, transaction_id: &str) -> Outcome<Target> {
    let set = comet_vocab::handle::broker_set(transaction_id).ok_or_else(|| {
        Failure::new(
            Code::InvalidTransactionId,
            "transaction id is malformed: it does not name a broker set",
        )
    })?;
    named_set_target(
        index,
        set,
        Code::InvalidTransactionId,
        "transaction id",
        Access::Write,
    )
}

impl Inner {
    /// Forwards a resolution to the broker set named by the transaction id.
    pub(super) async fn end_transaction(
        &self,
        ctx: &RequestContext,
        request: EndTransactionRequest,
    ) -> Outcome<EndTransactionResponse> {
        require_client_id(ctx)?;
        let topic = names::topic(ctx, request.topic.as_ref())?;
        if request.transaction_id.trim().is_empty() {
            return Err(Failure::new(
                Code::InvalidTransactionId,
                "transaction_id is required: use the one SendMessage returned",
            ));
        }
        // As upstream, a resolution that is neither COMMIT nor ROLLBACK means "unknown yet":
        // the broker keeps the transaction and checks it back later.
        let resolution = match TransactionResolution::try_from(request.resolution) {
            Ok(r) => r,
            Err(_) => TransactionResolution::Unspecified,
        };
        let target = transaction_target(&self.metadata.current(), &request.transaction_id)?;
        let internal = EndTransactionRequest {
            topic: Some(topic.internal()),
            resolution: resolution as i32,
            ..request
        };
        let budget = self.unary_budget(ctx);
        let response = self
            .call(&target, budget, internal, |b, r| {
                Box::pin(async move { b.end_transaction(r).await })
            })
            .await?;
        let mut st = response.status.unwrap_or_else(|| {
            status::status(Code::InternalServerError, "broker returned no status")
        });
        status::normalize(&mut st);
        Ok(EndTransactionResponse { status: Some(st) })
    }

    /// Keeps one check stream open to every broker set with a live master, until shutdown.
    pub(crate) async fn watch_transaction_checks(self: Arc<Self>) {
        let mut metadata = self.metadata.subscribe();
        let mut running: HashMap<String, (String, CancellationToken)> = HashMap::new();
        loop {
            let index = self.metadata.current();
            let wanted: HashMap<String, String> = index
                .metadata
                .broker_sets
                .iter()
                .filter_map(|b| {
                    index
                        .master_address(&b.name)
                        .map(|a| (b.name.clone(), a.to_owned()))
                })
                .collect();
            running.retain(|set, (address, token)| {
                let keep = wanted.get(set) == Some(address);
                if !keep {
                    token.cancel();
                }
                keep
            });
            for (set, address) in wanted {
                if running.contains_key(&set) {
                    continue;
                }
                let token = self.shutdown.child_token();
                running.insert(set.clone(), (address.clone(), token.clone()));
                let inner = Arc::clone(&self);
                self.tasks
                    .spawn(async move { inner.watch_one(set, address, token).await });
            }
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                changed = metadata.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        for (_, (_, token)) in running {
            token.cancel();
        }
    }

    /// The check stream of one broker set: forwards every check, reopens after failures.
    async fn watch_one(&self, set: String, address: String, cancel: CancellationToken) {
        let proxy_id = format!("{}#{}", self.cfg.advertised_endpoint, std::process::id());
        let mut backoff = WATCH_BACKOFF_MIN;
        loop {
            let opened = match self.brokers.get(&set, &address) {
                Ok(broker) => {
                    let req = Request::new(WatchTransactionChecksRequest {
                        proxy_id: proxy_id.clone(),
                    });
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        r = broker.watch_transaction_checks(req) => r,
                    }
                }
                Err(e) => Err(e),
            };
            match opened {
                Ok(response) => {
                    tracing::debug!(broker_set = %set, "watching transaction checks");
                    backoff = WATCH_BACKOFF_MIN;
                    let mut checks = response.into_inner();
                    loop {
                        let next = tokio::select! {
                            () = cancel.cancelled() => return,
                            next = checks.next() => next,
                        };
                        match next {
                            Some(Ok(check)) => {
                                self.forward_check(&check);
                            }
                            Some(Err(e)) => {
                                tracing::debug!(broker_set = %set, error = %e, "transaction check stream failed");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(broker_set = %set, error = %e, "cannot watch transaction checks yet");
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(WATCH_BACKOFF_MAX);
        }
    }

    /// Sends a check to one live telemetry stream of a producer of its topic (round-robin);
    /// returns whether one took it.
    pub(crate) fn forward_check(&self, check: &TransactionCheck) -> bool {
        let streams = self.sessions.producer_streams(&check.topic);
        if streams.is_empty() {
            tracing::debug!(topic = %check.topic, transaction_id = %check.transaction_id,
                "no producer of the topic is connected here; check left to other proxies");
            return false;
        }
        let start = self.check_round_robin.fetch_add(1, Ordering::Relaxed) as usize;
        for i in 0..streams.len() {
            let (namespace, tx) = &streams[(start + i) % streams.len()];
            let mut message = check.message.clone().unwrap_or_default();
            if let Some(t) = message.topic.as_mut() {
                *t = names::public_resource(namespace, t);
            }
            let command = TelemetryCommand {
                status: Some(status::ok()),
                command: Some(
                    telemetry_command::Command::RecoverOrphanedTransactionCommand(
                        RecoverOrphanedTransactionCommand {
                            message: Some(message),
                            transaction_id: check.transaction_id.clone(),
                        },
                    ),
                ),
            };
            if tx.try_send(Ok(command)).is_ok() {
                tracing::debug!(topic = %check.topic, transaction_id = %check.transaction_id,
                    "transaction check forwarded to a producer");
                return true;
            }
        }
        tracing::debug!(topic = %check.topic, "every producer stream is full or closed; check dropped");
        false
    }
}
