//! Fuzz target `command_line`: see `jms_fuzz::command_line` and README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jms_fuzz::command_line(data));
