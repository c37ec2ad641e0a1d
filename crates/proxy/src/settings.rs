//! The telemetry settings echo (grpc-compat.md §4 and §8).
//!
//! The echo keeps the client's settings and its pub_sub case and fills in the server's values:
//! - producers: `backoff_policy{max_attempts 3, exponential 10 ms → 1 s ×2}` (Node crashes
//!   without an exponential policy), `publishing.max_body_size` (> 0; Python and Node use it),
//!   `publishing.validate_message_type`;
//! - consumers: `subscription.long_polling_timeout`, `receive_batch_size`, `fifo` from the
//!   group, `backoff_policy` from the group's retry policy with `max_attempts = max_retries + 1`;
//!   Node only understands exponential backoff, so Node clients get an exponential
//!   approximation of a customized schedule;
//! - everyone: `metric{on: false}`.

use std::time::Duration;

use comet_proto::apache::rocketmq::v2::{
    CustomizedBackoff, ExponentialBackoff, Metric, RetryPolicy, Settings, retry_policy, settings,
};
use comet_proto::comet::v1::Group;
use comet_vocab::limits::{DEFAULT_BACKOFF_SECS, DEFAULT_MAX_RETRIES};

use crate::config::ProxyConfig;
use crate::status::{Failure, Outcome};

/// Durations are converted the one way both proxy and broker do.
pub(crate) use comet_vocab::duration::{from_proto, to_proto as duration};

/// Producer send attempts (first try + retries) echoed to producers.
const PRODUCER_MAX_ATTEMPTS: i32 = 3;

fn producer_backoff() -> RetryPolicy {
    RetryPolicy {
        max_attempts: PRODUCER_MAX_ATTEMPTS,
        strategy: Some(retry_policy::Strategy::ExponentialBackoff(
            ExponentialBackoff {
                initial: Some(duration(Duration::from_millis(10))),
                max: Some(duration(Duration::from_secs(1))),
                multiplier: 2.0,
            },
        )),
    }
}

fn default_customized() -> CustomizedBackoff {
    CustomizedBackoff {
        next: DEFAULT_BACKOFF_SECS
            .iter()
            .map(|&s| duration(Duration::from_secs(s)))
            .collect(),
    }
}

/// An exponential policy spanning the same range as a customized schedule.
fn exponential_from(c: &CustomizedBackoff) -> ExponentialBackoff {
    let steps: Vec<Duration> = c.next.iter().filter_map(from_proto).collect();
    let initial = steps.first().copied().unwrap_or(Duration::from_secs(1));
    let max = steps.iter().max().copied().unwrap_or(initial).max(initial);
    let multiplier = if steps.len() >= 2 && !initial.is_zero() {
        let ratio = max.as_secs_f64() / initial.as_secs_f64();
        ratio.powf(1.0 / (steps.len() - 1) as f64).max(1.0) as f32
    } else {
        1.0
    };
    ExponentialBackoff {
        initial: Some(duration(initial)),
        max: Some(duration(max)),
        multiplier,
    }
}

/// The consumer backoff for a group (None: unknown group, defaults apply).
pub(crate) fn consumer_backoff(group: Option<&Group>, node: bool) -> RetryPolicy {
    let max_retries = group.map_or(DEFAULT_MAX_RETRIES, |g| g.max_retries);
    let configured = group
        .and_then(|g| g.retry_policy.as_ref())
        .and_then(|p| p.strategy.clone());
    let strategy = match configured {
        Some(retry_policy::Strategy::ExponentialBackoff(e)) => {
            retry_policy::Strategy::ExponentialBackoff(e)
        }
        Some(retry_policy::Strategy::CustomizedBackoff(c)) if !c.next.is_empty() => {
            if node {
                retry_policy::Strategy::ExponentialBackoff(exponential_from(&c))
            } else {
                retry_policy::Strategy::CustomizedBackoff(c)
            }
        }
        _ => {
            let c = default_customized();
            if node {
                retry_policy::Strategy::ExponentialBackoff(exponential_from(&c))
            } else {
                retry_policy::Strategy::CustomizedBackoff(c)
            }
        }
    };
    RetryPolicy {
        max_attempts: i32::try_from(max_retries.saturating_add(1)).unwrap_or(i32::MAX),
        strategy: Some(strategy),
    }
}

/// Whether the settings are a lite consumer's (LITE_PUSH_CONSUMER, LITE_SIMPLE_CONSUMER).
fn lite_consumer(client: &Settings) -> bool {
    matches!(
        client
            .client_type
            .and_then(|t| comet_proto::apache::rocketmq::v2::ClientType::try_from(t).ok()),
        Some(
            comet_proto::apache::rocketmq::v2::ClientType::LitePushConsumer
                | comet_proto::apache::rocketmq::v2::ClientType::LiteSimpleConsumer
        )
    )
}

/// Builds the echo for a client's settings. `group` is the consumer group's metadata (if the
/// group exists), `node` whether the client is the Node.js SDK.
pub(crate) fn echo(
    cfg: &ProxyConfig,
    client: &Settings,
    group: Option<&Group>,
    node: bool,
) -> Outcome<Settings> {
    let mut out = client.clone();
    out.metric = Some(Metric {
        on: false,
        endpoints: None,
    });
    match out.pub_sub.as_mut() {
        Some(settings::PubSub::Publishing(p)) => {
            p.max_body_size = i32::try_from(cfg.max_body_size).unwrap_or(i32::MAX);
            p.validate_message_type = cfg.validate_message_type;
            out.backoff_policy = Some(producer_backoff());
        }
        Some(settings::PubSub::Subscription(s)) => {
            let requested = s.long_polling_timeout.as_ref().and_then(from_proto);
            let lp = requested
                .filter(|d| !d.is_zero())
                .map_or(cfg.long_polling_max, |d| {
                    d.clamp(cfg.long_polling_min, cfg.long_polling_max)
                });
            s.long_polling_timeout = Some(duration(lp));
            s.receive_batch_size = Some(i32::try_from(cfg.max_receive_batch_size).unwrap_or(32));
            s.fifo = Some(group.is_some_and(|g| g.fifo));
            if lite_consumer(client) {
                // Lite topics are ordered: the clients' FIFO consume service keeps that order
                // per lite topic.
                s.fifo = Some(true);
                s.lite_subscription_quota =
                    Some(i32::try_from(cfg.lite_subscription_quota).unwrap_or(i32::MAX));
                s.max_lite_topic_size =
                    Some(i32::try_from(cfg.max_lite_topic_size).unwrap_or(i32::MAX));
            }
            out.backoff_policy = Some(consumer_backoff(group, node));
        }
        None => {
            return Err(Failure::bad_request(
                "settings carry neither publishing (producer) nor subscription (consumer)",
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use comet_proto::apache::rocketmq::v2::{Publishing, Subscription};

    #[test]
    fn producer_echo_fills_server_values() {
        let client = Settings {
            pub_sub: Some(settings::PubSub::Publishing(Publishing::default())),
            ..Settings::default()
        };
        let e = echo(&ProxyConfig::default(), &client, None, true).unwrap();
        let Some(settings::PubSub::Publishing(p)) = e.pub_sub else {
            panic!("pub_sub case changed")
        };
        assert_eq!(
            p.max_body_size as usize,
            ProxyConfig::default().max_body_size
        );
        assert!(p.validate_message_type);
        let b = e.backoff_policy.unwrap();
        assert_eq!(b.max_attempts, 3);
        assert!(matches!(
            b.strategy,
            Some(retry_policy::Strategy::ExponentialBackoff(_))
        ));
        assert_eq!(e.metric.map(|m| m.on), Some(false));
    }

    #[test]
    fn consumer_backoff_is_exponential_for_node_only() {
        let b = consumer_backoff(None, false);
        assert_eq!(b.max_attempts, 17);
        let Some(retry_policy::Strategy::CustomizedBackoff(c)) = b.strategy else {
            panic!("default is customized")
        };
        assert_eq!(c.next.len(), 18);
        let b = consumer_backoff(None, true);
        let Some(retry_policy::Strategy::ExponentialBackoff(e)) = b.strategy else {
            panic!("node gets exponential")
        };
        assert_eq!(e.initial.unwrap().seconds, 1);
        assert_eq!(e.max.unwrap().seconds, 7200);
        assert!(e.multiplier > 1.5 && e.multiplier < 1.8, "{}", e.multiplier);
        let g = Group {
            name: "g".into(),
            max_retries: 2,
            retry_policy: None,
            fifo: true,
            priority_percent: None,
            ..Default::default()
        };
        assert_eq!(consumer_backoff(Some(&g), false).max_attempts, 3);
    }

    #[test]
    fn lite_consumer_echo_carries_the_quotas_and_fifo() {
        use comet_proto::apache::rocketmq::v2::ClientType;
        for t in [ClientType::LitePushConsumer, ClientType::LiteSimpleConsumer] {
            let client = Settings {
                client_type: Some(t as i32),
                pub_sub: Some(settings::PubSub::Subscription(Subscription::default())),
                ..Settings::default()
            };
            let e = echo(&ProxyConfig::default(), &client, None, false).unwrap();
            let Some(settings::PubSub::Subscription(s)) = e.pub_sub else {
                panic!("pub_sub case changed")
            };
            assert_eq!(s.lite_subscription_quota, Some(10_000));
            assert_eq!(s.max_lite_topic_size, Some(64));
            assert_eq!(s.fifo, Some(true));
        }
        let plain = Settings {
            client_type: Some(ClientType::PushConsumer as i32),
            pub_sub: Some(settings::PubSub::Subscription(Subscription::default())),
            ..Settings::default()
        };
        let e = echo(&ProxyConfig::default(), &plain, None, false).unwrap();
        let Some(settings::PubSub::Subscription(s)) = e.pub_sub else {
            panic!("pub_sub case changed")
        };
        assert_eq!(s.lite_subscription_quota, None);
    }

    #[test]
    fn consumer_echo_clamps_polling_and_sets_fifo() {
        let client = Settings {
            pub_sub: Some(settings::PubSub::Subscription(Subscription {
                long_polling_timeout: Some(duration(Duration::from_secs(40))),
                ..Subscription::default()
            })),
            ..Settings::default()
        };
        let g = Group {
            name: "g".into(),
            max_retries: 16,
            retry_policy: None,
            fifo: true,
            priority_percent: None,
            ..Default::default()
        };
        let e = echo(&ProxyConfig::default(), &client, Some(&g), false).unwrap();
        let Some(settings::PubSub::Subscription(s)) = e.pub_sub else {
            panic!("pub_sub case changed")
        };
        assert_eq!(s.long_polling_timeout.unwrap().seconds, 20);
        assert_eq!(s.receive_batch_size, Some(32));
        assert_eq!(s.fifo, Some(true));
    }

    #[test]
    fn settings_without_pub_sub_are_rejected() {
        let err = echo(&ProxyConfig::default(), &Settings::default(), None, false).unwrap_err();
        assert_eq!(
            err.code,
            comet_proto::apache::rocketmq::v2::Code::BadRequest
        );
    }
}
