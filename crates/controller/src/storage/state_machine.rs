//! [`FileStateMachine`]: the metadata state machine with persisted snapshots
//! (openraft storage-v2 [`RaftStateMachine`]).
//!
//! The state is small, so it lives in memory and a snapshot is the whole
//! [`MetadataState`] as JSON. `apply` does not write to disk: after a restart
//! the state is rebuilt from the last snapshot (`snapshot.json`, replaced
//! atomically and durably) and openraft re-applies the committed log after it.
//!
//! After every applied batch, installed snapshot and at open, the current
//! [`ClusterMetadata`] (revision = last applied log index) is published on a
//! `tokio::sync::watch` channel.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use comet_proto::comet::v1::ClusterMetadata;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::fs_util::{atomic_write, read_optional};
use crate::error::ControllerError;
use crate::metadata::{CommandResponse, MetadataState};
use crate::raft_types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const SNAPSHOT_FILE: &str = "snapshot.json";

/// The persisted form of a snapshot.
#[derive(Serialize, Deserialize)]
struct PersistedSnapshot {
    meta: SnapshotMeta,
    state: MetadataState,
}

/// Shared by the state machine and its snapshot builders.
struct SnapshotStore {
    path: PathBuf,
    /// Serializes snapshot file replacement.
    lock: tokio::sync::Mutex<()>,
}

impl SnapshotStore {
    /// Persists `snap` unless the stored snapshot is at least as new.
    async fn save(&self, snap: &PersistedSnapshot, force: bool) -> Result<(), StorageError> {
        let _guard = self.lock.lock().await;
        let path = self.path.clone();
        let bytes = serde_json::to_vec(snap)
            .map_err(|e| StorageIOError::write_snapshot(Some(snap.meta.signature()), &e))?;
        let new_last = snap.meta.last_log_id;
        let signature = snap.meta.signature();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if !force
                && let Some(existing) = read_optional(&path)?
                && let Ok(old) = serde_json::from_slice::<PersistedSnapshot>(&existing)
                && old.meta.last_log_id >= new_last
            {
                return Ok(());
            }
            atomic_write(&path, &bytes, true)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(signature.clone()), &e))?
        .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e))?;
        Ok(())
    }

    async fn load(&self) -> Result<Option<PersistedSnapshot>, StorageError> {
        let _guard = self.lock.lock().await;
        let path = self.path.clone();
        let bytes = tokio::task::spawn_blocking(move || read_optional(&path))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        match bytes {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StorageIOError::read_snapshot(None, &e).into()),
        }
    }
}

/// The metadata state machine.
pub struct FileStateMachine {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: MetadataState,
    snapshots: Arc<SnapshotStore>,
    publisher: Arc<watch::Sender<Arc<ClusterMetadata>>>,
    cluster_name: Arc<str>,
    snapshot_seq: u64,
}

/// Builds a snapshot from a copy of the state taken when it was requested.
pub struct MetadataSnapshotBuilder {
    snapshot: PersistedSnapshot,
    snapshots: Arc<SnapshotStore>,
}

impl FileStateMachine {
    /// Opens the state machine under `dir`, loading the persisted snapshot if
    /// any, and returns the metadata receiver that follows every change.
    pub fn open(
        dir: &Path,
        cluster_name: &str,
    ) -> Result<(FileStateMachine, watch::Receiver<Arc<ClusterMetadata>>), ControllerError> {
        std::fs::create_dir_all(dir).map_err(|source| ControllerError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(SNAPSHOT_FILE);
        let loaded = match read_optional(&path).map_err(|source| ControllerError::Io {
            path: path.clone(),
            source,
        })? {
            None => None,
            Some(b) => Some(
                serde_json::from_slice::<PersistedSnapshot>(&b).map_err(|e| {
                    ControllerError::Corrupt {
                        path: path.clone(),
                        reason: format!("unreadable snapshot: {e}"),
                    }
                })?,
            ),
        };
        let (last_applied, membership, state) = match loaded {
            Some(s) => (s.meta.last_log_id, s.meta.last_membership, s.state),
            None => (None, StoredMembership::default(), MetadataState::default()),
        };
        let cluster_name: Arc<str> = Arc::from(cluster_name);
        let initial = Arc::new(state.to_proto(last_applied.map_or(0, |l| l.index), &cluster_name));
        let (tx, rx) = watch::channel(initial);
        tracing::info!(
            snapshot = ?last_applied,
            topics = state.topics.len(),
            groups = state.groups.len(),
            broker_sets = state.broker_sets.len(),
            "metadata state machine opened"
        );
        Ok((
            FileStateMachine {
                last_applied,
                membership,
                state,
                snapshots: Arc::new(SnapshotStore {
                    path,
                    lock: tokio::sync::Mutex::new(()),
                }),
                publisher: Arc::new(tx),
                cluster_name,
                snapshot_seq: 0,
            },
            rx,
        ))
    }

    fn publish(&self) {
        let revision = self.last_applied.map_or(0, |l| l.index);
        self.publisher
            .send_replace(Arc::new(self.state.to_proto(revision, &self.cluster_name)));
    }

    fn persisted(&mut self) -> PersistedSnapshot {
        self.snapshot_seq += 1;
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.snapshot_seq),
            None => format!("none-{}", self.snapshot_seq),
        };
        PersistedSnapshot {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
            state: self.state.clone(),
        }
    }
}

// openraft's trait methods return its (large) StorageError; this helper feeds them.
#[allow(clippy::result_large_err)]
fn to_snapshot(p: &PersistedSnapshot) -> Result<Snapshot<TypeConfig>, StorageError> {
    let data = serde_json::to_vec(&p.state)
        .map_err(|e| StorageIOError::read_snapshot(Some(p.meta.signature()), &e))?;
    Ok(Snapshot {
        meta: p.meta.clone(),
        snapshot: Box::new(Cursor::new(data)),
    })
}

impl RaftSnapshotBuilder<TypeConfig> for MetadataSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.snapshots.save(&self.snapshot, false).await?;
        tracing::info!(
            last_log_id = ?self.snapshot.meta.last_log_id,
            snapshot_id = %self.snapshot.meta.snapshot_id,
            "metadata snapshot built"
        );
        to_snapshot(&self.snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for FileStateMachine {
    type SnapshotBuilder = MetadataSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let resp = match entry.payload {
                EntryPayload::Blank => CommandResponse::Empty,
                EntryPayload::Normal(cmd) => {
                    let resp = self.state.apply(&cmd);
                    if let CommandResponse::Rejected(e) = &resp {
                        tracing::debug!(index = entry.log_id.index, error = %e, "command rejected");
                    }
                    resp
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    CommandResponse::Empty
                }
            };
            out.push(resp);
        }
        if !out.is_empty() {
            self.publish();
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        MetadataSnapshotBuilder {
            snapshot: self.persisted(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state: MetadataState = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let persisted = PersistedSnapshot {
            meta: meta.clone(),
            state,
        };
        self.snapshots.save(&persisted, true).await?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.state = persisted.state;
        self.publish();
        tracing::info!(last_log_id = ?meta.last_log_id, "metadata snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        match self.snapshots.load().await? {
            None => Ok(None),
            Some(p) => to_snapshot(&p).map(Some),
        }
    }
}
