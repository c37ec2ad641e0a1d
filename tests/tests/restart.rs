//! kill -9 and restart: a real `standalone` child process (this test binary re-executed with
//! `--child`) is produced to and consumed from with the official Rust client, killed with
//! SIGKILL, and restarted on the same data directory. Then:
//! - every message whose send was acknowledged is still there (none lost, bodies intact),
//! - messages acknowledged as consumed are not redelivered,
//! - messages received but not acked before the kill come back.
//!
//! Own harness (`harness = false`): `main` is either the parent (the test) or the child (the
//! node), chosen by `--child`.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use comet::admin::TopicType;
use comet::server::{Node, Role};
use comet_tests::client;
use comet_tests::test_config;
use rocketmq::Producer;
use rocketmq::conf::ProducerOption;
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;

const DIR_ENV: &str = "COMET_TEST_CHILD_DIR";

fn main() {
    if std::env::args().any(|a| a == "--child") {
        child();
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(kill_and_restart());
    println!("test kill_and_restart ... ok");
}

/// The node: standalone on the given directory, ports chosen by the OS, until killed.
fn child() {
    let dir = std::env::var(DIR_ENV).expect("data dir env");
    let cfg = test_config(Path::new(&dir));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let node = Node::start(Role::Standalone, &cfg)
            .await
            .expect("standalone starts");
        println!("comet standalone ready");
        // Serve until SIGKILL.
        std::future::pending::<()>().await;
        drop(node);
    });
}

struct ChildNode {
    child: Child,
    proxy: SocketAddr,
    controller: SocketAddr,
}

impl Drop for ChildNode {
    /// A failing test must not leave its node running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_node(dir: &Path) -> ChildNode {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .arg("--child")
        .env(DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let (mut proxy, mut controller) = (None, None);
    for line in lines.by_ref() {
        let line = line.expect("child stdout");
        if let Some(a) = line.strip_prefix("proxy listening on ") {
            proxy = Some(a.parse().expect("proxy addr"));
        } else if let Some(a) = line.strip_prefix("controller listening on ") {
            controller = Some(a.parse().expect("controller addr"));
        } else if line == "comet standalone ready" {
            break;
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    ChildNode {
        child,
        proxy: proxy.expect("child printed its proxy address"),
        controller: controller.expect("child printed its controller address"),
    }
}

async fn kill_and_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let topic = "restart-orders";
    let group = "restart-group";
    const SENT: usize = 300;
    const CONSUMED: usize = 120;
    const IN_FLIGHT: usize = 20;

    let mut node = spawn_node(dir.path());
    let admin = comet::admin::AdminTarget {
        controllers: vec![node.controller.to_string()],
        config: None,
        namespace: String::new(),
        username: None,
        password: None,
    };
    comet::admin::topic(
        &admin,
        &comet::admin::TopicCommand::Create(comet::admin::TopicSpec {
            name: topic.to_owned(),
            queues: 1,
            message_type: TopicType::Normal,
            broker_sets: Vec::new(),
            perm: comet::admin::Perm::Rw,
        }),
    )
    .await
    .expect("create topic");

    let mut popt = ProducerOption::default();
    popt.set_topics(vec![topic]);
    let mut producer =
        Producer::new(popt, client::option(&node.proxy.to_string())).expect("producer");
    producer.start().await.expect("producer starts");
    let mut sent: HashMap<String, Vec<u8>> = HashMap::new();
    for i in 0..SENT {
        let body = format!("message {i} {}", "x".repeat(i % 97)).into_bytes();
        let msg = MessageBuilder::builder()
            .set_topic(topic)
            .set_tag("t")
            .set_body(body.clone())
            .build()
            .expect("message");
        let receipt = producer.send(msg).await.expect("send");
        sent.insert(receipt.message_id().to_owned(), body);
    }

    // Consume and ack CONSUMED messages, then receive IN_FLIGHT more without acking.
    let c = client::consumer(&node.proxy.to_string(), group, topic).await;
    let filter = FilterExpression::new(FilterType::Tag, "*");
    let mut acked: HashSet<String> = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acked.len() < CONSUMED {
        assert!(tokio::time::Instant::now() < deadline, "consuming stalled");
        let want = (CONSUMED - acked.len()).min(32) as i32;
        for m in c
            .receive_with(topic, &filter, want, Duration::from_secs(60))
            .await
            .expect("receive")
        {
            assert_eq!(sent.get(m.message_id()), Some(&m.body().to_vec()));
            c.ack(&m).await.expect("ack");
            acked.insert(m.message_id().to_owned());
        }
    }
    let mut in_flight: HashSet<String> = HashSet::new();
    while in_flight.len() < IN_FLIGHT {
        assert!(tokio::time::Instant::now() < deadline, "receiving stalled");
        let want = (IN_FLIGHT - in_flight.len()) as i32;
        for m in c
            .receive_with(topic, &filter, want, Duration::from_secs(3))
            .await
            .expect("receive")
        {
            in_flight.insert(m.message_id().to_owned());
        }
    }

    // SIGKILL: no shutdown hook runs.
    node.child.kill().expect("kill -9");
    let _ = node.child.wait();
    drop(c);
    drop(producer);

    let node = spawn_node(dir.path());
    let c = client::consumer(&node.proxy.to_string(), group, topic).await;
    let mut after: HashMap<String, usize> = HashMap::new();
    let expected_rest = SENT - CONSUMED;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut redelivered_acked = 0usize;
    while after.len() < expected_rest {
        assert!(
            tokio::time::Instant::now() < deadline,
            "after restart only {} of {expected_rest} unconsumed messages arrived",
            after.len()
        );
        for m in c
            .receive_with(topic, &filter, 32, Duration::from_secs(60))
            .await
            .expect("receive after restart")
        {
            let body = sent
                .get(m.message_id())
                .unwrap_or_else(|| panic!("unknown message {}", m.message_id()));
            assert_eq!(body, &m.body().to_vec(), "body changed across the restart");
            if acked.contains(m.message_id()) {
                redelivered_acked += 1;
            } else {
                *after.entry(m.message_id().to_owned()).or_default() += 1;
            }
            c.ack(&m).await.expect("ack after restart");
        }
    }
    // Every message not acked before the kill arrived (the in-flight ones included) ...
    for id in sent.keys().filter(|id| !acked.contains(*id)) {
        assert!(after.contains_key(id), "message {id} was lost");
    }
    assert!(in_flight.iter().all(|id| after.contains_key(id)));
    // ... and acked ones did not come back: an answered ack is in the broker's state log,
    // which a process crash does not lose.
    assert_eq!(
        redelivered_acked, 0,
        "{redelivered_acked} of {CONSUMED} acked messages were redelivered"
    );
    drop(node);
    println!(
        "restart: sent {SENT}, acked before kill {CONSUMED}, in flight {IN_FLIGHT}, \
         redelivered-after-ack {redelivered_acked}, delivered after restart {}",
        after.len()
    );
}
