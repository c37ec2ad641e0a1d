//! The delayed-delivery tasks: delivering due timers (see the `delay` module) and flushing
//! the timer wheel at the commitlog's flush interval.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::engine::Inner;
use crate::outcome::{Failure, blocking};

impl Inner {
    /// Delivers due delayed messages (see [`crate::delay`]).
    pub(crate) async fn timer_loop(self: Arc<Self>) {
        // Longest sleep without news: no timer is due sooner, or the wheel's next slot starts.
        const IDLE_MS: i64 = 1000;
        // Pause after a failed round: short at first, since the usual cause passes quickly (a
        // new master's write gate opening just after its store did), doubling up to IDLE_MS so
        // a lasting failure (disk full) is not retried in a busy loop.
        const RETRY_FIRST_MS: i64 = 10;
        let mut retry_ms = RETRY_FIRST_MS;
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            // While a round runs every new timer wakes the next wait.
            self.delays.set_next_wake(i64::MAX);
            let Ok(store) = self.store() else { break };
            let (delays, idx, now) = (Arc::clone(&self.delays), self.meta.index(), now_ms());
            let round = blocking(move || {
                let (due, retry) = delays.take_due(now, 4096)?;
                if due.is_empty() {
                    return Ok(0);
                }
                delays.deliver(&store, &idx, due, retry)
            })
            .await;
            let mut pause = None;
            match round {
                Ok(Ok(0)) => retry_ms = RETRY_FIRST_MS,
                Ok(Ok(_)) => {
                    retry_ms = RETRY_FIRST_MS;
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, retry_ms, "delayed delivery round failed; retrying");
                    pause = Some(retry_ms);
                    retry_ms = (retry_ms * 2).min(IDLE_MS);
                }
                Err(Failure { message: e, .. }) => {
                    tracing::error!(error = %e, retry_ms, "delayed delivery task failed");
                    pause = Some(retry_ms);
                    retry_ms = (retry_ms * 2).min(IDLE_MS);
                }
            }
            let now = now_ms();
            let wait_ms = pause.unwrap_or_else(|| {
                self.delays
                    .timer
                    .next_due_ms()
                    .map_or(IDLE_MS, |at| (at - now).clamp(1, IDLE_MS))
            });
            self.delays.set_next_wake(now.saturating_add(wait_ms));
            tokio::select! {
                () = self.shutdown.cancelled() => {}
                () = self.delays.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(wait_ms as u64)) => {}
            }
        }
    }

    /// Flushes the timer wheel at the commitlog's flush interval (ASYNC; SYNC sends flush it
    /// themselves), apart from delivery so that a slow fdatasync never delays a due timer.
    pub(crate) async fn timer_flush_loop(self: Arc<Self>) {
        let every = match self.cfg.flush {
            comet_store::FlushPolicy::Async { interval } => interval,
            comet_store::FlushPolicy::Sync { .. } => Duration::from_secs(1),
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.shutdown.cancelled() => break,
            }
            let delays = Arc::clone(&self.delays);
            match blocking(move || delays.timer.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "flushing the timer wheel failed"),
                Err(Failure { message: e, .. }) => {
                    tracing::error!(error = %e, "timer flush task failed")
                }
            }
        }
    }
}
