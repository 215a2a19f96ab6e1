//! Retention: published room events and room samples are deleted after their
//! configured periods, a bounded batch at a time; pending events, recent rows
//! and money records stay; a room's dedupe hash stays bounded.

use std::time::Duration;

use hawker_hub::Publication;
use serde_json::json;
use uuid::Uuid;

use crate::support::fixtures::{buy, create_deal, session_with_lineup};
use crate::support::{poll, settings_with, spawn_app_with, Patience};

async fn count(db: &sqlx::PgPool, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql).bind(id).fetch_one(db).await.unwrap()
}

#[tokio::test]
async fn old_published_events_and_samples_are_deleted_while_recent_rows_and_money_records_stay() {
    let app = spawn_app_with(settings_with(&[
        ("HAWKER__RETENTION__OUTBOX_PUBLISHED_HOURS", "1"),
        ("HAWKER__RETENTION__SESSION_SAMPLE_DAYS", "1"),
        ("HAWKER__RETENTION__SWEEP_EVERY_SECS", "1"),
        // Small batches: the backlog takes several statements.
        ("HAWKER__RETENTION__SWEEP_BATCH", "7"),
    ]))
    .await;
    let db = &app.db;
    let (agency, session) = session_with_lineup(&app).await;
    // A money trail: a deal and an order, backdated a year.
    let deal = create_deal(
        &app,
        agency,
        session,
        json!({"link_number": 1, "price_minor": 500, "quantity": 5, "per_buyer_cap": 1, "duration_secs": 60}),
    )
    .await;
    let (status, order) = buy(&app, "keeper", &deal, "k-retention", 1).await;
    assert_eq!(status, 201, "{order}");
    sqlx::query("update customer_order set created_at = now() - interval '400 days' where session_id = $1")
        .bind(session)
        .execute(db)
        .await
        .unwrap();
    // The order's later history (its creation is the order row itself).
    sqlx::query(
        "insert into order_event (order_id, from_status, to_status, detail, at)
         select order_id, 'pending_payment', 'cancelled', '{\"reason\": \"payment_expired\"}', now() - interval '400 days'
           from customer_order where session_id = $1",
    )
    .bind(session)
    .execute(db)
    .await
    .unwrap();
    let orders = "select count(*) from customer_order where session_id = $1";
    let events =
        "select count(*) from order_event e join customer_order o using (order_id) where o.session_id = $1";
    let money_before = (count(db, orders, session).await, count(db, events, session).await);
    assert!(money_before.0 == 1 && money_before.1 >= 1, "{money_before:?}");

    // 30 events published two hours ago, 3 published ten minutes ago.
    let room = Uuid::new_v4();
    sqlx::query(
        "insert into room_outbox (session_id, event_type, data, created_at, published_at)
         select $1, 'test.old', '{}', now() - interval '2 hours', now() - interval '2 hours'
           from generate_series(1, 30)",
    )
    .bind(room)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "insert into room_outbox (session_id, event_type, data, created_at, published_at)
         select $1, 'test.recent', '{}', now() - interval '10 minutes', now() - interval '10 minutes'
           from generate_series(1, 3)",
    )
    .bind(room)
    .execute(db)
    .await
    .unwrap();
    // Samples: 40 two days old, 5 an hour old.
    sqlx::query(
        "insert into session_sample (session_id, sampled_at, viewers, likes, chat_messages)
         select $1, now() - interval '2 days' - make_interval(secs => n), 1, 0, 0
           from generate_series(1, 40) n",
    )
    .bind(session)
    .execute(db)
    .await
    .unwrap();
    sqlx::query(
        "insert into session_sample (session_id, sampled_at, viewers, likes, chat_messages)
         select $1, now() - interval '1 hour' - make_interval(secs => n), 1, 0, 0
           from generate_series(1, 5) n",
    )
    .bind(session)
    .execute(db)
    .await
    .unwrap();

    let old_events = "select count(*) from room_outbox where session_id = $1 and event_type = 'test.old'";
    let old_samples =
        "select count(*) from session_sample where session_id = $1 and sampled_at < now() - interval '1 day'";
    let left = poll(
        Patience::For(Duration::from_secs(20)),
        Duration::from_millis(200),
        || async {
            (
                count(db, old_events, room).await,
                count(db, old_samples, session).await,
            )
        },
        |left| *left == (0, 0),
    )
    .await;
    assert_eq!(left, (0, 0), "old rows left (events, samples)");

    let recent_events =
        "select count(*) from room_outbox where session_id = $1 and event_type = 'test.recent'";
    assert_eq!(count(db, recent_events, room).await, 3);
    let recent_samples = "select count(*) from session_sample where session_id = $1 and sampled_at >= now() - interval '1 day'";
    assert!(count(db, recent_samples, session).await >= 5);
    // The session's own outbox events (the deal's) are recent and stay.
    assert!(
        count(
            db,
            "select count(*) from room_outbox where session_id = $1",
            session
        )
        .await
            > 0
    );
    let money_after = (count(db, orders, session).await, count(db, events, session).await);
    assert_eq!(money_after, money_before, "money records are never deleted");
}

#[tokio::test]
async fn a_rooms_dedupe_ids_are_bounded_in_number_and_age_and_recent_ones_still_deduplicate() {
    // The test reads the room's keys from the machine's Redis: pinned to it.
    let app = spawn_app_with(settings_with(&[
        ("HAWKER__REDIS__URL", "redis://127.0.0.1:6379/"),
        ("HAWKER__RETENTION__ROOM_DEDUPE_MAX", "5"),
        ("HAWKER__RETENTION__ROOM_DEDUPE_SECS", "2"),
    ]))
    .await;
    let room = Uuid::new_v4();
    let publish = |id: u32| {
        let hub = app.hub.clone();
        async move {
            hub.publish(
                room,
                Publication::new("test.dedupe", json!({ "n": id })).dedupe(format!("outbox:{id}")),
            )
            .await
            .unwrap()
        }
    };
    let redis = redis::Client::open("redis://127.0.0.1:6379/").unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let keys = hawker_hub::keys::RoomKeys::new("hawker");
    let dedupe_key = keys.key(room, "dedupe");
    let log_key = keys.key(room, "dedupe_log");

    let mut offsets = Vec::new();
    for id in 1..=40 {
        offsets.push(publish(id).await);
    }
    let held: u64 = redis::cmd("HLEN")
        .arg(&dedupe_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let logged: u64 = redis::cmd("LLEN")
        .arg(&log_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((held, logged), (5, 5), "40 ids published, at most 5 remembered");
    // A recent id is still deduplicated: its first offset comes back…
    assert_eq!(publish(40).await, offsets[39]);
    // …a forgotten one is published anew.
    assert!(publish(1).await > offsets[39]);

    // Older than room_dedupe_secs: forgotten at the next publish.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    publish(100).await;
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(&dedupe_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(fields, vec!["outbox:100".to_string()]);
}
