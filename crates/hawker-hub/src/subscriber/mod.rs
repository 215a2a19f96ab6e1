//! The node's one Redis subscriber connection (on a cluster, one per
//! shard: [`cluster`]).
//!
//! One task owns the pub/sub connection. Rooms ask it to subscribe (and
//! wait for Redis to confirm, so nothing published after the confirmation
//! is missed) and to unsubscribe when the node's last viewer leaves. When
//! the connection drops, the task reconnects forever with a capped backoff,
//! resubscribes every room, and tells each room to recover what it may have
//! missed from the history.
//!
//! With `hub.ingest_thread`, the task runs on the process's **ingest
//! thread** ([`ingest`]), a runtime of its own, with its connections: a
//! message published into a busy node reaches its room without first
//! waiting behind every socket writer queued on the node's runtime.
//!
//! Every wait on Redis is bounded by the Redis timeout: connecting,
//! (re)subscribing, unsubscribing, and a PING sent on the connection every
//! [`HEALTH_EVERY`]. A Redis that stops answering without closing the
//! connection (a blackholed path) is therefore noticed within one ping and
//! treated like a lost connection, instead of leaving rooms subscribed to a
//! connection that delivers nothing.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::ingest;
use crate::keys::RoomKeys;

mod cluster;

/// Where the subscriber listens: one Redis server (`SUBSCRIBE`) or a
/// Redis Cluster (`SSUBSCRIBE` on each room's shard).
#[derive(Clone)]
pub enum Source {
    Server(redis::Client),
    Cluster(Vec<String>),
}

impl Source {
    pub fn from_target(target: &hawker_redis::Target) -> redis::RedisResult<Source> {
        Ok(match target {
            hawker_redis::Target::Single(url) => Source::Server(redis::Client::open(url.as_str())?),
            hawker_redis::Target::Cluster(seeds) => Source::Cluster(seeds.clone()),
        })
    }
}

/// How often the subscriber checks that Redis still answers on its connection.
pub const HEALTH_EVERY: Duration = Duration::from_secs(5);

/// What the subscriber hands a room.
#[derive(Debug)]
pub enum RoomFeed {
    /// A published frame, as bytes.
    Frame(Bytes),
    /// The subscription was re-established after an outage: events may have been missed.
    Resync,
    /// As `Resync`, and the room's shard failed over meanwhile: its last
    /// writes may be lost, so offsets may be handed out again. The room
    /// starts a new epoch (its viewers get a `reset`).
    Failover,
}

pub enum SubCommand {
    Subscribe {
        room: Uuid,
        generation: u64,
        feed: mpsc::UnboundedSender<RoomFeed>,
        done: oneshot::Sender<bool>,
    },
    Unsubscribe {
        room: Uuid,
        generation: u64,
    },
}

#[derive(Clone)]
pub struct Subscriber {
    commands: mpsc::UnboundedSender<SubCommand>,
    /// A room waits at most this long for a confirmation.
    confirm_within: Duration,
}

impl Subscriber {
    /// Starts the subscriber task, on the ingest thread if `own_thread`
    /// (`hub.ingest_thread`), else on the caller's runtime.
    /// Every call to Redis gives up after `timeout`.
    /// The notices channel is subscribed on every connection; its frames go
    /// to `notices` (and a `Resync` after each reconnection).
    pub fn start(
        source: Source,
        keys: RoomKeys,
        timeout: Duration,
        notices: mpsc::UnboundedSender<RoomFeed>,
        shutdown: CancellationToken,
        own_thread: bool,
    ) -> (Subscriber, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = match source {
            Source::Server(client) => ingest::spawn(
                own_thread,
                Task {
                    client,
                    notices_channel: keys.notices_channel(),
                    notices,
                    keys,
                    timeout,
                    commands: rx,
                    shutdown,
                    routes: HashMap::new(),
                }
                .run(),
            ),
            Source::Cluster(seeds) => ingest::spawn(
                own_thread,
                cluster::Task {
                    seeds,
                    notices_channel: keys.notices_channel(),
                    notices,
                    keys,
                    timeout,
                    commands: rx,
                    shutdown,
                    routes: HashMap::new(),
                    masters: HashMap::new(),
                    passes: 0,
                }
                .run(),
            ),
        };
        let subscriber = Subscriber {
            commands: tx,
            // A command may wait behind one other bounded call.
            confirm_within: timeout * 2,
        };
        (subscriber, handle)
    }

    /// Subscribes `room`'s channel and resolves once Redis confirmed it
    /// (`true`), or with `false` when the connection is down or Redis did not
    /// confirm in time (a `Resync` follows once the subscription is made).
    pub async fn subscribe(
        &self,
        room: Uuid,
        generation: u64,
        feed: mpsc::UnboundedSender<RoomFeed>,
    ) -> bool {
        let (done, confirmed) = oneshot::channel();
        if self
            .commands
            .send(SubCommand::Subscribe {
                room,
                generation,
                feed,
                done,
            })
            .is_err()
        {
            return false;
        }
        tokio::time::timeout(self.confirm_within, confirmed)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false)
    }

    pub fn unsubscribe(&self, room: Uuid, generation: u64) {
        let _ = self.commands.send(SubCommand::Unsubscribe { room, generation });
    }
}

pub(crate) struct Route {
    pub(crate) generation: u64,
    pub(crate) feed: mpsc::UnboundedSender<RoomFeed>,
}

struct Task {
    client: redis::Client,
    keys: RoomKeys,
    /// `<prefix>:notices`, subscribed for as long as the connection lives.
    notices_channel: String,
    notices: mpsc::UnboundedSender<RoomFeed>,
    timeout: Duration,
    commands: mpsc::UnboundedReceiver<SubCommand>,
    shutdown: CancellationToken,
    routes: HashMap<Uuid, Route>,
}

/// Why the connected phase ended.
enum Ended {
    /// Shutdown, or every sender is gone.
    Stop,
    /// The connection is lost or no longer answers: reconnect.
    Lost,
}

impl Task {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(50);
        let mut first = true;
        loop {
            let Some(pubsub) = self.connect(&mut backoff).await else {
                return;
            };
            let (mut sink, stream) = pubsub.split();
            if !self.resubscribe(&mut sink).await {
                if !self.pause(backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            if !first {
                crate::metrics::redis_reconnect();
                tracing::info!(
                    rooms = self.routes.len(),
                    "redis subscriber reconnected; rooms recover from history"
                );
                for route in self.routes.values() {
                    let _ = route.feed.send(RoomFeed::Resync);
                }
                let _ = self.notices.send(RoomFeed::Resync);
            }
            first = false;
            backoff = Duration::from_millis(50);
            match self.serve(sink, stream).await {
                Ended::Stop => return,
                Ended::Lost => {}
            }
        }
    }

    /// Connects, retrying forever with a capped backoff; commands that
    /// arrive meanwhile are recorded so the rooms are subscribed once the
    /// connection is up. `None` on shutdown.
    async fn connect(&mut self, backoff: &mut Duration) -> Option<redis::aio::PubSub> {
        loop {
            let client = self.client.clone();
            let attempt = tokio::time::timeout(self.timeout, client.get_async_pubsub());
            tokio::pin!(attempt);
            let result = loop {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return None,
                    result = &mut attempt => break result,
                    command = self.commands.recv() => record(&mut self.routes, command?, false),
                }
            };
            match result {
                Ok(Ok(pubsub)) => return Some(pubsub),
                Ok(Err(e)) => tracing::warn!(error = %e, "redis subscriber: connect failed; retrying"),
                Err(_) => tracing::warn!("redis subscriber: connect timed out; retrying"),
            }
            if !self.pause(*backoff).await {
                return None;
            }
            *backoff = (*backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Waits `delay`, recording commands; false on shutdown.
    async fn pause(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = &mut sleep => return true,
                command = self.commands.recv() => match command {
                    Some(command) => record(&mut self.routes, command, false),
                    None => return false,
                },
            }
        }
    }

    /// Subscribes every recorded room on a fresh connection.
    async fn resubscribe(&self, sink: &mut redis::aio::PubSubSink) -> bool {
        let channels = std::iter::once(self.notices_channel.clone())
            .chain(self.routes.keys().map(|room| self.keys.channel(*room)));
        for channel in channels {
            match tokio::time::timeout(self.timeout, sink.subscribe(channel)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "redis subscriber: resubscribe failed");
                    return false;
                }
                Err(_) => {
                    tracing::warn!("redis subscriber: resubscribe timed out");
                    return false;
                }
            }
        }
        true
    }

    /// Delivers messages and carries out commands until the connection is
    /// lost or stops answering.
    async fn serve(
        &mut self,
        mut sink: redis::aio::PubSubSink,
        mut stream: redis::aio::PubSubStream,
    ) -> Ended {
        let mut health = tokio::time::interval(HEALTH_EVERY);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        health.tick().await;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ended::Stop,
                message = stream.next() => match message {
                    Some(message) => {
                        if message.get_channel_name() == self.notices_channel {
                            let payload = Bytes::copy_from_slice(message.get_payload_bytes());
                            let _ = self.notices.send(RoomFeed::Frame(payload));
                            continue;
                        }
                        let Some(room) = self.keys.room_of_channel(message.get_channel_name()) else { continue };
                        if let Some(route) = self.routes.get(&room) {
                            let payload = Bytes::copy_from_slice(message.get_payload_bytes());
                            let _ = route.feed.send(RoomFeed::Frame(payload));
                        }
                    }
                    None => {
                        tracing::warn!("redis subscriber: connection lost; reconnecting");
                        return Ended::Lost;
                    }
                },
                command = self.commands.recv() => {
                    let Some(command) = command else { return Ended::Stop };
                    match command {
                        SubCommand::Subscribe { room, generation, feed, done } => {
                            let already = self.routes.contains_key(&room);
                            // Recorded first: if Redis does not confirm, the
                            // reconnection subscribes it and sends a `Resync`.
                            self.routes.insert(room, Route { generation, feed });
                            if already {
                                let _ = done.send(true);
                                continue;
                            }
                            let channel = self.keys.channel(room);
                            let confirmed = matches!(
                                tokio::time::timeout(self.timeout, sink.subscribe(channel)).await,
                                Ok(Ok(()))
                            );
                            let _ = done.send(confirmed);
                            if !confirmed {
                                tracing::warn!(%room, "redis subscriber: subscribe failed or timed out; reconnecting");
                                return Ended::Lost;
                            }
                        }
                        SubCommand::Unsubscribe { room, generation } => {
                            if self.routes.get(&room).is_some_and(|r| r.generation == generation) {
                                self.routes.remove(&room);
                                let channel = self.keys.channel(room);
                                if !matches!(
                                    tokio::time::timeout(self.timeout, sink.unsubscribe(channel)).await,
                                    Ok(Ok(()))
                                ) {
                                    tracing::warn!("redis subscriber: unsubscribe failed or timed out; reconnecting");
                                    return Ended::Lost;
                                }
                            }
                        }
                    }
                }
                _ = health.tick() => {
                    let ping = tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await;
                    if !matches!(ping, Ok(Ok(_))) {
                        tracing::warn!("redis subscriber: redis stopped answering; reconnecting");
                        return Ended::Lost;
                    }
                }
            }
        }
    }
}

/// Records a command while disconnected: the subscription happens on reconnect.
fn record(routes: &mut HashMap<Uuid, Route>, command: SubCommand, confirmed: bool) {
    match command {
        SubCommand::Subscribe {
            room,
            generation,
            feed,
            done,
        } => {
            routes.insert(room, Route { generation, feed });
            let _ = done.send(confirmed);
        }
        SubCommand::Unsubscribe { room, generation } => {
            if routes.get(&room).is_some_and(|r| r.generation == generation) {
                routes.remove(&room);
            }
        }
    }
}
