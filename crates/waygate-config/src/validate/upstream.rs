//! Validation of an upstream's servers, balancing, health checks, outlier
//! detection, retries and limits.

use std::collections::HashSet;

use toml::Spanned;

use super::{parse_server_entry, Ctx};
use crate::model::*;
use crate::raw::*;

// === impl Ctx ===

impl Ctx<'_> {
    pub(super) fn servers(&mut self, name: &Spanned<String>, u: &RawUpstream) -> Vec<ServerConfig> {
        let mut servers = Vec::new();
        let mut seen = HashSet::new();
        for s in u.servers.get_ref() {
            match parse_server_entry(s.get_ref()) {
                Ok(server) => {
                    if !seen.insert(server.addr.clone()) {
                        self.error(
                            s.span(),
                            format!("server `{}` is listed twice in upstream `{}`", server.addr, name.get_ref()),
                            Some("give it a higher `weight=N` instead of listing it twice".into()),
                        );
                    }
                    servers.push(server);
                }
                Err(why) => self.error(
                    s.span(),
                    format!("server `{}` in upstream `{}` {why}", s.get_ref(), name.get_ref()),
                    Some("write `host:port` with an optional weight, e.g. \"127.0.0.1:9001\", \"app.internal:80 weight=3\" or \"[::1]:9001\"".into()),
                ),
            }
        }
        if u.servers.get_ref().is_empty() {
            self.warn(
                u.servers.span(),
                format!(
                    "upstream `{}` has no servers: every request routed to it gets 503 no_server_available",
                    name.get_ref()
                ),
                None,
            );
        }
        servers
    }

    pub(super) fn balance(&mut self, u: &RawUpstream) -> Balance {
        let Some(b) = &u.balance else {
            if let Some(k) = &u.hash_key {
                self.error(
                    k.span(),
                    "hash_key is set but balance is not \"hash\"".into(),
                    Some("add balance = \"hash\"".into()),
                );
            }
            return Balance::Ewma;
        };
        let policy = match b.get_ref().as_str() {
            "round_robin" => Balance::RoundRobin,
            "least_request" => Balance::LeastRequest,
            "ewma" => Balance::Ewma,
            "random" => Balance::Random,
            "hash" => {
                let key = match &u.hash_key {
                    None => HashKey::ClientIp,
                    Some(k) => match parse_hash_key(k.get_ref()) {
                        Some(key) => key,
                        None => {
                            self.error(
                                k.span(),
                                format!("hash_key `{}` is not valid", k.get_ref()),
                                Some("expected \"client_ip\", \"path\", \"header:<name>\" or \"cookie:<name>\"".into()),
                            );
                            HashKey::ClientIp
                        }
                    },
                };
                let balance_factor = match &u.hash_balance_factor {
                    None => DEFAULT_HASH_BALANCE_FACTOR,
                    Some(f) if *f.get_ref() >= 1.0 && f.get_ref().is_finite() => *f.get_ref(),
                    Some(f) => {
                        self.error(
                            f.span(),
                            format!("hash_balance_factor = {} must be at least 1.0", f.get_ref()),
                            None,
                        );
                        DEFAULT_HASH_BALANCE_FACTOR
                    }
                };
                return Balance::Hash {
                    key,
                    balance_factor,
                };
            }
            other => {
                self.error(
                    b.span(),
                    format!("balance `{other}` is not a policy"),
                    Some("expected \"ewma\", \"round_robin\", \"least_request\", \"hash\" or \"random\"".into()),
                );
                Balance::Ewma
            }
        };
        if let Some(k) = &u.hash_key {
            self.error(
                k.span(),
                "hash_key is set but balance is not \"hash\"".into(),
                None,
            );
        }
        policy
    }

    pub(super) fn health_check(
        &mut self,
        raw: &Spanned<RawHealthCheck>,
    ) -> Option<HealthCheckConfig> {
        let h = raw.get_ref();
        let kind = match h.kind.as_ref().map(|k| k.get_ref().as_str()) {
            None | Some("http") => {
                let path = h
                    .path
                    .as_ref()
                    .map_or_else(|| "/".to_owned(), |p| p.get_ref().clone());
                if !path.starts_with('/') {
                    if let Some(p) = &h.path {
                        self.error(
                            p.span(),
                            format!("health check path `{path}` must start with '/'"),
                            None,
                        );
                    }
                }
                HealthCheckKind::Http {
                    path,
                    host: h.host.clone(),
                }
            }
            Some("tcp") => HealthCheckKind::Tcp,
            Some(other) => {
                let span = h.kind.as_ref().map_or(raw.span(), Spanned::span);
                self.error(
                    span,
                    format!("health check type `{other}` is not known"),
                    Some("expected \"http\" or \"tcp\"".into()),
                );
                return None;
            }
        };
        let interval = h
            .interval
            .as_ref()
            .map_or(DEFAULT_HEALTH_INTERVAL, |d| d.get_ref().0);
        let timeout = h
            .timeout
            .as_ref()
            .map_or(DEFAULT_HEALTH_TIMEOUT.min(interval), |d| d.get_ref().0);
        if interval.is_zero() || timeout.is_zero() {
            self.error(
                raw.span(),
                "health check interval and timeout must be greater than zero".into(),
                None,
            );
        }
        if let (Some(t), true) = (&h.timeout, timeout > interval) {
            self.error(
                t.span(),
                format!(
                    "health check timeout {timeout:?} is longer than its interval {interval:?}"
                ),
                Some("a check must end before the next one starts".into()),
            );
        }
        let mut expected = Vec::new();
        match &h.expected_statuses {
            None => expected.push((200, 399)),
            Some(list) => {
                for v in list {
                    match parse_status_range(v.get_ref()) {
                        Some(r) => expected.push(r),
                        None => self.error(
                            v.span(),
                            format!("expected status `{}` is not a status or range", v.get_ref()),
                            Some(
                                "write a number such as 200 or a range such as \"200-399\"".into(),
                            ),
                        ),
                    }
                }
            }
        }
        let mut count = |v: &Option<Spanned<u32>>, key: &str, default: u32| match v {
            None => default,
            Some(n) if (1..=100).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => {
                self.error(
                    n.span(),
                    format!("{key} = {} is out of range; expected 1 to 100", n.get_ref()),
                    None,
                );
                default
            }
        };
        let rise = count(&h.rise, "rise", DEFAULT_HEALTH_RISE);
        let fall = count(&h.fall, "fall", DEFAULT_HEALTH_FALL);
        Some(HealthCheckConfig {
            kind,
            interval,
            jitter: h.jitter.map_or(interval / 10, |d| d.0),
            timeout,
            expected_statuses: expected,
            rise,
            fall,
        })
    }

    pub(super) fn outlier(&mut self, raw: Option<&RawOutlier>) -> OutlierConfig {
        let mut cfg = OutlierConfig {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            base_ejection_time: DEFAULT_BASE_EJECTION,
            max_ejection_time: DEFAULT_MAX_EJECTION,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
        };
        let Some(o) = raw else { return cfg };
        if let Some(n) = o.consecutive_failures {
            cfg.consecutive_failures = n;
        }
        if let Some(d) = o.base_ejection_time {
            cfg.base_ejection_time = d.0;
        }
        if let Some(d) = o.max_ejection_time {
            cfg.max_ejection_time = d.0;
        }
        cfg.max_ejection_time = cfg.max_ejection_time.max(cfg.base_ejection_time);
        for (v, slot) in [
            (&o.max_ejection_percent, &mut cfg.max_ejection_percent),
            (&o.panic_threshold, &mut cfg.panic_threshold),
        ] {
            match v {
                None => {}
                Some(p) if *p.get_ref() <= 100 => *slot = *p.get_ref(),
                Some(p) => self.error(
                    p.span(),
                    format!("{} is not a percentage (0 to 100)", p.get_ref()),
                    None,
                ),
            }
        }
        cfg
    }

    pub(super) fn retry(&mut self, raw: Option<&RawRetry>) -> RetryConfig {
        let mut cfg = RetryConfig {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            per_try_timeout: None,
            on_statuses: vec![502, 503, 504],
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
            budget_percent: DEFAULT_BUDGET_PERCENT,
            budget_min_per_second: DEFAULT_BUDGET_MIN_PER_SECOND,
            max_replay_body: DEFAULT_MAX_REPLAY_BODY,
        };
        let Some(r) = raw else { return cfg };
        if let Some(n) = &r.max_attempts {
            if (1..=10).contains(n.get_ref()) {
                cfg.max_attempts = *n.get_ref();
            } else {
                self.error(
                    n.span(),
                    format!(
                        "max_attempts = {} is out of range; expected 1 to 10",
                        n.get_ref()
                    ),
                    None,
                );
            }
        }
        cfg.per_try_timeout = r.per_try_timeout.map(|d| d.0).filter(|d| !d.is_zero());
        if let Some(list) = &r.on_statuses {
            cfg.on_statuses.clear();
            for s in list {
                if (500..=599).contains(s.get_ref()) || *s.get_ref() == 429 {
                    cfg.on_statuses.push(*s.get_ref());
                } else {
                    self.error(
                        s.span(),
                        format!(
                            "retrying on status {} is not allowed; expected 429 or 500 to 599",
                            s.get_ref()
                        ),
                        None,
                    );
                }
            }
        }
        if let Some(d) = r.backoff_base {
            cfg.backoff_base = d.0;
        }
        if let Some(d) = r.backoff_max {
            cfg.backoff_max = d.0;
        }
        cfg.backoff_max = cfg.backoff_max.max(cfg.backoff_base);
        if let Some(p) = &r.budget_percent {
            if *p.get_ref() <= 1000 {
                cfg.budget_percent = *p.get_ref();
            } else {
                self.error(
                    p.span(),
                    format!(
                        "budget_percent = {} is out of range; expected 0 to 1000",
                        p.get_ref()
                    ),
                    None,
                );
            }
        }
        if let Some(n) = r.budget_min_per_second {
            cfg.budget_min_per_second = n;
        }
        if let Some(n) = r.max_replay_body {
            cfg.max_replay_body = n.min(16 << 20);
        }
        cfg
    }

    pub(super) fn limits(&mut self, raw: Option<&RawLimits>) -> LimitsConfig {
        let Some(l) = raw else {
            return LimitsConfig::default();
        };
        LimitsConfig {
            max_connections: self.at_least_one(&l.max_connections, "max_connections"),
            max_requests: self.at_least_one(&l.max_requests, "max_requests"),
            max_pending: l.max_pending.unwrap_or(DEFAULT_MAX_PENDING),
            max_in_flight_per_server: self
                .at_least_one(&l.max_in_flight_per_server, "max_in_flight_per_server"),
            max_queue: l.max_queue.unwrap_or(DEFAULT_MAX_PENDING),
            queue_timeout: l
                .queue_timeout
                .map_or(std::time::Duration::from_secs(1), |d| d.0),
        }
    }
}

impl Ctx<'_> {
    pub(super) fn adaptive(&mut self, raw: &Spanned<RawAdaptive>) -> Option<AdaptiveConfig> {
        let a = raw.get_ref();
        let min = self.at_least_one(&a.min_limit, "min_limit").unwrap_or(3);
        let max = self.at_least_one(&a.max_limit, "max_limit").unwrap_or(1000);
        let initial = self
            .at_least_one(&a.initial_limit, "initial_limit")
            .unwrap_or(20);
        let interval = self.timeout(
            &a.interval,
            "interval",
            std::time::Duration::from_millis(100),
        );
        let min_rtt_interval = self.timeout(
            &a.min_rtt_interval,
            "min_rtt_interval",
            std::time::Duration::from_secs(30),
        );
        if min > max {
            self.error(
                raw.span(),
                format!("adaptive_concurrency min_limit {min} is above max_limit {max}"),
                Some("min_limit must be at most max_limit".into()),
            );
            return None;
        }
        Some(AdaptiveConfig {
            min_limit: min,
            max_limit: max,
            initial_limit: initial.clamp(min, max),
            interval,
            min_rtt_interval,
        })
    }

    pub(super) fn rate_limits(
        &mut self,
        raw: &std::collections::BTreeMap<Spanned<String>, Spanned<RawRateLimit>>,
    ) -> Vec<RateLimitConfig> {
        let mut out = Vec::new();
        for (name, p) in raw {
            let p = p.get_ref();
            let mut key = Vec::new();
            let spec = p.key.as_ref().map_or("client_ip", |k| k.get_ref().as_str());
            for part in spec.split('+').map(str::trim) {
                let k = match part {
                    "client_ip" => Some(RateKey::ClientIp),
                    "route" => Some(RateKey::Route),
                    _ => part
                        .strip_prefix("header:")
                        .filter(|h| {
                            !h.is_empty()
                                && h.bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                        })
                        .map(|h| RateKey::Header(h.to_ascii_lowercase())),
                };
                match k {
                    Some(k) => key.push(k),
                    None => {
                        let span = p.key.as_ref().map_or(name.span(), Spanned::span);
                        self.error(
                            span,
                            format!(
                                "rate-limit key part `{part}` of policy `{}` is not valid",
                                name.get_ref()
                            ),
                            Some(
                                "expected client_ip, route or header:<name>, joined with '+'"
                                    .into(),
                            ),
                        );
                    }
                }
            }
            if *p.rate.get_ref() == 0 {
                self.error(p.rate.span(), "rate must be at least 1".into(), None);
                continue;
            }
            let burst = match &p.burst {
                None => *p.rate.get_ref(),
                Some(b) if *b.get_ref() == 0 => {
                    self.error(b.span(), "burst must be at least 1".into(), None);
                    continue;
                }
                Some(b) => *b.get_ref(),
            };
            let per = p.per.map_or(std::time::Duration::from_secs(1), |d| d.0);
            if per.is_zero() {
                self.error(p.rate.span(), "per must be greater than zero".into(), None);
                continue;
            }
            out.push(RateLimitConfig {
                name: name.get_ref().clone(),
                key,
                rate: *p.rate.get_ref(),
                per,
                burst,
            });
        }
        out
    }
}

fn parse_hash_key(s: &str) -> Option<HashKey> {
    match s {
        "client_ip" => Some(HashKey::ClientIp),
        "path" => Some(HashKey::Path),
        _ => {
            let (kind, name) = s.split_once(':')?;
            let name = name.trim();
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            match kind {
                "header" if token => Some(HashKey::Header(name.to_ascii_lowercase())),
                "cookie" if token => Some(HashKey::Cookie(name.to_owned())),
                _ => None,
            }
        }
    }
}

fn parse_status_range(v: &toml::Value) -> Option<(u16, u16)> {
    let valid = |n: u16| (100..=599).contains(&n);
    match v {
        toml::Value::Integer(n) => u16::try_from(*n).ok().filter(|n| valid(*n)).map(|n| (n, n)),
        toml::Value::String(s) => {
            let (lo, hi) = s.split_once('-').unwrap_or((s, s));
            let lo: u16 = lo.trim().parse().ok().filter(|n| valid(*n))?;
            let hi: u16 = hi.trim().parse().ok().filter(|n| valid(*n))?;
            (lo <= hi).then_some((lo, hi))
        }
        _ => None,
    }
}
