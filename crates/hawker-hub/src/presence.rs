//! Who is in a room now, exactly, across nodes ("must be present to win").
//!
//! Each node keeps, per room, a Redis hash of the users with an open socket
//! on it: `<prefix>:room:{<id>}:here:<node>`, field = user, value = how many
//! of their sockets this node counts. A node changes it only when a user's
//! first local socket joins (+1) or their last one leaves (−1), so a join
//! costs one Redis call only for a user new to the node. Increments commute,
//! so two sockets of one user joining and leaving on different tasks cannot
//! leave a wrong count whatever order Redis sees them in; a field is
//! deleted when it reaches exactly 0.
//!
//! A user's first socket on a node also marks the node alive in the room's
//! `viewers` hash (so it is asked before its first viewer report). The
//! viewers timer refreshes the hash's expiry (60 s) in the same call as the
//! node's viewer report, and rewrites it from the node's own table if a
//! change could not be written (Redis unreachable). [`Hub::present`] asks only the
//! nodes whose viewer count is fresh (reported within six viewer
//! intervals; a node reports a calm room every third): a dead node's users
//! are absent within seconds, and its hash expires.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use redis::Script;
use uuid::Uuid;

use crate::room::RoomHandle;
use crate::store::bounded;
use crate::{Hub, PublishError};

/// How long a node's presence hash outlives its last refresh.
pub(crate) const HERE_TTL_SECS: u64 = 60;

/// KEYS: the node's presence hash, the room's `viewers` hash. ARGV: user,
/// +1 or −1, the hash's time to live, node id, now (ms). A join also marks
/// the node alive in `viewers` (its count kept, its time refreshed), so a
/// node is asked about its users before its first viewer report.
const CHANGE_LUA: &str = r#"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if n == 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
if tonumber(ARGV[2]) > 0 then
  local prev = redis.call('HGET', KEYS[2], ARGV[4])
  local count = '0'
  if prev then count = string.match(prev, '^(%d+):') or '0' end
  redis.call('HSET', KEYS[2], ARGV[4], count .. ':' .. ARGV[5])
  redis.call('EXPIRE', KEYS[2], 60)
end
return n
"#;

/// The room's presence hash of `node`.
pub(crate) fn here_key(hub: &Hub, room: Uuid, node: &str) -> String {
    hub.inner.store.keys.key(room, &format!("here:{node}"))
}

impl Hub {
    /// A socket of `user` joined `room` on this node.
    pub(crate) async fn arrive(&self, room: &RoomHandle, user: &str) {
        let first = {
            let mut here = room.shared.here();
            let count = here.entry(user.to_string()).or_insert(0);
            *count += 1;
            *count == 1
        };
        if first {
            self.change_here(room, user, 1).await;
        }
    }

    /// A socket of `user` left `room` on this node.
    pub(crate) async fn depart(&self, room: &RoomHandle, user: &str) {
        let last = {
            let mut here = room.shared.here();
            match here.get_mut(user) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    here.remove(user);
                    true
                }
                None => false,
            }
        };
        if last {
            self.change_here(room, user, -1).await;
        }
    }

    async fn change_here(&self, room: &RoomHandle, user: &str, delta: i64) {
        let store = &self.inner.store;
        let mut conn = store.redis.clone();
        let script = Script::new(CHANGE_LUA);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(here_key(self, room.id, &self.inner.node_id))
            .key(store.keys.key(room.id, "viewers"))
            .arg(user)
            .arg(delta)
            .arg(HERE_TTL_SECS)
            .arg(&self.inner.node_id)
            .arg(crate::event::now_ms());
        let done: Result<i64, _> = bounded(store.timeout, invocation.invoke_async(&mut conn)).await;
        if let Err(e) = done {
            tracing::debug!(error = %e, "presence change deferred to the viewers timer");
            room.shared.here_dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Rewrites this node's presence hash of `room` from its own table after
    /// a change was lost (Redis unreachable). Called by the viewers timer,
    /// whose report refreshes the hash's expiry otherwise.
    pub(crate) async fn rewrite_here(&self, room: &RoomHandle) -> Result<(), PublishError> {
        if !room.shared.here_dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let store = &self.inner.store;
        let key = here_key(self, room.id, &self.inner.node_id);
        let mut conn = store.redis.clone();
        let mut pipe = redis::pipe();
        let users: Vec<(String, u32)> = room.shared.here().iter().map(|(u, n)| (u.clone(), *n)).collect();
        pipe.atomic().del(&key).ignore();
        for chunk in users.chunks(500) {
            pipe.cmd("HSET").arg(&key);
            for (user, _) in chunk {
                pipe.arg(user).arg(1);
            }
            pipe.ignore();
        }
        pipe.expire(&key, HERE_TTL_SECS as i64).ignore();
        let done: Result<(), _> = bounded(store.timeout, pipe.query_async(&mut conn)).await;
        if let Err(e) = done {
            room.shared.here_dirty.store(true, Ordering::Relaxed);
            return Err(e.into());
        }
        Ok(())
    }

    /// Whether each of `users` has an open socket in `room` on a live node
    /// now (in the same order). Live nodes are those whose viewer count of
    /// the room is fresh.
    pub async fn present(&self, room: Uuid, users: &[String]) -> Result<Vec<bool>, PublishError> {
        let mut out = vec![false; users.len()];
        if users.is_empty() {
            return Ok(out);
        }
        let store = &self.inner.store;
        let mut conn = store.redis.clone();
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(store.keys.key(room, "viewers"));
        let nodes: HashMap<String, String> = bounded(store.timeout, cmd.query_async(&mut conn)).await?;
        let now = crate::event::now_ms();
        let fresh = (self.inner.config.viewers_interval_ms * crate::store::FRESH_INTERVALS) as i64;
        let mut live: Vec<&String> = nodes
            .iter()
            .filter(|(_, v)| {
                v.split_once(':')
                    .and_then(|(_, at)| at.parse::<i64>().ok())
                    .is_some_and(|at| now - at <= fresh)
            })
            .map(|(node, _)| node)
            .collect();
        // This node counts even before its first report.
        if !live.contains(&&self.inner.node_id) {
            live.push(&self.inner.node_id);
        }
        let mut pipe = redis::pipe();
        for node in &live {
            pipe.cmd("HMGET").arg(here_key(self, room, node)).arg(users);
        }
        let counts: Vec<Vec<Option<i64>>> = bounded(store.timeout, pipe.query_async(&mut conn)).await?;
        for per_node in counts {
            for (slot, count) in out.iter_mut().zip(per_node) {
                if count.is_some_and(|n| n > 0) {
                    *slot = true;
                }
            }
        }
        Ok(out)
    }
}
