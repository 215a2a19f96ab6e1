//! Units coming back from orders that will not be paid: an order expiring
//! (the scheduler) or cancelled by its buyer (`journey::cancel_order`). One
//! path for both, in the transaction that cancels the orders: the buyer's
//! units under the deal's cap, the deal's `sold` (while the deal runs, so the
//! units can be sold again) or the SKU's stock through a catalog movement
//! (once it has ended); after the commit, the gate and the room's
//! `deal.stock` figure. The room hears no more than that figure: who let
//! which order go is the buyer's business (the sweeper sends the buyer a
//! private `order.expired` notice).
//!
//! Units of a deal that sold out go to its waitlist first, if anyone waits
//! ([`crate::waitlist::hold_returned`]): held for offers instead of going
//! back to the SKU.
//!
//! An auction's, a giveaway's or a group buy's order has no deal to return
//! to: its units go straight back to the SKU (and to the count of the lineup
//! item's campaign, under which the source took them), by a catalog
//! movement naming the source; there is no gate and no figure.

use std::collections::{BTreeMap, HashMap};

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::order::Source;
use crate::stock::{self, Figure};
use crate::Commerce;
use hawker_catalog::campaign_skus::{GiveBack, Returning, UnitSource};
use hawker_core::error::{Error, Result};

/// An order whose units come back.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct OrderUnits {
    pub source: Source,
    pub deal_id: Option<Uuid>,
    pub auction_id: Option<Uuid>,
    pub giveaway_id: Option<Uuid>,
    pub group_buy_id: Option<Uuid>,
    pub lineup_item_id: Uuid,
    pub sku_id: Uuid,
    pub buyer_id: String,
    pub quantity: i32,
}

/// The `customer_order` columns that make [`OrderUnits`].
pub(crate) const ORDER_UNITS_COLUMNS: &str =
    "source, deal_id, auction_id, giveaway_id, group_buy_id, lineup_item_id, sku_id, buyer_id, quantity";

/// What to tell the gate and the room once the transaction committed.
#[must_use = "call `announce` after the commit"]
pub(crate) struct UnitsBack {
    /// (deal, buyer, units) of deals still running: the gate takes them back.
    gate: Vec<(Uuid, String, i32)>,
    figures: Vec<Figure>,
}

/// Gives back the units of `orders` (already cancelled in `tx`); `actor`
/// names who let them go in the stock movement of an ended deal
/// (`payment_expired`, `cancelled_by_buyer`).
pub(crate) async fn give_back(
    tx: &mut Transaction<'_, Postgres>,
    orders: &[OrderUnits],
    actor: &'static str,
) -> Result<UnitsBack> {
    let mut per_deal: HashMap<Uuid, i32> = HashMap::new();
    let mut per_buyer: HashMap<(Uuid, String), i32> = HashMap::new();
    let mut sourced: Vec<&OrderUnits> = Vec::new();
    for o in orders {
        match (o.source, o.deal_id) {
            (Source::Deal, Some(deal_id)) => {
                *per_deal.entry(deal_id).or_default() += o.quantity;
                *per_buyer.entry((deal_id, o.buyer_id.clone())).or_default() += o.quantity;
            }
            _ => sourced.push(o),
        }
    }
    for ((deal_id, buyer), units) in &per_buyer {
        sqlx::query("update deal_buyer set units = units - $3 where deal_id = $1 and buyer_id = $2")
            .bind(deal_id)
            .bind(buyer)
            .bind(units)
            .execute(&mut **tx)
            .await?;
    }
    // Deals in id order, so two transactions giving units back never wait on each other in a cycle.
    let mut deals: Vec<(Uuid, i32)> = per_deal.into_iter().collect();
    deals.sort_unstable();
    let mut figures = Vec::new();
    let mut live = Vec::new();
    for (deal_id, units) in &deals {
        let (session_id, sku_id, quantity, sold, version, status, campaign_id): (
            Uuid,
            Uuid,
            i32,
            i32,
            i64,
            String,
            Option<Uuid>,
        ) = sqlx::query_as(
            "update deal set sold = sold - $2, stock_version = stock_version + 1 where deal_id = $1
          returning session_id, sku_id, quantity, sold, stock_version, status, campaign_id",
        )
        .bind(deal_id)
        .bind(units)
        .fetch_one(&mut **tx)
        .await?;
        if status == "ended" {
            // A sold-out deal's waitlist takes them first (held for offers).
            if crate::waitlist::hold_returned(tx, *deal_id, *units).await? {
                // The gate lowers the buyer's units (its stock stays shut).
                live.push(*deal_id);
                continue;
            }
            hawker_catalog::campaign_skus::give_back(
                tx,
                hawker_catalog::campaign_skus::GiveBack {
                    campaign_id,
                    sku_id,
                    units: *units,
                    why: Returning::OrderReleased,
                    source: UnitSource::Deal(*deal_id),
                    actor,
                },
            )
            .await?;
        } else {
            live.push(*deal_id);
            figures.push(stock::deal_stock(
                session_id,
                *deal_id,
                quantity - sold,
                quantity,
                version,
            ));
        }
    }
    // After the deal rows, as a deal ending locks its row and then its SKU.
    give_back_sourced(tx, &sourced, actor).await?;
    let gate = orders
        .iter()
        .filter_map(|o| {
            o.deal_id
                .filter(|d| live.contains(d))
                .map(|d| (d, o.buyer_id.clone(), o.quantity))
        })
        .collect();
    Ok(UnitsBack { gate, figures })
}

/// The units of auction and giveaway orders, back to their SKUs under the
/// lineup item's campaign; one movement per (source, SKU), in a fixed order
/// so two transactions never lock SKUs in opposite orders.
async fn give_back_sourced(
    tx: &mut Transaction<'_, Postgres>,
    orders: &[&OrderUnits],
    actor: &'static str,
) -> Result<()> {
    if orders.is_empty() {
        return Ok(());
    }
    let mut items: Vec<Uuid> = orders.iter().map(|o| o.lineup_item_id).collect();
    items.sort_unstable();
    items.dedup();
    let campaigns: HashMap<Uuid, Option<Uuid>> =
        sqlx::query_as("select lineup_item_id, campaign_id from lineup_item where lineup_item_id = any($1)")
            .bind(&items)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
    let mut per_source: BTreeMap<(Uuid, UnitSource, Option<Uuid>), i32> = BTreeMap::new();
    for o in orders {
        let source =
            crate::order::unit_source(o.source, [o.deal_id, o.auction_id, o.giveaway_id, o.group_buy_id])
                .ok_or_else(|| {
                    Error::Internal(anyhow::anyhow!(
                        "an order of source {:?} cannot give units back",
                        o.source
                    ))
                })?;
        let campaign_id = campaigns.get(&o.lineup_item_id).copied().flatten();
        *per_source.entry((o.sku_id, source, campaign_id)).or_default() += o.quantity;
    }
    for ((sku_id, source, campaign_id), units) in per_source {
        hawker_catalog::campaign_skus::give_back(
            tx,
            GiveBack {
                campaign_id,
                sku_id,
                units,
                why: Returning::OrderReleased,
                source,
                actor,
            },
        )
        .await?;
    }
    Ok(())
}

impl UnitsBack {
    /// After the commit: the gate takes the units back and the room gets the
    /// new `deal.stock` figure (and the buyer's notices are relayed now).
    pub(crate) async fn announce(self, c: &Commerce) {
        for (deal_id, buyer, quantity) in &self.gate {
            if let Err(e) = c.inner.gate.give_back(*deal_id, buyer, *quantity).await {
                tracing::warn!(error = %e, "units not returned to the gate; it is rebuilt when it is missing");
            }
        }
        for figure in self.figures {
            c.inner.stock.announce(figure);
        }
        if let Err(e) = c.hub().relay_notices().await {
            tracing::debug!(error = %e, "notices left to the relay");
        }
    }
}
