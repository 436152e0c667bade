//! Fuzz target `policy`: see `jms_fuzz::policy` and README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jms_fuzz::policy(data));
