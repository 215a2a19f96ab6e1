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
    // Every `/v1` operation needs a token and documents the 401, but the
    // calendar feed, whose secret URL is its credential (calendar apps send
    // no headers), and an auction's bid log, public so anyone can replay it.
    let public = ["/v1/calendar/{token}", "/v1/auctions/{auction_id}/bids"];
    for (path, item) in &paths {
        for (method, op) in item.methods() {
            if path.starts_with("/v1")
                && !(public.contains(&path.as_str()) && method.as_str().eq_ignore_ascii_case("get"))
            {
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

/// The operation `method path` of the served document.
fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not in the document");
    op
}

#[tokio::test]
async fn the_openapi_document_states_what_the_server_answers() {
    let doc = serde_json::to_value(hawker_server::http::openapi_document()).unwrap();
    let mut with_path_params = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let parameters = op["parameters"].as_array().cloned().unwrap_or_default();
            let has = |place: &str| parameters.iter().any(|p| p["in"] == place);
            let bad_request = op["responses"]["400"]["description"].as_str().unwrap_or("");
            // Every route with a path parameter can answer 400 bad_path (an
            // id that is not a UUID); with a query, bad_query; with a body, bad_json.
            if has("path") {
                with_path_params += 1;
                assert!(
                    bad_request.contains("bad_path"),
                    "{method} {path}: 400 lacks bad_path"
                );
            }
            if has("query") {
                assert!(
                    bad_request.contains("bad_query"),
                    "{method} {path}: 400 lacks bad_query"
                );
            }
            if op.get("requestBody").is_some() {
                assert!(
                    bad_request.contains("bad_json"),
                    "{method} {path}: 400 lacks bad_json"
                );
            }
            // Every 429 and 503 says how long to wait.
            for status in ["429", "503"] {
                if let Some(response) = op["responses"].get(status) {
                    assert!(
                        response["headers"].get("Retry-After").is_some(),
                        "{method} {path}: {status} lacks Retry-After"
                    );
                }
            }
        }
    }
    assert!(with_path_params > 30, "{with_path_params}");

    // The pin route answers 409 session_ended.
    let pin = operation(&doc, "post", "/v1/sessions/{session_id}/lineup/{link_number}/pin");
    assert!(pin["responses"]["409"]["description"]
        .as_str()
        .unwrap()
        .contains("session_ended"));
    // Going live takes an optional body.
    let live = operation(&doc, "post", "/v1/sessions/{session_id}/live");
    assert_ne!(live["requestBody"]["required"], true, "{}", live["requestBody"]);

    // The bounds docs/api.md and docs/agency.md state are in the schemas.
    let schemas = &doc["components"]["schemas"];
    let field = |schema: &str, name: &str| schemas[schema]["properties"][name].clone();
    for (schema, name, minimum, maximum) in [
        ("NewLineupItem", "link_number", 1, 9999),
        ("NewDeal", "quantity", 1, 1_000_000),
        ("NewDeal", "countdown_secs", 0, 300),
        ("NewDeal", "duration_secs", 60, 1200),
        ("PlaceOrder", "quantity", 1, 100),
        ("NewCouponDrop", "total", 1, 1_000_000),
        ("NewCouponDrop", "per_viewer_limit", 1, 100),
        ("NewCouponDrop", "claim_window_secs", 1, 86_400),
        ("NewTerms", "percent_bps", 0, 10_000),
        ("NewTerms", "host_share_bps", 0, 10_000),
    ] {
        let f = field(schema, name);
        assert_eq!(f["minimum"], minimum, "{schema}.{name}: {f}");
        assert_eq!(f["maximum"], maximum, "{schema}.{name}: {f}");
    }
    assert_eq!(field("NewDeal", "price_minor")["minimum"], 1);
    assert_eq!(field("NewRefund", "amount_minor")["minimum"], 1);
    for (schema, name) in [
        ("NewCouponDrop", "currency"),
        ("NewTerms", "currency"),
        ("PaymentEvent", "currency"),
    ] {
        assert_eq!(field(schema, name)["pattern"], "^[A-Z]{3}$", "{schema}.{name}");
    }
    for (schema, name, min, max) in [
        ("NewHost", "handle", 2, 32),
        ("NewHost", "display_name", 1, 100),
        ("NewCampaign", "name", 1, 200),
        ("NewSession", "title", 1, 200),
        ("PaymentEvent", "event_id", 1, 200),
    ] {
        let f = field(schema, name);
        assert_eq!(f["minLength"], min, "{schema}.{name}: {f}");
        assert_eq!(f["maxLength"], max, "{schema}.{name}: {f}");
    }
    assert_eq!(field("NewRefund", "reason")["maxLength"], 500);
    let buy = operation(&doc, "post", "/v1/deals/{deal_id}/orders");
    let key = buy["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .expect("the Idempotency-Key header");
    assert_eq!(key["required"], true);
    assert_eq!(key["schema"]["minLength"], 1);
    assert_eq!(key["schema"]["maxLength"], 200);
    let sessions = operation(&doc, "get", "/v1/agencies/{agency_id}/sessions");
    let offset = sessions["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "utc_offset")
        .expect("utc_offset");
    assert_eq!(offset["schema"]["pattern"], hawker_agency::time::OFFSET_PATTERN);
}

#[tokio::test]
async fn an_integral_float_is_an_integer_in_a_request_body() {
    use crate::support::fixtures::{create_deal, session_with_lineup};
    let app = spawn_app().await;
    let (agency, session) = session_with_lineup(&app).await;
    // JSON Schema counts 100.0 and 1.2e3 as integers; so does the server.
    let deal = create_deal(
        &app,
        agency,
        session,
        serde_json::json!({"link_number": 1.0, "price_minor": 1.499e3, "quantity": 100.0,
            "per_buyer_cap": 2.0, "duration_secs": 120.0}),
    )
    .await;
    let (status, body) = app
        .send(
            reqwest::Method::GET,
            &format!("/v1/deals/{deal}"),
            &app.agency_token(agency),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["quantity"], 100);
    assert_eq!(body["price_minor"], 1499);

    // A negative one reaches the field's own check, not bad_json.
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            &format!("/v1/sessions/{session}/deals"),
            &app.agency_token(agency),
            Some(
                serde_json::json!({"link_number": 1, "price_minor": -705.0, "quantity": 10,
                "per_buyer_cap": 1, "duration_secs": 120}),
            ),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_price")),
        "{body}"
    );

    // A fraction is still not an integer.
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            &format!("/v1/sessions/{session}/deals"),
            &app.agency_token(agency),
            Some(
                serde_json::json!({"link_number": 1, "price_minor": 1499, "quantity": 10.5,
                "per_buyer_cap": 1, "duration_secs": 120}),
            ),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_json")),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("quantity"), "{body}");
}

#[tokio::test]
async fn a_429_says_when_to_retry() {
    use crate::support::fixtures::insert_agency_and_session;
    use crate::support::socket::try_connect;
    let app = spawn_app_with(settings_with(&[("HAWKER__HUB__MAX_SOCKETS_PER_USER", "1")])).await;
    let (_, session) = insert_agency_and_session(&app.db).await;
    let token = app.token("viewer-429", Role::Viewer);
    let _first = try_connect(app.addr, session, &token, None, None)
        .await
        .expect("the first socket");
    let refused = try_connect(app.addr, session, &token, None, None).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = refused else {
        panic!("the second socket should be refused with an HTTP answer");
    };
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{retry_after}");
}

#[tokio::test]
async fn going_live_takes_no_body_or_null() {
    let app = spawn_app().await;
    let token = app.token("admin-live", Role::Admin);
    for body in ["", "null"] {
        let response = app
            .http
            .post(app.url(&format!("/v1/sessions/{}/live", uuid::Uuid::new_v4())))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        // Past the body: the session does not exist.
        assert_eq!(response.status(), 404, "body {body:?}");
    }
}

#[tokio::test]
async fn a_nul_in_stored_text_is_refused_not_an_internal_error() {
    // Found by schemathesis: Postgres cannot store U+0000 in text, which was a 500.
    let app = spawn_app().await;
    let admin = app.token("admin-nul", Role::Admin);
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            "/v1/hosts",
            &admin,
            Some(serde_json::json!({"handle": "nul_host", "display_name": "Mia\u{0}Live"})),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_display_name")),
        "{body}"
    );
    let agency = crate::support::fixtures::insert_agency(&app.db).await;
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            &format!("/v1/agencies/{agency}/sessions"),
            &admin,
            Some(
                serde_json::json!({"title": "\u{0}", "planned_start": "2030-01-01T10:00:00Z",
                "planned_end": "2030-01-01T11:00:00Z"}),
            ),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_title")),
        "{body}"
    );
}

/// Every free-text pattern in the OpenAPI document (the ones that name the
/// hidden characters) is one of `hawker_core::text_schema`'s, whose unit test
/// holds them to the server's check: a copy that drifted would fail here.
#[tokio::test]
async fn every_free_text_pattern_of_the_document_is_the_servers_own() {
    use hawker_core::text_schema::{pattern, Lines};
    fn patterns<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, item) in map {
                    match (key.as_str(), item) {
                        ("pattern", Value::String(p)) if p.contains("\\u200b") => found.push(p),
                        _ => patterns(item, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| patterns(item, found)),
            _ => {}
        }
    }
    let app = spawn_app().await;
    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut found = Vec::new();
    patterns(&doc, &mut found);
    let known: Vec<String> = [Lines::One, Lines::Many]
        .into_iter()
        .flat_map(|lines| [pattern(lines, false), pattern(lines, true)])
        .collect();
    assert!(found.len() >= 20, "only {} free-text patterns", found.len());
    for p in found {
        assert!(known.iter().any(|k| k == p), "a pattern of its own: {p}");
    }
}
