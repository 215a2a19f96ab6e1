//! A small iCalendar (RFC 5545) writer: a published calendar of timed
//! events, with CRLF line endings, lines folded at 75 octets (never inside a
//! UTF-8 character), TEXT values escaped and times in UTC (`…Z`). Pure: the
//! calendar feed (`calendar_feed.rs`) gathers the events, this only writes.

use chrono::{DateTime, Utc};

/// The longest content line, in octets, without its CRLF (RFC 5545 3.1).
const MAX_LINE_OCTETS: usize = 75;

/// Whether an event takes place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatus {
    Confirmed,
    Cancelled,
}

impl EventStatus {
    fn as_str(self) -> &'static str {
        match self {
            EventStatus::Confirmed => "CONFIRMED",
            EventStatus::Cancelled => "CANCELLED",
        }
    }
}

/// One `VEVENT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Globally unique and stable across fetches, so a calendar app updates
    /// the event instead of adding another.
    pub uid: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub summary: String,
    pub description: String,
    /// An absolute URL (written as a URI, not escaped as text).
    pub url: Option<String>,
    pub status: EventStatus,
}

/// A `VCALENDAR` with `METHOD:PUBLISH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    /// `PRODID`, e.g. `-//hawker//calendar feed//EN`.
    pub product_id: String,
    /// The name calendar apps show (`NAME`, and `X-WR-CALNAME` for older apps).
    pub name: String,
    /// When the calendar was written: every event's `DTSTAMP`.
    pub stamp: DateTime<Utc>,
    pub events: Vec<Event>,
}

impl Calendar {
    /// The calendar as an iCalendar stream.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, value: &str| push_line(&mut out, &format!("{name}:{value}"));
        line("BEGIN", "VCALENDAR");
        line("VERSION", "2.0");
        line("PRODID", &escape_text(&self.product_id));
        line("CALSCALE", "GREGORIAN");
        line("METHOD", "PUBLISH");
        line("NAME", &escape_text(&self.name));
        line("X-WR-CALNAME", &escape_text(&self.name));
        // RFC 7986: how often to poll (the feed is cached for 5 minutes).
        line("REFRESH-INTERVAL;VALUE=DURATION", "PT15M");
        line("X-PUBLISHED-TTL", "PT15M");
        let stamp = utc(self.stamp);
        for event in &self.events {
            line("BEGIN", "VEVENT");
            line("UID", &escape_text(&event.uid));
            line("DTSTAMP", &stamp);
            line("DTSTART", &utc(event.start));
            line("DTEND", &utc(event.end));
            line("SUMMARY", &escape_text(&event.summary));
            if !event.description.is_empty() {
                line("DESCRIPTION", &escape_text(&event.description));
            }
            if let Some(url) = &event.url {
                line("URL", &strip_controls(url));
            }
            line("STATUS", event.status.as_str());
            line("TRANSP", "OPAQUE");
            line("END", "VEVENT");
        }
        line("END", "VCALENDAR");
        out
    }
}

/// A UTC date-time, `YYYYMMDDTHHMMSSZ`.
pub fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// A TEXT value escaped (RFC 5545 3.3.11): `\` `;` `,` and line breaks;
/// other control characters (which TEXT may not hold) dropped.
pub fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\\n");
            }
            '\n' => out.push_str("\\n"),
            '\t' => out.push('\t'),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn strip_controls(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).collect()
}

/// Appends `line` folded (RFC 5545 3.1): at most 75 octets a line, each
/// continuation starting with one space, every line ending in CRLF.
pub fn push_line(out: &mut String, line: &str) {
    let mut room = MAX_LINE_OCTETS;
    for c in line.chars() {
        let len = c.len_utf8();
        if len > room {
            out.push_str("\r\n ");
            // The leading space counts.
            room = MAX_LINE_OCTETS - 1;
        }
        out.push(c);
        room -= len;
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn folded(line: &str) -> String {
        let mut out = String::new();
        push_line(&mut out, line);
        out
    }

    #[test]
    fn text_escapes_backslash_semicolon_comma_and_line_breaks() {
        assert_eq!(escape_text("a\\b;c,d\ne\r\nf\rg"), "a\\\\b\\;c\\,d\\ne\\nf\\ng");
        assert_eq!(escape_text("tab\there\u{7}bell"), "tab\therebell");
        assert_eq!(escape_text("Glow: 50% off"), "Glow: 50% off");
    }

    #[test]
    fn short_lines_are_not_folded_and_end_in_crlf() {
        assert_eq!(folded("SUMMARY:hi"), "SUMMARY:hi\r\n");
        let exactly = "X".repeat(75);
        assert_eq!(folded(&exactly), format!("{exactly}\r\n"));
    }

    #[test]
    fn long_lines_fold_at_75_octets_with_a_leading_space() {
        let line = format!("DESCRIPTION:{}", "a".repeat(200));
        let out = folded(&line);
        let lines: Vec<&str> = out.strip_suffix("\r\n").unwrap().split("\r\n").collect();
        assert!(lines.len() > 2, "{out:?}");
        assert!(lines.iter().all(|l| l.len() <= 75), "{lines:?}");
        assert_eq!(lines[0].len(), 75);
        assert!(lines[1..].iter().all(|l| l.starts_with(' ')));
        // Unfolding (dropping CRLF + space) gives the line back.
        assert_eq!(out.replace("\r\n ", "").trim_end(), line);
    }

    #[test]
    fn folding_never_splits_a_utf8_character() {
        let line = format!("SUMMARY:{}", "直播间".repeat(40));
        let out = folded(&line);
        for l in out.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(l.len() <= 75, "{l:?} has {} octets", l.len());
        }
        assert_eq!(out.replace("\r\n ", "").trim_end(), line);
    }

    #[test]
    fn a_calendar_is_published_with_utc_times_and_crlf_only() {
        let t = |h| Utc.with_ymd_and_hms(2026, 12, 3, h, 0, 0).unwrap();
        let calendar = Calendar {
            product_id: "-//hawker//calendar feed//EN".into(),
            name: "Mia, shifts".into(),
            stamp: t(1),
            events: vec![Event {
                uid: "shift-1@hawker".into(),
                start: t(10),
                end: t(12),
                summary: "Winter glow; live".into(),
                description: "Agency: Acme\nBrand: Glow".into(),
                url: Some("https://example.com/console/host.html?session=1".into()),
                status: EventStatus::Cancelled,
            }],
        };
        let text = calendar.render();
        assert!(text.starts_with("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//hawker//calendar feed//EN\r\n"));
        assert!(text.ends_with("END:VEVENT\r\nEND:VCALENDAR\r\n"));
        assert!(!text.replace("\r\n", "").contains('\n'), "bare LF in {text:?}");
        for expected in [
            "METHOD:PUBLISH",
            "CALSCALE:GREGORIAN",
            "X-WR-CALNAME:Mia\\, shifts",
            "UID:shift-1@hawker",
            "DTSTAMP:20261203T010000Z",
            "DTSTART:20261203T100000Z",
            "DTEND:20261203T120000Z",
            "SUMMARY:Winter glow\\; live",
            "DESCRIPTION:Agency: Acme\\nBrand: Glow",
            "STATUS:CANCELLED",
        ] {
            assert!(
                text.contains(&format!("{expected}\r\n")),
                "{expected} missing in {text}"
            );
        }
    }
}
