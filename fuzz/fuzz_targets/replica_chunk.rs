#![no_main]
//! Fuzz target `replica_chunk`: see `comet_store::fuzzing::replica_chunk`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| comet_store::fuzzing::replica_chunk(data));
