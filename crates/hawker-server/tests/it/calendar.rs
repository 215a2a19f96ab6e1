//! Calendar feeds against real Postgres and Redis: a host's feed lists their
//! shifts and nobody else's, an agency's its sessions; regenerating kills
//! the old URL, revoking the feed; only hosts (their own) and agencies (and
//! admins, theirs) make feeds; and the feed token opens nothing else.

use chrono::Duration;
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;
use uuid::Uuid;

use crate::agency::{book, id, iso, now, roster_host, schedule};
use crate::support::fixtures::{insert_agency, insert_brand_with_sku};
use crate::support::{spawn_app, TestApp};

/// A feed fetched as a calendar app does: no headers. (status, content
/// type, cache control, body).
async fn fetch(app: &TestApp, token: &str) -> (u16, String, String, String) {
    let response = app
        .http
        .get(app.url(&format!("/v1/calendar/{token}.ics")))
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (content_type, cache) = (header("content-type"), header("cache-control"));
    let status = response.status().as_u16();
    (status, content_type, cache, response.text().await.unwrap())
}

/// `POST path` as `token`: the new feed's token (asserting a 201 and its URL).
async fn make_feed(app: &TestApp, path: &str, token: &str) -> String {
    let (status, feed) = app.send(Method::POST, path, token, None).await;
    assert_eq!(status, 201, "{feed}");
    let secret = feed["token"].as_str().unwrap().to_string();
    assert!(secret.len() >= 22, "at least 128 bits: {feed}");
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{feed}"
    );
    assert!(
        feed["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1/calendar/{secret}.ics")),
        "{feed}"
    );
    assert!(feed["created_at"].is_string(), "{feed}");
    secret
}

/// The feed's unfolded content lines.
fn lines(body: &str) -> Vec<String> {
    assert!(body.ends_with("\r\n"), "{body:?}");
    assert!(!body.replace("\r\n", "").contains('\n'), "a bare LF in {body:?}");
    for line in body.split("\r\n") {
        assert!(
            line.len() <= 75,
            "an unfolded line of {} octets: {line:?}",
            line.len()
        );
    }
    body.replace("\r\n ", "")
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn has(lines: &[String], line: &str) -> bool {
    lines.iter().any(|l| l == line)
}

/// An agency with two roster hosts and a session of a brand from
/// 2 hours from now for 3 hours: host A on the first hour, host B on the
/// second, and a cancelled shift of A's in the third.
struct Schedule {
    agency: Uuid,
    session: Uuid,
    host_a: Uuid,
    host_b: Uuid,
    shift_a: Uuid,
    shift_b: Uuid,
    cancelled_a: Uuid,
}

async fn a_schedule(app: &TestApp) -> Schedule {
    let agency = insert_agency(&app.db).await;
    let (brand, _) = insert_brand_with_sku(&app.db, 2500, 10).await;
    let (host_a, host_b) = (roster_host(app, agency).await, roster_host(app, agency).await);
    let start = now() + Duration::hours(2);
    let session = schedule(
        app,
        agency,
        json!({"title": "Winter glow, 50% off; live \\ now", "brand_id": brand,
               "planned_start": iso(start), "planned_end": iso(start + Duration::hours(3))}),
    )
    .await;
    let session = id(&session, "session_id");
    let hour = |h| start + Duration::hours(h);
    let booked = |(status, body): (u16, Value)| {
        assert_eq!(status, 201, "{body}");
        id(&body, "shift_id")
    };
    let shift_a = booked(book(app, agency, session, host_a, hour(0), hour(1)).await);
    let shift_b = booked(book(app, agency, session, host_b, hour(1), hour(2)).await);
    let cancelled_a = booked(book(app, agency, session, host_a, hour(2), hour(3)).await);
    let (status, body) = app
        .send(
            Method::DELETE,
            &format!("/v1/shifts/{cancelled_a}"),
            &app.agency_token(agency),
            None,
        )
        .await;
    assert!((200..300).contains(&status), "{body}");
    Schedule {
        agency,
        session,
        host_a,
        host_b,
        shift_a,
        shift_b,
        cancelled_a,
    }
}

#[tokio::test]
async fn a_host_feed_lists_their_shifts_and_not_another_hosts() {
    let app = spawn_app().await;
    let s = a_schedule(&app).await;
    let token = make_feed(&app, "/v1/me/calendar-feed", &app.host_token(s.host_a)).await;

    let (status, content_type, cache, body) = fetch(&app, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/calendar; charset=utf-8");
    assert_eq!(cache, "private, max-age=300");
    let lines = lines(&body);
    assert_eq!(lines.first().map(String::as_str), Some("BEGIN:VCALENDAR"));
    assert_eq!(lines.last().map(String::as_str), Some("END:VCALENDAR"));
    for line in ["VERSION:2.0", "CALSCALE:GREGORIAN", "METHOD:PUBLISH"] {
        assert!(has(&lines, line), "{line} in {body}");
    }
    assert!(lines.iter().any(|l| l.starts_with("PRODID:")), "{body}");
    // Their two shifts (one cancelled), not host B's.
    assert_eq!(lines.iter().filter(|l| *l == "BEGIN:VEVENT").count(), 2, "{body}");
    assert!(has(&lines, &format!("UID:shift-{}@hawker", s.shift_a)), "{body}");
    assert!(
        has(&lines, &format!("UID:shift-{}@hawker", s.cancelled_a)),
        "{body}"
    );
    assert!(!body.contains(&s.shift_b.to_string()), "{body}");
    assert!(
        has(&lines, "STATUS:CONFIRMED") && has(&lines, "STATUS:CANCELLED"),
        "{body}"
    );
    // Text escaped; times in UTC.
    assert!(
        has(&lines, "SUMMARY:Winter glow\\, 50% off\\; live \\\\ now"),
        "{body}"
    );
    let starts: Vec<&String> = lines.iter().filter(|l| l.starts_with("DTSTART:")).collect();
    assert!(
        starts
            .iter()
            .all(|l| l.len() == "DTSTART:20261203T100000Z".len() && l.ends_with('Z')),
        "{starts:?}"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("DTSTAMP:") && l.ends_with('Z')));
    let description = lines.iter().find(|l| l.starts_with("DESCRIPTION:")).unwrap();
    assert!(
        description.contains("Agency: ")
            && description.contains("\\nBrand: ")
            && description.contains(&format!("host.html?session={}", s.session)),
        "{description}"
    );

    // Host B's own feed has B's shift only.
    let token_b = make_feed(&app, "/v1/me/calendar-feed", &app.host_token(s.host_b)).await;
    let (_, _, _, body_b) = fetch(&app, &token_b).await;
    assert!(
        body_b.contains(&format!("UID:shift-{}@hawker", s.shift_b)),
        "{body_b}"
    );
    assert!(!body_b.contains(&s.shift_a.to_string()), "{body_b}");

    // Only a digest is stored, never the secret.
    let stored: Vec<(Vec<u8>,)> = sqlx::query_as("select token_sha256 from calendar_feed")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    let found: i64 = sqlx::query_scalar(
        "select count(*) from calendar_feed where token_sha256 = sha256(convert_to($1, 'UTF8'))",
    )
    .bind(&token)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(found, 1);
    let leaked: i64 =
        sqlx::query_scalar("select count(*) from calendar_feed c where strpos(row_to_json(c)::text, $1) > 0")
            .bind(&token)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(leaked, 0, "the secret is stored");
}

#[tokio::test]
async fn regenerating_kills_the_old_url_and_revoking_the_feed() {
    let app = spawn_app().await;
    let s = a_schedule(&app).await;
    let host = app.host_token(s.host_a);
    let first = make_feed(&app, "/v1/me/calendar-feed", &host).await;
    assert_eq!(fetch(&app, &first).await.0, 200);

    let second = make_feed(&app, "/v1/me/calendar-feed", &host).await;
    assert_ne!(first, second);
    let (status, content_type, _, old) = fetch(&app, &first).await;
    assert_eq!(status, 404, "{old}");
    assert!(content_type.starts_with("application/json"), "{content_type}");
    let old: Value = serde_json::from_str(&old).unwrap();
    assert_eq!(old["error"], "not_found", "{old}");
    assert_eq!(fetch(&app, &second).await.0, 200);

    let (status, body) = app
        .send(Method::DELETE, "/v1/me/calendar-feed", &host, None)
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, _, _, revoked) = fetch(&app, &second).await;
    assert_eq!(status, 404);
    // Revoking again is no error.
    let (status, _) = app
        .send(Method::DELETE, "/v1/me/calendar-feed", &host, None)
        .await;
    assert_eq!(status, 204);

    // A revoked, a replaced and a never-issued token look the same, with or
    // without `.ics`.
    let (_, _, _, never) = fetch(&app, &"A".repeat(43)).await;
    let (_, _, _, malformed) = fetch(&app, "not-a-token").await;
    let no_suffix = app
        .http
        .get(app.url(&format!("/v1/calendar/{first}")))
        .send()
        .await
        .unwrap();
    assert_eq!(no_suffix.status().as_u16(), 404);
    let no_suffix = no_suffix.text().await.unwrap();
    let old = old.to_string();
    let bodies: Vec<Value> = [&old, &revoked, &never, &malformed, &no_suffix]
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert!(bodies.iter().all(|b| *b == bodies[0]), "{bodies:?}");
    assert_eq!(
        sqlx::query_scalar::<_, i64>("select count(*) from calendar_feed")
            .fetch_one(&app.db)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn an_agency_feed_lists_the_agency_sessions() {
    let app = spawn_app().await;
    let s = a_schedule(&app).await;
    let other = a_schedule(&app).await;
    let path = format!("/v1/agencies/{}/calendar-feed", s.agency);
    let token = make_feed(&app, &path, &app.agency_token(s.agency)).await;

    let (status, content_type, _, body) = fetch(&app, &token).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/calendar; charset=utf-8"),
        "{body}"
    );
    let lines = lines(&body);
    assert_eq!(lines.iter().filter(|l| *l == "BEGIN:VEVENT").count(), 1, "{body}");
    assert!(
        has(&lines, &format!("UID:session-{}@hawker", s.session)),
        "{body}"
    );
    assert!(!body.contains(&other.session.to_string()), "{body}");
    let description = lines.iter().find(|l| l.starts_with("DESCRIPTION:")).unwrap();
    assert!(description.contains("\\nHosts: @"), "{description}");

    // Another agency may not; an admin may, and replaces the agency's URL.
    let (status, body) = app
        .send(Method::POST, &path, &app.agency_token(other.agency), None)
        .await;
    assert_eq!(status, 403, "{body}");
    let admin = app.token("calendar-admin", hawker_core::Role::Admin);
    let by_admin = make_feed(&app, &path, &admin).await;
    assert_eq!(fetch(&app, &token).await.0, 404);
    assert_eq!(fetch(&app, &by_admin).await.0, 200);
    // An admin gets 404 for an agency that does not exist.
    let (status, _) = app
        .send(
            Method::POST,
            &format!("/v1/agencies/{}/calendar-feed", Uuid::new_v4()),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .send(Method::DELETE, &path, &app.agency_token(s.agency), None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(fetch(&app, &by_admin).await.0, 404);
}

#[tokio::test]
async fn viewers_brands_and_agencies_cannot_make_a_host_feed() {
    let app = spawn_app().await;
    let s = a_schedule(&app).await;
    let (brand, _) = insert_brand_with_sku(&app.db, 100, 1).await;
    let callers = [
        app.token("calendar-viewer", hawker_core::Role::Viewer),
        app.brand_token(brand),
        app.agency_token(s.agency),
        app.token("calendar-admin", hawker_core::Role::Admin),
    ];
    for token in &callers {
        for method in [Method::POST, Method::DELETE] {
            let (status, body) = app.send(method, "/v1/me/calendar-feed", token, None).await;
            assert_eq!(status, 403, "{body}");
        }
    }
    let agency_path = format!("/v1/agencies/{}/calendar-feed", s.agency);
    for token in [&callers[0], &callers[1], &app.host_token(s.host_a)] {
        let (status, body) = app.send(Method::POST, &agency_path, token, None).await;
        assert_eq!(status, 403, "{body}");
    }
    assert_eq!(
        sqlx::query_scalar::<_, i64>("select count(*) from calendar_feed")
            .fetch_one(&app.db)
            .await
            .unwrap(),
        0
    );
    // Without a token: 401.
    let response = app
        .http
        .post(app.url("/v1/me/calendar-feed"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn the_feed_token_grants_nothing_else() {
    let app = spawn_app().await;
    let s = a_schedule(&app).await;
    let token = make_feed(&app, "/v1/me/calendar-feed", &app.host_token(s.host_a)).await;
    assert_eq!(fetch(&app, &token).await.0, 200);

    // Not as a bearer token on any route…
    for (method, path) in [
        (Method::GET, "/v1/me".to_string()),
        (Method::POST, "/v1/me/calendar-feed".to_string()),
        (Method::GET, format!("/v1/hosts/{}/shifts", s.host_a)),
        (Method::GET, format!("/v1/sessions/{}", s.session)),
    ] {
        let (status, body) = app.send(method, &path, &token, None).await;
        assert_eq!(status, 401, "{path}: {body}");
    }
    // …nor as the socket's `access_token`.
    let url = format!(
        "ws://{}/v1/sessions/{}/ws?access_token={token}",
        app.addr, s.session
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 401),
        Ok(_) => panic!("the socket opened with a feed token"),
        Err(e) => panic!("no answer: {e}"),
    }
    // The feed was not rotated by any of this.
    assert_eq!(fetch(&app, &token).await.0, 200);
}
