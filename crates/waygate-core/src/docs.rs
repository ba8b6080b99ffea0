//! Renders `docs/causes.md` from [`Cause`], so the documentation cannot
//! drift from the code: a test compares the file with this output.

use std::fmt::Write as _;

use crate::Cause;

/// The full text of `docs/causes.md`.
pub fn causes_markdown() -> String {
    let mut out = String::from(
        "# Causes\n\n\
         <!-- Generated from crates/waygate-core/src/cause.rs; do not edit by hand.\n     \
         Regenerate with: WAYGATE_BLESS=1 cargo test -p waygate-core causes_md -->\n\n\
         Every response waygate generates itself (and every response it has to cut off) has\n\
         exactly one cause. The cause decides the status, the RFC 9209 `Proxy-Status` error\n\
         type, the `cause` field of the access log and the error page. A response that came\n\
         from the upstream server carries no cause and no `Proxy-Status`.\n\n\
         | cause | status | Proxy-Status error | side | meaning |\n\
         |---|---|---|---|---|\n",
    );
    for &c in Cause::ALL {
        let _ = writeln!(
            out,
            "| `{}` | {} | `{}` | {} | {} |",
            c.name(),
            c.status(),
            c.proxy_status(),
            c.side(),
            c.explanation()
        );
    }
    out.push_str(
        "\nStatus 499 is never sent (the client is gone); it is what the access log records.\n\
         Causes whose status is 502/504 can also end a response whose head was already sent\n\
         (`response_body_truncated`, `response_body_invalid`, `response_body_timeout`): then the\n\
         status cannot change, the client connection is aborted (no terminating chunk, or fewer\n\
         bytes than Content-Length) and the access log records the upstream's status with\n\
         `\"aborted\": true` and the cause.\n",
    );
    for &c in Cause::ALL {
        let _ = write!(
            out,
            "\n## `{}`\n\n**{} — {}** (`Proxy-Status: waygate; error={}`)\n\n{}\n\nWhat to check:\n\n",
            c.name(),
            c.status(),
            c.title(),
            c.proxy_status(),
            c.explanation()
        );
        for f in c.fixes() {
            let _ = writeln!(out, "- {f}");
        }
        if let Some(s) = c.retry_after() {
            let _ = writeln!(out, "\nThe response carries `Retry-After: {s}`.");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_md_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/causes.md");
        let want = super::causes_markdown();
        if std::env::var_os("WAYGATE_BLESS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/causes.md is out of date; regenerate with WAYGATE_BLESS=1 cargo test -p waygate-core causes_md"
        );
    }
}
