//! A room on one node: the task that puts the room's events in offset
//! order and fans each one out to the node's connections in that room.
//!
//! The task owns the list of connections, so joining, leaving and fan-out
//! never contend on a lock. Events arrive from the subscriber; a gap in the
//! offsets (a message lost while Redis was unreachable) is filled from the
//! history, and a history that no longer reaches back, or a new epoch
//! (Redis lost the room), sends every connection a `reset` snapshot.
//!
//! When the session ends (`session.ended` passes, or the snapshot's
//! `session` says so), the room refuses new joins and, after
//! `hub.session_end_grace_ms`, closes its connections with 4009.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::event::{now_ms, Frame, FrameHeader, Lane};
use crate::moderation::Moderation;
use crate::protocol;
use crate::send_queue::{CloseReason, Refused, SendQueue};
use crate::store::History;
use crate::subscriber::RoomFeed;

/// What connections and the hub share with a room's task.
#[derive(Default)]
pub struct RoomShared {
    pub moderation: Mutex<Moderation>,
    pub likes_pending: AtomicU64,
    pub likes_dirty: AtomicBool,
    pub local_viewers: AtomicUsize,
    pub viewers_total: AtomicU64,
    /// Viewer-count intervals seen, for the unchanged-count heartbeat.
    pub viewers_beat: AtomicU64,
    /// The room had events (other than `viewers`) since the last `viewers`
    /// this node delivered: only then is an unchanged count repeated, so a
    /// quiet room costs nothing per heartbeat.
    pub busy_since_viewers: AtomicBool,
    /// The local count this node last weighed for a viewer report, and the
    /// viewer intervals since it last moved or the room last had events
    /// (see `Hub::report_due`).
    pub reported_viewers: AtomicUsize,
    pub calm_intervals: AtomicU64,
    /// When this node last reported the room (ms since the Unix epoch).
    pub reported_at_ms: AtomicU64,
    /// This node's open sockets per user ([`crate::presence`]).
    pub here: Mutex<std::collections::HashMap<String, u32>>,
    /// A presence change could not be written to Redis: the viewers timer
    /// rewrites this node's presence hash.
    pub here_dirty: AtomicBool,
}

impl RoomShared {
    pub fn moderation(&self) -> std::sync::MutexGuard<'_, Moderation> {
        self.moderation.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn here(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, u32>> {
        self.here.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone)]
pub struct RoomHandle {
    pub id: Uuid,
    pub generation: u64,
    pub tx: mpsc::UnboundedSender<RoomInput>,
    pub shared: Arc<RoomShared>,
}

/// One connection as the room sees it.
pub struct ClientEntry {
    pub id: u64,
    pub user: String,
    pub queue: Arc<SendQueue>,
    /// `you` in welcome/reset frames (changes when a host is demoted), kept
    /// encoded: a few dozen bytes per socket instead of a map, read only when
    /// a welcome, `resumed` or `reset` frame is made.
    pub you: Mutex<Box<serde_json::value::RawValue>>,
    /// The socket may host the room: a ban record does not keep it out or
    /// close it (hosts are never locked out of their own room).
    pub can_host: AtomicBool,
}

impl ClientEntry {
    pub fn you(&self) -> Value {
        let you = self.you.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::from_str(you.get()).unwrap_or(Value::Null)
    }
}

pub enum RoomInput {
    Join {
        client: Arc<ClientEntry>,
        resume: Option<(String, u64)>,
        reply: oneshot::Sender<JoinOutcome>,
    },
    Leave {
        client_id: u64,
    },
    /// The node's ping tick: the room's sockets whose id is `n` modulo
    /// `of` are asked to ping their peers (one timer per node, none per
    /// socket; a large room's pings are spread over the interval).
    Ping {
        n: u64,
        of: u64,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum JoinOutcome {
    Joined,
    Banned,
    /// The session has ended: no one joins any more.
    SessionEnded,
    Unavailable,
}

/// What a room's task needs from its node. The hub provides it (`Hub`
/// implements it in `hub.rs`), so rooms do not depend on the hub's type.
pub(crate) trait RoomHost: Clone + Send + Sync + 'static {
    fn store(&self) -> &crate::store::RoomStore;
    fn subscriber(&self) -> &crate::subscriber::Subscriber;
    fn config(&self) -> &crate::config::HubConfig;
    fn shutdown(&self) -> &tokio_util::sync::CancellationToken;
    fn tasks(&self) -> &tokio_util::task::TaskTracker;
    /// Forgets the room if it is still this `generation` and `idle()` holds
    /// under the registry's lock; false if something arrived meanwhile.
    fn close_if_idle(&self, room: Uuid, generation: u64, idle: &dyn Fn() -> bool) -> bool;
}

/// How long a user's chat clocks (rate-limit bucket, slow-mode wait) outlive
/// their last message: longer than any bucket refill, so leaving and
/// rejoining never resets them.
const CHAT_CLOCK_IDLE: Duration = Duration::from_secs(600);

pub(crate) fn open<H: RoomHost>(hub: H, id: Uuid, generation: u64) -> RoomHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(RoomShared::default());
    let handle = RoomHandle {
        id,
        generation,
        tx,
        shared: shared.clone(),
    };
    let task = RoomTask {
        hub: hub.clone(),
        id,
        generation,
        shared,
        clients: Vec::new(),
        epoch: String::new(),
        last: 0,
        stale: true,
        renew_epoch: false,
        ended: false,
        close_at: None,
    };
    // With `hub.command_thread` every room runs on that thread, whoever
    // opens it (a host usually joins first, a viewer sometimes does): the
    // room tasks there, the viewers' sockets on the main runtime, so that
    // one saturated runtime neither starves the fan-out nor the viewers'
    // commands (measured: docs/benchmarks.md, "Where a room runs").
    let running = hub.tasks().track_future(task.run(rx));
    crate::ingest::spawn(hub.config().command_thread, running);
    handle
}

struct RoomTask<H: RoomHost> {
    hub: H,
    id: Uuid,
    generation: u64,
    shared: Arc<RoomShared>,
    clients: Vec<Arc<ClientEntry>>,
    /// The epoch and last offset this node has delivered.
    epoch: String,
    last: u64,
    /// No baseline yet, or a recovery failed: retry every second.
    stale: bool,
    /// The room's shard failed over and the epoch is not renewed yet
    /// (retried with the recovery).
    renew_epoch: bool,
    /// The session has ended: joins are refused.
    ended: bool,
    /// When the connections still open are closed, after the session ended.
    close_at: Option<tokio::time::Instant>,
}

impl<H: RoomHost> RoomTask<H> {
    async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<RoomInput>) {
        let (feed_tx, mut feed) = mpsc::unbounded_channel();
        let subscriber = self.hub.subscriber().clone();
        // Subscribe first, then read the baseline: nothing published after
        // the baseline can be missed.
        let subscribed = subscriber.subscribe(self.id, self.generation, feed_tx).await;
        if subscribed {
            self.load_baseline().await;
        }
        let linger = Duration::from_millis(self.hub.config().room_linger_ms);
        let mut empty_since: Option<Instant> = None;
        let mut retry = tokio::time::interval(Duration::from_secs(1));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.hub.shutdown().clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                item = feed.recv() => match item {
                    Some(RoomFeed::Frame(bytes)) => self.on_frame(bytes).await,
                    Some(RoomFeed::Resync) => self.recover().await,
                    Some(RoomFeed::Failover) => self.after_failover().await,
                    None => break,
                },
                input = inputs.recv() => match input {
                    Some(RoomInput::Join { client, resume, reply }) => {
                        let outcome = self.join(client, resume).await;
                        let _ = reply.send(outcome);
                        // A refused join leaves an empty room empty: it still closes.
                        empty_since = if self.clients.is_empty() { empty_since.or(Some(Instant::now())) } else { None };
                    }
                    Some(RoomInput::Leave { client_id }) => {
                        if let Some(i) = self.clients.iter().position(|c| c.id == client_id) {
                            let gone = self.clients.swap_remove(i);
                            if !self.clients.iter().any(|c| c.user == gone.user) {
                                // The user's chat clocks stay (a reconnect must not
                                // reset them); those idle for long are dropped.
                                self.shared
                                    .moderation()
                                    .forget_idle(Instant::now(), CHAT_CLOCK_IDLE);
                            }
                        }
                        self.shared.local_viewers.store(self.clients.len(), Ordering::Relaxed);
                        if self.clients.is_empty() {
                            empty_since = Some(Instant::now());
                        }
                    }
                    Some(RoomInput::Ping { n, of }) => {
                        let of = of.max(1);
                        for client in self.clients.iter().filter(|c| c.id % of == n % of) {
                            client.queue.request_ping();
                        }
                    }
                    None => break,
                },
                _ = until(self.close_at) => {
                    self.close_at = None;
                    tracing::debug!(room = %self.id, sockets = self.clients.len(), "session ended: closing the room's sockets");
                    for client in &self.clients {
                        client.queue.close(CloseReason::SessionEnded);
                    }
                }
                // Polled only while there is something to retry or a linger
                // to time: an idle room's timer does not wake it every second.
                _ = retry.tick(), if self.stale || empty_since.is_some() => {
                    if self.stale {
                        self.recover().await;
                    }
                    if empty_since.is_some_and(|t| t.elapsed() >= linger) {
                        let clients_empty = self.clients.is_empty();
                        if self.hub.close_if_idle(self.id, self.generation, &|| clients_empty && inputs.is_empty()) {
                            break;
                        }
                        empty_since = None;
                    }
                }
            }
        }
        subscriber.unsubscribe(self.id, self.generation);
    }

    async fn load_baseline(&mut self) {
        let store = &self.hub.store();
        match (store.moderation(self.id).await, store.snapshot(self.id).await) {
            (Ok(moderation), Ok(snapshot)) => {
                *self.shared.moderation() = Moderation::from_hash(moderation);
                if let Some(viewers) = snapshot.state.get("viewers").and_then(Value::as_u64) {
                    self.shared.viewers_total.store(viewers, Ordering::Relaxed);
                }
                self.note_session(&snapshot.state);
                self.epoch = snapshot.epoch;
                self.last = snapshot.offset;
                self.stale = false;
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(room = %self.id, error = %e, "room baseline unavailable; retrying");
                self.stale = true;
            }
        }
    }

    async fn on_frame(&mut self, bytes: Bytes) {
        let header: FrameHeader = match serde_json::from_slice(&bytes) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(room = %self.id, error = %e, "unreadable frame on the room channel");
                return;
            }
        };
        if header.offset == 0 {
            // Live only (presence): no order to keep, nothing to recover.
            self.deliver_live(header, bytes.clone());
            return;
        }
        if self.epoch.is_empty() {
            self.load_baseline().await;
            if self.stale {
                return;
            }
        }
        if header.epoch != self.epoch {
            tracing::info!(room = %self.id, old = %self.epoch, new = %header.epoch, "room epoch changed");
            self.reset_all().await;
            return;
        }
        if header.offset <= self.last {
            return;
        }
        if header.offset > self.last + 1 {
            self.recover().await;
            return;
        }
        let offset = header.offset;
        self.deliver(header, offset, bytes.clone());
    }

    /// The room's shard failed over: the replica that took over may lack
    /// the last events, and would hand their offsets out again to new ones,
    /// which viewers would drop as already seen. A new epoch (the first
    /// node to notice renews it, the others find it renewed) makes every
    /// viewer start again from a snapshot instead.
    async fn after_failover(&mut self) {
        self.renew_epoch = !self.epoch.is_empty();
        self.recover().await;
    }

    /// Fills the gap after `last` from the history, or resets everyone.
    async fn recover(&mut self) {
        if self.renew_epoch {
            // Right after a failover a node may still redirect to the dead
            // master: the room stays stale and tries again in a second.
            if let Err(e) = self.hub.store().renew_epoch(self.id, &self.epoch).await {
                tracing::warn!(room = %self.id, error = %e, "renewing the epoch after a failover failed; retrying");
                self.stale = true;
                return;
            }
            self.renew_epoch = false;
        }
        if self.epoch.is_empty() {
            self.load_baseline().await;
            if self.stale {
                return;
            }
        }
        match self.hub.store().history(self.id, &self.epoch, self.last).await {
            Ok(History::Events(frames)) => {
                if !frames.is_empty() {
                    crate::metrics::recovery_gap("recovered");
                }
                for text in frames {
                    let bytes = Bytes::from(text);
                    if let Ok(header) = serde_json::from_slice::<FrameHeader>(&bytes) {
                        if header.offset == self.last + 1 {
                            let offset = header.offset;
                            self.deliver(header, offset, bytes.clone());
                        }
                    }
                }
                self.stale = false;
            }
            Ok(History::Reset) => {
                crate::metrics::recovery_gap("reset");
                self.reset_all().await;
            }
            Err(e) => {
                tracing::warn!(room = %self.id, error = %e, "room recovery failed; retrying");
                self.stale = true;
            }
        }
    }

    /// A new epoch or a gap past the history: every connection gets a snapshot.
    async fn reset_all(&mut self) {
        let snapshot = match self.hub.store().snapshot(self.id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(room = %self.id, error = %e, "room reset failed; retrying");
                self.stale = true;
                return;
            }
        };
        if let Ok(moderation) = self.hub.store().moderation(self.id).await {
            *self.shared.moderation() = Moderation::from_hash(moderation);
        }
        self.epoch = snapshot.epoch.clone();
        self.last = snapshot.offset;
        self.stale = false;
        self.note_session(&snapshot.state);
        for client in &self.clients {
            client.queue.reset_to(snapshot.offset);
            let frame = Frame::control(protocol::snapshot_frame("reset", &snapshot, client.you(), None));
            let _ = client.queue.push(&frame, None, false);
        }
    }

    /// Whether the snapshot says the session is over.
    fn note_session(&mut self, state: &serde_json::Map<String, Value>) {
        let status = state
            .get("session")
            .and_then(|s| s.get("status"))
            .and_then(Value::as_str);
        if matches!(status, Some("ended" | "cancelled")) {
            self.session_ended();
        }
    }

    /// Refuses joins from now on, and closes the connections after the grace period.
    fn session_ended(&mut self) {
        if !self.ended {
            self.ended = true;
            self.close_at = Some(tokio::time::Instant::now() + self.hub.config().session_end_grace());
        }
    }

    /// Applies what nodes must know, then fans the frame out.
    fn deliver(&mut self, header: FrameHeader<'_>, offset: u64, bytes: Bytes) {
        self.last = offset;
        if header.event_type == "session.ended" {
            self.session_ended();
        }
        let lane = Lane::of(header.event_type);
        crate::metrics::event_in(lane);
        if header.event_type.starts_with("moderation.") || header.event_type.starts_with("internal.") {
            let data: Value = header
                .data
                .and_then(|raw| serde_json::from_str(raw.get()).ok())
                .unwrap_or(Value::Null);
            let banned = self.shared.moderation().apply(header.event_type, &data);
            if let Some(user) = banned {
                let locked_out =
                    |c: &&Arc<ClientEntry>| c.user == user && !c.can_host.load(Ordering::Relaxed);
                for client in self.clients.iter().filter(locked_out) {
                    client.queue.close(CloseReason::Banned);
                }
            }
        }
        let counted = header.event_type == "viewers";
        self.shared.busy_since_viewers.store(!counted, Ordering::Relaxed);
        if counted {
            if let Some(count) = header
                .data
                .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
            {
                if let Some(n) = count.get("count").and_then(Value::as_u64) {
                    self.shared.viewers_total.store(n, Ordering::Relaxed);
                }
            }
        }
        if lane == Lane::Internal {
            return;
        }
        let from = header.from.map(|f| f.into_owned());
        let ts_ms = header.ts;
        let Ok(text) = Utf8Bytes::try_from(bytes) else {
            return;
        };
        let frame = Arc::new(Frame {
            offset,
            lane,
            from,
            ts_ms,
            text,
        });
        if ts_ms > 0 {
            crate::metrics::fanout_latency((now_ms() - ts_ms).max(0) as f64 / 1000.0);
        }
        let config = self.hub.config();
        let thin = (lane == Lane::Chat
            && config.chat_thin_per_sec > 0.0
            && self.clients.len() > config.chat_thin_above)
            .then(|| (config.chat_thin_per_sec, Instant::now()));
        let (mut full, mut thinned) = (0, 0);
        for client in &self.clients {
            let own = frame.from.as_deref() == Some(client.user.as_str());
            match client.queue.push(&frame, thin, own) {
                Ok(()) | Err(Refused::Closed) => {}
                Err(Refused::QueueFull) => full += 1,
                Err(Refused::Thinned) => thinned += 1,
                Err(Refused::Overflow) => crate::metrics::slow_close(),
            }
        }
        if full > 0 {
            crate::metrics::chat_dropped("queue_full", full);
        }
        if thinned > 0 {
            crate::metrics::chat_dropped("thinned", thinned);
        }
    }

    /// Fans out a live-only event (no offset): droppable, never recovered.
    fn deliver_live(&self, header: FrameHeader<'_>, bytes: Bytes) {
        let lane = Lane::of(header.event_type);
        if !lane.droppable() {
            tracing::warn!(room = %self.id, event_type = header.event_type, "a must-deliver event without an offset is ignored");
            return;
        }
        let Ok(text) = Utf8Bytes::try_from(bytes) else {
            return;
        };
        let frame = Arc::new(Frame {
            offset: 0,
            lane,
            from: header.from.map(|f| f.into_owned()),
            ts_ms: header.ts,
            text,
        });
        for client in &self.clients {
            let _ = client.queue.push(&frame, None, false);
        }
    }

    async fn join(&mut self, client: Arc<ClientEntry>, resume: Option<(String, u64)>) -> JoinOutcome {
        if self.stale {
            self.recover().await;
            if self.stale {
                return JoinOutcome::Unavailable;
            }
        }
        if self.ended {
            return JoinOutcome::SessionEnded;
        }
        if !client.can_host.load(Ordering::Relaxed) && self.shared.moderation().is_banned(&client.user) {
            return JoinOutcome::Banned;
        }
        let store = &self.hub.store();
        let budget = self.hub.config().send_queue_max_bytes / 2;
        let exact = match &resume {
            Some((epoch, offset)) if *epoch == self.epoch => {
                match store.history(self.id, epoch, *offset).await {
                    // More missed than the send queue could hold: a snapshot is cheaper.
                    Ok(History::Events(frames)) if frames.iter().map(String::len).sum::<usize>() > budget => {
                        None
                    }
                    Ok(History::Events(frames)) => Some((*offset, frames)),
                    Ok(History::Reset) => None,
                    Err(_) => return JoinOutcome::Unavailable,
                }
            }
            _ => None,
        };
        match exact {
            Some((offset, frames)) => {
                client.queue.start_after(offset);
                let missed = frames
                    .iter()
                    .filter(|f| !f.contains("\"type\":\"internal."))
                    .count();
                let resumed = serde_json::json!({
                    "type": "resumed", "epoch": self.epoch, "offset": offset, "missed": missed, "you": client.you(),
                });
                let _ = client
                    .queue
                    .push(&Frame::control(resumed.to_string()), None, false);
                for text in frames {
                    let bytes = Bytes::from(text);
                    let Ok(header) = serde_json::from_slice::<FrameHeader>(&bytes) else {
                        continue;
                    };
                    let lane = Lane::of(header.event_type);
                    if lane == Lane::Internal {
                        // Skipped, but the send queue must still know the offset was passed.
                        client.queue.start_after(header.offset);
                        continue;
                    }
                    let from = header.from.map(|f| f.into_owned());
                    let (offset, ts_ms) = (header.offset, header.ts);
                    let Ok(text) = Utf8Bytes::try_from(bytes) else {
                        continue;
                    };
                    let frame = Arc::new(Frame {
                        offset,
                        lane,
                        from,
                        ts_ms,
                        text,
                    });
                    let _ = client.queue.push(&frame, None, true);
                }
            }
            None => {
                let snapshot = match store.snapshot(self.id).await {
                    Ok(s) => s,
                    Err(_) => return JoinOutcome::Unavailable,
                };
                let kind = if resume.is_some() { "reset" } else { "welcome" };
                client.queue.start_after(snapshot.offset);
                let frame = protocol::snapshot_frame(kind, &snapshot, client.you(), None);
                let _ = client.queue.push(&Frame::control(frame), None, false);
            }
        }
        self.clients.push(client);
        self.shared
            .local_viewers
            .store(self.clients.len(), Ordering::Relaxed);
        JoinOutcome::Joined
    }
}

/// Resolves at `at`, or never.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
