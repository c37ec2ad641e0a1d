//! Brokers as real child processes, for faults a process cannot inflict on itself: SIGKILL,
//! SIGSTOP / SIGCONT, and network partitions through [`Relay`]s.
//!
//! The child is the test binary itself, re-executed with [`CHILD_FLAG`] and the path of a TOML
//! config (see [`child_main`]): it runs `comet broker` in process until killed. Every broker
//! gets relays: one in front of it (its advertised address, used by the proxy and by replicas)
//! and one per controller (its `controllers` list), so a partition cuts it off from the
//! controllers and from its peers while a test can still reach its real port directly.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use comet::config::{Config, Sources};
use comet::server::{Node, Role};

use crate::relay::Relay;

/// The argument that makes the test binary run a broker (see [`child_main`]).
pub const CHILD_FLAG: &str = "--comet-broker-child";

/// The child side: loads the config at `config` and runs `comet broker` until killed. Prints
/// `broker listening on <addr>` and then `comet broker ready` on stdout.
pub fn child_main(config: &Path) {
    let cfg = Config::load(&Sources {
        file: Some(config.to_path_buf()),
        ..Sources::default()
    })
    .expect("child config loads");
    comet::logging::init(&cfg.log.level, cfg.log.format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let node = Node::start(Role::Broker, &cfg)
            .await
            .expect("broker starts");
        println!("comet broker ready");
        std::future::pending::<()>().await;
        drop(node);
    });
}

/// One broker process of a broker set, with its relays. It is killed when dropped.
pub struct BrokerProc {
    /// Its broker id.
    pub id: u64,
    /// Its data directory.
    pub data_dir: PathBuf,
    config_path: PathBuf,
    /// The relay in front of it: its advertised address.
    pub inbound: Relay,
    /// Its relays to the controllers, in the order of the cluster's controllers.
    pub to_controllers: Vec<Relay>,
    child: Option<Child>,
    real: Option<SocketAddr>,
}

impl std::fmt::Debug for BrokerProc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerProc")
            .field("id", &self.id)
            .field("advertised", &self.inbound.addr())
            .field("real", &self.real)
            .finish()
    }
}

impl BrokerProc {
    /// Prepares broker `id` of `cfg.broker.broker_set` under `dir` (not started): writes its
    /// config, with relays to `controllers`, its advertised address being its inbound relay.
    pub async fn prepare(dir: &Path, id: u64, mut cfg: Config, controllers: &[String]) -> Self {
        let data_dir = dir.join(format!("broker-{id}"));
        std::fs::create_dir_all(&data_dir).expect("broker dir");
        let inbound = Relay::start(None).await;
        let mut to_controllers = Vec::new();
        for c in controllers {
            to_controllers.push(Relay::start(Some(c.parse().expect("controller addr"))).await);
        }
        cfg.data_dir = data_dir.clone();
        cfg.broker.broker_id = id;
        cfg.broker.listen = "127.0.0.1:0".to_owned();
        cfg.broker.advertised_addr = inbound.addr().to_string();
        cfg.controllers = to_controllers
            .iter()
            .map(|r| r.addr().to_string())
            .collect();
        let config_path = data_dir.join("comet.toml");
        std::fs::write(&config_path, toml::to_string(&cfg).expect("config as TOML"))
            .expect("write child config");
        BrokerProc {
            id,
            data_dir,
            config_path,
            inbound,
            to_controllers,
            child: None,
            real: None,
        }
    }

    /// Starts the process and waits until it serves.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "broker {} already runs", self.id);
        let path = self.config_path.clone();
        let (child, real) = tokio::task::spawn_blocking(move || spawn_child(&path))
            .await
            .expect("spawn task");
        self.inbound.set_target(real);
        self.child = Some(child);
        self.real = Some(real);
    }

    /// Whether the process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the broker runs").id()
    }

    /// The port the process listens on (behind the relay), while it runs.
    pub fn real_addr(&self) -> SocketAddr {
        self.real.expect("the broker runs")
    }

    /// The address the cluster knows it by.
    pub fn advertised(&self) -> SocketAddr {
        self.inbound.addr()
    }

    /// SIGKILL, and waits for the process to end.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.real = None;
    }

    /// SIGSTOP: the process freezes, its sockets stay open.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("the broker runs").id();
        let status = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {pid} failed");
    }

    /// Cuts the broker off from the controllers and from every peer that reaches it through its
    /// advertised address (replicas, the proxy). Its real port stays reachable. What it opens
    /// to its peers' advertised addresses (a replica's stream from its master) is cut by their
    /// relays ([`Relay::partition_process`]; `HaDeployment::partition_broker` does both).
    pub fn partition(&self) {
        self.inbound.partition();
        for r in &self.to_controllers {
            r.partition();
        }
    }

    /// Ends [`BrokerProc::partition`].
    pub fn heal(&self) {
        self.inbound.heal();
        for r in &self.to_controllers {
            r.heal();
        }
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_child(config: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .arg(CHILD_FLAG)
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn broker child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut real = None;
    for line in lines.by_ref() {
        let line = line.expect("child stdout line");
        if let Some(a) = line.strip_prefix("broker listening on ") {
            real = Some(a.parse().expect("broker addr"));
        } else if line == "comet broker ready" {
            break;
        }
    }
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let real = real.unwrap_or_else(|| panic!("broker child ({}) did not start", config.display()));
    (child, real)
}
