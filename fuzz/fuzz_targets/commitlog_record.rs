#![no_main]
//! Fuzz target `commitlog_record`: see `comet_store::fuzzing::commitlog_record`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| comet_store::fuzzing::commitlog_record(data));
