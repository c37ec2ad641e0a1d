//! High availability under real faults: a broker set of three real broker processes (one
//! master, two replicas, SYNC replication, `min_in_sync_replicas = 2`), three in-process
//! controllers and a proxy, all on 127.0.0.1. Producers send through the proxy the whole time
//! (retrying each message until acknowledged) and consumers receive and ack, one per kind:
//!
//! - **FIFO**: four producers, one message group each; the consumer acks everything.
//! - **normal**: the consumer leaves every eighth message unacknowledged on its first delivery
//!   (a consumer mid-flight when a fault strikes): it must come back once its invisible time
//!   ([`MID_FLIGHT_INVISIBLE`]) has passed, not earlier.
//! - **delay**: due 1 to 3.5 s after the send, so some are due before, some during and some
//!   after each failover; none may arrive before it is due.
//! - **transactions**: of the half messages, the producer commits a quarter and rolls back a
//!   quarter right away and leaves half open; a checker on a producer telemetry stream answers
//!   the broker's check-backs (commit or rollback, by the message: [`TxFate`]). Committed ones
//!   must be delivered like the other kinds, rolled back ones never, and every open one must be
//!   checked back, some first by a newly elected master.
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
//! 4. **Chaos**: kill, partition and SIGSTOP cycles of the master in a row.
//! 5. **Other members**: kill -9 of a replica, a partition of a replica, kill of the controller
//!    leader (the others elect a new one), a partition of the controller leader (cut off from
//!    the other controllers, the brokers and the proxy, both ways: a new leader is elected, the
//!    brokers renew their leases with it and, while the old leader is still cut off, it fails
//!    the master over after a kill -9; healed, the old leader follows the new one), and last a
//!    kill -9 of the master that never returns.
//!
//! Then the checker (OpenMessaging Chaos style) compares, per kind, every acknowledged send
//! with what the consumers received and prints acknowledged, delivered, lost, duplicated
//! beyond the documented bound, out of order, mid-flight messages back too early, and the
//! failover time as that kind's producer saw it (its longest wait between two acknowledged
//! sends); then each fault with the time until the deployment recovered from it (a send
//! acknowledged by a new master, a member back in the set, a new controller leader). The
//! documented bound (README, High availability): a replica holds the
//! master's consumer state as of at most one `consumer_offsets_sync_interval`
//! ([`SYNC_INTERVAL`]) ago, so only messages acknowledged (or handed out) within that interval
//! before a fault may be delivered again (or early); a message whose send was retried after an
//! unknown outcome, or whose ack failed, may come twice at any time. It fails on any loss, any
//! disorder, anything beyond the bound, any delay message delivered before it was due, any
//! rolled back message delivered and any open transaction never checked back.
//!
//! Every wait is bounded: on state where the test process holds it (metadata and Raft
//! watches, counters its own tasks bump), else through [`comet_tests::wait_until`] and its
//! [`comet_tests::Retry`] (a send retried until acknowledged, a receive or the checker's stream
//! retried until answered).
//!
//! A second, smaller run shows the ASYNC window (README, High availability): in `async` mode a
//! kill -9 of the master may lose only messages acknowledged within `replica_max_lag_time`
//! before it, at most `replica_max_lag_bytes` of them (see [`async_window`]).
//!
//! Own harness (`harness = false`): `main` runs both, or a broker child process when run with
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
const NORMAL_TOPIC: &str = "ha-normal";
const DELAY_TOPIC: &str = "ha-delay";
const TX_TOPIC: &str = "ha-tx";
/// `x-mq-client-id` of every raw call.
const CLIENT: &str = "ha-test@1#1";
const GROUP: &str = "ha-consumers";
const NORMAL_GROUP: &str = "ha-normal-consumers";
const DELAY_GROUP: &str = "ha-delay-consumers";
const TX_GROUP: &str = "ha-tx-consumers";
/// `x-mq-client-id` of the transaction checker (its telemetry stream and its resolutions).
const CHECKER: &str = "ha-tx-checker@1#1";
const PRODUCERS: usize = 4;
const QUEUES: u32 = 4;
const CHAOS_CYCLES: usize = 4;
/// Bound of every wait on cluster state.
const WAIT: Duration = Duration::from_secs(30);
/// `broker.consumer_offsets_sync_interval` of the deployment ([`HaOptions`] `fast`).
const SYNC_INTERVAL: Duration = Duration::from_millis(200);
/// Slack on the bound: a state frame in transit, an ack answered while the fault struck.
const BOUND_SLACK: Duration = Duration::from_millis(300);
/// Invisible time of the normal consumer's receives.
const MID_FLIGHT_INVISIBLE: Duration = Duration::from_secs(2);
/// Every this many normal messages, one is left in flight on its first delivery.
const MID_FLIGHT_EVERY: u64 = 8;
/// `broker.transaction_timeout` and `broker.transaction_check_interval` of the deployment.
const TX_CHECK_AFTER: Duration = Duration::from_secs(1);
/// The normal, delay and transaction producers send one message per this (FIFO producers
/// send back to back).
const PACE: Duration = Duration::from_millis(10);

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
    let started = Instant::now();
    rt.block_on(async_window());
    println!("test async_window ... ok ({:.1?})", started.elapsed());
}

// ------------------------------------------------------------------------------ deployment

/// The deployment: three brokers, SYNC, two in sync required, plus the topics and groups.
async fn deploy() -> HaDeployment {
    let d = HaDeployment::start(HaOptions {
        // Unresolved transactions are checked 1 s after their send, then every second.
        tweak: |cfg| {
            cfg.broker.transaction_timeout = TX_CHECK_AFTER.into();
            cfg.broker.transaction_check_interval = TX_CHECK_AFTER.into();
        },
        ..HaOptions::default()
    })
    .await;
    for (name, message_type) in [
        (TOPIC, TopicType::Fifo),
        (NORMAL_TOPIC, TopicType::Normal),
        (DELAY_TOPIC, TopicType::Delay),
        (TX_TOPIC, TopicType::Transaction),
    ] {
        admin::topic(
            &d.cluster.admin(),
            &TopicCommand::Create(TopicSpec {
                name: name.to_owned(),
                queues: QUEUES,
                message_type,
                broker_sets: vec![SET.to_owned()],
                perm: admin::Perm::Rw,
            }),
        )
        .await
        .expect("topic created");
    }
    for (name, fifo) in [
        (GROUP, true),
        (NORMAL_GROUP, false),
        (DELAY_GROUP, false),
        (TX_GROUP, false),
    ] {
        admin::group(
            &d.cluster.admin(),
            &GroupCommand::Create(GroupSpec {
                name: name.to_owned(),
                max_retries: 16,
                fifo,
                broadcast: false,
                from_start: false,
                backoff: None,
                priority_percent: None,
            }),
        )
        .await
        .expect("group created");
    }
    d.cluster
        .wait_metadata("topics and groups routable", |m| {
            [TOPIC, NORMAL_TOPIC, DELAY_TOPIC, TX_TOPIC]
                .iter()
                .all(|t| m.topics.iter().any(|x| x.name == *t))
                && [GROUP, NORMAL_GROUP, DELAY_GROUP, TX_GROUP]
                    .iter()
                    .all(|g| m.groups.iter().any(|x| x.name == *g))
        })
        .await;
    d
}

// ------------------------------------------------------------------------------ workload

/// A kind of message, with its own topic, producers and consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Fifo,
    Normal,
    Delay,
    /// Transactional: see [`TxFate`].
    Tx,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Fifo, Kind::Normal, Kind::Delay, Kind::Tx];

    fn topic(self) -> &'static str {
        match self {
            Kind::Fifo => TOPIC,
            Kind::Normal => NORMAL_TOPIC,
            Kind::Delay => DELAY_TOPIC,
            Kind::Tx => TX_TOPIC,
        }
    }

    fn group(self) -> &'static str {
        match self {
            Kind::Fifo => GROUP,
            Kind::Normal => NORMAL_GROUP,
            Kind::Delay => DELAY_GROUP,
            Kind::Tx => TX_GROUP,
        }
    }

    fn invisible(self) -> Duration {
        match self {
            Kind::Normal => MID_FLIGHT_INVISIBLE,
            Kind::Fifo | Kind::Delay | Kind::Tx => Duration::from_secs(5),
        }
    }
}

/// What becomes of transactional message `seq`: the producer commits or rolls back a quarter
/// each right after the send; the other half it leaves open, and the checker answers the
/// broker's check-back for them (commit, rollback) from the same rule. The checker also
/// answers for a client resolution that failed, so every half message ends as decided here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxFate {
    ClientCommit,
    ClientRollback,
    CheckedCommit,
    CheckedRollback,
}

impl TxFate {
    fn of(seq: u64) -> TxFate {
        match seq % 4 {
            0 => TxFate::ClientCommit,
            1 => TxFate::ClientRollback,
            2 => TxFate::CheckedCommit,
            _ => TxFate::CheckedRollback,
        }
    }

    fn commits(self) -> bool {
        matches!(self, TxFate::ClientCommit | TxFate::CheckedCommit)
    }

    fn resolution(self) -> pb::TransactionResolution {
        if self.commits() {
            pb::TransactionResolution::Commit
        } else {
            pb::TransactionResolution::Rollback
        }
    }
}

/// A message of `kind`; its body is `<group>:<seq>` (the consumer reads it back from there).
/// `due_ms` makes it a delay message due then.
fn message(kind: Kind, id: &str, group: &str, seq: u64, due_ms: Option<i64>) -> pb::Message {
    let (message_type, message_group) = match kind {
        Kind::Fifo => (pb::MessageType::Fifo, Some(group.to_owned())),
        Kind::Normal => (pb::MessageType::Normal, None),
        Kind::Delay => (pb::MessageType::Delay, None),
        Kind::Tx => (pb::MessageType::Transaction, None),
    };
    pb::Message {
        topic: resource(kind.topic()),
        user_properties: HashMap::new(),
        system_properties: Some(pb::SystemProperties {
            tag: Some("t".to_owned()),
            message_id: id.to_owned(),
            message_group,
            message_type: message_type as i32,
            born_timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            delivery_timestamp: due_ms.map(|ms| prost_types::Timestamp {
                seconds: ms / 1000,
                nanos: i32::try_from(ms % 1000).expect("ms below 1000") * 1_000_000,
            }),
            body_encoding: pb::Encoding::Identity as i32,
            ..Default::default()
        }),
        body: format!("{group}:{seq}").into_bytes().into(),
    }
}

/// One send through the proxy with a 1 s deadline (`grpc-timeout`, which also bounds the
/// proxy's call to the broker); `Ok` (with the transaction id of a half message) only when
/// acknowledged, else the code's name and the status message.
async fn send_once(
    client: &mut MessagingServiceClient<Channel>,
    m: pb::Message,
) -> Result<String, (String, String)> {
    let mut req = raw::request(CLIENT, pb::SendMessageRequest { messages: vec![m] });
    req.set_timeout(Duration::from_secs(1));
    let reply = tokio::time::timeout(Duration::from_secs(5), client.send_message(req)).await;
    match reply {
        Err(_) => Err(("client timeout".into(), String::new())),
        Ok(Err(s)) => Err((format!("gRPC {:?}", s.code()), s.message().to_owned())),
        Ok(Ok(r)) => {
            let r = r.into_inner();
            let status = r
                .entries
                .first()
                .and_then(|e| e.status.clone())
                .or(r.status)
                .unwrap_or_default();
            if status.code == pb::Code::Ok as i32 {
                Ok(r.entries
                    .into_iter()
                    .next()
                    .map(|e| e.transaction_id)
                    .unwrap_or_default())
            } else {
                Err(refusal(status))
            }
        }
    }
}

/// A status other than OK as (the code's name, its message).
fn refusal(status: pb::Status) -> (String, String) {
    let code = pb::Code::try_from(status.code)
        .map_or(format!("code {}", status.code), |c| format!("{c:?}"));
    (code, status.message)
}

/// Resolves half message `id` of [`TX_TOPIC`] as `fate` says, through the proxy with a 1 s
/// deadline, as client `client_id` from `source`.
async fn end_transaction(
    client: &mut MessagingServiceClient<Channel>,
    client_id: &str,
    id: &str,
    transaction_id: String,
    fate: TxFate,
    source: pb::TransactionSource,
) -> Result<(), (String, String)> {
    let mut req = raw::request(
        client_id,
        pb::EndTransactionRequest {
            topic: resource(TX_TOPIC),
            message_id: id.to_owned(),
            transaction_id,
            resolution: fate.resolution() as i32,
            source: source as i32,
            trace_context: String::new(),
        },
    );
    req.set_timeout(Duration::from_secs(1));
    match tokio::time::timeout(Duration::from_secs(5), client.end_transaction(req)).await {
        Err(_) => Err(("client timeout".into(), String::new())),
        Ok(Err(s)) => Err((format!("gRPC {:?}", s.code()), s.message().to_owned())),
        Ok(Ok(r)) => {
            let status = r.into_inner().status.unwrap_or_default();
            if status.code == pb::Code::Ok as i32 {
                Ok(())
            } else {
                Err(refusal(status))
            }
        }
    }
}

/// An acknowledged send.
#[derive(Debug, Clone)]
struct Sent {
    kind: Kind,
    /// An attempt before the acknowledged one failed with an unknown outcome: a second copy
    /// may exist.
    retried: bool,
    due_ms: Option<i64>,
}

/// One delivery to a consumer.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    kind: Kind,
    group: String,
    seq: u64,
    at: Instant,
    at_ms: i64,
    /// Left in flight on purpose (not acknowledged).
    kept: bool,
}

/// A fault the test injected: when it began, and when the deployment had recovered from it
/// (a new master serving, the member or controller back).
#[derive(Debug, Clone)]
struct Fault {
    what: String,
    began: Instant,
    recovered: Option<Instant>,
    /// When the member or controller it struck was back (reported only).
    back: Option<Instant>,
    /// For a fault whose effects outlast `recovered` (see [`Workload::settled`]): when they
    /// ended.
    settled: Option<Instant>,
    /// It struck the master (a new master took over).
    master: bool,
}

/// Everything the workload saw.
#[derive(Default)]
struct Ledger {
    sent: HashMap<String, Sent>,
    failures: BTreeMap<String, u64>,
    /// The first status message of each failure code.
    samples: BTreeMap<String, String>,
    deliveries: Vec<Delivery>,
    /// When each successful ack of a message was answered, in order.
    acked_at: HashMap<String, Vec<Instant>>,
    /// Messages one of whose acks failed.
    ack_failed: HashSet<String>,
    /// Each fault the test injected.
    faults: Vec<Fault>,
    /// Acknowledged half messages whose transaction is rolled back (never to be delivered).
    rolled_back: HashSet<String>,
    /// Acknowledged half messages the producer left open, with when they were acknowledged.
    unresolved: HashMap<String, Instant>,
    /// When the checker was asked about each half message.
    checks: HashMap<String, Vec<Instant>>,
    /// When each acknowledged send of a kind was answered, in order (rolled back half
    /// messages included).
    acks: BTreeMap<Kind, Vec<Instant>>,
    /// When the workload started (times in the report count from it).
    t0: Option<Instant>,
}

struct Workload {
    ledger: Arc<Mutex<Ledger>>,
    /// Deliveries so far; the consumers bump it, [`Workload::finish`] waits on it.
    delivered: Arc<watch::Sender<usize>>,
    stop_producing: Arc<AtomicBool>,
    stop_consuming: Arc<AtomicBool>,
    /// Acknowledged sends so far; the producers bump it, [`Workload::wait_progress`] waits on it.
    sent: Arc<watch::Sender<u64>>,
    producers: Vec<tokio::task::JoinHandle<()>>,
    consumers: Vec<tokio::task::JoinHandle<()>>,
}

/// Producers: (kind, message group label); FIFO groups send back to back, the others pace.
fn producer_specs() -> Vec<(Kind, String)> {
    let mut v: Vec<(Kind, String)> = (0..PRODUCERS)
        .map(|p| (Kind::Fifo, format!("g{p}")))
        .collect();
    v.push((Kind::Normal, "n".to_owned()));
    v.push((Kind::Delay, "d".to_owned()));
    v.push((Kind::Tx, "x".to_owned()));
    v
}

impl Workload {
    async fn start(proxy: String) -> Workload {
        let ledger = Arc::new(Mutex::new(Ledger {
            t0: Some(Instant::now()),
            ..Ledger::default()
        }));
        let delivered = Arc::new(watch::Sender::new(0usize));
        let stop_producing = Arc::new(AtomicBool::new(false));
        let stop_consuming = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(watch::Sender::new(0u64));
        let mut producers = Vec::new();
        for (kind, group) in producer_specs() {
            let (ledger, stop, sent, proxy) = (
                Arc::clone(&ledger),
                Arc::clone(&stop_producing),
                Arc::clone(&sent),
                proxy.clone(),
            );
            producers.push(tokio::spawn(async move {
                let mut client = MessagingServiceClient::connect(format!("http://{proxy}"))
                    .await
                    .expect("connect to proxy");
                // The paced kinds send one message per tick: the workload's rate, not a wait.
                let mut pace = tokio::time::interval(PACE);
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if kind != Kind::Fifo {
                        pace.tick().await;
                    }
                    let id = format!("{group}-{seq:08}");
                    // Due 1 to 3.5 s from now: before, during and after the next failover.
                    let due_ms = (kind == Kind::Delay)
                        .then(|| comet_tests::now_ms() + 1000 + 500 * (seq % 6) as i64);
                    let mut retried = false;
                    // Retry the same message until acknowledged (at-least-once); the
                    // deployment may be between masters, so a refusal is retried after the
                    // suite's retry pause.
                    let mut retry = comet_tests::Retry::new(format!("{id} acknowledged"), WAIT);
                    let transaction_id = loop {
                        let m = message(kind, &id, &group, seq, due_ms);
                        match send_once(&mut client, m).await {
                            Ok(transaction_id) => break transaction_id,
                            Err((code, why)) => {
                                // Even a refusal may have stored a copy (a SYNC send's
                                // HA_NOT_AVAILABLE is answered after the master's write).
                                retried = true;
                                {
                                    let mut l = ledger.lock();
                                    *l.failures.entry(code.clone()).or_default() += 1;
                                    l.samples.entry(code).or_insert(why);
                                }
                                retry.pause().await;
                            }
                        }
                    };
                    ledger
                        .lock()
                        .acks
                        .entry(kind)
                        .or_default()
                        .push(Instant::now());
                    let fate = (kind == Kind::Tx).then(|| TxFate::of(seq));
                    if let Some(f @ (TxFate::ClientCommit | TxFate::ClientRollback)) = fate {
                        // One attempt: when it fails the checker settles the transaction.
                        let source = pb::TransactionSource::SourceClient;
                        let ended =
                            end_transaction(&mut client, CLIENT, &id, transaction_id, f, source)
                                .await;
                        if let Err((code, why)) = ended {
                            let code = format!("EndTransaction {code}");
                            let mut l = ledger.lock();
                            *l.failures.entry(code.clone()).or_default() += 1;
                            l.samples.entry(code).or_insert(why);
                        }
                    }
                    {
                        let mut l = ledger.lock();
                        if matches!(fate, Some(TxFate::CheckedCommit | TxFate::CheckedRollback)) {
                            l.unresolved.insert(id.clone(), Instant::now());
                        }
                        if fate.is_none_or(TxFate::commits) {
                            l.sent.insert(
                                id,
                                Sent {
                                    kind,
                                    retried,
                                    due_ms,
                                },
                            );
                        } else {
                            l.rolled_back.insert(id);
                        }
                    }
                    sent.send_modify(|n| *n += 1);
                    seq += 1;
                }
            }));
        }
        let mut consumers = Vec::new();
        for kind in Kind::ALL {
            let (ledger, delivered, stop, proxy) = (
                Arc::clone(&ledger),
                Arc::clone(&delivered),
                Arc::clone(&stop_consuming),
                proxy.clone(),
            );
            consumers.push(tokio::spawn(async move {
                let mut client = MessagingServiceClient::connect(format!("http://{proxy}"))
                    .await
                    .expect("connect to proxy");
                // A receive that fails (the set between masters) is retried after the suite's
                // retry pause; one answered (empty or not) goes round again at once.
                let what = format!("a receive of {kind:?} answered");
                let mut retry = comet_tests::Retry::new(what.clone(), WAIT);
                while !stop.load(Ordering::Relaxed) {
                    if receive_batch(&mut client, kind, &ledger, &delivered)
                        .await
                        .is_ok()
                    {
                        retry = comet_tests::Retry::new(what.clone(), WAIT);
                    } else {
                        retry.pause().await;
                    }
                }
            }));
        }
        consumers.push(tokio::spawn(answer_checks(
            proxy,
            Arc::clone(&ledger),
            Arc::clone(&delivered),
            Arc::clone(&stop_consuming),
        )));
        Workload {
            ledger,
            delivered,
            stop_producing,
            stop_consuming,
            sent,
            producers,
            consumers,
        }
    }

    /// Records that a fault of a replica or a controller begins now; returns its index.
    fn fault(&self, what: &str) -> usize {
        self.push_fault(what, false)
    }

    /// Records that a fault of the master begins now; returns its index.
    fn master_fault(&self, what: &str) -> usize {
        self.push_fault(what, true)
    }

    fn push_fault(&self, what: &str, master: bool) -> usize {
        println!("--- {what}");
        let mut l = self.ledger.lock();
        l.faults.push(Fault {
            what: what.to_owned(),
            began: Instant::now(),
            recovered: None,
            back: None,
            settled: None,
            master,
        });
        l.faults.len() - 1
    }

    /// Records that fault `i` has no more effects now, though the deployment recovered from it
    /// earlier. A partitioned controller leader: a new leader is elected quickly, but until
    /// every broker has renewed its lease with it (a connection to the old leader only fails
    /// once its pings go unanswered) the master may lapse, leaving the set without a writable
    /// master, or briefly without a master in the routes (the proxy then serves receives from
    /// a replica, whose consumer state is up to one sync interval old); the bound stretches
    /// until the partition heals.
    fn settled(&self, i: usize) {
        if let Some(f) = self.ledger.lock().faults.get_mut(i) {
            f.settled.get_or_insert_with(Instant::now);
        }
    }

    /// Records that the member or controller fault `i` struck is back now (in the sync-state
    /// set, or following the leader); only reported, the bounds use [`Workload::recovered`].
    fn back(&self, i: usize) {
        if let Some(f) = self.ledger.lock().faults.get_mut(i) {
            f.back.get_or_insert_with(Instant::now);
        }
    }

    /// Records that the deployment recovered from the latest fault now.
    fn recovered(&self) {
        if let Some(f) = self.ledger.lock().faults.last_mut() {
            f.recovered.get_or_insert_with(Instant::now);
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
            let l = self.ledger.lock();
            panic!(
                "{what}: only {} of {target} sends acknowledged within {WAIT:?}; failures {:?} \
                 ({:?})",
                *self.sent.borrow(),
                l.failures,
                l.samples
            );
        }
    }

    /// Stops producing, waits until every acknowledged message arrived (bounded: what is
    /// still missing then counts as lost), stops consuming, and checks.
    async fn finish(self) -> Verdict {
        self.stop_producing.store(true, Ordering::Relaxed);
        for p in self.producers {
            p.await.expect("producer task");
        }
        let mut missing: HashSet<String> = self.ledger.lock().sent.keys().cloned().collect();
        let mut checked = 0;
        let mut delivered = self.delivered.subscribe();
        let ledger = Arc::clone(&self.ledger);
        // `is_ok` drops the borrow of the watch at once: the consumers' bumps wait for it.
        // ... and until every transaction left open was checked back.
        let all_arrived = tokio::time::timeout(
            WAIT,
            delivered.wait_for(|_| {
                let l = ledger.lock();
                for d in &l.deliveries[checked..] {
                    missing.remove(&d.id);
                }
                checked = l.deliveries.len();
                missing.is_empty() && l.unresolved.keys().all(|id| l.checks.contains_key(id))
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
        for c in self.consumers {
            c.await.expect("consumer task");
        }
        let l = self.ledger.lock();
        Verdict::check(&l)
    }
}

/// One receive round of `kind`'s group (any queue of the set), acknowledging what it
/// received except the normal messages it leaves in flight.
async fn receive_batch(
    client: &mut MessagingServiceClient<Channel>,
    kind: Kind,
    ledger: &Mutex<Ledger>,
    delivered: &watch::Sender<usize>,
) -> Result<(), ()> {
    let req = raw::receive_request(
        kind.group(),
        raw::queue(kind.topic(), -1, Some(SET)),
        32,
        kind.invisible(),
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
            let kept = kind == Kind::Normal
                && seq % MID_FLIGHT_EVERY == 0
                && sp.delivery_attempt.unwrap_or(1) <= 1;
            ledger.lock().deliveries.push(Delivery {
                id: sp.message_id.clone(),
                kind,
                group,
                seq,
                at: Instant::now(),
                at_ms: comet_tests::now_ms(),
                kept,
            });
            delivered.send_modify(|n| *n += 1);
            if !kept {
                acks.push(pb::AckMessageEntry {
                    message_id: sp.message_id,
                    receipt_handle: sp.receipt_handle.unwrap_or_default(),
                    ..Default::default()
                });
            }
        }
    }
    if !acks.is_empty() {
        let ids: Vec<String> = acks.iter().map(|a| a.message_id.clone()).collect();
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            client.ack_message(raw::request(
                CLIENT,
                pb::AckMessageRequest {
                    group: resource(kind.group()),
                    topic: resource(kind.topic()),
                    entries: acks,
                },
            )),
        )
        .await;
        // A failed ack only means a later redelivery, which the checker allows for it.
        let answered = Instant::now();
        let ok: HashSet<String> = match reply {
            Ok(Ok(r)) => r
                .into_inner()
                .entries
                .into_iter()
                .filter(|e| {
                    e.status
                        .as_ref()
                        .is_some_and(|s| s.code == pb::Code::Ok as i32)
                })
                .map(|e| e.message_id)
                .collect(),
            _ => HashSet::new(),
        };
        let mut l = ledger.lock();
        for id in ids {
            if ok.contains(&id) {
                l.acked_at.entry(id).or_default().push(answered);
            } else {
                l.ack_failed.insert(id);
            }
        }
    }
    Ok(())
}

/// The transaction checker: a producer's telemetry stream through the proxy (its settings
/// publish [`TX_TOPIC`]) on which the broker's check-backs arrive; each is answered by the
/// message's [`TxFate`] with EndTransaction (source SERVER_CHECK) and recorded. The proxy lives
/// through every fault, so one stream serves the run; it is reopened should it end anyway.
async fn answer_checks(
    proxy: String,
    ledger: Arc<Mutex<Ledger>>,
    progress: Arc<watch::Sender<usize>>,
    stop: Arc<AtomicBool>,
) {
    use pb::telemetry_command::Command;
    let mut client = MessagingServiceClient::connect(format!("http://{proxy}"))
        .await
        .expect("connect to proxy");
    let settings = pb::TelemetryCommand {
        status: None,
        command: Some(Command::Settings(pb::Settings {
            client_type: Some(pb::ClientType::Producer as i32),
            pub_sub: Some(pb::settings::PubSub::Publishing(pb::Publishing {
                topics: resource(TX_TOPIC).into_iter().collect(),
                max_body_size: 0,
                validate_message_type: true,
            })),
            ..Default::default()
        })),
    };
    const REOPEN: &str = "the checker's telemetry stream opens";
    let mut reopen = comet_tests::Retry::new(REOPEN, WAIT);
    while !stop.load(Ordering::Relaxed) {
        // Open the stream; one that does not open (the proxy busy with a failover) is opened
        // again after the suite's retry pause.
        let (commands, rx) = tokio::sync::mpsc::channel(1);
        commands
            .send(settings.clone())
            .await
            .expect("the request stream is open");
        let call = client.telemetry(raw::request(
            CHECKER,
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ));
        let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(5), call).await else {
            reopen.pause().await;
            continue;
        };
        reopen = comet_tests::Retry::new(REOPEN, WAIT);
        let mut stream = stream.into_inner();
        while !stop.load(Ordering::Relaxed) {
            // Bounded so that the stop flag is seen.
            let cmd = match tokio::time::timeout(Duration::from_millis(200), stream.message()).await
            {
                Err(_) => continue,
                Ok(Ok(Some(cmd))) => cmd,
                Ok(_) => break,
            };
            let Some(Command::RecoverOrphanedTransactionCommand(check)) = cmd.command else {
                continue;
            };
            let m = check.message.unwrap_or_default();
            let id = m.system_properties.unwrap_or_default().message_id;
            let seq = String::from_utf8_lossy(&m.body)
                .split_once(':')
                .and_then(|(_, s)| s.parse().ok())
                .expect("a half message of this test");
            ledger
                .lock()
                .checks
                .entry(id.clone())
                .or_default()
                .push(Instant::now());
            progress.send_modify(|_| {});
            let source = pb::TransactionSource::SourceServerCheck;
            let fate = TxFate::of(seq);
            let answered = end_transaction(
                &mut client,
                CHECKER,
                &id,
                check.transaction_id,
                fate,
                source,
            )
            .await;
            // A failed answer is asked again at the next check interval.
            if let Err((code, why)) = answered {
                let code = format!("EndTransaction (check) {code}");
                let mut l = ledger.lock();
                *l.failures.entry(code.clone()).or_default() += 1;
                l.samples.entry(code).or_insert(why);
            }
        }
        drop(commands);
    }
}

/// What became of the transactions.
#[derive(Debug, Default)]
struct TxReport {
    /// Acknowledged half messages rolled back (by the producer or on a check).
    rolled_back: usize,
    /// Deliveries of those.
    rolled_back_delivered: usize,
    /// Acknowledged half messages the producer left open.
    left_open: usize,
    /// Of those, checked back at least once.
    checked: usize,
    /// Of those, first checked after a master fault that struck after their send (the new
    /// master checked them).
    checked_after_failover: usize,
}

/// The checker's findings for one kind.
#[derive(Debug, Default)]
struct KindReport {
    acknowledged: usize,
    delivered: usize,
    deliveries: usize,
    lost: usize,
    /// Delivered again after a successful ack, with no fault within the bound of that ack.
    duplicated_beyond_bound: usize,
    /// Delivered again after a successful ack within the bound, or as a copy of a retried send.
    duplicated_within_bound: usize,
    out_of_order: usize,
    /// Left in flight and delivered again before its invisible time, beyond the bound.
    early_beyond_bound: usize,
    /// Left in flight, delivered again.
    mid_flight_returned: usize,
    /// Delay messages delivered before they were due.
    before_due: usize,
    /// Latest delay delivery after its due time.
    max_lateness_ms: i64,
    /// The failover time as this kind's producer saw it: its longest wait between two
    /// acknowledged sends.
    max_send_gap: Duration,
}

/// The checker's verdict.
#[derive(Debug)]
struct Verdict {
    kinds: BTreeMap<Kind, KindReport>,
    /// Each fault, when it struck (since the workload started), how long the deployment took
    /// to recover from it and how long until what it struck was back.
    faults: Vec<(String, Duration, Option<Duration>, Option<Duration>)>,
    /// Each delivery beyond a bound, described.
    findings: Vec<String>,
    tx: TxReport,
    unexpected: usize,
    failures: BTreeMap<String, u64>,
    samples: BTreeMap<String, String>,
}

/// Whether `at` lies within the bound of a fault: from [`SYNC_INTERVAL`] before the fault
/// began (state the replicas had not received yet) until the deployment recovered (acks and
/// pops served meanwhile, e.g. by a replica while the set had no master), or until its effects
/// ended ([`Workload::settled`]), with
/// [`BOUND_SLACK`] on both sides.
fn fault_near(faults: &[Fault], at: Instant) -> bool {
    faults.iter().any(|f| {
        let end = f.settled.or(f.recovered).unwrap_or(f.began);
        at + SYNC_INTERVAL + BOUND_SLACK >= f.began && at <= end + BOUND_SLACK
    })
}

impl Verdict {
    fn check(l: &Ledger) -> Verdict {
        let mut kinds: BTreeMap<Kind, KindReport> = Kind::ALL
            .iter()
            .map(|k| (*k, KindReport::default()))
            .collect();
        for s in l.sent.values() {
            kinds.entry(s.kind).or_default().acknowledged += 1;
        }
        for (kind, acks) in &l.acks {
            kinds.entry(*kind).or_default().max_send_gap = acks
                .windows(2)
                .map(|w| w[1].saturating_duration_since(w[0]))
                .max()
                .unwrap_or_default();
        }
        let mut unexpected = 0;
        let t0 = l.t0.unwrap_or_else(Instant::now);
        let since = |at: Instant| format!("+{} ms", at.saturating_duration_since(t0).as_millis());
        // Deliveries beyond a bound, for the report.
        let mut findings = Vec::new();
        // Per message id: its previous delivery.
        let mut previous: HashMap<&str, &Delivery> = HashMap::new();
        let mut max_seq: HashMap<&str, u64> = HashMap::new();
        for d in &l.deliveries {
            let r = kinds.entry(d.kind).or_default();
            r.deliveries += 1;
            if d.id.starts_with("direct-") {
                // Written only to a partitioned master: cut with its divergent tail.
                unexpected += 1;
            }
            match previous.insert(d.id.as_str(), d) {
                None => {
                    r.delivered += 1;
                    if d.kind == Kind::Fifo && d.group != "alone" && !d.group.starts_with("probe") {
                        let max = max_seq.entry(d.group.as_str()).or_insert(0);
                        if d.seq < *max {
                            r.out_of_order += 1;
                        }
                        *max = (*max).max(d.seq);
                    }
                    if let Some(due) = l.sent.get(&d.id).and_then(|s| s.due_ms) {
                        // The broker's timer precision: it may fire up to a slot early.
                        if d.at_ms + 100 < due {
                            r.before_due += 1;
                        }
                        r.max_lateness_ms = r.max_lateness_ms.max(d.at_ms - due);
                    }
                }
                Some(prev) if prev.kept => {
                    r.mid_flight_returned += 1;
                    let early = d.at < prev.at + MID_FLIGHT_INVISIBLE - BOUND_SLACK;
                    if early && !fault_near(&l.faults, prev.at) {
                        r.early_beyond_bound += 1;
                        findings.push(format!(
                            "{:?} {}: left in flight at {}, back at {}",
                            d.kind,
                            d.id,
                            since(prev.at),
                            since(d.at)
                        ));
                    }
                }
                Some(_) => {
                    let excused = l.ack_failed.contains(&d.id)
                        || l.sent.get(&d.id).is_some_and(|s| s.retried);
                    // The ack of the previous delivery: the last one answered before this one.
                    let acked = l
                        .acked_at
                        .get(&d.id)
                        .and_then(|v| v.iter().rev().find(|at| **at <= d.at));
                    let within = excused || acked.is_none_or(|at| fault_near(&l.faults, *at));
                    if within {
                        r.duplicated_within_bound += 1;
                    } else {
                        r.duplicated_beyond_bound += 1;
                        findings.push(format!(
                            "{:?} {}: acknowledged at {}, delivered again at {}",
                            d.kind,
                            d.id,
                            acked.map_or("-".to_owned(), |at| since(*at)),
                            since(d.at)
                        ));
                    }
                }
            }
        }
        let seen: HashSet<&str> = l.deliveries.iter().map(|d| d.id.as_str()).collect();
        for (id, s) in &l.sent {
            if !seen.contains(id.as_str()) {
                kinds.entry(s.kind).or_default().lost += 1;
            }
        }
        let mut tx = TxReport {
            rolled_back: l.rolled_back.len(),
            rolled_back_delivered: l
                .deliveries
                .iter()
                .filter(|d| l.rolled_back.contains(&d.id))
                .count(),
            left_open: l.unresolved.len(),
            ..TxReport::default()
        };
        for (id, sent_at) in &l.unresolved {
            let Some(first) = l.checks.get(id).and_then(|v| v.iter().min()) else {
                continue;
            };
            tx.checked += 1;
            if l.faults
                .iter()
                .any(|f| f.master && *sent_at < f.began && f.began <= *first)
            {
                tx.checked_after_failover += 1;
            }
        }
        Verdict {
            kinds,
            findings,
            faults: l
                .faults
                .iter()
                .map(|f| {
                    let after = |t: Instant| t - f.began;
                    let at = f.began.saturating_duration_since(t0);
                    (
                        f.what.clone(),
                        at,
                        f.recovered.map(after),
                        f.back.map(after),
                    )
                })
                .collect(),
            tx,
            unexpected,
            failures: l.failures.clone(),
            samples: l.samples.clone(),
        }
    }

    fn print(&self) {
        println!(
            "ha checker   | acknowledged | delivered | deliveries | lost | dup>bound | \
             dup<=bound | out of order | mid-flight back (early>bound) | before due | max late \
             | failover (max send gap)"
        );
        for (k, r) in &self.kinds {
            println!(
                "{:<12} | {:>12} | {:>9} | {:>10} | {:>4} | {:>9} | {:>10} | {:>12} | {:>15} ({}) \
                 | {:>10} | {} ms | {} ms",
                format!("{k:?}"),
                r.acknowledged,
                r.delivered,
                r.deliveries,
                r.lost,
                r.duplicated_beyond_bound,
                r.duplicated_within_bound,
                r.out_of_order,
                r.mid_flight_returned,
                r.early_beyond_bound,
                r.before_due,
                r.max_lateness_ms,
                r.max_send_gap.as_millis()
            );
        }
        println!(
            "{:<56} | struck at | recovered after | back after",
            "fault (recovered: new master serving, or new controller leader)"
        );
        let ms =
            |t: &Option<Duration>| t.map_or("-".to_owned(), |t| format!("{} ms", t.as_millis()));
        for (what, at, recovered, back) in &self.faults {
            println!(
                "{what:<56} | {:>9} | {:>15} | {:>10}",
                format!("+{} ms", at.as_millis()),
                ms(recovered),
                ms(back)
            );
        }
        for f in &self.findings {
            println!("beyond a bound: {f}");
        }
        let t = &self.tx;
        println!(
            "transactions: {} rolled back ({} delivered), {} left open ({} checked back, {} first \
             checked after a failover of the master)",
            t.rolled_back,
            t.rolled_back_delivered,
            t.left_open,
            t.checked,
            t.checked_after_failover
        );
        println!(
            "unexpected {}; send failures retried: {:?}; first message of each: {:?}",
            self.unexpected, self.failures, self.samples
        );
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
    let mut m = message(Kind::Fifo, id, "direct", 0, None);
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
            let m = message(Kind::Fifo, &id, &group, n, None);
            n += 1;
            send_once(&mut client, m).await.is_ok()
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
    let paused = work.fault(&format!("SIGSTOP replica {}", replicas[0]));
    d.brokers[replicas[0]].pause();
    d.wait_set("paused replica leaves the set", |s| {
        !s.sync_state_set.contains(&(replicas[0] as u64))
    })
    .await;
    work.wait_progress(30, "one replica paused, two in sync")
        .await;
    let paused_too = work.fault(&format!(
        "SIGSTOP replica {} too: the master is alone",
        replicas[1]
    ));
    d.brokers[replicas[1]].pause();
    d.wait_set("master alone in the set", |s| s.sync_state_set.len() == 1)
        .await;
    let mut client = MessagingServiceClient::connect(format!("http://{proxy}"))
        .await
        .expect("connect to proxy");
    let refused = send_once(
        &mut client,
        message(Kind::Fifo, "alone-0", "alone", 0, None),
    )
    .await;
    assert_eq!(
        refused.map_err(|(code, _)| code),
        Err("HaNotAvailable".to_owned()),
        "fewer in-sync replicas than required must be refused"
    );
    println!("--- SIGCONT both: they catch up and rejoin");
    d.brokers[replicas[0]].resume();
    d.brokers[replicas[1]].resume();
    d.wait_all_in_sync("resumed replicas rejoin").await;
    work.recovered();
    work.back(paused);
    work.back(paused_too);
    work.wait_progress(30, "after resuming").await;

    // 2. kill -9 the master.
    let m = d.master();
    let epoch = d.set().master_epoch;
    let killed_master = work.master_fault(&format!("kill -9 master {m}"));
    let killed = Instant::now();
    d.brokers[m].kill();
    let took = first_ack(&proxy, "kill").await;
    let set = d.wait_new_master(m, epoch).await;
    work.recovered();
    println!(
        "failover after kill -9: first acknowledged send after {took:?}, master {} at epoch {}",
        set.master_broker_id, set.master_epoch
    );
    failovers.push(killed.elapsed().min(took));
    work.wait_progress(30, "after the master was killed").await;
    d.brokers[m].start().await;
    d.wait_all_in_sync("killed master rejoins as a replica")
        .await;
    work.back(killed_master);

    // 3. Partition the master.
    let m = d.master();
    let epoch = d.set().master_epoch;
    let real = d.brokers[m].real_addr();
    let partitioned = work.master_fault(&format!("partition master {m}"));
    let cut = Instant::now();
    d.partition_broker(m);
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
    work.recovered();
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
    d.heal_broker(m);
    let set = d.wait_all_in_sync("healed master rejoins").await;
    work.back(partitioned);
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

    // 4. Chaos: kill, partition and pause cycles.
    for cycle in 0..CHAOS_CYCLES {
        let m = d.master();
        let epoch = d.set().master_epoch;
        let started = Instant::now();
        let fault = match cycle % 3 {
            0 => {
                let f = work.master_fault(&format!("chaos {cycle}: kill -9 master {m}"));
                d.brokers[m].kill();
                failovers.push(first_ack(&proxy, &format!("c{cycle}")).await);
                d.wait_new_master(m, epoch).await;
                work.recovered();
                d.brokers[m].start().await;
                f
            }
            1 => {
                let f = work.master_fault(&format!("chaos {cycle}: partition master {m}"));
                d.partition_broker(m);
                failovers.push(first_ack(&proxy, &format!("c{cycle}")).await);
                d.wait_new_master(m, epoch).await;
                work.recovered();
                d.heal_broker(m);
                f
            }
            _ => {
                // Frozen, its lease runs out; woken, it finds itself replaced, refuses writes
                // (its lease is over) and rejoins as a replica, cutting what it wrote alone.
                let f = work.master_fault(&format!("chaos {cycle}: SIGSTOP master {m}"));
                d.brokers[m].pause();
                failovers.push(first_ack(&proxy, &format!("c{cycle}")).await);
                d.wait_new_master(m, epoch).await;
                work.recovered();
                d.brokers[m].resume();
                f
            }
        };
        d.wait_all_in_sync("after a chaos cycle").await;
        work.back(fault);
        work.wait_progress(20, "after a chaos cycle").await;
        println!("    cycle {cycle} took {:?}", started.elapsed());
    }

    // 5. Other members: a replica, the controller leader, a master that never returns.
    let m = d.master();
    let r = (0..3).find(|i| *i != m).expect("a replica");
    let killed_replica = work.fault(&format!("kill -9 replica {r}"));
    d.brokers[r].kill();
    d.wait_set("killed replica leaves the set", |s| {
        !s.sync_state_set.contains(&(r as u64))
    })
    .await;
    work.wait_progress(20, "with a replica killed").await;
    d.brokers[r].start().await;
    d.wait_all_in_sync("killed replica rejoins").await;
    work.back(killed_replica);
    let m = d.master();
    let r = (0..3).find(|i| *i != m).expect("a replica");
    let partitioned_replica = work.fault(&format!("partition replica {r}"));
    d.partition_broker(r);
    // Cut off from the controllers, the proxy and the master (its stream from it too): the
    // controllers count it as gone, the master drops it from the sync-state set, and sends
    // go on with the other two.
    d.wait_set(
        "partitioned replica counts as gone and leaves the set",
        |s| {
            s.members
                .iter()
                .any(|x| x.broker_id == r as u64 && !x.alive)
                && !s.sync_state_set.contains(&(r as u64))
        },
    )
    .await;
    work.wait_progress(20, "with a replica partitioned").await;
    d.heal_broker(r);
    d.wait_all_in_sync("healed replica rejoins").await;
    work.back(partitioned_replica);
    let leader = d.cluster.wait_leader().await;
    let killed_leader = work.fault(&format!("kill controller leader {leader}"));
    let started = Instant::now();
    d.cluster.kill_controller(leader).await;
    let next = d.cluster.wait_leader().await;
    work.recovered();
    println!(
        "controller {next} leads {:?} after the leader was killed",
        started.elapsed()
    );
    work.wait_progress(20, "after the controller leader was killed")
        .await;
    d.cluster.restart_controller(leader).await;
    d.cluster.wait_leader().await;
    work.back(killed_leader);

    // The controller leader partitioned: cut off from the other controllers, the brokers and
    // the proxy, both ways, while it keeps running (and believing it leads). The others
    // elect a new leader; the brokers' and the proxy's connections to the old one stop
    // answering their pings, so they move to the new one and renew their leases there, and
    // a kill of the master meanwhile is failed over by the new leader.
    let leader = d.cluster.wait_leader().await;
    let cut_leader = work.fault(&format!("partition controller leader {leader}"));
    let started = Instant::now();
    d.cluster.partition_controller(leader);
    let next = d.cluster.wait_leader().await;
    work.recovered();
    println!(
        "controller {next} leads {:?} after the leader was partitioned",
        started.elapsed()
    );
    work.wait_progress(20, "with the controller leader partitioned")
        .await;
    let m = d.master();
    let epoch = d.set().master_epoch;
    let killed_meanwhile = work.master_fault(&format!(
        "kill -9 master {m}, controller {leader} still cut off"
    ));
    d.brokers[m].kill();
    failovers.push(first_ack(&proxy, "ctl-partition").await);
    let set = d.wait_new_master(m, epoch).await;
    work.recovered();
    println!(
        "new master {} at epoch {} elected by controller {next}",
        set.master_broker_id, set.master_epoch
    );
    d.brokers[m].start().await;
    d.wait_all_in_sync("killed master rejoins, the old controller leader cut off")
        .await;
    work.back(killed_meanwhile);
    println!("--- heal controller {leader}: it follows the new leader and catches up");
    d.cluster.heal_controller(leader);
    let agreed = d.cluster.wait_leader().await;
    println!("controllers agree again: controller {agreed} leads");
    work.back(cut_leader);
    work.settled(cut_leader);
    d.wait_all_in_sync("every controller shows the set in sync after the heal")
        .await;
    work.wait_progress(20, "after the controller partition healed")
        .await;

    let m = d.master();
    let epoch = d.set().master_epoch;
    work.master_fault(&format!("kill -9 master {m}, for good"));
    d.brokers[m].kill();
    failovers.push(first_ack(&proxy, "gone").await);
    d.wait_new_master(m, epoch).await;
    work.recovered();
    work.wait_progress(30, "after the master left for good")
        .await;

    let verdict = work.finish().await;
    verdict.print();
    failovers.sort();
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
    for (kind, r) in &verdict.kinds {
        assert!(r.acknowledged > 0, "{kind:?}: nothing was acknowledged");
        assert_eq!(r.lost, 0, "{kind:?}: acknowledged messages were lost");
        assert_eq!(r.out_of_order, 0, "{kind:?}: FIFO order was broken");
        assert_eq!(
            r.duplicated_beyond_bound, 0,
            "{kind:?}: acknowledged messages came back beyond the sync bound"
        );
        assert_eq!(
            r.early_beyond_bound, 0,
            "{kind:?}: messages in flight came back before their invisible time"
        );
        assert_eq!(r.before_due, 0, "{kind:?}: delivered before due");
    }
    assert!(
        verdict.kinds[&Kind::Normal].mid_flight_returned > 0,
        "no message was left in flight"
    );
    assert_eq!(verdict.unexpected, 0, "messages nobody sent were received");
    let t = &verdict.tx;
    assert!(t.rolled_back > 0 && t.left_open > 0, "{t:?}");
    assert_eq!(
        t.rolled_back_delivered, 0,
        "rolled back messages were delivered"
    );
    assert_eq!(
        t.checked, t.left_open,
        "open transactions were never checked back"
    );
    assert!(
        t.checked_after_failover > 0,
        "no open transaction was checked by a new master: {t:?}"
    );
    let internal: Vec<_> = verdict
        .failures
        .keys()
        .filter(|k| k.ends_with("InternalServerError"))
        .collect();
    assert!(
        internal.is_empty(),
        "calls failed with INTERNAL_SERVER_ERROR: {internal:?} {:?}",
        verdict.samples
    );
    d.stop().await;
}

// ------------------------------------------------------------------------------ ASYNC window

const ASYNC_TOPIC: &str = "ha-async";
const ASYNC_GROUP: &str = "ha-async-consumers";
/// `broker.replica_max_lag_time` of the deployment ([`HaOptions`] `fast`).
const ASYNC_LAG_TIME: Duration = Duration::from_millis(1000);
/// `broker.replica_max_lag_bytes` of the deployment (the default).
const ASYNC_LAG_BYTES: usize = 256 << 20;
/// Producers sending at once, so that the kill meets sends in every stage.
const ASYNC_PRODUCERS: usize = 4;

/// The ASYNC window, measured: two brokers in `async` replication, producers sending through
/// the proxy as fast as they are acknowledged, a kill -9 of the master that never returns.
/// Every acknowledged message the new master does not serve is lost; each must have been
/// acknowledged within `replica_max_lag_time` of the kill, and together they may not exceed
/// `replica_max_lag_bytes`.
async fn async_window() {
    let mut d = HaDeployment::start(HaOptions {
        brokers: 2,
        mode: comet::config::ReplicationModeKey::Async,
        min_in_sync: 1,
        ..HaOptions::default()
    })
    .await;
    admin::topic(
        &d.cluster.admin(),
        &TopicCommand::Create(TopicSpec {
            name: ASYNC_TOPIC.to_owned(),
            // One queue: an empty receive means the new master served everything it holds.
            queues: 1,
            message_type: TopicType::Normal,
            broker_sets: vec![SET.to_owned()],
            perm: admin::Perm::Rw,
        }),
    )
    .await
    .expect("topic created");
    admin::group(
        &d.cluster.admin(),
        &GroupCommand::Create(GroupSpec {
            name: ASYNC_GROUP.to_owned(),
            max_retries: 16,
            fifo: false,
            broadcast: false,
            from_start: false,
            priority_percent: None,
            backoff: None,
        }),
    )
    .await
    .expect("group created");
    d.cluster
        .wait_metadata("the ASYNC topic routable", |m| {
            m.topics.iter().any(|t| t.name == ASYNC_TOPIC)
                && m.groups.iter().any(|g| g.name == ASYNC_GROUP)
        })
        .await;
    let proxy = d.cluster.access_url();
    // Acknowledged sends: id, when, body size.
    let acked = Arc::new(Mutex::new(Vec::<(String, Instant, usize)>::new()));
    let count = Arc::new(watch::Sender::new(0usize));
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for p in 0..ASYNC_PRODUCERS {
        let (acked, count, stop, proxy) = (
            Arc::clone(&acked),
            Arc::clone(&count),
            Arc::clone(&stop),
            proxy.clone(),
        );
        producers.push(tokio::spawn(async move {
            let mut client = MessagingServiceClient::connect(format!("http://{proxy}"))
                .await
                .expect("connect to proxy");
            let mut seq = 0u64;
            const WHAT: &str = "an ASYNC send acknowledged";
            let mut retry = comet_tests::Retry::new(WHAT, WAIT);
            while !stop.load(Ordering::Relaxed) {
                let id = format!("async-{p}-{seq:08}");
                seq += 1;
                let mut m = message(Kind::Normal, &id, "async", seq, None);
                m.topic = resource(ASYNC_TOPIC);
                let size = m.body.len();
                if send_once(&mut client, m).await.is_ok() {
                    acked.lock().push((id, Instant::now(), size));
                    count.send_modify(|n| *n += 1);
                    retry = comet_tests::Retry::new(WHAT, WAIT);
                } else {
                    // Not acknowledged: the next message goes on after the suite's retry
                    // pause (the set may be between masters).
                    retry.pause().await;
                }
            }
        }));
    }
    let wait_acked = async |n: usize, what: &str| {
        let mut rx = count.subscribe();
        let target = *rx.borrow_and_update() + n;
        let reached = tokio::time::timeout(WAIT, rx.wait_for(|c| *c >= target))
            .await
            .is_ok();
        assert!(
            reached,
            "{what}: {target} sends not acknowledged within {WAIT:?}"
        );
    };
    wait_acked(300, "before the kill").await;
    let m = d.master();
    let epoch = d.set().master_epoch;
    println!("--- ASYNC: kill -9 master {m}, for good");
    let killed = Instant::now();
    d.brokers[m].kill();
    d.wait_new_master(m, epoch).await;
    wait_acked(50, "after the failover").await;
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.expect("producer task");
    }

    // Everything the new master serves, until a receive finds the queue empty.
    let mut client = MessagingServiceClient::connect(format!("http://{proxy}"))
        .await
        .expect("connect to proxy");
    let mut received = HashSet::new();
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "the ASYNC topic did not drain within {WAIT:?}"
        );
        let req = raw::receive_request(
            ASYNC_GROUP,
            raw::queue(ASYNC_TOPIC, -1, Some(SET)),
            32,
            Duration::from_secs(30),
            Duration::from_millis(500),
        );
        let frames = raw::receive_frames(&mut client, raw::request(CLIENT, req)).await;
        let before = received.len();
        for msg in raw::messages(&frames) {
            if let Some(sp) = &msg.system_properties {
                received.insert(sp.message_id.clone());
            }
        }
        if received.len() == before {
            break;
        }
    }
    let acked = std::mem::take(&mut *acked.lock());
    let lost: Vec<&(String, Instant, usize)> = acked
        .iter()
        .filter(|(id, _, _)| !received.contains(id))
        .collect();
    let lost_bytes: usize = lost.iter().map(|(_, _, size)| size).sum();
    let oldest = lost
        .iter()
        .map(|(_, at, _)| killed.saturating_duration_since(*at))
        .max();
    println!(
        "ASYNC window: {} acknowledged, {} lost ({lost_bytes} bytes of body), the oldest \
         acknowledged {oldest:?} before the kill; window {ASYNC_LAG_TIME:?}, {ASYNC_LAG_BYTES} bytes",
        acked.len(),
        lost.len(),
    );
    for (id, at, _) in &lost {
        assert!(
            *at + ASYNC_LAG_TIME >= killed,
            "{id} was acknowledged {:?} before the kill and lost",
            killed - *at
        );
    }
    assert!(lost_bytes <= ASYNC_LAG_BYTES);
    d.stop().await;
}
