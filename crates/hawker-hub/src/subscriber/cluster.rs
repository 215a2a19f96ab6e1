//! The node's subscriber on a Redis Cluster: sharded pub/sub.
//!
//! Rooms publish with `SPUBLISH`, so an event travels only through the
//! shard that owns its room's slot (the `{<id>}` hash tag of the channel).
//! This task holds one cluster connection (RESP3: messages arrive as pushes)
//! and `SSUBSCRIBE`s each room's channel on the shard that owns it; the
//! client follows `MOVED` and keeps one connection per shard.
//!
//! A subscription can be lost without this task asking:
//! - a node's connection drops (the master died, a partition): the client
//!   reconnects, refreshes the slot map (a replica may have taken over) and
//!   resubscribes what it tracked;
//! - the room's slot moved to another shard (`CLUSTER SETSLOT … NODE`):
//!   Redis tells the subscriber with an `sunsubscribe` push.
//!
//! Either way the room may have missed events. Every room whose
//! subscription is in doubt is marked; a repair pass subscribes it again
//! (on whichever shard now owns it) and, once Redis confirmed, sends the
//! room a `Resync`: it reads what it missed from the history, or resets
//! when the history is gone, exactly as after a reconnection to one Redis.
//! A room subscribed twice for a moment (the client's resubscription and
//! this one) receives an event twice at most, and drops the copy by its
//! offset.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use redis::cluster::ClusterConfig;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, Route as SlotRoute, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{RoomFeed, Route, SubCommand};
use crate::keys::RoomKeys;

/// How soon after a lost subscription the repair pass runs, and how long
/// it waits before trying again while one still fails.
const REPAIR_AFTER: Duration = Duration::from_millis(100);
const REPAIR_RETRY: Duration = Duration::from_millis(500);

/// Why a subscription is in doubt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cause {
    /// Never confirmed, or Redis moved the slot (`sunsubscribe`): nothing
    /// written was lost, the room reads what it missed from the history.
    Unconfirmed,
    /// A shard connection dropped: the shard may have failed over, and the
    /// replica that took over may lack the last writes.
    Dropped,
}

type Doubts = HashMap<String, Cause>;

fn doubt(doubtful: &mut Doubts, channel: String, cause: Cause) {
    let entry = doubtful.entry(channel).or_insert(cause);
    *entry = (*entry).max(cause);
}

pub(super) struct Task {
    pub(super) seeds: Vec<String>,
    pub(super) keys: RoomKeys,
    pub(super) notices_channel: String,
    pub(super) notices: mpsc::UnboundedSender<RoomFeed>,
    pub(super) timeout: Duration,
    pub(super) commands: mpsc::UnboundedReceiver<SubCommand>,
    pub(super) shutdown: CancellationToken,
    pub(super) routes: HashMap<Uuid, Route>,
    /// The run id of the master that owned each slot when a channel of the
    /// slot was last (re)subscribed: a different one later means the shard
    /// failed over (or its master restarted) in between.
    pub(super) masters: HashMap<u16, String>,
    /// Repair passes so far (where the next one starts).
    pub(super) passes: usize,
}

impl Task {
    pub(super) async fn run(mut self) {
        let (push_tx, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
        let Some(mut conn) = self.connect(push_tx.clone()).await else {
            return;
        };
        let mut renewed = tokio::time::Instant::now();
        // Channels whose subscription is in doubt; every channel at first.
        let mut doubtful: Doubts = std::iter::once(self.notices_channel.clone())
            .chain(self.routes.keys().map(|room| self.keys.channel(*room)))
            .map(|channel| (channel, Cause::Unconfirmed))
            .collect();
        let mut first_pass = true;
        let repair = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(repair);
        let mut repair_armed = true;
        let mut health = tokio::time::interval(super::HEALTH_EVERY);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        health.tick().await;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                push = pushes.recv() => {
                    let Some(push) = push else { return };
                    if self.on_push(push, &mut doubtful) && !repair_armed {
                        repair.as_mut().reset(tokio::time::Instant::now() + REPAIR_AFTER);
                        repair_armed = true;
                    }
                }
                command = self.commands.recv() => {
                    let Some(command) = command else { return };
                    match command {
                        SubCommand::Subscribe { room, generation, feed, done } => {
                            let already = self.routes.contains_key(&room);
                            self.routes.insert(room, Route { generation, feed });
                            let channel = self.keys.channel(room);
                            if already && !doubtful.contains_key(&channel) {
                                let _ = done.send(true);
                                continue;
                            }
                            let confirmed = self.ssubscribe(&mut conn, &channel).await;
                            let _ = done.send(confirmed);
                            if confirmed {
                                // A room that was subscribed already may have
                                // missed events while its channel was in doubt.
                                let cause = doubtful.remove(&channel);
                                let feed = self.after_subscribe(&mut conn, &channel, cause).await;
                                if let (true, Some(feed)) = (already, feed) {
                                    if let Some(route) = self.routes.get(&room) {
                                        let _ = route.feed.send(feed);
                                    }
                                }
                            } else {
                                tracing::warn!(%room, "redis subscriber: ssubscribe failed or timed out; retrying");
                                doubt(&mut doubtful, channel, Cause::Unconfirmed);
                                if !repair_armed {
                                    repair.as_mut().reset(tokio::time::Instant::now() + REPAIR_RETRY);
                                    repair_armed = true;
                                }
                            }
                        }
                        SubCommand::Unsubscribe { room, generation } => {
                            if self.routes.get(&room).is_some_and(|r| r.generation == generation) {
                                self.routes.remove(&room);
                                let channel = self.keys.channel(room);
                                doubtful.remove(&channel);
                                let call = conn.sunsubscribe(&channel);
                                if !matches!(tokio::time::timeout(self.timeout, call).await, Ok(Ok(()))) {
                                    // The shard is unreachable: its connection, and
                                    // the subscription with it, are gone or will be.
                                    tracing::debug!(%room, "redis subscriber: sunsubscribe failed");
                                }
                            }
                        }
                    }
                }
                // A shard that stops answering without closing its connection
                // (a partition) delivers nothing and pushes nothing: a PING to
                // every master tells, and its rooms are treated as dropped.
                // A new connection reads the slot map again: the client keeps
                // a silent master's slots after a replica took them over.
                _ = health.tick() => {
                    if !self.every_master_answers(&mut conn).await {
                        tracing::warn!("redis subscriber: a shard stopped answering; its rooms resubscribe");
                        if let Some(fresh) = self.renew(&push_tx, &mut renewed, &mut doubtful).await {
                            conn = fresh;
                        }
                        if !repair_armed {
                            repair.as_mut().reset(tokio::time::Instant::now() + REPAIR_AFTER);
                            repair_armed = true;
                        }
                    }
                }
                _ = &mut repair, if repair_armed => {
                    repair_armed = false;
                    let healed = self.repair(&mut conn, &mut doubtful, !first_pass).await;
                    first_pass = false;
                    if !healed {
                        if let Some(fresh) = self.renew(&push_tx, &mut renewed, &mut doubtful).await {
                            conn = fresh;
                        }
                        repair.as_mut().reset(tokio::time::Instant::now() + REPAIR_RETRY);
                        repair_armed = true;
                    }
                }
            }
        }
    }

    /// Makes the cluster connection (the client connects in the background
    /// and keeps reconnecting). `None` on shutdown or a configuration error.
    async fn connect(&mut self, push_tx: mpsc::UnboundedSender<PushInfo>) -> Option<ClusterConnection> {
        let client = match hawker_redis::cluster_builder(&self.seeds, self.timeout)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "redis subscriber: the cluster seeds are unusable");
                return None;
            }
        };
        let config = ClusterConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_push_sender(push_tx);
        if self.shutdown.is_cancelled() {
            return None;
        }
        Some(client.get_pending_async_connection_with_config(config))
    }

    /// What a push means for the subscriptions. True if some are now in doubt.
    fn on_push(&mut self, push: PushInfo, doubtful: &mut Doubts) -> bool {
        match push.kind {
            PushKind::SMessage | PushKind::Message => {
                let mut data = push.data.into_iter();
                let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
                    return false;
                };
                let (Some(channel), Some(payload)) = (bulk(channel), bulk(payload)) else {
                    return false;
                };
                if channel == self.notices_channel.as_bytes() {
                    let _ = self.notices.send(RoomFeed::Frame(payload));
                    return false;
                }
                let Some(room) = std::str::from_utf8(&channel)
                    .ok()
                    .and_then(|c| self.keys.room_of_channel(c))
                else {
                    return false;
                };
                if let Some(route) = self.routes.get(&room) {
                    let _ = route.feed.send(RoomFeed::Frame(payload));
                }
                false
            }
            // A node's connection dropped: whatever it carried is in doubt
            // (a push does not say which node, so every channel is).
            PushKind::Disconnection => {
                doubt(doubtful, self.notices_channel.clone(), Cause::Dropped);
                for room in self.routes.keys() {
                    doubt(doubtful, self.keys.channel(*room), Cause::Dropped);
                }
                crate::metrics::redis_reconnect();
                tracing::warn!(
                    rooms = self.routes.len(),
                    "redis subscriber: a shard connection dropped"
                );
                true
            }
            // Redis dropped a subscription (its slot moved), or confirmed an
            // unsubscribe this task asked for (the room is gone from routes).
            PushKind::SUnsubscribe => {
                let Some(channel) = push.data.into_iter().next().and_then(bulk) else {
                    return false;
                };
                let Ok(channel) = String::from_utf8(channel.to_vec()) else {
                    return false;
                };
                let wanted = channel == self.notices_channel
                    || self
                        .keys
                        .room_of_channel(&channel)
                        .is_some_and(|room| self.routes.contains_key(&room));
                if wanted {
                    tracing::info!(%channel, "redis subscriber: the shard dropped a subscription (slot moved)");
                    doubt(doubtful, channel, Cause::Unconfirmed);
                }
                wanted
            }
            _ => false,
        }
    }

    /// A new cluster connection, at most once per two timeouts: every
    /// subscription lived on the old one, so every channel is in doubt
    /// (as dropped: its shard may have failed over).
    async fn renew(
        &mut self,
        push_tx: &mpsc::UnboundedSender<PushInfo>,
        renewed: &mut tokio::time::Instant,
        doubtful: &mut Doubts,
    ) -> Option<ClusterConnection> {
        if renewed.elapsed() < self.timeout * 2 {
            return None;
        }
        let fresh = self.connect(push_tx.clone()).await?;
        *renewed = tokio::time::Instant::now();
        doubt(doubtful, self.notices_channel.clone(), Cause::Dropped);
        for room in self.routes.keys() {
            doubt(doubtful, self.keys.channel(*room), Cause::Dropped);
        }
        tracing::warn!(
            rooms = self.routes.len(),
            "redis subscriber: a new cluster connection; every room resubscribes"
        );
        Some(fresh)
    }

    /// Whether every master answers a PING on this connection in time.
    async fn every_master_answers(&self, conn: &mut ClusterConnection) -> bool {
        let all = RoutingInfo::MultiNode((
            MultipleNodeRoutingInfo::AllMasters,
            Some(ResponsePolicy::AllSucceeded),
        ));
        matches!(
            tokio::time::timeout(self.timeout, conn.route_command(redis::cmd("PING"), all)).await,
            Ok(Ok(_))
        )
    }

    async fn ssubscribe(&self, conn: &mut ClusterConnection, channel: &str) -> bool {
        matches!(
            tokio::time::timeout(self.timeout, conn.ssubscribe(channel)).await,
            Ok(Ok(()))
        )
    }

    /// Subscribes every channel in doubt again, on the shard that owns it
    /// now, and tells each room to recover once it is subscribed (`resync`:
    /// not on the first pass, when the rooms have just subscribed
    /// themselves). True when nothing is left in doubt.
    async fn repair(&mut self, conn: &mut ClusterConnection, doubtful: &mut Doubts, resync: bool) -> bool {
        let mut channels: Vec<(String, Cause)> = doubtful.iter().map(|(c, why)| (c.clone(), *why)).collect();
        // Each call to a shard that does not answer costs a whole timeout:
        // a pass gives up after a few, starting somewhere else each time so
        // one dead shard does not hold up the rooms of the others.
        self.passes = self.passes.wrapping_add(1);
        if !channels.is_empty() {
            let start = self.passes % channels.len();
            channels.rotate_left(start);
        }
        let mut repaired = 0usize;
        let mut failures = 0;
        for (channel, cause) in channels {
            if !self.ssubscribe(conn, &channel).await {
                failures += 1;
                if failures >= 3 {
                    break;
                }
                continue;
            }
            let Some(feed) = self.after_subscribe(conn, &channel, Some(cause)).await else {
                // The shard did not say who it is: ask again on the next pass.
                continue;
            };
            doubtful.remove(&channel);
            repaired += 1;
            if !resync {
                continue;
            }
            if channel == self.notices_channel {
                let _ = self.notices.send(RoomFeed::Resync);
            } else if let Some(route) = self
                .keys
                .room_of_channel(&channel)
                .and_then(|room| self.routes.get(&room))
            {
                let _ = route.feed.send(feed);
            }
        }
        if repaired > 0 && resync {
            tracing::info!(
                repaired,
                left = doubtful.len(),
                "redis subscriber: subscriptions repaired; rooms recover from history"
            );
        }
        // Commands that came meanwhile are handled by the main loop.
        doubtful.is_empty()
    }

    /// After `channel` was (re)subscribed: what its room must do, by why it
    /// was in doubt. `Failover` when a dropped connection hid a change of
    /// the slot's master; `Resync` otherwise. Records the slot's master.
    /// `None` when a dropped channel's master cannot be asked now.
    async fn after_subscribe(
        &mut self,
        conn: &mut ClusterConnection,
        channel: &str,
        cause: Option<Cause>,
    ) -> Option<RoomFeed> {
        let slot = hawker_redis::slot::key_slot(channel.as_bytes());
        // A new room of a slot already recorded need not ask again; after a
        // drop or a move the master may have changed, so it is asked.
        if cause.is_none() && self.masters.contains_key(&slot) {
            return Some(RoomFeed::Resync);
        }
        let now = self.master_run_id(conn, slot).await;
        let before = match &now {
            Some(id) => self.masters.insert(slot, id.clone()),
            None => self.masters.get(&slot).cloned(),
        };
        match cause {
            Some(Cause::Dropped) => {
                let now = now?;
                if before.as_deref() == Some(now.as_str()) {
                    Some(RoomFeed::Resync)
                } else {
                    tracing::warn!(%channel, slot, "redis subscriber: the room's shard failed over; the room starts a new epoch");
                    Some(RoomFeed::Failover)
                }
            }
            Some(Cause::Unconfirmed) | None => Some(RoomFeed::Resync),
        }
    }

    /// The run id of the master that owns `slot` now (`INFO server`).
    async fn master_run_id(&self, conn: &mut ClusterConnection, slot: u16) -> Option<String> {
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(SlotRoute::new(
            slot,
            SlotAddr::Master,
        )));
        let mut info = redis::cmd("INFO");
        info.arg("server");
        let reply = tokio::time::timeout(self.timeout, conn.route_command(info, route))
            .await
            .ok()?
            .ok()?;
        let text: String = redis::from_redis_value(reply).ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .map(|id| id.trim().to_string())
    }
}

fn bulk(value: Value) -> Option<Bytes> {
    match value {
        Value::BulkString(bytes) => Some(Bytes::from(bytes)),
        Value::SimpleString(s) => Some(Bytes::from(s.into_bytes())),
        _ => None,
    }
}
