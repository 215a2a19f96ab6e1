//! The public listener: its accept queue is as deep as configured (tokio's
//! default, 128, made bursts of new connections wait for SYN retransmits),
//! slow or idle clients are cut off by the header-read timeout, and one
//! address cannot hold every connection slot; behind a trusted proxy the
//! client address comes from `X-Forwarded-For`, from nobody else.

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

/// What opening a socket from `local` with `forwarded_for` gets: 101 when it
/// opened (the socket is kept in `held`), the HTTP status when it was
/// refused, 0 when the connection was closed without an answer.
async fn open_socket(
    app: &crate::support::TestApp,
    session: uuid::Uuid,
    user: &str,
    local: [u8; 4],
    forwarded_for: Option<&str>,
    held: &mut Vec<crate::support::socket::Ws>,
) -> u16 {
    let token = app.token(user, hawker_core::Role::Viewer);
    let opened = crate::support::socket::try_connect_from(
        app.addr,
        session,
        &token,
        std::net::IpAddr::from(local),
        forwarded_for,
    )
    .await;
    match opened {
        Ok(ws) => {
            held.push(ws);
            101
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// A node capping each address at 2, with 127.0.0.60 as its trusted proxy.
async fn node_behind_a_proxy() -> (crate::support::TestApp, uuid::Uuid) {
    let mut settings = settings_with(&[("HAWKER__SERVER__MAX_CONNECTIONS_PER_IP", "2")]);
    settings.server.trusted_proxies = vec![std::net::IpAddr::from([127, 0, 0, 60])];
    let app = spawn_app_with(settings).await;
    let (_agency, session) = crate::support::fixtures::insert_agency_and_session(&app.db).await;
    (app, session)
}

#[tokio::test]
async fn a_forged_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let (app, session) = node_behind_a_proxy().await;
    let mut held = Vec::new();
    // The attacker, not a proxy, claims to be the victim (127.0.0.31) and a
    // fresh address on every socket.
    for (i, forged) in ["127.0.0.31", "198.51.100.1", "127.0.0.31, 198.51.100.2"]
        .iter()
        .enumerate()
    {
        let answer = open_socket(
            &app,
            session,
            &format!("a{i}"),
            [127, 0, 0, 30],
            Some(forged),
            &mut held,
        )
        .await;
        let wanted: &[u16] = if i < 2 { &[101] } else { &[0, 429] };
        assert!(wanted.contains(&answer), "socket {i} ({forged}): {answer}");
    }
    // The attacker's two sockets counted against its own address, not the victim's.
    for i in 0..2 {
        let answer = open_socket(&app, session, &format!("v{i}"), [127, 0, 0, 31], None, &mut held).await;
        assert_eq!(answer, 101, "victim socket {i}");
    }
}

#[tokio::test]
async fn a_trusted_proxys_forwarded_for_names_the_client_for_the_socket_cap() {
    let (app, session) = node_behind_a_proxy().await;
    let proxy = [127, 0, 0, 60];
    let mut held = Vec::new();
    // Two sockets of client 203.0.113.7 through the proxy (whose own TCP
    // connections are exempt from the cap of 2).
    for i in 0..2 {
        let answer = open_socket(
            &app,
            session,
            &format!("c{i}"),
            proxy,
            Some("203.0.113.7"),
            &mut held,
        )
        .await;
        assert_eq!(answer, 101, "socket {i}");
    }
    // A third is refused, also when the client prepends forged hops: the
    // right-most untrusted hop is what counts.
    for chain in [
        "203.0.113.7",
        "198.51.100.9, 203.0.113.7",
        "127.0.0.60, 203.0.113.7, 127.0.0.60",
    ] {
        let answer = open_socket(&app, session, "c-more", proxy, Some(chain), &mut held).await;
        assert_eq!(answer, 429, "{chain}");
    }
    // Other clients of the same proxy are not affected.
    for i in 0..2 {
        let answer = open_socket(
            &app,
            session,
            &format!("d{i}"),
            proxy,
            Some("203.0.113.8"),
            &mut held,
        )
        .await;
        assert_eq!(answer, 101, "other client {i}");
    }
    assert_eq!(held.len(), 4);
    // Once one of 203.0.113.7's sockets closes, it may open another.
    let first = held.remove(0);
    drop(first);
    let mut reopened = 0;
    for _ in 0..50 {
        reopened = open_socket(&app, session, "c-again", proxy, Some("203.0.113.7"), &mut held).await;
        if reopened == 101 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reopened, 101);
}
