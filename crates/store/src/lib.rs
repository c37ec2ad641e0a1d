//! Comet's storage engine (work in progress on this branch).

pub mod error;
// Only tests use the index until the dispatcher is wired in.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod index_file;
mod mapped_file;

pub use error::{Result, StoreError};
