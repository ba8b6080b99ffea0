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
//! `mi_collect` performs the expired purges. Under load it finds little to
//! do: ranges reused before their delay are not purged.
//!
//! Once the process has gone quiet (it used under 1 % of a core over the
//! last [`EVERY`]), the next few passes are forced: what is freed is given
//! back at once instead of after the delay, so the memory of a burst is
//! back within about half a second of the burst's end. With 10,000 idle
//! connections, 1 s after the burst that opened them, the gateway held
//! 29.9–31.4 MB instead of 31–62 (`bench/idle.sh`). Shortening mimalloc's delay
//! instead (`purge_delay` 100 ms) did the same when idle, but cost 7–18 %
//! more CPU per request at 256 connections, where freed ranges are purged
//! and faulted in again.

use std::time::Duration;

/// How often a purging pass runs.
const EVERY: Duration = Duration::from_millis(250);

/// CPU time per pass below which the process counts as quiet: 1 % of a
/// core. An idle gateway's timers and a request now and then stay below
/// it; serving load does not. A forced pass that itself takes longer (much
/// to give back) counts as busy and restarts the count, so forcing goes
/// on until there is little left to give back.
const QUIET_CPU: Duration = Duration::from_micros(2_500);

/// Forced passes after the process goes quiet: the parking that follows a
/// burst ends within half a second of its last request (client connections
/// after 250 ms idle, pooled upstream ones at the next sweep after that),
/// so 2 s of forced passes cover it. After that, passes are plain again
/// until the process has been busy and goes quiet once more.
const FORCED_PASSES: u32 = 8;

/// Starts the purging thread (for the life of the process).
pub(crate) fn spawn() {
    let started = std::thread::Builder::new()
        .name("waygate-purge".into())
        .spawn(|| {
            let mut quiet = Quiet::default();
            let mut cpu = process_cpu();
            loop {
                std::thread::sleep(EVERY);
                let now = process_cpu();
                collect(quiet.pass(now.saturating_sub(cpu)));
                cpu = now;
            }
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "could not start the memory purging thread; freed memory is returned to the OS more slowly");
    }
}

/// Decides, pass by pass, whether to force one.
#[derive(Debug, Default)]
struct Quiet {
    /// Forced passes left in the current quiet spell.
    forced_left: u32,
}

impl Quiet {
    /// Whether this pass is forced, given the CPU the process used since
    /// the last one.
    fn pass(&mut self, used: Duration) -> bool {
        if used >= QUIET_CPU {
            self.forced_left = FORCED_PASSES;
            return false;
        }
        if self.forced_left == 0 {
            return false;
        }
        self.forced_left -= 1;
        true
    }
}

/// CPU time used by the whole process so far (zero if the clock cannot be
/// read, which makes every pass plain).
#[allow(unsafe_code)]
fn process_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec for the call's duration;
    // clock_gettime writes only into it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// One pass: purges what mimalloc freed long enough ago, or, when
/// `force`d, everything it holds freed.
#[allow(unsafe_code)]
fn collect(force: bool) {
    // SAFETY: `mi_collect` takes no pointer and is documented as callable
    // from any thread at any time; it only walks mimalloc's own structures.
    unsafe { libmimalloc_sys::mi_collect(force) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collection_pass_is_harmless_while_allocating() {
        let kept: Vec<Vec<u8>> = (0..1000).map(|i| vec![7u8; 64 + i]).collect();
        collect(false);
        collect(true);
        assert!(kept
            .iter()
            .enumerate()
            .all(|(i, v)| v.len() == 64 + i && v.iter().all(|&b| b == 7)));
    }

    #[test]
    fn passes_are_forced_for_a_while_after_the_process_goes_quiet() {
        let mut q = Quiet::default();
        let idle = Duration::from_micros(100);
        let busy = Duration::from_millis(200);
        // Quiet from the start: nothing was freed by a burst.
        assert!(!q.pass(idle));
        // Busy: plain passes, then the quiet spell's forced ones.
        assert!(!q.pass(busy));
        assert!(!q.pass(QUIET_CPU));
        let forced: Vec<bool> = (0..FORCED_PASSES + 3).map(|_| q.pass(idle)).collect();
        assert!(forced[..FORCED_PASSES as usize].iter().all(|&f| f));
        assert!(forced[FORCED_PASSES as usize..].iter().all(|&f| !f));
        // Busy again, then quiet again: forced again, from the start.
        assert!(!q.pass(busy));
        assert!(q.pass(idle));
    }

    #[test]
    fn process_cpu_time_counts_this_process_work() {
        // Spins until the process's CPU time has grown by 5 ms; a clock
        // that is not the process's CPU time (or that stands still) would
        // not get there within the bound (about 20 s of spinning at most).
        let before = process_cpu();
        let mut x = 0u64;
        let mut used = Duration::ZERO;
        let mut rounds = 0u32;
        while used < Duration::from_millis(5) && rounds < 2_000_000 {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            used = process_cpu().saturating_sub(before);
            rounds += 1;
        }
        assert!(
            used >= Duration::from_millis(5),
            "{used:?} of CPU after {rounds} rounds of spinning"
        );
    }
}
