//! Provably fair giveaways against real Postgres and Redis: entries over
//! two nodes, the frozen list and the draw recomputed from what was
//! published, "must be present" across nodes with a verifiable redraw,
//! one entry per user, eligibility, prizes handed out in the draw's
//! transaction, voiding.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use hawker_core::Role;
use hawker_live::giveaways::fair;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::fixtures::{buy, create_deal, session_with_lineup};
use std::process::Stdio;

use crate::support::process::{hawker, ServerProcess};
use crate::support::socket::{self, Ws};
use crate::support::{settings_with, spawn_app_with, test_database_url, two_nodes, NodeOptions, TestApp};

async fn lineup_item(app: &TestApp, session: Uuid) -> String {
    let (status, page) = app
        .send(
            Method::GET,
            &format!("/v1/sessions/{session}/lineup"),
            &app.token("giveaway-reader", Role::Viewer),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["items"][0]["lineup_item_id"].as_str().unwrap().to_string()
}

async fn start(app: &TestApp, agency: Uuid, session: Uuid, body: Value) -> Value {
    let (status, giveaway) = app
        .send(
            Method::POST,
            &format!("/v1/sessions/{session}/giveaways"),
            &app.agency_token(agency),
            Some(body),
        )
        .await;
    assert_eq!(status, 201, "{giveaway}");
    giveaway
}

/// Ends the entry window now (instead of waiting for it).
async fn close_now(app: &TestApp, giveaway: &str) {
    sqlx::query("update giveaway set closes_at = greatest(now(), opens_at + interval '1 millisecond') where giveaway_id = $1")
        .bind(Uuid::parse_str(giveaway).unwrap())
        .execute(&app.db)
        .await
        .unwrap();
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    app.send(
        Method::GET,
        path,
        &app.token("giveaway-reader", Role::Viewer),
        None,
    )
    .await
}

/// Polls the giveaway until it has `status` (or, for `closed`, has gone
/// past it to `drawn`).
async fn until_status(app: &TestApp, giveaway: &str, status: &str, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (code, body) = get(app, &format!("/v1/giveaways/{giveaway}")).await;
        assert_eq!(code, 200, "{body}");
        if body["status"] == status || (status == "closed" && body["status"] == "drawn") {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "giveaway never became {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `giveaway.enter`, retried while the answer is `unavailable` (as clients
/// are told to: a loaded database turns some away).
async fn enter(ws: &mut Ws, giveaway: &str) -> Value {
    for _ in 0..20 {
        // Patient: 10,000 entries on a debug build of a shared machine.
        let id = ws
            .send("giveaway.enter", json!({ "giveaway_id": giveaway }))
            .await;
        let reply = ws
            .until("the reply to giveaway.enter", Duration::from_secs(60), |f| {
                f["id"] == id.as_str() && (f["type"] == "ack" || f["type"] == "error")
            })
            .await;
        if reply["code"] != "unavailable" {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("giveaway.enter stayed unavailable");
}

/// Joins as a viewer whose app waits for its welcome and tries again after
/// a refusal (`unavailable` when the node could not join it in time): on a
/// machine running the rest of the suite, 10,000 joins can take a while.
async fn patient_join(addr: std::net::SocketAddr, session: Uuid, token: &str) -> Ws {
    for _ in 0..5 {
        let mut ws = socket::connect(addr, session, token, None).await;
        let first = ws
            .until("a welcome or a refusal", Duration::from_secs(90), |f| {
                f["type"] == "welcome" || f["type"] == "error"
            })
            .await;
        if first["type"] == "welcome" {
            return ws;
        }
        eprintln!("join refused ({first}); joining again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the node refused the join five times");
}

fn entry_id(ack: &Value) -> String {
    assert_eq!(ack["type"], "ack", "{ack}");
    ack["data"]["entry"]["entry_id"].as_str().unwrap().to_string()
}

/// Recomputes the draw from the published seed and list, as `hawker
/// verify-draw` does.
fn recompute(seed: &str, list: &Value, winners: usize, absent: &[String]) -> Vec<String> {
    let report = fair::verify(seed, &list.to_string(), winners, absent, None).unwrap();
    report
        .lines()
        .filter_map(|l| l.strip_prefix("winner "))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        .collect()
}

/// Runs docs/verify_draw.py on the published list.
fn python_verify(
    seed: &str,
    list: &Value,
    winners: usize,
    absent: &[String],
    me: Option<(&str, &str)>,
) -> String {
    let file = std::env::temp_dir().join(format!("hawker-entries-{}.json", Uuid::new_v4()));
    std::fs::write(&file, list.to_string()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/verify_draw.py");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script)
        .arg(&file)
        .arg(seed)
        .arg(winners.to_string())
        .args(absent);
    if let Some((giveaway, user)) = me {
        cmd.args(["--me", giveaway, user]);
    }
    let out = cmd.output().expect("python3 runs docs/verify_draw.py");
    let _ = std::fs::remove_file(&file);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_entrants_over_two_nodes_three_winners_anyone_can_recompute() {
    let _storm = crate::support::storm::exclusive().await;
    // `GIVEAWAY_ENTRANTS` shrinks it when looking into a failure.
    let entrants: usize = std::env::var("GIVEAWAY_ENTRANTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let db = test_database_url();
    let fixture = spawn_app_with(settings_with(&[("HAWKER__DATABASE__URL", db.as_str())])).await;
    let (agency, session) = session_with_lineup(&fixture).await;
    let item = lineup_item(&fixture, session).await;
    // The two nodes serving the sockets: child processes, so that this
    // process holds only the clients' 10,000 sockets.
    let env = [
        ("HAWKER__SERVER__MAX_CONNECTIONS_PER_IP", "20000"),
        ("HAWKER__DATABASE__MAX_CONNECTIONS", "8"),
        // The clients read nothing while the others join and enter (they
        // answer no ping): no idle close meanwhile.
        ("HAWKER__HUB__IDLE_TIMEOUT_SECS", "900"),
    ];
    let redis = "redis://127.0.0.1:6379";
    let node = || {
        let mut command = hawker(&["serve"], &db);
        command.env("HAWKER__REDIS__URL", redis).stderr(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let (server, _, lines) = ServerProcess::start(&mut command);
        // Its warnings and errors, on the test's output.
        std::thread::spawn(move || {
            for line in lines {
                if line.contains("\"WARN\"") || line.contains("\"ERROR\"") {
                    eprintln!("node: {line}");
                }
            }
        });
        server
    };
    let mut node_a = node();
    let mut node_b = node();
    let nodes = [node_a.addr, node_b.addr];

    let joining = std::time::Instant::now();
    let clients: Vec<Ws> = stream::iter(0..entrants)
        .map(|i| {
            let token = fixture.token(&format!("entrant-{i:05}"), Role::Viewer);
            let addr = nodes[i % 2];
            async move { patient_join(addr, session, &token).await }
        })
        .buffered(64)
        .collect()
        .await;
    eprintln!("{entrants} sockets joined in {:?}", joining.elapsed());
    let giveaway = start(
        &fixture,
        agency,
        session,
        json!({"lineup_item_id": item, "winners": 3, "entry_window_secs": 600, "must_be_present": true}),
    )
    .await;
    let id = giveaway["giveaway_id"].as_str().unwrap().to_string();
    let seed_hash = giveaway["seed_hash"].as_str().unwrap().to_string();
    assert!(giveaway["seed"].is_null(), "the seed stays secret: {giveaway}");

    let started = std::time::Instant::now();
    let entered: Vec<(Ws, String)> = stream::iter(clients)
        .map(|mut ws| {
            let id = id.clone();
            async move {
                let ack = enter(&mut ws, &id).await;
                let entry = entry_id(&ack);
                (ws, entry)
            }
        })
        .buffer_unordered(100)
        .collect()
        .await;
    let took = started.elapsed();
    eprintln!(
        "{entrants} entries in {took:?} ({:.0}/s)",
        entrants as f64 / took.as_secs_f64()
    );
    let mine: HashMap<String, usize> = entered
        .iter()
        .enumerate()
        .map(|(i, (_, e))| (e.clone(), i))
        .collect();
    assert_eq!(mine.len(), entrants, "every entrant has an entry id of their own");

    // Entries are refused once the list is frozen.
    close_now(&fixture, &id).await;
    let closed = until_status(&fixture, &id, "closed", Duration::from_secs(20)).await;
    let (status, list) = get(&fixture, &format!("/v1/giveaways/{id}/entries")).await;
    assert_eq!(status, 200, "{list}");
    let published: HashSet<String> = strings(&list["entries"]).into_iter().collect();
    assert_eq!(list["entry_count"], entrants, "no entry lost or counted twice");
    assert_eq!(published.len(), entrants);
    assert!(
        mine.keys().all(|e| published.contains(e)),
        "every entrant finds their own entry"
    );
    assert_eq!(closed["entries_hash"], list["entries_hash"]);
    let listed = list.to_string();
    assert!(
        !listed.contains("entrant-"),
        "no subject id is published: {}",
        &listed[..200]
    );

    // The room heard the list's hash before the seed (every client stays
    // connected: winners must be present).
    let mut entered = entered;
    let ws = &mut entered[0].0;
    let mut closed_seen = false;
    let drawn = loop {
        let frame = ws
            .until("giveaway.closed or drawn", Duration::from_secs(30), |f| {
                f["type"] == "giveaway.closed" || f["type"] == "giveaway.drawn"
            })
            .await;
        if frame["type"] == "giveaway.closed" {
            assert_eq!(frame["data"]["entries_hash"], list["entries_hash"]);
            closed_seen = true;
        } else {
            break frame;
        }
    };
    assert!(closed_seen, "giveaway.closed came before giveaway.drawn");
    let data = &drawn["data"];
    let seed = data["seed"].as_str().unwrap();
    assert_eq!(
        fair::seed_hash(&unhex(seed).try_into().unwrap()),
        seed_hash,
        "the seed is the one committed to"
    );
    let winners = strings(&data["winners"]);
    assert_eq!(winners.len(), 3);
    assert_eq!(
        strings(&data["absent"]),
        Vec::<String>::new(),
        "everyone is in the room"
    );
    assert_eq!(recompute(seed, &list, 3, &[]), winners);

    // Each winner has a zero-amount paid order of the giveaway.
    let giveaway_uuid = Uuid::parse_str(&id).unwrap();
    let orders: Vec<(String, i64, String, String)> = sqlx::query_as(
        "select o.buyer_id, o.amount_minor, o.status, o.source from customer_order o
          where o.giveaway_id = $1 order by o.buyer_id",
    )
    .bind(giveaway_uuid)
    .fetch_all(&fixture.db)
    .await
    .unwrap();
    assert_eq!(orders.len(), 3, "{orders:?}");
    assert!(
        orders
            .iter()
            .all(|o| o.1 == 0 && o.2 == "paid" && o.3 == "giveaway"),
        "{orders:?}"
    );
    let winner_users: Vec<String> =
        sqlx::query_scalar("select user_id from giveaway_winner where giveaway_id = $1 order by rank")
            .bind(giveaway_uuid)
            .fetch_all(&fixture.db)
            .await
            .unwrap();
    let mut sorted = winner_users.clone();
    sorted.sort();
    assert_eq!(sorted, orders.iter().map(|o| o.0.clone()).collect::<Vec<_>>());
    node_a.kill();
    node_b.kill();
}

#[tokio::test]
async fn a_winner_who_left_the_room_is_replaced_and_the_redraw_is_verifiable() {
    let (a, b, agency, session) = two_nodes(NodeOptions::default()).await;
    crate::support::fixtures::lineup(&a, agency, session).await;
    let item = lineup_item(&a, session).await;
    let giveaway = start(
        &a,
        agency,
        session,
        json!({"lineup_item_id": item, "winners": 2, "entry_window_secs": 600, "must_be_present": true}),
    )
    .await;
    let id = giveaway["giveaway_id"].as_str().unwrap().to_string();
    let mut sockets: Vec<(String, Ws)> = Vec::new();
    let mut entries: Vec<String> = Vec::new();
    for i in 0..8 {
        let user = format!("present-{i}");
        let node = if i % 2 == 0 { &a } else { &b };
        let mut ws = socket::join(node.addr, session, &node.token(&user, Role::Viewer)).await;
        entries.push(entry_id(&enter(&mut ws, &id).await));
        sockets.push((user, ws));
    }
    // The test knows the seed (from the database) and every entry: it
    // works out the first winner and sends them away before the draw.
    let seed: Vec<u8> = sqlx::query_scalar("select seed from giveaway where giveaway_id = $1")
        .bind(Uuid::parse_str(&id).unwrap())
        .fetch_one(&a.db)
        .await
        .unwrap();
    let seed: [u8; 32] = seed.try_into().unwrap();
    for (i, entry) in entries.iter().enumerate() {
        let derived = fair::entry_id(&seed, Uuid::parse_str(&id).unwrap(), &format!("present-{i}"));
        assert_eq!(
            *entry, derived,
            "an entry id derives from the committed seed, the giveaway and its entrant"
        );
    }
    let mut sorted = entries.clone();
    sorted.sort();
    let first = fair::draw(&seed, &fair::list_hash(&sorted), sorted.len(), 2, &HashSet::new());
    let leaver_entry = sorted[first.winners[0]].clone();
    let leaver = entries.iter().position(|e| *e == leaver_entry).unwrap();
    let (leaver_user, leaver_ws) = sockets.remove(leaver);
    drop(leaver_ws);
    // Gone from presence on every node (its node sees the socket close).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a
        .hub
        .present(session, std::slice::from_ref(&leaver_user))
        .await
        .unwrap()
        != vec![false]
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the leaver is still present"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let others: Vec<String> = sockets.iter().map(|(u, _)| u.clone()).collect();
    assert!(
        b.hub.present(session, &others).await.unwrap().iter().all(|p| *p),
        "everyone else is present, whichever node they are on"
    );

    close_now(&a, &id).await;
    let drawn = until_status(&b, &id, "drawn", Duration::from_secs(20)).await;
    let seed_hex = drawn["seed"].as_str().unwrap();
    assert_eq!(seed_hex, hex(&seed));
    let absent = strings(&drawn["absent_entries"]);
    assert_eq!(
        absent,
        vec![leaver_entry.clone()],
        "the absent winner was skipped"
    );
    let winners = strings(&drawn["winner_entries"]);
    assert!(!winners.contains(&leaver_entry));
    assert_eq!(
        winners[0], sorted[first.winners[1]],
        "the sequence goes on where it was"
    );
    let (_, list) = get(&a, &format!("/v1/giveaways/{id}/entries")).await;
    assert_eq!(
        recompute(seed_hex, &list, 2, &absent),
        winners,
        "the redraw is verifiable"
    );
    assert_ne!(recompute(seed_hex, &list, 2, &[]), winners);
    // docs/verify_draw.py, written apart from the Rust code, agrees, and
    // finds an entrant's own id from their subject.
    let stayer = &sockets[0].0;
    let stayer_entry = &entries[stayer.trim_start_matches("present-").parse::<usize>().unwrap()];
    let report = python_verify(seed_hex, &list, 2, &absent, Some((&id, stayer)));
    let python_winners: Vec<String> = report
        .lines()
        .filter_map(|l| l.strip_prefix("winner "))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        .collect();
    assert_eq!(python_winners, winners, "{report}");
    assert!(
        report.contains(&format!("your entry    {stayer_entry} (in the list")),
        "{report}"
    );
    // The stored draw names its inputs and the candidates.
    let (trace, stored_seed): (Value, Vec<u8>) =
        sqlx::query_as("select trace, seed from giveaway_draw where giveaway_id = $1")
            .bind(Uuid::parse_str(&id).unwrap())
            .fetch_one(&a.db)
            .await
            .unwrap();
    assert_eq!(stored_seed, seed.to_vec());
    assert_eq!(trace[0]["entry_id"], leaver_entry.as_str());
    assert_eq!(trace[0]["outcome"], "absent");
    // The first winner hears it privately.
    let winner_at = entries.iter().position(|e| *e == winners[0]).unwrap();
    let winner_at = if winner_at > leaver {
        winner_at - 1
    } else {
        winner_at
    };
    let notice = sockets[winner_at]
        .1
        .until("giveaway.won", Duration::from_secs(10), |f| {
            f["type"] == "notice" && f["kind"] == "giveaway.won"
        })
        .await;
    assert_eq!(notice["data"]["entry_id"], winners[0].as_str());
    let orders: i64 =
        sqlx::query_scalar("select count(*) from customer_order where giveaway_id = $1 and amount_minor = 0")
            .bind(Uuid::parse_str(&id).unwrap())
            .fetch_one(&a.db)
            .await
            .unwrap();
    assert_eq!(orders, 2);
    let leaver_orders: i64 = sqlx::query_scalar("select count(*) from customer_order where buyer_id = $1")
        .bind(&leaver_user)
        .fetch_one(&a.db)
        .await
        .unwrap();
    assert_eq!(leaver_orders, 0);
}

#[tokio::test]
async fn no_entry_is_counted_twice_across_sockets_nodes_and_http() {
    let (a, b, agency, session) = two_nodes(NodeOptions::default()).await;
    crate::support::fixtures::lineup(&a, agency, session).await;
    let drop_body =
        json!({"total": 10, "discount_kind": "percent", "discount_value": 50, "claim_window_secs": 600});
    let (status, drop) = a
        .send(
            Method::POST,
            &format!("/v1/sessions/{session}/coupon-drops"),
            &a.agency_token(agency),
            Some(drop_body),
        )
        .await;
    assert_eq!(status, 201, "{drop}");
    let giveaway = start(
        &a,
        agency,
        session,
        json!({"coupon_drop_id": drop["coupon_drop_id"], "winners": 1, "entry_window_secs": 600}),
    )
    .await;
    let id = giveaway["giveaway_id"].as_str().unwrap().to_string();
    let user = "twice";
    // Reads room events only (the others' replies skip them).
    let mut watcher = socket::join(b.addr, session, &b.token("watcher", Role::Viewer)).await;
    let mut on_a = socket::join(a.addr, session, &a.token(user, Role::Viewer)).await;
    let mut on_b = socket::join(b.addr, session, &b.token(user, Role::Viewer)).await;
    // All at once: two sockets on two nodes, twice each, and HTTP on both.
    let token_a = a.token(user, Role::Viewer);
    let token_b = b.token(user, Role::Viewer);
    let http = |app: &TestApp, token: String| {
        let request = app
            .http
            .post(app.url(&format!("/v1/giveaways/{id}/entries")))
            .bearer_auth(token);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (x1, x2, h1, h2) = tokio::join!(
        enter(&mut on_a, &id),
        enter(&mut on_b, &id),
        http(&a, token_a),
        http(&b, token_b),
    );
    let (y1, y2) = tokio::join!(enter(&mut on_a, &id), enter(&mut on_b, &id));
    let ids: HashSet<String> = [
        entry_id(&x1),
        entry_id(&x2),
        entry_id(&y1),
        entry_id(&y2),
        h1.1["entry_id"]
            .as_str()
            .unwrap_or_else(|| panic!("HTTP on a: {h1:?}"))
            .to_string(),
        h2.1["entry_id"]
            .as_str()
            .unwrap_or_else(|| panic!("HTTP on b: {h2:?}"))
            .to_string(),
    ]
    .into_iter()
    .collect();
    assert_eq!(ids.len(), 1, "one entry, whatever the path: {ids:?}");
    let fresh = [h1.0, h2.0].iter().filter(|s| **s == 201).count()
        + [&x1, &x2]
            .iter()
            .filter(|f| f["data"]["entry"]["replayed"] == false)
            .count();
    assert_eq!(fresh, 1, "exactly one call created it");
    assert_eq!(y1["data"]["entry"]["replayed"], true);

    // The room's count says 1 (coalesced `giveaway.entries`).
    let counted = watcher
        .until("giveaway.entries", Duration::from_secs(10), |f| {
            f["type"] == "giveaway.entries" && f["data"]["count"] == 1
        })
        .await;
    assert_eq!(counted["data"]["giveaway_id"], id.as_str());

    close_now(&a, &id).await;
    let drawn = until_status(&a, &id, "drawn", Duration::from_secs(20)).await;
    assert_eq!(drawn["entry_count"], 1);
    let again = enter(&mut on_a, &id).await;
    assert_eq!(
        entry_id(&again),
        ids.iter().next().unwrap().clone(),
        "the entry, once more"
    );
    let mut latecomer = socket::join(a.addr, session, &a.token("latecomer", Role::Viewer)).await;
    let late = enter(&mut latecomer, &id).await;
    assert_eq!(late["type"], "error", "{late}");
    assert_eq!(late["code"], "giveaway_closed", "{late}");
    // The coupon prize: a claim on the drop, in the draw's transaction.
    let claims: i64 = sqlx::query_scalar(
        "select count(*) from giveaway_winner w join coupon_claim c using (coupon_claim_id)
          where w.giveaway_id = $1 and c.viewer_id = $2",
    )
    .bind(Uuid::parse_str(&id).unwrap())
    .bind(user)
    .fetch_one(&a.db)
    .await
    .unwrap();
    assert_eq!(claims, 1);
}

#[tokio::test]
async fn eligibility_rules_hold_and_a_void_is_shown_with_its_reason() {
    let app = spawn_app_with(settings_with(&[])).await;
    let (agency, session) = session_with_lineup(&app).await;
    let item = lineup_item(&app, session).await;
    let stock_before: i32 = sqlx::query_scalar(
        "select s.stock_on_hand from sku s join lineup_item l using (sku_id) where l.lineup_item_id = $1",
    )
    .bind(Uuid::parse_str(&item).unwrap())
    .fetch_one(&app.db)
    .await
    .unwrap();
    let giveaway = start(
        &app,
        agency,
        session,
        json!({"lineup_item_id": item, "winners": 5, "entry_window_secs": 600, "eligibility": "buyers"}),
    )
    .await;
    let id = giveaway["giveaway_id"].as_str().unwrap().to_string();
    let enter_http = |token: String| {
        let app = &app;
        let id = id.clone();
        async move {
            app.send(Method::POST, &format!("/v1/giveaways/{id}/entries"), &token, None)
                .await
        }
    };
    // Not a buyer yet.
    let (status, body) = enter_http(app.token("window-shopper", Role::Viewer)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("not_eligible")),
        "{body}"
    );
    // A buyer in the session may.
    let deal = create_deal(
        &app,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": 10, "per_buyer_cap": 2, "duration_secs": 120}),
    )
    .await;
    let (status, order) = buy(&app, "buyer-1", &deal, "k1", 1).await;
    assert_eq!(status, 201, "{order}");
    let (status, body) = enter_http(app.token("buyer-1", Role::Viewer)).await;
    assert_eq!(status, 201, "{body}");
    // The host's side and the brand never enter.
    let brand: Uuid = sqlx::query_scalar(
        "select p.brand_id from lineup_item l join sku s using (sku_id) join product p using (product_id)
          where l.lineup_item_id = $1",
    )
    .bind(Uuid::parse_str(&item).unwrap())
    .fetch_one(&app.db)
    .await
    .unwrap();
    for token in [
        app.agency_token(agency),
        app.brand_token(brand),
        app.token("an-admin", Role::Admin),
        app.token(&Uuid::new_v4().to_string(), Role::Host),
    ] {
        let (status, body) = enter_http(token).await;
        assert_eq!(status, 403, "{body}");
    }
    // A host's socket cannot enter either.
    let mut viewer = socket::join(app.addr, session, &app.token("watching", Role::Viewer)).await;
    let mut agency_ws = socket::join(app.addr, session, &app.agency_token(agency)).await;
    let refused = enter(&mut agency_ws, &id).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");

    // Voided with a reason: the room sees it, the units go back.
    let (status, body) = app
        .send(
            Method::POST,
            &format!("/v1/giveaways/{id}/void"),
            &app.token("window-shopper", Role::Viewer),
            Some(json!({"reason": "nope"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, voided) = app
        .send(
            Method::POST,
            &format!("/v1/giveaways/{id}/void"),
            &app.agency_token(agency),
            Some(json!({"reason": "the prize was damaged"})),
        )
        .await;
    assert_eq!(status, 200, "{voided}");
    assert_eq!(voided["status"], "voided");
    assert_eq!(voided["void_reason"], "the prize was damaged");
    let event = viewer
        .until("giveaway.voided", Duration::from_secs(10), |f| {
            f["type"] == "giveaway.voided"
        })
        .await;
    assert_eq!(event["data"]["reason"], "the prize was damaged");
    let stock_after: i32 = sqlx::query_scalar(
        "select s.stock_on_hand from sku s join lineup_item l using (sku_id) where l.lineup_item_id = $1",
    )
    .bind(Uuid::parse_str(&item).unwrap())
    .fetch_one(&app.db)
    .await
    .unwrap();
    // The deal's 10 units are out; the giveaway's 5 came back.
    assert_eq!(stock_after, stock_before - 10);
    let (status, again) = app
        .send(
            Method::POST,
            &format!("/v1/giveaways/{id}/void"),
            &app.agency_token(agency),
            Some(json!({"reason": "twice"})),
        )
        .await;
    assert_eq!((status, again["error"].as_str()), (409, Some("giveaway_over")));
    let (status, body) = enter_http(app.token("buyer-1", Role::Viewer)).await;
    assert_eq!(
        (status, body["replayed"].as_bool()),
        (200, Some(true)),
        "an entrant gets their entry back: {body}"
    );
    // (A node answers entries from a copy of the giveaway up to 500 ms old:
    // until then a newcomer may be told why they could not have entered.)
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, body) = enter_http(app.token("buyer-2", Role::Viewer)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("giveaway_closed")),
        "{body}"
    );
}
