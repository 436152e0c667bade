//! Fuzz target `bundle`: see `jms_fuzz::bundle` and README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jms_fuzz::bundle(data));
