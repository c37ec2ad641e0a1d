#![no_main]
//! Fuzz target `index_entry`: see `comet_store::fuzzing::index_entry`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| comet_store::fuzzing::index_entry(data));
