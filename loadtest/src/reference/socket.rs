//! One room socket of the reference server: the handshake (the path names
//! the room; the token is not checked), the greeting, then one task that
//! waits for either the room's next frame or the client's next message.
//!
//! Writes are hawker's: `feed` every frame already waiting, then one
//! `flush` per drain, so a burst costs one write call per socket, not one
//! per frame.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio_tungstenite::tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{StatusCode, Uri};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

use super::admin::Counters;
use super::room::{Room, Rooms};

/// hawker's close code for a socket that did not read fast enough.
const CLOSE_SLOW: u16 = 4008;

/// Longest event text, as hawker's host text (characters).
const MAX_TEXT_CHARS: usize = 1000;

type Ws = WebSocketStream<TcpStream>;

/// A small read buffer (viewers send next to nothing), hawker's 8 KiB write
/// buffer, and small frames: input is a command of a few hundred bytes.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(8 * 1024)
        .max_message_size(Some(16 * 1024))
        .max_frame_size(Some(16 * 1024))
}

/// Serves one accepted connection until it closes.
pub async fn serve(stream: TcpStream, rooms: Arc<Rooms>, counters: Arc<Counters>) {
    let _ = stream.set_nodelay(true);
    let mut target = None;
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, Check(&mut target), Some(config()));
    let Ok(Ok(mut ws)) = tokio::time::timeout(Duration::from_secs(10), handshake).await else {
        return;
    };
    let Some(target) = target else { return };
    let Some(room) = rooms.get(target.session) else {
        close(&mut ws, CloseCode::Again, "too many rooms").await;
        return;
    };
    let (offset, receiver) = room.join();
    // Without history a resume is always a reset; the generator counts those.
    let kind = if target.resume { "reset" } else { "welcome" };
    let greeting = json!({ "type": kind, "epoch": room.epoch(), "offset": offset });
    if ws.send(Message::text(greeting.to_string())).await.is_err() {
        return;
    }
    counters.sockets.fetch_add(1, Ordering::Relaxed);
    match pump(&mut ws, &room, receiver, &counters).await {
        End::Slow => close(&mut ws, CloseCode::from(CLOSE_SLOW), "too slow").await,
        // tungstenite queued the reply to the client's close: send it.
        End::Closed => {
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.flush()).await;
        }
        End::Gone => {}
    }
    counters.sockets.fetch_sub(1, Ordering::Relaxed);
}

/// Why a socket's loop ended.
enum End {
    /// The client closed.
    Closed,
    /// The connection broke.
    Gone,
    /// The socket fell a whole ring behind.
    Slow,
}

async fn pump(
    ws: &mut Ws,
    room: &Room,
    mut frames: broadcast::Receiver<Utf8Bytes>,
    counters: &Counters,
) -> End {
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Ok(frame) => match write_drain(ws, &mut frames, frame).await {
                    Ok(written) => {
                        counters.events_out.fetch_add(written, Ordering::Relaxed);
                    }
                    Err(end) => return end,
                },
                Err(RecvError::Lagged(_)) => return End::Slow,
                Err(RecvError::Closed) => return End::Gone,
            },
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let reply = command(room, text.as_str());
                    if ws.send(Message::text(reply)).await.is_err() {
                        return End::Gone;
                    }
                }
                // Pings are answered by tungstenite on the next write or flush.
                Some(Ok(Message::Close(_))) => return End::Closed,
                Some(Err(_)) | None => return End::Gone,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Feeds `first` and every frame already waiting, then flushes once;
/// returns how many frames went out.
async fn write_drain(
    ws: &mut Ws,
    frames: &mut broadcast::Receiver<Utf8Bytes>,
    first: Utf8Bytes,
) -> Result<u64, End> {
    let mut written = 1;
    ws.feed(Message::Text(first)).await.map_err(|_| End::Gone)?;
    loop {
        match frames.try_recv() {
            Ok(frame) => {
                ws.feed(Message::Text(frame)).await.map_err(|_| End::Gone)?;
                written += 1;
            }
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            Err(TryRecvError::Lagged(_)) => return Err(End::Slow),
        }
    }
    ws.flush().await.map_err(|_| End::Gone)?;
    Ok(written)
}

/// A client command as hawker reads it: `{"id", "type", "data": {"text"}}`.
#[derive(Deserialize)]
struct Command {
    #[serde(default)]
    id: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Data,
}

#[derive(Default, Deserialize)]
struct Data {
    #[serde(default)]
    text: Option<String>,
}

/// Carries out a command and returns the reply: `ack` with the event's
/// offset, or `error`. Only what the generator sends is known.
fn command(room: &Room, text: &str) -> String {
    let Ok(command) = serde_json::from_str::<Command>(text) else {
        return error(None, "bad_json", "a command is {\"id\", \"type\", \"data\"}");
    };
    let id = command.id.as_deref();
    let event_type = match command.kind.as_str() {
        "host.announce" => "host.announcement",
        "chat.send" => "chat",
        _ => {
            return error(
                id,
                "unknown_type",
                "the reference server knows host.announce and chat.send",
            )
        }
    };
    let text = command.data.text.as_deref().map(str::trim).unwrap_or("");
    if text.is_empty() || text.chars().count() > MAX_TEXT_CHARS {
        return error(id, "bad_request", "`text`: 1 to 1000 characters");
    }
    let offset = room.publish(event_type, text);
    json!({ "type": "ack", "id": id, "data": { "offset": offset } }).to_string()
}

fn error(id: Option<&str>, code: &str, message: &str) -> String {
    json!({ "type": "error", "id": id, "code": code, "message": message }).to_string()
}

/// What the upgrade request asks for.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    session: Uuid,
    /// `resume=epoch:offset` was given.
    resume: bool,
}

impl Target {
    /// `/v1/sessions/{session}/ws?access_token=…[&resume=…]`; `None` for any other path.
    fn parse(uri: &Uri) -> Option<Target> {
        let session = uri
            .path()
            .strip_prefix("/v1/sessions/")?
            .strip_suffix("/ws")?
            .parse()
            .ok()?;
        let resume = uri
            .query()
            .is_some_and(|q| q.split('&').any(|pair| pair.starts_with("resume=")));
        Some(Target { session, resume })
    }
}

/// The handshake's look at the request: a room socket's path, or 404.
struct Check<'a>(&'a mut Option<Target>);

impl Callback for Check<'_> {
    fn on_request(self, request: &Request, response: Response) -> Result<Response, ErrorResponse> {
        *self.0 = Target::parse(request.uri());
        if self.0.is_some() {
            return Ok(response);
        }
        let mut refusal = ErrorResponse::new(Some("not a room socket: /v1/sessions/{session}/ws".into()));
        *refusal.status_mut() = StatusCode::NOT_FOUND;
        Err(refusal)
    }
}

async fn close(ws: &mut Ws, code: CloseCode, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(Some(frame))).await;
}

#[cfg(test)]
mod tests {
    use super::super::room::RING_FRAMES_MAX;
    use super::*;

    #[test]
    fn only_room_socket_paths_are_accepted() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        let session = Uuid::new_v4();
        assert_eq!(
            Target::parse(&uri(&format!("/v1/sessions/{session}/ws?access_token=x"))),
            Some(Target {
                session,
                resume: false
            })
        );
        assert_eq!(
            Target::parse(&uri(&format!(
                "/v1/sessions/{session}/ws?access_token=x&resume=e:4"
            ))),
            Some(Target {
                session,
                resume: true
            })
        );
        assert_eq!(Target::parse(&uri("/v1/sessions/nope/ws")), None);
        assert_eq!(Target::parse(&uri(&format!("/v1/sessions/{session}"))), None);
        assert_eq!(Target::parse(&uri("/")), None);
    }

    #[test]
    fn commands_publish_and_are_acked_or_refused() {
        let rooms = Rooms::new(RING_FRAMES_MAX);
        let room = rooms.get(Uuid::new_v4()).unwrap();
        let (_, mut frames) = room.join();
        let ack: serde_json::Value = serde_json::from_str(&command(
            &room,
            r#"{"id":"h0","type":"host.announce","data":{"text":"hello"}}"#,
        ))
        .unwrap();
        assert_eq!(
            (ack["type"].as_str(), ack["id"].as_str()),
            (Some("ack"), Some("h0"))
        );
        assert_eq!(ack["data"]["offset"], 1);
        let frame = frames.try_recv().unwrap();
        assert!(frame.as_str().contains("\"type\":\"host.announcement\""));
        for (input, code) in [
            ("not json", "bad_json"),
            (r#"{"id":"x","type":"deal.buy","data":{}}"#, "unknown_type"),
            (
                r#"{"id":"c1","type":"chat.send","data":{"text":"  "}}"#,
                "bad_request",
            ),
            (r#"{"id":"c1","type":"chat.send","data":7}"#, "bad_json"),
        ] {
            let reply: serde_json::Value = serde_json::from_str(&command(&room, input)).unwrap();
            assert_eq!(reply["code"], code, "{input}");
        }
        assert!(frames.try_recv().is_err(), "refused commands publish nothing");
    }
}
