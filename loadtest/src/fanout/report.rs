//! The result of a fan-out run: the JSON, the PNG, the text summary.

use std::collections::BTreeMap;

use anyhow::bail;
use serde_json::json;
use uuid::Uuid;

use super::args::FanoutArgs;
use super::compare::Comparison;
use super::counters::HubCounters;
use super::notifier::NoticeOutcome;
use super::publisher::PublishOutcome;
use super::recorder::Recorder;
use super::shards::ShardStats;
use super::viewer::{GroupResult, LaneCounts, Sent};
use crate::common::plot::{self, Axis, Figure, Line, Panel, Series};
use crate::common::procfs::{self, ProcSample, SecondSample};
use crate::common::run::{write_result, Run};
use crate::common::stats::{histogram, Percentiles};
use crate::common::ws::Node;
use crate::common::{note, out};

/// What a run's deliveries cost the hub and how fast they arrived, to
/// compare a notices run with the broadcast run before it, and hawker with
/// the reference server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cost {
    pub scenario: String,
    pub run: String,
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    pub server_cpu_s: f64,
    /// Hub CPU over the window divided by the deliveries, microseconds.
    pub server_cpu_us_per_delivery: f64,
    pub server_cpu_s_per_million_deliveries: f64,
    /// Latency of every delivery (host and chat), milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub rss_bytes_per_viewer: f64,
    /// Host events published and never received, over all viewers.
    pub host_lost: u64,
    /// Chat published and never received, over all sockets (hawker's
    /// includes what it thinned or dropped on purpose).
    pub chat_missing: u64,
    /// Rooms of the run (`--rooms`).
    pub rooms: usize,
    pub json: String,
}

/// Everything a fan-out run measured.
pub struct Report<'a> {
    pub args: &'a FanoutArgs,
    pub run: &'a Run,
    /// The environment spawned nodes got (empty with given nodes).
    pub server_env: &'a [(String, String)],
    pub nodes: &'a [Node],
    pub viewers: &'a GroupResult,
    pub sender_sockets: &'a GroupResult,
    pub recorder: &'a Recorder,
    pub sent: &'a Sent,
    pub publish: &'a PublishOutcome,
    /// The notice sender's outcome, in a notices run.
    pub notices: Option<&'a NoticeOutcome>,
    /// The broadcast run a notices run is compared with.
    pub baseline: Option<&'a Cost>,
    /// The reference server's run hawker's is compared with (`--reference`).
    pub reference: Option<&'a Cost>,
    pub connect_secs: f64,
    pub window_secs: f64,
    /// Before the viewers, after they connected (and settled), at the end.
    pub rss: [&'a [ProcSample]; 3],
    pub server_cpu_s: f64,
    /// Run-queue wait of the nodes and of this process over the window.
    pub server_wait_s: f64,
    pub generator_wait_s: f64,
    /// Redis before and after the window.
    pub redis: (Option<ProcSample>, Option<ProcSample>),
    /// The sessions of the rooms (`--rooms`), `--session` first.
    pub rooms: &'a [Uuid],
    /// Each Redis Cluster master over the window (`--redis-cluster`).
    pub shards: Option<&'a ShardStats>,
    pub generator_cpu_s: f64,
    pub counters: HubCounters,
    pub metrics_missing: &'a [String],
    pub start_us: u64,
    /// `perf report` of the nodes over the window, when `--perf`.
    pub profile: Option<String>,
    /// Milliseconds of `calibrate` on the hub's CPUs and the generator's, before and after.
    pub calibration: [(Option<f64>, f64); 2],
    /// Hub, generator and others' CPU per second of the run.
    pub seconds: &'a [SecondSample],
    /// Per-CPU time over the window, from /proc/stat.
    pub cpu_window: BTreeMap<String, BTreeMap<&'static str, f64>>,
}

impl Report<'_> {
    pub fn write(&self) -> anyhow::Result<Cost> {
        let a = self.args;
        let run = self.run;
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
            (Some(b), Some(e)) => Some(e.cpu_s - b.cpu_s),
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

        let base = run.result_base(&a.out_dir, &a.scenario);
        let json_path = base.with_extension("json");
        let png_path = base.with_extension("png");
        let perf_path = base.with_extension("perf.txt");
        if let Some(profile) = &self.profile {
            write_result(&perf_path, profile)?;
        }
        let title = format!(
            "{}: {} viewers / {} room(s) / {} node(s), host {}/s, chat {}/s — p99 {:.1} ms, {:.0} deliveries/s",
            a.scenario,
            v.viewers,
            self.rooms.len(),
            self.nodes.len(),
            a.host_rate,
            a.chat_rate,
            all.p99_ms,
            per_s
        );
        let cost = Cost {
            scenario: a.scenario.clone(),
            run: run.id.clone(),
            deliveries,
            deliveries_per_s: per_s,
            server_cpu_s: self.server_cpu_s,
            server_cpu_us_per_delivery: if deliveries > 0 {
                self.server_cpu_s * 1e6 / deliveries as f64
            } else {
                0.0
            },
            server_cpu_s_per_million_deliveries: cpu_per_million,
            p50_ms: all.p50_ms,
            p99_ms: all.p99_ms,
            rss_bytes_per_viewer: rss_per_viewer,
            host_lost: v.host.missing,
            chat_missing: chat_all.missing,
            rooms: self.rooms.len(),
            json: json_path.display().to_string(),
        };
        let comparison = self.reference.map(|r| Comparison::new(&cost, r));
        // Delivered per second from the start to the last arrival: below the
        // target rate when the notices fell behind.
        let last_arrival = self.recorder.arrivals.keys().next_back().copied();
        let span_s = last_arrival.map_or(a.duration, |last| {
            (last + 1).saturating_sub(self.start_us / 1_000_000).max(1) as f64
        });
        let sustained_per_s = deliveries as f64 / span_s.max(a.duration).max(1e-9);
        let notices = self.notices.map(|n| {
            let ratio = self
                .baseline
                .filter(|b| b.server_cpu_us_per_delivery > 0.0)
                .map(|b| cost.server_cpu_us_per_delivery / b.server_cpu_us_per_delivery);
            json!({
                "about": "private notices to distinct viewers through POST /v1/dev/notices \
                          (Hub::enqueue_notice in one transaction per batch, the relay, Redis, every node's router); \
                          latency.host holds the notice latencies (no host events in this run)",
                "rate": a.notice_rate,
                "batch_ms": a.notice_batch_ms,
                "conns": a.notice_conns,
                "sender": n,
                "lane": v.notices,
                "misrouted": v.notices_misrouted,
                "delivered_per_s": sustained_per_s,
                "last_arrival_after_s": span_s,
                "latency": host,
                "server_cpu_us_per_notice": cost.server_cpu_us_per_delivery,
                "broadcast": self.baseline,
                "cpu_ratio_notice_vs_broadcast_delivery": ratio,
                "extra_cpu_us_per_notice": self.baseline.map(|b| cost.server_cpu_us_per_delivery - b.server_cpu_us_per_delivery),
            })
        });
        let png = match self.plot(&title, &png_path) {
            Ok(()) => Some(png_path.display().to_string()),
            Err(e) => {
                note!("no plot: {e:#}");
                None
            }
        };
        let document = json!({
            "scenario": a.scenario,
            "run": run.id,
            "started_at": run.started_at.to_rfc3339(),
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "note": a.note,
            "machine": run.machine,
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
                "spawned": !run.spawned.is_empty(),
                "server_cpus": if run.spawned.is_empty() { "" } else { a.server_cpus.as_str() },
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
                "rooms": self.rooms.len(),
                "sessions": if self.rooms.len() > 1 { self.rooms } else { &[] },
                "redis_cluster": a.redis_cluster,
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
            "notices": notices,
            "reference": comparison,
            "sent": { "host": self.sent.host_total, "host_failed": self.sent.host_failed.len(),
                      "chat": self.sent.chat_total, "chat_failed": self.sent.chat_failed.len() },
            "server": {
                "pids": run.pids,
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
                "logs": run.spawned.iter().map(|n| n.log.display().to_string()).collect::<Vec<_>>(),
            },
            "redis": { "pid": run.redis_pid, "cpu_s": redis_cpu },
            "shards": self.shards,
            "generator": {
                "cpu_s": self.generator_cpu_s,
                "run_queue_wait_s": self.generator_wait_s,
                "cpu_utilisation": if self.window_secs > 0.0 { self.generator_cpu_s / self.window_secs } else { 0.0 },
                "rss_kb": procfs::sample(std::process::id()).map(|s| s.rss_kb).unwrap_or(0),
            },
            "files": {
                "json": json_path.display().to_string(),
                "png": png,
                "profile": self.profile.as_ref().map(|_| perf_path.display().to_string()),
            },
            "per_second": per_second,
            "cpu_per_second": self.seconds,
        });
        write_result(&json_path, serde_json::to_string_pretty(&document)?)?;

        out!("== {} (run {}) ==", a.scenario, run.id);
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
            ("ack host", &self.publish.host_ack),
            ("ack chat", &self.publish.chat_ack),
        ] {
            if p.count > 0 {
                out!(
                    "{name:<14} p50 {:.2} ms  p99 {:.2}  max {:.2}  (scheduled send to ack: the publish delay)",
                    p.p50_ms,
                    p.p99_ms,
                    p.max_ms
                );
            }
        }
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
        if let Some(shards) = self.shards {
            for s in &shards.shards {
                out!(
                    "shard {:<8} slots {:<12} rooms {:>3}  SPUBLISH {:>7} ({:.0}/s)  EVALSHA {:>7}  CPU {} ({})",
                    s.master.rsplit_once(':').map_or(s.master.as_str(), |(_, p)| p),
                    s.slots,
                    s.rooms,
                    s.spublish,
                    s.spublish_per_s,
                    s.evalsha,
                    s.cpu_s.map_or("n/a".to_string(), |c| format!("{c:.2} s")),
                    s.cpu_utilisation.map_or("n/a".to_string(), |u| format!("{:.0}%", 100.0 * u)),
                );
            }
            out!(
                "shards         {} master(s), SPUBLISH {} in the {:.1} s window, the busiest shard {:.0}% of them; masters' CPU {:.2} s",
                shards.shards.len(),
                shards.spublish_total,
                shards.window_s,
                100.0 * shards.busiest_share,
                shards.masters_cpu_s
            );
        }
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
            run.machine.loadavg_start,
            run.machine.loadavg_end,
            self.calibration[0].0.map_or("n/a".to_string(), |v| format!("{v:.0}")),
            self.calibration[0].1,
            self.calibration[1].1
        );
        if let Some(n) = self.notices {
            out!(
                "notices        sent {}/{} accepted in {} batches ({:.0} per batch, request p50 {:.1} ms p99 {:.1} ms), errors {:?}, worst send lag {:.1} ms",
                n.accepted,
                n.planned,
                n.batches,
                n.mean_batch,
                n.request.p50_ms,
                n.request.p99_ms,
                n.errors,
                n.max_send_lag_ms
            );
            out!(
                "notice rate    {sustained_per_s:.0} delivered/s (the last {:.0} s after the start; target {}/s)",
                span_s,
                a.notice_rate
            );
            out!(
                "notice lane    expected {} received {} lost {} dup {} out-of-order {} misrouted {} (viewers missing some: {}); latency above is the notices'",
                v.notices.expected,
                v.notices.received,
                v.notices.missing,
                v.notices.duplicates,
                v.notices.out_of_order,
                v.notices_misrouted,
                v.notices.viewers_missing
            );
            match self.baseline {
                Some(b) => out!(
                    "vs broadcast   {:.1} µs of hub CPU per notice vs {:.1} µs per broadcast delivery ({}, {:.0} deliveries/s): × {:.1}, {:+.1} µs per notice",
                    cost.server_cpu_us_per_delivery,
                    b.server_cpu_us_per_delivery,
                    b.scenario,
                    b.deliveries_per_s,
                    cost.server_cpu_us_per_delivery / b.server_cpu_us_per_delivery.max(1e-9),
                    cost.server_cpu_us_per_delivery - b.server_cpu_us_per_delivery
                ),
                None => out!(
                    "hub CPU        {:.1} µs per notice",
                    cost.server_cpu_us_per_delivery
                ),
            }
        }
        if let Some(comparison) = &comparison {
            comparison.print();
        }
        out!("result         {}", json_path.display());
        if let Some(png) = png {
            out!("plot           {png}");
        }
        if self.profile.is_some() {
            out!("profile        {}", perf_path.display());
        }
        Ok(cost)
    }

    /// Latency percentiles per second of scheduled send time (log scale),
    /// deliveries per second, and CPU per second of hub, generator and others.
    fn plot(&self, title: &str, path: &std::path::Path) -> anyhow::Result<()> {
        let start_s = self.start_us as f64 / 1e6;
        // Each point in the middle of its second.
        let x = |second: u64| second as f64 + 0.5 - start_s;
        let per_second = &self.recorder.per_second;
        let host = plot::percentile_series(per_second.iter().map(|(s, (h, _))| (x(*s), h)));
        let [_, _, chat_p99, _] = plot::percentile_series(per_second.iter().map(|(s, (_, c))| (x(*s), c)));
        let arrivals: Series = self
            .recorder
            .arrivals
            .iter()
            .map(|(s, n)| (x(*s), *n as f64))
            .collect();
        let latency: Vec<&Series> = host.iter().chain([&chat_p99]).collect();
        if latency.iter().all(|s| s.is_empty()) {
            bail!("nothing was delivered: no plot");
        }
        let cpu = |value: fn(&SecondSample) -> f64| -> Series {
            self.seconds.iter().map(|s| (s.t - 0.5, value(s))).collect()
        };
        let (hub, hub_wait, generator, others) = (
            cpu(|s| s.hub_cpu_pct),
            cpu(|s| s.hub_wait_pct),
            cpu(|s| s.generator_cpu_pct),
            cpu(|s| s.others_pct),
        );
        let mut latency_lines = plot::percentile_lines("host ", &host);
        latency_lines.push(Line::new(&chat_p99, "chat p99", plot::GREEN));
        plot::draw(
            path,
            &Figure {
                size: (1200, 1000),
                title,
                title_size: 22,
                x_max: plot::x_max(&[latency.as_slice(), &[&arrivals]].concat()),
                panels: vec![
                    Panel {
                        height: 560,
                        x_desc: "seconds since the first scheduled event",
                        y_desc: "latency from scheduled send (ms)",
                        y: Axis::log_over(&latency, 6.0),
                        lines: latency_lines,
                    },
                    Panel {
                        height: 220,
                        x_desc: "seconds",
                        y_desc: "deliveries/s",
                        y: Axis::linear_over(&[&arrivals]),
                        lines: vec![Line::unlabelled(&arrivals, plot::BLUE)],
                    },
                    Panel {
                        height: 220,
                        x_desc: "seconds",
                        y_desc: "% of one CPU",
                        y: Axis::Linear(110.0),
                        lines: vec![
                            Line::new(&hub, "hub CPU", plot::RED),
                            Line::new(&hub_wait, "hub waiting for a CPU", plot::ORANGE),
                            Line::new(&generator, "generator CPU", plot::BLUE),
                            Line::new(&others, "other processes", plot::GREY),
                        ],
                    },
                ],
            },
        )
    }
}
