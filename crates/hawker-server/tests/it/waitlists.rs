//! Waitlists of sold-out deals against real Postgres and Redis, on two
//! nodes: units of expiring orders are offered in waitlist order, an ignored
//! offer passes after its hold, a unit is never offered to two viewers at
//! once, the offered buyer buys at the deal price while others get
//! `sold_out`, and the list survives a Redis flush and restart.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::join_all;
use hawker_core::Role;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::fixtures::{buy, create_deal, lineup};
use crate::support::socket::join;
use crate::support::{poll, two_nodes, NodeOptions, Patience, RedisServer, TestApp};

/// Two nodes on `redis`, short deals, a scheduler tick of 100 ms and
/// waitlist offers held `hold_secs`.
fn options(redis: &RedisServer, hold_secs: &str) -> NodeOptions {
    NodeOptions::default().redis(redis).env(&[
        ("HAWKER__COMMERCE__DEAL_MIN_SECS", "1"),
        ("HAWKER__COMMERCE__SCHEDULER_TICK_MS", "100"),
        ("HAWKER__COMMERCE__WAITLIST_HOLD_SECS", hold_secs),
    ])
}

/// A deal of `quantity` units at 5.00, `cap` per buyer, for ten minutes.
fn deal(quantity: i32, cap: i32) -> Value {
    json!({"link_number": 1, "price_minor": 500, "quantity": quantity, "per_buyer_cap": cap, "duration_secs": 600})
}

async fn waitlist(app: &TestApp, method: Method, viewer: &str, deal: &str) -> (u16, Value) {
    app.send(
        method,
        &format!("/v1/deals/{deal}/waitlist"),
        &app.token(viewer, Role::Viewer),
        None,
    )
    .await
}

/// Sells the deal out: buyer `b<i>` buys one unit each.
async fn sell_out(a: &TestApp, b: &TestApp, deal: &str, buyers: usize) {
    let answers = join_all((0..buyers).map(|i| {
        let app = if i % 2 == 0 { a } else { b };
        async move { buy(app, &format!("b{i:03}"), deal, "k", 1).await }
    }))
    .await;
    for (status, body) in answers {
        assert_eq!(status, 201, "{body}");
    }
}

/// The pending orders of the deal's buyers `b*` expire now.
async fn expire_orders(db: &sqlx::PgPool, deal: &str, buyers: &[&str]) {
    sqlx::query(
        "update customer_order set expires_at = now() - interval '1 second'
          where deal_id = $1 and buyer_id = any($2) and status = 'pending_payment'",
    )
    .bind(Uuid::parse_str(deal).unwrap())
    .bind(buyers)
    .execute(db)
    .await
    .unwrap();
}

/// (buyer, status, offer units) of every entry, in line order.
async fn entries(db: &sqlx::PgPool, deal: &str) -> Vec<(String, String, Option<i32>)> {
    sqlx::query_as(
        "select buyer_id, status, offer_units from waitlist_entry where deal_id = $1 order by waitlist_entry_id",
    )
    .bind(Uuid::parse_str(deal).unwrap())
    .fetch_all(db)
    .await
    .unwrap()
}

/// (sold, held, units under open offers) at one instant.
async fn figures(db: &sqlx::PgPool, deal: &str) -> (i32, i32, i64) {
    sqlx::query_as(
        "select sold, held, (select coalesce(sum(offer_units), 0) from waitlist_entry
                               where deal_id = d.deal_id and status = 'offered')
           from deal d where deal_id = $1",
    )
    .bind(Uuid::parse_str(deal).unwrap())
    .fetch_one(db)
    .await
    .unwrap()
}

fn offered(entries: &[(String, String, Option<i32>)]) -> Vec<String> {
    entries
        .iter()
        .filter(|(_, s, _)| s == "offered")
        .map(|(b, _, _)| b.clone())
        .collect()
}

#[tokio::test]
async fn units_from_50_expiring_orders_are_offered_in_waitlist_order_and_bought_at_the_deal_price() {
    let redis = RedisServer::start();
    let (a, b, agency, session) = two_nodes(options(&redis, "60")).await;
    lineup(&a, agency, session).await;
    let deal_id = create_deal(&a, agency, session, deal(50, 1)).await;
    let mut room = join(b.addr, session, &b.token("watcher", Role::Viewer)).await;

    // Not sold out yet: nobody may join.
    let (status, body) = waitlist(&a, Method::POST, "w000", &deal_id).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("not_sold_out")),
        "{body}"
    );

    sell_out(&a, &b, &deal_id, 50).await;
    // 60 viewers join, one after the other, alternating nodes.
    for i in 0..60 {
        let app = if i % 2 == 0 { &a } else { &b };
        let (status, place) = waitlist(app, Method::POST, &format!("w{i:03}"), &deal_id).await;
        assert_eq!(status, 201, "{place}");
        assert_eq!(place["position"], i + 1);
        assert_eq!(place["status"], "waiting");
    }
    // Joining again answers the same place.
    let (status, again) = waitlist(&b, Method::POST, "w007", &deal_id).await;
    assert_eq!(
        (status, again["replayed"].as_bool()),
        (200, Some(true)),
        "{again}"
    );
    assert_eq!(again["position"], 8);
    // The room sees only the count.
    let count = room
        .until("waitlist count of 60", Duration::from_secs(15), |f| {
            f["type"] == "deal.waitlist" && f["data"]["count"] == 60
        })
        .await;
    let mut keys: Vec<&String> = count["data"].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["count", "deal_id"]);
    let mut first = join(a.addr, session, &a.token("w000", Role::Viewer)).await;

    // The 50 orders expire: their units go to the list, first in line first.
    let buyers: Vec<String> = (0..50).map(|i| format!("b{i:03}")).collect();
    let refs: Vec<&str> = buyers.iter().map(String::as_str).collect();
    expire_orders(&a.db, &deal_id, &refs).await;
    let list = poll(
        Patience::For(Duration::from_secs(20)),
        Duration::from_millis(100),
        || entries(&a.db, &deal_id),
        |list| offered(list).len() == 50,
    )
    .await;
    let expected: Vec<String> = (0..50).map(|i| format!("w{i:03}")).collect();
    assert_eq!(offered(&list), expected, "offers go in waitlist order");
    assert!(list[50..].iter().all(|(_, s, _)| s == "waiting"));
    assert!(list.iter().all(|(_, s, u)| s != "offered" || *u == Some(1)));
    assert_eq!(figures(&a.db, &deal_id).await, (0, 50, 50));

    // The offer reaches its buyer privately, with its terms.
    let notice = first
        .until("waitlist.offer notice", Duration::from_secs(15), |f| {
            f["type"] == "notice" && f["kind"] == "waitlist.offer"
        })
        .await;
    assert_eq!(notice["data"]["units"], 1);
    assert_eq!(notice["data"]["price_minor"], 500);
    assert!(notice["data"]["expires_at"].is_string());
    let (_, place) = waitlist(&b, Method::GET, "w000", &deal_id).await;
    assert_eq!(place["status"], "offered");
    assert_eq!(place["offer"]["units"], 1);

    // Others still get sold_out: a new buyer, a waiting viewer, an earlier buyer.
    for who in ["newcomer", "w055", "b000"] {
        let (status, body) = buy(&a, who, &deal_id, "late", 1).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (409, Some("sold_out")),
            "{who}: {body}"
        );
    }
    // An offered buyer may not take more than offered.
    let (status, body) = buy(&a, "w001", &deal_id, "greedy", 2).await;
    assert_eq!(status, 409, "{body}");

    // The 50 offered buyers buy, on both nodes at once, at the deal price.
    let deal_ref = deal_id.as_str();
    let bought = join_all((0..50).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        async move { buy(app, &format!("w{i:03}"), deal_ref, "offer", 1).await }
    }))
    .await;
    for (status, order) in &bought {
        assert_eq!(*status, 201, "{order}");
        assert_eq!(order["amount_minor"], 500);
    }
    // A replay answers the same order; a second purchase is refused.
    let (status, replay) = buy(&b, "w000", &deal_id, "offer", 1).await;
    assert_eq!(status, 201);
    assert_eq!(replay["order_id"], bought[0].1["order_id"]);
    let (status, _) = buy(&b, "w000", &deal_id, "offer-again", 1).await;
    assert_eq!(status, 409);
    assert_eq!(figures(&a.db, &deal_id).await, (50, 0, 0));
    let list = entries(&a.db, &deal_id).await;
    assert_eq!(list.iter().filter(|(_, s, _)| s == "bought").count(), 50);
    let live: i64 = sqlx::query_scalar(
        "select coalesce(sum(quantity), 0) from customer_order where deal_id = $1 and status <> 'cancelled'",
    )
    .bind(Uuid::parse_str(&deal_id).unwrap())
    .fetch_one(&a.db)
    .await
    .unwrap();
    assert_eq!(live, 50, "no oversell");
    room.until("waitlist count of 10", Duration::from_secs(15), |f| {
        f["type"] == "deal.waitlist" && f["data"]["count"] == 10
    })
    .await;
}

#[tokio::test]
async fn an_ignored_offer_passes_to_the_next_after_the_hold_and_a_leaver_gives_it_up() {
    let redis = RedisServer::start();
    let (a, b, agency, session) = two_nodes(options(&redis, "2")).await;
    lineup(&a, agency, session).await;
    let deal_id = create_deal(&a, agency, session, deal(2, 1)).await;
    sell_out(&a, &b, &deal_id, 2).await;
    for viewer in ["x", "y", "z"] {
        assert_eq!(waitlist(&a, Method::POST, viewer, &deal_id).await.0, 201);
    }
    // A viewer who never joined sees the count only.
    let (status, stranger) = waitlist(&b, Method::GET, "stranger", &deal_id).await;
    assert_eq!((status, stranger["count"].as_i64()), (200, Some(3)), "{stranger}");
    assert!(stranger["status"].is_null() && stranger["position"].is_null());
    expire_orders(&a.db, &deal_id, &["b000"]).await;
    let list = poll(
        Patience::For(Duration::from_secs(15)),
        Duration::from_millis(50),
        || entries(&a.db, &deal_id),
        |list| !offered(list).is_empty(),
    )
    .await;
    assert_eq!(offered(&list), ["x"]);
    // x ignores it; after the hold it passes to y (never both at once).
    let list = poll(
        Patience::For(Duration::from_secs(15)),
        Duration::from_millis(50),
        || entries(&a.db, &deal_id),
        |list| offered(list) == ["y"],
    )
    .await;
    assert_eq!(list[0].1, "passed");
    assert_eq!(offered(&list), ["y"]);
    let (_, x) = waitlist(&b, Method::GET, "x", &deal_id).await;
    assert_eq!(
        (x["status"].as_str(), x["position"].is_null()),
        (Some("passed"), true)
    );
    let (status, body) = buy(&b, "x", &deal_id, "late", 1).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("sold_out")),
        "{body}"
    );
    let (status, order) = buy(&b, "y", &deal_id, "k", 1).await;
    assert_eq!(status, 201, "{order}");

    // The other order expires: z is offered, then leaves; nobody waits, so
    // the unit goes back to the SKU.
    expire_orders(&a.db, &deal_id, &["b001"]).await;
    poll(
        Patience::For(Duration::from_secs(15)),
        Duration::from_millis(50),
        || entries(&a.db, &deal_id),
        |list| offered(list) == ["z"],
    )
    .await;
    let (status, left) = waitlist(&a, Method::DELETE, "z", &deal_id).await;
    assert_eq!((status, left["status"].as_str()), (200, Some("left")), "{left}");
    let (status, body) = waitlist(&a, Method::DELETE, "z", &deal_id).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("not_on_waitlist")));
    let after = poll(
        Patience::For(Duration::from_secs(15)),
        Duration::from_millis(50),
        || figures(&a.db, &deal_id),
        |f| f.1 == 0,
    )
    .await;
    assert_eq!(after, (1, 0, 0));
    let (status, _) = buy(&a, "z", &deal_id, "k", 1).await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn a_unit_is_never_offered_to_two_viewers_at_once_while_offers_pass_and_sell_on_two_nodes() {
    let redis = RedisServer::start();
    // A 3 s hold: an even viewer, buying every 100 ms, takes its offer in
    // time even on a loaded machine (a 1 s hold passed every first offer
    // in one CI run, before a single purchase was answered; a 2 s hold let
    // 13 of 20 pass in a full local run with the suite's heaviest tests
    // beside it).
    let (a, b, agency, session) = two_nodes(options(&redis, "3")).await;
    lineup(&a, agency, session).await;
    let deal_id = create_deal(&a, agency, session, deal(20, 1)).await;
    sell_out(&a, &b, &deal_id, 20).await;
    let viewers: Vec<String> = (0..60).map(|i| format!("w{i:03}")).collect();
    for (i, viewer) in viewers.iter().enumerate() {
        let app = if i % 2 == 0 { &a } else { &b };
        assert_eq!(waitlist(app, Method::POST, viewer, &deal_id).await.0, 201);
    }
    let buyers: Vec<String> = (0..20).map(|i| format!("b{i:03}")).collect();
    let refs: Vec<&str> = buyers.iter().map(String::as_str).collect();
    expire_orders(&a.db, &deal_id, &refs).await;

    // Every viewer keeps trying to buy on both nodes; odd ones never do
    // (their offers pass after 2 s). Meanwhile the invariant is sampled,
    // until every unit is sold (or 60 s, however slow the machine).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let done = std::sync::atomic::AtomicBool::new(false);
    let done = &done;
    let over =
        move || done.load(std::sync::atomic::Ordering::Relaxed) || tokio::time::Instant::now() >= deadline;
    let shoppers = viewers
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(i, v)| {
            let app = if i % 4 == 0 { &a } else { &b };
            let v = v.clone();
            let deal_id = deal_id.clone();
            async move {
                let mut got = 0;
                let mut n = 0;
                while !over() {
                    n += 1;
                    let (status, _) = buy(app, &v, &deal_id, &format!("try-{n}"), 1).await;
                    if status == 201 {
                        got += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                got
            }
        });
    let sampler = async {
        let mut samples = 0;
        while !over() {
            let (sold, held, offered) = figures(&a.db, &deal_id).await;
            assert!(offered <= i64::from(held), "offers {offered} over held {held}");
            assert!(sold + held <= 20);
            samples += 1;
            let all_bought = sold == 20
                && entries(&a.db, &deal_id)
                    .await
                    .iter()
                    .filter(|e| e.1 == "bought")
                    .count()
                    == 20;
            if all_bought && samples > 50 {
                // Sold out again: a last second of tries must buy nothing more.
                tokio::time::sleep(Duration::from_secs(1)).await;
                done.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        samples
    };
    let (got, samples) = tokio::join!(join_all(shoppers), sampler);
    assert!(samples > 50);
    assert!(got.iter().all(|g| *g <= 1), "one offer per viewer: {got:?}");
    let list = entries(&a.db, &deal_id).await;
    let mut seen = HashSet::new();
    for (viewer, status, _) in &list {
        assert!(seen.insert(viewer.clone()), "{viewer} twice in line");
        let i: usize = viewer[1..].parse().unwrap();
        if i % 2 == 1 {
            assert_ne!(status, "bought", "{viewer} never bought");
        }
    }
    let bought = list.iter().filter(|(_, s, _)| s == "bought").count();
    assert_eq!(bought, got.iter().sum::<i32>() as usize);
    let (sold, held, offered) = figures(&a.db, &deal_id).await;
    assert_eq!(sold as usize, bought);
    assert!(offered <= i64::from(held));
    assert_eq!(
        bought, 20,
        "all 20 units sold to the buyers who wanted them: {list:?}"
    );
    let live: i64 = sqlx::query_scalar(
        "select coalesce(sum(quantity), 0) from customer_order where deal_id = $1 and status <> 'cancelled'",
    )
    .bind(Uuid::parse_str(&deal_id).unwrap())
    .fetch_one(&a.db)
    .await
    .unwrap();
    assert_eq!(live, 20);
}

#[tokio::test]
async fn the_waitlist_and_its_offers_survive_a_redis_flush_and_restart() {
    let mut redis = RedisServer::start();
    let (a, b, agency, session) = two_nodes(options(&redis, "60")).await;
    lineup(&a, agency, session).await;
    let deal_id = create_deal(&a, agency, session, deal(3, 1)).await;
    sell_out(&a, &b, &deal_id, 3).await;
    for viewer in ["p", "q", "r", "s"] {
        assert_eq!(waitlist(&b, Method::POST, viewer, &deal_id).await.0, 201);
    }
    expire_orders(&a.db, &deal_id, &["b000", "b001"]).await;
    poll(
        Patience::For(Duration::from_secs(15)),
        Duration::from_millis(50),
        || entries(&a.db, &deal_id),
        |list| offered(list) == ["p", "q"],
    )
    .await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await.unwrap();
    // The gate is rebuilt from Postgres with the open offers.
    let (status, body) = buy(&a, "r", &deal_id, "k", 1).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("sold_out")),
        "{body}"
    );
    let (status, order) = buy(&b, "p", &deal_id, "k", 1).await;
    assert_eq!(status, 201, "{order}");

    redis.restart();
    let (_, place) = poll(
        Patience::For(Duration::from_secs(15)),
        Duration::from_millis(100),
        || waitlist(&a, Method::GET, "q", &deal_id),
        |(status, _)| *status == 200,
    )
    .await;
    assert_eq!(place["status"], "offered");
    let (_, place) = waitlist(&a, Method::GET, "r", &deal_id).await;
    assert_eq!(
        (place["status"].as_str(), place["position"].as_i64()),
        (Some("waiting"), Some(2))
    );
    let (status, order) = poll(
        Patience::For(Duration::from_secs(15)),
        Duration::from_millis(200),
        || buy(&a, "q", &deal_id, "k", 1),
        |(status, _)| *status != 503,
    )
    .await;
    assert_eq!(status, 201, "{order}");
    let (status, _) = buy(&a, "s", &deal_id, "k", 1).await;
    assert_eq!(status, 409);
    assert_eq!(figures(&a.db, &deal_id).await, (3, 0, 0));
}

#[tokio::test]
async fn when_the_deal_ends_the_list_closes_and_held_units_go_back_to_the_sku() {
    let redis = RedisServer::start();
    let (a, b, agency, session) = two_nodes(options(&redis, "60")).await;
    lineup(&a, agency, session).await;
    let body =
        json!({"link_number": 1, "price_minor": 500, "quantity": 2, "per_buyer_cap": 1, "duration_secs": 5});
    let deal_id = create_deal(&a, agency, session, body).await;
    let id = Uuid::parse_str(&deal_id).unwrap();
    let on_hand = || async {
        sqlx::query_scalar::<_, i32>(
            "select s.stock_on_hand from sku s join deal d using (sku_id) where d.deal_id = $1",
        )
        .bind(id)
        .fetch_one(&a.db)
        .await
        .unwrap()
    };
    sell_out(&a, &b, &deal_id, 2).await;
    let before = on_hand().await;
    for viewer in ["m", "n"] {
        assert_eq!(waitlist(&a, Method::POST, viewer, &deal_id).await.0, 201);
    }
    expire_orders(&a.db, &deal_id, &["b000"]).await;
    poll(
        Patience::For(Duration::from_secs(15)),
        Duration::from_millis(50),
        || entries(&a.db, &deal_id),
        |list| offered(list) == ["m"],
    )
    .await;
    let mut m = join(b.addr, session, &b.token("m", Role::Viewer)).await;
    // The deal's time runs out with m's offer open and n waiting.
    let list = poll(
        Patience::For(Duration::from_secs(15)),
        Duration::from_millis(100),
        || entries(&a.db, &deal_id),
        |list| list.iter().all(|(_, s, _)| s == "closed"),
    )
    .await;
    assert!(list.iter().all(|(_, s, _)| s == "closed"), "{list:?}");
    assert_eq!(figures(&a.db, &deal_id).await, (1, 0, 0));
    assert_eq!(on_hand().await, before + 1, "the held unit went back to the SKU");
    m.until("waitlist.closed notice", Duration::from_secs(15), |f| {
        f["type"] == "notice" && f["kind"] == "waitlist.closed"
    })
    .await;
    let (status, body) = buy(&b, "m", &deal_id, "k", 1).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("sold_out")),
        "{body}"
    );
    let (status, body) = waitlist(&a, Method::POST, "o", &deal_id).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("deal_ended")),
        "{body}"
    );
    let (_, place) = waitlist(&a, Method::GET, "n", &deal_id).await;
    assert_eq!(place["status"], "closed");
}

/// A node refuses the crowd on a sold-out deal from its own copy of the gate
/// (trusted here for a whole second after each check); a viewer told of a
/// waitlist offer still buys on that node at once: the offer is written to
/// the gate a copy's life before anyone is told.
#[tokio::test]
async fn an_offered_viewer_buys_at_once_on_a_node_that_refuses_others_from_its_copy() {
    let redis = RedisServer::start();
    let (a, b, agency, session) =
        two_nodes(options(&redis, "30").env(&[("HAWKER__COMMERCE__SOLD_OUT_MIRROR_MS", "1000")])).await;
    lineup(&a, agency, session).await;
    let deal_id = create_deal(&a, agency, session, deal(1, 1)).await;
    sell_out(&a, &b, &deal_id, 1).await;
    assert_eq!(waitlist(&a, Method::POST, "x", &deal_id).await.0, 201);

    // The crowd keeps trying on node b, so its copy stays in use.
    let done = std::sync::atomic::AtomicBool::new(false);
    let crowd = async {
        let mut n = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            n += 1;
            let (status, body) = buy(&b, "crowd", &deal_id, &format!("c{n}"), 1).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (409, Some("sold_out")),
                "{body}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let offered_and_bought = async {
        poll(
            Patience::For(Duration::from_secs(15)),
            Duration::from_millis(20),
            || async { b.commerce.gate().answered_by_node() },
            |n| *n >= 10,
        )
        .await;
        let before = b.commerce.gate().answered_by_node();
        assert!(before >= 10, "node b refused the crowd from its copy ({before})");
        expire_orders(&a.db, &deal_id, &["b000"]).await;
        poll(
            Patience::For(Duration::from_secs(15)),
            Duration::from_millis(5),
            || entries(&a.db, &deal_id),
            |list| offered(list) == ["x"],
        )
        .await;
        // Told (Postgres says offered): buys on node b at once.
        let (status, order) = buy(&b, "x", &deal_id, "k", 1).await;
        assert_eq!(status, 201, "{order}");
        let (status, replay) = buy(&b, "x", &deal_id, "k", 1).await;
        assert_eq!(
            (status, &replay["order_id"]),
            (201, &order["order_id"]),
            "{replay}"
        );
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(
            b.commerce.gate().answered_by_node() > before,
            "the copy was in use meanwhile"
        );
    };
    tokio::join!(crowd, offered_and_bought);
    let (sold, held, offered_units) = figures(&a.db, &deal_id).await;
    assert_eq!((sold, held, offered_units), (1, 0, 0));
}
