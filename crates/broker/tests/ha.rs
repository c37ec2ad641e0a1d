//! Replicated broker sets in one process: two `HaBroker`s on real gRPC ports, a hand-driven
//! metadata watch standing in for the controller (it applies `AlterSyncStateSet` like the
//! controller does, fenced by epoch).
//!
//! SYNC mode: a send is acknowledged only once the in-sync replica holds it; a replica that
//! stops leaves the sync-state set and sends fail with HA_NOT_AVAILABLE (min 2 in sync); it
//! comes back, catches up and rejoins. Failover: the replica becomes master at the next epoch;
//! the old master returns as a replica and cuts the tail it wrote alone.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use comet_broker::{ControllerLink, HaBroker, HaConfig, HaRole, HaStatus, ReplicationMode};
use comet_proto::apache::rocketmq::v2::{Code, MessageQueue, PullMessageRequest};
use comet_proto::comet::v1::broker_service_server::{BrokerService, BrokerServiceServer};
use comet_proto::comet::v1::replication_service_server::ReplicationServiceServer;
use comet_proto::comet::v1::{
    AlterSyncStateSetRequest, BrokerMember, BrokerSet, ClusterMetadata, QueryMessageRequest,
    query_message_request,
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
        let r = m
            .svc()
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
                long_polling_timeout: Some(left.try_into().unwrap()),
            }))
            .await
            .unwrap()
            .into_inner();
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
    // tells (a `HaBroker` watch of the gate would let this wait instead).
    let deadline = tokio::time::Instant::now() + WAIT;
    while send_code(&a, "z").await != Code::Ok {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease never opened writes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
