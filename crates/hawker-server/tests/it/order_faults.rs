//! The order path under partial failure: one sick node (frozen while it holds
//! a deal's row, or cut from Postgres by a blackhole) must not stop the
//! healthy one, and says it is not ready; the gate converges to Postgres
//! after Redis loses its data; a request that cannot be queued gives its
//! reservation back.
//!
//! The sick node is a real `hawker serve` process (it can be SIGSTOPped, and
//! honours `commerce.test_hold_after_take_ms`, which holds a batch's deal rows
//! between its guarded update and its commit); the healthy one runs in the
//! test. Each test has its own Redis and database; proxies stand in for the network.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hawker_core::{Role, TokenKeys};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::support::blackhole::BlackholeProxy;
use crate::support::fixtures::{buy_with, create_deal, session_with_lineup, token};
use crate::support::process::{hawker, ServerProcess};
use crate::support::{poll, settings_with, spawn_app_with, test_database_url, Patience, RedisServer};

/// `database.idle_in_transaction_timeout_ms` in `config/`: how long Postgres
/// lets a frozen node hold the locks of its open transaction.
const IDLE_IN_TRANSACTION: Duration = Duration::from_millis(3000);
/// The longest the healthy node may go without a commit.
const LONGEST_GAP: Duration = Duration::from_millis(3000 + 1000);

/// 10,000 units, 5 per buyer, for two minutes.
fn big_deal() -> Value {
    json!({"link_number": 1, "price_minor": 500, "quantity": 10000, "per_buyer_cap": 5, "duration_secs": 120})
}

/// A `hawker serve` process on `db` and `redis` with `extra` settings, and its admin address.
fn hawker_node(db: &str, redis: &RedisServer, extra: &[(&str, &str)]) -> (ServerProcess, SocketAddr) {
    let mut command = hawker(&["serve"], db);
    command
        .env("HAWKER__REDIS__URL", redis.url())
        .stderr(if std::env::var("TEST_LOG").is_ok() {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
    for (k, v) in extra {
        command.env(k, v);
    }
    let (process, seen, _lines) = ServerProcess::start(&mut command);
    let serving = seen.last().expect("the serving line");
    let log: Value = serde_json::from_str(serving).expect("json log");
    let admin = log["admin"]
        .as_str()
        .expect("admin address")
        .parse()
        .expect("address");
    (process, admin)
}

fn signal(process: &ServerProcess, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &process.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// One answer of the load.
struct Sample {
    node: usize,
    at: Instant,
    status: u16,
    order_id: Option<Uuid>,
}

/// Buyers that keep buying one unit each, a new buyer and key every time,
/// from `workers` loops per node, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    successes: Vec<Arc<AtomicUsize>>,
    workers: Vec<JoinHandle<Vec<Sample>>>,
}

impl Load {
    fn start(nodes: &[(SocketAddr, usize)], keys: &TokenKeys, deal: &str) -> Load {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut successes = Vec::new();
        let mut workers = Vec::new();
        for (node, (addr, count)) in nodes.iter().enumerate() {
            let ok = Arc::new(AtomicUsize::new(0));
            successes.push(ok.clone());
            for worker in 0..*count {
                let (http, stop, ok, keys) = (http.clone(), stop.clone(), ok.clone(), keys.clone());
                let (addr, deal) = (*addr, deal.to_string());
                workers.push(tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let buyer = format!("n{node}-w{worker}-{n}");
                        let token = token(&keys, &buyer, Role::Viewer);
                        let (status, body) = buy_with(&http, addr, &token, &deal, "k", 1).await;
                        let order_id = body["order_id"].as_str().and_then(|id| id.parse().ok());
                        // A 201 whose body did not arrive within the client's
                        // timeout (its head came just before it: a purchase
                        // that waited ~3 s behind the frozen node's row lock)
                        // told the buyer nothing: an unknown outcome, as a
                        // timeout is. Every complete 201 must have its order.
                        let status = if status == 201 && body.is_null() {
                            0
                        } else {
                            status
                        };
                        if status == 201 {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else if status != 503 && status != 0 {
                            panic!("node {node}: {status} {body}");
                        }
                        samples.push(Sample {
                            node,
                            at: Instant::now(),
                            status,
                            order_id,
                        });
                        if status != 201 {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    samples
                }));
            }
        }
        Load {
            stop,
            successes,
            workers,
        }
    }

    /// Waits until every node committed `n` purchases.
    async fn warmed_up(&self, n: usize) {
        let all = poll(
            Patience::For(Duration::from_secs(30)),
            Duration::from_millis(50),
            || async { self.successes.iter().map(|s| s.load(Ordering::Relaxed)).min() },
            |least| least.unwrap_or(0) >= n,
        )
        .await;
        assert!(all.unwrap_or(0) >= n, "every node commits before the fault");
    }

    async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let mut samples = Vec::new();
        for worker in self.workers {
            samples.extend(worker.await.unwrap());
        }
        samples
    }
}

/// The longest stretch in `[from, to]` without a 201 from `node`, counted
/// from its last 201 before `from`.
fn longest_gap(samples: &[Sample], node: usize, from: Instant, to: Instant) -> Duration {
    let mut times: Vec<Instant> = samples
        .iter()
        .filter(|s| s.node == node && s.status == 201)
        .map(|s| s.at)
        .collect();
    times.sort();
    let mut previous = times.iter().rev().find(|t| **t <= from).copied().unwrap_or(from);
    let mut longest = Duration::ZERO;
    for t in times.iter().filter(|t| **t > from && **t <= to).chain([&to]) {
        longest = longest.max(t.duration_since(previous));
        previous = *t;
    }
    longest
}

/// No oversell, `sold` is the units in orders, and every 201 has its order.
async fn assert_orders_hold(db: &sqlx::PgPool, deal: &str, samples: &[Sample]) {
    let deal_id = Uuid::parse_str(deal).unwrap();
    let (quantity, sold): (i32, i32) = sqlx::query_as("select quantity, sold from deal where deal_id = $1")
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
    assert!(sold <= quantity, "oversold: {sold}/{quantity}");
    assert_eq!(
        i64::from(sold),
        units.unwrap_or(0),
        "deal.sold is the units in orders"
    );
    let orders: std::collections::HashSet<Uuid> =
        sqlx::query_scalar("select order_id from customer_order where deal_id = $1")
            .bind(deal_id)
            .fetch_all(db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    for sample in samples.iter().filter(|s| s.status == 201) {
        let id = sample.order_id.expect("a 201 has its order");
        assert!(orders.contains(&id), "an acknowledged order is missing: {id}");
    }
}

/// Is a session idle inside a transaction after its guarded update (the last
/// statement before the hold is the deal's guarded update), for longer than
/// any healthy batch would be? Only the held node is.
async fn deal_row_held(db: &sqlx::PgPool) -> bool {
    let held: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_activity
          where datname = current_database() and state = 'idle in transaction'
            and query like 'update deal set sold%' and now() - state_change > interval '150 milliseconds'",
    )
    .fetch_one(db)
    .await
    .unwrap();
    held > 0
}

/// Statuses of `url` every 200 ms for `window`.
async fn readiness_during(http: &reqwest::Client, url: String, window: Duration) -> Vec<u16> {
    let started = Instant::now();
    let mut statuses = Vec::new();
    while started.elapsed() < window {
        let status = match http.get(&url).timeout(Duration::from_secs(3)).send().await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        };
        statuses.push(status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    statuses
}

/// A node in the test on `db` and `redis`, with a session selling
/// [`big_deal`]; returns the node and the deal.
async fn app_with_big_deal(db: &str, redis: &RedisServer) -> (crate::support::TestApp, String) {
    let app = spawn_app_with(with_redis(db, redis)).await;
    let (agency, session) = session_with_lineup(&app).await;
    let deal = create_deal(&app, agency, session, big_deal()).await;
    (app, deal)
}

fn with_redis(db: &str, redis: &RedisServer) -> hawker_server::config::Settings {
    settings_with(&[
        ("HAWKER__DATABASE__URL", db),
        ("HAWKER__REDIS__URL", &redis.url()),
    ])
}

// Several threads: the in-test node and proxy keep running while the test
// waits on a child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_frozen_while_holding_the_deal_row_does_not_stop_the_other() {
    let redis = RedisServer::start();
    let db = test_database_url();
    let (healthy, deal) = app_with_big_deal(&db, &redis).await;
    // The sick node holds its deal rows 600 ms per batch: a freeze lands
    // there. It commits two batches at once, of two purchases at most, so
    // that a second batch is mostly under way when it freezes: that one
    // waits for its turn inside the node, not in the deal row's lock queue
    // (`a_nodes_parallel_batches_…` below), where the healthy node would
    // wait behind it as well.
    let (sick, _) = hawker_node(
        &db,
        &redis,
        &[
            ("HAWKER__COMMERCE__TEST_HOLD_AFTER_TAKE_MS", "600"),
            ("HAWKER__COMMERCE__SETTLE_PARALLEL", "2"),
            ("HAWKER__COMMERCE__BATCH_MAX", "2"),
        ],
    );
    let load = Load::start(&[(healthy.addr, 8), (sick.addr, 4)], &healthy.keys, &deal);
    load.warmed_up(5).await;

    // SIGSTOP the sick node until it is caught holding the deal row.
    let mut frozen_at = None;
    for _ in 0..50 {
        signal(&sick, "STOP");
        let at = Instant::now();
        if deal_row_held(&healthy.db).await {
            frozen_at = Some(at);
            break;
        }
        signal(&sick, "CONT");
        tokio::time::sleep(Duration::from_millis(137)).await;
    }
    let Some(frozen_at) = frozen_at else {
        let sessions: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
            "select state, left(query, 40) from pg_stat_activity where datname = current_database()",
        )
        .fetch_all(&healthy.db)
        .await
        .unwrap();
        panic!("the sick node was never caught holding the deal row: {sessions:?}");
    };
    let window = IDLE_IN_TRANSACTION * 2 + Duration::from_secs(2);
    let ready = readiness_during(&healthy.http, healthy.url("/readyz"), window).await;
    let thawed_at = Instant::now();
    signal(&sick, "CONT");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = load.stop().await;

    let gap = longest_gap(&samples, 0, frozen_at, thawed_at);
    eprintln!("frozen: the healthy node's longest gap without a commit was {gap:?}");
    assert!(
        gap <= LONGEST_GAP,
        "the healthy node went {gap:?} without a commit"
    );
    let after_timeout = samples
        .iter()
        .filter(|s| {
            s.node == 0 && s.status == 201 && s.at > frozen_at + IDLE_IN_TRANSACTION + Duration::from_secs(1)
        })
        .filter(|s| s.at < thawed_at)
        .count();
    assert!(
        after_timeout > 0,
        "the healthy node commits while the other is frozen"
    );
    assert!(
        ready.iter().all(|s| *s == 200),
        "the healthy node stays ready: {ready:?}"
    );
    assert_orders_hold(&healthy.db, &deal, &samples).await;
}

/// The database's sessions, by what they are doing: (holding the deal row
/// in an open transaction, idle in a transaction that has not taken it,
/// waiting for a lock).
async fn node_sessions(db: &sqlx::PgPool) -> (i64, i64, i64) {
    sqlx::query_as(
        "select count(*) filter (where state = 'idle in transaction' and query like 'update deal set sold%'),
                count(*) filter (where state = 'idle in transaction' and query not like 'update deal set sold%'),
                count(*) filter (where wait_event_type = 'Lock')
           from pg_stat_activity
          where datname = current_database() and pid <> pg_backend_pid()",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

// Several threads: the in-test node keeps running while the test waits on a
// child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nodes_parallel_batches_write_at_once_and_take_the_deal_row_in_turn_inside_the_node() {
    let redis = RedisServer::start();
    let db = test_database_url();
    let (setup, deal) = app_with_big_deal(&db, &redis).await;
    // Two batches at once, one purchase each; each holds the deal row 1.5 s.
    let (node, _) = hawker_node(
        &db,
        &redis,
        &[
            ("HAWKER__COMMERCE__TEST_HOLD_AFTER_TAKE_MS", "1500"),
            ("HAWKER__COMMERCE__SETTLE_PARALLEL", "2"),
            ("HAWKER__COMMERCE__BATCH_MAX", "1"),
        ],
    );
    let buys: Vec<_> = (0..2)
        .map(|i| {
            let (http, addr, deal) = (setup.http.clone(), node.addr, deal.clone());
            let token = token(&setup.keys, &format!("turn-{i}"), Role::Viewer);
            tokio::spawn(async move { buy_with(&http, addr, &token, &deal, "k", 1).await })
        })
        .collect();
    // While the first batch holds the row, the second has written its order
    // and waits for its turn: both are idle in their transactions, and none
    // of the node's sessions waits in Postgres' lock queue.
    let (mut both_idle, mut most_waiting) = (false, 0);
    let started = Instant::now();
    // Sampled through the first batch's hold (the second's wait for its
    // turn), not only until both were seen idle.
    while started.elapsed() < Duration::from_millis(1400) {
        let (holding, idle, waiting) = node_sessions(&setup.db).await;
        both_idle |= holding == 1 && idle == 1;
        most_waiting = most_waiting.max(waiting);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ids = Vec::new();
    for buy in buys {
        let (status, body) = buy.await.unwrap();
        assert_eq!(status, 201, "{body}");
        ids.push(body["order_id"].as_str().unwrap().to_string());
    }
    assert!(
        both_idle,
        "the second batch wrote its order while the first held the deal row"
    );
    assert_eq!(
        most_waiting, 0,
        "no batch of the node waits for the deal row in Postgres' lock queue"
    );
    let sold: i32 = sqlx::query_scalar("select sold from deal where deal_id = $1::uuid")
        .bind(&deal)
        .fetch_one(&setup.db)
        .await
        .unwrap();
    assert_eq!(sold, 2, "both orders took their unit: {ids:?}");
}

// Several threads: the in-test node and proxy keep running while the test
// waits on a child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_postgres_path_is_blackholed_does_not_stop_the_other_and_is_not_ready() {
    let redis = RedisServer::start();
    let proxy = BlackholeProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let name = format!("hawker_test_{}", Uuid::new_v4().simple());
    let direct = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let proxied = format!("postgres://postgres@{}/{name}", proxy.addr);
    let (healthy, deal) = app_with_big_deal(&direct, &redis).await;
    let (sick, sick_admin) = hawker_node(
        &proxied,
        &redis,
        &[("HAWKER__COMMERCE__TEST_HOLD_AFTER_TAKE_MS", "300")],
    );
    let load = Load::start(&[(healthy.addr, 8), (sick.addr, 4)], &healthy.keys, &deal);
    load.warmed_up(5).await;

    // Cut the sick node's Postgres path while it holds the deal row, if it can be caught so.
    let mut tries = 0;
    while !deal_row_held(&healthy.db).await && tries < 100 {
        tries += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.blackhole();
    let cut_at = Instant::now();
    let sick_ready_url = format!("http://{sick_admin}/readyz");
    let (healthy_ready, sick_ready) = tokio::join!(
        readiness_during(&healthy.http, healthy.url("/readyz"), Duration::from_secs(12)),
        readiness_during(&healthy.http, sick_ready_url.clone(), Duration::from_secs(12)),
    );
    let restored_at = Instant::now();
    // While cut: why the sick node is not ready, on its admin listener.
    let (status, why) = crate::support::try_answer(healthy.http.get(&sick_ready_url).send().await).await;
    proxy.restore();

    assert_eq!(status, 503, "{why}");
    assert!(
        why["postgres"]["error"].is_string() || why["settlement"]["error"].is_string(),
        "the admin listener says why: {why}"
    );
    // Not ready within a few seconds of the cut, and until it is restored.
    let first_503 = sick_ready.iter().position(|s| *s == 503);
    assert!(
        first_503.is_some_and(|i| i <= 20),
        "the sick node says it is not ready: {sick_ready:?}"
    );
    assert!(
        healthy_ready.iter().all(|s| *s == 200),
        "the healthy node stays ready: {healthy_ready:?}"
    );

    // The sick node recovers by itself once its path is back.
    let status = poll(
        Patience::For(Duration::from_secs(30)),
        Duration::from_millis(250),
        || async {
            crate::support::try_answer(healthy.http.get(&sick_ready_url).send().await)
                .await
                .0
        },
        |status| *status == 200,
    )
    .await;
    assert_eq!(status, 200, "the sick node is ready again");
    let samples = load.stop().await;
    let gap = longest_gap(&samples, 0, cut_at, restored_at);
    eprintln!("blackholed: the healthy node's longest gap without a commit was {gap:?}; sick /readyz {sick_ready:?}");
    assert!(
        gap <= LONGEST_GAP,
        "the healthy node went {gap:?} without a commit"
    );
    assert_orders_hold(&healthy.db, &deal, &samples).await;
    drop(sick);
}

/// Buys `quantity` on `nodes[n % len]`, retrying 503s and dropped answers on
/// the next node (same key) for up to ~10 s.
async fn buy_retrying(
    http: &reqwest::Client,
    nodes: &[SocketAddr],
    n: usize,
    token: &str,
    deal: &str,
    key: &str,
    quantity: i32,
) -> (u16, Value) {
    let mut answer = buy_with(http, nodes[n % nodes.len()], token, deal, key, quantity).await;
    for attempt in 1..50 {
        if answer.0 != 503 && answer.0 != 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        answer = buy_with(
            http,
            nodes[(n + attempt) % nodes.len()],
            token,
            deal,
            key,
            quantity,
        )
        .await;
    }
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_flush_mid_stampede_the_gate_converges_replays_answer_and_the_deal_sells_out_exactly() {
    let redis = RedisServer::start();
    let db = test_database_url();
    let fixture = spawn_app_with(with_redis(&db, &redis)).await;
    let (agency, session) = session_with_lineup(&fixture).await;
    let quantity = 5000;
    let deal = create_deal(
        &fixture,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": quantity, "per_buyer_cap": 2, "duration_secs": 600}),
    )
    .await;
    let deal_id = Uuid::parse_str(&deal).unwrap();
    // Each rebuild waits 1.5 s between its Postgres read and its write, so
    // commits and confirms land in between.
    let slow_rebuild = [("HAWKER__COMMERCE__TEST_REBUILD_DELAY_MS", "1500")];
    let (one, _) = hawker_node(&db, &redis, &slow_rebuild);
    let (two, _) = hawker_node(&db, &redis, &slow_rebuild);
    let nodes = [one.addr, two.addr];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    // 2,500 buyers of 1 or 2 units (about 3,750 of 5,000), every tenth
    // trying a second time (over the cap); Redis flushed after 500 answers.
    let answered = Arc::new(AtomicUsize::new(0));
    let limit = Arc::new(tokio::sync::Semaphore::new(200));
    let mut tasks = Vec::new();
    for i in 0..2500usize {
        let mut mine = vec![(format!("key-{i}-a"), if i % 2 == 0 { 1 } else { 2 })];
        if i % 10 == 0 {
            mine.push((format!("key-{i}-b"), 1));
        }
        for (key, units) in mine {
            let (http, answered, limit, deal) = (http.clone(), answered.clone(), limit.clone(), deal.clone());
            let buyer = format!("buyer-{i}");
            let token = token(&fixture.keys, &buyer, Role::Viewer);
            tasks.push(tokio::spawn(async move {
                let _permit = limit.acquire().await.unwrap();
                let answer = buy_retrying(&http, &nodes, i, &token, &deal, &key, units).await;
                answered.fetch_add(1, Ordering::Relaxed);
                (buyer, key, units, answer)
            }));
        }
    }
    while answered.load(Ordering::Relaxed) < 500 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await.unwrap();
    let mut acknowledged = Vec::new();
    let mut refused: std::collections::HashMap<String, usize> = Default::default();
    for task in tasks {
        let (buyer, key, units, (status, body)) = task.await.unwrap();
        if status == 201 {
            acknowledged.push((buyer, key, units, body["order_id"].clone()));
        } else {
            *refused.entry(format!("{status} {}", body["error"])).or_default() += 1;
        }
    }
    assert!(
        refused.keys().all(|k| k == "409 \"cap_exceeded\""),
        "only over-cap purchases are refused while units are left: {refused:?}"
    );

    // Within one reconciler tick (5 s), the gate's available units are
    // quantity − sold − units still reserved.
    let stock_key = format!("hawker:deal:{{{deal_id}}}:stock");
    let pending_key = format!("hawker:deal:{{{deal_id}}}:pending");
    let converged = poll(
        Patience::For(Duration::from_secs(12)),
        Duration::from_millis(250),
        || async {
            let sold: i32 = sqlx::query_scalar("select sold from deal where deal_id = $1")
                .bind(deal_id)
                .fetch_one(&fixture.db)
                .await
                .unwrap();
            let mut conn = conn.clone();
            let stock: Option<i64> = redis::cmd("GET")
                .arg(&stock_key)
                .query_async(&mut conn)
                .await
                .unwrap();
            let pending: i64 = redis::cmd("ZCARD")
                .arg(&pending_key)
                .query_async(&mut conn)
                .await
                .unwrap();
            (i64::from(quantity - sold), stock, pending)
        },
        |(left, stock, pending)| *pending == 0 && *stock == Some(*left),
    )
    .await;
    assert!(
        converged.2 == 0 && converged.1 == Some(converged.0),
        "the gate converged to Postgres (left, gate, pending): {converged:?}"
    );

    // Every acknowledged key replays its order, on either node.
    for (n, (buyer, key, units, order_id)) in acknowledged.iter().enumerate() {
        let token = token(&fixture.keys, buyer, Role::Viewer);
        let (status, body) = buy_retrying(&http, &nodes, n + 1, &token, &deal, key, *units).await;
        assert_eq!(
            (status, &body["order_id"]),
            (201, order_id),
            "replay of {buyer}/{key}: {body}"
        );
    }

    // New buyers take the rest: the deal sells out exactly, with no sold_out before.
    let mut n = 0;
    loop {
        n += 1;
        let buyer = format!("late-{n}");
        let token = token(&fixture.keys, &buyer, Role::Viewer);
        let (status, body) = buy_retrying(&http, &nodes, n, &token, &deal, "k", 1).await;
        if status == 201 {
            continue;
        }
        assert_eq!(
            (status, body["error"].as_str()),
            (409, Some("sold_out")),
            "{body}"
        );
        break;
    }
    let (sold, units): (i32, Option<i64>) = sqlx::query_as(
        "select d.sold, (select sum(quantity)::bigint from customer_order o
                          where o.deal_id = d.deal_id and o.status <> 'cancelled')
           from deal d where d.deal_id = $1",
    )
    .bind(deal_id)
    .fetch_one(&fixture.db)
    .await
    .unwrap();
    assert_eq!(sold, quantity, "sold out exactly, no unit stranded");
    assert_eq!(units, Some(i64::from(quantity)));
    drop((one, two));
}

/// The gate's (stock, pending reservations) of `deal` in `redis`.
async fn gate_of(redis: &RedisServer, deal: Uuid) -> (Option<i64>, i64) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stock: Option<i64> = redis::cmd("GET")
        .arg(format!("hawker:deal:{{{deal}}}:stock"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let pending: i64 = redis::cmd("ZCARD")
        .arg(format!("hawker:deal:{{{deal}}}:pending"))
        .query_async(&mut conn)
        .await
        .unwrap();
    (stock, pending)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_purchase_the_settlement_cannot_queue_gives_its_units_back_at_once() {
    let redis = RedisServer::start();
    let db = test_database_url();
    // A queue of one and batches of one: a burst overflows it. The reconciler
    // runs once a minute, so only the refusal itself can give units back.
    let app = spawn_app_with(settings_with(&[
        ("HAWKER__DATABASE__URL", &db),
        ("HAWKER__REDIS__URL", &redis.url()),
        ("HAWKER__COMMERCE__SETTLE_QUEUE_MAX", "1"),
        ("HAWKER__COMMERCE__BATCH_MAX", "1"),
        ("HAWKER__COMMERCE__SCHEDULER_TICK_MS", "60000"),
    ]))
    .await;
    let (agency, session) = session_with_lineup(&app).await;
    let deal = create_deal(
        &app,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": 1000, "per_buyer_cap": 1, "duration_secs": 120}),
    )
    .await;
    let deal_id = Uuid::parse_str(&deal).unwrap();
    let burst = (0..200).map(|i| {
        let (http, addr, deal) = (app.http.clone(), app.addr, deal.clone());
        let token = app.token(&format!("b{i}"), Role::Viewer);
        async move { buy_with(&http, addr, &token, &deal, "k", 1).await.0 }
    });
    let statuses = futures_util::future::join_all(burst).await;
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert!(refused > 0, "the burst overflowed the queue: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 201 || *s == 503), "{statuses:?}");

    let sold: i32 = sqlx::query_scalar("select sold from deal where deal_id = $1")
        .bind(deal_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(
        gate_of(&redis, deal_id).await,
        (Some(i64::from(1000 - sold)), 0),
        "refused purchases hold no units ({refused} refused)"
    );
    // A refused buyer (cap 1) buys again at once: their reservation is gone.
    for (i, status) in statuses.iter().enumerate().filter(|(_, s)| **s == 503).take(5) {
        let token = app.token(&format!("b{i}"), Role::Viewer);
        let (again, body) = buy_with(&app.http, app.addr, &token, &deal, "k", 1).await;
        assert_eq!(again, 201, "after {status}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn purchases_during_the_shutdown_drain_are_settled() {
    let redis = RedisServer::start();
    let db = test_database_url();
    let mut app = spawn_app_with(settings_with(&[
        ("HAWKER__DATABASE__URL", &db),
        ("HAWKER__REDIS__URL", &redis.url()),
        ("HAWKER__SERVER__SHUTDOWN_DRAIN_MS", "1500"),
    ]))
    .await;
    let (agency, session) = session_with_lineup(&app).await;
    let deal = create_deal(
        &app,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": 100, "per_buyer_cap": 1, "duration_secs": 120}),
    )
    .await;
    let deal_id = Uuid::parse_str(&deal).unwrap();
    assert_eq!(
        buy_with(
            &app.http,
            app.addr,
            &app.token("before", Role::Viewer),
            &deal,
            "k",
            1
        )
        .await
        .0,
        201
    );

    // Shutdown begins: readiness says 503, but the listeners still accept
    // during the drain, and what they admit is settled, not refused.
    app.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let during = (0..20).map(|i| {
        let (http, addr, deal) = (app.http.clone(), app.addr, deal.clone());
        let token = app.token(&format!("drain-{i}"), Role::Viewer);
        async move { buy_with(&http, addr, &token, &deal, "k", 1).await.0 }
    });
    let statuses = futures_util::future::join_all(during).await;
    assert!(
        statuses.iter().all(|s| *s == 201),
        "purchases during the drain: {statuses:?}"
    );
    app.stop().await.unwrap();
    let after = sqlx::PgPool::connect(&db).await.unwrap();
    let sold: i32 = sqlx::query_scalar("select sold from deal where deal_id = $1")
        .bind(deal_id)
        .fetch_one(&after)
        .await
        .unwrap();
    assert_eq!(sold, 21);
    assert_eq!(
        gate_of(&redis, deal_id).await,
        (Some(79), 0),
        "no unit held after shutdown"
    );
}

/// A free port on 127.0.0.1, for a node restarted at the same address.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// SIGTERM, then waits (up to 30 s) for the process to exit by itself.
async fn terminate(mut process: ServerProcess) -> std::process::ExitStatus {
    signal(&process, "TERM");
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        loop {
            if let Some(status) = process.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the node exits after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap()
}

/// One purchase attempt: (status, body); status 0 when no answer came,
/// `refused` when not even a connection was made (nothing was sent).
async fn attempt(
    http: &reqwest::Client,
    node: SocketAddr,
    token: &str,
    deal: &str,
    key: &str,
    quantity: i32,
) -> (u16, Value, bool) {
    let sent = http
        .post(format!("http://{node}/v1/deals/{deal}/orders"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({ "quantity": quantity }))
        .send()
        .await;
    match sent {
        Ok(response) => {
            let (status, body) = crate::support::answer(response).await;
            (status, body, false)
        }
        Err(e) => (0, Value::Null, e.is_connect()),
    }
}

/// Buys `quantity` on `nodes[first]` until a definite answer (for up to
/// 40 s). A refused connection is tried again on the other node (nothing was
/// sent). A 503 or a lost answer is retried there with the same key, unless
/// the buyer is one who `abandons` then: that answer is returned.
async fn buy_until_answered(
    http: &reqwest::Client,
    nodes: &[SocketAddr; 2],
    first: usize,
    token: &str,
    deal: &str,
    quantity: i32,
    abandons: bool,
) -> (u16, Value) {
    let started = Instant::now();
    let mut node = first;
    loop {
        let (status, body, refused) = attempt(http, nodes[node % 2], token, deal, "k", quantity).await;
        let definite = status != 503 && status != 0;
        if definite || (abandons && !refused) || started.elapsed() > Duration::from_secs(40) {
            return (status, body);
        }
        node += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// Several threads: the in-test node keeps running while the test waits on
// child processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_both_nodes_answers_no_false_sold_out_and_loses_no_order() {
    let redis = RedisServer::start();
    let db = test_database_url();
    // Only creates the deal and reads Postgres; buyers never reach it.
    let fixture = spawn_app_with(with_redis(&db, &redis)).await;
    let (agency, session) = session_with_lineup(&fixture).await;
    // Phase one answers about 400 buyers of one unit.
    let quantity = 2000;
    let deal = create_deal(
        &fixture,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": quantity, "per_buyer_cap": 100, "duration_secs": 300}),
    )
    .await;
    let deal_id = Uuid::parse_str(&deal).unwrap();
    // Two nodes at fixed addresses, as behind a load balancer; each drains
    // half a second on SIGTERM.
    let ports = [free_port(), free_port()];
    let start_node = |port: u16| {
        let listen = format!("127.0.0.1:{port}");
        hawker_node(
            &db,
            &redis,
            &[
                ("HAWKER__SERVER__LISTEN", listen.as_str()),
                ("HAWKER__SERVER__SHUTDOWN_DRAIN_MS", "500"),
            ],
        )
        .0
    };
    let mut running = [Some(start_node(ports[0])), Some(start_node(ports[1]))];
    let nodes: [SocketAddr; 2] = [
        format!("127.0.0.1:{}", ports[0]).parse().unwrap(),
        format!("127.0.0.1:{}", ports[1]).parse().unwrap(),
    ];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // A stampede of one-unit buyers on both nodes (far fewer units than the
    // deal has). Half retry with their key until they have a definite answer;
    // the other half give up after a 503 or a lost answer, as a careless
    // client would: what they leave behind must not strand units.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..8usize {
        let (http, stop, answered, deal, keys) = (
            http.clone(),
            stop.clone(),
            answered.clone(),
            deal.clone(),
            fixture.keys.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let token = token(&keys, &format!("w{worker}-{n}"), Role::Viewer);
                let abandons = n % 2 == 0;
                let answer = buy_until_answered(&http, &nodes, worker + n, &token, &deal, 1, abandons).await;
                answered.fetch_add(1, Ordering::Relaxed);
                answers.push(answer);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            answers
        }));
    }
    let wait_for_answers = |more: usize| {
        let answered = answered.clone();
        async move {
            let target = answered.load(Ordering::Relaxed) + more;
            let reached = poll(
                Patience::For(Duration::from_secs(30)),
                Duration::from_millis(20),
                || async { answered.load(Ordering::Relaxed) },
                |n| *n >= target,
            )
            .await;
            assert!(reached >= target, "buyers are answered");
        }
    };
    wait_for_answers(100).await;
    // Restart A, then B, while buying goes on.
    for i in 0..2 {
        let status = terminate(running[i].take().unwrap()).await;
        assert!(status.success(), "node {i} exits cleanly: {status}");
        wait_for_answers(50).await;
        running[i] = Some(start_node(ports[i]));
        wait_for_answers(100).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for worker in workers {
        answers.extend(worker.await.unwrap());
    }

    let sold: i32 = sqlx::query_scalar("select sold from deal where deal_id = $1")
        .bind(deal_id)
        .fetch_one(&fixture.db)
        .await
        .unwrap();
    assert!(sold < quantity, "the stampede leaves units: {sold}");
    let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
    for (status, body) in &answers {
        *outcomes
            .entry(format!("{status} {}", body["message"]))
            .or_default() += 1;
    }
    eprintln!("rolling restart: {outcomes:?}, sold {sold}/{quantity}");
    assert!(
        answers.iter().all(|(status, _)| [201, 503, 0].contains(status)),
        "no buyer is refused while units are left: {outcomes:?}"
    );
    let samples: Vec<Sample> = answers
        .iter()
        .map(|(status, body)| Sample {
            node: 0,
            at: Instant::now(),
            status: *status,
            order_id: body["order_id"].as_str().and_then(|id| id.parse().ok()),
        })
        .collect();
    assert_orders_hold(&fixture.db, &deal, &samples).await;

    // No unit was stranded by the restarts: the rest sells, to the last unit,
    // before the first sold_out (the reconciler frees nothing in this time).
    let mut n = 0;
    loop {
        let sold: i32 = sqlx::query_scalar("select sold from deal where deal_id = $1")
            .bind(deal_id)
            .fetch_one(&fixture.db)
            .await
            .unwrap();
        let units = (quantity - sold).clamp(1, 100);
        n += 1;
        let token = token(&fixture.keys, &format!("last-{n}"), Role::Viewer);
        let (status, body) = buy_until_answered(&http, &nodes, n, &token, &deal, units, false).await;
        if sold == quantity {
            assert_eq!(
                (status, body["error"].as_str()),
                (409, Some("sold_out")),
                "{body}"
            );
            break;
        }
        assert_eq!(status, 201, "{units} of the {} left: {body}", quantity - sold);
    }
    drop(running);
}

/// The buyers' units of a deal's gate, by buyer.
async fn gate_buyers(redis: &RedisServer, deal: Uuid) -> std::collections::HashMap<String, i64> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("HGETALL")
        .arg(format!("hawker:deal:{{{deal}}}:buyers"))
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// The reconciler compares a deal's buyers a slice per tick, not all of
/// them at once (a deal with a million buyers would hold Redis for a second
/// every tick): 1,600 buyers whose gate counts drifted, one of them lost from
/// the gate altogether, are corrected over a few ticks, and the first tick
/// corrects only some of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_is_corrected_a_slice_of_buyers_per_tick() {
    let redis = RedisServer::start();
    let db = test_database_url();
    let mut settings = with_redis(&db, &redis);
    // The node's own reconciler stays out of the way: the test drives it.
    settings.commerce.scheduler_tick_ms = 600_000;
    let app = spawn_app_with(settings).await;
    let (agency, session) = session_with_lineup(&app).await;
    let deal = create_deal(
        &app,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": 5000, "per_buyer_cap": 2, "duration_secs": 600}),
    )
    .await;
    let deal = Uuid::parse_str(&deal).unwrap();
    let buyers: Vec<String> = (0..1600).map(|i| format!("buyer-{i:04}")).collect();
    // Each holds one unit in Postgres (and 1,600 were sold).
    sqlx::query(
        "insert into deal_buyer (deal_id, buyer_id, units, cap) select $1, b, 1, 2 from unnest($2::text[]) b",
    )
    .bind(deal)
    .bind(&buyers)
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query("update deal set sold = 1600 where deal_id = $1")
        .bind(deal)
        .execute(&app.db)
        .await
        .unwrap();
    let gate = app.commerce.gate();
    gate.rebuild(deal).await.unwrap();
    assert!(gate_buyers(&redis, deal).await.values().all(|u| *u == 1));

    // The gate drifts: every buyer counted twice, one forgotten.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("hawker:deal:{{{deal}}}:buyers");
    let mut drifted = redis::cmd("HSET");
    drifted.arg(&key);
    for buyer in &buyers {
        drifted.arg(buyer).arg(2);
    }
    drifted.query_async::<i64>(&mut conn).await.unwrap();
    redis::cmd("HDEL")
        .arg(&key)
        .arg("buyer-1500")
        .query_async::<i64>(&mut conn)
        .await
        .unwrap();

    let wrong = |counts: std::collections::HashMap<String, i64>| {
        buyers.iter().filter(|b| counts.get(*b) != Some(&1)).count()
    };
    gate.converge(deal).await.unwrap();
    let after_one = wrong(gate_buyers(&redis, deal).await);
    assert!(after_one > 0, "one tick compares a slice, not all 1,600");
    assert!(after_one < 1600, "one tick corrects its slice");
    let mut ticks = 1;
    while wrong(gate_buyers(&redis, deal).await) > 0 {
        assert!(ticks < 12, "every buyer is corrected within a few ticks");
        gate.converge(deal).await.unwrap();
        ticks += 1;
    }
    println!("{after_one} of 1,600 wrong after the first tick; all corrected after {ticks}");
}
