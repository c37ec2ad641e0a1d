//! `comet user ...` and `comet acl ...` over the controller's `ControllerAdminService`. Every
//! call is signed ([`Signer`]); answers never carry a secret.

use comet_proto::comet::v1::{
    Acl, AclRequest, CreateUserRequest, DeleteAclRequest, DeleteUserRequest, GetAclRequest,
    GetUserRequest, ListAclsRequest, ListUsersRequest, UpdateUserRequest, UserInfo,
};
use serde_json::{Value, json};

use super::args::{AclCommand, AdminTarget, UserCommand};
use super::controller_api::connect;

fn user_json(u: &UserInfo) -> Value {
    json!({"name": u.name, "type": u.user_type, "key_id": u.key_id})
}

fn acl_json(a: &Acl) -> Value {
    let entries: Vec<Value> = a
        .entries
        .iter()
        .map(|e| {
            json!({
                "resource": e.resource,
                "actions": e.actions,
                "decision": e.decision,
                "source_ips": e.source_ips,
            })
        })
        .collect();
    json!({"subject": a.subject, "entries": entries})
}

fn failed(what: &str, name: &str, s: &tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{what} {name:?}: {} ({:?})", s.message(), s.code())
}

/// Runs a `comet user` command.
pub async fn user(target: &AdminTarget, cmd: &UserCommand) -> anyhow::Result<Value> {
    let (client, signer) = connect(target)?;
    let signer = &signer;
    match cmd {
        UserCommand::Create(spec) => {
            let req = CreateUserRequest {
                name: spec.name.clone(),
                password: spec.password.clone(),
                user_type: spec.user_type.as_str().to_owned(),
            };
            let reply = client
                .call_admin(|mut c| {
                    let req = signer.sign(req.clone());
                    async move { c.create_user(req).await }
                })
                .await
                .map_err(|s| failed("creating user", &spec.name, &s))?;
            Ok(user_json(&reply))
        }
        UserCommand::Update(up) => {
            let req = UpdateUserRequest {
                name: up.name.clone(),
                password: up.password.clone().unwrap_or_default(),
                user_type: up
                    .user_type
                    .map(|t| t.as_str().to_owned())
                    .unwrap_or_default(),
            };
            let reply = client
                .call_admin(|mut c| {
                    let req = signer.sign(req.clone());
                    async move { c.update_user(req).await }
                })
                .await
                .map_err(|s| failed("updating user", &up.name, &s))?;
            Ok(user_json(&reply))
        }
        UserCommand::Delete(n) => {
            client
                .call_admin(|mut c| {
                    let req = signer.sign(DeleteUserRequest {
                        name: n.name.clone(),
                    });
                    async move { c.delete_user(req).await }
                })
                .await
                .map_err(|s| failed("deleting user", &n.name, &s))?;
            Ok(json!({"deleted": n.name}))
        }
        UserCommand::Get(n) => {
            let reply = client
                .call_any_admin(|mut c| {
                    let req = signer.sign(GetUserRequest {
                        name: n.name.clone(),
                    });
                    async move { c.get_user(req).await }
                })
                .await
                .map_err(|s| failed("reading user", &n.name, &s))?
                .1;
            Ok(user_json(&reply))
        }
        UserCommand::List(f) => {
            let reply = client
                .call_any_admin(|mut c| {
                    let req = signer.sign(ListUsersRequest {
                        filter: f.filter.clone(),
                    });
                    async move { c.list_users(req).await }
                })
                .await
                .map_err(|s| failed("listing users", &f.filter, &s))?
                .1;
            let users: Vec<Value> = reply.users.iter().map(user_json).collect();
            Ok(json!({"users": users}))
        }
    }
}

/// Runs a `comet acl` command.
pub async fn acl(target: &AdminTarget, cmd: &AclCommand) -> anyhow::Result<Value> {
    let (client, signer) = connect(target)?;
    let signer = &signer;
    match cmd {
        AclCommand::Create(spec) | AclCommand::Update(spec) => {
            let create = matches!(cmd, AclCommand::Create(_));
            let req = AclRequest {
                subject: spec.subject.clone(),
                resources: spec.resources.clone(),
                actions: spec.actions.clone(),
                decision: spec.decision.clone(),
                source_ips: spec.source_ips.clone(),
            };
            let reply = client
                .call_admin(|mut c| {
                    let req = signer.sign(req.clone());
                    async move {
                        if create {
                            c.create_acl(req).await
                        } else {
                            c.update_acl(req).await
                        }
                    }
                })
                .await
                .map_err(|s| {
                    let what = if create {
                        "creating ACL of"
                    } else {
                        "updating ACL of"
                    };
                    failed(what, &spec.subject, &s)
                })?;
            Ok(acl_json(&reply))
        }
        AclCommand::Delete(d) => {
            client
                .call_admin(|mut c| {
                    let req = signer.sign(DeleteAclRequest {
                        subject: d.subject.clone(),
                        resources: d.resources.clone(),
                    });
                    async move { c.delete_acl(req).await }
                })
                .await
                .map_err(|s| failed("deleting ACL of", &d.subject, &s))?;
            Ok(json!({"deleted": d.subject, "resources": d.resources}))
        }
        AclCommand::Get(g) => {
            let reply = client
                .call_any_admin(|mut c| {
                    let req = signer.sign(GetAclRequest {
                        subject: g.subject.clone(),
                    });
                    async move { c.get_acl(req).await }
                })
                .await
                .map_err(|s| failed("reading ACL of", &g.subject, &s))?
                .1;
            Ok(acl_json(&reply))
        }
        AclCommand::List(f) => {
            let reply = client
                .call_any_admin(|mut c| {
                    let req = signer.sign(ListAclsRequest {
                        subject_filter: f.subject_filter.clone(),
                        resource_filter: f.resource_filter.clone(),
                    });
                    async move { c.list_acls(req).await }
                })
                .await
                .map_err(|s| failed("listing ACLs", &f.subject_filter, &s))?
                .1;
            let acls: Vec<Value> = reply.acls.iter().map(acl_json).collect();
            Ok(json!({"acls": acls}))
        }
    }
}
