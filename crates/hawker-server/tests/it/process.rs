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

#[tokio::test]
async fn logs_name_the_client_address_and_never_carry_tokens_signatures_or_the_webhook_secret() {
    let db_url = test_database_url();
    // 127.0.0.1 is a trusted proxy; debug level, so even debug lines are checked.
    let mut command = hawker(&["serve"], &db_url);
    command
        .env("HAWKER__SERVER__TRUSTED_PROXIES", "127.0.0.1")
        .env("HAWKER__LOG__FILTER", "debug")
        .stderr(Stdio::inherit());
    let (mut server, mut seen, lines_rx) = ServerProcess::start(&mut command);
    let addr = server.addr;
    let output = hawker(&["token", "--user", "viewer-logs", "--role", "viewer"], &db_url)
        .output()
        .unwrap();
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert!(token.len() > 40, "{token}");
    let forged_token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.Zm9yZ2VkLXNpZ25hdHVyZS1ub3QtbG9nZ2Vk";
    let secret = "hawker-development-webhook-secret";
    let body = br#"{"event_id":"evt_logs_1","type":"payment.succeeded","order_id":"00000000-0000-4000-8000-0000000000dd","amount_minor":100,"currency":"USD"}"#;
    let now = chrono::Utc::now().timestamp();
    let good_signature = hawker_commerce::payments::sign(secret, now, body);
    let bad_signature = format!("t={now},v1={}", "ab12".repeat(16));

    let through_proxy = reqwest::Client::new();
    let direct = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    // Through the proxy: the client is the right-most untrusted hop.
    let answer = through_proxy
        .get(format!("http://{addr}/v1/me"))
        .bearer_auth(&token)
        .header("x-request-id", "rid-logs-proxied")
        .header("x-forwarded-for", "192.0.2.66, 198.51.100.23")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // Directly, from an untrusted peer: its X-Forwarded-For is ignored.
    let answer = direct
        .get(format!("http://{addr}/v1/me"))
        .bearer_auth(&token)
        .header("x-request-id", "rid-logs-direct")
        .header("x-forwarded-for", "198.51.100.99")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // A refused token, a token in the query string, webhooks with a wrong and a right signature.
    let answer = direct
        .get(format!("http://{addr}/v1/me"))
        .bearer_auth(forged_token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let _ = direct
        .get(format!(
            "http://{addr}/v1/sessions/00000000-0000-4000-8000-0000000000ee/ws?access_token={token}"
        ))
        .send()
        .await
        .unwrap();
    for signature in [&bad_signature, &good_signature] {
        let _ = direct
            .post(format!("http://{addr}/v1/payments/webhook"))
            .header("x-hawker-signature", signature.as_str())
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
    }

    let pid = server.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let _ = tokio::task::spawn_blocking(move || server.child.wait()).await;
    while let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(10)) {
        seen.push(line);
    }
    let log = seen.join("\n");

    // Every line of a request names its client, from its first one on.
    let clients_of = |request_id: &str| {
        seen.iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["span"]["request_id"] == request_id)
            .map(|v| v["span"]["client_ip"].clone())
            .collect::<Vec<_>>()
    };
    let proxied = clients_of("rid-logs-proxied");
    assert!(!proxied.is_empty(), "{log}");
    assert!(proxied.iter().all(|c| c == "198.51.100.23"), "{proxied:?}");
    let direct = clients_of("rid-logs-direct");
    assert!(!direct.is_empty(), "{log}");
    assert!(direct.iter().all(|c| c == "127.0.0.2"), "{direct:?}");
    let good_mac = good_signature.rsplit("v1=").next().unwrap();
    let bad_mac = bad_signature.rsplit("v1=").next().unwrap();
    let token_signature = token.rsplit('.').next().unwrap();
    for (what, secret_text) in [
        ("the token", token.as_str()),
        ("the token's signature", token_signature),
        ("a refused token", forged_token),
        ("a webhook signature", good_mac),
        ("a wrong webhook signature", bad_mac),
        ("the webhook secret", secret),
    ] {
        assert!(!log.contains(secret_text), "{what} is in the log:\n{log}");
    }
    // The requests were logged at all (the check above is not vacuous).
    assert!(log.contains("/v1/payments/webhook"), "{log}");
    assert!(log.contains("/v1/me"), "{log}");
}
