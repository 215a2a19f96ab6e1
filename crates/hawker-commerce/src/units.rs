//! Units coming back from orders that will not be paid: an order expiring
//! (the scheduler) or cancelled by its buyer (`journey::cancel_order`). One
//! path for both, in the transaction that cancels the orders: the buyer's
//! units under the deal's cap, the deal's `sold` (while the deal runs, so the
//! units can be sold again) or the SKU's stock (once it has ended), and an
//! `order.expired` / `order.cancelled` room event; after the commit, the gate
//! and the room's `deal.stock` figure.

use std::collections::HashMap;

use hawker_hub::Publication;
use serde_json::json;
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

/// Gives back the units of `orders` (already cancelled in `tx`); `event` is
/// the room event per deal (`order.expired` or `order.cancelled`).
pub(crate) async fn give_back(
    tx: &mut Transaction<'_, Postgres>,
    orders: &[OrderUnits],
    event: &'static str,
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
        let (session_id, sku_id, quantity, sold, version, status): (Uuid, Uuid, i32, i32, i64, String) =
            sqlx::query_as(
                "update deal set sold = sold - $2, stock_version = stock_version + 1 where deal_id = $1
          returning session_id, sku_id, quantity, sold, stock_version, status",
            )
            .bind(deal_id)
            .bind(units)
            .fetch_one(&mut **tx)
            .await?;
        if status == "ended" {
            sqlx::query("update sku set stock_on_hand = stock_on_hand + $2 where sku_id = $1")
                .bind(sku_id)
                .bind(units)
                .execute(&mut **tx)
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
        hawker_hub::durable::enqueue(
            tx,
            session_id,
            &Publication::new(event, json!({ "deal_id": deal_id, "units_returned": units })),
        )
        .await?;
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
    /// new `deal.stock` figure (and the durable events are relayed now).
    pub(crate) async fn announce(self, c: &Commerce) {
        for (deal_id, buyer, quantity) in &self.gate {
            if let Err(e) = c.inner.gate.give_back(*deal_id, buyer, *quantity).await {
                tracing::warn!(error = %e, "units not returned to the gate; it is rebuilt when it is missing");
            }
        }
        for figure in self.figures {
            c.inner.stock.announce(figure);
        }
        if let Err(e) = c.hub().relay_durable().await {
            tracing::debug!(error = %e, "order events left to the relay");
        }
    }
}
