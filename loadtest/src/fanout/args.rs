//! `hawker-loadtest fanout`'s options and their limits.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use uuid::Uuid;

use super::viewer::MAX_PLANNED;
use crate::common::env::parse_env;
use crate::common::DEV_SECRET;

/// Sockets one generator process holds at most (the file limit is 20,000).
const SOCKETS_PER_PROCESS: u64 = 19_500;

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Name of the scenario, used in the result file names.
    #[arg(long, default_value = "fanout")]
    pub scenario: String,
    /// Viewer sockets (receive only), spread round-robin over the nodes.
    #[arg(long, default_value_t = 1000)]
    pub viewers: u64,
    /// Host events per second (`host.announce`), all host sockets together.
    #[arg(long, default_value_t = 10.0)]
    pub host_rate: f64,
    /// Host sockets (agency tokens, spread over the nodes, the first on the
    /// first node). Each socket's commands are handled one after another.
    #[arg(long, default_value_t = 1)]
    pub hosts: u32,
    /// Chat messages per second, all chatters together.
    #[arg(long, default_value_t = 0.0)]
    pub chat_rate: f64,
    /// Chatter sockets (spread over the nodes); they also receive.
    #[arg(long, default_value_t = 10)]
    pub chatters: u32,
    /// Private notices per second to distinct viewers (notice g to viewer
    /// g % V), through `POST /v1/dev/notices` (spawned or development
    /// nodes). With it the run is two runs: first a broadcast run with the
    /// same deliveries per second (host events at R / V per second), then the
    /// notices run (no host events, no chat); the notices report compares
    /// the hub CPU per delivery of both.
    #[arg(long, default_value_t = 0.0)]
    pub notice_rate: f64,
    /// A notice batch leaves this long after its first notice was due.
    #[arg(long, default_value_t = 10)]
    pub notice_batch_ms: u64,
    /// HTTP connections sending notice batches (one request in flight each).
    #[arg(long, default_value_t = 4)]
    pub notice_conns: usize,
    /// With --notice-rate: skip the broadcast run.
    #[arg(long)]
    pub no_broadcast_run: bool,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Length of each event's text (the server adds ~120 bytes of envelope).
    #[arg(long, default_value_t = 100)]
    pub text_bytes: usize,
    /// Hub nodes to use, e.g. ws://127.0.0.1:8080,ws://127.0.0.1:8081 (ignored with --spawn).
    #[arg(long, value_delimiter = ',', default_value = "ws://127.0.0.1:8080")]
    pub nodes: Vec<String>,
    /// The nodes' admin listeners, for their counters (e.g. http://127.0.0.1:9090,…).
    #[arg(long, value_delimiter = ',')]
    pub admin: Vec<String>,
    /// Server process ids to read RSS and CPU from (with --nodes).
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Start K hub nodes for the run (and stop them after).
    #[arg(long)]
    pub spawn: Option<usize>,
    /// The server binary for --spawn.
    #[arg(long, default_value = "./target/release/hawker")]
    pub hawker_bin: PathBuf,
    /// Configuration directory for spawned nodes.
    #[arg(long, default_value = "config")]
    pub config_dir: PathBuf,
    /// CPUs to pin spawned nodes to (`taskset -c`); empty for none.
    #[arg(long, default_value = "0")]
    pub server_cpus: String,
    /// First public port of spawned nodes (node i gets the i-th free port from here).
    #[arg(long, default_value_t = 28080)]
    pub base_port: u16,
    /// First admin port of spawned nodes.
    #[arg(long, default_value_t = 29080)]
    pub admin_base_port: u16,
    /// Extra environment for spawned nodes, KEY=VALUE (repeatable): HAWKER__… settings
    /// (e.g. HAWKER__HUB__WRITE_BATCH=32), MALLOC_…, GLIBC_TUNABLES, LD_PRELOAD,
    /// TOKIO_WORKER_THREADS.
    #[arg(long = "server-env", value_parser = parse_env)]
    pub server_env: Vec<(String, String)>,
    /// Turn chat thinning off on spawned nodes (HAWKER__HUB__CHAT_THIN_PER_SEC=0).
    #[arg(long)]
    pub no_chat_thinning: bool,
    /// Skip `hawker seed` before spawning.
    #[arg(long)]
    pub no_seed: bool,
    /// The session (room); the default is the seeded demo session.
    #[arg(long, default_value = "00000000-0000-4000-8000-00000000d001")]
    pub session: Uuid,
    /// The session's agency (its token may host).
    #[arg(long, default_value = "00000000-0000-4000-8000-00000000a001")]
    pub agency: Uuid,
    /// Rooms (sessions): `--session` and N − 1 more, scheduled for the
    /// agency through `POST /v1/agencies/{agency}/sessions` at the start of
    /// the run. Viewer i watches room (i / nodes) % N (so every room has
    /// viewers on every node); host socket j hosts room j % N (with N > 1,
    /// --hosts 1 means one host socket per room, otherwise a multiple of N).
    /// --host-rate and --chat-rate stay the totals over all rooms (chatter
    /// j is in room j % N: with fewer chatters than rooms, one per room).
    /// No --notice-rate with N > 1. With --reference the reference server's
    /// run has N rooms too, placed the same way (their sessions are derived
    /// from the run id: the reference server has no API and opens any room).
    #[arg(long, default_value_t = 1)]
    pub rooms: u32,
    /// A Redis Cluster for spawned nodes: its seeds, comma-separated
    /// (`redis://127.0.0.1:7000,redis://127.0.0.1:7001,…`), passed as
    /// HAWKER__REDIS__CLUSTER. The run reads every master's `INFO
    /// commandstats` (SPUBLISH, EVALSHA) and CPU time before and after the
    /// window and reports them per shard, with the rooms each owns.
    #[arg(long, default_value = "")]
    pub redis_cluster: String,
    #[arg(long, env = "HAWKER_LOADTEST_JWT_SECRET", default_value = DEV_SECRET, hide_default_value = true)]
    pub jwt_secret: String,
    /// Viewer connects in flight at once (per process).
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Retries per viewer connect (with backoff).
    #[arg(long, default_value_t = 5)]
    pub connect_retries: u32,
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    /// Give up waiting for viewers to connect after this long.
    #[arg(long, default_value_t = 180)]
    pub connect_deadline_secs: u64,
    /// Generator processes holding the viewers (≤ 19,500 sockets each).
    #[arg(long, default_value_t = 1)]
    pub procs: usize,
    /// Seconds to wait after connecting before reading RSS.
    #[arg(long, default_value_t = 3.0)]
    pub settle_secs: f64,
    /// Longest wait for stragglers after the last send.
    #[arg(long, default_value_t = 10.0)]
    pub drain_secs: f64,
    /// Where the JSON and the PNG go.
    #[arg(long, default_value = "loadtest/results")]
    pub out_dir: PathBuf,
    /// Redis (for its CPU time), host:port on 127.0.0.1.
    #[arg(long, default_value = "127.0.0.1:6379")]
    pub redis: String,
    /// Free text kept in the result (e.g. what else ran on the machine).
    #[arg(long, default_value = "")]
    pub note: String,
    /// Also read the nodes' /metrics every this many seconds during the run
    /// (0: only before and after). Prometheus would; it also empties the
    /// nodes' histogram buffers.
    #[arg(long, default_value_t = 0.0)]
    pub scrape_interval: f64,
    /// Profile the server processes during the sending window with
    /// `perf record -e cpu-clock` and keep the top of `perf report` next to the JSON.
    #[arg(long)]
    pub perf: bool,
    /// Run the same scenario first against the reference server (a bare
    /// tokio-tungstenite fan-out, this tool's `reference-server`, pinned
    /// like hawker), then against hawker, and report hawker / reference.
    /// Needs --spawn 1; works with --rooms (both runs get the same rooms).
    #[arg(long)]
    pub reference: bool,
}

/// Which server a run of the invocation measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Hawker,
    /// The reference server of `--reference`.
    Reference,
}

/// One run of an invocation.
#[derive(Debug, Clone)]
pub struct Phase {
    pub args: FanoutArgs,
    pub server: Server,
}

impl FanoutArgs {
    /// Limits of the fan-out run (the harness checks --scenario and --redis).
    pub fn validate(&self) -> anyhow::Result<()> {
        let finite = |v: f64| v.is_finite() && v >= 0.0;
        if !(finite(self.host_rate) && finite(self.chat_rate) && finite(self.duration)) {
            bail!("rates and duration must be finite and not negative");
        }
        if self.duration > 600.0 {
            bail!("--duration is limited to 600 s");
        }
        if self.host_rate > 100_000.0 || self.chat_rate > 100_000.0 {
            bail!("rates are limited to 100,000 events/s");
        }
        if !finite(self.notice_rate) || self.notice_rate > 100_000.0 {
            bail!("--notice-rate must be 0 to 100,000 notices/s");
        }
        if self.notice_planned() > MAX_PLANNED {
            bail!("--notice-rate × duration is limited to {MAX_PLANNED} notices");
        }
        if self.notice_rate > 0.0 && self.viewers == 0 {
            bail!("--notice-rate needs viewers to send notices to");
        }
        if !(1..=1000).contains(&self.notice_batch_ms) || !(1..=64).contains(&self.notice_conns) {
            bail!("--notice-batch-ms must be 1 to 1000 and --notice-conns 1 to 64");
        }
        if self.host_planned() > MAX_PLANNED || self.chat_planned() > MAX_PLANNED {
            bail!("rate × duration is limited to {MAX_PLANNED} events per lane");
        }
        if self.viewers > 200_000 {
            bail!("--viewers is limited to 200,000");
        }
        if self.procs == 0 || self.procs > 32 {
            bail!("--procs must be 1 to 32");
        }
        let per_process = self.viewers.div_ceil(self.procs as u64);
        if per_process > SOCKETS_PER_PROCESS {
            bail!(
                "{per_process} viewers per process is above the {SOCKETS_PER_PROCESS} sockets one process may open: \
                 use --procs {}",
                self.viewers.div_ceil(SOCKETS_PER_PROCESS)
            );
        }
        if self.host_rate > 0.0 && !(1..=5000).contains(&self.hosts) {
            bail!("--hosts must be 1 to 5000");
        }
        if self.chat_rate > 0.0 && !(1..=5000).contains(&self.chatters) {
            bail!("--chatters must be 1 to 5000");
        }
        if !(40..=1000).contains(&self.text_bytes) {
            bail!("--text-bytes must be 40 to 1000 (host text is limited to 1000 characters)");
        }
        if self.spawn.is_some_and(|k| k == 0 || k > 16) {
            bail!("--spawn must be 1 to 16");
        }
        if !(0.0..=60.0).contains(&self.scrape_interval) {
            bail!("--scrape-interval must be 0 to 60 s");
        }
        if !(0.0..=60.0).contains(&self.drain_secs) || !(0.0..=60.0).contains(&self.settle_secs) {
            bail!("--drain-secs and --settle-secs must be 0 to 60");
        }
        if self.reference && self.spawn != Some(1) {
            bail!("--reference needs --spawn 1: the reference server is one process, without Redis between nodes");
        }
        if !(1..=5000).contains(&self.rooms) {
            bail!("--rooms must be 1 to 5,000");
        }
        if self.rooms > 1 {
            if self.notice_rate > 0.0 {
                bail!("--rooms above 1 measures host events and chat: leave out --notice-rate");
            }
            if self.hosts % self.rooms != 0 {
                bail!("--hosts must be a multiple of --rooms (or 1: one host socket per room)");
            }
            if self.chat_rate > 0.0 && self.chatters % self.rooms != 0 {
                bail!(
                    "--chatters must be a multiple of --rooms (or less than --rooms: one chatter per room)"
                );
            }
        }
        if !self.redis_cluster.is_empty() && self.cluster_seeds().is_err() {
            bail!("--redis-cluster: comma-separated redis://127.0.0.1:PORT seeds");
        }
        if self.reference && self.notice_rate > 0.0 {
            bail!("--reference measures room events: leave out --notice-rate");
        }
        Ok(())
    }

    /// With --rooms N above 1 and --hosts 1: one host socket per room; and
    /// with fewer chatters than rooms, one chatter per room.
    pub fn with_room_hosts(mut self) -> Self {
        if self.rooms > 1 && self.hosts == 1 {
            self.hosts = self.rooms;
        }
        if self.rooms > 1 && self.chatters < self.rooms {
            self.chatters = self.rooms;
        }
        self
    }

    /// `host:port` of each --redis-cluster seed (on 127.0.0.1).
    pub fn cluster_seeds(&self) -> anyhow::Result<Vec<String>> {
        self.redis_cluster
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|seed| {
                let addr = seed
                    .trim()
                    .strip_prefix("redis://")
                    .map(|a| a.trim_end_matches('/'))
                    .filter(|a| {
                        a.rsplit_once(':').is_some_and(|(h, p)| {
                            crate::common::ws::is_loopback(h) && p.parse::<u16>().is_ok()
                        })
                    });
                addr.map(str::to_string)
                    .ok_or_else(|| anyhow::anyhow!("`{seed}` is not redis://127.0.0.1:PORT"))
            })
            .collect()
    }

    pub fn host_planned(&self) -> u64 {
        (self.host_rate * self.duration).floor() as u64
    }

    pub fn chat_planned(&self) -> u64 {
        (self.chat_rate * self.duration).floor() as u64
    }

    pub fn notice_planned(&self) -> u64 {
        (self.notice_rate * self.duration).floor() as u64
    }

    /// Notices one viewer gets at most.
    pub fn notice_planned_per_viewer(&self) -> u64 {
        self.notice_planned().div_ceil(self.viewers.max(1))
    }

    /// The runs of one invocation: with --reference, the reference server's
    /// run (scenario `<scenario>-reference`) then hawker's; with
    /// --notice-rate, the broadcast run with the same deliveries per second
    /// (unless --no-broadcast-run), then the notices run; otherwise this run alone.
    pub fn phases(&self) -> Vec<Phase> {
        let hawker = |args: FanoutArgs| Phase {
            args,
            server: Server::Hawker,
        };
        if self.reference {
            let mut reference = self.clone();
            reference.scenario = format!("{}-reference", self.scenario);
            return vec![
                Phase {
                    args: reference,
                    server: Server::Reference,
                },
                hawker(self.clone()),
            ];
        }
        if self.notice_rate <= 0.0 {
            return vec![hawker(self.clone())];
        }
        let mut phases = Vec::new();
        if !self.no_broadcast_run {
            let mut broadcast = self.clone();
            broadcast.scenario = format!("{}-broadcast", self.scenario);
            broadcast.notice_rate = 0.0;
            broadcast.host_rate = self.notice_rate / self.viewers as f64;
            broadcast.chat_rate = 0.0;
            phases.push(hawker(broadcast));
        }
        let mut notices = self.clone();
        notices.host_rate = 0.0;
        notices.chat_rate = 0.0;
        phases.push(hawker(notices));
        phases
    }
    /// The environment of spawned nodes: the tool's own settings, then `--server-env`.
    pub fn spawn_env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if self.chat_rate > 0.0 {
            // The chatters are a handful of users sending far above a
            // person's rate; the per-user limit is not what is measured.
            env.push(("HAWKER__HUB__CHAT_PER_SEC".to_string(), "100000".to_string()));
            env.push(("HAWKER__HUB__CHAT_BURST".to_string(), "100000".to_string()));
        }
        if !self.redis_cluster.is_empty() {
            env.push(("HAWKER__REDIS__CLUSTER".to_string(), self.redis_cluster.clone()));
        }
        if self.no_chat_thinning {
            env.push(("HAWKER__HUB__CHAT_THIN_PER_SEC".to_string(), "0".to_string()));
        }
        env.extend(self.server_env.iter().cloned());
        env
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: FanoutArgs,
    }

    fn parse(line: &str) -> FanoutArgs {
        Cli::parse_from(std::iter::once("fanout").chain(line.split_whitespace())).args
    }

    #[test]
    fn reference_runs_first_under_its_own_name_then_hawker_with_the_same_load() {
        let args = parse("--spawn 1 --reference --scenario smoke --viewers 500 --host-rate 20");
        args.validate().unwrap();
        let phases = args.phases();
        assert_eq!(
            phases
                .iter()
                .map(|p| (p.server, p.args.scenario.as_str()))
                .collect::<Vec<_>>(),
            [(Server::Reference, "smoke-reference"), (Server::Hawker, "smoke")]
        );
        for phase in &phases {
            assert_eq!((phase.args.viewers, phase.args.host_rate), (500, 20.0));
        }
    }

    #[test]
    fn reference_needs_one_spawned_node_and_no_notices() {
        assert!(parse("--reference").validate().is_err());
        assert!(parse("--reference --spawn 2").validate().is_err());
        assert!(parse("--reference --spawn 1 --notice-rate 10")
            .validate()
            .is_err());
        assert_eq!(parse("--spawn 1").phases().len(), 1);
    }

    #[test]
    fn reference_runs_the_same_rooms_as_hawker() {
        let args = parse(
            "--spawn 1 --reference --scenario rooms2000 --rooms 2000 --viewers 10000 \
             --host-rate 2000 --chat-rate 10000 --duration 20",
        )
        .with_room_hosts();
        args.validate().unwrap();
        let phases = args.phases();
        assert_eq!(
            phases.iter().map(|p| p.server).collect::<Vec<_>>(),
            [Server::Reference, Server::Hawker]
        );
        for phase in &phases {
            let a = &phase.args;
            assert_eq!(
                (a.rooms, a.hosts, a.chatters, a.viewers, a.host_rate, a.chat_rate),
                (2000, 2000, 2000, 10000, 2000.0, 10000.0)
            );
        }
        assert!(
            parse("--spawn 1 --reference --rooms 5000 --viewers 25000 --procs 2")
                .with_room_hosts()
                .validate()
                .is_ok()
        );
        assert!(parse("--spawn 1 --reference --rooms 5001")
            .with_room_hosts()
            .validate()
            .is_err());
        assert!(parse("--spawn 1 --reference --rooms 3 --notice-rate 5")
            .with_room_hosts()
            .validate()
            .is_err());
        assert!(parse("--spawn 2 --reference --rooms 3")
            .with_room_hosts()
            .validate()
            .is_err());
    }

    #[test]
    fn rooms_get_one_host_socket_and_one_chatter_each() {
        let args = parse("--rooms 60 --chat-rate 5").with_room_hosts();
        assert_eq!((args.hosts, args.chatters), (60, 60));
        assert!(args.validate().is_ok());
        assert!(parse("--rooms 3 --hosts 4").validate().is_err());
        assert!(parse("--rooms 3 --hosts 6").validate().is_ok());
        assert!(parse("--rooms 3 --hosts 3 --chat-rate 5 --chatters 6")
            .validate()
            .is_ok());
        assert!(parse("--rooms 3 --hosts 3 --chat-rate 5 --chatters 4")
            .validate()
            .is_err());
        assert!(parse("--rooms 3 --hosts 3 --notice-rate 5").validate().is_err());
        assert!(parse("--rooms 5001 --hosts 5001").validate().is_err());
    }

    #[test]
    fn cluster_seeds_go_to_the_nodes_and_stay_on_loopback() {
        let args = parse("--redis-cluster redis://127.0.0.1:7000,redis://127.0.0.1:7001/");
        assert_eq!(
            args.cluster_seeds().unwrap(),
            ["127.0.0.1:7000", "127.0.0.1:7001"]
        );
        assert!(args.spawn_env().contains(&(
            "HAWKER__REDIS__CLUSTER".into(),
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001/".into()
        )));
        assert!(parse("--redis-cluster redis://10.0.0.1:7000").validate().is_err());
        assert!(parse("--redis-cluster 127.0.0.1:7000").validate().is_err());
    }
}
