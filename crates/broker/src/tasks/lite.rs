//! The lite task (every instance): expires lite topics without writes for `lite_topic_ttl`,
//! forgets silent lite clients and keeps the lite index log compact and synced (see `lite`).

use std::sync::Arc;
use std::time::Duration;

use crate::engine::Inner;

/// Longest pause between two rounds: a lite topic is removed at most this long after its TTL
/// ended (or a tenth of the TTL, when that is shorter).
const MAX_ROUND: Duration = Duration::from_secs(10);

impl Inner {
    /// Runs [`Inner::lite_sweep`] every tenth of the TTL (at most every [`MAX_ROUND`]) until
    /// shutdown.
    pub(crate) async fn lite_loop(self: Arc<Self>) {
        let period = (self.cfg.lite_topic_ttl / 10).clamp(Duration::from_millis(10), MAX_ROUND);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.shutdown.cancelled() => break,
            }
            self.lite_sweep().await;
        }
    }
}
