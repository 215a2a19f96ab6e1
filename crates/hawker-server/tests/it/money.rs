//! Money safety (issue #11): a coupon applies only to its own session's
//! deals, deal prices have a configured maximum, and poisoned purchase
//! requests are refused before they enter a settlement batch, so they never
//! fail or split one.

use futures_util::future::join_all;
use hawker_core::Role;
use reqwest::header::HeaderValue;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::fixtures::{buy, count, create_deal, insert_agency_and_session, lineup};
use crate::support::socket::join;
use crate::support::{settings_with, spawn_app_with, try_answer, TestApp};

/// A node whose batches wait 20 ms to fill, so a stampede's requests share batches.
async fn app() -> TestApp {
    spawn_app_with(settings_with(&[("HAWKER__COMMERCE__BATCH_WINDOW_US", "20000")])).await
}

/// A session of its own agency with a SKU (1,999 USD) at link #1 and a live
/// deal on it at `price_minor`: (agency, session, deal).
async fn session_with_deal(app: &TestApp, price_minor: i64, quantity: i32, cap: i32) -> (Uuid, Uuid, String) {
    let (agency, session) = insert_agency_and_session(&app.db).await;
    lineup(app, agency, session).await;
    let deal = create_deal(
        app,
        agency,
        session,
        json!({"link_number": 1, "price_minor": price_minor, "quantity": quantity,
               "per_buyer_cap": cap, "duration_secs": 600}),
    )
    .await;
    (agency, session, deal)
}

/// An unrestricted 100 %-off drop of the session, claimed by `viewer`: the claim id.
async fn free_coupon(app: &TestApp, agency: Uuid, session: Uuid, viewer: &str) -> String {
    let (status, drop) = app
        .send(
            Method::POST,
            &format!("/v1/sessions/{session}/coupon-drops"),
            &app.agency_token(agency),
            Some(
                json!({"total": 10, "discount_kind": "percent", "discount_value": 100,
                        "claim_window_secs": 600}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{drop}");
    let drop_id = drop["coupon_drop_id"].as_str().unwrap();
    let sent = app
        .http
        .post(app.url(&format!("/v1/coupon-drops/{drop_id}/claims")))
        .bearer_auth(app.token(viewer, Role::Viewer))
        .send()
        .await;
    let (status, claim) = try_answer(sent).await;
    assert_eq!(status, 201, "{claim}");
    claim["coupon_claim_id"].as_str().unwrap().to_string()
}

async fn buy_with_coupon(app: &TestApp, buyer: &str, deal: &str, key: &str, claim: &str) -> (u16, Value) {
    let sent = app
        .http
        .post(app.url(&format!("/v1/deals/{deal}/orders")))
        .bearer_auth(app.token(buyer, Role::Viewer))
        .header("idempotency-key", key)
        .json(&json!({"quantity": 1, "coupon_claim_id": claim}))
        .send()
        .await;
    try_answer(sent).await
}

fn deal_uuid(deal: &str) -> Uuid {
    deal.parse().unwrap()
}

#[tokio::test]
async fn a_coupon_of_one_session_is_refused_on_another_sessions_deal() {
    let app = app().await;
    let (agency_a, session_a, deal_a) = session_with_deal(&app, 1499, 100, 5).await;
    let (_agency_b, session_b, deal_b) = session_with_deal(&app, 2599, 100, 5).await;
    let claim = free_coupon(&app, agency_a, session_a, "coupon-roamer").await;
    let claim_id: Uuid = claim.parse().unwrap();

    // Over HTTP: session A's coupon on session B's deal.
    let (status, body) = buy_with_coupon(&app, "coupon-roamer", &deal_b, "roam-1", &claim).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "coupon_invalid", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("another session"),
        "{body}"
    );

    // Over the socket, in session B's room.
    let mut viewer = join(app.addr, session_b, &app.token("coupon-roamer", Role::Viewer)).await;
    let refused = viewer
        .call(
            "deal.buy",
            json!({"deal_id": deal_b, "quantity": 1, "idempotency_key": "roam-2", "coupon_claim_id": claim}),
        )
        .await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "coupon_invalid", "{refused}");

    // Nothing was committed: no order on B's deal, the claim unused, B's units untouched.
    let b = deal_uuid(&deal_b);
    assert_eq!(
        count(
            &app.db,
            "select count(*) from customer_order where deal_id = $1",
            b
        )
        .await,
        0
    );
    assert_eq!(
        count(&app.db, "select sold::bigint from deal where deal_id = $1", b).await,
        0
    );
    assert_eq!(
        count(
            &app.db,
            "select count(*) from coupon_claim where coupon_claim_id = $1 and used_at is null",
            claim_id
        )
        .await,
        1
    );

    // The same coupon on its own session's deal works (100 % off).
    let (status, order) = buy_with_coupon(&app, "coupon-roamer", &deal_a, "own-1", &claim).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["amount_minor"], 0, "{order}");
    assert_eq!(order["discount_minor"], 1499, "{order}");
    assert_eq!(order["session_id"], session_a.to_string());
    // A buyer without a coupon still buys B's deal at its price.
    let (status, order) = buy(&app, "coupon-roamer", &deal_b, "roam-3", 1).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["amount_minor"], 2599, "{order}");
}

#[tokio::test]
async fn a_deal_above_the_configured_maximum_price_is_refused() {
    let app = app().await;
    let max = app.commerce.config().max_price_minor;
    assert_eq!(max, 100_000_000);
    let (agency, session) = insert_agency_and_session(&app.db).await;
    lineup(&app, agency, session).await;
    for price in [max + 1, i64::MAX / 2, i64::MAX, 0, -1] {
        let (status, body) = app
            .send(
                Method::POST,
                &format!("/v1/sessions/{session}/deals"),
                &app.agency_token(agency),
                Some(json!({"link_number": 1, "price_minor": price, "quantity": 10,
                            "per_buyer_cap": 5, "duration_secs": 600})),
            )
            .await;
        assert_eq!(status, 400, "{price}: {body}");
        assert_eq!(body["error"], "bad_price", "{price}: {body}");
    }
    assert_eq!(
        count(
            &app.db,
            "select count(*) from deal where session_id = $1",
            session
        )
        .await,
        0
    );
    // At the maximum, the most units an order may hold still price exactly.
    let deal = create_deal(
        &app,
        agency,
        session,
        json!({"link_number": 1, "price_minor": max, "quantity": 200,
               "per_buyer_cap": 100, "duration_secs": 600}),
    )
    .await;
    let (status, order) = buy(&app, "big-spender", &deal, "max-1", 100).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["amount_minor"], max * 100, "{order}");
}

/// `hawker_settle_failures_total{kind="split"}` + `{kind="error"}` on the admin `/metrics`.
async fn settle_failures(app: &TestApp) -> u64 {
    let metrics = app.metrics().await;
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("hawker_settle_failures_total")
                && (line.contains("kind=\"split\"") || line.contains("kind=\"error\""))
        })
        .map(|line| {
            let value = line.rsplit(' ').next().unwrap();
            value.parse::<f64>().unwrap() as u64
        })
        .sum()
}

#[tokio::test]
async fn poisoned_requests_in_a_stampede_never_fail_or_split_a_batch() {
    let app = app().await;
    let (_agency, session, deal) = session_with_deal(&app, 1000, 10_000, 10).await;
    let before = settle_failures(&app).await;

    let long = "k".repeat(201);
    // Poison over the socket: NUL, over-long, non-ASCII, control, spaced keys,
    // and quantities that cannot be valid.
    let socket_poison: Vec<(Value, &str)> = vec![
        (
            json!({"deal_id": deal, "quantity": 1, "idempotency_key": "nul\u{0}key"}),
            "bad_idempotency_key",
        ),
        (
            json!({"deal_id": deal, "quantity": 1, "idempotency_key": "\u{0}"}),
            "bad_idempotency_key",
        ),
        (
            json!({"deal_id": deal, "quantity": 1, "idempotency_key": long.clone()}),
            "bad_idempotency_key",
        ),
        (
            json!({"deal_id": deal, "quantity": 1, "idempotency_key": "caf\u{e9}"}),
            "bad_idempotency_key",
        ),
        (
            json!({"deal_id": deal, "quantity": 1, "idempotency_key": "\u{1F4A5}"}),
            "bad_idempotency_key",
        ),
        (
            json!({"deal_id": deal, "quantity": 1, "idempotency_key": "a\u{7f}b"}),
            "bad_idempotency_key",
        ),
        (
            json!({"deal_id": deal, "quantity": 1, "idempotency_key": " padded "}),
            "bad_idempotency_key",
        ),
        (
            json!({"deal_id": deal, "quantity": 100_000, "idempotency_key": "huge-q"}),
            "bad_quantity",
        ),
        (
            json!({"deal_id": deal, "quantity": i32::MAX, "idempotency_key": "max-q"}),
            "bad_quantity",
        ),
        (
            json!({"deal_id": deal, "quantity": -5, "idempotency_key": "neg-q"}),
            "bad_quantity",
        ),
        (
            json!({"deal_id": deal, "quantity": 1_u64 << 40, "idempotency_key": "wide-q"}),
            "bad_quantity",
        ),
    ];

    let rounds = 4;
    let mut socket_tasks = Vec::new();
    for round in 0..rounds {
        // One poisoner socket per round, sending every poison in a loop.
        let mut poisoner = join(
            app.addr,
            session,
            &app.token(&format!("poisoner-{round}"), Role::Viewer),
        )
        .await;
        let poison = socket_poison.clone();
        socket_tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                for (data, code) in &poison {
                    let reply = poisoner.call("deal.buy", data.clone()).await;
                    assert_eq!(reply["type"], "error", "{data}: {reply}");
                    assert_eq!(reply["code"], *code, "{data}: {reply}");
                }
            }
        }));
        // And one valid socket buyer per round.
        let mut buyer = join(
            app.addr,
            session,
            &app.token(&format!("socket-buyer-{round}"), Role::Viewer),
        )
        .await;
        let deal = deal.clone();
        socket_tasks.push(tokio::spawn(async move {
            for i in 0..5 {
                let reply = buyer
                    .call(
                        "deal.buy",
                        json!({"deal_id": deal, "quantity": 1, "idempotency_key": format!("ws-{round}-{i}")}),
                    )
                    .await;
                assert_eq!(reply["type"], "ack", "{reply}");
            }
        }));
    }

    // Poison over HTTP: over-long, tab, non-ASCII (obs-text) keys, absurd quantities.
    let mut http = Vec::new();
    for round in 0..rounds {
        for i in 0..40 {
            let buyer = format!("http-buyer-{round}-{i}");
            http.push(send_buy(
                &app,
                buyer,
                &deal,
                HeaderValue::from_str(&format!("h-{round}-{i}")).unwrap(),
                json!({"quantity": 1}),
                &[201],
            ));
        }
        let poisoner = format!("http-poisoner-{round}");
        for (key, body, codes) in [
            (
                HeaderValue::from_str(&long).unwrap(),
                json!({"quantity": 1}),
                &[400][..],
            ),
            (
                HeaderValue::from_bytes(b"tab\tkey").unwrap(),
                json!({"quantity": 1}),
                &[400][..],
            ),
            (
                HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
                json!({"quantity": 1}),
                &[400][..],
            ),
            (
                HeaderValue::from_static("qty-big"),
                json!({"quantity": 100_000}),
                &[400][..],
            ),
            (
                HeaderValue::from_static("qty-wide"),
                json!({"quantity": 1_u64 << 40}),
                &[400][..],
            ),
            (
                HeaderValue::from_static("qty-zero"),
                json!({"quantity": 0}),
                &[400][..],
            ),
        ] {
            http.push(send_buy(&app, poisoner.clone(), &deal, key, body, codes));
        }
    }
    let answers = join_all(http).await;
    for (status, body, wanted_codes, body_sent) in &answers {
        assert!(wanted_codes.contains(status), "{body_sent}: {status} {body}");
        if *status == 400 {
            let code = body["error"].as_str().unwrap_or_default();
            assert!(
                [
                    "bad_idempotency_key",
                    "missing_idempotency_key",
                    "bad_quantity",
                    "bad_json"
                ]
                .contains(&code),
                "{body_sent}: {body}"
            );
        }
    }
    for task in socket_tasks {
        task.await.unwrap();
    }
    // Over HTTP, the over-long and the tab keys say `bad_idempotency_key`.
    for key in [
        HeaderValue::from_str(&long).unwrap(),
        HeaderValue::from_bytes(b"tab\tkey").unwrap(),
    ] {
        let (status, body, _, sent) = send_buy(
            &app,
            "http-check".into(),
            &deal,
            key,
            json!({"quantity": 1}),
            &[400],
        )
        .await;
        assert_eq!(status, 400, "{sent}: {body}");
        assert_eq!(body["error"], "bad_idempotency_key", "{sent}: {body}");
    }

    // Every valid request committed: 4 × 40 over HTTP and 4 × 5 over the socket.
    let valid = i64::from(rounds) * 45;
    let d = deal_uuid(&deal);
    assert_eq!(
        count(
            &app.db,
            "select count(*) from customer_order where deal_id = $1",
            d
        )
        .await,
        valid
    );
    assert_eq!(
        count(&app.db, "select sold::bigint from deal where deal_id = $1", d).await,
        valid
    );
    // No batch failed or was split.
    let after = settle_failures(&app).await;
    assert_eq!(after, before, "settlement batches failed or were split");
}

/// Buys as `buyer` with a raw `Idempotency-Key`; returns (status, body, wanted statuses, what was sent).
async fn send_buy(
    app: &TestApp,
    buyer: String,
    deal: &str,
    key: HeaderValue,
    body: Value,
    wanted: &[u16],
) -> (u16, Value, Vec<u16>, String) {
    let sent_desc = format!("{key:?} {body}");
    let sent = app
        .http
        .post(app.url(&format!("/v1/deals/{deal}/orders")))
        .bearer_auth(app.token(&buyer, Role::Viewer))
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await;
    let (status, answer) = try_answer(sent).await;
    (status, answer, wanted.to_vec(), sent_desc)
}
