//! The public listener: its accept queue is as deep as configured (tokio's
//! default, 128, made bursts of new connections wait for SYN retransmits),
//! slow or idle clients are cut off by the header-read timeout, and one
//! address cannot hold every connection slot.

use std::time::{Duration, Instant};

use crate::support::{settings_with, spawn_app_with};

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

/// A TCP connection to `port` from the source address `127.0.0.<host>`.
async fn connect_from(host: u8, port: u16) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, host], 0)))
        .unwrap();
    socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap()
}

/// How long until the server closes `stream` (reads until EOF or reset), at most `limit`.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn a_slowloris_from_several_addresses_is_cut_off_by_the_header_read_timeout() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(settings_with(&[(
        "HAWKER__SERVER__HEADER_READ_TIMEOUT_SECS",
        "1",
    )]))
    .await;
    let port = app.addr.port();
    // 60 connections from 6 addresses (well under the per-address cap), each
    // sending the start of a request and then nothing.
    let mut slow = Vec::new();
    for i in 0..60u8 {
        let mut stream = connect_from(2 + i % 6, port).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    // Meanwhile an honest client is served.
    assert_eq!(app.get("/healthz", None).await.status(), 200);
    for stream in &mut slow {
        let took = closed_within(stream, Duration::from_secs(4)).await;
        assert!(took.is_some(), "a slow client was still connected after 4 s");
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(settings_with(&[(
        "HAWKER__SERVER__HEADER_READ_TIMEOUT_SECS",
        "1",
    )]))
    .await;
    let mut stream = connect_from(9, app.addr.port()).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Kept alive, then silent: closed after about a second.
    let took = closed_within(&mut stream, Duration::from_secs(4)).await;
    assert!(took.is_some_and(|t| t < Duration::from_millis(2500)), "{took:?}");
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_connection_cap() {
    let app = spawn_app_with(settings_with(&[("HAWKER__SERVER__MAX_CONNECTIONS_PER_IP", "3")])).await;
    let port = app.addr.port();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(20, port).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The fourth from the same address is closed at once…
    let mut fourth = connect_from(20, port).await;
    assert!(closed_within(&mut fourth, Duration::from_secs(2)).await.is_some());
    // …another address is served…
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 21]))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/healthz");
    assert_eq!(other.get(&url).send().await.unwrap().status(), 200);
    // …and once one closes, the address may connect again.
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 20]))
        .build()
        .unwrap();
    assert_eq!(again.get(&url).send().await.unwrap().status(), 200);
}
