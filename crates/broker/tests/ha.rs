//! Replicated broker sets in one process: two `HaBroker`s on real gRPC ports, a hand-driven
//! metadata watch standing in for the controller (it applies `AlterSyncStateSet` like the
//! controller does, fenced by epoch).
//!
//! SYNC mode: a send is acknowledged only once the in-sync replica holds it; a replica that
//! stops leaves the sync-state set and sends fail with HA_NOT_AVAILABLE (min 2 in sync); it
//! comes back, catches up and rejoins. Failover: the replica becomes master at the next epoch;
//! the old master returns as a replica and cuts the tail it wrote alone.
//!
//! Timers and transactions: a replica follows the master's timer and transaction records, so
//! a promoted replica delivers every pending delay message once and checks back every
//! unresolved transaction with its check count carried over.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use comet_broker::{ControllerLink, HaBroker, HaConfig, HaRole, HaStatus, ReplicationMode};
use comet_proto::apache::rocketmq::v2::{
    Code, Message, MessageQueue, PullMessageRequest, TransactionResolution,
};
use comet_proto::comet::v1::broker_service_server::{BrokerService, BrokerServiceServer};
use comet_proto::comet::v1::replication_service_server::ReplicationServiceServer;
use comet_proto::comet::v1::{
    AlterSyncStateSetRequest, BrokerMember, BrokerSet, ClusterMetadata, PullMessageResponse,
    QueryMessageRequest, query_message_request,
};
use common::*;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(20);

/// The controller's part: the metadata, and AlterSyncStateSet applied to it.
struct FakeController {
    meta: watch::Sender<Arc<ClusterMetadata>>,
}

#[tonic::async_trait]
impl ControllerLink for FakeController {
    async fn alter_sync_state_set(
        &self,
        req: AlterSyncStateSetRequest,
    ) -> Result<BrokerSet, tonic::Status> {
        let mut out = Err(tonic::Status::failed_precondition("stale master epoch"));
        self.meta.send_modify(|m| {
            let mut m2 = ClusterMetadata::clone(m);
            m2.revision += 1;
            if let Some(set) = m2.broker_sets.iter_mut().find(|s| s.name == req.broker_set)
                && set.master_broker_id == req.master_broker_id
                && set.master_epoch == req.master_epoch
            {
                let mut ids = req.sync_state_set.clone();
                ids.sort_unstable();
                set.sync_state_set = ids;
                out = Ok(set.clone());
                *m = Arc::new(m2);
            }
        });
        out
    }
}

fn cluster_meta(addrs: &[SocketAddr]) -> ClusterMetadata {
    let mut m = metadata(&[("t", 1)], &[]);
    m.broker_sets = vec![BrokerSet {
        name: SET.into(),
        members: addrs
            .iter()
            .enumerate()
            .map(|(i, a)| BrokerMember {
                broker_set: SET.into(),
                broker_id: i as u64,
                address: a.to_string(),
                alive: true,
                last_heartbeat_ms: 0,
            })
            .collect(),
        master_broker_id: 0,
        master_epoch: 1,
        sync_state_set: vec![0],
    }];
    m
}

fn ha_config() -> HaConfig {
    HaConfig {
        mode: ReplicationMode::Sync,
        min_in_sync_replicas: 2,
        sync_timeout: Duration::from_secs(3),
        max_lag_time: Duration::from_millis(800),
        heartbeat_interval: Duration::from_millis(100),
        consumer_offsets_interval: Duration::from_millis(200),
        chunk_bytes: 64 << 10,
        ..HaConfig::default()
    }
}

struct Member {
    ha: Option<HaBroker>,
    server: JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Member {
    fn svc(&self) -> comet_broker::BrokerGrpc {
        self.ha.as_ref().unwrap().service()
    }

    fn status(&self) -> watch::Receiver<HaStatus> {
        self.ha.as_ref().unwrap().status()
    }

    async fn stop(mut self, crash: bool) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.server.abort();
        let _ = (&mut self.server).await;
        let ha = self.ha.take().unwrap();
        if crash {
            ha.abandon().await;
        } else {
            ha.shutdown().await.unwrap();
        }
    }
}

async fn start_member(
    dir: &Path,
    id: u64,
    listener: TcpListener,
    ctl: &Arc<FakeController>,
    lease: &watch::Receiver<Option<std::time::Instant>>,
) -> Member {
    let mut cfg = config(dir);
    cfg.broker_id = id;
    // Transactions: first check 500 ms after the send, then every 2 s, at most 3 checks.
    cfg.transaction_timeout = Duration::from_millis(500);
    cfg.transaction_check_interval = Duration::from_secs(2);
    cfg.transaction_max_checks = 3;
    cfg.advertised_addr = listener.local_addr().unwrap().to_string();
    let ha = HaBroker::start(
        cfg,
        ha_config(),
        ctl.meta.subscribe(),
        lease.clone(),
        Arc::clone(ctl) as Arc<dyn ControllerLink>,
    )
    .await
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .add_service(BrokerServiceServer::new(ha.service()))
        .add_service(ReplicationServiceServer::new(ha.replication_service()));
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let server = tokio::spawn(async move {
        let _ = router
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.await;
            })
            .await;
    });
    Member {
        ha: Some(ha),
        server,
        stop: Some(stop),
    }
}

async fn wait_role(m: &Member, role: HaRole, epoch: u64) {
    let mut rx = m.status();
    tokio::time::timeout(WAIT, rx.wait_for(|s| s.role == role && s.epoch == epoch))
        .await
        .unwrap_or_else(|_| panic!("not {role:?} at epoch {epoch}: {:?}", m.status().borrow()))
        .unwrap();
}

async fn wait_sss(ctl: &FakeController, want: &[u64]) {
    let mut rx = ctl.meta.subscribe();
    tokio::time::timeout(
        WAIT,
        rx.wait_for(|m| m.broker_sets[0].sync_state_set == want),
    )
    .await
    .unwrap_or_else(|_| panic!("sync-state set never became {want:?}"))
    .unwrap();
}

async fn send_code(m: &Member, id: &str) -> Code {
    let r = send(
        &m.svc(),
        vec![msg("t", 0, id, Some("x"), &format!("body-{id}"))],
    )
    .await;
    code(&r.entries[0].status)
}

/// Whether `m` serves message `id` (read side: index lookup).
async fn has_message(m: &Member, id: &str) -> bool {
    let r = m
        .svc()
        .query_message(tonic::Request::new(QueryMessageRequest {
            topic: res("t"),
            query: Some(query_message_request::Query::MessageId(id.into())),
        }))
        .await
        .unwrap()
        .into_inner();
    code(&r.status) == Code::Ok
}

/// Up to 32 messages of queue 0 of `t` on `m` from `offset`, long-polling up to `wait` (a
/// group that only pulls moves no offsets).
async fn pull_page(m: &Member, offset: i64, wait: Duration) -> PullMessageResponse {
    m.svc()
        .pull_message(tonic::Request::new(PullMessageRequest {
            group: res("ha-probe"),
            message_queue: Some(MessageQueue {
                topic: res("t"),
                id: 0,
                ..Default::default()
            }),
            offset,
            batch_size: 32,
            filter_expression: None,
            long_polling_timeout: Some(wait.try_into().unwrap()),
        }))
        .await
        .unwrap()
        .into_inner()
}

/// Waits (bounded) until `m` serves message `id`. Each round long-polls PullMessage on queue 0
/// of `t` from where the last round ended; the broker answers as soon as its store dispatches
/// more of the queue (a record enters the index before its consume queue), so this wakes on
/// replication progress. A group that only pulls moves no offsets.
async fn wait_has(m: &Member, id: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut offset = 0;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "{id} never arrived within {WAIT:?}");
        let r = pull_page(m, offset, left).await;
        if r.messages.iter().any(|msg| sp(msg).message_id == id) {
            break;
        }
        // OK: read on; MESSAGE_NOT_FOUND: the poll ran out; ILLEGAL_OFFSET: the queue starts
        // or ends elsewhere. Each answers the offset to go on from.
        let c = code(&r.status);
        assert!(
            matches!(c, Code::Ok | Code::MessageNotFound | Code::IllegalOffset),
            "pulling for {id}: {:?}",
            r.status
        );
        offset = r.next_offset;
    }
    assert!(
        has_message(m, id).await,
        "{id} was pulled but not found by id"
    );
}

/// What a two-member set needs before its members start: data directories, bound listeners
/// (`a` is broker 0, `b` broker 1) and the controller, with 0 master at epoch 1.
struct Pair {
    da: tempfile::TempDir,
    db: tempfile::TempDir,
    la: TcpListener,
    lb: TcpListener,
    aa: SocketAddr,
    ab: SocketAddr,
    ctl: Arc<FakeController>,
}

impl Pair {
    async fn bind() -> Pair {
        let la = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let lb = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (aa, ab) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
        Pair {
            da: tempfile::tempdir().unwrap(),
            db: tempfile::tempdir().unwrap(),
            la,
            lb,
            aa,
            ab,
            ctl: Arc::new(FakeController {
                meta: watch::channel(Arc::new(cluster_meta(&[aa, ab]))).0,
            }),
        }
    }
}

fn elect(ctl: &FakeController, master: u64, epoch: u64, dead: u64) {
    ctl.meta.send_modify(|m| {
        let mut m2 = ClusterMetadata::clone(m);
        m2.revision += 1;
        let set = &mut m2.broker_sets[0];
        set.master_broker_id = master;
        set.master_epoch = epoch;
        set.sync_state_set = vec![master];
        for mem in &mut set.members {
            mem.alive = mem.broker_id != dead;
        }
        *m = Arc::new(m2);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_sync_replication_when_replicas_stop_and_masters_fail_should_keep_every_ack() {
    let Pair {
        da,
        db,
        la,
        lb,
        aa,
        ab,
        ctl,
    } = Pair::bind().await;
    let far = std::time::Instant::now() + Duration::from_secs(3600);
    let (_lease_tx, lease) = watch::channel(Some(far));

    let a = start_member(da.path(), 0, la, &ctl, &lease).await;
    let b = start_member(db.path(), 1, lb, &ctl, &lease).await;
    wait_role(&a, HaRole::Master, 1).await;
    wait_role(&b, HaRole::Replica, 1).await;
    // The replica catches up and joins; until then SYNC sends cannot be acknowledged.
    wait_sss(&ctl, &[0, 1]).await;
    for i in 0..30 {
        assert_eq!(send_code(&a, &format!("m{i}")).await, Code::Ok);
    }
    wait_has(&b, "m29").await;

    // The replica stops: it leaves the set and SYNC sends fail with HA_NOT_AVAILABLE.
    b.stop(false).await;
    assert_eq!(send_code(&a, "lonely-1").await, Code::HaNotAvailable);
    wait_sss(&ctl, &[0]).await;
    assert_eq!(send_code(&a, "lonely-2").await, Code::HaNotAvailable);

    // It comes back, catches up (the unacknowledged messages included) and rejoins.
    let lb = TcpListener::bind(ab).await.unwrap();
    let b = start_member(db.path(), 1, lb, &ctl, &lease).await;
    wait_sss(&ctl, &[0, 1]).await;
    assert_eq!(send_code(&a, "m30").await, Code::Ok);
    wait_has(&b, "lonely-2").await;
    wait_has(&b, "m30").await;

    // Partition: the replica stops again and the master writes a tail alone, then crashes.
    b.stop(false).await;
    wait_sss(&ctl, &[0]).await;
    for i in 0..5 {
        assert_eq!(
            send_code(&a, &format!("tail{i}")).await,
            Code::HaNotAvailable
        );
    }
    a.stop(true).await;

    // The replica is elected at epoch 2 and writes.
    elect(&ctl, 1, 2, 0);
    let lb = TcpListener::bind(ab).await.unwrap();
    let b = start_member(db.path(), 1, lb, &ctl, &lease).await;
    wait_role(&b, HaRole::Master, 2).await;
    assert_eq!(
        send_code(&b, "e2-alone").await,
        Code::HaNotAvailable,
        "min 2 in sync"
    );

    // The old master returns as a replica: it cuts its tail, copies epoch 2 and rejoins.
    ctl.meta.send_modify(|m| {
        let mut m2 = ClusterMetadata::clone(m);
        m2.revision += 1;
        for mem in &mut m2.broker_sets[0].members {
            mem.alive = true;
        }
        *m = Arc::new(m2);
    });
    let la = TcpListener::bind(aa).await.unwrap();
    let a = start_member(da.path(), 0, la, &ctl, &lease).await;
    wait_role(&a, HaRole::Replica, 2).await;
    wait_sss(&ctl, &[0, 1]).await;
    assert_eq!(send_code(&b, "e2-synced").await, Code::Ok);
    wait_has(&a, "e2-synced").await;
    assert!(has_message(&a, "e2-alone").await);
    assert!(has_message(&a, "m30").await);
    for i in 0..5 {
        assert!(
            !has_message(&a, &format!("tail{i}")).await,
            "tail{i} survived on the old master"
        );
    }
    a.stop(false).await;
    b.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_replicated_master_without_a_lease_when_sending_should_refuse_and_replicas_never_write()
 {
    let Pair {
        da,
        db,
        la,
        lb,
        ctl,
        ..
    } = Pair::bind().await;
    let (lease_tx, lease) = watch::channel(None);
    let a = start_member(da.path(), 0, la, &ctl, &lease).await;
    let b = start_member(db.path(), 1, lb, &ctl, &lease).await;
    wait_role(&a, HaRole::Master, 1).await;
    wait_role(&b, HaRole::Replica, 1).await;
    // With a replica in the sync-state set the master is replaceable, and without a lease it
    // cannot confirm it still is the master.
    wait_sss(&ctl, &[0, 1]).await;
    assert_eq!(send_code(&a, "x").await, Code::HaNotAvailable);
    // The replica never accepts writes.
    assert_eq!(send_code(&b, "y").await, Code::HaNotAvailable);
    lease_tx.send_replace(Some(std::time::Instant::now() + Duration::from_secs(3600)));
    // A poll, not a wait on state: the master applies the lease to its write gate in its own
    // task, and neither `HaStatus` nor anything else public shows the gate, so only a send
    // tells.
    poll_until("the lease opens writes", async || {
        match send_code(&a, "z").await {
            Code::Ok => Ok(()),
            c => Err(format!("{c:?}")),
        }
    })
    .await;
    // The lease runs out: writes stop when it does, whatever else happens. (The deadline is
    // the state waited on here: the clock passing it.)
    let deadline = std::time::Instant::now() + Duration::from_millis(300);
    lease_tx.send_replace(Some(deadline));
    tokio::time::sleep_until(deadline.into()).await;
    assert_eq!(send_code(&a, "w").await, Code::HaNotAvailable);
    wait_has(&b, "z").await;
    a.stop(false).await;
    b.stop(false).await;
}

/// Every message of queue 0 of `t` on `m`, in queue order (PullMessage from offset 0; moves
/// no offsets).
async fn pull_all(m: &Member) -> Vec<Message> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let r = pull_page(m, offset, Duration::from_millis(1)).await;
        if r.messages.is_empty() {
            return out;
        }
        offset = r.next_offset;
        out.extend(r.messages);
    }
}

/// How many copies of message `id` `msgs` hold.
fn copies(msgs: &[Message], id: &str) -> usize {
    msgs.iter().filter(|m| sp(m).message_id == id).count()
}

fn ts_ms(t: &Option<prost_types::Timestamp>) -> i64 {
    let t = t.as_ref().unwrap();
    t.seconds * 1000 + i64::from(t.nanos / 1_000_000)
}

/// Polls `check` until it answers `Ok` and returns its value; panics naming `what` and the
/// last `Err` once [`WAIT`] has passed. The one retry pause of this file, for state inside a
/// broker that nothing signals and only asking shows: its timer statistics, whether its write
/// gate is open, whether the master counts a replica in again. It backs off like
/// `comet_tests::wait_until` (the cluster tests' helper, which a crate test cannot use): from
/// 2 ms, doubling up to 50 ms, so a quick answer is seen quickly and a slow one costs few
/// calls.
async fn poll_until<T>(what: &str, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    const FIRST_PAUSE: Duration = Duration::from_millis(2);
    const MAX_PAUSE: Duration = Duration::from_millis(50);
    let started = tokio::time::Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(last) => last,
        };
        let waited = started.elapsed();
        assert!(
            waited < WAIT,
            "{what}: not reached within {WAIT:?}; last: {last}"
        );
        tokio::time::sleep(pause.min(WAIT - waited)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Waits (bounded by [`WAIT`], [`poll_until`]) until `probe`'s value satisfies `done`.
async fn wait_for<T: std::fmt::Debug>(
    what: &str,
    probe: impl Fn() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    poll_until(what, async || {
        let v = probe();
        if done(&v) {
            Ok(v)
        } else {
            Err(format!("{v:?}"))
        }
    })
    .await
}

/// Starts a SYNC pair with `a` (0) master and `b` (1) in the sync-state set.
async fn synced_pair(
    p: &mut Option<Pair>,
    lease: &watch::Receiver<Option<std::time::Instant>>,
) -> (Member, Member) {
    let Pair { la, lb, .. } = p.as_mut().unwrap();
    let la = std::mem::replace(la, TcpListener::bind("127.0.0.1:0").await.unwrap());
    let lb = std::mem::replace(lb, TcpListener::bind("127.0.0.1:0").await.unwrap());
    let p = p.as_ref().unwrap();
    let a = start_member(p.da.path(), 0, la, &p.ctl, lease).await;
    let b = start_member(p.db.path(), 1, lb, &p.ctl, lease).await;
    wait_role(&a, HaRole::Master, 1).await;
    wait_role(&b, HaRole::Replica, 1).await;
    wait_sss(&p.ctl, &[0, 1]).await;
    (a, b)
}

/// Regression (issue 15, the role-change store-lock race): abandoning a replica aborted its
/// supervisor, which detached the follower task instead of stopping it; while the master kept
/// streaming, the follower held the store, so a restart in the same directory met
/// `Store(Locked)`. The supervisor now joins the old role's tasks before abandoning the
/// instance, and the abandon returns only once the directory is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_replica_following_a_live_master_when_abandoned_should_free_its_directory_for_a_restart()
 {
    let mut pair = Some(Pair::bind().await);
    let far = std::time::Instant::now() + Duration::from_secs(3600);
    let (_lease_tx, lease) = watch::channel(Some(far));
    let (a, b) = synced_pair(&mut pair, &lease).await;
    let p = pair.unwrap();
    for i in 0..10 {
        assert_eq!(send_code(&a, &format!("before{i}")).await, Code::Ok);
    }
    wait_has(&b, "before9").await;

    // A crash of the replica while the master still streams to it, then a restart at once.
    let crashed = tokio::time::Instant::now();
    b.stop(true).await;
    assert!(
        crashed.elapsed() < Duration::from_secs(5),
        "the abandon waited {:?} for the store",
        crashed.elapsed()
    );
    let lb = TcpListener::bind(p.ab).await.unwrap();
    let b = start_member(p.db.path(), 1, lb, &p.ctl, &lease).await;
    wait_role(&b, HaRole::Replica, 1).await;
    assert!(has_message(&b, "before0").await);
    // It rejoins the sync-state set, which may first drop it (it was away longer than the lag
    // limit on a loaded machine): SYNC sends are refused with HA_NOT_AVAILABLE until then, and
    // only a send tells whether the master counts the replica in again.
    let mut n = 0;
    let id = poll_until("the restarted replica rejoins", async || {
        let id = format!("after{n}");
        n += 1;
        match send_code(&a, &id).await {
            Code::Ok => Ok(id),
            c => Err(format!("{c:?}")),
        }
    })
    .await;
    wait_has(&b, &id).await;
    a.stop(false).await;
    b.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_delay_messages_when_the_master_is_lost_should_deliver_each_once_from_the_replica() {
    let mut pair = Some(Pair::bind().await);
    let far = std::time::Instant::now() + Duration::from_secs(3600);
    let (_lease_tx, lease) = watch::channel(Some(far));
    let (a, b) = synced_pair(&mut pair, &lease).await;
    let p = pair.unwrap();

    // Due before the failover (delivered by the old master), during it (while the set has no
    // master) and after it.
    let t0 = now_ms();
    let kinds = [
        ("before", t0 + 300),
        ("during", t0 + 3000),
        ("after", t0 + 6000),
    ];
    for (kind, at) in kinds {
        let msgs = (0..5)
            .map(|i| delayed(&format!("{kind}-{i}"), at))
            .collect();
        let r = send(&a.svc(), msgs).await;
        assert!(
            r.entries.iter().all(|e| code(&e.status) == Code::Ok),
            "{r:?}"
        );
    }
    // The replica holds the 15 timers, then sees the first 5 delivered and lets them go.
    wait_has(&b, "before-4").await;
    let b_svc = b.svc();
    wait_for(
        "replica's pending timers",
        || b_svc.timer_stats().pending,
        |n| *n == 10,
    )
    .await;

    // A restart of the replica loses and duplicates nothing.
    b.stop(false).await;
    let lb = TcpListener::bind(p.ab).await.unwrap();
    let b = start_member(p.db.path(), 1, lb, &p.ctl, &lease).await;
    wait_role(&b, HaRole::Replica, 1).await;
    let b_svc = b.svc();
    wait_for(
        "restarted replica's pending timers",
        || b_svc.timer_stats().pending,
        |n| *n == 10,
    )
    .await;

    // The master dies for good; the "during" timers come due while the set has no master.
    a.stop(true).await;
    let during_due = t0 + 3000;
    let wall = std::time::Duration::from_millis((during_due + 50 - now_ms()).max(0) as u64);
    // The wall clock passing the due time is the state waited for.
    tokio::time::sleep(wall).await;
    elect(&p.ctl, 1, 2, 0);
    wait_role(&b, HaRole::Master, 2).await;
    let promoted = now_ms();

    let stats = wait_for(
        "new master's timers",
        || b_svc.timer_stats(),
        |s| s.pending == 0 && s.delivered == 10,
    )
    .await;
    assert_eq!((stats.delivered, stats.lost), (10, 0), "{stats:?}");
    let got = pull_all(&b).await;
    for (kind, due) in kinds {
        for i in 0..5 {
            let id = format!("{kind}-{i}");
            assert_eq!(copies(&got, &id), 1, "{id}: delivered exactly once");
            let m = got.iter().find(|m| sp(m).message_id == id).unwrap();
            let stored = ts_ms(&sp(m).store_timestamp);
            assert!(stored >= due, "{id} delivered {} ms early", due - stored);
            // Late by at most the failover plus the timer's precision (and a test's slack).
            let bound = due.max(promoted) + 1000;
            assert!(
                stored <= bound,
                "{id} delivered {} ms late",
                stored - due.max(promoted)
            );
        }
    }
    b.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_unresolved_transactions_when_the_master_is_lost_should_be_checked_by_the_new_master()
{
    let mut pair = Some(Pair::bind().await);
    let far = std::time::Instant::now() + Duration::from_secs(3600);
    let (_lease_tx, lease) = watch::channel(Some(far));
    let (a, b) = synced_pair(&mut pair, &lease).await;
    let p = pair.unwrap();
    let mut checks_a = watch(&a.svc()).await;

    let mut tx = std::collections::HashMap::new();
    for id in ["resolved", "commit-me", "rollback-me", "counted"] {
        let r = send(&a.svc(), vec![tx_msg(id)]).await;
        assert_eq!(code(&r.entries[0].status), Code::Ok, "{r:?}");
        tx.insert(id, r.entries[0].transaction_id.clone());
    }
    let (c, m) = end(
        &a.svc(),
        "t",
        "resolved",
        &tx["resolved"],
        TransactionResolution::Commit,
    )
    .await;
    assert_eq!(c, Code::Ok, "{m}");
    // The old master checks the other three twice (answered "unknown": nothing).
    let mut seen = std::collections::HashMap::<String, u32>::new();
    let unresolved = ["commit-me", "rollback-me", "counted"];
    while unresolved
        .iter()
        .any(|id| seen.get(&tx[id]).copied().unwrap_or(0) < 2)
    {
        *seen
            .entry(next_check(&mut checks_a, WAIT).await.transaction_id)
            .or_default() += 1;
    }
    // A SYNC send acknowledged after the checks: the replica holds their op records.
    assert_eq!(send_code(&a, "fence").await, Code::Ok);
    assert!(
        !seen.contains_key(&tx["resolved"]),
        "a resolved transaction was checked"
    );
    // The replica follows: three pending, and the commit's copy.
    let b_svc = b.svc();
    wait_for(
        "replica's pending transactions",
        || b_svc.transaction_stats().pending,
        |n| *n == 3,
    )
    .await;
    wait_has(&b, "resolved").await;

    // The master dies for good right after the second checks; the replica is elected.
    a.stop(true).await;
    elect(&p.ctl, 1, 2, 0);
    wait_role(&b, HaRole::Master, 2).await;
    let mut checks_b = watch(&b.svc()).await;
    assert_eq!(b_svc.transaction_stats().pending, 3);

    // Third (last) checks come from the new master; the checker answers two of them.
    let mut third = std::collections::HashSet::new();
    while third.len() < 3 {
        let id = next_check(&mut checks_b, WAIT).await.transaction_id;
        assert_ne!(id, tx["resolved"], "a resolved transaction was checked");
        assert!(
            third.insert(id.clone()),
            "checked again before the others: {id}"
        );
        if id == tx["commit-me"] {
            let (c, m) = end(&b_svc, "t", "commit-me", &id, TransactionResolution::Commit).await;
            // Alone in its sync-state set (min 2) the new master stores the resolution but
            // cannot confirm its replication.
            assert!(matches!(c, Code::Ok | Code::HaNotAvailable), "{c:?}: {m}");
        } else if id == tx["rollback-me"] {
            let (c, m) = end(
                &b_svc,
                "t",
                "rollback-me",
                &id,
                TransactionResolution::Rollback,
            )
            .await;
            assert!(matches!(c, Code::Ok | Code::HaNotAvailable), "{c:?}: {m}");
        }
    }
    // "counted" had its 3 checks (2 + 1): it is discarded, not checked a fourth time.
    let stats = wait_for(
        "new master's transactions",
        || b_svc.transaction_stats(),
        |s| s.pending == 0,
    )
    .await;
    assert_eq!(
        (stats.committed, stats.rolled_back, stats.discarded),
        (1, 1, 1),
        "{stats:?}"
    );
    assert_eq!(stats.checks, 3, "{stats:?}");
    let got = pull_all(&b).await;
    assert_eq!(copies(&got, "resolved"), 1);
    assert_eq!(copies(&got, "commit-me"), 1);
    assert_eq!(copies(&got, "rollback-me"), 0);
    assert_eq!(copies(&got, "counted"), 0);
    drop(checks_a);
    b.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_recalled_delay_messages_when_the_master_is_lost_should_stay_recalled_on_the_new_master()
 {
    let mut pair = Some(Pair::bind().await);
    let far = std::time::Instant::now() + Duration::from_secs(3600);
    let (_lease_tx, lease) = watch::channel(Some(far));
    let (a, b) = synced_pair(&mut pair, &lease).await;
    let p = pair.unwrap();

    let t0 = now_ms();
    let r = send(
        &a.svc(),
        vec![
            delayed("recalled-on-a", t0 + 2000),
            delayed("recalled-on-b", t0 + 6000),
            delayed("kept", t0 + 7000),
        ],
    )
    .await;
    assert!(
        r.entries.iter().all(|e| code(&e.status) == Code::Ok),
        "{r:?}"
    );
    let handles: Vec<String> = r.entries.iter().map(|e| e.recall_handle.clone()).collect();
    // SYNC replication: the recall answers once the replica holds its record.
    let (c, m, _) = recall(&a.svc(), "t", &handles[0]).await;
    assert_eq!(c, Code::Ok, "{m}");
    a.stop(true).await;
    elect(&p.ctl, 1, 2, 0);
    wait_role(&b, HaRole::Master, 2).await;
    let b_svc = b.svc();
    // The new master holds the same log: the old master's handles recall here.
    let (c, m, id) = recall(&b_svc, "t", &handles[1]).await;
    // Alone in its sync-state set (min 2) it stores the recall but cannot confirm it.
    assert!(matches!(c, Code::Ok | Code::HaNotAvailable), "{c:?}: {m}");
    if c == Code::Ok {
        assert_eq!(id, "recalled-on-b");
    }
    let (c, m, _) = recall(&b_svc, "t", &handles[0]).await;
    assert_eq!(c, Code::Ok, "the recall on the old master holds: {m}");
    wait_has(&b, "kept").await;
    let got = pull_all(&b).await;
    assert_eq!(copies(&got, "recalled-on-a"), 0);
    assert_eq!(copies(&got, "recalled-on-b"), 0);
    assert_eq!(copies(&got, "kept"), 1);
    let (c, m, _) = recall(&b_svc, "t", &handles[2]).await;
    assert_eq!(c, Code::NotFound, "{m}");
    b.stop(false).await;
}
