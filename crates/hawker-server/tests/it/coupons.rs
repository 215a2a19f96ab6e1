//! Coupon drops, the payment webhook and refunds against real Postgres and
//! Redis: a drop of 100 claimed by 2,000 viewers over two nodes, a scheduled
//! drop firing exactly once across nodes, claim windows, forged and repeated
//! webhooks, payments after expiry, refunds that cannot exceed the amount.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::join_all;
use hawker_commerce::Commerce;
use hawker_core::{Claims, Role};
use hawker_server::app::Application;
use hawker_server::config::Settings;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::helpers::{insert_agency_and_session, settings_with, test_database_url, RedisServer, TestApp};
use crate::ws::connect;

/// Like `spawn_app_with`, keeping the node's commerce service so a test can
/// drive its scheduler's work directly.
async fn spawn_node(settings: Settings) -> (TestApp, Commerce) {
    if std::env::var("TEST_LOG").is_ok() {
        hawker_server::telemetry::init_tracing(&settings.log);
    }
    let keys = settings.token_keys().expect("keys");
    let app = Application::build(settings).await.expect("app builds");
    let commerce = app.state().commerce.clone();
    let (addr, admin_addr, shutdown) = (app.local_addr(), app.admin_addr(), app.shutdown_token());
    let (db, hub) = (app.state().db.clone(), app.state().hub.clone());
    let handle = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let app = TestApp {
        addr,
        admin_addr,
        shutdown,
        handle: Some(handle),
        db,
        keys,
        http,
        hub,
    };
    (app, commerce)
}

/// Two nodes sharing one database and one Redis.
async fn two_nodes(
    redis: &RedisServer,
    extra: &[(&str, &str)],
) -> ((TestApp, Commerce), (TestApp, Commerce)) {
    let db = test_database_url();
    let url = redis.url();
    let mut overrides = vec![
        ("HAWKER__DATABASE__URL", db.as_str()),
        ("HAWKER__REDIS__URL", url.as_str()),
        ("HAWKER__COMMERCE__SCHEDULER_TICK_MS", "100"),
    ];
    overrides.extend_from_slice(extra);
    let a = spawn_node(settings_with(&overrides)).await;
    let b = spawn_node(settings_with(&overrides)).await;
    (a, b)
}

async fn create_drop(app: &TestApp, agency: Uuid, session: Uuid, body: Value) -> (u16, Value) {
    let response = app
        .http
        .post(app.url(&format!("/v1/sessions/{session}/coupon-drops")))
        .bearer_auth(app.agency_token(agency))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn claim_with(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    token: &str,
    drop: &str,
) -> (u16, Value) {
    match http
        .post(format!("http://{addr}/v1/coupon-drops/{drop}/claims"))
        .bearer_auth(token)
        .send()
        .await
    {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

async fn claim(app: &TestApp, viewer: &str, drop: &str) -> (u16, Value) {
    claim_with(&app.http, app.addr, &app.token(viewer, Role::Viewer), drop).await
}

async fn count(db: &PgPool, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql).bind(id).fetch_one(db).await.unwrap()
}

#[tokio::test]
async fn a_drop_of_100_claimed_by_2000_viewers_over_two_nodes_gives_exactly_100_claims() {
    let redis = RedisServer::start();
    let ((a, _), (b, _)) = two_nodes(&redis, &[]).await;
    let (agency, session) = insert_agency_and_session(&a.db).await;
    let (status, drop) = create_drop(
        &a,
        agency,
        session,
        json!({"total": 100, "discount_kind": "percent", "discount_value": 15, "claim_window_secs": 600}),
    )
    .await;
    assert_eq!(status, 201, "{drop}");
    assert_eq!(drop["status"], "dropped", "a drop without drop_at drops at once");
    let drop_id = drop["coupon_drop_id"].as_str().unwrap().to_string();
    let drop_uuid = Uuid::parse_str(&drop_id).unwrap();

    // 2,000 viewers, half through each node; the first 200 press twice.
    let mut attempts: Vec<(String, usize)> = (0..2000).map(|i| (format!("viewer-{i}"), i)).collect();
    attempts.extend((0..200).map(|i| (format!("viewer-{i}"), i + 1)));
    let nodes = [(a.addr, a.http.clone()), (b.addr, b.http.clone())];
    let gate = Arc::new(Semaphore::new(600));
    let results = join_all(attempts.into_iter().map(|(viewer, n)| {
        let (addr, http) = nodes[n % 2].clone();
        let token = a.token(&viewer, Role::Viewer);
        let gate = gate.clone();
        let drop_id = drop_id.clone();
        async move {
            let _permit = gate.acquire().await.unwrap();
            let (status, body) = claim_with(&http, addr, &token, &drop_id).await;
            (viewer, status, body)
        }
    }))
    .await;

    let mut winners: HashSet<String> = HashSet::new();
    let mut refusals: HashMap<String, usize> = HashMap::new();
    for (viewer, status, body) in &results {
        match status {
            201 => {
                assert_eq!(body["viewer_id"], viewer.as_str());
                assert!(winners.insert(viewer.clone()), "{viewer} was given two coupons");
            }
            409 => {
                *refusals
                    .entry(body["error"].as_str().unwrap().to_string())
                    .or_default() += 1
            }
            other => panic!("unexpected answer {other}: {body}"),
        }
    }
    assert_eq!(winners.len(), 100, "exactly 100 claims answered 201");
    let exhausted = refusals.get("coupon_exhausted").copied().unwrap_or(0);
    let repeated = refusals.get("coupon_already_claimed").copied().unwrap_or(0);
    assert_eq!(exhausted + repeated, 2100, "{refusals:?}");
    assert!(
        exhausted >= 1900,
        "every first-time loser is told the drop is exhausted: {refusals:?}"
    );

    // Postgres agrees: 100 claims, one per viewer, the winners exactly.
    let claimed: i32 = sqlx::query_scalar("select claimed from coupon_drop where coupon_drop_id = $1")
        .bind(drop_uuid)
        .fetch_one(&a.db)
        .await
        .unwrap();
    assert_eq!(claimed, 100);
    let viewers: Vec<String> =
        sqlx::query_scalar("select viewer_id from coupon_claim where coupon_drop_id = $1")
            .bind(drop_uuid)
            .fetch_all(&a.db)
            .await
            .unwrap();
    assert_eq!(viewers.len(), 100);
    assert_eq!(viewers.into_iter().collect::<HashSet<_>>(), winners);
    assert_eq!(
        count(
            &a.db,
            "select count(*) from room_outbox where event_type = 'coupon.exhausted' and data->>'coupon_drop_id' = $1::text",
            drop_uuid
        )
        .await,
        1,
        "coupon.exhausted is queued once"
    );

    // The room's snapshot ends with nothing left.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = b.hub.snapshot(session).await.unwrap();
        if snapshot
            .state
            .get(&format!("coupon:{drop_id}:remaining"))
            .map(|v| v["remaining"].clone())
            == Some(json!(0))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "remaining never reached 0: {:?}",
            snapshot.state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Refusals after exhaustion stay refusals, on both nodes.
    assert_eq!(
        claim(&b, "latecomer", &drop_id).await.1["error"],
        "coupon_exhausted"
    );
    assert_eq!(
        claim(&a, "latecomer", &drop_id).await.1["error"],
        "coupon_exhausted"
    );
}

#[tokio::test]
async fn a_scheduled_drop_fires_exactly_once_across_two_nodes() {
    let redis = RedisServer::start();
    let ((a, commerce_a), (b, commerce_b)) = two_nodes(&redis, &[]).await;
    let (agency, session) = insert_agency_and_session(&a.db).await;
    let mut viewer = connect(b.addr, session, &b.token("watcher", Role::Viewer), None).await;
    viewer.expect("welcome").await;

    let drop_at = Utc::now() + chrono::Duration::seconds(2);
    let (status, drop) = create_drop(
        &a,
        agency,
        session,
        json!({"total": 5, "discount_kind": "fixed", "discount_value": 300, "currency": "USD",
               "drop_at": drop_at, "claim_window_secs": 60}),
    )
    .await;
    assert_eq!(status, 201, "{drop}");
    assert_eq!(drop["status"], "scheduled");
    let drop_id = drop["coupon_drop_id"].as_str().unwrap().to_string();
    let drop_uuid = Uuid::parse_str(&drop_id).unwrap();
    let scheduled = viewer.expect("coupon.scheduled").await;
    assert_eq!(scheduled["data"]["coupon_drop_id"], drop_id.as_str());
    assert_eq!(
        claim(&a, "eager", &drop_id).await.1["error"],
        "coupon_not_dropped"
    );

    // Both nodes' schedulers run; on top, both nodes fire due drops as fast as they can.
    let hammer = |commerce: Commerce| async move {
        let mut fired = 0;
        let until = tokio::time::Instant::now() + Duration::from_secs(4);
        while tokio::time::Instant::now() < until {
            fired += hawker_commerce::coupons::fire_due_drops(&commerce).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fired
    };
    let (fired_a, fired_b) = tokio::join!(hammer(commerce_a.clone()), hammer(commerce_b.clone()));
    assert!(
        fired_a + fired_b <= 1,
        "fired {fired_a} + {fired_b} times by hand"
    );

    let mut dropped = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        if let Some(Ok(frame)) = viewer.try_next(Duration::from_millis(300)).await {
            if frame["type"] == "coupon.dropped" {
                dropped.push(frame);
            }
        }
    }
    assert_eq!(dropped.len(), 1, "coupon.dropped exactly once: {dropped:?}");
    let data = &dropped[0]["data"];
    assert_eq!(data["coupon_drop_id"], drop_id.as_str());
    assert_eq!(data["total"], 5);
    assert_eq!(data["remaining"], 5);
    assert_eq!(data["discount_kind"], "fixed");
    assert!(data["claim_until"].is_string());

    let (outbox_rows, published): (i64, i64) = sqlx::query_as(
        "select count(*), count(published_at) from room_outbox
          where event_type = 'coupon.dropped' and data->>'coupon_drop_id' = $1::text",
    )
    .bind(drop_uuid)
    .fetch_one(&a.db)
    .await
    .unwrap();
    assert_eq!((outbox_rows, published), (1, 1), "one outbox row, published");
    let on_time: bool = sqlx::query_scalar(
        "select dropped_at >= drop_at and status = 'dropped' from coupon_drop where coupon_drop_id = $1",
    )
    .bind(drop_uuid)
    .fetch_one(&a.db)
    .await
    .unwrap();
    assert!(on_time, "dropped, and not before its time");
    let snapshot = b.hub.snapshot(session).await.unwrap();
    assert_eq!(snapshot.state[&format!("coupon:{drop_id}")]["status"], "dropped");
    assert_eq!(claim(&b, "eager", &drop_id).await.0, 201);
}

#[tokio::test]
async fn claims_before_the_drop_and_after_the_window_are_refused() {
    let redis = RedisServer::start();
    let ((a, _), _b) = two_nodes(&redis, &[]).await;
    let (agency, session) = insert_agency_and_session(&a.db).await;
    let (status, drop) = create_drop(
        &a,
        agency,
        session,
        json!({"total": 10, "discount_kind": "percent", "discount_value": 50,
               "drop_at": Utc::now() + chrono::Duration::milliseconds(1500), "claim_window_secs": 2}),
    )
    .await;
    assert_eq!(status, 201, "{drop}");
    let drop_id = drop["coupon_drop_id"].as_str().unwrap().to_string();
    let drop_uuid = Uuid::parse_str(&drop_id).unwrap();

    let (status, body) = claim(&a, "early", &drop_id).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("coupon_not_dropped"))
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let drop = loop {
        let drop: Value = a
            .get(
                &format!("/v1/coupon-drops/{drop_id}"),
                Some(&a.token("v", Role::Viewer)),
            )
            .await
            .json()
            .await
            .unwrap();
        if drop["status"] == "dropped" {
            break drop;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the drop never fired: {drop}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(drop["claim_until"].is_string());
    let (status, first) = claim(&a, "early", &drop_id).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["seq"], 1);
    assert_eq!(
        claim(&a, "early", &drop_id).await.1["error"],
        "coupon_already_claimed"
    );

    // After the window: refused, and the scheduler ends the drop once.
    let claim_until: chrono::DateTime<Utc> = serde_json::from_value(drop["claim_until"].clone()).unwrap();
    let wait = (claim_until - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(100);
    tokio::time::sleep(wait).await;
    let (status, body) = claim(&a, "late", &drop_id).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("coupon_window_closed"))
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status: String = sqlx::query_scalar("select status from coupon_drop where coupon_drop_id = $1")
            .bind(drop_uuid)
            .fetch_one(&a.db)
            .await
            .unwrap();
        if status == "ended" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the drop never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        claim(&a, "later", &drop_id).await.1["error"],
        "coupon_window_closed"
    );
    assert_eq!(
        count(
            &a.db,
            "select count(*) from room_outbox where event_type = 'coupon.ended' and data->>'coupon_drop_id' = $1::text",
            drop_uuid
        )
        .await,
        1
    );
    let claims: Value = a
        .get(
            &format!("/v1/sessions/{session}/coupon-claims"),
            Some(&a.token("early", Role::Viewer)),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(claims.as_array().unwrap().len(), 1);
    assert_eq!(claims[0]["coupon_drop_id"], drop_id.as_str());
    let (status, body) = claim(&a, "early", &Uuid::new_v4().to_string()).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn a_viewer_holds_at_most_the_per_viewer_limit_even_when_racing() {
    let redis = RedisServer::start();
    let ((a, _), (b, _)) = two_nodes(&redis, &[]).await;
    let (agency, session) = insert_agency_and_session(&a.db).await;
    let (status, drop) = create_drop(
        &a,
        agency,
        session,
        json!({"total": 50, "discount_kind": "percent", "discount_value": 5,
               "per_viewer_limit": 2, "claim_window_secs": 60}),
    )
    .await;
    assert_eq!(status, 201, "{drop}");
    let drop_id = drop["coupon_drop_id"].as_str().unwrap().to_string();
    let token = a.token("greedy", Role::Viewer);
    let results = join_all((0..20).map(|i| {
        let (addr, http) = if i % 2 == 0 {
            (a.addr, a.http.clone())
        } else {
            (b.addr, b.http.clone())
        };
        let token = token.clone();
        let drop_id = drop_id.clone();
        async move { claim_with(&http, addr, &token, &drop_id).await }
    }))
    .await;
    let won: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(won.len(), 2, "{results:?}");
    let seqs: HashSet<i64> = won.iter().map(|b| b["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, HashSet::from([1, 2]));
    for (status, body) in results.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(
            (*status, body["error"].as_str()),
            (409, Some("coupon_already_claimed"))
        );
    }
    let claimed: i32 = sqlx::query_scalar("select claimed from coupon_drop where coupon_drop_id = $1")
        .bind(Uuid::parse_str(&drop_id).unwrap())
        .fetch_one(&a.db)
        .await
        .unwrap();
    assert_eq!(claimed, 2, "refused claims do not count");
}

#[tokio::test]
async fn only_hosts_create_drops_and_bad_drops_say_why() {
    let redis = RedisServer::start();
    let ((a, _), _b) = two_nodes(&redis, &[]).await;
    let (agency, session) = insert_agency_and_session(&a.db).await;
    let good =
        json!({"total": 10, "discount_kind": "percent", "discount_value": 10, "claim_window_secs": 60});
    let response = a
        .http
        .post(a.url(&format!("/v1/sessions/{session}/coupon-drops")))
        .bearer_auth(a.token("v", Role::Viewer))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let cases = [
        (json!({"discount_kind": "bogo"}), "bad_discount_kind"),
        (json!({"discount_value": 101}), "bad_discount_value"),
        (
            json!({"discount_kind": "fixed", "discount_value": 100}),
            "bad_currency",
        ),
        (json!({"total": 0}), "bad_total"),
        (json!({"claim_window_secs": 0}), "bad_claim_window"),
        (json!({"lineup_item_id": Uuid::new_v4()}), "bad_restriction"),
        (json!({"deal_id": Uuid::new_v4()}), "bad_restriction"),
        (
            json!({"drop_at": Utc::now() - chrono::Duration::hours(1)}),
            "bad_drop_at",
        ),
    ];
    for (patch, code) in cases {
        let mut body = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, answer) = create_drop(&a, agency, session, body).await;
        assert_eq!((status, answer["error"].as_str()), (400, Some(code)), "{patch}");
    }
    let (status, _) = create_drop(&a, agency, Uuid::new_v4(), good).await;
    assert_eq!(status, 404);
}

// ---- payments and refunds ----

/// A session with a brand's SKU at link #1 and a live deal; orders are inserted directly.
struct Shop {
    agency: Uuid,
    session: Uuid,
    brand: Uuid,
    sku: Uuid,
    lineup_item: Uuid,
    deal: Uuid,
}

async fn open_shop(db: &PgPool) -> Shop {
    let (agency, session) = insert_agency_and_session(db).await;
    let (brand, product, sku, lineup_item, deal) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    for (sql, ids) in [
        ("insert into brand (brand_id, name) values ($1, 'Brand')", vec![brand]),
        ("insert into product (product_id, brand_id, name) values ($1, $2, 'Lipstick')", vec![product, brand]),
        (
            "insert into sku (sku_id, product_id, code, name, price_minor, currency, stock_on_hand)
             values ($1, $2, 'LIP-1', 'Ruby', 1500, 'USD', 1000)",
            vec![sku, product],
        ),
        (
            "insert into lineup_item (lineup_item_id, session_id, link_number, sku_id) values ($1, $2, 1, $3)",
            vec![lineup_item, session, sku],
        ),
        (
            "insert into deal (deal_id, session_id, lineup_item_id, sku_id, price_minor, currency, quantity,
                               sold, per_buyer_cap, starts_at, ends_at, status, created_by)
             values ($1, $2, $3, $4, 1500, 'USD', 100, 50, 5, now() - interval '1 minute',
                     now() + interval '1 hour', 'live', 'test')",
            vec![deal, session, lineup_item, sku],
        ),
    ] {
        let mut query = sqlx::query(sql);
        for id in ids {
            query = query.bind(id);
        }
        query.execute(db).await.unwrap();
    }
    Shop {
        agency,
        session,
        brand,
        sku,
        lineup_item,
        deal,
    }
}

/// An order of `quantity` × 1500 USD in `status`, expiring `expires_in_secs` from now.
async fn insert_order(db: &PgPool, shop: &Shop, quantity: i32, status: &str, expires_in_secs: i64) -> Uuid {
    let order_id = Uuid::new_v4();
    sqlx::query(
        "insert into customer_order (order_id, deal_id, session_id, lineup_item_id, sku_id, buyer_id, quantity,
                                     unit_price_minor, amount_minor, currency, status, idempotency_key,
                                     request_hash, expires_at, paid_at, cancelled_at)
         values ($1, $2, $3, $4, $5, 'buyer', $6, 1500, $6 * 1500, 'USD', $7, $1::text, 'h',
                 now() + $8 * interval '1 second',
                 case when $7 = 'paid' then now() end, case when $7 = 'cancelled' then now() end)",
    )
    .bind(order_id)
    .bind(shop.deal)
    .bind(shop.session)
    .bind(shop.lineup_item)
    .bind(shop.sku)
    .bind(quantity)
    .bind(status)
    .bind(expires_in_secs as f64)
    .execute(db)
    .await
    .unwrap();
    order_id
}

async fn order_status(db: &PgPool, order_id: Uuid) -> String {
    sqlx::query_scalar("select status from customer_order where order_id = $1")
        .bind(order_id)
        .fetch_one(db)
        .await
        .unwrap()
}

fn payment(event_id: &str, order_id: Uuid, amount_minor: i64) -> Vec<u8> {
    json!({"event_id": event_id, "type": "payment.succeeded", "order_id": order_id,
           "amount_minor": amount_minor, "currency": "USD"})
    .to_string()
    .into_bytes()
}

async fn webhook(app: &TestApp, signature: Option<String>, body: Vec<u8>) -> (u16, Value) {
    let mut request = app
        .http
        .post(app.url("/v1/payments/webhook"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(signature) = signature {
        request = request.header("X-Hawker-Signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn signed_webhook(app: &TestApp, secret: &str, body: Vec<u8>) -> (u16, Value) {
    let signature = hawker_commerce::payments::sign(secret, Utc::now().timestamp(), &body);
    webhook(app, Some(signature), body).await
}

/// One node whose scheduler does not run during the test (the expiry sweeper
/// must not race the payments under test), and its webhook secret.
async fn payment_node() -> (TestApp, String) {
    let settings = settings_with(&[("HAWKER__COMMERCE__SCHEDULER_TICK_MS", "600000")]);
    let secret = settings.payments.webhook_secret.clone();
    let (app, _) = spawn_node(settings).await;
    (app, secret)
}

#[tokio::test]
async fn forged_webhooks_are_refused_and_change_nothing() {
    let (app, secret) = payment_node().await;
    let shop = open_shop(&app.db).await;
    let order = insert_order(&app.db, &shop, 2, "pending_payment", 600).await;
    let body = payment("evt-forged", order, 3000);
    let now = Utc::now().timestamp();
    let sign = hawker_commerce::payments::sign;
    let forgeries: Vec<(&str, Option<String>, Vec<u8>)> = vec![
        ("no header", None, body.clone()),
        (
            "wrong secret",
            Some(sign("not-the-webhook-secret", now, &body)),
            body.clone(),
        ),
        ("stale", Some(sign(&secret, now - 400, &body)), body.clone()),
        (
            "from the future",
            Some(sign(&secret, now + 400, &body)),
            body.clone(),
        ),
        ("malformed", Some("sha256=deadbeef".into()), body.clone()),
        ("not hex", Some(format!("t={now},v1=xyz")), body.clone()),
        (
            "tampered body",
            Some(sign(&secret, now, &payment("evt-forged", order, 1))),
            body.clone(),
        ),
    ];
    for (what, signature, body) in forgeries {
        let (status, answer) = webhook(&app, signature, body).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some("bad_signature")),
            "{what}: {answer}"
        );
    }
    assert_eq!(order_status(&app.db, order).await, "pending_payment");
    assert_eq!(
        count(&app.db, "select count(*) from payment where order_id = $1", order).await,
        0
    );
    assert_eq!(
        count(
            &app.db,
            "select count(*) from order_event where order_id = $1",
            order
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_signed_payment_marks_the_order_paid_once_and_repeats_change_nothing() {
    let (app, secret) = payment_node().await;
    let shop = open_shop(&app.db).await;
    let order = insert_order(&app.db, &shop, 2, "pending_payment", 600).await;

    let (status, first) = signed_webhook(&app, &secret, payment("evt-1", order, 3000)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["outcome"], "applied");
    assert_eq!(first["replayed"], false);
    assert_eq!(order_status(&app.db, order).await, "paid");
    let paid_at: Option<chrono::DateTime<Utc>> =
        sqlx::query_scalar("select paid_at from customer_order where order_id = $1")
            .bind(order)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(paid_at.is_some());
    let event: (String, String) =
        sqlx::query_as("select from_status, to_status from order_event where order_id = $1")
            .bind(order)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(event, ("pending_payment".into(), "paid".into()));
    assert_eq!(
        count(
            &app.db,
            "select count(*) from room_outbox where event_type = 'order.paid' and data->>'order_id' = $1::text",
            order
        )
        .await,
        1
    );

    // The provider retries: the first answer again, nothing changes.
    let (status, again) = signed_webhook(&app, &secret, payment("evt-1", order, 3000)).await;
    assert_eq!(status, 200);
    assert_eq!(again["outcome"], "applied");
    assert_eq!(again["replayed"], true);
    assert_eq!(again["payment_id"], first["payment_id"]);
    // A second payment for the paid order is reported, not applied.
    let (status, second) = signed_webhook(&app, &secret, payment("evt-2", order, 3000)).await;
    assert_eq!(
        (status, second["outcome"].as_str()),
        (200, Some("duplicate_order"))
    );
    assert_eq!(
        count(&app.db, "select count(*) from payment where order_id = $1", order).await,
        2
    );
    assert_eq!(
        count(
            &app.db,
            "select count(*) from order_event where order_id = $1",
            order
        )
        .await,
        1
    );
    let paid_again: Option<chrono::DateTime<Utc>> =
        sqlx::query_scalar("select paid_at from customer_order where order_id = $1")
            .bind(order)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(paid_again, paid_at);

    // Ten deliveries of one event at once: applied once, nine replays.
    let racing = insert_order(&app.db, &shop, 1, "pending_payment", 600).await;
    let answers =
        join_all((0..10).map(|_| signed_webhook(&app, &secret, payment("evt-race", racing, 1500)))).await;
    assert!(
        answers
            .iter()
            .all(|(s, a)| *s == 200 && a["outcome"] == "applied"),
        "{answers:?}"
    );
    assert_eq!(answers.iter().filter(|(_, a)| a["replayed"] == false).count(), 1);
    assert_eq!(
        count(
            &app.db,
            "select count(*) from payment where order_id = $1",
            racing
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &app.db,
            "select count(*) from order_event where order_id = $1",
            racing
        )
        .await,
        1
    );

    // A wrong amount is refused and changes nothing; so is an unknown order.
    let other = insert_order(&app.db, &shop, 1, "pending_payment", 600).await;
    let (status, answer) = signed_webhook(&app, &secret, payment("evt-3", other, 1499)).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("amount_mismatch")));
    assert_eq!(order_status(&app.db, other).await, "pending_payment");
    assert_eq!(
        count(&app.db, "select count(*) from payment where order_id = $1", other).await,
        0
    );
    let (status, _) = signed_webhook(&app, &secret, payment("evt-4", Uuid::new_v4(), 1500)).await;
    assert_eq!(status, 404);
    let (status, answer) = signed_webhook(&app, &secret, b"{not json".to_vec()).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("bad_event")));
    let ignored = json!({"event_id": "evt-5", "type": "payment.created", "order_id": other,
                         "amount_minor": 1500, "currency": "USD"});
    let (status, answer) = signed_webhook(&app, &secret, ignored.to_string().into_bytes()).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("ignored")));
    assert_eq!(order_status(&app.db, other).await, "pending_payment");
}

#[tokio::test]
async fn a_payment_after_expiry_or_cancellation_marks_the_order_for_refund() {
    let (app, secret) = payment_node().await;
    let shop = open_shop(&app.db).await;

    // Expiring after the scheduler's first (immediate) tick, so the expiry
    // sweeper never sees it: the payment meets a pending order past its time.
    let expired = insert_order(&app.db, &shop, 1, "pending_payment", 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(order_status(&app.db, expired).await, "pending_payment");
    let (status, answer) = signed_webhook(&app, &secret, payment("evt-late", expired, 1500)).await;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("refund_due")),
        "{answer}"
    );
    assert_eq!(order_status(&app.db, expired).await, "refund_due");
    let detail: Value =
        sqlx::query_scalar("select detail from order_event where order_id = $1 and to_status = 'refund_due'")
            .bind(expired)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(detail["reason"], "paid_after_expiry");
    let outcome: String = sqlx::query_scalar("select outcome from payment where order_id = $1")
        .bind(expired)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(outcome, "refund_due");

    let cancelled = insert_order(&app.db, &shop, 1, "cancelled", -60).await;
    let (status, answer) = signed_webhook(&app, &secret, payment("evt-cancelled", cancelled, 1500)).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("refund_due")));
    assert_eq!(order_status(&app.db, cancelled).await, "refund_due");
    // A further payment of a refund_due order is owed back too; the state does not change again.
    let (status, answer) = signed_webhook(&app, &secret, payment("evt-cancelled-2", cancelled, 1500)).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("refund_due")));
    assert_eq!(
        count(
            &app.db,
            "select count(*) from order_event where order_id = $1",
            cancelled
        )
        .await,
        1
    );
    assert_eq!(
        count(&app.db, "select count(*) from room_outbox where event_type = 'order.paid' and data->>'order_id' = $1::text", cancelled).await,
        0,
        "a refused payment is not announced as a sale"
    );
}

#[tokio::test]
async fn refunds_never_exceed_the_amount_and_only_the_right_parties_refund() {
    let (app, _) = payment_node().await;
    let shop = open_shop(&app.db).await;
    let order = insert_order(&app.db, &shop, 2, "paid", 600).await;
    let refund = |token: String, order: Uuid, body: Value| {
        let request = app
            .http
            .post(app.url(&format!("/v1/orders/{order}/refunds")))
            .bearer_auth(token)
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let brand_token = |brand: Uuid| {
        let mut claims = Claims::new("brand-user", Role::Brand, chrono::Duration::hours(1));
        claims.brand_id = Some(brand);
        app.keys.sign(&claims).unwrap()
    };
    let admin = app.token("admin", Role::Admin);

    for token in [
        app.token("buyer", Role::Viewer),
        app.token(&Uuid::new_v4().to_string(), Role::Host),
        app.agency_token(Uuid::new_v4()),
        brand_token(Uuid::new_v4()),
    ] {
        assert_eq!(refund(token, order, json!({"amount_minor": 100})).await.0, 403);
    }
    let (status, answer) = refund(admin.clone(), order, json!({"amount_minor": 0})).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("bad_amount")));
    let (status, answer) = refund(admin.clone(), order, json!({"amount_minor": 1, "kind": "gift"})).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("bad_kind")));

    let (status, first) = refund(
        brand_token(shop.brand),
        order,
        json!({"amount_minor": 1000, "kind": "return", "reason": "damaged"}),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["order_status"], "partially_refunded");
    assert_eq!(first["refunded_minor"], 1000);
    assert_eq!(first["kind"], "return");
    let (status, answer) = refund(
        app.agency_token(shop.agency),
        order,
        json!({"amount_minor": 2001}),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("refund_exceeds_amount"))
    );

    // Ten refunds of 500 at once against the 2,000 left: exactly four pass.
    let answers = join_all((0..10).map(|_| refund(admin.clone(), order, json!({"amount_minor": 500})))).await;
    let passed = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(passed, 4, "{answers:?}");
    for (status, answer) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 409);
        assert!(
            matches!(
                answer["error"].as_str(),
                Some("refund_exceeds_amount" | "order_not_paid")
            ),
            "{answer}"
        );
    }
    let total: i64 = sqlx::query_scalar("select sum(amount_minor)::bigint from refund where order_id = $1")
        .bind(order)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(total, 3000);
    assert_eq!(order_status(&app.db, order).await, "refunded");
    assert_eq!(
        count(
            &app.db,
            "select count(*) from order_event where order_id = $1",
            order
        )
        .await,
        5
    );
    let (status, answer) = refund(admin.clone(), order, json!({"amount_minor": 1})).await;
    assert_eq!((status, answer["error"].as_str()), (409, Some("order_not_paid")));

    let pending = insert_order(&app.db, &shop, 1, "pending_payment", 600).await;
    let (status, answer) = refund(admin.clone(), pending, json!({"amount_minor": 1})).await;
    assert_eq!((status, answer["error"].as_str()), (409, Some("order_not_paid")));
    assert_eq!(
        refund(admin, Uuid::new_v4(), json!({"amount_minor": 1})).await.0,
        404
    );
}

#[tokio::test]
async fn a_viewer_claims_over_the_socket_and_a_second_claim_is_refused() {
    let redis = RedisServer::start();
    let ((a, _), _b) = two_nodes(&redis, &[]).await;
    let (agency, session) = insert_agency_and_session(&a.db).await;
    let (status, drop) = create_drop(
        &a,
        agency,
        session,
        json!({"total": 5, "discount_kind": "percent", "discount_value": 10, "claim_window_secs": 600}),
    )
    .await;
    assert_eq!(status, 201, "{drop}");
    let drop_id = drop["coupon_drop_id"].as_str().unwrap().to_string();
    let mut viewer = connect(a.addr, session, &a.token("socket-claimer", Role::Viewer), None).await;
    viewer.expect("welcome").await;

    let ack = viewer
        .call("coupon.claim", json!({"coupon_drop_id": drop_id}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["data"]["claim"]["coupon_drop_id"], drop_id.as_str());
    assert_eq!(ack["data"]["claim"]["viewer_id"], "socket-claimer");
    assert_eq!(ack["data"]["claim"]["seq"], 1);
    let again = viewer
        .call("coupon.claim", json!({"coupon_drop_id": drop_id}))
        .await;
    assert_eq!(again["code"], "coupon_already_claimed", "{again}");
    let unknown = viewer
        .call("coupon.claim", json!({"coupon_drop_id": Uuid::new_v4()}))
        .await;
    assert_eq!(unknown["code"], "not_found", "{unknown}");
    let bad = viewer
        .call("coupon.claim", json!({"coupon_drop_id": "nope"}))
        .await;
    assert_eq!(bad["code"], "bad_command", "{bad}");
}
