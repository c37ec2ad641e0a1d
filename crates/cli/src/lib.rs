//! `comet`: the one binary of Comet, and the library behind it (so that `tests/` can start
//! nodes in process and re-run the same command handlers).
//!
//! ```text
//!  comet standalone                      controller + broker + proxy in one process (zero config)
//!  comet controller | broker | proxy     one role per process ("cluster mode")
//!  comet topic  create|update|delete|describe|list|route   admin through the controller
//!  comet group  create|update|delete|describe|list
//!  comet cluster describe|brokers|members|add-member|remove-member
//!  comet offset reset|progress                          consumer offsets (through the brokers)
//!  comet message id|key|offset                          stored message queries (brokers)
//!  comet store  inspect|verify --data-dir DIR          offline storage checks
//!  comet log-level set LEVEL [--target ADDR]            run-time log level (admin API)
//! ```
//!
//! # Layout
//! - `main.rs` (the binary): parse arguments, dispatch, map the outcome to an exit status.
//! - `args`: the clap definitions of every subcommand.
//! - `config`: the layered server configuration (defaults < TOML < `COMET_*` env < flags);
//!   `deploy/comet.example.toml` documents every key.
//! - `server`: wiring only: config → bound listeners → each crate's server
//!   (`comet_controller::ControllerServer`, `comet_broker::BrokerNode`, `comet_proxy::serve`),
//!   signals → an ordered stop; `Node` is what the binary and the tests start (and
//!   `Node::abort`, an in-process "kill -9" built on `kill`). `server::args` holds the
//!   shared server flags, `server::configs` maps the config onto each crate's config type,
//!   `server::creators` auto-creates topics through the local or remote controller.
//! - `controller_client`: a re-export of `comet_broker::node::controller_client`, the one
//!   leader-following controller client (admin commands and cluster-mode proxies use it).
//! - `admin`: `comet topic|group|cluster ...` over the controller API (`admin::controller_api`);
//!   `comet offset|message ...` over the brokers' internal API (`admin::broker_api`), found
//!   through the controller's metadata (`admin::fanout`); with `args`, `parse` and `render`
//!   (the JSON output) beside them.
//! - `store_cmd`: `comet store ...` over `comet_store`'s public API.
//! - `logging`, `size`, `duration`: stderr logging (through `comet_observe::logging`: text or
//!   JSON, OTLP span export), `64KiB`-style sizes, `500ms`-style durations.
//! - `log_level`: `comet log-level set`, the run-time log level through the admin API.
//!
//! # Conventions
//! - Results go to stdout (one JSON object per admin command; servers print one
//!   `<role> listening on <addr>` line per listener, then `comet <role> ready`); logs go to
//!   stderr, filtered by `RUST_LOG` or the configured level.
//! - Exit status: 0 success; 1 the command ran and found a problem (e.g. corrupt records);
//!   2 the command could not run (bad arguments, unreachable controller, I/O error).
//! - Only the cluster tests (`tests/`, and `comet-bench`'s) depend on this crate; logic worth
//!   testing in isolation belongs in the library crates.

pub mod admin;
pub mod args;
pub mod config;
pub mod duration;
pub mod kill;
pub mod log_level;
pub mod logging;
pub mod server;
pub mod size;
pub mod store_cmd;

/// The controller client lives in the broker crate (its controller link needs it); admin
/// commands and the tests reach it here too.
pub use comet_broker::node::controller_client;
