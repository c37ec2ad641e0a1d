//! Fetching and refreshing routes: topic → message queues (and the endpoints serving them).
//!
//! The table they are cached in is [`crate::route_table`], held by the session. Routes are
//! fetched with QueryRoute from the preferred access point (failing over to the next
//! when one is unreachable), refreshed every 30 s for every topic in the cache, and refreshed
//! at once when a call reports a stale route (transport failure, topic not found). A new
//! route's endpoints get a telemetry stream so the server knows the client there.

use std::sync::Arc;
use std::time::Duration;

use comet_proto::apache::rocketmq::v2 as pb;

use crate::endpoints::Endpoints;
use crate::error::{Error, Result};
use crate::route_table::{Queue, Route};
use crate::session::{Session, check};
use crate::telemetry;

const REFRESH_INTERVAL: Duration = Duration::from_secs(30);

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
            async move { session.unary(crate::rpc::QUERY_ROUTE, &access, &req).await }
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
            endpoints: Arc::new(Endpoints::from_proto(endpoints)),
        });
    }
    if queues.is_empty() {
        return Err(Error::NoQueue {
            topic: topic.to_owned(),
            reason: "the route has no queue".into(),
        });
    }
    for q in &queues {
        telemetry::ensure(session, &q.endpoints);
    }
    Ok(session.routes().store(topic, queues))
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
