//! RFC 3339 timestamps without a date-time dependency.

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
        let (y, m, day, rem, millis) = parts(t);
        let y = u32::try_from(y).ok().filter(|y| *y <= 9999)?;
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut n: u32| {
            for i in (at..at + width).rev() {
                b[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, 4, y);
        put(5, 2, m);
        put(8, 2, day);
        put(11, 2, (rem / 3600) as u32);
        put(14, 2, (rem % 3600 / 60) as u32);
        put(17, 2, (rem % 60) as u32);
        put(20, 3, millis);
        Some(Self(b))
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits and separators were written.
        std::str::from_utf8(&self.0).unwrap_or("1970-01-01T00:00:00.000Z")
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
}
