//! Entering a giveaway: once per user, while the window is open.
//!
//! An entry is one row `(giveaway_id, user_id)` (the primary key makes "once"
//! a constraint, whatever node or socket it comes from). Each entry takes a
//! shared advisory lock on the giveaway for its transaction, and the ticker
//! takes the exclusive one before it freezes the list: entries in flight
//! finish first, later ones see the giveaway closed. Shared advisory locks
//! live in the lock manager only, so a stampede of entries does not contend
//! on the giveaway's row.

use chrono::{DateTime, Utc};
use hawker_core::Role;
use serde::Serialize;
use uuid::Uuid;

use super::{fair, ticker, Eligibility, Status};
use crate::{Error, Live, Result};

/// Who enters.
pub struct Caller<'a> {
    pub user: &'a str,
    pub role: Role,
    /// The session's host, its agency or an admin.
    pub can_host: bool,
    /// The room the socket is in (`None` over HTTP).
    pub room: Option<Uuid>,
}

/// An entry, as its entrant sees it. Only the entrant learns which entry id
/// is theirs; the published list holds entry ids alone.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Entry {
    pub giveaway_id: Uuid,
    /// The pseudonym in the frozen list: 32 lower-case hex digits.
    pub entry_id: String,
    pub entered_at: DateTime<Utc>,
    /// True when the caller had already entered: this is that entry again.
    pub replayed: bool,
}

/// The two keys of the giveaway's advisory lock (`pg_advisory_xact_lock(int, int)`).
pub(crate) fn lock_keys(giveaway_id: Uuid) -> (i32, i32) {
    let b = giveaway_id.as_bytes();
    let mut folded = [0u8; 4];
    for (i, byte) in b.iter().enumerate() {
        folded[i % 4] ^= byte;
    }
    // 0x67697665: "give", the class of giveaway locks.
    (0x6769_7665, i32::from_be_bytes(folded))
}

#[derive(Clone, sqlx::FromRow)]
struct Open {
    session_id: Uuid,
    status: Status,
    eligibility: Eligibility,
    closes_at: DateTime<Utc>,
    open_now: bool,
    /// The committed seed: entry ids derive from it (`fair::entry_id`).
    #[sqlx(try_from = "Vec<u8>")]
    seed: Seed,
}

/// Enters `caller` in the giveaway. Refusals: `not_found`, `wrong_room`
/// (a socket in another session's room), `not_eligible` (staff tokens: the
/// host, agency, brand and admins; or not a buyer in the session when only
/// buyers may enter), `giveaway_closed`.
#[tracing::instrument(skip_all, fields(%giveaway_id, user = %caller.user), err(level = "debug"))]
pub async fn enter(live: &Live, caller: &Caller<'_>, giveaway_id: Uuid) -> Result<Entry> {
    let giveaway = open(live, giveaway_id).await?;
    if caller.room.is_some_and(|room| room != giveaway.session_id) {
        return Err(Error::invalid(
            "wrong_room",
            "the giveaway belongs to another session's room",
        ));
    }
    // Hosts, agencies, brands and admins run or sell the show: never entrants.
    if caller.can_host || caller.role != Role::Viewer {
        return Err(Error::forbidden(
            "only viewers may enter a giveaway (not its host, agency, brand or an admin)",
        ));
    }
    if !giveaway.open_now {
        // An entrant asking again gets their entry back, even once closed.
        return match existing(live, giveaway_id, caller.user).await? {
            Some(entry) => Ok(entry),
            None => Err(closed(giveaway.status, giveaway.closes_at)),
        };
    }
    if giveaway.eligibility == Eligibility::Buyers
        && !hawker_commerce::sales::bought_in_session(live.db(), giveaway.session_id, caller.user).await?
    {
        return Err(Error::conflict(
            "not_eligible",
            "only viewers who bought in this session may enter this giveaway",
        ));
    }
    let (class, key) = lock_keys(giveaway_id);
    let entry_id = fair::entry_id(&giveaway.seed.0, giveaway_id, caller.user);
    let mut tx = live.db().begin().await?;
    sqlx::query("select pg_advisory_xact_lock_shared($1, $2)")
        .bind(class)
        .bind(key)
        .execute(&mut *tx)
        .await?;
    // Inserted only while the giveaway is open, as of after the lock. Both
    // unique keys are arbiters: the entry id derives from the user, so two
    // racing inserts for one user may meet on either key first (naming only
    // the primary key let the other one raise a unique violation).
    let inserted: Option<DateTime<Utc>> = sqlx::query_scalar(
        "insert into giveaway_entry (giveaway_id, user_id, entry_id)
         select giveaway_id, $2, $3 from giveaway
          where giveaway_id = $1 and status = 'open' and now() < closes_at
         on conflict do nothing
         returning entered_at",
    )
    .bind(giveaway_id)
    .bind(caller.user)
    .bind(&entry_id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    match inserted {
        Some(entered_at) => {
            ticker::count_entry(live, giveaway_id).await;
            metrics::counter!("hawker_giveaway_entries_total").increment(1);
            Ok(Entry {
                giveaway_id,
                entry_id,
                entered_at,
                replayed: false,
            })
        }
        // Entered meanwhile (another socket or node), or closed meanwhile.
        None => match existing(live, giveaway_id, caller.user).await? {
            Some(entry) => Ok(entry),
            None => Err(closed(Status::Closed, giveaway.closes_at)),
        },
    }
}

/// How long a node answers entries from its copy of a giveaway's row. The
/// copy only turns entries away early: whether an entry is taken is decided
/// by the insert, which checks the giveaway is still open.
const CACHE_FOR: std::time::Duration = std::time::Duration::from_millis(500);

type Cache = std::sync::Mutex<std::collections::HashMap<Uuid, (std::time::Instant, Open)>>;

/// The giveaway's row as entries need it, from this node's short-lived copy.
async fn open(live: &Live, giveaway_id: Uuid) -> Result<Open> {
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let now = std::time::Instant::now();
    if let Some((at, row)) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&giveaway_id) {
        if now.duration_since(*at) < CACHE_FOR && row.closes_at > chrono::Utc::now() {
            return Ok(row.clone());
        }
    }
    let row: Open = sqlx::query_as(
        "select session_id, status, eligibility, closes_at, status = 'open' and now() < closes_at as open_now, seed
           from giveaway where giveaway_id = $1",
    )
    .bind(giveaway_id)
    .fetch_optional(live.db())
    .await?
    .ok_or(Error::NotFound("giveaway"))?;
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() > 1000 {
        map.retain(|_, (at, _)| now.duration_since(*at) < CACHE_FOR);
    }
    map.insert(giveaway_id, (now, row.clone()));
    Ok(row)
}

async fn existing(live: &Live, giveaway_id: Uuid, user: &str) -> Result<Option<Entry>> {
    let row: Option<(String, DateTime<Utc>)> = sqlx::query_as(
        "select entry_id, entered_at from giveaway_entry where giveaway_id = $1 and user_id = $2",
    )
    .bind(giveaway_id)
    .bind(user)
    .fetch_optional(live.db())
    .await?;
    Ok(row.map(|(entry_id, entered_at)| Entry {
        giveaway_id,
        entry_id,
        entered_at,
        replayed: true,
    }))
}

/// The 32 bytes of a giveaway's seed (the table checks the length).
#[derive(Clone)]
struct Seed([u8; 32]);

impl TryFrom<Vec<u8>> for Seed {
    type Error = String;
    fn try_from(bytes: Vec<u8>) -> std::result::Result<Self, String> {
        let len = bytes.len();
        bytes
            .try_into()
            .map(Seed)
            .map_err(|_| format!("a giveaway seed of {len} bytes"))
    }
}

fn closed(status: Status, closes_at: DateTime<Utc>) -> Error {
    let message = match status {
        Status::Voided => "the giveaway was voided".to_string(),
        _ => format!("entries closed at {}", closes_at.to_rfc3339()),
    };
    Error::conflict("giveaway_closed", message)
}
