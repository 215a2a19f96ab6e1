//! Coupon drops on time: dropped at `drop_at`, ended when the claim window
//! closes, each exactly once across nodes.

use serde_json::json;
use uuid::Uuid;

use super::drop::{drop_rows, CouponDrop, DROP_COLUMNS};
use crate::stock::coupon_remaining_key;
use crate::Commerce;
use hawker_hub::Publication;

/// Drops fired or ended per scheduler pass.
const FIRE_BATCH: i64 = 100;

/// Drops the coupons whose time has come and ends the drops whose claim
/// window has passed, each exactly once across nodes (rows are claimed with
/// `for update skip locked` and changed in the transaction that queues their
/// room events). Called by every node's scheduler at each tick whose due
/// check finds a drop to fire or end; returns how many drops were fired or
/// ended.
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
            .remove_state(coupon_remaining_key(drop.coupon_drop_id))
            .versioned(
                format!("v:{}", coupon_remaining_key(drop.coupon_drop_id)),
                i64::MAX,
            ),
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
