//! Campaigns tie brands to agencies, against real Postgres and Redis: only a
//! SKU of an active campaign between the session's agency and the SKU's brand
//! enters a lineup; deals respect the floor (unless the brand allowed below)
//! and the campaign's allocation, and cannot take other campaigns' allocations.

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::catalog::{create_product, new_brand, stock_and_movements};
use crate::support::app::{spawn_app, TestApp};
use crate::support::fixtures::insert_agency_and_session;

fn uuid(v: &Value) -> Uuid {
    v.as_str().unwrap().parse().unwrap()
}

async fn propose(app: &TestApp, token: &str, brand: Uuid, agency: Uuid, extra: Value) -> Uuid {
    let mut body = json!({"brand_id": brand, "agency_id": agency, "name": "Spring glow"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, campaign) = app.send(Method::POST, "/v1/campaigns", token, Some(body)).await;
    assert_eq!(status, 201, "{campaign}");
    assert_eq!(campaign["status"], "proposed");
    uuid(&campaign["campaign_id"])
}

async fn put_skus(app: &TestApp, token: &str, campaign: Uuid, items: Value) -> (u16, Value) {
    app.send(
        Method::POST,
        &format!("/v1/campaigns/{campaign}/skus"),
        token,
        Some(json!({ "items": items })),
    )
    .await
}

async fn add_lineup(app: &TestApp, agency: Uuid, session: Uuid, sku: Uuid) -> (u16, Value) {
    app.send(
        Method::POST,
        &format!("/v1/sessions/{session}/lineup"),
        &app.agency_token(agency),
        Some(json!({ "sku_id": sku })),
    )
    .await
}

async fn deal(
    app: &TestApp,
    agency: Uuid,
    session: Uuid,
    link: i64,
    price: i64,
    quantity: i64,
) -> (u16, Value) {
    app.send(
        Method::POST,
        &format!("/v1/sessions/{session}/deals"),
        &app.agency_token(agency),
        Some(
            json!({"link_number": link, "price_minor": price, "quantity": quantity,
                    "per_buyer_cap": 1, "duration_secs": 60}),
        ),
    )
    .await
}

#[tokio::test]
async fn only_a_sku_of_an_accepted_campaign_with_the_sessions_agency_enters_a_lineup() {
    let app = spawn_app().await;
    let (agency, session) = insert_agency_and_session(&app.db).await;
    let brand = new_brand(&app).await;
    let product = create_product(&app, brand, "LIP-1", 100).await;
    let sku = uuid(&product["skus"][0]["sku_id"]);

    // No campaign at all: the security review's hole is closed.
    let (status, answer) = add_lineup(&app, agency, session, sku).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("sku_not_in_campaign")),
        "{answer}"
    );

    // The agency proposes; until the brand accepts, still refused.
    let agency_token = app.agency_token(agency);
    let campaign = propose(&app, &agency_token, brand, agency, json!({})).await;
    let (status, listed) = put_skus(
        &app,
        &agency_token,
        campaign,
        json!([{"sku_id": sku, "floor_price_minor": 1500}]),
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let (status, answer) = add_lineup(&app, agency, session, sku).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("sku_not_in_campaign"))
    );
    let (status, answer) = app
        .send(
            Method::POST,
            &format!("/v1/campaigns/{campaign}/accept"),
            &agency_token,
            None,
        )
        .await;
    assert_eq!(
        status, 403,
        "the proposer cannot accept its own proposal: {answer}"
    );
    let (status, accepted) = app
        .send(
            Method::POST,
            &format!("/v1/campaigns/{campaign}/accept"),
            &app.brand_token(brand),
            None,
        )
        .await;
    assert_eq!(
        (status, accepted["status"].as_str()),
        (200, Some("accepted")),
        "{accepted}"
    );
    let (status, again) = app
        .send(
            Method::POST,
            &format!("/v1/campaigns/{campaign}/decline"),
            &app.brand_token(brand),
            None,
        )
        .await;
    assert_eq!(
        (status, again["error"].as_str()),
        (409, Some("campaign_not_proposed"))
    );

    // Another agency, with no campaign of its own, still cannot sell the SKU.
    let (other_agency, other_session) = insert_agency_and_session(&app.db).await;
    let (status, answer) = add_lineup(&app, other_agency, other_session, sku).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("sku_not_in_campaign"))
    );

    // A SKU of the brand outside the campaign is refused too.
    let other = create_product(&app, brand, "LIP-2", 100).await;
    let (status, answer) = add_lineup(&app, agency, session, uuid(&other["skus"][0]["sku_id"])).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("sku_not_in_campaign"))
    );

    // The campaign SKU enters; the picker lists exactly it.
    let (status, item) = add_lineup(&app, agency, session, sku).await;
    assert_eq!(status, 201, "{item}");
    assert_eq!(item["campaign_id"], json!(campaign));
    let (status, sellable) = app
        .send(
            Method::GET,
            &format!("/v1/sessions/{session}/sellable-skus"),
            &agency_token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{sellable}");
    let ids: Vec<&str> = sellable
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sku_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [sku.to_string()]);

    // An archived product leaves the picker and cannot enter a lineup.
    let (status, _) = app
        .send(
            Method::PATCH,
            &format!("/v1/products/{}", product["product_id"].as_str().unwrap()),
            &app.brand_token(brand),
            Some(json!({"status": "archived"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, answer) = add_lineup(&app, agency, session, sku).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("product_not_active"))
    );
}

#[tokio::test]
async fn a_campaign_outside_its_dates_sells_nothing() {
    let app = spawn_app().await;
    let (agency, session) = insert_agency_and_session(&app.db).await;
    let brand = new_brand(&app).await;
    let product = create_product(&app, brand, "LIP-1", 100).await;
    let sku = uuid(&product["skus"][0]["sku_id"]);
    let future = (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    let campaign = propose(
        &app,
        &app.brand_token(brand),
        brand,
        agency,
        json!({"starts_at": future}),
    )
    .await;
    put_skus(
        &app,
        &app.brand_token(brand),
        campaign,
        json!([{"product_id": product["product_id"], "floor_price_minor": 100}]),
    )
    .await;
    let (status, _) = app
        .send(
            Method::POST,
            &format!("/v1/campaigns/{campaign}/accept"),
            &app.agency_token(agency),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, answer) = add_lineup(&app, agency, session, sku).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("sku_not_in_campaign")),
        "not started yet"
    );
    let (status, answer) = app
        .send(
            Method::POST,
            "/v1/campaigns",
            &app.brand_token(brand),
            Some(json!({"brand_id": brand, "agency_id": agency, "name": "x",
                        "starts_at": future, "ends_at": chrono::Utc::now().to_rfc3339()})),
        )
        .await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("bad_dates")));
}

/// A session of a new agency selling one SKU (stock `stock`) of a new brand
/// under an accepted campaign with `floor` and `extra` fields; (agency, session, brand, sku, campaign).
async fn selling(
    app: &TestApp,
    stock: i32,
    floor: i64,
    allocated: Option<i64>,
    extra: Value,
) -> (Uuid, Uuid, Uuid, Uuid, Uuid) {
    let (agency, session) = insert_agency_and_session(&app.db).await;
    let brand = new_brand(app).await;
    let product = create_product(app, brand, "LIP-1", stock).await;
    let sku = uuid(&product["skus"][0]["sku_id"]);
    let campaign = propose(app, &app.brand_token(brand), brand, agency, extra).await;
    let (status, answer) = put_skus(
        app,
        &app.brand_token(brand),
        campaign,
        json!([{"sku_id": sku, "floor_price_minor": floor, "allocated_units": allocated}]),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = app
        .send(
            Method::POST,
            &format!("/v1/campaigns/{campaign}/accept"),
            &app.agency_token(agency),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, item) = add_lineup(app, agency, session, sku).await;
    assert_eq!(status, 201, "{item}");
    (agency, session, brand, sku, campaign)
}

#[tokio::test]
async fn a_deal_under_the_floor_is_refused_unless_the_brand_allowed_it() {
    let app = spawn_app().await;
    let (agency, session, _, sku, _) = selling(&app, 100, 1500, None, json!({})).await;
    let (status, answer) = deal(&app, agency, session, 1, 1499, 10).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("price_below_floor")),
        "{answer}"
    );
    assert_eq!(
        stock_and_movements(&app, sku).await,
        (100, 100),
        "a refused deal takes nothing"
    );
    let (status, at_floor) = deal(&app, agency, session, 1, 1500, 10).await;
    assert_eq!(status, 201, "{at_floor}");
    assert_eq!(at_floor["floor_price_minor"], 1500);

    let (agency, session, _, _, _) = selling(&app, 100, 1500, None, json!({"allow_below_floor": true})).await;
    let (status, below) = deal(&app, agency, session, 1, 900, 10).await;
    assert_eq!(status, 201, "{below}");
    assert_eq!(below["floor_price_minor"], Value::Null);
}

#[tokio::test]
async fn an_allocation_caps_a_campaign_and_other_agencies_cannot_take_it() {
    let app = spawn_app().await;
    // Agency A's campaign holds 100 of the SKU's 150 units.
    let (agency_a, session_a, brand, sku, campaign_a) = selling(&app, 150, 100, Some(100), json!({})).await;
    // Agency B sells the same SKU under its own campaign, without an allocation.
    let (agency_b, session_b) = insert_agency_and_session(&app.db).await;
    let campaign_b = propose(&app, &app.brand_token(brand), brand, agency_b, json!({})).await;
    put_skus(
        &app,
        &app.brand_token(brand),
        campaign_b,
        json!([{"sku_id": sku, "floor_price_minor": 100}]),
    )
    .await;
    app.send(
        Method::POST,
        &format!("/v1/campaigns/{campaign_b}/accept"),
        &app.agency_token(agency_b),
        None,
    )
    .await;
    let (status, _) = add_lineup(&app, agency_b, session_b, sku).await;
    assert_eq!(status, 201);

    let (status, answer) = deal(&app, agency_b, session_b, 1, 200, 51).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("insufficient_stock")),
        "A's units are not B's: {answer}"
    );
    let (status, _) = deal(&app, agency_b, session_b, 1, 200, 50).await;
    assert_eq!(status, 201);
    let (status, answer) = deal(&app, agency_a, session_a, 1, 200, 101).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("allocation_exhausted")),
        "{answer}"
    );
    let (status, first) = deal(&app, agency_a, session_a, 1, 200, 60).await;
    assert_eq!(status, 201, "{first}");
    let (status, answer) = deal(&app, agency_a, session_a, 1, 200, 41).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("allocation_exhausted"))
    );
    // Ending A's deal gives its 60 unsold units back to the stock and the allocation.
    let (status, _) = app
        .send(
            Method::POST,
            &format!("/v1/deals/{}/end", first["deal_id"].as_str().unwrap()),
            &app.agency_token(agency_a),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, second) = deal(&app, agency_a, session_a, 1, 200, 100).await;
    assert_eq!(status, 201, "{second}");
    let (_, skus) = app
        .send(
            Method::GET,
            &format!("/v1/campaigns/{campaign_a}/skus"),
            &app.brand_token(brand),
            None,
        )
        .await;
    assert_eq!(
        (
            skus[0]["allocated_units"].as_i64(),
            skus[0]["units_taken"].as_i64()
        ),
        (Some(100), Some(100))
    );
    assert_eq!(stock_and_movements(&app, sku).await, (0, 0));
    // Lowering the allocation below what the campaign took is refused.
    let (status, answer) = put_skus(
        &app,
        &app.brand_token(brand),
        campaign_a,
        json!([{"sku_id": sku, "floor_price_minor": 100, "allocated_units": 10}]),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("allocation_below_taken"))
    );
    // Once accepted, the agency may not change the campaign's SKUs.
    let (status, _) = put_skus(
        &app,
        &app.agency_token(agency_a),
        campaign_a,
        json!([{"sku_id": sku, "floor_price_minor": 1}]),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn campaigns_are_listed_only_to_their_parties_and_hold_only_their_brands_skus() {
    let app = spawn_app().await;
    let (agency, _) = insert_agency_and_session(&app.db).await;
    let (brand, other_brand) = (new_brand(&app).await, new_brand(&app).await);
    let foreign = create_product(&app, other_brand, "LIP-9", 1).await;
    let campaign = propose(&app, &app.agency_token(agency), brand, agency, json!({})).await;
    let (status, answer) = put_skus(
        &app,
        &app.agency_token(agency),
        campaign,
        json!([{"sku_id": foreign["skus"][0]["sku_id"], "floor_price_minor": 1}]),
    )
    .await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("not_brand_sku")));
    let (status, page) = app
        .send(
            Method::GET,
            &format!("/v1/brands/{brand}/campaigns?status=proposed"),
            &app.brand_token(brand),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["items"][0]["campaign_id"], json!(campaign));
    let (status, page) = app
        .send(
            Method::GET,
            &format!("/v1/agencies/{agency}/campaigns"),
            &app.agency_token(agency),
            None,
        )
        .await;
    assert_eq!((status, page["items"].as_array().map(Vec::len)), (200, Some(1)));
    for (path, token) in [
        (
            format!("/v1/brands/{brand}/campaigns"),
            app.brand_token(other_brand),
        ),
        (
            format!("/v1/agencies/{agency}/campaigns"),
            app.agency_token(Uuid::new_v4()),
        ),
    ] {
        let (status, _) = app.send(Method::GET, &path, &token, None).await;
        assert_eq!(status, 403, "{path}");
    }
    let (status, _) = app
        .send(
            Method::GET,
            &format!("/v1/campaigns/{campaign}/skus"),
            &app.brand_token(other_brand),
            None,
        )
        .await;
    assert_eq!(status, 404);
}
