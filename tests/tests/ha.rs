//! High availability under real faults: a broker set of three real broker processes (one
//! master, two replicas, SYNC replication, `min_in_sync_replicas = 2`), three in-process
//! controllers and a proxy, all on 127.0.0.1. Producers send FIFO messages through the proxy
//! the whole time (retrying until acknowledged) and a FIFO consumer group receives and acks.
//!
//! Phases, in order, on one deployment:
//! 1. **Pause a replica** (SIGSTOP): it leaves the sync-state set and sends continue (two in
//!    sync remain); pausing the other too leaves the master alone and sends fail with
//!    HA_NOT_AVAILABLE; SIGCONT: both catch up and rejoin.
//! 2. **kill -9 the master**: an in-sync replica is elected within seconds and serves; the old
//!    master restarts and rejoins as a replica.
//! 3. **Partition the master** from the controllers and its replicas (relays blackhole) while
//!    this test still reaches its real port: it acknowledges nothing (its writes wait for
//!    replicas, then its lease lapses and it refuses them); a new master is elected; after
//!    healing, the old master rejoins as a replica and its divergent tail is cut (the messages
//!    written to it alone are nowhere to be found).
//! 4. **Chaos**: kill and partition cycles in a row.
//!
//! Then the checker (OpenMessaging Chaos style) compares every acknowledged send with what the
//! consumer received: lost (acknowledged, never received), duplicated (received more than
//! once), out of order (a message of a FIFO group received for the first time after a later
//! one of its group). It prints the counts and fails on any loss or disorder.
//!
//! Own harness (`harness = false`): `main` is the test, or a broker child process when run with
//! [`CHILD_FLAG`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use comet::admin::{self, GroupCommand, GroupSpec, TopicCommand, TopicSpec, TopicType};
use comet_proto::apache::rocketmq::v2 as pb;
use comet_proto::comet::v1::broker_service_client::BrokerServiceClient;
use comet_proto::comet::v1::{QueryMessageRequest, query_message_request};
use comet_tests::ha::{HaDeployment, HaOptions, SET};
use comet_tests::procs::{CHILD_FLAG, child_main};
use comet_tests::raw::{self, resource};
use parking_lot::Mutex;
use pb::messaging_service_client::MessagingServiceClient;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const TOPIC: &str = "ha-orders";
/// `x-mq-client-id` of every raw call.
const CLIENT: &str = "ha-test@1#1";
const GROUP: &str = "ha-consumers";
const PRODUCERS: usize = 4;
const QUEUES: u32 = 4;
const CHAOS_CYCLES: usize = 4;
/// Bound of every wait on cluster state.
const WAIT: Duration = Duration::from_secs(30);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == CHILD_FLAG) {
        child_main(Path::new(&args[i + 1]));
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    rt.block_on(ha_under_faults());
    println!("test ha_under_faults ... ok ({:.1?})", started.elapsed());
}

// ------------------------------------------------------------------------------ deployment

/// The deployment: three brokers, SYNC, two in sync required, plus the topic and group.
async fn deploy() -> HaDeployment {
    let d = HaDeployment::start(HaOptions::default()).await;
    admin::topic(
        &d.cluster.admin(),
        &TopicCommand::Create(TopicSpec {
            name: TOPIC.to_owned(),
            queues: QUEUES,
            message_type: TopicType::Fifo,
            broker_sets: vec![SET.to_owned()],
            perm: admin::Perm::Rw,
        }),
    )
    .await
    .expect("topic created");
    admin::group(
        &d.cluster.admin(),
        &GroupCommand::Create(GroupSpec {
            name: GROUP.to_owned(),
            max_retries: 16,
            fifo: true,
            backoff: None,
        }),
    )
    .await
    .expect("group created");
    d.cluster
        .wait_metadata("topic and group routable", |m| {
            m.topics.iter().any(|t| t.name == TOPIC) && m.groups.iter().any(|g| g.name == GROUP)
        })
        .await;
    d
}

// ------------------------------------------------------------------------------ workload

fn message(id: &str, group: &str, body: String) -> pb::Message {
    pb::Message {
        topic: resource(TOPIC),
        user_properties: HashMap::new(),
        system_properties: Some(pb::SystemProperties {
            tag: Some("t".to_owned()),
            message_id: id.to_owned(),
            message_group: Some(group.to_owned()),
            message_type: pb::MessageType::Fifo as i32,
            born_timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            body_encoding: pb::Encoding::Identity as i32,
            ..Default::default()
        }),
        body: body.into_bytes().into(),
    }
}

/// One send through the proxy with a 1 s deadline (`grpc-timeout`, which also bounds the
/// proxy's call to the broker); `Ok` only when acknowledged.
async fn send_once(
    client: &mut MessagingServiceClient<Channel>,
    m: pb::Message,
) -> Result<(), String> {
    let mut req = raw::request(CLIENT, pb::SendMessageRequest { messages: vec![m] });
    req.set_timeout(Duration::from_secs(1));
    let reply = tokio::time::timeout(Duration::from_secs(5), client.send_message(req)).await;
    match reply {
        Err(_) => Err("client timeout".into()),
        Ok(Err(s)) => Err(format!("gRPC {:?}", s.code())),
        Ok(Ok(r)) => {
            let r = r.into_inner();
            let code = r
                .entries
                .first()
                .and_then(|e| e.status.as_ref())
                .or(r.status.as_ref())
                .map_or(-1, |s| s.code);
            if code == pb::Code::Ok as i32 {
                Ok(())
            } else {
                Err(pb::Code::try_from(code).map_or(format!("code {code}"), |c| format!("{c:?}")))
            }
        }
    }
}

/// What the producers had acknowledged: (group, seq) per message id.
#[derive(Default)]
struct Acked {
    ids: HashMap<String, (String, u64)>,
    failures: BTreeMap<String, u64>,
}

/// What the consumer received, in arrival order: (message id, group, seq).
type Received = Vec<(String, String, u64)>;

struct Workload {
    acked: Arc<Mutex<Acked>>,
    /// What the consumer received; it bumps the watch with every message, so
    /// [`Workload::finish`] wakes on arrivals.
    received: Arc<watch::Sender<Received>>,
    stop_producing: Arc<AtomicBool>,
    stop_consuming: Arc<AtomicBool>,
    /// Acknowledged sends so far; the producers bump it, [`Workload::wait_progress`] waits on it.
    sent: Arc<watch::Sender<u64>>,
    producers: Vec<tokio::task::JoinHandle<()>>,
    consumer: tokio::task::JoinHandle<()>,
}

impl Workload {
    async fn start(proxy: String) -> Workload {
        let acked = Arc::new(Mutex::new(Acked::default()));
        let received = Arc::new(watch::Sender::new(Received::new()));
        let stop_producing = Arc::new(AtomicBool::new(false));
        let stop_consuming = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(watch::Sender::new(0u64));
        let mut producers = Vec::new();
        for p in 0..PRODUCERS {
            let (acked, stop, sent, proxy) = (
                Arc::clone(&acked),
                Arc::clone(&stop_producing),
                Arc::clone(&sent),
                proxy.clone(),
            );
            producers.push(tokio::spawn(async move {
                let mut client = MessagingServiceClient::connect(format!("http://{proxy}"))
                    .await
                    .expect("connect to proxy");
                let group = format!("g{p}");
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("{group}-{seq:08}");
                    // Retry the same message until acknowledged: at-least-once.
                    loop {
                        match send_once(&mut client, message(&id, &group, format!("{group}:{seq}")))
                            .await
                        {
                            Ok(()) => break,
                            Err(why) => {
                                *acked.lock().failures.entry(why).or_default() += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                    acked.lock().ids.insert(id, (group.clone(), seq));
                    sent.send_modify(|n| *n += 1);
                    seq += 1;
                }
            }));
        }
        let consumer = {
            let (received, stop) = (Arc::clone(&received), Arc::clone(&stop_consuming));
            tokio::spawn(async move {
                let mut client = MessagingServiceClient::connect(format!("http://{proxy}"))
                    .await
                    .expect("connect to proxy");
                while !stop.load(Ordering::Relaxed) {
                    if receive_batch(&mut client, &received).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        };
        Workload {
            acked,
            received,
            stop_producing,
            stop_consuming,
            sent,
            producers,
            consumer,
        }
    }

    /// Waits (bounded) until `n` more sends were acknowledged.
    async fn wait_progress(&self, n: u64, what: &str) {
        let mut sent = self.sent.subscribe();
        let target = *sent.borrow_and_update() + n;
        // `is_ok` drops the borrow of the watch at once: the producers' bumps wait for it.
        let reached = tokio::time::timeout(WAIT, sent.wait_for(|s| *s >= target))
            .await
            .is_ok();
        if !reached {
            panic!(
                "{what}: only {} of {target} sends acknowledged within {WAIT:?}; failures {:?}",
                *self.sent.borrow(),
                self.acked.lock().failures
            );
        }
    }

    /// Stops producing, waits until every acknowledged message arrived (bounded: what is
    /// still missing then counts as lost), stops consuming, and checks.
    async fn finish(self) -> Report {
        self.stop_producing.store(true, Ordering::Relaxed);
        for p in self.producers {
            p.await.expect("producer task");
        }
        let acked: HashMap<String, (String, u64)> = self.acked.lock().ids.clone();
        let mut missing: HashSet<&str> = acked.keys().map(String::as_str).collect();
        let mut checked = 0;
        let mut received = self.received.subscribe();
        // `is_ok` drops the borrow of the watch at once: the consumer's pushes wait for it.
        let all_arrived = tokio::time::timeout(
            WAIT,
            received.wait_for(|log| {
                for (id, _, _) in &log[checked..] {
                    missing.remove(id.as_str());
                }
                checked = log.len();
                missing.is_empty()
            }),
        )
        .await
        .is_ok();
        if !all_arrived {
            println!(
                "{} acknowledged messages had not arrived after {WAIT:?}; the checker counts \
                 them as lost",
                missing.len()
            );
        }
        self.stop_consuming.store(true, Ordering::Relaxed);
        self.consumer.await.expect("consumer task");
        let failures = self.acked.lock().failures.clone();
        let log = self.received.send_replace(Received::new());
        Report::check(&acked, &log, failures)
    }
}

/// One receive round (FIFO group, any queue of the set), acknowledging everything received.
async fn receive_batch(
    client: &mut MessagingServiceClient<Channel>,
    received: &watch::Sender<Received>,
) -> Result<(), ()> {
    let req = raw::receive_request(
        GROUP,
        raw::queue(TOPIC, -1, Some(SET)),
        32,
        Duration::from_secs(5),
        Duration::from_secs(1),
    );
    let mut stream = tokio::time::timeout(
        Duration::from_secs(5),
        client.receive_message(raw::request(CLIENT, req)),
    )
    .await
    .map_err(|_| ())?
    .map_err(|_| ())?
    .into_inner();
    let mut acks = Vec::new();
    while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        let Ok(frame) = frame else { break };
        if let Some(pb::receive_message_response::Content::Message(m)) = frame.content {
            let sp = m.system_properties.unwrap_or_default();
            let body = String::from_utf8_lossy(&m.body).into_owned();
            let (group, seq) = body
                .split_once(':')
                .map(|(g, s)| (g.to_owned(), s.parse().unwrap_or(u64::MAX)))
                .unwrap_or_default();
            received.send_modify(|log| log.push((sp.message_id.clone(), group, seq)));
            acks.push(pb::AckMessageEntry {
                message_id: sp.message_id,
                receipt_handle: sp.receipt_handle.unwrap_or_default(),
                ..Default::default()
            });
        }
    }
    if !acks.is_empty() {
        // A failed ack only means a later redelivery (a duplicate), which the checker counts.
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            client.ack_message(raw::request(
                CLIENT,
                pb::AckMessageRequest {
                    group: resource(GROUP),
                    topic: resource(TOPIC),
                    entries: acks,
                },
            )),
        )
        .await;
    }
    Ok(())
}

/// The checker's verdict.
#[derive(Debug)]
struct Report {
    acked: usize,
    received: usize,
    lost: usize,
    duplicated: usize,
    out_of_order: usize,
    unexpected: usize,
    failures: BTreeMap<String, u64>,
}

impl Report {
    fn check(
        acked: &HashMap<String, (String, u64)>,
        log: &[(String, String, u64)],
        failures: BTreeMap<String, u64>,
    ) -> Report {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut max_seq: HashMap<&str, u64> = HashMap::new();
        let (mut duplicated, mut out_of_order, mut unexpected) = (0, 0, 0);
        for (id, group, seq) in log {
            if !seen.insert(id.as_str()) {
                duplicated += 1;
                continue;
            }
            // Written only to a partitioned master: cut with its divergent tail.
            if id.starts_with("direct-") {
                unexpected += 1;
            }
            if group == "alone" {
                continue;
            }
            let max = max_seq.entry(group.as_str()).or_insert(0);
            if *seq < *max {
                out_of_order += 1;
            }
            *max = (*max).max(*seq);
        }
        let lost = acked
            .keys()
            .filter(|id| !seen.contains(id.as_str()))
            .count();
        Report {
            acked: acked.len(),
            received: log.len(),
            lost,
            duplicated,
            out_of_order,
            unexpected,
            failures,
        }
    }
}

// ------------------------------------------------------------------------------ direct access

async fn broker_client(addr: std::net::SocketAddr) -> BrokerServiceClient<Channel> {
    BrokerServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to the broker's real port")
}

/// Sends straight to a broker (bypassing the proxy); returns its code.
async fn direct_send(client: &mut BrokerServiceClient<Channel>, id: &str) -> pb::Code {
    let mut m = message(id, "direct", format!("direct:{id}"));
    if let Some(sp) = m.system_properties.as_mut() {
        sp.queue_id = 0;
    }
    match tokio::time::timeout(
        Duration::from_secs(5),
        client.send_message(pb::SendMessageRequest { messages: vec![m] }),
    )
    .await
    {
        Ok(Ok(r)) => r
            .into_inner()
            .entries
            .first()
            .and_then(|e| e.status.as_ref())
            .and_then(|s| pb::Code::try_from(s.code).ok())
            .unwrap_or(pb::Code::Unspecified),
        _ => pb::Code::Unspecified,
    }
}

/// Whether a broker serves message `id` of the topic.
async fn holds(addr: std::net::SocketAddr, id: &str) -> bool {
    let r = broker_client(addr)
        .await
        .query_message(QueryMessageRequest {
            topic: resource(TOPIC),
            query: Some(query_message_request::Query::MessageId(id.to_owned())),
        })
        .await
        .expect("query message")
        .into_inner();
    r.status.is_some_and(|s| s.code == pb::Code::Ok as i32)
}

/// Sends probes through the proxy until one is acknowledged; returns the time it took. The
/// new master is a child process and only a send tells whether it takes writes yet, so this
/// polls through [`comet_tests::wait_until`].
async fn first_ack(proxy: &str, tag: &str) -> Duration {
    let started = Instant::now();
    let mut client = MessagingServiceClient::connect(format!("http://{proxy}"))
        .await
        .expect("connect to proxy");
    let group = format!("probe-{tag}");
    let mut n = 0;
    comet_tests::wait_until(
        &format!("a send acknowledged after fault {tag}"),
        WAIT,
        async || {
            let id = format!("probe-{tag}-{n}");
            let body = format!("{group}:{n}");
            n += 1;
            send_once(&mut client, message(&id, &group, body))
                .await
                .is_ok()
        },
    )
    .await;
    started.elapsed()
}

// ------------------------------------------------------------------------------ phases

async fn ha_under_faults() {
    let mut d = deploy().await;
    let proxy = d.cluster.access_url();
    let work = Workload::start(proxy.clone()).await;
    work.wait_progress(50, "before any fault").await;
    let mut failovers: Vec<Duration> = Vec::new();

    // 1. Pause replicas.
    let m = d.master();
    let replicas: Vec<usize> = (0..3).filter(|i| *i != m).collect();
    println!("--- SIGSTOP replica {}", replicas[0]);
    d.brokers[replicas[0]].pause();
    d.wait_set("paused replica leaves the set", |s| {
        !s.sync_state_set.contains(&(replicas[0] as u64))
    })
    .await;
    work.wait_progress(30, "one replica paused, two in sync")
        .await;
    println!(
        "--- SIGSTOP replica {} too: the master is alone",
        replicas[1]
    );
    d.brokers[replicas[1]].pause();
    d.wait_set("master alone in the set", |s| s.sync_state_set.len() == 1)
        .await;
    let mut client = MessagingServiceClient::connect(format!("http://{proxy}"))
        .await
        .expect("connect to proxy");
    let refused = send_once(&mut client, message("alone-0", "alone", "alone:0".into())).await;
    assert_eq!(
        refused,
        Err("HaNotAvailable".to_owned()),
        "fewer in-sync replicas than required must be refused"
    );
    println!("--- SIGCONT both: they catch up and rejoin");
    d.brokers[replicas[0]].resume();
    d.brokers[replicas[1]].resume();
    d.wait_all_in_sync("resumed replicas rejoin").await;
    work.wait_progress(30, "after resuming").await;

    // 2. kill -9 the master.
    let m = d.master();
    let epoch = d.set().master_epoch;
    println!("--- kill -9 master {m}");
    let killed = Instant::now();
    d.brokers[m].kill();
    let took = first_ack(&proxy, "kill").await;
    let set = d.wait_new_master(m, epoch).await;
    println!(
        "failover after kill -9: first acknowledged send after {took:?}, master {} at epoch {}",
        set.master_broker_id, set.master_epoch
    );
    failovers.push(killed.elapsed().min(took));
    work.wait_progress(30, "after the master was killed").await;
    d.brokers[m].start().await;
    d.wait_all_in_sync("killed master rejoins as a replica")
        .await;

    // 3. Partition the master.
    let m = d.master();
    let epoch = d.set().master_epoch;
    let real = d.brokers[m].real_addr();
    println!("--- partition master {m}");
    let cut = Instant::now();
    d.brokers[m].partition();
    let mut direct = broker_client(real).await;
    // Clients that still reach the old master get no acknowledgement, while the others are
    // served by the new master.
    let direct_sends = async {
        let mut ids = Vec::new();
        for i in 0..3 {
            let id = format!("direct-{i}");
            let code = direct_send(&mut direct, &id).await;
            assert_ne!(
                code,
                pb::Code::Ok,
                "a partitioned master acknowledged {id} ({:?} after the cut)",
                cut.elapsed()
            );
            ids.push(id);
        }
        ids
    };
    let (mut direct_ids, took) = tokio::join!(direct_sends, first_ack(&proxy, "partition"));
    let set = d.wait_new_master(m, epoch).await;
    println!(
        "failover after partition: first acknowledged send after {took:?}, master {} at epoch {}",
        set.master_broker_id, set.master_epoch
    );
    failovers.push(took);
    assert_ne!(
        direct_send(&mut direct, "direct-late").await,
        pb::Code::Ok,
        "the old master still takes writes"
    );
    direct_ids.push("direct-late".to_owned());
    println!("--- heal: the old master rejoins as a replica and cuts its tail");
    d.brokers[m].heal();
    let set = d.wait_all_in_sync("healed master rejoins").await;
    let new_master = set.master_broker_id as usize;
    for id in &direct_ids {
        assert!(
            !holds(d.brokers[new_master].real_addr(), id).await,
            "{id} reached the new master"
        );
        assert!(
            !holds(real, id).await,
            "{id} survived on the old master after it rejoined"
        );
    }
    work.wait_progress(30, "after the partition healed").await;

    // 4. Chaos: kill and partition cycles.
    for cycle in 0..CHAOS_CYCLES {
        let m = d.master();
        let epoch = d.set().master_epoch;
        let started = Instant::now();
        if cycle % 2 == 0 {
            println!("--- chaos {cycle}: kill -9 master {m}");
            d.brokers[m].kill();
            failovers.push(first_ack(&proxy, &format!("c{cycle}")).await);
            d.wait_new_master(m, epoch).await;
            d.brokers[m].start().await;
        } else {
            println!("--- chaos {cycle}: partition master {m}");
            d.brokers[m].partition();
            failovers.push(first_ack(&proxy, &format!("c{cycle}")).await);
            d.wait_new_master(m, epoch).await;
            d.brokers[m].heal();
        }
        d.wait_all_in_sync("after a chaos cycle").await;
        work.wait_progress(20, "after a chaos cycle").await;
        println!("    cycle {cycle} took {:?}", started.elapsed());
    }

    let report = work.finish().await;
    failovers.sort();
    println!(
        "ha checker: acknowledged {}, received {} (with duplicates), lost {}, duplicated {}, \
         out of order {}, unexpected {}; send failures retried: {:?}",
        report.acked,
        report.received,
        report.lost,
        report.duplicated,
        report.out_of_order,
        report.unexpected,
        report.failures
    );
    println!(
        "failover (fault → first acknowledged send) over {} faults: p50 {:?}, max {:?}",
        failovers.len(),
        failovers[failovers.len() / 2],
        failovers[failovers.len() - 1]
    );
    assert!(
        failovers[failovers.len() - 1] < Duration::from_secs(10),
        "a failover took {:?}",
        failovers[failovers.len() - 1]
    );
    assert_eq!(report.lost, 0, "acknowledged messages were lost");
    assert_eq!(report.out_of_order, 0, "FIFO order was broken");
    assert_eq!(report.unexpected, 0, "messages nobody sent were received");
    d.stop().await;
}
