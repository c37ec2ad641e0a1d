//! Users and ACLs on the controller: the `ControllerAdminService` user and ACL calls (check,
//! seal the password, propose), the guard of admin calls, the gate kept in step with the
//! metadata, and the one-time bootstrap of the first admin user.
//!
//! ```text
//!  CreateUser{name, password} ─► validate ─► SecretCipher::seal ─► Raft (UserRecord, sealed)
//!  metadata watch (auth_version moved) ─► Directory::from_stored(open secrets) ─► Gate
//!  admin call ─► Guard::check: authenticate (authorization, x-mq-date-time) ─► authorize
//! ```
//!
//! The guard itself lives in `guard` (the topic and group writes of `grpc` use it too).
//!
//! Invariants: a plaintext password exists only in the request being handled and in the
//! gates' memory; records, the Raft log, snapshots, answers and logs hold the sealed form
//! or nothing. The bootstrap user is proposed only while the state has never had a user or
//! ACL change (`auth_version == 0`) and applies at most once in the cluster's life.

use std::sync::Arc;

use comet_auth::{
    AclEntry, Action, Gate, GateSettings, Resource, SecretCipher, StoredEntry, StoredUser,
    UserType, acl::subject_user, acl::valid_username,
};
use comet_proto::comet::v1 as pb;
use openraft::ServerState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status};

use crate::grpc::ControllerGrpc;
use crate::guard::Guard;
use crate::metadata::records::{AclEntryRecord, UserRecord, acl_to_proto};
use crate::metadata::{Command, CommandResponse};
use crate::raft_types::ControllerRaft;

/// Longest password accepted.
const MAX_PASSWORD_LEN: usize = 256;

/// Authentication settings of a controller node.
#[derive(Clone, Default)]
pub struct ControllerAuth {
    /// Verify admin calls (and what the gate allows).
    pub settings: GateSettings,
    /// The cluster key: seals new passwords, opens stored ones. Without it users cannot be
    /// created and admin calls cannot be authenticated.
    pub cipher: Option<Arc<SecretCipher>>,
    /// The first admin user (a super user), created on the cluster's first start only.
    pub bootstrap: Option<(String, String)>,
}

impl std::fmt::Debug for ControllerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerAuth")
            .field("settings", &self.settings)
            .field("cipher", &self.cipher)
            .field("bootstrap_user", &self.bootstrap.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// The users and ACLs of `md` as a directory for a gate.
pub fn directory(md: &pb::ClusterMetadata, cipher: Option<&SecretCipher>) -> comet_auth::Directory {
    comet_auth::Directory::from_stored(
        md.users.iter().map(|u| StoredUser {
            name: &u.name,
            sealed_secret: &u.sealed_secret,
            user_type: &u.user_type,
        }),
        md.acls.iter().map(|a| {
            (
                a.subject.as_str(),
                a.entries
                    .iter()
                    .map(|e| StoredEntry {
                        resource: &e.resource,
                        actions: &e.actions,
                        decision: &e.decision,
                        source_ips: &e.source_ips,
                    })
                    .collect(),
            )
        }),
        cipher,
    )
}

/// Keeps `gate` in step with the users and ACLs of `metadata` until `stop`.
pub(crate) async fn keep_gate(
    gate: Arc<Gate>,
    mut metadata: watch::Receiver<Arc<pb::ClusterMetadata>>,
    cipher: Option<Arc<SecretCipher>>,
    stop: CancellationToken,
) {
    let mut seen = None;
    loop {
        let md = metadata.borrow_and_update().clone();
        if seen != Some(md.auth_version) {
            seen = Some(md.auth_version);
            gate.replace(directory(&md, cipher.as_deref()));
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = metadata.changed() => if changed.is_err() { return },
        }
    }
}

/// Proposes the bootstrap admin user once this node leads, if the cluster never had a user
/// or ACL change; ends after that (or at `stop`).
pub(crate) async fn bootstrap(
    raft: ControllerRaft,
    metadata: watch::Receiver<Arc<pb::ClusterMetadata>>,
    user: UserRecord,
    stop: CancellationToken,
) {
    let mut metrics = raft.metrics();
    loop {
        if metadata.borrow().auth_version > 0 {
            return;
        }
        let leading = {
            let m = metrics.borrow_and_update();
            m.state == ServerState::Leader && m.current_leader == Some(m.id)
        };
        if leading {
            match raft
                .client_write(Command::BootstrapUser { user: user.clone() })
                .await
            {
                Ok(r) => {
                    if matches!(r.data, CommandResponse::User(_)) {
                        tracing::info!(user = %user.name, "bootstrap admin user created");
                    }
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "bootstrap user not proposed yet"),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}

/// Seals a bootstrap user record.
///
/// # Errors
/// A message naming the bad setting.
pub(crate) fn bootstrap_record(
    cipher: &SecretCipher,
    name: &str,
    password: &str,
) -> Result<UserRecord, String> {
    check_user(name, password).map_err(|s| s.message().to_owned())?;
    let sealed_secret = cipher
        .seal(name, password.as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(UserRecord {
        name: name.to_owned(),
        sealed_secret,
        user_type: UserType::Super.to_string(),
    })
}

fn check_user(name: &str, password: &str) -> Result<(), Status> {
    if !valid_username(name) {
        return Err(Status::invalid_argument(format!(
            "user name {name:?} is invalid: 1 to 64 letters, digits, '-', '_' or '.'"
        )));
    }
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
        return Err(Status::invalid_argument(format!(
            "the password of user {name} must be 1 to {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(())
}

/// The user and ACL calls of `ControllerAdminService`.
#[derive(Clone)]
pub(crate) struct Access {
    pub(crate) grpc: ControllerGrpc,
    pub(crate) cipher: Option<Arc<SecretCipher>>,
    pub(crate) guard: Guard,
}

fn user_info(u: &UserRecord) -> pb::UserInfo {
    pb::UserInfo {
        name: u.name.clone(),
        user_type: u.user_type.clone(),
        key_id: SecretCipher::key_id_of(&u.sealed_secret)
            .unwrap_or_default()
            .to_owned(),
    }
}

fn user_info_pb(u: &pb::User) -> pb::UserInfo {
    pb::UserInfo {
        name: u.name.clone(),
        user_type: u.user_type.clone(),
        key_id: SecretCipher::key_id_of(&u.sealed_secret)
            .unwrap_or_default()
            .to_owned(),
    }
}

fn invalid(e: comet_auth::AuthError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn user_type(text: &str) -> Result<UserType, Status> {
    if text.is_empty() {
        Ok(UserType::Normal)
    } else {
        text.parse().map_err(invalid)
    }
}

impl Access {
    fn cipher(&self) -> Result<&SecretCipher, Status> {
        self.cipher.as_deref().ok_or_else(|| {
            Status::failed_precondition(
                "no cluster key is configured on this controller (auth.cluster_key or \
                 auth.cluster_key_file); users cannot be stored without one",
            )
        })
    }

    fn seal(&self, name: &str, password: &str) -> Result<String, Status> {
        self.cipher()?
            .seal(name, password.as_bytes())
            .map_err(|e| Status::internal(e.to_string()))
    }

    fn metadata(&self) -> Arc<pb::ClusterMetadata> {
        self.grpc.current()
    }

    pub(crate) async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<pb::UserInfo, Status> {
        self.guard
            .check(&request, &Resource::cluster(), Action::Create)?;
        let req = request.into_inner();
        check_user(&req.name, &req.password)?;
        let kind = user_type(&req.user_type)?;
        let user = UserRecord {
            sealed_secret: self.seal(&req.name, &req.password)?,
            name: req.name,
            user_type: kind.to_string(),
        };
        self.write_user(Command::CreateUser { user }, "CreateUser")
            .await
    }

    pub(crate) async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<pb::UserInfo, Status> {
        self.guard
            .check(&request, &Resource::cluster(), Action::Update)?;
        let req = request.into_inner();
        let md = self.metadata();
        let Some(old) = md.users.iter().find(|u| u.name == req.name) else {
            return Err(Status::not_found(format!(
                "user {:?} does not exist",
                req.name
            )));
        };
        let sealed_secret = if req.password.is_empty() {
            old.sealed_secret.clone()
        } else {
            check_user(&req.name, &req.password)?;
            self.seal(&req.name, &req.password)?
        };
        let kind = if req.user_type.is_empty() {
            old.user_type.clone()
        } else {
            user_type(&req.user_type)?.to_string()
        };
        let user = UserRecord {
            name: req.name,
            sealed_secret,
            user_type: kind,
        };
        self.write_user(Command::UpdateUser { user }, "UpdateUser")
            .await
    }

    /// Commits a user creation or update (`command` carries the record) and answers with the
    /// stored user as the admin API shows it (no secret).
    async fn write_user(
        &self,
        command: Command,
        what: &'static str,
    ) -> Result<pb::UserInfo, Status> {
        if let Command::CreateUser { user } | Command::UpdateUser { user } = &command {
            tracing::info!(user = %user.name, user_type = %user.user_type, op = what, "write user");
        }
        match self.grpc.write(command, what).await? {
            (CommandResponse::User(u), _) => Ok(user_info(&u)),
            (other, _) => Err(unexpected(what, &other)),
        }
    }

    pub(crate) async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<pb::DeleteUserResponse, Status> {
        self.guard
            .check(&request, &Resource::cluster(), Action::Delete)?;
        let name = request.into_inner().name;
        tracing::info!(user = %name, "delete user");
        self.grpc
            .write(Command::DeleteUser { name }, "DeleteUser")
            .await?;
        Ok(pb::DeleteUserResponse {})
    }

    pub(crate) fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<pb::UserInfo, Status> {
        self.guard
            .check(&request, &Resource::cluster(), Action::Get)?;
        let name = request.into_inner().name;
        self.metadata()
            .users
            .iter()
            .find(|u| u.name == name)
            .map(user_info_pb)
            .ok_or_else(|| Status::not_found(format!("user {name:?} does not exist")))
    }

    pub(crate) fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<pb::ListUsersResponse, Status> {
        self.guard
            .check(&request, &Resource::cluster(), Action::List)?;
        let filter = request.into_inner().filter;
        Ok(pb::ListUsersResponse {
            users: self
                .metadata()
                .users
                .iter()
                .filter(|u| u.name.contains(&filter))
                .map(user_info_pb)
                .collect(),
        })
    }

    /// The user and canonical entries of a create/update request.
    fn entries(req: &pb::AclRequest) -> Result<(String, Vec<AclEntryRecord>), Status> {
        let user = subject_user(&req.subject).map_err(invalid)?.to_owned();
        if req.resources.is_empty() {
            return Err(Status::invalid_argument(
                "name at least one --resource (Topic:<name>, Group:<name>, Cluster or *)",
            ));
        }
        let mut out: Vec<AclEntryRecord> = Vec::new();
        for resource in &req.resources {
            let entry = AclEntry::parse(resource, &req.actions, &req.decision, &req.source_ips)
                .map_err(invalid)?;
            let record = AclEntryRecord {
                resource: entry.resource.to_string(),
                actions: entry.actions.to_string(),
                decision: entry.decision.to_string(),
                source_ips: entry.source_ips.iter().map(ToString::to_string).collect(),
            };
            if out.iter().any(|e| e.resource == record.resource) {
                return Err(Status::invalid_argument(format!(
                    "resource {} is named twice",
                    record.resource
                )));
            }
            out.push(record);
        }
        Ok((user, out))
    }

    pub(crate) async fn create_acl(
        &self,
        request: Request<pb::AclRequest>,
    ) -> Result<pb::Acl, Status> {
        self.guard
            .check(&request, &Resource::cluster(), Action::Create)?;
        let (user, entries) = Self::entries(request.get_ref())?;
        tracing::info!(%user, entries = entries.len(), "create acl");
        self.acl_write(Command::CreateAcl { user, entries }, "CreateAcl")
            .await
    }

    pub(crate) async fn update_acl(
        &self,
        request: Request<pb::AclRequest>,
    ) -> Result<pb::Acl, Status> {
        self.guard
            .check(&request, &Resource::cluster(), Action::Update)?;
        let (user, entries) = Self::entries(request.get_ref())?;
        tracing::info!(%user, entries = entries.len(), "update acl");
        self.acl_write(Command::UpdateAcl { user, entries }, "UpdateAcl")
            .await
    }

    async fn acl_write(&self, cmd: Command, what: &str) -> Result<pb::Acl, Status> {
        match self.grpc.write(cmd, what).await? {
            (CommandResponse::Acl { user, entries }, _) => Ok(acl_to_proto(&user, &entries)),
            (other, _) => Err(unexpected(what, &other)),
        }
    }

    pub(crate) async fn delete_acl(
        &self,
        request: Request<pb::DeleteAclRequest>,
    ) -> Result<pb::DeleteAclResponse, Status> {
        self.guard
            .check(&request, &Resource::cluster(), Action::Delete)?;
        let req = request.into_inner();
        let user = subject_user(&req.subject).map_err(invalid)?.to_owned();
        let resources = req
            .resources
            .iter()
            .map(|r| {
                r.parse::<comet_auth::ResourcePattern>()
                    .map(|p| p.to_string())
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        tracing::info!(%user, entries = resources.len(), "delete acl");
        self.grpc
            .write(Command::DeleteAcl { user, resources }, "DeleteAcl")
            .await?;
        Ok(pb::DeleteAclResponse {})
    }

    pub(crate) fn get_acl(&self, request: Request<pb::GetAclRequest>) -> Result<pb::Acl, Status> {
        self.guard
            .check(&request, &Resource::cluster(), Action::Get)?;
        let subject = request.into_inner().subject;
        let user = subject_user(&subject).map_err(invalid)?;
        let wanted = format!("User:{user}");
        self.metadata()
            .acls
            .iter()
            .find(|a| a.subject == wanted)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("{wanted} has no ACL")))
    }

    pub(crate) fn list_acls(
        &self,
        request: Request<pb::ListAclsRequest>,
    ) -> Result<pb::ListAclsResponse, Status> {
        self.guard
            .check(&request, &Resource::cluster(), Action::List)?;
        let req = request.into_inner();
        let acls = self
            .metadata()
            .acls
            .iter()
            .filter(|a| a.subject.contains(&req.subject_filter))
            .map(|a| pb::Acl {
                subject: a.subject.clone(),
                entries: a
                    .entries
                    .iter()
                    .filter(|e| e.resource.contains(&req.resource_filter))
                    .cloned()
                    .collect(),
            })
            .filter(|a| !a.entries.is_empty())
            .collect();
        Ok(pb::ListAclsResponse { acls })
    }
}

fn unexpected(what: &str, resp: &CommandResponse) -> Status {
    Status::internal(format!(
        "{what}: unexpected state machine response {resp:?}"
    ))
}
