//! Reaching brokers: the [`BrokerDirectory`] seam and its two implementations.
//!
//! - [`LocalBrokers`]: in-process brokers by broker-set name (standalone "Local mode", no TCP).
//! - [`RemoteBrokers`]: one [`Link`] per member address (per-thread HTTP/2 connections over
//!   write-gathering sockets, SendMessage combining and backpressure; see [`crate::link`]),
//!   wrapped in [`RemoteBroker`], which implements the same [`BrokerService`] trait.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;

use comet_proto::apache::rocketmq::v2::{
    AckMessageRequest, AckMessageResponse, ChangeInvisibleDurationRequest,
    ChangeInvisibleDurationResponse, EndTransactionRequest, EndTransactionResponse,
    ForwardMessageToDeadLetterQueueRequest, ForwardMessageToDeadLetterQueueResponse,
    GetOffsetRequest, GetOffsetResponse, PullMessageRequest, QueryOffsetRequest,
    QueryOffsetResponse, RecallMessageRequest, RecallMessageResponse, ReceiveMessageRequest,
    SendMessageRequest, SendMessageResponse, SyncLiteSubscriptionResponse, UpdateOffsetRequest,
    UpdateOffsetResponse,
};
pub use comet_proto::comet::v1::broker_service_server::BrokerService;
use comet_proto::comet::v1::{
    GetConsumerProgressRequest, GetConsumerProgressResponse, PopMessageResponse,
    PullMessageResponse, QueryMessageRequest, QueryMessageResponse, ResetOffsetRequest,
    ResetOffsetResponse, SetLogLevelRequest, SetLogLevelResponse, SettleMessagesRequest,
    SettleMessagesResponse, SyncLiteRequest, TransactionCheck, WatchTransactionChecksRequest,
};
use futures::{Stream, StreamExt as _};
use parking_lot::{Mutex, RwLock};

pub use crate::link::INTERNAL_MAX_MESSAGE_BYTES;
use crate::link::{Link, LinkOptions, LinkStats, broker_path};
use tonic::{Request, Response, Status};

/// The `WatchTransactionChecks` stream type of every [`BrokerService`] implementation used with
/// a [`BrokerDirectory`] (the in-process broker's is the same type).
pub type TransactionCheckStream =
    Pin<Box<dyn Stream<Item = Result<TransactionCheck, Status>> + Send + 'static>>;

/// A broker as the proxy calls it: the internal service with its stream type fixed, so that it
/// can be shared as `Arc<DynBroker>`.
pub type DynBroker = dyn BrokerService<WatchTransactionChecksStream = TransactionCheckStream>;

/// Resolves a broker set to something that implements the internal [`BrokerService`].
///
/// `member_address` is the `host:port` of the broker set's current master from the metadata;
/// in-process directories may ignore it. Implementations must be cheap to call per request
/// (cache connections) and must not block.
pub trait BrokerDirectory: Send + Sync + 'static {
    /// The broker serving `broker_set` at `member_address`.
    ///
    /// # Errors
    /// A gRPC status (e.g. UNAVAILABLE) when no broker can be reached; the proxy reports it
    /// in-body to the client.
    fn get(&self, broker_set: &str, member_address: &str) -> Result<Arc<DynBroker>, Status>;
}

/// In-process brokers keyed by broker-set name ("Local mode": no network hop).
#[derive(Default)]
pub struct LocalBrokers {
    brokers: RwLock<HashMap<String, Arc<DynBroker>>>,
}

impl LocalBrokers {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the broker of `broker_set`.
    pub fn insert(&self, broker_set: impl Into<String>, broker: Arc<DynBroker>) {
        self.brokers.write().insert(broker_set.into(), broker);
    }

    /// Forgets the broker of `broker_set`; returns whether one was registered.
    pub fn remove(&self, broker_set: &str) -> bool {
        self.brokers.write().remove(broker_set).is_some()
    }
}

impl std::fmt::Debug for LocalBrokers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sets: Vec<String> = self.brokers.read().keys().cloned().collect();
        f.debug_struct("LocalBrokers")
            .field("broker_sets", &sets)
            .finish()
    }
}

impl BrokerDirectory for LocalBrokers {
    fn get(&self, broker_set: &str, _member_address: &str) -> Result<Arc<DynBroker>, Status> {
        self.brokers.read().get(broker_set).cloned().ok_or_else(|| {
            Status::unavailable(format!(
                "broker set {broker_set} is not running in this process"
            ))
        })
    }
}

/// Brokers over gRPC: one [`Link`] per member address, reused by all calls.
#[derive(Debug)]
pub struct RemoteBrokers {
    options: LinkOptions,
    clients: Mutex<HashMap<String, Arc<RemoteBroker>>>,
}

impl Default for RemoteBrokers {
    fn default() -> Self {
        Self::with_options(LinkOptions::default())
    }
}

impl RemoteBrokers {
    /// A directory whose TCP connects give up after `connect_timeout` (other link options at
    /// their defaults).
    pub fn new(connect_timeout: Duration) -> Self {
        Self::with_options(LinkOptions {
            connect_timeout,
            ..LinkOptions::default()
        })
    }

    /// A directory whose links use `options`.
    pub fn with_options(options: LinkOptions) -> Self {
        RemoteBrokers {
            options,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Counters of the link to `address`, if one was made.
    pub fn link_stats(&self, address: &str) -> Option<LinkStats> {
        self.clients.lock().get(address).map(|b| b.link.stats())
    }

    /// Drops cached connections to addresses not in `keep` (members that left the cluster).
    pub fn retain_addresses(&self, keep: &[&str]) {
        self.clients
            .lock()
            .retain(|addr, _| keep.contains(&addr.as_str()));
    }
}

impl BrokerDirectory for RemoteBrokers {
    fn get(&self, broker_set: &str, member_address: &str) -> Result<Arc<DynBroker>, Status> {
        if member_address.is_empty() {
            return Err(Status::unavailable(format!(
                "broker set {broker_set} has no address"
            )));
        }
        let mut clients = self.clients.lock();
        if let Some(c) = clients.get(member_address) {
            return Ok(c.clone());
        }
        let broker = Arc::new(RemoteBroker::with_options(
            member_address,
            self.options.clone(),
        )?);
        clients.insert(member_address.to_owned(), broker.clone());
        Ok(broker)
    }
}

/// A broker reached over the internal link (see [`crate::link`]), presented as the
/// [`BrokerService`] trait. SendMessage calls that arrive together are combined, and so are
/// AckMessage and ChangeInvisibleDuration calls (into one SettleMessages).
#[derive(Debug, Clone)]
pub struct RemoteBroker {
    link: Link,
}

impl RemoteBroker {
    /// A client for `address` (`host:port`) that connects on first use and reconnects after
    /// failures; messages up to [`INTERNAL_MAX_MESSAGE_BYTES`] both ways.
    ///
    /// # Errors
    /// INVALID_ARGUMENT when `address` is not a `host:port`.
    pub fn connect_lazy(address: &str, connect_timeout: Duration) -> Result<RemoteBroker, Status> {
        Self::with_options(
            address,
            LinkOptions {
                connect_timeout,
                ..LinkOptions::default()
            },
        )
    }

    /// As [`RemoteBroker::connect_lazy`], with every link option.
    ///
    /// # Errors
    /// INVALID_ARGUMENT when `address` is not a `host:port`.
    pub fn with_options(address: &str, options: LinkOptions) -> Result<RemoteBroker, Status> {
        Ok(RemoteBroker {
            link: Link::new(address, options)?,
        })
    }

    /// The link this broker is called over.
    pub fn link(&self) -> &Link {
        &self.link
    }
}

#[tonic::async_trait]
impl BrokerService for RemoteBroker {
    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        self.link.send_message(request).await
    }

    async fn pop_message(
        &self,
        request: Request<ReceiveMessageRequest>,
    ) -> Result<Response<PopMessageResponse>, Status> {
        self.link.unary(broker_path!("PopMessage"), request).await
    }

    async fn ack_message(
        &self,
        request: Request<AckMessageRequest>,
    ) -> Result<Response<AckMessageResponse>, Status> {
        self.link.ack_message(request).await
    }

    async fn change_invisible_duration(
        &self,
        request: Request<ChangeInvisibleDurationRequest>,
    ) -> Result<Response<ChangeInvisibleDurationResponse>, Status> {
        self.link.change_invisible_duration(request).await
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<ForwardMessageToDeadLetterQueueResponse>, Status> {
        self.link
            .unary(broker_path!("ForwardMessageToDeadLetterQueue"), request)
            .await
    }

    async fn pull_message(
        &self,
        request: Request<PullMessageRequest>,
    ) -> Result<Response<PullMessageResponse>, Status> {
        self.link.unary(broker_path!("PullMessage"), request).await
    }

    async fn update_offset(
        &self,
        request: Request<UpdateOffsetRequest>,
    ) -> Result<Response<UpdateOffsetResponse>, Status> {
        self.link.unary(broker_path!("UpdateOffset"), request).await
    }

    async fn get_offset(
        &self,
        request: Request<GetOffsetRequest>,
    ) -> Result<Response<GetOffsetResponse>, Status> {
        self.link.unary(broker_path!("GetOffset"), request).await
    }

    async fn query_offset(
        &self,
        request: Request<QueryOffsetRequest>,
    ) -> Result<Response<QueryOffsetResponse>, Status> {
        self.link.unary(broker_path!("QueryOffset"), request).await
    }

    async fn reset_offset(
        &self,
        request: Request<ResetOffsetRequest>,
    ) -> Result<Response<ResetOffsetResponse>, Status> {
        self.link.unary(broker_path!("ResetOffset"), request).await
    }

    async fn query_message(
        &self,
        request: Request<QueryMessageRequest>,
    ) -> Result<Response<QueryMessageResponse>, Status> {
        self.link.unary(broker_path!("QueryMessage"), request).await
    }

    async fn get_consumer_progress(
        &self,
        request: Request<GetConsumerProgressRequest>,
    ) -> Result<Response<GetConsumerProgressResponse>, Status> {
        self.link
            .unary(broker_path!("GetConsumerProgress"), request)
            .await
    }

    async fn end_transaction(
        &self,
        request: Request<EndTransactionRequest>,
    ) -> Result<Response<EndTransactionResponse>, Status> {
        self.link
            .unary(broker_path!("EndTransaction"), request)
            .await
    }

    type WatchTransactionChecksStream = TransactionCheckStream;

    async fn watch_transaction_checks(
        &self,
        request: Request<WatchTransactionChecksRequest>,
    ) -> Result<Response<Self::WatchTransactionChecksStream>, Status> {
        let response = self
            .link
            .server_streaming::<_, TransactionCheck>(
                broker_path!("WatchTransactionChecks"),
                request,
            )
            .await?;
        Ok(response.map(|s| s.boxed()))
    }

    async fn recall_message(
        &self,
        request: Request<RecallMessageRequest>,
    ) -> Result<Response<RecallMessageResponse>, Status> {
        self.link
            .unary(broker_path!("RecallMessage"), request)
            .await
    }

    async fn set_log_level(
        &self,
        request: Request<SetLogLevelRequest>,
    ) -> Result<Response<SetLogLevelResponse>, Status> {
        self.link.unary(broker_path!("SetLogLevel"), request).await
    }

    async fn get_broker_status(
        &self,
        request: Request<comet_proto::comet::v1::GetBrokerStatusRequest>,
    ) -> Result<Response<comet_proto::comet::v1::GetBrokerStatusResponse>, Status> {
        self.link
            .unary(broker_path!("GetBrokerStatus"), request)
            .await
    }

    async fn settle_messages(
        &self,
        request: Request<SettleMessagesRequest>,
    ) -> Result<Response<SettleMessagesResponse>, Status> {
        self.link
            .unary(broker_path!("SettleMessages"), request)
            .await
    }

    async fn sync_lite_subscription(
        &self,
        request: Request<SyncLiteRequest>,
    ) -> Result<Response<SyncLiteSubscriptionResponse>, Status> {
        self.link
            .unary(broker_path!("SyncLiteSubscription"), request)
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn local_directory_reports_missing_sets() {
        let dir = LocalBrokers::new();
        let err = match dir.get("bs-x", "") {
            Ok(_) => panic!("found a broker that was never inserted"),
            Err(e) => e,
        };
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(err.message().contains("bs-x"));
        assert!(!dir.remove("bs-x"));
    }

    #[tokio::test]
    async fn remote_directory_caches_one_client_per_address() {
        let dir = RemoteBrokers::default();
        dir.get("a", "127.0.0.1:1").unwrap();
        dir.get("a", "127.0.0.1:1").unwrap();
        dir.get("b", "127.0.0.1:2").unwrap();
        assert_eq!(dir.clients.lock().len(), 2);
        dir.retain_addresses(&["127.0.0.1:2"]);
        assert_eq!(dir.clients.lock().len(), 1);
        assert!(dir.get("a", "").is_err());
        assert!(dir.get("a", "bad address with spaces").is_err());
    }
}
