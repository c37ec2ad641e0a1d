//! [`BrokerApi`]: the broker's operations as Comet's own types, on the broker instance current
//! when a call starts. It is the one entry point of every caller — the gRPC adapter, in-process
//! callers, tests — and does what every call needs before an operation runs: admission (a call
//! is counted so a stop drains it, and refused once the stop began) and, with replication,
//! waiting out a role change in progress.
//!
//! Each operation answers [`Answer`]: the outer `Err` ([`Unavailable`]) means no instance took
//! the call (retry elsewhere); the inner result is the operation's own. Every operation keeps
//! its own durability promise (Ack, ChangeInvisibleDuration, ForwardMessageToDeadLetterQueue,
//! UpdateOffset and ResetOffset answer once their state is written), whoever calls it.

use std::sync::Arc;

use comet_store::StoredMessage;
use parking_lot::RwLock;
use tokio::sync::{mpsc, watch};

use crate::ack::{AckRequest, ChangeInvisibleRequest};
use crate::dead_letter::DeadLetterRequest;
use crate::delay::TimerStats;
use crate::engine::{CallGuard, Inner};
use crate::lite::LiteSubscriptionRequest;
use crate::offsets::{OffsetChange, OffsetPolicy, QueueOffset, QueueProgress, ResetTarget};
use crate::outcome::{Failure, Unavailable};
use crate::pop::{Delivery, PopRequest};
use crate::pull::{PullRequest, PullResult};
use crate::query::MessageQuery;
use crate::recall::RecallRequest;
use crate::send::{SendRequest, Sent};
use crate::stats::{BrokerStats, StorageStatus};
use crate::transaction::table::TransactionStats;
use crate::transaction::{OrphanCheck, TransactionEnd};

/// The answer of an operation: `Err` when no broker instance took the call (it is stopping
/// or changing its role: retry elsewhere), else the operation's own result.
pub type Answer<T> = Result<Result<T, Failure>, Unavailable>;

/// The operations of a broker (cheap to clone). Calls after `Broker::shutdown` began are
/// [`Unavailable`]. With replication (`HaBroker`) the instance behind it is replaced when the
/// broker's role changes; every call goes to the instance current when it starts.
#[derive(Clone)]
pub struct BrokerApi {
    cell: Arc<RwLock<Arc<Inner>>>,
    /// Counts the instances installed by [`BrokerApi::replace`].
    installed: Arc<watch::Sender<u64>>,
    /// True while the instance behind is being replaced: new calls wait for the new one.
    switching: Arc<watch::Sender<bool>>,
}

/// Longest a call waits for a role change to finish before it is tried anyway.
const SWITCH_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Longest a write waits for the master instance its metadata announced.
const PROMOTION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl std::fmt::Debug for BrokerApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerApi")
            .field("broker_set", &self.current().cfg.broker_set)
            .finish()
    }
}

impl BrokerApi {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self {
            cell: Arc::new(RwLock::new(inner)),
            installed: Arc::new(watch::channel(0).0),
            switching: Arc::new(watch::channel(false).0),
        }
    }

    /// The broker calls go to now.
    pub(crate) fn current(&self) -> Arc<Inner> {
        Arc::clone(&self.cell.read())
    }

    /// Counters of delayed delivery of the broker instance calls go to now (a replica's count
    /// the timers it follows; see `Broker::timer_stats`).
    pub fn timer_stats(&self) -> TimerStats {
        self.current().delays.stats()
    }

    /// Counters of transactional messages of the broker instance calls go to now (a
    /// replica's `pending` counts the half messages it follows; see
    /// `Broker::transaction_stats`).
    pub fn transaction_stats(&self) -> TransactionStats {
        self.current().transactions.stats()
    }

    /// A snapshot of the broker instance calls go to now, as plain numbers (see
    /// [`BrokerStats`]).
    pub fn stats(&self) -> BrokerStats {
        self.current().stats()
    }

    /// Disk use and commitlog extent of the broker instance calls go to now (cheap: no
    /// record is read).
    pub fn storage_status(&self) -> StorageStatus {
        self.current().storage_status()
    }

    /// The broker a new call goes to: after waiting (bounded) for a role change in progress,
    /// so that a change is a pause for callers rather than a failure.
    pub(crate) async fn ready(&self) -> Arc<Inner> {
        // Fast path: no change in progress.
        if !*self.switching.borrow() {
            let inner = self.current();
            if !inner.closing() {
                return inner;
            }
        }
        let mut rx = self.switching.subscribe();
        for _ in 0..3 {
            let _ = tokio::time::timeout(SWITCH_WAIT, rx.wait_for(|s| !*s)).await;
            let inner = self.current();
            // A closing broker with no change in progress is a real shutdown: enter() says so.
            if !inner.closing() || !*rx.borrow() {
                return inner;
            }
        }
        self.current()
    }

    /// Registers a call on the broker current now: waits out a role change in progress, and
    /// retries on the new broker when the one it got closed for a role change meanwhile.
    ///
    /// # Errors
    /// UNAVAILABLE when the broker is shutting down for good.
    pub(crate) async fn enter(&self) -> Result<(Arc<Inner>, CallGuard), Unavailable> {
        let mut last = None;
        for _ in 0..3 {
            let inner = self.ready().await;
            match inner.enter() {
                Ok(call) => return Ok((inner, call)),
                Err(status) => {
                    let switched =
                        *self.switching.borrow() || !Arc::ptr_eq(&inner, &self.current());
                    if !switched {
                        return Err(status);
                    }
                    last = Some(status);
                }
            }
        }
        Err(last.unwrap_or_else(|| Unavailable("the broker is changing its role".into())))
    }

    /// Marks the start of a role change: calls from now on wait for [`BrokerApi::replace`].
    pub(crate) fn begin_switch(&self) {
        self.switching.send_replace(true);
    }

    /// Points this service (and every clone of it) at another broker; waiting calls stay
    /// waiting until [`BrokerApi::end_switch`].
    pub(crate) fn replace(&self, inner: Arc<Inner>) {
        *self.cell.write() = inner;
        self.installed.send_modify(|n| *n += 1);
    }

    /// Like [`BrokerApi::enter`], for calls that write: when the broker got the metadata that
    /// makes it master before its supervisor installed the master (a proxy may route on the
    /// same news first), waits (bounded) for the master instead of refusing the write.
    ///
    /// # Errors
    /// As for [`BrokerApi::enter`].
    pub(crate) async fn enter_writer(&self) -> Result<(Arc<Inner>, CallGuard), Unavailable> {
        for _ in 0..3 {
            let seen = *self.installed.borrow();
            let (inner, call) = self.enter().await?;
            if !inner.awaits_promotion() {
                return Ok((inner, call));
            }
            drop(call);
            let mut installed = self.installed.subscribe();
            let _ = tokio::time::timeout(PROMOTION_WAIT, installed.wait_for(|n| *n > seen)).await;
        }
        self.enter().await
    }

    /// Ends a role change: calls go to the current broker again.
    pub(crate) fn end_switch(&self) {
        self.switching.send_replace(false);
    }
}

impl BrokerApi {
    /// Stores messages (see [`SendRequest`]); one result per message. [`Unavailable`] also
    /// when the store closed under the call.
    pub async fn send(&self, req: SendRequest) -> Answer<Vec<Result<Sent, Failure>>> {
        let (inner, _call) = self.enter_writer().await?;
        inner.send(req).await
    }

    /// Receives messages (POP); empty when none arrived before the poll ended.
    pub async fn pop(&self, req: PopRequest) -> Answer<Vec<Delivery>> {
        let (inner, _call) = self.enter().await?;
        Ok(inner.pop(&req).await)
    }

    /// Acknowledges deliveries; one result per handle. Answers once they are written.
    pub async fn ack(&self, req: AckRequest) -> Answer<Vec<Result<(), Failure>>> {
        let (inner, _call) = self.enter().await?;
        Ok(inner.ack(&req).await)
    }

    /// Changes a delivery's invisible time; returns its new receipt handle. Answers once the
    /// change is written.
    pub async fn change_invisible(&self, req: ChangeInvisibleRequest) -> Answer<String> {
        let (inner, _call) = self.enter().await?;
        Ok(inner.change_invisible(&req).await)
    }

    /// Moves a delivery to its group's dead-letter queue. Answers once the move is written.
    pub async fn forward_to_dead_letter(&self, req: DeadLetterRequest) -> Answer<()> {
        let (inner, _call) = self.enter().await?;
        Ok(inner.forward_to_dead_letter(&req).await)
    }

    /// Ends (or leaves pending) a transaction; returns what was done.
    pub async fn end_transaction(&self, req: TransactionEnd) -> Answer<String> {
        let (inner, _call) = self.enter_writer().await?;
        Ok(inner.end_transaction(&req).await)
    }

    /// The checks of unresolved transactions, sent to every watcher until the instance stops
    /// (the watch does not count as a running call).
    pub async fn watch_transaction_checks(
        &self,
        proxy_id: &str,
    ) -> Result<mpsc::Receiver<OrphanCheck>, Unavailable> {
        let (inner, _call) = self.enter().await?;
        Ok(inner.transactions.watch(proxy_id))
    }

    /// Reads a queue from an offset.
    pub async fn pull(&self, req: PullRequest) -> Answer<PullResult> {
        let (inner, _call) = self.enter().await?;
        Ok(inner.pull(&req).await)
    }

    /// Commits a group's consume offset. Answers once it is written.
    pub async fn update_offset(&self, at: QueueOffset) -> Answer<()> {
        let (inner, _call) = self.enter().await?;
        Ok(inner.update_offset(&at).await)
    }

    /// A group's consume offset on a queue.
    pub async fn get_offset(&self, group: &str, topic: &str, queue_id: i32) -> Answer<i64> {
        let (inner, _call) = self.enter().await?;
        Ok(inner.get_offset(group, topic, queue_id))
    }

    /// The offset of a queue a policy names.
    pub async fn query_offset(
        &self,
        topic: &str,
        queue_id: i32,
        policy: OffsetPolicy,
    ) -> Answer<i64> {
        let (inner, _call) = self.enter().await?;
        Ok(inner.query_offset(topic, queue_id, policy).await)
    }

    /// Resets a group's offsets (admin). Answers once they are written.
    pub async fn reset_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: i32,
        target: ResetTarget,
    ) -> Answer<Vec<OffsetChange>> {
        let (inner, _call) = self.enter().await?;
        Ok(inner.reset_offset(group, topic, queue_id, target).await)
    }

    /// Stored messages matching a query (admin).
    pub async fn query_message(
        &self,
        topic: &str,
        query: MessageQuery,
    ) -> Answer<Vec<StoredMessage>> {
        let (inner, _call) = self.enter().await?;
        Ok(inner.query_message(topic, query).await)
    }

    /// A group's progress on every queue of a topic here (admin).
    pub async fn group_progress(&self, group: &str, topic: &str) -> Answer<Vec<QueueProgress>> {
        let (inner, _call) = self.enter().await?;
        Ok(inner.group_progress(group, topic))
    }

    /// Recalls a delay message before its delivery time; returns its message id. Answers once
    /// the recall is stored (and replicated per the replication mode).
    pub async fn recall(&self, req: RecallRequest) -> Answer<String> {
        let (inner, _call) = self.enter_writer().await?;
        Ok(inner.recall(&req).await)
    }

    /// Applies a lite consumer's SyncLiteSubscription (see [`LiteSubscriptionRequest`]).
    pub async fn sync_lite_subscription(&self, req: LiteSubscriptionRequest) -> Answer<()> {
        let (inner, _call) = self.enter().await?;
        Ok(inner.sync_lite_subscription(&req).await)
    }

    /// Takes the lite topics the broker dropped (expired) from the subscription of `client_id`
    /// of `group` on the LITE topic `topic` since it was last asked: the client must be told
    /// (NotifyUnsubscribeLiteCommand). Empty for other topics.
    pub fn take_lite_notices(&self, group: &str, client_id: &str, topic: &str) -> Vec<String> {
        self.current().take_lite_notices(group, client_id, topic)
    }

    /// Where this broker set's instance shows as store host when a record carries none.
    pub(crate) fn advertised_addr(&self) -> String {
        self.current().cfg.advertised_addr.clone()
    }
}
