#![no_main]
//! Fuzz target `epoch`: see `comet_store::fuzzing::epoch`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| comet_store::fuzzing::epoch(data));
