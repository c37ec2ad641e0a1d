#![no_main]
//! Fuzz target `consumer_state`: see `comet_broker::fuzzing::consumer_state`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| comet_broker::fuzzing::consumer_state(data));
