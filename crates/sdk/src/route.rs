//! The route cache: topic → message queues (and the endpoints serving them).
//!
//! Routes are fetched with QueryRoute from the preferred access point (failing over to the next
//! when one is unreachable), refreshed every 30 s for every topic in the cache, and refreshed
//! at once when a call reports a stale route (transport failure, topic not found). A new
//! route's endpoints get a telemetry stream so the server knows the client there.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use comet_proto::apache::rocketmq::v2 as pb;
use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::session::{Endpoints, Session, check};

const REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// One queue of a route.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    pub(crate) proto: pb::MessageQueue,
    pub(crate) endpoints: Endpoints,
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
    fn cached(&self, topic: &str) -> Option<Arc<Route>> {
        self.routes.read().get(topic).cloned()
    }

    fn topics(&self) -> Vec<String> {
        self.routes.read().keys().cloned().collect()
    }
}

/// The route of `topic`, from the cache or the server.
pub(crate) async fn route(session: &Session, topic: &str) -> Result<Arc<Route>> {
    if let Some(r) = session.routes().cached(topic) {
        return Ok(r);
    }
    refresh(session, topic).await
}

/// Fetches `topic`'s route from the server and caches it.
pub(crate) async fn refresh(session: &Session, topic: &str) -> Result<Arc<Route>> {
    let resource = session.resource(topic);
    let response = session
        .on_access_point(|access| {
            let req = pb::QueryRouteRequest {
                topic: Some(resource.clone()),
                endpoints: Some(access.proto.clone()),
            };
            async move {
                session
                    .unary("QueryRoute", &access, req, |mut c, r| async move {
                        c.query_route(r).await
                    })
                    .await
            }
        })
        .await?;
    check("QueryRoute", response.status.as_ref())?;
    let mut queues = Vec::with_capacity(response.message_queues.len());
    for mq in response.message_queues {
        let Some(endpoints) = mq.broker.as_ref().and_then(|b| b.endpoints.clone()) else {
            return Err(Error::Protocol {
                rpc: "QueryRoute",
                what: format!("queue {} of {topic} names no broker endpoints", mq.id),
            });
        };
        if endpoints.addresses.is_empty() {
            return Err(Error::Protocol {
                rpc: "QueryRoute",
                what: format!("queue {} of {topic} has no broker address", mq.id),
            });
        }
        queues.push(Queue {
            proto: mq,
            endpoints: Endpoints::from_proto(endpoints),
        });
    }
    if queues.is_empty() {
        return Err(Error::NoQueue {
            topic: topic.to_owned(),
            reason: "the route has no queue".into(),
        });
    }
    for q in &queues {
        session.ensure_telemetry(&q.endpoints);
    }
    let start = session
        .routes()
        .cached(topic)
        .map_or(0, |r| r.next.load(Ordering::Relaxed));
    let route = Arc::new(Route {
        queues,
        next: AtomicUsize::new(start),
    });
    session
        .routes()
        .routes
        .write()
        .insert(topic.to_owned(), route.clone());
    Ok(route)
}

/// Refreshes every cached route every 30 s until the session stops.
pub(crate) async fn refresh_loop(session: Session) {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + REFRESH_INTERVAL,
        REFRESH_INTERVAL,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = session.token().cancelled() => return,
            _ = tick.tick() => {}
        }
        for topic in session.routes().topics() {
            if let Err(e) = refresh(&session, &topic).await {
                tracing::debug!(topic = %topic, error = %e, "route refresh failed; keeping the cached route");
            }
        }
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
            endpoints: Endpoints::from_access_point(host),
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
