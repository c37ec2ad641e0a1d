#![no_main]
//! Fuzz target `receipt_handle`: see `comet_broker::fuzzing::receipt_handle`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| comet_broker::fuzzing::receipt_handle(data));
