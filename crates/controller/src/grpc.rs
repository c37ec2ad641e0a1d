//! [`ControllerGrpc`]: the `comet.v1.ControllerService` implementation.
//!
//! - Writes are validated ([`crate::metadata::validation`]) and proposed with
//!   `Raft::client_write`; the state machine's verdict becomes the status.
//! - `GetMetadata` confirms leadership with `Raft::ensure_linearizable` and
//!   then serves the applied state.
//! - `WatchMetadata` streams the applied state of *this* node, leader or not,
//!   so proxies keep routing while no leader exists.
//! - Not the leader: UNAVAILABLE, with the leader's advertised controller
//!   address in the `comet-leader` response metadata when known.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use comet_proto::comet::v1 as pb;
use comet_proto::comet::v1::controller_service_server::ControllerService;
use futures::{Stream, StreamExt};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use crate::lease::{LeaseTable, wall_ms};
use crate::metadata::records::BrokerSetRecord;
use crate::metadata::{AliveChange, Command, CommandResponse, validation};
use crate::raft_types::{ControllerRaft, NodeId};

/// Response metadata key carrying the leader's controller address.
pub const LEADER_METADATA_KEY: &str = "comet-leader";
/// How long a write may wait to commit before DEADLINE_EXCEEDED.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a linearizable read may wait for a quorum.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The gRPC face of a controller node. Cheap to clone.
#[derive(Clone)]
pub struct ControllerGrpc {
    inner: Arc<Inner>,
}

struct Inner {
    raft: ControllerRaft,
    node_id: NodeId,
    metadata: watch::Receiver<Arc<pb::ClusterMetadata>>,
    leases: Arc<LeaseTable>,
    /// Flips to true when the controller shuts down; ends watch streams.
    stopping: watch::Receiver<bool>,
}

/// A stream of metadata snapshots.
pub type MetadataStream = Pin<Box<dyn Stream<Item = Result<pb::ClusterMetadata, Status>> + Send>>;

fn not_leader(leader: Option<&BasicNode>, what: &str) -> Status {
    let mut status = Status::unavailable(match leader {
        Some(n) => format!(
            "this controller is not the leader; {what} must go to the leader at {}",
            n.addr
        ),
        None => format!(
            "this controller is not the leader and no leader is known yet; retry {what} shortly"
        ),
    });
    if let Some(n) = leader
        && let Ok(v) = n.addr.parse()
    {
        status.metadata_mut().insert(LEADER_METADATA_KEY, v);
    }
    status
}

fn fatal(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!(
        "the controller is stopping or its storage failed: {e}"
    ))
}

impl ControllerGrpc {
    pub(crate) fn new(
        raft: ControllerRaft,
        node_id: NodeId,
        metadata: watch::Receiver<Arc<pb::ClusterMetadata>>,
        leases: Arc<LeaseTable>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        ControllerGrpc {
            inner: Arc::new(Inner {
                raft,
                node_id,
                metadata,
                leases,
                stopping,
            }),
        }
    }

    /// The leader's node record if known.
    fn leader_node(&self) -> Option<BasicNode> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader?;
        m.membership_config.membership().get_node(&leader).cloned()
    }

    /// `Ok(term)` if this node currently believes it leads (cheap, no quorum
    /// round trip; used for lease bookkeeping only).
    fn leader_term(&self, what: &str) -> Result<u64, Status> {
        let (leading, term) = {
            let m = self.inner.raft.metrics();
            let m = m.borrow();
            (
                m.state == ServerState::Leader && m.current_leader == Some(self.inner.node_id),
                m.current_term,
            )
        };
        if leading {
            Ok(term)
        } else {
            Err(not_leader(self.leader_node().as_ref(), what))
        }
    }

    /// Proposes `cmd`; returns the state machine's response and the entry's index.
    async fn write(&self, cmd: Command, what: &str) -> Result<(CommandResponse, u64), Status> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.inner.raft.client_write(cmd)).await {
            Err(_) => Err(Status::deadline_exceeded(format!(
                "{what} did not commit within {WRITE_TIMEOUT:?}; a quorum of controllers may be down (the change may still apply)"
            ))),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(not_leader(f.leader_node.as_ref(), what))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => Err(
                Status::internal(format!("{what}: unexpected membership error: {e}")),
            ),
            Ok(Err(RaftError::Fatal(e))) => Err(fatal(e)),
            Ok(Ok(resp)) => match resp.data {
                CommandResponse::Rejected(e) => Err(e.into()),
                data => Ok((data, resp.log_id.index)),
            },
        }
    }

    fn current(&self) -> Arc<pb::ClusterMetadata> {
        self.inner.metadata.borrow().clone()
    }

    fn find_member(
        &self,
        broker_set: &str,
        broker_id: u64,
    ) -> Option<(pb::BrokerSet, pb::BrokerMember)> {
        let meta = self.current();
        let set = meta.broker_sets.iter().find(|s| s.name == broker_set)?;
        let member = set.members.iter().find(|m| m.broker_id == broker_id)?;
        Some((set.clone(), member.clone()))
    }
}

fn unexpected(what: &str, resp: &CommandResponse) -> Status {
    Status::internal(format!(
        "{what}: unexpected state machine response {resp:?}"
    ))
}

#[tonic::async_trait]
impl ControllerService for ControllerGrpc {
    type WatchMetadataStream = MetadataStream;

    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::TopicResponse>, Status> {
        let topic = validation::topic_record(request.into_inner().topic)?;
        tracing::info!(topic = %topic.name, "create topic");
        match self
            .write(Command::CreateTopic { topic }, "CreateTopic")
            .await?
        {
            (CommandResponse::Topic(t), revision) => Ok(Response::new(pb::TopicResponse {
                topic: Some((&t).into()),
                revision,
            })),
            (other, _) => Err(unexpected("CreateTopic", &other)),
        }
    }

    async fn update_topic(
        &self,
        request: Request<pb::UpdateTopicRequest>,
    ) -> Result<Response<pb::TopicResponse>, Status> {
        let topic = validation::topic_record(request.into_inner().topic)?;
        tracing::info!(topic = %topic.name, "update topic");
        match self
            .write(Command::UpdateTopic { topic }, "UpdateTopic")
            .await?
        {
            (CommandResponse::Topic(t), revision) => Ok(Response::new(pb::TopicResponse {
                topic: Some((&t).into()),
                revision,
            })),
            (other, _) => Err(unexpected("UpdateTopic", &other)),
        }
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let name = request.into_inner().name;
        validation::validate_topic_name(&name)?;
        tracing::info!(topic = %name, "delete topic");
        let (_, revision) = self
            .write(Command::DeleteTopic { name }, "DeleteTopic")
            .await?;
        Ok(Response::new(pb::DeleteResponse { revision }))
    }

    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        let group = validation::group_record(request.into_inner().group)?;
        tracing::info!(group = %group.name, "create group");
        match self
            .write(Command::CreateGroup { group }, "CreateGroup")
            .await?
        {
            (CommandResponse::Group(g), revision) => Ok(Response::new(pb::GroupResponse {
                group: Some((&g).into()),
                revision,
            })),
            (other, _) => Err(unexpected("CreateGroup", &other)),
        }
    }

    async fn update_group(
        &self,
        request: Request<pb::UpdateGroupRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        let group = validation::group_record(request.into_inner().group)?;
        tracing::info!(group = %group.name, "update group");
        match self
            .write(Command::UpdateGroup { group }, "UpdateGroup")
            .await?
        {
            (CommandResponse::Group(g), revision) => Ok(Response::new(pb::GroupResponse {
                group: Some((&g).into()),
                revision,
            })),
            (other, _) => Err(unexpected("UpdateGroup", &other)),
        }
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let name = request.into_inner().name;
        validation::validate_group_name(&name)?;
        tracing::info!(group = %name, "delete group");
        let (_, revision) = self
            .write(Command::DeleteGroup { name }, "DeleteGroup")
            .await?;
        Ok(Response::new(pb::DeleteResponse { revision }))
    }

    async fn register_broker(
        &self,
        request: Request<pb::RegisterBrokerRequest>,
    ) -> Result<Response<pb::RegisterBrokerResponse>, Status> {
        let req = request.into_inner();
        validation::validate_broker_set_name(&req.broker_set)?;
        validation::validate_address(&req.address)?;
        let term = self.leader_term("RegisterBroker")?;
        if let Some((set, member)) = self.find_member(&req.broker_set, req.broker_id)
            && member.address == req.address
            && member.alive
        {
            self.inner.leases.renew(
                term,
                &req.broker_set,
                req.broker_id,
                Instant::now(),
                wall_ms(),
            );
            let revision = self.current().revision;
            return Ok(Response::new(pb::RegisterBrokerResponse {
                broker_set: Some(set),
                revision,
            }));
        }
        tracing::info!(broker_set = %req.broker_set, broker_id = req.broker_id, address = %req.address, "register broker");
        let now_ms = wall_ms();
        let cmd = Command::RegisterBroker {
            broker_set: req.broker_set.clone(),
            broker_id: req.broker_id,
            address: req.address,
            now_ms,
        };
        match self.write(cmd, "RegisterBroker").await? {
            (CommandResponse::BrokerSet(set), revision) => {
                self.inner.leases.renew(
                    term,
                    &req.broker_set,
                    req.broker_id,
                    Instant::now(),
                    now_ms,
                );
                Ok(Response::new(pb::RegisterBrokerResponse {
                    broker_set: Some(pb::BrokerSet::from(&set as &BrokerSetRecord)),
                    revision,
                }))
            }
            (other, _) => Err(unexpected("RegisterBroker", &other)),
        }
    }

    async fn broker_heartbeat(
        &self,
        request: Request<pb::BrokerHeartbeatRequest>,
    ) -> Result<Response<pb::BrokerHeartbeatResponse>, Status> {
        let req = request.into_inner();
        validation::validate_broker_set_name(&req.broker_set)?;
        let term = self.leader_term("BrokerHeartbeat")?;
        let Some((_, member)) = self.find_member(&req.broker_set, req.broker_id) else {
            return Err(Status::not_found(format!(
                "broker {} of broker set {} is not registered; call RegisterBroker first",
                req.broker_id, req.broker_set
            )));
        };
        let now_ms = wall_ms();
        self.inner
            .leases
            .renew(term, &req.broker_set, req.broker_id, Instant::now(), now_ms);
        if !member.alive {
            tracing::info!(broker_set = %req.broker_set, broker_id = req.broker_id, "broker is back");
            let cmd = Command::SetBrokersAlive {
                changes: vec![AliveChange {
                    broker_set: req.broker_set,
                    broker_id: req.broker_id,
                    alive: true,
                    last_heartbeat_ms: now_ms,
                }],
            };
            self.write(cmd, "BrokerHeartbeat").await?;
        }
        let lease_ms = u64::try_from(self.inner.leases.lease().as_millis()).unwrap_or(u64::MAX);
        Ok(Response::new(pb::BrokerHeartbeatResponse { lease_ms }))
    }

    async fn get_metadata(
        &self,
        _request: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::ClusterMetadata>, Status> {
        match tokio::time::timeout(READ_TIMEOUT, self.inner.raft.ensure_linearizable()).await {
            Err(_) => Err(Status::unavailable(format!(
                "could not confirm leadership within {READ_TIMEOUT:?}; a quorum of controllers may be down"
            ))),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(not_leader(f.leader_node.as_ref(), "GetMetadata"))
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => Err(
                Status::unavailable(format!("no quorum of controllers answered: {e}")),
            ),
            Ok(Err(RaftError::Fatal(e))) => Err(fatal(e)),
            Ok(Ok(_)) => Ok(Response::new(pb::ClusterMetadata::clone(&self.current()))),
        }
    }

    async fn watch_metadata(
        &self,
        _request: Request<pb::WatchMetadataRequest>,
    ) -> Result<Response<Self::WatchMetadataStream>, Status> {
        let mut stopping = self.inner.stopping.clone();
        let stopped = async move {
            // Ends when shutdown starts or the controller is gone.
            let _ = stopping.wait_for(|s| *s).await;
        };
        let stream = WatchStream::new(self.inner.metadata.clone())
            .map(|m| Ok(pb::ClusterMetadata::clone(&m)))
            .take_until(stopped);
        Ok(Response::new(Box::pin(stream)))
    }
}
