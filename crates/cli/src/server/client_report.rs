//! The proxy's client reporter: every `console.report_interval`, and soon after a change of
//! its sessions, a proxy sends the clients connected to it (`ReportClients`) to every
//! configured controller, so that any controller's console lists every client of every proxy.
//! Reports are small and idempotent (each replaces the last); a controller that does not
//! answer is skipped until the next round. Each report also carries the proxy's
//! `rocketmq_rpc_latency` histograms (cumulative, one per RPC), from which the console draws
//! latency percentiles.

use std::time::Duration;

use comet_proto::apache::rocketmq::v2::ClientType;
use comet_proto::comet::v1::controller_service_client::ControllerServiceClient;
use comet_proto::comet::v1::{
    ClientSubscription, ConnectedClient, ReportClientsRequest, RpcLatency,
};
use comet_proxy::{ClientInfo, ClientsView};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// Changes arriving within this window go out in one report.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// How long one report may take per controller.
const REPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// What the reporter needs to know about its proxy.
pub(super) struct Reporter {
    pub view: ClientsView,
    pub controllers: Vec<String>,
    pub proxy_id: String,
    pub address: String,
    pub started_ms: i64,
    pub interval: Duration,
    /// The metrics pipeline the proxy records `rocketmq_rpc_latency` into.
    pub metrics: comet_observe::Metrics,
    /// Plaintext or mutual TLS to the controllers.
    pub connector: comet_auth::Connector,
}

/// The proxy's RPC latency histograms (those labelled `node_type="proxy"` and this proxy's
/// `node_id`: a standalone node's pipeline also holds the broker's and the controller's),
/// response codes summed, by RPC name.
fn rpc_latency(metrics: &comet_observe::Metrics, node_id: &str) -> Vec<RpcLatency> {
    let mut by_rpc: std::collections::BTreeMap<String, RpcLatency> = Default::default();
    for s in metrics.histogram("rocketmq_rpc_latency") {
        if s.label("node_type") != Some("proxy") || s.label("node_id") != Some(node_id) {
            continue;
        }
        let Some(rpc) = s.label("request_code") else {
            continue;
        };
        let entry = by_rpc.entry(rpc.to_owned()).or_insert_with(|| RpcLatency {
            rpc: rpc.to_owned(),
            bounds_ms: s.buckets.iter().map(|(b, _)| *b).collect(),
            bucket_counts: vec![0; s.buckets.len() + 1],
            sum_ms: 0.0,
        });
        // Series of one histogram share its boundaries; one that does not is left out.
        if entry.bounds_ms.len() != s.buckets.len() {
            continue;
        }
        for (i, (_, n)) in s.buckets.iter().enumerate() {
            entry.bucket_counts[i] += n;
        }
        if let Some(total) = entry.bucket_counts.last_mut() {
            *total += s.count;
        }
        entry.sum_ms += s.sum;
    }
    by_rpc.into_values().collect()
}

fn ms_since_epoch(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn connected(c: &ClientInfo) -> ConnectedClient {
    ConnectedClient {
        client_id: c.client_id.clone(),
        language: c.language.clone(),
        version: c.version.clone(),
        hostname: c.hostname.clone(),
        client_type: ClientType::as_str_name(&c.client_type).to_owned(),
        group: c.group.clone().unwrap_or_default(),
        topics: c.topics.clone(),
        subscriptions: c
            .subscriptions
            .iter()
            .map(|(topic, kind, expression)| ClientSubscription {
                topic: topic.clone(),
                expression_type: kind.clone(),
                expression: expression.clone(),
            })
            .collect(),
        last_heartbeat_ms: ms_since_epoch(c.last_seen),
        telemetry_streams: u32::try_from(c.telemetry_streams).unwrap_or(u32::MAX),
        platform: c.platform.clone(),
    }
}

impl Reporter {
    /// Reports until `stop` is cancelled (a last report is not sent: the controllers drop the
    /// proxy when its reports stop).
    pub(super) async fn run(self, stop: CancellationToken) {
        let clients: Vec<(String, ControllerServiceClient<Channel>)> = self
            .controllers
            .iter()
            .filter_map(|addr| {
                let endpoint = Endpoint::from_shared(format!("http://{addr}")).ok()?;
                let endpoint = endpoint
                    .connect_timeout(REPORT_TIMEOUT)
                    .timeout(REPORT_TIMEOUT);
                let channel = self.connector.lazy_channel(&endpoint);
                Some((addr.clone(), ControllerServiceClient::new(channel)))
            })
            .collect();
        let mut changes = self.view.changes();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(DEBOUNCE) => {}
                    }
                    changes.mark_unchanged();
                }
            }
            let report = ReportClientsRequest {
                proxy_id: self.proxy_id.clone(),
                address: self.address.clone(),
                started_ms: self.started_ms,
                clients: self.view.snapshot().iter().map(connected).collect(),
                rpc_latency: rpc_latency(&self.metrics, &self.address),
            };
            for (addr, client) in &clients {
                let mut client = client.clone();
                let sent = tokio::select! {
                    () = stop.cancelled() => return,
                    sent = client.report_clients(report.clone()) => sent,
                };
                if let Err(e) = sent {
                    tracing::debug!(controller = %addr, error = %e.message(), "client report not delivered");
                }
            }
        }
    }
}
