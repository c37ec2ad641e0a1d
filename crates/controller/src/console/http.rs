//! The console's HTTP face: the routes and the embedded assets. `/api/login` and
//! `/api/logout` are open; every other `/api` path (unknown ones included) passes
//! `session::require_caller` first.

use axum::Router;
use axum::http::header;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::error::ApiError;
use super::{Console, api, session, users};

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
    let open = Router::new()
        .route("/login", post(users::login))
        .route("/logout", post(users::logout));
    let guarded = Router::new()
        .route("/session", get(users::session))
        .route("/users", get(users::list_users).post(users::create_user))
        .route(
            "/users/{name}",
            axum::routing::put(users::update_user).delete(users::delete_user),
        )
        .route("/acls", get(users::list_acls).post(users::create_acl))
        .route(
            "/acls/{user}",
            axum::routing::put(users::update_acl).delete(users::delete_acl),
        )
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
        .layer(from_fn_with_state(console.clone(), session::require_caller));
    let api = open.merge(guarded).with_state(console);
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
