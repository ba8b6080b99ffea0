use std::path::Path;

use crate::{parse, Diagnostic, HostMatch};

const EXAMPLE: &str = include_str!("../../../../examples/waygate.toml");

fn errors(src: &str) -> Vec<Diagnostic> {
    match parse(src, "t.toml", Path::new(".")) {
        Ok(l) => panic!("expected errors, got a config: {:?}", l.config),
        Err(d) => d,
    }
}

fn one_error(src: &str) -> Diagnostic {
    let errs: Vec<_> = errors(src)
        .into_iter()
        .filter(Diagnostic::is_error)
        .collect();
    assert_eq!(errs.len(), 1, "{errs:#?}");
    errs.into_iter().next().expect("one error")
}

#[test]
fn the_core_example_is_valid_with_and_without_admin() {
    let loaded = parse(EXAMPLE, "example.toml", Path::new(".")).expect("example is valid");
    let c = &loaded.config;
    assert_eq!(c.admin.as_ref().map(|a| a.listen.port()), Some(9901));
    assert_eq!(c.listeners[0].listen.port(), 8080);
    assert_eq!(c.routes.len(), 2);
    let app = &c.upstreams[c.routes[1].upstream];
    assert_eq!(app.name, "app");
    assert_eq!(app.servers.len(), 2);
    assert_eq!(app.response_timeout, std::time::Duration::from_secs(5));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);

    let without_admin = EXAMPLE.replace("[admin]\nlisten = \"127.0.0.1:9901\"\n", "");
    assert!(without_admin.len() < EXAMPLE.len());
    let loaded = parse(&without_admin, "example.toml", Path::new(".")).expect("valid");
    assert!(loaded.config.admin.is_none());
}

#[test]
fn misspelled_upstream_names_line_column_and_suggestion() {
    let src = EXAMPLE.replace("upstream = \"app\"", "upstream = \"ap\"");
    let e = one_error(&src);
    assert_eq!(
        e.message,
        "upstream `ap` referenced by route 2 is not defined; did you mean `app`?"
    );
    assert_eq!((e.line, e.column), (14, 12));
    assert_eq!(
        e.to_string(),
        "t.toml:14:12: error: upstream `ap` referenced by route 2 is not defined; did you mean `app`?"
    );
}

#[test]
fn unknown_key_is_an_error_with_position() {
    let src = EXAMPLE.replace("connect_timeout = \"1s\"", "conect_timeout = \"1s\"");
    let e = one_error(&src);
    assert!(
        e.message.contains("unknown field `conect_timeout`"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("connect_timeout"),
        "expected keys listed: {}",
        e.message
    );
    assert_eq!((e.line, e.column), (18, 1));
}

#[test]
fn bad_duration_says_what_was_expected() {
    let src = EXAMPLE.replace(
        "response_timeout = \"5s\"",
        "response_timeout = \"5 seconds\"",
    );
    let e = one_error(&src);
    assert!(e.message.contains("expected a duration"), "{}", e.message);
    assert_eq!((e.line, e.column), (19, 20));
}

#[test]
fn toml_syntax_error_has_position() {
    let e = one_error("[[listener]]\nname = \"a\nlisten = \"x\"\n");
    assert_eq!(e.line, 2);
    assert!(e.column >= 8, "{e}");
}

#[test]
fn type_error_has_position() {
    let e = one_error(&EXAMPLE.replace(
        "servers = [\"127.0.0.1:9009\"]",
        "servers = \"127.0.0.1:9009\"",
    ));
    assert_eq!(e.line, 22);
    assert!(e.message.contains("expected a sequence"), "{}", e.message);
}

#[test]
fn bad_addresses_are_reported_all_at_once() {
    let src = EXAMPLE
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"localhost\"")
        .replace("\"127.0.0.1:9009\"", "\"127.0.0.1\"");
    let errs = errors(&src);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!(errs[0].line, 6);
    assert!(errs[0].message.contains("expected `ip:port`"));
    assert_eq!((errs[1].line, errs[1].column), (22, 12));
    assert!(errs[1].message.contains("has no port"));
}

#[test]
fn unknown_listener_and_duplicate_names() {
    let src = format!(
        "{EXAMPLE}\n[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8081\"\n\n[[route]]\nlistener = \"pubic\"\nupstream = \"app\"\n"
    );
    let errs = errors(&src);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0]
        .message
        .contains("listener name `public` is already used by listener 1"));
    assert_eq!(
        errs[1].message,
        "listener `pubic` referenced by route 3 is not defined; did you mean `public`?"
    );
}

#[test]
fn admin_off_loopback_needs_a_token() {
    let src = EXAMPLE.replace("127.0.0.1:9901", "0.0.0.0:9901");
    let e = one_error(&src);
    assert!(e.message.contains("has no `token`"), "{}", e.message);
    let with_token = src.replace(
        "listen = \"0.0.0.0:9901\"",
        "listen = \"0.0.0.0:9901\"\ntoken = \"s3cret\"",
    );
    assert!(parse(&with_token, "t.toml", Path::new(".")).is_ok());
}

#[test]
fn hosts_and_paths_are_checked() {
    let src = format!("{EXAMPLE}\n[[route]]\nhost = \"*.Example.com\"\npath_prefix = \"/api\"\nupstream = \"app\"\n");
    let c = parse(&src, "t.toml", Path::new(".")).expect("valid").config;
    assert_eq!(c.routes[2].host, HostMatch::Suffix(".example.com".into()));

    let e = one_error(&format!(
        "{EXAMPLE}\n[[route]]\nhost = \"exa mple.com\"\nupstream = \"app\"\n"
    ));
    assert!(e.message.contains("is not a valid host name"));
    let e = one_error(&format!(
        "{EXAMPLE}\n[[route]]\npath_prefix = \"api\"\nupstream = \"app\"\n"
    ));
    assert!(e.message.contains("must start with '/'"));
}

#[test]
fn empty_upstream_and_unused_upstream_are_warnings() {
    let src = EXAMPLE.replace("servers = [\"127.0.0.1:9009\"]", "servers = []")
        + "\n[upstream.spare]\nservers = [\"127.0.0.1:9010\"]\n";
    let loaded = parse(&src, "t.toml", Path::new(".")).expect("valid");
    let msgs: Vec<_> = loaded.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("has no servers")));
    assert!(msgs.iter().any(|m| m.contains("`spare` is not used")));
}

#[test]
fn zero_timeout_and_bad_trusted_proxy() {
    let src = EXAMPLE.replace("connect_timeout = \"1s\"", "connect_timeout = \"0s\"")
        + "\n[gateway]\ntrusted_proxies = [\"10.0.0.0/8\", \"not-an-ip\"]\n";
    let errs = errors(&src);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0]
        .message
        .contains("connect_timeout must be greater than zero"));
    assert!(errs[1].message.contains("`not-an-ip` is not an IP address"));
}

#[test]
fn error_page_keys_and_files() {
    let e = one_error(&format!("{EXAMPLE}\n[error_pages]\n\"200\" = \"x.html\"\n"));
    assert!(e.message.contains("not a status from 400 to 599"));
    let e = one_error(&format!(
        "{EXAMPLE}\n[error_pages]\n502 = \"/nonexistent/502.html\"\n"
    ));
    assert!(e.message.contains("cannot read error page template"));
}

#[test]
fn rate_limit_policies_are_checked_and_referenced() {
    let src = format!("{EXAMPLE}\n[rate_limit.api]\nkey = \"client_ip+header:x-key\"\nrate = 10\nburst = 20\n\n[[route]]\npath_prefix = \"/api\"\nupstream = \"app\"\nrate_limit = \"api\"\n");
    let c = parse(&src, "t.toml", Path::new(".")).expect("valid").config;
    assert_eq!(c.rate_limits[0].burst, 20);
    assert_eq!(c.routes[2].rate_limit, Some(0));
    let e = one_error(&src.replace("rate_limit = \"api\"", "rate_limit = \"apii\""));
    assert!(
        e.message.contains(
            "rate-limit policy `apii` referenced by route 3 is not defined; did you mean `api`?"
        ),
        "{}",
        e.message
    );
    let e = one_error(&src.replace("client_ip+header:x-key", "client_ip+cookie"));
    assert!(e.message.contains("key part `cookie`"), "{}", e.message);
}

fn warnings(src: &str) -> Vec<Diagnostic> {
    match parse(src, "t.toml", Path::new(".")) {
        Ok(l) => l.warnings,
        Err(d) => panic!("expected a valid config, got {d:#?}"),
    }
}

const BASE: &str = "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\n\n[[listener]]\nname = \"internal\"\nlisten = \"127.0.0.1:8081\"\n\n[upstream.app]\nservers = [\"127.0.0.1:9001\"]\n";

#[test]
fn a_route_hidden_by_an_identical_earlier_one_is_reported_with_its_position() {
    let src = format!(
        "{BASE}\n[[route]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"app\"\n\n[[route]]\nname = \"api-v2\"\npath_prefix = \"/api\"\nupstream = \"app\"\n"
    );
    let w = warnings(&src);
    assert_eq!(w.len(), 1, "{w:#?}");
    assert_eq!(
        w[0].message,
        "route 2 (`api-v2`) is unreachable: route 1 (`api`) has the same host and path_prefix `/api` on any listener, and comes first"
    );
    assert_eq!(w[0].line, 17, "{}", w[0]);
}

#[test]
fn broader_routes_listed_first_do_not_hide_narrower_ones() {
    // The most specific route wins wherever it is in the file.
    let src = format!(
        "{BASE}\n[[route]]\nupstream = \"app\"\n\n[[route]]\npath_prefix = \"/api\"\nupstream = \"app\"\n\n\
         [[route]]\nhost = \"*.example.com\"\nupstream = \"app\"\n\n[[route]]\nhost = \"a.example.com\"\nupstream = \"app\"\n"
    );
    assert!(warnings(&src).is_empty(), "{:#?}", warnings(&src));
    // ...but a route for every listener hides the same route for one listener.
    let src = format!(
        "{BASE}\n[[route]]\npath_prefix = \"/api\"\nupstream = \"app\"\n\n[[route]]\npath_prefix = \"/api\"\nlistener = \"internal\"\nupstream = \"app\"\n"
    );
    let w = warnings(&src);
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(w[0].message.contains("on listener `internal`"), "{}", w[0]);
}

#[test]
fn duplicate_route_names_are_errors() {
    let src = format!(
        "{BASE}\n[[route]]\nname = \"api\"\npath_prefix = \"/a\"\nupstream = \"app\"\n\n[[route]]\nname = \"api\"\npath_prefix = \"/b\"\nupstream = \"app\"\n"
    );
    let e = one_error(&src);
    assert_eq!(e.message, "route name `api` is already used by route 1");
    assert_eq!((e.line, e.column), (18, 8));
}

#[test]
fn inverted_and_absurd_timeouts_are_warned_about_where_they_are() {
    let src = format!(
        "{BASE}connect_timeout = \"5s\"\nresponse_timeout = \"500ms\"\n\n[upstream.slow]\nservers = [\"127.0.0.1:9002\"]\nconnect_timeout = \"10m\"\nbody_idle_timeout = \"48h\"\n\n\
         [[route]]\nupstream = \"app\"\n\n[[route]]\npath_prefix = \"/slow\"\nupstream = \"slow\"\n"
    );
    let w = warnings(&src);
    let found: Vec<(usize, &str)> = w.iter().map(|d| (d.line, d.message.as_str())).collect();
    assert_eq!(w.len(), 3, "{found:#?}");
    assert_eq!(found[0].0, 12);
    assert!(found[0].1.contains(
        "response_timeout 500ms of upstream `app` is shorter than its connect_timeout 5s"
    ));
    assert_eq!(found[1].0, 16);
    assert!(found[1]
        .1
        .contains("connect_timeout 600s of upstream `slow` is over a minute"));
    assert_eq!(found[2].0, 17);
    assert!(found[2]
        .1
        .contains("body_idle_timeout 172800s of upstream `slow` is over a day"));
}

/// What the fuzzer (`fuzz/`) checks at length, in miniature on every test
/// run: every prefix of the richest seed config, and each line of it
/// removed, gives a config or diagnostics, never a panic.
#[test]
fn truncated_and_damaged_configs_never_panic() {
    let full = include_str!("../../../../fuzz/corpus/config/full.toml");
    for end in (0..=full.len()).filter(|i| full.is_char_boundary(*i)) {
        if let Err(d) = parse(&full[..end], "t.toml", Path::new("/nonexistent")) {
            for x in d {
                let _ = x.to_string();
            }
        }
    }
    let lines: Vec<&str> = full.lines().collect();
    for skip in 0..lines.len() {
        let src: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, l)| *l)
            .collect();
        let _ = parse(&src.join("\n"), "t.toml", Path::new("/nonexistent"));
    }
}

#[test]
fn upstream_protocol_and_tls_settings_are_checked() {
    let base = "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n[[route]]\nupstream = \"u\"\n[upstream.u]\nservers = [\"127.0.0.1:1\"]\n";
    let cases = [
        ("protocol = \"h3\"\n", 8, 12, "protocol `h3` is not known"),
        (
            "protocol = \"h2\"\ntls = false\n",
            9,
            7,
            "protocol \"h2\" is HTTP/2 over TLS and cannot have tls = false",
        ),
        (
            "protocol = \"h2c\"\ntls = true\n",
            9,
            7,
            "protocol \"h2c\" is HTTP/2 in clear text and cannot have tls = true",
        ),
        (
            "tls_ca = \"ca.pem\"\n",
            8,
            10,
            "tls_ca is set but the upstream does not use TLS",
        ),
        (
            "tls = true\ntls_ca = \"/nonexistent/ca.pem\"\n",
            9,
            10,
            "cannot read CA file `/nonexistent/ca.pem`",
        ),
        (
            "tls = true\ntls_client_cert = \"c.pem\"\n",
            9,
            19,
            "mutual TLS needs both tls_client_cert and tls_client_key",
        ),
        (
            "tls = true\ntls_server_name = \"not a name\"\n",
            9,
            19,
            "tls_server_name `not a name` is not a DNS name or IP address",
        ),
    ];
    for (extra, line, column, message) in cases {
        let e = one_error(&format!("{base}{extra}"));
        assert!(e.message.starts_with(message), "{extra}: {}", e.message);
        assert_eq!((e.line, e.column), (line, column), "{extra}");
    }
    // h2 implies TLS; the defaults are HTTP/1.1 in clear text.
    let ok = parse(
        &format!("{base}protocol = \"h2\"\n[upstream.v]\nservers = [\"127.0.0.1:2\"]\n[[route]]\npath_prefix = \"/v\"\nupstream = \"v\"\n"),
        "t.toml",
        Path::new("."),
    )
    .expect("valid");
    let u = &ok.config.upstreams[0];
    assert_eq!(u.protocol, crate::UpstreamProtocol::H2);
    assert!(u.tls.is_some());
    let v = &ok.config.upstreams[1];
    assert_eq!(v.protocol, crate::UpstreamProtocol::Http1);
    assert!(v.tls.is_none());
    assert_eq!(v.tunnel_idle_timeout, std::time::Duration::from_secs(3600));
}

#[test]
fn redirect_https_is_checked() {
    let base = "[[route]]\nupstream = \"u\"\n[upstream.u]\nservers = [\"127.0.0.1:1\"]\n[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n";
    let e = one_error(&format!("{base}https_port = 8443\n"));
    assert_eq!(e.message, "https_port is set but redirect_https is not");
    assert_eq!((e.line, e.column), (8, 14));
    let ok = parse(
        &format!("{base}redirect_https = true\n"),
        "t.toml",
        Path::new("."),
    )
    .expect("valid");
    assert_eq!(ok.config.listeners[0].redirect_https, Some(443));
}

#[test]
fn max_response_headers_is_bounded_with_a_default() {
    let c = parse(EXAMPLE, "t.toml", Path::new("."))
        .expect("valid")
        .config;
    assert_eq!(c.upstreams[0].max_response_headers, 100);
    let src = EXAMPLE.replace(
        "connect_timeout = \"1s\"",
        "connect_timeout = \"1s\"\nmax_response_headers = 250",
    );
    let c = parse(&src, "t.toml", Path::new(".")).expect("valid").config;
    assert_eq!(c.upstreams[0].max_response_headers, 250);
    let e = one_error(&src.replace("max_response_headers = 250", "max_response_headers = 0"));
    assert!(
        e.message
            .contains("max_response_headers = 0 is out of range; expected 1 to 1000"),
        "{}",
        e.message
    );
}
