//! The console's HTTP face: the routes, the embedded assets, and [`ApiError`] (every failure
//! answered as `{"error": "<sentence>", "leader": "<addr>"?}` with a fitting status).

use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::{Console, api};
use crate::grpc::LEADER_METADATA_KEY;

/// A console request that failed: the HTTP status and a sentence for the operator.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The HTTP status answered.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
    /// The controller leader's address, when this node is not the leader.
    pub leader: Option<String>,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            leader: None,
        }
    }

    /// 400: the request is malformed or out of range.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<tonic::Status> for ApiError {
    /// A controller status: its code mapped to HTTP, its message kept, the leader's address
    /// (on a follower) carried along.
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let status = match s.code() {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let leader = s
            .metadata()
            .get(LEADER_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        ApiError {
            status,
            message: s.message().to_owned(),
            leader,
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::new(
            r.status(),
            format!(
                "the request body is not the JSON expected: {}",
                r.body_text()
            ),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(format!("bad query parameters: {}", r.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match &self.leader {
            Some(l) => json!({"error": self.message, "leader": l}),
            None => json!({"error": self.message}),
        };
        (self.status, axum::Json(body)).into_response()
    }
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const STYLE_CSS: &str = include_str!("assets/style.css");
const APP_JS: &str = include_str!("assets/app.js");
const CHART_JS: &str = include_str!("assets/chart.js");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such console page or API endpoint")
}

/// Every route of the console.
pub(super) fn router(console: Console) -> Router {
    let api = Router::new()
        .route("/overview", get(api::overview))
        .route("/topics", get(api::list_topics).post(api::create_topic))
        .route(
            "/topics/{name}",
            get(api::topic_route)
                .put(api::update_topic)
                .delete(api::delete_topic),
        )
        .route("/groups", get(api::list_groups).post(api::create_group))
        .route(
            "/groups/{name}",
            get(api::group_progress)
                .put(api::update_group)
                .delete(api::delete_group),
        )
        .route("/groups/{name}/reset-offset", post(api::reset_offset))
        .route("/clients", get(api::list_clients))
        .route("/messages", get(api::query_messages))
        .route("/dead-letters/resend", post(api::resend_dead_letter))
        .route("/series", get(api::series))
        .fallback(not_found)
        .with_state(console);
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/assets/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/chart.js",
            get(|| async { asset("text/javascript; charset=utf-8", CHART_JS) }),
        )
        .nest("/api", api)
        .fallback(not_found)
}
