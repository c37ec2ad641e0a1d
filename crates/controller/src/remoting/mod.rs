//! The NameServer-compatible endpoint: RocketMQ's remoting TCP protocol on the
//! controller (default port 9876), so that 4.x clients, `mqadmin`-style tools
//! and dashboards can read routes, and 4.x-style brokers can register.
//!
//! - [`codec`]: frames and command headers (JSON and ROCKETMQ binary), pure.
//! - [`route_data`]: `TopicRouteData`, `ClusterInfo` and `TopicList` derived
//!   from the metadata, written in fastjson's legacy form or standard JSON.
//! - [`server`]: [`RemotingServer`], the TCP listener and request handling.
//! - [`client`]: [`client::RemotingClient`], a small client (admin, bench, tests).
//!
//! # What is answered
//!
//! | code | request | answer |
//! |---|---|---|
//! | 105 | GET_ROUTEINFO_BY_TOPIC | `TopicRouteData`, or TOPIC_NOT_EXIST |
//! | 106 | GET_BROKER_CLUSTER_INFO | `ClusterInfo` |
//! | 206 | GET_ALL_TOPIC_LIST_FROM_NAMESERVER | `{"topicList":[...]}` |
//! | 103 | REGISTER_BROKER | the broker joins its broker set (through Raft) with a lease |
//! | 104 | UNREGISTER_BROKER | the broker leaves the routes at once |
//! | 904 | BROKER_HEARTBEAT | renews the lease |
//! | other | | REQUEST_CODE_NOT_SUPPORTED with a remark |
//!
//! Reads are served by every node from its applied state (a follower may
//! trail the leader by the replication delay); writes need the Raft leader,
//! and a follower answers them with SYSTEM_ERROR naming the leader. 4.x
//! brokers register with every NameServer they are given, so give them every
//! controller's remoting address.
//!
//! # Invariants
//!
//! - Every reply uses the header encoding of its request and echoes its
//!   `opaque`; one-way requests get none.
//! - A malformed, truncated or oversized (> 16 MiB) frame closes that
//!   connection only; nothing else is affected.
//! - A connection holds at most [`server::MAX_IN_FLIGHT`] requests in
//!   progress; beyond that it is not read until replies went out.

pub mod client;
pub mod codec;
pub mod route_data;
pub mod server;

pub use codec::{LanguageCode, RemotingCommand, SerializeType};
pub use server::RemotingServer;

/// Request codes this endpoint answers (`RequestCode`).
pub mod request_code {
    /// REGISTER_BROKER.
    pub const REGISTER_BROKER: i32 = 103;
    /// UNREGISTER_BROKER.
    pub const UNREGISTER_BROKER: i32 = 104;
    /// GET_ROUTEINFO_BY_TOPIC.
    pub const GET_ROUTEINFO_BY_TOPIC: i32 = 105;
    /// GET_BROKER_CLUSTER_INFO.
    pub const GET_BROKER_CLUSTER_INFO: i32 = 106;
    /// GET_ALL_TOPIC_LIST_FROM_NAMESERVER.
    pub const GET_ALL_TOPIC_LIST_FROM_NAMESERVER: i32 = 206;
    /// BROKER_HEARTBEAT.
    pub const BROKER_HEARTBEAT: i32 = 904;
}

/// Response codes (`ResponseCode`).
pub mod response_code {
    /// SUCCESS.
    pub const SUCCESS: i32 = 0;
    /// SYSTEM_ERROR.
    pub const SYSTEM_ERROR: i32 = 1;
    /// SYSTEM_BUSY.
    pub const SYSTEM_BUSY: i32 = 2;
    /// REQUEST_CODE_NOT_SUPPORTED.
    pub const REQUEST_CODE_NOT_SUPPORTED: i32 = 3;
    /// TOPIC_NOT_EXIST.
    pub const TOPIC_NOT_EXIST: i32 = 17;
}
