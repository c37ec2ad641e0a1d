//! The route table: each topic's queues, the endpoints serving them and the round-robin
//! position for picking one; cached by topic.
//!
//! Plain data with no I/O, below the session that holds the cache; fetching and refreshing
//! routes is [`crate::route`]'s job. A refreshed route keeps the round-robin position of the one
//! it replaces, so a refresh does not send the next messages back to the first queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use comet_proto::apache::rocketmq::v2 as pb;
use parking_lot::RwLock;

use crate::endpoints::Endpoints;

/// One queue of a route.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    pub(crate) proto: pb::MessageQueue,
    /// Shared with what a send or a receive hands out (receipts, messages), without a copy.
    pub(crate) endpoints: Arc<Endpoints>,
}

impl Queue {
    fn permission(&self) -> i32 {
        self.proto.permission
    }

    pub(crate) fn writable(&self) -> bool {
        let p = self.permission();
        p == pb::Permission::Write as i32 || p == pb::Permission::ReadWrite as i32
    }

    pub(crate) fn readable(&self) -> bool {
        let p = self.permission();
        p == pb::Permission::Read as i32 || p == pb::Permission::ReadWrite as i32
    }

    /// Whether the queue takes messages of `message_type` (an empty list takes all).
    pub(crate) fn accepts(&self, message_type: pb::MessageType) -> bool {
        self.proto.accept_message_types.is_empty()
            || self
                .proto
                .accept_message_types
                .contains(&(message_type as i32))
    }
}

/// A topic's route.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) queues: Vec<Queue>,
    /// Round-robin position for queue selection.
    next: AtomicUsize,
}

impl Route {
    /// The next queue in round-robin order among those `fits` accepts, skipping `avoid`
    /// endpoints when another queue is available.
    pub(crate) fn pick(
        &self,
        fits: impl Fn(&Queue) -> bool,
        avoid: Option<&str>,
    ) -> Option<&Queue> {
        let n = self.queues.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut fallback = None;
        for i in 0..n {
            let q = &self.queues[(start + i) % n];
            if !fits(q) {
                continue;
            }
            if avoid.is_some_and(|a| a == q.endpoints.key) {
                fallback.get_or_insert(q);
                continue;
            }
            return Some(q);
        }
        fallback
    }

    /// The queue `hash` selects among those `fits` accepts (stable for a fixed route).
    pub(crate) fn pick_by_hash(&self, fits: impl Fn(&Queue) -> bool, hash: u32) -> Option<&Queue> {
        let usable: Vec<&Queue> = self.queues.iter().filter(|q| fits(q)).collect();
        if usable.is_empty() {
            return None;
        }
        Some(usable[hash as usize % usable.len()])
    }
}

/// Cached routes by topic.
#[derive(Default)]
pub(crate) struct RouteCache {
    routes: RwLock<HashMap<String, Arc<Route>>>,
}

impl RouteCache {
    /// `topic`'s cached route.
    pub(crate) fn cached(&self, topic: &str) -> Option<Arc<Route>> {
        self.routes.read().get(topic).cloned()
    }

    /// Every topic with a cached route.
    pub(crate) fn topics(&self) -> Vec<String> {
        self.routes.read().keys().cloned().collect()
    }

    /// Caches `queues` as `topic`'s route, keeping the round-robin position of the route it
    /// replaces.
    pub(crate) fn store(&self, topic: &str, queues: Vec<Queue>) -> Arc<Route> {
        let start = self
            .cached(topic)
            .map_or(0, |r| r.next.load(Ordering::Relaxed));
        let route = Arc::new(Route {
            queues,
            next: AtomicUsize::new(start),
        });
        self.routes.write().insert(topic.to_owned(), route.clone());
        route
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(id: i32, perm: pb::Permission, host: &str) -> Queue {
        Queue {
            proto: pb::MessageQueue {
                topic: None,
                id,
                permission: perm as i32,
                broker: None,
                accept_message_types: vec![pb::MessageType::Normal as i32],
            },
            endpoints: Arc::new(Endpoints::from_access_point(host)),
        }
    }

    #[test]
    fn given_a_route_when_picking_should_round_robin_over_writable_queues() {
        let r = Route {
            queues: vec![
                queue(0, pb::Permission::ReadWrite, "a:1"),
                queue(1, pb::Permission::Read, "a:1"),
                queue(2, pb::Permission::ReadWrite, "a:1"),
            ],
            next: AtomicUsize::new(0),
        };
        let picked: Vec<i32> = (0..4)
            .map(|_| r.pick(Queue::writable, None).map(|q| q.proto.id))
            .map(|id| id.expect("a writable queue"))
            .collect();
        assert!(picked.iter().all(|id| *id != 1));
        assert!(picked.contains(&0) && picked.contains(&2));
        assert!(r.pick(|q| q.accepts(pb::MessageType::Fifo), None).is_none());
    }

    #[test]
    fn given_a_failed_endpoint_when_picking_should_prefer_another_but_fall_back() {
        let r = Route {
            queues: vec![
                queue(0, pb::Permission::ReadWrite, "a:1"),
                queue(1, pb::Permission::ReadWrite, "b:1"),
            ],
            next: AtomicUsize::new(0),
        };
        for _ in 0..4 {
            let q = r.pick(Queue::writable, Some("a:1")).expect("a queue");
            assert_eq!(q.endpoints.key, "b:1");
        }
        let only_a = Route {
            queues: vec![queue(0, pb::Permission::ReadWrite, "a:1")],
            next: AtomicUsize::new(0),
        };
        assert_eq!(
            only_a
                .pick(Queue::writable, Some("a:1"))
                .map(|q| q.proto.id),
            Some(0)
        );
    }

    #[test]
    fn given_a_hash_when_picking_should_always_choose_the_same_queue() {
        let r = Route {
            queues: (0..4)
                .map(|i| queue(i, pb::Permission::ReadWrite, "a:1"))
                .collect(),
            next: AtomicUsize::new(0),
        };
        let a = r.pick_by_hash(Queue::writable, 7).map(|q| q.proto.id);
        let b = r.pick_by_hash(Queue::writable, 7).map(|q| q.proto.id);
        assert_eq!(a, b);
        assert_eq!(a, Some(3));
    }
}
