#![no_main]
//! Fuzz target `checkpoint`: see `comet_store::fuzzing::checkpoint`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| comet_store::fuzzing::checkpoint(data));
