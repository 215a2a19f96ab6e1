use std::time::Duration;

use hawker_core::Role;
use sqlx::Connection;

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

use crate::support::fixtures::insert_agency_and_session;
use crate::support::{settings_with, spawn_app};

/// A request that is blocked inside a handler when shutdown begins still gets
/// its answer; the app then stops by itself.
#[tokio::test]
async fn an_in_flight_request_completes_during_graceful_shutdown() {
    let mut app = spawn_app().await;
    let (_, session_id) = insert_agency_and_session(&app.db).await;

    // Hold a lock that the session lookup must wait for.
    let url = app.db.connect_options().as_ref().clone();
    let mut locker = sqlx::PgConnection::connect_with(&url).await.unwrap();
    let mut tx = locker.begin().await.unwrap();
    sqlx::query("lock table live_session in access exclusive mode")
        .execute(&mut *tx)
        .await
        .unwrap();

    let token = app.token("viewer", Role::Viewer);
    let request = app
        .http
        .get(app.url(&format!("/v1/sessions/{session_id}")))
        .bearer_auth(&token)
        .send();
    let in_flight = tokio::spawn(request);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !in_flight.is_finished(),
        "the request must be blocked on the lock"
    );

    app.shutdown.cancel();

    tokio::time::sleep(Duration::from_millis(200)).await;
    tx.commit().await.unwrap();
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), 200);
    let stopped = tokio::time::timeout(Duration::from_secs(10), app.stop()).await;
    assert!(
        matches!(stopped, Ok(Ok(()))),
        "the app stops by itself once drained"
    );
}

#[tokio::test]
async fn readyz_is_503_once_shutdown_starts() {
    let app = hawker_server::app::Application::build(settings_with(&[]))
        .await
        .unwrap();
    let state = app.state().clone();
    let ready = hawker_server::http::public_app(state.clone())
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    state.shutdown.cancel();
    let draining = hawker_server::http::public_app(state)
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(draining.status(), 503);
    let body = axum::body::to_bytes(draining.into_body(), 1 << 16).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["status"], "shutting_down");
}
