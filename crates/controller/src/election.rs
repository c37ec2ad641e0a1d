//! Master election for broker sets (DLedger/RocketMQ 5 controller style), as a pure function
//! of the metadata and the brokers' last log reports. The leader's lease checker and the
//! registration path execute its decisions as [`Command::ElectMaster`] entries, which the
//! state machine applies only if the set's master epoch is still the one the decision saw.
//!
//! Rules ([`decide`]):
//! - A set whose master is registered and alive keeps it.
//! - A set that never had a master (`master_epoch == 0`) elects one among its alive members.
//! - A set whose master is gone (lease lapsed or unregistered) elects one among the alive
//!   members of its sync-state set, the old master excluded: only they are known to hold every
//!   message a SYNC send acknowledged. With none, the set stays without a master (replicas keep
//!   serving reads) unless unclean elections are enabled, which then take any alive member and
//!   may lose acknowledged messages.
//! - Among candidates, the one that reported the newest log (epoch, then end offset) wins, so
//!   as little as possible is cut from the others; ties go to the lowest broker id.
//! - The new master gets the next epoch and a sync-state set of just itself; replicas rejoin it
//!   once they caught up with the new master (see `AlterSyncStateSet`).

use std::collections::HashMap;

use comet_proto::comet::v1 as pb;

use crate::metadata::Command;

/// What a broker last reported about its log (from its heartbeats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogReport {
    /// The newest master epoch in its log.
    pub epoch: u64,
    /// The end of its log (physical offset).
    pub end_offset: i64,
}

/// An election to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    /// The broker set.
    pub broker_set: String,
    /// The master epoch the decision saw (the entry applies only if it still holds).
    pub expected_epoch: u64,
    /// The broker to make master.
    pub master: u64,
    /// Whether the master comes from outside the sync-state set.
    pub unclean: bool,
}

impl Election {
    /// The log command that carries it out.
    pub fn command(&self) -> Command {
        Command::ElectMaster {
            broker_set: self.broker_set.clone(),
            expected_epoch: self.expected_epoch,
            master: self.master,
        }
    }
}

/// The election `set` needs now, if any (see the module docs for the rules).
pub fn decide(
    set: &pb::BrokerSet,
    reports: &HashMap<u64, LogReport>,
    allow_unclean: bool,
) -> Option<Election> {
    let alive = |id: u64| set.members.iter().any(|m| m.broker_id == id && m.alive);
    if set.master_epoch > 0 && alive(set.master_broker_id) {
        return None;
    }
    let alive_ids = set.members.iter().filter(|m| m.alive).map(|m| m.broker_id);
    let (candidates, unclean): (Vec<u64>, bool) = if set.master_epoch == 0 {
        (alive_ids.collect(), false)
    } else {
        let clean: Vec<u64> = set
            .sync_state_set
            .iter()
            .copied()
            .filter(|&id| id != set.master_broker_id && alive(id))
            .collect();
        if !clean.is_empty() {
            (clean, false)
        } else if allow_unclean {
            (
                alive_ids.filter(|&id| id != set.master_broker_id).collect(),
                true,
            )
        } else {
            (Vec::new(), false)
        }
    };
    let master = candidates.into_iter().min_by_key(|id| {
        let r = reports.get(id).copied().unwrap_or_default();
        (
            std::cmp::Reverse(r.epoch),
            std::cmp::Reverse(r.end_offset),
            *id,
        )
    })?;
    Some(Election {
        broker_set: set.name.clone(),
        expected_epoch: set.master_epoch,
        master,
        unclean,
    })
}

/// The elections every set of `meta` needs now; `reports` gives each set's log reports.
pub fn decide_all(
    meta: &pb::ClusterMetadata,
    reports: impl Fn(&str) -> HashMap<u64, LogReport>,
    allow_unclean: bool,
) -> Vec<Election> {
    meta.broker_sets
        .iter()
        .filter_map(|s| decide(s, &reports(&s.name), allow_unclean))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(epoch: u64, master: u64, members: &[(u64, bool)], sss: &[u64]) -> pb::BrokerSet {
        pb::BrokerSet {
            name: "a".to_owned(),
            members: members
                .iter()
                .map(|&(id, alive)| pb::BrokerMember {
                    broker_set: "a".to_owned(),
                    broker_id: id,
                    address: format!("h:{id}"),
                    alive,
                    last_heartbeat_ms: 0,
                })
                .collect(),
            master_broker_id: master,
            master_epoch: epoch,
            sync_state_set: sss.to_vec(),
        }
    }

    fn reports(v: &[(u64, u64, i64)]) -> HashMap<u64, LogReport> {
        v.iter()
            .map(|&(id, epoch, end_offset)| (id, LogReport { epoch, end_offset }))
            .collect()
    }

    /// (name, set, reports, unclean allowed) → (master, unclean) or no election.
    #[test]
    fn election_table() {
        type Case = (
            &'static str,
            pb::BrokerSet,
            HashMap<u64, LogReport>,
            bool,
            Option<(u64, bool)>,
        );
        let cases: Vec<Case> = vec![
            (
                "alive master stays",
                set(3, 0, &[(0, true), (1, true)], &[0, 1]),
                reports(&[]),
                false,
                None,
            ),
            (
                "first master: the only member",
                set(0, 0, &[(5, true)], &[]),
                reports(&[]),
                false,
                Some((5, false)),
            ),
            (
                "first master: lowest id without reports",
                set(0, 0, &[(2, true), (1, true), (3, false)], &[]),
                reports(&[]),
                false,
                Some((1, false)),
            ),
            (
                "first master: most data wins",
                set(0, 0, &[(1, true), (2, true)], &[]),
                reports(&[(1, 0, 10), (2, 0, 99)]),
                false,
                Some((2, false)),
            ),
            (
                "first master: nobody alive",
                set(0, 0, &[(1, false)], &[]),
                reports(&[]),
                false,
                None,
            ),
            (
                "dead master: in-sync replica takes over",
                set(4, 0, &[(0, false), (1, true), (2, true)], &[0, 2]),
                reports(&[(1, 4, 1000), (2, 4, 10)]),
                false,
                Some((2, false)),
            ),
            (
                "dead master: newest epoch beats larger offset",
                set(4, 0, &[(0, false), (1, true), (2, true)], &[0, 1, 2]),
                reports(&[(1, 3, 5000), (2, 4, 10)]),
                false,
                Some((2, false)),
            ),
            (
                "dead master: tie on log goes to lowest id",
                set(4, 0, &[(0, false), (1, true), (2, true)], &[0, 1, 2]),
                reports(&[(1, 4, 10), (2, 4, 10)]),
                false,
                Some((1, false)),
            ),
            (
                "dead master: in-sync replica dead too, no unclean election",
                set(4, 0, &[(0, false), (1, false), (2, true)], &[0, 1]),
                reports(&[]),
                false,
                None,
            ),
            (
                "dead master: unclean election when enabled",
                set(4, 0, &[(0, false), (1, false), (2, true)], &[0, 1]),
                reports(&[]),
                true,
                Some((2, true)),
            ),
            (
                "dead master: clean candidate preferred even with unclean enabled",
                set(4, 0, &[(0, false), (1, true), (2, true)], &[0, 1]),
                reports(&[(2, 4, 9999)]),
                true,
                Some((1, false)),
            ),
            (
                "master unregistered (member gone)",
                set(2, 7, &[(1, true)], &[7, 1]),
                reports(&[]),
                false,
                Some((1, false)),
            ),
            (
                "sync-state set holds only the dead master",
                set(2, 0, &[(0, false), (1, true)], &[0]),
                reports(&[]),
                false,
                None,
            ),
        ];
        for (name, s, r, unclean, want) in cases {
            let got = decide(&s, &r, unclean);
            assert_eq!(
                got.as_ref().map(|e| (e.master, e.unclean)),
                want,
                "{name}: {got:?}"
            );
            if let Some(e) = got {
                assert_eq!(e.expected_epoch, s.master_epoch, "{name}");
                assert_eq!(e.broker_set, "a");
            }
        }
    }

    #[test]
    fn decide_all_covers_every_set() {
        let mut a = set(0, 0, &[(0, true)], &[]);
        a.name = "a".into();
        let mut b = set(1, 0, &[(0, true)], &[0]);
        b.name = "b".into();
        let meta = pb::ClusterMetadata {
            broker_sets: vec![a, b],
            ..Default::default()
        };
        let all = decide_all(&meta, |_| HashMap::new(), false);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].broker_set, "a");
        assert_eq!(
            all[0].command(),
            Command::ElectMaster {
                broker_set: "a".into(),
                expected_epoch: 0,
                master: 0
            }
        );
    }
}
