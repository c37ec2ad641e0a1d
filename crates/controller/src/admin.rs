//! [`ControllerAdminGrpc`]: the `comet.v1.ControllerAdminService`
//! implementation, i.e. Raft membership administration.
//!
//! - `DescribeControllers` reads this node's Raft metrics (no quorum).
//! - `AddController` adds the node as a learner, waits (bounded by
//!   [`CATCH_UP_TIMEOUT`]) until it replicated the log, then promotes it to
//!   voter with openraft's joint consensus.
//! - `RemoveController` removes a voter (joint consensus) or a learner. A
//!   removed leader keeps leading until the change committed, then steps
//!   down and the remaining voters elect a new leader.
//!
//! - `SetLogLevel` replaces the process's log filter (`comet_observe::logging`).
//!
//! The pure checks ([`plan_add`], [`plan_remove`]) decide from the current
//! membership whether a change is a no-op, an error or which steps to run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use comet_proto::comet::v1 as pb;
use comet_proto::comet::v1::controller_admin_service_server::ControllerAdminService;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, RaftMetrics};
use tonic::{Request, Response, Status};

use comet_auth::{Action, Resource};

use crate::access::Access;
use crate::grpc::{LEADER_METADATA_KEY, WRITE_TIMEOUT};
use crate::metadata::validation;
use crate::raft_types::{ControllerRaft, NodeId};

/// How long a new node may take to catch up before `AddController` gives up
/// (it then stays a learner; retry once it is reachable).
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// The membership as the admin checks see it: node id → (address, voter).
pub type Members = BTreeMap<NodeId, (String, bool)>;

/// What an `AddController` must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddPlan {
    /// Nothing: it is already a member in the requested role.
    Nothing,
    /// Add it as a learner, then (unless learner-only) promote it.
    AddLearner {
        /// Promote to voter afterwards.
        promote: bool,
    },
    /// It is a learner already; promote it.
    Promote,
}

/// Decides an `AddController` from the current membership.
///
/// # Errors
/// INVALID_ARGUMENT for id 0 or a bad address, ALREADY_EXISTS when the id is
/// a member at another address or the address belongs to another id.
pub fn plan_add(
    members: &Members,
    node_id: NodeId,
    address: &str,
    learner_only: bool,
) -> Result<AddPlan, Status> {
    if node_id == 0 {
        return Err(Status::invalid_argument(
            "node_id must be at least 1 (0 means unset)",
        ));
    }
    validation::validate_address(address)
        .map_err(|e| Status::invalid_argument(format!("controller address: {e}")))?;
    if let Some((other, _)) = members
        .iter()
        .find(|(id, (addr, _))| **id != node_id && addr == address)
    {
        return Err(Status::already_exists(format!(
            "address {address} already belongs to controller node {other}"
        )));
    }
    match members.get(&node_id) {
        None => Ok(AddPlan::AddLearner {
            promote: !learner_only,
        }),
        Some((addr, _)) if addr != address => Err(Status::already_exists(format!(
            "controller node {node_id} is already a member at {addr}; remove it first to \
             change its address"
        ))),
        Some((_, true)) => Ok(AddPlan::Nothing),
        Some((_, false)) if learner_only => Ok(AddPlan::Nothing),
        Some((_, false)) => Ok(AddPlan::Promote),
    }
}

/// What a `RemoveController` must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemovePlan {
    /// Remove a voter (joint consensus).
    RemoveVoter,
    /// Remove a learner.
    RemoveLearner,
}

/// Decides a `RemoveController` from the current membership.
///
/// # Errors
/// NOT_FOUND for a non-member, FAILED_PRECONDITION for the last voter.
pub fn plan_remove(members: &Members, node_id: NodeId) -> Result<RemovePlan, Status> {
    match members.get(&node_id) {
        None => Err(Status::not_found(format!(
            "controller node {node_id} is not a member"
        ))),
        Some((_, true)) => {
            if members.values().filter(|(_, voter)| *voter).count() <= 1 {
                Err(Status::failed_precondition(format!(
                    "controller node {node_id} is the last voter; a cluster needs at least one"
                )))
            } else {
                Ok(RemovePlan::RemoveVoter)
            }
        }
        Some((_, false)) => Ok(RemovePlan::RemoveLearner),
    }
}

/// The `ControllerAdminService` of one node. Cheap to clone.
#[derive(Clone)]
pub struct ControllerAdminGrpc {
    raft: ControllerRaft,
    access: Access,
}

fn members_of(m: &RaftMetrics<NodeId, BasicNode>) -> Members {
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, n)| (*id, (n.addr.clone(), voters.contains(id))))
        .collect()
}

fn describe(m: &RaftMetrics<NodeId, BasicNode>) -> pb::DescribeControllersResponse {
    let members = members_of(m);
    let leader_address = m
        .current_leader
        .and_then(|l| members.get(&l).map(|(a, _)| a.clone()))
        .unwrap_or_default();
    pb::DescribeControllersResponse {
        node_id: m.id,
        state: format!("{:?}", m.state),
        leader_id: m.current_leader,
        leader_address,
        term: m.current_term,
        last_log_index: m.last_log_index.unwrap_or(0),
        last_applied_index: m.last_applied.map_or(0, |l| l.index),
        members: members
            .into_iter()
            .map(|(node_id, (address, voter))| pb::ControllerNode {
                node_id,
                address,
                voter,
            })
            .collect(),
    }
}

impl ControllerAdminGrpc {
    pub(crate) fn new(raft: ControllerRaft, access: Access) -> Self {
        ControllerAdminGrpc { raft, access }
    }

    fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// UNAVAILABLE with the leader hint unless this node leads.
    fn require_leader(&self, what: &str) -> Result<Members, Status> {
        let m = self.metrics();
        let members = members_of(&m);
        if m.current_leader == Some(m.id) && m.state == openraft::ServerState::Leader {
            return Ok(members);
        }
        let leader = m
            .current_leader
            .and_then(|l| members.get(&l).map(|(a, _)| a.clone()));
        Err(not_leader(leader.as_deref(), what))
    }

    async fn change(
        &self,
        changes: ChangeMembers<NodeId, BasicNode>,
        what: &str,
        timeout: Duration,
    ) -> Result<(), Status> {
        match tokio::time::timeout(timeout, self.raft.change_membership(changes, false)).await {
            Err(_) => Err(Status::deadline_exceeded(format!(
                "{what} did not commit within {timeout:?}; check that a quorum of controllers \
                 is up (the change may still complete)"
            ))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(write_error(e, what)),
        }
    }
}

fn not_leader(leader: Option<&str>, what: &str) -> Status {
    let mut status = Status::unavailable(match leader {
        Some(a) => {
            format!("this controller is not the leader; {what} must go to the leader at {a}")
        }
        None => format!(
            "this controller is not the leader and no leader is known yet; retry {what} shortly"
        ),
    });
    if let Some(v) = leader.and_then(|a| a.parse().ok()) {
        status.metadata_mut().insert(LEADER_METADATA_KEY, v);
    }
    status
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>, what: &str) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            not_leader(f.leader_node.as_ref().map(|n| n.addr.as_str()), what)
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Status::failed_precondition(format!("{what}: {e}"))
        }
        RaftError::Fatal(e) => Status::unavailable(format!(
            "the controller is stopping or its storage failed: {e}"
        )),
    }
}

#[tonic::async_trait]
impl ControllerAdminService for ControllerAdminGrpc {
    async fn describe_controllers(
        &self,
        request: Request<pb::DescribeControllersRequest>,
    ) -> Result<Response<pb::DescribeControllersResponse>, Status> {
        self.access
            .guard
            .check(&request, &Resource::cluster(), Action::Get)?;
        Ok(Response::new(describe(&self.metrics())))
    }

    async fn add_controller(
        &self,
        request: Request<pb::AddControllerRequest>,
    ) -> Result<Response<pb::DescribeControllersResponse>, Status> {
        self.access
            .guard
            .check(&request, &Resource::cluster(), Action::Update)?;
        let req = request.into_inner();
        let members = self.require_leader("AddController")?;
        let plan = plan_add(&members, req.node_id, &req.address, req.learner_only)?;
        tracing::info!(node_id = req.node_id, address = %req.address, ?plan, "add controller");
        let promote = match plan {
            AddPlan::Nothing => false,
            AddPlan::Promote => true,
            AddPlan::AddLearner { promote } => {
                let node = BasicNode {
                    addr: req.address.clone(),
                };
                match tokio::time::timeout(
                    CATCH_UP_TIMEOUT,
                    self.raft.add_learner(req.node_id, node, true),
                )
                .await
                {
                    Err(_) => {
                        return Err(Status::deadline_exceeded(format!(
                            "controller node {} at {} joined as a learner but did not catch \
                             up within {CATCH_UP_TIMEOUT:?}; check that it runs (with \
                             controller.join = true) and is reachable, then add it again or \
                             remove it",
                            req.node_id, req.address
                        )));
                    }
                    Ok(Err(e)) => return Err(write_error(e, "AddController")),
                    Ok(Ok(_)) => promote,
                }
            }
        };
        if promote {
            self.change(
                ChangeMembers::AddVoterIds(BTreeSet::from([req.node_id])),
                "AddController",
                WRITE_TIMEOUT,
            )
            .await?;
        }
        Ok(Response::new(describe(&self.metrics())))
    }

    async fn remove_controller(
        &self,
        request: Request<pb::RemoveControllerRequest>,
    ) -> Result<Response<pb::DescribeControllersResponse>, Status> {
        self.access
            .guard
            .check(&request, &Resource::cluster(), Action::Update)?;
        let node_id = request.into_inner().node_id;
        let members = self.require_leader("RemoveController")?;
        let plan = plan_remove(&members, node_id)?;
        tracing::info!(node_id, ?plan, "remove controller");
        let changes = match plan {
            RemovePlan::RemoveVoter => ChangeMembers::RemoveVoters(BTreeSet::from([node_id])),
            RemovePlan::RemoveLearner => ChangeMembers::RemoveNodes(BTreeSet::from([node_id])),
        };
        self.change(changes, "RemoveController", WRITE_TIMEOUT)
            .await?;
        Ok(Response::new(describe(&self.metrics())))
    }

    async fn set_log_level(
        &self,
        request: Request<pb::SetLogLevelRequest>,
    ) -> Result<Response<pb::SetLogLevelResponse>, Status> {
        let directives = comet_observe::logging::set_level_rpc(&request.into_inner().directives)?;
        Ok(Response::new(pb::SetLogLevelResponse { directives }))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::UserInfo>, Status> {
        self.access.create_user(request).await.map(Response::new)
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UserInfo>, Status> {
        self.access.update_user(request).await.map(Response::new)
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        self.access.delete_user(request).await.map(Response::new)
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::UserInfo>, Status> {
        self.access.get_user(request).map(Response::new)
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.access.list_users(request).map(Response::new)
    }

    async fn create_acl(
        &self,
        request: Request<pb::AclRequest>,
    ) -> Result<Response<pb::Acl>, Status> {
        self.access.create_acl(request).await.map(Response::new)
    }

    async fn update_acl(
        &self,
        request: Request<pb::AclRequest>,
    ) -> Result<Response<pb::Acl>, Status> {
        self.access.update_acl(request).await.map(Response::new)
    }

    async fn delete_acl(
        &self,
        request: Request<pb::DeleteAclRequest>,
    ) -> Result<Response<pb::DeleteAclResponse>, Status> {
        self.access.delete_acl(request).await.map(Response::new)
    }

    async fn get_acl(
        &self,
        request: Request<pb::GetAclRequest>,
    ) -> Result<Response<pb::Acl>, Status> {
        self.access.get_acl(request).map(Response::new)
    }

    async fn list_acls(
        &self,
        request: Request<pb::ListAclsRequest>,
    ) -> Result<Response<pb::ListAclsResponse>, Status> {
        self.access.list_acls(request).map(Response::new)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn members() -> Members {
        BTreeMap::from([
            (1, ("h:1".to_owned(), true)),
            (2, ("h:2".to_owned(), true)),
            (3, ("h:3".to_owned(), false)),
        ])
    }

    #[test]
    fn add_plans_follow_the_membership() {
        let m = members();
        assert_eq!(
            plan_add(&m, 4, "h:4", false).unwrap(),
            AddPlan::AddLearner { promote: true }
        );
        assert_eq!(
            plan_add(&m, 4, "h:4", true).unwrap(),
            AddPlan::AddLearner { promote: false }
        );
        assert_eq!(plan_add(&m, 1, "h:1", false).unwrap(), AddPlan::Nothing);
        assert_eq!(plan_add(&m, 3, "h:3", false).unwrap(), AddPlan::Promote);
        assert_eq!(plan_add(&m, 3, "h:3", true).unwrap(), AddPlan::Nothing);
        for (id, addr, code, needle) in [
            (0, "h:9", tonic::Code::InvalidArgument, "at least 1"),
            (4, "nope", tonic::Code::InvalidArgument, "host:port"),
            (4, "h:2", tonic::Code::AlreadyExists, "node 2"),
            (2, "h:9", tonic::Code::AlreadyExists, "remove it first"),
        ] {
            let e = plan_add(&m, id, addr, false).unwrap_err();
            assert_eq!(e.code(), code, "{id} {addr}: {}", e.message());
            assert!(e.message().contains(needle), "{}", e.message());
        }
    }

    #[test]
    fn remove_plans_keep_a_voter() {
        let m = members();
        assert_eq!(plan_remove(&m, 1).unwrap(), RemovePlan::RemoveVoter);
        assert_eq!(plan_remove(&m, 3).unwrap(), RemovePlan::RemoveLearner);
        assert_eq!(
            plan_remove(&m, 9).unwrap_err().code(),
            tonic::Code::NotFound
        );
        let single = BTreeMap::from([(1, ("h:1".to_owned(), true))]);
        let e = plan_remove(&single, 1).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.message().contains("last voter"));
    }
}
