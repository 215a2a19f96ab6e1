//! `hawker seed`: idempotent demo data. Fixed ids, so running it twice
//! changes nothing and the README can name them.

use anyhow::Context;
use chrono::{Duration, TimeZone, Utc};
use hawker_agency::access::SessionStatus;
use sqlx::PgPool;
use uuid::Uuid;

pub const AGENCY_ID: Uuid = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_a001);
pub const HOST_IDS: [Uuid; 2] = [
    Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_b001),
    Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_b002),
];
pub const BRAND_ID: Uuid = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_c001);
pub const SESSION_ID: Uuid = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_d001);

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

#[tracing::instrument(skip_all)]
pub async fn seed(db: &PgPool) -> anyhow::Result<Seeded> {
    let mut tx = db.begin().await?;
    sqlx::query("insert into agency (agency_id, name) values ($1, 'Starlight MCN') on conflict do nothing")
        .bind(AGENCY_ID)
        .execute(&mut *tx)
        .await?;
    for (i, (host_id, handle, name)) in [
        (HOST_IDS[0], "mia_live", "Mia Chen"),
        (HOST_IDS[1], "leo_deals", "Leo Park"),
    ]
    .into_iter()
    .enumerate()
    {
        sqlx::query(
            "insert into host (host_id, handle, display_name) values ($1, $2, $3) on conflict do nothing",
        )
        .bind(host_id)
        .bind(handle)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        let joined = Utc
            .with_ymd_and_hms(2026, 1, 1 + i as u32, 0, 0, 0)
            .single()
            .context("seed date")?;
        sqlx::query(
            "insert into agency_host (agency_id, host_id, joined_at) values ($1, $2, $3)
             on conflict do nothing",
        )
        .bind(AGENCY_ID)
        .bind(host_id)
        .bind(joined)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("insert into brand (brand_id, name) values ($1, 'Aurora Beauty') on conflict do nothing")
        .bind(BRAND_ID)
        .execute(&mut *tx)
        .await?;
    for (n, name, variant, price, stock) in PRODUCTS {
        let product_id = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0000 | n);
        let sku_id = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0001_0000 | n);
        sqlx::query(
            "insert into product (product_id, brand_id, name) values ($1, $2, $3) on conflict do nothing",
        )
        .bind(product_id)
        .bind(BRAND_ID)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "insert into sku (sku_id, product_id, code, name, price_minor, currency, stock_on_hand)
             values ($1, $2, $3, $4, $5, 'USD', $6) on conflict do nothing",
        )
        .bind(sku_id)
        .bind(product_id)
        .bind(format!("SKU-{n:X}"))
        .bind(variant)
        .bind(price)
        .bind(stock)
        .execute(&mut *tx)
        .await?;
    }
    // Today, 18:00 to 22:00 UTC, whatever day the seed runs. A session still
    // only scheduled moves to today; one that went live keeps its history.
    let today = Utc::now()
        .date_naive()
        .and_hms_opt(18, 0, 0)
        .context("seed time")?
        .and_utc();
    sqlx::query(
        "insert into live_session (session_id, agency_id, brand_id, title, planned_start, planned_end)
         values ($1, $2, $3, 'Glow-Up Live', $4, $5)
         on conflict (session_id) do update
            set planned_start = excluded.planned_start, planned_end = excluded.planned_end
          where live_session.status = $6",
    )
    .bind(SESSION_ID)
    .bind(AGENCY_ID)
    .bind(BRAND_ID)
    .bind(today)
    .bind(today + Duration::hours(4))
    .bind(SessionStatus::Scheduled)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Seeded {
        agency_id: AGENCY_ID,
        host_ids: HOST_IDS,
        brand_id: BRAND_ID,
        session_id: SESSION_ID,
    })
}
