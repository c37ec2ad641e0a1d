//! `--metrics-overhead ROUNDS`: what recording metrics costs the send path, measured in one
//! invocation. Two deployments of the `--spawn` mode start side by side, one recording metrics
//! (`metrics.enabled=true`, its listener on a free port) and one not (`metrics.enabled=false`,
//! no listener); then ROUNDS rounds run, each a whole run of `--duration` (after `--warmup`)
//! against each deployment in turn. The order alternates (on, off; then off, on; ...) so that
//! a drift of the shared machine's load over the invocation weighs on both sides alike.
//!
//! Each side's figures add up its rounds: messages sent in the measured windows over the
//! windows' length (msgs/s), and the CPU time its server processes spent in those windows
//! (from `/proc/<pid>/stat`, as for `--spawn`) per message (µs/msg). CPU per message is the
//! steadier figure on a shared machine: it does not move with what the other processes take.
//! The ratios are on / off: a rate ratio of 0.97 or above is "within 3%"; a CPU ratio of 1.03
//! or below likewise.
//!
//! Scrapes are not part of it: collection runs when a scraper asks, not per message, and no
//! scraper runs here.

use std::io::Write;

use anyhow::{Context, anyhow};
use serde::Serialize;

use crate::args::BenchArgs;
use crate::run::run_against;
use crate::servers::{CpuProbe, Servers, default_comet_bin};

/// Settings of the deployment that records metrics. Neither side serves the web console: two
/// deployments cannot share its default port, and it is not part of the send path.
const METRICS_ON: [&str; 3] = [
    "metrics.enabled=true",
    "metrics.listen=127.0.0.1:0",
    "console.listen=",
];
/// Settings of the deployment that does not.
const METRICS_OFF: [&str; 3] = [
    "metrics.enabled=false",
    "metrics.listen=",
    "console.listen=",
];

/// One run of one round against one side.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OverheadRun {
    /// Round number, from 1.
    pub round: u32,
    /// Whether this side records metrics.
    pub metrics: bool,
    /// Messages sent in the measured window.
    pub sent: u64,
    /// Length of the measured window, seconds.
    pub window_s: f64,
    /// Messages per second in the window.
    pub msgs_per_s: f64,
    /// CPU seconds the side's server processes spent in the window (`None` without `/proc`).
    pub servers_cpu_s: Option<f64>,
}

/// One side's rounds added up.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OverheadSide {
    /// Messages sent in all measured windows.
    pub sent: u64,
    /// Their rate over all windows, messages per second.
    pub msgs_per_s: f64,
    /// Server CPU microseconds per message over all windows (`None` without `/proc`).
    pub servers_cpu_us_per_msg: Option<f64>,
}

/// What `--metrics-overhead` measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OverheadReport {
    /// `standalone` or `cluster`.
    pub mode: String,
    pub message_size: u64,
    pub producers: usize,
    pub consumers: usize,
    /// Every run, in the order they ran.
    pub runs: Vec<OverheadRun>,
    pub metrics_on: OverheadSide,
    pub metrics_off: OverheadSide,
    /// `metrics_on.msgs_per_s / metrics_off.msgs_per_s` (`None` when off sent nothing).
    pub rate_ratio: Option<f64>,
    /// `metrics_on / metrics_off` server CPU per message (`None` when either is unknown).
    pub cpu_ratio: Option<f64>,
}

impl OverheadReport {
    fn new(args: &BenchArgs, mode: &str, runs: Vec<OverheadRun>) -> Self {
        let side = |metrics: bool| {
            let mine: Vec<&OverheadRun> = runs.iter().filter(|r| r.metrics == metrics).collect();
            let sent: u64 = mine.iter().map(|r| r.sent).sum();
            let window: f64 = mine.iter().map(|r| r.window_s).sum();
            let cpu: Option<f64> = mine.iter().map(|r| r.servers_cpu_s).sum();
            OverheadSide {
                sent,
                msgs_per_s: if window > 0.0 {
                    sent as f64 / window
                } else {
                    0.0
                },
                servers_cpu_us_per_msg: cpu.filter(|_| sent > 0).map(|c| c * 1e6 / sent as f64),
            }
        };
        let (on, off) = (side(true), side(false));
        let rate_ratio = (off.msgs_per_s > 0.0).then(|| on.msgs_per_s / off.msgs_per_s);
        let cpu_ratio = match (on.servers_cpu_us_per_msg, off.servers_cpu_us_per_msg) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        OverheadReport {
            mode: mode.to_owned(),
            message_size: args.message_size.0,
            producers: args.producers,
            consumers: args.consumers,
            runs,
            metrics_on: on,
            metrics_off: off,
            rate_ratio,
            cpu_ratio,
        }
    }

    /// The report as a text table: every run, then the sums and the ratios.
    pub fn table(&self) -> String {
        let cpu = |c: Option<f64>| c.map_or("-".to_owned(), |c| format!("{c:.2}"));
        let mut t = format!(
            "metrics on vs off ({} mode): {} producers, {} consumers, {} B bodies\n",
            self.mode, self.producers, self.consumers, self.message_size
        );
        t.push_str(&format!(
            "{:<6} {:<8} {:>12} {:>12} {:>14}\n",
            "round", "metrics", "sent", "sent/s", "server cpu s"
        ));
        for r in &self.runs {
            t.push_str(&format!(
                "{:<6} {:<8} {:>12} {:>12.0} {:>14}\n",
                r.round,
                if r.metrics { "on" } else { "off" },
                r.sent,
                r.msgs_per_s,
                cpu(r.servers_cpu_s)
            ));
        }
        for (name, s) in [("on", &self.metrics_on), ("off", &self.metrics_off)] {
            t.push_str(&format!(
                "metrics {name:<3}: {:.0} msgs/s, {} server CPU µs/msg ({} messages)\n",
                s.msgs_per_s,
                cpu(s.servers_cpu_us_per_msg),
                s.sent
            ));
        }
        let x = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
        t.push_str(&format!(
            "on / off: rate {}, server CPU per message {}\n",
            x(self.rate_ratio),
            x(self.cpu_ratio)
        ));
        t
    }
}

/// Runs the comparison (see the module docs), writes the table to `out` and the report as
/// JSON to `--json`, and returns it.
///
/// # Errors
/// When a deployment does not start, a run fails, or the output cannot be written.
pub async fn overhead_with(args: BenchArgs, mut out: impl Write) -> anyhow::Result<OverheadReport> {
    args.validate()?;
    let rounds = args
        .metrics_overhead
        .ok_or_else(|| anyhow!("--metrics-overhead needs a number of rounds"))?;
    let mode = args
        .spawn
        .ok_or_else(|| anyhow!("--metrics-overhead needs --spawn standalone or cluster"))?;
    let bin = args.comet_bin.clone().unwrap_or_else(default_comet_bin);
    let settings = |extra: [&str; 3]| {
        let mut s = args.server_set.clone();
        s.extend(extra.iter().map(|e| (*e).to_owned()));
        s
    };
    let on = Servers::start(mode, &bin, &settings(METRICS_ON))
        .await
        .context("starting the servers that record metrics")?;
    let off = match Servers::start(mode, &bin, &settings(METRICS_OFF)).await {
        Ok(off) => off,
        Err(e) => {
            on.stop().await;
            return Err(e.context("starting the servers that record no metrics"));
        }
    };
    tracing::info!(on = %on.endpoint, off = %off.endpoint, rounds, "metrics overhead: servers started");
    let sides = [
        (true, on.endpoint.clone(), on.probe()),
        (false, off.endpoint.clone(), off.probe()),
    ];
    let result = rounds_against(&args, rounds, &sides).await;
    on.stop().await;
    off.stop().await;
    let report = OverheadReport::new(&args, mode.name(), result?);
    write!(out, "{}", report.table())
        .and_then(|()| out.flush())
        .context("cannot write the metrics overhead table")?;
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    Ok(report)
}

/// Runs `rounds` rounds over both `sides` (metrics on or off, endpoint, CPU probe), the order
/// alternating from round to round.
async fn rounds_against(
    args: &BenchArgs,
    rounds: u32,
    sides: &[(bool, String, CpuProbe); 2],
) -> anyhow::Result<Vec<OverheadRun>> {
    let mut runs = Vec::new();
    for round in 1..=rounds {
        let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for i in order {
            let (metrics, endpoint, probe) = &sides[i];
            let mut a = args.clone();
            a.endpoint.clone_from(endpoint);
            a.json = None;
            a.no_progress = true;
            let label = if *metrics { "on" } else { "off" };
            let report = run_against(a, std::io::sink(), Some(probe.clone()))
                .await
                .with_context(|| format!("round {round} with metrics {label}"))?;
            let cpu = report
                .servers
                .as_ref()
                .filter(|s| !s.roles.is_empty())
                .map(|s| s.roles.iter().map(|r| r.cpu_s).sum::<f64>());
            tracing::info!(
                round,
                metrics = label,
                rate = report.sent.msgs_per_s,
                "round done"
            );
            runs.push(OverheadRun {
                round,
                metrics: *metrics,
                sent: report.sent.count,
                window_s: report.duration_s,
                msgs_per_s: report.sent.msgs_per_s,
                servers_cpu_s: cpu,
            });
        }
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn run(round: u32, metrics: bool, sent: u64, cpu: Option<f64>) -> OverheadRun {
        OverheadRun {
            round,
            metrics,
            sent,
            window_s: 10.0,
            msgs_per_s: sent as f64 / 10.0,
            servers_cpu_s: cpu,
        }
    }

    #[test]
    fn given_rounds_of_both_sides_when_reported_should_add_them_up_and_divide() {
        let args =
            Cli::try_parse_from(["bench", "--spawn", "standalone", "--metrics-overhead", "2"])
                .expect("flags parse")
                .bench;
        let report = OverheadReport::new(
            &args,
            "standalone",
            vec![
                run(1, true, 97_000, Some(10.0)),
                run(1, false, 100_000, Some(10.0)),
                run(2, false, 100_000, Some(10.0)),
                run(2, true, 97_000, Some(9.4)),
            ],
        );
        assert_eq!(report.metrics_on.sent, 194_000);
        assert!((report.metrics_on.msgs_per_s - 9_700.0).abs() < 1e-9);
        assert!((report.metrics_off.msgs_per_s - 10_000.0).abs() < 1e-9);
        assert!((report.rate_ratio.expect("rate ratio") - 0.97).abs() < 1e-9);
        // On: 19.4 s for 194,000 messages = 100 µs; off: 20 s for 200,000 = 100 µs.
        let on_cpu = report.metrics_on.servers_cpu_us_per_msg.expect("cpu");
        assert!((on_cpu - 100.0).abs() < 1e-9);
        assert!((report.cpu_ratio.expect("cpu ratio") - 1.0).abs() < 1e-9);
        assert!(
            report.table().contains("on / off: rate 0.970"),
            "{}",
            report.table()
        );
    }

    #[test]
    fn given_a_side_without_cpu_figures_when_reported_should_leave_the_cpu_ratio_out() {
        let args =
            Cli::try_parse_from(["bench", "--spawn", "standalone", "--metrics-overhead", "1"])
                .expect("flags parse")
                .bench;
        let report = OverheadReport::new(
            &args,
            "standalone",
            vec![run(1, true, 10, None), run(1, false, 0, Some(1.0))],
        );
        assert_eq!(report.cpu_ratio, None);
        assert_eq!(report.rate_ratio, None);
        assert_eq!(report.metrics_on.servers_cpu_us_per_msg, None);
    }
}
