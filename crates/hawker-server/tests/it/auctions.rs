//! Live auctions against real Postgres and Redis: the last-10-seconds storm
//! of 5,000 bidders over two nodes (checked against an offline replay of the
//! public bid log), sudden death under a burst, a node killed mid-auction,
//! the second-chance offer, and the refusals (the host's side, too low).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hawker_core::{Role, TokenKeys};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::support::fixtures::{self, session_with_lineup};
use crate::support::process::{hawker, ServerProcess};
use crate::support::socket;
use crate::support::{
    answer, settings_with, spawn_app, spawn_app_with, test_database_url, two_nodes, NodeOptions, TestApp,
};

/// The increment table of the tests: +1.00 below 20.00, +2.00 below 50.00, +5.00 above.
fn increments() -> Value {
    json!([{"below_minor": 2000, "step_minor": 100}, {"below_minor": 5000, "step_minor": 200}, {"step_minor": 500}])
}

async fn start_auction(app: &TestApp, agency: Uuid, session: Uuid, body: Value) -> Value {
    let (status, auction) = app
        .send(
            Method::POST,
            &format!("/v1/sessions/{session}/auctions"),
            &app.agency_token(agency),
            Some(body),
        )
        .await;
    assert_eq!(status, 201, "{auction}");
    auction
}

async fn bid_with(
    http: &reqwest::Client,
    addr: SocketAddr,
    token: &str,
    auction: &str,
    body: &Value,
) -> (u16, Value) {
    match http
        .post(format!("http://{addr}/v1/auctions/{auction}/bids"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
    {
        Ok(r) => answer(r).await,
        Err(e) => (0, json!({ "transport": format!("{e:?}") })),
    }
}

/// The whole public bid log (pages of 1,000).
async fn bid_log(http: &reqwest::Client, addr: SocketAddr, auction: &str) -> Value {
    let mut after = 0i64;
    let mut all: Vec<Value> = Vec::new();
    let mut log;
    loop {
        let r = http
            .get(format!(
                "http://{addr}/v1/auctions/{auction}/bids?after={after}&limit=1000"
            ))
            .send()
            .await
            .unwrap();
        let (status, page) = answer(r).await;
        assert_eq!(status, 200, "{page}");
        let bids = page["bids"].as_array().unwrap().clone();
        log = page;
        if bids.is_empty() {
            break;
        }
        after = bids.last().unwrap()["seq"].as_i64().unwrap();
        all.extend(bids);
    }
    log["bids"] = Value::Array(all);
    log
}

/// Waits until the auction is over; returns it as the host side sees it.
async fn wait_over(app: &TestApp, agency: Uuid, auction: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, a) = app
            .send(
                Method::GET,
                &format!("/v1/auctions/{auction}"),
                &app.agency_token(agency),
                None,
            )
            .await;
        assert_eq!(status, 200, "{a}");
        if a["status"] != "running" {
            return a;
        }
        assert!(Instant::now() < deadline, "the auction did not end in time: {a}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ts(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

// ------------------------------------------------------------- offline replay

/// The step at `price` by the published table.
fn step(increments: &[Value], price: i64) -> i64 {
    for line in increments {
        match line["below_minor"].as_i64() {
            Some(below) if price >= below => continue,
            _ => return line["step_minor"].as_i64().unwrap(),
        }
    }
    unreachable!("the last line is open")
}

/// What a replay of the bid log gives: the leader (name), the final price,
/// and the checks each bid passes on the way.
struct Replayed {
    leader: String,
    price: i64,
    bids: usize,
}

/// Replays the published log with the documented rules (written here again,
/// independently of the server's), checking at every bid that it was at
/// least the minimum acceptable bid and above the price it met, that the
/// server's recorded price and leader match, and that every extension was
/// caused by a bid inside the window (and every bid inside it extended).
fn replay(log: &Value) -> Replayed {
    let increments = log["increments"].as_array().unwrap();
    let start = log["start_price_minor"].as_i64().unwrap();
    let reserve = log["reserve_minor"].as_i64();
    let window = log["snipe_window_secs"].as_i64().map(chrono::Duration::seconds);
    let mut end = ts(&log["scheduled_end"]);
    let mut leader: Option<(String, i64, i64)> = None;
    let bump = |price: i64, max: i64| match reserve {
        Some(r) if price < r && max >= r => r,
        _ => price,
    };
    let bids = log["bids"].as_array().unwrap();
    for (i, b) in bids.iter().enumerate() {
        assert_eq!(
            b["seq"].as_i64().unwrap(),
            i as i64 + 1,
            "one gapless global order"
        );
        let who = b["bidder"].as_str().unwrap().to_string();
        let exact = b["exact"].as_bool().unwrap();
        let amount = b["amount_minor"].as_i64().unwrap();
        let max = b["max_minor"].as_i64().expect("maxima are published once over");
        let min = match &leader {
            None => start,
            Some((_, p, _)) => p + step(increments, *p),
        };
        assert_eq!(b["min_minor"].as_i64().unwrap(), min, "bid {i}: the minimum then");
        assert!(amount >= min, "bid {i}: accepted below the minimum");
        if let Some((_, price, _)) = &leader {
            assert!(amount > *price, "bid {i}: accepted at or below the price it met");
        }
        let at = ts(&b["accepted_at"]);
        assert!(at < end, "bid {i} accepted after the end {end}");
        match window {
            Some(w) if at > end - w => {
                assert!(
                    b["extended_to"].is_string(),
                    "bid {i} in the window did not extend the end: {b}"
                );
                let to = ts(&b["extended_to"]);
                assert_eq!(to, at + w, "bid {i}: the extension is the window after it");
                end = to;
            }
            _ => assert!(
                b["extended_to"].is_null(),
                "bid {i}: an extension without a bid in the window"
            ),
        }
        leader = Some(match leader.take() {
            None => (who, bump(amount, max), max),
            Some((l, price, lmax)) if l == who => {
                assert!(max > lmax, "bid {i}: the leader's bid raises the maximum");
                let price = if exact { amount.max(price) } else { price };
                (l, bump(price, max), max)
            }
            Some((_, _, lmax)) if max > lmax => {
                let price = amount.max((lmax + step(increments, lmax)).min(max));
                (who, bump(price, max), max)
            }
            Some((l, _, lmax)) => {
                let price = amount.max((max + step(increments, max)).min(lmax));
                (l, bump(price, lmax), lmax)
            }
        });
        let (l, price, _) = leader.as_ref().unwrap();
        assert_eq!(
            b["price_after"].as_i64().unwrap(),
            *price,
            "bid {i}: the price after it"
        );
        assert_eq!(
            b["leader_after"].as_str().unwrap(),
            l,
            "bid {i}: the leader after it"
        );
    }
    assert_eq!(ts(&log["ends_at"]), end, "the end is the last extension's");
    let (leader, price, _) = leader.unwrap_or_default();
    Replayed {
        leader,
        price,
        bids: bids.len(),
    }
}

/// Orders of an auction.
async fn orders_of(db: &PgPool, auction: &str) -> Vec<(Uuid, String, i64, String)> {
    sqlx::query_as(
        "select order_id, buyer_id, unit_price_minor, status from customer_order where auction_id = $1 order by created_at",
    )
    .bind(Uuid::parse_str(auction).unwrap())
    .fetch_all(db)
    .await
    .unwrap()
}

/// A pseudonym as the server makes it, to find a user in the log.
fn pseudonym(auction: &str, user: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{auction}:{user}").as_bytes());
    format!("bidder-{}", &hex::encode(digest)[..12])
}

// ------------------------------------------------------------------ the tests

/// 5,000 bidders over two nodes in the last 10 seconds of an anti-snipe
/// auction (each bids once, exactly or with a maximum, at a uniformly
/// random moment, over HTTP with at most 64 requests in flight).
#[tokio::test]
async fn five_thousand_bidders_in_the_last_ten_seconds_over_two_nodes_give_one_winner_the_replayed_price() {
    let _storm = crate::support::storm::exclusive().await;
    let (a, b, agency, session) =
        two_nodes(NodeOptions::default().http_timeout(Duration::from_secs(30))).await;
    fixtures::lineup(&a, agency, session).await;
    let auction = start_auction(
        &a,
        agency,
        session,
        json!({"link_number": 1, "start_price_minor": 1000, "increments": increments(), "duration_secs": 14,
               "mode": "anti_snipe", "snipe_window_secs": 3}),
    )
    .await;
    let id = auction["auction_id"].as_str().unwrap().to_string();
    let starts = Instant::now();
    let nodes = [a.addr, b.addr];
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let gate = Arc::new(Semaphore::new(64));
    // What bidders know of the minimum acceptable bid: what the answers told
    // them (as the room's events would), so often stale under the storm.
    let known = Arc::new(AtomicI64::new(1000));
    let bidders = 5000usize;
    let mut tasks = Vec::with_capacity(bidders);
    for i in 0..bidders {
        let (http, gate, keys, id, known) = (
            http.clone(),
            gate.clone(),
            a.keys.clone(),
            id.clone(),
            known.clone(),
        );
        let node = nodes[i % 2];
        // From 4 s to 14 s after the start: the last 10 seconds.
        let at = Duration::from_millis(4000 + (i as u64 * 7919) % 10_000);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until((starts + at).into()).await;
            let user = format!("storm-{i}");
            let token = fixtures::token(&keys, &user, Role::Viewer);
            let _permit = gate.acquire().await.unwrap();
            let min = known.load(Ordering::Relaxed);
            let spread = (i as i64 * 104_729) % 2000;
            // Exact bids at or a little above the minimum, maximum bids a
            // few steps above it, and now and then both.
            let body = match i % 5 {
                0 | 1 => json!({"amount_minor": min + spread % 300}),
                2 | 3 => json!({"max_minor": min + spread}),
                _ => json!({"amount_minor": min, "max_minor": min + 2 * spread}),
            };
            let sent = Instant::now();
            let (mut status, mut answer) = bid_with(&http, node, &token, &id, &body).await;
            // A keep-alive connection the server closed as the request went
            // out: the bid is sent again, as a client would (a second bid of
            // the same bidder is refused or is a new bid; the replay below
            // holds either way).
            let mut unanswered = 0usize;
            for _ in 0..3 {
                if status != 0 {
                    break;
                }
                unanswered += 1;
                eprintln!("bid not answered ({answer}); sent again");
                tokio::time::sleep(Duration::from_millis(50)).await;
                (status, answer) = bid_with(&http, node, &token, &id, &body).await;
            }
            let learnt = match status {
                201 => answer["min_bid_minor"].as_i64(),
                _ => answer["message"]
                    .as_str()
                    .and_then(|m| m.split_whitespace().find_map(|w| w.parse::<i64>().ok())),
            };
            if let Some(m) = learnt {
                known.fetch_max(m, Ordering::Relaxed);
            }
            (user, status, answer, sent.elapsed(), unanswered)
        }));
    }
    let mut accepted: Vec<(String, i64)> = Vec::new();
    let mut refusals = std::collections::BTreeMap::<String, usize>::new();
    let mut latencies = Vec::new();
    let mut unanswered = 0;
    for t in tasks {
        let (user, status, answer, took, lost) = t.await.unwrap();
        latencies.push(took);
        unanswered += lost;
        match status {
            201 => accepted.push((user, answer["seq"].as_i64().unwrap())),
            409 | 503 => {
                *refusals
                    .entry(answer["error"].as_str().unwrap_or("?").to_string())
                    .or_default() += 1
            }
            other => panic!("bid answered {other}: {answer}"),
        }
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "storm: {} accepted, refusals {refusals:?}, p99 {p99:?}, storm took {:?}",
        accepted.len(),
        starts.elapsed()
    );
    assert!(
        accepted.len() > 100,
        "a storm accepts many bids: {}",
        accepted.len()
    );

    let over = wait_over(&a, agency, &id, Duration::from_secs(30)).await;
    assert_eq!(over["outcome"], "sold", "{over}");
    let log = bid_log(&http, b.addr, &id).await;
    let replayed = replay(&log);
    // Every bid answered 201 is in the log, at the seq it was told, and
    // nothing else is (but for a bid whose answer never came, sent again).
    assert!(
        (accepted.len()..=accepted.len() + unanswered).contains(&replayed.bids),
        "the log holds exactly the accepted bids: {} in the log, {} accepted, {unanswered} unanswered",
        replayed.bids,
        accepted.len()
    );
    let seqs: HashSet<i64> = accepted.iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs.len(), accepted.len(), "no seq was given twice");
    for (user, seq) in &accepted {
        let line = &log["bids"][(*seq - 1) as usize];
        assert_eq!(
            line["bidder"],
            pseudonym(&id, user),
            "seq {seq} is the bid it was answered for"
        );
    }
    assert_eq!(
        over["hammer_minor"].as_i64(),
        Some(replayed.price),
        "hammer = replay"
    );
    let winner = over["winner_id"].as_str().unwrap();
    assert_eq!(
        pseudonym(&id, winner),
        replayed.leader,
        "the winner is the replay's leader"
    );
    let orders = orders_of(&a.db, &id).await;
    assert_eq!(orders.len(), 1, "exactly one order: {orders:?}");
    assert_eq!((orders[0].1.as_str(), orders[0].2), (winner, replayed.price));
}

/// Sudden death: a burst across the end; nothing is accepted at or after
/// the clock's end, the end never moves, and the auction ends on time.
#[tokio::test]
async fn sudden_death_ends_at_the_clock_under_a_burst() {
    let app = spawn_app().await;
    let (agency, session) = session_with_lineup(&app).await;
    let auction = start_auction(
        &app,
        agency,
        session,
        json!({"link_number": 1, "start_price_minor": 500, "increments": [{"step_minor": 10}], "duration_secs": 5,
               "mode": "sudden_death"}),
    )
    .await;
    let id = auction["auction_id"].as_str().unwrap().to_string();
    let ends_at = ts(&auction["ends_at"]);
    let starts = Instant::now();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let gate = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::new();
    // 1,500 bids from 3 s to 7 s after the start: across the end at 5 s.
    for i in 0..1500u64 {
        let (http, gate, keys, id, addr) =
            (http.clone(), gate.clone(), app.keys.clone(), id.clone(), app.addr);
        let at = Duration::from_millis(3000 + (i * 7919) % 4000);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until((starts + at).into()).await;
            let token = fixtures::token(&keys, &format!("sd-{i}"), Role::Viewer);
            let _permit = gate.acquire().await.unwrap();
            bid_with(
                &http,
                addr,
                &token,
                &id,
                &json!({"max_minor": 500 + i as i64 * 10}),
            )
            .await
        }));
    }
    let mut ended_refusals = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            201 => assert!(ts(&body["accepted_at"]) < ends_at, "{body}"),
            409 if body["error"] == "auction_ended" => ended_refusals += 1,
            409 => assert!(
                ["bid_too_low", "already_leading"].contains(&body["error"].as_str().unwrap()),
                "{body}"
            ),
            other => panic!("{other}: {body}"),
        }
    }
    assert!(ended_refusals > 0, "bids after the end were refused as late");
    let over = wait_over(&app, agency, &id, Duration::from_secs(10)).await;
    assert_eq!(ts(&over["ends_at"]), ends_at, "sudden death never extends");
    let ended_at = ts(&over["ended_at"]);
    assert!(
        ended_at >= ends_at && ended_at - ends_at < chrono::Duration::milliseconds(1500),
        "ended at {ended_at}, due {ends_at}"
    );
    let log = bid_log(&http, app.addr, &id).await;
    let replayed = replay(&log);
    for b in log["bids"].as_array().unwrap() {
        assert!(ts(&b["accepted_at"]) < ends_at, "{b}");
    }
    assert_eq!(over["hammer_minor"].as_i64(), Some(replayed.price));
    assert_eq!(orders_of(&app.db, &id).await.len(), 1);
}

/// A real node killed (SIGKILL) mid-auction: the other node goes on taking
/// bids and ends it; every bid either node answered 201 is in the log; the
/// outcome is the log's replay, with one order.
#[tokio::test]
async fn a_node_killed_mid_auction_changes_nothing_about_the_outcome() {
    let db = test_database_url();
    // The fixture creates the world, then stops: the two processes are the nodes.
    let mut fixture = spawn_app_with(settings_with(&[("HAWKER__DATABASE__URL", db.as_str())])).await;
    let (agency, session) = session_with_lineup(&fixture).await;
    let keys: TokenKeys = fixture.keys.clone();
    fixture.stop().await.unwrap();
    let pool = PgPool::connect(&db).await.unwrap();
    let start = |_: usize| {
        let mut command = hawker(&["serve"], &db);
        command.stderr(Stdio::null());
        ServerProcess::start(&mut command).0
    };
    let mut nodes = [start(0), start(1)];
    let addrs = [nodes[0].addr, nodes[1].addr];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let agency_token = fixtures::agency_token(&keys, agency);
    let created = http
        .post(format!("http://{}/v1/sessions/{session}/auctions", addrs[0]))
        .bearer_auth(&agency_token)
        .json(&json!({"link_number": 1, "start_price_minor": 1000, "increments": increments(), "duration_secs": 6,
                      "mode": "anti_snipe", "snipe_window_secs": 2}))
        .send()
        .await
        .unwrap();
    let (status, auction) = answer(created).await;
    assert_eq!(status, 201, "{auction}");
    let id = auction["auction_id"].as_str().unwrap().to_string();

    let mut accepted = Vec::new();
    // Three rounds of 20 bidders on both nodes, node 0 killed after the first.
    for round in 0..3 {
        if round == 1 {
            nodes[0].kill();
        }
        let mut tasks = Vec::new();
        for i in 0..20 {
            let node = if round == 0 { addrs[i % 2] } else { addrs[1] };
            let token = fixtures::token(&keys, &format!("k-{round}-{i}"), Role::Viewer);
            let body = json!({"max_minor": 1000 + round as i64 * 3000 + i as i64 * 137});
            let (http, id) = (http.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                bid_with(&http, node, &token, &id, &body).await
            }));
        }
        for t in tasks {
            let (status, body) = t.await.unwrap();
            // 201 is in the log; 409 is a refusal; a lost connection (0)
            // or a 503 leaves the outcome to the log (api.md).
            match status {
                201 => accepted.push(body["seq"].as_i64().unwrap()),
                0 | 409 | 503 => {}
                other => panic!("round {round}: a bid answered {other}: {body}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    assert!(!accepted.is_empty(), "no bid was accepted");
    // Node 1 alone ends it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let over = loop {
        let seen = match http
            .get(format!("http://{}/v1/auctions/{id}", addrs[1]))
            .bearer_auth(&agency_token)
            .send()
            .await
        {
            Ok(r) => answer(r).await.1,
            Err(e) => json!({ "transport": format!("{e:?}") }),
        };
        if seen["status"].is_string() && seen["status"] != "running" {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "node 1 did not end the auction within 20 s: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(over["outcome"], "sold", "{over}");
    let log = bid_log(&http, addrs[1], &id).await;
    let replayed = replay(&log);
    let logged: HashSet<i64> = (1..=replayed.bids as i64).collect();
    for seq in &accepted {
        assert!(logged.contains(seq), "an answered bid ({seq}) is in the log");
    }
    assert_eq!(
        over["hammer_minor"].as_i64(),
        Some(replayed.price),
        "the hammer price is the replay's: {over}"
    );
    assert_eq!(
        pseudonym(&id, over["winner_id"].as_str().unwrap()),
        replayed.leader
    );
    let orders = orders_of(&pool, &id).await;
    assert_eq!(
        orders.len(),
        1,
        "the auction's orders: {orders:?}; the auction: {over}"
    );
}

/// The winner lets their order lapse; the host offers the unit to the
/// runner-up at their last bid, which creates their order, once.
#[tokio::test]
async fn an_unpaid_winner_leads_to_a_second_chance_order_for_the_runner_up() {
    let app = spawn_app().await;
    let (agency, session) = session_with_lineup(&app).await;
    let auction = start_auction(
        &app,
        agency,
        session,
        json!({"link_number": 1, "start_price_minor": 1000, "increments": increments(), "duration_secs": 5,
               "mode": "sudden_death"}),
    )
    .await;
    let id = auction["auction_id"].as_str().unwrap().to_string();
    let app = &app;
    let bid = |user: &str, body: Value| {
        let token = app.token(user, Role::Viewer);
        let id = id.clone();
        async move {
            app.send(
                Method::POST,
                &format!("/v1/auctions/{id}/bids"),
                &token,
                Some(body),
            )
            .await
        }
    };
    let (s, first) = bid("runner-up", json!({"max_minor": 2500})).await;
    assert_eq!(s, 201, "{first}");
    let (s, second) = bid("winner", json!({"max_minor": 4000})).await;
    assert_eq!(s, 201, "{second}");
    assert_eq!(second["price_minor"], 2700);
    // Too early: no winner yet.
    let host = app.agency_token(agency);
    let (s, body) = app
        .send(
            Method::POST,
            &format!("/v1/auctions/{id}/second-chance"),
            &host,
            None,
        )
        .await;
    assert_eq!((s, body["error"].as_str()), (409, Some("no_winner")), "{body}");
    let over = wait_over(app, agency, &id, Duration::from_secs(10)).await;
    assert_eq!(
        (over["outcome"].as_str(), over["hammer_minor"].as_i64()),
        (Some("sold"), Some(2700))
    );
    let orders = orders_of(&app.db, &id).await;
    assert_eq!(orders.len(), 1);
    assert_eq!((orders[0].1.as_str(), orders[0].2), ("winner", 2700));
    // While the winner's order is open, no offer.
    let (s, body) = app
        .send(
            Method::POST,
            &format!("/v1/auctions/{id}/second-chance"),
            &host,
            None,
        )
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (409, Some("winner_order_open")),
        "{body}"
    );
    // The payment window passes: the order expires (commerce's scheduler).
    sqlx::query("update customer_order set expires_at = now() - interval '1 second' where order_id = $1")
        .bind(orders[0].0)
        .execute(&app.db)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while orders_of(&app.db, &id).await[0].3 == "pending_payment" {
        assert!(Instant::now() < deadline, "the order expires");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Only the host side offers.
    let (s, _) = app
        .send(
            Method::POST,
            &format!("/v1/auctions/{id}/second-chance"),
            &app.token("winner", Role::Viewer),
            None,
        )
        .await;
    assert_eq!(s, 403);
    let (s, offer) = app
        .send(
            Method::POST,
            &format!("/v1/auctions/{id}/second-chance"),
            &host,
            None,
        )
        .await;
    assert_eq!(s, 201, "{offer}");
    assert_eq!(
        (offer["bidder_id"].as_str(), offer["amount_minor"].as_i64()),
        (Some("runner-up"), Some(2500))
    );
    let orders = orders_of(&app.db, &id).await;
    assert_eq!(orders.len(), 2, "{orders:?}");
    assert_eq!(
        (orders[1].1.as_str(), orders[1].2, orders[1].3.as_str()),
        ("runner-up", 2500, "pending_payment")
    );
    assert_eq!(orders[1].0.to_string(), offer["order_id"].as_str().unwrap());
    // Once.
    let (s, body) = app
        .send(
            Method::POST,
            &format!("/v1/auctions/{id}/second-chance"),
            &host,
            None,
        )
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (409, Some("second_chance_made")),
        "{body}"
    );
}

/// The host's side cannot bid (HTTP 403, socket `forbidden`); a bid below
/// the minimum is refused with `bid_too_low` naming the minimum; the room
/// sees `auction.started`, `auction.bid` and `auction.ended`, and the
/// outbid viewer gets a private notice.
#[tokio::test]
async fn the_host_cannot_bid_and_a_low_bid_is_told_the_minimum_and_the_room_follows() {
    let app = spawn_app().await;
    let (agency, session) = session_with_lineup(&app).await;
    let mut room = socket::join(app.addr, session, &app.token("watcher", Role::Viewer)).await;
    let mut outbid = socket::join(app.addr, session, &app.token("early", Role::Viewer)).await;
    let auction = start_auction(
        &app,
        agency,
        session,
        json!({"link_number": 1, "start_price_minor": 1000, "increments": increments(), "duration_secs": 5,
               "mode": "anti_snipe", "snipe_window_secs": 2, "reserve_minor": 1500}),
    )
    .await;
    let id = auction["auction_id"].as_str().unwrap().to_string();
    assert!(
        auction.get("reserve_minor").is_some(),
        "the host side sees the reserve: {auction}"
    );
    let started = room
        .until("auction.started", Duration::from_secs(5), |f| {
            f["type"] == "auction.started"
        })
        .await;
    assert_eq!(started["data"]["auction_id"], id.as_str());
    assert_eq!(started["data"]["min_bid_minor"], 1000);

    let path = format!("/v1/auctions/{id}/bids");
    let brand: Uuid = sqlx::query_scalar(
        "select p.brand_id from lineup_item l join sku s using (sku_id) join product p using (product_id)
          where l.session_id = $1",
    )
    .bind(session)
    .fetch_one(&app.db)
    .await
    .unwrap();
    for token in [
        app.agency_token(agency),
        app.token("admin", Role::Admin),
        app.token("h", Role::Host),
        app.brand_token(brand),
    ] {
        let (s, body) = app
            .send(Method::POST, &path, &token, Some(json!({"amount_minor": 5000})))
            .await;
        assert_eq!(s, 403, "{body}");
    }
    let mut host_socket = socket::join(app.addr, session, &app.agency_token(agency)).await;
    let refused = host_socket
        .call("auction.bid", json!({"auction_id": id, "amount_minor": 5000}))
        .await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "forbidden", "{refused}");

    let early = outbid
        .call("auction.bid", json!({"auction_id": id, "amount_minor": 1000}))
        .await;
    assert_eq!(early["type"], "ack", "{early}");
    let (s, low) = app
        .send(
            Method::POST,
            &path,
            &app.token("late", Role::Viewer),
            Some(json!({"amount_minor": 1050})),
        )
        .await;
    assert_eq!((s, low["error"].as_str()), (409, Some("bid_too_low")), "{low}");
    assert!(low["message"].as_str().unwrap().contains("1100"), "{low}");
    let (s, body) = app
        .send(
            Method::POST,
            &path,
            &app.token("late", Role::Viewer),
            Some(json!({"max_minor": 1800})),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(
        (body["leading"].as_bool(), body["price_minor"].as_i64()),
        (Some(true), Some(1500)),
        "reserve met"
    );

    let notice = outbid
        .until("notice", Duration::from_secs(5), |f| f["type"] == "notice")
        .await;
    assert_eq!(notice["kind"], "auction.outbid", "{notice}");
    assert_eq!(notice["data"]["auction_id"], id.as_str());
    let shown = room
        .until("auction.bid", Duration::from_secs(5), |f| {
            f["type"] == "auction.bid" && f["data"]["bids"] == 2
        })
        .await;
    assert_eq!(shown["data"]["price_minor"], 1500);
    assert_eq!(shown["data"]["leader_name"], pseudonym(&id, "late"));
    assert!(shown["data"]["ends_at"].is_string());
    let ended = room
        .until("auction.ended", Duration::from_secs(15), |f| {
            f["type"] == "auction.ended"
        })
        .await;
    assert_eq!(ended["data"]["outcome"], "sold");
    assert_eq!(ended["data"]["hammer_minor"], 1500);
    assert_eq!(ended["data"]["winner_name"], pseudonym(&id, "late"));
    // Late: refused as ended.
    let (s, body) = app
        .send(
            Method::POST,
            &path,
            &app.token("later", Role::Viewer),
            Some(json!({"max_minor": 90000})),
        )
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (409, Some("auction_ended")),
        "{body}"
    );
}

/// No bids: no sale, the unit goes back; a void records its reason and the
/// unit goes back; a reserve below the campaign's floor is refused, and
/// without a reserve the floor is the reserve.
#[tokio::test]
async fn no_sale_and_void_give_the_unit_back_and_the_floor_is_the_least_reserve() {
    let app = spawn_app().await;
    let (agency, session) = session_with_lineup(&app).await;
    let sku: Uuid = sqlx::query_scalar("select sku_id from lineup_item where session_id = $1")
        .bind(session)
        .fetch_one(&app.db)
        .await
        .unwrap();
    let on_hand = || async {
        sqlx::query_scalar::<_, i32>("select stock_on_hand from sku where sku_id = $1")
            .bind(sku)
            .fetch_one(&app.db)
            .await
            .unwrap()
    };
    let before = on_hand().await;
    // The campaign holds its floor (3000) from now on.
    sqlx::query("update campaign set allow_below_floor = false where campaign_id in (select campaign_id from campaign_sku where sku_id = $1)")
        .bind(sku)
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("update campaign_sku set floor_price_minor = 3000 where sku_id = $1")
        .bind(sku)
        .execute(&app.db)
        .await
        .unwrap();
    let body = |extra: Value| {
        let mut b = json!({"link_number": 1, "start_price_minor": 1000, "increments": increments(), "duration_secs": 5,
                           "mode": "sudden_death"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let (s, refused) = app
        .send(
            Method::POST,
            &format!("/v1/sessions/{session}/auctions"),
            &app.agency_token(agency),
            Some(body(json!({"reserve_minor": 2000}))),
        )
        .await;
    assert_eq!(
        (s, refused["error"].as_str()),
        (400, Some("price_below_floor")),
        "{refused}"
    );
    for bad in [
        json!({"duration_secs": 4}),
        json!({"increments": [{"below_minor": 10, "step_minor": 1}]}),
        json!({"mode": "sudden_death", "snipe_window_secs": 5}),
        json!({"quantity": 2}),
    ] {
        let (s, r) = app
            .send(
                Method::POST,
                &format!("/v1/sessions/{session}/auctions"),
                &app.agency_token(agency),
                Some(body(bad)),
            )
            .await;
        assert_eq!(s, 400, "{r}");
    }
    let auction = start_auction(&app, agency, session, body(json!({}))).await;
    assert_eq!(
        (
            auction["reserve_minor"].as_i64(),
            auction["reserve_is_floor"].as_bool()
        ),
        (Some(3000), Some(true))
    );
    assert_eq!(on_hand().await, before - 1, "the unit is taken at the start");
    let id = auction["auction_id"].as_str().unwrap().to_string();
    let (s, _) = app
        .send(
            Method::POST,
            &format!("/v1/auctions/{id}/bids"),
            &app.token("v", Role::Viewer),
            Some(json!({"max_minor": 2500})),
        )
        .await;
    assert_eq!(s, 201);
    let over = wait_over(&app, agency, &id, Duration::from_secs(10)).await;
    assert_eq!(over["outcome"], "reserve_not_met", "{over}");
    assert!(orders_of(&app.db, &id).await.is_empty());
    assert_eq!(on_hand().await, before, "no sale: the unit is back");

    let auction = start_auction(&app, agency, session, body(json!({"duration_secs": 60}))).await;
    let id = auction["auction_id"].as_str().unwrap().to_string();
    let (s, _) = app
        .send(
            Method::POST,
            &format!("/v1/auctions/{id}/void"),
            &app.token("v", Role::Viewer),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, voided) = app
        .send(
            Method::POST,
            &format!("/v1/auctions/{id}/void"),
            &app.agency_token(agency),
            Some(json!({"reason": "wrong item"})),
        )
        .await;
    assert_eq!(s, 200, "{voided}");
    assert_eq!(
        (voided["status"].as_str(), voided["void_reason"].as_str()),
        (Some("voided"), Some("wrong item"))
    );
    assert_eq!(on_hand().await, before, "void: the unit is back");
    let (s, body) = app
        .send(
            Method::POST,
            &format!("/v1/auctions/{id}/bids"),
            &app.token("v", Role::Viewer),
            Some(json!({"max_minor": 9000})),
        )
        .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (409, Some("auction_ended")),
        "{body}"
    );
}

/// A buyer who let more than `live.at_risk_unpaid_wins` (here 1) auction
/// wins lapse unpaid cannot bid any more; another buyer still can. The node
/// that answers has not seen the buyer before (a node caches the answer for
/// 30 s).
#[tokio::test]
async fn a_buyer_with_unpaid_auction_wins_cannot_bid() {
    let (a, b, agency, session) =
        two_nodes(NodeOptions::default().env(&[("HAWKER__LIVE__AT_RISK_UNPAID_WINS", "1")])).await;
    fixtures::lineup(&a, agency, session).await;
    fixtures::lineup(&a, agency, session).await;
    let sudden = |link: i64| {
        json!({"link_number": link, "start_price_minor": 1000, "increments": increments(), "duration_secs": 5,
               "mode": "sudden_death"})
    };
    // Two auctions at once, both won by "flaky", who pays for neither.
    let mut won = Vec::new();
    for link in [1, 2] {
        let auction = start_auction(&a, agency, session, sudden(link)).await;
        let id = auction["auction_id"].as_str().unwrap().to_string();
        let (s, body) = a
            .send(
                Method::POST,
                &format!("/v1/auctions/{id}/bids"),
                &a.token("flaky", Role::Viewer),
                Some(json!({"amount_minor": 1000})),
            )
            .await;
        assert_eq!(s, 201, "{body}");
        won.push(id);
    }
    for id in &won {
        let over = wait_over(&a, agency, id, Duration::from_secs(15)).await;
        assert_eq!(over["outcome"], "sold", "{over}");
        sqlx::query(
            "update customer_order set expires_at = now() - interval '1 second' where auction_id = $1",
        )
        .bind(Uuid::parse_str(id).unwrap())
        .execute(&a.db)
        .await
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in &won {
        while orders_of(&a.db, id).await[0].3 != "cancelled" {
            assert!(Instant::now() < deadline, "the unpaid win lapses");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let auction = start_auction(&a, agency, session, sudden(1)).await;
    let id = auction["auction_id"].as_str().unwrap().to_string();
    let path = format!("/v1/auctions/{id}/bids");
    let (s, body) = b
        .send(
            Method::POST,
            &path,
            &b.token("flaky", Role::Viewer),
            Some(json!({"amount_minor": 1000})),
        )
        .await;
    assert_eq!((s, body["error"].as_str()), (403, Some("forbidden")), "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("unpaid auction wins"),
        "{body}"
    );
    let (s, body) = b
        .send(
            Method::POST,
            &path,
            &b.token("steady", Role::Viewer),
            Some(json!({"amount_minor": 1000})),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    // Over the socket too.
    let mut ws = socket::join(b.addr, session, &b.token("flaky", Role::Viewer)).await;
    let refused = ws
        .call("auction.bid", json!({"auction_id": id, "amount_minor": 5000}))
        .await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("forbidden")),
        "{refused}"
    );
}

/// When the winner's order cannot be made at the end (here the lineup item
/// was changed to sell another SKU meanwhile), the auction does not hang in
/// `running`: it is voided once, with the refusal as its reason, the room
/// is told, and its unit goes back to its SKU.
#[tokio::test]
async fn an_auction_whose_order_is_refused_is_voided_with_the_reason() {
    let app = spawn_app().await;
    let (agency, session) = session_with_lineup(&app).await;
    let mut room = socket::join(app.addr, session, &app.token("watcher", Role::Viewer)).await;
    let auction = start_auction(
        &app,
        agency,
        session,
        json!({"link_number": 1, "start_price_minor": 1000, "increments": increments(), "duration_secs": 5,
               "mode": "sudden_death"}),
    )
    .await;
    let id = auction["auction_id"].as_str().unwrap().to_string();
    let (s, body) = app
        .send(
            Method::POST,
            &format!("/v1/auctions/{id}/bids"),
            &app.token("keen", Role::Viewer),
            Some(json!({"amount_minor": 1000})),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let (sku, stock_before): (Uuid, i32) = sqlx::query_as(
        "select s.sku_id, s.stock_on_hand from auction a join sku s using (sku_id) where a.auction_id = $1",
    )
    .bind(Uuid::parse_str(&id).unwrap())
    .fetch_one(&app.db)
    .await
    .unwrap();
    let (_, other) = fixtures::insert_brand_with_sku(&app.db, 1999, 10).await;
    sqlx::query("update lineup_item set sku_id = $2 where session_id = $1")
        .bind(session)
        .bind(other)
        .execute(&app.db)
        .await
        .unwrap();
    let over = wait_over(&app, agency, &id, Duration::from_secs(15)).await;
    assert_eq!(over["status"], "voided", "{over}");
    assert!(
        over["void_reason"]
            .as_str()
            .unwrap()
            .starts_with("the winner's order could not be made"),
        "{over}"
    );
    assert!(orders_of(&app.db, &id).await.is_empty());
    let voided = room
        .until("auction.voided", Duration::from_secs(10), |f| {
            f["type"] == "auction.voided"
        })
        .await;
    assert_eq!(voided["data"]["auction_id"], id.as_str());
    let stock_after: i32 = sqlx::query_scalar("select stock_on_hand from sku where sku_id = $1")
        .bind(sku)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stock_after, stock_before + 1, "the unit went back");
    // Once: still voided, and no second event.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, again) = app
        .send(
            Method::GET,
            &format!("/v1/auctions/{id}"),
            &app.agency_token(agency),
            None,
        )
        .await;
    assert_eq!(again["status"], "voided");
}
