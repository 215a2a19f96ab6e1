//! The SKUs of a campaign, their price floors and allocations, and the rule
//! that closes "any agency sells any brand's stock":
//! - a SKU enters a session's lineup only under an *active* campaign
//!   (`hawker_agency::campaigns::active_campaigns`) between the session's
//!   agency and the SKU's brand that lists it ([`sellable`]);
//! - a deal takes its units from the brand's stock only under that campaign,
//!   at or above the SKU's floor unless the campaign allows going below, and
//!   within the campaign's allocation when it has one; units allocated to
//!   the brand's other campaigns are not available to it ([`take_units`]).
//!
//! Auctions and giveaways take their units the same way, naming themselves
//! ([`UnitSource`]) instead of a deal.
//!
//! `campaign_sku.units_taken` counts the units a campaign's deals (auctions,
//! giveaways) hold or sold: a deal's unsold units, and units of its orders
//! that expire or are cancelled after it ended, come back ([`give_back`]);
//! so do an auction's or a giveaway's units it did not hand out, and those
//! of its orders that expire or are cancelled.

use hawker_agency::campaigns::{self, CampaignStatus};
use hawker_core::error::{violated_constraint, Error, Result};
use hawker_core::Claims;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub use crate::stock::UnitSource;
use crate::stock::{self, insufficient_stock, MovementReason, NewMovement};
use crate::validate;

/// A SKU of a campaign, with what a lineup picker shows.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CampaignSku {
    pub campaign_id: Uuid,
    pub sku_id: Uuid,
    pub product_id: Uuid,
    pub product_name: String,
    pub product_status: crate::products::ProductStatus,
    pub code: String,
    pub sku_name: String,
    /// The brand's list price, minor units of `currency`.
    pub price_minor: i64,
    pub currency: String,
    pub stock_on_hand: i32,
    /// The lowest price per unit a deal (and an order after its coupon) may have.
    pub floor_price_minor: i64,
    /// Units the campaign may take in all; null for no allocation.
    pub allocated_units: Option<i32>,
    /// Units its deals hold or sold.
    pub units_taken: i32,
}

const CAMPAIGN_SKU_SELECT: &str = "select c.campaign_id, s.sku_id, s.product_id, p.name as product_name,
        p.status as product_status, s.code, s.name as sku_name, s.price_minor, s.currency::text as currency,
        s.stock_on_hand, c.floor_price_minor, c.allocated_units, c.units_taken
   from campaign_sku c join sku s using (sku_id) join product p on p.product_id = s.product_id";

/// One entry of a campaign: a SKU, or every SKU a product has now. Its
/// schema states the one-of rule ([`crate::schema::campaign_entry`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSkuEntry {
    /// Exactly one of `sku_id` and `product_id`.
    #[serde(default)]
    pub sku_id: Option<Uuid>,
    /// Every SKU the product has now, each with this floor and allocation.
    #[serde(default)]
    pub product_id: Option<Uuid>,
    /// Minor units of the SKU's currency, 1 to 1,000,000,000,000.
    pub floor_price_minor: i64,
    /// Units the campaign may take in all (0 to 1,000,000,000); none if absent.
    #[serde(default)]
    pub allocated_units: Option<i32>,
}

impl utoipa::PartialSchema for CampaignSkuEntry {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::schema::campaign_entry().into()
    }
}

impl utoipa::ToSchema for CampaignSkuEntry {}

/// The SKUs to add to a campaign or change in it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"items": [
    {"sku_id": "0190b7a0-0000-7000-8000-00000000e001", "floor_price_minor": 1500, "allocated_units": 300},
    {"product_id": "0190b7a0-0000-7000-8000-00000000f001", "floor_price_minor": 2500}]}))]
pub struct CampaignSkus {
    /// 1 to 500 entries.
    #[schema(min_items = 1, max_items = 500)]
    pub items: Vec<CampaignSkuEntry>,
}

/// Adds SKUs to a campaign or changes their floor and allocation. While the
/// campaign is proposed either party may; once accepted, its brand (and
/// admins): the agency accepted the campaign, the brand keeps its prices.
#[tracing::instrument(skip_all, fields(%campaign_id, caller = %claims.sub))]
pub async fn put_skus(
    db: &PgPool,
    claims: &Claims,
    campaign_id: Uuid,
    put: CampaignSkus,
) -> Result<Vec<CampaignSku>> {
    let campaign = campaigns::campaign_party(db, claims, campaign_id).await?;
    match campaign.status {
        CampaignStatus::Declined => {
            return Err(Error::conflict("campaign_declined", "the campaign was declined"));
        }
        CampaignStatus::Accepted if !crate::access::may_manage(claims, campaign.brand_id) => {
            return Err(Error::forbidden(
                "once a campaign is accepted, only its brand changes its SKUs",
            ));
        }
        _ => {}
    }
    if put.items.is_empty() || put.items.len() > 500 {
        return Err(Error::invalid("bad_items", "items must hold 1 to 500 entries"));
    }
    let mut tx = db.begin().await?;
    for entry in &put.items {
        validate::price(entry.floor_price_minor)
            .map_err(|_| Error::invalid("bad_floor", "floor_price_minor must be 1 to 1000000000000"))?;
        if entry
            .allocated_units
            .is_some_and(|u| !(0..=1_000_000_000).contains(&u))
        {
            return Err(Error::invalid(
                "bad_allocation",
                "allocated_units must be 0 to 1000000000",
            ));
        }
        let skus: Vec<Uuid> = match (entry.sku_id, entry.product_id) {
            (Some(sku), None) => {
                sqlx::query_scalar("select sku_id from sku where sku_id = $1 and brand_id = $2")
                    .bind(sku)
                    .bind(campaign.brand_id)
                    .fetch_all(&mut *tx)
                    .await?
            }
            (None, Some(product)) => sqlx::query_scalar(
                "select sku_id from sku where product_id = $1 and brand_id = $2 order by created_at, sku_id",
            )
            .bind(product)
            .bind(campaign.brand_id)
            .fetch_all(&mut *tx)
            .await?,
            _ => {
                return Err(Error::invalid(
                    "bad_items",
                    "each entry names exactly one of sku_id and product_id",
                ));
            }
        };
        if skus.is_empty() {
            return Err(Error::invalid(
                "not_brand_sku",
                "every SKU of a campaign belongs to the campaign's brand (or the product has no SKUs)",
            ));
        }
        sqlx::query(
            "insert into campaign_sku (campaign_id, sku_id, floor_price_minor, allocated_units)
             select $1, unnest($2::uuid[]), $3, $4
             on conflict (campaign_id, sku_id) do update
                set floor_price_minor = excluded.floor_price_minor, allocated_units = excluded.allocated_units",
        )
        .bind(campaign_id)
        .bind(&skus)
        .bind(entry.floor_price_minor)
        .bind(entry.allocated_units)
        .execute(&mut *tx)
        .await
        .map_err(|e| match violated_constraint(&e).as_deref() {
            Some("campaign_sku_within_allocation") => Error::conflict(
                "allocation_below_taken",
                "the campaign's deals already took more units than that allocation",
            ),
            _ => e.into(),
        })?;
    }
    tx.commit().await?;
    skus_of(db, campaign_id).await
}

async fn skus_of(db: &PgPool, campaign_id: Uuid) -> Result<Vec<CampaignSku>> {
    Ok(sqlx::query_as::<_, CampaignSku>(&format!(
        "{CAMPAIGN_SKU_SELECT} where c.campaign_id = $1 order by p.name, s.code"
    ))
    .bind(campaign_id)
    .fetch_all(db)
    .await?)
}

/// A campaign's SKUs (its parties and admins).
pub async fn list_skus(db: &PgPool, claims: &Claims, campaign_id: Uuid) -> Result<Vec<CampaignSku>> {
    campaigns::campaign_party(db, claims, campaign_id).await?;
    skus_of(db, campaign_id).await
}

/// The SKUs `agency_id` may put in a lineup now: those of its active
/// campaigns (with `brand_id`, the session's brand, when it has one) whose
/// product is active.
pub async fn sellable_skus(db: &PgPool, agency_id: Uuid, brand_id: Option<Uuid>) -> Result<Vec<CampaignSku>> {
    let mut conn = db.acquire().await?;
    let ids = campaigns::active_campaign_ids_of_agency(&mut conn, agency_id, brand_id).await?;
    Ok(sqlx::query_as::<_, CampaignSku>(&format!(
        "{CAMPAIGN_SKU_SELECT} where c.campaign_id = any($1) and p.status = 'active' order by p.name, s.code"
    ))
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?)
}

/// Why and under which campaign a SKU may enter a lineup.
#[derive(Debug, Clone, Copy)]
pub struct Sellable {
    pub campaign_id: Uuid,
    pub brand_id: Uuid,
}

/// The campaign under which `agency_id` may sell `sku_id` now (the oldest
/// active one listing it). 404 for no such SKU; 409 `product_not_active`;
/// 409 `sku_not_in_campaign` when no active campaign between the agency and
/// the SKU's brand lists it.
pub async fn sellable(db: &PgPool, agency_id: Uuid, sku_id: Uuid) -> Result<Sellable> {
    let mut conn = db.acquire().await?;
    let row: Option<(Uuid, crate::products::ProductStatus)> = sqlx::query_as(
        "select s.brand_id, p.status from sku s join product p on p.product_id = s.product_id where s.sku_id = $1",
    )
    .bind(sku_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (brand_id, status) = row.ok_or(Error::NotFound("sku"))?;
    if status != crate::products::ProductStatus::Active {
        return Err(Error::conflict(
            "product_not_active",
            "the SKU's product is a draft or archived",
        ));
    }
    let active = campaigns::active_campaigns(&mut conn, agency_id, brand_id).await?;
    let ids: Vec<Uuid> = active.iter().map(|c| c.campaign_id).collect();
    let campaign: Option<Uuid> = sqlx::query_scalar(
        "select campaign_id from campaign_sku where sku_id = $1 and campaign_id = any($2)
          order by array_position($2, campaign_id) limit 1",
    )
    .bind(sku_id)
    .bind(&ids)
    .fetch_optional(&mut *conn)
    .await?;
    let campaign_id = campaign.ok_or_else(not_in_campaign)?;
    Ok(Sellable {
        campaign_id,
        brand_id,
    })
}

fn not_in_campaign() -> Error {
    Error::conflict(
        "sku_not_in_campaign",
        "the SKU is in no active campaign between the session's agency and the SKU's brand",
    )
}

/// A deal, an auction or a giveaway taking units from a SKU under a campaign.
#[derive(Debug, Clone, Copy)]
pub struct TakeUnits<'a> {
    /// The lineup item's campaign (none for items older than campaigns).
    pub campaign_id: Option<Uuid>,
    pub sku_id: Uuid,
    pub quantity: i32,
    /// The price per unit held to the campaign's floor: a deal's price, an
    /// auction's reserve. `None` checks no floor (a giveaway's prizes are
    /// free; whether a giveaway may hand out the SKU is the caller's rule).
    pub price_minor: Option<i64>,
    /// What takes the units; the movement names it.
    pub source: UnitSource,
    pub actor: &'a str,
}

/// What a deal (an auction, a giveaway) took units under.
#[derive(Debug, Clone, Copy)]
pub struct Taken {
    pub campaign_id: Uuid,
    /// The floor orders of the deal must respect after their coupon; none when
    /// the campaign allows going below it.
    pub floor_price_minor: Option<i64>,
}

/// Takes a deal's units in the caller's transaction: checks the campaign is
/// active and lists the SKU, the price is at or above the floor (unless the
/// campaign allows below), the campaign's allocation, and that the units are
/// not allocated to the brand's other campaigns; records the movement.
/// Holds the SKU's row lock (so concurrent deals and restocks of the SKU
/// take turns) until the caller commits.
pub async fn take_units(conn: &mut PgConnection, take: TakeUnits<'_>) -> Result<Taken> {
    let campaign_id = take.campaign_id.ok_or_else(not_in_campaign)?;
    let active = campaigns::active_campaign(conn, campaign_id)
        .await?
        .ok_or_else(|| {
            Error::conflict(
                "campaign_not_active",
                "the lineup item's campaign is not active (not accepted, not started, or ended)",
            )
        })?;
    let (on_hand, brand_id): (i32, Uuid) =
        sqlx::query_as("select stock_on_hand, brand_id from sku where sku_id = $1 for update")
            .bind(take.sku_id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(Error::NotFound("sku"))?;
    let (floor, allocated, taken): (i64, Option<i32>, i32) = sqlx::query_as(
        "select floor_price_minor, allocated_units, units_taken from campaign_sku
          where campaign_id = $1 and sku_id = $2 for update",
    )
    .bind(campaign_id)
    .bind(take.sku_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(not_in_campaign)?;
    if !active.allow_below_floor && take.price_minor.is_some_and(|price| price < floor) {
        return Err(Error::invalid(
            "price_below_floor",
            format!("the campaign's floor for this SKU is {floor} minor units"),
        ));
    }
    if let Some(allocated) = allocated {
        if i64::from(taken) + i64::from(take.quantity) > i64::from(allocated) {
            return Err(Error::conflict(
                "allocation_exhausted",
                format!(
                    "the campaign has {} of its {allocated} allocated units left",
                    allocated.saturating_sub(taken).max(0)
                ),
            ));
        }
    }
    let holding = campaigns::holding_campaign_ids(conn, brand_id).await?;
    let reserved: i64 = sqlx::query_scalar(
        "select coalesce(sum(greatest(allocated_units - units_taken, 0)), 0)::bigint from campaign_sku
          where sku_id = $1 and campaign_id = any($2) and campaign_id <> $3 and allocated_units is not null",
    )
    .bind(take.sku_id)
    .bind(&holding)
    .bind(campaign_id)
    .fetch_one(&mut *conn)
    .await?;
    if i64::from(on_hand) - reserved < i64::from(take.quantity) {
        return Err(if reserved > 0 {
            Error::conflict(
                "insufficient_stock",
                "the SKU does not have that many units on hand that are not allocated to other campaigns",
            )
        } else {
            insufficient_stock()
        });
    }
    sqlx::query(
        "update campaign_sku set units_taken = units_taken + $3 where campaign_id = $1 and sku_id = $2",
    )
    .bind(campaign_id)
    .bind(take.sku_id)
    .bind(take.quantity)
    .execute(&mut *conn)
    .await?;
    stock::record(
        conn,
        NewMovement {
            sku_id: take.sku_id,
            delta: -take.quantity,
            reason: take.source.allocated(),
            note: "",
            actor: take.actor,
            source: Some(take.source),
            campaign_id: Some(campaign_id),
        },
    )
    .await?;
    Ok(Taken {
        campaign_id,
        floor_price_minor: (!active.allow_below_floor).then_some(floor),
    })
}

/// Why units come back to a SKU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returning {
    /// The source ended (or was voided) and gives back what it did not sell
    /// or hand out (`deal_returned`, `auction_returned`, `giveaway_returned`).
    Unsold,
    /// An order of the source expired or was cancelled (`order_released`).
    OrderReleased,
}

/// Units coming back from a deal, an auction or a giveaway.
#[derive(Debug, Clone, Copy)]
pub struct GiveBack<'a> {
    pub campaign_id: Option<Uuid>,
    pub sku_id: Uuid,
    pub units: i32,
    pub why: Returning,
    /// Where the units were; the movement names it.
    pub source: UnitSource,
    pub actor: &'a str,
}

/// Gives units back to the SKU (and to the campaign's count) in the caller's
/// transaction. Nothing for zero units.
pub async fn give_back(conn: &mut PgConnection, back: GiveBack<'_>) -> Result<()> {
    if back.units <= 0 {
        return Ok(());
    }
    stock::record(
        conn,
        NewMovement {
            sku_id: back.sku_id,
            delta: back.units,
            reason: match back.why {
                Returning::Unsold => back.source.returned(),
                Returning::OrderReleased => MovementReason::OrderReleased,
            },
            note: "",
            actor: back.actor,
            source: Some(back.source),
            campaign_id: back.campaign_id,
        },
    )
    .await?;
    if let Some(campaign_id) = back.campaign_id {
        sqlx::query(
            "update campaign_sku set units_taken = greatest(units_taken - $3, 0)
              where campaign_id = $1 and sku_id = $2",
        )
        .bind(campaign_id)
        .bind(back.sku_id)
        .bind(back.units)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
