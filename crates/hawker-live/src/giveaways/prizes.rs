//! What a giveaway takes and hands out, through commerce and the catalog:
//! an item prize's units (taken from the campaign's allocation at the start,
//! the ones not handed out given back), a winner's zero-amount order, a
//! winner's coupon.

use sqlx::PgConnection;
use uuid::Uuid;

use hawker_catalog::campaign_skus::{self, GiveBack, Returning, TakeUnits, UnitSource};
use hawker_commerce::sourced::{self, OrderSource, SourcedOrder};

use crate::{Live, Result};

/// Takes `units` of the lineup item's SKU for the giveaway; returns the
/// campaign they came under.
pub(crate) async fn take(
    conn: &mut PgConnection,
    giveaway_id: Uuid,
    campaign_id: Option<Uuid>,
    sku_id: Uuid,
    units: i32,
    actor: &str,
) -> Result<Uuid> {
    let taken = campaign_skus::take_units(
        conn,
        TakeUnits {
            campaign_id,
            sku_id,
            quantity: units,
            // Prizes are free: no floor applies.
            price_minor: None,
            source: UnitSource::Giveaway(giveaway_id),
            actor,
        },
    )
    .await?;
    Ok(taken.campaign_id)
}

/// Gives back `units` the giveaway did not hand out.
pub(crate) async fn give_back(
    conn: &mut PgConnection,
    giveaway_id: Uuid,
    campaign_id: Option<Uuid>,
    sku_id: Uuid,
    units: i32,
    actor: &str,
) -> Result<()> {
    if units <= 0 {
        return Ok(());
    }
    campaign_skus::give_back(
        conn,
        GiveBack {
            campaign_id,
            sku_id,
            units,
            why: Returning::Unsold,
            source: UnitSource::Giveaway(giveaway_id),
            actor,
        },
    )
    .await
}

/// A winner's order: one unit at no charge, created paid, in the caller's
/// transaction. Returns its id.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn winner_order(
    live: &Live,
    conn: &mut PgConnection,
    giveaway_id: Uuid,
    session_id: Uuid,
    lineup_item_id: Uuid,
    sku_id: Uuid,
    currency: &str,
    user: &str,
    entry_id: &str,
) -> Result<Uuid> {
    let order = sourced::create_order(
        live.commerce(),
        conn,
        SourcedOrder {
            source: OrderSource::Giveaway(giveaway_id),
            session_id,
            lineup_item_id,
            sku_id,
            buyer_id: user,
            quantity: 1,
            unit_price_minor: 0,
            currency,
            idempotency_key: format!("giveaway:{giveaway_id}:{entry_id}"),
        },
    )
    .await?;
    Ok(order.order_id)
}

/// A winner's coupon: one claim on the drop, if it has one left.
pub(crate) async fn winner_coupon(
    conn: &mut PgConnection,
    coupon_drop_id: Uuid,
    user: &str,
) -> Result<Option<Uuid>> {
    Ok(hawker_commerce::coupons::grant(conn, coupon_drop_id, user)
        .await?
        .map(|c| c.coupon_claim_id))
}
