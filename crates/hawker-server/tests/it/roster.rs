//! Roster consent (an agency invites, only the host accepts, the stay begins
//! then) and cursor paging of the agency side's lists.

use std::collections::HashSet;

use chrono::Duration;
use hawker_core::Role;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::agency::{id, invite, invited_and_accepted, iso, new_host, now, roster_host};
use crate::support::fixtures::{brand_token, insert_agency};
use crate::support::{spawn_app, TestApp};

async fn accept(app: &TestApp, path_host: Uuid, invite: Uuid, token: &str) -> (u16, Value) {
    app.send(
        Method::POST,
        &format!("/v1/hosts/{path_host}/invites/{invite}/accept"),
        token,
        None,
    )
    .await
}

async fn roster_ids(app: &TestApp, agency: Uuid) -> Vec<Value> {
    let (status, page) = app
        .send(
            Method::GET,
            &format!("/v1/agencies/{agency}/roster"),
            &app.agency_token(agency),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["host_id"].clone())
        .collect()
}

#[tokio::test]
async fn a_host_joins_a_roster_only_by_accepting_an_invite_and_the_stay_begins_then() {
    let app = spawn_app().await;
    let agency = insert_agency(&app.db).await;
    let host = new_host(&app, agency).await;
    let sent = invite(&app, agency, host).await;
    let invite_id = id(&sent, "invite_id");
    assert_eq!(sent["host_id"], json!(host));
    assert_eq!(sent["agency_id"], json!(agency));
    // Pending: not on the roster, and no shift can be booked for the host.
    assert!(roster_ids(&app, agency).await.is_empty());
    let stays: i64 = sqlx::query_scalar("select count(*) from agency_host where host_id = $1")
        .bind(host)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stays, 0);
    // A second invite while one is pending is refused.
    let (status, body) = app
        .send(
            Method::POST,
            &format!("/v1/agencies/{agency}/roster"),
            &app.agency_token(agency),
            Some(json!({"host_id": host})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("invite_pending")),
        "{body}"
    );

    // The host sees the invite, and accepts it.
    let (status, mine) = app
        .send(
            Method::GET,
            &format!("/v1/hosts/{host}/invites"),
            &app.host_token(host),
            None,
        )
        .await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["items"][0]["invite_id"], json!(invite_id), "{mine}");
    assert_eq!(mine["items"][0]["status"], "pending");
    let before = chrono::Utc::now();
    let (status, stay) = accept(&app, host, invite_id, &app.host_token(host)).await;
    let after = chrono::Utc::now();
    assert_eq!(status, 200, "{stay}");
    let joined: chrono::DateTime<chrono::Utc> = stay["joined_at"].as_str().unwrap().parse().unwrap();
    assert!(
        joined >= before - Duration::seconds(2) && joined <= after + Duration::seconds(2),
        "the stay begins at acceptance: {joined} not in [{before}, {after}]"
    );
    assert_eq!(stay["current"], true);
    assert_eq!(stay["left_at"], Value::Null);
    assert_eq!(roster_ids(&app, agency).await, vec![json!(host)]);
    let linked: Option<Uuid> = sqlx::query_scalar("select invite_id from agency_host where host_id = $1")
        .bind(host)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(
        linked,
        Some(invite_id),
        "the stay names the invite it was accepted from"
    );
    // An invite is answered once.
    let (status, body) = accept(&app, host, invite_id, &app.host_token(host)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("invite_not_pending")),
        "{body}"
    );
    let (_, listed) = app
        .send(
            Method::GET,
            &format!("/v1/agencies/{agency}/invites"),
            &app.agency_token(agency),
            None,
        )
        .await;
    assert_eq!(listed["items"][0]["status"], "accepted", "{listed}");

    // Declining and withdrawing: neither puts anyone on a roster.
    let other = new_host(&app, agency).await;
    let declined = id(&invite(&app, agency, other).await, "invite_id");
    let (status, body) = app
        .send(
            Method::POST,
            &format!("/v1/hosts/{other}/invites/{declined}/decline"),
            &app.host_token(other),
            None,
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("declined")),
        "{body}"
    );
    let (status, body) = accept(&app, other, declined, &app.host_token(other)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("invite_not_pending")),
        "{body}"
    );
    let withdrawn = id(&invite(&app, agency, other).await, "invite_id");
    let (status, body) = app
        .send(
            Method::DELETE,
            &format!("/v1/agencies/{agency}/invites/{withdrawn}"),
            &app.agency_token(agency),
            None,
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("withdrawn")),
        "{body}"
    );
    let (status, _) = accept(&app, other, withdrawn, &app.host_token(other)).await;
    assert_eq!(status, 409);
    // An expired invite cannot be accepted.
    let expired = id(&invite(&app, agency, other).await, "invite_id");
    sqlx::query(
        "update roster_invite set created_at = now() - interval '8 days', expires_at = now() - interval '1 day'
          where invite_id = $1",
    )
    .bind(expired)
    .execute(&app.db)
    .await
    .unwrap();
    let (status, body) = accept(&app, other, expired, &app.host_token(other)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("invite_expired")),
        "{body}"
    );
    assert_eq!(roster_ids(&app, agency).await, vec![json!(host)]);
}

#[tokio::test]
async fn a_joined_at_far_from_now_is_refused_and_cannot_block_other_agencies() {
    let app = spawn_app().await;
    let (squatter, rival) = (insert_agency(&app.db).await, insert_agency(&app.db).await);
    let host = new_host(&app, rival).await;
    for joined_at in [
        "2099-01-01T00:00:00Z".to_string(),
        iso(now() + Duration::hours(1)),
        iso(now() - Duration::hours(1)),
    ] {
        let (status, body) = app
            .send(
                Method::POST,
                &format!("/v1/agencies/{squatter}/roster"),
                &app.agency_token(squatter),
                Some(json!({"host_id": host, "joined_at": joined_at})),
            )
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("bad_joined_at")),
            "{joined_at}: {body}"
        );
    }
    let invites: i64 = sqlx::query_scalar("select count(*) from roster_invite where host_id = $1")
        .bind(host)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(invites, 0);
    // A joined_at of now is accepted, and changes nothing: the stay begins at acceptance.
    let (status, sent) = app
        .send(
            Method::POST,
            &format!("/v1/agencies/{squatter}/roster"),
            &app.agency_token(squatter),
            Some(json!({"host_id": host, "joined_at": iso(now())})),
        )
        .await;
    assert_eq!(
        (status, sent["status"].as_str()),
        (201, Some("pending")),
        "{sent}"
    );
    // A pending invite reserves nothing: the rival invites too, and the host picks the rival.
    let chosen = id(&invite(&app, rival, host).await, "invite_id");
    let (status, body) = accept(&app, host, chosen, &app.host_token(host)).await;
    assert_eq!(status, 200, "{body}");
    // Now the squatter's invite cannot be accepted, and no new one can be sent.
    let (status, body) = accept(&app, host, id(&sent, "invite_id"), &app.host_token(host)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("host_on_another_roster")),
        "{body}"
    );
    let (status, body) = app
        .send(
            Method::POST,
            &format!("/v1/agencies/{squatter}/roster"),
            &app.agency_token(squatter),
            Some(json!({"host_id": host})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("host_on_another_roster")),
        "{body}"
    );
    // The rival inviting its own host again is refused the same way.
    let (status, body) = app
        .send(
            Method::POST,
            &format!("/v1/agencies/{rival}/roster"),
            &app.agency_token(rival),
            Some(json!({"host_id": host})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("host_on_another_roster")),
        "{body}"
    );
    assert_eq!(roster_ids(&app, rival).await, vec![json!(host)]);
    assert!(roster_ids(&app, squatter).await.is_empty());
}

#[tokio::test]
async fn only_the_invited_host_can_accept_not_another_host_nor_an_outsider() {
    let app = spawn_app().await;
    let (agency, other_agency) = (insert_agency(&app.db).await, insert_agency(&app.db).await);
    let invited = new_host(&app, agency).await;
    let wrong_host = new_host(&app, other_agency).await;
    let invite_id = id(&invite(&app, agency, invited).await, "invite_id");
    // Another agency's invite for another host is not the wrong host's to accept.
    let (status, body) = accept(&app, invited, invite_id, &app.host_token(wrong_host)).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = accept(&app, wrong_host, invite_id, &app.host_token(wrong_host)).await;
    assert_eq!(status, 404, "not the wrong host's invite: {body}");
    // Outsiders, the inviting agency itself and admins do not consent for the host.
    let brand = Uuid::new_v4();
    for (who, token) in [
        ("viewer", app.token("viewer-1", Role::Viewer)),
        (
            "viewer named as the host",
            app.token(&invited.to_string(), Role::Viewer),
        ),
        ("the inviting agency", app.agency_token(agency)),
        ("another agency", app.agency_token(other_agency)),
        ("a brand", brand_token(&app.keys, brand)),
        ("an admin", app.token("admin-1", Role::Admin)),
    ] {
        let (status, body) = accept(&app, invited, invite_id, &token).await;
        assert_eq!(status, 403, "{who}: {body}");
        let (status, body) = app
            .send(
                Method::POST,
                &format!("/v1/hosts/{invited}/invites/{invite_id}/decline"),
                &token,
                None,
            )
            .await;
        assert_eq!(status, 403, "{who} declining: {body}");
    }
    // Nor do they read the host's invites (admins aside).
    let (status, _) = app
        .send(
            Method::GET,
            &format!("/v1/hosts/{invited}/invites"),
            &app.host_token(wrong_host),
            None,
        )
        .await;
    assert_eq!(status, 403);
    // Another agency neither lists nor withdraws the invite.
    let (status, _) = app
        .send(
            Method::DELETE,
            &format!("/v1/agencies/{other_agency}/invites/{invite_id}"),
            &app.agency_token(other_agency),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .send(
            Method::GET,
            &format!("/v1/agencies/{agency}/invites"),
            &app.agency_token(other_agency),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let stays: i64 = sqlx::query_scalar("select count(*) from agency_host where host_id = $1")
        .bind(invited)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stays, 0, "nobody but the host put them on a roster");
    let (status, _) = accept(&app, invited, invite_id, &app.host_token(invited)).await;
    assert_eq!(status, 200);
}

// ------------------------------------------------------------------ paging

/// Walks a list route page by page (`limit` items each); returns every item
/// and the number of pages.
async fn walk(app: &TestApp, path: &str, token: &str, limit: u32, items: &str) -> (Vec<Value>, usize) {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    let sep = if path.contains('?') { '&' } else { '?' };
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let (status, page) = app.send(Method::GET, &url, token, None).await;
        assert_eq!(status, 200, "{url}: {page}");
        let batch = page[items].as_array().unwrap();
        assert!(batch.len() <= limit as usize, "{url}: {page}");
        seen.extend(batch.iter().cloned());
        pages += 1;
        assert!(pages < 1000, "the cursor never ends");
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    (seen, pages)
}

fn exactly_once(items: &[Value], field: &str, expected: usize, what: &str) {
    let all: Vec<String> = items.iter().map(|i| i[field].to_string()).collect();
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "{what}: an item came twice: {all:?}");
    assert_eq!(all.len(), expected, "{what}: {all:?}");
}

#[tokio::test]
async fn every_agency_list_is_paged_and_walking_the_cursor_returns_each_item_once() {
    let app = spawn_app().await;
    let agency = insert_agency(&app.db).await;
    let token = app.agency_token(agency);

    // The roster: 7 hosts, one of whom left and came back (8 stays).
    let mut hosts = Vec::new();
    for _ in 0..6 {
        hosts.push(invited_and_accepted(&app, agency).await);
    }
    let host = roster_host(&app, agency).await;
    hosts.push(host);
    let (status, _) = app
        .send(
            Method::DELETE,
            &format!("/v1/agencies/{agency}/roster/{}", hosts[0]),
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let again = id(&invite(&app, agency, hosts[0]).await, "invite_id");
    let (status, body) = accept(&app, hosts[0], again, &app.host_token(hosts[0])).await;
    assert_eq!(status, 200, "{body}");
    let path = format!("/v1/agencies/{agency}/roster?include_past=true");
    let (stays, pages) = walk(&app, &path, &token, 3, "items").await;
    assert_eq!(pages, 3);
    let keys: Vec<Value> = stays
        .iter()
        .map(|m| json!({"key": [m["host_id"], m["joined_at"]]}))
        .collect();
    exactly_once(&keys, "key", 8, "roster stays");
    let (current, _) = walk(&app, &format!("/v1/agencies/{agency}/roster"), &token, 2, "items").await;
    exactly_once(&current, "host_id", 7, "current roster");
    let (invites, _) = walk(
        &app,
        &format!("/v1/agencies/{agency}/invites"),
        &token,
        3,
        "items",
    )
    .await;
    exactly_once(&invites, "invite_id", 8, "agency invites");

    // Sessions: 11 in one day, three of them starting at the same instant.
    let day = (now() + Duration::days(3)).date_naive();
    let base = day.and_hms_opt(1, 0, 0).unwrap().and_utc();
    for i in 0..11i64 {
        let start = base + Duration::hours(i.min(8));
        sqlx::query(
            "insert into live_session (session_id, agency_id, title, planned_start, planned_end)
             values ($1, $2, 'Paged', $3, $4)",
        )
        .bind(Uuid::new_v4())
        .bind(agency)
        .bind(start)
        .bind(start + Duration::hours(1))
        .execute(&app.db)
        .await
        .unwrap();
    }
    let path = format!("/v1/agencies/{agency}/sessions?date={day}");
    let (sessions, _) = walk(&app, &path, &token, 4, "items").await;
    exactly_once(&sessions, "session_id", 11, "agency sessions");

    // Shifts: one 24-hour session, 10 hourly shifts of one host plus 3
    // cancelled ones starting with the first (ties in the order).
    let long_start = (now() + Duration::days(5))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let session = Uuid::new_v4();
    sqlx::query(
        "insert into live_session (session_id, agency_id, title, planned_start, planned_end)
         values ($1, $2, 'Marathon', $3, $4)",
    )
    .bind(session)
    .bind(agency)
    .bind(long_start)
    .bind(long_start + Duration::hours(24))
    .execute(&app.db)
    .await
    .unwrap();
    for i in 0..13i64 {
        let start = long_start + Duration::hours(i.saturating_sub(3));
        sqlx::query(
            "insert into shift (shift_id, session_id, host_id, planned_start, planned_end, created_by, cancelled_at)
             values ($1, $2, $3, $4, $5, 'test', case when $6 then now() end)",
        )
        .bind(Uuid::new_v4())
        .bind(session)
        .bind(host)
        .bind(start)
        .bind(start + Duration::hours(1))
        .bind(i < 3)
        .execute(&app.db)
        .await
        .unwrap();
    }
    let (shifts, _) = walk(
        &app,
        &format!("/v1/sessions/{session}/shifts"),
        &token,
        4,
        "items",
    )
    .await;
    exactly_once(&shifts, "shift_id", 13, "session shifts");
    let (shifts, _) = walk(
        &app,
        &format!("/v1/hosts/{host}/shifts"),
        &app.host_token(host),
        5,
        "items",
    )
    .await;
    exactly_once(&shifts, "shift_id", 13, "host shifts");
    let (shifts, _) = walk(&app, &format!("/v1/hosts/{host}/shifts"), &token, 100, "items").await;
    exactly_once(&shifts, "shift_id", 13, "host shifts as the agency, one page");

    // Statements: 60 entries, by threes at the same instant; totals are the
    // whole period's on every page.
    let terms = Uuid::new_v4();
    sqlx::query(
        "insert into commission_terms (terms_id, session_id, version, effective_from, host_share_bps, currency, created_by)
         values ($1, $2, 1, now(), 5000, 'USD', 'test')",
    )
    .bind(terms)
    .bind(session)
    .execute(&app.db)
    .await
    .unwrap();
    for i in 0..60i64 {
        let party = if i % 2 == 0 { "host" } else { "agency" };
        sqlx::query(
            "insert into commission_entry (kind, source_id, party, agency_id, host_id, session_id, terms_id,
                    amount_minor, currency, occurred_at)
             values ('slot_fee', $1, $2, $3, $4, $5, $6, $7, 'USD', $8)",
        )
        .bind(Uuid::new_v4())
        .bind(party)
        .bind(agency)
        .bind((party == "host").then_some(host))
        .bind(session)
        .bind(terms)
        .bind(100 + i)
        .bind(long_start + Duration::minutes(i / 3))
        .execute(&app.db)
        .await
        .unwrap();
    }
    let (entries, pages) = walk(
        &app,
        &format!("/v1/agencies/{agency}/statement"),
        &token,
        7,
        "entries",
    )
    .await;
    assert_eq!(pages, 9);
    exactly_once(&entries, "commission_entry_id", 60, "agency statement");
    let (status, first) = app
        .send(
            Method::GET,
            &format!("/v1/agencies/{agency}/statement?limit=7"),
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let sum: i64 = entries.iter().map(|e| e["amount_minor"].as_i64().unwrap()).sum();
    assert_eq!(first["total"][0]["net_payable_minor"], sum, "{first}");
    assert_eq!(first["entries"].as_array().unwrap().len(), 7);
    let (entries, _) = walk(
        &app,
        &format!("/v1/hosts/{host}/statement"),
        &app.host_token(host),
        8,
        "entries",
    )
    .await;
    exactly_once(&entries, "commission_entry_id", 30, "host statement");

    // A page above the maximum is refused, not clamped; so are 0 and garbage.
    for path in [
        format!("/v1/agencies/{agency}/roster"),
        format!("/v1/agencies/{agency}/invites"),
        format!("/v1/agencies/{agency}/sessions?date={day}"),
        format!("/v1/sessions/{session}/shifts"),
        format!("/v1/hosts/{host}/shifts"),
        format!("/v1/agencies/{agency}/statement"),
        format!("/v1/hosts/{host}/statement"),
    ] {
        let sep = if path.contains('?') { '&' } else { '?' };
        for limit in ["101", "0", "-5", "lots"] {
            let (status, body) = app
                .send(Method::GET, &format!("{path}{sep}limit={limit}"), &token, None)
                .await;
            assert_eq!(
                (status, body["error"].as_str()),
                (400, Some("bad_limit")),
                "{path} {limit}: {body}"
            );
        }
        let (status, body) = app
            .send(Method::GET, &format!("{path}{sep}limit=100"), &token, None)
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        let (status, body) = app
            .send(
                Method::GET,
                &format!("{path}{sep}cursor=not-a-cursor"),
                &token,
                None,
            )
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("bad_cursor")),
            "{path}: {body}"
        );
    }
    // Without a limit, a page holds 50.
    let (status, body) = app
        .send(
            Method::GET,
            &format!("/v1/agencies/{agency}/statement"),
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["entries"].as_array().unwrap().len(), 50);
    assert!(body["next_cursor"].is_string());
}
