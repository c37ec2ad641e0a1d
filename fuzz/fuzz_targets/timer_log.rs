#![no_main]
//! Fuzz target `timer_log`: see `comet_store::fuzzing::timer_log`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| comet_store::fuzzing::timer_log(data));
