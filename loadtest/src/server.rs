//! The server side of a run: hub nodes this tool starts (`--spawn`), what
//! `/proc` says about any process (RSS, CPU), the nodes' Prometheus
//! counters, Redis' process id, and the machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How to start hub nodes.
pub struct SpawnConfig {
    pub count: usize,
    pub hawker_bin: PathBuf,
    pub config_dir: PathBuf,
    /// `taskset -c` list for the nodes; empty = not pinned.
    pub cpus: String,
    pub base_port: u16,
    pub admin_base_port: u16,
    /// `HAWKER__…` variables for every node, after the tool's own.
    pub env: Vec<(String, String)>,
    pub log_dir: PathBuf,
    pub run: String,
}

/// A node this tool started.
pub struct SpawnedNode {
    child: Child,
    pub pid: u32,
    pub ws_url: String,
    pub admin_url: String,
    pub log: PathBuf,
}

impl Drop for SpawnedNode {
    /// A node outlives nothing: if [`stop`] did not run (an error or a
    /// panic on the way), it is killed here.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `hawker seed` (idempotent): the session and agency the run uses.
pub fn seed(hawker_bin: &Path, config_dir: &Path) -> anyhow::Result<()> {
    let output = Command::new(hawker_bin)
        .arg("seed")
        .env("HAWKER_CONFIG_DIR", config_dir)
        .env("HAWKER__LOG__FILTER", "warn")
        .output()
        .with_context(|| format!("running {} seed", hawker_bin.display()))?;
    if !output.status.success() {
        bail!(
            "`hawker seed` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Starts the nodes and waits until each answers `/readyz`.
pub async fn spawn(config: &SpawnConfig) -> anyhow::Result<Vec<SpawnedNode>> {
    if !config.hawker_bin.exists() {
        bail!(
            "{} does not exist: build it (cargo build --release -p hawker-server) or pass --hawker-bin",
            config.hawker_bin.display()
        );
    }
    let mut nodes = Vec::new();
    let (mut next_port, mut next_admin) = (config.base_port, config.admin_base_port);
    for i in 0..config.count {
        // Other people's servers may hold some ports: take the next free ones.
        let port = free_port(&mut next_port)?;
        let admin = free_port(&mut next_admin)?;
        let log = config
            .log_dir
            .join(format!("hawker-loadtest-{}-node{i}.log", config.run));
        let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = if config.cpus.is_empty() {
            Command::new(&config.hawker_bin)
        } else {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(&config.cpus).arg(&config.hawker_bin);
            c
        };
        command
            .arg("serve")
            .env("HAWKER_CONFIG_DIR", &config.config_dir)
            .env("HAWKER__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("HAWKER__SERVER__ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
            .env("HAWKER__SERVER__PUBLIC_URL", format!("http://127.0.0.1:{port}"))
            .env("HAWKER__LOG__FILTER", "warn")
            .envs(config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", config.hawker_bin.display()))?;
        // `taskset` execs the server, so the child's pid is the server's.
        let pid = child.id();
        nodes.push(SpawnedNode {
            child,
            pid,
            ws_url: format!("ws://127.0.0.1:{port}"),
            admin_url: format!("http://127.0.0.1:{admin}"),
            log,
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in &mut nodes {
        loop {
            if let Ok(Some(status)) = node.child.try_wait() {
                bail!(
                    "node {} exited at start ({status}); see {}",
                    node.ws_url,
                    node.log.display()
                );
            }
            if matches!(http_get(&node.admin_url, "/readyz").await, Ok((200, _))) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} not ready after 60 s; see {}",
                    node.ws_url,
                    node.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(nodes)
}

/// The first port from `*next` that can be bound on 127.0.0.1 now; moves `*next` past it.
fn free_port(next: &mut u16) -> anyhow::Result<u16> {
    for _ in 0..200 {
        let port = *next;
        *next = next.checked_add(1).ok_or_else(|| anyhow!("ran out of ports"))?;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port near {next}")
}

/// Stops the nodes: SIGTERM (graceful), then SIGKILL after 15 s.
pub fn stop(nodes: &mut [SpawnedNode]) {
    for node in nodes.iter() {
        let _ = Command::new("kill")
            .args(["-TERM", &node.pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for node in nodes.iter_mut() {
        while Instant::now() < deadline {
            if !matches!(node.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(node.child.try_wait(), Ok(None)) {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
}

/// Starts `perf record` (software clock, so it works in VMs without
/// hardware counters) on the nodes for `seconds`.
pub fn start_profile(pids: &[u32], out: &Path, seconds: f64) -> anyhow::Result<Child> {
    let pids = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    Command::new("perf")
        .args(["record", "-q", "-F", "999", "-e", "cpu-clock", "-p", &pids, "-o"])
        .arg(out)
        .args(["--", "sleep", &format!("{seconds:.1}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting `perf record` (is perf installed?)")
}

/// Waits for `perf record` and summarises it: share of samples by binary,
/// then the hottest symbols.
pub fn finish_profile(mut child: Child, data: &Path) -> anyhow::Result<String> {
    let _ = child.wait();
    let report = |sort: &str| -> anyhow::Result<String> {
        let output = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--percent-limit",
                "0.5",
                "--sort",
                sort,
                "-i",
            ])
            .arg(data)
            .stderr(Stdio::null())
            .output()
            .context("running `perf report`")?;
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.trim_end().to_string())
            .collect::<Vec<_>>()
            .join("\n"))
    };
    let summary = format!(
        "perf record -F 999 -e cpu-clock of the hub node(s) over the sending window\n\n\
         by binary:\n{}\n\nby symbol (≥ 0.5%):\n{}\n",
        report("dso")?,
        report("dso,symbol")?
    );
    let _ = std::fs::remove_file(data);
    Ok(summary)
}

/// One reading of a process from `/proc`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcSample {
    pub rss_kb: u64,
    /// utime + stime, in seconds.
    pub cpu_s: f64,
    /// Time its threads were runnable but waited for a CPU (schedstat), in
    /// seconds: other work on the same core shows up here.
    pub wait_s: f64,
    pub threads: u64,
}

pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at state (3).
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("unreadable /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime is field 14 and stime 15 (1-based); `after` starts at field 3.
    let cpu_ticks = ticks(11) + ticks(12);
    Ok(ProcSample {
        rss_kb: field("VmRSS:"),
        cpu_s: cpu_ticks as f64 / clock_ticks() as f64,
        wait_s: run_queue_wait_ns(pid) as f64 / 1e9,
        threads: field("Threads:"),
    })
}

/// Σ over the process' threads of `/proc/PID/task/TID/schedstat`'s second
/// field (nanoseconds spent waiting on a run queue). Threads that ended are
/// not counted, so compare readings of long-lived processes only.
fn run_queue_wait_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

/// The CPUs a process may run on (`Cpus_allowed_list`).
pub fn affinity(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// A plain HTTP/1.0 GET to a loopback address: status and body.
pub async fn http_get(base: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("`{base}` must start with http://"))?
        .trim_end_matches('/');
    let host = authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority);
    if !crate::ws::is_loopback(host) {
        bail!("`{base}`: the load generator only talks to 127.0.0.1");
    }
    let exchange = async {
        let mut stream = TcpStream::connect(authority).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| anyhow!("GET {base}{path} timed out"))??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("GET {base}{path}: no HTTP status"))?;
    Ok((status, body.to_string()))
}

/// The hub counters the report uses, summed over label sets unless a label is given.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HubCounters {
    pub sockets: f64,
    pub events_out: f64,
    pub bytes_out: f64,
    pub chat_thinned: f64,
    pub chat_queue_full: f64,
    pub chat_rate_limited: f64,
    pub slow_closes: f64,
    pub redis_reconnects: f64,
    pub recovery_gaps: f64,
    /// Room events a node took in (`hawker_hub_events_in_total`).
    pub events_in: f64,
    /// Samples of `hawker_hub_fanout_latency_seconds`: one per room event
    /// and one per socket write (batch of frames), so the difference counts writes.
    pub fanout_latency_samples: f64,
}

impl HubCounters {
    pub fn parse(text: &str) -> Self {
        HubCounters {
            sockets: metric(text, "hawker_hub_sockets", None),
            events_out: metric(text, "hawker_hub_events_out_total", None),
            bytes_out: metric(text, "hawker_hub_bytes_out_total", None),
            chat_thinned: metric(text, "hawker_hub_chat_dropped_total", Some("reason=\"thinned\"")),
            chat_queue_full: metric(
                text,
                "hawker_hub_chat_dropped_total",
                Some("reason=\"queue_full\""),
            ),
            chat_rate_limited: metric(
                text,
                "hawker_hub_chat_dropped_total",
                Some("reason=\"rate_limited\""),
            ),
            slow_closes: metric(text, "hawker_hub_slow_closes_total", None),
            redis_reconnects: metric(text, "hawker_hub_redis_reconnects_total", None),
            recovery_gaps: metric(text, "hawker_hub_recovery_gaps_total", None),
            events_in: metric(text, "hawker_hub_events_in_total", None),
            fanout_latency_samples: metric(text, "hawker_hub_fanout_latency_seconds_count", None),
        }
    }

    pub fn add(&mut self, o: &HubCounters) {
        self.sockets += o.sockets;
        self.events_out += o.events_out;
        self.bytes_out += o.bytes_out;
        self.chat_thinned += o.chat_thinned;
        self.chat_queue_full += o.chat_queue_full;
        self.chat_rate_limited += o.chat_rate_limited;
        self.slow_closes += o.slow_closes;
        self.redis_reconnects += o.redis_reconnects;
        self.recovery_gaps += o.recovery_gaps;
        self.events_in += o.events_in;
        self.fanout_latency_samples += o.fanout_latency_samples;
    }

    /// `self − before`, for counters (gauges keep their latest value).
    pub fn since(&self, before: &HubCounters) -> HubCounters {
        HubCounters {
            sockets: self.sockets,
            events_out: self.events_out - before.events_out,
            bytes_out: self.bytes_out - before.bytes_out,
            chat_thinned: self.chat_thinned - before.chat_thinned,
            chat_queue_full: self.chat_queue_full - before.chat_queue_full,
            chat_rate_limited: self.chat_rate_limited - before.chat_rate_limited,
            slow_closes: self.slow_closes - before.slow_closes,
            redis_reconnects: self.redis_reconnects - before.redis_reconnects,
            recovery_gaps: self.recovery_gaps - before.recovery_gaps,
            events_in: self.events_in - before.events_in,
            fanout_latency_samples: self.fanout_latency_samples - before.fanout_latency_samples,
        }
    }

    /// Socket writes (each one flush of a batch of frames), if the counters allow.
    pub fn writes(&self) -> Option<f64> {
        let writes = self.fanout_latency_samples - self.events_in;
        (writes > 0.0).then_some(writes)
    }
}

/// Sums the samples of `name` (whose labels contain `label`, if given).
fn metric(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
                let (labels, value) = r.split_once('}')?;
                (labels, value)
            } else if rest.starts_with(' ') {
                ("", rest)
            } else {
                return None;
            };
            if label.is_some_and(|want| !labels.contains(want)) {
                return None;
            }
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// Reads every node's counters and sums them; nodes that do not answer are named.
pub async fn scrape(admins: &[String]) -> (HubCounters, Vec<String>) {
    let mut total = HubCounters::default();
    let mut missing = Vec::new();
    for admin in admins {
        match http_get(admin, "/metrics").await {
            Ok((200, body)) => total.add(&HubCounters::parse(&body)),
            Ok((status, _)) => missing.push(format!("{admin}: HTTP {status}")),
            Err(e) => missing.push(format!("{admin}: {e:#}")),
        }
    }
    (total, missing)
}

/// Redis' process id (from `INFO server`), to account its CPU.
pub async fn redis_pid(addr: &str) -> Option<u32> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"INFO server\r\n").await.ok()?;
        let mut buffer = vec![0u8; 16 * 1024];
        let mut read = 0;
        loop {
            let n = stream.read(&mut buffer[read..]).await.ok()?;
            read += n;
            let text = String::from_utf8_lossy(&buffer[..read]);
            if let Some(pid) = text
                .lines()
                .find_map(|l| l.strip_prefix("process_id:"))
                .and_then(|v| v.trim().parse().ok())
            {
                return Some(pid);
            }
            if n == 0 || read == buffer.len() {
                return None;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// Milliseconds this thread takes for a fixed integer loop (about 100 ms on
/// an idle 2.6 GHz EPYC core). Slower means the core is shared: a hyperthread
/// sibling busy on the host, or other processes.
pub fn calibrate_ms() -> f64 {
    let started = Instant::now();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..100_000_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x);
    started.elapsed().as_secs_f64() * 1000.0
}

/// [`calibrate_ms`] on the given CPUs (`taskset -c`), in a child process.
pub fn calibrate_on(cpus: &str) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    let output = if cpus.is_empty() {
        Command::new(exe).arg("calibrate").output().ok()?
    } else {
        Command::new("taskset")
            .args(["-c", cpus])
            .arg(exe)
            .arg("calibrate")
            .output()
            .ok()?
    };
    String::from_utf8(output.stdout).ok()?.trim().parse().ok()
}

/// The machine a run was measured on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub mem_total_mb: u64,
    pub kernel: String,
    /// `/proc/loadavg` when the run started and when it ended.
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub generator_cpus: String,
    pub server_cpus: BTreeMap<u32, String>,
}

impl Machine {
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpus: cpuinfo.lines().filter(|l| l.starts_with("processor")).count(),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
                .unwrap_or_default(),
            mem_total_mb: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                / 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            loadavg_start: loadavg(),
            generator_cpus: affinity(std::process::id()),
            ..Machine::default()
        }
    }
}

/// Per-CPU time from `/proc/stat` (seconds): user, nice, system, irq,
/// softirq, steal, idle. Other engineers' builds run niced, so `nice`
/// during a window is work that was not ours.
pub fn cpu_times() -> BTreeMap<String, [f64; 7]> {
    let ticks = clock_ticks() as f64;
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let name = fields.next()?.to_string();
            let v: Vec<f64> = fields
                .filter_map(|f| f.parse::<f64>().ok())
                .map(|t| t / ticks)
                .collect();
            // user nice system idle iowait irq softirq steal
            let get = |i: usize| v.get(i).copied().unwrap_or(0.0);
            Some((
                name,
                [get(0), get(1), get(2), get(5), get(6), get(7), get(3) + get(4)],
            ))
        })
        .collect()
}

/// `after − before` of [`cpu_times`], as JSON-friendly maps.
pub fn cpu_window(
    before: &BTreeMap<String, [f64; 7]>,
    after: &BTreeMap<String, [f64; 7]>,
) -> BTreeMap<String, BTreeMap<&'static str, f64>> {
    const NAMES: [&str; 7] = ["user", "nice", "system", "irq", "softirq", "steal", "idle"];
    after
        .iter()
        .map(|(cpu, a)| {
            let b = before.get(cpu).copied().unwrap_or(*a);
            let values = NAMES
                .iter()
                .enumerate()
                .map(|(i, n)| (*n, ((a[i] - b[i]) * 100.0).round() / 100.0))
                .collect();
            (cpu.clone(), values)
        })
        .collect()
}

/// One second of the run as the machine saw it (percent of one CPU).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SecondSample {
    /// Seconds since the first scheduled event (end of the sampled second).
    pub t: f64,
    pub hub_cpu_pct: f64,
    /// Runnable but waiting for a CPU.
    pub hub_wait_pct: f64,
    pub generator_cpu_pct: f64,
    pub generator_wait_pct: f64,
    /// Busy CPU time (all CPUs) not used by the hub, the generator or Redis.
    pub others_pct: f64,
}

/// Samples once a second until `stop`: hub, generator and everyone else.
pub async fn sample_seconds(
    hub: Vec<u32>,
    generator: Vec<u32>,
    redis: Option<u32>,
    start_us: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<SecondSample> {
    let read = || {
        let sum = |pids: &[u32]| {
            pids.iter()
                .filter_map(|p| sample(*p).ok())
                .fold((0.0, 0.0), |(c, w), s| (c + s.cpu_s, w + s.wait_s))
        };
        let busy: f64 = cpu_times().values().map(|v| v[0] + v[1] + v[2] + v[5]).sum();
        let redis = redis.and_then(|p| sample(p).ok()).map_or(0.0, |s| s.cpu_s);
        (sum(&hub), sum(&generator), redis, busy)
    };
    let mut samples = Vec::new();
    let mut previous = (read(), Instant::now());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        let now = (read(), Instant::now());
        let ((h0, g0, r0, b0), t0) = previous;
        let ((h1, g1, r1, b1), t1) = now;
        let secs = (t1 - t0).as_secs_f64().max(1e-3);
        let pct = |v: f64| (v / secs * 1000.0).round() / 10.0;
        let ours = (h1.0 - h0.0) + (g1.0 - g0.0) + (r1 - r0);
        samples.push(SecondSample {
            t: (crate::clock::now_us() as f64 - start_us as f64) / 1e6,
            hub_cpu_pct: pct(h1.0 - h0.0),
            hub_wait_pct: pct(h1.1 - h0.1),
            generator_cpu_pct: pct(g1.0 - g0.0),
            generator_wait_pct: pct(g1.1 - g0.1),
            others_pct: pct((b1 - b0 - ours).max(0.0)),
        });
        previous = now;
    }
    samples
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_label_sets_or_picked_by_label() {
        let text = "# HELP x\n\
            hawker_hub_chat_dropped_total{reason=\"thinned\"} 10\n\
            hawker_hub_chat_dropped_total{reason=\"queue_full\"} 2\n\
            hawker_hub_events_out_total 1500\n\
            hawker_hub_events_out_total_other 7\n\
            hawker_hub_sockets 3\n";
        let c = HubCounters::parse(text);
        assert_eq!(c.chat_thinned, 10.0);
        assert_eq!(c.chat_queue_full, 2.0);
        assert_eq!(c.events_out, 1500.0);
        assert_eq!(c.sockets, 3.0);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kb > 0 && s.threads >= 1);
    }
}
