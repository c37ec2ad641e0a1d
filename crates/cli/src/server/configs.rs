//! The server configuration ([`Config`]) mapped onto each crate's own config type. Values are
//! copied as they are: every crate validates its own config when it starts.

use comet_broker::{BrokerConfig, HaConfig, RedeliveryDelay, ReplicationMode};
use comet_controller::ControllerConfig;
use comet_proxy::ProxyConfig;

use crate::config::{Config, FlushMode, Redelivery, ReplicationModeKey};

/// The controller of `cfg`, advertised at `advertised`.
pub fn controller(cfg: &Config, advertised: String) -> anyhow::Result<ControllerConfig> {
    let c = &cfg.controller;
    Ok(ControllerConfig {
        node_id: c.node_id,
        data_dir: cfg.data_dir.join("controller"),
        cluster_name: c.cluster_name.clone(),
        advertised_addr: advertised,
        broker_lease: c.broker_lease.0,
        heartbeat_interval: c.heartbeat_interval.0,
        election_timeout_min: c.election_timeout_min.0,
        election_timeout_max: c.election_timeout_max.0,
        peers: cfg.peers()?,
        join: c.join,
        enable_unclean_election: c.enable_unclean_election,
        raft_source_ip: match c.raft_source_ip.trim() {
            "" => None,
            ip => Some(ip.parse().map_err(|_| {
                anyhow::anyhow!(
                    "controller.raft_source_ip {ip:?} is not an IP address (e.g. 10.0.0.1); \
                     leave it empty to let the system pick"
                )
            })?),
        },
        auth: comet_controller::access::ControllerAuth {
            settings: cfg.gate_settings(),
            cipher: cfg.cipher()?,
            bootstrap: (!cfg.auth.bootstrap_username.is_empty()).then(|| {
                (
                    cfg.auth.bootstrap_username.clone(),
                    cfg.auth.bootstrap_password.clone(),
                )
            }),
        },
        ..ControllerConfig::default()
    })
}

/// The broker of `cfg`, advertised (and registered) at `advertised`.
pub fn broker(cfg: &Config, advertised: String) -> BrokerConfig {
    let b = &cfg.broker;
    BrokerConfig {
        broker_set: b.broker_set.clone(),
        broker_id: b.broker_id,
        data_dir: cfg.data_dir.join("broker"),
        advertised_addr: advertised,
        flush: match b.flush {
            FlushMode::Async => comet_store::FlushPolicy::Async {
                interval: b.flush_interval.0,
            },
            FlushMode::Sync => comet_store::FlushPolicy::Sync {
                timeout: b.sync_flush_timeout.0,
            },
        },
        segment_size: b.segment_size.0,
        retention: comet_store::RetentionConfig {
            file_reserved_time: b.file_reserved_time.0,
            disk_high_watermark: b.disk_high_watermark,
            disk_refuse_watermark: b.disk_refuse_watermark,
            ..comet_store::RetentionConfig::default()
        },
        default_max_retries: b.max_retries,
        redelivery: match b.redelivery {
            Redelivery::GroupBackoff => RedeliveryDelay::DeadlinePlusGroupBackoff,
            Redelivery::InvisibleTime => RedeliveryDelay::InvisibleTime,
        },
        max_delivery_delay: b.max_delivery_delay.0,
        timer_slot: b.timer_slot.0,
        transaction_timeout: b.transaction_timeout.0,
        transaction_check_interval: b.transaction_check_interval.0,
        transaction_max_checks: b.transaction_max_checks,
        broadcast_client_ttl: b.broadcast_client_ttl.0,
        lite_topic_ttl: b.lite_topic_ttl.0,
        max_lite_topics: b.max_lite_topics,
        // One invisible-time rule: the broker refuses what the proxy would (comet_vocab's
        // InvisibleRange), so both take the bounds from the proxy's settings.
        max_invisible_duration: cfg.proxy.invisible_max.0,
        default_invisible_duration: cfg.proxy.invisible_default.0,
        ..BrokerConfig::default()
    }
}

/// The replication settings of a broker in a replicated broker set.
pub fn replication(cfg: &Config) -> HaConfig {
    let b = &cfg.broker;
    HaConfig {
        mode: match b.replication_mode {
            ReplicationModeKey::Async => ReplicationMode::Async,
            ReplicationModeKey::Sync => ReplicationMode::Sync,
        },
        min_in_sync_replicas: b.min_in_sync_replicas,
        sync_timeout: b.sync_replication_timeout.0,
        max_lag_time: b.replica_max_lag_time.0,
        max_lag_bytes: b.replica_max_lag_bytes.0,
        chunk_bytes: usize::try_from(b.replication_chunk_size.0).unwrap_or(usize::MAX),
        heartbeat_interval: b.replication_heartbeat_interval.0,
        consumer_offsets_interval: b.consumer_offsets_sync_interval.0,
        // The node sets its internal connector (`tls.internal_*`) when it starts the broker.
        connector: comet_auth::Connector::plaintext(),
    }
}

/// The proxy of `cfg`, giving clients `advertised` in routes.
///
/// # Errors
/// An unreadable cluster key or TLS certificate.
pub fn proxy(cfg: &Config, advertised: String) -> anyhow::Result<ProxyConfig> {
    let p = &cfg.proxy;
    let security = comet_proxy::ProxySecurity {
        auth: cfg.gate_settings(),
        cipher: cfg.cipher()?,
        tls: cfg.tls_acceptor()?,
    };
    Ok(ProxyConfig {
        advertised_endpoint: advertised,
        max_body_size: usize::try_from(p.max_body_size.0).unwrap_or(usize::MAX),
        max_user_properties: p.max_user_properties,
        max_user_property_bytes: usize::try_from(p.max_user_property_size.0).unwrap_or(usize::MAX),
        long_polling_min: p.long_polling_min.0,
        long_polling_max: p.long_polling_max.0,
        invisible_min: p.invisible_min.0,
        invisible_max: p.invisible_max.0,
        invisible_default: p.invisible_default.0,
        auto_create_topics: p.auto_create_topics,
        default_queue_count: p.default_queue_count,
        max_delivery_delay: p.max_delivery_delay.0,
        io_threads: p.io_threads,
        lite_subscription_quota: p.lite_subscription_quota,
        max_lite_topic_size: p.max_lite_topic_size,
        security,
        ..ProxyConfig::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_raft_source_ip_when_mapped_should_bind_to_it_or_name_the_key_when_bad() {
        let mut cfg = Config::default();
        let mapped = controller(&cfg, "127.0.0.1:9878".to_owned()).expect("defaults map");
        assert_eq!(mapped.raft_source_ip, None, "empty: the system picks");
        cfg.controller.raft_source_ip = "127.0.0.2".to_owned();
        let mapped = controller(&cfg, "127.0.0.1:9878".to_owned()).expect("an IP maps");
        assert_eq!(mapped.raft_source_ip, Some([127, 0, 0, 2].into()));
        cfg.controller.raft_source_ip = "127.0.0.2:9878".to_owned();
        let err = controller(&cfg, "127.0.0.1:9878".to_owned())
            .expect_err("an address with a port is refused");
        assert!(
            err.to_string().contains("controller.raft_source_ip"),
            "{err}"
        );
    }
}
