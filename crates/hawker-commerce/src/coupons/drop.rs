//! A coupon drop: what the host sends and its checks, the row, its room
//! view, creating it and the moment it drops.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

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

/// A new coupon drop, as the host sends it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"total": 100, "discount_kind": "percent", "discount_value": 20,
    "min_spend_minor": 2000, "claim_window_secs": 300}))]
pub struct NewCouponDrop {
    /// How many coupons: 1 to 1,000,000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub total: i32,
    /// `percent` or `fixed`.
    #[schema(example = "percent", pattern = "^(percent|fixed)$")]
    pub discount_kind: String,
    /// Percent: 1 to 100. Fixed: minor units of `currency`, at least 1.
    #[schema(minimum = 1)]
    pub discount_value: i64,
    /// ISO 4217 code; required for `fixed`. When set with a restriction, it
    /// must be the restricted item's currency.
    #[serde(default)]
    #[schema(example = "USD", pattern = "^[A-Z]{3}$")]
    pub currency: Option<String>,
    /// The order subtotal (minor units, the order's currency) below which
    /// the coupon does not apply.
    #[serde(default)]
    #[schema(default = 0, minimum = 0)]
    pub min_spend_minor: i64,
    /// Only for this lineup item of the session.
    #[serde(default)]
    pub lineup_item_id: Option<Uuid>,
    /// Only for this deal of the session.
    #[serde(default)]
    pub deal_id: Option<Uuid>,
    /// Claims one viewer may hold: 1 to 100.
    #[serde(default = "one")]
    #[schema(default = 1, minimum = 1, maximum = 100)]
    pub per_viewer_limit: i32,
    /// When the coupons drop (at most 7 days ahead). Omitted: now.
    #[serde(default)]
    pub drop_at: Option<DateTime<Utc>>,
    /// How long after the drop viewers may claim: 1 to 86,400 seconds.
    #[schema(minimum = 1, maximum = 86_400)]
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

pub(super) const DROP_COLUMNS: &str =
    "coupon_drop_id, session_id, total, claimed, total - claimed as remaining, \
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

    /// The snapshot key of the drop's room view.
    pub(super) fn state_key(&self) -> String {
        format!("coupon:{}", self.coupon_drop_id)
    }
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
pub(super) async fn drop_rows(
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
