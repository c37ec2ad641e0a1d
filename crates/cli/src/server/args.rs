//! [`ServerArgs`]: the flags shared by `comet standalone|controller|broker|proxy`, each mapped
//! onto a config key over the file and environment layers.

use std::path::PathBuf;

use clap::Args;

use crate::config::{Config, Sources};

/// Flags shared by the server roles; each maps onto a config key.
#[derive(Debug, Clone, Default, Args)]
pub struct ServerArgs {
    /// TOML config file (default: `COMET_CONFIG`, else built-in defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Root data directory (`data_dir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Proxy listen address (`proxy.listen`), e.g. 0.0.0.0:8081.
    #[arg(long, value_name = "ADDR")]
    pub proxy_listen: Option<String>,
    /// Address clients are given in routes (`proxy.advertised_endpoint`).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertised_endpoint: Option<String>,
    /// Broker listen address (`broker.listen`).
    #[arg(long, value_name = "ADDR")]
    pub broker_listen: Option<String>,
    /// Controller listen address (`controller.listen`).
    #[arg(long, value_name = "ADDR")]
    pub controller_listen: Option<String>,
    /// NameServer-compatible remoting listen address (`controller.remoting_listen`), e.g.
    /// 0.0.0.0:9876; an empty value turns it off.
    #[arg(long, value_name = "ADDR")]
    pub remoting_listen: Option<String>,
    /// Web console listen address (`console.listen`) of a controller or standalone node, e.g.
    /// 0.0.0.0:8082; an empty value turns it off.
    #[arg(long, value_name = "ADDR")]
    pub console_listen: Option<String>,
    /// Controller addresses for `comet proxy` / `comet broker` (`controllers`); repeat or
    /// separate with commas.
    #[arg(long = "controller", value_name = "ADDR", value_delimiter = ',')]
    pub controllers: Vec<String>,
    /// Broker set of `comet broker` (`broker.broker_set`).
    #[arg(long, value_name = "NAME")]
    pub broker_set: Option<String>,
    /// This broker's id within its set (`broker.broker_id`): an identity only; the controller
    /// decides which member is the master.
    #[arg(long, value_name = "ID")]
    pub broker_id: Option<u64>,
    /// Any setting: `--set section.key=value` (repeatable), e.g. `--set broker.flush=sync`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Log line format (`log.format`): `text` or `json` (one object per line).
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Metrics listener (`metrics.listen`): `/metrics`, `/healthz`, `/readyz`; empty = none.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

impl ServerArgs {
    /// The configuration these flags select, over the file and environment.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut sources = Sources::from_process(self.config.clone());
        let mut push = |k: &str, v: String| sources.overrides.push((k.to_owned(), v));
        if let Some(d) = &self.data_dir {
            push("data_dir", toml_string(&d.to_string_lossy()));
        }
        for (key, value) in [
            ("proxy.listen", &self.proxy_listen),
            ("proxy.advertised_endpoint", &self.advertised_endpoint),
            ("broker.listen", &self.broker_listen),
            ("controller.listen", &self.controller_listen),
            ("controller.remoting_listen", &self.remoting_listen),
            ("console.listen", &self.console_listen),
            ("broker.broker_set", &self.broker_set),
            ("log.format", &self.log_format),
            ("metrics.listen", &self.metrics_listen),
        ] {
            if let Some(v) = value {
                push(key, toml_string(v));
            }
        }
        if let Some(id) = self.broker_id {
            push("broker.broker_id", id.to_string());
        }
        if !self.controllers.is_empty() {
            let list: Vec<String> = self.controllers.iter().map(|c| toml_string(c)).collect();
            push("controllers", format!("[{}]", list.join(", ")));
        }
        for kv in &self.set {
            let Some((k, v)) = kv.split_once('=') else {
                anyhow::bail!("--set {kv:?}: expected section.key=value");
            };
            push(k.trim(), v.trim().to_owned());
        }
        Config::load(&sources)
    }
}

/// A string as a TOML string literal (so flag values are never re-interpreted as numbers).
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}
