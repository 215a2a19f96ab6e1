//! Waitlists for sold-out deals (migration 0018, docs/architecture.md
//! "Waitlists").
//!
//! A deal that sold out has ended (`end_reason = 'sold_out'`); until its
//! `ends_at` viewers may join its waitlist, in order. Units that come back
//! from its orders (expired or cancelled, [`crate::units`]) are then *held*
//! for the list (`deal.held`, out of `sold`) instead of going back to the
//! SKU. The [`tick`] (every node, at each scheduler tick whose due check
//! finds work for it; each deal's row is locked `for update skip locked`, so
//! one node at a time acts for a deal)
//! turns held units into private offers, first in line first, each for at
//! most the buyer's room under the per-buyer cap and held for
//! `commerce.waitlist_hold_secs`; passes offers whose hold ran out to the
//! next; gives held units nobody waits for back to the SKU; and closes the
//! list once the deal's time is over.
//!
//! The offered buyer buys through the normal purchase path: the gate admits
//! them against their offer ([`crate::purchase::gate`]), the settlement
//! takes the units from `held` and marks the entry `bought` under the deal's
//! row lock. Every change of an offer takes the deal's row lock first, so an
//! offer is never open twice for the same units and never both bought and
//! passed.
//!
//! The room sees only the count (`deal.waitlist`, through the durable outbox,
//! versioned so an older count never overwrites a newer one); the offer is
//! a private notice (`waitlist.offer`, `waitlist.offer_expired`,
//! `waitlist.closed`) queued in the transaction that makes the change.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::stock::Figure;
use crate::Commerce;
use hawker_catalog::campaign_skus::{self, GiveBack, Returning, UnitSource};
use hawker_core::error::{Error, Result};
use hawker_hub::Notice;

/// Where a waitlist entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum EntryStatus {
    /// In line.
    Waiting,
    /// Holding an open offer.
    Offered,
    /// Bought the offered units.
    Bought,
    /// The offer's hold ran out (or the buyer had no room under the cap).
    Passed,
    /// The buyer left the list.
    Left,
    /// The deal's time ran out.
    Closed,
}

/// An open offer: units held for this buyer until `expires_at`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WaitlistOffer {
    /// Units held for the buyer; buy 1 to this many with `POST /v1/deals/{id}/orders`.
    pub units: i32,
    /// The deal's unit price, in minor units.
    pub price_minor: i64,
    pub currency: String,
    /// The hold ends then; an offer not bought by then passes to the next in line.
    pub expires_at: DateTime<Utc>,
}

/// A buyer's place on a deal's waitlist.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WaitlistPlace {
    pub deal_id: Uuid,
    /// `null` when the caller never joined this deal's waitlist.
    pub status: Option<EntryStatus>,
    /// 1 for the first in line, counting entries waiting or offered; null
    /// once the entry is no longer in line.
    pub position: Option<i64>,
    /// Entries in line (waiting or offered): what the room sees.
    pub count: i64,
    /// The open offer, while `status` is `offered`.
    pub offer: Option<WaitlistOffer>,
    /// `null` when the caller never joined.
    pub joined_at: Option<DateTime<Utc>>,
    /// `true` when joining again answered the existing place.
    #[serde(default)]
    pub replayed: bool,
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    waitlist_entry_id: i64,
    deal_id: Uuid,
    status: EntryStatus,
    offer_units: Option<i32>,
    offer_expires_at: Option<DateTime<Utc>>,
    joined_at: DateTime<Utc>,
}

const ENTRY_COLUMNS: &str = "waitlist_entry_id, deal_id, status, offer_units, offer_expires_at, joined_at";

/// The deal as the waitlist needs it.
#[derive(sqlx::FromRow)]
struct DealRow {
    session_id: Uuid,
    sku_id: Uuid,
    campaign_id: Option<Uuid>,
    price_minor: i64,
    currency: String,
    per_buyer_cap: i32,
    status: String,
    end_reason: Option<String>,
    /// `ends_at > now()`.
    running: bool,
    held: i32,
}

const DEAL_ROW_COLUMNS: &str = "session_id, sku_id, campaign_id, price_minor, currency, per_buyer_cap, \
     status, end_reason, ends_at > now() as running, held";

impl DealRow {
    /// Sold out with time left: the list is open.
    fn list_open(&self) -> bool {
        self.status == "ended" && self.end_reason.as_deref() == Some("sold_out") && self.running
    }
}

/// Reads the deal; `lock` takes its row lock (every change of an offer does,
/// before touching entries: one lock order everywhere).
async fn deal_row(conn: &mut PgConnection, deal_id: Uuid, lock: bool) -> Result<DealRow> {
    let sql = format!(
        "select {DEAL_ROW_COLUMNS} from deal where deal_id = $1{}",
        if lock { " for update" } else { "" }
    );
    sqlx::query_as(&sql)
        .bind(deal_id)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound("deal"))
}

/// Entries in line (waiting or offered).
async fn count(conn: &mut PgConnection, deal_id: Uuid) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "select count(*) from waitlist_entry where deal_id = $1 and status in ('waiting', 'offered')",
    )
    .bind(deal_id)
    .fetch_one(conn)
    .await?)
}

/// The room's `deal.waitlist` count as it stands in `conn`'s transaction,
/// to announce after the commit through the node's coalescing announcer
/// ([`crate::stock::StockAnnouncer`]): at most one per deal per
/// `commerce.stock_event_interval_ms`, versioned by a sequence so the newest
/// count wins across nodes; a joiner finds it in the snapshot as
/// `waitlist:<deal id>`.
pub(crate) async fn count_figure(conn: &mut PgConnection, deal_id: Uuid, session_id: Uuid) -> Result<Figure> {
    let n = count(&mut *conn, deal_id).await?;
    let version: i64 = sqlx::query_scalar("select nextval('waitlist_count_version')")
        .fetch_one(&mut *conn)
        .await?;
    Ok(Figure {
        session_id,
        key: format!("waitlist:{deal_id}"),
        event_type: "deal.waitlist",
        data: json!({ "deal_id": deal_id, "count": n }),
        version,
    })
}

/// The caller's place, read in `conn`.
async fn place_of(conn: &mut PgConnection, deal: &DealRow, entry: EntryRow) -> Result<WaitlistPlace> {
    let in_line = matches!(entry.status, EntryStatus::Waiting | EntryStatus::Offered);
    let position = if in_line {
        Some(
            sqlx::query_scalar::<_, i64>(
                "select count(*) from waitlist_entry
                  where deal_id = $1 and status in ('waiting', 'offered') and waitlist_entry_id <= $2",
            )
            .bind(entry.deal_id)
            .bind(entry.waitlist_entry_id)
            .fetch_one(&mut *conn)
            .await?,
        )
    } else {
        None
    };
    let offer = match (entry.status, entry.offer_units, entry.offer_expires_at) {
        (EntryStatus::Offered, Some(units), Some(expires_at)) => Some(WaitlistOffer {
            units,
            price_minor: deal.price_minor,
            currency: deal.currency.clone(),
            expires_at,
        }),
        _ => None,
    };
    Ok(WaitlistPlace {
        deal_id: entry.deal_id,
        status: Some(entry.status),
        position,
        count: count(conn, entry.deal_id).await?,
        offer,
        joined_at: Some(entry.joined_at),
        replayed: false,
    })
}

/// The buyer's entry in line, or their latest one.
async fn latest_entry(conn: &mut PgConnection, deal_id: Uuid, buyer: &str) -> Result<Option<EntryRow>> {
    Ok(sqlx::query_as(&format!(
        "select {ENTRY_COLUMNS} from waitlist_entry where deal_id = $1 and buyer_id = $2
          order by (status in ('waiting', 'offered')) desc, waitlist_entry_id desc limit 1"
    ))
    .bind(deal_id)
    .bind(buyer)
    .fetch_optional(conn)
    .await?)
}

/// Joins the waitlist of a sold-out deal, at the back; joining again while
/// in line answers the same place (`replayed`). `not_sold_out` while the deal
/// sells, `deal_ended` once its time is over (or it ended otherwise).
#[tracing::instrument(skip(c))]
pub async fn join(c: &Commerce, buyer: &str, deal_id: Uuid) -> Result<WaitlistPlace> {
    let mut tx = c.db().begin().await?;
    let deal = deal_row(&mut tx, deal_id, false).await?;
    if let Some(existing) = latest_entry(&mut tx, deal_id, buyer).await? {
        if matches!(existing.status, EntryStatus::Waiting | EntryStatus::Offered) {
            let mut place = place_of(&mut tx, &deal, existing).await?;
            place.replayed = true;
            return Ok(place);
        }
    }
    if !deal.list_open() {
        return Err(if deal.status == "ended" {
            Error::conflict("deal_ended", "the deal has ended: its waitlist is closed")
        } else {
            Error::conflict(
                "not_sold_out",
                "the deal is not sold out: buy it instead of joining its waitlist",
            )
        });
    }
    let inserted: Option<EntryRow> = sqlx::query_as(&format!(
        "insert into waitlist_entry (deal_id, buyer_id, session_id) values ($1, $2, $3)
         on conflict (deal_id, buyer_id) where status in ('waiting', 'offered') do nothing
         returning {ENTRY_COLUMNS}"
    ))
    .bind(deal_id)
    .bind(buyer)
    .bind(deal.session_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(entry) = inserted else {
        // A concurrent join of the same buyer won: answer its place.
        drop(tx);
        let mut conn = c.db().acquire().await?;
        let entry = latest_entry(&mut conn, deal_id, buyer)
            .await?
            .ok_or(Error::Unavailable { what: "the waitlist" })?;
        let mut place = place_of(&mut conn, &deal, entry).await?;
        place.replayed = true;
        return Ok(place);
    };
    let figure = count_figure(&mut tx, deal_id, deal.session_id).await?;
    let place = place_of(&mut tx, &deal, entry).await?;
    tx.commit().await?;
    c.inner.stock.announce(figure);
    Ok(place)
}

/// Leaves the waitlist; an open offer is given up at once (its units go to
/// the next in line at the next tick). `not_on_waitlist` if not in line.
#[tracing::instrument(skip(c))]
pub async fn leave(c: &Commerce, buyer: &str, deal_id: Uuid) -> Result<WaitlistPlace> {
    let mut tx = c.db().begin().await?;
    // Only an ended deal has a list: a running deal's hot row is never locked here.
    if deal_row(&mut tx, deal_id, false).await?.status != "ended" {
        return Err(not_on_waitlist());
    }
    let deal = deal_row(&mut tx, deal_id, true).await?;
    let left: Option<EntryRow> = sqlx::query_as(&format!(
        "update waitlist_entry set status = 'left', updated_at = now()
          where deal_id = $1 and buyer_id = $2 and status in ('waiting', 'offered')
      returning {ENTRY_COLUMNS}"
    ))
    .bind(deal_id)
    .bind(buyer)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(entry) = left else {
        return Err(not_on_waitlist());
    };
    let figure = count_figure(&mut tx, deal_id, deal.session_id).await?;
    let place = place_of(&mut tx, &deal, entry).await?;
    tx.commit().await?;
    c.inner.stock.announce(figure);
    if let Err(e) = c.inner.gate.revoke_offer(deal_id, buyer).await {
        tracing::debug!(error = %e, "offer left in the gate; Postgres refuses it");
    }
    Ok(place)
}

/// The caller's place on the deal's waitlist (their latest entry); with
/// `status: null` and only the count if they never joined.
pub async fn place(c: &Commerce, buyer: &str, deal_id: Uuid) -> Result<WaitlistPlace> {
    let mut conn = c.db().acquire().await?;
    let deal = deal_row(&mut conn, deal_id, false).await?;
    match latest_entry(&mut conn, deal_id, buyer).await? {
        Some(entry) => place_of(&mut conn, &deal, entry).await,
        None => Ok(WaitlistPlace {
            deal_id,
            status: None,
            position: None,
            count: count(&mut conn, deal_id).await?,
            offer: None,
            joined_at: None,
            replayed: false,
        }),
    }
}

fn not_on_waitlist() -> Error {
    Error::conflict("not_on_waitlist", "you are not on this deal's waitlist")
}

async fn relay_notices(c: &Commerce) {
    if let Err(e) = c.hub().relay_notices().await {
        tracing::debug!(error = %e, "notices left to the relay");
    }
}

/// Called by [`crate::units::give_back`] for units coming back to an ended
/// deal (after its `sold` was lowered, in the same transaction and under the
/// deal's row lock): if the deal sold out, its time is not over and someone
/// waits, the units are held for the list and `true` is returned; else the
/// caller gives them back to the SKU.
pub(crate) async fn hold_returned(
    tx: &mut Transaction<'_, Postgres>,
    deal_id: Uuid,
    units: i32,
) -> Result<bool> {
    let held = sqlx::query(
        "update deal set held = held + $2
          where deal_id = $1 and status = 'ended' and end_reason = 'sold_out' and ends_at > now()
            and exists (select 1 from waitlist_entry where deal_id = $1 and status = 'waiting')",
    )
    .bind(deal_id)
    .bind(units)
    .execute(&mut **tx)
    .await?;
    Ok(held.rows_affected() == 1)
}

/// What the gate must learn after a tick's commit.
#[derive(Default)]
struct GateChanges {
    revoked: Vec<(Uuid, String)>,
}

/// One round of the waitlists: offers whose hold ran out pass, held units
/// go to the next in line or back to the SKU, lists of deals whose time is
/// over close. Each deal in its own short transaction, its row locked
/// `for update skip locked` (another node busy with it: skipped this round).
pub async fn tick(c: &Commerce) -> Result<()> {
    let due: Vec<Uuid> = sqlx::query_scalar(
        "select deal_id from deal where held > 0
         union
         select distinct e.deal_id from waitlist_entry e join deal d using (deal_id)
          where e.status = 'offered' and (e.offer_expires_at <= now() or d.ends_at <= now())
         union
         select distinct e.deal_id from waitlist_entry e join deal d using (deal_id)
          where e.status = 'waiting' and d.ends_at <= now()
         limit 200",
    )
    .fetch_all(c.db())
    .await?;
    for deal_id in due {
        if let Err(e) = tick_deal(c, deal_id).await {
            tracing::debug!(%deal_id, error = %e, "waitlist round deferred");
        }
    }
    Ok(())
}

async fn tick_deal(c: &Commerce, deal_id: Uuid) -> Result<()> {
    let mut tx = c.db().begin().await?;
    let deal: Option<DealRow> = sqlx::query_as(&format!(
        "select {DEAL_ROW_COLUMNS} from deal where deal_id = $1 for update skip locked"
    ))
    .bind(deal_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(deal) = deal else {
        return Ok(()); // Another node has it this round.
    };
    let mut notices: Vec<Notice> = Vec::new();
    let mut gate = GateChanges::default();
    let mut changed = false;
    let notice = |buyer: &str, kind: &str, data: serde_json::Value| {
        Notice::new(buyer, kind, data).in_session(deal.session_id)
    };

    if !deal.running {
        // The deal's time is over: the list closes, held units go to the SKU.
        let closed: Vec<(String, EntryStatus)> = sqlx::query_as(
            "update waitlist_entry e set status = 'closed', updated_at = now()
               from (select waitlist_entry_id, status as was from waitlist_entry
                      where deal_id = $1 and status in ('waiting', 'offered') for update) old
              where e.waitlist_entry_id = old.waitlist_entry_id
          returning e.buyer_id, old.was",
        )
        .bind(deal_id)
        .fetch_all(&mut *tx)
        .await?;
        for (buyer, was) in closed {
            if was == EntryStatus::Offered {
                gate.revoked.push((deal_id, buyer.clone()));
            }
            notices.push(notice(&buyer, "waitlist.closed", json!({ "deal_id": deal_id })));
            changed = true;
        }
        release_held(&mut tx, deal_id, &deal, deal.held).await?;
    } else {
        // Offers whose hold ran out pass.
        let passed: Vec<(String, i32)> = sqlx::query_as(
            "update waitlist_entry set status = 'passed', updated_at = now()
              where deal_id = $1 and status = 'offered' and offer_expires_at <= now()
          returning buyer_id, offer_units",
        )
        .bind(deal_id)
        .fetch_all(&mut *tx)
        .await?;
        for (buyer, units) in passed {
            gate.revoked.push((deal_id, buyer.clone()));
            notices.push(notice(
                &buyer,
                "waitlist.offer_expired",
                json!({ "deal_id": deal_id, "units": units }),
            ));
            changed = true;
        }
        // Held units not under an open offer go to the next in line.
        let offered: i64 = sqlx::query_scalar(
            "select coalesce(sum(offer_units), 0) from waitlist_entry where deal_id = $1 and status = 'offered'",
        )
        .bind(deal_id)
        .fetch_one(&mut *tx)
        .await?;
        let mut free = i64::from(deal.held) - offered;
        let hold_secs = c.config().waitlist_hold_secs as f64;
        while free > 0 {
            let next: Option<(i64, String, i32)> = sqlx::query_as(
                "select e.waitlist_entry_id, e.buyer_id, coalesce(b.units, 0)
                   from waitlist_entry e
                   left join deal_buyer b on b.deal_id = e.deal_id and b.buyer_id = e.buyer_id
                  where e.deal_id = $1 and e.status = 'waiting'
                  order by e.waitlist_entry_id limit 1",
            )
            .bind(deal_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((entry_id, buyer, holds)) = next else {
                break;
            };
            changed = true;
            let units = offer_size(free, deal.per_buyer_cap, holds);
            if units == 0 {
                // At the cap already: nothing to offer; their turn passes.
                sqlx::query("update waitlist_entry set status = 'passed', updated_at = now() where waitlist_entry_id = $1")
                    .bind(entry_id)
                    .execute(&mut *tx)
                    .await?;
                notices.push(notice(
                    &buyer,
                    "waitlist.offer_expired",
                    json!({ "deal_id": deal_id, "units": 0, "reason": "cap_reached" }),
                ));
                continue;
            }
            let expires_at: DateTime<Utc> = sqlx::query_scalar(
                "update waitlist_entry set status = 'offered', offer_units = $2, offered_at = now(),
                        offer_expires_at = now() + make_interval(secs => $3), updated_at = now()
                  where waitlist_entry_id = $1
              returning offer_expires_at",
            )
            .bind(entry_id)
            .bind(units)
            .bind(hold_secs)
            .fetch_one(&mut *tx)
            .await?;
            free -= i64::from(units);
            notices.push(notice(
                &buyer,
                "waitlist.offer",
                json!({
                    "deal_id": deal_id,
                    "session_id": deal.session_id,
                    "units": units,
                    "price_minor": deal.price_minor,
                    "currency": deal.currency,
                    "expires_at": expires_at,
                    "hold_secs": c.config().waitlist_hold_secs,
                }),
            ));
        }
        if free > 0 {
            // Nobody waits: the free held units go back to the SKU.
            let free = i32::try_from(free).map_err(|e| Error::Internal(e.into()))?;
            release_held(&mut tx, deal_id, &deal, free).await?;
        }
    }
    let figure = if changed {
        Some(count_figure(&mut tx, deal_id, deal.session_id).await?)
    } else {
        None
    };
    // Every open offer, not only new ones (a gate rebuilt between its
    // Postgres read and its write may have missed one; this restores it),
    // written before the commit: a buyer who hears of an offer finds it in
    // the gate. If the commit fails, the extra grant admits a buyer whom
    // the settlement then refuses.
    let open = gate_offers(&mut tx, deal_id).await?;
    if let Err(e) = c.inner.gate.grant_offers(deal_id, &open).await {
        tracing::warn!(error = %e, "offers not written to the gate; its rebuild restores them");
    }
    // In user order: a notice takes a per-user lock.
    notices.sort_by(|a, b| a.user.cmp(&b.user));
    for n in &notices {
        c.hub().enqueue_notice(&mut tx, n).await?;
    }
    tx.commit().await?;
    if let Some(figure) = figure {
        c.inner.stock.announce(figure);
    }
    for (deal_id, buyer) in &gate.revoked {
        if let Err(e) = c.inner.gate.revoke_offer(*deal_id, buyer).await {
            tracing::debug!(error = %e, "offer left in the gate; Postgres refuses it");
        }
    }
    if !notices.is_empty() {
        relay_notices(c).await;
    }
    Ok(())
}

/// Units to offer the next buyer: what is free, up to their room under the cap.
pub(crate) fn offer_size(free: i64, cap: i32, holds: i32) -> i32 {
    let room = i64::from(cap.saturating_sub(holds)).max(0);
    i32::try_from(free.min(room).max(0)).unwrap_or(0)
}

/// Gives `units` held units of an ended deal back to the SKU, as units of an
/// ended deal's released orders go.
async fn release_held(
    tx: &mut Transaction<'_, Postgres>,
    deal_id: Uuid,
    deal: &DealRow,
    units: i32,
) -> Result<()> {
    if units <= 0 {
        return Ok(());
    }
    sqlx::query("update deal set held = held - $2 where deal_id = $1")
        .bind(deal_id)
        .bind(units)
        .execute(&mut **tx)
        .await?;
    campaign_skus::give_back(
        tx,
        GiveBack {
            campaign_id: deal.campaign_id,
            sku_id: deal.sku_id,
            units,
            why: Returning::OrderReleased,
            source: UnitSource::Deal(deal_id),
            actor: "waitlist",
        },
    )
    .await?;
    Ok(())
}

/// Open offers of `buyers` on `deals` whose hold has not run out, as (deal,
/// buyer) → units: what the settlement may sell from `held`. Read under the deals' row locks when
/// deciding again, so no offer changes meanwhile.
pub(crate) async fn open_offers(
    conn: &mut PgConnection,
    deals: &[Uuid],
    buyers: &[&str],
) -> Result<HashMap<(Uuid, String), i32>> {
    let rows: Vec<(Uuid, String, i32)> = sqlx::query_as(
        "select deal_id, buyer_id, offer_units from waitlist_entry
          where deal_id = any($1) and buyer_id = any($2) and status = 'offered' and offer_expires_at > now()",
    )
    .bind(deals)
    .bind(buyers)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(d, b, u)| ((d, b), u)).collect())
}

/// The open offers of one deal as the gate keeps them: buyer → units the
/// buyer may hold in all (their units + the offer), for the gate's rebuild.
pub(crate) async fn gate_offers(conn: &mut PgConnection, deal_id: Uuid) -> Result<Vec<(String, i32)>> {
    Ok(sqlx::query_as(
        "select e.buyer_id, coalesce(b.units, 0) + e.offer_units
           from waitlist_entry e
           left join deal_buyer b on b.deal_id = e.deal_id and b.buyer_id = e.buyer_id
          where e.deal_id = $1 and e.status = 'offered'",
    )
    .bind(deal_id)
    .fetch_all(conn)
    .await?)
}

/// The settlement took `bought` (buyer → (units, order)) from the deal's
/// held units: their offers are bought. Under the deal's row lock (taken by
/// the caller's update). Returns the room's new count to announce after the
/// commit, or `None` if an offer is no longer open or is smaller than what
/// was bought: the batch is decided again.
pub(crate) async fn mark_bought(
    tx: &mut Transaction<'_, Postgres>,
    deal_id: Uuid,
    session_id: Uuid,
    bought: &HashMap<String, (i32, Uuid)>,
) -> Result<Option<Figure>> {
    let buyers: Vec<&str> = bought.keys().map(String::as_str).collect();
    let orders: Vec<Uuid> = bought.values().map(|(_, o)| *o).collect();
    let rows: Vec<(String, i32)> = sqlx::query_as(
        "update waitlist_entry e set status = 'bought', order_id = t.order_id, updated_at = now()
           from unnest($2::text[], $3::uuid[]) as t(buyer_id, order_id)
          where e.deal_id = $1 and e.buyer_id = t.buyer_id and e.status = 'offered'
      returning e.buyer_id, e.offer_units",
    )
    .bind(deal_id)
    .bind(&buyers)
    .bind(&orders)
    .fetch_all(&mut **tx)
    .await?;
    let ok = rows.len() == bought.len()
        && rows
            .iter()
            .all(|(buyer, offered)| bought.get(buyer).is_some_and(|(units, _)| units <= offered));
    if !ok {
        return Ok(None);
    }
    Ok(Some(count_figure(tx, deal_id, session_id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_is_what_is_free_up_to_the_room_under_the_cap() {
        assert_eq!(offer_size(5, 2, 0), 2);
        assert_eq!(offer_size(1, 2, 0), 1);
        assert_eq!(offer_size(5, 3, 2), 1);
        assert_eq!(offer_size(5, 2, 2), 0);
        assert_eq!(offer_size(5, 2, 7), 0);
        assert_eq!(offer_size(0, 2, 0), 0);
        assert_eq!(offer_size(i64::MAX, i32::MAX, 0), i32::MAX);
    }
}
