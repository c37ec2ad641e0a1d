//! The simple consumer: the application pulls messages with [`SimpleConsumer::receive`]
//! (a long poll of up to the builder's await duration on one readable queue of a subscribed
//! topic, topics and queues taken in turn), then acknowledges each one or changes how long it
//! stays invisible ([`SimpleConsumer::ack_many`] acknowledges many in few calls). A message not
//! acknowledged before its invisibility ends is delivered again with a higher delivery attempt.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use comet_proto::apache::rocketmq::v2 as pb;
use parking_lot::RwLock;
use pb::telemetry_command::Command;
use tokio::sync::mpsc;
use tokio_util::sync::DropGuard;

use crate::ack::{self, Receipt};
use crate::config::{ClientConfig, connection_setters};
use crate::connect;
use crate::consume::{self, ConsumerIdentity, ReceiveCall};
use crate::endpoints::Endpoints;
use crate::error::{Error, Invalid, Result};
use crate::message::{FilterExpression, MessageView, validate_topic};
use crate::route;
use crate::route_table::Queue;
use crate::session::{Role, Session};

/// Default long-polling time of a receive.
const DEFAULT_AWAIT: Duration = Duration::from_secs(20);
/// Largest batch one receive asks for.
const MAX_BATCH: u32 = 32;

/// Builds a [`SimpleConsumer`].
#[must_use]
pub struct SimpleConsumerBuilder {
    config: ClientConfig,
    group: String,
    subscriptions: HashMap<String, FilterExpression>,
    await_duration: Duration,
}

impl SimpleConsumerBuilder {
    connection_setters!();

    /// Subscribes to `topic` with `filter`.
    pub fn subscribe(mut self, topic: impl Into<String>, filter: FilterExpression) -> Self {
        self.subscriptions.insert(topic.into(), filter);
        self
    }

    /// How long a receive waits for messages when none are ready (default 20 s).
    pub fn await_duration(mut self, d: Duration) -> Self {
        self.await_duration = d;
        self
    }

    /// Connects and fetches the subscribed topics' routes.
    ///
    /// # Errors
    /// [`Error::Config`] for a blank group or no subscription; [`Error::InvalidMessage`] for
    /// a bad topic or filter; the connection's errors.
    pub async fn build(self) -> Result<SimpleConsumer> {
        validate_group(&self.group)?;
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
        let role = Arc::new(SimpleRole {
            namespace: self.config.namespace.clone(),
            group: self.group.clone(),
            request_timeout: self.config.request_timeout,
            await_duration: self.await_duration,
            subscriptions: RwLock::new(self.subscriptions.clone()),
        });
        let session = Session::new(self.config, role.clone())?;
        let guard = session.token().clone().drop_guard();
        connect::start(&session).await?;
        for t in self.subscriptions.keys() {
            if let Err(e) = route::refresh(&session, t).await {
                session.shutdown().await;
                return Err(e);
            }
        }
        Ok(SimpleConsumer {
            inner: Arc::new(Inner {
                session,
                role,
                next_topic: AtomicUsize::new(0),
                _guard: guard,
            }),
        })
    }
}

pub(crate) fn validate_group(group: &str) -> Result<()> {
    if group.trim().is_empty() {
        return Err(Error::Config {
            setting: "group",
            reason: "the consumer group must not be blank".into(),
        });
    }
    validate_topic(group).map_err(|_| Error::Config {
        setting: "group",
        reason: format!("{group:?} must be 1-127 characters of [%|a-zA-Z0-9_-]"),
    })
}

/// Receives, acknowledges and delays messages on the application's schedule. Cheap to clone.
#[derive(Clone)]
pub struct SimpleConsumer {
    inner: Arc<Inner>,
}

struct Inner {
    session: Session,
    role: Arc<SimpleRole>,
    next_topic: AtomicUsize,
    _guard: DropGuard,
}

struct SimpleRole {
    namespace: String,
    group: String,
    request_timeout: Duration,
    await_duration: Duration,
    subscriptions: RwLock<HashMap<String, FilterExpression>>,
}

impl std::fmt::Debug for SimpleConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimpleConsumer")
            .field("group", &self.inner.role.group)
            .field("client_id", &self.inner.session.client_id())
            .finish_non_exhaustive()
    }
}

impl SimpleConsumer {
    /// Starts building a consumer of `group`.
    pub fn builder(group: impl Into<String>) -> SimpleConsumerBuilder {
        SimpleConsumerBuilder {
            config: ClientConfig::default(),
            group: group.into(),
            subscriptions: HashMap::new(),
            await_duration: DEFAULT_AWAIT,
        }
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.inner.role.group
    }

    /// Adds or replaces a subscription and syncs it with the server.
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] for a bad topic or filter; the route query's errors.
    pub async fn subscribe(&self, topic: &str, filter: FilterExpression) -> Result<()> {
        validate_topic(topic)?;
        filter.validate()?;
        route::refresh(&self.inner.session, topic).await?;
        self.inner
            .role
            .subscriptions
            .write()
            .insert(topic.to_owned(), filter);
        self.inner.session.resync().await
    }

    /// Drops a subscription.
    ///
    /// # Errors
    /// [`Invalid::NotSubscribed`] when there was none.
    pub async fn unsubscribe(&self, topic: &str) -> Result<()> {
        if self
            .inner
            .role
            .subscriptions
            .write()
            .remove(topic)
            .is_none()
        {
            return Err(Invalid::NotSubscribed(topic.to_owned()).into());
        }
        self.inner.session.resync().await
    }

    /// Receives up to `max` messages (1–32) that stay invisible to other consumers of the
    /// group for `invisible`; waits up to the await duration when none are ready and then
    /// returns an empty list.
    ///
    /// # Errors
    /// [`Invalid::Argument`] for `max` or `invisible` out of range; the server's errors.
    pub async fn receive(&self, max: u32, invisible: Duration) -> Result<Vec<MessageView>> {
        if !(1..=MAX_BATCH).contains(&max) {
            return Err(Invalid::Argument {
                what: "max messages (1-32)",
                value: max.to_string(),
            }
            .into());
        }
        if invisible < Duration::from_secs(1) {
            return Err(Invalid::Argument {
                what: "invisible duration (at least 1 s)",
                value: format!("{invisible:?}"),
            }
            .into());
        }
        let session = &self.inner.session;
        if session.token().is_cancelled() {
            return Err(Error::Shutdown);
        }
        let (topic, filter) = {
            let subs = self.inner.role.subscriptions.read();
            let mut topics: Vec<(&String, &FilterExpression)> = subs.iter().collect();
            if topics.is_empty() {
                return Err(Invalid::NotSubscribed(String::new()).into());
            }
            topics.sort_by(|a, b| a.0.cmp(b.0));
            let i = self.inner.next_topic.fetch_add(1, Ordering::Relaxed) % topics.len();
            (topics[i].0.clone(), topics[i].1.to_proto())
        };
        let r = route::route(session, &topic).await?;
        let queue = r
            .pick(Queue::readable, None)
            .cloned()
            .ok_or_else(|| Error::NoQueue {
                topic: topic.clone(),
                reason: "no readable queue".into(),
            })?;
        let outcome = consume::receive(
            session,
            ReceiveCall {
                group: &self.inner.role.group,
                queue: &queue,
                filter,
                batch: max,
                invisible,
                long_polling: self.inner.role.await_duration,
            },
        )
        .await;
        if let Err(e) = &outcome
            && e.is_route_error()
        {
            let _ = route::refresh(session, &topic).await;
        }
        outcome
    }

    /// Acknowledges `message`: it is consumed and not delivered again.
    ///
    /// # Errors
    /// The server's error, e.g. `INVALID_RECEIPT_HANDLE` once the message's invisibility ended.
    pub async fn ack(&self, message: &MessageView) -> Result<()> {
        let receipts = [Receipt::of(message)];
        let mut results = ack::ack_many(&self.inner.session, &self.inner.role.group, &receipts)
            .await
            .into_iter();
        results.next().unwrap_or(Err(Error::Protocol {
            rpc: "AckMessage",
            what: "no result for the message".into(),
        }))
    }

    /// Acknowledges several messages with as few `AckMessage` calls as they allow: one per
    /// endpoint and topic for every 32 messages, sent side by side (the official Java client's
    /// `batchAck`). Each message gets its own result, in the order given; one failing does not
    /// stop the others. Nothing is retried.
    ///
    /// # Errors
    /// Per message: the server's code for that entry (e.g. `INVALID_RECEIPT_HANDLE` once its
    /// invisibility ended), or the call's error for every message the call carried.
    pub async fn ack_many(&self, messages: &[MessageView]) -> Vec<Result<()>> {
        let receipts: Vec<Receipt> = messages.iter().map(Receipt::of).collect();
        ack::ack_many(&self.inner.session, &self.inner.role.group, &receipts).await
    }

    /// Keeps `message` invisible for `invisible` from now (to extend processing, or to have it
    /// delivered again sooner). The message's receipt handle is updated.
    ///
    /// # Errors
    /// [`Invalid::Argument`] for a zero duration; the server's errors.
    pub async fn change_invisible_duration(
        &self,
        message: &mut MessageView,
        invisible: Duration,
    ) -> Result<()> {
        if invisible.is_zero() {
            return Err(Invalid::Argument {
                what: "invisible duration",
                value: format!("{invisible:?}"),
            }
            .into());
        }
        let mut receipt = Receipt::of(message);
        consume::change_invisible(
            &self.inner.session,
            &self.inner.role.group,
            &mut receipt,
            invisible,
        )
        .await?;
        message.receipt_handle = receipt.handle;
        Ok(())
    }

    /// Tells the server the consumer is leaving and stops its background tasks. Messages
    /// received and not acknowledged are delivered again after their invisibility ends.
    pub async fn shutdown(&self) {
        self.inner.session.shutdown().await;
    }
}

impl SimpleRole {
    fn identity(&self) -> ConsumerIdentity<'_> {
        ConsumerIdentity {
            namespace: &self.namespace,
            group: &self.group,
            client_type: pb::ClientType::SimpleConsumer,
        }
    }
}

impl Role for SimpleRole {
    fn settings(&self, access_point: &pb::Endpoints) -> pb::Settings {
        self.identity().settings(
            access_point,
            self.request_timeout,
            &self.subscriptions.read(),
            Some(self.await_duration),
        )
    }

    fn apply(&self, _echo: &pb::Settings) {
        // A simple consumer takes its batch size and invisibility per call; nothing to adopt.
    }

    fn heartbeat(&self) -> pb::HeartbeatRequest {
        self.identity().heartbeat()
    }

    fn termination(&self) -> pb::NotifyClientTerminationRequest {
        self.identity().termination()
    }

    fn on_command(
        &self,
        _session: &Session,
        _endpoints: &Endpoints,
        command: Command,
        reply: &mpsc::Sender<pb::TelemetryCommand>,
    ) {
        crate::telemetry::answer_common(command, reply);
    }
}
