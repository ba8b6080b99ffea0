//! Content negotiation for error bodies (RFC 9110 §12.5.1): HTML for
//! browsers, `application/problem+json` (RFC 9457) for API clients, plain
//! text otherwise.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Html,
    Json,
    Text,
}

/// Picks the error body format from an `Accept` header value. The highest
/// q-value wins; on a tie the earlier media range wins. `*/*` alone (curl's
/// default) gets plain text.
pub(crate) fn choose(accept: Option<&[u8]>) -> Format {
    let Some(accept) = accept.and_then(|a| std::str::from_utf8(a).ok()) else {
        return Format::Text;
    };
    let mut best = (Format::Text, 0u16);
    for range in accept.split(',').take(32) {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .next()
            .map_or(1000, parse_q);
        let format = match media.as_str() {
            "text/html" | "application/xhtml+xml" => Format::Html,
            "application/json" | "application/problem+json" => Format::Json,
            m if m.ends_with("+json") => Format::Json,
            "text/plain" => Format::Text,
            _ => continue,
        };
        if q > best.1 {
            best = (format, q);
        }
    }
    best.0
}

/// q-value in thousandths; invalid values count as 0 (not acceptable).
fn parse_q(s: &str) -> u16 {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    let frac_val = format!("{frac:0<3}").parse::<u16>().unwrap_or(0);
    match int {
        "0" => frac_val,
        "1" if frac_val == 0 => 1000,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_html_apis_get_json_curl_gets_text() {
        let chrome = b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8";
        assert_eq!(choose(Some(chrome)), Format::Html);
        assert_eq!(choose(Some(b"application/json")), Format::Json);
        assert_eq!(choose(Some(b"application/problem+json")), Format::Json);
        assert_eq!(choose(Some(b"application/vnd.api+json")), Format::Json);
        assert_eq!(choose(Some(b"*/*")), Format::Text);
        assert_eq!(choose(None), Format::Text);
        assert_eq!(
            choose(Some(b"text/html;q=0.5, application/json")),
            Format::Json
        );
        assert_eq!(
            choose(Some(b"application/json;q=0, text/plain")),
            Format::Text
        );
        assert_eq!(choose(Some(b"text/html;q=garbage")), Format::Text);
        assert_eq!(choose(Some(&[0xff, 0xfe])), Format::Text);
    }
}
