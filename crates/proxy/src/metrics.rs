//! The proxy's RocketMQ metrics: messages and bytes in by topic and message type (with the
//! message size histogram), messages and bytes out by topic and consumer group, and the
//! producer and consumer connections. RPC latency is recorded by `comet_observe::rpc` around
//! the server; handlers only tag responses with their code ([`tag_code`]).
//!
//! Out counts every message once per delivery, whatever the path: a ReceiveMessage (POP:
//! normal, FIFO, broadcast, retried and resent messages, with or without a long poll) counts a
//! message when its frame is handed to the transport, so one popped and given back unsent
//! counts only when it is delivered again; a PullMessage counts the messages of its answer.
//!
//! Hot path: a send looks its topic up once per request ([`ProxyMetrics::topic`]) and adds to
//! sharded counters; observable counters sum them at collection time.

use std::sync::{Arc, OnceLock};

use comet_observe::rpc::ResponseCode;
use comet_observe::{Family, KeyValue, Observer, ShardedCounter};
use comet_proto::apache::rocketmq::v2::{Code, MessageType};
use opentelemetry::metrics::{BoundHistogram, Histogram};

/// Counts the connected clients: (producers, consumers).
pub(crate) type ConnectionCount = Arc<dyn Fn() -> (usize, usize) + Send + Sync>;

/// RocketMQ's `rocketmq_message_size` buckets, in bytes.
const MESSAGE_SIZE_BUCKETS: [f64; 6] = [
    1024.0,
    4096.0,
    512.0 * 1024.0,
    1024.0 * 1024.0,
    2.0 * 1024.0 * 1024.0,
    4.0 * 1024.0 * 1024.0,
];

/// RocketMQ's `message_type` label values, by `MessageType` number.
const TYPE_LABELS: [&str; 5] = ["normal", "normal", "fifo", "delay", "transaction"];

/// Counters of one (topic, message type).
pub(crate) struct TypeSeries {
    attrs: Vec<KeyValue>,
    messages: ShardedCounter,
    bytes: ShardedCounter,
    size: BoundHistogram<u64>,
}

impl TypeSeries {
    /// Counts one stored message of `body` bytes.
    pub(crate) fn sent(&self, body: usize) {
        let body = u64::try_from(body).unwrap_or(u64::MAX);
        self.messages.add(1);
        self.bytes.add(body);
        self.size.record(body);
    }
}

/// The series of one topic, one per message type, made on first use.
pub(crate) struct TopicSeries {
    topic: String,
    per_type: [OnceLock<TypeSeries>; 5],
}

/// Counters of one (topic, consumer group).
pub(crate) struct OutSeries {
    attrs: Vec<KeyValue>,
    messages: ShardedCounter,
    bytes: ShardedCounter,
}

impl OutSeries {
    /// Counts one message of `body` bytes handed to the consumer.
    pub(crate) fn delivered(&self, body: usize) {
        self.messages.add(1);
        self.bytes.add(u64::try_from(body).unwrap_or(u64::MAX));
    }
}

/// Everything the proxy records.
pub(crate) struct ProxyMetrics {
    observer: Observer,
    message_size: Histogram<u64>,
    topics: Arc<Family<String, TopicSeries>>,
    out: Arc<Family<(String, String), OutSeries>>,
    /// Observable instruments live as long as the proxy.
    instruments: OnceLock<Vec<Box<dyn std::any::Any + Send + Sync>>>,
}

impl ProxyMetrics {
    pub(crate) fn new(observer: &Observer) -> Self {
        let message_size = observer
            .meter()
            .u64_histogram("rocketmq_message_size")
            .with_description("Size of the messages produced")
            .with_unit("bytes")
            .with_boundaries(MESSAGE_SIZE_BUCKETS.to_vec())
            .build();
        ProxyMetrics {
            observer: observer.clone(),
            message_size,
            topics: Arc::default(),
            out: Arc::default(),
            instruments: OnceLock::new(),
        }
    }

    /// The series of `topic` (qualified name), looked up once per request.
    pub(crate) fn topic(&self, topic: &str) -> Arc<TopicSeries> {
        self.topics.get_or_insert_with(topic, || {
            (
                topic.to_owned(),
                TopicSeries {
                    topic: topic.to_owned(),
                    per_type: Default::default(),
                },
            )
        })
    }

    /// The series of `topic` for messages of `message_type`.
    pub(crate) fn typed<'a>(&self, topic: &'a TopicSeries, t: MessageType) -> &'a TypeSeries {
        let i = usize::try_from(t as i32).unwrap_or(0).min(4);
        topic.per_type[i].get_or_init(|| {
            let attrs = self.observer.labels(&[
                KeyValue::new("topic", topic.topic.clone()),
                KeyValue::new("message_type", TYPE_LABELS[i]),
            ]);
            TypeSeries {
                size: self.message_size.bind(&attrs),
                attrs,
                messages: ShardedCounter::new(),
                bytes: ShardedCounter::new(),
            }
        })
    }

    /// The series of messages of `topic` delivered to `group` (qualified names), looked up
    /// once per answer.
    pub(crate) fn out(&self, topic: &str, group: &str) -> Arc<OutSeries> {
        let key = (topic.to_owned(), group.to_owned());
        self.out.get_or_insert_with(&key, || {
            let attrs = self.observer.labels(&[
                KeyValue::new("topic", topic.to_owned()),
                KeyValue::new("consumer_group", group.to_owned()),
            ]);
            (
                key.clone(),
                OutSeries {
                    attrs,
                    messages: ShardedCounter::new(),
                    bytes: ShardedCounter::new(),
                },
            )
        })
    }

    /// Registers the observable instruments (once); `connections` counts the clients at
    /// collection time.
    pub(crate) fn register(&self, connections: ConnectionCount) {
        let meter = self.observer.meter();
        let mut kept: Vec<Box<dyn std::any::Any + Send + Sync>> = Vec::new();
        let each_typed = |f: fn(&TypeSeries) -> u64| {
            let topics = Arc::clone(&self.topics);
            move |o: &dyn opentelemetry::metrics::AsyncInstrument<u64>| {
                topics.for_each(|_, t| {
                    for s in t.per_type.iter().filter_map(OnceLock::get) {
                        o.observe(f(s), &s.attrs);
                    }
                });
            }
        };
        kept.push(Box::new(
            meter
                .u64_observable_counter("rocketmq_messages_in_total")
                .with_description("Messages produced")
                .with_callback(each_typed(|s| s.messages.sum()))
                .build(),
        ));
        kept.push(Box::new(
            meter
                .u64_observable_counter("rocketmq_throughput_in_total")
                .with_description("Bytes of message bodies produced")
                .with_unit("bytes")
                .with_callback(each_typed(|s| s.bytes.sum()))
                .build(),
        ));
        let each_out = |f: fn(&OutSeries) -> u64| {
            let out = Arc::clone(&self.out);
            move |o: &dyn opentelemetry::metrics::AsyncInstrument<u64>| {
                out.for_each(|_, s| o.observe(f(s), &s.attrs));
            }
        };
        kept.push(Box::new(
            meter
                .u64_observable_counter("rocketmq_messages_out_total")
                .with_description("Messages consumed")
                .with_callback(each_out(|s| s.messages.sum()))
                .build(),
        ));
        kept.push(Box::new(
            meter
                .u64_observable_counter("rocketmq_throughput_out_total")
                .with_description("Bytes of message bodies consumed")
                .with_unit("bytes")
                .with_callback(each_out(|s| s.bytes.sum()))
                .build(),
        ));
        for (name, description, want_producers) in [
            (
                "rocketmq_producer_connections",
                "Producers connected to this proxy",
                true,
            ),
            (
                "rocketmq_consumer_connections",
                "Consumers connected to this proxy",
                false,
            ),
        ] {
            let connections = Arc::clone(&connections);
            let attrs = self.observer.labels(&[]);
            kept.push(Box::new(
                meter
                    .i64_observable_gauge(name)
                    .with_description(description)
                    .with_callback(move |o| {
                        let (producers, consumers) = connections();
                        let n = if want_producers { producers } else { consumers };
                        o.observe(i64::try_from(n).unwrap_or(i64::MAX), &attrs);
                    })
                    .build(),
            ));
        }
        let _ = self.instruments.set(kept);
    }
}

/// Tags `response` with its top-level RocketMQ code for the RPC latency histogram.
pub(crate) fn tag_code<T>(response: &mut tonic::Response<T>, code: i32) {
    let name = Code::try_from(code).map_or("UNKNOWN", |c| c.as_str_name());
    response.extensions_mut().insert(ResponseCode(name));
}
