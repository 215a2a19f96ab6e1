//! Units coming back from orders that will not be paid: an order expiring
//! (the scheduler) or cancelled by its buyer (`journey::cancel_order`). One
//! path for both, in the transaction that cancels the orders: the buyer's
//! units under the deal's cap, the deal's `sold` (while the deal runs, so the
//! units can be sold again) or the SKU's stock through a catalog movement
//! (once it has ended); after the commit, the gate and the room's
//! `deal.stock` figure. The room hears no more than that figure: who let
//! which order go is the buyer's business (the sweeper sends the buyer a
//! private `order.expired` notice).

use std::collections::HashMap;

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::stock::{self, Figure};
use crate::Commerce;
use hawker_core::error::Result;

/// An order whose units come back.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct OrderUnits {
    pub deal_id: Uuid,
    pub buyer_id: String,
    pub quantity: i32,
}

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
    for o in orders {
        *per_deal.entry(o.deal_id).or_default() += o.quantity;
        *per_buyer.entry((o.deal_id, o.buyer_id.clone())).or_default() += o.quantity;
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
            hawker_catalog::campaign_skus::give_back(
                tx,
                hawker_catalog::campaign_skus::GiveBack {
                    campaign_id,
                    sku_id,
                    units: *units,
                    reason: hawker_catalog::stock::MovementReason::OrderReleased,
                    deal_id: *deal_id,
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
    let gate = orders
        .iter()
        .filter(|o| live.contains(&o.deal_id))
        .map(|o| (o.deal_id, o.buyer_id.clone(), o.quantity))
        .collect();
    Ok(UnitsBack { gate, figures })
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
