//! Time: every node runs this loop. Each tick first asks Postgres, in one
//! query ([`due_now`]), which kinds of work are due, and runs only those
//! handlers; an idle tick is that one round trip. Each due row is claimed by
//! exactly one node (`for update skip locked`) and changed in the same
//! transaction that queues its room event, so deals start and end, drops
//! fire and orders expire once, on time, whichever nodes are up.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::deals::{end_deal_tx, Deal, DEAL_COLUMNS};
use crate::units::{self, OrderUnits, ORDER_UNITS_COLUMNS};
use crate::Commerce;
use hawker_hub::{Notice, Publication};
use serde_json::json;

/// Runs every `commerce.scheduler_tick_ms` until `shutdown`.
pub async fn run(c: Commerce, shutdown: CancellationToken) {
    let tick = Duration::from_millis(c.config().scheduler_tick_ms);
    let mut interval = hawker_core::ticks::interval(tick);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        n += 1;
        // A failed check hides no work: every handler runs, as if all were due.
        let due = due_now(&c).await.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "due check failed; running every handler");
            DueNow::all()
        });
        if due.deals_to_start {
            if let Err(e) = start_due_deals(&c).await {
                tracing::debug!(error = %e, "starting deals deferred");
            }
        }
        if due.deals_to_end {
            if let Err(e) = end_due_deals(&c).await {
                tracing::debug!(error = %e, "ending deals deferred");
            }
        }
        if due.coupon_drops {
            if let Err(e) = crate::coupons::fire_due_drops(&c).await {
                tracing::debug!(error = %e, "coupon drops deferred");
            }
        }
        let mut expired = 0;
        if due.orders_to_expire {
            match expire_orders(&c).await {
                Ok(count) => expired = count,
                Err(e) => tracing::debug!(error = %e, "order expiry deferred"),
            }
        }
        // Units of the orders just expired may have gone to a waitlist
        // (`deal.held`): they are offered in this same tick, as before.
        if due.waitlists || expired > 0 {
            if let Err(e) = crate::waitlist::tick(&c).await {
                tracing::debug!(error = %e, "waitlists deferred");
            }
        }
        // Every ~5 s: release reservations whose settlement never happened.
        if n % (5000 / c.config().scheduler_tick_ms.max(1)).max(1) == 0 {
            let older_than = Duration::from_secs(c.config().reservation_timeout_secs);
            if let Err(e) = c.inner.gate.reconcile(older_than).await {
                tracing::debug!(error = %e, "reservation reconciliation deferred");
            }
        }
    }
}

/// Which of the scheduler's handlers have work due, by Postgres' clock.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
struct DueNow {
    deals_to_start: bool,
    deals_to_end: bool,
    coupon_drops: bool,
    orders_to_expire: bool,
    waitlists: bool,
}

impl DueNow {
    /// Every handler runs (the check failed).
    fn all() -> DueNow {
        DueNow {
            deals_to_start: true,
            deals_to_end: true,
            coupon_drops: true,
            orders_to_expire: true,
            waitlists: true,
        }
    }
}

/// Asks, in one round trip, whether each handler of the tick has anything to
/// do. Each check covers at least the rows its handler would claim (the
/// same conditions) and reads the partial index that handler's query reads
/// (`deal_due_idx`, `coupon_drop_due_idx`, `customer_order_expiry_idx`,
/// `customer_order_refund_due_idx`, `deal_waitlist_held_idx` and
/// `waitlist_entry_line`), so an idle tick costs one cheap query instead of
/// a transaction per handler. A row that becomes due after this check is
/// handled at the next tick.
///
/// The order table's two checks read the first entry of their partial
/// index (`min(expires_at)`, `expires_at` is never null) rather than
/// `exists(… and expires_at <= now())`. With an `exists`, Postgres estimates
/// the rows matching `status = 'pending_payment'` and, independently,
/// `expires_at <= now()`; in a table of millions of old orders (long expired,
/// cancelled or paid) and a live stampede's pending ones (which expire in
/// minutes), that estimate is large, it expects to meet a match at once and
/// scans the table, finding none: 0.6 s per tick on 6 million orders, every
/// tick. `min()` over an index is always read from the index's first entry.
pub const DUE_NOW_SQL: &str = "select exists(select 1 from deal
                        where status = 'scheduled' and starts_at <= now() and ends_at > now()) as deals_to_start,
                exists(select 1 from deal where status <> 'ended' and ends_at <= now()) as deals_to_end,
                exists(select 1 from coupon_drop where status = 'scheduled' and drop_at <= now())
                or exists(select 1 from coupon_drop
                           where status = 'dropped'
                             and dropped_at + claim_window_secs * interval '1 second' <= now()) as coupon_drops,
                coalesce((select min(expires_at) from customer_order where status = 'pending_payment') <= now(), false)
                or (select min(expires_at) from customer_order
                     where status = 'refund_due' and cancelled_at is null) is not null
                    as orders_to_expire,
                exists(select 1 from deal where held > 0)
                or exists(select 1 from waitlist_entry e join deal d using (deal_id)
                           where e.status in ('waiting', 'offered')
                             and (d.ends_at <= now() or (e.status = 'offered' and e.offer_expires_at <= now())))
                    as waitlists";

async fn due_now(c: &Commerce) -> sqlx::Result<DueNow> {
    sqlx::query_as(DUE_NOW_SQL).fetch_one(c.db()).await
}

async fn start_due_deals(c: &Commerce) -> anyhow::Result<()> {
    let mut tx = c.db().begin().await?;
    let due: Vec<Deal> = sqlx::query_as(&format!(
        "update deal set status = 'live'
          where deal_id in (select deal_id from deal where status = 'scheduled' and starts_at <= now()
                             and ends_at > now() for update skip locked limit 100)
      returning {DEAL_COLUMNS}"
    ))
    .fetch_all(&mut *tx)
    .await?;
    for deal in &due {
        let link: Option<i32> =
            sqlx::query_scalar("select link_number from lineup_item where lineup_item_id = $1")
                .bind(deal.lineup_item_id)
                .fetch_optional(&mut *tx)
                .await?;
        let view = deal.room_view(link);
        hawker_hub::durable::enqueue(
            &mut tx,
            deal.session_id,
            &Publication::new("deal.started", view.clone()).set_state(format!("deal:{}", deal.deal_id), view),
        )
        .await?;
    }
    tx.commit().await?;
    if !due.is_empty() {
        c.hub().relay_durable().await?;
    }
    Ok(())
}

async fn end_due_deals(c: &Commerce) -> anyhow::Result<()> {
    let mut tx = c.db().begin().await?;
    let due: Vec<Uuid> = sqlx::query_scalar(
        "select deal_id from deal where status <> 'ended' and ends_at <= now() for update skip locked limit 100",
    )
    .fetch_all(&mut *tx)
    .await?;
    for deal_id in &due {
        end_deal_tx(&mut tx, *deal_id, "time_up").await?;
    }
    tx.commit().await?;
    for deal_id in &due {
        let _ = c.inner.gate.mark_ended(*deal_id, "time_up").await;
    }
    if !due.is_empty() {
        c.hub().relay_durable().await?;
    }
    Ok(())
}

/// An order the sweeper let go, with what its units need.
#[derive(sqlx::FromRow)]
struct ExpiredOrder {
    order_id: Uuid,
    status: String,
    session_id: Uuid,
    #[sqlx(flatten)]
    units: OrderUnits,
}

/// Cancels unpaid orders past their expiry; their units go back to the deal
/// and the gate while the deal runs, to the SKU once it has ended (an
/// auction's or a giveaway's order: to the SKU at once). Returns how many
/// orders it let go.
async fn expire_orders(c: &Commerce) -> anyhow::Result<usize> {
    let mut tx = c.db().begin().await?;
    // Unpaid orders past their expiry are cancelled; an order that was paid
    // too late (`refund_due`, not yet cancelled) keeps its status but its
    // units come back the same way. One query per case, each on its own
    // partial index (migrations 0002 and 0013), never a scan of the table.
    let mut expired: Vec<ExpiredOrder> = sqlx::query_as(&format!(
        "with due as (select order_id from customer_order
                        where status = 'pending_payment' and expires_at <= now()
                        order by expires_at for update skip locked limit 500),
              late as (select order_id from customer_order
                        where status = 'refund_due' and cancelled_at is null
                        order by expires_at for update skip locked limit 500)
         update customer_order
            set status = case when status = 'pending_payment' then 'cancelled' else status end,
                cancelled_at = now()
          where order_id in (select order_id from due union all select order_id from late)
      returning order_id, status, session_id, {ORDER_UNITS_COLUMNS}"
    ))
    .fetch_all(&mut *tx)
    .await?;
    if expired.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = expired.iter().map(|e| e.order_id).collect();
    let statuses: Vec<&str> = expired.iter().map(|e| e.status.as_str()).collect();
    sqlx::query(
        "insert into order_event (order_id, from_status, to_status, detail, kind)
         select id, case when status = 'cancelled' then 'pending_payment' else status end, status,
                '{\"reason\": \"payment_expired\", \"units_returned\": true}'::jsonb, 'expired'
           from unnest($1::uuid[], $2::text[]) as t(id, status)",
    )
    .bind(&ids)
    .bind(&statuses)
    .execute(&mut *tx)
    .await?;
    let orders: Vec<OrderUnits> = expired.iter().map(|e| e.units.clone()).collect();
    let back = units::give_back(&mut tx, &orders, "payment_expired").await?;
    // Each buyer alone hears that their order expired (the room sees the
    // stock figure). In buyer order: a notice takes a per-user lock, and two
    // sweepers must not take two buyers' locks in opposite orders.
    expired.sort_by(|a, b| (&a.units.buyer_id, a.order_id).cmp(&(&b.units.buyer_id, b.order_id)));
    for e in &expired {
        c.hub()
            .enqueue_notice(
                &mut tx,
                &Notice::new(
                    &e.units.buyer_id,
                    "order.expired",
                    json!({
                        "order_id": e.order_id,
                        "session_id": e.session_id,
                        "source": e.units.source,
                        "deal_id": e.units.deal_id,
                        "auction_id": e.units.auction_id,
                        "giveaway_id": e.units.giveaway_id,
                        "group_buy_id": e.units.group_buy_id,
                        "quantity": e.units.quantity,
                        "status": e.status,
                    }),
                ),
            )
            .await?;
    }
    tx.commit().await?;
    metrics::counter!("hawker_orders_expired_total").increment(orders.len() as u64);
    back.announce(c).await;
    Ok(expired.len())
}
