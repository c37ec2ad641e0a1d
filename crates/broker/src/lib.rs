//! The Comet broker: one storage node of a broker set.
//!
//! It will own the internal `BrokerService` over `comet-store`: POP-style receive (invisible
//! time, receipt handles, revive), retry and dead-letter queues, FIFO group locks, transactions
//! (half messages and check-back), delay delivery through the store's timer wheel, long polling,
//! and master→replica replication. It arrives with the standalone issue; today this crate has no
//! code.
//!
//! Dependency rule: broker → store + proto; never proxy or sdk.
#![forbid(unsafe_code)]
