//! Coupon drops: the host announces N coupons for a moment of the stream;
//! viewers claim them during a window; a claimed coupon is applied (and
//! marked used) by the settlement writer when its owner buys.
//!
//! - **Exactly once across nodes.** A drop is a row in `coupon_drop`; every
//!   node's scheduler calls [`fire_due_drops`], which claims due rows with
//!   `for update skip locked` and changes them in the same transaction that
//!   queues their room events in the [`outbox`].
//! - **Never more claims than coupons.** A claim bumps `coupon_drop.claimed`
//!   with a conditional update (`claimed < total`), backed by the
//!   `coupon_drop_no_overclaim` check; one claim per viewer (or
//!   `per_viewer_limit`) is the `coupon_claim_per_viewer` unique key.
//! - **Cheap refusals.** Once a drop is exhausted, refusals are answered from
//!   a flag (in process, and `hawker:coupon:{id}:exhausted` in Redis for the
//!   other nodes) without touching Postgres. Exhaustion is final: claims are
//!   never given back.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::stock::Figure;
use crate::{access, Commerce};
use hawker_core::error::{Error, Result};
use hawker_hub::Publication;

/// Most coupons in one drop (the schema's bound).
pub const MAX_TOTAL: i32 = 1_000_000;
/// Longest claim window (the schema's bound).
pub const MAX_CLAIM_WINDOW_SECS: i32 = 86_400;
/// Most claims one viewer may hold on one drop (the schema's bound).
pub const MAX_PER_VIEWER: i32 = 100;
/// How far ahead a drop may be scheduled.
pub const MAX_SCHEDULE_AHEAD_SECS: i64 = 7 * 86_400;
/// A `drop_at` this far in the past is taken as "now" (clock skew, slow clients).
const PAST_LEEWAY_SECS: i64 = 30;
/// Drops fired or ended per scheduler pass.
const FIRE_BATCH: i64 = 100;

/// A new coupon drop, as the host sends it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"total": 100, "discount_kind": "percent", "discount_value": 20,
    "min_spend_minor": 2000, "claim_window_secs": 300}))]
pub struct NewCouponDrop {
    /// How many coupons: 1 to 1,000,000.
    pub total: i32,
    /// `percent` or `fixed`.
    #[schema(example = "percent")]
    pub discount_kind: String,
    /// Percent: 1 to 100. Fixed: minor units of `currency`.
    pub discount_value: i64,
    /// ISO 4217 code; required for `fixed`. When set with a restriction, it
    /// must be the restricted item's currency.
    #[serde(default)]
    #[schema(example = "USD")]
    pub currency: Option<String>,
    /// The order subtotal (minor units, the order's currency) below which
    /// the coupon does not apply.
    #[serde(default)]
    #[schema(default = 0)]
    pub min_spend_minor: i64,
    /// Only for this lineup item of the session.
    #[serde(default)]
    pub lineup_item_id: Option<Uuid>,
    /// Only for this deal of the session.
    #[serde(default)]
    pub deal_id: Option<Uuid>,
    /// Claims one viewer may hold: 1 to 100.
    #[serde(default = "one")]
    #[schema(default = 1)]
    pub per_viewer_limit: i32,
    /// When the coupons drop (at most 7 days ahead). Omitted: now.
    #[serde(default)]
    pub drop_at: Option<DateTime<Utc>>,
    /// How long after the drop viewers may claim: 1 to 86,400 seconds.
    pub claim_window_secs: i32,
}

fn one() -> i32 {
    1
}

fn is_currency(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

impl NewCouponDrop {
    /// Checks every field; `now` is the caller's clock.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<()> {
        if !(1..=MAX_TOTAL).contains(&self.total) {
            return Err(Error::invalid(
                "bad_total",
                format!("total must be 1 to {MAX_TOTAL}"),
            ));
        }
        match self.discount_kind.as_str() {
            "percent" => {
                if !(1..=100).contains(&self.discount_value) {
                    return Err(Error::invalid(
                        "bad_discount_value",
                        "a percent discount must be 1 to 100",
                    ));
                }
            }
            "fixed" => {
                if self.discount_value <= 0 {
                    return Err(Error::invalid(
                        "bad_discount_value",
                        "a fixed discount must be at least 1 minor unit",
                    ));
                }
                if self.currency.is_none() {
                    return Err(Error::invalid(
                        "bad_currency",
                        "a fixed discount needs a currency",
                    ));
                }
            }
            _ => {
                return Err(Error::invalid(
                    "bad_discount_kind",
                    "discount_kind must be `percent` or `fixed`",
                ))
            }
        }
        if let Some(currency) = &self.currency {
            if !is_currency(currency) {
                return Err(Error::invalid(
                    "bad_currency",
                    "currency must be three upper-case letters (ISO 4217)",
                ));
            }
        }
        if self.min_spend_minor < 0 {
            return Err(Error::invalid(
                "bad_min_spend",
                "min_spend_minor cannot be negative",
            ));
        }
        if !(1..=MAX_PER_VIEWER).contains(&self.per_viewer_limit) {
            return Err(Error::invalid(
                "bad_per_viewer_limit",
                format!("per_viewer_limit must be 1 to {MAX_PER_VIEWER}"),
            ));
        }
        if !(1..=MAX_CLAIM_WINDOW_SECS).contains(&self.claim_window_secs) {
            return Err(Error::invalid(
                "bad_claim_window",
                format!("claim_window_secs must be 1 to {MAX_CLAIM_WINDOW_SECS}"),
            ));
        }
        if let Some(at) = self.drop_at {
            let ahead = (at - now).num_seconds();
            if ahead < -PAST_LEEWAY_SECS {
                return Err(Error::invalid(
                    "bad_drop_at",
                    "drop_at is in the past; omit it to drop now",
                ));
            }
            if ahead > MAX_SCHEDULE_AHEAD_SECS {
                return Err(Error::invalid(
                    "bad_drop_at",
                    "drop_at may be at most 7 days ahead",
                ));
            }
        }
        Ok(())
    }
}

/// A coupon drop.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CouponDrop {
    pub coupon_drop_id: Uuid,
    pub session_id: Uuid,
    pub total: i32,
    pub claimed: i32,
    /// `total - claimed`.
    pub remaining: i32,
    /// `percent` or `fixed`.
    pub discount_kind: String,
    pub discount_value: i64,
    pub currency: Option<String>,
    pub min_spend_minor: i64,
    pub lineup_item_id: Option<Uuid>,
    pub deal_id: Option<Uuid>,
    pub per_viewer_limit: i32,
    pub drop_at: DateTime<Utc>,
    pub claim_window_secs: i32,
    /// `scheduled`, `dropped` (claims open until `claim_until`) or `ended`.
    pub status: String,
    pub dropped_at: Option<DateTime<Utc>>,
    /// `dropped_at + claim_window_secs`; set once dropped.
    pub claim_until: Option<DateTime<Utc>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

const DROP_COLUMNS: &str = "coupon_drop_id, session_id, total, claimed, total - claimed as remaining, \
    discount_kind, discount_value, currency, min_spend_minor, lineup_item_id, deal_id, per_viewer_limit, \
    drop_at, claim_window_secs, status, dropped_at, \
    dropped_at + claim_window_secs * interval '1 second' as claim_until, created_by, created_at";

impl CouponDrop {
    /// The drop as the room sees it (`coupon:<id>` in the snapshot). The live
    /// count is `coupon:<id>:remaining` (`coupon.remaining` events).
    pub fn room_view(&self) -> Value {
        json!({
            "coupon_drop_id": self.coupon_drop_id,
            "discount_kind": self.discount_kind,
            "discount_value": self.discount_value,
            "currency": self.currency,
            "min_spend_minor": self.min_spend_minor,
            "lineup_item_id": self.lineup_item_id,
            "deal_id": self.deal_id,
            "per_viewer_limit": self.per_viewer_limit,
            "total": self.total,
            "remaining": self.remaining,
            "drop_at": self.drop_at,
            "claim_until": self.claim_until,
            "status": self.status,
        })
    }

    fn state_key(&self) -> String {
        format!("coupon:{}", self.coupon_drop_id)
    }
}

fn remaining_key(coupon_drop_id: Uuid) -> String {
    format!("coupon:{coupon_drop_id}:remaining")
}

/// One viewer's claim on a drop.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CouponClaim {
    /// Pass this as `coupon_claim_id` when buying.
    pub coupon_claim_id: Uuid,
    pub coupon_drop_id: Uuid,
    pub viewer_id: String,
    /// 1 for the viewer's first claim on this drop, 2 for the second, ...
    pub seq: i32,
    pub claimed_at: DateTime<Utc>,
    /// Set when an order used it.
    pub used_at: Option<DateTime<Utc>>,
}

const CLAIM_COLUMNS: &str = "coupon_claim_id, coupon_drop_id, viewer_id, seq, claimed_at, used_at";

/// The discount a coupon gives on `subtotal_minor`, or `None` when the
/// subtotal is below the minimum spend. A percentage rounds down (in the
/// buyer's disfavour by less than one minor unit); no discount exceeds the
/// subtotal. The caller checks that the coupon applies (item, currency).
pub fn discount_minor(kind: &str, value: i64, min_spend_minor: i64, subtotal_minor: i64) -> Option<i64> {
    if subtotal_minor < min_spend_minor || subtotal_minor < 0 {
        return None;
    }
    let discount = match kind {
        // i128: `subtotal * percent` cannot overflow.
        "percent" => {
            let percent = i128::from(value.clamp(0, 100));
            i64::try_from(i128::from(subtotal_minor) * percent / 100).unwrap_or(subtotal_minor)
        }
        "fixed" => value.max(0),
        _ => return None,
    };
    Some(discount.min(subtotal_minor))
}

/// Creates a drop (hosts, their agency, admins). Without `drop_at` the
/// coupons drop at once, in the same transaction; with it the room receives
/// `coupon.scheduled` now and `coupon.dropped` at that time.
#[tracing::instrument(skip_all, fields(%session_id, total = req.total))]
pub async fn create_drop(
    c: &Commerce,
    claims: &hawker_core::Claims,
    session_id: Uuid,
    req: NewCouponDrop,
) -> Result<CouponDrop> {
    req.validate(Utc::now())?;
    access::require_host(c.db(), claims, session_id).await?;
    check_restriction(c, session_id, &req).await?;

    let mut tx = c.db().begin().await?;
    let mut drop: CouponDrop = sqlx::query_as(&format!(
        "insert into coupon_drop (coupon_drop_id, session_id, total, discount_kind, discount_value, currency,
                                  min_spend_minor, lineup_item_id, deal_id, per_viewer_limit, drop_at,
                                  claim_window_secs, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, coalesce($11, now()), $12, $13)
         returning {DROP_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(session_id)
    .bind(req.total)
    .bind(&req.discount_kind)
    .bind(req.discount_value)
    .bind(&req.currency)
    .bind(req.min_spend_minor)
    .bind(req.lineup_item_id)
    .bind(req.deal_id)
    .bind(req.per_viewer_limit)
    .bind(req.drop_at)
    .bind(req.claim_window_secs)
    .bind(&claims.sub)
    .fetch_one(&mut *tx)
    .await?;
    let in_future: bool = sqlx::query_scalar("select $1 > now()")
        .bind(drop.drop_at)
        .fetch_one(&mut *tx)
        .await?;
    if in_future {
        let view = drop.room_view();
        hawker_hub::durable::enqueue(
            &mut tx,
            session_id,
            &Publication::new("coupon.scheduled", view.clone()).set_state(drop.state_key(), view),
        )
        .await?;
    } else if let Some(dropped) = drop_rows(&mut tx, &[drop.coupon_drop_id]).await?.pop() {
        drop = dropped;
    }
    tx.commit().await?;
    metrics::counter!("hawker_coupon_drops_created_total").increment(1);
    if drop.status == "dropped" {
        // The room sees it now rather than on the next scheduler tick.
        if let Err(e) = c.hub().relay_durable().await {
            tracing::debug!(error = %e, "coupon.dropped left for the scheduler's relay");
        }
    }
    Ok(drop)
}

/// The restriction must be of this session; a currency must match it.
async fn check_restriction(c: &Commerce, session_id: Uuid, req: &NewCouponDrop) -> Result<()> {
    let mut restricted_currency: Option<String> = None;
    if let Some(lineup_item_id) = req.lineup_item_id {
        let currency: Option<String> = sqlx::query_scalar(
            "select s.currency from lineup_item l join sku s on s.sku_id = l.sku_id
              where l.lineup_item_id = $1 and l.session_id = $2",
        )
        .bind(lineup_item_id)
        .bind(session_id)
        .fetch_optional(c.db())
        .await?;
        restricted_currency = Some(currency.ok_or_else(|| {
            Error::invalid(
                "bad_restriction",
                "lineup_item_id is not in this session's lineup",
            )
        })?);
    }
    if let Some(deal_id) = req.deal_id {
        let deal: Option<(Uuid, String)> = sqlx::query_as(
            "select lineup_item_id, currency from deal where deal_id = $1 and session_id = $2",
        )
        .bind(deal_id)
        .bind(session_id)
        .fetch_optional(c.db())
        .await?;
        let (lineup_item_id, currency) =
            deal.ok_or_else(|| Error::invalid("bad_restriction", "deal_id is not a deal of this session"))?;
        if req.lineup_item_id.is_some_and(|l| l != lineup_item_id) {
            return Err(Error::invalid(
                "bad_restriction",
                "deal_id and lineup_item_id name different items",
            ));
        }
        restricted_currency = Some(currency);
    }
    if let (Some(currency), Some(restricted)) = (&req.currency, &restricted_currency) {
        if currency != restricted {
            return Err(Error::invalid(
                "currency_mismatch",
                format!("the restricted item is sold in {restricted}, not {currency}"),
            ));
        }
    }
    Ok(())
}

/// Marks `ids` (still `scheduled`) dropped and queues their `coupon.dropped`.
async fn drop_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    ids: &[Uuid],
) -> sqlx::Result<Vec<CouponDrop>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let dropped: Vec<CouponDrop> = sqlx::query_as(&format!(
        "update coupon_drop set status = 'dropped', dropped_at = now()
          where coupon_drop_id = any($1) and status = 'scheduled'
      returning {DROP_COLUMNS}"
    ))
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    for drop in &dropped {
        let view = drop.room_view();
        // The running count is not set here: a `coupon.remaining` figure
        // published before this event is relayed must not be overwritten.
        hawker_hub::durable::enqueue(
            tx,
            drop.session_id,
            &Publication::new("coupon.dropped", view.clone()).set_state(drop.state_key(), view),
        )
        .await?;
    }
    Ok(dropped)
}

/// Drops the coupons whose time has come and ends the drops whose claim
/// window has passed, each exactly once across nodes (rows are claimed with
/// `for update skip locked` and changed in the transaction that queues their
/// room events). Called by every node's scheduler on every tick; returns how
/// many drops were fired or ended.
pub async fn fire_due_drops(c: &Commerce) -> anyhow::Result<usize> {
    let mut tx = c.db().begin().await?;
    let due: Vec<Uuid> = sqlx::query_scalar(
        "select coupon_drop_id from coupon_drop
          where status = 'scheduled' and drop_at <= now()
          order by drop_at limit $1 for update skip locked",
    )
    .bind(FIRE_BATCH)
    .fetch_all(&mut *tx)
    .await?;
    let fired = drop_rows(&mut tx, &due).await?;
    let ended: Vec<CouponDrop> = sqlx::query_as(&format!(
        "update coupon_drop set status = 'ended'
          where coupon_drop_id in (
                select coupon_drop_id from coupon_drop
                 where status = 'dropped' and dropped_at + claim_window_secs * interval '1 second' <= now()
                 limit $1 for update skip locked)
      returning {DROP_COLUMNS}"
    ))
    .bind(FIRE_BATCH)
    .fetch_all(&mut *tx)
    .await?;
    for drop in &ended {
        hawker_hub::durable::enqueue(
            &mut tx,
            drop.session_id,
            &Publication::new(
                "coupon.ended",
                json!({
                    "coupon_drop_id": drop.coupon_drop_id,
                    "total": drop.total,
                    "claimed": drop.claimed,
                    "remaining": drop.remaining,
                    "reason": "window_closed",
                }),
            )
            .remove_state(drop.state_key())
            .remove_state(remaining_key(drop.coupon_drop_id))
            .versioned(format!("v:{}", remaining_key(drop.coupon_drop_id)), i64::MAX),
        )
        .await?;
    }
    tx.commit().await?;
    let changed = fired.len() + ended.len();
    if changed > 0 {
        metrics::counter!("hawker_coupon_drops_fired_total").increment(fired.len() as u64);
        for drop in &fired {
            tracing::info!(coupon_drop_id = %drop.coupon_drop_id, session_id = %drop.session_id, "coupons dropped");
        }
        c.hub().relay_durable().await?;
    }
    Ok(changed)
}

/// One drop.
pub async fn get_drop(c: &Commerce, coupon_drop_id: Uuid) -> Result<CouponDrop> {
    sqlx::query_as::<_, CouponDrop>(&format!(
        "select {DROP_COLUMNS} from coupon_drop where coupon_drop_id = $1"
    ))
    .bind(coupon_drop_id)
    .fetch_optional(c.db())
    .await?
    .ok_or(Error::NotFound("coupon drop"))
}

/// A viewer's claims on the drops of one session, oldest first.
pub async fn list_claims_for_viewer(
    c: &Commerce,
    viewer_id: &str,
    session_id: Uuid,
) -> Result<Vec<CouponClaim>> {
    Ok(sqlx::query_as::<_, CouponClaim>(
        "select c.coupon_claim_id, c.coupon_drop_id, c.viewer_id, c.seq, c.claimed_at, c.used_at
           from coupon_claim c join coupon_drop d on d.coupon_drop_id = c.coupon_drop_id
          where c.viewer_id = $1 and d.session_id = $2
          order by c.claimed_at, c.coupon_claim_id",
    )
    .bind(viewer_id)
    .bind(session_id)
    .fetch_all(c.db())
    .await?)
}

fn exhausted() -> Error {
    Error::conflict("coupon_exhausted", "every coupon of this drop has been claimed")
}

fn already_claimed(limit: i32) -> Error {
    let message = if limit == 1 {
        "you have already claimed this coupon".to_string()
    } else {
        format!("you already hold the {limit} claims allowed per viewer")
    };
    Error::conflict("coupon_already_claimed", message)
}

fn window_closed() -> Error {
    Error::conflict("coupon_window_closed", "the claim window of this drop has closed")
}

/// Claims a coupon for `viewer_id`. Refusals: `not_found`,
/// `coupon_not_dropped`, `coupon_window_closed`, `coupon_exhausted`,
/// `coupon_already_claimed`. Exhausted drops are refused from an in-process
/// flag, then a Redis flag shared by every node, without touching Postgres.
pub async fn claim(c: &Commerce, viewer_id: &str, coupon_drop_id: Uuid) -> Result<CouponClaim> {
    claim_with_flag(c, c.inner.gate.redis(), viewer_id, coupon_drop_id).await
}

/// [`claim`], checking and setting `hawker:coupon:{id}:exhausted` in Redis
/// too. Redis is only a shortcut: when it is slow or down, Postgres decides.
pub async fn claim_with_flag(
    c: &Commerce,
    redis: &redis::aio::ConnectionManager,
    viewer_id: &str,
    coupon_drop_id: Uuid,
) -> Result<CouponClaim> {
    if local_flag::is_exhausted(coupon_drop_id) {
        return refused(exhausted());
    }
    if let Some(ttl) = redis_flag::get(redis, coupon_drop_id).await {
        local_flag::set(coupon_drop_id, ttl);
        return refused(exhausted());
    }
    // The remaining count in Redis turns most of a stampede away before
    // Postgres; only about `total` claims (plus refusals) reach the database.
    let slot = redis_gate::take(c, redis, coupon_drop_id).await;
    if slot == Some(false) {
        return refused(exhausted());
    }
    let result = record(claim_in_postgres(c, viewer_id, coupon_drop_id).await);
    if slot == Some(true) && result.is_err() {
        redis_gate::give_back(redis, coupon_drop_id).await;
    }
    if matches!(&result, Err(e) if e.code() == "coupon_exhausted") {
        if let Some(ttl) = local_flag::ttl(coupon_drop_id) {
            redis_flag::set(redis, coupon_drop_id, ttl).await;
        }
    }
    result
}

fn refused<T>(e: Error) -> Result<T> {
    metrics::counter!("hawker_coupon_claims_total", "outcome" => e.code()).increment(1);
    Err(e)
}

fn record(result: Result<CouponClaim>) -> Result<CouponClaim> {
    let outcome = match &result {
        Ok(_) => "claimed",
        Err(e) => e.code(),
    };
    metrics::counter!("hawker_coupon_claims_total", "outcome" => outcome).increment(1);
    result
}

#[derive(sqlx::FromRow)]
struct DropState {
    session_id: Uuid,
    status: String,
    total: i32,
    claimed: i32,
    per_viewer_limit: i32,
    drop_at: DateTime<Utc>,
    /// Seconds left in the claim window (negative once closed); `None` before the drop.
    window_left_secs: Option<f64>,
}

impl DropState {
    /// Why a claim is refused whatever the viewer holds, if it is.
    fn refusal(&self) -> Option<Error> {
        if self.status == "scheduled" {
            return Some(Error::conflict(
                "coupon_not_dropped",
                format!("this coupon drops at {}", self.drop_at.to_rfc3339()),
            ));
        }
        if self.status == "ended" || self.window_left_secs.is_none_or(|left| left <= 0.0) {
            return Some(window_closed());
        }
        if self.claimed >= self.total {
            return Some(exhausted());
        }
        None
    }

    fn flag_ttl(&self) -> Duration {
        // Until the window closes: after that the window answers, not the flag.
        Duration::from_secs_f64(self.window_left_secs.unwrap_or(0.0).clamp(1.0, 2.0 * 86_400.0))
    }
}

const DROP_STATE: &str = "select session_id, status, total, claimed, per_viewer_limit, drop_at,
        extract(epoch from dropped_at + claim_window_secs * interval '1 second' - now())::float8
            as window_left_secs
   from coupon_drop where coupon_drop_id = $1";

#[tracing::instrument(skip_all, fields(%coupon_drop_id))]
async fn claim_in_postgres(c: &Commerce, viewer_id: &str, coupon_drop_id: Uuid) -> Result<CouponClaim> {
    let mut tx = c.db().begin().await?;
    let drop: DropState = sqlx::query_as(DROP_STATE)
        .bind(coupon_drop_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound("coupon drop"))?;
    if let Some(refusal) = drop.refusal() {
        if refusal.code() == "coupon_exhausted" {
            local_flag::set(coupon_drop_id, drop.flag_ttl());
        }
        return Err(refusal);
    }
    let held: i64 =
        sqlx::query_scalar("select count(*) from coupon_claim where coupon_drop_id = $1 and viewer_id = $2")
            .bind(coupon_drop_id)
            .bind(viewer_id)
            .fetch_one(&mut *tx)
            .await?;
    // The unique key (drop, viewer, seq) makes the limit a constraint: a
    // concurrent claim by the same viewer takes the same seq and loses.
    // `on conflict do nothing` waits for it, then tries the next seq.
    let mut claim: Option<CouponClaim> = None;
    let mut seq = i32::try_from(held).unwrap_or(i32::MAX).saturating_add(1);
    while claim.is_none() && seq <= drop.per_viewer_limit {
        claim = sqlx::query_as(&format!(
            "insert into coupon_claim (coupon_claim_id, coupon_drop_id, viewer_id, seq)
             values ($1, $2, $3, $4)
             on conflict on constraint coupon_claim_per_viewer do nothing
             returning {CLAIM_COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(coupon_drop_id)
        .bind(viewer_id)
        .bind(seq)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(ref db) if db.is_unique_violation() => {
                already_claimed(drop.per_viewer_limit)
            }
            other => other.into(),
        })?;
        seq += 1;
    }
    let Some(claim) = claim else {
        return Err(already_claimed(drop.per_viewer_limit));
    };
    // The drop's row is locked from here to the commit: keep this short.
    let claimed: Option<i32> = sqlx::query_scalar(
        "update coupon_drop set claimed = claimed + 1
          where coupon_drop_id = $1 and status = 'dropped' and claimed < total
            and now() < dropped_at + claim_window_secs * interval '1 second'
      returning claimed",
    )
    .bind(coupon_drop_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(claimed) = claimed else {
        // Lost the race for the last coupon, or the window closed meanwhile.
        tx.rollback().await?;
        let now: DropState = sqlx::query_as(DROP_STATE)
            .bind(coupon_drop_id)
            .fetch_one(c.db())
            .await?;
        let refusal = now.refusal().unwrap_or_else(exhausted);
        if refusal.code() == "coupon_exhausted" {
            local_flag::set(coupon_drop_id, now.flag_ttl());
        }
        return Err(refusal);
    };
    let remaining = drop.total - claimed;
    if remaining == 0 {
        // Final, so safe to set even if a figure was published first.
        hawker_hub::durable::enqueue(
            &mut tx,
            drop.session_id,
            &Publication::new(
                "coupon.exhausted",
                json!({ "coupon_drop_id": coupon_drop_id, "total": drop.total, "remaining": 0 }),
            )
            .set_state(
                remaining_key(coupon_drop_id),
                json!({ "coupon_drop_id": coupon_drop_id, "remaining": 0 }),
            ),
        )
        .await?;
    }
    tx.commit().await?;
    c.inner.stock.announce(Figure {
        session_id: drop.session_id,
        key: remaining_key(coupon_drop_id),
        event_type: "coupon.remaining",
        data: json!({ "coupon_drop_id": coupon_drop_id, "remaining": remaining }),
        version: i64::from(claimed),
    });
    if remaining == 0 {
        local_flag::set(coupon_drop_id, drop.flag_ttl());
    }
    Ok(claim)
}

/// Exhausted drops this process knows of, with when to forget them.
mod local_flag {
    use super::*;

    /// Bound on remembered drops; past it the expired ones go, then all.
    const MAX_ENTRIES: usize = 10_000;

    fn map() -> &'static Mutex<HashMap<Uuid, Instant>> {
        // A std Mutex: held for a lookup or an insert, never across an await.
        static MAP: OnceLock<Mutex<HashMap<Uuid, Instant>>> = OnceLock::new();
        MAP.get_or_init(|| Mutex::new(HashMap::new()))
    }

    pub(super) fn is_exhausted(id: Uuid) -> bool {
        ttl(id).is_some()
    }

    /// How long the flag still holds, if set.
    pub(super) fn ttl(id: Uuid) -> Option<Duration> {
        let map = map().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(&id)
            .and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
    }

    pub(super) fn set(id: Uuid, ttl: Duration) {
        let now = Instant::now();
        let mut map = map().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, until| *until > now);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(id, now + ttl);
    }
}

/// `hawker:coupon:{id}:left`: claims the gate may still let through to
/// Postgres. Built from Postgres when missing; Postgres' constraints decide.
mod redis_gate {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(250);
    const TAKE_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return -2 end
if tonumber(v) <= 0 then return -1 end
redis.call('DECR', KEYS[1])
return 1";

    fn key(id: Uuid) -> String {
        format!("hawker:coupon:{{{id}}}:left")
    }

    /// `Some(true)`: a slot was taken; `Some(false)`: none left; `None`: Redis
    /// could not say (down, slow): ask Postgres.
    pub(super) async fn take(c: &Commerce, redis: &redis::aio::ConnectionManager, id: Uuid) -> Option<bool> {
        let script = redis::Script::new(TAKE_LUA);
        for _ in 0..2 {
            let mut conn = redis.clone();
            let mut invocation = script.prepare_invoke();
            invocation.key(key(id));
            let reply: i64 = tokio::time::timeout(TIMEOUT, invocation.invoke_async(&mut conn))
                .await
                .ok()?
                .ok()?;
            match reply {
                1 => return Some(true),
                -1 => return Some(false),
                _ => {
                    let left: Option<i64> = sqlx::query_scalar(
                        "select (total - claimed)::bigint from coupon_drop where coupon_drop_id = $1 and status = 'dropped'",
                    )
                    .bind(id)
                    .fetch_optional(c.db())
                    .await
                    .ok()?;
                    // Not dropped (or unknown): let Postgres give the precise refusal.
                    let left = left?;
                    let mut set = redis::cmd("SET");
                    set.arg(key(id)).arg(left).arg("NX").arg("EX").arg(86_400);
                    let _: redis::RedisResult<Option<String>> =
                        tokio::time::timeout(TIMEOUT, set.query_async(&mut conn))
                            .await
                            .ok()?;
                }
            }
        }
        None
    }

    pub(super) async fn give_back(redis: &redis::aio::ConnectionManager, id: Uuid) {
        let mut conn = redis.clone();
        let mut incr = redis::cmd("INCR");
        incr.arg(key(id));
        let _ = tokio::time::timeout(TIMEOUT, incr.query_async::<i64>(&mut conn)).await;
    }
}

/// `hawker:coupon:{id}:exhausted`, shared by every node.
mod redis_flag {
    use super::*;

    /// Redis is a shortcut here: past this, ask Postgres.
    const TIMEOUT: Duration = Duration::from_millis(250);

    fn key(id: Uuid) -> String {
        format!("hawker:coupon:{{{id}}}:exhausted")
    }

    /// The flag's remaining time to live, if it is set.
    pub(super) async fn get(redis: &redis::aio::ConnectionManager, id: Uuid) -> Option<Duration> {
        let mut conn = redis.clone();
        let pttl: redis::RedisResult<i64> =
            match tokio::time::timeout(TIMEOUT, redis::cmd("PTTL").arg(key(id)).query_async(&mut conn)).await
            {
                Ok(result) => result,
                Err(_) => return None,
            };
        match pttl {
            // -2: no key; -1: no expiry (not written by us; trust it briefly).
            Ok(ms) if ms > 0 => Some(Duration::from_millis(ms.unsigned_abs())),
            Ok(-1) => Some(Duration::from_secs(1)),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "coupon flag unreadable; asking Postgres");
                None
            }
        }
    }

    pub(super) async fn set(redis: &redis::aio::ConnectionManager, id: Uuid, ttl: Duration) {
        let mut conn = redis.clone();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut command = redis::cmd("SET");
        command.arg(key(id)).arg(1).arg("PX").arg(ms);
        match tokio::time::timeout(TIMEOUT, command.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "coupon flag not written"),
            Err(_) => tracing::debug!("coupon flag not written: redis timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> NewCouponDrop {
        NewCouponDrop {
            total: 100,
            discount_kind: "percent".into(),
            discount_value: 20,
            currency: None,
            min_spend_minor: 0,
            lineup_item_id: None,
            deal_id: None,
            per_viewer_limit: 1,
            drop_at: None,
            claim_window_secs: 300,
        }
    }

    fn code(r: Result<()>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn a_percent_rounds_down_and_never_exceeds_the_subtotal() {
        assert_eq!(discount_minor("percent", 10, 0, 1999), Some(199));
        assert_eq!(discount_minor("percent", 15, 0, 999), Some(149));
        assert_eq!(discount_minor("percent", 100, 0, 1999), Some(1999));
        assert_eq!(discount_minor("percent", 1, 0, 99), Some(0));
        assert_eq!(discount_minor("percent", 50, 0, i64::MAX), Some(i64::MAX / 2));
    }

    #[test]
    fn a_fixed_discount_is_capped_at_the_subtotal() {
        assert_eq!(discount_minor("fixed", 500, 0, 1999), Some(500));
        assert_eq!(discount_minor("fixed", 5000, 0, 1999), Some(1999));
        assert_eq!(discount_minor("fixed", 500, 0, 0), Some(0));
    }

    #[test]
    fn below_the_minimum_spend_there_is_no_discount() {
        assert_eq!(discount_minor("fixed", 500, 2000, 1999), None);
        assert_eq!(discount_minor("percent", 10, 2000, 1999), None);
        assert_eq!(discount_minor("percent", 10, 2000, 2000), Some(200));
    }

    #[test]
    fn an_unknown_kind_or_negative_subtotal_gives_nothing() {
        assert_eq!(discount_minor("bogo", 10, 0, 1000), None);
        assert_eq!(discount_minor("fixed", 10, 0, -5), None);
    }

    #[test]
    fn a_valid_drop_passes() {
        assert_eq!(code(valid().validate(Utc::now())), "ok");
        let fixed = NewCouponDrop {
            discount_kind: "fixed".into(),
            discount_value: 500,
            currency: Some("USD".into()),
            drop_at: Some(Utc::now() + chrono::Duration::minutes(5)),
            ..valid()
        };
        assert_eq!(code(fixed.validate(Utc::now())), "ok");
    }

    #[test]
    fn each_bad_field_has_its_code() {
        let now = Utc::now();
        let cases = [
            (NewCouponDrop { total: 0, ..valid() }, "bad_total"),
            (
                NewCouponDrop {
                    total: MAX_TOTAL + 1,
                    ..valid()
                },
                "bad_total",
            ),
            (
                NewCouponDrop {
                    discount_kind: "bogo".into(),
                    ..valid()
                },
                "bad_discount_kind",
            ),
            (
                NewCouponDrop {
                    discount_value: 0,
                    ..valid()
                },
                "bad_discount_value",
            ),
            (
                NewCouponDrop {
                    discount_value: 101,
                    ..valid()
                },
                "bad_discount_value",
            ),
            (
                NewCouponDrop {
                    discount_kind: "fixed".into(),
                    discount_value: 500,
                    ..valid()
                },
                "bad_currency",
            ),
            (
                NewCouponDrop {
                    discount_kind: "fixed".into(),
                    discount_value: -1,
                    currency: Some("USD".into()),
                    ..valid()
                },
                "bad_discount_value",
            ),
            (
                NewCouponDrop {
                    currency: Some("usd".into()),
                    ..valid()
                },
                "bad_currency",
            ),
            (
                NewCouponDrop {
                    min_spend_minor: -1,
                    ..valid()
                },
                "bad_min_spend",
            ),
            (
                NewCouponDrop {
                    per_viewer_limit: 0,
                    ..valid()
                },
                "bad_per_viewer_limit",
            ),
            (
                NewCouponDrop {
                    per_viewer_limit: 101,
                    ..valid()
                },
                "bad_per_viewer_limit",
            ),
            (
                NewCouponDrop {
                    claim_window_secs: 0,
                    ..valid()
                },
                "bad_claim_window",
            ),
            (
                NewCouponDrop {
                    claim_window_secs: 86_401,
                    ..valid()
                },
                "bad_claim_window",
            ),
            (
                NewCouponDrop {
                    drop_at: Some(now - chrono::Duration::minutes(5)),
                    ..valid()
                },
                "bad_drop_at",
            ),
            (
                NewCouponDrop {
                    drop_at: Some(now + chrono::Duration::days(8)),
                    ..valid()
                },
                "bad_drop_at",
            ),
        ];
        for (drop, expected) in cases {
            assert_eq!(code(drop.validate(now)), expected, "{drop:?}");
        }
    }

    #[test]
    fn a_drop_at_slightly_in_the_past_means_now() {
        let now = Utc::now();
        let drop = NewCouponDrop {
            drop_at: Some(now - chrono::Duration::seconds(5)),
            ..valid()
        };
        assert_eq!(code(drop.validate(now)), "ok");
    }

    #[test]
    fn the_local_flag_expires() {
        let id = Uuid::new_v4();
        assert!(!local_flag::is_exhausted(id));
        local_flag::set(id, Duration::from_millis(30));
        assert!(local_flag::is_exhausted(id));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!local_flag::is_exhausted(id));
    }

    #[test]
    fn the_room_view_names_the_drop_and_its_window() {
        let drop = CouponDrop {
            coupon_drop_id: Uuid::nil(),
            session_id: Uuid::nil(),
            total: 100,
            claimed: 3,
            remaining: 97,
            discount_kind: "percent".into(),
            discount_value: 20,
            currency: None,
            min_spend_minor: 0,
            lineup_item_id: None,
            deal_id: None,
            per_viewer_limit: 1,
            drop_at: Utc::now(),
            claim_window_secs: 60,
            status: "dropped".into(),
            dropped_at: Some(Utc::now()),
            claim_until: Some(Utc::now()),
            created_by: "h".into(),
            created_at: Utc::now(),
        };
        let view = drop.room_view();
        assert_eq!(view["remaining"], 97);
        assert_eq!(view["discount_kind"], "percent");
        assert!(view["claim_until"].is_string());
        assert!(view.get("created_by").is_none());
    }
}
