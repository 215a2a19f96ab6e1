//! `hawker seed`: idempotent demo data. Fixed ids, so running it twice
//! changes nothing and the README can name them.

use anyhow::Context;
use chrono::{Duration, TimeZone, Utc};
use hawker_agency::demo::DemoHost;
use hawker_catalog::demo::DemoProduct;
use sqlx::PgPool;
use uuid::Uuid;

pub const AGENCY_ID: Uuid = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_a001);
pub const HOST_IDS: [Uuid; 2] = [
    Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_b001),
    Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_b002),
];
pub const BRAND_ID: Uuid = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_c001);
pub const SESSION_ID: Uuid = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_d001);
/// The accepted campaign under which the agency sells the brand's SKUs.
pub const CAMPAIGN_ID: Uuid = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_f001);

const PRODUCTS: [(u128, &str, &str, i64, i32); 3] = [
    (0xe001, "Velvet Matte Lipstick", "Ruby Woo", 1999, 5000),
    (0xe002, "Glow Serum 30 ml", "Vitamin C", 3450, 2000),
    (0xe003, "Silk Scarf", "Crimson", 5900, 800),
];

#[derive(Debug)]
pub struct Seeded {
    pub agency_id: Uuid,
    pub host_ids: [Uuid; 2],
    pub brand_id: Uuid,
    pub session_id: Uuid,
}

/// Seeds the demo if the database holds no agency yet (a fresh development
/// database); true if it did. Runs once: afterwards the database is not empty.
pub async fn seed_if_empty(db: &PgPool) -> anyhow::Result<bool> {
    if hawker_agency::demo::has_agencies(db).await? {
        return Ok(false);
    }
    seed(db).await?;
    Ok(true)
}

/// Seeds the demo rows through the crates that own them, in one transaction.
#[tracing::instrument(skip_all)]
pub async fn seed(db: &PgPool) -> anyhow::Result<Seeded> {
    let mut tx = db.begin().await?;
    let mut hosts = Vec::new();
    for (i, (host_id, handle, display_name)) in [
        (HOST_IDS[0], "mia_live", "Mia Chen"),
        (HOST_IDS[1], "leo_deals", "Leo Park"),
    ]
    .into_iter()
    .enumerate()
    {
        let joined_at = Utc
            .with_ymd_and_hms(2026, 1, 1 + i as u32, 0, 0, 0)
            .single()
            .context("seed date")?;
        hosts.push(DemoHost {
            host_id,
            handle,
            display_name,
            joined_at,
        });
    }
    hawker_agency::demo::seed_parties(
        &mut tx,
        AGENCY_ID,
        "Starlight MCN",
        &hosts,
        BRAND_ID,
        "Aurora Beauty",
    )
    .await?;
    let products: Vec<DemoProduct> = PRODUCTS
        .iter()
        .map(|&(n, name, sku_name, price_minor, stock_on_hand)| DemoProduct {
            product_id: Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0000 | n),
            sku_id: Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0001_0000 | n),
            name,
            sku_code: format!("SKU-{n:X}"),
            sku_name,
            price_minor,
            currency: "USD",
            stock_on_hand,
            // Deals may go down to a quarter of the list price.
            floor_price_minor: price_minor / 4,
        })
        .collect();
    hawker_catalog::demo::seed_catalogue(&mut tx, BRAND_ID, &products).await?;
    let campaign_start = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .context("seed date")?;
    hawker_agency::demo::seed_campaign(
        &mut tx,
        CAMPAIGN_ID,
        BRAND_ID,
        AGENCY_ID,
        "Aurora x Starlight",
        campaign_start,
    )
    .await?;
    hawker_catalog::demo::seed_campaign_skus(&mut tx, CAMPAIGN_ID, &products).await?;
    // Today, 18:00 to 22:00 UTC, whatever day the seed runs. A session still
    // only scheduled moves to today; one that went live keeps its history.
    let today = Utc::now()
        .date_naive()
        .and_hms_opt(18, 0, 0)
        .context("seed time")?
        .and_utc();
    hawker_agency::demo::seed_session(
        &mut tx,
        SESSION_ID,
        AGENCY_ID,
        BRAND_ID,
        "Glow-Up Live",
        (today, today + Duration::hours(4)),
    )
    .await?;
    tx.commit().await?;
    Ok(Seeded {
        agency_id: AGENCY_ID,
        host_ids: HOST_IDS,
        brand_id: BRAND_ID,
        session_id: SESSION_ID,
    })
}
