//! Durations as written in the config ("250ms", "1.5s"): never a panic,
//! and whatever parses is a finite duration. `cargo +nightly fuzz run duration`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(d) = waygate_config::parse_duration(s) {
            let _ = d.as_secs_f64();
        }
    }
});
