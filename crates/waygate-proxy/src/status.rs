//! The data behind the status page: live server state, a 15-minute history
//! per upstream (request rate, error rate, p50/p99 time to first byte,
//! sampled every 10 s from the metrics' atomics), and the recent gateway
//! errors grouped by cause with what each cause means and what to check.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use waygate_core::Cause;

use crate::control::UpstreamView;
use crate::metrics::{quantile_ms, UpstreamTotals};
use crate::runtime::{Gateway, Runtime};

/// Time between history samples.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// 15 minutes of samples.
const POINTS: usize = 90;

/// The sampled history of every upstream.
#[derive(Debug, Default)]
pub(crate) struct History {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    last: Option<(tokio::time::Instant, Vec<UpstreamTotals>)>,
    points: VecDeque<Point>,
}

/// One sample: per upstream, over the last interval.
#[derive(Debug, Clone)]
pub struct Point {
    /// Seconds since the Unix epoch.
    pub time: u64,
    pub upstreams: Vec<UpstreamPoint>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct UpstreamPoint {
    pub rps: f64,
    /// Share of 5xx answers (0..1), gateway or upstream.
    pub error_rate: f64,
    /// Upper bound of the bucket holding the median time to first byte.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Recent gateway errors of one cause.
#[derive(Debug, Clone)]
pub struct CauseGroup {
    pub cause: Cause,
    pub count: usize,
    pub last_request_id: String,
    pub last_time: String,
    pub upstreams: Vec<String>,
}

/// Everything the status page shows.
#[derive(Debug, Clone)]
pub struct StatusView {
    pub upstreams: Vec<UpstreamView>,
    pub history: Vec<Point>,
    pub errors: Vec<CauseGroup>,
    /// Gateway errors per upstream name over the last 5 minutes.
    pub recent_errors: std::collections::HashMap<String, usize>,
    pub sample_every: Duration,
    /// Config reloads so far and the last outcome.
    pub reloads: crate::reload::ReloadStats,
}

// === impl History ===

impl History {
    /// Takes one sample from the metrics.
    pub(crate) fn sample(&self, rt: &Runtime) {
        let now = tokio::time::Instant::now();
        let totals: Vec<UpstreamTotals> = (0..rt.upstreams.len())
            .map(|u| rt.metrics.upstream_totals(u))
            .collect();
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some((at, last)) = &inner.last {
            let secs = now.duration_since(*at).as_secs_f64().max(0.001);
            let upstreams = totals
                .iter()
                .zip(last)
                .map(|(t, l)| {
                    let requests = t.requests.saturating_sub(l.requests);
                    let errors = t.errors.saturating_sub(l.errors);
                    let fb: Vec<u64> = t
                        .first_byte
                        .iter()
                        .zip(l.first_byte.iter().chain(std::iter::repeat(&0)))
                        .map(|(a, b)| a.saturating_sub(*b))
                        .collect();
                    UpstreamPoint {
                        rps: requests as f64 / secs,
                        error_rate: if requests == 0 {
                            0.0
                        } else {
                            errors as f64 / requests as f64
                        },
                        p50_ms: quantile_ms(&fb, 0.5),
                        p99_ms: quantile_ms(&fb, 0.99),
                    }
                })
                .collect();
            let time = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if inner.points.len() == POINTS {
                inner.points.pop_front();
            }
            inner.points.push_back(Point { time, upstreams });
        }
        inner.last = Some((now, totals));
    }

    fn points(&self) -> Vec<Point> {
        self.inner
            .lock()
            .map(|i| i.points.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Samples the history every `sample_every` ([`SAMPLE_EVERY`] unless set
/// for tests) until aborted, on whatever generation is current.
pub(crate) async fn run_sampler(shared: std::sync::Arc<crate::runtime::Shared>) {
    let every = shared.current.load().sample_every;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let rt = shared.current.load_full();
        rt.history.sample(&rt);
        // Keep the public pages' "since" accurate without page views.
        for u in 0..rt.upstreams.len() {
            crate::public_status::service_state(&rt, u);
        }
    }
}

// === impl Gateway ===

impl Gateway {
    /// The status page's data.
    pub fn status(&self) -> StatusView {
        let mut groups: Vec<CauseGroup> = Vec::new();
        let mut recent_errors = std::collections::HashMap::new();
        let five_min_ago = SystemTime::now() - Duration::from_secs(300);
        for rec in self.rt().errors.recent(usize::MAX) {
            if rec.time >= five_min_ago && rec.side == "gateway" {
                if let Some(u) = &rec.upstream {
                    *recent_errors.entry(u.to_string()).or_insert(0) += 1;
                }
            }
            let Some(cause) = rec.cause.and_then(Cause::from_name) else {
                continue;
            };
            let upstream = rec.upstream.as_deref().unwrap_or("-").to_owned();
            match groups.iter_mut().find(|g| g.cause == cause) {
                Some(g) => {
                    g.count += 1;
                    if !g.upstreams.contains(&upstream) {
                        g.upstreams.push(upstream);
                    }
                }
                None => groups.push(CauseGroup {
                    cause,
                    count: 1,
                    last_request_id: rec.request_id.to_string(),
                    last_time: waygate_telemetry::rfc3339_millis(rec.time),
                    upstreams: vec![upstream],
                }),
            }
        }
        groups.sort_by_key(|g| std::cmp::Reverse(g.count));
        StatusView {
            upstreams: self.upstreams(),
            history: self.rt().history.points(),
            errors: groups,
            recent_errors,
            sample_every: self.rt().sample_every,
            reloads: self.reloads(),
        }
    }
}
