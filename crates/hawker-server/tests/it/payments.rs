//! The payment webhook and refunds against real Postgres and Redis: forged
//! and repeated webhooks, payments after expiry or cancellation, refunds
//! that cannot exceed the amount and only the right parties may make.

use std::time::Duration;

use chrono::Utc;
use futures_util::future::join_all;
use hawker_core::Role;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::fixtures::{count, insert_agency_and_session, insert_brand_with_sku};
use crate::support::{answer, settings_with, spawn_app_with, TestApp};

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
    let (brand, sku) = insert_brand_with_sku(db, 1500, 1000).await;
    let (lineup_item, deal) = (Uuid::new_v4(), Uuid::new_v4());
    for (sql, ids) in [
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

/// How many state changes the order went through.
async fn order_events(db: &PgPool, order_id: Uuid) -> i64 {
    count(
        db,
        "select count(*) from order_event where order_id = $1",
        order_id,
    )
    .await
}

/// How many payments were recorded for the order.
async fn payments_of(db: &PgPool, order_id: Uuid) -> i64 {
    count(db, "select count(*) from payment where order_id = $1", order_id).await
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
    answer(request.send().await.unwrap()).await
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
    let app = spawn_app_with(settings)
        .await
        .with_http_timeout(Duration::from_secs(30));
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
    assert_eq!(payments_of(&app.db, order).await, 0);
    assert_eq!(order_events(&app.db, order).await, 0);
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
    // The buyer alone is told (a private notice); the room is not.
    assert_eq!(
        count(
            &app.db,
            "select count(*) from user_notice where kind = 'order.paid' and data->>'order_id' = $1::text
               and user_id = (select buyer_id from customer_order where order_id = $1)",
            order
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &app.db,
            "select count(*) from room_outbox where event_type like 'order.%' and data->>'order_id' = $1::text",
            order
        )
        .await,
        0,
        "the room hears nothing of who paid what"
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
    assert_eq!(payments_of(&app.db, order).await, 2);
    assert_eq!(order_events(&app.db, order).await, 1);
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
    assert_eq!(payments_of(&app.db, racing).await, 1);
    assert_eq!(order_events(&app.db, racing).await, 1);

    // A wrong amount is refused and changes nothing; so is an unknown order.
    let other = insert_order(&app.db, &shop, 1, "pending_payment", 600).await;
    let (status, answer) = signed_webhook(&app, &secret, payment("evt-3", other, 1499)).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("amount_mismatch")));
    assert_eq!(order_status(&app.db, other).await, "pending_payment");
    assert_eq!(payments_of(&app.db, other).await, 0);
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
    assert_eq!(order_events(&app.db, cancelled).await, 1);
    assert_eq!(
        count(
            &app.db,
            "select count(*) from user_notice where kind = 'order.paid' and data->>'order_id' = $1::text",
            cancelled
        )
        .await,
        0,
        "a refused payment is not announced as a sale"
    );
}

#[tokio::test]
async fn a_refund_reason_with_bidi_zero_width_or_control_characters_is_refused_and_records_nothing() {
    let (app, _) = payment_node().await;
    let shop = open_shop(&app.db).await;
    let order = insert_order(&app.db, &shop, 2, "paid", 600).await;
    let admin = app.token("admin", Role::Admin);
    let path = format!("/v1/orders/{order}/refunds");
    for reason in [
        "refund\u{202E}gnp.exe",
        "zero\u{200B}width",
        "bom\u{FEFF}",
        "two\nlines",
        "tab\there",
        "nul\0byte",
        "bell\u{7}",
    ] {
        let (status, answer) = app
            .send(
                Method::POST,
                &path,
                &admin,
                Some(json!({"amount_minor": 100, "reason": reason})),
            )
            .await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("bad_reason")),
            "{reason:?}: {answer}"
        );
    }
    let refunds: i64 = sqlx::query_scalar("select count(*) from refund where order_id = $1")
        .bind(order)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(refunds, 0);
    let (status, answer) = app
        .send(
            Method::POST,
            &path,
            &admin,
            Some(json!({"amount_minor": 100, "reason": "abîmé — 破损 📦"})),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
}

#[tokio::test]
async fn refunds_never_exceed_the_amount_and_only_the_right_parties_refund() {
    let (app, _) = payment_node().await;
    let shop = open_shop(&app.db).await;
    let order = insert_order(&app.db, &shop, 2, "paid", 600).await;
    let app = &app;
    let refund = |token: String, order: Uuid, body: Value| async move {
        app.send(
            Method::POST,
            &format!("/v1/orders/{order}/refunds"),
            &token,
            Some(body),
        )
        .await
    };
    let admin = app.token("admin", Role::Admin);

    // The buyer may see the order but not refund it; to outsiders it does not exist.
    assert_eq!(
        refund(
            app.token("buyer", Role::Viewer),
            order,
            json!({"amount_minor": 100})
        )
        .await
        .0,
        403
    );
    for token in [
        app.token(&Uuid::new_v4().to_string(), Role::Host),
        app.agency_token(Uuid::new_v4()),
        app.brand_token(Uuid::new_v4()),
    ] {
        assert_eq!(refund(token, order, json!({"amount_minor": 100})).await.0, 404);
    }
    let (status, answer) = refund(admin.clone(), order, json!({"amount_minor": 0})).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("bad_amount")));
    let (status, answer) = refund(admin.clone(), order, json!({"amount_minor": 1, "kind": "gift"})).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("bad_kind")));

    let (status, first) = refund(
        app.brand_token(shop.brand),
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
    assert_eq!(order_events(&app.db, order).await, 5);
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
