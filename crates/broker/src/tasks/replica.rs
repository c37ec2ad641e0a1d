//! A replica's task: follows the timer and transaction records of the master as its log
//! grows (a replica delivers and checks nothing itself).

use std::sync::Arc;
use std::time::Duration;

use comet_vocab::system;

use crate::clock::now_ms;
use crate::engine::Inner;
use crate::error::BrokerError;
use crate::outcome::{Failure, blocking};

impl Inner {
    /// A replica's copy of the master's timer and transaction state: as the log grows, new
    /// schedule records enter the wheel, due timers whose done record arrived are committed,
    /// and half messages and their ops update the transaction table and its checkpoint (see
    /// [`crate::delay`] and [`crate::transaction`]). Wakes on arrivals in the three system
    /// topics, when a timer comes due, and at least every second.
    pub(crate) async fn replica_state_loop(self: Arc<Self>) {
        const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
        const IDLE_MS: i64 = 1000;
        let mut arrivals = [
            system::TIMER_TOPIC,
            system::TRANS_HALF_TOPIC,
            system::TRANS_OP_HALF_TOPIC,
        ]
        .map(|t| self.hub.subscribe(t));
        let mut last_checkpoint = tokio::time::Instant::now();
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            for a in &mut arrivals {
                a.borrow_and_update();
            }
            let Ok(store) = self.store() else { break };
            let (delays, tx) = (Arc::clone(&self.delays), Arc::clone(&self.transactions));
            let checkpoint = last_checkpoint.elapsed() >= CHECKPOINT_EVERY;
            let round = blocking(move || {
                let now = now_ms();
                delays.catch_up(&store, now)?;
                delays.shadow_commit(&store, now)?;
                tx.follow(&store, now);
                if checkpoint {
                    tx.write_checkpoint()?;
                }
                Ok::<_, BrokerError>(())
            })
            .await;
            if checkpoint {
                last_checkpoint = tokio::time::Instant::now();
            }
            let pause = match round {
                Ok(Ok(())) => None,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "following the timer and transaction records failed; retrying in 1 s");
                    Some(IDLE_MS)
                }
                Err(Failure { message: e, .. }) => {
                    tracing::error!(error = %e, "replica state task failed");
                    Some(IDLE_MS)
                }
            };
            let now = now_ms();
            // Due timers waiting for their done record wait for the next arrival.
            let wait_ms = pause
                .or_else(|| self.delays.shadow_waiting().then_some(IDLE_MS))
                .unwrap_or_else(|| {
                    self.delays
                        .timer
                        .next_due_ms()
                        .map_or(IDLE_MS, |at| (at - now).clamp(1, IDLE_MS))
                });
            let [a, b, c] = &mut arrivals;
            tokio::select! {
                () = self.shutdown.cancelled() => {}
                _ = a.changed() => {}
                _ = b.changed() => {}
                _ = c.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(wait_ms as u64)) => {}
            }
        }
    }
}
