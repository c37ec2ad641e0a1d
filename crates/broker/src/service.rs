//! `comet.v1.BrokerService` over a [`BrokerApi`]: the gRPC adapter. Each method decodes its
//! protobuf request into the broker's own request type (`convert`), calls the operation, and
//! encodes the answer: an operation's failure is an in-body `Status`; a call no instance took
//! ([`Unavailable`]) is gRPC UNAVAILABLE.

use comet_proto::apache::rocketmq::v2::{
    AckMessageRequest, AckMessageResponse, AckMessageResultEntry, ChangeInvisibleDurationRequest,
    ChangeInvisibleDurationResponse, Code, EndTransactionRequest, EndTransactionResponse,
    ForwardMessageToDeadLetterQueueRequest, ForwardMessageToDeadLetterQueueResponse,
    GetOffsetRequest, GetOffsetResponse, PullMessageRequest, QueryOffsetPolicy, QueryOffsetRequest,
    QueryOffsetResponse, RecallMessageRequest, RecallMessageResponse, ReceiveMessageRequest,
    SendMessageRequest, SendMessageResponse, SendResultEntry, SyncLiteSubscriptionResponse,
    TransactionResolution, TransactionSource, UpdateOffsetRequest, UpdateOffsetResponse,
};
use comet_proto::comet::v1::broker_service_server::BrokerService;
use comet_proto::comet::v1::{
    GetBrokerStatusRequest, GetBrokerStatusResponse, SetLogLevelRequest, SetLogLevelResponse,
};
use comet_proto::comet::v1::{
    GetConsumerProgressRequest, GetConsumerProgressResponse, PopMessageResponse,
    PullMessageResponse, QueryMessageRequest, QueryMessageResponse, QueueOffsetChange,
    QueueProgress, ResetOffsetRequest, ResetOffsetResponse, SyncLiteRequest, TransactionCheck,
    WatchTransactionChecksRequest, query_message_request, reset_offset_request,
};
use comet_proto::comet::v1::{
    SettleMessagesRequest, SettleMessagesResponse, Settled, Settlement, settled, settlement,
};
use futures::StreamExt as _;
use tonic::{Request, Response, Status};

use crate::ack::{AckRequest, ChangeInvisibleRequest};
use crate::api::BrokerApi;
use crate::convert::{
    self, Delivery, failed, invisible, long_poll, name, new_message, ok, overall, plain_message,
    queue, status, status_of, ts_to_ms,
};
use crate::dead_letter::DeadLetterRequest;
use crate::delay::TimerStats;
use crate::filter::Filter;
use crate::offsets::{OffsetPolicy, QueueOffset, ResetTarget};
use crate::outcome::{Failure, Unavailable};
use crate::pop::PopRequest;
use crate::pull::{PullRequest, PullStatus};
use crate::query::MessageQuery;
use crate::recall::RecallRequest;
use crate::send::SendRequest;
use crate::transaction::table::TransactionStats;
use crate::transaction::{Decision, TransactionEnd};

/// The stream of transaction checks a broker sends to one proxy; every [`BrokerService`]
/// implementation uses this type, so the trait can be used as `dyn BrokerService<
/// WatchTransactionChecksStream = TransactionCheckStream>`.
pub type TransactionCheckStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<TransactionCheck, Status>> + Send + 'static>,
>;

/// The gRPC service of a broker: wrap it in `BrokerServiceServer::new` to serve it, or call
/// the trait methods directly in process (in-process callers that want Comet's own types use
/// [`BrokerGrpc::api`]). Cheap to clone; calls after `Broker::shutdown` began fail with gRPC
/// UNAVAILABLE. With replication (`HaBroker`) it follows role changes.
#[derive(Clone, Debug)]
pub struct BrokerGrpc {
    api: BrokerApi,
}

impl BrokerGrpc {
    pub(crate) fn new(api: BrokerApi) -> Self {
        Self { api }
    }

    /// The operations behind this service, as Comet's own types.
    pub fn api(&self) -> &BrokerApi {
        &self.api
    }

    /// Counters of delayed delivery of the broker instance calls go to now (a replica's count
    /// the timers it follows; see `Broker::timer_stats`).
    pub fn timer_stats(&self) -> TimerStats {
        self.api.timer_stats()
    }

    /// Counters of transactional messages of the broker instance calls go to now (a
    /// replica's `pending` counts the half messages it follows; see
    /// `Broker::transaction_stats`).
    pub fn transaction_stats(&self) -> TransactionStats {
        self.api.transaction_stats()
    }

    /// AckMessage from `client_id`. The entries answer only their status (readers match
    /// them to the request by position).
    async fn ack(
        &self,
        client_id: String,
        req: AckMessageRequest,
    ) -> Result<AckMessageResponse, Status> {
        let group = name(req.group.as_ref());
        let topic = name(req.topic.as_ref());
        // Entries of lite topics are acknowledged in their lite topic's consumer state: one
        // call per consumer-state topic, the results put back in request order.
        let mut calls: Vec<(String, Vec<usize>, Vec<String>)> = Vec::new();
        for (i, e) in req.entries.into_iter().enumerate() {
            let t = consumer_topic(topic.clone(), e.lite_topic.as_deref());
            match calls.iter_mut().find(|c| c.0 == t) {
                Some(c) => {
                    c.1.push(i);
                    c.2.push(e.receipt_handle);
                }
                None => calls.push((t, vec![i], vec![e.receipt_handle])),
            }
        }
        let acked = if calls.len() <= 1 {
            let (t, _, handles) = calls.pop().unwrap_or((topic, Vec::new(), Vec::new()));
            let ack = AckRequest {
                group,
                topic: t,
                receipt_handles: handles,
                client_id,
            };
            self.api.ack(ack).await.map_err(unavailable)?
        } else {
            let total = calls.iter().map(|c| c.1.len()).sum();
            let mut all: Vec<Result<(), Failure>> = (0..total).map(|_| Ok(())).collect();
            let mut failure = None;
            for (t, slots, handles) in calls {
                let ack = AckRequest {
                    group: group.clone(),
                    topic: t,
                    receipt_handles: handles,
                    client_id: client_id.clone(),
                };
                match self.api.ack(ack).await.map_err(unavailable)? {
                    Ok(results) => {
                        for (slot, r) in slots.into_iter().zip(results) {
                            all[slot] = r;
                        }
                    }
                    Err(f) => failure = Some(f),
                }
            }
            match failure {
                Some(f) => Err(f),
                None => Ok(all),
            }
        };
        Ok(match acked {
            Ok(results) => {
                let entries: Vec<AckMessageResultEntry> = results
                    .iter()
                    .map(|r| AckMessageResultEntry {
                        status: Some(status_of(r)),
                        ..Default::default()
                    })
                    .collect();
                AckMessageResponse {
                    status: Some(overall(entries.iter().filter_map(|e| e.status.as_ref()))),
                    entries,
                }
            }
            Err(f) => AckMessageResponse {
                status: Some(failed(f)),
                entries: Vec::new(),
            },
        })
    }

    /// ChangeInvisibleDuration from `client_id`. A failed change answers the handle it got
    /// (the delivery keeps it).
    async fn change_invisible(
        &self,
        client_id: String,
        req: ChangeInvisibleDurationRequest,
    ) -> Result<ChangeInvisibleDurationResponse, Status> {
        let changed = match req.invisible_duration.as_ref().map(invisible).transpose() {
            Err(f) => Err(f),
            Ok(d) => {
                let change = ChangeInvisibleRequest {
                    group: name(req.group.as_ref()),
                    topic: consumer_topic(name(req.topic.as_ref()), req.lite_topic.as_deref()),
                    receipt_handle: req.receipt_handle.clone(),
                    invisible: d,
                    client_id,
                };
                self.api
                    .change_invisible(change)
                    .await
                    .map_err(unavailable)?
            }
        };
        Ok(match changed {
            Ok(handle) => ChangeInvisibleDurationResponse {
                status: Some(ok()),
                receipt_handle: handle,
            },
            Err(f) => ChangeInvisibleDurationResponse {
                status: Some(failed(f)),
                receipt_handle: req.receipt_handle,
            },
        })
    }

    /// One settlement of SettleMessages, handled as its own call.
    async fn settle(&self, settlement: Settlement) -> Result<Settled, Status> {
        let response = match settlement.request {
            Some(settlement::Request::Ack(ack)) => {
                settled::Response::Ack(self.ack(settlement.client_id, ack).await?)
            }
            Some(settlement::Request::ChangeInvisibleDuration(change)) => {
                settled::Response::ChangeInvisibleDuration(
                    self.change_invisible(settlement.client_id, change).await?,
                )
            }
            None => {
                return Err(Status::invalid_argument(
                    "a settlement carries neither an ack nor an invisible-time change",
                ));
            }
        };
        Ok(Settled {
            response: Some(response),
        })
    }
}

/// The header that names the calling client: the proxy forwards the client's own
/// `x-mq-client-id` with each consumer call (broadcast groups key their positions by it).
pub const CLIENT_ID_HEADER: &str = "x-mq-client-id";

/// The calling client's id ([`CLIENT_ID_HEADER`]); empty when absent.
fn client_id<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get(CLIENT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The consumer-state topic a request names: the topic, or with a lite topic that lite
/// topic's (see `lite`).
fn consumer_topic(topic: String, lite_topic: Option<&str>) -> String {
    match lite_topic.filter(|l| !l.is_empty()) {
        Some(l) => crate::lite::state_key(&topic, l),
        None => topic,
    }
}

fn unavailable(u: Unavailable) -> Status {
    Status::unavailable(u.0)
}

fn filter(
    f: Option<&comet_proto::apache::rocketmq::v2::FilterExpression>,
) -> Result<Filter, Failure> {
    Filter::from_request(f).map_err(|e| Failure::new(Code::IllegalFilterExpression, e.to_string()))
}

#[tonic::async_trait]
impl BrokerService for BrokerGrpc {
    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let req = request.into_inner();
        // The ids answer each entry; everything else moves into the broker's type.
        let ids: Vec<String> = req
            .messages
            .iter()
            .map(|m| {
                m.system_properties
                    .as_ref()
                    .map(|s| s.message_id.clone())
                    .unwrap_or_default()
            })
            .collect();
        let send = SendRequest {
            messages: req.messages.into_iter().map(new_message).collect(),
        };
        let sent = self.api.send(send).await.map_err(unavailable)?;
        Ok(Response::new(match sent {
            Ok(results) => {
                let entries: Vec<SendResultEntry> = send_entries(ids, results);
                SendMessageResponse {
                    status: Some(overall(entries.iter().filter_map(|e| e.status.as_ref()))),
                    entries,
                }
            }
            Err(f) => SendMessageResponse {
                status: Some(failed(f)),
                entries: Vec::new(),
            },
        }))
    }

    async fn pop_message(
        &self,
        request: Request<ReceiveMessageRequest>,
    ) -> Result<Response<PopMessageResponse>, Status> {
        let client_id = client_id(&request);
        let req = request.into_inner();
        let who = (
            name(req.group.as_ref()),
            client_id.clone(),
            req.message_queue
                .as_ref()
                .map(|q| name(q.topic.as_ref()))
                .unwrap_or_default(),
        );
        let decoded = (|| {
            let (topic, queue_id) = queue(req.message_queue.as_ref())?;
            Ok(PopRequest {
                group: name(req.group.as_ref()),
                topic,
                queue_id,
                filter: filter(req.filter_expression.as_ref())?,
                batch_size: req.batch_size,
                invisible: req.invisible_duration.as_ref().map(invisible).transpose()?,
                long_poll: long_poll(req.long_polling_timeout.as_ref())?,
                client_id,
            })
        })();
        let popped = match decoded {
            Ok(pop) => self.api.pop(pop).await.map_err(unavailable)?,
            Err(f) => Err(f),
        };
        let advertised = self.api.advertised_addr();
        let unsubscribed_lite_topics = self.api.take_lite_notices(&who.0, &who.1, &who.2);
        Ok(Response::new(match popped {
            Ok(d) if d.is_empty() => PopMessageResponse {
                status: Some(status(Code::MessageNotFound, "no new message")),
                messages: Vec::new(),
                unsubscribed_lite_topics,
            },
            Ok(d) => PopMessageResponse {
                status: Some(ok()),
                messages: d
                    .into_iter()
                    .map(|d| {
                        convert::to_proto(
                            &d.message,
                            Delivery {
                                receipt_handle: d.receipt_handle,
                                attempt: d.attempt,
                                invisible: d.invisible,
                                advertised_addr: &advertised,
                            },
                        )
                    })
                    .collect(),
                unsubscribed_lite_topics,
            },
            Err(f) => PopMessageResponse {
                status: Some(failed(f)),
                messages: Vec::new(),
                unsubscribed_lite_topics,
            },
        }))
    }

    async fn ack_message(
        &self,
        request: Request<AckMessageRequest>,
    ) -> Result<Response<AckMessageResponse>, Status> {
        let client_id = client_id(&request);
        self.ack(client_id, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn change_invisible_duration(
        &self,
        request: Request<ChangeInvisibleDurationRequest>,
    ) -> Result<Response<ChangeInvisibleDurationResponse>, Status> {
        let client_id = client_id(&request);
        self.change_invisible(client_id, request.into_inner())
            .await
            .map(Response::new)
    }

    /// The settlements run together: acks that arrive together also share one wait for the
    /// consumer-state log.
    async fn settle_messages(
        &self,
        request: Request<SettleMessagesRequest>,
    ) -> Result<Response<SettleMessagesResponse>, Status> {
        let settlements = request.into_inner().settlements;
        let results = futures::future::join_all(settlements.into_iter().map(|s| self.settle(s)))
            .await
            .into_iter()
            .collect::<Result<Vec<_>, Status>>()?;
        Ok(Response::new(SettleMessagesResponse { results }))
    }

    async fn end_transaction(
        &self,
        request: Request<EndTransactionRequest>,
    ) -> Result<Response<EndTransactionResponse>, Status> {
        let req = request.into_inner();
        let decision = match TransactionResolution::try_from(req.resolution) {
            Ok(TransactionResolution::Commit) => Decision::Commit,
            Ok(TransactionResolution::Rollback) => Decision::Rollback,
            _ => Decision::Unknown,
        };
        let end = TransactionEnd {
            topic: name(req.topic.as_ref()),
            message_id: req.message_id,
            transaction_id: req.transaction_id,
            decision,
            from_check: req.source == TransactionSource::SourceServerCheck as i32,
        };
        let ended = self.api.end_transaction(end).await.map_err(unavailable)?;
        Ok(Response::new(EndTransactionResponse {
            status: Some(match ended {
                Ok(msg) => status(Code::Ok, msg),
                Err(f) => failed(f),
            }),
        }))
    }

    type WatchTransactionChecksStream = TransactionCheckStream;

    /// Streams transaction checks until the broker shuts down or the proxy goes away. The
    /// stream does not count as a running call (shutdown does not wait for it).
    async fn watch_transaction_checks(
        &self,
        request: Request<WatchTransactionChecksRequest>,
    ) -> Result<Response<Self::WatchTransactionChecksStream>, Status> {
        let proxy_id = request.into_inner().proxy_id;
        let rx = self
            .api
            .watch_transaction_checks(&proxy_id)
            .await
            .map_err(unavailable)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|c| {
            Ok(TransactionCheck {
                topic: c.topic,
                message: Some(convert::to_check_proto(&c.message)),
                transaction_id: c.transaction_id,
            })
        });
        Ok(Response::new(stream.boxed()))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<ForwardMessageToDeadLetterQueueResponse>, Status> {
        let client_id = client_id(&request);
        let req = request.into_inner();
        let forward = DeadLetterRequest {
            group: name(req.group.as_ref()),
            topic: consumer_topic(name(req.topic.as_ref()), req.lite_topic.as_deref()),
            receipt_handle: req.receipt_handle,
            client_id,
        };
        let forwarded = self
            .api
            .forward_to_dead_letter(forward)
            .await
            .map_err(unavailable)?;
        Ok(Response::new(ForwardMessageToDeadLetterQueueResponse {
            status: Some(status_of(&forwarded)),
        }))
    }

    async fn sync_lite_subscription(
        &self,
        request: Request<SyncLiteRequest>,
    ) -> Result<Response<SyncLiteSubscriptionResponse>, Status> {
        let client_id = client_id(&request);
        let SyncLiteRequest { request, quota } = request.into_inner();
        let synced = match request {
            None => Err(Failure::new(Code::BadRequest, "the request is missing")),
            Some(r) => match convert::lite_subscription(r, client_id, quota) {
                Ok(req) => self
                    .api
                    .sync_lite_subscription(req)
                    .await
                    .map_err(unavailable)?,
                Err(f) => Err(f),
            },
        };
        Ok(Response::new(SyncLiteSubscriptionResponse {
            status: Some(status_of(&synced)),
        }))
    }

    async fn pull_message(
        &self,
        request: Request<PullMessageRequest>,
    ) -> Result<Response<PullMessageResponse>, Status> {
        let req = request.into_inner();
        let decoded = (|| {
            let (topic, queue_id) = queue(req.message_queue.as_ref())?;
            Ok(PullRequest {
                group: name(req.group.as_ref()),
                topic,
                queue_id,
                offset: req.offset,
                filter: filter(req.filter_expression.as_ref())?,
                batch_size: req.batch_size,
                long_poll: long_poll(req.long_polling_timeout.as_ref())?,
            })
        })();
        let (pull, pulled) = match decoded {
            Ok(pull) => {
                let pulled = self.api.pull(pull.clone()).await.map_err(unavailable)?;
                (Some(pull), pulled)
            }
            Err(f) => (None, Err(f)),
        };
        let advertised = self.api.advertised_addr();
        Ok(Response::new(match (pull, pulled) {
            (Some(pull), Ok(r)) => {
                let st = match r.status {
                    PullStatus::Found => ok(),
                    PullStatus::NotFound => status(
                        Code::MessageNotFound,
                        format!(
                            "no new matching message; continue from offset {}",
                            r.next_offset
                        ),
                    ),
                    PullStatus::OffsetOutOfRange => status(
                        Code::IllegalOffset,
                        format!(
                            "offset {} of {:?} queue {} is outside the stored range [{}, {}]; \
                             continue from {}",
                            pull.offset,
                            pull.topic,
                            pull.queue_id,
                            r.min_offset,
                            r.max_offset,
                            r.next_offset
                        ),
                    ),
                };
                PullMessageResponse {
                    status: Some(st),
                    messages: r
                        .messages
                        .iter()
                        .map(|m| plain_message(m, &advertised))
                        .collect(),
                    next_offset: r.next_offset,
                    min_offset: r.min_offset,
                    max_offset: r.max_offset,
                }
            }
            (_, Err(f)) => PullMessageResponse {
                status: Some(failed(f)),
                ..Default::default()
            },
            (None, Ok(_)) => PullMessageResponse::default(),
        }))
    }

    async fn update_offset(
        &self,
        request: Request<UpdateOffsetRequest>,
    ) -> Result<Response<UpdateOffsetResponse>, Status> {
        let req = request.into_inner();
        let updated = match queue(req.message_queue.as_ref()) {
            Ok((topic, queue_id)) => {
                let at = QueueOffset {
                    group: name(req.group.as_ref()),
                    topic,
                    queue_id,
                    offset: req.offset,
                };
                self.api.update_offset(at).await.map_err(unavailable)?
            }
            Err(f) => Err(f),
        };
        Ok(Response::new(UpdateOffsetResponse {
            status: Some(status_of(&updated)),
        }))
    }

    async fn get_offset(
        &self,
        request: Request<GetOffsetRequest>,
    ) -> Result<Response<GetOffsetResponse>, Status> {
        let req = request.into_inner();
        let got = match queue(req.message_queue.as_ref()) {
            Ok((topic, queue_id)) => self
                .api
                .get_offset(&name(req.group.as_ref()), &topic, queue_id)
                .await
                .map_err(unavailable)?,
            Err(f) => Err(f),
        };
        Ok(Response::new(GetOffsetResponse {
            status: Some(status_of(&got)),
            offset: got.unwrap_or(0),
        }))
    }

    async fn query_offset(
        &self,
        request: Request<QueryOffsetRequest>,
    ) -> Result<Response<QueryOffsetResponse>, Status> {
        let req = request.into_inner();
        let decoded = (|| {
            let (topic, queue_id) = queue(req.message_queue.as_ref())?;
            let policy = match QueryOffsetPolicy::try_from(req.query_offset_policy) {
                Ok(QueryOffsetPolicy::Beginning) => OffsetPolicy::Beginning,
                Ok(QueryOffsetPolicy::End) => OffsetPolicy::End,
                Ok(QueryOffsetPolicy::Timestamp) => match req.timestamp.as_ref() {
                    Some(ts) => OffsetPolicy::Timestamp(ts_to_ms(ts)),
                    None => {
                        return Err(Failure::new(
                            Code::BadRequest,
                            "timestamp is required with the TIMESTAMP policy",
                        ));
                    }
                },
                Err(_) => {
                    return Err(Failure::new(
                        Code::BadRequest,
                        format!(
                            "unknown query_offset_policy {}; use BEGINNING, END or TIMESTAMP",
                            req.query_offset_policy
                        ),
                    ));
                }
            };
            Ok((topic, queue_id, policy))
        })();
        let found = match decoded {
            Ok((topic, queue_id, policy)) => self
                .api
                .query_offset(&topic, queue_id, policy)
                .await
                .map_err(unavailable)?,
            Err(f) => Err(f),
        };
        Ok(Response::new(QueryOffsetResponse {
            status: Some(status_of(&found)),
            offset: found.unwrap_or(0),
        }))
    }

    async fn reset_offset(
        &self,
        request: Request<ResetOffsetRequest>,
    ) -> Result<Response<ResetOffsetResponse>, Status> {
        let req = request.into_inner();
        let reset = match req.target {
            None => Err(Failure::new(
                Code::BadRequest,
                "a reset needs a target: timestamp or offset",
            )),
            Some(target) => {
                let target = match target {
                    reset_offset_request::Target::Timestamp(ts) => {
                        ResetTarget::Timestamp(ts_to_ms(&ts))
                    }
                    reset_offset_request::Target::Offset(o) => ResetTarget::Offset(o),
                };
                self.api
                    .reset_offset(
                        &name(req.group.as_ref()),
                        &name(req.topic.as_ref()),
                        req.queue_id,
                        target,
                    )
                    .await
                    .map_err(unavailable)?
            }
        };
        Ok(Response::new(match reset {
            Ok(changes) => ResetOffsetResponse {
                status: Some(ok()),
                queues: changes
                    .into_iter()
                    .map(|c| QueueOffsetChange {
                        queue_id: c.queue_id,
                        previous_offset: c.previous_offset.unwrap_or(-1),
                        offset: c.offset,
                        dropped_inflight: c.dropped_inflight as i64,
                    })
                    .collect(),
            },
            Err(f) => ResetOffsetResponse {
                status: Some(failed(f)),
                queues: Vec::new(),
            },
        }))
    }

    async fn query_message(
        &self,
        request: Request<QueryMessageRequest>,
    ) -> Result<Response<QueryMessageResponse>, Status> {
        let req = request.into_inner();
        let found = match req.query {
            None => Err(Failure::new(
                Code::BadRequest,
                "a query needs one of message_id, key or queue_offset",
            )),
            Some(q) => {
                let query = match q {
                    query_message_request::Query::MessageId(id) => MessageQuery::Id(id),
                    query_message_request::Query::Key(k) => MessageQuery::Key {
                        key: k.key,
                        max: k.max,
                        begin_ms: k.begin.as_ref().map_or(0, ts_to_ms),
                        end_ms: k.end.as_ref().map_or(i64::MAX, ts_to_ms),
                    },
                    query_message_request::Query::QueueOffset(q) => MessageQuery::QueueOffset {
                        queue_id: q.queue_id,
                        offset: q.offset,
                    },
                };
                self.api
                    .query_message(&name(req.topic.as_ref()), query)
                    .await
                    .map_err(unavailable)?
            }
        };
        let advertised = self.api.advertised_addr();
        Ok(Response::new(match found {
            Ok(m) if m.is_empty() => QueryMessageResponse {
                status: Some(status(Code::MessageNotFound, "no stored message matches")),
                messages: Vec::new(),
            },
            Ok(m) => QueryMessageResponse {
                status: Some(ok()),
                messages: m.iter().map(|m| plain_message(m, &advertised)).collect(),
            },
            Err(f) => QueryMessageResponse {
                status: Some(failed(f)),
                messages: Vec::new(),
            },
        }))
    }

    async fn get_consumer_progress(
        &self,
        request: Request<GetConsumerProgressRequest>,
    ) -> Result<Response<GetConsumerProgressResponse>, Status> {
        let req = request.into_inner();
        let progress = self
            .api
            .group_progress(&name(req.group.as_ref()), &name(req.topic.as_ref()))
            .await
            .map_err(unavailable)?;
        Ok(Response::new(match progress {
            Ok(queues) => GetConsumerProgressResponse {
                status: Some(ok()),
                queues: queues
                    .into_iter()
                    .map(|q| QueueProgress {
                        queue_id: q.queue_id,
                        min_offset: q.min_offset,
                        max_offset: q.max_offset,
                        consume_offset: q.consume_offset.unwrap_or(-1),
                        backlog: q.backlog,
                        inflight: q.inflight as i64,
                    })
                    .collect(),
            },
            Err(f) => GetConsumerProgressResponse {
                status: Some(failed(f)),
                queues: Vec::new(),
            },
        }))
    }

    async fn recall_message(
        &self,
        request: Request<RecallMessageRequest>,
    ) -> Result<Response<RecallMessageResponse>, Status> {
        let req = request.into_inner();
        let recall = RecallRequest {
            topic: name(req.topic.as_ref()),
            handle: req.recall_handle,
        };
        let recalled = self.api.recall(recall).await.map_err(unavailable)?;
        Ok(Response::new(match recalled {
            Ok(message_id) => RecallMessageResponse {
                status: Some(ok()),
                message_id,
            },
            Err(f) => RecallMessageResponse {
                status: Some(failed(f)),
                message_id: String::new(),
            },
        }))
    }

    async fn set_log_level(
        &self,
        request: Request<SetLogLevelRequest>,
    ) -> Result<Response<SetLogLevelResponse>, Status> {
        let directives = comet_observe::logging::set_level_rpc(&request.into_inner().directives)?;
        Ok(Response::new(SetLogLevelResponse { directives }))
    }

    async fn get_broker_status(
        &self,
        _request: Request<GetBrokerStatusRequest>,
    ) -> Result<Response<GetBrokerStatusResponse>, Status> {
        let s = self.api.storage_status();
        Ok(Response::new(GetBrokerStatusResponse {
            status: Some(ok()),
            disk_used_ratio: s.disk_used_ratio,
            disk_high_watermark: s.disk_high_watermark,
            disk_refuse_watermark: s.disk_refuse_watermark,
            storage_bytes: s.storage_bytes,
            log_end_offset: s.log_end_offset,
        }))
    }
}

/// One entry per message of the request: the status, the message id as sent, and for a
/// stored message its offset (and transaction id).
fn send_entries(
    ids: Vec<String>,
    results: Vec<Result<crate::send::Sent, Failure>>,
) -> Vec<SendResultEntry> {
    ids.into_iter()
        .zip(results)
        .map(|(message_id, r)| match r {
            Ok(sent) => SendResultEntry {
                status: Some(ok()),
                message_id,
                transaction_id: sent.transaction_id.unwrap_or_default(),
                offset: sent.offset,
                recall_handle: sent.recall_handle.unwrap_or_default(),
            },
            Err(f) => SendResultEntry {
                status: Some(failed(f)),
                message_id,
                ..Default::default()
            },
        })
        .collect()
}
