//! The node's one Redis subscriber connection.
//!
//! One task owns the pub/sub connection. Rooms ask it to subscribe (and
//! wait for Redis to confirm, so nothing published after the confirmation
//! is missed) and to unsubscribe when the node's last viewer leaves. When
//! the connection drops, the task reconnects forever with a capped backoff,
//! resubscribes every room, and tells each room to recover what it may have
//! missed from the history.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{channel, room_of_channel};

/// What the subscriber hands a room.
#[derive(Debug)]
pub enum RoomFeed {
    /// A published frame, as bytes.
    Frame(Bytes),
    /// The subscription was re-established after an outage: events may have been missed.
    Resync,
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
}

impl Subscriber {
    /// Starts the subscriber task.
    pub fn start(
        client: redis::Client,
        shutdown: CancellationToken,
    ) -> (Subscriber, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = tokio::spawn(run(client, rx, shutdown));
        (Subscriber { commands: tx }, handle)
    }

    /// Subscribes `room`'s channel and resolves once Redis confirmed it
    /// (`true`) or the connection is down (`false`; a `Resync` follows when it is back).
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
        confirmed.await.unwrap_or(false)
    }

    pub fn unsubscribe(&self, room: Uuid, generation: u64) {
        let _ = self.commands.send(SubCommand::Unsubscribe { room, generation });
    }
}

struct Route {
    generation: u64,
    feed: mpsc::UnboundedSender<RoomFeed>,
}

async fn run(
    client: redis::Client,
    mut commands: mpsc::UnboundedReceiver<SubCommand>,
    shutdown: CancellationToken,
) {
    let mut routes: HashMap<Uuid, Route> = HashMap::new();
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    loop {
        // Connect, retrying forever; commands that arrive meanwhile are
        // recorded so the rooms are subscribed once the connection is up.
        let pubsub = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                result = client.get_async_pubsub() => match result {
                    Ok(pubsub) => break pubsub,
                    Err(e) => tracing::warn!(error = %e, "redis subscriber: connect failed; retrying"),
                },
            }
            let sleep = tokio::time::sleep(backoff);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = &mut sleep => break,
                    command = commands.recv() => match command {
                        Some(command) => record(&mut routes, command, false),
                        None => return,
                    },
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut ok = true;
        for room in routes.keys() {
            if let Err(e) = sink.subscribe(channel(*room)).await {
                tracing::warn!(error = %e, "redis subscriber: resubscribe failed");
                ok = false;
                break;
            }
        }
        if !ok {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        }
        if !first {
            crate::metrics::redis_reconnect();
            tracing::info!(
                rooms = routes.len(),
                "redis subscriber reconnected; rooms recover from history"
            );
            for route in routes.values() {
                let _ = route.feed.send(RoomFeed::Resync);
            }
        }
        first = false;
        backoff = Duration::from_millis(50);

        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                message = stream.next() => match message {
                    Some(message) => {
                        let Some(room) = room_of_channel(message.get_channel_name()) else { continue };
                        if let Some(route) = routes.get(&room) {
                            let payload = Bytes::copy_from_slice(message.get_payload_bytes());
                            let _ = route.feed.send(RoomFeed::Frame(payload));
                        }
                    }
                    None => {
                        tracing::warn!("redis subscriber: connection lost; reconnecting");
                        break;
                    }
                },
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    match command {
                        SubCommand::Subscribe { room, generation, feed, done } => {
                            let already = routes.contains_key(&room);
                            routes.insert(room, Route { generation, feed });
                            let confirmed = already || sink.subscribe(channel(room)).await.is_ok();
                            let _ = done.send(confirmed);
                        }
                        SubCommand::Unsubscribe { room, generation } => {
                            if routes.get(&room).is_some_and(|r| r.generation == generation) {
                                routes.remove(&room);
                                let _ = sink.unsubscribe(channel(room)).await;
                            }
                        }
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
