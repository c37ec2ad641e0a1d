//! An in-memory broker honouring the BrokerService contract (broker.proto), for proxy tests.
//!
//! Messages live in one list per topic; each group sees every message (its own visibility and
//! ack state per message). POP hands out visible messages of any queue (or one queue), makes
//! them invisible, and gives each a fresh `"<set>~<n>"` receipt handle; with nothing visible it
//! waits for an arrival up to the long-polling timeout. Every request is recorded so that tests
//! can assert what the proxy forwarded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use comet_proto::apache::rocketmq::v2::{
    AckMessageRequest, AckMessageResponse, AckMessageResultEntry, ChangeInvisibleDurationRequest,
    ChangeInvisibleDurationResponse, Code, Digest, DigestType, Encoding, EndTransactionRequest,
    EndTransactionResponse, ForwardMessageToDeadLetterQueueRequest,
    ForwardMessageToDeadLetterQueueResponse, GetOffsetRequest, GetOffsetResponse, Message,
    PullMessageRequest, QueryOffsetPolicy, QueryOffsetRequest, QueryOffsetResponse,
    RecallMessageRequest, RecallMessageResponse, ReceiveMessageRequest, SendMessageRequest,
    SendMessageResponse, SendResultEntry, SyncLiteSubscriptionResponse, UpdateOffsetRequest,
    UpdateOffsetResponse,
};
use comet_proto::comet::v1::broker_service_server::BrokerService;
use comet_proto::comet::v1::{
    GetConsumerProgressRequest, GetConsumerProgressResponse, PopMessageResponse,
    PullMessageResponse, QueryMessageRequest, QueryMessageResponse, ResetOffsetRequest,
    ResetOffsetResponse, SetLogLevelRequest, SetLogLevelResponse, SettleMessagesRequest,
    SettleMessagesResponse, Settled, SyncLiteRequest, TransactionCheck,
    WatchTransactionChecksRequest, settled, settlement,
};
use comet_proxy::TransactionCheckStream;
use comet_vocab::status::{ok, status};
use futures::StreamExt as _;
use md5::{Digest as _, Md5};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response};

#[derive(Debug, Clone)]
struct Stored {
    message: Message,
    queue_id: i32,
    offset: i64,
}

#[derive(Debug, Clone, Default)]
struct GroupState {
    acked: bool,
    invisible_until: Option<Instant>,
    attempts: i32,
    handle: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    topics: HashMap<String, Vec<Stored>>,
    /// (group, topic, index) -> state
    groups: HashMap<(String, String, usize), GroupState>,
    /// handle -> (group, topic, index)
    handles: HashMap<String, (String, String, usize)>,
    next_handle: u64,
    pub sends: Vec<SendMessageRequest>,
    pub pops: Vec<ReceiveMessageRequest>,
    pub acks: Vec<AckMessageRequest>,
    pub changes: Vec<ChangeInvisibleDurationRequest>,
    /// SettleMessages calls (their acks and changes are also in `acks` and `changes`).
    pub settles: Vec<SettleMessagesRequest>,
    pub dlq: Vec<ForwardMessageToDeadLetterQueueRequest>,
    pub pulls: Vec<PullMessageRequest>,
    pub offset_calls: Vec<String>,
    /// (group, topic, queue id) -> committed offset
    offsets: HashMap<(String, String, i32), i64>,
    pub ends: Vec<EndTransactionRequest>,
    /// RecallMessage requests, as forwarded; answered OK with message id `recalled`.
    pub recalls: Vec<RecallMessageRequest>,
    /// Open WatchTransactionChecks streams.
    watchers: Vec<mpsc::Sender<Result<TransactionCheck, tonic::Status>>>,
}

/// The fake broker of one broker set.
#[derive(Debug)]
pub struct FakeBroker {
    pub set: String,
    state: Mutex<State>,
    arrived: Notify,
    /// When set, every call fails with this gRPC status.
    pub fail_with: Mutex<Option<tonic::Code>>,
    /// False while acks are held (see [`FakeBroker::hold_acks`]).
    acks_open: watch::Sender<bool>,
}

fn to_duration(d: Option<&prost_types::Duration>) -> Duration {
    d.map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
        .unwrap_or_default()
}

impl FakeBroker {
    pub fn new(set: &str) -> Arc<FakeBroker> {
        Arc::new(FakeBroker {
            set: set.into(),
            state: Mutex::new(State::default()),
            arrived: Notify::new(),
            fail_with: Mutex::new(None),
            acks_open: watch::channel(true).0,
        })
    }

    /// Holds every AckMessage (also within SettleMessages) until [`FakeBroker::release_acks`].
    pub fn hold_acks(&self) {
        self.acks_open.send_replace(false);
    }

    pub fn release_acks(&self) {
        self.acks_open.send_replace(true);
    }

    /// AckMessage calls being held now.
    pub fn held_acks(&self) -> usize {
        self.acks_open.receiver_count()
    }

    pub fn sends(&self) -> Vec<SendMessageRequest> {
        self.state.lock().sends.clone()
    }
    pub fn pops(&self) -> Vec<ReceiveMessageRequest> {
        self.state.lock().pops.clone()
    }
    pub fn acks(&self) -> Vec<AckMessageRequest> {
        self.state.lock().acks.clone()
    }
    pub fn changes(&self) -> Vec<ChangeInvisibleDurationRequest> {
        self.state.lock().changes.clone()
    }
    pub fn settles(&self) -> Vec<SettleMessagesRequest> {
        self.state.lock().settles.clone()
    }
    pub fn dlq(&self) -> Vec<ForwardMessageToDeadLetterQueueRequest> {
        self.state.lock().dlq.clone()
    }
    pub fn pulls(&self) -> Vec<PullMessageRequest> {
        self.state.lock().pulls.clone()
    }
    /// `"<rpc> <group> <topic> <queue>"` of every offset call, in order.
    pub fn offset_calls(&self) -> Vec<String> {
        self.state.lock().offset_calls.clone()
    }
    pub fn ends(&self) -> Vec<EndTransactionRequest> {
        self.state.lock().ends.clone()
    }
    pub fn recalls(&self) -> Vec<RecallMessageRequest> {
        self.state.lock().recalls.clone()
    }
    /// Open check streams (proxies watching).
    pub fn watchers(&self) -> usize {
        let mut st = self.state.lock();
        st.watchers.retain(|w| !w.is_closed());
        st.watchers.len()
    }
    /// Sends a check to every watching proxy; returns how many took it.
    pub fn push_check(&self, check: TransactionCheck) -> usize {
        let st = self.state.lock();
        st.watchers
            .iter()
            .filter(|w| w.try_send(Ok(check.clone())).is_ok())
            .count()
    }
    pub fn stored(&self, topic: &str) -> usize {
        self.state.lock().topics.get(topic).map_or(0, Vec::len)
    }

    fn check_fail(&self) -> Result<(), tonic::Status> {
        match *self.fail_with.lock() {
            Some(code) => Err(tonic::Status::new(code, "injected failure")),
            None => Ok(()),
        }
    }

    /// Takes up to `batch` visible messages for the group, or none.
    fn try_pop(&self, req: &ReceiveMessageRequest) -> Vec<Message> {
        let group = req
            .group
            .as_ref()
            .map(|g| g.name.clone())
            .unwrap_or_default();
        let mq = req.message_queue.clone().unwrap_or_default();
        let topic = mq.topic.map(|t| t.name).unwrap_or_default();
        let invisible = to_duration(req.invisible_duration.as_ref());
        let now = Instant::now();
        let mut st = self.state.lock();
        let st = &mut *st;
        let Some(list) = st.topics.get(&topic) else {
            return vec![];
        };
        let mut out = vec![];
        for (i, stored) in list.iter().enumerate() {
            if out.len() >= req.batch_size.max(1) as usize {
                break;
            }
            if mq.id >= 0 && stored.queue_id != mq.id {
                continue;
            }
            let gs = st
                .groups
                .entry((group.clone(), topic.clone(), i))
                .or_default();
            if gs.acked || gs.invisible_until.is_some_and(|t| t > now) {
                continue;
            }
            gs.attempts += 1;
            gs.invisible_until = Some(now + invisible);
            st.next_handle += 1;
            let handle = comet_vocab::handle::join(&self.set, &st.next_handle.to_string());
            if let Some(old) = gs.handle.replace(handle.clone()) {
                st.handles.remove(&old);
            }
            st.handles
                .insert(handle.clone(), (group.clone(), topic.clone(), i));
            let mut m = stored.message.clone();
            let sys = m.system_properties.get_or_insert_with(Default::default);
            sys.receipt_handle = Some(handle);
            sys.delivery_attempt = Some(gs.attempts);
            sys.queue_id = stored.queue_id;
            sys.queue_offset = Some(stored.offset);
            sys.invisible_duration = req.invisible_duration;
            sys.body_encoding = Encoding::Identity as i32;
            sys.body_digest = Some(Digest {
                r#type: DigestType::Md5 as i32,
                checksum: hex::encode_upper(Md5::digest(&m.body)),
            });
            sys.store_host = format!("{}:10911", self.set);
            sys.store_timestamp = Some(prost_types::Timestamp::from(SystemTime::now()));
            out.push(m);
        }
        out
    }
}

fn mq_key(mq: Option<&comet_proto::apache::rocketmq::v2::MessageQueue>) -> (String, i32) {
    let mq = mq.cloned().unwrap_or_default();
    (mq.topic.map(|t| t.name).unwrap_or_default(), mq.id)
}

impl FakeBroker {
    /// Messages of one queue in offset order (offset = position within the queue).
    fn queue_messages(&self, topic: &str, queue_id: i32) -> Vec<Message> {
        let st = self.state.lock();
        st.topics
            .get(topic)
            .map(|l| {
                l.iter()
                    .filter(|m| m.queue_id == queue_id)
                    .enumerate()
                    .map(|(i, m)| {
                        let mut msg = m.message.clone();
                        let sys = msg.system_properties.get_or_insert_with(Default::default);
                        sys.queue_id = queue_id;
                        sys.queue_offset = Some(i as i64);
                        msg
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Implements `BrokerService` for [`FakeBroker`] from one line per RPC. Each `fn` becomes a
/// handler that first fails with [`FakeBroker::fail_with`] when it is set, then runs its body
/// on the request and answers the response the body yields (`return` inside a body returns
/// that response). Each `unused` RPC answers UNIMPLEMENTED.
macro_rules! broker_service {
    (
        $(fn $name:ident(&$this:ident, $req:ident: $Req:ty) -> $Resp:ty $body:block)*
        unused: $($unused:ident($UReq:ty) -> $UResp:ty;)*
    ) => {
        #[tonic::async_trait]
        impl BrokerService for FakeBroker {
            type WatchTransactionChecksStream = TransactionCheckStream;

            $(
                async fn $name(
                    &$this,
                    request: Request<$Req>,
                ) -> Result<Response<$Resp>, tonic::Status> {
                    $this.check_fail()?;
                    let $req = request.into_inner();
                    Ok(Response::new(async move { $body }.await))
                }
            )*

            $(
                async fn $unused(
                    &self,
                    _request: Request<$UReq>,
                ) -> Result<Response<$UResp>, tonic::Status> {
                    Err(tonic::Status::unimplemented("admin RPC: not used by the proxy"))
                }
            )*
        }
    };
}

broker_service! {
    fn send_message(&self, req: SendMessageRequest) -> SendMessageResponse {
        let mut entries = vec![];
        {
            let mut st = self.state.lock();
            st.sends.push(req.clone());
            for m in req.messages {
                let topic = m.topic.as_ref().map(|t| t.name.clone()).unwrap_or_default();
                let sys = m.system_properties.clone().unwrap_or_default();
                let list = st.topics.entry(topic).or_default();
                let offset = list.len() as i64;
                list.push(Stored {
                    message: m,
                    queue_id: sys.queue_id,
                    offset,
                });
                entries.push(SendResultEntry {
                    status: Some(ok()),
                    message_id: sys.message_id,
                    transaction_id: String::new(),
                    offset,
                    recall_handle: String::new(),
                });
            }
        }
        self.arrived.notify_waiters();
        SendMessageResponse {
            status: Some(ok()),
            entries,
        }
    }

    fn pop_message(&self, req: ReceiveMessageRequest) -> PopMessageResponse {
        self.state.lock().pops.push(req.clone());
        let deadline = Instant::now() + to_duration(req.long_polling_timeout.as_ref());
        loop {
            let notified = self.arrived.notified();
            let messages = self.try_pop(&req);
            if !messages.is_empty() {
                return PopMessageResponse {
                    status: Some(ok()),
                    messages,
                    unsubscribed_lite_topics: vec![],
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return PopMessageResponse {
                    status: Some(status(Code::MessageNotFound, "no new message")),
                    messages: vec![],
                    unsubscribed_lite_topics: vec![],
                };
            }
            // Invisible messages may become visible again: re-check at least every 50 ms.
            let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(50)), notified)
                .await;
        }
    }

    fn ack_message(&self, req: AckMessageRequest) -> AckMessageResponse {
        let mut open = self.acks_open.subscribe();
        let _ = open.wait_for(|open| *open).await;
        drop(open);
        let mut st = self.state.lock();
        st.acks.push(req.clone());
        let mut entries = vec![];
        for e in &req.entries {
            let s = match st.handles.remove(&e.receipt_handle) {
                Some(key) => {
                    if let Some(gs) = st.groups.get_mut(&key) {
                        gs.acked = true;
                    }
                    ok()
                }
                None => status(
                    Code::InvalidReceiptHandle,
                    "unknown or expired receipt handle",
                ),
            };
            entries.push(AckMessageResultEntry {
                message_id: e.message_id.clone(),
                receipt_handle: e.receipt_handle.clone(),
                status: Some(s),
            });
        }
        AckMessageResponse {
            status: Some(ok()),
            entries,
        }
    }

    fn change_invisible_duration(
        &self,
        req: ChangeInvisibleDurationRequest
    ) -> ChangeInvisibleDurationResponse {
        let mut st = self.state.lock();
        st.changes.push(req.clone());
        let Some(key) = st.handles.remove(&req.receipt_handle) else {
            return ChangeInvisibleDurationResponse {
                status: Some(status(Code::InvalidReceiptHandle, "unknown receipt handle")),
                receipt_handle: String::new(),
            };
        };
        st.next_handle += 1;
        let handle = comet_vocab::handle::join(&self.set, &st.next_handle.to_string());
        st.handles.insert(handle.clone(), key.clone());
        if let Some(gs) = st.groups.get_mut(&key) {
            gs.invisible_until =
                Some(Instant::now() + to_duration(req.invisible_duration.as_ref()));
            gs.handle = Some(handle.clone());
        }
        ChangeInvisibleDurationResponse {
            status: Some(ok()),
            receipt_handle: handle,
        }
    }

    fn end_transaction(&self, req: EndTransactionRequest) -> EndTransactionResponse {
        self.state.lock().ends.push(req);
        EndTransactionResponse { status: Some(ok()) }
    }

    fn watch_transaction_checks(
        &self,
        _req: WatchTransactionChecksRequest
    ) -> TransactionCheckStream {
        let (tx, rx) = mpsc::channel(16);
        self.state.lock().watchers.push(tx);
        tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
    }

    fn forward_message_to_dead_letter_queue(
        &self,
        req: ForwardMessageToDeadLetterQueueRequest
    ) -> ForwardMessageToDeadLetterQueueResponse {
        let mut st = self.state.lock();
        st.dlq.push(req.clone());
        if let Some(key) = st.handles.remove(&req.receipt_handle)
            && let Some(gs) = st.groups.get_mut(&key)
        {
            gs.acked = true;
        }
        ForwardMessageToDeadLetterQueueResponse {
            status: Some(ok()),
        }
    }

    // Offsets are positions within a queue; no filtering.
    fn pull_message(&self, req: PullMessageRequest) -> PullMessageResponse {
        self.state.lock().pulls.push(req.clone());
        let (topic, queue_id) = mq_key(req.message_queue.as_ref());
        let deadline = Instant::now() + to_duration(req.long_polling_timeout.as_ref());
        loop {
            let notified = self.arrived.notified();
            let all = self.queue_messages(&topic, queue_id);
            let max = all.len() as i64;
            if req.offset < 0 || req.offset > max {
                return PullMessageResponse {
                    status: Some(status(Code::IllegalOffset, "offset out of range")),
                    messages: vec![],
                    next_offset: req.offset.clamp(0, max),
                    min_offset: 0,
                    max_offset: max,
                };
            }
            let messages: Vec<Message> = all
                .into_iter()
                .skip(req.offset as usize)
                .take(req.batch_size.max(1) as usize)
                .collect();
            let now = Instant::now();
            if !messages.is_empty() || now >= deadline {
                let next = req.offset + messages.len() as i64;
                return PullMessageResponse {
                    status: Some(if messages.is_empty() {
                        status(Code::MessageNotFound, "no new message")
                    } else {
                        ok()
                    }),
                    messages,
                    next_offset: next,
                    min_offset: 0,
                    max_offset: max,
                };
            }
            let _ = tokio::time::timeout(deadline - now, notified).await;
        }
    }

    fn update_offset(&self, req: UpdateOffsetRequest) -> UpdateOffsetResponse {
        let group = req.group.map(|g| g.name).unwrap_or_default();
        let (topic, queue_id) = mq_key(req.message_queue.as_ref());
        let mut st = self.state.lock();
        st.offset_calls
            .push(format!("update {group} {topic} {queue_id}"));
        st.offsets.insert((group, topic, queue_id), req.offset);
        UpdateOffsetResponse { status: Some(ok()) }
    }

    fn get_offset(&self, req: GetOffsetRequest) -> GetOffsetResponse {
        let group = req.group.map(|g| g.name).unwrap_or_default();
        let (topic, queue_id) = mq_key(req.message_queue.as_ref());
        let mut st = self.state.lock();
        st.offset_calls
            .push(format!("get {group} {topic} {queue_id}"));
        match st.offsets.get(&(group, topic, queue_id)) {
            Some(o) => GetOffsetResponse {
                status: Some(ok()),
                offset: *o,
            },
            None => GetOffsetResponse {
                status: Some(status(Code::OffsetNotFound, "no offset")),
                offset: 0,
            },
        }
    }

    fn query_offset(&self, req: QueryOffsetRequest) -> QueryOffsetResponse {
        let (topic, queue_id) = mq_key(req.message_queue.as_ref());
        self.state
            .lock()
            .offset_calls
            .push(format!("query - {topic} {queue_id}"));
        let max = self.queue_messages(&topic, queue_id).len() as i64;
        let offset = match QueryOffsetPolicy::try_from(req.query_offset_policy) {
            Ok(QueryOffsetPolicy::End) => max,
            // Every fake message is stored "now": a past timestamp finds the first one.
            _ => 0,
        };
        QueryOffsetResponse {
            status: Some(ok()),
            offset,
        }
    }

    // The proxy never forwards the admin RPCs (the CLI calls brokers directly).
    fn recall_message(&self, req: RecallMessageRequest) -> RecallMessageResponse {
        self.state.lock().recalls.push(req);
        RecallMessageResponse {
            status: Some(ok()),
            message_id: "recalled".into(),
        }
    }

    // Each settlement as its own call (recorded with them); the call itself is recorded too.
    fn settle_messages(&self, req: SettleMessagesRequest) -> SettleMessagesResponse {
        self.state.lock().settles.push(req.clone());
        let mut results = Vec::with_capacity(req.settlements.len());
        for s in req.settlements {
            let response = match s.request {
                Some(settlement::Request::Ack(a)) => settled::Response::Ack(
                    BrokerService::ack_message(self, Request::new(a))
                        .await
                        .expect("the fake answers acks")
                        .into_inner(),
                ),
                Some(settlement::Request::ChangeInvisibleDuration(c)) => {
                    settled::Response::ChangeInvisibleDuration(
                        BrokerService::change_invisible_duration(self, Request::new(c))
                            .await
                            .expect("the fake answers changes")
                            .into_inner(),
                    )
                }
                None => continue,
            };
            results.push(Settled {
                response: Some(response),
            });
        }
        SettleMessagesResponse { results }
    }

    unused:
    reset_offset(ResetOffsetRequest) -> ResetOffsetResponse;
    query_message(QueryMessageRequest) -> QueryMessageResponse;
    get_consumer_progress(GetConsumerProgressRequest) -> GetConsumerProgressResponse;
    set_log_level(SetLogLevelRequest) -> SetLogLevelResponse;
    get_broker_status(comet_proto::comet::v1::GetBrokerStatusRequest) -> comet_proto::comet::v1::GetBrokerStatusResponse;
    sync_lite_subscription(SyncLiteRequest) -> SyncLiteSubscriptionResponse;
}
