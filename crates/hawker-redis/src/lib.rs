//! The node's connection to Redis, whichever shape Redis has.
//!
//! hawker runs against one Redis server (`redis.url`) or a Redis Cluster
//! (`redis.cluster`, a list of seed nodes). The rest of the code sees one
//! type, [`Redis`], which is a `redis::aio::ConnectionLike`: scripts,
//! commands and pipelines run on it unchanged.
//!
//! Two rules hold in both shapes, so that code tested against one server
//! keeps working on a cluster:
//! - **a script's keys share one slot** ([`slot`]): every `EVAL`/`EVALSHA`
//!   is checked before it is sent, and one whose keys hash to two slots is
//!   refused with a `CROSSSLOT` error, on a single server too;
//! - **pub/sub is per room**: [`Redis::publish_command`] is `SPUBLISH` on a
//!   cluster (the message travels only through the shard that owns the
//!   channel's slot) and `PUBLISH` on one server.
//!
//! A pipeline whose commands touch several slots is split by slot on a
//! cluster: each part goes to its shard, all at once, and the replies come
//! back in the pipeline's order. A transaction (`MULTI`) is never split: its
//! keys must share a slot.

mod conn;
pub mod slot;

pub use conn::{cluster_builder, Redis, Target, TargetError};
