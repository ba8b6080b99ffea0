//! Host and route matching: any Host header and request target routes or
//! does not, never panics. `cargo +nightly fuzz run route`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Host header, then the target, split at the first newline.
    let (host, target) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"/"[..]),
    };
    let _ = waygate_proxy::fuzz_api::route(host, target);
});
