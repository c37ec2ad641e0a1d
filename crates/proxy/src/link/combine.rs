//! [`SendCombiner`]: concurrent SendMessage calls to one broker combined into one internal
//! call, with bounded in-flight calls and a bounded queue.
//!
//! ```text
//!  send ─► calls in flight < limit? ── yes ─► the caller makes its own call
//!              │ no
//!              ▼
//!          queue full? ── yes ─► RESOURCE_EXHAUSTED (the proxy answers TOO_MANY_REQUESTS)
//!              │ no
//!              ▼
//!          wait in the queue; when a call in flight ends, everything queued (up to the call
//!          limits) leaves in ONE call, and each waiting caller gets its own entries back
//! ```
//!
//! Nothing waits on a timer: a queued send leaves as soon as a call slot frees up, and a
//! send that finds a free slot leaves at once. Combining therefore happens only under load
//! (every slot busy), exactly when fewer, larger calls save the most.
//!
//! # Invariants
//! - Each caller gets exactly its own entries, in its own order: one combined call carries
//!   whole requests, never part of one, and the broker answers one entry per message in
//!   order (a combined answer with another number of entries fails every caller in it).
//! - A combined call that fails (transport, deadline, overload) fails each of its callers
//!   with that status. A queued caller that gave up before its call left (its deadline
//!   passed) is dropped from the queue: its messages are never sent.
//! - At most `calls_in_flight` calls are in flight, and at most `max_queued_messages` messages
//!   and `max_queued_bytes` body bytes wait (a request always fits into an empty queue).
//! - The combined call's deadline is the longest of its callers' deadlines; each caller still
//!   waits only as long as its own.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use comet_proto::apache::rocketmq::v2::{Message, SendMessageRequest, SendMessageResponse};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tonic::Status;

/// The answer of one internal SendMessage call.
pub(crate) type SendFuture =
    Pin<Box<dyn Future<Output = Result<SendMessageResponse, Status>> + Send + 'static>>;

/// Makes the internal SendMessage call that a [`SendCombiner`] decided on.
pub(crate) trait SendCall: Send + Sync + 'static {
    /// Sends `request` with deadline `timeout` (none: the callee's default), in the trace of
    /// `traceparent`.
    fn call(
        &self,
        request: SendMessageRequest,
        timeout: Option<Duration>,
        traceparent: Traceparent,
    ) -> SendFuture;
}

/// A caller's W3C `traceparent` header, passed on so that the broker's span joins the
/// caller's trace. A combined call carries the first of its requests' (the others' messages
/// still carry their own `trace_context` property).
pub(crate) type Traceparent = Option<tonic::metadata::AsciiMetadataValue>;

/// Bounds of a [`SendCombiner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CombineLimits {
    /// Calls in flight at once; sends arriving while all are busy are queued and combined.
    pub calls_in_flight: usize,
    /// Most messages in one combined call (a single request larger than this goes alone).
    pub max_call_messages: usize,
    /// Most body bytes in one combined call (likewise).
    pub max_call_bytes: usize,
    /// Most messages waiting; a send that would go over it is refused as retryable.
    pub max_queued_messages: usize,
    /// Most body bytes waiting (likewise).
    pub max_queued_bytes: usize,
}

impl Default for CombineLimits {
    fn default() -> Self {
        CombineLimits {
            calls_in_flight: 2,
            max_call_messages: 512,
            max_call_bytes: 8 << 20,
            max_queued_messages: 8192,
            max_queued_bytes: 64 << 20,
        }
    }
}

/// A queued send.
struct Waiting {
    messages: Vec<Message>,
    bytes: usize,
    timeout: Option<Duration>,
    traceparent: Traceparent,
    reply: oneshot::Sender<Result<SendMessageResponse, Status>>,
}

#[derive(Default)]
struct State {
    in_flight: usize,
    queue: VecDeque<Waiting>,
    queued_messages: usize,
    queued_bytes: usize,
}

/// What [`SendCombiner::admit`] decided.
enum Admit {
    /// A call slot was free: the caller makes the call.
    Call(SendMessageRequest, Traceparent),
    /// Queued: the answer comes through this.
    Queued(oneshot::Receiver<Result<SendMessageResponse, Status>>),
    /// The queue is full (this many messages wait).
    Refused(usize),
}

/// Counters of a combiner, for tests and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CombineStats {
    /// Internal calls made.
    pub calls: u64,
    /// Requests carried by them.
    pub requests: u64,
    /// Requests refused because the queue was full.
    pub refused: u64,
}

/// Combines the SendMessage calls to one broker; see the module docs.
pub(crate) struct SendCombiner {
    limits: CombineLimits,
    state: Mutex<State>,
    stats: Mutex<CombineStats>,
    caller: Arc<dyn SendCall>,
    /// What the combiner is for, in errors (`broker set at address`).
    name: String,
}

impl std::fmt::Debug for SendCombiner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendCombiner")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Body bytes a request accounts for.
fn body_bytes(messages: &[Message]) -> usize {
    messages.iter().map(|m| m.body.len()).sum()
}

impl SendCombiner {
    pub(crate) fn new(
        name: impl Into<String>,
        limits: CombineLimits,
        caller: Arc<dyn SendCall>,
    ) -> Arc<Self> {
        let limits = CombineLimits {
            calls_in_flight: limits.calls_in_flight.max(1),
            max_call_messages: limits.max_call_messages.max(1),
            ..limits
        };
        Arc::new(SendCombiner {
            limits,
            state: Mutex::new(State::default()),
            stats: Mutex::new(CombineStats::default()),
            caller,
            name: name.into(),
        })
    }

    /// Counters so far.
    pub(crate) fn stats(&self) -> CombineStats {
        *self.stats.lock()
    }

    /// Sends `request` (deadline `timeout`), alone or combined with others; see the module
    /// docs.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED when the queue is full (nothing was sent); the failure of the
    /// internal call that carried the request; UNAVAILABLE when that call was abandoned
    /// (the proxy is shutting down).
    pub(crate) async fn send(
        self: &Arc<Self>,
        request: SendMessageRequest,
        timeout: Option<Duration>,
        traceparent: Traceparent,
    ) -> Result<SendMessageResponse, Status> {
        let rx = match self.admit(request, timeout, traceparent) {
            Admit::Queued(rx) => rx,
            Admit::Call(request, traceparent) => {
                // A free slot: this caller makes the call itself, with no hand-off.
                let slot = InFlight(Arc::clone(self));
                self.count_call(1);
                let answer = self.caller.call(request, timeout, traceparent).await;
                drop(slot);
                return answer;
            }
            Admit::Refused(queued) => {
                self.stats.lock().refused += 1;
                return Err(Status::resource_exhausted(format!(
                    "{}: {queued} messages are already waiting for the broker; retry later",
                    self.name
                )));
            }
        };
        rx.await.unwrap_or_else(|_| {
            Err(Status::unavailable(format!(
                "{}: the internal call carrying this send was abandoned",
                self.name
            )))
        })
    }

    /// Takes a free call slot for `request`, or queues it, or refuses it (the queue is full).
    fn admit(
        &self,
        request: SendMessageRequest,
        timeout: Option<Duration>,
        traceparent: Traceparent,
    ) -> Admit {
        let count = request.messages.len();
        let bytes = body_bytes(&request.messages);
        let mut st = self.state.lock();
        if st.in_flight < self.limits.calls_in_flight && st.queue.is_empty() {
            st.in_flight += 1;
            return Admit::Call(request, traceparent);
        }
        let over = st.queued_messages + count > self.limits.max_queued_messages
            || st.queued_bytes + bytes > self.limits.max_queued_bytes;
        if over && !st.queue.is_empty() {
            return Admit::Refused(st.queued_messages);
        }
        let (reply, rx) = oneshot::channel();
        st.queued_messages += count;
        st.queued_bytes += bytes;
        st.queue.push_back(Waiting {
            messages: request.messages,
            bytes,
            timeout,
            traceparent,
            reply,
        });
        Admit::Queued(rx)
    }

    fn count_call(&self, requests: u64) {
        let mut s = self.stats.lock();
        s.calls += 1;
        s.requests += requests;
    }

    /// A call slot came free: hands it to what is queued (a task makes combined calls until
    /// the queue is empty), or releases it.
    fn release(self: &Arc<Self>) {
        let Some(batch) = self.take_batch() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime left (the proxy is gone): the waiting callers learn it from their
            // dropped replies.
            return;
        };
        let me = Arc::clone(self);
        runtime.spawn(async move {
            let mut batch = batch;
            loop {
                me.run(batch).await;
                match me.take_batch() {
                    Some(next) => batch = next,
                    None => break,
                }
            }
        });
    }

    /// The next batch, keeping the caller's slot; with nothing queued, the slot is released.
    fn take_batch(&self) -> Option<Vec<Waiting>> {
        let mut st = self.state.lock();
        let batch = Self::drain(&mut st, &self.limits);
        if batch.is_none() {
            st.in_flight = st.in_flight.saturating_sub(1);
        }
        batch
    }

    /// Takes whole queued requests up to the call limits (at least one); skips callers that
    /// gave up.
    fn drain(st: &mut State, limits: &CombineLimits) -> Option<Vec<Waiting>> {
        let mut batch: Vec<Waiting> = Vec::new();
        let (mut messages, mut bytes) = (0usize, 0usize);
        while let Some(w) = st.queue.front() {
            let fits = messages + w.messages.len() <= limits.max_call_messages
                && bytes + w.bytes <= limits.max_call_bytes;
            if !batch.is_empty() && !fits {
                break;
            }
            let Some(w) = st.queue.pop_front() else { break };
            st.queued_messages -= w.messages.len();
            st.queued_bytes -= w.bytes;
            if w.reply.is_closed() {
                continue;
            }
            messages += w.messages.len();
            bytes += w.bytes;
            batch.push(w);
        }
        (!batch.is_empty()).then_some(batch)
    }

    /// One combined call for `batch`; each caller gets its own part of the answer.
    async fn run(&self, batch: Vec<Waiting>) {
        self.count_call(batch.len() as u64);
        let timeout = batch.iter().filter_map(|w| w.timeout).max();
        let traceparent = batch.iter().find_map(|w| w.traceparent.clone());
        let mut counts = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut messages = Vec::with_capacity(batch.iter().map(|w| w.messages.len()).sum());
        for w in batch {
            counts.push(w.messages.len());
            replies.push(w.reply);
            messages.extend(w.messages);
        }
        let total = messages.len();
        let answer = self
            .caller
            .call(SendMessageRequest { messages }, timeout, traceparent)
            .await;
        for (reply, part) in replies.into_iter().zip(split(answer, &counts, total)) {
            let _ = reply.send(part);
        }
    }
}

/// Splits the answer to a combined call into the answers of its requests (`counts` messages
/// each, `total` together).
fn split(
    answer: Result<SendMessageResponse, Status>,
    counts: &[usize],
    total: usize,
) -> Vec<Result<SendMessageResponse, Status>> {
    let response = match answer {
        Err(e) => return counts.iter().map(|_| Err(e.clone())).collect(),
        Ok(r) => r,
    };
    if response.entries.is_empty() {
        // The call as a whole failed in-body: the same answer for every request.
        return counts.iter().map(|_| Ok(response.clone())).collect();
    }
    if response.entries.len() != total {
        let e = Status::internal(format!(
            "the broker answered {} entries for {total} combined messages",
            response.entries.len()
        ));
        return counts.iter().map(|_| Err(e.clone())).collect();
    }
    let mut entries = response.entries.into_iter();
    counts
        .iter()
        .map(|&n| {
            let own: Vec<_> = entries.by_ref().take(n).collect();
            let status =
                comet_vocab::status::aggregate(own.iter().filter_map(|e| e.status.as_ref()));
            Ok(SendMessageResponse {
                status: Some(status),
                entries: own,
            })
        })
        .collect()
}

/// A call slot held; dropping it (the call ended, or its caller gave up) frees it for what is
/// queued.
struct InFlight(Arc<SendCombiner>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.release();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use comet_proto::apache::rocketmq::v2::{Code, SendResultEntry, SystemProperties};
    use tokio::sync::{Semaphore, mpsc};

    /// A broker that answers each message with its id, one call at a time as the test lets
    /// it (one permit per call), recording every call's message ids.
    struct Fake {
        gate: Arc<Semaphore>,
        calls: mpsc::UnboundedSender<Vec<String>>,
        fail: bool,
    }

    impl SendCall for Fake {
        fn call(
            &self,
            request: SendMessageRequest,
            _timeout: Option<Duration>,
            _traceparent: Traceparent,
        ) -> SendFuture {
            let ids: Vec<String> = request.messages.iter().map(id).collect();
            let _ = self.calls.send(ids.clone());
            let gate = Arc::clone(&self.gate);
            let fail = self.fail;
            Box::pin(async move {
                gate.acquire().await.unwrap().forget();
                if fail {
                    return Err(Status::unavailable("broker went away"));
                }
                let entries = ids
                    .into_iter()
                    .map(|message_id| SendResultEntry {
                        status: Some(comet_vocab::status::ok()),
                        message_id,
                        ..SendResultEntry::default()
                    })
                    .collect();
                Ok(SendMessageResponse {
                    status: Some(comet_vocab::status::ok()),
                    entries,
                })
            })
        }
    }

    fn id(m: &Message) -> String {
        m.system_properties
            .as_ref()
            .map(|s| s.message_id.clone())
            .unwrap_or_default()
    }

    fn request(ids: &[&str]) -> SendMessageRequest {
        SendMessageRequest {
            messages: ids
                .iter()
                .map(|i| Message {
                    system_properties: Some(SystemProperties {
                        message_id: (*i).to_owned(),
                        ..SystemProperties::default()
                    }),
                    body: bytes::Bytes::from_static(b"0123456789"),
                    ..Message::default()
                })
                .collect(),
        }
    }

    fn combiner(
        limits: CombineLimits,
        fail: bool,
    ) -> (
        Arc<SendCombiner>,
        Arc<Semaphore>,
        mpsc::UnboundedReceiver<Vec<String>>,
    ) {
        let gate = Arc::new(Semaphore::new(0));
        let (tx, rx) = mpsc::unbounded_channel();
        let fake = Fake {
            gate: Arc::clone(&gate),
            calls: tx,
            fail,
        };
        (
            SendCombiner::new("broker test", limits, Arc::new(fake)),
            gate,
            rx,
        )
    }

    fn one_call() -> CombineLimits {
        CombineLimits {
            calls_in_flight: 1,
            ..CombineLimits::default()
        }
    }

    /// Spawns `send`s of `batches` (after the first, which takes the free slot) and waits
    /// until each of them is queued.
    async fn spawn_sends(
        c: &Arc<SendCombiner>,
        batches: &[&[&str]],
    ) -> Vec<tokio::task::JoinHandle<Result<SendMessageResponse, Status>>> {
        let mut tasks = Vec::new();
        for (i, ids) in batches.iter().enumerate() {
            let c2 = Arc::clone(c);
            let req = request(ids);
            tasks.push(tokio::spawn(async move { c2.send(req, None, None).await }));
            // Let the task run until it made its call or queued itself.
            for _ in 0..100 {
                tokio::task::yield_now().await;
                let st = c.state.lock();
                if st.in_flight > 0 && st.queue.len() >= i {
                    break;
                }
            }
        }
        tasks
    }

    #[tokio::test]
    async fn given_a_busy_slot_when_sends_arrive_together_should_combine_them_into_one_call() {
        let (c, gate, mut calls) = combiner(one_call(), false);
        let batches: &[&[&str]] = &[&["a"], &["b1", "b2"], &["c"], &["d1", "d2", "d3"]];
        let tasks = spawn_sends(&c, batches).await;
        assert_eq!(
            calls.recv().await.unwrap(),
            vec!["a"],
            "the first send goes alone"
        );
        assert_eq!(c.state.lock().queue.len(), 3, "the others wait");
        gate.add_permits(2);
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap().unwrap());
        }
        assert_eq!(
            calls.recv().await.unwrap(),
            vec!["b1", "b2", "c", "d1", "d2", "d3"],
            "everything queued leaves in one call, in arrival order"
        );
        for (answer, ids) in answers.iter().zip(batches) {
            let got: Vec<&str> = answer
                .entries
                .iter()
                .map(|e| e.message_id.as_str())
                .collect();
            assert_eq!(got, *ids, "each caller gets its own entries");
            assert_eq!(answer.status.as_ref().unwrap().code, Code::Ok as i32);
        }
        assert_eq!(
            c.stats(),
            CombineStats {
                calls: 2,
                requests: 4,
                refused: 0
            }
        );
        assert_eq!(c.state.lock().in_flight, 0, "the slot is free again");
    }

    #[tokio::test]
    async fn given_a_failing_broker_when_a_combined_call_fails_should_fail_each_caller_with_its_code()
     {
        let (c, gate, mut calls) = combiner(one_call(), true);
        let tasks = spawn_sends(&c, &[&["a"], &["b"], &["c"]]).await;
        gate.add_permits(2);
        for t in tasks {
            let e = t.await.unwrap().unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unavailable);
        }
        assert_eq!(calls.recv().await.unwrap(), vec!["a"]);
        assert_eq!(calls.recv().await.unwrap(), vec!["b", "c"]);
    }

    #[tokio::test]
    async fn given_a_full_queue_when_more_sends_arrive_should_refuse_them_retryably_and_lose_nothing()
     {
        let limits = CombineLimits {
            calls_in_flight: 1,
            max_queued_messages: 3,
            ..CombineLimits::default()
        };
        let (c, gate, mut calls) = combiner(limits, false);
        let tasks = spawn_sends(&c, &[&["a"], &["b1", "b2"], &["c"]]).await;
        let refused = c.send(request(&["d"]), None, None).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("retry later"), "{refused:?}");
        gate.add_permits(2);
        let mut sent = Vec::new();
        for t in tasks {
            let answer = t.await.unwrap().unwrap();
            sent.extend(answer.entries.into_iter().map(|e| e.message_id));
        }
        assert_eq!(
            sent,
            vec!["a", "b1", "b2", "c"],
            "every accepted send is answered"
        );
        let mut reached = Vec::new();
        while let Ok(ids) = calls.try_recv() {
            reached.extend(ids);
        }
        assert_eq!(
            reached,
            vec!["a", "b1", "b2", "c"],
            "the refused send never left"
        );
        assert_eq!(c.stats().refused, 1);
    }

    #[tokio::test]
    async fn given_call_limits_when_much_is_queued_should_split_at_whole_requests() {
        let limits = CombineLimits {
            calls_in_flight: 1,
            max_call_messages: 3,
            ..CombineLimits::default()
        };
        let (c, gate, mut calls) = combiner(limits, false);
        let tasks = spawn_sends(&c, &[&["a"], &["b1", "b2"], &["c1", "c2"], &["d"]]).await;
        gate.add_permits(3);
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(calls.recv().await.unwrap(), vec!["a"]);
        assert_eq!(calls.recv().await.unwrap(), vec!["b1", "b2"]);
        assert_eq!(calls.recv().await.unwrap(), vec!["c1", "c2", "d"]);
    }

    #[tokio::test]
    async fn given_a_caller_that_gave_up_when_its_turn_comes_should_not_send_its_messages() {
        let (c, gate, mut calls) = combiner(one_call(), false);
        let mut tasks = spawn_sends(&c, &[&["a"], &["b"], &["c"]]).await;
        let gave_up = tasks.remove(1);
        gave_up.abort();
        let _ = gave_up.await;
        gate.add_permits(2);
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(calls.recv().await.unwrap(), vec!["a"]);
        assert_eq!(calls.recv().await.unwrap(), vec!["c"]);
    }
}
