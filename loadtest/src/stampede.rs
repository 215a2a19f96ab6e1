//! The `stampede` scenario: buyers press "buy" on one flash deal. Three
//! modes, one per budget of the commerce issue:
//!
//! - `commit`: a deal too big to sell out (1,000,000 units, cap 2, a fresh
//!   buyer every two attempts), as fast as C connections go: committed orders/s.
//! - `soldout`: a 1,000-unit deal sold out by a burst of 5,000 buyers (the
//!   stampede itself), then hammered: sold-out rejections/s.
//! - `rate`: open loop at a fixed attempt rate (10,000/s) on a deal that does
//!   not sell out, latency from the scheduled send time: p99.
//!
//! Afterwards the invariants are checked in Postgres (Σ order units =
//! deal.sold ≤ quantity, nobody over the cap, every 201's order exists), and
//! the baseline — pgbench, one transaction per order on one hot row — runs
//! against the same Postgres. See loadtest/README.md and docs/benchmarks.md.

mod baseline;
mod http1;
mod load;
mod plot;
mod setup;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use hawker_core::Role;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use self::baseline::{BaselineConfig, BaselineResult, PgTarget};
use self::load::{PhaseConfig, PhaseResult, Progress, Transport};
use self::setup::{Checks, DealSpec, SettleMetrics};
use crate::clock;
use crate::server::{self, Machine, SpawnConfig, SpawnedNode};
use crate::stats::Percentiles;
use crate::ws::Minter;

/// Attempt indexes of the warm-up start here: its buyers and keys are not the measured phase's.
const WARMUP_FIRST: u64 = 1 << 40;
const DEV_SECRET: &str = "hawker-development-jwt-secret-not-for-production";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Committed orders/s: a deal that does not sell out, as fast as possible.
    Commit,
    /// Sold-out rejections/s: sell a small deal out, then hammer it.
    Soldout,
    /// Latency at a fixed attempt rate (open loop), on a deal that does not sell out.
    Rate,
}

#[derive(Debug, Clone, Args)]
pub struct StampedeArgs {
    #[arg(long, value_enum, default_value = "commit")]
    pub mode: Mode,
    /// How purchases travel: HTTP/1.1 keep-alive (any buyer on any
    /// connection) or the room socket's `deal.buy` (one buyer per socket).
    #[arg(long, value_enum, default_value = "http")]
    pub transport: Transport,
    /// Units of the deal [commit, rate: 1,000,000; soldout: 1,000].
    #[arg(long)]
    pub quantity: Option<i32>,
    /// Per-buyer cap.
    #[arg(long, default_value_t = 2)]
    pub cap: i32,
    /// Units per purchase attempt.
    #[arg(long, default_value_t = 1)]
    pub order_quantity: i32,
    /// Distinct buyers; attempt i is made by buyer i mod B [commit: 50,000 × duration / cap;
    /// rate: rate × duration / cap; soldout: 20,000].
    #[arg(long)]
    pub buyers: Option<u64>,
    /// Attempts per second, open loop (latency from the scheduled send time) [rate: 10,000;
    /// otherwise none: as fast as the connections go, latency from the send].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Concurrent connections (HTTP keep-alive connections or sockets).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Generator threads (each a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Seconds of the measured phase (at most 60).
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Stop after this many attempts in the measured phase.
    #[arg(long)]
    pub attempts: Option<u64>,
    /// Seconds of purchases on the same deal before the measured phase
    /// (commit, rate), followed by ANALYZE of the order tables, so that the
    /// server's queries are planned with the statistics of a table that has a
    /// hot deal in it rather than those of the empty tables of a fresh start.
    #[arg(long, default_value_t = 3.0)]
    pub warmup_secs: f64,
    /// soldout: buyers in the burst that sells the deal out (one attempt each).
    #[arg(long, default_value_t = 5000)]
    pub sellout_buyers: u64,
    /// Give up on one attempt after this long.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Start a node for the run (and stop it after).
    #[arg(long)]
    pub spawn: bool,
    /// Base URL of a running node (without --spawn).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub node: String,
    /// Its admin listener, for /metrics (without --spawn).
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    pub admin: String,
    /// Its process id, for CPU (without --spawn).
    #[arg(long)]
    pub server_pid: Option<u32>,
    #[arg(long, default_value = "./target/release/hawker")]
    pub hawker_bin: PathBuf,
    #[arg(long, default_value = "config")]
    pub config_dir: PathBuf,
    /// CPUs to pin the spawned node to (`taskset -c`); empty: not pinned.
    #[arg(long, default_value = "")]
    pub server_cpus: String,
    #[arg(long, default_value_t = 28180)]
    pub base_port: u16,
    #[arg(long, default_value_t = 29180)]
    pub admin_base_port: u16,
    /// Extra environment for the spawned node, KEY=VALUE (repeatable): HAWKER__… settings
    /// (e.g. HAWKER__COMMERCE__BATCH_MAX=1024), MALLOC_…, GLIBC_TUNABLES, LD_PRELOAD,
    /// TOKIO_WORKER_THREADS.
    #[arg(long = "server-env", value_parser = parse_env)]
    pub server_env: Vec<(String, String)>,
    /// The database of the run; `hawker seed` creates and migrates it. Its own
    /// database keeps hundreds of thousands of orders away from everyone else's.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/hawker_stampede")]
    pub database_url: String,
    /// Keep earlier runs' orders (by default the stampede database's order tables are emptied).
    #[arg(long)]
    pub keep_orders: bool,
    /// The session the deals run in: its own room, so no one else's viewers see its events.
    #[arg(long, default_value = "00000000-0000-4000-8000-00000005d001")]
    pub session: Uuid,
    #[arg(long, default_value = "00000000-0000-4000-8000-00000000a001")]
    pub agency: Uuid,
    #[arg(long, default_value = "00000000-0000-4000-8000-00000001e001")]
    pub sku: Uuid,
    #[arg(long, env = "HAWKER_LOADTEST_JWT_SECRET", default_value = DEV_SECRET, hide_default_value = true)]
    pub jwt_secret: String,
    /// Redis, for its CPU time and to drop the deal's gate keys after the run.
    #[arg(long, default_value = "127.0.0.1:6379")]
    pub redis: String,
    /// Keep the deal's gate keys in Redis after the run.
    #[arg(long)]
    pub keep_gate: bool,
    /// Seconds of the pgbench baseline after the stampede (0: none).
    #[arg(long, default_value_t = 10)]
    pub baseline_secs: u32,
    /// pgbench client counts to try (each for --baseline-secs); the best tps is the baseline.
    #[arg(long, value_delimiter = ',', default_value = "8,16")]
    pub baseline_clients: Vec<u32>,
    #[arg(long, default_value = "loadtest/pgbench/one_tx_per_order.sql")]
    pub baseline_script: PathBuf,
    #[arg(long, default_value = "loadtest/pgbench/setup.sql")]
    pub baseline_setup: PathBuf,
    /// Profile the node during the measured phase (`perf record -e cpu-clock`).
    #[arg(long)]
    pub perf: bool,
    #[arg(long)]
    pub scenario: Option<String>,
    #[arg(long, default_value = "loadtest/results")]
    pub out_dir: PathBuf,
    /// Free text kept in the result.
    #[arg(long, default_value = "")]
    pub note: String,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    // LD_PRELOAD: to try another allocator (e.g. /usr/lib/x86_64-linux-gnu/libjemalloc.so.2)
    // without rebuilding the server.
    if !(k.starts_with("HAWKER")
        || k.starts_with("MALLOC_")
        || k == "GLIBC_TUNABLES"
        || k == "LD_PRELOAD"
        || k == "TOKIO_WORKER_THREADS")
    {
        return Err(format!(
            "`{k}`: only HAWKER…, MALLOC_…, GLIBC_TUNABLES, LD_PRELOAD and TOKIO_WORKER_THREADS are passed"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

/// The settings of a run, defaults filled in.
#[derive(Debug, Clone, Serialize)]
struct Plan {
    mode: Mode,
    transport: Transport,
    quantity: i32,
    cap: i32,
    order_quantity: i32,
    buyers: u64,
    rate: Option<f64>,
    connections: usize,
    threads: usize,
    duration_s: f64,
    attempts: u64,
    sellout_buyers: u64,
}

impl Plan {
    /// Attempts one buyer can make before the cap refuses them.
    fn per_buyer(&self) -> u64 {
        u64::try_from(self.cap / self.order_quantity).unwrap_or(1).max(1)
    }
}

impl StampedeArgs {
    fn plan(&self) -> anyhow::Result<Plan> {
        if !(self.duration > 0.0 && self.duration <= 60.0) {
            bail!("--duration must be above 0 and at most 60 s");
        }
        let rate = match (self.mode, self.rate) {
            (Mode::Rate, None) => Some(10_000.0),
            (_, r) => r,
        };
        if rate.is_some_and(|r| !(r > 0.0 && r <= 200_000.0)) {
            bail!("--rate must be above 0 and at most 200,000/s");
        }
        if !(1..=100).contains(&self.order_quantity) {
            bail!("--order-quantity must be 1 to 100");
        }
        if self.cap < self.order_quantity {
            bail!("--cap must be at least --order-quantity");
        }
        let quantity = self.quantity.unwrap_or(match self.mode {
            Mode::Soldout => 1000,
            _ => 1_000_000,
        });
        if !(1..=1_000_000).contains(&quantity) {
            bail!("--quantity must be 1 to 1,000,000 (the deal limit)");
        }
        let per_buyer = u64::try_from(self.cap / self.order_quantity).unwrap_or(1).max(1);
        let planned = match rate {
            Some(r) => (r * self.duration).ceil() as u64,
            None => (50_000.0 * self.duration).ceil() as u64,
        };
        let attempts = self.attempts.unwrap_or(u64::MAX);
        let buyers = self.buyers.unwrap_or(match self.mode {
            Mode::Soldout => 20_000,
            _ => planned.min(attempts).div_ceil(per_buyer).max(1),
        });
        if buyers == 0 || buyers > 2_000_000 {
            bail!("--buyers must be 1 to 2,000,000");
        }
        if !(1..=19_000).contains(&self.connections) {
            bail!("--connections must be 1 to 19,000");
        }
        if !(1..=16).contains(&self.threads) {
            bail!("--threads must be 1 to 16");
        }
        if self.transport == Transport::Socket && self.mode != Mode::Soldout {
            bail!(
                "--transport socket holds one buyer per socket, who may buy only up to the cap: \
                 use it with --mode soldout"
            );
        }
        if self.mode == Mode::Soldout
            && self.sellout_buyers.saturating_mul(self.order_quantity as u64) < quantity as u64
        {
            bail!("--sellout-buyers × --order-quantity must reach --quantity, or the deal does not sell out");
        }
        Ok(Plan {
            mode: self.mode,
            transport: self.transport,
            quantity,
            cap: self.cap,
            order_quantity: self.order_quantity,
            buyers,
            rate,
            connections: self.connections,
            threads: self.threads,
            duration_s: self.duration,
            attempts,
            sellout_buyers: self.sellout_buyers,
        })
    }

    fn scenario(&self) -> String {
        self.scenario.clone().unwrap_or_else(|| {
            format!(
                "stampede-{}",
                match self.mode {
                    Mode::Commit => "commit",
                    Mode::Soldout => "soldout",
                    Mode::Rate => "rate",
                }
            )
        })
    }
}

pub async fn run(args: StampedeArgs) -> anyhow::Result<()> {
    let plan = args.plan()?;
    let scenario = args.scenario();
    if scenario.is_empty()
        || !scenario
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("--scenario: letters, digits, - and _ only");
    }
    let redis_host = args.redis.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
    if !crate::ws::is_loopback(redis_host) {
        bail!("--redis must be on 127.0.0.1");
    }
    let pg_target = PgTarget::parse(&args.database_url)?;
    std::fs::create_dir_all(&args.out_dir).with_context(|| format!("creating {}", args.out_dir.display()))?;
    let mut spawned = Vec::new();
    let outcome = run_with_node(&args, &plan, &scenario, &pg_target, &mut spawned).await;
    if !spawned.is_empty() {
        server::stop(&mut spawned);
    }
    outcome
}

/// CPU seconds of the processes that matter, read together.
#[derive(Debug, Clone, Default, Serialize)]
struct CpuSample {
    server: f64,
    redis: f64,
    postgres: f64,
    /// Each Postgres process (backends come and go: a delta counts only what
    /// ran inside the window).
    #[serde(skip)]
    postgres_by_pid: Vec<(u32, f64)>,
    generator: f64,
    /// All CPUs, busy (non-idle) seconds, from /proc/stat.
    machine_busy: f64,
    at: f64,
}

struct Pids {
    server: Option<u32>,
    redis: Option<u32>,
}

fn cpu_sample(pids: &Pids, started: Instant) -> CpuSample {
    let cpu = |pid: Option<u32>| {
        pid.and_then(|p| server::sample(p).ok())
            .map(|s| s.cpu_s)
            .unwrap_or(0.0)
    };
    let postgres: Vec<(u32, f64)> = postgres_pids().into_iter().map(|p| (p, cpu(Some(p)))).collect();
    CpuSample {
        server: cpu(pids.server),
        redis: cpu(pids.redis),
        postgres: postgres.iter().map(|(_, c)| c).sum(),
        postgres_by_pid: postgres,
        generator: cpu(Some(std::process::id())),
        machine_busy: machine_busy_s(),
        at: started.elapsed().as_secs_f64(),
    }
}

fn cpu_delta(a: &CpuSample, b: &CpuSample) -> CpuSample {
    CpuSample {
        server: b.server - a.server,
        redis: b.redis - a.redis,
        postgres: b
            .postgres_by_pid
            .iter()
            .map(|(pid, after)| {
                let before = a.postgres_by_pid.iter().find(|(p, _)| p == pid).map(|(_, c)| *c);
                after - before.unwrap_or(0.0)
            })
            .sum(),
        postgres_by_pid: Vec::new(),
        generator: b.generator - a.generator,
        machine_busy: b.machine_busy - a.machine_busy,
        at: b.at - a.at,
    }
}

/// Every `postgres` process (the postmaster, its backends and workers).
fn postgres_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
        })
        .collect()
}

/// Busy seconds of all CPUs together since boot (user + nice + system + irq + softirq + steal).
fn machine_busy_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let busy: u64 = [0usize, 1, 2, 5, 6, 7].iter().filter_map(|i| v.get(*i)).sum();
    busy as f64 / 100.0
}

/// Share of the machine (all CPUs) busy over `secs`, in percent.
async fn busy_percent(secs: f64) -> f64 {
    let (a, t) = (machine_busy_s(), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    100.0 * (machine_busy_s() - a) / (t.elapsed().as_secs_f64() * cpus)
}

async fn scrape(admin: &str) -> SettleMetrics {
    match server::http_get(admin, "/metrics").await {
        Ok((200, body)) => SettleMetrics::parse(&body),
        _ => SettleMetrics::default(),
    }
}

fn sign_buyers(secret: &str, run: &str, count: u64, threads: usize) -> anyhow::Result<Vec<String>> {
    let threads = threads.max(1) as u64;
    let chunk = count.div_ceil(threads);
    let parts: Vec<anyhow::Result<Vec<String>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let minter = Minter::new(secret);
                    let (from, to) = (t * chunk, ((t + 1) * chunk).min(count));
                    (from..to)
                        .map(|i| minter.token(&buyer_name(run, i), Role::Viewer, None))
                        .collect::<anyhow::Result<Vec<String>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a signing thread panicked")))
            })
            .collect()
    });
    let mut tokens = Vec::with_capacity(count as usize);
    for part in parts {
        tokens.extend(part?);
    }
    Ok(tokens)
}

fn buyer_name(run: &str, i: u64) -> String {
    format!("st{run}b{i}")
}

async fn run_with_node(
    args: &StampedeArgs,
    plan: &Plan,
    scenario: &str,
    pg_target: &PgTarget,
    spawned: &mut Vec<SpawnedNode>,
) -> anyhow::Result<()> {
    let run = Uuid::new_v4().simple().to_string()[..6].to_string();
    let started_at = chrono::Utc::now();
    let mut machine = Machine::read();
    let busy_before = busy_percent(2.0).await;
    // How fast each core is now (a VM's cores slow down when the host is busy).
    let calibrate_before = [server::calibrate_on("0"), server::calibrate_on("1")];
    eprintln!(
        "run {run}: {scenario}, {:?} over {:?}; load average {}, machine {:.0}% busy in the 2 s before",
        plan.mode, plan.transport, machine.loadavg_start, busy_before
    );

    let mut server_env = vec![("HAWKER__DATABASE__URL".to_string(), args.database_url.clone())];
    server_env.extend(args.server_env.iter().cloned());
    let (http_base, admin, server_pid) = if args.spawn {
        eprintln!("seeding {} (hawker seed)", pg_target.database);
        setup::seed(
            &args.hawker_bin,
            &std::path::absolute(&args.config_dir)?,
            &args.database_url,
        )?;
        let config = SpawnConfig {
            count: 1,
            hawker_bin: args.hawker_bin.clone(),
            config_dir: std::path::absolute(&args.config_dir)?,
            cpus: args.server_cpus.clone(),
            base_port: args.base_port,
            admin_base_port: args.admin_base_port,
            env: server_env.clone(),
            log_dir: std::env::temp_dir(),
            run: run.clone(),
        };
        *spawned = server::spawn(&config).await?;
        let node = &spawned[0];
        (
            node.ws_url.replacen("ws://", "http://", 1),
            node.admin_url.clone(),
            Some(node.pid),
        )
    } else {
        (
            args.node.trim_end_matches('/').to_string(),
            args.admin.clone(),
            args.server_pid,
        )
    };
    let addr = http_base
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("--node must be http://127.0.0.1:PORT"))?
        .to_string();
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
    if !crate::ws::is_loopback(host) {
        bail!("--node must be on 127.0.0.1");
    }
    if let Some(pid) = server_pid {
        machine.server_cpus.insert(pid, server::affinity(pid));
    }
    let pids = Pids {
        server: server_pid,
        redis: server::redis_pid(&args.redis).await,
    };

    let db = setup::connect(&args.database_url).await?;
    if !args.keep_orders {
        setup::reset_orders(&db, &args.database_url).await?;
    }
    setup::ensure_session(&db, args.session).await?;
    let minter = Minter::new(&args.jwt_secret);
    let agency_token = minter.token("stampede-agency", Role::Agency, Some(args.agency))?;
    let signing = Instant::now();
    // Buyers [0, B) for the measured phase, then the warm-up's own.
    let warmup_buyers = if plan.mode == Mode::Soldout || args.warmup_secs <= 0.0 {
        0
    } else {
        ((50_000.0 * args.warmup_secs) as u64).div_ceil(plan.per_buyer())
    };
    let tokens = Arc::new(sign_buyers(
        &args.jwt_secret,
        &run,
        plan.buyers + warmup_buyers,
        2,
    )?);
    eprintln!(
        "signed {} buyer tokens in {:.1} s",
        tokens.len(),
        signing.elapsed().as_secs_f64()
    );
    let deal = setup::create_deal(
        &db,
        &addr,
        &agency_token,
        &DealSpec {
            session: args.session,
            sku: args.sku,
            quantity: plan.quantity,
            cap: plan.cap,
            duration_secs: 300,
        },
    )
    .await?;
    eprintln!("deal {deal}: {} units, cap {}", plan.quantity, plan.cap);

    let progress = Arc::new(Progress::default());
    let base = PhaseConfig {
        run: run.clone(),
        addr: addr.clone(),
        session: args.session,
        deal,
        transport: Transport::Http,
        rate: None,
        connections: plan.connections,
        threads: plan.threads,
        start_us: 0,
        duration: Duration::from_secs(60),
        max_attempts: 0,
        first_attempt: 0,
        buyers: 0..plan.buyers,
        quantity: plan.order_quantity,
        timeout: Duration::from_millis(args.timeout_ms),
        tokens: tokens.clone(),
        progress: progress.clone(),
    };

    // commit, rate: a warm-up on the same deal, then statistics that know it.
    let warmup = if plan.mode != Mode::Soldout && args.warmup_secs > 0.0 {
        let config = PhaseConfig {
            start_us: clock::now_us(),
            duration: Duration::from_secs_f64(args.warmup_secs),
            first_attempt: WARMUP_FIRST,
            buyers: plan.buyers..plan.buyers + warmup_buyers,
            max_attempts: warmup_buyers * plan.per_buyer(),
            ..base.clone()
        };
        eprintln!("warming up: {} s, then ANALYZE", args.warmup_secs);
        let result = load::run_phase(&config).await?;
        setup::analyze(&db).await?;
        eprintln!(
            "warm-up: {} committed, {} rejected, {} errors",
            result.committed_count(),
            result.rejected_count(),
            result.error_count()
        );
        Some(result)
    } else {
        None
    };

    // soldout: the stampede proper — a burst of distinct buyers sells the deal out.
    let sellout = if plan.mode == Mode::Soldout {
        let config = PhaseConfig {
            start_us: clock::now_us(),
            max_attempts: plan.sellout_buyers,
            ..base.clone()
        };
        eprintln!("selling out: {} buyers, one attempt each", plan.sellout_buyers);
        let result = load::run_phase(&config).await?;
        let summary = phase_summary(&result, config.start_us);
        eprintln!(
            "sold out: {} committed, {} rejected, {} errors in {:.2} s",
            result.committed_count(),
            result.rejected_count(),
            result.error_count(),
            summary.window_s
        );
        setup::analyze(&db).await?;
        Some((result, config.start_us))
    } else {
        None
    };

    let metrics_before = scrape(&admin).await;
    let clock0 = Instant::now();
    let cpu_before = cpu_sample(&pids, clock0);
    // Time to open the connections before the first attempt.
    let start_us = clock::now_us() + 300_000 + 200 * plan.connections as u64;
    let progress = Arc::new(Progress::default());
    let config = PhaseConfig {
        progress: progress.clone(),
        transport: plan.transport,
        rate: plan.rate,
        start_us,
        duration: Duration::from_secs_f64(plan.duration_s),
        max_attempts: plan.attempts,
        first_attempt: if plan.mode == Mode::Soldout {
            plan.sellout_buyers
        } else {
            0
        },
        ..base.clone()
    };
    let perf_data = std::env::temp_dir().join(format!("hawker-stampede-{run}.perf.data"));
    let profiler = match (args.perf, server_pid) {
        (true, Some(pid)) => Some(server::start_profile(&[pid], &perf_data, plan.duration_s)?),
        _ => None,
    };
    eprintln!(
        "measuring: {} s, {} connections over {:?}, {}",
        plan.duration_s,
        plan.connections,
        plan.transport,
        match plan.rate {
            Some(r) => format!("{r}/s open loop"),
            None => "as fast as possible".to_string(),
        }
    );
    let phase = load::run_phase(&config);
    tokio::pin!(phase);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut last = (0u64, 0u64, 0u64);
    let mut cpu_series = Vec::new();
    let result = loop {
        tokio::select! {
            result = &mut phase => break result?,
            _ = ticker.tick() => {
                let (c, r, e) = (
                    progress.committed.load(Ordering::Relaxed),
                    progress.rejected.load(Ordering::Relaxed),
                    progress.errors.load(Ordering::Relaxed),
                );
                eprintln!(
                    "  {:>4.0} s: {:>7} committed/s {:>7} rejected/s {:>5} errors/s",
                    clock0.elapsed().as_secs_f64(), c - last.0, r - last.1, e - last.2
                );
                last = (c, r, e);
                cpu_series.push(cpu_sample(&pids, clock0));
            }
        }
    };
    let cpu_after = cpu_sample(&pids, clock0);
    let metrics_after = scrape(&admin).await;
    let profile = match profiler {
        Some(child) => Some(server::finish_profile(child, &perf_data)?),
        None => None,
    };
    machine.loadavg_end = server::loadavg();
    let calibrate_after = [server::calibrate_on("0"), server::calibrate_on("1")];

    eprintln!("checking the invariants in Postgres");
    let mut acks: Vec<(Uuid, u64)> = result.acks.clone();
    if let Some((s, _)) = &sellout {
        acks.extend(s.acks.iter().copied());
    }
    if let Some(w) = &warmup {
        acks.extend(w.acks.iter().copied());
    }
    let checks = setup::check(&db, deal, plan.cap, &acks, |b| buyer_name(&run, b)).await?;
    if checks.status != "ended" {
        let _ = setup::call(&addr, "POST", &format!("/v1/deals/{deal}/end"), &agency_token, "").await;
    }
    if !args.keep_gate {
        if let Err(e) = setup::drop_gate_keys(&args.redis, deal).await {
            eprintln!("could not drop the gate keys: {e:#}");
        }
    }

    // The baseline, with the node stopped so it does not compete.
    if !spawned.is_empty() {
        server::stop(spawned);
        spawned.clear();
    }
    let mut baselines = Vec::new();
    if args.baseline_secs > 0 {
        for &clients in &args.baseline_clients {
            eprintln!("baseline: pgbench, {clients} clients, {} s", args.baseline_secs);
            let result = baseline::run(
                &db,
                &BaselineConfig {
                    setup: args.baseline_setup.clone(),
                    script: args.baseline_script.clone(),
                    clients,
                    threads: 2.min(clients),
                    seconds: args.baseline_secs,
                    target: pg_target.clone(),
                },
            )
            .await?;
            eprintln!("  {:.0} tps", result.tps);
            baselines.push(result);
        }
    }
    // The fastest is the baseline: the comparison favours it.
    let baseline = baselines.iter().max_by(|a, b| a.tps.total_cmp(&b.tps));

    let report = Report {
        args,
        plan,
        scenario,
        run: &run,
        started_at,
        machine: &machine,
        busy_before,
        calibrate: [calibrate_before, calibrate_after],
        server_env: &server_env,
        deal,
        sellout: sellout.as_ref(),
        warmup: warmup.as_ref(),
        result: &result,
        start_us,
        cpu: cpu_delta(&cpu_before, &cpu_after),
        cpu_series: &cpu_series,
        metrics: metrics_after.since(&metrics_before),
        checks: &checks,
        baseline,
        baselines: &baselines,
        profile,
    };
    report.write()
}

#[derive(Debug, Clone, Serialize)]
struct PhaseSummary {
    attempts: u64,
    committed: u64,
    rejected: u64,
    errors: u64,
    /// From the start to the last answer.
    window_s: f64,
    committed_per_s: f64,
    rejected_per_s: f64,
    attempts_per_s: f64,
    latency: Percentiles,
    latency_committed: Percentiles,
    latency_rejected: Percentiles,
    send_lag: Percentiles,
}

fn phase_summary(r: &PhaseResult, start_us: u64) -> PhaseSummary {
    let window_s = (r.last_done_us.saturating_sub(start_us) as f64 / 1e6).max(1e-3);
    PhaseSummary {
        attempts: r.attempts,
        committed: r.committed_count(),
        rejected: r.rejected_count(),
        errors: r.error_count(),
        window_s,
        committed_per_s: r.committed_count() as f64 / window_s,
        rejected_per_s: r.rejected_count() as f64 / window_s,
        attempts_per_s: r.attempts as f64 / window_s,
        latency: Percentiles::of(&r.all),
        latency_committed: Percentiles::of(&r.committed),
        latency_rejected: Percentiles::of(&r.rejected),
        send_lag: Percentiles::of(&r.send_lag),
    }
}

struct Report<'a> {
    args: &'a StampedeArgs,
    plan: &'a Plan,
    scenario: &'a str,
    run: &'a str,
    started_at: chrono::DateTime<chrono::Utc>,
    machine: &'a Machine,
    busy_before: f64,
    /// `calibrate` ms on CPU 0 and 1, before and after (≈100 on an idle core).
    calibrate: [[Option<f64>; 2]; 2],
    server_env: &'a [(String, String)],
    deal: Uuid,
    sellout: Option<&'a (PhaseResult, u64)>,
    warmup: Option<&'a PhaseResult>,
    result: &'a PhaseResult,
    start_us: u64,
    cpu: CpuSample,
    cpu_series: &'a [CpuSample],
    metrics: SettleMetrics,
    checks: &'a Checks,
    baseline: Option<&'a BaselineResult>,
    baselines: &'a [BaselineResult],
    profile: Option<String>,
}

/// A budget of the issue: met or missed, and by how much.
#[derive(Debug, Clone, Serialize)]
struct Budget {
    name: &'static str,
    target: String,
    measured: String,
    met: bool,
    /// measured / target (for a ceiling, target / measured): below 1 means missed.
    ratio: f64,
}

impl Report<'_> {
    fn budgets(&self, s: &PhaseSummary) -> Vec<Budget> {
        let mut budgets = Vec::new();
        let floor = |name, target: f64, measured: f64, unit: &str| Budget {
            name,
            target: format!("≥ {target:.0} {unit}"),
            measured: format!("{measured:.0} {unit}"),
            met: measured >= target,
            ratio: measured / target,
        };
        // A fixed attempt rate measures latency; otherwise the mode's throughput budget.
        if let Some(rate) = self.plan.rate {
            let p99 = s.latency.p99_ms;
            budgets.push(Budget {
                name: "p99 at the fixed attempt rate",
                target: format!("≤ 50 ms at {rate:.0} attempts/s"),
                measured: format!("{p99:.1} ms at {:.0} attempts/s", s.attempts_per_s),
                met: p99 <= 50.0 && s.attempts_per_s >= 0.98 * rate,
                ratio: 50.0 / p99.max(1e-3),
            });
            return budgets;
        }
        match self.plan.mode {
            Mode::Commit => {
                budgets.push(floor(
                    "committed orders/s",
                    30_000.0,
                    s.committed_per_s,
                    "orders/s",
                ));
                if let Some(b) = self.baseline {
                    budgets.push(Budget {
                        name: "× one-transaction-per-order baseline",
                        target: "≥ 10×".to_string(),
                        measured: format!(
                            "{:.1}× ({:.0} / {:.0} tps)",
                            s.committed_per_s / b.tps,
                            s.committed_per_s,
                            b.tps
                        ),
                        met: s.committed_per_s >= 10.0 * b.tps,
                        ratio: s.committed_per_s / (10.0 * b.tps),
                    });
                }
            }
            Mode::Soldout => budgets.push(floor(
                "sold-out rejections/s",
                60_000.0,
                s.rejected_per_s,
                "rejections/s",
            )),
            Mode::Rate => {}
        }
        budgets
    }

    fn write(&self) -> anyhow::Result<()> {
        let s = phase_summary(self.result, self.start_us);
        let sellout = self.sellout.map(|(r, start)| phase_summary(r, *start));
        let budgets = self.budgets(&s);
        let stamp = self.started_at.format("%Y%m%dT%H%M%SZ");
        let base = self.args.out_dir.join(format!("{}-{stamp}", self.scenario));
        let json_path = base.with_extension("json");
        let png_path = base.with_extension("png");
        let attempts = s.attempts.max(1) as f64;
        let us_per_attempt = |v: f64| 1e6 * v / attempts;
        let m = &self.metrics;
        let per_second: Vec<_> = self
            .result
            .counts_by_second
            .iter()
            .map(|(sec, c)| {
                let lat = self
                    .result
                    .latency_by_second
                    .get(sec)
                    .map(Percentiles::of)
                    .unwrap_or_default();
                json!({ "second": sec, "committed": c.committed, "rejected": c.rejected, "errors": c.errors,
                        "p50_ms": lat.p50_ms, "p99_ms": lat.p99_ms, "max_ms": lat.max_ms })
            })
            .collect();
        let document = json!({
            "scenario": self.scenario,
            "run": self.run,
            "started_at": self.started_at,
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "note": self.args.note,
            "plan": self.plan,
            "deal": self.deal,
            "machine": self.machine,
            "machine_busy_before_pct": self.busy_before,
            "calibrate_ms_cpu0_cpu1": { "before": self.calibrate[0], "after": self.calibrate[1] },
            "server_env": self.server_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "warmup": self.warmup.map(|w| json!({
                "attempts": w.attempts, "committed": w.committed_count(), "rejected": w.rejected_count(),
                "errors": w.error_count(), "then": "ANALYZE customer_order, order_event, deal_buyer, deal",
            })),
            "sellout": sellout.as_ref().map(|p| json!({
                "summary": p,
                "codes": self.sellout.map(|(r, _)| &r.codes),
                "errors": self.sellout.map(|(r, _)| &r.errors),
            })),
            "measured": {
                "summary": s,
                "codes": self.result.codes,
                "errors": self.result.errors,
                "connects": self.result.connects,
                "per_second": per_second,
            },
            "cpu_seconds": self.cpu,
            "cpu_us_per_attempt": {
                "server": us_per_attempt(self.cpu.server),
                "redis": us_per_attempt(self.cpu.redis),
                "postgres": us_per_attempt(self.cpu.postgres),
                "generator": us_per_attempt(self.cpu.generator),
                "machine": us_per_attempt(self.cpu.machine_busy),
            },
            "cpu_series": self.cpu_series,
            "settlement": {
                "metrics": m,
                "mean_batch_size": m.batch_size_sum / m.batches.max(1.0),
                "mean_batch_ms": 1000.0 * m.batch_seconds_sum / m.batches.max(1.0),
                "settler_busy_pct": 100.0 * m.batch_seconds_sum / self.cpu.at.max(1e-3),
            },
            "checks": self.checks,
            "baseline": self.baseline,
            "baseline_runs": self.baselines.iter().map(|b| json!({"command": b.command, "tps": b.tps,
                "latency_avg_ms": b.latency_avg_ms, "loadavg_before": b.loadavg_before})).collect::<Vec<_>>(),
            "budgets": budgets,
        });
        std::fs::write(&json_path, serde_json::to_string_pretty(&document)?)?;
        let title = format!(
            "{} ({:?}, {}, {} conn) — {:.0} committed/s, {:.0} rejected/s, p99 {:.1} ms",
            self.scenario,
            self.plan.transport,
            match self.plan.rate {
                Some(r) => format!("{r:.0}/s open loop"),
                None => "closed loop".to_string(),
            },
            self.plan.connections,
            s.committed_per_s,
            s.rejected_per_s,
            s.latency.p99_ms
        );
        if let Err(e) = plot::png(self.result, &title, &png_path) {
            eprintln!("no plot: {e:#}");
        }
        if let Some(profile) = &self.profile {
            std::fs::write(base.with_extension("perf.txt"), profile)?;
        }

        // The text report.
        println!(
            "\n{} — run {} ({})",
            self.scenario,
            self.run,
            self.started_at.to_rfc3339()
        );
        println!(
            "machine     {} × {}, {} MB; load average {} → {}; {:.0}% busy before",
            self.machine.cpus,
            self.machine.cpu_model,
            self.machine.mem_total_mb,
            self.machine.loadavg_start,
            self.machine.loadavg_end,
            self.busy_before
        );
        let cal = |c: [Option<f64>; 2]| {
            c.iter()
                .map(|v| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "?".into()))
                .collect::<Vec<_>>()
                .join("/")
        };
        println!(
            "calibrate   {} ms before, {} ms after (CPU 0/1; ≈100 on an idle core, more when the host is busy)",
            cal(self.calibrate[0]),
            cal(self.calibrate[1])
        );
        if let Some(p) = &sellout {
            println!(
                "sell-out    {} attempts → {} committed, {} rejected, {} errors in {:.2} s; p99 {:.1} ms",
                p.attempts, p.committed, p.rejected, p.errors, p.window_s, p.latency.p99_ms
            );
        }
        println!(
            "measured    {} attempts in {:.2} s ({:.0}/s): {} committed ({:.0}/s), {} rejected ({:.0}/s), {} errors",
            s.attempts, s.window_s, s.attempts_per_s, s.committed, s.committed_per_s, s.rejected, s.rejected_per_s, s.errors
        );
        let codes: Vec<String> = self
            .result
            .codes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("answers     {}", codes.join(", "));
        if !self.result.errors.is_empty() {
            let errors: Vec<String> = self
                .result
                .errors
                .iter()
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect();
            println!("errors      {}", errors.join("; "));
        }
        let p = |x: &Percentiles| {
            format!(
                "p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} ms",
                x.p50_ms, x.p90_ms, x.p99_ms, x.p999_ms, x.max_ms
            )
        };
        println!("latency     {}", p(&s.latency));
        println!("  committed {}", p(&s.latency_committed));
        println!("  rejected  {}", p(&s.latency_rejected));
        if self.plan.rate.is_some() {
            println!("send lag    {}", p(&s.send_lag));
        }
        let ours = self.cpu.server + self.cpu.redis + self.cpu.postgres + self.cpu.generator;
        println!(
            "cpu         server {:.1} s, redis {:.1} s, postgres {:.1} s, generator {:.1} s, other processes {:.1} s; \
             machine {:.1} of {:.1} cpu-s busy",
            self.cpu.server,
            self.cpu.redis,
            self.cpu.postgres,
            self.cpu.generator,
            (self.cpu.machine_busy - ours).max(0.0),
            self.cpu.machine_busy,
            self.cpu.at * self.machine.cpus as f64,
        );
        println!(
            "  per attempt server {:.1} µs, redis {:.1} µs, postgres {:.1} µs, generator {:.1} µs",
            us_per_attempt(self.cpu.server),
            us_per_attempt(self.cpu.redis),
            us_per_attempt(self.cpu.postgres),
            us_per_attempt(self.cpu.generator),
        );
        if m.batches > 0.0 {
            println!(
                "settlement  {:.0} batches, mean {:.1} orders, mean {:.2} ms each; settler busy {:.0}% of the window",
                m.batches,
                m.batch_size_sum / m.batches,
                1000.0 * m.batch_seconds_sum / m.batches,
                100.0 * m.batch_seconds_sum / self.cpu.at.max(1e-3)
            );
        }
        let c = self.checks;
        println!(
            "postgres    deal {}/{} sold ({}{}), {} orders, {} units, {} buyers, {} over the cap, \
             {} deal_buyer mismatches",
            c.sold,
            c.quantity,
            c.status,
            c.end_reason
                .as_deref()
                .map(|r| format!(", {r}"))
                .unwrap_or_default(),
            c.order_rows,
            c.order_units,
            c.buyers,
            c.buyers_over_cap,
            c.deal_buyer_mismatches
        );
        println!(
            "            {} 201s ({} distinct), {} not in Postgres; {} order rows without a 201",
            c.acks, c.acks_distinct, c.acks_missing, c.rows_without_ack
        );
        println!(
            "invariants  {}{}",
            if c.pass { "PASS" } else { "FAIL" },
            if c.failures.is_empty() {
                String::new()
            } else {
                format!(": {}", c.failures.join("; "))
            }
        );
        for b in self.baselines {
            println!(
                "baseline    {:.0} tps (one transaction per order on one hot row; avg {:.2} ms): {}",
                b.tps, b.latency_avg_ms, b.command
            );
        }
        for b in &budgets {
            println!(
                "budget      {}: {} (target {}) — {}",
                b.name,
                b.measured,
                b.target,
                if b.met {
                    "met".to_string()
                } else {
                    format!("MISSED by {:.0}%", 100.0 * (1.0 - b.ratio))
                }
            );
        }
        println!("results     {} {}", json_path.display(), png_path.display());
        if !c.pass {
            bail!("invariants failed: {}", c.failures.join("; "));
        }
        Ok(())
    }
}
