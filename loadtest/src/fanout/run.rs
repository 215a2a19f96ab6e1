//! A fan-out run with its nodes up: senders, then viewers, then the
//! measured window of sending, then the drain and the accounting.

use std::io::IsTerminal;
use std::rc::Rc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use super::args::{FanoutArgs, Server};
use super::counters;
use super::frame::Parser;
use super::notifier::{self, NoticeConfig};
use super::publisher::{PublishConfig, Publishers};
use super::recorder::Recorder;
use super::report::{Cost, Report};
use super::viewer::{EndCommand, GroupConfig, GroupResult, Shared};
use super::worker::GroupHandle;
use super::{rooms, shards};
use crate::common::nodes::{Profiler, Seed, ServerKind, SpawnConfig};
use crate::common::procfs::{self, calibrate_ms, calibrate_on, cpu_s, samples, wait_s};
use crate::common::run::{NodePlan, Run, Scenario, Settings};
use crate::common::ws::Node;
use crate::common::{clock, note};

/// The fan-out scenario, as the run harness drives it.
pub struct Fanout<'a> {
    pub args: &'a FanoutArgs,
    /// The server this run measures.
    pub server: Server,
    /// The cost of the broadcast run a notices run is compared with.
    pub baseline: Option<Cost>,
    /// The reference server's run hawker's is compared with (`--reference`).
    pub reference: Option<Cost>,
    /// This run's cost, once measured.
    pub cost: std::cell::Cell<Option<Cost>>,
}

impl Scenario for Fanout<'_> {
    type Before = ();

    fn settings(&self) -> Settings<'_> {
        Settings {
            scenario: &self.args.scenario,
            out_dir: &self.args.out_dir,
            redis: &self.args.redis,
        }
    }

    async fn before_nodes(&self, run: &Run) -> anyhow::Result<()> {
        let args = self.args;
        let server = match self.server {
            Server::Hawker => "",
            Server::Reference => " against the reference server",
        };
        note!(
            "run {}{server}: {} viewers, host {}/s, chat {}/s, notices {}/s, {} s; load average {}",
            run.id,
            args.viewers,
            args.host_rate,
            args.chat_rate,
            args.notice_rate,
            args.duration,
            run.machine.loadavg_start
        );
        Ok(())
    }

    fn nodes(&self) -> anyhow::Result<NodePlan> {
        let args = self.args;
        let server = match self.server {
            Server::Hawker => ServerKind::Hawker,
            Server::Reference => ServerKind::Reference {
                exe: std::env::current_exe()?,
                // As large as the rooms allow: 4096 frames for one room.
                ring_frames: crate::reference::ring_frames_for(args.rooms as usize),
            },
        };
        // The reference server has no database to seed.
        let seed = !args.no_seed && self.server == Server::Hawker;
        Ok(match args.spawn {
            Some(count) => NodePlan::Spawn(SpawnConfig {
                count,
                server,
                hawker_bin: args.hawker_bin.clone(),
                config_dir: std::path::absolute(&args.config_dir)?,
                cpus: args.server_cpus.clone(),
                base_port: args.base_port,
                admin_base_port: args.admin_base_port,
                env: args.spawn_env(),
                seed: seed.then(|| Seed {
                    what: "the demo session".to_string(),
                    database_url: None,
                }),
            }),
            None => NodePlan::Given {
                addrs: args
                    .nodes
                    .iter()
                    .map(|n| Node::parse(n).map(|n| n.addr))
                    .collect::<anyhow::Result<_>>()?,
                admins: args.admin.clone(),
                pids: args.server_pid.clone(),
            },
        })
    }

    async fn measure(&self, run: &mut Run, (): ()) -> anyhow::Result<()> {
        let cost = measure(
            self.args,
            self.server,
            run,
            self.baseline.as_ref(),
            self.reference.as_ref(),
        )
        .await?;
        self.cost.set(Some(cost));
        Ok(())
    }
}

async fn measure(
    args: &FanoutArgs,
    server: Server,
    run: &mut Run,
    baseline: Option<&Cost>,
    reference: Option<&Cost>,
) -> anyhow::Result<Cost> {
    let nodes = run
        .addrs
        .iter()
        .map(|addr| Node::parse(&format!("ws://{addr}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (admins, server_pids, redis_pid) = (run.admins.clone(), run.pids.clone(), run.redis_pid);
    // How fast the cores are now: a slow core means a busy machine or host.
    let calibration_before = (
        calibrate_on(if run.spawned.is_empty() {
            ""
        } else {
            &args.server_cpus
        }),
        calibrate_ms(),
    );

    // Senders first: their sockets are part of the baseline RSS.
    let (stop_tx, stop) = watch::channel(false);
    let shared = Rc::new(Shared {
        parser: Parser::new(&run.id),
        recorder: std::cell::RefCell::new(Recorder::default()),
        host_planned: args.host_planned(),
        chat_planned: args.chat_planned(),
        notice_planned: args.notice_planned_per_viewer(),
    });
    // The rooms (sessions) and, on a cluster, the masters before the run.
    let rooms = rooms::prepare(args, server, run).await?;
    let cluster = if args.redis_cluster.is_empty() {
        None
    } else {
        Some(shards::Cluster::discover(&args.cluster_seeds()?).await?)
    };
    let mut publishers = Publishers::connect(
        PublishConfig {
            run: run.id.clone(),
            session: args.session,
            rooms: rooms.clone(),
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
            run: run.id.clone(),
            session: args.session,
            rooms: rooms.clone(),
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
            viewers_total: args.viewers,
            notice_planned: args.notice_planned_per_viewer(),
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
    let (counters_before, _) = counters::scrape(&admins).await;
    let worker_pids: Vec<u32> = groups.iter().filter_map(GroupHandle::pid).collect();
    let cpu_before = cpu_s(&server_pids);
    let cpu_times_before = procfs::cpu_times();
    let wait_before = (wait_s(&server_pids), wait_s(&[std::process::id()]));
    let redis_before = redis_pid.and_then(|p| procfs::sample(p).ok());
    let shards_before = match &cluster {
        Some(c) => Some(c.snapshot().await?),
        None => None,
    };
    let generator_before = cpu_s(&[std::process::id()]) + cpu_s(&worker_pids);
    // On a whole second, so the per-second buckets are the run's seconds.
    let start_us = (clock::now_us() + 500_000).div_ceil(1_000_000) * 1_000_000;
    let window_started = Instant::now();
    let (scrape_stop, mut scrape_stopped) = watch::channel(false);
    let sampler = {
        let mut generator = worker_pids.clone();
        generator.push(std::process::id());
        let stop = scrape_stopped.clone();
        tokio::task::spawn_local(procfs::sample_seconds(
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
                    _ = tokio::time::sleep(every) => { let _ = counters::scrape(&admins).await; }
                }
            }
        });
    }
    let profiler = (args.perf && !server_pids.is_empty() && args.duration > 0.0)
        .then(|| Profiler::start(&server_pids, &run.id, args.duration))
        .transpose()?;
    let bar = progress_bar((args.duration * 10.0) as u64, "sending");
    let notice_config = NoticeConfig {
        run: run.id.clone(),
        session: args.session,
        addrs: run.addrs.clone(),
        rate: args.notice_rate,
        planned: args.notice_planned(),
        viewers: args.viewers,
        batch_ms: args.notice_batch_ms,
        conns: args.notice_conns,
        text_bytes: args.text_bytes,
    };
    let (mut sent, publish_outcome, notice_outcome) = {
        let publishing = async {
            let notices = async {
                if notice_config.planned == 0 {
                    None
                } else {
                    Some(notifier::send_all(&notice_config, start_us).await)
                }
            };
            let ((sent, outcome), notices) =
                tokio::join!(publishers.publish(start_us, Duration::from_secs(5)), notices);
            (sent, outcome, notices)
        };
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
    if let Some((failed, _)) = &notice_outcome {
        sent.notice_total = notice_config.planned;
        sent.notice_failed = failed.clone();
    }
    let notice_outcome = notice_outcome.map(|(_, outcome)| outcome);
    // Until the end of the duration, also when the last send came earlier
    // (an idle run, or a few events at a low rate): runs of the same duration
    // have windows of the same length, so their CPU compares.
    tokio::time::sleep_until(clock::instant_at(start_us + (args.duration * 1e6) as u64).into()).await;
    bar.finish();
    // The shards now: every event is published (and acknowledged, or given
    // up), and the viewers' leaving (presence) is not in it.
    let shards = match (&cluster, shards_before) {
        (Some(c), Some(before)) => {
            let after = c.snapshot().await?;
            Some(c.since(&before, &after, &rooms, window_started.elapsed().as_secs_f64()))
        }
        _ => None,
    };
    let _ = scrape_stop.send(true);
    // Workers exit after their result, so their CPU is read now.
    let workers_cpu_after = cpu_s(&worker_pids);
    for group in &mut groups {
        group.end(EndCommand {
            sent: sent.clone(),
            drain_ms: (args.drain_secs * 1000.0) as u64,
        });
    }
    // The window ends when every group has drained, before its viewers
    // close: the servers' CPU does not hold 10,000 sockets closing.
    let drained_by = Instant::now() + Duration::from_secs_f64(args.drain_secs + 10.0);
    while !groups.iter().all(GroupHandle::drained) && Instant::now() < drained_by {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let window_secs = window_started.elapsed().as_secs_f64();
    let cpu_after = cpu_s(&server_pids);
    let cpu_window = procfs::cpu_window(&cpu_times_before, &procfs::cpu_times());
    let wait_after = (wait_s(&server_pids), wait_s(&[std::process::id()]));
    let redis_after = redis_pid.and_then(|p| procfs::sample(p).ok());
    for group in &mut groups {
        group.close();
    }
    let mut viewers = GroupResult::default();
    let mut recorder = Recorder::default();
    let seconds = sampler.await.unwrap_or_default();
    for group in groups {
        let result = group.result().await?;
        recorder.merge(&result.recorder);
        viewers.add(&result);
    }
    let generator_after = cpu_s(&[std::process::id()]) + workers_cpu_after;
    let (counters_after, metrics_missing) = counters::scrape(&admins).await;
    let rss_end = samples(&server_pids);
    let profile = profiler.map(Profiler::finish).transpose()?;
    let _ = stop_tx.send(true);
    let mut sender_sockets = GroupResult::default();
    let host_masks = sent.host_masks(rooms.len());
    let chat_masks = sent.chat_masks(rooms.len());
    for receiver in publishers.finish().await {
        receiver.account(
            &mut sender_sockets,
            &host_masks[receiver.room],
            &chat_masks[receiver.room],
        );
    }
    run.machine.loadavg_end = procfs::loadavg();
    // The hub's core is not timed again: the nodes are still busy closing sockets.
    let calibration_after = (None, calibrate_ms());

    let server_env = if run.spawned.is_empty() {
        Vec::new()
    } else {
        args.spawn_env()
    };
    let report = Report {
        args,
        run,
        server_env: &server_env,
        nodes: &nodes,
        viewers: &viewers,
        sender_sockets: &sender_sockets,
        recorder: &recorder,
        sent: &sent,
        publish: &publish_outcome,
        notices: notice_outcome.as_ref(),
        baseline,
        reference,
        connect_secs,
        window_secs,
        rss: [&rss_before, &rss_connected, &rss_end],
        server_cpu_s: cpu_after - cpu_before,
        server_wait_s: wait_after.0 - wait_before.0,
        generator_wait_s: wait_after.1 - wait_before.1,
        redis: (redis_before, redis_after),
        rooms: &rooms,
        shards: shards.as_ref(),
        generator_cpu_s: generator_after - generator_before,
        counters: counters_after.since(&counters_before),
        metrics_missing: &metrics_missing,
        start_us,
        profile,
        calibration: [calibration_before, calibration_after],
        cpu_window,
        seconds: &seconds,
    };
    report.write()
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
