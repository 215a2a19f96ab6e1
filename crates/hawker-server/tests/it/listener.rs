//! The public listener's accept queue is as deep as configured (tokio's
//! default, 128, made bursts of new connections wait for SYN retransmits).

use crate::helpers::{settings_with, spawn_app_with};

/// The backlog of the listening socket on `port`, as `ss` reports it (its
/// Send-Q column for a socket in LISTEN).
fn listen_backlog(port: u16) -> u32 {
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no listener on {port}: {text}"));
    line.split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .expect("Send-Q column")
}

#[tokio::test]
async fn the_public_listener_has_the_configured_accept_backlog() {
    let app = spawn_app_with(settings_with(&[("HAWKER__SERVER__ACCEPT_BACKLOG", "777")])).await;
    assert_eq!(listen_backlog(app.addr.port()), 777);
}

#[tokio::test]
async fn the_default_accept_backlog_is_far_above_tokios_128() {
    let app = spawn_app_with(settings_with(&[])).await;
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    assert_eq!(listen_backlog(app.addr.port()), somaxconn.min(4096));
}
