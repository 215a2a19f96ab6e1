//! The real-time hub against real Redis: cross-node fan-out, resume,
//! recovery, backpressure, moderation, protocol errors.

use std::time::Duration;

use futures_util::future::join_all;
use futures_util::{stream, StreamExt};
use hawker_core::Role;
use hawker_hub::Publication;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::socket::{connect, join, try_connect, Ended, Ws};
use crate::support::{two_nodes, NodeOptions, RedisServer};

async fn announce(host: &mut Ws, text: &str) -> u64 {
    let ack = host.call("host.announce", json!({ "text": text })).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    ack["data"]["offset"].as_u64().unwrap()
}

fn offsets(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["offset"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn chat_sent_on_node_a_arrives_on_node_b_in_order() {
    let (a, b, _, session) =
        two_nodes(NodeOptions::default().env(&[("HAWKER__HUB__CHAT_BURST", "100")])).await;
    let mut sender = connect(a.addr, session, &a.token("alice", Role::Viewer), None).await;
    let mut receiver = connect(b.addr, session, &b.token("bob", Role::Viewer), None).await;
    assert_eq!(sender.expect("welcome").await["you"]["user"], "alice");
    let welcome = receiver.expect("welcome").await;
    assert!(welcome["epoch"].is_string() && welcome["offset"].is_u64());

    for i in 0..20 {
        let ack = sender
            .call("chat.send", json!({ "text": format!("message {i}") }))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let mut last_offset = 0;
    for i in 0..20 {
        let chat = receiver.expect("chat").await;
        assert_eq!(chat["data"]["text"], format!("message {i}"));
        assert_eq!(chat["from"], "alice");
        let offset = chat["offset"].as_u64().unwrap();
        assert!(offset > last_offset, "offsets increase");
        last_offset = offset;
    }
}

/// The node's publisher counters: (pipelines, publications).
async fn publisher_counts(node: &crate::support::TestApp) -> (u64, u64) {
    let text = node.metrics().await;
    let value = |name: &str| {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0) as u64
    };
    (
        value("hawker_hub_publish_pipelines_total"),
        value("hawker_hub_publications_total"),
    )
}

/// A host sends 300 messages without waiting for any answer. Several are
/// in flight at once (the node sends some to Redis together, in one
/// pipeline), and still every ack comes back in the order sent, with
/// rising offsets, and a viewer on the other node gets them in that order.
/// The host's socket runs on the node's command thread, with its own
/// publisher (`hub.command_thread`, the default).
#[tokio::test]
async fn a_host_sending_without_waiting_publishes_in_order_and_is_answered_in_order() {
    host_sends_300_without_waiting(NodeOptions::default()).await;
}

/// The same with `hub.command_thread` off: the host's socket and every
/// publication share the node's runtime and its one publisher.
#[tokio::test]
async fn without_the_command_thread_a_host_still_publishes_in_order_and_is_answered_in_order() {
    host_sends_300_without_waiting(NodeOptions::default().env(&[("HAWKER__HUB__COMMAND_THREAD", "false")]))
        .await;
}

async fn host_sends_300_without_waiting(options: NodeOptions) {
    let (a, b, agency, session) = two_nodes(options).await;
    let mut host = join(a.addr, session, &a.agency_token(agency)).await;
    let mut viewer = join(b.addr, session, &b.token("watcher", Role::Viewer)).await;
    let (pipelines_before, publications_before) = publisher_counts(&a).await;
    let n = 300;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(
            host.send("host.message", json!({ "text": format!("m{i}") }))
                .await,
        );
    }
    let mut last = 0;
    for id in &ids {
        let reply = next_answer(&mut host).await;
        assert_eq!(
            reply["id"],
            id.as_str(),
            "answers come in the order sent: {reply}"
        );
        assert_eq!(reply["type"], "ack", "{reply}");
        let offset = reply["data"]["offset"].as_u64().unwrap();
        assert!(
            offset > last,
            "offsets rise with the order sent: {offset} after {last}"
        );
        last = offset;
    }
    for i in 0..n {
        let message = viewer.expect("host.message").await;
        assert_eq!(message["data"]["text"], format!("m{i}"), "{message}");
    }
    let (pipelines, publications) = publisher_counts(&a).await;
    let (pipelines, publications) = (pipelines - pipelines_before, publications - publications_before);
    assert!(publications >= n as u64, "{publications} publications counted");
    assert!(
        pipelines < publications,
        "no pipeline held two publications ({pipelines} for {publications}): the commands ran one at a time"
    );
}

/// Commands the node answers at once (a `ping`, a refusal) sent between
/// ones that wait for Redis (`host.message`), without waiting: each answer
/// still comes in the order sent. (An answer ready at once is queued
/// behind those under way, never written ahead of them.)
#[tokio::test]
async fn answers_ready_at_once_wait_behind_the_commands_sent_before_them() {
    let (a, _b, agency, session) = two_nodes(NodeOptions::default()).await;
    let mut host = join(a.addr, session, &a.agency_token(agency)).await;
    let mut sent = Vec::new();
    for i in 0..100 {
        let kind = match i % 3 {
            0 => "host.message",
            1 => "ping",
            _ => "like",
        };
        let data = match kind {
            "host.message" => json!({ "text": format!("m{i}") }),
            // Refused at once: a count out of range.
            "like" => json!({ "count": 1000 }),
            _ => json!({}),
        };
        sent.push((host.send(kind, data).await, kind));
    }
    for (id, kind) in &sent {
        let reply = next_answer(&mut host).await;
        assert_eq!(
            reply["id"],
            id.as_str(),
            "answers come in the order sent: {reply}"
        );
        match *kind {
            "host.message" => assert!(reply["data"]["offset"].is_u64(), "{reply}"),
            "ping" => assert!(reply["data"]["pong"].is_i64(), "{reply}"),
            _ => assert_eq!(reply["code"], "bad_command", "{reply}"),
        }
    }
}

/// The socket's next `ack` or `error` (room events in between are skipped).
async fn next_answer(ws: &mut Ws) -> Value {
    ws.until("an answer", Duration::from_secs(30), |f| {
        f["type"] == "ack" || f["type"] == "error"
    })
    .await
}

#[tokio::test]
async fn a_host_message_reaches_1000_viewers_spread_over_two_nodes() {
    let (a, b, agency, session) = two_nodes(NodeOptions::default()).await;
    // Joined 100 at a time: this checks the fan-out, not a join storm on a
    // test machine whose two cores also run the other tests.
    let mut viewers: Vec<Ws> = stream::iter(0..1000)
        .map(|i| {
            let node = if i % 2 == 0 { &a } else { &b };
            let token = node.token(&format!("viewer-{i}"), Role::Viewer);
            let addr = node.addr;
            async move { join(addr, session, &token).await }
        })
        .buffer_unordered(100)
        .collect()
        .await;
    let mut host = join(a.addr, session, &a.agency_token(agency)).await;
    let offset = announce(&mut host, "now showing item #7").await;
    let received = join_all(viewers.iter_mut().map(|ws| async move {
        let event = ws.expect("host.announcement").await;
        (event["data"]["text"].clone(), event["offset"].as_u64())
    }))
    .await;
    assert_eq!(received.len(), 1000);
    for (text, at) in received {
        assert_eq!(text, "now showing item #7");
        assert_eq!(at, Some(offset));
    }
}

#[tokio::test]
async fn a_resume_returns_exactly_the_missed_events_then_live_ones() {
    let (a, b, agency, session) = two_nodes(NodeOptions::default()).await;
    let mut host = join(a.addr, session, &a.agency_token(agency)).await;
    let token = b.token("phone", Role::Viewer);
    let mut viewer = join(b.addr, session, &token).await;
    announce(&mut host, "before").await;
    viewer.expect("host.announcement").await;
    let (epoch, offset) = (viewer.epoch.clone(), viewer.offset);
    drop(viewer);

    let mut missed = Vec::new();
    for i in 0..5 {
        missed.push(announce(&mut host, &format!("missed {i}")).await);
    }
    let mut back = connect(b.addr, session, &token, Some((&epoch, offset))).await;
    let resumed = back.expect("resumed").await;
    assert_eq!(resumed["offset"].as_u64(), Some(offset));
    let got = offsets(&back.expect_many("host.announcement", 5).await);
    assert_eq!(got, missed, "exactly the missed announcements, in order");
    let live = announce(&mut host, "live again").await;
    let event = back.expect("host.announcement").await;
    assert_eq!(event["offset"].as_u64(), Some(live));
}

#[tokio::test]
async fn a_resume_older_than_the_history_gets_a_reset_with_the_snapshot() {
    let (a, _b, agency, session) =
        two_nodes(NodeOptions::default().env(&[("HAWKER__HUB__HISTORY_LEN", "10")])).await;
    let mut host = connect(a.addr, session, &a.agency_token(agency), None).await;
    let welcome = host.expect("welcome").await;
    let epoch = welcome["epoch"].as_str().unwrap().to_string();
    let pinned = host
        .call(
            "host.pin",
            json!({ "item": { "link": 7, "title": "Velvet Lipstick" } }),
        )
        .await;
    assert_eq!(pinned["type"], "ack");
    let slow = host.call("mod.slow_mode", json!({ "seconds": 10 })).await;
    assert_eq!(slow["type"], "ack");
    for i in 0..30 {
        announce(&mut host, &format!("filler {i}")).await;
    }
    let mut late = connect(a.addr, session, &a.token("late", Role::Viewer), Some((&epoch, 1))).await;
    let reset = late.expect("reset").await;
    assert_eq!(reset["state"]["pinned"]["link"], 7);
    assert_eq!(reset["state"]["slow_mode"], 10);
    assert!(reset["offset"].as_u64().unwrap() >= 32);

    // Another epoch is a reset too.
    let mut other = connect(
        a.addr,
        session,
        &a.token("other", Role::Viewer),
        Some(("0123abcd", 5)),
    )
    .await;
    assert_eq!(other.expect("reset").await["epoch"], epoch);
}

#[tokio::test]
async fn a_lost_subscription_is_recovered_from_history_without_gaps() {
    let redis = RedisServer::start();
    let (a, b, agency, session) = two_nodes(NodeOptions::default().redis(&redis)).await;
    let mut host = join(a.addr, session, &a.agency_token(agency)).await;
    let mut on_a = connect(a.addr, session, &a.token("va", Role::Viewer), None).await;
    let mut on_b = connect(b.addr, session, &b.token("vb", Role::Viewer), None).await;
    on_a.expect("welcome").await;
    on_b.expect("welcome").await;

    // Drop every subscriber connection, then publish at once: both nodes
    // miss these on pub/sub and must fetch them from the history.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .map(|v: redis::Value| json!(format!("{v:?}")))
        .unwrap();
    let mut sent = Vec::new();
    for i in 0..10 {
        sent.push(announce(&mut host, &format!("during outage {i}")).await);
    }
    for viewer in [&mut on_a, &mut on_b] {
        let got = offsets(&viewer.expect_many("host.announcement", 10).await);
        assert_eq!(got, sent);
    }
}

#[tokio::test]
async fn viewers_keep_receiving_across_a_redis_restart() {
    let mut redis = RedisServer::start();
    let (a, b, agency, session) = two_nodes(NodeOptions::default().redis(&redis)).await;
    let mut host = join(a.addr, session, &a.agency_token(agency)).await;
    let mut on_a = connect(a.addr, session, &a.token("va", Role::Viewer), None).await;
    let mut on_b = connect(b.addr, session, &b.token("vb", Role::Viewer), None).await;
    on_a.expect("welcome").await;
    on_b.expect("welcome").await;
    announce(&mut host, "before restart").await;
    on_a.expect("host.announcement").await;
    on_b.expect("host.announcement").await;

    // Redis keeps nothing on disk: the room's history and epoch are gone.
    redis.restart();
    let mut offset = None;
    for _ in 0..50 {
        let ack = host
            .call("host.announce", json!({ "text": "after restart" }))
            .await;
        if ack["type"] == "ack" {
            offset = ack["data"]["offset"].as_u64();
            break;
        }
        assert_eq!(ack["code"], "unavailable", "{ack}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(offset.is_some(), "publishing works again once Redis is back");
    for viewer in [&mut on_a, &mut on_b] {
        // Each viewer learns the room restarted (a reset with the new
        // epoch's snapshot); the announcement is either in that snapshot or
        // arrives after it.
        let reset = viewer.expect("reset").await;
        if reset["state"]["announcement"]["text"] != "after restart" {
            let event = viewer.expect("host.announcement").await;
            assert_eq!(event["data"]["text"], "after restart");
        }
    }
    let last = announce(&mut host, "still live").await;
    for viewer in [&mut on_a, &mut on_b] {
        let event = viewer.expect("host.announcement").await;
        assert_eq!(event["offset"].as_u64(), Some(last));
        assert_eq!(event["data"]["text"], "still live");
    }
}

// Several worker threads, as a node has. The outbox is the default 256 KB:
// the rooms run on the command thread (`hub.command_thread`) and push as
// fast as the test publishes, so a 32 KB outbox (16 of these events) let a
// loaded test machine close the *fast* viewer too (seen twice in the cluster
// suite). 8 MB is still far more than 256 KB and the slow socket's buffers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_that_stops_reading_is_closed_as_slow_and_does_not_delay_others() {
    let (a, _b, _, session) =
        two_nodes(NodeOptions::default().env(&[("HAWKER__HUB__OUTBOX_MAX_BYTES", "262144")])).await;
    let mut fast = join(a.addr, session, &a.token("fast", Role::Viewer)).await;
    let mut slow = try_connect(a.addr, session, &a.token("slow", Role::Viewer), None, Some(4096))
        .await
        .unwrap();
    slow.expect("welcome").await;

    // The slow viewer reads nothing while ~8 MB of must-deliver events go
    // out: more than the kernel's socket buffers and its 256 KB outbox hold.
    const EVENTS: usize = 4000;
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        while seen < EVENTS {
            if fast.next_event().await["type"] == "host.pinned" {
                seen += 1;
            }
        }
        seen
    });
    let filler = "x".repeat(1900);
    for i in 0..EVENTS {
        let item = json!({ "n": i, "title": filler });
        a.hub
            .publish(session, Publication::new("host.pinned", json!({ "item": item })))
            .await
            .unwrap();
    }
    let seen = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the fast viewer is not held up");
    assert_eq!(seen.unwrap(), EVENTS);
    // The close frame waits (up to 10 s, docs/protocol.md) behind what the
    // socket already holds; a client that still reads nothing by then is
    // disconnected without it. On a loaded machine the fast reader above
    // can take longer than that, so either end is the server's 4008 close.
    let ended = slow.closed(Duration::from_secs(30)).await;
    assert!(
        matches!(ended, Ended::Closed(Some(4008)) | Ended::Eof),
        "the slow viewer is closed by the server: {ended:?}"
    );
}

#[tokio::test]
async fn a_chat_flood_from_one_user_is_rate_limited() {
    let (a, _b, _, session) = two_nodes(NodeOptions::default()).await;
    let mut flooder = join(a.addr, session, &a.token("flooder", Role::Viewer)).await;
    let mut acks = 0;
    let mut limited = 0;
    for i in 0..20 {
        let reply = flooder
            .call("chat.send", json!({ "text": format!("spam {i}") }))
            .await;
        match (reply["type"].as_str(), reply["code"].as_str()) {
            (Some("ack"), _) => acks += 1,
            (Some("error"), Some("rate_limited")) => limited += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(acks, 5, "the burst (hub.chat_burst) goes through");
    assert_eq!(limited, 15);
}

#[tokio::test]
async fn a_chat_refused_by_the_rate_limit_is_not_published_and_a_repeat_takes_a_token() {
    let (a, b, _, session) = two_nodes(NodeOptions::default()).await;
    let mut watcher = join(b.addr, session, &b.token("watcher", Role::Viewer)).await;
    let mut sender = join(a.addr, session, &a.token("sender", Role::Viewer)).await;
    let first = sender
        .call("chat.send", json!({"text": "first", "client_msg_id": "m-1"}))
        .await;
    assert_eq!(first["type"], "ack", "{first}");
    let first_offset = first["data"]["offset"].as_u64().unwrap();
    // The rest of the burst (hub.chat_burst = 5), then refusals.
    let mut published = vec![first_offset];
    let mut refused = 0;
    for i in 0..10 {
        let reply = sender
            .call("chat.send", json!({"text": format!("more {i}")}))
            .await;
        match (reply["type"].as_str(), reply["code"].as_str()) {
            (Some("ack"), _) => published.push(reply["data"]["offset"].as_u64().unwrap()),
            (Some("error"), Some("rate_limited")) => refused += 1,
            other => panic!("unexpected {other:?}: {reply}"),
        }
    }
    assert_eq!((published.len(), refused), (5, 6), "{published:?}");
    // A repeat passes the checks like any message: with the bucket empty it is refused.
    let repeat = sender
        .call("chat.send", json!({"text": "first", "client_msg_id": "m-1"}))
        .await;
    assert_eq!(repeat["code"], "rate_limited", "{repeat}");
    // The other node's viewer sees exactly the five published lines.
    let seen: Vec<u64> = watcher
        .expect_many("chat", 5)
        .await
        .iter()
        .map(|f| f["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(seen, published);
    let extra: Vec<Value> = watcher
        .frames_for(Duration::from_millis(800))
        .await
        .into_iter()
        .filter(|f| f["type"] == "chat")
        .collect();
    assert!(extra.is_empty(), "a refused line was published: {extra:?}");
    // Once a token is back (0.5/s), the repeat is answered with the first offset.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let again = sender
        .call("chat.send", json!({"text": "first", "client_msg_id": "m-1"}))
        .await;
    assert_eq!(again["data"]["offset"], first_offset, "{again}");
}

#[tokio::test]
async fn every_room_key_an_event_writes_expires_even_between_two_renewals() {
    use crate::support::{settings_with, spawn_app_with};

    let redis = RedisServer::start();
    let url = redis.url();
    let app = spawn_app_with(settings_with(&[
        ("HAWKER__REDIS__URL", url.as_str()),
        ("HAWKER__HUB__ROOM_TTL_SECS", "600"),
    ]))
    .await;
    let (agency, session) = crate::support::fixtures::insert_agency_and_session(&app.db).await;
    let mut host = join(app.addr, session, &app.agency_token(agency)).await;
    let mut viewer = join(app.addr, session, &app.token("talker", Role::Viewer)).await;
    announce(&mut host, "renews every key").await;
    // Written after the renewal: the moderation hash (a mute), the dedupe
    // hash and its log (a chat with an id), the state (a pin).
    let ack = host
        .call("mod.mute", json!({"user": "someone", "seconds": 60}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let ack = viewer
        .call("chat.send", json!({"text": "hello", "client_msg_id": "c-1"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let ack = host.call("host.pin", json!({"item": {"title": "pinned"}})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for what in ["meta", "stream", "state", "mod", "dedupe", "dedupe_log"] {
        let key = format!("hawker:room:{{{session}}}:{what}");
        let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut conn).await.unwrap();
        assert!((1..=600).contains(&ttl), "{key}: TTL {ttl}");
    }
    let refreshed: Option<i64> = redis::cmd("HGET")
        .arg(format!("hawker:room:{{{session}}}:meta"))
        .arg("refreshed")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(refreshed.is_some(), "meta records its last renewal");
}

#[tokio::test]
async fn a_quiet_room_repeats_no_unchanged_count_and_a_busy_one_does() {
    use crate::support::{settings_with, spawn_app_with};

    let redis = RedisServer::start();
    let url = redis.url();
    // A heartbeat is due every fifth viewer interval: every 0.5 s here.
    let app = spawn_app_with(settings_with(&[
        ("HAWKER__REDIS__URL", url.as_str()),
        ("HAWKER__HUB__LIKES_INTERVAL_MS", "50"),
        ("HAWKER__HUB__VIEWERS_INTERVAL_MS", "100"),
    ]))
    .await;
    let (agency, session) = crate::support::fixtures::insert_agency_and_session(&app.db).await;
    let mut host = join(app.addr, session, &app.agency_token(agency)).await;
    let mut viewer = join(app.addr, session, &app.token("quiet", Role::Viewer)).await;
    // Let the joins' counts go out.
    tokio::time::sleep(Duration::from_millis(800)).await;
    viewer.frames_for(Duration::from_millis(100)).await;
    let counts = |frames: &[Value]| frames.iter().filter(|f| f["type"] == "viewers").count();
    let quiet = viewer.frames_for(Duration::from_millis(2000)).await;
    assert_eq!(
        counts(&quiet),
        0,
        "an unchanged count was repeated in a quiet room: {quiet:?}"
    );
    // The same count is repeated once the room has events.
    let mut busy = Vec::new();
    for i in 0..10 {
        announce(&mut host, &format!("busy {i}")).await;
        busy.extend(viewer.frames_for(Duration::from_millis(200)).await);
    }
    let repeated: Vec<&Value> = busy.iter().filter(|f| f["type"] == "viewers").collect();
    assert!(!repeated.is_empty(), "no heartbeat in a busy room: {busy:?}");
    assert!(repeated.iter().all(|f| f["data"]["count"] == 2), "{repeated:?}");
    // The viewer report refreshes the node's presence hash's expiry too.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("hawker:room:{{{session}}}:here:{}", app.hub.node_id());
    let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut conn).await.unwrap();
    assert!((55..=60).contains(&ttl), "{key}: TTL {ttl}");
}

#[tokio::test]
async fn a_calm_room_is_reported_every_third_interval_and_a_new_count_at_once() {
    use crate::support::{settings_with, spawn_app_with};

    let redis = RedisServer::start();
    let url = redis.url();
    let app = spawn_app_with(settings_with(&[
        ("HAWKER__REDIS__URL", url.as_str()),
        ("HAWKER__HUB__LIKES_INTERVAL_MS", "100"),
        ("HAWKER__HUB__VIEWERS_INTERVAL_MS", "200"),
    ]))
    .await;
    let (_, session) = crate::support::fixtures::insert_agency_and_session(&app.db).await;
    let mut first = join(app.addr, session, &app.token("calm-1", Role::Viewer)).await;
    let count_is = |n: u64| move |f: &Value| f["type"] == "viewers" && f["data"]["count"] == n;
    first
        .until("a count of 1", Duration::from_secs(5), count_is(1))
        .await;
    // Past the three reports that follow a change.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("hawker:room:{{{session}}}:viewers");
    let node = app.hub.node_id().to_string();
    let mut reports: Vec<(tokio::time::Instant, String)> = Vec::new();
    let watched = tokio::time::Instant::now();
    while watched.elapsed() < Duration::from_millis(4800) {
        let entry: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg(&node)
            .query_async(&mut conn)
            .await
            .unwrap();
        let entry = entry.expect("the node's report is in the room's viewers hash");
        if reports.last().is_none_or(|(_, last)| *last != entry) {
            reports.push((tokio::time::Instant::now(), entry));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // 24 intervals: a report at each would be 24; every third is about 8.
    assert!(
        (4..=10).contains(&reports.len()),
        "{} reports in 24 intervals: {reports:?}",
        reports.len()
    );
    // Never older than the six intervals that keep it fresh.
    for pair in reports.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap < Duration::from_millis(1200),
            "a calm room's report waited {gap:?}"
        );
    }
    // A new count is reported (and announced) at the room's next slot.
    let joined = tokio::time::Instant::now();
    let _second = join(app.addr, session, &app.token("calm-2", Role::Viewer)).await;
    first
        .until("a count of 2", Duration::from_secs(5), count_is(2))
        .await;
    assert!(
        joined.elapsed() < Duration::from_millis(1500),
        "the new count took {:?}",
        joined.elapsed()
    );
}

#[tokio::test]
async fn every_rooms_count_goes_out_from_one_report_even_after_redis_lost_its_scripts() {
    use crate::support::{settings_with, spawn_app_with};

    let redis = RedisServer::start();
    let url = redis.url();
    let app = spawn_app_with(settings_with(&[
        ("HAWKER__REDIS__URL", url.as_str()),
        ("HAWKER__HUB__LIKES_INTERVAL_MS", "50"),
        ("HAWKER__HUB__VIEWERS_INTERVAL_MS", "100"),
    ]))
    .await;
    let mut rooms = Vec::new();
    for i in 0..4 {
        let (_, session) = crate::support::fixtures::insert_agency_and_session(&app.db).await;
        let first = join(app.addr, session, &app.token(&format!("first-{i}"), Role::Viewer)).await;
        rooms.push((session, first));
    }
    let count_is = |n: u64| move |f: &Value| f["type"] == "viewers" && f["data"]["count"] == n;
    for (_, first) in &mut rooms {
        first
            .until("a count of 1", Duration::from_secs(5), count_is(1))
            .await;
    }
    // Redis forgets every script (as after a restart): the node's reports
    // are refused until it loads the viewers script again.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let mut seconds = Vec::new();
    for (i, (session, _)) in rooms.iter().enumerate() {
        seconds.push(
            join(
                app.addr,
                *session,
                &app.token(&format!("second-{i}"), Role::Viewer),
            )
            .await,
        );
    }
    for (_, first) in &mut rooms {
        first
            .until("a count of 2", Duration::from_secs(5), count_is(2))
            .await;
    }
}

#[tokio::test]
async fn a_ban_on_node_a_is_enforced_on_node_b() {
    let (a, b, agency, session) = two_nodes(NodeOptions::default()).await;
    let mut host = join(a.addr, session, &a.agency_token(agency)).await;
    let troll_token = b.token("troll", Role::Viewer);
    let mut troll = join(b.addr, session, &troll_token).await;

    let ack = host
        .call("mod.ban", json!({ "user": "troll", "seconds": 600 }))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(
        troll.closed(Duration::from_secs(1)).await,
        Ended::Closed(Some(4003))
    );
    let mut again = connect(b.addr, session, &troll_token, None).await;
    let refused = again.frame().await;
    assert_eq!(refused["code"], "banned");
    assert_eq!(
        again.closed(Duration::from_secs(2)).await,
        Ended::Closed(Some(4003))
    );
}

#[tokio::test]
async fn a_viewer_may_not_moderate_or_host() {
    let (a, _b, _, session) = two_nodes(NodeOptions::default()).await;
    let mut viewer = join(a.addr, session, &a.token("v", Role::Viewer)).await;
    for (kind, data) in [
        ("mod.ban", json!({"user": "x"})),
        ("host.announce", json!({"text": "hi"})),
        ("host.pin", json!({"item": {}})),
    ] {
        let reply = viewer.call(kind, data).await;
        assert_eq!(reply["code"], "forbidden", "{kind}");
    }
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_connection_survives() {
    let (a, _b, _, session) = two_nodes(NodeOptions::default()).await;
    let mut ws = join(a.addr, session, &a.token("tester", Role::Viewer)).await;

    ws.send_raw("{not json".into()).await;
    assert_eq!(ws.expect("error").await["code"], "bad_json");
    ws.send_raw(json!({"id": "big", "type": "chat.send", "data": {"text": "x".repeat(5000)}}).to_string())
        .await;
    assert_eq!(ws.expect("error").await["code"], "frame_too_large");
    let reply = ws.call("dance", json!({})).await;
    assert_eq!(reply["code"], "unknown_command");
    let reply = ws.call("chat.send", json!({"text": "y".repeat(201)})).await;
    assert_eq!(reply["code"], "too_long");
    let reply = ws.call("chat.send", json!({})).await;
    assert_eq!(reply["code"], "bad_command");
    assert_eq!(ws.call("ping", json!({})).await["type"], "ack", "still connected");

    // Above the hard limit the connection is closed with 1009 (documented).
    ws.send_raw("x".repeat(70_000)).await;
    assert_eq!(ws.closed(Duration::from_secs(5)).await, Ended::Closed(Some(1009)));
}

#[tokio::test]
async fn sockets_without_a_valid_token_are_refused() {
    let (a, _b, _, session) = two_nodes(NodeOptions::default()).await;
    let url = format!("ws://{}/v1/sessions/{session}/ws", a.addr);
    let err = tokio_tungstenite::connect_async(url.clone()).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let err = tokio_tungstenite::connect_async(format!("{url}?access_token=forged"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let missing = format!(
        "ws://{}/v1/sessions/{}/ws?access_token={}",
        a.addr,
        Uuid::new_v4(),
        a.token("v", Role::Viewer)
    );
    let err = tokio_tungstenite::connect_async(missing).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}

#[tokio::test]
async fn likes_are_summed_into_running_totals() {
    let (a, _b, _, session) = two_nodes(NodeOptions::default()).await;
    let mut tapper = join(a.addr, session, &a.token("tapper", Role::Viewer)).await;
    for _ in 0..50 {
        tapper.send("like", json!({})).await;
    }
    tapper.send("like", json!({"count": 25})).await;
    let mut totals = Vec::new();
    loop {
        let frame = tapper.frame().await;
        if frame["type"] == "likes" {
            let total = frame["data"]["total"].as_u64().unwrap();
            totals.push(total);
            if total == 75 {
                break;
            }
        }
    }
    assert!(totals.len() <= 3, "aggregated, not one event per tap: {totals:?}");
}

#[tokio::test]
async fn shutdown_closes_sockets_with_going_away() {
    let (mut a, _b, _, session) = two_nodes(NodeOptions::default()).await;
    let mut ws = join(a.addr, session, &a.token("v", Role::Viewer)).await;
    a.shutdown.cancel();
    assert_eq!(ws.closed(Duration::from_secs(5)).await, Ended::Closed(Some(1001)));
    let stopped = tokio::time::timeout(Duration::from_secs(10), a.stop()).await;
    assert!(matches!(stopped, Ok(Ok(()))));
}

/// The first close code a socket gets, skipping frames (the test client
/// hides server pings).
async fn close_code(ws: &mut Ws, within: Duration) -> Ended {
    ws.closed(within).await
}

#[tokio::test]
async fn a_blackholed_redis_leaves_no_socket_without_an_answer() {
    use crate::support::blackhole::BlackholeProxy;
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let redis = RedisServer::start();
    let proxy = BlackholeProxy::start(format!("127.0.0.1:{}", redis.port).parse().unwrap()).await;
    let url = proxy.url();
    let (a, _b, agency, session) = two_nodes(NodeOptions::default().env(&[
        ("HAWKER__REDIS__URL", url.as_str()),
        ("HAWKER__REDIS__RESPONSE_TIMEOUT_MS", "500"),
        ("HAWKER__HUB__PING_INTERVAL_SECS", "1"),
        ("HAWKER__HUB__IDLE_TIMEOUT_SECS", "3"),
        ("HAWKER__HUB__JOIN_TIMEOUT_MS", "2000"),
        ("HAWKER__HUB__COMMAND_TIMEOUT_MS", "2000"),
    ]))
    .await;
    let (_, other_session) = crate::support::fixtures::insert_agency_and_session(&a.db).await;
    let mut host = join(a.addr, session, &a.agency_token(agency)).await;
    let mut quiet = join(a.addr, session, &a.token("quiet", Role::Viewer)).await;

    proxy.blackhole();
    let started = std::time::Instant::now();

    // A socket upgraded now, into the open room or into a room the node must
    // first subscribe: an error frame and close 4013, in bounded time.
    for room in [session, other_session] {
        let t = std::time::Instant::now();
        let mut late = connect(a.addr, room, &a.token("late", Role::Viewer), None).await;
        let first = late
            .next(Duration::from_secs(10))
            .await
            .expect("a frame, not silence");
        assert_eq!(
            (first["type"].as_str(), first["code"].as_str()),
            (Some("error"), Some("unavailable")),
            "{first}"
        );
        assert_eq!(
            late.closed(Duration::from_secs(5)).await,
            Ended::Closed(Some(4013))
        );
        assert!(t.elapsed() < Duration::from_secs(6), "took {:?}", t.elapsed());
    }

    // An open socket: its commands are answered (`unavailable`), and the
    // server keeps pinging it.
    let t = std::time::Instant::now();
    let reply = host
        .call("host.announce", json!({ "text": "into the void" }))
        .await;
    assert_eq!(reply["code"], "unavailable", "{reply}");
    assert!(t.elapsed() < Duration::from_secs(4), "took {:?}", t.elapsed());
    let pinged = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(message)) = host.stream.next().await {
            if matches!(message, Message::Ping(_)) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(pinged, Ok(true), "server pings go on");

    // A socket that stops answering is still closed as idle.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(started.elapsed())).await;
    assert_eq!(
        close_code(&mut quiet, Duration::from_secs(5)).await,
        Ended::Closed(Some(4001))
    );

    // Redis reachable again: joins work again.
    proxy.restore();
    let mut joined = false;
    for _ in 0..30 {
        let mut again = connect(a.addr, other_session, &a.token("again", Role::Viewer), None).await;
        if again
            .next(Duration::from_secs(10))
            .await
            .is_ok_and(|f| f["type"] == "welcome")
        {
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(joined, "joins recover once Redis answers");
}

/// A session with this id in `app`'s database (another deployment's copy).
async fn insert_session_with_id(app: &crate::support::TestApp, session: Uuid) {
    let agency = crate::support::fixtures::insert_agency(&app.db).await;
    sqlx::query(
        "insert into live_session (session_id, agency_id, title, planned_start, planned_end)
         values ($1, $2, 'Same id', now(), now() + interval '1 hour')",
    )
    .bind(session)
    .bind(agency)
    .execute(&app.db)
    .await
    .unwrap();
}

#[tokio::test]
async fn deployments_with_their_own_key_prefix_share_a_redis_without_seeing_each_other() {
    use crate::support::{settings_with, spawn_app_with};

    let redis = RedisServer::start();
    let url = redis.url();
    let alpha = spawn_app_with(settings_with(&[
        ("HAWKER__REDIS__URL", url.as_str()),
        ("HAWKER__REDIS__KEY_PREFIX", "alpha"),
    ]))
    .await;
    let beta = spawn_app_with(settings_with(&[
        ("HAWKER__REDIS__URL", url.as_str()),
        ("HAWKER__REDIS__KEY_PREFIX", "beta"),
    ]))
    .await;
    // The same session id in both deployments (each its own database).
    let (agency_a, session) = crate::support::fixtures::insert_agency_and_session(&alpha.db).await;
    insert_session_with_id(&beta, session).await;

    let mut host_a = join(alpha.addr, session, &alpha.agency_token(agency_a)).await;
    let mut viewer_a = join(alpha.addr, session, &alpha.token("va", Role::Viewer)).await;
    let mut viewer_b = join(beta.addr, session, &beta.token("vb", Role::Viewer)).await;
    let epoch_b = viewer_b.epoch.clone();

    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(announce(&mut host_a, &format!("alpha {i}")).await);
    }
    let got = offsets(&viewer_a.expect_many("host.announcement", 5).await);
    assert_eq!(got, sent);
    // Beta's viewer hears nothing of it: no announcement, no reset.
    let frames = viewer_b.frames_for(Duration::from_secs(2)).await;
    let leaked: Vec<&Value> = frames
        .iter()
        .filter(|f| {
            !matches!(
                f["type"].as_str(),
                Some("viewers" | "likes" | "presence.joined" | "presence.left")
            )
        })
        .collect();
    assert!(leaked.is_empty(), "beta saw alpha's room: {leaked:?}");
    assert!(frames
        .iter()
        .all(|f| f["epoch"].is_null() || f["epoch"] == epoch_b.as_str()));

    // Each deployment's keys are under its own prefix, none under the default.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for (pattern, expected) in [
        ("alpha:room:*", true),
        ("beta:room:*", true),
        ("hawker:room:*", false),
    ] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(!keys.is_empty(), expected, "{pattern}: {keys:?}");
    }
}

#[tokio::test]
async fn an_ended_session_closes_its_sockets_after_the_grace_period_and_refuses_joins() {
    let (a, b, agency, session) =
        two_nodes(NodeOptions::default().env(&[("HAWKER__HUB__SESSION_END_GRACE_MS", "1000")])).await;
    sqlx::query("update live_session set status = 'live', started_at = now() where session_id = $1")
        .bind(session)
        .execute(&a.db)
        .await
        .unwrap();
    let mut on_a = join(a.addr, session, &a.token("va", Role::Viewer)).await;
    let mut on_b = join(b.addr, session, &b.token("vb", Role::Viewer)).await;

    let (status, ended) = a
        .send(
            reqwest::Method::POST,
            &format!("/v1/sessions/{session}/end"),
            &a.agency_token(agency),
            None,
        )
        .await;
    assert_eq!(status, 200, "{ended}");
    let mut seen = Vec::new();
    for viewer in [&mut on_a, &mut on_b] {
        let event = viewer.expect("session.ended").await;
        assert_eq!(event["data"]["status"], "ended", "{event}");
        seen.push(std::time::Instant::now());
    }
    // Until the grace period ends the sockets still work.
    for viewer in [&mut on_a, &mut on_b] {
        let pong = viewer.call("ping", json!({})).await;
        assert_eq!(pong["type"], "ack");
    }
    for (viewer, seen) in [&mut on_a, &mut on_b].into_iter().zip(seen) {
        assert_eq!(
            viewer.closed(Duration::from_secs(5)).await,
            Ended::Closed(Some(4009))
        );
        let after = seen.elapsed();
        assert!(after >= Duration::from_millis(600), "closed after {after:?}");
    }
    // New sockets are refused before the upgrade.
    let refused = try_connect(b.addr, session, &b.token("late", Role::Viewer), None, None).await;
    assert!(refused.is_err(), "409 before the upgrade");
}

#[tokio::test]
async fn a_room_whose_session_ended_refuses_a_join_that_passed_the_http_check() {
    // The room learns of the end through Redis; the database says live
    // (the end is still on its way): the room itself refuses the socket.
    let (a, _b, _, session) = two_nodes(NodeOptions::default()).await;
    let figure = json!({ "status": "ended", "on_air_host_id": null });
    a.hub
        .publish(
            session,
            Publication::new("session.ended", figure.clone()).set_state("session", figure),
        )
        .await
        .unwrap();
    let mut late = connect(a.addr, session, &a.token("late", Role::Viewer), None).await;
    let first = late.frame().await;
    assert_eq!(
        (first["type"].as_str(), first["code"].as_str()),
        (Some("error"), Some("session_ended")),
        "{first}"
    );
    assert_eq!(
        late.closed(Duration::from_secs(5)).await,
        Ended::Closed(Some(4009))
    );
}

#[tokio::test]
async fn a_resume_from_the_future_gets_a_reset() {
    let (a, _b, agency, session) = two_nodes(NodeOptions::default()).await;
    let mut host = join(a.addr, session, &a.agency_token(agency)).await;
    let last = announce(&mut host, "now").await;
    let epoch = host.epoch.clone();
    let mut ahead = connect(
        a.addr,
        session,
        &a.token("ahead", Role::Viewer),
        Some((&epoch, last + 50)),
    )
    .await;
    let first = ahead.frame().await;
    assert_eq!(first["type"], "reset", "{first}");
    assert_eq!(first["epoch"], epoch.as_str());
    assert!(first["offset"].as_u64().unwrap() >= last);
    // And live events after it arrive (none is skipped as a duplicate).
    let next = announce(&mut host, "after").await;
    let event = ahead.expect("host.announcement").await;
    assert_eq!(event["offset"].as_u64(), Some(next));
}

#[tokio::test]
async fn a_resume_larger_than_the_send_queue_gets_a_reset_not_a_slow_close() {
    let (a, _b, agency, session) =
        two_nodes(NodeOptions::default().env(&[("HAWKER__HUB__OUTBOX_MAX_BYTES", "4096")])).await;
    let mut host = join(a.addr, session, &a.agency_token(agency)).await;
    let (epoch, from) = (host.epoch.clone(), host.offset);
    // About 40 × 150 bytes of must-deliver events: more than the queue holds.
    for i in 0..40 {
        announce(&mut host, &format!("{i:03} {}", "x".repeat(80))).await;
    }
    let mut back = connect(
        a.addr,
        session,
        &a.token("back", Role::Viewer),
        Some((&epoch, from)),
    )
    .await;
    let first = back.frame().await;
    assert_eq!(first["type"], "reset", "{first}");
    assert!(first["state"]["announcement"]["text"]
        .as_str()
        .unwrap()
        .starts_with("039"));
    // The socket stays open.
    assert_eq!(back.call("ping", json!({})).await["type"], "ack");
}

#[tokio::test]
async fn commands_with_fields_of_the_wrong_type_are_refused_not_coerced() {
    let (a, _b, agency, session) = two_nodes(NodeOptions::default()).await;
    let mut viewer = join(a.addr, session, &a.token("v", Role::Viewer)).await;
    for count in [json!(-1), json!("3"), json!(1.5), json!(true)] {
        let reply = viewer.call("like", json!({ "count": count })).await;
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str()),
            (Some("error"), Some("bad_command")),
            "{count}: {reply}"
        );
    }
    let reply = viewer.call("like", json!("3")).await;
    assert_eq!(reply["code"], "bad_command", "{reply}");
    let mut host = join(a.addr, session, &a.agency_token(agency)).await;
    for data in [
        json!({"seconds": "10"}),
        json!({"seconds": 2.5}),
        json!({"seconds": -1}),
    ] {
        let reply = host.call("mod.slow_mode", data.clone()).await;
        assert_eq!(reply["code"], "bad_command", "{data}: {reply}");
    }
    let reply = host.call("mod.mute", json!({"user": "v", "seconds": "60"})).await;
    assert_eq!(reply["code"], "bad_command", "{reply}");
    // No like was counted.
    assert_eq!(viewer.call("like", json!({ "count": 2 })).await["type"], "ack");
    let likes = viewer.expect("likes").await;
    assert_eq!(likes["data"]["total"], 2, "{likes}");
}
