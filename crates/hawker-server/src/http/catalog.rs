//! The brand catalog over HTTP (tag `catalog`): products and SKUs, stock
//! movements, bulk import; and the campaign side of it: accepting and
//! declining campaigns, listing them, their SKUs with floors and allocations,
//! and the SKUs a session may put in its lineup. The rules live in
//! `hawker-catalog`, `hawker-agency` and `hawker-commerce`; this module
//! parses, calls and maps errors, and runs no SQL.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use hawker_agency::campaigns::{self, Campaign, CampaignPage, CampaignParty, CampaignStatus, Decision};
use hawker_agency::page::PageQuery;
use hawker_catalog::campaign_skus::{self, CampaignSku, CampaignSkus};
use hawker_catalog::import::{self, ImportFormat, ImportReport};
use hawker_catalog::products::{
    self, NewProduct, NewSku, Product, ProductFilter, ProductPage, ProductUpdate, Sku, SkuUpdate,
};
use hawker_catalog::stock::{self, Movement, MovementPage, StockChange};
use hawker_commerce::deals;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Auth;
use super::error::{
    ApiError, ApiResult, AuthErrors, ErrorBody, Json, Path, Query, Unauthenticated, Unavailable,
};
use super::AppState;

/// The catalog's routes, for `api_router` to merge.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_product, list_products))
        .routes(routes!(get_product, update_product))
        .routes(routes!(create_sku))
        .routes(routes!(get_sku, update_sku))
        .routes(routes!(change_stock, stock_movements))
        .routes(routes!(brand_campaigns))
        .routes(routes!(agency_campaigns))
        .routes(routes!(accept_campaign))
        .routes(routes!(decline_campaign))
        .routes(routes!(campaign_skus, put_campaign_skus))
        .routes(routes!(sellable_skus))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(import_catalog))
                .layer(DefaultBodyLimit::max(import::MAX_BYTES)),
        )
}

/// Creates a product with its SKUs (the brand, admins). Each SKU's `stock`
/// is recorded as an `opening` stock movement.
#[utoipa::path(post, path = "/v1/brands/{brand_id}/products", tag = "catalog", security(("bearer" = [])),
    params(("brand_id" = Uuid, Path)), request_body = NewProduct,
    responses(
        (status = 201, body = Product),
        (status = 400, body = ErrorBody, description = "bad_name, bad_description, bad_image_url, bad_sku_code, \
            bad_price, bad_currency, bad_attributes, bad_stock, too_many_skus, bad_json, bad_path"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not this brand's token, nor an admin"),
        (status = 404, body = ErrorBody, description = "no such brand (admins)"),
        (status = 409, body = ErrorBody, description = "sku_code_taken: the brand already has a SKU with a code"),
        Unavailable,
    ))]
pub async fn create_product(
    State(state): State<AppState>,
    auth: Auth,
    Path(brand_id): Path<Uuid>,
    Json(new): Json<NewProduct>,
) -> ApiResult<(StatusCode, Json<Product>)> {
    let product = products::create_product(&state.db, auth.claims(), brand_id, new).await?;
    Ok((StatusCode::CREATED, Json(product)))
}

/// The brand's products with their SKUs, newest first, a page at a time,
/// optionally of one `status` or matching `q` (name or SKU code).
#[utoipa::path(get, path = "/v1/brands/{brand_id}/products", tag = "catalog", security(("bearer" = [])),
    params(("brand_id" = Uuid, Path), ProductFilter, PageQuery),
    responses(
        (status = 200, body = ProductPage),
        (status = 400, body = ErrorBody, description = "bad_query, bad_limit, bad_cursor, bad_path"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not this brand's token, nor an admin"),
        Unavailable,
    ))]
pub async fn list_products(
    State(state): State<AppState>,
    auth: Auth,
    Path(brand_id): Path<Uuid>,
    Query(filter): Query<ProductFilter>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<ProductPage>> {
    Ok(Json(
        products::list_products(&state.db, auth.claims(), brand_id, &filter, &page).await?,
    ))
}

/// A product with its SKUs (its brand, admins; anyone else: 404).
#[utoipa::path(get, path = "/v1/products/{product_id}", tag = "catalog", security(("bearer" = [])),
    params(("product_id" = Uuid, Path)),
    responses(
        (status = 200, body = Product),
        (status = 400, body = ErrorBody, description = "bad_path"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such product, or another brand's"),
        Unavailable,
    ))]
pub async fn get_product(
    State(state): State<AppState>,
    auth: Auth,
    Path(product_id): Path<Uuid>,
) -> ApiResult<Json<Product>> {
    Ok(Json(
        products::get_product(&state.db, auth.claims(), product_id).await?,
    ))
}

/// Changes a product's name, description, status or images; absent fields
/// stay. Only `active` products' SKUs can enter a lineup.
#[utoipa::path(patch, path = "/v1/products/{product_id}", tag = "catalog", security(("bearer" = [])),
    params(("product_id" = Uuid, Path)), request_body = ProductUpdate,
    responses(
        (status = 200, body = Product),
        (status = 400, body = ErrorBody, description = "bad_name, bad_description, bad_image_url, bad_json, bad_path"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such product, or another brand's"),
        Unavailable,
    ))]
pub async fn update_product(
    State(state): State<AppState>,
    auth: Auth,
    Path(product_id): Path<Uuid>,
    Json(update): Json<ProductUpdate>,
) -> ApiResult<Json<Product>> {
    Ok(Json(
        products::update_product(&state.db, auth.claims(), product_id, update).await?,
    ))
}

/// Adds a SKU to a product; its `stock` is an `opening` movement.
#[utoipa::path(post, path = "/v1/products/{product_id}/skus", tag = "catalog", security(("bearer" = [])),
    params(("product_id" = Uuid, Path)), request_body = NewSku,
    responses(
        (status = 201, body = Sku),
        (status = 400, body = ErrorBody, description = "bad_sku_code, bad_name, bad_price, bad_currency, \
            bad_attributes, bad_image_url, bad_stock, bad_json, bad_path"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such product, or another brand's"),
        (status = 409, body = ErrorBody, description = "sku_code_taken"),
        Unavailable,
    ))]
pub async fn create_sku(
    State(state): State<AppState>,
    auth: Auth,
    Path(product_id): Path<Uuid>,
    Json(new): Json<NewSku>,
) -> ApiResult<(StatusCode, Json<Sku>)> {
    let sku = products::create_sku(&state.db, auth.claims(), product_id, new).await?;
    Ok((StatusCode::CREATED, Json(sku)))
}

/// A SKU (its brand, admins; anyone else: 404).
#[utoipa::path(get, path = "/v1/skus/{sku_id}", tag = "catalog", security(("bearer" = [])),
    params(("sku_id" = Uuid, Path)),
    responses(
        (status = 200, body = Sku),
        (status = 400, body = ErrorBody, description = "bad_path"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such SKU, or another brand's"),
        Unavailable,
    ))]
pub async fn get_sku(
    State(state): State<AppState>,
    auth: Auth,
    Path(sku_id): Path<Uuid>,
) -> ApiResult<Json<Sku>> {
    Ok(Json(products::get_sku(&state.db, auth.claims(), sku_id).await?))
}

/// Changes a SKU's name, price, attributes or images; absent fields stay.
/// Its stock changes only through `POST /v1/skus/{sku_id}/stock-movements`.
#[utoipa::path(patch, path = "/v1/skus/{sku_id}", tag = "catalog", security(("bearer" = [])),
    params(("sku_id" = Uuid, Path)), request_body = SkuUpdate,
    responses(
        (status = 200, body = Sku),
        (status = 400, body = ErrorBody, description = "bad_name, bad_price, bad_attributes, bad_image_url, bad_json, bad_path"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such SKU, or another brand's"),
        Unavailable,
    ))]
pub async fn update_sku(
    State(state): State<AppState>,
    auth: Auth,
    Path(sku_id): Path<Uuid>,
    Json(update): Json<SkuUpdate>,
) -> ApiResult<Json<Sku>> {
    Ok(Json(
        products::update_sku(&state.db, auth.claims(), sku_id, update).await?,
    ))
}

/// Restocks (`kind: restock`, positive `delta`) or adjusts (`kind:
/// adjustment`, either sign, with a `note` saying why) a SKU's stock,
/// recorded as a movement with who and when.
#[utoipa::path(post, path = "/v1/skus/{sku_id}/stock-movements", tag = "catalog", security(("bearer" = [])),
    params(("sku_id" = Uuid, Path)), request_body = StockChange,
    responses(
        (status = 201, body = Movement),
        (status = 400, body = ErrorBody, description = "bad_delta, bad_note, bad_json, bad_path"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such SKU, or another brand's"),
        (status = 409, body = ErrorBody, description = "insufficient_stock: the adjustment would take stock below zero; stock_overflow: stock on hand would exceed 2,147,483,647"),
        Unavailable,
    ))]
pub async fn change_stock(
    State(state): State<AppState>,
    auth: Auth,
    Path(sku_id): Path<Uuid>,
    Json(change): Json<StockChange>,
) -> ApiResult<(StatusCode, Json<Movement>)> {
    let movement = stock::change_stock(&state.db, auth.claims(), sku_id, change).await?;
    Ok((StatusCode::CREATED, Json(movement)))
}

/// A SKU's stock movements, newest first: restocks, adjustments, and the
/// units deals took and gave back. Their sum is the SKU's `stock_on_hand`.
#[utoipa::path(get, path = "/v1/skus/{sku_id}/stock-movements", tag = "catalog", security(("bearer" = [])),
    params(("sku_id" = Uuid, Path), PageQuery),
    responses(
        (status = 200, body = MovementPage),
        (status = 400, body = ErrorBody, description = "bad_limit, bad_cursor, bad_path"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such SKU, or another brand's"),
        Unavailable,
    ))]
pub async fn stock_movements(
    State(state): State<AppState>,
    auth: Auth,
    Path(sku_id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<MovementPage>> {
    Ok(Json(
        stock::movements(&state.db, auth.claims(), sku_id, &page).await?,
    ))
}

/// Imports a catalog: `Content-Type: text/csv` (a header row naming
/// `product_name, sku_code, sku_name, price_minor, currency` and optionally
/// `stock, attributes, image_urls, status`) or `application/x-ndjson` (one
/// JSON object per line with the same fields). Up to 20,000 rows and
/// 8 MiB. Each row is validated alone: good rows are written, bad rows are
/// reported by number. Idempotent on the brand's SKU code.
#[utoipa::path(post, path = "/v1/brands/{brand_id}/catalog/import", tag = "catalog", security(("bearer" = [])),
    params(("brand_id" = Uuid, Path)),
    request_body(description = "the catalog as CSV or JSON lines", content(
        (String = "text/csv", example = "product_name,sku_code,sku_name,price_minor,currency,stock,attributes,image_urls\nVelvet Lipstick,LIP-RUBY,Ruby,1999,USD,500,shade=ruby;finish=matte,https://cdn.example.com/ruby.jpg\n"),
        (String = "application/x-ndjson", example = "{\"product_name\":\"Velvet Lipstick\",\"sku_code\":\"LIP-RUBY\",\"sku_name\":\"Ruby\",\"price_minor\":1999,\"currency\":\"USD\",\"stock\":500,\"attributes\":{\"shade\":\"ruby\"}}\n"),
    )),
    responses(
        (status = 200, body = ImportReport, description = "what was created, updated and left, and each refused row"),
        (status = 400, body = ErrorBody, description = "bad_import_header, bad_csv, too_many_rows, bad_encoding, \
            unsupported_media_type (not text/csv or application/x-ndjson), bad_path"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not this brand's token, nor an admin"),
        (status = 404, body = ErrorBody, description = "no such brand (admins)"),
        (status = 413, description = "the body is over 8 MiB"),
        Unavailable,
    ))]
pub async fn import_catalog(
    State(state): State<AppState>,
    auth: Auth,
    Path(brand_id): Path<Uuid>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<ImportReport>> {
    hawker_catalog::access::require_brand(auth.claims(), brand_id)?;
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let format = match media.as_deref() {
        Some("text/csv") => ImportFormat::Csv,
        Some("application/x-ndjson" | "application/jsonl" | "application/jsonlines") => {
            ImportFormat::JsonLines
        }
        _ => {
            return Err(ApiError::bad_request(
                "unsupported_media_type",
                "send the catalog as text/csv or application/x-ndjson",
            ))
        }
    };
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("bad_encoding", "the catalog must be UTF-8 text"))?;
    Ok(Json(
        import::import(&state.db, auth.claims(), brand_id, format, text).await?,
    ))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CampaignFilter {
    /// Only campaigns in this state.
    #[serde(default)]
    pub status: Option<CampaignStatus>,
}

/// The brand's campaigns, newest first (the brand, admins).
#[utoipa::path(get, path = "/v1/brands/{brand_id}/campaigns", tag = "catalog", security(("bearer" = [])),
    params(("brand_id" = Uuid, Path), CampaignFilter, PageQuery),
    responses(
        (status = 200, body = CampaignPage),
        (status = 400, body = ErrorBody, description = "bad_query, bad_limit, bad_cursor, bad_path"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "not this brand's token, nor an admin"),
        Unavailable,
    ))]
pub async fn brand_campaigns(
    State(state): State<AppState>,
    auth: Auth,
    Path(brand_id): Path<Uuid>,
    Query(filter): Query<CampaignFilter>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<CampaignPage>> {
    Ok(Json(
        campaigns::list_campaigns(
            &state.db,
            auth.claims(),
            CampaignParty::Brand(brand_id),
            filter.status,
            &page,
        )
        .await?,
    ))
}

/// The agency's campaigns, newest first (the agency, admins).
#[utoipa::path(get, path = "/v1/agencies/{agency_id}/campaigns", tag = "catalog", security(("bearer" = [])),
    params(("agency_id" = Uuid, Path), CampaignFilter, PageQuery),
    responses(
        (status = 200, body = CampaignPage),
        (status = 400, body = ErrorBody, description = "bad_query, bad_limit, bad_cursor, bad_path"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the token does not act for this agency"),
        Unavailable,
    ))]
pub async fn agency_campaigns(
    State(state): State<AppState>,
    auth: Auth,
    Path(agency_id): Path<Uuid>,
    Query(filter): Query<CampaignFilter>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<CampaignPage>> {
    Ok(Json(
        campaigns::list_campaigns(
            &state.db,
            auth.claims(),
            CampaignParty::Agency(agency_id),
            filter.status,
            &page,
        )
        .await?,
    ))
}

/// Accepts a proposed campaign: the brand accepts an agency's proposal, the
/// agency a brand's (admins either). From `starts_at` to `ends_at` its SKUs
/// may then enter the agency's lineups.
#[utoipa::path(post, path = "/v1/campaigns/{campaign_id}/accept", tag = "catalog", security(("bearer" = [])),
    params(("campaign_id" = Uuid, Path)),
    responses(
        (status = 200, body = Campaign),
        (status = 400, body = ErrorBody, description = "bad_path"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the proposing side cannot accept its own proposal"),
        (status = 404, body = ErrorBody, description = "no such campaign, or not a party to it"),
        (status = 409, body = ErrorBody, description = "campaign_not_proposed: already accepted or declined"),
        Unavailable,
    ))]
pub async fn accept_campaign(
    State(state): State<AppState>,
    auth: Auth,
    Path(campaign_id): Path<Uuid>,
) -> ApiResult<Json<Campaign>> {
    Ok(Json(
        campaigns::decide_campaign(&state.db, auth.claims(), campaign_id, Decision::Accept).await?,
    ))
}

/// Declines a proposed campaign (the side that did not propose it, admins).
#[utoipa::path(post, path = "/v1/campaigns/{campaign_id}/decline", tag = "catalog", security(("bearer" = [])),
    params(("campaign_id" = Uuid, Path)),
    responses(
        (status = 200, body = Campaign),
        (status = 400, body = ErrorBody, description = "bad_path"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the proposing side cannot decline its own proposal"),
        (status = 404, body = ErrorBody, description = "no such campaign, or not a party to it"),
        (status = 409, body = ErrorBody, description = "campaign_not_proposed: already accepted or declined"),
        Unavailable,
    ))]
pub async fn decline_campaign(
    State(state): State<AppState>,
    auth: Auth,
    Path(campaign_id): Path<Uuid>,
) -> ApiResult<Json<Campaign>> {
    Ok(Json(
        campaigns::decide_campaign(&state.db, auth.claims(), campaign_id, Decision::Decline).await?,
    ))
}

/// The campaign's SKUs with their floors, allocations and units taken (its parties, admins).
#[utoipa::path(get, path = "/v1/campaigns/{campaign_id}/skus", tag = "catalog", security(("bearer" = [])),
    params(("campaign_id" = Uuid, Path)),
    responses(
        (status = 200, body = Vec<CampaignSku>),
        (status = 400, body = ErrorBody, description = "bad_path"),
        Unauthenticated,
        (status = 404, body = ErrorBody, description = "no such campaign, or not a party to it"),
        Unavailable,
    ))]
pub async fn campaign_skus(
    State(state): State<AppState>,
    auth: Auth,
    Path(campaign_id): Path<Uuid>,
) -> ApiResult<Json<Vec<CampaignSku>>> {
    Ok(Json(
        campaign_skus::list_skus(&state.db, auth.claims(), campaign_id).await?,
    ))
}

/// Adds SKUs (or every SKU of a product) to a campaign, or changes their
/// floor and allocation. Either party while it is proposed; once accepted,
/// only its brand (and admins). Answers every SKU of the campaign.
#[utoipa::path(post, path = "/v1/campaigns/{campaign_id}/skus", tag = "catalog", security(("bearer" = [])),
    params(("campaign_id" = Uuid, Path)), request_body = CampaignSkus,
    responses(
        (status = 200, body = Vec<CampaignSku>),
        (status = 400, body = ErrorBody, description = "bad_items, bad_floor, bad_allocation, not_brand_sku, bad_json, bad_path"),
        Unauthenticated,
        (status = 403, body = ErrorBody, description = "the campaign is accepted and the caller is not its brand"),
        (status = 404, body = ErrorBody, description = "no such campaign, or not a party to it"),
        (status = 409, body = ErrorBody, description = "campaign_declined, allocation_below_taken"),
        Unavailable,
    ))]
pub async fn put_campaign_skus(
    State(state): State<AppState>,
    auth: Auth,
    Path(campaign_id): Path<Uuid>,
    Json(put): Json<CampaignSkus>,
) -> ApiResult<Json<Vec<CampaignSku>>> {
    Ok(Json(
        campaign_skus::put_skus(&state.db, auth.claims(), campaign_id, put).await?,
    ))
}

/// The SKUs the session's host may add to its lineup: those of the active
/// campaigns (accepted, within their dates) of the session's agency, with the
/// session's brand if it has one, whose product is active.
#[utoipa::path(get, path = "/v1/sessions/{session_id}/sellable-skus", tag = "catalog", security(("bearer" = [])),
    params(("session_id" = Uuid, Path)),
    responses(
        (status = 200, body = Vec<CampaignSku>),
        (status = 400, body = ErrorBody, description = "bad_path"),
        AuthErrors,
        (status = 404, body = ErrorBody, description = "no such session"),
        (status = 409, body = ErrorBody, description = "session_ended"),
        Unavailable,
    ))]
pub async fn sellable_skus(
    State(state): State<AppState>,
    auth: Auth,
    Path(session_id): Path<Uuid>,
) -> ApiResult<Json<Vec<CampaignSku>>> {
    Ok(Json(
        deals::sellable_skus(&state.commerce, auth.claims(), session_id).await?,
    ))
}
