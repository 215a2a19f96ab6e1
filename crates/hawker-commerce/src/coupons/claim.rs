//! A viewer's claim on a coupon drop: refused cheaply when the drop is
//! exhausted ([`super::gate`]), otherwise decided by Postgres — a conditional
//! bump of `coupon_drop.claimed` and a `coupon_claim` row whose
//! `(drop, viewer, seq)` key enforces the per-viewer limit.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use hawker_agency::page::{self, PageQuery};

use super::gate::{local_flag, redis_flag, redis_gate};
use crate::stock::{self, coupon_remaining_key};
use crate::Commerce;
use hawker_core::error::{Error, Result};
use hawker_hub::Publication;

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

/// Gives `viewer_id` one coupon of a drop inside the caller's transaction,
/// whatever the drop's claim window (a giveaway's prize): its next claim
/// (past the per-viewer limit too) if the drop has one left. `None` when
/// the drop is exhausted. The room's remaining count follows with the
/// drop's next claim or its end.
pub async fn grant(
    conn: &mut sqlx::PgConnection,
    coupon_drop_id: Uuid,
    viewer_id: &str,
) -> Result<Option<CouponClaim>> {
    let bumped: Option<i32> = sqlx::query_scalar(
        "update coupon_drop set claimed = claimed + 1 where coupon_drop_id = $1 and claimed < total returning claimed",
    )
    .bind(coupon_drop_id)
    .fetch_optional(&mut *conn)
    .await?;
    if bumped.is_none() {
        return Ok(None);
    }
    let claim = sqlx::query_as(&format!(
        "insert into coupon_claim (coupon_claim_id, coupon_drop_id, viewer_id, seq)
         values ($1, $2, $3, (select coalesce(max(seq), 0) + 1 from coupon_claim
                               where coupon_drop_id = $2 and viewer_id = $3))
         returning {CLAIM_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(coupon_drop_id)
    .bind(viewer_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some(claim))
}

/// A viewer's claims on the drops of one session, oldest first.
pub async fn list_claims_for_viewer(
    c: &Commerce,
    viewer_id: &str,
    session_id: Uuid,
    page: &PageQuery,
) -> Result<CouponClaimPage> {
    let limit = page.limit()?;
    let after = page.after_time_id()?;
    let rows = sqlx::query_as::<_, CouponClaim>(
        "select c.coupon_claim_id, c.coupon_drop_id, c.viewer_id, c.seq, c.claimed_at, c.used_at
           from coupon_claim c join coupon_drop d on d.coupon_drop_id = c.coupon_drop_id
          where c.viewer_id = $1 and d.session_id = $2
            and ($3::timestamptz is null or (c.claimed_at, c.coupon_claim_id) > ($3, $4))
          order by c.claimed_at, c.coupon_claim_id
          limit $5",
    )
    .bind(viewer_id)
    .bind(session_id)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(c.db())
    .await?;
    let (items, next_cursor) = page::split(rows, limit, |c| page::time_id(c.claimed_at, c.coupon_claim_id));
    Ok(CouponClaimPage { items, next_cursor })
}

/// A page of a viewer's coupon claims.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CouponClaimPage {
    pub items: Vec<CouponClaim>,
    /// Pass as `cursor` for the next page; absent (null) on the last page.
    pub next_cursor: Option<String>,
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
    redis: &hawker_redis::Redis,
    viewer_id: &str,
    coupon_drop_id: Uuid,
) -> Result<CouponClaim> {
    if local_flag::is_exhausted(coupon_drop_id) {
        return refused(exhausted());
    }
    if let Some(ttl) = redis_flag::get(redis, c.key_prefix(), coupon_drop_id).await {
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
        redis_gate::give_back(redis, c.key_prefix(), coupon_drop_id).await;
    }
    if matches!(&result, Err(e) if e.code() == "coupon_exhausted") {
        if let Some(ttl) = local_flag::ttl(coupon_drop_id) {
            redis_flag::set(redis, c.key_prefix(), coupon_drop_id, ttl).await;
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
                coupon_remaining_key(coupon_drop_id),
                json!({ "coupon_drop_id": coupon_drop_id, "remaining": 0 }),
            ),
        )
        .await?;
    }
    tx.commit().await?;
    c.inner.stock.announce(stock::coupon_remaining(
        drop.session_id,
        coupon_drop_id,
        remaining,
        claimed,
    ));
    if remaining == 0 {
        local_flag::set(coupon_drop_id, drop.flag_ttl());
    }
    Ok(claim)
}
