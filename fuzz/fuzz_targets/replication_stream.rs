#![no_main]
//! Fuzz target `replication_stream`: see `comet_broker::fuzzing::replication_stream`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| comet_broker::fuzzing::replication_stream(data));
