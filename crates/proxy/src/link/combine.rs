//! [`Combiner`]: concurrent calls of one kind to one broker combined into one internal call,
//! with bounded in-flight calls and a bounded queue. The link has two per connection: one
//! for SendMessage, one for acks and invisible-time changes (see `batches`).
//!
//! ```text
//!  submit ─► calls in flight < limit? ── yes ─► the caller makes its own call
//!              │ no
//!              ▼
//!          queue full? ── yes ─► RESOURCE_EXHAUSTED (the proxy answers TOO_MANY_REQUESTS)
//!              │ no
//!              ▼
//!          wait in the queue; when a call in flight ends, everything queued (up to the call
//!          limits) leaves in ONE call, and each waiting caller gets its own answer back
//! ```
//!
//! Nothing waits on a timer: a queued request leaves as soon as a call slot frees up, and a
//! request that finds a free slot leaves at once. Combining therefore happens only under load
//! (every slot busy), exactly when fewer, larger calls save the most.
//!
//! # Invariants
//! - Each caller gets exactly its own answer: one combined call carries whole requests, never
//!   part of one, and [`Batch::call_many`] answers each request in order (or fails them all).
//! - A combined call that fails (transport, deadline, overload) fails each of its callers
//!   with that status. A queued caller that gave up before its call left (its deadline
//!   passed) is dropped from the queue: its request is never sent.
//! - At most `calls_in_flight` calls are in flight, and at most `max_queued_messages` items
//!   and `max_queued_bytes` bytes wait (a request always fits into an empty queue).
//! - The combined call's deadline is the longest of its callers' deadlines; each caller still
//!   waits only as long as its own.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tonic::Status;

/// A caller's W3C `traceparent` header, passed on so that the broker's span joins the
/// caller's trace. A combined call carries the first of its requests'.
pub(crate) type Traceparent = Option<tonic::metadata::AsciiMetadataValue>;

/// The answer of a call made for one request.
pub(crate) type OneFuture<A> = Pin<Box<dyn Future<Output = Result<A, Status>> + Send + 'static>>;

/// The answers of a call made for several requests, one per request in order.
pub(crate) type ManyFuture<A> =
    Pin<Box<dyn Future<Output = Vec<Result<A, Status>>> + Send + 'static>>;

/// One kind of call a [`Combiner`] combines: what a request weighs, and how one or several
/// are sent.
pub(crate) trait Batch: Send + Sync + 'static {
    /// What one caller asks.
    type Request: Send + 'static;
    /// What one caller gets.
    type Answer: Send + 'static;

    /// Items (messages, ack entries) and bytes that `request` counts for in the limits.
    fn weight(request: &Self::Request) -> (usize, usize);

    /// Makes the call of one request, with deadline `timeout` (none: the callee's default)
    /// in the trace of `traceparent`.
    fn call_one(
        &self,
        request: Self::Request,
        timeout: Option<Duration>,
        traceparent: Traceparent,
    ) -> OneFuture<Self::Answer>;

    /// Makes one call for `requests` (two or more, in arrival order) and answers each of
    /// them, in order: exactly `requests.len()` answers.
    fn call_many(
        &self,
        requests: Vec<Self::Request>,
        timeout: Option<Duration>,
        traceparent: Traceparent,
    ) -> ManyFuture<Self::Answer>;
}

/// Bounds of a [`Combiner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CombineLimits {
    /// Calls in flight at once; requests arriving while all are busy are queued and combined.
    pub calls_in_flight: usize,
    /// Most items (messages, ack entries) in one combined call (a single request larger than
    /// this goes alone).
    pub max_call_messages: usize,
    /// Most bytes (message bodies, receipt handles) in one combined call (likewise).
    pub max_call_bytes: usize,
    /// Most items waiting; a request that would go over it is refused as retryable.
    pub max_queued_messages: usize,
    /// Most bytes waiting (likewise).
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

/// A queued request.
struct Waiting<B: Batch> {
    request: B::Request,
    items: usize,
    bytes: usize,
    timeout: Option<Duration>,
    traceparent: Traceparent,
    reply: oneshot::Sender<Result<B::Answer, Status>>,
}

struct State<B: Batch> {
    in_flight: usize,
    queue: VecDeque<Waiting<B>>,
    queued_items: usize,
    queued_bytes: usize,
}

/// What [`Combiner::admit`] decided.
enum Admit<B: Batch> {
    /// A call slot was free: the caller makes the call.
    Call(B::Request, Traceparent),
    /// Queued: the answer comes through this.
    Queued(oneshot::Receiver<Result<B::Answer, Status>>),
    /// The queue is full (this many items wait).
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
    /// Requests waiting now.
    pub queued: usize,
}

impl CombineStats {
    /// Both counters together.
    pub(crate) fn add(mut self, other: CombineStats) -> CombineStats {
        self.calls += other.calls;
        self.requests += other.requests;
        self.refused += other.refused;
        self.queued += other.queued;
        self
    }
}

/// Combines the calls of one kind to one broker; see the module docs.
pub(crate) struct Combiner<B: Batch> {
    limits: CombineLimits,
    state: Mutex<State<B>>,
    stats: Mutex<CombineStats>,
    caller: Arc<B>,
    /// What the combiner is for, in errors (`broker at address`).
    name: String,
}

impl<B: Batch> std::fmt::Debug for Combiner<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Combiner")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<B: Batch> Combiner<B> {
    pub(crate) fn new(name: impl Into<String>, limits: CombineLimits, caller: Arc<B>) -> Arc<Self> {
        let limits = CombineLimits {
            calls_in_flight: limits.calls_in_flight.max(1),
            max_call_messages: limits.max_call_messages.max(1),
            ..limits
        };
        Arc::new(Combiner {
            limits,
            state: Mutex::new(State {
                in_flight: 0,
                queue: VecDeque::new(),
                queued_items: 0,
                queued_bytes: 0,
            }),
            stats: Mutex::new(CombineStats::default()),
            caller,
            name: name.into(),
        })
    }

    /// Counters so far, and what waits now.
    pub(crate) fn stats(&self) -> CombineStats {
        let queued = self.state.lock().queue.len();
        CombineStats {
            queued,
            ..*self.stats.lock()
        }
    }

    /// Sends `request` (deadline `timeout`), alone or combined with others; see the module
    /// docs.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED when the queue is full (nothing was sent); the failure of the
    /// internal call that carried the request; UNAVAILABLE when that call was abandoned
    /// (the proxy is shutting down).
    pub(crate) async fn submit(
        self: &Arc<Self>,
        request: B::Request,
        timeout: Option<Duration>,
        traceparent: Traceparent,
    ) -> Result<B::Answer, Status> {
        let rx = match self.admit(request, timeout, traceparent) {
            Admit::Queued(rx) => rx,
            Admit::Call(request, traceparent) => {
                // A free slot: this caller makes the call itself, with no hand-off.
                let slot = InFlight(Arc::clone(self));
                self.count_call(1);
                let answer = self.caller.call_one(request, timeout, traceparent).await;
                drop(slot);
                return answer;
            }
            Admit::Refused(queued) => {
                self.stats.lock().refused += 1;
                return Err(Status::resource_exhausted(format!(
                    "{}: {queued} items are already waiting for the broker; retry later",
                    self.name
                )));
            }
        };
        rx.await.unwrap_or_else(|_| {
            Err(Status::unavailable(format!(
                "{}: the internal call carrying this request was abandoned",
                self.name
            )))
        })
    }

    /// Takes a free call slot for `request`, or queues it, or refuses it (the queue is full).
    fn admit(
        &self,
        request: B::Request,
        timeout: Option<Duration>,
        traceparent: Traceparent,
    ) -> Admit<B> {
        let (items, bytes) = B::weight(&request);
        let mut st = self.state.lock();
        if st.in_flight < self.limits.calls_in_flight && st.queue.is_empty() {
            st.in_flight += 1;
            return Admit::Call(request, traceparent);
        }
        let over = st.queued_items + items > self.limits.max_queued_messages
            || st.queued_bytes + bytes > self.limits.max_queued_bytes;
        if over && !st.queue.is_empty() {
            return Admit::Refused(st.queued_items);
        }
        let (reply, rx) = oneshot::channel();
        st.queued_items += items;
        st.queued_bytes += bytes;
        st.queue.push_back(Waiting {
            request,
            items,
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
    fn take_batch(&self) -> Option<Vec<Waiting<B>>> {
        let mut st = self.state.lock();
        let batch = Self::drain(&mut st, &self.limits);
        if batch.is_none() {
            st.in_flight = st.in_flight.saturating_sub(1);
        }
        batch
    }

    /// Takes whole queued requests up to the call limits (at least one); skips callers that
    /// gave up.
    fn drain(st: &mut State<B>, limits: &CombineLimits) -> Option<Vec<Waiting<B>>> {
        let mut batch: Vec<Waiting<B>> = Vec::new();
        let (mut items, mut bytes) = (0usize, 0usize);
        while let Some(w) = st.queue.front() {
            let fits = items + w.items <= limits.max_call_messages
                && bytes + w.bytes <= limits.max_call_bytes;
            if !batch.is_empty() && !fits {
                break;
            }
            let Some(w) = st.queue.pop_front() else { break };
            st.queued_items -= w.items;
            st.queued_bytes -= w.bytes;
            if w.reply.is_closed() {
                continue;
            }
            items += w.items;
            bytes += w.bytes;
            batch.push(w);
        }
        (!batch.is_empty()).then_some(batch)
    }

    /// One call for `batch` (combined when it holds several); each caller gets its own
    /// answer.
    async fn run(&self, batch: Vec<Waiting<B>>) {
        self.count_call(batch.len() as u64);
        let timeout = batch.iter().filter_map(|w| w.timeout).max();
        let traceparent = batch.iter().find_map(|w| w.traceparent.clone());
        let mut replies = Vec::with_capacity(batch.len());
        let mut requests = Vec::with_capacity(batch.len());
        for w in batch {
            replies.push(w.reply);
            requests.push(w.request);
        }
        if requests.len() == 1 {
            let (Some(request), Some(reply)) = (requests.pop(), replies.pop()) else {
                return;
            };
            let answer = self.caller.call_one(request, timeout, traceparent).await;
            let _ = reply.send(answer);
            return;
        }
        let count = requests.len();
        let answers = self.caller.call_many(requests, timeout, traceparent).await;
        if answers.len() != count {
            let e = Status::internal(format!(
                "{}: a combined call answered {} of {count} requests",
                self.name,
                answers.len()
            ));
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
        for (reply, answer) in replies.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }
}

/// A call slot held; dropping it (the call ended, or its caller gave up) frees it for what is
/// queued.
struct InFlight<B: Batch>(Arc<Combiner<B>>);

impl<B: Batch> Drop for InFlight<B> {
    fn drop(&mut self) {
        self.0.release();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::sync::{Semaphore, mpsc};

    /// A broker that answers each request (a list of ids) with its ids, one call at a time as
    /// the test lets it (one permit per call), recording every call's ids.
    struct Fake {
        gate: Arc<Semaphore>,
        calls: mpsc::UnboundedSender<Vec<String>>,
        fail: bool,
    }

    impl Fake {
        fn answer(&self, ids: Vec<String>) -> Pin<Box<dyn Future<Output = bool> + Send>> {
            let _ = self.calls.send(ids);
            let gate = Arc::clone(&self.gate);
            let fail = self.fail;
            Box::pin(async move {
                gate.acquire().await.unwrap().forget();
                !fail
            })
        }
    }

    impl Batch for Fake {
        type Request = Vec<String>;
        type Answer = Vec<String>;

        fn weight(request: &Vec<String>) -> (usize, usize) {
            (request.len(), request.iter().map(String::len).sum())
        }

        fn call_one(
            &self,
            request: Vec<String>,
            _timeout: Option<Duration>,
            _traceparent: Traceparent,
        ) -> OneFuture<Vec<String>> {
            let answered = self.answer(request.clone());
            Box::pin(async move {
                if answered.await {
                    Ok(request)
                } else {
                    Err(Status::unavailable("broker went away"))
                }
            })
        }

        fn call_many(
            &self,
            requests: Vec<Vec<String>>,
            _timeout: Option<Duration>,
            _traceparent: Traceparent,
        ) -> ManyFuture<Vec<String>> {
            let answered = self.answer(requests.concat());
            Box::pin(async move {
                let ok = answered.await;
                requests
                    .into_iter()
                    .map(|r| {
                        if ok {
                            Ok(r)
                        } else {
                            Err(Status::unavailable("broker went away"))
                        }
                    })
                    .collect()
            })
        }
    }

    fn request(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|i| (*i).to_owned()).collect()
    }

    fn combiner(
        limits: CombineLimits,
        fail: bool,
    ) -> (
        Arc<Combiner<Fake>>,
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
            Combiner::new("broker test", limits, Arc::new(fake)),
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

    /// Spawns `submit`s of `batches` (after the first, which takes the free slot) and waits
    /// until each of them is queued.
    async fn spawn_submits(
        c: &Arc<Combiner<Fake>>,
        batches: &[&[&str]],
    ) -> Vec<tokio::task::JoinHandle<Result<Vec<String>, Status>>> {
        let mut tasks = Vec::new();
        for (i, ids) in batches.iter().enumerate() {
            let c2 = Arc::clone(c);
            let req = request(ids);
            tasks.push(tokio::spawn(
                async move { c2.submit(req, None, None).await },
            ));
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
    async fn given_a_busy_slot_when_requests_arrive_together_should_combine_them_into_one_call() {
        let (c, gate, mut calls) = combiner(one_call(), false);
        let batches: &[&[&str]] = &[&["a"], &["b1", "b2"], &["c"], &["d1", "d2", "d3"]];
        let tasks = spawn_submits(&c, batches).await;
        assert_eq!(
            calls.recv().await.unwrap(),
            vec!["a"],
            "the first request goes alone"
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
            assert_eq!(answer, ids, "each caller gets its own answer");
        }
        assert_eq!(
            c.stats(),
            CombineStats {
                calls: 2,
                requests: 4,
                refused: 0,
                queued: 0,
            }
        );
        assert_eq!(c.state.lock().in_flight, 0, "the slot is free again");
    }

    #[tokio::test]
    async fn given_a_failing_broker_when_a_combined_call_fails_should_fail_each_caller_with_its_code()
     {
        let (c, gate, mut calls) = combiner(one_call(), true);
        let tasks = spawn_submits(&c, &[&["a"], &["b"], &["c"]]).await;
        gate.add_permits(2);
        for t in tasks {
            let e = t.await.unwrap().unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unavailable);
        }
        assert_eq!(calls.recv().await.unwrap(), vec!["a"]);
        assert_eq!(calls.recv().await.unwrap(), vec!["b", "c"]);
    }

    #[tokio::test]
    async fn given_a_full_queue_when_more_requests_arrive_should_refuse_them_retryably_and_lose_nothing()
     {
        let limits = CombineLimits {
            calls_in_flight: 1,
            max_queued_messages: 3,
            ..CombineLimits::default()
        };
        let (c, gate, mut calls) = combiner(limits, false);
        let tasks = spawn_submits(&c, &[&["a"], &["b1", "b2"], &["c"]]).await;
        let refused = c.submit(request(&["d"]), None, None).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("retry later"), "{refused:?}");
        gate.add_permits(2);
        let mut answered = Vec::new();
        for t in tasks {
            answered.extend(t.await.unwrap().unwrap());
        }
        assert_eq!(
            answered,
            vec!["a", "b1", "b2", "c"],
            "every accepted request is answered"
        );
        let mut reached = Vec::new();
        while let Ok(ids) = calls.try_recv() {
            reached.extend(ids);
        }
        assert_eq!(
            reached,
            vec!["a", "b1", "b2", "c"],
            "the refused request never left"
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
        let tasks = spawn_submits(&c, &[&["a"], &["b1", "b2"], &["c1", "c2"], &["d"]]).await;
        gate.add_permits(3);
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(calls.recv().await.unwrap(), vec!["a"]);
        assert_eq!(calls.recv().await.unwrap(), vec!["b1", "b2"]);
        assert_eq!(calls.recv().await.unwrap(), vec!["c1", "c2", "d"]);
    }

    #[tokio::test]
    async fn given_a_caller_that_gave_up_when_its_turn_comes_should_not_send_its_request() {
        let (c, gate, mut calls) = combiner(one_call(), false);
        let mut tasks = spawn_submits(&c, &[&["a"], &["b"], &["c"]]).await;
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
