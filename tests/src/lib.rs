//! Comet's cluster-level tests: real processes or in-process nodes on 127.0.0.1 ports, official
//! clients, and fault injection. The harness and the tests arrive with the standalone and
//! controller issues; the storage engine's own crash and model tests live in `crates/store/tests`.
#![forbid(unsafe_code)]
