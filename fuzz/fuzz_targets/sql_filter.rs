#![no_main]
//! Fuzz target `sql_filter`: see `comet_broker::fuzzing::sql_filter`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| comet_broker::fuzzing::sql_filter(data));
