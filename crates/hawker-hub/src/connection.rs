//! One WebSocket connection: join the room, then one task that `select!`s
//! between its send queue, the socket, a ping timer and shutdown.
//!
//! - Socket → command → publish: `Connection::pump` reads a text frame,
//!   `Connection::command` reads it into a [`Command`] and applies it
//!   (see [`crate::commands`]; most commands publish through the hub), and
//!   the reply is queued like any frame.
//! - Room → socket: the room task ([`crate::room`]) pushes each event into
//!   this connection's [`SendQueue`]; `Connection::write` drains it into
//!   the socket, one flush per batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use futures_util::SinkExt;
use serde_json::json;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::commands::{self, Ack, Command, CommandError, CommerceCommands, Context, Rights};
use crate::event::{now_ms, Frame, Publication};
use crate::hub::{Hub, Member, SocketPermit};
use crate::protocol::{self, close_code, ClientCommand};
use crate::room::{ClientEntry, JoinOutcome, RoomHandle, RoomInput};
use crate::send_queue::{CloseReason, SendQueue};

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// Applies the hub's socket limits (buffers, frame sizes) to an upgrade.
pub fn configure(upgrade: WebSocketUpgrade, hub: &Hub) -> WebSocketUpgrade {
    let config = hub.config();
    upgrade
        .read_buffer_size(config.read_buffer_bytes)
        .write_buffer_size(config.write_buffer_bytes)
        .max_write_buffer_size(
            config.send_queue_max_bytes.max(config.write_buffer_bytes * 2) + config.hard_max_frame_bytes,
        )
        .max_message_size(config.hard_max_frame_bytes)
        .max_frame_size(config.hard_max_frame_bytes)
}

impl Hub {
    /// Serves an upgraded socket in `room` until it closes; the caller
    /// tracks the future, so shutdown waits for it (and closes it with
    /// 1001). `commerce` carries out `deal.buy` and `coupon.claim`; the
    /// connection holds it only while the socket is open.
    pub async fn serve(
        self,
        socket: WebSocket,
        room: Uuid,
        member: Member,
        resume: Option<(String, u64)>,
        permit: SocketPermit,
        commerce: Arc<dyn CommerceCommands>,
    ) {
        let connection = Connection::new(self, room, member, commerce);
        connection.run(socket, resume).await;
        drop(permit);
    }
}

struct Connection {
    hub: Hub,
    room_id: Uuid,
    member: Member,
    /// Frames waiting to be written; the room task pushes, this task drains.
    queue: Arc<SendQueue>,
    commerce: Arc<dyn CommerceCommands>,
    client_id: u64,
    last_seen: Instant,
    batch: Vec<Arc<Frame>>,
}

impl Connection {
    fn new(hub: Hub, room_id: Uuid, member: Member, commerce: Arc<dyn CommerceCommands>) -> Self {
        let queue = Arc::new(SendQueue::new(hub.config().send_queue_max_bytes));
        let batch = Vec::with_capacity(hub.config().write_batch);
        Connection {
            hub,
            room_id,
            member,
            queue,
            commerce,
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
            queue: self.queue.clone(),
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
                let frame = protocol::refusal(None, &CommandError::Banned);
                let _ = socket.send(Message::Text(frame.into())).await;
                close(&mut socket, close_code::BANNED, "banned").await;
                return;
            }
            JoinOutcome::Unavailable => {
                let refusal = CommandError::Unavailable("the room is unavailable; retry shortly".into());
                let frame = protocol::refusal(None, &refusal);
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
                _ = self.queue.ready() => {
                    if let Err(reason) = self.write(socket).await {
                        return reason;
                    }
                }
                message = socket.recv() => {
                    self.last_seen = Instant::now();
                    match message {
                        Some(Ok(Message::Text(text))) => {
                            let reply = self.command(room, text.as_str()).await;
                            let _ = self.queue.push(&Frame::control(reply), None, false);
                        }
                        Some(Ok(Message::Binary(_))) => {
                            let reply = protocol::refusal(None, &CommandError::BinaryUnsupported);
                            let _ = self.queue.push(&Frame::control(reply), None, false);
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

    /// Drains the send queue into the socket: `feed` each frame, one `flush`
    /// per batch. A write that blocks (the peer stopped reading) is abandoned
    /// when the queue asks to close.
    async fn write(&mut self, socket: &mut WebSocket) -> Result<(), Option<(u16, &'static str)>> {
        let batch_size = self.hub.config().write_batch;
        loop {
            self.batch.clear();
            if let Some(reason) = self.queue.drain(batch_size, &mut self.batch) {
                return Err(Some(close_for(reason)));
            }
            if self.batch.is_empty() {
                return Ok(());
            }
            let queue = self.queue.clone();
            let batch = &self.batch;
            let shutdown = self.hub.shutdown_token().clone();
            let written = tokio::select! {
                result = write_batch(socket, batch) => result,
                reason = closing(&queue) => return Err(Some(close_for(reason))),
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

    /// Handles one client text frame: read it into a [`Command`], apply it
    /// (which publishes, or calls commerce), and return the reply to queue.
    async fn command(&self, room: &RoomHandle, text: &str) -> String {
        let frame = match commands::read_frame(text, self.hub.config().max_frame_bytes) {
            Ok(frame) => frame,
            Err(e) => return protocol::refusal(None, &e),
        };
        let id = frame.id.as_deref();
        match self.execute(room, &frame).await {
            Ok(ack) => protocol::ack(id, ack.into_data()),
            Err(e) => protocol::refusal(id, &e),
        }
    }

    async fn execute(&self, room: &RoomHandle, frame: &ClientCommand) -> Result<Ack, CommandError> {
        // A moderator appointed by `mod.grant` may moderate from the next
        // command on: the room's moderation state says so.
        let rights = Rights {
            host: self.member.can_host,
            moderate: self.member.can_moderate || room.shared.moderation().is_moderator(&self.member.user),
        };
        let command = Command::parse(&frame.kind, &frame.data, rights, self.hub.config())?;
        let ctx = Context {
            hub: &self.hub,
            room,
            member: &self.member,
            request_id: frame.id.as_deref(),
            commerce: self.commerce.as_ref(),
        };
        command.apply(&ctx).await
    }

    /// Announces a join or leave, in small rooms only (`hub.presence_below`).
    async fn presence(&self, room: &RoomHandle, kind: &str) {
        let total = room.shared.viewers_total.load(Ordering::Relaxed) as usize;
        let local = room.shared.local_viewers.load(Ordering::Relaxed);
        if total.max(local) < self.hub.config().presence_below {
            let publication = Publication::new(kind, json!({ "user": self.member.user }));
            let _ = self.hub.publish(self.room_id, publication).await;
        }
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

/// Resolves when the send queue asks the connection to close.
async fn closing(queue: &SendQueue) -> CloseReason {
    loop {
        if let Some(reason) = queue.close_reason() {
            return reason;
        }
        queue.ready().await;
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
