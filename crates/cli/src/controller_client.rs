//! The client side of the controller for separate processes: admin commands, `comet broker`
//! and `comet proxy` reach the controller cluster over gRPC through [`ControllerClient`].
//!
//! - Calls go to the last node that answered; a node that is not the Raft leader answers
//!   UNAVAILABLE with the leader's address in the `comet-leader` metadata, which is followed at
//!   once when it is a configured address (or the only configured address is a seed); see
//!   `ControllerClient::follows`. Other failures move on to the next configured address, with a short backoff between
//!   rounds, until the call's overall deadline.
//! - [`watch_metadata`] keeps a `watch` channel fed from `WatchMetadata` streams, reconnecting
//!   after any failure and keeping the last known snapshot meanwhile, so a proxy or broker keeps
//!   serving while the controller is unavailable.
//! - [`heartbeat_loop`] registers a broker and renews its lease.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use comet_proto::comet::v1::controller_admin_service_client::ControllerAdminServiceClient;
use comet_proto::comet::v1::controller_service_client::ControllerServiceClient;
use comet_proto::comet::v1::{
    AlterSyncStateSetRequest, BrokerHeartbeatRequest, BrokerSet, ClusterMetadata,
    RegisterBrokerRequest, WatchMetadataRequest,
};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

/// Metadata key carrying the leader's address on a not-leader reply.
const LEADER_HINT: &str = "comet-leader";

/// How long one call keeps trying before it reports the last error.
const CALL_DEADLINE: Duration = Duration::from_secs(15);

/// Raised limits for internal calls (metadata snapshots can be large).
const MAX_MESSAGE: usize = 64 << 20;

/// The node calls currently go to: its address and channel.
type Connected = (String, Channel);

/// A connection to the controller cluster that follows the leader.
#[derive(Clone)]
pub struct ControllerClient {
    addrs: Arc<Vec<String>>,
    current: Arc<Mutex<Option<Connected>>>,
}

impl ControllerClient {
    /// A client for the given `host:port` addresses (none are contacted yet).
    pub fn new(addrs: Vec<String>) -> anyhow::Result<Self> {
        if addrs.is_empty() {
            anyhow::bail!("no controller address given");
        }
        Ok(ControllerClient {
            addrs: Arc::new(addrs),
            current: Arc::new(Mutex::new(None)),
        })
    }

    /// Whether to follow a leader hint to `addr`: always when it is one of the configured
    /// addresses, and for an address the client was not given (the controllers' own view of
    /// their addresses) only when a single address is configured (a seed). With several
    /// configured addresses that differ from the advertised ones (relays, NAT, a proxy in
    /// between), the client reaches the leader through its configured addresses instead.
    fn follows(&self, addr: &str) -> bool {
        self.addrs.len() == 1 || self.addrs.iter().any(|a| a == addr)
    }

    fn connect(addr: &str) -> Result<Channel, tonic::Status> {
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
            .tcp_nodelay(true);
        Ok(endpoint.connect_lazy())
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
            let channel = Self::connect(addr)?;
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
                    let client = Self::connect(&addr)?;
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
                        Some(leader) => Some((leader.clone(), Self::connect(&leader)?)),
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
        let mut client = Self::connect(addr)
            .map(Self::service_client)
            .map_err(|e| (start + 1, e))?;
        client
            .watch_metadata(WatchMetadataRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|e| (start + 1, e))
    }
}

/// Starts a task that mirrors the controller's metadata into a watch channel and returns the
/// receiver once the first snapshot arrived (or after `first_wait`, with an empty snapshot, so
/// that a process can start while the controller is down; it fills in when it comes back).
pub async fn watch_metadata(
    client: ControllerClient,
    first_wait: Duration,
) -> watch::Receiver<Arc<ClusterMetadata>> {
    let (tx, mut rx) = watch::channel(Arc::new(ClusterMetadata::default()));
    tokio::spawn(async move {
        let mut next = 0usize;
        let mut backoff = Duration::from_millis(100);
        loop {
            match client.open_watch(next).await {
                Ok(mut stream) => {
                    backoff = Duration::from_millis(100);
                    loop {
                        // Every receiver gone (the node stopped): stop watching.
                        let item = tokio::select! {
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
impl comet_broker::ControllerLink for ControllerClient {
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

/// What a replicated broker adds to its heartbeats.
#[derive(Clone)]
pub struct HeartbeatHooks {
    /// The newest master epoch in the broker's log and the log's end (for elections).
    pub log_report: Arc<dyn Fn() -> (u64, i64) + Send + Sync>,
    /// Set after every answered heartbeat to the time until which the broker may act as
    /// master: its send time plus [`MASTER_LEASE_SHARE`] of the controller's lease, so it ends
    /// before the controller's lease (renewed when the heartbeat arrived) can lapse.
    pub lease: watch::Sender<Option<std::time::Instant>>,
}

/// Share of the controller's broker lease a master may write for after a heartbeat was sent.
pub const MASTER_LEASE_SHARE: f64 = 0.75;

/// Registers the broker and renews its lease every third of the lease until `shutdown`
/// resolves. Registration is retried until it succeeds; a failed heartbeat re-registers.
pub async fn heartbeat_loop(
    client: ControllerClient,
    broker_set: String,
    broker_id: u64,
    address: String,
    hooks: Option<HeartbeatHooks>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut registered = false;
    let mut interval = Duration::from_secs(1);
    loop {
        // A call retries an unreachable controller for up to its whole deadline: on shutdown
        // (the local controller stops before this loop) it must not hold the stop that long.
        let call = async {
            if registered {
                let sent = std::time::Instant::now();
                let (log_epoch, log_end_offset) =
                    hooks.as_ref().map_or((0, 0), |h| (h.log_report)());
                client
                    .call(|mut c| {
                        let req = BrokerHeartbeatRequest {
                            broker_set: broker_set.clone(),
                            broker_id,
                            log_epoch,
                            log_end_offset,
                        };
                        async move { c.broker_heartbeat(req).await }
                    })
                    .await
                    .map(|r| {
                        if r.lease_ms > 0 {
                            interval = Duration::from_millis((r.lease_ms / 3).max(100));
                            if let Some(h) = &hooks {
                                let share =
                                    Duration::from_millis(r.lease_ms).mul_f64(MASTER_LEASE_SHARE);
                                h.lease.send_replace(Some(sent + share));
                            }
                        }
                    })
            } else {
                client
                    .call(|mut c| {
                        let req = RegisterBrokerRequest {
                            broker_set: broker_set.clone(),
                            broker_id,
                            address: address.clone(),
                        };
                        async move { c.register_broker(req).await }
                    })
                    .await
                    .map(|_| {
                        tracing::info!(broker_set = %broker_set, broker_id, address = %address, "registered with the controller");
                    })
            }
        };
        let result = tokio::select! {
            () = &mut shutdown => return,
            r = call => r,
        };
        match result {
            Ok(()) if !registered => {
                // Heartbeat at once: its reply carries the lease, which sets the interval (a
                // first sleep of the default could outlast a short lease).
                registered = true;
                continue;
            }
            Ok(()) => {}
            Err(status) => {
                tracing::warn!(code = ?status.code(), msg = status.message(), registered, "controller heartbeat failed");
                registered = false;
            }
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn given_an_unreachable_controller_when_shutdown_fires_mid_call_should_stop_at_once() {
        // A port nothing listens on: every connection attempt is refused, so the call keeps
        // retrying until its 15 s deadline.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        let client = ControllerClient::new(vec![addr.clone()]).expect("client");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(heartbeat_loop(
            client,
            "broker-a".into(),
            0,
            "127.0.0.1:1".into(),
            None,
            async {
                let _ = stopped.await;
            },
        ));
        // The loop is inside its first call (registration) from its first poll on.
        tokio::task::yield_now().await;
        let _ = stop.send(());
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(
            ended.is_ok(),
            "the heartbeat loop kept calling the unreachable controller after shutdown"
        );
    }
}
