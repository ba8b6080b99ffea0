//! Fuzzes the config loader and validator: any text must give a config or
//! diagnostics, never a panic. `cargo +nightly fuzz run config`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(src) = std::str::from_utf8(data) {
        // Relative paths (error pages, log files) resolve under a directory
        // that does not exist, so nothing outside is read.
        let base = std::path::Path::new("/nonexistent-waygate-fuzz");
        if let Err(diags) = waygate_config::parse(src, "fuzz.toml", base) {
            // Rendering diagnostics (with line and column) must not panic either.
            for d in diags {
                let _ = d.to_string();
            }
        }
    }
});
