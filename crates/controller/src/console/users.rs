//! The users and ACLs endpoints: the node's user and ACL calls (validation, sealing of the
//! password, Raft) behind the caller's rights on `Cluster` (List, Create, Update, Delete), as
//! the admin commands need. Answers never hold a password or a sealed secret.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::{Json, http::HeaderMap, response::IntoResponse};
use comet_auth::{Action, Resource};
use comet_proto::comet::v1 as pb;
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::Request;

use super::Console;
use super::api::{ApiResult, confirmed};
use super::error::ApiError;
use super::session::{Caller, Logins};

fn user_json(u: &pb::UserInfo) -> Value {
    json!({"name": u.name, "user_type": u.user_type})
}

fn acl_json(a: &pb::Acl) -> Value {
    json!({
        "subject": a.subject,
        "user": a.subject.strip_prefix("User:").unwrap_or(&a.subject),
        "entries": a.entries.iter().map(|e| json!({
            "resource": e.resource,
            "actions": e.actions,
            "decision": e.decision,
            "source_ips": e.source_ips,
        })).collect::<Vec<_>>(),
    })
}

/// `User:<name>` from a bare name or a subject.
fn subject(user: &str) -> String {
    let user = user.trim();
    if user.contains(':') {
        user.to_owned()
    } else {
        format!("User:{user}")
    }
}

// ---- login -----------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginBody {
    username: Option<String>,
    password: Option<String>,
}

/// `POST /api/login` with `{"username", "password"}`: a session cookie and who logged in.
pub(super) async fn login(
    State(c): State<Console>,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(b) = body?;
    let meta = c.inner.grpc.applied();
    let login = c.inner.logins.login(
        &meta,
        b.username.as_deref().unwrap_or("").trim(),
        b.password.as_deref().unwrap_or(""),
    )?;
    let cookie = Logins::set_cookie(&login);
    let body = json!({
        "user": &*login.user,
        "user_type": login.user_type,
        "expires_in_ms": login.expires_in.as_millis(),
    });
    Ok(([(axum::http::header::SET_COOKIE, cookie)], Json(body)))
}

/// `POST /api/logout`: ends the session (if any) and clears the cookie.
pub(super) async fn logout(State(c): State<Console>, headers: HeaderMap) -> impl IntoResponse {
    c.inner.logins.logout(&headers);
    (
        [(axum::http::header::SET_COOKIE, Logins::clear_cookie())],
        Json(json!({"logged_out": true})),
    )
}

/// `GET /api/session`: whether logins are on, and who the caller is.
pub(super) async fn session(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    let is_super = caller.user_type() == Some("super");
    Ok(Json(json!({
        "auth_enabled": c.inner.logins.enabled(),
        "user": caller.user(),
        "user_type": caller.user_type(),
        "super": is_super || !c.inner.logins.enabled(),
        "expires_in_ms": caller.expires_in().map(|d| d.as_millis()),
    })))
}

// ---- users -----------------------------------------------------------------------------

/// `GET /api/users`.
pub(super) async fn list_users(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    caller.may(&c, &Resource::cluster(), Action::List)?;
    let users = c
        .inner
        .access
        .list_users(Request::new(pb::ListUsersRequest::default()))?
        .users;
    Ok(Json(json!({
        "auth_enabled": c.inner.logins.enabled(),
        "users": users.iter().map(user_json).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserBody {
    name: Option<String>,
    password: Option<String>,
    user_type: Option<String>,
}

/// `POST /api/users` with `{"name", "password", "user_type"}`.
pub(super) async fn create_user(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<UserBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(b) = body?;
    caller.may(&c, &Resource::cluster(), Action::Create)?;
    let info = c
        .inner
        .access
        .create_user(Request::new(pb::CreateUserRequest {
            name: b.name.unwrap_or_default().trim().to_owned(),
            password: b.password.unwrap_or_default(),
            user_type: b.user_type.unwrap_or_default(),
        }))
        .await?;
    tracing::info!(by = caller.user().unwrap_or("-"), user = %info.name, "console: user created");
    Ok((StatusCode::CREATED, Json(user_json(&info))))
}

/// `PUT /api/users/{name}` with `{"password"?, "user_type"?}` (absent or empty: kept).
pub(super) async fn update_user(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Json<UserBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    caller.may(&c, &Resource::cluster(), Action::Update)?;
    if b.name.as_deref().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(
            "a user cannot be renamed: create the new user and delete the old one",
        ));
    }
    let info = c
        .inner
        .access
        .update_user(Request::new(pb::UpdateUserRequest {
            name,
            password: b.password.unwrap_or_default(),
            user_type: b.user_type.unwrap_or_default(),
        }))
        .await?;
    tracing::info!(by = caller.user().unwrap_or("-"), user = %info.name, "console: user updated");
    Ok(Json(user_json(&info)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfirmBody {
    confirm: Option<String>,
    resources: Option<Vec<String>>,
}

/// `DELETE /api/users/{name}` with `{"confirm": "<name>"}`.
pub(super) async fn delete_user(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Json<ConfirmBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    caller.may(&c, &Resource::cluster(), Action::Delete)?;
    if b.resources.is_some() {
        return Err(ApiError::bad_request("a user deletion takes no resources"));
    }
    confirmed(b.confirm.as_deref(), &name, "deleting a user")?;
    if !c.inner.grpc.applied().users.iter().any(|u| u.name == name) {
        return Err(ApiError::not_found(format!("user {name:?} does not exist")));
    }
    c.inner
        .access
        .delete_user(Request::new(pb::DeleteUserRequest { name: name.clone() }))
        .await?;
    tracing::info!(by = caller.user().unwrap_or("-"), user = %name, "console: user deleted");
    Ok(Json(json!({"deleted": name})))
}

// ---- ACLs ------------------------------------------------------------------------------

/// `GET /api/acls`.
pub(super) async fn list_acls(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    caller.may(&c, &Resource::cluster(), Action::List)?;
    let acls = c
        .inner
        .access
        .list_acls(Request::new(pb::ListAclsRequest::default()))?
        .acls;
    Ok(Json(json!({
        "acls": acls.iter().map(acl_json).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AclBody {
    user: Option<String>,
    resources: Option<Vec<String>>,
    actions: Option<String>,
    decision: Option<String>,
    source_ips: Option<Vec<String>>,
}

impl AclBody {
    fn request(self, user: Option<&str>) -> Result<pb::AclRequest, ApiError> {
        let user = user
            .map(str::to_owned)
            .or(self.user)
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| ApiError::bad_request("give the user the entries are for (user)"))?;
        Ok(pb::AclRequest {
            subject: subject(&user),
            resources: self
                .resources
                .unwrap_or_default()
                .into_iter()
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
                .collect(),
            actions: self.actions.unwrap_or_default(),
            decision: self.decision.unwrap_or_default(),
            source_ips: self
                .source_ips
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        })
    }
}

/// `POST /api/acls` with `{"user", "resources", "actions", "decision", "source_ips"}`: adds
/// one entry per resource.
pub(super) async fn create_acl(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<AclBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(b) = body?;
    caller.may(&c, &Resource::cluster(), Action::Create)?;
    let acl = c
        .inner
        .access
        .create_acl(Request::new(b.request(None)?))
        .await?;
    tracing::info!(by = caller.user().unwrap_or("-"), subject = %acl.subject, "console: ACL entries created");
    Ok((StatusCode::CREATED, Json(acl_json(&acl))))
}

/// `PUT /api/acls/{user}` with `{"resources", "actions", "decision", "source_ips"}`: replaces
/// the user's entries of these resources.
pub(super) async fn update_acl(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
    body: Result<Json<AclBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    caller.may(&c, &Resource::cluster(), Action::Update)?;
    if b.user.as_deref().is_some_and(|u| u != user) {
        return Err(ApiError::bad_request(
            "the user in the body differs from the one in the path",
        ));
    }
    let acl = c
        .inner
        .access
        .update_acl(Request::new(b.request(Some(&user))?))
        .await?;
    tracing::info!(by = caller.user().unwrap_or("-"), subject = %acl.subject, "console: ACL entries updated");
    Ok(Json(acl_json(&acl)))
}

/// `DELETE /api/acls/{user}` with `{"confirm": "<user>", "resources"?: [...]}`: the given
/// entries, or the user's whole ACL.
pub(super) async fn delete_acl(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
    body: Result<Json<ConfirmBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    caller.may(&c, &Resource::cluster(), Action::Delete)?;
    confirmed(b.confirm.as_deref(), &user, "deleting ACL entries")?;
    let resources = b.resources.unwrap_or_default();
    c.inner
        .access
        .delete_acl(Request::new(pb::DeleteAclRequest {
            subject: subject(&user),
            resources: resources.clone(),
        }))
        .await?;
    tracing::info!(by = caller.user().unwrap_or("-"), user = %user, entries = resources.len(), "console: ACL entries deleted");
    Ok(Json(json!({"deleted": user, "resources": resources})))
}
