#![no_main]
//! Fuzz target `route_data`: see `comet_controller::fuzzing::route_data`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| comet_controller::fuzzing::route_data(data));
