//! Coupon drops against real Postgres and Redis: a drop of 100 claimed by
//! 2,000 viewers over two nodes, a scheduled drop firing exactly once across
//! nodes, claim windows, the per-viewer limit, who may create a drop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::join_all;
use hawker_commerce::Commerce;
use hawker_core::Role;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::support::fixtures::count;
use crate::support::socket::join;
use crate::support::{poll, try_answer, two_nodes, NodeOptions, Patience, RedisServer, TestApp};

/// Two nodes on `redis` whose schedulers tick every 100 ms.
fn drop_nodes(redis: &RedisServer) -> NodeOptions {
    NodeOptions::default()
        .redis(redis)
        .env(&[("HAWKER__COMMERCE__SCHEDULER_TICK_MS", "100")])
        .http_timeout(Duration::from_secs(30))
}

async fn create_drop(app: &TestApp, agency: Uuid, session: Uuid, body: Value) -> (u16, Value) {
    app.send(
        Method::POST,
        &format!("/v1/sessions/{session}/coupon-drops"),
        &app.agency_token(agency),
        Some(body),
    )
    .await
}

async fn claim_with(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    token: &str,
    drop: &str,
) -> (u16, Value) {
    let sent = http
        .post(format!("http://{addr}/v1/coupon-drops/{drop}/claims"))
        .bearer_auth(token)
        .send()
        .await;
    try_answer(sent).await
}

async fn claim(app: &TestApp, viewer: &str, drop: &str) -> (u16, Value) {
    claim_with(&app.http, app.addr, &app.token(viewer, Role::Viewer), drop).await
}

#[tokio::test]
async fn a_drop_of_100_claimed_by_2000_viewers_over_two_nodes_gives_exactly_100_claims() {
    let redis = RedisServer::start();
    let (a, b, agency, session) = two_nodes(drop_nodes(&redis)).await;
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
            // A 503 (a node starved of CPU ran out of database connections)
            // is what the docs say it is: nothing happened, retry. A claim
            // granted but answered 503 would show as a lost winner below.
            let mut answer = claim_with(&http, addr, &token, &drop_id).await;
            for _ in 0..20 {
                if answer.0 != 503 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                answer = claim_with(&http, addr, &token, &drop_id).await;
            }
            (viewer, answer.0, answer.1)
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
    let (remaining, state) = poll(
        Patience::For(Duration::from_secs(10)),
        Duration::from_millis(100),
        || async {
            let snapshot = b.hub.snapshot(session).await.unwrap();
            let remaining = snapshot
                .state
                .get(&format!("coupon:{drop_id}:remaining"))
                .map(|v| v["remaining"].clone());
            (remaining, format!("{:?}", snapshot.state))
        },
        |(remaining, _)| *remaining == Some(json!(0)),
    )
    .await;
    assert_eq!(remaining, Some(json!(0)), "remaining never reached 0: {state}");
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
    let (a, b, agency, session) = two_nodes(drop_nodes(&redis)).await;
    let mut viewer = join(b.addr, session, &b.token("watcher", Role::Viewer)).await;

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
    let (fired_a, fired_b) = tokio::join!(hammer(a.commerce.clone()), hammer(b.commerce.clone()));
    assert!(
        fired_a + fired_b <= 1,
        "fired {fired_a} + {fired_b} times by hand"
    );

    let dropped: Vec<Value> = viewer
        .frames_for(Duration::from_secs(3))
        .await
        .into_iter()
        .filter(|frame| frame["type"] == "coupon.dropped")
        .collect();
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
    let (a, _b, agency, session) = two_nodes(drop_nodes(&redis)).await;
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

    let drop: Value = poll(
        Patience::For(Duration::from_secs(10)),
        Duration::from_millis(50),
        || async {
            a.get(
                &format!("/v1/coupon-drops/{drop_id}"),
                Some(&a.token("v", Role::Viewer)),
            )
            .await
            .json()
            .await
            .unwrap()
        },
        |drop: &Value| drop["status"] == "dropped",
    )
    .await;
    assert_eq!(drop["status"], "dropped", "the drop never fired: {drop}");
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
    let status: String = poll(
        Patience::For(Duration::from_secs(10)),
        Duration::from_millis(50),
        || async {
            sqlx::query_scalar("select status from coupon_drop where coupon_drop_id = $1")
                .bind(drop_uuid)
                .fetch_one(&a.db)
                .await
                .unwrap()
        },
        |status: &String| status == "ended",
    )
    .await;
    assert_eq!(status, "ended", "the drop never ended");
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
    assert_eq!(claims["items"].as_array().unwrap().len(), 1, "{claims}");
    assert_eq!(claims["items"][0]["coupon_drop_id"], drop_id.as_str());
    assert!(claims["next_cursor"].is_null(), "{claims}");
    let (status, body) = claim(&a, "early", &Uuid::new_v4().to_string()).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn a_viewer_holds_at_most_the_per_viewer_limit_even_when_racing() {
    let redis = RedisServer::start();
    let (a, b, agency, session) = two_nodes(drop_nodes(&redis)).await;
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
    let (a, _b, agency, session) = two_nodes(drop_nodes(&redis)).await;
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
#[tokio::test]
async fn a_viewer_claims_over_the_socket_and_a_second_claim_is_refused() {
    let redis = RedisServer::start();
    let (a, _b, agency, session) = two_nodes(drop_nodes(&redis)).await;
    let (status, drop) = create_drop(
        &a,
        agency,
        session,
        json!({"total": 5, "discount_kind": "percent", "discount_value": 10, "claim_window_secs": 600}),
    )
    .await;
    assert_eq!(status, 201, "{drop}");
    let drop_id = drop["coupon_drop_id"].as_str().unwrap().to_string();
    let mut viewer = join(a.addr, session, &a.token("socket-claimer", Role::Viewer)).await;

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
