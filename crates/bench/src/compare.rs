//! `--compare`: the three clients back to back, with the same flags, against the same
//! endpoint, and one table of their figures and ratios (the figures issue 17 asks for: the
//! SDK producer against the official crate and against the raw path, and the SDK push
//! consumer's rate).
//!
//! The runs go raw, sdk, official, each a whole run of its own (its clients started and
//! ended), so they share the node's state in that order: the topic grows by each run's
//! messages and the group's position moves on. Messages a run leaves unconsumed show up as
//! `foreign` in the next.

use std::io::Write;

use anyhow::Context;
use serde::Serialize;

use crate::args::{BenchArgs, ClientKind};
use crate::run::run_with;
use crate::stats::BenchReport;

/// The reports of a comparison and their ratios.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// One report per client, in [`ClientKind::ALL`] order.
    pub runs: Vec<BenchReport>,
    /// SDK figures divided by the other clients' (`null` when the divisor is 0).
    pub ratios: Ratios,
}

/// Ratios of sent (producer) and received (consumer) message rates.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Ratios {
    pub sdk_vs_official_sent: Option<f64>,
    pub sdk_vs_raw_sent: Option<f64>,
    pub sdk_vs_official_received: Option<f64>,
    pub sdk_vs_raw_received: Option<f64>,
}

impl Comparison {
    fn new(runs: Vec<BenchReport>) -> Self {
        let rate = |kind: ClientKind, sent: bool| {
            runs.iter()
                .find(|r| r.config.client == kind)
                .map_or(0.0, |r| {
                    if sent {
                        r.sent.msgs_per_s
                    } else {
                        r.received.msgs_per_s
                    }
                })
        };
        let ratio = |other: ClientKind, sent: bool| {
            let divisor = rate(other, sent);
            (divisor > 0.0).then(|| rate(ClientKind::Sdk, sent) / divisor)
        };
        let ratios = Ratios {
            sdk_vs_official_sent: ratio(ClientKind::Official, true),
            sdk_vs_raw_sent: ratio(ClientKind::Raw, true),
            sdk_vs_official_received: ratio(ClientKind::Official, false),
            sdk_vs_raw_received: ratio(ClientKind::Raw, false),
        };
        Comparison { runs, ratios }
    }

    /// The comparison as a text table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let Some(first) = self.runs.first() else {
            return t;
        };
        let c = &first.config;
        t.push_str(&format!(
            "{} producers x {} in flight, {} consumers{}, {} B bodies, batch {}, rate {}, {} s \
             window, endpoint {}\n",
            c.producers,
            c.inflight,
            c.consumers,
            if c.backlog { " (backlog)" } else { "" },
            c.message_size,
            c.batch,
            if c.rate == 0 {
                "unlimited".to_owned()
            } else {
                format!("{} msgs/s", c.rate)
            },
            c.duration_s,
            c.endpoint
        ));
        t.push_str(&format!(
            "{:<9} {:>12} {:>9} {:>9} {:>12} {:>9} {:>8}\n",
            "client", "sent/s", "p50 ms", "p99 ms", "received/s", "e2e p99", "errors"
        ));
        for r in &self.runs {
            let ms = |l: &Option<crate::stats::LatencyReport>, p99: bool| {
                l.as_ref().map_or("-".to_owned(), |l| {
                    format!("{:.2}", if p99 { l.p99 } else { l.p50 })
                })
            };
            let errors: u64 = r
                .sent
                .errors
                .values()
                .chain(r.received.errors.values())
                .sum();
            t.push_str(&format!(
                "{:<9} {:>12.0} {:>9} {:>9} {:>12.0} {:>9} {:>8}\n",
                r.config.client.name(),
                r.sent.msgs_per_s,
                ms(&r.send_latency_ms, false),
                ms(&r.send_latency_ms, true),
                r.received.msgs_per_s,
                ms(&r.e2e_latency_ms, true),
                errors
            ));
        }
        let x = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}x"));
        let q = &self.ratios;
        t.push_str(&format!(
            "sdk / official: producer {}, consumer {}\n",
            x(q.sdk_vs_official_sent),
            x(q.sdk_vs_official_received)
        ));
        t.push_str(&format!(
            "sdk / raw:      producer {}, consumer {}\n",
            x(q.sdk_vs_raw_sent),
            x(q.sdk_vs_raw_received)
        ));
        t
    }
}

/// Runs every client with `args` (its `--client` ignored), writes the table to `out` and the
/// [`Comparison`] as JSON to `--json`, and returns it.
pub async fn compare_with(args: BenchArgs, mut out: impl Write) -> anyhow::Result<Comparison> {
    args.validate()?;
    let mut runs = Vec::with_capacity(ClientKind::ALL.len());
    for kind in ClientKind::ALL {
        let mut a = args.clone();
        a.client = kind;
        a.compare = false;
        a.json = None;
        tracing::info!(client = kind.name(), "comparison: starting a run");
        let report = run_with(a, std::io::sink())
            .await
            .with_context(|| format!("the {} run of the comparison", kind.name()))?;
        runs.push(report);
    }
    let comparison = Comparison::new(runs);
    write!(out, "{}", comparison.table())
        .and_then(|()| out.flush())
        .context("cannot write the comparison")?;
    if let Some(path) = &args.json {
        let json =
            serde_json::to_string_pretty(&comparison).context("cannot encode the comparison")?;
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("cannot write the comparison to {}", path.display()))?;
    }
    Ok(comparison)
}
