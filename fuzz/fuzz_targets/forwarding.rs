//! Request header checks and forwarding rewrites (hop-by-hop removal,
//! X-Forwarded-*, Via, Forwarded) on arbitrary headers, from trusted and
//! untrusted peers: never a panic, and an untrusted client's
//! X-Forwarded-For never survives. `cargo +nightly fuzz run forwarding`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // Header lines `name:value`, one per line.
    let pairs: Vec<(&[u8], &[u8])> = rest
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let i = line.iter().position(|b| *b == b':')?;
            Some((&line[..i], &line[i + 1..]))
        })
        .collect();
    let trusted = flags & 1 == 1;
    let out = waygate_proxy::fuzz_api::forwarding(&pairs, trusted);
    if !trusted {
        let xff: Vec<_> = out.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff.len(), 1);
        assert_eq!(xff[0], "192.0.2.1");
    }
});
