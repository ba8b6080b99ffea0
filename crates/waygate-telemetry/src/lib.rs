//! Telemetry: the access-log record written once per request, and the
//! writer that puts it on stdout or in a file without blocking the request
//! path. Metrics and the error ring for `waygate why` land here later.

mod access_log;
mod error_ring;
mod time;

pub use access_log::{AccessLog, AccessRecord, AttemptOutcome, AttemptRecord, LogFormat};
pub use error_ring::{ErrorRing, DEFAULT_ERROR_RING};
pub use time::rfc3339_millis;
