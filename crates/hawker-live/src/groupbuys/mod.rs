//! Live group buys (Pinduoduo-style): the host opens a group buy on a lineup
//! item with price tiers by participants, a minimum group size, a
//! countdown, a per-buyer cap and a stock; viewers join with a quantity;
//! when the countdown ends, either every participant pays the final tier's
//! price (one order each, created in one settlement), or nobody is charged
//! and the units go back.
//!
//! The path of a join (entry → gate → batch → events):
//! - [`join`] (HTTP `POST /v1/group-buys/{id}/joins`): who may join, the
//!   request's checks, then [`gate::admit`] in Redis, which refuses an ended
//!   group buy, a buyer over the cap, a join past the stock and repeats
//!   without Postgres;
//! - `joining.rs` commits the node's admitted joins in batches, one
//!   transaction per group buy under its row lock (Postgres checks the stock
//!   and the cap again and decides), and answers each join after the commit;
//! - `events.rs` publishes `group_buy.progress` (coalesced, versioned);
//! - `ticker.rs` settles due group buys once across nodes, and releases
//!   reservations a dead node never settled.

pub(crate) mod events;
pub(crate) mod gate;
pub(crate) mod joining;
pub(crate) mod ticker;
pub mod tiers;

use chrono::{DateTime, Utc};
use hawker_agency::page::{self, PageQuery};
use hawker_catalog::campaign_skus::{self, TakeUnits, UnitSource};
use hawker_core::{Claims, Role};
use hawker_hub::Publication;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{Error, Live, Result};
use tiers::{Tier, Tiers};

/// A group buy's life: `running` → `succeeded` or `failed` when the
/// countdown ends, or `cancelled` by the host before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum GroupBuyStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// A group buy as stored, with its derived tier figures.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct GroupBuy {
    pub group_buy_id: Uuid,
    pub session_id: Uuid,
    pub lineup_item_id: Uuid,
    pub sku_id: Uuid,
    pub currency: String,
    #[schema(value_type = Vec<Tier>)]
    pub tiers: sqlx::types::Json<Vec<Tier>>,
    /// Participants needed for the group buy to succeed.
    pub min_participants: i32,
    pub per_buyer_cap: i32,
    /// Units the group buy can sell in all.
    pub stock: i32,
    pub duration_secs: i32,
    pub status: GroupBuyStatus,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// Distinct buyers who joined.
    pub participants: i32,
    /// Units joined, all participants together.
    pub units: i32,
    /// Participants who joined through another participant's invite code.
    pub invited: i32,
    /// Bumped by every batch of joins (the room snapshot's version).
    pub version: i64,
    /// Once succeeded: what every participant pays per unit.
    pub final_price_minor: Option<i64>,
    pub settled_at: Option<DateTime<Utc>>,
    pub cancel_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The index in `tiers` of the tier in force now (0: the first).
    #[sqlx(skip)]
    pub tier_index: i32,
    /// The unit price of the tier in force now.
    #[sqlx(skip)]
    pub price_minor: i64,
    /// The next tier to unlock; null at the last one.
    #[sqlx(skip)]
    pub next_tier: Option<Tier>,
    /// Whether `min_participants` is reached.
    #[sqlx(skip)]
    pub min_reached: bool,
}

pub(crate) const GROUP_BUY_COLUMNS: &str = "group_buy_id, session_id, lineup_item_id, sku_id, currency::text as currency, \
    tiers, min_participants, per_buyer_cap, stock, duration_secs, status, starts_at, ends_at, participants, units, \
    invited, version, final_price_minor, settled_at, cancel_reason, created_at";

impl GroupBuy {
    fn derive(mut self) -> GroupBuy {
        let tiers = Tiers::parse(self.tiers.0.clone(), i64::MAX).ok();
        if let Some(tiers) = tiers {
            let index = tiers.index_for(self.participants);
            self.tier_index = i32::try_from(index).unwrap_or(0);
            self.price_minor = self
                .final_price_minor
                .unwrap_or(tiers.tier_for(self.participants).price_minor);
            self.next_tier = if self.status == GroupBuyStatus::Running {
                tiers.next_after(self.participants)
            } else {
                None
            };
        }
        self.min_reached = self.participants >= self.min_participants;
        self
    }

    /// The room's `group_buy:<id>` snapshot field and the data of its events.
    pub fn room_view(&self) -> Value {
        json!({
            "group_buy_id": self.group_buy_id,
            "lineup_item_id": self.lineup_item_id,
            "sku_id": self.sku_id,
            "status": self.status,
            "currency": self.currency,
            "tiers": self.tiers.0,
            "min_participants": self.min_participants,
            "per_buyer_cap": self.per_buyer_cap,
            "stock": self.stock,
            "participants": self.participants,
            "units": self.units,
            "tier_index": self.tier_index,
            "price_minor": self.price_minor,
            "next_tier": self.next_tier,
            "min_reached": self.min_reached,
            "final_price_minor": self.final_price_minor,
            "ends_at": self.ends_at,
            "version": self.version,
        })
    }
}

/// The room snapshot field of a group buy.
pub(crate) fn state_key(id: Uuid) -> String {
    format!("group_buy:{id}")
}

/// Its version guard: the row's `version` (the end event uses `i64::MAX`).
pub(crate) fn version_key(id: Uuid) -> String {
    format!("v:group_buy:{id}")
}

/// A participant's invite code: 16 hex digits of
/// sha256("hawker-invite-v1:" ‖ group buy id ‖ ":" ‖ user). Stable, so
/// sharing it again gives the same link; it names no user.
pub fn invite_code(id: Uuid, user: &str) -> String {
    let digest = Sha256::digest(format!("hawker-invite-v1:{id}:{user}").as_bytes());
    hex::encode(digest)[..16].to_string()
}

/// A new group buy.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"link_number": 1,
    "tiers": [{"min_participants": 1, "price_minor": 3000}, {"min_participants": 10, "price_minor": 2500},
              {"min_participants": 50, "price_minor": 2000}],
    "min_participants": 10, "duration_secs": 300, "per_buyer_cap": 2, "stock": 500}))]
pub struct NewGroupBuy {
    /// The lineup item's link number.
    #[schema(minimum = 1, maximum = 9999)]
    pub link_number: i32,
    /// 1 to 10 tiers: the first from 1 participant, thresholds rising, prices falling.
    #[schema(min_items = 1, max_items = 10)]
    pub tiers: Vec<Tier>,
    /// Participants needed to succeed: 1 to 1000000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub min_participants: i32,
    /// The countdown: 10 to 3600 seconds.
    #[schema(minimum = 10, maximum = 3600)]
    pub duration_secs: i32,
    /// Most units one buyer may join with in all: 1 to 100.
    #[schema(minimum = 1, maximum = 100)]
    pub per_buyer_cap: i32,
    /// Units the group buy can sell, taken from the item's campaign now: 1 to 1000000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub stock: i32,
}

/// Opens a group buy (the session's host, its agency, an admin): takes its
/// stock from the item's campaign, and the room gets `group_buy.started`.
#[tracing::instrument(skip_all, fields(%session_id, caller = %claims.sub), err)]
pub async fn create(live: &Live, claims: &Claims, session_id: Uuid, new: NewGroupBuy) -> Result<GroupBuy> {
    let commerce = live.commerce();
    let access = hawker_commerce::access::require_host(live.db(), claims, session_id).await?;
    let max_price = commerce.config().max_price_minor;
    let tiers = Tiers::parse(new.tiers, max_price).map_err(|e| Error::invalid("bad_tiers", e.0))?;
    if !(1..=1_000_000).contains(&new.min_participants) {
        return Err(Error::invalid(
            "bad_min_participants",
            "min_participants must be 1 to 1000000",
        ));
    }
    if !(10..=3600).contains(&new.duration_secs) {
        return Err(Error::invalid("bad_duration", "duration_secs must be 10 to 3600"));
    }
    if !(1..=hawker_commerce::purchase::MAX_QUANTITY).contains(&new.per_buyer_cap) {
        return Err(Error::invalid("bad_cap", "per_buyer_cap must be 1 to 100"));
    }
    if !(1..=1_000_000).contains(&new.stock) {
        return Err(Error::invalid("bad_stock", "stock must be 1 to 1000000"));
    }
    let item = hawker_commerce::deals::by_link(commerce, session_id, new.link_number).await?;
    let sellable = campaign_skus::sellable(live.db(), access.agency_id, item.sku_id).await?;
    let id = Uuid::now_v7();
    let mut tx = live.db().begin().await?;
    // The row first, then the SKU's units: the order in which a settlement
    // or a cancel takes its locks (the group buy's row, then the SKU), so a
    // new group buy waiting on the unique index for a running one that is
    // being settled never holds the SKU that settlement needs.
    sqlx::query(
        "insert into group_buy (group_buy_id, session_id, lineup_item_id, sku_id, campaign_id, brand_id, currency,
                tiers, min_participants, per_buyer_cap, stock, duration_secs, starts_at, ends_at, created_by)
         select $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                 now.t, now.t + make_interval(secs => $12), $13
           from (select clock_timestamp() as t) as now",
    )
    .bind(id)
    .bind(session_id)
    .bind(item.lineup_item_id)
    .bind(item.sku_id)
    .bind(item.campaign_id)
    .bind(sellable.brand_id)
    .bind(&item.currency)
    .bind(sqlx::types::Json(tiers.lines()))
    .bind(new.min_participants)
    .bind(new.per_buyer_cap)
    .bind(new.stock)
    .bind(new.duration_secs)
    .bind(&claims.sub)
    .execute(&mut *tx)
    .await
    .map_err(|e| match hawker_core::error::violated_constraint(&e).as_deref() {
        Some("group_buy_one_running_per_item") => Error::conflict(
            "group_buy_running",
            "a group buy of this lineup item is already running",
        ),
        _ => e.into(),
    })?;
    // The lowest tier's price is held to the campaign's floor.
    let taken = campaign_skus::take_units(
        &mut tx,
        TakeUnits {
            campaign_id: item.campaign_id,
            sku_id: item.sku_id,
            quantity: new.stock,
            price_minor: Some(tiers.lowest_price()),
            source: UnitSource::GroupBuy(id),
            actor: &claims.sub,
        },
    )
    .await?;
    let row = sqlx::query_as::<_, GroupBuy>(&format!(
        "update group_buy set campaign_id = $2 where group_buy_id = $1 returning {GROUP_BUY_COLUMNS}"
    ))
    .bind(id)
    .bind(taken.campaign_id)
    .fetch_one(&mut *tx)
    .await?;
    let group_buy = row.derive();
    let view = group_buy.room_view();
    hawker_hub::durable::enqueue(
        &mut tx,
        session_id,
        &Publication::new("group_buy.started", view.clone())
            .set_state(state_key(id), view)
            .versioned(version_key(id), 0),
    )
    .await?;
    tx.commit().await?;
    crate::auctions::relay_now(live).await;
    Ok(group_buy)
}

pub(crate) async fn load(live: &Live, id: Uuid) -> Result<GroupBuy> {
    let row = sqlx::query_as::<_, GroupBuy>(&format!(
        "select {GROUP_BUY_COLUMNS} from group_buy where group_buy_id = $1"
    ))
    .bind(id)
    .fetch_optional(live.db())
    .await?
    .ok_or(Error::NotFound("group buy"))?;
    Ok(row.derive())
}

/// One group buy, with the caller's own part (units, invite code, order).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GroupBuyView {
    #[serde(flatten)]
    pub group_buy: GroupBuy,
    /// The caller's part, if they joined.
    pub you: Option<Participation>,
}

/// A participant's part in a group buy.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Participation {
    /// Units joined, all joins together.
    pub units: i32,
    pub joined_at: DateTime<Utc>,
    /// Share `?invite=<code>`: joins through it count as yours.
    pub invite_code: String,
    /// Participants who joined through your code.
    pub invited: i64,
    /// Your order, once the group buy succeeded.
    pub order_id: Option<Uuid>,
}

/// A group buy as `claims` sees it.
pub async fn get(live: &Live, claims: &Claims, id: Uuid) -> Result<GroupBuyView> {
    let group_buy = load(live, id).await?;
    let you = participation(live, id, &claims.sub).await?;
    Ok(GroupBuyView { group_buy, you })
}

async fn participation(live: &Live, id: Uuid, user: &str) -> Result<Option<Participation>> {
    Ok(sqlx::query_as::<_, Participation>(
        "select p.units, p.joined_at, p.invite_code, p.order_id,
                (select count(*) from group_buy_participant i
                  where i.group_buy_id = p.group_buy_id and i.invited_by = p.buyer_id) as invited
           from group_buy_participant p where p.group_buy_id = $1 and p.buyer_id = $2",
    )
    .bind(id)
    .bind(user)
    .fetch_optional(live.db())
    .await?)
}

/// A page of a session's group buys.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GroupBuyPage {
    pub items: Vec<GroupBuy>,
    /// Pass as `cursor` for the next page; absent (null) on the last page.
    pub next_cursor: Option<String>,
}

/// The session's group buys, oldest first, a page at a time.
pub async fn session_group_buys(live: &Live, session_id: Uuid, page: &PageQuery) -> Result<GroupBuyPage> {
    let limit = page.limit()?;
    let after = page.after_time_id()?;
    let rows = sqlx::query_as::<_, GroupBuy>(&format!(
        "select {GROUP_BUY_COLUMNS} from group_buy
          where session_id = $1 and ($2::timestamptz is null or (created_at, group_buy_id) > ($2, $3))
          order by created_at, group_buy_id limit $4"
    ))
    .bind(session_id)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(live.db())
    .await?;
    let rows: Vec<GroupBuy> = rows.into_iter().map(GroupBuy::derive).collect();
    let (items, next_cursor) = page::split(rows, limit, |g| page::time_id(g.created_at, g.group_buy_id));
    Ok(GroupBuyPage { items, next_cursor })
}

/// A join: a quantity, and optionally the invite code that brought the buyer.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"quantity": 1, "invite": "3f9a0c1d2e4b5a69"}))]
pub struct JoinGroupBuy {
    /// 1 to the group buy's `per_buyer_cap` (counting earlier joins).
    #[schema(minimum = 1, maximum = 100)]
    pub quantity: i32,
    /// Another participant's invite code (16 hex digits). Counts only on
    /// the buyer's first join, and never for oneself; an unknown code is
    /// ignored.
    #[serde(default)]
    #[schema(pattern = "^[0-9a-f]{16}$")]
    pub invite: Option<String>,
}

/// A join's answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Joined {
    pub group_buy_id: Uuid,
    /// This join's units.
    pub quantity: i32,
    /// The buyer's units, all joins together.
    pub units: i32,
    /// Participants after this join (at the time of its batch).
    pub participants: i32,
    /// The unit price of the tier in force after this join. Not what you
    /// pay: every participant pays the final tier's price at the end.
    pub price_minor: i64,
    pub ends_at: DateTime<Utc>,
    /// Your invite code: share it; joins through it count as yours.
    pub invite_code: String,
    /// This is the answer to an earlier request with the same key.
    pub replayed: bool,
}

/// Joins a group buy (viewers only; HTTP). Refused: 403 for the host side,
/// brands and admins; 400 `bad_quantity`, `bad_invite`, key errors; 409
/// `group_buy_ended`, `cap_exceeded`, `sold_out`, `idempotency_key_reused`,
/// `duplicate_request`; 404.
#[tracing::instrument(skip_all, fields(%id, %buyer), err(level = "debug"))]
pub async fn join(
    live: &Live,
    buyer: &str,
    role: Role,
    id: Uuid,
    idempotency_key: &str,
    request: JoinGroupBuy,
) -> Result<Joined> {
    if role != Role::Viewer {
        return Err(Error::forbidden(
            "only buyers join: hosts, agencies, brands and admins cannot",
        ));
    }
    hawker_commerce::purchase::validate_idempotency_key(idempotency_key)?;
    if !(1..=hawker_commerce::purchase::MAX_QUANTITY).contains(&request.quantity) {
        return Err(Error::invalid("bad_quantity", "quantity must be 1 to 100"));
    }
    if let Some(code) = &request.invite {
        if code.len() != 16
            || !code
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::invalid(
                "bad_invite",
                "invite must be 16 lower-case hex digits",
            ));
        }
    }
    joining::join(live, buyer, id, idempotency_key, request).await
}

/// `group_buy.join` from a socket: the same checks and answers as the
/// HTTP route, and `wrong_room` for a group buy of another session.
pub(crate) async fn socket_join(
    live: &Live,
    ctx: &hawker_hub::CommandContext,
    join: hawker_hub::GroupJoin,
) -> Result<hawker_hub::GroupJoinReply> {
    let member = &ctx.member;
    let session: Option<Uuid> =
        sqlx::query_scalar("select session_id from group_buy where group_buy_id = $1")
            .bind(join.group_buy_id)
            .fetch_optional(live.db())
            .await?;
    match session {
        None => return Err(Error::NotFound("group buy")),
        Some(s) if s != ctx.room => {
            return Err(Error::invalid(
                "wrong_room",
                "the group buy belongs to another session's room",
            ))
        }
        Some(_) => {}
    }
    let joined = self::join(
        live,
        &member.user,
        member.role,
        join.group_buy_id,
        &join.idempotency_key,
        JoinGroupBuy {
            quantity: join.quantity,
            invite: join.invite,
        },
    )
    .await?;
    Ok(hawker_hub::GroupJoinReply {
        joined: serde_json::to_value(&joined).map_err(anyhow::Error::from)?,
    })
}

/// Why the host cancels.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "wrong item"}))]
pub struct CancelGroupBuy {
    /// 1 to 500 characters, not blank, without control characters.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub reason: String,
}

/// Cancels a running group buy (host side): nobody is charged, the units go
/// back, each participant gets `group_buy.failed` with the reason.
pub async fn cancel(live: &Live, claims: &Claims, id: Uuid, body: CancelGroupBuy) -> Result<GroupBuy> {
    let reason = crate::host_reason(&body.reason)?;
    let group_buy = load(live, id).await?;
    hawker_commerce::access::require_host(live.db(), claims, group_buy.session_id).await?;
    ticker::close(
        live,
        id,
        ticker::Close::Cancel {
            reason,
            by: &claims.sub,
        },
    )
    .await?
    .ok_or_else(|| Error::conflict("group_buy_ended", "the group buy is already over"))
}
