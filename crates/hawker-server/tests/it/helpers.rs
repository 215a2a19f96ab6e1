//! `spawn_app()`: a real hawker on port 0 against real Postgres (a fresh
//! database per test) and real Redis (the machine's, or a private
//! `redis-server` for tests that stop it).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hawker_core::{Claims, Role, TokenKeys};
use hawker_server::app::Application;
use hawker_server::config::{Environment, Settings};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

pub fn test_database_url() -> String {
    format!(
        "postgres://postgres@127.0.0.1:5432/hawker_test_{}",
        Uuid::new_v4().simple()
    )
}

/// Test settings with `overrides` as if they were `HAWKER__*` variables.
pub fn settings_with(overrides: &[(&str, &str)]) -> Settings {
    let mut vars: HashMap<String, String> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.entry("HAWKER__DATABASE__URL".into())
        .or_insert_with(test_database_url);
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
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    pub fn token(&self, sub: &str, role: Role) -> String {
        self.keys
            .sign(&Claims::new(sub, role, chrono::Duration::hours(1)))
            .expect("sign")
    }

    pub fn agency_token(&self, agency_id: Uuid) -> String {
        let mut claims = Claims::new("agency-user", Role::Agency, chrono::Duration::hours(1));
        claims.agency_id = Some(agency_id);
        self.keys.sign(&claims).expect("sign")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request")
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
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        addr,
        admin_addr,
        shutdown,
        handle: Some(handle),
        db,
        keys,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client"),
        hub,
    }
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A private `redis-server` on its own port, for tests that stop or flush it.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts (again) on the same port and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (make test installs it)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("private redis-server did not start on port {}", self.port);
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Inserts an agency and a session, returning their ids.
pub async fn insert_agency_and_session(db: &PgPool) -> (Uuid, Uuid) {
    let agency_id = Uuid::new_v4();
    let session_id = Uuid::new_v4();
    sqlx::query("insert into agency (agency_id, name) values ($1, 'Test Agency')")
        .bind(agency_id)
        .execute(db)
        .await
        .expect("agency");
    sqlx::query(
        "insert into live_session (session_id, agency_id, title, planned_start, planned_end)
         values ($1, $2, 'Test session', now(), now() + interval '1 hour')",
    )
    .bind(session_id)
    .bind(agency_id)
    .execute(db)
    .await
    .expect("session");
    (agency_id, session_id)
}

/// A TCP forwarder that a test can cut (refusing and dropping connections)
/// and restore: Postgres becomes unreachable without touching the server.
pub struct TcpProxy {
    pub addr: SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl TcpProxy {
    pub async fn start(target: &'static str) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let generation = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (up2, generation2) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let born = generation2.load(Ordering::SeqCst);
                let generation = generation2.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let watch = async {
                        while generation.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! { _ = copy => {}, _ = watch => {} }
                });
            }
        });
        TcpProxy { addr, up, generation }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A real `hawker serve` process (for tests that kill one).
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    pub fn spawn(db_url: &str, redis_url: &str, extra: &[(&str, &str)]) -> Self {
        use std::io::{BufRead, BufReader};
        let mut command = Command::new(env!("CARGO_BIN_EXE_hawker"));
        command
            .arg("serve")
            .env("HAWKER_ENV", "test")
            .env("HAWKER_CONFIG_DIR", config_dir())
            .env("HAWKER__DATABASE__URL", db_url)
            .env("HAWKER__REDIS__URL", redis_url)
            .env("HAWKER__LOG__FORMAT", "json")
            .env("HAWKER__LOG__FILTER", "info")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in extra {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("hawker starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    if let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) {
                        if log["message"] == "hawker serving" {
                            let _ = tx.send(log["public"].as_str().unwrap_or_default().to_string());
                            sent = true;
                        }
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("hawker prints its address");
        ServerProcess {
            child,
            addr: addr.parse().expect("address"),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
