#![no_main]
//! Fuzz target `transaction_id`: see `comet_broker::fuzzing::transaction_id`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| comet_broker::fuzzing::transaction_id(data));
