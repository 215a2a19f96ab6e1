//! Where an auction meets the catalog and the order path: its one unit
//! taken from the campaign allocation when it starts and given back when it
//! does not sell, and the winner's (or runner-up's) order, created through
//! `hawker_commerce::sourced` in the caller's transaction.

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
    let _ = (tx, auction_id, campaign_id, sku_id, reserve_minor, actor);
    Err(crate::Error::Internal(anyhow::anyhow!("stub")))
}

/// Gives the auction's unsold unit back (no sale, or voided).
pub(crate) async fn give_back_unit(
    tx: &mut PgConnection,
    auction_id: Uuid,
    campaign_id: Option<Uuid>,
    sku_id: Uuid,
    actor: &str,
) -> Result<()> {
    let _ = (tx, auction_id, campaign_id, sku_id, actor);
    Err(crate::Error::Internal(anyhow::anyhow!("stub")))
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
    let _ = (c, tx, o.auction_id, o.session_id, o.lineup_item_id, o.sku_id, o.buyer_id, o.price_minor, o.currency, o.idempotency_key);
    Err(crate::Error::Internal(anyhow::anyhow!("stub")))
}
