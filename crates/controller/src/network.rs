//! Raft transport over gRPC (`comet.v1.RaftService`, see `proto/comet/v1/raft.proto`).
//!
//! - [`GrpcNetworkFactory`] is openraft's [`RaftNetworkFactory`]: one lazily
//!   connected tonic channel per peer address, shared by every client openraft
//!   creates for that peer, so no connection is opened until the first RPC.
//!   Connections bind to the node's `raft_source_ip` when one is configured.
//! - [`RaftGrpc`] is the server side: it decodes each request, hands it to
//!   the local [`openraft::Raft`] and encodes the reply or the Raft error.
//!
//! Payloads are serde_json of openraft's own request/response types. Error
//! mapping on the client: a connect or transport failure is
//! [`RPCError::Unreachable`] (openraft backs off), any other gRPC status is
//! [`RPCError::Network`], a reply past the RPC's hard TTL is
//! [`RPCError::Timeout`], and an error the remote Raft returned is
//! [`RPCError::RemoteError`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use comet_proto::comet::v1::raft_reply::Result as ReplyResult;
use comet_proto::comet::v1::raft_service_client::RaftServiceClient;
use comet_proto::comet::v1::raft_service_server::RaftService;
use comet_proto::comet::v1::{RaftReply, RaftRequest};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes, RaftNetwork, RaftNetworkFactory};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use crate::raft_types::{ControllerRaft, NodeId, TypeConfig};

/// Largest Raft message accepted or sent (snapshot chunks are ~3 MiB).
pub const MAX_RAFT_MESSAGE_BYTES: usize = 64 << 20;
/// TCP connect timeout to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A transport-level failure, with the detail openraft will log.
#[derive(Debug, thiserror::Error)]
#[error("raft rpc {rpc} to node {target} at {addr}: {detail}")]
struct TransportError {
    rpc: RPCTypes,
    target: NodeId,
    addr: String,
    detail: String,
}

/// Creates [`GrpcNetwork`] clients, caching one lazy channel per peer address.
#[derive(Clone)]
pub struct GrpcNetworkFactory {
    node_id: NodeId,
    /// Plaintext or mutual TLS to the peers.
    connector: comet_auth::Connector,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl GrpcNetworkFactory {
    /// A factory for the node `node_id` (used in timeout errors), dialing through `connector`
    /// with connections bound to `source_ip` (`None`: the operating system picks the local
    /// address).
    pub fn new(
        node_id: NodeId,
        source_ip: Option<IpAddr>,
        connector: comet_auth::Connector,
    ) -> Self {
        GrpcNetworkFactory {
            node_id,
            connector: connector.with_local_address(source_ip),
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("invalid peer address {addr:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = self.connector.lazy_channel(&endpoint);
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetworkFactory {
    type Network = GrpcNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        let client = self.channel(&node.addr).map(|c| {
            RaftServiceClient::new(c)
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
        });
        GrpcNetwork {
            node_id: self.node_id,
            target,
            node: node.clone(),
            client,
        }
    }
}

/// A client for one peer.
pub struct GrpcNetwork {
    node_id: NodeId,
    target: NodeId,
    node: BasicNode,
    client: Result<RaftServiceClient<Channel>, String>,
}

impl GrpcNetwork {
    fn transport_error(&self, rpc: RPCTypes, detail: String) -> TransportError {
        TransportError {
            rpc,
            target: self.target,
            addr: self.node.addr.clone(),
            detail,
        }
    }

    async fn call<Req, Resp, E>(
        &mut self,
        rpc: RPCTypes,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => {
                let err = self.transport_error(rpc, e.clone());
                return Err(RPCError::Unreachable(Unreachable::new(&err)));
            }
        };
        let payload = serde_json::to_vec(req).map_err(|e| {
            RPCError::Network(NetworkError::new(
                &self.transport_error(rpc, format!("encode: {e}")),
            ))
        })?;
        let request = RaftRequest { payload };
        let ttl = option.hard_ttl();
        let mut client = client;
        let fut = async move {
            match rpc {
                RPCTypes::AppendEntries => client.append_entries(request).await,
                RPCTypes::Vote => client.vote(request).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, fut).await {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action: rpc,
                    id: self.node_id,
                    target: self.target,
                    timeout: ttl,
                }));
            }
            Ok(Err(status)) => {
                let err =
                    self.transport_error(rpc, format!("{:?}: {}", status.code(), status.message()));
                return Err(match status.code() {
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                        RPCError::Unreachable(Unreachable::new(&err))
                    }
                    _ => RPCError::Network(NetworkError::new(&err)),
                });
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
        match reply.result {
            Some(ReplyResult::Ok(bytes)) => serde_json::from_slice(&bytes).map_err(|e| {
                RPCError::Network(NetworkError::new(
                    &self.transport_error(rpc, format!("decode reply: {e}")),
                ))
            }),
            Some(ReplyResult::Error(bytes)) => {
                let remote: E = serde_json::from_slice(&bytes).map_err(|e| {
                    RPCError::Network(NetworkError::new(
                        &self.transport_error(rpc, format!("decode remote error: {e}")),
                    ))
                })?;
                Err(RPCError::RemoteError(RemoteError::new_with_node(
                    self.target,
                    self.node.clone(),
                    remote,
                )))
            }
            None => Err(RPCError::Network(NetworkError::new(
                &self.transport_error(rpc, "empty reply".to_owned()),
            ))),
        }
    }
}

impl RaftNetwork<TypeConfig> for GrpcNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RPCTypes::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(RPCTypes::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RPCTypes::Vote, &rpc, &option).await
    }
}

/// The server side of the Raft transport.
#[derive(Clone)]
pub struct RaftGrpc {
    raft: ControllerRaft,
}

impl RaftGrpc {
    /// Serves `raft`.
    pub fn new(raft: ControllerRaft) -> Self {
        RaftGrpc { raft }
    }
}

fn decode<T: DeserializeOwned>(req: tonic::Request<RaftRequest>) -> Result<T, tonic::Status> {
    serde_json::from_slice(&req.into_inner().payload)
        .map_err(|e| tonic::Status::invalid_argument(format!("undecodable raft request: {e}")))
}

fn encode<T: Serialize, E: Serialize>(
    result: Result<T, E>,
) -> Result<tonic::Response<RaftReply>, tonic::Status> {
    let result = match result {
        Ok(v) => ReplyResult::Ok(
            serde_json::to_vec(&v).map_err(|e| tonic::Status::internal(e.to_string()))?,
        ),
        Err(e) => ReplyResult::Error(
            serde_json::to_vec(&e).map_err(|e| tonic::Status::internal(e.to_string()))?,
        ),
    };
    Ok(tonic::Response::new(RaftReply {
        result: Some(result),
    }))
}

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    async fn append_entries(
        &self,
        request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        let req: AppendEntriesRequest<TypeConfig> = decode(request)?;
        encode(self.raft.append_entries(req).await)
    }

    async fn vote(
        &self,
        request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        let req: VoteRequest<NodeId> = decode(request)?;
        encode(self.raft.vote(req).await)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        let req: InstallSnapshotRequest<TypeConfig> = decode(request)?;
        encode(self.raft.install_snapshot(req).await)
    }
}
