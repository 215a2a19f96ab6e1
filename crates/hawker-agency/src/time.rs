//! Instants and days at the edge. Everything is stored in UTC; clients send
//! and receive ISO 8601 (RFC 3339) with an explicit offset.

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, Utc};
use serde::Deserialize;

use hawker_core::error::{Error, Result};

/// Parses an RFC 3339 instant with an offset (`2026-05-01T14:00:00+08:00`).
/// In a query string an unencoded `+` arrives as a space: it is read as `+`.
pub fn parse_instant(field: &'static str, value: &str) -> Result<DateTime<Utc>> {
    let value = value.trim_start().replace(' ', "+");
    DateTime::parse_from_rfc3339(&value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            Error::invalid(
                "bad_time",
                format!("{field} must be an ISO 8601 instant with an offset, e.g. 2026-05-01T14:00:00+08:00"),
            )
        })
}

/// The schema's pattern of a UTC offset, exactly what [`parse_offset`] accepts.
pub const OFFSET_PATTERN: &str = "^([Zz]|[+ -](0[0-9]|1[0-8]):[0-5][0-9])$";

/// Parses a UTC offset: `Z`, `+08:00`, `-05:30` (a leading space is a `+`):
/// a sign, two digits of hours (at most 18), a colon and two of minutes.
pub fn parse_offset(value: &str) -> Result<FixedOffset> {
    let bad = || Error::invalid("bad_offset", "utc_offset must look like +08:00, -05:30 or Z");
    if value == "Z" || value == "z" {
        return FixedOffset::east_opt(0).ok_or_else(bad);
    }
    let &[sign, h1, h2, b':', m1, m2] = value.as_bytes() else {
        return Err(bad());
    };
    let sign = match sign {
        b'+' | b' ' => 1,
        b'-' => -1,
        _ => return Err(bad()),
    };
    if ![h1, h2, m1, m2].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let digit = |b: u8| i32::from(b - b'0');
    let (hours, minutes) = (digit(h1) * 10 + digit(h2), digit(m1) * 10 + digit(m2));
    if hours > 18 || minutes > 59 {
        return Err(bad());
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60)).ok_or_else(bad)
}

/// `[from, to)` in UTC of a calendar day in a UTC offset. A day at the edge
/// of what chrono represents (e.g. `+262142-12-31`) is refused, not a panic.
pub fn day_window(date: NaiveDate, offset: FixedOffset) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let out_of_range = || Error::invalid("bad_date", "the date is out of the supported range");
    let local_midnight = date.and_hms_opt(0, 0, 0).ok_or_else(out_of_range)?;
    let from = local_midnight
        .checked_sub_signed(Duration::seconds(i64::from(offset.local_minus_utc())))
        .ok_or_else(out_of_range)?
        .and_utc();
    let to = from
        .checked_add_signed(Duration::days(1))
        .ok_or_else(out_of_range)?;
    Ok((from, to))
}

/// A period `[from, to)` from a query string; either end may be open.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeriodQuery {
    /// Start (inclusive), ISO 8601 with offset. Open if absent.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// End (exclusive), ISO 8601 with offset. Open if absent.
    #[param(format = DateTime)]
    pub to: Option<String>,
}

/// A parsed period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl PeriodQuery {
    pub fn parse(&self) -> Result<Period> {
        let from = self
            .from
            .as_deref()
            .map(|v| parse_instant("from", v))
            .transpose()?;
        let to = self.to.as_deref().map(|v| parse_instant("to", v)).transpose()?;
        if let (Some(f), Some(t)) = (from, to) {
            if t <= f {
                return Err(Error::invalid("bad_period", "`to` must be after `from`"));
            }
        }
        Ok(Period { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_need_an_offset_and_become_utc() {
        let t = parse_instant("at", "2026-05-01T14:00:00+08:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-05-01T06:00:00+00:00");
        // `+` decoded as a space from a query string.
        assert_eq!(parse_instant("at", "2026-05-01T14:00:00 08:00").unwrap(), t);
        assert!(parse_instant("at", "2026-05-01T14:00:00").is_err());
        assert!(parse_instant("at", "yesterday").is_err());
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_offset("+08:00").unwrap().local_minus_utc(), 8 * 3600);
        assert_eq!(
            parse_offset("-05:30").unwrap().local_minus_utc(),
            -(5 * 3600 + 1800)
        );
        assert_eq!(parse_offset("Z").unwrap().local_minus_utc(), 0);
        assert_eq!(parse_offset(" 01:00").unwrap().local_minus_utc(), 3600);
        for bad in ["8", "+8", "+25:00", "+08:61", "", "UTC"] {
            assert!(parse_offset(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_day_in_shanghai_starts_at_16_utc_the_day_before() {
        let date = NaiveDate::from_ymd_opt(2026, 5, 1).unwrap();
        let (from, to) = day_window(date, parse_offset("+08:00").unwrap()).unwrap();
        assert_eq!(from.to_rfc3339(), "2026-04-30T16:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2026-05-01T16:00:00+00:00");
    }

    #[test]
    fn a_day_at_the_edge_of_the_calendar_is_refused_not_a_panic() {
        let last = NaiveDate::MAX;
        let e = day_window(last, parse_offset("-05:00").unwrap()).unwrap_err();
        assert_eq!(e.code(), "bad_date");
        let first = NaiveDate::MIN;
        let e = day_window(first, parse_offset("+08:00").unwrap()).unwrap_err();
        assert_eq!(e.code(), "bad_date");
    }
}
