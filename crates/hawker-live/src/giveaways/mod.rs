//! Provably fair giveaways.
//!
//! A giveaway's life, top-down:
//! - [`create`]: the host (or agency) starts it; the room gets
//!   `giveaway.started` with `seed_hash`, the commitment to a secret seed.
//!   An item prize takes its units from the campaign now ([`prizes`]).
//! - [`entry::enter`] (HTTP and `giveaway.enter`): one entry per user, with a
//!   pseudonymous entry id; the room sees the count (`giveaway.entries`,
//!   coalesced by [`ticker`]).
//! - [`ticker`] on every node: when the window closes, the entry list is
//!   frozen (`giveaway.closed`: count and hash); a moment later the draw
//!   ([`fair::draw`], a function of the seed and the frozen list only) picks
//!   the winners, skipping any who must be present and are not in the room
//!   on any node ([`hawker_hub::Hub::present`]); prizes are handed out in the
//!   transaction that records the draw, and `giveaway.drawn` reveals the seed.
//! - [`void`]: the host or agency calls it off with a reason.
//!
//! Keys: `<prefix>:giveaway:{<id>}:entries` (the live count),
//! `:entries_announced`, `:entries_gate` (see [`ticker`]).

pub mod entry;
pub mod fair;
mod prizes;
pub mod ticker;

use chrono::{DateTime, Duration, Utc};
use hawker_agency::page::{self, PageQuery};
use hawker_core::Claims;
use hawker_hub::{CommandContext, Enter, EnterReply, Publication};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{Error, Live, Result};

/// Most winners of one giveaway.
pub const MAX_WINNERS: i32 = 100;
/// Shortest and longest entry window (seconds).
pub const MIN_WINDOW_SECS: i64 = 1;
pub const MAX_WINDOW_SECS: i64 = 3600;

/// Who may enter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Eligibility {
    /// Any viewer in the room.
    Room,
    /// Only viewers with an order (not cancelled, not a giveaway's) in this session.
    Buyers,
}

/// Where a giveaway is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Status {
    /// Taking entries until `closes_at`.
    Open,
    /// The entry list is frozen and published; the draw follows.
    Closed,
    /// Winners drawn; the seed is revealed.
    Drawn,
    /// Called off by the host or agency (`void_reason`).
    Voided,
}

/// What each winner gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum PrizeKind {
    /// One unit of a lineup item, as a zero-amount paid order.
    Item,
    /// One coupon of a coupon drop of the session.
    Coupon,
}

/// A new giveaway, as the host sends it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"lineup_item_id": "0190b7a0-0000-7000-8000-00000000a001", "winners": 3,
    "entry_window_secs": 60, "eligibility": "room", "must_be_present": true}))]
pub struct NewGiveaway {
    /// The prize: a lineup item of the session (one unit per winner, taken
    /// from its campaign's allocation now). Exactly one of this and `coupon_drop_id`.
    #[serde(default)]
    pub lineup_item_id: Option<Uuid>,
    /// The prize: one coupon of this drop of the session per winner.
    #[serde(default)]
    pub coupon_drop_id: Option<Uuid>,
    /// 1 to 100.
    #[schema(minimum = 1, maximum = 100)]
    pub winners: i32,
    /// How long entries are taken: 1 to 3,600 seconds.
    #[schema(minimum = 1, maximum = 3600)]
    pub entry_window_secs: i64,
    /// `room` (default) or `buyers`.
    #[serde(default = "room")]
    pub eligibility: Eligibility,
    /// A winner not in the room (on any node) at the draw is skipped and
    /// the next candidate drawn. False if absent.
    #[serde(default)]
    pub must_be_present: bool,
}

fn room() -> Eligibility {
    Eligibility::Room
}

impl NewGiveaway {
    fn validate(&self) -> Result<()> {
        if self.lineup_item_id.is_some() == self.coupon_drop_id.is_some() {
            return Err(Error::invalid(
                "bad_prize",
                "give exactly one of lineup_item_id and coupon_drop_id",
            ));
        }
        if !(1..=MAX_WINNERS).contains(&self.winners) {
            return Err(Error::invalid(
                "bad_winners",
                format!("winners must be 1 to {MAX_WINNERS}"),
            ));
        }
        if !(MIN_WINDOW_SECS..=MAX_WINDOW_SECS).contains(&self.entry_window_secs) {
            return Err(Error::invalid(
                "bad_window",
                format!("entry_window_secs must be {MIN_WINDOW_SECS} to {MAX_WINDOW_SECS}"),
            ));
        }
        Ok(())
    }
}

/// A giveaway. The seed is shown once drawn or voided; the frozen list's
/// hash and count once closed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Giveaway {
    pub giveaway_id: Uuid,
    pub session_id: Uuid,
    pub prize_kind: PrizeKind,
    pub lineup_item_id: Option<Uuid>,
    pub sku_id: Option<Uuid>,
    pub coupon_drop_id: Option<Uuid>,
    pub winners: i32,
    pub eligibility: Eligibility,
    pub must_be_present: bool,
    pub opens_at: DateTime<Utc>,
    pub closes_at: DateTime<Utc>,
    pub status: Status,
    /// sha256 of the seed (hex): the commitment shown at the start.
    pub seed_hash: String,
    /// The 32-byte seed (hex), once drawn or voided.
    pub seed: Option<String>,
    /// Entries in the frozen list, once closed.
    pub entry_count: Option<i32>,
    /// The frozen list's hash (hex), once closed.
    pub entries_hash: Option<String>,
    pub closed_at: Option<DateTime<Utc>>,
    pub drawn_at: Option<DateTime<Utc>>,
    /// Winning entry ids in draw order, once drawn.
    #[schema(value_type = Option<Vec<String>>)]
    pub winner_entries: Option<sqlx::types::Json<Vec<String>>>,
    /// Candidates skipped as absent (must be present), in draw order, once drawn.
    #[schema(value_type = Option<Vec<String>>)]
    pub absent_entries: Option<sqlx::types::Json<Vec<String>>>,
    pub void_reason: Option<String>,
    pub voided_at: Option<DateTime<Utc>>,
    pub created_by: String,
}

const GIVEAWAY_SELECT: &str = "select g.giveaway_id, g.session_id, g.prize_kind, g.lineup_item_id, g.sku_id,
        g.coupon_drop_id, g.winners, g.eligibility, g.must_be_present, g.opens_at, g.closes_at, g.status,
        g.seed_hash, case when g.status in ('drawn', 'voided') then encode(g.seed, 'hex') end as seed,
        g.entry_count, g.entries_hash, g.closed_at, g.drawn_at, d.winners as winner_entries,
        d.absent as absent_entries, g.void_reason, g.voided_at, g.created_by
   from giveaway g left join giveaway_draw d using (giveaway_id)";

impl Giveaway {
    /// The giveaway as the room sees it (`giveaway:<id>` in the snapshot).
    pub fn room_view(&self) -> Value {
        json!({
            "giveaway_id": self.giveaway_id,
            "prize_kind": self.prize_kind,
            "lineup_item_id": self.lineup_item_id,
            "sku_id": self.sku_id,
            "coupon_drop_id": self.coupon_drop_id,
            "winners": self.winners,
            "eligibility": self.eligibility,
            "must_be_present": self.must_be_present,
            "opens_at": self.opens_at,
            "closes_at": self.closes_at,
            "status": self.status,
            "seed_hash": self.seed_hash,
            "entry_count": self.entry_count,
            "entries_hash": self.entries_hash,
        })
    }
}

/// A page of a session's giveaways.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GiveawayPage {
    pub items: Vec<Giveaway>,
    /// Pass as `cursor` for the next page; absent (null) on the last page.
    pub next_cursor: Option<String>,
}

/// The snapshot key of a giveaway.
pub(crate) fn state_key(giveaway_id: Uuid) -> String {
    format!("giveaway:{giveaway_id}")
}

/// Starts a giveaway (host, agency, admin). The room gets `giveaway.started`.
#[tracing::instrument(skip_all, fields(%session_id, caller = %claims.sub), err)]
pub async fn create(live: &Live, claims: &Claims, session_id: Uuid, new: NewGiveaway) -> Result<Giveaway> {
    new.validate()?;
    let db = live.db();
    hawker_commerce::access::require_host(db, claims, session_id).await?;
    let giveaway_id = Uuid::now_v7();
    let seed = fair::new_seed();
    let seed_hash = fair::seed_hash(&seed);
    let closes_at = Utc::now() + Duration::seconds(new.entry_window_secs);
    let mut tx = db.begin().await?;
    let (sku_id, campaign_id) = match (new.lineup_item_id, new.coupon_drop_id) {
        (Some(item), _) => {
            let row: Option<(Uuid, Option<Uuid>)> = sqlx::query_as(
                "select sku_id, campaign_id from lineup_item where lineup_item_id = $1 and session_id = $2",
            )
            .bind(item)
            .bind(session_id)
            .fetch_optional(&mut *tx)
            .await?;
            let (sku, campaign) = row.ok_or(Error::NotFound("lineup item"))?;
            (Some(sku), Some(campaign))
        }
        (None, Some(drop)) => {
            let found: Option<i32> = sqlx::query_scalar(
                "select total - claimed from coupon_drop where coupon_drop_id = $1 and session_id = $2",
            )
            .bind(drop)
            .bind(session_id)
            .fetch_optional(&mut *tx)
            .await?;
            let left = found.ok_or(Error::NotFound("coupon drop"))?;
            if left < new.winners {
                return Err(Error::conflict(
                    "coupon_exhausted",
                    format!("the drop has {left} coupons left, fewer than the winners"),
                ));
            }
            (None, None)
        }
        (None, None) => return Err(Error::invalid("bad_prize", "no prize")),
    };
    sqlx::query(
        "insert into giveaway (giveaway_id, session_id, prize_kind, lineup_item_id, sku_id, coupon_drop_id,
                winners, eligibility, must_be_present, closes_at, seed, seed_hash, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(giveaway_id)
    .bind(session_id)
    .bind(if sku_id.is_some() {
        PrizeKind::Item
    } else {
        PrizeKind::Coupon
    })
    .bind(new.lineup_item_id)
    .bind(sku_id)
    .bind(new.coupon_drop_id)
    .bind(new.winners)
    .bind(new.eligibility)
    .bind(new.must_be_present)
    .bind(closes_at)
    .bind(seed.as_slice())
    .bind(&seed_hash)
    .bind(&claims.sub)
    .execute(&mut *tx)
    .await?;
    if let (Some(sku), Some(campaign)) = (sku_id, campaign_id) {
        // The prizes' units come out of the campaign's allocation now.
        let taken = prizes::take(&mut tx, giveaway_id, campaign, sku, new.winners, &claims.sub).await?;
        sqlx::query("update giveaway set campaign_id = $2 where giveaway_id = $1")
            .bind(giveaway_id)
            .bind(taken)
            .execute(&mut *tx)
            .await?;
    }
    let giveaway = fetch(&mut tx, giveaway_id).await?;
    let view = giveaway.room_view();
    hawker_hub::durable::enqueue(
        &mut tx,
        session_id,
        &Publication::new("giveaway.started", view.clone()).set_state(state_key(giveaway_id), view),
    )
    .await?;
    tx.commit().await?;
    relay(live).await;
    Ok(giveaway)
}

/// Publishes the queued room events now (the ticker would, a moment later).
pub(crate) async fn relay(live: &Live) {
    if let Err(e) = live.hub().relay_durable().await {
        tracing::debug!(error = %e, "room events left to the relay");
    }
}

async fn fetch(conn: &mut sqlx::PgConnection, giveaway_id: Uuid) -> Result<Giveaway> {
    sqlx::query_as::<_, Giveaway>(&format!("{GIVEAWAY_SELECT} where g.giveaway_id = $1"))
        .bind(giveaway_id)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound("giveaway"))
}

/// One giveaway.
pub async fn get(live: &Live, giveaway_id: Uuid) -> Result<Giveaway> {
    let mut conn = live.db().acquire().await?;
    fetch(&mut conn, giveaway_id).await
}

/// The session's giveaways, a page at a time by (opens_at, giveaway_id).
pub async fn session_giveaways(live: &Live, session_id: Uuid, page: &PageQuery) -> Result<GiveawayPage> {
    let limit = page.limit()?;
    let after = page.after_time_id()?;
    let rows = sqlx::query_as::<_, Giveaway>(&format!(
        "{GIVEAWAY_SELECT}
          where g.session_id = $1 and ($2::timestamptz is null or (g.opens_at, g.giveaway_id) > ($2, $3))
          order by g.opens_at, g.giveaway_id limit $4"
    ))
    .bind(session_id)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(live.db())
    .await?;
    let (items, next_cursor) = page::split(rows, limit, |g| page::time_id(g.opens_at, g.giveaway_id));
    Ok(GiveawayPage { items, next_cursor })
}

/// The frozen entry list, published once the window has closed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"giveaway_id": "0190b7a0-0000-7000-8000-00000000b001", "status": "closed",
    "seed_hash": "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd", "entry_count": 2,
    "entries_hash": "5f1b3c…", "entries": ["0b6e…", "9a41…"]}))]
pub struct EntryList {
    pub giveaway_id: Uuid,
    pub status: Status,
    pub seed_hash: String,
    pub entry_count: i32,
    /// sha256 over the sorted entry ids, each followed by "\n" (hex).
    pub entries_hash: String,
    /// Every entry id, sorted ascending.
    pub entries: Vec<String>,
}

/// The frozen entry list; `giveaway_open` (409) while entries are taken.
pub async fn entries(live: &Live, giveaway_id: Uuid) -> Result<EntryList> {
    let giveaway = get(live, giveaway_id).await?;
    let (Some(entry_count), Some(entries_hash)) = (giveaway.entry_count, giveaway.entries_hash) else {
        return Err(Error::conflict(
            "giveaway_open",
            "the entry list is published when the entry window closes",
        ));
    };
    let entries: Vec<String> = sqlx::query_scalar(
        "select entry_id from giveaway_entry where giveaway_id = $1 order by entry_id collate \"C\"",
    )
    .bind(giveaway_id)
    .fetch_all(live.db())
    .await?;
    Ok(EntryList {
        giveaway_id,
        status: giveaway.status,
        seed_hash: giveaway.seed_hash,
        entry_count,
        entries_hash,
        entries,
    })
}

/// Why a giveaway is called off.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "the prize was damaged"}))]
pub struct VoidGiveaway {
    /// 1 to 500 characters; shown to the room.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub reason: String,
}

#[derive(sqlx::FromRow)]
struct Voided {
    session_id: Uuid,
    sku_id: Option<Uuid>,
    campaign_id: Option<Uuid>,
    winners: i32,
    seed: Vec<u8>,
}

/// Calls a giveaway off before its draw (host, agency, admin): units go
/// back, the room gets `giveaway.voided` with the reason (and the seed).
#[tracing::instrument(skip_all, fields(%giveaway_id, caller = %claims.sub), err)]
pub async fn void(live: &Live, claims: &Claims, giveaway_id: Uuid, body: VoidGiveaway) -> Result<Giveaway> {
    let reason = crate::host_reason(&body.reason)?;
    let before = get(live, giveaway_id).await?;
    hawker_commerce::access::require_host(live.db(), claims, before.session_id).await?;
    let mut tx = live.db().begin().await?;
    let row: Option<Voided> = sqlx::query_as(
        "update giveaway set status = 'voided', void_reason = $2, voided_by = $3, voided_at = now()
          where giveaway_id = $1 and status in ('open', 'closed')
      returning session_id, sku_id, campaign_id, winners, seed",
    )
    .bind(giveaway_id)
    .bind(reason)
    .bind(&claims.sub)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(Voided {
        session_id,
        sku_id,
        campaign_id,
        winners,
        seed,
    }) = row
    else {
        return Err(Error::conflict(
            "giveaway_over",
            "the giveaway has already been drawn or voided",
        ));
    };
    if let Some(sku) = sku_id {
        prizes::give_back(&mut tx, giveaway_id, campaign_id, sku, winners, &claims.sub).await?;
    }
    hawker_hub::durable::enqueue(
        &mut tx,
        session_id,
        &Publication::new(
            "giveaway.voided",
            json!({ "giveaway_id": giveaway_id, "reason": reason, "seed": hex::encode(seed) }),
        )
        .remove_state(state_key(giveaway_id))
        .remove_state(ticker::entries_state_key(giveaway_id)),
    )
    .await?;
    tx.commit().await?;
    relay(live).await;
    get(live, giveaway_id).await
}

/// `giveaway.enter` from a socket.
pub(crate) async fn socket_enter(live: &Live, ctx: &CommandContext, enter: Enter) -> Result<EnterReply> {
    let caller = entry::Caller {
        user: &ctx.member.user,
        role: ctx.member.role,
        can_host: ctx.member.can_host,
        room: Some(ctx.room),
    };
    let entry = entry::enter(live, &caller, enter.giveaway_id).await?;
    Ok(EnterReply {
        entry: serde_json::to_value(&entry).map_err(anyhow::Error::from)?,
    })
}
