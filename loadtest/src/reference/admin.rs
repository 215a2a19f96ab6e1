//! The reference server's admin listener, what the generator polls: `/readyz`
//! (a spawned node is used once it answers 200) and `/metrics`, with
//! hawker's names for the sockets open and the frames written, so the
//! report's "server frames out" line reads the same for both servers.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What `/metrics` shows.
#[derive(Debug, Default)]
pub struct Counters {
    /// Room sockets open now.
    pub sockets: AtomicI64,
    /// Frames written to room sockets (room events, not greetings or replies).
    pub events_out: AtomicU64,
}

/// Answers each connection with one response, then closes it (HTTP/1.0).
pub async fn serve(listener: TcpListener, counters: Arc<Counters>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream, counters.clone()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn answer(mut stream: TcpStream, counters: Arc<Counters>) {
    // The request line is all that matters; it fits in the first read.
    let mut head = [0u8; 1024];
    let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head)).await else {
        return;
    };
    let (status, body) = route(&head[..n], &counters);
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(response.as_bytes())).await;
}

/// The status line and body for a request that starts with `head`.
fn route(head: &[u8], counters: &Counters) -> (&'static str, String) {
    let line = head.split(|b| *b == b'\r' || *b == b'\n').next().unwrap_or(&[]);
    let mut words = line.split(|b| *b == b' ');
    match (words.next(), words.next()) {
        (Some(b"GET"), Some(b"/readyz")) => ("200 OK", "ready\n".to_string()),
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            format!(
                "# the hawker-loadtest reference server\n\
                 hawker_hub_sockets {}\n\
                 hawker_hub_events_out_total {}\n",
                counters.sockets.load(Ordering::Relaxed),
                counters.events_out.load(Ordering::Relaxed)
            ),
        ),
        _ => ("404 Not Found", "not found\n".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::counters::HubCounters;

    #[test]
    fn readiness_and_counters_are_served_in_hawkers_names() {
        let counters = Counters::default();
        counters.sockets.store(3, Ordering::Relaxed);
        counters.events_out.store(1500, Ordering::Relaxed);
        assert_eq!(
            route(b"GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n", &counters).0,
            "200 OK"
        );
        let (status, body) = route(b"GET /metrics HTTP/1.0\r\n\r\n", &counters);
        assert_eq!(status, "200 OK");
        let parsed = HubCounters::parse(&body);
        assert_eq!((parsed.sockets, parsed.events_out), (3.0, 1500.0));
        assert_eq!(
            route(b"POST /readyz HTTP/1.0\r\n\r\n", &counters).0,
            "404 Not Found"
        );
        assert_eq!(route(b"", &counters).0, "404 Not Found");
    }
}
