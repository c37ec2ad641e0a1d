//! OTLP export from a Cluster-mode deployment (controller, broker and proxy nodes in this
//! process, talking gRPC) to an in-test collector (a tonic server of the OTLP collector
//! services): the metrics arrive, and one trace holds the proxy's span and the broker's span
//! of a send under the client's trace id. Its own test binary: it installs the process's
//! global subscriber with span export.

use std::sync::Arc;
use std::time::Duration;

use comet::admin::TopicType;
use comet_observe::logging::{LogFormat, LogSetup, TraceSetup};
use comet_proto::apache::rocketmq::v2 as pb;
use comet_tests::raw::{self, resource as res};
use comet_tests::{Mode, TestCluster, uuid_like};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use parking_lot::Mutex;
use tokio::sync::watch;

/// Bound of every wait in this file.
const LIMIT: Duration = Duration::from_secs(30);

/// One received span: trace id (hex), name, `role` attribute.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    name: String,
    role: Option<String>,
}

/// What the collector received; `changed` ticks on every export.
#[derive(Default)]
struct Received {
    spans: Mutex<Vec<Span>>,
    metric_names: Mutex<Vec<String>>,
    changed: Option<watch::Sender<u64>>,
}

#[derive(Clone)]
struct Collector(Arc<Received>);

impl Collector {
    fn tick(&self) {
        if let Some(tx) = &self.0.changed {
            tx.send_modify(|n| *n += 1);
        }
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.spans.lock();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let role = s
                        .attributes
                        .iter()
                        .find(|kv| kv.key == "role")
                        .and_then(|kv| kv.value.as_ref())
                        .and_then(|v| match &v.value {
                            Some(Value::StringValue(s)) => Some(s.clone()),
                            _ => None,
                        });
                    spans.push(Span {
                        trace_id: hex::encode(&s.trace_id),
                        name: s.name,
                        role,
                    });
                }
            }
        }
        drop(spans);
        self.tick();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut names = self.0.metric_names.lock();
        for rm in request.into_inner().resource_metrics {
            for sm in rm.scope_metrics {
                names.extend(sm.metrics.into_iter().map(|m| m.name));
            }
        }
        drop(names);
        self.tick();
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Waits (bounded) until `check` holds on what the collector received.
async fn wait_for(
    what: &str,
    received: &Received,
    ticks: &mut watch::Receiver<u64>,
    check: impl Fn(&Received) -> bool,
) {
    let waited = tokio::time::timeout(LIMIT, async {
        while !check(received) {
            ticks.changed().await.expect("collector runs");
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "{what} within {LIMIT:?}; spans: {:?}; metrics: {:?}",
        received.spans.lock(),
        received.metric_names.lock()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_otlp_endpoints_should_export_metrics_and_one_trace_from_client_to_broker() {
    // The collector.
    let (tx, mut ticks) = watch::channel(0u64);
    let received = Arc::new(Received {
        changed: Some(tx),
        ..Received::default()
    });
    let collector = Collector(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    // Span export for this process (RPC spans are INFO; other logs stay at WARN).
    let log = comet_observe::logging::init(&LogSetup {
        level: "warn,comet_observe=info,comet_proxy::service::send=info".to_owned(),
        format: LogFormat::Text,
        traces: Some(TraceSetup {
            otlp_endpoint: endpoint.clone(),
            sample_ratio: 1.0,
            service_name: "comet-test".to_owned(),
        }),
    })
    .expect("subscriber installed");
    let otlp = endpoint.clone();
    let cluster = TestCluster::start_with(Mode::Cluster, move |cfg| {
        cfg.metrics.otlp_endpoint = otlp.clone();
    })
    .await;
    let topic = format!("traced-{}", uuid_like());
    cluster.create_topic(&topic, 1, TopicType::Normal).await;

    // A send carrying the client's trace context.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = raw::request(
        "otlp-test@1#1",
        pb::SendMessageRequest {
            messages: vec![pb::Message {
                topic: res(&topic),
                user_properties: Default::default(),
                system_properties: Some(pb::SystemProperties {
                    message_id: "ID-TRACED".to_owned(),
                    message_type: pb::MessageType::Normal as i32,
                    body_encoding: pb::Encoding::Identity as i32,
                    born_host: "tester".to_owned(),
                    ..Default::default()
                }),
                body: b"traced".to_vec().into(),
            }],
        },
    );
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .expect("ASCII"),
    );
    let reply = cluster
        .v2()
        .await
        .send_message(request)
        .await
        .expect("gRPC OK")
        .into_inner();
    assert_eq!(reply.status.map(|s| s.code), Some(pb::Code::Ok as i32));

    // Push what is buffered (both flushes block until their export answered).
    tokio::task::spawn_blocking(move || log.flush_traces())
        .await
        .expect("span flush");
    let proxy_metrics = cluster.nodes()[2].metrics().clone();
    tokio::task::spawn_blocking(move || proxy_metrics.flush())
        .await
        .expect("metrics flush");

    wait_for(
        "the proxy's and the broker's SendMessage spans in the client's trace",
        &received,
        &mut ticks,
        |r| {
            let spans = r.spans.lock();
            let in_trace = |role: &str| {
                spans.iter().any(|s| {
                    s.trace_id == trace_id
                        && s.name == "SendMessage"
                        && s.role.as_deref() == Some(role)
                })
            };
            in_trace("proxy") && in_trace("broker")
        },
    )
    .await;
    wait_for("the proxy's RocketMQ metrics", &received, &mut ticks, |r| {
        let names = r.metric_names.lock();
        ["rocketmq_messages_in_total", "rocketmq_rpc_latency"]
            .iter()
            .all(|n| names.iter().any(|m| m == n))
    })
    .await;
    cluster.stop().await;
}
