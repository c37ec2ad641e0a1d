//! The broker's side of its controller lease: [`heartbeat_loop`] registers the broker with the
//! controller cluster and renews its lease, and for a replicated broker reports its log
//! (epoch, end) for elections and turns every answered heartbeat into the lease deadline its
//! master role writes under ([`HeartbeatHooks`]).
//!
//! # Invariants
//! - A master's write lease ends [`MASTER_LEASE_SHARE`] of the controller's lease after the
//!   heartbeat was *sent*, so it lapses before the controller's lease (renewed when the
//!   heartbeat arrived) can, and before another master can be elected.
//! - The loop never holds up shutdown: a call in progress is dropped when the token fires, even
//!   while it retries an unreachable controller.

use std::sync::Arc;
use std::time::Duration;

use comet_proto::comet::v1::{BrokerHeartbeatRequest, RegisterBrokerRequest};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::controller_client::ControllerClient;

/// What a replicated broker adds to its heartbeats.
#[derive(Clone)]
pub struct HeartbeatHooks {
    /// The newest master epoch in the broker's log and the log's end (for elections).
    pub log_report: Arc<dyn Fn() -> (u64, i64) + Send + Sync>,
    /// Set after every answered heartbeat to the time until which the broker may act as
    /// master: its send time plus [`MASTER_LEASE_SHARE`] of the controller's lease, so it ends
    /// before the controller's lease (renewed when the heartbeat arrived) can lapse.
    pub lease: watch::Sender<Option<std::time::Instant>>,
}

/// Share of the controller's broker lease a master may write for after a heartbeat was sent.
pub const MASTER_LEASE_SHARE: f64 = 0.75;

/// Who the broker is, as it registers.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The broker set it belongs to.
    pub broker_set: String,
    /// Its id within the set.
    pub broker_id: u64,
    /// The address peers and proxies reach its internal API at.
    pub address: String,
}

/// Registers the broker and renews its lease every third of the lease until `shutdown` is
/// cancelled. Registration is retried until it succeeds; a failed heartbeat re-registers.
pub async fn heartbeat_loop(
    client: ControllerClient,
    me: Registration,
    hooks: Option<HeartbeatHooks>,
    shutdown: CancellationToken,
) {
    let Registration {
        broker_set,
        broker_id,
        address,
    } = me;
    let mut registered = false;
    let mut interval = Duration::from_secs(1);
    loop {
        // A call retries an unreachable controller for up to its whole deadline: on shutdown
        // (the local controller may stop right after this loop) it must not hold the stop.
        let call = async {
            if registered {
                let sent = std::time::Instant::now();
                let (log_epoch, log_end_offset) =
                    hooks.as_ref().map_or((0, 0), |h| (h.log_report)());
                client
                    .call(|mut c| {
                        let req = BrokerHeartbeatRequest {
                            broker_set: broker_set.clone(),
                            broker_id,
                            log_epoch,
                            log_end_offset,
                        };
                        async move { c.broker_heartbeat(req).await }
                    })
                    .await
                    .map(|r| {
                        if r.lease_ms > 0 {
                            interval = Duration::from_millis((r.lease_ms / 3).max(100));
                            if let Some(h) = &hooks {
                                let share =
                                    Duration::from_millis(r.lease_ms).mul_f64(MASTER_LEASE_SHARE);
                                h.lease.send_replace(Some(sent + share));
                            }
                        }
                    })
            } else {
                client
                    .call(|mut c| {
                        let req = RegisterBrokerRequest {
                            broker_set: broker_set.clone(),
                            broker_id,
                            address: address.clone(),
                        };
                        async move { c.register_broker(req).await }
                    })
                    .await
                    .map(|_| {
                        tracing::info!(broker_set = %broker_set, broker_id, address = %address, "registered with the controller");
                    })
            }
        };
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            r = call => r,
        };
        match result {
            Ok(()) if !registered => {
                // Heartbeat at once: its reply carries the lease, which sets the interval (a
                // first sleep of the default could outlast a short lease).
                registered = true;
                continue;
            }
            Ok(()) => {}
            Err(status) => {
                tracing::warn!(code = ?status.code(), msg = status.message(), registered, "controller heartbeat failed");
                registered = false;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn given_an_unreachable_controller_when_shutdown_fires_mid_call_should_stop_at_once() {
        // A port nothing listens on: every connection attempt is refused, so the call keeps
        // retrying until its 15 s deadline.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        let client = ControllerClient::new(vec![addr.clone()]).expect("client");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(heartbeat_loop(
            client,
            Registration {
                broker_set: "broker-a".into(),
                broker_id: 0,
                address: "127.0.0.1:1".into(),
            },
            None,
            shutdown.clone(),
        ));
        // The loop is inside its first call (registration) from its first poll on.
        tokio::task::yield_now().await;
        shutdown.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(
            ended.is_ok(),
            "the heartbeat loop kept calling the unreachable controller after shutdown"
        );
    }
}
