//! The result of a stampede: budgets met or missed, the JSON, the PNG and
//! the text summary.

use anyhow::bail;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::args::{Mode, Plan, StampedeArgs};
use super::baseline::BaselineResult;
use super::cpu::CpuSample;
use super::load::{Counts, PhaseResult, Transport};
use super::setup::{Checks, SettleMetrics};
use crate::common::plot::{self, Axis, Figure, Line, Panel, Series};
use crate::common::run::{write_result, Run};
use crate::common::stats::Percentiles;
use crate::common::{note, out};

#[derive(Debug, Clone, Serialize)]
pub struct PhaseSummary {
    attempts: u64,
    committed: u64,
    rejected: u64,
    errors: u64,
    /// From the start to the last answer.
    pub window_s: f64,
    committed_per_s: f64,
    rejected_per_s: f64,
    attempts_per_s: f64,
    latency: Percentiles,
    latency_committed: Percentiles,
    latency_rejected: Percentiles,
    send_lag: Percentiles,
}

pub fn phase_summary(r: &PhaseResult, start_us: u64) -> PhaseSummary {
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

/// One deal of the run: where it sold, what the measured phase saw of it,
/// and its invariants.
#[derive(Debug, Clone, Serialize)]
pub struct DealReport {
    pub session: Uuid,
    pub deal: Uuid,
    /// Answers in the measured phase.
    pub measured: Counts,
    pub checks: Checks,
}

/// min / median / max of some numbers (0s when there are none).
fn spread(mut v: Vec<i64>) -> (i64, i64, i64) {
    v.sort_unstable();
    match (v.first(), v.get(v.len() / 2), v.last()) {
        (Some(&lo), Some(&mid), Some(&hi)) => (lo, mid, hi),
        _ => (0, 0, 0),
    }
}

/// The fewest answers of one kind in seconds `0..seconds` (a second with
/// none counts 0); nothing if there is no such second.
fn lowest_second(
    by_second: &std::collections::BTreeMap<u64, Counts>,
    seconds: u64,
    kind: impl Fn(&Counts) -> u64,
) -> Option<u64> {
    (0..seconds).map(|sec| by_second.get(&sec).map_or(0, &kind)).min()
}

/// Everything a stampede measured.
pub struct Report<'a> {
    pub args: &'a StampedeArgs,
    pub plan: &'a Plan,
    pub scenario: &'a str,
    pub run: &'a Run,
    /// % of the machine busy in the 2 s before the node started.
    pub busy_before: f64,
    /// `calibrate` ms on CPU 0 and 1, before and after (≈100 on an idle core).
    pub calibrate: [[Option<f64>; 2]; 2],
    pub server_env: &'a [(String, String)],
    /// Every deal of the run, in order (the first in `--session`).
    pub deals: &'a [DealReport],
    /// soldout: deals the burst sold out before the measured phase.
    pub sold_out: Option<usize>,
    pub sellout: Option<&'a (PhaseResult, u64)>,
    pub warmup: Option<&'a PhaseResult>,
    pub result: &'a PhaseResult,
    pub start_us: u64,
    pub cpu: CpuSample,
    pub cpu_series: &'a [CpuSample],
    pub metrics: SettleMetrics,
    /// All the deals' checks as one (`Checks::total`).
    pub checks: &'a Checks,
    pub baseline: Option<&'a BaselineResult>,
    pub baselines: &'a [BaselineResult],
    pub profile: Option<String>,
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
        // A fixed attempt rate measures latency; otherwise the mode's throughput budgets.
        if let Some(rate) = self.plan.rate {
            let p99 = s.latency.p99_ms;
            let ceiling = match self.plan.mode {
                Mode::Soldout => 10.0,
                Mode::Commit | Mode::Rate => 50.0,
            };
            budgets.push(Budget {
                name: "p99 at the fixed attempt rate",
                target: format!("≤ {ceiling:.0} ms at {rate:.0} attempts/s"),
                measured: format!("{p99:.1} ms at {:.0} attempts/s", s.attempts_per_s),
                met: p99 <= ceiling && s.attempts_per_s >= 0.98 * rate,
                ratio: ceiling / p99.max(1e-3),
            });
            return budgets;
        }
        match self.plan.mode {
            Mode::Commit => {
                budgets.push(floor(
                    "committed orders/s (on a quiet machine: calibrate ≤ 150 ms)",
                    25_000.0,
                    s.committed_per_s,
                    "orders/s",
                ));
                let per_order =
                    1e6 * (self.cpu.server + self.cpu.redis + self.cpu.postgres) / s.committed.max(1) as f64;
                budgets.push(Budget {
                    name: "CPU per committed order, server + Redis + Postgres (on a quiet machine)",
                    target: "≤ 60 µs".to_string(),
                    measured: format!("{per_order:.1} µs"),
                    met: per_order <= 60.0,
                    ratio: 60.0 / per_order.max(1e-3),
                });
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
            Mode::Soldout => {
                let target = match self.plan.transport {
                    Transport::Socket => 100_000.0,
                    Transport::Http => 60_000.0,
                };
                budgets.push(floor(
                    "sold-out rejections/s",
                    target,
                    s.rejected_per_s,
                    "rejections/s",
                ));
                // Whole seconds of the window (fewer if the attempts ran out
                // sooner); answers after it are the tail.
                let whole = self.plan.duration_s.min(s.window_s).floor() as u64;
                if let Some(lowest) = lowest_second(&self.result.counts_by_second, whole, |c| c.rejected) {
                    let share = lowest as f64 / s.rejected_per_s.max(1e-3);
                    budgets.push(Budget {
                        name: "stable: the lowest whole second of the window against the mean",
                        target: "≥ 80 %".to_string(),
                        measured: format!("{:.0} % ({lowest}/s)", 100.0 * share),
                        met: share >= 0.8,
                        ratio: share / 0.8,
                    });
                }
            }
            Mode::Rate => {}
        }
        budgets
    }

    pub fn write(&self) -> anyhow::Result<()> {
        let s = phase_summary(self.result, self.start_us);
        let sellout = self.sellout.map(|(r, start)| phase_summary(r, *start));
        let budgets = self.budgets(&s);
        let run = self.run;
        let base = run.result_base(&self.args.out_dir, self.scenario);
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
            "run": run.id,
            "started_at": run.started_at,
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "note": self.args.note,
            "plan": self.plan,
            "deal": self.deals.first().map(|d| d.deal),
            "deals": self.deals.len(),
            "sessions": self.deals.iter().map(|d| d.session).collect::<Vec<_>>(),
            "per_deal": self.deals,
            "machine": run.machine,
            "machine_busy_before_pct": self.busy_before,
            "calibrate_ms_cpu0_cpu1": { "before": self.calibrate[0], "after": self.calibrate[1] },
            "server_env": self.server_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "warmup": self.warmup.map(|w| json!({
                "attempts": w.attempts, "committed": w.committed_count(), "rejected": w.rejected_count(),
                "errors": w.error_count(), "then": "ANALYZE customer_order, order_event, deal_buyer, deal",
            })),
            "sellout": sellout.as_ref().map(|p| json!({
                "summary": p,
                "deals_sold_out": self.sold_out,
                "per_deal": self.sellout.map(|(r, _)| &r.per_deal),
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
        write_result(&json_path, serde_json::to_string_pretty(&document)?)?;
        let title = format!(
            "{} ({}{:?}, {}, {} conn) — {:.0} committed/s, {:.0} rejected/s, p99 {:.1} ms",
            self.scenario,
            match self.deals.len() {
                1 => String::new(),
                n => format!("{n} deals, "),
            },
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
        if let Err(e) = self.plot(&title, &png_path) {
            note!("no plot: {e:#}");
        }
        if let Some(profile) = &self.profile {
            write_result(&base.with_extension("perf.txt"), profile)?;
        }

        // The text report.
        out!(
            "\n{} — run {} ({})",
            self.scenario,
            run.id,
            run.started_at.to_rfc3339()
        );
        out!(
            "machine     {} × {}, {} MB; load average {} → {}; {:.0}% busy before",
            run.machine.cpus,
            run.machine.cpu_model,
            run.machine.mem_total_mb,
            run.machine.loadavg_start,
            run.machine.loadavg_end,
            self.busy_before
        );
        let cal = |c: [Option<f64>; 2]| {
            c.iter()
                .map(|v| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "?".into()))
                .collect::<Vec<_>>()
                .join("/")
        };
        out!(
            "calibrate   {} ms before, {} ms after (CPU 0/1; ≈100 on an idle core, more when the host is busy)",
            cal(self.calibrate[0]),
            cal(self.calibrate[1])
        );
        match self.deals {
            [one] => out!(
                "deals       1: {} in session {}, {} units, cap {}",
                one.deal,
                one.session,
                self.plan.quantity,
                self.plan.cap
            ),
            all => {
                let (lo, mid, hi) = spread(all.iter().map(|d| d.measured.committed as i64).collect());
                let (rlo, rmid, rhi) = spread(all.iter().map(|d| d.measured.rejected as i64).collect());
                out!(
                    "deals       {} in {} sessions, {} units each, cap {}; measured per deal: \
                     committed {lo}/{mid}/{hi}, rejected {rlo}/{rmid}/{rhi} (min/median/max)",
                    all.len(),
                    all.len(),
                    self.plan.quantity,
                    self.plan.cap
                );
            }
        }
        if let Some(p) = &sellout {
            out!(
                "sell-out    {} attempts → {} committed, {} rejected, {} errors in {:.2} s; p99 {:.1} ms; \
                 {} of {} deals sold out",
                p.attempts,
                p.committed,
                p.rejected,
                p.errors,
                p.window_s,
                p.latency.p99_ms,
                self.sold_out.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                self.deals.len()
            );
        }
        out!(
            "measured    {} attempts in {:.2} s ({:.0}/s): {} committed ({:.0}/s), {} rejected ({:.0}/s), {} errors",
            s.attempts, s.window_s, s.attempts_per_s, s.committed, s.committed_per_s, s.rejected, s.rejected_per_s, s.errors
        );
        let codes: Vec<String> = self
            .result
            .codes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        out!("answers     {}", codes.join(", "));
        if !self.result.errors.is_empty() {
            let errors: Vec<String> = self
                .result
                .errors
                .iter()
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect();
            out!("errors      {}", errors.join("; "));
        }
        let p = |x: &Percentiles| {
            format!(
                "p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} ms",
                x.p50_ms, x.p90_ms, x.p99_ms, x.p999_ms, x.max_ms
            )
        };
        out!("latency     {}", p(&s.latency));
        out!("  committed {}", p(&s.latency_committed));
        out!("  rejected  {}", p(&s.latency_rejected));
        if self.plan.rate.is_some() {
            out!("send lag    {}", p(&s.send_lag));
        }
        let ours = self.cpu.server + self.cpu.redis + self.cpu.postgres + self.cpu.generator;
        out!(
            "cpu         server {:.1} s, redis {:.1} s, postgres {:.1} s, generator {:.1} s, other processes {:.1} s; \
             machine {:.1} of {:.1} cpu-s busy",
            self.cpu.server,
            self.cpu.redis,
            self.cpu.postgres,
            self.cpu.generator,
            (self.cpu.machine_busy - ours).max(0.0),
            self.cpu.machine_busy,
            self.cpu.at * run.machine.cpus as f64,
        );
        out!(
            "  per attempt server {:.1} µs, redis {:.1} µs, postgres {:.1} µs, generator {:.1} µs",
            us_per_attempt(self.cpu.server),
            us_per_attempt(self.cpu.redis),
            us_per_attempt(self.cpu.postgres),
            us_per_attempt(self.cpu.generator),
        );
        if m.batches > 0.0 {
            out!(
                "settlement  {:.0} batches, mean {:.1} orders, mean {:.2} ms each; settler busy {:.0}% of the window",
                m.batches,
                m.batch_size_sum / m.batches,
                1000.0 * m.batch_seconds_sum / m.batches,
                100.0 * m.batch_seconds_sum / self.cpu.at.max(1e-3)
            );
        }
        let c = self.checks;
        out!(
            "postgres    {} {}/{} sold ({}{}), {} orders, {} units, {} buyers, {} over the cap, \
             {} deal_buyer mismatches",
            match self.deals.len() {
                1 => "deal".to_string(),
                n => format!("{n} deals"),
            },
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
        out!(
            "            {} 201s ({} distinct), {} not in Postgres; {} order rows without a 201",
            c.acks,
            c.acks_distinct,
            c.acks_missing,
            c.rows_without_ack
        );
        if self.deals.len() > 1 {
            let (lo, mid, hi) = spread(self.deals.iter().map(|d| d.checks.sold).collect());
            let failed = self.deals.iter().filter(|d| !d.checks.pass).count();
            out!(
                "  per deal  sold {lo}/{mid}/{hi} (min/median/max); {failed} of {} deals fail their invariants",
                self.deals.len()
            );
        }
        out!(
            "invariants  {}{}",
            if c.pass { "PASS" } else { "FAIL" },
            if c.failures.is_empty() {
                String::new()
            } else {
                format!(": {}", c.failures.join("; "))
            }
        );
        for b in self.baselines {
            out!(
                "baseline    {:.0} tps (one transaction per order on one hot row; avg {:.2} ms): {}",
                b.tps,
                b.latency_avg_ms,
                b.command
            );
        }
        for b in &budgets {
            out!(
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
        out!("results     {} {}", json_path.display(), png_path.display());
        if !c.pass {
            bail!("invariants failed: {}", c.failures.join("; "));
        }
        Ok(())
    }

    /// Latency percentiles per second (log scale) above; committed orders,
    /// rejections and errors per second below.
    fn plot(&self, title: &str, path: &std::path::Path) -> anyhow::Result<()> {
        let result = self.result;
        // Each point in the middle of its second.
        let x = |second: u64| second as f64 + 0.5;
        let latency = plot::percentile_series(result.latency_by_second.iter().map(|(s, h)| (x(*s), h)));
        if latency[0].is_empty() {
            bail!("no answers: no plot");
        }
        let counts = |count: fn(&super::load::Counts) -> u64| -> Series {
            result
                .counts_by_second
                .iter()
                .map(|(s, c)| (x(*s), count(c) as f64))
                .collect()
        };
        let (committed, rejected, errors) = (
            counts(|c| c.committed),
            counts(|c| c.rejected),
            counts(|c| c.errors),
        );
        let all_latency: Vec<&Series> = latency.iter().collect();
        plot::draw(
            path,
            &Figure {
                size: (1200, 800),
                title,
                title_size: 20,
                x_max: plot::x_max(&[&latency[0], &committed]),
                panels: vec![
                    Panel {
                        height: 480,
                        x_desc: "seconds since the start",
                        y_desc: "latency (ms)",
                        y: Axis::log_over(&all_latency, 4.0),
                        lines: plot::percentile_lines("", &latency),
                    },
                    Panel {
                        height: 320,
                        x_desc: "seconds",
                        y_desc: "answers/s",
                        y: Axis::linear_over(&[&committed, &rejected, &errors]),
                        lines: vec![
                            Line::new(&committed, "committed (201)", plot::GREEN),
                            Line::new(&rejected, "rejected (4xx)", plot::BLUE),
                            Line::new(&errors, "errors", plot::RED),
                        ],
                    },
                ],
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_min_median_max() {
        assert_eq!(spread(vec![]), (0, 0, 0));
        assert_eq!(spread(vec![7]), (7, 7, 7));
        assert_eq!(spread(vec![5, 1, 9, 3]), (1, 5, 9));
        assert_eq!(spread(vec![3, 1, 2]), (1, 2, 3));
    }

    #[test]
    fn the_lowest_second_counts_a_silent_second_and_ignores_the_tail() {
        let rejected = |n| Counts {
            rejected: n,
            ..Counts::default()
        };
        // A 3-second window, and 5 answers in the tail after it.
        let steady = [
            (0, rejected(90)),
            (1, rejected(100)),
            (2, rejected(95)),
            (3, rejected(5)),
        ]
        .into_iter()
        .collect();
        assert_eq!(lowest_second(&steady, 3, |c| c.rejected), Some(90));
        // Second 1 had no answer at all: the run stalled.
        let stalled = [(0, rejected(90)), (2, rejected(95))].into_iter().collect();
        assert_eq!(lowest_second(&stalled, 3, |c| c.rejected), Some(0));
        // A window shorter than a second has no whole second.
        assert_eq!(lowest_second(&steady, 0, |c| c.rejected), None);
    }
}
