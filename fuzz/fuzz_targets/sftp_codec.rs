//! Fuzz target `sftp_codec`: see `jms_fuzz::sftp_codec` and README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jms_fuzz::sftp_codec(data));
