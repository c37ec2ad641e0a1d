#![no_main]
//! Fuzz target `timer_record`: see `comet_store::fuzzing::timer_record`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| comet_store::fuzzing::timer_record(data));
