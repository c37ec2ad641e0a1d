//! A producer task, the same for every client: requests on the schedule, up to `--inflight`
//! at a time, each timed from its due time.
//!
//! The client is a [`Sender`]: it turns one [`Request`] (due time, messages, queue turn) into
//! its own messages (body and run property from [`crate::payload`]) and one send call, and
//! reports a [`SendOutcome`]. The loop owns the schedule, the counters and the histogram, so
//! every client is measured the same way.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::plan::Plan;
use crate::schedule::Schedule;
use crate::stats::{Live, TaskStats};

/// Pause in issuing after a request failed below the protocol (proxy down, connection
/// reset), so that a producer does not spin on instant failures.
const TRANSPORT_BACKOFF: Duration = Duration::from_millis(100);

/// One send call a producer asks its client for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request {
    /// The producer's index in the run.
    pub producer: usize,
    /// Nanoseconds from the run's epoch to the request's due time (embedded in every body).
    pub due_ns: u64,
    /// This producer's running count of messages before this request (for message ids).
    pub first_message: u64,
    /// This producer's queue turn (round-robin over the writable queues, for clients that
    /// let the caller choose the queue).
    pub queue_turn: usize,
    /// Messages in the request (`--batch`).
    pub count: u32,
}

/// The outcome of one send call.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct SendOutcome {
    /// Messages stored.
    pub ok: u64,
    /// Failed messages by error key: an in-body code (`TOO_MANY_REQUESTS`) or a failure below
    /// the protocol, whose key has a prefix (`grpc:UNAVAILABLE`, `sdk:...`, `official:...`).
    pub errors: Vec<(String, u64)>,
}

impl SendOutcome {
    /// Every message of the call stored.
    pub(crate) fn stored(n: u64) -> Self {
        SendOutcome {
            ok: n,
            errors: Vec::new(),
        }
    }

    /// Every message of the call failed with `key`.
    pub(crate) fn failed(key: String, n: u64) -> Self {
        SendOutcome {
            ok: 0,
            errors: vec![(key, n)],
        }
    }

    /// Nothing stored and the call failed below the protocol (its keys carry a prefix).
    fn transport_failed(&self) -> bool {
        self.ok == 0 && self.errors.iter().any(|(key, _)| key.contains(':'))
    }
}

/// A client's way of sending one [`Request`].
pub(crate) trait Sender: Send + Sync + 'static {
    /// Sends the request's messages and reports what became of them.
    fn send<'a>(
        &'a self,
        plan: &'a Plan,
        request: Request,
    ) -> impl Future<Output = SendOutcome> + Send + 'a;
}

/// Starts one producer task per sender (producer `i` is the `i`-th sender); each client's
/// fleet calls this with its own senders.
pub(crate) fn spawn_all<S: Sender>(
    senders: impl IntoIterator<Item = S>,
    plan: &Arc<Plan>,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<TaskStats>> {
    senders
        .into_iter()
        .enumerate()
        .map(|(i, sender)| tokio::spawn(run(plan.clone(), sender, i, stop.clone())))
        .collect()
}

/// Runs producer `index` until the end of the window (or `stop`), then waits for its
/// in-flight requests. Returns what it measured.
pub(crate) async fn run<S: Sender>(
    plan: Arc<Plan>,
    sender: S,
    index: usize,
    mut stop: watch::Receiver<bool>,
) -> TaskStats {
    let mut stats = TaskStats::new(&plan.histogram);
    let schedule = Schedule::new(index, plan.producers, plan.batch, plan.rate);
    let mut inflight = FuturesUnordered::new();
    let mut next_request: u64 = 0;
    let mut next_message: u64 = 0;
    let mut queue_turn = index;
    let mut issuing = true;
    let mut hold_until: Option<Instant> = None;

    loop {
        // Issue every request that is due, as long as there is room.
        let mut wake_at = None;
        while issuing && inflight.len() < plan.inflight {
            if *stop.borrow() {
                issuing = false;
                break;
            }
            let now = Instant::now();
            if let Some(until) = hold_until.filter(|until| *until > now) {
                wake_at = Some(until);
                break;
            }
            let due = match schedule {
                Some(s) => plan.clock.epoch + s.due(next_request),
                None => now,
            };
            if due >= plan.clock.end {
                issuing = false;
                break;
            }
            if due > now {
                wake_at = Some(due);
                break;
            }
            let request = Request {
                producer: index,
                due_ns: plan.clock.ns(due),
                first_message: next_message,
                queue_turn,
                count: plan.batch,
            };
            let n = u64::from(plan.batch);
            let sent = sender.send(&plan, request);
            inflight.push(async move { (due, n, sent.await) });
            next_message += n;
            queue_turn = queue_turn.wrapping_add(1);
            next_request += 1;
        }
        if !issuing && inflight.is_empty() {
            break;
        }
        tokio::select! {
            Some((due, n, outcome)) = inflight.next(), if !inflight.is_empty() => {
                if outcome.transport_failed() {
                    hold_until = Some(Instant::now() + TRANSPORT_BACKOFF);
                }
                record(&plan, &mut stats, due, n, outcome);
            }
            () = sleep_until(wake_at), if wake_at.is_some() && inflight.len() < plan.inflight => {}
            changed = stop.changed(), if issuing => {
                if changed.is_err() {
                    issuing = false;
                }
            }
        }
    }
    stats
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

fn record(plan: &Plan, stats: &mut TaskStats, due: Instant, n: u64, outcome: SendOutcome) {
    let measured = plan.clock.measured(due);
    let failed: u64 = outcome.errors.iter().map(|(_, c)| c).sum();
    debug_assert_eq!(outcome.ok + failed, n);
    stats.total += outcome.ok;
    Live::add(&plan.live.sent_ok, outcome.ok);
    Live::add(&plan.live.send_errors, failed);
    if !measured {
        for (key, count) in outcome.errors {
            *stats.warmup_errors.entry(key).or_insert(0) += count;
        }
        return;
    }
    Live::add(&plan.live.sent_ok_measured, outcome.ok);
    stats.measured += outcome.ok;
    stats.measured_bytes += outcome.ok * plan.message_size as u64;
    if outcome.ok > 0 {
        let latency = Instant::now().saturating_duration_since(due);
        stats
            .latency
            .saturating_record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }
    for (key, count) in outcome.errors {
        stats.error(key, count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_outcomes_when_classified_should_back_off_only_on_transport_failures() {
        assert!(SendOutcome::failed("grpc:UNAVAILABLE".into(), 1).transport_failed());
        assert!(SendOutcome::failed("sdk:Timeout".into(), 1).transport_failed());
        assert!(!SendOutcome::failed("TOO_MANY_REQUESTS".into(), 1).transport_failed());
        assert!(!SendOutcome::stored(3).transport_failed());
    }
}
