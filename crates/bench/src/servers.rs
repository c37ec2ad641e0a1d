//! `--spawn`: the servers a run starts for itself, as child processes of the `comet` binary,
//! and the CPU time each of them spends.
//!
//! - `--spawn standalone`: one `comet standalone` process (controller, broker and proxy in one
//!   process, the proxy calling the broker in process: "Local mode").
//! - `--spawn cluster`: `comet controller`, then `comet broker` and `comet proxy` pointed at
//!   it, each its own process ("Cluster mode": the proxy reaches the broker over the internal
//!   gRPC link). Proxies scale out, so the proxy's CPU per message is reported on its own.
//!
//! Every process listens on `127.0.0.1:0` and announces its addresses on stdout
//! (`<role> listening on <addr>`, then `comet <role> ready`); its logs go to `<role>.log` in
//! the run's data directory (a fresh directory under the system temp dir, removed when the
//! servers stop). Topics are auto-created by the proxy with [`QUEUES`] queues.
//!
//! CPU time is read from `/proc/<pid>/stat` (`utime + stime`, in the kernel's fixed 100 Hz
//! user-visible ticks) for every server and for the bench itself, at the start and at the end
//! of the measured window; without `/proc` the figures are absent.
//!
//! Invariant: children are killed (SIGKILL) when [`Servers`] is dropped, so a failed run
//! leaves no process behind; [`Servers::stop`] also removes the data directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// Queues of auto-created topics (the lead's reference runs use 8).
pub(crate) const QUEUES: u32 = 8;

/// Longest a server may take to announce that it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `/proc/<pid>/stat` counts CPU time in USER_HZ ticks, 100 per second on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

/// Which servers `--spawn` starts.
#[derive(clap::ValueEnum, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SpawnMode {
    /// One `comet standalone` process.
    Standalone,
    /// `comet controller`, `comet broker` and `comet proxy`, one process each.
    Cluster,
}

impl SpawnMode {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            SpawnMode::Standalone => "standalone",
            SpawnMode::Cluster => "cluster",
        }
    }
}

/// One server process.
#[derive(Debug)]
struct Server {
    role: &'static str,
    child: Child,
    pid: u32,
}

/// The servers of a run (see the module docs).
#[derive(Debug)]
pub(crate) struct Servers {
    mode: SpawnMode,
    dir: PathBuf,
    servers: Vec<Server>,
    /// `host:port` of the proxy the run targets.
    pub endpoint: String,
    /// `host:port` of the controller (admin commands).
    pub controller: String,
}

/// Reads the CPU time of a run's servers and of the bench.
#[derive(Debug, Clone)]
pub(crate) struct CpuProbe {
    mode: SpawnMode,
    roles: Vec<(&'static str, u32)>,
}

impl CpuProbe {
    /// CPU seconds of every server and of the bench now.
    pub(crate) fn snapshot(&self) -> CpuSnapshot {
        CpuSnapshot {
            roles: self
                .roles
                .iter()
                .map(|&(role, pid)| (role, pid, process_cpu(&format!("/proc/{pid}/stat"))))
                .collect(),
            bench: process_cpu("/proc/self/stat"),
        }
    }

    /// The CPU spent between `start` and `end` (`window_s` apart) per message of `messages`.
    pub(crate) fn report(
        &self,
        start: &CpuSnapshot,
        end: &CpuSnapshot,
        window_s: f64,
        messages: u64,
    ) -> ServersReport {
        let per_msg = |cpu_s: f64| {
            if messages == 0 {
                0.0
            } else {
                cpu_s * 1e6 / messages as f64
            }
        };
        let mut roles = Vec::new();
        let mut complete = true;
        for ((role, pid, a), (_, _, b)) in start.roles.iter().zip(&end.roles) {
            match (a, b) {
                (Some(a), Some(b)) => roles.push(RoleCpu {
                    role: (*role).to_owned(),
                    pid: *pid,
                    cpu_s: b - a,
                    cpu_us_per_msg: per_msg(b - a),
                }),
                _ => complete = false,
            }
        }
        let servers = (complete && !roles.is_empty())
            .then(|| per_msg(roles.iter().map(|r| r.cpu_s).sum::<f64>()));
        let bench = match (start.bench, end.bench) {
            (Some(a), Some(b)) => Some(per_msg(b - a)),
            _ => None,
        };
        ServersReport {
            mode: self.mode,
            cpu_window_s: window_s,
            roles,
            servers_cpu_us_per_msg: servers,
            bench_cpu_us_per_msg: bench,
        }
    }
}

/// CPU seconds of every server and of the bench at one instant.
#[derive(Debug, Clone)]
pub(crate) struct CpuSnapshot {
    roles: Vec<(&'static str, u32, Option<f64>)>,
    bench: Option<f64>,
}

/// CPU time of one process over the measured window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoleCpu {
    /// `proxy`, `broker`, `controller` or `standalone`.
    pub role: String,
    pub pid: u32,
    /// User + system CPU seconds spent in the window.
    pub cpu_s: f64,
    /// `cpu_s` per message sent in the window, microseconds.
    pub cpu_us_per_msg: f64,
}

/// The servers a run started and the CPU they spent (with `--spawn`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServersReport {
    pub mode: SpawnMode,
    /// Length of the window the CPU time was taken over, seconds.
    pub cpu_window_s: f64,
    /// Every server process, in start order. Empty without `/proc`.
    pub roles: Vec<RoleCpu>,
    /// All server processes together, CPU microseconds per message sent in the window.
    pub servers_cpu_us_per_msg: Option<f64>,
    /// The bench's own process, CPU microseconds per message sent in the window.
    pub bench_cpu_us_per_msg: Option<f64>,
}

impl Servers {
    /// Starts the servers of `mode` from the `comet` binary `bin` (extra `--set` options in
    /// `settings`) and waits until the proxy serves.
    ///
    /// # Errors
    /// When a process cannot start or does not announce itself within a minute (with the
    /// tail of its log).
    pub(crate) async fn start(
        mode: SpawnMode,
        bin: &Path,
        settings: &[String],
    ) -> anyhow::Result<Servers> {
        if !bin.exists() {
            bail!(
                "--spawn needs the comet binary; {} does not exist (build it with `cargo build \
                 --release -p comet`, or give its path with --comet-bin)",
                bin.display()
            );
        }
        let dir = std::env::temp_dir().join(format!(
            "comet-bench-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the servers' directory {}", dir.display()))?;
        let mut servers = Servers {
            mode,
            dir,
            servers: Vec::new(),
            endpoint: String::new(),
            controller: String::new(),
        };
        let any = "127.0.0.1:0".to_owned();
        let mut common = vec![
            "--set".to_owned(),
            "proxy.auto_create_topics=true".to_owned(),
            "--set".to_owned(),
            format!("proxy.default_queue_count={QUEUES}"),
        ];
        for s in settings {
            common.push("--set".to_owned());
            common.push(s.clone());
        }
        let started = async {
            match mode {
                SpawnMode::Standalone => {
                    let args = [
                        "--proxy-listen",
                        &any,
                        "--broker-listen",
                        &any,
                        "--controller-listen",
                        &any,
                        "--remoting-listen",
                        "",
                    ];
                    let addrs = servers
                        .spawn(bin, "standalone", &args, &common, &["proxy", "controller"])
                        .await?;
                    servers.endpoint = addrs[0].clone();
                    servers.controller = addrs[1].clone();
                }
                SpawnMode::Cluster => {
                    let args = ["--controller-listen", &any, "--remoting-listen", ""];
                    let controller = servers
                        .spawn(bin, "controller", &args, &common, &["controller"])
                        .await?
                        .remove(0);
                    let args = ["--broker-listen", &any, "--controller", &controller];
                    servers.spawn(bin, "broker", &args, &common, &[]).await?;
                    servers.controller.clone_from(&controller);
                    let args = ["--proxy-listen", &any, "--controller", &controller];
                    let proxy = servers
                        .spawn(bin, "proxy", &args, &common, &["proxy"])
                        .await?
                        .remove(0);
                    servers.endpoint = proxy;
                }
            }
            Ok::<(), anyhow::Error>(())
        };
        match started.await {
            Ok(()) => Ok(servers),
            Err(e) => {
                servers.stop().await;
                Err(e)
            }
        }
    }

    /// Starts `comet <role> <args> <common>` with its data under the servers' directory and
    /// returns the addresses it announced for `listeners`, once it printed `comet <role>
    /// ready`.
    async fn spawn(
        &mut self,
        bin: &Path,
        role: &'static str,
        args: &[&str],
        common: &[String],
        listeners: &[&str],
    ) -> anyhow::Result<Vec<String>> {
        let data = self.dir.join(role);
        let log_path = self.dir.join(format!("{role}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut child = Command::new(bin)
            .arg(role)
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .args(common)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting `{} {role}`", bin.display()))?;
        let pid = child.id().unwrap_or(0);
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("`comet {role}` has no stdout"))?;
        self.servers.push(Server { role, child, pid });
        let announced = tokio::time::timeout(START_TIMEOUT, announcements(stdout, role, listeners))
            .await
            .map_err(|_| anyhow!("`comet {role}` did not get ready within {START_TIMEOUT:?}"))
            .and_then(|r| r);
        announced.map_err(|e| e.context(format!("log tail: {}", log_tail(&log_path))))
    }

    /// The process id of the server of `role`.
    pub(crate) fn pid(&self, role: &str) -> Option<u32> {
        self.servers.iter().find(|s| s.role == role).map(|s| s.pid)
    }

    /// What reads the CPU time of these servers (and of the bench).
    pub(crate) fn probe(&self) -> CpuProbe {
        CpuProbe {
            mode: self.mode,
            roles: self.servers.iter().map(|s| (s.role, s.pid)).collect(),
        }
    }

    /// Kills every server (the newest first) and removes the data directory.
    pub(crate) async fn stop(mut self) {
        while let Some(mut s) = self.servers.pop() {
            if let Err(e) = s.child.kill().await {
                tracing::warn!(role = s.role, pid = s.pid, error = %e, "stopping a server failed");
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "removing the servers' data failed");
        }
    }
}

/// Reads `stdout` until `comet <role> ready`, collecting the address of each of `listeners`
/// (`<listener> listening on <addr>`), in that order.
async fn announcements(
    stdout: ChildStdout,
    role: &str,
    listeners: &[&str],
) -> anyhow::Result<Vec<String>> {
    let mut lines = BufReader::new(stdout).lines();
    let mut found: Vec<Option<String>> = vec![None; listeners.len()];
    let ready = format!("comet {role} ready");
    while let Some(line) = lines
        .next_line()
        .await
        .with_context(|| format!("reading the output of `comet {role}`"))?
    {
        let line = line.trim();
        if line == ready {
            let addrs: Option<Vec<String>> = found.into_iter().collect();
            // Later output is not read: keep draining it so the child never blocks on a
            // full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return addrs.ok_or_else(|| {
                anyhow!("`comet {role}` got ready without announcing {listeners:?}")
            });
        }
        if let Some((name, addr)) = line.split_once(" listening on ")
            && let Some(i) = listeners.iter().position(|l| *l == name)
        {
            found[i] = Some(addr.trim().to_owned());
        }
    }
    bail!("`comet {role}` exited before it was ready")
}

/// User + system CPU seconds of the process whose `stat` file is `path`.
fn process_cpu(path: &str) -> Option<f64> {
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// `utime + stime` of a `/proc/<pid>/stat` line, in seconds. The command name (field 2) is in
/// parentheses and may contain spaces, so fields are counted after its closing parenthesis.
fn parse_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name come: state (3), ppid (4), ... utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// The last lines of a server's log, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    if lines.is_empty() {
        "(empty)".to_owned()
    } else {
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }
}

/// The `comet` binary beside the running executable (`target/release/comet` next to
/// `target/release/comet-bench`).
pub(crate) fn default_comet_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("comet")))
        .unwrap_or_else(|| PathBuf::from("comet"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_stat_line_when_parsed_should_add_user_and_system_ticks() {
        let line = "4242 (comet proxy) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(parse_stat(line), Some(3.0));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn given_snapshots_when_reported_should_divide_by_messages() {
        let probe = CpuProbe {
            mode: SpawnMode::Cluster,
            roles: vec![("proxy", 1), ("broker", 2)],
        };
        let start = CpuSnapshot {
            roles: vec![("proxy", 1, Some(1.0)), ("broker", 2, Some(2.0))],
            bench: Some(0.5),
        };
        let end = CpuSnapshot {
            roles: vec![("proxy", 1, Some(2.0)), ("broker", 2, Some(4.0))],
            bench: Some(1.0),
        };
        let r = probe.report(&start, &end, 10.0, 1_000_000);
        assert_eq!(r.roles.len(), 2);
        assert_eq!(r.roles[0].role, "proxy");
        assert!((r.roles[0].cpu_us_per_msg - 1.0).abs() < 1e-9);
        assert!((r.roles[1].cpu_us_per_msg - 2.0).abs() < 1e-9);
        assert!((r.servers_cpu_us_per_msg.unwrap_or(0.0) - 3.0).abs() < 1e-9);
        assert!((r.bench_cpu_us_per_msg.unwrap_or(0.0) - 0.5).abs() < 1e-9);
    }
}
