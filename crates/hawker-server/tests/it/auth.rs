use hawker_core::{Claims, Role, TokenKeys};
use serde_json::Value;

use crate::support::fixtures::insert_agency_and_session;
use crate::support::{settings_with, spawn_app, spawn_app_with};

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert!(body["message"].is_string(), "every error has a message: {body}");
    (status, body["error"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn a_missing_token_is_401_token_missing() {
    let app = spawn_app().await;
    let response = app.get("/v1/me", None).await;
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_code(response).await, (401, "token_missing".into()));
}

#[tokio::test]
async fn refused_tokens_each_get_their_own_code() {
    let app = spawn_app().await;
    let foreign = TokenKeys::hs256(b"some-other-secret-that-is-long-enough!!")
        .sign(&Claims::new("v1", Role::Viewer, chrono::Duration::hours(1)))
        .unwrap();
    let expired = app
        .keys
        .sign(&Claims::new("v1", Role::Viewer, chrono::Duration::seconds(-10)))
        .unwrap();
    let cases = [
        (foreign.as_str(), "token_bad_signature"),
        (expired.as_str(), "token_expired"),
        ("definitely-not-a-jwt", "token_malformed"),
    ];
    for (token, code) in cases {
        let response = app.get("/v1/me", Some(token)).await;
        assert_eq!(
            error_code(response).await,
            (401, code.to_string()),
            "token for {code}"
        );
    }
}

#[tokio::test]
async fn a_non_bearer_authorization_header_is_malformed() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(app.url("/v1/me"))
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (401, "token_malformed".into()));
}

#[tokio::test]
async fn a_valid_token_identifies_the_caller() {
    let app = spawn_app().await;
    let token = app.token("viewer-42", Role::Viewer);
    let body: Value = app.get("/v1/me", Some(&token)).await.json().await.unwrap();
    assert_eq!(body["sub"], "viewer-42");
    assert_eq!(body["role"], "viewer");
}

#[tokio::test]
async fn http_routes_refuse_a_token_in_the_query_or_the_websocket_subprotocol() {
    // Only the socket route reads those (tests/it/ws.rs and hub.rs connect with
    // `?access_token=`); a token in a URL ends up in logs.
    let app = spawn_app().await;
    let token = app.token("viewer-7", Role::Viewer);
    let by_query = app
        .http
        .get(app.url(&format!("/v1/me?access_token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), 401);
    let body: Value = by_query.json().await.unwrap();
    assert_eq!(body["error"], "token_missing");
    let by_protocol = app
        .http
        .get(app.url("/v1/me"))
        .header("sec-websocket-protocol", format!("hawker.v1, bearer.{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_protocol.status(), 401);
    let by_header = app.get("/v1/me", Some(&token)).await;
    assert_eq!(by_header.status(), 200);
}

#[tokio::test]
async fn roles_without_the_right_get_403_and_the_owner_gets_200() {
    let app = spawn_app().await;
    let (agency_id, _) = insert_agency_and_session(&app.db).await;
    let (other_agency, _) = insert_agency_and_session(&app.db).await;
    let path = format!("/v1/agencies/{agency_id}");
    for role in [Role::Viewer, Role::Host, Role::Brand] {
        let response = app.get(&path, Some(&app.token("someone", role))).await;
        assert_eq!(error_code(response).await, (403, "forbidden".into()), "{role}");
    }
    let response = app.get(&path, Some(&app.agency_token(other_agency))).await;
    assert_eq!(
        error_code(response).await,
        (403, "forbidden".into()),
        "another agency"
    );
    let response = app.get(&path, Some(&app.agency_token(agency_id))).await;
    assert_eq!(response.status(), 200);
    let response = app.get(&path, Some(&app.token("root", Role::Admin))).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn eddsa_tokens_are_verified_with_the_public_key() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let public = format!("{dir}/ed25519-test-public.pem");
    let private = format!("{dir}/ed25519-test-private.pem");
    let app = spawn_app_with(settings_with(&[
        ("HAWKER__AUTH__ALGORITHM", "EdDSA"),
        ("HAWKER__AUTH__ED25519_PUBLIC_KEY_FILE", &public),
        ("HAWKER__AUTH__ED25519_PRIVATE_KEY_FILE", &private),
    ]))
    .await;
    let token = app.token("viewer-ed", Role::Viewer);
    assert_eq!(app.get("/v1/me", Some(&token)).await.status(), 200);
    let hs = TokenKeys::hs256(b"hawker-development-jwt-secret-not-for-production")
        .sign(&Claims::new("v", Role::Viewer, chrono::Duration::hours(1)))
        .unwrap();
    let response = app.get("/v1/me", Some(&hs)).await;
    assert_eq!(error_code(response).await, (401, "token_bad_signature".into()));
}
