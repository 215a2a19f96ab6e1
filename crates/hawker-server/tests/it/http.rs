use std::collections::BTreeSet;
use std::time::Duration;

use hawker_core::Role;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::support::{settings_with, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_request_id_sent_by_the_client_is_echoed() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "client-chosen-id-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-chosen-id-1");
}

#[tokio::test]
async fn a_request_without_an_id_gets_a_fresh_one() {
    let app = spawn_app().await;
    let a = app.http.get(app.url("/healthz")).send().await.unwrap();
    let b = app.get("/v1/me", None).await;
    let a = a.headers()["x-request-id"].to_str().unwrap().to_string();
    let b = b.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&a).is_ok(), "{a}");
    assert_ne!(a, b);
}

#[tokio::test]
async fn unknown_routes_and_bad_ids_answer_with_json_errors() {
    let app = spawn_app().await;
    let token = app.token("v", Role::Viewer);
    let response = app.get("/v1/nothing-here", Some(&token)).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_found");

    let response = app.get("/v1/sessions/not-a-uuid", Some(&token)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "bad_path");

    let response = app
        .get(&format!("/v1/sessions/{}", uuid::Uuid::new_v4()), Some(&token))
        .await;
    assert_eq!(response.status(), 404);

    let response = app
        .http
        .delete(app.url("/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
}

#[tokio::test]
async fn the_openapi_document_is_openapi_3_and_lists_every_route() {
    let app = spawn_app().await;
    let text = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let doc = oas3::from_json(&text).expect("parses as an OpenAPI 3.1 document");
    assert!(doc.openapi.starts_with("3."), "{}", doc.openapi);
    let paths = doc.paths.clone().unwrap_or_default();
    let listed: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "/healthz",
        "/readyz",
        "/v1/me",
        "/v1/sessions/{session_id}",
        "/v1/agencies/{agency_id}",
    ]
    .into();
    assert!(
        expected.is_subset(&listed),
        "missing: {:?}",
        expected.difference(&listed).collect::<Vec<_>>()
    );
    // Every `/v1` operation needs a token and documents the 401.
    for (path, item) in &paths {
        for (method, op) in item.methods() {
            if path.starts_with("/v1") {
                let responses = op.responses.clone().unwrap_or_default();
                assert!(responses.contains_key("401"), "{method} {path} lacks 401");
            }
        }
    }
}

#[tokio::test]
async fn the_api_page_loads_nothing_from_outside() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("/openapi.json"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external resources"
    );
}

#[tokio::test]
async fn the_connection_limit_holds_new_connections_until_one_closes() {
    let app = spawn_app_with(settings_with(&[("HAWKER__SERVER__MAX_CONNECTIONS", "1")])).await;
    let held = TcpStream::connect(app.addr).await.unwrap();
    // Give the server a moment to accept the held connection and take the only permit.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    assert!(
        client.get(app.url("/healthz")).send().await.is_err(),
        "second connection must wait"
    );
    drop(held);
    let fresh = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert_eq!(fresh.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn migrations_apply_once_and_a_second_run_is_a_no_op() {
    let app = spawn_app().await;
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "sql"))
        .count();
    let applied: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(applied as usize, files);
    hawker_server::db::migrate(&app.db).await.unwrap();
    let again: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(again, applied);
}

#[tokio::test]
async fn seeding_twice_changes_nothing() {
    let app = spawn_app().await;
    let first = hawker_server::seed::seed(&app.db).await.unwrap();
    let count = |table: &'static str| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!("select count(*) from {table}"))
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    let before = (
        count("host").await,
        count("sku").await,
        count("live_session").await,
    );
    let second = hawker_server::seed::seed(&app.db).await.unwrap();
    let after = (
        count("host").await,
        count("sku").await,
        count("live_session").await,
    );
    assert_eq!(before, (2, 3, 1));
    assert_eq!(before, after);
    assert_eq!(first.session_id, second.session_id);
    let token = app.agency_token(first.agency_id);
    let body: Value = app
        .get(&format!("/v1/agencies/{}", first.agency_id), Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["hosts"].as_array().unwrap().len(), 2);
}
