//! Failing closed: what hawker refuses to do when it is misconfigured.

use std::process::Command;

use crate::support::{settings_with, spawn_app_with};

fn hawker() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hawker"));
    command
        .env_remove("HAWKER_ENV")
        .env("HAWKER_CONFIG_DIR", crate::support::config_dir())
        .env("HAWKER__DATABASE__URL", "postgres://postgres@127.0.0.1:1/unused");
    command
}

#[test]
fn serve_without_hawker_env_refuses_to_start_and_names_it() {
    for subcommand in ["serve", "migrate", "token"] {
        let mut command = hawker();
        command.arg(subcommand);
        if subcommand == "token" {
            command.args(["--user", "x", "--role", "admin"]);
        }
        let output = command.output().unwrap();
        assert!(
            !output.status.success(),
            "{subcommand} started without HAWKER_ENV"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("HAWKER_ENV"), "{subcommand}: {stderr}");
    }
}

#[test]
fn production_refuses_any_origin_unless_explicitly_allowed() {
    let secrets = [
        (
            "HAWKER__AUTH__JWT_SECRET",
            "a-production-secret-of-at-least-32-bytes!",
        ),
        ("HAWKER__PAYMENTS__WEBHOOK_SECRET", "a-production-webhook-secret"),
        ("HAWKER__AUTH__ISSUER", "https://id.example"),
        ("HAWKER__AUTH__AUDIENCE", "hawker"),
    ];
    let dir = tempdir_with_origins(r#"["*"]"#);
    let load = |extra: &[(&str, &str)]| {
        let vars = secrets
            .iter()
            .chain(extra.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        hawker_server::config::Settings::load_with(&dir, hawker_server::config::Environment::Production, vars)
    };
    let err = load(&[]).unwrap_err().to_string();
    assert!(err.contains("hub.allowed_origins"), "{err}");
    load(&[("HAWKER__SERVER__ALLOW_ANY_ORIGIN", "true")]).expect("explicitly allowed");
    // The shipped production file lists no origin, and starts.
    hawker_server::config::Settings::load_with(
        &crate::support::config_dir(),
        hawker_server::config::Environment::Production,
        secrets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
    .expect("shipped production config");
}

/// A config dir whose production file sets `hub.allowed_origins`.
fn tempdir_with_origins(origins: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hawker-config-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = crate::support::config_dir();
    std::fs::copy(source.join("default.toml"), dir.join("default.toml")).unwrap();
    let production = std::fs::read_to_string(source.join("production.toml"))
        .unwrap()
        .replace("allowed_origins = []", &format!("allowed_origins = {origins}"));
    std::fs::write(dir.join("production.toml"), production).unwrap();
    dir
}

#[tokio::test]
async fn dev_routes_are_absent_when_the_listener_is_not_loopback() {
    let app = spawn_app_with(settings_with(&[("HAWKER__SERVER__LISTEN", "0.0.0.0:0")])).await;
    let url = format!("http://127.0.0.1:{}/v1/dev/token", app.addr.port());
    let response = app
        .http
        .post(url)
        .json(&serde_json::json!({"user": "mallory", "role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let env: serde_json::Value = app
        .http
        .get(format!("http://127.0.0.1:{}/console/env.json", app.addr.port()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(env["dev_routes"], false);
}

#[tokio::test]
async fn dev_routes_exist_in_test_on_loopback() {
    let app = spawn_app_with(settings_with(&[])).await;
    let response = app
        .http
        .post(app.url("/v1/dev/token"))
        .json(&serde_json::json!({"user": "dev", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_date_at_the_edge_of_the_calendar_is_a_400_and_strangers_are_refused_first() {
    let app = spawn_app_with(settings_with(&[])).await;
    let agency = crate::support::fixtures::insert_agency(&app.db).await;
    let token = app.agency_token(agency);
    for query in [
        "date=%2B262142-12-31&utc_offset=-05:00",
        "date=-262143-01-01&utc_offset=%2B08:00",
    ] {
        let response = app
            .http
            .get(app.url(&format!("/v1/agencies/{agency}/sessions?{query}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "bad_date", "{body}");
    }
    // Another agency's token is refused before the query is even read.
    let stranger = app.agency_token(uuid::Uuid::new_v4());
    let response = app
        .http
        .get(app.url(&format!("/v1/agencies/{agency}/sessions?date=%2B262142-12-31")))
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn a_custom_http_method_does_not_become_a_metric_label() {
    let app = spawn_app_with(settings_with(&[])).await;
    let method = reqwest::Method::from_bytes(b"XMETHODXYZZY").unwrap();
    let response = app
        .http
        .request(method, app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());
    let metrics = app.metrics().await;
    assert!(
        !metrics.contains("XMETHODXYZZY"),
        "the method leaked into a label"
    );
    assert!(
        metrics.contains("method=\"other\""),
        "custom methods are counted as `other`"
    );
}

#[tokio::test]
async fn chat_and_host_text_with_bidi_zero_width_or_control_characters_is_refused() {
    let app = spawn_app_with(settings_with(&[])).await;
    let (_agency, session) = crate::support::fixtures::insert_agency_and_session(&app.db).await;
    let token = app.token("viewer-text", hawker_core::Role::Viewer);
    let mut ws = crate::support::socket::join(app.addr, session, &token).await;
    for text in [
        "evil\u{202E}gnp.exe",
        "zero\u{200B}width",
        "two\nlines",
        "nul\0byte",
    ] {
        let reply = ws.call("chat.send", serde_json::json!({ "text": text })).await;
        assert_eq!(reply["type"], "error", "{text:?}: {reply}");
        assert_eq!(reply["code"], "bad_command", "{text:?}: {reply}");
    }
    let fine = ws
        .call("chat.send", serde_json::json!({ "text": "héllo 你好 👋" }))
        .await;
    assert_eq!(fine["type"], "ack", "{fine}");
}

#[tokio::test]
async fn names_and_titles_with_bidi_or_control_characters_are_refused() {
    let app = spawn_app_with(settings_with(&[])).await;
    let agency = crate::support::fixtures::insert_agency(&app.db).await;
    let token = app.agency_token(agency);
    for name in ["Mia\u{202E}nehC", "Mia\u{200B}", "Mia\nChen"] {
        let (status, body) = app
            .send(
                reqwest::Method::POST,
                "/v1/hosts",
                &token,
                Some(serde_json::json!({ "handle": "mia_t", "display_name": name })),
            )
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("bad_display_name")),
            "{name:?}: {body}"
        );
    }
    let start = chrono::Utc::now() + chrono::Duration::hours(1);
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            &format!("/v1/agencies/{agency}/sessions"),
            &token,
            Some(serde_json::json!({
                "title": "Glow\u{2066}Up",
                "planned_start": start.to_rfc3339(),
                "planned_end": (start + chrono::Duration::hours(1)).to_rfc3339(),
            })),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_title")),
        "{body}"
    );
}

#[tokio::test]
async fn a_socket_does_not_outlive_its_token() {
    let app = spawn_app_with(settings_with(&[])).await;
    let (_agency, session) = crate::support::fixtures::insert_agency_and_session(&app.db).await;
    let claims = hawker_core::Claims::new(
        "short-lived",
        hawker_core::Role::Viewer,
        chrono::Duration::seconds(2),
    );
    let token = app.keys.sign(&claims).unwrap();
    let started = std::time::Instant::now();
    let mut ws = crate::support::socket::join(app.addr, session, &token).await;
    let ended = ws.closed(std::time::Duration::from_secs(6)).await;
    assert_eq!(ended, crate::support::socket::Ended::Closed(Some(4011)));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // A long-lived token's socket stays open meanwhile.
    let mut other = crate::support::socket::join(
        app.addr,
        session,
        &app.token("long-lived", hawker_core::Role::Viewer),
    )
    .await;
    let ping = other.call("ping", serde_json::json!({})).await;
    assert_eq!(ping["type"], "ack", "{ping}");
}
