use std::time::Duration;

use serde_json::Value;

use crate::support::{poll, settings_with, spawn_app, spawn_app_with, Patience, RedisServer};

#[tokio::test]
async fn healthz_is_200_on_both_listeners() {
    let app = spawn_app().await;
    assert_eq!(
        app.http.get(app.url("/healthz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        app.http
            .get(app.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn readyz_follows_redis_down_and_back_up_without_a_restart() {
    let mut redis = RedisServer::start();
    let app = spawn_app_with(settings_with(&[("HAWKER__REDIS__URL", &redis.url())])).await;
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    redis.stop();
    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["redis"]["ok"], false);
    assert!(
        body["redis"].get("error").is_none(),
        "public readyz hides the raw error: {body}"
    );
    assert_eq!(body["postgres"]["ok"], true);
    // The admin listener says why.
    let admin: Value = app
        .http
        .get(app.admin_url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(admin["redis"]["ok"], false);
    assert!(
        admin["redis"]["error"].as_str().unwrap().starts_with("redis"),
        "{admin}"
    );

    redis.restart();
    let status = poll(
        Patience::Tries(50),
        Duration::from_millis(200),
        || async {
            let response = app.http.get(app.url("/readyz")).send().await.unwrap();
            response.status().as_u16()
        },
        |status| *status == 200,
    )
    .await;
    assert_eq!(status, 200, "readyz recovers once Redis is back");
}

#[tokio::test]
async fn readyz_names_postgres_when_it_is_unreachable() {
    let mut settings = settings_with(&[]);
    // Nothing listens on port 1; the pool is lazy, so the app starts anyway.
    settings.database.url = "postgres://postgres@127.0.0.1:1/hawker".into();
    settings.database.auto_migrate = false;
    let app = spawn_app_with(settings).await;
    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["postgres"]["ok"], false);
    assert_eq!(body["redis"]["ok"], true);
}

#[tokio::test]
async fn metrics_are_served_on_the_admin_listener_only() {
    let app = spawn_app().await;
    app.http.get(app.url("/healthz")).send().await.unwrap();
    let metrics = app.metrics().await;
    assert!(metrics.contains("hawker_http_requests_total"), "{metrics}");
    assert_eq!(
        app.http.get(app.url("/metrics")).send().await.unwrap().status(),
        404
    );
}
