//! Moving a running deployment from one Redis to a Redis Cluster, the
//! documented way: every node restarts with the cluster configured (same
//! key prefix, same Postgres) and nothing is copied from the old Redis. The
//! claim: each room starts a new epoch, so a viewer resuming with its old
//! position gets a `reset` (never `resumed` with events that do not exist);
//! the purchase gate is rebuilt from Postgres, so no acknowledged order is
//! lost or made twice and the deal still sells exactly its stock.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use hawker_core::Role;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::commerce::{assert_invariants, deal_in_postgres};
use crate::support::fixtures::{buy_with, create_deal, insert_agency_and_session, lineup};
use crate::support::socket::{connect, join, Ws};
use crate::support::{settings_with, spawn_app_with, test_database_url, RedisCluster, RedisServer, TestApp};

/// A gate key of `deal` (`<prefix>:deal:{<id>}:<what>`, prefix `hawker`).
fn gate_key(deal: Uuid, what: &str) -> String {
    format!("hawker:deal:{{{deal}}}:{what}")
}

/// Two nodes on `db` and the Redis that `redis` (a `HAWKER__REDIS__*`
/// variable and its value) names.
async fn deployment(db: &str, redis: (&str, &str)) -> (TestApp, TestApp) {
    let overrides = [("HAWKER__DATABASE__URL", db), redis];
    let a = spawn_app_with(settings_with(&overrides))
        .await
        .with_http_timeout(Duration::from_secs(15));
    let b = spawn_app_with(settings_with(&overrides))
        .await
        .with_http_timeout(Duration::from_secs(15));
    (a, b)
}

/// Announces `text`, which must be acknowledged; its offset.
async fn announce(host: &mut Ws, text: &str) -> u64 {
    let ack = host.call("host.announce", json!({ "text": text })).await;
    assert_eq!(ack["type"], "ack", "`{text}` is acknowledged: {ack}");
    ack["data"]["offset"].as_u64().expect("an offset")
}

/// Buys `quantity` as `buyer` with `key` on `app`; the answer.
async fn buy(app: &TestApp, buyer: &str, key: &str, deal: &str, quantity: i32) -> (u16, Value) {
    buy_with(
        &app.http,
        app.addr,
        &app.token(buyer, Role::Viewer),
        deal,
        key,
        quantity,
    )
    .await
}

/// Every `hawker:*` key of the Redis at `url` (a single server).
fn keys_of(url: &str) -> Vec<String> {
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    redis::cmd("KEYS").arg("hawker:*").query(&mut con).unwrap()
}

/// Every `hawker:*` key of the cluster (KEYS on each master).
fn cluster_keys(cluster: &RedisCluster) -> Vec<String> {
    cluster
        .masters()
        .into_iter()
        .flat_map(|port| keys_of(&format!("redis://127.0.0.1:{port}/")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moving_a_deployment_from_one_redis_to_a_cluster_resets_each_room_once_and_loses_no_order() {
    let began = Instant::now();
    let redis = RedisServer::start();
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.unwrap();
    let db = test_database_url();

    // The old deployment: two nodes on one Redis.
    let redis_url = redis.url();
    let (mut a, mut b) = deployment(&db, ("HAWKER__REDIS__URL", redis_url.as_str())).await;
    let (agency, session) = insert_agency_and_session(&a.db).await;
    let mut host = join(a.addr, session, &a.agency_token(agency)).await;
    let viewer_token = b.token("viewer", Role::Viewer);
    let mut viewer = join(b.addr, session, &viewer_token).await;
    let mut before = Vec::new();
    for i in 0..4 {
        before.push(announce(&mut host, &format!("before {i}")).await);
    }
    let seen = viewer.expect_many("host.announcement", before.len()).await;
    let offsets: Vec<u64> = seen.iter().map(|e| e["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, before, "the viewer saw every announcement, in order");
    let last = seen.last().unwrap();
    let old_epoch = last["epoch"].as_str().unwrap().to_string();
    let old_offset = last["offset"].as_u64().unwrap();
    assert_eq!(
        (viewer.epoch.as_str(), viewer.offset),
        (old_epoch.as_str(), old_offset)
    );

    // A deal of 20 units (2 per buyer), 7 orders of 1 or 2 units over both
    // nodes: 10 units sold on the old Redis.
    lineup(&a, agency, session).await;
    let quantity = 20;
    let deal = create_deal(
        &a,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 999, "quantity": quantity, "per_buyer_cap": 2, "duration_secs": 300}),
    )
    .await;
    let deal_id = Uuid::parse_str(&deal).unwrap();
    let mut acknowledged: HashMap<(String, String), Value> = HashMap::new();
    for i in 0..7 {
        let (buyer, key, units) = (format!("buyer-{i}"), format!("key-{i}"), 1 + i % 2);
        let node = if i % 2 == 0 { &a } else { &b };
        let (status, body) = buy(node, &buyer, &key, &deal, units).await;
        assert_eq!(status, 201, "{buyer}/{key}: {body}");
        acknowledged.insert((buyer, key), body);
    }
    let sold_before: i32 = acknowledged
        .values()
        .map(|o| o["quantity"].as_i64().unwrap() as i32)
        .sum();
    assert_eq!(sold_before, 10);
    let old_keys = keys_of(&redis_url);
    assert!(
        old_keys.contains(&gate_key(deal_id, "stock")),
        "the old deployment's gate lives in the old Redis: {old_keys:?}"
    );
    assert!(
        old_keys
            .iter()
            .any(|k| k.contains(&format!("room:{{{session}}}"))),
        "and its room: {old_keys:?}"
    );

    // Every node stops (their sockets end), then restarts on the cluster
    // with the same database; nothing is copied.
    let stopping = Instant::now();
    let (stopped_a, stopped_b) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(15), a.stop()),
        tokio::time::timeout(Duration::from_secs(15), b.stop()),
    );
    for stopped in [stopped_a, stopped_b] {
        assert!(matches!(stopped, Ok(Ok(()))), "an old node stops: {stopped:?}");
    }
    let stopped_in = stopping.elapsed();
    drop(host);
    drop(viewer);
    let on_cluster = cluster_keys(&cluster);
    assert!(on_cluster.is_empty(), "the cluster starts empty: {on_cluster:?}");
    let seeds = cluster.seeds();
    let (c, d) = deployment(&db, ("HAWKER__REDIS__CLUSTER", seeds.as_str())).await;
    let orders_before = deal_in_postgres(&c.db, &deal).await;
    assert_eq!(orders_before.3.len(), acknowledged.len());

    // The viewer resumes on a new node with its old position: a reset into
    // a new epoch, never `resumed`.
    let mut viewer = connect(d.addr, session, &viewer_token, Some((&old_epoch, old_offset))).await;
    let first = viewer.frame().await;
    assert_eq!(
        first["type"], "reset",
        "a resume from the old Redis's epoch is a reset: {first}"
    );
    let new_epoch = first["epoch"].as_str().unwrap().to_string();
    assert_ne!(new_epoch, old_epoch, "the room starts a new epoch");
    eprintln!("reset after the move: {first}");

    // The host comes back on the other new node; its announcement reaches
    // the viewer in the new epoch, and nothing else is replayed as an event.
    let mut host = join(c.addr, session, &c.agency_token(agency)).await;
    let after = announce(&mut host, "after the move").await;
    let event = viewer.expect("host.announcement").await;
    assert_eq!(
        (
            event["data"]["text"].as_str(),
            event["epoch"].as_str(),
            event["offset"].as_u64()
        ),
        (Some("after the move"), Some(new_epoch.as_str()), Some(after)),
        "{event}"
    );

    // A second viewer with the old position, after the room's first event
    // on the cluster: a reset as well (the epoch changed, whatever the offsets).
    let mut late = connect(
        c.addr,
        session,
        &c.token("late", Role::Viewer),
        Some((&old_epoch, old_offset)),
    )
    .await;
    let first = late.frame().await;
    assert_eq!(
        (first["type"].as_str(), first["epoch"].as_str()),
        (Some("reset"), Some(new_epoch.as_str())),
        "{first}"
    );

    // Every acknowledged key replays its order on the new deployment, on
    // either node; no order is made twice.
    for (n, ((buyer, key), order)) in acknowledged.iter().enumerate() {
        let node = if n % 2 == 0 { &c } else { &d };
        let units = order["quantity"].as_i64().unwrap() as i32;
        let (status, again) = buy(node, buyer, key, &deal, units).await;
        assert_eq!(
            (status, &again["order_id"]),
            (201, &order["order_id"]),
            "replay of {buyer}/{key} after the move: {again}"
        );
    }
    let pg = deal_in_postgres(&c.db, &deal).await;
    assert_eq!(pg.3, orders_before.3, "replays made no order");
    assert_eq!(pg.0, sold_before, "replays sold nothing");

    // The gate rebuilt from Postgres holds each buyer to the cap.
    let (status, body) = buy(&d, "buyer-1", "another", &deal, 1).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("cap_exceeded")),
        "buyer-1 already holds 2: {body}"
    );

    // The rest sells on the new deployment, exactly to the stock.
    let mut created = acknowledged.clone();
    let mut late_units = 0;
    for n in 0.. {
        let (buyer, key) = (format!("late-{n}"), "k".to_string());
        let node = if n % 2 == 0 { &c } else { &d };
        let (status, body) = buy(node, &buyer, &key, &deal, 1).await;
        if status == 201 {
            late_units += 1;
            created.insert((buyer, key), body);
            assert!(
                late_units <= quantity - sold_before,
                "oversold: {late_units} late units"
            );
            continue;
        }
        assert_eq!(
            (status, body["error"].as_str()),
            (409, Some("sold_out")),
            "a late buyer is refused only for sold_out: {body}"
        );
        break;
    }
    let pg = deal_in_postgres(&c.db, &deal).await;
    assert_invariants(&created, &pg, i64::from(quantity));
    assert_eq!(
        (pg.0, pg.1, late_units),
        (quantity, i64::from(quantity), quantity - sold_before),
        "sold out exactly: the old deployment's units and the rest"
    );
    let ids: HashSet<Uuid> = created
        .values()
        .map(|o| Uuid::parse_str(o["order_id"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(pg.3, ids, "one order per acknowledged purchase, no other");
    let on_cluster = cluster_keys(&cluster);
    assert!(
        on_cluster.contains(&gate_key(deal_id, "stock")),
        "the gate now lives in the cluster: {on_cluster:?}"
    );
    eprintln!(
        "old nodes stopped in {stopped_in:?}; {sold_before} units before the move, {late_units} after; test took {:?}",
        began.elapsed()
    );
}
