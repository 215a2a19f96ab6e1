//! [`Redis`]: one server or a cluster behind one `ConnectionLike`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use crate::slot::{check_script, command_slot};

/// Where Redis is: one server, or the seed nodes of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server (`redis.url`).
    Single(String),
    /// A Redis Cluster, reached through any of these nodes (`redis.cluster`).
    /// The client learns the rest of the cluster from them.
    Cluster(Vec<String>),
}

/// Why a configured target cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub struct TargetError {
    pub key: &'static str,
    pub reason: String,
}

impl Target {
    /// `cluster` when it lists seed nodes, else `url`. Every URL must be a
    /// `redis://` or `rediss://` URL.
    pub fn from_settings(url: &str, cluster: &[String]) -> Result<Target, TargetError> {
        let well_formed = |u: &str| u.starts_with("redis://") || u.starts_with("rediss://");
        if cluster.is_empty() {
            if !well_formed(url) {
                return Err(TargetError {
                    key: "redis.url",
                    reason: "must be a redis:// URL".into(),
                });
            }
            return Ok(Target::Single(url.to_string()));
        }
        if let Some(bad) = cluster.iter().find(|u| !well_formed(u)) {
            return Err(TargetError {
                key: "redis.cluster",
                reason: format!("`{bad}` is not a redis:// URL"),
            });
        }
        Ok(Target::Cluster(cluster.to_vec()))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }

    /// The URLs, for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            Target::Single(url) => url.clone(),
            Target::Cluster(seeds) => format!("cluster {}", seeds.join(",")),
        }
    }
}

/// The node's connection to Redis. Cheap to clone (clones share the
/// underlying connections), and connects lazily: a node starts while Redis
/// is down and its calls fail until Redis answers.
#[derive(Clone)]
pub struct Redis {
    inner: Inner,
    /// Where it connects, and its timeout: for [`Redis::another`].
    origin: Arc<(Target, Duration)>,
}

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    Cluster(Arc<Cluster>),
}

/// A cluster connection that is made again, from the seeds, when calls
/// time out or lose their connection: the client follows `MOVED` and
/// reconnects dropped connections by itself, but a master that stops
/// answering without closing (frozen, partitioned away) keeps its slots in
/// the client's map after a replica has taken over. A fresh connection
/// reads the slot map again.
struct Cluster {
    client: ClusterClient,
    timeout: Duration,
    current: Mutex<(ClusterConnection, Instant)>,
}

impl Cluster {
    fn config(timeout: Duration) -> ClusterConfig {
        ClusterConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
    }

    fn connection(&self) -> ClusterConnection {
        match self.current.lock() {
            Ok(current) => current.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }

    /// After a call failed with `e`: a new connection if the failure says
    /// a node is unreachable, at most once per two timeouts.
    fn after_error(&self, e: &RedisError) {
        if e.is_timeout() || e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            self.renew(&e.to_string());
        }
    }

    fn renew(&self, why: &str) {
        let mut current = match self.current.lock() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        if current.1.elapsed() < self.timeout * 2 {
            return;
        }
        tracing::warn!(
            error = why,
            "redis cluster: a node does not answer; reading the slot map again"
        );
        *current = (
            self.client
                .get_pending_async_connection_with_config(Self::config(self.timeout)),
            Instant::now(),
        );
    }
}

impl Redis {
    /// Connects to `target`. Every call gives up after `timeout`; a lost
    /// connection is re-made in the background, forever, with a capped delay.
    pub fn connect_lazy(target: &Target, timeout: Duration) -> RedisResult<Redis> {
        let inner = match target {
            Target::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                // Unbounded retries with a capped delay: the default gives up after ~6 s.
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(usize::MAX)
                    .set_max_delay(Duration::from_secs(2))
                    .set_response_timeout(Some(timeout))
                    .set_connection_timeout(Some(timeout));
                Inner::Single(ConnectionManager::new_lazy_with_config(client, config)?)
            }
            Target::Cluster(seeds) => {
                let client = cluster_builder(seeds, timeout).build()?;
                let conn = client.get_pending_async_connection_with_config(Cluster::config(timeout));
                Inner::Cluster(Arc::new(Cluster {
                    client,
                    timeout,
                    current: Mutex::new((conn, Instant::now())),
                }))
            }
        };
        Ok(Redis {
            inner,
            origin: Arc::new((target.clone(), timeout)),
        })
    }

    /// A connection of its own to the same Redis, with the same timeout,
    /// sharing nothing with `self`. It connects lazily, and its tasks run
    /// on the runtime it is first used from: a task on a thread of its own
    /// (the hub's command thread) gets a connection whose replies that
    /// thread reads.
    pub fn another(&self) -> RedisResult<Redis> {
        Redis::connect_lazy(&self.origin.0, self.origin.1)
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner, Inner::Cluster(_))
    }

    /// The command that publishes to a room's channel: `SPUBLISH` on a
    /// cluster (the message travels only through the shard that owns the
    /// channel's slot), `PUBLISH` on one server.
    pub fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }
}

/// The cluster client every cluster connection of a node is made with:
/// short waits between retries, since every call is bounded by `timeout`
/// anyway (the library's default first wait is over a second).
pub fn cluster_builder(seeds: &[String], timeout: Duration) -> ClusterClientBuilder {
    ClusterClientBuilder::new(seeds.iter().map(String::as_str))
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(8)
        .min_retry_wait(10)
        .max_retry_wait(250)
}

/// Watches one call: a call its caller gave up on (dropped unanswered
/// after most of the timeout, as the callers' own time limits do) counts as
/// a node that does not answer.
struct Watch {
    cluster: Arc<Cluster>,
    started: Instant,
    answered: bool,
}

impl Watch {
    fn new(cluster: &Arc<Cluster>) -> Watch {
        Watch {
            cluster: cluster.clone(),
            started: Instant::now(),
            answered: false,
        }
    }

    fn answered<T>(mut self, reply: &RedisResult<T>) {
        self.answered = true;
        if let Err(e) = reply {
            self.cluster.after_error(e);
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.answered && self.started.elapsed() >= self.cluster.timeout / 2 {
            self.cluster.renew("a call was given up unanswered");
        }
    }
}

fn refused<'a, T: Send + 'a>(e: RedisError) -> RedisFuture<'a, T> {
    Box::pin(async move { Err(e) })
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        if let Err(e) = check_script(cmd) {
            return refused(e);
        }
        match &mut self.inner {
            Inner::Single(c) => c.req_packed_command(cmd),
            Inner::Cluster(cluster) => {
                let cluster = cluster.clone();
                Box::pin(async move {
                    let watch = Watch::new(&cluster);
                    let mut conn = cluster.connection();
                    let reply = conn.req_packed_command(cmd).await;
                    watch.answered(&reply);
                    reply
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let cluster = match &mut self.inner {
            Inner::Single(c) => {
                if let Err(e) = pipeline.cmd_iter().try_for_each(check_script) {
                    return refused(e);
                }
                return c.req_packed_commands(pipeline, offset, count);
            }
            Inner::Cluster(cluster) => cluster,
        };
        // On a cluster every command's slot decides where it goes.
        let mut slots = Vec::with_capacity(pipeline.len());
        for cmd in pipeline.cmd_iter() {
            match command_slot(cmd) {
                Ok(slot) => slots.push(slot),
                Err(e) => return refused(e),
            }
        }
        let cluster = cluster.clone();
        let mut distinct = slots.iter().flatten().collect::<Vec<_>>();
        distinct.sort_unstable();
        distinct.dedup();
        let whole = distinct.len() <= 1 || pipeline.is_transaction();
        Box::pin(async move {
            let watch = Watch::new(&cluster);
            let mut conn = cluster.connection();
            let replies = if whole {
                conn.req_packed_commands(pipeline, offset, count).await
            } else {
                split_by_slot(conn, pipeline, slots).await
            };
            watch.answered(&replies);
            replies
        })
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(c) => c.get_db(),
            Inner::Cluster(cluster) => cluster.connection().get_db(),
        }
    }
}

/// Sends a pipeline whose commands live on several slots as one pipeline
/// per slot, all at once, and puts the replies back in the pipeline's
/// order. Commands without a slot ride with the first group.
async fn split_by_slot(
    conn: ClusterConnection,
    pipeline: &Pipeline,
    slots: Vec<Option<u16>>,
) -> RedisResult<Vec<Value>> {
    let first = slots.iter().flatten().next().copied();
    let mut groups: BTreeMap<u16, (Pipeline, Vec<usize>)> = BTreeMap::new();
    for (index, (cmd, slot)) in pipeline.cmd_iter().zip(&slots).enumerate() {
        let slot = slot.or(first).unwrap_or(0);
        let (part, indices) = groups
            .entry(slot)
            .or_insert_with(|| (Pipeline::new(), Vec::new()));
        part.add_command(cmd.clone());
        indices.push(index);
    }
    let sends = groups.into_values().map(|(part, indices)| {
        let mut conn = conn.clone();
        async move {
            let replies = conn.req_packed_commands(&part, 0, part.len()).await?;
            Ok::<_, RedisError>((indices, replies))
        }
    });
    let mut out = vec![Value::Nil; pipeline.len()];
    for (indices, replies) in try_join_all(sends).await? {
        for (index, reply) in indices.into_iter().zip(replies) {
            out[index] = reply;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_list_wins_over_the_url_and_every_url_is_checked() {
        assert_eq!(
            Target::from_settings("redis://a:6379/", &[]),
            Ok(Target::Single("redis://a:6379/".into()))
        );
        let seeds = vec!["redis://a:7000".to_string(), "redis://b:7001".to_string()];
        assert_eq!(
            Target::from_settings("redis://a:6379/", &seeds),
            Ok(Target::Cluster(seeds.clone()))
        );
        assert_eq!(
            Target::from_settings("http://x", &[]).map_err(|e| e.key),
            Err("redis.url")
        );
        let bad = vec!["redis://a:7000".to_string(), "a:7001".to_string()];
        assert_eq!(
            Target::from_settings("redis://a/", &bad).map_err(|e| e.key),
            Err("redis.cluster")
        );
    }

    #[tokio::test]
    async fn a_script_with_keys_from_two_slots_is_refused_before_it_reaches_redis() {
        // Port 1 never answers: the refusal must come from the check, at once.
        let target = Target::Single("redis://127.0.0.1:1/".into());
        let Ok(mut redis) = Redis::connect_lazy(&target, Duration::from_millis(200)) else {
            panic!("a lazy connection is made without I/O");
        };
        let script = redis::Script::new("return 1");
        let reply: RedisResult<i64> = script
            .key("p:deal:{a}:stock")
            .key("p:deal:{b}:stock")
            .invoke_async(&mut redis)
            .await;
        let kind = reply.as_ref().err().map(RedisError::kind);
        assert_eq!(
            kind,
            Some(redis::ErrorKind::Server(redis::ServerErrorKind::CrossSlot)),
            "{reply:?}"
        );
    }
}
