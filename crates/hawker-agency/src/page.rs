//! Cursor paging for every list route (rosters, invites, sessions, shifts,
//! statements, terms; and commerce's lineups, deals and coupon claims): `?limit=` (1 to [`MAX_LIMIT`], default
//! [`DEFAULT_LIMIT`]; anything else is a 400 `bad_limit`, never clamped) and
//! `?cursor=`, the `next_cursor` of the previous page. Pages are keyset
//! pages: each list has a total order ending in a unique id, and a cursor is
//! the key of the last item served, so walking the cursor returns every item
//! exactly once even while rows are added.
//!
//! A cursor is opaque to clients (hex of the key's parts). It only says
//! where to resume: the list's own filters and rights apply to every page, so
//! a forged cursor shows nothing the caller could not list anyway. A cursor
//! that does not decode is a 400 `bad_cursor`.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use hawker_core::error::{Error, Result};

/// Items per page when `limit` is absent.
pub const DEFAULT_LIMIT: i64 = 50;
/// The largest page a client may ask for.
pub const MAX_LIMIT: i64 = 100;

/// `?limit=&cursor=` of a list route.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 100; 50 if absent. Above 100 is a 400 `bad_limit`.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// Where to resume: the `next_cursor` of the previous page, as given (opaque;
    /// anything else is a 400 `bad_cursor`). The first page if absent.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The page size asked for (parsed only after the caller is authorized).
    pub fn limit(&self) -> Result<i64> {
        let Some(raw) = self.limit.as_deref() else {
            return Ok(DEFAULT_LIMIT);
        };
        match raw.trim().parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(Error::invalid(
                "bad_limit",
                format!("limit must be a whole number from 1 to {MAX_LIMIT}"),
            )),
        }
    }

    /// The cursor's parts, if a cursor was given.
    fn parts(&self) -> Result<Option<Vec<String>>> {
        self.cursor.as_deref().map(decode).transpose()
    }

    /// The resume key of a list ordered by (time, id).
    pub fn after_time_id(&self) -> Result<Option<(DateTime<Utc>, Uuid)>> {
        self.parts()?
            .map(|p| match p.as_slice() {
                [t, id] => Ok((time(t)?, uuid(id)?)),
                _ => Err(bad_cursor()),
            })
            .transpose()
    }

    /// The resume key of a list ordered by (time, integer id).
    pub fn after_time_int(&self) -> Result<Option<(DateTime<Utc>, i64)>> {
        self.parts()?
            .map(|p| match p.as_slice() {
                [t, n] => Ok((time(t)?, n.parse().map_err(|_| bad_cursor())?)),
                _ => Err(bad_cursor()),
            })
            .transpose()
    }

    /// The resume key of a list ordered by one text.
    pub fn after_text(&self) -> Result<Option<String>> {
        self.parts()?
            .map(|p| match p.as_slice() {
                [s] => Ok(s.clone()),
                _ => Err(bad_cursor()),
            })
            .transpose()
    }

    /// The resume key of a list ordered by an integer unique within it.
    pub fn after_int(&self) -> Result<Option<i64>> {
        self.parts()?
            .map(|p| match p.as_slice() {
                [n] => n.parse().map_err(|_| bad_cursor()),
                _ => Err(bad_cursor()),
            })
            .transpose()
    }

    /// The resume key of a list ordered by (text, time).
    pub fn after_text_time(&self) -> Result<Option<(String, DateTime<Utc>)>> {
        self.parts()?
            .map(|p| match p.as_slice() {
                [s, t] => Ok((s.clone(), time(t)?)),
                _ => Err(bad_cursor()),
            })
            .transpose()
    }
}

/// Splits `rows` (fetched with `limit + 1`) into the page and the cursor of
/// its last item, if there is more after it.
pub fn split<T>(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(key);
        (rows, next)
    } else {
        (rows, None)
    }
}

/// The cursor of a (time, id) key.
pub fn time_id(t: DateTime<Utc>, id: Uuid) -> String {
    encode(&[&rfc3339(t), &id.to_string()])
}

/// The cursor of a (time, integer id) key.
pub fn time_int(t: DateTime<Utc>, n: i64) -> String {
    encode(&[&rfc3339(t), &n.to_string()])
}

/// The cursor of a text key.
pub fn text(s: &str) -> String {
    encode(&[s])
}

/// The cursor of an integer key.
pub fn int(n: i64) -> String {
    encode(&[&n.to_string()])
}

/// The cursor of a (text, time) key.
pub fn text_time(s: &str, t: DateTime<Utc>) -> String {
    encode(&[s, &rfc3339(t)])
}

fn rfc3339(t: DateTime<Utc>) -> String {
    // Microseconds, as Postgres stores them: a key compares equal to its row.
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

const SEPARATOR: char = '\u{1f}';

fn encode(parts: &[&str]) -> String {
    let joined = parts.join(&SEPARATOR.to_string());
    joined.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode(cursor: &str) -> Result<Vec<String>> {
    // No list encodes an empty cursor (every key has a non-empty part), and
    // `?cursor=` would otherwise read as the empty text key of a text list.
    if cursor.is_empty() || cursor.len() > 512 || cursor.len() % 2 != 0 {
        return Err(bad_cursor());
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| cursor.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad_cursor)?;
    let text = String::from_utf8(bytes).map_err(|_| bad_cursor())?;
    Ok(text.split(SEPARATOR).map(str::to_owned).collect())
}

fn time(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| bad_cursor())
}

fn uuid(s: &str) -> Result<Uuid> {
    s.parse().map_err(|_| bad_cursor())
}

fn bad_cursor() -> Error {
    Error::invalid(
        "bad_cursor",
        "cursor must be the next_cursor of a previous page of this list",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(limit: Option<&str>, cursor: Option<String>) -> PageQuery {
        PageQuery {
            limit: limit.map(str::to_owned),
            cursor,
        }
    }

    #[test]
    fn an_empty_cursor_is_refused_not_read_as_the_empty_text_key() {
        let q = query(None, Some(String::new()));
        assert_eq!(q.after_text().unwrap_err().code(), "bad_cursor");
        assert_eq!(q.after_int().unwrap_err().code(), "bad_cursor");
        assert_eq!(query(None, None).after_text().unwrap(), None);
    }

    #[test]
    fn limits_default_to_50_and_above_100_are_refused_not_clamped() {
        assert_eq!(query(None, None).limit().unwrap(), DEFAULT_LIMIT);
        assert_eq!(query(Some("100"), None).limit().unwrap(), 100);
        assert_eq!(query(Some("1"), None).limit().unwrap(), 1);
        for bad in ["0", "101", "-1", "1e3", "", "99999999999999999999"] {
            assert_eq!(
                query(Some(bad), None).limit().unwrap_err().code(),
                "bad_limit",
                "{bad}"
            );
        }
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_a_bad_cursor() {
        let t = DateTime::parse_from_rfc3339("2031-06-01T13:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let id = Uuid::now_v7();
        let q = query(None, Some(time_id(t, id)));
        assert_eq!(q.after_time_id().unwrap(), Some((t, id)));
        let q = query(None, Some(time_int(t, 42)));
        assert_eq!(q.after_time_int().unwrap(), Some((t, 42)));
        let q = query(None, Some(int(7)));
        assert_eq!(q.after_int().unwrap(), Some(7));
        assert_eq!(
            query(None, Some(time_int(t, 1))).after_int().unwrap_err().code(),
            "bad_cursor"
        );
        let q = query(None, Some(text_time("mia_live", t)));
        assert_eq!(q.after_text_time().unwrap(), Some(("mia_live".to_string(), t)));
        assert_eq!(query(None, None).after_time_id().unwrap(), None);
        for bad in ["zz", "abc", "00", &"ab".repeat(300), &time_int(t, 1)] {
            let q = query(None, Some(bad.to_string()));
            assert_eq!(q.after_time_id().unwrap_err().code(), "bad_cursor", "{bad}");
        }
    }

    #[test]
    fn a_page_has_a_next_cursor_only_when_more_follows() {
        let (page, next) = split(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!((page, next), (vec![1, 2], Some("2".to_string())));
        let (page, next) = split(vec![1, 2], 2, |n| n.to_string());
        assert_eq!((page, next), (vec![1, 2], None));
    }
}
