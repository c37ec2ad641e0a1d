//! A whole cluster in the test process (3 controllers, 2 broker sets, 1 proxy; see
//! `comet_tests::cluster`) under faults, driven by the official RocketMQ 5 Rust client and raw
//! calls:
//! - the controller leader is killed while clients produce and consume: a new leader within
//!   seconds, no metadata lost, clients keep working, the old leader catches up on restart;
//!   with every controller down the proxy keeps serving from its last routes, and it
//!   re-subscribes when they return;
//! - a broker set is killed: its queues leave the routes within the lease, clients keep
//!   producing to the other set, and it comes back with its data;
//! - a topic spread over several broker sets: routes (gRPC and NameServer remoting, both
//!   encodings and JSON forms, from every controller) match its layout, sends reach both sets,
//!   and a broker set added at runtime serves new topics without restarting anything.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use comet::admin::{self, GroupCommand, GroupSpec};
use comet_controller::remoting::client::{RemotingClient, RequestStyle};
use comet_controller::remoting::{RemotingCommand, SerializeType, request_code, response_code};
use comet_proto::apache::rocketmq::v2 as pb;
use comet_proto::comet::v1 as cpb;
use comet_tests::cluster::{WAIT, broker_set_alive};
use comet_tests::{Cluster, ClusterBuilder, client, raw};
use parking_lot::Mutex;
use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use rocketmq::{Producer, SimpleConsumer};
use tokio::sync::watch;
use tokio::time::Instant;

/// Attempts per message before a send counts as failed.
const SEND_ATTEMPTS: usize = 10;
/// Pace of the producer (a load shape, not a wait).
const SEND_EVERY: Duration = Duration::from_millis(10);
/// Invisible time of received messages: short, so unacked ones come back quickly.
const INVISIBLE: Duration = Duration::from_secs(3);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The shared client options with a shorter long poll, so failover rounds turn quickly.
fn client_option(cluster: &Cluster) -> ClientOption {
    let mut o = client::option(&cluster.access_url());
    o.set_long_polling_timeout(Duration::from_secs(1));
    o
}

/// Creates `name` with the given placements through the controllers (following the leader)
/// and waits until every node routes it.
async fn create_topic(cluster: &Cluster, name: &str, placements: &[(&str, u32)]) {
    let client = comet::controller_client::ControllerClient::new(cluster.controller_addrs())
        .expect("client");
    let topic = cpb::Topic {
        name: name.to_owned(),
        message_type: cpb::TopicMessageType::Normal as i32,
        placements: placements
            .iter()
            .map(|(set, n)| cpb::QueuePlacement {
                broker_set: (*set).to_owned(),
                queue_count: *n,
            })
            .collect(),
        permission: 0,
        attributes: Default::default(),
    };
    client
        .call(|mut c| {
            let req = cpb::CreateTopicRequest {
                topic: Some(topic.clone()),
            };
            async move { c.create_topic(req).await }
        })
        .await
        .expect("topic created");
    cluster
        .wait_metadata(&format!("topic {name}"), |m| {
            m.topics.iter().any(|t| t.name == name)
        })
        .await;
}

/// Counters of a running producer and consumer.
#[derive(Default)]
struct Stats {
    /// Message ids of acknowledged sends.
    sent: Mutex<Vec<String>>,
    /// Send attempts that failed and were retried.
    send_retries: AtomicU64,
    /// Messages that failed every attempt.
    send_failures: AtomicU64,
    /// Distinct message ids received.
    received: Mutex<HashSet<String>>,
    /// Receive or ack calls that failed (the consumer retries).
    receive_errors: AtomicU64,
}

/// A producer and a consumer working on one topic until stopped.
struct Traffic {
    stats: Arc<Stats>,
    sent_count: watch::Receiver<usize>,
    received_count: watch::Receiver<usize>,
    stop_producing: watch::Sender<bool>,
    stop_consuming: watch::Sender<bool>,
    producer: tokio::task::JoinHandle<Producer>,
    consumer: tokio::task::JoinHandle<SimpleConsumer>,
}

impl Traffic {
    async fn start(cluster: &Cluster, topic: &str, group: &str) -> Traffic {
        let mut popt = ProducerOption::default();
        popt.set_topics(vec![topic]);
        let mut producer = Producer::new(popt, client_option(cluster)).expect("producer");
        producer.start().await.expect("producer starts");
        let mut copt = SimpleConsumerOption::default();
        copt.set_consumer_group(group);
        copt.set_topics(vec![topic]);
        let mut consumer = SimpleConsumer::new(copt, client_option(cluster)).expect("consumer");
        consumer.start().await.expect("consumer starts");

        let stats = Arc::new(Stats::default());
        let (sent_tx, sent_count) = watch::channel(0usize);
        let (received_tx, received_count) = watch::channel(0usize);
        let (stop_producing, mut stop_p) = watch::channel(false);
        let (stop_consuming, stop_c) = watch::channel(false);

        let s = stats.clone();
        let t = topic.to_owned();
        let producer = tokio::spawn(async move {
            let mut pace = tokio::time::interval(SEND_EVERY);
            let mut i = 0u64;
            while !*stop_p.borrow() {
                tokio::select! {
                    _ = pace.tick() => {}
                    _ = stop_p.changed() => break,
                }
                i += 1;
                let mut delivered = false;
                for attempt in 0..SEND_ATTEMPTS {
                    if attempt > 0 {
                        // Retry at the next tick, as a client's backoff would.
                        pace.tick().await;
                    }
                    let msg = MessageBuilder::builder()
                        .set_topic(&t)
                        .set_tag("load")
                        .set_body(format!("m-{i}").into_bytes())
                        .build()
                        .expect("message");
                    match producer.send(msg).await {
                        Ok(r) => {
                            let n = {
                                let mut sent = s.sent.lock();
                                sent.push(r.message_id().to_owned());
                                sent.len()
                            };
                            sent_tx.send_replace(n);
                            delivered = true;
                            break;
                        }
                        Err(e) => {
                            tracing::info!(error = %e, "send failed; retrying");
                            s.send_retries.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                if !delivered {
                    s.send_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            producer
        });

        let s = stats.clone();
        let t = topic.to_owned();
        let consumer = tokio::spawn(async move {
            let filter = FilterExpression::new(FilterType::Tag, "*");
            while !*stop_c.borrow() {
                match consumer.receive_with(&t, &filter, 32, INVISIBLE).await {
                    Ok(batch) => {
                        for m in &batch {
                            if consumer.ack(m).await.is_err() {
                                s.receive_errors.fetch_add(1, Ordering::Relaxed);
                            }
                            let n = {
                                let mut got = s.received.lock();
                                got.insert(m.message_id().to_owned());
                                got.len()
                            };
                            received_tx.send_replace(n);
                        }
                    }
                    Err(e) => {
                        // An empty long poll is reported as an error by this client.
                        tracing::debug!(error = %e, "receive returned no messages");
                        s.receive_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            consumer
        });
        Traffic {
            stats,
            sent_count,
            received_count,
            stop_producing,
            stop_consuming,
            producer,
            consumer,
        }
    }

    fn sent(&self) -> usize {
        *self.sent_count.borrow()
    }

    /// Waits (bounded) until at least `n` sends were acknowledged.
    async fn wait_sent(&mut self, n: usize, what: &str) {
        let ok = matches!(
            tokio::time::timeout(WAIT, self.sent_count.wait_for(|c| *c >= n)).await,
            Ok(Ok(_))
        );
        assert!(
            ok,
            "{what}: only {} of {n} sends acknowledged within {WAIT:?}",
            self.sent()
        );
    }

    /// Stops producing, waits until every acknowledged message was received, stops consuming.
    async fn finish(mut self) -> Arc<Stats> {
        self.stop_producing.send_replace(true);
        let producer = self.producer.await.expect("producer task");
        let total = self.stats.sent.lock().len();
        let deadline = Instant::now() + WAIT;
        loop {
            let missing: Vec<String> = {
                let got = self.stats.received.lock();
                self.stats
                    .sent
                    .lock()
                    .iter()
                    .filter(|id| !got.contains(*id))
                    .cloned()
                    .collect()
            };
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {total} acknowledged messages never arrived, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            );
            let _ = tokio::time::timeout_at(deadline, self.received_count.changed()).await;
        }
        self.stop_consuming.send_replace(true);
        let consumer = self.consumer.await.expect("consumer task");
        producer.shutdown().await.expect("producer shutdown");
        consumer.shutdown().await.expect("consumer shutdown");
        self.stats
    }
}

async fn create_group(cluster: &Cluster, group: &str) {
    admin::group(
        &cluster.admin(),
        &GroupCommand::Create(GroupSpec {
            name: group.to_owned(),
            max_retries: 16,
            fifo: false,
            broadcast: false,
            from_start: false,
            backoff: Some("customized:100ms".to_owned()),
            priority_percent: None,
        }),
    )
    .await
    .expect("group created");
}

fn applied_index(cluster: &Cluster, i: usize) -> u64 {
    cluster
        .controller_node(i)
        .and_then(|n| n.controller())
        .map(|c| {
            c.raft()
                .metrics()
                .borrow()
                .last_applied
                .map_or(0, |l| l.index)
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_clients_at_work_when_the_controller_leader_is_killed_should_fail_over_and_catch_up()
{
    init_tracing();
    let mut cluster = ClusterBuilder::new().start().await;
    create_topic(&cluster, "failover", &[("broker-a", 4), ("broker-b", 4)]).await;
    create_group(&cluster, "failover-group").await;
    let mut traffic = Traffic::start(&cluster, "failover", "failover-group").await;
    traffic.wait_sent(30, "before the kill").await;

    tracing::info!("--- kill the controller leader");
    let leader = cluster.wait_leader().await;
    let before = cluster
        .controller_node(leader)
        .and_then(|n| n.metadata())
        .expect("leader metadata")
        .borrow()
        .clone();
    let killed_at = Instant::now();
    cluster.kill_controller(leader).await;
    let new_leader = cluster.wait_leader().await;
    let elected_in = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    assert!(
        elected_in < Duration::from_secs(5),
        "new leader after {elected_in:?}"
    );

    tracing::info!("--- the new leader has every topic and group and takes writes");
    let got = cluster
        .controller_client(new_leader)
        .await
        .get_metadata(cpb::GetMetadataRequest {})
        .await
        .expect("linearizable read on the new leader")
        .into_inner();
    assert!(got.revision >= before.revision);
    assert_eq!(got.topics, before.topics, "no topic lost or changed");
    assert_eq!(got.groups, before.groups, "no group lost or changed");
    create_topic(&cluster, "after-failover", &[("broker-a", 2)]).await;
    let writable_in = killed_at.elapsed();
    let at_kill = traffic.sent();
    traffic.wait_sent(at_kill + 30, "after the failover").await;

    tracing::info!("--- restart the old leader: it catches up to the same log index");
    cluster.restart_controller(leader).await;
    let target = applied_index(&cluster, new_leader);
    let restarted = cluster
        .controller_node(leader)
        .and_then(|n| n.controller())
        .expect("restarted controller");
    restarted
        .raft()
        .wait(Some(WAIT))
        .metrics(
            |m| m.last_applied.is_some_and(|l| l.index >= target),
            "restarted node applies the leader's log",
        )
        .await
        .expect("the restarted controller catches up");
    let leader_metrics = cluster
        .controller_node(new_leader)
        .and_then(|n| n.controller())
        .expect("leader")
        .raft()
        .metrics()
        .borrow()
        .clone();
    let caught_up = restarted
        .raft()
        .wait(Some(WAIT))
        .metrics(
            |m| m.last_log_index == leader_metrics.last_log_index,
            "same last log index as the leader",
        )
        .await
        .expect("log index matches the leader's");
    assert_eq!(
        caught_up.current_leader,
        Some(cluster.controller_id(new_leader))
    );
    let mut rx = cluster
        .controller_node(leader)
        .and_then(|n| n.metadata())
        .expect("metadata");
    let restored = rx
        .wait_for(|m| m.topics.iter().any(|t| t.name == "after-failover"))
        .await
        .expect("watch")
        .clone();
    assert_eq!(restored.topics.len(), 2);

    tracing::info!("--- every controller down: the proxy and brokers serve from the last routes");
    for i in 0..cluster.controller_count() {
        cluster.kill_controller(i).await;
    }
    let n = traffic.sent();
    traffic.wait_sent(n + 30, "with no controller").await;
    tracing::info!("--- controllers back: the proxy re-subscribes and sees new metadata");
    for i in 0..cluster.controller_count() {
        cluster.restart_controller(i).await;
    }
    cluster.wait_leader().await;
    create_topic(&cluster, "after-outage", &[("broker-b", 2)]).await;
    cluster
        .wait_metadata("brokers alive after the outage", |m| {
            broker_set_alive(m, "broker-a") && broker_set_alive(m, "broker-b")
        })
        .await;
    let n = traffic.sent();
    traffic.wait_sent(n + 30, "after the outage").await;

    let stats = traffic.finish().await;
    let retries = stats.send_retries.load(Ordering::Relaxed);
    println!(
        "controller failover: elected in {elected_in:?}, writable in {writable_in:?}; \
         {} messages sent and received, {retries} send retries",
        stats.sent.lock().len()
    );
    assert_eq!(stats.send_failures.load(Ordering::Relaxed), 0);
    assert_eq!(
        retries, 0,
        "the data path does not depend on the controller leader"
    );
    cluster.stop().await;
}

/// The broker sets a v2 QueryRoute lists for `topic`, with their queue counts.
async fn query_route(cluster: &Cluster, topic: &str) -> BTreeMap<String, u32> {
    let reply = cluster
        .v2()
        .await
        .query_route(comet_tests::raw::request(
            "cluster-test@1#1",
            pb::QueryRouteRequest {
                topic: Some(pb::Resource {
                    resource_namespace: String::new(),
                    name: topic.to_owned(),
                }),
                endpoints: None,
            },
        ))
        .await
        .expect("QueryRoute")
        .into_inner();
    assert_eq!(
        reply.status.as_ref().map(|s| s.code),
        Some(pb::Code::Ok as i32),
        "{:?}",
        reply.status
    );
    let mut sets = BTreeMap::new();
    for q in &reply.message_queues {
        let set = q.broker.as_ref().expect("broker").name.clone();
        *sets.entry(set).or_insert(0) += 1;
    }
    sets
}

/// The broker sets a NameServer route from controller `i` lists, with their queue counts.
async fn remoting_route(
    cluster: &Cluster,
    i: usize,
    topic: &str,
    style: RequestStyle,
) -> BTreeMap<String, u32> {
    let mut rc = RemotingClient::connect(&cluster.remoting_addr(i).to_string(), WAIT)
        .await
        .expect("remoting connect");
    let (route, _) = rc
        .topic_route(topic, style)
        .await
        .expect("remoting call")
        .expect("route found");
    route
        .queue_datas
        .iter()
        .map(|q| (q.broker_name.clone(), q.write_queue_nums))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_a_topic_on_two_broker_sets_when_one_is_killed_should_route_around_it_and_recover_its_data()
 {
    init_tracing();
    let mut cluster = ClusterBuilder::new().start().await;
    create_topic(&cluster, "loss", &[("broker-a", 4), ("broker-b", 4)]).await;
    create_group(&cluster, "loss-group").await;
    let both = BTreeMap::from([("broker-a".to_owned(), 4), ("broker-b".to_owned(), 4)]);
    assert_eq!(query_route(&cluster, "loss").await, both);
    let mut traffic = Traffic::start(&cluster, "loss", "loss-group").await;
    traffic.wait_sent(40, "before the kill").await;

    tracing::info!("--- kill broker-b");
    let killed_at = Instant::now();
    cluster.kill_broker_set("broker-b").await;
    cluster
        .wait_metadata("broker-b marked down", |m| !broker_set_alive(m, "broker-b"))
        .await;
    let down_in = killed_at.elapsed();
    assert!(
        down_in < Duration::from_secs(4),
        "broker-b left the routes after {down_in:?} (lease 1 s)"
    );
    let only_a = BTreeMap::from([("broker-a".to_owned(), 4)]);
    assert_eq!(query_route(&cluster, "loss").await, only_a);
    let leader = cluster.wait_leader().await;
    assert_eq!(
        remoting_route(&cluster, leader, "loss", RequestStyle::default()).await,
        only_a
    );

    tracing::info!("--- clients keep producing to broker-a without errors");
    // The producer sends one message at a time: once one more send succeeded, no send that
    // was routed to broker-b before the proxy saw it down is still in flight.
    let n = traffic.sent();
    traffic
        .wait_sent(n + 1, "first send after the route change")
        .await;
    let retries_at_down = traffic.stats.send_retries.load(Ordering::Relaxed);
    let n = traffic.sent();
    traffic.wait_sent(n + 50, "with broker-b down").await;
    assert_eq!(
        traffic.stats.send_retries.load(Ordering::Relaxed),
        retries_at_down,
        "sends fail only while the dead broker set is still routed"
    );

    tracing::info!("--- restart broker-b on its data: it returns with its messages");
    cluster.restart_broker_set("broker-b").await;
    assert_eq!(query_route(&cluster, "loss").await, both);
    let n = traffic.sent();
    traffic.wait_sent(n + 30, "after the restart").await;
    let stats = traffic.finish().await;
    println!(
        "broker loss: down after {down_in:?}; {} messages sent and received, {} send retries",
        stats.sent.lock().len(),
        stats.send_retries.load(Ordering::Relaxed)
    );
    assert_eq!(stats.send_failures.load(Ordering::Relaxed), 0);
    cluster.stop().await;
}

fn with_client<T>(msg: T) -> tonic::Request<T> {
    raw::request("cluster-test@1#1", msg)
}

/// Receives from the queues of `set` until empty; returns (message id, broker set of its
/// receipt handle) pairs.
async fn drain_set(cluster: &Cluster, topic: &str, set: &str) -> Vec<(String, String)> {
    let mut got = Vec::new();
    let mut client = cluster.v2().await;
    for _ in 0..50 {
        let req = raw::receive_request(
            "spread-group",
            raw::queue(topic, -1, Some(set)),
            32,
            Duration::from_secs(60),
            Duration::from_secs(1),
        );
        let frames = raw::receive_frames(&mut client, with_client(req)).await;
        let mut batch = 0;
        for m in raw::messages(&frames) {
            let sp = m.system_properties.as_ref().expect("system properties");
            let handle = sp.receipt_handle.as_deref().unwrap_or_default();
            let from = comet_vocab::handle::broker_set(handle)
                .unwrap_or_default()
                .to_owned();
            got.push((sp.message_id.clone(), from));
            batch += 1;
        }
        if batch == 0 {
            break;
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_queues_on_several_broker_sets_when_routed_and_used_should_reflect_the_layout() {
    init_tracing();
    let mut cluster = ClusterBuilder::new().start().await;
    create_topic(&cluster, "spread", &[("broker-a", 3), ("broker-b", 5)]).await;
    let layout = BTreeMap::from([("broker-a".to_owned(), 3), ("broker-b".to_owned(), 5)]);

    tracing::info!("--- gRPC QueryRoute and QueryAssignment");
    assert_eq!(query_route(&cluster, "spread").await, layout);
    let assignment = cluster
        .v2()
        .await
        .query_assignment(with_client(pb::QueryAssignmentRequest {
            topic: Some(pb::Resource {
                resource_namespace: String::new(),
                name: "spread".to_owned(),
            }),
            group: Some(pb::Resource {
                resource_namespace: String::new(),
                name: "spread-group".to_owned(),
            }),
            endpoints: None,
        }))
        .await
        .expect("QueryAssignment")
        .into_inner();
    let sets: Vec<(String, i32)> = assignment
        .assignments
        .iter()
        .map(|a| {
            let q = a.message_queue.as_ref().expect("queue");
            (q.broker.as_ref().expect("broker").name.clone(), q.id)
        })
        .collect();
    assert_eq!(
        sets,
        [("broker-a".to_owned(), -1), ("broker-b".to_owned(), -1)]
    );

    tracing::info!("--- NameServer routes from every controller, both encodings, both JSON forms");
    let addrs: BTreeMap<String, String> = ["broker-a", "broker-b"]
        .iter()
        .map(|s| {
            (
                (*s).to_owned(),
                cluster.broker_addr(s).expect("runs").to_string(),
            )
        })
        .collect();
    let leader = cluster.wait_leader().await;
    for i in 0..cluster.controller_count() {
        for (serialize_type, version, standard_only) in [
            (SerializeType::Json, 317, false),
            (SerializeType::Json, 453, false),
            (SerializeType::RocketMq, 317, false),
            (SerializeType::RocketMq, 317, true),
        ] {
            let style = RequestStyle {
                serialize_type,
                version,
                accept_standard_json_only: standard_only,
            };
            let mut rc = RemotingClient::connect(&cluster.remoting_addr(i).to_string(), WAIT)
                .await
                .expect("connect");
            let (route, body) = rc
                .topic_route("spread", style)
                .await
                .expect("call")
                .expect("route");
            let legacy = version < 401 && !standard_only;
            assert_eq!(
                body.contains("{0:\""),
                legacy,
                "controller {i} {style:?}: {body}"
            );
            let queues: BTreeMap<String, u32> = route
                .queue_datas
                .iter()
                .map(|q| {
                    assert_eq!(q.read_queue_nums, q.write_queue_nums);
                    assert_eq!(q.perm, 6);
                    (q.broker_name.clone(), q.write_queue_nums)
                })
                .collect();
            assert_eq!(queues, layout, "controller {i} {style:?}");
            let brokers: BTreeMap<String, String> = route
                .broker_datas
                .iter()
                .map(|b| {
                    assert_eq!(b.cluster, "DefaultCluster");
                    (b.broker_name.clone(), b.broker_addrs[&0].clone())
                })
                .collect();
            assert_eq!(brokers, addrs, "controller {i} {style:?}");
            let info = rc.cluster_info(style).await.expect("cluster info");
            assert_eq!(
                info.cluster_addr_table["DefaultCluster"],
                ["broker-a", "broker-b"]
            );
            assert!(
                rc.topic_list(style)
                    .await
                    .expect("topics")
                    .contains(&"spread".to_owned())
            );
        }
        if i != leader {
            // Writes go to the leader: a follower names it.
            let mut rc = RemotingClient::connect(&cluster.remoting_addr(i).to_string(), WAIT)
                .await
                .expect("connect");
            let mut reg =
                RemotingCommand::request(request_code::REGISTER_BROKER, SerializeType::Json);
            for (k, v) in [
                ("clusterName", "DefaultCluster"),
                ("brokerName", "legacy"),
                ("brokerAddr", "127.0.0.1:30911"),
                ("brokerId", "0"),
            ] {
                reg.ext_fields.insert(k.to_owned(), v.to_owned());
            }
            let reply = rc.call(reg).await.expect("call");
            assert_eq!(reply.code, response_code::SYSTEM_ERROR);
            let remark = reply.remark.unwrap_or_default();
            assert!(
                remark.contains(&cluster.controller_addr(leader).to_string()),
                "{remark}"
            );
        }
    }

    tracing::info!("--- sends spread over both broker sets");
    let mut popt = ProducerOption::default();
    popt.set_topics(vec!["spread"]);
    let mut producer = Producer::new(popt, client_option(&cluster)).expect("producer");
    producer.start().await.expect("producer starts");
    let mut sent = HashSet::new();
    for i in 0..40 {
        let msg = MessageBuilder::builder()
            .set_topic("spread")
            .set_tag("t")
            .set_body(format!("s-{i}").into_bytes())
            .build()
            .expect("message");
        sent.insert(
            producer
                .send(msg)
                .await
                .expect("send")
                .message_id()
                .to_owned(),
        );
    }
    let from_a = drain_set(&cluster, "spread", "broker-a").await;
    let from_b = drain_set(&cluster, "spread", "broker-b").await;
    assert!(from_a.iter().all(|(_, s)| s == "broker-a"), "{from_a:?}");
    assert!(from_b.iter().all(|(_, s)| s == "broker-b"), "{from_b:?}");
    // 8 queues, round robin: 3/8 and 5/8 of 40.
    assert_eq!((from_a.len(), from_b.len()), (15, 25));
    let got: HashSet<String> = from_a.into_iter().chain(from_b).map(|(id, _)| id).collect();
    assert_eq!(got, sent);

    tracing::info!("--- a broker set added at runtime serves a new topic; nothing restarts");
    cluster.add_broker_set("broker-c").await;
    create_topic(&cluster, "fresh", &[("broker-c", 2)]).await;
    assert_eq!(
        query_route(&cluster, "fresh").await,
        BTreeMap::from([("broker-c".to_owned(), 2)])
    );
    let mut popt = ProducerOption::default();
    popt.set_topics(vec!["fresh"]);
    let mut p2 = Producer::new(popt, client_option(&cluster)).expect("producer");
    p2.start().await.expect("producer starts");
    let mut fresh = HashSet::new();
    for i in 0..6 {
        let msg = MessageBuilder::builder()
            .set_topic("fresh")
            .set_tag("t")
            .set_body(format!("f-{i}").into_bytes())
            .build()
            .expect("message");
        fresh.insert(p2.send(msg).await.expect("send").message_id().to_owned());
    }
    let from_c = drain_set(&cluster, "fresh", "broker-c").await;
    assert!(from_c.iter().all(|(_, s)| s == "broker-c"));
    let got: HashSet<String> = from_c.into_iter().map(|(id, _)| id).collect();
    assert_eq!(got, fresh);
    producer.shutdown().await.expect("shutdown");
    p2.shutdown().await.expect("shutdown");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_a_cluster_when_administered_through_the_cli_should_manage_members_and_explain_bad_requests()
 {
    use comet::admin::{
        AddMemberArgs, ClusterCommand, Perm, RemoveMemberArgs, RouteArgs, TopicCommand, TopicSpec,
        TopicType,
    };
    init_tracing();
    let mut cluster = ClusterBuilder::new().without_proxy().start().await;
    let target = cluster.admin();

    tracing::info!("--- members, brokers, describe");
    let members = admin::cluster(&target, &ClusterCommand::Members)
        .await
        .expect("members");
    let voters: Vec<u64> = members["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["role"] == "voter")
        .map(|m| m["node_id"].as_u64().expect("id"))
        .collect();
    assert_eq!(voters, [1, 2, 3], "{members}");
    assert!(members["leader_id"].as_u64().is_some(), "{members}");
    let brokers = admin::cluster(&target, &ClusterCommand::Brokers)
        .await
        .expect("brokers");
    let rows: Vec<(String, String, bool)> = brokers["brokers"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|b| {
            (
                b["broker_set"].as_str().expect("set").to_owned(),
                b["role"].as_str().expect("role").to_owned(),
                b["alive"].as_bool().expect("alive"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("broker-a".to_owned(), "master".to_owned(), true),
            ("broker-b".to_owned(), "master".to_owned(), true)
        ]
    );
    let described = admin::cluster(&target, &ClusterCommand::Describe)
        .await
        .expect("describe");
    assert_eq!(
        described["controllers"]["members"].as_array().map(Vec::len),
        Some(3)
    );

    tracing::info!("--- topics: route, and clear errors for bad requests");
    let spec = |name: &str, sets: &[&str], queues: u32| {
        TopicCommand::Create(TopicSpec {
            name: name.to_owned(),
            queues,
            message_type: TopicType::Normal,
            broker_sets: sets.iter().map(|s| (*s).to_owned()).collect(),
            perm: Perm::Rw,
        })
    };
    admin::topic(&target, &spec("routed", &["broker-a", "broker-b"], 4))
        .await
        .expect("create");
    let leader = cluster.wait_leader().await;
    let route = admin::topic(
        &target,
        &TopicCommand::Route(RouteArgs {
            name: "routed".to_owned(),
            remoting: Some(cluster.remoting_addr(leader).to_string()),
        }),
    )
    .await
    .expect("route");
    assert_eq!(route["writable_queues"], 8, "{route}");
    assert_eq!(
        route["nameserver_route"]["queueDatas"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{route}"
    );
    assert_eq!(
        route["nameserver_route"]["brokerDatas"][0]["brokerAddrs"]["0"],
        cluster.broker_addr("broker-a").expect("runs").to_string()
    );
    for (cmd, needle) in [
        (
            spec("t1", &["nope"], 4),
            "broker set nope is not registered",
        ),
        (spec("t2", &["broker-a"], 0), "out of range 1..=1024"),
        (spec("t3", &["broker-a"], 5000), "out of range 1..=1024"),
        (spec("routed", &["broker-a"], 4), "already exists"),
        (spec("t4", &["broker-a", "broker-a"], 4), "twice"),
        (spec("%RETRY%x", &["broker-a"], 4), "reserved"),
    ] {
        let err = admin::topic(&target, &cmd).await.expect_err("refused");
        assert!(format!("{err:#}").contains(needle), "{cmd:?}: {err:#}");
    }

    tracing::info!("--- add a controller, then remove it");
    let new = cluster.start_joining_controller().await;
    let target = cluster.admin();
    let added = admin::cluster(
        &target,
        &ClusterCommand::AddMember(AddMemberArgs {
            node_id: cluster.controller_id(new),
            address: cluster.controller_addr(new).to_string(),
            learner: false,
        }),
    )
    .await
    .expect("add member");
    assert_eq!(
        added["members"].as_array().map(Vec::len),
        Some(4),
        "{added}"
    );
    let mut rx = cluster
        .controller_node(new)
        .and_then(|n| n.metadata())
        .expect("metadata");
    tokio::time::timeout(
        WAIT,
        rx.wait_for(|m| m.topics.iter().any(|t| t.name == "routed")),
    )
    .await
    .expect("the new controller catches up")
    .expect("watch");
    let err = admin::cluster(
        &target,
        &ClusterCommand::AddMember(AddMemberArgs {
            node_id: 1,
            address: cluster.controller_addr(new).to_string(),
            learner: false,
        }),
    )
    .await
    .expect_err("address in use");
    assert!(format!("{err:#}").contains("already"), "{err:#}");
    let removed = admin::cluster(
        &target,
        &ClusterCommand::RemoveMember(RemoveMemberArgs {
            node_id: cluster.controller_id(new),
        }),
    )
    .await
    .expect("remove member");
    assert_eq!(
        removed["members"].as_array().map(Vec::len),
        Some(3),
        "{removed}"
    );
    cluster.stop_controller(new).await;
    let err = admin::cluster(
        &target,
        &ClusterCommand::RemoveMember(RemoveMemberArgs { node_id: 42 }),
    )
    .await
    .expect_err("unknown member");
    assert!(format!("{err:#}").contains("not a member"), "{err:#}");
    cluster.stop().await;
}

/// The proxy's link to a broker whose network went silent (a relay that stops forwarding,
/// without FIN or RST): its keepalive PING goes unanswered, the connection is closed within
/// interval + timeout (failing the call waiting on it with UNAVAILABLE instead of leaving it
/// hanging), and once the network is back the next call connects again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_broker_link_when_the_network_goes_silent_should_detect_it_by_keepalive_and_reconnect()
 {
    use comet_proxy::BrokerService as _;
    use comet_proxy::link::LinkOptions;
    use comet_tests::relay::Relay;

    init_tracing();
    let cluster = ClusterBuilder::new()
        .controllers(1)
        .broker_sets(&["broker-a"])
        .without_proxy()
        .start()
        .await;
    let relay = Relay::start(cluster.broker_addr("broker-a")).await;
    let options = LinkOptions {
        keepalive_interval: Duration::from_millis(200),
        keepalive_timeout: Duration::from_millis(300),
        ..LinkOptions::default()
    };
    let broker = comet_proxy::RemoteBroker::with_options(&relay.addr().to_string(), options)
        .expect("relay address");
    let query = || {
        tonic::Request::new(pb::QueryOffsetRequest {
            message_queue: Some(pb::MessageQueue {
                topic: Some(pb::Resource {
                    resource_namespace: String::new(),
                    name: "no-such-topic".into(),
                }),
                id: 0,
                ..pb::MessageQueue::default()
            }),
            query_offset_policy: pb::QueryOffsetPolicy::End as i32,
            timestamp: None,
        })
    };
    // The broker answers (in-body: the topic does not exist): the link works.
    broker
        .query_offset(query())
        .await
        .expect("a call through the relay");
    assert_eq!(broker.link().stats().connections_open, 1);

    tracing::info!("--- the network between proxy and broker goes silent");
    relay.partition();
    // The relay applies the partition to the open connection when its task next runs: a call
    // made before that still gets through. The first call that cannot must end by itself with
    // UNAVAILABLE (the keepalive closes the connection), not hang.
    let started = tokio::time::Instant::now();
    let mut through = 0;
    loop {
        let waiting = tokio::time::timeout(WAIT, broker.query_offset(query()))
            .await
            .expect("the call ends by itself, it does not hang");
        match waiting {
            Ok(_) => through += 1,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                break;
            }
        }
        assert!(
            through < 100 && started.elapsed() < WAIT,
            "calls still get through the partitioned relay ({through} in {:?})",
            started.elapsed()
        );
    }
    let stats = broker.link().stats();
    assert_eq!(
        (stats.connections_silent, stats.connections_open),
        (1, 0),
        "{stats:?}"
    );

    tracing::info!("--- the network is back");
    relay.heal();
    broker
        .query_offset(query())
        .await
        .expect("the next call connects again");
    let stats = broker.link().stats();
    assert_eq!(
        (stats.connections_opened, stats.connections_open),
        (2, 1),
        "{stats:?}"
    );
    cluster.stop().await;
}
