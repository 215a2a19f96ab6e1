//! Finding sessions against real Postgres and Redis: every filter of
//! `GET /v1/sessions`, cursor paging that returns each session once, the
//! upcoming schedules of a brand and an agency, and a live session's pinned
//! item and viewer count from the hub.

use std::time::Duration;

use hawker_core::Role;
use reqwest::Method;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::fixtures::{add_to_lineup, insert_agency, insert_brand_with_sku};
use crate::support::socket::join;
use crate::support::{poll, settings_with, spawn_app, spawn_app_with, Patience, TestApp};

/// A session of `agency` planned `start_h` hours from now for an hour, in `status`.
async fn session(db: &PgPool, agency: Uuid, start_h: i32, status: &str, brand: Option<Uuid>) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into live_session (session_id, agency_id, brand_id, title, planned_start, planned_end, status,
                                   started_at, ended_at)
         values ($1, $2, $3, 'Show', date_trunc('second', now()) + $4 * interval '1 hour',
                 date_trunc('second', now()) + ($4 + 1) * interval '1 hour', $5,
                 case when $5 in ('live', 'ended') then now() end, case when $5 = 'ended' then now() end)",
    )
    .bind(id)
    .bind(agency)
    .bind(brand)
    .bind(start_h)
    .bind(status)
    .execute(db)
    .await
    .unwrap();
    id
}

async fn host(db: &PgPool, handle: &str) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query("insert into host (host_id, handle, display_name) values ($1, $2, 'Mia Chen')")
        .bind(id)
        .bind(handle)
        .execute(db)
        .await
        .unwrap();
    id
}

/// Books `host` for the whole of `session`.
async fn shift(db: &PgPool, session: Uuid, host: Uuid) {
    sqlx::query(
        "insert into shift (shift_id, session_id, host_id, planned_start, planned_end, created_by)
         select $1, session_id, $3, planned_start, planned_end, 'test' from live_session where session_id = $2",
    )
    .bind(Uuid::new_v4())
    .bind(session)
    .bind(host)
    .execute(db)
    .await
    .unwrap();
}

/// Every session id of a list, walking the cursor `limit` at a time.
async fn walk(app: &TestApp, path: &str, limit: u32) -> Vec<Uuid> {
    let token = app.token("someone", Role::Viewer);
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut url = format!("{path}{sep}limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = app.send(Method::GET, &url, &token, None).await;
        assert_eq!(status, 200, "{url}: {page}");
        ids.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["session_id"].as_str().unwrap().parse::<Uuid>().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return ids,
        }
    }
    panic!("the cursor never ended")
}

fn rfc3339(hours_from_now: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::minutes(hours_from_now * 60 + 30))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        .replace('+', "%2B")
}

#[tokio::test]
async fn sessions_are_found_by_status_agency_brand_host_and_time_and_paged_once_each() {
    let app = spawn_app().await;
    let db = &app.db;
    let (a, b) = (insert_agency(db).await, insert_agency(db).await);
    let (brand_x, _) = insert_brand_with_sku(db, 1000, 10).await;
    let (brand_y, sku_y) = insert_brand_with_sku(db, 1000, 10).await;
    let ended = session(db, a, -30, "ended", None).await;
    let live = session(db, a, 0, "live", None).await;
    let soon = session(db, a, 2, "scheduled", None).await;
    let cancelled = session(db, a, 3, "cancelled", None).await;
    let branded = session(db, b, 4, "scheduled", Some(brand_x)).await;
    let lineup_of_y = session(db, b, 6, "scheduled", None).await;
    add_to_lineup(&app, b, lineup_of_y, sku_y).await;
    let mia = host(db, "mia_live").await;
    shift(db, soon, mia).await;
    shift(db, branded, mia).await;
    let all = vec![ended, live, soon, cancelled, branded, lineup_of_y];

    assert_eq!(walk(&app, "/v1/sessions", 100).await, all, "planned-start order");
    for limit in [1, 2, 4] {
        assert_eq!(walk(&app, "/v1/sessions", limit).await, all, "limit {limit}");
    }
    assert_eq!(walk(&app, "/v1/sessions?status=live", 2).await, vec![live]);
    assert_eq!(
        walk(&app, "/v1/sessions?status=scheduled", 2).await,
        vec![soon, branded, lineup_of_y]
    );
    assert_eq!(walk(&app, "/v1/sessions?status=ended", 2).await, vec![ended]);
    assert_eq!(
        walk(&app, &format!("/v1/sessions?agency_id={a}"), 3).await,
        vec![ended, live, soon, cancelled]
    );
    assert_eq!(
        walk(&app, &format!("/v1/sessions?brand_id={brand_x}"), 2).await,
        vec![branded]
    );
    assert_eq!(
        walk(&app, &format!("/v1/sessions?brand_id={brand_y}"), 2).await,
        vec![lineup_of_y]
    );
    assert_eq!(
        walk(&app, &format!("/v1/sessions?host_id={mia}"), 1).await,
        vec![soon, branded]
    );
    assert_eq!(
        walk(
            &app,
            &format!("/v1/sessions?host_id={mia}&status=scheduled&agency_id={b}"),
            1
        )
        .await,
        vec![branded]
    );
    // Planned windows overlapping [now + 2h30, now + 5h30): 2–3h, 3–4h, 4–5h.
    let window = format!("/v1/sessions?from={}&to={}", rfc3339(2), rfc3339(5));
    assert_eq!(walk(&app, &window, 2).await, vec![soon, cancelled, branded]);

    // What each listed session carries.
    let token = app.token("someone", Role::Viewer);
    let (_, page) = app
        .send(Method::GET, &format!("/v1/sessions?host_id={mia}"), &token, None)
        .await;
    let first = &page["items"][0];
    assert_eq!(first["agency"]["id"], a.to_string());
    assert_eq!(first["agency"]["name"], "Test Agency");
    assert_eq!(first["hosts"][0]["handle"], "mia_live");
    assert_eq!(first["hosts"][0]["on_air"], false);
    assert_eq!(first["viewers"], 0);
    assert_eq!(first["pinned"], Value::Null);
    assert_eq!(page["items"][1]["brands"][0]["id"], brand_x.to_string());
    let (_, page) = app
        .send(
            Method::GET,
            &format!("/v1/sessions?brand_id={brand_y}"),
            &token,
            None,
        )
        .await;
    assert_eq!(page["items"][0]["brands"][0]["name"], "Brand");

    // Upcoming schedules: scheduled or live, not planned to be over.
    assert_eq!(
        walk(&app, &format!("/v1/agencies/{a}/schedule"), 1).await,
        vec![live, soon]
    );
    assert_eq!(
        walk(&app, &format!("/v1/brands/{brand_y}/schedule"), 1).await,
        vec![lineup_of_y]
    );
    let (status, _) = app
        .send(
            Method::GET,
            &format!("/v1/brands/{}/schedule", Uuid::new_v4()),
            &token,
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .send(
            Method::GET,
            &format!("/v1/agencies/{}/schedule", Uuid::new_v4()),
            &token,
            None,
        )
        .await;
    assert_eq!(status, 404);

    for (query, code) in [
        ("status=paused", "bad_status"),
        ("agency_id=x", "bad_agency_id"),
        ("brand_id=x", "bad_brand_id"),
        ("host_id=x", "bad_host_id"),
        ("from=yesterday", "bad_time"),
        ("limit=0", "bad_limit"),
        ("cursor=abc", "bad_cursor"),
    ] {
        let (status, body) = app
            .send(Method::GET, &format!("/v1/sessions?{query}"), &token, None)
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
    }
    let (status, _) = app.send(Method::GET, "/v1/sessions", "not-a-token", None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_live_session_lists_its_pinned_item_and_the_viewers_in_its_room() {
    let app = spawn_app_with(settings_with(&[("HAWKER__HUB__VIEWERS_INTERVAL_MS", "200")])).await;
    let agency = insert_agency(&app.db).await;
    let live = session(&app.db, agency, 0, "live", None).await;
    let (_, sku) = insert_brand_with_sku(&app.db, 1999, 10).await;
    add_to_lineup(&app, agency, live, sku).await;
    let _v1 = join(app.addr, live, &app.token("v1", Role::Viewer)).await;
    let _v2 = join(app.addr, live, &app.token("v2", Role::Viewer)).await;
    let (status, body) = app
        .send(
            Method::POST,
            &format!("/v1/sessions/{live}/lineup/1/pin"),
            &app.agency_token(agency),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = app.token("finder", Role::Viewer);
    let listed = poll(
        Patience::For(Duration::from_secs(10)),
        Duration::from_millis(100),
        || async {
            let (_, page) = app
                .send(Method::GET, "/v1/sessions?status=live", &token, None)
                .await;
            page["items"][0].clone()
        },
        |s| s["viewers"] == 2,
    )
    .await;
    assert_eq!(listed["viewers"], 2, "{listed}");
    assert_eq!(listed["pinned"]["link_number"], 1);
    assert_eq!(listed["pinned"]["sku_id"], sku.to_string());
}
