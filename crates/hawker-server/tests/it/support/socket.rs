//! A WebSocket test client speaking hawker's protocol: connect with a token
//! (and a resume position), send commands, read frames until one is wanted.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

/// How long `expect`, `next_event` and `call` wait for their frame.
const REPLY_WITHIN: Duration = Duration::from_secs(15);

pub struct Ws {
    pub stream: WebSocketStream<TcpStream>,
    next_id: u64,
    /// The last room position seen: `epoch`, `offset`.
    pub epoch: String,
    pub offset: u64,
}

/// How a socket ended.
#[derive(Debug, PartialEq)]
pub enum Ended {
    Closed(Option<u16>),
    Eof,
}

pub async fn connect(addr: SocketAddr, session: Uuid, token: &str, resume: Option<(&str, u64)>) -> Ws {
    try_connect(addr, session, token, resume, None)
        .await
        .expect("socket opens")
}

/// Connects (without resuming) and waits for the welcome.
pub async fn join(addr: SocketAddr, session: Uuid, token: &str) -> Ws {
    let mut ws = connect(addr, session, token, None).await;
    ws.expect("welcome").await;
    ws
}

/// Connects; `recv_buffer` shrinks the client's TCP receive buffer (slow-reader tests).
pub async fn try_connect(
    addr: SocketAddr,
    session: Uuid,
    token: &str,
    resume: Option<(&str, u64)>,
    recv_buffer: Option<u32>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let query = resume.map(|(epoch, offset)| format!("resume={epoch}:{offset}"));
    try_connect_with(addr, session, token, query.as_deref(), recv_buffer).await
}

/// Connects with `query` (e.g. `notices_after=7`) added to the URL.
pub async fn try_connect_with(
    addr: SocketAddr,
    session: Uuid,
    token: &str,
    query: Option<&str>,
    recv_buffer: Option<u32>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    open(socket, addr, session, token, query, None).await
}

/// Connects from the source address `local` (a 127.0.0.x) with an
/// `X-Forwarded-For` header, as a client or a proxy would.
pub async fn try_connect_from(
    addr: SocketAddr,
    session: Uuid,
    token: &str,
    local: std::net::IpAddr,
    forwarded_for: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(local, 0))?;
    open(socket, addr, session, token, None, forwarded_for).await
}

async fn open(
    socket: TcpSocket,
    addr: SocketAddr,
    session: Uuid,
    token: &str,
    query: Option<&str>,
    forwarded_for: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut url = format!("ws://{addr}/v1/sessions/{session}/ws?access_token={token}");
    if let Some(query) = query {
        url.push('&');
        url.push_str(query);
    }
    let tcp = socket.connect(addr).await?;
    let mut request = url.into_client_request()?;
    if let Some(value) = forwarded_for {
        request
            .headers_mut()
            .insert("x-forwarded-for", value.parse().expect("a header value"));
    }
    let (stream, _) = tokio_tungstenite::client_async(request, tcp).await?;
    Ok(Ws {
        stream,
        next_id: 1,
        epoch: String::new(),
        offset: 0,
    })
}

impl Ws {
    /// The next text frame as JSON (tracking the room position), or how the socket ended.
    pub async fn next(&mut self, within: Duration) -> Result<Value, Ended> {
        match self.try_next(within).await {
            Some(result) => result,
            None => panic!("no frame within {within:?}"),
        }
    }

    /// Like `next`, but `None` when nothing arrives in time.
    pub async fn try_next(&mut self, within: Duration) -> Option<Result<Value, Ended>> {
        Some(loop {
            let message = match tokio::time::timeout(within, self.stream.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(_))) | Ok(None) => break Err(Ended::Eof),
                Err(_) => return None,
            };
            match message {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(&text).expect("frames are JSON");
                    if let Some(epoch) = value["epoch"].as_str() {
                        self.epoch = epoch.to_string();
                    }
                    if let Some(offset) = value["offset"].as_u64() {
                        if value["type"] != "resumed" || offset > self.offset {
                            self.offset = offset;
                        }
                    }
                    break Ok(value);
                }
                Message::Close(frame) => break Err(Ended::Closed(frame.map(|f: CloseFrame| f.code.into()))),
                _ => continue,
            }
        })
    }

    /// The next frame, which must exist.
    pub async fn frame(&mut self) -> Value {
        self.next(Duration::from_secs(10)).await.expect("socket is open")
    }

    /// The next frame for which `wanted` holds, skipping others; panics
    /// with "no {what} within …" when none comes within `within`.
    pub async fn until(&mut self, what: &str, within: Duration, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(!left.is_zero(), "no {what} within {within:?}");
            // Patient for the whole of `within`, however long between frames.
            let frame = match self.try_next(left).await {
                Some(Ok(frame)) => frame,
                Some(Err(ended)) => panic!("the socket ended ({ended:?}) before {what}"),
                None => panic!("no {what} within {within:?}"),
            };
            if wanted(&frame) {
                return frame;
            }
        }
    }

    /// The next frame of `kind`, skipping others (likes, viewers, presence...),
    /// within 15 seconds.
    pub async fn expect(&mut self, kind: &str) -> Value {
        self.until(&format!("`{kind}` frame"), REPLY_WITHIN, |frame| {
            frame["type"] == kind
        })
        .await
    }

    /// The next `n` frames of `kind`, in order, skipping others.
    pub async fn expect_many(&mut self, kind: &str, n: usize) -> Vec<Value> {
        let mut frames = Vec::with_capacity(n);
        while frames.len() < n {
            frames.push(self.expect(kind).await);
        }
        frames
    }

    /// The next frame that is not a running total or presence notice.
    pub async fn next_event(&mut self) -> Value {
        self.until("room event", REPLY_WITHIN, |frame| {
            let kind = frame["type"].as_str().unwrap_or_default();
            !matches!(kind, "likes" | "viewers" | "presence.joined" | "presence.left")
        })
        .await
    }

    /// Every frame that arrives during `window` (fewer if the socket ends).
    pub async fn frames_for(&mut self, window: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + window;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return frames;
            }
            match self.try_next(left).await {
                Some(Ok(frame)) => frames.push(frame),
                Some(Err(_)) | None => return frames,
            }
        }
    }

    pub async fn send_raw(&mut self, text: String) {
        self.stream.send(Message::Text(text.into())).await.expect("send");
    }

    /// Sends a command and returns its request id.
    pub async fn send(&mut self, kind: &str, data: Value) -> String {
        let id = format!("r{}", self.next_id);
        self.next_id += 1;
        self.send_raw(json!({"id": id, "type": kind, "data": data}).to_string())
            .await;
        id
    }

    /// Sends a command and waits for its ack or error, skipping room events.
    pub async fn call(&mut self, kind: &str, data: Value) -> Value {
        let id = self.send(kind, data).await;
        self.until(&format!("reply to `{kind}`"), REPLY_WITHIN, |frame| {
            frame["id"] == id.as_str() && (frame["type"] == "ack" || frame["type"] == "error")
        })
        .await
    }

    /// Reads until the socket closes, returning the close code.
    pub async fn closed(&mut self, within: Duration) -> Ended {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_next(left.max(Duration::from_millis(1))).await {
                Some(Ok(_)) => continue,
                Some(Err(ended)) => return ended,
                None => panic!("the socket did not close within {within:?}"),
            }
        }
    }
}
