//! Faster serde for the hot answer types (an order is written to its buyer
//! for every purchase): timestamps written digit by digit instead of through
//! `chrono`'s `Display`, which goes through `fmt` one character at a time.
//! The text is exactly `chrono`'s (RFC 3339, `Z`, fraction of 0, 3, 6 or 9
//! digits); anything out of the common range is left to `chrono`.
//!
//! Use: `#[serde(serialize_with = "hawker_core::wire::time")]` and
//! `wire::option_time` for `Option<DateTime<Utc>>`.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Serialize, Serializer};

/// `2026-12-04T12:00:00.123456Z`, as `chrono` writes it.
pub fn time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 30];
    match rfc3339(t, &mut buf) {
        Some(text) => s.serialize_str(text),
        None => t.serialize(s),
    }
}

/// [`time`] of an optional timestamp (`null` when absent).
pub fn option_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => time(t, s),
        None => s.serialize_none(),
    }
}

/// The RFC 3339 text of `t` in `buf`, for years 0 to 9999 outside a leap
/// second; `None` otherwise.
fn rfc3339<'b>(t: &DateTime<Utc>, buf: &'b mut [u8; 30]) -> Option<&'b str> {
    let year = t.year();
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    // chrono's `SecondsFormat::AutoSi`: as few of 3, 6 or 9 digits as are exact.
    let (fraction, digits) = if nanos == 0 {
        (0, 0)
    } else if nanos % 1_000_000 == 0 {
        (nanos / 1_000_000, 3)
    } else if nanos % 1_000 == 0 {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    let mut w = Digits { buf, at: 0 };
    w.number(year as u32, 4);
    w.byte(b'-');
    w.number(t.month(), 2);
    w.byte(b'-');
    w.number(t.day(), 2);
    w.byte(b'T');
    w.number(t.hour(), 2);
    w.byte(b':');
    w.number(t.minute(), 2);
    w.byte(b':');
    w.number(t.second(), 2);
    if digits > 0 {
        w.byte(b'.');
        w.number(fraction, digits);
    }
    w.byte(b'Z');
    let end = w.at;
    std::str::from_utf8(&buf[..end]).ok()
}

/// Writes ASCII into a fixed buffer (at most 30 bytes: the longest stamp).
struct Digits<'b> {
    buf: &'b mut [u8; 30],
    at: usize,
}

impl Digits<'_> {
    fn byte(&mut self, b: u8) {
        self.buf[self.at] = b;
        self.at += 1;
    }

    /// `value` in exactly `digits` decimal digits, zero-padded.
    fn number(&mut self, mut value: u32, digits: usize) {
        for i in (0..digits).rev() {
            self.buf[self.at + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
        self.at += digits;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[derive(Serialize)]
    struct Fast(#[serde(serialize_with = "time")] DateTime<Utc>);

    #[derive(Serialize)]
    struct FastOption(#[serde(serialize_with = "option_time")] Option<DateTime<Utc>>);

    fn same_as_chrono(t: DateTime<Utc>) {
        assert_eq!(
            serde_json::to_string(&Fast(t)).unwrap(),
            serde_json::to_string(&t).unwrap(),
            "{t:?}"
        );
    }

    #[test]
    fn timestamps_read_exactly_as_chrono_writes_them() {
        for nanos in [
            0,
            1,
            999,
            1_000,
            120_000,
            123_456_000,
            123_000_000,
            100_000_000,
            999_999_999,
        ] {
            for secs in [
                0i64,
                59,
                1_764_849_600,
                1_764_849_659,
                253_402_300_799,
                -62_167_219_200,
            ] {
                same_as_chrono(Utc.timestamp_opt(secs, nanos).unwrap());
            }
        }
        // A spread of ordinary moments.
        let mut secs = 946_684_800i64;
        let mut nanos = 7u32;
        for _ in 0..5_000 {
            secs = secs
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407)
                % 4_000_000_000;
            secs = secs.abs();
            nanos = nanos.wrapping_mul(1_103_515_245).wrapping_add(12_345) % 1_000_000_000;
            same_as_chrono(Utc.timestamp_opt(secs, nanos).unwrap());
            same_as_chrono(Utc.timestamp_opt(secs, nanos / 1_000 * 1_000).unwrap());
            same_as_chrono(Utc.timestamp_opt(secs, nanos / 1_000_000 * 1_000_000).unwrap());
        }
    }

    #[test]
    fn out_of_range_moments_are_left_to_chrono() {
        let far = Utc.with_ymd_and_hms(12_345, 1, 2, 3, 4, 5).unwrap();
        same_as_chrono(far);
        let before = Utc.with_ymd_and_hms(-44, 3, 15, 12, 0, 0).unwrap();
        same_as_chrono(before);
        let leap = Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap();
        same_as_chrono(leap);
    }

    #[test]
    fn an_absent_timestamp_is_null() {
        assert_eq!(serde_json::to_string(&FastOption(None)).unwrap(), "null");
        let t = Utc.timestamp_opt(1_764_849_600, 5_000_000).unwrap();
        assert_eq!(
            serde_json::to_string(&FastOption(Some(t))).unwrap(),
            serde_json::to_string(&t).unwrap()
        );
    }
}
