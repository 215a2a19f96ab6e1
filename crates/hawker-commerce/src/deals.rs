//! The lineup (what the host will show, as link numbers) and flash deals.

use chrono::{DateTime, Duration, Utc};
use hawker_agency::page::{self, PageQuery};
use hawker_core::Claims;
use hawker_hub::Publication;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use hawker_catalog::campaign_skus::{self, GiveBack, Returning, TakeUnits, UnitSource};

use crate::access::require_host;
use crate::Commerce;
use hawker_core::error::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LineupItem {
    pub lineup_item_id: Uuid,
    pub session_id: Uuid,
    /// "#7" in the stream.
    pub link_number: i32,
    pub sku_id: Uuid,
    pub product_name: String,
    pub sku_name: String,
    pub price_minor: i64,
    pub currency: String,
    pub stock_on_hand: i32,
    /// The campaign the item sells under (null for items added before campaigns).
    pub campaign_id: Option<Uuid>,
}

/// A page of a lineup.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LineupPage {
    pub items: Vec<LineupItem>,
    /// Pass as `cursor` for the next page; absent (null) on the last page.
    pub next_cursor: Option<String>,
}

/// A page of a session's deals.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DealPage {
    pub items: Vec<Deal>,
    /// Pass as `cursor` for the next page; absent (null) on the last page.
    pub next_cursor: Option<String>,
}

const LINEUP_SELECT: &str =
    "select l.lineup_item_id, l.session_id, l.link_number, l.sku_id, p.name as product_name,
        s.name as sku_name, s.price_minor, s.currency, s.stock_on_hand, l.campaign_id
   from lineup_item l join sku s using (sku_id) join product p using (product_id)";

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLineupItem {
    pub sku_id: Uuid,
    /// Defaults to the next free number.
    #[serde(default)]
    pub link_number: Option<i32>,
}

/// Adds a SKU to the session's lineup under a link number.
#[tracing::instrument(skip(c, claims, item))]
pub async fn add_lineup_item(
    c: &Commerce,
    claims: &Claims,
    session_id: Uuid,
    item: NewLineupItem,
) -> Result<LineupItem> {
    let access = require_host(c.db(), claims, session_id).await?;
    if let Some(n) = item.link_number {
        if !(1..=9999).contains(&n) {
            return Err(Error::invalid("bad_link_number", "link_number must be 1 to 9999"));
        }
    }
    // Only a SKU of an active campaign between the session's agency and the
    // SKU's brand may enter the lineup (`hawker_catalog::campaign_skus`).
    let sellable = campaign_skus::sellable(c.db(), access.agency_id, item.sku_id).await?;
    if access.brand_id.is_some_and(|b| b != sellable.brand_id) {
        return Err(Error::invalid(
            "wrong_brand",
            "the SKU belongs to another brand than the session's",
        ));
    }
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        "insert into lineup_item (lineup_item_id, session_id, link_number, sku_id, campaign_id)
         values ($1, $2, coalesce($3, (select coalesce(max(link_number), 0) + 1 from lineup_item where session_id = $2)), $4, $5)",
    )
    .bind(id)
    .bind(session_id)
    .bind(item.link_number)
    .bind(item.sku_id)
    .bind(sellable.campaign_id)
    .execute(c.db())
    .await;
    match inserted {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.constraint() == Some("lineup_item_link_unique") => {
            return Err(Error::conflict(
                "link_number_taken",
                "that link number is already in the lineup",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    lineup_item(c, id).await
}

/// The SKUs the session's host may add to its lineup: those of the active
/// campaigns of the session's agency (with the session's brand, if it has one).
pub async fn sellable_skus(
    c: &Commerce,
    claims: &Claims,
    session_id: Uuid,
) -> Result<Vec<campaign_skus::CampaignSku>> {
    let access = require_host(c.db(), claims, session_id).await?;
    campaign_skus::sellable_skus(c.db(), access.agency_id, access.brand_id).await
}

async fn lineup_item(c: &Commerce, id: Uuid) -> Result<LineupItem> {
    sqlx::query_as::<_, LineupItem>(&format!("{LINEUP_SELECT} where l.lineup_item_id = $1"))
        .bind(id)
        .fetch_optional(c.db())
        .await?
        .ok_or(Error::NotFound("lineup item"))
}

/// The session's lineup, a page at a time by link number.
pub async fn lineup(c: &Commerce, session_id: Uuid, page: &PageQuery) -> Result<LineupPage> {
    let limit = page.limit()?;
    let after = page.after_int()?;
    let rows = sqlx::query_as::<_, LineupItem>(&format!(
        "{LINEUP_SELECT} where l.session_id = $1 and ($2::bigint is null or l.link_number > $2)
          order by l.link_number limit $3"
    ))
    .bind(session_id)
    .bind(after)
    .bind(limit + 1)
    .fetch_all(c.db())
    .await?;
    let (items, next_cursor) = page::split(rows, limit, |i| page::int(i64::from(i.link_number)));
    Ok(LineupPage { items, next_cursor })
}

async fn by_link(c: &Commerce, session_id: Uuid, link_number: i32) -> Result<LineupItem> {
    sqlx::query_as::<_, LineupItem>(&format!(
        "{LINEUP_SELECT} where l.session_id = $1 and l.link_number = $2"
    ))
    .bind(session_id)
    .bind(link_number)
    .fetch_optional(c.db())
    .await?
    .ok_or(Error::NotFound("lineup item"))
}

fn pinned_item(item: &LineupItem) -> Value {
    json!({
        "link_number": item.link_number,
        "lineup_item_id": item.lineup_item_id,
        "sku_id": item.sku_id,
        "product_name": item.product_name,
        "sku_name": item.sku_name,
        "price_minor": item.price_minor,
        "currency": item.currency,
    })
}

/// "Now showing #7": the room gets `host.pinned` and the snapshot's `pinned`.
#[tracing::instrument(skip(c, claims))]
pub async fn pin(c: &Commerce, claims: &Claims, session_id: Uuid, link_number: i32) -> Result<LineupItem> {
    require_host(c.db(), claims, session_id).await?;
    let item = by_link(c, session_id, link_number).await?;
    let data = pinned_item(&item);
    c.hub()
        .publish(
            session_id,
            Publication::new("host.pinned", json!({ "item": data })).set_state("pinned", data),
        )
        .await
        .map_err(|_| Error::Unavailable { what: "redis" })?;
    Ok(item)
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Deal {
    pub deal_id: Uuid,
    pub session_id: Uuid,
    pub lineup_item_id: Uuid,
    pub sku_id: Uuid,
    pub price_minor: i64,
    pub currency: String,
    pub quantity: i32,
    pub sold: i32,
    pub per_buyer_cap: i32,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// `scheduled`, `live` or `ended`.
    pub status: String,
    /// `sold_out`, `time_up` or `ended_by_host`.
    pub end_reason: Option<String>,
    pub ended_at: Option<DateTime<Utc>>,
    pub stock_version: i64,
    /// Whether the room is told the deal's paid orders and units (`deal.sales`).
    pub show_sales: bool,
    /// The campaign whose stock the deal took (null for deals before campaigns).
    pub campaign_id: Option<Uuid>,
    /// The lowest amount per unit an order may pay after its coupon; null when
    /// the campaign allows going below its floor.
    pub floor_price_minor: Option<i64>,
}

/// The columns of a [`Deal`], for every query that reads one.
pub(crate) const DEAL_COLUMNS: &str =
    "deal_id, session_id, lineup_item_id, sku_id, price_minor, currency, quantity, sold, \
    per_buyer_cap, starts_at, ends_at, status, end_reason, ended_at, stock_version, show_sales, \
    campaign_id, floor_price_minor";

impl Deal {
    /// The deal as the room sees it (`deal:<id>` in the snapshot).
    pub fn room_view(&self, link_number: Option<i32>) -> Value {
        json!({
            "deal_id": self.deal_id,
            "lineup_item_id": self.lineup_item_id,
            "link_number": link_number,
            "sku_id": self.sku_id,
            "price_minor": self.price_minor,
            "currency": self.currency,
            "quantity": self.quantity,
            "remaining": self.quantity - self.sold,
            "per_buyer_cap": self.per_buyer_cap,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "status": self.status,
            "show_sales": self.show_sales,
        })
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDeal {
    /// The lineup item's link number.
    pub link_number: i32,
    pub price_minor: i64,
    pub quantity: i32,
    pub per_buyer_cap: i32,
    /// Seconds before the deal starts (0 to `commerce.countdown_max_secs`).
    #[serde(default)]
    pub countdown_secs: u64,
    /// How long it runs (`commerce.deal_min_secs` to `commerce.deal_max_secs`).
    pub duration_secs: u64,
    /// Tell the room the deal's paid orders and units after each payment
    /// (`deal.sales`); false if absent. Buyers and amounts are never shown.
    #[serde(default)]
    pub show_sales: bool,
}

/// Launches a flash deal: its units come out of the SKU's stock now (so two
/// deals never sell the same unit) and unsold units go back when it ends.
#[tracing::instrument(skip(c, claims, new))]
pub async fn create_deal(c: &Commerce, claims: &Claims, session_id: Uuid, new: NewDeal) -> Result<Deal> {
    require_host(c.db(), claims, session_id).await?;
    let config = c.config();
    if !(1..=config.max_price_minor).contains(&new.price_minor) {
        return Err(Error::invalid(
            "bad_price",
            format!("price_minor must be 1 to {}", config.max_price_minor),
        ));
    }
    if !(1..=1_000_000).contains(&new.quantity) {
        return Err(Error::invalid("bad_quantity", "quantity must be 1 to 1000000"));
    }
    if new.per_buyer_cap < 1 || new.per_buyer_cap > new.quantity {
        return Err(Error::invalid("bad_cap", "per_buyer_cap must be 1 to quantity"));
    }
    if new.countdown_secs > config.countdown_max_secs {
        return Err(Error::invalid(
            "bad_countdown",
            format!("countdown_secs must be 0 to {}", config.countdown_max_secs),
        ));
    }
    if !(config.deal_min_secs..=config.deal_max_secs).contains(&new.duration_secs) {
        return Err(Error::invalid(
            "bad_duration",
            format!(
                "duration_secs must be {} to {}",
                config.deal_min_secs, config.deal_max_secs
            ),
        ));
    }
    let item = by_link(c, session_id, new.link_number).await?;
    let deal_id = Uuid::now_v7();
    let mut tx = c.db().begin().await?;
    // The units come from the brand's stock under the lineup item's campaign,
    // at or above its floor (a movement; the SKU row stays locked to the commit).
    let taken = campaign_skus::take_units(
        &mut tx,
        TakeUnits {
            campaign_id: item.campaign_id,
            sku_id: item.sku_id,
            quantity: new.quantity,
            price_minor: Some(new.price_minor),
            source: UnitSource::Deal(deal_id),
            actor: &claims.sub,
        },
    )
    .await?;
    let starts_at = Utc::now() + Duration::seconds(new.countdown_secs as i64);
    let ends_at = starts_at + Duration::seconds(new.duration_secs as i64);
    let deal = sqlx::query_as::<_, Deal>(&format!(
        "insert into deal (deal_id, session_id, lineup_item_id, sku_id, price_minor, currency, quantity,
                per_buyer_cap, starts_at, ends_at, created_by, show_sales, campaign_id, floor_price_minor)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) returning {DEAL_COLUMNS}"
    ))
    .bind(deal_id)
    .bind(session_id)
    .bind(item.lineup_item_id)
    .bind(item.sku_id)
    .bind(new.price_minor)
    .bind(&item.currency)
    .bind(new.quantity)
    .bind(new.per_buyer_cap)
    .bind(starts_at)
    .bind(ends_at)
    .bind(&claims.sub)
    .bind(new.show_sales)
    .bind(taken.campaign_id)
    .bind(taken.floor_price_minor)
    .fetch_one(&mut *tx)
    .await?;
    let view = deal.room_view(Some(item.link_number));
    hawker_hub::durable::enqueue(
        &mut tx,
        session_id,
        &Publication::new("deal.scheduled", view.clone()).set_state(format!("deal:{}", deal.deal_id), view),
    )
    .await?;
    tx.commit().await?;
    // Build the gate now so the first buyers do not pay for it; if this
    // fails, the first purchase builds it.
    if let Err(e) = c.inner.gate.rebuild(deal.deal_id).await {
        tracing::warn!(error = %e, "admission gate not built yet");
    }
    Ok(deal)
}

pub async fn get_deal(c: &Commerce, deal_id: Uuid) -> Result<Deal> {
    sqlx::query_as::<_, Deal>(&format!("select {DEAL_COLUMNS} from deal where deal_id = $1"))
        .bind(deal_id)
        .fetch_optional(c.db())
        .await?
        .ok_or(Error::NotFound("deal"))
}

/// The session's deals, a page at a time by (starts_at, deal_id).
pub async fn session_deals(c: &Commerce, session_id: Uuid, page: &PageQuery) -> Result<DealPage> {
    let limit = page.limit()?;
    let after = page.after_time_id()?;
    let rows = sqlx::query_as::<_, Deal>(&format!(
        "select {DEAL_COLUMNS} from deal
          where session_id = $1 and ($2::timestamptz is null or (starts_at, deal_id) > ($2, $3))
          order by starts_at, deal_id limit $4"
    ))
    .bind(session_id)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(c.db())
    .await?;
    let (items, next_cursor) = page::split(rows, limit, |d| page::time_id(d.starts_at, d.deal_id));
    Ok(DealPage { items, next_cursor })
}

/// The host ends a deal early.
#[tracing::instrument(skip(c, claims))]
pub async fn end_deal(c: &Commerce, claims: &Claims, deal_id: Uuid) -> Result<Deal> {
    let deal = get_deal(c, deal_id).await?;
    require_host(c.db(), claims, deal.session_id).await?;
    let mut tx = c.db().begin().await?;
    let ended = end_deal_tx(&mut tx, deal_id, "ended_by_host").await?;
    tx.commit().await?;
    if !ended {
        return Err(Error::conflict(
            "deal_already_ended",
            "the deal has already ended",
        ));
    }
    let _ = c.inner.gate.mark_ended(deal_id, "ended_by_host").await;
    get_deal(c, deal_id).await
}

/// Ends a deal inside `tx` (if not ended): unsold units go back to the SKU,
/// the room gets the final stock and `deal.ended`. Returns false if it had ended.
pub async fn end_deal_tx(tx: &mut Transaction<'_, Postgres>, deal_id: Uuid, reason: &str) -> Result<bool> {
    let row: Option<(Uuid, Uuid, i32, i32, i64, Option<Uuid>)> = sqlx::query_as(
        "update deal set status = 'ended', end_reason = $2, ended_at = now(), stock_version = stock_version + 1
          where deal_id = $1 and status <> 'ended'
      returning session_id, sku_id, quantity, sold, stock_version, campaign_id",
    )
    .bind(deal_id)
    .bind(reason)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((session_id, sku_id, quantity, sold, version, campaign_id)) = row else {
        return Ok(false);
    };
    campaign_skus::give_back(
        tx,
        GiveBack {
            campaign_id,
            sku_id,
            units: quantity - sold,
            why: Returning::Unsold,
            source: UnitSource::Deal(deal_id),
            actor: reason,
        },
    )
    .await?;
    announce_end(tx, deal_id, session_id, reason, quantity, sold, version).await?;
    Ok(true)
}

/// Queues the final `deal.stock` and `deal.ended`, in that order.
pub async fn announce_end(
    tx: &mut Transaction<'_, Postgres>,
    deal_id: Uuid,
    session_id: Uuid,
    reason: &str,
    quantity: i32,
    sold: i32,
    version: i64,
) -> sqlx::Result<()> {
    let stock_key = crate::stock::deal_stock_key(deal_id);
    let remaining = if reason == "sold_out" { 0 } else { quantity - sold };
    hawker_hub::durable::enqueue(
        tx,
        session_id,
        &Publication::new(
            "deal.stock",
            json!({ "deal_id": deal_id, "remaining": remaining, "quantity": quantity, "final": true }),
        )
        .versioned(format!("v:{}", stock_key), version),
    )
    .await?;
    hawker_hub::durable::enqueue(
        tx,
        session_id,
        &Publication::new(
            "deal.ended",
            json!({ "deal_id": deal_id, "reason": reason, "sold": sold, "quantity": quantity }),
        )
        .remove_state(format!("deal:{deal_id}"))
        .remove_state(stock_key.clone())
        .versioned(format!("v:{}", stock_key), i64::MAX),
    )
    .await
}
