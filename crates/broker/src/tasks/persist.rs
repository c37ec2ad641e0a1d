//! The persist task: writes the consumer-state changes no call wrote itself, compacts the
//! log when it is big, and fdatasyncs it every `state_persist_interval`.

use std::sync::Arc;

use crate::engine::Inner;

impl Inner {
    /// Writes the consumer-state changes that no call wrote itself (see
    /// [`Inner::persist_inline`]: the log was busy, or the change came from a path that does
    /// not wait for it), compacts the log when it is big, and fdatasyncs it every
    /// `state_persist_interval` (so a power loss loses at most that interval of changes).
    pub(crate) async fn persist_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.cfg.state_persist_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let sync = tokio::select! {
                _ = tick.tick() => true,
                () = self.consumers.changed.notified() => false,
                () = self.shutdown.cancelled() => break,
            };
            let me = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || me.persist_once(sync)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "persisting consumer state failed; will retry")
                }
                Err(e) => tracing::error!(error = %e, "consumer-state task failed"),
            }
        }
    }
}
