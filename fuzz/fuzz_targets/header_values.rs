//! Our header-value parsers (an upstream's `Keep-Alive`, a trusted
//! `X-Request-Id`, `Accept` for error pages) on any bytes: never a panic.
//! `cargo +nightly fuzz run header_values`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    waygate_proxy::fuzz_api::header_values(data);
});
