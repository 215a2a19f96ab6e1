//! The web console's pages and its development-only routes (docs/console.md).
//! The pages themselves are tested in a browser by `make test-e2e`.

use std::collections::HashMap;

use hawker_core::Role;
use hawker_server::config::{Environment, Settings};
use serde_json::{json, Value};

use crate::support::{config_dir, spawn_app, spawn_app_with, test_database_url};

#[tokio::test]
async fn the_pages_are_served_from_the_binary() {
    let app = spawn_app().await;
    for page in [
        "/console/",
        "/console/viewer.html",
        "/console/host.html",
        "/console/planner.html",
    ] {
        let response = app.get(page, None).await;
        assert_eq!(response.status(), 200, "{page}");
        assert_eq!(response.headers()["content-type"], "text/html; charset=utf-8");
        assert!(response.headers().contains_key("content-security-policy"));
    }
    assert_eq!(app.get("/console/nope.html", None).await.status(), 404);
}

#[tokio::test]
async fn development_and_test_servers_mint_demo_tokens() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/v1/dev/token"))
        .json(&json!({"user": "viewer-7", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let claims = app.keys.verify(body["token"].as_str().unwrap()).unwrap();
    assert_eq!((claims.sub.as_str(), claims.role), ("viewer-7", Role::Viewer));

    let refused = app
        .http
        .post(app.url("/v1/dev/token"))
        .json(&json!({"user": "", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    let token = app.token("viewer-7", Role::Viewer);
    let demo: Value = app.get("/v1/dev/demo", None).await.json().await.unwrap();
    assert_eq!(demo["session_id"], "00000000-0000-4000-8000-00000000d001");
    assert_eq!(demo["seeded"], false, "a fresh database has no demo data");
    let picker = app
        .get(
            "/v1/sessions/00000000-0000-4000-8000-00000000d001/sellable-skus",
            Some(&token),
        )
        .await;
    assert_eq!(picker.status(), 404, "no such session yet");
}

#[tokio::test]
async fn a_production_server_has_no_dev_routes() {
    let vars: HashMap<String, String> = [
        ("HAWKER__DATABASE__URL", test_database_url()),
        ("HAWKER__DATABASE__AUTO_MIGRATE", "true".into()),
        ("HAWKER__SERVER__LISTEN", "127.0.0.1:0".into()),
        ("HAWKER__SERVER__ADMIN_LISTEN", "127.0.0.1:0".into()),
        (
            "HAWKER__AUTH__JWT_SECRET",
            "a-production-secret-for-this-test-only".into(),
        ),
        (
            "HAWKER__PAYMENTS__WEBHOOK_SECRET",
            "another-production-secret".into(),
        ),
        ("HAWKER__AUTH__ISSUER", "https://id.example".into()),
        ("HAWKER__AUTH__AUDIENCE", "hawker".into()),
        ("HAWKER__LOG__FILTER", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let settings = Settings::load_with(&config_dir(), Environment::Production, vars).unwrap();
    let app = spawn_app_with(settings).await;
    let response = app
        .http
        .post(app.url("/v1/dev/token"))
        .json(&json!({"user": "admin-1", "role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(app.get("/v1/dev/demo", None).await.status(), 404);
    let notices = app
        .http
        .post(app.url("/v1/dev/notices"))
        .json(&json!({"notices": [{"user_id": "u1", "kind": "order.paid", "data": {}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        notices.status(),
        404,
        "no notices for anyone from a production server"
    );
    // The pages stay: they ask for a token instead.
    assert_eq!(app.get("/console/viewer.html", None).await.status(), 200);
}
