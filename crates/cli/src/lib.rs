//! `comet`: the one binary of Comet, and the library behind it (so that `tests/` can start
//! nodes in process and re-run the same command handlers).
//!
//! Today it carries the storage admin commands; the server roles (`standalone`, `proxy`,
//! `broker`, `controller`) join as subcommands when their crates can run.
//!
//! ```text
//!  comet store inspect --data-dir DIR [--segment-size SIZE]   recovery report, offsets, queues
//!  comet store verify  --data-dir DIR [--segment-size SIZE]   CRC-check every queued message
//! ```
//!
//! # Layout
//! - `main.rs` (the binary): parse arguments, set up logging, dispatch, map the outcome to an
//!   exit status.
//! - `args`: the clap definitions of every subcommand.
//! - `store_cmd`: `comet store ...` over `comet_store`'s public API.
//! - `size`: human-readable sizes (`64KiB`, `1GiB`) for flags.
//!
//! # Conventions
//! - Results go to stdout (one JSON object per admin command); logs go to stderr, filtered by
//!   `RUST_LOG` (default `warn`).
//! - Exit status: 0 success; 1 the command ran and found a problem (e.g. corrupt records);
//!   2 the command could not run (bad arguments, missing directory, I/O error).
//! - Only the cluster tests (`tests/`) depend on this crate; logic worth testing in isolation
//!   belongs in the library crates.

pub mod args;
pub mod bench;
pub mod size;
pub mod store_cmd;
