//! Where an auction meets the catalog and the order path: its one unit
//! taken from the campaign allocation when it starts and given back when it
//! does not sell, and the winner's (or runner-up's) order, created through
//! `hawker_commerce::sourced` in the caller's transaction.

use hawker_catalog::campaign_skus::{self, GiveBack, Returning, TakeUnits, UnitSource};
use hawker_commerce::sourced::{self, OrderSource, SourcedOrder};
use hawker_commerce::Commerce;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::Result;

/// What the unit was taken under.
pub(crate) struct Took {
    pub campaign_id: Uuid,
    /// The campaign's floor for the SKU; none when the campaign allows below it.
    pub floor_minor: Option<i64>,
}

/// Takes the auction's unit. `reserve_minor`, when given, is held to the
/// campaign floor (400 `price_below_floor`).
pub(crate) async fn take_unit(
    tx: &mut PgConnection,
    auction_id: Uuid,
    campaign_id: Option<Uuid>,
    sku_id: Uuid,
    reserve_minor: Option<i64>,
    actor: &str,
) -> Result<Took> {
    let taken = campaign_skus::take_units(
        tx,
        TakeUnits {
            campaign_id,
            sku_id,
            quantity: 1,
            price_minor: reserve_minor,
            source: UnitSource::Auction(auction_id),
            actor,
        },
    )
    .await?;
    Ok(Took {
        campaign_id: taken.campaign_id,
        floor_minor: taken.floor_price_minor,
    })
}

/// Gives the auction's unsold unit back (no sale, or voided).
pub(crate) async fn give_back_unit(
    tx: &mut PgConnection,
    auction_id: Uuid,
    campaign_id: Option<Uuid>,
    sku_id: Uuid,
    actor: &str,
) -> Result<()> {
    campaign_skus::give_back(
        tx,
        GiveBack {
            campaign_id,
            sku_id,
            units: 1,
            why: Returning::Unsold,
            source: UnitSource::Auction(auction_id),
            actor,
        },
    )
    .await
}

/// An auction order to create.
pub(crate) struct AuctionOrder<'a> {
    pub auction_id: Uuid,
    pub session_id: Uuid,
    pub lineup_item_id: Uuid,
    pub sku_id: Uuid,
    pub buyer_id: &'a str,
    pub price_minor: i64,
    pub currency: &'a str,
    /// `auction:<id>:win` or `auction:<id>:second_chance`.
    pub idempotency_key: String,
}

/// Creates the order in the caller's transaction; returns its id.
pub(crate) async fn create_order(c: &Commerce, tx: &mut PgConnection, o: AuctionOrder<'_>) -> Result<Uuid> {
    let order = sourced::create_order(
        c,
        tx,
        SourcedOrder {
            source: OrderSource::Auction(o.auction_id),
            session_id: o.session_id,
            lineup_item_id: o.lineup_item_id,
            sku_id: o.sku_id,
            buyer_id: o.buyer_id,
            quantity: 1,
            unit_price_minor: o.price_minor,
            currency: o.currency,
            idempotency_key: o.idempotency_key,
        },
    )
    .await?;
    Ok(order.order_id)
}
