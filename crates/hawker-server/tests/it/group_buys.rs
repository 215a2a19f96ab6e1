//! Group buys against real Postgres and Redis: 3,100 participants over two
//! nodes crossing two tiers, with Redis flushed mid-stampede and a node
//! killed mid-countdown; below the minimum nothing is charged; idempotent
//! joins, caps, who may join, invites, room events.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hawker_core::Role;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::fixtures::{session_with_lineup, token};
use crate::support::process::{hawker, ServerProcess};
use crate::support::socket::{connect, join as join_room};
use crate::support::{settings_with, spawn_app, spawn_app_with, test_database_url, RedisServer, TestApp};

/// Opens a group buy on link #1 as the agency; it must be created (201).
async fn open(app: &TestApp, agency: Uuid, session: Uuid, body: Value) -> Value {
    let (status, group_buy) = app
        .send(
            Method::POST,
            &format!("/v1/sessions/{session}/group-buys"),
            &app.agency_token(agency),
            Some(body),
        )
        .await;
    assert_eq!(status, 201, "{group_buy}");
    group_buy
}

/// Joins on any node: (status, body); status 0 when no answer came.
async fn join_on(
    http: &reqwest::Client,
    addr: SocketAddr,
    token: &str,
    id: &str,
    key: &str,
    body: Value,
) -> (u16, Value) {
    let answer = http
        .post(format!("http://{addr}/v1/group-buys/{id}/joins"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await;
    match answer {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

async fn join(app: &TestApp, buyer: &str, id: &str, key: &str, body: Value) -> (u16, Value) {
    join_on(
        &app.http,
        app.addr,
        &app.token(buyer, Role::Viewer),
        id,
        key,
        body,
    )
    .await
}

/// Retries a join that got no answer or a 503 (a node died, Redis was
/// flushed) on the other node, with the same key.
async fn join_retrying(
    http: &reqwest::Client,
    nodes: &[SocketAddr],
    n: usize,
    token: &str,
    id: &str,
    key: &str,
    quantity: i32,
) -> (u16, Value) {
    let body = json!({ "quantity": quantity });
    let mut answer = join_on(http, nodes[n % nodes.len()], token, id, key, body.clone()).await;
    for attempt in 1..50 {
        let retry = answer.0 == 503 || answer.0 == 0 || answer.1["error"] == "duplicate_request";
        if !retry {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        answer = join_on(
            http,
            nodes[(n + attempt) % nodes.len()],
            token,
            id,
            key,
            body.clone(),
        )
        .await;
    }
    answer
}

/// Ends the countdown now (instead of waiting for it).
async fn end_now(app: &TestApp, id: &str) {
    sqlx::query("update group_buy set ends_at = greatest(now(), starts_at + interval '1 millisecond') where group_buy_id = $1")
        .bind(Uuid::parse_str(id).unwrap())
        .execute(&app.db)
        .await
        .unwrap();
}

/// Polls the group buy until it is no longer running.
async fn settled(app: &TestApp, id: &str, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, body) = app
            .send(
                Method::GET,
                &format!("/v1/group-buys/{id}"),
                &app.token("reader", Role::Viewer),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        if body["status"] != "running" {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled within {within:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tiers() -> Value {
    json!([
        {"min_participants": 1, "price_minor": 3000},
        {"min_participants": 1000, "price_minor": 2500},
        {"min_participants": 3000, "price_minor": 2000}
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_thousand_participants_over_two_nodes_all_pay_the_final_tier_through_a_flush_and_a_killed_node()
{
    let _storm = crate::support::storm::exclusive().await;
    let redis = RedisServer::start();
    let db = test_database_url();
    let fixture = spawn_app_with(settings_with(&[
        ("HAWKER__DATABASE__URL", db.as_str()),
        ("HAWKER__REDIS__URL", &redis.url()),
    ]))
    .await;
    let (agency, session) = session_with_lineup(&fixture).await;
    let stock = 4200;
    let group_buy = open(
        &fixture,
        agency,
        session,
        json!({"link_number": 1, "tiers": tiers(), "min_participants": 100, "duration_secs": 600,
               "per_buyer_cap": 2, "stock": stock}),
    )
    .await;
    let id = group_buy["group_buy_id"].as_str().unwrap().to_string();
    let node = || {
        let mut command = hawker(&["serve"], &db);
        command
            .env("HAWKER__REDIS__URL", redis.url())
            .env("HAWKER__DATABASE__MAX_CONNECTIONS", "8")
            .stderr(Stdio::null());
        ServerProcess::start(&mut command).0
    };
    let mut node_a = node();
    let node_b = node();
    let nodes = [node_a.addr, node_b.addr];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    // 3,000 participants of 1 or 2 units (4,000 units); every 30th tries 2
    // more (over the cap of 2); then 150 latecomers of 2 units for the last
    // 200: 100 get in, 50 find it sold out. Redis is flushed after 1,000 answers.
    let answered = Arc::new(AtomicUsize::new(0));
    let limit = Arc::new(tokio::sync::Semaphore::new(100));
    let mut tasks = Vec::new();
    for i in 0..3000usize {
        let buyer = format!("p-{i:04}");
        // A buyer's second join goes after the first one's answer.
        let mut mine = vec![(format!("k-{i}-a"), if i % 3 == 0 { 2 } else { 1 })];
        if i % 30 == 0 {
            mine.push((format!("k-{i}-b"), 2));
        }
        let (http, answered, limit, id) = (http.clone(), answered.clone(), limit.clone(), id.clone());
        let token = token(&fixture.keys, &buyer, Role::Viewer);
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await.unwrap();
            let mut answers = Vec::new();
            for (key, quantity) in mine {
                let answer = join_retrying(&http, &nodes, i, &token, &id, &key, quantity).await;
                answered.fetch_add(1, Ordering::Relaxed);
                answers.push((buyer.clone(), key, quantity, answer));
            }
            answers
        }));
    }
    while answered.load(Ordering::Relaxed) < 1000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await.unwrap();
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.unwrap());
    }
    // The late ones: the second tier stays, the last 200 units go to the first 100.
    let mut late = Vec::new();
    for i in 0..150usize {
        let buyer = format!("late-{i:03}");
        let token = token(&fixture.keys, &buyer, Role::Viewer);
        let answer = join_retrying(&http, &nodes, i, &token, &id, "late", 2).await;
        late.push((buyer, answer));
    }

    let mut joined: HashMap<String, i32> = HashMap::new();
    for (buyer, key, quantity, (status, body)) in &answers {
        match (key.ends_with("-a"), *status) {
            (true, 201) => *joined.entry(buyer.clone()).or_default() += quantity,
            (true, _) => panic!("{buyer} {key}: {status} {body}"),
            (false, 409) => assert_eq!(body["error"], "cap_exceeded", "{buyer}: {body}"),
            (false, _) => panic!("{buyer} {key} over the cap: {status} {body}"),
        }
    }
    let mut sold_out = 0;
    for (buyer, (status, body)) in &late {
        match status {
            201 => {
                joined.insert(buyer.clone(), 2);
            }
            409 if body["error"] == "sold_out" => sold_out += 1,
            _ => panic!("{buyer}: {status} {body}"),
        }
    }
    assert_eq!(joined.len(), 3100, "participants");
    assert_eq!(sold_out, 50, "latecomers refused");
    assert_eq!(joined.values().sum::<i32>(), stock);

    // A node dies mid-countdown; the other settles when it ends.
    node_a.kill();
    end_now(&fixture, &id).await;
    let settled = settled(&fixture, &id, Duration::from_secs(60)).await;
    assert_eq!(settled["status"], "succeeded", "{settled}");
    assert_eq!(settled["final_price_minor"], 2000, "{settled}");
    assert_eq!(settled["participants"], 3100);
    assert_eq!(settled["units"], stock);
    drop(node_b);

    // One order per participant, every one at the final tier's price for
    // exactly the units they joined with.
    let gid = Uuid::parse_str(&id).unwrap();
    let orders: Vec<(String, i32, i64, i64, String)> = sqlx::query_as(
        "select buyer_id, quantity, unit_price_minor, amount_minor, status from customer_order where group_buy_id = $1",
    )
    .bind(gid)
    .fetch_all(&fixture.db)
    .await
    .unwrap();
    assert_eq!(orders.len(), 3100);
    for (buyer, quantity, unit, amount, status) in &orders {
        assert_eq!(Some(quantity), joined.get(buyer), "{buyer}");
        assert_eq!((*unit, *amount), (2000, 2000 * i64::from(*quantity)), "{buyer}");
        assert_eq!(status, "pending_payment");
    }
    // Nothing went back: every unit is in an order.
    let returned: Option<i64> = sqlx::query_scalar(
        "select sum(delta) from stock_movement where group_buy_id = $1 and reason = 'group_buy_returned'",
    )
    .bind(gid)
    .fetch_one(&fixture.db)
    .await
    .unwrap();
    assert_eq!(returned, None);
}

/// A join Postgres already holds but the gate lost (rebuilt from a read
/// older than its commit, the units left then lowered to Postgres' figure by
/// a batch): its retry is reserved again and answered as a replay, and that
/// reservation goes back. Kept, it counted the join a second time and the
/// gate refused the last units Postgres still had.
#[tokio::test]
async fn a_replayed_join_the_gate_had_lost_does_not_take_its_units_twice() {
    let redis = RedisServer::start();
    let app = spawn_app_with(settings_with(&[("HAWKER__REDIS__URL", &redis.url())])).await;
    let (agency, session) = session_with_lineup(&app).await;
    let group_buy = open(
        &app,
        agency,
        session,
        json!({"link_number": 1, "tiers": tiers(), "min_participants": 1, "duration_secs": 600,
               "per_buyer_cap": 2, "stock": 3}),
    )
    .await;
    let id = group_buy["group_buy_id"].as_str().unwrap().to_string();
    let (status, body) = join(&app, "a", &id, "k1", json!({"quantity": 1})).await;
    assert_eq!(status, 201, "{body}");
    // The gate forgets the join but its units left already count it (2).
    let gate = format!("hawker:groupbuy:{{{id}}}:gate");
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("HDEL")
        .arg(&gate)
        .arg("k:a\nk1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&gate)
        .arg("b:a")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    let stock: String = redis::cmd("HGET")
        .arg(&gate)
        .arg("stock")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stock, "2");
    // The retry is a replay; the last 2 units are still there for b.
    let (status, body) = join(&app, "a", &id, "k1", json!({"quantity": 1})).await;
    assert_eq!((status, &body["replayed"]), (200, &json!(true)), "{body}");
    let (status, body) = join(&app, "b", &id, "k1", json!({"quantity": 2})).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = join(&app, "c", &id, "k1", json!({"quantity": 1})).await;
    assert_eq!((status, &body["error"]), (409, &json!("sold_out")), "{body}");
}

#[tokio::test]
async fn below_the_minimum_nobody_is_charged_and_every_unit_goes_back() {
    let app = spawn_app().await;
    let (agency, session) = session_with_lineup(&app).await;
    let group_buy = open(
        &app,
        agency,
        session,
        json!({"link_number": 1, "tiers": tiers(), "min_participants": 5, "duration_secs": 600,
               "per_buyer_cap": 3, "stock": 50}),
    )
    .await;
    let id = group_buy["group_buy_id"].as_str().unwrap().to_string();
    let mut room = join_room(app.addr, session, &app.token("p-0", Role::Viewer)).await;
    for i in 0..4 {
        let (status, body) = join(&app, &format!("p-{i}"), &id, "k", json!({"quantity": 2})).await;
        assert_eq!(status, 201, "{body}");
    }
    end_now(&app, &id).await;
    let settled = settled(&app, &id, Duration::from_secs(30)).await;
    assert_eq!(settled["status"], "failed", "{settled}");
    let gid = Uuid::parse_str(&id).unwrap();
    let orders: i64 = sqlx::query_scalar("select count(*) from customer_order where group_buy_id = $1")
        .bind(gid)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(orders, 0, "no order at all below the minimum");
    let moved: Vec<(String, i32)> = sqlx::query_as(
        "select reason, delta from stock_movement where group_buy_id = $1 order by stock_movement_id",
    )
    .bind(gid)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        moved,
        [
            ("group_buy_allocated".to_string(), -50),
            ("group_buy_returned".to_string(), 50)
        ]
    );
    // The room hears the end; the participant hears it privately. Two
    // relays carry them (the room's outbox, the notices), so they may come
    // in either order: wait for both, skipping neither.
    let (mut ended, mut notice) = (None, None);
    while ended.is_none() || notice.is_none() {
        let frame = room
            .until("the end and the notice", Duration::from_secs(10), |f| {
                f["type"] == "group_buy.ended" || f["type"] == "notice"
            })
            .await;
        if frame["type"] == "notice" {
            notice = Some(frame);
        } else {
            ended = Some(frame);
        }
    }
    let (ended, notice) = (ended.unwrap(), notice.unwrap());
    assert_eq!(ended["data"]["outcome"], "failed", "{ended}");
    assert_eq!(notice["kind"], "group_buy.failed", "{notice}");
    assert_eq!(notice["data"]["reason"], "min_not_reached", "{notice}");
    // A join after the end is refused.
    let (status, body) = join(&app, "p-9", &id, "k", json!({"quantity": 1})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("group_buy_ended")),
        "{body}"
    );
}

#[tokio::test]
async fn joins_are_idempotent_by_key_capped_for_buyers_only_and_invites_are_counted() {
    let app = spawn_app().await;
    let (agency, session) = session_with_lineup(&app).await;
    let group_buy = open(
        &app,
        agency,
        session,
        json!({"link_number": 1, "tiers": [{"min_participants": 1, "price_minor": 900},
                                           {"min_participants": 2, "price_minor": 800}],
               "min_participants": 2, "duration_secs": 600, "per_buyer_cap": 2, "stock": 3}),
    )
    .await;
    let id = group_buy["group_buy_id"].as_str().unwrap().to_string();
    assert_eq!(
        (
            group_buy["tier_index"].as_i64(),
            group_buy["price_minor"].as_i64()
        ),
        (Some(0), Some(900))
    );
    let mut room = join_room(app.addr, session, &app.token("watcher", Role::Viewer)).await;

    let (status, first) = join(&app, "ann", &id, "k1", json!({"quantity": 1})).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(
        (first["units"].as_i64(), first["participants"].as_i64()),
        (Some(1), Some(1))
    );
    let (status, again) = join(&app, "ann", &id, "k1", json!({"quantity": 1})).await;
    assert_eq!(
        (status, again["replayed"].as_bool()),
        (200, Some(true)),
        "{again}"
    );
    let (status, other) = join(&app, "ann", &id, "k1", json!({"quantity": 2})).await;
    assert_eq!(
        (status, other["error"].as_str()),
        (409, Some("idempotency_key_reused")),
        "{other}"
    );
    let (status, over) = join(&app, "ann", &id, "k2", json!({"quantity": 2})).await;
    assert_eq!(
        (status, over["error"].as_str()),
        (409, Some("cap_exceeded")),
        "{over}"
    );

    // Bob comes through Ann's invite; the second tier unlocks.
    let code = first["invite_code"].as_str().unwrap();
    let (status, bob) = join(&app, "bob", &id, "k", json!({"quantity": 2, "invite": code})).await;
    assert_eq!(status, 201, "{bob}");
    assert_eq!(
        (bob["participants"].as_i64(), bob["price_minor"].as_i64()),
        (Some(2), Some(800))
    );
    let (status, view) = app
        .send(
            Method::GET,
            &format!("/v1/group-buys/{id}"),
            &app.token("ann", Role::Viewer),
            None,
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["you"]["invited"], 1, "{view}");
    assert_eq!(
        view["invited"], 1,
        "the group buy counts joins through invites: {view}"
    );
    assert_eq!(view["you"]["units"], 1, "{view}");
    let progress = room
        .until("progress at 2 participants", Duration::from_secs(10), |f| {
            f["type"] == "group_buy.progress" && f["data"]["participants"] == 2
        })
        .await;
    assert_eq!(progress["data"]["tier_index"], 1, "{progress}");
    assert_eq!(progress["data"]["next_tier"], Value::Null, "{progress}");

    // Sold out: 3 of 3 units joined.
    let (status, body) = join(&app, "cid", &id, "k", json!({"quantity": 1})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("sold_out")),
        "{body}"
    );
    // Who may not join, and bad requests.
    let (status, _) = join_on(
        &app.http,
        app.addr,
        &app.agency_token(agency),
        &id,
        "k",
        json!({"quantity": 1}),
    )
    .await;
    assert_eq!(status, 403);
    for bad in [
        json!({"quantity": 0}),
        json!({"quantity": 101}),
        json!({"quantity": 1, "invite": "ZZ"}),
    ] {
        let (status, body) = join(&app, "dan", &id, "k", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = app
        .send(
            Method::POST,
            &format!("/v1/sessions/{session}/group-buys"),
            &app.agency_token(agency),
            Some(
                json!({"link_number": 1, "tiers": [{"min_participants": 1, "price_minor": 900},
                                                    {"min_participants": 5, "price_minor": 950}],
                        "min_participants": 2, "duration_secs": 600, "per_buyer_cap": 2, "stock": 3}),
            ),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_tiers")),
        "{body}"
    );

    // It succeeds at the final tier: Ann pays 800 too, though she joined at 900.
    end_now(&app, &id).await;
    let settled = settled(&app, &id, Duration::from_secs(30)).await;
    assert_eq!(
        (settled["status"].as_str(), settled["final_price_minor"].as_i64()),
        (Some("succeeded"), Some(800))
    );
    let orders: Vec<(String, i64)> = sqlx::query_as(
        "select buyer_id, amount_minor from customer_order where group_buy_id = $1 order by buyer_id",
    )
    .bind(Uuid::parse_str(&id).unwrap())
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(orders, [("ann".to_string(), 800), ("bob".to_string(), 1600)]);
}

#[tokio::test]
async fn the_host_cancels_a_running_group_buy_and_a_viewer_cannot() {
    let app = spawn_app().await;
    let (agency, session) = session_with_lineup(&app).await;
    let group_buy = open(
        &app,
        agency,
        session,
        json!({"link_number": 1, "tiers": tiers(), "min_participants": 1, "duration_secs": 600,
               "per_buyer_cap": 1, "stock": 10}),
    )
    .await;
    let id = group_buy["group_buy_id"].as_str().unwrap().to_string();
    let (status, _) = join(&app, "ann", &id, "k", json!({"quantity": 1})).await;
    assert_eq!(status, 201);
    let path = format!("/v1/group-buys/{id}/cancel");
    let (status, _) = app
        .send(
            Method::POST,
            &path,
            &app.token("ann", Role::Viewer),
            Some(json!({"reason": "mine"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = app
        .send(
            Method::POST,
            &path,
            &app.agency_token(agency),
            Some(json!({"reason": "wrong item"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["cancel_reason"].as_str()),
        (Some("cancelled"), Some("wrong item"))
    );
    let (status, body) = app
        .send(
            Method::POST,
            &path,
            &app.agency_token(agency),
            Some(json!({"reason": "again"})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("group_buy_ended")),
        "{body}"
    );
    let orders: i64 = sqlx::query_scalar("select count(*) from customer_order where group_buy_id = $1")
        .bind(Uuid::parse_str(&id).unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(orders, 0);
}

#[tokio::test]
async fn a_viewer_joins_over_the_socket_with_the_http_rules_and_only_in_its_room() {
    let app = spawn_app().await;
    let (agency, session) = session_with_lineup(&app).await;
    let group_buy = open(
        &app,
        agency,
        session,
        json!({"link_number": 1, "tiers": tiers(), "min_participants": 1, "duration_secs": 600,
               "per_buyer_cap": 2, "stock": 10}),
    )
    .await;
    let id = group_buy["group_buy_id"].as_str().unwrap();
    let mut viewer = connect(app.addr, session, &app.token("sam", Role::Viewer), None).await;
    let welcome = viewer.expect("welcome").await;
    assert_eq!(
        welcome["state"][format!("group_buy:{id}")]["status"],
        "running",
        "{welcome}"
    );
    let ack = viewer
        .call(
            "group_buy.join",
            json!({"group_buy_id": id, "idempotency_key": "s1", "quantity": 2}),
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(
        (
            ack["data"]["joined"]["units"].as_i64(),
            ack["data"]["joined"]["replayed"].as_bool()
        ),
        (Some(2), Some(false))
    );
    let again = viewer
        .call(
            "group_buy.join",
            json!({"group_buy_id": id, "idempotency_key": "s1", "quantity": 2}),
        )
        .await;
    assert_eq!(again["data"]["joined"]["replayed"], true, "{again}");
    let over = viewer
        .call(
            "group_buy.join",
            json!({"group_buy_id": id, "idempotency_key": "s2"}),
        )
        .await;
    assert_eq!(over["code"], "cap_exceeded", "{over}");
    let mut host = join_room(app.addr, session, &app.agency_token(agency)).await;
    let refused = host
        .call(
            "group_buy.join",
            json!({"group_buy_id": id, "idempotency_key": "h"}),
        )
        .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    // From another session's room.
    let (_, elsewhere) = session_with_lineup(&app).await;
    let mut other = join_room(app.addr, elsewhere, &app.token("sam", Role::Viewer)).await;
    let wrong = other
        .call(
            "group_buy.join",
            json!({"group_buy_id": id, "idempotency_key": "s3", "quantity": 1}),
        )
        .await;
    assert_eq!(wrong["code"], "wrong_room", "{wrong}");
}
