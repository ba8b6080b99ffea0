//! Durations written as `"250ms"`, `"5s"`, `"1m"`, `"1h"` (or `"1.5s"`).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A `std::time::Duration` that deserializes from a string like `"250ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

const EXPECTED: &str =
    "a duration: a number followed by ms, s, m or h, as in \"250ms\", \"5s\", \"1m\"";

/// Parses `"250ms"`, `"5s"`, `"1.5s"`, `"1m"`, `"2h"`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{s}` has no unit; expected {EXPECTED}"))?;
    let (num, unit) = s.split_at(split);
    let factor_ms: f64 = match unit {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit `{unit}`; expected {EXPECTED}"
            ))
        }
    };
    if num.is_empty() || num.matches('.').count() > 1 || num.starts_with('.') || num.ends_with('.')
    {
        return Err(format!("`{s}` is not a valid number; expected {EXPECTED}"));
    }
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a valid number; expected {EXPECTED}"))?;
    let ms = value * factor_ms;
    // Ten years is far beyond any sane timeout and keeps the value finite.
    if !(0.0..=315_360_000_000.0).contains(&ms) {
        return Err(format!("`{s}` is out of range; expected at most 10 years"));
    }
    Ok(std::time::Duration::from_micros(
        (ms * 1000.0).round() as u64
    ))
}

// === impl Duration ===

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
                parse_duration(s).map(Duration).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "5",
            "s",
            "5x",
            "1..5s",
            ".5s",
            "5.s",
            "-1s",
            "99999999999h",
            "5 s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
