//! `spawn_app()`: a real hawker on port 0 against real Postgres (a fresh
//! database per test) and real Redis (the machine's, or a private
//! `redis-server` for tests that stop it). `two_nodes()`: two of them
//! sharing one database and one Redis, with an agency and a session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hawker_commerce::Commerce;
use hawker_core::{Role, TokenKeys};
use hawker_server::app::Application;
use hawker_server::config::{Environment, Settings};
use reqwest::Method;
use serde_json::Value;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::fixtures;
use super::redis::RedisServer;

/// How long a test's HTTP client waits for an answer, unless told otherwise.
const HTTP_TIMEOUT: Duration = Duration::from_secs(20);

pub fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

pub fn test_database_url() -> String {
    format!(
        "postgres://postgres@127.0.0.1:5432/hawker_test_{}",
        Uuid::new_v4().simple()
    )
}

/// The seeds of the Redis Cluster the suites run against, when they do.
pub fn cluster_under_test() -> Option<String> {
    std::env::var("HAWKER_TEST_REDIS_CLUSTER")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// Test settings with `overrides` as if they were `HAWKER__*` variables.
pub fn settings_with(overrides: &[(&str, &str)]) -> Settings {
    let mut vars: HashMap<String, String> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.entry("HAWKER__DATABASE__URL".into())
        .or_insert_with(test_database_url);
    // `make test` runs the hub and commerce suites a second time against the
    // local Redis Cluster (HAWKER_TEST_REDIS_CLUSTER: its seeds). A test
    // that brings its own Redis (a private server it stops) keeps it.
    if let Some(seeds) = cluster_under_test() {
        if !vars.contains_key("HAWKER__REDIS__URL") {
            vars.entry("HAWKER__REDIS__CLUSTER".into()).or_insert(seeds);
        }
    }
    Settings::load_with(&config_dir(), Environment::Test, vars).expect("test settings")
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: Option<JoinHandle<anyhow::Result<()>>>,
    pub db: PgPool,
    pub keys: TokenKeys,
    pub http: reqwest::Client,
    pub hub: hawker_hub::Hub,
    /// The node's commerce service, for tests that drive its scheduler's work.
    pub commerce: Commerce,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    /// The admin listener's `/metrics` (Prometheus text).
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn token(&self, sub: &str, role: Role) -> String {
        fixtures::token(&self.keys, sub, role)
    }

    pub fn agency_token(&self, agency_id: Uuid) -> String {
        fixtures::agency_token(&self.keys, agency_id)
    }

    /// A host's token: the host id is the subject.
    pub fn host_token(&self, host_id: Uuid) -> String {
        self.token(&host_id.to_string(), Role::Host)
    }

    pub fn brand_token(&self, brand_id: Uuid) -> String {
        fixtures::brand_token(&self.keys, brand_id)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request")
    }

    /// A request with a bearer token and an optional JSON body; the answer
    /// as (status, JSON body or `null`).
    pub async fn send(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.expect("request")).await
    }

    /// The same app with an HTTP client that waits `timeout` for answers.
    pub fn with_http_timeout(mut self, timeout: Duration) -> Self {
        self.http = http_client(timeout);
        self
    }

    /// Cancels the app and waits for it to stop.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.handle.take() {
            Some(handle) => handle.await?,
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An answer as (status, JSON body or `null`).
pub async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Like [`answer`], with status 0 when the request got no answer at all
/// (a node that is gone).
pub async fn try_answer(sent: reqwest::Result<reqwest::Response>) -> (u16, Value) {
    match sent {
        Ok(response) => answer(response).await,
        Err(_) => (0, Value::Null),
    }
}

fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("client")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(settings_with(&[])).await
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        hawker_server::telemetry::init_tracing(&settings.log);
    }
    let keys = settings.token_keys().expect("keys");
    let app = Application::build(settings).await.expect("app builds");
    let addr = app.local_addr();
    let admin_addr = app.admin_addr();
    let shutdown = app.shutdown_token();
    let db = app.state().db.clone();
    let hub = app.state().hub.clone();
    let commerce = app.state().commerce.clone();
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        addr,
        admin_addr,
        shutdown,
        handle: Some(handle),
        db,
        keys,
        http: http_client(HTTP_TIMEOUT),
        hub,
        commerce,
    }
}

/// What [`two_nodes`] starts: which Redis, which settings, how patient the
/// HTTP clients are.
#[derive(Default)]
pub struct NodeOptions {
    redis_url: Option<String>,
    env: Vec<(String, String)>,
    http_timeout: Option<Duration>,
}

impl NodeOptions {
    /// Both nodes use this Redis instead of the machine's.
    pub fn redis(mut self, redis: &RedisServer) -> Self {
        self.redis_url = Some(redis.url());
        self
    }

    /// Settings for both nodes, as `HAWKER__*` variables.
    pub fn env(mut self, vars: &[(&str, &str)]) -> Self {
        self.env
            .extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// Both nodes' HTTP clients wait `timeout` for answers.
    pub fn http_timeout(mut self, timeout: Duration) -> Self {
        self.http_timeout = Some(timeout);
        self
    }
}

/// Two nodes sharing one Postgres database and one Redis, and a session (of
/// an agency) inserted into that database: `(a, b, agency, session)`.
pub async fn two_nodes(options: NodeOptions) -> (TestApp, TestApp, Uuid, Uuid) {
    let db = test_database_url();
    let mut overrides: Vec<(&str, &str)> = vec![("HAWKER__DATABASE__URL", db.as_str())];
    if let Some(url) = &options.redis_url {
        overrides.push(("HAWKER__REDIS__URL", url));
    }
    overrides.extend(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let timeout = options.http_timeout.unwrap_or(HTTP_TIMEOUT);
    let a = spawn_app_with(settings_with(&overrides))
        .await
        .with_http_timeout(timeout);
    let b = spawn_app_with(settings_with(&overrides))
        .await
        .with_http_timeout(timeout);
    let (agency, session) = fixtures::insert_agency_and_session(&a.db).await;
    (a, b, agency, session)
}
