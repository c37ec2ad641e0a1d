//! The master's view of its replicas: their confirmed offsets, when each last caught up, the
//! sync-state set, and the watermark SYNC sends wait on.
//!
//! ```text
//!   replica progress ──► Tracker::progress ──► watermark (watch) ──► SYNC sends wake
//!   streamer "sent to the end" ──► Tracker::sent_to_end ──┘
//!   every tick: decide_sync_state_set(now, …) ──► AlterSyncStateSet ──► Tracker::committed
//! ```
//!
//! Invariants:
//! - A SYNC send is acknowledged only when every member of the *effective* sync-state set holds
//!   it: the committed set plus replicas being added (they count from the moment the master
//!   decides to add them, before the controller commits it), minus nobody until a removal is
//!   committed. So any member the controller may elect holds every acknowledged message.
//! - The effective set must have at least `min_in_sync_replicas` members (the master counts);
//!   with fewer, SYNC sends fail at once with HA_NOT_AVAILABLE.
//! - The decision ([`decide_sync_state_set`]) is pure; [`Tracker`] only keeps the inputs.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use comet_proto::apache::rocketmq::v2::Code;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::outcome::Failure;

/// What SYNC sends wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Watermark {
    /// Every member of the effective sync-state set holds the log below this offset.
    pub acked: i64,
    /// Members of the effective sync-state set, the master included.
    pub members: usize,
}

/// Lag limits of the sync-state set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LagLimits {
    /// A member that has not caught up with the master for this long leaves the set.
    pub max_time: Duration,
    /// A member this many bytes behind leaves the set (0 = no byte limit).
    pub max_bytes: u64,
}

/// One replica as the master sees it.
#[derive(Debug, Clone)]
pub(crate) struct ReplicaView {
    /// The end of the replica's log as it last confirmed.
    pub confirmed: i64,
    /// The last time it held everything the master had written at some point.
    pub caught_up_at: Instant,
    /// Whether a replication stream from it is open.
    pub connected: bool,
    /// Points (end, time) the streamer sent it up to the master's end, not yet confirmed.
    pending: VecDeque<(i64, Instant)>,
}

/// How far one replica is behind its master (see [`Tracker::lags`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplicaLag {
    pub replica_id: u64,
    /// The master's log end minus the end the replica confirmed (0 when it holds it all).
    pub bytes: u64,
    /// How long the replica has not held everything the master had written: 0 when it holds
    /// the master's end, else the time since it last caught up with the master's end of that
    /// moment (the age of the oldest write it has not confirmed, or older).
    pub time: Duration,
}

/// The lag of `r` behind a master whose log ends at `master_end`, at `now`.
pub(crate) fn lag(replica_id: u64, r: &ReplicaView, master_end: i64, now: Instant) -> ReplicaLag {
    // A replica that never confirmed anything (-1) lags by the whole log.
    let bytes = u64::try_from(master_end.saturating_sub(r.confirmed.max(0))).unwrap_or(0);
    ReplicaLag {
        replica_id,
        bytes,
        time: if bytes == 0 {
            Duration::ZERO
        } else {
            now.saturating_duration_since(r.caught_up_at)
        },
    }
}

/// At most this many unconfirmed catch-up points are kept per replica.
const MAX_PENDING: usize = 64;

/// Whether a replica counts as in sync at `now` (see the module docs).
pub(crate) fn in_sync(r: &ReplicaView, master_end: i64, now: Instant, limits: LagLimits) -> bool {
    let behind = u64::try_from(master_end.saturating_sub(r.confirmed)).unwrap_or(0);
    now.saturating_duration_since(r.caught_up_at) <= limits.max_time
        && (limits.max_bytes == 0 || behind <= limits.max_bytes)
}

/// The sync-state set the master should ask for now, or `None` when `committed` is right.
/// Members not in sync leave; replicas in sync that are not members join. The master always
/// stays.
pub(crate) fn decide_sync_state_set(
    master: u64,
    committed: &BTreeSet<u64>,
    replicas: &HashMap<u64, ReplicaView>,
    master_end: i64,
    now: Instant,
    limits: LagLimits,
) -> Option<BTreeSet<u64>> {
    let mut next: BTreeSet<u64> = committed
        .iter()
        .copied()
        .filter(|id| {
            *id == master
                || replicas
                    .get(id)
                    .is_some_and(|r| in_sync(r, master_end, now, limits))
        })
        .collect();
    for (id, r) in replicas {
        if *id != master && r.connected && in_sync(r, master_end, now, limits) {
            next.insert(*id);
        }
    }
    next.insert(master);
    (next != *committed).then_some(next)
}

struct State {
    replicas: HashMap<u64, ReplicaView>,
    /// The set as the controller last committed it.
    committed: BTreeSet<u64>,
    /// Replicas being added (a request is in flight).
    adding: BTreeSet<u64>,
}

/// The master's replication bookkeeping for one master epoch.
pub(crate) struct Tracker {
    pub broker_id: u64,
    pub epoch: u64,
    min_in_sync: usize,
    limits: LagLimits,
    state: Mutex<State>,
    watermark: watch::Sender<Watermark>,
}

impl Tracker {
    /// A tracker for master `broker_id` at `epoch`, starting from the committed set `sss`.
    pub fn new(
        broker_id: u64,
        epoch: u64,
        sss: &[u64],
        min_in_sync: usize,
        limits: LagLimits,
    ) -> Self {
        let mut committed: BTreeSet<u64> = sss.iter().copied().collect();
        committed.insert(broker_id);
        // Members of the set get one lag period to connect before they count as behind.
        let now = Instant::now();
        let replicas = committed
            .iter()
            .filter(|id| **id != broker_id)
            .map(|id| {
                (
                    *id,
                    ReplicaView {
                        confirmed: -1,
                        caught_up_at: now,
                        connected: false,
                        pending: VecDeque::new(),
                    },
                )
            })
            .collect();
        let t = Tracker {
            broker_id,
            epoch,
            min_in_sync,
            limits,
            state: Mutex::new(State {
                replicas,
                committed,
                adding: BTreeSet::new(),
            }),
            watermark: watch::channel(Watermark {
                acked: 0,
                members: 1,
            })
            .0,
        };
        t.recompute(&t.state.lock());
        t
    }

    pub fn limits(&self) -> LagLimits {
        self.limits
    }

    fn recompute(&self, st: &State) {
        let members: BTreeSet<u64> = st.committed.union(&st.adding).copied().collect();
        let acked = members
            .iter()
            .filter(|id| **id != self.broker_id)
            .map(|id| st.replicas.get(id).map_or(-1, |r| r.confirmed))
            .min()
            .unwrap_or(i64::MAX);
        let w = Watermark {
            acked,
            members: members.len(),
        };
        self.watermark.send_if_modified(|old| {
            let changed = *old != w;
            *old = w;
            changed
        });
    }

    /// A replication stream from `id` opened at `offset`.
    pub fn connected(&self, id: u64, offset: i64, now: Instant) {
        let mut st = self.state.lock();
        let r = st.replicas.entry(id).or_insert_with(|| ReplicaView {
            confirmed: offset,
            // Never caught up yet: old enough to be out of sync.
            caught_up_at: now.checked_sub(self.limits.max_time * 2).unwrap_or(now),
            connected: true,
            pending: VecDeque::new(),
        });
        r.connected = true;
        r.confirmed = offset;
        r.pending.clear();
        self.recompute(&st);
    }

    /// The stream from `id` ended.
    pub fn disconnected(&self, id: u64) {
        if let Some(r) = self.state.lock().replicas.get_mut(&id) {
            r.connected = false;
            r.pending.clear();
        }
    }

    /// The streamer sent `id` everything up to `end`, the master's end at that moment.
    pub fn sent_to_end(&self, id: u64, end: i64, now: Instant) {
        let mut st = self.state.lock();
        if let Some(r) = st.replicas.get_mut(&id) {
            if r.confirmed >= end {
                r.caught_up_at = now;
                return;
            }
            if r.pending.len() >= MAX_PENDING {
                r.pending.pop_front();
            }
            r.pending.push_back((end, now));
        }
    }

    /// `id` confirmed that it holds the log below `offset`.
    pub fn progress(&self, id: u64, offset: i64) {
        let mut st = self.state.lock();
        let Some(r) = st.replicas.get_mut(&id) else {
            return;
        };
        r.confirmed = r.confirmed.max(offset);
        while let Some(&(end, at)) = r.pending.front() {
            if end > r.confirmed {
                break;
            }
            r.caught_up_at = r.caught_up_at.max(at);
            r.pending.pop_front();
        }
        self.recompute(&st);
    }

    /// The set change to request now, if any; its additions count for SYNC sends from now on
    /// (until [`Tracker::committed`] or [`Tracker::request_failed`]).
    pub fn plan_change(&self, master_end: i64, now: Instant) -> Option<Vec<u64>> {
        let mut st = self.state.lock();
        if !st.adding.is_empty() {
            return None;
        }
        let next = decide_sync_state_set(
            self.broker_id,
            &st.committed,
            &st.replicas,
            master_end,
            now,
            self.limits,
        )?;
        st.adding = next.difference(&st.committed).copied().collect();
        self.recompute(&st);
        Some(next.into_iter().collect())
    }

    /// The controller committed `sss` (from a reply or the metadata).
    pub fn committed(&self, sss: &[u64]) {
        let mut st = self.state.lock();
        st.committed = sss.iter().copied().collect();
        st.committed.insert(self.broker_id);
        st.adding.clear();
        self.recompute(&st);
    }

    /// The metadata shows `sss` for this epoch; adopted unless a change request is in flight
    /// (its reply is authoritative).
    pub fn committed_from_metadata(&self, sss: &[u64]) {
        let mut st = self.state.lock();
        if !st.adding.is_empty() {
            return;
        }
        let mut next: BTreeSet<u64> = sss.iter().copied().collect();
        next.insert(self.broker_id);
        if next != st.committed {
            st.committed = next;
            self.recompute(&st);
        }
    }

    /// A change request failed; its additions stop counting.
    pub fn request_failed(&self) {
        let mut st = self.state.lock();
        st.adding.clear();
        self.recompute(&st);
    }

    /// Whether the effective sync-state set (committed plus being added) has members other
    /// than the master: then the controller could elect one of them.
    pub fn replicated(&self) -> bool {
        let st = self.state.lock();
        st.committed.len() > 1 || !st.adding.is_empty()
    }

    /// The lag of every replica this master knows (members of the set and replicas that
    /// connected), by id, behind a log ending at `master_end`.
    pub fn lags(&self, master_end: i64, now: Instant) -> Vec<ReplicaLag> {
        let st = self.state.lock();
        let mut out: Vec<ReplicaLag> = st
            .replicas
            .iter()
            .map(|(id, r)| lag(*id, r, master_end, now))
            .collect();
        out.sort_unstable_by_key(|l| l.replica_id);
        out
    }

    /// The committed set.
    pub fn sync_state_set(&self) -> Vec<u64> {
        self.state.lock().committed.iter().copied().collect()
    }

    /// Waits until every member of the effective sync-state set holds the log below `end`.
    ///
    /// # Errors
    /// HA_NOT_AVAILABLE when the set has fewer than `min_in_sync_replicas` members (the
    /// message is stored on the master only); SLAVE_PERSISTENCE_TIMEOUT when the members did
    /// not confirm within `timeout` (the message is stored on the master and may still
    /// replicate).
    pub async fn wait(&self, end: i64, timeout: Duration) -> Result<(), Failure> {
        let mut rx = self.watermark.subscribe();
        let min = self.min_in_sync;
        let short = |w: &Watermark| {
            Failure::new(
                Code::HaNotAvailable,
                format!(
                    "the message is stored on the master, but only {} of the {min} in-sync \
                     replicas required (the master included) are in the sync-state set; \
                     retry later",
                    w.members
                ),
            )
        };
        let current = *rx.borrow_and_update();
        if current.members < min {
            return Err(short(&current));
        }
        if current.acked >= end {
            return Ok(());
        }
        match tokio::time::timeout(timeout, rx.wait_for(|w| w.acked >= end || w.members < min))
            .await
        {
            // Fewer members first: with the master alone the watermark is unbounded.
            Ok(Ok(w)) if w.members < min => Err(short(&w)),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Failure::new(
                Code::HaNotAvailable,
                "the master stepped down before the replicas confirmed the message",
            )),
            Err(_) => Err(Failure::new(
                Code::SlavePersistenceTimeout,
                format!(
                    "the message is stored on the master, but the in-sync replicas did not \
                     confirm it within {timeout:?}; it may still replicate"
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LagLimits = LagLimits {
        max_time: Duration::from_secs(2),
        max_bytes: 1000,
    };

    fn view(confirmed: i64, caught_up_ago: Duration, connected: bool, now: Instant) -> ReplicaView {
        ReplicaView {
            confirmed,
            caught_up_at: now - caught_up_ago,
            connected,
            pending: VecDeque::new(),
        }
    }

    /// (name, committed, replicas (id, confirmed, caught up ago, connected), master end) →
    /// new set or none.
    #[test]
    fn sync_state_set_table() {
        let now = Instant::now() + Duration::from_secs(60);
        let s = |ids: &[u64]| ids.iter().copied().collect::<BTreeSet<u64>>();
        type Case = (
            &'static str,
            &'static [u64],
            Vec<(u64, i64, u64, bool)>,
            i64,
            Option<&'static [u64]>,
        );
        let cases: Vec<Case> = vec![
            ("alone, nobody connected", &[0], vec![], 500, None),
            (
                "caught-up replica joins",
                &[0],
                vec![(1, 500, 0, true)],
                500,
                Some(&[0, 1]),
            ),
            (
                "in-sync member stays",
                &[0, 1],
                vec![(1, 480, 1, true)],
                500,
                None,
            ),
            (
                "too old leaves",
                &[0, 1],
                vec![(1, 500, 3, true)],
                500,
                Some(&[0]),
            ),
            (
                "too many bytes behind leaves",
                &[0, 1],
                vec![(1, 100, 0, true)],
                5000,
                Some(&[0]),
            ),
            ("member never seen leaves", &[0, 1], vec![], 500, Some(&[0])),
            (
                "disconnected but recent stays",
                &[0, 1],
                vec![(1, 500, 1, false)],
                500,
                None,
            ),
            (
                "disconnected replica does not join",
                &[0],
                vec![(1, 500, 0, false)],
                500,
                None,
            ),
            (
                "one leaves, one joins",
                &[0, 1],
                vec![(1, 0, 10, true), (2, 500, 0, true)],
                500,
                Some(&[0, 2]),
            ),
        ];
        for (name, committed, replicas, end, want) in cases {
            let replicas: HashMap<u64, ReplicaView> = replicas
                .into_iter()
                .map(|(id, c, ago, conn)| (id, view(c, Duration::from_secs(ago), conn, now)))
                .collect();
            let got = decide_sync_state_set(0, &s(committed), &replicas, end, now, LIMITS);
            assert_eq!(got, want.map(s), "{name}");
        }
    }

    #[tokio::test]
    async fn given_sync_waits_when_replicas_confirm_or_leave_should_release_or_fail() {
        let t = std::sync::Arc::new(Tracker::new(0, 1, &[0, 1], 2, LIMITS));
        let now = Instant::now();
        t.connected(1, 0, now);
        // Acked by the replica.
        t.sent_to_end(1, 100, now);
        let w = {
            let t = std::sync::Arc::clone(&t);
            tokio::spawn(async move { t.wait(100, Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        t.progress(1, 100);
        assert_eq!(w.await.unwrap(), Ok(()));
        // Never acked: times out with SLAVE_PERSISTENCE_TIMEOUT.
        let e = t.wait(200, Duration::from_millis(30)).await.unwrap_err();
        assert_eq!(e.code, Code::SlavePersistenceTimeout);
        // The replica leaves the set: a waiting send fails with HA_NOT_AVAILABLE (2 required).
        let w = {
            let t = std::sync::Arc::clone(&t);
            tokio::spawn(async move { t.wait(300, Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        t.committed(&[0]);
        assert_eq!(w.await.unwrap().unwrap_err().code, Code::HaNotAvailable);
        // With min 1 the master alone acknowledges.
        let solo = Tracker::new(0, 1, &[0], 1, LIMITS);
        assert_eq!(
            solo.wait(i64::MAX - 1, Duration::from_millis(1)).await,
            Ok(())
        );
    }

    #[test]
    fn given_catch_up_points_when_confirmed_should_move_caught_up_time() {
        let t = Tracker::new(0, 1, &[0], 1, LIMITS);
        let start = Instant::now();
        t.connected(1, 0, start);
        let t1 = start + Duration::from_millis(10);
        let t2 = start + Duration::from_millis(20);
        t.sent_to_end(1, 100, t1);
        t.sent_to_end(1, 200, t2);
        t.progress(1, 150);
        let seen = t.state.lock().replicas[&1].caught_up_at;
        assert_eq!(seen, t1);
        t.progress(1, 200);
        assert_eq!(t.state.lock().replicas[&1].caught_up_at, t2);
        // Planning an addition counts the replica for SYNC sends before the commit.
        let plan = t.plan_change(200, t2).expect("replica joins");
        assert_eq!(plan, vec![0, 1]);
        assert_eq!(t.watermark.borrow().members, 2);
        assert!(t.plan_change(200, t2).is_none(), "one request at a time");
        t.request_failed();
        assert_eq!(t.watermark.borrow().members, 1);
        t.committed(&[1, 0]);
        assert_eq!(t.sync_state_set(), vec![0, 1]);
    }

    #[test]
    fn given_replicas_behind_or_caught_up_when_lags_taken_should_count_bytes_and_time() {
        let start = Instant::now();
        let t = Tracker::new(0, 1, &[0, 2], 1, LIMITS);
        t.connected(1, 0, start);
        t.sent_to_end(1, 100, start);
        t.progress(1, 100);
        let later = start + Duration::from_millis(700);
        // Replica 1 confirmed 100 of 250 and last caught up at `start`; replica 2 (a member
        // that never connected) confirmed nothing: it lags by the whole log.
        let lags = t.lags(250, later);
        assert_eq!(lags.len(), 2);
        assert_eq!(
            (lags[0].replica_id, lags[0].bytes, lags[0].time),
            (1, 150, Duration::from_millis(700))
        );
        assert_eq!((lags[1].replica_id, lags[1].bytes), (2, 250));
        // It counts from the tracker's creation (a member gets one lag period to connect).
        assert!(lags[1].time > Duration::ZERO && lags[1].time <= Duration::from_millis(700));
        // Caught up: no lag in bytes or time, however long ago it caught up.
        assert_eq!(
            t.lags(100, later)[0],
            ReplicaLag {
                replica_id: 1,
                bytes: 0,
                time: Duration::ZERO
            }
        );
    }
}
