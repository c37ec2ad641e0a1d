//! placeholder
#![forbid(unsafe_code)]

pub mod error;
pub mod metadata;
pub mod raft_types;
pub mod storage;
