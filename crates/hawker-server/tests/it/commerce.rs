//! Flash deals and orders against real Postgres and Redis: the stampede,
//! idempotency, Redis flushed mid-stampede, a node killed mid-stampede,
//! expiry, Postgres unreachable, the deal's life in the room, rows made due by hand.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use hawker_core::Role;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::support::fixtures::{buy, buy_with, create_deal, lineup, session_with_lineup, token};
use crate::support::process::ServerProcess;
use crate::support::proxy::TcpProxy;
use crate::support::socket::{connect, join};
use crate::support::{
    poll, settings_with, spawn_app_with, test_database_url, two_nodes, NodeOptions, Patience, RedisServer,
    TestApp,
};

/// Two nodes on `redis` whose deals may be short and whose scheduler ticks
/// every 100 ms.
fn fast_deals(redis: &RedisServer) -> NodeOptions {
    NodeOptions::default().redis(redis).env(&[
        ("HAWKER__COMMERCE__DEAL_MIN_SECS", "1"),
        ("HAWKER__COMMERCE__SCHEDULER_TICK_MS", "100"),
    ])
}

/// 500 units at 9.99, at most 2 per buyer, for two minutes.
fn stampede_deal() -> Value {
    json!({"link_number": 1, "price_minor": 999, "quantity": 500, "per_buyer_cap": 2, "duration_secs": 120})
}

/// What Postgres says about a deal: (sold column, units in live orders, max units per buyer, orders).
pub(crate) async fn deal_in_postgres(db: &sqlx::PgPool, deal: &str) -> (i32, i64, i64, HashSet<Uuid>) {
    let deal_id = Uuid::parse_str(deal).unwrap();
    let sold: i32 = sqlx::query_scalar("select sold from deal where deal_id = $1")
        .bind(deal_id)
        .fetch_one(db)
        .await
        .unwrap();
    let units: Option<i64> = sqlx::query_scalar(
        "select sum(quantity)::bigint from customer_order where deal_id = $1 and status <> 'cancelled'",
    )
    .bind(deal_id)
    .fetch_one(db)
    .await
    .unwrap();
    let max_per_buyer: Option<i64> = sqlx::query_scalar(
        "select max(u)::bigint from (select sum(quantity) as u from customer_order
          where deal_id = $1 and status <> 'cancelled' group by buyer_id) t",
    )
    .bind(deal_id)
    .fetch_one(db)
    .await
    .unwrap();
    let orders: Vec<Uuid> = sqlx::query_scalar("select order_id from customer_order where deal_id = $1")
        .bind(deal_id)
        .fetch_all(db)
        .await
        .unwrap();
    (
        sold,
        units.unwrap_or(0),
        max_per_buyer.unwrap_or(0),
        orders.into_iter().collect(),
    )
}

/// Runs `buyers` purchases (quantity 1 or 2, some buyers twice) spread over
/// `nodes`, 400 at a time; `during` runs after `after` answers. Returns the
/// 201 answers: (buyer, key) → order.
async fn stampede<F, Fut>(
    nodes: &[(std::net::SocketAddr, hawker_core::TokenKeys)],
    deal: &str,
    buyers: usize,
    after: usize,
    during: F,
) -> (HashMap<(String, String), Value>, HashMap<String, usize>)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(400)
        .build()
        .unwrap();
    let gate = Arc::new(Semaphore::new(400));
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut requests = Vec::new();
    for i in 0..buyers {
        let buyer = format!("buyer-{i}");
        let quantity = if i % 2 == 0 { 1 } else { 2 };
        requests.push((buyer.clone(), format!("key-{i}-a"), quantity));
        if i % 10 == 0 {
            // A second purchase by the same buyer: must respect the cap.
            requests.push((buyer, format!("key-{i}-b"), 2));
        }
    }
    let tasks = requests
        .into_iter()
        .enumerate()
        .map(|(n, (buyer, key, quantity))| {
            let http = http.clone();
            let gate = gate.clone();
            let answered = answered.clone();
            let (addr, keys) = &nodes[n % nodes.len()];
            let addr = *addr;
            let other = nodes[(n + 1) % nodes.len()].0;
            let token = token(keys, &buyer, Role::Viewer);
            let deal = deal.to_string();
            async move {
                let _permit = gate.acquire().await.unwrap();
                let mut result = buy_with(&http, addr, &token, &deal, &key, quantity).await;
                // A node that is gone: retry the same key on another node.
                let mut tries = 0;
                while (result.0 == 0 || result.0 == 503) && tries < 20 {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    result = buy_with(&http, other, &token, &deal, &key, quantity).await;
                }
                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (buyer, key, result)
            }
        });
    let all = tokio::spawn(join_all(tasks.map(tokio::spawn).collect::<Vec<_>>()));
    while answered.load(std::sync::atomic::Ordering::Relaxed) < after {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    during().await;
    let results = all.await.unwrap();
    let mut created = HashMap::new();
    let mut codes: HashMap<String, usize> = HashMap::new();
    for result in results {
        let (buyer, key, (status, body)) = result.unwrap();
        if status == 201 {
            created.insert((buyer, key), body);
        } else {
            let code = body["error"].as_str().unwrap_or("transport").to_string();
            *codes.entry(format!("{status} {code}")).or_default() += 1;
        }
    }
    (created, codes)
}

fn nodes(apps: &[&TestApp]) -> Vec<(std::net::SocketAddr, hawker_core::TokenKeys)> {
    apps.iter().map(|a| (a.addr, a.keys.clone())).collect()
}

pub(crate) fn assert_invariants(
    created: &HashMap<(String, String), Value>,
    pg: &(i32, i64, i64, HashSet<Uuid>),
    quantity: i64,
) {
    let (sold, units, max_per_buyer, orders) = pg;
    assert!(i64::from(*sold) <= quantity, "oversold: {sold}");
    assert_eq!(i64::from(*sold), *units, "deal.sold matches the orders");
    assert!(*max_per_buyer <= 2, "a buyer passed the cap: {max_per_buyer}");
    for order in created.values() {
        let id = Uuid::parse_str(order["order_id"].as_str().unwrap()).unwrap();
        assert!(orders.contains(&id), "an acknowledged order is missing: {id}");
    }
}

#[tokio::test]
async fn a_stampede_of_5000_buyers_on_two_nodes_sells_exactly_500() {
    let redis = RedisServer::start();
    let (a, b, agency, session) = two_nodes(fast_deals(&redis)).await;
    lineup(&a, agency, session).await;
    let deal_id = create_deal(&a, agency, session, stampede_deal()).await;

    let (created, codes) = stampede(&nodes(&[&a, &b]), &deal_id, 5000, 0, || async {}).await;
    let pg = deal_in_postgres(&a.db, &deal_id).await;
    assert_invariants(&created, &pg, 500);
    assert_eq!(pg.0, 500, "sold out exactly; refusals: {codes:?}");
    assert_eq!(pg.3.len(), created.len(), "every order row had a 201");
    let created_units: i64 = created.values().map(|o| o["quantity"].as_i64().unwrap()).sum();
    assert_eq!(created_units, 500);
    assert!(
        codes
            .keys()
            .all(|c| c == "409 sold_out" || c == "409 cap_exceeded"),
        "{codes:?}"
    );

    // Retries with the same key return the same order; a changed body is refused.
    for ((buyer, key), order) in created.iter().take(30) {
        let quantity = order["quantity"].as_i64().unwrap() as i32;
        let (status, again) = buy(&b, buyer, &deal_id, key, quantity).await;
        assert_eq!(status, 201);
        assert_eq!(again["order_id"], order["order_id"]);
        let (status, body) = buy(&a, buyer, &deal_id, key, 3 - quantity).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (409, Some("idempotency_key_reused"))
        );
    }
    assert_eq!(
        deal_in_postgres(&a.db, &deal_id).await.3.len(),
        created.len(),
        "retries created nothing"
    );
}

#[tokio::test]
async fn flushing_redis_mid_stampede_does_not_oversell() {
    let redis = RedisServer::start();
    let (a, b, agency, session) = two_nodes(fast_deals(&redis)).await;
    lineup(&a, agency, session).await;
    let deal_id = create_deal(&a, agency, session, stampede_deal()).await;
    let url = redis.url();
    let (created, codes) = stampede(&nodes(&[&a, &b]), &deal_id, 3000, 300, || async move {
        let client = redis::Client::open(url).unwrap();
        // Under load a connection can be slow to open: retry, the flush must happen.
        for attempt in 0.. {
            let flushed = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await
            };
            match flushed.await {
                Ok(()) => break,
                Err(e) if attempt < 20 => eprintln!("FLUSHALL retry: {e}"),
                Err(e) => panic!("FLUSHALL failed: {e}"),
            }
        }
    })
    .await;
    let pg = deal_in_postgres(&a.db, &deal_id).await;
    assert_invariants(&created, &pg, 500);
    assert_eq!(pg.3.len(), created.len(), "every order row had a 201: {codes:?}");
    assert!(pg.0 > 0);
}

#[tokio::test]
async fn retries_and_errors_have_distinct_codes() {
    let redis = RedisServer::start();
    let (a, _b, agency, session) = two_nodes(fast_deals(&redis)).await;
    lineup(&a, agency, session).await;
    let later = create_deal(
        &a,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": 5,
        "per_buyer_cap": 2, "countdown_secs": 120, "duration_secs": 60}),
    )
    .await;
    assert_eq!(buy(&a, "v", &later, "k0", 1).await.1["error"], "deal_not_started");

    let deal = create_deal(
        &a,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": 3,
        "per_buyer_cap": 2, "duration_secs": 60}),
    )
    .await;
    assert_eq!(buy(&a, "v", &deal, "k1", 0).await.1["error"], "bad_quantity");
    assert_eq!(buy(&a, "v", &deal, "k1", 3).await.1["error"], "cap_exceeded");
    let (status, first) = buy(&a, "v", &deal, "k1", 2).await;
    assert_eq!(status, 201);
    assert_eq!(first["status"], "pending_payment");
    assert_eq!(first["amount_minor"], 1000);
    assert!(first["expires_at"].is_string());
    assert_eq!(buy(&a, "v", &deal, "k2", 1).await.1["error"], "cap_exceeded");
    assert_eq!(buy(&a, "w", &deal, "k3", 1).await.0, 201);
    assert_eq!(buy(&a, "x", &deal, "k4", 1).await.1["error"], "sold_out");
    let missing = a
        .http
        .post(a.url(&format!("/v1/deals/{deal}/orders")))
        .bearer_auth(a.token("v", Role::Viewer))
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"],
        "missing_idempotency_key"
    );
    let ended = a
        .http
        .get(a.url(&format!("/v1/deals/{deal}")))
        .bearer_auth(a.token("v", Role::Viewer))
        .send()
        .await
        .unwrap();
    let ended: Value = ended.json().await.unwrap();
    assert_eq!(
        (ended["status"].as_str(), ended["end_reason"].as_str()),
        (Some("ended"), Some("sold_out"))
    );
    assert_eq!(buy(&a, "y", &deal, "k5", 1).await.1["error"], "sold_out");
    // The first answer again, even after the deal ended.
    let (status, replay) = buy(&a, "v", &deal, "k1", 2).await;
    assert_eq!((status, &replay["order_id"]), (201, &first["order_id"]));

    // A deal the host ended early refuses with deal_ended; a viewer may not end one.
    let early = create_deal(
        &a,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": 3,
        "per_buyer_cap": 2, "duration_secs": 60}),
    )
    .await;
    let end = |token: String| {
        let request = a
            .http
            .post(a.url(&format!("/v1/deals/{early}/end")))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(end(a.token("v", Role::Viewer)).await, 403);
    assert_eq!(end(a.agency_token(agency)).await, 200);
    assert_eq!(end(a.agency_token(agency)).await, 409);
    assert_eq!(buy(&a, "z", &early, "k6", 1).await.1["error"], "deal_ended");
}

/// Attempts that reach a node together go to the gate in one script call
/// (`purchase/admission.rs`); each must still be admitted as if alone, in
/// order: one buyer repeating one key gets one order, a greedy buyer stops at
/// the cap, and the deal sells exactly its units.
#[tokio::test]
async fn attempts_sent_at_once_are_admitted_as_if_one_by_one() {
    let redis = RedisServer::start();
    let (a, _b, agency, session) = two_nodes(fast_deals(&redis)).await;
    lineup(&a, agency, session).await;
    let deal = create_deal(
        &a,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": 10,
        "per_buyer_cap": 2, "duration_secs": 60}),
    )
    .await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(200)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut attempts = Vec::new();
    for i in 0..30 {
        attempts.push(("same".to_string(), "one".to_string()));
        attempts.push(("greedy".to_string(), format!("g{i}")));
    }
    for i in 0..40 {
        attempts.push((format!("b{i}"), "k".to_string()));
    }
    let answers = join_all(attempts.into_iter().map(|(buyer, key)| {
        let (http, token, deal) = (http.clone(), a.token(&buyer, Role::Viewer), deal.clone());
        let addr = a.addr;
        async move { (buyer, buy_with(&http, addr, &token, &deal, &key, 1).await) }
    }))
    .await;
    // Which buyers get the ten units depends on arrival; what each gets does not.
    let same: HashSet<String> = answers
        .iter()
        .filter(|(b, _)| b == "same")
        .map(|(_, (status, body))| format!("{status} {}", body.get("order_id").unwrap_or(&body["error"])))
        .collect();
    assert_eq!(
        same.len(),
        1,
        "every repeat of one key gets the same answer: {same:?}"
    );
    let greedy_created = answers
        .iter()
        .filter(|(b, (status, _))| b == "greedy" && *status == 201)
        .count();
    assert!(
        greedy_created <= 2,
        "the greedy buyer stops at the cap: {greedy_created}"
    );
    for (buyer, (status, body)) in &answers {
        if *status != 201 {
            let expected = if buyer == "greedy" {
                ["sold_out", "cap_exceeded"].contains(&body["error"].as_str().unwrap_or(""))
            } else {
                body["error"] == "sold_out"
            };
            assert!(expected, "{buyer}: {status} {body}");
        }
    }
    let orders = answers.iter().filter(|(_, (status, _))| *status == 201).count();
    let same_order = usize::from(same.iter().any(|a| a.starts_with("201")));
    let pg = deal_in_postgres(&a.db, &deal).await;
    assert_eq!((pg.0, pg.1), (10, 10), "the deal sells exactly its units");
    assert!(pg.2 <= 2, "nobody passes the cap");
    assert_eq!(pg.3.len(), 10, "one order per unit");
    assert_eq!(
        orders - same_order * 29,
        10,
        "every order is answered, once per key"
    );
}

/// One buyer sending one idempotency key to two deals at once: one purchase
/// has the order, the other is refused `idempotency_key_reused`, whether the
/// two reach the settlement in one batch or in two; nobody is answered with
/// an order of the other deal.
#[tokio::test]
async fn one_key_sent_to_two_deals_at_once_gets_one_order_and_one_refusal() {
    let redis = RedisServer::start();
    let (a, _b, agency, session) = two_nodes(fast_deals(&redis)).await;
    // Links #1 and #2.
    lineup(&a, agency, session).await;
    lineup(&a, agency, session).await;
    let mut deals = Vec::new();
    for link in [1, 2] {
        deals.push(
            create_deal(
                &a,
                agency,
                session,
                json!({"link_number": link, "price_minor": 500, "quantity": 1000,
                "per_buyer_cap": 5, "duration_secs": 60}),
            )
            .await,
        );
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(200)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let attempts: Vec<(String, String)> = (0..40)
        .flat_map(|i| deals.iter().map(move |deal| (format!("twice{i}"), deal.clone())))
        .collect();
    let answers = join_all(attempts.into_iter().map(|(buyer, deal)| {
        let (http, token, addr) = (http.clone(), a.token(&buyer, Role::Viewer), a.addr);
        async move {
            (
                buyer,
                deal.clone(),
                buy_with(&http, addr, &token, &deal, "one", 1).await,
            )
        }
    }))
    .await;
    let mut by_buyer: HashMap<String, Vec<(u16, String)>> = HashMap::new();
    for (buyer, deal, (status, body)) in answers {
        if status == 201 {
            assert_eq!(
                body["deal_id"].as_str(),
                Some(deal.as_str()),
                "{buyer}: a 201 carries an order of the deal bought: {body}"
            );
            by_buyer.entry(buyer).or_default().push((status, String::new()));
        } else {
            assert_eq!(status, 409, "{buyer}: {body}");
            let code = body["error"].as_str().unwrap_or("").to_string();
            by_buyer.entry(buyer).or_default().push((status, code));
        }
    }
    for (buyer, mut outcomes) in by_buyer {
        outcomes.sort();
        assert_eq!(
            outcomes,
            [(201, String::new()), (409, "idempotency_key_reused".to_string())],
            "{buyer}"
        );
    }
}

/// The settlement decides a batch as if its buyers held nothing (the gate
/// counts units per buyer) and lets the guarded upsert of `deal_buyer`
/// check the sum. When the gate has lost a buyer's count, that check finds
/// the buyer over the cap, and the batch is decided again with the
/// buyer's units read: the purchase is refused, nothing is written.
#[tokio::test]
async fn a_buyer_the_gate_forgot_is_still_held_to_the_cap_by_postgres() {
    let redis = RedisServer::start();
    let (a, b, agency, session) = two_nodes(fast_deals(&redis)).await;
    lineup(&a, agency, session).await;
    let deal = create_deal(
        &a,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": 10,
        "per_buyer_cap": 2, "duration_secs": 60}),
    )
    .await;
    assert_eq!(buy(&a, "v", &deal, "k1", 2).await.0, 201);
    // The gate forgets every buyer's units (its other keys stay, so it is
    // not rebuilt from Postgres).
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*:deal:{{{deal}}}:buyers"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    redis::cmd("DEL")
        .arg(&keys)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();

    let (status, refused) = buy(&b, "v", &deal, "k2", 1).await;
    assert_eq!(
        (status, refused["error"].as_str()),
        (409, Some("cap_exceeded")),
        "{refused}"
    );
    // Another buyer in the same state of the gate is not held back.
    assert_eq!(buy(&b, "w", &deal, "k3", 2).await.0, 201);
    let pg = deal_in_postgres(&a.db, &deal).await;
    assert_eq!(
        (pg.0, pg.1, pg.2),
        (4, 4, 2),
        "sold, units in orders, most per buyer"
    );
    let held: i32 = sqlx::query_scalar("select units from deal_buyer where deal_id = $1 and buyer_id = 'v'")
        .bind(Uuid::parse_str(&deal).unwrap())
        .fetch_one(&a.db)
        .await
        .unwrap();
    assert_eq!(held, 2);
}

#[tokio::test]
async fn a_non_ascii_idempotency_header_is_a_bad_key_not_a_missing_one() {
    let a = spawn_app_with(settings_with(&[])).await;
    let (agency, session) = session_with_lineup(&a).await;
    let deal = create_deal(
        &a,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": 3, "per_buyer_cap": 2, "duration_secs": 60}),
    )
    .await;
    for raw in [&b"caf\xc3\xa9"[..], b"\xff\xfe", b"ok\x80"] {
        let answer = a
            .http
            .post(a.url(&format!("/v1/deals/{deal}/orders")))
            .bearer_auth(a.token("v", Role::Viewer))
            .header(
                "idempotency-key",
                reqwest::header::HeaderValue::from_bytes(raw).unwrap(),
            )
            .json(&json!({"quantity": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{raw:?}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"], "bad_idempotency_key", "{raw:?}: {body}");
    }
    // Nothing was sold.
    assert_eq!(buy(&a, "w", &deal, "k1", 1).await.0, 201);
    let sold: Value = a
        .http
        .get(a.url(&format!("/v1/deals/{deal}")))
        .bearer_auth(a.token("v", Role::Viewer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sold["sold"], 1, "{sold}");
}

#[tokio::test]
async fn a_deal_lives_in_the_room_and_ends_on_time_exactly_once_across_nodes() {
    let redis = RedisServer::start();
    let (a, b, agency, session) = two_nodes(fast_deals(&redis)).await;
    lineup(&a, agency, session).await;
    let mut viewer = join(b.addr, session, &b.token("watcher", Role::Viewer)).await;
    let deal_id = create_deal(
        &a,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": 50,
        "per_buyer_cap": 5, "countdown_secs": 1, "duration_secs": 3}),
    )
    .await;
    let scheduled = viewer.expect("deal.scheduled").await;
    assert_eq!(scheduled["data"]["deal_id"], deal_id.as_str());
    assert_eq!(scheduled["data"]["link_number"], 1);
    let started = viewer.expect("deal.started").await;
    assert_eq!(started["data"]["status"], "live");
    assert_eq!(buy(&b, "fan", &deal_id, "k", 4).await.0, 201);
    let stock = viewer.expect("deal.stock").await;
    assert_eq!(stock["data"]["remaining"], 46);
    let frames = viewer.frames_for(Duration::from_secs(8)).await;
    let ended: Vec<&Value> = frames.iter().filter(|f| f["type"] == "deal.ended").collect();
    let started_again = frames.iter().filter(|f| f["type"] == "deal.started").count();
    assert_eq!(ended.len(), 1, "deal.ended exactly once");
    assert_eq!(started_again, 0, "deal.started exactly once");
    assert_eq!(ended[0]["data"]["reason"], "time_up");
    // Unsold units went back to the SKU.
    let stock_on_hand: i32 = sqlx::query_scalar("select stock_on_hand from sku")
        .fetch_one(&a.db)
        .await
        .unwrap();
    assert_eq!(stock_on_hand, 10000 - 4);
    let snapshot = connect(a.addr, session, &a.token("late", Role::Viewer), None)
        .await
        .expect("welcome")
        .await;
    assert!(
        snapshot["state"].get(format!("deal:{deal_id}")).is_none(),
        "an ended deal leaves the snapshot"
    );
}

#[tokio::test]
async fn an_expired_order_returns_its_units_and_the_room_sees_the_stock() {
    let redis = RedisServer::start();
    let (a, _b, agency, session) =
        two_nodes(fast_deals(&redis).env(&[("HAWKER__COMMERCE__ORDER_TTL_SECS", "1")])).await;
    lineup(&a, agency, session).await;
    let mut viewer = join(a.addr, session, &a.token("watcher", Role::Viewer)).await;
    let deal_id = create_deal(
        &a,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": 10,
        "per_buyer_cap": 3, "duration_secs": 60}),
    )
    .await;
    let (status, order) = buy(&a, "slowpay", &deal_id, "k", 3).await;
    assert_eq!(status, 201);
    loop {
        let stock = viewer.expect("deal.stock").await;
        if stock["data"]["remaining"] == 10 {
            break;
        }
        assert_eq!(stock["data"]["remaining"], 7);
    }
    let status: String = sqlx::query_scalar("select status from customer_order where order_id = $1")
        .bind(Uuid::parse_str(order["order_id"].as_str().unwrap()).unwrap())
        .fetch_one(&a.db)
        .await
        .unwrap();
    assert_eq!(status, "cancelled");
    // The gate got the units back too: the same buyer may buy the cap again.
    assert_eq!(buy(&a, "slowpay", &deal_id, "k-again", 3).await.0, 201);
}

/// The scheduler's tick first asks Postgres whether anything is due: rows
/// made due by hand (no API call, nothing cached on a node) are still found
/// within a few ticks, a late-paid order's units come back and a deal whose
/// `ends_at` was moved into the past ends with `time_up`.
#[tokio::test]
async fn rows_made_due_by_hand_are_handled_within_a_few_ticks() {
    let redis = RedisServer::start();
    let (a, _b, agency, session) = two_nodes(fast_deals(&redis)).await;
    lineup(&a, agency, session).await;
    let mut viewer = join(a.addr, session, &a.token("watcher", Role::Viewer)).await;
    let deal_id = create_deal(
        &a,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": 10,
        "per_buyer_cap": 3, "duration_secs": 600}),
    )
    .await;
    let id = Uuid::parse_str(&deal_id).unwrap();
    let (status, order) = buy(&a, "late", &deal_id, "k", 3).await;
    assert_eq!(status, 201, "{order}");
    let order_id = Uuid::parse_str(order["order_id"].as_str().unwrap()).unwrap();
    assert_eq!(deal_in_postgres(&a.db, &deal_id).await.0, 3);
    // Paid too late (what the payment webhook does to an order past its
    // expiry): its units must come back, and the order keeps its status.
    sqlx::query("update customer_order set status = 'refund_due' where order_id = $1")
        .bind(order_id)
        .execute(&a.db)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let returned = poll(
        Patience::For(Duration::from_secs(10)),
        Duration::from_millis(20),
        || async {
            sqlx::query_as::<_, (i32, String, bool)>(
                "select d.sold, o.status, o.cancelled_at is not null
                   from deal d join customer_order o using (deal_id) where o.order_id = $1",
            )
            .bind(order_id)
            .fetch_one(&a.db)
            .await
            .unwrap()
        },
        |row| row.0 == 0,
    )
    .await;
    assert_eq!(returned, (0, "refund_due".to_string(), true));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the units came back only after {:?} (ticks every 100 ms)",
        started.elapsed()
    );

    sqlx::query(
        "update deal set ends_at = greatest(now(), starts_at + interval '1 millisecond') where deal_id = $1",
    )
    .bind(id)
    .execute(&a.db)
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let ended = viewer
        .until("deal.ended", Duration::from_secs(10), |f| {
            f["type"] == "deal.ended"
        })
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the deal ended only after {:?} (ticks every 100 ms)",
        started.elapsed()
    );
    assert_eq!(ended["data"]["deal_id"], deal_id.as_str());
    assert_eq!(ended["data"]["reason"], "time_up");
    let (status, end_reason): (String, Option<String>) =
        sqlx::query_as("select status, end_reason from deal where deal_id = $1")
            .bind(id)
            .fetch_one(&a.db)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), end_reason.as_deref()),
        ("ended", Some("time_up"))
    );
}

#[tokio::test]
async fn purchases_fail_fast_with_503_while_postgres_is_unreachable_and_recover() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let db = format!(
        "postgres://postgres@{}/hawker_test_{}",
        proxy.addr,
        Uuid::new_v4().simple()
    );
    let app = spawn_app_with(settings_with(&[
        ("HAWKER__DATABASE__URL", &db),
        ("HAWKER__REDIS__URL", &redis.url()),
        ("HAWKER__DATABASE__ACQUIRE_TIMEOUT_MS", "500"),
    ]))
    .await;
    let (agency, session) = session_with_lineup(&app).await;
    let deal_id = create_deal(
        &app,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": 10,
        "per_buyer_cap": 5, "duration_secs": 60}),
    )
    .await;
    let (status, acknowledged) = buy(&app, "before", &deal_id, "k0", 1).await;
    assert_eq!(status, 201);

    proxy.cut();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let response = app
        .http
        .post(app.url(&format!("/v1/deals/{deal_id}/orders")))
        .bearer_auth(app.token("during", Role::Viewer))
        .header("idempotency-key", "k1")
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fails fast: {:?}",
        started.elapsed()
    );

    proxy.restore();
    let status = poll(
        Patience::Tries(50),
        Duration::from_millis(200),
        || async { buy(&app, "during", &deal_id, "k1", 1).await.0 },
        |status| *status == 201,
    )
    .await;
    assert_eq!(status, 201, "purchases resume once Postgres is back");
    let (_, units, _, orders) = deal_in_postgres(&app.db, &deal_id).await;
    assert!(orders.contains(&Uuid::parse_str(acknowledged["order_id"].as_str().unwrap()).unwrap()));
    assert_eq!(units, 2);
}

#[tokio::test]
async fn a_node_killed_mid_stampede_loses_no_acknowledged_order() {
    let redis = RedisServer::start();
    let db = test_database_url();
    // A test app for fixtures and tokens; the stampede goes to two real processes.
    let fixture = spawn_app_with(settings_with(&[
        ("HAWKER__DATABASE__URL", &db),
        ("HAWKER__REDIS__URL", &redis.url()),
    ]))
    .await;
    let (agency, session) = session_with_lineup(&fixture).await;
    let deal_id = create_deal(&fixture, agency, session, stampede_deal()).await;
    let mut victim = ServerProcess::spawn(&db, &redis.url(), &[]);
    let survivor = ServerProcess::spawn(&db, &redis.url(), &[]);
    let targets = vec![
        (victim.addr, fixture.keys.clone()),
        (survivor.addr, fixture.keys.clone()),
    ];

    let victim_ref = &mut victim;
    let (created, codes) = stampede(&targets, &deal_id, 3000, 400, || async move {
        victim_ref.kill();
    })
    .await;
    let (sold, units, max_per_buyer, orders) = deal_in_postgres(&fixture.db, &deal_id).await;
    let left: i32 = sqlx::query_scalar("select quantity - sold from deal where deal_id = $1")
        .bind(Uuid::parse_str(&deal_id).unwrap())
        .fetch_one(&fixture.db)
        .await
        .unwrap();
    assert_eq!(i64::from(sold), units, "units sold are the units in orders");
    assert_eq!(sold + left, 500, "units sold + units left = quantity");
    assert!(max_per_buyer <= 2);
    for order in created.values() {
        let id = Uuid::parse_str(order["order_id"].as_str().unwrap()).unwrap();
        assert!(orders.contains(&id), "an acknowledged order is missing: {id}");
    }
    assert!(!created.is_empty(), "{codes:?}");
}

#[tokio::test]
async fn a_viewer_buys_over_the_socket_and_the_host_pins_over_http() {
    let redis = RedisServer::start();
    let (a, _b, agency, session) = two_nodes(fast_deals(&redis)).await;
    lineup(&a, agency, session).await;
    let mut viewer = join(a.addr, session, &a.token("socket-buyer", Role::Viewer)).await;

    let pinned = a
        .http
        .post(a.url(&format!("/v1/sessions/{session}/lineup/1/pin")))
        .bearer_auth(a.agency_token(agency))
        .send()
        .await
        .unwrap();
    assert_eq!(pinned.status(), 200);
    let event = viewer.expect("host.pinned").await;
    assert_eq!(event["data"]["item"]["link_number"], 1);
    assert_eq!(event["data"]["item"]["price_minor"], 1999);
    let refused = a
        .http
        .post(a.url(&format!("/v1/sessions/{session}/lineup/1/pin")))
        .bearer_auth(a.token("viewer", Role::Viewer))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    let deal_id = create_deal(
        &a,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 700, "quantity": 5,
        "per_buyer_cap": 2, "duration_secs": 60}),
    )
    .await;
    let ack = viewer
        .call(
            "deal.buy",
            json!({"deal_id": deal_id, "quantity": 2, "idempotency_key": "s1"}),
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["data"]["order"]["amount_minor"], 1400);
    let again = viewer
        .call(
            "deal.buy",
            json!({"deal_id": deal_id, "quantity": 2, "idempotency_key": "s1"}),
        )
        .await;
    assert_eq!(
        again["data"]["order"]["order_id"],
        ack["data"]["order"]["order_id"]
    );
    assert_eq!(again["data"]["replayed"], true);
    let over = viewer
        .call(
            "deal.buy",
            json!({"deal_id": deal_id, "quantity": 1, "idempotency_key": "s2"}),
        )
        .await;
    assert_eq!(over["code"], "cap_exceeded");
    let bad = viewer
        .call("deal.buy", json!({"deal_id": "nope", "idempotency_key": "s3"}))
        .await;
    assert_eq!(bad["code"], "bad_command");
}

/// Sends sold-out attempts from new keys to `app` until it has refused at
/// least `at_least` of them from its own copy of the gate (mirror.rs);
/// every answer must be `409 sold_out`. Returns that count.
async fn refused_from_copy(app: &TestApp, deal: &str, at_least: u64) -> u64 {
    poll(
        Patience::For(Duration::from_secs(15)),
        Duration::from_millis(5),
        || async {
            let (status, body) = buy(app, "crowd", deal, &Uuid::new_v4().to_string(), 1).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (409, Some("sold_out")),
                "{body}"
            );
            app.commerce.gate().answered_by_node()
        },
        |n| *n >= at_least,
    )
    .await
}

/// After a deal sold out, a node refuses the crowd from its own copy of the
/// gate, without a Redis call per attempt; a repeated key still gets its
/// order back, the cap holder's new key is `sold_out` as before, and a
/// flushed Redis makes the node drop the copy, ask Redis (which rebuilds
/// the gate from Postgres) and copy it again.
#[tokio::test]
async fn a_node_refuses_a_sold_out_deal_from_its_own_copy_and_still_replays_a_repeated_key() {
    let redis = RedisServer::start();
    let (a, b, agency, session) = two_nodes(fast_deals(&redis)).await;
    lineup(&a, agency, session).await;
    let deal = create_deal(
        &a,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": 2,
        "per_buyer_cap": 2, "duration_secs": 60}),
    )
    .await;
    let (status, first) = buy(&a, "v", &deal, "k1", 2).await;
    assert_eq!(status, 201, "{first}");
    poll(
        Patience::For(Duration::from_secs(10)),
        Duration::from_millis(20),
        || async {
            a.get(&format!("/v1/deals/{deal}"), Some(&a.token("v", Role::Viewer)))
                .await
                .json::<Value>()
                .await
                .unwrap()
        },
        |d| d["end_reason"] == "sold_out",
    )
    .await;

    let copied = refused_from_copy(&b, &deal, 20).await;
    assert!(copied >= 20, "node b answered {copied} attempts from its copy");
    // A repeat goes to the gate, which replays the order.
    let (status, replay) = buy(&b, "v", &deal, "k1", 2).await;
    assert_eq!(
        (status, &replay["order_id"]),
        (201, &first["order_id"]),
        "{replay}"
    );
    // The cap holder's new key is refused as the gate refuses it.
    let (status, body) = buy(&b, "v", &deal, "k2", 1).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("sold_out")),
        "{body}"
    );

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await.unwrap();
    // The copy is dropped at its next check; the gate is rebuilt from
    // Postgres, still replays the key and is copied again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, replay) = buy(&b, "v", &deal, "k1", 2).await;
    assert_eq!(
        (status, &replay["order_id"]),
        (201, &first["order_id"]),
        "{replay}"
    );
    let again = refused_from_copy(&b, &deal, copied + 20).await;
    assert!(
        again >= copied + 20,
        "node b copied the rebuilt gate ({copied} → {again})"
    );
    let (status, replay) = buy(&b, "v", &deal, "k1", 2).await;
    assert_eq!(
        (status, &replay["order_id"]),
        (201, &first["order_id"]),
        "{replay}"
    );
    let pg = deal_in_postgres(&a.db, &deal).await;
    assert_eq!((pg.0, pg.1, pg.3.len()), (2, 2, 1));
}

/// The scheduler's "anything due?" check reads the order table's partial
/// indexes whatever the statistics say. A table of old orders (long expired
/// and cancelled) with a live deal's pending ones (expiring in minutes) makes
/// Postgres overestimate `status = 'pending_payment' and expires_at <= now()`;
/// an `exists` over it was then planned as a scan of the whole table, which
/// finds nothing and ran every tick (0.6 s on 6 million orders).
#[tokio::test]
async fn the_schedulers_due_check_reads_indexes_when_old_orders_skew_the_statistics() {
    let app = spawn_app_with(settings_with(&[])).await;
    let (agency, session) = session_with_lineup(&app).await;
    let deal = create_deal(&app, agency, session, stampede_deal()).await;
    let deal = Uuid::parse_str(&deal).unwrap();
    for (count, status, buyer, created, expires, cancelled) in [
        (
            30_000,
            "cancelled",
            "old-",
            "30 days",
            "-29 days",
            "now() - interval '29 days'",
        ),
        (
            10_000,
            "pending_payment",
            "new-",
            "0 seconds",
            "10 minutes",
            "null",
        ),
    ] {
        sqlx::query(&format!(
            "insert into customer_order (order_id, deal_id, session_id, lineup_item_id, sku_id, buyer_id, quantity,
                                         unit_price_minor, discount_minor, amount_minor, currency, idempotency_key,
                                         request_hash, created_at, expires_at, cancelled_at, status)
             select gen_random_uuid(), d.deal_id, d.session_id, d.lineup_item_id, d.sku_id, '{buyer}' || g, 1,
                    d.price_minor, 0, d.price_minor, d.currency, 'k-' || g, 'plan',
                    now() - interval '{created}', now() + interval '{expires}', {cancelled}, '{status}'
               from generate_series(1, {count}) as g, deal d where d.deal_id = $1"
        ))
        .bind(deal)
        .execute(&app.db)
        .await
        .unwrap();
    }
    sqlx::query("analyze customer_order")
        .execute(&app.db)
        .await
        .unwrap();
    let plan: Value = sqlx::query_scalar(&format!(
        "explain (format json) {}",
        hawker_commerce::scheduler::DUE_NOW_SQL
    ))
    .fetch_one(&app.db)
    .await
    .unwrap();
    let scans = seq_scanned(&plan);
    assert!(
        !scans.iter().any(|t| t == "customer_order"),
        "the due check scans the order table: {plan}"
    );
}

/// The tables a plan (EXPLAIN's JSON) reads with a sequential scan.
fn seq_scanned(plan: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![plan];
    while let Some(node) = stack.pop() {
        match node {
            Value::Array(items) => stack.extend(items),
            Value::Object(fields) => {
                if fields.get("Node Type").and_then(Value::as_str) == Some("Seq Scan") {
                    if let Some(table) = fields.get("Relation Name").and_then(Value::as_str) {
                        found.push(table.to_string());
                    }
                }
                stack.extend(fields.values());
            }
            _ => {}
        }
    }
    found
}
