//! The Comet controller: cluster metadata in an openraft state machine.
//!
//! It will own brokers, broker sets, master epochs and sync-state sets, topics, groups and the
//! route tables derived from them, DLedger-style master election, and the NameServer-compatible
//! remoting endpoint. It arrives with the controller issue; today this crate has no code.
//!
//! Dependency rule: controller → proto only; never broker, proxy or store.
#![forbid(unsafe_code)]
