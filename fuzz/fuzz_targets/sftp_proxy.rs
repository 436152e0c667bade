//! Fuzz target `sftp_proxy`: see `jms_fuzz::sftp_proxy` and README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jms_fuzz::sftp_proxy(data));
