//! The HTTP server loop of the public listener: hyper with a timer, so a
//! client must send its request headers within `server.header_read_timeout_secs`
//! — the first request's and, on a kept-alive connection, every next one's —
//! or lose the connection. `axum::serve` builds hyper without a timer: a
//! silent socket (slowloris) there holds a connection slot forever.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;

use crate::listener::LimitedListener;

/// Serves `app` on `listener` until `stop` resolves, then waits for the
/// connections being served to finish their requests (the caller bounds
/// that wait). Each request carries the peer's address as
/// [`ConnectInfo<SocketAddr>`] and the client's as
/// [`ClientIp`](crate::client_ip::ClientIp): the peer's, or behind one of
/// the `trusted` proxies, the one `X-Forwarded-For` gives. They are set here,
/// before the router, so the request's span already names the client.
pub async fn serve(
    mut listener: LimitedListener,
    app: Router,
    trusted: Arc<[IpAddr]>,
    header_read_timeout: Duration,
    stop: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    // CONNECT protocol: WebSockets over HTTP/2.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(header_read_timeout)
        .keep_alive_timeout(header_read_timeout)
        .enable_connect_protocol();
    let graceful = GracefulShutdown::new();
    let serve_one = |stream, peer: SocketAddr| {
        let trusted = trusted.clone();
        let service = app.clone().map_request(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            let client = crate::client_ip::client_ip(peer.ip(), request.headers(), &trusted);
            request.extensions_mut().insert(ConnectInfo(peer));
            request
                .extensions_mut()
                .insert(crate::client_ip::ClientIp(client));
            request
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::trace!(error = %e, %peer, "connection ended with an error");
            }
        });
    };
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => break,
        };
        serve_one(stream, peer);
    }
    // Connections the kernel already completed (in the listen backlog) would
    // be reset when the listener closes, with their clients' requests
    // possibly sent: accept and serve them first.
    let started = tokio::time::Instant::now();
    while started.elapsed() < BACKLOG_SWEEP {
        match tokio::time::timeout(Duration::from_millis(2), listener.accept()).await {
            Ok((stream, peer)) => serve_one(stream, peer),
            Err(_) => break,
        }
    }
    drop(listener);
    // A connection accepted a moment ago may not have read its first request
    // yet; closing it as idle now would reset that request.
    tokio::time::sleep(LAST_REQUESTS).await;
    graceful.shutdown().await;
}

/// The longest the listener spends accepting its backlog after the drain.
const BACKLOG_SWEEP: Duration = Duration::from_millis(50);

/// How long, after the listener closed, connections have to send the request
/// they were opened for before idle ones are closed.
pub const LAST_REQUESTS: Duration = Duration::from_millis(200);

/// The peer address type the public router sees.
pub type Peer = ConnectInfo<SocketAddr>;
