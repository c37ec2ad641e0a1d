#![no_main]
//! Fuzz target `raft_log`: see `comet_controller::fuzzing::raft_log`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| comet_controller::fuzzing::raft_log(data));
