//! The buyer's journey against real Postgres and Redis: a buyer's own
//! orders page by page (and never another's), cancelling a pending order
//! (its units back in the deal and the room), coupons and one session's
//! holdings, the shipping address copied onto orders, fulfilment by the
//! product's brand only, and returns: the window, approval refunding and
//! clawing the commission back.

use std::collections::HashSet;
use std::time::Duration;

use hawker_core::Role;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::fixtures::{
    add_to_lineup, buy, create_deal, insert_agency_and_session, insert_brand_with_sku,
};
use crate::support::socket::join;
use crate::support::{poll, settings_with, spawn_app, spawn_app_with, Patience, TestApp};

/// A session with a brand's SKU at link #1 and a live deal of `quantity` at 10.00 USD.
struct Shop {
    agency: Uuid,
    session: Uuid,
    brand: Uuid,
    deal: String,
}

async fn open_shop(app: &TestApp, quantity: i32, cap: i32) -> Shop {
    let (agency, session) = insert_agency_and_session(&app.db).await;
    let (brand, sku) = insert_brand_with_sku(&app.db, 1999, 10000).await;
    add_to_lineup(app, agency, session, sku).await;
    let deal = create_deal(
        app,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 1000, "quantity": quantity, "per_buyer_cap": cap,
               "duration_secs": 900}),
    )
    .await;
    Shop {
        agency,
        session,
        brand,
        deal,
    }
}

fn id(value: &Value, field: &str) -> Uuid {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {value}"))
        .parse()
        .unwrap()
}

async fn bought(app: &TestApp, buyer: &str, deal: &str, quantity: i32) -> Uuid {
    let (status, order) = buy(app, buyer, deal, &Uuid::new_v4().to_string(), quantity).await;
    assert_eq!(status, 201, "{order}");
    id(&order, "order_id")
}

/// Marks an order paid, as the payment webhook would.
async fn paid(app: &TestApp, order: Uuid) {
    sqlx::query("update customer_order set status = 'paid', paid_at = now() where order_id = $1")
        .bind(order)
        .execute(&app.db)
        .await
        .unwrap();
}

/// Every order id of `buyer`'s list, walking the cursor with `limit` per page.
async fn walk_orders(app: &TestApp, token: &str, query: &str, limit: u32) -> Vec<Uuid> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/v1/me/orders?limit={limit}{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = app.send(Method::GET, &path, token, None).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit as usize);
        ids.extend(items.iter().map(|o| id(o, "order_id")));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return ids,
        }
    }
    panic!("the cursor never ended");
}

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> (u16, Value) {
    app.send(Method::POST, path, token, Some(body)).await
}

#[tokio::test]
async fn a_buyers_order_list_holds_exactly_their_orders_across_pages_newest_first() {
    let app = spawn_app().await;
    let shop = open_shop(&app, 1000, 100).await;
    let other = open_shop(&app, 1000, 100).await;
    let mut mine = Vec::new();
    for i in 0..7 {
        let deal = if i % 2 == 0 { &shop.deal } else { &other.deal };
        mine.push(bought(&app, "alice", deal, 1).await);
    }
    let theirs: Vec<Uuid> =
        futures_util::future::join_all((0..4).map(|_| bought(&app, "bob", &shop.deal, 1))).await;
    paid(&app, mine[0]).await;
    let alice = app.token("alice", Role::Viewer);

    let walked = walk_orders(&app, &alice, "", 3).await;
    assert_eq!(walked.len(), 7, "each order once: {walked:?}");
    assert_eq!(
        walked.iter().copied().collect::<HashSet<_>>(),
        mine.iter().copied().collect()
    );
    let newest_first: Vec<Uuid> = mine.iter().rev().copied().collect();
    assert_eq!(walked, newest_first);
    assert!(
        walked.iter().all(|o| !theirs.contains(o)),
        "never another buyer's order"
    );

    let bob = walk_orders(&app, &app.token("bob", Role::Viewer), "", 2).await;
    assert_eq!(
        bob.iter().copied().collect::<HashSet<_>>(),
        theirs.iter().copied().collect()
    );

    // Filters: by session and by status, still only alice's.
    let in_shop = walk_orders(&app, &alice, &format!("&session_id={}", shop.session), 2).await;
    assert_eq!(in_shop, vec![mine[6], mine[4], mine[2], mine[0]]);
    let paid_only = walk_orders(&app, &alice, "&status=paid", 2).await;
    assert_eq!(paid_only, vec![mine[0]]);
    let pending = walk_orders(&app, &alice, "&status=pending_payment", 50).await;
    assert_eq!(pending.len(), 6);

    for (query, code) in [
        ("?status=shipped", "bad_status"),
        ("?session_id=nope", "bad_session_id"),
        ("?limit=101", "bad_limit"),
        ("?cursor=zz", "bad_cursor"),
    ] {
        let (status, body) = app
            .send(Method::GET, &format!("/v1/me/orders{query}"), &alice, None)
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
    }
    let (status, _) = app.send(Method::GET, "/v1/me/orders", "not-a-token", None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn another_buyers_order_is_not_found_to_read_or_cancel() {
    let app = spawn_app().await;
    let shop = open_shop(&app, 100, 10).await;
    let order = bought(&app, "alice", &shop.deal, 1).await;
    let mallory = app.token("mallory", Role::Viewer);
    let (status, body) = app
        .send(Method::GET, &format!("/v1/me/orders/{order}"), &mallory, None)
        .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, _) = post(
        &app,
        &format!("/v1/me/orders/{order}/cancel"),
        &mallory,
        json!({}),
    )
    .await;
    assert_eq!(status, 404);
    let status: String = sqlx::query_scalar("select status from customer_order where order_id = $1")
        .bind(order)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(status, "pending_payment", "untouched");
    let (_, page) = app.send(Method::GET, "/v1/me/orders", &mallory, None).await;
    assert_eq!(page["items"], json!([]));
}

#[tokio::test]
async fn cancelling_a_pending_order_returns_its_units_at_once_and_the_room_sees_the_stock() {
    let app = spawn_app().await;
    let shop = open_shop(&app, 10, 10).await;
    let mut room = join(app.addr, shop.session, &app.token("watcher", Role::Viewer)).await;
    let order = bought(&app, "alice", &shop.deal, 4).await;
    room.until("stock 6", Duration::from_secs(5), |f| {
        f["type"] == "deal.stock" && f["data"]["remaining"] == 6
    })
    .await;

    let alice = app.token("alice", Role::Viewer);
    let (status, cancelled) = post(&app, &format!("/v1/me/orders/{order}/cancel"), &alice, json!({})).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let kinds: Vec<&str> = cancelled["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["created", "cancelled"]);
    // The room sees the stock figure alone: who cancelled is nobody else's business.
    let stock = room
        .until("stock 10", Duration::from_secs(10), |f| {
            f["type"] == "deal.stock" && f["data"]["remaining"] == 10
        })
        .await;
    assert_eq!(stock["data"]["deal_id"], shop.deal.as_str());
    let (sold, units): (i32, i32) = sqlx::query_as(
        "select d.sold, b.units from deal d join deal_buyer b using (deal_id) where d.deal_id = $1::uuid",
    )
    .bind(&shop.deal)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((sold, units), (0, 0));
    // The units are really back: another buyer takes all ten, and alice may buy again.
    assert_eq!(bought_status(&app, "bob", &shop.deal, 10).await, 201);
    assert_eq!(bought_status(&app, "alice", &shop.deal, 1).await, 409);

    let (status, again) = post(&app, &format!("/v1/me/orders/{order}/cancel"), &alice, json!({})).await;
    assert_eq!(
        (status, again["error"].as_str()),
        (409, Some("order_not_pending"))
    );
}

async fn bought_status(app: &TestApp, buyer: &str, deal: &str, quantity: i32) -> u16 {
    buy(app, buyer, deal, &Uuid::new_v4().to_string(), quantity)
        .await
        .0
}

#[tokio::test]
async fn a_paid_order_cannot_be_cancelled_by_its_buyer() {
    let app = spawn_app().await;
    let shop = open_shop(&app, 10, 10).await;
    let order = bought(&app, "alice", &shop.deal, 1).await;
    paid(&app, order).await;
    let (status, body) = post(
        &app,
        &format!("/v1/me/orders/{order}/cancel"),
        &app.token("alice", Role::Viewer),
        json!({}),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (409, Some("order_not_pending")));
}

#[tokio::test]
async fn the_shipping_address_is_validated_kept_and_copied_onto_later_orders() {
    let app = spawn_app().await;
    let shop = open_shop(&app, 100, 10).await;
    let alice = app.token("alice", Role::Viewer);
    let before = bought(&app, "alice", &shop.deal, 1).await;
    let (status, profile) = app
        .send(Method::GET, "/v1/me/shipping-address", &alice, None)
        .await;
    assert_eq!((status, &profile["shipping_address"]), (200, &Value::Null));

    let address = json!({"name": "Mia Chen", "line1": "12 Harbour Street", "city": "Singapore",
                         "postal_code": "049318", "country": "SG", "phone": "+6561234567"});
    for bad in [
        json!({"name": "Mia\u{202E}nehC"}),
        json!({"line1": "   "}),
        json!({"country": "sgp"}),
        json!({"postal_code": "-1"}),
    ] {
        let mut body = address.clone();
        body.as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        let (status, err) = app
            .send(Method::PUT, "/v1/me/shipping-address", &alice, Some(body))
            .await;
        assert_eq!(
            (status, err["error"].as_str()),
            (400, Some("bad_address")),
            "{bad}"
        );
    }
    let (status, kept) = app
        .send(
            Method::PUT,
            "/v1/me/shipping-address",
            &alice,
            Some(address.clone()),
        )
        .await;
    assert_eq!(status, 200, "{kept}");
    let after = bought(&app, "alice", &shop.deal, 1).await;
    let (_, order) = app
        .send(Method::GET, &format!("/v1/me/orders/{after}"), &alice, None)
        .await;
    assert_eq!(order["shipping_address"]["city"], "Singapore");
    assert_eq!(order["shipping_address"]["line2"], Value::Null);
    let (_, order) = app
        .send(Method::GET, &format!("/v1/me/orders/{before}"), &alice, None)
        .await;
    assert_eq!(
        order["shipping_address"],
        Value::Null,
        "placed before the address was given"
    );
    // Changing the address later leaves the order's copy as it was.
    let mut moved = address.clone();
    moved["city"] = json!("Penang");
    moved["country"] = json!("MY");
    app.send(Method::PUT, "/v1/me/shipping-address", &alice, Some(moved))
        .await;
    let (_, order) = app
        .send(Method::GET, &format!("/v1/me/orders/{after}"), &alice, None)
        .await;
    assert_eq!(order["shipping_address"]["city"], "Singapore");
}

#[tokio::test]
async fn only_the_products_brand_ships_and_delivers_and_every_step_is_an_event() {
    let app = spawn_app().await;
    let shop = open_shop(&app, 100, 10).await;
    let (other_brand, _) = insert_brand_with_sku(&app.db, 500, 10).await;
    let order = bought(&app, "alice", &shop.deal, 1).await;
    let ship = format!("/v1/orders/{order}/shipment");
    let shipment = json!({"carrier": "DHL", "tracking_number": "JD014600006151"});
    let brand = app.brand_token(shop.brand);

    let (status, body) = post(&app, &ship, &brand, shipment.clone()).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("order_not_paid")));
    paid(&app, order).await;
    let (status, _) = post(&app, &ship, &app.brand_token(other_brand), shipment.clone()).await;
    assert_eq!(status, 404, "another brand does not see the order");
    let (status, _) = post(&app, &ship, &app.agency_token(shop.agency), shipment.clone()).await;
    assert_eq!(status, 404, "the agency does not ship");
    let (status, _) = post(&app, &ship, &app.token("alice", Role::Viewer), shipment.clone()).await;
    assert_eq!(status, 403, "the buyer does not ship");
    let (status, body) = post(
        &app,
        &ship,
        &brand,
        json!({"carrier": "DHL\u{200B}", "tracking_number": "X1"}),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_carrier")));
    let (status, body) = post(
        &app,
        &ship,
        &brand,
        json!({"carrier": "DHL", "tracking_number": "has space"}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_tracking_number"))
    );

    let deliver = format!("/v1/orders/{order}/delivery");
    let (status, body) = post(&app, &deliver, &brand, json!({})).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("not_shipped")));
    let (status, shipped) = post(&app, &ship, &brand, shipment.clone()).await;
    assert_eq!(status, 200, "{shipped}");
    assert_eq!(
        (shipped["fulfilment"].as_str(), shipped["carrier"].as_str()),
        (Some("shipped"), Some("DHL"))
    );
    let (status, body) = post(&app, &ship, &brand, shipment).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("already_shipped")));
    let (status, delivered) = post(&app, &deliver, &brand, json!({})).await;
    assert_eq!(status, 200, "{delivered}");
    assert_eq!(delivered["fulfilment"], "delivered");

    let (_, mine) = app
        .send(
            Method::GET,
            &format!("/v1/me/orders/{order}"),
            &app.token("alice", Role::Viewer),
            None,
        )
        .await;
    let kinds: Vec<&str> = mine["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["created", "shipped", "delivered"]);
    assert_eq!(mine["events"][1]["detail"]["tracking_number"], "JD014600006151");
}

/// Pays, ships and delivers an order as its brand.
async fn delivered(app: &TestApp, shop: &Shop, buyer: &str) -> Uuid {
    let order = bought(app, buyer, &shop.deal, 2).await;
    paid(app, order).await;
    let brand = app.brand_token(shop.brand);
    let shipment = json!({"carrier": "DHL", "tracking_number": "T1"});
    assert_eq!(
        post(app, &format!("/v1/orders/{order}/shipment"), &brand, shipment)
            .await
            .0,
        200
    );
    assert_eq!(
        post(app, &format!("/v1/orders/{order}/delivery"), &brand, json!({}))
            .await
            .0,
        200
    );
    order
}

#[tokio::test]
async fn a_return_is_refused_once_the_window_after_delivery_has_closed() {
    let app = spawn_app_with(settings_with(&[("HAWKER__COMMERCE__RETURN_WINDOW_SECS", "2")])).await;
    let shop = open_shop(&app, 100, 10).await;
    let alice = app.token("alice", Role::Viewer);
    let reason = json!({"reason": "Too small"});

    let pending = bought(&app, "alice", &shop.deal, 1).await;
    let (status, body) = post(
        &app,
        &format!("/v1/orders/{pending}/return"),
        &alice,
        reason.clone(),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (409, Some("not_delivered")));

    let late = delivered(&app, &shop, "alice").await;
    let in_time = delivered(&app, &shop, "alice").await;
    let (status, body) = post(
        &app,
        &format!("/v1/orders/{in_time}/return"),
        &alice,
        reason.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["return"]["status"], "requested");
    assert_eq!(body["return_status"], "requested");
    let (status, body) = post(
        &app,
        &format!("/v1/orders/{in_time}/return"),
        &alice,
        reason.clone(),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (409, Some("return_exists")));

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = post(&app, &format!("/v1/orders/{late}/return"), &alice, reason.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("return_window_closed")),
        "{body}"
    );
    let (status, _) = post(
        &app,
        &format!("/v1/orders/{late}/return"),
        &app.token("mallory", Role::Viewer),
        reason,
    )
    .await;
    assert_eq!(status, 404, "only the buyer asks for a return");
    let (status, body) = post(
        &app,
        &format!("/v1/orders/{late}/return"),
        &alice,
        json!({"reason": "a\u{202E}b"}),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_reason")));
}

#[tokio::test]
async fn an_approved_return_refunds_the_order_and_claws_the_commission_back_a_refused_one_does_not() {
    let app = spawn_app().await;
    let (agency, session) = insert_agency_and_session(&app.db).await;
    let (status, terms) = post(
        &app,
        &format!("/v1/sessions/{session}/terms"),
        &app.agency_token(agency),
        json!({"percent_bps": 1000, "host_share_bps": 0, "currency": "USD"}),
    )
    .await;
    assert_eq!(status, 201, "{terms}");
    let (brand, sku) = insert_brand_with_sku(&app.db, 1999, 10000).await;
    add_to_lineup(&app, agency, session, sku).await;
    let deal = create_deal(
        &app,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 1000, "quantity": 100, "per_buyer_cap": 10, "duration_secs": 900}),
    )
    .await;
    let shop = Shop {
        agency,
        session,
        brand,
        deal,
    };
    let approved = delivered(&app, &shop, "alice").await;
    let refused = delivered(&app, &shop, "bob").await;
    let brand_token = app.brand_token(brand);
    for (order, buyer) in [(approved, "alice"), (refused, "bob")] {
        let (status, body) = post(
            &app,
            &format!("/v1/orders/{order}/return"),
            &app.token(buyer, Role::Viewer),
            json!({"reason": "Not as shown"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    // The buyer cannot approve their own return; another brand cannot see it.
    let (status, _) = post(
        &app,
        &format!("/v1/orders/{approved}/return/approve"),
        &app.token("alice", Role::Viewer),
        json!({}),
    )
    .await;
    assert_eq!(status, 403);
    let (other, _) = insert_brand_with_sku(&app.db, 500, 10).await;
    let (status, _) = post(
        &app,
        &format!("/v1/orders/{approved}/return/approve"),
        &app.brand_token(other),
        json!({}),
    )
    .await;
    assert_eq!(status, 404);

    let (status, body) = post(
        &app,
        &format!("/v1/orders/{approved}/return/approve"),
        &brand_token,
        json!({"note": "Sorry about that"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "refunded");
    assert_eq!(body["return"]["status"], "approved");
    let refund_id = id(&body["return"], "refund_id");
    let kinds: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "shipped",
            "delivered",
            "return_requested",
            "refunded",
            "return_approved"
        ]
    );
    let (amount, kind): (i64, String) =
        sqlx::query_as("select amount_minor, kind from refund where refund_id = $1")
            .bind(refund_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((amount, kind.as_str()), (2000, "return"));
    let (status, body) = post(
        &app,
        &format!("/v1/orders/{approved}/return/refuse"),
        &brand_token,
        json!({}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("return_already_decided"))
    );

    let (status, body) = post(
        &app,
        &format!("/v1/orders/{refused}/return/refuse"),
        &brand_token,
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["return"]["status"].as_str()),
        (Some("paid"), Some("refused"))
    );

    // The ledger: 10% of each sale (200), and the approved return clawed back (-200).
    let sum = |sql: &'static str, source: Uuid| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, Option<i64>>(sql)
                .bind(source)
                .fetch_one(&db)
                .await
                .unwrap()
                .unwrap_or(0)
        }
    };
    let clawed = poll(
        Patience::For(Duration::from_secs(10)),
        Duration::from_millis(100),
        || async {
            hawker_ledger::ledger::accrue(&app.db).await.unwrap();
            sum(
                "select sum(amount_minor)::bigint from commission_entry where refund_id = $1",
                refund_id,
            )
            .await
        },
        |clawed| *clawed != 0,
    )
    .await;
    assert_eq!(clawed, -200);
    let sale = sum(
        "select sum(amount_minor)::bigint from commission_entry where kind = 'sale' and order_id = $1",
        approved,
    )
    .await;
    assert_eq!(sale, 200);
    let refused_claws = sum("select count(*) from refund where order_id = $1", refused).await;
    assert_eq!(refused_claws, 0, "a refused return refunds nothing");
}

#[tokio::test]
async fn coupons_and_one_sessions_holdings_show_only_the_callers_own() {
    let app = spawn_app().await;
    let shop = open_shop(&app, 100, 10).await;
    let (status, drop) = post(
        &app,
        &format!("/v1/sessions/{}/coupon-drops", shop.session),
        &app.agency_token(shop.agency),
        json!({"total": 10, "discount_kind": "percent", "discount_value": 10, "claim_window_secs": 600}),
    )
    .await;
    assert_eq!(status, 201, "{drop}");
    let drop_id = id(&drop, "coupon_drop_id");
    let claim = |who: &'static str| {
        let token = app.token(who, Role::Viewer);
        let app = &app;
        async move {
            let (status, claim) = post(
                app,
                &format!("/v1/coupon-drops/{drop_id}/claims"),
                &token,
                json!({}),
            )
            .await;
            assert_eq!(status, 201, "{claim}");
            id(&claim, "coupon_claim_id")
        }
    };
    let alice_claim = claim("alice").await;
    claim("bob").await;
    let alice_order = bought(&app, "alice", &shop.deal, 1).await;
    bought(&app, "bob", &shop.deal, 1).await;
    let alice = app.token("alice", Role::Viewer);

    let (status, coupons) = app.send(Method::GET, "/v1/me/coupons", &alice, None).await;
    assert_eq!(status, 200, "{coupons}");
    let items = coupons["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(id(&items[0], "coupon_claim_id"), alice_claim);
    assert_eq!(items[0]["discount_kind"], "percent");
    assert_eq!(id(&items[0], "session_id"), shop.session);

    let (status, held) = app
        .send(
            Method::GET,
            &format!("/v1/me/sessions/{}", shop.session),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 200, "{held}");
    let orders: Vec<Uuid> = held["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| id(o, "order_id"))
        .collect();
    assert_eq!(orders, vec![alice_order]);
    let coupons: Vec<Uuid> = held["coupons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| id(c, "coupon_claim_id"))
        .collect();
    assert_eq!(coupons, vec![alice_claim]);
    let (status, _) = app
        .send(
            Method::GET,
            &format!("/v1/me/sessions/{}", Uuid::new_v4()),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 404);
}
