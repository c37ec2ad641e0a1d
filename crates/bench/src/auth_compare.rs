//! `--auth-compare`: what authentication and authorization cost a single send, in one run.
//!
//! Two `comet standalone` servers run side by side from the same binary and settings: one
//! with auth off, one with auth on. The second gets a bootstrap super user (`bench-admin`),
//! and through the `comet` admin commands signed by it: the topic, a normal user
//! (`bench-user`) and one ACL allowing that user only `Pub` on the topic. The bench then
//! signs every call of the auth-on rounds with `bench-user`'s credentials, as the official
//! clients do (a new `x-mq-date-time` each second), so the server verifies signatures and
//! evaluates the ACL of a normal user, not a super user's shortcut.
//!
//! ```text
//!  round 1: off ─► on    round 2: off ─► on    ...   (each a whole run of --duration)
//! ```
//!
//! Rounds alternate so that both servers see the same machine noise; the result is the mean
//! rate of each side, their ratio (on / off; the goal is ≥ 0.90), and each side's server CPU
//! per message (from `/proc/<pid>/stat` over the measured windows).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::args::BenchArgs;
use crate::run::run_against;
use crate::servers::{Servers, SpawnMode, default_comet_bin};
use crate::stats::BenchReport;
use crate::target::Credentials;

/// The bootstrap super user of the auth-on server.
const ADMIN_USER: &str = "bench-admin";
/// The user the bench signs with: a normal user allowed only `Pub` on the topic.
const BENCH_USER: &str = "bench-user";

/// One side of one round.
#[derive(Debug, Clone, Serialize)]
pub struct AuthRun {
    /// 1-based round number.
    pub round: u32,
    /// Whether the server had auth on.
    pub auth: bool,
    /// Messages sent per second in the measured window.
    pub sent_per_s: f64,
    /// All server CPU per message sent, microseconds (absent without `/proc`).
    pub server_cpu_us_per_msg: Option<f64>,
    /// Send errors in the window.
    pub errors: u64,
}

/// The result of `--auth-compare`.
#[derive(Debug, Clone, Serialize)]
pub struct AuthComparison {
    pub runs: Vec<AuthRun>,
    /// Mean sent rate with auth off and on.
    pub off_sent_per_s: f64,
    pub on_sent_per_s: f64,
    /// `on_sent_per_s / off_sent_per_s` (`null` when nothing was sent with auth off).
    pub ratio: Option<f64>,
    /// Mean server CPU per message with auth off and on, microseconds.
    pub off_cpu_us_per_msg: Option<f64>,
    pub on_cpu_us_per_msg: Option<f64>,
}

impl AuthComparison {
    fn new(runs: Vec<AuthRun>) -> Self {
        let side = |auth: bool| runs.iter().filter(move |r| r.auth == auth);
        let mean = |values: Vec<f64>| {
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        let rate = |auth: bool| mean(side(auth).map(|r| r.sent_per_s).collect()).unwrap_or(0.0);
        let cpu = |auth: bool| {
            let values: Option<Vec<f64>> = side(auth).map(|r| r.server_cpu_us_per_msg).collect();
            values.and_then(mean)
        };
        let (off, on) = (rate(false), rate(true));
        AuthComparison {
            off_sent_per_s: off,
            on_sent_per_s: on,
            ratio: (off > 0.0).then(|| on / off),
            off_cpu_us_per_msg: cpu(false),
            on_cpu_us_per_msg: cpu(true),
            runs,
        }
    }

    /// The comparison as a text table.
    pub fn table(&self) -> String {
        let cpu = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        let mut t = format!(
            "{:<6} {:<5} {:>12} {:>16} {:>7}\n",
            "round", "auth", "sent/s", "server µs/msg", "errors"
        );
        for r in &self.runs {
            t.push_str(&format!(
                "{:<6} {:<5} {:>12.0} {:>16} {:>7}\n",
                r.round,
                if r.auth { "on" } else { "off" },
                r.sent_per_s,
                cpu(r.server_cpu_us_per_msg),
                r.errors
            ));
        }
        t.push_str(&format!(
            "mean: auth off {:.0} msgs/s ({} µs/msg), auth on {:.0} msgs/s ({} µs/msg), \
             on/off {}\n",
            self.off_sent_per_s,
            cpu(self.off_cpu_us_per_msg),
            self.on_sent_per_s,
            cpu(self.on_cpu_us_per_msg),
            self.ratio.map_or("-".to_owned(), |r| format!("{r:.3}"))
        ));
        t
    }
}

/// A random secret: 32 hex digits from two v4 UUIDs' random bits.
fn random_hex() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Runs `comet <args>` signed as the bootstrap admin, against `controller`.
async fn admin(
    bin: &Path,
    controller: &str,
    admin_password: &str,
    args: &[&str],
) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(bin)
        .args(args)
        .args(["--controller", controller])
        .env("COMET_USERNAME", ADMIN_USER)
        .env("COMET_PASSWORD", admin_password)
        .env_remove("COMET_CONFIG")
        .output()
        .await
        .with_context(|| format!("running `comet {}`", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`comet {}` failed: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Creates [`BENCH_USER`] (a normal user) with `password` through the admin API, signed as the
/// bootstrap admin.
async fn create_user(controller: &str, admin_password: &str, password: &str) -> anyhow::Result<()> {
    use comet_proto::comet::v1::CreateUserRequest;
    use comet_proto::comet::v1::controller_admin_service_client::ControllerAdminServiceClient;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{controller}"))
        .with_context(|| format!("controller address {controller:?}"))?
        .connect()
        .await
        .with_context(|| format!("connecting to the controller at {controller}"))?;
    let mut request = tonic::Request::new(CreateUserRequest {
        name: BENCH_USER.to_owned(),
        password: password.to_owned(),
        user_type: "normal".to_owned(),
    });
    let admin = Credentials {
        access_key: ADMIN_USER.to_owned(),
        secret_key: admin_password.to_owned(),
    };
    let signed: http::HeaderMap = admin
        .headers(std::time::SystemTime::now())
        .into_iter()
        .collect();
    *request.metadata_mut() = tonic::metadata::MetadataMap::from_headers(signed);
    ControllerAdminServiceClient::new(channel)
        .create_user(request)
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "creating user {BENCH_USER}: {} ({:?})",
                s.message(),
                s.code()
            )
        })?;
    Ok(())
}

/// Starts the auth-on server and prepares its topic, user and ACL; returns it with the
/// bench user's password.
async fn start_secured(args: &BenchArgs, bin: &Path) -> anyhow::Result<(Servers, String)> {
    let admin_password = random_hex();
    let user_password = random_hex();
    let mut settings = side_by_side(args);
    settings.extend([
        "auth.enabled=true".to_owned(),
        format!("auth.cluster_key={}", random_hex()),
        format!("auth.bootstrap_username={ADMIN_USER}"),
        format!("auth.bootstrap_password={admin_password}"),
    ]);
    let servers = Servers::start(SpawnMode::Standalone, bin, &settings).await?;
    let prepared = async {
        let ctl = servers.controller.as_str();
        let queues = crate::servers::QUEUES.to_string();
        admin(
            bin,
            ctl,
            &admin_password,
            &["topic", "create", &args.topic, "--queues", &queues],
        )
        .await?;
        create_user(ctl, &admin_password, &user_password).await?;
        let subject = format!("User:{BENCH_USER}");
        let resource = format!("Topic:{}", args.topic);
        admin(
            bin,
            ctl,
            &admin_password,
            &[
                "acl",
                "create",
                "--subject",
                &subject,
                "--resource",
                &resource,
                "--actions",
                "Pub",
                "--decision",
                "Allow",
            ],
        )
        .await
    };
    match prepared.await {
        Ok(()) => Ok((servers, user_password)),
        Err(e) => {
            servers.stop().await;
            Err(e.context("preparing the auth-on server (topic, user, ACL)"))
        }
    }
}

/// The settings of both servers: `--server-set`, and no console or metrics listener (their
/// default ports would clash between the two).
fn side_by_side(args: &BenchArgs) -> Vec<String> {
    let mut settings = vec!["console.listen=".to_owned(), "metrics.listen=".to_owned()];
    settings.extend(args.server_set.iter().cloned());
    settings
}

fn auth_run(round: u32, auth: bool, report: &BenchReport) -> AuthRun {
    AuthRun {
        round,
        auth,
        sent_per_s: report.sent.msgs_per_s,
        server_cpu_us_per_msg: report
            .servers
            .as_ref()
            .and_then(|s| s.servers_cpu_us_per_msg),
        errors: report.sent.errors.values().sum(),
    }
}

/// Runs the comparison (see the module doc), writes the table to `out` and the
/// [`AuthComparison`] as JSON to `--json`, and returns it.
pub async fn auth_compare_with(
    args: BenchArgs,
    mut out: impl Write,
) -> anyhow::Result<AuthComparison> {
    args.validate()?;
    let bin = args.comet_bin.clone().unwrap_or_else(default_comet_bin);
    let plain = Servers::start(SpawnMode::Standalone, &bin, &side_by_side(&args)).await?;
    let (secured, password) = match start_secured(&args, &bin).await {
        Ok(s) => s,
        Err(e) => {
            plain.stop().await;
            return Err(e);
        }
    };
    let mut runs = Vec::new();
    let mut failure = None;
    'rounds: for round in 1..=args.auth_rounds {
        for auth in [false, true] {
            let servers = if auth { &secured } else { &plain };
            let mut a = args.clone();
            a.auth_compare = false;
            a.json = None;
            a.endpoint.clone_from(&servers.endpoint);
            if auth {
                a.access_key = Some(BENCH_USER.to_owned());
                a.secret_key = Some(password.clone());
            }
            tracing::info!(round, auth, "auth comparison: starting a run");
            match run_against(a, std::io::sink(), Some(servers.probe())).await {
                Ok(report) => runs.push(auth_run(round, auth, &report)),
                Err(e) => {
                    failure = Some(e.context(format!(
                        "round {round} with auth {}",
                        if auth { "on" } else { "off" }
                    )));
                    break 'rounds;
                }
            }
        }
    }
    plain.stop().await;
    secured.stop().await;
    if let Some(e) = failure {
        return Err(e);
    }
    let comparison = AuthComparison::new(runs);
    write!(out, "{}", comparison.table())
        .and_then(|()| out.flush())
        .context("cannot write the comparison")?;
    if let Some(path) = &args.json {
        let json =
            serde_json::to_string_pretty(&comparison).context("cannot encode the comparison")?;
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("cannot write the comparison to {}", path.display()))?;
    }
    Ok(comparison)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(round: u32, auth: bool, rate: f64, cpu: f64) -> AuthRun {
        AuthRun {
            round,
            auth,
            sent_per_s: rate,
            server_cpu_us_per_msg: Some(cpu),
            errors: 0,
        }
    }

    #[test]
    fn given_alternating_rounds_when_compared_should_average_each_side_and_divide() {
        let c = AuthComparison::new(vec![
            run(1, false, 1000.0, 10.0),
            run(1, true, 900.0, 12.0),
            run(2, false, 3000.0, 20.0),
            run(2, true, 2700.0, 22.0),
        ]);
        assert!((c.off_sent_per_s - 2000.0).abs() < 1e-9);
        assert!((c.on_sent_per_s - 1800.0).abs() < 1e-9);
        assert!((c.ratio.unwrap_or(0.0) - 0.9).abs() < 1e-9);
        assert!((c.on_cpu_us_per_msg.unwrap_or(0.0) - 17.0).abs() < 1e-9);
        assert!(c.table().contains("on/off 0.900"), "{}", c.table());
    }

    #[test]
    fn given_nothing_sent_without_auth_when_compared_should_have_no_ratio() {
        let c = AuthComparison::new(vec![run(1, false, 0.0, 0.0), run(1, true, 5.0, 1.0)]);
        assert!(c.ratio.is_none());
    }
}
