//! The hub under attack: host rights that end with the roster, rate limits
//! that span nodes and reconnects, join/leave churn against the resume
//! history, the moderation hierarchy and its HTTP unban, and presence that
//! shows names rather than subject ids.

use std::time::{Duration, Instant};

use hawker_core::{Claims, Role};
use hawker_hub::Publication;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::agency::{invite, invited_and_accepted, new_host};
use crate::support::fixtures::{agency_token, insert_agency};
use crate::support::socket::{connect, join, Ws};
use crate::support::{two_nodes, NodeOptions, TestApp};

/// A token for `sub` with the `name` claim.
fn named_token(app: &TestApp, sub: &str, name: &str) -> String {
    let mut claims = Claims::new(sub, Role::Viewer, chrono::Duration::hours(1));
    claims.name = Some(name.to_string());
    app.keys.sign(&claims).unwrap()
}

/// Sends `kind` until it is acknowledged (a right granted on another node
/// takes one event delivery to arrive), at most 10 s.
async fn call_until_ack(ws: &mut Ws, kind: &str, data: Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = ws.call(kind, data.clone()).await;
        if reply["type"] == "ack" || Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_host_removed_from_the_roster_is_demoted_and_refused_within_the_recheck_bound() {
    let (a, _b, agency, session) =
        two_nodes(NodeOptions::default().env(&[("HAWKER__HUB__HOST_RECHECK_SECS", "1")])).await;
    let host = invited_and_accepted(&a, agency).await;
    let mut ws = join(a.addr, session, &a.host_token(host)).await;
    let ack = ws.call("host.message", json!({"text": "welcome"})).await;
    assert_eq!(ack["type"], "ack", "{ack}");

    let (status, body) = a
        .send(
            Method::DELETE,
            &format!("/v1/agencies/{agency}/roster/{host}"),
            &a.agency_token(agency),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let removed = Instant::now();
    // Within the bound (1 s here, plus the time of one query) the socket
    // hears that it is a viewer now, without sending anything.
    let rights = ws.expect("rights").await;
    assert!(
        removed.elapsed() < Duration::from_secs(3),
        "demoted after {:?}",
        removed.elapsed()
    );
    assert_eq!(rights["you"]["can_host"], false, "{rights}");
    assert_eq!(rights["you"]["can_moderate"], false, "{rights}");
    for (kind, data) in [
        ("host.message", json!({"text": "still here?"})),
        ("host.pin", json!({"item": {}})),
        ("mod.ban", json!({"user": "someone"})),
        ("mod.grant", json!({"user": "friend"})),
    ] {
        let reply = ws.call(kind, data).await;
        assert_eq!(reply["code"], "forbidden", "{kind}: {reply}");
    }
    // Demoted, not closed: the socket goes on as a viewer's.
    assert_eq!(ws.call("ping", json!({})).await["type"], "ack");
}

#[tokio::test]
async fn a_host_command_right_after_the_roster_change_is_refused_once_the_bound_passed() {
    let (a, _b, agency, session) =
        two_nodes(NodeOptions::default().env(&[("HAWKER__HUB__HOST_RECHECK_SECS", "2")])).await;
    let host = invited_and_accepted(&a, agency).await;
    let mut ws = join(a.addr, session, &a.host_token(host)).await;
    let (status, _) = a
        .send(
            Method::DELETE,
            &format!("/v1/agencies/{agency}/roster/{host}"),
            &a.agency_token(agency),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let removed = Instant::now();
    // Keep sending host messages: each one either comes before the bound or is refused.
    // The bound is on the answer's age when the command is carried out, so
    // it holds for the send time (the ack itself may arrive after it).
    loop {
        let sent = removed.elapsed();
        let reply = ws.call("host.message", json!({"text": "again"})).await;
        if reply["code"] == "forbidden" {
            break;
        }
        assert_eq!(reply["type"], "ack", "{reply}");
        assert!(
            sent < Duration::from_secs(2),
            "a host command sent {sent:?} after the host left the roster was accepted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_sockets_of_one_user_on_two_nodes_share_one_chat_burst() {
    let (a, b, _, session) = two_nodes(NodeOptions::default()).await;
    let mut on_a = join(a.addr, session, &a.token("twin", Role::Viewer)).await;
    let mut on_b = join(b.addr, session, &b.token("twin", Role::Viewer)).await;
    let mut acks = 0;
    for i in 0..20 {
        let ws = if i % 2 == 0 { &mut on_a } else { &mut on_b };
        let reply = ws.call("chat.send", json!({"text": format!("spam {i}")})).await;
        match (reply["type"].as_str(), reply["code"].as_str()) {
            (Some("ack"), _) => acks += 1,
            (Some("error"), Some("rate_limited")) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        acks, 5,
        "one burst (hub.chat_burst) for the user, not one per node"
    );
}

#[tokio::test]
async fn reconnecting_on_another_node_does_not_reset_slow_mode() {
    let (a, b, agency, session) = two_nodes(NodeOptions::default()).await;
    let mut host = join(a.addr, session, &a.agency_token(agency)).await;
    let ack = host.call("mod.slow_mode", json!({"seconds": 60})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let token = a.token("hopper", Role::Viewer);
    let mut first = join(a.addr, session, &token).await;
    let reply = call_until_ack(&mut first, "chat.send", json!({"text": "one"})).await;
    assert_eq!(reply["type"], "ack", "{reply}");
    drop(first);
    let mut second = join(b.addr, session, &token).await;
    let reply = second.call("chat.send", json!({"text": "two"})).await;
    assert_eq!(reply["code"], "slow_mode", "{reply}");
}

#[tokio::test]
async fn likes_over_the_limit_do_not_count_in_the_figures() {
    let (a, b, _, session) = two_nodes(NodeOptions::default().env(&[
        ("HAWKER__HUB__LIKES_BURST", "10"),
        ("HAWKER__HUB__LIKES_PER_SEC", "0.01"),
    ]))
    .await;
    let mut on_a = join(a.addr, session, &a.token("tapper", Role::Viewer)).await;
    let mut on_b = join(b.addr, session, &b.token("tapper", Role::Viewer)).await;
    let first = on_a.call("like", json!({"count": 100})).await;
    assert_eq!(first["data"], json!({"counted": 10}), "{first}");
    let second = on_b.call("like", json!({"count": 100})).await;
    assert_eq!(second["data"], json!({"counted": 0}), "{second}");
    // The total the room announces, and the figures read from it, stop at
    // 10. The announcement may come while the taps below wait for their
    // acks, so every frame read on the way is looked at.
    let announced = std::cell::Cell::new(0u64);
    let seen = |f: &Value| {
        if f["type"] == "likes" {
            let total = f["data"]["total"].as_u64().unwrap_or(u64::MAX);
            assert!(total <= 10, "{f}");
            announced.set(announced.get().max(total));
        }
    };
    for _ in 0..20 {
        let id = on_a.send("like", json!({})).await;
        let reply = on_a
            .until("reply to `like`", Duration::from_secs(15), |f| {
                seen(f);
                f["id"] == id.as_str() && (f["type"] == "ack" || f["type"] == "error")
            })
            .await;
        assert_eq!(reply["data"], json!({"counted": 0}), "{reply}");
    }
    if announced.get() < 10 {
        on_a.until("likes total of 10", Duration::from_secs(10), |f| {
            seen(f);
            f["type"] == "likes" && f["data"]["total"] == 10
        })
        .await;
    }
    for frame in on_b.frames_for(Duration::from_millis(1500)).await {
        if frame["type"] == "likes" {
            assert!(frame["data"]["total"].as_u64().unwrap() <= 10, "{frame}");
        }
    }
    // The figures' source (the room's counters) holds 10, and never more.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let likes = a.hub.room_counters(session).await.map(|c| c.likes).unwrap_or(-1);
        assert!(likes <= 10, "{likes} likes counted");
        if likes == 10 {
            break;
        }
        assert!(Instant::now() < deadline, "the counters show {likes}, not 10");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_user_reconnecting_500_times_does_not_push_a_host_message_out_of_the_history() {
    let (a, b, agency, session) =
        two_nodes(NodeOptions::default().env(&[("HAWKER__HUB__HISTORY_LEN", "100")])).await;
    let mut reader = join(b.addr, session, &b.token("reader", Role::Viewer)).await;
    let mut host = join(a.addr, session, &a.agency_token(agency)).await;
    // The reader's position just before the host message; then it goes away.
    let position = reader.expect("presence.joined").await;
    assert!(
        position["offset"].is_null(),
        "presence takes no offset: {position}"
    );
    let ack = host
        .call("host.message", json!({"text": "flash deal at 9"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let (epoch, offset) = (reader.epoch.clone(), reader.offset);
    drop(reader);

    let churner = a.token("churner", Role::Viewer);
    for i in 0..500 {
        let node = if i % 2 == 0 { &a } else { &b };
        let mut ws = connect(node.addr, session, &churner, None).await;
        ws.expect("welcome").await;
        let _ = ws.stream.close(None).await;
    }

    let mut back = connect(
        b.addr,
        session,
        &b.token("reader", Role::Viewer),
        Some((&epoch, offset)),
    )
    .await;
    let resumed = back.frame().await;
    assert_eq!(
        resumed["type"], "resumed",
        "the history still reaches back: {resumed}"
    );
    let message = back.expect("host.message").await;
    assert_eq!(message["data"]["text"], "flash deal at 9");
}

#[tokio::test]
async fn moderators_cannot_act_on_hosts_the_agency_admins_or_other_moderators() {
    let (a, b, agency, session) = two_nodes(NodeOptions::default()).await;
    let host = invited_and_accepted(&a, agency).await;
    let mut agency_ws = join(a.addr, session, &a.agency_token(agency)).await;
    let _host_ws = join(b.addr, session, &b.host_token(host)).await;
    let _admin_ws = join(b.addr, session, &b.token("admin-1", Role::Admin)).await;
    for user in ["mod-1", "mod-2"] {
        let ack = agency_ws.call("mod.grant", json!({"user": user})).await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let mut moderator = join(b.addr, session, &b.token("mod-1", Role::Viewer)).await;
    // Moderation works on viewers (and proves the appointment has arrived).
    let ack = call_until_ack(&mut moderator, "mod.mute", json!({"user": "viewer-x"})).await;
    assert_eq!(ack["type"], "ack", "{ack}");

    let host_id = host.to_string();
    for target in [host_id.as_str(), "agency-user", "admin-1", "mod-2"] {
        for kind in ["mod.ban", "mod.mute", "mod.unban", "mod.unmute"] {
            let reply = moderator
                .call(kind, json!({"user": target, "seconds": 600}))
                .await;
            assert_eq!(reply["code"], "forbidden", "{kind} on {target}: {reply}");
        }
    }
    // The host (here the agency) may still act on a moderator.
    let ack = agency_ws.call("mod.mute", json!({"user": "mod-2"})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    // Nobody bans someone who may host.
    let reply = agency_ws.call("mod.ban", json!({"user": host_id})).await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
}

#[tokio::test]
async fn a_host_with_a_ban_record_still_joins_and_is_not_closed_by_a_ban() {
    let (a, b, agency, session) = two_nodes(NodeOptions::default()).await;
    let host = new_host(&a, agency).await;
    let mut agency_ws = join(a.addr, session, &a.agency_token(agency)).await;
    // Banned while not on the roster (nothing protects a stranger)...
    let ack = agency_ws
        .call("mod.ban", json!({"user": host.to_string(), "seconds": 3600}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    // ...then the host joins the roster: the old ban does not lock them out.
    let invite_id = invite(&a, agency, host).await["invite_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = a
        .send(
            Method::POST,
            &format!("/v1/hosts/{host}/invites/{invite_id}/accept"),
            &a.host_token(host),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut host_ws = connect(b.addr, session, &b.host_token(host), None).await;
    let welcome = host_ws.frame().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["you"]["can_host"], true);
    // A ban that reaches the room anyway does not close a host's socket.
    a.hub
        .publish(
            session,
            Publication::new(
                "moderation.banned",
                json!({"user": host.to_string(), "until": chrono::Utc::now().timestamp_millis() + 60_000}),
            ),
        )
        .await
        .unwrap();
    host_ws.expect("moderation.banned").await;
    let ack = host_ws.call("host.message", json!({"text": "still here"})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
}

#[tokio::test]
async fn the_agency_lifts_a_ban_over_http_and_another_agency_cannot() {
    let (a, _b, agency, session) = two_nodes(NodeOptions::default()).await;
    let mut agency_ws = join(a.addr, session, &a.agency_token(agency)).await;
    for user in ["troll-c", "troll-a", "troll-b"] {
        let ack = agency_ws
            .call("mod.ban", json!({"user": user, "seconds": 3600}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let troll = a.token("troll-a", Role::Viewer);
    let mut refused = connect(a.addr, session, &troll, None).await;
    assert_eq!(refused.frame().await["code"], "banned");

    // Listed a page at a time, in user order.
    let path = format!("/v1/sessions/{session}/bans");
    let (status, first) = a
        .send(
            Method::GET,
            &format!("{path}?limit=2"),
            &a.agency_token(agency),
            None,
        )
        .await;
    assert_eq!(status, 200, "{first}");
    let users: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["troll-a", "troll-b"]);
    assert!(first["items"][0]["until"].is_string(), "{first}");
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = a
        .send(
            Method::GET,
            &format!("{path}?limit=2&cursor={cursor}"),
            &a.agency_token(agency),
            None,
        )
        .await;
    assert_eq!(second["items"][0]["user"], "troll-c", "{second}");
    assert_eq!(second["next_cursor"], Value::Null);

    // Another agency may neither list nor lift; a viewer neither.
    let other = agency_token(&a.keys, insert_agency(&a.db).await);
    let viewer = a.token("troll-a", Role::Viewer);
    for token in [&other, &viewer] {
        let (status, _) = a.send(Method::GET, &path, token, None).await;
        assert_eq!(status, 403);
        let (status, body) = a
            .send(Method::DELETE, &format!("{path}/troll-a"), token, None)
            .await;
        assert_eq!(status, 403, "{body}");
    }
    let mut still = connect(a.addr, session, &troll, None).await;
    assert_eq!(still.frame().await["code"], "banned");

    // The agency lifts it: the user joins again at once, on any node.
    let (status, body) = a
        .send(
            Method::DELETE,
            &format!("{path}/troll-a"),
            &a.agency_token(agency),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let lifted = agency_ws.expect("moderation.unbanned").await;
    assert_eq!(lifted["data"], json!({"user": "troll-a", "by": "agency-user"}));
    let mut back = connect(a.addr, session, &troll, None).await;
    assert_eq!(back.frame().await["type"], "welcome");
    let (_, left) = a
        .send(Method::GET, &path, &a.token("admin-1", Role::Admin), None)
        .await;
    let users: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["troll-b", "troll-c"], "an admin may list too");
    let (status, body) = a
        .send(
            Method::DELETE,
            &format!("{path}/{}", "x".repeat(65)),
            &a.agency_token(agency),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_user")),
        "{body}"
    );
    let (status, _) = a
        .send(
            Method::GET,
            &format!("/v1/sessions/{}/bans", Uuid::new_v4()),
            &a.agency_token(agency),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn presence_shows_display_names_where_known_and_takes_no_offset() {
    let (a, _b, agency, session) = two_nodes(NodeOptions::default()).await;
    let host = invited_and_accepted(&a, agency).await;
    let mut watcher = join(a.addr, session, &a.token("watcher", Role::Viewer)).await;
    watcher.expect("presence.joined").await; // its own

    let cases = [
        (
            a.host_token(host),
            json!({"name": "Host"}),
            "the host's display name",
        ),
        (
            named_token(&a, "idp|5501", "Mia Chen"),
            json!({"name": "Mia Chen"}),
            "the token's name",
        ),
        (
            named_token(&a, "idp|5502", "evil\u{202E}name"),
            json!({"user": "idp|5502"}),
            "a name unfit to show is not shown",
        ),
    ];
    let mut open = Vec::new();
    for (token, shown, why) in cases {
        open.push(join(a.addr, session, &token).await);
        let seen = watcher.expect("presence.joined").await;
        assert_eq!(seen["data"], shown, "{why}: {seen}");
        assert!(
            seen.get("offset").is_none() && seen.get("epoch").is_none(),
            "{seen}"
        );
    }

    let mut plain = join(a.addr, session, &a.token("viewer-9", Role::Viewer)).await;
    let seen = watcher.expect("presence.joined").await;
    assert_eq!(seen["data"], json!({"user": "viewer-9"}), "no name known: {seen}");
    let _ = plain.stream.close(None).await;
    let seen = watcher.expect("presence.left").await;
    assert_eq!(seen["data"], json!({"user": "viewer-9"}));
}
