//! The node's hub: its rooms, the Redis store and subscriber, the periodic
//! likes/viewer announcements, and the interface other crates publish through.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use hawker_core::Role;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::HubConfig;
use crate::event::Publication;
use crate::keys::RoomKeys;
use crate::room::{RoomHandle, RoomHost, RoomInput};
use crate::store::{ModChange, RoomStore, ViewerReport};
use crate::subscriber::Subscriber;

/// Who is on a socket and what they may do in this room. The server works
/// this out (token, session, roster) before handing the socket over.
#[derive(Debug, Clone)]
pub struct Member {
    pub user: String,
    pub role: Role,
    /// May send host messages, pin, launch deals (the session's host, its agency, admin).
    pub can_host: bool,
    /// May mute, ban, set slow mode and blocked words (hosts and granted moderators).
    pub can_moderate: bool,
    /// The name others see in presence notices, where one is known (a
    /// host's display name, or the token's `name` claim); `None` shows the id.
    pub name: Option<String>,
    /// When the socket's token expires (seconds since the Unix epoch): the
    /// socket is closed then with 4011, so it never outlives its token.
    pub token_expires_at: Option<i64>,
}

/// A publish that did not happen (or whose outcome is unknown).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("redis is unavailable: {0}")]
    Unavailable(#[from] redis::RedisError),
}

pub(crate) struct Inner {
    pub config: HubConfig,
    pub node_id: String,
    pub store: RoomStore,
    pub subscriber: Subscriber,
    pub rooms: Mutex<HashMap<Uuid, RoomHandle>>,
    pub generation: AtomicU64,
    pub sockets: AtomicUsize,
    pub sockets_per_user: Mutex<HashMap<String, usize>>,
    /// Where durable events wait to be relayed (`None`: no durable relay on this node).
    pub db: Option<sqlx::PgPool>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    /// This node's sockets by user, for notices.
    pub notices: crate::notices::router::NoticeRouter,
    /// Notice ids queued to a socket, not yet written down as delivered.
    pub notices_delivered: Mutex<Vec<i64>>,
    /// Wakes the notice relay (a notice was just committed on this node).
    pub notice_relay_now: Arc<tokio::sync::Notify>,
}

/// The node's hub. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<Inner>,
}

/// Why a socket was not admitted before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NodeFull,
    TooManyForUser,
}

/// A reserved socket slot; released on drop.
pub struct SocketPermit {
    hub: Hub,
    user: String,
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        self.hub.inner.sockets.fetch_sub(1, Ordering::Relaxed);
        let mut per_user = self
            .hub
            .inner
            .sockets_per_user
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                per_user.remove(&self.user);
            }
        }
        crate::metrics::socket_closed();
    }
}

/// Rooms whose likes (or viewer announcements) run at once in a tick.
const TICK_ROOMS_AT_ONCE: usize = 64;

/// Rooms whose viewer reports go to Redis in one pipeline at most.
const REPORTS_AT_ONCE: usize = 512;

/// Slots per `hub.likes_interval_ms` and per `hub.ping_interval_secs`:
/// each room does its periodic work (likes, viewer report and count,
/// pings) in its own slot of the interval, chosen by its id, so a node's
/// thousands of rooms spread their Redis calls, events and socket writes
/// over the interval instead of doing them all at one instant (which held
/// every other event up behind them).
const TICK_SLOTS: u64 = 5;
const PING_SLOTS: u64 = 25;

/// A room with more sockets than this on the node pings them in
/// [`PING_SLOTS`] shares (by socket id) instead of all in its slot, so a
/// big room's pings do not hold its events up either.
const PING_AT_ONCE: usize = 256;

/// A calm room (its local count unchanged and no events since its last
/// `viewers`, for [`SETTLE_INTERVALS`] intervals) is reported again once
/// this many intervals have passed since its last report, by the clock, so
/// a node whose ticks run late still refreshes its count in time
/// ([`crate::store::FRESH_INTERVALS`]): the same margin as when every slot
/// reported.
const REFRESH_INTERVALS: u64 = 3;

/// After its count moves or it has events, a room is reported at each of
/// this many intervals, so the new total is announced even when another
/// node held the announcement gate in the first.
const SETTLE_INTERVALS: u64 = 3;

/// Whether a room whose viewer slot has come sends its report now (see
/// [`REFRESH_INTERVALS`]), at `now_ms` with viewer intervals of
/// `interval_ms`. Called once per slot, it counts the calm intervals.
fn report_due(shared: &crate::room::RoomShared, now_ms: u64, interval_ms: u64) -> bool {
    let local = shared.local_viewers.load(Ordering::Relaxed);
    let moved = shared.reported_viewers.swap(local, Ordering::Relaxed) != local;
    let stirred = moved
        || shared.busy_since_viewers.load(Ordering::Relaxed)
        || shared.here_dirty.load(Ordering::Relaxed);
    let calm = if stirred {
        0
    } else {
        shared.calm_intervals.load(Ordering::Relaxed).saturating_add(1)
    };
    shared.calm_intervals.store(calm, Ordering::Relaxed);
    // Half an interval early: slots a few ms apart must not skip one.
    let refresh_ms = (REFRESH_INTERVALS * interval_ms).saturating_sub(interval_ms / 2);
    let last = shared.reported_at_ms.load(Ordering::Relaxed);
    let due = calm < SETTLE_INTERVALS || now_ms.saturating_sub(last) >= refresh_ms;
    if due {
        shared.reported_at_ms.store(now_ms, Ordering::Relaxed);
    }
    due
}

/// A room's slot among `slots` (fixed by its id, the same on every node):
/// the low 64 bits of the id (random in a v4 id) modulo `slots`, a 64-bit
/// division, since the ticker asks this of every room ten times a second.
fn slot_of(room: Uuid, slots: u64) -> u64 {
    room.as_u64_pair().1 % slots.max(1)
}

/// Whether slot `n` (counted from 0, one per tick) is `room`'s, in a cycle
/// of `slots`.
fn due(room: Uuid, n: u64, slots: u64) -> bool {
    slot_of(room, slots) == n % slots.max(1)
}

impl Hub {
    /// Starts the hub's subscriber and ticker tasks (tracked, stopped by
    /// `shutdown`). Every Redis call waits at most `redis_timeout`; every key
    /// and channel starts with `config.key_prefix`.
    pub fn start(
        config: HubConfig,
        redis_timeout: Duration,
        redis: hawker_redis::Redis,
        subscribe_via: crate::subscriber::Source,
        db: Option<sqlx::PgPool>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Hub {
        let keys = RoomKeys::new(&config.key_prefix);
        let store = RoomStore::new(
            redis,
            keys.clone(),
            config.history_len,
            config.room_ttl_secs,
            redis_timeout,
            config.command_thread,
        )
        .with_dedupe_retention(
            config.retention.dedupe_max_age,
            config.retention.dedupe_max_entries,
        );
        let (notice_tx, notice_feed) = tokio::sync::mpsc::unbounded_channel();
        let (subscriber, subscriber_task) = Subscriber::start(
            subscribe_via,
            keys,
            redis_timeout,
            notice_tx,
            shutdown.clone(),
            config.ingest_thread,
        );
        let node_id = Uuid::new_v4().simple().to_string()[..12].to_string();
        let hub = Hub {
            inner: Arc::new(Inner {
                config,
                node_id,
                store,
                subscriber,
                rooms: Mutex::new(HashMap::new()),
                generation: AtomicU64::new(1),
                sockets: AtomicUsize::new(0),
                sockets_per_user: Mutex::new(HashMap::new()),
                db,
                shutdown,
                tasks: tasks.clone(),
                notices: Default::default(),
                notices_delivered: Mutex::new(Vec::new()),
                notice_relay_now: Arc::new(tokio::sync::Notify::new()),
            }),
        };
        tasks.spawn(async move {
            let _ = subscriber_task.await;
        });
        tasks.spawn(hub.clone().tick());
        tasks.spawn(hub.clone().ping());
        if hub.inner.db.is_some() {
            let every = Duration::from_millis(hub.inner.config.durable_relay_ms);
            tasks.spawn(crate::durable::run_relay(
                hub.clone(),
                every,
                hub.inner.shutdown.clone(),
            ));
            tasks.spawn(crate::notices::relay::run_relay(
                hub.clone(),
                every,
                hub.inner.shutdown.clone(),
            ));
        }
        if let Some(db) = hub.inner.db.clone() {
            tasks.spawn(crate::retention::run_outbox_sweeper(
                db,
                hub.inner.config.retention,
                hub.inner.shutdown.clone(),
            ));
        }
        // Without a database there are no notices, but the feed is drained.
        tasks.spawn(crate::notices::relay::run_feed(
            hub.clone(),
            notice_feed,
            hub.inner.shutdown.clone(),
        ));
        hub
    }

    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Publishes an event into a room, on every node. Returns its offset.
    #[tracing::instrument(skip_all, fields(%room, event_type = %publication.event_type))]
    pub async fn publish(&self, room: Uuid, publication: Publication) -> Result<u64, PublishError> {
        self.publish_with(room, publication, &[]).await
    }

    pub(crate) async fn publish_with(
        &self,
        room: Uuid,
        publication: Publication,
        mod_changes: &[ModChange],
    ) -> Result<u64, PublishError> {
        let (_, offset) = self.inner.store.publish(room, &publication, mod_changes).await?;
        Ok(offset)
    }

    /// [`Hub::publish_with`] in two steps: the publication takes its place
    /// in the node's publish order when this returns; the future is its offset.
    pub(crate) fn queue_publish(
        &self,
        room: Uuid,
        publication: &Publication,
        mod_changes: &[ModChange],
    ) -> Result<impl std::future::Future<Output = Result<u64, PublishError>> + Send + 'static, PublishError>
    {
        let queued = self.inner.store.queue_publish(room, publication, mod_changes)?;
        Ok(async move { Ok(queued.await?.1) })
    }

    /// The room's current snapshot (state and offset).
    pub async fn snapshot(&self, room: Uuid) -> Result<crate::store::Snapshot, PublishError> {
        Ok(self.inner.store.snapshot(room).await?)
    }

    /// The room's bans still in force, ordered by user id: `(user, until)`,
    /// `until` in ms since the Unix epoch.
    pub async fn bans(&self, room: Uuid) -> Result<Vec<(String, i64)>, PublishError> {
        let now = crate::event::now_ms();
        let mut bans: Vec<(String, i64)> = self
            .inner
            .store
            .moderation(room)
            .await?
            .into_iter()
            .filter_map(|(field, until)| {
                let user = field.strip_prefix("ban:")?;
                let until: i64 = until.parse().ok()?;
                (until > now).then(|| (user.to_string(), until))
            })
            .collect();
        bans.sort();
        Ok(bans)
    }

    /// Lifts `user`'s ban in `room` (published as `moderation.unbanned`, `by`
    /// the caller, even when there was none). Returns the event's offset.
    pub async fn unban(&self, room: Uuid, user: &str, by: &str) -> Result<u64, PublishError> {
        let (publication, change) = crate::moderation::lift(user, by, "moderation.unbanned", "ban");
        self.publish_with(room, publication, &[change]).await
    }

    /// Reserves a socket slot for `user`, or says why not.
    pub fn admit(&self, user: &str) -> Result<SocketPermit, Refusal> {
        let config = &self.inner.config;
        let mut per_user = self
            .inner
            .sockets_per_user
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let count = per_user.get(user).copied().unwrap_or(0);
        if count >= config.max_sockets_per_user {
            return Err(Refusal::TooManyForUser);
        }
        if self.inner.sockets.fetch_add(1, Ordering::Relaxed) >= config.max_sockets {
            self.inner.sockets.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::NodeFull);
        }
        per_user.insert(user.to_string(), count + 1);
        crate::metrics::socket_opened();
        Ok(SocketPermit {
            hub: self.clone(),
            user: user.to_string(),
        })
    }

    /// Sockets open on this node.
    pub fn sockets(&self) -> usize {
        self.inner.sockets.load(Ordering::Relaxed)
    }

    /// Rooms open on this node.
    pub fn rooms(&self) -> usize {
        self.inner.rooms.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// The handle of a room, opening it on this node if needed, and sends it `input`.
    /// Sending under the map's lock means a room that is closing either sees
    /// this input or is already gone from the map (so a new one opens).
    pub(crate) fn send_to_room(&self, room: Uuid, input: RoomInput) -> RoomHandle {
        let mut rooms = self.inner.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let handle = rooms
            .entry(room)
            .or_insert_with(|| {
                let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed);
                crate::room::open(self.clone(), room, generation)
            })
            .clone();
        let _ = handle.tx.send(input);
        crate::metrics::rooms(rooms.len());
        handle
    }

    /// Every `likes_interval_ms`: sum this node's likes into the room total
    /// and announce it (at most once per interval across nodes); every
    /// `viewers_interval_ms`: report this node's viewers and announce the
    /// total. Each room in its own slot of the interval ([`TICK_SLOTS`]).
    async fn tick(self) {
        let config = &self.inner.config;
        // At least 1 ms, as every grid timer (`ticks::interval`).
        let slot =
            Duration::from_micros(config.likes_interval_ms * 1000 / TICK_SLOTS).max(Duration::from_millis(1));
        let mut interval = hawker_core::ticks::interval(slot);
        let viewer_slots = TICK_SLOTS * (config.viewers_interval_ms / config.likes_interval_ms).max(1);
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            n += 1;
            let now_ms = u64::try_from(crate::event::now_ms()).unwrap_or(0);
            // Likes: each room with some to add, concurrently (at most
            // `TICK_ROOMS_AT_ONCE`), so their Redis calls share the
            // connection's pipeline; a room with none is passed over
            // without a future or a Redis call. Viewer reports: every due
            // room's in one pipeline.
            let rooms = self.rooms_where(|room| {
                let viewers_due = due(room.id, n, viewer_slots)
                    && report_due(&room.shared, now_ms, config.viewers_interval_ms);
                let likes = (room.shared.likes_pending.load(Ordering::Relaxed) > 0
                    || room.shared.likes_dirty.load(Ordering::Relaxed))
                    && (viewers_due || due(room.id, n, TICK_SLOTS));
                (viewers_due || likes).then_some((viewers_due, likes))
            });
            let hub = &self;
            futures_util::stream::iter(rooms.iter().filter(|(_, (_, likes))| *likes))
                .for_each_concurrent(TICK_ROOMS_AT_ONCE, |(room, _)| async move {
                    if let Err(e) = hub.announce_likes(room).await {
                        tracing::debug!(error = %e, "likes announcement deferred");
                    }
                })
                .await;
            let reporting: Vec<&RoomHandle> = rooms
                .iter()
                .filter(|(_, (viewers_due, _))| *viewers_due)
                .map(|(room, _)| room)
                .collect();
            for chunk in reporting.chunks(REPORTS_AT_ONCE) {
                self.report_viewers(chunk).await;
            }
        }
    }

    /// The viewer reports of `rooms`, in one pipeline; then the counts this
    /// node announces, and the presence hashes whose change could not be
    /// written.
    async fn report_viewers(&self, rooms: &[&RoomHandle]) {
        let reports: Vec<ViewerReport> = rooms
            .iter()
            .map(|room| ViewerReport {
                room: room.id,
                count: room.shared.local_viewers.load(Ordering::Relaxed),
                here: crate::presence::here_key(self, room.id, &self.inner.node_id),
            })
            .collect();
        let gate = self.inner.config.viewers_interval_ms;
        let answers = self
            .inner
            .store
            .report_viewers(
                &self.inner.node_id,
                &reports,
                gate,
                crate::presence::HERE_TTL_SECS,
            )
            .await;
        let totals: Vec<(&RoomHandle, u64)> = match answers {
            Ok(answers) => rooms
                .iter()
                .zip(answers)
                .filter_map(|(room, answer)| match answer {
                    Ok(total) => total.map(|t| (*room, t)),
                    Err(e) => {
                        tracing::debug!(error = %e, "viewer count deferred");
                        None
                    }
                })
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "viewer counts deferred");
                Vec::new()
            }
        };
        futures_util::stream::iter(totals)
            .for_each_concurrent(TICK_ROOMS_AT_ONCE, |(room, total)| async move {
                if let Err(e) = self.announce_viewers(room, total).await {
                    tracing::debug!(error = %e, "viewer count deferred");
                }
            })
            .await;
        // The report refreshed each presence hash's expiry; a change that
        // could not be written rewrites the hash.
        for room in rooms
            .iter()
            .filter(|r| r.shared.here_dirty.load(Ordering::Relaxed))
        {
            if let Err(e) = self.rewrite_here(room).await {
                tracing::debug!(error = %e, "presence rewrite deferred");
            }
        }
    }

    /// The rooms open on this node for which `pick` says something, with it.
    fn rooms_where<T>(&self, mut pick: impl FnMut(&RoomHandle) -> Option<T>) -> Vec<(RoomHandle, T)> {
        let rooms = self.inner.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms
            .values()
            .filter_map(|room| pick(room).map(|t| (room.clone(), t)))
            .collect()
    }

    /// The node's one ping timer: every `hub.ping_interval_secs`, each room
    /// asks its sockets to ping their peers (an idle socket is closed then),
    /// each room in its own slot of the interval ([`PING_SLOTS`]), a large
    /// room a share of its sockets in every slot ([`PING_AT_ONCE`]).
    async fn ping(self) {
        let slot = (self.inner.config.ping_interval() / PING_SLOTS as u32).max(Duration::from_millis(1));
        let mut interval = hawker_core::ticks::interval(slot);
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            n += 1;
            // A large room is told every slot, and pings a slot's share of
            // its sockets each time.
            let rooms = self.rooms_where(|room| {
                if room.shared.local_viewers.load(Ordering::Relaxed) > PING_AT_ONCE {
                    Some(PING_SLOTS)
                } else {
                    due(room.id, n, PING_SLOTS).then_some(1)
                }
            });
            for (room, of) in rooms {
                let _ = room.tx.send(crate::room::RoomInput::Ping { n, of });
            }
        }
    }

    async fn announce_likes(&self, room: &RoomHandle) -> Result<(), PublishError> {
        let shared = &room.shared;
        let delta = shared.likes_pending.swap(0, Ordering::Relaxed);
        let dirty = shared.likes_dirty.swap(false, Ordering::Relaxed);
        if delta == 0 && !dirty {
            return Ok(());
        }
        match self
            .inner
            .store
            .add_likes(room.id, delta, self.inner.config.likes_interval_ms)
            .await
        {
            Ok(Some(total)) => {
                let publication =
                    Publication::new("likes", json!({ "total": total })).set_state("likes", json!(total));
                if let Err(e) = self.publish(room.id, publication).await {
                    shared.likes_dirty.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
            Ok(None) => shared.likes_dirty.store(true, Ordering::Relaxed),
            Err(e) => {
                shared.likes_pending.fetch_add(delta, Ordering::Relaxed);
                shared.likes_dirty.store(dirty, Ordering::Relaxed);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Announces `total`, the room's count this node may announce this
    /// interval, unless it would repeat itself.
    async fn announce_viewers(&self, room: &RoomHandle, total: u64) -> Result<(), PublishError> {
        // Unchanged counts are repeated only every fifth interval (a
        // heartbeat, which mends a count a full send queue dropped), so a
        // busy room does not fill its history, and only when the room had
        // other events since, so a quiet room costs nothing.
        let beat = room.shared.viewers_beat.fetch_add(1, Ordering::Relaxed);
        let busy = room.shared.busy_since_viewers.load(Ordering::Relaxed);
        if total == room.shared.viewers_total.load(Ordering::Relaxed) && (beat % 5 != 0 || !busy) {
            return Ok(());
        }
        let publication =
            Publication::new("viewers", json!({ "count": total })).set_state("viewers", json!(total));
        self.publish(room.id, publication).await.map(|_| ())
    }

    /// Sends `room` the likes of one viewer tap (or a burst of them).
    pub(crate) fn add_likes(&self, room: &RoomHandle, count: u64) {
        room.shared.likes_pending.fetch_add(count, Ordering::Relaxed);
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
}

/// The services a room's task uses, and the registry it leaves when idle.
impl RoomHost for Hub {
    fn store(&self) -> &RoomStore {
        &self.inner.store
    }

    fn subscriber(&self) -> &Subscriber {
        &self.inner.subscriber
    }

    fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    fn close_if_idle(&self, room: Uuid, generation: u64, idle: &dyn Fn() -> bool) -> bool {
        let mut rooms = self.inner.rooms.lock().unwrap_or_else(|p| p.into_inner());
        match rooms.get(&room) {
            Some(handle) if handle.generation == generation && idle() => {
                rooms.remove(&room);
                crate::metrics::rooms(rooms.len());
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub_with(config: HubConfig, shutdown: &CancellationToken) -> Hub {
        let target = hawker_redis::Target::from_settings("redis://127.0.0.1:6379", &[]).unwrap();
        let timeout = Duration::from_secs(1);
        let redis = hawker_redis::Redis::connect_lazy(&target, timeout).unwrap();
        let source = crate::subscriber::Source::from_target(&target).unwrap();
        Hub::start(
            config,
            timeout,
            redis,
            source,
            None,
            shutdown.clone(),
            TaskTracker::new(),
        )
    }

    /// Whether a room opened from the hub's own runtime adds a task there.
    /// Counted from a task on the runtime's one worker, with no await
    /// between the two counts: no other task of the runtime (the hubs'
    /// own, ending after their shutdown) can start or end in between. (The
    /// test's body runs beside the worker, not on it.)
    async fn room_runs_on_the_callers_runtime(config: HubConfig) -> bool {
        let counted = tokio::spawn(async move {
            let shutdown = CancellationToken::new();
            let hub = hub_with(config, &shutdown);
            let main = tokio::runtime::Handle::current().metrics();
            let before = main.num_alive_tasks();
            hub.send_to_room(Uuid::new_v4(), RoomInput::Ping { n: 0, of: 1 });
            assert_eq!(hub.rooms(), 1);
            let here = main.num_alive_tasks() == before + 1;
            shutdown.cancel();
            here
        });
        counted.await.expect("the counting task")
    }

    /// With `hub.command_thread` every room runs on that thread, whoever
    /// opens it (a viewer joining first opens it from the main runtime);
    /// without it, on the node's runtime.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_room_runs_on_the_command_thread_whoever_opens_it() {
        assert!(HubConfig::default().command_thread);
        assert!(!room_runs_on_the_callers_runtime(HubConfig::default()).await);
        let off = HubConfig {
            command_thread: false,
            ..HubConfig::default()
        };
        assert!(room_runs_on_the_callers_runtime(off).await);
    }

    #[test]
    fn each_room_is_due_once_per_cycle_and_rooms_spread_over_the_slots() {
        let rooms: Vec<Uuid> = (0..2000).map(|_| Uuid::new_v4()).collect();
        let slots = 20;
        let mut per_slot = vec![0usize; slots as usize];
        for room in &rooms {
            let due_at: Vec<u64> = (0..slots).filter(|&n| due(*room, n, slots)).collect();
            assert_eq!(due_at.len(), 1, "{room}: {due_at:?}");
            // The same slot in every cycle.
            assert!(due(*room, due_at[0] + 3 * slots, slots));
            per_slot[due_at[0] as usize] += 1;
        }
        // 100 rooms per slot on average; none takes a large share.
        assert!(per_slot.iter().all(|&k| (40..=180).contains(&k)), "{per_slot:?}");
        // A room's viewer slot is one of its likes slots (the cycle is a multiple).
        for room in &rooms {
            for n in 0..slots {
                if due(*room, n, slots) {
                    assert!(due(*room, n, TICK_SLOTS));
                }
            }
        }
    }
}
