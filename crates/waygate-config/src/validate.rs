//! Validation: raw structs → [`Config`], collecting every error (not just the
//! first) and the warnings. Cross-references are resolved here, with a "did
//! you mean" hint for misspelled names.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use crate::diag::{Diagnostic, Severity};
use crate::model::*;
use crate::raw::*;
use crate::Loaded;

struct Ctx<'a> {
    src: &'a str,
    file: &'a str,
    diags: Vec<Diagnostic>,
}

/// Validates only an `[admin]` table (for commands that talk to a running
/// gateway and must work even when the rest of the file is invalid).
pub(crate) fn admin_only(
    raw: Option<RawAdmin>,
    src: &str,
    file: &str,
) -> Result<Option<AdminConfig>, Vec<Diagnostic>> {
    let mut cx = Ctx {
        src,
        file,
        diags: Vec::new(),
    };
    let admin = raw.and_then(|a| cx.admin(a));
    if cx.diags.iter().any(Diagnostic::is_error) {
        return Err(cx.diags);
    }
    Ok(admin)
}

pub(crate) fn validate(
    raw: RawConfig,
    src: &str,
    file: &str,
    base: &Path,
) -> Result<Loaded, Vec<Diagnostic>> {
    let mut cx = Ctx {
        src,
        file,
        diags: Vec::new(),
    };

    let admin = raw.admin.and_then(|a| cx.admin(a));
    let access_log_format = match raw.access_log.as_ref().and_then(|a| a.format.as_ref()) {
        None => AccessLogFormat::Json,
        Some(f) if f.get_ref() == "json" => AccessLogFormat::Json,
        Some(f) if f.get_ref() == "combined" => AccessLogFormat::Combined,
        Some(f) => {
            cx.error(
                f.span(),
                format!("access log format `{}` is not known", f.get_ref()),
                Some("expected \"json\" or \"combined\"".into()),
            );
            AccessLogFormat::Json
        }
    };
    let access_log = raw
        .access_log
        .map_or(AccessLogTarget::Stdout, |a| access_log(a, base));
    let gateway = cx.gateway(raw.gateway, base);
    let listeners = cx.listeners(&raw.listener, base);
    let upstreams = cx.upstreams(&raw.upstream, base);
    let rate_limits = cx.rate_limits(&raw.rate_limit);
    let routes = cx.routes(&raw.route, &listeners, &upstreams, &rate_limits);
    cx.unused_upstreams(&raw.upstream, &routes);
    let error_pages = cx.error_pages(&raw.error_pages, base);

    if cx.diags.iter().any(Diagnostic::is_error) {
        cx.diags
            .sort_by_key(|d| (d.severity != Severity::Error, d.line, d.column));
        return Err(cx.diags);
    }
    let config = Config {
        admin,
        access_log,
        access_log_format,
        gateway,
        listeners,
        routes,
        upstreams,
        error_pages,
        rate_limits,
    };
    Ok(Loaded {
        config,
        warnings: cx.diags,
    })
}

fn access_log(raw: RawAccessLog, base: &Path) -> AccessLogTarget {
    match raw.target.get_ref().as_str() {
        "stdout" => AccessLogTarget::Stdout,
        "off" => AccessLogTarget::Off,
        path => AccessLogTarget::File(base.join(path)),
    }
}

// === impl Ctx ===

impl Ctx<'_> {
    fn push(&mut self, sev: Severity, span: Range<usize>, msg: String, hint: Option<String>) {
        let d = Diagnostic::at(sev, self.file, self.src, span, msg, hint);
        self.diags.push(d);
    }

    fn error(&mut self, span: Range<usize>, msg: String, hint: Option<String>) {
        self.push(Severity::Error, span, msg, hint);
    }

    fn warn(&mut self, span: Range<usize>, msg: String, hint: Option<String>) {
        self.push(Severity::Warning, span, msg, hint);
    }

    fn at_least_one(&mut self, v: &Option<Spanned<u32>>, key: &str) -> Option<u32> {
        match v {
            Some(n) if *n.get_ref() == 0 => {
                self.error(
                    n.span(),
                    format!("{key} must be at least 1"),
                    Some("remove the key to use its default (for limits: no limit)".into()),
                );
                None
            }
            Some(n) => Some(*n.get_ref()),
            None => None,
        }
    }

    /// A count or size that must lie in `range`; `unit` (e.g. `" bytes"`)
    /// follows the range in the error. Out of range: an error, and the
    /// default so validation goes on.
    fn in_range(
        &mut self,
        v: &Option<Spanned<usize>>,
        key: &str,
        range: std::ops::RangeInclusive<usize>,
        unit: &str,
        default: usize,
    ) -> usize {
        match v {
            None => default,
            Some(n) if range.contains(n.get_ref()) => *n.get_ref(),
            Some(n) => {
                self.error(
                    n.span(),
                    format!(
                        "{key} = {} is out of range; expected {} to {}{unit}",
                        n.get_ref(),
                        range.start(),
                        range.end()
                    ),
                    None,
                );
                default
            }
        }
    }

    fn socket_addr(&mut self, what: &str, s: &Spanned<String>) -> Option<SocketAddr> {
        match s.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    s.span(),
                    format!(
                        "{what} `{}` is not a socket address; expected `ip:port`, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"",
                        s.get_ref()
                    ),
                    None,
                );
                None
            }
        }
    }

    fn admin(&mut self, raw: RawAdmin) -> Option<AdminConfig> {
        let listen = self.socket_addr("admin listen address", &raw.listen)?;
        if !listen.ip().is_loopback() && raw.token.as_deref().unwrap_or("").is_empty() {
            self.error(
                raw.listen.span(),
                format!("admin listener `{listen}` is not on loopback but has no `token`"),
                Some("bind it to 127.0.0.1 or set `token` in [admin]: the admin API must never be open".into()),
            );
            return None;
        }
        let error_ring = self.in_range(
            &raw.error_ring,
            "error_ring",
            1..=1_000_000,
            "",
            DEFAULT_ERROR_RING,
        );
        Some(AdminConfig {
            listen,
            token: raw.token,
            error_ring,
        })
    }

    fn gateway(&mut self, raw: Option<RawGateway>, base: &Path) -> GatewayConfig {
        let mut cfg = GatewayConfig {
            name: DEFAULT_NAME.to_owned(),
            trusted_proxies: Vec::new(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            expose_upstream_addresses: false,
            max_connections: DEFAULT_GLOBAL_MAX_CONNECTIONS,
            watch: false,
            watch_tls: true,
            upgrade_socket: None,
        };
        let Some(raw) = raw else { return cfg };
        cfg.watch = raw.watch.unwrap_or(false);
        cfg.watch_tls = raw.watch_tls.unwrap_or(true);
        cfg.upgrade_socket = raw.upgrade_socket.map(|p| base.join(p));
        if let Some(n) = self.at_least_one(&raw.max_connections, "max_connections") {
            cfg.max_connections = n;
        }
        for p in &raw.trusted_proxies {
            let s = p.get_ref();
            let net = s
                .parse::<IpNet>()
                .ok()
                .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from));
            match net {
                Some(net) => cfg.trusted_proxies.push(net.trunc()),
                None => self.error(
                    p.span(),
                    format!("trusted proxy `{s}` is not an IP address or CIDR block"),
                    Some("write e.g. \"10.0.0.0/8\", \"192.168.1.7\" or \"::1\"".into()),
                ),
            }
        }
        if let Some(d) = raw.drain_timeout {
            cfg.drain_timeout = d.0;
        }
        if let Some(e) = raw.expose_upstream_addresses {
            cfg.expose_upstream_addresses = e;
        }
        if let Some(name) = raw.name {
            let ok = !name.get_ref().is_empty()
                && name
                    .get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            if ok {
                cfg.name = name.get_ref().clone();
            } else {
                self.error(
                    name.span(),
                    format!("gateway name `{}` must be a token", name.get_ref()),
                    Some("use letters, digits, '-', '.' and '_' only (it goes into Via and Proxy-Status)".into()),
                );
            }
        }
        cfg
    }

    fn listeners(&mut self, raw: &[Spanned<RawListener>], base: &Path) -> Vec<ListenerConfig> {
        if raw.is_empty() {
            self.error(
                0..0,
                "no listener is defined; expected at least one [[listener]] table".into(),
                Some(
                    "add:\n  [[listener]]\n  name = \"public\"\n  listen = \"127.0.0.1:8080\""
                        .into(),
                ),
            );
        }
        let mut names = HashMap::new();
        let mut addrs = HashMap::new();
        let mut out = Vec::new();
        for (i, l) in raw.iter().enumerate() {
            let l = l.get_ref();
            let name = l.name.get_ref();
            if let Some(prev) = names.insert(name.clone(), i + 1) {
                self.error(
                    l.name.span(),
                    format!("listener name `{name}` is already used by listener {prev}"),
                    Some("give each listener a unique name".into()),
                );
            }
            let Some(listen) = self.socket_addr("listen address", &l.listen) else {
                continue;
            };
            // Port 0 asks the OS for a free port: never a clash.
            let clash = (listen.port() != 0)
                .then(|| addrs.insert(listen, i + 1))
                .flatten();
            if let Some(prev) = clash {
                self.error(
                    l.listen.span(),
                    format!("listen address `{listen}` is already used by listener {prev}"),
                    None,
                );
            }
            out.push(ListenerConfig {
                name: name.clone(),
                listen,
                client_header_timeout: l
                    .client_header_timeout
                    .map_or(DEFAULT_CLIENT_HEADER_TIMEOUT, |d| d.0),
                keepalive_timeout: l
                    .keepalive_timeout
                    .map_or(DEFAULT_KEEPALIVE_TIMEOUT, |d| d.0),
                max_header_size: self.in_range(
                    &l.max_header_size,
                    "max_header_size",
                    1024..=1 << 20,
                    " bytes",
                    DEFAULT_MAX_HEADER_SIZE,
                ),
                max_headers: self.in_range(
                    &l.max_headers,
                    "max_headers",
                    1..=1000,
                    "",
                    DEFAULT_MAX_HEADERS,
                ),
                max_request_body_size: l.max_request_body_size.as_ref().map(|n| *n.get_ref()),
                max_connections: self
                    .at_least_one(&l.max_connections, "max_connections")
                    .unwrap_or(DEFAULT_MAX_CONNECTIONS),
                max_connections_per_ip: self
                    .at_least_one(&l.max_connections_per_ip, "max_connections_per_ip"),
                max_requests_per_connection: self
                    .at_least_one(
                        &l.max_requests_per_connection,
                        "max_requests_per_connection",
                    )
                    .unwrap_or(DEFAULT_MAX_REQUESTS_PER_CONNECTION),
                tls: self.tls(&l.tls, base),
                redirect_https: self.redirect_https(l),
                http2: l.http2.unwrap_or(true),
                http2_stream_window: self.window(
                    &l.http2_stream_window,
                    "http2_stream_window",
                    1 << 20,
                ),
                http2_connection_window: self.window(
                    &l.http2_connection_window,
                    "http2_connection_window",
                    2 << 20,
                ),
                max_concurrent_streams: self
                    .at_least_one(&l.max_concurrent_streams, "max_concurrent_streams")
                    .unwrap_or(100),
                status_page: match &l.status_page {
                    None => None,
                    Some(p)
                        if p.get_ref().starts_with('/') && !p.get_ref().contains(['?', '#']) =>
                    {
                        Some(p.get_ref().clone())
                    }
                    Some(p) => {
                        self.error(
                            p.span(),
                            format!(
                                "status_page `{}` must be a path starting with '/'",
                                p.get_ref()
                            ),
                            Some("e.g. status_page = \"/_status\"".into()),
                        );
                        None
                    }
                },
            });
        }
        out
    }

    /// An HTTP/2 flow-control window: 65535 (the protocol's initial value)
    /// to 2^31 - 1 (its maximum, RFC 9113 §6.9.1).
    fn window(&mut self, raw: &Option<Spanned<u32>>, key: &str, default: u32) -> u32 {
        match raw {
            None => default,
            Some(v) if (65_535..=i32::MAX as u32).contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                self.error(
                    v.span(),
                    format!(
                        "{key} = {} is out of range; expected 65535 to 2147483647 bytes",
                        v.get_ref()
                    ),
                    None,
                );
                default
            }
        }
    }

    /// The HTTPS port of a redirecting listener.
    fn redirect_https(&mut self, l: &RawListener) -> Option<u16> {
        let on = l.redirect_https.as_ref().is_some_and(|r| *r.get_ref());
        match (&l.redirect_https, &l.https_port) {
            (Some(r), _) if on && !l.tls.is_empty() => {
                self.error(
                    r.span(),
                    "redirect_https on a listener that itself speaks TLS would redirect to itself forever".into(),
                    Some("set redirect_https on the plain-HTTP listener (port 80)".into()),
                );
                None
            }
            (_, Some(p)) if !on => {
                self.error(
                    p.span(),
                    "https_port is set but redirect_https is not".into(),
                    Some("add redirect_https = true".into()),
                );
                None
            }
            (_, Some(p)) if *p.get_ref() == 0 => {
                self.error(p.span(), "https_port must not be 0".into(), None);
                None
            }
            _ if on => Some(l.https_port.as_ref().map_or(443, |p| *p.get_ref())),
            _ => None,
        }
    }

    fn upstreams(
        &mut self,
        raw: &std::collections::BTreeMap<Spanned<String>, Spanned<RawUpstream>>,
        base: &Path,
    ) -> Vec<UpstreamConfig> {
        let mut out = Vec::new();
        for (name, u) in raw {
            let u = u.get_ref();
            let servers = self.servers(name, u);
            let connect_timeout = self.timeout(
                &u.connect_timeout,
                "connect_timeout",
                DEFAULT_CONNECT_TIMEOUT,
            );
            let response_timeout = self.timeout(
                &u.response_timeout,
                "response_timeout",
                DEFAULT_RESPONSE_TIMEOUT,
            );
            let body_idle_timeout = self.timeout(
                &u.body_idle_timeout,
                "body_idle_timeout",
                DEFAULT_BODY_IDLE_TIMEOUT,
            );
            self.timeouts_make_sense(name, u, connect_timeout, response_timeout);
            let max_response_header_size = self.in_range(
                &u.max_response_header_size,
                "max_response_header_size",
                8192..=1 << 24,
                " bytes",
                DEFAULT_MAX_RESPONSE_HEADER_SIZE,
            );
            let max_response_headers = self.in_range(
                &u.max_response_headers,
                "max_response_headers",
                1..=1000,
                "",
                DEFAULT_MAX_RESPONSE_HEADERS,
            );
            let balance = self.balance(u);
            let health_check = u.health_check.as_ref().and_then(|h| self.health_check(h));
            let outlier = self.outlier(u.outlier_detection.as_ref());
            let retry = self.retry(u.retry.as_ref());
            let limits = self.limits(u.limits.as_ref());
            let adaptive = u
                .adaptive_concurrency
                .as_ref()
                .and_then(|a| self.adaptive(a));
            let (protocol, tls) = self.upstream_tls(u, base);
            let tunnel_idle_timeout = self.timeout(
                &u.tunnel_idle_timeout,
                "tunnel_idle_timeout",
                DEFAULT_TUNNEL_IDLE_TIMEOUT,
            );
            out.push(UpstreamConfig {
                name: name.get_ref().clone(),
                servers,
                balance,
                slow_start: u.slow_start.map(|d| d.0).filter(|d| !d.is_zero()),
                dns_refresh: u
                    .dns_refresh
                    .map(|d| d.0)
                    .filter(|d| !d.is_zero())
                    .unwrap_or(DEFAULT_DNS_REFRESH),
                health_check,
                outlier,
                retry,
                limits,
                adaptive,
                connect_timeout,
                response_timeout,
                body_idle_timeout,
                pool_idle_timeout: u
                    .pool_idle_timeout
                    .map_or(DEFAULT_POOL_IDLE_TIMEOUT, |d| d.0),
                pool_max_idle: u.pool_max_idle.unwrap_or(DEFAULT_POOL_MAX_IDLE),
                max_response_header_size,
                max_response_headers,
                head_hold: u.head_hold.map_or(DEFAULT_HEAD_HOLD, |d| d.0),
                protocol,
                tls,
                tunnel_idle_timeout,
            });
        }
        out
    }

    /// Warns about routes no request can reach. The most specific route
    /// wins (host, then the longest prefix, then file order), so a broader
    /// route never hides a narrower one wherever it is; a route is hidden
    /// only by an earlier one with the same host and path_prefix on every
    /// listener it serves.
    fn unreachable_routes(
        &mut self,
        routes: &[RouteConfig],
        placed: &[(usize, Range<usize>)],
        listeners: &[ListenerConfig],
    ) {
        for (i, r) in routes.iter().enumerate() {
            let hider = routes[..i].iter().position(|e| {
                e.host == r.host
                    && e.path_prefix == r.path_prefix
                    && (e.listener.is_none() || e.listener == r.listener)
            });
            if let Some(j) = hider {
                let (n, span) = placed[i].clone();
                let (m, _) = placed[j];
                let on = r.listener.map_or_else(
                    || "any listener".to_owned(),
                    |l| format!("listener `{}`", listeners[l].name),
                );
                self.warn(
                    span,
                    format!(
                        "route {n} (`{}`) is unreachable: route {m} (`{}`) has the same host and path_prefix `{}` on {on}, and comes first",
                        r.name, routes[j].name, r.path_prefix
                    ),
                    Some("remove one of them, or give them different hosts, path prefixes or listeners".into()),
                );
            }
        }
    }

    /// Warnings for timeouts that are valid but almost surely a mistake.
    fn timeouts_make_sense(
        &mut self,
        name: &Spanned<String>,
        u: &RawUpstream,
        connect: std::time::Duration,
        response: std::time::Duration,
    ) {
        let name = name.get_ref();
        if let (Some(r), true) = (&u.response_timeout, response < connect) {
            self.warn(
                r.span(),
                format!("response_timeout {response:?} of upstream `{name}` is shorter than its connect_timeout {connect:?}"),
                Some("the response timeout counts from the request sent to the response head: usually seconds to minutes, while a connect takes milliseconds. Were the two swapped?".into()),
            );
        }
        if let (Some(c), true) = (
            &u.connect_timeout,
            connect > std::time::Duration::from_secs(60),
        ) {
            self.warn(
                c.span(),
                format!("connect_timeout {connect:?} of upstream `{name}` is over a minute"),
                Some("a reachable server accepts in milliseconds; a long connect timeout only makes requests to a dead server hang. Did you mean seconds?".into()),
            );
        }
        for (key, d) in [
            ("response_timeout", &u.response_timeout),
            ("body_idle_timeout", &u.body_idle_timeout),
        ] {
            if let Some(d) = d
                .as_ref()
                .filter(|d| d.get_ref().0 > std::time::Duration::from_secs(86_400))
            {
                self.warn(
                    d.span(),
                    format!("{key} {:?} of upstream `{name}` is over a day", d.get_ref().0),
                    Some("a client or an upstream that stalls holds a connection that long; did you mean a smaller unit?".into()),
                );
            }
        }
    }

    fn timeout(
        &mut self,
        raw: &Option<Spanned<crate::Duration>>,
        key: &str,
        default: std::time::Duration,
    ) -> std::time::Duration {
        match raw {
            None => default,
            Some(d) if d.get_ref().0.is_zero() => {
                self.error(
                    d.span(),
                    format!("{key} must be greater than zero"),
                    Some(format!("remove it to use the default ({default:?})")),
                );
                default
            }
            Some(d) => d.get_ref().0,
        }
    }

    fn routes(
        &mut self,
        raw: &[Spanned<RawRoute>],
        listeners: &[ListenerConfig],
        upstreams: &[UpstreamConfig],
        rate_limits: &[RateLimitConfig],
    ) -> Vec<RouteConfig> {
        let mut out = Vec::new();
        // (position, span) of each route in `out`.
        let mut placed: Vec<(usize, Range<usize>)> = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, spanned) in raw.iter().enumerate() {
            let n = i + 1;
            let r = spanned.get_ref();
            if let Some(name) = &r.name {
                if let Some(prev) = names.insert(name.get_ref().clone(), n) {
                    self.error(
                        name.span(),
                        format!(
                            "route name `{}` is already used by route {prev}",
                            name.get_ref()
                        ),
                        Some("route names label logs and metrics: give each route its own".into()),
                    );
                }
            }
            let upstream = self.resolve(
                &r.upstream,
                "upstream",
                n,
                upstreams.iter().map(|u| u.name.as_str()),
            );
            let listener = match &r.listener {
                None => Some(None),
                Some(l) => self
                    .resolve(l, "listener", n, listeners.iter().map(|l| l.name.as_str()))
                    .map(Some),
            };
            let host = match &r.host {
                None => Some(HostMatch::Any),
                Some(h) => match parse_host_match(h.get_ref()) {
                    Ok(m) => Some(m),
                    Err(why) => {
                        self.error(h.span(), format!("host `{}` of route {n} {why}", h.get_ref()), Some("write an exact host (\"api.example.com\") or a wildcard (\"*.example.com\"), without port".into()));
                        None
                    }
                },
            };
            let path_prefix = match &r.path_prefix {
                None => Some("/".to_owned()),
                Some(p) if p.get_ref().starts_with('/') && !p.get_ref().contains(['?', '#']) => {
                    Some(p.get_ref().clone())
                }
                Some(p) => {
                    self.error(
                        p.span(),
                        format!("path_prefix `{}` of route {n} must start with '/' and hold no '?' or '#'", p.get_ref()),
                        None,
                    );
                    None
                }
            };
            let rate_limit = match &r.rate_limit {
                None => Some(None),
                Some(p) => self
                    .resolve(
                        p,
                        "rate-limit policy",
                        n,
                        rate_limits.iter().map(|p| p.name.as_str()),
                    )
                    .map(Some),
            };
            let priority = match r.priority.as_ref().map(|p| (p, p.get_ref().as_str())) {
                None | Some((_, "normal")) => Priority::Normal,
                Some((_, "high")) => Priority::High,
                Some((_, "low")) => Priority::Low,
                Some((p, other)) => {
                    self.error(
                        p.span(),
                        format!("priority `{other}` of route {n} is not a priority"),
                        Some("use \"high\", \"normal\" or \"low\"".into()),
                    );
                    Priority::Normal
                }
            };
            let name = r
                .name
                .as_ref()
                .map_or_else(|| format!("route{n}"), |s| s.get_ref().clone());
            if let (
                Some(upstream),
                Some(listener),
                Some(host),
                Some(path_prefix),
                Some(rate_limit),
            ) = (upstream, listener, host, path_prefix, rate_limit)
            {
                out.push(RouteConfig {
                    name,
                    host,
                    path_prefix,
                    listener,
                    upstream,
                    rate_limit,
                    priority,
                });
                placed.push((n, spanned.span()));
            }
        }
        self.unreachable_routes(&out, &placed, listeners);
        if raw.is_empty() {
            self.warn(
                0..0,
                "no route is defined: every request gets 404 no_route".into(),
                Some("add a [[route]] with `path_prefix` and `upstream`".into()),
            );
        }
        out
    }

    /// Resolves a name reference to an index, or reports it with a hint.
    fn resolve<'n>(
        &mut self,
        name: &Spanned<String>,
        kind: &str,
        route: usize,
        names: impl Iterator<Item = &'n str> + Clone,
    ) -> Option<usize> {
        let wanted = name.get_ref();
        if let Some(i) = names.clone().position(|n| n == wanted) {
            return Some(i);
        }
        let best = names
            .clone()
            .map(|n| (strsim::levenshtein(n, wanted), n))
            .filter(|(d, n)| *d <= 2.max(n.len() / 3))
            .min_by_key(|(d, _)| *d);
        let hint = match best {
            Some((_, n)) => Some(format!("did you mean `{n}`?")),
            None => {
                let all: Vec<_> = names.map(|n| format!("`{n}`")).collect();
                if all.is_empty() {
                    Some(format!("no {kind} is defined"))
                } else {
                    Some(format!("defined {kind}s: {}", all.join(", ")))
                }
            }
        };
        let msg = match &hint {
            Some(h) if h.starts_with("did you mean") => {
                format!("{kind} `{wanted}` referenced by route {route} is not defined; {h}")
            }
            _ => format!("{kind} `{wanted}` referenced by route {route} is not defined"),
        };
        let hint = hint.filter(|h| !h.starts_with("did you mean"));
        self.error(name.span(), msg, hint);
        None
    }

    fn unused_upstreams(
        &mut self,
        raw: &std::collections::BTreeMap<Spanned<String>, Spanned<RawUpstream>>,
        routes: &[RouteConfig],
    ) {
        for (i, (name, _)) in raw.iter().enumerate() {
            if !routes.iter().any(|r| r.upstream == i) {
                self.warn(
                    name.span(),
                    format!("upstream `{}` is not used by any route", name.get_ref()),
                    None,
                );
            }
        }
    }

    fn error_pages(
        &mut self,
        raw: &std::collections::BTreeMap<Spanned<String>, Spanned<String>>,
        base: &Path,
    ) -> HashMap<u16, ErrorPage> {
        let mut out = HashMap::new();
        for (status, path) in raw {
            let code = match status.get_ref().parse::<u16>() {
                Ok(c) if (400..=599).contains(&c) => c,
                _ => {
                    self.error(
                        status.span(),
                        format!(
                            "error page key `{}` is not a status from 400 to 599",
                            status.get_ref()
                        ),
                        Some("write e.g. `502 = \"pages/502.html\"`".into()),
                    );
                    continue;
                }
            };
            let full = base.join(path.get_ref());
            match std::fs::read_to_string(&full) {
                Ok(template) => {
                    out.insert(
                        code,
                        ErrorPage {
                            path: full,
                            template,
                        },
                    );
                }
                Err(e) => self.error(
                    path.span(),
                    format!("cannot read error page template `{}`: {e}", full.display()),
                    Some("relative paths are taken from the config file's directory".into()),
                ),
            }
        }
        out
    }
}

/// Parses `host:port weight=N` (the weight is optional).
pub(crate) fn parse_server_entry(s: &str) -> Result<ServerConfig, String> {
    let mut parts = s.split_whitespace();
    let addr = parse_server(parts.next().ok_or_else(|| "is empty".to_owned())?)?;
    let mut weight = 1;
    for opt in parts {
        match opt.split_once('=') {
            Some(("weight", v)) => {
                weight = v
                    .parse::<u32>()
                    .ok()
                    .filter(|w| (1..=1000).contains(w))
                    .ok_or_else(|| format!("has an invalid weight `{v}`; expected 1 to 1000"))?;
            }
            _ => {
                return Err(format!(
                    "has an unknown option `{opt}`; expected `weight=N`"
                ))
            }
        }
    }
    Ok(ServerConfig { addr, weight })
}

/// Parses `host:port`, `ip:port` or `[ipv6]:port`.
pub(crate) fn parse_server(s: &str) -> Result<ServerAddr, String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(ServerAddr {
            host: sa.ip().to_string(),
            port: sa.port(),
        });
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(|| "has no port".to_owned())?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("has an invalid port `{port}`"))?;
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid_host {
        return Err(format!("has an invalid host `{host}`"));
    }
    Ok(ServerAddr {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// Parses a route's `host`: exact or `*.suffix`.
pub(crate) fn parse_host_match(s: &str) -> Result<HostMatch, String> {
    let lower = s.to_ascii_lowercase();
    let (wild, rest) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let valid = !rest.is_empty()
        && rest.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err("is not a valid host name".into());
    }
    Ok(if wild {
        HostMatch::Suffix(format!(".{rest}"))
    } else {
        HostMatch::Exact(rest.to_owned())
    })
}

mod tls;
mod upstream;

#[cfg(test)]
mod tests;
