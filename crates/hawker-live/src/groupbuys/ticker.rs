//! Time, on every node: settling group buys whose countdown ended, and
//! releasing join reservations a dead node never settled.
//!
//! A settlement claims its row with `for update skip locked` and a status
//! guard, and changes everything in one transaction: the orders (one per
//! participant, at the final tier's price) or none, the units no order holds
//! back to the SKU, each participant's private notice, and the room's
//! `group_buy.ended` (durable). So it happens exactly once across nodes,
//! and a node killed mid-countdown changes nothing: another node settles.

use hawker_catalog::campaign_skus::{self, GiveBack, Returning, UnitSource};
use hawker_commerce::sourced::{self, GroupBuyOrders};
use hawker_hub::{Notice, Publication};
use serde_json::json;
use uuid::Uuid;

use super::tiers::{Tier, Tiers};
use super::{gate, state_key, version_key, GroupBuy, GROUP_BUY_COLUMNS};
use crate::{Error, Live, Result};

/// Gate reservations are reconciled every this many ticks.
const RECONCILE_EVERY_TICKS: u64 = 8;

/// Tick `n` of the crate's clock ([`crate::clock`]): settles the group
/// buys whose countdown ended (`to_settle`), and every
/// [`RECONCILE_EVERY_TICKS`]th tick, while any runs (`running`), reconciles
/// their gates.
pub(crate) async fn tick(live: &Live, n: u64, to_settle: bool, running: bool) {
    if to_settle {
        if let Err(e) = settle_due(live).await {
            tracing::debug!(error = %e, "group buy settlement deferred");
        }
    }
    if running && n % RECONCILE_EVERY_TICKS == 0 {
        if let Err(e) = reconcile_running(live).await {
            tracing::debug!(error = %e, "group buy gate reconciliation deferred");
        }
    }
}

async fn settle_due(live: &Live) -> Result<()> {
    let due: Vec<Uuid> = sqlx::query_scalar(
        "select group_buy_id from group_buy where status = 'running' and ends_at <= now() order by ends_at limit 20",
    )
    .fetch_all(live.db())
    .await?;
    for id in due {
        close(live, id, Close::Countdown).await?;
    }
    Ok(())
}

async fn reconcile_running(live: &Live) -> Result<()> {
    let running: Vec<Uuid> =
        sqlx::query_scalar("select group_buy_id from group_buy where status = 'running'")
            .fetch_all(live.db())
            .await?;
    for id in running {
        gate::reconcile(live, id).await?;
    }
    Ok(())
}

/// Why a group buy closes.
pub(crate) enum Close<'a> {
    /// Its countdown ended: it succeeds if the minimum was reached.
    Countdown,
    /// The host called it off.
    Cancel { reason: &'a str, by: &'a str },
}

#[derive(sqlx::FromRow)]
struct Locked {
    session_id: Uuid,
    lineup_item_id: Uuid,
    sku_id: Uuid,
    campaign_id: Option<Uuid>,
    currency: String,
    tiers: sqlx::types::Json<Vec<Tier>>,
    min_participants: i32,
    stock: i32,
    participants: i32,
}

/// Closes one running group buy (once across nodes); `None` when it is not
/// running, or not due for a countdown close, or another node holds it.
pub(crate) async fn close(live: &Live, id: Uuid, why: Close<'_>) -> Result<Option<GroupBuy>> {
    let countdown = matches!(why, Close::Countdown);
    let mut tx = live.db().begin().await?;
    let locked: Option<Locked> = sqlx::query_as(
        "select session_id, lineup_item_id, sku_id, campaign_id, currency::text as currency, tiers,
                min_participants, stock, participants
           from group_buy
          where group_buy_id = $1 and status = 'running' and (not $2 or ends_at <= now())
          for update skip locked",
    )
    .bind(id)
    .bind(countdown)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(g) = locked else {
        return Ok(None);
    };
    let participants: Vec<(String, i32)> = sqlx::query_as(
        "select buyer_id, units from group_buy_participant where group_buy_id = $1 order by joined_at, buyer_id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let tiers = Tiers::parse(g.tiers.0, i64::MAX)
        .map_err(|e| Error::Internal(anyhow::anyhow!("stored tiers refused: {}", e.0)))?;
    let succeeded = countdown && g.participants >= g.min_participants && !participants.is_empty();
    let actor = match why {
        Close::Countdown => "scheduler",
        Close::Cancel { by, .. } => by,
    };
    let mut sold = 0;
    let mut notices = Vec::with_capacity(participants.len());
    if succeeded {
        let price = tiers.tier_for(g.participants).price_minor;
        let orders = sourced::create_group_buy_orders(
            live.commerce(),
            &mut tx,
            GroupBuyOrders {
                group_buy_id: id,
                session_id: g.session_id,
                lineup_item_id: g.lineup_item_id,
                sku_id: g.sku_id,
                unit_price_minor: price,
                currency: &g.currency,
                participants: &participants,
            },
        )
        .await?;
        let (buyers, order_ids): (Vec<String>, Vec<Uuid>) = orders.into_iter().unzip();
        sqlx::query(
            "update group_buy_participant p set order_id = u.order_id
               from unnest($2::text[], $3::uuid[]) as u(buyer_id, order_id)
              where p.group_buy_id = $1 and p.buyer_id = u.buyer_id",
        )
        .bind(id)
        .bind(&buyers)
        .bind(&order_ids)
        .execute(&mut *tx)
        .await?;
        for ((buyer, units), order_id) in participants.iter().zip(&order_ids) {
            sold += units;
            notices.push(
                Notice::new(
                    buyer,
                    "group_buy.succeeded",
                    json!({
                        "group_buy_id": id,
                        "order_id": order_id,
                        "quantity": units,
                        "unit_price_minor": price,
                        "amount_minor": price.saturating_mul(i64::from(*units)),
                        "currency": g.currency,
                        "participants": g.participants,
                    }),
                )
                .in_session(g.session_id),
            );
        }
        sqlx::query(
            "update group_buy set status = 'succeeded', final_price_minor = $2, settled_at = now()
              where group_buy_id = $1",
        )
        .bind(id)
        .bind(price)
        .execute(&mut *tx)
        .await?;
    } else {
        let reason = match why {
            Close::Countdown => "min_not_reached".to_string(),
            Close::Cancel { reason, .. } => reason.to_string(),
        };
        for (buyer, units) in &participants {
            notices.push(
                Notice::new(
                    buyer,
                    "group_buy.failed",
                    json!({
                        "group_buy_id": id,
                        "quantity": units,
                        "reason": if countdown { "min_not_reached" } else { "cancelled" },
                        "participants": g.participants,
                        "min_participants": g.min_participants,
                    }),
                )
                .in_session(g.session_id),
            );
        }
        sqlx::query(
            "update group_buy set status = $2, settled_at = now(),
                    cancel_reason = case when $2 = 'cancelled' then $3 end
              where group_buy_id = $1",
        )
        .bind(id)
        .bind(if countdown { "failed" } else { "cancelled" })
        .bind(&reason)
        .execute(&mut *tx)
        .await?;
    }
    // What no order holds goes back to the SKU, under the campaign it came from.
    let unsold = g.stock - sold;
    if unsold > 0 {
        campaign_skus::give_back(
            &mut tx,
            GiveBack {
                campaign_id: g.campaign_id,
                sku_id: g.sku_id,
                units: unsold,
                why: Returning::Unsold,
                source: UnitSource::GroupBuy(id),
                actor,
            },
        )
        .await?;
    }
    for notice in &notices {
        live.hub().enqueue_notice(&mut tx, notice).await?;
    }
    let group_buy = sqlx::query_as::<_, GroupBuy>(&format!(
        "select {GROUP_BUY_COLUMNS} from group_buy where group_buy_id = $1"
    ))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?
    .derive();
    let mut view = group_buy.room_view();
    view["outcome"] = json!(group_buy.status);
    if let Some(reason) = &group_buy.cancel_reason {
        view["reason"] = json!(reason);
    }
    hawker_hub::durable::enqueue(
        &mut tx,
        g.session_id,
        &Publication::new("group_buy.ended", view)
            .remove_state(state_key(id))
            .versioned(version_key(id), i64::MAX),
    )
    .await?;
    tx.commit().await?;
    if let Err(e) = gate::mark_ended(live, id).await {
        tracing::debug!(error = %e, "group buy gate not marked ended; batches refuse late joins");
    }
    crate::auctions::relay_now(live).await;
    if let Err(e) = live.hub().relay_notices().await {
        tracing::debug!(error = %e, "notices left to the relay");
    }
    tracing::info!(group_buy_id = %id, status = ?group_buy.status, participants = g.participants, "group buy settled");
    Ok(Some(group_buy))
}
