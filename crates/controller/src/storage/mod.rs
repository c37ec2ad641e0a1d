//! Durable Raft storage under the controller's data directory.
//!
//! - [`log_store`]: the log and vote ([`log_store::FileLogStore`]).
//! - [`state_machine`]: the metadata state machine and its snapshots
//!   ([`state_machine::FileStateMachine`]).
//! - [`fs_util`]: atomic file replacement and the data-directory lock.

pub mod fs_util;
pub mod log_store;
pub mod state_machine;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests;
