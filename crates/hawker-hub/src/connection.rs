//! One WebSocket connection: join the room, then two loops, each waiting
//! only on what concerns it.
//!
//! - Room → socket: the room task ([`crate::room`]) pushes each event into
//!   this connection's [`SendQueue`]; the `Writer` (the connection's own
//!   task) waits on that queue alone and drains it into the socket, one
//!   flush per batch. A delivery wakes nothing else: no socket read, no
//!   timer, no shutdown check.
//! - Socket → command → publish: the `Reader`, in a task of its own, reads
//!   a text frame into a [`Command`] and applies it (see
//!   [`crate::commands`]; most commands publish through the hub); the
//!   reply is queued like any frame. It also watches the token's expiry,
//!   the host's rights and the node's shutdown, and closes the queue when
//!   it ends, which ends the writer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use std::future::Future;
use std::pin::Pin;

use futures_util::future::Either;
use futures_util::stream::{FuturesOrdered, SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hawker_core::Role;
use serde_json::json;
use tokio::sync::oneshot;
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

use crate::commands::{self, ClientCommand, Command, CommandError, CommerceCommands, Context, Rights, Turn};
use crate::event::{now_ms, Frame, Publication};
use crate::hub::{Hub, Member, SocketPermit};
use crate::notices::router::Inbox;
use crate::protocol::{self, close_code};
use crate::rights::SessionRights;
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
    /// 1001). `commerce` carries out `deal.buy` and `coupon.claim`;
    /// `rights` answers, while the socket is open, whether its user may
    /// still host ([`crate::rights`]). The connection holds both only while
    /// the socket is open. `notices_after` is the last notice id the client
    /// has, if it resumes its notices.
    ///
    /// The socket is split into its halves here, before any future holds
    /// it: a future keeps room for each argument it was given, so a
    /// `WebSocket` passed down through async functions would be held once
    /// per level for the socket's life.
    #[allow(clippy::too_many_arguments)]
    pub fn serve(
        self,
        socket: WebSocket,
        room: Uuid,
        member: Member,
        resume: Option<(String, u64)>,
        notices_after: Option<i64>,
        permit: SocketPermit,
        commerce: Arc<dyn CommerceCommands>,
        rights: Arc<dyn SessionRights>,
    ) -> impl Future<Output = ()> + Send + 'static {
        // No span per socket: at 10,000 sockets the spans' records and
        // their formatted fields would cost hundreds of bytes each, and
        // every delivery would enter one. The few lines logged here carry
        // the room and the user as fields instead.
        // A socket that may host runs on the command thread
        // (`hub.command_thread`, [`crate::ingest`]), its reader and its
        // writer both: a host's frame is read, published and answered there
        // while the node's runtime is busy with viewers. (Its writer too:
        // a task woken from another thread joins the node's injection
        // queue, behind the writers that overflowed a full run queue.)
        let own_thread = self.config().command_thread && member.can_host;
        let connection = Connection::new(self, room, member, permit, commerce, rights);
        let (sink, stream) = socket.split();
        let run = connection.run(sink, stream, resume, notices_after);
        // Either, not one `async` block with both branches: that block
        // would keep `run` twice (as captured, and as awaited), about 2 KB
        // more per idle viewer socket. The host's side is boxed, so a
        // viewer's future is `run` alone.
        if own_thread {
            Either::Left(Box::pin(async move {
                // Aborted if the caller stops waiting for it.
                let running = AbortOnDropHandle::new(crate::ingest::spawn(true, run));
                if let Err(e) = running.await {
                    tracing::error!(error = %e, "a socket on the command thread failed");
                }
            }))
        } else {
            Either::Right(run)
        }
    }
}

/// The socket's halves: the writer's and the reader's.
type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

struct Connection {
    hub: Hub,
    room_id: Uuid,
    member: Member,
    /// The socket's place in the node's counts, given back when the
    /// connection ends.
    _permit: SocketPermit,
    /// Frames waiting to be written; the room task pushes, the writer drains.
    queue: Arc<SendQueue>,
    commerce: Arc<dyn CommerceCommands>,
    /// The session's access rule for this socket's token.
    rights: Arc<dyn SessionRights>,
    client_id: u64,
}

/// A command under way; its output is the `ack` or `error` frame.
type Running = Pin<Box<dyn Future<Output = String> + Send>>;

/// Whether the sender may host, as of this command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostCheck {
    Host,
    Viewer,
    /// The answer is too old and could not be renewed (the database did not answer).
    Unknown,
}

impl Connection {
    fn new(
        hub: Hub,
        room_id: Uuid,
        member: Member,
        permit: SocketPermit,
        commerce: Arc<dyn CommerceCommands>,
        rights: Arc<dyn SessionRights>,
    ) -> Self {
        let queue = Arc::new(SendQueue::new(hub.config().send_queue_max_bytes));
        Connection {
            hub,
            room_id,
            member,
            _permit: permit,
            queue,
            commerce,
            rights,
            client_id: NEXT_CLIENT.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Serves the socket from the join to the close.
    // Not an `async fn` on purpose (see the block below).
    #[allow(clippy::manual_async_fn)]
    fn run(
        self,
        mut sink: Sink,
        stream: Stream,
        resume: Option<(String, u64)>,
        notices_after: Option<i64>,
    ) -> impl Future<Output = ()> + Send + 'static {
        // An `async move` block rather than an `async fn`: an async fn's
        // future keeps its arguments twice (as given, and moved into its
        // locals); a block's captures are used in place.
        async move {
            let entry = Arc::new(ClientEntry {
                id: self.client_id,
                user: self.member.user.clone(),
                queue: self.queue.clone(),
                you: std::sync::Mutex::new(encoded(&you(&self.member))),
                can_host: AtomicBool::new(self.member.can_host),
            });
            // Before joining, so the room knows whom moderators may not touch
            // by the time this socket can see anything.
            // The awaits before and after `pump` run once per socket: boxed, so
            // the connection's task is sized for its idle loop, not for them.
            Box::pin(self.record_privileged()).await;
            let (reply, joined) = oneshot::channel();
            let room = self.hub.send_to_room(
                self.room_id,
                RoomInput::Join {
                    client: entry.clone(),
                    resume,
                    reply,
                },
            );
            // A join waits on Redis (subscribe, snapshot, history): bounded, so
            // an upgraded socket always hears something.
            let shutdown = self.hub.shutdown_token().clone();
            let outcome = Box::pin(async {
                tokio::select! {
                outcome = tokio::time::timeout(self.hub.config().join_timeout(), joined) => match outcome {
                    Ok(outcome) => outcome.unwrap_or(JoinOutcome::Unavailable),
                    Err(_) => {
                        tracing::debug!(room = %self.room_id, user = %self.member.user, "room join timed out");
                        JoinOutcome::Unavailable
                    }
                },
                _ = shutdown.cancelled() => JoinOutcome::Unavailable,
                }
            })
            .await;
            if let Some((error, code, reason)) = refusal(outcome) {
                // The room may still carry out the join later: it must forget it.
                let _ = room.tx.send(RoomInput::Leave {
                    client_id: self.client_id,
                });
                let frame = error.frame(None);
                Box::pin(async {
                    let mut stream = stream;
                    let sent = tokio::time::timeout(CLOSE_WAIT, sink.send(Message::Text(frame.into()))).await;
                    if matches!(sent, Ok(Ok(()))) {
                        close(&mut sink, &mut stream, code, reason).await;
                    }
                })
                .await;
                return;
            }
            // The user's notices follow the welcome: the backlog, then live ones.
            let inbox = Arc::new(Inbox::new(self.client_id, self.room_id, self.queue.clone()));
            Box::pin(async {
                self.hub
                    .join_notices(inbox, &self.member.user, notices_after)
                    .await;
                self.hub.arrive(&room, &self.member.user).await;
                self.presence(&room, "presence.joined").await;
            })
            .await;
            let ended = self.pump(&mut sink, stream, &room, entry).await;
            self.hub.leave_notices(&self.member.user, self.client_id);
            let _ = room.tx.send(RoomInput::Leave {
                client_id: self.client_id,
            });
            Box::pin(async {
                if let Some(Ended {
                    mut stream,
                    in_flight,
                    end,
                }) = ended
                {
                    if end == End::Close(close_code::GOING_AWAY, SHUTTING_DOWN) {
                        // Commands under way when the node stops still get their answer.
                        let limit = self.hub.config().command_timeout();
                        answer_in_flight(in_flight, &mut sink, limit).await;
                    }
                    match end {
                        End::ByPeer => finish(&mut stream).await,
                        End::Close(code, text) => close(&mut sink, &mut stream, code, text).await,
                        End::Gone => {}
                    }
                }
                self.hub.depart(&room, &self.member.user).await;
                self.presence(&room, "presence.left").await;
            })
            .await;
        }
    }

    /// Runs the joined socket until it ends: its reader in a task of its
    /// own ([`Reader::read`]), its writer ([`Writer::run`]) in this one, so
    /// that a delivery wakes the writer alone. Gives back the socket's
    /// halves and the commands under way with how the socket ends; nothing
    /// if the reader's task failed (the socket is then dropped).
    // Not an `async fn`, for the same reason as `run`.
    #[allow(clippy::manual_async_fn)]
    fn pump<'a>(
        &'a self,
        sink: &'a mut Sink,
        stream: Stream,
        room: &'a RoomHandle,
        entry: Arc<ClientEntry>,
    ) -> impl Future<Output = Option<Ended>> + Send + 'a {
        async move {
            let config = self.hub.config();
            let reader = Reader {
                hub: self.hub.clone(),
                room: room.clone(),
                member: self.member.clone(),
                queue: self.queue.clone(),
                entry,
                commerce: self.commerce.clone(),
                rights: self.rights.clone(),
                host_confirmed: Instant::now(),
                in_flight: None,
                last_turn: None,
            };
            // Dropped when the writer ends, which ends the reader.
            let (stop, stopped) = oneshot::channel::<()>();
            let reading = tokio::spawn(async move {
                let mut reader = reader;
                let mut stream = stream;
                let end = reader.read(&mut stream, stopped).await;
                (reader.in_flight, stream, end)
            });
            let mut writer = Writer {
                sink,
                queue: self.queue.clone(),
                batch: Vec::new(),
                write_batch: config.write_batch,
                ping_interval: config.ping_interval(),
                idle_timeout: config.idle_timeout(),
            };
            let written = writer.run().await;
            drop(stop);
            let (in_flight, stream, read_end) = match reading.await {
                Ok(read) => read,
                Err(e) => {
                    tracing::error!(room = %self.room_id, user = %self.member.user, error = %e, "a socket's reader failed");
                    return None;
                }
            };
            Some(Ended {
                stream,
                in_flight,
                end: written.unwrap_or(read_end),
            })
        }
    }

    /// An admin's or the agency's socket that may host marks its user in the
    /// room as one moderators may not act on (hosts on the roster are known
    /// from the database).
    async fn record_privileged(&self) {
        if !self.member.can_host || !matches!(self.member.role, Role::Admin | Role::Agency) {
            return;
        }
        let field = format!("privileged:{}", self.member.user);
        if let Err(e) = self
            .hub
            .inner
            .store
            .set_moderation_field(self.room_id, &field, self.member.role.as_str())
            .await
        {
            tracing::debug!(room = %self.room_id, user = %self.member.user, error = %e, "could not record a privileged user in the room");
        }
    }

    /// Announces a join or leave, in small rooms only (`hub.presence_below`),
    /// live only: presence takes no offset and is kept in no history, so
    /// joins and leaves never push other events out of it. Others see the
    /// user's display name where one is known, else the user id.
    async fn presence(&self, room: &RoomHandle, kind: &str) {
        let total = room.shared.viewers_total.load(Ordering::Relaxed) as usize;
        let local = room.shared.local_viewers.load(Ordering::Relaxed);
        if total.max(local) < self.hub.config().presence_below {
            let data = match &self.member.name {
                Some(name) => json!({ "name": name }),
                None => json!({ "user": self.member.user }),
            };
            let publication = Publication::new(kind, data);
            if let Err(e) = self
                .hub
                .inner
                .store
                .publish_live(self.room_id, &publication)
                .await
            {
                tracing::debug!(room = %self.room_id, user = %self.member.user, error = %e, "presence notice not sent");
            }
        }
    }
}

/// What is left of a socket when its loops have ended.
struct Ended {
    stream: Stream,
    /// The commands still under way, if any were sent.
    in_flight: InFlight,
    end: End,
}

/// The commands under way, answered in the order they arrived; allocated
/// with the socket's first command. (In a mutex only to be `Sync`; reached
/// through `&mut`, never locked.)
type InFlight = Option<std::sync::Mutex<FuturesOrdered<Running>>>;

/// The socket's write side: waits on the send queue alone and writes what
/// it holds, `feed` per frame and one `flush` per batch. The node's ping
/// tick reaches it through the queue too, so an idle socket has no timer.
struct Writer<'a> {
    sink: &'a mut Sink,
    queue: Arc<SendQueue>,
    batch: Vec<Arc<Frame>>,
    write_batch: usize,
    ping_interval: Duration,
    idle_timeout: Duration,
}

impl Writer<'_> {
    /// Writes until the queue asks to close or a write fails; says how the
    /// socket closes, or nothing when the reader ended (it says how).
    async fn run(&mut self) -> Option<End> {
        loop {
            if let Err(end) = self.write().await {
                return end;
            }
            self.queue.ready().await;
        }
    }

    /// Drains the send queue into the socket, one flush per batch, and
    /// pings the peer when the node's ping tick asked. A write that blocks
    /// (the peer stopped reading) is abandoned when the queue asks to close.
    async fn write(&mut self) -> Result<(), Option<End>> {
        loop {
            // Checked before every drain: a ping asked for while a batch was
            // being written is not left for the next wake-up.
            if self.queue.take_ping() {
                self.ping().await?;
            }
            // Grows to the largest batch this socket has drained: a viewer
            // of a quiet room keeps a few pointers, not `hub.write_batch`.
            self.batch.clear();
            if let Some(reason) = self.queue.drain(self.write_batch, &mut self.batch) {
                return Err(close_for(reason));
            }
            if self.batch.is_empty() {
                return Ok(());
            }
            let written = tokio::select! {
                result = write_batch(self.sink, &self.batch) => result,
                reason = closing(&self.queue) => return Err(close_for(reason)),
            };
            match written {
                Ok(bytes) => {
                    crate::metrics::delivered(self.batch.len() as u64, bytes);
                    crate::metrics::written_latency(|| {
                        let first = self.batch.iter().find(|f| f.ts_ms > 0)?;
                        Some((now_ms() - first.ts_ms).max(0) as f64 / 1000.0)
                    });
                }
                Err(_) => return Err(Some(End::Gone)),
            }
        }
    }

    /// Pings the peer, unless it has been silent past `hub.idle_timeout_secs`.
    async fn ping(&mut self) -> Result<(), Option<End>> {
        if self.queue.silent_for() > self.idle_timeout {
            return Err(Some(End::Close(close_code::IDLE, "idle")));
        }
        // A peer that stopped reading must not stall the writer.
        match tokio::time::timeout(
            self.ping_interval,
            self.sink.send(Message::Ping(bytes::Bytes::new())),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Some(End::Gone)),
            Err(_) => Err(Some(End::Close(
                close_code::SLOW,
                "too slow: resume from your last offset",
            ))),
        }
    }
}

/// The socket's read side, in a task of its own: reads client frames and
/// carries out their commands (the answers go through the send queue like
/// any frame); watches the token's expiry, the host's rights and the node's
/// shutdown. It wakes only for what it reads, never for a delivery.
struct Reader {
    hub: Hub,
    room: RoomHandle,
    member: Member,
    queue: Arc<SendQueue>,
    /// This connection as its room sees it.
    entry: Arc<ClientEntry>,
    commerce: Arc<dyn CommerceCommands>,
    rights: Arc<dyn SessionRights>,
    /// When the right to host was last confirmed (`member.can_host`).
    host_confirmed: Instant,
    /// Commands being carried out (see [`InFlight`]).
    in_flight: InFlight,
    /// The turn the socket's next command publishes after.
    last_turn: Option<oneshot::Receiver<()>>,
}

impl Reader {
    /// Reads until the socket ends, the writer ends (`stop`), the token
    /// expires or the node stops; says how the socket closes, and closes the
    /// send queue so that the writer stops too.
    async fn read(&mut self, stream: &mut Stream, mut stop: oneshot::Receiver<()>) -> End {
        let config = self.hub.config();
        let most_in_flight = config.commands_in_flight;
        let shutdown = self.hub.shutdown_token().clone();
        // A socket does not outlive the token it was opened with.
        let expiry = token_expiry(self.member.token_expires_at);
        tokio::pin!(expiry);
        // A host's right to host is asked again on this timer, so a host who
        // left the roster is demoted even without sending anything.
        // Only a socket that may host has the timer (a viewer's would be a
        // timer held for nothing).
        let mut recheck = if self.member.can_host {
            let mut every = tokio::time::interval(config.host_recheck());
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            Some(every)
        } else {
            None
        };
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        let end = loop {
            tokio::select! {
                // The writer ended: how it ended is how the socket closes.
                _ = &mut stop => break End::Gone,
                _ = &mut stopping => break End::Close(close_code::GOING_AWAY, SHUTTING_DOWN),
                _ = &mut expiry => break End::Close(close_code::TOKEN_EXPIRED, "token expired: reconnect with a new token and resume"),
                Some(reply) = next_answer(&mut self.in_flight), if self.running() > 0 => {
                    let _ = self.queue.push(&Frame::control(reply), None, false);
                }
                // At `hub.commands_in_flight` the socket is not read (TCP
                // backpressure) until a command is answered.
                message = stream.next(), if self.running() < most_in_flight => {
                    self.queue.heard();
                    match message {
                        Some(Ok(Message::Text(text))) => {
                            // Boxed: the idle loop does not carry a command's state.
                            Box::pin(self.start_command(text.as_str())).await;
                        }
                        Some(Ok(Message::Binary(_))) => {
                            self.answer(CommandError::BinaryUnsupported.frame(None));
                        }
                        // tungstenite queues the pong itself and sends it with the next read or write.
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        // tungstenite queued the echo of the client's close.
                        Some(Ok(Message::Close(_))) => break End::ByPeer,
                        None => break End::Gone,
                        Some(Err(e)) => {
                            tracing::debug!(room = %self.room.id, user = %self.member.user, error = %e, "socket read failed");
                            break failure(&e);
                        }
                    }
                }
                _ = tick(&mut recheck), if self.member.can_host => {
                    Box::pin(self.check_host(true)).await;
                }
            }
        };
        self.queue.close(CloseReason::Reader);
        end
    }

    /// How many commands are under way.
    fn running(&mut self) -> usize {
        self.in_flight
            .as_mut()
            .map_or(0, |running| unlocked(running).len())
    }

    /// Queues an answer behind those of the commands still under way.
    fn answer(&mut self, frame: String) {
        match self.in_flight.as_mut().map(unlocked) {
            Some(running) if !running.is_empty() => {
                running.push_back(Box::pin(std::future::ready(frame)));
            }
            _ => {
                let _ = self.queue.push(&Frame::control(frame), None, false);
            }
        }
    }

    /// Handles one client text frame: reads it into a [`Command`] with the
    /// sender's rights as of now, and starts it; its answer is queued when
    /// it and every earlier command have finished.
    async fn start_command(&mut self, text: &str) {
        let frame = match commands::read_frame(text, self.hub.config().max_frame_bytes) {
            Ok(frame) => frame,
            Err(e) => return self.answer(e.frame(None)),
        };
        let (command, rights, member) = match self.prepare(&frame).await {
            Ok(prepared) => prepared,
            Err(e) => return self.answer(e.frame(frame.id.as_deref())),
        };
        let id = frame.id.map(std::borrow::Cow::into_owned);
        let name = command.name();
        let turn = Turn::after(&mut self.last_turn);
        let hub = self.hub.clone();
        let room = self.room.clone();
        let commerce = self.commerce.clone();
        let session_rights = self.rights.clone();
        let running: Running = Box::pin(async move {
            let id = id.as_deref();
            let ctx = Context {
                hub: &hub,
                room: &room,
                member: &member,
                rights,
                request_id: id,
                commerce: commerce.as_ref(),
                session_rights: session_rights.as_ref(),
                turn: std::sync::Mutex::new(turn),
            };
            match tokio::time::timeout(hub.config().command_timeout(), command.apply(&ctx)).await {
                Ok(Ok(ack)) => protocol::ack(id, ack.into_data()),
                Ok(Err(e)) => {
                    if let Some(inner) = e.internal() {
                        tracing::error!(room = %room.id, user = %member.user, command = name, error = ?inner, "socket command failed");
                    }
                    e.frame(id)
                }
                Err(_) => {
                    tracing::debug!(room = %room.id, user = %member.user, command = name, "socket command timed out");
                    let e = CommandError::Unavailable(
                        "the command did not finish in time; its outcome is unknown".into(),
                    );
                    e.frame(id)
                }
            }
        });
        self.run(running);
    }

    /// Runs a started command as far as it goes at once. One that finishes
    /// there (a ping, a refusal the node answers from its own state, such as
    /// a sold-out deal) is answered now, behind any still under way: no
    /// place among the commands under way and no second turn of the read
    /// loop. Any other joins those under way, which poll it again with the
    /// loop's waker before the loop waits.
    fn run(&mut self, mut running: Running) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match running.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(frame) => self.answer(frame),
            std::task::Poll::Pending => {
                unlocked(self.in_flight.get_or_insert_with(Default::default)).push_back(running)
            }
        }
    }

    /// The command a frame asks for, with the rights it is carried out
    /// with and the sender as it acts.
    async fn prepare(
        &mut self,
        frame: &ClientCommand<'_>,
    ) -> Result<(Command, Rights, Member), CommandError> {
        // A host's right is never used on an answer older than `hub.host_recheck_secs`.
        let host = self.check_host(false).await;
        // A moderator appointed by `mod.grant` may moderate from the next
        // command on: the room's moderation state says so.
        let appointed = self.room.shared.moderation().is_moderator(&self.member.user);
        let rights = Rights {
            host: host == HostCheck::Host,
            moderate: (host == HostCheck::Host && self.member.can_moderate) || appointed,
        };
        let command = match Command::parse(&frame.kind, &frame.data, rights, self.hub.config()) {
            Err(CommandError::Forbidden(_)) if host == HostCheck::Unknown => {
                return Err(CommandError::Unavailable(
                    "your right to host could not be confirmed; retry shortly".into(),
                ))
            }
            parsed => parsed?,
        };
        // Unconfirmed, the sender counts as a viewer (no exemption from the rate limit).
        let member = if host == HostCheck::Unknown {
            Member {
                can_host: false,
                can_moderate: false,
                ..self.member.clone()
            }
        } else {
            self.member.clone()
        };
        Ok((command, rights, member))
    }

    /// Whether the sender may host now: the last answer if its question was
    /// asked less than `hub.host_recheck_secs` ago (unless `fresh`), else
    /// the session's access rule asked again (bounded). A "no" demotes the
    /// socket to a viewer for good.
    async fn check_host(&mut self, fresh: bool) -> HostCheck {
        if !self.member.can_host {
            return HostCheck::Viewer;
        }
        let config = self.hub.config();
        if !fresh && self.host_confirmed.elapsed() < config.host_recheck() {
            return HostCheck::Host;
        }
        // The answer is as old as the question: timed from before asking.
        let asked = Instant::now();
        match tokio::time::timeout(config.command_timeout(), self.rights.may_host()).await {
            Ok(Ok(true)) => {
                self.host_confirmed = asked;
                HostCheck::Host
            }
            Ok(Ok(false)) => {
                self.demote();
                HostCheck::Viewer
            }
            Ok(Err(e)) => {
                tracing::debug!(room = %self.room.id, user = %self.member.user, error = %e, "host rights could not be confirmed");
                HostCheck::Unknown
            }
            Err(_) => {
                tracing::debug!(room = %self.room.id, user = %self.member.user, "host rights check timed out");
                HostCheck::Unknown
            }
        }
    }

    /// The user may no longer host: the socket stays open as a viewer's, and
    /// is told so with a `rights` frame carrying its new `you`.
    fn demote(&mut self) {
        self.member.can_host = false;
        self.member.can_moderate = false;
        crate::metrics::host_demoted();
        tracing::info!(room = %self.room.id, user = %self.member.user, "host rights withdrawn; the socket continues as a viewer");
        let you = you(&self.member);
        self.entry.can_host.store(false, Ordering::Relaxed);
        *self.entry.you.lock().unwrap_or_else(|p| p.into_inner()) = encoded(&you);
        let frame = json!({ "type": "rights", "you": you }).to_string();
        let _ = self.queue.push(&Frame::control(frame), None, false);
    }
}

/// `you` encoded, as the room keeps it.
fn encoded(you: &serde_json::Value) -> Box<serde_json::value::RawValue> {
    // A `Value` always serialises; the default is `null`.
    serde_json::value::to_raw_value(you).unwrap_or_default()
}

/// `you` in the first frame and in `rights`.
fn you(member: &Member) -> serde_json::Value {
    json!({ "user": member.user, "name": member.name, "role": member.role, "can_host": member.can_host,
            "can_moderate": member.can_moderate })
}

/// How a connection's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client sent a Close frame: answer it (the echo is queued).
    ByPeer,
    /// The server closes, with this code and reason.
    Close(u16, &'static str),
    /// The connection is gone (reset, or a write failed): nothing to send.
    Gone,
}

/// The close code for a read that failed, as RFC 6455 asks: 1007 for a text
/// frame that is not UTF-8, 1009 for a frame above the limit, 1002 for any
/// other protocol violation (an unmasked frame, a control frame over 125
/// bytes or fragmented, reserved bits...). A reset connection gets none.
fn failure(e: &axum::Error) -> End {
    use tungstenite::error::{Error, ProtocolError};
    let inner = std::error::Error::source(e).and_then(|s| s.downcast_ref::<Error>());
    match inner {
        Some(Error::Utf8(_)) => End::Close(close_code::INVALID_DATA, "invalid UTF-8"),
        Some(Error::Capacity(_)) => End::Close(close_code::TOO_BIG, "frame too large"),
        Some(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => End::Gone,
        Some(Error::Protocol(_)) => End::Close(close_code::PROTOCOL, "protocol error"),
        _ => End::Gone,
    }
}

/// The error frame and close of a join the room refused; nothing when it
/// joined.
fn refusal(outcome: JoinOutcome) -> Option<(CommandError, u16, &'static str)> {
    match outcome {
        JoinOutcome::Joined => None,
        JoinOutcome::Banned => Some((CommandError::Banned, close_code::BANNED, "banned")),
        JoinOutcome::SessionEnded => Some((
            CommandError::SessionEnded,
            close_code::SESSION_ENDED,
            "session ended",
        )),
        JoinOutcome::Unavailable => Some((
            CommandError::Unavailable("the room is unavailable; retry shortly".into()),
            close_code::UNAVAILABLE,
            "unavailable",
        )),
    }
}

/// How the socket closes for a reason the send queue gives; nothing when
/// the reader ended (it says how).
fn close_for(reason: CloseReason) -> Option<End> {
    Some(match reason {
        CloseReason::Slow => End::Close(close_code::SLOW, "too slow: resume from your last offset"),
        CloseReason::Banned => End::Close(close_code::BANNED, "banned"),
        CloseReason::Shutdown => End::Close(close_code::GOING_AWAY, SHUTTING_DOWN),
        CloseReason::SessionEnded => End::Close(close_code::SESSION_ENDED, "session ended"),
        CloseReason::Reader => return None,
    })
}

async fn write_batch(socket: &mut Sink, batch: &[Arc<Frame>]) -> Result<u64, axum::Error> {
    let mut bytes = 0;
    for frame in batch {
        bytes += frame.len() as u64;
        socket.feed(Message::Text(frame.text.clone())).await?;
    }
    socket.flush().await?;
    Ok(bytes)
}

/// Resolves when the send queue asks the connection to close. A session's
/// end lets the frames being written finish first, for a bounded time.
async fn closing(queue: &SendQueue) -> CloseReason {
    loop {
        match queue.close_reason() {
            Some(CloseReason::SessionEnded) => {
                // Boxed: every writer's future would otherwise hold a timer's
                // room for the one wait at a session's end.
                Box::pin(tokio::time::sleep(Duration::from_secs(5))).await;
                return CloseReason::SessionEnded;
            }
            Some(reason) => return reason,
            None => queue.ready().await,
        }
    }
}

/// The timer's next tick; never, without a timer.
async fn tick(every: &mut Option<tokio::time::Interval>) {
    match every {
        Some(every) => {
            every.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The next answer of the commands under way; never, when there are none.
async fn next_answer(in_flight: &mut InFlight) -> Option<String> {
    match in_flight.as_mut().map(unlocked) {
        Some(running) if !running.is_empty() => running.next().await,
        _ => std::future::pending().await,
    }
}

/// The commands under way, through `&mut` (no locking).
fn unlocked(running: &mut std::sync::Mutex<FuturesOrdered<Running>>) -> &mut FuturesOrdered<Running> {
    running.get_mut().unwrap_or_else(|p| p.into_inner())
}

/// After the loops ended for shutdown: the answers of the commands still
/// under way, written as they come (for at most `limit`).
async fn answer_in_flight(in_flight: InFlight, sink: &mut Sink, limit: Duration) {
    let Some(running) = in_flight else {
        return;
    };
    let mut running = running.into_inner().unwrap_or_else(|p| p.into_inner());
    let _ = tokio::time::timeout(limit, async {
        while let Some(reply) = running.next().await {
            if sink.send(Message::Text(reply.into())).await.is_err() {
                return;
            }
        }
    })
    .await;
}

/// The close reason when the node stops.
const SHUTTING_DOWN: &str = "server shutting down";

/// How long the server waits for a peer during a close: to read its close
/// frame, and for its answer.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Sends a close frame (waiting a bounded time for a peer that reads
/// slowly), then waits a bounded time for the peer's answering close, so
/// the closing handshake completes (`wasClean` in browsers).
async fn close(sink: &mut Sink, stream: &mut Stream, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    // A slow peer gets time to read up to the close frame; others need none.
    let wait = if code == close_code::SLOW {
        Duration::from_secs(10)
    } else {
        CLOSE_WAIT
    };
    let sent = tokio::time::timeout(wait, sink.send(Message::Close(Some(frame)))).await;
    if matches!(sent, Ok(Ok(()))) {
        finish(stream).await;
    }
}

/// Reads until the connection ends (bounded): after the peer's close this
/// sends tungstenite's queued echo, after ours it takes the peer's answer.
async fn finish(stream: &mut Stream) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

/// Resolves when a token expiring at `expires_at` (Unix seconds) has
/// expired; never when there is none.
async fn token_expiry(expires_at: Option<i64>) {
    let Some(at) = expires_at else {
        return std::future::pending().await;
    };
    let now = chrono::Utc::now().timestamp();
    let left = u64::try_from(at.saturating_sub(now)).unwrap_or(0);
    tokio::time::sleep(std::time::Duration::from_secs(left)).await;
}
