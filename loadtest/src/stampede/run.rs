//! A stampede with its node up: the deals (one per session), the warm-up or
//! the sell-out, the measured phase, the invariants in Postgres (deal by
//! deal), then the pgbench baseline.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use hawker_core::Role;
use uuid::Uuid;

use super::args::{Mode, Plan, StampedeArgs};
use super::baseline::{self, BaselineConfig, PgTarget};
use super::cpu::{CpuSample, Pids};
use super::deals::Target;
use super::load::{self, PhaseConfig, PhaseResult, Progress, Transport};
use super::report::{phase_summary, DealReport, Report};
use super::setup::{self, Checks, DealSpec, SettleMetrics};
use crate::common::nodes::{Profiler, Seed, ServerKind, SpawnConfig};
use crate::common::procfs::{self, busy_percent, calibrate_on};
use crate::common::run::{NodePlan, Run, Scenario, Settings};
use crate::common::ws::{self, Minter};
use crate::common::{clock, note, probe};

/// Attempt indexes of the warm-up start here: its buyers and keys are not the measured phase's.
const WARMUP_FIRST: u64 = 1 << 40;

/// The stampede scenario, as the run harness drives it.
pub struct Stampede<'a> {
    pub args: &'a StampedeArgs,
    pub plan: Plan,
    pub scenario: String,
    pub pg_target: PgTarget,
}

/// The machine before the node starts: % busy over 2 s, and `calibrate` ms on CPU 0 and 1.
pub struct Before {
    busy: f64,
    calibrate: [Option<f64>; 2],
}

impl Scenario for Stampede<'_> {
    type Before = Before;

    fn settings(&self) -> Settings<'_> {
        Settings {
            scenario: &self.scenario,
            out_dir: &self.args.out_dir,
            redis: &self.args.redis,
        }
    }

    async fn before_nodes(&self, run: &Run) -> anyhow::Result<Before> {
        let busy = busy_percent(2.0).await;
        // How fast each core is now (a VM's cores slow down when the host is busy).
        let calibrate = [calibrate_on("0"), calibrate_on("1")];
        note!(
            "run {}: {}, {:?} over {:?}; load average {}, machine {:.0}% busy in the 2 s before",
            run.id,
            self.scenario,
            self.plan.mode,
            self.plan.transport,
            run.machine.loadavg_start,
            busy
        );
        Ok(Before { busy, calibrate })
    }

    fn nodes(&self) -> anyhow::Result<NodePlan> {
        let args = self.args;
        if args.spawn {
            return Ok(NodePlan::Spawn(SpawnConfig {
                count: 1,
                server: ServerKind::Hawker,
                hawker_bin: args.hawker_bin.clone(),
                config_dir: std::path::absolute(&args.config_dir)?,
                cpus: args.server_cpus.clone(),
                base_port: args.base_port,
                admin_base_port: args.admin_base_port,
                env: args.server_env(),
                seed: Some(Seed {
                    what: self.pg_target.database.clone(),
                    database_url: Some(args.database_url.clone()),
                }),
            }));
        }
        let addr = args
            .node
            .trim_end_matches('/')
            .strip_prefix("http://")
            .ok_or_else(|| anyhow::anyhow!("--node must be http://127.0.0.1:PORT"))?;
        let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
        if !ws::is_loopback(host) {
            bail!("--node must be on 127.0.0.1");
        }
        Ok(NodePlan::Given {
            addrs: vec![addr.to_string()],
            admins: vec![args.admin.clone()],
            pids: args.server_pid.into_iter().collect(),
        })
    }

    async fn measure(&self, run: &mut Run, before: Before) -> anyhow::Result<()> {
        measure(self, run, before).await
    }
}

async fn measure(s: &Stampede<'_>, run: &mut Run, before: Before) -> anyhow::Result<()> {
    let (args, plan, pg_target) = (s.args, &s.plan, &s.pg_target);
    let addr = run.addrs[0].clone();
    let admin = run.admins.first().cloned().unwrap_or_default();
    let server_pid = run.pids.first().copied();
    let pids = Pids {
        server: server_pid,
        redis: run.redis_pid,
    };

    let db = setup::connect(&args.database_url).await?;
    if !args.keep_orders {
        setup::reset_orders(&db, &args.database_url).await?;
    }
    let sessions = args.sessions();
    for session in &sessions {
        setup::ensure_session(&db, *session).await?;
    }
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
        &run.id,
        plan.buyers + warmup_buyers,
        2,
    )?);
    note!(
        "signed {} buyer tokens in {:.1} s",
        tokens.len(),
        signing.elapsed().as_secs_f64()
    );
    // One deal per session, one after the other (each takes its units from the SKU's stock).
    let mut targets: Vec<Target> = Vec::with_capacity(sessions.len());
    for (k, session) in sessions.iter().enumerate() {
        let spec = DealSpec {
            session: *session,
            sku: args.sku,
            quantity: plan.quantity,
            cap: plan.cap,
            duration_secs: 300,
        };
        match setup::create_deal(&db, &addr, &agency_token, &spec).await {
            Ok(deal) => targets.push(Target {
                session: *session,
                deal,
            }),
            Err(e) => {
                // Do not leave the deals made so far on sale.
                for t in &targets {
                    finish_deal(args, &addr, &agency_token, t.deal, false).await;
                }
                return Err(e.context(format!("creating deal {k} in session {session}")));
            }
        }
    }
    match targets.as_slice() {
        [one] => note!("deal {}: {} units, cap {}", one.deal, plan.quantity, plan.cap),
        [first, .., last] => note!(
            "{} deals in {} sessions ({} … {}): {} units each, cap {}",
            targets.len(),
            sessions.len(),
            first.session,
            last.session,
            plan.quantity,
            plan.cap
        ),
        [] => bail!("no deal to sell"),
    }
    let deal_ids: Vec<Uuid> = targets.iter().map(|t| t.deal).collect();
    let targets = Arc::new(targets);

    let progress = Arc::new(Progress::default());
    let base = PhaseConfig {
        run: run.id.clone(),
        addr: addr.clone(),
        targets: targets.clone(),
        per_deal_attempts: None,
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
        note!("warming up: {} s, then ANALYZE", args.warmup_secs);
        let result = load::run_phase(&config).await?;
        setup::analyze(&db).await?;
        note!(
            "warm-up: {} committed, {} rejected, {} errors",
            result.committed_count(),
            result.rejected_count(),
            result.error_count()
        );
        Some(result)
    } else {
        None
    };

    // soldout: the stampede proper — a burst of distinct buyers sells the
    // deals out, each deal its share of the attempts.
    let sellout = if plan.mode == Mode::Soldout {
        let config = PhaseConfig {
            start_us: clock::now_us(),
            max_attempts: plan.sellout_attempts(),
            per_deal_attempts: (plan.deals > 1).then_some(plan.sellout_buyers),
            ..base.clone()
        };
        if plan.deals > 1 {
            note!(
                "selling out: {} buyers for each of {} deals, one attempt each",
                plan.sellout_buyers,
                plan.deals
            );
        } else {
            note!("selling out: {} buyers, one attempt each", plan.sellout_buyers);
        }
        let result = load::run_phase(&config).await?;
        let summary = phase_summary(&result, config.start_us);
        note!(
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
    // Whether the burst sold every deal out before the measured phase.
    let sold_out = if sellout.is_some() {
        let sales = setup::deal_sales(&db, &deal_ids).await?;
        let count = sales
            .iter()
            .filter(|(sold, quantity)| *quantity > 0 && sold >= quantity)
            .count();
        if count < sales.len() {
            note!(
                "WARNING: only {count} of {} deals sold out before the measured phase \
                 (raise --sellout-buyers); deals not sold out: {}",
                sales.len(),
                sales
                    .iter()
                    .enumerate()
                    .filter(|(_, (sold, quantity))| sold < quantity || *quantity == 0)
                    .map(|(k, (sold, quantity))| format!("{k} ({sold}/{quantity})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        } else {
            note!("{count} of {} deals sold out", sales.len());
        }
        Some(count)
    } else {
        None
    };

    let metrics_before = scrape(&admin).await;
    let clock0 = Instant::now();
    let cpu_before = CpuSample::read(&pids, clock0);
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
            plan.sellout_attempts()
        } else {
            0
        },
        ..base.clone()
    };
    let profiler = match (args.perf, server_pid) {
        (true, Some(pid)) => Some(Profiler::start(&[pid], &run.id, plan.duration_s)?),
        _ => None,
    };
    note!(
        "measuring: {} s, {} connections over {:?}{}, {}",
        plan.duration_s,
        plan.connections,
        plan.transport,
        match plan.deals {
            1 => String::new(),
            n => format!(" on {n} deals"),
        },
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
                note!(
                    "  {:>4.0} s: {:>7} committed/s {:>7} rejected/s {:>5} errors/s",
                    clock0.elapsed().as_secs_f64(), c - last.0, r - last.1, e - last.2
                );
                last = (c, r, e);
                cpu_series.push(CpuSample::read(&pids, clock0));
            }
        }
    };
    let cpu_after = CpuSample::read(&pids, clock0);
    let metrics_after = scrape(&admin).await;
    let profile = profiler.map(Profiler::finish).transpose()?;
    run.machine.loadavg_end = procfs::loadavg();
    let calibrate_after = [calibrate_on("0"), calibrate_on("1")];

    note!("checking the invariants in Postgres");
    let phases: Vec<&PhaseResult> = std::iter::once(&result)
        .chain(sellout.as_ref().map(|(s, _)| s))
        .chain(warmup.as_ref())
        .collect();
    let acks = acks_by_deal(&phases, targets.len());
    let mut per_deal = Vec::with_capacity(targets.len());
    for (target, acks) in targets.iter().zip(&acks) {
        let checks = setup::check(&db, target.deal, plan.cap, acks, |b| buyer_name(&run.id, b)).await?;
        per_deal.push((target.deal, checks));
    }
    let checks = Checks::total(&per_deal);
    // End every deal and drop its gate keys, whatever the checks said.
    for (deal, c) in &per_deal {
        finish_deal(args, &addr, &agency_token, *deal, c.status == "ended").await;
    }
    let deals: Vec<DealReport> = targets
        .iter()
        .zip(per_deal)
        .enumerate()
        .map(|(k, (target, (_, checks)))| DealReport {
            session: target.session,
            deal: target.deal,
            measured: result.per_deal.get(k).copied().unwrap_or_default(),
            checks,
        })
        .collect();

    // The baseline, with the node stopped so it does not compete.
    run.stop_nodes();
    let mut baselines = Vec::new();
    if args.baseline_secs > 0 {
        for &clients in &args.baseline_clients {
            note!("baseline: pgbench, {clients} clients, {} s", args.baseline_secs);
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
            note!("  {:.0} tps", result.tps);
            baselines.push(result);
        }
    }
    // The fastest is the baseline: the comparison favours it.
    let baseline = baselines.iter().max_by(|a, b| a.tps.total_cmp(&b.tps));

    let server_env = args.server_env();
    let report = Report {
        args,
        plan,
        scenario: &s.scenario,
        run,
        busy_before: before.busy,
        calibrate: [before.calibrate, calibrate_after],
        server_env: &server_env,
        deals: &deals,
        sold_out,
        sellout: sellout.as_ref(),
        warmup: warmup.as_ref(),
        result: &result,
        start_us,
        cpu: cpu_after.since(&cpu_before),
        cpu_series: &cpu_series,
        metrics: metrics_after.since(&metrics_before),
        checks: &checks,
        baseline,
        baselines: &baselines,
        profile,
    };
    report.write()
}

/// Ends a deal (unless it has ended) and drops its gate keys (unless `--keep-gate`).
async fn finish_deal(args: &StampedeArgs, addr: &str, agency_token: &str, deal: Uuid, ended: bool) {
    if !ended {
        let _ = setup::call(addr, "POST", &format!("/v1/deals/{deal}/end"), agency_token, "").await;
    }
    if !args.keep_gate {
        if let Err(e) = setup::drop_gate_keys(&args.redis, deal).await {
            note!("could not drop deal {deal}'s gate keys: {e:#}");
        }
    }
}

async fn scrape(admin: &str) -> SettleMetrics {
    match probe::metrics(admin).await {
        Ok(body) => SettleMetrics::parse(&body),
        Err(_) => SettleMetrics::default(),
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

/// The 201s of the phases, deal by deal: (order id, buyer index) for each of `deals` deals.
fn acks_by_deal(phases: &[&PhaseResult], deals: usize) -> Vec<Vec<(Uuid, u64)>> {
    let mut by_deal = vec![Vec::new(); deals];
    for ack in phases.iter().flat_map(|p| &p.acks) {
        // An ack is always for one of the phase's deals; were it not, the
        // first deal's check counts it as not in Postgres.
        let d = if ack.deal < deals { ack.deal } else { 0 };
        if let Some(acks) = by_deal.get_mut(d) {
            acks.push((ack.order, ack.buyer));
        }
    }
    by_deal
}

fn buyer_name(run: &str, i: u64) -> String {
    format!("st{run}b{i}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stampede::load::Ack;

    #[test]
    fn acks_go_to_the_deal_they_were_for() {
        let ack = |n: u128, buyer: u64, deal: usize| Ack {
            order: Uuid::from_u128(n),
            buyer,
            deal,
        };
        let mut measured = PhaseResult::new();
        measured.acks = vec![ack(1, 10, 0), ack(2, 11, 2), ack(3, 12, 1)];
        let mut burst = PhaseResult::new();
        burst.acks = vec![ack(4, 13, 2), ack(5, 14, 7)];
        let by_deal = acks_by_deal(&[&measured, &burst], 3);
        assert_eq!(
            by_deal,
            vec![
                // Deal 7 does not exist: its ack lands on deal 0, where it is not in Postgres.
                vec![(Uuid::from_u128(1), 10), (Uuid::from_u128(5), 14)],
                vec![(Uuid::from_u128(3), 12)],
                vec![(Uuid::from_u128(2), 11), (Uuid::from_u128(4), 13)],
            ]
        );
        assert_eq!(acks_by_deal(&[&measured], 1).concat().len(), 3);
    }
}
