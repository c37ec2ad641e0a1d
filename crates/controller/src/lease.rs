//! Broker leases: soft state on the Raft leader.
//!
//! A heartbeat renews a lease in memory only; no log entry is written per
//! heartbeat. The leader's lease checker ([`run_lease_checker`]) turns lease
//! *transitions* into Raft entries: a member whose lease lapsed is marked
//! `alive = false`, a member marked dead that heartbeats again is marked
//! `alive = true`.
//!
//! Invariants:
//! - Leases belong to one leader term. When this node becomes leader (or
//!   starts a new term) every lease restarts from "now": members get a full
//!   lease period of grace, so a leader change never mass-expires brokers.
//! - The decision ([`LeaseTable::decide`]) is pure: metadata + clock in,
//!   liveness changes out. The checker task only executes it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use comet_proto::comet::v1::ClusterMetadata;
use openraft::ServerState;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::election::{self, LogReport};
use crate::metadata::{AliveChange, Command, CommandResponse};
use crate::raft_types::{ControllerRaft, NodeId};

/// Wall clock in ms since the Unix epoch (0 if the clock is before it).
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[derive(Debug)]
struct Renewal {
    at: Instant,
    wall_ms: i64,
    /// This member's lease length (the table's, or longer for brokers that
    /// renew less often, such as RocketMQ 4.x brokers over remoting).
    lease: Duration,
}

#[derive(Debug)]
struct LeaseState {
    /// The leader term these leases belong to; `None` while not leader.
    term: Option<u64>,
    /// When the term's leases started (the grace point).
    epoch: Instant,
    renewals: HashMap<(String, u64), Renewal>,
    /// The members' last log reports (heartbeats), for elections.
    reports: HashMap<(String, u64), LogReport>,
}

/// The leader's in-memory broker leases.
#[derive(Debug)]
pub struct LeaseTable {
    lease: Duration,
    state: Mutex<LeaseState>,
}

impl LeaseTable {
    /// An empty table for leases of length `lease`.
    pub fn new(lease: Duration) -> Self {
        LeaseTable {
            lease,
            state: Mutex::new(LeaseState {
                term: None,
                epoch: Instant::now(),
                renewals: HashMap::new(),
                reports: HashMap::new(),
            }),
        }
    }

    /// The lease length.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    fn enter_term(state: &mut LeaseState, term: u64, now: Instant) {
        if state.term != Some(term) {
            state.term = Some(term);
            state.epoch = now;
            state.renewals.clear();
            state.reports.clear();
        }
    }

    /// Forgets every lease (this node is not the leader).
    pub fn clear(&self) {
        let mut s = self.state.lock();
        s.term = None;
        s.renewals.clear();
        s.reports.clear();
    }

    /// Starts the leases of `term` at `now` unless they already run.
    pub fn ensure_term(&self, term: u64, now: Instant) {
        Self::enter_term(&mut self.state.lock(), term, now);
    }

    /// Renews the lease of a member, as leader of `term`, for the table's lease.
    pub fn renew(&self, term: u64, broker_set: &str, broker_id: u64, now: Instant, wall_ms: i64) {
        self.renew_for(term, broker_set, broker_id, now, wall_ms, self.lease);
    }

    /// Renews the lease of a member for `lease` (never shorter than the
    /// table's), as leader of `term`.
    pub fn renew_for(
        &self,
        term: u64,
        broker_set: &str,
        broker_id: u64,
        now: Instant,
        wall_ms: i64,
        lease: Duration,
    ) {
        let mut s = self.state.lock();
        Self::enter_term(&mut s, term, now);
        s.renewals.insert(
            (broker_set.to_owned(), broker_id),
            Renewal {
                at: now,
                wall_ms,
                lease: lease.max(self.lease),
            },
        );
    }

    /// Keeps what a member reported about its log (its latest heartbeat).
    pub fn report(&self, broker_set: &str, broker_id: u64, report: LogReport) {
        self.state
            .lock()
            .reports
            .insert((broker_set.to_owned(), broker_id), report);
    }

    /// The last log reports of the members of `broker_set`.
    pub fn reports(&self, broker_set: &str) -> HashMap<u64, LogReport> {
        self.state
            .lock()
            .reports
            .iter()
            .filter(|((set, _), _)| set == broker_set)
            .map(|((_, id), r)| (*id, *r))
            .collect()
    }

    /// Drops the lease of a member (it unregistered): it stays down until it
    /// registers or heartbeats again.
    pub fn forget(&self, broker_set: &str, broker_id: u64) {
        self.state
            .lock()
            .renewals
            .remove(&(broker_set.to_owned(), broker_id));
    }

    /// The liveness changes due at `now` for the members in `meta`.
    pub fn decide(&self, meta: &ClusterMetadata, now: Instant) -> Vec<AliveChange> {
        let s = self.state.lock();
        if s.term.is_none() {
            return Vec::new();
        }
        let mut changes = Vec::new();
        for set in &meta.broker_sets {
            for m in &set.members {
                let renewal = s.renewals.get(&(set.name.clone(), m.broker_id));
                let last = renewal.map_or(s.epoch, |r| r.at);
                let lease = renewal.map_or(self.lease, |r| r.lease);
                let expired = now.saturating_duration_since(last) > lease;
                let last_heartbeat_ms = renewal.map_or(m.last_heartbeat_ms, |r| r.wall_ms);
                if m.alive && expired {
                    changes.push(AliveChange {
                        broker_set: set.name.clone(),
                        broker_id: m.broker_id,
                        alive: false,
                        last_heartbeat_ms,
                    });
                } else if !m.alive && !expired && renewal.is_some() {
                    changes.push(AliveChange {
                        broker_set: set.name.clone(),
                        broker_id: m.broker_id,
                        alive: true,
                        last_heartbeat_ms,
                    });
                }
            }
        }
        changes
    }
}

/// How often the checker looks at leases: a quarter of the lease, 10 ms..=1 s.
pub fn check_interval(lease: Duration) -> Duration {
    (lease / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Bound on one liveness write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the elections the current metadata calls for (see [`crate::election`]), as the
/// leader: each is one `ElectMaster` entry, applied only if its set's epoch did not move.
pub async fn run_elections(
    raft: &ControllerRaft,
    leases: &LeaseTable,
    metadata: &watch::Receiver<Arc<ClusterMetadata>>,
    allow_unclean: bool,
) {
    let elections = {
        let meta = metadata.borrow();
        election::decide_all(&meta, |set| leases.reports(set), allow_unclean)
    };
    for e in elections {
        if e.unclean {
            tracing::warn!(broker_set = %e.broker_set, master = e.master,
                "unclean election: no in-sync replica is alive; acknowledged messages may be lost");
        }
        match tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(e.command())).await {
            Ok(Ok(resp)) => match resp.data {
                CommandResponse::BrokerSet(set) => tracing::info!(
                    broker_set = %set.name,
                    master = set.master_broker_id,
                    epoch = set.master_epoch,
                    "master elected"
                ),
                other => {
                    tracing::debug!(broker_set = %e.broker_set, ?other, "election not applied")
                }
            },
            Ok(Err(err)) => {
                tracing::warn!(error = %err, broker_set = %e.broker_set, "could not record the election")
            }
            Err(_) => {
                tracing::warn!(broker_set = %e.broker_set, "recording the election timed out")
            }
        }
    }
}

/// The leader-side lease loop: runs until `stop` is cancelled or Raft stops. After the
/// liveness changes of each round it runs the elections they call for.
pub async fn run_lease_checker(
    raft: ControllerRaft,
    node_id: NodeId,
    leases: Arc<LeaseTable>,
    metadata: watch::Receiver<Arc<ClusterMetadata>>,
    stop: CancellationToken,
    allow_unclean: bool,
) {
    let mut metrics = raft.metrics();
    let mut ticker = tokio::time::interval(check_interval(leases.lease()));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            changed = metrics.changed() => if changed.is_err() { break },
            () = stop.cancelled() => break,
        }
        let (is_leader, term) = {
            let m = metrics.borrow();
            (
                m.state == ServerState::Leader && m.current_leader == Some(node_id),
                m.current_term,
            )
        };
        if !is_leader {
            leases.clear();
            continue;
        }
        let now = Instant::now();
        leases.ensure_term(term, now);
        let changes = {
            let meta = metadata.borrow();
            leases.decide(&meta, now)
        };
        if changes.is_empty() {
            run_elections(&raft, &leases, &metadata, allow_unclean).await;
            continue;
        }
        for c in &changes {
            tracing::info!(
                broker_set = %c.broker_set,
                broker_id = c.broker_id,
                alive = c.alive,
                "broker liveness changed by lease"
            );
        }
        match tokio::time::timeout(
            WRITE_TIMEOUT,
            raft.client_write(Command::SetBrokersAlive { changes }),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not record broker liveness"),
            Err(_) => tracing::warn!("recording broker liveness timed out"),
        }
        run_elections(&raft, &leases, &metadata, allow_unclean).await;
    }
    tracing::debug!("lease checker stopped");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;
    use comet_proto::comet::v1::{BrokerMember, BrokerSet};

    fn meta(members: &[(u64, bool)]) -> ClusterMetadata {
        ClusterMetadata {
            revision: 1,
            cluster_name: "c".to_owned(),
            topics: vec![],
            groups: vec![],
            broker_sets: vec![BrokerSet {
                name: "a".to_owned(),
                members: members
                    .iter()
                    .map(|(id, alive)| BrokerMember {
                        broker_set: "a".to_owned(),
                        broker_id: *id,
                        address: "h:1".to_owned(),
                        alive: *alive,
                        last_heartbeat_ms: 7,
                    })
                    .collect(),
                master_broker_id: 0,
                master_epoch: 0,
                sync_state_set: vec![],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_new_term_gives_every_member_a_full_lease_of_grace() {
        let lease = Duration::from_secs(10);
        let t = LeaseTable::new(lease);
        let start = Instant::now();
        t.ensure_term(3, start);
        let m = meta(&[(0, true), (1, true)]);
        assert!(
            t.decide(&m, start + lease).is_empty(),
            "not expired at exactly one lease"
        );
        let changes = t.decide(&m, start + lease + Duration::from_millis(1));
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|c| !c.alive && c.last_heartbeat_ms == 7));
    }

    #[test]
    fn renewals_keep_members_alive_and_revive_dead_ones() {
        let lease = Duration::from_secs(10);
        let t = LeaseTable::new(lease);
        let start = Instant::now();
        t.ensure_term(1, start);
        t.renew(1, "a", 0, start + Duration::from_secs(8), 1234);
        let later = start + Duration::from_secs(11);
        let m = meta(&[(0, true), (1, false)]);
        assert!(
            t.decide(&m, later).is_empty(),
            "renewed member alive, dead one without heartbeat stays dead"
        );
        t.renew(1, "a", 1, later, 99);
        let changes = t.decide(&m, later);
        assert_eq!(
            changes,
            vec![AliveChange {
                broker_set: "a".to_owned(),
                broker_id: 1,
                alive: true,
                last_heartbeat_ms: 99
            }]
        );
    }

    #[test]
    fn longer_member_leases_hold_and_forgotten_members_stay_down() {
        let lease = Duration::from_secs(10);
        let t = LeaseTable::new(lease);
        let start = Instant::now();
        t.ensure_term(1, start);
        t.renew_for(1, "a", 0, start, 5, Duration::from_secs(120));
        t.renew_for(1, "a", 1, start, 5, Duration::from_secs(1));
        let later = start + Duration::from_secs(60);
        let m = meta(&[(0, true), (1, true)]);
        let changes = t.decide(&m, later);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            changes[0].broker_id, 1,
            "a shorter lease is raised to the table's"
        );
        let dead = meta(&[(0, false)]);
        assert_eq!(
            t.decide(&dead, later).len(),
            1,
            "renewed dead member revives"
        );
        t.forget("a", 0);
        assert!(
            t.decide(&dead, later).is_empty(),
            "forgotten member stays down"
        );
    }

    #[test]
    fn a_term_change_resets_leases_and_clear_stops_decisions() {
        let lease = Duration::from_secs(1);
        let t = LeaseTable::new(lease);
        let start = Instant::now();
        t.ensure_term(1, start);
        let m = meta(&[(0, true)]);
        let late = start + Duration::from_secs(5);
        assert_eq!(t.decide(&m, late).len(), 1);
        t.ensure_term(2, late);
        assert!(t.decide(&m, late).is_empty(), "grace after a new term");
        t.clear();
        assert!(
            t.decide(&m, late + Duration::from_secs(5)).is_empty(),
            "followers decide nothing"
        );
    }
}
