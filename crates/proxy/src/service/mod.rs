//! The `apache.rocketmq.v2.MessagingService` implementation, one file per group of RPCs:
//!
//! - `route`: QueryRoute, QueryAssignment
//! - `client`: Heartbeat, NotifyClientTermination, Telemetry (sessions, settings echo)
//! - `send`: SendMessage
//! - `receive`: ReceiveMessage
//! - `ack`: AckMessage, ChangeInvisibleDuration, ForwardMessageToDeadLetterQueue
//! - `offset`: PullMessage, UpdateOffset, GetOffset, QueryOffset
//! - `transaction`: EndTransaction and the transaction check-back from brokers
//! - `recall`: RecallMessage (routed by the recall handle's broker set)
//! - `lite`: SyncLiteSubscription (to every broker set of the LITE topic) and the
//!   NotifyUnsubscribeLiteCommand of lite topics a broker dropped
//!
//! Every handler answers business failures in-body with gRPC OK, and `respond` fits each
//! status to the client's language on the way out; gRPC errors are reserved for refused
//! telemetry settings. Broker calls carry a deadline derived from the client's `grpc-timeout`
//! so that the client always gets an answer before it gives up.

mod ack;
mod client;
mod lite;
mod offset;
mod recall;
mod receive;
mod route;
mod send;
mod transaction;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use comet_auth::Action;
use comet_proto::apache::rocketmq::v2::Resource as ApiResource;
use comet_proto::apache::rocketmq::v2::messaging_service_server::MessagingService;
use comet_proto::apache::rocketmq::v2::{
    AckMessageRequest, AckMessageResponse, AckMessageResultEntry, ChangeInvisibleDurationRequest,
    ChangeInvisibleDurationResponse, Code, EndTransactionRequest, EndTransactionResponse,
    Endpoints, ForwardMessageToDeadLetterQueueRequest, ForwardMessageToDeadLetterQueueResponse,
    GetOffsetRequest, GetOffsetResponse, HeartbeatRequest, HeartbeatResponse, MessageQueue,
    NotifyClientTerminationRequest, NotifyClientTerminationResponse, Permission,
    PullMessageRequest, PullMessageResponse, QueryAssignmentRequest, QueryAssignmentResponse,
    QueryOffsetRequest, QueryOffsetResponse, QueryRouteRequest, QueryRouteResponse,
    RecallMessageRequest, RecallMessageResponse, ReceiveMessageRequest, ReceiveMessageResponse,
    SendMessageRequest, SendMessageResponse, SendResultEntry, SyncLiteSubscriptionRequest,
    SyncLiteSubscriptionResponse, TelemetryCommand, UpdateOffsetRequest, UpdateOffsetResponse,
};
use comet_proto::comet::v1::{ClusterMetadata, QueuePlacement, Topic, TopicMessageType};
use futures::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

use crate::access::{Access, Identity, Need};
use crate::brokers::{BrokerDirectory, DynBroker};
use crate::config::{ProxyConfig, parse_endpoint};
use crate::context::RequestContext;
use crate::creator::TopicCreator;
use crate::metrics::{ProxyMetrics, tag_code};
use crate::names::Name;
use crate::routes::{MetadataIndex, MetadataView, Target, topic_not_found};
use crate::session::Sessions;
use crate::status::{self, Failure, Outcome, Statuses};

/// Shared state of one proxy.
pub(crate) struct Inner {
    pub(crate) cfg: ProxyConfig,
    /// The advertised endpoint as route endpoints (or why it is invalid).
    endpoints: Result<Endpoints, String>,
    pub(crate) metadata: MetadataView,
    pub(crate) brokers: Arc<dyn BrokerDirectory>,
    creator: Option<Arc<dyn TopicCreator>>,
    pub(crate) sessions: Arc<Sessions>,
    send_round_robin: AtomicU64,
    receive_round_robin: AtomicU64,
    /// Spreads transaction checks over the producers of a topic.
    check_round_robin: AtomicU64,
    /// Cancelled when the server shuts down: long polls end, telemetry streams close.
    pub(crate) shutdown: CancellationToken,
    /// Telemetry tasks, awaited on shutdown.
    pub(crate) tasks: TaskTracker,
    /// RocketMQ's proxy metrics.
    pub(crate) metrics: ProxyMetrics,
    /// Authentication and authorization.
    access: Access,
}

impl Inner {
    pub(crate) fn new(
        cfg: ProxyConfig,
        metadata: watch::Receiver<Arc<ClusterMetadata>>,
        brokers: Arc<dyn BrokerDirectory>,
        creator: Option<Arc<dyn TopicCreator>>,
    ) -> Self {
        let endpoints = parse_endpoint(&cfg.advertised_endpoint);
        if let Err(reason) = &endpoints {
            tracing::error!(endpoint = %cfg.advertised_endpoint, %reason, "invalid advertised_endpoint");
        }
        Inner {
            metrics: ProxyMetrics::new(&cfg.observer),
            access: Access::new(&cfg.security),
            sessions: Arc::new(Sessions::new(cfg.session_idle_timeout)),
            cfg,
            endpoints,
            metadata: MetadataView::new(metadata),
            brokers,
            creator,
            send_round_robin: AtomicU64::new(0),
            receive_round_robin: AtomicU64::new(0),
            check_round_robin: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// The context of a request: its headers, its sender (authenticated when auth is on)
    /// and the peer address.
    fn context<T>(&self, request: &Request<T>) -> RequestContext {
        let mut ctx = RequestContext::from_metadata(request.metadata());
        if self.access.enabled() {
            let index = self.metadata.current();
            ctx.identity = self.access.identify(request.metadata(), &index.metadata);
            ctx.source = request.remote_addr().map(|a| a.ip());
        }
        ctx
    }

    /// Whether the request's sender holds every one of `needs` (see `access`). The needs are
    /// computed only for an authenticated user: with auth off this costs nothing.
    fn permit<N: AsRef<[Need]>>(
        &self,
        ctx: &RequestContext,
        needs: impl FnOnce() -> N,
    ) -> Outcome<()> {
        match ctx.identity {
            Identity::Anonymous => Ok(()),
            _ => self
                .access
                .permit(&ctx.identity, ctx.source, needs().as_ref()),
        }
    }

    /// The context of a consumer call on one message queue, the request itself, and whether
    /// its sender may consume there (Sub on the queue's topic and on the group, if named).
    fn on_queue<Q: OnQueue>(&self, request: Request<Q>) -> (RequestContext, Q, Outcome<()>) {
        let ctx = self.context(&request);
        let request = request.into_inner();
        let topic = request.queue().and_then(|q| q.topic.as_ref());
        let permitted = self.permit(&ctx, || consume_needs(&ctx, topic, request.group()));
        (ctx, request, permitted)
    }

    fn endpoints(&self) -> Outcome<&Endpoints> {
        self.endpoints.as_ref().map_err(|reason| {
            Failure::internal(format!(
                "proxy misconfigured: advertised_endpoint {:?}: {reason}",
                self.cfg.advertised_endpoint
            ))
        })
    }

    /// The metadata index in which `name` exists, creating the topic first when allowed.
    async fn topic_index(&self, name: &Name, may_create: bool) -> Outcome<Arc<MetadataIndex>> {
        let index = self.metadata.current();
        if index.topic(&name.qualified).is_some() {
            return Ok(index);
        }
        let creator = match (&self.creator, may_create && self.cfg.auto_create_topics) {
            (Some(c), true) => c.clone(),
            _ => return Err(topic_not_found(name)),
        };
        let mut placements: Vec<QueuePlacement> = index
            .metadata
            .broker_sets
            .iter()
            .filter(|b| index.master_address(&b.name).is_some())
            .map(|b| QueuePlacement {
                broker_set: b.name.clone(),
                queue_count: self.cfg.default_queue_count,
            })
            .collect();
        placements.sort_by(|a, b| a.broker_set.cmp(&b.broker_set));
        if placements.is_empty() {
            return Err(Failure::new(
                Code::HaNotAvailable,
                format!(
                    "topic {} does not exist and cannot be created: no broker set has a live master",
                    name.name
                ),
            ));
        }
        let topic = Topic {
            name: name.qualified.clone(),
            message_type: TopicMessageType::Mixed as i32,
            placements,
            permission: Permission::ReadWrite as i32,
            attributes: HashMap::from([("created-by".to_owned(), "proxy-auto-create".to_owned())]),
        };
        tracing::info!(topic = %name.qualified, "auto-creating topic");
        match creator.create_topic(topic).await {
            Ok(()) => {}
            Err(e) if e.code() == tonic::Code::AlreadyExists => {}
            Err(e) => {
                tracing::warn!(topic = %name.qualified, error = %e, "topic auto-creation failed");
                return Err(status::from_topic_creation(&e, &name.name));
            }
        }
        if !self
            .metadata
            .wait_for_topic(&name.qualified, self.cfg.auto_create_wait)
            .await
        {
            return Err(Failure::new(
                Code::ProxyTimeout,
                format!(
                    "topic {} was created but is not visible yet; retry shortly",
                    name.name
                ),
            ));
        }
        Ok(self.metadata.current())
    }

    fn broker(&self, target: &Target) -> Outcome<Arc<DynBroker>> {
        self.brokers
            .get(&target.broker_set, &target.address)
            .map_err(|e| status::from_broker_call(&e, &target.broker_set))
    }

    /// Deadline of a unary broker call for a request with context `ctx`.
    fn unary_budget(&self, ctx: &RequestContext) -> Duration {
        ctx.budget(self.cfg.deadline_margin, self.cfg.broker_timeout)
    }

    /// Runs one broker call with a deadline; maps every failure of the call to an in-body one.
    async fn call<T, R>(
        &self,
        target: &Target,
        budget: Duration,
        message: T,
        f: impl FnOnce(Arc<DynBroker>, Request<T>) -> BrokerCall<R>,
    ) -> Outcome<R> {
        self.call_request(target, budget, Request::new(message), f)
            .await
    }

    /// [`Inner::call`] for a consumer call: forwards the client's id (`x-mq-client-id`), by
    /// which the broker keys a broadcast group's positions.
    async fn call_for_client<T, R>(
        &self,
        ctx: &RequestContext,
        target: &Target,
        budget: Duration,
        message: T,
        f: impl FnOnce(Arc<DynBroker>, Request<T>) -> BrokerCall<R>,
    ) -> Outcome<R> {
        let mut request = Request::new(message);
        if let Some(id) = ctx
            .client_id
            .as_deref()
            .and_then(|id| tonic::metadata::AsciiMetadataValue::try_from(id).ok())
        {
            request
                .metadata_mut()
                .insert(crate::context::CLIENT_ID_HEADER, id);
        }
        self.call_request(target, budget, request, f).await
    }

    async fn call_request<T, R>(
        &self,
        target: &Target,
        budget: Duration,
        mut request: Request<T>,
        f: impl FnOnce(Arc<DynBroker>, Request<T>) -> BrokerCall<R>,
    ) -> Outcome<R> {
        let broker = self.broker(target)?;
        request.set_timeout(budget);
        comet_observe::trace_context::inject(&tracing::Span::current(), request.metadata_mut());
        match tokio::time::timeout(budget, f(broker, request)).await {
            Err(_) => {
                tracing::warn!(broker_set = %target.broker_set, ?budget, "broker call timed out");
                Err(status::broker_timeout(&target.broker_set, budget))
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    broker_set = %target.broker_set,
                    code = ?e.code(),
                    error = %e.message(),
                    "broker call failed"
                );
                Err(status::from_broker_call(&e, &target.broker_set))
            }
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }
}

/// A boxed broker call, owning the broker handle it runs on.
pub(crate) type BrokerCall<R> =
    std::pin::Pin<Box<dyn Future<Output = Result<Response<R>, Status>> + Send>>;

/// Turns a request outcome into the unary response (failures become the response's status)
/// and fits every status in it to the requesting client ([`status::for_client`]).
fn respond<T: Statuses>(
    ctx: &RequestContext,
    outcome: Outcome<T>,
    on_failure: impl FnOnce(Failure) -> T,
) -> Result<Response<T>, Status> {
    let mut answer = match outcome {
        Ok(v) => v,
        Err(f) => on_failure(f),
    };
    let mut code = None;
    answer.each_status(&mut |s| {
        code.get_or_insert(s.code);
    });
    answer.fit_for(&ctx.language);
    let mut response = Response::new(answer);
    if let Some(code) = code {
        tag_code(&mut response, code);
    }
    Ok(response)
}

/// `Statuses` for responses whose only status is the top-level `status` field.
macro_rules! top_level_status {
    ($($t:ty),* $(,)?) => {
        $(impl Statuses for $t {
            fn each_status(&mut self, f: &mut dyn FnMut(&mut comet_proto::apache::rocketmq::v2::Status)) {
                if let Some(s) = self.status.as_mut() {
                    f(s);
                }
            }
        })*
    };
}

top_level_status!(
    QueryRouteResponse,
    HeartbeatResponse,
    QueryAssignmentResponse,
    ForwardMessageToDeadLetterQueueResponse,
    UpdateOffsetResponse,
    GetOffsetResponse,
    QueryOffsetResponse,
    EndTransactionResponse,
    NotifyClientTerminationResponse,
    ChangeInvisibleDurationResponse,
    TelemetryCommand,
    RecallMessageResponse,
    SyncLiteSubscriptionResponse,
);

/// `Statuses` for responses with a top-level status and one status per entry.
macro_rules! status_per_entry {
    ($($t:ty),* $(,)?) => {
        $(impl Statuses for $t {
            fn each_status(&mut self, f: &mut dyn FnMut(&mut comet_proto::apache::rocketmq::v2::Status)) {
                self.status.iter_mut().for_each(&mut *f);
                self.entries
                    .iter_mut()
                    .filter_map(|e| e.status.as_mut())
                    .for_each(f);
            }
        })*
    };
}

status_per_entry!(SendMessageResponse, AckMessageResponse);

/// Cloneable handle implementing the generated service trait.
#[derive(Clone)]
pub(crate) struct Service(pub(crate) Arc<Inner>);

type BoxStream<T> = std::pin::Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl MessagingService for Service {
    async fn query_route(
        &self,
        request: Request<QueryRouteRequest>,
    ) -> Result<Response<QueryRouteResponse>, Status> {
        let ctx = self.0.context(&request);
        let request = request.into_inner();
        let needs = || [topic_need(&ctx, request.topic.as_ref(), PUB_OR_SUB)];
        let outcome = match self.0.permit(&ctx, needs) {
            Ok(()) => self.0.query_route(&ctx, request).await,
            Err(f) => Err(f),
        };
        respond(&ctx, outcome, |f| QueryRouteResponse {
            status: Some(f.status()),
            message_queues: vec![],
        })
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let ctx = self.0.context(&request);
        let request = request.into_inner();
        let needs = || optional_group_need(&ctx, request.group.as_ref());
        let outcome = self
            .0
            .permit(&ctx, needs)
            .and_then(|()| self.0.heartbeat(&ctx, &request));
        let outcome = outcome.map(|()| HeartbeatResponse {
            status: Some(status::ok()),
        });
        respond(&ctx, outcome, |f| HeartbeatResponse {
            status: Some(f.status()),
        })
    }

    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let ctx = self.0.context(&request);
        let request = request.into_inner();
        // Rust indexes entries[0]: even a rejected request answers one entry per message.
        let ids: Vec<String> = request
            .messages
            .iter()
            .map(|m| {
                m.system_properties
                    .as_ref()
                    .map(|s| s.message_id.clone())
                    .unwrap_or_default()
            })
            .collect();
        let needs = || {
            let mut topics: Vec<String> = request
                .messages
                .iter()
                .filter_map(|m| m.topic.as_ref().map(|t| qualified(&ctx, t)))
                .collect();
            topics.sort_unstable();
            topics.dedup();
            topics
                .into_iter()
                .map(|t| Need::topic(t, PUB))
                .collect::<Vec<_>>()
        };
        let outcome = match self.0.permit(&ctx, needs) {
            Ok(()) => self.0.send_message(&ctx, request).await,
            Err(f) => Err(f),
        };
        respond(&ctx, outcome, |f| {
            let status = f.status();
            SendMessageResponse {
                entries: ids
                    .into_iter()
                    .map(|message_id| SendResultEntry {
                        status: Some(status.clone()),
                        message_id,
                        ..SendResultEntry::default()
                    })
                    .collect(),
                status: Some(status),
            }
        })
    }

    async fn query_assignment(
        &self,
        request: Request<QueryAssignmentRequest>,
    ) -> Result<Response<QueryAssignmentResponse>, Status> {
        let ctx = self.0.context(&request);
        let request = request.into_inner();
        let needs = || consume_needs(&ctx, request.topic.as_ref(), request.group.as_ref());
        let outcome = self
            .0
            .permit(&ctx, needs)
            .and_then(|()| self.0.query_assignment(&ctx, &request));
        respond(&ctx, outcome, |f| QueryAssignmentResponse {
            status: Some(f.status()),
            assignments: vec![],
        })
    }

    type ReceiveMessageStream = BoxStream<ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        request: Request<ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, Status> {
        let (ctx, request, permitted) = self.0.on_queue(request);
        let answer = match permitted {
            Ok(()) => self.0.receive_message(&ctx, request).await,
            Err(f) => receive::Answer::refused(&ctx, f),
        };
        let stream: Self::ReceiveMessageStream =
            Box::pin(receive::ReceiveStream::new(Arc::clone(&self.0), answer));
        Ok(Response::new(stream))
    }

    async fn ack_message(
        &self,
        request: Request<AckMessageRequest>,
    ) -> Result<Response<AckMessageResponse>, Status> {
        let ctx = self.0.context(&request);
        let request = request.into_inner();
        // Rust indexes entries[0]: even a rejected request answers one entry per entry.
        let handles: Vec<(String, String)> = request
            .entries
            .iter()
            .map(|e| (e.message_id.clone(), e.receipt_handle.clone()))
            .collect();
        let needs = || consume_needs(&ctx, request.topic.as_ref(), request.group.as_ref());
        let outcome = match self.0.permit(&ctx, needs) {
            Ok(()) => self.0.ack_message(&ctx, request).await,
            Err(f) => Err(f),
        };
        respond(&ctx, outcome, |f| {
            let status = f.status();
            AckMessageResponse {
                entries: handles
                    .into_iter()
                    .map(|(message_id, receipt_handle)| AckMessageResultEntry {
                        message_id,
                        receipt_handle,
                        status: Some(status.clone()),
                    })
                    .collect(),
                status: Some(status),
            }
        })
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<ForwardMessageToDeadLetterQueueResponse>, Status> {
        let ctx = self.0.context(&request);
        let request = request.into_inner();
        let needs = || consume_needs(&ctx, request.topic.as_ref(), request.group.as_ref());
        let outcome = match self.0.permit(&ctx, needs) {
            Ok(()) => self.0.forward_to_dlq(&ctx, request).await,
            Err(f) => Err(f),
        };
        respond(&ctx, outcome, |f| ForwardMessageToDeadLetterQueueResponse {
            status: Some(f.status()),
        })
    }

    type PullMessageStream = BoxStream<PullMessageResponse>;

    async fn pull_message(
        &self,
        request: Request<PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, Status> {
        let (ctx, request, permitted) = self.0.on_queue(request);
        let frames = match permitted {
            Ok(()) => self.0.pull_message(&ctx, request).await,
            Err(f) => offset::refused_pull(&ctx, f, request.offset),
        };
        let stream: Self::PullMessageStream =
            Box::pin(futures::stream::iter(frames.into_iter().map(Ok)));
        Ok(Response::new(stream))
    }

    async fn update_offset(
        &self,
        request: Request<UpdateOffsetRequest>,
    ) -> Result<Response<UpdateOffsetResponse>, Status> {
        let (ctx, request, permitted) = self.0.on_queue(request);
        let outcome = match permitted {
            Ok(()) => self.0.update_offset(&ctx, request).await,
            Err(f) => Err(f),
        };
        respond(&ctx, outcome, |f| UpdateOffsetResponse {
            status: Some(f.status()),
        })
    }

    async fn get_offset(
        &self,
        request: Request<GetOffsetRequest>,
    ) -> Result<Response<GetOffsetResponse>, Status> {
        let (ctx, request, permitted) = self.0.on_queue(request);
        let outcome = match permitted {
            Ok(()) => self.0.get_offset(&ctx, request).await,
            Err(f) => Err(f),
        };
        respond(&ctx, outcome, |f| GetOffsetResponse {
            status: Some(f.status()),
            offset: 0,
        })
    }

    async fn query_offset(
        &self,
        request: Request<QueryOffsetRequest>,
    ) -> Result<Response<QueryOffsetResponse>, Status> {
        let (ctx, request, permitted) = self.0.on_queue(request);
        let outcome = match permitted {
            Ok(()) => self.0.query_offset(&ctx, request).await,
            Err(f) => Err(f),
        };
        respond(&ctx, outcome, |f| QueryOffsetResponse {
            status: Some(f.status()),
            offset: 0,
        })
    }

    async fn end_transaction(
        &self,
        request: Request<EndTransactionRequest>,
    ) -> Result<Response<EndTransactionResponse>, Status> {
        let ctx = self.0.context(&request);
        let request = request.into_inner();
        let needs = || [topic_need(&ctx, request.topic.as_ref(), PUB)];
        let outcome = match self.0.permit(&ctx, needs) {
            Ok(()) => self.0.end_transaction(&ctx, request).await,
            Err(f) => Err(f),
        };
        respond(&ctx, outcome, |f| EndTransactionResponse {
            status: Some(f.status()),
        })
    }

    type TelemetryStream = tokio_stream::wrappers::ReceiverStream<Result<TelemetryCommand, Status>>;

    async fn telemetry(
        &self,
        request: Request<tonic::Streaming<TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, Status> {
        let ctx = self.0.context(&request);
        Ok(Response::new(self.0.telemetry(ctx, request.into_inner())))
    }

    async fn notify_client_termination(
        &self,
        request: Request<NotifyClientTerminationRequest>,
    ) -> Result<Response<NotifyClientTerminationResponse>, Status> {
        let ctx = self.0.context(&request);
        let request = request.into_inner();
        let needs = || optional_group_need(&ctx, request.group.as_ref());
        let outcome = self
            .0
            .permit(&ctx, needs)
            .and_then(|()| self.0.notify_client_termination(&ctx, &request));
        let outcome = outcome.map(|()| NotifyClientTerminationResponse {
            status: Some(status::ok()),
        });
        respond(&ctx, outcome, |f| NotifyClientTerminationResponse {
            status: Some(f.status()),
        })
    }

    async fn change_invisible_duration(
        &self,
        request: Request<ChangeInvisibleDurationRequest>,
    ) -> Result<Response<ChangeInvisibleDurationResponse>, Status> {
        let ctx = self.0.context(&request);
        let request = request.into_inner();
        let handle = request.receipt_handle.clone();
        let needs = || consume_needs(&ctx, request.topic.as_ref(), request.group.as_ref());
        let outcome = match self.0.permit(&ctx, needs) {
            Ok(()) => self.0.change_invisible_duration(&ctx, request).await,
            Err(f) => Err(f),
        };
        // The handle is always returned: Python and Node overwrite theirs with it.
        respond(&ctx, outcome, |f| ChangeInvisibleDurationResponse {
            status: Some(f.status()),
            receipt_handle: handle,
        })
    }

    async fn recall_message(
        &self,
        request: Request<RecallMessageRequest>,
    ) -> Result<Response<RecallMessageResponse>, Status> {
        let ctx = RequestContext::from_metadata(request.metadata());
        let outcome = self.0.recall_message(&ctx, request.into_inner()).await;
        respond(&ctx, outcome, |f| RecallMessageResponse {
            status: Some(f.status()),
            message_id: String::new(),
        })
    }

    async fn sync_lite_subscription(
        &self,
        request: Request<SyncLiteSubscriptionRequest>,
    ) -> Result<Response<SyncLiteSubscriptionResponse>, Status> {
        let ctx = self.0.context(&request);
        let request = request.into_inner();
        let needs = || consume_needs(&ctx, request.topic.as_ref(), request.group.as_ref());
        let outcome = match self.0.permit(&ctx, needs) {
            Ok(()) => self.0.sync_lite_subscription(&ctx, request).await,
            Err(f) => Err(f),
        };
        respond(&ctx, outcome, |f| SyncLiteSubscriptionResponse {
            status: Some(f.status()),
        })
    }
}

/// Actions a request needs (any one of a list suffices).
const PUB: &[Action] = &[Action::Pub];
const SUB: &[Action] = &[Action::Sub];
const PUB_OR_SUB: &[Action] = &[Action::Pub, Action::Sub];

/// The qualified name (`"<ns>%<name>"`) ACLs are written against.
fn qualified(ctx: &RequestContext, resource: &ApiResource) -> String {
    comet_vocab::namespace::qualify(
        ctx.namespace_of(&resource.resource_namespace),
        &resource.name,
    )
}

/// A topic permission; a missing topic needs nothing here (validation refuses it).
fn topic_need(
    ctx: &RequestContext,
    topic: Option<&ApiResource>,
    actions: &'static [Action],
) -> Need {
    match topic {
        Some(t) => Need::topic(qualified(ctx, t), actions),
        None => Need::topic(String::new(), &[]),
    }
}

/// Sub on the topic and on the group (consumers).
fn consume_needs(
    ctx: &RequestContext,
    topic: Option<&ApiResource>,
    group: Option<&ApiResource>,
) -> Vec<Need> {
    let mut needs: Vec<Need> = topic
        .map(|t| Need::topic(qualified(ctx, t), SUB))
        .into_iter()
        .collect();
    needs.extend(group.map(|g| Need::group(qualified(ctx, g), SUB)));
    needs
}

/// A consumer request that names one message queue (and usually a group).
trait OnQueue {
    fn queue(&self) -> Option<&MessageQueue>;
    fn group(&self) -> Option<&ApiResource>;
}

/// `OnQueue` for requests with `message_queue` and `group` fields.
macro_rules! on_queue_with_group {
    ($($t:ty),* $(,)?) => {
        $(impl OnQueue for $t {
            fn queue(&self) -> Option<&MessageQueue> {
                self.message_queue.as_ref()
            }
            fn group(&self) -> Option<&ApiResource> {
                self.group.as_ref()
            }
        })*
    };
}

on_queue_with_group!(
    ReceiveMessageRequest,
    PullMessageRequest,
    UpdateOffsetRequest,
    GetOffsetRequest,
);

/// QueryOffset names no group: it needs Sub on the topic only.
impl OnQueue for QueryOffsetRequest {
    fn queue(&self) -> Option<&MessageQueue> {
        self.message_queue.as_ref()
    }
    fn group(&self) -> Option<&ApiResource> {
        None
    }
}

/// Sub on the group when the request names one (consumers' heartbeats).
fn optional_group_need(ctx: &RequestContext, group: Option<&ApiResource>) -> Vec<Need> {
    group
        .filter(|g| !g.name.is_empty())
        .map(|g| Need::group(qualified(ctx, g), SUB))
        .into_iter()
        .collect()
}

/// The client id, or CLIENT_ID_REQUIRED.
fn require_client_id(ctx: &RequestContext) -> Outcome<&str> {
    ctx.client_id
        .as_deref()
        .ok_or_else(Failure::client_id_required)
}
