//! The openraft type configuration of the controller.

use std::io::Cursor;

use crate::metadata::{Command, CommandResponse};

openraft::declare_raft_types!(
    /// Controller Raft types: [`Command`] entries, [`CommandResponse`] results,
    /// `u64` node ids, [`openraft::BasicNode`] whose `addr` is the node's
    /// advertised controller gRPC address, and in-memory snapshot bytes.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A Raft node id.
pub type NodeId = u64;
/// The controller's Raft handle.
pub type ControllerRaft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// A storage error.
pub type StorageError = openraft::StorageError<NodeId>;
/// Membership as stored.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
