//! The schedule as an iCalendar feed: one secret URL per host (their shifts)
//! and per agency (its sessions), for calendar apps, which send no headers.
//!
//! The secret is 256 random bits, url-safe base64; only its SHA-256 digest
//! is stored (table `calendar_feed`), and a feed is found by the digest of
//! the presented token. An owner has at most one feed: creating it again
//! replaces the digest, so the old URL stops working at once; revoking
//! deletes it. An unknown, malformed or revoked token are the same 404. The
//! token is no bearer token: it opens this feed and nothing else.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use hawker_core::Claims;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::access::{agency_exists, host_exists, host_of, require_agency};
use crate::ical::{Calendar, Event, EventStatus};
use hawker_core::error::{Error, Result};

/// How far back the feed reaches.
pub const WINDOW_PAST_DAYS: i64 = 30;
/// How far ahead the feed reaches.
pub const WINDOW_AHEAD_DAYS: i64 = 180;
/// The most events one feed holds (the earliest in the window).
const MAX_EVENTS: i64 = 2000;
/// Random octets in a token (256 bits).
const TOKEN_BYTES: usize = 32;
/// The length of a token as text (url-safe base64 without padding).
const TOKEN_CHARS: usize = 43;

/// Whose schedule a feed shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedOwner {
    /// The host's shifts, whatever the agency.
    Host(Uuid),
    /// The agency's sessions.
    Agency(Uuid),
}

/// A feed just created: the only time its token is shown.
#[derive(Debug, Clone)]
pub struct NewFeed {
    pub token: String,
    pub created_at: DateTime<Utc>,
}

/// A fresh token: 256 bits from the operating system's CSPRNG.
fn new_token() -> Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| Error::Internal(anyhow::anyhow!("no randomness for a feed token: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of a token.
fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// True if `token` could be a feed token (43 url-safe base64 characters).
fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_CHARS
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The host a host token speaks for (403 for any other role: an admin has
/// no shifts of its own), which must exist (404).
pub async fn own_host(db: &PgPool, claims: &Claims) -> Result<FeedOwner> {
    let host_id = host_of(claims).ok_or_else(|| {
        Error::forbidden("only a host has a calendar feed of their own; agencies use their agency's")
    })?;
    if !host_exists(db, host_id).await? {
        return Err(Error::NotFound("host"));
    }
    Ok(FeedOwner::Host(host_id))
}

/// The agency, if `claims` acts for it (403) and it exists (404, admins).
pub async fn agency_owner(db: &PgPool, claims: &Claims, agency_id: Uuid) -> Result<FeedOwner> {
    require_agency(claims, agency_id)?;
    if !agency_exists(db, agency_id).await? {
        return Err(Error::NotFound("agency"));
    }
    Ok(FeedOwner::Agency(agency_id))
}

/// Creates the owner's feed, or replaces its secret (the old URL stops
/// working when this commits).
#[tracing::instrument(skip_all, fields(owner = ?owner, caller = %claims.sub), err)]
pub async fn regenerate(db: &PgPool, claims: &Claims, owner: FeedOwner) -> Result<NewFeed> {
    let token = new_token()?;
    let (host_id, agency_id) = match owner {
        FeedOwner::Host(h) => (Some(h), None),
        FeedOwner::Agency(a) => (None, Some(a)),
    };
    // One statement per owner kind: the partial unique index decides, so two
    // racing regenerations leave one feed (the later one's).
    let conflict = match owner {
        FeedOwner::Host(_) => "(host_id) where host_id is not null",
        FeedOwner::Agency(_) => "(agency_id) where agency_id is not null",
    };
    let created_at: DateTime<Utc> = sqlx::query_scalar(&format!(
        "insert into calendar_feed (calendar_feed_id, host_id, agency_id, token_sha256, created_by)
         values ($1, $2, $3, $4, $5)
         on conflict {conflict} do update
            set token_sha256 = excluded.token_sha256, created_by = excluded.created_by, created_at = now()
         returning created_at"
    ))
    .bind(Uuid::new_v4())
    .bind(host_id)
    .bind(agency_id)
    .bind(digest(&token))
    .bind(&claims.sub)
    .fetch_one(db)
    .await?;
    Ok(NewFeed { token, created_at })
}

/// Deletes the owner's feed, if any: its URL stops working at once.
#[tracing::instrument(skip_all, fields(owner = ?owner, caller = %claims.sub), err)]
pub async fn revoke(db: &PgPool, claims: &Claims, owner: FeedOwner) -> Result<()> {
    let query = match owner {
        FeedOwner::Host(h) => sqlx::query("delete from calendar_feed where host_id = $1").bind(h),
        FeedOwner::Agency(a) => sqlx::query("delete from calendar_feed where agency_id = $1").bind(a),
    };
    query.execute(db).await?;
    Ok(())
}

/// The owner of the feed `token` opens (404 for any token that opens none).
pub async fn owner_of(db: &PgPool, token: &str) -> Result<FeedOwner> {
    if !well_formed(token) {
        return Err(Error::NotFound("calendar feed"));
    }
    let row: Option<(Option<Uuid>, Option<Uuid>)> =
        sqlx::query_as("select host_id, agency_id from calendar_feed where token_sha256 = $1")
            .bind(digest(token))
            .fetch_optional(db)
            .await?;
    match row {
        Some((Some(host), _)) => Ok(FeedOwner::Host(host)),
        Some((None, Some(agency))) => Ok(FeedOwner::Agency(agency)),
        _ => Err(Error::NotFound("calendar feed")),
    }
}

/// One entry of a feed, as the database gives it.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Entry {
    /// The shift (host feeds) or the session (agency feeds).
    entry_id: Uuid,
    session_id: Uuid,
    title: String,
    agency_name: String,
    brand_name: Option<String>,
    hosts: Vec<String>,
    starts: DateTime<Utc>,
    ends: DateTime<Utc>,
    cancelled: bool,
}

/// The session's agency and brand (its own, or its campaign's).
const SESSION_JOINS: &str = "join agency a on a.agency_id = s.agency_id
           left join campaign c on c.campaign_id = s.campaign_id
           left join brand b on b.brand_id = coalesce(s.brand_id, c.brand_id)";

const SESSION_HOSTS: &str = "array(select '@' || h.handle from shift x join host h on h.host_id = x.host_id
                 where x.session_id = s.session_id and x.cancelled_at is null
                 order by x.planned_start, h.handle)";

/// The feed `token` opens, as an iCalendar stream: the owner's shifts or
/// sessions from 30 days back to 180 days ahead. `console_url` is the web
/// console's base (e.g. `https://live.example.com/console`).
#[tracing::instrument(skip_all, err)]
pub async fn feed(db: &PgPool, token: &str, console_url: &str) -> Result<String> {
    let owner = owner_of(db, token).await?;
    let now = Utc::now();
    let (from, to) = (
        now - Duration::days(WINDOW_PAST_DAYS),
        now + Duration::days(WINDOW_AHEAD_DAYS),
    );
    let (name, kind, entries) = match owner {
        FeedOwner::Host(host_id) => {
            let name: String = sqlx::query_scalar("select display_name from host where host_id = $1")
                .bind(host_id)
                .fetch_optional(db)
                .await?
                .ok_or(Error::NotFound("calendar feed"))?;
            let entries = sqlx::query_as::<_, Entry>(&format!(
                "select sh.shift_id as entry_id, s.session_id, s.title, a.name as agency_name,
                        b.name as brand_name, {SESSION_HOSTS} as hosts,
                        sh.planned_start as starts, sh.planned_end as ends,
                        (sh.cancelled_at is not null or s.status = 'cancelled') as cancelled
                   from shift sh join live_session s on s.session_id = sh.session_id {SESSION_JOINS}
                  where sh.host_id = $1 and sh.planned_end > $2 and sh.planned_start < $3
                  order by sh.planned_start, sh.shift_id
                  limit $4"
            ))
            .bind(host_id)
            .bind(from)
            .bind(to)
            .bind(MAX_EVENTS)
            .fetch_all(db)
            .await?;
            (format!("{name}: shifts (hawker)"), "shift", entries)
        }
        FeedOwner::Agency(agency_id) => {
            let name: String = sqlx::query_scalar("select name from agency where agency_id = $1")
                .bind(agency_id)
                .fetch_optional(db)
                .await?
                .ok_or(Error::NotFound("calendar feed"))?;
            let entries = sqlx::query_as::<_, Entry>(&format!(
                "select s.session_id as entry_id, s.session_id, s.title, a.name as agency_name,
                        b.name as brand_name, {SESSION_HOSTS} as hosts,
                        s.planned_start as starts, s.planned_end as ends,
                        (s.status = 'cancelled') as cancelled
                   from live_session s {SESSION_JOINS}
                  where s.agency_id = $1 and s.planned_end > $2 and s.planned_start < $3
                  order by s.planned_start, s.session_id
                  limit $4"
            ))
            .bind(agency_id)
            .bind(from)
            .bind(to)
            .bind(MAX_EVENTS)
            .fetch_all(db)
            .await?;
            (format!("{name}: sessions (hawker)"), "session", entries)
        }
    };
    let calendar = Calendar {
        product_id: "-//hawker//calendar feed//EN".into(),
        name,
        stamp: now,
        events: entries.into_iter().map(|e| event(kind, e, console_url)).collect(),
    };
    Ok(calendar.render())
}

/// An entry as an event: stable UID, the plan's times, who and for whom.
fn event(kind: &str, entry: Entry, console_url: &str) -> Event {
    let url = format!(
        "{}/host.html?session={}",
        console_url.trim_end_matches('/'),
        entry.session_id
    );
    let mut description = format!("Agency: {}", entry.agency_name);
    if let Some(brand) = &entry.brand_name {
        description.push_str(&format!("\nBrand: {brand}"));
    }
    if !entry.hosts.is_empty() {
        description.push_str(&format!("\nHosts: {}", entry.hosts.join(", ")));
    }
    description.push_str(&format!("\nConsole: {url}"));
    Event {
        uid: format!("{kind}-{}@hawker", entry.entry_id),
        start: entry.starts,
        end: entry.ends,
        summary: entry.title,
        description,
        url: Some(url),
        status: if entry.cancelled {
            EventStatus::Cancelled
        } else {
            EventStatus::Confirmed
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_url_safe_and_distinct() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert!(well_formed(&a), "{a}");
        assert_eq!(a.len(), TOKEN_CHARS);
        // 256 random bits: more than the 128 the feed needs.
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len() * 8, 256);
    }

    #[test]
    fn only_the_digest_is_stored_and_it_is_sha256() {
        assert_eq!(
            hex::encode(digest("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_jwt_or_a_short_string_is_no_feed_token() {
        assert!(!well_formed("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"));
        assert!(!well_formed("short"));
        assert!(!well_formed(&format!("{}/", "a".repeat(42))));
    }

    #[test]
    fn an_event_names_agency_brand_hosts_and_console() {
        let session_id = Uuid::nil();
        let entry = Entry {
            entry_id: session_id,
            session_id,
            title: "Winter glow".into(),
            agency_name: "Acme MCN".into(),
            brand_name: Some("Glow, Inc.".into()),
            hosts: vec!["@mia".into(), "@leo".into()],
            starts: Utc::now(),
            ends: Utc::now() + Duration::hours(1),
            cancelled: true,
        };
        let event = event("session", entry, "https://live.example.com/console/");
        assert_eq!(event.uid, format!("session-{session_id}@hawker"));
        assert_eq!(event.status, EventStatus::Cancelled);
        assert_eq!(
            event.url.as_deref(),
            Some(format!("https://live.example.com/console/host.html?session={session_id}").as_str())
        );
        assert!(event
            .description
            .starts_with("Agency: Acme MCN\nBrand: Glow, Inc.\nHosts: @mia, @leo\n"));
    }
}
