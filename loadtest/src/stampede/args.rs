//! `hawker-loadtest stampede`'s options, and the plan of a run: the
//! options with the mode's defaults filled in and their limits checked.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, ValueEnum};
use serde::Serialize;
use uuid::Uuid;

use super::deals::{self, MAX_DEALS};
use super::load::Transport;
use super::setup::SEEDED_SESSION;
use crate::common::env::parse_env;
use crate::common::DEV_SECRET;

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
    /// Deals selling at once (1 to 200), each in its own session: the first in
    /// --session, the others in sessions derived from it. Each has --quantity
    /// and --cap; connection c sells deal c mod N (so --connections ≥ --deals).
    #[arg(long, default_value_t = 1)]
    pub deals: usize,
    /// Units of each deal [commit, rate: 1,000,000; soldout: 1,000].
    #[arg(long)]
    pub quantity: Option<i32>,
    /// Per-buyer cap.
    #[arg(long, default_value_t = 2)]
    pub cap: i32,
    /// Units per purchase attempt.
    #[arg(long, default_value_t = 1)]
    pub order_quantity: i32,
    /// Distinct buyers; attempt i is made by buyer i mod B [commit: 50,000 × duration / cap;
    /// rate: rate × duration / cap; soldout: 20,000, or with several deals
    /// --sellout-buyers × --deals if more].
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
    /// soldout: buyers per deal in the burst that sells the deals out (one attempt each).
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
    /// The session the deal runs in: its own room, so no one else's viewers see its events.
    /// With --deals N, deal k > 0 runs in a session derived from this one and k.
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

/// The settings of a run, defaults filled in.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub mode: Mode,
    pub transport: Transport,
    /// Deals selling at once, each in its own session.
    pub deals: usize,
    /// Units of each deal.
    pub quantity: i32,
    pub cap: i32,
    pub order_quantity: i32,
    pub buyers: u64,
    pub rate: Option<f64>,
    pub connections: usize,
    pub threads: usize,
    pub duration_s: f64,
    pub attempts: u64,
    /// soldout: attempts of the sell-out burst per deal.
    pub sellout_buyers: u64,
}

fn attempts_per_buyer(cap: i32, order_quantity: i32) -> u64 {
    u64::try_from(cap / order_quantity).unwrap_or(1).max(1)
}

impl Plan {
    /// Attempts one buyer can make before the cap refuses them.
    pub fn per_buyer(&self) -> u64 {
        attempts_per_buyer(self.cap, self.order_quantity)
    }

    /// soldout: attempts of the whole sell-out burst, every deal's share.
    pub fn sellout_attempts(&self) -> u64 {
        self.sellout_buyers.saturating_mul(self.deals as u64)
    }
}

impl StampedeArgs {
    pub fn plan(&self) -> anyhow::Result<Plan> {
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
        if !(1..=MAX_DEALS).contains(&self.deals) {
            bail!("--deals must be 1 to {MAX_DEALS}");
        }
        let per_buyer = attempts_per_buyer(self.cap, self.order_quantity);
        let planned = match rate {
            Some(r) => (r * self.duration).ceil() as u64,
            None => (50_000.0 * self.duration).ceil() as u64,
        };
        let attempts = self.attempts.unwrap_or(u64::MAX);
        let buyers = self.buyers.unwrap_or(match self.mode {
            // Enough for every deal's burst to be distinct buyers (one deal: 20,000 as ever).
            Mode::Soldout if self.deals > 1 => {
                self.sellout_buyers.saturating_mul(self.deals as u64).max(20_000)
            }
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
        if self.connections < self.deals {
            bail!(
                "--connections ({}) must be at least --deals ({}): each deal needs a connection",
                self.connections,
                self.deals
            );
        }
        self.check_sessions()?;
        if self.transport == Transport::Socket && self.mode != Mode::Soldout {
            bail!(
                "--transport socket holds one buyer per socket, who may buy only up to the cap: \
                 use it with --mode soldout"
            );
        }
        if self.mode == Mode::Soldout
            && self.sellout_buyers.saturating_mul(self.order_quantity as u64) < quantity as u64
        {
            bail!("--sellout-buyers × --order-quantity must reach --quantity, or a deal does not sell out");
        }
        Ok(Plan {
            mode: self.mode,
            transport: self.transport,
            deals: self.deals,
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

    /// `--scenario`, or `stampede-<mode>` (`stampede-<mode>-<N>deals` with N > 1 deals).
    pub fn scenario(&self) -> String {
        self.scenario.clone().unwrap_or_else(|| {
            let mode = match self.mode {
                Mode::Commit => "commit",
                Mode::Soldout => "soldout",
                Mode::Rate => "rate",
            };
            if self.deals > 1 {
                format!("stampede-{mode}-{}deals", self.deals)
            } else {
                format!("stampede-{mode}")
            }
        })
    }

    /// The session of each deal: `--session`, then the ones derived from it.
    pub fn sessions(&self) -> Vec<Uuid> {
        deals::sessions(self.session, self.deals)
    }

    /// The derived sessions are overwritten (made `scheduled` again) by the
    /// run: refuse a `--session` whose derived sessions would hit the seeded
    /// demo session or repeat one another.
    fn check_sessions(&self) -> anyhow::Result<()> {
        let sessions = self.sessions();
        let seeded = Uuid::parse_str(SEEDED_SESSION)?;
        let mut seen = std::collections::HashSet::with_capacity(sessions.len());
        for (k, s) in sessions.iter().enumerate() {
            if k > 0 && *s == seeded {
                bail!("deal {k}'s session would be the seeded session {seeded}: pick another --session");
            }
            if !seen.insert(*s) {
                bail!("deal {k}'s session {s} repeats another deal's: pick another --session");
            }
        }
        Ok(())
    }

    /// The environment of the spawned node: its database, then `--server-env`.
    pub fn server_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("HAWKER__DATABASE__URL".to_string(), self.database_url.clone())];
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
        args: StampedeArgs,
    }

    fn args(extra: &[&str]) -> StampedeArgs {
        let argv = std::iter::once("stampede").chain(extra.iter().copied());
        Cli::try_parse_from(argv).unwrap().args
    }

    fn plan_err(extra: &[&str]) -> String {
        format!("{:#}", args(extra).plan().unwrap_err())
    }

    #[test]
    fn one_deal_by_default_as_before() {
        let a = args(&[]);
        assert_eq!(a.deals, 1);
        let plan = a.plan().unwrap();
        assert_eq!(plan.deals, 1);
        assert_eq!(a.scenario(), "stampede-commit");
        assert_eq!(a.sessions(), vec![a.session]);
        let soldout = args(&["--mode", "soldout"]).plan().unwrap();
        assert_eq!(soldout.buyers, 20_000);
        assert_eq!(soldout.sellout_attempts(), 5000);
        let big = args(&["--mode", "soldout", "--sellout-buyers", "30000"])
            .plan()
            .unwrap();
        assert_eq!((big.buyers, big.sellout_attempts()), (20_000, 30_000));
    }

    #[test]
    fn deals_must_be_1_to_200() {
        assert!(plan_err(&["--deals", "0"]).contains("--deals must be 1 to 200"));
        assert!(plan_err(&["--deals", "201", "--connections", "400"]).contains("--deals must be 1 to 200"));
        assert!(Cli::try_parse_from(["stampede", "--deals", "-1"]).is_err());
        assert!(Cli::try_parse_from(["stampede", "--deals", "many"]).is_err());
        assert_eq!(
            args(&["--deals", "200", "--connections", "200"])
                .plan()
                .unwrap()
                .deals,
            200
        );
        assert_eq!(
            args(&["--deals", "1", "--connections", "1"])
                .plan()
                .unwrap()
                .deals,
            1
        );
    }

    #[test]
    fn every_deal_needs_a_connection() {
        let err = plan_err(&["--deals", "50", "--connections", "49"]);
        assert!(
            err.contains("--connections (49) must be at least --deals (50)"),
            "{err}"
        );
        assert!(args(&["--deals", "50", "--connections", "50"]).plan().is_ok());
    }

    #[test]
    fn many_deals_name_the_scenario_and_size_the_sellout() {
        let a = args(&["--mode", "soldout", "--deals", "50"]);
        assert_eq!(a.scenario(), "stampede-soldout-50deals");
        let plan = a.plan().unwrap();
        // 5,000 burst buyers for each of 50 deals, one attempt each.
        assert_eq!(plan.sellout_attempts(), 250_000);
        assert_eq!(plan.buyers, 250_000);
        assert_eq!(plan.quantity, 1000);
        let sessions = a.sessions();
        assert_eq!(sessions.len(), 50);
        assert_eq!(sessions[0], a.session);
        // --scenario still wins.
        assert_eq!(args(&["--deals", "3", "--scenario", "x"]).scenario(), "x");
    }

    #[test]
    fn the_default_sessions_pass_the_collision_check() {
        let seeded = Uuid::parse_str(SEEDED_SESSION).unwrap();
        let a = args(&["--deals", "200", "--connections", "200"]);
        assert!(!a.sessions()[1..].contains(&seeded));
        assert!(a.check_sessions().is_ok());
    }
}
