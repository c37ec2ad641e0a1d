//! Measures the SQL92 filter (parse and evaluation) and PullMessage throughput over a real
//! broker in a temporary directory, with no filter, a tag filter and a SQL filter that each
//! select 10% of the messages.
//!
//! ```sh
//! cargo run --release -p comet-broker --example filter_bench [-- MESSAGES]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use comet_broker::filter::{Filter, sql};
use comet_broker::{Broker, BrokerConfig};
use comet_proto::apache::rocketmq::v2::{
    Code, FilterExpression, FilterType, Message, MessageQueue, PullMessageRequest, Resource,
    SendMessageRequest, SystemProperties,
};
use comet_proto::comet::v1::broker_service_server::BrokerService;
use comet_proto::comet::v1::{ClusterMetadata, QueuePlacement, Topic};
use comet_store::Properties;

const EXPR: &str = "region = 'eu' AND price >= 100 AND TAGS IN ('red', 'blue')";

fn rate(n: usize, d: Duration) -> String {
    format!("{:.0}/s", n as f64 / d.as_secs_f64())
}

fn res(name: &str) -> Option<Resource> {
    Some(Resource {
        resource_namespace: String::new(),
        name: name.into(),
    })
}

fn micro() {
    let n = 200_000;
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(sql::parse(std::hint::black_box(EXPR)).unwrap());
    }
    println!("parse {EXPR:?}: {}", rate(n, start.elapsed()));

    let filter = Filter::sql(EXPR).unwrap();
    let props = |region: &str, price: &str| Properties {
        tag: Some("red".into()),
        user: BTreeMap::from([
            ("region".to_owned(), region.to_owned()),
            ("price".to_owned(), price.to_owned()),
            ("customer".to_owned(), "c-42".to_owned()),
        ]),
        ..Default::default()
    };
    for (what, p) in [
        ("matching", props("eu", "150")),
        ("failing first term", props("us", "150")),
    ] {
        let n = 2_000_000;
        let start = Instant::now();
        let mut hits = 0usize;
        for _ in 0..n {
            hits += usize::from(filter.matches(std::hint::black_box(&p)));
        }
        assert!(hits == 0 || hits == n);
        println!("evaluate ({what}): {}", rate(n, start.elapsed()));
    }
}

async fn pull_all(
    svc: &comet_broker::BrokerGrpc,
    total: i64,
    filter: Option<FilterExpression>,
) -> (usize, Duration) {
    let start = Instant::now();
    let (mut offset, mut got) = (0i64, 0usize);
    while offset < total {
        let r = svc
            .pull_message(tonic::Request::new(PullMessageRequest {
                group: res("bench"),
                message_queue: Some(MessageQueue {
                    topic: res("bench"),
                    id: 0,
                    ..Default::default()
                }),
                offset,
                batch_size: 32,
                filter_expression: filter.clone(),
                long_polling_timeout: None,
            }))
            .await
            .unwrap()
            .into_inner();
        let code = r.status.unwrap().code;
        assert!(code == Code::Ok as i32 || code == Code::MessageNotFound as i32);
        got += r.messages.len();
        offset = r.next_offset;
    }
    (got, start.elapsed())
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .map_or(200_000, |a| a.parse().expect("MESSAGES is a number"));
    micro();

    let dir = tempfile::tempdir().unwrap();
    let cfg = BrokerConfig {
        data_dir: dir.path().to_owned(),
        segment_size: 256 << 20,
        ..Default::default()
    };
    let md = ClusterMetadata {
        topics: vec![Topic {
            name: "bench".into(),
            placements: vec![QueuePlacement {
                broker_set: cfg.broker_set.clone(),
                queue_count: 1,
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(md));
    let broker = Broker::open(cfg, rx).await.unwrap();
    let svc = broker.service();
    let body = bytes::Bytes::from(vec![b'x'; 256]);
    for chunk in (0..total).collect::<Vec<_>>().chunks(256) {
        let messages = chunk
            .iter()
            .map(|i| Message {
                topic: res("bench"),
                user_properties: [
                    (
                        "region".to_owned(),
                        if i % 10 == 0 { "eu" } else { "us" }.to_owned(),
                    ),
                    ("price".to_owned(), (i % 1000).to_string()),
                ]
                .into(),
                system_properties: Some(SystemProperties {
                    tag: Some(if i % 10 == 0 { "red" } else { "green" }.to_owned()),
                    message_id: format!("m{i}"),
                    ..Default::default()
                }),
                body: body.clone(),
            })
            .collect();
        let r = svc
            .send_message(tonic::Request::new(SendMessageRequest { messages }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status.unwrap().code, Code::Ok as i32);
    }
    // Wait (bounded) until everything is dispatched.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = svc
            .query_offset(tonic::Request::new(
                comet_proto::apache::rocketmq::v2::QueryOffsetRequest {
                    message_queue: Some(MessageQueue {
                        topic: res("bench"),
                        id: 0,
                        ..Default::default()
                    }),
                    query_offset_policy: 1,
                    timestamp: None,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        if r.offset >= total as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "dispatch stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let tag = FilterExpression {
        r#type: FilterType::Tag as i32,
        expression: "red".into(),
    };
    let sql = FilterExpression {
        r#type: FilterType::Sql as i32,
        expression: "region = 'eu' AND price >= 0".into(),
    };
    for (what, f) in [
        ("none", None),
        ("tag (10%)", Some(tag)),
        ("sql (10%)", Some(sql)),
    ] {
        let (got, d) = pull_all(&svc, total as i64, f).await;
        println!(
            "pull {total} messages, batch 32, filter {what}: {got} returned, {} scanned, {} returned",
            rate(total, d),
            rate(got, d)
        );
    }
    broker.shutdown().await.unwrap();
}
