//! Tests of the real `hawker` binary: tokens it mints, JSON logs carrying the
//! request id, and SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::process::{hawker, ServerProcess};
use crate::support::test_database_url;

#[tokio::test]
async fn the_binary_serves_accepts_its_own_tokens_logs_request_ids_and_stops_on_sigterm() {
    let db_url = test_database_url();
    let (mut server, mut seen, lines_rx) =
        ServerProcess::start(hawker(&["serve"], &db_url).stderr(Stdio::inherit()));
    let addr = server.addr;

    let output = hawker(
        &["token", "--user", "viewer-cli", "--role", "viewer", "--ttl", "5m"],
        &db_url,
    )
    .output()
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();

    let client = reqwest::Client::new();
    let response = client
        .get(format!("http://{addr}/v1/me"))
        .bearer_auth(&token)
        .header("x-request-id", "rid-from-the-test-0042")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["sub"], "viewer-cli");

    // SIGTERM: the process drains and exits 0.
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
    // The rest of the log: the reader ends at the closed pipe (bounded, in
    // case something still holds it).
    while let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(10)) {
        seen.push(line);
    }

    let tagged = seen
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["span"]["request_id"] == "rid-from-the-test-0042");
    assert!(
        tagged.is_some(),
        "a JSON log line carries the request id; got:\n{}",
        seen.join("\n")
    );
    assert!(
        seen.iter().any(|l| l.contains("shutdown complete")),
        "{}",
        seen.join("\n")
    );
}

#[test]
fn a_bad_configuration_value_stops_the_binary_with_the_key_named() {
    let output = hawker(&["serve"], "postgres://postgres@127.0.0.1:5432/unused")
        .env("HAWKER__SERVER__SHUTDOWN_GRACE_SECS", "soon")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.shutdown_grace_secs"), "{stderr}");
}

#[test]
fn production_with_the_development_secret_refuses_to_start() {
    let output = hawker(&["serve"], "postgres://postgres@127.0.0.1:5432/unused")
        .env("HAWKER_ENV", "production")
        .env("HAWKER__AUTH__JWT_SECRET", hawker_server::config::DEV_JWT_SECRET)
        .env("HAWKER__PAYMENTS__WEBHOOK_SECRET", "a-production-webhook-secret")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("auth.jwt_secret"), "{stderr}");
}

#[tokio::test]
async fn client_errors_are_never_logged_at_error_and_every_request_line_has_its_id() {
    let db_url = test_database_url();
    let (mut server, _seen, lines_rx) =
        ServerProcess::start(hawker(&["serve"], &db_url).stderr(Stdio::inherit()));
    let addr = server.addr;
    let token = |args: &[&str]| {
        let mut all = vec!["token"];
        all.extend_from_slice(args);
        let output = hawker(&all, &db_url).output().unwrap();
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    let viewer = token(&["--user", "v-1", "--role", "viewer"]);
    let agency = token(&[
        "--user",
        "ops",
        "--role",
        "agency",
        "--agency",
        "00000000-0000-4000-8000-0000000000aa",
    ]);
    let client = reqwest::Client::new();
    let other_agency = "00000000-0000-4000-8000-0000000000bb";
    let missing_session = "00000000-0000-4000-8000-0000000000cc";
    // A spread of 4xx from the agency, session and commerce routes.
    let requests = [
        (
            reqwest::Method::GET,
            format!("/v1/agencies/{other_agency}/roster"),
            &agency,
            403,
        ),
        (
            reqwest::Method::GET,
            format!("/v1/agencies/{other_agency}"),
            &viewer,
            403,
        ),
        (
            reqwest::Method::GET,
            format!("/v1/sessions/{missing_session}"),
            &viewer,
            404,
        ),
        (
            reqwest::Method::GET,
            format!("/v1/sessions/{missing_session}/shifts"),
            &agency,
            404,
        ),
        (
            reqwest::Method::GET,
            "/v1/sessions/not-a-uuid".to_string(),
            &viewer,
            400,
        ),
        (
            reqwest::Method::POST,
            format!("/v1/sessions/{missing_session}/live"),
            &agency,
            404,
        ),
    ];
    for (i, (method, path, token, status)) in requests.iter().enumerate() {
        let response = client
            .request(method.clone(), format!("http://{addr}{path}"))
            .bearer_auth(token)
            .header("x-request-id", format!("rid-4xx-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), *status, "{method} {path}");
    }
    let pid = server.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let _ = tokio::task::spawn_blocking(move || server.child.wait()).await;
    // The reader thread ends (and the channel with it) at the log's end.
    let mut lines: Vec<Value> = Vec::new();
    while let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(10)) {
        if let Ok(value) = serde_json::from_str(&line) {
            lines.push(value);
        }
    }
    let errors: Vec<&Value> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert!(errors.is_empty(), "ERROR lines for client errors: {errors:?}");
    for i in 0..requests.len() {
        let id = format!("rid-4xx-{i}");
        assert!(
            lines.iter().any(|l| l["spans"][0]["request_id"] == id.as_str()),
            "no line carries {id}"
        );
    }
    // Every line written inside a request's spans carries the request id.
    for line in &lines {
        if let Some(spans) = line["spans"].as_array() {
            if let Some(first) = spans.first() {
                if first["name"] == "request" {
                    assert!(first["request_id"].is_string(), "{line}");
                }
            }
        }
    }
}
