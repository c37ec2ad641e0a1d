//! Broker configuration, defaults and validation.

use std::path::PathBuf;
use std::time::Duration;

pub use comet_store::FlushPolicy;
use comet_store::RetentionConfig;
use comet_vocab::limits::{self, InvisibleRange};
use comet_vocab::names;

use crate::error::BrokerError;

/// Shortest invisible time the broker accepts on a receive, and the floor a change is raised
/// to: any positive time. The proxy refuses receives below its own configured minimum (and
/// raises changes to it) before they get here; the broker serves proxies whatever their
/// minimum, so it only refuses what no proxy can send.
pub(crate) const INVISIBLE_FLOOR: Duration = Duration::from_nanos(1);

/// When a message that was not acknowledged becomes visible again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedeliveryDelay {
    /// RocketMQ 5 POP semantics: the invisible duration *is* the backoff. A message becomes
    /// visible again exactly when its invisible deadline passes. Clients that want a longer
    /// delay after a failure say so with `ChangeInvisibleDuration` (the official push consumers
    /// do exactly that with their backoff policy). Default.
    #[default]
    InvisibleTime,
    /// The group's retry policy is added on top: visible again at
    /// `deadline + backoff(delivery_attempt)` (RocketMQ 4 style retry delays). The policy is the
    /// group's `retry_policy` from metadata, or the RocketMQ default customized backoff
    /// (1s 5s 10s 30s 1m 2m ... 2h).
    DeadlinePlusGroupBackoff,
}

/// Where a consumer group starts on a queue it has never consumed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsumeFrom {
    /// The oldest message still stored (nothing sent before the group's first receive is
    /// missed). Default.
    #[default]
    First,
    /// The end of the queue: only messages that arrive after the group's first receive.
    Last,
}

/// Everything a broker needs to open. Build with [`BrokerConfig::default`] and adjust.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Name of the broker set this broker belongs to; the prefix of every receipt handle
    /// (`"<broker_set>~..."`). A broker-set name as the controller accepts it
    /// (`comet_vocab::names::validate_broker_set`: 1..=127 bytes of `[a-zA-Z0-9_.-]`, so
    /// never `~`). Default `broker-a`.
    pub broker_set: String,
    /// Id of this broker within its set (0 = master). Default 0.
    pub broker_id: u64,
    /// Root directory: the store lives in `<data_dir>/store`, consumer state in
    /// `<data_dir>/consumer`.
    pub data_dir: PathBuf,
    /// The `host:port` shown as `store_host` on delivered messages, e.g. `127.0.0.1:10911`.
    pub advertised_addr: String,
    /// Commitlog flush policy (default: asynchronous, every 500 ms).
    pub flush: FlushPolicy,
    /// Commitlog segment size in bytes (default 1 GiB; at least 4 KiB).
    pub segment_size: u64,
    /// Redeliveries allowed for a group that is not in metadata (default 16,
    /// `comet_vocab::limits::DEFAULT_MAX_RETRIES`): a message is
    /// delivered at most `default_max_retries + 1` times before it goes to `%DLQ%<group>`.
    pub default_max_retries: u32,
    /// Invisible duration used when a receive request carries none (auto-renewing push
    /// consumers whose proxy did not choose one). Default 60 s, RocketMQ's
    /// `defaultInvisibleTimeMills` (`comet_vocab::limits::INVISIBLE_DEFAULT`).
    pub default_invisible_duration: Duration,
    /// Longest invisible duration accepted: longer receives and changes are refused with
    /// ILLEGAL_INVISIBLE_TIME, as the proxy refuses them (default 12 h,
    /// `comet_vocab::limits::INVISIBLE_MAX`).
    pub max_invisible_duration: Duration,
    /// Longest long poll honoured; longer requests are clamped (default 60 s; the proxy
    /// already clamps to its own limit).
    pub max_long_polling: Duration,
    /// Largest receive batch; larger requests are capped (default 32).
    pub max_batch_size: u32,
    /// Most messages of one (group, topic, queue) in flight at once; at the limit receive
    /// skips new messages of that queue until some are acknowledged (default 2000).
    pub max_inflight_per_queue: usize,
    /// When un-acknowledged messages become visible again (default: at the deadline).
    pub redelivery: RedeliveryDelay,
    /// Where a new group starts on a queue (default: the oldest stored message).
    pub consume_from: ConsumeFrom,
    /// How often the consumer-state log is fsynced (default 100 ms). Changes are written to it
    /// as they happen and an ack or invisible-time change is answered only once written, so a
    /// process crash loses no acknowledged ack; a power loss loses at most this interval of
    /// consumer progress (those messages are delivered again; nothing un-acked is lost).
    pub state_persist_interval: Duration,
    /// Size of the consumer-state log that triggers a compaction into a snapshot
    /// (default 64 MiB).
    pub state_compact_bytes: u64,
    /// How long shutdown waits for in-progress calls before closing the store anyway
    /// (default 10 s).
    pub shutdown_grace: Duration,
    /// Retention and disk watermarks of the store.
    pub retention: RetentionConfig,
    /// Furthest in the future a delay message's `delivery_timestamp` may lie (default 40 days,
    /// `comet_vocab::limits::MAX_DELIVERY_DELAY`; at most
    /// `comet_vocab::limits::MAX_DELIVERY_DELAY_CEILING`, one year). Later times are refused
    /// with ILLEGAL_DELIVERY_TIME (`comet_vocab::limits::check_delivery_time`, the proxy's
    /// rule); a time in the past delivers at once.
    pub max_delivery_delay: Duration,
    /// Granularity of the on-disk timer wheel index (default 1 s; fixed once the timer store
    /// exists). Delivery is at millisecond precision regardless.
    pub timer_slot: Duration,
    /// How long a half (transactional) message may stay unresolved before the broker first
    /// asks a producer about it (default 6 s, RocketMQ's `transactionTimeOut`). A message's own
    /// `orphaned_transaction_recovery_duration` raises it for that message.
    pub transaction_timeout: Duration,
    /// Interval between two checks of the same unresolved transaction (default 60 s,
    /// RocketMQ's `transactionCheckInterval`).
    pub transaction_check_interval: Duration,
    /// Checks of an unresolved transaction before its half message is discarded and recorded
    /// (default 15, RocketMQ's `transactionCheckMax`).
    pub transaction_max_checks: u32,
    /// Broadcast consumer groups: how long the position of a client that stopped receiving is
    /// kept (default 1 h). After it, the client's positions and its messages in flight are
    /// forgotten; a client coming back with the same id starts afresh, like a new one.
    pub broadcast_client_ttl: Duration,
    /// Lite topics (RIP-83): a lite topic with no message stored for this long is removed,
    /// with the consumer positions on it, and every client subscribed to it is told
    /// (NotifyUnsubscribeLiteCommand). Default 24 h; at least 100 ms.
    pub lite_topic_ttl: Duration,
    /// Most lite topics this broker holds (all parent topics together); a send that would
    /// create one more is refused with LITE_TOPIC_QUOTA_EXCEEDED. Default 1,000,000.
    pub max_lite_topics: usize,
    /// Where the broker node records its metrics and reports readiness (default: nowhere).
    pub observer: comet_observe::Observer,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            broker_set: "broker-a".to_owned(),
            broker_id: 0,
            data_dir: PathBuf::from("data/broker"),
            advertised_addr: "127.0.0.1:10911".to_owned(),
            flush: FlushPolicy::default(),
            segment_size: 1 << 30,
            default_max_retries: limits::DEFAULT_MAX_RETRIES,
            default_invisible_duration: limits::INVISIBLE_DEFAULT,
            max_invisible_duration: limits::INVISIBLE_MAX,
            max_long_polling: Duration::from_secs(60),
            max_batch_size: 32,
            max_inflight_per_queue: 2000,
            redelivery: RedeliveryDelay::default(),
            consume_from: ConsumeFrom::default(),
            state_persist_interval: Duration::from_millis(100),
            state_compact_bytes: 64 << 20,
            shutdown_grace: Duration::from_secs(10),
            retention: RetentionConfig::default(),
            max_delivery_delay: limits::MAX_DELIVERY_DELAY,
            timer_slot: Duration::from_secs(1),
            transaction_timeout: Duration::from_secs(6),
            transaction_check_interval: Duration::from_secs(60),
            transaction_max_checks: 15,
            broadcast_client_ttl: Duration::from_secs(3600),
            lite_topic_ttl: Duration::from_secs(86_400),
            max_lite_topics: 1_000_000,
            observer: comet_observe::Observer::default(),
        }
    }
}

impl BrokerConfig {
    /// Checks every value against its allowed range.
    ///
    /// # Errors
    /// [`BrokerError::Config`] naming the key and what is allowed.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let bad = |key: &'static str, reason: String| Err(BrokerError::Config { key, reason });
        if let Err(e) = names::validate_broker_set(&self.broker_set) {
            return bad("broker_set", e.to_string());
        }
        if self.advertised_addr.is_empty() {
            return bad("advertised_addr", "must be a non-empty host:port".into());
        }
        if self.segment_size < comet_store::config::MIN_SEGMENT_SIZE as u64
            || self.segment_size > (1 << 40)
        {
            return bad(
                "segment_size",
                format!("{} is outside 4096..=1TiB", self.segment_size),
            );
        }
        if self.default_invisible_duration.is_zero()
            || self.default_invisible_duration > self.max_invisible_duration
        {
            return bad(
                "default_invisible_duration",
                format!(
                    "{:?} must be greater than 0 and at most max_invisible_duration ({:?})",
                    self.default_invisible_duration, self.max_invisible_duration
                ),
            );
        }
        if !(1..=1024).contains(&self.max_batch_size) {
            return bad(
                "max_batch_size",
                format!("{} is outside 1..=1024", self.max_batch_size),
            );
        }
        if !(1..=1_000_000).contains(&self.max_inflight_per_queue) {
            return bad(
                "max_inflight_per_queue",
                format!("{} is outside 1..=1000000", self.max_inflight_per_queue),
            );
        }
        if self.state_persist_interval.is_zero()
            || self.state_persist_interval > Duration::from_secs(10)
        {
            return bad(
                "state_persist_interval",
                format!("{:?} is outside (0, 10s]", self.state_persist_interval),
            );
        }
        if self.max_delivery_delay.is_zero()
            || self.max_delivery_delay > limits::MAX_DELIVERY_DELAY_CEILING
        {
            return bad(
                "max_delivery_delay",
                format!(
                    "{:?} is outside (0, {} days]",
                    self.max_delivery_delay,
                    limits::MAX_DELIVERY_DELAY_CEILING.as_secs() / 86_400
                ),
            );
        }
        if self.timer_slot < Duration::from_millis(1) || self.timer_slot > Duration::from_secs(3600)
        {
            return bad(
                "timer_slot",
                format!("{:?} is outside [1ms, 1h]", self.timer_slot),
            );
        }
        if self.transaction_timeout.is_zero()
            || self.transaction_timeout > Duration::from_secs(86_400)
        {
            return bad(
                "transaction_timeout",
                format!("{:?} is outside (0, 1 day]", self.transaction_timeout),
            );
        }
        if self.lite_topic_ttl < Duration::from_millis(100)
            || self.lite_topic_ttl > Duration::from_secs(365 * 86_400)
        {
            return bad(
                "lite_topic_ttl",
                format!("{:?} is outside [100ms, 365 days]", self.lite_topic_ttl),
            );
        }
        if !(1..=100_000_000).contains(&self.max_lite_topics) {
            return bad(
                "max_lite_topics",
                format!("{} is outside 1..=100000000", self.max_lite_topics),
            );
        }
        if self.broadcast_client_ttl < Duration::from_millis(100)
            || self.broadcast_client_ttl > Duration::from_secs(30 * 86_400)
        {
            return bad(
                "broadcast_client_ttl",
                format!(
                    "{:?} is outside [100ms, 30 days]",
                    self.broadcast_client_ttl
                ),
            );
        }
        if self.transaction_check_interval < Duration::from_millis(10)
            || self.transaction_check_interval > Duration::from_secs(86_400)
        {
            return bad(
                "transaction_check_interval",
                format!(
                    "{:?} is outside [10ms, 1 day]",
                    self.transaction_check_interval
                ),
            );
        }
        if !(1..=1000).contains(&self.transaction_max_checks) {
            return bad(
                "transaction_max_checks",
                format!("{} is outside 1..=1000", self.transaction_max_checks),
            );
        }
        if self.state_compact_bytes < 4096 {
            return bad(
                "state_compact_bytes",
                format!("{} must be at least 4096", self.state_compact_bytes),
            );
        }
        Ok(())
    }

    /// The invisible times this broker accepts: any positive one up to
    /// `max_invisible_duration`, `default_invisible_duration` for a receive that carries none.
    /// Applied with the proxy's rules (`InvisibleRange::for_receive` / `for_change`).
    pub(crate) fn invisible_range(&self) -> InvisibleRange {
        InvisibleRange {
            min: INVISIBLE_FLOOR,
            max: self.max_invisible_duration,
            default: self.default_invisible_duration,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn given_defaults_when_validated_should_pass() {
        BrokerConfig::default().validate().unwrap();
    }

    #[test]
    fn given_bad_values_when_validated_should_name_the_key() {
        let mut c = BrokerConfig {
            broker_set: "a~b".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("broker_set"));
        c.broker_set = "a".into();
        c.segment_size = 10;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("segment_size")
        );
        c.segment_size = 1 << 20;
        c.max_batch_size = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("max_batch_size")
        );
    }

    #[test]
    fn given_broker_sets_and_delays_when_validated_should_follow_comet_vocab() {
        for bad in ["", "a~b", "a/b", "a b", &"x".repeat(128)] {
            let c = BrokerConfig {
                broker_set: bad.to_owned(),
                ..Default::default()
            };
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("broker_set"), "{bad:?}: {err}");
        }
        for good in ["broker-a", "set_1.eu", &"x".repeat(127)] {
            let c = BrokerConfig {
                broker_set: good.to_owned(),
                ..Default::default()
            };
            c.validate().unwrap();
        }
        let c = BrokerConfig {
            max_delivery_delay: limits::MAX_DELIVERY_DELAY_CEILING,
            ..Default::default()
        };
        c.validate().unwrap();
        let c = BrokerConfig {
            max_delivery_delay: limits::MAX_DELIVERY_DELAY_CEILING + Duration::from_secs(1),
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("max_delivery_delay")
        );
    }

    #[test]
    fn given_the_default_config_its_invisible_range_should_be_positive_up_to_the_maximum() {
        let r = BrokerConfig::default().invisible_range();
        assert_eq!(r.default, limits::INVISIBLE_DEFAULT);
        assert_eq!(r.max, limits::INVISIBLE_MAX);
        assert_eq!(r.for_receive(None), Ok(limits::INVISIBLE_DEFAULT));
        let zero = prost_types::Duration::default();
        assert!(r.for_receive(Some(&zero)).is_err());
        assert_eq!(r.for_change(Some(&zero)), Ok(INVISIBLE_FLOOR));
    }
}
