#![no_main]
//! Fuzz target `remoting_frame`: see `comet_controller::fuzzing::remoting_frame`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| comet_controller::fuzzing::remoting_frame(data));
