//! Fuzz target `frames`: see `jms_fuzz::frames` and README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jms_fuzz::frames(data));
