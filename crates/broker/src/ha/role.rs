//! Pure decisions of a replicated broker: which role the metadata gives it, and how a replica
//! starts following a master (follow, cut a divergent tail, or start over).

use comet_proto::comet::v1::ClusterMetadata;
use comet_store::{EpochEntry, consistent_point};

/// The role the cluster metadata gives a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// The set's master at `epoch`.
    Master {
        epoch: u64,
        /// The committed sync-state set.
        sync_state_set: Vec<u64>,
    },
    /// A replica of the master `master_id` at `address`, elected at `epoch`.
    Replica {
        master_id: u64,
        address: String,
        epoch: u64,
    },
    /// The set has no master (never elected, or the master's member record is gone): serve
    /// reads, write nothing, follow nobody.
    Waiting,
}

/// The role of broker `me` of `broker_set` in `meta`. A replica keeps following a master whose
/// lease lapsed until another is elected (the old one stops writing on its own).
pub(crate) fn decide_role(meta: &ClusterMetadata, broker_set: &str, me: u64) -> Role {
    let Some(set) = meta.broker_sets.iter().find(|s| s.name == broker_set) else {
        return Role::Waiting;
    };
    if set.master_epoch == 0 {
        return Role::Waiting;
    }
    if set.master_broker_id == me {
        return Role::Master {
            epoch: set.master_epoch,
            sync_state_set: set.sync_state_set.clone(),
        };
    }
    match set
        .members
        .iter()
        .find(|m| m.broker_id == set.master_broker_id && !m.address.is_empty())
    {
        Some(m) => Role::Replica {
            master_id: m.broker_id,
            address: m.address.clone(),
            epoch: set.master_epoch,
        },
        None => Role::Waiting,
    }
}

/// How a replica starts following, after comparing its log with the master's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartAction {
    /// Stream from this offset (the replica's end).
    Follow(i64),
    /// Cut the log to this offset first (a divergent tail), then follow.
    Truncate(i64),
    /// Delete the log and start empty at this offset (the master's first offset).
    Wipe(i64),
}

/// One side of the comparison.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogShape<'a> {
    pub epochs: &'a [EpochEntry],
    pub min: i64,
    pub end: i64,
}

/// What a replica with log `local` does to follow a master with log `remote`.
///
/// The consistent point (see [`comet_store::epoch`]) is where the two logs stop agreeing. A
/// replica at the point follows; beyond it, it cuts back to it. When nothing is shared, the
/// point lies outside what either side still stores, or the master no longer stores what the
/// replica needs next, the replica starts over at the master's first offset.
pub(crate) fn start_action(local: LogShape<'_>, remote: LogShape<'_>) -> StartAction {
    let wipe = StartAction::Wipe(remote.min);
    let empty = local.end == local.min;
    match consistent_point(local.epochs, local.end, remote.epochs, remote.end) {
        Some(p) if p < local.min || p < remote.min => wipe,
        Some(p) if p < local.end => StartAction::Truncate(p),
        Some(p) => StartAction::Follow(p),
        // An empty log continues where the master's starts, or where it ends when the
        // master holds nothing yet.
        None if empty
            && (local.end == remote.min
                || (local.end == remote.end && remote.min == remote.end)) =>
        {
            StartAction::Follow(local.end)
        }
        None => wipe,
    }
}

#[cfg(test)]
mod tests {
    use comet_proto::comet::v1::{BrokerMember, BrokerSet};

    use super::*;

    fn meta(epoch: u64, master: u64, members: &[u64]) -> ClusterMetadata {
        ClusterMetadata {
            broker_sets: vec![BrokerSet {
                name: "a".into(),
                members: members
                    .iter()
                    .map(|&id| BrokerMember {
                        broker_set: "a".into(),
                        broker_id: id,
                        address: format!("h:{id}"),
                        alive: true,
                        last_heartbeat_ms: 0,
                    })
                    .collect(),
                master_broker_id: master,
                master_epoch: epoch,
                sync_state_set: vec![master],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn role_table() {
        let cases = [
            (meta(0, 0, &[0, 1]), 1, Role::Waiting),
            (
                meta(3, 0, &[0, 1]),
                0,
                Role::Master {
                    epoch: 3,
                    sync_state_set: vec![0],
                },
            ),
            (
                meta(3, 0, &[0, 1]),
                1,
                Role::Replica {
                    master_id: 0,
                    address: "h:0".into(),
                    epoch: 3,
                },
            ),
            (meta(3, 7, &[0, 1]), 1, Role::Waiting),
            (ClusterMetadata::default(), 1, Role::Waiting),
        ];
        for (i, (m, me, want)) in cases.into_iter().enumerate() {
            assert_eq!(decide_role(&m, "a", me), want, "case {i}");
        }
    }

    fn e(v: &[(u64, i64)]) -> Vec<EpochEntry> {
        v.iter()
            .map(|&(epoch, start_offset)| EpochEntry {
                epoch,
                start_offset,
            })
            .collect()
    }

    #[test]
    fn start_action_table() {
        // (local epochs, min, end, remote epochs, min, end) → action
        type Case = (
            &'static [(u64, i64)],
            i64,
            i64,
            &'static [(u64, i64)],
            i64,
            i64,
            StartAction,
        );
        let cases: &[Case] = &[
            // Fresh replica, master from 0.
            (&[], 0, 0, &[(1, 0)], 0, 500, StartAction::Follow(0)),
            // Fresh replica, master's log starts later (retention).
            (&[], 0, 0, &[(1, 0)], 4096, 9000, StartAction::Wipe(4096)),
            // Behind in the same epoch.
            (
                &[(1, 0)],
                0,
                300,
                &[(1, 0)],
                0,
                500,
                StartAction::Follow(300),
            ),
            // Old master with a tail the new master never had.
            (
                &[(1, 0)],
                0,
                800,
                &[(1, 0), (2, 600)],
                0,
                900,
                StartAction::Truncate(600),
            ),
            // Up to date after a new election (master's new epoch starts at our end).
            (
                &[(1, 0)],
                0,
                600,
                &[(1, 0), (2, 600)],
                0,
                900,
                StartAction::Follow(600),
            ),
            // Nothing shared.
            (&[(5, 0)], 0, 100, &[(6, 0)], 0, 900, StartAction::Wipe(0)),
            // Shared, but the master no longer stores where we would continue.
            (
                &[(1, 0)],
                0,
                100,
                &[(1, 0), (2, 200)],
                4096,
                9000,
                StartAction::Wipe(4096),
            ),
            // Empty master (just elected, nothing written) and an empty replica.
            (&[], 0, 0, &[(1, 0)], 0, 0, StartAction::Follow(0)),
            // A wiped replica waiting at the master's first offset.
            (
                &[],
                4096,
                4096,
                &[(2, 0)],
                4096,
                9000,
                StartAction::Follow(4096),
            ),
        ];
        for (i, (le, lmin, lend, re, rmin, rend, want)) in cases.iter().enumerate() {
            let (le, re) = (e(le), e(re));
            let got = start_action(
                LogShape {
                    epochs: &le,
                    min: *lmin,
                    end: *lend,
                },
                LogShape {
                    epochs: &re,
                    min: *rmin,
                    end: *rend,
                },
            );
            assert_eq!(got, *want, "case {i}");
        }
    }
}
