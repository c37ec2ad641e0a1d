//! The producer: single, batch and fire-and-collect sends, transactions and recall.
//!
//! A send validates the message (see [`crate::message`]) and its size against the server's
//! `max_body_size`, picks a queue from the topic's route (round robin over writable queues that
//! accept the message's type; a FIFO message's group always maps to the same queue), and calls
//! SendMessage on the queue's endpoints. Transient failures are retried up to `max_attempts`
//! times (builder setting, default 3), with the backoff the server's Settings carry for
//! throttling and at once on another endpoint for transport failures; a stale route is
//! refreshed before the next attempt. Transactional sends are not retried (the half message
//! may have been stored), as in the official clients.
//!
//! Transactions: [`Producer::begin_transaction`] → [`Transaction::send`] →
//! [`Transaction::commit`] / [`Transaction::rollback`]. When the server cannot tell the outcome
//! of a half message it asks the producer over telemetry (`RecoverOrphanedTransactionCommand`);
//! the builder's [`TransactionChecker`] answers, and the answer goes back as EndTransaction
//! (source `SERVER_CHECK`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use comet_proto::apache::rocketmq::v2 as pb;
use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use pb::telemetry_command::Command;
use tokio::sync::mpsc;
use tokio_util::sync::DropGuard;

use crate::config::{ClientConfig, connection_setters};
use crate::connect;
use crate::endpoints::Endpoints;
use crate::error::{Error, Invalid, Result};
use crate::message::{Message, MessageView, group_hash, new_message_id, timestamp, validate_topic};
use crate::retry::RetryPolicy;
use crate::route;
use crate::route_table::Queue;
use crate::session::{Role, Session, check, proto_duration};

/// The body limit assumed until the server's settings say otherwise (4 MiB, RocketMQ's).
const DEFAULT_MAX_BODY: usize = 4 << 20;
/// Default send attempts (first try included).
const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// What a successful send returns.
#[derive(Debug, Clone)]
pub struct SendReceipt {
    message_id: String,
    topic: String,
    queue_id: i32,
    offset: i64,
    transaction_id: Option<String>,
    recall_handle: Option<String>,
    endpoints: Arc<Endpoints>,
}

impl SendReceipt {
    /// The message id.
    pub fn message_id(&self) -> &str {
        &self.message_id
    }
    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
    /// The queue the message went to.
    pub fn queue_id(&self) -> i32 {
        self.queue_id
    }
    /// Its offset in that queue.
    pub fn offset(&self) -> i64 {
        self.offset
    }
    /// The transaction id of a transactional (half) message.
    pub fn transaction_id(&self) -> Option<&str> {
        self.transaction_id.as_deref()
    }
    /// The handle [`Producer::recall`] takes, for a delay message on a server that offers
    /// recall (Comet does).
    pub fn recall_handle(&self) -> Option<&str> {
        self.recall_handle.as_deref()
    }
}

/// A transaction checker's verdict on a half message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionResolution {
    /// Deliver the message.
    Commit,
    /// Drop the message.
    Rollback,
    /// Not known yet; the server asks again later.
    Unknown,
}

/// Answers the server's questions about half messages whose producer neither committed nor
/// rolled back (e.g. it crashed). Implemented for any
/// `Fn(MessageView) -> impl Future<Output = TransactionResolution>`.
pub trait TransactionChecker: Send + Sync + 'static {
    /// The resolution for `message`.
    fn check(&self, message: MessageView) -> BoxFuture<'static, TransactionResolution>;
}

impl<F, Fut> TransactionChecker for F
where
    F: Fn(MessageView) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TransactionResolution> + Send + 'static,
{
    fn check(&self, message: MessageView) -> BoxFuture<'static, TransactionResolution> {
        Box::pin(self(message))
    }
}

/// Builds a [`Producer`].
#[must_use]
pub struct ProducerBuilder {
    config: ClientConfig,
    topics: Vec<String>,
    max_attempts: u32,
    checker: Option<Arc<dyn TransactionChecker>>,
}

impl ProducerBuilder {
    connection_setters!();

    /// Topics to publish to: their routes are fetched at start (optional; other topics are
    /// routed on first send).
    pub fn topics<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.topics.extend(topics.into_iter().map(Into::into));
        self
    }

    /// Send attempts for a message, first try included (default 3; at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Enables transactions: `checker` answers the server's check-back for half messages.
    pub fn transaction_checker(mut self, checker: impl TransactionChecker) -> Self {
        self.checker = Some(Arc::new(checker));
        self
    }

    /// Connects: syncs settings with the first access point that answers and fetches the
    /// routes of the given topics.
    ///
    /// # Errors
    /// [`Error::Config`] for bad settings, [`Error::InvalidMessage`] for a bad topic name,
    /// and the connection's errors when no access point answers or a topic has no route.
    pub async fn build(self) -> Result<Producer> {
        if self.max_attempts == 0 {
            return Err(Error::Config {
                setting: "max_attempts",
                reason: "must be at least 1".into(),
            });
        }
        for t in &self.topics {
            validate_topic(t)?;
        }
        let role = Arc::new(ProducerRole {
            namespace: self.config.namespace.clone(),
            request_timeout: self.config.request_timeout,
            topics: RwLock::new(self.topics.clone()),
            max_body_size: AtomicUsize::new(DEFAULT_MAX_BODY),
            validate_message_type: AtomicBool::new(true),
            retry: RwLock::new(RetryPolicy::producer_default(self.max_attempts)),
            max_attempts: self.max_attempts,
            checker: self.checker,
        });
        let session = Session::new(self.config, role.clone())?;
        let guard = session.token().clone().drop_guard();
        connect::start(&session).await?;
        for t in &self.topics {
            if let Err(e) = route::refresh(&session, t).await {
                session.shutdown().await;
                return Err(e);
            }
        }
        Ok(Producer {
            inner: Arc::new(ProducerInner {
                session,
                role,
                _guard: guard,
            }),
        })
    }
}

/// Sends messages. Cheap to clone; every clone shares one connection set. Dropping the last
/// clone stops the background tasks; [`Producer::shutdown`] also tells the server.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<ProducerInner>,
}

struct ProducerInner {
    session: Session,
    role: Arc<ProducerRole>,
    _guard: DropGuard,
}

struct ProducerRole {
    namespace: String,
    request_timeout: std::time::Duration,
    topics: RwLock<Vec<String>>,
    max_body_size: AtomicUsize,
    validate_message_type: AtomicBool,
    retry: RwLock<RetryPolicy>,
    max_attempts: u32,
    checker: Option<Arc<dyn TransactionChecker>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("client_id", &self.inner.session.client_id())
            .finish_non_exhaustive()
    }
}

/// The result of [`Producer::send_async`]: await it for the receipt.
#[must_use = "the send's outcome is only known by awaiting the handle"]
pub struct SendHandle {
    task: tokio::task::JoinHandle<Result<SendReceipt>>,
}

impl Future for SendHandle {
    type Output = Result<SendReceipt>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.task)
            .poll(cx)
            .map(|joined| joined.unwrap_or(Err(Error::Shutdown)))
    }
}

impl Producer {
    /// Starts building a producer.
    pub fn builder() -> ProducerBuilder {
        ProducerBuilder {
            config: ClientConfig::default(),
            topics: Vec::new(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            checker: None,
        }
    }

    /// Sends one message and waits for the server's receipt.
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] (before any RPC) for a body over the server's limit; the
    /// server's error after the retries for transient failures are spent.
    pub async fn send(&self, message: Message) -> Result<SendReceipt> {
        let mut receipts = self.send_messages(vec![message], false).await?;
        Ok(receipts.remove(0))
    }

    /// Sends messages of one topic and one type in one request (FIFO messages: one group).
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] with [`Invalid::Batch`] for an empty or mixed batch; as
    /// [`Producer::send`] otherwise.
    pub async fn send_batch(&self, messages: Vec<Message>) -> Result<Vec<SendReceipt>> {
        self.send_messages(messages, false).await
    }

    /// Starts sending `message` and returns at once; the returned handle yields the receipt.
    pub fn send_async(&self, message: Message) -> SendHandle {
        let me = self.clone();
        SendHandle {
            task: tokio::spawn(async move { me.send(message).await }),
        }
    }

    /// Starts a transaction (the builder must have a [`TransactionChecker`]).
    ///
    /// # Errors
    /// [`Error::Config`] when the producer has no transaction checker.
    pub fn begin_transaction(&self) -> Result<Transaction> {
        if self.inner.role.checker.is_none() {
            return Err(Error::Config {
                setting: "transaction_checker",
                reason: "transactions need a checker for the server's check-back".into(),
            });
        }
        Ok(Transaction {
            producer: self.clone(),
            sent: Mutex::new(Vec::new()),
        })
    }

    /// Recalls a delay message before it is delivered, by the handle its receipt carries.
    /// Returns the recalled message's id.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the server has no recall; the server's error for a
    /// malformed handle or one of another topic (BAD_REQUEST), or an unknown or already
    /// delivered message (NOT_FOUND).
    pub async fn recall(&self, topic: &str, recall_handle: &str) -> Result<String> {
        validate_topic(topic)?;
        if recall_handle.trim().is_empty() {
            return Err(Invalid::Argument {
                what: "recall handle",
                value: recall_handle.to_owned(),
            }
            .into());
        }
        let session = &self.inner.session;
        let req = pb::RecallMessageRequest {
            topic: Some(session.resource(topic)),
            recall_handle: recall_handle.to_owned(),
        };
        let response = session
            .on_access_point(|access| {
                let req = req.clone();
                async move {
                    session
                        .unary(crate::rpc::RECALL_MESSAGE, &access, &req)
                        .await
                }
            })
            .await?;
        check("RecallMessage", response.status.as_ref())?;
        Ok(response.message_id)
    }

    /// Tells the server the producer is leaving and stops its background tasks. Sends already
    /// under way finish; later sends fail with [`Error::Shutdown`].
    pub async fn shutdown(&self) {
        self.inner.session.shutdown().await;
    }

    fn validate_batch(&self, messages: &[Message], transactional: bool) -> Result<pb::MessageType> {
        let Some(first) = messages.first() else {
            return Err(Invalid::Batch("no messages").into());
        };
        let kind = first.message_type();
        let max = self.inner.role.max_body_size.load(Ordering::Relaxed);
        for m in messages {
            if m.topic != first.topic {
                return Err(Invalid::Batch("all messages of a batch must share a topic").into());
            }
            if m.message_type() != kind {
                return Err(Invalid::Batch("all messages of a batch must share a type").into());
            }
            if m.message_group != first.message_group {
                return Err(Invalid::Batch("FIFO messages of a batch must share a group").into());
            }
            if m.body.len() > max {
                return Err(Invalid::BodyTooLarge {
                    size: m.body.len(),
                    max,
                }
                .into());
            }
        }
        if transactional {
            if kind != pb::MessageType::Normal {
                return Err(Invalid::Transaction(
                    "a transactional message has no message group, delivery time, priority or lite topic",
                )
                .into());
            }
            return Ok(pb::MessageType::Transaction);
        }
        Ok(kind)
    }

    async fn send_messages(
        &self,
        messages: Vec<Message>,
        transactional: bool,
    ) -> Result<Vec<SendReceipt>> {
        let session = &self.inner.session;
        if session.token().is_cancelled() {
            return Err(Error::Shutdown);
        }
        let kind = self.validate_batch(&messages, transactional)?;
        let topic = messages[0].topic.clone();
        let group = messages[0].message_group.as_deref().map(group_hash);
        // Built once: the messages move into the request, which every attempt reuses with
        // its own queue id (so the ids and born times stay those of the first attempt).
        let resource = session.resource(&topic);
        let born = timestamp(std::time::SystemTime::now());
        let mut request = pb::SendMessageRequest {
            messages: messages
                .into_iter()
                .map(|m| m.into_proto(resource.clone(), new_message_id(), kind, born))
                .collect(),
        };
        let attempts = if transactional {
            1
        } else {
            self.inner.role.max_attempts
        };
        let validate_type = self
            .inner
            .role
            .validate_message_type
            .load(Ordering::Relaxed);
        let fits = |q: &Queue| q.writable() && (!validate_type || q.accepts(kind));
        let mut avoid: Option<String> = None;
        let mut attempt = 1;
        loop {
            let route = route::route(session, &topic).await?;
            let queue = match group {
                Some(hash) => route.pick_by_hash(fits, hash),
                None => route.pick(fits, avoid.as_deref()),
            }
            .ok_or_else(|| Error::NoQueue {
                topic: topic.clone(),
                reason: format!("no writable queue accepts {} messages", kind.as_str_name()),
            })?;
            for m in &mut request.messages {
                if let Some(p) = m.system_properties.as_mut() {
                    p.queue_id = queue.proto.id;
                }
            }
            let outcome = self.send_once(queue, &request, &topic).await;
            match outcome {
                Ok(receipts) => return Ok(receipts),
                Err(e) if attempt < attempts && e.is_retryable() => {
                    tracing::debug!(topic = %topic, endpoint = %queue.endpoints.key, attempt, error = %e, "send failed, retrying");
                    if e.is_route_error() {
                        avoid = Some(queue.endpoints.key.clone());
                        if let Err(re) = route::refresh(session, &topic).await {
                            tracing::debug!(topic = %topic, error = %re, "route refresh failed");
                        }
                    }
                    if e.code() == Some(pb::Code::TooManyRequests as i32) {
                        let delay = self.inner.role.retry.read().delay(attempt);
                        tokio::select! {
                            () = session.token().cancelled() => return Err(Error::Shutdown),
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                    attempt += 1;
                }
                Err(e) => {
                    if e.is_route_error() {
                        // The next send should not use the same stale route.
                        let _ = route::refresh(session, &topic).await;
                    }
                    return Err(e);
                }
            }
        }
    }

    async fn send_once(
        &self,
        queue: &Queue,
        request: &pb::SendMessageRequest,
        topic: &str,
    ) -> Result<Vec<SendReceipt>> {
        let expected = request.messages.len();
        let response = self
            .inner
            .session
            .unary(crate::rpc::SEND_MESSAGE, &queue.endpoints, request)
            .await?;
        check("SendMessage", response.status.as_ref())?;
        if response.entries.len() != expected {
            return Err(Error::Protocol {
                rpc: "SendMessage",
                what: format!(
                    "{} result entries for {expected} messages",
                    response.entries.len()
                ),
            });
        }
        response
            .entries
            .into_iter()
            .map(|e| {
                check("SendMessage", e.status.as_ref())?;
                Ok(SendReceipt {
                    message_id: e.message_id,
                    topic: topic.to_owned(),
                    queue_id: queue.proto.id,
                    offset: e.offset,
                    transaction_id: (!e.transaction_id.is_empty()).then_some(e.transaction_id),
                    recall_handle: (!e.recall_handle.is_empty()).then_some(e.recall_handle),
                    endpoints: queue.endpoints.clone(),
                })
            })
            .collect()
    }
}

async fn end_transaction(
    session: &Session,
    endpoints: &Endpoints,
    topic: &str,
    message_id: &str,
    transaction_id: &str,
    resolution: pb::TransactionResolution,
    source: pb::TransactionSource,
) -> Result<()> {
    let req = pb::EndTransactionRequest {
        topic: Some(session.resource(topic)),
        message_id: message_id.to_owned(),
        transaction_id: transaction_id.to_owned(),
        resolution: resolution as i32,
        source: source as i32,
        trace_context: String::new(),
    };
    let response = session
        .unary(crate::rpc::END_TRANSACTION, endpoints, &req)
        .await?;
    check("EndTransaction", response.status.as_ref())
}

/// One transaction: half messages sent with [`Transaction::send`] are delivered on
/// [`Transaction::commit`] and dropped on [`Transaction::rollback`]. If neither happens (e.g.
/// the process dies) the server asks the producer's [`TransactionChecker`].
pub struct Transaction {
    producer: Producer,
    sent: Mutex<Vec<SendReceipt>>,
}

impl Transaction {
    /// Sends a half message (a NORMAL message: no group, delay, priority or lite topic).
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] with [`Invalid::Transaction`] for a message of another type;
    /// as [`Producer::send`] otherwise (without retries).
    pub async fn send(&self, message: Message) -> Result<SendReceipt> {
        let mut r = self.producer.send_messages(vec![message], true).await?;
        let receipt = r.remove(0);
        if receipt.transaction_id.is_none() {
            return Err(Error::Protocol {
                rpc: "SendMessage",
                what: "no transaction id for a transactional message".into(),
            });
        }
        self.sent.lock().push(receipt.clone());
        Ok(receipt)
    }

    /// Delivers every half message of the transaction.
    ///
    /// # Errors
    /// The first EndTransaction failure (the server's check-back settles the rest).
    pub async fn commit(self) -> Result<()> {
        self.end(pb::TransactionResolution::Commit).await
    }

    /// Drops every half message of the transaction.
    ///
    /// # Errors
    /// The first EndTransaction failure (the server's check-back settles the rest).
    pub async fn rollback(self) -> Result<()> {
        self.end(pb::TransactionResolution::Rollback).await
    }

    async fn end(self, resolution: pb::TransactionResolution) -> Result<()> {
        let sent = std::mem::take(&mut *self.sent.lock());
        if sent.is_empty() {
            return Err(Invalid::Transaction("nothing was sent in this transaction").into());
        }
        let session = &self.producer.inner.session;
        let mut first_error = None;
        for r in &sent {
            let tx = r.transaction_id.as_deref().unwrap_or_default();
            let outcome = end_transaction(
                session,
                &r.endpoints,
                &r.topic,
                &r.message_id,
                tx,
                resolution,
                pb::TransactionSource::SourceClient,
            )
            .await;
            if let Err(e) = outcome {
                tracing::warn!(message_id = %r.message_id, error = %e, "EndTransaction failed; the server's check-back will resolve it");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Role for ProducerRole {
    fn settings(&self, access_point: &pb::Endpoints) -> pb::Settings {
        let topics = self
            .topics
            .read()
            .iter()
            .map(|t| pb::Resource {
                resource_namespace: self.namespace.clone(),
                name: t.clone(),
            })
            .collect();
        pb::Settings {
            client_type: Some(pb::ClientType::Producer as i32),
            access_point: Some(access_point.clone()),
            backoff_policy: None,
            request_timeout: Some(proto_duration(self.request_timeout)),
            pub_sub: Some(pb::settings::PubSub::Publishing(pb::Publishing {
                topics,
                max_body_size: 0,
                validate_message_type: true,
            })),
            user_agent: Some(crate::user_agent()),
            metric: None,
            client_properties: Default::default(),
        }
    }

    fn apply(&self, echo: &pb::Settings) {
        if let Some(pb::settings::PubSub::Publishing(p)) = &echo.pub_sub {
            if let Ok(max) = usize::try_from(p.max_body_size)
                && max > 0
            {
                self.max_body_size.store(max, Ordering::Relaxed);
            }
            self.validate_message_type
                .store(p.validate_message_type, Ordering::Relaxed);
        }
        if let Some(server) = echo
            .backoff_policy
            .as_ref()
            .and_then(RetryPolicy::from_proto)
        {
            // The attempts stay the builder's; the delays are the server's.
            let mut retry = self.retry.write();
            retry.backoff = server.backoff;
        }
    }

    fn heartbeat(&self) -> pb::HeartbeatRequest {
        pb::HeartbeatRequest {
            group: None,
            client_type: pb::ClientType::Producer as i32,
        }
    }

    fn termination(&self) -> pb::NotifyClientTerminationRequest {
        pb::NotifyClientTerminationRequest { group: None }
    }

    fn on_command(
        &self,
        session: &Session,
        endpoints: &Endpoints,
        command: Command,
        reply: &mpsc::Sender<pb::TelemetryCommand>,
    ) {
        let Command::RecoverOrphanedTransactionCommand(cmd) = command else {
            crate::telemetry::answer_common(command, reply);
            return;
        };
        let Some(checker) = self.checker.clone() else {
            tracing::warn!(endpoint = %endpoints.key, "transaction check-back for a producer without a checker ignored");
            return;
        };
        let session_for_task = session.clone();
        let endpoints = endpoints.clone();
        session.tasks().spawn(async move {
            check_back(session_for_task, endpoints, checker, cmd).await;
        });
    }
}

async fn check_back(
    session: Session,
    endpoints: Endpoints,
    checker: Arc<dyn TransactionChecker>,
    cmd: pb::RecoverOrphanedTransactionCommand,
) {
    let Some(message) = cmd.message else {
        tracing::warn!(endpoint = %endpoints.key, "transaction check-back without a message ignored");
        return;
    };
    let view = match MessageView::from_proto(message, Arc::new(endpoints.clone())) {
        Ok(v) => v,
        Err(what) => {
            tracing::warn!(endpoint = %endpoints.key, what, "malformed transaction check-back ignored");
            return;
        }
    };
    let (topic, message_id) = (view.topic.clone(), view.message_id.clone());
    let resolution = tokio::select! {
        () = session.token().cancelled() => return,
        r = checker.check(view) => r,
    };
    let resolution = match resolution {
        TransactionResolution::Commit => pb::TransactionResolution::Commit,
        TransactionResolution::Rollback => pb::TransactionResolution::Rollback,
        TransactionResolution::Unknown => return,
    };
    let outcome = end_transaction(
        &session,
        &endpoints,
        &topic,
        &message_id,
        &cmd.transaction_id,
        resolution,
        pb::TransactionSource::SourceServerCheck,
    )
    .await;
    match outcome {
        Ok(()) => {
            tracing::debug!(message_id = %message_id, ?resolution, "transaction check-back answered")
        }
        Err(e) => {
            tracing::warn!(message_id = %message_id, error = %e, "transaction check-back answer failed")
        }
    }
}
