//! Long-poll wake-ups: one watch channel per topic, bumped when the store dispatches new
//! messages of the topic or when in-flight messages of it become visible again.
//!
//! A poller subscribes *before* it looks for messages and marks the current version seen, so
//! a wake-up between its check and its wait is never lost.

use std::collections::HashMap;

use parking_lot::RwLock;
use tokio::sync::watch;

/// Per-topic arrival versions.
#[derive(Debug, Default)]
pub(crate) struct ArrivalHub {
    topics: RwLock<HashMap<String, watch::Sender<u64>>>,
}

impl ArrivalHub {
    /// A receiver that changes on every later [`ArrivalHub::notify`] of `topic`.
    pub fn subscribe(&self, topic: &str) -> watch::Receiver<u64> {
        if let Some(tx) = self.topics.read().get(topic) {
            return tx.subscribe();
        }
        self.topics
            .write()
            .entry(topic.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Subscriptions alive now: long polls waiting for an arrival (and pollers between their
    /// check and their wait).
    pub fn waiting(&self) -> usize {
        self.topics
            .read()
            .values()
            .map(watch::Sender::receiver_count)
            .sum()
    }

    /// Wakes every poller of `topic`. Cheap when nobody ever polled it; safe to call from
    /// the store's dispatcher thread.
    pub fn notify(&self, topic: &str) {
        if let Some(tx) = self.topics.read().get(topic) {
            tx.send_modify(|v| *v = v.wrapping_add(1));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn given_subscriber_when_notified_should_see_a_change() {
        let hub = ArrivalHub::default();
        hub.notify("t"); // nobody listens: no effect, no channel created
        let mut rx = hub.subscribe("t");
        rx.borrow_and_update();
        hub.notify("other");
        assert!(!rx.has_changed().unwrap());
        hub.notify("t");
        assert!(rx.has_changed().unwrap());
    }
}
