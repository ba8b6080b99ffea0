//! waygate's request path: listeners, the router, the forwarder with its
//! per-server connection pools, and the responder that turns a [`Cause`]
//! into a truthful error response.
//!
//! ```text
//! accept → serve conn (h1) → RequestContext (id, timers, log record) → route
//!   → select upstream → [attempt: pick server (round robin) → pooled or fresh conn
//!   → send/recv under timeouts → classify] → stream response, or synthesize an
//!   error response → finish access log
//! ```
//!
//! [`Cause`]: waygate_core::Cause

mod attempt;
mod body;
mod classify;
mod client_io;
mod control;
mod forward;
mod headers;
mod metrics;
mod negotiate;
mod pool;
mod public_status;
mod ratelimit;
mod reload;
mod respond;
mod router;
mod runtime;
mod server;
mod status;
mod supervise;

pub use control::{admin_name, ControlError, ServerView, UpstreamView};
pub use reload::{Changes, LastReload, ReloadError, ReloadReport, ReloadStats};
pub use runtime::{BuildError, Gateway};
pub use server::Bound;
pub use status::{CauseGroup, Point, StatusView, UpstreamPoint};

/// Internals exposed for the criterion benchmarks only; not a stable API.
#[doc(hidden)]
pub mod bench_api {
    pub use crate::ratelimit::RatePolicy;
    pub use crate::router::Router;
}
pub use waygate_upstream::AdminState;
