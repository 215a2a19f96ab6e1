//! Orders from auctions and giveaways (`hawker_commerce::sourced`) against
//! real Postgres and Redis: created with the host on air, paid through the
//! usual webhook, expired or cancelled with their unit going back to the SKU
//! (a movement naming the auction), free only for giveaways, idempotent by
//! key; and the schema (migration 0014) refusing orders and movements that
//! break their source's rules whatever the code does. An auction id here
//! names nothing until 0015's table; a giveaway order names a giveaway row
//! (0016's foreign key), made by `giveaway_row`.

use std::time::Duration;

use chrono::Utc;
use hawker_catalog::campaign_skus::{self, TakeUnits, UnitSource};
use hawker_commerce::order::{Order, Source};
use hawker_commerce::sourced::{self, OrderSource, SourcedOrder};
use hawker_core::Role;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::fixtures::{ensure_campaign_sku, insert_agency_and_session, insert_brand_with_sku};
use crate::support::{answer, poll, settings_with, spawn_app_with, Patience, TestApp};

/// A session with a host on shift for all of it, and a campaign SKU
/// (10 units on hand) at link #1.
#[derive(Clone, Copy)]
struct Stage {
    session: Uuid,
    sku: Uuid,
    campaign: Uuid,
    lineup_item: Uuid,
    host: Uuid,
}

/// A giveaway row of the stage's session (giveaway orders name one: 0016's
/// foreign key).
async fn giveaway_row(db: &PgPool, stage: &Stage) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "insert into giveaway (giveaway_id, session_id, prize_kind, lineup_item_id, sku_id, winners, eligibility,
                must_be_present, closes_at, seed, seed_hash, created_by)
         values ($1, $2, 'item', $3, $4, 1, 'room', false, now() + interval '1 hour',
                 decode(repeat('00', 32), 'hex'), repeat('0', 64), 'test')",
    )
    .bind(id)
    .bind(stage.session)
    .bind(stage.lineup_item)
    .bind(stage.sku)
    .execute(db)
    .await
    .expect("giveaway");
    id
}

async fn stage(db: &PgPool) -> Stage {
    let (agency, session) = insert_agency_and_session(db).await;
    let (_, sku) = insert_brand_with_sku(db, 3000, 10).await;
    let campaign = ensure_campaign_sku(db, agency, sku).await;
    let (lineup_item, host) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        "insert into lineup_item (lineup_item_id, session_id, link_number, sku_id, campaign_id)
         values ($1, $2, 1, $3, $4)",
    )
    .bind(lineup_item)
    .bind(session)
    .bind(sku)
    .bind(campaign)
    .execute(db)
    .await
    .unwrap();
    sqlx::query("insert into host (host_id, handle, display_name) values ($1, $2, 'Mia Chen')")
        .bind(host)
        .bind("mia")
        .execute(db)
        .await
        .unwrap();
    sqlx::query(
        "insert into shift (shift_id, session_id, host_id, planned_start, planned_end, created_by)
         select $1, session_id, $3, planned_start - interval '1 minute', planned_end, 'test'
           from live_session where session_id = $2",
    )
    .bind(Uuid::new_v4())
    .bind(session)
    .bind(host)
    .execute(db)
    .await
    .unwrap();
    Stage {
        session,
        sku,
        campaign,
        lineup_item,
        host,
    }
}

/// A node whose expiry sweeper runs every 100 ms, and its webhook secret.
async fn node() -> (TestApp, String) {
    let settings = settings_with(&[("HAWKER__COMMERCE__SCHEDULER_TICK_MS", "100")]);
    let secret = settings.payments.webhook_secret.clone();
    (spawn_app_with(settings).await, secret)
}

fn order_of<'a>(
    stage: &Stage,
    source: OrderSource,
    buyer: &'a str,
    price: i64,
    key: &str,
) -> SourcedOrder<'a> {
    SourcedOrder {
        source,
        session_id: stage.session,
        lineup_item_id: stage.lineup_item,
        sku_id: stage.sku,
        buyer_id: buyer,
        quantity: 1,
        unit_price_minor: price,
        currency: "USD",
        idempotency_key: key.into(),
    }
}

/// Creates the order in a transaction of its own.
async fn create(app: &TestApp, o: SourcedOrder<'_>) -> hawker_commerce::Result<Order> {
    let mut tx = app.db.begin().await.unwrap();
    let order = sourced::create_order(&app.commerce, &mut tx, o).await?;
    tx.commit().await.unwrap();
    Ok(order)
}

/// An auction row (`hawker-live`'s table, 0015) for `auction`, so that an
/// order may name it (orders reference their auction). Voided, so that
/// several may share the stage's lineup item (one runs per item at a time).
async fn insert_auction(db: &PgPool, stage: &Stage, auction: Uuid) {
    sqlx::query(
        "insert into auction (auction_id, session_id, lineup_item_id, sku_id, campaign_id, brand_id, currency,
                              start_price_minor, increments, mode, duration_secs, starts_at, ends_at, created_by,
                              status, void_reason, ended_at)
         select $1, $2, $3, sku_id, $5, brand_id, currency, 1000, '[{\"step_minor\": 100}]', 'sudden_death', 60,
                now(), now() + interval '1 minute', 'test', 'voided', 'a test row', now()
           from sku where sku_id = $4
         on conflict do nothing",
    )
    .bind(auction)
    .bind(stage.session)
    .bind(stage.lineup_item)
    .bind(stage.sku)
    .bind(stage.campaign)
    .execute(db)
    .await
    .unwrap();
}

/// What the live formats will do when an auction starts: take its unit.
async fn take_for_auction(app: &TestApp, stage: &Stage, auction: Uuid) {
    insert_auction(&app.db, stage, auction).await;
    let mut tx = app.db.begin().await.unwrap();
    campaign_skus::take_units(
        &mut tx,
        TakeUnits {
            campaign_id: Some(stage.campaign),
            sku_id: stage.sku,
            quantity: 1,
            price_minor: Some(2000),
            source: UnitSource::Auction(auction),
            actor: "test",
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn stock_on_hand(db: &PgPool, sku: Uuid) -> i32 {
    sqlx::query_scalar("select stock_on_hand from sku where sku_id = $1")
        .bind(sku)
        .fetch_one(db)
        .await
        .unwrap()
}

async fn units_taken(db: &PgPool, stage: &Stage) -> i32 {
    sqlx::query_scalar("select units_taken from campaign_sku where campaign_id = $1 and sku_id = $2")
        .bind(stage.campaign)
        .bind(stage.sku)
        .fetch_one(db)
        .await
        .unwrap()
}

/// The SKU's movements naming `auction`: (reason, delta), oldest first.
async fn auction_movements(db: &PgPool, auction: Uuid) -> Vec<(String, i32)> {
    sqlx::query_as(
        "select reason, delta from stock_movement where auction_id = $1 and deal_id is null and giveaway_id is null
          order by stock_movement_id",
    )
    .bind(auction)
    .fetch_all(db)
    .await
    .unwrap()
}

async fn status_of(db: &PgPool, order: Uuid) -> String {
    sqlx::query_scalar("select status from customer_order where order_id = $1")
        .bind(order)
        .fetch_one(db)
        .await
        .unwrap()
}

async fn pay(app: &TestApp, secret: &str, order: &Order) -> (u16, Value) {
    let body = json!({"event_id": format!("evt-{}", order.order_id), "type": "payment.succeeded",
                      "order_id": order.order_id, "amount_minor": order.amount_minor, "currency": "USD"})
    .to_string()
    .into_bytes();
    let signature = hawker_commerce::payments::sign(secret, Utc::now().timestamp(), &body);
    let sent = app
        .http
        .post(app.url("/v1/payments/webhook"))
        .header("content-type", "application/json")
        .header("X-Hawker-Signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    answer(sent).await
}

#[tokio::test]
async fn an_auction_order_is_pending_with_the_host_on_air_payable_and_idempotent_by_key() {
    let (app, secret) = node().await;
    let stage = stage(&app.db).await;
    let auction = Uuid::new_v4();
    take_for_auction(&app, &stage, auction).await;
    assert_eq!(stock_on_hand(&app.db, stage.sku).await, 9);
    assert_eq!(
        auction_movements(&app.db, auction).await,
        [("auction_allocated".to_string(), -1)]
    );

    let key = format!("auction:{auction}:win");
    let order = create(
        &app,
        order_of(&stage, OrderSource::Auction(auction), "winner", 4200, &key),
    )
    .await
    .unwrap();
    assert_eq!(order.source, Source::Auction);
    assert_eq!(
        (order.auction_id, order.deal_id, order.giveaway_id),
        (Some(auction), None, None)
    );
    assert_eq!(order.status, "pending_payment");
    assert_eq!(
        (order.quantity, order.unit_price_minor, order.amount_minor),
        (1, 4200, 4200)
    );
    assert_eq!(order.host_id, Some(stage.host), "attributed to the host on air");
    let window = (order.expires_at - order.created_at).num_seconds();
    assert!(
        (590..=610).contains(&window),
        "the payment window is commerce.order_ttl_secs (600): {window}"
    );

    // The same key again: the same order, no second row; the same key for
    // something else is refused.
    let again = create(
        &app,
        order_of(&stage, OrderSource::Auction(auction), "winner", 4200, &key),
    )
    .await
    .unwrap();
    assert_eq!(again.order_id, order.order_id);
    let reused = create(
        &app,
        order_of(&stage, OrderSource::Auction(auction), "winner", 4300, &key),
    )
    .await
    .unwrap_err();
    assert_eq!(reused.code(), "idempotency_key_reused", "{reused}");
    let rows: i64 = sqlx::query_scalar("select count(*) from customer_order where auction_id = $1")
        .bind(auction)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 1);

    // The buyer sees it as any order, with its source.
    let (status, seen) = app
        .send(
            Method::GET,
            &format!("/v1/me/orders/{}", order.order_id),
            &app.token("winner", Role::Viewer),
            None,
        )
        .await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["source"], "auction");
    assert_eq!(seen["auction_id"], auction.to_string());
    assert_eq!(seen["deal_id"], Value::Null);
    assert_eq!(seen["giveaway_id"], Value::Null);

    // Paid through the usual webhook; the sale reaches the ledger's facts.
    let (status, paid) = pay(&app, &secret, &order).await;
    assert_eq!(
        (status, paid["outcome"].as_str()),
        (200, Some("applied")),
        "{paid}"
    );
    assert_eq!(status_of(&app.db, order.order_id).await, "paid");
    let facts = hawker_commerce::sales::paid_orders_by_id(&app.db, &[order.order_id])
        .await
        .unwrap();
    assert_eq!(facts.len(), 1);
    assert_eq!(facts[0].host_id, Some(stage.host));
    assert_eq!(facts[0].amount_minor, 4200);
}

#[tokio::test]
async fn an_auction_order_that_expires_or_is_cancelled_gives_its_unit_back_to_the_sku() {
    let (app, _) = node().await;
    let stage = stage(&app.db).await;
    let (expiring, cancelled) = (Uuid::new_v4(), Uuid::new_v4());
    take_for_auction(&app, &stage, expiring).await;
    take_for_auction(&app, &stage, cancelled).await;
    assert_eq!(stock_on_hand(&app.db, stage.sku).await, 8);
    assert_eq!(units_taken(&app.db, &stage).await, 2);

    let unpaid = create(
        &app,
        order_of(&stage, OrderSource::Auction(expiring), "slow", 2500, "win-1"),
    )
    .await
    .unwrap();
    sqlx::query("update customer_order set expires_at = now() - interval '1 second' where order_id = $1")
        .bind(unpaid.order_id)
        .execute(&app.db)
        .await
        .unwrap();
    let status = poll(
        Patience::For(Duration::from_secs(15)),
        Duration::from_millis(100),
        || status_of(&app.db, unpaid.order_id),
        |s| s == "cancelled",
    )
    .await;
    assert_eq!(status, "cancelled", "the sweeper lets the unpaid order go");
    assert_eq!(
        auction_movements(&app.db, expiring).await,
        [
            ("auction_allocated".to_string(), -1),
            ("order_released".to_string(), 1)
        ],
        "the unit is back on the SKU, the movement naming the auction"
    );
    assert_eq!(stock_on_hand(&app.db, stage.sku).await, 9);
    assert_eq!(units_taken(&app.db, &stage).await, 1);

    // The buyer cancels the other one themselves.
    let mine = create(
        &app,
        order_of(&stage, OrderSource::Auction(cancelled), "quitter", 2500, "win-2"),
    )
    .await
    .unwrap();
    let (status, body) = app
        .send(
            Method::POST,
            &format!("/v1/me/orders/{}/cancel", mine.order_id),
            &app.token("quitter", Role::Viewer),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["source"], "auction");
    assert_eq!(
        auction_movements(&app.db, cancelled).await,
        [
            ("auction_allocated".to_string(), -1),
            ("order_released".to_string(), 1)
        ]
    );
    assert_eq!(stock_on_hand(&app.db, stage.sku).await, 10);
    assert_eq!(units_taken(&app.db, &stage).await, 0);
    // No deal was touched: there is none.
    let deals: i64 = sqlx::query_scalar("select count(*) from deal")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(deals, 0);
}

#[tokio::test]
async fn a_giveaway_order_is_created_paid_at_zero_and_only_a_giveaway_is_free() {
    let (app, _) = node().await;
    let stage = stage(&app.db).await;
    let giveaway = giveaway_row(&app.db, &stage).await;
    let order = create(
        &app,
        order_of(
            &stage,
            OrderSource::Giveaway(giveaway),
            "lucky",
            0,
            "giveaway-win",
        ),
    )
    .await
    .unwrap();
    assert_eq!(order.source, Source::Giveaway);
    assert_eq!(
        (order.giveaway_id, order.deal_id, order.auction_id),
        (Some(giveaway), None, None)
    );
    assert_eq!(order.status, "paid");
    assert!(order.paid_at.is_some());
    assert_eq!((order.unit_price_minor, order.amount_minor), (0, 0));
    assert_eq!(order.host_id, Some(stage.host));
    let again = create(
        &app,
        order_of(
            &stage,
            OrderSource::Giveaway(giveaway),
            "lucky",
            0,
            "giveaway-win",
        ),
    )
    .await
    .unwrap();
    assert_eq!(again.order_id, order.order_id);

    // Its history: one event, created paid.
    let (status, detail) = app
        .send(
            Method::GET,
            &format!("/v1/me/orders/{}", order.order_id),
            &app.token("lucky", Role::Viewer),
            None,
        )
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["events"].as_array().map(Vec::len), Some(1), "{detail}");
    assert_eq!(detail["events"][0]["kind"], "created");
    assert_eq!(detail["events"][0]["to_status"], "paid");

    // Not payable again, not cancellable.
    let (status, body) = app
        .send(
            Method::POST,
            &format!("/v1/me/orders/{}/cancel", order.order_id),
            &app.token("lucky", Role::Viewer),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");

    // A priced giveaway or a free auction is refused before Postgres.
    let priced = create(
        &app,
        order_of(&stage, OrderSource::Giveaway(giveaway), "greedy", 100, "g-2"),
    )
    .await
    .unwrap_err();
    assert_eq!(priced.code(), "bad_price");
    let free = create(
        &app,
        order_of(&stage, OrderSource::Auction(Uuid::new_v4()), "greedy", 0, "a-2"),
    )
    .await
    .unwrap_err();
    assert_eq!(free.code(), "bad_price");
    // A lineup item of another SKU is not this order's.
    let mut wrong = order_of(&stage, OrderSource::Auction(Uuid::new_v4()), "greedy", 100, "a-3");
    wrong.sku_id = Uuid::new_v4();
    let wrong = create(&app, wrong).await.unwrap_err();
    assert_eq!(wrong.code(), "not_found");
}

/// Inserts an order straight into the table, bypassing the code.
async fn raw_order(
    db: &PgPool,
    stage: &Stage,
    source: &str,
    ids: (Option<Uuid>, Option<Uuid>, Option<Uuid>),
    quantity: i32,
    price: i64,
) -> Result<(), String> {
    let deal = match ids.0 {
        Some(deal) => {
            insert_deal(db, stage, deal).await;
            Some(deal)
        }
        None => None,
    };
    if let Some(auction) = ids.1 {
        insert_auction(db, stage, auction).await;
    }
    let order_id = Uuid::new_v4();
    broken(
        sqlx::query(
            "insert into customer_order (order_id, source, deal_id, auction_id, giveaway_id, session_id, lineup_item_id,
                                         sku_id, buyer_id, quantity, unit_price_minor, amount_minor, currency,
                                         idempotency_key, request_hash, expires_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, 'raw', $9, $10, $9 * $10, 'USD', $1::text, 'h',
                     now() + interval '10 minutes')",
        )
        .bind(order_id)
        .bind(source)
        .bind(deal)
        .bind(ids.1)
        .bind(ids.2)
        .bind(stage.session)
        .bind(stage.lineup_item)
        .bind(stage.sku)
        .bind(quantity)
        .bind(price)
        .execute(db)
        .await,
    )
    .map(|_| ())
}

#[tokio::test]
async fn the_schema_holds_each_order_and_movement_to_its_source() {
    let (app, _) = node().await;
    let stage = stage(&app.db).await;
    let db = &app.db;
    let some = || Some(Uuid::new_v4());
    // What is allowed.
    assert_eq!(
        raw_order(db, &stage, "deal", (some(), None, None), 2, 1500).await,
        Ok(())
    );
    assert_eq!(
        raw_order(db, &stage, "auction", (None, some(), None), 1, 1500).await,
        Ok(())
    );
    assert_eq!(
        raw_order(
            db,
            &stage,
            "giveaway",
            (None, None, Some(giveaway_row(db, &stage).await)),
            1,
            0
        )
        .await,
        Ok(())
    );
    // Exactly its source's id.
    let source_id = Err("customer_order_source_id".to_string());
    assert_eq!(
        raw_order(db, &stage, "auction", (some(), some(), None), 1, 1500).await,
        source_id
    );
    assert_eq!(
        raw_order(db, &stage, "auction", (some(), None, None), 1, 1500).await,
        source_id
    );
    assert_eq!(
        raw_order(db, &stage, "deal", (None, None, None), 1, 1500).await,
        source_id
    );
    assert_eq!(
        raw_order(db, &stage, "deal", (some(), None, some()), 1, 1500).await,
        source_id
    );
    assert_eq!(
        raw_order(db, &stage, "giveaway", (None, some(), None), 1, 0).await,
        source_id
    );
    assert_eq!(
        raw_order(db, &stage, "flash_sale", (some(), None, None), 1, 1500).await,
        Err("customer_order_source".to_string())
    );
    // Free only for giveaways, and a giveaway is always free.
    let price = Err("customer_order_price".to_string());
    assert_eq!(
        raw_order(db, &stage, "deal", (some(), None, None), 1, 0).await,
        price
    );
    assert_eq!(
        raw_order(db, &stage, "auction", (None, some(), None), 1, 0).await,
        price
    );
    assert_eq!(
        raw_order(db, &stage, "giveaway", (None, None, some()), 1, 100).await,
        price
    );
    // One unit per auction or giveaway order.
    assert_eq!(
        raw_order(db, &stage, "auction", (None, some(), None), 2, 1500).await,
        Err("customer_order_sourced_single_unit".to_string())
    );
    // The deal's foreign key still holds for deal orders.
    let dangling = sqlx::query(
        "insert into customer_order (order_id, deal_id, session_id, lineup_item_id, sku_id, buyer_id, quantity,
                                     unit_price_minor, amount_minor, currency, idempotency_key, request_hash,
                                     expires_at)
         values ($1, $2, $3, $4, $5, 'raw', 1, 1500, 1500, 'USD', 'dangling', 'h', now())",
    )
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .bind(stage.session)
    .bind(stage.lineup_item)
    .bind(stage.sku)
    .execute(db)
    .await
    .unwrap_err();
    assert_eq!(
        dangling.as_database_error().and_then(|d| d.constraint()),
        Some("customer_order_deal_source")
    );
    // One composite key per source (0020): an order's session, item and SKU
    // are its deal's, so a real deal named with another SKU is refused.
    let deal = Uuid::new_v4();
    assert_eq!(
        raw_order(db, &stage, "deal", (Some(deal), None, None), 1, 1500).await,
        Ok(())
    );
    let other_sku: Uuid = sqlx::query_scalar(
        "insert into sku (sku_id, product_id, code, name, price_minor, currency, stock_on_hand, brand_id)
         select gen_random_uuid(), product_id, code || '-other', name, price_minor, currency, 0, brand_id
           from sku where sku_id = $1
         returning sku_id",
    )
    .bind(stage.sku)
    .fetch_one(db)
    .await
    .unwrap();
    let mismatched = sqlx::query(
        "insert into customer_order (order_id, deal_id, session_id, lineup_item_id, sku_id, buyer_id, quantity,
                                     unit_price_minor, amount_minor, currency, idempotency_key, request_hash,
                                     expires_at)
         values ($1, $2, $3, $4, $5, 'raw', 1, 1500, 1500, 'USD', 'mismatched', 'h', now())",
    )
    .bind(Uuid::new_v4())
    .bind(deal)
    .bind(stage.session)
    .bind(stage.lineup_item)
    .bind(other_sku)
    .execute(db)
    .await
    .unwrap_err();
    assert_eq!(
        mismatched.as_database_error().and_then(|d| d.constraint()),
        Some("customer_order_deal_source")
    );

    // Stock movements name at most one source, and the one their reason says.
    let movement =
        |reason: &'static str, deal: Option<Uuid>, auction: Option<Uuid>, giveaway: Option<Uuid>| {
            let sku = stage.sku;
            async move {
                let inserted = sqlx::query(
                "insert into stock_movement (sku_id, delta, reason, actor, deal_id, auction_id, giveaway_id)
                 values ($1, 1, $2, 'test', $3, $4, $5)",
            )
            .bind(sku)
            .bind(reason)
            .bind(deal)
            .bind(auction)
            .bind(giveaway)
            .execute(db)
            .await;
                broken(inserted).map(|_| ())
            }
        };
    assert_eq!(movement("auction_returned", None, some(), None).await, Ok(()));
    assert_eq!(movement("giveaway_returned", None, None, some()).await, Ok(()));
    assert_eq!(movement("order_released", None, some(), None).await, Ok(()));
    let named = Err("stock_movement_source_named".to_string());
    assert_eq!(movement("auction_returned", some(), None, None).await, named);
    assert_eq!(movement("giveaway_returned", None, some(), None).await, named);
    assert_eq!(movement("order_released", None, None, None).await, named);
    assert_eq!(
        movement("order_released", some(), some(), None).await,
        Err("stock_movement_one_source".to_string())
    );
    assert_eq!(
        movement("restock", None, some(), some()).await,
        Err("stock_movement_one_source".to_string())
    );
}

/// A live deal row `deal` of the stage's lineup item (kept if it exists).
async fn insert_deal(db: &PgPool, stage: &Stage, deal: Uuid) {
    sqlx::query(
        "insert into deal (deal_id, session_id, lineup_item_id, sku_id, price_minor, currency, quantity,
                           per_buyer_cap, starts_at, ends_at, status, created_by)
         values ($1, $2, $3, $4, 1500, 'USD', 10, 5, now(), now() + interval '1 hour', 'live', 'test')
         on conflict do nothing",
    )
    .bind(deal)
    .bind(stage.session)
    .bind(stage.lineup_item)
    .bind(stage.sku)
    .execute(db)
    .await
    .unwrap();
}

/// A deal row of the stage's lineup item that nothing names yet.
async fn deal_row(db: &PgPool, stage: &Stage) -> Uuid {
    let deal = Uuid::new_v4();
    insert_deal(db, stage, deal).await;
    deal
}

/// The constraint a statement broke, or its error's text.
fn broken(result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>) -> Result<u64, String> {
    result.map(|r| r.rows_affected()).map_err(|e| {
        e.as_database_error()
            .and_then(|d| d.constraint().map(str::to_string))
            .unwrap_or_else(|| e.to_string())
    })
}

/// Inserts deal orders in one statement, one per (deal, host, coupon).
async fn deal_orders<'e>(
    db: impl sqlx::PgExecutor<'e>,
    stage: &Stage,
    rows: &[(Uuid, Option<Uuid>, Option<Uuid>)],
) -> Result<u64, String> {
    let deals: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let hosts: Vec<Option<Uuid>> = rows.iter().map(|r| r.1).collect();
    let coupons: Vec<Option<Uuid>> = rows.iter().map(|r| r.2).collect();
    broken(
        sqlx::query(
            "insert into customer_order (order_id, deal_id, session_id, lineup_item_id, sku_id, buyer_id, quantity,
                                         unit_price_minor, amount_minor, currency, idempotency_key, request_hash,
                                         expires_at, host_id, coupon_claim_id)
             select gen_random_uuid(), t.deal, $4, $5, $6, 'raw', 1, 1500, 1500, 'USD', gen_random_uuid()::text, 'h',
                    now() + interval '10 minutes', t.host, t.coupon
               from unnest($1::uuid[], $2::uuid[], $3::uuid[]) as t(deal, host, coupon)",
        )
        .bind(&deals)
        .bind(&hosts)
        .bind(&coupons)
        .bind(stage.session)
        .bind(stage.lineup_item)
        .bind(stage.sku)
        .execute(db)
        .await,
    )
}

/// Migration 0021 checks an order's references once per statement instead of
/// per row: a statement whose rows name one missing deal, host or coupon
/// claim is refused whole, under the name of the foreign key the check
/// replaced, and so is a change of an order's references or a deal buyer row
/// naming no deal.
#[tokio::test]
async fn a_statement_whose_orders_name_a_missing_deal_host_or_coupon_is_refused_whole() {
    let (app, _) = node().await;
    let db = &app.db;
    let stage = stage(db).await;
    let (deal, other) = (deal_row(db, &stage).await, deal_row(db, &stage).await);
    let host = Some(stage.host);
    assert_eq!(
        deal_orders(
            db,
            &stage,
            &[(deal, host, None), (other, None, None), (deal, host, None)]
        )
        .await,
        Ok(3)
    );
    let missing = Uuid::new_v4();
    for (rows, name) in [
        (
            vec![(deal, host, None), (missing, host, None)],
            "customer_order_deal_source",
        ),
        (
            vec![(deal, host, None), (deal, Some(missing), None)],
            "customer_order_host_id_fkey",
        ),
        (
            vec![(deal, None, Some(missing)), (other, None, None)],
            "customer_order_coupon_claim_id_fkey",
        ),
    ] {
        assert_eq!(
            deal_orders(db, &stage, &rows).await,
            Err(name.to_string()),
            "{rows:?}"
        );
    }
    let count: i64 = sqlx::query_scalar("select count(*) from customer_order where deal_id = any($1)")
        .bind(vec![deal, other])
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(count, 3, "a refused statement writes none of its rows");

    // A group buy's orders name a group buy.
    let dangling_group_buy = sqlx::query(
        "insert into customer_order (order_id, source, group_buy_id, session_id, lineup_item_id, sku_id, buyer_id,
                                     quantity, unit_price_minor, amount_minor, currency, idempotency_key,
                                     request_hash, expires_at)
         values (gen_random_uuid(), 'group_buy', $1, $2, $3, $4, 'raw', 1, 1500, 1500, 'USD', 'gb', 'h', now())",
    )
    .bind(missing)
    .bind(stage.session)
    .bind(stage.lineup_item)
    .bind(stage.sku)
    .execute(db)
    .await;
    assert_eq!(
        broken(dangling_group_buy),
        Err("customer_order_group_buy_source".to_string())
    );

    // Changing an order's references is checked too; other changes are not.
    let rekey = |set: &'static str, value: Uuid| async move {
        broken(
            sqlx::query(&format!(
                "update customer_order set {set} = $1 where deal_id = $2"
            ))
            .bind(value)
            .bind(deal)
            .execute(db)
            .await,
        )
    };
    assert_eq!(
        rekey("host_id", missing).await,
        Err("customer_order_host_id_fkey".to_string())
    );
    assert_eq!(
        rekey("deal_id", missing).await,
        Err("customer_order_deal_source".to_string())
    );
    assert_eq!(
        rekey("deal_id", other).await,
        Ok(2),
        "another deal of the same item, session and SKU"
    );
    let paid = sqlx::query("update customer_order set status = 'paid', paid_at = now() where deal_id = $1")
        .bind(other)
        .execute(db)
        .await;
    assert_eq!(broken(paid), Ok(3));

    // A deal's buyer rows name a deal.
    let buyer_row = |deal: Uuid| async move {
        broken(
            sqlx::query("insert into deal_buyer (deal_id, buyer_id, units, cap) values ($1, 'raw', 1, 5)")
                .bind(deal)
                .execute(db)
                .await,
        )
    };
    assert_eq!(
        buyer_row(missing).await,
        Err("deal_buyer_deal_id_fkey".to_string())
    );
    assert_eq!(buyer_row(deal).await, Ok(1));
    // Several rows, the second naming no deal: refused whole.
    let two = sqlx::query(
        "insert into deal_buyer (deal_id, buyer_id, units, cap)
         select * from unnest($1::uuid[], array['raw-2', 'raw-3'], array[1, 1], array[5, 5])",
    )
    .bind(vec![other, missing])
    .execute(db)
    .await;
    assert_eq!(broken(two), Err("deal_buyer_deal_id_fkey".to_string()));
    let moved = sqlx::query("update deal_buyer set deal_id = $1 where deal_id = $2")
        .bind(missing)
        .bind(deal)
        .execute(db)
        .await;
    assert_eq!(broken(moved), Err("deal_buyer_deal_id_fkey".to_string()));
}

/// The referenced side of 0021: a deal, auction, giveaway or host that an
/// order names (or a deal its buyer rows name) is neither deleted nor
/// re-keyed; one nothing names is.
#[tokio::test]
async fn a_deal_auction_giveaway_or_host_an_order_names_is_neither_deleted_nor_rekeyed() {
    let (app, _) = node().await;
    let db = &app.db;
    let stage = stage(db).await;
    let run = |sql: String, id: Uuid| async move { broken(sqlx::query(&sql).bind(id).execute(db).await) };

    // A host with no shift, whom only the order names.
    let host = Uuid::new_v4();
    sqlx::query("insert into host (host_id, handle, display_name) values ($1, $2, 'Ana Ruiz')")
        .bind(host)
        .bind(format!("h{}", &host.simple().to_string()[..20]))
        .execute(db)
        .await
        .unwrap();
    let deal = deal_row(db, &stage).await;
    assert_eq!(deal_orders(db, &stage, &[(deal, Some(host), None)]).await, Ok(1));
    let source = Err("customer_order_deal_source".to_string());
    assert_eq!(
        run("delete from deal where deal_id = $1".into(), deal).await,
        source
    );
    assert_eq!(
        run(
            "update deal set deal_id = gen_random_uuid() where deal_id = $1".into(),
            deal
        )
        .await,
        source
    );
    assert_eq!(
        run("update deal set sold = sold + 1 where deal_id = $1".into(), deal).await,
        Ok(1)
    );
    assert_eq!(
        run("delete from host where host_id = $1".into(), host).await,
        Err("customer_order_host_id_fkey".to_string())
    );

    // Buyer rows alone keep their deal.
    let bought = deal_row(db, &stage).await;
    sqlx::query("insert into deal_buyer (deal_id, buyer_id, units, cap) values ($1, 'raw', 1, 5)")
        .bind(bought)
        .execute(db)
        .await
        .unwrap();
    assert_eq!(
        run("delete from deal where deal_id = $1".into(), bought).await,
        Err("deal_buyer_deal_id_fkey".to_string())
    );

    for (table, source) in [
        ("auction", "customer_order_auction_source"),
        ("giveaway", "customer_order_giveaway_source"),
    ] {
        let id = if table == "auction" {
            let auction = Uuid::new_v4();
            insert_auction(db, &stage, auction).await;
            assert_eq!(
                raw_order(db, &stage, "auction", (None, Some(auction), None), 1, 1500).await,
                Ok(())
            );
            auction
        } else {
            let giveaway = giveaway_row(db, &stage).await;
            assert_eq!(
                raw_order(db, &stage, "giveaway", (None, None, Some(giveaway)), 1, 0).await,
                Ok(())
            );
            giveaway
        };
        assert_eq!(
            run(format!("delete from {table} where {table}_id = $1"), id).await,
            Err(source.to_string()),
            "{table}"
        );
    }

    let unnamed = deal_row(db, &stage).await;
    assert_eq!(
        run("delete from deal where deal_id = $1".into(), unnamed).await,
        Ok(1)
    );
}

/// 0021's check locks what an order names, as a foreign key does: a deal
/// deleted while an order for it is being inserted waits for that insert's
/// transaction and is then refused; an order inserted while its deal is
/// being deleted waits for the delete and is then refused. Neither leaves an
/// order without its deal.
#[tokio::test]
async fn a_deal_deleted_while_an_order_for_it_is_inserted_leaves_no_order_without_its_deal() {
    let (app, _) = node().await;
    let db = &app.db;
    let stage = stage(db).await;
    let source = Err("customer_order_deal_source".to_string());

    // The insert first: the delete waits, then finds the committed order.
    let deal = deal_row(db, &stage).await;
    let mut inserting = db.begin().await.unwrap();
    assert_eq!(
        deal_orders(&mut *inserting, &stage, &[(deal, None, None)]).await,
        Ok(1)
    );
    let delete = tokio::spawn({
        let db = db.clone();
        async move {
            broken(
                sqlx::query("delete from deal where deal_id = $1")
                    .bind(deal)
                    .execute(&db)
                    .await,
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !delete.is_finished(),
        "the delete waits for the inserting transaction"
    );
    inserting.commit().await.unwrap();
    assert_eq!(delete.await.unwrap(), source);

    // The delete first: the insert waits, then finds no deal.
    let deal = deal_row(db, &stage).await;
    let mut deleting = db.begin().await.unwrap();
    let deleted = sqlx::query("delete from deal where deal_id = $1")
        .bind(deal)
        .execute(&mut *deleting)
        .await;
    assert_eq!(broken(deleted), Ok(1));
    let insert = tokio::spawn({
        let db = db.clone();
        async move { deal_orders(&db, &stage, &[(deal, None, None)]).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !insert.is_finished(),
        "the insert waits for the deleting transaction"
    );
    deleting.commit().await.unwrap();
    assert_eq!(insert.await.unwrap(), source);
    let orphans: i64 = sqlx::query_scalar(
        "select count(*) from customer_order o where o.deal_id is not null
            and not exists (select 1 from deal d where d.deal_id = o.deal_id)",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(orphans, 0);
}
