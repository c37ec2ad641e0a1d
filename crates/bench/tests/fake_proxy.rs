//! `comet-bench` (raw client) against an in-process fake MessagingService.
//!
//! The fake implements the generated `apache.rocketmq.v2` server trait with one in-memory
//! queue: it routes one topic (4 queues), echoes telemetry settings, stores sent messages
//! (optionally rejecting every n-th with a chosen code), long-polls ReceiveMessage, tracks
//! receipt handles for AckMessage, and counts every call and header so the tests can compare
//! the benchmark's report with what the server actually saw.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use comet_bench::{self as bench, BenchArgs, BenchReport, ByteSize, ClientKind};
use comet_proto::apache::rocketmq::v2::messaging_service_server::{
    MessagingService, MessagingServiceServer,
};
use comet_proto::apache::rocketmq::v2::*;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status as GrpcStatus};

const TOPIC: &str = "bench";

type FrameStream<T> = Pin<Box<dyn Stream<Item = Result<T, GrpcStatus>> + Send>>;

/// Everything the fake saw.
#[derive(Default)]
struct Seen {
    queue: Mutex<VecDeque<Message>>,
    handles: Mutex<HashMap<String, String>>,
    arrived: Notify,
    next: AtomicU64,
    stored: AtomicU64,
    rejected: AtomicU64,
    delivered: AtomicU64,
    acked: AtomicU64,
    bad_headers: AtomicU64,
    heartbeats: AtomicU64,
    telemetry_closed: AtomicU64,
    /// (client id, client type) of every settings command.
    settings: Mutex<Vec<(String, i32)>>,
    terminated: Mutex<Vec<String>>,
    send_clients: Mutex<HashSet<String>>,
    body_sizes: Mutex<HashSet<usize>>,
    message_ids: Mutex<HashSet<String>>,
    duplicate_ids: AtomicU64,
    send_calls: AtomicU64,
}

struct Fake {
    seen: Arc<Seen>,
    reject: Option<Reject>,
}

/// What the fake refuses.
#[derive(Debug, Clone, Copy)]
enum Reject {
    /// Every n-th message (1 = all), with this in-body code.
    Messages(u64, Code),
    /// Every n-th SendMessage call, with a gRPC error (RESOURCE_EXHAUSTED).
    Calls(u64),
}

fn ok() -> Option<Status> {
    status(Code::Ok)
}

fn status(code: Code) -> Option<Status> {
    Some(Status {
        code: code as i32,
        message: String::new(),
    })
}

impl Fake {
    /// Checks the headers of a well-behaved client; returns its client id.
    fn client_id<T>(&self, request: &Request<T>) -> String {
        let md = request.metadata();
        let get = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
        let good = !get("x-mq-client-id").is_empty()
            && get("x-mq-language") == "RUST"
            && get("x-mq-protocol-version") == "2.0.0"
            && !get("x-mq-client-version").is_empty()
            && humantime::parse_rfc3339(get("x-mq-date-time")).is_ok();
        if !good {
            self.seen.bad_headers.fetch_add(1, Ordering::SeqCst);
        }
        get("x-mq-client-id").to_owned()
    }
}

#[tonic::async_trait]
impl MessagingService for Fake {
    async fn query_route(
        &self,
        request: Request<QueryRouteRequest>,
    ) -> Result<Response<QueryRouteResponse>, GrpcStatus> {
        self.client_id(&request);
        let topic = request.into_inner().topic.unwrap_or_default();
        if topic.name != TOPIC {
            return Ok(Response::new(QueryRouteResponse {
                status: status(Code::TopicNotFound),
                message_queues: vec![],
            }));
        }
        let message_queues = (0..4)
            .map(|id| MessageQueue {
                topic: Some(topic.clone()),
                id,
                permission: Permission::ReadWrite as i32,
                broker: Some(Broker {
                    name: "fake".into(),
                    id: 0,
                    endpoints: None,
                }),
                accept_message_types: vec![MessageType::Normal as i32],
            })
            .collect();
        Ok(Response::new(QueryRouteResponse {
            status: ok(),
            message_queues,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, GrpcStatus> {
        self.client_id(&request);
        self.seen.heartbeats.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(HeartbeatResponse { status: ok() }))
    }

    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, GrpcStatus> {
        let client = self.client_id(&request);
        let call = self.seen.send_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(Reject::Calls(every)) = self.reject
            && call % every == every - 1
        {
            return Err(GrpcStatus::resource_exhausted("the fake is busy"));
        }
        self.seen
            .send_clients
            .lock()
            .expect("fake state lock")
            .insert(client);
        let mut entries = Vec::new();
        for m in request.into_inner().messages {
            let n = self.seen.next.fetch_add(1, Ordering::SeqCst);
            let id = m
                .system_properties
                .as_ref()
                .map(|p| p.message_id.clone())
                .unwrap_or_default();
            if !self
                .seen
                .message_ids
                .lock()
                .expect("fake state lock")
                .insert(id.clone())
            {
                self.seen.duplicate_ids.fetch_add(1, Ordering::SeqCst);
            }
            self.seen
                .body_sizes
                .lock()
                .expect("fake state lock")
                .insert(m.body.len());
            let code = match self.reject {
                Some(Reject::Messages(every, code)) if n % every == every - 1 => code,
                _ => Code::Ok,
            };
            if code == Code::Ok {
                self.seen
                    .queue
                    .lock()
                    .expect("fake state lock")
                    .push_back(m);
                self.seen.stored.fetch_add(1, Ordering::SeqCst);
                self.seen.arrived.notify_waiters();
            } else {
                self.seen.rejected.fetch_add(1, Ordering::SeqCst);
            }
            entries.push(SendResultEntry {
                status: status(code),
                message_id: id,
                transaction_id: String::new(),
                offset: n as i64,
                recall_handle: String::new(),
            });
        }
        let codes: HashSet<i32> = entries
            .iter()
            .filter_map(|e| e.status.as_ref().map(|s| s.code))
            .collect();
        let top = if codes.len() == 1 {
            entries[0].status.clone()
        } else {
            status(Code::MultipleResults)
        };
        Ok(Response::new(SendMessageResponse {
            status: top,
            entries,
        }))
    }

    async fn query_assignment(
        &self,
        _: Request<QueryAssignmentRequest>,
    ) -> Result<Response<QueryAssignmentResponse>, GrpcStatus> {
        Err(GrpcStatus::unimplemented("not in the fake"))
    }

    type ReceiveMessageStream = FrameStream<ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        request: Request<ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, GrpcStatus> {
        self.client_id(&request);
        let r = request.into_inner();
        assert_eq!(r.batch_size, 32);
        assert_eq!(r.invisible_duration.map(|d| d.seconds), Some(30));
        assert_eq!(r.group.map(|g| g.name).as_deref(), Some("bench-group"));
        let polling = r.long_polling_timeout.map_or(5, |d| d.seconds.clamp(1, 5));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(polling as u64);
        let batch = loop {
            let notified = self.seen.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let taken: Vec<Message> = {
                let mut q = self.seen.queue.lock().expect("fake state lock");
                let n = q.len().min(r.batch_size as usize);
                q.drain(..n).collect()
            };
            if !taken.is_empty() {
                break taken;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break Vec::new();
            }
        };
        let mut frames = Vec::new();
        if batch.is_empty() {
            frames.push(Ok(ReceiveMessageResponse {
                content: Some(receive_message_response::Content::Status(Status {
                    code: Code::MessageNotFound as i32,
                    message: "no new message".into(),
                })),
            }));
        } else {
            frames.push(Ok(ReceiveMessageResponse {
                content: Some(receive_message_response::Content::Status(Status {
                    code: Code::Ok as i32,
                    message: String::new(),
                })),
            }));
            self.seen
                .delivered
                .fetch_add(batch.len() as u64, Ordering::SeqCst);
            for mut m in batch {
                let props = m.system_properties.get_or_insert_default();
                let handle = format!("rh-{}", props.message_id);
                self.seen
                    .handles
                    .lock()
                    .expect("fake state lock")
                    .insert(handle.clone(), props.message_id.clone());
                props.receipt_handle = Some(handle);
                props.delivery_attempt = Some(1);
                frames.push(Ok(ReceiveMessageResponse {
                    content: Some(receive_message_response::Content::Message(m)),
                }));
            }
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(frames))))
    }

    async fn ack_message(
        &self,
        request: Request<AckMessageRequest>,
    ) -> Result<Response<AckMessageResponse>, GrpcStatus> {
        self.client_id(&request);
        let r = request.into_inner();
        assert_eq!(r.topic.map(|t| t.name).as_deref(), Some(TOPIC));
        let entries = r
            .entries
            .into_iter()
            .map(|e| {
                let known = self
                    .seen
                    .handles
                    .lock()
                    .expect("fake state lock")
                    .remove(&e.receipt_handle)
                    .is_some();
                if known {
                    self.seen.acked.fetch_add(1, Ordering::SeqCst);
                }
                AckMessageResultEntry {
                    message_id: e.message_id,
                    receipt_handle: e.receipt_handle,
                    status: status(if known {
                        Code::Ok
                    } else {
                        Code::InvalidReceiptHandle
                    }),
                }
            })
            .collect();
        Ok(Response::new(AckMessageResponse {
            status: ok(),
            entries,
        }))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        _: Request<ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<ForwardMessageToDeadLetterQueueResponse>, GrpcStatus> {
        Err(GrpcStatus::unimplemented("not in the fake"))
    }

    type PullMessageStream = FrameStream<PullMessageResponse>;

    async fn pull_message(
        &self,
        _: Request<PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, GrpcStatus> {
        Err(GrpcStatus::unimplemented("not in the fake"))
    }

    async fn update_offset(
        &self,
        _: Request<UpdateOffsetRequest>,
    ) -> Result<Response<UpdateOffsetResponse>, GrpcStatus> {
        Err(GrpcStatus::unimplemented("not in the fake"))
    }

    async fn get_offset(
        &self,
        _: Request<GetOffsetRequest>,
    ) -> Result<Response<GetOffsetResponse>, GrpcStatus> {
        Err(GrpcStatus::unimplemented("not in the fake"))
    }

    async fn query_offset(
        &self,
        _: Request<QueryOffsetRequest>,
    ) -> Result<Response<QueryOffsetResponse>, GrpcStatus> {
        Err(GrpcStatus::unimplemented("not in the fake"))
    }

    async fn end_transaction(
        &self,
        _: Request<EndTransactionRequest>,
    ) -> Result<Response<EndTransactionResponse>, GrpcStatus> {
        Err(GrpcStatus::unimplemented("not in the fake"))
    }

    type TelemetryStream = FrameStream<TelemetryCommand>;

    async fn telemetry(
        &self,
        request: Request<tonic::Streaming<TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, GrpcStatus> {
        let client = self.client_id(&request);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(command)) = inbound.message().await {
                if let Some(telemetry_command::Command::Settings(mut settings)) = command.command {
                    seen.settings
                        .lock()
                        .expect("fake state lock")
                        .push((client.clone(), settings.client_type.unwrap_or_default()));
                    if let Some(settings::PubSub::Publishing(p)) = settings.pub_sub.as_mut() {
                        p.max_body_size = 4 << 20;
                    }
                    let echo = TelemetryCommand {
                        status: ok(),
                        command: Some(telemetry_command::Command::Settings(settings)),
                    };
                    if tx.send(Ok(echo)).await.is_err() {
                        break;
                    }
                }
            }
            seen.telemetry_closed.fetch_add(1, Ordering::SeqCst);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn notify_client_termination(
        &self,
        request: Request<NotifyClientTerminationRequest>,
    ) -> Result<Response<NotifyClientTerminationResponse>, GrpcStatus> {
        let client = self.client_id(&request);
        self.seen
            .terminated
            .lock()
            .expect("fake state lock")
            .push(client);
        Ok(Response::new(NotifyClientTerminationResponse {
            status: ok(),
        }))
    }

    async fn change_invisible_duration(
        &self,
        _: Request<ChangeInvisibleDurationRequest>,
    ) -> Result<Response<ChangeInvisibleDurationResponse>, GrpcStatus> {
        Err(GrpcStatus::unimplemented("not in the fake"))
    }

    async fn recall_message(
        &self,
        _: Request<RecallMessageRequest>,
    ) -> Result<Response<RecallMessageResponse>, GrpcStatus> {
        Err(GrpcStatus::unimplemented("not in the fake"))
    }

    async fn sync_lite_subscription(
        &self,
        _: Request<SyncLiteSubscriptionRequest>,
    ) -> Result<Response<SyncLiteSubscriptionResponse>, GrpcStatus> {
        Err(GrpcStatus::unimplemented("not in the fake"))
    }
}

/// Starts a fake on 127.0.0.1:0; returns its address and what it sees.
async fn start(reject: Option<Reject>) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let seen = Arc::new(Seen::default());
    let fake = Fake {
        seen: seen.clone(),
        reject,
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MessagingServiceServer::new(fake))
            // TCP_NODELAY as the proxy sets it: with Nagle's algorithm the fake's multi-frame
            // answers wait for the client's delayed ACK, and consumers fall far behind.
            .serve_with_incoming(TcpListenerStream::new(listener).map(|s| {
                let s = s?;
                s.set_nodelay(true)?;
                Ok::<_, std::io::Error>(s)
            })),
    );
    (addr.to_string(), seen)
}

fn args(endpoint: &str) -> BenchArgs {
    BenchArgs {
        endpoint: endpoint.to_owned(),
        topic: TOPIC.to_owned(),
        group: "bench-group".to_owned(),
        client: ClientKind::Raw,
        compare: false,
        producers: 2,
        consumers: 2,
        backlog: false,
        message_size: ByteSize(256),
        rate: 0,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        batch: 1,
        inflight: 8,
        threads: 1,
        no_progress: true,
        json: None,
        spawn: None,
        comet_bin: None,
        metrics_overhead: None,
        server_set: Vec::new(),
        access_key: None,
        secret_key: None,
        auth_compare: false,
        auth_rounds: 1,
        lite_topics: None,
    }
}

fn assert_ordered(name: &str, l: &bench::LatencyReport) {
    assert!(l.samples > 0, "{name}: {l:?}");
    assert!(l.p50 > 0.0, "{name}: {l:?}");
    assert!(
        l.p50 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max,
        "{name}: {l:?}"
    );
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_producers_and_consumers_when_benchmarking_should_report_what_the_server_saw() {
    let (endpoint, seen) = start(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let json_path = dir.path().join("report.json");
    let mut a = args(&endpoint);
    a.json = Some(json_path.clone());
    let mut out = Vec::new();
    let report: BenchReport = bench::run_with(a, &mut out).await.expect("bench run");

    // Sends: every message the fake stored was counted, warmup included; the window holds most.
    assert!(report.sent.count > 0, "{report:#?}");
    assert!(report.sent.errors.is_empty(), "{report:#?}");
    assert_eq!(report.sent.total, get(&seen.stored));
    assert!(report.sent.count <= report.sent.total);
    assert!(report.sent.msgs_per_s > 0.0 && report.sent.mb_per_s > 0.0);
    assert_eq!(get(&seen.duplicate_ids), 0, "message ids must be unique");
    assert_eq!(
        *seen.body_sizes.lock().expect("fake state lock"),
        HashSet::from([256])
    );

    // Receives: everything delivered was counted and acknowledged; the drain caught up.
    assert_eq!(
        report.received.total + report.received.foreign,
        get(&seen.delivered)
    );
    assert_eq!(report.received.foreign, 0);
    assert_eq!(get(&seen.acked), get(&seen.delivered));
    assert_eq!(report.received.count, report.sent.count, "{report:#?}");
    assert_eq!(report.received.total, report.sent.total, "{report:#?}");
    assert!(report.received.errors.is_empty(), "{report:#?}");

    assert_ordered(
        "send",
        report.send_latency_ms.as_ref().expect("send latency"),
    );
    assert_ordered("e2e", report.e2e_latency_ms.as_ref().expect("e2e latency"));
    assert_eq!(
        report.e2e_latency_ms.as_ref().expect("e2e latency").samples,
        report.received.count
    );
    assert!(report.host.cores >= 1);
    // One shared by the four clients, one for the producers' sends.
    assert_eq!(report.config.connections, 2);
    assert_eq!(
        (report.config.write_queues, report.config.read_queues),
        (4, 4)
    );

    // A well-behaved client: headers, settings per client, heartbeats, orderly goodbye.
    assert_eq!(get(&seen.bad_headers), 0);
    let settings = seen.settings.lock().expect("fake state lock").clone();
    let of = |t: ClientType| settings.iter().filter(|(_, ct)| *ct == t as i32).count();
    assert_eq!(
        (of(ClientType::Producer), of(ClientType::SimpleConsumer)),
        (2, 2),
        "{settings:?}"
    );
    let ids: HashSet<&String> = settings.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 4, "one client id per bench client");
    assert_eq!(seen.send_clients.lock().expect("fake state lock").len(), 2);
    assert!(get(&seen.heartbeats) >= 4);
    let terminated: HashSet<String> = seen
        .terminated
        .lock()
        .expect("fake state lock")
        .iter()
        .cloned()
        .collect();
    assert_eq!(terminated, ids.into_iter().cloned().collect::<HashSet<_>>());
    assert_eq!(get(&seen.telemetry_closed), 4);

    // The same report on `out` and in the --json file.
    let printed: serde_json::Value = serde_json::from_slice(&out).expect("JSON on out");
    // (Compared through text: floats are parsed back the same way on both sides.)
    let expected: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&report).expect("encode")).expect("decode");
    assert_eq!(printed, expected);
    let filed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("report file"))
            .expect("decode file");
    assert_eq!(filed, printed);
    for key in [
        "config",
        "host",
        "duration_s",
        "sent",
        "received",
        "send_latency_ms",
        "e2e_latency_ms",
    ] {
        assert!(printed.get(key).is_some(), "missing {key}");
    }
    assert!(printed["e2e_latency_ms"]["p999"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_target_rate_when_benchmarking_should_honour_it() {
    let (endpoint, seen) = start(None).await;
    let mut a = args(&endpoint);
    a.rate = 200;
    a.consumers = 0;
    let report = bench::run_with(a, std::io::sink())
        .await
        .expect("bench run");
    assert!(
        (150..=250).contains(&report.sent.count),
        "200 msg/s for 1 s sent {}",
        report.sent.count
    );
    assert!((150.0..=250.0).contains(&report.sent.msgs_per_s));
    // Warmup (0.2 s at 200/s) plus window.
    assert!(
        (190..=290).contains(&get(&seen.stored)),
        "{}",
        get(&seen.stored)
    );
    assert_eq!(report.received.count, 0);
    assert!(report.e2e_latency_ms.is_none());
    assert_eq!(get(&seen.delivered), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_server_rejecting_some_sends_when_benchmarking_should_count_them_by_code() {
    let (endpoint, seen) = start(Some(Reject::Messages(4, Code::TooManyRequests))).await;
    let mut a = args(&endpoint);
    a.rate = 400;
    a.batch = 4;
    a.consumers = 1;
    let report = bench::run_with(a, std::io::sink())
        .await
        .expect("bench run");
    let rejected = report
        .sent
        .errors
        .get("TOO_MANY_REQUESTS")
        .copied()
        .unwrap_or(0);
    assert!(rejected > 0, "{report:#?}");
    assert_eq!(report.sent.errors.len(), 1, "{report:#?}");
    let share = rejected as f64 / (rejected + report.sent.count) as f64;
    assert!(
        (0.2..=0.3).contains(&share),
        "rejected share {share}: {report:#?}"
    );
    assert_eq!(report.sent.total, get(&seen.stored));
    assert_eq!(report.received.count, report.sent.count);
    assert_eq!(
        report.received.total + report.received.foreign,
        get(&seen.delivered)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_server_failing_some_send_calls_when_benchmarking_should_count_them_as_grpc_errors()
{
    let (endpoint, seen) = start(Some(Reject::Calls(20))).await;
    let mut a = args(&endpoint);
    a.rate = 400;
    a.consumers = 0;
    let report = bench::run_with(a, std::io::sink())
        .await
        .expect("bench run");
    let failed = report
        .sent
        .errors
        .get("grpc:RESOURCE_EXHAUSTED")
        .copied()
        .unwrap_or(0);
    assert!(failed > 0, "{report:#?}");
    assert_eq!(report.sent.errors.len(), 1, "{report:#?}");
    assert!(report.sent.count > 0, "{report:#?}");
    assert_eq!(report.sent.total, get(&seen.stored));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_server_rejecting_every_send_when_benchmarking_should_fail_after_the_warmup() {
    let (endpoint, seen) = start(Some(Reject::Messages(1, Code::Forbidden))).await;
    let mut a = args(&endpoint);
    a.duration = Duration::from_secs(60);
    let started = std::time::Instant::now();
    let e = bench::run_with(a, std::io::sink())
        .await
        .expect_err("bench run fails");
    let text = format!("{e:#}");
    assert!(text.contains("no message could be sent"), "{text}");
    assert!(text.contains("FORBIDDEN"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "should stop after the warmup"
    );
    assert!(get(&seen.rejected) > 0);
    // Sessions are closed even on failure.
    assert_eq!(seen.terminated.lock().expect("fake state lock").len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_missing_topic_when_benchmarking_should_say_how_to_create_it() {
    let (endpoint, seen) = start(None).await;
    let mut a = args(&endpoint);
    a.topic = "nope".to_owned();
    let e = bench::run_with(a, std::io::sink())
        .await
        .expect_err("bench run fails");
    let text = format!("{e:#}");
    assert!(
        text.contains("comet topic create nope --queues 8"),
        "{text}"
    );
    assert!(
        seen.settings.lock().expect("fake state lock").is_empty(),
        "no client should start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_no_server_when_benchmarking_should_fail_to_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = listener.local_addr().expect("local addr").to_string();
    drop(listener);
    let e = bench::run_with(args(&endpoint), std::io::sink())
        .await
        .expect_err("nothing listens");
    let text = format!("{e:#}");
    assert!(text.contains("cannot connect"), "{text}");
}
