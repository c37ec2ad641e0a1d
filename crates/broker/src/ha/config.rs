//! Replication settings of a broker ([`HaConfig`]) and when a send is acknowledged
//! ([`ReplicationMode`]).

use std::time::Duration;

use crate::error::BrokerError;

/// When a send is acknowledged (see the `ha` module docs for the contract of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicationMode {
    /// After the master's own write (and flush, per the flush policy).
    #[default]
    Async,
    /// After every member of the sync-state set holds it.
    Sync,
}

/// Replication settings of a broker (they apply while it is master).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// ASYNC or SYNC acknowledgement (default ASYNC).
    pub mode: ReplicationMode,
    /// SYNC: fewest members the sync-state set must have, the master included (default 1:
    /// with every replica gone the master acknowledges alone; 2 refuses instead).
    pub min_in_sync_replicas: u32,
    /// SYNC: longest wait for the in-sync replicas (default 2 s; keep it below the proxy's
    /// broker call timeout, 3 s, so clients see SLAVE_PERSISTENCE_TIMEOUT, not PROXY_TIMEOUT).
    pub sync_timeout: Duration,
    /// A replica that has not caught up with the master for this long leaves the sync-state
    /// set (default 3 s).
    pub max_lag_time: Duration,
    /// A replica this many bytes behind leaves the sync-state set (default 256 MiB; 0 = no
    /// limit).
    pub max_lag_bytes: u64,
    /// Target size of one replication chunk (default 1 MiB; a larger batch comes whole).
    pub chunk_bytes: usize,
    /// Silence after which the master sends a heartbeat chunk (default 500 ms).
    pub heartbeat_interval: Duration,
    /// How often replicas adopt the master's consume offsets (default 1 s).
    pub consumer_offsets_interval: Duration,
    /// How a replica dials its master: plaintext (default) or mutual TLS (`tls.internal_*`).
    pub connector: comet_auth::Connector,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            mode: ReplicationMode::Async,
            min_in_sync_replicas: 1,
            sync_timeout: Duration::from_secs(2),
            max_lag_time: Duration::from_secs(3),
            max_lag_bytes: 256 << 20,
            chunk_bytes: 1 << 20,
            heartbeat_interval: Duration::from_millis(500),
            consumer_offsets_interval: Duration::from_secs(1),
            connector: comet_auth::Connector::plaintext(),
        }
    }
}

impl HaConfig {
    /// Checks every value; errors name the key.
    ///
    /// # Errors
    /// [`BrokerError::Config`].
    pub fn validate(&self) -> Result<(), BrokerError> {
        let bad = |key: &'static str, reason: String| Err(BrokerError::Config { key, reason });
        if !(1..=16).contains(&self.min_in_sync_replicas) {
            return bad(
                "min_in_sync_replicas",
                format!("{} is outside 1..=16", self.min_in_sync_replicas),
            );
        }
        for (key, d) in [
            ("sync_replication_timeout", self.sync_timeout),
            ("replica_max_lag_time", self.max_lag_time),
            ("replication_heartbeat_interval", self.heartbeat_interval),
            (
                "consumer_offsets_sync_interval",
                self.consumer_offsets_interval,
            ),
        ] {
            if d < Duration::from_millis(10) || d > Duration::from_secs(3600) {
                return bad(key, format!("{d:?} is outside [10ms, 1h]"));
            }
        }
        if self.heartbeat_interval >= self.max_lag_time {
            return bad(
                "replication_heartbeat_interval",
                format!(
                    "{:?} must be shorter than replica_max_lag_time ({:?}), or idle replicas \
                     would leave the sync-state set",
                    self.heartbeat_interval, self.max_lag_time
                ),
            );
        }
        if !(4096..=(64 << 20)).contains(&self.chunk_bytes) {
            return bad(
                "replication_chunk_size",
                format!("{} is outside 4KiB..=64MiB", self.chunk_bytes),
            );
        }
        Ok(())
    }
}
