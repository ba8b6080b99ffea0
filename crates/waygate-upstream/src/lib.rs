//! Server sets: the servers of one upstream with their live state
//! (in-flight requests, peak-EWMA latency, active health, passive ejection,
//! admin state), the balancing policies that pick among them, and the active
//! health checker.
//!
//! Everything a request touches is an atomic: picking a server takes no lock.

mod balancer;
mod clock;
mod health;
mod maglev;
mod server;
mod tls;
mod wrr;

pub use balancer::{Pick, PickReason, ServerSet};
pub use clock::{ms_at, now_ms};
pub use health::{
    check_once, probe_addr, resolve, run_checker, CheckOutcome, Probe, ProbeSpec, Transport,
    Verdict,
};
pub use server::{AdminState, Health, InFlight, Outcome, ServerState};
pub use tls::{tls_failure, TlsConnect, TlsFailure};
