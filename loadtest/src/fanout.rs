//! The `fanout` scenario: V viewers over K hub nodes, host events at Rh/s
//! and chat at Rc/s from C chatters for D seconds; latency from scheduled
//! send time, loss / duplicates / reordering per lane, and what it cost the
//! server (RSS per socket, CPU seconds per million deliveries).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use crate::clock;
use crate::frame::Parser;
use crate::plot;
use crate::publisher::{PublishConfig, Publishers};
use crate::server::{self, HubCounters, Machine, ProcSample, SpawnConfig, SpawnedNode};
use crate::stats::{histogram, Percentiles, Recorder};
use crate::viewer::{EndCommand, GroupConfig, GroupResult, LaneCounts, Sent, Shared, MAX_PLANNED};
use crate::worker::GroupHandle;
use crate::ws::Node;

/// Writes a line to stdout; a closed stdout (the reader went away) must not
/// abort the run before it stops the nodes it started.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The same for stderr.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Sockets one generator process holds at most (the file limit is 20,000).
const SOCKETS_PER_PROCESS: u64 = 19_500;
const DEV_SECRET: &str = "hawker-development-jwt-secret-not-for-production";

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
    /// (e.g. HAWKER__HUB__WRITE_BATCH=32), MALLOC_… and GLIBC_TUNABLES.
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
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    if !(k.starts_with("HAWKER") || k.starts_with("MALLOC_") || k == "GLIBC_TUNABLES") {
        return Err(format!(
            "`{k}`: only HAWKER…, MALLOC_… and GLIBC_TUNABLES variables are passed to the server"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

impl FanoutArgs {
    fn validate(&self) -> anyhow::Result<()> {
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
        if self.host_rate > 0.0 && !(1..=100).contains(&self.hosts) {
            bail!("--hosts must be 1 to 100");
        }
        if self.chat_rate > 0.0 && !(1..=1000).contains(&self.chatters) {
            bail!("--chatters must be 1 to 1000");
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
        if self.scenario.is_empty()
            || !self
                .scenario
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("--scenario: letters, digits, - and _ only");
        }
        let redis_host = self.redis.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
        if !crate::ws::is_loopback(redis_host) {
            bail!("--redis must be on 127.0.0.1");
        }
        Ok(())
    }

    fn host_planned(&self) -> u64 {
        (self.host_rate * self.duration).floor() as u64
    }

    fn chat_planned(&self) -> u64 {
        (self.chat_rate * self.duration).floor() as u64
    }
}

/// Runs the scenario and writes its results.
pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    args.validate()?;
    std::fs::create_dir_all(&args.out_dir).with_context(|| format!("creating {}", args.out_dir.display()))?;
    let mut spawned = Vec::new();
    let outcome = run_with_nodes(&args, &mut spawned).await;
    if !spawned.is_empty() {
        note!("stopping the spawned nodes");
        server::stop(&mut spawned);
    }
    outcome
}

async fn run_with_nodes(args: &FanoutArgs, spawned: &mut Vec<SpawnedNode>) -> anyhow::Result<()> {
    let run = Uuid::new_v4().simple().to_string()[..6].to_string();
    let started_at = chrono::Utc::now();
    let mut machine = Machine::read();
    note!(
        "run {run}: {} viewers, host {}/s, chat {}/s, {} s; load average {}",
        args.viewers,
        args.host_rate,
        args.chat_rate,
        args.duration,
        machine.loadavg_start
    );

    let mut server_env = Vec::new();
    let (nodes, admins, server_pids) = match args.spawn {
        Some(count) => {
            if !args.no_seed {
                note!("seeding the demo session (hawker seed)");
                server::seed(&args.hawker_bin, &args.config_dir)?;
            }
            if args.chat_rate > 0.0 {
                // The chatters are a handful of users sending far above a
                // person's rate; the per-user limit is not what is measured.
                server_env.push(("HAWKER__HUB__CHAT_PER_SEC".to_string(), "100000".to_string()));
                server_env.push(("HAWKER__HUB__CHAT_BURST".to_string(), "100000".to_string()));
            }
            if args.no_chat_thinning {
                server_env.push(("HAWKER__HUB__CHAT_THIN_PER_SEC".to_string(), "0".to_string()));
            }
            server_env.extend(args.server_env.iter().cloned());
            let config = SpawnConfig {
                count,
                hawker_bin: args.hawker_bin.clone(),
                config_dir: std::path::absolute(&args.config_dir)?,
                cpus: args.server_cpus.clone(),
                base_port: args.base_port,
                admin_base_port: args.admin_base_port,
                env: server_env.clone(),
                log_dir: std::env::temp_dir(),
                run: run.clone(),
            };
            note!("starting {count} node(s) pinned to CPUs `{}`", args.server_cpus);
            *spawned = server::spawn(&config).await?;
            let nodes = spawned
                .iter()
                .map(|n| Node::parse(&n.ws_url))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let admins = spawned.iter().map(|n| n.admin_url.clone()).collect();
            let pids = spawned.iter().map(|n| n.pid).collect();
            (nodes, admins, pids)
        }
        None => {
            let nodes = args
                .nodes
                .iter()
                .map(|n| Node::parse(n))
                .collect::<anyhow::Result<Vec<_>>>()?;
            (nodes, args.admin.clone(), args.server_pid.clone())
        }
    };
    if nodes.is_empty() {
        bail!("no nodes");
    }
    for pid in &server_pids {
        machine.server_cpus.insert(*pid, server::affinity(*pid));
    }
    let redis_pid = server::redis_pid(&args.redis).await;
    // How fast the cores are now: a slow core means a busy machine or host.
    let calibration_before = (
        server::calibrate_on(if spawned.is_empty() { "" } else { &args.server_cpus }),
        server::calibrate_ms(),
    );

    // Senders first: their sockets are part of the baseline RSS.
    let (stop_tx, stop) = watch::channel(false);
    let shared = Rc::new(Shared {
        parser: Parser::new(&run),
        recorder: std::cell::RefCell::new(Recorder::default()),
        host_planned: args.host_planned(),
        chat_planned: args.chat_planned(),
    });
    let mut publishers = Publishers::connect(
        PublishConfig {
            run: run.clone(),
            session: args.session,
            agency: args.agency,
            jwt_secret: args.jwt_secret.clone(),
            nodes: nodes.clone(),
            host_rate: args.host_rate,
            chat_rate: args.chat_rate,
            hosts: args.hosts,
            chatters: args.chatters,
            host_planned: args.host_planned(),
            chat_planned: args.chat_planned(),
            text_bytes: args.text_bytes,
            connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        },
        shared.clone(),
        stop,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = samples(&server_pids);

    // Viewers.
    let mut groups = Vec::new();
    let procs = args.procs as u64;
    let per = args.viewers.div_ceil(procs);
    for p in 0..procs {
        let first = p * per;
        let count = per.min(args.viewers.saturating_sub(first));
        if count == 0 {
            continue;
        }
        let config = GroupConfig {
            run: run.clone(),
            session: args.session,
            jwt_secret: args.jwt_secret.clone(),
            nodes: nodes.clone(),
            first,
            count,
            connect_concurrency: args.connect_concurrency,
            connect_retries: args.connect_retries,
            connect_timeout_ms: args.connect_timeout_ms,
            host_planned: args.host_planned(),
            chat_planned: args.chat_planned(),
            hosts: args.hosts,
            chatters: args.chatters,
        };
        groups.push(if procs == 1 {
            GroupHandle::local(config)
        } else {
            GroupHandle::worker(&config)?
        });
    }
    let connect_started = Instant::now();
    let bar = progress_bar(args.viewers, "connecting");
    let deadline = connect_started + Duration::from_secs(args.connect_deadline_secs);
    loop {
        let (connected, failed, settled) = groups.iter().fold((0, 0, true), |(c, f, s), g| {
            let p = g.progress.borrow();
            (c + p.connected, f + p.failed, s && p.settled)
        });
        bar.set_position(connected + failed);
        bar.set_message(format!("{connected} connected, {failed} failed"));
        if settled {
            break;
        }
        if Instant::now() > deadline {
            note!("connect deadline passed with {connected} connected; going on");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bar.finish();
    let connect_secs = connect_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
    let rss_connected = samples(&server_pids);

    // The measured window.
    let (counters_before, _) = server::scrape(&admins).await;
    let worker_pids: Vec<u32> = groups.iter().filter_map(GroupHandle::pid).collect();
    let cpu_before = cpu_of(&server_pids);
    let cpu_times_before = server::cpu_times();
    let wait_before = (wait_of(&server_pids), wait_of(&[std::process::id()]));
    let redis_before = redis_pid.and_then(|p| server::sample(p).ok());
    let generator_before = generator_cpu(&worker_pids);
    // On a whole second, so the per-second buckets are the run's seconds.
    let start_us = (clock::now_us() + 500_000).div_ceil(1_000_000) * 1_000_000;
    let window_started = Instant::now();
    let (scrape_stop, mut scrape_stopped) = watch::channel(false);
    let sampler = {
        let mut generator = worker_pids.clone();
        generator.push(std::process::id());
        let stop = scrape_stopped.clone();
        tokio::task::spawn_local(server::sample_seconds(
            server_pids.clone(),
            generator,
            redis_pid,
            start_us,
            stop,
        ))
    };
    if args.scrape_interval > 0.0 && !admins.is_empty() {
        let admins = admins.clone();
        let every = Duration::from_secs_f64(args.scrape_interval.max(0.1));
        tokio::task::spawn_local(async move {
            loop {
                tokio::select! {
                    _ = scrape_stopped.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(every) => { let _ = server::scrape(&admins).await; }
                }
            }
        });
    }
    let perf_data = std::env::temp_dir().join(format!("hawker-loadtest-{run}.perf.data"));
    let profiler = (args.perf && !server_pids.is_empty() && args.duration > 0.0)
        .then(|| server::start_profile(&server_pids, &perf_data, args.duration))
        .transpose()?;
    let bar = progress_bar((args.duration * 10.0) as u64, "sending");
    let (sent, publish_outcome) = {
        let publishing = publishers.publish(start_us, Duration::from_secs(5));
        tokio::pin!(publishing);
        let mut ticker = tokio::time::interval(Duration::from_millis(250));
        let mut last = (Instant::now(), 0u64);
        loop {
            tokio::select! {
                outcome = &mut publishing => break outcome,
                _ = ticker.tick() => {
                    let delivered: u64 = groups.iter().map(|g| g.progress.borrow().deliveries).sum();
                    let elapsed = clock::now_us().saturating_sub(start_us) as f64 / 1e6;
                    let rate = (delivered - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
                    if last.0.elapsed() >= Duration::from_secs(1) {
                        last = (Instant::now(), delivered);
                    }
                    bar.set_position((elapsed * 10.0) as u64);
                    bar.set_message(format!("{delivered} deliveries, ~{rate:.0}/s"));
                }
            }
        }
    };
    if sent.host_total == 0 && sent.chat_total == 0 {
        // An idle run: hold the sockets for the duration.
        tokio::time::sleep_until(clock::instant_at(start_us + (args.duration * 1e6) as u64).into()).await;
    }
    bar.finish();
    let _ = scrape_stop.send(true);
    // Workers exit after their result, so their CPU is read now.
    let workers_cpu_after = cpu_of(&worker_pids);
    for group in &mut groups {
        group.end(EndCommand {
            sent: sent.clone(),
            drain_ms: (args.drain_secs * 1000.0) as u64,
        });
    }
    let mut viewers = GroupResult::default();
    let mut recorder = Recorder::default();
    let seconds = sampler.await.unwrap_or_default();
    for group in groups {
        let result = group.result().await?;
        recorder.merge(&result.recorder);
        viewers.add(&result);
    }
    let window_secs = window_started.elapsed().as_secs_f64();
    let cpu_after = cpu_of(&server_pids);
    let cpu_window = server::cpu_window(&cpu_times_before, &server::cpu_times());
    let wait_after = (wait_of(&server_pids), wait_of(&[std::process::id()]));
    let redis_after = redis_pid.and_then(|p| server::sample(p).ok());
    let generator_after = cpu_of(&[std::process::id()]) + workers_cpu_after;
    let (counters_after, metrics_missing) = server::scrape(&admins).await;
    let rss_end = samples(&server_pids);
    let profile = match profiler {
        Some(child) => Some(server::finish_profile(child, &perf_data)?),
        None => None,
    };
    let _ = stop_tx.send(true);
    let mut sender_sockets = GroupResult::default();
    for receiver in publishers.finish().await {
        receiver.account(&mut sender_sockets, &sent.host_mask(), &sent.chat_mask());
    }
    machine.loadavg_end = server::loadavg();
    // The hub's core is not timed again: the nodes are still busy closing sockets.
    let calibration_after = (None, server::calibrate_ms());

    let report = Report {
        args,
        run: &run,
        started_at,
        machine: &machine,
        server_env: &server_env,
        nodes: &nodes,
        server_pids: &server_pids,
        viewers: &viewers,
        sender_sockets: &sender_sockets,
        recorder: &recorder,
        sent: &sent,
        publish: &publish_outcome,
        connect_secs,
        window_secs,
        rss: [&rss_before, &rss_connected, &rss_end],
        server_cpu_s: cpu_after - cpu_before,
        server_wait_s: wait_after.0 - wait_before.0,
        generator_wait_s: wait_after.1 - wait_before.1,
        redis: (redis_pid, redis_before, redis_after),
        generator_cpu_s: generator_after - generator_before,
        counters: counters_after.since(&counters_before),
        metrics_missing: &metrics_missing,
        spawned,
        start_us,
        profile,
        calibration: [calibration_before, calibration_after],
        cpu_window,
        seconds: &seconds,
    };
    report.write()
}

fn samples(pids: &[u32]) -> Vec<ProcSample> {
    pids.iter()
        .map(|p| server::sample(*p).unwrap_or_default())
        .collect()
}

fn cpu_of(pids: &[u32]) -> f64 {
    samples(pids).iter().map(|s| s.cpu_s).sum()
}

fn wait_of(pids: &[u32]) -> f64 {
    samples(pids).iter().map(|s| s.wait_s).sum()
}

/// CPU seconds of this process and the given workers.
fn generator_cpu(workers: &[u32]) -> f64 {
    cpu_of(&[std::process::id()]) + cpu_of(workers)
}

fn progress_bar(len: u64, what: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{what:>10} [{{elapsed_precise}}] {{bar:40.cyan/blue}} {{pos}}/{{len}} {{msg}}"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

struct Report<'a> {
    args: &'a FanoutArgs,
    run: &'a str,
    started_at: chrono::DateTime<chrono::Utc>,
    machine: &'a Machine,
    server_env: &'a [(String, String)],
    nodes: &'a [Node],
    server_pids: &'a [u32],
    viewers: &'a GroupResult,
    sender_sockets: &'a GroupResult,
    recorder: &'a Recorder,
    sent: &'a Sent,
    publish: &'a crate::publisher::PublishOutcome,
    connect_secs: f64,
    window_secs: f64,
    /// Before the viewers, after they connected (and settled), at the end.
    rss: [&'a [ProcSample]; 3],
    server_cpu_s: f64,
    /// Run-queue wait of the nodes and of this process over the window.
    server_wait_s: f64,
    generator_wait_s: f64,
    redis: (Option<u32>, Option<ProcSample>, Option<ProcSample>),
    generator_cpu_s: f64,
    counters: HubCounters,
    metrics_missing: &'a [String],
    spawned: &'a [SpawnedNode],
    start_us: u64,
    /// `perf report` of the nodes over the window, when `--perf`.
    profile: Option<String>,
    /// Milliseconds of `calibrate` on the hub's CPUs and the generator's, before and after.
    calibration: [(Option<f64>, f64); 2],
    /// Hub, generator and others' CPU per second of the run.
    seconds: &'a [server::SecondSample],
    /// Per-CPU time over the window, from /proc/stat.
    cpu_window: std::collections::BTreeMap<String, std::collections::BTreeMap<&'static str, f64>>,
}

impl Report<'_> {
    fn write(&self) -> anyhow::Result<()> {
        let a = self.args;
        let v = self.viewers;
        let host = Percentiles::of(&self.recorder.host);
        let chat = Percentiles::of(&self.recorder.chat);
        let mut both = histogram(true);
        let _ = both.add(&self.recorder.host);
        let _ = both.add(&self.recorder.chat);
        let all = Percentiles::of(&both);
        let mut connect_hist = histogram(true);
        v.connect_us.add_to(&mut connect_hist);
        let connect = Percentiles::of(&connect_hist);
        let deliveries = self.recorder.deliveries;
        let per_s = if a.duration > 0.0 {
            deliveries as f64 / a.duration
        } else {
            0.0
        };
        let peak_per_s = self.recorder.arrivals.values().copied().max().unwrap_or(0);
        let kb = |samples: &[ProcSample]| samples.iter().map(|s| s.rss_kb).sum::<u64>();
        let [before, connected, end] = self.rss;
        let rss_per_viewer = if v.connected > 0 {
            (kb(connected) as f64 - kb(before) as f64) * 1024.0 / v.connected as f64
        } else {
            0.0
        };
        let cpu_per_million = if deliveries > 0 {
            self.server_cpu_s / (deliveries as f64 / 1e6)
        } else {
            0.0
        };
        // Chat: what every socket (viewers and senders) missed, against what
        // the nodes say they dropped on purpose.
        let mut chat_all = LaneCounts::default();
        chat_all.add(&v.chat);
        chat_all.add(&self.sender_sockets.chat);
        let server_dropped = self.counters.chat_thinned + self.counters.chat_queue_full;
        let unexplained = chat_all.missing as f64 - server_dropped;
        let redis_cpu = match self.redis {
            (_, Some(b), Some(e)) => Some(e.cpu_s - b.cpu_s),
            _ => None,
        };
        let frame_bytes = if v.marked_frames > 0 {
            v.marked_bytes as f64 / v.marked_frames as f64
        } else {
            0.0
        };
        let per_second: Vec<_> = self
            .recorder
            .per_second
            .iter()
            .map(|(second, (h, c))| {
                let (h, c) = (Percentiles::of(h), Percentiles::of(c));
                json!({
                    "t": (*second as f64) - (self.start_us / 1_000_000) as f64,
                    "host": { "count": h.count, "p50_ms": h.p50_ms, "p99_ms": h.p99_ms, "max_ms": h.max_ms },
                    "chat": { "count": c.count, "p50_ms": c.p50_ms, "p99_ms": c.p99_ms, "max_ms": c.max_ms },
                    "arrivals": self.recorder.arrivals.get(second).copied().unwrap_or(0),
                })
            })
            .collect();

        let stamp = self.started_at.format("%Y%m%dT%H%M%SZ");
        let base = a.out_dir.join(format!("{}-{stamp}", a.scenario));
        let json_path = base.with_extension("json");
        let png_path = base.with_extension("png");
        let perf_path = base.with_extension("perf.txt");
        if let Some(profile) = &self.profile {
            std::fs::write(&perf_path, profile)
                .with_context(|| format!("writing {}", perf_path.display()))?;
        }
        let title = format!(
            "{}: {} viewers / {} node(s), host {}/s, chat {}/s — p99 {:.1} ms, {:.0} deliveries/s",
            a.scenario,
            v.viewers,
            self.nodes.len(),
            a.host_rate,
            a.chat_rate,
            all.p99_ms,
            per_s
        );
        let png = match plot::latency_png(self.recorder, self.seconds, self.start_us, &title, &png_path) {
            Ok(()) => Some(png_path.display().to_string()),
            Err(e) => {
                note!("no plot: {e:#}");
                None
            }
        };
        let document = json!({
            "scenario": a.scenario,
            "run": self.run,
            "started_at": self.started_at.to_rfc3339(),
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "note": a.note,
            "machine": self.machine,
            "cpu_window_s": self.cpu_window,
            "calibration_ms": {
                "about": "a fixed integer loop, about 145 ms on an idle core of this machine; higher = the core was shared",
                "hub_cpus_before": self.calibration[0].0,
                                "generator_before": self.calibration[0].1,
                "generator_after": self.calibration[1].1,
            },
            "config": {
                "viewers": a.viewers,
                "nodes": self.nodes.iter().map(|n| n.url.clone()).collect::<Vec<_>>(),
                "spawned": !self.spawned.is_empty(),
                "server_cpus": if self.spawned.is_empty() { "" } else { a.server_cpus.as_str() },
                "server_env": self.server_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                "host_rate": a.host_rate,
                "hosts": if a.host_rate > 0.0 { a.hosts } else { 0 },
                "chat_rate": a.chat_rate,
                "chatters": if a.chat_rate > 0.0 { a.chatters } else { 0 },
                "duration_s": a.duration,
                "text_bytes": a.text_bytes,
                "procs": a.procs,
                "connect_concurrency": a.connect_concurrency,
                "scrape_interval_s": a.scrape_interval,
                "session": a.session,
            },
            "connect": {
                "connected": v.connected,
                "failed": v.connect_failed,
                "retries": v.connect_retries,
                "wall_s": self.connect_secs,
                "per_s": if self.connect_secs > 0.0 { v.connected as f64 / self.connect_secs } else { 0.0 },
                "time": connect,
            },
            "latency": { "all": all, "host": host, "chat": chat },
            "deliveries": {
                "total": deliveries,
                "per_s": per_s,
                "peak_per_s": peak_per_s,
                "window_s": self.window_secs,
                "frames_received": v.frames,
                "bytes_received": v.bytes,
                "mean_event_frame_bytes": frame_bytes,
            },
            "host_lane": v.host,
            "chat_lane": {
                "viewers": v.chat,
                "all_sockets": chat_all,
                "server_thinned": self.counters.chat_thinned,
                "server_queue_full": self.counters.chat_queue_full,
                "unexplained_missing": unexplained,
            },
            "order": {
                "offset_regressions": v.offset_regressions,
                "host_out_of_order": v.host.out_of_order,
                "chat_out_of_order": v.chat.out_of_order,
                "garbled": v.garbled,
            },
            "connections": {
                "disconnects": v.disconnects,
                "reconnects": v.reconnects,
                "reconnect_failures": v.reconnect_failures,
                "resets": v.resets,
                "error_frames": v.error_frames,
                "close_codes": v.closes,
            },
            "publish": self.publish,
            "sent": { "host": self.sent.host_total, "host_failed": self.sent.host_failed.len(),
                      "chat": self.sent.chat_total, "chat_failed": self.sent.chat_failed.len() },
            "server": {
                "pids": self.server_pids,
                "rss_kb_before_viewers": kb(before),
                "rss_kb_viewers_connected": kb(connected),
                "rss_kb_end": kb(end),
                "rss_bytes_per_viewer": rss_per_viewer,
                "threads": connected.iter().map(|s| s.threads).collect::<Vec<_>>(),
                "cpu_s": self.server_cpu_s,
                "cpu_utilisation": if self.window_secs > 0.0 { self.server_cpu_s / self.window_secs } else { 0.0 },
                "cpu_s_per_million_deliveries": cpu_per_million,
                "run_queue_wait_s": self.server_wait_s,
                "counters": self.counters,
                "events_out_per_s": if a.duration > 0.0 { self.counters.events_out / a.duration } else { 0.0 },
                "socket_writes": self.counters.writes(),
                "frames_per_write": self.counters.writes().map(|w| self.counters.events_out / w),
                "cpu_us_per_write": self.counters.writes().map(|w| self.server_cpu_s * 1e6 / w),
                "metrics_unavailable": self.metrics_missing,
                "logs": self.spawned.iter().map(|n| n.log.display().to_string()).collect::<Vec<_>>(),
            },
            "redis": { "pid": self.redis.0, "cpu_s": redis_cpu },
            "generator": {
                "cpu_s": self.generator_cpu_s,
                "run_queue_wait_s": self.generator_wait_s,
                "cpu_utilisation": if self.window_secs > 0.0 { self.generator_cpu_s / self.window_secs } else { 0.0 },
                "rss_kb": server::sample(std::process::id()).map(|s| s.rss_kb).unwrap_or(0),
            },
            "files": {
                "json": json_path.display().to_string(),
                "png": png,
                "profile": self.profile.as_ref().map(|_| perf_path.display().to_string()),
            },
            "per_second": per_second,
            "cpu_per_second": self.seconds,
        });
        std::fs::write(&json_path, serde_json::to_string_pretty(&document)?)
            .with_context(|| format!("writing {}", json_path.display()))?;

        out!("== {} (run {}) ==", a.scenario, self.run);
        out!(
            "viewers        {} connected, {} failed, {} retries; connect p50 {:.1} ms p99 {:.1} ms max {:.1} ms; {:.1} s ({:.0}/s)",
            v.connected,
            v.connect_failed,
            v.connect_retries,
            connect.p50_ms,
            connect.p99_ms,
            connect.max_ms,
            self.connect_secs,
            v.connected as f64 / self.connect_secs.max(1e-3)
        );
        out!(
            "sent           host {}/{} acked, chat {}/{} acked, errors {:?}, worst send lag {:.1} ms",
            self.publish.host_acked,
            self.publish.host_planned,
            self.publish.chat_acked,
            self.publish.chat_planned,
            self.publish.errors,
            self.publish.max_send_lag_ms
        );
        for (name, p) in [
            ("latency all", &all),
            ("latency host", &host),
            ("latency chat", &chat),
        ] {
            if p.count > 0 {
                out!(
                    "{name:<14} p50 {:.2} ms  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n = {})",
                    p.p50_ms,
                    p.p90_ms,
                    p.p99_ms,
                    p.p999_ms,
                    p.max_ms,
                    p.count
                );
            }
        }
        out!(
            "deliveries     {deliveries} = {per_s:.0}/s (peak second {peak_per_s}); server frames out {:.0}/s; mean event frame {frame_bytes:.0} B",
            self.counters.events_out / a.duration.max(1e-9)
        );
        out!(
            "host lane      expected {} received {} lost {} dup {} out-of-order {} (viewers missing some: {})",
            v.host.expected,
            v.host.received,
            v.host.missing,
            v.host.duplicates,
            v.host.out_of_order,
            v.host.viewers_missing
        );
        out!(
            "chat lane      expected {} received {} missing {} dup {} out-of-order {}; server thinned {:.0}, queue-full {:.0}; unexplained {unexplained:.0}",
            chat_all.expected,
            chat_all.received,
            chat_all.missing,
            chat_all.duplicates,
            chat_all.out_of_order,
            self.counters.chat_thinned,
            self.counters.chat_queue_full
        );
        out!(
            "connections    offset regressions {}, disconnects {}, reconnects {}, resets {}, closes {:?}",
            v.offset_regressions,
            v.disconnects,
            v.reconnects,
            v.resets,
            v.closes
        );
        out!(
            "server         RSS {} → {} → {} KB; {:.0} B per viewer socket; CPU {:.2} s ({:.0}% of the window), {:.2} s per million deliveries",
            kb(before),
            kb(connected),
            kb(end),
            rss_per_viewer,
            self.server_cpu_s,
            100.0 * self.server_cpu_s / self.window_secs.max(1e-9),
            cpu_per_million
        );
        out!(
            "               waited {:.2} s for a CPU (run queue) in the {:.1} s window",
            self.server_wait_s,
            self.window_secs
        );
        if let Some(writes) = self.counters.writes() {
            out!(
                "               {writes:.0} socket writes, {:.2} frames per write, {:.1} µs of hub CPU per write",
                self.counters.events_out / writes,
                self.server_cpu_s * 1e6 / writes
            );
        }
        out!(
            "others         generator CPU {:.2} s ({:.0}%), waited {:.2} s; Redis CPU {}",
            self.generator_cpu_s,
            100.0 * self.generator_cpu_s / self.window_secs.max(1e-9),
            self.generator_wait_s,
            redis_cpu.map_or("n/a".to_string(), |c| format!("{c:.2} s"))
        );
        let niced: f64 = self.cpu_window.values().filter_map(|c| c.get("nice")).sum();
        let per_cpu: Vec<String> = self
            .cpu_window
            .iter()
            .map(|(cpu, t)| {
                let g = |k: &str| t.get(k).copied().unwrap_or(0.0);
                format!(
                    "{cpu} user {:.1} sys {:.1} softirq {:.1} idle {:.1}",
                    g("user"),
                    g("system"),
                    g("softirq"),
                    g("idle")
                )
            })
            .collect();
        out!(
            "machine        others' niced work {niced:.2} CPU s in the window; {}",
            per_cpu.join("; ")
        );
        if !self.metrics_missing.is_empty() {
            out!("metrics        unavailable: {:?}", self.metrics_missing);
        }
        out!(
            "load average   {} at start, {} at end; calibration loop (ms, ~145 idle): hub core {} before, generator core {:.0} before, {:.0} after",
            self.machine.loadavg_start,
            self.machine.loadavg_end,
            self.calibration[0].0.map_or("n/a".to_string(), |v| format!("{v:.0}")),
            self.calibration[0].1,
            self.calibration[1].1
        );
        out!("result         {}", json_path.display());
        if let Some(png) = png {
            out!("plot           {png}");
        }
        if self.profile.is_some() {
            out!("profile        {}", perf_path.display());
        }
        Ok(())
    }
}
