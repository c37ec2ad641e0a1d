//! Controller benchmark: a 3-node controller cluster of real processes (this example re-executed
//! in node mode), then one JSON object on stdout with:
//!
//! 1. metadata-write latency: `CreateTopic` one at a time (p50/p99/max), and throughput with
//!    32 writes in flight;
//! 2. route-read throughput: NameServer `GET_ROUTEINFO_BY_TOPIC` (105) over remoting, in JSON
//!    and ROCKETMQ header encodings, and gRPC `GetMetadata` (a linearizable read), each with 8
//!    concurrent clients;
//! 3. failover: for each trial the leader process is SIGKILLed and the time until a
//!    `CreateTopic` succeeds on the new leader is measured; the killed node restarts on its data
//!    directory and catches up before the next trial.
//!
//! ```text
//! cargo run --release -p comet-controller --example controller_bench [-- --topics N]
//!     [--read-secs S] [--trials T] [--dir PATH]
//! ```
//!
//! Raft timings are the defaults (heartbeat 100 ms, election timeout 500 ms..1 s); progress goes to
//! stderr. Nodes: the first initializes a single-node cluster, the others start with
//! `join = true` and are added with `AddController`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use comet_controller::remoting::SerializeType;
use comet_controller::remoting::client::{RemotingClient, RequestStyle};
use comet_controller::{Controller, ControllerConfig, LEADER_METADATA_KEY};
use comet_proto::comet::v1 as pb;
use comet_proto::comet::v1::controller_admin_service_client::ControllerAdminServiceClient;
use comet_proto::comet::v1::controller_service_client::ControllerServiceClient;
use serde_json::json;
use tonic::transport::Channel;

const NODE_ENV: &str = "COMET_CONTROLLER_BENCH_NODE";
const NODES: u64 = 3;
const READERS: usize = 8;
const WRITES_IN_FLIGHT: usize = 32;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    dir: PathBuf,
    topics: usize,
    read_secs: f64,
    trials: usize,
}

fn args() -> Args {
    let mut a = Args {
        dir: std::env::temp_dir().join(format!("comet-controller-bench-{}", std::process::id())),
        topics: 500,
        read_secs: 3.0,
        trials: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().unwrap_or_default();
        match flag.as_str() {
            "--dir" => a.dir = PathBuf::from(val),
            "--topics" => a.topics = val.parse().unwrap_or(a.topics),
            "--read-secs" => a.read_secs = val.parse().unwrap_or(a.read_secs),
            "--trials" => a.trials = val.parse().unwrap_or(a.trials),
            other => {
                eprintln!(
                    "unknown flag {other}; flags: --dir PATH --topics N --read-secs S --trials T"
                );
                std::process::exit(2);
            }
        }
    }
    a
}

// ------------------------------------------------------------------ node mode

/// Runs one controller until killed: gRPC (ControllerService, admin, Raft) and remoting, on the
/// addresses in the environment (port 0 = any), printing `ready <grpc> <remoting>`.
async fn node() -> Result<(), BoxError> {
    let var = |k: &str| std::env::var(format!("{NODE_ENV}_{k}")).unwrap_or_default();
    let node_id: u64 = var("ID").parse()?;
    let grpc = tokio::net::TcpListener::bind(var("LISTEN")).await?;
    let remoting = tokio::net::TcpListener::bind(var("REMOTING")).await?;
    let addr = grpc.local_addr()?;
    let ctrl = Controller::start(ControllerConfig {
        node_id,
        data_dir: PathBuf::from(var("DIR")),
        advertised_addr: addr.to_string(),
        join: var("JOIN") == "1",
        ..ControllerConfig::default()
    })
    .await?;
    println!("ready {addr} {}", remoting.local_addr()?);
    let server = ctrl.remoting();
    tokio::spawn(server.serve(remoting, tokio_util::sync::CancellationToken::new()));
    tonic::transport::Server::builder()
        .add_routes(ctrl.routes())
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
        )
        .await?;
    Ok(())
}

struct NodeProc {
    id: u64,
    dir: PathBuf,
    grpc: String,
    remoting: String,
    child: Option<Child>,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_node(
    id: u64,
    dir: &Path,
    join: bool,
    grpc: &str,
    remoting: &str,
) -> Result<(Child, String, String), BoxError> {
    let mut child = Command::new(std::env::current_exe()?)
        .env(NODE_ENV, "1")
        .env(format!("{NODE_ENV}_ID"), id.to_string())
        .env(format!("{NODE_ENV}_DIR"), dir)
        .env(format!("{NODE_ENV}_JOIN"), if join { "1" } else { "0" })
        .env(format!("{NODE_ENV}_LISTEN"), grpc)
        .env(format!("{NODE_ENV}_REMOTING"), remoting)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().ok_or("node exited before ready")??;
    let mut parts = line.split_whitespace();
    let (Some("ready"), Some(g), Some(r)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("unexpected node output {line:?}").into());
    };
    let (g, r) = (g.to_owned(), r.to_owned());
    std::thread::spawn(move || for _ in lines {});
    Ok((child, g, r))
}

// ------------------------------------------------------------- leader client

/// Calls the leader, following `comet-leader` hints and trying every node; one cached
/// connection per node.
struct Leader {
    addrs: Vec<String>,
    current: usize,
    clients: BTreeMap<String, ControllerServiceClient<Channel>>,
}

impl Leader {
    async fn client(addr: &str) -> Result<ControllerServiceClient<Channel>, BoxError> {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(ControllerServiceClient::new(ch).max_decoding_message_size(64 << 20))
    }

    /// Runs `f` until it succeeds on the leader or `limit` passes.
    async fn call<T, F, Fut>(&mut self, limit: Duration, f: F) -> Result<T, BoxError>
    where
        F: Fn(ControllerServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + limit;
        loop {
            let addr = self.addrs[self.current % self.addrs.len()].clone();
            let client = match self.clients.get(&addr) {
                Some(c) => c.clone(),
                None => {
                    let c = Self::client(&addr).await?;
                    self.clients.insert(addr.clone(), c.clone());
                    c
                }
            };
            match f(client).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) => {
                    if Instant::now() > deadline {
                        return Err(format!("{addr}: {s}").into());
                    }
                    let hint = s
                        .metadata()
                        .get(LEADER_METADATA_KEY)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|h| self.addrs.iter().position(|a| a == h));
                    match hint {
                        Some(i) if i != self.current % self.addrs.len() => self.current = i,
                        _ => {
                            self.current += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
            }
        }
    }
}

fn topic(name: &str) -> pb::Topic {
    pb::Topic {
        name: name.to_owned(),
        message_type: pb::TopicMessageType::Normal as i32,
        placements: ["bench-a", "bench-b"]
            .iter()
            .map(|b| pb::QueuePlacement {
                broker_set: (*b).to_owned(),
                queue_count: 8,
            })
            .collect(),
        permission: 0,
        attributes: Default::default(),
    }
}

fn percentiles(mut v: Vec<Duration>) -> serde_json::Value {
    v.sort();
    let at = |q: f64| {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    json!({"n": v.len(), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0)})
}

async fn describe(addr: &str) -> Option<pb::DescribeControllersResponse> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_secs(2))
        .connect_lazy();
    ControllerAdminServiceClient::new(ch)
        .describe_controllers(pb::DescribeControllersRequest {})
        .await
        .ok()
        .map(tonic::Response::into_inner)
}

/// The leader's node id as every reachable node agrees, waiting up to `limit`.
async fn agreed_leader(nodes: &[NodeProc], limit: Duration) -> Result<u64, BoxError> {
    let deadline = Instant::now() + limit;
    loop {
        let mut seen = Vec::new();
        for n in nodes.iter().filter(|n| n.child.is_some()) {
            seen.push(describe(&n.grpc).await.and_then(|d| d.leader_id));
        }
        if let Some(Some(l)) = seen.first()
            && seen.iter().all(|s| *s == Some(*l))
        {
            return Ok(*l);
        }
        if Instant::now() > deadline {
            return Err(format!("no agreed leader: {seen:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keeps both bench broker sets alive (the routes list only live brokers).
fn heartbeats(addrs: Vec<String>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut leader = Leader {
            addrs,
            current: 0,
            clients: BTreeMap::new(),
        };
        while !stop.load(Ordering::Relaxed) {
            for set in ["bench-a", "bench-b"] {
                let r = leader
                    .call(Duration::from_secs(10), |mut c| async move {
                        c.broker_heartbeat(pb::BrokerHeartbeatRequest {
                            broker_set: set.to_owned(),
                            broker_id: 0,
                            ..Default::default()
                        })
                        .await
                    })
                    .await;
                if let Err(e) = r {
                    eprintln!("heartbeat {set}: {e}");
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

async fn remoting_reads(
    addr: &str,
    st: SerializeType,
    secs: f64,
) -> Result<serde_json::Value, BoxError> {
    let stop_at = Instant::now() + Duration::from_secs_f64(secs);
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..READERS {
        let addr = addr.to_owned();
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = RemotingClient::connect(&addr, Duration::from_secs(5)).await?;
            let style = RequestStyle {
                serialize_type: st,
                ..RequestStyle::default()
            };
            let mut lat = Vec::new();
            while Instant::now() < stop_at {
                let t = Instant::now();
                c.topic_route("bench-topic-0", style)
                    .await?
                    .map_err(|r| format!("route refused: {}", r.remark))?;
                lat.push(t.elapsed());
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, BoxError>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let n = count.load(Ordering::Relaxed);
    Ok(json!({"clients": READERS, "reads_per_sec": n as f64 / secs, "latency": percentiles(all)}))
}

async fn grpc_reads(addr: &str, secs: f64) -> Result<serde_json::Value, BoxError> {
    let stop_at = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    let bytes = Arc::new(AtomicU64::new(0));
    for _ in 0..READERS {
        let addr = addr.to_owned();
        let bytes = bytes.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Leader::client(&addr).await?;
            let mut lat = Vec::new();
            while Instant::now() < stop_at {
                let t = Instant::now();
                let m = c
                    .get_metadata(pb::GetMetadataRequest {})
                    .await?
                    .into_inner();
                lat.push(t.elapsed());
                bytes.store(prost::Message::encoded_len(&m) as u64, Ordering::Relaxed);
            }
            Ok::<_, BoxError>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let n = all.len();
    Ok(json!({
        "clients": READERS,
        "reads_per_sec": n as f64 / secs,
        "snapshot_bytes": bytes.load(Ordering::Relaxed),
        "latency": percentiles(all),
    }))
}

async fn bench(a: Args) -> Result<serde_json::Value, BoxError> {
    std::fs::create_dir_all(&a.dir)?;
    let mut nodes: Vec<NodeProc> = Vec::new();
    for id in 1..=NODES {
        let dir = a.dir.join(format!("node-{id}"));
        let (child, grpc, remoting) = spawn_node(id, &dir, id != 1, "127.0.0.1:0", "127.0.0.1:0")?;
        nodes.push(NodeProc {
            id,
            dir,
            grpc,
            remoting,
            child: Some(child),
        });
    }
    eprintln!("nodes up; forming the cluster");
    agreed_leader(&nodes[..1], Duration::from_secs(10)).await?;
    let admin = |addr: String| async move {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect_lazy();
        Ok::<_, BoxError>(ControllerAdminServiceClient::new(ch))
    };
    let mut a1 = admin(nodes[0].grpc.clone()).await?;
    for n in &nodes[1..] {
        a1.add_controller(pb::AddControllerRequest {
            node_id: n.id,
            address: n.grpc.clone(),
            learner_only: false,
        })
        .await?;
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
    let mut leader = Leader {
        addrs: addrs.clone(),
        current: 0,
        clients: BTreeMap::new(),
    };
    for (set, port) in [("bench-a", 10911), ("bench-b", 10921)] {
        leader
            .call(Duration::from_secs(10), |mut c| async move {
                c.register_broker(pb::RegisterBrokerRequest {
                    broker_set: set.to_owned(),
                    broker_id: 0,
                    address: format!("127.0.0.1:{port}"),
                })
                .await
            })
            .await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let hb = heartbeats(addrs.clone(), stop.clone());

    eprintln!("writes: {} topics one at a time", a.topics);
    let mut lat = Vec::with_capacity(a.topics);
    for i in 0..a.topics {
        let t = Instant::now();
        let name = format!("bench-topic-{i}");
        leader
            .call(Duration::from_secs(10), |mut c| {
                let topic = topic(&name);
                async move {
                    c.create_topic(pb::CreateTopicRequest { topic: Some(topic) })
                        .await
                }
            })
            .await?;
        lat.push(t.elapsed());
    }
    let sequential = percentiles(lat);

    eprintln!("writes: {} topics, {WRITES_IN_FLIGHT} in flight", a.topics);
    let leader_id = agreed_leader(&nodes, Duration::from_secs(10)).await?;
    let leader_addr = nodes
        .iter()
        .find(|n| n.id == leader_id)
        .map(|n| n.grpc.clone())
        .ok_or("leader not found")?;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..WRITES_IN_FLIGHT {
        let next = next.clone();
        let addr = leader_addr.clone();
        let total = a.topics as u64;
        tasks.push(tokio::spawn(async move {
            let mut c = Leader::client(&addr).await?;
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, BoxError>(lat);
                }
                let t = Instant::now();
                c.create_topic(pb::CreateTopicRequest {
                    topic: Some(topic(&format!("bench-concurrent-{i}"))),
                })
                .await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    let concurrent = json!({
        "in_flight": WRITES_IN_FLIGHT,
        "writes_per_sec": all.len() as f64 / secs,
        "latency": percentiles(all),
    });

    eprintln!(
        "reads: remoting 105 and gRPC GetMetadata, {READERS} clients, {}s each",
        a.read_secs
    );
    let leader_remoting = nodes
        .iter()
        .find(|n| n.id == leader_id)
        .map(|n| n.remoting.clone())
        .ok_or("leader not found")?;
    let follower_remoting = nodes
        .iter()
        .find(|n| n.id != leader_id)
        .map(|n| n.remoting.clone())
        .ok_or("no follower")?;
    let reads = json!({
        "remoting_json_leader": remoting_reads(&leader_remoting, SerializeType::Json, a.read_secs).await?,
        "remoting_rocketmq_leader": remoting_reads(&leader_remoting, SerializeType::RocketMq, a.read_secs).await?,
        "remoting_json_follower": remoting_reads(&follower_remoting, SerializeType::Json, a.read_secs).await?,
        "grpc_get_metadata_leader": grpc_reads(&leader_addr, a.read_secs).await?,
    });

    eprintln!("failover: {} trials", a.trials);
    let mut trials = Vec::new();
    for trial in 0..a.trials {
        let leader_id = agreed_leader(&nodes, Duration::from_secs(20)).await?;
        let idx = nodes
            .iter()
            .position(|n| n.id == leader_id)
            .ok_or("leader not found")?;
        let killed_at = Instant::now();
        if let Some(mut c) = nodes[idx].child.take() {
            c.kill()?;
            c.wait()?;
        }
        let mut others = Leader {
            addrs: nodes
                .iter()
                .filter(|n| n.id != leader_id)
                .map(|n| n.grpc.clone())
                .collect(),
            current: 0,
            clients: BTreeMap::new(),
        };
        let name = format!("failover-{trial}");
        others
            .call(Duration::from_secs(30), |mut c| {
                let topic = topic(&name);
                async move {
                    c.create_topic(pb::CreateTopicRequest { topic: Some(topic) })
                        .await
                }
            })
            .await?;
        let to_write = killed_at.elapsed();
        eprintln!("  trial {trial}: killed node {leader_id}, writes again after {to_write:?}");
        // Restart the killed node on its data and port; wait until it applied the new topic.
        let n = &mut nodes[idx];
        let (child, _, _) = spawn_node(n.id, &n.dir, true, &n.grpc, &n.remoting)?;
        n.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let target = describe(&others.addrs[0])
            .await
            .map_or(0, |d| d.last_applied_index);
        loop {
            if describe(&nodes[idx].grpc)
                .await
                .is_some_and(|d| d.last_applied_index >= target)
            {
                break;
            }
            if Instant::now() > deadline {
                return Err("restarted node did not catch up".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        trials.push(to_write);
    }
    let failover_ms: Vec<f64> = trials.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    stop.store(true, Ordering::Relaxed);
    let _ = hb.await;
    drop(nodes);
    let _ = std::fs::remove_dir_all(&a.dir);
    Ok(json!({
        "nodes": NODES,
        "raft": {"heartbeat_ms": 100, "election_timeout_ms": [500, 1000]},
        "create_topic_sequential": sequential,
        "create_topic_concurrent": concurrent,
        "route_reads": reads,
        "failover_kill_to_write_ms": failover_ms,
        "failover_summary": percentiles(trials),
        "placements_per_topic": 2,
        "topics_created": a.topics * 2 + a.trials,
    }))
}

fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(2);
        }
    };
    if std::env::var_os(NODE_ENV).is_some() {
        if let Err(e) = rt.block_on(node()) {
            eprintln!("node: {e}");
            std::process::exit(2);
        }
        return;
    }
    match rt.block_on(bench(args())) {
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        Err(e) => {
            eprintln!("bench failed: {e}");
            std::process::exit(1);
        }
    }
}
