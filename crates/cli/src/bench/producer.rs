//! A producer task: SendMessage requests on the schedule, up to `--inflight` at a time.
//!
//! Every message carries, in the first 8 bytes of its body, its due time in nanoseconds since
//! the run's epoch (little-endian), and the run id in the user property [`RUN_PROPERTY`], so a
//! consumer can tell this run's messages from leftovers and compute end-to-end latency.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use comet_proto::apache::rocketmq::v2::{
    Encoding, Message, MessageQueue, MessageType, SendMessageRequest, SystemProperties,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Plan;
use super::client::{Headers, REQUEST_TIMEOUT, check_status, pb_timestamp};
use super::schedule::Schedule;
use super::stats::{Live, TaskStats, grpc_key};
use super::unary::{self, Method, Unary};

/// User property naming the run a message belongs to (16 hex digits).
pub(crate) const RUN_PROPERTY: &str = "comet-bench-run";

/// Pause in issuing after a request failed at the transport level (proxy down, connection
/// reset), so that a producer does not spin on instant failures.
const TRANSPORT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// The gRPC path of SendMessage.
const SEND_PATH: &str = "/apache.rocketmq.v2.MessagingService/SendMessage";

/// Where a producer's requests go: a connection and the SendMessage call with the producer's
/// headers.
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    conn: Unary,
    method: Method,
}

impl Sender {
    /// SendMessage calls on `conn` as the client whose headers are `headers`.
    pub(crate) fn new(conn: Unary, headers: &Headers) -> anyhow::Result<Self> {
        let method = Method::new(&conn, SEND_PATH, headers.fixed().clone(), REQUEST_TIMEOUT)?;
        Ok(Sender { conn, method })
    }
}

/// Bytes of the body taken by the embedded due time.
pub(crate) const TIMESTAMP_BYTES: usize = 8;

/// The outcome of one SendMessage request.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct SendOutcome {
    /// Messages stored.
    pub ok: u64,
    /// Failed messages by error key.
    pub errors: Vec<(String, u64)>,
}

/// The body of a message due at `due_ns`: the due time, then filler up to `template.len()`.
pub(crate) fn body(template: &Bytes, due_ns: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(template.len());
    b.put_u64_le(due_ns);
    b.put_slice(&template[TIMESTAMP_BYTES.min(template.len())..]);
    b.freeze()
}

/// The due time embedded in a body, if it is long enough to carry one.
pub(crate) fn due_ns(body: &[u8]) -> Option<u64> {
    let bytes: [u8; TIMESTAMP_BYTES] = body.get(..TIMESTAMP_BYTES)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// The filler of every body: printable, so that a body looked at in a store dump is readable.
pub(crate) fn body_template(size: usize) -> Bytes {
    let pattern = b"comet-bench ";
    (0..size.max(TIMESTAMP_BYTES))
        .map(|i| pattern[i % pattern.len()])
        .collect::<Vec<u8>>()
        .into()
}

/// Interprets a SendMessage response for a request of `n` messages.
pub(crate) fn outcome(
    result: Result<comet_proto::apache::rocketmq::v2::SendMessageResponse, tonic::Status>,
    n: u64,
) -> SendOutcome {
    let response = match result {
        Ok(r) => r,
        Err(s) => {
            return SendOutcome {
                ok: 0,
                errors: vec![(grpc_key(&s), n)],
            };
        }
    };
    // OK and MULTIPLE_RESULTS carry one status per message; any other code fails them all.
    let code = response.status.as_ref().map(|s| s.code);
    if !code.is_some_and(comet_vocab::status::has_entry_statuses) {
        let key = check_status(response.status.as_ref())
            .err()
            .map_or_else(|| "MISSING_STATUS".to_owned(), |(key, _)| key);
        return SendOutcome {
            ok: 0,
            errors: vec![(key, n)],
        };
    }
    if response.entries.len() as u64 != n {
        return SendOutcome {
            ok: 0,
            errors: vec![("BAD_ENTRY_COUNT".to_owned(), n)],
        };
    }
    let mut out = SendOutcome::default();
    for entry in &response.entries {
        match check_status(entry.status.as_ref()) {
            Ok(()) => out.ok += 1,
            Err((key, _)) => match out.errors.iter_mut().find(|(k, _)| *k == key) {
                Some((_, count)) => *count += 1,
                None => out.errors.push((key, 1)),
            },
        }
    }
    out
}

async fn send(
    sender: &Sender,
    messages: Vec<Message>,
    due: Instant,
) -> (Instant, u64, SendOutcome) {
    let n = messages.len() as u64;
    let request = SendMessageRequest { messages };
    let result = unary::call(
        &sender.conn,
        &sender.method,
        &[Headers::date_time()],
        &request,
        REQUEST_TIMEOUT,
    )
    .await;
    (due, n, outcome(result, n))
}

/// Runs producer `index` until the end of the window (or `stop`), then waits for its
/// in-flight requests. Returns what it measured.
pub(crate) async fn run(
    plan: Arc<Plan>,
    sender: Sender,
    index: usize,
    queues: Arc<Vec<MessageQueue>>,
    mut stop: watch::Receiver<bool>,
) -> TaskStats {
    let mut stats = TaskStats::new(&plan.histogram);
    let schedule = Schedule::new(index, plan.producers, plan.batch, plan.rate);
    let template = body_template(plan.message_size);
    let run_hex = plan.run_hex();
    let mut inflight = FuturesUnordered::new();
    let mut next_request: u64 = 0;
    let mut next_message: u64 = 0;
    let mut next_queue = index;
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
            let queue = &queues[next_queue % queues.len()];
            next_queue = next_queue.wrapping_add(1);
            let due_ns = plan.clock.ns(due);
            let born = pb_timestamp(std::time::SystemTime::now());
            let messages = (0..plan.batch)
                .map(|_| {
                    let message_id = format!("{run_hex}{index:04X}{next_message:012X}");
                    next_message += 1;
                    Message {
                        topic: Some(plan.topic.clone()),
                        user_properties: HashMap::from([(
                            RUN_PROPERTY.to_owned(),
                            run_hex.clone(),
                        )]),
                        system_properties: Some(SystemProperties {
                            message_id,
                            body_encoding: Encoding::Identity as i32,
                            message_type: MessageType::Normal as i32,
                            born_timestamp: Some(born),
                            born_host: plan.born_host.clone(),
                            queue_id: queue.id,
                            ..SystemProperties::default()
                        }),
                        body: body(&template, due_ns),
                    }
                })
                .collect();
            inflight.push(send(&sender, messages, due));
            next_request += 1;
        }
        if !issuing && inflight.is_empty() {
            break;
        }
        tokio::select! {
            Some((due, n, outcome)) = inflight.next(), if !inflight.is_empty() => {
                if outcome.ok == 0 && outcome.errors.iter().any(|(key, _)| key.starts_with("grpc:")) {
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
    use comet_proto::apache::rocketmq::v2::{Code, SendMessageResponse, SendResultEntry, Status};

    fn status(code: Code) -> Option<Status> {
        Some(Status {
            code: code as i32,
            message: String::new(),
        })
    }

    fn entry(code: Code) -> SendResultEntry {
        SendResultEntry {
            status: status(code),
            ..SendResultEntry::default()
        }
    }

    #[test]
    fn given_a_due_time_when_building_a_body_should_embed_it_and_keep_the_size() {
        let t = body_template(1024);
        let b = body(&t, 123_456_789);
        assert_eq!(b.len(), 1024);
        assert_eq!(due_ns(&b), Some(123_456_789));
        assert_eq!(&b[8..20], &t[8..20]);
        assert_eq!(body(&body_template(8), 5).len(), 8);
        assert_eq!(due_ns(b"short"), None);
    }

    #[test]
    fn given_responses_when_interpreted_should_count_per_message() {
        let ok = SendMessageResponse {
            status: status(Code::Ok),
            entries: vec![entry(Code::Ok), entry(Code::Ok)],
        };
        assert_eq!(
            outcome(Ok(ok), 2),
            SendOutcome {
                ok: 2,
                errors: vec![]
            }
        );

        let mixed = SendMessageResponse {
            status: status(Code::MultipleResults),
            entries: vec![
                entry(Code::Ok),
                entry(Code::TooManyRequests),
                entry(Code::TooManyRequests),
            ],
        };
        assert_eq!(
            outcome(Ok(mixed), 3),
            SendOutcome {
                ok: 1,
                errors: vec![("TOO_MANY_REQUESTS".into(), 2)]
            }
        );

        let refused = SendMessageResponse {
            status: status(Code::TopicNotFound),
            entries: vec![],
        };
        assert_eq!(
            outcome(Ok(refused), 4),
            SendOutcome {
                ok: 0,
                errors: vec![("TOPIC_NOT_FOUND".into(), 4)]
            }
        );

        let short = SendMessageResponse {
            status: status(Code::Ok),
            entries: vec![entry(Code::Ok)],
        };
        assert_eq!(
            outcome(Ok(short), 2),
            SendOutcome {
                ok: 0,
                errors: vec![("BAD_ENTRY_COUNT".into(), 2)]
            }
        );

        let no_status = SendMessageResponse::default();
        assert_eq!(
            outcome(Ok(no_status), 1),
            SendOutcome {
                ok: 0,
                errors: vec![("MISSING_STATUS".into(), 1)]
            }
        );

        assert_eq!(
            outcome(Err(tonic::Status::deadline_exceeded("slow")), 2),
            SendOutcome {
                ok: 0,
                errors: vec![("grpc:DEADLINE_EXCEEDED".into(), 2)]
            }
        );
    }
}
