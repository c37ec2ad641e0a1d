//! Proxy integration tests: a real proxy on 127.0.0.1:0 over in-memory fake brokers, driven by
//! the generated `apache.rocketmq.v2` tonic client.
#![allow(clippy::unwrap_used)]

mod auth;
mod fake_broker;
mod harness;
mod messaging;
mod offset;
mod ops;
mod route;
mod status_table;
mod telemetry;
mod tls;
mod transaction;
mod validation;

use std::time::Duration;

use comet_proto::apache::rocketmq::v2::{Message, SystemProperties};

/// A message for `topic` with a unique id and `body`.
pub fn message(topic: Option<comet_proto::apache::rocketmq::v2::Resource>, body: &[u8]) -> Message {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    Message {
        topic,
        user_properties: Default::default(),
        system_properties: Some(SystemProperties {
            message_id: format!("01AbCdEf{:08}", NEXT.fetch_add(1, Ordering::Relaxed)),
            born_host: "test-host".into(),
            born_timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..SystemProperties::default()
        }),
        body: bytes::Bytes::copy_from_slice(body),
    }
}

/// Polls `pred` every 10 ms until it holds or `limit` passes.
pub async fn wait_until(limit: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if pred() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
