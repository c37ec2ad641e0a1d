//! The Comet console: a web dashboard served by a controller node on its own HTTP listener
//! (`console.listen`, standalone default 127.0.0.1:8082): embedded pages (HTML, CSS and
//! vanilla JS modules, no build step, nothing fetched from elsewhere) over a JSON API.
//!
//! ```text
//!  browser ──HTTP──► console::http (router, assets, errors as JSON)
//!                      └► console::api  reads: this node's applied metadata, Raft metrics,
//!                         │             the proxies' client reports (clients::ClientDirectory)
//!                         │             writes: the node's ControllerService (validated, Raft)
//!                         └► console::brokers  per-queue progress, message queries, offset
//!                                              resets and dead-letter resends on the brokers'
//!                                              internal BrokerService (gRPC)
//!                         └► console::series   chart samples, taken while a page polls
//!                         └► console::users    users and ACLs through the node's access calls
//! ```
//!
//! With `auth.enabled` every `/api` call but `/api/login` and `/api/logout` needs a session
//! (`console::session`): 401 without one, 403 naming the resource and the action when the
//! user's ACL does not allow the call (super users are allowed everything).
//!
//! # Layout
//! - this file: [`ConsoleConfig`], [`Console`] (the shared state) and [`serve`].
//! - `http`: the routes and the embedded assets.
//! - `error`: [`ApiError`], every failure as a status and a sentence.
//! - `api`: the JSON endpoints, one handler per operation.
//! - `view`: metadata, clients and stored messages as the JSON the pages read.
//! - `brokers`: which broker sets hold a topic, a channel to each master, their statuses.
//! - `series`: throughput in/out, backlog and the proxies' RPC latency percentiles.
//! - `session`: logins, sessions and the `session::Caller` whose ACL each handler checks.
//! - `users`: the users and ACLs endpoints.
//!
//! # Invariants
//! - Reads come from this node's applied state, leader or not, so a follower's console keeps
//!   working; writes go through the `ControllerService` of this node and, on a follower, are
//!   refused with 503 and the leader's address.
//! - Destructive operations (delete a topic or group, reset offsets, resend a dead letter)
//!   require a `confirm` field equal to the resource's name.
//! - Bad input answers 4xx with `{"error": "<sentence>"}`; nothing is changed then.
//! - No secret and no message body reaches the logs; bodies go only to the page that asked;
//!   no answer ever holds a password, a sealed secret or a session token (the token travels
//!   only in the `Set-Cookie` header of the login).

mod api;
mod brokers;
mod error;
mod http;
mod series;
mod session;
mod users;
mod view;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access::Access;
use crate::grpc::ControllerGrpc;
use crate::raft_types::ControllerRaft;

pub use brokers::{BrokerTarget, broker_targets, check_status, query_messages};
pub use error::ApiError;

/// Settings of the console.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// A client without an open telemetry stream leaves the clients list once it was not heard
    /// from for this long (default 30 s: three missed heartbeats of the official clients).
    pub client_timeout: Duration,
    /// Charts keep one sample per this interval at most (default 2 s).
    pub sample_interval: Duration,
    /// A console login lasts this long (default 8 h), with `auth.enabled`.
    pub session_timeout: Duration,
    /// How the console dials brokers: plaintext (default) or mutual TLS (`tls.internal_*`).
    pub connector: comet_auth::Connector,
}

/// Default of [`ConsoleConfig::session_timeout`].
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(8 * 3600);

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            client_timeout: crate::clients::DEFAULT_CLIENT_TIMEOUT,
            sample_interval: Duration::from_secs(2),
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            connector: comet_auth::Connector::plaintext(),
        }
    }
}

/// The console of one controller node. Cheap to clone.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    grpc: ControllerGrpc,
    raft: ControllerRaft,
    node_id: u64,
    cfg: ConsoleConfig,
    brokers: brokers::Channels,
    series: Mutex<series::Series>,
    logins: session::Logins,
    /// The user and ACL calls, unguarded: the console checks its caller's session first.
    access: Access,
}

impl Console {
    pub(crate) fn new(
        grpc: ControllerGrpc,
        raft: ControllerRaft,
        node_id: u64,
        cfg: ConsoleConfig,
        gate: Arc<comet_auth::Gate>,
        access: Access,
    ) -> Self {
        let logins = session::Logins::new(gate, access.cipher.clone(), cfg.session_timeout);
        Console {
            inner: Arc::new(Inner {
                grpc,
                raft,
                node_id,
                brokers: brokers::Channels::new(cfg.connector.clone()),
                cfg,
                series: Mutex::new(series::Series::default()),
                logins,
                access,
            }),
        }
    }

    /// The console's routes (pages and API), for serving on any listener.
    pub fn router(&self) -> axum::Router {
        http::router(self.clone())
    }
}

/// Serves the console on `listener` until `shutdown` is cancelled (open requests finish).
///
/// # Errors
/// The listener failed.
pub async fn serve(
    console: Console,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // The peer address feeds the source-address conditions of ACL entries.
    axum::serve(
        listener,
        console
            .router()
            .into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}
