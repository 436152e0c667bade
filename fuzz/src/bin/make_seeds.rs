//! Writes the seed corpus (fuzz/corpus/TARGET/) from the code's own
//! encoders: real frames, SFTP sessions, command lines, the example policy,
//! a signed bundle and delta, signed sync requests (`scripts/fuzz seeds`).
//! A libFuzzer binary like the targets (the instrumented build needs
//! libFuzzer's runtime): it writes to `$JMS_FUZZ_SEEDS` at start-up and exits.
#![no_main]
#![allow(unreachable_code)] // init exits

libfuzzer_sys::fuzz_target!(
    init: {
        let root = std::env::var("JMS_FUZZ_SEEDS").unwrap_or_else(|_| "fuzz/corpus".into());
        for (target, name, bytes) in jms_fuzz::seeds::all() {
            let dir = std::path::Path::new(&root).join(target);
            std::fs::create_dir_all(&dir).expect("corpus dir");
            std::fs::write(dir.join(name), bytes).expect("seed written");
        }
        std::process::exit(0);
    },
    |_data: &[u8]| {}
);
