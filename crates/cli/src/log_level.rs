//! `comet log-level set LEVEL`: replaces the log filter of running Comet processes through
//! their admin API (`SetLogLevel` of the controller's ControllerAdminService or the broker's
//! BrokerService). A standalone process has one filter for all its roles.

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use comet_proto::comet::v1::SetLogLevelRequest;
use comet_proto::comet::v1::broker_service_client::BrokerServiceClient;
use comet_proto::comet::v1::controller_admin_service_client::ControllerAdminServiceClient;
use serde_json::json;

use crate::config::{Config, Sources};

/// `comet log-level ...`
#[derive(Debug, Subcommand)]
pub enum LogLevelCommand {
    /// Replace the log filter, e.g. `comet log-level set debug` or
    /// `comet log-level set comet_broker=debug,info --target 10.0.0.5:10911 --kind broker`.
    Set(SetArgs),
}

/// What a target address serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// A controller's gRPC address (`controller.listen`).
    Controller,
    /// A broker's gRPC address (`broker.listen`).
    Broker,
}

/// `comet log-level set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// tracing filter directives: a level (`debug`) or per-target levels
    /// (`comet_broker=debug,info`); openraft stays at WARN unless named.
    pub level: String,
    /// Process(es) to change, host:port; repeat or separate with commas. Default: every
    /// configured controller (`controllers`).
    #[arg(long = "target", value_name = "ADDR", value_delimiter = ',')]
    pub targets: Vec<String>,
    /// What the targets serve.
    #[arg(long, value_enum, default_value = "controller")]
    pub kind: TargetKind,
    /// Config file to read `controllers` from.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

/// Runs the command; one JSON entry per target with the directives now in force.
///
/// # Errors
/// A target that cannot be reached or refuses the directives (INVALID_ARGUMENT names them).
pub async fn run(cmd: &LogLevelCommand) -> anyhow::Result<serde_json::Value> {
    let LogLevelCommand::Set(args) = cmd;
    let cfg = Config::load(&Sources::from_process(args.config.clone()))?;
    let targets = if args.targets.is_empty() {
        cfg.controllers.clone()
    } else {
        args.targets.clone()
    };
    let connector = cfg.internal_connector()?;
    let signer = crate::admin::Signer::from_config(&cfg)?;
    let mut out = Vec::new();
    for target in &targets {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{target}"))
            .with_context(|| format!("target {target:?} is not host:port"))?
            .connect_with_connector(connector.clone())
            .await
            .with_context(|| format!("connecting to {target}"))?;
        let request = signer.sign(SetLogLevelRequest {
            directives: args.level.clone(),
        });
        let answer = match args.kind {
            TargetKind::Controller => {
                ControllerAdminServiceClient::new(channel)
                    .set_log_level(request)
                    .await
            }
            TargetKind::Broker => {
                BrokerServiceClient::new(channel)
                    .set_log_level(request)
                    .await
            }
        }
        .map_err(|s| anyhow::anyhow!("{target}: {}: {}", s.code(), s.message()))?;
        out.push(json!({ "target": target, "directives": answer.into_inner().directives }));
    }
    Ok(serde_json::Value::Array(out))
}
