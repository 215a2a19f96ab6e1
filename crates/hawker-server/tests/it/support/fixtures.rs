//! Tokens, and what a test needs in the database: agencies, sessions, SKUs
//! (through SQL), line-ups, deals and orders (through the HTTP API).

use std::net::SocketAddr;

use hawker_core::{Claims, Role, TokenKeys};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::app::{try_answer, TestApp};

/// A token for `sub` in `role`, valid for an hour.
pub fn token(keys: &TokenKeys, sub: &str, role: Role) -> String {
    keys.sign(&Claims::new(sub, role, chrono::Duration::hours(1)))
        .expect("sign")
}

pub fn agency_token(keys: &TokenKeys, agency_id: Uuid) -> String {
    let mut claims = Claims::new("agency-user", Role::Agency, chrono::Duration::hours(1));
    claims.agency_id = Some(agency_id);
    keys.sign(&claims).expect("sign")
}

pub fn brand_token(keys: &TokenKeys, brand_id: Uuid) -> String {
    let mut claims = Claims::new("brand-user", Role::Brand, chrono::Duration::hours(1));
    claims.brand_id = Some(brand_id);
    keys.sign(&claims).expect("sign")
}

pub async fn insert_agency(db: &PgPool) -> Uuid {
    let agency_id = Uuid::new_v4();
    sqlx::query("insert into agency (agency_id, name) values ($1, 'Test Agency')")
        .bind(agency_id)
        .execute(db)
        .await
        .expect("agency");
    agency_id
}

/// Inserts an agency and a session, returning their ids.
pub async fn insert_agency_and_session(db: &PgPool) -> (Uuid, Uuid) {
    let agency_id = insert_agency(db).await;
    let session_id = Uuid::new_v4();
    sqlx::query(
        "insert into live_session (session_id, agency_id, title, planned_start, planned_end)
         values ($1, $2, 'Test session', now(), now() + interval '1 hour')",
    )
    .bind(session_id)
    .bind(agency_id)
    .execute(db)
    .await
    .expect("session");
    (agency_id, session_id)
}

/// A brand with one product and one SKU in USD at `price_minor`, `stock`
/// units on hand; returns (brand, sku).
pub async fn insert_brand_with_sku(db: &PgPool, price_minor: i64, stock: i32) -> (Uuid, Uuid) {
    let (brand, product, sku) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    sqlx::query("insert into brand (brand_id, name) values ($1, 'Brand')")
        .bind(brand)
        .execute(db)
        .await
        .expect("brand");
    sqlx::query("insert into product (product_id, brand_id, name) values ($1, $2, 'Lipstick')")
        .bind(product)
        .bind(brand)
        .execute(db)
        .await
        .expect("product");
    sqlx::query(
        "insert into sku (sku_id, product_id, brand_id, code, name, price_minor, currency, stock_on_hand)
         values ($1, $2, $3, 'LIP-1', 'Ruby', $4, 'USD', 0)",
    )
    .bind(sku)
    .bind(product)
    .bind(brand)
    .bind(price_minor)
    .execute(db)
    .await
    .expect("sku");
    if stock > 0 {
        // Stock on hand moves only through movements.
        sqlx::query(
            "insert into stock_movement (sku_id, delta, reason, actor) values ($1, $2, 'opening', 'test')",
        )
        .bind(sku)
        .bind(stock)
        .execute(db)
        .await
        .expect("opening stock");
    }
    (brand, sku)
}

/// Puts `sku` in an accepted campaign (no allocation; floor 1 minor unit,
/// and the brand allows going below it, so coupons of any size apply as
/// before campaigns existed) between `agency` and the SKU's brand, creating
/// the campaign if there is none; returns the campaign. Only campaign SKUs
/// may enter a lineup.
pub async fn ensure_campaign_sku(db: &PgPool, agency: Uuid, sku: Uuid) -> Uuid {
    let brand: Uuid = sqlx::query_scalar("select brand_id from sku where sku_id = $1")
        .bind(sku)
        .fetch_one(db)
        .await
        .expect("sku brand");
    let existing: Option<Uuid> = sqlx::query_scalar(
        "select campaign_id from campaign where agency_id = $1 and brand_id = $2 and status = 'accepted'
          order by created_at limit 1",
    )
    .bind(agency)
    .bind(brand)
    .fetch_optional(db)
    .await
    .expect("campaign");
    let campaign = match existing {
        Some(c) => c,
        None => {
            let c = Uuid::new_v4();
            sqlx::query(
                "insert into campaign (campaign_id, brand_id, agency_id, name, status, proposed_by, starts_at,
                        allow_below_floor, created_by, decided_by, decided_at)
                 values ($1, $2, $3, 'Test campaign', 'accepted', 'admin', now() - interval '1 hour',
                        true, 'test', 'test', now())",
            )
            .bind(c)
            .bind(brand)
            .bind(agency)
            .execute(db)
            .await
            .expect("insert campaign");
            c
        }
    };
    sqlx::query(
        "insert into campaign_sku (campaign_id, sku_id, floor_price_minor) values ($1, $2, 1)
         on conflict do nothing",
    )
    .bind(campaign)
    .bind(sku)
    .execute(db)
    .await
    .expect("campaign sku");
    campaign
}

/// Adds `sku` to the session's line-up (the next link number) as the agency,
/// under a campaign between the agency and the SKU's brand ([`ensure_campaign_sku`]).
pub async fn add_to_lineup(app: &TestApp, agency: Uuid, session: Uuid, sku: Uuid) {
    ensure_campaign_sku(&app.db, agency, sku).await;
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            &format!("/v1/sessions/{session}/lineup"),
            &app.agency_token(agency),
            Some(json!({ "sku_id": sku })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// A brand's SKU (1,999 USD, stock 10,000) at link #1 of `session`.
pub async fn lineup(app: &TestApp, agency: Uuid, session: Uuid) {
    let (_, sku) = insert_brand_with_sku(&app.db, 1999, 10000).await;
    add_to_lineup(app, agency, session, sku).await;
}

/// A session with a brand's SKU (1,999 USD, stock 10,000) at link #1;
/// returns (agency, session).
pub async fn session_with_lineup(app: &TestApp) -> (Uuid, Uuid) {
    let (agency, session) = insert_agency_and_session(&app.db).await;
    lineup(app, agency, session).await;
    (agency, session)
}

/// Creates a deal as the agency; it must be created (201). Returns its id.
pub async fn create_deal(app: &TestApp, agency: Uuid, session: Uuid, body: Value) -> String {
    let (status, deal) = app
        .send(
            reqwest::Method::POST,
            &format!("/v1/sessions/{session}/deals"),
            &app.agency_token(agency),
            Some(body),
        )
        .await;
    assert_eq!(status, 201, "{deal}");
    deal["deal_id"].as_str().expect("deal_id").to_string()
}

/// Buys `quantity` of `deal` as viewer `buyer` with idempotency key `key`.
pub async fn buy(app: &TestApp, buyer: &str, deal: &str, key: &str, quantity: i32) -> (u16, Value) {
    buy_with(
        &app.http,
        app.addr,
        &app.token(buyer, Role::Viewer),
        deal,
        key,
        quantity,
    )
    .await
}

/// Like [`buy`], on any node and client; status 0 when no answer came.
pub async fn buy_with(
    http: &reqwest::Client,
    addr: SocketAddr,
    token: &str,
    deal: &str,
    key: &str,
    quantity: i32,
) -> (u16, Value) {
    let sent = http
        .post(format!("http://{addr}/v1/deals/{deal}/orders"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({ "quantity": quantity }))
        .send()
        .await;
    try_answer(sent).await
}

/// `select count(*) …` with `id` as `$1`.
pub async fn count(db: &PgPool, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql).bind(id).fetch_one(db).await.unwrap()
}
