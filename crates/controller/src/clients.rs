//! [`ClientDirectory`]: the clients connected to every proxy, as the proxies report them
//! (`ReportClients`). Memory only, never Raft: a report replaces the previous one of the same
//! proxy, a proxy that stops reporting for [`REPORT_EXPIRY`] leaves with its clients, and a
//! listing leaves out a client without an open telemetry stream that was not heard from within
//! the caller's client timeout.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use comet_proto::comet::v1::{ConnectedClient, ReportClientsRequest, RpcLatency};
use parking_lot::Mutex;

/// A proxy's report is dropped this long after it arrived unless the proxy reports again
/// (proxies report every few seconds and at once after a change).
pub const REPORT_EXPIRY: Duration = Duration::from_secs(30);

/// A client without an open telemetry stream is listed until it was not heard from for this
/// long, unless the console is configured otherwise (three missed heartbeats of the official
/// clients).
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Most clients kept per proxy report (a bound on memory; a proxy with more is truncated).
pub const MAX_CLIENTS_PER_REPORT: usize = 100_000;

/// One proxy as its last report describes it.
#[derive(Debug, Clone)]
pub struct ProxyView {
    /// The proxy's id (stable for its process's life).
    pub proxy_id: String,
    /// Its advertised endpoint.
    pub address: String,
    /// Wall clock (ms) it started at.
    pub started_ms: i64,
    /// Clients in its last report.
    pub clients: Vec<ConnectedClient>,
    /// Its RPC latency histograms (cumulative since it started) in its last report.
    pub rpc_latency: Vec<RpcLatency>,
    /// How long ago the report arrived.
    pub reported_ago: Duration,
}

#[derive(Debug)]
struct Entry {
    report: ReportClientsRequest,
    received: Instant,
}

/// The proxies' reports (see the module docs). Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct ClientDirectory {
    reports: Mutex<HashMap<String, Entry>>,
}

impl ClientDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a proxy's report, replacing its previous one; expired reports are dropped.
    pub fn report(&self, mut report: ReportClientsRequest) {
        report.clients.truncate(MAX_CLIENTS_PER_REPORT);
        let now = Instant::now();
        let mut reports = self.reports.lock();
        reports.retain(|_, e| now.duration_since(e.received) < REPORT_EXPIRY);
        reports.insert(
            report.proxy_id.clone(),
            Entry {
                report,
                received: now,
            },
        );
    }

    /// Every proxy that reported within [`REPORT_EXPIRY`], by id, each with the clients that are
    /// still connected at `now_ms` (wall clock): an open telemetry stream, or heard from
    /// within `client_timeout`.
    pub fn proxies(&self, now_ms: i64, client_timeout: Duration) -> Vec<ProxyView> {
        let timeout_ms = i64::try_from(client_timeout.as_millis()).unwrap_or(i64::MAX);
        let now = Instant::now();
        let reports = self.reports.lock();
        let mut out: Vec<ProxyView> = reports
            .values()
            .filter(|e| now.duration_since(e.received) < REPORT_EXPIRY)
            .map(|e| ProxyView {
                proxy_id: e.report.proxy_id.clone(),
                address: e.report.address.clone(),
                started_ms: e.report.started_ms,
                clients: e
                    .report
                    .clients
                    .iter()
                    .filter(|c| {
                        c.telemetry_streams > 0
                            || now_ms.saturating_sub(c.last_heartbeat_ms) < timeout_ms
                    })
                    .cloned()
                    .collect(),
                rpc_latency: e.report.rpc_latency.clone(),
                reported_ago: now.duration_since(e.received),
            })
            .collect();
        out.sort_by(|a, b| a.proxy_id.cmp(&b.proxy_id));
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn client(id: &str, streams: u32, last_ms: i64) -> ConnectedClient {
        ConnectedClient {
            client_id: id.into(),
            telemetry_streams: streams,
            last_heartbeat_ms: last_ms,
            ..Default::default()
        }
    }

    #[test]
    fn given_reports_when_listed_should_keep_connected_clients_and_latest_report() {
        let d = ClientDirectory::new();
        d.report(ReportClientsRequest {
            proxy_id: "p1".into(),
            address: "a:1".into(),
            started_ms: 1,
            clients: vec![client("old", 0, 0)],
            rpc_latency: Vec::new(),
        });
        d.report(ReportClientsRequest {
            proxy_id: "p1".into(),
            address: "a:1".into(),
            started_ms: 1,
            clients: vec![
                client("streaming", 1, 0),
                client("recent", 0, 9_500),
                client("gone", 0, 1_000),
            ],
            rpc_latency: Vec::new(),
        });
        let proxies = d.proxies(10_000, Duration::from_secs(2));
        assert_eq!(proxies.len(), 1);
        let ids: Vec<&str> = proxies[0]
            .clients
            .iter()
            .map(|c| c.client_id.as_str())
            .collect();
        assert_eq!(ids, vec!["streaming", "recent"]);
    }
}
