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

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use redis::cluster::ClusterConfig;
use redis::cluster_async::ClusterConnection;
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

pub(super) struct Task {
    pub(super) seeds: Vec<String>,
    pub(super) keys: RoomKeys,
    pub(super) notices_channel: String,
    pub(super) notices: mpsc::UnboundedSender<RoomFeed>,
    pub(super) timeout: Duration,
    pub(super) commands: mpsc::UnboundedReceiver<SubCommand>,
    pub(super) shutdown: CancellationToken,
    pub(super) routes: HashMap<Uuid, Route>,
}

impl Task {
    pub(super) async fn run(mut self) {
        let (push_tx, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
        let Some(mut conn) = self.connect(push_tx).await else {
            return;
        };
        // Channels whose subscription is in doubt; every channel at first.
        let mut doubtful: HashSet<String> = std::iter::once(self.notices_channel.clone())
            .chain(self.routes.keys().map(|room| self.keys.channel(*room)))
            .collect();
        let mut first_pass = true;
        let repair = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(repair);
        let mut repair_armed = true;
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
                            if already && !doubtful.contains(&channel) {
                                let _ = done.send(true);
                                continue;
                            }
                            let confirmed = self.ssubscribe(&mut conn, &channel).await;
                            let _ = done.send(confirmed);
                            if confirmed {
                                // A room that was subscribed already may have
                                // missed events while its channel was in doubt.
                                if doubtful.remove(&channel) && already {
                                    if let Some(route) = self.routes.get(&room) {
                                        let _ = route.feed.send(RoomFeed::Resync);
                                    }
                                }
                            } else {
                                tracing::warn!(%room, "redis subscriber: ssubscribe failed or timed out; retrying");
                                doubtful.insert(channel);
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
                _ = &mut repair, if repair_armed => {
                    repair_armed = false;
                    let healed = self.repair(&mut conn, &mut doubtful, !first_pass).await;
                    first_pass = false;
                    if !healed {
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
    fn on_push(&mut self, push: PushInfo, doubtful: &mut HashSet<String>) -> bool {
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
                doubtful.insert(self.notices_channel.clone());
                doubtful.extend(self.routes.keys().map(|room| self.keys.channel(*room)));
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
                    doubtful.insert(channel);
                }
                wanted
            }
            _ => false,
        }
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
    async fn repair(
        &mut self,
        conn: &mut ClusterConnection,
        doubtful: &mut HashSet<String>,
        resync: bool,
    ) -> bool {
        let channels: Vec<String> = doubtful.iter().cloned().collect();
        let mut repaired = 0usize;
        for channel in channels {
            if !self.ssubscribe(conn, &channel).await {
                continue;
            }
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
                let _ = route.feed.send(RoomFeed::Resync);
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
}

fn bulk(value: Value) -> Option<Bytes> {
    match value {
        Value::BulkString(bytes) => Some(Bytes::from(bytes)),
        Value::SimpleString(s) => Some(Bytes::from(s.into_bytes())),
        _ => None,
    }
}
