//! The push consumer: the SDK receives and the application's [`MessageListener`] handles.
//!
//! ```text
//!  assignment loop (QueryAssignment, every 5 s) ──► one receive loop per assigned queue
//!        receive loop: wait for cache room ─► ReceiveMessage (long poll) ─► cache
//!        cache ─► one handler task per message (at most max_concurrency listener calls at once)
//!        Success ─► concurrent mode: the ack batcher (crate::ack): one AckMessage per
//!                   (endpoint, topic) for up to 32 acks or after 2 ms
//!                 ─► FIFO mode: AckMessage before the group's next message runs
//!        Failure ─► concurrent mode: ChangeInvisibleDuration(backoff of the attempt);
//!                   the server redelivers with attempt + 1 and dead-letters after max attempts
//!                 ─► FIFO mode: retried in place after the backoff, in order, until the
//!                   group's max attempts; then ForwardMessageToDeadLetterQueue
//! ```
//!
//! Per message, the hot path keeps a receipt (id, topic, receipt handle) rather than a second
//! copy of the message, takes no lock, and wakes the receive loops only when the cache was
//! full; the acks of up to 32 messages share one call.
//!
//! Invariants:
//! - At most `max_concurrency` listener calls run at once.
//! - Received, unfinished messages stay under `max_cached_messages` and `max_cached_bytes`
//!   (a receive asks for no more than the room left; one receive may exceed the byte bound by
//!   its last message). A message is finished once its ack, nack, dead-letter forward or
//!   release is settled, so acks waiting in a batch still count.
//! - FIFO acks are not batched: as in the official clients, a message's ack is settled before
//!   the next message of its group runs, so a lost ack cannot let a later message overtake it.
//! - FIFO mode (the server's settings say the group is FIFO): messages of one message group run
//!   one at a time in delivery order; the next batch of a queue is received only after the
//!   previous one is finished.
//! - A message stays invisible to others while it waits or its listener runs: the invisibility
//!   is renewed every half `invisible_duration`.
//! - [`PushConsumer::shutdown`] stops receiving, lets running listeners finish, flushes every
//!   pending ack batch without waiting out its linger, makes the messages it did not start
//!   visible again at once, then sends NotifyClientTermination. Nothing it received is lost:
//!   each message is acknowledged, dead-lettered, or delivered again to the next consumer.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use comet_proto::apache::rocketmq::v2 as pb;
use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use pb::telemetry_command::Command;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::ack::{AckBatcher, Receipt, Settled};
use crate::config::{ClientConfig, connection_setters};
use crate::connect;
use crate::consume::{self, ConsumerIdentity, ReceiveCall};
use crate::endpoints::Endpoints;
use crate::error::{Error, Result};
use crate::message::{FilterExpression, MessageView, validate_topic};
use crate::retry::RetryPolicy;
use crate::route_table::Queue;
use crate::session::{Role, Session, check, std_duration};
use crate::simple_consumer::validate_group;
use crate::telemetry;

const DEFAULT_CONCURRENCY: usize = 20;
const DEFAULT_CACHED_MESSAGES: usize = 1024;
const DEFAULT_CACHED_BYTES: usize = 64 << 20;
const DEFAULT_INVISIBLE: Duration = Duration::from_secs(30);
const ASSIGNMENT_INTERVAL: Duration = Duration::from_secs(5);
/// Pause after a failed receive or a failed nack/dead-letter attempt.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Attempts for a nack or a dead-letter forward before giving up (the message then comes back
/// after its invisibility ends). Acks retry on their own terms ([`crate::ack::settle`]).
const SETTLE_ATTEMPTS: u32 = 5;
/// How long a message the consumer did not start stays invisible when released on shutdown.
const RELEASE_INVISIBLE: Duration = Duration::from_secs(1);
const MAX_BATCH: u32 = 32;

/// A listener's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeResult {
    /// Handled: the message is acknowledged.
    Success,
    /// Not handled: the message is retried (and dead-lettered after the group's max attempts).
    Failure,
}

/// Handles messages for a [`PushConsumer`]. Implemented for any
/// `Fn(MessageView) -> impl Future<Output = ConsumeResult>`.
pub trait MessageListener: Send + Sync + 'static {
    /// Handles `message`.
    fn consume(&self, message: MessageView) -> BoxFuture<'static, ConsumeResult>;
}

impl<F, Fut> MessageListener for F
where
    F: Fn(MessageView) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ConsumeResult> + Send + 'static,
{
    fn consume(&self, message: MessageView) -> BoxFuture<'static, ConsumeResult> {
        Box::pin(self(message))
    }
}

/// Builds a [`PushConsumer`].
#[must_use]
pub struct PushConsumerBuilder {
    config: ClientConfig,
    group: String,
    subscriptions: HashMap<String, FilterExpression>,
    listener: Option<Arc<dyn MessageListener>>,
    max_concurrency: usize,
    max_cached_messages: usize,
    max_cached_bytes: usize,
    invisible_duration: Duration,
}

impl PushConsumerBuilder {
    connection_setters!();

    /// Subscribes to `topic` with `filter`.
    pub fn subscribe(mut self, topic: impl Into<String>, filter: FilterExpression) -> Self {
        self.subscriptions.insert(topic.into(), filter);
        self
    }

    /// The listener that handles every message (required).
    pub fn listener(mut self, listener: impl MessageListener) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Most listener calls running at once (default 20).
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = n;
        self
    }

    /// Most received, unfinished messages held (default 1024).
    pub fn max_cached_messages(mut self, n: usize) -> Self {
        self.max_cached_messages = n;
        self
    }

    /// Most bytes of received, unfinished message bodies held (default 64 MiB).
    pub fn max_cached_bytes(mut self, n: usize) -> Self {
        self.max_cached_bytes = n;
        self
    }

    /// How long a received message stays invisible to other consumers (default 30 s); renewed
    /// while it waits or its listener runs.
    pub fn invisible_duration(mut self, d: Duration) -> Self {
        self.invisible_duration = d;
        self
    }

    /// Connects, syncs settings and starts receiving.
    ///
    /// # Errors
    /// [`Error::Config`] for a missing listener or subscription, a blank group or a zero
    /// bound; [`Error::InvalidMessage`] for a bad topic or filter; the connection's errors.
    pub async fn build(self) -> Result<PushConsumer> {
        validate_group(&self.group)?;
        let Some(listener) = self.listener else {
            return Err(Error::Config {
                setting: "listener",
                reason: "a push consumer needs a listener".into(),
            });
        };
        if self.subscriptions.is_empty() {
            return Err(Error::Config {
                setting: "subscribe",
                reason: "a consumer needs at least one subscription".into(),
            });
        }
        for (t, f) in &self.subscriptions {
            validate_topic(t)?;
            f.validate()?;
        }
        for (setting, v) in [
            ("max_concurrency", self.max_concurrency),
            ("max_cached_messages", self.max_cached_messages),
            ("max_cached_bytes", self.max_cached_bytes),
        ] {
            if v == 0 {
                return Err(Error::Config {
                    setting,
                    reason: "must be at least 1".into(),
                });
            }
        }
        if self.invisible_duration < Duration::from_secs(2) {
            return Err(Error::Config {
                setting: "invisible_duration",
                reason: "must be at least 2 s (it is renewed every half of it)".into(),
            });
        }
        let role = Arc::new(PushRole {
            namespace: self.config.namespace.clone(),
            group: self.group.clone(),
            request_timeout: self.config.request_timeout,
            subscriptions: self.subscriptions,
            fifo: AtomicBool::new(false),
            batch: AtomicU32::new(MAX_BATCH),
            long_polling: RwLock::new(Duration::from_secs(20)),
            retry: RwLock::new(RetryPolicy::consumer_default()),
            listener: listener.clone(),
        });
        let session = Session::new(self.config, role.clone())?;
        let guard = session.token().clone().drop_guard();
        connect::start(&session).await?;
        let shared = Arc::new(Shared {
            stopping: session.token().child_token(),
            session,
            role,
            listener,
            concurrency: Semaphore::new(self.max_concurrency),
            max_cached_messages: self.max_cached_messages,
            max_cached_bytes: self.max_cached_bytes,
            cached_messages: AtomicUsize::new(0),
            cached_bytes: AtomicUsize::new(0),
            cache_freed: Notify::new(),
            acks: AckBatcher::default(),
            invisible: self.invisible_duration,
            handlers: TaskTracker::new(),
            queues: Mutex::new(HashMap::new()),
        });
        let s = shared.clone();
        shared
            .session
            .tasks()
            .spawn(async move { assignment_loop(s).await });
        Ok(PushConsumer {
            inner: Arc::new(Inner {
                shared,
                _guard: guard,
            }),
        })
    }
}

/// Receives messages of its subscriptions and hands them to its listener. Cheap to clone.
#[derive(Clone)]
pub struct PushConsumer {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    _guard: DropGuard,
}

impl std::fmt::Debug for PushConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConsumer")
            .field("group", &self.inner.shared.role.group)
            .field("client_id", &self.inner.shared.session.client_id())
            .finish_non_exhaustive()
    }
}

struct PushRole {
    namespace: String,
    group: String,
    request_timeout: Duration,
    subscriptions: HashMap<String, FilterExpression>,
    fifo: AtomicBool,
    batch: AtomicU32,
    long_polling: RwLock<Duration>,
    retry: RwLock<RetryPolicy>,
    listener: Arc<dyn MessageListener>,
}

struct Shared {
    session: Session,
    role: Arc<PushRole>,
    listener: Arc<dyn MessageListener>,
    concurrency: Semaphore,
    max_cached_messages: usize,
    max_cached_bytes: usize,
    cached_messages: AtomicUsize,
    cached_bytes: AtomicUsize,
    /// Woken when a release takes the cache below a bound it was at.
    cache_freed: Notify,
    /// Concurrent mode's acks waiting to go out in batches.
    acks: AckBatcher,
    invisible: Duration,
    /// Stops receiving (graceful shutdown's first step); a child of the session's token.
    stopping: CancellationToken,
    /// Every task that holds received messages.
    handlers: TaskTracker,
    /// Running receive loops by assigned queue.
    queues: Mutex<HashMap<String, CancellationToken>>,
}

impl PushConsumer {
    /// Starts building a consumer of `group`.
    pub fn builder(group: impl Into<String>) -> PushConsumerBuilder {
        PushConsumerBuilder {
            config: ClientConfig::default(),
            group: group.into(),
            subscriptions: HashMap::new(),
            listener: None,
            max_concurrency: DEFAULT_CONCURRENCY,
            max_cached_messages: DEFAULT_CACHED_MESSAGES,
            max_cached_bytes: DEFAULT_CACHED_BYTES,
            invisible_duration: DEFAULT_INVISIBLE,
        }
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.inner.shared.role.group
    }

    /// Received messages not finished yet (waiting or in a listener).
    pub fn cached_messages(&self) -> usize {
        self.inner.shared.cached_messages.load(Ordering::Relaxed)
    }

    /// Stops gracefully: no more receives; running listeners finish and their results are
    /// sent (pending ack batches go out at once); messages not started are made visible
    /// again; then the server is told the client left and every background task ends.
    pub async fn shutdown(&self) {
        let s = &self.inner.shared;
        s.stopping.cancel();
        s.handlers.close();
        s.handlers.wait().await;
        s.session.shutdown().await;
    }
}

/// A queue's identity in the assignment table.
fn queue_key(q: &Queue) -> String {
    let topic = q.proto.topic.as_ref().map_or("", |t| t.name.as_str());
    let broker = q.proto.broker.as_ref().map_or("", |b| b.name.as_str());
    format!("{topic}@{broker}#{}@{}", q.proto.id, q.endpoints.key)
}

async fn assignment_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(ASSIGNMENT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.stopping.cancelled() => return,
            _ = tick.tick() => {}
        }
        let topics: Vec<String> = shared.role.subscriptions.keys().cloned().collect();
        for topic in topics {
            match query_assignment(&shared, &topic).await {
                Ok(queues) => apply_assignment(&shared, &topic, queues),
                Err(e) => {
                    tracing::debug!(topic = %topic, error = %e, "QueryAssignment failed; keeping the current assignment");
                }
            }
        }
    }
}

async fn query_assignment(shared: &Shared, topic: &str) -> Result<Vec<Queue>> {
    let session = &shared.session;
    let response = session
        .on_access_point(|access| {
            let req = pb::QueryAssignmentRequest {
                topic: Some(session.resource(topic)),
                group: Some(session.resource(&shared.role.group)),
                endpoints: Some(access.proto.clone()),
            };
            async move {
                let r = session
                    .unary(crate::rpc::QUERY_ASSIGNMENT, &access, &req)
                    .await?;
                Ok((r, access))
            }
        })
        .await?;
    let (response, access) = response;
    check("QueryAssignment", response.status.as_ref())?;
    Ok(response
        .assignments
        .into_iter()
        .filter_map(|a| a.message_queue)
        .map(|mq| {
            let endpoints = mq
                .broker
                .as_ref()
                .and_then(|b| b.endpoints.clone())
                .filter(|e| !e.addresses.is_empty())
                .map_or_else(|| access.clone(), Endpoints::from_proto);
            Queue {
                proto: mq,
                endpoints: Arc::new(endpoints),
            }
        })
        .filter(Queue::readable)
        .collect())
}

fn apply_assignment(shared: &Arc<Shared>, topic: &str, queues: Vec<Queue>) {
    let wanted: HashMap<String, Queue> = queues.into_iter().map(|q| (queue_key(&q), q)).collect();
    let mut running = shared.queues.lock();
    let prefix = format!("{topic}@");
    running.retain(|key, token| {
        let keep = !key.starts_with(&prefix) || wanted.contains_key(key);
        if !keep {
            tracing::debug!(queue = %key, "queue no longer assigned");
            token.cancel();
        }
        keep
    });
    for (key, queue) in wanted {
        if running.contains_key(&key) {
            continue;
        }
        tracing::debug!(queue = %key, "queue assigned");
        telemetry::ensure(&shared.session, &queue.endpoints);
        let token = shared.stopping.child_token();
        running.insert(key, token.clone());
        let s = shared.clone();
        shared
            .handlers
            .spawn(async move { receive_loop(s, queue, token).await });
    }
}

/// Receives from one queue until `token` is cancelled.
async fn receive_loop(shared: Arc<Shared>, queue: Queue, token: CancellationToken) {
    let topic = queue
        .proto
        .topic
        .as_ref()
        .map(|t| t.name.clone())
        .unwrap_or_default();
    let Some(filter) = shared
        .role
        .subscriptions
        .get(&topic)
        .map(FilterExpression::to_proto)
    else {
        return;
    };
    loop {
        let Some(room) = wait_for_room(&shared, &token).await else {
            return;
        };
        let batch = shared
            .role
            .batch
            .load(Ordering::Relaxed)
            .clamp(1, MAX_BATCH);
        let batch = batch.min(u32::try_from(room).unwrap_or(u32::MAX)).max(1);
        let long_polling = *shared.role.long_polling.read();
        let received = tokio::select! {
            () = token.cancelled() => return,
            r = consume::receive(&shared.session, ReceiveCall {
                group: &shared.role.group,
                queue: &queue,
                filter: filter.clone(),
                batch,
                invisible: shared.invisible,
                long_polling,
            }) => r,
        };
        let messages = match received {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(topic = %topic, queue_id = queue.proto.id, error = %e, "receive failed");
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(RETRY_PAUSE) => continue,
                }
            }
        };
        if messages.is_empty() {
            continue;
        }
        let received_at = Instant::now();
        shared
            .cached_messages
            .fetch_add(messages.len(), Ordering::Relaxed);
        shared
            .cached_bytes
            .fetch_add(messages.iter().map(|m| m.size).sum(), Ordering::Relaxed);
        if shared.role.fifo.load(Ordering::Relaxed) {
            consume_fifo_batch(&shared, messages, received_at).await;
        } else {
            for m in messages {
                let s = shared.clone();
                shared
                    .handlers
                    .spawn(async move { consume_concurrently(s, m, received_at).await });
            }
        }
    }
}

/// Waits until the cache has room; returns how many messages fit, or `None` when stopped.
async fn wait_for_room(shared: &Shared, token: &CancellationToken) -> Option<usize> {
    loop {
        let freed = shared.cache_freed.notified();
        let count = shared.cached_messages.load(Ordering::Relaxed);
        let bytes = shared.cached_bytes.load(Ordering::Relaxed);
        if count < shared.max_cached_messages && bytes < shared.max_cached_bytes {
            return Some(shared.max_cached_messages - count);
        }
        tokio::select! {
            () = token.cancelled() => return None,
            () = freed => {}
        }
    }
}

/// Takes finished messages out of the cache, waking the receive loops if it was full.
fn uncache(shared: &Shared, settled: Settled) {
    if settled.messages == 0 {
        return;
    }
    let count = shared
        .cached_messages
        .fetch_sub(settled.messages, Ordering::Relaxed);
    let bytes = shared
        .cached_bytes
        .fetch_sub(settled.bytes, Ordering::Relaxed);
    // A receive loop waits only while a bound is reached; a release that leaves both bounds
    // as unreached as they were wakes nobody.
    if count >= shared.max_cached_messages || bytes >= shared.max_cached_bytes {
        shared.cache_freed.notify_waiters();
    }
}

fn one(receipt: &Receipt) -> Settled {
    Settled {
        messages: 1,
        bytes: receipt.size,
    }
}

/// Runs `work` while keeping the receipt's message invisible: renews the invisibility every
/// half `invisible` counted from `since`, updating the receipt's handle. A failed renewal is
/// logged and tried again at the next half: the message may then be delivered elsewhere too
/// (at-least-once).
async fn with_renewal<T>(
    shared: &Shared,
    receipt: &mut Receipt,
    since: Instant,
    work: impl Future<Output = T>,
) -> T {
    let half = shared.invisible / 2;
    let mut next = since + half;
    tokio::pin!(work);
    loop {
        tokio::select! {
            r = &mut work => return r,
            () = tokio::time::sleep_until(next) => {
                let renewed = consume::change_invisible(
                    &shared.session,
                    &shared.role.group,
                    receipt,
                    shared.invisible,
                )
                .await;
                if let Err(e) = renewed {
                    tracing::debug!(message_id = %receipt.message_id, error = %e, "invisibility renewal failed");
                }
                next = Instant::now() + half;
            }
        }
    }
}

/// Concurrent mode: one message, one listener call; success → batched ack, failure → delayed
/// redelivery.
async fn consume_concurrently(shared: Arc<Shared>, message: MessageView, received_at: Instant) {
    let mut receipt = Receipt::of(&message);
    let attempt = message.delivery_attempt;
    let outcome = with_renewal(&shared, &mut receipt, received_at, async {
        let permit = tokio::select! {
            () = shared.stopping.cancelled() => return None,
            p = shared.concurrency.acquire() => p.ok()?,
        };
        let result = if message.corrupted {
            tracing::warn!(message_id = %message.message_id, "corrupted body: not handed to the listener");
            ConsumeResult::Failure
        } else {
            shared.listener.consume(message).await
        };
        drop(permit);
        Some(result)
    })
    .await;
    let settled = match outcome {
        None => {
            release(&shared, &mut receipt).await;
            one(&receipt)
        }
        Some(ConsumeResult::Success) => {
            shared
                .acks
                .ack(
                    &shared.session,
                    &shared.role.group,
                    receipt,
                    &shared.stopping,
                )
                .await
        }
        Some(ConsumeResult::Failure) => {
            let delay = shared.role.retry.read().delay(attempt);
            nack(&shared, &mut receipt, delay).await;
            one(&receipt)
        }
    };
    uncache(&shared, settled);
}

/// FIFO mode: the batch's message groups run side by side; each group's messages run one at a
/// time in order, retried in place.
async fn consume_fifo_batch(shared: &Arc<Shared>, messages: Vec<MessageView>, since: Instant) {
    let mut groups: Vec<(Option<String>, VecDeque<MessageView>)> = Vec::new();
    for m in messages {
        match groups.iter_mut().find(|(g, _)| *g == m.message_group) {
            Some((_, q)) => q.push_back(m),
            None => {
                let g = m.message_group.clone();
                groups.push((g, VecDeque::from([m])));
            }
        }
    }
    let chains = groups.into_iter().map(|(_, chain)| {
        let s = shared.clone();
        async move {
            let mut chain = chain;
            while let Some(m) = chain.pop_front() {
                if s.stopping.is_cancelled() {
                    let mut receipt = Receipt::of(&m);
                    release(&s, &mut receipt).await;
                    uncache(&s, one(&receipt));
                    continue;
                }
                consume_fifo_one(&s, m, since).await;
            }
        }
    });
    futures::future::join_all(chains).await;
}

async fn consume_fifo_one(shared: &Arc<Shared>, message: MessageView, since: Instant) {
    let mut receipt = Receipt::of(&message);
    let max_attempts = shared.role.retry.read().max_attempts;
    let mut attempt = message.delivery_attempt;
    let outcome = with_renewal(shared, &mut receipt, since, async {
        loop {
            let permit = tokio::select! {
                () = shared.stopping.cancelled() => return None,
                p = shared.concurrency.acquire() => p.ok()?,
            };
            if message.corrupted {
                tracing::warn!(message_id = %message.message_id, "corrupted body: dead-lettered without the listener");
                return Some(ConsumeResult::Failure);
            }
            // The listener owns what it is given; a retry in place needs the message again.
            let mut view = message.clone();
            view.delivery_attempt = attempt;
            let result = shared.listener.consume(view).await;
            drop(permit);
            if result == ConsumeResult::Success || attempt >= max_attempts {
                return Some(result);
            }
            let delay = shared.role.retry.read().delay(attempt);
            tokio::select! {
                () = shared.stopping.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
            attempt += 1;
        }
    })
    .await;
    let settled = one(&receipt);
    match outcome {
        None => release(shared, &mut receipt).await,
        Some(ConsumeResult::Success) => {
            crate::ack::settle(&shared.session, &shared.role.group, vec![receipt]).await;
        }
        Some(ConsumeResult::Failure) => {
            settle("ForwardMessageToDeadLetterQueue", &receipt, || {
                consume::forward_to_dlq(
                    &shared.session,
                    &shared.role.group,
                    &receipt,
                    attempt,
                    max_attempts,
                )
            })
            .await;
        }
    }
    uncache(shared, settled);
}

async fn nack(shared: &Shared, receipt: &mut Receipt, delay: Duration) {
    let mut last = None;
    for _ in 0..SETTLE_ATTEMPTS {
        match consume::change_invisible(&shared.session, &shared.role.group, receipt, delay).await {
            Ok(()) => return,
            Err(e) if e.is_retryable() => {
                last = Some(e);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => {
                last = Some(e);
                break;
            }
        }
    }
    if let Some(e) = last {
        tracing::warn!(message_id = %receipt.message_id, error = %e, "retry scheduling failed; the message returns when its invisibility ends");
    }
}

/// Makes a message the consumer will not handle visible again soon.
async fn release(shared: &Shared, receipt: &mut Receipt) {
    if let Err(e) = consume::change_invisible(
        &shared.session,
        &shared.role.group,
        receipt,
        RELEASE_INVISIBLE,
    )
    .await
    {
        tracing::debug!(message_id = %receipt.message_id, error = %e, "release failed; the message returns when its invisibility ends");
    }
}

/// Runs a settling call until it succeeds, fails for good, or the attempts are spent.
async fn settle<F, Fut>(rpc: &'static str, receipt: &Receipt, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    for attempt in 1..=SETTLE_ATTEMPTS {
        match call().await {
            Ok(()) => return,
            Err(e) if e.is_retryable() && attempt < SETTLE_ATTEMPTS => {
                tracing::debug!(rpc, message_id = %receipt.message_id, error = %e, "retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => {
                tracing::warn!(rpc, message_id = %receipt.message_id, error = %e, "gave up; the message returns when its invisibility ends");
                return;
            }
        }
    }
}

impl PushRole {
    fn identity(&self) -> ConsumerIdentity<'_> {
        ConsumerIdentity {
            namespace: &self.namespace,
            group: &self.group,
            client_type: pb::ClientType::PushConsumer,
        }
    }
}

impl Role for PushRole {
    fn settings(&self, access_point: &pb::Endpoints) -> pb::Settings {
        self.identity().settings(
            access_point,
            self.request_timeout,
            &self.subscriptions,
            None,
        )
    }

    fn apply(&self, echo: &pb::Settings) {
        if let Some(pb::settings::PubSub::Subscription(s)) = &echo.pub_sub {
            if let Some(fifo) = s.fifo {
                self.fifo.store(fifo, Ordering::Relaxed);
            }
            if let Some(b) = s.receive_batch_size
                && b > 0
            {
                self.batch.store(b.unsigned_abs(), Ordering::Relaxed);
            }
            if let Some(lp) = &s.long_polling_timeout {
                let lp = std_duration(lp);
                if !lp.is_zero() {
                    *self.long_polling.write() = lp;
                }
            }
        }
        if let Some(p) = echo
            .backoff_policy
            .as_ref()
            .and_then(RetryPolicy::from_proto)
        {
            *self.retry.write() = p;
        }
    }

    fn heartbeat(&self) -> pb::HeartbeatRequest {
        self.identity().heartbeat()
    }

    fn termination(&self) -> pb::NotifyClientTerminationRequest {
        self.identity().termination()
    }

    fn on_command(
        &self,
        session: &Session,
        endpoints: &Endpoints,
        command: Command,
        reply: &mpsc::Sender<pb::TelemetryCommand>,
    ) {
        let Command::VerifyMessageCommand(cmd) = command else {
            telemetry::answer_common(command, reply);
            return;
        };
        // As the official clients do: run the listener on the message and report the result.
        let listener = self.listener.clone();
        let reply = reply.clone();
        let endpoints = Arc::new(endpoints.clone());
        session.tasks().spawn(async move {
            let status = match cmd.message.map(|m| MessageView::from_proto(m, endpoints)) {
                Some(Ok(view)) => match listener.consume(view).await {
                    ConsumeResult::Success => (pb::Code::Ok, "OK"),
                    ConsumeResult::Failure => {
                        (pb::Code::FailedToConsumeMessage, "the listener failed")
                    }
                },
                _ => (
                    pb::Code::MessageCorrupted,
                    "the message could not be decoded",
                ),
            };
            let answer = pb::TelemetryCommand {
                status: Some(pb::Status {
                    code: status.0 as i32,
                    message: status.1.to_owned(),
                }),
                command: Some(Command::VerifyMessageResult(pb::VerifyMessageResult {
                    nonce: cmd.nonce,
                })),
            };
            if reply.send(answer).await.is_err() {
                tracing::debug!("verify result dropped: telemetry stream closed");
            }
        });
    }
}
