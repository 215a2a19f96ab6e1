//! One WebSocket connection: join the room, then one task that `select!`s
//! between the outbox (write with one flush per batch), the socket (client
//! commands), a ping timer and shutdown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::event::{now_ms, Frame, Publication};
use crate::hub::{CommandContext, Hub, Member, SocketPermit};
use crate::outbox::{CloseReason, Outbox};
use crate::protocol::{self, close_code, ClientCommand};
use crate::room::{ClientEntry, JoinOutcome, RoomHandle, RoomInput};
use crate::store::ModChange;

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// Applies the hub's socket limits (buffers, frame sizes) to an upgrade.
pub fn configure(upgrade: WebSocketUpgrade, hub: &Hub) -> WebSocketUpgrade {
    let config = hub.config();
    upgrade
        .read_buffer_size(config.read_buffer_bytes)
        .write_buffer_size(config.write_buffer_bytes)
        .max_write_buffer_size(
            config.outbox_max_bytes.max(config.write_buffer_bytes * 2) + config.hard_max_frame_bytes,
        )
        .max_message_size(config.hard_max_frame_bytes)
        .max_frame_size(config.hard_max_frame_bytes)
}

impl Hub {
    /// Serves an upgraded socket in `room` until it closes. Tracked, so
    /// shutdown waits for it (and closes it with 1001).
    pub async fn serve(
        self,
        socket: WebSocket,
        room: Uuid,
        member: Member,
        resume: Option<(String, u64)>,
        permit: SocketPermit,
    ) {
        let connection = Connection::new(self, room, member);
        connection.run(socket, resume).await;
        drop(permit);
    }
}

struct Connection {
    hub: Hub,
    room_id: Uuid,
    member: Member,
    outbox: Arc<Outbox>,
    client_id: u64,
    last_seen: Instant,
    batch: Vec<Arc<Frame>>,
}

impl Connection {
    fn new(hub: Hub, room_id: Uuid, member: Member) -> Self {
        let outbox = Arc::new(Outbox::new(hub.config().outbox_max_bytes));
        let batch = Vec::with_capacity(hub.config().write_batch);
        Connection {
            hub,
            room_id,
            member,
            outbox,
            client_id: NEXT_CLIENT.fetch_add(1, Ordering::Relaxed),
            last_seen: Instant::now(),
            batch,
        }
    }

    #[tracing::instrument(name = "socket", skip_all, fields(room = %self.room_id, user = %self.member.user))]
    async fn run(mut self, mut socket: WebSocket, resume: Option<(String, u64)>) {
        let you = json!({ "user": self.member.user, "role": self.member.role, "can_host": self.member.can_host,
                          "can_moderate": self.member.can_moderate });
        let entry = Arc::new(ClientEntry {
            id: self.client_id,
            user: self.member.user.clone(),
            outbox: self.outbox.clone(),
            you,
        });
        let (reply, joined) = oneshot::channel();
        let room = self.hub.send_to_room(
            self.room_id,
            RoomInput::Join {
                client: entry,
                resume,
                reply,
            },
        );
        match joined.await.unwrap_or(JoinOutcome::Unavailable) {
            JoinOutcome::Joined => {}
            JoinOutcome::Banned => {
                let frame = protocol::error(None, "banned", "you are banned from this room");
                let _ = socket.send(Message::Text(frame.into())).await;
                close(&mut socket, close_code::BANNED, "banned").await;
                return;
            }
            JoinOutcome::Unavailable => {
                let frame = protocol::error(None, "unavailable", "the room is unavailable; retry shortly");
                let _ = socket.send(Message::Text(frame.into())).await;
                close(&mut socket, close_code::UNAVAILABLE, "unavailable").await;
                return;
            }
        }
        self.presence(&room, "presence.joined").await;
        let reason = self.pump(&mut socket, &room).await;
        let _ = room.tx.send(RoomInput::Leave {
            client_id: self.client_id,
        });
        if let Some((code, text)) = reason {
            close(&mut socket, code, text).await;
        }
        self.presence(&room, "presence.left").await;
    }

    /// Runs until the socket ends; returns the close to send, if any.
    async fn pump(&mut self, socket: &mut WebSocket, room: &RoomHandle) -> Option<(u16, &'static str)> {
        let config = self.hub.config().clone();
        let shutdown = self.hub.shutdown_token().clone();
        let mut ping = tokio::time::interval(config.ping_interval());
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Some((close_code::GOING_AWAY, "server shutting down")),
                _ = self.outbox.ready() => {
                    if let Err(reason) = self.write(socket).await {
                        return reason;
                    }
                }
                message = socket.recv() => {
                    self.last_seen = Instant::now();
                    match message {
                        Some(Ok(Message::Text(text))) => {
                            let reply = self.command(room, text.as_str()).await;
                            if let Some(reply) = reply {
                                let _ = self.outbox.push(&Frame::control(reply), None, false);
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            let reply = protocol::error(None, "binary_unsupported", "send JSON text frames");
                            let _ = self.outbox.push(&Frame::control(reply), None, false);
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) | None => return None,
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "socket read failed");
                            let too_big = e.to_string().to_lowercase().contains("too long")
                                || e.to_string().to_lowercase().contains("too big");
                            return too_big.then_some((close_code::TOO_BIG, "frame too large"));
                        }
                    }
                }
                _ = ping.tick() => {
                    if self.last_seen.elapsed() > config.idle_timeout() {
                        return Some((close_code::IDLE, "idle"));
                    }
                    if socket.send(Message::Ping(bytes::Bytes::new())).await.is_err() {
                        return None;
                    }
                }
            }
        }
    }

    /// Drains the outbox into the socket: `feed` each frame, one `flush` per
    /// batch. A write that blocks (the peer stopped reading) is abandoned
    /// when the outbox asks to close.
    async fn write(&mut self, socket: &mut WebSocket) -> Result<(), Option<(u16, &'static str)>> {
        let batch_size = self.hub.config().write_batch;
        loop {
            self.batch.clear();
            if let Some(reason) = self.outbox.drain(batch_size, &mut self.batch) {
                return Err(Some(close_for(reason)));
            }
            if self.batch.is_empty() {
                return Ok(());
            }
            let outbox = self.outbox.clone();
            let batch = &self.batch;
            let shutdown = self.hub.shutdown_token().clone();
            let written = tokio::select! {
                result = write_batch(socket, batch) => result,
                reason = closing(&outbox) => return Err(Some(close_for(reason))),
                // A peer that stopped reading must not hold up shutdown.
                _ = shutdown.cancelled() => return Err(Some(close_for(CloseReason::Shutdown))),
            };
            match written {
                Ok(bytes) => {
                    crate::metrics::delivered(self.batch.len() as u64, bytes);
                    if let Some(first) = self.batch.iter().find(|f| f.ts_ms > 0) {
                        crate::metrics::fanout_latency((now_ms() - first.ts_ms).max(0) as f64 / 1000.0);
                    }
                }
                Err(_) => return Err(None),
            }
        }
    }

    async fn presence(&self, room: &RoomHandle, kind: &str) {
        let total = room.shared.viewers_total.load(Ordering::Relaxed) as usize;
        let local = room.shared.local_viewers.load(Ordering::Relaxed);
        if total.max(local) < self.hub.config().presence_below {
            let publication = Publication::new(kind, json!({ "user": self.member.user }));
            let _ = self.hub.publish(self.room_id, publication).await;
        }
    }

    /// Handles one client frame; returns the reply (ack or error) to queue.
    async fn command(&mut self, room: &RoomHandle, text: &str) -> Option<String> {
        let config = self.hub.config();
        if text.len() > config.max_frame_bytes {
            return Some(protocol::error(
                None,
                "frame_too_large",
                &format!("frames are limited to {} bytes", config.max_frame_bytes),
            ));
        }
        let command: ClientCommand = match serde_json::from_str(text) {
            Ok(c) => c,
            Err(e) => return Some(protocol::error(None, "bad_json", &format!("not a command: {e}"))),
        };
        let id = command.id.as_deref();
        match self.execute(room, &command).await {
            Ok(data) => Some(protocol::ack(id, data)),
            Err((code, message)) => Some(protocol::error(id, &code, &message)),
        }
    }

    async fn execute(
        &mut self,
        room: &RoomHandle,
        command: &ClientCommand,
    ) -> Result<Value, (String, String)> {
        let config = self.hub.config().clone();
        let data = &command.data;
        let user = self.member.user.clone();
        let can_moderate = self.member.can_moderate || room.shared.moderation().is_moderator(&user);
        let publish = |publication: Publication, mods: Vec<ModChange>| {
            let hub = self.hub.clone();
            let room_id = self.room_id;
            async move {
                hub.publish_with(room_id, publication, &mods)
                    .await
                    .map(|offset| json!({ "offset": offset }))
                    .map_err(|e| ("unavailable".to_string(), e.to_string()))
            }
        };
        match command.kind.as_str() {
            "ping" => Ok(json!({ "pong": now_ms() })),
            "chat.send" => {
                let text = text_field(data, "text", config.chat_max_chars)?;
                let admitted = room.shared.moderation().admit_chat(
                    &user,
                    &text,
                    self.member.can_host,
                    config.chat_burst,
                    config.chat_per_sec,
                    Instant::now(),
                );
                if let Err(refusal) = admitted {
                    crate::metrics::chat_dropped(refusal.code(), 1);
                    return Err((refusal.code().to_string(), refusal.message()));
                }
                publish(
                    Publication::new("chat", json!({ "text": text })).from_user(&user),
                    vec![],
                )
                .await
            }
            "like" => {
                let count = data.get("count").and_then(Value::as_u64).unwrap_or(1);
                if !(1..=100).contains(&count) {
                    return Err(bad("count must be 1 to 100"));
                }
                self.hub.add_likes(room, count);
                Ok(Value::Null)
            }
            "host.announce" | "host.message" => {
                require(self.member.can_host, "only the host may do this")?;
                let text = text_field(data, "text", 1000)?;
                let (kind, state) = if command.kind == "host.announce" {
                    ("host.announcement", Some("announcement"))
                } else {
                    ("host.message", None)
                };
                let mut publication = Publication::new(kind, json!({ "text": text })).from_user(&user);
                if let Some(key) = state {
                    publication = publication.set_state(key, json!({ "text": text, "at": now_ms() }));
                }
                publish(publication, vec![]).await
            }
            "host.pin" => {
                require(self.member.can_host, "only the host may pin")?;
                let item = data
                    .get("item")
                    .filter(|v| v.is_object())
                    .ok_or_else(|| bad("`item` must be an object"))?;
                if item.to_string().len() > 2048 {
                    return Err(bad("`item` is limited to 2048 bytes"));
                }
                publish(
                    Publication::new("host.pinned", json!({ "item": item }))
                        .set_state("pinned", item.clone()),
                    vec![],
                )
                .await
            }
            "host.unpin" => {
                require(self.member.can_host, "only the host may unpin")?;
                publish(
                    Publication::new("host.unpinned", json!({})).remove_state("pinned"),
                    vec![],
                )
                .await
            }
            "mod.mute" | "mod.ban" => {
                require(can_moderate, "only the host or a moderator may do this")?;
                let target = user_field(data)?;
                let seconds = data.get("seconds").and_then(Value::as_u64).unwrap_or(600);
                if !(1..=30 * 86_400).contains(&seconds) {
                    return Err(bad("seconds must be 1 to 2592000"));
                }
                let until = now_ms() + (seconds as i64) * 1000;
                let (kind, field) = if command.kind == "mod.ban" {
                    ("moderation.banned", format!("ban:{target}"))
                } else {
                    ("moderation.muted", format!("mute:{target}"))
                };
                let publication =
                    Publication::new(kind, json!({ "user": target, "until": until, "by": user }));
                publish(publication, vec![ModChange::Set(field, until.to_string())]).await
            }
            "mod.unmute" | "mod.unban" => {
                require(can_moderate, "only the host or a moderator may do this")?;
                let target = user_field(data)?;
                let (kind, field) = if command.kind == "mod.unban" {
                    ("moderation.unbanned", format!("ban:{target}"))
                } else {
                    ("moderation.unmuted", format!("mute:{target}"))
                };
                publish(
                    Publication::new(kind, json!({ "user": target, "by": user })),
                    vec![ModChange::Remove(field)],
                )
                .await
            }
            "mod.slow_mode" => {
                require(can_moderate, "only the host or a moderator may do this")?;
                let seconds = data
                    .get("seconds")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad("`seconds` is required"))?;
                if seconds > 3600 {
                    return Err(bad("seconds must be 0 (off) to 3600"));
                }
                let publication = Publication::new("moderation.slow_mode", json!({ "seconds": seconds }))
                    .set_state("slow_mode", json!(seconds));
                publish(
                    publication,
                    vec![ModChange::Set("slow_mode".into(), seconds.to_string())],
                )
                .await
            }
            "mod.blocked_words" => {
                require(can_moderate, "only the host or a moderator may do this")?;
                let words = data
                    .get("words")
                    .and_then(Value::as_array)
                    .ok_or_else(|| bad("`words` must be a list"))?;
                if words.len() > 500
                    || words
                        .iter()
                        .any(|w| !w.as_str().is_some_and(|s| !s.is_empty() && s.len() <= 64))
                {
                    return Err(bad("`words`: up to 500 strings of 1 to 64 bytes"));
                }
                let list = Value::Array(words.clone());
                let publication = Publication::new("internal.blocked_words", json!({ "words": list }));
                publish(
                    publication,
                    vec![ModChange::Set("blocked_words".into(), list.to_string())],
                )
                .await
            }
            "mod.grant" | "mod.revoke" => {
                require(self.member.can_host, "only the host may appoint moderators")?;
                let target = user_field(data)?;
                let field = format!("moderator:{target}");
                let (kind, change) = if command.kind == "mod.grant" {
                    ("internal.moderator_granted", ModChange::Set(field, "1".into()))
                } else {
                    ("internal.moderator_revoked", ModChange::Remove(field))
                };
                publish(Publication::new(kind, json!({ "user": target })), vec![change]).await
            }
            other => {
                let handler = self.hub.handler();
                let ctx = CommandContext {
                    room: self.room_id,
                    member: self.member.clone(),
                    request_id: command.id.clone(),
                };
                let future = handler
                    .as_ref()
                    .and_then(|h| h.handle(ctx, other, command.data.clone()));
                match future {
                    Some(future) => future.await.map_err(|e| (e.code, e.message)),
                    None => Err((
                        "unknown_command".to_string(),
                        format!("unknown command type `{other}`"),
                    )),
                }
            }
        }
    }
}

fn bad(message: &str) -> (String, String) {
    ("bad_command".to_string(), message.to_string())
}

fn require(allowed: bool, message: &str) -> Result<(), (String, String)> {
    if allowed {
        Ok(())
    } else {
        Err(("forbidden".to_string(), message.to_string()))
    }
}

fn text_field(data: &Value, field: &str, max_chars: usize) -> Result<String, (String, String)> {
    let text = data
        .get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or("");
    if text.is_empty() {
        return Err(bad(&format!("`{field}` must be a non-empty string")));
    }
    if text.chars().count() > max_chars {
        return Err((
            "too_long".to_string(),
            format!("`{field}` is limited to {max_chars} characters"),
        ));
    }
    Ok(text.to_string())
}

fn user_field(data: &Value) -> Result<String, (String, String)> {
    match data.get("user").and_then(Value::as_str) {
        Some(u) if !u.is_empty() && u.len() <= 64 => Ok(u.to_string()),
        _ => Err(bad("`user` must be a user id")),
    }
}

fn close_for(reason: CloseReason) -> (u16, &'static str) {
    match reason {
        CloseReason::Slow => (close_code::SLOW, "too slow: resume from your last offset"),
        CloseReason::Banned => (close_code::BANNED, "banned"),
        CloseReason::Shutdown => (close_code::GOING_AWAY, "server shutting down"),
    }
}

async fn write_batch(socket: &mut WebSocket, batch: &[Arc<Frame>]) -> Result<u64, axum::Error> {
    let mut bytes = 0;
    for frame in batch {
        bytes += frame.len() as u64;
        socket.feed(Message::Text(frame.text.clone())).await?;
    }
    socket.flush().await?;
    Ok(bytes)
}

/// Resolves when the outbox asks the connection to close.
async fn closing(outbox: &Outbox) -> CloseReason {
    loop {
        if let Some(reason) = outbox.close_reason() {
            return reason;
        }
        outbox.ready().await;
    }
}

/// Sends a close frame, waiting a bounded time for a peer that reads slowly.
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    // A slow peer gets time to read up to the close frame; others need none.
    let wait = if code == close_code::SLOW {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(2)
    };
    let _ = tokio::time::timeout(wait, socket.send(Message::Close(Some(frame)))).await;
}
