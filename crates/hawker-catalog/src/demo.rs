//! Demo catalogue rows for `hawker seed`: a brand's products, one SKU each,
//! with their opening stock as a movement, and the SKUs of the demo
//! campaign. Fixed ids and `on conflict do nothing`, so seeding twice
//! changes nothing.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::stock::{self, MovementReason, NewMovement};

/// A product with its one SKU.
pub struct DemoProduct<'a> {
    pub product_id: Uuid,
    pub sku_id: Uuid,
    pub name: &'a str,
    pub sku_code: String,
    pub sku_name: &'a str,
    pub price_minor: i64,
    pub currency: &'a str,
    pub stock_on_hand: i32,
    /// The demo campaign's floor for the SKU.
    pub floor_price_minor: i64,
}

/// Inserts `products` (and their SKUs, with opening stock) for `brand_id`.
pub async fn seed_catalogue(
    conn: &mut PgConnection,
    brand_id: Uuid,
    products: &[DemoProduct<'_>],
) -> crate::Result<()> {
    for p in products {
        sqlx::query(
            "insert into product (product_id, brand_id, name) values ($1, $2, $3) on conflict do nothing",
        )
        .bind(p.product_id)
        .bind(brand_id)
        .bind(p.name)
        .execute(&mut *conn)
        .await?;
        let inserted = sqlx::query(
            "insert into sku (sku_id, product_id, brand_id, code, name, price_minor, currency, stock_on_hand)
             values ($1, $2, $3, $4, $5, $6, $7, 0) on conflict do nothing",
        )
        .bind(p.sku_id)
        .bind(p.product_id)
        .bind(brand_id)
        .bind(&p.sku_code)
        .bind(p.sku_name)
        .bind(p.price_minor)
        .bind(p.currency)
        .execute(&mut *conn)
        .await?;
        if inserted.rows_affected() == 1 && p.stock_on_hand > 0 {
            stock::record(
                conn,
                NewMovement {
                    sku_id: p.sku_id,
                    delta: p.stock_on_hand,
                    reason: MovementReason::Opening,
                    note: "demo seed",
                    actor: "seed",
                    source: None,
                    campaign_id: None,
                },
            )
            .await?;
        }
    }
    Ok(())
}

/// Puts the products' SKUs in `campaign_id` at their floors.
pub async fn seed_campaign_skus(
    conn: &mut PgConnection,
    campaign_id: Uuid,
    products: &[DemoProduct<'_>],
) -> crate::Result<()> {
    for p in products {
        sqlx::query(
            "insert into campaign_sku (campaign_id, sku_id, floor_price_minor) values ($1, $2, $3)
             on conflict do nothing",
        )
        .bind(campaign_id)
        .bind(p.sku_id)
        .bind(p.floor_price_minor)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
