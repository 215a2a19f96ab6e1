//! Products and their SKUs: create, update, read, list. A brand token
//! manages its own brand's catalog only; an admin manages any. Another
//! brand's product or SKU is "not found" (its existence is no one else's
//! business); another brand's list is a 403.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use hawker_agency::page::{self, PageQuery};
use hawker_core::error::{violated_constraint, Error, Result};
use hawker_core::Claims;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::access::{may_manage, require_brand};
use crate::stock::{self, MovementReason, NewMovement};
use crate::validate;

/// A product's state: only `active` products can enter a lineup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum ProductStatus {
    Draft,
    Active,
    Archived,
}

impl ProductStatus {
    pub fn parse(s: &str) -> Option<ProductStatus> {
        match s {
            "draft" => Some(ProductStatus::Draft),
            "active" => Some(ProductStatus::Active),
            "archived" => Some(ProductStatus::Archived),
            _ => None,
        }
    }
}

/// A variant of a product: its own code, price, stock and attributes.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Sku {
    pub sku_id: Uuid,
    pub product_id: Uuid,
    pub brand_id: Uuid,
    /// The brand's own code, unique per brand.
    pub code: String,
    pub name: String,
    /// Minor units of `currency`.
    pub price_minor: i64,
    pub currency: String,
    /// The sum of the SKU's stock movements (units a deal holds are not on hand).
    pub stock_on_hand: i32,
    /// e.g. `{"size": "M", "colour": "red"}`.
    #[schema(value_type = Object, example = json!({"size": "M", "colour": "red"}))]
    pub attributes: serde_json::Value,
    pub image_urls: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) const SKU_COLUMNS: &str =
    "sku_id, product_id, brand_id, code, name, price_minor, currency::text as currency,
    stock_on_hand, attributes, image_urls, created_at, updated_at";

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Product {
    pub product_id: Uuid,
    pub brand_id: Uuid,
    pub name: String,
    pub description: String,
    pub status: ProductStatus,
    pub image_urls: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Its SKUs, oldest first.
    #[sqlx(skip)]
    pub skus: Vec<Sku>,
}

const PRODUCT_COLUMNS: &str =
    "product_id, brand_id, name, description, status, image_urls, created_at, updated_at";

/// A new SKU.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"code": "LIP-RUBY", "name": "Ruby", "price_minor": 1999, "currency": "USD",
    "attributes": {"shade": "ruby"}, "image_urls": ["https://cdn.example.com/ruby.jpg"], "stock": 500}))]
pub struct NewSku {
    /// The brand's own code: 1 to 64 of `A-Z a-z 0-9 - _ .`, unique per brand.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub code: String,
    /// 1 to 200 characters, not all white space, without control, bidi or zero-width characters.
    #[schema(schema_with = crate::schema::name)]
    pub name: String,
    #[schema(minimum = 1, maximum = 1_000_000_000_000i64)]
    pub price_minor: i64,
    /// ISO 4217, e.g. `USD`.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// At most 20; names 1 to 40, values 1 to 100 characters.
    #[serde(default)]
    #[schema(schema_with = crate::schema::attributes)]
    pub attributes: BTreeMap<String, String>,
    /// At most 10 absolute `http(s)` URLs, each at most 2,048 characters.
    #[serde(default)]
    #[schema(schema_with = crate::schema::image_urls)]
    pub image_urls: Vec<String>,
    /// Opening stock (0 to 1,000,000,000), recorded as an `opening` movement.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub stock: i32,
}

/// A new product with its SKUs.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Velvet Matte Lipstick", "description": "Long-wear matte.", "status": "active",
    "image_urls": ["https://cdn.example.com/lipstick.jpg"],
    "skus": [{"code": "LIP-RUBY", "name": "Ruby", "price_minor": 1999, "currency": "USD", "stock": 500}]}))]
pub struct NewProduct {
    /// 1 to 200 characters, not all white space, without control, bidi or zero-width characters.
    #[schema(schema_with = crate::schema::name)]
    pub name: String,
    /// At most 2,000 characters.
    #[serde(default)]
    #[schema(schema_with = crate::schema::description)]
    pub description: String,
    /// `active` if absent.
    #[serde(default)]
    pub status: Option<ProductStatus>,
    #[serde(default)]
    #[schema(schema_with = crate::schema::image_urls)]
    pub image_urls: Vec<String>,
    /// 0 to 100 SKUs.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub skus: Vec<NewSku>,
}

/// Changes to a product; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"status": "archived"}))]
pub struct ProductUpdate {
    #[serde(default)]
    #[schema(schema_with = crate::schema::name_or_null)]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(schema_with = crate::schema::description_or_null)]
    pub description: Option<String>,
    #[serde(default)]
    pub status: Option<ProductStatus>,
    #[serde(default)]
    #[schema(schema_with = crate::schema::image_urls_or_null)]
    pub image_urls: Option<Vec<String>>,
}

/// Changes to a SKU; absent fields stay as they are. Its code, currency and
/// stock do not change here (stock changes are movements).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"price_minor": 1799}))]
pub struct SkuUpdate {
    #[serde(default)]
    #[schema(schema_with = crate::schema::name_or_null)]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000_000_000i64)]
    pub price_minor: Option<i64>,
    #[serde(default)]
    #[schema(schema_with = crate::schema::attributes_or_null)]
    pub attributes: Option<BTreeMap<String, String>>,
    #[serde(default)]
    #[schema(schema_with = crate::schema::image_urls_or_null)]
    pub image_urls: Option<Vec<String>>,
}

/// A validated new SKU.
pub(crate) struct CleanSku {
    pub code: String,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
    pub attributes: BTreeMap<String, String>,
    pub image_urls: Vec<String>,
    pub stock: i32,
}

pub(crate) fn clean_sku(new: &NewSku) -> Result<CleanSku> {
    Ok(CleanSku {
        code: validate::sku_code(&new.code)?,
        name: validate::text("bad_name", "name", &new.name, 200)?,
        price_minor: validate::price(new.price_minor)?,
        currency: validate::currency(&new.currency)?,
        attributes: validate::attributes(&new.attributes)?,
        image_urls: validate::image_urls(&new.image_urls)?,
        stock: validate::opening_stock(new.stock)?,
    })
}

fn code_taken(e: sqlx::Error) -> Error {
    match violated_constraint(&e).as_deref() {
        Some("sku_brand_code") => {
            Error::conflict("sku_code_taken", "the brand already has a SKU with that code")
        }
        Some("product_brand_id_fkey") => Error::NotFound("brand"),
        _ => e.into(),
    }
}

/// Inserts a SKU (stock 0) and its opening movement.
async fn insert_sku(
    conn: &mut PgConnection,
    actor: &str,
    product_id: Uuid,
    brand_id: Uuid,
    sku: &CleanSku,
) -> Result<Uuid> {
    let sku_id = Uuid::now_v7();
    sqlx::query(
        "insert into sku (sku_id, product_id, brand_id, code, name, price_minor, currency, stock_on_hand,
                attributes, image_urls)
         values ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9)",
    )
    .bind(sku_id)
    .bind(product_id)
    .bind(brand_id)
    .bind(&sku.code)
    .bind(&sku.name)
    .bind(sku.price_minor)
    .bind(&sku.currency)
    .bind(json!(sku.attributes))
    .bind(&sku.image_urls)
    .execute(&mut *conn)
    .await
    .map_err(code_taken)?;
    if sku.stock > 0 {
        stock::record(
            conn,
            NewMovement {
                sku_id,
                delta: sku.stock,
                reason: MovementReason::Opening,
                note: "opening stock",
                actor,
                source: None,
                campaign_id: None,
            },
        )
        .await?;
    }
    Ok(sku_id)
}

/// Creates a product with its SKUs (each with its opening stock as a movement).
#[tracing::instrument(skip_all, fields(%brand_id, caller = %claims.sub))]
pub async fn create_product(
    db: &PgPool,
    claims: &Claims,
    brand_id: Uuid,
    new: NewProduct,
) -> Result<Product> {
    require_brand(claims, brand_id)?;
    let name = validate::text("bad_name", "name", &new.name, 200)?;
    let description = validate::description(&new.description)?;
    let image_urls = validate::image_urls(&new.image_urls)?;
    if new.skus.len() > 100 {
        return Err(Error::invalid(
            "too_many_skus",
            "a product is created with at most 100 SKUs",
        ));
    }
    let skus = new.skus.iter().map(clean_sku).collect::<Result<Vec<_>>>()?;
    let product_id = Uuid::now_v7();
    let mut tx = db.begin().await?;
    sqlx::query(
        "insert into product (product_id, brand_id, name, description, status, image_urls)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(product_id)
    .bind(brand_id)
    .bind(&name)
    .bind(&description)
    .bind(new.status.unwrap_or(ProductStatus::Active))
    .bind(&image_urls)
    .execute(&mut *tx)
    .await
    .map_err(code_taken)?;
    for sku in &skus {
        insert_sku(&mut tx, &claims.sub, product_id, brand_id, sku).await?;
    }
    tx.commit().await?;
    product(db, product_id).await
}

/// Adds a SKU to a product.
#[tracing::instrument(skip_all, fields(%product_id, caller = %claims.sub))]
pub async fn create_sku(db: &PgPool, claims: &Claims, product_id: Uuid, new: NewSku) -> Result<Sku> {
    let product = managed_product(db, claims, product_id).await?;
    let sku = clean_sku(&new)?;
    let mut tx = db.begin().await?;
    let sku_id = insert_sku(&mut tx, &claims.sub, product_id, product.brand_id, &sku).await?;
    tx.commit().await?;
    sku_row(db, sku_id).await
}

async fn product(db: &PgPool, product_id: Uuid) -> Result<Product> {
    let mut product = sqlx::query_as::<_, Product>(&format!(
        "select {PRODUCT_COLUMNS} from product where product_id = $1"
    ))
    .bind(product_id)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound("product"))?;
    product.skus = sqlx::query_as::<_, Sku>(&format!(
        "select {SKU_COLUMNS} from sku where product_id = $1 order by created_at, sku_id"
    ))
    .bind(product_id)
    .fetch_all(db)
    .await?;
    Ok(product)
}

/// The product, if the caller manages its brand; "not found" otherwise.
async fn managed_product(db: &PgPool, claims: &Claims, product_id: Uuid) -> Result<Product> {
    let product = product(db, product_id).await?;
    if may_manage(claims, product.brand_id) {
        Ok(product)
    } else {
        Err(Error::NotFound("product"))
    }
}

pub(crate) async fn sku_row(db: &PgPool, sku_id: Uuid) -> Result<Sku> {
    sqlx::query_as::<_, Sku>(&format!("select {SKU_COLUMNS} from sku where sku_id = $1"))
        .bind(sku_id)
        .fetch_optional(db)
        .await?
        .ok_or(Error::NotFound("sku"))
}

/// The SKU, if the caller manages its brand; "not found" otherwise.
pub(crate) async fn managed_sku(db: &PgPool, claims: &Claims, sku_id: Uuid) -> Result<Sku> {
    let sku = sku_row(db, sku_id).await?;
    if may_manage(claims, sku.brand_id) {
        Ok(sku)
    } else {
        Err(Error::NotFound("sku"))
    }
}

/// A product with its SKUs (its brand and admins).
pub async fn get_product(db: &PgPool, claims: &Claims, product_id: Uuid) -> Result<Product> {
    managed_product(db, claims, product_id).await
}

/// A SKU (its brand and admins).
pub async fn get_sku(db: &PgPool, claims: &Claims, sku_id: Uuid) -> Result<Sku> {
    managed_sku(db, claims, sku_id).await
}

/// Changes a product's name, description, status or images.
#[tracing::instrument(skip_all, fields(%product_id, caller = %claims.sub))]
pub async fn update_product(
    db: &PgPool,
    claims: &Claims,
    product_id: Uuid,
    update: ProductUpdate,
) -> Result<Product> {
    managed_product(db, claims, product_id).await?;
    let name = update
        .name
        .as_deref()
        .map(|n| validate::text("bad_name", "name", n, 200))
        .transpose()?;
    let description = update
        .description
        .as_deref()
        .map(validate::description)
        .transpose()?;
    let image_urls = update
        .image_urls
        .as_deref()
        .map(validate::image_urls)
        .transpose()?;
    sqlx::query(
        "update product set name = coalesce($2, name), description = coalesce($3, description),
                status = coalesce($4, status), image_urls = coalesce($5, image_urls), updated_at = now()
          where product_id = $1",
    )
    .bind(product_id)
    .bind(name)
    .bind(description)
    .bind(update.status)
    .bind(image_urls)
    .execute(db)
    .await?;
    product(db, product_id).await
}

/// Changes a SKU's name, price, attributes or images.
#[tracing::instrument(skip_all, fields(%sku_id, caller = %claims.sub))]
pub async fn update_sku(db: &PgPool, claims: &Claims, sku_id: Uuid, update: SkuUpdate) -> Result<Sku> {
    managed_sku(db, claims, sku_id).await?;
    let name = update
        .name
        .as_deref()
        .map(|n| validate::text("bad_name", "name", n, 200))
        .transpose()?;
    let price = update.price_minor.map(validate::price).transpose()?;
    let attributes = update.attributes.as_ref().map(validate::attributes).transpose()?;
    let image_urls = update
        .image_urls
        .as_deref()
        .map(validate::image_urls)
        .transpose()?;
    sqlx::query(
        "update sku set name = coalesce($2, name), price_minor = coalesce($3, price_minor),
                attributes = coalesce($4, attributes), image_urls = coalesce($5, image_urls), updated_at = now()
          where sku_id = $1",
    )
    .bind(sku_id)
    .bind(name)
    .bind(price)
    .bind(attributes.map(|a| json!(a)))
    .bind(image_urls)
    .execute(db)
    .await?;
    sku_row(db, sku_id).await
}

/// `?status=&q=` of the product list.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProductFilter {
    /// Only products in this status.
    #[serde(default)]
    pub status: Option<ProductStatus>,
    /// Only products whose name, or one of whose SKU codes, contains this
    /// text (case-insensitive), 1 to 100 characters.
    #[serde(default)]
    #[param(min_length = 1, max_length = 100)]
    pub q: Option<String>,
}

/// A page of products with their SKUs, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProductPage {
    pub items: Vec<Product>,
    /// The `cursor` of the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A brand's products (that brand and admins), newest first, a page at a time.
#[tracing::instrument(skip_all, fields(%brand_id, caller = %claims.sub))]
pub async fn list_products(
    db: &PgPool,
    claims: &Claims,
    brand_id: Uuid,
    filter: &ProductFilter,
    page: &PageQuery,
) -> Result<ProductPage> {
    require_brand(claims, brand_id)?;
    let limit = page.limit()?;
    let after = page.after_time_id()?;
    let q = match filter.q.as_deref() {
        Some(q) if q.is_empty() || q.chars().count() > 100 => {
            return Err(Error::invalid("bad_query", "q must be 1 to 100 characters"));
        }
        // Text in Postgres holds no NUL, so no name or code contains one
        // (and Postgres refuses it as a parameter).
        Some(q) if q.contains('\0') => {
            return Ok(ProductPage {
                items: Vec::new(),
                next_cursor: None,
            });
        }
        Some(q) => Some(format!(
            "%{}%",
            q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
        )),
        None => None,
    };
    let rows = sqlx::query_as::<_, Product>(&format!(
        "select {PRODUCT_COLUMNS} from product p
          where brand_id = $1 and ($2::text is null or status = $2)
            and ($3::text is null or name ilike $3
                 or exists (select 1 from sku s where s.product_id = p.product_id and s.code ilike $3))
            and ($4::timestamptz is null or (created_at, product_id) < ($4, $5))
          order by created_at desc, product_id desc limit $6"
    ))
    .bind(brand_id)
    .bind(filter.status)
    .bind(q)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(db)
    .await?;
    let (mut items, next_cursor) = page::split(rows, limit, |p| page::time_id(p.created_at, p.product_id));
    let ids: Vec<Uuid> = items.iter().map(|p| p.product_id).collect();
    let skus = sqlx::query_as::<_, Sku>(&format!(
        "select {SKU_COLUMNS} from sku where product_id = any($1) order by created_at, sku_id"
    ))
    .bind(&ids)
    .fetch_all(db)
    .await?;
    for sku in skus {
        if let Some(p) = items.iter_mut().find(|p| p.product_id == sku.product_id) {
            p.skus.push(sku);
        }
    }
    Ok(ProductPage { items, next_cursor })
}

/// These products' names, by id (for reports; unknown ids are left out).
pub async fn product_names(db: &PgPool, product_ids: &[Uuid]) -> Result<HashMap<Uuid, String>> {
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("select product_id, name from product where product_id = any($1)")
            .bind(product_ids)
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().collect())
}
