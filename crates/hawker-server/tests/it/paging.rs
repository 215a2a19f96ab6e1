//! Every list route is paged: `limit` 1 to 100 (else `bad_limit`), `cursor`
//! the `next_cursor` of the previous page (else `bad_cursor`), and walking
//! the cursor returns every item exactly once, in the list's order. These
//! cover the commerce lists and the terms lists; the agency lists have theirs
//! in `agency.rs` and `roster.rs`.

use hawker_core::Role;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::fixtures::{
    add_to_lineup, create_deal, insert_agency_and_session, insert_brand_with_sku,
};
use crate::support::{settings_with, spawn_app_with, TestApp};

/// Walks `path` with `limit`, returning every page's items and the number of pages.
async fn walk(app: &TestApp, path: &str, token: &str, limit: u32) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for pages in 1..=100 {
        let mut url = format!("{path}?limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = app.send(Method::GET, &url, token, None).await;
        assert_eq!(status, 200, "{url}: {page}");
        let got = page["items"].as_array().expect("items").clone();
        assert!(got.len() <= limit as usize, "{url}: {page}");
        items.extend(got);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return (items, pages),
        }
    }
    panic!("{path}: more than 100 pages");
}

/// A list's limits and cursors are checked: 0, 101 and garbage are refused.
async fn bounds_are_enforced(app: &TestApp, path: &str, token: &str) {
    for bad in ["0", "101", "-3", "ten"] {
        let (status, body) = app
            .send(Method::GET, &format!("{path}?limit={bad}"), token, None)
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("bad_limit")),
            "{path} limit={bad}: {body}"
        );
    }
    for bad in ["zz", "abc", "00ff00ff"] {
        let (status, body) = app
            .send(Method::GET, &format!("{path}?cursor={bad}"), token, None)
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("bad_cursor")),
            "{path} cursor={bad}: {body}"
        );
    }
    let (status, page) = app
        .send(Method::GET, &format!("{path}?limit=100"), token, None)
        .await;
    assert_eq!(status, 200, "{page}");
}

fn field(items: &[Value], name: &str) -> Vec<Value> {
    items.iter().map(|i| i[name].clone()).collect()
}

#[tokio::test]
async fn the_lineup_and_the_deals_of_a_session_are_paged_and_walked_exactly_once() {
    let app = spawn_app_with(settings_with(&[])).await;
    let (agency, session) = insert_agency_and_session(&app.db).await;
    for _ in 0..5 {
        let (_, sku) = insert_brand_with_sku(&app.db, 1999, 100).await;
        add_to_lineup(&app, agency, session, sku).await;
    }
    let mut deals = Vec::new();
    for link in 1..=5 {
        deals.push(
            create_deal(
                &app,
                agency,
                session,
                json!({"link_number": link, "price_minor": 900 + link, "quantity": 5,
                    "per_buyer_cap": 1, "countdown_secs": 0, "duration_secs": 600}),
            )
            .await,
        );
    }
    let viewer = app.token("pager", Role::Viewer);

    let lineup = format!("/v1/sessions/{session}/lineup");
    let (items, pages) = walk(&app, &lineup, &viewer, 2).await;
    assert_eq!(pages, 3);
    assert_eq!(
        field(&items, "link_number"),
        (1..=5).map(Value::from).collect::<Vec<_>>()
    );
    let (items, pages) = walk(&app, &lineup, &viewer, 5).await;
    assert_eq!(
        (items.len(), pages),
        (5, 1),
        "a full last page has no next cursor"
    );
    bounds_are_enforced(&app, &lineup, &viewer).await;

    let path = format!("/v1/sessions/{session}/deals");
    let (items, pages) = walk(&app, &path, &viewer, 2).await;
    assert_eq!(pages, 3);
    let mut ids: Vec<String> = items
        .iter()
        .map(|d| d["deal_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    deals.sort();
    assert_eq!(ids, deals, "every deal exactly once");
    let starts: Vec<&str> = items.iter().map(|d| d["starts_at"].as_str().unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
    bounds_are_enforced(&app, &path, &viewer).await;
}

#[tokio::test]
async fn a_viewers_coupon_claims_are_paged_and_show_only_their_own() {
    let app = spawn_app_with(settings_with(&[])).await;
    let (_agency, session) = insert_agency_and_session(&app.db).await;
    // Seven claims of one viewer (one per drop), and one of another viewer.
    let mut mine = Vec::new();
    let base = chrono::Utc::now() - chrono::Duration::hours(1);
    for i in 0..7i64 {
        let drop_id = Uuid::new_v4();
        sqlx::query(
            "insert into coupon_drop (coupon_drop_id, session_id, total, claimed, discount_kind,
                 discount_value, drop_at, claim_window_secs, status, dropped_at, created_by)
             values ($1, $2, 10, 1, 'percent', 10, now(), 600, 'dropped', now(), 'test')",
        )
        .bind(drop_id)
        .bind(session)
        .execute(&app.db)
        .await
        .unwrap();
        let claim_id = Uuid::now_v7();
        sqlx::query(
            "insert into coupon_claim (coupon_claim_id, coupon_drop_id, viewer_id, seq, claimed_at)
             values ($1, $2, 'claimer', 1, $3)",
        )
        .bind(claim_id)
        .bind(drop_id)
        // Two claims at the same instant: the id breaks the tie.
        .bind(base + chrono::Duration::seconds(i.min(5)))
        .execute(&app.db)
        .await
        .unwrap();
        mine.push(claim_id.to_string());
        if i == 0 {
            sqlx::query(
                "insert into coupon_claim (coupon_claim_id, coupon_drop_id, viewer_id, seq)
                 values ($1, $2, 'someone-else', 1)",
            )
            .bind(Uuid::now_v7())
            .bind(drop_id)
            .execute(&app.db)
            .await
            .unwrap();
        }
    }
    let token = app.token("claimer", Role::Viewer);
    let path = format!("/v1/sessions/{session}/coupon-claims");
    let (items, pages) = walk(&app, &path, &token, 3).await;
    assert_eq!(pages, 3);
    let got: Vec<String> = items
        .iter()
        .map(|c| c["coupon_claim_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, mine, "oldest first, ties by id, each exactly once");
    assert!(items.iter().all(|c| c["viewer_id"] == "claimer"));
    bounds_are_enforced(&app, &path, &token).await;
}

#[tokio::test]
async fn terms_versions_are_paged_in_version_order() {
    let app = spawn_app_with(settings_with(&[])).await;
    let (agency, session) = insert_agency_and_session(&app.db).await;
    let token = app.agency_token(agency);
    let path = format!("/v1/sessions/{session}/terms");
    for percent in 1..=5 {
        let (status, body) = app
            .send(
                Method::POST,
                &path,
                &token,
                Some(json!({"percent_bps": percent * 100, "host_share_bps": 5000, "currency": "USD"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (items, pages) = walk(&app, &path, &token, 2).await;
    assert_eq!(pages, 3);
    assert_eq!(
        field(&items, "version"),
        (1..=5).map(Value::from).collect::<Vec<_>>()
    );
    bounds_are_enforced(&app, &path, &token).await;
    // Rights are checked before the page: a stranger is refused, cursor or not.
    let stranger = app.agency_token(Uuid::new_v4());
    let (status, _) = app
        .send(Method::GET, &format!("{path}?limit=1000"), &stranger, None)
        .await;
    assert_eq!(status, 403);
}
