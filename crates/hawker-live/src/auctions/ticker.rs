//! Ending auctions on time, once across nodes, surviving restarts: when a
//! tick of the crate's clock ([`crate::clock`]) finds an auction due, the
//! node claims the due auctions
//! (`for update skip locked`, due by the database clock) and ends each in
//! one transaction that records the outcome, creates the winner's order (or
//! gives the unit back) and queues `auction.ended` and the winner's notice.
//! Whatever node is up does it; an auction whose node died is ended by
//! another at its next tick.

use chrono::{DateTime, Utc};
use hawker_hub::{Notice, Publication};
use serde_json::json;
use uuid::Uuid;

use super::{source, state_key, version_key, AuctionOutcome};
use sqlx::Acquire;

use crate::{Live, Result};

/// Auctions one node ends per transaction at most.
const CLAIM: i64 = 20;

/// One tick of the crate's clock ([`crate::clock`]) that found an auction
/// due: ends what is due, and relays its room events at once.
pub(crate) async fn tick(live: &Live) {
    match end_due(live).await {
        Ok(0) => {}
        Ok(_) => super::relay_now(live).await,
        Err(e) => tracing::debug!(error = %e, "ending auctions deferred"),
    }
}

#[derive(sqlx::FromRow)]
struct Due {
    auction_id: Uuid,
    session_id: Uuid,
    lineup_item_id: Uuid,
    sku_id: Uuid,
    campaign_id: Option<Uuid>,
    currency: String,
    reserve_minor: Option<i64>,
    price_minor: Option<i64>,
    leader_id: Option<String>,
    leader_name: Option<String>,
    bid_seq: i64,
    ends_at: DateTime<Utc>,
}

/// Ends the auctions due now; returns how many.
pub(crate) async fn end_due(live: &Live) -> Result<usize> {
    let mut tx = live.db().begin().await?;
    let due: Vec<Due> = sqlx::query_as(
        "select auction_id, session_id, lineup_item_id, sku_id, campaign_id, currency::text as currency,
                reserve_minor, price_minor, leader_id, leader_name, bid_seq, ends_at
           from auction where status = 'running' and ends_at <= clock_timestamp()
          order by ends_at limit $1 for update skip locked",
    )
    .bind(CLAIM)
    .fetch_all(&mut *tx)
    .await?;
    if due.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    let mut ended = Vec::with_capacity(due.len());
    for a in &due {
        // A savepoint each: an auction whose winner's order is refused
        // (its lineup item gone, say: nothing a retry would change) holds
        // up no other, and is voided with the refusal as its reason, so it
        // still ends once and the room is told.
        let mut one = tx.begin().await?;
        match end_one(live, &mut one, a).await {
            Ok(()) => {
                one.commit().await?;
                ended.push(a.auction_id);
            }
            Err(e) if e.is_unavailable() => return Err(e),
            Err(e) => {
                one.rollback().await?;
                tracing::warn!(auction_id = %a.auction_id, error = %e, "the winner's order was refused; auction voided");
                let reason = format!("the winner's order could not be made: {e}");
                let reason: String = reason.chars().take(500).collect();
                let mut one = tx.begin().await?;
                super::void_in(&mut one, a.auction_id, &reason, None).await?;
                one.commit().await?;
                ended.push(a.auction_id);
            }
        }
    }
    tx.commit().await?;
    for id in &ended {
        live.inner.auctions.forget(*id);
    }
    metrics::counter!("hawker_auctions_ended_total").increment(ended.len() as u64);
    Ok(ended.len())
}

/// Ends one claimed auction in `tx`: the outcome, the winner's order or the
/// unit given back, `auction.ended`, the winner's notice.
async fn end_one(live: &Live, tx: &mut sqlx::PgConnection, a: &Due) -> Result<()> {
    let outcome = match (a.price_minor, &a.leader_id) {
        (Some(price), Some(_)) if a.reserve_minor.is_none_or(|r| price >= r) => AuctionOutcome::Sold,
        (Some(_), Some(_)) => AuctionOutcome::ReserveNotMet,
        _ => AuctionOutcome::NoBids,
    };
    let mut order_id = None;
    match (outcome, &a.leader_id, a.price_minor) {
        (AuctionOutcome::Sold, Some(winner), Some(price)) => {
            let id = source::create_order(
                live.commerce(),
                &mut *tx,
                source::AuctionOrder {
                    auction_id: a.auction_id,
                    session_id: a.session_id,
                    lineup_item_id: a.lineup_item_id,
                    sku_id: a.sku_id,
                    buyer_id: winner,
                    price_minor: price,
                    currency: &a.currency,
                    idempotency_key: format!("auction:{}:win", a.auction_id),
                },
            )
            .await?;
            order_id = Some(id);
        }
        _ => {
            source::give_back_unit(&mut *tx, a.auction_id, a.campaign_id, a.sku_id, "auction_unsold").await?;
        }
    }
    let sold = outcome == AuctionOutcome::Sold;
    sqlx::query(
        "update auction set status = 'ended', outcome = $2, winner_id = $3, hammer_minor = $4, order_id = $5,
                ended_at = clock_timestamp()
          where auction_id = $1",
    )
    .bind(a.auction_id)
    .bind(outcome)
    .bind(if sold { a.leader_id.as_deref() } else { None })
    .bind(if sold { a.price_minor } else { None })
    .bind(order_id)
    .execute(&mut *tx)
    .await?;
    let data = json!({
        "auction_id": a.auction_id,
        "outcome": outcome,
        "winner_name": if sold { a.leader_name.clone() } else { None },
        "hammer_minor": if sold { a.price_minor } else { None },
        "price_minor": a.price_minor,
        "currency": a.currency,
        "bids": a.bid_seq,
        "ends_at": a.ends_at,
    });
    hawker_hub::durable::enqueue(
        &mut *tx,
        a.session_id,
        &Publication::new("auction.ended", data)
            .remove_state(state_key(a.auction_id))
            .versioned(version_key(a.auction_id), i64::MAX),
    )
    .await?;
    if let (true, Some(winner), Some(order_id)) = (sold, &a.leader_id, order_id) {
        live.hub()
            .enqueue_notice(
                &mut *tx,
                &Notice::new(
                    winner.as_str(),
                    "auction.won",
                    json!({ "auction_id": a.auction_id, "order_id": order_id,
                            "hammer_minor": a.price_minor, "currency": a.currency }),
                )
                .in_session(a.session_id),
            )
            .await?;
    }
    Ok(())
}
