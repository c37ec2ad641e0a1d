//! [`ControllerClient`]: the one gRPC client of the controller cluster, used by the broker's
//! controller link (registration, heartbeats, sync-state-set changes, the metadata watch) and,
//! through the `comet` binary, by the cluster-mode proxy (metadata, topic auto-creation) and
//! the admin commands.
//!
//! - Calls go to the last node that answered; a node that is not the Raft leader answers
//!   UNAVAILABLE with the leader's address in the `comet-leader` metadata, which is followed at
//!   once when it is a configured address (or the only configured address is a seed); see
//!   `ControllerClient::follows`. Other failures move on to the next configured address, with
//!   a short backoff between rounds, until the call's overall deadline.
//! - [`watch_metadata`] keeps a `watch` channel fed from `WatchMetadata` streams, reconnecting
//!   after any failure and keeping the last known snapshot meanwhile, so a proxy or broker keeps
//!   serving while the controller is unavailable. Its task is tracked and ends on shutdown.
//! - Every connection pings its controller every 500 ms (HTTP/2 keepalive) and is closed when
//!   a ping goes unanswered for 1 s: a controller cut off by a network partition neither
//!   answers nor resets, and without the pings a heartbeat or a metadata watch on it would
//!   wait forever instead of moving on to the other controllers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use comet_proto::comet::v1::controller_admin_service_client::ControllerAdminServiceClient;
use comet_proto::comet::v1::controller_service_client::ControllerServiceClient;
use comet_proto::comet::v1::{
    AlterSyncStateSetRequest, BrokerSet, ClusterMetadata, WatchMetadataRequest,
};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::{Channel, Endpoint};

use crate::{BrokerError, ControllerLink};

/// Metadata key carrying the leader's address on a not-leader reply.
const LEADER_HINT: &str = "comet-leader";

/// How long one call keeps trying before it reports the last error.
const CALL_DEADLINE: Duration = Duration::from_secs(15);

/// Raised limits for internal calls (metadata snapshots can be large).
const MAX_MESSAGE: usize = 64 << 20;

/// How often a connection to a controller is pinged, busy or idle.
const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(500);

/// A connection whose ping is not answered within this is closed (its calls and watch fail
/// and move on to another controller): well within a broker lease (3 s by default), so a
/// broker cut off from one controller renews its lease through another in time.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(1);

/// The node calls currently go to: its address and channel.
type Connected = (String, Channel);

/// A connection to the controller cluster that follows the leader.
#[derive(Clone)]
pub struct ControllerClient {
    addrs: Arc<Vec<String>>,
    /// Plaintext or mutual TLS (`tls.internal_*`).
    connector: comet_auth::Connector,
    current: Arc<Mutex<Option<Connected>>>,
}

impl ControllerClient {
    /// A client for the given `host:port` addresses (none are contacted yet).
    ///
    /// # Errors
    /// [`BrokerError::Config`] (key `controllers`) when `addrs` is empty.
    pub fn new(addrs: Vec<String>) -> Result<Self, BrokerError> {
        if addrs.is_empty() {
            return Err(BrokerError::Config {
                key: "controllers",
                reason: "no controller address given".to_owned(),
            });
        }
        Ok(ControllerClient {
            addrs: Arc::new(addrs),
            connector: comet_auth::Connector::plaintext(),
            current: Arc::new(Mutex::new(None)),
        })
    }

    /// The same client dialing through `connector` (internal TLS).
    #[must_use]
    pub fn with_connector(mut self, connector: comet_auth::Connector) -> Self {
        self.connector = connector;
        self
    }

    /// How this client dials (plaintext or mutual TLS); other internal clients of the same
    /// process reuse it.
    pub fn connector(&self) -> &comet_auth::Connector {
        &self.connector
    }

    /// Whether to follow a leader hint to `addr`: always when it is one of the configured
    /// addresses, and for an address the client was not given (the controllers' own view of
    /// their addresses) only when a single address is configured (a seed). With several
    /// configured addresses that differ from the advertised ones (relays, NAT, a proxy in
    /// between), the client reaches the leader through its configured addresses instead.
    fn follows(&self, addr: &str) -> bool {
        self.addrs.len() == 1 || self.addrs.iter().any(|a| a == addr)
    }

    fn connect(&self, addr: &str) -> Result<Channel, tonic::Status> {
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| {
                tonic::Status::invalid_argument(format!("bad controller address {addr:?}: {e}"))
            })?
            .connect_timeout(Duration::from_secs(3))
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        Ok(self.connector.lazy_channel(&endpoint))
    }

    fn service_client(channel: Channel) -> ControllerServiceClient<Channel> {
        ControllerServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Runs `f` against the leader (as far as it can be found) and returns its reply.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, tonic::Status>
    where
        F: Fn(ControllerServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_channel(|ch| f(Self::service_client(ch))).await
    }

    /// Runs `f` against the leader's `ControllerAdminService` (Raft membership), following the
    /// leader like [`ControllerClient::call`].
    pub async fn call_admin<T, F, Fut>(&self, f: F) -> Result<T, tonic::Status>
    where
        F: Fn(ControllerAdminServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_channel(|ch| f(ControllerAdminServiceClient::new(ch)))
            .await
    }

    /// Runs `f` against one node without following the leader: the first configured address that
    /// answers (reads such as `DescribeControllers` that any node serves).
    pub async fn call_any_admin<T, F, Fut>(&self, f: F) -> Result<(String, T), tonic::Status>
    where
        F: Fn(ControllerAdminServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last = tonic::Status::unavailable("no controller address given");
        for addr in self.addrs.iter() {
            let channel = self.connect(addr)?;
            match f(ControllerAdminServiceClient::new(channel)).await {
                Ok(reply) => return Ok((addr.clone(), reply.into_inner())),
                Err(status) => last = status,
            }
        }
        Err(last)
    }

    async fn call_channel<T, F, Fut>(&self, f: F) -> Result<T, tonic::Status>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + CALL_DEADLINE;
        let mut next = 0usize;
        let mut last_err: tonic::Status;
        let mut backoff = Duration::from_millis(50);
        loop {
            // Bind first: a guard in the match scrutinee would live through the arms.
            let current = self.current.lock().clone();
            let (addr, client) = match current {
                Some(c) => c,
                None => {
                    let addr = self.addrs[next % self.addrs.len()].clone();
                    next += 1;
                    let client = self.connect(&addr)?;
                    *self.current.lock() = Some((addr.clone(), client.clone()));
                    (addr, client)
                }
            };
            match f(client).await {
                Ok(reply) => return Ok(reply.into_inner()),
                Err(status) => {
                    let hint = status
                        .metadata()
                        .get(LEADER_HINT)
                        .and_then(|v| v.to_str().ok())
                        .filter(|h| !h.is_empty() && *h != addr && self.follows(h))
                        .map(str::to_owned);
                    let retryable = matches!(
                        status.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Unknown
                            | tonic::Code::Cancelled
                    );
                    if !retryable {
                        return Err(status);
                    }
                    tracing::debug!(controller = %addr, code = ?status.code(), msg = status.message(), leader_hint = ?hint, "controller call failed");
                    *self.current.lock() = match hint {
                        Some(leader) => Some((leader.clone(), self.connect(&leader)?)),
                        None => None,
                    };
                    last_err = status;
                }
            }
            if tokio::time::Instant::now() + backoff > deadline {
                return Err(last_err);
            }
            // Once per round over all addresses, wait a little (elections take a moment).
            if next.is_multiple_of(self.addrs.len()) {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }

    /// Opens a `WatchMetadata` stream on some controller (followers serve it too).
    async fn open_watch(
        &self,
        start: usize,
    ) -> Result<tonic::Streaming<ClusterMetadata>, (usize, tonic::Status)> {
        let addr = &self.addrs[start % self.addrs.len()];
        let mut client = self
            .connect(addr)
            .map(Self::service_client)
            .map_err(|e| (start + 1, e))?;
        client
            .watch_metadata(WatchMetadataRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|e| (start + 1, e))
    }
}

/// Starts a task on `tasks` that mirrors the controller's metadata into a watch channel and
/// returns the receiver once the first snapshot arrived (or after `first_wait`, with an empty
/// snapshot, so that a process can start while the controller is down; it fills in when it
/// comes back). The task ends when `shutdown` is cancelled or every receiver is gone; the
/// last snapshot stays readable.
pub async fn watch_metadata(
    client: ControllerClient,
    first_wait: Duration,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> watch::Receiver<Arc<ClusterMetadata>> {
    let (tx, mut rx) = watch::channel(Arc::new(ClusterMetadata::default()));
    tasks.spawn(async move {
        let mut next = 0usize;
        let mut backoff = Duration::from_millis(100);
        loop {
            let opened = tokio::select! {
                () = shutdown.cancelled() => return,
                opened = client.open_watch(next) => opened,
            };
            match opened {
                Ok(mut stream) => {
                    backoff = Duration::from_millis(100);
                    loop {
                        // Shutdown, or every receiver gone: stop watching.
                        let item = tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tx.closed() => return,
                            item = stream.next() => item,
                        };
                        match item {
                            Some(Ok(snapshot)) => {
                                let newer = snapshot.revision >= tx.borrow().revision;
                                if newer {
                                    tx.send_replace(Arc::new(snapshot));
                                }
                            }
                            Some(Err(status)) => {
                                tracing::warn!(code = ?status.code(), msg = status.message(), "metadata watch failed; reconnecting");
                                break;
                            }
                            None => {
                                tracing::info!("metadata watch ended; reconnecting");
                                break;
                            }
                        }
                    }
                    next += 1;
                }
                Err((n, status)) => {
                    next = n;
                    tracing::debug!(code = ?status.code(), msg = status.message(), "cannot open a metadata watch");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tx.closed() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    });
    // A revision of 0 means "never heard from a controller".
    let _ = tokio::time::timeout(first_wait, rx.wait_for(|m| m.revision > 0)).await;
    rx.mark_unchanged();
    rx
}

#[tonic::async_trait]
impl ControllerLink for ControllerClient {
    async fn alter_sync_state_set(
        &self,
        req: AlterSyncStateSetRequest,
    ) -> Result<BrokerSet, tonic::Status> {
        let reply = self
            .call(|mut c| {
                let req = req.clone();
                async move { c.alter_sync_state_set(req).await }
            })
            .await?;
        reply.broker_set.ok_or_else(|| {
            tonic::Status::internal("AlterSyncStateSet answered without a broker set")
        })
    }
}
