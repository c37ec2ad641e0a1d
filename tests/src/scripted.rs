//! The official Python and Node clients, driven as child processes by the scenario scripts in
//! `tests/clients/{python,node}` (see `tests/tests/clients.rs` for what each scenario checks).
//!
//! The clients are installed by `tests/clients/install.sh` (pinned versions; `.ci/run` runs
//! it). A test whose client is not installed returns early with a note on stderr, so
//! `cargo test --workspace` works with the Rust toolchain alone, unless
//! `COMET_REQUIRE_CLIENTS=1` is set (as `.ci/run` does): then a missing client fails the test.
//!
//! Protocol with a script (one JSON object a line on its stdout): `{"phase": "consumed"}` once
//! it saw every expected delivery, while its consumers keep running; it then waits for a line
//! on stdin, shuts its clients down and prints `{"result": {...}}`. Its stderr and the Python
//! client's own log file (under a temporary `$HOME`) are shown when anything goes wrong.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Set to `1` to make a missing client a test failure instead of a skip.
pub const REQUIRE_ENV: &str = "COMET_REQUIRE_CLIENTS";
/// Where `install.sh` put the Python virtualenv (default `target/clients`).
pub const DIR_ENV: &str = "COMET_CLIENTS_DIR";

/// Longest a script may take from start to its `consumed` line, and from the go-ahead to its
/// result (client shutdown).
const PHASE_LIMIT: Duration = Duration::from_secs(90);

/// An official client of another language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// `rocketmq-python-client` 5.1.2.
    Python,
    /// `rocketmq-client-nodejs` 1.0.8.
    Node,
}

impl Lang {
    /// The name scripts write into message properties (`origin`).
    pub fn name(self) -> &'static str {
        match self {
            Lang::Python => "py",
            Lang::Node => "node",
        }
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the repository")
        .to_path_buf()
}

/// The interpreter and script of `lang`, or `None` (after a note on stderr) when the client is
/// not installed and [`REQUIRE_ENV`] is not set.
///
/// # Panics
/// When the client is missing and [`REQUIRE_ENV`] is `1`.
pub fn launcher(lang: Lang) -> Option<(PathBuf, PathBuf)> {
    let root = repo();
    let clients = root.join("tests/clients");
    let (program, script, marker) = match lang {
        Lang::Python => {
            let dir = std::env::var_os(DIR_ENV)
                .map_or_else(|| root.join("target/clients"), PathBuf::from);
            let python = dir.join("python/bin/python");
            (
                python.clone(),
                clients.join("python/scenarios.py"),
                dir.join("python/.installed"),
            )
        }
        Lang::Node => (
            PathBuf::from("node"),
            clients.join("node/scenarios.js"),
            clients.join("node/node_modules/.installed"),
        ),
    };
    if marker.exists() {
        return Some((program, script));
    }
    let note = format!(
        "the official {lang:?} client is not installed ({} is missing); run tests/clients/install.sh",
        marker.display()
    );
    assert!(
        std::env::var(REQUIRE_ENV).as_deref() != Ok("1"),
        "{note} ({REQUIRE_ENV}=1)"
    );
    eprintln!("skipped: {note}");
    None
}

/// A running scenario script.
pub struct Script {
    lang: Lang,
    scenario: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<tokio::sync::Mutex<String>>,
    home: tempfile::TempDir,
}

impl Script {
    /// Starts `scenario` of `lang` with `spec` (the endpoint, topics, groups and counts the
    /// script needs), or returns `None` when the client is not installed (see [`launcher`]).
    pub fn start(lang: Lang, scenario: &str, spec: &Value) -> Option<Script> {
        let (program, script) = launcher(lang)?;
        let home = tempfile::tempdir().expect("temp home for client logs");
        let mut child = Command::new(&program)
            .arg(&script)
            .arg(scenario)
            .arg(spec.to_string())
            .current_dir(script.parent().expect("script dir"))
            // The clients write their logs under ~/logs.
            .env("HOME", home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let stderr = Arc::new(tokio::sync::Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .await
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Some(Script {
            lang,
            scenario: scenario.to_owned(),
            child,
            stdin,
            stdout,
            stderr,
            home,
        })
    }

    /// Waits (bounded) for the script's next stdout object that has `key`.
    async fn next_with(&mut self, key: &str) -> Value {
        let read = async {
            while let Some(line) = self.stdout.next_line().await.ok().flatten() {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) if v.get(key).is_some() => return Some(v),
                    _ => eprintln!("[{:?} {}] {line}", self.lang, self.scenario),
                }
            }
            None
        };
        match tokio::time::timeout(PHASE_LIMIT, read).await {
            Ok(Some(v)) => v,
            Ok(None) => self.fail(&format!("ended without a `{key}` line")).await,
            Err(_) => {
                self.fail(&format!("no `{key}` line within {PHASE_LIMIT:?}"))
                    .await
            }
        }
    }

    /// Waits until the script saw every expected delivery; its consumers keep running until
    /// [`Script::finish`].
    pub async fn consumed(&mut self) {
        self.next_with("phase").await;
    }

    /// Lets the script shut its clients down and returns its report (`result`).
    pub async fn finish(mut self) -> Value {
        if let Some(mut stdin) = self.stdin.take() {
            // A script that already ended is reported by `next_with`.
            let _ = stdin.write_all(b"stop\n").await;
        }
        let mut line = self.next_with("result").await;
        let status = tokio::time::timeout(PHASE_LIMIT, self.child.wait()).await;
        if !matches!(status, Ok(Ok(s)) if s.success()) {
            self.fail(&format!("exited with {status:?}")).await;
        }
        line["result"].take()
    }

    /// Panics with the script's stderr and the tail of the client's log.
    async fn fail(&mut self, what: &str) -> ! {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let stderr = self.stderr.lock().await.clone();
        let log = client_log(self.lang, self.home.path());
        panic!(
            "{:?} scenario {} {what}\n--- stderr ---\n{stderr}\n--- client log (tail) ---\n{log}",
            self.lang, self.scenario
        );
    }
}

/// The last lines of the client's own log file (the Python client writes one under
/// `~/logs`; the Node script hands its client a logger that writes warnings to stderr).
fn client_log(lang: Lang, home: &Path) -> String {
    let path = match lang {
        Lang::Python => home.join("logs/rocketmq_python/rocketmq_client.log"),
        Lang::Node => return "(in stderr)".to_owned(),
    };
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}
