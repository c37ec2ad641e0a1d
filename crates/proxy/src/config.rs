//! Proxy configuration: limits, clamps and the advertised endpoint.
//!
//! Every field has a default ([`ProxyConfig::default`]); [`ProxyConfig::validate`] checks the
//! cross-field invariants and names the offending key with its allowed range.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use comet_proto::apache::rocketmq::v2::{Address, AddressScheme, Endpoints};
use comet_vocab::limits::{self, InvisibleRange};

use crate::error::ProxyError;

/// Largest gRPC message the official clients accept (tonic 0.9 and grpc-js default: 4 MiB).
/// Every frame the proxy sends stays at or below this size.
pub const MAX_OUTBOUND_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Room reserved in an outbound frame for everything of a delivered message except its body
/// and user properties: system properties (bounded by the `max_*_bytes` limits below), the
/// receipt handle, hosts, timestamps and protobuf framing.
pub const FRAME_HEADROOM_BYTES: usize = 48 * 1024;

/// Settings of one proxy. Durations are inclusive bounds.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `host:port` clients reach this proxy at; every route and assignment names exactly this
    /// one address (IPv6 hosts in brackets: `[::1]:8081`).
    pub advertised_endpoint: String,
    /// Largest accepted message body; echoed to producers as `publishing.max_body_size`.
    /// `max_body_size + max_user_property_bytes + FRAME_HEADROOM_BYTES` must fit in
    /// [`MAX_OUTBOUND_FRAME_BYTES`] so that every stored message can be delivered in one frame.
    pub max_body_size: usize,
    /// Most user properties per message.
    pub max_user_properties: usize,
    /// Most bytes of user property keys plus values per message.
    pub max_user_property_bytes: usize,
    /// Longest tag, in bytes.
    pub max_tag_bytes: usize,
    /// Most bytes of all keys of one message together.
    pub max_keys_bytes: usize,
    /// Longest message group, in bytes (RocketMQ: 64).
    pub max_message_group_bytes: usize,
    /// Longest message id, in bytes.
    pub max_message_id_bytes: usize,
    /// Longest trace context, in bytes.
    pub max_trace_context_bytes: usize,
    /// Longest born host, in bytes.
    pub max_born_host_bytes: usize,
    /// Most messages in one `SendMessage`.
    pub max_batch_messages: usize,
    /// Largest accepted request (a batch of messages), in bytes.
    pub max_inbound_message_bytes: usize,
    /// Furthest a delay message's delivery time may lie in the future (default 40 days; the
    /// broker enforces its own `max_delivery_delay` too).
    pub max_delivery_delay: Duration,
    /// Shortest long poll: a shorter (or zero) request is held this long so that a client
    /// cannot spin, but never beyond the client's own deadline.
    pub long_polling_min: Duration,
    /// Longest long poll; also the value echoed to consumers. Requests above are clamped.
    pub long_polling_max: Duration,
    /// Time kept free before the client's `grpc-timeout` so that the answer arrives in time
    /// (at most a quarter of the deadline).
    pub deadline_margin: Duration,
    /// Shortest invisible time. `ReceiveMessage` below it is rejected with
    /// ILLEGAL_INVISIBLE_TIME; `ChangeInvisibleDuration` below it is clamped up to it.
    pub invisible_min: Duration,
    /// Longest invisible time (receive: rejected above; change: clamped down).
    pub invisible_max: Duration,
    /// Invisible time of receives that carry none (push consumers).
    pub invisible_default: Duration,
    /// Largest receive batch; larger requests are clamped. Echoed as `receive_batch_size`.
    pub max_receive_batch_size: u32,
    /// Deadline of a unary broker call when the client sent no shorter `grpc-timeout`.
    pub broker_timeout: Duration,
    /// Create unknown topics on QueryRoute / SendMessage through the [`crate::TopicCreator`].
    pub auto_create_topics: bool,
    /// Queues per broker set of an auto-created topic.
    pub default_queue_count: u32,
    /// How long to wait for an auto-created topic to appear in the metadata watch.
    pub auto_create_wait: Duration,
    /// Echoed to producers as `publishing.validate_message_type`; the proxy always checks
    /// message types against the topic regardless.
    pub validate_message_type: bool,
    /// A session (client id) unseen for this long and without open telemetry streams is
    /// forgotten.
    pub session_idle_timeout: Duration,
    /// Most time `serve` waits, after the server stopped, for telemetry tasks to end.
    pub shutdown_grace: Duration,
    /// Threads serving client connections, each with its own single-threaded runtime; 0 =
    /// one per available CPU. See [`crate::Proxy::serve`].
    pub io_threads: usize,
    /// Lite consumers: most lite topics one client may subscribe to on a parent topic
    /// (echoed as `subscription.lite_subscription_quota`; more is refused with
    /// LITE_SUBSCRIPTION_QUOTA_EXCEEDED). Default 10,000.
    pub lite_subscription_quota: u32,
    /// Longest lite topic name, in bytes (echoed as `subscription.max_lite_topic_size`;
    /// longer is ILLEGAL_LITE_TOPIC). Default 64, the clients' own default.
    pub max_lite_topic_size: usize,
    /// Where the proxy records its metrics and reports readiness (default: nowhere).
    pub observer: comet_observe::Observer,
    /// Authentication, authorization and TLS of the client port (default: all off).
    pub security: crate::access::ProxySecurity,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            advertised_endpoint: "127.0.0.1:8081".to_owned(),
            max_body_size: MAX_OUTBOUND_FRAME_BYTES - 64 * 1024,
            max_user_properties: 128,
            max_user_property_bytes: 16 * 1024,
            max_tag_bytes: 1024,
            max_keys_bytes: 4 * 1024,
            max_message_group_bytes: 64,
            max_message_id_bytes: 128,
            max_trace_context_bytes: 4 * 1024,
            max_born_host_bytes: 256,
            max_batch_messages: 1024,
            max_inbound_message_bytes: 17 * 1024 * 1024,
            max_delivery_delay: limits::MAX_DELIVERY_DELAY,
            long_polling_min: Duration::from_secs(1),
            long_polling_max: Duration::from_secs(20),
            deadline_margin: Duration::from_millis(500),
            invisible_min: limits::INVISIBLE_MIN,
            invisible_max: limits::INVISIBLE_MAX,
            invisible_default: limits::INVISIBLE_DEFAULT,
            max_receive_batch_size: 32,
            broker_timeout: Duration::from_secs(3),
            auto_create_topics: false,
            default_queue_count: 8,
            auto_create_wait: Duration::from_secs(3),
            validate_message_type: true,
            session_idle_timeout: Duration::from_secs(120),
            shutdown_grace: Duration::from_secs(5),
            io_threads: 0,
            lite_subscription_quota: 10_000,
            max_lite_topic_size: 64,
            observer: comet_observe::Observer::default(),
            security: crate::access::ProxySecurity::default(),
        }
    }
}

/// Most connection threads [`ProxyConfig::io_threads`] accepts.
pub const MAX_IO_THREADS: usize = 256;

impl ProxyConfig {
    /// The number of connection threads to run: `io_threads`, or one per available CPU.
    pub fn resolved_io_threads(&self) -> usize {
        match self.io_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// Checks every invariant the proxy relies on.
    ///
    /// # Errors
    /// [`ProxyError::InvalidConfig`] naming the key and the allowed range.
    pub fn validate(&self) -> Result<(), ProxyError> {
        parse_endpoint(&self.advertised_endpoint)
            .map_err(|reason| invalid("advertised_endpoint", reason))?;
        let body_cap = MAX_OUTBOUND_FRAME_BYTES
            .saturating_sub(FRAME_HEADROOM_BYTES)
            .saturating_sub(self.max_user_property_bytes);
        if self.max_body_size == 0 || self.max_body_size > body_cap {
            return Err(invalid(
                "max_body_size",
                format!(
                    "must be in 1..={body_cap} bytes so that a message with \
                     max_user_property_bytes={} of properties fits one 4 MiB frame, got {}",
                    self.max_user_property_bytes, self.max_body_size
                ),
            ));
        }
        if i32::try_from(self.max_body_size).is_err() {
            return Err(invalid("max_body_size", "must fit in an i32".to_owned()));
        }
        let system_bytes = self.max_tag_bytes
            + self.max_keys_bytes
            + self.max_message_group_bytes
            + self.max_message_id_bytes
            + self.max_trace_context_bytes
            + self.max_born_host_bytes;
        if system_bytes > FRAME_HEADROOM_BYTES / 2 {
            return Err(invalid(
                "max_tag_bytes/max_keys_bytes/max_message_group_bytes/max_message_id_bytes/\
                 max_trace_context_bytes/max_born_host_bytes",
                format!(
                    "together must stay at or below {} bytes, got {system_bytes}",
                    FRAME_HEADROOM_BYTES / 2
                ),
            ));
        }
        if self.io_threads > MAX_IO_THREADS {
            return Err(invalid(
                "io_threads",
                format!(
                    "must be in 0..={MAX_IO_THREADS} (0 = one per CPU), got {}",
                    self.io_threads
                ),
            ));
        }
        if self.max_batch_messages == 0 {
            return Err(invalid(
                "max_batch_messages",
                "must be at least 1".to_owned(),
            ));
        }
        if self.max_inbound_message_bytes < self.max_body_size + self.max_user_property_bytes {
            return Err(invalid(
                "max_inbound_message_bytes",
                "must be at least max_body_size + max_user_property_bytes".to_owned(),
            ));
        }
        if self.long_polling_min > self.long_polling_max || self.long_polling_max.is_zero() {
            return Err(invalid(
                "long_polling_min/long_polling_max",
                format!(
                    "need 0 <= min <= max and max > 0, got {:?} / {:?}",
                    self.long_polling_min, self.long_polling_max
                ),
            ));
        }
        if self.invisible_min.is_zero()
            || self.invisible_min > self.invisible_max
            || self.invisible_default < self.invisible_min
            || self.invisible_default > self.invisible_max
        {
            return Err(invalid(
                "invisible_min/invisible_default/invisible_max",
                format!(
                    "need 0 < min <= default <= max, got {:?} / {:?} / {:?}",
                    self.invisible_min, self.invisible_default, self.invisible_max
                ),
            ));
        }
        if self.max_receive_batch_size == 0 || i32::try_from(self.max_receive_batch_size).is_err() {
            return Err(invalid(
                "max_receive_batch_size",
                "must be in 1..=2147483647".to_owned(),
            ));
        }
        if self.auto_create_topics && self.default_queue_count == 0 {
            return Err(invalid(
                "default_queue_count",
                "must be at least 1 when auto_create_topics is on".to_owned(),
            ));
        }
        if self.broker_timeout.is_zero() {
            return Err(invalid("broker_timeout", "must be positive".to_owned()));
        }
        if self.max_delivery_delay.is_zero()
            || self.max_delivery_delay > limits::MAX_DELIVERY_DELAY_CEILING
        {
            return Err(invalid(
                "max_delivery_delay",
                format!(
                    "must be in (0, {} days]",
                    limits::MAX_DELIVERY_DELAY_CEILING.as_secs() / 86_400
                ),
            ));
        }
        if self.lite_subscription_quota == 0 || i32::try_from(self.lite_subscription_quota).is_err()
        {
            return Err(invalid(
                "lite_subscription_quota",
                "must be in 1..=2147483647".to_owned(),
            ));
        }
        if !(1..=comet_vocab::names::TOPIC_MAX_LEN).contains(&self.max_lite_topic_size) {
            return Err(invalid(
                "max_lite_topic_size",
                format!("must be in 1..={}", comet_vocab::names::TOPIC_MAX_LEN),
            ));
        }
        Ok(())
    }
}

impl ProxyConfig {
    /// The accepted invisible times (`invisible_min`, `invisible_max`, `invisible_default`).
    pub(crate) fn invisible_range(&self) -> InvisibleRange {
        InvisibleRange {
            min: self.invisible_min,
            max: self.invisible_max,
            default: self.invisible_default,
        }
    }
}

fn invalid(key: &'static str, reason: String) -> ProxyError {
    ProxyError::InvalidConfig { key, reason }
}

/// Parses `host:port` (IPv6 as `[addr]:port`) into the one-address [`Endpoints`] used in
/// routes, with the scheme the clients expect for that host.
pub(crate) fn parse_endpoint(endpoint: &str) -> Result<Endpoints, String> {
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| format!("expected host:port, got {endpoint:?}"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port of {endpoint:?} is not a number in 1..=65535"))?;
    if port == 0 {
        return Err(format!("port of {endpoint:?} must not be 0"));
    }
    let (host, scheme) = if let Some(inner) =
        host.strip_prefix('[').and_then(|h| h.strip_suffix(']'))
    {
        inner
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("{inner:?} is not an IPv6 address"))?;
        (inner, AddressScheme::IPv6)
    } else {
        match host.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => (host, AddressScheme::IPv4),
            Ok(IpAddr::V6(_)) => {
                return Err(format!(
                    "IPv6 host in {endpoint:?} must be written as [addr]:port"
                ));
            }
            Err(_) => {
                let valid = !host.is_empty()
                    && host.len() <= 253
                    && host.split('.').all(|l| {
                        !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    });
                if !valid {
                    return Err(format!("{host:?} is not a valid host name"));
                }
                (host, AddressScheme::DomainName)
            }
        }
    };
    Ok(Endpoints {
        scheme: scheme as i32,
        addresses: vec![Address {
            host: host.to_owned(),
            port: i32::from(port),
        }],
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        ProxyConfig::default().validate().unwrap();
    }

    #[test]
    fn endpoint_schemes_follow_the_host() {
        let e = parse_endpoint("127.0.0.1:8081").unwrap();
        assert_eq!(e.scheme, AddressScheme::IPv4 as i32);
        assert_eq!(e.addresses[0].host, "127.0.0.1");
        assert_eq!(e.addresses[0].port, 8081);
        let e = parse_endpoint("[::1]:9").unwrap();
        assert_eq!(e.scheme, AddressScheme::IPv6 as i32);
        assert_eq!(e.addresses[0].host, "::1");
        let e = parse_endpoint("proxy.example-1.svc:8081").unwrap();
        assert_eq!(e.scheme, AddressScheme::DomainName as i32);
        for bad in [
            "nohost",
            ":80",
            "h:0",
            "h:99999",
            "::1:80",
            "bad host:1",
            "[zz]:1",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn body_size_must_leave_room_for_the_frame() {
        let cfg = ProxyConfig {
            max_body_size: MAX_OUTBOUND_FRAME_BYTES,
            ..ProxyConfig::default()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("max_body_size"), "{err}");
    }

    #[test]
    fn io_threads_default_to_one_per_cpu_and_are_bounded() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(ProxyConfig::default().resolved_io_threads(), cpus);
        let three = ProxyConfig {
            io_threads: 3,
            ..ProxyConfig::default()
        };
        assert_eq!(three.resolved_io_threads(), 3);
        let cfg = ProxyConfig {
            io_threads: MAX_IO_THREADS + 1,
            ..ProxyConfig::default()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("io_threads") && err.contains("0..=256"),
            "{err}"
        );
    }

    #[test]
    fn invisible_bounds_are_ordered() {
        let cfg = ProxyConfig {
            invisible_default: Duration::from_millis(10),
            ..ProxyConfig::default()
        };
        assert!(cfg.validate().is_err());
    }
}
