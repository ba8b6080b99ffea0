//! RFC 3339 timestamps without a date-time dependency.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// `2026-11-24T22:45:56.123Z` for `t`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    match Stamp::new(t) {
        Some(s) => s.as_str().to_owned(),
        None => {
            let (y, m, day, rem, millis) = parts(t);
            format!(
                "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60,
            )
        }
    }
}

/// An RFC 3339 timestamp with milliseconds, formatted on the stack (the
/// access log writes one per request; `format!` cost several times more).
pub(crate) struct Stamp([u8; 24]);

impl Stamp {
    /// `None` past the year 9999, which does not fit four digits.
    pub(crate) fn new(t: SystemTime) -> Option<Self> {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        // The date and time to the second change once a second: formatted
        // again only then, per thread.
        let mut b = LAST_SECOND.with(|last| match last.get() {
            Some((s, b)) if s == secs => Some(b),
            _ => {
                let b = Self::to_second(secs)?;
                last.set(Some((secs, b)));
                Some(b)
            }
        })?;
        put_digits(&mut b[20..23], d.subsec_millis());
        Some(Self(b))
    }

    /// `YYYY-MM-DDTHH:MM:SS.000Z` for `secs` after the epoch.
    fn to_second(secs: u64) -> Option<[u8; 24]> {
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, day) = civil_from_days(days as i64);
        let y = u32::try_from(y).ok().filter(|y| *y <= 9999)?;
        let mut b = *b"0000-00-00T00:00:00.000Z";
        put_digits(&mut b[0..4], y);
        put_digits(&mut b[5..7], m);
        put_digits(&mut b[8..10], day);
        put_digits(&mut b[11..13], (rem / 3600) as u32);
        put_digits(&mut b[14..16], (rem % 3600 / 60) as u32);
        put_digits(&mut b[17..19], (rem % 60) as u32);
        Some(b)
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits and separators were written.
        std::str::from_utf8(&self.0).unwrap_or("1970-01-01T00:00:00.000Z")
    }
}

thread_local! {
    /// The last second `Stamp::new` formatted on this thread, and its text.
    static LAST_SECOND: Cell<Option<(u64, [u8; 24])>> = const { Cell::new(None) };
}

/// Writes `n`'s last `into.len()` decimal digits, zero-padded.
fn put_digits(into: &mut [u8], mut n: u32) {
    for d in into.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// (year, month, day, seconds into the day, milliseconds) of `t`.
fn parts(t: SystemTime) -> (i64, u32, u32, u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    (y, m, day, rem, d.subsec_millis())
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's
/// `civil_from_days` (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_560_356_123);
        assert_eq!(rfc3339_millis(t), "2026-11-24T22:45:56.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
        let late = UNIX_EPOCH + Duration::from_millis(4_102_444_799_999); // 2099-12-31
        assert_eq!(rfc3339_millis(late), "2099-12-31T23:59:59.999Z");
        // Past four digits of year: still written, by the slow path.
        let far = UNIX_EPOCH + Duration::from_secs(253_402_300_800); // 10000-01-01
        assert_eq!(rfc3339_millis(far), "10000-01-01T00:00:00.000Z");
    }

    #[test]
    fn cached_second_is_replaced_when_the_second_changes() {
        let base = UNIX_EPOCH + Duration::from_millis(1_795_560_356_123);
        let cases: [(i64, &str); 6] = [
            (0, "2026-11-24T22:45:56.123Z"),
            (500, "2026-11-24T22:45:56.623Z"),
            (877, "2026-11-24T22:45:57.000Z"),
            (-1_000, "2026-11-24T22:45:55.123Z"),
            (86_400_000, "2026-11-25T22:45:56.123Z"),
            (0, "2026-11-24T22:45:56.123Z"),
        ];
        for (delta, want) in cases {
            let t = if delta >= 0 {
                base + Duration::from_millis(delta as u64)
            } else {
                base - Duration::from_millis(delta.unsigned_abs())
            };
            assert_eq!(rfc3339_millis(t), want);
        }
        // Past the year 9999 and back: the cache does not keep the miss.
        let far = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert_eq!(rfc3339_millis(far), "10000-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(base), "2026-11-24T22:45:56.123Z");
    }
}
