//! Comet's storage engine (work in progress on this branch).

pub mod error;
mod mapped_file;

pub use error::{Result, StoreError};
