//! The broadcast-expiry task (writers): removes the positions of broadcast clients that have
//! not received for `broadcast_client_ttl` (see `broadcast`).

use std::sync::Arc;
use std::time::Duration;

use crate::engine::Inner;

/// Longest pause between two expiry rounds: a client is removed at most this long after its
/// TTL ended (or a tenth of the TTL, when that is shorter).
const MAX_ROUND: Duration = Duration::from_secs(10);

impl Inner {
    /// Runs [`Inner::expire_broadcast_clients`] every tenth of the TTL (at most every
    /// [`MAX_ROUND`]) until shutdown. A round scans the consumer-state owners once.
    pub(crate) async fn broadcast_expiry_loop(self: Arc<Self>) {
        let period =
            (self.cfg.broadcast_client_ttl / 10).clamp(Duration::from_millis(10), MAX_ROUND);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.shutdown.cancelled() => break,
            }
            self.expire_broadcast_clients();
        }
    }
}
