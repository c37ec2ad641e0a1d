//! The transaction-check task: checks unresolved transactions when due (broadcast to the
//! watching proxies), discards those out of checks, and writes the transaction checkpoint.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::engine::Inner;
use crate::outcome::{Failure, blocking};

impl Inner {
    /// Checks unresolved transactions when due (broadcast to the watching proxies), discards
    /// those out of checks, and writes the transaction checkpoint every few seconds.
    pub(crate) async fn transaction_loop(self: Arc<Self>) {
        const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
        let mut last_checkpoint = tokio::time::Instant::now();
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let Ok(store) = self.store() else { break };
            // While a round runs, every new half message wakes the next wait.
            self.transactions.set_next_wake(i64::MAX);
            let now = now_ms();
            let (due, next) = self.transactions.take_due(now, 1024);
            if !due.is_empty() {
                let (tx, idx, st) = (
                    Arc::clone(&self.transactions),
                    self.meta.index(),
                    Arc::clone(&store),
                );
                let checks = blocking(move || {
                    let now = now_ms();
                    due.iter()
                        .filter_map(|d| {
                            let outcome = tx.run_check(&st, &idx, d);
                            tx.finish_check(d, outcome, now)
                        })
                        .collect::<Vec<_>>()
                })
                .await;
                match checks {
                    Ok(checks) => {
                        for c in &checks {
                            let proxies = self.transactions.broadcast(c);
                            tracing::debug!(transaction_id = %c.transaction_id, proxies, "transaction check sent");
                        }
                    }
                    Err(Failure { message: e, .. }) => {
                        tracing::error!(error = %e, "transaction check task failed")
                    }
                }
                continue;
            }
            if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                last_checkpoint = tokio::time::Instant::now();
                let tx = Arc::clone(&self.transactions);
                match blocking(move || tx.write_checkpoint()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "writing the transaction checkpoint failed")
                    }
                    Err(Failure { message: e, .. }) => {
                        tracing::error!(error = %e, "transaction checkpoint task failed")
                    }
                }
            }
            let now = now_ms();
            let wait = next.map_or(1000, |at| (at - now).clamp(1, 1000));
            self.transactions.set_next_wake(now.saturating_add(wait));
            tokio::select! {
                () = self.shutdown.cancelled() => {}
                () = self.transactions.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            }
        }
    }
}
