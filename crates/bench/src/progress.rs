//! The progress bar on stderr: phase, totals and rates over the last quarter second.

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::plan::Plan;
use crate::stats::Live;

/// Redraws per second.
const HZ: u8 = 4;

/// Draws the bar until `stop`, then clears it. The bar spans warmup and window, in
/// milliseconds; the drain shows as a full bar.
pub(crate) fn spawn(
    plan: Arc<Plan>,
    consumers: bool,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let clock = plan.clock;
        let total_ms = u64::try_from((clock.end - clock.epoch).as_millis()).unwrap_or(u64::MAX);
        let bar =
            ProgressBar::with_draw_target(Some(total_ms), ProgressDrawTarget::stderr_with_hz(HZ));
        if let Ok(style) = ProgressStyle::with_template("{bar:24} {elapsed:>4} {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        let period = Duration::from_millis(1000 / u64::from(HZ));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick is immediate; rates need a full period behind them.
        ticks.tick().await;
        let (mut last_sent, mut last_recv, mut last_at) = (0u64, 0u64, Instant::now());
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            let now = Instant::now();
            let secs = (now - last_at).as_secs_f64().max(1e-3);
            let sent = Live::get(&plan.live.sent_ok);
            let recv = Live::get(&plan.live.received);
            let errors = Live::get(&plan.live.send_errors) + Live::get(&plan.live.receive_errors);
            let phase = if now < clock.warm_end {
                "warmup"
            } else if now < clock.end {
                "run"
            } else {
                "drain"
            };
            let mut msg = format!(
                "{phase:<6} sent {sent} ({:.0}/s)",
                sent.saturating_sub(last_sent) as f64 / secs
            );
            if consumers {
                msg.push_str(&format!(
                    "  recv {recv} ({:.0}/s)",
                    recv.saturating_sub(last_recv) as f64 / secs
                ));
            }
            if errors > 0 {
                msg.push_str(&format!("  errors {errors}"));
            }
            bar.set_position(
                u64::try_from((now - clock.epoch).as_millis())
                    .unwrap_or(u64::MAX)
                    .min(total_ms),
            );
            bar.set_message(msg);
            (last_sent, last_recv, last_at) = (sent, recv, now);
        }
        bar.finish_and_clear();
    })
}
