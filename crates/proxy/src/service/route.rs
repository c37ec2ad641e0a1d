//! QueryRoute and QueryAssignment.

use comet_proto::apache::rocketmq::v2::{
    Assignment, Code, QueryAssignmentRequest, QueryAssignmentResponse, QueryRouteRequest,
    QueryRouteResponse,
};

use super::{Inner, require_client_id};
use crate::context::RequestContext;
use crate::names;
use crate::routes::{assignments, message_queues};
use crate::status::{self, Failure, Outcome};

impl Inner {
    /// The topic's queues, all pointing at this proxy (the request's endpoints are not used:
    /// the advertised endpoint is the one every client must reach).
    pub(super) async fn query_route(
        &self,
        ctx: &RequestContext,
        request: QueryRouteRequest,
    ) -> Outcome<QueryRouteResponse> {
        require_client_id(ctx)?;
        let name = names::topic(ctx, request.topic.as_ref())?;
        let endpoints = self.endpoints()?;
        let index = self.topic_index(&name, true).await?;
        let topic = &*index.require_topic(&name)?;
        let queues = message_queues(&index, topic, &name, endpoints);
        if queues.is_empty() {
            // An empty route crashes Rust clients and hangs Node ones: never answer OK with it.
            return Err(Failure::new(
                Code::TopicNotFound,
                format!("topic {} has no queues", name.name),
            ));
        }
        tracing::debug!(topic = %name.qualified, queues = queues.len(), "route");
        Ok(QueryRouteResponse {
            status: Some(status::ok()),
            message_queues: queues,
        })
    }

    /// Queues a push consumer should poll (see [`assignments`]).
    pub(super) fn query_assignment(
        &self,
        ctx: &RequestContext,
        request: &QueryAssignmentRequest,
    ) -> Outcome<QueryAssignmentResponse> {
        require_client_id(ctx)?;
        let topic_name = names::topic(ctx, request.topic.as_ref())?;
        let group_name = names::group(ctx, request.group.as_ref())?;
        let endpoints = self.endpoints()?;
        let index = self.metadata.current();
        let topic = &*index.require_topic(&topic_name)?;
        let fifo = index.group(&group_name.qualified).is_some_and(|g| g.fifo);
        let queues = assignments(&index, topic, &topic_name, fifo, endpoints)?;
        Ok(QueryAssignmentResponse {
            status: Some(status::ok()),
            assignments: queues
                .into_iter()
                .map(|q| Assignment {
                    message_queue: Some(q),
                })
                .collect(),
        })
    }
}
