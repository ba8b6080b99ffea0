//! Gives the memory mimalloc has freed back to the OS while the gateway is
//! idle.
//!
//! mimalloc returns a freed range to the OS only after a delay (1 s), and
//! only when a later allocator call notices that the delay has passed. A
//! gateway that goes quiet after a burst (say 10,000 keep-alive clients
//! parked, and the burst's pooled upstream connections swept) makes almost
//! no such calls, so the burst's freed memory stayed resident: 41–44 MB
//! with 10,000 idle connections, against 29 MB once purged
//! (BENCHMARKS.md, "Idle keep-alive connections"). A thread calling
//! `mi_collect` once a second performs the expired purges. Under load it
//! finds little to do: ranges reused before their delay are not purged.

use std::time::Duration;

/// How often expired purges are performed.
const EVERY: Duration = Duration::from_secs(1);

/// Starts the purging thread (for the life of the process).
pub(crate) fn spawn() {
    let started = std::thread::Builder::new()
        .name("waygate-purge".into())
        .spawn(|| loop {
            std::thread::sleep(EVERY);
            collect();
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "could not start the memory purging thread; freed memory is returned to the OS more slowly");
    }
}

/// One pass: purges what mimalloc freed long enough ago (not forced, so
/// nothing still within its delay is touched).
#[allow(unsafe_code)]
fn collect() {
    // SAFETY: `mi_collect` takes no pointer and is documented as callable
    // from any thread at any time; it only walks mimalloc's own structures.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_collection_pass_is_harmless_while_allocating() {
        let kept: Vec<Vec<u8>> = (0..1000).map(|i| vec![7u8; 64 + i]).collect();
        super::collect();
        assert!(kept
            .iter()
            .enumerate()
            .all(|(i, v)| v.len() == 64 + i && v.iter().all(|&b| b == 7)));
    }
}
