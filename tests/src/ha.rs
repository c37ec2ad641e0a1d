//! [`HaDeployment`]: one replicated broker set of real broker processes ([`BrokerProc`]) with
//! in-process controllers and a proxy ([`Cluster`]), for HA tests and benchmarks. The
//! controllers sit behind relays ([`ClusterBuilder::controller_relays`]), so a test can
//! partition any of them ([`Cluster::partition_controller`]).

use std::time::Duration;

use comet::config::{Config, ReplicationModeKey};
use comet_proto::comet::v1::{BrokerSet, ClusterMetadata};

use crate::cluster::{Cluster, ClusterBuilder};
use crate::procs::BrokerProc;
use crate::test_config;

/// The broker set's name.
pub const SET: &str = "ha";

/// How to build an [`HaDeployment`].
#[derive(Debug, Clone)]
pub struct HaOptions {
    /// Brokers of the set.
    pub brokers: u64,
    /// ASYNC or SYNC replication.
    pub mode: ReplicationModeKey,
    /// SYNC: members the sync-state set needs.
    pub min_in_sync: u32,
    /// The controllers' broker lease.
    pub broker_lease: Duration,
    /// Short replication timings (lag 1 s, heartbeats 100 ms, consumer offsets 200 ms) for
    /// tests; the defaults otherwise.
    pub fast: bool,
    /// Adjusts the broker config further.
    pub tweak: fn(&mut Config),
}

impl Default for HaOptions {
    fn default() -> Self {
        HaOptions {
            brokers: 3,
            mode: ReplicationModeKey::Sync,
            min_in_sync: 2,
            broker_lease: Duration::from_secs(1),
            fast: true,
            tweak: |_| {},
        }
    }
}

/// A running replicated broker set. Brokers are killed when it drops.
pub struct HaDeployment {
    /// Controllers and proxy.
    pub cluster: Cluster,
    /// The broker processes, by broker id.
    pub brokers: Vec<BrokerProc>,
    _dir: tempfile::TempDir,
}

impl HaDeployment {
    /// Starts controllers, the proxy and the brokers, and waits until every broker is in the
    /// sync-state set.
    pub async fn start(o: HaOptions) -> HaDeployment {
        let cluster = ClusterBuilder::new()
            .broker_sets(&[])
            .broker_lease(o.broker_lease)
            .controller_relays()
            .start()
            .await;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = test_config(dir.path());
        cfg.log.level = std::env::var("COMET_HA_CHILD_LOG").unwrap_or_else(|_| "warn".to_owned());
        cfg.broker.broker_set = SET.to_owned();
        cfg.broker.replication_mode = o.mode;
        cfg.broker.min_in_sync_replicas = o.min_in_sync;
        if o.fast {
            cfg.broker.replica_max_lag_time = Duration::from_millis(1000).into();
            cfg.broker.replication_heartbeat_interval = Duration::from_millis(100).into();
            cfg.broker.consumer_offsets_sync_interval = Duration::from_millis(200).into();
            cfg.broker.flush_interval = Duration::from_millis(50).into();
        }
        (o.tweak)(&mut cfg);
        let mut brokers = Vec::new();
        for id in 0..o.brokers {
            let mut b =
                BrokerProc::prepare(dir.path(), id, cfg.clone(), &cluster.controller_addrs()).await;
            b.start().await;
            brokers.push(b);
        }
        let d = HaDeployment {
            cluster,
            brokers,
            _dir: dir,
        };
        let n = o.brokers as usize;
        d.wait_set("every member in sync", |s| s.sync_state_set.len() == n)
            .await;
        d
    }

    /// The broker set as the metadata shows it now.
    pub fn set(&self) -> BrokerSet {
        set_of(&self.cluster.metadata_now())
    }

    /// Waits (bounded) until the broker set has an elected master and satisfies `pred` on
    /// every node; returns it.
    pub async fn wait_set(&self, what: &str, pred: impl Fn(&BrokerSet) -> bool) -> BrokerSet {
        let m = self
            .cluster
            .wait_metadata(what, |m| {
                m.broker_sets
                    .iter()
                    .find(|s| s.name == SET)
                    .is_some_and(|s| s.master_epoch > 0 && pred(s))
            })
            .await;
        set_of(&m)
    }

    /// The current master's broker id.
    pub fn master(&self) -> usize {
        self.set().master_broker_id as usize
    }

    /// Waits until a live broker other than `old` is master at an epoch newer than `epoch`.
    pub async fn wait_new_master(&self, old: usize, epoch: u64) -> BrokerSet {
        self.wait_set("a new master", |s| {
            s.master_epoch > epoch
                && s.master_broker_id as usize != old
                && s.members
                    .iter()
                    .any(|m| m.broker_id == s.master_broker_id && m.alive)
        })
        .await
    }

    /// Waits until every broker is alive and in the sync-state set.
    pub async fn wait_all_in_sync(&self, what: &str) -> BrokerSet {
        let n = self.brokers.len();
        self.wait_set(what, |s| {
            s.sync_state_set.len() == n && s.members.iter().all(|m| m.alive)
        })
        .await
    }

    /// Cuts broker `i` off from everything, both ways: the controllers, the proxy, and its
    /// peers (what they open to it and what it opens to them, e.g. a replica's stream from
    /// the master). Its real port stays reachable from this process.
    pub fn partition_broker(&self, i: usize) {
        self.brokers[i].partition();
        let pid = self.brokers[i].pid();
        for (j, b) in self.brokers.iter().enumerate() {
            if j != i {
                b.inbound.partition_process(pid);
            }
        }
    }

    /// Ends [`HaDeployment::partition_broker`] of broker `i`.
    pub fn heal_broker(&self, i: usize) {
        self.brokers[i].heal();
        let pid = self.brokers[i].pid();
        for (j, b) in self.brokers.iter().enumerate() {
            if j != i {
                b.inbound.heal_process(pid);
            }
        }
    }

    /// Kills the brokers and stops controllers and proxy.
    pub async fn stop(self) {
        drop(self.brokers);
        self.cluster.stop().await;
    }
}

fn set_of(m: &ClusterMetadata) -> BrokerSet {
    m.broker_sets
        .iter()
        .find(|s| s.name == SET)
        .cloned()
        .expect("the broker set is registered")
}
