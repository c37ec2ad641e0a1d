//! The revive task: fires visibility timers. An expired message becomes ready for redelivery
//! (waking long polls of its topic) or, with its deliveries used up, goes to the dead-letter
//! queue.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::dead_letter::DlqItem;
use crate::engine::Inner;
use crate::state::Timer;

impl Inner {
    /// Fires visibility timers: an expired message becomes ready for redelivery (waking long
    /// polls of its topic) or, with its deliveries used up, goes to the dead-letter queue.
    pub(crate) async fn revive_loop(self: Arc<Self>) {
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let purged = self.consumers.purge_stale_timers();
            if purged > 0 {
                tracing::debug!(purged, "stale visibility timers purged");
            }
            let now = now_ms();
            let due = self.consumers.take_due(now, 4096);
            if !due.is_empty() {
                self.fire(due, now).await;
                continue;
            }
            let wait = self
                .consumers
                .next_due()
                .map_or(1000, |at| (at - now).clamp(1, 1000));
            tokio::select! {
                () = self.shutdown.cancelled() => {}
                _ = self.consumers.timer_added.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            }
        }
    }

    async fn fire(&self, due: Vec<Timer>, now: i64) {
        let idx = self.meta.index();
        let mut wake: HashSet<String> = HashSet::new();
        let mut dlq = Vec::new();
        let mut revived = 0u64;
        for t in due {
            let max_attempts = self.max_attempts(&idx, &t.slot.key.group);
            let mut st = t.slot.state.lock();
            let Some(f) = st.inflight.get_mut(&t.offset) else {
                continue;
            };
            if f.generation != t.generation || f.dlq_pending || f.visible_at_ms > now {
                continue;
            }
            if f.attempts >= max_attempts {
                f.dlq_pending = true;
                let attempts = f.attempts;
                drop(st);
                dlq.push(DlqItem {
                    slot: Arc::clone(&t.slot),
                    offset: t.offset,
                    generation: t.generation,
                    attempts,
                });
            } else {
                st.ready.insert(t.offset);
                wake.insert(crate::lite::arrival_topic(&t.slot.key.topic).to_owned());
                revived += 1;
            }
        }
        self.counters.revived(revived);
        for topic in &wake {
            self.hub.notify(topic);
        }
        if !dlq.is_empty() {
            self.dead_letter(dlq).await;
        }
    }
}
