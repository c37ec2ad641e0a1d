//! [`RemotingServer`]: the NameServer-compatible TCP listener of a controller
//! node and the handling of each request code (see the module table in
//! [`crate::remoting`]).
//!
//! Each connection is one task: it reads frames into a buffer, runs up to
//! [`MAX_IN_FLIGHT`] requests concurrently (reads answer at once; writes wait
//! for Raft) and writes each reply as it completes, in completion order (the
//! `opaque` pairs replies with requests). A connection ends on EOF, on a bad
//! frame, after [`IDLE_TIMEOUT`] without a complete frame, or when the server
//! stops. At most [`MAX_CONNECTIONS`] connections are open; more are refused
//! by closing them at once. Connection tasks are held by a `TaskTracker`, and
//! one `CancellationToken` stops the accept loop and every connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::codec::{self, RemotingCommand};
use super::request_code as req;
use super::response_code as resp;
use super::route_data::{self, JsonStyle, NoRoute};
use crate::grpc::ControllerGrpc;

/// Most open connections; further ones are closed on accept.
pub const MAX_CONNECTIONS: usize = 4096;
/// Requests one connection may have in progress.
pub const MAX_IN_FLIGHT: usize = 64;
/// A connection with no complete frame for this long is closed (RocketMQ's
/// `serverChannelMaxIdleTimeSeconds`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// A reply that cannot be written for this long (the peer does not read)
/// closes the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Lease of a broker registered over remoting that states none: RocketMQ's
/// broker channel expiry (a 4.x broker re-registers every 30 s by default).
pub const REMOTING_DEFAULT_LEASE: Duration = Duration::from_secs(120);
/// Longest lease a remoting broker may ask for.
pub const REMOTING_MAX_LEASE: Duration = Duration::from_secs(600);

/// The remoting endpoint of one controller node. Cheap to clone.
#[derive(Clone)]
pub struct RemotingServer {
    grpc: ControllerGrpc,
}

impl std::fmt::Debug for RemotingServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemotingServer").finish_non_exhaustive()
    }
}

impl RemotingServer {
    pub(crate) fn new(grpc: ControllerGrpc) -> Self {
        RemotingServer { grpc }
    }

    /// Accepts connections on `listener` until `shutdown` is cancelled, then
    /// closes every connection (in-flight requests are dropped; their
    /// clients retry) and returns once every connection task ended.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let local = listener.local_addr().ok();
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let connections = TaskTracker::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            tracing::warn!(%peer, limit = MAX_CONNECTIONS, "remoting connection refused: too many connections");
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let server = self.clone();
                        let stop = shutdown.clone();
                        connections.spawn(async move {
                            server.connection(stream, peer, stop).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly
                        // instead of spinning on the error.
                        tracing::warn!(error = %e, "remoting accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        connections.close();
        connections.wait().await;
        tracing::info!(addr = ?local, "remoting server stopped");
    }

    async fn connection(&self, stream: TcpStream, peer: SocketAddr, stop: CancellationToken) {
        tracing::debug!(%peer, "remoting connection opened");
        let (mut rd, mut wr) = stream.into_split();
        let mut buf = BytesMut::with_capacity(4096);
        let mut out = BytesMut::new();
        let mut in_flight = FuturesUnordered::new();
        let mut idle_deadline = Instant::now() + IDLE_TIMEOUT;
        let mut eof = false;
        let reason: &str = loop {
            // Start every buffered request there is room for.
            while in_flight.len() < MAX_IN_FLIGHT {
                match codec::split_frame(&mut buf) {
                    Ok(Some(frame)) => match codec::decode_frame(frame) {
                        Ok(cmd) => {
                            idle_deadline = Instant::now() + IDLE_TIMEOUT;
                            if cmd.is_response() {
                                tracing::debug!(%peer, code = cmd.code, "ignoring a response frame");
                                continue;
                            }
                            let server = self.clone();
                            in_flight.push(async move { server.handle(cmd, peer).await });
                        }
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "closing remoting connection: bad frame");
                            return;
                        }
                    },
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "closing remoting connection: bad frame");
                        return;
                    }
                }
            }
            if eof && in_flight.is_empty() {
                break if buf.is_empty() {
                    "closed by peer"
                } else {
                    "closed by peer inside a frame (truncated)"
                };
            }
            tokio::select! {
                () = stop.cancelled() => break "server stopping",
                read = rd.read_buf(&mut buf), if !eof && in_flight.len() < MAX_IN_FLIGHT => match read {
                    Ok(0) => eof = true,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "remoting read failed");
                        return;
                    }
                },
                Some(reply) = in_flight.next(), if !in_flight.is_empty() => {
                    let Some(reply) = reply else { continue };
                    out.clear();
                    if let Err(e) = codec::encode(&reply, &mut out) {
                        tracing::error!(%peer, code = reply.code, error = %e, "cannot encode a remoting reply");
                        return;
                    }
                    match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&out)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "remoting write failed");
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(%peer, "closing remoting connection: the peer does not read its replies");
                            return;
                        }
                    }
                }
                () = tokio::time::sleep_until(idle_deadline) => break "idle",
            }
        };
        let _ = wr.shutdown().await;
        tracing::debug!(%peer, reason, "remoting connection closed");
    }

    /// Answers one request; `None` for one-way requests.
    async fn handle(&self, request: RemotingCommand, peer: SocketAddr) -> Option<RemotingCommand> {
        let reply = match request.code {
            req::GET_ROUTEINFO_BY_TOPIC => self.route(&request),
            req::GET_BROKER_CLUSTER_INFO => self.cluster_info(&request),
            req::GET_ALL_TOPIC_LIST_FROM_NAMESERVER => self.topic_list(&request),
            req::REGISTER_BROKER => self.register(&request).await,
            req::UNREGISTER_BROKER => self.unregister(&request).await,
            req::BROKER_HEARTBEAT => self.heartbeat(&request).await,
            other => request.response_to(
                resp::REQUEST_CODE_NOT_SUPPORTED,
                Some(format!(
                    "request code {other} is not supported by the Comet controller; its \
                     NameServer-compatible endpoint answers 103, 104, 105, 106, 206 and 904"
                )),
            ),
        };
        tracing::debug!(%peer, code = request.code, opaque = request.opaque, reply = reply.code, "remoting request");
        (!request.is_oneway()).then_some(reply)
    }

    fn style(request: &RemotingCommand) -> JsonStyle {
        let standard_only = request
            .field("acceptStandardJsonOnly")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        JsonStyle::for_request(request.version, standard_only)
    }

    fn ok(request: &RemotingCommand, body: String) -> RemotingCommand {
        let mut r = request.response_to(resp::SUCCESS, None);
        r.body = Bytes::from(body);
        r
    }

    fn route(&self, request: &RemotingCommand) -> RemotingCommand {
        let Some(topic) = request.field("topic").filter(|t| !t.is_empty()) else {
            return missing_field(request, "topic");
        };
        let meta = self.grpc.applied();
        match route_data::topic_route(&meta, topic) {
            Ok(route) => Self::ok(request, route.to_json(Self::style(request))),
            Err(NoRoute::UnknownTopic) => request.response_to(
                resp::TOPIC_NOT_EXIST,
                Some(format!(
                    "No topic route info in name server for the topic: {topic}"
                )),
            ),
            Err(NoRoute::NoLiveBroker) => request.response_to(
                resp::TOPIC_NOT_EXIST,
                Some(format!(
                    "No topic route info in name server for the topic: {topic} (the topic \
                     exists but none of its broker sets has a live broker)"
                )),
            ),
        }
    }

    fn cluster_info(&self, request: &RemotingCommand) -> RemotingCommand {
        let meta = self.grpc.applied();
        Self::ok(
            request,
            route_data::cluster_info(&meta).to_json(Self::style(request)),
        )
    }

    fn topic_list(&self, request: &RemotingCommand) -> RemotingCommand {
        let meta = self.grpc.applied();
        Self::ok(
            request,
            route_data::topic_list_json(&route_data::topic_list(&meta)),
        )
    }

    /// The cluster name check shared by the broker requests.
    fn check_cluster(&self, request: &RemotingCommand) -> Result<(), RemotingCommand> {
        let meta = self.grpc.applied();
        match request.field("clusterName") {
            None | Some("") => Err(missing_field(request, "clusterName")),
            Some(c) if c != meta.cluster_name => Err(request.response_to(
                resp::SYSTEM_ERROR,
                Some(format!(
                    "this controller serves cluster {:?}, not {c:?}; set brokerClusterName \
                     accordingly",
                    meta.cluster_name
                )),
            )),
            Some(_) => Ok(()),
        }
    }

    async fn register(&self, request: &RemotingCommand) -> RemotingCommand {
        let fields = (|| {
            self.check_cluster(request)?;
            let set = required(request, "brokerName")?;
            let address = required(request, "brokerAddr")?;
            let id = broker_id(request, "brokerId")?
                .ok_or_else(|| missing_field(request, "brokerId"))?;
            let lease = lease(request, "heartbeatTimeoutMillis")?;
            Ok((set, address, id, lease))
        })();
        let (set, address, id, lease) = match fields {
            Ok(f) => f,
            Err(reply) => return reply,
        };
        match self
            .grpc
            .register_member(set, id, address, lease, "REGISTER_BROKER")
            .await
        {
            Ok((broker_set, _)) => {
                let mut reply = Self::ok(request, "{\"table\":{}}".to_owned());
                if id != broker_set.master_broker_id
                    && let Some(master) = broker_set
                        .members
                        .iter()
                        .find(|m| m.broker_id == broker_set.master_broker_id && m.alive)
                {
                    reply
                        .ext_fields
                        .insert("masterAddr".to_owned(), master.address.clone());
                }
                reply
            }
            Err(status) => status_reply(request, &status),
        }
    }

    async fn unregister(&self, request: &RemotingCommand) -> RemotingCommand {
        let fields = (|| {
            self.check_cluster(request)?;
            let set = required(request, "brokerName")?;
            let address = required(request, "brokerAddr")?;
            let id = broker_id(request, "brokerId")?
                .ok_or_else(|| missing_field(request, "brokerId"))?;
            Ok((set, address, id))
        })();
        let (set, address, id) = match fields {
            Ok(f) => f,
            Err(reply) => return reply,
        };
        match self
            .grpc
            .unregister_member(set, id, address, "UNREGISTER_BROKER")
            .await
        {
            Ok(_) => request.response_to(resp::SUCCESS, None),
            Err(status) => status_reply(request, &status),
        }
    }

    async fn heartbeat(&self, request: &RemotingCommand) -> RemotingCommand {
        let fields = (|| {
            self.check_cluster(request)?;
            let set = required(request, "brokerName")?;
            let address = required(request, "brokerAddr")?;
            let id = broker_id(request, "brokerId")?;
            let lease = lease(request, "heartbeatTimeoutMills")?;
            Ok((set, address, id, lease))
        })();
        let (set, address, id, lease) = match fields {
            Ok(f) => f,
            Err(reply) => return reply,
        };
        let meta = self.grpc.applied();
        let member = meta
            .broker_sets
            .iter()
            .find(|s| s.name == set)
            .and_then(|s| {
                s.members
                    .iter()
                    .find(|m| id.map_or(m.address == address, |id| m.broker_id == id))
            })
            .map(|m| m.broker_id);
        let Some(id) = member else {
            return request.response_to(
                resp::SYSTEM_ERROR,
                Some(format!(
                    "broker {address} of broker set {set} is not registered; send REGISTER_BROKER first"
                )),
            );
        };
        match self
            .grpc
            .heartbeat_member(set, id, lease, "BROKER_HEARTBEAT")
            .await
        {
            Ok(_) => request.response_to(resp::SUCCESS, None),
            Err(status) => status_reply(request, &status),
        }
    }
}

fn missing_field(request: &RemotingCommand, field: &str) -> RemotingCommand {
    request.response_to(
        resp::SYSTEM_ERROR,
        Some(format!(
            "the request header lacks the field {field:?} (request code {})",
            request.code
        )),
    )
}

fn required<'a>(request: &'a RemotingCommand, field: &str) -> Result<&'a str, RemotingCommand> {
    request
        .field(field)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing_field(request, field))
}

fn broker_id(request: &RemotingCommand, field: &str) -> Result<Option<u64>, RemotingCommand> {
    match request.field(field).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            request.response_to(
                resp::SYSTEM_ERROR,
                Some(format!("{field} {v:?} is not a non-negative integer")),
            )
        }),
    }
}

/// The lease a remoting broker gets: its stated heartbeat timeout, or
/// [`REMOTING_DEFAULT_LEASE`], at most [`REMOTING_MAX_LEASE`] (the
/// controller's own lease is the floor, applied by the lease table).
fn lease(request: &RemotingCommand, field: &str) -> Result<Duration, RemotingCommand> {
    match request.field(field).filter(|v| !v.is_empty()) {
        None => Ok(REMOTING_DEFAULT_LEASE),
        Some(v) => match v.parse::<i64>() {
            Ok(ms) if ms > 0 => {
                Ok(Duration::from_millis(ms.unsigned_abs()).min(REMOTING_MAX_LEASE))
            }
            Ok(_) => Ok(REMOTING_DEFAULT_LEASE),
            Err(_) => Err(request.response_to(
                resp::SYSTEM_ERROR,
                Some(format!("{field} {v:?} is not an integer")),
            )),
        },
    }
}

fn status_reply(request: &RemotingCommand, status: &tonic::Status) -> RemotingCommand {
    request.response_to(resp::SYSTEM_ERROR, Some(status.message().to_owned()))
}
