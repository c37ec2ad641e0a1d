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
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use comet_auth::{Action, Resource};

use crate::clients::ClientDirectory;
use crate::election::LogReport;
use crate::guard::Guard;
use crate::lease::{LeaseTable, run_elections, wall_ms};
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
    /// Checks the credentials of topic and group writes (the served copy; the in-process
    /// copy of [`crate::Controller::service`] has none).
    guard: Option<Guard>,
}

struct Inner {
    raft: ControllerRaft,
    node_id: NodeId,
    metadata: watch::Receiver<Arc<pb::ClusterMetadata>>,
    leases: Arc<LeaseTable>,
    /// Cancelled when the controller shuts down (or is dropped); ends watch streams.
    stopping: CancellationToken,
    /// Elections may pick a master outside the sync-state set.
    allow_unclean: bool,
    /// The proxies' client reports (memory only).
    clients: Arc<ClientDirectory>,
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
        stopping: CancellationToken,
        allow_unclean: bool,
    ) -> Self {
        ControllerGrpc {
            guard: None,
            inner: Arc::new(Inner {
                raft,
                node_id,
                metadata,
                leases,
                stopping,
                allow_unclean,
                clients: Arc::new(ClientDirectory::new()),
            }),
        }
    }

    /// This service with admin writes checked by `guard`.
    pub(crate) fn guarded(&self, guard: Guard) -> Self {
        ControllerGrpc {
            inner: self.inner.clone(),
            guard: Some(guard),
        }
    }

    fn check<T>(
        &self,
        request: &Request<T>,
        resource: Resource,
        action: Action,
    ) -> Result<(), Status> {
        match &self.guard {
            Some(g) => g.check(request, &resource, action),
            None => Ok(()),
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
    pub(crate) async fn write(
        &self,
        cmd: Command,
        what: &str,
    ) -> Result<(CommandResponse, u64), Status> {
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

    pub(crate) fn current(&self) -> Arc<pb::ClusterMetadata> {
        self.inner.metadata.borrow().clone()
    }

    /// Registers (or re-registers) a broker-set member and renews its lease
    /// for `lease`; only the leader accepts it. A member already registered
    /// at the same address and alive only renews (no log entry).
    pub(crate) async fn register_member(
        &self,
        broker_set: &str,
        broker_id: u64,
        address: &str,
        lease: Duration,
        what: &str,
    ) -> Result<(pb::BrokerSet, u64), Status> {
        validation::validate_broker_set_name(broker_set)?;
        validation::validate_address(address)?;
        let term = self.leader_term(what)?;
        if let Some((set, member)) = self.find_member(broker_set, broker_id)
            && member.address == address
            && member.alive
        {
            self.inner.leases.renew_for(
                term,
                broker_set,
                broker_id,
                Instant::now(),
                wall_ms(),
                lease,
            );
            return Ok((set, self.current().revision));
        }
        tracing::info!(broker_set, broker_id, address, "register broker");
        let now_ms = wall_ms();
        // Renew first: the lease checker must never see the member alive again (once the
        // entry applies) with only its old, lapsed renewal.
        self.inner
            .leases
            .renew_for(term, broker_set, broker_id, Instant::now(), now_ms, lease);
        let cmd = Command::RegisterBroker {
            broker_set: broker_set.to_owned(),
            broker_id,
            address: address.to_owned(),
            now_ms,
        };
        let (set, revision) = match self.write(cmd, what).await? {
            (CommandResponse::BrokerSet(set), revision) => {
                (pb::BrokerSet::from(&set as &BrokerSetRecord), revision)
            }
            (other, _) => return Err(unexpected(what, &other)),
        };
        // A set that never had a master gets one now, not at the next lease check.
        if set.master_epoch == 0 {
            run_elections(
                &self.inner.raft,
                &self.inner.leases,
                &self.inner.metadata,
                self.inner.allow_unclean,
            )
            .await;
            if let Some((set, _)) = self.find_member(broker_set, broker_id) {
                return Ok((set, self.current().revision));
            }
        }
        Ok((set, revision))
    }

    /// Replaces a broker set's sync-state set, on behalf of its master at `master_epoch`.
    pub(crate) async fn alter_sync_state_set_inner(
        &self,
        req: pb::AlterSyncStateSetRequest,
    ) -> Result<(pb::BrokerSet, u64), Status> {
        const WHAT: &str = "AlterSyncStateSet";
        validation::validate_broker_set_name(&req.broker_set)?;
        self.leader_term(WHAT)?;
        tracing::info!(broker_set = %req.broker_set, master = req.master_broker_id,
            epoch = req.master_epoch, sync_state_set = ?req.sync_state_set, "alter sync-state set");
        let cmd = Command::AlterSyncStateSet {
            broker_set: req.broker_set,
            master: req.master_broker_id,
            master_epoch: req.master_epoch,
            sync_state_set: req.sync_state_set,
        };
        match self.write(cmd, WHAT).await? {
            (CommandResponse::BrokerSet(set), revision) => {
                Ok((pb::BrokerSet::from(&set as &BrokerSetRecord), revision))
            }
            (other, _) => Err(unexpected(WHAT, &other)),
        }
    }

    /// Keeps a member's log report for elections.
    pub(crate) fn report_log(&self, broker_set: &str, broker_id: u64, report: LogReport) {
        self.inner.leases.report(broker_set, broker_id, report);
    }

    /// Renews a registered member's lease for `lease` (marking it alive
    /// again if it was down); returns the lease granted.
    pub(crate) async fn heartbeat_member(
        &self,
        broker_set: &str,
        broker_id: u64,
        lease: Duration,
        what: &str,
    ) -> Result<Duration, Status> {
        validation::validate_broker_set_name(broker_set)?;
        let term = self.leader_term(what)?;
        let Some((_, member)) = self.find_member(broker_set, broker_id) else {
            return Err(Status::not_found(format!(
                "broker {broker_id} of broker set {broker_set} is not registered; register it first"
            )));
        };
        let now_ms = wall_ms();
        let lease = lease.max(self.inner.leases.lease());
        self.inner
            .leases
            .renew_for(term, broker_set, broker_id, Instant::now(), now_ms, lease);
        if !member.alive {
            tracing::info!(broker_set, broker_id, "broker is back");
            let cmd = Command::SetBrokersAlive {
                changes: vec![AliveChange {
                    broker_set: broker_set.to_owned(),
                    broker_id,
                    alive: true,
                    last_heartbeat_ms: now_ms,
                }],
            };
            self.write(cmd, what).await?;
        }
        Ok(lease)
    }

    /// Marks a member down at once and drops its lease, if it is registered
    /// at `address` (an unregistration from an older process at another
    /// address changes nothing). Returns whether it changed anything.
    pub(crate) async fn unregister_member(
        &self,
        broker_set: &str,
        broker_id: u64,
        address: &str,
        what: &str,
    ) -> Result<bool, Status> {
        validation::validate_broker_set_name(broker_set)?;
        self.leader_term(what)?;
        let Some((_, member)) = self.find_member(broker_set, broker_id) else {
            return Ok(false);
        };
        if member.address != address {
            return Ok(false);
        }
        self.inner.leases.forget(broker_set, broker_id);
        if !member.alive {
            return Ok(false);
        }
        tracing::info!(broker_set, broker_id, address, "unregister broker");
        let cmd = Command::SetBrokersAlive {
            changes: vec![AliveChange {
                broker_set: broker_set.to_owned(),
                broker_id,
                alive: false,
                last_heartbeat_ms: member.last_heartbeat_ms,
            }],
        };
        self.write(cmd, what).await?;
        Ok(true)
    }

    /// The applied metadata of this node (leader or not).
    pub(crate) fn applied(&self) -> Arc<pb::ClusterMetadata> {
        self.current()
    }

    /// The proxies' client reports this node received.
    pub fn clients(&self) -> &ClientDirectory {
        &self.inner.clients
    }

    /// Log positions the broker-set members reported in their heartbeats (the leader's view;
    /// empty on a follower): broker id to (log epoch, log end offset).
    pub fn log_reports(&self, broker_set: &str) -> std::collections::HashMap<u64, (u64, i64)> {
        self.inner
            .leases
            .reports(broker_set)
            .into_iter()
            .map(|(id, r)| (id, (r.epoch, r.end_offset)))
            .collect()
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

/// The answer to a topic write: the topic as stored and the revision that stored it.
fn topic_response(
    (resp, revision): (CommandResponse, u64),
    what: &str,
) -> Result<pb::TopicResponse, Status> {
    match resp {
        CommandResponse::Topic(t) => Ok(pb::TopicResponse {
            topic: Some((&t).into()),
            revision,
        }),
        other => Err(unexpected(what, &other)),
    }
}

/// The answer to a group write: the group as stored and the revision that stored it.
fn group_response(
    (resp, revision): (CommandResponse, u64),
    what: &str,
) -> Result<pb::GroupResponse, Status> {
    match resp {
        CommandResponse::Group(g) => Ok(pb::GroupResponse {
            group: Some((&g).into()),
            revision,
        }),
        other => Err(unexpected(what, &other)),
    }
}

#[tonic::async_trait]
impl ControllerService for ControllerGrpc {
    type WatchMetadataStream = MetadataStream;

    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::TopicResponse>, Status> {
        let name = request
            .get_ref()
            .topic
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default();
        self.check(&request, Resource::topic(name), Action::Create)?;
        let topic = validation::topic_record(request.into_inner().topic)?;
        tracing::info!(topic = %topic.name, "create topic");
        let reply = self
            .write(Command::CreateTopic { topic }, "CreateTopic")
            .await?;
        topic_response(reply, "CreateTopic").map(Response::new)
    }

    async fn update_topic(
        &self,
        request: Request<pb::UpdateTopicRequest>,
    ) -> Result<Response<pb::TopicResponse>, Status> {
        let name = request
            .get_ref()
            .topic
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default();
        self.check(&request, Resource::topic(name), Action::Update)?;
        let topic = validation::topic_record(request.into_inner().topic)?;
        tracing::info!(topic = %topic.name, "update topic");
        let reply = self
            .write(Command::UpdateTopic { topic }, "UpdateTopic")
            .await?;
        topic_response(reply, "UpdateTopic").map(Response::new)
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.check(
            &request,
            Resource::topic(request.get_ref().name.clone()),
            Action::Delete,
        )?;
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
        let name = request
            .get_ref()
            .group
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default();
        self.check(&request, Resource::group(name), Action::Create)?;
        let group = validation::group_record(request.into_inner().group)?;
        tracing::info!(group = %group.name, "create group");
        let reply = self
            .write(Command::CreateGroup { group }, "CreateGroup")
            .await?;
        group_response(reply, "CreateGroup").map(Response::new)
    }

    async fn update_group(
        &self,
        request: Request<pb::UpdateGroupRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        let name = request
            .get_ref()
            .group
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default();
        self.check(&request, Resource::group(name), Action::Update)?;
        let group = validation::group_record(request.into_inner().group)?;
        tracing::info!(group = %group.name, "update group");
        let reply = self
            .write(Command::UpdateGroup { group }, "UpdateGroup")
            .await?;
        group_response(reply, "UpdateGroup").map(Response::new)
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.check(
            &request,
            Resource::group(request.get_ref().name.clone()),
            Action::Delete,
        )?;
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
        let (set, revision) = self
            .register_member(
                &req.broker_set,
                req.broker_id,
                &req.address,
                self.inner.leases.lease(),
                "RegisterBroker",
            )
            .await?;
        Ok(Response::new(pb::RegisterBrokerResponse {
            broker_set: Some(set),
            revision,
        }))
    }

    async fn broker_heartbeat(
        &self,
        request: Request<pb::BrokerHeartbeatRequest>,
    ) -> Result<Response<pb::BrokerHeartbeatResponse>, Status> {
        let req = request.into_inner();
        let lease = self
            .heartbeat_member(
                &req.broker_set,
                req.broker_id,
                self.inner.leases.lease(),
                "BrokerHeartbeat",
            )
            .await?;
        self.report_log(
            &req.broker_set,
            req.broker_id,
            LogReport {
                epoch: req.log_epoch,
                end_offset: req.log_end_offset,
            },
        );
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        Ok(Response::new(pb::BrokerHeartbeatResponse { lease_ms }))
    }

    async fn alter_sync_state_set(
        &self,
        request: Request<pb::AlterSyncStateSetRequest>,
    ) -> Result<Response<pb::AlterSyncStateSetResponse>, Status> {
        let (set, revision) = self
            .alter_sync_state_set_inner(request.into_inner())
            .await?;
        Ok(Response::new(pb::AlterSyncStateSetResponse {
            broker_set: Some(set),
            revision,
        }))
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
        // Ends when shutdown starts or the controller is gone.
        let stopped = self.inner.stopping.clone().cancelled_owned();
        let stream = WatchStream::new(self.inner.metadata.clone())
            .map(|m| Ok(pb::ClusterMetadata::clone(&m)))
            .take_until(stopped);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report_clients(
        &self,
        request: Request<pb::ReportClientsRequest>,
    ) -> Result<Response<pb::ReportClientsResponse>, Status> {
        let report = request.into_inner();
        if report.proxy_id.is_empty() {
            return Err(Status::invalid_argument(
                "a client report needs the reporting proxy's id (proxy_id)",
            ));
        }
        tracing::debug!(proxy_id = %report.proxy_id, clients = report.clients.len(), "client report");
        self.inner.clients.report(report);
        let expire_after_ms =
            u64::try_from(crate::clients::REPORT_EXPIRY.as_millis()).unwrap_or(u64::MAX);
        Ok(Response::new(pb::ReportClientsResponse { expire_after_ms }))
    }

    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        let req = request.into_inner();
        let proxies = self
            .inner
            .clients
            .proxies(wall_ms(), crate::clients::DEFAULT_CLIENT_TIMEOUT);
        let clients = proxies
            .iter()
            .flat_map(|p| p.clients.iter().map(move |c| (p, c)))
            .filter(|(_, c)| req.group.is_empty() || c.group == req.group)
            .filter(|(_, c)| req.topic.is_empty() || c.topics.contains(&req.topic))
            .map(|(p, c)| pb::ListedClient {
                client: Some(c.clone()),
                proxy: p.address.clone(),
            })
            .collect();
        Ok(Response::new(pb::ListClientsResponse {
            clients,
            proxies: u32::try_from(proxies.len()).unwrap_or(u32::MAX),
        }))
    }
}
