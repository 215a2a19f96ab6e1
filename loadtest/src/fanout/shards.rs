//! The Redis Cluster of `--redis-cluster`, shard by shard: its masters (from
//! `CLUSTER NODES` of the first seed that answers), their slots and process
//! ids (`INFO server`), and over the window what each did: SPUBLISH and
//! EVALSHA calls (`INFO commandstats`; a room event is one EVALSHA of the
//! publish script, which calls SPUBLISH on the room's channel
//! `<prefix>:room:{<session>}`) and CPU time (`/proc/<pid>/stat`). Which
//! rooms each master owns follows from the slot of `{<session>}`.

use anyhow::{bail, Context as _};
use serde::Serialize;
use uuid::Uuid;

use crate::common::probe::redis_text;
use crate::common::procfs;

/// A master and the slots it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Master {
    /// `127.0.0.1:port`.
    pub addr: String,
    pub pid: Option<u32>,
    /// Inclusive slot ranges.
    pub slots: Vec<(u16, u16)>,
}

/// The masters of the cluster, when the run starts.
pub struct Cluster {
    pub masters: Vec<Master>,
}

/// What each master had done by one moment, in the order of `masters`.
pub struct Snapshot(Vec<Counts>);

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    spublish: u64,
    evalsha: u64,
    cpu_s: Option<f64>,
}

/// One shard over the window.
#[derive(Debug, Clone, Serialize)]
pub struct Shard {
    pub master: String,
    pub pid: Option<u32>,
    pub slots: String,
    /// Rooms of the run whose channel hashes to this master's slots.
    pub rooms: u64,
    pub spublish: u64,
    pub spublish_per_s: f64,
    pub evalsha: u64,
    pub cpu_s: Option<f64>,
    /// CPU seconds / window seconds.
    pub cpu_utilisation: Option<f64>,
}

/// Every shard over the window.
#[derive(Debug, Clone, Serialize)]
pub struct ShardStats {
    pub about: &'static str,
    pub window_s: f64,
    pub shards: Vec<Shard>,
    pub spublish_total: u64,
    /// The busiest shard's share of the SPUBLISH calls (1 / shards when even).
    pub busiest_share: f64,
    pub masters_cpu_s: f64,
}

impl Cluster {
    /// The masters, as the first seed that answers sees them.
    pub async fn discover(seeds: &[String]) -> anyhow::Result<Cluster> {
        let mut last_error = None;
        for seed in seeds {
            match redis_text(seed, "CLUSTER NODES").await {
                Ok(text) => {
                    let mut masters = parse_masters(&text);
                    if masters.is_empty() {
                        bail!("{seed}: CLUSTER NODES lists no master with slots");
                    }
                    for master in &mut masters {
                        master.pid = redis_text(&master.addr, "INFO server")
                            .await
                            .ok()
                            .and_then(|info| info_field(&info, "process_id")?.parse().ok());
                    }
                    return Ok(Cluster { masters });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no seeds")))
            .context("reading the Redis Cluster's masters (--redis-cluster)")
    }

    pub async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let mut counts = Vec::new();
        for master in &self.masters {
            let stats = redis_text(&master.addr, "INFO commandstats")
                .await
                .with_context(|| format!("INFO commandstats of {}", master.addr))?;
            counts.push(Counts {
                spublish: calls(&stats, "spublish"),
                evalsha: calls(&stats, "evalsha"),
                cpu_s: master.pid.and_then(|p| procfs::sample(p).ok()).map(|s| s.cpu_s),
            });
        }
        Ok(Snapshot(counts))
    }

    /// Each shard between two snapshots, with the rooms it owns.
    pub fn since(&self, before: &Snapshot, after: &Snapshot, rooms: &[Uuid], window_s: f64) -> ShardStats {
        let shards: Vec<Shard> = self
            .masters
            .iter()
            .zip(before.0.iter().zip(&after.0))
            .map(|(master, (b, a))| {
                let cpu_s = a.cpu_s.zip(b.cpu_s).map(|(a, b)| a - b);
                let spublish = a.spublish.saturating_sub(b.spublish);
                Shard {
                    master: master.addr.clone(),
                    pid: master.pid,
                    slots: master
                        .slots
                        .iter()
                        .map(|(f, l)| if f == l { f.to_string() } else { format!("{f}-{l}") })
                        .collect::<Vec<_>>()
                        .join(","),
                    rooms: rooms.iter().filter(|r| master.owns(room_slot(r))).count() as u64,
                    spublish,
                    spublish_per_s: spublish as f64 / window_s.max(1e-9),
                    evalsha: a.evalsha.saturating_sub(b.evalsha),
                    cpu_s,
                    cpu_utilisation: cpu_s.map(|c| c / window_s.max(1e-9)),
                }
            })
            .collect();
        let spublish_total: u64 = shards.iter().map(|s| s.spublish).sum();
        let busiest = shards.iter().map(|s| s.spublish).max().unwrap_or(0);
        ShardStats {
            about: "per Redis Cluster master from the first send to the end of --duration (every event published by then): \
                    SPUBLISH and EVALSHA calls from INFO commandstats (calls made by scripts included), \
                    CPU from /proc/<pid>/stat; rooms = the run's sessions whose {session} slot the master serves",
            window_s,
            spublish_total,
            busiest_share: if spublish_total > 0 {
                busiest as f64 / spublish_total as f64
            } else {
                0.0
            },
            masters_cpu_s: shards.iter().filter_map(|s| s.cpu_s).sum(),
            shards,
        }
    }
}

impl Master {
    fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|(f, l)| (*f..=*l).contains(&slot))
    }
}

/// The slot of a room's channel `<prefix>:room:{<session>}`.
pub fn room_slot(session: &Uuid) -> u16 {
    hawker_redis::slot::key_slot(format!("{{{session}}}").as_bytes())
}

/// The masters with slots in a `CLUSTER NODES` answer (failed ones left out).
fn parse_masters(text: &str) -> Vec<Master> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
                return None;
            }
            let addr = fields.get(1)?.split('@').next()?.to_string();
            let slots: Vec<(u16, u16)> = fields
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((f, l)) => Some((f.parse().ok()?, l.parse().ok()?)),
                    None => s.parse().ok().map(|v| (v, v)),
                })
                .collect();
            (!slots.is_empty()).then_some(Master {
                addr,
                pid: None,
                slots,
            })
        })
        .collect()
}

/// `key:value` of an INFO answer.
fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

/// `calls=` of `cmdstat_<command>` in `INFO commandstats` (0 if never called).
fn calls(stats: &str, command: &str) -> u64 {
    info_field(stats, &format!("cmdstat_{command}"))
        .and_then(|v| v.split(',').find_map(|kv| kv.strip_prefix("calls=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_and_their_slots_are_read_from_cluster_nodes() {
        let text = "014f 127.0.0.1:7005@17005 slave fb75 0 1796326734088 1 connected\n\
            45dc 127.0.0.1:7001@17001 master - 0 1796326734088 2 connected 5461-10922\n\
            fb75 127.0.0.1:7000@17000 myself,master - 0 1796326734000 1 connected 0-5460 [5461->-45dc]\n\
            9b40 127.0.0.1:7002@17002 master,fail - 0 1796326734088 3 disconnected 10923-16383\n\
            aaaa 127.0.0.1:7100@17100 myself,master - 0 0 1 connected 0-100 200 300-16383\n";
        let masters = parse_masters(text);
        assert_eq!(
            masters.iter().map(|m| m.addr.as_str()).collect::<Vec<_>>(),
            ["127.0.0.1:7001", "127.0.0.1:7000", "127.0.0.1:7100"]
        );
        assert_eq!(masters[1].slots, [(0, 5460)]);
        assert_eq!(masters[2].slots, [(0, 100), (200, 200), (300, 16383)]);
        assert!(masters[2].owns(200) && !masters[2].owns(150));
    }

    #[test]
    fn command_calls_are_read_from_commandstats() {
        let stats = "# Commandstats\r\ncmdstat_spublish:calls=1649,usec=23835,usec_per_call=14.45,rejected_calls=0\r\n\
            cmdstat_evalsha:calls=5588,usec=326506\r\n";
        assert_eq!(calls(stats, "spublish"), 1649);
        assert_eq!(calls(stats, "evalsha"), 5588);
        assert_eq!(calls(stats, "publish"), 0);
    }

    #[test]
    fn a_rooms_slot_is_that_of_its_hash_tag() {
        let session = Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_d001);
        assert_eq!(
            room_slot(&session),
            hawker_redis::slot::key_slot(format!("hawker:room:{{{session}}}").as_bytes())
        );
    }
}
