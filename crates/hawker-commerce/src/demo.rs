//! Demo catalogue rows for `hawker seed`: a brand's products, one SKU each.
//! Fixed ids and `on conflict do nothing`, so seeding twice changes nothing.

use sqlx::PgConnection;
use uuid::Uuid;

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
}

/// Inserts `products` (and their SKUs) for `brand_id`.
pub async fn seed_catalogue(
    conn: &mut PgConnection,
    brand_id: Uuid,
    products: &[DemoProduct<'_>],
) -> sqlx::Result<()> {
    for p in products {
        sqlx::query(
            "insert into product (product_id, brand_id, name) values ($1, $2, $3) on conflict do nothing",
        )
        .bind(p.product_id)
        .bind(brand_id)
        .bind(p.name)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "insert into sku (sku_id, product_id, code, name, price_minor, currency, stock_on_hand)
             values ($1, $2, $3, $4, $5, $6, $7) on conflict do nothing",
        )
        .bind(p.sku_id)
        .bind(p.product_id)
        .bind(&p.sku_code)
        .bind(p.sku_name)
        .bind(p.price_minor)
        .bind(p.currency)
        .bind(p.stock_on_hand)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
