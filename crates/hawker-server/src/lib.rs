//! The hawker server: configuration, HTTP wiring, authentication and
//! operations (health, metrics, graceful shutdown). `main.rs` is a thin
//! command-line front over this library, and the tests start the same
//! [`app::Application`] on port 0.

pub mod app;
pub mod cli;
pub mod client_ip;
pub mod config;
pub mod db;
pub mod http;
pub mod listener;
pub mod seed;
pub mod serve;
pub mod telemetry;
