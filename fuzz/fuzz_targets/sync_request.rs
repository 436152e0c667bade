//! Fuzz target `sync_request`: see `jms_fuzz::sync_request` and README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jms_fuzz::sync_request(data));
