//! (being written by the coupons engineer — temporary signatures so the crate builds)
use uuid::Uuid;

use crate::{Commerce, CommerceError, CommerceResult};

pub fn discount_minor(kind: &str, value: i64, min_spend_minor: i64, subtotal_minor: i64) -> Option<i64> {
    if subtotal_minor < min_spend_minor {
        return None;
    }
    Some(match kind {
        "percent" => subtotal_minor * value.min(100) / 100,
        _ => value.min(subtotal_minor),
    })
}

pub async fn fire_due_drops(_c: &Commerce) -> anyhow::Result<usize> {
    Ok(0)
}

pub async fn claim(
    _c: &Commerce,
    _viewer_id: &str,
    _coupon_drop_id: Uuid,
) -> CommerceResult<serde_json::Value> {
    Err(CommerceError::NotFound("coupon drop"))
}
