//! `comet.v1.BrokerService` over a `Broker`.

use std::sync::Arc;

use comet_proto::apache::rocketmq::v2::{
    AckMessageRequest, AckMessageResponse, ChangeInvisibleDurationRequest,
    ChangeInvisibleDurationResponse, EndTransactionRequest, EndTransactionResponse,
    ForwardMessageToDeadLetterQueueRequest, ForwardMessageToDeadLetterQueueResponse,
    GetOffsetRequest, GetOffsetResponse, PullMessageRequest, QueryOffsetRequest,
    QueryOffsetResponse, ReceiveMessageRequest, SendMessageRequest, SendMessageResponse,
    UpdateOffsetRequest, UpdateOffsetResponse,
};
use comet_proto::comet::v1::broker_service_server::BrokerService;
use comet_proto::comet::v1::{
    GetConsumerProgressRequest, GetConsumerProgressResponse, PopMessageResponse,
    PullMessageResponse, QueryMessageRequest, QueryMessageResponse, ResetOffsetRequest,
    ResetOffsetResponse, TransactionCheck, WatchTransactionChecksRequest,
};
use futures::StreamExt as _;
use parking_lot::RwLock;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::engine::{CallGuard, Inner};

/// The stream of transaction checks a broker sends to one proxy; every [`BrokerService`]
/// implementation uses this type, so the trait can be used as `dyn BrokerService<
/// WatchTransactionChecksStream = TransactionCheckStream>`.
pub type TransactionCheckStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<TransactionCheck, Status>> + Send + 'static>,
>;

/// The gRPC service of a broker: wrap it in `BrokerServiceServer::new` to serve it, or call
/// the trait methods directly in process. Cheap to clone; calls after
/// `Broker::shutdown` began fail with gRPC UNAVAILABLE.
///
/// With replication (`HaBroker`) the broker behind it is replaced when the
/// broker's role changes; every call goes to the broker current when it starts.
#[derive(Clone)]
pub struct BrokerGrpc {
    cell: Arc<RwLock<Arc<Inner>>>,
    /// Counts the brokers installed by [`BrokerGrpc::replace`].
    installed: Arc<watch::Sender<u64>>,
    /// True while the broker behind is being replaced: new calls wait for the new one.
    switching: Arc<watch::Sender<bool>>,
}

/// Longest a call waits for a role change to finish before it is tried anyway.
const SWITCH_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Longest a write waits for the master instance its metadata announced.
const PROMOTION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl std::fmt::Debug for BrokerGrpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerGrpc")
            .field("broker_set", &self.current().cfg.broker_set)
            .finish()
    }
}

impl BrokerGrpc {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self {
            cell: Arc::new(RwLock::new(inner)),
            installed: Arc::new(watch::channel(0).0),
            switching: Arc::new(watch::channel(false).0),
        }
    }

    /// The broker calls go to now.
    pub(crate) fn current(&self) -> Arc<Inner> {
        Arc::clone(&self.cell.read())
    }

    /// Counters of delayed delivery of the broker instance calls go to now (a replica's count
    /// the timers it follows; see `Broker::timer_stats`).
    pub fn timer_stats(&self) -> crate::TimerStats {
        self.current().delays.stats()
    }

    /// Counters of transactional messages of the broker instance calls go to now (a
    /// replica's `pending` counts the half messages it follows; see
    /// `Broker::transaction_stats`).
    pub fn transaction_stats(&self) -> crate::TransactionStats {
        self.current().transactions.stats()
    }

    /// The broker a new call goes to: after waiting (bounded) for a role change in progress,
    /// so that a change is a pause for callers rather than a failure.
    pub(crate) async fn ready(&self) -> Arc<Inner> {
        // Fast path: no change in progress.
        if !*self.switching.borrow() {
            let inner = self.current();
            if !inner.closing() {
                return inner;
            }
        }
        let mut rx = self.switching.subscribe();
        for _ in 0..3 {
            let _ = tokio::time::timeout(SWITCH_WAIT, rx.wait_for(|s| !*s)).await;
            let inner = self.current();
            // A closing broker with no change in progress is a real shutdown: enter() says so.
            if !inner.closing() || !*rx.borrow() {
                return inner;
            }
        }
        self.current()
    }

    /// Registers a call on the broker current now: waits out a role change in progress, and
    /// retries on the new broker when the one it got closed for a role change meanwhile.
    ///
    /// # Errors
    /// UNAVAILABLE when the broker is shutting down for good.
    pub(crate) async fn enter(&self) -> Result<(Arc<Inner>, CallGuard), Status> {
        let mut last = None;
        for _ in 0..3 {
            let inner = self.ready().await;
            match inner.enter() {
                Ok(call) => return Ok((inner, call)),
                Err(status) => {
                    let switched =
                        *self.switching.borrow() || !Arc::ptr_eq(&inner, &self.current());
                    if !switched {
                        return Err(status);
                    }
                    last = Some(status);
                }
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("the broker is changing its role")))
    }

    /// Marks the start of a role change: calls from now on wait for [`BrokerGrpc::replace`].
    pub(crate) fn begin_switch(&self) {
        self.switching.send_replace(true);
    }

    /// Points this service (and every clone of it) at another broker; waiting calls stay
    /// waiting until [`BrokerGrpc::end_switch`].
    pub(crate) fn replace(&self, inner: Arc<Inner>) {
        *self.cell.write() = inner;
        self.installed.send_modify(|n| *n += 1);
    }

    /// Like [`BrokerGrpc::enter`], for calls that write: when the broker got the metadata that
    /// makes it master before its supervisor installed the master (a proxy may route on the
    /// same news first), waits (bounded) for the master instead of refusing the write.
    ///
    /// # Errors
    /// As for [`BrokerGrpc::enter`].
    pub(crate) async fn enter_writer(&self) -> Result<(Arc<Inner>, CallGuard), Status> {
        for _ in 0..3 {
            let seen = *self.installed.borrow();
            let (inner, call) = self.enter().await?;
            if !inner.awaits_promotion() {
                return Ok((inner, call));
            }
            drop(call);
            let mut installed = self.installed.subscribe();
            let _ = tokio::time::timeout(PROMOTION_WAIT, installed.wait_for(|n| *n > seen)).await;
        }
        self.enter().await
    }

    /// Ends a role change: calls go to the current broker again.
    pub(crate) fn end_switch(&self) {
        self.switching.send_replace(false);
    }
}

#[tonic::async_trait]
impl BrokerService for BrokerGrpc {
    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let (inner, _call) = self.enter_writer().await?;
        inner.send(request.into_inner()).await.map(Response::new)
    }

    async fn pop_message(
        &self,
        request: Request<ReceiveMessageRequest>,
    ) -> Result<Response<PopMessageResponse>, Status> {
        let (inner, _call) = self.enter().await?;
        Ok(Response::new(inner.pop(request.into_inner()).await))
    }

    async fn ack_message(
        &self,
        request: Request<AckMessageRequest>,
    ) -> Result<Response<AckMessageResponse>, Status> {
        let (inner, _call) = self.enter().await?;
        let reply = inner.ack(request.into_inner());
        // Answer once the ack is in the state log: it then survives a crash of this process.
        inner.state_written().await;
        Ok(Response::new(reply))
    }

    async fn change_invisible_duration(
        &self,
        request: Request<ChangeInvisibleDurationRequest>,
    ) -> Result<Response<ChangeInvisibleDurationResponse>, Status> {
        let (inner, _call) = self.enter().await?;
        let reply = inner.change_invisible(request.into_inner());
        inner.state_written().await;
        Ok(Response::new(reply))
    }

    async fn end_transaction(
        &self,
        request: Request<EndTransactionRequest>,
    ) -> Result<Response<EndTransactionResponse>, Status> {
        let (inner, _call) = self.enter_writer().await?;
        Ok(Response::new(
            inner.end_transaction(request.into_inner()).await,
        ))
    }

    type WatchTransactionChecksStream = TransactionCheckStream;

    /// Streams transaction checks until the broker shuts down or the proxy goes away. The
    /// stream does not count as a running call (shutdown does not wait for it).
    async fn watch_transaction_checks(
        &self,
        request: Request<WatchTransactionChecksRequest>,
    ) -> Result<Response<Self::WatchTransactionChecksStream>, Status> {
        let (inner, _call) = self.enter().await?;
        let proxy_id = request.into_inner().proxy_id;
        let rx = inner.transactions.watch(&proxy_id);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(stream.boxed()))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<ForwardMessageToDeadLetterQueueResponse>, Status> {
        let (inner, _call) = self.enter().await?;
        let reply = inner.forward_to_dlq(request.into_inner()).await;
        inner.state_written().await;
        Ok(Response::new(reply))
    }

    async fn pull_message(
        &self,
        request: Request<PullMessageRequest>,
    ) -> Result<Response<PullMessageResponse>, Status> {
        let (inner, _call) = self.enter().await?;
        Ok(Response::new(inner.pull(request.into_inner()).await))
    }

    async fn update_offset(
        &self,
        request: Request<UpdateOffsetRequest>,
    ) -> Result<Response<UpdateOffsetResponse>, Status> {
        let (inner, _call) = self.enter().await?;
        let reply = inner.update_offset(request.into_inner()).await;
        // Answer once the offset is in the state log: it then survives a crash of this process.
        inner.state_written().await;
        Ok(Response::new(reply))
    }

    async fn get_offset(
        &self,
        request: Request<GetOffsetRequest>,
    ) -> Result<Response<GetOffsetResponse>, Status> {
        let (inner, _call) = self.enter().await?;
        Ok(Response::new(inner.get_offset(request.into_inner())))
    }

    async fn query_offset(
        &self,
        request: Request<QueryOffsetRequest>,
    ) -> Result<Response<QueryOffsetResponse>, Status> {
        let (inner, _call) = self.enter().await?;
        Ok(Response::new(
            inner.query_offset(request.into_inner()).await,
        ))
    }

    async fn reset_offset(
        &self,
        request: Request<ResetOffsetRequest>,
    ) -> Result<Response<ResetOffsetResponse>, Status> {
        let (inner, _call) = self.enter().await?;
        let reply = inner.reset_offset(request.into_inner()).await;
        inner.state_written().await;
        Ok(Response::new(reply))
    }

    async fn query_message(
        &self,
        request: Request<QueryMessageRequest>,
    ) -> Result<Response<QueryMessageResponse>, Status> {
        let (inner, _call) = self.enter().await?;
        Ok(Response::new(
            inner.query_message(request.into_inner()).await,
        ))
    }

    async fn get_consumer_progress(
        &self,
        request: Request<GetConsumerProgressRequest>,
    ) -> Result<Response<GetConsumerProgressResponse>, Status> {
        let (inner, _call) = self.enter().await?;
        Ok(Response::new(inner.consumer_progress(request.into_inner())))
    }
}
