//! What the integration tests share, by job:
//!
//! - [`app`]: a real hawker on port 0 against a fresh Postgres database and
//!   Redis (`spawn_app`, `two_nodes`), and HTTP answers as `(status, JSON)`;
//! - [`socket`]: a WebSocket client speaking hawker's protocol;
//! - [`fixtures`]: tokens, and agencies, sessions, SKUs, line-ups and deals
//!   seeded through SQL or the HTTP API;
//! - [`redis`]: a private `redis-server` for tests that stop or flush it;
//! - [`cluster`]: a private Redis Cluster (3 masters, 3 replicas) for tests
//!   that kill masters or move slots;
//! - [`proxy`]: a TCP forwarder that cuts Postgres off;
//! - [`blackhole`]: a TCP forwarder that goes silent (drops, not refuses);
//! - [`process`]: the real `hawker` binary as a child process;
//! - [`poll`]: trying again until a condition holds;
//! - [`storm`]: the guard that keeps the storm tests from running at once.

pub mod app;
pub mod blackhole;
pub mod cluster;
pub mod fixtures;
pub mod poll;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod socket;
pub mod storm;

pub use app::{
    answer, config_dir, settings_with, spawn_app, spawn_app_with, test_database_url, try_answer, two_nodes,
    NodeOptions, TestApp,
};
pub use cluster::RedisCluster;
pub use poll::{poll, Patience};
pub use redis::RedisServer;
