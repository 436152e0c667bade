//! Fuzz target `line_tracker`: see `jms_fuzz::line_tracker` and README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jms_fuzz::line_tracker(data));
