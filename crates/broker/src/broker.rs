//! [`Broker`]: one broker instance as its owner holds it — open (the engine plus its
//! background tasks), the gRPC service over it, and the orderly or crash-like stop.
//!
//! Shutdown order: stop accepting calls (new ones fail with UNAVAILABLE) and end long polls,
//! wait up to `shutdown_grace` for running calls, stop the background tasks, flush the timer
//! wheel, write the transaction checkpoint and a full consumer-state snapshot, then flush,
//! checkpoint and close the store.

use std::sync::Arc;

use comet_proto::comet::v1::ClusterMetadata;
use tokio::sync::watch;

use crate::api::BrokerApi;
use crate::config::BrokerConfig;
use crate::delay::TimerStats;
use crate::engine::{EngineRole, Inner, StorePrep};
use crate::error::BrokerError;
use crate::service::BrokerGrpc;
use crate::state::QueueKey;
use crate::tasks;
use crate::transaction::table::TransactionStats;

/// A group's position on one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerProgress {
    /// Every offset below this is completed (acknowledged, dead-lettered or filtered out).
    pub ack_offset: i64,
    /// Next offset never handed out to the group.
    pub pop_offset: i64,
    /// Messages in flight (handed out, not completed).
    pub inflight: usize,
}

/// One storage node: the store, consumer state and background tasks. See the crate docs.
pub struct Broker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("broker_set", &self.inner.cfg.broker_set)
            .field("broker_id", &self.inner.cfg.broker_id)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Opens the store (running its recovery), loads the consumer state (in-flight messages
    /// come back with their deadlines) and starts the background tasks (revive/dead-letter and
    /// state persistence).
    ///
    /// # Errors
    /// [`BrokerError::Config`] for invalid settings; store and consumer-state errors.
    pub async fn open(
        cfg: BrokerConfig,
        metadata: watch::Receiver<Arc<ClusterMetadata>>,
    ) -> Result<Broker, BrokerError> {
        Self::open_engine(cfg, metadata, EngineRole::Standalone, StorePrep::Keep).await
    }

    /// Opens a broker instance in `role` (see `Inner::open`) and starts its background tasks.
    pub(crate) async fn open_engine(
        cfg: BrokerConfig,
        metadata: watch::Receiver<Arc<ClusterMetadata>>,
        role: EngineRole,
        prep: StorePrep,
    ) -> Result<Broker, BrokerError> {
        let inner = Inner::open(cfg, metadata, role, prep).await?;
        tasks::spawn(&inner);
        tracing::info!(
            broker_set = %inner.cfg.broker_set,
            broker_id = inner.cfg.broker_id,
            incarnation = inner.consumers.incarnation(),
            "broker opened"
        );
        Ok(Broker { inner })
    }

    /// The `comet.v1.BrokerService` implementation over this broker (cheap to clone).
    pub fn service(&self) -> BrokerGrpc {
        BrokerGrpc::new(self.api())
    }

    /// The operations of this broker as Comet's own types (cheap to clone): what the gRPC
    /// service calls, for in-process callers and tests.
    pub fn api(&self) -> BrokerApi {
        BrokerApi::new(Arc::clone(&self.inner))
    }

    /// The shared state (for the replication supervisor).
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Progress of `group` on (`topic`, `queue_id`), or `None` if the group never received
    /// from that queue (for admin tools and tests).
    pub fn consumer_progress(
        &self,
        group: &str,
        topic: &str,
        queue_id: i32,
    ) -> Option<ConsumerProgress> {
        let key = QueueKey {
            group: group.to_owned(),
            topic: topic.to_owned(),
            queue_id,
        };
        let slot = self.inner.consumers.get(&key)?;
        let st = slot.state.lock();
        st.initialized.then(|| ConsumerProgress {
            ack_offset: st.ack_offset(),
            pop_offset: st.pop_offset,
            inflight: st.inflight.len(),
        })
    }

    /// Counters of delayed delivery (pending timers, delivered, deduplicated after a restart,
    /// lost to retention).
    pub fn timer_stats(&self) -> TimerStats {
        self.inner.delays.stats()
    }

    /// Counters of transactional messages (pending, committed, rolled back, discarded after the
    /// maximum number of checks, checks sent).
    pub fn transaction_stats(&self) -> TransactionStats {
        self.inner.transactions.stats()
    }

    /// Writes the changed consumer state now (it is also written every
    /// `state_persist_interval` and at shutdown), e.g. before a planned hard stop.
    ///
    /// # Errors
    /// I/O errors of the consumer-state log.
    pub async fn persist_state(&self) -> Result<(), BrokerError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.persist_once(true))
            .await
            .map_err(|e| BrokerError::Task(e.to_string()))?
    }

    /// Stops accepting calls (new ones fail with gRPC UNAVAILABLE), ends long polls, waits up
    /// to `shutdown_grace` for running calls, persists the consumer state, then flushes,
    /// checkpoints and closes the store.
    ///
    /// # Errors
    /// [`BrokerError::DrainTimeout`] if calls outlived the grace period (everything is still
    /// persisted and closed); I/O errors of the final persistence or store close.
    pub async fn shutdown(self) -> Result<(), BrokerError> {
        let inner = Arc::clone(&self.inner);
        inner.stop();
        let drain = inner.drain().await;
        // The background tasks finish their round and return.
        inner.tasks.wait().await;
        // Timers scheduled and committed so far become durable.
        let delays = Arc::clone(&inner.delays);
        let timers = tokio::task::spawn_blocking(move || delays.timer.flush())
            .await
            .map_err(|e| BrokerError::Task(e.to_string()))?;
        let tx = Arc::clone(&inner.transactions);
        let written = tokio::task::spawn_blocking(move || tx.write_checkpoint())
            .await
            .map_err(|e| BrokerError::Task(e.to_string()))?;
        if let Err(e) = written {
            tracing::warn!(error = %e, "transaction checkpoint not written; the next start scans more");
        }
        // Final state: a full snapshot.
        let state_inner = Arc::clone(&inner);
        let persisted = tokio::task::spawn_blocking(move || state_inner.persist_final())
            .await
            .map_err(|e| BrokerError::Task(e.to_string()))?;
        let store = inner.store.write().take();
        let closed = match store {
            None => Ok(()),
            Some(store) => tokio::task::spawn_blocking(move || match Arc::try_unwrap(store) {
                Ok(store) => store.close(),
                Err(shared) => {
                    // A blocking read of a cancelled call still holds the store: make
                    // everything durable now; the last holder's drop closes it.
                    shared.flush()?;
                    shared.checkpoint()
                }
            })
            .await
            .map_err(|e| BrokerError::Task(e.to_string()))?
            .map_err(BrokerError::from),
        };
        tracing::info!(broker_set = %inner.cfg.broker_set, "broker shut down");
        persisted?;
        timers?;
        closed?;
        drain
    }
}

impl Broker {
    /// Tells when this instance's store has let go of its data directory (its last user,
    /// e.g. the blocking read of a cancelled call, may outlive [`Broker::shutdown`]). `None`
    /// if the store is already closed.
    pub(crate) fn store_released(&self) -> Option<comet_store::Released> {
        self.inner.store.read().as_ref().map(|s| s.released())
    }

    /// A crash-like stop for tests and tools: background tasks end and the files are
    /// released (locks included), but nothing is persisted, flushed or checkpointed beyond
    /// what already was, exactly as if the process had been killed after the last write.
    /// Returns once the data directory can be opened again.
    pub async fn abandon(self) {
        let inner = Arc::clone(&self.inner);
        inner.stop();
        inner.tasks.wait().await;
        drop(inner.files.lock().take());
        let store = inner.store.write().take();
        if let Some(store) = store {
            let released = store.released();
            let freed = tokio::task::spawn_blocking(move || match Arc::try_unwrap(store) {
                Ok(store) => {
                    store.abandon();
                    true
                }
                // A blocking call that was cancelled (a read, a replica's append) still holds
                // the store: the directory is free once it lets go.
                Err(shared) => {
                    drop(shared);
                    released.wait(STORE_RELEASE_LIMIT)
                }
            })
            .await
            .unwrap_or(false);
            if !freed {
                tracing::warn!(limit = ?STORE_RELEASE_LIMIT, "an abandoned broker still holds its store");
            }
        }
    }
}

/// Longest wait, when a broker instance is abandoned, for the last user of its store to let go
/// of the data directory.
pub(crate) const STORE_RELEASE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Drop for Broker {
    fn drop(&mut self) {
        // Background tasks end with the broker even without an explicit shutdown.
        self.inner.stop();
    }
}
