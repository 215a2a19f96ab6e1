//! Layered configuration: `config/default.toml`, then `config/{HAWKER_ENV}.toml`,
//! then `HAWKER__SECTION__KEY` environment variables. Every value is checked
//! once at start; a bad one stops the process with the key and the reason.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use hawker_core::TokenKeys;
use serde::Deserialize;

/// The JWT secret shipped in `config/default.toml`. Production refuses it.
pub const DEV_JWT_SECRET: &str = "hawker-development-jwt-secret-not-for-production";
/// The webhook secret shipped in `config/default.toml`. Production refuses it.
pub const DEV_WEBHOOK_SECRET: &str = "hawker-development-webhook-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Test,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Test => "test",
            Environment::Production => "production",
        }
    }

    /// Reads `HAWKER_ENV`, which must be set: hawker fails closed rather
    /// than guess development (whose routes mint tokens and mark orders paid)
    /// for a deployment that forgot it.
    pub fn from_env() -> Result<Self, ConfigError> {
        match std::env::var("HAWKER_ENV") {
            Ok(value) => value.parse(),
            Err(_) => Err(ConfigError::invalid(
                "HAWKER_ENV",
                "is not set; set it to development, test or production (hawker does not guess)",
            )),
        }
    }
}

impl FromStr for Environment {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "development" | "dev" => Ok(Environment::Development),
            "test" => Ok(Environment::Test),
            "production" | "prod" => Ok(Environment::Production),
            other => Err(ConfigError::invalid(
                "HAWKER_ENV",
                format!("`{other}` is not one of development, test, production"),
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration key `{key}` is invalid: {reason}")]
    Invalid { key: String, reason: String },
    #[error("configuration could not be read: {0}")]
    Source(#[from] config::ConfigError),
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(skip, default = "default_environment")]
    pub environment: Environment,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub auth: AuthSettings,
    pub payments: PaymentSettings,
    pub log: LogSettings,
    #[serde(default)]
    pub hub: hawker_hub::HubConfig,
    #[serde(default)]
    pub commerce: hawker_commerce::CommerceConfig,
    #[serde(default)]
    pub live: hawker_live::LiveConfig,
    pub retention: RetentionSettings,
}

/// How long data that is no longer needed is kept (docs/operations.md,
/// "Retention"). Money records (orders, their events, payments, refunds, the
/// commission ledger) are never deleted and have no key here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// `room_outbox` rows are deleted this long after they were published.
    pub outbox_published_hours: u64,
    /// `session_sample` rows are deleted this long after they were taken.
    pub session_sample_days: u64,
    /// A room forgets an outbox id this long after publishing it…
    pub room_dedupe_secs: u64,
    /// …and remembers at most this many.
    pub room_dedupe_max: u64,
    /// How often each sweeper runs.
    pub sweep_every_secs: u64,
    /// Rows one delete statement removes at most (10 statements per run at most).
    pub sweep_batch: i64,
}

impl RetentionSettings {
    /// The hub's part (`room_outbox`, dedupe ids).
    pub fn hub(&self) -> hawker_hub::retention::Retention {
        hawker_hub::retention::Retention {
            outbox_published: Duration::from_secs(self.outbox_published_hours.saturating_mul(3600)),
            dedupe_max_age: Duration::from_secs(self.room_dedupe_secs),
            dedupe_max_entries: self.room_dedupe_max,
            sweep_every: Duration::from_secs(self.sweep_every_secs),
            sweep_batch: self.sweep_batch,
        }
    }

    /// The samples' retention, for the ledger's workers.
    pub fn session_sample(&self) -> Duration {
        Duration::from_secs(self.session_sample_days.saturating_mul(86_400))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let at_least_one = [
            ("retention.outbox_published_hours", self.outbox_published_hours),
            ("retention.session_sample_days", self.session_sample_days),
            ("retention.room_dedupe_secs", self.room_dedupe_secs),
            ("retention.room_dedupe_max", self.room_dedupe_max),
            ("retention.sweep_every_secs", self.sweep_every_secs),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if !(1..=100_000).contains(&self.sweep_batch) {
            return Err(ConfigError::invalid(
                "retention.sweep_batch",
                "must be 1 to 100000",
            ));
        }
        Ok(())
    }
}

fn default_environment() -> Environment {
    Environment::Development
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub public_url: String,
    pub max_connections: usize,
    pub request_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
    /// After shutdown starts, keep accepting this long (readiness already 503).
    pub shutdown_drain_ms: u64,
    /// Open connections one peer address may hold on the public listener
    /// (trusted proxies are exempt), and open sockets one client address
    /// (behind a trusted proxy: from `X-Forwarded-For`) may hold.
    pub max_connections_per_ip: usize,
    /// Load balancers / proxies in front of hawker: exempt from the
    /// per-address connection cap, and the only peers whose
    /// `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// A client must send a request's headers within this long — the first
    /// request's, and on a kept-alive connection each next one's, so this is
    /// also how long an idle keep-alive connection lives.
    pub header_read_timeout_secs: u64,
    /// Production refuses `hub.allowed_origins = ["*"]` unless this is true.
    pub allow_any_origin: bool,
    /// The listen backlog of the public listener: connections the kernel
    /// completes and queues before hawker accepts them (capped by the
    /// kernel's `net.core.somaxconn`).
    pub accept_backlog: u32,
}

impl ServerSettings {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    /// Postgres cancels a statement that runs longer than this (`statement_timeout`).
    pub statement_timeout_ms: u64,
    /// Postgres gives up waiting for a row or table lock after this (`lock_timeout`).
    pub lock_timeout_ms: u64,
    /// Postgres ends a session that sits idle inside a transaction this long
    /// (`idle_in_transaction_session_timeout`), releasing its locks: a frozen
    /// node cannot hold a deal row for the others.
    pub idle_in_transaction_timeout_ms: u64,
    /// TCP keepalive on each connection (idle seconds before the first probe;
    /// probes every `keepalive_interval_secs`, 3 in all), and the longest
    /// unacknowledged send (`tcp_user_timeout`), so a partitioned peer is
    /// noticed in seconds rather than when TCP gives up.
    pub keepalive_idle_secs: u64,
    pub keepalive_interval_secs: u64,
    pub auto_migrate: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// One Redis server. Used when `cluster` is empty.
    pub url: String,
    /// Seed nodes of a Redis Cluster (any reachable ones; the client learns
    /// the rest). A TOML list, or one string of comma-separated URLs (as an
    /// environment variable: `HAWKER__REDIS__CLUSTER=redis://a:7000,redis://b:7001`).
    /// Empty: one server at `url`.
    #[serde(default, deserialize_with = "url_list")]
    pub cluster: Vec<String>,
    pub response_timeout_ms: u64,
    /// The first part of every key and pub/sub channel name hawker uses
    /// (`<prefix>:room:{id}`, `<prefix>:deal:{id}:…`): deployments sharing
    /// one Redis must use different prefixes. A database number does not
    /// separate pub/sub channels.
    pub key_prefix: String,
}

impl RedisSettings {
    /// One server or a cluster, as configured.
    pub fn target(&self) -> Result<hawker_redis::Target, hawker_redis::TargetError> {
        hawker_redis::Target::from_settings(&self.url, &self.cluster)
    }
}

/// A list of URLs: a TOML list, or one comma-separated string.
fn url_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        One(String),
        Many(Vec<String>),
    }
    let urls = match List::deserialize(d)? {
        List::One(s) => s.split(',').map(str::to_string).collect::<Vec<_>>(),
        List::Many(v) => v,
    };
    Ok(urls
        .into_iter()
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    EdDSA,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub algorithm: JwtAlgorithm,
    pub jwt_secret: String,
    pub ed25519_public_key_file: String,
    pub ed25519_private_key_file: String,
    pub default_token_ttl_secs: u64,
    /// The `iss` every token must carry (and minted tokens get); empty:
    /// not checked. Required in production.
    pub issuer: String,
    /// The `aud` every token must carry (and minted tokens get); empty:
    /// not checked. Required in production.
    pub audience: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentSettings {
    pub webhook_secret: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub filter: String,
}

/// Where the configuration files live: `HAWKER_CONFIG_DIR`, else `./config`,
/// else the repository's `config/` (for binaries run from a checkout).
pub fn default_config_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("HAWKER_CONFIG_DIR") {
        return PathBuf::from(dir);
    }
    let local = PathBuf::from("config");
    if local.join("default.toml").exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

impl Settings {
    /// Loads the settings for `environment` from `dir`, the process
    /// environment's `HAWKER__*` variables on top.
    pub fn load(dir: &Path, environment: Environment) -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::load_with(dir, environment, vars)
    }

    /// Like [`Settings::load`] with an explicit set of environment variables (tests).
    pub fn load_with(
        dir: &Path,
        environment: Environment,
        vars: HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let default = dir.join("default.toml");
        if !default.exists() {
            return Err(ConfigError::invalid(
                "HAWKER_CONFIG_DIR",
                format!("{} does not exist", default.display()),
            ));
        }
        let raw = config::Config::builder()
            .add_source(config::File::from(default))
            .add_source(
                config::File::from(dir.join(format!("{}.toml", environment.as_str()))).required(false),
            )
            .add_source(
                config::Environment::default()
                    .prefix("HAWKER")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    // The one list a container sets from its environment:
                    // `HAWKER__SERVER__TRUSTED_PROXIES=10.0.0.1,10.0.0.2`.
                    .list_separator(",")
                    .with_list_parse_key("server.trusted_proxies")
                    .source(Some(vars)),
            )
            .build()?;
        let mut settings: Settings = raw.try_deserialize()?;
        settings.environment = environment;
        // The hub names its keys and channels with the deployment's prefix.
        settings.hub.key_prefix = settings.redis.key_prefix.clone();
        settings.hub.retention = settings.retention.hub();
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let prod = self.environment == Environment::Production;
        if self.server.max_connections == 0 {
            return Err(ConfigError::invalid(
                "server.max_connections",
                "must be at least 1",
            ));
        }
        if prod && self.hub.allowed_origins.iter().any(|o| o == "*") && !self.server.allow_any_origin {
            return Err(ConfigError::invalid(
                "hub.allowed_origins",
                "production refuses `*` (any web page could open sockets with a visitor's cookies or \
                 tokens); list your sites' origins, or set server.allow_any_origin = true",
            ));
        }
        self.retention.validate()?;
        if self.server.max_connections_per_ip == 0 {
            return Err(ConfigError::invalid(
                "server.max_connections_per_ip",
                "must be at least 1",
            ));
        }
        if self.server.header_read_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "server.header_read_timeout_secs",
                "must be at least 1",
            ));
        }
        if self.server.accept_backlog == 0 {
            return Err(ConfigError::invalid(
                "server.accept_backlog",
                "must be at least 1",
            ));
        }
        if self.server.request_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "server.request_timeout_secs",
                "must be at least 1",
            ));
        }
        if self.server.shutdown_grace_secs == 0 {
            return Err(ConfigError::invalid(
                "server.shutdown_grace_secs",
                "must be at least 1",
            ));
        }
        if self.database.acquire_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "database.acquire_timeout_ms",
                "must be at least 1",
            ));
        }
        for (key, value) in [
            (
                "database.statement_timeout_ms",
                self.database.statement_timeout_ms,
            ),
            ("database.lock_timeout_ms", self.database.lock_timeout_ms),
            (
                "database.idle_in_transaction_timeout_ms",
                self.database.idle_in_transaction_timeout_ms,
            ),
            ("database.keepalive_idle_secs", self.database.keepalive_idle_secs),
            (
                "database.keepalive_interval_secs",
                self.database.keepalive_interval_secs,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        let live = &self.live;
        for (key, ok) in [
            ("live.tick_ms", live.tick_ms >= 10),
            ("live.bid_batch_max", live.bid_batch_max >= 1),
            ("live.bid_commit_timeout_ms", live.bid_commit_timeout_ms >= 1),
            ("live.bid_event_interval_ms", live.bid_event_interval_ms >= 10),
            ("live.at_risk_unpaid_wins", live.at_risk_unpaid_wins >= 0),
            ("live.at_risk_days", live.at_risk_days >= 0),
            (
                "live.snipe_window_secs",
                (1..=60).contains(&live.snipe_window_secs),
            ),
            ("live.comment_cache_ms", live.comment_cache_ms <= 60_000),
            ("live.comment_max_in_flight", live.comment_max_in_flight >= 1),
        ] {
            if !ok {
                return Err(ConfigError::invalid(
                    key,
                    "is out of range (see docs/operations.md, [live])",
                ));
            }
        }
        if self.redis.response_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "redis.response_timeout_ms",
                "must be at least 1",
            ));
        }
        if !self.server.public_url.starts_with("http://") && !self.server.public_url.starts_with("https://") {
            return Err(ConfigError::invalid(
                "server.public_url",
                "must start with http:// or https://",
            ));
        }
        if !self.database.url.starts_with("postgres://") && !self.database.url.starts_with("postgresql://") {
            return Err(ConfigError::invalid("database.url", "must be a postgres:// URL"));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        if let Err(e) = self.redis.target() {
            return Err(ConfigError::invalid(e.key, e.reason));
        }
        if !hawker_hub::keys::valid_prefix(&self.redis.key_prefix) {
            return Err(ConfigError::invalid(
                "redis.key_prefix",
                "must be 1 to 64 of the characters A-Z a-z 0-9 _ - .",
            ));
        }
        if self.auth.default_token_ttl_secs == 0 {
            return Err(ConfigError::invalid(
                "auth.default_token_ttl_secs",
                "must be at least 1",
            ));
        }
        match self.auth.algorithm {
            JwtAlgorithm::HS256 => {
                if self.auth.jwt_secret.len() < 32 {
                    return Err(ConfigError::invalid(
                        "auth.jwt_secret",
                        "must be at least 32 bytes for HS256 (set HAWKER__AUTH__JWT_SECRET)",
                    ));
                }
                if prod && self.auth.jwt_secret == DEV_JWT_SECRET {
                    return Err(ConfigError::invalid(
                        "auth.jwt_secret",
                        "production refuses the development secret; set HAWKER__AUTH__JWT_SECRET",
                    ));
                }
            }
            JwtAlgorithm::EdDSA => {
                if self.auth.ed25519_public_key_file.is_empty() {
                    return Err(ConfigError::invalid(
                        "auth.ed25519_public_key_file",
                        "is required when auth.algorithm = \"EdDSA\"",
                    ));
                }
            }
        }
        if self.payments.webhook_secret.len() < 16 {
            return Err(ConfigError::invalid(
                "payments.webhook_secret",
                "must be at least 16 bytes (set HAWKER__PAYMENTS__WEBHOOK_SECRET)",
            ));
        }
        if prod && self.payments.webhook_secret == DEV_WEBHOOK_SECRET {
            return Err(ConfigError::invalid(
                "payments.webhook_secret",
                "production refuses the development secret; set HAWKER__PAYMENTS__WEBHOOK_SECRET",
            ));
        }
        if prod && self.auth.issuer.trim().is_empty() {
            return Err(ConfigError::invalid(
                "auth.issuer",
                "production requires the tokens' issuer (set HAWKER__AUTH__ISSUER)",
            ));
        }
        if prod && self.auth.audience.trim().is_empty() {
            return Err(ConfigError::invalid(
                "auth.audience",
                "production requires the tokens' audience (set HAWKER__AUTH__AUDIENCE)",
            ));
        }
        if let Err((key, reason)) = self.hub.validate() {
            return Err(ConfigError::invalid(key, reason));
        }
        if let Err((key, reason)) = self.commerce.validate() {
            return Err(ConfigError::invalid(key, reason));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return Err(ConfigError::invalid("log.filter", e.to_string()));
        }
        self.token_keys()?;
        Ok(())
    }

    /// The token keys this configuration describes.
    pub fn token_keys(&self) -> Result<TokenKeys, ConfigError> {
        let non_empty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
        Ok(self
            .signing_keys()?
            .with_issuer_and_audience(non_empty(&self.auth.issuer), non_empty(&self.auth.audience)))
    }

    fn signing_keys(&self) -> Result<TokenKeys, ConfigError> {
        match self.auth.algorithm {
            JwtAlgorithm::HS256 => Ok(TokenKeys::hs256(self.auth.jwt_secret.as_bytes())),
            JwtAlgorithm::EdDSA => {
                let public = std::fs::read(&self.auth.ed25519_public_key_file)
                    .map_err(|e| ConfigError::invalid("auth.ed25519_public_key_file", e.to_string()))?;
                let private =
                    if self.auth.ed25519_private_key_file.is_empty() {
                        None
                    } else {
                        Some(std::fs::read(&self.auth.ed25519_private_key_file).map_err(|e| {
                            ConfigError::invalid("auth.ed25519_private_key_file", e.to_string())
                        })?)
                    };
                TokenKeys::ed25519(&public, private.as_deref())
                    .map_err(|e| ConfigError::invalid("auth.ed25519_public_key_file", e))
            }
        }
    }
}
