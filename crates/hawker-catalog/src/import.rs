//! Bulk import of a brand's catalog from CSV or JSON lines: up to
//! [`MAX_ROWS`] SKUs in one request, each row validated on its own. Good
//! rows are written in one transaction; bad rows are reported by number
//! (the first data row is row 1; a CSV header and blank lines are not rows)
//! and change nothing. Rows are keyed by the brand's own SKU code, so
//! importing the same file again changes nothing: a new code creates a SKU
//! (its `stock` becomes an `opening` movement), a known code updates the
//! SKU's product, name, price, attributes and images if they differ (its
//! stock changes only through movements, so `stock` is ignored). Products are
//! matched by exact name within the brand, and created when new.

use std::collections::{BTreeMap, HashMap, HashSet};

use hawker_core::error::{Error, Result};
use hawker_core::Claims;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::access::require_brand;
use crate::products::{clean_sku, CleanSku, NewSku, ProductStatus};
use crate::stock::MovementReason;
use crate::validate;

/// The most rows one import may hold.
pub const MAX_ROWS: usize = 20_000;
/// The largest import body, in bytes.
pub const MAX_BYTES: usize = 8 * 1024 * 1024;

/// The columns a CSV header may name.
const COLUMNS: [&str; 9] = [
    "product_name",
    "sku_code",
    "sku_name",
    "price_minor",
    "currency",
    "stock",
    "attributes",
    "image_urls",
    "status",
];
const REQUIRED: [&str; 5] = ["product_name", "sku_code", "sku_name", "price_minor", "currency"];

/// The body's format, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    /// `text/csv`: a header row, then one SKU per row.
    Csv,
    /// `application/x-ndjson` (or `application/jsonl`): one JSON object per line.
    JsonLines,
}

/// One row of an import, as JSON lines carry it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    product_name: String,
    sku_code: String,
    sku_name: String,
    price_minor: i64,
    currency: String,
    #[serde(default)]
    stock: i32,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default)]
    image_urls: Vec<String>,
    #[serde(default)]
    status: Option<ProductStatus>,
}

/// A row that passed validation.
struct Row {
    number: usize,
    product_name: String,
    status: ProductStatus,
    sku: CleanSku,
}

/// A refused row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RowError {
    /// The row's number: the first data row is 1.
    pub row: usize,
    /// Its SKU code, when it could be read.
    pub sku_code: Option<String>,
    /// e.g. `bad_price`, `bad_currency`, `duplicate_sku_code`, `currency_changed`.
    pub error: &'static str,
    pub message: String,
}

/// What an import did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"rows": 5000, "created": 4997, "updated": 0, "unchanged": 0, "failed": 3,
    "errors": [{"row": 17, "sku_code": "LIP-17", "error": "bad_price", "message": "price_minor must be 1 to 1000000000000"}]}))]
pub struct ImportReport {
    /// Data rows read.
    pub rows: usize,
    /// SKUs created.
    pub created: usize,
    /// SKUs whose product, name, price, attributes or images changed.
    pub updated: usize,
    /// Rows that matched their SKU exactly.
    pub unchanged: usize,
    /// Rows refused (listed in `errors`, by row number).
    pub failed: usize,
    pub errors: Vec<RowError>,
}

fn row_error(row: usize, sku_code: Option<&str>, e: &Error) -> RowError {
    RowError {
        row,
        sku_code: sku_code.map(str::to_string),
        error: e.code(),
        message: e.to_string(),
    }
}

/// Splits CSV text into records (RFC 4180: commas, double quotes, `""` for
/// a quote, line breaks inside quotes); blank lines are skipped.
fn csv_records(text: &str) -> Result<Vec<Vec<String>>> {
    let mut records = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut field_started = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if !field_started => {
                quoted = true;
                field_started = true;
            }
            ',' => {
                record.push(std::mem::take(&mut field));
                field_started = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' => {
                record.push(std::mem::take(&mut field));
                field_started = false;
                if !(record.len() == 1 && record[0].is_empty()) {
                    records.push(std::mem::take(&mut record));
                } else {
                    record.clear();
                }
            }
            _ => {
                field.push(c);
                field_started = true;
            }
        }
    }
    if quoted {
        return Err(Error::invalid("bad_csv", "a quoted field is not closed"));
    }
    if field_started || !record.is_empty() {
        record.push(field);
        if !(record.len() == 1 && record[0].is_empty()) {
            records.push(record);
        }
    }
    Ok(records)
}

/// `size=M;colour=red` into attributes.
fn csv_attributes(text: &str) -> Result<BTreeMap<String, String>> {
    let mut attributes = BTreeMap::new();
    for pair in text.split(';').filter(|p| !p.trim().is_empty()) {
        let (name, value) = pair.split_once('=').ok_or_else(|| {
            Error::invalid(
                "bad_attributes",
                "attributes are name=value pairs separated by ';'",
            )
        })?;
        attributes.insert(name.trim().to_string(), value.trim().to_string());
    }
    Ok(attributes)
}

fn csv_row(header: &[String], record: &[String]) -> Result<JsonRow> {
    if record.len() != header.len() {
        return Err(Error::invalid(
            "bad_row",
            format!(
                "the row has {} fields; the header has {}",
                record.len(),
                header.len()
            ),
        ));
    }
    let field = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .and_then(|i| record.get(i))
            .map(|s| s.trim())
            .unwrap_or("")
    };
    let int = |name: &'static str, code: &'static str| -> Result<Option<i64>> {
        let raw = field(name);
        if raw.is_empty() {
            return Ok(None);
        }
        raw.parse::<i64>()
            .map(Some)
            .map_err(|_| Error::invalid(code, format!("{name} must be a whole number")))
    };
    let price_minor = int("price_minor", "bad_price")?
        .ok_or_else(|| Error::invalid("bad_price", "price_minor is required"))?;
    let stock = int("stock", "bad_stock")?.unwrap_or(0);
    let stock = i32::try_from(stock).map_err(|_| Error::invalid("bad_stock", "stock is too large"))?;
    let status = match field("status") {
        "" => None,
        s => Some(
            ProductStatus::parse(s)
                .ok_or_else(|| Error::invalid("bad_status", "status must be draft, active or archived"))?,
        ),
    };
    Ok(JsonRow {
        product_name: field("product_name").to_string(),
        sku_code: field("sku_code").to_string(),
        sku_name: field("sku_name").to_string(),
        price_minor,
        currency: field("currency").to_string(),
        stock,
        attributes: csv_attributes(field("attributes"))?,
        image_urls: field("image_urls")
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        status,
    })
}

fn clean_row(number: usize, raw: JsonRow) -> Result<Row> {
    let product_name = validate::text("bad_product_name", "product_name", &raw.product_name, 200)?;
    let sku = clean_sku(&NewSku {
        code: raw.sku_code,
        name: raw.sku_name,
        price_minor: raw.price_minor,
        currency: raw.currency,
        attributes: raw.attributes,
        image_urls: raw.image_urls,
        stock: raw.stock,
    })?;
    Ok(Row {
        number,
        product_name,
        status: raw.status.unwrap_or(ProductStatus::Active),
        sku,
    })
}

/// Reads an import body into validated rows and refused rows; a refused
/// whole body (a bad header, too many rows) is an error.
fn parse(format: ImportFormat, body: &str) -> Result<(Vec<Row>, Vec<RowError>)> {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    let mut accept =
        |number: usize, raw: Result<JsonRow>, rows: &mut Vec<Row>, errors: &mut Vec<RowError>| {
            let code = raw.as_ref().ok().map(|r| r.sku_code.clone());
            match raw.and_then(|r| clean_row(number, r)) {
                Ok(row) if !seen.insert(row.sku.code.clone()) => errors.push(row_error(
                    number,
                    Some(&row.sku.code),
                    &Error::invalid(
                        "duplicate_sku_code",
                        "an earlier row of this import has the same sku_code",
                    ),
                )),
                Ok(row) => rows.push(row),
                Err(e) => errors.push(row_error(number, code.as_deref(), &e)),
            }
        };
    let too_many = || {
        Error::invalid(
            "too_many_rows",
            format!("an import holds at most {MAX_ROWS} rows"),
        )
    };
    match format {
        ImportFormat::Csv => {
            let records = csv_records(body)?;
            let Some((header, data)) = records.split_first() else {
                return Err(Error::invalid("bad_import_header", "the CSV has no header row"));
            };
            let header: Vec<String> = header.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
            let unknown = header.iter().find(|h| !COLUMNS.contains(&h.as_str()));
            let missing = REQUIRED.iter().find(|r| !header.iter().any(|h| h == *r));
            let duplicate = header.iter().enumerate().any(|(i, h)| header[..i].contains(h));
            if unknown.is_some() || missing.is_some() || duplicate {
                return Err(Error::invalid(
                    "bad_import_header",
                    format!(
                        "the header names each column once; required: {}; optional: stock, attributes, image_urls, status",
                        REQUIRED.join(", ")
                    ),
                ));
            }
            if data.len() > MAX_ROWS {
                return Err(too_many());
            }
            for (i, record) in data.iter().enumerate() {
                accept(i + 1, csv_row(&header, record), &mut rows, &mut errors);
            }
        }
        ImportFormat::JsonLines => {
            let lines: Vec<&str> = body.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.len() > MAX_ROWS {
                return Err(too_many());
            }
            for (i, line) in lines.into_iter().enumerate() {
                let raw = serde_json::from_str::<JsonRow>(line)
                    .map_err(|e| Error::invalid("bad_row", format!("the line is not a valid row: {e}")));
                accept(i + 1, raw, &mut rows, &mut errors);
            }
        }
    }
    Ok((rows, errors))
}

/// An existing SKU, as the import compares it.
#[derive(Debug, sqlx::FromRow)]
struct Existing {
    sku_id: Uuid,
    code: String,
    product_id: Uuid,
    name: String,
    price_minor: i64,
    currency: String,
    attributes: serde_json::Value,
    image_urls: Vec<String>,
}

/// Imports a catalog for `brand_id` (that brand and admins).
#[tracing::instrument(skip_all, fields(%brand_id, caller = %claims.sub))]
pub async fn import(
    db: &PgPool,
    claims: &Claims,
    brand_id: Uuid,
    format: ImportFormat,
    body: &str,
) -> Result<ImportReport> {
    require_brand(claims, brand_id)?;
    if body.len() > MAX_BYTES {
        return Err(Error::invalid(
            "import_too_large",
            format!("an import is at most {MAX_BYTES} bytes"),
        ));
    }
    let (rows, mut errors) = parse(format, body)?;
    let total = rows.len() + errors.len();
    let mut tx = db.begin().await?;
    // One import per brand at a time, so two imports of the same codes cannot race.
    sqlx::query("select pg_advisory_xact_lock(9009, hashtext($1::text))")
        .bind(brand_id)
        .execute(&mut *tx)
        .await?;
    let brand_exists: bool = sqlx::query_scalar("select exists(select 1 from brand where brand_id = $1)")
        .bind(brand_id)
        .fetch_one(&mut *tx)
        .await?;
    if !brand_exists {
        return Err(Error::NotFound("brand"));
    }
    let codes: Vec<&str> = rows.iter().map(|r| r.sku.code.as_str()).collect();
    let existing: HashMap<String, Existing> = sqlx::query_as::<_, Existing>(
        "select sku_id, code, product_id, name, price_minor, currency::text as currency, attributes, image_urls
           from sku where brand_id = $1 and code = any($2)",
    )
    .bind(brand_id)
    .bind(&codes)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|e| (e.code.clone(), e))
    .collect();
    // A SKU's currency is fixed (floors and deals are in it).
    let (rows, refused): (Vec<Row>, Vec<Row>) = rows.into_iter().partition(|r| {
        existing
            .get(&r.sku.code)
            .is_none_or(|e| e.currency == r.sku.currency)
    });
    for r in refused {
        errors.push(row_error(
            r.number,
            Some(&r.sku.code),
            &Error::invalid(
                "currency_changed",
                "the SKU exists in another currency; a SKU's currency does not change",
            ),
        ));
    }
    // Products by exact name: the oldest of that name, or a new one.
    let mut names: Vec<&str> = rows.iter().map(|r| r.product_name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut products: HashMap<String, Uuid> = sqlx::query_as::<_, (String, Uuid)>(
        "select distinct on (name) name, product_id from product
          where brand_id = $1 and name = any($2) order by name, created_at, product_id",
    )
    .bind(brand_id)
    .bind(&names)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let (mut new_ids, mut new_names, mut new_status) = (Vec::new(), Vec::new(), Vec::new());
    for r in &rows {
        if !products.contains_key(&r.product_name) {
            let id = Uuid::now_v7();
            products.insert(r.product_name.clone(), id);
            new_ids.push(id);
            new_names.push(r.product_name.clone());
            new_status.push(r.status);
        }
    }
    sqlx::query(
        "insert into product (product_id, brand_id, name, status)
         select id, $1, name, status from unnest($2::uuid[], $3::text[], $4::text[]) as t(id, name, status)",
    )
    .bind(brand_id)
    .bind(&new_ids)
    .bind(&new_names)
    .bind(new_status.iter().map(|s| status_text(*s)).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    let mut create = Batch::default();
    let mut update = Batch::default();
    let mut unchanged = 0;
    for r in &rows {
        let product_id = *products
            .get(&r.product_name)
            .ok_or_else(|| anyhow::anyhow!("product missing"))?;
        let attributes = json!(r.sku.attributes);
        match existing.get(&r.sku.code) {
            None => create.push(Uuid::now_v7(), product_id, &r.sku, attributes),
            Some(e)
                if e.product_id == product_id
                    && e.name == r.sku.name
                    && e.price_minor == r.sku.price_minor
                    && e.attributes == attributes
                    && e.image_urls == r.sku.image_urls =>
            {
                unchanged += 1;
            }
            Some(e) => update.push(e.sku_id, product_id, &r.sku, attributes),
        }
    }
    sqlx::query(
        "insert into sku (sku_id, product_id, brand_id, code, name, price_minor, currency, stock_on_hand,
                attributes, image_urls)
         select id, product_id, $1, code, name, price, currency, 0, attributes::jsonb,
                array(select jsonb_array_elements_text(images::jsonb))
           from unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[], $9::text[])
             as t(id, product_id, code, name, price, currency, attributes, images)",
    )
    .bind(brand_id)
    .bind(&create.id)
    .bind(&create.product)
    .bind(&create.code)
    .bind(&create.name)
    .bind(&create.price)
    .bind(&create.currency)
    .bind(&create.attributes)
    .bind(&create.images)
    .execute(&mut *tx)
    .await?;
    // Opening stock: one movement per new SKU with stock (the trigger moves each total).
    sqlx::query(
        "insert into stock_movement (sku_id, delta, reason, note, actor)
         select id, stock, $2, 'opening stock (import)', $3 from unnest($1::uuid[], $4::int[]) as t(id, stock)
          where stock > 0",
    )
    .bind(&create.id)
    .bind(MovementReason::Opening)
    .bind(&claims.sub)
    .bind(&create.stock)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update sku set product_id = t.product_id, name = t.name, price_minor = t.price,
                attributes = t.attributes::jsonb, image_urls = array(select jsonb_array_elements_text(t.images::jsonb)),
                updated_at = now()
           from unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::text[])
             as t(id, product_id, name, price, attributes, images)
          where sku.sku_id = t.id",
    )
    .bind(&update.id)
    .bind(&update.product)
    .bind(&update.name)
    .bind(&update.price)
    .bind(&update.attributes)
    .bind(&update.images)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    errors.sort_by_key(|e| e.row);
    Ok(ImportReport {
        rows: total,
        created: create.id.len(),
        updated: update.id.len(),
        unchanged,
        failed: errors.len(),
        errors,
    })
}

fn status_text(s: ProductStatus) -> &'static str {
    match s {
        ProductStatus::Draft => "draft",
        ProductStatus::Active => "active",
        ProductStatus::Archived => "archived",
    }
}

/// Columns of SKUs to write with one `unnest`.
#[derive(Default)]
struct Batch {
    id: Vec<Uuid>,
    product: Vec<Uuid>,
    code: Vec<String>,
    name: Vec<String>,
    price: Vec<i64>,
    currency: Vec<String>,
    attributes: Vec<String>,
    images: Vec<String>,
    stock: Vec<i32>,
}

impl Batch {
    fn push(&mut self, id: Uuid, product: Uuid, sku: &CleanSku, attributes: serde_json::Value) {
        self.id.push(id);
        self.product.push(product);
        self.code.push(sku.code.clone());
        self.name.push(sku.name.clone());
        self.price.push(sku.price_minor);
        self.currency.push(sku.currency.clone());
        self.attributes.push(attributes.to_string());
        self.images.push(json!(sku.image_urls).to_string());
        self.stock.push(sku.stock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records_handle_quotes_commas_line_breaks_and_blank_lines() {
        let text = "a,b,c\r\n\"x, y\",\"say \"\"hi\"\"\",\"two\nlines\"\n\n1,,3";
        let records = csv_records(text).unwrap();
        assert_eq!(
            records,
            vec![
                vec!["a", "b", "c"],
                vec!["x, y", "say \"hi\"", "two\nlines"],
                vec!["1", "", "3"],
            ]
        );
        assert_eq!(csv_records("\"open").unwrap_err().code(), "bad_csv");
    }

    const HEADER: &str = "product_name,sku_code,sku_name,price_minor,currency,stock,attributes,image_urls\n";

    #[test]
    fn bad_csv_rows_are_reported_by_number_and_good_ones_kept() {
        let body = format!(
            "{HEADER}Lipstick,LIP-1,Ruby,1999,USD,10,shade=ruby;finish=matte,https://cdn.example.com/1.jpg\n\
             Lipstick,LIP-2,Coral,0,USD,10,,\n\
             Lipstick,LIP-3,Nude,1999,usd,,,\n\
             Lipstick,LIP-1,Again,1999,USD,,,\n\
             Lipstick,LIP-4,Plum,1999,USD,,,javascript:alert(1)\n\
             Lipstick,LIP 5,Plum,1999,USD,,,\n\
             Lipstick,LIP-6,Plum,12.5,USD,,,\n\
             Lipstick,LIP-7,Plum,1999,USD\n"
        );
        let (rows, errors) = parse(ImportFormat::Csv, &body).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].sku.attributes.get("finish").map(String::as_str),
            Some("matte")
        );
        let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.row, e.error)).collect();
        assert_eq!(
            got,
            vec![
                (2, "bad_price"),
                (3, "bad_currency"),
                (4, "duplicate_sku_code"),
                (5, "bad_image_url"),
                (6, "bad_sku_code"),
                (7, "bad_price"),
                (8, "bad_row"),
            ]
        );
    }

    #[test]
    fn a_bad_header_refuses_the_whole_import() {
        for body in [
            "",
            "product_name,sku_code\nx,y\n",
            "product_name,sku_code,sku_name,price_minor,currency,colour\n",
        ] {
            assert_eq!(
                parse(ImportFormat::Csv, body).err().map(|e| e.code()),
                Some("bad_import_header"),
                "{body}"
            );
        }
    }

    #[test]
    fn json_lines_rows_are_validated_one_by_one() {
        let body = "{\"product_name\":\"Serum\",\"sku_code\":\"S-1\",\"sku_name\":\"30 ml\",\"price_minor\":3450,\"currency\":\"USD\",\"attributes\":{\"size\":\"30 ml\"}}\n\
                    \n\
                    {\"product_name\":\"Serum\",\"sku_code\":\"S-2\"}\n\
                    not json\n";
        let (rows, errors) = parse(ImportFormat::JsonLines, body).unwrap();
        assert_eq!(rows.len(), 1);
        let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.row, e.error)).collect();
        assert_eq!(got, vec![(2, "bad_row"), (3, "bad_row")]);
    }

    #[test]
    fn more_than_the_row_limit_is_refused() {
        let body = "{}\n".repeat(MAX_ROWS + 1);
        assert_eq!(
            parse(ImportFormat::JsonLines, &body).err().map(|e| e.code()),
            Some("too_many_rows")
        );
    }
}
