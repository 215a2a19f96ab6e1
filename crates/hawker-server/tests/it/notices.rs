//! Private notices: one user hears something, on every node and socket they
//! have, and nobody else does; users who were away get them when they join;
//! nothing is lost when a node dies after the commit, nothing is invented
//! by a rollback; notices expire.

use std::time::Duration;

use futures_util::future::join_all;
use hawker_core::Role;
use hawker_hub::Notice;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::fixtures::{buy, create_deal, session_with_lineup};
use crate::support::process::ServerProcess;
use crate::support::socket::{join, try_connect_with, Ws};
use crate::support::{
    poll, settings_with, spawn_app, spawn_app_with, test_database_url, two_nodes, NodeOptions, Patience,
    RedisServer, TestApp,
};

/// How long a socket listens for frames that must (or must not) come.
const LISTEN: Duration = Duration::from_millis(2500);

fn notice(user: &str, kind: &str, marker: &str) -> Notice {
    Notice::new(user, kind, json!({ "marker": marker }))
}

/// The notice frames among `frames`.
fn notices(frames: &[Value]) -> Vec<&Value> {
    frames.iter().filter(|f| f["type"] == "notice").collect()
}

/// Joins and reads the frames that follow the welcome for `within`.
async fn join_with(app: &TestApp, session: Uuid, user: &str, query: Option<&str>) -> Ws {
    let token = app.token(user, Role::Viewer);
    let mut ws = try_connect_with(app.addr, session, &token, query, None)
        .await
        .expect("socket opens");
    ws.expect("welcome").await;
    ws
}

async fn list(app: &TestApp, user: &str, query: &str) -> (u16, Value) {
    app.send(
        Method::GET,
        &format!("/v1/me/notices{query}"),
        &app.token(user, Role::Viewer),
        None,
    )
    .await
}

#[tokio::test]
async fn a_notice_to_one_viewer_among_a_thousand_on_two_nodes_reaches_only_that_users_sockets() {
    let (a, b, _, session) =
        two_nodes(NodeOptions::default().env(&[("HAWKER__HUB__PRESENCE_BELOW", "1")])).await;
    let target = "target-viewer";
    // 1,000 sockets: the target's two (one per node) and 998 others.
    let mut users: Vec<(String, bool)> = (0..998).map(|i| (format!("viewer-{i}"), i % 2 == 0)).collect();
    users.push((target.to_string(), true));
    users.push((target.to_string(), false));
    let mut sockets: Vec<(String, Ws)> = Vec::new();
    let (ra, rb) = (&a, &b);
    for chunk in users.chunks(50) {
        let joined = join_all(chunk.iter().map(|(user, on_a)| async move {
            let app = if *on_a { ra } else { rb };
            (
                user.clone(),
                join(app.addr, session, &app.token(user, Role::Viewer)).await,
            )
        }))
        .await;
        sockets.extend(joined);
    }
    assert_eq!(sockets.len(), 1000);

    let secret = format!("for-target-only-{}", Uuid::new_v4());
    let id = a
        .hub
        .publish_notice(&notice(target, "order.paid", &secret).in_session(session))
        .await
        .unwrap();
    // Scoped to another session: not for sockets in this one.
    let elsewhere = format!("other-room-{}", Uuid::new_v4());
    b.hub
        .publish_notice(&notice(target, "order.paid", &elsewhere).in_session(Uuid::new_v4()))
        .await
        .unwrap();

    let heard = join_all(sockets.iter_mut().map(|(user, ws)| async move {
        let frames = ws.frames_for(LISTEN).await;
        (user.clone(), frames)
    }))
    .await;
    let mut target_sockets = 0;
    for (user, frames) in &heard {
        let texts: Vec<String> = frames.iter().map(Value::to_string).collect();
        assert!(
            !texts.iter().any(|t| t.contains(&elsewhere)),
            "{user} got a notice scoped to another room"
        );
        if user == target {
            target_sockets += 1;
            let got = notices(frames);
            assert_eq!(got.len(), 1, "{user}: {texts:?}");
            assert_eq!(got[0]["id"], id);
            assert_eq!(got[0]["data"]["marker"], secret.as_str());
            assert_eq!(got[0]["session_id"], session.to_string());
        } else {
            assert!(
                !texts
                    .iter()
                    .any(|t| t.contains(&secret) || t.contains("\"notice\"")),
                "{user} saw the target's notice: {texts:?}"
            );
        }
    }
    assert_eq!(target_sockets, 2);
}

#[tokio::test]
async fn three_notices_for_an_offline_user_arrive_in_order_once_when_they_join() {
    let app = spawn_app().await;
    let (_, session) = session_with_lineup(&app).await;
    let user = "away-viewer";
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(
            app.hub
                .publish_notice(&notice(user, "order.paid", &format!("n{n}")))
                .await
                .unwrap(),
        );
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // Published on Redis with nobody listening: only the join can deliver them.
    poll(
        Patience::For(Duration::from_secs(5)),
        Duration::from_millis(50),
        || async {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from user_notice where user_id = $1 and published_at is null",
            )
            .bind(user)
            .fetch_one(&app.db)
            .await
            .unwrap()
        },
        |n| *n == 0,
    )
    .await;

    let mut ws = join_with(&app, session, user, None).await;
    let frames = ws.frames_for(LISTEN).await;
    let got = notices(&frames);
    let markers: Vec<&str> = got
        .iter()
        .map(|f| f["data"]["marker"].as_str().unwrap())
        .collect();
    assert_eq!(markers, ["n1", "n2", "n3"], "{frames:?}");
    let got_ids: Vec<i64> = got.iter().map(|f| f["id"].as_i64().unwrap()).collect();
    assert_eq!(got_ids, ids);

    // Delivered now: a new socket without a position gets none again...
    poll(
        Patience::For(Duration::from_secs(5)),
        Duration::from_millis(50),
        || async {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from user_notice where user_id = $1 and delivered_at is null",
            )
            .bind(user)
            .fetch_one(&app.db)
            .await
            .unwrap()
        },
        |n| *n == 0,
    )
    .await;
    let mut again = join_with(&app, session, user, None).await;
    assert!(notices(&again.frames_for(Duration::from_secs(1)).await).is_empty());
    // ...and a client that resumes from the first gets the two after it.
    let mut resumed = join_with(&app, session, user, Some(&format!("notices_after={}", ids[0]))).await;
    let frames = resumed.frames_for(Duration::from_secs(1)).await;
    let got_ids: Vec<i64> = notices(&frames)
        .iter()
        .map(|f| f["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got_ids, ids[1..]);
    // A bad position is refused before the upgrade.
    let refused = try_connect_with(
        app.addr,
        session,
        &app.token(user, Role::Viewer),
        Some("notices_after=minus"),
        None,
    )
    .await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn two_sockets_of_one_user_on_two_nodes_get_each_notice_once_and_the_list_shows_it_once() {
    let (a, b, _, session) = two_nodes(NodeOptions::default()).await;
    let user = "two-devices";
    let mut on_a = join_with(&a, session, user, None).await;
    let mut on_b = join_with(&b, session, user, None).await;
    let first = a
        .hub
        .publish_notice(&notice(user, "order.paid", "one"))
        .await
        .unwrap();
    let second = b
        .hub
        .publish_notice(&notice(user, "order.expired", "two"))
        .await
        .unwrap();
    // Relay again from both nodes: a repeat must not reach a socket twice.
    let (ra, rb) = tokio::join!(a.hub.relay_notices(), b.hub.relay_notices());
    ra.unwrap();
    rb.unwrap();
    for ws in [&mut on_a, &mut on_b] {
        let frames = ws.frames_for(LISTEN).await;
        let ids: Vec<i64> = notices(&frames)
            .iter()
            .map(|f| f["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, [first, second], "{frames:?}");
    }

    let (status, page) = list(&a, user, "").await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["notice_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [first, second]);
    assert_eq!(page["items"][0]["kind"], "order.paid");
    assert_eq!(page["items"][0]["delivered"], true);
    assert_eq!(page["next_cursor"], Value::Null);
    // Paging walks each notice once.
    let (_, one) = list(&b, user, "?limit=1").await;
    assert_eq!(one["items"].as_array().unwrap().len(), 1);
    let cursor = one["next_cursor"].as_str().unwrap().to_string();
    let (_, rest) = list(&b, user, &format!("?limit=1&cursor={cursor}")).await;
    assert_eq!(rest["items"][0]["notice_id"], second);
    assert_eq!(rest["next_cursor"], Value::Null);
    // Another user sees none of them.
    let (_, other) = list(&a, "someone-else", "").await;
    assert_eq!(other["items"], json!([]));
    // Marking read: someone else's ids change nothing; the owner's do.
    let (status, marked) = a
        .send(
            Method::POST,
            "/v1/me/notices/read",
            &a.token("someone-else", Role::Viewer),
            Some(json!({"ids": [first, second]})),
        )
        .await;
    assert_eq!((status, marked["marked"].as_u64()), (200, Some(0)));
    let (status, marked) = a
        .send(
            Method::POST,
            "/v1/me/notices/read",
            &a.token(user, Role::Viewer),
            Some(json!({"up_to": second})),
        )
        .await;
    assert_eq!((status, marked["marked"].as_u64()), (200, Some(2)));
    let (_, page) = list(&a, user, "").await;
    assert!(page["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["read_at"].is_string()));
    let (status, bad) = a
        .send(
            Method::POST,
            "/v1/me/notices/read",
            &a.token(user, Role::Viewer),
            Some(json!({ "ids": (1..=101).collect::<Vec<i64>>() })),
        )
        .await;
    assert_eq!((status, bad["error"].as_str()), (400, Some("bad_read")));
    let (status, bad) = list(&a, user, "?cursor=zz").await;
    assert_eq!((status, bad["error"].as_str()), (400, Some("bad_cursor")));
}

#[tokio::test]
async fn a_notice_in_a_transaction_that_rolls_back_is_never_delivered() {
    let app = spawn_app().await;
    let (_, session) = session_with_lineup(&app).await;
    let user = "rollback-viewer";
    let mut ws = join_with(&app, session, user, None).await;

    let mut tx = app.db.begin().await.unwrap();
    app.hub
        .enqueue_notice(&mut tx, &notice(user, "order.paid", "rolled-back"))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let mut tx = app.db.begin().await.unwrap();
    let kept = app
        .hub
        .enqueue_notice(&mut tx, &notice(user, "order.paid", "committed"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    app.hub.relay_notices().await.unwrap();

    let frames = ws.frames_for(LISTEN).await;
    let got = notices(&frames);
    assert_eq!(got.len(), 1, "{frames:?}");
    assert_eq!(
        (got[0]["id"].as_i64(), got[0]["data"]["marker"].as_str()),
        (Some(kept), Some("committed"))
    );
    assert!(!frames.iter().any(|f| f.to_string().contains("rolled-back")));
    let (_, page) = list(&app, user, "").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    // A later join does not find it either.
    let mut later = join_with(&app, session, user, Some("notices_after=0")).await;
    let frames = later.frames_for(Duration::from_secs(1)).await;
    assert!(!frames.iter().any(|f| f.to_string().contains("rolled-back")));
}

#[tokio::test]
async fn a_node_killed_right_after_the_commit_loses_no_notice() {
    let redis = RedisServer::start();
    let db = test_database_url();
    // Nodes that never relay on their own (an hour between rounds): only
    // the survivor started at the end does.
    let idle_relay = [
        ("HAWKER__DATABASE__URL", db.as_str()),
        ("HAWKER__REDIS__URL", &redis.url()),
        ("HAWKER__HUB__DURABLE_RELAY_MS", "3600000"),
    ];
    let fixture = spawn_app_with(settings_with(&idle_relay)).await;
    let (agency, session) = session_with_lineup(&fixture).await;
    let deal = create_deal(
        &fixture,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": 10, "per_buyer_cap": 2, "duration_secs": 120}),
    )
    .await;
    let buyer = "buyer-on-a-dying-node";
    let (status, order) = buy(&fixture, buyer, &deal, "k1", 1).await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["order_id"].as_str().unwrap().to_string();
    let mut ws = join_with(&fixture, session, buyer, None).await;

    let mut victim = ServerProcess::spawn(&db, &redis.url(), &[("HAWKER__HUB__DURABLE_RELAY_MS", "3600000")]);
    let paid = fixture
        .http
        .post(format!("http://{}/v1/dev/orders/{order_id}/pay", victim.addr))
        .bearer_auth(fixture.token(buyer, Role::Viewer))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    victim.kill();
    let unpublished: i64 = sqlx::query_scalar(
        "select count(*) from user_notice where user_id = $1 and kind = 'order.paid' and published_at is null",
    )
    .bind(buyer)
    .fetch_one(&fixture.db)
    .await
    .unwrap();
    assert_eq!(unpublished, 1, "the victim died before relaying");
    assert!(notices(&ws.frames_for(Duration::from_millis(800)).await).is_empty());

    let _survivor = spawn_app_with(settings_with(&[
        ("HAWKER__DATABASE__URL", db.as_str()),
        ("HAWKER__REDIS__URL", &redis.url()),
    ]))
    .await;
    let got = ws
        .until("the order.paid notice", Duration::from_secs(10), |f| {
            f["type"] == "notice"
        })
        .await;
    assert_eq!(got["kind"], "order.paid");
    assert_eq!(got["data"]["order_id"], order_id.as_str());
}

#[tokio::test]
async fn expiry_removes_undelivered_notices_after_the_configured_time() {
    let app = spawn_app_with(settings_with(&[("HAWKER__HUB__NOTICE_TTL_SECS", "1")])).await;
    let (_, session) = session_with_lineup(&app).await;
    let user = "never-came-back";
    app.hub
        .publish_notice(&notice(user, "order.expired", "stale"))
        .await
        .unwrap();
    let (_, page) = list(&app, user, "").await;
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        1,
        "kept until it expires"
    );

    let left = poll(
        Patience::For(Duration::from_secs(6)),
        Duration::from_millis(100),
        || async {
            sqlx::query_scalar::<_, i64>("select count(*) from user_notice where user_id = $1")
                .bind(user)
                .fetch_one(&app.db)
                .await
                .unwrap()
        },
        |n| *n == 0,
    )
    .await;
    assert_eq!(left, 0, "the sweeper deletes it");
    let (_, page) = list(&app, user, "").await;
    assert_eq!(page["items"], json!([]));
    let mut ws = join_with(&app, session, user, Some("notices_after=0")).await;
    assert!(notices(&ws.frames_for(Duration::from_secs(1)).await).is_empty());
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("hawker_hub_notices_expired_undelivered_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_user_keeps_only_the_newest_notices_up_to_the_cap() {
    let app = spawn_app_with(settings_with(&[("HAWKER__HUB__NOTICE_MAX_PER_USER", "3")])).await;
    let user = "busy-buyer";
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            app.hub
                .publish_notice(&notice(user, "order.paid", &format!("m{n}")))
                .await
                .unwrap(),
        );
    }
    let (_, page) = list(&app, user, "").await;
    let kept: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["notice_id"].as_i64().unwrap())
        .collect();
    assert_eq!(kept, ids[2..]);
}

#[tokio::test]
async fn a_payment_is_told_to_the_buyer_alone_and_the_room_sees_only_sales_counts() {
    let (a, b, _, _) = two_nodes(NodeOptions::default()).await;
    let (agency, session) = session_with_lineup(&a).await;
    let deal = create_deal(
        &a,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": 10, "per_buyer_cap": 2,
               "duration_secs": 120, "show_sales": true}),
    )
    .await;
    let buyer = "paying-buyer";
    let mut buyer_ws = join_with(&b, session, buyer, None).await;
    let mut other = join_with(&a, session, "bystander", None).await;
    let (status, order) = buy(&a, buyer, &deal, "k1", 2).await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["order_id"].as_str().unwrap().to_string();
    let (status, paid) = a
        .send(
            Method::POST,
            &format!("/v1/dev/orders/{order_id}/pay"),
            &a.token(buyer, Role::Viewer),
            None,
        )
        .await;
    assert_eq!(status, 200, "{paid}");

    let got = buyer_ws
        .until("the order.paid notice", Duration::from_secs(10), |f| {
            f["type"] == "notice"
        })
        .await;
    assert_eq!(got["kind"], "order.paid");
    assert_eq!(got["data"]["order_id"], order_id.as_str());
    assert_eq!(got["data"]["amount_minor"], 1000);
    let sales = other
        .until("deal.sales", Duration::from_secs(10), |f| {
            f["type"] == "deal.sales"
        })
        .await;
    assert_eq!(
        sales["data"],
        json!({"deal_id": deal, "paid_orders": 1, "paid_units": 2})
    );
    let rest = other.frames_for(Duration::from_secs(1)).await;
    assert!(
        !rest
            .iter()
            .any(|f| f.to_string().contains(&order_id) || f["type"] == "notice"),
        "{rest:?}"
    );
}

#[tokio::test]
async fn the_dev_notices_route_delivers_each_notice_only_to_its_users_sockets_on_every_node() {
    let (a, b, _, session) = two_nodes(NodeOptions::default()).await;
    let (target, bystander) = ("dev-route-target", "dev-route-bystander");
    let mut target_on_b = join_with(&b, session, target, None).await;
    let mut bystander_on_a = join_with(&a, session, bystander, None).await;
    let mut bystander_on_b = join_with(&b, session, bystander, None).await;
    let marker = format!("dev-{}", Uuid::new_v4());
    let response = a
        .http
        .post(a.url("/v1/dev/notices"))
        .json(&json!({"notices": [
            {"user_id": target, "session_id": session, "kind": "lt.notice", "data": {"marker": marker}},
            {"user_id": target, "session_id": Uuid::new_v4(), "kind": "lt.notice", "data": {"marker": "elsewhere"}},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let ids = body["notice_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 2, "{body}");

    let frames = target_on_b.frames_for(LISTEN).await;
    let got = notices(&frames);
    assert_eq!(got.len(), 1, "{frames:?}");
    assert_eq!(got[0]["id"], ids[0]);
    assert_eq!(got[0]["user"], target);
    assert_eq!(got[0]["data"]["marker"], marker.as_str());
    for ws in [&mut bystander_on_a, &mut bystander_on_b] {
        let frames = ws.frames_for(Duration::from_millis(500)).await;
        assert!(notices(&frames).is_empty(), "a bystander got {frames:?}");
    }

    for bad in [
        json!({"notices": []}),
        json!({"notices": [{"user_id": "", "kind": "k"}]}),
        json!({"notices": [{"user_id": target, "kind": ""}]}),
    ] {
        let response = a
            .http
            .post(a.url("/v1/dev/notices"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }
}
