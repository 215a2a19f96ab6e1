//! Stock movements: every change of a SKU's stock on hand is a row saying
//! who, when, how many and why. The database keeps the total
//! (`migrations/0009_catalog.sql`): inserting a movement moves
//! `sku.stock_on_hand` in the same statement, a direct change of the total is
//! refused, and movements are never updated or deleted, so the total is
//! always the sum of the movements. A movement that would take the total
//! below zero fails (`insufficient_stock`).

use chrono::{DateTime, Utc};
use hawker_agency::page::{self, PageQuery};
use hawker_core::error::{violated_constraint, Error, Result};
use hawker_core::Claims;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::access::may_manage;
use crate::validate::MAX_STOCK_DELTA;

/// Why stock moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum MovementReason {
    /// Stock given when the SKU was created or imported (or held before movements existed).
    Opening,
    /// The brand received units.
    Restock,
    /// The brand corrected the count (damage, loss, a stock take).
    Adjustment,
    /// A deal took its units.
    DealAllocated,
    /// A deal ended and gave back what it did not sell.
    DealReturned,
    /// Units of an order came back (expired or cancelled) after its deal
    /// ended, or of an auction's or a giveaway's order: the movement names
    /// the order's source.
    OrderReleased,
    /// An auction took its unit when it started.
    AuctionAllocated,
    /// An auction ended without a sale (or was voided) and gave its unit back.
    AuctionReturned,
    /// A giveaway took its prizes' units when it started.
    GiveawayAllocated,
    /// A giveaway gave back the units it did not hand out.
    GiveawayReturned,
    /// A group buy took its stock when it opened.
    GroupBuyAllocated,
    /// A group buy failed (or was cancelled, or sold less than its stock)
    /// and gave back the units no order holds.
    GroupBuyReturned,
}

/// One change of a SKU's stock.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Movement {
    pub stock_movement_id: i64,
    pub sku_id: Uuid,
    /// Units added (positive) or taken (negative).
    pub delta: i32,
    pub reason: MovementReason,
    pub note: String,
    /// Who moved it: the token's subject (or `scheduler` for deals ending on time).
    pub actor: String,
    /// The deal, auction or giveaway the units went to or came from (at most one).
    pub deal_id: Option<Uuid>,
    pub auction_id: Option<Uuid>,
    pub giveaway_id: Option<Uuid>,
    pub group_buy_id: Option<Uuid>,
    pub campaign_id: Option<Uuid>,
    /// Stock on hand right after this movement.
    pub stock_after: i32,
    pub at: DateTime<Utc>,
}

const MOVEMENT_COLUMNS: &str = "stock_movement_id, sku_id, delta, reason, note, actor, deal_id, auction_id, \
    giveaway_id, group_buy_id, campaign_id, stock_after, at";

/// A movement to record.
#[derive(Debug, Clone, Copy)]
pub struct NewMovement<'a> {
    pub sku_id: Uuid,
    pub delta: i32,
    pub reason: MovementReason,
    pub note: &'a str,
    pub actor: &'a str,
    /// The deal, auction or giveaway that moved the units, if any.
    pub source: Option<UnitSource>,
    pub campaign_id: Option<Uuid>,
}

/// What took units from a SKU or gave them back, beside its brand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UnitSource {
    Deal(Uuid),
    Auction(Uuid),
    Giveaway(Uuid),
    GroupBuy(Uuid),
}

impl UnitSource {
    /// The movement's (`deal_id`, `auction_id`, `giveaway_id`, `group_buy_id`).
    fn ids(source: Option<UnitSource>) -> [Option<Uuid>; 4] {
        match source {
            None => [None, None, None, None],
            Some(UnitSource::Deal(id)) => [Some(id), None, None, None],
            Some(UnitSource::Auction(id)) => [None, Some(id), None, None],
            Some(UnitSource::Giveaway(id)) => [None, None, Some(id), None],
            Some(UnitSource::GroupBuy(id)) => [None, None, None, Some(id)],
        }
    }

    /// The reason of a movement taking units for this source.
    pub fn allocated(self) -> MovementReason {
        match self {
            UnitSource::Deal(_) => MovementReason::DealAllocated,
            UnitSource::Auction(_) => MovementReason::AuctionAllocated,
            UnitSource::Giveaway(_) => MovementReason::GiveawayAllocated,
            UnitSource::GroupBuy(_) => MovementReason::GroupBuyAllocated,
        }
    }

    /// The reason of a movement giving back what this source did not sell.
    pub fn returned(self) -> MovementReason {
        match self {
            UnitSource::Deal(_) => MovementReason::DealReturned,
            UnitSource::Auction(_) => MovementReason::AuctionReturned,
            UnitSource::Giveaway(_) => MovementReason::GiveawayReturned,
            UnitSource::GroupBuy(_) => MovementReason::GroupBuyReturned,
        }
    }
}

/// Records a movement in the caller's transaction; the SKU's total moves
/// with it (and its row stays locked until the commit).
pub async fn record(conn: &mut PgConnection, m: NewMovement<'_>) -> Result<Movement> {
    let [deal_id, auction_id, giveaway_id, group_buy_id] = UnitSource::ids(m.source);
    sqlx::query_as::<_, Movement>(&format!(
        "insert into stock_movement (sku_id, delta, reason, note, actor, deal_id, auction_id, giveaway_id,
                group_buy_id, campaign_id)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) returning {MOVEMENT_COLUMNS}"
    ))
    .bind(m.sku_id)
    .bind(m.delta)
    .bind(m.reason)
    .bind(m.note)
    .bind(m.actor)
    .bind(deal_id)
    .bind(auction_id)
    .bind(giveaway_id)
    .bind(group_buy_id)
    .bind(m.campaign_id)
    .fetch_one(conn)
    .await
    .map_err(|e| match violated_constraint(&e).as_deref() {
        Some("sku_stock_on_hand_check") => insufficient_stock(),
        Some("stock_movement_sku_id_fkey") => Error::NotFound("sku"),
        _ if out_of_range(&e) => Error::conflict(
            "stock_overflow",
            format!("stock on hand may not exceed {} units", i32::MAX),
        ),
        _ => e.into(),
    })
}

/// SQLSTATE 22003: the trigger's new total does not fit stock on hand.
fn out_of_range(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("22003"))
}

/// Refuses (as "not found") unless the SKU exists and the caller manages its brand.
async fn require_sku(db: &PgPool, claims: &Claims, sku_id: Uuid) -> Result<()> {
    let brand: Option<Uuid> = sqlx::query_scalar("select brand_id from sku where sku_id = $1")
        .bind(sku_id)
        .fetch_optional(db)
        .await?;
    match brand {
        Some(brand) if may_manage(claims, brand) => Ok(()),
        _ => Err(Error::NotFound("sku")),
    }
}

pub(crate) fn insufficient_stock() -> Error {
    Error::conflict(
        "insufficient_stock",
        "the SKU does not have that many units on hand",
    )
}

/// What a brand does to a SKU's stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StockChangeKind {
    /// Units received: `delta` is positive.
    Restock,
    /// A correction: `delta` is positive or negative, and `note` says why.
    Adjustment,
}

/// A restock or an adjustment. Its schema states the rule of each kind
/// ([`crate::schema::stock_change`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockChange {
    pub kind: StockChangeKind,
    /// Non-zero, −1,000,000,000 to 1,000,000,000; positive for a restock.
    pub delta: i32,
    /// Why: 0 to 500 characters for a restock, 1 to 500 for an adjustment.
    #[serde(default)]
    pub note: String,
}

impl utoipa::PartialSchema for StockChange {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::schema::stock_change().into()
    }
}

impl utoipa::ToSchema for StockChange {}

fn check_change(change: &StockChange) -> Result<()> {
    if change.delta == 0 || change.delta.unsigned_abs() > MAX_STOCK_DELTA as u32 {
        return Err(Error::invalid(
            "bad_delta",
            format!("delta must be non-zero, at most {MAX_STOCK_DELTA} either way"),
        ));
    }
    if change.kind == StockChangeKind::Restock && change.delta < 0 {
        return Err(Error::invalid(
            "bad_delta",
            "a restock adds units; take units away with an adjustment",
        ));
    }
    let note_ok = change.note.chars().count() <= 500
        && hawker_core::text::hidden_char(&change.note, false).is_none()
        && (change.kind == StockChangeKind::Restock || !change.note.trim().is_empty());
    if !note_ok {
        return Err(Error::invalid(
            "bad_note",
            "note must be at most 500 characters without control, bidi or zero-width characters; an adjustment needs one",
        ));
    }
    Ok(())
}

/// Restocks or adjusts a SKU (its brand and admins), recorded as a movement.
#[tracing::instrument(skip_all, fields(%sku_id, caller = %claims.sub))]
pub async fn change_stock(
    db: &PgPool,
    claims: &Claims,
    sku_id: Uuid,
    change: StockChange,
) -> Result<Movement> {
    require_sku(db, claims, sku_id).await?;
    check_change(&change)?;
    let reason = match change.kind {
        StockChangeKind::Restock => MovementReason::Restock,
        StockChangeKind::Adjustment => MovementReason::Adjustment,
    };
    let mut tx = db.begin().await?;
    let movement = record(
        &mut tx,
        NewMovement {
            sku_id,
            delta: change.delta,
            reason,
            note: change.note.trim(),
            actor: &claims.sub,
            source: None,
            campaign_id: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(movement)
}

/// A page of a SKU's movements, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MovementPage {
    pub items: Vec<Movement>,
    /// The `cursor` of the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A SKU's movements (its brand and admins), newest first.
pub async fn movements(db: &PgPool, claims: &Claims, sku_id: Uuid, page: &PageQuery) -> Result<MovementPage> {
    require_sku(db, claims, sku_id).await?;
    let limit = page.limit()?;
    let after = page.after_time_int()?;
    let rows = sqlx::query_as::<_, Movement>(&format!(
        "select {MOVEMENT_COLUMNS} from stock_movement
          where sku_id = $1 and ($2::timestamptz is null or (at, stock_movement_id) < ($2, $3))
          order by at desc, stock_movement_id desc limit $4"
    ))
    .bind(sku_id)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(db)
    .await?;
    let (items, next_cursor) = page::split(rows, limit, |m| page::time_int(m.at, m.stock_movement_id));
    Ok(MovementPage { items, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: StockChangeKind, delta: i32, note: &str) -> StockChange {
        StockChange {
            kind,
            delta,
            note: note.to_string(),
        }
    }

    #[test]
    fn a_restock_adds_and_an_adjustment_needs_a_reason() {
        assert!(check_change(&change(StockChangeKind::Restock, 10, "")).is_ok());
        assert_eq!(
            check_change(&change(StockChangeKind::Restock, -1, "x"))
                .unwrap_err()
                .code(),
            "bad_delta"
        );
        assert_eq!(
            check_change(&change(StockChangeKind::Adjustment, 0, "x"))
                .unwrap_err()
                .code(),
            "bad_delta"
        );
        assert_eq!(
            check_change(&change(StockChangeKind::Adjustment, -2, " "))
                .unwrap_err()
                .code(),
            "bad_note"
        );
        assert!(check_change(&change(StockChangeKind::Adjustment, -2, "damaged")).is_ok());
        assert_eq!(
            check_change(&change(StockChangeKind::Restock, i32::MIN, ""))
                .unwrap_err()
                .code(),
            "bad_delta"
        );
    }
}
