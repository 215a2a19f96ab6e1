//! The room's durable side in Redis: the offset counter and epoch, the
//! capped history stream, the snapshot state, moderation settings, and the
//! Lua scripts that change them atomically.
//!
//! Keys (the `{room}` hash tag keeps a room's keys in one cluster slot;
//! `<prefix>` is `redis.key_prefix`, see [`crate::keys`]):
//! - `<prefix>:room:{id}:meta`   hash: `epoch`, `offset`
//! - `<prefix>:room:{id}:stream` stream: one entry per event, id `<offset>-0`, field `f` = the frame
//! - `<prefix>:room:{id}:state`  hash: snapshot state (`pinned`, `deal:<id>`, `slow_mode`, ...)
//! - `<prefix>:room:{id}:mod`    hash: `ban:<user>`/`mute:<user>` → until (ms), `blocked_words`
//! - `<prefix>:room:{id}:dedupe` hash: dedupe id → offset; version key → last version
//! - `<prefix>:room:{id}:dedupe_log` list: `<ms>:<dedupe id>`, oldest first, to
//!   forget dedupe ids (see [`crate::retention`])
//! - `<prefix>:room:{id}:likes`, `:likes_gate`, `:viewers`, `:viewers_gate`
//! - `<prefix>:room:{id}:here:<node>` hash: user → sockets on that node (see [`crate::presence`])
//! - `<prefix>:room:{id}:rate:<kind>:<user>` hash: a user's token bucket
//!   (`tokens`, `at`, `last`; see [`crate::ratelimit`]), expiring once full again
//! - channel `<prefix>:room:{id}`

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use hawker_redis::Redis;
use redis::Script;
use serde_json::Value;
use uuid::Uuid;

use crate::event::{Publication, StateChange};
use crate::keys::{RoomKeys, RoomNames};
use crate::publisher::{Published, Publisher};
use crate::ratelimit::{Kind, Limit, Outcome, Take};

/// A take from a user's token bucket, by Redis' clock (so nodes' clocks do
/// not matter), as a Lua function shared by [`TAKE_LUA`] and the publish
/// script: `take_tokens(key, burst, refill per second, cost, '1' if fewer
/// may be taken, slow-mode interval ms (0 off), time to live ms)` returns
/// {taken, tokens left × 1000, slow-mode wait ms (0 unless refused by it)}.
macro_rules! take_tokens_lua {
    () => {
        r#"
local function take_tokens(key, burst, rate, cost, partial, slow, ttl)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local state = redis.call('HMGET', key, 'tokens', 'at', 'last')
  local tokens = tonumber(state[1]) or burst
  local at = tonumber(state[2]) or now
  local last = tonumber(state[3])
  if now > at then tokens = math.min(burst, tokens + (now - at) / 1000 * rate) end
  if slow > 0 and last and now - last < slow then
    return {0, math.floor(tokens * 1000), slow - (now - last)}
  end
  local take = cost
  if tokens < cost then
    if partial == '1' then take = math.floor(tokens) else take = 0 end
  end
  tokens = tokens - take
  if take > 0 then
    redis.call('HSET', key, 'tokens', tostring(tokens), 'at', now, 'last', now)
  else
    redis.call('HSET', key, 'tokens', tostring(tokens), 'at', now)
  end
  redis.call('PEXPIRE', key, ttl)
  return {take, math.floor(tokens * 1000), 0}
end
"#
    };
}

/// Publishes one event: a new offset, the history entry, the state and
/// moderation changes, the dedupe record, then the channel message.
///
/// KEYS: meta, stream, state, mod, dedupe, dedupe_log, and (only with a
/// take) the sender's token bucket. ARGV: channel, new epoch, history
/// length, time to live (s), the frame's tail, dedupe id, version key,
/// version, now (ms), dedupe max age (ms), dedupe max entries, the take
/// (`''`, or `burst rate cost partial slow_ms ttl_ms`), then the changes in
/// threes (`s`/`r` state, `m`/`n` moderation).
///
/// Returns "epoch offset taken tokens×1000 slow-mode-wait" (one string,
/// see [`crate::publisher::Published`]): offset 0
/// when nothing was published (an older version, or the take was refused),
/// taken −1 when no take was asked for. The take comes first, so an event
/// sent again under its dedupe id still takes a token (and is refused
/// without one), as the protocol says of `client_msg_id`.
///
/// The keys' expiry is refreshed together every eighth of their time to
/// live (meta's `refreshed`, ms), and a key written now gets its own at
/// once, so a room's keys outlive its last event by about the time to live
/// and a key created between two refreshes never lacks one.
const PUBLISH_LUA: &str = concat!(
    take_tokens_lua!(),
    r#"
local function reply(epoch, offset, take)
  if not take then take = {-1, 0, 0} end
  return string.format('%s %d %d %d %d', epoch, offset, take[1], take[2], take[3])
end
local now = tonumber(ARGV[9])
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'refreshed')
local epoch = meta[1]
local refresh = false
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[5], KEYS[6])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  refresh = true
else
  local refreshed = tonumber(meta[2])
  refresh = not refreshed or math.abs(now - refreshed) >= tonumber(ARGV[4]) * 125
end
local took = nil
if ARGV[12] ~= '' then
  local b, r, c, p, s, l = string.match(ARGV[12], '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')
  took = take_tokens(KEYS[7], tonumber(b), tonumber(r), tonumber(c), p, tonumber(s), l)
  if took[1] == 0 then return reply(epoch, 0, took) end
end
if ARGV[6] ~= '' then
  local seen = redis.call('HGET', KEYS[5], ARGV[6])
  if seen then return reply(epoch, tonumber(seen), took) end
end
if ARGV[7] ~= '' then
  local current = tonumber(redis.call('HGET', KEYS[5], ARGV[7]) or '-1')
  if current >= tonumber(ARGV[8]) then return reply(epoch, 0, nil) end
  redis.call('HSET', KEYS[5], ARGV[7], ARGV[8])
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local frame = '{"offset":' .. offset .. ',"epoch":"' .. epoch .. '",' .. ARGV[5]
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], offset .. '-0', 'f', frame)
local wrote_state, wrote_mod = false, false
local i = 13
while i + 2 <= #ARGV do
  local op = ARGV[i]
  if op == 's' then redis.call('HSET', KEYS[3], ARGV[i+1], ARGV[i+2]); wrote_state = true
  elseif op == 'r' then redis.call('HDEL', KEYS[3], ARGV[i+1])
  elseif op == 'm' then redis.call('HSET', KEYS[4], ARGV[i+1], ARGV[i+2]); wrote_mod = true
  elseif op == 'n' then redis.call('HDEL', KEYS[4], ARGV[i+1]) end
  i = i + 3
end
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[5], ARGV[6], offset)
  redis.call('RPUSH', KEYS[6], ARGV[9] .. ':' .. ARGV[6])
  local keep_from = now - tonumber(ARGV[10])
  local over = redis.call('LLEN', KEYS[6]) - tonumber(ARGV[11])
  for _ = 1, 16 do
    local head = redis.call('LINDEX', KEYS[6], 0)
    if not head then break end
    local at, id = string.match(head, '^(%d+):(.*)$')
    if over <= 0 and at and tonumber(at) >= keep_from then break end
    redis.call('LPOP', KEYS[6])
    if id then redis.call('HDEL', KEYS[5], id) end
    over = over - 1
  end
end
if refresh then
  redis.call('HSET', KEYS[1], 'refreshed', ARGV[9])
  for k = 1, 6 do redis.call('EXPIRE', KEYS[k], ARGV[4]) end
else
  if wrote_state then redis.call('EXPIRE', KEYS[3], ARGV[4]) end
  if wrote_mod then redis.call('EXPIRE', KEYS[4], ARGV[4]) end
  if ARGV[6] ~= '' or ARGV[7] ~= '' then
    redis.call('EXPIRE', KEYS[5], ARGV[4])
    redis.call('EXPIRE', KEYS[6], ARGV[4])
  end
end
redis.call('PUBLISH', ARGV[1], frame)
return reply(epoch, offset, took)
"#
);

const SNAPSHOT_LUA: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[3], KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
local offset = redis.call('HGET', KEYS[1], 'offset')
return {epoch, offset, redis.call('HGETALL', KEYS[2])}
"#;

/// A new epoch for a room whose history may have lost its last writes (a
/// replica took over its shard): only if the epoch is still `ARGV[1]`, so
/// the nodes that notice it one after the other renew it once. The state
/// is kept; the history goes, so every node's viewers get a `reset`.
/// KEYS: meta, stream. ARGV: old epoch, new epoch.
const RENEW_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'epoch', ARGV[2])
redis.call('HDEL', KEYS[1], 'refreshed')
redis.call('DEL', KEYS[2])
return 1
"#;

const HISTORY_LUA: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch ~= ARGV[1] then return {'reset'} end
local after = tonumber(ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
if last == after then return {'ok'} end
if last < after then return {'reset'} end
local entries = redis.call('XRANGE', KEYS[2], '(' .. after .. '-0', '+', 'COUNT', ARGV[3])
if #entries == 0 then return {'reset'} end
local first = tonumber(string.match(entries[1][1], '^(%d+)'))
if first ~= after + 1 then return {'reset'} end
local out = {'ok'}
for i = 1, #entries do out[#out + 1] = entries[i][2][2] end
return out
"#;

const LIKES_LUA: &str = r#"
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return total end
return -1
"#;

/// A node's viewer report: KEYS: the room's `viewers` hash, its gate, the
/// node's presence hash (its expiry is refreshed by the same call). ARGV:
/// node, its count, now (ms), how old a report may be (ms), the gate's
/// time (ms), the presence hash's time to live (s). Returns the total when
/// this node announces it this interval, else −1.
const VIEWERS_LUA: &str = r#"
local now = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
redis.call('EXPIRE', KEYS[1], 60)
redis.call('EXPIRE', KEYS[3], ARGV[6])
local sum = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local count, at = string.match(all[i + 1], '^(%d+):(%d+)$')
  if at and now - tonumber(at) <= tonumber(ARGV[4]) then sum = sum + tonumber(count)
  else redis.call('HDEL', KEYS[1], all[i]) end
end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[5]) then return sum end
return -1
"#;

/// One take from a user's token bucket (likes; a chat message's take is
/// part of its publish). KEYS: the bucket. ARGV: burst, refill per second,
/// cost, 1 if fewer may be taken, slow-mode interval (ms, 0 off), time to
/// live (ms). Returns what `take_tokens` returns.
const TAKE_LUA: &str = concat!(
    take_tokens_lua!(),
    "return take_tokens(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]), ARGV[6])\n"
);

/// What a room looks like at one offset.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub epoch: String,
    pub offset: u64,
    pub state: serde_json::Map<String, Value>,
}

/// The result of asking for the events after an offset.
#[derive(Debug)]
pub enum History {
    /// Exactly the events after the offset, in order (maybe none).
    Events(Vec<String>),
    /// The offset is older than the history, or the epoch changed.
    Reset,
}

#[derive(Clone)]
pub struct RoomStore {
    pub(crate) redis: Redis,
    /// Key and channel names under this deployment's prefix.
    pub(crate) keys: RoomKeys,
    publish: Script,
    snapshot: Script,
    history: Script,
    renew: Script,
    likes: Script,
    viewers: Script,
    take: Script,
    history_len: u64,
    ttl_secs: u64,
    /// How long and how many dedupe ids a room remembers.
    dedupe: DedupeLimits,
    /// Every call gives up after this long: a room must not wait on a Redis
    /// that is down (the connection manager retries in the background).
    pub(crate) timeout: Duration,
    /// The node's publisher: every publication goes through it.
    publisher: Publisher,
}

/// Runs a Redis call with a deadline, turning the deadline into an I/O error.
pub(crate) async fn bounded<T>(
    timeout: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "redis did not answer in time",
        ))),
    }
}

/// How long a room remembers a dedupe id, and how many it keeps at most.
#[derive(Debug, Clone, Copy)]
struct DedupeLimits {
    max_age: Duration,
    max_entries: u64,
}

fn new_epoch() -> String {
    let mut id = [0u8; uuid::fmt::Simple::LENGTH];
    let id = Uuid::new_v4().simple().encode_lower(&mut id);
    id[..12].to_string()
}

impl RoomStore {
    /// `own_thread`: the node's publisher runs on the command thread
    /// (`hub.command_thread`, [`crate::ingest`]).
    pub fn new(
        redis: Redis,
        keys: RoomKeys,
        history_len: u64,
        ttl_secs: u64,
        timeout: Duration,
        own_thread: bool,
    ) -> Self {
        // Every publication goes through the node's publisher (in queue
        // order, one pipeline at a time): started here, in the hub's runtime
        // (and its second task on the command thread, if `own_thread`).
        // On a cluster the room's frame travels only through the shard that
        // owns the room's slot (the channel has the keys' hash tag).
        let publish = if redis.is_cluster() {
            Script::new(&PUBLISH_LUA.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'"))
        } else {
            Script::new(PUBLISH_LUA)
        };
        let publisher = Publisher::start(redis.clone(), publish.clone(), own_thread);
        RoomStore {
            redis,
            keys,
            publish,
            snapshot: Script::new(SNAPSHOT_LUA),
            history: Script::new(HISTORY_LUA),
            renew: Script::new(RENEW_LUA),
            likes: Script::new(LIKES_LUA),
            viewers: Script::new(VIEWERS_LUA),
            take: Script::new(TAKE_LUA),
            dedupe: DedupeLimits {
                max_age: crate::retention::Retention::default().dedupe_max_age,
                max_entries: crate::retention::Retention::default().dedupe_max_entries,
            },
            history_len,
            ttl_secs,
            timeout,
            publisher,
        }
    }

    /// Rooms forget a dedupe id `max_age` after publishing it, and keep at
    /// most `max_entries` (see [`crate::retention`]).
    pub fn with_dedupe_retention(mut self, max_age: Duration, max_entries: u64) -> Self {
        self.dedupe = DedupeLimits { max_age, max_entries };
        self
    }

    /// Whether Redis answers a PING within the store's timeout.
    pub async fn reachable(&self) -> bool {
        let mut conn = self.redis.clone();
        bounded(self.timeout, redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .is_ok()
    }

    /// Appends, applies state changes and publishes, atomically. Returns
    /// (epoch, offset): the earlier offset for a repeated dedupe id, and 0
    /// when a newer version of the same figure was already published.
    pub async fn publish(
        &self,
        room: Uuid,
        publication: &Publication,
        mod_changes: &[ModChange],
    ) -> redis::RedisResult<(String, u64)> {
        self.queue_publish(room, publication, mod_changes)?.await
    }

    pub(crate) fn queue_publish(
        &self,
        room: Uuid,
        publication: &Publication,
        mod_changes: &[ModChange],
    ) -> redis::RedisResult<impl Future<Output = redis::RedisResult<(String, u64)>> + Send + 'static> {
        let command = self.publish_command(room, publication, mod_changes, None)?;
        let published = self.publisher.queue(command, self.timeout);
        Ok(async move {
            let Published { epoch, offset, .. } = published.await?;
            Ok((epoch, offset))
        })
    }

    /// Publishes only if the sender's bucket holds the take (one step in
    /// Redis: a refused take publishes nothing). An event already published
    /// under its dedupe id takes a token too, and answers its first offset.
    pub(crate) fn queue_publish_taking(
        &self,
        room: Uuid,
        publication: &Publication,
        bucket: Bucket<'_>,
    ) -> redis::RedisResult<impl Future<Output = redis::RedisResult<TakenPublish>> + Send + 'static> {
        let command = self.publish_command(room, publication, &[], Some(&bucket))?;
        let published = self.publisher.queue(command, self.timeout);
        let (limit, take) = (bucket.limit, bucket.take);
        Ok(async move {
            let Published {
                offset,
                taken,
                milli_tokens,
                slow_wait_ms: slow_wait,
                ..
            } = published.await?;
            let take = (taken >= 0).then(|| take_outcome(taken, milli_tokens, slow_wait, limit, take));
            Ok(TakenPublish { offset, take })
        })
    }

    fn publish_command(
        &self,
        room: Uuid,
        publication: &Publication,
        mod_changes: &[ModChange],
        bucket: Option<&Bucket<'_>>,
    ) -> redis::RedisResult<redis::Cmd> {
        let tail = publication.encode_tail(crate::event::now_ms()).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Client, "encoding event", e.to_string()))
        })?;
        // Sized up front: growing the buffer arg by arg was ~10 % of
        // building the command (callgrind).
        let extra = 3 * (publication.state.len() + mod_changes.len());
        let mut command = redis::Cmd::with_capacity(24 + extra, 640 + tail.len());
        let names = self.keys.room(room);
        command
            .arg("EVALSHA")
            .arg(self.publish.get_hash())
            .arg(if bucket.is_some() { 7 } else { 6 })
            .arg(names.key(&["meta"]))
            .arg(names.key(&["stream"]))
            .arg(names.key(&["state"]))
            .arg(names.key(&["mod"]))
            .arg(names.key(&["dedupe"]))
            .arg(names.key(&["dedupe_log"]));
        if let Some(bucket) = bucket {
            command.arg(bucket_key(&names, bucket.kind, bucket.user));
        }
        command
            .arg(names.channel())
            .arg(new_epoch())
            .arg(self.history_len)
            .arg(self.ttl_secs)
            .arg(tail)
            .arg(publication.dedupe.as_deref().unwrap_or(""))
            .arg(
                publication
                    .version
                    .as_ref()
                    .map(|(k, _)| k.as_str())
                    .unwrap_or(""),
            )
            .arg(publication.version.as_ref().map(|(_, v)| *v).unwrap_or(0))
            .arg(crate::event::now_ms())
            .arg(u64::try_from(self.dedupe.max_age.as_millis()).unwrap_or(u64::MAX))
            .arg(self.dedupe.max_entries);
        match bucket {
            Some(bucket) => command.arg(bucket_spec(bucket.limit, bucket.take)),
            None => command.arg(""),
        };
        for change in &publication.state {
            match change {
                StateChange::Set { key, value } => command.arg("s").arg(key).arg(value.to_string()),
                StateChange::Remove { key } => command.arg("r").arg(key).arg(""),
            };
        }
        for change in mod_changes {
            match change {
                ModChange::Set(field, value) => command.arg("m").arg(field).arg(value),
                ModChange::Remove(field) => command.arg("n").arg(field).arg(""),
            };
        }
        Ok(command)
    }

    pub async fn snapshot(&self, room: Uuid) -> redis::RedisResult<Snapshot> {
        let mut conn = self.redis.clone();
        let mut invocation = self.snapshot.prepare_invoke();
        invocation
            .key(self.keys.key(room, "meta"))
            .key(self.keys.key(room, "state"))
            .key(self.keys.key(room, "stream"))
            .arg(new_epoch())
            .arg(self.ttl_secs);
        let (epoch, offset, pairs): (String, Option<u64>, Vec<(String, String)>) =
            bounded(self.timeout, invocation.invoke_async(&mut conn)).await?;
        let state = pairs
            .into_iter()
            .map(|(k, v)| (k, serde_json::from_str(&v).unwrap_or(Value::String(v))))
            .collect();
        Ok(Snapshot {
            epoch,
            offset: offset.unwrap_or(0),
            state,
        })
    }

    /// Starts a new epoch if the room is still in `epoch` (see `RENEW_LUA`).
    pub async fn renew_epoch(&self, room: Uuid, epoch: &str) -> redis::RedisResult<()> {
        let mut conn = self.redis.clone();
        let mut invocation = self.renew.prepare_invoke();
        invocation
            .key(self.keys.key(room, "meta"))
            .key(self.keys.key(room, "stream"))
            .arg(epoch)
            .arg(new_epoch());
        bounded(self.timeout, invocation.invoke_async::<i64>(&mut conn))
            .await
            .map(|_| ())
    }

    /// The events after `after` in `epoch`, or `Reset` if they are gone.
    pub async fn history(&self, room: Uuid, epoch: &str, after: u64) -> redis::RedisResult<History> {
        let mut conn = self.redis.clone();
        let mut invocation = self.history.prepare_invoke();
        invocation
            .key(self.keys.key(room, "meta"))
            .key(self.keys.key(room, "stream"))
            .arg(epoch)
            .arg(after)
            .arg(self.history_len * 2 + 100);
        let mut reply: Vec<String> = bounded(self.timeout, invocation.invoke_async(&mut conn)).await?;
        if reply.first().map(String::as_str) == Some("ok") {
            reply.remove(0);
            Ok(History::Events(reply))
        } else {
            Ok(History::Reset)
        }
    }

    /// Moderation settings of a room: bans, mutes, blocked words.
    pub async fn moderation(&self, room: Uuid) -> redis::RedisResult<HashMap<String, String>> {
        let mut conn = self.redis.clone();
        let mut command = redis::cmd("HGETALL");
        command.arg(self.keys.key(room, "mod"));
        bounded(self.timeout, command.query_async(&mut conn)).await
    }

    /// Adds likes; returns the new total if this call may announce it
    /// (at most once per `gate_ms` across nodes).
    pub async fn add_likes(&self, room: Uuid, delta: u64, gate_ms: u64) -> redis::RedisResult<Option<u64>> {
        let mut conn = self.redis.clone();
        let mut invocation = self.likes.prepare_invoke();
        invocation
            .key(self.keys.key(room, "likes"))
            .key(self.keys.key(room, "likes_gate"))
            .arg(delta)
            .arg(gate_ms)
            .arg(self.ttl_secs);
        let total: i64 = bounded(self.timeout, invocation.invoke_async(&mut conn)).await?;
        Ok(u64::try_from(total).ok())
    }

    /// Reports this node's viewers of each room and refreshes the expiry
    /// of its presence hash in the same call, all rooms in one pipeline
    /// (one `EVALSHA` per room, so each touches one room's slot on a
    /// cluster). Each answer, in order: the room's total when this node
    /// announces it this interval (`gate_ms`), `None` when another did.
    pub async fn report_viewers(
        &self,
        node: &str,
        reports: &[ViewerReport],
        gate_ms: u64,
        here_ttl_secs: u64,
    ) -> redis::RedisResult<Vec<redis::RedisResult<Option<u64>>>> {
        let now = crate::event::now_ms();
        let commands: Vec<redis::Cmd> = reports
            .iter()
            .map(|report| {
                let mut command = redis::cmd("EVALSHA");
                command
                    .arg(self.viewers.get_hash())
                    .arg(3)
                    .arg(self.keys.key(report.room, "viewers"))
                    .arg(self.keys.key(report.room, "viewers_gate"))
                    .arg(&report.here)
                    .arg(node)
                    .arg(report.count)
                    .arg(now)
                    .arg(gate_ms * FRESH_INTERVALS)
                    .arg(gate_ms.saturating_sub(100).max(100))
                    .arg(here_ttl_secs);
                command
            })
            .collect();
        let commands: Vec<&redis::Cmd> = commands.iter().collect();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut conn = self.redis.clone();
        let totals: Vec<redis::RedisResult<i64>> =
            crate::publisher::run_scripts(&mut conn, &self.viewers, &commands, deadline).await?;
        Ok(totals
            .into_iter()
            .map(|total| total.map(|t| u64::try_from(t).ok()))
            .collect())
    }
}

/// A node's viewer report of a room counts for this many viewer intervals
/// (`hub.viewers_interval_ms`): a count older than that is a dead node's,
/// left out of the total and of `Hub::present`.
pub(crate) const FRESH_INTERVALS: u64 = 6;

/// One room's line of a node's viewer report: its local count and the key
/// of the node's presence hash there.
pub struct ViewerReport {
    pub room: Uuid,
    pub count: usize,
    pub here: String,
}

impl RoomStore {
    /// Takes from `user`'s `kind` bucket in `room`, shared by every node.
    /// Returns the outcome and the tokens left.
    pub async fn take_tokens(
        &self,
        room: Uuid,
        kind: Kind,
        user: &str,
        limit: Limit,
        take: Take,
    ) -> redis::RedisResult<(Outcome, f64)> {
        let (slow_ms, ttl_ms) = bucket_times(limit, take);
        let mut conn = self.redis.clone();
        let mut invocation = self.take.prepare_invoke();
        invocation
            .key(bucket_key(&self.keys.room(room), kind, user))
            .arg(limit.burst)
            .arg(limit.per_sec)
            .arg(take.cost)
            .arg(if take.partial { 1 } else { 0 })
            .arg(slow_ms)
            .arg(ttl_ms);
        let (taken, milli_tokens, slow_wait): (i64, i64, i64) =
            bounded(self.timeout, invocation.invoke_async(&mut conn)).await?;
        Ok(take_outcome(taken, milli_tokens, slow_wait, limit, take))
    }

    pub async fn moderation_fields(
        &self,
        room: Uuid,
        fields: &[String],
    ) -> redis::RedisResult<Vec<Option<String>>> {
        let mut conn = self.redis.clone();
        let mut command = redis::cmd("HMGET");
        command.arg(self.keys.key(room, "mod")).arg(fields);
        bounded(self.timeout, command.query_async(&mut conn)).await
    }

    /// Sets one moderation field (not an event: nothing is published).
    pub async fn set_moderation_field(&self, room: Uuid, field: &str, value: &str) -> redis::RedisResult<()> {
        let mut conn = self.redis.clone();
        let key = self.keys.key(room, "mod");
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(&key, field, value)
            .ignore()
            .expire(&key, self.ttl_secs as i64)
            .ignore();
        bounded(self.timeout, pipe.query_async(&mut conn)).await
    }

    /// Publishes an event to the nodes with the room open, live only: no
    /// offset, no history, no snapshot change (presence notices, which
    /// must not push other events out of the history).
    pub async fn publish_live(&self, room: Uuid, publication: &Publication) -> redis::RedisResult<()> {
        let tail = publication.encode_tail(crate::event::now_ms()).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Client, "encoding event", e.to_string()))
        })?;
        let frame = format!("{{{tail}");
        let mut conn = self.redis.clone();
        let mut command = redis::cmd(self.redis.publish_command());
        command.arg(self.keys.channel(room)).arg(frame);
        bounded(self.timeout, command.query_async::<i64>(&mut conn))
            .await
            .map(|_| ())
    }
}

/// A change to the private moderation hash, published with its notice.
#[derive(Debug, Clone)]
pub enum ModChange {
    Set(String, String),
    Remove(String),
}

/// A take from the sender's token bucket that a publish makes first
/// ([`RoomStore::queue_publish_taking`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket<'a> {
    pub kind: Kind,
    pub user: &'a str,
    pub limit: Limit,
    pub take: Take,
}

/// What a publish with a take did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TakenPublish {
    /// The event's offset; 0 when the take was refused (nothing published).
    pub offset: u64,
    /// The take and the tokens left after it.
    pub take: Option<(Outcome, f64)>,
}

/// A user's token bucket of `kind` in the room `names` names.
fn bucket_key(names: &RoomNames, kind: Kind, user: &str) -> String {
    names.key(&["rate:", kind.as_str(), ":", user])
}

/// The publish script's bucket argument: "burst per_sec cost partial
/// slow_ms ttl_ms". Written with `ryu` and `itoa`: `format!` of the two
/// floats cost ~3,000 instructions per chat line (callgrind).
fn bucket_spec(limit: Limit, take: Take) -> String {
    let (slow_ms, ttl_ms) = bucket_times(limit, take);
    let (mut floats, mut ints) = (ryu::Buffer::new(), itoa::Buffer::new());
    let mut spec = String::with_capacity(64);
    spec.push_str(floats.format(limit.burst));
    spec.push(' ');
    spec.push_str(floats.format(limit.per_sec));
    for n in [take.cost, u64::from(take.partial), slow_ms, ttl_ms] {
        spec.push(' ');
        spec.push_str(ints.format(n));
    }
    spec
}

/// A bucket's slow-mode interval and the time to live of its Redis copy
/// (until full again, or past the slow-mode interval), in ms.
fn bucket_times(limit: Limit, take: Take) -> (u64, u64) {
    let slow_ms = take.slow.as_millis() as u64;
    let ttl_ms = (limit.refill_time().as_millis() as u64).max(slow_ms) + 1000;
    (slow_ms, ttl_ms)
}

/// A take's outcome and the tokens left, from the script's answer {taken,
/// tokens × 1000, slow-mode wait}.
fn take_outcome(taken: i64, milli_tokens: i64, slow_wait: i64, limit: Limit, take: Take) -> (Outcome, f64) {
    let tokens = milli_tokens as f64 / 1000.0;
    let outcome = if taken > 0 {
        Outcome::Taken(taken as u64)
    } else if slow_wait > 0 {
        Outcome::SlowMode {
            wait_ms: slow_wait as u64,
        }
    } else {
        let short = if take.partial { 1.0 } else { take.cost as f64 } - tokens;
        Outcome::Empty {
            wait_ms: (short.max(0.0) / limit.per_sec * 1000.0).ceil() as u64,
        }
    };
    (outcome, tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_argument_reads_as_the_scripts_six_numbers() {
        let limit = Limit {
            burst: 5.0,
            per_sec: 0.25,
        };
        let take = Take {
            cost: 1,
            partial: false,
            slow: Duration::from_millis(1500),
        };
        // Refill 20 s (burst / per_sec), plus a second: the bucket's TTL.
        assert_eq!(bucket_spec(limit, take), "5.0 0.25 1 0 1500 21000");
        let likes = Take {
            cost: 30,
            partial: true,
            slow: Duration::ZERO,
        };
        let fast = Limit {
            burst: 1e6,
            per_sec: 1000.5,
        };
        // Refill 999.5 s, plus a second.
        assert_eq!(bucket_spec(fast, likes), "1000000.0 1000.5 30 1 0 1000500");
    }
}
