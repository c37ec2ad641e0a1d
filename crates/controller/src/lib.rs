//! The Comet controller: cluster metadata (topics, groups, broker sets and
//! their members) in an openraft state machine, served over the internal
//! `comet.v1.ControllerService` gRPC API.
//!
//! One [`Controller`] is one Raft node. `comet standalone` runs a single node
//! (it initializes itself on first start); a cluster runs 3 or 5, given the
//! same [`ControllerConfig::peers`] on first start.
//!
//! # Layout
//!
//! - [`metadata`]: the pure state machine ([`metadata::MetadataState`],
//!   [`metadata::Command`]) and input validation ([`metadata::validation`]).
//! - [`storage`]: openraft storage-v2 on disk: the framed, fsync'd log and
//!   vote ([`storage::log_store`]), persisted snapshots
//!   ([`storage::state_machine`]), the data-dir lock.
//! - [`network`]: Raft transport over gRPC (`comet.v1.RaftService`).
//! - [`grpc`]: [`ControllerGrpc`], the `ControllerService` implementation.
//! - [`admin`]: [`admin::ControllerAdminGrpc`], the `ControllerAdminService`
//!   (Raft membership: describe, add and remove controller nodes; users and ACLs).
//! - [`access`]: users and ACLs (sealed secrets, the bootstrap admin user), the gate kept in
//!   step with the metadata; [`guard`]: the check of admin calls when `auth` is enabled.
//! - [`clients`]: [`clients::ClientDirectory`], the clients every proxy reports
//!   (`ReportClients`), in memory only.
//! - [`console`]: the web console (HTTP: embedded pages and a JSON API) over this node's
//!   applied metadata, the client directory and the brokers' internal API.
//! - [`lease`]: broker leases kept in memory on the leader; its checker also runs elections.
//! - [`election`]: master election for broker sets, a pure function of the metadata.
//! - [`raft_types`]: the openraft type configuration.
//! - `metrics`: Raft, topic/group and broker-set gauges, observed at collection time.
//! - [`remoting`]: the NameServer-compatible remoting endpoint (RocketMQ's TCP
//!   protocol): route tables for 4.x clients and tools, 4.x broker
//!   registration.
//! - [`server`]: [`ControllerServer`] (a node serving its gRPC services and the
//!   remoting endpoint from start to an ordered stop) and [`serve`].
//! - `fuzzing` (tests and the `fuzzing` feature only): fuzz entry points for every decoder.
//!
//! # Data directory
//!
//! ```text
//! <data_dir>/LOCK                  exclusive lock: one controller per directory
//! <data_dir>/raft/log/*.log        log segments (len + CRC32C framed JSON entries)
//! <data_dir>/raft/vote.json        vote (atomic, durable)
//! <data_dir>/raft/purged.json      last purged log id (atomic, durable)
//! <data_dir>/raft/committed.json   last committed log id (atomic, best effort)
//! <data_dir>/state/snapshot.json   last snapshot: the whole state as JSON
//! ```
//!
//! # Invariants
//!
//! - Every metadata change is a Raft log entry; `ClusterMetadata.revision` is
//!   the index of the last applied entry, so it only grows.
//! - An append is acknowledged to Raft only after fsync; a write RPC returns
//!   only after its entry is committed and applied.
//! - Broker heartbeats write nothing: leases live in the leader's memory and
//!   only liveness transitions are logged (see [`lease`]).
//! - Applying an entry is deterministic and never re-runs input validation.
//!
//! # Lifecycle and wiring
//!
//! One idiom, shared by every Comet server crate: a `CancellationToken` says
//! "stop" and a `TaskTracker` holds every spawned task (here: the lease
//! checker, the gRPC and remoting servers, remoting connections); draining is
//! cancel, close the tracker, wait.
//!
//! ```text
//! serve(cfg, ControllerListeners { grpc, remoting }, shutdown).await?;
//! // or, to reach the node while it runs (in-process users: metadata(), service()):
//! let node = ControllerServer::start(cfg, listeners, shutdown).await?;
//! node.controller().metadata();
//! node.wait().await?;   // after cancel: Controller::shutdown ends WatchMetadata
//!                       // streams and stops Raft, then the servers finish draining
//! ```
//!
//! Dependency rule: controller → proto only; never broker, proxy or store.
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod clients;
pub mod console;
pub mod election;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod guard;
pub mod lease;
pub mod metadata;
mod metrics;
pub mod network;
pub mod raft_types;
pub mod remoting;
pub mod server;
pub mod storage;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use comet_proto::comet::v1::ClusterMetadata;
use comet_proto::comet::v1::controller_admin_service_server::ControllerAdminServiceServer;
use comet_proto::comet::v1::controller_service_server::ControllerServiceServer;
use comet_proto::comet::v1::raft_service_server::RaftServiceServer;
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, SnapshotPolicy};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

pub use error::{ControllerError, Result};
pub use grpc::{ControllerGrpc, LEADER_METADATA_KEY};
pub use server::{ControllerListeners, ControllerServer, serve};

use lease::LeaseTable;
use network::{GrpcNetworkFactory, MAX_RAFT_MESSAGE_BYTES, RaftGrpc};
use raft_types::{ControllerRaft, NodeId};
use storage::fs_util::DirLock;
use storage::log_store::{FileLogStore, LogIoHandle};
use storage::state_machine::FileStateMachine;

/// Log entries between snapshots.
const SNAPSHOT_EVERY_LOGS: u64 = 2000;
/// How long shutdown waits for the log I/O thread to finish.
const SHUTDOWN_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Configuration of one controller node.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// This node's Raft id (default 1).
    pub node_id: u64,
    /// Where the Raft log, vote and snapshots live.
    pub data_dir: PathBuf,
    /// The cluster name reported in `ClusterMetadata` (default "DefaultCluster").
    pub cluster_name: String,
    /// host:port of this node's controller gRPC, as peers and clients reach it.
    /// Recorded in the Raft membership when the cluster is initialized; a
    /// later change takes a membership change (not automatic on restart).
    pub advertised_addr: String,
    /// A broker without a heartbeat for this long is marked `alive = false`, and a master
    /// that lapsed is replaced (default 3 s; brokers heartbeat every third of it).
    pub broker_lease: Duration,
    /// Leader heartbeat period (default 100 ms).
    pub heartbeat_interval: Duration,
    /// Lower bound of the election timeout (default 500 ms).
    ///
    /// A follower that has seen a leader starts an election after
    /// `election_timeout_max` (openraft's leader lease, during which it also
    /// refuses to vote) plus a random timeout in `[min, max)`: with the
    /// defaults a dead leader is replaced after 1.5..2 s plus one vote round.
    pub election_timeout_min: Duration,
    /// Upper bound of the election timeout (default 1 s).
    pub election_timeout_max: Duration,
    /// Initial members `(node id, advertised address)` of a fresh multi-node
    /// cluster; empty means a single-node cluster of just this node. Used
    /// only on the first start (an empty data directory); this node is added
    /// if missing.
    pub peers: Vec<(u64, String)>,
    /// Start without initializing a cluster on an empty data directory: the
    /// node waits to be added to an existing cluster (`AddController`).
    /// Excludes `peers`.
    pub join: bool,
    /// Allow electing a master from outside the sync-state set when no in-sync replica is
    /// alive (default false): the set gets a master again, but messages that only the lost
    /// in-sync members held are gone.
    pub enable_unclean_election: bool,
    /// The local IP address this node's outgoing Raft connections to its peers bind to
    /// (default `None`: the operating system picks it). On a host with several addresses it
    /// pins the address peers and firewalls see this node's Raft traffic come from.
    pub raft_source_ip: Option<std::net::IpAddr>,
    /// Where the controller server records its metrics and reports readiness (default:
    /// nowhere).
    pub observer: comet_observe::Observer,
    /// Users, ACLs and the authentication of admin calls (default: off, no cluster key).
    pub auth: access::ControllerAuth,
    /// How this node dials its Raft peers: plaintext (default) or mutual TLS against the
    /// cluster CA (`tls.internal_*`; the listener's side is the caller's incoming stream).
    pub connector: comet_auth::Connector,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            node_id: 1,
            data_dir: PathBuf::from("data/controller"),
            cluster_name: "DefaultCluster".to_owned(),
            advertised_addr: "127.0.0.1:9878".to_owned(),
            broker_lease: Duration::from_secs(3),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(500),
            election_timeout_max: Duration::from_secs(1),
            peers: Vec::new(),
            join: false,
            enable_unclean_election: false,
            raft_source_ip: None,
            observer: comet_observe::Observer::default(),
            auth: access::ControllerAuth::default(),
            connector: comet_auth::Connector::plaintext(),
        }
    }
}

fn config_err(key: &'static str, reason: impl Into<String>) -> ControllerError {
    ControllerError::Config {
        key,
        reason: reason.into(),
    }
}

fn millis(key: &'static str, d: Duration) -> Result<u64> {
    let ms = u64::try_from(d.as_millis()).map_err(|_| config_err(key, "too large"))?;
    if ms == 0 {
        return Err(config_err(key, "must be at least 1 ms"));
    }
    Ok(ms)
}

impl ControllerConfig {
    /// Checks every value; errors name the key and the allowed range.
    pub fn validate(&self) -> Result<()> {
        if self.cluster_name.is_empty() {
            return Err(config_err("cluster_name", "must not be empty"));
        }
        validate_addr("advertised_addr", &self.advertised_addr)?;
        if self.broker_lease < Duration::from_millis(10) {
            return Err(config_err("broker_lease", "must be at least 10 ms"));
        }
        let hb = millis("heartbeat_interval", self.heartbeat_interval)?;
        let min = millis("election_timeout_min", self.election_timeout_min)?;
        let max = millis("election_timeout_max", self.election_timeout_max)?;
        if min <= hb {
            return Err(config_err(
                "election_timeout_min",
                format!("must be greater than heartbeat_interval ({hb} ms), got {min} ms"),
            ));
        }
        if max <= min {
            return Err(config_err(
                "election_timeout_max",
                format!("must be greater than election_timeout_min ({min} ms), got {max} ms"),
            ));
        }
        if self.join && !self.peers.is_empty() {
            return Err(config_err(
                "join",
                "a joining node gets its members from the cluster it joins; leave `peers` empty",
            ));
        }
        let mut ids = std::collections::BTreeSet::new();
        for (id, addr) in &self.peers {
            if !ids.insert(*id) {
                return Err(config_err("peers", format!("node id {id} appears twice")));
            }
            validate_addr("peers", addr)?;
        }
        Ok(())
    }

    /// The initial voters: `peers` plus this node, or just this node.
    fn initial_members(&self) -> BTreeMap<NodeId, BasicNode> {
        let mut members: BTreeMap<NodeId, BasicNode> = self
            .peers
            .iter()
            .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
            .collect();
        members.entry(self.node_id).or_insert_with(|| BasicNode {
            addr: self.advertised_addr.clone(),
        });
        members
    }
}

fn validate_addr(key: &'static str, addr: &str) -> Result<()> {
    metadata::validation::validate_address(addr).map_err(|e| config_err(key, e.to_string()))
}

/// A running controller node.
pub struct Controller {
    raft: ControllerRaft,
    grpc: ControllerGrpc,
    metadata: watch::Receiver<Arc<ClusterMetadata>>,
    /// Cancelled at shutdown, or when the controller is dropped: ends the lease checker and
    /// open `WatchMetadata` streams.
    stop: DropGuard,
    /// Every task the controller spawned (the lease checker).
    tasks: TaskTracker,
    lease_task: tokio::task::JoinHandle<()>,
    log_io: LogIoHandle,
    lock: DirLock,
    node_id: NodeId,
    /// Authentication and authorization of admin calls, kept in step with the metadata.
    access: access::Access,
}

impl Controller {
    /// Opens the data directory (recovering the log and snapshot), starts Raft
    /// and, on a fresh directory, initializes the cluster membership.
    pub async fn start(cfg: ControllerConfig) -> Result<Controller> {
        cfg.validate()?;
        let bootstrap_user = match &cfg.auth.bootstrap {
            None => None,
            Some((name, password)) => {
                let cipher = cfg.auth.cipher.as_deref().ok_or_else(|| {
                    config_err(
                        "auth.bootstrap_username",
                        "needs a cluster key (auth.cluster_key or auth.cluster_key_file) to seal the password",
                    )
                })?;
                Some(
                    access::bootstrap_record(cipher, name, password)
                        .map_err(|e| config_err("auth.bootstrap_username", e))?,
                )
            }
        };
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| ControllerError::Io {
            path: cfg.data_dir.clone(),
            source,
        })?;
        let lock = DirLock::acquire(&cfg.data_dir)?;
        let (log, log_io) = FileLogStore::open(&cfg.data_dir.join("raft"))?;
        let (sm, metadata) =
            FileStateMachine::open(&cfg.data_dir.join("state"), &cfg.cluster_name)?;

        let raft_config = openraft::Config {
            cluster_name: cfg.cluster_name.clone(),
            heartbeat_interval: millis("heartbeat_interval", cfg.heartbeat_interval)?,
            election_timeout_min: millis("election_timeout_min", cfg.election_timeout_min)?,
            election_timeout_max: millis("election_timeout_max", cfg.election_timeout_max)?,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_LOGS),
            ..Default::default()
        }
        .validate()
        .map_err(|e| config_err("raft timings", e.to_string()))?;

        let raft = openraft::Raft::new(
            cfg.node_id,
            Arc::new(raft_config),
            GrpcNetworkFactory::new(cfg.node_id, cfg.raft_source_ip, cfg.connector.clone()),
            log,
            sm,
        )
        .await
        .map_err(|e| ControllerError::Raft(format!("start: {e}")))?;

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ControllerError::Raft(e.to_string()))?;
        if initialized {
            if !cfg.peers.is_empty() {
                tracing::info!("data directory already holds a cluster; ignoring `peers`");
            }
        } else if cfg.join {
            tracing::info!(
                node_id = cfg.node_id,
                advertised_addr = %cfg.advertised_addr,
                "waiting to be added to an existing controller cluster"
            );
        } else {
            let members = cfg.initial_members();
            tracing::info!(node_id = cfg.node_id, members = ?members, "initializing a new controller cluster");
            match raft.initialize(members).await {
                Ok(()) => {}
                Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
                    tracing::info!(reason = %e, "cluster already initialized by a peer");
                }
                Err(e) => {
                    let _ = raft.shutdown().await;
                    return Err(ControllerError::Raft(format!("initialize: {e}")));
                }
            }
        }

        let leases = Arc::new(LeaseTable::new(cfg.broker_lease));
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let lease_task = tasks.spawn(lease::run_lease_checker(
            raft.clone(),
            cfg.node_id,
            leases.clone(),
            metadata.clone(),
            stop.clone(),
            cfg.enable_unclean_election,
        ));
        let gate = Arc::new(comet_auth::Gate::new(cfg.auth.settings));
        tasks.spawn(access::keep_gate(
            gate.clone(),
            metadata.clone(),
            cfg.auth.cipher.clone(),
            stop.clone(),
        ));
        if let Some(user) = bootstrap_user {
            tasks.spawn(access::bootstrap(
                raft.clone(),
                metadata.clone(),
                user,
                stop.clone(),
            ));
        }
        tasks.close();
        let grpc = ControllerGrpc::new(
            raft.clone(),
            cfg.node_id,
            metadata.clone(),
            leases,
            stop.clone(),
            cfg.enable_unclean_election,
        );
        let access = access::Access {
            grpc: grpc.clone(),
            cipher: cfg.auth.cipher.clone(),
            guard: guard::Guard::new(gate),
        };
        tracing::info!(
            node_id = cfg.node_id,
            data_dir = %cfg.data_dir.display(),
            advertised_addr = %cfg.advertised_addr,
            "controller started"
        );
        Ok(Controller {
            raft,
            grpc,
            metadata,
            stop: stop.drop_guard(),
            tasks,
            lease_task,
            log_io,
            lock,
            node_id: cfg.node_id,
            access,
        })
    }

    /// The NameServer-compatible remoting endpoint of this node; serve it
    /// with [`remoting::RemotingServer::serve`] on the remoting listener.
    pub fn remoting(&self) -> remoting::RemotingServer {
        remoting::RemotingServer::new(self.grpc.clone())
    }

    /// The `ControllerService` implementation of this node.
    pub fn service(&self) -> ControllerGrpc {
        self.grpc.clone()
    }

    /// The web console of this node (serve it with [`console::serve`]).
    pub fn console(&self, cfg: console::ConsoleConfig) -> console::Console {
        // The console authenticates its callers by session and checks their ACL itself, so
        // the access calls it makes go through an open guard.
        let open = guard::Guard::new(Arc::new(comet_auth::Gate::new(
            comet_auth::GateSettings::default(),
        )));
        let access = access::Access {
            grpc: self.grpc.clone(),
            cipher: self.access.cipher.clone(),
            guard: open,
        };
        console::Console::new(
            self.grpc.clone(),
            self.raft.clone(),
            self.node_id,
            cfg,
            self.access.guard.gate().clone(),
            access,
        )
    }

    /// The `ControllerAdminService` (Raft membership) of this node.
    pub fn admin_service(&self) -> admin::ControllerAdminGrpc {
        admin::ControllerAdminGrpc::new(self.raft.clone(), self.access.clone())
    }

    /// All gRPC services this node serves: `ControllerService`,
    /// `ControllerAdminService` and the Raft transport `RaftService`. Serve
    /// them on `advertised_addr`.
    pub fn routes(&self) -> tonic::service::Routes {
        tonic::service::Routes::new(ControllerServiceServer::new(
            self.grpc.guarded(self.access.guard.clone()),
        ))
        .add_service(ControllerAdminServiceServer::new(self.admin_service()))
        .add_service(
            RaftServiceServer::new(RaftGrpc::new(self.raft.clone()))
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES),
        )
    }

    /// The applied metadata of this node, updated after every applied change.
    pub fn metadata(&self) -> watch::Receiver<Arc<ClusterMetadata>> {
        self.metadata.clone()
    }

    /// The underlying Raft handle (metrics, membership administration).
    pub fn raft(&self) -> &openraft::Raft<raft_types::TypeConfig> {
        &self.raft
    }

    /// This node's Raft id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Ends open `WatchMetadata` streams, stops the lease checker and Raft,
    /// then waits for the log's I/O thread to finish; every acknowledged write
    /// is on disk when this returns. Requests still arriving get UNAVAILABLE.
    pub async fn shutdown(self) -> Result<()> {
        let Controller {
            raft,
            grpc,
            metadata,
            stop,
            tasks,
            lease_task,
            log_io,
            lock,
            node_id,
            access: _,
        } = self;
        drop(stop);
        lease_task
            .await
            .map_err(|e| ControllerError::Task(format!("lease checker: {e}")))?;
        tasks.wait().await;
        raft.shutdown()
            .await
            .map_err(|e| ControllerError::Task(format!("raft: {e}")))?;
        drop(grpc);
        drop(metadata);
        let joined = tokio::time::timeout(
            SHUTDOWN_IO_TIMEOUT,
            tokio::task::spawn_blocking(move || log_io.join()),
        )
        .await;
        match joined {
            Ok(Ok(result)) => result?,
            Ok(Err(e)) => return Err(ControllerError::Task(format!("log I/O join: {e}"))),
            Err(_) => {
                return Err(ControllerError::Task(format!(
                    "the raft log I/O thread did not stop within {SHUTDOWN_IO_TIMEOUT:?}"
                )));
            }
        }
        tracing::info!(node_id, lock = %lock.path().display(), "controller shutdown complete");
        drop(lock);
        Ok(())
    }
}
